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
//! * [`capabilities`] — SMIMECapabilities: what a correspondent can decrypt.
//! * [`revocation`] — CRL parsing, distribution points, soft-fail checks.
//!
//! CMS itself is OpenSSL's (`openssl` 0.10): it interoperates both ways with
//! `openssl cms` and `gpgsm`, which the integration tests check with the real
//! tools.

pub mod capabilities;
pub mod pki;
pub mod revocation;
pub mod smime;

mod der;
mod mime;
mod signed_data;

/// Entry points for the fuzz targets into the DER readers that normally
/// run only on verified or self-made data (signed attributes, CRL
/// extensions, PKCS#12 structure), so that they are fuzzed directly too.
#[doc(hidden)]
pub mod fuzzing {
    /// Runs every internal DER reader over `data`; must never panic.
    pub fn der_readers(data: &[u8]) {
        let _ = crate::signed_data::capabilities(data);
        let _ = crate::signed_data::first_signed_attributes(data);
        let _ = crate::pki::p12_gpgsm_compatible(data, "fuzz");
        let _ = crate::revocation::crl_extension_oids(data);
    }
}
