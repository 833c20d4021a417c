//! The client's wire behaviour against the scripted responder.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use siegel_types::{
    Address, Direction, Envelope, NotifyOn, Origin, QueueId, Recipient, ReversePath,
};

use crate::TlsPolicy;
use crate::client::{ClientError, Connector, RcptResult};
use crate::testutil::{Responder, Script, tls_for_localhost};

pub fn envelope(from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        mail_from: if from.is_empty() {
            ReversePath::Null
        } else {
            ReversePath::Address(Address::parse(from).unwrap())
        },
        recipients: rcpts
            .iter()
            .map(|r| Recipient::new(Address::parse(r).unwrap()))
            .collect(),
        direction: Direction::Outbound,
        origin: Origin::Local {
            what: "test".into(),
        },
        received_at: 0,
        size: 0,
        body_8bit: false,
        smtputf8: false,
        env_id: None,
        ret: None,
        message_id: None,
    }
}

fn connector(ca_files: &[std::path::PathBuf]) -> Connector {
    Connector::new(
        "gw.test",
        ca_files,
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .unwrap()
}

#[tokio::test]
async fn pipelined_transaction_with_per_recipient_replies() {
    let mut script = Script {
        extensions: vec![
            "PIPELINING".into(),
            "SIZE 1000000".into(),
            "8BITMIME".into(),
            "DSN".into(),
        ],
        ..Script::default()
    };
    script
        .rcpt
        .insert("nobody@sink.test".into(), "550 5.1.1 no such user".into());
    let sink = Responder::start(script).await;
    let mut env = envelope("a@gw.test", &["b@sink.test", "nobody@sink.test"]);
    env.body_8bit = true;
    env.env_id = Some("ENV1".into());
    env.recipients[0].notify = Some(NotifyOn {
        failure: true,
        delay: true,
        ..NotifyOn::default()
    });
    env.recipients[0].orcpt = Some("rfc822;b@sink.test".into());
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    let content =
        b"Subject: t\r\n\r\n.leading dot\r\nmiddle . dot\r\n..two\r\nlast line without CRLF";
    let mut conn = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Opportunistic)
        .await
        .unwrap();
    assert!(conn.capabilities().pipelining);
    let results = conn
        .send(
            &env,
            &rcpts,
            b"Received: x\r\n",
            &content[..],
            content.len() as u64,
        )
        .await
        .unwrap();
    assert!(matches!(&results[0], RcptResult::Delivered(r) if r.code == 250));
    assert!(
        matches!(&results[1], RcptResult::Refused(r) if r.code == 550 && r.status() == "5.1.1")
    );
    assert!(
        sink.seen.lock().unwrap().batched,
        "MAIL, RCPTs and DATA were sent in one write"
    );
    let size = 13 + content.len();
    let commands = sink.commands();
    assert!(
        commands.contains(&format!(
            "MAIL FROM:<a@gw.test> SIZE={size} BODY=8BITMIME ENVID=ENV1"
        )),
        "{commands:?}"
    );
    assert!(commands.contains(
        &"RCPT TO:<b@sink.test> NOTIFY=FAILURE,DELAY ORCPT=rfc822;b@sink.test".to_owned()
    ));
    assert_eq!(
        sink.messages(),
        vec![b"Received: x\r\nSubject: t\r\n\r\n..leading dot\r\nmiddle . dot\r\n...two\r\nlast line without CRLF\r\n".to_vec()]
    );
    // The connection is reusable after RSET.
    conn.reset().await.unwrap();
    let results = conn
        .send(&env, &rcpts[..1], b"", &b"x\r\n"[..], 3)
        .await
        .unwrap();
    assert!(matches!(&results[0], RcptResult::Delivered(_)));
    assert_eq!(
        sink.messages()[1],
        b"x\r\n",
        "no empty line added before the dot"
    );
    conn.quit().await;
}

#[tokio::test]
async fn without_pipelining_or_ehlo_commands_go_one_by_one() {
    let script = Script {
        no_ehlo: true,
        ..Script::default()
    };
    script
        .data_replies
        .lock()
        .unwrap()
        .push_back("451 4.3.0 try later".into());
    let sink = Responder::start(script).await;
    let env = envelope("", &["b@sink.test"]);
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    let mut conn = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Opportunistic)
        .await
        .unwrap();
    let results = conn
        .send(&env, &rcpts, b"", &b"hi\r\n"[..], 4)
        .await
        .unwrap();
    assert!(matches!(&results[0], RcptResult::Refused(r) if r.is_transient()));
    let commands = sink.commands();
    assert!(commands[0].starts_with("EHLO") && commands[1] == "HELO gw.test");
    // No SIZE without the extension; the null sender is `<>`.
    assert!(
        commands.contains(&"MAIL FROM:<>".to_owned()),
        "{commands:?}"
    );
    assert!(!sink.seen.lock().unwrap().batched);
}

