//! S/MIME (RFC 8551) on whole messages: sign, encrypt, decrypt, verify.
//!
//! The functions take and return complete RFC 5322 messages. Header fields
//! that describe the body (`Content-*`) travel into the signed or encrypted
//! entity; all others (From, To, Subject, Received, ...) stay outside, where
//! relays and clients expect them.
//!
//! CMS is OpenSSL's; the MIME wrapping is ours (see the private `mime` module for why).
//! Everything that reads outside input returns a typed result and never
//! panics: a broken mail must cost a stamp, not the gateway.

use std::time::{SystemTime, UNIX_EPOCH};

use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::error::ErrorStack;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rand::rand_bytes;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{X509, X509Crl, X509StoreContext};
use siegel_types::Address;

use crate::capabilities::Capabilities;
use crate::mime::{self, Header};
use crate::pki::certificate_addresses;
use crate::revocation::{self, RevocationStatus};
use crate::signed_data::{self, Template, TemplateError};

/// Why signing or encrypting (our own outbound work) failed.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    /// OpenSSL refused; with our own keys and certificates this is a bug or a
    /// broken installation, not bad input.
    #[error("OpenSSL: {0}")]
    OpenSsl(#[from] ErrorStack),
    /// The signer's private key does not belong to its certificate.
    #[error("the private key does not match the signing certificate")]
    KeyMismatch,
    /// Encryption needs at least one recipient certificate.
    #[error("no recipient certificates")]
    NoRecipients,
    /// The signing certificate's encoding lacks the X.509 fields a
    /// signer identifier is cut from (a broken store entry, not mail input).
    #[error("the signing certificate is malformed")]
    MalformedCertificate,
}

impl From<TemplateError> for SmimeError {
    fn from(e: TemplateError) -> Self {
        match e {
            TemplateError::OpenSsl(e) => SmimeError::OpenSsl(e),
            TemplateError::Shape => SmimeError::MalformedCertificate,
        }
    }
}

/// Why an inbound encrypted mail could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecryptError {
    /// The mail is not `application/pkcs7-mime` enveloped data.
    #[error("not an S/MIME encrypted message")]
    NotEncrypted,
    /// The body is not valid base64 or not valid CMS (truncated, corrupt).
    #[error("malformed S/MIME: {0}")]
    Malformed(String),
    /// Valid CMS, but not for this key (no matching recipient) or the content
    /// does not decrypt with it.
    #[error("cannot decrypt with this key: {0}")]
    NotForThisKey(String),
}

/// The content-encryption algorithm for outbound encryption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentCipher {
    /// EnvelopedData with AES-256-CBC: every client and gpgsm 2.2 read it.
    #[default]
    Aes256Cbc,
    /// AuthEnvelopedData with AES-256-GCM (RFC 5083/5084): authenticated, but
    /// gpgsm 2.2 and older clients cannot decrypt it.
    ///
    /// The key is still wrapped with RSA PKCS#1 v1.5 (ECDH for EC
    /// certificates): the `openssl` crate does not expose the recipient-info
    /// controls that select RSA-OAEP.
    Aes256Gcm,
}

/// A signing identity: certificate, private key and the chain to send along,
/// with the parts of the SignedData that never change for it encoded once.
pub struct Signer {
    certificate: X509,
    key: PKey<Private>,
    template: Template,
}

impl Signer {
    /// Checks that key and certificate belong together; `chain` holds the
    /// intermediate and CA certificates to include so that recipients can
    /// build the path without fetching anything.
    pub fn new(
        certificate: X509,
        key: PKey<Private>,
        chain: &[X509],
    ) -> Result<Signer, SmimeError> {
        if !certificate.public_key()?.public_eq(&key) {
            return Err(SmimeError::KeyMismatch);
        }
        let template = Template::new(&certificate, &key, chain)?;
        Ok(Signer {
            certificate,
            key,
            template,
        })
    }

    /// The signing certificate.
    pub fn certificate(&self) -> &X509 {
        &self.certificate
    }
}

/// Certificates a signature may chain up to: public roots, admin-trusted
/// CAs, our own CA, pinned correspondents' certificates.
#[derive(Default, Clone)]
pub struct TrustStore {
    anchors: Vec<X509>,
}

impl TrustStore {
    /// An empty store (trusts nothing).
    pub fn new() -> TrustStore {
        TrustStore::default()
    }

