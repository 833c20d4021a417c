//! Delivery status notifications (RFC 3464): the bounce a sender gets for
//! recipients that failed for good, readable for people in German and
//! English and for programs in `message/delivery-status`.

use std::fmt::Write as _;

use siegel_types::{
    Direction, DsnRet, Envelope, NotifyOn, Origin, QueueId, Recipient, ReversePath, SmtpReply,
};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

/// Largest original returned whole for `RET=FULL`; beyond it only the
/// headers come back (a bounce should not re-send a huge mail).
pub const MAX_RETURNED_FULL: u64 = 1024 * 1024;

/// The reason given for recipients that ran out of lifetime.
pub const EXPIRED: &str = "expired";

/// Prefix of a failure reason that names the host which refused; the rest
/// is the Remote-MTA. The spool's failure state has no field for the host,
/// so the reason carries it.
pub const REFUSED_BY: &str = "refused by ";

/// One recipient that failed for good.
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    pub recipient: &'a Recipient,
    /// Why: [`EXPIRED`], `refused by HOST`, or a local reason.
    pub reason: &'a str,
    /// The next hop's answer, when there was one.
    pub reply: Option<&'a SmtpReply>,
    /// When it failed (Unix seconds).
    pub at: u64,
}

impl Failure<'_> {
    fn remote_mta(&self) -> Option<&str> {
        self.reason
            .strip_prefix(REFUSED_BY)
            .filter(|h| !h.is_empty())
    }

    fn status(&self) -> String {
        if self.reason == EXPIRED {
            return "4.4.7".into();
        }
        match self.reply {
            Some(r) => r.status(),
            None => "5.0.0".into(),
        }
    }
}

/// A finished DSN: the envelope and content to hand to the spool.
#[derive(Debug, Clone)]
pub struct Dsn {
    pub envelope: Envelope,
    pub content: Vec<u8>,
}

/// Whether the original's content should be read whole for the DSN (rather
/// than only its headers).
pub fn wants_full_content(original: &Envelope) -> bool {
    original.ret == Some(DsnRet::Full) && original.size <= MAX_RETURNED_FULL
}

