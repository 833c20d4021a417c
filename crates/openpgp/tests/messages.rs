//! PGP/MIME out and in: our own round trips, real client mails from the
//! shared test data, Autocrypt and harvesting, hostile input.
#![allow(clippy::unwrap_used, clippy::cloned_ref_to_slice_refs)] // helpers unwrap too; slices of clones read better

mod common;

use common::*;
use siegel_openpgp::mime;
use siegel_openpgp::{
    Encryption, InvalidReason, KeyAlgorithm, KeySource, Limits, PgpError, SignatureStatus,
};
use siegel_types::Address;

const MAIL: &[u8] = b"From: Alice <alice@openpgp.example>\nTo: bob@openpgp.example\nSubject: Secret plans\nDate: Mon, 1 Jun 2026 10:00:00 +0000\nMessage-ID: <1@example>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9fe, Bob.\n";

fn is_valid_by(status: &SignatureStatus, fpr: &str) -> bool {
    matches!(status, SignatureStatus::Valid { fingerprint, .. } if fingerprint == fpr)
}

#[test]
fn encrypt_and_sign_round_trip_with_protected_subject() {
    let pgp = pgp();
    let alice = cert(&pgp, &tb(ALICE_SEC));
    let bob = cert(&pgp, &tb(BOB_SEC));
    let out = pgp.encrypt_and_sign(MAIL, &alice, &[&bob]).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("multipart/encrypted"));
    assert!(text.contains("protocol=\"application/pgp-encrypted\""));
    assert!(text.contains("\r\nSubject: ...\r\n"));
    assert!(!text.contains("Secret plans"));
    assert!(!text.contains("Grüße"));
    assert!(text.contains("To: bob@openpgp.example\r\n"));

    let opened = pgp.open(&out, &[bob.clone()], &[alice.clone()]).unwrap();
    assert_eq!(opened.encryption, Encryption::PgpMime);
    assert_eq!(opened.decrypted_with.as_deref(), Some(BOB_FPR));
    assert!(
        is_valid_by(&opened.signature, ALICE_FPR),
        "{:?}",
        opened.signature
    );
    if let SignatureStatus::Valid { signer, .. } = &opened.signature {
        assert_eq!(
            signer.as_ref().map(Address::as_str),
            Some("alice@openpgp.example")
        );
    }
    let msg = String::from_utf8_lossy(&opened.message);
    assert!(msg.contains("Subject: Secret plans\r\n"), "{msg}");
    assert!(msg.contains("Grüße, Bob.\r\n"));

    // Wrong key: a typed error, not a panic.
    let err = pgp
        .open(&out, &[alice.clone()], &[alice.clone()])
        .unwrap_err();
    assert!(matches!(err, PgpError::NoSecretKey), "{err}");
    // Unknown signer: decrypts, but the signature is not valid.
    let opened = pgp.open(&out, &[bob.clone()], &[]).unwrap();
    assert!(matches!(
        opened.signature,
        SignatureStatus::Invalid {
            reason: InvalidReason::UnknownKey { .. }
        }
    ));
}

#[test]
fn sign_only_round_trip_and_tamper_detection() {
    let pgp = pgp();
    let alice = cert(&pgp, &tb(ALICE_SEC));
    let out = pgp.sign(MAIL, &alice).unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("multipart/signed; micalg=pgp-sha256"));
    assert!(text.contains("protocol=\"application/pgp-signature\""));
    assert!(text.contains("Subject: Secret plans"));
    let opened = pgp.open(&out, &[], &[alice.clone()]).unwrap();
    assert_eq!(opened.encryption, Encryption::None);
    assert!(
        is_valid_by(&opened.signature, ALICE_FPR),
        "{:?}",
        opened.signature
    );

    // LF line ends (as stored by some MTAs) still verify.
    let lf: Vec<u8> = out.iter().copied().filter(|b| *b != b'\r').collect();
    let opened = pgp.open(&lf, &[], &[alice.clone()]).unwrap();
    assert!(is_valid_by(&opened.signature, ALICE_FPR));

    let tampered = text.replacen("Bob.", "Eve.", 1);
    let opened = pgp.open(tampered.as_bytes(), &[], &[alice]).unwrap();
    assert!(
        matches!(
            opened.signature,
            SignatureStatus::Invalid {
                reason: InvalidReason::BadSignature(_)
            }
        ),
        "{:?}",
        opened.signature
    );
}

