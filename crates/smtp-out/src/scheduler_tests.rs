//! The scheduler against a real temporary spool and the scripted responder.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use siegel_types::{Direction, ReversePath};

use super::*;
use crate::client_tests::envelope;
use crate::testutil::{Responder, Script};

fn settings(inbound: &Responder, outbound: &Responder) -> Settings {
    let hop = |r: &Responder| NextHop {
        host: "127.0.0.1".into(),
        port: r.addr.port(),
        mx: false,
    };
    Settings {
        hostname: "gw.test".into(),
        internal_domains: vec!["gw.test".into()],
        inbound_relay: Some(hop(inbound)),
        outbound_relay: Some(hop(outbound)),
        retry: vec![Duration::from_secs(2)],
        max_parallel: 4,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        nameservers: vec!["127.0.0.1:9".parse().unwrap()],
        ..Settings::default()
    }
}

struct Harness {
    spool: Spool,
    counters: Arc<Counters>,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn start(settings: Settings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        // As the gateway does: admin requests then arrive as control files.
        spool.claim().unwrap();
        let counters = Arc::new(Counters::default());
        tokio::spawn(run(
            Arc::new(settings),
            spool.clone(),
            counters.clone(),
            None,
        ));
        Self {
            spool,
            counters,
            _dir: dir,
        }
    }

    /// Queues a mail as the pipeline would: committed, then marked ready.
    async fn queue(&self, mut env: siegel_types::Envelope, content: &[u8]) -> QueueId {
        env.received_at = unix_now();
        let id = self.spool.inject(env, content).await.unwrap();
        let state = self.spool.load(&id).unwrap().state;
        self.spool.mark_ready(&id, state).await.unwrap();
        id
    }

