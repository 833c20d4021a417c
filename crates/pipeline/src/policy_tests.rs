//! The policy path end to end on a temporary spool and a temporary SQLite
//! store: classification, the decision with the store's keys, the split
//! into spool entries, and tracking.

#![allow(clippy::unwrap_used)]

use siegel_policy::MethodKind;
use siegel_store::{KeyRecord, MasterKey, NewKey, SourceKind, Store};
use siegel_types::{Origin, Recipient, ReversePath};

use super::*;
use crate::commit::SPLITTING;
use crate::policy::{KeyDirectory, StoreDirectory, TrackingSink};

/// 2026-11-29 18:00:00 UTC.
const NOW: u64 = 1_795_975_200;

/// A test envelope (also used by the S/MIME tests).
pub(crate) fn envelope(direction: Direction, from: &str, rcpts: &[&str]) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        mail_from: ReversePath::Address(Address::parse(from).unwrap()),
        recipients: rcpts
            .iter()
            .map(|r| Recipient::new(Address::parse(r).unwrap()))
            .collect(),
        direction,
        origin: Origin::Smtp {
            peer: "192.0.2.7:1234".into(),
            helo: "client.example.org".into(),
            tls: true,
            auth: None,
        },
        received_at: 0,
        size: 0,
        body_8bit: false,
        smtputf8: false,
        env_id: None,
        ret: None,
        message_id: Some("<m1@example.com>".into()),
    }
}

struct World {
    _dir: tempfile::TempDir,
    spool: Spool,
    store: Store,
    pipeline: Pipeline,
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
    let directory = StoreDirectory(store.clone());
    let env = Arc::new(PolicyEnv {
        settings,
        registry: siegel_policy::Registry::foundation(),
        directory: Some(Arc::new(directory.clone()) as Arc<dyn KeyDirectory>),
        tracker: Some(Arc::new(directory) as Arc<dyn TrackingSink>),
        smime: None,
        pgp: None,
        filter: None,
    });
    let pipeline = Pipeline::standard_with("mx.example.com".into(), env);
    World {
        _dir: dir,
        spool,
        store,
        pipeline,
    }
}

async fn add_cert(store: &Store, addr: &str, fp: &str, not_after: i64) -> KeyRecord {
    store
        .certificates()
        .insert(&NewKey {
            address: Address::parse(addr).unwrap(),
            fingerprint: fp.into(),
            issuer: "CN=Test CA".into(),
            serial: "01".into(),
            not_before: 0,
            not_after,
            key_usage: String::new(),
            source_kind: SourceKind::Imported,
            source_message_id: None,
            material: b"cert".to_vec(),
            source_detail: None,
            private_key: None,
        })
        .await
        .unwrap()
}

async fn content(spool: &Spool, id: &QueueId) -> String {
    let (f, len) = spool.open_content(id).await.unwrap();
    let mut out = Vec::new();
    f.take(len).read_to_end(&mut out).await.unwrap();
    String::from_utf8(out).unwrap()
}

fn addrs(e: &siegel_spool::Entry) -> Vec<String> {
    e.envelope
        .recipients
        .iter()
        .map(|r| r.address.to_string())
        .collect()
}

const BODY: &str = "\r\nline 1\r\nX-Siegel-Not-A-Header: body text stays\r\n";

#[tokio::test]
async fn inbound_siegel_headers_are_removed_and_the_body_is_untouched() {
    let w = world(PolicySettings::default()).await;
    let mail = format!(
        "X-Siegel-Signature: valid, signed by ceo@example.com\r\nSubject: hi\r\nx-siegel-verified :\r\n yes\r\nFrom: a@outside.example\r\n{BODY}"
    );
    let env = envelope(Direction::Inbound, "a@outside.example", &["b@example.com"]);
    let id = w.spool.inject(env, mail.as_bytes()).await.unwrap();
    let mut ready = w.spool.take_ready().unwrap();
    let v = w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    assert_eq!(v, Verdict::Modified);
    let copy = ready.recv().await.unwrap();
    assert!(
        matches!(w.spool.load(&id), Err(SpoolError::NotFound(_))),
        "original removed"
    );
    let entry = w.spool.load(&copy).unwrap();
    assert_eq!(entry.state.stage, EntryStage::Ready);
    assert_eq!(entry.state.parent, Some(id.clone()));
    assert!(entry.state.prepend.starts_with("Received: "));
    assert_eq!(
        content(&w.spool, &copy).await,
        format!("Subject: hi\r\nFrom: a@outside.example\r\n{BODY}")
    );
    // A clean inbound mail stays as it is (no copy).
    let clean = format!("Subject: hi\r\n{BODY}");
    let env = envelope(Direction::Inbound, "a@outside.example", &["b@example.com"]);
    let id = w.spool.inject(env, clean.as_bytes()).await.unwrap();
    w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    assert_eq!(ready.recv().await, Some(id.clone()));
    assert_eq!(content(&w.spool, &id).await, clean);
}

