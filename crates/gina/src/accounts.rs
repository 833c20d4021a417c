//! Account rules: initial passwords, the password policy, argon2id hashing
//! on a bounded blocking pool, and security answers.
//!
//! Hashing costs ~30 ms of one core (m = 19 MiB, t = 2, p = 1, the OWASP
//! recommendation for argon2id). Run on tokio's core threads it would stall
//! every other request, so it runs on the blocking pool, and a semaphore
//! bounds how many hashes run at once: a burst of logins queues instead of
//! taking 19 MiB × hundreds of memory.

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use siegel_types::Address;
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// Letters and digits that cannot be confused when read aloud or copied by
/// hand: no `0 O o 1 l I`.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789";

/// A password or answer in memory: zeroed on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }
    /// The text. Named so every use stands out in review.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A fresh initial password: three groups of four characters from an
/// unambiguous alphabet (`Kp7x-9Qm2-hT4w`, about 70 bits), easy to read out
/// on the phone. It always has an upper-case letter and a digit, so it is
/// accepted wherever a password is.
pub fn new_initial_password() -> Result<Secret, RandomError> {
    let rng = SystemRandom::new();
    loop {
        let mut raw = [0u8; 12];
        rng.fill(&mut raw).map_err(|_| RandomError)?;
        // Rejection sampling keeps every character equally likely.
        if raw
            .iter()
            .any(|b| usize::from(*b) >= 256 / ALPHABET.len() * ALPHABET.len())
        {
            continue;
        }
        let chars: Vec<char> = raw
            .iter()
            .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
            .collect();
        if !chars.iter().any(char::is_ascii_uppercase) || !chars.iter().any(char::is_ascii_digit) {
            continue;
        }
        let groups: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
        return Ok(Secret::new(groups.join("-")));
    }
}

/// A random token for links and cookies: 32 bytes, URL-safe base64.
pub fn new_token() -> Result<String, RandomError> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    SystemRandom::new().fill(&mut b).map_err(|_| RandomError)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The system random generator failed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the system random generator failed")]
pub struct RandomError;

/// The password policy; each rule can be switched off (`[gina]` settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PasswordPolicy {
    /// Minimum length in characters.
    pub min_length: usize,
    /// At least one upper-case letter.
    pub require_upper: bool,
    /// At least one digit.
    pub require_digit: bool,
    /// Must not contain the name, the address or its local part.
    pub forbid_personal: bool,
    /// Must not be one of this many previous passwords (0 = off).
    pub history: usize,
    /// Must not be a commonly used password or an easily guessed pattern.
    pub forbid_common: bool,
}

/// The longest password accepted: bounds the work of the strength check.
pub const MAX_PASSWORD: usize = 128;

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 8,
            require_upper: true,
            require_digit: true,
            forbid_personal: true,
            history: 4,
            forbid_common: true,
        }
    }
}

/// One rule a password breaks. `code()` names its text in the theme
/// (`pw_rule_*` explains the rule, `pw_fail_*` says it was broken).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Shorter than the minimum.
    TooShort(usize),
    /// Longer than [`MAX_PASSWORD`].
    TooLong,
    /// No upper-case letter.
    NoUpper,
    /// No digit.
    NoDigit,
    /// Contains the name, address or local part.
    Personal,
    /// One of the previous passwords.
    Reused,
    /// A common password or easy pattern.
    Common,
    /// New password and confirmation differ.
    Mismatch,
}

impl Violation {
    /// The rule's key (`too_short`, `no_upper`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Violation::TooShort(_) => "min_length",
            Violation::TooLong => "max_length",
            Violation::NoUpper => "upper",
            Violation::NoDigit => "digit",
            Violation::Personal => "personal",
            Violation::Reused => "history",
            Violation::Common => "common",
            Violation::Mismatch => "mismatch",
        }
    }
}

/// Words every German or English speaker tries first; zxcvbn's own lists
/// are English, so these are added as extra dictionary entries.
const LOCAL_COMMON: &[&str] = &[
    "passwort",
    "kennwort",
    "geheim",
    "hallo",
    "sommer",
    "winter",
    "fruehling",
    "herbst",
    "schatz",
    "fussball",
    "sonne",
    "mausi",
    "willkommen",
    "bank",
    "sicher",
    "siegel",
    "gina",
    "januar",
    "februar",
    "maerz",
    "april",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "dezember",
    "welcome",
    "password",
    "letmein",
];

