//! S/MIME in the mail path on a temporary spool and SQLite store: signing
//! for licensed users (with auto-enrolment and renewal), encryption of
//! S/MIME copies, inbound decrypt → verify → harvest → stamp, the CRL.

#![allow(clippy::unwrap_used)]

use siegel_crypto::pki::{CaParams, KeyKind, UserParams};
use siegel_crypto::smime::{self as cms, Verification};
use siegel_store::{LicenceState, MasterKey, NewUser, SourceKind, Store};

use super::*;
use crate::onboarding::Onboarding;
use crate::policy::{KeyDirectory, StoreDirectory, TrackingSink};
use crate::smime::{Mpki, MpkiSettings};

fn now() -> u64 {
    now_unix()
}

fn envelope(direction: Direction, from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        message_id: Some("<m1@partner.example>".into()),
        ..crate::policy_tests::envelope(direction, from, rcpts)
    }
}

/// A correspondent's CA and bob@partner.example's certificate and key.
struct Partner {
    ca: siegel_crypto::pki::Ca,
    bob: siegel_crypto::pki::Issued,
}

fn partner(validity_days: u32) -> Partner {
    let ca = siegel_crypto::pki::Ca::create(&CaParams {
        common_name: "Partner CA".into(),
        organization: None,
        key: KeyKind::EcP256,
        not_before: now() as i64 - 86_400,
        validity_days: 3650,
    })
    .unwrap();
    let bob = ca
        .issue_user(&UserParams {
            address: &Address::parse("bob@partner.example").unwrap(),
            name: Some("Bob"),
            key: KeyKind::EcP256,
            not_before: now() as i64 - 3600,
            validity_days,
            crl_url: "http://partner.example/crl",
        })
        .unwrap();
    Partner { ca, bob }
}

struct World {
    _dir: tempfile::TempDir,
    spool: Spool,
    store: Store,
    mpki: Arc<Mpki>,
    pipeline: Pipeline,
    partner: Partner,
    ready: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<QueueId>>,
}

async fn world(auto_enroll: bool) -> World {
    world_of(auto_enroll, None, partner(365)).await
}

async fn world_of(
    auto_enroll: bool,
    fetcher: Option<siegel_fetch::Fetcher>,
    partner: Partner,
) -> World {
    world_onboarding(auto_enroll, fetcher, partner, Onboarding::default()).await
}

async fn world_onboarding(
    auto_enroll: bool,
    fetcher: Option<siegel_fetch::Fetcher>,
    partner: Partner,
    onboarding: Onboarding,
) -> World {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let store = Store::open(
        &format!("sqlite://{}", dir.path().join("t.db").display()),
        dir.path(),
        MasterKey::generate().unwrap(),
    )
    .await
    .unwrap();
    let mut trust = cms::TrustStore::new();
    trust.add(partner.ca.certificate().clone());
    let mpki = Arc::new(
        Mpki::load_or_create(
            store.clone(),
            MpkiSettings {
                auto_enroll,
                key: KeyKind::EcP256,
                trust,
                internal_domains: vec!["example.com".into()],
                onboarding,
                ..MpkiSettings::default()
            },
        )
        .await
        .unwrap(),
    );
    let mpki = match fetcher {
        Some(f) => Arc::new(Arc::into_inner(mpki).unwrap().with_crl_fetcher(f)),
        None => mpki,
    };
    let mut registry = siegel_policy::Registry::foundation();
    smime::register(&mut registry, &mpki);
    let directory = StoreDirectory(store.clone());
    let env = Arc::new(PolicyEnv {
        settings: PolicySettings {
            internal_domains: vec!["example.com".into()],
            ..PolicySettings::default()
        },
        registry,
        directory: Some(Arc::new(directory.clone()) as Arc<dyn KeyDirectory>),
        tracker: Some(Arc::new(directory) as Arc<dyn TrackingSink>),
        smime: Some(Arc::clone(&mpki)),
        pgp: None,
        filter: None,
    });
    let pipeline = Pipeline::standard_with("mx.example.com".into(), env);
    let ready = tokio::sync::Mutex::new(spool.take_ready().unwrap());
    World {
        ready,
        _dir: dir,
        spool,
        store,
        mpki,
        pipeline,
        partner,
    }
}

