//! OpenPGP in the mail path on a temporary spool and SQLite store: our
//! users' keys (generated on first use), PGP/MIME encryption of OpenPGP
//! and domain-OpenPGP copies, signed-only PGP/MIME, the Autocrypt header;
//! inbound decrypt → verify → harvest → stamp, key changes.

#![allow(clippy::unwrap_used)]

use siegel_crypto::pki::KeyKind;
use siegel_openpgp::{Cert, KeyAlgorithm, Pgp, SignatureStatus};
use siegel_store::{LicenceState, MasterKey, NewUser, SourceKind, Store};

use super::*;
use crate::pgp::{Harvested, PgpKeys, PgpSettings};
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

struct World {
    _dir: tempfile::TempDir,
    spool: Spool,
    store: Store,
    mpki: Arc<Mpki>,
    keys: Arc<PgpKeys>,
    pipeline: Pipeline,
    ready: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<QueueId>>,
}

async fn world(settings: PolicySettings) -> World {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let store = Store::open(
        &format!("sqlite://{}", dir.path().join("t.db").display()),
        dir.path(),
        MasterKey::generate().unwrap(),
    )
    .await
    .unwrap();
    let internal = vec!["example.com".to_owned()];
    let mpki = Arc::new(
        Mpki::load_or_create(
            store.clone(),
            MpkiSettings {
                key: KeyKind::EcP256,
                internal_domains: internal.clone(),
                ..MpkiSettings::default()
            },
        )
        .await
        .unwrap(),
    );
    let keys = Arc::new(PgpKeys::new(
        store.clone(),
        PgpSettings {
            internal_domains: internal.clone(),
            ..PgpSettings::default()
        },
    ));
    let mut registry = siegel_policy::Registry::foundation();
    smime::register_with(&mut registry, &mpki, Some(&keys));
    pgp::register(&mut registry, &keys);
    let directory = StoreDirectory(store.clone());
    let env = Arc::new(PolicyEnv {
        settings: PolicySettings {
            internal_domains: internal,
            ..settings
        },
        registry,
        directory: Some(Arc::new(directory.clone()) as Arc<dyn KeyDirectory>),
        tracker: Some(Arc::new(directory) as Arc<dyn TrackingSink>),
        smime: Some(Arc::clone(&mpki)),
        pgp: Some(Arc::clone(&keys)),
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
        keys,
        pipeline,
    }
}

async fn add_user(store: &Store, addr: &str) {
    store
        .users()
        .insert(&NewUser {
            address: Address::parse(addr).unwrap(),
            display_name: None,
            attributes: Default::default(),
            licence_state: LicenceState::Licensed,
        })
        .await
        .unwrap();
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runs one mail through the pipeline and returns its ready copies.
async fn run_all(w: &World, env: Envelope, mail: &[u8], copies: usize) -> Vec<Vec<u8>> {
    let id = w.spool.inject(env, mail).await.unwrap();
    w.pipeline.process(&w.spool, &id, now()).await.unwrap();
    let mut out = Vec::new();
    for _ in 0..copies {
        let copy = w.ready.lock().await.recv().await.unwrap();
        let (f, len) = w.spool.open_content(&copy).await.unwrap();
        let mut buf = Vec::new();
        f.take(len).read_to_end(&mut buf).await.unwrap();
        out.push(buf);
    }
    out
}

async fn run(w: &World, env: Envelope, mail: &[u8]) -> Vec<u8> {
    run_all(w, env, mail, 1).await.pop().unwrap()
}

fn correspondent(address: &str) -> Cert {
    Pgp::new()
        .generate_key(&Address::parse(address).unwrap(), KeyAlgorithm::Cv25519)
        .unwrap()
}

fn public(cert: &Cert) -> Vec<u8> {
    Pgp::new().public_bytes(cert).unwrap()
}

const MAIL: &str = "From: Alice <alice@example.com>\r\nTo: carol@partner.test\r\nSubject: [secure] Quarterly figures\r\nMessage-ID: <a1@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e from Alice.\r\n";

#[tokio::test]
async fn a_confidential_mail_to_a_correspondent_with_a_key_leaves_pgp_mime_signed_and_encrypted() {
    let w = world(PolicySettings::default()).await;
    add_user(&w.store, "alice@example.com").await;
    let carol = correspondent("carol@partner.test");
    let (stored, skipped) = w.keys.import(&public(&carol), now() as i64).await.unwrap();
    assert_eq!((stored.len(), skipped.len()), (1, 0));

    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, MAIL.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("multipart/encrypted"), "{text}");
    assert!(
        text.contains("Subject: ...\r\n"),
        "protected subject: {text}"
    );
    assert!(
        !text.contains("Quarterly"),
        "nothing of the subject in clear"
    );
    assert!(!text.contains("from Alice"), "nothing of the body in clear");
    assert!(text.contains("Autocrypt: addr=alice@example.com; keydata="));

    // Alice's key was generated on her first mail, held by Siegel.
    let alice = Address::parse("alice@example.com").unwrap();
    let alice_keys = w.store.pgp_keys().for_address(&alice).await.unwrap();
    assert_eq!(alice_keys.len(), 1);
    assert!(alice_keys[0].has_private_key);
    assert_eq!(alice_keys[0].source_kind, SourceKind::Issued);
    let alice_cert = Pgp::new().load_cert(&alice_keys[0].material).unwrap();
    assert!(
        !alice_cert.is_tsk(),
        "the stored public material has no secrets"
    );

    // Carol opens it: signed by Alice, the protected subject restored.
    let opened = Pgp::new().open(&out, &[carol], &[alice_cert]).unwrap();
    assert_eq!(
        opened.signature,
        SignatureStatus::Valid {
            fingerprint: alice_keys[0].fingerprint.clone(),
            signer: Some(alice.clone()),
        }
    );
    let plain = String::from_utf8_lossy(&opened.message);
    assert!(plain.contains("Subject: Quarterly figures"), "{plain}");
    assert!(plain.contains("Gr\u{fc}\u{df}e from Alice."), "{plain}");
}

#[tokio::test]
async fn a_sender_without_a_key_of_our_own_is_still_encrypted_never_in_clear() {
    let w = world(PolicySettings::default()).await;
    // nobody@example.com is not a licensed user: no key, no signature.
    let carol = correspondent("carol@partner.test");
    w.keys.import(&public(&carol), now() as i64).await.unwrap();
    let mail = MAIL.replace("alice@", "nobody@");
    let env = envelope(
        Direction::Outbound,
        "nobody@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, mail.as_bytes()).await;
    assert!(contains(&out, "multipart/encrypted"));
    assert!(!contains(&out, "Autocrypt:"));
    let opened = Pgp::new().open(&out, &[carol], &[]).unwrap();
    assert_eq!(opened.signature, SignatureStatus::NotSigned);
    assert!(contains(&opened.message, "Gr\u{fc}\u{df}e"));
}

#[tokio::test]
async fn recipients_with_only_an_openpgp_key_get_a_pgp_mime_signature_when_not_encrypted() {
    let w = world(PolicySettings {
        encrypt_when_key_known: false,
        ..PolicySettings::default()
    })
    .await;
    add_user(&w.store, "alice@example.com").await;
    let carol = correspondent("carol@partner.test");
    w.keys.import(&public(&carol), now() as i64).await.unwrap();
    let mail = MAIL.replace("[secure] ", "");
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test"],
    );
    let out = run(&w, env, mail.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("protocol=\"application/pgp-signature\""),
        "{text}"
    );
    let alice = Address::parse("alice@example.com").unwrap();
    let keyring = w
        .keys
        .keyring_for(Some(&alice), now() as i64)
        .await
        .unwrap();
    let opened = Pgp::new().open(&out, &[], &keyring).unwrap();
    assert!(matches!(opened.signature, SignatureStatus::Valid { .. }));

    // A recipient without any key gets the S/MIME signature as before.
    let mail = mail.replace("carol@partner.test", "dave@partner.test");
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["dave@partner.test"],
    );
    let out = run(&w, env, mail.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("application/pkcs7-signature"), "{text}");
}

