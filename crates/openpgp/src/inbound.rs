//! Inbound: decrypt PGP/MIME and inline PGP, verify PGP/MIME, inline
//! clear-signed and signed-inside-encrypted messages, harvest keys from
//! `Autocrypt:` headers and `application/pgp-keys` attachments.
//!
//! Every failure on outside input is a value (an error variant or an
//! [`SignatureStatus::Invalid`]), never a panic: the pipeline must be able
//! to record what happened and still deliver or bounce the mail.

use std::io::Read;
use std::ops::Range;

use sequoia_openpgp as openpgp;

use openpgp::crypto::SessionKey;
use openpgp::packet::{PKESK, SKESK};
use openpgp::parse::Parse;
use openpgp::parse::stream::{
    DecryptionHelper, DecryptorBuilder, DetachedVerifierBuilder, MessageLayer, MessageStructure,
    VerificationError, VerificationHelper, VerifierBuilder,
};
use openpgp::types::SymmetricAlgorithm;
use openpgp::{Cert, KeyHandle};
use siegel_types::Address;

use crate::Pgp;
use crate::error::{PgpError, chain};
use crate::keys::{ImportedKey, addresses};
use crate::mime::{self, Entity};

/// How the inbound message was encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Not encrypted (maybe signed).
    None,
    /// RFC 3156 `multipart/encrypted`.
    PgpMime,
    /// An armoured `PGP MESSAGE` inside a text part.
    Inline,
}

/// Why a signature is not valid; the pipeline stamps this into
/// `X-Siegel-Signature` and the policy engine decides what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidReason {
    /// Signed by a key not in the keyring (issuer key id/fingerprint).
    UnknownKey { issuer: Option<String> },
    /// The signature does not match the content (tampering) or is not
    /// acceptable under the policy (e.g. SHA-1, created in the future).
    BadSignature(String),
    /// The signing key is not valid (revoked, expired, not signing-capable).
    BadKey(String),
    /// The signature packet is malformed or of an unknown version.
    Malformed(String),
}

/// Outcome of signature verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No signature found.
    NotSigned,
    /// A good signature by a known key.
    Valid {
        /// Fingerprint of the signer's certificate (primary key).
        fingerprint: String,
        /// The first address among the signer's User IDs.
        signer: Option<Address>,
    },
    /// A signature was there, but is not acceptable.
    Invalid { reason: InvalidReason },
}

/// The result of [`Pgp::open`].
#[derive(Debug, Clone)]
pub struct Opened {
    /// Which encryption was removed.
    pub encryption: Encryption,
    /// Fingerprint of the certificate whose secret key decrypted it.
    pub decrypted_with: Option<String>,
    /// The signature verdict (of the innermost signature found).
    pub signature: SignatureStatus,
    /// The message as the recipient should see it: decrypted, outer
    /// headers kept (the protected Subject restored), CRLF line ends.
    pub message: Vec<u8>,
}

/// Where a harvested key came from (recorded with the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An `Autocrypt:` header whose `addr` matched the From address.
    Autocrypt { addr: Address },
    /// An `application/pgp-keys` MIME part.
    Attachment { filename: Option<String> },
}

/// A key found in a mail.
#[derive(Debug, Clone)]
pub struct HarvestedKey {
    pub key: ImportedKey,
    pub source: KeySource,
}

const BEGIN_MESSAGE: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END_MESSAGE: &[u8] = b"-----END PGP MESSAGE-----";
const BEGIN_SIGNED: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";
const END_SIGNATURE: &[u8] = b"-----END PGP SIGNATURE-----";

