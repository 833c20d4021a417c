//! Inbound: keeps the keys that verified signatures vouched for, so the
//! next mail to their owner can be encrypted (PRODUCT.md: "recipients'
//! keys are harvested from what they send").
//!
//! Only what the verify stage vouched for is stored: a certificate merely
//! attached to a mail, or one of a broken signature, is never learned.
//! Harvesting is best effort: a store error is logged and the mail goes on.

use std::sync::Arc;

use openssl::x509::X509;
use siegel_policy::BoxFuture;
use siegel_types::Direction;

use crate::inbound::Vouched;
use crate::smime::{Mpki, header_value};
use crate::{MessageCtx, Stage, Verdict};

/// Stores vouched-for S/MIME certificates (source "harvested").
pub struct Harvest {
    smime: Arc<Mpki>,
}

impl Harvest {
    pub fn new(smime: Arc<Mpki>) -> Self {
        Self { smime }
    }

    async fn harvest(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        if ctx.findings.vouched.is_empty() {
            return Verdict::Continue;
        }
        let mid = ctx
            .envelope
            .message_id
            .clone()
            .or_else(|| header_value(ctx.content.header(), "message-id"))
            .unwrap_or_else(|| "<unknown>".to_owned());
        for v in std::mem::take(&mut ctx.findings.vouched) {
            match v {
                Vouched::SmimeCertificate { address, der } => {
                    let Ok(cert) = X509::from_der(&der) else {
                        continue;
                    };
                    if let Err(error) = self.smime.harvest(&address, &cert, &mid).await {
                        tracing::warn!(target: "siegel::mpki", %address, %error, "cannot harvest the certificate");
                    }
                }
            }
        }
        Verdict::Continue
    }
}

impl Stage for Harvest {
    fn name(&self) -> &'static str {
        "harvest"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Inbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.harvest(ctx))
    }
}