#[test]
fn generated_rsa_and_curve25519_keys_work_end_to_end() {
    let pgp = pgp();
    for algo in [KeyAlgorithm::Cv25519, KeyAlgorithm::Rsa3072] {
        let a = pgp
            .generate_key(&Address::parse("a@example.org").unwrap(), algo)
            .unwrap();
        let b = pgp
            .generate_key(&Address::parse("b@example.org").unwrap(), algo)
            .unwrap();
        let out = pgp.encrypt_and_sign(MAIL, &a, &[&b]).unwrap();
        let opened = pgp.open(&out, &[b], &[a.clone()]).unwrap();
        assert!(is_valid_by(&opened.signature, &a.fingerprint().to_hex()));
    }
}

#[test]
fn thunderbird_encrypted_and_signed_nonascii() {
    let pgp = pgp();
    let bob = cert(&pgp, &tb(BOB_SEC));
    let alice = cert(&pgp, &tb(ALICE_PUB));
    let mail = tb("eml/encrypted-and-signed-alice-to-bob-nonascii.eml");
    let opened = pgp.open(&mail, &[bob], &[alice]).unwrap();
    assert_eq!(opened.encryption, Encryption::PgpMime);
    assert!(
        is_valid_by(&opened.signature, ALICE_FPR),
        "{:?}",
        opened.signature
    );
}

#[test]
fn thunderbird_inline_qp_with_nbsp() {
    let pgp = pgp();
    let alice = cert(&pgp, &tb(ALICE_SEC));
    let mail = tb("eml/bob-enc-inline-nbsp-qp.eml");
    let opened = pgp.open(&mail, &[alice], &[]).unwrap();
    assert_eq!(opened.encryption, Encryption::Inline);
    let msg = String::from_utf8_lossy(&opened.message);
    assert!(!msg.contains("BEGIN PGP MESSAGE"), "{msg}");
    assert!(msg.contains("Content-Transfer-Encoding: 8bit"));
}

#[test]
fn thunderbird_inline_clearsigned() {
    let pgp = pgp();
    let alice = cert(&pgp, &tb(ALICE_PUB));
    let mail = tb("eml/alice-signed.eml");
    let opened = pgp.open(&mail, &[], &[alice]).unwrap();
    assert_eq!(opened.encryption, Encryption::None);
    assert!(
        is_valid_by(&opened.signature, ALICE_FPR),
        "{:?}",
        opened.signature
    );
    assert!(!String::from_utf8_lossy(&opened.message).contains("BEGIN PGP SIGNATURE"));
}

#[test]
fn thunderbird_signed_by_bob_encrypted_to_alice_with_attached_key() {
    let pgp = pgp();
    let alice = cert(&pgp, &tb(ALICE_SEC));
    let bob = cert(&pgp, &tb(BOB_PUB));
    let mail = tb("eml/signed-by-0xfbfcc82a015e7330-encrypted-to-0xf231550c4f47e38e-with-key.eml");
    let opened = pgp.open(&mail, &[alice], &[bob]).unwrap();
    assert!(
        is_valid_by(&opened.signature, BOB_FPR),
        "{:?}",
        opened.signature
    );
    // The key travels inside the encrypted part: harvest after decrypting.
    let keys = pgp.harvest(&opened.message);
    assert!(
        keys.iter()
            .any(|k| k.key.fingerprint == BOB_FPR
                && matches!(k.source, KeySource::Attachment { .. })),
        "{}",
        keys.len()
    );
}

const TB_ALICE_FPR: &str = "14AB3F65FC274BBDB5FA768C25F0072459E47AE2";

/// Alice's Thunderbird key, harvested from her earlier unencrypted mail
/// (the Delta Chat test key of the same name is a different key).
fn harvested_alice() -> siegel_openpgp::Cert {
    let mail = dc("message/thunderbird_with_autocrypt_unencrypted.eml");
    let keys = pgp().harvest(&mail);
    let found = keys
        .iter()
        .find(|k| matches!(k.source, KeySource::Autocrypt { .. }))
        .expect("autocrypt key");
    found.key.cert.clone()
}

#[test]
fn deltachat_thunderbird_encrypted_signed() {
    let pgp = pgp();
    let bob = cert(&pgp, &dc("key/bob-secret.asc"));
    let alice = harvested_alice();
    let mail = dc("message/thunderbird_encrypted_signed.eml");
    let opened = pgp.open(&mail, &[bob.clone()], &[alice.clone()]).unwrap();
    assert_eq!(opened.encryption, Encryption::PgpMime);
    assert!(
        is_valid_by(&opened.signature, TB_ALICE_FPR),
        "{:?}",
        opened.signature
    );
    // Without Alice's key: decrypted, signer unknown.
    let opened = pgp.open(&mail, &[bob.clone()], &[]).unwrap();
    assert!(matches!(opened.signature, SignatureStatus::Invalid { .. }));
    let signed = dc("message/thunderbird_signed_unencrypted.eml");
    let opened = pgp.open(&signed, &[], &[alice.clone()]).unwrap();
    assert!(
        is_valid_by(&opened.signature, TB_ALICE_FPR),
        "{:?}",
        opened.signature
    );
    // Our own unsigned encryption to Bob reports NotSigned.
    let plain = b"Subject: x\r\n\r\nhi\r\n";
    let armoured = pgp
        .sign_encrypt_bytes(plain, Some(&pgp.signing_key(&bob).unwrap()), &[&bob])
        .unwrap();
    let (_, status) = pgp.decrypt(&armoured, &[bob.clone()], &[]).unwrap();
    assert!(matches!(status, SignatureStatus::Invalid { .. }));
    let (_, status) = pgp.decrypt(&armoured, &[bob.clone()], &[bob]).unwrap();
    assert!(matches!(status, SignatureStatus::Valid { .. }));
}

