//! SMIMECapabilities (RFC 8551 §2.5.2): what a correspondent's client says
//! it can decrypt, harvested from the signed attributes of their signature.
//!
//! The attribute is a list in order of preference. A gateway that encrypts
//! to a harvested certificate reads it to choose AES-256-GCM only for
//! recipients that announced it (gpgsm 2.2 and older clients cannot decrypt
//! GCM, so CBC stays the default for everyone else). Our own signatures
//! announce what *we* decrypt — see [`OURS`].

use crate::der;
use crate::smime::ContentCipher;

/// One entry of the attribute: an algorithm and its optional parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    oid: String,
    parameters: Option<Vec<u8>>,
}

/// Algorithms we know by name, with their OIDs. The names are OpenSSL's
/// short names so that log lines match `openssl cms -print`.
const NAMES: &[(&str, &str)] = &[
    ("2.16.840.1.101.3.4.1.46", "aes-256-gcm"),
    ("2.16.840.1.101.3.4.1.26", "aes-192-gcm"),
    ("2.16.840.1.101.3.4.1.6", "aes-128-gcm"),
    ("2.16.840.1.101.3.4.1.42", "aes-256-cbc"),
    ("2.16.840.1.101.3.4.1.22", "aes-192-cbc"),
    ("2.16.840.1.101.3.4.1.2", "aes-128-cbc"),
    ("1.2.840.113549.3.7", "des-ede3-cbc"),
    ("1.2.840.113549.3.2", "rc2-cbc"),
    ("1.3.14.3.2.7", "des-cbc"),
    ("1.3.14.3.2.26", "sha1"),
    ("2.16.840.1.101.3.4.2.4", "sha224"),
    ("2.16.840.1.101.3.4.2.1", "sha256"),
    ("2.16.840.1.101.3.4.2.2", "sha384"),
    ("2.16.840.1.101.3.4.2.3", "sha512"),
    ("1.2.840.113549.1.1.1", "rsaEncryption"),
    ("1.2.840.113549.1.1.7", "rsaesOaep"),
    ("1.2.840.113549.1.1.10", "rsassaPss"),
    ("1.2.840.113549.1.1.11", "sha256WithRSAEncryption"),
    ("1.2.840.10045.4.3.2", "ecdsa-with-SHA256"),
];

const AES_256_GCM: &str = "2.16.840.1.101.3.4.1.46";
const AES_256_CBC: &str = "2.16.840.1.101.3.4.1.42";

impl Capability {
    /// The algorithm, as a dotted OID.
    pub fn oid(&self) -> &str {
        &self.oid
    }

    /// The DER parameters, when the sender gave any (RC2 key size, ...).
    pub fn parameters(&self) -> Option<&[u8]> {
        self.parameters.as_deref()
    }

    /// OpenSSL's short name for algorithms we know (`aes-256-gcm`, `sha256`).
    pub fn name(&self) -> Option<&'static str> {
        NAMES
            .iter()
            .find(|(oid, _)| *oid == self.oid)
            .map(|(_, name)| *name)
    }

    /// The content cipher this entry names, if it is one we can encrypt with.
    pub fn cipher(&self) -> Option<ContentCipher> {
        match self.oid.as_str() {
            AES_256_GCM => Some(ContentCipher::Aes256Gcm),
            AES_256_CBC => Some(ContentCipher::Aes256Cbc),
            _ => None,
        }
    }
}

/// The SMIMECapabilities of one signature, in the signer's order of
/// preference. Empty when the signature carried none (NSS test messages,
/// gpgsm): then nothing is known and CBC is the safe choice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    entries: Vec<Capability>,
}

impl Capabilities {
    /// The entries in the signer's order of preference.
    pub fn entries(&self) -> &[Capability] {
        &self.entries
    }

    /// True when the signature announced nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when the signer announced `cipher`.
    pub fn supports(&self, cipher: ContentCipher) -> bool {
        self.entries.iter().any(|c| c.cipher() == Some(cipher))
    }

    /// The first cipher in the signer's preference that we can produce.
    pub fn preferred_cipher(&self) -> Option<ContentCipher> {
        self.entries.iter().find_map(Capability::cipher)
    }

    /// True when AES-256-GCM is the signer's first choice among the ciphers
    /// we can produce. [`Capabilities::supports`] is the weaker question
    /// ("can they read GCM at all?") the outbound choice asks.
    pub fn prefers_gcm(&self) -> bool {
        self.preferred_cipher() == Some(ContentCipher::Aes256Gcm)
    }

