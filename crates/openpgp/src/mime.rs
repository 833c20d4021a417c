//! Just enough MIME for PGP/MIME: split header and body, read
//! `Content-Type` parameters, cut multipart bodies *byte-exactly* (the
//! signed part of `multipart/signed` must be hashed exactly as sent), and
//! undo transfer encodings.
//!
//! Everything works on byte ranges of the raw message so a caller can
//! replace one part (an inline-PGP body) without re-serialising the rest.
//! Nothing here panics on malformed input: missing boundaries, missing
//! header/body separators and bad encodings degrade to "no such part".

use std::ops::Range;

use base64::Engine as _;

/// Maximum multipart nesting we descend into; deeper structures are
/// treated as opaque leaves (protects the stack against crafted mail).
const MAX_DEPTH: usize = 16;

/// One header field: lower-cased name, unfolded value, and the raw bytes
/// (all folded lines, with their line ends) for byte-exact reuse.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: String,
    pub value: String,
    pub raw: Vec<u8>,
}

/// A parsed entity: its headers and where its body lies in the raw input.
#[derive(Debug, Clone)]
pub struct Entity {
    pub headers: Vec<Header>,
    /// Range of the whole entity (headers + body) in the raw message.
    pub range: Range<usize>,
    /// Range of the body in the raw message.
    pub body: Range<usize>,
}

/// Splits `raw[range]` into headers and body. A message without an empty
/// line is all headers (RFC 5322 allows no body).
pub fn parse_entity(raw: &[u8], range: Range<usize>) -> Entity {
    let data = &raw[range.clone()];
    let mut pos = 0;
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut body_start = data.len();
    // An entity that starts with an empty line has no headers.
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| pos + i + 1);
        let line = &data[pos..end];
        let content = trim_eol(line);
        if content.is_empty() {
            body_start = end;
            break;
        }
        lines.push(line);
        pos = end;
    }
    let mut headers: Vec<Header> = Vec::new();
    for line in lines {
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if folded {
            if let Some(last) = headers.last_mut() {
                last.raw.extend_from_slice(line);
                last.value.push(' ');
                last.value
                    .push_str(String::from_utf8_lossy(trim_eol(line)).trim());
            }
            continue;
        }
        let text = String::from_utf8_lossy(trim_eol(line)).into_owned();
        if let Some((name, value)) = text.split_once(':') {
            headers.push(Header {
                name: name.trim().to_ascii_lowercase(),
                value: value.trim().to_owned(),
                raw: line.to_vec(),
            });
        }
    }
    Entity {
        headers,
        range: range.clone(),
        body: range.start + body_start.min(data.len())..range.end,
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Entity {
    /// First header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// All headers of that (lower-case) name.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_str())
    }

    /// The content type, lower-cased, with its parameters; RFC 2045's
    /// default `text/plain` when absent.
    pub fn content_type(&self) -> ContentType {
        self.header("content-type")
            .map(ContentType::parse)
            .unwrap_or_else(|| ContentType {
                mime: "text/plain".into(),
                params: Vec::new(),
            })
    }

    /// The decoded body (transfer encoding undone).
    pub fn decoded_body(&self, raw: &[u8]) -> Vec<u8> {
        let body = &raw[self.body.clone()];
        match self
            .header("content-transfer-encoding")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Some("base64") => decode_base64(body),
            Some("quoted-printable") => decode_qp(body),
            _ => body.to_vec(),
        }
    }

    /// The body parts when this is a multipart entity with a boundary.
    pub fn children(&self, raw: &[u8]) -> Vec<Entity> {
        let ct = self.content_type();
        if !ct.mime.starts_with("multipart/") {
            return Vec::new();
        }
        let Some(boundary) = ct.param("boundary") else {
            return Vec::new();
        };
        split_multipart(raw, self.body.clone(), boundary.as_bytes())
            .into_iter()
            .map(|r| parse_entity(raw, r))
            .collect()
    }
}

/// A parsed `Content-Type` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower case.
    pub mime: String,
    /// Parameters: lower-cased name, unquoted value.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Parses `type/sub; a=b; c="d; e"`. Tolerant: junk parameters are skipped.
    pub fn parse(value: &str) -> Self {
        let mut fields = split_params(value).into_iter();
        let mime = fields
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let params = fields
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| v.to_owned());
                Some((k.trim().to_ascii_lowercase(), v))
            })
            .collect();
        Self { mime, params }
    }

    /// A parameter value by (lower-case) name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Splits on `;` outside double quotes.
