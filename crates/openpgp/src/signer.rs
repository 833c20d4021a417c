//! A signing key prepared once per sender and reused for every mail.
//!
//! Sequoia's `KeyPair` re-imports the secret into OpenSSL on every
//! signature; for Ed25519 that import derives the public key (a full
//! scalar multiplication) and unseals Sequoia's in-memory key protection,
//! which together cost more than the signature itself. For RSA it builds
//! the OpenSSL key without the CRT parameters, so every signature is a
//! full-size exponentiation (about 4x slower). A gateway signs thousands
//! of mails with the same few keys, so for Ed25519 and RSA we keep a
//! complete OpenSSL key object; other algorithms fall back to Sequoia's
//! `KeyPair`.

use sequoia_openpgp as openpgp;

use openpgp::crypto::{KeyPair, mpi};
use openpgp::packet::Key;
use openpgp::packet::key::{PublicParts, UnspecifiedRole};
use openpgp::types::{Curve, HashAlgorithm, PublicKeyAlgorithm};
use openssl::bn::{BigNum, BigNumContext};
use openssl::md::{Md, MdRef};
use openssl::pkey::{Id, PKey, Private};
use openssl::pkey_ctx::PkeyCtx;
use openssl::rsa::{Padding, Rsa};

/// A sender's signing key, ready to sign. Cheap to clone (reference
/// counted); cache it per sender.
#[derive(Clone)]
pub struct SigningKey {
    public: Key<PublicParts, UnspecifiedRole>,
    cert_fingerprint: String,
    imp: Imp,
}

#[derive(Clone)]
enum Imp {
    Ed25519(PKey<Private>),
    /// The OpenSSL key with CRT parameters, and the pair for hash
    /// algorithms OpenSSL has no DigestInfo for.
    Rsa(PKey<Private>, KeyPair),
    Generic(KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("SigningKey")
            .field("cert", &self.cert_fingerprint)
            .field("key", &self.public.fingerprint().to_hex())
            .finish()
    }
}

impl SigningKey {
    /// Builds from a keypair; uses the cached OpenSSL key for Ed25519.
    pub(crate) fn new(pair: KeyPair, cert_fingerprint: String) -> Self {
        let public = pair.public().clone();
        let imp = if let Some(key) = ed25519_pkey(&pair) {
            Imp::Ed25519(key)
        } else if let Some(key) = rsa_pkey(&pair) {
            Imp::Rsa(key, pair)
        } else {
            Imp::Generic(pair)
        };
        Self {
            public,
            cert_fingerprint,
            imp,
        }
    }

    /// Fingerprint of the certificate this key belongs to.
    pub fn cert_fingerprint(&self) -> &str {
        &self.cert_fingerprint
    }
}

/// The OpenSSL key for a legacy-EdDSA Ed25519 (v4) key; `None` otherwise.
fn ed25519_pkey(pair: &KeyPair) -> Option<PKey<Private>> {
    let public = pair.public();
    let is_ed25519 = public.pk_algo() == PublicKeyAlgorithm::EdDSA
        && matches!(
            public.mpis(),
            mpi::PublicKey::EdDSA {
                curve: Curve::Ed25519,
                ..
            }
        );
    if !is_ed25519 {
        return None;
    }
    let raw = pair.secret().map(|m| match m {
        mpi::SecretKeyMaterial::EdDSA { scalar } => Some(scalar.value_padded(32)),
        _ => None,
    })?;
    PKey::private_key_from_raw_bytes(&raw, Id::ED25519).ok()
}

