//! Interop with the real `openssl cms`, both directions.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::time::SystemTime;

use common::{Pki, b64, ok, run, sample_mail};
use siegel_crypto::pki::KeyKind;
use siegel_crypto::smime::{self, ContentCipher, Verification};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn what_we_sign_openssl_verifies() {
    let pki = Pki::new(KeyKind::Rsa3072);
    let signed = smime::sign(&sample_mail(), &pki.alice_signer()).unwrap();
    pki.write("signed.eml", &signed);
    let out = run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            &pki.p("ca.pem"),
            "-purpose",
            "smimesign",
            "-in",
            &pki.p("signed.eml"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -verify");
    let content = stdout(&out);
    // 8-bit text was made quoted-printable before signing
    assert!(
        content.contains("Content-Transfer-Encoding: quoted-printable"),
        "{content}"
    );
    assert!(content.contains("Gr=C3=BC=C3=9Fe"), "{content}");
    assert!(content.contains("=46rom the team"), "{content}");
    // outer headers stayed outside
    let text = String::from_utf8_lossy(&signed);
    assert!(text.starts_with("From: Alice Example"), "{text}");
    assert!(text.contains("micalg=sha-256"), "{text}");
    assert!(text.bytes().all(|b| b < 0x80), "signed mail is not 7-bit");

    // SHA-256, SMIMECapabilities and the chain are in the signature
    let (_, der) = common::split_signed(&signed);
    pki.write("sig.der", &der);
    let out = run(
        "openssl",
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            &pki.p("sig.der"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -cmsout -print");
    let dump = stdout(&out);
    assert!(dump.contains("sha256"), "{dump}");
    assert!(
        dump.contains("SMIMECapabilities") || dump.contains("S/MIME Capabilities"),
        "{dump}"
    );
    assert!(dump.contains("Siegel Test CA"), "{dump}");
    assert_eq!(
        dump.matches("subject:").count(),
        2,
        "leaf and CA certificates: {dump}"
    );
}

#[test]
fn our_signature_survives_lf_conversion_and_verifies_with_ourselves() {
    let pki = Pki::new(KeyKind::EcP256);
    let signed = smime::sign(&sample_mail(), &pki.alice_signer()).unwrap();
    let lf: Vec<u8> = signed.iter().copied().filter(|b| *b != b'\r').collect();
    match smime::verify(&lf, &pki.trust(), SystemTime::now()) {
        Verification::Valid { signers, .. } => {
            assert_eq!(signers[0].as_str(), "alice@example.com")
        }
        other => panic!("{other:?}"),
    }
    // and tampering is detected
    let tampered = String::from_utf8_lossy(&signed).replace("figures", "fingers");
    assert!(!smime::verify(tampered.as_bytes(), &pki.trust(), SystemTime::now()).is_valid());
}

fn decrypt_with_openssl(pki: &Pki, cipher: ContentCipher) {
    let signed = smime::sign(&sample_mail(), &pki.alice_signer()).unwrap();
    let enc = smime::encrypt(&signed, std::slice::from_ref(&pki.bob.certificate), cipher).unwrap();
    let text = String::from_utf8_lossy(&enc);
    assert!(text.contains("Subject: Quarterly figures"));
    assert!(!text.contains("Grüße"));
    pki.write("enc.eml", &enc);
    let out = run(
        "openssl",
        &[
            "cms",
            "-decrypt",
            "-in",
            &pki.p("enc.eml"),
            "-recip",
            &pki.p("bob.pem"),
            "-inkey",
            &pki.p("bob.key"),
            "-out",
            &pki.p("dec.eml"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -decrypt");
    // the decrypted entity is the multipart/signed: openssl verifies it too
    let out = run(
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            &pki.p("ca.pem"),
            "-in",
            &pki.p("dec.eml"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -verify after decrypt");
    assert!(stdout(&out).contains("Gr=C3=BC=C3=9Fe"));
}

#[test]
fn what_we_encrypt_with_aes_cbc_openssl_decrypts() {
    decrypt_with_openssl(&Pki::new(KeyKind::Rsa3072), ContentCipher::Aes256Cbc);
}

#[test]
fn what_we_encrypt_with_aes_gcm_openssl_decrypts() {
    let pki = Pki::new(KeyKind::Rsa3072);
    decrypt_with_openssl(&pki, ContentCipher::Aes256Gcm);
    let enc = std::fs::read(pki.path("enc.eml")).unwrap();
    assert!(String::from_utf8_lossy(&enc).contains("smime-type=authEnveloped-data"));
}

#[test]
fn what_we_encrypt_to_ec_keys_openssl_decrypts() {
    decrypt_with_openssl(&Pki::new(KeyKind::EcP256), ContentCipher::Aes256Cbc);
}

#[test]
fn what_openssl_signs_detached_we_verify() {
    let pki = Pki::new(KeyKind::Rsa3072);
    pki.write(
        "entity.txt",
        b"Content-Type: text/plain\r\n\r\nSigned by openssl.\r\n",
    );
    let out = run(
        "openssl",
        &[
            "cms",
            "-sign",
            "-in",
            &pki.p("entity.txt"),
            "-signer",
            &pki.p("alice.pem"),
            "-inkey",
            &pki.p("alice.key"),
            "-certfile",
            &pki.p("ca.pem"),
            "-binary",
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -sign");
    let mut mail = b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: t\r\n".to_vec();
    mail.extend_from_slice(&out.stdout);
    match smime::verify(&mail, &pki.trust(), SystemTime::now()) {
        Verification::Valid {
            signers,
            content,
            certificate,
        } => {
            assert_eq!(signers[0].as_str(), "alice@example.com");
            assert!(String::from_utf8_lossy(&content).contains("Signed by openssl."));
            assert_eq!(
                certificate.to_der().unwrap(),
                pki.alice.certificate.to_der().unwrap()
            );
        }
        other => panic!("{other:?}\n{}", String::from_utf8_lossy(&mail)),
    }
}

#[test]
fn what_openssl_signs_opaque_we_verify() {
    let pki = Pki::new(KeyKind::EcP256);
    pki.write(
        "entity.txt",
        b"Content-Type: text/plain\r\n\r\nOpaque from openssl.\r\n",
    );
    let out = run(
        "openssl",
        &[
            "cms",
            "-sign",
            "-nodetach",
            "-in",
            &pki.p("entity.txt"),
            "-signer",
            &pki.p("alice.pem"),
            "-inkey",
            &pki.p("alice.key"),
            "-outform",
            "DER",
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -sign -nodetach");
    let mail = format!(
        "From: alice@example.com\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64(&out.stdout)
    );
    match smime::verify(mail.as_bytes(), &pki.trust(), SystemTime::now()) {
        Verification::Valid { content, .. } => {
            assert!(String::from_utf8_lossy(&content).contains("Opaque from openssl."))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn what_openssl_encrypts_we_decrypt() {
    let pki = Pki::new(KeyKind::Rsa3072);
    pki.write(
        "entity.txt",
        b"Content-Type: text/plain\r\n\r\nSecret from openssl.\r\n",
    );
    for cipher in ["-aes256", "-aes-256-gcm"] {
        let out = run(
            "openssl",
            &[
                "cms",
                "-encrypt",
                cipher,
                "-in",
                &pki.p("entity.txt"),
                &pki.p("bob.pem"),
            ],
            b"",
            &[],
        );
        ok(&out, "openssl cms -encrypt");
        let mut mail = b"From: alice@example.com\r\nSubject: s\r\n".to_vec();
        mail.extend_from_slice(&out.stdout);
        let plain = smime::decrypt(&mail, &pki.bob.certificate, &pki.bob.key).unwrap();
        let text = String::from_utf8_lossy(&plain);
        assert!(text.contains("Secret from openssl."), "{cipher}: {text}");
        assert!(
            text.starts_with("From: alice@example.com\r\nSubject: s\r\n"),
            "{text}"
        );
        // not for alice
        assert!(smime::decrypt(&mail, &pki.alice.certificate, &pki.alice.key).is_err());
    }
}
