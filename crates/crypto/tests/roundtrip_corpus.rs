//! Every real and malformed mail in the shared test data (mail-parser's
//! legacy/malformed/rfc/thirdparty sets, Delta Chat's client messages) goes
//! through sign → verify and sign → encrypt → decrypt → verify: whatever a
//! client hands us, the signature we make must hold, and must hold for
//! `openssl cms -verify` as well (checked on a sample).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use common::{Pki, ok, run};
use siegel_crypto::pki::KeyKind;
use siegel_crypto::smime::{self, ContentCipher, Verification};

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata");
    let mut files = Vec::new();
    for dir in [
        "mail-parser/resources/eml/legacy",
        "mail-parser/resources/eml/malformed",
        "mail-parser/resources/eml/rfc",
        "mail-parser/resources/eml/thirdparty",
        "deltachat/test-data/message",
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            panic!("test data {dir} missing under {}", root.display());
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_file() {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() > 100, "only {} corpus files", files.len());
    files
}

#[test]
fn every_corpus_mail_signs_verifies_and_round_trips_encryption() {
    let pki = Pki::new(KeyKind::EcP256);
    let signer = pki.alice_signer();
    let trust = pki.trust();
    let now = SystemTime::now();
    let mut failures = Vec::new();
    for (i, path) in corpus().iter().enumerate() {
        let mail = std::fs::read(path).unwrap();
        let signed = smime::sign(&mail, &signer).unwrap();
        if !smime::verify(&signed, &trust, now).is_valid() {
            failures.push(format!("{}: own signature invalid", path.display()));
            continue;
        }
        let enc = smime::encrypt(
            &signed,
            std::slice::from_ref(&pki.bob.certificate),
            ContentCipher::Aes256Cbc,
        )
        .unwrap();
        let dec = smime::decrypt(&enc, &pki.bob.certificate, &pki.bob.key).unwrap();
        match smime::verify(&dec, &trust, now) {
            Verification::Valid { .. } => {}
            other => failures.push(format!("{}: after decrypt {other:?}", path.display())),
        }
        // every 10th mail: the real openssl must agree
        if i % 10 == 0 {
            pki.write("s.eml", &signed);
            let out = run(
                "openssl",
                &[
                    "cms",
                    "-verify",
                    "-CAfile",
                    &pki.p("ca.pem"),
                    "-in",
                    &pki.p("s.eml"),
                    "-out",
                    "/dev/null",
                ],
                b"",
                &[],
            );
            if !out.status.success() {
                failures.push(format!(
                    "{}: openssl cms -verify: {}",
                    path.display(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn signing_an_eight_bit_multipart_makes_every_part_seven_bit() {
    let pki = Pki::new(KeyKind::EcP256);
    let mail = "From: a@example.com\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"XX\"\n\n--XX\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nÜber alles\n--XX\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: binary\n\n\u{0}\u{1}binär\n--XX--\n";
    let signed = smime::sign(mail.as_bytes(), &pki.alice_signer()).unwrap();
    assert!(
        signed.iter().all(|b| *b < 0x80 && *b != 0),
        "{}",
        String::from_utf8_lossy(&signed)
    );
    pki.write("s.eml", &signed);
    let out = run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            &pki.p("ca.pem"),
            "-in",
            &pki.p("s.eml"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("=C3=9Cber alles"), "{text}");
    assert!(text.contains("Content-Transfer-Encoding: base64"), "{text}");
}
