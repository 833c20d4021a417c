//! Mail addresses, normalised once, here.
//!
//! Every address that enters Siegel (SMTP envelope, headers, CLI, portal)
//! goes through [`Address::parse`], so two spellings of one mailbox compare
//! equal everywhere: the domain is lower-cased and IDNs become A-labels
//! (punycode). The local part is kept byte for byte: RFC 5321 leaves its
//! case to the receiving system, and rewriting it can misdeliver.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a usable mail address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// No `@`, or nothing before or after it.
    #[error("`{0}` is not of the form local@domain")]
    Shape(String),
    /// The local part is longer than RFC 5321's 64 octets.
    #[error("local part of `{0}` is longer than 64 octets")]
    LocalTooLong(String),
    /// The local part holds a character that no mail system accepts unquoted
    /// (controls, spaces, angle brackets).
    #[error("local part of `{0}` contains a forbidden character")]
    LocalCharacter(String),
    /// The domain is not a valid (internationalised) host name or address literal.
    #[error("domain of `{0}` is not a valid domain name")]
    Domain(String),
}

/// A normalised mailbox address `local@domain`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Address {
    text: String,
    at: usize,
}

impl Address {
    /// Parses and normalises an address (without angle brackets).
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let input = input.trim();
        let at = input
            .rfind('@')
            .ok_or_else(|| AddressError::Shape(input.to_owned()))?;
        let (local, domain) = (&input[..at], &input[at + 1..]);
        if local.is_empty() || domain.is_empty() {
            return Err(AddressError::Shape(input.to_owned()));
        }
        if local.len() > 64 {
            return Err(AddressError::LocalTooLong(input.to_owned()));
        }
        let quoted = local.len() >= 2 && local.starts_with('"') && local.ends_with('"');
        let bad_char = |c: char| {
            c.is_control() || (!quoted && (c.is_whitespace() || "<>()[],;:@\\\"".contains(c)))
        };
        if local.chars().any(bad_char) {
            return Err(AddressError::LocalCharacter(input.to_owned()));
        }
        let domain =
            normalise_domain(domain).ok_or_else(|| AddressError::Domain(input.to_owned()))?;
        let text = format!("{local}@{domain}");
        Ok(Self { text, at })
    }

    /// The local part, as given.
    pub fn local(&self) -> &str {
        &self.text[..self.at]
    }

    /// The domain: lower case, A-labels.
    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }

    /// The whole address.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the address needs SMTPUTF8 to be transported.
    pub fn needs_smtputf8(&self) -> bool {
        !self.text.is_ascii()
    }
}

/// Lower-cases and converts a domain (or keeps an address literal).
/// `None` when it is not a valid host name.
pub fn normalise_domain(domain: &str) -> Option<String> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.starts_with('[') {
        let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
        let ip = inner.strip_prefix("IPv6:").unwrap_or(inner);
        return ip
            .parse::<std::net::IpAddr>()
            .ok()
            .map(|_| domain.to_owned());
    }
    let ascii = idna::domain_to_ascii(domain).ok()?;
    let valid = !ascii.is_empty()
        && ascii.len() <= 253
        && ascii.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    valid.then_some(ascii)
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}>", self.text)
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.text
    }
}

/// The envelope sender: an address, or the null sender `<>` used by bounces.
/// Bounces are never sent to the null sender (RFC 5321 §4.5.5).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ReversePath {
    Null,
    Address(Address),
}

impl ReversePath {
    pub fn address(&self) -> Option<&Address> {
        match self {
            Self::Null => None,
            Self::Address(a) => Some(a),
        }
    }
}

impl fmt::Display for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Null => f.write_str(""),
            Self::Address(a) => a.fmt(f),
        }
    }
}

impl fmt::Debug for ReversePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{self}>")
    }
}

impl From<ReversePath> for String {
    fn from(r: ReversePath) -> String {
        r.to_string()
    }
}

impl TryFrom<String> for ReversePath {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.is_empty() {
            Ok(Self::Null)
        } else {
            Address::parse(&s).map(Self::Address)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_is_lowercased_and_idn_encoded() {
        let a = Address::parse("Alice.Example@BÜCHER.Example").unwrap();
        assert_eq!(a.local(), "Alice.Example");
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        assert_eq!(
            a,
            Address::parse("Alice.Example@xn--bcher-kva.example.").unwrap()
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "@x.de",
            "a@",
            "noat",
            "a b@x.de",
            "a@-x.de",
            "a@x..de",
            "a<b@x.de",
            "a@[1.2.3]",
            "bob@@example.com",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad} accepted");
        }
        assert!(Address::parse(&format!("{}@x.de", "a".repeat(65))).is_err());
    }

    #[test]
    fn accepts_literals_and_utf8_local() {
        assert_eq!(
            Address::parse("a@[127.0.0.1]").unwrap().domain(),
            "[127.0.0.1]"
        );
        assert!(Address::parse("jörg@example.com").unwrap().needs_smtputf8());
    }

    #[test]
    fn reverse_path_roundtrips_through_json() {
        let null: ReversePath = serde_json::from_str("\"\"").unwrap();
        assert_eq!(null, ReversePath::Null);
        let a = ReversePath::Address(Address::parse("a@b.de").unwrap());
        let back: ReversePath = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(a, back);
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics_and_is_idempotent(s in "\\PC{0,80}") {
            if let Ok(a) = Address::parse(&s) {
                proptest::prop_assert_eq!(Address::parse(a.as_str()).unwrap(), a);
            }
        }
    }
}
