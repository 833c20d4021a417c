//! The encryption hierarchy, per recipient (PRODUCT.md, "The encryption
//! hierarchy"): the recipient's own choice, then S/MIME → OpenPGP → domain
//! S/MIME → domain OpenPGP → GINA (confidential mail only) → signed over TLS.
//!
//! [`decide`] is a pure function of [`RecipientFacts`], so the same facts
//! always give the same [`Decision`], and the decision carries its own
//! explanation: why this method, and why not each method above it. That text
//! is what `siegel track` and `siegel policy explain` show, so it is written
//! for an administrator, not for a developer.

use std::fmt;

use serde::{Deserialize, Serialize};
use siegel_types::Address;

/// A way a mail can leave Siegel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MethodKind {
    /// S/MIME, encrypted to the recipient's certificate.
    Smime,
    /// PGP/MIME, encrypted to the recipient's OpenPGP key.
    Pgp,
    /// S/MIME, encrypted to the recipient domain's gateway certificate.
    DomainSmime,
    /// PGP/MIME, encrypted to the recipient domain's gateway key.
    DomainPgp,
    /// The encrypted HTML container read in the web portal.
    Gina,
    /// Signed, not encrypted, over TLS.
    TlsOnly,
    /// Unchanged: inbound and local delivery only, never chosen here.
    Plain,
}

impl MethodKind {
    /// The outbound hierarchy, best first. `Plain` is not part of it.
    pub const HIERARCHY: [MethodKind; 6] = [
        MethodKind::Smime,
        MethodKind::Pgp,
        MethodKind::DomainSmime,
        MethodKind::DomainPgp,
        MethodKind::Gina,
        MethodKind::TlsOnly,
    ];

    /// The name administrators know it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Smime => "S/MIME",
            Self::Pgp => "OpenPGP",
            Self::DomainSmime => "domain S/MIME",
            Self::DomainPgp => "domain OpenPGP",
            Self::Gina => "GINA",
            Self::TlsOnly => "TLS only",
            Self::Plain => "plain",
        }
    }

    /// True for the methods that encrypt the content.
    pub fn encrypts(self) -> bool {
        !matches!(self, Self::TlsOnly | Self::Plain)
    }
}

impl fmt::Display for MethodKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The method a recipient chose in the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    Gina,
    Smime,
    Pgp,
}

impl Preference {
    /// The method this preference asks for.
    pub fn kind(self) -> MethodKind {
        match self {
            Self::Gina => MethodKind::Gina,
            Self::Smime => MethodKind::Smime,
            Self::Pgp => MethodKind::Pgp,
        }
    }
}

/// A certificate or key that the key store knows for a recipient or domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    pub fingerprint: String,
    /// Usable for encryption now (not expired, not revoked, right usage).
    pub valid: bool,
    /// Why it is not valid, for the explanation.
    pub why_invalid: Option<String>,
}

impl KeyRef {
    /// A usable key.
    pub fn valid(fingerprint: impl Into<String>) -> Self {
        Self {
            fingerprint: fingerprint.into(),
            valid: true,
            why_invalid: None,
        }
    }

    /// A known key that must not be used.
    pub fn invalid(fingerprint: impl Into<String>, why: impl Into<String>) -> Self {
        Self {
            fingerprint: fingerprint.into(),
            valid: false,
            why_invalid: Some(why.into()),
        }
    }
}

/// Everything the decision for one recipient depends on. The pipeline
/// gathers it (classification, key store, portal, per-domain knobs);
/// [`decide`] only reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientFacts {
    pub address: Address,
    /// Chosen by the recipient in the portal; wins when it can be served.
    pub preference: Option<Preference>,
    pub smime: Option<KeyRef>,
    pub pgp: Option<KeyRef>,
    pub domain_smime: Option<KeyRef>,
    pub domain_pgp: Option<KeyRef>,
    /// The mail is confidential for this recipient
    /// ([`crate::Classification::is_confidential_for`]).
    pub confidential: bool,
    /// Per recipient domain: verified TLS counts as enough protection for
    /// confidential mail.
    pub verified_tls_enough: bool,
    /// Per sender domain: GINA may be used.
    pub gina_enabled: bool,
    /// Encrypt whenever a key is known, even when not confidential.
    pub encrypt_when_key_known: bool,
}

impl RecipientFacts {
    /// Facts with nothing known and the defaults of the knobs
    /// (`encrypt_when_key_known` on, everything else off).
    pub fn new(address: Address) -> Self {
        Self {
            address,
            preference: None,
            smime: None,
            pgp: None,
            domain_smime: None,
            domain_pgp: None,
            confidential: false,
            verified_tls_enough: false,
            gina_enabled: false,
            encrypt_when_key_known: true,
        }
    }
}

