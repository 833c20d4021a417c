//! Tests of the stage list and of `process`/`run` against a real temporary spool.

// Tests may panic on unexpected errors: that is how they fail.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use siegel_types::{Address, Origin, Recipient, ReversePath};

use super::*;

/// 2026-11-29 18:00:00 UTC.
const NOW: u64 = 1_795_975_200;

/// A stage that records that it ran and answers a fixed verdict.
struct Probe {
    name: &'static str,
    only: Option<Direction>,
    verdict: Verdict,
    log: Arc<Mutex<Vec<&'static str>>>,
}

impl Stage for Probe {
    fn name(&self) -> &'static str {
        self.name
    }
    fn applies_to(&self, d: Direction) -> bool {
        self.only.is_none_or(|o| o == d)
    }
    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        self.log.lock().unwrap().push(self.name);
        ctx.state.note = Some(format!(
            "seen headers: {}",
            String::from_utf8_lossy(ctx.content.header())
        ));
        Box::pin(std::future::ready(self.verdict.clone()))
    }
}

fn probe(
    name: &'static str,
    only: Option<Direction>,
    verdict: Verdict,
    log: &Arc<Mutex<Vec<&'static str>>>,
) -> Box<dyn Stage> {
    Box::new(Probe {
        name,
        only,
        verdict,
        log: Arc::clone(log),
    })
}

pub(crate) fn envelope(rcpts: &[&str]) -> Envelope {
    Envelope {
        id: QueueId::generate(),
        mail_from: ReversePath::Address(Address::parse("s@example.org").unwrap()),
        recipients: rcpts
            .iter()
            .map(|r| Recipient::new(Address::parse(r).unwrap()))
            .collect(),
        direction: Direction::Inbound,
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
        message_id: None,
    }
}

const MAIL: &[u8] = b"Subject: test\r\nFrom: s@example.org\r\n\r\nbody line\r\n";

async fn spool_with_mail(rcpts: &[&str]) -> (tempfile::TempDir, Spool, QueueId) {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let id = spool.inject(envelope(rcpts), MAIL).await.unwrap();
    (dir, spool, id)
}

#[tokio::test]
async fn stage_order_is_data_and_visible() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::new(
        "mx".into(),
        vec![
            probe("first", None, Verdict::Continue, &log),
            probe(
                "out-only",
                Some(Direction::Outbound),
                Verdict::Modified,
                &log,
            ),
            probe("second", None, Verdict::Continue, &log),
        ],
    );
    assert_eq!(p.stage_names(Direction::Inbound), ["first", "second"]);
    assert_eq!(
        p.stage_names(Direction::Outbound),
        ["first", "out-only", "second"]
    );
    let env = envelope(&["a@example.com"]);
    let mut state = EntryState::new(1);
    let mut content = Content::from_bytes(Vec::new());
    assert_eq!(
        p.apply(&env, &mut state, &mut content, NOW).await,
        Verdict::Continue
    );
    assert_eq!(*log.lock().unwrap(), ["first", "second"]);
    let standard = Pipeline::standard("mx".into());
    assert_eq!(
        standard.stage_names(Direction::Outbound),
        ["received", "classify", "decide", "split"]
    );
    assert_eq!(
        standard.stage_names(Direction::Inbound),
        ["received", "strip-x-siegel"]
    );
}

#[tokio::test]
async fn a_stopping_verdict_skips_later_stages_and_modified_is_kept() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::new(
        "mx".into(),
        vec![
            probe("a", None, Verdict::Modified, &log),
            probe("b", None, Verdict::Continue, &log),
        ],
    );
    let env = envelope(&["a@example.com"]);
    let mut content = Content::from_bytes(Vec::new());
    assert_eq!(
        p.apply(&env, &mut EntryState::new(1), &mut content, NOW)
            .await,
        Verdict::Modified
    );
    let p = Pipeline::new(
        "mx".into(),
        vec![
            probe("hold", None, Verdict::Hold("why".into()), &log),
            probe("never", None, Verdict::Continue, &log),
        ],
    );
    assert_eq!(
        p.apply(&env, &mut EntryState::new(1), &mut content, NOW)
            .await,
        Verdict::Hold("why".into())
    );
    assert!(!log.lock().unwrap().contains(&"never"));
}

#[test]
fn header_end_finds_the_blank_line() {
    assert_eq!(header_end(b"A: 1\r\nB: 2\r\n\r\nbody"), 12);
    assert_eq!(header_end(b"A: 1\nB: 2\n\nbody"), 10);
    assert_eq!(header_end(b"A: 1\r\n"), 6);
    assert_eq!(header_end(b"\r\nbody"), 0);
}

