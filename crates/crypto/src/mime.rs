//! Just enough MIME for S/MIME, written here on purpose.
//!
//! A detached signature covers exact bytes, so we must know exactly which
//! bytes we sign and which bytes a received `multipart/signed` covers; a
//! general MIME library that re-serialises would break signatures. Everything
//! here works on byte slices of the original message, never panics on
//! malformed input, and bounds its recursion.

use base64::Engine;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Nesting depth beyond which we stop descending into multiparts: real mail
/// nests a handful of levels, a hostile one could nest thousands.
pub(crate) const MAX_DEPTH: usize = 32;

/// One header field as it appeared (possibly folded).
#[derive(Debug, Clone)]
pub(crate) struct Header<'a> {
    /// Field name as written.
    pub name: &'a str,
    /// All raw bytes of the field, continuation lines included, without the
    /// final line ending.
    pub raw: &'a [u8],
    /// Unfolded value, leading whitespace trimmed.
    pub value: String,
}

impl Header<'_> {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Content-* fields describe the body and travel with it into the signed
    /// or encrypted entity; all others stay on the outer message.
    pub fn is_content(&self) -> bool {
        self.name.len() > 8
            && self
                .name
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("content-"))
    }
}

/// Splits a message or entity into its header block and body. The header
/// block excludes the empty line; a message without one is all header.
pub(crate) fn split_header_body(msg: &[u8]) -> (&[u8], &[u8]) {
    // An entity may start with the empty line (no headers at all).
    if msg.starts_with(b"\r\n") {
        return (&[], &msg[2..]);
    }
    if msg.starts_with(b"\n") {
        return (&[], &msg[1..]);
    }
    let mut i = 0;
    while let Some(off) = memchr(b'\n', &msg[i..]) {
        let nl = i + off;
        let next = nl + 1;
        if msg[next..].starts_with(b"\r\n") {
            return (&msg[..next], &msg[next + 2..]);
        }
        if msg[next..].starts_with(b"\n") {
            return (&msg[..next], &msg[next + 1..]);
        }
        i = next;
    }
    (msg, &[])
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|b| *b == needle)
}

/// Parses a header block into fields. Lines that are neither fields nor
/// continuations are skipped (they would be dropped by any MUA too).
pub(crate) fn parse_headers<'a>(block: &'a [u8]) -> Vec<Header<'a>> {
    let mut out: Vec<Header<'a>> = Vec::new();
    let mut start: Option<usize> = None;
    let mut end = 0usize;
    let mut pos = 0usize;
    let finish = |out: &mut Vec<Header<'a>>, s: usize, e: usize| {
        let raw = &block[s..e];
        let Some(colon) = memchr(b':', raw) else {
            return;
        };
        let Ok(name) = std::str::from_utf8(&raw[..colon]) else {
            return;
        };
        let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic());
        if !name_ok {
            return;
        }
        let value = unfold(&raw[colon + 1..]);
        out.push(Header { name, raw, value });
    };
    while pos < block.len() {
        let line_end = memchr(b'\n', &block[pos..]).map_or(block.len(), |o| pos + o);
        let content_end = if line_end > pos && block[line_end - 1] == b'\r' {
            line_end - 1
        } else {
            line_end
        };
        let is_continuation = matches!(block.get(pos), Some(b' ' | b'\t'));
        if is_continuation && start.is_some() {
            end = content_end;
        } else {
            if let Some(s) = start.take() {
                finish(&mut out, s, end);
            }
            if content_end > pos {
                start = Some(pos);
                end = content_end;
            }
        }
        pos = line_end + 1;
    }
    if let Some(s) = start {
        finish(&mut out, s, end);
    }
    out
}

fn unfold(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c != '\r' && c != '\n' {
            out.push(c);
        }
    }
    out.trim().to_owned()
}

/// A parsed Content-Type: lower-case `type/subtype` and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ContentType {
    pub mime_type: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    pub fn parse(value: &str) -> ContentType {
        let mut parts = split_params(value).into_iter();
        let mime_type = parts
            .next()
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| t.contains('/'))
            .unwrap_or_else(|| "text/plain".to_owned());
        let params = parts
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
        ContentType { mime_type, params }
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.mime_type.starts_with("multipart/")
    }
}

