//! The managed PKI (mPKI): Siegel's own certification authority.
//!
//! Users of a gateway rarely have certificates of their own, and buying one
//! per mailbox is what keeps S/MIME out of most organisations. Siegel
//! therefore runs a small CA and issues certificates that follow the CA/Browser
//! Forum S/MIME Baseline Requirements profile, so that clients and other
//! gateways accept them once they trust our CA certificate:
//!
//! * keyUsage `digitalSignature` + `keyEncipherment` (RSA) or
//!   `digitalSignature` + `keyAgreement` (EC), critical;
//! * extKeyUsage `emailProtection`;
//! * subjectAltName `rfc822Name` (the only place modern clients look);
//! * a serial of 128 random bits (BR: at least 64 bits of CSPRNG output);
//! * CRL distribution point, authority and subject key identifiers.
//!
//! Everything is built with OpenSSL's `X509Builder`; the one crypto library
//! serves PKI and CMS alike.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, CrlNumber, ExtendedKeyUsage, KeyUsage,
    SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{
    X509, X509Builder, X509Crl, X509CrlBuilder, X509Extension, X509KeyUsage, X509NameBuilder,
    X509RevokedBuilder,
};
use siegel_types::Address;

use crate::der;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// OpenSSL refused an operation; with correct inputs this is our bug or a
    /// broken OpenSSL installation.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
    /// A certificate or key given to us (import) could not be parsed.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What we tried to read ("CA certificate", "CA key", ...).
        what: &'static str,
        /// OpenSSL's explanation.
        detail: String,
    },
    /// The imported CA key does not belong to the imported CA certificate.
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    /// The imported certificate is not a CA certificate (basicConstraints cA).
    #[error("the certificate is not a CA certificate")]
    NotACa,
    /// The address needs SMTPUTF8; a plain `rfc822Name` cannot carry it and
    /// `SmtpUTF8Mailbox` names are not supported yet.
    #[error("address `{0}` needs SMTPUTF8, which certificates cannot carry as rfc822Name")]
    InternationalAddress(String),
    /// A parameter is out of range (empty name, zero validity, bad URL).
    #[error("invalid parameter: {0}")]
    Parameter(&'static str),
}

/// The key algorithm of a CA or user key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyKind {
    /// RSA with a 3072-bit modulus: the default, because every S/MIME client
    /// and gpgsm 2.2 can encrypt to it.
    #[default]
    Rsa3072,
    /// ECDSA/ECDH on NIST P-256: smaller and faster, but older clients cannot
    /// encrypt to it.
    EcP256,
}

impl KeyKind {
    /// Generates a fresh private key of this kind.
    pub fn generate(self) -> Result<PKey<Private>, PkiError> {
        Ok(match self {
            KeyKind::Rsa3072 => PKey::from_rsa(Rsa::generate(3072)?)?,
            KeyKind::EcP256 => {
                let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
                PKey::from_ec_key(EcKey::generate(&group)?)?
            }
        })
    }
}

/// How to create a CA.
#[derive(Debug, Clone)]
pub struct CaParams {
    /// Subject common name, e.g. "Siegel CA example.com".
    pub common_name: String,
    /// Subject organisation, if any.
    pub organization: Option<String>,
    /// Key algorithm.
    pub key: KeyKind,
    /// Validity start as Unix seconds; callers pass "now" (injectable for tests).
    pub not_before: i64,
    /// Validity in days.
    pub validity_days: u32,
}

/// How to issue a user certificate.
#[derive(Debug, Clone)]
pub struct UserParams<'a> {
    /// The mailbox the certificate is for (subjectAltName rfc822Name).
    pub address: &'a Address,
    /// Display name; when present it becomes the subject CN, otherwise the
    /// address does (BR "mailbox-validated").
    pub name: Option<&'a str>,
    /// Key algorithm.
    pub key: KeyKind,
    /// Validity start as Unix seconds.
    pub not_before: i64,
    /// Validity in days (the BR allow at most 825).
    pub validity_days: u32,
    /// URL where the CRL is published (portal/admin listener), e.g.
    /// `http://siegel.example.com/crl/ca.crl`.
    pub crl_url: &'a str,
}

/// A revoked certificate entry for [`Ca::issue_crl`].
#[derive(Debug, Clone)]
pub struct Revocation {
    /// Serial number of the revoked certificate (big-endian bytes, as
    /// returned by [`serial_bytes`]).
    pub serial: Vec<u8>,
    /// When it was revoked, Unix seconds.
    pub revoked_at: i64,
}

