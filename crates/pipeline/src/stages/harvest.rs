//! Inbound: keeps the keys that verified signatures vouched for, so the
//! next mail to their owner can be encrypted (PRODUCT.md: "recipients'
//! keys are harvested from what they send").
//!
//! Only what the verify stage vouched for is stored: a certificate merely
//! attached to a mail, or one of a broken signature, is never learned.
//! Harvesting is best effort: a store error is logged and the mail goes on.
//!
//! OpenPGP keys are offered differently: an `Autocrypt:` header or an
//! attached `application/pgp-keys` part carries the sender's key whether
//! the mail is signed or not. Such a key is taken for the `From` address
//! only, and a change of a known key only when a signature of the known
//! key confirms it ([`crate::pgp`]).

use std::sync::Arc;

use openssl::x509::X509;
use siegel_policy::BoxFuture;
use siegel_types::{Address, Direction};

use crate::inbound::Vouched;
use crate::pgp::PgpKeys;
use crate::smime::{Mpki, header_address, header_value};
use crate::{MessageCtx, Stage, Verdict};

/// The usable keys a mail offers for its `From` address (Autocrypt header,
/// attached keys): for checking its own signature and for harvesting.
pub fn offered_keys(message: &[u8], from: Option<&Address>, now: i64) -> Vec<siegel_openpgp::Cert> {
    let Some(from) = from else {
        return Vec::new();
    };
    if !offers_keys(message) {
        return Vec::new();
    }
    PgpKeys::engine(now)
        .harvest(message)
        .into_iter()
        .filter(|h| h.key.validity.is_ok() && h.key.addresses.iter().any(|a| a == from))
        .map(|h| h.key.cert)
        .collect()
}

/// A cheap test before parsing: an Autocrypt header or an attached key.
fn offers_keys(message: &[u8]) -> bool {
    let has = |needle: &[u8]| {
        message
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    has(b"\nautocrypt:") || has(b"application/pgp-keys")
}

/// Stores vouched-for S/MIME certificates (source "harvested") and the
/// OpenPGP keys a correspondent sent.
pub struct Harvest {
    smime: Option<Arc<Mpki>>,
    pgp: Option<Arc<PgpKeys>>,
}

impl Harvest {
    pub fn new(smime: Option<Arc<Mpki>>, pgp: Option<Arc<PgpKeys>>) -> Self {
        Self { smime, pgp }
    }

    async fn harvest(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        if let Some(keys) = &self.pgp {
            self.harvest_pgp(keys, ctx).await;
        }
        if ctx.findings.vouched.is_empty() {
            return Verdict::Continue;
        }
        let Some(mpki) = &self.smime else {
            return Verdict::Continue;
        };
        let mid = ctx
            .envelope
            .message_id
            .clone()
            .or_else(|| header_value(ctx.content.header(), "message-id"))
            .unwrap_or_else(|| "<unknown>".to_owned());
        for v in std::mem::take(&mut ctx.findings.vouched) {
            match v {
                Vouched::SmimeCertificate { address, der, gcm } => {
                    let Ok(cert) = X509::from_der(&der) else {
                        continue;
                    };
                    if let Err(error) = mpki.harvest(&address, &cert, &mid, gcm).await {
                        tracing::warn!(target: "siegel::mpki", %address, %error, "cannot harvest the certificate");
                    }
                }
            }
        }
        Verdict::Continue
    }
}

impl Harvest {
    async fn harvest_pgp(&self, keys: &PgpKeys, ctx: &mut MessageCtx<'_>) {
        if ctx.content.len() > 16 << 20 {
            return;
        }
        let Ok(whole) = ctx.content.whole().await else {
            return;
        };
        if !offers_keys(&whole) {
            return;
        }
        let Some(from) = header_address(&whole, "from") else {
            return;
        };
        let mid = ctx
            .envelope
            .message_id
            .clone()
            .or_else(|| header_value(&whole, "message-id"))
            .unwrap_or_else(|| "<unknown>".to_owned());
        let now = i64::try_from(ctx.now).unwrap_or(i64::MAX);
        let signer = ctx.findings.pgp_signer.clone();
        for h in PgpKeys::engine(now).harvest(&whole) {
            if !h.key.addresses.contains(&from) {
                continue;
            }
            match keys
                .harvest(&from, &h.key, &h.source, &mid, signer.as_deref(), now)
                .await
            {
                Ok(outcome) => {
                    tracing::debug!(target: "siegel::pgp", address = %from, ?outcome, "offered OpenPGP key");
                }
                Err(error) => {
                    tracing::warn!(target: "siegel::pgp", address = %from, %error, "cannot harvest the OpenPGP key");
                }
            }
        }
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