async fn add_user(store: &Store, addr: &str, state: LicenceState) {
    store
        .users()
        .insert(&NewUser {
            address: Address::parse(addr).unwrap(),
            display_name: None,
            attributes: Default::default(),
            licence_state: state,
        })
        .await
        .unwrap();
}

async fn content(spool: &Spool, id: &QueueId) -> Vec<u8> {
    let (f, len) = spool.open_content(id).await.unwrap();
    let mut out = Vec::new();
    f.take(len).read_to_end(&mut out).await.unwrap();
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

const MAIL: &str = "From: Alice <alice@example.com>\r\nTo: carol@partner.test\r\nSubject: hi\r\nMessage-ID: <a1@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e from Alice.\r\n";

/// Runs one mail through the pipeline and returns its (only) ready copy.
async fn run(w: &World, env: Envelope, mail: &[u8]) -> Vec<u8> {
    let id = w.spool.inject(env, mail).await.unwrap();
    w.pipeline.process(&w.spool, &id, now()).await.unwrap();
    let copy = w.ready.lock().await.recv().await.unwrap();
    content(&w.spool, &copy).await
}

fn our_trust(w: &World) -> cms::TrustStore {
    let mut t = cms::TrustStore::new();
    t.add(w.mpki.ca().certificate().clone());
    t
}

#[tokio::test]
async fn a_licensed_users_mail_is_signed_and_auto_enrolled_others_pass_unchanged() {
    let w = world(true).await;
    add_user(&w.store, "alice@example.com", LicenceState::Licensed).await;
    let alice = Address::parse("alice@example.com").unwrap();
    assert!(
        w.store
            .certificates()
            .for_address(&alice)
            .await
            .unwrap()
            .is_empty()
    );
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, MAIL.as_bytes()).await;
    assert!(contains(&out, "multipart/signed"));
    let Verification::Valid { signers, .. } = cms::verify(&out, &our_trust(&w), SystemTime::now())
    else {
        panic!("not valid: {}", String::from_utf8_lossy(&out))
    };
    assert_eq!(signers, vec![alice.clone()]);
    // Auto-enrolled: the certificate and its key are stored.
    let certs = w.store.certificates().for_address(&alice).await.unwrap();
    assert_eq!(certs.len(), 1);
    assert!(certs[0].has_private_key);
    assert_eq!(certs[0].source_kind, SourceKind::Issued);

    // Unknown and unlicensed senders of our domain pass unchanged.
    add_user(&w.store, "printer@example.com", LicenceState::Excluded).await;
    for from in ["nobody@example.com", "printer@example.com"] {
        let mail = MAIL.replace("alice@", &from[..from.find('@').unwrap() + 1]);
        let env = envelope(Direction::Outbound, from, &["carol@partner.test"]);
        let out = run(&w, env, mail.as_bytes()).await;
        assert_eq!(out, mail.as_bytes(), "{from}");
    }
}