#[tokio::test]
async fn domain_openpgp_encrypts_to_the_partner_gateways_key() {
    let w = world(PolicySettings::default()).await;
    let gateway = correspondent("postmaster@partner.test");
    w.keys
        .import_domain_key("partner.test", &public(&gateway), now() as i64)
        .await
        .unwrap();
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["carol@partner.test", "erin@partner.test"],
    );
    let mail = MAIL.replace(
        "To: carol@partner.test",
        "To: carol@partner.test, erin@partner.test",
    );
    let out = run(&w, env, mail.as_bytes()).await;
    assert!(contains(&out, "multipart/encrypted"));
    let opened = Pgp::new().open(&out, &[gateway], &[]).unwrap();
    assert!(contains(&opened.message, "Gr\u{fc}\u{df}e"));
}

/// A mail from bob@partner.example to alice, signed and encrypted by Bob's
/// own software (Siegel's engine standing in for it), with his Autocrypt
/// header.
fn bob_mail(bob: &Cert, to: &Cert, body: &str) -> Vec<u8> {
    let pgp = Pgp::new();
    let bob_addr = Address::parse("bob@partner.example").unwrap();
    let mail = format!(
        "From: Bob <bob@partner.example>\r\nTo: alice@example.com\r\nSubject: Re: figures\r\nMessage-ID: <b1@partner.example>\r\nAutocrypt: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        pgp.autocrypt_header(bob, &bob_addr).unwrap()
    );
    pgp.encrypt_and_sign(mail.as_bytes(), bob, &[to]).unwrap()
}

