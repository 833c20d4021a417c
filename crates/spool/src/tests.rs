//! Tests of the spool against a real temporary directory.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use siegel_types::{Address, Direction, Origin, Recipient, ReversePath, SmtpReply};

use super::*;

fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        mail_from: ReversePath::Address(Address::parse("sender@example.org").unwrap()),
        recipients: rcpts
            .iter()
            .map(|r| Recipient::new(Address::parse(r).unwrap()))
            .collect(),
        direction: Direction::Inbound,
        origin: Origin::Smtp {
            peer: "192.0.2.1:4000".into(),
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
        message_id: None,
    }
}

async fn commit(spool: &Spool, content: &[u8]) -> QueueId {
    let mut inc = spool.begin().await.unwrap();
    inc.write(content).await.unwrap();
    inc.commit(envelope(&["a@example.com", "b@example.net"]))
        .await
        .unwrap()
}

async fn content_of(spool: &Spool, id: &QueueId) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let (file, len) = spool.open_content(id).await.unwrap();
    let mut out = Vec::new();
    file.take(len).read_to_end(&mut out).await.unwrap();
    out
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn commit_list_load_roundtrip() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut received = spool.take_received().unwrap();
    assert!(
        spool.take_received().is_none(),
        "the receiver is handed out once"
    );
    let content = b"Subject: hi\r\n\r\nbody\r\n";
    let mut inc = spool.begin().await.unwrap();
    let id = inc.id().clone();
    inc.write(&content[..5]).await.unwrap();
    inc.write(&content[5..]).await.unwrap();
    assert_eq!(inc.size(), content.len() as u64);
    assert!(
        spool.list().unwrap().is_empty(),
        "uncommitted mail must not be visible"
    );
    let env = envelope(&["a@example.com"]);
    let committed = inc.commit(env.clone()).await.unwrap();
    assert_eq!(committed, id);
    assert_eq!(received.recv().await, Some(id.clone()));
    assert_eq!(spool.len(), 1);
    assert!(files_in(&dir.path().join("incoming")).is_empty());

    // A fresh instance (as after a restart) sees the same.
    let again = Spool::open(dir.path()).unwrap();
    assert_eq!(again.len(), 1);
    let list = again.list().unwrap();
    assert_eq!(list.len(), 1);
    let entry = again.load(&id).unwrap();
    assert_eq!(entry, list[0]);
    assert_eq!(entry.envelope.id, id);
    assert_eq!(entry.envelope.size, content.len() as u64);
    assert_eq!(entry.envelope.recipients, env.recipients);
    assert!(entry.envelope.received_at > 0);
    assert_eq!(entry.state, EntryState::new(1));
    assert_eq!(content_of(&again, &id).await, content);
}

#[tokio::test]
async fn list_is_oldest_first_and_remove_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let a = commit(&spool, b"a").await;
    let b = commit(&spool, b"b").await;
    let ids: Vec<QueueId> = spool
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(ids, vec![a.clone(), b.clone()]);
    spool.save_state(&a, &EntryState::new(2)).await.unwrap();
    spool.remove(&a).await.unwrap();
    assert_eq!(spool.len(), 1);
    assert!(matches!(spool.load(&a), Err(SpoolError::NotFound(_))));
    assert!(matches!(
        spool.remove(&a).await,
        Err(SpoolError::NotFound(_))
    ));
    assert!(!dir.path().join("state").join(format!("{a}.json")).exists());
    assert!(matches!(
        spool.save_state(&a, &EntryState::new(2)).await,
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn large_mail_is_streamed_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let chunk = vec![b'x'; 1024 * 1024];
    let mut inc = spool.begin().await.unwrap();
    let partial = dir.path().join("incoming").join(inc.id().as_str());
    for i in 0..100u64 {
        inc.write(&chunk).await.unwrap();
        // Everything but at most one buffer is already on disk.
        let on_disk = std::fs::metadata(&partial).unwrap().len();
        assert!(
            on_disk + 64 * 1024 >= (i + 1) * chunk.len() as u64,
            "content held in memory"
        );
    }
    let id = inc.commit(envelope(&["a@example.com"])).await.unwrap();
    let total = std::fs::metadata(dir.path().join("queue").join(id.as_str()))
        .unwrap()
        .len();
    assert!(
        total > 100 * 1024 * 1024 && total < 100 * 1024 * 1024 + 4096,
        "size {total}"
    );
    let (_, len) = spool.open_content(&id).await.unwrap();
    assert_eq!(len, 100 * 1024 * 1024);
}

#[tokio::test]
async fn crash_leftovers_in_incoming_vanish_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let kept = commit(&spool, b"kept").await;
    let mut inc = spool.begin().await.unwrap();
    inc.write(&vec![b'y'; 200 * 1024]).await.unwrap();
    // kill -9: no Drop runs.
    std::mem::forget(inc);
    std::fs::write(dir.path().join("incoming").join("junk"), b"half a mail").unwrap();
    std::fs::write(dir.path().join("state").join(".half.tmp"), b"{").unwrap();
    assert_eq!(files_in(&dir.path().join("incoming")).len(), 2);

    let restarted = Spool::open(dir.path()).unwrap();
    assert!(files_in(&dir.path().join("incoming")).is_empty());
    assert!(files_in(&dir.path().join("state")).is_empty());
    let ids: Vec<QueueId> = restarted
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(ids, vec![kept]);
}