#[test]
fn autocrypt_header_is_harvested_from_thunderbird_mail() {
    let pgp = pgp();
    let mail = dc("message/thunderbird_with_autocrypt_unencrypted.eml");
    let keys = pgp.harvest(&mail);
    let sources: Vec<_> = keys
        .iter()
        .map(|k| (k.key.fingerprint.as_str(), &k.source))
        .collect();
    assert!(sources.contains(&(
        TB_ALICE_FPR,
        &KeySource::Autocrypt {
            addr: Address::parse("alice@example.org").unwrap()
        }
    )));
    // Thunderbird also attaches the key.
    assert!(
        keys.iter()
            .any(|k| matches!(k.source, KeySource::Attachment { .. }))
    );
}

#[test]
fn our_autocrypt_header_round_trips_and_is_minimal() {
    let pgp = pgp();
    let addr = Address::parse("carol@example.org").unwrap();
    let carol = pgp.generate_key(&addr, KeyAlgorithm::Cv25519).unwrap();
    let value = pgp.autocrypt_header(&carol, &addr).unwrap();
    assert!(value.starts_with("addr=carol@example.org; keydata=\r\n "));
    assert!(value.split("\r\n").all(|l| l.len() <= 78));
    let mail = format!(
        "From: Carol <carol@example.org>\r\nAutocrypt: {value}\r\nSubject: hi\r\n\r\nhi\r\n"
    );
    let keys = pgp.harvest(mail.as_bytes());
    assert_eq!(keys.len(), 1);
    let k = &keys[0].key;
    assert_eq!(k.fingerprint, carol.fingerprint().to_hex());
    assert!(!k.cert.is_tsk());
    // Minimal: primary, one encryption and one signing subkey (so that
    // a signature of Carol's can be checked with the header's key).
    assert_eq!(k.cert.keys().count(), 3);
    assert_eq!(k.validity, Ok(()));
    let signed = pgp.sign(mail.as_bytes(), &carol).unwrap();
    let opened = pgp
        .open(&signed, &[], std::slice::from_ref(&k.cert))
        .unwrap();
    assert!(matches!(opened.signature, SignatureStatus::Valid { .. }));
    // A header whose addr is not the sender is ignored (Autocrypt spec).
    let forged = mail.replace("From: Carol <carol@example.org>", "From: eve@example.org");
    assert!(pgp.harvest(forged.as_bytes()).is_empty());
    // Unknown critical attribute: ignored.
    let critical = mail.replace("Autocrypt: addr=", "Autocrypt: future=1; addr=");
    assert!(pgp.harvest(critical.as_bytes()).is_empty());
}

#[test]
fn hostile_input_gives_errors_not_panics() {
    let pgp = pgp();
    let bob = cert(&pgp, &tb(BOB_SEC));
    let alice = cert(&pgp, &tb(ALICE_SEC));
    let good = pgp.encrypt_and_sign(MAIL, &alice, &[&bob]).unwrap();
    // Corrupt the armour body in the middle.
    let mut bad = good.clone();
    let at = bad.len() - 200;
    for b in &mut bad[at..at + 20] {
        *b = if b.is_ascii_alphabetic() { b'A' } else { *b };
    }
    assert!(
        pgp.open(&bad, &[bob.clone()], &[]).is_err() || {
            // Armour checksums are optional; then the signature must not be valid.
            let o = pgp.open(&bad, &[bob.clone()], &[alice.clone()]).unwrap();
            !is_valid_by(&o.signature, ALICE_FPR)
        }
    );
    for junk in [
        &b""[..],
        b"\r\n\r\n",
        b"Content-Type: multipart/encrypted; boundary=x\r\n\r\n--x\r\n\r\n--x--",
        b"Content-Type: multipart/encrypted; boundary=x\r\n\r\n--x\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--x\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nAAAA\r\n-----END PGP MESSAGE-----\r\n--x--",
        b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x\r\n\r\ngarbage\r\n--x--",
        b"Content-Type: text/plain\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\n\xff\xfe\r\n-----END PGP MESSAGE-----\r\n",
    ] {
        let _ = pgp.open(junk, &[bob.clone()], &[alice.clone()]);
        let _ = pgp.harvest(junk);
    }
    let small = pgp.with_limits(Limits {
        max_input: 100,
        max_plaintext: 100,
    });
    assert!(matches!(
        small.open(&good, &[bob], &[]),
        Err(PgpError::InputTooLarge { .. })
    ));
}

