//! Inbound: checks the signature of the (decrypted) mail.
//!
//! A valid signature counts only when its certificate names the `From`
//! address: otherwise anyone with any certificate could sign as anyone.
//! An opaque signature hides the content inside the CMS structure, so the
//! signed entity is delivered readable instead (the stamp says it was
//! signed). The result is a finding for the harvest and stamp stages.

use std::sync::Arc;

use siegel_crypto::smime::{ContentCipher, SignatureCheck};
use siegel_openpgp::{InvalidReason, SignatureStatus};
use siegel_policy::BoxFuture;
use siegel_types::Direction;

use crate::inbound::Vouched;
use crate::pgp::{self, PgpKeys};
use crate::smime::{self, Mpki, header_address};
use crate::{MessageCtx, SignatureFinding, Stage, Verdict};

/// Verifies S/MIME signatures (detached and opaque) and OpenPGP
/// signatures (PGP/MIME, inline clear-signed, signed inside encryption).
pub struct Verify {
    smime: Option<Arc<Mpki>>,
    pgp: Option<Arc<PgpKeys>>,
}

impl Verify {
    pub fn new(smime: Option<Arc<Mpki>>, pgp: Option<Arc<PgpKeys>>) -> Self {
        Self { smime, pgp }
    }

    async fn verify(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        if let Some(keys) = &self.pgp
            && (ctx.findings.pgp_signature.is_some()
                || pgp::is_pgp_mime_signed(ctx.content.header())
                || ctx.content.len() <= 16 << 20)
        {
            match verify_pgp(keys, ctx).await {
                Verdict::Continue => {}
                other => return other,
            }
        }
        let Some(mpki) = &self.smime else {
            return Verdict::Continue;
        };
        if ctx.findings.signature.is_some()
            || !smime::is_smime(ctx.content.header())
            || smime::is_encrypted(ctx.content.header())
        {
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
        let verification = match mpki.verify_inbound(&whole, at).await {
            Ok(v) => v,
            Err(e) => return Verdict::TempFail(format!("S/MIME verification: {e}")),
        };
        match verification {
            SignatureCheck::NotSigned => Verdict::Continue,
            SignatureCheck::Valid(v) => {
                if smime::is_opaque_signed(&whole) {
                    ctx.content
                        .replace(smime::unwrap_opaque(&whole, &v.content));
                }
                let from = header_address(&whole, "from");
                let matching = from.filter(|f| {
                    v.signers
                        .iter()
                        .any(|s| s.as_str().eq_ignore_ascii_case(f.as_str()))
                });
                ctx.findings.signature = Some(match matching {
                    Some(f) => {
                        if let Ok(der) = v.certificate.to_der() {
                            ctx.findings.vouched.push(Vouched::SmimeCertificate {
                                address: f.clone(),
                                der,
                                gcm: v.capabilities.supports(ContentCipher::Aes256Gcm),
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
            SignatureCheck::Invalid { reason } => {
                tracing::info!(target: "siegel::mpki", queue_id = %ctx.envelope.id, %reason, "invalid S/MIME signature");
                ctx.findings.signature = Some(SignatureFinding::Invalid {
                    reason: reason.token().to_owned(),
                });
                Verdict::Modified
            }
        }
    }
}

/// The stamp token of an OpenPGP signature that does not hold.
fn pgp_reason(reason: &InvalidReason) -> &'static str {
    match reason {
        InvalidReason::UnknownKey { .. } => "unknown-key",
        InvalidReason::BadSignature(_) => "bad-signature",
        InvalidReason::BadKey(_) => "bad-key",
        InvalidReason::Malformed(_) => "malformed",
    }
}

/// OpenPGP: the verdict the decrypt stage found inside an encrypted mail,
/// or a check of a PGP/MIME signed or clear-signed mail now. `Continue`:
/// no OpenPGP signature here.
async fn verify_pgp(keys: &PgpKeys, ctx: &mut MessageCtx<'_>) -> Verdict {
    let header = ctx.content.header();
    let announced = pgp::is_pgp_mime_signed(header);
    // An S/MIME mail is judged by its S/MIME signature, even when its text
    // quotes an armoured OpenPGP block.
    if ctx.findings.pgp_signature.is_none() && !announced && smime::is_smime(header) {
        return Verdict::Continue;
    }
    if ctx.findings.pgp_signature.is_none() && !announced {
        let ct = smime::header_value(header, "content-type")
            .unwrap_or_default()
            .to_ascii_lowercase();
        if !(ct.is_empty() || ct.starts_with("text/") || ct.starts_with("multipart/")) {
            return Verdict::Continue;
        }
    }
    let whole = match ctx.content.whole().await {
        Ok(w) => w,
        Err(crate::ContentError::TooLarge { .. }) if announced => {
            ctx.findings.signature = Some(SignatureFinding::Invalid {
                reason: "too-large".to_owned(),
            });
            return Verdict::Modified;
        }
        Err(crate::ContentError::TooLarge { .. }) => return Verdict::Continue,
        Err(crate::ContentError::Pipeline(e)) => return Verdict::TempFail(e.to_string()),
    };
    if ctx.findings.pgp_signature.is_none() && !announced && !pgp::has_inline_pgp(&whole) {
        return Verdict::Continue;
    }
    let from = header_address(&whole, "from");
    let now = i64::try_from(ctx.now).unwrap_or(i64::MAX);
    let offered = crate::stages::harvest::offered_keys(&whole, from.as_ref(), now);
    let mut keyring = match keys.keyring_for(from.as_ref(), now).await {
        Ok(k) => k,
        Err(e) => return Verdict::TempFail(format!("OpenPGP verification: {e}")),
    };
    keyring.extend(offered);
    let status = match ctx.findings.pgp_signature.take() {
        Some(s) => s,
        None => {
            match PgpKeys::engine(now).open(&whole, &[], &keyring) {
                Ok(opened) => {
                    // A clear-signed text is delivered as its signed text.
                    if opened.signature != SignatureStatus::NotSigned && !announced {
                        ctx.content.replace(opened.message);
                    }
                    opened.signature
                }
                Err(e) => {
                    ctx.findings.signature = Some(SignatureFinding::Invalid {
                        reason: pgp::failure_token(&e).to_owned(),
                    });
                    return Verdict::Modified;
                }
            }
        }
    };
    ctx.findings.signature = match status {
        SignatureStatus::NotSigned => return Verdict::Continue,
        SignatureStatus::Valid { fingerprint, .. } => {
            // The key must carry the From address: any key can sign.
            let matching = from.filter(|f| {
                keyring.iter().any(|c| {
                    c.fingerprint().to_hex() == fingerprint
                        && siegel_openpgp::addresses(c).iter().any(|a| a == f)
                })
            });
            Some(match matching {
                Some(f) => {
                    ctx.findings.pgp_signer = Some(fingerprint);
                    SignatureFinding::Valid { signer: f }
                }
                None => SignatureFinding::Invalid {
                    reason: "from-mismatch".to_owned(),
                },
            })
        }
        SignatureStatus::Invalid { reason } => {
            tracing::info!(target: "siegel::pgp", queue_id = %ctx.envelope.id, ?reason, "invalid OpenPGP signature");
            Some(SignatureFinding::Invalid {
                reason: pgp_reason(&reason).to_owned(),
            })
        }
    };
    Verdict::Modified
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
