//! RFC 2047 encoded words: just enough to find and remove a keyword in a
//! Subject and to write the Subject back.
//!
//! Written here rather than pulled in with a full MIME parser because the
//! policy core only needs the Subject, and the charsets that real clients
//! use for it are few: UTF-8, US-ASCII, ISO-8859-1 (read as Windows-1252,
//! as every browser and mail client does) and ISO-8859-15. Anything else is
//! left as the literal encoded word, so an unknown charset can never hide a
//! keyword that is written in plain text next to it, and nothing panics.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Lenient Base64: clients differ on padding and trailing bits.
const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Longest encoded word allowed by RFC 2047 §2.
const MAX_WORD: usize = 75;

/// Decodes all encoded words in an (unfolded) header value.
///
/// Whitespace between two adjacent encoded words is dropped (RFC 2047 §6.2),
/// and the bytes of adjacent words in the same charset are joined before
/// decoding, because clients split UTF-8 characters across words. Control
/// characters produced by decoding (an encoded CR LF, say) become spaces so
/// that a decoded value can never inject a header when written back.
pub(crate) fn decode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut pending: Option<Pending> = None;
    let mut gap = String::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("=?")
            && let Some((word, used)) = parse_word(rest)
        {
            match &mut pending {
                Some(p) if p.charset == word.charset => {
                    p.bytes.extend_from_slice(&word.bytes);
                    p.literal.push_str(&gap);
                    p.literal.push_str(&rest[..used]);
                }
                _ => {
                    if let Some(p) = pending.take() {
                        p.flush(&mut out);
                    }
                    pending = Some(Pending {
                        charset: word.charset,
                        bytes: word.bytes,
                        literal: rest[..used].to_owned(),
                    });
                }
            }
            gap.clear();
            rest = &rest[used..];
            continue;
        }
        if c.is_whitespace() && pending.is_some() {
            gap.push(c);
        } else {
            if let Some(p) = pending.take() {
                p.flush(&mut out);
            }
            out.push_str(&gap);
            gap.clear();
            out.push(c);
        }
        rest = &rest[c.len_utf8()..];
    }
    if let Some(p) = pending.take() {
        p.flush(&mut out);
    }
    out.push_str(&gap);
    out
}

