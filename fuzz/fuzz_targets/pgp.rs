//! Feeds arbitrary bytes to every OpenPGP entry point that reads data
//! from outside: `open` (PGP/MIME, inline PGP, multipart/signed),
//! `harvest` (Autocrypt headers, application/pgp-keys parts), key import,
//! raw decryption and detached/cleartext verification. Invariants:
//! nothing panics; random bytes never verify as a valid signature by our
//! key; the plaintext limit holds.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use siegel_openpgp::{Cert, KeyAlgorithm, Limits, Pgp, SignatureStatus};
use siegel_types::Address;

struct Fixture {
    pgp: Pgp,
    key: Cert,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Small limits so compression bombs are cut quickly.
        let pgp = Pgp::new().with_limits(Limits {
            max_input: 1 << 20,
            max_plaintext: 1 << 20,
        });
        let addr = Address::parse("fuzz@example.org").expect("fixed address");
        let key = pgp
            .generate_key(&addr, KeyAlgorithm::Cv25519)
            .expect("key generation");
        Fixture { pgp, key }
    })
}

fn not_ours(status: &SignatureStatus, key: &Cert) {
    if let SignatureStatus::Valid { fingerprint, .. } = status {
        assert_ne!(*fingerprint, key.fingerprint().to_hex(), "forged signature");
    }
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let keys = std::slice::from_ref(&f.key);
    if let Ok(opened) = f.pgp.open(data, keys, keys) {
        not_ours(&opened.signature, &f.key);
    }
    let _ = f.pgp.harvest(data);
    let _ = f.pgp.import_keys(data);
    if let Ok((plain, status)) = f.pgp.decrypt(data, keys, keys) {
        assert!(plain.len() <= 1 << 20);
        not_ours(&status, &f.key);
    }
    if let Ok((_, status)) = f.pgp.verify_cleartext(data, keys) {
        not_ours(&status, &f.key);
    }
    let (content, sig) = data.split_at(data.len() / 2);
    if let Ok(status) = f.pgp.verify_detached(content, sig, keys) {
        not_ours(&status, &f.key);
    }
});