    /// Adds one trust anchor.
    pub fn add(&mut self, certificate: X509) {
        self.anchors.push(certificate);
    }

    /// Adds every certificate of a PEM bundle; returns how many.
    pub fn add_pem_bundle(&mut self, pem: &[u8]) -> Result<usize, ErrorStack> {
        let certs = X509::stack_from_pem(pem)?;
        let n = certs.len();
        self.anchors.extend(certs);
        Ok(n)
    }

    /// Number of anchors.
    pub fn len(&self) -> usize {
        self.anchors.len()
    }

    /// True when the store trusts nothing.
    pub fn is_empty(&self) -> bool {
        self.anchors.is_empty()
    }

    /// An OpenSSL store whose clock is pinned to `at`: certificates in test
    /// data expire, and a mail received last year must be judged as of then.
    fn build(&self, at: SystemTime) -> Result<X509Store, ErrorStack> {
        let mut builder = X509StoreBuilder::new()?;
        for c in &self.anchors {
            // duplicates are harmless but OpenSSL 1.x reported them as errors
            let _ = builder.add_cert(c.clone());
        }
        let mut param = X509VerifyParam::new()?;
        param.set_time(unix_seconds(at));
        // Anchors need not be self-signed roots: an admin may trust an
        // intermediate CA, and a harvested correspondent certificate is
        // pinned as an anchor of its own.
        param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
        builder.set_param(&param)?;
        Ok(builder.build())
    }
}

pub(crate) fn unix_seconds(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The outcome of checking a signature. Never an error: every way an inbound
/// mail can be wrong is a verdict the pipeline stamps on it.
///
/// This is the verdict of [`verify`]; [`check_signature`] answers with a
/// [`SignatureCheck`], which also carries the chain, the signer's
/// SMIMECapabilities and the revocation status.
#[derive(Debug)]
pub enum Verification {
    /// The message carries no S/MIME signature at the top level.
    NotSigned,
    /// The signature is good and the signer chains to a trust anchor at the
    /// verification time.
    Valid {
        /// Addresses the signer certificate(s) speak for (SAN rfc822Name,
        /// subject emailAddress); compare with `From` before harvesting.
        signers: Vec<Address>,
        /// The (first) signer certificate, to harvest for encryption.
        certificate: X509,
        /// The signed MIME entity (for opaque signatures the only place the
        /// content is readable).
        content: Vec<u8>,
    },
    /// The message claims to be signed but the signature does not hold.
    Invalid {
        /// Why.
        reason: InvalidReason,
    },
}

impl Verification {
    /// True for [`Verification::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Verification::Valid { .. })
    }
}

/// A signature that holds, with what the pipeline needs next.
#[derive(Debug)]
pub struct ValidSignature {
    /// Addresses the signer certificate(s) speak for (SAN rfc822Name,
    /// subject emailAddress); compare with `From` before harvesting.
    pub signers: Vec<Address>,
    /// The (first) signer certificate, to harvest for encryption.
    pub certificate: X509,
    /// The verified chain, signer first, ending at the trust anchor.
    pub chain: Vec<X509>,
    /// The signed MIME entity (for opaque signatures the only place the
    /// content is readable).
    pub content: Vec<u8>,
    /// What the signer's client says it can decrypt (RFC 8551 §2.5.2),
    /// authenticated by the signature; keep it with a harvested
    /// certificate to choose the cipher for mail to this correspondent.
    pub capabilities: Capabilities,
    /// What the CRLs given to [`check_signature`] say about the chain.
    /// [`RevocationStatus::Unknown`] lists the distribution points to fetch.
    pub revocation: RevocationStatus,
}

/// The outcome of [`check_signature`]: like [`Verification`], with the
/// details of a valid signature.
#[derive(Debug)]
pub enum SignatureCheck {
    /// The message carries no S/MIME signature at the top level.
    NotSigned,
    /// The signature is good, the signer chains to a trust anchor at the
    /// verification time and no CRL at hand revokes it.
    Valid(Box<ValidSignature>),
    /// The message claims to be signed but the signature does not hold.
    Invalid {
        /// Why.
        reason: InvalidReason,
    },
}

impl SignatureCheck {
    /// True for [`SignatureCheck::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, SignatureCheck::Valid(_))
    }
}

