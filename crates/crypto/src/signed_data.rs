//! Our CMS SignedData (RFC 5652 §5), written by hand, and the reader for
//! the signed attributes of a signature OpenSSL has verified.
//!
//! Why by hand: the `openssl` crate signs only with OpenSSL's built-in
//! attribute set, whose SMIMECapabilities list neither AES-GCM (which we
//! decrypt) nor anything we choose, and it exposes no call to add signed
//! attributes. The structure is small and fixed; OpenSSL still computes the
//! digest and the signature, and every output is checked by
//! `openssl cms -verify`, `gpgsm --verify` and our own OpenSSL-based verify
//! in the tests. Building it ourselves also lets [`Template`] encode the
//! certificates and signer identifier once per identity instead of once per
//! mail.

use openssl::error::ErrorStack;
use openssl::hash::{MessageDigest, hash};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::capabilities::{self, Capabilities};
use crate::der::{self, Tlv, tlv};

/// 1.2.840.113549.1.7.1 id-data
const ID_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
/// 1.2.840.113549.1.7.2 id-signedData
const ID_SIGNED_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
/// 1.2.840.113549.1.9.3 contentType
const ATTR_CONTENT_TYPE: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03];
/// 1.2.840.113549.1.9.4 messageDigest
const ATTR_MESSAGE_DIGEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x04];
/// 1.2.840.113549.1.9.5 signingTime
const ATTR_SIGNING_TIME: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05];
/// 1.2.840.113549.1.9.15 smimeCapabilities
const ATTR_SMIME_CAPABILITIES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0f];
/// 1.2.840.113549.1.9.16.2.11 id-aa-encrypKeyPref (RFC 8551 §2.5.3)
const ATTR_ENCRYPT_KEY_PREF: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x02, 0x0b,
];
/// 2.16.840.1.101.3.4.2.1 sha256, parameters absent (RFC 5754 §2)
const SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
/// 1.2.840.113549.1.1.1 rsaEncryption: the signatureAlgorithm OpenSSL, NSS
/// and Outlook write for PKCS#1 v1.5 signatures in CMS
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
/// 1.2.840.10045.4.3.2 ecdsa-with-SHA256 (RFC 5753)
const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

/// Everything of a SignedData that depends only on the signing identity,
/// encoded once.
pub(crate) struct Template {
    /// `[0] IMPLICIT CertificateSet`: signer certificate then chain.
    certificates: Vec<u8>,
    /// `IssuerAndSerialNumber` of the signer certificate.
    sid: Vec<u8>,
    /// `signatureAlgorithm` of the SignerInfo.
    signature_algorithm: Vec<u8>,
    /// The SMIMECapabilities and encryption-key-preference attributes,
    /// which are the same for every mail of this signer.
    fixed_attributes: Vec<Vec<u8>>,
}

/// Why a template cannot be made for a certificate.
#[derive(Debug)]
pub(crate) enum TemplateError {
    OpenSsl(ErrorStack),
    /// The certificate DER does not have the X.509 shape (cannot happen for
    /// a certificate OpenSSL parsed, but we do not index blindly).
    Shape,
}

impl From<ErrorStack> for TemplateError {
    fn from(e: ErrorStack) -> Self {
        TemplateError::OpenSsl(e)
    }
}

fn algorithm(oid: &[u8], null_parameters: bool) -> Vec<u8> {
    let mut inner = tlv(0x06, oid);
    if null_parameters {
        inner.extend_from_slice(&[0x05, 0x00]);
    }
    tlv(0x30, &inner)
}

fn attribute(oid: &[u8], value: &[u8]) -> Vec<u8> {
    let mut inner = tlv(0x06, oid);
    inner.extend_from_slice(&tlv(0x31, value));
    tlv(0x30, &inner)
}

/// `IssuerAndSerialNumber` content (issuer Name, serial INTEGER), cut from
/// the certificate's own encoding so it matches byte for byte.
fn issuer_and_serial(cert_der: &[u8]) -> Option<Vec<u8>> {
    let (cert, _) = der::read(cert_der)?;
    let tbs = cert.children().next()?;
    let mut fields = tbs.children();
    let mut serial = fields.next()?;
    if serial.tag == 0xa0 {
        // [0] EXPLICIT version
        serial = fields.next()?;
    }
    let _signature = fields.next()?;
    let issuer = fields.next()?;
    if serial.tag != 0x02 || issuer.tag != 0x30 {
        return None;
    }
    let mut out = issuer.raw.to_vec();
    out.extend_from_slice(serial.raw);
    Some(out)
}

