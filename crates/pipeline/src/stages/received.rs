//! The `Received:` trace header (RFC 5321 §4.4), the first stage of both
//! directions: every relay must add one, and it is what loop detection and a
//! human reading the headers rely on.
//!
//! The header goes into `EntryState::prepend`, not into the content file:
//! the content stays byte for byte what the client sent (later signature
//! checks need that), and the delivery side writes the prepended lines first.

use std::net::{IpAddr, SocketAddr};

use siegel_types::{Direction, Envelope, Origin};
use time::OffsetDateTime;
use time::macros::format_description;

use siegel_policy::BoxFuture;

use crate::{MessageCtx, Stage, Verdict};

/// Adds `Received: from HELO ([IP]) by HOST (Siegel) with ESMTPS id ID [for <rcpt>]; DATE`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReceivedHeader;

/// RFC 5322 §2.1.1: lines SHOULD stay within 78 characters.
const FOLD_AT: usize = 78;

impl Stage for ReceivedHeader {
    fn name(&self) -> &'static str {
        "received"
    }

    fn applies_to(&self, _: Direction) -> bool {
        true
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(stamp(ctx)))
    }
}

fn stamp(ctx: &mut MessageCtx<'_>) -> Verdict {
    if already_stamped(&ctx.state.prepend, ctx.hostname, ctx.envelope) {
        // A retry after a crash: the first run's line is already there.
        return Verdict::Continue;
    }
    let line = received_line(ctx.envelope, ctx.hostname, ctx.now);
    // The newest trace header goes on top (RFC 5321 §4.4).
    ctx.state.prepend.insert_str(0, &line);
    Verdict::Modified
}

/// Whether `prepend` holds a Received line of ours for this mail. Compares
/// host and queue id, not the whole line: a second run has another time.
fn already_stamped(prepend: &str, hostname: &str, envelope: &Envelope) -> bool {
    let unfolded = prepend.replace("\r\n\t", " ").replace("\r\n ", " ");
    let ours = format!("by {} (Siegel)", clean_token(hostname));
    let id = format!(" id {}", envelope.id);
    unfolded
        .split("\r\n")
        .any(|l| l.starts_with("Received:") && l.contains(&ours) && l.contains(&id))
}

/// The complete header field, folded, ending in CRLF.
pub fn received_line(envelope: &Envelope, hostname: &str, now: u64) -> String {
    let mut tokens: Vec<String> = vec!["Received:".into(), "from".into()];
    let protocol = match &envelope.origin {
        Origin::Smtp {
            peer,
            helo,
            tls,
            auth,
        } => {
            tokens.push(clean_token(helo));
            tokens.push(format!("({})", address_literal(peer)));
            // RFC 3848: S = TLS, A = authenticated.
            Some(match (tls, auth.is_some()) {
                (false, false) => "ESMTP",
                (true, false) => "ESMTPS",
                (false, true) => "ESMTPA",
                (true, true) => "ESMTPSA",
            })
        }
        Origin::Dsn | Origin::Local { .. } => {
            tokens.push("localhost".into());
            None
        }
    };
    tokens.extend(["by".into(), clean_token(hostname), "(Siegel)".into()]);
    if let Some(p) = protocol {
        tokens.extend(["with".into(), p.into()]);
    }
    tokens.extend(["id".into(), envelope.id.to_string()]);
    // Naming one of several recipients would disclose Bcc recipients to the others.
    if let [only] = envelope.recipients.as_slice() {
        tokens.extend(["for".into(), format!("<{}>", only.address)]);
    }
    if let Some(last) = tokens.last_mut() {
        last.push(';');
    }
    tokens.extend(rfc5322_date(now).split(' ').map(str::to_owned));
    fold(&tokens)
}