impl From<SignatureCheck> for Verification {
    fn from(check: SignatureCheck) -> Verification {
        match check {
            SignatureCheck::NotSigned => Verification::NotSigned,
            SignatureCheck::Valid(v) => Verification::Valid {
                signers: v.signers,
                certificate: v.certificate,
                content: v.content,
            },
            SignatureCheck::Invalid { reason } => Verification::Invalid { reason },
        }
    }
}

/// What a signature is checked against.
#[derive(Clone, Copy)]
pub struct VerifyOptions<'a> {
    /// The trust anchors.
    pub trust: &'a TrustStore,
    /// The verification time ("now" in production, pinned in tests; a mail
    /// is judged as of when it was received).
    pub at: SystemTime,
    /// CRLs to check the chain against (see [`revocation::parse_crls`]);
    /// empty means revocation is unknown, never that it is revoked.
    pub crls: &'a [X509Crl],
}

/// Why a signature is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidReason {
    /// MIME or CMS structure broken: truncated, bad base64, not CMS.
    #[error("malformed: {0}")]
    Malformed(String),
    /// The content was changed after signing (digest or signature mismatch).
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// The signature is intact but the signer's certificate is not
    /// acceptable at the verification time: untrusted, expired, not yet
    /// valid, wrong key usage. The text is OpenSSL's verify error.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The signature is intact and chains to a trust anchor, but a CRL of
    /// the issuer lists a certificate of the chain as revoked at or before
    /// the verification time.
    #[error("certificate {subject} (serial {serial}) revoked at {revoked_at}")]
    Revoked {
        /// Serial number (upper-case hex).
        serial: String,
        /// Subject of the revoked certificate.
        subject: String,
        /// Revocation date from the CRL, Unix seconds.
        revoked_at: i64,
    },
    /// Anything else OpenSSL refused.
    #[error("{0}")]
    Other(String),
}

impl InvalidReason {
    /// A short token for the `X-Siegel-Signature: invalid; reason=` stamp.
    pub fn token(&self) -> &'static str {
        match self {
            InvalidReason::Malformed(_) => "malformed",
            InvalidReason::BadSignature(_) => "bad-signature",
            InvalidReason::Certificate(_) => "certificate",
            InvalidReason::Revoked { .. } => "revoked",
            InvalidReason::Other(_) => "error",
        }
    }
}

/// A parsed top-level message: header fields split into those that stay
/// outside and those that describe the body.
struct Parsed<'a> {
    outer: Vec<Header<'a>>,
    content: Vec<Header<'a>>,
    body: &'a [u8],
}

fn parse_message(msg: &[u8]) -> Parsed<'_> {
    let (head, body) = mime::split_header_body(msg);
    let mut outer = Vec::new();
    let mut content = Vec::new();
    for h in mime::parse_headers(head) {
        if h.is("mime-version") {
            continue;
        } else if h.is_content() {
            content.push(h);
        } else {
            outer.push(h);
        }
    }
    Parsed {
        outer,
        content,
        body,
    }
}

impl Parsed<'_> {
    /// The body entity: content headers, empty line, body (canonical CRLF).
    fn entity(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        let fields: Vec<&Header<'_>> = self.content.iter().collect();
        mime::write_fields(&mut out, &fields);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(self.body);
        out
    }

    fn write_outer(&self, out: &mut Vec<u8>) {
        let fields: Vec<&Header<'_>> = self.outer.iter().collect();
        mime::write_fields(out, &fields);
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    }
}

fn random_boundary() -> Result<String, ErrorStack> {
    let mut bytes = [0u8; 12];
    rand_bytes(&mut bytes)?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("----=_siegel_{hex}"))
}