impl Template {
    pub(crate) fn new(
        certificate: &X509,
        key: &PKey<Private>,
        chain: &[X509],
    ) -> Result<Template, TemplateError> {
        let cert_der = certificate.to_der()?;
        let ias = issuer_and_serial(&cert_der).ok_or(TemplateError::Shape)?;
        let mut certificates = cert_der.clone();
        for c in chain {
            certificates.extend_from_slice(&c.to_der()?);
        }
        let rsa = key.rsa().is_ok();
        let signature_algorithm = if rsa {
            algorithm(RSA_ENCRYPTION, true)
        } else {
            algorithm(ECDSA_SHA256, false)
        };
        let caps = capabilities::ours(rsa);
        let fixed_attributes = vec![
            attribute(ATTR_SMIME_CAPABILITIES, &caps.to_der()),
            // SMIMEEncryptionKeyPreference ::= CHOICE { issuerAndSerialNumber [0] ... }:
            // tells clients to encrypt to this (signing) certificate.
            attribute(ATTR_ENCRYPT_KEY_PREF, &tlv(0xa0, &ias)),
        ];
        Ok(Template {
            certificates: tlv(0xa0, &certificates),
            sid: tlv(0x30, &ias),
            signature_algorithm,
            fixed_attributes,
        })
    }

    /// A detached SignedData (DER ContentInfo) over `content`, signed at
    /// `signing_time` (Unix seconds).
    pub(crate) fn sign(
        &self,
        content: &[u8],
        key: &PKey<Private>,
        signing_time: i64,
    ) -> Result<Vec<u8>, ErrorStack> {
        let digest = hash(MessageDigest::sha256(), content)?;
        let mut attributes: Vec<Vec<u8>> = Vec::with_capacity(5);
        attributes.push(attribute(ATTR_CONTENT_TYPE, &tlv(0x06, ID_DATA)));
        attributes.push(attribute(ATTR_SIGNING_TIME, &time(signing_time)));
        attributes.push(attribute(ATTR_MESSAGE_DIGEST, &tlv(0x04, &digest)));
        attributes.extend(self.fixed_attributes.iter().cloned());
        // DER: the elements of a SET OF in ascending order of their encodings.
        attributes.sort();
        let attrs: Vec<u8> = attributes.concat();
        // The signature covers the attributes with the universal SET tag
        // (RFC 5652 §5.4), not the [0] IMPLICIT tag they travel under.
        let signed = tlv(0x31, &attrs);
        let mut signer = openssl::sign::Signer::new(MessageDigest::sha256(), key)?;
        let signature = signer.sign_oneshot_to_vec(&signed)?;

        let digest_algorithm = algorithm(SHA256, false);
        let mut signer_info = tlv(0x02, &[1]);
        signer_info.extend_from_slice(&self.sid);
        signer_info.extend_from_slice(&digest_algorithm);
        signer_info.extend_from_slice(&tlv(0xa0, &attrs));
        signer_info.extend_from_slice(&self.signature_algorithm);
        signer_info.extend_from_slice(&tlv(0x04, &signature));

        let mut sd = tlv(0x02, &[1]);
        sd.extend_from_slice(&tlv(0x31, &digest_algorithm));
        sd.extend_from_slice(&tlv(0x30, &tlv(0x06, ID_DATA)));
        sd.extend_from_slice(&self.certificates);
        sd.extend_from_slice(&tlv(0x31, &tlv(0x30, &signer_info)));

        let mut ci = tlv(0x06, ID_SIGNED_DATA);
        ci.extend_from_slice(&tlv(0xa0, &tlv(0x30, &sd)));
        Ok(tlv(0x30, &ci))
    }
}

/// `Time` as CMS wants it: UTCTime for 1950–2049, GeneralizedTime otherwise
/// (RFC 5652 §11.3).
fn time(unix: i64) -> Vec<u8> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    if (1950..2050).contains(&y) {
        let text = format!("{:02}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z", y % 100);
        tlv(0x17, text.as_bytes())
    } else {
        let text = format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}Z");
        tlv(0x18, text.as_bytes())
    }
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The signed attributes of the first SignerInfo of a SignedData
/// ContentInfo (DER or BER). Only call this on a signature OpenSSL has
/// verified: the attributes are then authenticated.
pub(crate) fn first_signed_attributes(cms: &[u8]) -> Option<Vec<(Vec<u8>, Tlv<'_>)>> {
    let (ci, _) = der::read(cms)?;
    let mut ci_parts = ci.children();
    let oid = ci_parts.next()?;
    if oid.tag != 0x06 || oid.content != ID_SIGNED_DATA {
        return None;
    }
    let explicit = ci_parts.next()?;
    let sd = explicit.children().next()?;
    let signer_infos = sd.children().filter(|t| t.tag == 0x31).last()?;
    let signer_info = signer_infos.children().next()?;
    let attrs = signer_info.children().find(|t| t.tag == 0xa0)?;
    let mut out = Vec::new();
    for attr in attrs.children() {
        let mut parts = attr.children();
        let (Some(oid), Some(values)) = (parts.next(), parts.next()) else {
            continue;
        };
        if oid.tag != 0x06 || values.tag != 0x31 {
            continue;
        }
        out.push((oid.content.to_vec(), values));
    }
    Some(out)
}

