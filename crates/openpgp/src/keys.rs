//! User keys: generation, export, storage form, import of correspondents'
//! keys, and the validity checks that decide whether a key may be used.

use std::time::SystemTime;

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::cert::prelude::*;
use openpgp::parse::Parse;
use openpgp::policy::Policy;
use openpgp::serialize::{Serialize, SerializeInto};
use openpgp::types::{Features, RevocationStatus};
use siegel_types::Address;

use crate::Pgp;
use crate::error::{KeyProblem, PgpError, chain};

/// Which key type a new user key gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyAlgorithm {
    /// Ed25519 signing, Cv25519 encryption: small and fast; the default.
    #[default]
    Cv25519,
    /// RSA-3072, for correspondents whose software lacks Curve25519.
    Rsa3072,
}

/// What we learnt about a certificate at import.
#[derive(Debug, Clone)]
pub struct ImportedKey {
    /// The certificate as parsed (public parts; secret parts if the file had them).
    pub cert: Cert,
    /// Upper-case hex fingerprint of the primary key.
    pub fingerprint: String,
    /// Mail addresses from the User IDs that parse as addresses.
    pub addresses: Vec<Address>,
    /// Whether it can be used for encryption at the reference time, and if
    /// not, why.
    pub validity: Result<(), KeyProblem>,
    /// Fingerprints of subkeys usable for encryption at the reference time.
    pub encryption_subkeys: Vec<String>,
}

impl Pgp {
    /// Generates a key for an internal user: one User ID (`<address>`),
    /// a certification-only primary key, a signing subkey and an encryption
    /// subkey. Advertises SEIPDv1 only, since GnuPG 2.2 cannot read keys
    /// that advertise v6 features.
    pub fn generate_key(&self, address: &Address, algo: KeyAlgorithm) -> Result<Cert, PgpError> {
        let suite = match algo {
            KeyAlgorithm::Cv25519 => CipherSuite::Cv25519,
            KeyAlgorithm::Rsa3072 => CipherSuite::RSA3k,
        };
        // Backdate slightly so a signature made "now" by a peer with a
        // skewed clock still postdates the key.
        let created = self.now() - std::time::Duration::from_secs(60);
        let (cert, _rev) = CertBuilder::new()
            .set_cipher_suite(suite)
            .set_creation_time(created)
            .set_profile(openpgp::Profile::RFC4880)
            .and_then(|b| b.set_features(Features::empty().set_seipdv1()))
            .map_err(|e| PgpError::Generate(chain(&e)))?
            .add_userid(format!("<{}>", address.as_str()))
            .add_signing_subkey()
            .add_transport_encryption_subkey()
            .generate()
            .map_err(|e| PgpError::Generate(chain(&e)))?;
        Ok(cert)
    }

    /// Checks that a certificate may be encrypted to at the reference time;
    /// returns the reason when it must be refused.
    pub fn check_encryption(&self, cert: &Cert) -> Result<(), KeyProblem> {
        let policy: &dyn Policy = &self.policy;
        let now = self.now();
        if let RevocationStatus::Revoked(_) = cert.revocation_status(policy, now) {
            return Err(KeyProblem::Revoked);
        }
        let valid = cert
            .with_policy(policy, now)
            .map_err(|e| KeyProblem::NotValid(chain(&e)))?;
        if let Err(e) = valid.alive() {
            // Expiry is the usual cause; report its time when known.
            return Err(match valid.primary_key().key_expiration_time() {
                Some(at) if at <= now => KeyProblem::Expired { at },
                _ => KeyProblem::NotValid(chain(&e)),
            });
        }
        if encryption_subkeys(policy, cert, now).is_empty() {
            return Err(KeyProblem::NoEncryptionKey);
        }
        Ok(())
    }

    /// Parses correspondents' keys: armoured or binary, one or several
    /// certificates in one input. Unparseable certificates inside a
    /// readable file are skipped; a file with none yields an error.
    pub fn import_keys(&self, data: &[u8]) -> Result<Vec<ImportedKey>, PgpError> {
        self.limit_input(data)?;
        let parser = CertParser::from_bytes(data).map_err(|e| PgpError::KeyParse(chain(&e)))?;
        let mut out = Vec::new();
        let mut last_err = None;
        for item in parser {
            match item {
                Ok(cert) => out.push(self.describe(cert)),
                Err(e) => last_err = Some(chain(&e)),
            }
        }
        if out.is_empty() {
            return Err(PgpError::KeyParse(
                last_err.unwrap_or_else(|| "no certificate found".into()),
            ));
        }
        Ok(out)
    }