/// `[users] onboard` stands in for the directory group: an unknown sender
/// it names becomes a user on the first mail, takes a seat and is signed
/// (certificate auto-enrolled); once the seats are taken a new sender is
/// recorded unlicensed and passes unsigned; `exclude` wins; a sender the
/// list does not name stays unknown.
#[tokio::test]
async fn onboarding_makes_named_senders_users_within_the_licences_seats() {
    use siegel_store::NewLicence;
    use siegel_types::AddressPattern;
    let w = world_onboarding(
        true,
        None,
        partner(365),
        Onboarding {
            onboard: vec![AddressPattern::parse("example.com").unwrap()],
            exclude: vec![AddressPattern::parse("noreply@*").unwrap()],
        },
    )
    .await;
    w.store
        .licences()
        .insert(&NewLicence {
            licence_id: "L-1".into(),
            holder: "Example AG".into(),
            seats: 1,
            valid_from: 0,
            valid_until: i64::MAX,
            document: "signed licence".into(),
        })
        .await
        .unwrap();
    let send = |from: &'static str| {
        let mail = MAIL.replace("alice@", &from[..=from.find('@').unwrap()]);
        (
            envelope(Direction::Outbound, from, &["carol@partner.test"]),
            mail,
        )
    };
    let state = |a: &'static str| {
        let store = w.store.clone();
        async move {
            store
                .users()
                .get(&Address::parse(a).unwrap())
                .await
                .unwrap()
                .map(|u| u.licence_state)
        }
    };

    let (env, mail) = send("carol@example.com");
    let out = run(&w, env, mail.as_bytes()).await;
    let Verification::Valid { signers, .. } = cms::verify(&out, &our_trust(&w), SystemTime::now())
    else {
        panic!("not signed: {}", String::from_utf8_lossy(&out))
    };
    assert_eq!(signers, vec![Address::parse("carol@example.com").unwrap()]);
    assert_eq!(
        state("carol@example.com").await,
        Some(LicenceState::Licensed)
    );

    // The one seat is taken: dave is recorded, not licensed, not signed.
    let (env, mail) = send("dave@example.com");
    assert_eq!(run(&w, env, mail.as_bytes()).await, mail.as_bytes());
    assert_eq!(
        state("dave@example.com").await,
        Some(LicenceState::Unlicensed)
    );
    assert!(
        w.store
            .certificates()
            .for_address(&Address::parse("dave@example.com").unwrap())
            .await
            .unwrap()
            .is_empty()
    );

    let (env, mail) = send("noreply@example.com");
    assert_eq!(run(&w, env, mail.as_bytes()).await, mail.as_bytes());
    assert_eq!(
        state("noreply@example.com").await,
        Some(LicenceState::Excluded)
    );

    // carol's second mail is signed by the same certificate: no second user.
    let (env, mail) = send("carol@example.com");
    let out = run(&w, env, mail.as_bytes()).await;
    assert!(cms::verify(&out, &our_trust(&w), SystemTime::now()).is_valid());
    assert_eq!(
        w.store.users().count(LicenceState::Licensed).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn without_auto_enrolment_a_user_without_certificate_is_not_signed() {
    let w = world(false).await;
    add_user(&w.store, "alice@example.com", LicenceState::Licensed).await;
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, MAIL.as_bytes()).await;
    assert_eq!(out, MAIL.as_bytes());
    // Issued by the administrator: signed from now on.
    let alice = Address::parse("alice@example.com").unwrap();
    w.mpki
        .issue_user(&alice, Some("Alice"), now() as i64)
        .await
        .unwrap();
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, MAIL.as_bytes()).await;
    assert!(cms::verify(&out, &our_trust(&w), SystemTime::now()).is_valid());
}

#[tokio::test]
async fn a_certificate_near_expiry_is_renewed_and_the_old_one_superseded() {
    let w = world(true).await;
    add_user(&w.store, "alice@example.com", LicenceState::Licensed).await;
    let alice = Address::parse("alice@example.com").unwrap();
    // 365-day certificate, renewal 30 days before: issued 350 days ago.
    let old = w
        .mpki
        .issue_user(&alice, None, now() as i64 - 350 * 86_400)
        .await
        .unwrap();
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, MAIL.as_bytes()).await;
    let Verification::Valid { certificate, .. } =
        cms::verify(&out, &our_trust(&w), SystemTime::now())
    else {
        panic!()
    };
    let used = smime::fingerprint(&certificate).unwrap();
    assert_ne!(used, old.fingerprint, "signed with the renewed certificate");
    let stored = w
        .store
        .certificates()
        .by_fingerprint(&old.fingerprint)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.superseded_by.as_deref(), Some(used.as_str()));
}

#[tokio::test]
async fn a_copy_for_a_recipient_with_a_certificate_is_signed_then_encrypted() {
    let w = world(true).await;
    add_user(&w.store, "alice@example.com", LicenceState::Licensed).await;
    w.mpki
        .import_certificates(&w.partner.bob.certificate.to_pem().unwrap())
        .await
        .unwrap();
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["bob@partner.example"],
    );
    let mail = MAIL.replace("carol@partner.test", "bob@partner.example");
    let out = run(&w, env, mail.as_bytes()).await;
    assert!(contains(&out, "application/pkcs7-mime"));
    assert!(!contains(&out, "from Alice"));
    assert!(contains(&out, "Subject: hi"), "outer headers stay");
    let plain = cms::decrypt(&out, &w.partner.bob.certificate, &w.partner.bob.key).unwrap();
    assert!(cms::verify(&plain, &our_trust(&w), SystemTime::now()).is_valid());
}