/// Builds the DSN for `failures` of `original`, or `None` when none is due:
/// the sender is the null sender (RFC 5321 §4.5.5: never bounce a bounce),
/// or no failed recipient wants one (NOTIFY).
///
/// `original_content` is the mail as it was sent (prepended headers and
/// content), whole or only its header section; `sender_internal` decides
/// the DSN's direction.
pub fn build(
    hostname: &str,
    original: &Envelope,
    failures: &[Failure<'_>],
    original_content: &[u8],
    sender_internal: bool,
    now: u64,
) -> Option<Dsn> {
    let sender = original.mail_from.address()?;
    let failures: Vec<&Failure<'_>> = failures
        .iter()
        .filter(|f| NotifyOn::wants_failure(f.recipient.notify.as_ref()))
        .collect();
    if failures.is_empty() {
        return None;
    }
    let boundary = format!("=_siegel-dsn-{}-{now}", original.id);
    let message_id = format!("<dsn.{}.{now}@{hostname}>", original.id);
    let headers = header_section(original_content);
    let subject = header_value(headers, "subject").unwrap_or_default();
    let return_full =
        wants_full_content(original) && original_content.len() as u64 >= original.size;

    let mut out = String::new();
    let _ = write!(
        out,
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n\
         To: <{sender}>\r\n\
         Subject: {}\r\n\
         Date: {}\r\n\
         Message-ID: {message_id}\r\n\
         Auto-Submitted: auto-replied\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\
         \r\n\
         This is a MIME-encapsulated delivery status notification.\r\n\
         \r\n--{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: quoted-printable\r\n\
         Content-Description: Notification\r\n\r\n",
        encode_header(&if subject.is_empty() {
            "Unzustellbar / Undeliverable".to_owned()
        } else {
            format!("Unzustellbar / Undeliverable: {subject}")
        }),
        rfc2822(now),
    );
    out.push_str(&quoted_printable(&human_text(hostname, &failures)));
    let _ = write!(
        out,
        "\r\n--{boundary}\r\n\
         Content-Type: message/delivery-status\r\n\
         Content-Description: Delivery report\r\n\r\n\
         Reporting-MTA: dns; {hostname}\r\n"
    );
    if let Some(envid) = &original.env_id {
        let _ = write!(out, "Original-Envelope-Id: {}\r\n", printable(envid));
    }
    let _ = write!(out, "Arrival-Date: {}\r\n", rfc2822(original.received_at));
    for f in &failures {
        let _ = write!(
            out,
            "\r\nFinal-Recipient: rfc822; {}\r\n",
            f.recipient.address
        );
        if let Some(orcpt) = &f.recipient.orcpt {
            // ORCPT is `addr-type;xtext` (RFC 3461 §4.2), written as is.
            let orcpt = printable(orcpt);
            let (kind, addr) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt.as_str()));
            let _ = write!(
                out,
                "Original-Recipient: {}; {}\r\n",
                kind.trim(),
                addr.trim()
            );
        }
        let _ = write!(out, "Action: failed\r\nStatus: {}\r\n", f.status());
        if let Some(host) = f.remote_mta() {
            let _ = write!(out, "Remote-MTA: dns; {}\r\n", printable(host));
        }
        match f.reply {
            Some(reply) => {
                let _ = write!(
                    out,
                    "Diagnostic-Code: smtp; {}\r\n",
                    printable(&reply.to_string())
                );
            }
            None => {
                let _ = write!(out, "X-Siegel-Reason: {}\r\n", printable(f.reason));
            }
        }
        let _ = write!(out, "Last-Attempt-Date: {}\r\n", rfc2822(f.at));
    }
    let mut content = out.into_bytes();
    if return_full {
        let _ = write_part_header(&mut content, &boundary, "message/rfc822");
        content.extend_from_slice(original_content);
        if !original_content.ends_with(b"\r\n") {
            content.extend_from_slice(b"\r\n");
        }
    } else {
        let _ = write_part_header(&mut content, &boundary, "text/rfc822-headers");
        content.extend_from_slice(headers);
        if !headers.ends_with(b"\r\n") {
            content.extend_from_slice(b"\r\n");
        }
    }
    content.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());

    let envelope = Envelope {
        id: QueueId::generate(),
        mail_from: ReversePath::Null,
        recipients: vec![Recipient::new(sender.clone())],
        direction: if sender_internal {
            Direction::Inbound
        } else {
            Direction::Outbound
        },
        origin: Origin::Dsn,
        received_at: now,
        size: content.len() as u64,
        body_8bit: !content.is_ascii(),
        smtputf8: sender.needs_smtputf8() || original.smtputf8,
        env_id: None,
        ret: None,
        message_id: Some(message_id),
    };
    Some(Dsn { envelope, content })
}

fn write_part_header(out: &mut Vec<u8>, boundary: &str, content_type: &str) -> std::io::Result<()> {
    use std::io::Write;
    write!(
        out,
        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Description: Original message\r\n\r\n"
    )
}

