//! Session and server tests: real sessions over in-memory pipes (and TCP
//! for the listener tests), against an in-memory spool that records what was
//! committed, and against the real spool in a temporary directory.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use siegel_types::{Counters, Direction, Envelope, NotifyOn, Origin, QueueId};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use crate::{Authenticator, IncomingMail, Listener, MailSpool, Server, Settings, handle_session};

#[derive(Debug, thiserror::Error)]
#[error("test spool failure")]
struct MemError;

/// A committed mail: envelope and content.
type Committed = (Envelope, Vec<u8>);

/// Records committed mails; can be told to fail the commit.
#[derive(Clone, Default)]
struct MemSpool {
    committed: Arc<Mutex<Vec<Committed>>>,
    aborted: Arc<Mutex<usize>>,
    fail_commit: bool,
    announced: Arc<Mutex<Vec<QueueId>>>,
    discarded: Arc<Mutex<Vec<QueueId>>>,
}

struct MemIncoming {
    id: QueueId,
    data: Vec<u8>,
    spool: MemSpool,
}

impl MailSpool for MemSpool {
    type Incoming = MemIncoming;
    type Error = MemError;
    async fn begin(&self) -> Result<MemIncoming, MemError> {
        Ok(MemIncoming {
            id: QueueId::generate(),
            data: Vec::new(),
            spool: self.clone(),
        })
    }
    fn announce(&self, id: &QueueId) {
        self.announced.lock().unwrap().push(id.clone());
    }
    async fn discard(&self, id: &QueueId) -> Result<(), MemError> {
        self.discarded.lock().unwrap().push(id.clone());
        Ok(())
    }
}

impl IncomingMail for MemIncoming {
    type Error = MemError;
    fn id(&self) -> &QueueId {
        &self.id
    }
    async fn write(&mut self, chunk: &[u8]) -> Result<(), MemError> {
        self.data.extend_from_slice(chunk);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    async fn commit(self, envelope: Envelope) -> Result<QueueId, MemError> {
        if self.spool.fail_commit {
            return Err(MemError);
        }
        self.spool
            .committed
            .lock()
            .unwrap()
            .push((envelope, self.data));
        Ok(self.id)
    }
    async fn commit_unannounced(self, envelope: Envelope) -> Result<QueueId, MemError> {
        self.commit(envelope).await
    }
    async fn abort(self) {
        *self.spool.aborted.lock().unwrap() += 1;
    }
}

/// Refuses mail whose content contains "VIRUS", and records what it saw.
struct ContentCheck {
    spool: MemSpool,
    seen: Mutex<Vec<(QueueId, Direction, usize)>>,
}

impl crate::AcceptanceCheck for ContentCheck {
    fn check<'a>(
        &'a self,
        id: &'a QueueId,
        direction: Direction,
        recipients: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = crate::Acceptance> + Send + 'a>> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push((id.clone(), direction, recipients));
            let infected = self
                .spool
                .committed
                .lock()
                .unwrap()
                .iter()
                .any(|(e, data)| e.id == *id && data.windows(5).any(|w| w == b"VIRUS"));
            if infected {
                crate::Acceptance::Refuse {
                    code: 550,
                    status: "5.7.1",
                    text: "Virus found: Test.Virus".into(),
                }
            } else {
                crate::Acceptance::Accept
            }
        })
    }
}

struct TestAuth;

impl Authenticator for TestAuth {
    fn verify(&self, user: &str, password: &str) -> bool {
        user == "alice" && password == "secret"
    }
}

fn settings() -> Settings {
    let mut s = Settings::new("mx.test");
    s.internal_domains = vec!["example.com".into()];
    s.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
    s.max_message_size = 1000;
    s.max_recipients = 3;
    s.max_line_length = 512;
    s.max_errors = 5;
    s.command_timeout = Duration::from_secs(5);
    s.data_timeout = Duration::from_secs(5);
    s.authenticator = Arc::new(TestAuth);
    s
}

const UNTRUSTED: &str = "192.0.2.1:40000";
const TRUSTED: &str = "10.1.2.3:40000";

type Stream = Box<dyn AsyncReadWrite>;
trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

/// A minimal SMTP client for driving the server.
struct Client {
    io: BufReader<Stream>,
}

