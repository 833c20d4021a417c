//! A spamd client: the SPAMC/1.5 protocol over TCP or a Unix socket.
//!
//! ```text
//! SYMBOLS SPAMC/1.5\r\n
//! Content-length: <octets>\r\n
//! User: <name>\r\n          (optional)
//! \r\n
//! <the mail>
//! ```
//!
//! The length must be known before the mail is sent, which it is (the
//! spool knows every mail's size), so the mail is streamed. Mail above the
//! size limit is not sent at all ([`Skip::TooLarge`]; spamc's default is
//! 500 KB for the same reason: large mail is rarely spam and slow to scan).

pub mod reply;

use siegel_config::ScannerAddress;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::clamd::CHUNK;
use crate::conn::{Conn, Timeouts, WriteError};
use crate::error::{ScanError, Scanner, Step};
use crate::result::{Skip, SpamReport, SpamScan};
use reply::{Progress, ReplyError};

/// Which answer spamd is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpamdCommand {
    /// Verdict and score only.
    Check,
    /// Verdict, score and the names of the rules that hit.
    #[default]
    Symbols,
    /// Verdict, score and the human-readable report.
    Report,
}

impl SpamdCommand {
    fn word(self) -> &'static str {
        match self {
            Self::Check => "CHECK",
            Self::Symbols => "SYMBOLS",
            Self::Report => "REPORT",
        }
    }
}

/// A user name spamd cannot be given: it goes into a header line, so it
/// must be printable ASCII without spaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a user name spamd accepts: {0:?}")]
pub struct BadUser(pub String);

/// A spamd daemon: where it is, how long to wait, how much to send.
#[derive(Debug, Clone)]
pub struct Spamd {
    address: ScannerAddress,
    timeouts: Timeouts,
    max_size: u64,
    user: Option<String>,
    command: SpamdCommand,
}

impl Spamd {
    /// A client for the spamd at `address` asking `SYMBOLS` as spamd's
    /// default user; mails larger than `max_size` are not sent.
    pub fn new(address: ScannerAddress, timeouts: Timeouts, max_size: u64) -> Self {
        Self {
            address,
            timeouts,
            max_size,
            user: None,
            command: SpamdCommand::Symbols,
        }
    }

    /// Scans as `user` (spamd's per-user settings).
    pub fn with_user(mut self, user: &str) -> Result<Self, BadUser> {
        if user.is_empty() || user.len() > 128 || !user.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BadUser(user.to_owned()));
        }
        self.user = Some(user.to_owned());
        Ok(self)
    }

    /// Asks for another kind of answer.
    pub fn with_command(mut self, command: SpamdCommand) -> Self {
        self.command = command;
        self
    }

    /// Where the daemon listens.
    pub fn address(&self) -> &ScannerAddress {
        &self.address
    }

    /// `PING`: whether spamd is up and answering.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let mut conn = Conn::open(Scanner::Spamd, &self.address, self.timeouts).await?;
        match conn.write(&[b"PING SPAMC/1.5\r\n\r\n"]).await {
            Ok(()) => {}
            Err(WriteError::Io(e)) => return Err(conn.io_error(Step::Sending, e)),
            Err(WriteError::Timeout(e)) => return Err(e),
        }
        let mut buf = Vec::new();
        let line = loop {
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: &[u8] = &buf[..end];
                break line.strip_suffix(b"\r").unwrap_or(line).to_vec();
            }
            if conn.read_some(&mut buf, 1024).await? == 0 {
                return Err(conn.protocol("closed without answering PING"));
            }
        };
        match reply::parse_status(&line) {
            Ok(s) if s.code == 0 && s.message == "PONG" => Ok(()),
            Ok(s) => Err(conn.protocol(format!("PING answered {} {:?}", s.code, s.message))),
            Err(e) => Err(conn.protocol(e.to_string())),
        }
    }

    /// Scans `len` octets read from `content` (which may hold more; only
    /// `len` are read).
    pub async fn scan(
        &self,
        content: impl AsyncRead + Unpin,
        len: u64,
    ) -> Result<SpamScan, ScanError> {
        let mut session = match self.start(len).await? {
            Started::Session(s) => s,
            Started::Skipped(why) => return Ok(SpamScan::Skipped { why }),
        };
        let mut content = content.take(len);
        let mut buf = vec![0u8; CHUNK];
        while session.wants_more() {
            let n = content.read(&mut buf).await.map_err(ScanError::Source)?;
            if n == 0 {
                break;
            }
            session.send(&buf[..n]).await?;
        }
        session.finish().await
    }

    /// Opens a session for a mail of `len` octets and sends the request
    /// headers, or says why not.
    pub(crate) async fn start(&self, len: u64) -> Result<Started, ScanError> {
        if len > self.max_size {
            return Ok(Started::Skipped(Skip::TooLarge {
                size: len,
                limit: self.max_size,
            }));
        }
        let mut conn = Conn::open(Scanner::Spamd, &self.address, self.timeouts).await?;
        let mut head = format!(
            "{} SPAMC/1.5\r\nContent-length: {len}\r\n",
            self.command.word()
        );
        if let Some(user) = &self.user {
            head.push_str(&format!("User: {user}\r\n"));
        }
        head.push_str("\r\n");
        let closed = match conn.write(&[head.as_bytes()]).await {
            Ok(()) => None,
            Err(WriteError::Io(e)) => Some(e),
            Err(WriteError::Timeout(e)) => return Err(e),
        };
        Ok(Started::Session(SpamdSession {
            conn,
            closed,
            remaining: len,
            len,
            command: self.command,
        }))
    }
}