    /// Parses the attribute value (`SMIMECapabilities ::= SEQUENCE OF
    /// SMIMECapability`). Entries that are not well-formed are skipped; a
    /// value that is not a SEQUENCE yields `None`.
    pub(crate) fn from_der(value: &[u8]) -> Option<Capabilities> {
        let (seq, _) = der::read(value)?;
        if seq.tag != 0x30 {
            return None;
        }
        let mut entries = Vec::new();
        for cap in seq.children() {
            if cap.tag != 0x30 {
                continue;
            }
            let mut parts = cap.children();
            let Some(oid) = parts.next().filter(|o| o.tag == 0x06) else {
                continue;
            };
            let Some(oid) = der::oid_text(oid.content) else {
                continue;
            };
            let parameters = parts.next().map(|p| p.raw.to_vec());
            entries.push(Capability { oid, parameters });
        }
        Some(Capabilities { entries })
    }

    /// The attribute value (DER) for our own signatures.
    pub(crate) fn to_der(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for c in &self.entries {
            // Our list holds only our own constants, which are valid OIDs.
            let Some(oid) = der::oid(&c.oid) else {
                continue;
            };
            let mut inner = der::tlv(0x06, &oid);
            if let Some(p) = &c.parameters {
                inner.extend_from_slice(p);
            }
            body.extend_from_slice(&der::tlv(0x30, &inner));
        }
        der::tlv(0x30, &body)
    }
}

/// What our signatures announce, best first: the content ciphers Siegel
/// decrypts (AES-GCM first because it is authenticated; no 3DES, RC2 or DES,
/// which RFC 8551 §2.7 retires), the digests it verifies, and for RSA keys
/// RSA-OAEP and PKCS#1 v1.5 key transport.
pub const OURS: &[&str] = &[
    AES_256_GCM,
    "2.16.840.1.101.3.4.1.6",
    AES_256_CBC,
    "2.16.840.1.101.3.4.1.22",
    "2.16.840.1.101.3.4.1.2",
    "2.16.840.1.101.3.4.2.1",
    "2.16.840.1.101.3.4.2.2",
    "2.16.840.1.101.3.4.2.3",
];

/// Key-transport algorithms announced when our key is RSA.
const OURS_RSA: &[&str] = &["1.2.840.113549.1.1.7", "1.2.840.113549.1.1.1"];

/// Our own capabilities for a signing key of the given kind.
pub(crate) fn ours(rsa: bool) -> Capabilities {
    let extra: &[&str] = if rsa { OURS_RSA } else { &[] };
    Capabilities {
        entries: OURS
            .iter()
            .chain(extra)
            .map(|oid| Capability {
                oid: (*oid).to_owned(),
                parameters: None,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_round_trip_and_prefer_gcm() {
        let caps = ours(true);
        let parsed = Capabilities::from_der(&caps.to_der()).unwrap();
        assert_eq!(parsed, caps);
        assert!(parsed.prefers_gcm());
        assert!(parsed.supports(ContentCipher::Aes256Cbc));
        let names: Vec<_> = parsed.entries().iter().filter_map(|c| c.name()).collect();
        assert_eq!(
            names,
            [
                "aes-256-gcm",
                "aes-128-gcm",
                "aes-256-cbc",
                "aes-192-cbc",
                "aes-128-cbc",
                "sha256",
                "sha384",
                "sha512",
                "rsaesOaep",
                "rsaEncryption"
            ]
        );
        assert_eq!(ours(false).entries().len(), OURS.len());
    }

    #[test]
    fn parameters_and_unknown_algorithms_are_kept() {
        // SEQUENCE { SEQUENCE { rc2-cbc, INTEGER 40 }, SEQUENCE { 1.2.3.4 } }
        let rc2 = der::tlv(
            0x30,
            &[
                der::tlv(0x06, &der::oid("1.2.840.113549.3.2").unwrap()),
                vec![2, 1, 40],
            ]
            .concat(),
        );
        let other = der::tlv(0x30, &der::tlv(0x06, &der::oid("1.2.3.4").unwrap()));
        let value = der::tlv(0x30, &[rc2, other].concat());
        let caps = Capabilities::from_der(&value).unwrap();
        assert_eq!(caps.entries()[0].name(), Some("rc2-cbc"));
        assert_eq!(caps.entries()[0].parameters(), Some(&[2u8, 1, 40][..]));
        assert_eq!(caps.entries()[1].oid(), "1.2.3.4");
        assert_eq!(caps.entries()[1].name(), None);
        assert_eq!(caps.preferred_cipher(), None);
        assert!(!caps.prefers_gcm());
        assert!(Capabilities::from_der(&[0x04, 0x00]).is_none());
    }
}