#[tokio::test]
async fn inbound_pgp_is_decrypted_verified_stamped_and_the_senders_key_harvested() {
    let w = world(PolicySettings::default()).await;
    add_user(&w.store, "alice@example.com").await;
    let alice = Address::parse("alice@example.com").unwrap();
    // Alice's key, as her correspondents know it.
    w.keys.export(&alice, now() as i64).await.unwrap();
    let alice_pub = w
        .keys
        .recipient_cert(&alice, now() as i64)
        .await
        .unwrap()
        .unwrap();
    let bob = correspondent("bob@partner.example");
    let mail = bob_mail(&bob, &alice_pub, "Hello Alice");
    // A spoofed stamp from outside must not survive.
    let mut spoofed = b"X-Siegel-Encryption: smime\r\n".to_vec();
    spoofed.extend_from_slice(&mail);
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &spoofed).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with(
            "X-Siegel-Encryption: pgp\r\nX-Siegel-Signature: valid; signer=bob@partner.example\r\n"
        ),
        "{text}"
    );
    assert!(!text.contains("X-Siegel-Encryption: smime"));
    assert!(text.contains("Hello Alice"));
    assert!(
        text.contains("Subject: Re: figures"),
        "protected subject restored"
    );
    let bob_addr = Address::parse("bob@partner.example").unwrap();
    let harvested = w.store.pgp_keys().for_address(&bob_addr).await.unwrap();
    assert_eq!(harvested.len(), 1);
    assert_eq!(harvested[0].source_kind, SourceKind::Harvested);
    assert_eq!(harvested[0].source_detail.as_deref(), Some("autocrypt"));
    assert_eq!(harvested[0].fingerprint, bob.fingerprint().to_hex());

    // Corrupt packets: delivered as it came, stamped, never dropped.
    let broken = "From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: x\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0garbageAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n-----END PGP MESSAGE-----\r\n--b--\r\n";
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, broken.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("X-Siegel-Encryption: failed; reason=malformed\r\n"),
        "{}",
        &text[..120.min(text.len())]
    );
    assert!(text.contains("multipart/encrypted"), "delivered as it came");
}

#[tokio::test]
async fn mail_encrypted_to_our_domain_key_is_opened_as_domain_pgp() {
    let w = world(PolicySettings::default()).await;
    let ours = w
        .keys
        .own_domain_key("example.com", now() as i64)
        .await
        .unwrap();
    let ours = Pgp::new()
        .load_cert(&Pgp::new().public_bytes(&ours).unwrap())
        .unwrap();
    let bob = correspondent("bob@partner.example");
    let mail = bob_mail(&bob, &ours, "to the gateway");
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["frank@example.com"],
    );
    let out = run(&w, env, &mail).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("X-Siegel-Encryption: domain-pgp\r\n"),
        "{text}"
    );
    assert!(text.contains("to the gateway"));
}

