//! Inbound: opens mail encrypted to one of our users or to our domain key.
//!
//! The decrypted mail replaces the content; it is *unverified* until the
//! verify stage has checked its signature ([`crate::Findings`]). A mail
//! that cannot be opened is delivered as it came, with a stamp that says
//! why, never dropped; a store that does not answer makes the mail wait.

use std::sync::Arc;

use siegel_openpgp::{InvalidReason, SignatureStatus};
use siegel_policy::BoxFuture;
use siegel_types::{Address, Direction};

use crate::pgp::{self, PgpKeys};
use crate::smime::{self, Mpki, header_address};
use crate::{EncryptionFinding, MessageCtx, Stage, Verdict};

/// Largest mail searched for inline OpenPGP (an armoured block in a text
/// part has no header that announces it).
const INLINE_SCAN_LIMIT: u64 = 16 << 20;

/// Decrypts inbound S/MIME (to a user's certificate or our domain
/// certificate) and OpenPGP (PGP/MIME and inline, to a user's key or our
/// domain key).
pub struct Decrypt {
    smime: Option<Arc<Mpki>>,
    pgp: Option<Arc<PgpKeys>>,
}

impl Decrypt {
    pub fn new(smime: Option<Arc<Mpki>>, pgp: Option<Arc<PgpKeys>>) -> Self {
        Self { smime, pgp }
    }

    async fn decrypt(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        if smime::is_encrypted(ctx.content.header()) {
            if let Some(mpki) = &self.smime {
                return self.decrypt_smime(mpki, ctx).await;
            }
            return Verdict::Continue;
        }
        if let Some(keys) = &self.pgp {
            return decrypt_pgp(keys, ctx).await;
        }
        Verdict::Continue
    }

    async fn decrypt_smime(&self, mpki: &Mpki, ctx: &mut MessageCtx<'_>) -> Verdict {
        let whole = match ctx.content.whole().await {
            Ok(w) => w,
            Err(crate::ContentError::TooLarge { .. }) => {
                ctx.findings.encryption = Some(EncryptionFinding::Failed {
                    reason: "too-large",
                });
                return Verdict::Modified;
            }
            Err(crate::ContentError::Pipeline(e)) => return Verdict::TempFail(e.to_string()),
        };
        let rcpts: Vec<Address> = ctx
            .envelope
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .collect();
        match mpki.decrypt_inbound(&rcpts, &whole).await {
            Ok(Ok((plain, how))) => {
                ctx.content.replace(plain);
                ctx.findings.encryption = Some(EncryptionFinding::Decrypted { how });
            }
            Ok(Err(reason)) => {
                tracing::info!(target: "siegel::mpki", queue_id = %ctx.envelope.id, reason, "cannot decrypt the S/MIME mail");
                ctx.findings.encryption = Some(EncryptionFinding::Failed { reason });
            }
            Err(e) => return Verdict::TempFail(format!("S/MIME decryption: {e}")),
        }
        Verdict::Modified
    }
}

/// Whether the mail may carry inline OpenPGP worth reading whole: text or
/// multipart, not too large.
fn may_be_inline(ctx: &MessageCtx<'_>) -> bool {
    let ct = smime::header_value(ctx.content.header(), "content-type")
        .unwrap_or_default()
        .to_ascii_lowercase();
    ctx.content.len() <= INLINE_SCAN_LIMIT
        && (ct.is_empty() || ct.starts_with("text/") || ct.starts_with("multipart/"))
}

/// OpenPGP: opens PGP/MIME and inline-encrypted mail and keeps the
/// signature verdict found inside for the verify stage.
async fn decrypt_pgp(keys: &PgpKeys, ctx: &mut MessageCtx<'_>) -> Verdict {
    let announced = pgp::is_pgp_mime_encrypted(ctx.content.header());
    // Inside an S/MIME-signed mail, an armoured block is quoted text: opening
    // it would break the S/MIME signature the verify stage checks.
    if !announced && (smime::is_smime(ctx.content.header()) || !may_be_inline(ctx)) {
        return Verdict::Continue;
    }
    let whole = match ctx.content.whole().await {
        Ok(w) => w,
        Err(crate::ContentError::TooLarge { .. }) if announced => {
            ctx.findings.encryption = Some(EncryptionFinding::Failed {
                reason: "too-large",
            });
            return Verdict::Modified;
        }
        Err(crate::ContentError::TooLarge { .. }) => return Verdict::Continue,
        Err(crate::ContentError::Pipeline(e)) => return Verdict::TempFail(e.to_string()),
    };
    if !announced && !pgp::has_inline_encrypted(&whole) {
        return Verdict::Continue;
    }
    let rcpts: Vec<Address> = ctx
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let from = header_address(&whole, "from");
    let now = i64::try_from(ctx.now).unwrap_or(i64::MAX);
    let offered = crate::stages::harvest::offered_keys(&whole, from.as_ref(), now);
    let mut result = keys
        .open_inbound(&rcpts, from.as_ref(), &offered, &whole, now)
        .await;
    // The signer's key may travel inside the encryption (an attached key):
    // then the signature can only be checked with what decryption revealed.
    if let Ok(Ok((opened, _))) = &result
        && matches!(
            opened.signature,
            SignatureStatus::Invalid {
                reason: InvalidReason::UnknownKey { .. }
            }
        )
    {
        let inside = crate::stages::harvest::offered_keys(&opened.message, from.as_ref(), now);
        if !inside.is_empty() {
            result = keys
                .open_inbound(&rcpts, from.as_ref(), &inside, &whole, now)
                .await;
        }
    }
    match result {
        Ok(Ok((opened, how))) if pgp::was_encrypted(&opened) => {
            ctx.findings.pgp_signature = Some(opened.signature);
            ctx.content.replace(opened.message);
            ctx.findings.encryption = Some(EncryptionFinding::Decrypted { how });
        }
        // An armour marker in a text that holds no OpenPGP message after all,
        // or armour-like text that is no OpenPGP data (quoted, garbled): a
        // plain mail, not a broken encrypted one.
        Ok(Ok(_)) => return Verdict::Continue,
        Ok(Err("malformed")) if !announced => return Verdict::Continue,
        Ok(Err(reason)) => {
            tracing::info!(target: "siegel::pgp", queue_id = %ctx.envelope.id, reason, "cannot decrypt the OpenPGP mail");
            ctx.findings.encryption = Some(EncryptionFinding::Failed { reason });
        }
        Err(e) => return Verdict::TempFail(format!("OpenPGP decryption: {e}")),
    }
    Verdict::Modified
}

impl Stage for Decrypt {
    fn name(&self) -> &'static str {
        "decrypt"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Inbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.decrypt(ctx))
    }
}
