//! A bounded look at the header section while content streams past.

/// Collects the header section (up to a byte limit) from stored content
/// chunks, so the session can log and record the `Message-ID` without
/// holding the message: the body is never kept.
#[derive(Debug, Clone)]
pub struct HeaderScanner {
    limit: usize,
    buf: Vec<u8>,
    complete: bool,
}

impl HeaderScanner {
    /// Keeps at most `limit` octets of headers.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            buf: Vec::new(),
            complete: false,
        }
    }

    /// Feeds stored (CRLF-normalised) content.
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.complete {
            return;
        }
        let room = self.limit.saturating_sub(self.buf.len());
        let start = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if self.buf.starts_with(b"\r\n") {
            self.buf.clear();
            self.complete = true;
        } else if let Some(i) = find(&self.buf[start..], b"\r\n\r\n") {
            self.buf.truncate(start + i + 2);
            self.complete = true;
        } else if self.buf.len() >= self.limit {
            self.complete = true;
        }
    }

    /// The `Message-ID` field body (unfolded, trimmed), if seen in the
    /// header section. Only complete lines count.
    pub fn message_id(&self) -> Option<String> {
        let text = String::from_utf8_lossy(&self.buf);
        let mut lines = text.split("\r\n").peekable();
        while let Some(line) = lines.next() {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if !name.trim_end().eq_ignore_ascii_case("message-id") {
                continue;
            }
            let mut value = value.to_owned();
            while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                value.push_str(next);
                lines.next();
            }
            let value: String = value
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(998)
                .collect();
            return (!value.is_empty()).then_some(value);
        }
        None
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_message_id_across_chunks_and_folding() {
        let msg = b"From: a@b.de\r\nMessage-ID:\r\n <abc@b.de>\r\nSubject: x\r\n\r\nMessage-ID: <body@x>\r\n";
        for i in 0..msg.len() {
            let mut s = HeaderScanner::new(1024);
            s.feed(&msg[..i]);
            s.feed(&msg[i..]);
            assert_eq!(s.message_id().as_deref(), Some("<abc@b.de>"), "split {i}");
        }
    }

    #[test]
    fn ignores_body_and_respects_limit() {
        let mut s = HeaderScanner::new(1024);
        s.feed(b"Subject: x\r\n\r\nMessage-ID: <body@x>\r\n");
        assert_eq!(s.message_id(), None);
        let mut s = HeaderScanner::new(20);
        s.feed(b"Subject: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nMessage-ID: <a@b>\r\n\r\n");
        assert_eq!(s.message_id(), None);
        assert!(s.buf.len() <= 20);
        let mut s = HeaderScanner::new(1024);
        s.feed(b"\r\nMessage-ID: <a@b>\r\n");
        assert_eq!(s.message_id(), None);
    }
}