#[tokio::test]
async fn dropped_or_aborted_mail_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut inc = spool.begin().await.unwrap();
    inc.write(&vec![b'z'; 100 * 1024]).await.unwrap();
    drop(inc);
    let mut inc = spool.begin().await.unwrap();
    inc.write(&vec![b'z'; 100 * 1024]).await.unwrap();
    inc.abort().await;
    assert!(files_in(&dir.path().join("incoming")).is_empty());
    assert!(spool.is_empty());
}

#[tokio::test]
async fn truncated_data_file_goes_to_corrupt_and_list_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let good = commit(&spool, b"good mail").await;
    let bad = commit(&spool, b"this one will be damaged").await;
    let bad_path = dir.path().join("queue").join(bad.as_str());
    let len = std::fs::metadata(&bad_path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&bad_path)
        .unwrap()
        .set_len(len - 10)
        .unwrap();
    let restarted = Spool::open(dir.path()).unwrap();
    assert_eq!(restarted.len(), 2);
    let ids: Vec<QueueId> = restarted
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.envelope.id)
        .collect();
    assert_eq!(ids, vec![good]);
    assert_eq!(restarted.len(), 1);
    assert!(dir.path().join("corrupt").join(bad.as_str()).exists());
    assert!(!bad_path.exists());
    assert!(matches!(restarted.load(&bad), Err(SpoolError::NotFound(_))));
}

#[tokio::test]
async fn garbage_and_tiny_files_are_corrupt_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let (a, b) = (QueueId::generate(), QueueId::generate());
    std::fs::write(dir.path().join("queue").join(a.as_str()), b"abc").unwrap();
    let mut fake = b"content".to_vec();
    fake.extend_from_slice(b"{not json");
    fake.extend_from_slice(&format::footer(7, 9));
    std::fs::write(dir.path().join("queue").join(b.as_str()), fake).unwrap();
    assert!(matches!(spool.load(&a), Err(SpoolError::Corrupt { .. })));
    assert!(matches!(
        spool.open_content(&b).await,
        Err(SpoolError::Corrupt { .. })
    ));
    assert!(spool.list().unwrap().is_empty());
    assert_eq!(files_in(&dir.path().join("corrupt")).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_fifty_concurrent_commits_are_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move {
                let body = format!("mail number {i}\r\n").repeat(500);
                (commit(&spool, body.as_bytes()).await, body)
            })
        })
        .collect();
    let mut expected = Vec::new();
    for t in tasks {
        expected.push(t.await.unwrap());
    }
    assert_eq!(spool.len(), 50);
    // Every commit waited for a directory fsync; batching can only reduce their number.
    assert!(spool.dir_fsyncs() <= 50 && spool.dir_fsyncs() >= 1);
    let restarted = Spool::open(dir.path()).unwrap();
    assert_eq!(restarted.list().unwrap().len(), 50);
    for (id, body) in expected {
        assert_eq!(content_of(&restarted, &id).await, body.as_bytes());
    }
}

