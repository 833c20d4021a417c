//! Revocation: a CRL of our own mPKI revoking a user makes that user's
//! signature `invalid; reason=revoked`; a missing, stale or foreign CRL
//! leaves it valid with an unknown status (soft fail). "Now" is fixed.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{CRL_URL, ok, run};
use openssl::x509::X509Crl;
use siegel_crypto::pki::{self, Ca, CaParams, Issued, KeyKind, Revocation, UserParams};
use siegel_crypto::revocation::{self, CrlError, RevocationStatus};
use siegel_crypto::smime::{
    self, InvalidReason, SignatureCheck, Signer, TrustStore, ValidSignature, VerifyOptions,
};
use siegel_types::Address;

/// 2026-01-01T00:00:00Z: the CA and the users start here.
const ISSUED: i64 = 1_767_225_600;
/// 2026-05-15: alice is revoked.
const REVOKED: i64 = 1_778_803_200;
/// 2026-06-01: the CRL is issued, valid seven days.
const CRL_ISSUED: i64 = 1_780_272_000;
const DAY: i64 = 86_400;

fn at(unix: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap())
}

struct Fixture {
    ca: Ca,
    alice: Issued,
    bob: Issued,
}

fn ca(name: &str) -> Ca {
    Ca::create(&CaParams {
        common_name: name.into(),
        organization: None,
        key: KeyKind::EcP256,
        not_before: ISSUED,
        validity_days: 3650,
    })
    .unwrap()
}

fn fixture() -> Fixture {
    let ca = ca("Siegel Revocation CA");
    let issue = |a: &str| {
        ca.issue_user(&UserParams {
            address: &Address::parse(a).unwrap(),
            name: None,
            key: KeyKind::EcP256,
            not_before: ISSUED,
            validity_days: 365,
            crl_url: CRL_URL,
        })
        .unwrap()
    };
    let alice = issue("alice@example.com");
    let bob = issue("bob@example.com");
    Fixture { ca, alice, bob }
}

impl Fixture {
    fn signed_by(&self, who: &Issued) -> Vec<u8> {
        let signer = Signer::new(
            who.certificate.clone(),
            who.key.clone(),
            std::slice::from_ref(self.ca.certificate()),
        )
        .unwrap();
        smime::sign(
            b"From: x@example.com\r\nSubject: s\r\n\r\nbody\r\n",
            &signer,
        )
        .unwrap()
    }

    fn trust(&self) -> TrustStore {
        let mut t = TrustStore::new();
        t.add(self.ca.certificate().clone());
        t
    }

    /// Our CRL revoking alice on 2026-05-15, issued 2026-06-01 for 7 days.
    fn crl(&self) -> X509Crl {
        self.ca
            .issue_crl(
                &[Revocation {
                    serial: pki::serial_bytes(&self.alice.certificate).unwrap(),
                    revoked_at: REVOKED,
                }],
                2,
                CRL_ISSUED,
                7,
            )
            .unwrap()
    }
}

fn check(mail: &[u8], trust: &TrustStore, crls: &[X509Crl], when: i64) -> SignatureCheck {
    smime::check_signature(
        mail,
        &VerifyOptions {
            trust,
            at: at(when),
            crls,
        },
    )
}

fn valid(c: SignatureCheck) -> Box<ValidSignature> {
    match c {
        SignatureCheck::Valid(v) => v,
        other => panic!("expected valid, got {other:?}"),
    }
}

#[test]
fn a_user_revoked_on_our_crl_signs_invalid_with_reason_revoked() {
    let f = fixture();
    let crl = f.crl();
    let mail = f.signed_by(&f.alice);
    match check(
        &mail,
        &f.trust(),
        std::slice::from_ref(&crl),
        CRL_ISSUED + DAY,
    ) {
        SignatureCheck::Invalid {
            reason: reason @ InvalidReason::Revoked { .. },
        } => {
            assert_eq!(reason.token(), "revoked");
            let InvalidReason::Revoked {
                serial, revoked_at, ..
            } = &reason
            else {
                unreachable!()
            };
            assert_eq!(*revoked_at, REVOKED);
            let expected = f.alice.certificate.serial_number().to_bn().unwrap();
            assert_eq!(*serial, expected.to_hex_str().unwrap().to_string());
        }
        other => panic!("expected revoked, got {other:?}"),
    }
    // The old API without CRLs cannot know: still valid there.
    assert!(smime::verify(&mail, &f.trust(), at(CRL_ISSUED + DAY)).is_valid());
    // A revocation stays a revocation once the CRL is stale.
    let late = check(
        &mail,
        &f.trust(),
        std::slice::from_ref(&crl),
        CRL_ISSUED + 30 * DAY,
    );
    assert!(
        matches!(
            late,
            SignatureCheck::Invalid {
                reason: InvalidReason::Revoked { .. }
            }
        ),
        "{late:?}"
    );
}