    /// Describes one certificate (fingerprint, addresses, validity).
    pub fn describe(&self, cert: Cert) -> ImportedKey {
        let validity = self.check_encryption(&cert);
        // Subkeys of a revoked or expired certificate are not usable even
        // when their own bindings are fine.
        let encryption_subkeys = match validity {
            Ok(()) => encryption_subkeys(&self.policy, &cert, self.now()),
            Err(_) => Vec::new(),
        };
        ImportedKey {
            fingerprint: cert.fingerprint().to_hex(),
            addresses: addresses(&cert),
            validity,
            encryption_subkeys,
            cert,
        }
    }

    /// Armoured public key (TPK) for `siegel pgp export` and WKD.
    pub fn export_public(&self, cert: &Cert) -> Result<String, PgpError> {
        let bytes = cert
            .armored()
            .to_vec()
            .map_err(|e| PgpError::Compose(chain(&e)))?;
        String::from_utf8(bytes).map_err(|e| PgpError::Compose(e.to_string()))
    }

    /// Binary transferable secret key for storage; the store encrypts it
    /// under the master key, so no passphrase is set here.
    pub fn secret_key_bytes(&self, cert: &Cert) -> Result<Vec<u8>, PgpError> {
        if !cert.is_tsk() {
            return Err(PgpError::NotASecretKey(cert.fingerprint().to_hex()));
        }
        let mut out = Vec::new();
        cert.as_tsk()
            .serialize(&mut out)
            .map_err(|e| PgpError::Compose(chain(&e)))?;
        Ok(out)
    }

    /// Binary public certificate (no secret parts), the storage form of
    /// correspondents' keys and what WKD serves.
    pub fn public_bytes(&self, cert: &Cert) -> Result<Vec<u8>, PgpError> {
        let mut out = Vec::new();
        cert.clone()
            .strip_secret_key_material()
            .serialize(&mut out)
            .map_err(|e| PgpError::Compose(chain(&e)))?;
        Ok(out)
    }

    /// Reads one stored certificate (public or with secrets) back.
    pub fn load_cert(&self, data: &[u8]) -> Result<Cert, PgpError> {
        self.limit_input(data)?;
        Cert::from_bytes(data).map_err(|e| PgpError::KeyParse(chain(&e)))
    }

    /// When the primary key was created and when the certificate expires
    /// (`None`: never), as the policy sees it at the reference time.
    pub fn lifetime(&self, cert: &Cert) -> (SystemTime, Option<SystemTime>) {
        let created = cert.primary_key().key().creation_time();
        let expires = cert
            .with_policy(&self.policy, self.now())
            .ok()
            .and_then(|v| v.primary_key().key_expiration_time());
        (created, expires)
    }

    /// Reads a stored secret key back; refuses public-only certificates.
    pub fn load_secret_key(&self, data: &[u8]) -> Result<Cert, PgpError> {
        self.limit_input(data)?;
        let cert = Cert::from_bytes(data).map_err(|e| PgpError::KeyParse(chain(&e)))?;
        if !cert.is_tsk() {
            return Err(PgpError::NotASecretKey(cert.fingerprint().to_hex()));
        }
        Ok(cert)
    }
}

/// Addresses of a certificate's User IDs (raw, not policy-checked: the
/// caller decides with `validity`).
pub fn addresses(cert: &Cert) -> Vec<Address> {
    let mut out: Vec<Address> = cert
        .userids()
        .filter_map(|u| u.userid().email().ok().flatten().map(str::to_owned))
        .filter_map(|e| Address::parse(&e).ok())
        .collect();
    out.dedup();
    out
}

/// Fingerprints of live, unrevoked, supported encryption-capable keys.
pub(crate) fn encryption_subkeys(policy: &dyn Policy, cert: &Cert, now: SystemTime) -> Vec<String> {
    match cert.with_policy(policy, now) {
        Ok(valid) => valid
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .for_transport_encryption()
            .for_storage_encryption()
            .map(|k| k.key().fingerprint().to_hex())
            .collect(),
        Err(_) => Vec::new(),
    }
}
