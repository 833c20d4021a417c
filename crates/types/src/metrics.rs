//! Mail counters shared by the SMTP server, the delivery side and `/metrics`.
//! Plain atomics so that the hot path pays one relaxed increment.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide counters, exported in Prometheus format by the admin listener.
#[derive(Debug, Default)]
pub struct Counters {
    /// Mails acknowledged with 250 after the durable commit.
    pub accepted: AtomicU64,
    /// Mails refused during the SMTP dialogue (relay denied, too big, …).
    pub rejected: AtomicU64,
    /// Recipient deliveries that got a 2xx from the next hop.
    pub delivered: AtomicU64,
    /// Recipient delivery attempts that failed temporarily.
    pub deferred: AtomicU64,
    /// Recipients given up on (5xx or expired): a DSN was generated.
    pub bounced: AtomicU64,
    /// Mails currently in the spool.
    pub queue_size: AtomicI64,
    /// SMTP sessions currently open.
    pub sessions: AtomicI64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn gauge_add(gauge: &AtomicI64, n: i64) {
        gauge.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters in Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "siegel_mails_accepted_total",
                "Mails accepted after the durable commit.",
                self.accepted.load(Ordering::Relaxed),
            ),
            (
                "siegel_mails_rejected_total",
                "Mails refused during the SMTP dialogue.",
                self.rejected.load(Ordering::Relaxed),
            ),
            (
                "siegel_recipients_delivered_total",
                "Recipient deliveries accepted by the next hop.",
                self.delivered.load(Ordering::Relaxed),
            ),
            (
                "siegel_recipients_deferred_total",
                "Recipient delivery attempts that failed temporarily.",
                self.deferred.load(Ordering::Relaxed),
            ),
            (
                "siegel_recipients_bounced_total",
                "Recipients that bounced (permanent failure or expiry).",
                self.bounced.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        let gauges = [
            (
                "siegel_queue_size",
                "Mails in the spool.",
                self.queue_size.load(Ordering::Relaxed),
            ),
            (
                "siegel_smtp_sessions",
                "Open SMTP sessions.",
                self.sessions.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out
    }
}
