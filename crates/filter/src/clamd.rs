//! A clamd client: `zINSTREAM` over TCP or a Unix socket.
//!
//! The mail is streamed as it is read, in length-prefixed chunks (a 4-octet
//! big-endian length, then the octets; a zero length ends the stream), so a
//! 100 MB mail never sits in memory. clamd decodes MIME itself, so the raw
//! mail is what it gets. When the stream passes its `StreamMaxLength`,
//! clamd answers `INSTREAM size limit exceeded. ERROR` and closes: the
//! write then fails, and the answer is still read — the result says
//! [`Skip::DaemonLimit`] instead of a broken pipe.
//!
//! The `z` form of the commands is used: answers end in a NUL octet, which
//! cannot occur inside them.

use siegel_config::ScannerAddress;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::conn::{Conn, Timeouts, WriteError};
use crate::error::{ScanError, Scanner, Step};
use crate::result::{Skip, VirusScan};

/// The longest answer clamd gives is a signature name; anything near this
/// is not clamd.
const MAX_ANSWER: usize = 4096;

/// Chunk size when streaming; clamd reads chunks of any size up to its limit.
pub(crate) const CHUNK: usize = 64 * 1024;

/// What clamd answered to `zINSTREAM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdReply {
    /// `stream: OK`
    Clean,
    /// `stream: <signature> FOUND`
    Found(String),
    /// `INSTREAM size limit exceeded. ERROR`
    SizeLimit,
    /// `… ERROR` or another complaint of clamd's.
    Error(String),
}

/// Parses one clamd answer (without or with its NUL or newline). `Err`
/// says what is wrong with a reply that is not clamd's.
pub fn parse_reply(raw: &[u8]) -> Result<ClamdReply, String> {
    let raw = raw
        .strip_suffix(b"\0")
        .or_else(|| raw.strip_suffix(b"\n"))
        .unwrap_or(raw);
    let text = std::str::from_utf8(raw).map_err(|_| "answer is not UTF-8".to_owned())?;
    if text.is_empty() {
        return Err("empty answer".to_owned());
    }
    if let Some(bad) = text.chars().find(|c| c.is_control()) {
        return Err(format!("control character {bad:?} in the answer"));
    }
    if text == "INSTREAM size limit exceeded. ERROR" {
        return Ok(ClamdReply::SizeLimit);
    }
    if let Some(message) = text.strip_suffix(" ERROR") {
        return Ok(ClamdReply::Error(message.to_owned()));
    }
    // clamd's complaints about the request itself, without "ERROR".
    if matches!(text, "UNKNOWN COMMAND" | "COMMAND READ TIMED OUT") {
        return Ok(ClamdReply::Error(text.to_owned()));
    }
    let Some(result) = text.strip_prefix("stream: ") else {
        return Err(format!("unexpected answer {:?}", shorten(text)));
    };
    if result == "OK" {
        return Ok(ClamdReply::Clean);
    }
    match result.strip_suffix(" FOUND") {
        Some(name) if !name.trim().is_empty() => Ok(ClamdReply::Found(name.trim().to_owned())),
        _ => Err(format!("unexpected answer {:?}", shorten(text))),
    }
}

