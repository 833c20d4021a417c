//! The mails GINA sends, as complete RFC 5322 messages (CRLF, 7-bit: text
//! parts are quoted-printable or base64 as `mail-builder` chooses, headers
//! RFC 2047-encoded), each in the language and theme it is for:
//!
//! * [`carrier`]: to the external recipient, the container file attached,
//!   in the sender domain's design and the sender's language;
//! * [`initial_password_notice`]: to the internal sender, with the initial
//!   password to pass on by phone;
//! * [`verification`]: the link that confirms an address registered in
//!   advance on the portal;
//! * [`read_receipt`]: RFC 8098 `multipart/report` to the sender when the
//!   recipient first opens the container.

use std::borrow::Cow;

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use minijinja::context;
use siegel_types::Address;

use crate::html::format_date;
use crate::theme::{Lang, Theme, ThemeError};

/// Building a mail failed (a theme template is broken, or the random
/// generator failed).
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// A template failed.
    #[error(transparent)]
    Theme(#[from] ThemeError),
    /// Writing the message failed (cannot happen into memory).
    #[error("building the message: {0}")]
    Build(String),
    /// The system random generator failed.
    #[error(transparent)]
    Random(#[from] crate::accounts::RandomError),
}

/// A person: address and optional display name.
#[derive(Debug, Clone)]
pub struct Person<'a> {
    /// The address.
    pub address: &'a Address,
    /// The display name, if known.
    pub name: Option<&'a str>,
}

impl Person<'_> {
    fn mb(&self) -> MbAddress<'static> {
        MbAddress::new_address(
            self.name.map(|n| n.to_owned()),
            self.address.as_str().to_owned(),
        )
    }
    /// "Name <address>" or the address.
    pub fn display(&self) -> String {
        match self.name {
            Some(n) if !n.trim().is_empty() => format!("{n} <{}>", self.address.as_str()),
            _ => self.address.as_str().to_owned(),
        }
    }
    fn short(&self) -> String {
        match self.name {
            Some(n) if !n.trim().is_empty() => n.to_owned(),
            _ => self.address.as_str().to_owned(),
        }
    }
}

/// A fresh Message-ID (without angle brackets) on `hostname`.
pub fn new_message_id(hostname: &str) -> Result<String, MailError> {
    let token = crate::accounts::new_token()?;
    Ok(format!("gina.{}@{hostname}", &token[..24]))
}

fn fill(theme: &Theme, lang: Lang, key: &str, vars: &[(&str, &str)]) -> String {
    let mut s = theme.text(lang, key);
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn finish(b: MessageBuilder<'_>) -> Result<Vec<u8>, MailError> {
    b.write_to_vec()
        .map_err(|e| MailError::Build(e.to_string()))
}

fn base(
    from: MbAddress<'static>,
    to: MbAddress<'static>,
    subject: String,
    date: i64,
    message_id: String,
) -> MessageBuilder<'static> {
    MessageBuilder::new()
        .from(from)
        .to(to)
        .subject(Text::new(subject))
        .date(date)
        .message_id(MessageId::new(message_id))
}

/// What the carrier mail needs besides the container file.
#[derive(Debug, Clone)]
pub struct CarrierParams<'a> {
    /// The original sender (the carrier comes from them).
    pub sender: Person<'a>,
    /// The external recipient.
    pub recipient: &'a Address,
    /// The original Subject; used only when `show_subject` (else the subject
    /// says who sent a secure message, nothing about its content).
    pub original_subject: Option<&'a str>,
    /// Whether the carrier shows the original subject.
    pub show_subject: bool,
    /// `[portal] public_url`.
    pub portal_url: &'a str,
    /// Container expiry, Unix seconds.
    pub expires: i64,
    /// The recipient has no own password yet (first mail): explain the
    /// initial password.
    pub first_time: bool,
    /// Now, Unix seconds (the Date header).
    pub date: i64,
    /// Our host name (for the Message-ID).
    pub hostname: &'a str,
    /// The original Message-ID, kept in `References` so replies thread.
    pub original_message_id: Option<&'a str>,
    /// The container id, in `X-Siegel-Gina-Container` for support.
    pub container_id: &'a str,
}