/// A freshly issued certificate with its private key.
pub struct Issued {
    /// The certificate.
    pub certificate: X509,
    /// Its private key (the store keeps it encrypted under the master key).
    pub key: PKey<Private>,
}

/// Siegel's CA: its certificate and private key.
pub struct Ca {
    certificate: X509,
    key: PKey<Private>,
}

/// BR policy OIDs (DER content of the OBJECT IDENTIFIER).
/// 2.23.140.1.5.1.3 mailbox-validated, strict.
const POLICY_MAILBOX_STRICT: &[u8] = &[0x67, 0x81, 0x0c, 0x01, 0x05, 0x01, 0x03];
/// 2.23.140.1.5.4.3 individual-validated, strict (a display name is vouched
/// for by the organisation running Siegel).
const POLICY_INDIVIDUAL_STRICT: &[u8] = &[0x67, 0x81, 0x0c, 0x01, 0x05, 0x04, 0x03];

const SECONDS_PER_DAY: i64 = 86_400;

impl Ca {
    /// Creates a new self-signed CA (first start of Siegel).
    pub fn create(params: &CaParams) -> Result<Ca, PkiError> {
        if params.common_name.trim().is_empty() {
            return Err(PkiError::Parameter("CA common name is empty"));
        }
        if params.validity_days == 0 {
            return Err(PkiError::Parameter("validity of zero days"));
        }
        let key = params.key.generate()?;
        let mut name = X509NameBuilder::new()?;
        if let Some(org) = &params.organization {
            name.append_entry_by_nid(Nid::ORGANIZATIONNAME, org)?;
        }
        name.append_entry_by_nid(Nid::COMMONNAME, &params.common_name)?;
        let name = name.build();

        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        builder.set_serial_number(&*random_serial()?)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&key)?;
        set_validity(&mut builder, params.not_before, params.validity_days)?;
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
        builder.append_extension(ski)?;
        builder.sign(&key, MessageDigest::sha256())?;
        Ok(Ca {
            certificate: builder.build(),
            key,
        })
    }

    /// Imports an existing CA (`siegel ca import --cert F --key F`).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Ca, PkiError> {
        let certificate = X509::from_pem(cert_pem).map_err(|e| PkiError::Parse {
            what: "CA certificate",
            detail: e.to_string(),
        })?;
        let key = PKey::private_key_from_pem(key_pem).map_err(|e| PkiError::Parse {
            what: "CA private key",
            detail: e.to_string(),
        })?;
        Ca::from_parts(certificate, key)
    }

    /// Assembles a CA from a parsed certificate and key, checking that they
    /// belong together and that the certificate may sign certificates.
    pub fn from_parts(certificate: X509, key: PKey<Private>) -> Result<Ca, PkiError> {
        let public = certificate.public_key()?;
        if !public.public_eq(&key) {
            return Err(PkiError::KeyMismatch);
        }
        if !is_ca(&certificate)? {
            return Err(PkiError::NotACa);
        }
        Ok(Ca { certificate, key })
    }

    /// The CA certificate.
    pub fn certificate(&self) -> &X509 {
        &self.certificate
    }

    /// The CA private key (for the store, which encrypts it).
    pub fn key(&self) -> &PKey<Private> {
        &self.key
    }

    /// The CA certificate as PEM (`siegel ca export`).
    pub fn certificate_pem(&self) -> Result<Vec<u8>, PkiError> {
        Ok(self.certificate.to_pem()?)
    }

    /// Issues a user certificate with a freshly generated key.
    pub fn issue_user(&self, params: &UserParams<'_>) -> Result<Issued, PkiError> {
        let key = params.key.generate()?;
        let certificate = self.issue_user_for_key(params, &key)?;
        Ok(Issued { certificate, key })
    }

    /// Issues a user certificate for an existing key (renewal keeps the key
    /// so mail encrypted to the old certificate stays readable).
    pub fn issue_user_for_key(
        &self,
        params: &UserParams<'_>,
        key: &PKey<Private>,
    ) -> Result<X509, PkiError> {
        let address = params.address.as_str();
        if params.address.needs_smtputf8() {
            return Err(PkiError::InternationalAddress(address.to_owned()));
        }
        if params.validity_days == 0 {
            return Err(PkiError::Parameter("validity of zero days"));
        }
        if !(params.crl_url.starts_with("http://") || params.crl_url.starts_with("https://"))
            || !params.crl_url.is_ascii()
            || params
                .crl_url
                .bytes()
                .any(|b| b.is_ascii_control() || b == b' ')
        {
            return Err(PkiError::Parameter("CRL URL must be an ASCII http(s) URL"));
        }
        let name = params.name.map(str::trim).filter(|n| !n.is_empty());

        let mut subject = X509NameBuilder::new()?;
        subject.append_entry_by_nid(Nid::COMMONNAME, name.unwrap_or(address))?;
        subject.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, address)?;
        let subject = subject.build();

        let mut builder = X509Builder::new()?;
        builder.set_version(2)?;
        builder.set_serial_number(&*random_serial()?)?;
        builder.set_subject_name(&subject)?;
        builder.set_issuer_name(self.certificate.subject_name())?;
        builder.set_pubkey(key)?;
        set_validity(&mut builder, params.not_before, params.validity_days)?;

        builder.append_extension(BasicConstraints::new().critical().build()?)?;
        let mut usage = KeyUsage::new();
        usage.critical().digital_signature();
        if key.rsa().is_ok() {
            usage.key_encipherment();
        } else {
            usage.key_agreement();
        }
        builder.append_extension(usage.build()?)?;
        builder.append_extension(ExtendedKeyUsage::new().email_protection().build()?)?;
        let san = SubjectAlternativeName::new()
            .email(address)
            .build(&builder.x509v3_context(Some(&self.certificate), None))?;
        builder.append_extension(san)?;
        let ski = SubjectKeyIdentifier::new()
            .build(&builder.x509v3_context(Some(&self.certificate), None))?;
        builder.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(&self.certificate), None))?;
        builder.append_extension(aki)?;
        builder.append_extension(der_extension(
            "2.5.29.31",
            &der::crl_distribution_points(params.crl_url),
        )?)?;
        let policy = if name.is_some() {
            POLICY_INDIVIDUAL_STRICT
        } else {
            POLICY_MAILBOX_STRICT
        };
        builder.append_extension(der_extension(
            "2.5.29.32",
            &der::certificate_policies(policy),
        )?)?;
        builder.sign(&self.key, MessageDigest::sha256())?;
        Ok(builder.build())
    }

    /// Issues a CRL listing `revoked`, valid from `this_update` for
    /// `validity_days` (Unix seconds), numbered `number` (must grow).
    pub fn issue_crl(
        &self,
        revoked: &[Revocation],
        number: u64,
        this_update: i64,
        validity_days: u32,
    ) -> Result<X509Crl, PkiError> {
        let mut builder = X509CrlBuilder::new()?;
        builder.set_issuer_name(self.certificate.subject_name())?;
        builder.set_last_update(&*Asn1Time::from_unix(this_update)?)?;
        let next = this_update.saturating_add(i64::from(validity_days) * SECONDS_PER_DAY);
        builder.set_next_update(&*Asn1Time::from_unix(next)?)?;
        for entry in revoked {
            if entry.serial.is_empty() {
                return Err(PkiError::Parameter(
                    "empty serial number in revocation list",
                ));
            }
            let serial = Asn1Integer::from_bn(&*BigNum::from_slice(&entry.serial)?)?;
            let mut r = X509RevokedBuilder::new()?;
            r.set_serial_number(&serial)?;
            r.set_revocation_date(&*Asn1Time::from_unix(entry.revoked_at)?)?;
            builder.add_revoked(r.build())?;
        }
        builder.sort()?;
        builder.append_extension(
            CrlNumber::new(BigNum::from_dec_str(&number.to_string())?)?.build()?,
        )?;
        if let Some(ski) = self.certificate.subject_key_id() {
            // AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }
            let aki = der::tlv(0x30, &der::tlv(0x80, ski.as_slice()));
            builder.append_extension(der_extension("2.5.29.35", &aki)?)?;
        }
        builder.sign(&self.key, MessageDigest::sha256())?;
        Ok(builder.build()?)
    }
}

