//! Real client messages: Thunderbird/NSS S/MIME test data, verified and
//! decrypted with "now" pinned to 2026-06-01 (the certificates are valid
//! 2026-01-26 .. 2031-01-26).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use openssl::pkcs12::Pkcs12;
use siegel_crypto::smime::{self, DecryptError, InvalidReason, TrustStore, Verification};

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/thunderbird/mailnews/test/data/smime")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("test data {} missing: {e}", p.display()))
}

/// 2026-06-01T00:00:00Z
fn pinned_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_780_272_000)
}

fn trust() -> TrustStore {
    let mut t = TrustStore::new();
    assert_eq!(t.add_pem_bundle(&data("TestCA.pem")).unwrap(), 1);
    t
}

fn key(
    name: &str,
) -> (
    openssl::x509::X509,
    openssl::pkey::PKey<openssl::pkey::Private>,
) {
    let p12 = Pkcs12::from_der(&data(name))
        .unwrap()
        .parse2("nss")
        .unwrap();
    (p12.cert.unwrap(), p12.pkey.unwrap())
}

fn assert_valid_from_alice(v: &Verification) -> &[u8] {
    match v {
        Verification::Valid {
            signers, content, ..
        } => {
            assert_eq!(
                signers.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                vec!["Alice@example.com"]
            );
            content
        }
        other => panic!("expected a valid signature, got {other:?}"),
    }
}

#[test]
fn detached_sha256_signature_is_valid() {
    let v = smime::verify(
        &data("alice.dsig.SHA256.multipart.eml"),
        &trust(),
        pinned_now(),
    );
    let content = assert_valid_from_alice(&v);
    assert!(String::from_utf8_lossy(content).contains("This is a test message from Alice to Bob."));
}

#[test]
fn detached_signatures_with_lf_line_ends_still_verify() {
    // Mail stores often keep LF only; the signature covers the CRLF form.
    let lf: Vec<u8> = data("alice.dsig.SHA512.multipart.eml")
        .into_iter()
        .filter(|b| *b != b'\r')
        .collect();
    assert_valid_from_alice(&smime::verify(&lf, &trust(), pinned_now()));
}

#[test]
fn opaque_sha512_signature_is_valid_and_yields_the_content() {
    let v = smime::verify(&data("alice.sig.SHA512.opaque.eml"), &trust(), pinned_now());
    let content = assert_valid_from_alice(&v);
    assert!(String::from_utf8_lossy(content).contains("This is a test message from Alice to Bob."));
}

#[test]
fn tampered_bodies_are_invalid() {
    for name in [
        "alice.dsig.SHA256.multipart.bad.eml",
        "alice.dsig.SHA512.multipart.bad.eml",
        "alice.dsig.SHA1.multipart.bad.eml",
    ] {
        match smime::verify(&data(name), &trust(), pinned_now()) {
            Verification::Invalid {
                reason: InvalidReason::BadSignature(_),
            } => {}
            other => panic!("{name}: expected bad signature, got {other:?}"),
        }
    }
}

#[test]
fn mismatched_econtent_is_invalid() {
    for name in [
        "alice.dsig.SHA256.multipart.mismatch-econtent.eml",
        "alice.dsig.SHA512.multipart.mismatch-econtent.eml",
    ] {
        let v = smime::verify(&data(name), &trust(), pinned_now());
        assert!(
            matches!(
                v,
                Verification::Invalid {
                    reason: InvalidReason::BadSignature(_)
                }
            ),
            "{name}: {v:?}"
        );
    }
}