#[tokio::test]
async fn an_autocrypt_key_makes_the_next_confidential_mail_go_openpgp_and_a_changed_key_is_parked()
{
    // GINA is not registered here: without a key the confidential mail
    // would be bounced; with the harvested key it leaves PGP/MIME.
    let w = world(PolicySettings::default()).await;
    let bob = correspondent("bob@partner.example");
    let pgp = Pgp::new();
    let bob_addr = Address::parse("bob@partner.example").unwrap();
    let plain = |cert: &Cert| {
        format!(
            "From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: hello\r\nAutocrypt: {}\r\n\r\nno signature\r\n",
            pgp.autocrypt_header(cert, &bob_addr).unwrap()
        )
    };
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    run(&w, env, plain(&bob).as_bytes()).await;
    let cert = w
        .keys
        .recipient_cert(&bob_addr, now() as i64)
        .await
        .unwrap()
        .expect("harvested from the Autocrypt header");
    assert_eq!(cert.fingerprint(), bob.fingerprint());

    let mail = MAIL.replace("carol@partner.test", "bob@partner.example");
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["bob@partner.example"],
    );
    let out = run(&w, env, mail.as_bytes()).await;
    assert!(contains(&out, "multipart/encrypted"));
    Pgp::new()
        .open(&out, std::slice::from_ref(&bob), &[])
        .unwrap();

    // Someone else's key in an unsigned mail "from" Bob: stored, not used.
    let mallory = correspondent("bob@partner.example");
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    run(&w, env, plain(&mallory).as_bytes()).await;
    let now = now() as i64;
    let used = w
        .keys
        .recipient_cert(&bob_addr, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.fingerprint(), bob.fingerprint(), "the known key stays");
    let rows = w.store.pgp_keys().for_address(&bob_addr).await.unwrap();
    let parked = rows
        .iter()
        .find(|r| r.fingerprint == mallory.fingerprint().to_hex())
        .expect("the changed key is recorded");
    assert_eq!(
        parked.source_detail.as_deref(),
        Some("autocrypt-unconfirmed")
    );
    assert_eq!(
        parked.superseded_by.as_deref(),
        Some(bob.fingerprint().to_hex().as_str())
    );

    // The administrator confirms the change by importing the key.
    let (stored, _) = w.keys.import(&public(&mallory), now).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].source_detail.as_deref(),
        Some("confirmed by admin")
    );
    let used = w
        .keys
        .recipient_cert(&bob_addr, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        used.fingerprint(),
        mallory.fingerprint(),
        "confirmed: in use"
    );
    let old = w
        .store
        .pgp_keys()
        .by_fingerprint(&bob.fingerprint().to_hex())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        old.superseded_by.as_deref(),
        Some(mallory.fingerprint().to_hex().as_str())
    );

    // A change signed by the key in use is taken over.
    let newer = correspondent("bob@partner.example");
    let key = pgp.describe(newer.clone());
    let outcome = w
        .keys
        .harvest(
            &bob_addr,
            &key,
            &siegel_openpgp::KeySource::Autocrypt {
                addr: bob_addr.clone(),
            },
            "<b2@partner.example>",
            Some(&mallory.fingerprint().to_hex()),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Harvested::Taken {
            fingerprint: newer.fingerprint().to_hex()
        }
    );
    let used = w
        .keys
        .recipient_cert(&bob_addr, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.fingerprint(), newer.fingerprint());
}

