//! What the inbound stages find out about a mail's protection, handed from
//! one stage to the next: decrypt → verify → harvest → stamp.
//!
//! The order matters and is enforced by what each stage reads: the verify
//! stage sees the decrypted mail; the harvest stage stores only a key that
//! a *verified* signature vouched for (decrypted content is unverified
//! until then, DESIGN.md practice 9); the stamp stage writes the results
//! into header fields last, after every incoming `X-Siegel-*` field was
//! removed, so a recipient's client can trust them.

use siegel_types::Address;

/// What the decrypt stage did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncryptionFinding {
    /// Decrypted; `how` is the stamp token (`smime`, `domain-smime`, `pgp`,
    /// `domain-pgp`).
    Decrypted { how: &'static str },
    /// Encrypted, but not opened; `reason` is the stamp token
    /// (`malformed`, `no-key`, `too-large`).
    Failed { reason: &'static str },
}

/// What the verify stage found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureFinding {
    /// A valid signature by `signer`, who is the `From` address.
    Valid { signer: Address },
    /// A signature that does not hold; `reason` is the stamp token.
    Invalid { reason: String },
}

/// A key or certificate a verified signature vouched for, waiting for the
/// harvest stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouched {
    /// The S/MIME signer certificate (DER) of `address`; `gcm`: its
    /// signature announced that the signer's client reads AES-256-GCM.
    SmimeCertificate {
        address: Address,
        der: Vec<u8>,
        gcm: bool,
    },
}

/// The inbound stages' findings about one mail.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub encryption: Option<EncryptionFinding>,
    pub signature: Option<SignatureFinding>,
    /// Keys to harvest (only from verified signatures).
    pub vouched: Vec<Vouched>,
    /// Further header fields for the stamp stage (e.g. filter results),
    /// each `Name: value` without CRLF.
    pub stamps: Vec<String>,
    /// The OpenPGP signature verdict the decrypt stage found inside an
    /// encrypted mail, for the verify stage.
    pub pgp_signature: Option<siegel_openpgp::SignatureStatus>,
    /// Fingerprint of the OpenPGP key whose valid signature names the
    /// `From` address (it may confirm a key change when harvesting).
    pub pgp_signer: Option<String>,
}

impl Findings {
    /// The header fields the stamp stage writes, in order, without CRLF.
    pub fn stamp_fields(&self) -> Vec<String> {
        let mut out = Vec::new();
        match &self.encryption {
            Some(EncryptionFinding::Decrypted { how }) => {
                out.push(format!("X-Siegel-Encryption: {how}"));
            }
            Some(EncryptionFinding::Failed { reason }) => {
                out.push(format!("X-Siegel-Encryption: failed; reason={reason}"));
            }
            None => {}
        }
        match &self.signature {
            Some(SignatureFinding::Valid { signer }) => {
                out.push(format!("X-Siegel-Signature: valid; signer={signer}"));
            }
            Some(SignatureFinding::Invalid { reason }) => {
                out.push(format!("X-Siegel-Signature: invalid; reason={reason}"));
            }
            None => {}
        }
        out.extend(self.stamps.iter().cloned());
        out
    }
}
