//! The pipeline seam: every content stage (filter, classify, decrypt,
//! verify, disclaimer, sign, encrypt, GINA, DKIM) plugs in here.
//!
//! A stage is a type implementing [`Stage`]; the order is the list given to
//! [`Pipeline::new`], so it is data that can be printed and tested rather
//! than the order of statements in one long function. Stages see the
//! envelope, the header section and the entry's mutable state, and answer a
//! [`Verdict`]. They do not rewrite the content file: header additions go to
//! `EntryState::prepend`, which delivery writes in front of the content.
//!
//! [`Pipeline::process`] takes one committed (`Received`) spool entry through
//! the stages and stores the outcome; [`run`] is the worker that does this
//! for every new mail and, after a crash, for every mail left `Received`.

pub mod stages;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_spool::{EntryState, RcptState, Spool, SpoolError, Stage as EntryStage};
use siegel_types::{Direction, Envelope, QueueId};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

pub use stages::ReceivedHeader;

/// At most this much of the content is read as the header section: headers
/// larger than this are abuse, and stages must not make us read 100 MB.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// How many mails the worker processes at the same time.
const WORKERS: usize = 4;

/// How long the worker waits before retrying a mail after a temporary failure.
const RETRY_DELAY: Duration = Duration::from_secs(60);

/// Why processing an entry failed (as opposed to a stage's verdict).
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Loading or storing the entry failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The entry is past the pipeline already (processed before, or held):
    /// running it again would prepend twice or deliver twice.
    #[error("queue entry {id} is {stage:?}, not Received")]
    NotReceived { id: QueueId, stage: EntryStage },
    /// Reading the content's header section failed.
    #[error("reading the headers of {id}: {source}")]
    Read {
        id: QueueId,
        #[source]
        source: std::io::Error,
    },
}

/// What a stage sees of a mail.
pub struct MessageCtx<'a> {
    pub envelope: &'a Envelope,
    /// Mutable: stages add header lines to `prepend`, set a `note`, or
    /// change per-recipient states.
    pub state: &'a mut EntryState,
    /// The content's header section as stored (with its final CRLF, without
    /// the blank line), at most [`MAX_HEADER_BLOCK`] octets.
    pub header_block: &'a [u8],
    /// This gateway's name, for trace headers.
    pub hostname: &'a str,
    /// Unix seconds; injected so that tests pin the clock.
    pub now: u64,
}

/// A stage's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed; go on.
    Continue,
    /// The state was changed (e.g. a header prepended); go on.
    Modified,
    /// Park the entry (`Stage::Held`) with this note; later stages do not run.
    Hold(String),
    /// Bounce every recipient with this reason; later stages do not run.
    Reject(String),
    /// Try the whole pipeline again later (a dependency is down).
    TempFail(String),
}

/// One step of the pipeline. Stages are stateless per mail (any state
/// lives in `MessageCtx`) so one instance serves all workers.
pub trait Stage: Send + Sync {
    /// Short, stable name for logs and `stage_names`.
    fn name(&self) -> &'static str;
    /// Whether the stage runs for mail going this way.
    fn applies_to(&self, d: Direction) -> bool;
    /// Does the work. Must not panic on any content: it is outside input.
    fn run(&self, ctx: &mut MessageCtx<'_>) -> Verdict;
}

/// The ordered list of stages, and the gateway name they use.
pub struct Pipeline {
    hostname: String,
    stages: Vec<Box<dyn Stage>>,
}

impl Pipeline {
    pub fn new(hostname: String, stages: Vec<Box<dyn Stage>>) -> Self {
        Self { hostname, stages }
    }

    /// The production pipeline.
    ///
    /// Today only the trace header. The planned order (DESIGN.md, practice
    /// 4: verify before anything rewrites, disclaimer before signing, DKIM last):
    /// - inbound:  received → filter → decrypt → verify → harvest → stamp
    /// - outbound: received → filter → classify → lft → disclaimer → sign →
    ///   decide per recipient → encrypt/GINA → dkim
    pub fn standard(hostname: String) -> Self {
        Self::new(hostname, vec![Box::new(ReceivedHeader)])
    }

    /// The names of the stages that run for direction `d`, in order.
    pub fn stage_names(&self, d: Direction) -> Vec<&'static str> {
        self.stages
            .iter()
            .filter(|s| s.applies_to(d))
            .map(|s| s.name())
            .collect()
    }

    /// Runs the stages on an in-memory state and returns the overall
    /// verdict: the first Hold/Reject/TempFail stops the run; otherwise
    /// Modified if any stage modified, else Continue.
    pub fn apply(
        &self,
        envelope: &Envelope,
        state: &mut EntryState,
        header_block: &[u8],
        now: u64,
    ) -> Verdict {
        let mut overall = Verdict::Continue;
        for stage in self
            .stages
            .iter()
            .filter(|s| s.applies_to(envelope.direction))
        {
            let mut ctx = MessageCtx {
                envelope,
                state,
                header_block,
                hostname: &self.hostname,
                now,
            };
            match stage.run(&mut ctx) {
                Verdict::Continue => {}
                Verdict::Modified => overall = Verdict::Modified,
                stop => {
                    tracing::debug!(queue_id = %envelope.id, stage = stage.name(), verdict = ?stop, "pipeline stopped");
                    return stop;
                }
            }
        }
        overall
    }