#[tokio::test]
async fn state_save_load_and_ready_channel() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut ready = spool.take_ready().unwrap();
    let id = commit(&spool, b"x").await;
    let state = EntryState {
        stage: Stage::Held,
        recipients: vec![
            RcptState::Delivered {
                at: 5,
                host: "mx.example.com".into(),
                reply: SmtpReply::new(250, "2.0.0", "ok"),
            },
            RcptState::Failed {
                at: 6,
                reason: "no such user".into(),
                reply: None,
                dsn_queued: true,
            },
        ],
        prepend: "Received: by x\r\n".into(),
        attempts: 3,
        next_attempt: 99,
        note: Some("held for review".into()),
        parent: None,
    };
    spool.save_state(&id, &state).await.unwrap();
    assert_eq!(
        Spool::open(dir.path()).unwrap().load(&id).unwrap().state,
        state
    );
    spool.mark_ready(&id, state.clone()).await.unwrap();
    assert_eq!(ready.recv().await, Some(id.clone()));
    assert_eq!(spool.load(&id).unwrap().state.stage, Stage::Ready);
    assert!(
        files_in(&dir.path().join("state"))
            .iter()
            .all(|n| !n.starts_with('.'))
    );
}

#[tokio::test]
async fn unusable_state_file_falls_back_to_initial_state() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = commit(&spool, b"x").await;
    // One recipient state for two recipients.
    let mut wrong = EntryState::new(1);
    wrong.attempts = 7;
    std::fs::write(
        dir.path().join("state").join(format!("{id}.json")),
        serde_json::to_vec(&wrong).unwrap(),
    )
    .unwrap();
    // Read as after a restart: this process remembers the state it knows.
    let reopened = Spool::open(dir.path()).unwrap();
    assert_eq!(reopened.load(&id).unwrap().state, EntryState::new(2));
    assert!(
        dir.path()
            .join("corrupt")
            .join(format!("{id}.state.json"))
            .exists()
    );
}

#[tokio::test]
async fn control_requests_apply_directly_when_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    assert!(!spool.is_served());
    let id = commit(&spool, b"x").await;
    let mut state = EntryState::new(2);
    state.next_attempt = 12345;
    state.recipients[0] = RcptState::Deferred {
        attempts: 2,
        last_error: "451 later".into(),
    };
    state.recipients[1] = RcptState::Failed {
        at: 1,
        reason: "550".into(),
        reply: None,
        dsn_queued: false,
    };
    spool.save_state(&id, &state).await.unwrap();
    spool.request(Control::Retry(id.clone())).await.unwrap();
    let after = spool.load(&id).unwrap().state;
    assert_eq!(after.next_attempt, 0);
    assert_eq!(after.recipients[0], RcptState::Pending);
    assert_eq!(
        after.recipients[1], state.recipients[1],
        "permanent failures stay failed"
    );
    spool.request(Control::Delete(id.clone())).await.unwrap();
    assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
    assert!(files_in(&dir.path().join("control")).is_empty());
}

#[tokio::test]
async fn control_requests_reach_the_serving_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Spool::open(dir.path()).unwrap();
    gateway.claim().unwrap();
    let mut control = gateway.take_control().unwrap();
    let id = commit(&gateway, b"x").await;
    let cli = Spool::open(dir.path()).unwrap();
    assert!(cli.is_served());
    cli.request(Control::Delete(id.clone())).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), control.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(Control::Delete(id.clone())));
    // Only handed over: the gateway decides, nothing was deleted yet.
    assert!(gateway.load(&id).is_ok());
    assert!(files_in(&dir.path().join("control")).is_empty());
}

#[test]
fn claim_is_exclusive_between_instances() {
    let dir = tempfile::tempdir().unwrap();
    let first = Spool::open(dir.path()).unwrap();
    let second = Spool::open(dir.path()).unwrap();
    assert!(!second.is_served());
    first.claim().unwrap();
    first.claim().unwrap(); // idempotent for the holder
    assert!(first.is_served());
    assert!(second.is_served());
    assert!(matches!(second.claim(), Err(SpoolError::AlreadyServed(_))));
    drop(first);
    second.claim().unwrap();
}

#[tokio::test]
async fn cli_opening_a_served_spool_leaves_mails_in_progress_alone() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Spool::open(dir.path()).unwrap();
    gateway.claim().unwrap();
    let mut inc = gateway.begin().await.unwrap();
    inc.write(&vec![b'q'; 200 * 1024]).await.unwrap();
    let cli = Spool::open(dir.path()).unwrap();
    assert_eq!(files_in(&dir.path().join("incoming")).len(), 1);
    let id = inc.commit(envelope(&["a@example.com"])).await.unwrap();
    assert_eq!(cli.load(&id).unwrap().envelope.size, 200 * 1024);
}

