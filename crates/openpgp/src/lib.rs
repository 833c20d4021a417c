//! Siegel's OpenPGP core (issue 7): user keys, PGP/MIME sign+encrypt for
//! outbound mail, decryption and signature verification of inbound
//! PGP/MIME and inline PGP, Autocrypt headers and key harvesting.
//!
//! All decisions about algorithms and key validity go through one Sequoia
//! [`StandardPolicy`](sequoia_openpgp::policy::StandardPolicy) evaluated at
//! an injectable reference time ([`Pgp::at`]) so tests and the policy
//! engine get reproducible answers ("was this key valid when the mail
//! arrived?"). Input from outside is size-limited before parsing and the
//! decrypted output is limited while streaming (compression bombs).

mod error;
mod inbound;
mod keys;
pub mod mime;
mod outbound;
mod signer;

use std::time::SystemTime;

use sequoia_openpgp::policy::StandardPolicy;

pub use error::{KeyProblem, PgpError};
pub use inbound::{Encryption, HarvestedKey, InvalidReason, KeySource, Opened, SignatureStatus};
pub use keys::{ImportedKey, KeyAlgorithm, addresses};
pub use outbound::HIDDEN_SUBJECT;
pub use sequoia_openpgp::Cert;
pub use signer::SigningKey;

/// Size limits for data from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message or key file accepted for parsing.
    pub max_input: usize,
    /// Largest plaintext produced by decryption/decompression.
    pub max_plaintext: usize,
}

impl Default for Limits {
    /// 64 MiB in, 256 MiB out: above any mail size limit a gateway
    /// accepts, far below what would exhaust memory.
    fn default() -> Self {
        Self {
            max_input: 64 << 20,
            max_plaintext: 256 << 20,
        }
    }
}

/// The OpenPGP engine: policy, reference time and limits.
///
/// Cheap to construct; hold one per pipeline run or per request.
pub struct Pgp {
    policy: StandardPolicy<'static>,
    time: Option<SystemTime>,
    limits: Limits,
}

impl Default for Pgp {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Pgp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pgp")
            .field("time", &self.time)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Pgp {
    /// Standard policy, the current time, default limits.
    pub fn new() -> Self {
        Self {
            policy: StandardPolicy::new(),
            time: None,
            limits: Limits::default(),
        }
    }

    /// Evaluates validity and signatures at `time` instead of now.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.time = Some(time);
        self
    }

    /// Replaces the size limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The reference time.
    pub fn now(&self) -> SystemTime {
        self.time.unwrap_or_else(SystemTime::now)
    }

    fn limit_input(&self, data: &[u8]) -> Result<(), PgpError> {
        if data.len() > self.limits.max_input {
            return Err(PgpError::InputTooLarge {
                size: data.len(),
                limit: self.limits.max_input,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline shares one engine and cached signing keys across
    /// worker threads.
    #[test]
    fn engine_and_signing_keys_are_thread_safe() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Pgp>();
        assert_send_sync::<SigningKey>();
        assert_send_sync::<Opened>();
    }

    #[test]
    fn reference_time_is_injectable() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        assert_eq!(Pgp::new().at(t).now(), t);
    }
}
