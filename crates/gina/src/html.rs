//! The HTML file that carries a container: a page with no script and no
//! active content, whose one form posts the container (base64 in a hidden
//! textarea) to the portal over HTTPS.
//!
//! `multipart/form-data` sends the textarea as it is, so a 50 MB mail costs
//! 67 MB of base64 once, not the triple of percent-encoding. The file is
//! pure 7-bit ASCII with CRLF lines of at most 78 characters (texts with
//! umlauts become numeric character references), so the carrier mail can
//! attach it with `Content-Transfer-Encoding: 7bit` instead of base64-ing
//! the base64 again. It is written as a stream: the container is encoded
//! 57 bytes at a time straight into the output.

use std::io::{Read, Write};

use base64::Engine as _;
use minijinja::context;

use crate::theme::{Lang, Theme, ThemeError};

/// Where the container goes in the rendered template; the template must
/// contain `{{ container_marker }}` exactly once.
const MARKER: &str = "@@SIEGEL-GINA-CONTAINER@@";

/// What the file says besides the container.
#[derive(Debug, Clone)]
pub struct FileInfo<'a> {
    /// The sender as shown ("Alice Example <alice@example.com>").
    pub sender: &'a str,
    /// The recipient's address.
    pub recipient: &'a str,
    /// Expiry, Unix seconds.
    pub expires: i64,
    /// `[portal] public_url`, without a trailing slash.
    pub portal_url: &'a str,
}

/// Writing the file failed.
#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    /// The theme's template failed or lacks the container marker.
    #[error(transparent)]
    Theme(#[from] ThemeError),
    /// Reading the container or writing the file failed.
    #[error("i/o while writing the container file: {0}")]
    Io(#[from] std::io::Error),
}

/// Makes text 7-bit: every non-ASCII character becomes `&#N;` (valid in
/// HTML text and attribute values), and lines end in CRLF.
fn ascii_crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 20);
    for c in s.chars() {
        match c {
            '\r' => {}
            '\n' => out.push_str("\r\n"),
            c if c.is_ascii() => out.push(c),
            c => out.push_str(&format!("&#{};", c as u32)),
        }
    }
    out
}

/// A `data:` URI of the theme's logo, so the file shows it offline.
fn logo_data_uri(theme: &Theme) -> String {
    let logo = theme.logo();
    format!(
        "data:{};base64,{}",
        logo.content_type,
        base64::engine::general_purpose::STANDARD.encode(&logo.bytes)
    )
}

/// A date as people read it, in UTC (the gateway does not know the
/// reader's zone, and says so).
pub fn format_date(unix: i64, lang: Lang) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return unix.to_string();
    };
    let month = u8::from(t.month());
    match lang {
        Lang::De => format!(
            "{:02}.{:02}.{} {:02}:{:02} UTC",
            t.day(),
            month,
            t.year(),
            t.hour(),
            t.minute()
        ),
        Lang::En => format!(
            "{} {} {} {:02}:{:02} UTC",
            t.day(),
            [
                "January",
                "February",
                "March",
                "April",
                "May",
                "June",
                "July",
                "August",
                "September",
                "October",
                "November",
                "December"
            ][usize::from(month - 1)],
            t.year(),
            t.hour(),
            t.minute()
        ),
    }
}