fn bob_signed(w: &World, body: &str) -> Vec<u8> {
    let signer = cms::Signer::new(
        w.partner.bob.certificate.clone(),
        w.partner.bob.key.clone(),
        &[],
    )
    .unwrap();
    let mail = format!(
        "From: Bob <bob@partner.example>\r\nTo: alice@example.com\r\nSubject: s\r\nContent-Type: text/plain\r\n\r\n{body}\r\n"
    );
    cms::sign(mail.as_bytes(), &signer).unwrap()
}

#[tokio::test]
async fn inbound_valid_signature_is_stamped_and_harvested_tampering_is_not() {
    let w = world(true).await;
    let bob = Address::parse("bob@partner.example").unwrap();
    let signed = bob_signed(&w, "Hello Alice");
    // A spoofed stamp from outside is removed before ours is added.
    let mut spoofed = b"X-Siegel-Signature: valid; signer=ceo@example.com\r\n".to_vec();
    spoofed.extend_from_slice(&signed);
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &spoofed).await;
    assert!(out.starts_with(b"X-Siegel-Signature: valid; signer=bob@partner.example\r\n"));
    assert!(!contains(&out, "ceo@example.com"));
    let certs = w.store.certificates().for_address(&bob).await.unwrap();
    assert_eq!(certs.len(), 1);
    assert_eq!(certs[0].source_kind, SourceKind::Harvested);
    assert_eq!(
        certs[0].source_message_id.as_deref(),
        Some("<m1@partner.example>")
    );

    let tampered = String::from_utf8(signed)
        .unwrap()
        .replace("Hello Alice", "Hello Mallory")
        .into_bytes();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &tampered).await;
    assert!(
        out.starts_with(b"X-Siegel-Signature: invalid; reason=bad-signature\r\n"),
        "{}",
        String::from_utf8_lossy(&out[..80])
    );
    assert!(contains(&out, "Hello Mallory"), "delivered all the same");

    // Signed by bob but sent as someone else: not harvested for them.
    let forged = String::from_utf8(bob_signed(&w, "x"))
        .unwrap()
        .replace(
            "From: Bob <bob@partner.example>",
            "From: eve@partner.example",
        )
        .into_bytes();
    let env = envelope(
        Direction::Inbound,
        "eve@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &forged).await;
    assert!(out.starts_with(b"X-Siegel-Signature: invalid; reason=from-mismatch\r\n"));
    let eve = Address::parse("eve@partner.example").unwrap();
    assert!(
        w.store
            .certificates()
            .for_address(&eve)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_newer_harvested_certificate_supersedes_the_older() {
    let w = world(true).await;
    let bob = Address::parse("bob@partner.example").unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    run(&w, env, &bob_signed(&w, "one")).await;
    let newer = w
        .partner
        .ca
        .issue_user(&UserParams {
            address: &bob,
            name: None,
            key: KeyKind::EcP256,
            not_before: now() as i64 - 60,
            validity_days: 730,
            crl_url: "http://partner.example/crl",
        })
        .unwrap();
    let signer = cms::Signer::new(newer.certificate.clone(), newer.key.clone(), &[]).unwrap();
    let mail = cms::sign(
        b"From: bob@partner.example\r\nContent-Type: text/plain\r\n\r\ntwo\r\n",
        &signer,
    )
    .unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &mail).await;
    assert!(out.starts_with(b"X-Siegel-Signature: valid"));
    let certs = w.store.certificates().for_address(&bob).await.unwrap();
    assert_eq!(certs.len(), 2);
    let new_fp = smime::fingerprint(&newer.certificate).unwrap();
    let old = certs.iter().find(|c| c.fingerprint != new_fp).unwrap();
    assert_eq!(old.superseded_by.as_deref(), Some(new_fp.as_str()));
}

#[tokio::test]
async fn inbound_encrypted_mail_is_opened_broken_mail_is_delivered_with_a_reason() {
    let w = world(true).await;
    let alice = Address::parse("alice@example.com").unwrap();
    w.mpki.issue_user(&alice, None, now() as i64).await.unwrap();
    let cert = w.mpki.certificate_of(&alice).await.unwrap();
    let mail = b"From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: e\r\nContent-Type: text/plain\r\n\r\nSecret.\r\n";
    let enc = cms::encrypt(mail, &[cert], cms::ContentCipher::Aes256Cbc).unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &enc).await;
    assert!(out.starts_with(b"X-Siegel-Encryption: smime\r\n"));
    assert!(contains(&out, "Secret."));
    assert!(contains(&out, "Subject: e"));

    // Our domain certificate opens mail encrypted to the domain.
    let domain = w.mpki.own_domain_certificate("example.com").await.unwrap();
    let enc = cms::encrypt(mail, &[domain], cms::ContentCipher::Aes256Gcm).unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["carl@example.com"],
    );
    let out = run(&w, env, &enc).await;
    assert!(out.starts_with(b"X-Siegel-Encryption: domain-smime\r\n"));
    assert!(contains(&out, "Secret."));

    // Encrypted to someone else's key, and corrupt CMS: delivered, stamped.
    let other = w.partner.bob.certificate.clone();
    let enc = cms::encrypt(mail, &[other], cms::ContentCipher::Aes256Cbc).unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &enc).await;
    assert!(out.starts_with(b"X-Siegel-Encryption: failed; reason=no-key\r\n"));
    let corrupt = b"From: bob@partner.example\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\nContent-Transfer-Encoding: base64\r\n\r\nMIIBBBBBBBB\r\n";
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, corrupt).await;
    assert!(out.starts_with(b"X-Siegel-Encryption: failed; reason=malformed\r\n"));
    assert!(out.ends_with(b"MIIBBBBBBBB\r\n"));
}