#[tokio::test]
async fn confidential_mail_without_a_method_is_refused_with_a_bilingual_reason() {
    let w = world(PolicySettings::default()).await;
    let mail = format!("Subject: [secure] offer\r\nFrom: a@example.com\r\n{BODY}");
    let env = envelope(Direction::Outbound, "a@example.com", &["b@partner.example"]);
    let id = w.spool.inject(env, mail.as_bytes()).await.unwrap();
    let mut ready = w.spool.take_ready().unwrap();
    w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    // The keyword is removed, so the content changed: one copy, refused.
    let copy = ready.recv().await.unwrap();
    let entry = w.spool.load(&copy).unwrap();
    assert_eq!(entry.state.stage, EntryStage::Ready);
    let RcptState::Failed {
        reason,
        dsn_queued: false,
        ..
    } = &entry.state.recipients[0]
    else {
        panic!("{:?}", entry.state.recipients)
    };
    assert!(
        reason.contains("could not be encrypted for b@partner.example"),
        "{reason}"
    );
    assert!(
        reason.contains("konnte nicht verschlüsselt werden"),
        "{reason}"
    );
    assert!(matches!(w.spool.load(&id), Err(SpoolError::NotFound(_))));
    // Tracking has the refusal with its reason, under the original id.
    let events = w.store.tracking().for_queue_id(&id).await.unwrap();
    let refused: Vec<_> = events
        .iter()
        .filter(|e| e.event.method == "refused")
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].event.recipient.as_str(), "b@partner.example");
    assert_eq!(
        refused[0].event.message_id.as_deref(),
        Some("<m1@example.com>")
    );
    assert!(
        refused[0]
            .event
            .reason
            .contains("not TLS only: a confidential mail")
    );
    assert_eq!(refused[0].event.node, "mx.example.com");
    assert!(
        events
            .iter()
            .any(|e| e.event.method == policy::QUEUED && e.event.reason.ends_with(copy.as_str()))
    );
}

#[tokio::test]
async fn hold_instead_of_bounce_keeps_the_mail() {
    let w = world(PolicySettings {
        hold_when_no_method: true,
        ..PolicySettings::default()
    })
    .await;
    let mail = format!("Sensitivity: Company-Confidential\r\nSubject: x\r\n{BODY}");
    let env = envelope(Direction::Outbound, "a@example.com", &["b@partner.example"]);
    let id = w.spool.inject(env, mail.as_bytes()).await.unwrap();
    let mut ready = w.spool.take_ready().unwrap();
    w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    // Nothing to edit and one fate: the original itself is held.
    let e = w.spool.load(&id).unwrap();
    assert_eq!(e.state.stage, EntryStage::Held);
    assert!(e.state.note.unwrap().contains("could not be encrypted"));
    assert!(ready.try_recv().is_err());
}