impl Pgp {
    /// Decrypts and/or verifies an inbound message.
    ///
    /// `secrets` are the certificates with secret keys that may decrypt
    /// (the recipient's key, the domain key); `keyring` holds the known
    /// public keys for signature verification. A message with no OpenPGP
    /// content comes back unchanged with `Encryption::None, NotSigned`.
    pub fn open(
        &self,
        message: &[u8],
        secrets: &[Cert],
        keyring: &[Cert],
    ) -> Result<Opened, PgpError> {
        self.limit_input(message)?;
        let raw = mime::to_crlf(message);
        let top = mime::parse_entity(&raw, 0..raw.len());
        let ct = top.content_type();
        match ct.mime.as_str() {
            "multipart/encrypted" => self.open_pgp_mime(&raw, &top, secrets, keyring),
            "multipart/signed"
                if ct
                    .param("protocol")
                    .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-signature")) =>
            {
                let signature = self.verify_multipart_signed(&raw, &top, keyring)?;
                Ok(Opened {
                    encryption: Encryption::None,
                    decrypted_with: None,
                    signature,
                    message: raw,
                })
            }
            _ => self.open_inline(raw, &top, secrets, keyring),
        }
    }

    fn open_pgp_mime(
        &self,
        raw: &[u8],
        top: &Entity,
        secrets: &[Cert],
        keyring: &[Cert],
    ) -> Result<Opened, PgpError> {
        let parts = top.children(raw);
        let [control, payload, ..] = parts.as_slice() else {
            return Err(PgpError::Mime("multipart/encrypted needs two parts".into()));
        };
        if control.content_type().mime != "application/pgp-encrypted" {
            return Err(PgpError::Mime(
                "first part of multipart/encrypted is not application/pgp-encrypted".into(),
            ));
        }
        let data = payload.decoded_body(raw);
        let dec = self.decrypt_bytes(&data, secrets, keyring)?;
        let inner = mime::to_crlf(&dec.plaintext);
        let inner_top = mime::parse_entity(&inner, 0..inner.len());
        let mut signature = dec.status;
        let ict = inner_top.content_type();
        if ict.mime == "multipart/signed"
            && ict
                .param("protocol")
                .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-signature"))
        {
            signature = self.verify_multipart_signed(&inner, &inner_top, keyring)?;
        }
        // Outer headers, with the protected Subject restored.
        let inner_subject = inner_top.headers.iter().find(|h| h.name == "subject");
        let mut out = Vec::new();
        for h in &top.headers {
            if h.name.starts_with("content-") || h.name == "mime-version" {
                continue;
            }
            match (h.name.as_str(), inner_subject) {
                ("subject", Some(s)) => out.extend_from_slice(&s.raw),
                _ => out.extend_from_slice(&h.raw),
            }
        }
        out.extend_from_slice(b"MIME-Version: 1.0\r\n");
        for h in &inner_top.headers {
            if h.name.starts_with("content-") {
                out.extend_from_slice(&h.raw);
            }
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&inner[inner_top.body.clone()]);
        Ok(Opened {
            encryption: if dec.encrypted {
                Encryption::PgpMime
            } else {
                Encryption::None
            },
            decrypted_with: dec.decrypted_with,
            signature,
            message: out,
        })
    }

    fn verify_multipart_signed(
        &self,
        raw: &[u8],
        top: &Entity,
        keyring: &[Cert],
    ) -> Result<SignatureStatus, PgpError> {
        let parts = top.children(raw);
        let [signed, sig, ..] = parts.as_slice() else {
            // A stripped signature is a verdict on this mail, not a
            // processing failure: deliver it as not validly signed.
            return Ok(SignatureStatus::Invalid {
                reason: InvalidReason::Malformed(
                    "multipart/signed without a signature part".into(),
                ),
            });
        };
        let sig_bytes = sig.decoded_body(raw);
        let content = mime::to_crlf(&raw[signed.range.clone()]);
        self.verify_detached(&content, &sig_bytes, keyring)
    }

    /// Verifies a detached signature over `content` (already canonical).
    pub fn verify_detached(
        &self,
        content: &[u8],
        signature: &[u8],
        keyring: &[Cert],
    ) -> Result<SignatureStatus, PgpError> {
        let helper = Helper::new(&[], keyring);
        let mut v = DetachedVerifierBuilder::from_bytes(signature)
            .map_err(|e| PgpError::Signature(chain(&e)))?
            .with_policy(&self.policy, self.now(), helper)
            .map_err(|e| PgpError::Signature(chain(&e)))?;
        v.verify_bytes(content)
            .map_err(|e| PgpError::Signature(chain(&e)))?;
        Ok(v.into_helper().status)
    }

