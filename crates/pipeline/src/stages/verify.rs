//! Inbound: checks the signature of the (decrypted) mail.
//!
//! A valid signature counts only when its certificate names the `From`
//! address: otherwise anyone with any certificate could sign as anyone.
//! An opaque signature hides the content inside the CMS structure, so the
//! signed entity is delivered readable instead (the stamp says it was
//! signed). The result is a finding for the harvest and stamp stages.

use std::sync::Arc;

use siegel_crypto::smime::Verification;
use siegel_policy::BoxFuture;
use siegel_types::Direction;

use crate::inbound::Vouched;
use crate::smime::{self, Mpki, header_address};
use crate::{MessageCtx, SignatureFinding, Stage, Verdict};

/// Verifies S/MIME signatures (detached and opaque).
pub struct Verify {
    smime: Arc<Mpki>,
}

impl Verify {
    pub fn new(smime: Arc<Mpki>) -> Self {
        Self { smime }
    }

    async fn verify(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        if !smime::is_smime(ctx.content.header()) || smime::is_encrypted(ctx.content.header()) {
            return Verdict::Continue;
        }
        let whole = match ctx.content.whole().await {
            Ok(w) => w,
            Err(crate::ContentError::TooLarge { .. }) => {
                ctx.findings.signature = Some(SignatureFinding::Invalid {
                    reason: "too-large".to_owned(),
                });
                return Verdict::Modified;
            }
            Err(crate::ContentError::Pipeline(e)) => return Verdict::TempFail(e.to_string()),
        };
        let at = smime::system_time(ctx.now);
        let verification = match self.smime.verify_inbound(&whole, at).await {
            Ok(v) => v,
            Err(e) => return Verdict::TempFail(format!("S/MIME verification: {e}")),
        };
        match verification {
            Verification::NotSigned => Verdict::Continue,
            Verification::Valid {
                signers,
                certificate,
                content,
            } => {
                if smime::is_opaque_signed(&whole) {
                    ctx.content.replace(smime::unwrap_opaque(&whole, &content));
                }
                let from = header_address(&whole, "from");
                let matching = from.filter(|f| {
                    signers
                        .iter()
                        .any(|s| s.as_str().eq_ignore_ascii_case(f.as_str()))
                });
                ctx.findings.signature = Some(match matching {
                    Some(f) => {
                        if let Ok(der) = certificate.to_der() {
                            ctx.findings.vouched.push(Vouched::SmimeCertificate {
                                address: f.clone(),
                                der,
                            });
                        }
                        SignatureFinding::Valid { signer: f }
                    }
                    None => SignatureFinding::Invalid {
                        reason: "from-mismatch".to_owned(),
                    },
                });
                Verdict::Modified
            }
            Verification::Invalid { reason } => {
                tracing::info!(target: "siegel::mpki", queue_id = %ctx.envelope.id, %reason, "invalid S/MIME signature");
                ctx.findings.signature = Some(SignatureFinding::Invalid {
                    reason: reason.token().to_owned(),
                });
                Verdict::Modified
            }
        }
    }
}

impl Stage for Verify {
    fn name(&self) -> &'static str {
        "verify"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Inbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.verify(ctx))
    }
}