#[test]
fn verification_time_is_injectable() {
    let mail = data("alice.dsig.SHA256.multipart.eml");
    // before the certificates were issued
    let early = UNIX_EPOCH + Duration::from_secs(1_735_689_600); // 2025-01-01
    match smime::verify(&mail, &trust(), early) {
        Verification::Invalid {
            reason: InvalidReason::Certificate(why),
        } => {
            assert!(why.contains("not yet valid"), "{why}")
        }
        other => panic!("expected not-yet-valid, got {other:?}"),
    }
    // after they expired
    let late = UNIX_EPOCH + Duration::from_secs(1_956_528_000); // 2032-01-01
    match smime::verify(&mail, &trust(), late) {
        Verification::Invalid {
            reason: InvalidReason::Certificate(why),
        } => {
            assert!(why.contains("expired"), "{why}")
        }
        other => panic!("expected expired, got {other:?}"),
    }
}

#[test]
fn unknown_ca_is_untrusted() {
    let v = smime::verify(
        &data("alice.dsig.SHA256.multipart.eml"),
        &TrustStore::new(),
        pinned_now(),
    );
    match v {
        Verification::Invalid { reason } => {
            assert_eq!(reason.token(), "certificate", "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_and_encrypted_mails_are_not_signed() {
    let plain = b"From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n";
    assert!(matches!(
        smime::verify(plain, &trust(), pinned_now()),
        Verification::NotSigned
    ));
    assert!(matches!(
        smime::verify(&data("alice.env.eml"), &trust(), pinned_now()),
        Verification::NotSigned
    ));
}

#[test]
fn enveloped_mail_decrypts_with_bobs_key() {
    let (cert, key) = key("Bob.p12");
    let plain = smime::decrypt(&data("alice.env.eml"), &cert, &key).unwrap();
    let text = String::from_utf8_lossy(&plain);
    assert!(
        text.contains("This is a test message from Alice to Bob."),
        "{text}"
    );
    // the outer header survives, the inner Content-Type replaces the p7m one
    assert!(text.contains("Subject: enveloped"), "{text}");
    assert!(text.contains("Content-Type: text/plain"), "{text}");
    assert!(!text.contains("pkcs7-mime"), "{text}");
}

#[test]
fn enveloped_mail_refuses_the_wrong_key() {
    let (cert, key) = key("Alice.p12");
    match smime::decrypt(&data("alice.env.eml"), &cert, &key) {
        Err(DecryptError::NotForThisKey(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn signed_then_encrypted_mail_decrypts_then_verifies() {
    let (cert, key) = key("Bob.p12");
    for name in [
        "alice.sig.SHA256.opaque.env.eml",
        "alice.dsig.SHA256.multipart.env.eml",
    ] {
        let inner = smime::decrypt(&data(name), &cert, &key).unwrap();
        let v = smime::verify(&inner, &trust(), pinned_now());
        assert_valid_from_alice(&v);
    }
}

#[test]
fn corrupt_input_gets_typed_results_not_panics() {
    let (cert, key) = key("Bob.p12");
    let env = data("alice.env.eml");
    // truncated CMS: cut the base64 in half
    let cut = &env[..env.len() / 2];
    assert!(matches!(
        smime::decrypt(cut, &cert, &key),
        Err(DecryptError::Malformed(_))
    ));
    // garbage base64
    let mut garbage = env.clone();
    let at = garbage.len() - 200;
    garbage[at..at + 10].copy_from_slice(b"!!!!!!!!!!");
    assert!(smime::decrypt(&garbage, &cert, &key).is_err());

    let signed = data("alice.dsig.SHA256.multipart.eml");
    for len in (0..signed.len()).step_by(97) {
        let v = smime::verify(&signed[..len], &trust(), pinned_now());
        assert!(!v.is_valid(), "truncated at {len} still valid");
    }
    let opaque = data("alice.sig.SHA512.opaque.eml");
    for len in (0..opaque.len()).step_by(89) {
        let _ = smime::verify(&opaque[..len], &trust(), pinned_now());
        let _ = smime::decrypt(&opaque[..len], &cert, &key);
    }
    // flipping bytes in the signature part
    let mut flipped = signed.clone();
    let at = signed.len() - 400;
    flipped[at] ^= 0x01;
    assert!(!smime::verify(&flipped, &trust(), pinned_now()).is_valid());
}
