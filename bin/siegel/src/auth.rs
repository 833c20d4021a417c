//! Submission users from the configuration, checked with argon2id.
//! The store (internal users) will take this over; the trait stays.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use siegel_smtp_in::Authenticator;

/// Verifies submission logins against the PHC hashes of the configuration.
pub struct ConfigUsers {
    hashes: HashMap<String, String>,
    /// Verified for unknown users, so that they cost the same time as known
    /// ones: no user enumeration by timing.
    dummy: String,
}

impl ConfigUsers {
    pub fn new(users: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Self> {
        let mut hashes = HashMap::new();
        for (name, hash) in users {
            PasswordHash::new(&hash)
                .map_err(|e| anyhow::anyhow!("password hash of submission user {name}: {e}"))?;
            hashes.insert(name, hash);
        }
        Ok(Self {
            hashes,
            dummy: hash("siegel-timing-equaliser")?,
        })
    }
}

impl Authenticator for ConfigUsers {
    fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.hashes.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let ok = PasswordHash::new(hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    }
}

/// argon2id with the crate's defaults (m=19 MiB, t=2, p=1: OWASP's minimum).
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
}

pub fn print_hash_from_stdin() -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let password = input.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!("{}", hash(password)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_known_users_only() {
        let users = ConfigUsers::new([("alice@example.com".to_owned(), hash("Secret-1").unwrap())])
            .unwrap();
        assert!(users.verify("alice@example.com", "Secret-1"));
        assert!(!users.verify("alice@example.com", "secret-1"));
        assert!(!users.verify("bob@example.com", "Secret-1"));
        assert!(ConfigUsers::new([("x".to_owned(), "not-a-hash".to_owned())]).is_err());
    }
}