#[tokio::test]
async fn derive_commits_a_ready_copy_with_its_parent_and_skips_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut received = spool.take_received().unwrap();
    let mut ready = spool.take_ready().unwrap();
    let parent = commit(&spool, b"Subject: x\r\n\r\nbody\r\n").await;
    assert_eq!(received.recv().await, Some(parent.clone()));
    // Bigger than one read buffer, so streaming in pieces is exercised.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut state = EntryState::new(0);
    state.stage = Stage::Ready;
    state.prepend = "Received: by x\r\n".into();
    let child = spool
        .derive(&parent, envelope(&["a@example.com"]), &big[..], state)
        .await
        .unwrap();
    assert_ne!(child, parent);
    assert_eq!(ready.recv().await, Some(child.clone()));
    assert!(received.try_recv().is_err(), "a derived copy is not re-run");
    let entry = Spool::open(dir.path()).unwrap().load(&child).unwrap();
    assert_eq!(entry.state.stage, Stage::Ready);
    assert_eq!(entry.state.parent, Some(parent.clone()));
    assert_eq!(entry.state.recipients, vec![RcptState::Pending]);
    assert_eq!(entry.state.prepend, "Received: by x\r\n");
    assert_eq!(entry.envelope.size, big.len() as u64);
    assert_eq!(content_of(&spool, &child).await, big);
    assert_eq!(spool.len(), 2);
    // A held copy is not handed to the scheduler.
    let mut held = EntryState::new(1);
    held.stage = Stage::Held;
    let h = spool
        .derive(&parent, envelope(&["b@example.com"]), &b"x"[..], held)
        .await
        .unwrap();
    assert_eq!(spool.load(&h).unwrap().state.stage, Stage::Held);
    assert!(ready.try_recv().is_err());
}

/// `mark_ready` is not fsync'ed. For a mail this process committed it is
/// not even written: the ready state lives in memory, and a restart finds
/// the entry at its initial state, so the pipeline runs again.
#[tokio::test]
async fn the_ready_state_of_a_mail_in_flight_stays_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = commit(&spool, b"in flight").await;
    let mut state = EntryState::new(2);
    state.prepend = "Received: by x\r\n".into();
    spool.mark_ready(&id, state.clone()).await.unwrap();
    state.stage = Stage::Ready;
    assert_eq!(spool.load(&id).unwrap().state, state);
    assert_eq!(spool.in_flight(), 1);
    assert!(files_in(&dir.path().join("state")).is_empty());
    assert_eq!(content_of(&spool, &id).await, b"in flight");

    let reopened = Spool::open(dir.path()).unwrap();
    assert_eq!(reopened.load(&id).unwrap().state, EntryState::new(2));

    // A durable state write makes the file the truth and forgets the memo.
    state.attempts = 1;
    spool.save_state(&id, &state).await.unwrap();
    assert_eq!(spool.in_flight(), 0);
    assert_eq!(
        Spool::open(dir.path()).unwrap().load(&id).unwrap().state,
        state
    );
    assert_eq!(spool.load(&id).unwrap().state, state);
    spool.remove(&id).await.unwrap();
    assert!(files_in(&dir.path().join("state")).is_empty());
    assert!(matches!(spool.load(&id), Err(SpoolError::NotFound(_))));
}

/// The memory of mails in flight is bounded: past its cap a new mail is
/// not remembered and its ready state goes to a file, as for any entry
/// read from disk.
#[tokio::test]
async fn mails_past_the_memos_cap_take_the_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    for _ in 0..crate::memo::MEMO_MAX {
        spool.remember(envelope(&["a@example.com"]), 1, None);
    }
    assert_eq!(spool.in_flight(), crate::memo::MEMO_MAX);
    let id = commit(&spool, b"one too many").await;
    assert_eq!(spool.in_flight(), crate::memo::MEMO_MAX);
    spool.mark_ready(&id, EntryState::new(2)).await.unwrap();
    assert_eq!(
        files_in(&dir.path().join("state")),
        vec![format!("{id}.json")]
    );
    assert_eq!(spool.load(&id).unwrap().state.stage, Stage::Ready);
    assert_eq!(content_of(&spool, &id).await, b"one too many");
}