/// Joins tokens with spaces, breaking before a token that would pass column 78.
fn fold(tokens: &[String]) -> String {
    let mut out = String::new();
    let mut col = 0;
    for t in tokens {
        if col == 0 {
            // first token
        } else if col + 1 + t.len() > FOLD_AT {
            out.push_str("\r\n\t");
            col = 1;
        } else {
            out.push(' ');
            col += 1;
        }
        out.push_str(t);
        col += t.len();
    }
    out.push_str("\r\n");
    out
}

/// A HELO name (client-chosen, so untrusted) reduced to characters that
/// cannot break the header: no CR/LF, no comment or semicolon syntax.
fn clean_token(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || ".-_:[]".contains(*c))
        .take(255)
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 address literal) from a peer `ip:port`.
fn address_literal(peer: &str) -> String {
    let ip = peer
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| peer.parse::<IpAddr>());
    match ip {
        Ok(IpAddr::V4(v4)) => format!("[{v4}]"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("[{v4}]"),
            None => format!("[IPv6:{v6}]"),
        },
        Err(_) => "unknown".into(),
    }
}

/// `Sun, 29 Nov 2026 18:00:00 +0000` (RFC 5322 §3.3), in UTC.
pub fn rfc5322_date(now: u64) -> String {
    let dt = i64::try_from(now)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    dt.format(format_description!(
        "[weekday repr:short], [day padding:none] [month repr:short] [year] [hour]:[minute]:[second] +0000"
    ))
    .unwrap_or_else(|_| "Thu, 1 Jan 1970 00:00:00 +0000".into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use siegel_spool::EntryState;
    use siegel_types::{Address, QueueId, Recipient, ReversePath};

    use super::*;

    /// 2026-11-29 18:00:00 UTC.
    const NOW: u64 = 1_795_975_200;

    fn envelope(rcpts: &[&str], origin: Origin) -> Envelope {
        Envelope {
            id: QueueId::generate(),
            mail_from: ReversePath::Null,
            recipients: rcpts
                .iter()
                .map(|r| Recipient::new(Address::parse(r).unwrap()))
                .collect(),
            direction: Direction::Inbound,
            origin,
            received_at: NOW,
            size: 0,
            body_8bit: false,
            smtputf8: false,
            env_id: None,
            ret: None,
            message_id: None,
        }
    }

    fn smtp(helo: &str, peer: &str, tls: bool, auth: Option<&str>) -> Origin {
        Origin::Smtp {
            peer: peer.into(),
            helo: helo.into(),
            tls,
            auth: auth.map(str::to_owned),
        }
    }

    /// A simple parse of the header back: one field, CRLF-terminated lines
    /// within 78 columns, continuation lines start with whitespace, and the
    /// unfolded value has the RFC 5321 §4.4 clauses in order, then `; date`.
    fn parse_back(line: &str) -> String {
        assert!(line.ends_with("\r\n"));
        let body = &line[..line.len() - 2];
        for (i, l) in body.split("\r\n").enumerate() {
            assert!(l.len() <= FOLD_AT, "line too long: {l:?}");
            assert!(!l.contains('\r') && !l.contains('\n'));
            assert_eq!(i > 0, l.starts_with('\t'), "bad fold: {l:?}");
        }
        let unfolded = body.replace("\r\n\t", " ");
        let value = unfolded.strip_prefix("Received: ").unwrap();
        let (clauses, date) = value.rsplit_once("; ").unwrap();
        assert_eq!(date, rfc5322_date(NOW));
        let mut last = 0;
        for key in ["from ", " by ", " id "] {
            let at = clauses.find(key).unwrap();
            assert!(at >= last);
            last = at;
        }
        unfolded
    }

    #[test]
    fn date_is_rfc5322() {
        assert_eq!(rfc5322_date(NOW), "Sun, 29 Nov 2026 18:00:00 +0000");
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
    }

    #[test]
    fn single_recipient_tls_line_is_exact() {
        let env = envelope(
            &["a@example.com"],
            smtp("client.example.org", "192.0.2.1:4000", true, None),
        );
        let line = received_line(&env, "mx.siegel.test", NOW);
        let unfolded = parse_back(&line);
        assert_eq!(
            unfolded,
            format!(
                "Received: from client.example.org ([192.0.2.1]) by mx.siegel.test (Siegel) with ESMTPS id {} for <a@example.com>; Sun, 29 Nov 2026 18:00:00 +0000",
                env.id
            )
        );
        assert!(line.contains("\r\n\t"), "a line this long must be folded");
    }

    #[test]
    fn protocol_names_follow_rfc3848() {
        let cases = [
            (false, None, "ESMTP;"),
            (true, None, "ESMTPS"),
            (false, Some("u"), "ESMTPA"),
            (true, Some("u"), "ESMTPSA"),
        ];
        for (tls, auth, want) in cases {
            let env = envelope(
                &["a@example.com", "b@example.com"],
                smtp("h", "192.0.2.1:1", tls, auth),
            );
            let unfolded = parse_back(&received_line(&env, "mx", NOW));
            assert!(
                unfolded.contains(&format!("with {}", want.trim_end_matches(';'))),
                "{unfolded}"
            );
        }
    }

    #[test]
    fn several_recipients_are_never_named() {
        let env = envelope(
            &["a@example.com", "b@example.com"],
            smtp("h", "192.0.2.1:1", true, Some("u")),
        );
        let unfolded = parse_back(&received_line(&env, "mx", NOW));
        assert!(unfolded.contains("with ESMTPSA"));
        assert!(!unfolded.contains(" for "));
        assert!(!unfolded.contains("example.com"));
    }

    #[test]
    fn hostile_helo_cannot_inject_headers() {
        let helo = format!("evil\r\nBcc: victim@example.com;{}", "x".repeat(400));
        let env = envelope(
            &["a@example.com"],
            smtp(&helo, "[2001:db8::1]:25", false, None),
        );
        let line = received_line(&env, "mx", NOW);
        assert_eq!(
            line.matches("\r\n").count(),
            line.matches("\r\n\t").count() + 1
        );
        assert!(
            !line.contains("\r\nBcc:") && line.contains("evilBcc:victim"),
            "{line}"
        );
        let unfolded = line.replace("\r\n\t", " ");
        assert!(unfolded.contains("([IPv6:2001:db8::1])"), "{unfolded}");
    }

    #[test]
    fn gateway_made_mail_is_from_localhost() {
        let env = envelope(&["a@example.com"], Origin::Dsn);
        let unfolded = parse_back(&received_line(&env, "mx", NOW));
        assert!(
            unfolded.starts_with("Received: from localhost by mx (Siegel) id "),
            "{unfolded}"
        );
        assert!(!unfolded.contains(" with "));
    }

    #[test]
    fn stage_is_idempotent_after_a_crash() {
        let env = envelope(&["a@example.com"], smtp("h", "192.0.2.1:1", false, None));
        let mut state = EntryState::new(1);
        state.prepend = "X-Other: 1\r\n".into();
        let run = |state: &mut EntryState, now| {
            let mut ctx = MessageCtx {
                envelope: &env,
                state,
                content: &mut crate::Content::from_bytes(Vec::new()),
                hostname: "mx.siegel.test",
                now,
                keys: &[],
                policy: &mut crate::PolicyState::default(),
                findings: &mut crate::Findings::default(),
            };
            stamp(&mut ctx)
        };
        assert_eq!(run(&mut state, NOW), Verdict::Modified);
        assert!(state.prepend.starts_with("Received: "));
        assert!(state.prepend.ends_with("X-Other: 1\r\n"));
        let once = state.prepend.clone();
        assert_eq!(run(&mut state, NOW + 60), Verdict::Continue);
        assert_eq!(state.prepend, once);
        // Another mail's line is not ours.
        let other = envelope(&["a@example.com"], Origin::Dsn);
        assert!(!already_stamped(&once, "mx.siegel.test", &other));
    }
}