pub fn split_params(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Cuts a multipart body into the ranges of its parts. Per RFC 2046 the
/// line end before a delimiter belongs to the delimiter, so each range is
/// exactly the bytes a `multipart/signed` signature covers.
pub fn split_multipart(raw: &[u8], body: Range<usize>, boundary: &[u8]) -> Vec<Range<usize>> {
    let data = &raw[body.clone()];
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    // Positions of delimiter lines: (start of the line-end before it, end of the delimiter line, is_close).
    let mut marks: Vec<(usize, usize, bool)> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let end = data[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |i| pos + i + 1);
        let line = trim_eol(&data[pos..end]);
        if let Some(rest) = line.strip_prefix(delim.as_slice()) {
            let rest_trim = trim_ws(rest);
            let close = rest_trim.starts_with(b"--");
            if rest_trim.is_empty() || close {
                let before = if pos >= 2 && &data[pos - 2..pos] == b"\r\n" {
                    pos - 2
                } else if pos >= 1 && data[pos - 1] == b'\n' {
                    pos - 1
                } else {
                    pos
                };
                marks.push((before, end, close));
                if close {
                    break;
                }
            }
        }
        pos = end;
    }
    let mut parts = Vec::new();
    for w in marks.windows(2) {
        let (_, start, close) = w[0];
        let (end, _, _) = w[1];
        if !close && start <= end {
            parts.push(body.start + start..body.start + end);
        }
    }
    // A missing close delimiter: the last part runs to the end.
    if let Some(&(_, start, false)) = marks.last() {
        parts.push(body.start + start..body.end);
    }
    parts
}

fn trim_ws(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

/// Base64 decoding that ignores line breaks and junk characters, as mail
/// readers do; undecodable input yields what could be decoded.
pub fn decode_base64(body: &[u8]) -> Vec<u8> {
    let clean: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .collect();
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    // A dangling single character cannot encode a byte; drop it.
    let usable = clean.len() - (clean.len() % 4 == 1) as usize;
    engine.decode(&clean[..usable]).unwrap_or_default()
}

/// Quoted-printable decoding (RFC 2045 §6.7), tolerant of bad escapes.
pub fn decode_qp(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            let rest = &body[i + 1..];
            // Soft line break (with optional trailing whitespace).
            let ws = rest
                .iter()
                .take_while(|c| **c == b' ' || **c == b'\t')
                .count();
            let after = &rest[ws..];
            if after.starts_with(b"\r\n") {
                i += 1 + ws + 2;
                continue;
            }
            if after.starts_with(b"\n") {
                i += 1 + ws + 1;
                continue;
            }
            if let (0, Some(h), Some(l)) = (
                ws,
                rest.first().copied().and_then(hex),
                rest.get(1).copied().and_then(hex),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            out.push(b);
            i += 1;
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Line ends to CRLF: the canonical form OpenPGP/MIME signatures cover
/// (RFC 3156 §5) and what goes onto the SMTP wire.
pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Walks the entity tree depth-first (bounded depth), calling `f` on leaves.
pub fn walk_leaves(raw: &[u8], entity: &Entity, depth: usize, f: &mut dyn FnMut(&Entity)) {
    let children = if depth < MAX_DEPTH {
        entity.children(raw)
    } else {
        Vec::new()
    };
    if children.is_empty() {
        f(entity);
    } else {
        for c in &children {
            walk_leaves(raw, c, depth + 1, f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_ranges_exclude_the_crlf_before_the_delimiter() {
        let raw = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue";
        let e = parse_entity(raw, 0..raw.len());
        assert_eq!(e.content_type().param("boundary"), Some("b"));
        let kids = e.children(raw);
        assert_eq!(kids.len(), 2);
        assert_eq!(&raw[kids[0].range.clone()], b"A: 1\r\n\r\none");
        assert_eq!(&raw[kids[1].body.clone()], b"two");
        assert_eq!(kids[0].header("a"), Some("1"));
    }

    #[test]
    fn missing_close_delimiter_keeps_the_last_part() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\nx\n";
        let e = parse_entity(raw, 0..raw.len());
        let kids = e.children(raw);
        assert_eq!(kids.len(), 1);
        assert_eq!(&raw[kids[0].body.clone()], b"x\n");
    }

    #[test]
    fn folded_headers_are_unfolded() {
        let raw =
            b"Subject: a\r\n b\r\nContent-Type: text/plain;\r\n\tcharset=\"utf-8\"\r\n\r\nbody";
        let e = parse_entity(raw, 0..raw.len());
        assert_eq!(e.header("subject"), Some("a b"));
        assert_eq!(e.content_type().param("charset"), Some("utf-8"));
        assert_eq!(&raw[e.body.clone()], b"body");
    }

    #[test]
    fn qp_decodes_soft_breaks_and_escapes() {
        assert_eq!(decode_qp(b"a=C2=A0b=\r\nc=\nd=zz"), b"a\xc2\xa0bcd=zz");
    }

    #[test]
    fn base64_ignores_line_breaks() {
        assert_eq!(decode_base64(b"aGVs\r\nbG8=\r\n"), b"hello");
        assert_eq!(decode_base64(b"!!!"), b"");
    }

    #[test]
    fn crlf_normalisation_is_idempotent() {
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
        assert_eq!(to_crlf(&to_crlf(b"a\n")), b"a\r\n");
    }
}