fn human_text(hostname: &str, failures: &[&Failure<'_>]) -> String {
    let mut de = String::from(
        "Dies ist eine automatische Nachricht des Mail-Gateways {HOST}.\n\n\
         Ihre Nachricht konnte an die folgenden Empfänger nicht zugestellt werden:\n\n",
    )
    .replace("{HOST}", hostname);
    let mut en = format!(
        "This is an automatic message from the mail gateway {hostname}.\n\n\
         Your message could not be delivered to the following recipients:\n\n"
    );
    for f in failures {
        let addr = &f.recipient.address;
        match (f.reason == EXPIRED, f.reply) {
            (true, reply) => {
                let _ = writeln!(
                    de,
                    "  <{addr}>: die Zustellung war über die maximale Verweildauer hinaus nicht möglich."
                );
                let _ = writeln!(
                    en,
                    "  <{addr}>: delivery kept failing until the message expired."
                );
                if let Some(r) = reply {
                    let _ = writeln!(de, "    Letzte Antwort des Servers: {r}");
                    let _ = writeln!(en, "    Last answer of the server: {r}");
                }
            }
            (false, Some(r)) => {
                let host = f.remote_mta().unwrap_or("dem Zielserver");
                let _ = writeln!(de, "  <{addr}>: abgelehnt von {host}:\n    {r}");
                let host = f.remote_mta().unwrap_or("the receiving server");
                let _ = writeln!(en, "  <{addr}>: refused by {host}:\n    {r}");
            }
            (false, None) => {
                let _ = writeln!(de, "  <{addr}>: {}", f.reason);
                let _ = writeln!(en, "  <{addr}>: {}", f.reason);
            }
        }
    }
    de.push_str(
        "\nBitte prüfen Sie die Empfängeradresse auf Tippfehler. Bleibt das Problem bestehen, \
         wenden Sie sich an den Empfänger auf anderem Weg oder an Ihren Administrator und \
         geben Sie dabei den obigen Fehlertext an. Die Kopfzeilen Ihrer Nachricht sind angehängt.\n",
    );
    en.push_str(
        "\nPlease check the recipient address for typing errors. If the problem persists, \
         contact the recipient by other means or your administrator and quote the error \
         text above. The headers of your message are attached.\n",
    );
    format!("{de}\n---- English ----\n\n{en}")
}

/// The header section of a mail (up to and including the line ending
/// before the empty line), or everything when there is no body.
fn header_section(content: &[u8]) -> &[u8] {
    match content.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(pos) => &content[..pos + 2],
        None => content,
    }
}

/// The unfolded value of the first header `name` (lower case).
fn header_value(headers: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(headers);
    let mut lines = text.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !key.trim().eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = value.trim().to_owned();
        while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
            value.push(' ');
            value.push_str(next.trim());
            lines.next();
        }
        return Some(value);
    }
    None
}

/// A header value: as is when ASCII, else RFC 2047 Q-encoded words.
fn encode_header(value: &str) -> String {
    if value.is_ascii() {
        return value
            .chars()
            .map(|c| if c.is_ascii_control() { ' ' } else { c })
            .collect();
    }
    let mut words = Vec::new();
    let mut word = String::new();
    for c in value.chars() {
        let mut enc = String::new();
        if c.is_ascii_alphanumeric() {
            enc.push(c);
        } else if c == ' ' {
            enc.push('_');
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(enc, "={b:02X}");
            }
        }
        // 75 octets per encoded word minus `=?utf-8?q?` and `?=`.
        if word.len() + enc.len() > 60 {
            words.push(std::mem::take(&mut word));
        }
        word.push_str(&enc);
    }
    words.push(word);
    words
        .iter()
        .map(|w| format!("=?utf-8?q?{w}?="))
        .collect::<Vec<_>>()
        .join("\r\n ")
}

/// Quoted-printable (RFC 2045 §6.7) with CRLF line ends.
fn quoted_printable(text: &str) -> String {
    let mut out = String::new();
    for line in text.split('\n') {
        let mut len = 0;
        let bytes = line.as_bytes();
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let plain = (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece = if plain {
                (b as char).to_string()
            } else {
                format!("={b:02X}")
            };
            if len + piece.len() > 75 {
                out.push_str("=\r\n");
                len = 0;
            }
            len += piece.len();
            out.push_str(&piece);
        }
        out.push_str("\r\n");
    }
    out
}

/// Makes a value safe for a header field: ASCII without controls.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