#[tokio::test]
async fn three_recipients_in_three_situations_become_three_copies() {
    let w = world(PolicySettings {
        verified_tls_enough: vec!["bank.example".into()],
        ..PolicySettings::default()
    })
    .await;
    // S/MIME is known but cannot run yet: a confidential mail is held for it.
    add_cert(
        &w.store,
        "c@smime.example",
        "AA11BB22CC33DD44",
        2_000_000_000,
    )
    .await;
    // An expired certificate does not count.
    add_cert(&w.store, "b@partner.example", "EE11BB22CC33DD44", 1_000).await;
    let mail = format!("Subject: [Secure] Q3 figures\r\nFrom: a@example.com\r\n{BODY}");
    let env = envelope(
        Direction::Outbound,
        "a@example.com",
        &["v@bank.example", "b@partner.example", "c@smime.example"],
    );
    let id = w.spool.inject(env, mail.as_bytes()).await.unwrap();
    let mut ready = w.spool.take_ready().unwrap();
    w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    assert!(matches!(w.spool.load(&id), Err(SpoolError::NotFound(_))));
    let mut got = std::collections::HashSet::new();
    got.insert(ready.recv().await.unwrap());
    got.insert(ready.recv().await.unwrap());
    assert!(ready.try_recv().is_err(), "the held copy is not ready");
    let all = w.spool.list().unwrap();
    assert_eq!(all.len(), 3);
    for e in &all {
        assert_eq!(e.state.parent, Some(id.clone()));
        let text = content(&w.spool, &e.envelope.id).await;
        assert_eq!(
            text,
            format!("Subject: Q3 figures\r\nFrom: a@example.com\r\n{BODY}")
        );
        match addrs(e).as_slice() {
            [v] if v == "v@bank.example" => {
                assert!(got.contains(&e.envelope.id));
                assert_eq!(e.state.stage, EntryStage::Ready);
                assert_eq!(e.state.recipients, vec![RcptState::Pending]);
                assert_eq!(
                    e.state.note.as_deref(),
                    Some("policy: TLS only, verified TLS required")
                );
            }
            [b] if b == "b@partner.example" => {
                assert!(got.contains(&e.envelope.id));
                assert!(
                    matches!(&e.state.recipients[0], RcptState::Failed { reason, .. } if reason.contains(" / Die vertrauliche Nachricht"))
                );
            }
            [c] if c == "c@smime.example" => {
                assert_eq!(e.state.stage, EntryStage::Held);
                let note = e.state.note.as_deref().unwrap();
                assert!(note.contains("AA11BB22CC33DD44"), "{note}");
                assert!(note.contains("S/MIME is not available"), "{note}");
            }
            other => panic!("unexpected copy for {other:?}"),
        }
    }
    let events = w
        .store
        .tracking()
        .for_message_id("<m1@example.com>")
        .await
        .unwrap();
    let method = |rcpt: &str| {
        events
            .iter()
            .find(|e| e.event.recipient.as_str() == rcpt && e.event.method != policy::QUEUED)
            .map(|e| e.event.clone())
            .unwrap()
    };
    assert_eq!(method("v@bank.example").method, "tls_only");
    assert_eq!(method("b@partner.example").method, "refused");
    assert!(
        method("b@partner.example")
            .reason
            .contains("EE11BB22CC33DD44 is not valid: expired")
    );
    assert_eq!(method("c@smime.example").method, "held");
}

#[tokio::test]
async fn plain_mail_with_a_known_key_goes_tls_only_in_place() {
    let w = world(PolicySettings::default()).await;
    add_cert(
        &w.store,
        "c@smime.example",
        "AA11BB22CC33DD44",
        2_000_000_000,
    )
    .await;
    let mail = format!("Subject: lunch\r\n{BODY}");
    let env = envelope(
        Direction::Outbound,
        "a@example.com",
        &["c@smime.example", "d@other.example"],
    );
    let id = w.spool.inject(env, mail.as_bytes()).await.unwrap();
    let mut ready = w.spool.take_ready().unwrap();
    assert_eq!(
        w.pipeline.process(&w.spool, &id, NOW).await.unwrap(),
        Verdict::Modified
    );
    assert_eq!(ready.recv().await, Some(id.clone()));
    assert_eq!(w.spool.len(), 1, "one copy: the original");
    assert_eq!(content(&w.spool, &id).await, mail);
    let events = w.store.tracking().for_queue_id(&id).await.unwrap();
    assert_eq!(events.len(), 2);
    let c = &events[0].event;
    assert_eq!(c.method, "tls_only");
    assert!(
        c.reason.contains("not S/MIME: S/MIME is not available"),
        "{}",
        c.reason
    );
}

