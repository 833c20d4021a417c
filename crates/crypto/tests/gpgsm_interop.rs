//! Interop with the real `gpgsm` (GnuPG 2.2), both directions. gpgsm cannot
//! decrypt AES-GCM, which is why CBC is our default.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::time::SystemTime;

use common::{GpgHome, Pki, b64, have, ok, sample_mail};
use siegel_crypto::pki::KeyKind;
use siegel_crypto::smime::{self, ContentCipher, SignatureCheck, Verification, VerifyOptions};

#[test]
fn what_we_sign_gpgsm_verifies() {
    if !have("gpgsm") {
        return;
    }
    let pki = Pki::new(KeyKind::Rsa3072);
    let home = GpgHome::new(pki.ca.certificate());
    let signed = smime::sign(&sample_mail(), &pki.alice_signer()).unwrap();
    let (content, der) = common::split_signed(&signed);
    let sig = pki.write("sig.p7s", &der);
    let data = pki.write("content", &content);
    let out = home.gpgsm(
        &["--verify", sig.to_str().unwrap(), data.to_str().unwrap()],
        b"",
    );
    ok(&out, "gpgsm --verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Good signature"), "{stderr}");

    // and a changed byte makes gpgsm refuse: the test can fail
    let mut bad = content.clone();
    let last = bad.len() - 3;
    bad[last] ^= 0x20;
    let data = pki.write("content.bad", &bad);
    let out = home.gpgsm(
        &["--verify", sig.to_str().unwrap(), data.to_str().unwrap()],
        b"",
    );
    assert!(!out.status.success());
}

#[test]
fn what_we_encrypt_gpgsm_decrypts() {
    if !have("gpgsm") {
        return;
    }
    let pki = Pki::new(KeyKind::Rsa3072);
    let home = GpgHome::new(pki.ca.certificate());
    home.import_key(&pki.bob.certificate, &pki.bob.key, pki.ca.certificate());
    let signed = smime::sign(&sample_mail(), &pki.alice_signer()).unwrap();
    let enc = smime::encrypt(
        &signed,
        std::slice::from_ref(&pki.bob.certificate),
        ContentCipher::default(),
    )
    .unwrap();
    // gpgsm reads raw CMS: take the base64 body of our application/pkcs7-mime
    let text = String::from_utf8_lossy(&enc).into_owned();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let clean: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(clean)
        .unwrap();
    let path = pki.write("enc.p7m", &der);
    let out = home.gpgsm(
        &["--passphrase-fd", "0", "--decrypt", path.to_str().unwrap()],
        b"test\n",
    );
    ok(&out, "gpgsm --decrypt");
    let plain = String::from_utf8_lossy(&out.stdout);
    assert!(plain.contains("multipart/signed"), "{plain}");
    assert!(plain.contains("Gr=C3=BC=C3=9Fe"), "{plain}");
    // what gpgsm decrypted is our signed entity: we still verify it
    let mut inner = b"From: alice@example.com\r\n".to_vec();
    inner.extend_from_slice(&out.stdout);
    assert!(smime::verify(&inner, &pki.trust(), SystemTime::now()).is_valid());
}

#[test]
fn what_gpgsm_signs_we_verify() {
    if !have("gpgsm") {
        return;
    }
    let pki = Pki::new(KeyKind::Rsa3072);
    let home = GpgHome::new(pki.ca.certificate());
    home.import_key(&pki.alice.certificate, &pki.alice.key, pki.ca.certificate());
    let entity = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nSigned by gpgsm.\r\n";
    let data = pki.write("entity", entity);

    // detached, wrapped into multipart/signed by hand
    let out = home.gpgsm(
        &[
            "--passphrase-fd",
            "0",
            "--local-user",
            "alice@example.com",
            "--detach-sign",
            data.to_str().unwrap(),
        ],
        b"test\n",
    );
    ok(&out, "gpgsm --detach-sign");
    let mail = format!(
        "From: alice@example.com\r\nMIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"b1\"\r\n\r\n--b1\r\n{}\r\n--b1\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--b1--\r\n",
        String::from_utf8_lossy(entity),
        b64(&out.stdout)
    );
    let trust = pki.trust();
    let options = VerifyOptions {
        trust: &trust,
        at: SystemTime::now(),
        crls: &[],
    };
    match smime::check_signature(mail.as_bytes(), &options) {
        SignatureCheck::Valid(v) => {
            assert_eq!(v.signers[0].as_str(), "alice@example.com");
            // gpgsm 2.2 announces AES-128-CBC and 3DES (it decrypts
            // AES-256-CBC too, but not GCM): no reason to use GCM for it
            let names: Vec<_> = v
                .capabilities
                .entries()
                .iter()
                .map(|c| c.name().unwrap_or("?"))
                .collect();
            assert_eq!(names, ["aes-128-cbc", "des-ede3-cbc"]);
            assert!(!v.capabilities.supports(ContentCipher::Aes256Gcm));
        }
        other => panic!("detached: {other:?}"),
    }

    // opaque
    let out = home.gpgsm(
        &[
            "--passphrase-fd",
            "0",
            "--local-user",
            "alice@example.com",
            "--sign",
            data.to_str().unwrap(),
        ],
        b"test\n",
    );
    ok(&out, "gpgsm --sign");
    let mail = format!(
        "From: alice@example.com\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64(&out.stdout)
    );
    match smime::verify(mail.as_bytes(), &pki.trust(), SystemTime::now()) {
        Verification::Valid { content, .. } => {
            assert!(String::from_utf8_lossy(&content).contains("Signed by gpgsm."))
        }
        other => panic!("opaque: {other:?}"),
    }
}