#[tokio::test]
async fn inline_pgp_and_clear_signed_mail_are_opened_and_verified() {
    let w = world(PolicySettings::default()).await;
    add_user(&w.store, "alice@example.com").await;
    let alice = Address::parse("alice@example.com").unwrap();
    w.keys.export(&alice, now() as i64).await.unwrap();
    let alice_pub = w
        .keys
        .recipient_cert(&alice, now() as i64)
        .await
        .unwrap()
        .unwrap();
    let bob = correspondent("bob@partner.example");
    w.keys.import(&public(&bob), now() as i64).await.unwrap();
    let pgp = Pgp::new();
    let armoured = pgp
        .sign_encrypt_bytes(
            b"inline secret\n",
            Some(&pgp.signing_key(&bob).unwrap()),
            &[&alice_pub],
        )
        .unwrap();
    let mail = format!(
        "From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: inline\r\nContent-Type: text/plain\r\n\r\n{}",
        String::from_utf8(armoured).unwrap()
    );
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, mail.as_bytes()).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with(
            "X-Siegel-Encryption: pgp\r\nX-Siegel-Signature: valid; signer=bob@partner.example\r\n"
        ),
        "{text}"
    );
    assert!(text.contains("inline secret"));
    assert!(!text.contains("BEGIN PGP MESSAGE"));

    // Signed by an unknown key: delivered, stamped as such.
    let stranger = correspondent("bob@partner.example");
    let signed = pgp.sign(b"From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: s\r\n\r\nsigned text\r\n", &stranger).unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &signed).await;
    assert!(
        out.starts_with(b"X-Siegel-Signature: invalid; reason=unknown-key\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// PRODUCT.md's inbound flow: AV/AS → decrypt → (AV of what was
/// decrypted) → verify → harvest → tag, after the incoming `X-Siegel-*`
/// fields are removed; outbound: the Autocrypt header before the policy
/// splits the mail, so every copy carries it.
#[tokio::test]
async fn the_inbound_path_runs_its_stages_in_the_product_order() {
    let w = world(PolicySettings::default()).await;
    let filter_config = siegel_config::Config::from_toml_str(
        "[filter]\nclamd = \"tcp:127.0.0.1:9\"\nspamd = \"127.0.0.1:9\"\n",
        "<t>",
    )
    .unwrap()
    .config
    .filter;
    let filter = Arc::new(siegel_filter::Filter::from_config(&filter_config).unwrap());
    let env = Arc::new(PolicyEnv {
        registry: siegel_policy::Registry::foundation(),
        smime: Some(Arc::clone(&w.mpki)),
        pgp: Some(Arc::clone(&w.keys)),
        filter: Some(filter),
        ..PolicyEnv::default()
    });
    let p = Pipeline::standard_with("mx.example.com".into(), env);
    assert_eq!(
        p.stage_names(Direction::Inbound),
        [
            "received",
            "strip-x-siegel",
            "filter",
            "decrypt",
            "filter-decrypted",
            "verify",
            "harvest",
            "stamp"
        ]
    );
    assert_eq!(
        p.stage_names(Direction::Outbound),
        [
            "received",
            "filter",
            "autocrypt",
            "classify",
            "decide",
            "split"
        ]
    );
}

#[tokio::test]
async fn an_smime_signed_mail_quoting_an_openpgp_block_is_judged_by_its_smime_signature() {
    let w = world(PolicySettings::default()).await;
    let bob = Address::parse("bob@partner.example").unwrap();
    // Bob's certificate from a CA we trust (ours, for the test).
    let issued = w
        .mpki
        .ca()
        .issue_user(&siegel_crypto::pki::UserParams {
            address: &bob,
            name: None,
            key: KeyKind::EcP256,
            not_before: now() as i64 - 60,
            validity_days: 30,
            crl_url: "http://partner.example/crl",
        })
        .unwrap();
    let signer =
        siegel_crypto::smime::Signer::new(issued.certificate.clone(), issued.key.clone(), &[])
            .unwrap();
    let mail = "From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: quoted\r\nContent-Type: text/plain\r\n\r\nYou wrote:\r\n-----BEGIN PGP SIGNED MESSAGE-----\r\nHash: SHA256\r\n\r\nold text\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nAAAA\r\n-----END PGP SIGNATURE-----\r\nand:\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0garbage\r\n-----END PGP MESSAGE-----\r\n";
    let signed = siegel_crypto::smime::sign(mail.as_bytes(), &signer).unwrap();
    let env = envelope(
        Direction::Inbound,
        "bob@partner.example",
        &["alice@example.com"],
    );
    let out = run(&w, env, &signed).await;
    assert!(
        out.starts_with(b"X-Siegel-Signature: valid; signer=bob@partner.example\r\n"),
        "{}",
        String::from_utf8_lossy(&out[..200.min(out.len())])
    );
    assert!(!contains(&out, "X-Siegel-Encryption"), "quoted, not opened");
}

#[tokio::test]
async fn quoted_armour_in_plain_mail_is_text_but_a_message_for_someone_else_is_said() {
    let w = world(PolicySettings::default()).await;
    let inbound = || {
        envelope(
            Direction::Inbound,
            "bob@partner.example",
            &["alice@example.com"],
        )
    };
    let head = "From: bob@partner.example\r\nTo: alice@example.com\r\nSubject: q\r\nContent-Type: text/plain\r\n\r\n";
    let garbled = format!(
        "{head}You wrote:\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nnot really\r\n-----END PGP MESSAGE-----\r\n"
    );
    let out = run(&w, inbound(), garbled.as_bytes()).await;
    assert!(
        !contains(&out, "X-Siegel-Encryption"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(contains(&out, "not really"));

    let stranger = correspondent("zed@elsewhere.test");
    let pgp = Pgp::new();
    let armoured = pgp
        .sign_encrypt_bytes(b"secret", None, &[&stranger])
        .unwrap();
    let other = format!("{head}{}", String::from_utf8(armoured).unwrap());
    let out = run(&w, inbound(), other.as_bytes()).await;
    assert!(
        out.starts_with(b"X-Siegel-Encryption: failed; reason=no-key\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}