/// A session or the reason there is none.
pub(crate) enum Started {
    Session(SpamdSession),
    Skipped(Skip),
}

/// One request in progress.
pub(crate) struct SpamdSession {
    conn: Conn,
    /// spamd closed the connection early (it does after an error answer).
    closed: Option<std::io::Error>,
    /// Octets of the announced length still to send.
    remaining: u64,
    len: u64,
    command: SpamdCommand,
}

impl SpamdSession {
    /// Whether spamd still expects octets of the mail.
    pub(crate) fn wants_more(&self) -> bool {
        self.closed.is_none() && self.remaining > 0
    }

    /// Sends octets of the mail; never more than the announced length.
    pub(crate) async fn send(&mut self, data: &[u8]) -> Result<(), ScanError> {
        if !self.wants_more() {
            return Ok(());
        }
        let take = usize::try_from(self.remaining).map_or(data.len(), |r| r.min(data.len()));
        let data = &data[..take];
        match self.conn.write(&[data]).await {
            Ok(()) => self.remaining -= take as u64,
            Err(WriteError::Io(e)) => self.closed = Some(e),
            Err(WriteError::Timeout(e)) => return Err(e),
        }
        Ok(())
    }

    /// Reads spamd's answer (after the whole mail was sent, or after spamd
    /// closed early with an error).
    pub(crate) async fn finish(mut self) -> Result<SpamScan, ScanError> {
        if self.closed.is_none() {
            if self.remaining > 0 {
                return Err(ScanError::ShortContent {
                    expected: self.len,
                    got: self.len - self.remaining,
                });
            }
            // spamd reads exactly Content-length octets; the half-close is
            // for daemons that read to the end, and harmless here.
            if let Err(e) = self.conn.shutdown_write().await
                && !matches!(e, ScanError::Io { .. })
            {
                return Err(e);
            }
        }
        let mut buf = Vec::new();
        let parsed = loop {
            let eof = match self.conn.read_some(&mut buf, reply::MAX_REPLY + 1).await {
                Ok(n) => n == 0,
                Err(e) => {
                    return Err(match self.closed.take() {
                        Some(w) if buf.is_empty() => self.conn.io_error(Step::Sending, w),
                        _ => e,
                    });
                }
            };
            if eof && buf.is_empty() {
                // Not a word: the connection failed, whatever the daemon is.
                return Err(match self.closed.take() {
                    Some(w) => self.conn.io_error(Step::Sending, w),
                    None => self.conn.io_error(
                        Step::Reading,
                        std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "closed without answering",
                        ),
                    ),
                });
            }
            match reply::parse(&buf, eof) {
                Ok(Progress::NeedMore) if !eof => continue,
                other => break other,
            }
        };
        let reply = match parsed {
            Ok(Progress::Done(r)) => r,
            Ok(Progress::NeedMore) => {
                return Err(self.conn.protocol("answer incomplete at end of stream"));
            }
            Err(ReplyError::Daemon { code, message }) => {
                return Err(self.conn.daemon(format!("{code} {message}")));
            }
            Err(ReplyError::Protocol(detail)) => return Err(self.conn.protocol(detail)),
        };
        let text = String::from_utf8_lossy(&reply.body);
        let (symbols, report) = match self.command {
            SpamdCommand::Check => (Vec::new(), None),
            SpamdCommand::Symbols => (
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect(),
                None,
            ),
            SpamdCommand::Report => (Vec::new(), Some(text.into_owned())),
        };
        let report = SpamReport {
            score: reply.score,
            threshold: reply.threshold,
            symbols,
            report,
        };
        Ok(if reply.is_spam {
            SpamScan::Spam(report)
        } else {
            SpamScan::Ham(report)
        })
    }
}