/// A certificate's serial number as big-endian bytes (the form
/// [`Revocation::serial`] takes and the store records).
pub fn serial_bytes(certificate: &X509) -> Result<Vec<u8>, PkiError> {
    Ok(certificate.serial_number().to_bn()?.to_vec())
}

/// Exports a key and certificate (with its chain) as PKCS#12 for users who
/// want their key in their own client.
///
/// Uses PBE-SHA1-3DES and a SHA-1 MAC instead of OpenSSL 3's PBES2/AES
/// defaults: gpgsm 2.2 and older Outlook versions cannot read those. The
/// password protects a file the user carries around, so the weaker PBE is the
/// price of being importable at all.
///
/// gpgsm 2.2 also derives a wrong 3DES key for about one random salt in a
/// hundred (see [`p12_gpgsm_compatible`]); such a file is built again with
/// fresh salts, so every file we hand out imports.
pub fn export_p12(
    certificate: &X509,
    key: &PKey<Private>,
    chain: &[X509],
    friendly_name: &str,
    password: &str,
) -> Result<Vec<u8>, PkiError> {
    let mut ca = Stack::new()?;
    for c in chain {
        ca.push(c.clone())?;
    }
    let mut builder = Pkcs12::builder();
    builder
        .name(friendly_name)
        .pkey(key)
        .cert(certificate)
        .ca(ca)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    // The chance that all attempts hit a bad salt is about 0.02^16.
    let mut der = builder.build2(password)?.to_der()?;
    for _ in 0..16 {
        if p12_gpgsm_compatible(&der, password) {
            break;
        }
        der = builder.build2(password)?.to_der()?;
    }
    Ok(der)
}