impl PasswordPolicy {
    /// The rules in force, as codes with their parameter, for explaining
    /// them next to the form.
    pub fn rules(&self) -> Vec<(&'static str, usize)> {
        let mut r = vec![("min_length", self.min_length)];
        if self.require_upper {
            r.push(("upper", 0));
        }
        if self.require_digit {
            r.push(("digit", 0));
        }
        if self.forbid_personal {
            r.push(("personal", 0));
        }
        if self.history > 0 {
            r.push(("history", self.history));
        }
        if self.forbid_common {
            r.push(("common", 0));
        }
        r
    }

    /// Checks everything that needs no stored hash (all rules but history).
    pub fn check(&self, password: &str, address: &Address, name: Option<&str>) -> Vec<Violation> {
        let mut v = Vec::new();
        let len = password.chars().count();
        if len < self.min_length {
            v.push(Violation::TooShort(self.min_length));
        }
        if len > MAX_PASSWORD {
            v.push(Violation::TooLong);
            return v;
        }
        if self.require_upper && !password.chars().any(char::is_uppercase) {
            v.push(Violation::NoUpper);
        }
        if self.require_digit && !password.chars().any(|c| c.is_ascii_digit()) {
            v.push(Violation::NoDigit);
        }
        let lower = password.to_lowercase();
        let local = address.local().to_lowercase();
        let mut personal: Vec<String> = vec![address.as_str().to_lowercase(), local.clone()];
        // "anna.schmidt" also gives "anna" and "schmidt".
        personal.extend(
            local
                .split(['.', '_', '-', '+'])
                .map(str::to_owned)
                .filter(|p| p.chars().count() >= 3),
        );
        if let Some(name) = name {
            personal.extend(
                name.split_whitespace()
                    .map(str::to_lowercase)
                    .filter(|p| p.chars().count() >= 3),
            );
        }
        if self.forbid_personal
            && personal
                .iter()
                .any(|p| p.chars().count() >= 3 && lower.contains(p.as_str()))
        {
            v.push(Violation::Personal);
        }
        if self.forbid_common && !password.is_empty() {
            let mut inputs: Vec<&str> = LOCAL_COMMON.to_vec();
            inputs.extend(personal.iter().map(String::as_str));
            let entropy = zxcvbn::zxcvbn(password, &inputs);
            if (entropy.score() as u8) < 2 {
                v.push(Violation::Common);
            }
        }
        v
    }
}

/// Normalises a security answer so that "Berlin", " berlin " and
/// "BERLIN" are the same answer: trimmed, whitespace collapsed, lower-case.
pub fn normalise_answer(answer: &str) -> String {
    answer
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Hashing failed (an internal error, never the user's input).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// The argon2 implementation refused.
    #[error("argon2: {0}")]
    Argon2(String),
    /// The blocking pool is gone (runtime shutting down).
    #[error("password hashing pool unavailable")]
    Pool,
    /// The system random generator failed.
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// argon2id with m = 19 MiB, t = 2, p = 1, on tokio's blocking pool with at
/// most `parallel` hashes at a time. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when the account does
    /// not exist, so an unknown address costs the same time as a known one.
    dummy: Arc<String>,
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants inside argon2's limits.
    #[allow(clippy::expect_used)]
    let params = Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

fn hash_blocking(secret: &str) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| RandomError)?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError::Argon2(e.to_string()))?;
    argon2()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

fn verify_blocking(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        // argon2's verifier compares in constant time.
        Ok(h) => argon2().verify_password(secret.as_bytes(), &h).is_ok(),
        Err(_) => false,
    }
}