    async fn wait_for(&self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        for _ in 0..1000 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn count(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

const MAIL: &[u8] = b"Subject: hello\r\nMessage-ID: <m1@gw.test>\r\n\r\nbody\r\n";

#[tokio::test]
async fn temporary_failure_is_retried_then_delivered() {
    let sink = Responder::start(Script::default()).await;
    let script_replies = Script::default();
    script_replies
        .data_replies
        .lock()
        .unwrap()
        .push_back("451 4.3.0 busy".into());
    let busy = Responder::start(script_replies).await;
    let h = Harness::start(settings(&sink, &busy));
    let id = h
        .queue(envelope("alice@gw.test", &["bob@remote.test"]), MAIL)
        .await;
    h.wait_for("the deferral to be saved", |h| {
        h.spool.load(&id).is_ok_and(|e| matches!(&e.state.recipients[0], RcptState::Deferred { attempts: 1, last_error } if last_error.starts_with("451 4.3.0 busy")))
    })
    .await;
    let state = h.spool.load(&id).unwrap().state;
    assert_eq!(state.attempts, 1);
    assert!(state.next_attempt > unix_now().saturating_sub(1));
    h.wait_for("delivery", |h| h.spool.is_empty()).await;
    assert_eq!(h.count(&h.counters.deferred), 1);
    assert_eq!(h.count(&h.counters.delivered), 1);
    assert_eq!(h.count(&h.counters.bounced), 0);
    assert_eq!(busy.messages().len(), 2);
    assert!(
        sink.messages().is_empty(),
        "outbound mail does not go to the inbound relay"
    );
}

#[tokio::test]
async fn permanent_failure_bounces_to_the_sender() {
    let mut script = Script::default();
    script
        .rcpt
        .insert("nobody@remote.test".into(), "550 5.1.1 no such user".into());
    let sink = Responder::start(script).await;
    let h = Harness::start(settings(&sink, &sink));
    let id = h
        .queue(
            envelope("alice@gw.test", &["nobody@remote.test", "bob@remote.test"]),
            MAIL,
        )
        .await;
    h.wait_for("the original to go and the DSN to come", |h| {
        h.spool.load(&id).is_err() && h.spool.len() == 1
    })
    .await;
    assert_eq!(h.count(&h.counters.bounced), 1);
    assert_eq!(h.count(&h.counters.delivered), 1);
    let dsn = h.spool.list().unwrap().remove(0);
    assert_eq!(dsn.envelope.mail_from, ReversePath::Null);
    assert_eq!(dsn.envelope.recipients.len(), 1);
    assert_eq!(dsn.envelope.recipients[0].address.as_str(), "alice@gw.test");
    assert_eq!(
        dsn.envelope.direction,
        Direction::Inbound,
        "the sender is internal"
    );
    assert_eq!(dsn.envelope.origin, siegel_types::Origin::Dsn);
    assert_eq!(
        dsn.state.stage,
        Stage::Received,
        "a DSN goes through the pipeline"
    );
    let (mut file, len) = h.spool.open_content(&dsn.envelope.id).await.unwrap();
    let mut content = vec![0; len as usize];
    file.read_exact(&mut content).await.unwrap();
    let text = String::from_utf8_lossy(&content);
    assert!(
        text.contains("Subject: Unzustellbar / Undeliverable: hello\r\n"),
        "{text}"
    );
    assert!(text.contains("Final-Recipient: rfc822; nobody@remote.test\r\n"));
    assert!(
        !text.contains("Final-Recipient: rfc822; bob@remote.test"),
        "bob was delivered"
    );
    assert!(text.contains("Remote-MTA: dns; 127.0.0.1\r\n"));
    assert!(text.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n"));
    let returned = text
        .split("Content-Type: text/rfc822-headers\r\n")
        .nth(1)
        .unwrap();
    assert!(
        returned.contains("\r\n\r\nSubject: hello\r\nMessage-ID: <m1@gw.test>\r\n\r\n--"),
        "{returned}"
    );
    assert!(!returned.contains("body"), "only the headers are returned");
}

#[tokio::test]
async fn null_sender_mail_never_gets_a_dsn() {
    let mut script = Script::default();
    script
        .rcpt
        .insert("nobody@remote.test".into(), "550 5.1.1 no such user".into());
    let sink = Responder::start(script).await;
    let h = Harness::start(settings(&sink, &sink));
    h.queue(envelope("", &["nobody@remote.test"]), MAIL).await;
    h.wait_for("the bounce", |h| h.count(&h.counters.bounced) == 1)
        .await;
    h.wait_for("removal", |h| h.spool.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.spool.list().unwrap().is_empty(), "no DSN was injected");
}

#[tokio::test]
async fn expired_mail_bounces_without_an_attempt() {
    let sink = Responder::start(Script::default()).await;
    let h = Harness::start(Settings {
        max_lifetime: Duration::ZERO,
        ..settings(&sink, &sink)
    });
    let id = h
        .queue(envelope("alice@elsewhere.test", &["bob@remote.test"]), MAIL)
        .await;
    h.wait_for("the DSN", |h| {
        h.spool.load(&id).is_err() && h.spool.len() == 1
    })
    .await;
    let dsn = h.spool.list().unwrap().remove(0);
    assert_eq!(
        dsn.envelope.direction,
        Direction::Outbound,
        "the sender is external"
    );
    assert!(sink.commands().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn required_tls_without_starttls_defers_and_sends_nothing() {
    let sink = Responder::start(Script::default()).await;
    let mut s = settings(&sink, &sink);
    s.tls_policy
        .insert("remote.test".into(), TlsPolicy::Required);
    let h = Harness::start(s);
    let id = h
        .queue(envelope("alice@gw.test", &["bob@remote.test"]), MAIL)
        .await;
    h.wait_for("the deferral", |h| {
        h.spool.load(&id).is_ok_and(|e| matches!(&e.state.recipients[0], RcptState::Deferred { last_error, .. } if last_error.starts_with("TLS required but not offered by 127.0.0.1")))
    })
    .await;
    assert!(
        !sink.commands().iter().any(|c| c.starts_with("MAIL")),
        "never sent in clear"
    );
    assert_eq!(h.count(&h.counters.deferred), 1);
}

#[tokio::test]
async fn recipients_are_grouped_by_next_hop() {
    let inbound = Responder::start(Script::default()).await;
    let outbound = Responder::start(Script {
        extensions: vec!["PIPELINING".into()],
        ..Script::default()
    })
    .await;
    let routed = Responder::start(Script::default()).await;
    let mut s = settings(&inbound, &outbound);
    s.routes.insert(
        "partner.test".into(),
        NextHop {
            host: "127.0.0.1".into(),
            port: routed.addr.port(),
            mx: false,
        },
    );
    let h = Harness::start(s);
    h.queue(
        envelope(
            "alice@gw.test",
            &[
                "a@gw.test",
                "x@remote.test",
                "p@partner.test",
                "b@gw.test",
                "y@other.test",
            ],
        ),
        MAIL,
    )
    .await;
    h.wait_for("delivery", |h| h.spool.is_empty()).await;
    assert_eq!(h.count(&h.counters.delivered), 5);
    let rcpts = |r: &Responder| {
        r.commands()
            .into_iter()
            .filter(|c| c.starts_with("RCPT"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        rcpts(&inbound),
        ["RCPT TO:<a@gw.test>", "RCPT TO:<b@gw.test>"]
    );
    assert_eq!(
        rcpts(&outbound),
        ["RCPT TO:<x@remote.test>", "RCPT TO:<y@other.test>"]
    );
    assert_eq!(rcpts(&routed), ["RCPT TO:<p@partner.test>"]);
    for r in [&inbound, &outbound, &routed] {
        assert_eq!(r.messages().len(), 1, "one transaction per next hop");
    }
}

#[tokio::test]
async fn connections_are_reused_across_mails() {
    let sink = Responder::start(Script {
        extensions: vec!["PIPELINING".into()],
        ..Script::default()
    })
    .await;
    let h = Harness::start(Settings {
        max_parallel: 1,
        ..settings(&sink, &sink)
    });
    for _ in 0..5 {
        h.queue(envelope("alice@gw.test", &["bob@remote.test"]), MAIL)
            .await;
    }
    h.wait_for("delivery", |h| h.count(&h.counters.delivered) == 5)
        .await;
    assert_eq!(sink.messages().len(), 5);
    assert_eq!(
        sink.seen.lock().unwrap().connections,
        1,
        "one connection, reused with RSET"
    );
    assert!(sink.commands().iter().filter(|c| *c == "RSET").count() >= 4);
}

#[tokio::test]
async fn admin_retry_delivers_now_and_delete_drops() {
    let script = Script::default();
    script
        .data_replies
        .lock()
        .unwrap()
        .extend(["451 4.3.0 busy".to_owned(), "451 4.3.0 busy".to_owned()]);
    let sink = Responder::start(script).await;
    let h = Harness::start(Settings {
        retry: vec![Duration::from_secs(3600)],
        ..settings(&sink, &sink)
    });
    let deferred = |id: &QueueId| {
        let id = id.clone();
        move |h: &Harness| {
            h.spool
                .load(&id)
                .is_ok_and(|e| matches!(e.state.recipients[0], RcptState::Deferred { .. }))
        }
    };
    let keep = h
        .queue(envelope("alice@gw.test", &["bob@remote.test"]), MAIL)
        .await;
    h.wait_for("the first deferral", deferred(&keep)).await;
    let drop_me = h
        .queue(envelope("alice@gw.test", &["carol@remote.test"]), MAIL)
        .await;
    h.wait_for("the second deferral", deferred(&drop_me)).await;

    h.spool.request(Control::Retry(keep.clone())).await.unwrap();
    h.wait_for("delivery after the retry request", |h| {
        h.spool.load(&keep).is_err()
    })
    .await;
    assert_eq!(h.count(&h.counters.delivered), 1);

    h.spool
        .request(Control::Delete(drop_me.clone()))
        .await
        .unwrap();
    h.wait_for("the deletion", |h| h.spool.is_empty()).await;
    assert_eq!(
        h.count(&h.counters.delivered),
        1,
        "the deleted mail was not delivered"
    );
    assert_eq!(h.count(&h.counters.bounced), 0, "and not bounced either");
}

#[tokio::test]
async fn delivery_results_are_sent_as_events() {
    let mut script = Script::default();
    script
        .rcpt
        .insert("nobody@remote.test".into(), "550 5.1.1 no such user".into());
    let sink = Responder::start(script).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(crate::run_with_events(
        Arc::new(settings(&sink, &sink)),
        spool.clone(),
        Arc::new(Counters::default()),
        Some(tx),
    ));
    let mut env = envelope("alice@gw.test", &["bob@remote.test", "nobody@remote.test"]);
    env.received_at = unix_now();
    env.message_id = Some("<m1@gw.test>".into());
    let id = spool.inject(env, MAIL).await.unwrap();
    let state = spool.load(&id).unwrap().state;
    spool.mark_ready(&id, state).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let e = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(e.queue_id, id);
        assert_eq!(e.message_id.as_deref(), Some("<m1@gw.test>"));
        got.push((e.recipient.to_string(), e.result, e.detail));
    }
    got.sort();
    assert_eq!(got[0].0, "bob@remote.test");
    assert_eq!(got[0].1, "delivered");
    assert_eq!(got[1].0, "nobody@remote.test");
    assert_eq!(got[1].1, "bounced");
    assert!(got[1].2.contains("550 5.1.1"), "{:?}", got[1]);
}

/// Regression: a mail made ready just before the scheduler starts is found
/// both by the recovery scan and on the ready channel. The duplicate notice
/// used to force an immediate retry of the running delivery, so a 451 was
/// retried within milliseconds instead of after the schedule.
#[tokio::test]
async fn duplicate_ready_notice_does_not_bypass_the_retry_schedule() {
    let sink = Responder::start(Script::default()).await;
    let script_replies = Script::default();
    script_replies
        .data_replies
        .lock()
        .unwrap()
        .push_back("451 4.3.0 busy".into());
    let busy = Responder::start(script_replies).await;
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    spool.claim().unwrap();
    let mut env = envelope("alice@gw.test", &["bob@remote.test"]);
    env.received_at = unix_now();
    let id = spool.inject(env, MAIL).await.unwrap();
    let state = spool.load(&id).unwrap().state;
    spool.mark_ready(&id, state).await.unwrap(); // buffered on the channel
    let counters = Arc::new(Counters::default());
    tokio::spawn(run(
        Arc::new(settings(&sink, &busy)),
        spool.clone(),
        counters.clone(),
        None,
    ));
    let h = Harness {
        spool,
        counters,
        _dir: dir,
    };
    h.wait_for("the deferral to be saved", |h| {
        h.spool.load(&id).is_ok_and(|e| {
            matches!(
                &e.state.recipients[0],
                RcptState::Deferred { attempts: 1, .. }
            )
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        busy.messages().len(),
        1,
        "the retry must wait for the schedule (2 s), not follow at once"
    );
    h.wait_for("delivery", |h| h.spool.is_empty()).await;
    assert_eq!(busy.messages().len(), 2);
}