/// Signs a message: `multipart/signed` (RFC 8551 §3.5.3), detached, SHA-256,
/// with the signer's chain, our SMIMECapabilities (AES-256-GCM first, see
/// [`crate::capabilities::OURS`]) and the encryption key preference naming
/// the signing certificate.
///
/// Before signing, 8-bit parts are re-encoded (quoted-printable for text,
/// base64 otherwise) and line ends made CRLF, so that no relay converting
/// 8BITMIME to 7-bit or rewriting line ends can invalidate the signature.
pub fn sign(message: &[u8], signer: &Signer) -> Result<Vec<u8>, SmimeError> {
    let parsed = parse_message(message);
    let entity = mime::make_7bit_canonical(&parsed.entity(), 0);
    let der = signer
        .template
        .sign(&entity, &signer.key, unix_seconds(SystemTime::now()))?;
    let boundary = random_boundary()?;

    let mut out = Vec::with_capacity(entity.len() + der.len() * 2 + 1024);
    parsed.write_outer(&mut out);
    out.extend_from_slice(
        format!(
            "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg=sha-256; boundary=\"{boundary}\"\r\n\r\n\
             This is a cryptographically signed message in MIME format.\r\n\r\n--{boundary}\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&entity);
    out.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
             Content-Description: S/MIME Cryptographic Signature\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&mime::encode_base64_lines(&der));
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
}

/// Encrypts a message (typically the output of [`sign`]) to every
/// certificate in `recipients`: `application/pkcs7-mime` with RSA key
/// transport (or ECDH for EC certificates).
pub fn encrypt(
    message: &[u8],
    recipients: &[X509],
    cipher: ContentCipher,
) -> Result<Vec<u8>, SmimeError> {
    if recipients.is_empty() {
        return Err(SmimeError::NoRecipients);
    }
    let parsed = parse_message(message);
    let binary = mime::transfer_encoding(&parsed.content) == "binary";
    let entity = if binary {
        parsed.entity()
    } else {
        mime::canonical_crlf(&parsed.entity())
    };
    let mut certs = Stack::new()?;
    for c in recipients {
        certs.push(c.clone())?;
    }
    let (openssl_cipher, smime_type) = match cipher {
        ContentCipher::Aes256Cbc => (Cipher::aes_256_cbc(), "enveloped-data"),
        ContentCipher::Aes256Gcm => (Cipher::aes_256_gcm(), "authEnveloped-data"),
    };
    let cms = CmsContentInfo::encrypt(&certs, &entity, openssl_cipher, CMSOptions::BINARY)?;
    let der = cms.to_der()?;
    let mut out = Vec::with_capacity(der.len() * 4 / 3 + 1024);
    parsed.write_outer(&mut out);
    out.extend_from_slice(
        format!(
            "Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
             Content-Description: S/MIME Encrypted Message\r\n\r\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(&mime::encode_base64_lines(&der));
    Ok(out)
}

/// Signs, then encrypts to `recipients` — the outbound S/MIME method.
pub fn sign_and_encrypt(
    message: &[u8],
    signer: &Signer,
    recipients: &[X509],
    cipher: ContentCipher,
) -> Result<Vec<u8>, SmimeError> {
    let signed = sign(message, signer)?;
    encrypt(&signed, recipients, cipher)
}

fn is_pkcs7_mime(ctype: &mime::ContentType) -> bool {
    matches!(
        ctype.mime_type.as_str(),
        "application/pkcs7-mime" | "application/x-pkcs7-mime"
    ) || (ctype.mime_type == "application/octet-stream"
        && ctype
            .param("name")
            .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m")))
}

fn smime_type(ctype: &mime::ContentType) -> Option<String> {
    ctype.param("smime-type").map(str::to_ascii_lowercase)
}

/// Decrypts an `application/pkcs7-mime` enveloped (or auth-enveloped)
/// message with `key`. Returns the whole message: the outer header fields
/// followed by the decrypted entity, ready to go on through the pipeline
/// (where a signature inside is verified next).
pub fn decrypt(
    message: &[u8],
    certificate: &X509,
    key: &PKey<Private>,
) -> Result<Vec<u8>, DecryptError> {
    let parsed = parse_message(message);
    let ctype = mime::content_type(&parsed.content);
    if !is_pkcs7_mime(&ctype) {
        return Err(DecryptError::NotEncrypted);
    }
    if let Some(t) = smime_type(&ctype)
        && t != "enveloped-data"
        && t != "authenveloped-data"
    {
        return Err(DecryptError::NotEncrypted);
    }
    let cte = mime::transfer_encoding(&parsed.content);
    let der = mime::decode_body(&cte, parsed.body)
        .ok_or_else(|| DecryptError::Malformed(format!("cannot decode {cte} body")))?;
    let cms =
        CmsContentInfo::from_der(&der).map_err(|e| DecryptError::Malformed(first_reason(&e)))?;
    let plain = cms
        .decrypt(key, certificate)
        .map_err(|e| DecryptError::NotForThisKey(first_reason(&e)))?;
    let mut out = Vec::with_capacity(plain.len() + 1024);
    let fields: Vec<&Header<'_>> = parsed.outer.iter().collect();
    mime::write_fields(&mut out, &fields);
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    // The entity starts with its own Content-* fields (or with the empty
    // line when it has none), so it continues the header block directly.
    out.extend_from_slice(&plain);
    Ok(out)
}

/// Verifies the top-level S/MIME signature of a message — detached
/// (`multipart/signed`) or opaque (`application/pkcs7-mime;
/// smime-type=signed-data`) — against `trust`, as of `at`.
///
/// No CRLs are consulted; [`check_signature`] takes them.
pub fn verify(message: &[u8], trust: &TrustStore, at: SystemTime) -> Verification {
    check_signature(
        message,
        &VerifyOptions {
            trust,
            at,
            crls: &[],
        },
    )
    .into()
}

/// Verifies the top-level S/MIME signature like [`verify`], then checks the
/// chain against `options.crls` (a revoked certificate makes the signature
/// [`InvalidReason::Revoked`]; a missing or stale CRL leaves it valid with
/// [`RevocationStatus::Unknown`] — see [`crate::revocation`] for why soft
/// fail) and reads the signer's SMIMECapabilities.
pub fn check_signature(message: &[u8], options: &VerifyOptions<'_>) -> SignatureCheck {
    match check_inner(message, options) {
        Ok(v) => v,
        Err(reason) => SignatureCheck::Invalid { reason },
    }
}

fn check_inner(
    message: &[u8],
    options: &VerifyOptions<'_>,
) -> Result<SignatureCheck, InvalidReason> {
    let VerifyOptions { trust, at, crls } = *options;
    let parsed = parse_message(message);
    let ctype = mime::content_type(&parsed.content);
    let malformed = |s: &str| InvalidReason::Malformed(s.to_owned());

    let (der, detached) = if ctype.mime_type == "multipart/signed" {
        let boundary = ctype
            .param("boundary")
            .ok_or_else(|| malformed("multipart/signed without boundary"))?;
        let mp = mime::split_multipart(parsed.body, boundary)
            .ok_or_else(|| malformed("multipart/signed without parts"))?;
        if !mp.closed {
            return Err(malformed("multipart/signed is truncated"));
        }
        let [content, signature] = mp.parts.as_slice() else {
            return Err(malformed("multipart/signed must have exactly two parts"));
        };
        let (sig_head, sig_body) = mime::split_header_body(signature);
        let sig_headers = mime::parse_headers(sig_head);
        let sig_type = mime::content_type(&sig_headers);
        if !matches!(
            sig_type.mime_type.as_str(),
            "application/pkcs7-signature" | "application/x-pkcs7-signature"
        ) {
            return Err(malformed("second part is not application/pkcs7-signature"));
        }
        let cte = mime::transfer_encoding(&sig_headers);
        let der = mime::decode_body(&cte, sig_body)
            .ok_or_else(|| malformed("signature part is not valid base64"))?;
        // Stored mail may have lost its CRs; the signature covers CRLF.
        let content = if content.contains(&b'\n') && !is_all_crlf(content) {
            mime::canonical_crlf(content)
        } else {
            content.to_vec()
        };
        (der, Some(content))
    } else if is_pkcs7_mime(&ctype) {
        match smime_type(&ctype).as_deref() {
            None | Some("signed-data") => {}
            Some(_) => return Ok(SignatureCheck::NotSigned),
        }
        let cte = mime::transfer_encoding(&parsed.content);
        let der = mime::decode_body(&cte, parsed.body)
            .ok_or_else(|| malformed("body is not valid base64"))?;
        (der, None)
    } else {
        return Ok(SignatureCheck::NotSigned);
    };

    let mut cms =
        CmsContentInfo::from_der(&der).map_err(|e| InvalidReason::Malformed(first_reason(&e)))?;
    let store = trust
        .build(at)
        .map_err(|e| InvalidReason::Other(first_reason(&e)))?;
    let mut out = Vec::new();
    cms.verify(
        None,
        Some(&store),
        detached.as_deref(),
        Some(&mut out),
        CMSOptions::BINARY,
    )
    .map_err(classify)?;

    let (signer_certs, included) = signer_certificates(&der)?;
    let Some(first) = signer_certs.first() else {
        return Err(InvalidReason::Other("no signer certificate".to_owned()));
    };
    let mut signers = Vec::new();
    for cert in &signer_certs {
        for a in certificate_addresses(cert) {
            if !signers.contains(&a) {
                signers.push(a);
            }
        }
    }
    let chain = verified_chain(&store, first, &included);
    let mut issuers = included;
    issuers.extend(trust.anchors.iter().cloned());
    let revocation = revocation::check_chain(&chain, &issuers, crls, at).map_err(|r| {
        InvalidReason::Revoked {
            serial: r.serial,
            subject: r.subject,
            revoked_at: r.revoked_at,
        }
    })?;
    Ok(SignatureCheck::Valid(Box::new(ValidSignature {
        signers,
        certificate: first.clone(),
        chain,
        content: detached.unwrap_or(out),
        capabilities: signed_data::capabilities(&der),
        revocation,
    })))
}

/// The chain OpenSSL builds from `leaf` through the certificates the
/// signature carried to a trust anchor. CMS_verify built the same chain but
/// does not hand it out; when this second build fails (it cannot, after
/// CMS_verify succeeded with the same store) the chain is the leaf alone.
fn verified_chain(store: &X509Store, leaf: &X509, included: &[X509]) -> Vec<X509> {
    let build = || -> Result<Option<Vec<X509>>, ErrorStack> {
        let mut untrusted = Stack::new()?;
        for c in included {
            untrusted.push(c.clone())?;
        }
        let mut ctx = X509StoreContext::new()?;
        ctx.init(store, leaf, &untrusted, |c| {
            if !c.verify_cert()? {
                return Ok(None);
            }
            Ok(c.chain().map(|s| s.iter().map(|x| x.to_owned()).collect()))
        })
    };
    match build() {
        Ok(Some(chain)) if !chain.is_empty() => chain,
        _ => vec![leaf.clone()],
    }
}

fn is_all_crlf(data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && data[i - 1] == b'\r'))
}

/// The signer certificates and all certificates the signature carries,
/// found through the PKCS#7 view of the same DER: the `openssl` crate
/// exposes `PKCS7_get0_signers` but not its CMS twin. That view only
/// understands issuerAndSerialNumber signer identifiers (what Thunderbird,
/// Outlook, gpgsm and `openssl cms` send by default).
fn signer_certificates(der: &[u8]) -> Result<(Vec<X509>, Vec<X509>), InvalidReason> {
    let p7 = Pkcs7::from_der(der).map_err(|_| {
        InvalidReason::Other("signer identified by subject key identifier (unsupported)".to_owned())
    })?;
    let empty = Stack::new().map_err(|e| InvalidReason::Other(first_reason(&e)))?;
    let signers = p7
        .signers(&empty, Pkcs7Flags::empty())
        .map_err(|e| InvalidReason::Other(first_reason(&e)))?;
    let included = p7
        .signed()
        .and_then(|s| s.certificates())
        .map(|st| st.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    Ok((signers.iter().map(|c| c.to_owned()).collect(), included))
}

fn first_reason(e: &ErrorStack) -> String {
    e.errors()
        .iter()
        .map(|err| {
            let reason = err.reason().unwrap_or("unknown");
            match err.data() {
                Some(d) if !d.is_empty() => format!("{reason} ({d})"),
                _ => reason.to_owned(),
            }
        })
        .next()
        .unwrap_or_else(|| "unknown OpenSSL error".to_owned())
}

/// Maps OpenSSL's CMS_verify errors onto our reasons by their reason
/// strings, which are stable across OpenSSL 1.1 and 3.x.
fn classify(e: ErrorStack) -> InvalidReason {
    let text = first_reason(&e);
    for err in e.errors() {
        let reason = err.reason().unwrap_or("");
        match reason {
            "certificate verify error" => {
                let detail = err
                    .data()
                    .map(|d| d.strip_prefix("Verify error:").unwrap_or(d).to_owned())
                    .unwrap_or_else(|| reason.to_owned());
                return InvalidReason::Certificate(detail);
            }
            "digest failure"
            | "content verify error"
            | "verification failure"
            | "signature failure"
            | "bad signature"
            | "message digest mismatch" => {
                return InvalidReason::BadSignature(reason.to_owned());
            }
            "no content"
            | "content and data present"
            | "not a signed data content"
            | "content type not signed data"
            | "type not data" => {
                return InvalidReason::Malformed(reason.to_owned());
            }
            _ => {}
        }
    }
    InvalidReason::Other(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Ca, CaParams, Issued, KeyKind, UserParams};

    fn now() -> i64 {
        unix_seconds(SystemTime::now())
    }

    fn setup() -> (Ca, Issued, TrustStore) {
        let ca = Ca::create(&CaParams {
            common_name: "Unit CA".into(),
            organization: None,
            key: KeyKind::EcP256,
            not_before: now() - 60,
            validity_days: 2,
        })
        .unwrap();
        let address = Address::parse("unit@example.com").unwrap();
        let user = ca
            .issue_user(&UserParams {
                address: &address,
                name: None,
                key: KeyKind::EcP256,
                not_before: now() - 60,
                validity_days: 1,
                crl_url: "http://example.com/ca.crl",
            })
            .unwrap();
        let mut trust = TrustStore::new();
        trust.add(ca.certificate().clone());
        (ca, user, trust)
    }

    #[test]
    fn content_headers_go_inside_others_stay_outside() {
        let (ca, user, trust) = setup();
        let signer = Signer::new(
            user.certificate.clone(),
            user.key.clone(),
            &[ca.certificate().clone()],
        )
        .unwrap();
        let mail = b"Received: from x\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nbody\r\n";
        let signed = sign(mail, &signer).unwrap();
        let (head, _) = mime::split_header_body(&signed);
        let head = String::from_utf8_lossy(head);
        assert!(head.starts_with("Received: from x\r\nSubject: s\r\nMIME-Version: 1.0\r\n"));
        assert_eq!(head.matches("MIME-Version").count(), 1);
        assert!(head.contains("multipart/signed"));
        match verify(&signed, &trust, SystemTime::now()) {
            Verification::Valid {
                content, signers, ..
            } => {
                assert_eq!(
                    content,
                    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nbody\r\n"
                );
                assert_eq!(signers[0].as_str(), "unit@example.com");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_pinned_correspondent_certificate_is_enough_trust() {
        let (ca, user, _) = setup();
        let signer = Signer::new(
            user.certificate.clone(),
            user.key,
            &[ca.certificate().clone()],
        )
        .unwrap();
        let signed = sign(b"Subject: s\r\n\r\nbody\r\n", &signer).unwrap();
        let mut pinned = TrustStore::new();
        pinned.add(user.certificate.clone());
        assert!(verify(&signed, &pinned, SystemTime::now()).is_valid());
        // while an unrelated pin is not
        let (_, other, _) = setup();
        let mut wrong = TrustStore::new();
        wrong.add(other.certificate);
        assert!(!verify(&signed, &wrong, SystemTime::now()).is_valid());
    }

    #[test]
    fn expired_signer_is_a_certificate_problem() {
        let (ca, user, trust) = setup();
        let signer = Signer::new(user.certificate, user.key, &[ca.certificate().clone()]).unwrap();
        let signed = sign(b"Subject: s\r\n\r\nbody\r\n", &signer).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(3 * 86_400);
        match verify(&signed, &trust, later) {
            Verification::Invalid {
                reason: InvalidReason::Certificate(why),
            } => {
                assert!(why.contains("expired"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn signer_key_must_match_and_recipients_must_exist() {
        let (ca, user, _) = setup();
        assert!(matches!(
            Signer::new(user.certificate.clone(), ca.key().clone(), &[]),
            Err(SmimeError::KeyMismatch)
        ));
        assert!(matches!(
            encrypt(b"Subject: s\r\n\r\nx", &[], ContentCipher::default()),
            Err(SmimeError::NoRecipients)
        ));
    }

    #[test]
    fn decrypt_refuses_what_is_not_encrypted() {
        let (_, user, _) = setup();
        let plain = b"Subject: s\r\nContent-Type: text/plain\r\n\r\nhello";
        assert_eq!(
            decrypt(plain, &user.certificate, &user.key),
            Err(DecryptError::NotEncrypted)
        );
        let garbage = b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA";
        assert!(matches!(
            decrypt(garbage, &user.certificate, &user.key),
            Err(DecryptError::Malformed(_))
        ));
    }

    #[test]
    fn gcm_round_trip_is_auth_enveloped() {
        let (_, user, _) = setup();
        let enc = encrypt(
            b"Subject: s\r\nContent-Type: text/plain\r\n\r\nsecret\r\n",
            std::slice::from_ref(&user.certificate),
            ContentCipher::Aes256Gcm,
        )
        .unwrap();
        assert!(String::from_utf8_lossy(&enc).contains("smime-type=authEnveloped-data"));
        let dec = decrypt(&enc, &user.certificate, &user.key).unwrap();
        assert_eq!(
            dec,
            b"Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nsecret\r\n"
        );
    }
}