fn rfc2822(unix: u64) -> String {
    OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| t.format(&Rfc2822).ok())
        .unwrap_or_else(|| "Thu, 01 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use siegel_types::Address;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn envelope(from: ReversePath, ret: Option<DsnRet>) -> Envelope {
        Envelope {
            id: QueueId::generate(),
            mail_from: from,
            recipients: vec![Recipient::new(addr("bob@remote.example"))],
            direction: Direction::Outbound,
            origin: Origin::Dsn,
            received_at: 1_700_000_000,
            size: 60,
            body_8bit: false,
            smtputf8: false,
            env_id: Some("ENV42".into()),
            ret,
            message_id: None,
        }
    }

    const ORIGINAL: &[u8] =
        b"Subject: Gr\xc3\xbc\xc3\x9fe\r\nFrom: a@example.com\r\n\r\nsecret body\r\n";

    fn parts(content: &str) -> Vec<String> {
        let boundary = content
            .split("boundary=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no boundary"));
        assert!(
            content.contains(&format!("\r\n--{boundary}--\r\n")),
            "closing boundary"
        );
        content
            .split(&format!("\r\n--{boundary}"))
            .skip(1)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn dsn_structure_with_headers_only() {
        let env = envelope(ReversePath::Address(addr("alice@example.com")), None);
        let mut rcpt = Recipient::new(addr("bob@remote.example"));
        rcpt.orcpt = Some("rfc822;Bob@Remote.example".into());
        let reply = SmtpReply::new(550, "5.1.1", "no such user");
        let failure = Failure {
            recipient: &rcpt,
            reason: "refused by mx.remote.example",
            reply: Some(&reply),
            at: 1_700_000_100,
        };
        let dsn = build(
            "gw.example.com",
            &env,
            &[failure],
            ORIGINAL,
            true,
            1_700_000_200,
        )
        .unwrap_or_else(|| panic!("no DSN"));
        assert_eq!(dsn.envelope.mail_from, ReversePath::Null);
        assert_eq!(
            dsn.envelope.recipients[0].address,
            addr("alice@example.com")
        );
        assert_eq!(dsn.envelope.direction, Direction::Inbound);
        assert_eq!(dsn.envelope.origin, Origin::Dsn);
        assert_eq!(dsn.envelope.size, dsn.content.len() as u64);
        let text = String::from_utf8(dsn.content).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            dsn.envelope.body_8bit,
            "the returned 8bit headers make the DSN 8bit"
        );
        assert!(text.contains("From: Mail Delivery System <MAILER-DAEMON@gw.example.com>\r\n"));
        assert!(text.contains(
            "Subject: =?utf-8?q?Unzustellbar_=2F_Undeliverable=3A_Gr=C3=BC=C3=9Fe?=\r\n"
        ));
        assert!(text.contains("Auto-Submitted: auto-replied\r\n"));
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        let parts = parts(&text);
        assert_eq!(parts.len(), 4, "three parts and the closing delimiter");
        assert!(parts[0].contains("Content-Type: text/plain; charset=utf-8"));
        assert!(parts[0].contains("Empf=C3=A4nger") && parts[0].contains("could not be delivered"));
        assert!(parts[0].contains("550 5.1.1 no such user"));
        assert!(parts[1].contains("Content-Type: message/delivery-status\r\n"));
        for field in [
            "Reporting-MTA: dns; gw.example.com\r\n",
            "Original-Envelope-Id: ENV42\r\n",
            "Arrival-Date: ",
            "Final-Recipient: rfc822; bob@remote.example\r\n",
            "Original-Recipient: rfc822; Bob@Remote.example\r\n",
            "Action: failed\r\n",
            "Status: 5.1.1\r\n",
            "Remote-MTA: dns; mx.remote.example\r\n",
            "Diagnostic-Code: smtp; 550 5.1.1 no such user\r\n",
            "Last-Attempt-Date: ",
        ] {
            assert!(parts[1].contains(field), "missing {field:?}");
        }
        assert!(parts[2].contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(parts[2].contains("From: a@example.com\r\n"));
        assert!(
            !parts[2].contains("secret body"),
            "only the headers come back"
        );
    }

    #[test]
    fn ret_full_returns_the_whole_message() {
        let mut env = envelope(
            ReversePath::Address(addr("alice@example.com")),
            Some(DsnRet::Full),
        );
        env.size = ORIGINAL.len() as u64;
        let rcpt = Recipient::new(addr("bob@remote.example"));
        let failure = Failure {
            recipient: &rcpt,
            reason: EXPIRED,
            reply: None,
            at: 5,
        };
        let dsn =
            build("gw", &env, &[failure], ORIGINAL, false, 9).unwrap_or_else(|| panic!("no DSN"));
        assert_eq!(dsn.envelope.direction, Direction::Outbound);
        let text = String::from_utf8_lossy(&dsn.content).into_owned();
        let parts = parts(&text);
        assert!(parts[1].contains("Status: 4.4.7\r\n"));
        assert!(parts[2].contains("Content-Type: message/rfc822\r\n"));
        assert!(parts[2].contains("secret body"));
        assert!(
            dsn.envelope.body_8bit,
            "the returned original has 8bit headers"
        );
    }

    #[test]
    fn no_dsn_for_null_sender_or_notify_never() {
        let rcpt = Recipient::new(addr("bob@remote.example"));
        let reply = SmtpReply::new(550, None, "no");
        let failure = Failure {
            recipient: &rcpt,
            reason: "x",
            reply: Some(&reply),
            at: 0,
        };
        let env = envelope(ReversePath::Null, None);
        assert!(
            build(
                "gw",
                &env,
                std::slice::from_ref(&failure),
                ORIGINAL,
                false,
                0
            )
            .is_none()
        );

        let mut never = Recipient::new(addr("bob@remote.example"));
        never.notify = Some(NotifyOn {
            never: true,
            ..NotifyOn::default()
        });
        let env = envelope(ReversePath::Address(addr("alice@example.com")), None);
        let failure = Failure {
            recipient: &never,
            ..failure
        };
        assert!(build("gw", &env, &[failure], ORIGINAL, false, 0).is_none());
    }

    #[test]
    fn subject_without_original_subject_and_folded_subject() {
        let env = envelope(ReversePath::Address(addr("alice@example.com")), None);
        let rcpt = Recipient::new(addr("bob@remote.example"));
        let failure = Failure {
            recipient: &rcpt,
            reason: "x",
            reply: None,
            at: 0,
        };
        let dsn = build(
            "gw",
            &env,
            std::slice::from_ref(&failure),
            b"From: a@b\r\n\r\nx",
            false,
            0,
        );
        let text =
            String::from_utf8(dsn.map(|d| d.content).unwrap_or_default()).unwrap_or_default();
        assert!(
            text.contains("Subject: Unzustellbar / Undeliverable\r\n"),
            "{text}"
        );
        let folded = b"Subject: part one\r\n\tpart two\r\nTo: x@y\r\n\r\n";
        let dsn = build("gw", &env, &[failure], folded, false, 0);
        let text =
            String::from_utf8(dsn.map(|d| d.content).unwrap_or_default()).unwrap_or_default();
        assert!(
            text.contains("Subject: Unzustellbar / Undeliverable: part one part two\r\n"),
            "{text}"
        );
    }

    #[test]
    fn quoted_printable_is_7bit_and_short() {
        let qp = quoted_printable(&format!("{} ü\nend ", "x".repeat(100)));
        assert!(qp.is_ascii());
        assert!(qp.split("\r\n").all(|l| l.len() <= 76));
        assert!(qp.contains("=C3=BC"));
        assert!(
            qp.ends_with("\r\nend=20\r\n"),
            "trailing space is encoded: {qp:?}"
        );
    }
}