/// At most 200 characters of a daemon's text, for messages.
pub(crate) fn shorten(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// A clamd daemon: where it is, how long to wait, how much to send.
#[derive(Debug, Clone)]
pub struct Clamd {
    address: ScannerAddress,
    timeouts: Timeouts,
    max_size: u64,
}

impl Clamd {
    /// A client for the clamd at `address`; mails larger than `max_size`
    /// are not sent ([`Skip::TooLarge`]).
    pub fn new(address: ScannerAddress, timeouts: Timeouts, max_size: u64) -> Self {
        Self {
            address,
            timeouts,
            max_size,
        }
    }

    /// Where the daemon listens.
    pub fn address(&self) -> &ScannerAddress {
        &self.address
    }

    /// `zPING`: whether clamd is up and answering.
    pub async fn ping(&self) -> Result<(), ScanError> {
        let (conn, answer) = self.command(b"zPING\0").await?;
        if answer == "PONG" {
            Ok(())
        } else {
            Err(conn.protocol(format!("PING answered {:?}", shorten(&answer))))
        }
    }

    /// `zVERSION`: clamd's and its database's version, e.g.
    /// `ClamAV 1.4.6/27000/…`.
    pub async fn version(&self) -> Result<String, ScanError> {
        let (conn, answer) = self.command(b"zVERSION\0").await?;
        if answer.starts_with("ClamAV ") {
            Ok(answer)
        } else {
            Err(conn.protocol(format!("VERSION answered {:?}", shorten(&answer))))
        }
    }

    async fn command(&self, command: &[u8]) -> Result<(Conn, String), ScanError> {
        let mut conn = Conn::open(Scanner::Clamd, &self.address, self.timeouts).await?;
        match conn.write(&[command]).await {
            Ok(()) => {}
            Err(WriteError::Io(e)) => return Err(conn.io_error(Step::Sending, e)),
            Err(WriteError::Timeout(e)) => return Err(e),
        }
        let raw = read_answer(&mut conn).await?;
        let text = String::from_utf8(raw).map_err(|_| conn.protocol("answer is not UTF-8"))?;
        Ok((conn, text))
    }

    /// Scans `len` octets read from `content` (which may hold more; only
    /// `len` are read).
    pub async fn scan(
        &self,
        content: impl AsyncRead + Unpin,
        len: u64,
    ) -> Result<VirusScan, ScanError> {
        let mut session = match self.start(len).await? {
            Started::Session(s) => s,
            Started::Skipped(why) => return Ok(VirusScan::Skipped { why }),
        };
        let mut content = content.take(len);
        let mut buf = vec![0u8; CHUNK];
        let mut sent = 0u64;
        while session.wants_more() {
            let n = content.read(&mut buf).await.map_err(ScanError::Source)?;
            if n == 0 {
                break;
            }
            sent += n as u64;
            session.send(&buf[..n]).await?;
        }
        if session.wants_more() && sent < len {
            return Err(ScanError::ShortContent {
                expected: len,
                got: sent,
            });
        }
        session.finish().await
    }

    /// Opens a session for a mail of `len` octets, or says why not.
    pub(crate) async fn start(&self, len: u64) -> Result<Started, ScanError> {
        if len > self.max_size {
            return Ok(Started::Skipped(Skip::TooLarge {
                size: len,
                limit: self.max_size,
            }));
        }
        let mut conn = Conn::open(Scanner::Clamd, &self.address, self.timeouts).await?;
        let closed = match conn.write(&[b"zINSTREAM\0"]).await {
            Ok(()) => None,
            Err(WriteError::Io(e)) => Some(e),
            Err(WriteError::Timeout(e)) => return Err(e),
        };
        Ok(Started::Session(ClamdSession {
            conn,
            closed,
            size: len,
        }))
    }
}

/// A session or the reason there is none.
pub(crate) enum Started {
    Session(ClamdSession),
    Skipped(Skip),
}

/// One `zINSTREAM` in progress.
pub(crate) struct ClamdSession {
    conn: Conn,
    /// The daemon closed the connection while we were sending; its answer
    /// (usually the size limit) is read at `finish`.
    closed: Option<std::io::Error>,
    size: u64,
}

impl ClamdSession {
    /// Whether clamd still reads: after it closed, sending is pointless.
    pub(crate) fn wants_more(&self) -> bool {
        self.closed.is_none()
    }

    /// Sends octets of the mail, in chunks of at most [`CHUNK`].
    pub(crate) async fn send(&mut self, data: &[u8]) -> Result<(), ScanError> {
        for chunk in data.chunks(CHUNK) {
            if self.closed.is_some() {
                break;
            }
            // At most CHUNK octets: the length always fits.
            let n = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
            match self.conn.write(&[&n.to_be_bytes(), chunk]).await {
                Ok(()) => {}
                Err(WriteError::Io(e)) => self.closed = Some(e),
                Err(WriteError::Timeout(e)) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the stream and reads clamd's verdict.
    pub(crate) async fn finish(mut self) -> Result<VirusScan, ScanError> {
        let conn = &mut self.conn;
        if self.closed.is_none() {
            match conn.write(&[&0u32.to_be_bytes()]).await {
                Ok(()) => {}
                Err(WriteError::Io(e)) => self.closed = Some(e),
                Err(WriteError::Timeout(e)) => return Err(e),
            }
        }
        let raw = match read_answer(conn).await {
            Ok(raw) => raw,
            // Closed without a word after refusing our data: report why the
            // write failed, which is the first thing that went wrong.
            Err(e) => {
                return Err(match self.closed.take() {
                    Some(write_error) => conn.io_error(Step::Sending, write_error),
                    None => e,
                });
            }
        };
        match parse_reply(&raw) {
            Ok(ClamdReply::Clean) => Ok(VirusScan::Clean),
            Ok(ClamdReply::Found(signature)) => Ok(VirusScan::Infected { signature }),
            Ok(ClamdReply::SizeLimit) => Ok(VirusScan::Skipped {
                why: Skip::DaemonLimit { size: self.size },
            }),
            Ok(ClamdReply::Error(message)) => Err(conn.daemon(message)),
            Err(detail) => Err(conn.protocol(detail)),
        }
    }
}

/// Reads one NUL-terminated answer (or up to end of stream), without the NUL.
async fn read_answer(conn: &mut Conn) -> Result<Vec<u8>, ScanError> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.iter().position(|&b| b == 0) {
            buf.truncate(end);
            return Ok(buf);
        }
        if conn.read_some(&mut buf, MAX_ANSWER).await? == 0 {
            if buf.is_empty() {
                return Err(conn.io_error(
                    Step::Reading,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "closed without answering",
                    ),
                ));
            }
            return Ok(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_clamd_gives() {
        assert_eq!(parse_reply(b"stream: OK\0"), Ok(ClamdReply::Clean));
        assert_eq!(parse_reply(b"stream: OK\n"), Ok(ClamdReply::Clean));
        assert_eq!(
            parse_reply(b"stream: Win.Test.EICAR_HDB-1 FOUND\0"),
            Ok(ClamdReply::Found("Win.Test.EICAR_HDB-1".into()))
        );
        assert_eq!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            Ok(ClamdReply::SizeLimit)
        );
        assert_eq!(
            parse_reply(b"stream: Can't allocate memory ERROR"),
            Ok(ClamdReply::Error("stream: Can't allocate memory".into()))
        );
        assert_eq!(
            parse_reply(b"UNKNOWN COMMAND\0"),
            Ok(ClamdReply::Error("UNKNOWN COMMAND".into()))
        );
    }

    #[test]
    fn anything_else_is_a_protocol_violation() {
        for bad in [
            &b""[..],
            b"\0",
            b"OK",
            b"stream: FOUND",
            b"stream:  FOUND",
            b"stream: X FOUND\x07",
            b"stream: \xff FOUND",
            b"HTTP/1.1 200 OK\r\n",
            b"stream: ok",
        ] {
            assert!(parse_reply(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn long_garbage_is_shortened_in_messages() {
        let text = "x".repeat(5000);
        let err = parse_reply(text.as_bytes()).unwrap_err();
        assert!(err.len() < 300, "{}", err.len());
    }
}
