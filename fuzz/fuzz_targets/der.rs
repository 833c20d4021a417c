//! Arbitrary bytes into the hand-written DER readers (SMIMECapabilities and
//! signed attributes, CRL extensions, PKCS#12 structure) and into CRL
//! parsing: nothing may panic or hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    siegel_crypto::fuzzing::der_readers(data);
    let _ = siegel_crypto::revocation::parse_crls(data);
});