    fn open_inline(
        &self,
        raw: Vec<u8>,
        top: &Entity,
        secrets: &[Cert],
        keyring: &[Cert],
    ) -> Result<Opened, PgpError> {
        let mut leaves: Vec<Entity> = Vec::new();
        mime::walk_leaves(&raw, top, 0, &mut |e| {
            if e.content_type().mime == "text/plain" {
                leaves.push(e.clone());
            }
        });
        let mut replacements: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
        let mut encryption = Encryption::None;
        let mut decrypted_with = None;
        // A PGP/MIME signed part inside a multipart (mailing-list footers
        // are appended as a second part of a multipart/mixed).
        let mut signature = match find_pgp_signed(&raw, top, 0) {
            Some(entity) => self.verify_multipart_signed(&raw, &entity, keyring)?,
            None => SignatureStatus::NotSigned,
        };
        for leaf in leaves {
            let text = leaf.decoded_body(&raw);
            let (block, plain, status, enc) =
                if let Some(r) = armour_block(&text, BEGIN_MESSAGE, END_MESSAGE) {
                    let armour = clean_armour(&text[r.clone()]);
                    let dec = self.decrypt_bytes(&armour, secrets, keyring)?;
                    if dec.encrypted {
                        decrypted_with = dec.decrypted_with;
                    }
                    (r, dec.plaintext, dec.status, dec.encrypted)
                } else if let Some(r) = armour_block(&text, BEGIN_SIGNED, END_SIGNATURE) {
                    let armour = clean_armour(&text[r.clone()]);
                    let (plain, status) = self.verify_cleartext(&armour, keyring)?;
                    (r, plain, status, false)
                } else {
                    continue;
                };
            if enc {
                encryption = Encryption::Inline;
            }
            if signature == SignatureStatus::NotSigned {
                signature = status;
            }
            let mut body = text[..block.start].to_vec();
            body.extend_from_slice(&plain);
            body.extend_from_slice(&text[block.end..]);
            let mut part = Vec::new();
            for h in &leaf.headers {
                if h.name != "content-transfer-encoding" {
                    part.extend_from_slice(&h.raw);
                }
            }
            part.extend_from_slice(b"Content-Transfer-Encoding: 8bit\r\n\r\n");
            part.extend_from_slice(&mime::to_crlf(&body));
            replacements.push((leaf.range.clone(), part));
        }
        let mut message = raw;
        // Ranges do not overlap (distinct leaves); replace back to front.
        replacements.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
        for (r, part) in replacements {
            message.splice(r, part);
        }
        Ok(Opened {
            encryption,
            decrypted_with,
            signature,
            message,
        })
    }

