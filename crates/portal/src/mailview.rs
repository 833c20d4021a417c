//! Turning a decrypted mail into something safe to show.
//!
//! HTML goes through `ammonia` (no script, no event handlers, no
//! `javascript:`, no forms, no frames, no `<meta>`, no `<base>`, no `<style>`
//! blocks), then our own filter: remote images are dropped unless the reader
//! asked for them; relative URLs are dropped (they would point at the
//! portal); `style` attributes that could fetch anything (`url(`,
//! `@import`, `expression`) are dropped; links open in a new tab without
//! opener or referrer; `cid:` images become `data:` URIs of the mail's own
//! inline parts. The result is shown in a sandboxed `srcdoc` frame under the
//! read page's CSP, so even a sanitiser bug runs no script and loads nothing
//! from elsewhere. Plain-text mail is shown as text.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;

/// One attachment as listed on the read page.
#[derive(Debug, Clone, Serialize)]
pub struct AttachmentView {
    /// Its position among the mail's attachments (the download button).
    pub index: u32,
    /// File name (shown escaped; never used as a path).
    pub name: String,
    /// Human-readable size.
    pub size: String,
}

/// The mail as the read page shows it.
#[derive(Debug, Clone, Serialize, Default)]
pub struct MailView {
    pub subject: String,
    pub from: String,
    /// The sender's address alone (reply target).
    pub from_address: String,
    pub to: String,
    pub cc: String,
    /// All To/Cc addresses (reply-all candidates).
    pub all_addresses: Vec<String>,
    pub date: String,
    /// Unix seconds of the Date header.
    pub date_unix: Option<i64>,
    /// Sanitised HTML document for the frame; `None` for text mails.
    pub html: Option<String>,
    /// The text body (for text mails and for quoting in replies).
    pub text: String,
    pub attachments: Vec<AttachmentView>,
    /// Remote images were dropped.
    pub remote_blocked: bool,
    pub message_id: Option<String>,
    pub references: Vec<String>,
}

fn human_size(n: usize) -> String {
    if n < 1024 {
        format!("{n} B")
    } else if n < 1024 * 1024 {
        format!("{:.0} KB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MB", n as f64 / (1024.0 * 1024.0))
    }
}

fn addr_list(a: Option<&mail_parser::Address<'_>>) -> (String, Vec<String>) {
    let Some(a) = a else {
        return (String::new(), Vec::new());
    };
    let mut shown = Vec::new();
    let mut bare = Vec::new();
    for x in a.iter() {
        let address = x.address().unwrap_or_default().to_owned();
        match x.name() {
            Some(n) if !n.is_empty() => shown.push(format!("{n} <{address}>")),
            _ => shown.push(address.clone()),
        }
        if !address.is_empty() {
            bare.push(address);
        }
    }
    (shown.join(", "), bare)
}

/// Whether a CSS declaration list could load anything or run anything.
fn style_is_active(v: &str) -> bool {
    let l: String = v
        .to_ascii_lowercase()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    [
        "url(",
        "@import",
        "expression",
        "behavior",
        "javascript:",
        "\\",
        "-moz-binding",
        "image-set(",
    ]
    .iter()
    .any(|p| l.contains(p))
}