/// For an entry read from disk (after a restart, or after a durable state
/// write), the lazy ready state is a file written without fsync: a crash
/// may lose or tear it. Either way the entry must come back at its initial
/// state, so the pipeline runs again, and never as lost or half-ready mail.
#[tokio::test]
async fn lost_or_torn_ready_state_brings_the_entry_back_to_received() {
    let dir = tempfile::tempdir().unwrap();
    let first = Spool::open(dir.path()).unwrap();
    let lost = commit(&first, b"lost").await;
    let torn = commit(&first, b"torn").await;
    drop(first);
    let spool = Spool::open(dir.path()).unwrap();
    for id in [&lost, &torn] {
        let mut state = EntryState::new(2);
        state.prepend = "Received: by x\r\n".into();
        spool.mark_ready(id, state).await.unwrap();
        assert_eq!(spool.load(id).unwrap().state.stage, Stage::Ready);
    }
    std::fs::remove_file(dir.path().join("state").join(format!("{lost}.json"))).unwrap();
    std::fs::write(
        dir.path().join("state").join(format!("{torn}.json")),
        b"{\"stage\":\"Rea",
    )
    .unwrap();

    let reopened = Spool::open(dir.path()).unwrap();
    for id in [&lost, &torn] {
        let entry = reopened.load(id).unwrap();
        assert_eq!(entry.state, EntryState::new(2), "{id}");
        assert_eq!(entry.state.stage, Stage::Received);
    }
    assert_eq!(content_of(&reopened, &torn).await, b"torn");
}

/// A held entry as the pipeline leaves it: a `Received:` line prepended and
/// the reason in the note.
async fn held(spool: &Spool, note: &str) -> QueueId {
    let id = commit(spool, b"Subject: x\r\n\r\nbody\r\n").await;
    let mut state = spool.load(&id).unwrap().state;
    state.stage = Stage::Held;
    state.prepend = "Received: from x by y\r\n".into();
    state.note = Some(note.into());
    spool.save_state(&id, &state).await.unwrap();
    id
}

#[tokio::test]
async fn release_sends_a_held_entry_back_to_the_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut received = spool.take_received().unwrap();
    let id = held(&spool, "quarantine: virus Eicar").await;
    assert_eq!(received.recv().await, Some(id.clone()), "the commit itself");

    spool.release(&id).await.unwrap();
    let state = spool.load(&id).unwrap().state;
    assert_eq!(state.stage, Stage::Received);
    assert_eq!(
        state.note.as_deref(),
        Some("released: quarantine: virus Eicar")
    );
    assert!(
        state.prepend.is_empty(),
        "the pipeline adds its headers again"
    );
    assert_eq!(state.recipients.len(), 2);
    let again = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
    assert_eq!(
        again.unwrap(),
        Some(id.clone()),
        "announced to the pipeline"
    );
    assert_eq!(content_of(&spool, &id).await, b"Subject: x\r\n\r\nbody\r\n");

    // Released once, it is no longer held: a second release is refused.
    match spool.release(&id).await {
        Err(SpoolError::NotHeld { stage, .. }) => assert_eq!(stage, Stage::Received),
        other => panic!("{other:?}"),
    }
    let missing = QueueId::generate();
    assert!(matches!(
        spool.release(&missing).await,
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn release_through_a_running_gateway_is_carried_out_by_its_spool() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Spool::open(dir.path()).unwrap();
    gateway.claim().unwrap();
    let mut received = gateway.take_received().unwrap();
    let mut control = gateway.take_control().unwrap();
    let id = held(&gateway, "quarantine: spam").await;
    assert_eq!(received.recv().await, Some(id.clone()));

    let cli = Spool::open(dir.path()).unwrap();
    cli.release(&id).await.unwrap();
    // The CLI only wrote a request; the gateway's poller carries it out.
    let got = tokio::time::timeout(Duration::from_secs(5), received.recv()).await;
    assert_eq!(got.unwrap(), Some(id.clone()));
    let state = gateway.load(&id).unwrap().state;
    assert_eq!(state.stage, Stage::Received);
    assert_eq!(state.note.as_deref(), Some("released: quarantine: spam"));
    assert!(files_in(&dir.path().join("control")).is_empty());
    // Not forwarded to the scheduler: it is none of its business.
    assert!(control.try_recv().is_err());
}
