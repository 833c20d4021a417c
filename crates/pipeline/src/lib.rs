//! The pipeline seam: every content stage (filter, classify, decrypt,
//! verify, harvest, stamp, disclaimer, sign, encrypt, GINA, DKIM) plugs in
//! here.
//!
//! A stage is a type implementing [`Stage`]; the order is the list given to
//! [`Pipeline::new`], so it is data that can be printed and tested rather
//! than the order of statements in one long function. Stages see the
//! envelope, the mail's [`Content`] (header section in memory, body on disk
//! until a stage needs it whole), the entry's state, and what earlier
//! stages found ([`PolicyState`], [`Findings`]); they answer a [`Verdict`].
//! Trace headers go to `EntryState::prepend`, which delivery writes in
//! front of the content, so the content file is never copied for them.
//!
//! [`Pipeline::process`] takes one committed (`Received`) spool entry through
//! the stages and then carries out what they decided ([`commit`]): outbound,
//! one copy per group of recipients that share a method, each made by its
//! [`siegel_policy::Method`] (which signs and encrypts); inbound, the one
//! mail as the stages left it. [`run`] is the worker that does this for
//! every new mail and, after a crash, for every mail left `Received`.

mod commit;
pub mod content;
pub mod crl;
pub mod gina;
pub mod inbound;
pub mod onboarding;
pub mod pgp;
pub mod policy;
pub mod smime;
pub mod stages;
pub mod wkd;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_policy::{BoxFuture, Classification, Decision, Split};
use siegel_spool::{EntryState, RcptState, Spool, SpoolError, Stage as EntryStage};
use siegel_types::{Address, Direction, Envelope, QueueId};
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

pub use content::{Content, ContentError, MAX_WHOLE};
pub use inbound::{EncryptionFinding, Findings, SignatureFinding};
pub use policy::{PolicyEnv, PolicySettings, RecipientKeys};
/// The policy core, re-exported so the binary builds a [`PolicyEnv`] and
/// reads decisions without a dependency of its own.
pub use siegel_policy;
pub use stages::{
    Autocrypt, Classify, Decide, Decrypt, Harvest, ReceivedHeader, Scan, SplitCopies, Stamp,
    StripSiegelHeaders, Verify,
};
pub use wkd::WkdDirectory;

/// The tracing target of the one summary line per mail.
pub const POLICY_LOG: &str = "siegel::policy";

/// At most this much of the content is read as the header section: headers
/// larger than this are abuse, and stages must not make us read 100 MB.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// How many mails the worker processes at the same time. Most of a mail's
/// time in the pipeline is spent waiting for the store (key lookups, the
/// tracking commit), not on the CPU, so this is well above the core count.
const WORKERS: usize = 16;

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
    /// Reading the content failed.
    #[error("reading the content of {id}: {source}")]
    Read {
        id: QueueId,
        #[source]
        source: std::io::Error,
    },
}

/// What a stage sees of a mail.
pub struct MessageCtx<'a> {
    pub envelope: &'a Envelope,
    /// Mutable: stages add trace lines to `prepend`, set a `note`, or
    /// change per-recipient states.
    pub state: &'a mut EntryState,
    /// The mail as the stages before this one left it.
    pub content: &'a mut Content,
    /// This gateway's name, for trace headers.
    pub hostname: &'a str,
    /// Unix seconds; injected so that tests pin the clock.
    pub now: u64,
    /// Per envelope recipient (same order), what the key store knows;
    /// loaded before the stages run. Empty when there is no key store or
    /// the mail is inbound.
    pub keys: &'a [RecipientKeys],
    /// What the policy stages found and decided (outbound).
    pub policy: &'a mut PolicyState,
    /// What the inbound stages found out (encryption, signature, keys to
    /// harvest), for the stages after them.
    pub findings: &'a mut Findings,
}

/// What the policy stages leave for `process` to carry out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyState {
    /// Outbound classification (subject keyword, steering headers).
    pub classification: Option<Classification>,
    /// Header fields removed from the content (inbound `X-Siegel-*`), for
    /// the log line.
    pub strip_headers: Vec<String>,
    /// One per envelope recipient, in order.
    pub decisions: Vec<Decision>,
    /// The outgoing copies; `None` for inbound mail (one copy, all recipients).
    pub split: Option<Split>,
}

/// A stage's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed; go on.
    Continue,
    /// The state or content was changed (e.g. a header prepended); go on.
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
///
/// `run` is asynchronous because many stages wait for something (the
/// store, a virus scanner, the body from disk); a stage with nothing to
/// wait for answers `Box::pin(std::future::ready(verdict))`.
pub trait Stage: Send + Sync {
    /// Short, stable name for logs and `stage_names`.
    fn name(&self) -> &'static str;
    /// Whether the stage runs for mail going this way.
    fn applies_to(&self, d: Direction) -> bool;
    /// Does the work. Must not panic on any content: it is outside input.
    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict>;
}

/// The ordered list of stages, and the gateway name they use.
pub struct Pipeline {
    hostname: String,
    stages: Vec<Box<dyn Stage>>,
    env: Arc<PolicyEnv>,
}

impl Pipeline {
    /// A pipeline with these stages and no key store or tracking.
    pub fn new(hostname: String, stages: Vec<Box<dyn Stage>>) -> Self {
        Self::with_env(hostname, stages, Arc::new(PolicyEnv::default()))
    }

    /// A pipeline with these stages, whose processing loads keys from and
    /// records decisions to `env`.
    pub fn with_env(hostname: String, stages: Vec<Box<dyn Stage>>, env: Arc<PolicyEnv>) -> Self {
        Self {
            hostname,
            stages,
            env,
        }
    }

