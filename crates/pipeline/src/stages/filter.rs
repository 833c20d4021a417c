//! Virus and spam scanning through clamd and spamd ([`siegel_filter`]).
//!
//! The first content stage of both directions (PRODUCT.md: inbound "AV/AS →
//! decrypt → …", outbound "AV → classify → …"), after the removal of
//! incoming `X-Siegel-*` fields so that a sender cannot forge
//! `X-Siegel-Virus: clean`. Inbound, a second virus scan runs on what the
//! decrypt stage opened ([`Scan::after_decrypt`]): malware inside an
//! encrypted mail is delivered decrypted by us, so it must be scanned by us.
//!
//! The mail is streamed to the daemons from the spool (never loaded whole).
//! The verdict maps onto the pipeline's: quarantine → held (a held entry
//! with a `quarantine: ` note), reject → bounce with the bilingual reason,
//! a scanner that cannot answer → the mail waits (unless `fail_open`).
//! Inbound the results are stamped into the mail (`X-Siegel-Virus`,
//! `X-Siegel-Spam`) by the stamp stage; outbound mail does not tell the
//! world how it was scanned. A mail already scanned while the sending
//! server waited ([`siegel_filter::at_smtp`]) is not scanned again.

use std::sync::Arc;

use siegel_filter::at_smtp::{self, Recorded};
use siegel_filter::quarantine::was_released;
use siegel_filter::{Action, Filter};
use siegel_policy::BoxFuture;
use siegel_types::Direction;

use crate::{EncryptionFinding, MessageCtx, Stage, Verdict};

/// A scan by the configured daemons.
pub struct Scan {
    filter: Arc<Filter>,
    decrypted_only: bool,
}

impl Scan {
    /// The scan of the mail as it came.
    pub fn new(filter: Arc<Filter>) -> Self {
        Self {
            filter,
            decrypted_only: false,
        }
    }

    /// The virus scan of a mail the decrypt stage opened; it does nothing
    /// for a mail that was not decrypted.
    pub fn after_decrypt(filter: &Filter) -> Self {
        Self {
            filter: Arc::new(filter.virus_only()),
            decrypted_only: true,
        }
    }

    async fn scan(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        let direction = ctx.envelope.direction;
        if self.decrypted_only
            && !matches!(
                ctx.findings.encryption,
                Some(EncryptionFinding::Decrypted { .. })
            )
        {
            return Verdict::Continue;
        }
        if !self.decrypted_only {
            // Scanned while the sender waited (its header lines are in the
            // entry's prepend already): carry out that verdict.
            match at_smtp::recorded(ctx.state.note.as_deref()) {
                Some(Recorded::Deliver) => return Verdict::Continue,
                Some(Recorded::Quarantine(note)) => return Verdict::Hold(note),
                None => {}
            }
        }
        let reader = match ctx.content.reader().await {
            Ok(r) => r,
            Err(e) => return Verdict::TempFail(format!("filter: {e}")),
        };
        let verdict = match self.filter.scan(direction, reader, ctx.content.len()).await {
            Ok(v) => v,
            Err(e) => return Verdict::TempFail(format!("filter: reading the mail: {e}")),
        };
        let verdict = if was_released(ctx.state) {
            verdict.after_release()
        } else {
            verdict
        };
        tracing::info!(
            target: "siegel::filter", queue_id = %ctx.envelope.id, ?direction,
            decrypted = self.decrypted_only, summary = %verdict.summary(), "scanned"
        );
        if direction == Direction::Inbound {
            for h in &verdict.headers {
                // After decryption the second scan's virus result is the
                // one that counts: it replaces the first.
                ctx.findings.stamps.retain(|s| {
                    !s.split(':')
                        .next()
                        .is_some_and(|n| n.eq_ignore_ascii_case(h.name))
                });
                ctx.findings.stamps.push(format!("{}: {}", h.name, h.value));
            }
        }
        match verdict.action {
            Action::Deliver => Verdict::Modified,
            Action::Quarantine { note } => Verdict::Hold(note),
            // After the 250 an inbound mail is never bounced for its
            // content: the sender address of a virus or spam mail is
            // usually forged, and the bounce would hit an innocent party
            // (backscatter). It goes to the quarantine instead; refusing
            // it is the scan at SMTP time's job.
            Action::Reject { reason } if direction == Direction::Inbound => Verdict::Hold(format!(
                "{}{} (not bounced after acceptance)",
                siegel_filter::quarantine::NOTE_PREFIX,
                reason.en
            )),
            Action::Reject { reason } => Verdict::Reject(reason.one_line()),
            Action::TempFail { reason } => Verdict::TempFail(reason),
        }
    }
}

impl Stage for Scan {
    fn name(&self) -> &'static str {
        if self.decrypted_only {
            "filter-decrypted"
        } else {
            "filter"
        }
    }

    fn applies_to(&self, d: Direction) -> bool {
        self.filter.scans(d) && (!self.decrypted_only || d == Direction::Inbound)
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.scan(ctx))
    }
}