#[tokio::test]
async fn revoked_certificates_are_on_the_crl_and_imported_ones_listed() {
    let w = world(true).await;
    let alice = Address::parse("alice@example.com").unwrap();
    let r = w.mpki.issue_user(&alice, None, now() as i64).await.unwrap();
    w.mpki
        .import_certificates(&w.partner.bob.certificate.to_der().unwrap())
        .await
        .unwrap();
    let listed: Vec<String> = w
        .mpki
        .list()
        .await
        .unwrap()
        .iter()
        .map(|k| k.address.to_string())
        .collect();
    assert_eq!(listed, vec!["alice@example.com", "bob@partner.example"]);
    let empty =
        openssl::x509::X509Crl::from_der(&w.mpki.crl_der(now() as i64).await.unwrap()).unwrap();
    assert!(empty.get_revoked().is_none_or(|s| s.is_empty()));
    w.mpki.revoke(&r.fingerprint, now() as i64).await.unwrap();
    let crl =
        openssl::x509::X509Crl::from_der(&w.mpki.crl_der(now() as i64).await.unwrap()).unwrap();
    assert_eq!(crl.get_revoked().map(|s| s.len()), Some(1));
    assert!(
        crl.verify(&w.mpki.ca().certificate().public_key().unwrap())
            .unwrap()
    );
    assert!(
        w.store
            .certificates()
            .by_fingerprint(&r.fingerprint)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
}

#[tokio::test]
async fn the_ca_survives_a_restart_and_can_be_replaced_by_an_import() {
    let w = world(true).await;
    let again = Mpki::load_or_create(w.store.clone(), MpkiSettings::default())
        .await
        .unwrap();
    assert_eq!(
        again.ca().certificate().to_der().unwrap(),
        w.mpki.ca().certificate().to_der().unwrap()
    );
    let key = w.partner.ca.key().private_key_to_pem_pkcs8().unwrap();
    Mpki::import_ca(&w.store, &w.partner.ca.certificate_pem().unwrap(), &key)
        .await
        .unwrap();
    let after = Mpki::load_or_create(w.store.clone(), MpkiSettings::default())
        .await
        .unwrap();
    assert_eq!(
        after.ca().certificate().to_der().unwrap(),
        w.partner.ca.certificate().to_der().unwrap()
    );
    assert!(Mpki::import_ca(&w.store, b"junk", b"junk").await.is_err());
}

#[tokio::test]
async fn an_opaque_signed_mail_is_verified_and_delivered_readable() {
    use base64::Engine as _;
    use openssl::cms::{CMSOptions, CmsContentInfo};
    let w = world(true).await;
    let entity = b"Content-Type: text/plain\r\n\r\nOpaque hello.\r\n";
    let cms = CmsContentInfo::sign(
        Some(&w.partner.bob.certificate),
        Some(&w.partner.bob.key),
        None,
        Some(entity),
        CMSOptions::BINARY,
    )
    .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(cms.to_der().unwrap());
    let mut mail = b"From: bob@partner.example\r\nSubject: o\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
    for chunk in b64.as_bytes().chunks(76) {
        mail.extend_from_slice(chunk);
        mail.extend_from_slice(b"\r\n");
    }
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &mail).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("X-Siegel-Signature: valid; signer=bob@partner.example\r\nFrom: bob@partner.example\r\nSubject: o\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nOpaque hello.\r\n"),
        "{text}"
    );
}

