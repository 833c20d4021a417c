//! `siegel track <Message-ID | queue id>`: per recipient, the method, the
//! key, why this method and not a higher one, and the delivery result, from
//! the tracking records the pipeline and delivery write.

use std::collections::BTreeMap;
use std::process::ExitCode;

use siegel_config::Config;
use siegel_pipeline::policy::{QUEUED, QUEUED_AS, REASON_SEP};
use siegel_store::{Store, TrackingRecord};
use siegel_types::QueueId;

/// The `method` values of delivery results (see `serve::forward_delivery_events`).
pub const DELIVERY_RESULTS: [&str; 3] = ["delivered", "deferred", "bounced"];

pub fn run(config: &Config, what: &str) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let records = runtime.block_on(async {
        let store = crate::db_cmd::open(config).await?;
        collect(&store, what).await
    })?;
    if records.is_empty() {
        println!("no tracking records for {what}");
        return Ok(ExitCode::FAILURE);
    }
    print!("{}", render(&records));
    Ok(ExitCode::SUCCESS)
}

/// The records of a mail: by queue id (following its copies), else by
/// Message-ID (which every copy keeps).
async fn collect(store: &Store, what: &str) -> anyhow::Result<Vec<TrackingRecord>> {
    let tracking = store.tracking();
    let mut out = Vec::new();
    if let Ok(id) = what.parse::<QueueId>() {
        let mut queue = vec![id];
        while let Some(id) = queue.pop() {
            let records = tracking.for_queue_id(&id).await?;
            for r in &records {
                if r.event.method == QUEUED
                    && let Some(copy) = r.event.reason.strip_prefix(QUEUED_AS)
                    && let Ok(copy) = copy.parse::<QueueId>()
                    && copy != id
                    && !out
                        .iter()
                        .any(|o: &TrackingRecord| o.event.queue_id == copy)
                {
                    queue.push(copy);
                }
            }
            out.extend(records);
        }
    }
    if out.is_empty() {
        out = tracking.for_message_id(what).await?;
    }
    out.sort_by_key(|r| r.id);
    out.dedup_by_key(|r| r.id);
    Ok(out)
}

/// The text `siegel track` prints.
pub fn render(records: &[TrackingRecord]) -> String {
    let mut s = String::new();
    if let Some(first) = records.first() {
        let e = &first.event;
        s.push_str(&format!(
            "Message-ID: {}\nqueue id:   {} (node {})\n",
            e.message_id.as_deref().unwrap_or("-"),
            e.queue_id,
            e.node
        ));
    }
    let mut by_rcpt: BTreeMap<&str, Vec<&TrackingRecord>> = BTreeMap::new();
    for r in records {
        by_rcpt
            .entry(r.event.recipient.as_str())
            .or_default()
            .push(r);
    }
    for (rcpt, events) in by_rcpt {
        s.push_str(&format!("\n{rcpt}\n"));
        let mut refused = false;
        for r in &events {
            let e = &r.event;
            let m = e.method.as_str();
            if m == QUEUED {
                s.push_str(&format!("  copy:       {}\n", e.reason));
            } else if DELIVERY_RESULTS.contains(&m) {
                s.push_str(&format!("  delivery:   {m}: {}\n", e.reason));
            } else {
                refused |= m == "refused";
                s.push_str(&format!("  method:     {m}\n"));
                s.push_str(&format!(
                    "  key:        {}\n",
                    e.key_fingerprint.as_deref().unwrap_or("-")
                ));
                let mut parts = e.reason.split(REASON_SEP);
                s.push_str(&format!("  why:        {}\n", parts.next().unwrap_or("")));
                for (i, p) in parts.enumerate() {
                    let label = if i == 0 { "not higher:" } else { "           " };
                    s.push_str(&format!(
                        "  {label} {}\n",
                        p.strip_prefix("not ").unwrap_or(p)
                    ));
                }
            }
        }
        let delivered = events
            .iter()
            .any(|r| DELIVERY_RESULTS.contains(&r.event.method.as_str()));
        if refused && !delivered {
            s.push_str("  delivery:   bounced by policy (DSN to the sender)\n");
        } else if !delivered && events.iter().any(|r| r.event.method == "held") {
            s.push_str("  delivery:   held in the queue\n");
        } else if !delivered {
            s.push_str("  delivery:   no result yet\n");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use siegel_store::TrackingEvent;
    use siegel_types::Address;

    use super::*;

    fn rec(id: i64, q: &QueueId, rcpt: &str, method: &str, reason: &str) -> TrackingRecord {
        TrackingRecord {
            id,
            event: TrackingEvent {
                message_id: Some("<m@x>".into()),
                queue_id: q.clone(),
                recipient: Address::parse(rcpt).unwrap(),
                method: method.into(),
                key_fingerprint: None,
                reason: reason.into(),
                at: 0,
                node: "mx".into(),
            },
        }
    }

    #[test]
    fn render_shows_method_why_not_higher_and_delivery() {
        let q = QueueId::generate();
        let c = QueueId::generate();
        let text = render(&[
            rec(
                1,
                &q,
                "a@x.example",
                "tls_only",
                "no key | not S/MIME: none known | not GINA: off",
            ),
            rec(2, &q, "b@y.example", "refused", "no method"),
            rec(3, &q, "a@x.example", QUEUED, &format!("{QUEUED_AS}{c}")),
            rec(4, &c, "a@x.example", "delivered", "127.0.0.1: 250 ok"),
        ]);
        assert!(text.contains("Message-ID: <m@x>"), "{text}");
        assert!(text.contains("a@x.example\n  method:     tls_only\n  key:        -\n  why:        no key\n  not higher: S/MIME: none known\n              GINA: off\n"), "{text}");
        assert!(
            text.contains(&format!("  copy:       queued as {c}\n")),
            "{text}"
        );
        assert!(
            text.contains("  delivery:   delivered: 127.0.0.1: 250 ok\n"),
            "{text}"
        );
        assert!(
            text.contains("b@y.example\n  method:     refused\n"),
            "{text}"
        );
        assert!(
            text.contains("  delivery:   bounced by policy (DSN to the sender)\n"),
            "{text}"
        );
    }
}