#[test]
fn what_gpgsm_encrypts_we_decrypt() {
    if !have("gpgsm") {
        return;
    }
    let pki = Pki::new(KeyKind::Rsa3072);
    let home = GpgHome::new(pki.ca.certificate());
    let out = home.gpgsm(&["--import"], &pki.bob.certificate.to_pem().unwrap());
    ok(&out, "gpgsm --import bob");
    let data = pki.write(
        "entity",
        b"Content-Type: text/plain\r\n\r\nSecret from gpgsm.\r\n",
    );
    let out = home.gpgsm(
        &[
            "--recipient",
            "bob@example.org",
            "--encrypt",
            data.to_str().unwrap(),
        ],
        b"",
    );
    ok(&out, "gpgsm --encrypt");
    let mail = format!(
        "From: alice@example.com\r\nTo: bob@example.org\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
        b64(&out.stdout)
    );
    let plain = smime::decrypt(mail.as_bytes(), &pki.bob.certificate, &pki.bob.key).unwrap();
    assert!(String::from_utf8_lossy(&plain).contains("Secret from gpgsm."));
}

/// gpgsm 2.2 derives a wrong 3DES key for some PKCS#12 salts (its KDF
/// drops leading zero bytes of the updated I blocks). A file our check
/// flags really fails in gpgsm with the right password, and what
/// `export_p12` hands out imports: the check is the cause, not a guess.
#[test]
fn p12_salts_gpgsm_cannot_derive_are_detected_and_avoided() {
    if !have("gpgsm") {
        return;
    }
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkcs12::Pkcs12;
    use siegel_crypto::pki;

    // gpgsm 2.2 imports RSA keys only (it crashes on an EC key bag)
    let pki = Pki::new(KeyKind::Rsa3072);
    let mut builder = Pkcs12::builder();
    builder
        .name("key")
        .pkey(&pki.alice.key)
        .cert(&pki.alice.certificate)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    // about 1 file in 64 is affected: 2,000 tries find one with certainty
    let bad = (0..2000)
        .map(|_| builder.build2("test").unwrap().to_der().unwrap())
        .find(|der| !pki::p12_gpgsm_compatible(der, "test"))
        .expect("no gpgsm-incompatible salt in 2,000 files");
    let import = |der: &[u8], name: &str| {
        let home = GpgHome::new(pki.ca.certificate());
        let path = home.dir.path().join(name);
        std::fs::write(&path, der).unwrap();
        home.gpgsm(
            &["--passphrase-fd", "0", "--import", path.to_str().unwrap()],
            b"test\n",
        )
    };
    let out = import(&bad, "bad.p12");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("secret keys imported: 1"),
        "gpgsm imported a file we flagged: {stderr}"
    );
    // ... while OpenSSL reads the same file with the same password
    assert!(Pkcs12::from_der(&bad).unwrap().parse2("test").is_ok());

    for _ in 0..3 {
        let good = pki::export_p12(
            &pki.alice.certificate,
            &pki.alice.key,
            std::slice::from_ref(pki.ca.certificate()),
            "key",
            "test",
        )
        .unwrap();
        assert!(pki::p12_gpgsm_compatible(&good, "test"));
        let out = import(&good, "good.p12");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("secret keys imported: 1"), "{stderr}");
    }
}
