//! Typed errors of the OpenPGP core.
//!
//! Sequoia reports `anyhow` errors; they stop here and are carried as text
//! inside a variant that says *what* we were doing, so callers (pipeline,
//! CLI) can decide per variant whether a mail is bounced, delivered with a
//! tracked result, or retried.

use std::time::SystemTime;

/// Why a certificate cannot be used for what was asked (encryption or
/// signing). Kept as data so the policy engine can explain the decision
/// ("key expired on …") instead of a generic failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyProblem {
    /// The certificate (primary key) is revoked.
    #[error("the key is revoked")]
    Revoked,
    /// The certificate (primary key) expired at the given time.
    #[error("the key expired")]
    Expired {
        /// When the key expired.
        at: SystemTime,
    },
    /// No valid self-signature under the policy (e.g. no binding signature,
    /// SHA-1 only, unknown algorithm).
    #[error("the key has no valid self-signature: {0}")]
    NotValid(String),
    /// The certificate is valid, but has no live, unrevoked subkey usable
    /// for encryption (e.g. the encryption subkey expired).
    #[error("the key has no usable encryption subkey")]
    NoEncryptionKey,
    /// The certificate has no live signing-capable key with secret material.
    #[error("the key has no usable signing key with secret material")]
    NoSigningKey,
}

/// Errors of the OpenPGP core.
#[derive(Debug, thiserror::Error)]
pub enum PgpError {
    /// The input is larger than the configured limit; refused before parsing.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    InputTooLarge { size: usize, limit: usize },
    /// Decrypted/decompressed data exceeded the limit (compression bomb).
    #[error("decrypted content exceeds the limit of {limit} bytes")]
    PlaintextTooLarge { limit: usize },
    /// The MIME structure is not what the PGP/MIME standard requires.
    #[error("malformed MIME: {0}")]
    Mime(String),
    /// No OpenPGP certificate could be read.
    #[error("cannot parse OpenPGP key material: {0}")]
    KeyParse(String),
    /// A secret key was expected but the certificate holds only public keys.
    #[error("the certificate {0} holds no secret key material")]
    NotASecretKey(String),
    /// A certificate cannot be used for the requested operation.
    #[error("key {fingerprint} cannot be used: {problem}")]
    KeyUnusable {
        fingerprint: String,
        problem: KeyProblem,
    },
    /// Key generation failed (unsupported algorithm in this crypto backend).
    #[error("key generation failed: {0}")]
    Generate(String),
    /// Building the OpenPGP message (signing/encrypting) failed.
    #[error("cannot create the OpenPGP message: {0}")]
    Compose(String),
    /// None of the given secret keys is a recipient of the message.
    #[error("cannot decrypt: no secret key for any recipient of the message")]
    NoSecretKey,
    /// The message could not be decrypted (corrupt packets, unknown
    /// algorithm, integrity failure).
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// The signature packet itself cannot be parsed (not a verdict on
    /// authenticity; that is [`crate::SignatureStatus`]).
    #[error("cannot parse the signature: {0}")]
    Signature(String),
    /// No recipient was given for encryption.
    #[error("no recipient keys given")]
    NoRecipients,
    /// An address could not be parsed.
    #[error(transparent)]
    Address(#[from] siegel_types::AddressError),
}

/// Converts a Sequoia (anyhow) error into text, keeping its cause chain.
pub(crate) fn chain(e: &sequoia_openpgp::anyhow::Error) -> String {
    format!("{e:#}")
}
