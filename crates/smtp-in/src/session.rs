//! One SMTP session: the state machine over a stream.
//!
//! Replies are collected in an output buffer and flushed only when the input
//! buffer holds no further complete command (RFC 2920 PIPELINING): a client
//! that sends all commands in one write gets all replies in one write, and a
//! client that waits for each reply is never left waiting (no deadlock).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_smtp_wire::{Command, LineEvent, LineReader, MailFrom, parse_command};
use siegel_types::{Counters, Recipient};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::conn::Conn;
use crate::spool::MailSpool;
use crate::{LOG_TARGET, Listener, Settings};

// One file per verb group; they add methods to `Session`.
mod auth;
mod data;
mod envelope;
mod starttls;

/// Bytes read from the socket at a time; also bounds the input buffer.
const READ_CHUNK: usize = 16 * 1024;
/// Content is handed to the spool in pieces of about this size.
const WRITE_CHUNK: usize = 64 * 1024;
/// Header bytes kept to find the Message-ID.
const HEADER_SCAN_LIMIT: usize = 64 * 1024;
/// Failed AUTH attempts before the client is dropped.
const MAX_AUTH_FAILURES: usize = 3;

/// Why a session ends early.
#[derive(Debug)]
enum Stop {
    /// The client said QUIT (already answered).
    Quit,
    /// The client closed the connection.
    Closed,
    /// A read timed out (answered with 421 by the caller).
    Timeout,
    /// We dropped the client with a 421 that was already queued.
    Dropped,
    Io(std::io::Error),
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Io(e)
    }
}

/// The mail transaction between MAIL and the end of DATA.
struct Transaction {
    mail: MailFrom,
    recipients: Vec<Recipient>,
    /// At least one recipient is outside the internal domains.
    external: bool,
}

/// Keeps the sessions gauge right however the session ends.
struct SessionGauge(Arc<Counters>);

impl SessionGauge {
    fn new(counters: Arc<Counters>) -> Self {
        Counters::gauge_add(&counters.sessions, 1);
        Self(counters)
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        Counters::gauge_add(&self.0.sessions, -1);
    }
}

struct Session<S, Q> {
    io: Conn<S>,
    peer: SocketAddr,
    kind: Listener,
    settings: Arc<Settings>,
    spool: Q,
    counters: Arc<Counters>,
    input: Vec<u8>,
    /// Start of unconsumed bytes in `input`.
    pos: usize,
    output: Vec<u8>,
    reader: LineReader,
    helo: Option<String>,
    tls: bool,
    auth_user: Option<String>,
    auth_failures: usize,
    errors: usize,
    trusted: bool,
    tx: Option<Transaction>,
}