#[tokio::test]
async fn a_revoked_recipient_certificate_is_never_used() {
    use siegel_policy::{CopyInfo, MethodKind};
    let w = world(true).await;
    let bob = Address::parse("bob@partner.example").unwrap();
    let rec = w
        .mpki
        .import_certificates(&w.partner.bob.certificate.to_pem().unwrap())
        .await
        .unwrap();
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["bob@partner.example"],
    );
    let copy = CopyInfo {
        envelope: &env,
        recipients: std::slice::from_ref(&bob),
        confidential: true,
        now: now(),
    };
    let method = w.pipeline.env.registry.get(MethodKind::Smime).unwrap();
    let encrypted = method.transform(MAIL.as_bytes(), copy).await.unwrap();
    assert!(contains(&encrypted, "application/pkcs7-mime"));
    w.mpki
        .revoke(&rec[0].fingerprint, now() as i64)
        .await
        .unwrap();
    assert!(matches!(
        method.transform(MAIL.as_bytes(), copy).await,
        Err(siegel_policy::MethodError::NoKey { .. })
    ));
}

#[tokio::test]
async fn a_user_revoked_on_our_crl_signs_invalid_at_once() {
    let w = world(true).await;
    let alice = Address::parse("alice@example.com").unwrap();
    let rec = w.mpki.issue_user(&alice, None, now() as i64).await.unwrap();
    let signer = w
        .mpki
        .signer_for(&alice, now() as i64)
        .await
        .unwrap()
        .unwrap();
    let mail = "From: alice@example.com\r\nTo: carl@example.com\r\nSubject: r\r\nContent-Type: text/plain\r\n\r\nFrom my phone.\r\n";
    let signed = cms::sign(mail.as_bytes(), &signer).unwrap();
    let env = || {
        envelope(
            Direction::Inbound,
            "alice@example.com",
            &["carl@example.com"],
        )
    };
    let out = run(&w, env(), &signed).await;
    assert!(
        out.starts_with(b"X-Siegel-Signature: valid; signer=alice@example.com\r\n"),
        "{}",
        String::from_utf8_lossy(&out[..200])
    );
    w.mpki.revoke(&rec.fingerprint, now() as i64).await.unwrap();
    let out = run(&w, env(), &signed).await;
    assert!(
        out.starts_with(b"X-Siegel-Signature: invalid; reason=revoked\r\n"),
        "{}",
        String::from_utf8_lossy(&out[..200])
    );
}