impl Client {
    fn new(io: Stream) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    async fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes()).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// Reads one (possibly multi-line) reply: code and joined text.
    async fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed; got so far: {text:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let code = line[..3].parse::<u16>().unwrap();
            text.push_str(&line[4..line.len() - 2]);
            text.push('\n');
            if line.as_bytes()[3] == b' ' {
                return (code, text);
            }
        }
    }

    async fn cmd(&mut self, text: &str) -> (u16, String) {
        self.send(&format!("{text}\r\n")).await;
        self.reply().await
    }

    async fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), self.io.read_to_end(&mut rest))
            .await
            .unwrap();
        assert!(
            read.is_err() || rest.is_empty(),
            "unexpected data: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// Starts a session over an in-memory pipe.
fn start<Q: MailSpool>(
    settings: Settings,
    kind: Listener,
    peer: &str,
    spool: Q,
) -> (Client, Arc<Counters>, tokio::task::JoinHandle<()>) {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let counters = Arc::new(Counters::default());
    let peer: SocketAddr = peer.parse().unwrap();
    let task = tokio::spawn(handle_session(
        theirs,
        peer,
        kind,
        Arc::new(settings),
        spool,
        counters.clone(),
    ));
    (Client::new(Box::new(ours)), counters, task)
}

async fn greet(c: &mut Client) {
    let (code, text) = c.reply().await;
    assert_eq!((code, text.as_str()), (220, "mx.test ESMTP Siegel\n"));
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
}

#[tokio::test]
async fn full_transaction_reaches_the_real_spool() {
    let dir = tempfile::tempdir().unwrap();
    let spool = siegel_spool::Spool::open(dir.path()).unwrap();
    let (mut c, counters, _task) = start(settings(), Listener::Smtp, UNTRUSTED, spool.clone());
    let (code, _) = c.reply().await;
    assert_eq!(code, 220);
    let (code, ehlo) = c.cmd("EHLO client.test").await;
    assert_eq!(code, 250);
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
    ] {
        assert!(ehlo.lines().any(|l| l == ext), "{ext} missing in {ehlo}");
    }
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"));
    assert_eq!(
        c.cmd("MAIL FROM:<Sender@Remote.test> BODY=8BITMIME RET=HDRS ENVID=e1")
            .await
            .0,
        250
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob@EXAMPLE.com> NOTIFY=FAILURE ORCPT=rfc822;bob@example.com")
            .await
            .0,
        250
    );
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("Message-ID: <m1@remote.test>\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\n")
        .await;
    let (code, text) = c.reply().await;
    assert_eq!(code, 250, "{text}");
    let id: QueueId = text
        .trim()
        .strip_prefix("2.0.0 Ok: queued as ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(c.cmd("QUIT").await.0, 221);
    c.expect_closed().await;

    let entry = spool.load(&id).unwrap();
    let env = entry.envelope;
    assert_eq!(env.mail_from.to_string(), "Sender@remote.test");
    assert_eq!(env.recipients[0].address.as_str(), "bob@example.com");
    assert_eq!(
        env.recipients[0].notify,
        Some(NotifyOn {
            failure: true,
            ..Default::default()
        })
    );
    assert_eq!(
        env.recipients[0].orcpt.as_deref(),
        Some("rfc822;bob@example.com")
    );
    assert_eq!(env.direction, Direction::Inbound);
    assert_eq!(env.message_id.as_deref(), Some("<m1@remote.test>"));
    assert!(env.body_8bit);
    assert_eq!(env.env_id.as_deref(), Some("e1"));
    assert_eq!(env.ret, Some(siegel_types::DsnRet::Headers));
    assert!(
        matches!(env.origin, Origin::Smtp { ref helo, tls: false, auth: None, .. } if helo == "client.test")
    );
    let (mut file, len) = spool.open_content(&id).await.unwrap();
    let mut content = vec![0; len as usize];
    file.read_exact(&mut content).await.unwrap();
    assert_eq!(
        content,
        b"Message-ID: <m1@remote.test>\r\nSubject: hi\r\n\r\n.dot\r\nbody\r\n"
    );
    assert_eq!(counters.accepted.load(Ordering::Relaxed), 1);
    assert_eq!(counters.sessions.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn the_acceptance_check_decides_before_the_reply() {
    let spool = MemSpool::default();
    let check = Arc::new(ContentCheck {
        spool: spool.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let mut s = settings();
    s.acceptance = Some(check.clone());
    let (mut c, counters, _task) = start(s, Listener::Smtp, UNTRUSTED, spool.clone());
    greet(&mut c).await;
    for (body, want) in [("clean mail", 250), ("a VIRUS inside", 550)] {
        assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 250);
        assert_eq!(c.cmd("RCPT TO:<c@example.com>").await.0, 250);
        assert_eq!(c.cmd("DATA").await.0, 354);
        let (code, text) = c.cmd(&format!("Subject: x\r\n\r\n{body}\r\n.")).await;
        assert_eq!(code, want, "{text}");
        if want == 550 {
            assert_eq!(text, "5.7.1 Virus found: Test.Virus\n");
        }
    }
    let committed: Vec<QueueId> = spool
        .committed
        .lock()
        .unwrap()
        .iter()
        .map(|(e, _)| e.id.clone())
        .collect();
    assert_eq!(committed.len(), 2);
    // The clean one went on, the refused one was taken back; both were
    // checked only after they were committed, with what the check needs.
    assert_eq!(*spool.announced.lock().unwrap(), [committed[0].clone()]);
    assert_eq!(*spool.discarded.lock().unwrap(), [committed[1].clone()]);
    let seen = check.seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|(_, d, n)| *d == Direction::Inbound && *n == 2)
    );
    assert_eq!(counters.accepted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn pipelined_commands_in_one_write() {
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(settings(), Listener::Smtp, UNTRUSTED, spool.clone());
    assert_eq!(c.reply().await.0, 220);
    c.send(concat!(
        "EHLO client.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<b@example.com>\r\n",
        "RCPT TO:<c@elsewhere.test>\r\nRCPT TO:<d@example.com>\r\nDATA\r\n",
        "Subject: x\r\n\r\nhello\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<e@example.com>\r\nDATA\r\n.\r\nQUIT\r\n"
    ))
    .await;
    let codes = [250, 250, 250, 554, 250, 354, 250, 250, 250, 354, 250, 221];
    for expected in codes {
        let (code, text) = c.reply().await;
        assert_eq!(code, expected, "{text}");
    }
    c.expect_closed().await;
    let committed = spool.committed.lock().unwrap();
    assert_eq!(committed.len(), 2);
    assert_eq!(committed[0].1, b"Subject: x\r\n\r\nhello\r\n");
    assert_eq!(committed[0].0.recipients.len(), 2);
    assert!(committed[1].1.is_empty());
}

#[tokio::test]
async fn relay_denied_from_untrusted_peer() {
    let (mut c, counters, _task) =
        start(settings(), Listener::Smtp, UNTRUSTED, MemSpool::default());
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    let (code, text) = c.cmd("RCPT TO:<victim@elsewhere.test>").await;
    assert_eq!((code, text.as_str()), (554, "5.7.1 Relay access denied\n"));
    assert_eq!(counters.rejected.load(Ordering::Relaxed), 1);
    assert_eq!(c.cmd("DATA").await.0, 503);
}

#[tokio::test]
async fn trusted_peer_relays_outbound() {
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(settings(), Listener::Smtp, TRUSTED, spool.clone());
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<x@elsewhere.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("Subject: out\r\n\r\nx\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    // Trusted but only internal recipients: inbound.
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<y@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send(".\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let committed = spool.committed.lock().unwrap();
    assert_eq!(committed[0].0.direction, Direction::Outbound);
    assert_eq!(committed[1].0.direction, Direction::Inbound);
}

#[tokio::test]
async fn too_many_recipients() {
    let (mut c, _, _task) = start(settings(), Listener::Smtp, UNTRUSTED, MemSpool::default());
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    for i in 0..3 {
        assert_eq!(c.cmd(&format!("RCPT TO:<u{i}@example.com>")).await.0, 250);
    }
    let (code, text) = c.cmd("RCPT TO:<u9@example.com>").await;
    assert_eq!((code, text.as_str()), (452, "4.5.3 Too many recipients\n"));
}

#[tokio::test]
async fn non_ascii_recipient_needs_smtputf8() {
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(settings(), Listener::Smtp, UNTRUSTED, spool.clone());
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(
        c.cmd("RCPT TO:<jörg@example.com>").await,
        (553, "5.6.7 Non-ASCII addresses require SMTPUTF8\n".into())
    );
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test> SMTPUTF8").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<jörg@BÜCHER.example.com>").await.0, 554);
    assert_eq!(c.cmd("RCPT TO:<jörg@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("Subject: ü\r\n\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let committed = spool.committed.lock().unwrap();
    assert!(committed[0].0.smtputf8);
    assert_eq!(
        committed[0].0.recipients[0].address.as_str(),
        "jörg@example.com"
    );
}

#[tokio::test]
async fn size_limits() {
    let spool = MemSpool::default();
    let (mut c, counters, _task) = start(settings(), Listener::Smtp, UNTRUSTED, spool.clone());
    greet(&mut c).await;
    let (code, text) = c.cmd("MAIL FROM:<a@remote.test> SIZE=1001").await;
    assert_eq!((code, &text[..5]), (552, "5.3.4"));
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test> SIZE=1000").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    let line = format!("{}\r\n", "x".repeat(98));
    for _ in 0..50 {
        c.send(&line).await;
    }
    c.send(".\r\n").await;
    let (code, text) = c.reply().await;
    assert_eq!((code, &text[..5]), (552, "5.3.4"));
    assert_eq!(*spool.aborted.lock().unwrap(), 1);
    assert!(spool.committed.lock().unwrap().is_empty());
    assert_eq!(counters.rejected.load(Ordering::Relaxed), 2);
    // The session is still usable and the transaction was reset.
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 503);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
}

#[tokio::test]
async fn commands_out_of_order() {
    let mut s = settings();
    s.max_errors = 20;
    let (mut c, _, _task) = start(s, Listener::Smtp, UNTRUSTED, MemSpool::default());
    assert_eq!(c.reply().await.0, 220);
    assert_eq!(
        c.cmd("MAIL FROM:<a@remote.test>").await,
        (503, "5.5.1 Send EHLO or HELO first\n".into())
    );
    assert_eq!(c.cmd("HELO client.test").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 503);
    assert_eq!(c.cmd("DATA").await.0, 503);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 503);
    assert_eq!(c.cmd("DATA").await.0, 503);
    assert_eq!(c.cmd("RSET").await.0, 250);
    assert_eq!(c.cmd("VRFY bob").await.0, 502);
    assert_eq!(c.cmd("EXPN list").await.0, 502);
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await.0, 502);
    assert_eq!(c.cmd("STARTTLS").await.0, 502);
    assert_eq!(c.cmd("NOOP").await.0, 250);
}

#[tokio::test]
async fn garbage_and_huge_lines() {
    let mut s = settings();
    s.max_errors = 4;
    let (mut c, _, task) = start(s, Listener::Smtp, UNTRUSTED, MemSpool::default());
    assert_eq!(c.reply().await.0, 220);
    c.send_bytes(b"\x00\xff\xfe garbage\x01\r\n").await;
    assert_eq!(
        c.reply().await,
        (500, "5.5.2 Invalid characters in command\n".into())
    );
    // 10 MB without a line end, then a line end: one error, then in step
    // again. The server holds at most one line limit of it.
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..10 {
        c.io.get_mut().write_all(&chunk).await.unwrap();
    }
    c.io.get_mut().write_all(b"\r\nNOOP\r\n").await.unwrap();
    assert_eq!(c.reply().await, (500, "5.5.2 Line too long\n".into()));
    assert_eq!(c.cmd("NOOP").await.0, 250); // the NOOP sent after the long line
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.cmd("BLAH").await.0, 500);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 503);
    let (code, text) = c.reply().await;
    assert_eq!(
        (code, text.as_str()),
        (421, "4.7.0 mx.test Error: too many errors\n")
    );
    c.expect_closed().await;
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn command_timeout_closes_with_421() {
    let mut s = settings();
    s.command_timeout = Duration::from_millis(200);
    let (mut c, counters, task) = start(s, Listener::Smtp, UNTRUSTED, MemSpool::default());
    assert_eq!(c.reply().await.0, 220);
    let (code, text) = c.reply().await;
    assert_eq!(code, 421);
    assert!(
        text.starts_with("4.4.2") && text.contains("timeout"),
        "{text}"
    );
    c.expect_closed().await;
    task.await.unwrap();
    assert_eq!(counters.sessions.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn client_that_never_reads_is_dropped() {
    let mut s = settings();
    s.command_timeout = Duration::from_millis(300);
    s.max_errors = usize::MAX;
    let (mut ours, theirs) = tokio::io::duplex(1024);
    let peer: SocketAddr = UNTRUSTED.parse().unwrap();
    let task = tokio::spawn(handle_session(
        theirs,
        peer,
        Listener::Smtp,
        Arc::new(s),
        MemSpool::default(),
        Arc::default(),
    ));
    let writer = tokio::spawn(async move {
        let flood = "NOOP\r\n".repeat(5000);
        let _ = ours.write_all(flood.as_bytes()).await;
        ours
    });
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("session hangs")
        .unwrap();
    writer.abort();
}

#[tokio::test]
async fn data_timeout_aborts_the_spool_entry() {
    let mut s = settings();
    s.data_timeout = Duration::from_millis(200);
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(s, Listener::Smtp, UNTRUSTED, spool.clone());
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("Subject: slow\r\n").await;
    assert_eq!(c.reply().await.0, 421);
    c.expect_closed().await;
    assert_eq!(*spool.aborted.lock().unwrap(), 1);
}

#[tokio::test]
async fn failed_commit_is_never_250() {
    let spool = MemSpool {
        fail_commit: true,
        ..Default::default()
    };
    let (mut c, counters, _task) = start(settings(), Listener::Smtp, UNTRUSTED, spool);
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("x\r\n.\r\n").await;
    assert_eq!(
        c.reply().await,
        (451, "4.3.0 Local error, try again\n".into())
    );
    assert_eq!(counters.accepted.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn smuggled_commands_stay_content() {
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(settings(), Listener::Smtp, UNTRUSTED, spool.clone());
    greet(&mut c).await;
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("Subject: a\r\n\r\nx\n.\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nforged\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    assert_eq!(c.cmd("NOOP").await.0, 250);
    let committed = spool.committed.lock().unwrap();
    assert_eq!(committed.len(), 1);
    assert_eq!(
        committed[0].1,
        b"Subject: a\r\n\r\nx\r\n\r\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\nforged\r\n"
    );
}

fn tls_pair() -> (Arc<rustls::ServerConfig>, tokio_rustls::TlsConnector) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert = rcgen::generate_simple_self_signed(vec!["mx.test".to_owned()]).unwrap();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der());
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key.into())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (
        Arc::new(server),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    )
}

async fn upgrade(c: Client, connector: &tokio_rustls::TlsConnector) -> Client {
    assert!(c.io.buffer().is_empty(), "data after the 220 of STARTTLS");
    let name = rustls::pki_types::ServerName::try_from("mx.test").unwrap();
    let tls = connector.connect(name, c.io.into_inner()).await.unwrap();
    Client::new(Box::new(tls))
}

#[tokio::test]
async fn starttls_resets_and_discards_injected_commands() {
    let (config, connector) = tls_pair();
    let mut s = settings();
    s.tls = Some(config);
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(s, Listener::Smtp, UNTRUSTED, spool.clone());
    assert_eq!(c.reply().await.0, 220);
    let (_, ehlo) = c.cmd("EHLO client.test").await;
    assert!(ehlo.lines().any(|l| l == "STARTTLS"));
    // Command injection: the NOOP was sent in clear after STARTTLS.
    c.send("STARTTLS\r\nNOOP\r\n").await;
    assert_eq!(c.reply().await.0, 220);
    let mut c = upgrade(c, &connector).await;
    // State was reset: MAIL needs a new EHLO.
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 503);
    let (code, ehlo) = c.cmd("EHLO client.test").await;
    assert_eq!(code, 250);
    assert!(!ehlo.contains("STARTTLS") && !ehlo.contains("AUTH"));
    assert_eq!(c.cmd("STARTTLS").await.0, 503);
    assert_eq!(c.cmd("MAIL FROM:<a@remote.test>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<b@example.com>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("x\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let committed = spool.committed.lock().unwrap();
    assert!(matches!(
        committed[0].0.origin,
        Origin::Smtp { tls: true, .. }
    ));
}

#[tokio::test]
async fn submission_requires_tls_then_auth() {
    let (config, connector) = tls_pair();
    let mut s = settings();
    s.tls = Some(config);
    let spool = MemSpool::default();
    let (mut c, _, _task) = start(s, Listener::Submission, UNTRUSTED, spool.clone());
    assert_eq!(c.reply().await.0, 220);
    let (_, ehlo) = c.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"), "AUTH offered before TLS: {ehlo}");
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==").await.0, 538);
    assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").await.0, 530);
    assert_eq!(c.cmd("STARTTLS").await.0, 220);
    let mut c = upgrade(c, &connector).await;
    let (_, ehlo) = c.cmd("EHLO client.test").await;
    assert!(ehlo.lines().any(|l| l == "AUTH PLAIN LOGIN"), "{ehlo}");
    assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").await.0, 530);
    // Wrong password, then PLAIN with a continuation.
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n").await,
        (535, "5.7.8 Authentication credentials invalid\n".into())
    );
    assert_eq!(c.cmd("AUTH PLAIN").await, (334, "\n".into()));
    assert_eq!(
        c.cmd("AGFsaWNlAHNlY3JldA==").await,
        (235, "2.7.0 Authentication successful\n".into())
    );
    let (_, ehlo) = c.cmd("EHLO client.test").await;
    assert!(!ehlo.contains("AUTH"));
    assert_eq!(c.cmd("MAIL FROM:<alice@example.com>").await.0, 250);
    assert_eq!(c.cmd("RCPT TO:<friend@elsewhere.test>").await.0, 250);
    assert_eq!(c.cmd("DATA").await.0, 354);
    c.send("x\r\n.\r\n").await;
    assert_eq!(c.reply().await.0, 250);
    let committed = spool.committed.lock().unwrap();
    assert_eq!(committed[0].0.direction, Direction::Outbound);
    assert!(
        matches!(committed[0].0.origin, Origin::Smtp { tls: true, auth: Some(ref u), .. } if u == "alice")
    );
}

#[tokio::test]
async fn auth_login_and_attempt_limit() {
    let (config, connector) = tls_pair();
    let mut s = settings();
    s.tls = Some(config);
    s.max_errors = 20;
    let (mut c, _, task) = start(s, Listener::Submission, UNTRUSTED, MemSpool::default());
    assert_eq!(c.reply().await.0, 220);
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
    assert_eq!(c.cmd("STARTTLS").await.0, 220);
    let mut c = upgrade(c, &connector).await;
    assert_eq!(c.cmd("EHLO client.test").await.0, 250);
    assert_eq!(c.cmd("AUTH LOGIN").await, (334, "VXNlcm5hbWU6\n".into()));
    assert_eq!(c.cmd("YWxpY2U=").await, (334, "UGFzc3dvcmQ6\n".into()));
    assert_eq!(c.cmd("d3Jvbmc=").await.0, 535);
    assert_eq!(c.cmd("AUTH LOGIN").await.0, 334);
    assert_eq!(c.cmd("*").await.0, 501);
    assert_eq!(c.cmd("AUTH CRAM-MD5").await.0, 504);
    assert_eq!(c.cmd("AUTH PLAIN !!!").await.0, 501);
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n").await.0, 535);
    assert_eq!(c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n").await.0, 535);
    assert_eq!(c.reply().await.0, 421);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn server_binds_all_and_limits_connections() {
    let mut s = settings();
    s.listen = vec!["127.0.0.1:0".parse().unwrap()];
    s.submission_listen = vec!["127.0.0.1:0".parse().unwrap()];
    s.max_connections = 1;
    let counters = Arc::new(Counters::default());
    let server = Server::bind(Arc::new(s), MemSpool::default(), counters.clone())
        .await
        .unwrap();
    let addrs = server.local_addrs();
    assert_eq!(
        addrs.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![Listener::Smtp, Listener::Submission]
    );
    let smtp = addrs[0].0;
    tokio::spawn(server.run());
    let mut first = Client::new(Box::new(
        tokio::net::TcpStream::connect(smtp).await.unwrap(),
    ));
    assert_eq!(first.reply().await.0, 220);
    let mut second = Client::new(Box::new(
        tokio::net::TcpStream::connect(addrs[1].0).await.unwrap(),
    ));
    assert_eq!(
        second.reply().await,
        (421, "4.7.0 Too many connections\n".into())
    );
    assert_eq!(first.cmd("QUIT").await.0, 221);
    first.expect_closed().await;
    // The permit is released when the session ends.
    let mut third = None;
    for _ in 0..50 {
        let mut c = Client::new(Box::new(
            tokio::net::TcpStream::connect(smtp).await.unwrap(),
        ));
        if c.reply().await.0 == 220 {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some());

    // Binding fails as a whole when one address is taken.
    let mut s = settings();
    s.listen = vec!["127.0.0.1:0".parse().unwrap(), smtp];
    let err = Server::bind(Arc::new(s), MemSpool::default(), counters)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, crate::SmtpInError::Bind { addr, .. } if addr == smtp));
}