/// Splits on `;` outside double quotes.
fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The content type of an entity; RFC 2045's default when absent.
pub(crate) fn content_type(headers: &[Header<'_>]) -> ContentType {
    headers
        .iter()
        .find(|h| h.is("content-type"))
        .map(|h| ContentType::parse(&h.value))
        .unwrap_or_else(|| ContentType::parse("text/plain"))
}

/// The lower-case transfer encoding; `7bit` when absent.
pub(crate) fn transfer_encoding(headers: &[Header<'_>]) -> String {
    headers
        .iter()
        .find(|h| h.is("content-transfer-encoding"))
        .map(|h| h.value.trim().to_ascii_lowercase())
        .unwrap_or_else(|| "7bit".to_owned())
}

/// The parts of a multipart body, each exactly as transmitted: from after
/// the line ending of its delimiter line up to (excluding) the line ending
/// that precedes the next delimiter. That is the byte range RFC 1847 signs.
#[derive(Debug)]
pub(crate) struct Multipart<'a> {
    pub preamble: &'a [u8],
    pub parts: Vec<&'a [u8]>,
    /// False when the closing delimiter is missing (truncated mail).
    pub closed: bool,
    pub epilogue: &'a [u8],
}

pub(crate) fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Option<Multipart<'a>> {
    if boundary.is_empty() || boundary.len() > 200 {
        return None;
    }
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    // Find delimiter lines: start of body or after LF, begins with delim,
    // followed by optional "--", then only whitespace to end of line.
    let mut lines: Vec<(usize, usize, usize, bool)> = Vec::new(); // (line_start, pre_eol_start, after_eol, is_close)
    let mut pos = 0;
    while pos <= body.len() {
        let line_end = memchr(b'\n', &body[pos..]).map_or(body.len(), |o| pos + o);
        let line = &body[pos..line_end];
        if let Some(rest) = line.strip_prefix(delim) {
            let (close, rest) = match rest.strip_prefix(b"--") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            if rest.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r')) {
                // the line ending before this delimiter belongs to it
                let pre = if pos >= 2 && &body[pos - 2..pos] == b"\r\n" {
                    pos - 2
                } else if pos >= 1 && body[pos - 1] == b'\n' {
                    pos - 1
                } else {
                    pos
                };
                lines.push((pos, pre, (line_end + 1).min(body.len()), close));
                if close {
                    break;
                }
            }
        }
        if line_end >= body.len() {
            break;
        }
        pos = line_end + 1;
    }
    let first = lines.first()?;
    if first.3 {
        return None;
    }
    let preamble = &body[..first.1];
    let mut parts = Vec::new();
    for w in lines.windows(2) {
        let (_, _, after, _) = w[0];
        let (_, pre, _, _) = w[1];
        parts.push(body.get(after..pre.max(after)).unwrap_or(&[]));
    }
    let last = lines.last()?;
    let (closed, epilogue) = if last.3 {
        (true, body.get(last.2..).unwrap_or(&[]))
    } else {
        // Truncated: the last part runs to the end of the body.
        parts.push(body.get(last.2..).unwrap_or(&[]));
        (false, &[][..])
    };
    Some(Multipart {
        preamble,
        parts,
        closed,
        epilogue,
    })
}

/// Converts bare LF (and bare CR) line endings to CRLF: S/MIME signs the
/// canonical form (RFC 8551 §3.1.1).
///
/// Runs between line ends are copied whole (a 10 KB mail has a few hundred
/// line ends, not ten thousand bytes to push one by one): every outbound
/// mail passes here at least twice.
pub(crate) fn canonical_crlf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 2);
    let mut rest = data;
    while let Some(at) = memchr::memchr2(b'\r', b'\n', rest) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(b"\r\n");
        let skip = if rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = &rest[at + skip..];
    }
    out.extend_from_slice(rest);
    out
}

/// True when the body cannot pass a 7-bit transport unchanged: 8-bit bytes,
/// NULs, bare CRs, or lines longer than RFC 5322's 998 octets.
pub(crate) fn needs_7bit_encoding(body: &[u8]) -> bool {
    let mut line_len = 0usize;
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'\n' => line_len = 0,
            b'\r' if body.get(i + 1) != Some(&b'\n') => return true,
            b'\r' => {}
            0 | 0x80..=0xff => return true,
            _ => {
                line_len += 1;
                if line_len > 998 {
                    return true;
                }
            }
        }
    }
    false
}

