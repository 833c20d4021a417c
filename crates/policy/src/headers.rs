//! A tolerant reader for an RFC 5322 header block.
//!
//! Classification runs on mail straight from clients, so it must cope with
//! anything: LF or CRLF line ends, folded lines, duplicate headers, 8-bit
//! bytes, lines without a colon. It never fails; what it cannot read it
//! skips, and it remembers every header's exact byte range so that a rewrite
//! ([`crate::Classification::apply`]) touches only the headers it changes.

use std::ops::Range;

/// One header field as found in the block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Field {
    /// The field name as written (compare with `eq_ignore_ascii_case`).
    pub name: String,
    /// The unfolded value with surrounding whitespace trimmed. Bytes that are
    /// not UTF-8 are read as Windows-1252, the usual charset of raw 8-bit
    /// headers from old clients.
    pub value: String,
    /// The bytes of the whole field, including its final line end.
    pub span: Range<usize>,
}

/// Where the header section ends: the index just after the blank line that
/// separates it from the body, or the end of the input when there is none.
/// Callers may pass a whole message; the body is never looked at.
pub(crate) fn header_end(block: &[u8]) -> usize {
    let mut pos = 0;
    while pos < block.len() {
        let (line, next) = line_at(block, pos);
        if line.is_empty() {
            return next;
        }
        pos = next;
    }
    block.len()
}

/// Splits the header section into fields.
pub(crate) fn parse(block: &[u8]) -> Vec<Field> {
    let end = header_end(block);
    let mut fields = Vec::new();
    let mut pos = 0;
    while pos < end {
        let start = pos;
        let (first, mut next) = line_at(block, pos);
        if first.is_empty() {
            break;
        }
        // Collect continuation lines (they start with a space or a tab).
        let mut raw_value: Vec<u8> = Vec::new();
        let colon = first.iter().position(|&b| b == b':');
        if let Some(c) = colon {
            raw_value.extend_from_slice(&first[c + 1..]);
        }
        while next < end {
            let (line, after) = line_at(block, next);
            if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                raw_value.extend_from_slice(line);
                next = after;
            } else {
                break;
            }
        }
        pos = next;
        let Some(c) = colon else {
            // Not a header (garbage or a stray continuation): skip it.
            continue;
        };
        // RFC 822's obsolete syntax allows blanks before the colon; a
        // steering header written that way must still be found and stripped.
        let name = first[..c].trim_ascii_end();
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic()) {
            continue;
        }
        fields.push(Field {
            name: String::from_utf8_lossy(name).into_owned(),
            value: decode_raw(&raw_value).trim().to_owned(),
            span: start..pos,
        });
    }
    fields
}

/// The line starting at `pos` without its line end, and where the next line
/// starts. Accepts CRLF, bare LF and (at the very end) no line end at all.
fn line_at(block: &[u8], pos: usize) -> (&[u8], usize) {
    let rest = &block[pos..];
    match rest.iter().position(|&b| b == b'\n') {
        Some(nl) => {
            let line = &rest[..nl];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            (line, pos + nl + 1)
        }
        None => (rest, block.len()),
    }
}

/// Raw header bytes to text: UTF-8 when valid (RFC 6532), otherwise
/// Windows-1252 byte by byte.
fn decode_raw(raw: &[u8]) -> String {
    match std::str::from_utf8(raw) {
        Ok(s) => s.to_owned(),
        Err(_) => crate::rfc2047::decode_charset("windows-1252", raw).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unfolds_and_keeps_spans() {
        let block = b"Subject: one\r\n two\r\nX-A:b\nnot a header\r\nTo: x\r\n\r\nBody: no\r\n";
        let f = parse(block);
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].name, "Subject");
        assert_eq!(f[0].value, "one two");
        assert_eq!(&block[f[0].span.clone()], b"Subject: one\r\n two\r\n");
        assert_eq!(f[1].value, "b");
        assert_eq!(f[2].name, "To");
        let body = block.windows(4).position(|w| w == b"Body").unwrap();
        assert_eq!(header_end(block), body);
    }

    #[test]
    fn eight_bit_latin1_is_read_as_windows_1252() {
        let f = parse(b"Subject: Gr\xfc\xdfe \x80\r\n");
        assert_eq!(f[0].value, "Grüße €");
    }

    #[test]
    fn blanks_before_the_colon_are_tolerated() {
        let f = parse(b"X-Siegel-Classification \t: confidential\r\nBad Name: x\r\n");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].name, "X-Siegel-Classification");
        assert_eq!(f[0].value, "confidential");
    }

    #[test]
    fn no_final_line_end_and_leading_continuation() {
        let f = parse(b" stray\r\nSubject: x");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].value, "x");
    }
}
