//! Outbound: PGP/MIME (RFC 3156) sign+encrypt with protected headers,
//! signed-only `multipart/signed`, and the `Autocrypt:` header.
//!
//! Input and output are whole RFC 5322 messages. Output uses CRLF line
//! ends throughout: it is what goes on the wire, and what PGP/MIME
//! signatures are computed over (RFC 3156 §5).

use std::io::Write;

use base64::Engine as _;
use sequoia_openpgp as openpgp;

use openpgp::Cert;
use openpgp::armor;
use openpgp::serialize::Serialize;
use openpgp::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Recipient, Signer};
use openpgp::types::HashAlgorithm;
use siegel_types::Address;

use crate::error::{KeyProblem, PgpError, chain};
use crate::mime::{self, Entity};
use crate::signer::SigningKey;
use crate::{Pgp, keys};

/// Headers copied into the encrypted part ("protected headers", as
/// Thunderbird, K-9/Thunderbird for Android and Delta Chat read them).
const PROTECTED: &[&str] = &[
    "from",
    "to",
    "cc",
    "reply-to",
    "subject",
    "date",
    "message-id",
];

/// What replaces the outer Subject of an encrypted mail (the
/// protected-headers convention; clients show the inner one).
pub const HIDDEN_SUBJECT: &str = "...";

impl Pgp {
    /// Signs `message` with `signer`'s key and encrypts it to every
    /// certificate in `recipients`, as a `multipart/encrypted` PGP/MIME
    /// message. The Content-* headers and a copy of the protected headers
    /// move inside; the outer Subject becomes `...`.
    ///
    /// Every recipient key is checked first: one revoked/expired key
    /// refuses the whole message (the caller picks another method rather
    /// than silently leaving a recipient unable to read it).
    pub fn encrypt_and_sign(
        &self,
        message: &[u8],
        signer: &Cert,
        recipients: &[&Cert],
    ) -> Result<Vec<u8>, PgpError> {
        let key = self.signing_key(signer)?;
        self.encrypt_and_sign_with(message, &key, recipients)
    }

    /// [`Pgp::encrypt_and_sign`] with a prepared (cached) signing key.
    pub fn encrypt_and_sign_with(
        &self,
        message: &[u8],
        signer: &SigningKey,
        recipients: &[&Cert],
    ) -> Result<Vec<u8>, PgpError> {
        self.encrypt_with(message, Some(signer), recipients)
    }