/// The carrier mail: an explanation (text and HTML, themed) and the
/// container file as attachment (`text/html`, 7bit).
pub fn carrier(
    theme: &Theme,
    lang: Lang,
    p: &CarrierParams<'_>,
    container_file: &[u8],
) -> Result<Vec<u8>, MailError> {
    let sender = p.sender.short();
    let file_name = theme.text(lang, "carrier_file_name");
    let expires = format_date(p.expires, lang);
    let logo_png = theme.logo().content_type == "image/png";
    let ctx = context! {
        sender => &sender,
        recipient => p.recipient.as_str(),
        file_name => &file_name,
        expires => &expires,
        portal_url => p.portal_url,
        first_time => p.first_time,
        logo_cid => if logo_png { Some("logo@siegel") } else { None },
    };
    let text = theme.render("carrier.txt", lang, ctx.clone())?;
    let html = theme.render("carrier.html", lang, ctx)?;
    let subject = match (p.show_subject, p.original_subject) {
        (true, Some(s)) if !s.trim().is_empty() => s.to_owned(),
        _ => fill(theme, lang, "carrier_subject", &[("sender", &sender)]),
    };
    let mut related = vec![MimePart::new("text/html", html)];
    if logo_png {
        related.push(
            MimePart::new(
                "image/png",
                BodyPart::Binary(Cow::Owned(theme.logo().bytes.clone())),
            )
            .inline()
            .cid("logo@siegel"),
        );
    }
    let html_part = if related.len() == 1 {
        related.remove(0)
    } else {
        MimePart::new("multipart/related", related)
    };
    let alternative = MimePart::new(
        "multipart/alternative",
        vec![MimePart::new("text/plain", text), html_part],
    );
    // The file is 7-bit with short CRLF lines: sent as it is, not base64'd
    // a second time.
    let attachment = raw_part(&file_name, container_file);
    let mut b = base(
        p.sender.mb(),
        MbAddress::new_address(None::<String>, p.recipient.as_str().to_owned()),
        subject,
        p.date,
        new_message_id(p.hostname)?,
    )
    .header(
        "X-Siegel-Gina-Container",
        Raw::new(p.container_id.to_owned()),
    )
    .body(MimePart::new(
        "multipart/mixed",
        vec![alternative, attachment],
    ));
    if let Some(id) = p.original_message_id {
        b = b.references(MessageId::new(id.trim_matches(['<', '>']).to_owned()));
    }
    finish(b)
}

/// The container file as a part whose headers we write ourselves: it is
/// 7-bit with CRLF lines already, so it goes as it is (`7bit`), not
/// base64'd a second time.
fn raw_part(file_name: &str, body: &[u8]) -> MimePart<'static> {
    let mut head = String::new();
    head.push_str("Content-Type: text/html; charset=us-ascii; name=\"");
    head.push_str(&file_name.replace(['"', '\\', '\r', '\n'], "_"));
    head.push_str("\"\r\nContent-Disposition: attachment; filename=\"");
    head.push_str(&file_name.replace(['"', '\\', '\r', '\n'], "_"));
    head.push_str("\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n");
    let mut all = head.into_bytes();
    all.extend_from_slice(body);
    if !all.ends_with(b"\r\n") {
        all.extend_from_slice(b"\r\n");
    }
    MimePart::raw(BodyPart::Binary(Cow::Owned(all)))
}