/// 1.2.840.113549.1.12.1.3 pbeWithSHAAnd3-KeyTripleDES-CBC
const PBE_SHA1_3DES: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x01, 0x03];
/// 1.2.840.113549.1.7.1 data, 1.2.840.113549.1.7.6 encryptedData
const P7_DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
const P7_ENCRYPTED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x06];
/// 1.2.840.113549.1.12.10.1.2 pkcs8ShroudedKeyBag
const SHROUDED_KEY_BAG: &[u8] = &[
    0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x0c, 0x0a, 0x01, 0x02,
];

/// Whether gpgsm 2.2 can decrypt every PBE-SHA1-3DES part of a PKCS#12
/// file made with `password`.
///
/// gpgsm's PKCS#12 key derivation (RFC 7292 appendix B) writes the updated
/// I blocks with `gcry_mpi_print`, which drops leading zero bytes and so
/// shifts the block whenever `I_j + B + 1` starts with a zero byte. For the
/// 24-byte 3DES key (two hash rounds, one update) that happens for about
/// one salt in 128 per encrypted part; gpgsm then reports "decryption
/// failed" with the right password. This checks each part for exactly that
/// condition; a file that does not parse as we wrote it counts as
/// incompatible.
pub fn p12_gpgsm_compatible(der_bytes: &[u8], password: &str) -> bool {
    let Some(params) = pbe_parameters(der_bytes) else {
        return false;
    };
    params
        .iter()
        .all(|(salt, iterations)| pkcs12_key_update_is_gpgsm_safe(salt, *iterations, password))
}

/// Salt and iteration count of every PBE-SHA1-3DES AlgorithmIdentifier in
/// a PFX: the shrouded key bags and the encrypted certificate bags.
fn pbe_parameters(pfx: &[u8]) -> Option<Vec<(Vec<u8>, u32)>> {
    fn octets<'a>(explicit: der::Tlv<'a>) -> Option<&'a [u8]> {
        let inner = explicit.children().next()?;
        (inner.tag == 0x04).then_some(inner.content)
    }
    fn algorithm(alg: der::Tlv<'_>, out: &mut Vec<(Vec<u8>, u32)>) -> Option<()> {
        let parts = alg.child_vec()?;
        if parts.first()?.content != PBE_SHA1_3DES {
            return Some(()); // another algorithm: not gpgsm's 3DES path
        }
        let params = parts.get(1)?.child_vec()?;
        let salt = params.first().filter(|t| t.tag == 0x04)?.content.to_vec();
        let iter = params.get(1).filter(|t| t.tag == 0x02)?.content;
        if iter.len() > 4 {
            return None;
        }
        let iterations = iter.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        out.push((salt, iterations));
        Some(())
    }
    let (pfx, _) = der::read(pfx)?;
    let auth_safe = pfx.child_vec()?.get(1).copied()?;
    let auth_parts = auth_safe.child_vec()?;
    let (safe, _) = der::read(octets(*auth_parts.get(1)?)?)?;
    let mut out = Vec::new();
    for ci in safe.children() {
        let parts = ci.child_vec()?;
        let oid = parts.first()?.content;
        let content = *parts.get(1)?;
        if oid == P7_ENCRYPTED {
            let ed = content.children().next()?.child_vec()?;
            let eci = ed.get(1)?.child_vec()?;
            algorithm(*eci.get(1)?, &mut out)?;
        } else if oid == P7_DATA {
            let (bags, _) = der::read(octets(content)?)?;
            for bag in bags.children() {
                let parts = bag.child_vec()?;
                if parts.first()?.content == SHROUDED_KEY_BAG {
                    let epki = parts.get(1)?.children().next()?;
                    algorithm(epki.children().next()?, &mut out)?;
                }
            }
        }
    }
    Some(out)
}