/// Encodes a header value for writing: as is when it is plain ASCII that
/// cannot be mistaken for an encoded word, otherwise as UTF-8 `B` encoded
/// words of at most 75 characters, folded with CRLF SP between them (RFC
/// 2047 §2 requires whole characters per word, which the split respects).
pub(crate) fn encode(text: &str) -> String {
    let plain = text.is_ascii() && !text.contains("=?") && !text.chars().any(char::is_control);
    if plain {
        return text.to_owned();
    }
    const PREFIX: &str = "=?UTF-8?B?";
    const SUFFIX: &str = "?=";
    // 4 Base64 characters per 3 bytes; stay within MAX_WORD.
    let max_bytes = (MAX_WORD - PREFIX.len() - SUFFIX.len()) / 4 * 3;
    let mut words = Vec::new();
    let mut chunk_start = 0;
    let mut chunk_len = 0;
    for (i, c) in text.char_indices() {
        if chunk_len + c.len_utf8() > max_bytes {
            words.push(&text[chunk_start..i]);
            chunk_start = i;
            chunk_len = 0;
        }
        chunk_len += c.len_utf8();
    }
    if chunk_len > 0 || words.is_empty() {
        words.push(&text[chunk_start..]);
    }
    words
        .iter()
        .map(|w| format!("{PREFIX}{}{SUFFIX}", B64.encode(w.as_bytes())))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Bytes in a charset to text; `None` for a charset we do not know.
pub(crate) fn decode_charset(charset: &str, bytes: &[u8]) -> Option<String> {
    let cs = charset.to_ascii_lowercase();
    let text = match cs.as_str() {
        "utf-8" | "utf8" => String::from_utf8_lossy(bytes).into_owned(),
        // Bytes above 0x7F in "US-ASCII" are a client bug; Windows-1252 is
        // the most likely intent.
        "us-ascii" | "ascii" | "iso-8859-1" | "iso8859-1" | "iso_8859-1" | "latin1" | "l1"
        | "windows-1252" | "cp1252" => bytes.iter().map(|&b| cp1252(b)).collect(),
        "iso-8859-15" | "iso8859-15" | "iso_8859-15" | "latin-9" | "latin9" => {
            bytes.iter().map(|&b| latin9(b)).collect()
        }
        _ => return None,
    };
    Some(text)
}

/// Adjacent encoded words in one charset, not yet decoded.
struct Pending {
    charset: String,
    bytes: Vec<u8>,
    /// The words as written, for an unknown charset.
    literal: String,
}

impl Pending {
    fn flush(self, out: &mut String) {
        match decode_charset(&self.charset, &self.bytes) {
            Some(text) => out.extend(text.chars().map(|c| if c.is_control() { ' ' } else { c })),
            None => out.push_str(&self.literal),
        }
    }
}

/// One decoded encoded word.
struct Word {
    /// Lower case, without an RFC 2231 language suffix.
    charset: String,
    bytes: Vec<u8>,
}

/// Parses `=?charset?E?text?=` at the start of `s`; returns the word and the
/// number of bytes it spans, or `None` when it is not a well-formed word.
fn parse_word(s: &str) -> Option<(Word, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = &body[..q1];
    let after_charset = &body[q1 + 1..];
    let mut chars = after_charset.chars();
    let enc = chars.next()?;
    if chars.next()? != '?' {
        return None;
    }
    let text_and_rest = &after_charset[2..];
    let end = text_and_rest.find("?=")?;
    let text = &text_and_rest[..end];
    if charset.is_empty() || charset.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    if text.chars().any(char::is_whitespace) {
        return None;
    }
    let bytes = match enc {
        'B' | 'b' => B64.decode(text).ok()?,
        'Q' | 'q' => decode_q(text.as_bytes()),
        _ => return None,
    };
    let charset = charset
        .split('*')
        .next()
        .unwrap_or(charset)
        .to_ascii_lowercase();
    let used = 2 + q1 + 1 + 2 + end + 2;
    Some((Word { charset, bytes }, used))
}

/// The `Q` encoding: `_` is a space, `=XX` a byte; a broken `=` stays.
fn decode_q(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'_' => out.push(b' '),
            b'=' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'=');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// Windows-1252 (WHATWG mapping: undefined bytes map to the C1 controls).
fn cp1252(b: u8) -> char {
    const HIGH: [char; 32] = [
        '\u{20AC}', '\u{0081}', '\u{201A}', '\u{0192}', '\u{201E}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{02C6}', '\u{2030}', '\u{0160}', '\u{2039}', '\u{0152}', '\u{008D}',
        '\u{017D}', '\u{008F}', '\u{0090}', '\u{2018}', '\u{2019}', '\u{201C}', '\u{201D}',
        '\u{2022}', '\u{2013}', '\u{2014}', '\u{02DC}', '\u{2122}', '\u{0161}', '\u{203A}',
        '\u{0153}', '\u{009D}', '\u{017E}', '\u{0178}',
    ];
    match b {
        0x80..=0x9F => HIGH[usize::from(b - 0x80)],
        _ => char::from(b),
    }
}

/// ISO-8859-15: Latin-1 with the euro sign and seven letters replaced.
fn latin9(b: u8) -> char {
    match b {
        0xA4 => '\u{20AC}',
        0xA6 => '\u{0160}',
        0xA8 => '\u{0161}',
        0xB4 => '\u{017D}',
        0xB8 => '\u{017E}',
        0xBC => '\u{0152}',
        0xBD => '\u{0153}',
        0xBE => '\u{0178}',
        _ => char::from(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_real_world_words() {
        // Thunderbird, UTF-8 B.
        assert_eq!(
            decode("=?UTF-8?B?W3NlY3VyZV0gR3LDvMOfZQ==?="),
            "[secure] Grüße"
        );
        // Outlook, ISO-8859-1 Q.
        assert_eq!(
            decode("=?iso-8859-1?Q?[vertraulich]_Pr=FCfung?="),
            "[vertraulich] Prüfung"
        );
        // Mixed plain and encoded; space between encoded words dropped.
        assert_eq!(decode("Re: =?utf-8?q?a?= =?utf-8?q?b?= c"), "Re: ab c");
        // windows-1252 specific byte and ISO-8859-15 euro.
        assert_eq!(decode("=?windows-1252?Q?=80_=93x=94?="), "€ “x”");
        assert_eq!(decode("=?ISO-8859-15?Q?=A4?="), "€");
        // RFC 2231 language suffix.
        assert_eq!(decode("=?utf-8*de?Q?Hallo?="), "Hallo");
    }

    #[test]
    fn joins_utf8_split_across_words() {
        // "ü" is C3 BC; a client put each byte into its own word.
        assert_eq!(decode("=?UTF-8?Q?=C3?= =?UTF-8?Q?=BC?="), "ü");
    }

    #[test]
    fn malformed_or_unknown_stays_literal() {
        for s in [
            "=?utf-8?B?not base64?=",
            "=?utf-8?X?abc?=",
            "=?utf-8?Q?abc",
            "=??Q?abc?=",
            "=?",
            "=?utf-8?",
            "=?koi8-r?B?8NLJ18XU?=",
        ] {
            assert_eq!(decode(s), s);
        }
        assert_eq!(decode("=?utf-8?Q?a=Zb=4?="), "a=Zb=4");
    }

    #[test]
    fn decoded_line_breaks_cannot_inject_headers() {
        assert_eq!(
            decode("=?utf-8?Q?a=0D=0ABcc:_x@evil.example?="),
            "a  Bcc: x@evil.example"
        );
    }

    #[test]
    fn encode_roundtrips_and_respects_word_length() {
        assert_eq!(encode("Hello"), "Hello");
        let long = "Grüße aus München – ".repeat(10);
        let enc = encode(&long);
        for word in enc.split("\r\n ") {
            assert!(word.len() <= MAX_WORD, "{word}");
        }
        assert_eq!(decode(&enc.replace("\r\n", "")), long);
        assert_eq!(decode(&encode("a =?x?Q?y?= b")), "a =?x?Q?y?= b");
        assert_eq!(encode(""), "");
    }
}