/// Quoted-printable (RFC 2045 §6.7) of text: line breaks stay hard CRLF
/// breaks, trailing whitespace and "From " at line start are protected so
/// that no relay can alter signed text.
///
/// Runs of bytes that stand for themselves are copied whole; only the
/// first byte of a line (where "From " and a lone "." matter) and bytes
/// that need encoding or a soft break go one at a time.
pub(crate) fn encode_quoted_printable(text: &[u8]) -> Vec<u8> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let canonical = canonical_crlf(text);
    let mut out = Vec::with_capacity(canonical.len() + canonical.len() / 8);
    let mut first = true;
    for line in canonical.split(|b| *b == b'\n') {
        if !first {
            out.extend_from_slice(b"\r\n");
        }
        first = false;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A byte past the first that stands for itself: printable but '=',
        // or whitespace that is not the line's last byte.
        let plain = |b: u8, at: usize| match b {
            b'=' => false,
            b' ' | b'\t' => at + 1 != line.len(),
            33..=126 => true,
            _ => false,
        };
        let mut col = 0usize;
        let mut i = 0usize;
        while i < line.len() {
            if i > 0 {
                // keep room for the soft break "=" within 76 columns
                let room = 75usize.saturating_sub(col).min(line.len() - i);
                let run = line[i..i + room]
                    .iter()
                    .enumerate()
                    .take_while(|&(k, &b)| plain(b, i + k))
                    .count();
                if run > 0 {
                    out.extend_from_slice(&line[i..i + run]);
                    col += run;
                    i += run;
                    continue;
                }
            }
            let b = line[i];
            let last = i + 1 == line.len();
            let literal = match b {
                b'=' => false,
                b' ' | b'\t' => !last,
                b'F' if i == 0 && line.starts_with(b"From ") => false,
                b'.' if i == 0 && line.len() == 1 => false,
                33..=126 => true,
                _ => false,
            };
            let width = if literal { 1 } else { 3 };
            if col + width > 75 {
                out.extend_from_slice(b"=\r\n");
                col = 0;
            }
            if literal {
                out.push(b);
            } else {
                out.push(b'=');
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0x0f)]);
            }
            col += width;
            i += 1;
        }
    }
    out
}

