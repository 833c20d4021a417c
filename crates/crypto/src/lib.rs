//! Siegel's S/MIME core.
//!
//! Siegel holds its users' keys so that they get signed and encrypted mail
//! without touching their client. This crate is the cryptographic part of
//! that promise, kept free of I/O so the pipeline, the store and the CLI can
//! call it from wherever they are:
//!
//! * [`pki`] — the managed PKI: Siegel's own CA, user certificates following
//!   the CA/Browser Forum S/MIME Baseline Requirements, CRLs, PKCS#12 export.
//! * [`smime`] — sign, encrypt, decrypt and verify whole RFC 5322 messages,
//!   including the S/MIME MIME wrapping (which we write ourselves, so we know
//!   exactly which bytes are signed).
//!
//! CMS itself is OpenSSL's (`openssl` 0.10): it interoperates both ways with
//! `openssl cms` and `gpgsm`, which the integration tests check with the real
//! tools.

pub mod pki;
pub mod smime;

mod der;
mod mime;