/// Sanitises mail HTML. `inline` maps Content-IDs to `data:` URIs.
pub fn sanitise(
    html: &str,
    allow_remote: bool,
    inline: &HashMap<String, String>,
) -> (String, bool) {
    let blocked = Arc::new(AtomicBool::new(false));
    let flag = blocked.clone();
    let mut b = ammonia::Builder::default();
    b.add_url_schemes(["cid"])
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(Some("noopener noreferrer"))
        .set_tag_attribute_value("a", "target", "_blank")
        .add_generic_attributes([
            "style", "align", "valign", "bgcolor", "color", "width", "height",
        ])
        .add_tags(["font", "center"])
        .add_tag_attributes("font", ["face", "size"])
        .add_tag_attributes("table", ["cellpadding", "cellspacing", "border"])
        .attribute_filter(move |element, attribute, value| {
            if attribute == "style" && style_is_active(value) {
                return None;
            }
            if element == "img" && (attribute == "src" || attribute == "srcset") {
                let v = value.trim_start().to_ascii_lowercase();
                if v.starts_with("cid:") {
                    return Some(Cow::Borrowed(value));
                }
                if !allow_remote || attribute == "srcset" {
                    flag.store(true, Ordering::Relaxed);
                    return None;
                }
                if !(v.starts_with("https:") || v.starts_with("http:")) {
                    return None;
                }
            }
            if attribute == "background" {
                return None;
            }
            Some(Cow::Borrowed(value))
        });
    let mut out = b.clean(html).to_string();
    for (cid, uri) in inline {
        let escaped = cid.replace('&', "&amp;").replace('"', "&quot;");
        out = out.replace(&format!("src=\"cid:{escaped}\""), &format!("src=\"{uri}\""));
    }
    // Any cid: left names no inline part: drop it rather than let the
    // browser try to fetch it.
    out = out.replace("src=\"cid:", "data-missing-cid=\"");
    (out, blocked.load(Ordering::Relaxed))
}

/// The frame document around sanitised HTML.
fn frame_document(body: &str) -> String {
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>body{{font:15px/1.5 \"Segoe UI\",Helvetica,Arial,sans-serif;color:#1b2530;margin:16px;word-wrap:break-word;overflow-wrap:anywhere}}img{{max-width:100%;height:auto}}table{{max-width:100%}}</style></head><body>{body}</body></html>"
    )
}

/// Parses a decrypted mail for display.
pub fn view_mail(raw: &[u8], allow_remote: bool, lang: siegel_gina::Lang) -> MailView {
    let Some(m) = MessageParser::default().parse(raw) else {
        return MailView {
            text: String::from_utf8_lossy(raw).into_owned(),
            ..MailView::default()
        };
    };
    let (from, from_bare) = addr_list(m.from());
    let (to, to_bare) = addr_list(m.to());
    let (cc, cc_bare) = addr_list(m.cc());
    let date_unix = m.date().map(|d| d.to_timestamp());
    let text = m.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let mut inline = HashMap::new();
    let mut attachments = Vec::new();
    for (i, part) in m.attachments().enumerate() {
        let ct = part.content_type();
        let is_image = ct.is_some_and(|c| {
            c.ctype().eq_ignore_ascii_case("image")
                && c.subtype().is_some_and(|s| {
                    ["png", "jpeg", "jpg", "gif", "webp"].contains(&s.to_ascii_lowercase().as_str())
                })
        });
        if let (true, Some(cid)) = (is_image, part.content_id())
            && part.contents().len() <= 4 << 20
        {
            let sub = ct
                .and_then(|c| c.subtype())
                .unwrap_or("png")
                .to_ascii_lowercase();
            inline.insert(
                cid.trim_matches(['<', '>']).to_owned(),
                format!(
                    "data:image/{sub};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(part.contents())
                ),
            );
        }
        let name = part
            .attachment_name()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("attachment-{}", i + 1));
        attachments.push(AttachmentView {
            index: i as u32,
            name,
            size: human_size(part.contents().len()),
        });
    }
    let (html, remote_blocked) = if m.html_body_count() > 0
        && m.html_body
            .first()
            .and_then(|id| m.part(*id))
            .is_some_and(|p| p.is_text_html())
    {
        let src = m.body_html(0).unwrap_or_default();
        let (clean, blocked) = sanitise(&src, allow_remote, &inline);
        (Some(frame_document(&clean)), blocked)
    } else {
        (None, false)
    };
    let mut references: Vec<String> = m
        .references()
        .as_text_list()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .or_else(|| m.references().as_text().map(|s| vec![s.to_owned()]))
        .unwrap_or_default();
    if let Some(id) = m.message_id() {
        references.push(id.to_owned());
    }
    MailView {
        subject: m.subject().unwrap_or_default().to_owned(),
        from,
        from_address: from_bare.into_iter().next().unwrap_or_default(),
        to,
        cc,
        all_addresses: to_bare.into_iter().chain(cc_bare).collect(),
        date: date_unix
            .map(|t| siegel_gina::html::format_date(t, lang))
            .unwrap_or_default(),
        date_unix,
        html,
        text,
        attachments,
        remote_blocked,
        message_id: m.message_id().map(str::to_owned),
        references,
    }
}