    /// PGP/MIME encryption like [`Pgp::encrypt_and_sign_with`], signed only
    /// when a `signer` is given (a sender of ours without a key of their
    /// own: the mail is still encrypted, never sent in clear).
    pub fn encrypt_with(
        &self,
        message: &[u8],
        signer: Option<&SigningKey>,
        recipients: &[&Cert],
    ) -> Result<Vec<u8>, PgpError> {
        self.limit_input(message)?;
        if recipients.is_empty() {
            return Err(PgpError::NoRecipients);
        }
        let raw = mime::to_crlf(message);
        let top = mime::parse_entity(&raw, 0..raw.len());
        let inner = inner_entity(&raw, &top, true);
        let armoured = self.sign_encrypt_bytes(&inner, signer, recipients)?;

        let boundary = boundary()?;
        let mut out = outer_headers(&top, true);
        out.extend_from_slice(
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/encrypted;\r\n protocol=\"application/pgp-encrypted\";\r\n boundary=\"{boundary}\"\r\n\r\n\
                 This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
                 --{boundary}\r\n\
                 Content-Type: application/pgp-encrypted\r\n\
                 Content-Description: PGP/MIME version identification\r\n\r\n\
                 Version: 1\r\n\r\n\
                 --{boundary}\r\n\
                 Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\
                 Content-Description: OpenPGP encrypted message\r\n\
                 Content-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(&mime::to_crlf(&armoured));
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Ok(out)
    }

    /// Signs `message` with `signer`'s key as `multipart/signed;
    /// protocol="application/pgp-signature"; micalg=pgp-sha256`.
    pub fn sign(&self, message: &[u8], signer: &Cert) -> Result<Vec<u8>, PgpError> {
        let key = self.signing_key(signer)?;
        self.sign_with(message, &key)
    }

    /// [`Pgp::sign`] with a prepared (cached) signing key.
    pub fn sign_with(&self, message: &[u8], signer: &SigningKey) -> Result<Vec<u8>, PgpError> {
        self.limit_input(message)?;
        let raw = mime::to_crlf(message);
        let top = mime::parse_entity(&raw, 0..raw.len());
        let signed = inner_entity(&raw, &top, false);
        let keypair = signer.clone();
        let mut sig = Vec::new();
        {
            let m = Message::new(&mut sig);
            let m = Armorer::new(m)
                .kind(armor::Kind::Signature)
                .build()
                .map_err(|e| PgpError::Compose(chain(&e)))?;
            let mut w = Signer::new(m, keypair)
                .and_then(|s| s.hash_algo(HashAlgorithm::SHA256))
                .map_err(|e| PgpError::Compose(chain(&e)))?
                .creation_time(self.now())
                .detached()
                .build()
                .map_err(|e| PgpError::Compose(chain(&e)))?;
            w.write_all(&signed)
                .map_err(|e| PgpError::Compose(e.to_string()))?;
            w.finalize().map_err(|e| PgpError::Compose(chain(&e)))?;
        }
        let boundary = boundary()?;
        let mut out = outer_headers(&top, false);
        out.extend_from_slice(
            format!(
                "MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\";\r\n boundary=\"{boundary}\"\r\n\r\n\
                 This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n\
                 --{boundary}\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(&signed);
        out.extend_from_slice(
            format!(
                "\r\n--{boundary}\r\n\
                 Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\
                 Content-Description: OpenPGP digital signature\r\n\
                 Content-Disposition: attachment; filename=\"signature.asc\"\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(&mime::to_crlf(&sig));
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        Ok(out)
    }

    /// Signs (one-pass, inline; unless `signer` is `None`) and encrypts
    /// raw bytes; armoured output. Public for benchmarks and for callers
    /// that build their own MIME.
    pub fn sign_encrypt_bytes(
        &self,
        data: &[u8],
        signer: Option<&SigningKey>,
        recipients: &[&Cert],
    ) -> Result<Vec<u8>, PgpError> {
        let now = self.now();
        let mut targets: Vec<Recipient<'_>> = Vec::new();
        for cert in recipients {
            self.check_encryption(cert)
                .map_err(|problem| PgpError::KeyUnusable {
                    fingerprint: cert.fingerprint().to_hex(),
                    problem,
                })?;
            let valid = cert
                .with_policy(&self.policy, now)
                .map_err(|e| PgpError::Compose(chain(&e)))?;
            targets.extend(
                valid
                    .keys()
                    .supported()
                    .alive()
                    .revoked(false)
                    .for_transport_encryption()
                    .for_storage_encryption()
                    .map(Recipient::from),
            );
        }
        let keypair = signer.cloned();
        let mut out = Vec::new();
        {
            let m = Message::new(&mut out);
            let m = Armorer::new(m)
                .kind(armor::Kind::Message)
                .build()
                .map_err(|e| PgpError::Compose(chain(&e)))?;
            let m = Encryptor::for_recipients(m, targets)
                .build()
                .map_err(|e| PgpError::Compose(chain(&e)))?;
            let m = match keypair {
                Some(keypair) => Signer::new(m, keypair)
                    .map_err(|e| PgpError::Compose(chain(&e)))?
                    .creation_time(now)
                    .build()
                    .map_err(|e| PgpError::Compose(chain(&e)))?,
                None => m,
            };
            let mut w = LiteralWriter::new(m)
                .build()
                .map_err(|e| PgpError::Compose(chain(&e)))?;
            w.write_all(data)
                .map_err(|e| PgpError::Compose(e.to_string()))?;
            w.finalize().map_err(|e| PgpError::Compose(chain(&e)))?;
        }
        Ok(out)
    }

    /// The value of the `Autocrypt:` header for `address` with `cert`:
    /// `addr=…; keydata=…` where keydata is the minimal key (primary key,
    /// the User ID of that address, one encryption and one signing subkey,
    /// their binding signatures), base64 folded for a header line. Write it as
    /// `Autocrypt: {value}\r\n`.
    pub fn autocrypt_header(&self, cert: &Cert, address: &Address) -> Result<String, PgpError> {
        let unusable = |problem| PgpError::KeyUnusable {
            fingerprint: cert.fingerprint().to_hex(),
            problem,
        };
        self.check_encryption(cert).map_err(unusable)?;
        let subkey = keys::encryption_subkeys(&self.policy, cert, self.now())
            .into_iter()
            .next()
            .ok_or_else(|| unusable(KeyProblem::NoEncryptionKey))?;
        // The live signing subkey stays too: without it a correspondent who
        // learnt the key from this header could not check our signatures
        // (our keys certify with the primary key and sign with a subkey).
        let signing: Vec<String> = cert
            .with_policy(&self.policy, self.now())
            .map(|v| {
                v.keys()
                    .subkeys()
                    .alive()
                    .revoked(false)
                    .for_signing()
                    .map(|k| k.key().fingerprint().to_hex())
                    .take(1)
                    .collect()
            })
            .unwrap_or_default();
        let wanted = address.as_str().to_ascii_lowercase();
        let has_uid = cert.userids().any(|u| email_is(u.userid(), &wanted));
        let minimal = cert
            .clone()
            .strip_secret_key_material()
            .retain_userids(|u| !has_uid || email_is(u.userid(), &wanted))
            .retain_subkeys(|k| {
                let fp = k.key().fingerprint().to_hex();
                fp == subkey || signing.contains(&fp)
            });
        let mut bytes = Vec::new();
        minimal
            .serialize(&mut bytes)
            .map_err(|e| PgpError::Compose(chain(&e)))?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
        let folded: Vec<&str> = b64
            .as_bytes()
            .chunks(76)
            .filter_map(|c| std::str::from_utf8(c).ok())
            .collect();
        Ok(format!(
            "addr={address}; keydata=\r\n {}",
            folded.join("\r\n ")
        ))
    }

    /// Prepares `signer`'s signing key (live, unrevoked, with unencrypted
    /// secret material) for repeated use; cache the result per sender.
    pub fn signing_key(&self, signer: &Cert) -> Result<SigningKey, PgpError> {
        let unusable = |problem| PgpError::KeyUnusable {
            fingerprint: signer.fingerprint().to_hex(),
            problem,
        };
        let valid = signer
            .with_policy(&self.policy, self.now())
            .map_err(|e| unusable(KeyProblem::NotValid(chain(&e))))?;
        let ka = valid
            .keys()
            .supported()
            .alive()
            .revoked(false)
            .for_signing()
            .secret()
            .next()
            .ok_or_else(|| unusable(KeyProblem::NoSigningKey))?;
        let pair = ka
            .key()
            .clone()
            .into_keypair()
            .map_err(|e| PgpError::Compose(chain(&e)))?;
        Ok(SigningKey::new(pair, signer.fingerprint().to_hex()))
    }
}

fn email_is(uid: &openpgp::packet::UserID, wanted: &str) -> bool {
    uid.email()
        .ok()
        .flatten()
        .is_some_and(|e| e.to_ascii_lowercase() == wanted)
}

/// The MIME entity that gets signed/encrypted: Content-* headers and the
/// body; with `protected` also copies of the protected headers and the
/// `protected-headers="v1"` marker on the Content-Type.
fn inner_entity(raw: &[u8], top: &Entity, protected: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut has_ct = false;
    for h in &top.headers {
        if h.name == "content-type" {
            has_ct = true;
            if protected {
                let line = h.raw.strip_suffix(b"\n").unwrap_or(&h.raw);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                out.extend_from_slice(line);
                out.extend_from_slice(b";\r\n protected-headers=\"v1\"\r\n");
                continue;
            }
        }
        if h.name.starts_with("content-") {
            push_line(&mut out, &h.raw);
        }
    }
    if !has_ct {
        out.extend_from_slice(b"Content-Type: text/plain; charset=us-ascii\r\n");
        if protected {
            let n = out.len() - 2;
            out.truncate(n);
            out.extend_from_slice(b"; protected-headers=\"v1\"\r\n");
        }
    }
    if protected {
        for h in &top.headers {
            if PROTECTED.contains(&h.name.as_str()) {
                push_line(&mut out, &h.raw);
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&raw[top.body.clone()]);
    out
}

/// Headers that stay outside: everything but Content-* and MIME-Version;
/// with `hide_subject` the Subject is replaced by [`HIDDEN_SUBJECT`].
fn outer_headers(top: &Entity, hide_subject: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for h in &top.headers {
        if h.name.starts_with("content-") || h.name == "mime-version" {
            continue;
        }
        if hide_subject && h.name == "subject" {
            out.extend_from_slice(format!("Subject: {HIDDEN_SUBJECT}\r\n").as_bytes());
            continue;
        }
        push_line(&mut out, &h.raw);
    }
    out
}

/// Appends a raw header, adding the line end a header at the very end of
/// a body-less message lacks.
fn push_line(out: &mut Vec<u8>, raw: &[u8]) {
    out.extend_from_slice(raw);
    if !raw.ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
}

/// A MIME boundary that cannot occur in base64 or armoured text (`=_` and
/// `.` are not in the base64 alphabet).
fn boundary() -> Result<String, PgpError> {
    let mut buf = [0u8; 12];
    openpgp::crypto::random(&mut buf).map_err(|e| PgpError::Compose(chain(&e)))?;
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("=_siegel.{hex}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(raw: &[u8]) -> Entity {
        mime::parse_entity(raw, 0..raw.len())
    }

    #[test]
    fn inner_entity_carries_content_and_protected_headers() {
        let raw =
            b"From: a@x\r\nSubject: hi\r\nX-Other: 1\r\nContent-Type: text/plain\r\n\r\nbody\r\n";
        let inner = inner_entity(raw, &split(raw), true);
        let text = String::from_utf8_lossy(&inner);
        assert!(text.starts_with("Content-Type: text/plain;\r\n protected-headers=\"v1\"\r\n"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(text.contains("From: a@x\r\n"));
        assert!(!text.contains("X-Other"));
        assert!(text.ends_with("\r\n\r\nbody\r\n"));
        let outer = outer_headers(&split(raw), true);
        assert_eq!(outer, b"From: a@x\r\nSubject: ...\r\nX-Other: 1\r\n");
    }

    #[test]
    fn message_without_body_or_content_type_gets_a_default() {
        let raw = b"Subject: hi";
        let inner = inner_entity(raw, &split(raw), true);
        assert_eq!(
            inner,
            b"Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: hi\r\n\r\n"
        );
        assert_eq!(outer_headers(&split(raw), false), b"Subject: hi\r\n");
    }
}