    /// Verifies a clear-signed (`BEGIN PGP SIGNED MESSAGE`) text; returns
    /// the signed text and the verdict.
    pub fn verify_cleartext(
        &self,
        armour: &[u8],
        keyring: &[Cert],
    ) -> Result<(Vec<u8>, SignatureStatus), PgpError> {
        let helper = Helper::new(&[], keyring);
        let mut v = VerifierBuilder::from_bytes(armour)
            .map_err(|e| PgpError::Signature(chain(&e)))?
            .with_policy(&self.policy, self.now(), helper)
            .map_err(|e| PgpError::Signature(chain(&e)))?;
        let mut out = Vec::new();
        let limit = self.limits.max_plaintext;
        (&mut v)
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| PgpError::Signature(e.to_string()))?;
        if out.len() > limit {
            return Err(PgpError::PlaintextTooLarge { limit });
        }
        Ok((out, v.into_helper().status))
    }

    /// Decrypts (and verifies, if signed) an OpenPGP message, armoured or
    /// binary. Stops with [`PgpError::PlaintextTooLarge`] past the limit.
    pub fn decrypt(
        &self,
        data: &[u8],
        secrets: &[Cert],
        keyring: &[Cert],
    ) -> Result<(Vec<u8>, SignatureStatus), PgpError> {
        self.limit_input(data)?;
        let d = self.decrypt_bytes(data, secrets, keyring)?;
        Ok((d.plaintext, d.status))
    }

    fn decrypt_bytes(
        &self,
        data: &[u8],
        secrets: &[Cert],
        keyring: &[Cert],
    ) -> Result<Decrypted, PgpError> {
        let helper = Helper::new(secrets, keyring);
        let limit = self.limits.max_plaintext;
        let mut d = DecryptorBuilder::from_bytes(data)
            .map_err(|e| PgpError::Decrypt(chain(&e)))?
            .buffer_size(limit.min(openpgp::parse::stream::DEFAULT_BUFFER_SIZE))
            .with_policy(&self.policy, self.now(), helper)
            .map_err(|e| match e.downcast_ref::<openpgp::Error>() {
                Some(openpgp::Error::MissingSessionKey(_)) => PgpError::NoSecretKey,
                _ => PgpError::Decrypt(chain(&e)),
            })?;
        let mut plaintext = Vec::new();
        (&mut d)
            .take(limit as u64 + 1)
            .read_to_end(&mut plaintext)
            .map_err(|e| PgpError::Decrypt(e.to_string()))?;
        if plaintext.len() > limit {
            return Err(PgpError::PlaintextTooLarge { limit });
        }
        let h = d.into_helper();
        Ok(Decrypted {
            plaintext,
            status: h.status,
            decrypted_with: h.decrypted_with,
            encrypted: h.encrypted,
        })
    }

    /// Keys offered by a mail: the `Autocrypt:` header (only when its
    /// `addr` is the From address, as the Autocrypt spec requires) and
    /// `application/pgp-keys` parts. Unreadable keys are skipped: a bad
    /// key in a mail must not cost the mail.
    pub fn harvest(&self, message: &[u8]) -> Vec<HarvestedKey> {
        if self.limit_input(message).is_err() {
            return Vec::new();
        }
        let raw = mime::to_crlf(message);
        let top = mime::parse_entity(&raw, 0..raw.len());
        let mut out = Vec::new();
        let from = top.header("from").and_then(from_address);
        for value in top.headers_named("autocrypt") {
            let Some((addr, keydata)) = parse_autocrypt(value) else {
                continue;
            };
            if from.as_ref() != Some(&addr) {
                continue;
            }
            if let Ok(keys) = self.import_keys(&keydata) {
                out.extend(keys.into_iter().map(|key| HarvestedKey {
                    key,
                    source: KeySource::Autocrypt { addr: addr.clone() },
                }));
            }
        }
        let mut attached = Vec::new();
        mime::walk_leaves(&raw, &top, 0, &mut |e| {
            if e.content_type().mime == "application/pgp-keys" {
                attached.push(e.clone());
            }
        });
        for part in attached {
            let filename = part
                .content_type()
                .param("name")
                .map(str::to_owned)
                .or_else(|| {
                    part.header("content-disposition")
                        .map(mime::ContentType::parse)
                        .and_then(|d| d.param("filename").map(str::to_owned))
                });
            if let Ok(keys) = self.import_keys(&part.decoded_body(&raw)) {
                out.extend(keys.into_iter().map(|key| HarvestedKey {
                    key,
                    source: KeySource::Attachment {
                        filename: filename.clone(),
                    },
                }));
            }
        }
        out
    }
}

struct Decrypted {
    plaintext: Vec<u8>,
    status: SignatureStatus,
    decrypted_with: Option<String>,
    encrypted: bool,
}

/// The first `multipart/signed; protocol="application/pgp-signature"`
/// entity below `entity` (depth-first, bounded depth).
fn find_pgp_signed(raw: &[u8], entity: &Entity, depth: usize) -> Option<Entity> {
    if depth > 16 {
        return None;
    }
    for child in entity.children(raw) {
        let ct = child.content_type();
        if ct.mime == "multipart/signed"
            && ct
                .param("protocol")
                .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-signature"))
        {
            return Some(child);
        }
        if let Some(found) = find_pgp_signed(raw, &child, depth + 1) {
            return Some(found);
        }
    }
    None
}

