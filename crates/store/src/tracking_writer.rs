//! Group commit for the audit trail.
//!
//! Every outbound mail produces a tracking event per recipient (the
//! decision) and per delivery attempt (the result). Committed one by one,
//! each costs an fsync, and the trail, not the mail, becomes the relay's
//! bottleneck. The writer collects whatever events are waiting when it is
//! free, stores them with one [`Tracking::record_many`](crate::Tracking::record_many)
//! (one transaction), and answers every waiter of that batch — the same
//! idea as the spool's group-committed directory fsync.

use tokio::sync::{mpsc, oneshot};

use crate::{Store, TrackingEvent};

/// Most events stored in one transaction.
const MAX_BATCH: usize = 2_000;

type Ack = oneshot::Sender<Result<(), String>>;

/// A handle on the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct TrackingWriter {
    tx: mpsc::UnboundedSender<(Vec<TrackingEvent>, Option<Ack>)>,
}

impl TrackingWriter {
    /// Starts the writer task on the current tokio runtime. It ends when
    /// every handle is dropped, after storing what was sent.
    pub fn spawn(store: Store) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Self { tx }
    }

    /// Stores the events and returns once they are committed (with the
    /// events of other callers that were waiting at the same moment).
    pub async fn record_all(&self, events: Vec<TrackingEvent>) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send((events, Some(ack)))
            .map_err(|_| "the tracking writer has stopped".to_owned())?;
        done.await
            .map_err(|_| "the tracking writer has stopped".to_owned())?
    }

    /// Hands the events to the writer without waiting for the commit (for
    /// callers that must not be slowed down, such as delivery); a failure
    /// is logged by the writer.
    pub fn submit(&self, events: Vec<TrackingEvent>) {
        if !events.is_empty() && self.tx.send((events, None)).is_err() {
            tracing::error!(target: "siegel::store", "tracking writer stopped; events dropped");
        }
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<(Vec<TrackingEvent>, Option<Ack>)>) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, 256).await > 0 {
        let batch = std::mem::take(&mut waiting);
        let events: Vec<TrackingEvent> =
            batch.iter().flat_map(|(e, _)| e.iter().cloned()).collect();
        if events.len() <= MAX_BATCH && store.tracking().record_many(&events).await.is_ok() {
            for ack in batch.into_iter().filter_map(|(_, ack)| ack) {
                let _ = ack.send(Ok(()));
            }
            continue;
        }
        // Too many, or one caller's events were refused: store each caller's
        // events on their own, so that one bad event costs only its caller.
        for (events, ack) in batch {
            let mut result = Ok(());
            for chunk in events.chunks(MAX_BATCH) {
                if let Err(e) = store.tracking().record_many(chunk).await {
                    tracing::error!(target: "siegel::store", error = %e, events = chunk.len(), "cannot store tracking events");
                    result = Err(e.to_string());
                }
            }
            if let Some(ack) = ack {
                let _ = ack.send(result);
            }
        }
    }
}