/// Writes the container file: the themed page with `container` (the raw
/// container bytes, read as a stream) base64-encoded in its form.
pub fn write_file(
    theme: &Theme,
    lang: Lang,
    info: &FileInfo<'_>,
    mut container: impl Read,
    mut out: impl Write,
) -> Result<(), HtmlError> {
    let page = theme.render(
        "container.html",
        lang,
        context! {
            container_marker => MARKER,
            action => format!("{}/open", info.portal_url),
            sender => info.sender,
            recipient => info.recipient,
            expires => format_date(info.expires, lang),
            logo_data_uri => logo_data_uri(theme),
        },
    )?;
    let (head, tail) = match page.split_once(MARKER) {
        Some((h, t)) if !t.contains(MARKER) => (h, t),
        _ => {
            return Err(ThemeError::Template {
                name: format!("{}/container.html", theme.name()),
                message: "must contain {{ container_marker }} exactly once".into(),
            }
            .into());
        }
    };
    out.write_all(ascii_crlf(head).as_bytes())?;
    // 57 bytes give one 76-character base64 line.
    let mut buf = [0u8; 57 * 64];
    let mut line = [0u8; 57];
    let mut have = 0usize;
    let mut encoded = String::with_capacity(80);
    loop {
        let n = container.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            let take = (57 - have).min(chunk.len());
            line[have..have + take].copy_from_slice(&chunk[..take]);
            have += take;
            chunk = &chunk[take..];
            if have == 57 {
                encoded.clear();
                base64::engine::general_purpose::STANDARD.encode_string(line, &mut encoded);
                out.write_all(encoded.as_bytes())?;
                out.write_all(b"\r\n")?;
                have = 0;
            }
        }
    }
    if have > 0 {
        encoded.clear();
        base64::engine::general_purpose::STANDARD.encode_string(&line[..have], &mut encoded);
        out.write_all(encoded.as_bytes())?;
        out.write_all(b"\r\n")?;
    }
    // The marker sits alone on its line; drop the template's line break
    // after it, the last base64 line brought its own.
    let tail = tail.strip_prefix('\n').unwrap_or(tail);
    out.write_all(ascii_crlf(tail).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The container file in memory.
pub fn file_bytes(
    theme: &Theme,
    lang: Lang,
    info: &FileInfo<'_>,
    container: &[u8],
) -> Result<Vec<u8>, HtmlError> {
    let mut out = Vec::with_capacity(container.len() * 4 / 3 + container.len() / 38 + 8192);
    write_file(theme, lang, info, container, &mut out)?;
    Ok(out)
}

/// Extracts the container bytes from what the form posted (base64 with
/// line breaks), or from a whole container file (someone uploads the
/// attachment itself). `None` when there is no base64 container in it.
pub fn decode_posted(text: &str) -> Option<Vec<u8>> {
    let body = match text.find("<textarea") {
        Some(start) => {
            let rest = &text[start..];
            let open_end = rest.find('>')? + 1;
            let close = rest.find("</textarea>")?;
            rest.get(open_end..close)?
        }
        None => text,
    };
    let compact: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::theme::Themes;

    #[test]
    fn file_is_7bit_crlf_has_no_script_and_round_trips() {
        let themes = Themes::embedded().unwrap();
        let container: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
        let info = FileInfo {
            sender: "Jürgen Müller <juergen@example.com>",
            recipient: "bob@partner.example",
            expires: 1_767_225_600,
            portal_url: "https://portal.example.com",
        };
        let file = file_bytes(themes.default_theme(), Lang::De, &info, &container).unwrap();
        assert!(file.is_ascii(), "7-bit only");
        let text = std::str::from_utf8(&file).unwrap();
        for line in text.split("\r\n") {
            assert!(line.len() <= 998, "line too long: {}", line.len());
            assert!(!line.contains('\n'), "bare LF");
        }
        let lower = text.to_ascii_lowercase();
        for active in [
            "<script",
            "javascript:",
            "onload=",
            "onclick=",
            "<iframe",
            "<object",
            "<embed",
            "http://",
        ] {
            assert!(!lower.contains(active), "{active} in the file");
        }
        // minijinja escapes `/` as `&#x2f;`, which the browser decodes.
        assert!(
            text.contains("action=\"https:&#x2f;&#x2f;portal.example.com&#x2f;open\""),
            "{text}"
        );
        assert!(text.contains("enctype=\"multipart/form-data\""));
        assert!(
            text.contains("J&#252;rgen M&#252;ller"),
            "umlauts as references"
        );
        assert!(text.contains("01.01.2026 00:00 UTC"));
        assert_eq!(
            decode_posted(text).unwrap(),
            container,
            "the whole file decodes too"
        );
        // What a browser posts: the textarea's content with CRLF lines.
        let start = text.find("readonly>").unwrap() + "readonly>".len();
        let end = text.find("</textarea>").unwrap();
        assert_eq!(decode_posted(&text[start..end]).unwrap(), container);
        assert_eq!(decode_posted("not base64 !!"), None);
        assert_eq!(decode_posted("   "), None);
    }

    #[test]
    fn dates() {
        assert_eq!(
            format_date(1_767_225_600, Lang::En),
            "1 January 2026 00:00 UTC"
        );
        assert_eq!(
            format_date(1_767_225_600 + 3600 * 13 + 60 * 5, Lang::De),
            "01.01.2026 13:05 UTC"
        );
    }
}
