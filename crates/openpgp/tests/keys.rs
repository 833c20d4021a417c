//! Key generation, storage form, import, and refusal of bad keys.
#![allow(clippy::unwrap_used, clippy::cloned_ref_to_slice_refs)] // helpers unwrap too; slices of clones read better

mod common;

use common::*;
use siegel_openpgp::{KeyAlgorithm, KeyProblem, PgpError};
use siegel_types::Address;

#[test]
fn generated_keys_round_trip_and_are_usable() {
    let pgp = pgp();
    let addr = Address::parse("alice@example.org").unwrap();
    for algo in [KeyAlgorithm::Cv25519, KeyAlgorithm::Rsa3072] {
        let cert = pgp.generate_key(&addr, algo).unwrap();
        assert_eq!(pgp.check_encryption(&cert), Ok(()));
        let public = pgp.export_public(&cert).unwrap();
        assert!(public.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"));
        assert!(!public.contains("PRIVATE"));
        let imported = pgp.import_keys(public.as_bytes()).unwrap();
        assert_eq!(imported.len(), 1);
        assert_eq!(imported[0].addresses, vec![addr.clone()]);
        assert_eq!(imported[0].fingerprint, cert.fingerprint().to_hex());
        assert_eq!(imported[0].encryption_subkeys.len(), 1);
        assert!(!imported[0].cert.is_tsk());
        // Public keys cannot be stored as secret keys.
        assert!(matches!(
            pgp.secret_key_bytes(&imported[0].cert),
            Err(PgpError::NotASecretKey(_))
        ));
        let stored = pgp.secret_key_bytes(&cert).unwrap();
        let back = pgp.load_secret_key(&stored).unwrap();
        assert_eq!(back.fingerprint(), cert.fingerprint());
        assert!(pgp.load_secret_key(public.as_bytes()).is_err());
        // v4 key, SEIPDv1 only: readable by GnuPG 2.2.
        assert_eq!(cert.primary_key().key().version(), 4);
        let rsa = matches!(algo, KeyAlgorithm::Rsa3072);
        let pk = cert.primary_key().key().pk_algo();
        assert_eq!(
            pk == sequoia_openpgp::types::PublicKeyAlgorithm::RSAEncryptSign,
            rsa
        );
    }
}

#[test]
fn several_keys_in_one_file_armoured_or_binary() {
    let pgp = pgp();
    let mut both = tb(ALICE_PUB);
    both.extend_from_slice(&tb(BOB_PUB));
    let keys = pgp.import_keys(&both).unwrap();
    let fprs: Vec<_> = keys.iter().map(|k| k.fingerprint.as_str()).collect();
    assert_eq!(fprs, vec![ALICE_FPR, BOB_FPR]);
    assert_eq!(keys[0].addresses[0].as_str(), "alice@openpgp.example");
    assert!(keys.iter().all(|k| k.validity.is_ok()));

    let binary = pgp.import_keys(&tb("keys/key-binary.gpg")).unwrap();
    assert!(!binary.is_empty());
}

#[test]
fn garbage_is_a_parse_error() {
    let pgp = pgp();
    assert!(matches!(
        pgp.import_keys(b"hello"),
        Err(PgpError::KeyParse(_))
    ));
    assert!(matches!(pgp.import_keys(b""), Err(PgpError::KeyParse(_))));
    // A binary key cut before its first User ID has no usable identity.
    let binary = tb("keys/key-binary.gpg");
    if let Ok(keys) = pgp.import_keys(&binary[..40]) {
        assert!(keys.iter().all(|k| k.validity.is_err()));
    }
}

#[test]
fn revoked_key_is_refused_with_reason() {
    let pgp = pgp();
    let keys = pgp
        .import_keys(&tb(
            "keys/carol@pgp.icu-0xEF2FD01608AFD744-revoked-secret.asc",
        ))
        .unwrap();
    assert_eq!(keys[0].validity, Err(KeyProblem::Revoked));
    assert!(keys[0].encryption_subkeys.is_empty());
    let signer = cert(&pgp, &tb(ALICE_SEC));
    let err = pgp
        .encrypt_and_sign(b"Subject: x\r\n\r\nhi\r\n", &signer, &[&keys[0].cert])
        .unwrap_err();
    assert!(matches!(
        err,
        PgpError::KeyUnusable {
            problem: KeyProblem::Revoked,
            ..
        }
    ));
}

#[test]
fn expired_encryption_subkey_is_refused() {
    let pgp = pgp();
    let keys = pgp
        .import_keys(&tb("keys/expired-enc-subkey.pub.asc"))
        .unwrap();
    assert_eq!(keys[0].validity, Err(KeyProblem::NoEncryptionKey));
}

#[test]
fn key_without_self_signatures_is_not_valid() {
    let pgp = pgp();
    match pgp.import_keys(&tb("keys/invalid-pubkey-nosigs.pgp")) {
        Ok(keys) => assert!(matches!(keys[0].validity, Err(KeyProblem::NotValid(_)))),
        Err(e) => assert!(matches!(e, PgpError::KeyParse(_))),
    }
}

#[test]
fn revocation_takes_effect_at_the_reference_time() {
    // Bob's revocation certificate applies whatever the time; a key
    // generated "now" is not valid before its creation.
    let pgp = pgp();
    let addr = Address::parse("new@example.org").unwrap();
    let cert = pgp.generate_key(&addr, KeyAlgorithm::Cv25519).unwrap();
    let earlier = siegel_openpgp::Pgp::new().at(pinned() - std::time::Duration::from_secs(86400));
    assert!(earlier.check_encryption(&cert).is_err());
    let mut bob = tb(BOB_PUB);
    bob.extend_from_slice(&tb("keys/bob@openpgp.example-0xfbfcc82a015e7330-rev.asc"));
    match pgp.import_keys(&bob) {
        Ok(keys) => assert!(keys.iter().any(|k| k.validity == Err(KeyProblem::Revoked))),
        Err(e) => panic!("{e}"),
    }
}
