//! Web Key Directory (draft-koch-openpgp-webkey-service) for Siegel.
//!
//! WKD lets a domain publish the OpenPGP keys of its users over HTTPS at a
//! URL derived from the address alone, so a gateway can encrypt to a
//! correspondent it has never received mail from. This crate has three
//! parts:
//!
//! * [`urls`] and [`local_hash`]: the two URLs of an address (the
//!   *advanced* method on `openpgpkey.<domain>`, then the *direct* method on
//!   `<domain>` itself), with the local part lower-cased (ASCII only, as
//!   the draft says), hashed with SHA-1 and z-base-32 encoded.
//! * [`Client`]: looks a recipient up over [`siegel_fetch::Fetcher`] (SSRF
//!   guard, size and time caps), keeps only certificates that name exactly
//!   the looked-up address and can be encrypted to now (the draft makes
//!   the *client* responsible for that filter: a WKD server may serve
//!   anything), and caches the answers, found and not found, in a bounded
//!   in-memory cache. A lookup never fails: every error is "no key", so
//!   that a broken web server can never cost a mail.
//! * [`public_key_bytes`] and [`is_local_hash`]: what the portal needs to
//!   serve our own users' keys (public parts only, binary).

mod cache;
mod client;

pub use cache::CacheSettings;
pub use client::{Client, Lookup, WkdKey, filter};

use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::parse::Parse;
use openpgp::serialize::SerializeInto;
use siegel_types::Address;

/// What can go wrong in the serving helpers (the client never errors; see
/// [`Lookup`]).
#[derive(Debug, thiserror::Error)]
pub enum WkdError {
    /// Stored key material that does not parse as an OpenPGP certificate.
    #[error("not an OpenPGP certificate: {0}")]
    Parse(String),
    /// The certificate could not be serialised again.
    #[error("cannot serialise the certificate: {0}")]
    Serialize(String),
}

/// The z-base-32 alphabet (RFC 6189 §5.1.6), which WKD uses because its
/// hashes must be valid, case-insensitive host-name-safe path segments.
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// z-base-32 encoding, most significant bit first, no padding. Written
/// here (a dozen lines) rather than taken as a dependency.
pub fn zbase32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ZBASE32[((buffer >> bits) & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ZBASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The WKD hash of a local part: SHA-1 of the local part with ASCII
/// letters lower-cased (non-ASCII is left alone, as the draft requires),
/// z-base-32 encoded: always 32 characters.
pub fn local_hash(local: &str) -> String {
    let lowered = local.to_ascii_lowercase();
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, lowered.as_bytes());
    zbase32(digest.as_ref())
}

/// Whether `s` can be a WKD hash (32 z-base-32 characters). The portal
/// answers 404 to anything else without touching the store.
pub fn is_local_hash(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| ZBASE32.contains(&b))
}

/// The two URLs of one address, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Urls {
    /// `https://openpgpkey.<domain>/.well-known/openpgpkey/<domain>/hu/<hash>?l=<local>`
    pub advanced: String,
    /// `https://<domain>/.well-known/openpgpkey/hu/<hash>?l=<local>`
    pub direct: String,
}

/// The advanced and direct URLs of `address`. The domain is the address'
/// normalised domain (lower case, A-labels); `l=` carries the local part
/// as given, percent-encoded, so a server that stores keys by the original
/// spelling can find them.
pub fn urls(address: &Address) -> Urls {
    let domain = address.domain();
    let hash = local_hash(address.local());
    let l: String = url::form_urlencoded::byte_serialize(address.local().as_bytes()).collect();
    Urls {
        advanced: format!(
            "https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{hash}?l={l}"
        ),
        direct: format!("https://{domain}/.well-known/openpgpkey/hu/{hash}?l={l}"),
    }
}

/// The binary public certificate of stored key material, for serving by
/// WKD. Secret key material, should the stored material hold any, is
/// stripped: a WKD response is public to the whole internet.
pub fn public_key_bytes(material: &[u8]) -> Result<Vec<u8>, WkdError> {
    let cert = Cert::from_bytes(material).map_err(|e| WkdError::Parse(e.to_string()))?;
    let cert = cert.strip_secret_key_material();
    cert.to_vec()
        .map_err(|e| WkdError::Serialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the draft (section 3.1): `Joe.Doe@Example.ORG`.
    #[test]
    fn the_hash_of_the_drafts_example() {
        assert_eq!(local_hash("Joe.Doe"), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
        assert_eq!(local_hash("joe.doe"), local_hash("JOE.DOE"));
        assert!(is_local_hash(&local_hash("Joe.Doe")));
    }

    #[test]
    fn zbase32_known_values() {
        // From the z-base-32 specification's examples.
        assert_eq!(zbase32(&[0x00]), "yy");
        assert_eq!(zbase32(&[0xf0, 0xbf, 0xc7]), "6n9hq");
        assert_eq!(zbase32(&[0xd4, 0x7a, 0x04]), "4t7ye");
        assert_eq!(zbase32(&[]), "");
    }

    #[test]
    fn urls_of_the_drafts_example() {
        let a = Address::parse("Joe.Doe@Example.ORG").expect("address");
        let u = urls(&a);
        assert_eq!(
            u.advanced,
            "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
        );
        assert_eq!(
            u.direct,
            "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
        );
        let odd = Address::parse("a+b&c=d@example.org").expect("address");
        assert!(urls(&odd).direct.ends_with("?l=a%2Bb%26c%3Dd"));
    }

    #[test]
    fn non_ascii_is_not_lowercased() {
        // "Ä" stays "Ä": only ASCII is folded.
        assert_ne!(local_hash("Ä"), local_hash("ä"));
        assert_eq!(local_hash("Äb"), local_hash("ÄB"));
    }

    #[test]
    fn not_hashes() {
        for s in [
            "",
            "short",
            "iy9q119eutrkn8s1mk4r39qejnbu3n5",
            "IY9Q119EUTRKN8S1MK4R39QEJNBU3N5Q",
            "../../../../../../etc/passwd00000",
        ] {
            assert!(!is_local_hash(s), "{s}");
        }
    }

    #[test]
    fn garbage_material_is_an_error() {
        assert!(matches!(public_key_bytes(b"nope"), Err(WkdError::Parse(_))));
    }
}

#[cfg(feature = "test-server")]
pub mod testing;