#[test]
fn before_the_revocation_date_the_signature_was_good() {
    let f = fixture();
    let crl = f.crl();
    let mail = f.signed_by(&f.alice);
    let v = valid(check(
        &mail,
        &f.trust(),
        std::slice::from_ref(&crl),
        REVOKED - DAY,
    ));
    assert_eq!(v.revocation, RevocationStatus::NotRevoked);
}

#[test]
fn others_on_a_current_crl_are_not_revoked() {
    let f = fixture();
    let crl = f.crl();
    let mail = f.signed_by(&f.bob);
    let v = valid(check(
        &mail,
        &f.trust(),
        std::slice::from_ref(&crl),
        CRL_ISSUED + DAY,
    ));
    assert_eq!(v.revocation, RevocationStatus::NotRevoked);
    assert_eq!(v.chain.len(), 2, "leaf and CA");
    assert_eq!(
        v.chain[1].to_der().unwrap(),
        f.ca.certificate().to_der().unwrap()
    );
}

#[test]
fn missing_or_stale_crls_leave_the_signature_valid_but_unknown() {
    let f = fixture();
    let mail = f.signed_by(&f.bob);
    // no CRL at all: the status names the distribution point to fetch
    let v = valid(check(&mail, &f.trust(), &[], CRL_ISSUED + DAY));
    match &v.revocation {
        RevocationStatus::Unknown {
            distribution_points,
            reason,
        } => {
            assert_eq!(distribution_points, &vec![CRL_URL.to_owned()]);
            assert!(reason.contains("no CRL"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // the CRL expired a week ago: bob is not on it, but that proves nothing now
    let crl = f.crl();
    let v = valid(check(
        &mail,
        &f.trust(),
        std::slice::from_ref(&crl),
        CRL_ISSUED + 14 * DAY,
    ));
    match &v.revocation {
        RevocationStatus::Unknown { reason, .. } => {
            assert!(reason.contains("no current complete CRL"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_crl_not_signed_by_the_issuer_counts_for_nothing() {
    let f = fixture();
    // Same issuer name, different key: a forged CRL revoking alice.
    let impostor = ca("Siegel Revocation CA");
    let forged = impostor
        .issue_crl(
            &[Revocation {
                serial: pki::serial_bytes(&f.alice.certificate).unwrap(),
                revoked_at: REVOKED,
            }],
            9,
            CRL_ISSUED,
            7,
        )
        .unwrap();
    let mail = f.signed_by(&f.alice);
    let v = valid(check(&mail, &f.trust(), &[forged], CRL_ISSUED + DAY));
    assert!(
        matches!(v.revocation, RevocationStatus::Unknown { .. }),
        "{:?}",
        v.revocation
    );
}

#[test]
fn a_pinned_certificate_is_checked_against_its_issuers_crl() {
    // Harvested correspondent certificates are pinned as trust anchors of
    // their own; their issuer travels in the signature.
    let f = fixture();
    let mut pinned = TrustStore::new();
    pinned.add(f.alice.certificate.clone());
    let mail = f.signed_by(&f.alice);
    let crl = f.crl();
    let c = check(&mail, &pinned, std::slice::from_ref(&crl), CRL_ISSUED + DAY);
    assert!(
        matches!(
            c,
            SignatureCheck::Invalid {
                reason: InvalidReason::Revoked { .. }
            }
        ),
        "{c:?}"
    );
}

#[test]
fn crls_parse_from_der_and_pem_bundles() {
    let f = fixture();
    let a = f.crl();
    let b = f.ca.issue_crl(&[], 3, CRL_ISSUED, 7).unwrap();
    let der = revocation::parse_crls(&a.to_der().unwrap()).unwrap();
    assert_eq!(der.len(), 1);
    let mut pem = a.to_pem().unwrap();
    pem.extend_from_slice(b"some text between\n");
    pem.extend_from_slice(&b.to_pem().unwrap());
    let both = revocation::parse_crls(&pem).unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].to_der().unwrap(), b.to_der().unwrap());
    assert!(matches!(
        revocation::parse_crls(b"<html>not found</html>"),
        Err(CrlError::Parse(_))
    ));
    let mut truncated = a.to_pem().unwrap();
    truncated.truncate(truncated.len() - 30);
    assert!(revocation::parse_crls(&truncated).is_err());
}

#[test]
fn distribution_points_are_listed() {
    let f = fixture();
    assert_eq!(
        revocation::distribution_points(&f.alice.certificate),
        vec![CRL_URL.to_owned()]
    );
    assert!(revocation::distribution_points(f.ca.certificate()).is_empty());
}

/// CRLs made by `openssl ca`, including a partitioned CRL
/// (issuingDistributionPoint) and a revocation: the scope rules of
/// RFC 5280 §5.2.5 decide whether "not listed" means "not revoked".
#[test]
fn crls_made_by_openssl_ca_are_understood_with_their_scope() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = |n: &str| d.join(n).to_string_lossy().into_owned();
    std::fs::write(d.join("index.txt"), "").unwrap();
    std::fs::write(d.join("crlnumber"), "01\n").unwrap();
    let cnf = format!(
        "[ca]\ndefault_ca = c\n[c]\ndatabase = {db}\ncrlnumber = {num}\ndefault_md = sha256\n\
         default_crl_days = 3650\n[idp_a]\nissuingDistributionPoint = critical,@idp_a_sect\n\
         [idp_a_sect]\nfullname = URI:http://crl.example/a.crl\nonlysomereasons = keyCompromise\n\
         [idp_match]\nissuingDistributionPoint = critical,@idp_m_sect\n\
         [idp_m_sect]\nfullname = URI:http://crl.example/a.crl\n\
         [idp_other]\nissuingDistributionPoint = critical,@idp_o_sect\n\
         [idp_o_sect]\nfullname = URI:http://crl.example/other.crl\n\
         [user]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = emailProtection\nsubjectAltName = email:carol@example.org\n\
         crlDistributionPoints = URI:http://crl.example/a.crl\n",
        db = p("index.txt"),
        num = p("crlnumber"),
    );
    std::fs::write(d.join("ca.cnf"), cnf).unwrap();
    let sh = |args: &[&str]| {
        let out = run("openssl", args, b"", &[]);
        ok(&out, &args.join(" "));
    };
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.pem"),
        "-days",
        "3650",
        "-subj",
        "/CN=OpenSSL Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    sh(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &p("carol.key"),
        "-out",
        &p("carol.csr"),
        "-subj",
        "/CN=Carol",
    ]);
    sh(&[
        "x509",
        "-req",
        "-in",
        &p("carol.csr"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-out",
        &p("carol.pem"),
        "-extfile",
        &p("ca.cnf"),
        "-extensions",
        "user",
    ]);
    let gencrl = |name: &str, ext: Option<&str>| {
        let mut args: Vec<String> = ["ca", "-gencrl", "-config"]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        args.extend([p("ca.cnf"), "-keyfile".into(), p("ca.key"), "-cert".into()]);
        args.extend([p("ca.pem"), "-out".into(), p(name)]);
        if let Some(e) = ext {
            args.extend(["-crlexts".to_owned(), e.to_owned()]);
        }
        sh(&args.iter().map(String::as_str).collect::<Vec<_>>());
        revocation::parse_crls(&std::fs::read(d.join(name)).unwrap()).unwrap()
    };
    let full = gencrl("full.crl", None);
    let matching = gencrl("match.crl", Some("idp_match"));
    let other = gencrl("other.crl", Some("idp_other"));
    let some_reasons = gencrl("reasons.crl", Some("idp_a"));

    // carol signs with openssl cms
    std::fs::write(
        d.join("entity"),
        b"Content-Type: text/plain\r\n\r\nfrom carol\r\n",
    )
    .unwrap();
    let out = run(
        "openssl",
        &[
            "cms",
            "-sign",
            "-binary",
            "-in",
            &p("entity"),
            "-signer",
            &p("carol.pem"),
            "-inkey",
            &p("carol.key"),
            "-certfile",
            &p("ca.pem"),
        ],
        b"",
        &[],
    );
    ok(&out, "openssl cms -sign");
    let mut mail = b"From: carol@example.org\r\n".to_vec();
    mail.extend_from_slice(&out.stdout);
    let mut trust = TrustStore::new();
    trust
        .add_pem_bundle(&std::fs::read(d.join("ca.pem")).unwrap())
        .unwrap();
    let now = SystemTime::now();
    let status = |crls: &[X509Crl]| {
        let c = smime::check_signature(
            &mail,
            &VerifyOptions {
                trust: &trust,
                at: now,
                crls,
            },
        );
        match c {
            SignatureCheck::Valid(v) => Ok(v.revocation),
            SignatureCheck::Invalid { reason } => Err(reason),
            SignatureCheck::NotSigned => panic!("not signed"),
        }
    };
    assert_eq!(status(&full), Ok(RevocationStatus::NotRevoked));
    assert_eq!(status(&matching), Ok(RevocationStatus::NotRevoked));
    assert!(matches!(
        status(&other),
        Ok(RevocationStatus::Unknown { .. })
    ));
    assert!(matches!(
        status(&some_reasons),
        Ok(RevocationStatus::Unknown { .. })
    ));

    // now revoke carol and publish a new CRL
    sh(&[
        "ca",
        "-config",
        &p("ca.cnf"),
        "-keyfile",
        &p("ca.key"),
        "-cert",
        &p("ca.pem"),
        "-revoke",
        &p("carol.pem"),
    ]);
    let revoked = gencrl("revoked.crl", Some("idp_other"));
    // listed is listed, whatever the CRL's scope
    assert!(matches!(
        status(&revoked),
        Err(InvalidReason::Revoked { .. })
    ));
}