impl Hasher {
    /// A hasher running at most `parallel` (≥ 1) hashes at once.
    pub fn new(parallel: usize) -> Result<Self, HashError> {
        let pw = new_token()?;
        let dummy = hash_blocking(&pw)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            dummy: Arc::new(dummy),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self.permits.acquire().await.map_err(|_| HashError::Pool)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| HashError::Pool)
    }

    /// The argon2id PHC string of `secret`.
    pub async fn hash(&self, secret: &Secret) -> Result<String, HashError> {
        let s = secret.clone();
        self.run(move || hash_blocking(s.expose())).await?
    }

    /// Whether `secret` matches `phc`. A malformed hash never matches.
    pub async fn verify(&self, secret: &Secret, phc: &str) -> Result<bool, HashError> {
        let (s, h) = (secret.clone(), phc.to_owned());
        self.run(move || verify_blocking(s.expose(), &h)).await
    }

    /// Spends the time of one verification and returns false: for unknown
    /// accounts, so timing does not tell which addresses have one.
    pub async fn verify_nothing(&self, secret: &Secret) -> Result<bool, HashError> {
        let (s, h) = (secret.clone(), self.dummy.clone());
        self.run(move || {
            verify_blocking(s.expose(), &h);
            false
        })
        .await
    }

    /// Whether `secret` matches any of `hashes` (password history). All are
    /// checked, so the time does not tell which one matched.
    pub async fn matches_any(&self, secret: &Secret, hashes: &[String]) -> Result<bool, HashError> {
        let (s, hs) = (secret.clone(), hashes.to_vec());
        self.run(move || {
            hs.iter()
                .fold(false, |acc, h| verify_blocking(s.expose(), h) | acc)
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn initial_passwords_are_readable_and_distinct() {
        let a = new_initial_password().unwrap();
        let b = new_initial_password().unwrap();
        assert_ne!(a, b);
        let s = a.expose();
        assert_eq!(s.len(), 14, "{s}");
        assert_eq!(s.matches('-').count(), 2);
        for c in s.chars().filter(|c| *c != '-') {
            assert!(ALPHABET.contains(&(c as u8)), "{c} is ambiguous");
        }
        assert!(
            PasswordPolicy::default()
                .check(s, &addr("anna@partner.example"), None)
                .iter()
                .all(|v| *v == Violation::Common || *v == Violation::Personal)
                || PasswordPolicy::default()
                    .check(s, &addr("anna@partner.example"), None)
                    .is_empty()
        );
    }

    #[test]
    fn policy_rules() {
        let p = PasswordPolicy::default();
        let a = addr("anna.schmidt@partner.example");
        assert_eq!(p.check("Tr7$kq!vPz2m", &a, Some("Anna Schmidt")), vec![]);
        assert!(p.check("Ab1", &a, None).contains(&Violation::TooShort(8)));
        assert!(p.check("abcdefgh7", &a, None).contains(&Violation::NoUpper));
        assert!(p.check("Abcdefghx", &a, None).contains(&Violation::NoDigit));
        assert!(
            p.check("Xq9schmidtZ", &a, None)
                .contains(&Violation::Personal),
            "part of the local part"
        );
        assert!(
            p.check("Zz9AnnaQ!r", &addr("a.b@x.example"), Some("Anna Schmidt"))
                .contains(&Violation::Personal),
            "first name"
        );
        assert!(p.check("Password1", &a, None).contains(&Violation::Common));
        assert!(p.check("Sommer2024", &a, None).contains(&Violation::Common));
        assert!(
            p.check(&"A1".repeat(70), &a, None)
                .contains(&Violation::TooLong)
        );
        let off = PasswordPolicy {
            min_length: 4,
            require_upper: false,
            require_digit: false,
            forbid_personal: false,
            history: 0,
            forbid_common: false,
        };
        assert_eq!(off.check("anna", &a, Some("Anna")), vec![]);
        assert_eq!(off.rules(), vec![("min_length", 4)]);
        assert_eq!(p.rules().len(), 6);
    }

    #[test]
    fn answers_normalise() {
        assert_eq!(normalise_answer("  Bad   Tölz "), "bad tölz");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_are_argon2id_with_the_required_parameters() {
        let h = Hasher::new(2).unwrap();
        let pw = Secret::new("Tr7$kq!vPz2m");
        let phc = h.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(h.verify(&pw, &phc).await.unwrap());
        assert!(!h.verify(&Secret::new("wrong"), &phc).await.unwrap());
        assert!(!h.verify(&pw, "not a hash").await.unwrap());
        assert!(!h.verify_nothing(&pw).await.unwrap());
        let other = h.hash(&Secret::new("Other1234")).await.unwrap();
        assert!(h.matches_any(&pw, &[other.clone(), phc]).await.unwrap());
        assert!(!h.matches_any(&pw, &[other]).await.unwrap());
    }
}
