//! The quarantine on a real spool: held entries with a `quarantine:` note.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use siegel_filter::quarantine::{self, QuarantineError};
use siegel_filter::{Action, Rules, VirusScan, decide};
use siegel_spool::{Spool, Stage};
use siegel_types::{Address, Direction, Envelope, Origin, QueueId, Recipient, ReversePath};

fn envelope() -> Envelope {
    Envelope {
        id: QueueId::generate(),
        mail_from: ReversePath::Address(Address::parse("sender@example.org").unwrap()),
        recipients: vec![Recipient::new(Address::parse("bob@example.com").unwrap())],
        direction: Direction::Inbound,
        origin: Origin::Smtp {
            peer: "192.0.2.1:4000".into(),
            helo: "client.example.org".into(),
            tls: false,
            auth: None,
        },
        received_at: 0,
        size: 0,
        body_8bit: false,
        smtputf8: false,
        env_id: None,
        ret: None,
        message_id: None,
    }
}

/// Commits a mail and holds it with `note`, as the pipeline does with a
/// Hold verdict.
async fn held(spool: &Spool, note: &str) -> QueueId {
    let mut inc = spool.begin().await.unwrap();
    inc.write(b"Subject: x\r\n\r\nbody\r\n").await.unwrap();
    let id = inc.commit(envelope()).await.unwrap();
    let mut state = spool.load(&id).unwrap().state;
    state.stage = Stage::Held;
    state.note = Some(note.into());
    spool.save_state(&id, &state).await.unwrap();
    id
}

#[tokio::test]
async fn quarantined_mail_is_listed_released_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();

    // The note a quarantining verdict carries.
    let mut rules = Rules::from(&siegel_config::Config::defaults().filter);
    rules.virus_action = siegel_config::VirusAction::Quarantine;
    let verdict = decide(
        &rules,
        Some(Ok(VirusScan::Infected {
            signature: "Eicar-Signature".into(),
        })),
        None,
    );
    let Action::Quarantine { note } = verdict.action else {
        panic!()
    };
    let virus = held(&spool, &note).await;
    let spam = held(&spool, "quarantine: spam, score 12.0 (threshold 5.0)").await;
    let policy_hold = held(&spool, "no method that may carry this mail is available").await;

    let listed: Vec<QueueId> = quarantine::list(&spool)
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&virus) && listed.contains(&spam));

    // Other held mail is not the quarantine's business.
    match quarantine::release(&spool, &policy_hold).await {
        Err(QuarantineError::NotQuarantined { what, .. }) => {
            assert!(what.starts_with("held: no method"), "{what}")
        }
        other => panic!("{other:?}"),
    }

    quarantine::release(&spool, &virus).await.unwrap();
    let state = spool.load(&virus).unwrap().state;
    assert_eq!(state.stage, Stage::Received, "back to the pipeline");
    assert!(quarantine::was_released(&state), "{:?}", state.note);
    assert_eq!(quarantine::list(&spool).unwrap().len(), 1);
    // Released is no longer quarantined.
    assert!(matches!(
        quarantine::delete(&spool, &virus).await,
        Err(QuarantineError::NotQuarantined { .. })
    ));

    quarantine::delete(&spool, &spam).await.unwrap();
    assert!(spool.load(&spam).is_err());
    assert!(quarantine::list(&spool).unwrap().is_empty());
    // The policy's hold is untouched.
    assert_eq!(spool.load(&policy_hold).unwrap().state.stage, Stage::Held);
    assert!(!quarantine::was_released(
        &spool.load(&policy_hold).unwrap().state
    ));
}