/// What the initial-password notice needs.
#[derive(Debug, Clone)]
pub struct NoticeParams<'a> {
    /// The gateway's own sender address (e.g. `siegel@example.com`).
    pub from: &'a Address,
    /// The internal sender who must pass the password on.
    pub to: Person<'a>,
    /// The new account's address.
    pub recipient: &'a Address,
    /// The initial password.
    pub password: &'a crate::accounts::Secret,
    /// `[portal] public_url`.
    pub portal_url: &'a str,
    /// Now, Unix seconds.
    pub date: i64,
    /// Our host name.
    pub hostname: &'a str,
}

fn system_from(theme: &Theme, lang: Lang, from: &Address) -> MbAddress<'static> {
    MbAddress::new_address(Some(theme.text(lang, "brand")), from.as_str().to_owned())
}

/// The sender's notification with the recipient's initial password. It
/// goes to an internal mailbox only (never over the internet).
pub fn initial_password_notice(
    theme: &Theme,
    lang: Lang,
    p: &NoticeParams<'_>,
) -> Result<Vec<u8>, MailError> {
    let text = theme.render(
        "initial_password.txt",
        lang,
        context! {
            recipient => p.recipient.as_str(),
            password => p.password.expose(),
            portal_url => p.portal_url,
        },
    )?;
    let subject = fill(
        theme,
        lang,
        "notice_subject",
        &[("recipient", p.recipient.as_str())],
    );
    finish(
        base(
            system_from(theme, lang, p.from),
            p.to.mb(),
            subject,
            p.date,
            new_message_id(p.hostname)?,
        )
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("X-Siegel-Gina", Raw::new("initial-password"))
        .text_body(text),
    )
}

/// What the address verification mail needs.
#[derive(Debug, Clone)]
pub struct VerifyParams<'a> {
    /// The gateway's own sender address.
    pub from: &'a Address,
    /// The address being registered.
    pub to: &'a Address,
    /// The confirmation link (absent when the address has an account).
    pub link: Option<&'a str>,
    /// The reset page, for an address that has an account already.
    pub reset_url: &'a str,
    /// Hours the link is valid.
    pub hours: u32,
    /// Now, Unix seconds.
    pub date: i64,
    /// Our host name.
    pub hostname: &'a str,
}

/// The verification mail of a registration in advance. For an address that
/// has an account already it says so (and links the reset page) instead:
/// the portal shows the same page either way, so nobody learns from the
/// portal which addresses have accounts.
pub fn verification(theme: &Theme, lang: Lang, p: &VerifyParams<'_>) -> Result<Vec<u8>, MailError> {
    let text = theme.render(
        "verify.txt",
        lang,
        context! {
            address => p.to.as_str(),
            exists => p.link.is_none(),
            link => p.link,
            reset_url => p.reset_url,
            hours => p.hours,
        },
    )?;
    let subject = theme.text(lang, "verify_subject");
    finish(
        base(
            system_from(theme, lang, p.from),
            MbAddress::new_address(None::<String>, p.to.as_str().to_owned()),
            subject,
            p.date,
            new_message_id(p.hostname)?,
        )
        .header("Auto-Submitted", Raw::new("auto-generated"))
        .header("X-Siegel-Gina", Raw::new("verification"))
        .text_body(text),
    )
}

/// What the read receipt needs.
#[derive(Debug, Clone)]
pub struct ReceiptParams<'a> {
    /// The recipient who opened the mail (the MDN is from them).
    pub reader: &'a Address,
    /// Where the receipt goes (`Disposition-Notification-To`).
    pub to: &'a Address,
    /// The original Message-ID.
    pub original_message_id: Option<&'a str>,
    /// The original Subject.
    pub original_subject: Option<&'a str>,
    /// When it was opened, Unix seconds.
    pub opened_at: i64,
    /// Our host name (Reporting-UA, Message-ID).
    pub hostname: &'a str,
}

fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The RFC 8098 read receipt: `multipart/report;
/// report-type=disposition-notification` with a human-readable part and
/// the machine-readable `message/disposition-notification`.
pub fn read_receipt(
    theme: &Theme,
    lang: Lang,
    p: &ReceiptParams<'_>,
) -> Result<Vec<u8>, MailError> {
    let subject_text = p
        .original_subject
        .map(header_safe)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| theme.text(lang, "read_no_subject"));
    let date = format_date(p.opened_at, lang);
    let human = theme.render(
        "receipt.txt",
        lang,
        context! {
            recipient => p.reader.as_str(),
            date => &date,
            subject => &subject_text,
        },
    )?;
    // RFC 8098 §3.1: the fields are US-ASCII; the address is ASCII after
    // normalisation unless the local part is UTF-8 (then utf-8 type, §3.2.3).
    let addr_type = if p.reader.as_str().is_ascii() {
        "rfc822"
    } else {
        "utf-8"
    };
    let mut report = format!(
        "Reporting-UA: {}; Siegel GINA portal\r\nFinal-Recipient: {addr_type};{}\r\n",
        header_safe(p.hostname),
        p.reader.as_str()
    );
    if let Some(id) = p.original_message_id {
        let id = header_safe(id);
        let id = id.trim_matches(['<', '>']);
        report.push_str(&format!("Original-Message-ID: <{id}>\r\n"));
    }
    report.push_str("Disposition: automatic-action/MDN-sent-automatically; displayed\r\n");
    let report_part = MimePart::new(
        "message/disposition-notification",
        BodyPart::Binary(Cow::Owned(report.into_bytes())),
    )
    .transfer_encoding("7bit");
    let subject = fill(
        theme,
        lang,
        "receipt_subject",
        &[("subject", &subject_text)],
    );
    let mut b = base(
        MbAddress::new_address(None::<String>, p.reader.as_str().to_owned()),
        MbAddress::new_address(None::<String>, p.to.as_str().to_owned()),
        subject,
        p.opened_at,
        new_message_id(p.hostname)?,
    )
    .header("Auto-Submitted", Raw::new("auto-replied"))
    .body(MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "disposition-notification"),
        vec![MimePart::new("text/plain", human), report_part],
    ));
    if let Some(id) = p.original_message_id {
        b = b.in_reply_to(MessageId::new(
            header_safe(id).trim_matches(['<', '>']).to_owned(),
        ));
    }
    finish(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::theme::Themes;
    use mail_parser::{MessageParser, MimeHeaders};

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn assert_wire_clean(m: &[u8]) {
        assert!(m.is_ascii(), "7-bit");
        let s = std::str::from_utf8(m).unwrap();
        assert!(!s.replace("\r\n", "").contains('\n'), "bare LF");
        assert!(!s.replace("\r\n", "").contains('\r'), "bare CR");
        for l in s.split("\r\n") {
            assert!(l.len() <= 998, "line of {}", l.len());
        }
    }

    #[test]
    fn carrier_mail_has_explanation_and_container_file() {
        let themes = Themes::embedded().unwrap();
        let alice = addr("alice@example.com");
        let bob = addr("bob@partner.example");
        let file = b"<!DOCTYPE html>\r\n<p>x</p>\r\n".to_vec();
        let p = CarrierParams {
            sender: Person {
                address: &alice,
                name: Some("Alice Müller"),
            },
            recipient: &bob,
            original_subject: Some("Quarterly figures"),
            show_subject: false,
            portal_url: "https://portal.example.com",
            expires: 1_767_225_600,
            first_time: true,
            date: 1_766_000_000,
            hostname: "siegel.example.com",
            original_message_id: Some("<orig@example.com>"),
            container_id: "0123456789abcdef0123456789abcdef",
        };
        let m = carrier(themes.default_theme(), Lang::De, &p, &file).unwrap();
        assert_wire_clean(&m);
        let msg = MessageParser::default().parse(&m).unwrap();
        assert_eq!(msg.subject(), Some("Sichere Nachricht von Alice Müller"));
        assert!(
            !String::from_utf8_lossy(&m).contains("Quarterly"),
            "subject not leaked"
        );
        assert_eq!(
            msg.from().unwrap().first().unwrap().address(),
            Some("alice@example.com")
        );
        let text = msg.body_text(0).unwrap();
        assert!(text.contains("Initialpasswort"), "{text}");
        assert!(msg.body_html(0).unwrap().contains("sichere Nachricht"));
        let att = msg.attachment(0).unwrap();
        assert_eq!(att.attachment_name(), Some("sichere-nachricht.html"));
        assert_eq!(att.contents(), &file[..]);
        assert!(String::from_utf8_lossy(&m).contains("Content-Transfer-Encoding: 7bit"));
        assert_eq!(msg.references().as_text(), Some("orig@example.com"));

        let en = carrier(
            themes.default_theme(),
            Lang::En,
            &CarrierParams {
                show_subject: true,
                first_time: false,
                ..p.clone()
            },
            &file,
        )
        .unwrap();
        let msg = MessageParser::default().parse(&en).unwrap();
        assert_eq!(msg.subject(), Some("Quarterly figures"));
        assert!(
            msg.body_text(0)
                .unwrap()
                .contains("Log in with your password")
        );
    }

    #[test]
    fn notice_verification_receipt() {
        let themes = Themes::embedded().unwrap();
        let t = themes.default_theme();
        let sys = addr("siegel@example.com");
        let alice = addr("alice@example.com");
        let bob = addr("bob@partner.example");
        let pw = crate::accounts::Secret::new("Kp7x-9Qm2-hT4w");
        let n = initial_password_notice(
            t,
            Lang::En,
            &NoticeParams {
                from: &sys,
                to: Person {
                    address: &alice,
                    name: None,
                },
                recipient: &bob,
                password: &pw,
                portal_url: "https://portal.example.com",
                date: 1_766_000_000,
                hostname: "siegel.example.com",
            },
        )
        .unwrap();
        assert_wire_clean(&n);
        let msg = MessageParser::default().parse(&n).unwrap();
        assert!(msg.body_text(0).unwrap().contains("Kp7x-9Qm2-hT4w"));
        assert_eq!(
            msg.subject(),
            Some("Initial password for bob@partner.example")
        );
        assert_eq!(
            msg.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-generated")
        );

        let v = verification(
            t,
            Lang::De,
            &VerifyParams {
                from: &sys,
                to: &bob,
                link: Some("https://portal.example.com/signup/verify?token=abc"),
                reset_url: "https://portal.example.com/reset",
                hours: 24,
                date: 1_766_000_000,
                hostname: "siegel.example.com",
            },
        )
        .unwrap();
        assert_wire_clean(&v);
        let msg = MessageParser::default().parse(&v).unwrap();
        let body = msg.body_text(0).unwrap();
        assert!(
            body.contains("token=abc") && body.contains("24 Stunden"),
            "{body}"
        );

        let r = read_receipt(
            t,
            Lang::En,
            &ReceiptParams {
                reader: &bob,
                to: &alice,
                original_message_id: Some("<orig@example.com>"),
                original_subject: Some("Vertrag für Q3"),
                opened_at: 1_766_000_000,
                hostname: "siegel.example.com",
            },
        )
        .unwrap();
        assert_wire_clean(&r);
        let s = String::from_utf8_lossy(&r);
        assert!(s.contains("multipart/report"), "{s}");
        assert!(
            s.contains("report-type=\"disposition-notification\"")
                || s.contains("report-type=disposition-notification"),
            "{s}"
        );
        assert!(s.contains("Original-Message-ID: <orig@example.com>"));
        assert!(s.contains("Disposition: automatic-action/MDN-sent-automatically; displayed"));
        assert!(s.contains("Final-Recipient: rfc822;bob@partner.example"));
        let msg = MessageParser::default().parse(&r).unwrap();
        assert_eq!(msg.subject(), Some("Read: Vertrag für Q3"));
    }
}
