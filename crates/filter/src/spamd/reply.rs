//! spamd's answer, parsed without I/O (fuzzed: `fuzz/fuzz_targets/spamd_reply.rs`).
//!
//! ```text
//! SPAMD/1.1 0 EX_OK\r\n
//! Content-length: 55\r\n
//! Spam: True ; 1000.0 / 5.0\r\n
//! \r\n
//! GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO
//! ```
//!
//! A failure is just the status line with a code other than 0
//! (`SPAMD/1.0 76 Bad header line: …`), after which spamd closes. The parser
//! is fed the bytes received so far and says whether it needs more, so the
//! client stops reading as soon as the answer is complete instead of
//! trusting the daemon to close.

use siegel_types::SpamScore;

/// The longest answer accepted (headers and body). A `REPORT` is a few KB;
/// a daemon sending more is not spamd.
pub const MAX_REPLY: usize = 1 << 20;

/// The longest status or header line accepted.
const MAX_LINE: usize = 8 * 1024;

/// Most header lines accepted (spamd sends two or three).
const MAX_HEADERS: usize = 64;

/// A complete, successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamdReply {
    /// The `Spam:` header's verdict.
    pub is_spam: bool,
    pub score: SpamScore,
    pub threshold: SpamScore,
    /// `Content-length` octets after the headers (symbols, report); empty
    /// for `CHECK`.
    pub body: Vec<u8>,
}

/// Why an answer is not a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// spamd answered with an error code (`76 Bad header line: …`).
    #[error("spamd error {code}: {message}")]
    Daemon { code: u32, message: String },
    /// The bytes are not spamd's protocol.
    #[error("{0}")]
    Protocol(String),
}

/// How far an answer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not complete yet: read more.
    NeedMore,
    Done(SpamdReply),
}

/// The status line: `SPAMD/<major>.<minor> <code> <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

fn protocol(msg: impl Into<String>) -> ReplyError {
    ReplyError::Protocol(msg.into())
}

/// Printable, bounded text of untrusted bytes, for messages.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Parses a status line (without its line end).
pub fn parse_status(line: &[u8]) -> Result<Status, ReplyError> {
    let bad = || protocol(format!("not a spamd status line: {:?}", shown(line)));
    let text = std::str::from_utf8(line).map_err(|_| bad())?;
    let mut parts = text.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    let code = parts.next().ok_or_else(bad)?;
    let message = parts.next().unwrap_or("");
    let (major, minor) = version
        .strip_prefix("SPAMD/")
        .and_then(|v| v.split_once('.'))
        .ok_or_else(bad)?;
    let digits = |s: &str| !s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) || !digits(code) {
        return Err(bad());
    }
    if message.chars().any(char::is_control) {
        return Err(bad());
    }
    let code = code.parse().map_err(|_| bad())?;
    Ok(Status {
        code,
        message: message.to_owned(),
    })
}

/// The next line of `buf` from `at`: its content (without CR LF) and where
/// the following line starts; `None` when no line end has arrived yet.
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(at..)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let content = &rest[..end];
    Some((content.strip_suffix(b"\r").unwrap_or(content), at + end + 1))
}

/// `True ; 1000.0 / 5.0` (or `Yes`/`No` from old versions).
fn parse_spam_header(value: &str) -> Result<(bool, SpamScore, SpamScore), ReplyError> {
    let bad = || {
        protocol(format!(
            "not a Spam header value: {:?}",
            shown(value.as_bytes())
        ))
    };
    let (flag, scores) = value.split_once(';').ok_or_else(bad)?;
    let is_spam = match flag.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => true,
        "false" | "no" => false,
        _ => return Err(bad()),
    };
    let (score, threshold) = scores.split_once('/').ok_or_else(bad)?;
    let score = score.trim().parse().map_err(|_| bad())?;
    let threshold = threshold.trim().parse().map_err(|_| bad())?;
    Ok((is_spam, score, threshold))
}