#[tokio::test]
async fn smtputf8_mail_to_a_peer_without_it_fails_permanently_before_mail() {
    let sink = Responder::start(Script::default()).await;
    let env = envelope("jörg@gw.test", &["b@sink.test"]);
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    let mut conn = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Opportunistic)
        .await
        .unwrap();
    let results = conn.send(&env, &rcpts, b"", &b"x"[..], 1).await.unwrap();
    assert!(
        matches!(&results[0], RcptResult::Refused(r) if r.code == 554 && r.status() == "5.6.7")
    );
    assert!(!sink.commands().iter().any(|c| c.starts_with("MAIL")));
}

#[tokio::test]
async fn required_tls_without_starttls_never_sends_mail() {
    let sink = Responder::start(Script::default()).await;
    let err = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Required)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::TlsNotOffered { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("TLS required but not offered by 127.0.0.1["),
        "{err}"
    );
    assert!(!err.is_permanent());
    assert!(!sink.commands().iter().any(|c| c.starts_with("MAIL")));
}

#[tokio::test]
async fn starttls_opportunistic_and_required_with_trusted_ca() {
    let (config, pem) = tls_for_localhost();
    let sink = Responder::start(Script {
        tls: Some(config),
        ..Script::default()
    })
    .await;
    // Opportunistic: the self-signed certificate is accepted unverified.
    let conn = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Opportunistic)
        .await
        .unwrap();
    assert!(conn.is_tls());
    conn.quit().await;
    // Required: an untrusted certificate is a temporary failure …
    let err = connector(&[])
        .connect("localhost", sink.addr, TlsPolicy::Required)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    // … and verifies once its CA is trusted, for the right name only.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let trusting = connector(std::slice::from_ref(&ca));
    let mut conn = trusting
        .connect("localhost", sink.addr, TlsPolicy::Required)
        .await
        .unwrap();
    assert!(conn.is_tls());
    let env = envelope("a@gw.test", &["b@sink.test"]);
    let rcpts: Vec<&Recipient> = env.recipients.iter().collect();
    let results = conn
        .send(&env, &rcpts, b"", &b"x\r\n"[..], 3)
        .await
        .unwrap();
    assert!(matches!(&results[0], RcptResult::Delivered(_)));
    assert!(
        trusting
            .connect("127.0.0.1", sink.addr, TlsPolicy::Required)
            .await
            .is_err(),
        "wrong name"
    );
    // Only the two handshakes the client accepted completed on the server.
    assert_eq!(sink.seen.lock().unwrap().tls_connections, 2);
    // EHLO was repeated after STARTTLS.
    let ehlos = sink
        .commands()
        .iter()
        .filter(|c| c.starts_with("EHLO"))
        .count();
    assert!(ehlos >= 6, "{ehlos}");
}

#[tokio::test]
async fn opportunistic_tls_handshake_failure_falls_back_to_plain() {
    let sink = Responder::start(Script {
        broken_tls: true,
        ..Script::default()
    })
    .await;
    let conn = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Opportunistic)
        .await
        .unwrap();
    assert!(!conn.is_tls());
    assert_eq!(
        sink.seen.lock().unwrap().connections,
        2,
        "one failed TLS attempt, one plain"
    );
    assert_eq!(
        sink.commands().iter().filter(|c| *c == "STARTTLS").count(),
        1
    );
    // Required never falls back.
    let err = connector(&[])
        .connect("127.0.0.1", sink.addr, TlsPolicy::Required)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
    assert_eq!(sink.seen.lock().unwrap().connections, 3);
}

#[tokio::test]
async fn connect_errors_are_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = connector(&[])
        .connect("127.0.0.1", addr, TlsPolicy::Opportunistic)
        .await
        .err()
        .unwrap();
    assert!(
        matches!(err, ClientError::Connect { .. }) && !err.is_permanent(),
        "{err}"
    );
}
