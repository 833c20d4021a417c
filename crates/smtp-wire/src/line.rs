//! The command-line reader.

/// What the reader found in the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its line end (`CRLF` or a bare `LF`).
    Line(Vec<u8>),
    /// The line exceeded the limit. It is reported once, as soon as the limit
    /// is crossed, and the rest of it is discarded up to the next line end so
    /// the session stays in step with the client (answer `500 5.5.2`).
    TooLong,
}

/// Splits a byte stream into command lines, holding at most `limit` bytes.
///
/// Why a limit: a client that never sends a line end must not make us
/// buffer without bound. RFC 5321 §4.5.3.1.4 says 512 octets including CRLF;
/// the default used by the server is more tolerant (4096) because real
/// clients send long MAIL FROM lines with many parameters.
#[derive(Debug, Clone)]
pub struct LineReader {
    limit: usize,
    partial: Vec<u8>,
    discarding: bool,
}

impl LineReader {
    /// A reader for lines of at most `limit` octets including the line end.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(3),
            partial: Vec::new(),
            discarding: false,
        }
    }

    /// The line limit in octets, including the line end.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// True when bytes of an incomplete line are held (or being discarded).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty() || self.discarding
    }

    /// Forgets any incomplete line, e.g. after STARTTLS: bytes the client
    /// sent before the TLS handshake must never be taken as commands.
    pub fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }

    /// Consumes bytes from `input` up to and including the first line end.
    ///
    /// Returns how many bytes were consumed (always > 0 for non-empty input,
    /// so a caller can loop) and the event, if the consumed bytes completed
    /// one. Bytes after the returned count are left to the caller: after a
    /// `DATA` or `STARTTLS` line they belong to someone else.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<LineEvent>) {
        match input.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let consumed = i + 1;
                if self.discarding {
                    self.discarding = false;
                    return (consumed, None);
                }
                if self.partial.len() + consumed > self.limit {
                    self.partial.clear();
                    return (consumed, Some(LineEvent::TooLong));
                }
                self.partial.extend_from_slice(&input[..i]);
                let mut line = std::mem::take(&mut self.partial);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                (consumed, Some(LineEvent::Line(line)))
            }
            None => {
                if self.discarding {
                    return (input.len(), None);
                }
                if self.partial.len() + input.len() >= self.limit {
                    self.partial.clear();
                    self.discarding = true;
                    return (input.len(), Some(LineEvent::TooLong));
                }
                self.partial.extend_from_slice(input);
                (input.len(), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(reader: &mut LineReader, input: &[u8], events: &mut Vec<LineEvent>) {
        let mut rest = input;
        while !rest.is_empty() {
            let (n, ev) = reader.feed(rest);
            assert!(n > 0 && n <= rest.len());
            rest = &rest[n..];
            events.extend(ev);
        }
    }

    fn all(limit: usize, input: &[u8]) -> Vec<LineEvent> {
        let mut events = Vec::new();
        run(&mut LineReader::new(limit), input, &mut events);
        events
    }

    fn line(s: &str) -> LineEvent {
        LineEvent::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn crlf_and_bare_lf_end_lines() {
        assert_eq!(
            all(100, b"EHLO a\r\nNOOP\nQUIT\r\n"),
            vec![line("EHLO a"), line("NOOP"), line("QUIT")]
        );
        assert_eq!(all(100, b"NOOP"), vec![]);
    }

    #[test]
    fn limit_counts_the_line_end() {
        // 8 octets + CRLF = 10 fits a limit of 10, 9 octets do not.
        assert_eq!(all(10, b"12345678\r\n"), vec![line("12345678")]);
        assert_eq!(
            all(10, b"123456789\r\nNOOP\r\n"),
            vec![LineEvent::TooLong, line("NOOP")]
        );
        assert_eq!(
            all(10, b"123456789\nNOOP\r\n"),
            vec![line("123456789"), line("NOOP")]
        );
    }

    #[test]
    fn huge_line_resynchronises_without_buffering() {
        let mut input = vec![b'x'; 1_000_000];
        input.extend_from_slice(b"\r\nQUIT\r\n");
        let mut reader = LineReader::new(512);
        let mut events = Vec::new();
        for chunk in input.chunks(4096) {
            run(&mut reader, chunk, &mut events);
            assert!(reader.partial.len() < 512);
        }
        assert_eq!(events, vec![LineEvent::TooLong, line("QUIT")]);
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = b"EHLO a\r\nMAIL FROM:<a@b.de>\nxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\r\nRCPT TO:<c@d.de>\r\n";
        let whole = all(20, input);
        assert_eq!(whole.len(), 5);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut reader = LineReader::new(20);
                let mut events = Vec::new();
                run(&mut reader, &input[..i], &mut events);
                run(&mut reader, &input[i..j], &mut events);
                run(&mut reader, &input[j..], &mut events);
                assert_eq!(events, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn reset_drops_partial_line() {
        let mut reader = LineReader::new(100);
        let mut events = Vec::new();
        run(&mut reader, b"MAIL FROM:<evil", &mut events);
        assert!(reader.has_partial());
        reader.reset();
        run(&mut reader, b"EHLO x\r\n", &mut events);
        assert_eq!(events, vec![line("EHLO x")]);
    }
}