/// The first round of the PKCS#12 KDF for the encryption key (ID 1), and
/// whether the I-block update after it keeps every block's first byte
/// non-zero (then gpgsm's shortened write does not happen).
fn pkcs12_key_update_is_gpgsm_safe(salt: &[u8], iterations: u32, password: &str) -> bool {
    const V: usize = 64;
    if salt.is_empty() || iterations == 0 {
        return false;
    }
    // BMPString of the password with its two zero bytes, as OpenSSL writes it
    let mut pw: Vec<u8> = password.encode_utf16().flat_map(u16::to_be_bytes).collect();
    pw.extend_from_slice(&[0, 0]);
    let s_len = salt.len().div_ceil(V) * V;
    let p_len = pw.len().div_ceil(V) * V;
    let mut i_blocks = Vec::with_capacity(s_len + p_len);
    i_blocks.extend((0..s_len).map(|k| salt[k % salt.len()]));
    i_blocks.extend((0..p_len).map(|k| pw[k % pw.len()]));
    let mut input = vec![1u8; V];
    input.extend_from_slice(&i_blocks);
    let Ok(mut a) = openssl::hash::hash(MessageDigest::sha1(), &input) else {
        return false;
    };
    for _ in 1..iterations {
        match openssl::hash::hash(MessageDigest::sha1(), &a) {
            Ok(next) => a = next,
            Err(_) => return false,
        }
    }
    let b: Vec<u8> = (0..V).map(|k| a[k % a.len()]).collect();
    i_blocks.chunks(V).all(|block| {
        // (block + B + 1) mod 2^512, big-endian, from the last byte up
        let mut carry = 1u16;
        let mut first = 0u8;
        for k in (0..V).rev() {
            let sum = u16::from(block[k]) + u16::from(b[k]) + carry;
            carry = sum >> 8;
            if k == 0 {
                first = (sum & 0xff) as u8;
            }
        }
        first != 0
    })
}

/// The mail addresses a certificate speaks for: subjectAltName rfc822Names
/// and, for old certificates, the subject emailAddress. Entries that are not
/// valid addresses are skipped; duplicates are removed.
pub fn certificate_addresses(certificate: &X509) -> Vec<Address> {
    let mut out: Vec<Address> = Vec::new();
    let mut push = |text: &str| {
        if let Ok(a) = Address::parse(text)
            && !out
                .iter()
                .any(|o| o.as_str().eq_ignore_ascii_case(a.as_str()))
        {
            out.push(a);
        }
    };
    if let Some(names) = certificate.subject_alt_names() {
        for n in names.iter() {
            if let Some(email) = n.email() {
                push(email);
            }
        }
    }
    for entry in certificate
        .subject_name()
        .entries_by_nid(Nid::PKCS9_EMAILADDRESS)
    {
        if let Ok(text) = entry.data().to_string() {
            push(&text);
        }
    }
    out
}

/// A CA certificate must carry keyUsage keyCertSign (RFC 5280 §4.2.1.3 ties
/// it to basicConstraints cA, which OpenSSL enforces when it verifies chains).
fn is_ca(certificate: &X509) -> Result<bool, PkiError> {
    Ok(certificate
        .key_usage()
        .is_some_and(|ku| ku.contains(X509KeyUsage::KEY_CERT_SIGN)))
}

fn random_serial() -> Result<Asn1Integer, PkiError> {
    let mut bn = BigNum::new()?;
    // 128 random bits; a zero high bit is fine, the value only must be > 0.
    bn.rand(128, MsbOption::MAYBE_ZERO, false)?;
    if bn.num_bits() == 0 {
        bn.add_word(1)?;
    }
    Ok(Asn1Integer::from_bn(&bn)?)
}

fn set_validity(builder: &mut X509Builder, not_before: i64, days: u32) -> Result<(), PkiError> {
    let end = not_before.saturating_add(i64::from(days) * SECONDS_PER_DAY);
    builder.set_not_before(&*Asn1Time::from_unix(not_before)?)?;
    builder.set_not_after(&*Asn1Time::from_unix(end)?)?;
    Ok(())
}

fn der_extension(oid: &str, value: &[u8]) -> Result<X509Extension, PkiError> {
    let oid = Asn1Object::from_str(oid)?;
    let value = Asn1OctetString::new_from_bytes(value)?;
    Ok(X509Extension::new_from_der(&oid, false, &value)?)
}
