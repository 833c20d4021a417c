//! SMIMECapabilities of verified signatures: ours (AES-256-GCM first, read
//! back by `openssl cms -print` too), `openssl cms`'s (CBC only), and the
//! real NSS/Thunderbird test messages (none).

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Pki, ok, run, sample_mail};
use siegel_crypto::pki::KeyKind;
use siegel_crypto::smime::{
    self, ContentCipher, SignatureCheck, TrustStore, ValidSignature, VerifyOptions,
};

fn check(mail: &[u8], trust: &TrustStore, at: SystemTime) -> Box<ValidSignature> {
    match smime::check_signature(
        mail,
        &VerifyOptions {
            trust,
            at,
            crls: &[],
        },
    ) {
        SignatureCheck::Valid(v) => v,
        other => panic!("expected a valid signature, got {other:?}"),
    }
}

fn names(v: &ValidSignature) -> Vec<&'static str> {
    v.capabilities
        .entries()
        .iter()
        .map(|c| c.name().unwrap_or("?"))
        .collect()
}

fn ours(kind: KeyKind, extra: &[&'static str]) {
    let pki = Pki::new(kind);
    let signed = smime::sign(&sample_mail(), &pki.alice_signer()).unwrap();
    let v = check(&signed, &pki.trust(), SystemTime::now());
    let mut expected = vec![
        "aes-256-gcm",
        "aes-128-gcm",
        "aes-256-cbc",
        "aes-192-cbc",
        "aes-128-cbc",
        "sha256",
        "sha384",
        "sha512",
    ];
    expected.extend_from_slice(extra);
    assert_eq!(names(&v), expected);
    assert!(v.capabilities.prefers_gcm());
    assert!(v.capabilities.supports(ContentCipher::Aes256Gcm));
    assert!(v.capabilities.supports(ContentCipher::Aes256Cbc));

    // OpenSSL reads the same attribute, in the same order, and our
    // encryption key preference next to it.
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
    let dump = String::from_utf8_lossy(&out.stdout);
    let caps = &dump[dump
        .find("S/MIME Capabilities")
        .expect("no SMIMECapabilities")..];
    let gcm = caps
        .find(":aes-256-gcm")
        .expect("aes-256-gcm not announced");
    let cbc = caps
        .find(":aes-256-cbc")
        .expect("aes-256-cbc not announced");
    assert!(gcm < cbc, "{caps}");
    assert!(dump.contains("id-smime-aa-encrypKeyPref"), "{dump}");
    assert!(
        !caps.contains("des-ede3-cbc") && !caps.contains("rc2-cbc"),
        "{caps}"
    );
}

#[test]
fn our_rsa_signatures_announce_gcm_first_and_rsa_key_transport() {
    ours(KeyKind::Rsa3072, &["rsaesOaep", "rsaEncryption"]);
}

#[test]
fn our_ec_signatures_announce_gcm_first() {
    ours(KeyKind::EcP256, &[]);
}

#[test]
fn openssl_cms_signatures_announce_cbc_only() {
    let pki = Pki::new(KeyKind::EcP256);
    pki.write(
        "entity.txt",
        b"Content-Type: text/plain\r\n\r\nfrom openssl\r\n",
    );
    let out = run(
        "openssl",
        &[
            "cms",
            "-sign",
            "-binary",
            "-in",
            &pki.p("entity.txt"),
            "-signer",
            &pki.p("alice.pem"),
            "-inkey",
            &pki.p("alice.key"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -sign");
    let mut mail = b"From: alice@example.com\r\n".to_vec();
    mail.extend_from_slice(&out.stdout);
    let v = check(&mail, &pki.trust(), SystemTime::now());
    let n = names(&v);
    assert_eq!(n.first(), Some(&"aes-256-cbc"), "{n:?}");
    assert!(
        n.contains(&"des-ede3-cbc") && n.contains(&"rc2-cbc"),
        "{n:?}"
    );
    assert!(v.capabilities.supports(ContentCipher::Aes256Cbc));
    assert!(!v.capabilities.supports(ContentCipher::Aes256Gcm));
    assert!(!v.capabilities.prefers_gcm());
    assert_eq!(
        v.capabilities.preferred_cipher(),
        Some(ContentCipher::Aes256Cbc)
    );
    // RC2 entries carry their key size as parameters (INTEGER 128, 64, 40)
    let rc2: Vec<_> = v
        .capabilities
        .entries()
        .iter()
        .filter(|c| c.name() == Some("rc2-cbc"))
        .map(|c| c.parameters().map(<[u8]>::to_vec))
        .collect();
    assert_eq!(
        rc2,
        vec![
            Some(vec![0x02, 0x02, 0x00, 0x80]),
            Some(vec![0x02, 0x01, 0x40]),
            Some(vec![0x02, 0x01, 0x28])
        ]
    );
}

#[test]
fn nss_test_messages_announce_nothing() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/testdata/thunderbird/mailnews/test/data/smime");
    let mut trust = TrustStore::new();
    trust
        .add_pem_bundle(&std::fs::read(dir.join("TestCA.pem")).unwrap())
        .unwrap();
    let at = UNIX_EPOCH + Duration::from_secs(1_780_272_000); // 2026-06-01
    for name in [
        "alice.dsig.SHA256.multipart.eml",
        "alice.sig.SHA512.opaque.eml",
    ] {
        let v = check(&std::fs::read(dir.join(name)).unwrap(), &trust, at);
        assert!(v.capabilities.is_empty(), "{name}: {:?}", v.capabilities);
        assert_eq!(v.capabilities.preferred_cipher(), None);
        assert!(!v.capabilities.supports(ContentCipher::Aes256Gcm));
    }
}