/// Base64 in 76-column CRLF lines, as MIME wants it.
pub(crate) fn encode_base64_lines(data: &[u8]) -> Vec<u8> {
    let text = STANDARD.encode(data);
    let mut out = Vec::with_capacity(text.len() + text.len() / 38 + 2);
    for chunk in text.as_bytes().chunks(76) {
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Lenient base64 decoding of a MIME body: whitespace anywhere, padding
/// optional. Returns `None` for anything else.
pub(crate) fn decode_base64(body: &[u8]) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    LENIENT.decode(compact).ok()
}

/// Decodes a body according to its transfer encoding, as far as S/MIME
/// bodies need it (base64 or identity).
pub(crate) fn decode_body(cte: &str, body: &[u8]) -> Option<Vec<u8>> {
    match cte {
        "base64" => decode_base64(body),
        "7bit" | "8bit" | "binary" => Some(body.to_vec()),
        _ => None,
    }
}

/// Appends the header lines of `fields` in canonical CRLF form.
/// Stray CRs are dropped rather than turned into line breaks: a CR turned
/// into CRLF could end the header block early and push the rest of the
/// header fields into the body (header injection).
pub(crate) fn write_fields(out: &mut Vec<u8>, fields: &[&Header<'_>]) {
    for h in fields {
        let mut first = true;
        for line in h.raw.split(|b| *b == b'\n') {
            let line: Vec<u8> = line.iter().copied().filter(|b| *b != b'\r').collect();
            if line.iter().all(|b| b.is_ascii_whitespace()) && !first {
                continue;
            }
            if !first {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(&line);
            first = false;
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Rewrites one entity (headers + body) so that it survives any 7-bit,
/// line-length-limited, line-ending-converting transport: the precondition
/// for a signature that still verifies at the far end.
///
/// Multiparts are rebuilt part by part; `multipart/signed` and
/// `application/pkcs7-*` entities are left byte for byte (re-encoding them
/// would break the signature inside). Leaf parts with 8-bit content become
/// quoted-printable (text) or base64 (everything else).
pub(crate) fn make_7bit_canonical(entity: &[u8], depth: usize) -> Vec<u8> {
    let (head, body) = split_header_body(entity);
    let headers = parse_headers(head);
    let ctype = content_type(&headers);
    let cte = transfer_encoding(&headers);
    let untouchable = ctype.mime_type == "multipart/signed"
        || ctype.mime_type.starts_with("application/pkcs7-")
        || ctype.mime_type.starts_with("application/x-pkcs7-");
    if untouchable || depth >= MAX_DEPTH {
        return canonical_crlf(entity);
    }

    if ctype.is_multipart() {
        let Some(mp) = ctype
            .param("boundary")
            .and_then(|b| split_multipart(body, b))
        else {
            return leaf(&headers, body, &ctype, &cte);
        };
        let boundary = ctype.param("boundary").unwrap_or_default();
        let mut out = Vec::with_capacity(entity.len() + 256);
        let fields: Vec<&Header<'_>> = headers
            .iter()
            .filter(|h| !h.is("content-transfer-encoding"))
            .collect();
        write_fields(&mut out, &fields);
        out.extend_from_slice(b"\r\n");
        if !mp.preamble.is_empty() {
            out.extend_from_slice(&canonical_crlf(mp.preamble));
            out.extend_from_slice(b"\r\n");
        }
        for part in &mp.parts {
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&make_7bit_canonical(part, depth + 1));
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--");
        out.extend_from_slice(boundary.as_bytes());
        out.extend_from_slice(b"--\r\n");
        out.extend_from_slice(&canonical_crlf(mp.epilogue));
        return out;
    }

    if ctype.mime_type == "message/rfc822" && (cte == "7bit" || cte == "8bit" || cte == "binary") {
        // RFC 2046 forbids encoding message/rfc822 itself; descend instead.
        let mut out = Vec::with_capacity(entity.len() + 64);
        let fields: Vec<&Header<'_>> = headers
            .iter()
            .filter(|h| !h.is("content-transfer-encoding"))
            .collect();
        write_fields(&mut out, &fields);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&make_7bit_canonical(body, depth + 1));
        return out;
    }
    leaf(&headers, body, &ctype, &cte)
}

fn leaf(headers: &[Header<'_>], body: &[u8], ctype: &ContentType, cte: &str) -> Vec<u8> {
    let already_safe = cte == "base64" || cte == "quoted-printable";
    let encode = !already_safe && needs_7bit_encoding(body);
    let mut out = Vec::with_capacity(body.len() + 256);
    if !encode {
        let fields: Vec<&Header<'_>> = headers.iter().collect();
        write_fields(&mut out, &fields);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&canonical_crlf(body));
        return out;
    }
    let fields: Vec<&Header<'_>> = headers
        .iter()
        .filter(|h| !h.is("content-transfer-encoding"))
        .collect();
    write_fields(&mut out, &fields);
    let is_text = ctype.mime_type.starts_with("text/") && cte != "binary";
    if is_text {
        out.extend_from_slice(b"Content-Transfer-Encoding: quoted-printable\r\n\r\n");
        out.extend_from_slice(&encode_quoted_printable(body));
    } else {
        out.extend_from_slice(b"Content-Transfer-Encoding: base64\r\n\r\n");
        out.extend_from_slice(&encode_base64_lines(body));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_with_lf_and_crlf() {
        let (h, b) = split_header_body(b"A: 1\r\nB: 2\r\n\r\nbody\r\n");
        assert_eq!(h, b"A: 1\r\nB: 2\r\n");
        assert_eq!(b, b"body\r\n");
        let (h, b) = split_header_body(b"A: 1\nB: 2\n\nbody\n");
        assert_eq!(h, b"A: 1\nB: 2\n");
        assert_eq!(b, b"body\n");
        let (h, b) = split_header_body(b"\r\nonly body");
        assert!(h.is_empty());
        assert_eq!(b, b"only body");
    }

    #[test]
    fn folded_headers_unfold() {
        let hs = parse_headers(
            b"Content-Type: multipart/signed;\r\n\tboundary=\"x y\"; micalg=sha-256\r\nX: 1\r\n",
        );
        assert_eq!(hs.len(), 2);
        let ct = ContentType::parse(&hs[0].value);
        assert_eq!(ct.mime_type, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("x y"));
        assert_eq!(ct.param("micalg"), Some("sha-256"));
        assert_eq!(
            hs[0].raw,
            &b"Content-Type: multipart/signed;\r\n\tboundary=\"x y\"; micalg=sha-256"[..]
        );
    }

    #[test]
    fn quoted_semicolon_does_not_split_params() {
        let ct = ContentType::parse("text/plain; name=\"a;b\"; charset=utf-8");
        assert_eq!(ct.param("name"), Some("a;b"));
        assert_eq!(ct.param("charset"), Some("utf-8"));
    }

    #[test]
    fn multipart_parts_are_exact_byte_ranges() {
        let body = b"pre\r\n--b\r\nA: 1\r\n\r\nx\r\n\r\n--b\r\nsecond\r\n--b--\r\nepi";
        let mp = split_multipart(body, "b").unwrap();
        assert_eq!(mp.preamble, b"pre");
        assert_eq!(mp.parts, vec![&b"A: 1\r\n\r\nx\r\n"[..], &b"second"[..]]);
        assert!(mp.closed);
        assert_eq!(mp.epilogue, b"epi");
    }

    #[test]
    fn truncated_multipart_is_reported_open() {
        let mp = split_multipart(b"--b\r\nfirst\r\n--b\r\nsec", "b").unwrap();
        assert!(!mp.closed);
        assert_eq!(mp.parts, vec![&b"first"[..], &b"sec"[..]]);
        assert!(split_multipart(b"no delimiters", "b").is_none());
        // a delimiter prefix inside a line is not a delimiter
        let mp = split_multipart(b"--b\r\nx --b\r\n--bx\r\n--b--", "b").unwrap();
        assert_eq!(mp.parts, vec![&b"x --b\r\n--bx"[..]]);
    }

    #[test]
    fn stray_crs_in_header_fields_cannot_end_the_header_block() {
        let hs = parse_headers(b"X-A: a\r\r\n\tb\r\nX-B: c\r\n \r\n");
        let refs: Vec<&Header<'_>> = hs.iter().collect();
        let mut out = Vec::new();
        write_fields(&mut out, &refs);
        assert_eq!(out, b"X-A: a\r\n\tb\r\nX-B: c\r\n");
        assert!(!out.windows(4).any(|w| w == b"\r\n\r\n"));
    }

    #[test]
    fn crlf_canonicalisation() {
        assert_eq!(canonical_crlf(b"a\nb\r\nc\rd"), b"a\r\nb\r\nc\r\nd");
        assert_eq!(canonical_crlf(b"\r\r\n\n\r"), b"\r\n\r\n\r\n\r\n");
        assert_eq!(canonical_crlf(b""), b"");
        assert_eq!(canonical_crlf(b"no line end"), b"no line end");
    }

    /// The byte-at-a-time definition the run-copying version must match.
    fn canonical_crlf_reference(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            match data[i] {
                b'\r' => {
                    out.extend_from_slice(b"\r\n");
                    if data.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => out.extend_from_slice(b"\r\n"),
                b => out.push(b),
            }
            i += 1;
        }
        out
    }

    /// The byte-at-a-time encoder the run-copying version must match.
    fn quoted_printable_reference(text: &[u8]) -> Vec<u8> {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        let canonical = canonical_crlf(text);
        let mut out = Vec::new();
        let mut first = true;
        for line in canonical.split(|b| *b == b'\n') {
            if !first {
                out.extend_from_slice(b"\r\n");
            }
            first = false;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut col = 0usize;
            for (i, &b) in line.iter().enumerate() {
                let last = i + 1 == line.len();
                let literal = match b {
                    b'=' => false,
                    b' ' | b'\t' => !last,
                    b'F' if i == 0 && line.starts_with(b"From ") => false,
                    b'.' if i == 0 && line.len() == 1 => false,
                    33..=126 => true,
                    _ => false,
                };
                let width = if literal { 1 } else { 3 };
                if col + width > 75 {
                    out.extend_from_slice(b"=\r\n");
                    col = 0;
                }
                if literal {
                    out.push(b);
                } else {
                    out.push(b'=');
                    out.push(HEX[usize::from(b >> 4)]);
                    out.push(HEX[usize::from(b & 0x0f)]);
                }
                col += width;
            }
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn quoted_printable_matches_its_definition(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    4 => proptest::sample::select(b"From .=\t\r\n\xc3\xbc".to_vec()),
                    6 => proptest::num::u8::ANY,
                    6 => proptest::strategy::Just(b'a'),
                ],
                0..400
            )
        ) {
            proptest::prop_assert_eq!(
                encode_quoted_printable(&data),
                quoted_printable_reference(&data)
            );
        }

        #[test]
        fn canonical_crlf_matches_its_definition(
            data in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b'\r'),
                    proptest::strategy::Just(b'\n'),
                    proptest::num::u8::ANY
                ],
                0..300
            )
        ) {
            proptest::prop_assert_eq!(canonical_crlf(&data), canonical_crlf_reference(&data));
        }
    }

    #[test]
    fn quoted_printable_protects_8bit_trailing_space_and_from() {
        let qp = encode_quoted_printable("Grüße \nFrom here\n".as_bytes());
        assert_eq!(qp, b"Gr=C3=BC=C3=9Fe=20\r\n=46rom here\r\n");
        let long = vec![b'a'; 200];
        let qp = encode_quoted_printable(&long);
        assert!(qp.split(|b| *b == b'\n').all(|l| l.len() <= 77));
        assert!(!needs_7bit_encoding(&qp));
    }

    #[test]
    fn eight_bit_detection() {
        assert!(!needs_7bit_encoding(b"plain\r\ntext\n"));
        assert!(needs_7bit_encoding("ü".as_bytes()));
        assert!(needs_7bit_encoding(b"a\0b"));
        assert!(needs_7bit_encoding(b"bare\rcr"));
        assert!(needs_7bit_encoding(&[b'x'; 999]));
    }

    #[test]
    fn eight_bit_leaf_becomes_quoted_printable_and_binary_base64() {
        let out = make_7bit_canonical(
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nÄpfel\n"
                .as_bytes(),
            0,
        );
        assert_eq!(
            out,
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=84pfel\r\n"
        );
        let out = make_7bit_canonical(
            b"Content-Type: application/octet-stream\r\n\r\n\x00\x01\xff",
            0,
        );
        assert!(
            out.ends_with(b"base64\r\n\r\nAAH/\r\n"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn multipart_is_rebuilt_and_signed_parts_left_alone() {
        let entity = "Content-Type: multipart/mixed; boundary=X\n\n--X\nContent-Type: text/plain\n\nnaïve\n--X\nContent-Type: multipart/signed; boundary=Y\n\n--Y\nü\n--Y--\n--X--\n".as_bytes();
        let out = make_7bit_canonical(entity, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("na=C3=AFve"), "{text}");
        // the nested signed part keeps its 8-bit byte (only line ends change)
        assert!(text.contains("--Y\r\nü\r\n--Y--"), "{text}");
        assert!(!text.contains('\n') || text.matches('\n').count() == text.matches("\r\n").count());
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let mut entity = Vec::new();
        for _ in 0..10_000 {
            entity.extend_from_slice(b"Content-Type: multipart/mixed; boundary=Z\r\n\r\n--Z\r\n");
        }
        // must return, not overflow the stack
        let out = make_7bit_canonical(&entity, 0);
        assert!(!out.is_empty());
    }

    #[test]
    fn base64_decoding_is_lenient_but_rejects_garbage() {
        assert_eq!(
            decode_base64(b"QUJD\r\nRA=\r\n=").as_deref(),
            Some(&b"ABCD"[..])
        );
        assert_eq!(decode_base64(b"QUJDRA").as_deref(), Some(&b"ABCD"[..]));
        assert!(decode_base64(b"!!!not base64").is_none());
    }
}