/// Runs one SMTP session on `stream` until QUIT, timeout, error or
/// disconnect. Generic over the stream so tests can run it in memory.
pub async fn handle_session<S, Q>(
    stream: S,
    peer: SocketAddr,
    kind: Listener,
    settings: Arc<Settings>,
    spool: Q,
    counters: Arc<Counters>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: MailSpool,
{
    let _gauge = SessionGauge::new(counters.clone());
    let ip = canonical(peer.ip());
    let trusted = settings
        .trusted_networks
        .iter()
        .any(|net| net.contains(&ip));
    let mut session = Session {
        io: Conn::Plain(stream),
        peer,
        kind,
        reader: LineReader::new(settings.max_line_length),
        settings,
        spool,
        counters,
        input: Vec::with_capacity(READ_CHUNK),
        pos: 0,
        output: Vec::new(),
        helo: None,
        tls: false,
        auth_user: None,
        auth_failures: 0,
        errors: 0,
        trusted,
        tx: None,
    };
    tracing::debug!(target: LOG_TARGET, peer = %peer, ?kind, trusted, "session started");
    let result = session.run().await;
    match result {
        Err(Stop::Timeout) => {
            let host = session.settings.hostname.clone();
            session.reply(421, "4.4.2", &format!("{host} Error: timeout exceeded"));
        }
        Err(Stop::Io(ref e)) => {
            tracing::debug!(target: LOG_TARGET, peer = %peer, error = %e, "session I/O error")
        }
        _ => {}
    }
    // Best effort: the client may be gone already.
    let _ = session.flush().await;
    let _ = session.io.shutdown().await;
    tracing::debug!(target: LOG_TARGET, peer = %peer, "session ended");
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl<S, Q> Session<S, Q>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: MailSpool,
{
    fn reply(&mut self, code: u16, enhanced: &str, text: &str) {
        self.output
            .extend_from_slice(format!("{code} {enhanced} {text}\r\n").as_bytes());
    }

    /// A 5xx for a bad command: counts towards `max_errors`.
    fn error(&mut self, code: u16, enhanced: &str, text: &str) {
        self.errors += 1;
        self.reply(code, enhanced, text);
    }

    /// Writes the queued replies. Bounded by the command timeout: a client
    /// that pipelines commands but never reads the replies would otherwise
    /// hold the session (and a connection slot) forever.
    async fn flush(&mut self) -> Result<(), Stop> {
        let write = async {
            if !self.output.is_empty() {
                self.io.write_all(&self.output).await?;
                self.output.clear();
            }
            self.io.flush().await
        };
        match tokio::time::timeout(self.settings.command_timeout, write).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Stop::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "client does not read replies",
            ))),
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.input[self.pos..]
    }

    /// Flushes the replies, then reads more input (the buffer is empty or
    /// holds only part of a line).
    async fn fill(&mut self, timeout: Duration) -> Result<(), Stop> {
        self.flush().await?;
        self.input.drain(..self.pos);
        self.pos = 0;
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK, 0);
        let read = tokio::time::timeout(timeout, self.io.read(&mut self.input[start..])).await;
        let n = match read {
            Err(_) => {
                self.input.truncate(start);
                return Err(Stop::Timeout);
            }
            Ok(Err(e)) => {
                self.input.truncate(start);
                return Err(Stop::Io(e));
            }
            Ok(Ok(n)) => n,
        };
        self.input.truncate(start + n);
        if n == 0 { Err(Stop::Closed) } else { Ok(()) }
    }

    /// The next command line (or too-long marker), reading as needed.
    async fn next_line(&mut self) -> Result<LineEvent, Stop> {
        loop {
            while self.pos < self.input.len() {
                let (n, event) = self.reader.feed(&self.input[self.pos..]);
                self.pos += n;
                if let Some(event) = event {
                    return Ok(event);
                }
            }
            self.fill(self.settings.command_timeout).await?;
        }
    }

    async fn run(&mut self) -> Result<(), Stop> {
        let greeting = format!("220 {} ESMTP Siegel\r\n", self.settings.hostname);
        self.output.extend_from_slice(greeting.as_bytes());
        loop {
            let line = match self.next_line().await? {
                LineEvent::Line(line) => line,
                LineEvent::TooLong => {
                    self.error(500, "5.5.2", "Line too long");
                    self.check_errors()?;
                    continue;
                }
            };
            match parse_command(&line) {
                Ok(cmd) => self.command(cmd).await?,
                Err(e) => {
                    let r = e.reply();
                    self.error(r.code, &r.status(), &r.text);
                }
            }
            self.check_errors()?;
        }
    }

    fn check_errors(&mut self) -> Result<(), Stop> {
        if self.errors >= self.settings.max_errors {
            tracing::info!(target: LOG_TARGET, peer = %self.peer, result = "rejected", reason = "too many errors", "client dropped");
            self.reply(
                421,
                "4.7.0",
                &format!("{} Error: too many errors", self.settings.hostname),
            );
            return Err(Stop::Dropped);
        }
        Ok(())
    }

    async fn command(&mut self, cmd: Command) -> Result<(), Stop> {
        match cmd {
            Command::Ehlo(name) => self.ehlo(name),
            Command::Helo(name) => {
                self.helo = Some(name);
                self.tx = None;
                let host = self.settings.hostname.clone();
                self.output
                    .extend_from_slice(format!("250 {host}\r\n").as_bytes());
            }
            Command::MailFrom(mail) => self.mail(mail),
            Command::RcptTo(rcpt) => self.rcpt(rcpt),
            Command::Data => self.data().await?,
            Command::Rset => {
                self.tx = None;
                self.reply(250, "2.0.0", "Ok");
            }
            Command::Noop => self.reply(250, "2.0.0", "Ok"),
            Command::Quit => {
                self.reply(221, "2.0.0", "Bye");
                return Err(Stop::Quit);
            }
            Command::Vrfy(_) => self.reply(502, "5.5.1", "VRFY not supported"),
            Command::Expn(_) => self.reply(502, "5.5.1", "EXPN not supported"),
            Command::Help => self.reply(214, "2.0.0", "See RFC 5321"),
            Command::StartTls => self.starttls().await?,
            Command::Auth { mechanism, initial } => self.auth(mechanism, initial).await?,
            Command::Unknown(_) => self.error(500, "5.5.1", "Command unrecognized"),
        }
        Ok(())
    }
}