/// The bytes, name and type of attachment `index`.
pub fn attachment(raw: &[u8], index: u32) -> Option<(String, Vec<u8>)> {
    let m = MessageParser::default().parse(raw)?;
    let part = m.attachments().nth(index as usize)?;
    let name = part
        .attachment_name()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("attachment-{}", index + 1));
    Some((name, part.contents().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(html: &str) -> (String, bool) {
        sanitise(html, false, &HashMap::new())
    }

    #[test]
    fn hostile_html_loses_everything_active() {
        let corpus = [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<svg><script>alert(1)</script></svg>",
            "<svg onload=alert(1)>",
            "<div style=\"background:url(https://evil.example/x)\">x</div>",
            "<style>@import url(https://evil.example/x.css);</style>",
            "<meta http-equiv=\"refresh\" content=\"0;url=https://evil.example\">",
            "<base href=\"https://evil.example/\">",
            "<form action=\"https://evil.example\"><input name=p></form>",
            "<iframe src=\"https://evil.example\"></iframe>",
            "<object data=\"https://evil.example/x.swf\"></object>",
            "<img src=\"https://evil.example/track.gif\">",
            "<a href=\"https://ok.example\">link</a>",
            "<<script>script>alert(1)<</script>/script>",
            "<img src=\"/relative.png\">",
            "<p style=\"width:expression(alert(1))\">x</p>",
            "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
        ];
        let (out, blocked) = clean(&corpus.join("\n"));
        let l = out.to_ascii_lowercase();
        for bad in [
            "<script",
            "onerror",
            "onload",
            "javascript:",
            "<svg",
            "url(",
            "@import",
            "<meta",
            "<base",
            "<form",
            "<input",
            "<iframe",
            "<object",
            "evil.example",
            "expression",
            "relative.png",
        ] {
            assert!(!l.contains(bad), "{bad} survived: {out}");
        }
        assert!(blocked, "the remote image was noted");
        assert!(out.contains("href=\"https://ok.example\""), "{out}");
        assert!(out.contains("rel=\"noopener noreferrer\""));
        assert!(out.contains("target=\"_blank\""));
    }

    #[test]
    fn remote_images_on_request_and_cid_inline() {
        let mut inline = HashMap::new();
        inline.insert("logo@x".to_owned(), "data:image/png;base64,AAAA".to_owned());
        let html =
            "<img src=\"https://img.example/a.png\"><img src=\"cid:logo@x\"><img src=\"cid:nope\">";
        let (out, blocked) = sanitise(html, true, &inline);
        assert!(!blocked);
        assert!(out.contains("https://img.example/a.png"));
        assert!(out.contains("src=\"data:image/png;base64,AAAA\""), "{out}");
        assert!(!out.contains("cid:nope"));
    }

    #[test]
    fn text_mail_and_attachments() {
        let raw = b"From: Alice <alice@example.com>\r\nTo: bob@partner.example\r\nSubject: Hi\r\nMessage-ID: <m1@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nHello <b>Bob</b>\r\n--b\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
        let v = view_mail(raw, false, siegel_gina::Lang::En);
        assert!(v.html.is_none());
        assert!(v.text.contains("Hello <b>Bob</b>"));
        assert_eq!(v.from_address, "alice@example.com");
        assert_eq!(v.attachments.len(), 1);
        assert_eq!(v.attachments[0].name, "a.pdf");
        assert_eq!(attachment(raw, 0).unwrap().1, b"%PDF-");
        assert!(attachment(raw, 1).is_none());
        assert_eq!(v.references, vec!["m1@example.com".to_owned()]);
    }
}
