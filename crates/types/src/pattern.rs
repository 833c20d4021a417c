//! Address patterns, as administrators write them in lists of who is in or
//! out (`[users] onboard`, `exclude`): a whole address, a whole domain, a
//! local part at any domain, or everyone.

use crate::{Address, normalise_domain};

/// One pattern of an address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressPattern {
    /// `*`: every address.
    Any,
    /// `example.com` or `*@example.com`: every address of the domain
    /// (normalised).
    Domain(String),
    /// `noreply@*`: this local part (without ASCII case) at any domain.
    Local(String),
    /// `alice@example.com`: this one address.
    Address(Address),
}

impl AddressPattern {
    /// Reads `*`, `local@*`, `local@domain`, `*@domain` or `domain`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "*" {
            return Ok(Self::Any);
        }
        match text.rsplit_once('@') {
            Some((local, "*")) if !local.is_empty() && !local.contains(['*', '@', ' ']) => {
                Ok(Self::Local(local.to_ascii_lowercase()))
            }
            // `*` is a valid local part, but here it can only mean "any".
            Some(("*", domain)) => normalise_domain(domain)
                .map(Self::Domain)
                .ok_or_else(|| format!("not a domain after `*@`: {text:?}")),
            Some(_) => Address::parse(text)
                .map(Self::Address)
                .map_err(|e| format!("not an address, domain, `local@*` or `*`: {text:?} ({e})")),
            None => normalise_domain(text)
                .map(Self::Domain)
                .ok_or_else(|| format!("not an address, domain, `local@*` or `*`: {text:?}")),
        }
    }

    /// Whether `address` is one this pattern names.
    pub fn matches(&self, address: &Address) -> bool {
        match self {
            Self::Any => true,
            Self::Domain(d) => address.domain() == d,
            Self::Local(l) => address.local().eq_ignore_ascii_case(l),
            Self::Address(a) => a == address,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn each_form_names_what_it_says() {
        let any = AddressPattern::parse("*").unwrap();
        let domain = AddressPattern::parse("Example.COM").unwrap();
        let local = AddressPattern::parse("NoReply@*").unwrap();
        let one = AddressPattern::parse("alice@example.com").unwrap();
        assert_eq!(
            AddressPattern::parse("*@example.com").unwrap(),
            AddressPattern::Domain("example.com".into())
        );
        assert!(any.matches(&a("x@y.example")));
        assert!(domain.matches(&a("bob@example.com")));
        assert!(!domain.matches(&a("bob@sub.example.com")));
        assert!(local.matches(&a("noreply@example.org")));
        assert!(!local.matches(&a("reply@example.org")));
        assert!(one.matches(&a("alice@EXAMPLE.com")));
        assert!(
            !one.matches(&a("Alice@example.com")),
            "local parts are case-sensitive"
        );
        for bad in ["", "@*", "*@", "a b@*", "not a domain!", "x@"] {
            assert!(AddressPattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