/// Parses an `Autocrypt:` header value into (addr, key bytes). `None`
/// when `addr`/`keydata` is missing or an unknown critical attribute
/// (not starting with `_`) is present, as the Autocrypt spec says.
pub(crate) fn parse_autocrypt(value: &str) -> Option<(Address, Vec<u8>)> {
    let mut addr = None;
    let mut keydata = None;
    for attr in value.split(';') {
        let (k, v) = attr.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        match k.as_str() {
            "addr" => addr = Address::parse(v.trim()).ok(),
            "keydata" => keydata = Some(mime::decode_base64(v.as_bytes())),
            "prefer-encrypt" => {}
            k if k.starts_with('_') => {}
            _ => return None,
        }
    }
    let keydata = keydata.filter(|k| !k.is_empty())?;
    Some((addr?, keydata))
}

/// The address in a From header value (`Name <a@b>` or `a@b`).
fn from_address(value: &str) -> Option<Address> {
    let inner = match (value.rfind('<'), value.rfind('>')) {
        (Some(s), Some(e)) if s < e => &value[s + 1..e],
        _ => value,
    };
    Address::parse(inner).ok()
}

/// Finds the byte range from a BEGIN line through the END line (inclusive).
fn armour_block(text: &[u8], begin: &[u8], end: &[u8]) -> Option<Range<usize>> {
    let start = find(text, begin)?;
    let stop = find(&text[start..], end)? + start + end.len();
    Some(start..stop)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Undoes what mail clients do to armour in text bodies: non-breaking
/// spaces (U+00A0 as UTF-8 or Latin-1) and trailing whitespace, which
/// would otherwise make the blank separator line after the armour header
/// unrecognisable.
fn clean_armour(block: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(block.len());
    for (n, line) in block.split(|&b| b == b'\n').enumerate() {
        if n > 0 {
            out.push(b'\n');
        }
        let mut l: Vec<u8> = Vec::with_capacity(line.len());
        let mut i = 0;
        while i < line.len() {
            if line[i] == 0xc2 && line.get(i + 1) == Some(&0xa0) {
                l.push(b' ');
                i += 2;
            } else if line[i] == 0xa0 {
                l.push(b' ');
                i += 1;
            } else {
                l.push(line[i]);
                i += 1;
            }
        }
        while l.last().is_some_and(|b| b.is_ascii_whitespace()) {
            l.pop();
        }
        out.extend_from_slice(&l);
    }
    out
}

/// Sequoia callback state: the keys to use and the verdict collected.
/// (Policy and time are given to Sequoia's builders directly.)
struct Helper<'a> {
    secrets: &'a [Cert],
    keyring: &'a [Cert],
    status: SignatureStatus,
    decrypted_with: Option<String>,
    encrypted: bool,
}

impl<'a> Helper<'a> {
    fn new(secrets: &'a [Cert], keyring: &'a [Cert]) -> Self {
        Self {
            secrets,
            keyring,
            status: SignatureStatus::NotSigned,
            decrypted_with: None,
            encrypted: false,
        }
    }
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> openpgp::Result<Vec<Cert>> {
        Ok(self
            .keyring
            .iter()
            .filter(|c| c.keys().key_handles(ids.iter()).next().is_some())
            .cloned()
            .collect())
    }