    /// Takes one `Received` entry through the stages and stores the outcome:
    /// Continue/Modified → Ready (and the scheduler is told); Hold → Held with
    /// the note; Reject → every recipient Failed (DSN not yet sent), then
    /// Ready so the scheduler sends the DSN; TempFail → nothing stored, the
    /// entry stays Received.
    pub async fn process(
        &self,
        spool: &Spool,
        id: &QueueId,
        now: u64,
    ) -> Result<Verdict, PipelineError> {
        let entry = spool.load(id)?;
        if entry.state.stage != EntryStage::Received {
            return Err(PipelineError::NotReceived {
                id: id.clone(),
                stage: entry.state.stage,
            });
        }
        let header_block = read_header_block(spool, id).await?;
        let mut state = entry.state;
        let verdict = self.apply(&entry.envelope, &mut state, &header_block, now);
        match &verdict {
            Verdict::Continue | Verdict::Modified => spool.mark_ready(id, state).await?,
            Verdict::Hold(note) => {
                state.stage = EntryStage::Held;
                state.note = Some(note.clone());
                spool.save_state(id, &state).await?;
            }
            Verdict::Reject(reason) => {
                for r in &mut state.recipients {
                    *r = RcptState::Failed {
                        at: now,
                        reason: reason.clone(),
                        reply: None,
                        dsn_queued: false,
                    };
                }
                state.note = Some(reason.clone());
                spool.mark_ready(id, state).await?;
            }
            Verdict::TempFail(_) => {}
        }
        Ok(verdict)
    }
}

/// The header section of the stored content: up to and including the CRLF
/// before the first empty line, read at most [`MAX_HEADER_BLOCK`] octets.
async fn read_header_block(spool: &Spool, id: &QueueId) -> Result<Vec<u8>, PipelineError> {
    let (file, len) = spool.open_content(id).await?;
    let limit = len.min(MAX_HEADER_BLOCK as u64);
    let mut buf = Vec::with_capacity(usize::try_from(limit).unwrap_or(MAX_HEADER_BLOCK));
    file.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|source| PipelineError::Read {
            id: id.clone(),
            source,
        })?;
    buf.truncate(header_end(&buf));
    Ok(buf)
}

/// Where the header section ends: after the line ending that precedes the
/// first empty line (CRLF or bare LF); the whole buffer when there is none.
fn header_end(buf: &[u8]) -> usize {
    if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
        return 0;
    }
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 2);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 1);
    match (crlf, lf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(buf.len()),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The pipeline worker, for the lifetime of the gateway.
///
/// First every entry still `Received` (a crash interrupted it) is processed,
/// then every newly committed id from the spool. At most a few mails run at
/// once; a TempFail or a storage error is retried after a delay, forever — the
/// mail stays safely `Received` meanwhile.
pub async fn run(pipeline: Arc<Pipeline>, spool: Spool) {
    // Take the channel before listing: a mail committed in between is then
    // both listed and announced, never neither.
    let received = spool.take_received();
    let limit = Arc::new(Semaphore::new(WORKERS));
    let mut recovered: HashSet<QueueId> = HashSet::new();
    match spool.list() {
        Ok(entries) => {
            for e in entries
                .into_iter()
                .filter(|e| e.state.stage == EntryStage::Received)
            {
                recovered.insert(e.envelope.id.clone());
                start(&pipeline, &spool, &limit, e.envelope.id).await;
            }
            if !recovered.is_empty() {
                tracing::info!(
                    count = recovered.len(),
                    "pipeline recovering mails left unprocessed"
                );
            }
        }
        Err(e) => tracing::error!(error = %e, "pipeline could not list the spool for recovery"),
    }
    let Some(mut received) = received else {
        tracing::error!(
            "the spool's received channel was taken by someone else; pipeline worker stops"
        );
        return;
    };
    while let Some(id) = received.recv().await {
        if recovered.remove(&id) {
            continue; // already started by the recovery pass
        }
        start(&pipeline, &spool, &limit, id).await;
    }
}

/// Waits for a free worker slot, then processes `id` in its own task. The
/// slot is given back while a failed mail waits for its retry.
async fn start(pipeline: &Arc<Pipeline>, spool: &Spool, limit: &Arc<Semaphore>, id: QueueId) {
    let Ok(first) = Arc::clone(limit).acquire_owned().await else {
        return;
    };
    let (pipeline, spool, limit) = (Arc::clone(pipeline), spool.clone(), Arc::clone(limit));
    tokio::spawn(async move {
        let mut permit = Some(first);
        loop {
            let slot = match permit.take() {
                Some(p) => p,
                None => match Arc::clone(&limit).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let why = match pipeline.process(&spool, &id, now_unix()).await {
                Ok(Verdict::TempFail(why)) => why,
                Ok(verdict) => {
                    tracing::info!(queue_id = %id, verdict = ?verdict, "pipeline done");
                    return;
                }
                Err(
                    PipelineError::NotReceived { .. }
                    | PipelineError::Spool(SpoolError::NotFound(_)),
                ) => {
                    tracing::debug!(queue_id = %id, "pipeline: entry already processed or gone");
                    return;
                }
                // Logged and moved to corrupt/ by the spool.
                Err(PipelineError::Spool(SpoolError::Corrupt { .. })) => return,
                Err(e) => e.to_string(),
            };
            drop(slot);
            tracing::warn!(queue_id = %id, reason = %why, retry_in = ?RETRY_DELAY, "pipeline temporary failure");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    });
}

#[cfg(test)]
mod tests;