/// The complete (CRT) OpenSSL RSA key; `None` for other algorithms.
fn rsa_pkey(pair: &KeyPair) -> Option<PKey<Private>> {
    let mpi::PublicKey::RSA { e, n } = pair.public().mpis() else {
        return None;
    };
    pair.secret().map(|m| {
        let mpi::SecretKeyMaterial::RSA { d, p, q, .. } = m else {
            return None;
        };
        let bn = |b: &[u8]| BigNum::from_slice(b).ok();
        let (n, e, d, p, q) = (
            bn(n.value())?,
            bn(e.value())?,
            bn(d.value())?,
            bn(p.value())?,
            bn(q.value())?,
        );
        let mut ctx = BigNumContext::new().ok()?;
        let one = BigNum::from_u32(1).ok()?;
        let mut p1 = BigNum::new().ok()?;
        p1.checked_sub(&p, &one).ok()?;
        let mut q1 = BigNum::new().ok()?;
        q1.checked_sub(&q, &one).ok()?;
        let mut dmp1 = BigNum::new().ok()?;
        dmp1.nnmod(&d, &p1, &mut ctx).ok()?;
        let mut dmq1 = BigNum::new().ok()?;
        dmq1.nnmod(&d, &q1, &mut ctx).ok()?;
        // OpenPGP stores p^-1 mod q; OpenSSL wants q^-1 mod p.
        let mut iqmp = BigNum::new().ok()?;
        iqmp.mod_inverse(&q, &p, &mut ctx).ok()?;
        let rsa = Rsa::from_private_components(n, e, d, p, q, dmp1, dmq1, iqmp).ok()?;
        PKey::from_rsa(rsa).ok()
    })
}

fn openssl_md(algo: HashAlgorithm) -> Option<&'static MdRef> {
    Some(match algo {
        HashAlgorithm::SHA256 => Md::sha256(),
        HashAlgorithm::SHA384 => Md::sha384(),
        HashAlgorithm::SHA512 => Md::sha512(),
        HashAlgorithm::SHA224 => Md::sha224(),
        _ => return None,
    })
}

impl openpgp::crypto::Signer for SigningKey {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn sign(&mut self, hash_algo: HashAlgorithm, digest: &[u8]) -> openpgp::Result<mpi::Signature> {
        match &mut self.imp {
            Imp::Ed25519(key) => {
                let mut signer = openssl::sign::Signer::new_without_digest(key)?;
                let sig = signer.sign_oneshot_to_vec(digest)?;
                let (r, s) = sig.split_at_checked(32).ok_or_else(|| {
                    openpgp::Error::InvalidOperation("short Ed25519 signature".into())
                })?;
                Ok(mpi::Signature::EdDSA {
                    r: mpi::MPI::new(r),
                    s: mpi::MPI::new(s),
                })
            }
            Imp::Rsa(key, pair) => {
                let Some(md) = openssl_md(hash_algo) else {
                    return pair.sign(hash_algo, digest);
                };
                let mut ctx = PkeyCtx::new(key)?;
                ctx.sign_init()?;
                ctx.set_rsa_padding(Padding::PKCS1)?;
                ctx.set_signature_md(md)?;
                let mut sig = Vec::new();
                ctx.sign_to_vec(digest, &mut sig)?;
                Ok(mpi::Signature::RSA {
                    s: mpi::MPI::new(&sig),
                })
            }
            Imp::Generic(pair) => pair.sign(hash_algo, digest),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyAlgorithm, Pgp, SignatureStatus};
    use siegel_types::Address;

    #[test]
    fn cached_openssl_keys_make_signatures_that_verify() {
        let pgp = Pgp::new();
        let addr = Address::parse("s@example.org").unwrap();
        for algo in [KeyAlgorithm::Cv25519, KeyAlgorithm::Rsa3072] {
            let cert = pgp.generate_key(&addr, algo).unwrap();
            let key = pgp.signing_key(&cert).unwrap();
            assert!(matches!(key.imp, Imp::Ed25519(_) | Imp::Rsa(..)));
            let signed = pgp
                .sign_with(b"Content-Type: text/plain\r\n\r\nhi\r\n", &key)
                .unwrap();
            let opened = pgp.open(&signed, &[], std::slice::from_ref(&cert)).unwrap();
            assert!(matches!(opened.signature, SignatureStatus::Valid { .. }));
        }
    }
}