#[test]
fn compression_bomb_is_cut_at_the_limit() {
    use sequoia_openpgp::serialize::stream::{Compressor, LiteralWriter, Message};
    use std::io::Write;
    // 8 MiB of zeros compress to a few KiB.
    let mut packed = Vec::new();
    {
        let m = Message::new(&mut packed);
        let m = Compressor::new(m).build().unwrap();
        let mut w = LiteralWriter::new(m).build().unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..8 {
            w.write_all(&zeros).unwrap();
        }
        w.finalize().unwrap();
    }
    assert!(packed.len() < 100_000);
    let pgp = pgp().with_limits(Limits {
        max_input: 1 << 20,
        max_plaintext: 1 << 20,
    });
    assert!(matches!(
        pgp.decrypt(&packed, &[], &[]),
        Err(PgpError::PlaintextTooLarge { .. })
    ));
    let roomy = common::pgp();
    let (plain, status) = roomy.decrypt(&packed, &[], &[]).unwrap();
    assert_eq!(plain.len(), 8 << 20);
    assert_eq!(status, SignatureStatus::NotSigned);
}

#[test]
fn signed_part_is_cut_byte_exactly() {
    let pgp = pgp();
    let alice = cert(&pgp, &tb(ALICE_SEC));
    let out = pgp.sign(MAIL, &alice).unwrap();
    let top = mime::parse_entity(&out, 0..out.len());
    let parts = top.children(&out);
    assert_eq!(parts.len(), 2);
    let signed = &out[parts[0].range.clone()];
    assert!(signed.starts_with(b"Content-Type: text/plain"));
    assert!(signed.ends_with(b"Bob.\r\n"));
}

/// Thunderbird's attack and edge-case samples: the verdicts agree with
/// `gpg --verify` on the cut-out parts.
#[test]
fn thunderbird_edge_cases() {
    let pgp = pgp();
    let carol_sec = "keys/carol@example.com-0x3099ff1238852b9f-secret.asc";
    let ring = vec![
        cert(&pgp, &tb(ALICE_SEC)),
        cert(&pgp, &tb(BOB_SEC)),
        cert(&pgp, &tb(carol_sec)),
    ];
    let open = |name: &str| pgp.open(&tb(&format!("eml/{name}")), &ring, &ring);

    let stripped = open("openpgp__stripped_sig.eml").unwrap();
    assert!(matches!(
        stripped.signature,
        SignatureStatus::Invalid {
            reason: InvalidReason::Malformed(_)
        }
    ));
    // Signed part inside multipart/mixed.
    let mixed = open("signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted-in-mixed.eml")
        .unwrap();
    assert!(
        is_valid_by(&mixed.signature, BOB_FPR),
        "{:?}",
        mixed.signature
    );
    // Mailman altered the signed part: gpg says BAD signature too.
    let mailman = open("signed-with-mailman-footer.eml").unwrap();
    assert!(matches!(
        mailman.signature,
        SignatureStatus::Invalid {
            reason: InvalidReason::BadSignature(_)
        }
    ));
    // RSA signer (Carol), encrypted to Alice.
    let carol = open("signed-by-0x3099ff1238852b9f-encrypted-to-0xf231550c4f47e38e.eml").unwrap();
    assert!(is_valid_by(
        &carol.signature,
        "B8F2F6F4BD3AD3F82DC446833099FF1238852B9F"
    ));
    // Hidden (wildcard) recipient.
    let hidden = open("encrypted-to-alice-as-hidden-recipient.eml").unwrap();
    assert_eq!(hidden.encryption, Encryption::PgpMime);
    assert_eq!(hidden.decrypted_with.as_deref(), Some(ALICE_FPR));
    // Inline clear-signed with indentation.
    let indented = open("signed-inline-indented.eml").unwrap();
    assert!(is_valid_by(&indented.signature, ALICE_FPR));
    // Not for any of our keys / not a real OpenPGP message: typed errors.
    assert!(matches!(
        open("enc-to-carol@pgp.icu-revoked.eml"),
        Err(PgpError::NoSecretKey)
    ));
    assert!(matches!(
        open("sigspoof-git-commit.eml"),
        Err(PgpError::Decrypt(_))
    ));
}
