//! The GINA method in the mail path on a temporary spool and SQLite store:
//! a confidential mail to a recipient without keys becomes a carrier whose
//! container opens, with the stored key, to exactly the original mail; the
//! sender is notified once per recipient; a mail that is not confidential
//! never goes GINA.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use siegel_gina::container::{ContentKey, parse};
use siegel_gina::{Hasher, Lang, Themes};
use siegel_store::{MasterKey, Store};

use super::*;
use crate::gina::{Gina, GinaSettings};
use crate::policy::{KeyDirectory, StoreDirectory, TrackingSink};
use crate::policy_tests::envelope;

/// 2026-11-29 18:00:00 UTC.
const NOW: u64 = 1_795_975_200;

struct World {
    _dir: tempfile::TempDir,
    spool: Spool,
    store: Store,
    pipeline: Pipeline,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool")).unwrap();
    let store = Store::open(
        &format!("sqlite://{}", dir.path().join("t.db").display()),
        dir.path(),
        MasterKey::generate().unwrap(),
    )
    .await
    .unwrap();
    let gina = Arc::new(Gina::new(
        store.clone(),
        spool.clone(),
        Arc::new(Themes::load(None).unwrap()),
        Arc::new(Hasher::new(1).unwrap()),
        GinaSettings {
            portal_url: "https://secure.example.com".into(),
            container_expiry: Duration::from_secs(30 * 86_400),
            carrier_shows_subject: false,
            language: Lang::En,
            hostname: "mx.example.com".into(),
            system_from: Address::parse("siegel@example.com").unwrap(),
            internal_domains: vec!["example.com".into()],
            notify_sender: true,
        },
        None,
    ));
    let mut registry = siegel_policy::Registry::foundation();
    crate::gina::register(&mut registry, &gina);
    let directory = StoreDirectory(store.clone());
    let env = Arc::new(PolicyEnv {
        settings: PolicySettings {
            internal_domains: vec!["example.com".into()],
            gina_sender_domains: vec!["example.com".into()],
            ..PolicySettings::default()
        },
        registry,
        directory: Some(Arc::new(directory.clone()) as Arc<dyn KeyDirectory>),
        tracker: Some(Arc::new(directory) as Arc<dyn TrackingSink>),
        smime: None,
        pgp: None,
        filter: None,
    });
    World {
        pipeline: Pipeline::standard_with("mx.example.com".into(), env),
        _dir: dir,
        spool,
        store,
    }
}

async fn content(spool: &Spool, id: &QueueId) -> Vec<u8> {
    let (f, len) = spool.open_content(id).await.unwrap();
    let mut out = Vec::new();
    f.take(len).read_to_end(&mut out).await.unwrap();
    out
}

fn mail(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice Example <alice@example.com>\r\nTo: bob@partner.example\r\nSubject: {subject}\r\n\
         Message-ID: <m1@example.com>\r\nDisposition-Notification-To: alice@example.com\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nThe offer: 1.2 M.\r\n"
    )
    .into_bytes()
}

/// Processes one mail; returns every entry the spool holds afterwards.
async fn run(w: &World, raw: &[u8]) -> Vec<siegel_spool::Entry> {
    let env = envelope(
        Direction::Outbound,
        "alice@example.com",
        &["bob@partner.example"],
    );
    let id = w.spool.inject(env, raw).await.unwrap();
    let v = w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    assert!(matches!(v, Verdict::Continue | Verdict::Modified), "{v:?}");
    w.spool.list().unwrap()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|x| x == needle.as_bytes())
}

#[tokio::test]
async fn a_confidential_mail_becomes_a_carrier_whose_container_opens_to_the_mail() {
    let w = world().await;
    let original = mail("[secure] Offer");
    let entries = run(&w, &original).await;
    let carrier = entries
        .iter()
        .find(|e| e.envelope.recipients[0].address.as_str() == "bob@partner.example")
        .unwrap();
    assert_eq!(carrier.state.stage, siegel_spool::Stage::Ready);
    assert!(carrier.state.note.as_deref().unwrap().contains("GINA"));
    let bytes = content(&w.spool, &carrier.envelope.id).await;
    // Nothing of the mail is readable in the carrier.
    assert!(!contains(&bytes, "The offer"));
    assert!(!contains(&bytes, "Offer"), "the subject is protected too");
    let id_line = String::from_utf8_lossy(&bytes)
        .lines()
        .find_map(|l| {
            l.strip_prefix("X-Siegel-Gina-Container: ")
                .map(str::to_owned)
        })
        .unwrap();
    // The container in the attachment opens with the stored key, for bob only.
    let html = String::from_utf8_lossy(&bytes).into_owned();
    let container = siegel_gina::html::decode_posted(&html).unwrap();
    let parsed = parse(&container).unwrap();
    assert_eq!(parsed.header().id.to_string(), id_line.trim());
    let key = w
        .store
        .gina_containers()
        .key(id_line.trim())
        .await
        .unwrap()
        .unwrap();
    let key = ContentKey::from_bytes(key.expose()).unwrap();
    let bob = Address::parse("bob@partner.example").unwrap();
    let opened = parsed.open(&key, &bob).unwrap();
    // The whole mail, subject keyword removed as for every other method.
    assert!(
        contains(&opened, "Subject: Offer\r\n"),
        "{}",
        String::from_utf8_lossy(&opened)
    );
    assert!(contains(&opened, "The offer: 1.2 M."));
    let eve = Address::parse("eve@partner.example").unwrap();
    assert!(parsed.open(&key, &eve).is_err());
    let record = w
        .store
        .gina_containers()
        .by_id(id_line.trim())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.recipient, bob);
    // stored without the angle brackets, as `siegel gina revoke` looks it up
    assert_eq!(record.message_id.as_deref(), Some("m1@example.com"));

    // The sender got the initial password, in a mail to the internal relay.
    let notice = entries
        .iter()
        .find(|e| e.envelope.recipients[0].address.as_str() == "alice@example.com")
        .unwrap();
    assert_eq!(notice.envelope.direction, Direction::Inbound);
    let text = content(&w.spool, &notice.envelope.id).await;
    assert!(contains(&text, "bob@partner.example"));
    let account = w.store.gina().by_address(&bob).await.unwrap().unwrap();
    assert!(account.must_register);

    // A second mail: a new container, no second notice.
    let entries = run(&w, &mail("[secure] Offer, revised")).await;
    let notices = entries
        .iter()
        .filter(|e| e.envelope.recipients[0].address.as_str() == "alice@example.com")
        .count();
    assert_eq!(notices, 1, "once per recipient, not per mail");
    let carriers = entries
        .iter()
        .filter(|e| e.envelope.recipients[0].address.as_str() == "bob@partner.example")
        .count();
    assert_eq!(carriers, 2);
}

#[tokio::test]
async fn a_mail_that_is_not_confidential_never_goes_gina() {
    let w = world().await;
    let entries = run(&w, &mail("Lunch")).await;
    assert_eq!(entries.len(), 1);
    let bytes = content(&w.spool, &entries[0].envelope.id).await;
    assert!(contains(&bytes, "The offer: 1.2 M."));
    assert!(!contains(&bytes, "X-Siegel-Gina-Container"));
    let bob = Address::parse("bob@partner.example").unwrap();
    assert!(w.store.gina().by_address(&bob).await.unwrap().is_none());
}