/// Parses the answer received so far. `at_eof`: the daemon closed the
/// connection, so an incomplete answer is final (and an error).
pub fn parse(buf: &[u8], at_eof: bool) -> Result<Progress, ReplyError> {
    let incomplete = |what: &str| {
        if at_eof {
            Err(protocol(format!(
                "connection closed {what} ({} octets received)",
                buf.len()
            )))
        } else {
            Ok(Progress::NeedMore)
        }
    };
    if buf.len() > MAX_REPLY {
        return Err(protocol(format!("answer longer than {MAX_REPLY} octets")));
    }
    // An unfinished line is refused as soon as it cannot fit any more (the
    // `+ 1` leaves room for its CR), with the message a finished one gets.
    let Some((status, mut at)) = line(buf, 0) else {
        if buf.len() > MAX_LINE + 1 {
            return Err(protocol("status line too long"));
        }
        return incomplete("before the status line ended");
    };
    if status.len() > MAX_LINE {
        return Err(protocol("status line too long"));
    }
    let status = parse_status(status)?;
    if status.code != 0 {
        return Err(ReplyError::Daemon {
            code: status.code,
            message: status.message,
        });
    }
    let mut content_length: Option<usize> = None;
    let mut spam: Option<(bool, SpamScore, SpamScore)> = None;
    let mut headers = 0;
    loop {
        let Some((header, next)) = line(buf, at) else {
            if buf.len() - at > MAX_LINE + 1 {
                return Err(protocol("header line too long"));
            }
            return incomplete("in the headers");
        };
        at = next;
        if header.is_empty() {
            break;
        }
        if header.len() > MAX_LINE {
            return Err(protocol("header line too long"));
        }
        headers += 1;
        if headers > MAX_HEADERS {
            return Err(protocol("too many header lines"));
        }
        let text = std::str::from_utf8(header)
            .map_err(|_| protocol(format!("header is not UTF-8: {:?}", shown(header))))?;
        let (name, value) = text
            .split_once(':')
            .ok_or_else(|| protocol(format!("not a header line: {:?}", shown(header))))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("Content-length") {
            if content_length.is_some() {
                return Err(protocol("Content-length given twice"));
            }
            if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(protocol(format!(
                    "bad Content-length {:?}",
                    shown(value.as_bytes())
                )));
            }
            let n: usize = value.parse().map_err(|_| protocol("bad Content-length"))?;
            if n > MAX_REPLY {
                return Err(protocol(format!(
                    "Content-length {n} is more than {MAX_REPLY}"
                )));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("Spam") {
            if spam.is_some() {
                return Err(protocol("Spam header given twice"));
            }
            spam = Some(parse_spam_header(value)?);
        }
        // Other headers (DidSet, DidRemove of TELL) do not concern a scan.
    }
    let Some((is_spam, score, threshold)) = spam else {
        return Err(protocol("answer without a Spam header"));
    };
    let body = match content_length {
        None => Vec::new(),
        Some(n) => match buf.get(at..at + n) {
            Some(body) => body.to_vec(),
            None => return incomplete("in the body"),
        },
    };
    Ok(Progress::Done(SpamdReply {
        is_spam,
        score,
        threshold,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GTUBE: &[u8] = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO";

    fn done(buf: &[u8]) -> SpamdReply {
        match parse(buf, true) {
            Ok(Progress::Done(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn symbols_answer_of_spamassassin_4() {
        let r = done(GTUBE);
        assert!(r.is_spam);
        assert_eq!(r.score, SpamScore::points(1000));
        assert_eq!(r.threshold, SpamScore::points(5));
        assert_eq!(
            r.body,
            b"GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO"
        );
    }

    #[test]
    fn check_answer_has_no_body() {
        let r = done(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.0 / 5.0\r\n\r\n");
        assert!(!r.is_spam);
        assert_eq!(r.score, SpamScore::points(0));
        assert!(r.body.is_empty());
        let r = done(b"SPAMD/1.1 0 EX_OK\nspam: yes ; -1.5 / 3.0\n\n");
        assert!(r.is_spam);
        assert_eq!(r.score.thousandths(), -1500);
    }

    #[test]
    fn every_prefix_needs_more_and_the_whole_is_done() {
        for cut in 0..GTUBE.len() {
            assert_eq!(
                parse(&GTUBE[..cut], false),
                Ok(Progress::NeedMore),
                "cut at {cut}"
            );
            assert!(
                matches!(parse(&GTUBE[..cut], true), Err(ReplyError::Protocol(_))),
                "cut at {cut} with EOF must be an error"
            );
        }
        assert!(matches!(parse(GTUBE, false), Ok(Progress::Done(_))));
    }

    #[test]
    fn errors_of_the_daemon_are_typed() {
        assert_eq!(
            parse(
                b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch: Expected 1000 bytes, got 3 bytes)\r\n",
                false
            ),
            Err(ReplyError::Daemon {
                code: 76,
                message: "Bad header line: (Content-Length mismatch: Expected 1000 bytes, got 3 bytes)"
                    .into()
            })
        );
        assert!(matches!(
            parse(b"SPAMD/1.0 75 EX_TEMPFAIL\r\n", true),
            Err(ReplyError::Daemon { code: 75, .. })
        ));
    }

    #[test]
    fn garbage_is_a_protocol_violation() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\n\r\n"[..],
            b"SPAMD/1.1 OK\r\n",
            b"SPAMD/x.1 0 EX_OK\r\n",
            b"SPAMD/1.1 0 EX_OK\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: maybe ; 1 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1e3 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\nSpam: False ; 1 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 99999999999\r\nSpam: True ; 1 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nContent-length: 2000000\r\nSpam: True ; 1 / 5\r\n\r\n",
            b"SPAMD/1.1 0 EX_OK\r\nno colon\r\n\r\n",
            b"SPAMD/1.1 0 EX_\x01OK\r\n",
        ] {
            assert!(
                matches!(parse(bad, true), Err(ReplyError::Protocol(_))),
                "{:?} not refused: {:?}",
                String::from_utf8_lossy(bad),
                parse(bad, true)
            );
        }
    }

    #[test]
    fn endless_lines_are_cut_off() {
        let long = vec![b'S'; MAX_LINE + 2];
        assert!(matches!(parse(&long, false), Err(ReplyError::Protocol(_))));
        let mut headers = b"SPAMD/1.1 0 EX_OK\r\n".to_vec();
        headers.extend(std::iter::repeat_n(b'x', MAX_LINE + 2));
        assert!(matches!(
            parse(&headers, false),
            Err(ReplyError::Protocol(_))
        ));
        let mut many = b"SPAMD/1.1 0 EX_OK\r\n".to_vec();
        for _ in 0..=MAX_HEADERS {
            many.extend_from_slice(b"X: y\r\n");
        }
        assert!(matches!(parse(&many, false), Err(ReplyError::Protocol(_))));
    }

    #[test]
    fn ping_status_line() {
        assert_eq!(
            parse_status(b"SPAMD/1.5 0 PONG"),
            Ok(Status {
                code: 0,
                message: "PONG".into()
            })
        );
    }
}