    /// The production pipeline with the default policy and no key store
    /// (every recipient without keys); see [`Pipeline::standard_with`].
    pub fn standard(hostname: String) -> Self {
        Self::standard_with(hostname, Arc::new(PolicyEnv::default()))
    }

    /// The production pipeline. The stage list is data, per direction:
    ///
    /// - inbound: received → strip-x-siegel → filter → decrypt →
    ///   filter-decrypted → verify → harvest → stamp (filter with scanners
    ///   configured, decrypt/verify/harvest with an mPKI in the
    ///   environment);
    /// - outbound: received → filter → classify → decide → split. Planned
    ///   in between: lft, disclaimer.
    ///
    /// After the outbound stages every copy is made by its method (see
    /// [`commit`]): the method signs in the sender's name and encrypts, so
    /// that each copy carries the signature that fits its protection.
    pub fn standard_with(hostname: String, env: Arc<PolicyEnv>) -> Self {
        let mut stages: Vec<Box<dyn Stage>> =
            vec![Box::new(ReceivedHeader), Box::new(StripSiegelHeaders)];
        if let Some(filter) = &env.filter {
            stages.push(Box::new(Scan::new(Arc::clone(filter))));
        }
        if let Some(keys) = &env.pgp {
            stages.push(Box::new(Autocrypt::new(Arc::clone(keys))));
        }
        stages.push(Box::new(Classify(Arc::clone(&env))));
        stages.push(Box::new(Decide(Arc::clone(&env))));
        stages.push(Box::new(SplitCopies));
        if env.smime.is_some() || env.pgp.is_some() {
            let (smime, pgp) = (env.smime.clone(), env.pgp.clone());
            stages.push(Box::new(Decrypt::new(smime.clone(), pgp.clone())));
            if let Some(filter) = &env.filter {
                stages.push(Box::new(Scan::after_decrypt(filter)));
            }
            stages.push(Box::new(Verify::new(smime.clone(), pgp.clone())));
            stages.push(Box::new(Harvest::new(smime, pgp)));
        }
        stages.push(Box::new(Stamp));
        Self::with_env(hostname, stages, env)
    }

    /// The gateway name (also the tracking node name).
    pub fn hostname(&self) -> &str {
        &self.hostname
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
    pub async fn apply(
        &self,
        envelope: &Envelope,
        state: &mut EntryState,
        content: &mut Content,
        now: u64,
    ) -> Verdict {
        self.apply_with(
            envelope,
            state,
            content,
            &[],
            &mut PolicyState::default(),
            &mut Findings::default(),
            now,
        )
        .await
    }

    /// [`Pipeline::apply`] with the recipients' keys and the stages' state.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply_with(
        &self,
        envelope: &Envelope,
        state: &mut EntryState,
        content: &mut Content,
        keys: &[RecipientKeys],
        policy: &mut PolicyState,
        findings: &mut Findings,
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
                content: &mut *content,
                hostname: &self.hostname,
                now,
                keys,
                policy: &mut *policy,
                findings: &mut *findings,
            };
            match stage.run(&mut ctx).await {
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
    /// Continue/Modified → the policy's copies (see [`commit`]), or simply
    /// Ready when the mail stays one unchanged copy; Hold → Held with the
    /// note; Reject → every recipient Failed (DSN not yet sent), then Ready
    /// so the scheduler sends the DSN; TempFail → nothing stored, the entry
    /// stays Received. A key store that cannot answer is a TempFail:
    /// deciding without the facts could downgrade protection.
    pub async fn process(
        &self,
        spool: &Spool,
        id: &QueueId,
        now: u64,
    ) -> Result<Verdict, PipelineError> {
        let entry = spool.fetch(id).await?;
        if entry.state.stage != EntryStage::Received {
            return Err(PipelineError::NotReceived {
                id: id.clone(),
                stage: entry.state.stage,
            });
        }
        let (header_block, len) = read_header_block(spool, id).await?;
        let keys = match (&self.env.directory, entry.envelope.direction) {
            (Some(dir), Direction::Outbound) => {
                let rcpts: Vec<Address> = entry
                    .envelope
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect();
                match policy::load_keys(dir.as_ref(), &rcpts, now).await {
                    Ok(k) => k,
                    Err(e) => return Ok(Verdict::TempFail(e.to_string())),
                }
            }
            _ => Vec::new(),
        };
        let mut content = Content::from_spool(spool.clone(), id.clone(), header_block, len);
        let mut state = entry.state;
        let mut pstate = PolicyState::default();
        let mut findings = Findings::default();
        let verdict = self
            .apply_with(
                &entry.envelope,
                &mut state,
                &mut content,
                &keys,
                &mut pstate,
                &mut findings,
                now,
            )
            .await;
        match &verdict {
            Verdict::Continue | Verdict::Modified => {
                let done = self
                    .commit_copies(spool, &entry.envelope, state, content, pstate, now)
                    .await?;
                if let Some(why) = done {
                    return Ok(Verdict::TempFail(why));
                }
            }
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

/// The header section of the stored content (up to and including the CRLF
/// before the first empty line, read at most [`MAX_HEADER_BLOCK`] octets)
/// and the content's length.
async fn read_header_block(spool: &Spool, id: &QueueId) -> Result<(Vec<u8>, u64), PipelineError> {
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
    Ok((buf, len))
}

/// Where the header section ends: after the line ending that precedes the
/// first empty line (CRLF or bare LF); the whole buffer when there is none.
pub(crate) fn header_end(buf: &[u8]) -> usize {
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

pub(crate) fn now_unix() -> u64 {
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
mod gina_tests;
#[cfg(test)]
mod pgp_tests;
#[cfg(test)]
mod policy_tests;
#[cfg(test)]
mod smime_tests;
#[cfg(test)]
mod tests;
