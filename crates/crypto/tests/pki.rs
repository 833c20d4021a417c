//! The mPKI's certificates and CRLs, judged by the real `openssl` binary.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use common::{Pki, now, ok, run};
use siegel_crypto::pki::{self, Ca, CaParams, KeyKind, PkiError, Revocation, UserParams};
use siegel_types::Address;

fn check_user_profile(kind: KeyKind) {
    let pki = Pki::new(kind);
    // OpenSSL's `smimeencrypt` purpose demands keyEncipherment, which the
    // BR forbid for EC keys (they use keyAgreement): check it for RSA only.
    let purposes: &[&str] = match kind {
        KeyKind::Rsa3072 => &["smimesign", "smimeencrypt"],
        KeyKind::EcP256 => &["smimesign"],
    };
    for purpose in purposes {
        let out = run(
            "openssl",
            &[
                "verify",
                "-CAfile",
                &pki.p("ca.pem"),
                "-purpose",
                purpose,
                &pki.p("alice.pem"),
            ],
            b"",
            &[],
        );
        ok(&out, &format!("openssl verify -purpose {purpose}"));
        assert!(String::from_utf8_lossy(&out.stdout).contains(": OK"));
    }
    let out = run(
        "openssl",
        &["x509", "-noout", "-text", "-in", &pki.p("alice.pem")],
        b"",
        &[],
    );
    ok(&out, "openssl x509 -text");
    let text = String::from_utf8_lossy(&out.stdout);
    let usage = match kind {
        KeyKind::Rsa3072 => "Digital Signature, Key Encipherment",
        KeyKind::EcP256 => "Digital Signature, Key Agreement",
    };
    for needle in [
        usage,
        "E-mail Protection",
        "email:alice@example.com",
        "CRL Distribution Points",
        common::CRL_URL,
        "X509v3 Authority Key Identifier",
        "X509v3 Subject Key Identifier",
        "Policy: 2.23.140.1.5.4.3",
        "CN = Alice Example",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in\n{text}");
    }
    assert!(!text.contains("CA:TRUE"));
}

#[test]
fn rsa_user_certificates_follow_the_smime_br_profile() {
    check_user_profile(KeyKind::Rsa3072);
}

#[test]
fn ec_user_certificates_follow_the_smime_br_profile() {
    check_user_profile(KeyKind::EcP256);
}

#[test]
fn rsa_3072_is_the_default_and_serials_are_random_128_bit() {
    let pki = Pki::new(KeyKind::default());
    let rsa = pki.alice.key.rsa().unwrap();
    assert_eq!(rsa.size() * 8, 3072);
    let a = pki::serial_bytes(&pki.alice.certificate).unwrap();
    let b = pki::serial_bytes(&pki.bob.certificate).unwrap();
    assert_ne!(a, b);
    assert!(a.len() >= 8 && a.len() <= 16, "serial of {} bytes", a.len());
}

#[test]
fn crl_revokes_and_verifies_with_openssl() {
    let pki = Pki::new(KeyKind::Rsa3072);
    let crl = pki
        .ca
        .issue_crl(
            &[Revocation {
                serial: pki::serial_bytes(&pki.alice.certificate).unwrap(),
                revoked_at: now() - 60,
            }],
            7,
            now() - 60,
            7,
        )
        .unwrap();
    pki.write("crl.pem", &crl.to_pem().unwrap());
    let out = run(
        "openssl",
        &[
            "crl",
            "-in",
            &pki.p("crl.pem"),
            "-CAfile",
            &pki.p("ca.pem"),
            "-noout",
            "-text",
        ],
        b"",
        &[],
    );
    ok(&out, "openssl crl");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("verify OK"), "{all}");
    assert!(
        all.contains("X509v3 CRL Number") && all.contains("7"),
        "{all}"
    );

    let check = |who: &str| {
        run(
            "openssl",
            &[
                "verify",
                "-crl_check",
                "-CRLfile",
                &pki.p("crl.pem"),
                "-CAfile",
                &pki.p("ca.pem"),
                "-purpose",
                "smimesign",
                &pki.p(who),
            ],
            b"",
            &[],
        )
    };
    let revoked = check("alice.pem");
    assert!(!revoked.status.success());
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&revoked.stdout),
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(msg.contains("revoked"), "{msg}");
    ok(&check("bob.pem"), "bob is not revoked");
}

#[test]
fn ca_import_round_trips_and_rejects_mismatched_keys() {
    let pki = Pki::new(KeyKind::EcP256);
    let cert = pki.ca.certificate_pem().unwrap();
    let key = pki.ca.key().private_key_to_pem_pkcs8().unwrap();
    let again = Ca::from_pem(&cert, &key).unwrap();
    assert_eq!(
        again.certificate().to_der().unwrap(),
        pki.ca.certificate().to_der().unwrap()
    );

    let other = pki.alice.key.private_key_to_pem_pkcs8().unwrap();
    assert!(matches!(
        Ca::from_pem(&cert, &other),
        Err(PkiError::KeyMismatch)
    ));
    // a user certificate is no CA
    let user = pki.alice.certificate.to_pem().unwrap();
    assert!(matches!(Ca::from_pem(&user, &other), Err(PkiError::NotACa)));
    assert!(matches!(
        Ca::from_pem(b"garbage", &key),
        Err(PkiError::Parse { .. })
    ));
}

#[test]
fn bad_parameters_are_refused() {
    let pki = Pki::new(KeyKind::EcP256);
    let address = Address::parse("carol@example.com").unwrap();
    let params = UserParams {
        address: &address,
        name: None,
        key: KeyKind::EcP256,
        not_before: now(),
        validity_days: 30,
        crl_url: "file:///etc/passwd",
    };
    assert!(matches!(
        pki.ca.issue_user(&params),
        Err(PkiError::Parameter(_))
    ));
    let utf8 = Address::parse("jörg@example.com").unwrap();
    let params = UserParams {
        address: &utf8,
        crl_url: common::CRL_URL,
        ..params
    };
    assert!(matches!(
        pki.ca.issue_user(&params),
        Err(PkiError::InternationalAddress(_))
    ));
    assert!(matches!(
        Ca::create(&CaParams {
            common_name: " ".into(),
            organization: None,
            key: KeyKind::EcP256,
            not_before: now(),
            validity_days: 1
        }),
        Err(PkiError::Parameter(_))
    ));
}

#[test]
fn mailbox_validated_certificate_without_name_uses_the_address() {
    let pki = Pki::new(KeyKind::EcP256);
    let address = Address::parse("noname@example.com").unwrap();
    let issued = pki
        .ca
        .issue_user(&UserParams {
            address: &address,
            name: None,
            key: KeyKind::EcP256,
            not_before: now(),
            validity_days: 30,
            crl_url: common::CRL_URL,
        })
        .unwrap();
    pki.write("n.pem", &issued.certificate.to_pem().unwrap());
    let out = run(
        "openssl",
        &["x509", "-noout", "-text", "-in", &pki.p("n.pem")],
        b"",
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Policy: 2.23.140.1.5.1.3"), "{text}");
    assert!(text.contains("CN = noname@example.com"), "{text}");
    assert_eq!(
        pki::certificate_addresses(&issued.certificate),
        vec![address]
    );
}