    fn check(&mut self, structure: MessageStructure) -> openpgp::Result<()> {
        for layer in structure {
            match layer {
                MessageLayer::Encryption { .. } => self.encrypted = true,
                MessageLayer::Compression { .. } => {}
                MessageLayer::SignatureGroup { results } => {
                    for r in results {
                        let status = match r {
                            Ok(good) => {
                                let cert = good.ka.cert();
                                SignatureStatus::Valid {
                                    fingerprint: cert.fingerprint().to_hex(),
                                    signer: addresses(cert).into_iter().next(),
                                }
                            }
                            Err(e) => SignatureStatus::Invalid {
                                reason: invalid_reason(&e),
                            },
                        };
                        // A valid signature wins over invalid ones; the first
                        // invalid one is kept otherwise.
                        match (&self.status, &status) {
                            (SignatureStatus::Valid { .. }, _) => {}
                            (_, SignatureStatus::Valid { .. })
                            | (SignatureStatus::NotSigned, _) => {
                                self.status = status;
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn invalid_reason(e: &VerificationError<'_>) -> InvalidReason {
    match e {
        VerificationError::MissingKey { sig } => InvalidReason::UnknownKey {
            issuer: sig.get_issuers().first().map(|h| h.to_hex()),
        },
        VerificationError::UnboundKey { error, .. } | VerificationError::BadKey { error, .. } => {
            InvalidReason::BadKey(chain(error))
        }
        VerificationError::BadSignature { error, .. } => InvalidReason::BadSignature(chain(error)),
        VerificationError::MalformedSignature { error, .. } => {
            InvalidReason::Malformed(chain(error))
        }
        VerificationError::UnknownSignature { .. } => {
            InvalidReason::Malformed("unknown signature version or algorithm".into())
        }
        other => InvalidReason::Malformed(other.to_string()),
    }
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> openpgp::Result<Option<Cert>> {
        for pkesk in pkesks {
            let recipient = pkesk.recipient();
            for cert in self.secrets {
                for ka in cert.keys().secret() {
                    let key = ka.key();
                    if recipient
                        .as_ref()
                        .is_some_and(|r| !r.aliases(key.key_handle()))
                    {
                        continue;
                    }
                    if key.secret().is_encrypted() {
                        continue;
                    }
                    let Ok(mut pair) = key.clone().into_keypair() else {
                        continue;
                    };
                    let ok = pkesk
                        .decrypt(&mut pair, sym_algo)
                        .map(|(algo, sk)| decrypt(algo, &sk))
                        .unwrap_or(false);
                    if ok {
                        self.decrypted_with = Some(cert.fingerprint().to_hex());
                        self.encrypted = true;
                        return Ok(Some(cert.clone()));
                    }
                }
            }
        }
        Err(openpgp::Error::MissingSessionKey(
            "no secret key for any recipient of the message".into(),
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocrypt_attributes() {
        let (addr, key) =
            parse_autocrypt("addr=A@Example.org; prefer-encrypt=mutual; keydata=aGVs\r\n bG8=")
                .unwrap();
        assert_eq!(addr.as_str(), "A@example.org");
        assert_eq!(key, b"hello");
        assert!(parse_autocrypt("addr=a@example.org; _x=1; keydata=aGVsbG8=").is_some());
        assert!(parse_autocrypt("addr=a@example.org; new=1; keydata=aGVsbG8=").is_none());
        assert!(parse_autocrypt("addr=a@example.org").is_none());
        assert!(parse_autocrypt("keydata=aGVsbG8=").is_none());
    }

    #[test]
    fn from_header_forms() {
        assert_eq!(
            from_address("\"B, A\" <a@x.org>").unwrap().as_str(),
            "a@x.org"
        );
        assert_eq!(from_address("a@x.org").unwrap().as_str(), "a@x.org");
        assert!(from_address("nobody").is_none());
    }

    #[test]
    fn armour_cleaning_removes_nbsp_and_trailing_space() {
        let cleaned = clean_armour(b"-----BEGIN PGP MESSAGE-----\r\n\xc2\xa0\r\nAAAA  \r\n\xa0\n");
        assert_eq!(cleaned, b"-----BEGIN PGP MESSAGE-----\n\nAAAA\n\n");
        let text = b"hi\n-----BEGIN PGP MESSAGE-----\nx\n-----END PGP MESSAGE-----\nbye";
        let r = armour_block(text, BEGIN_MESSAGE, END_MESSAGE).unwrap();
        assert!(text[r.clone()].starts_with(BEGIN_MESSAGE));
        assert!(text[r].ends_with(END_MESSAGE));
        assert!(armour_block(b"-----BEGIN PGP MESSAGE-----", BEGIN_MESSAGE, END_MESSAGE).is_none());
    }
}