/// A tiny HTTP server answering every request with what `body` holds at
/// that moment; counts requests.
async fn crl_server(
    body: Arc<std::sync::Mutex<Vec<u8>>>,
) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let body = body.lock().unwrap().clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/pkix-crl\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(&body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn a_correspondent_revoked_by_their_ca_is_found_through_the_fetched_crl() {
    use siegel_crypto::pki::Revocation;
    // The partner CA publishes its CRL on a local server; the fetcher may
    // reach loopback only because the test allows it.
    let body = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (server, hits) = crl_server(Arc::clone(&body)).await;
    let partner = partner(365);
    let dave = partner
        .ca
        .issue_user(&UserParams {
            address: &Address::parse("dave@partner.example").unwrap(),
            name: Some("Dave"),
            key: KeyKind::EcP256,
            not_before: now() as i64 - 3600,
            validity_days: 30,
            crl_url: &format!("http://{server}/partner.crl"),
        })
        .unwrap();
    let serial = dave.certificate.serial_number().to_bn().unwrap().to_vec();
    let crl = partner
        .ca
        .issue_crl(
            &[Revocation {
                serial,
                revoked_at: now() as i64 - 60,
            }],
            1,
            now() as i64 - 60,
            7,
        )
        .unwrap();
    *body.lock().unwrap() = crl.to_der().unwrap();
    let fetcher = siegel_fetch::Fetcher::new(siegel_fetch::FetchConfig {
        allow: vec!["127.0.0.0/8".parse().unwrap()],
        native_roots: false,
        ..siegel_fetch::FetchConfig::default()
    })
    .unwrap();
    let signer = cms::Signer::new(dave.certificate.clone(), dave.key.clone(), &[]).unwrap();
    let w = world_of(true, Some(fetcher), partner).await;
    let mail = "From: Dave <dave@partner.example>\r\nTo: alice@example.com\r\nSubject: d\r\nContent-Type: text/plain\r\n\r\nHi.\r\n";
    let signed = cms::sign(mail.as_bytes(), &signer).unwrap();
    let env = || {
        envelope(
            Direction::Inbound,
            "dave@partner.example",
            &["alice@example.com"],
        )
    };
    let out = run(&w, env(), &signed).await;
    assert!(
        out.starts_with(b"X-Siegel-Signature: invalid; reason=revoked\r\n"),
        "{}",
        String::from_utf8_lossy(&out[..200])
    );
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The CRL is kept until its nextUpdate: the next mail asks nobody.
    let out = run(&w, env(), &signed).await;
    assert!(out.starts_with(b"X-Siegel-Signature: invalid; reason=revoked\r\n"));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A revoked signer's certificate is never harvested.
    let dave = Address::parse("dave@partner.example").unwrap();
    assert!(
        w.store
            .certificates()
            .for_address(&dave)
            .await
            .unwrap()
            .is_empty()
    );
    // Bob of the same CA is not on the CRL: valid, revocation now known.
    let out = run(
        &w,
        envelope(
            Direction::Inbound,
            "bob@partner.example",
            &["alice@example.com"],
        ),
        &bob_signed(&w, "still fine"),
    )
    .await;
    assert!(out.starts_with(b"X-Siegel-Signature: valid; signer=bob@partner.example\r\n"));
}

/// A correspondent whose signature announced AES-256-GCM (our own
/// SignedData puts it first in SMIMECapabilities) gets AuthEnvelopedData;
/// one whose certificate was only imported, announcing nothing, gets the
/// configured AES-256-CBC.
#[tokio::test]
async fn a_harvested_gcm_announcement_makes_the_next_copy_auth_enveloped() {
    let w = world(true).await;
    add_user(&w.store, "alice@example.com", LicenceState::Licensed).await;
    let outbound = || {
        envelope(
            Direction::Outbound,
            "alice@example.com",
            &["bob@partner.example"],
        )
    };
    let mail = MAIL.replace("carol@partner.test", "bob@partner.example");
    w.mpki
        .import_certificates(&w.partner.bob.certificate.to_pem().unwrap())
        .await
        .unwrap();
    let out = run(&w, outbound(), mail.as_bytes()).await;
    assert!(contains(&out, "smime-type=enveloped-data"), "imported: CBC");

    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let stamped = run(&w, env, &bob_signed(&w, "with capabilities")).await;
    assert!(stamped.starts_with(b"X-Siegel-Signature: valid; signer=bob@partner.example\r\n"));
    let fp = smime::fingerprint(&w.partner.bob.certificate).unwrap();
    assert_eq!(
        w.store
            .certificates()
            .capabilities(&fp)
            .await
            .unwrap()
            .as_deref(),
        Some("aes256-gcm")
    );
    let out = run(&w, outbound(), mail.as_bytes()).await;
    assert!(
        contains(&out, "smime-type=authEnveloped-data"),
        "{}",
        String::from_utf8_lossy(&out[..400.min(out.len())])
    );
    let plain = cms::decrypt(&out, &w.partner.bob.certificate, &w.partner.bob.key).unwrap();
    assert!(cms::verify(&plain, &our_trust(&w), SystemTime::now()).is_valid());
}
