//! Inbound: opens mail encrypted to one of our users or to our domain key.
//!
//! The decrypted mail replaces the content; it is *unverified* until the
//! verify stage has checked its signature ([`crate::Findings`]). A mail
//! that cannot be opened is delivered as it came, with a stamp that says
//! why, never dropped; a store that does not answer makes the mail wait.

use std::sync::Arc;

use siegel_policy::BoxFuture;
use siegel_types::{Address, Direction};

use crate::smime::{self, Mpki};
use crate::{EncryptionFinding, MessageCtx, Stage, Verdict};

/// Decrypts inbound S/MIME (to a user's certificate or our domain certificate).
pub struct Decrypt {
    smime: Arc<Mpki>,
}

impl Decrypt {
    pub fn new(smime: Arc<Mpki>) -> Self {
        Self { smime }
    }

    async fn decrypt(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        if !smime::is_encrypted(ctx.content.header()) {
            return Verdict::Continue;
        }
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
        match self.smime.decrypt_inbound(&rcpts, &whole).await {
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