/// What happens to the mail for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Send with this method, encrypted to this key (when it uses one).
    Method {
        kind: MethodKind,
        fingerprint: Option<String>,
    },
    /// Policy forbids sending: bounce with this reason (both languages, as
    /// the sender may read either).
    Refuse {
        reason_en: String,
        reason_de: String,
    },
    /// The right method exists in policy but cannot run now (not
    /// implemented or not configured): keep the mail rather than send it
    /// with less protection.
    Hold { reason: String },
}

/// The decision for one recipient, with its explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub recipient: Address,
    pub confidential: bool,
    pub outcome: Outcome,
    /// Why this outcome, in one sentence.
    pub why: String,
    /// Why not each method tried before the chosen one, in the order tried.
    pub skipped: Vec<(MethodKind, String)>,
    /// The delivery must use verified TLS (a confidential mail that leaves
    /// as TLS only, because the domain says verified TLS is enough).
    pub requires_verified_tls: bool,
}

impl Decision {
    /// The chosen method, when the mail is sent.
    pub fn method(&self) -> Option<MethodKind> {
        match &self.outcome {
            Outcome::Method { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// The key the mail is encrypted to, if any.
    pub fn fingerprint(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Method { fingerprint, .. } => fingerprint.as_deref(),
            _ => None,
        }
    }

    /// One line for the mail log.
    pub fn summary(&self) -> String {
        let what = match &self.outcome {
            Outcome::Method {
                kind,
                fingerprint: Some(fp),
            } => format!("{kind} ({fp})"),
            Outcome::Method {
                kind,
                fingerprint: None,
            } => kind.to_string(),
            Outcome::Refuse { .. } => "refused".to_owned(),
            Outcome::Hold { .. } => "held".to_owned(),
        };
        format!("{}: {what}: {}", self.recipient, self.why)
    }
}

/// Decides for one recipient as if every method were available (use
/// [`crate::decide_all`] to take availability into account).
pub fn decide(f: &RecipientFacts) -> Decision {
    decide_with(f, &|_| Ok(()))
}

/// The hierarchy. `available` says whether a method can run now; an
/// eligible but unavailable method holds a confidential mail (never a
/// silent downgrade) and is skipped for any other mail.
pub(crate) fn decide_with(
    f: &RecipientFacts,
    available: &dyn Fn(MethodKind) -> Result<(), String>,
) -> Decision {
    let preferred = f.preference.map(Preference::kind);
    let order = preferred.into_iter().chain(
        MethodKind::HIERARCHY
            .into_iter()
            .filter(|k| Some(*k) != preferred),
    );
    let mut skipped = Vec::new();
    let decision = |outcome, why, skipped, requires_verified_tls| Decision {
        recipient: f.address.clone(),
        confidential: f.confidential,
        outcome,
        why,
        skipped,
        requires_verified_tls,
    };
    for kind in order {
        let is_preferred = Some(kind) == preferred;
        let fingerprint = match eligible(f, kind) {
            Ok(fp) => fp,
            Err(why) => {
                let why = if is_preferred {
                    format!("the recipient chose {kind} in the portal, but {why}")
                } else {
                    why
                };
                skipped.push((kind, why));
                continue;
            }
        };
        let why = explain(f, kind, fingerprint.as_deref(), is_preferred);
        if let Err(reason) = available(kind) {
            if f.confidential {
                let reason = format!(
                    "{why}; but {kind} is not available ({reason}), and a confidential mail is held rather than \
                     sent with another method"
                );
                return decision(
                    Outcome::Hold {
                        reason: reason.clone(),
                    },
                    reason,
                    skipped,
                    false,
                );
            }
            skipped.push((kind, format!("{kind} is not available ({reason})")));
            continue;
        }
        if is_preferred {
            for higher in MethodKind::HIERARCHY.into_iter().take_while(|k| *k != kind) {
                skipped.push((higher, format!("the recipient chose {kind} in the portal")));
            }
        }
        let requires_verified_tls = kind == MethodKind::TlsOnly && f.confidential;
        return decision(
            Outcome::Method { kind, fingerprint },
            why,
            skipped,
            requires_verified_tls,
        );
    }
    if f.confidential {
        let (rcpt, domain) = (&f.address, f.address.domain());
        let gina_en = if f.gina_enabled {
            "GINA is not available"
        } else {
            "GINA is switched off for the sender"
        };
        let gina_de = if f.gina_enabled {
            "GINA steht nicht zur Verfügung"
        } else {
            "GINA ist für den Absender abgeschaltet"
        };
        let reason_en = format!(
            "The confidential message could not be encrypted for {rcpt}: no valid certificate or key is known, \
             {gina_en}, and verified TLS is not accepted for {domain}. The message was not sent to this recipient."
        );
        let reason_de = format!(
            "Die vertrauliche Nachricht konnte nicht verschlüsselt werden für {rcpt}: Es ist kein gültiges \
             Zertifikat und kein Schlüssel bekannt, {gina_de}, und verifiziertes TLS ist für {domain} nicht \
             zugelassen. Die Nachricht wurde an diesen Empfänger nicht versendet."
        );
        let why = reason_en.clone();
        return decision(
            Outcome::Refuse {
                reason_en,
                reason_de,
            },
            why,
            skipped,
            false,
        );
    }
    let reason = "no method that may carry this mail is available".to_owned();
    decision(
        Outcome::Hold {
            reason: reason.clone(),
        },
        reason,
        skipped,
        false,
    )
}

/// Whether the facts allow `kind` for this recipient: `Ok` with the key to
/// encrypt to, or `Err` with the reason why not (in words for the admin).
fn eligible(f: &RecipientFacts, kind: MethodKind) -> Result<Option<String>, String> {
    let key = |key: &Option<KeyRef>, what: &str| -> Result<Option<String>, String> {
        let k = key.as_ref().ok_or_else(|| format!("no {what} is known"))?;
        if !k.valid {
            let why = k.why_invalid.as_deref().unwrap_or("not usable");
            return Err(format!("the {what} {} is not valid: {why}", k.fingerprint));
        }
        if !f.confidential && !f.encrypt_when_key_known {
            return Err(format!(
                "the {what} {} is known, but the mail is not confidential and encryption whenever a key is known \
                 is switched off",
                k.fingerprint
            ));
        }
        Ok(Some(k.fingerprint.clone()))
    };
    let domain = f.address.domain();
    match kind {
        MethodKind::Smime => key(&f.smime, "S/MIME certificate of the recipient"),
        MethodKind::Pgp => key(&f.pgp, "OpenPGP key of the recipient"),
        MethodKind::DomainSmime => key(
            &f.domain_smime,
            &format!("domain S/MIME certificate of {domain}"),
        ),
        MethodKind::DomainPgp => key(&f.domain_pgp, &format!("domain OpenPGP key of {domain}")),
        MethodKind::Gina if !f.confidential => {
            Err("GINA is only used for confidential mail".to_owned())
        }
        MethodKind::Gina if !f.gina_enabled => {
            Err("GINA is switched off for the sender's domain".to_owned())
        }
        MethodKind::Gina => Ok(None),
        MethodKind::TlsOnly if f.confidential && !f.verified_tls_enough => Err(format!(
            "a confidential mail may leave over TLS only where verified TLS counts as enough, which is not set \
             for {domain}"
        )),
        MethodKind::TlsOnly => Ok(None),
        MethodKind::Plain => Err("plain is never used for outbound mail".to_owned()),
    }
}

/// Why the chosen method, in one sentence.
fn explain(
    f: &RecipientFacts,
    kind: MethodKind,
    fingerprint: Option<&str>,
    preferred: bool,
) -> String {
    let domain = f.address.domain();
    let fp = fingerprint.unwrap_or("");
    let base = match kind {
        MethodKind::Smime => format!("valid S/MIME certificate of the recipient known ({fp})"),
        MethodKind::Pgp => format!("valid OpenPGP key of the recipient known ({fp})"),
        MethodKind::DomainSmime => format!("domain S/MIME certificate of {domain} known ({fp})"),
        MethodKind::DomainPgp => format!("domain OpenPGP key of {domain} known ({fp})"),
        MethodKind::Gina => "confidential mail and GINA is enabled for the sender".to_owned(),
        MethodKind::TlsOnly if f.confidential => format!(
            "confidential mail without a usable key or GINA; verified TLS counts as enough for {domain}, so it is \
             sent signed over TLS with a verified certificate required"
        ),
        MethodKind::TlsOnly => {
            "not confidential and no key to encrypt to: sent signed over TLS".to_owned()
        }
        MethodKind::Plain => "sent unchanged".to_owned(),
    };
    if preferred {
        format!("the recipient chose {kind} in the portal; {base}")
    } else {
        base
    }
}

#[cfg(test)]
mod tests;