#[tokio::test]
async fn process_moves_entry_to_ready_and_announces_it() {
    let (_dir, spool, id) = spool_with_mail(&["a@example.com"]).await;
    let mut ready = spool.take_ready().unwrap();
    let p = Pipeline::standard("mx.siegel.test".into());
    assert_eq!(
        p.process(&spool, &id, NOW).await.unwrap(),
        Verdict::Modified
    );
    assert_eq!(ready.recv().await, Some(id.clone()));
    let state = spool.load(&id).unwrap().state;
    assert_eq!(state.stage, EntryStage::Ready);
    assert!(
        state
            .prepend
            .starts_with("Received: from client.example.org ([192.0.2.7])"),
        "{}",
        state.prepend
    );
    assert!(
        state
            .prepend
            .replace("\r\n\t", " ")
            .contains(&format!("id {id} for <a@example.com>;"))
    );
    // Processing is not repeated for an entry past the pipeline.
    assert!(matches!(
        p.process(&spool, &id, NOW).await,
        Err(PipelineError::NotReceived { .. })
    ));
}

#[tokio::test]
async fn stages_see_only_the_header_section() {
    let (_dir, spool, id) = spool_with_mail(&["a@example.com"]).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::new("mx".into(), vec![probe("p", None, Verdict::Continue, &log)]);
    p.process(&spool, &id, NOW).await.unwrap();
    let note = spool.load(&id).unwrap().state.note.unwrap();
    assert_eq!(
        note,
        "seen headers: Subject: test\r\nFrom: s@example.org\r\n"
    );
}

#[tokio::test]
async fn reject_marks_every_recipient_failed_and_hands_over_for_the_dsn() {
    let (_dir, spool, id) = spool_with_mail(&["a@example.com", "b@example.com"]).await;
    let mut ready = spool.take_ready().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let p = Pipeline::new(
        "mx".into(),
        vec![probe(
            "virus",
            None,
            Verdict::Reject("virus found".into()),
            &log,
        )],
    );
    assert_eq!(
        p.process(&spool, &id, NOW).await.unwrap(),
        Verdict::Reject("virus found".into())
    );
    assert_eq!(ready.recv().await, Some(id.clone()));
    let state = spool.load(&id).unwrap().state;
    assert_eq!(state.stage, EntryStage::Ready);
    assert_eq!(state.recipients.len(), 2);
    for r in &state.recipients {
        assert_eq!(
            *r,
            RcptState::Failed {
                at: NOW,
                reason: "virus found".into(),
                reply: None,
                dsn_queued: false
            }
        );
    }
}

#[tokio::test]
async fn hold_parks_and_tempfail_leaves_received() {
    let (_dir, spool, id) = spool_with_mail(&["a@example.com"]).await;
    let mut ready = spool.take_ready().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let tempfail = Pipeline::new(
        "mx".into(),
        vec![
            Box::new(ReceivedHeader),
            probe("t", None, Verdict::TempFail("scanner down".into()), &log),
        ],
    );
    assert_eq!(
        tempfail.process(&spool, &id, NOW).await.unwrap(),
        Verdict::TempFail("scanner down".into())
    );
    assert_eq!(
        spool.load(&id).unwrap().state,
        EntryState::new(1),
        "nothing stored on TempFail"
    );
    let hold = Pipeline::new(
        "mx".into(),
        vec![probe("h", None, Verdict::Hold("quarantine".into()), &log)],
    );
    hold.process(&spool, &id, NOW).await.unwrap();
    let state = spool.load(&id).unwrap().state;
    assert_eq!(state.stage, EntryStage::Held);
    assert_eq!(state.note.as_deref(), Some("quarantine"));
    assert!(
        ready.try_recv().is_err(),
        "held mail must not reach the scheduler"
    );
}

#[tokio::test]
async fn worker_recovers_old_mail_and_processes_new_mail_once() {
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(dir.path()).unwrap();
    let mut ready = spool.take_ready().unwrap();
    // Committed before the worker starts: both listed and announced.
    let early = spool
        .inject(envelope(&["a@example.com"]), MAIL)
        .await
        .unwrap();
    // Left Received by a "previous run" (a restarted spool does not announce it).
    let before_crash = {
        let old = Spool::open(dir.path()).unwrap();
        old.inject(envelope(&["a@example.com"]), MAIL)
            .await
            .unwrap()
    };
    let worker = tokio::spawn(run(
        Arc::new(Pipeline::standard("mx".into())),
        spool.clone(),
    ));
    let late = spool
        .inject(envelope(&["a@example.com"]), MAIL)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            tokio::time::timeout(Duration::from_secs(10), ready.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    got.sort();
    let mut want = vec![early, before_crash, late];
    want.sort();
    assert_eq!(got, want);
    // No id is handed to the scheduler twice.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ready.recv())
            .await
            .is_err()
    );
    for e in spool.list().unwrap() {
        assert_eq!(e.state.stage, EntryStage::Ready);
        assert_eq!(e.state.prepend.matches("Received:").count(), 1);
    }
    worker.abort();
}