/// The SMIMECapabilities of the first signer of a verified SignedData;
/// empty when it announced none.
pub(crate) fn capabilities(cms: &[u8]) -> Capabilities {
    first_signed_attributes(cms)
        .and_then(|attrs| {
            let (_, values) = attrs
                .into_iter()
                .find(|(oid, _)| oid == ATTR_SMIME_CAPABILITIES)?;
            let value = values.children().next()?;
            Capabilities::from_der(value.raw)
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smime::ContentCipher;

    #[test]
    fn times_are_utc_or_generalized() {
        // 2026-06-01T00:00:00Z
        assert_eq!(time(1_780_272_000), tlv(0x17, b"260601000000Z"));
        // 2000-02-29T12:34:56Z (a leap day)
        assert_eq!(time(951_827_696), tlv(0x17, b"000229123456Z"));
        // 2050-01-01T00:00:00Z switches to GeneralizedTime
        assert_eq!(time(2_524_608_000), tlv(0x18, b"20500101000000Z"));
        assert_eq!(time(0), tlv(0x17, b"700101000000Z"));
    }

    #[test]
    fn attribute_constants_are_the_oids_they_name() {
        for (bytes, text) in [
            (ID_DATA, "1.2.840.113549.1.7.1"),
            (ID_SIGNED_DATA, "1.2.840.113549.1.7.2"),
            (ATTR_CONTENT_TYPE, "1.2.840.113549.1.9.3"),
            (ATTR_MESSAGE_DIGEST, "1.2.840.113549.1.9.4"),
            (ATTR_SIGNING_TIME, "1.2.840.113549.1.9.5"),
            (ATTR_SMIME_CAPABILITIES, "1.2.840.113549.1.9.15"),
            (ATTR_ENCRYPT_KEY_PREF, "1.2.840.113549.1.9.16.2.11"),
            (SHA256, "2.16.840.1.101.3.4.2.1"),
            (RSA_ENCRYPTION, "1.2.840.113549.1.1.1"),
            (ECDSA_SHA256, "1.2.840.10045.4.3.2"),
        ] {
            assert_eq!(der::oid_text(bytes).as_deref(), Some(text));
        }
    }

    /// Thunderbird's own SMIMECapabilities (a Thunderbird Daily mail from
    /// Mozilla's test data, NSS encoding with indefinite lengths). Its body
    /// was edited after signing, so it cannot verify; this reads the
    /// attribute of the real encoding directly.
    #[test]
    fn thunderbird_capabilities_are_read_from_its_ber_signature() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "../../../shared/testdata/thunderbird/mail/test/browser/openpgp/data/eml/\
             dual-signed-uncommon-content-type.eml",
        );
        let mail = std::fs::read(&path).unwrap();
        let (head, body) = crate::mime::split_header_body(&mail);
        let ctype = crate::mime::content_type(&crate::mime::parse_headers(head));
        let boundary = ctype.param("boundary").unwrap();
        let mp = crate::mime::split_multipart(body, boundary).unwrap();
        let (_, sig) = crate::mime::split_header_body(mp.parts[1]);
        let der = crate::mime::decode_base64(sig).unwrap();
        assert_eq!(&der[..2], &[0x30, 0x80], "BER, indefinite length");
        let caps = capabilities(&der);
        let names: Vec<_> = caps.entries().iter().filter_map(|c| c.name()).collect();
        assert_eq!(
            &names[..8],
            [
                "aes-256-cbc",
                "aes-128-cbc",
                "des-ede3-cbc",
                "rc2-cbc",
                "rc2-cbc",
                "des-cbc",
                "rc2-cbc",
                "sha1"
            ]
        );
        assert!(names.contains(&"sha256") && names.contains(&"rsaEncryption"));
        assert!(caps.entries().len() > 20, "{caps:?}");
        assert_eq!(caps.preferred_cipher(), Some(ContentCipher::Aes256Cbc));
        assert!(!caps.supports(ContentCipher::Aes256Gcm));
        // the other attributes are there too, so the walk found the SignerInfo
        let attrs = first_signed_attributes(&der).unwrap();
        assert!(attrs.iter().any(|(oid, _)| oid == ATTR_ENCRYPT_KEY_PREF));
        assert!(attrs.iter().any(|(oid, _)| oid == ATTR_MESSAGE_DIGEST));
    }

    #[test]
    fn garbage_and_truncation_yield_no_capabilities() {
        assert!(capabilities(b"").is_empty());
        assert!(capabilities(&[0x30, 0x80, 0x06, 0x01]).is_empty());
        assert!(first_signed_attributes(&tlv(0x30, &tlv(0x06, ID_DATA))).is_none());
    }
}