#[tokio::test]
async fn an_interrupted_split_is_finished_without_duplicates() {
    let w = world(PolicySettings::default()).await;
    let mail = format!("Subject: [secure] x\r\n{BODY}");
    let env = envelope(
        Direction::Outbound,
        "a@example.com",
        &["b@partner.example", "c@other.example"],
    );
    let id = w.spool.inject(env.clone(), mail.as_bytes()).await.unwrap();
    // A crash after the first copy was committed: the original is still
    // Received with the note, and one copy exists.
    let mut state = w.spool.load(&id).unwrap().state;
    state.note = Some(SPLITTING.to_owned());
    w.spool.save_state(&id, &state).await.unwrap();
    let mut first = env.clone();
    first.recipients.truncate(1);
    w.spool
        .derive(&id, first, &b"x"[..], EntryState::new(1))
        .await
        .unwrap();
    w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    // Both refused (no method): one refusal copy for both, and the
    // earlier partial copy (for b only) is a different recipient set.
    let copies = w.spool.list().unwrap();
    assert!(copies.iter().all(|e| e.state.parent == Some(id.clone())));
    assert!(matches!(w.spool.load(&id), Err(SpoolError::NotFound(_))));
    let sets: Vec<Vec<String>> = copies.iter().map(addrs).collect();
    assert!(sets.contains(&vec![
        "b@partner.example".to_owned(),
        "c@other.example".to_owned()
    ]));

    // Run again with the exact copy present: nothing is made twice.
    let id2 = w.spool.inject(env.clone(), mail.as_bytes()).await.unwrap();
    let mut state = w.spool.load(&id2).unwrap().state;
    state.note = Some(SPLITTING.to_owned());
    w.spool.save_state(&id2, &state).await.unwrap();
    w.spool
        .derive(&id2, env.clone(), &b"x"[..], EntryState::new(2))
        .await
        .unwrap();
    let before = w.spool.len();
    w.pipeline.process(&w.spool, &id2, NOW).await.unwrap();
    assert_eq!(w.spool.len(), before - 1, "only the original went");
}

#[test]
fn method_kinds_have_stable_tokens() {
    let tokens: Vec<_> = MethodKind::HIERARCHY
        .into_iter()
        .chain([MethodKind::Plain])
        .map(policy::kind_token)
        .collect();
    assert_eq!(
        tokens,
        [
            "smime",
            "pgp",
            "domain_smime",
            "domain_pgp",
            "gina",
            "tls_only",
            "plain"
        ]
    );
}

#[tokio::test]
async fn internal_recipients_of_an_outbound_mail_get_it_unchanged() {
    let w = world(PolicySettings {
        internal_domains: vec!["example.com".into()],
        ..PolicySettings::default()
    })
    .await;
    let mail = format!("Subject: [secure] plan\r\n{BODY}");
    let env = envelope(
        Direction::Outbound,
        "a@example.com",
        &["colleague@example.com", "b@partner.example"],
    );
    let id = w.spool.inject(env, mail.as_bytes()).await.unwrap();
    w.pipeline.process(&w.spool, &id, NOW).await.unwrap();
    let all = w.spool.list().unwrap();
    assert_eq!(all.len(), 2);
    for e in &all {
        match addrs(e).as_slice() {
            [c] if c == "colleague@example.com" => {
                assert_eq!(e.state.stage, EntryStage::Ready);
                assert_eq!(e.state.recipients, vec![RcptState::Pending]);
                assert_eq!(e.state.note.as_deref(), Some("policy: plain"));
            }
            [b] if b == "b@partner.example" => {
                assert!(matches!(e.state.recipients[0], RcptState::Failed { .. }));
            }
            other => panic!("unexpected copy for {other:?}"),
        }
    }
    let events = w.store.tracking().for_queue_id(&id).await.unwrap();
    let plain = events
        .iter()
        .find(|e| {
            e.event.recipient.as_str() == "colleague@example.com"
                && e.event.method != policy::QUEUED
        })
        .unwrap();
    assert_eq!(plain.event.method, "plain");
    assert!(plain.event.reason.contains("internal domain"));
}

#[tokio::test]
async fn decide_without_classification_holds_instead_of_guessing() {
    let env = Arc::new(PolicyEnv::default());
    let p = Pipeline::new(
        "mx".into(),
        vec![Box::new(Decide(Arc::clone(&env))), Box::new(SplitCopies)],
    );
    let e = envelope(Direction::Outbound, "a@example.com", &["b@partner.example"]);
    let mut state = EntryState::new(1);
    let mut ps = PolicyState::default();
    let mut content = Content::from_bytes(b"Subject: [secure] x\r\n\r\n".to_vec());
    let v = p
        .apply_with(
            &e,
            &mut state,
            &mut content,
            &[],
            &mut ps,
            &mut Findings::default(),
            NOW,
        )
        .await;
    assert!(matches!(v, Verdict::Hold(why) if why.contains("without classification")));
    // With classification first, the same mail is decided (refused here).
    let p = Pipeline::standard_with("mx".into(), env);
    let mut ps = PolicyState::default();
    let mut content = Content::from_bytes(b"Subject: [secure] x\r\n\r\n".to_vec());
    p.apply_with(
        &e,
        &mut state,
        &mut content,
        &[],
        &mut ps,
        &mut Findings::default(),
        NOW,
    )
    .await;
    assert_eq!(ps.split.unwrap().refused.len(), 1);
    assert!(ps.classification.unwrap().confidential);
}
