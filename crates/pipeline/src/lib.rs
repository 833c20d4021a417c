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
//!
//! Stages that must change the content itself (the policy's subject keyword
//! and steering headers, spoofed `X-Siegel-*` headers) only record the edit
//! in [`PolicyState`]; `process` then writes the edited mail as new spool
//! entries (one per outgoing copy) and removes the original once all of
//! them are committed.

pub mod policy;
pub mod smime;
pub mod stages;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_policy::{Classification, Decision, MethodKind, Split};
use siegel_spool::{EntryState, RcptState, Spool, SpoolError, Stage as EntryStage};
use siegel_types::{Address, Direction, Envelope, QueueId};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::Semaphore;

pub use policy::{PolicyEnv, PolicySettings, RecipientKeys};
/// The policy core, re-exported so the binary builds a [`PolicyEnv`] and
/// reads decisions without a dependency of its own.
pub use siegel_policy;
pub use stages::{Classify, Decide, ReceivedHeader, SplitCopies, StripSiegelHeaders};

/// The tracing target of the one summary line per mail.
pub const POLICY_LOG: &str = "siegel::policy";

/// Note of an original whose copies are being written: a crash then leaves
/// it `Received` with this note, and the retry skips copies already made.
const SPLITTING: &str = "policy: writing copies";

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
    /// Per envelope recipient (same order), what the key store knows;
    /// loaded before the stages run because the lookup is async. Empty
    /// when there is no key store or the mail is inbound.
    pub keys: &'a [RecipientKeys],
    /// What the policy stages found and decided (written by them, acted on
    /// by `process`).
    pub policy: &'a mut PolicyState,
}

/// What the policy stages leave for `process` to carry out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyState {
    /// Outbound classification (subject keyword, steering headers).
    pub classification: Option<Classification>,
    /// Further headers to remove from the content (inbound `X-Siegel-*`).
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
    /// - inbound:  received → strip-x-siegel, then (with an mPKI in the
    ///   environment) decrypt → verify → harvest → stamp on the whole mail
    ///   ([`smime::Mpki::inbound`]). Planned: filter (AV/AS) before it.
    /// - outbound: received → classify → decide → split, then sign (once,
    ///   for every copy) and encrypt per S/MIME copy through the registered
    ///   methods. Planned in between: filter, lft, disclaimer; dkim last.
    ///
    /// The S/MIME steps are not [`Stage`]s: stages are synchronous and see
    /// only the header section, while signing and decrypting need the whole
    /// content and the store (keys); `process` runs them after the stages
    /// and before the copies are written.
    pub fn standard_with(hostname: String, env: Arc<PolicyEnv>) -> Self {
        let stages: Vec<Box<dyn Stage>> = vec![
            Box::new(ReceivedHeader),
            Box::new(StripSiegelHeaders),
            Box::new(Classify(Arc::clone(&env))),
            Box::new(Decide(Arc::clone(&env))),
            Box::new(SplitCopies),
        ];
        Self::with_env(hostname, stages, env)
    }

    /// The gateway name (also the tracking node name).
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The names of the stages that run for direction `d`, in order. For
    /// [`Pipeline::standard`] this is today `received, strip-x-siegel`
    /// inbound and `received, classify, decide, split` outbound; the stages
    /// still to come, and where they go, are listed on
    /// [`Pipeline::standard_with`].
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
        self.apply_with(
            envelope,
            state,
            header_block,
            &[],
            &mut PolicyState::default(),
            now,
        )
    }

    /// [`Pipeline::apply`] with the recipients' keys and the policy state.
    pub fn apply_with(
        &self,
        envelope: &Envelope,
        state: &mut EntryState,
        header_block: &[u8],
        keys: &[RecipientKeys],
        policy: &mut PolicyState,
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
                keys,
                policy: &mut *policy,
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
    /// Continue/Modified → the policy's copies (see [`Pipeline::commit_copies`]),
    /// or simply Ready when the mail stays one unchanged copy; Hold → Held
    /// with the note; Reject → every recipient Failed (DSN not yet sent),
    /// then Ready so the scheduler sends the DSN; TempFail → nothing stored,
    /// the entry stays Received. A key store that cannot answer is a
    /// TempFail: deciding without the facts could downgrade protection.
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
        let mut state = entry.state;
        let mut pstate = PolicyState::default();
        let verdict = self.apply_with(
            &entry.envelope,
            &mut state,
            &header_block,
            &keys,
            &mut pstate,
            now,
        );
        match &verdict {
            Verdict::Continue | Verdict::Modified => {
                let content = match self
                    .smime_content(spool, &entry.envelope, &header_block, &pstate, now)
                    .await
                {
                    Ok(c) => c,
                    Err(SmimeStep::Retry(reason)) => return Ok(Verdict::TempFail(reason)),
                    Err(SmimeStep::Pipeline(e)) => return Err(e),
                };
                self.commit_copies(
                    spool,
                    &entry.envelope,
                    state,
                    &header_block,
                    pstate,
                    content,
                    now,
                )
                .await?;
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

/// One outgoing copy planned from the split: recipients (indexes into the
/// envelope) and what happens to them.
#[derive(Debug, Clone, PartialEq)]
struct Copy {
    rcpts: Vec<usize>,
    kind: CopyKind,
    /// The method of a Send copy (its content is transformed by it).
    method: Option<MethodKind>,
}

#[derive(Debug, Clone, PartialEq)]
enum CopyKind {
    /// Deliver (the label names the method, for the entry's note).
    Send(String),
    /// Bounce each recipient with its reason (same order as `rcpts`).
    Refuse(Vec<String>),
    /// Keep the copy held with this note.
    Hold(String),
}

/// Maps the split (which names addresses) onto envelope indexes. A
/// recipient the split did not place is held, never dropped or sent.
fn plan(envelope: &Envelope, split: Option<&Split>) -> Vec<Copy> {
    let all: Vec<usize> = (0..envelope.recipients.len()).collect();
    let Some(split) = split else {
        return vec![Copy {
            rcpts: all,
            kind: CopyKind::Send("unchanged".to_owned()),
            method: None,
        }];
    };
    let mut free: Vec<Option<&Address>> = envelope
        .recipients
        .iter()
        .map(|r| Some(&r.address))
        .collect();
    let mut take = |a: &Address| -> Option<usize> {
        let i = free.iter().position(|f| f.is_some_and(|x| x == a))?;
        free[i] = None;
        Some(i)
    };
    let mut copies = Vec::new();
    for g in &split.groups {
        let rcpts: Vec<usize> = g.recipients.iter().filter_map(&mut take).collect();
        if !rcpts.is_empty() {
            let mut label = g.method.to_string();
            if let Some(fp) = &g.fingerprint {
                label.push_str(&format!(" ({fp})"));
            }
            if g.requires_verified_tls {
                label.push_str(", verified TLS required");
            }
            copies.push(Copy {
                rcpts,
                kind: CopyKind::Send(label),
                method: Some(g.method),
            });
        }
    }
    let mut refused = (Vec::new(), Vec::new());
    for d in &split.refused {
        if let Some(i) = take(&d.recipient) {
            refused.0.push(i);
            refused
                .1
                .push(policy::refusal_text(d).unwrap_or_else(|| d.why.clone()));
        }
    }
    if !refused.0.is_empty() {
        copies.push(Copy {
            rcpts: refused.0,
            kind: CopyKind::Refuse(refused.1),
            method: None,
        });
    }
    let mut held = (Vec::new(), Vec::new());
    for d in &split.held {
        if let Some(i) = take(&d.recipient) {
            held.0.push(i);
            held.1.push(format!("{}: {}", d.recipient, d.why));
        }
    }
    let unplaced: Vec<usize> = free
        .iter()
        .enumerate()
        .filter(|(_, f)| f.is_some())
        .map(|(i, _)| i)
        .collect();
    for i in unplaced {
        held.0.push(i);
        held.1.push(format!(
            "{}: no decision was made for this recipient",
            envelope.recipients[i].address
        ));
    }
    if !held.0.is_empty() {
        copies.push(Copy {
            rcpts: held.0,
            kind: CopyKind::Hold(format!("policy: held: {}", held.1.join("; "))),
            method: None,
        });
    }
    copies
}

/// Applies a copy's fate to the per-recipient states of its entry.
fn apply_kind(state: &mut EntryState, kind: &CopyKind, now: u64) {
    match kind {
        // A stage's note stays; a derived copy gets its label in `commit_copies`.
        CopyKind::Send(_) => state.stage = EntryStage::Ready,
        CopyKind::Refuse(reasons) => {
            state.stage = EntryStage::Ready;
            for (r, reason) in state.recipients.iter_mut().zip(reasons) {
                *r = RcptState::Failed {
                    at: now,
                    reason: reason.clone(),
                    reply: None,
                    dsn_queued: false,
                };
            }
            state.note = Some("policy: refused".to_owned());
        }
        CopyKind::Hold(note) => {
            state.stage = EntryStage::Held;
            state.note = Some(note.clone());
        }
    }
}

impl Pipeline {
    /// Carries out what the stages decided for an entry they passed.
    ///
    /// When the mail stays one copy with unchanged content, the entry itself
    /// is updated: Ready; or Ready with the refused recipients Failed (the
    /// scheduler sends the DSN); or Held. Otherwise, in this order, for
    /// crash safety:
    /// 1. the original's state is saved with the note `SPLITTING` (it stays
    ///    `Received`);
    /// 2. each copy is committed with [`Spool::derive`]: the edited header
    ///    section, then the body streamed from the original's content file;
    ///    a Ready copy goes to the scheduler at once;
    /// 3. only when every copy is durable, the original is removed.
    ///
    /// A crash before step 3 leaves the original `Received`; the worker runs
    /// it again and, seeing the note, does not make again a copy that exists
    /// (same recipients, same parent). A copy already delivered and removed
    /// before the crash is made again: a duplicate, never a loss.
    #[allow(clippy::too_many_arguments)]
    async fn commit_copies(
        &self,
        spool: &Spool,
        envelope: &Envelope,
        mut state: EntryState,
        header_block: &[u8],
        p: PolicyState,
        content: Option<Vec<u8>>,
        now: u64,
    ) -> Result<(), PipelineError> {
        let id = &envelope.id;
        let new_header = edited_header(header_block, &p);
        let copies = plan(envelope, p.split.as_ref());
        let transforms = copies.iter().any(|c| is_transformed(c.method));
        let changed = new_header != header_block || content.is_some() || transforms;
        // Transformed copies need the whole (edited) mail in memory; see
        // `smime` for the bound.
        let content = match (content, transforms) {
            (Some(c), _) => Some(c),
            (None, true) => Some(read_edited(spool, id, &new_header, header_block.len()).await?),
            (None, false) => None,
        };
        let mut queued: Vec<(Address, QueueId)> = Vec::new();
        if let (false, [only]) = (changed, copies.as_slice()) {
            apply_kind(&mut state, &only.kind, now);
            if state.stage == EntryStage::Ready {
                spool.mark_ready(id, state).await?;
            } else {
                spool.save_state(id, &state).await?;
            }
        } else {
            let resumed = state.note.as_deref() == Some(SPLITTING);
            state.note = Some(SPLITTING.to_owned());
            spool.save_state(id, &state).await?;
            let existing = if resumed {
                existing_copies(spool, id).await?
            } else {
                Vec::new()
            };
            for copy in &copies {
                let rcpts: Vec<_> = copy
                    .rcpts
                    .iter()
                    .filter_map(|&i| envelope.recipients.get(i).cloned())
                    .collect();
                let addrs: Vec<Address> = rcpts.iter().map(|r| r.address.clone()).collect();
                let child = match existing.iter().find(|(a, _)| *a == addrs) {
                    Some((_, child)) => child.clone(),
                    None => {
                        let mut env = envelope.clone();
                        env.recipients = rcpts;
                        let mut cs = EntryState::new(env.recipients.len());
                        cs.prepend = state.prepend.clone();
                        let mut kind = copy.kind.clone();
                        let mut bytes = content.clone();
                        if let (CopyKind::Send(_), Some(method), Some(full)) =
                            (&copy.kind, copy.method, content.as_deref())
                            && is_transformed(Some(method))
                        {
                            match self.transform(method, full, &addrs, now).await {
                                Ok(t) => bytes = Some(t),
                                Err(reason) => {
                                    tracing::warn!(target: POLICY_LOG, queue_id = %id, %reason, "cannot encrypt the copy; it is held");
                                    kind = CopyKind::Hold(format!("policy: held: {reason}"));
                                }
                            }
                        }
                        apply_kind(&mut cs, &kind, now);
                        if let CopyKind::Send(label) = &kind {
                            cs.note = Some(format!("policy: {label}"));
                        }
                        match bytes {
                            Some(b) => spool.derive(id, env, std::io::Cursor::new(b), cs).await?,
                            None => {
                                let content =
                                    edited_content(spool, id, &new_header, header_block.len())
                                        .await?;
                                spool.derive(id, env, content, cs).await?
                            }
                        }
                    }
                };
                queued.extend(addrs.into_iter().map(|a| (a, child.clone())));
            }
            spool.remove(id).await?;
        }
        self.track(envelope, &p, &queued, changed, now).await;
        Ok(())
    }

    /// Stores every decision (and which copy carries each recipient) and
    /// writes the one log line of the mail. Tracking that fails is logged,
    /// not retried: the mail itself is already safely on its way.
    async fn track(
        &self,
        envelope: &Envelope,
        p: &PolicyState,
        queued: &[(Address, QueueId)],
        changed: bool,
        now: u64,
    ) {
        let message_id = envelope.message_id.as_deref().unwrap_or("-");
        if p.decisions.is_empty() {
            if !p.strip_headers.is_empty() {
                tracing::info!(
                    target: POLICY_LOG, queue_id = %envelope.id, message_id,
                    removed = %p.strip_headers.join(", "),
                    "removed incoming Siegel headers (not trusted from outside)"
                );
            }
            return;
        }
        let mut events: Vec<_> = p
            .decisions
            .iter()
            .map(|d| policy::decision_event(envelope, d, now, &self.hostname))
            .collect();
        events.extend(
            queued
                .iter()
                .map(|(a, c)| policy::queued_event(envelope, a, c, now, &self.hostname)),
        );
        if let Some(tracker) = &self.env.tracker
            && let Err(error) = tracker.record_all(events).await
        {
            tracing::error!(target: POLICY_LOG, queue_id = %envelope.id, %error, "cannot record the decisions for tracking");
        }
        let confidential = p
            .classification
            .as_ref()
            .is_some_and(|c| !c.reasons.is_empty());
        let why = p
            .classification
            .as_ref()
            .map(|c| {
                c.reasons
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let decisions = p
            .decisions
            .iter()
            .map(Decision::summary)
            .collect::<Vec<_>>()
            .join(" | ");
        let copies = queued
            .iter()
            .map(|(_, c)| c)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        tracing::info!(
            target: POLICY_LOG, queue_id = %envelope.id, message_id, sender = %envelope.mail_from,
            confidential, classified_by = %why, rewritten = changed, copies, decisions = %decisions,
            "policy decision"
        );
    }
}

/// Why the S/MIME step could not run now.
enum SmimeStep {
    /// The store did not answer: try the whole mail again later.
    Retry(String),
    Pipeline(PipelineError),
}

impl From<PipelineError> for SmimeStep {
    fn from(e: PipelineError) -> Self {
        SmimeStep::Pipeline(e)
    }
}

/// Copies whose content a method rewrites (encrypts).
fn is_transformed(method: Option<MethodKind>) -> bool {
    matches!(method, Some(MethodKind::Smime | MethodKind::DomainSmime))
}

/// The header section after the policy's edits (classification keyword
/// removed, `X-Siegel-*` stripped).
fn edited_header(header_block: &[u8], p: &PolicyState) -> Vec<u8> {
    let mut edit = p.classification.clone().unwrap_or_default();
    edit.strip_headers.extend(p.strip_headers.iter().cloned());
    edit.apply(header_block)
}

/// Whether the header section names S/MIME content (so inbound mail
/// without it is never read whole).
fn names_smime(header_block: &[u8]) -> bool {
    let lower = header_block.to_ascii_lowercase();
    lower.windows(5).any(|w| w == b"pkcs7") || lower.windows(16).any(|w| w == b"multipart/signed")
}

impl Pipeline {
    /// The S/MIME work on the whole mail, before the copies are written:
    /// outbound the signature of an internal sender (once, for every
    /// copy), inbound decrypt → verify → harvest → stamp. `None`: the
    /// content stays as the stages left it.
    async fn smime_content(
        &self,
        spool: &Spool,
        envelope: &Envelope,
        header_block: &[u8],
        p: &PolicyState,
        now: u64,
    ) -> Result<Option<Vec<u8>>, SmimeStep> {
        let Some(mpki) = &self.env.smime else {
            return Ok(None);
        };
        let id = &envelope.id;
        let (_, len) = spool.open_content(id).await.map_err(PipelineError::from)?;
        if usize::try_from(len).map_or(true, |l| l > smime::MAX_SMIME_CONTENT) {
            tracing::warn!(target: POLICY_LOG, queue_id = %id, len, "too large for S/MIME processing; passed unchanged");
            return Ok(None);
        }
        let new_header = edited_header(header_block, p);
        match envelope.direction {
            Direction::Outbound => {
                let whole = read_edited(spool, id, &new_header, header_block.len()).await?;
                let now = i64::try_from(now).unwrap_or(i64::MAX);
                mpki.sign_outbound(envelope.mail_from.address(), &whole, now)
                    .await
                    .map_err(|e| SmimeStep::Retry(format!("S/MIME signing: {e}")))
            }
            Direction::Inbound => {
                if !names_smime(&new_header) {
                    return Ok(None);
                }
                let whole = read_edited(spool, id, &new_header, header_block.len()).await?;
                let rcpts: Vec<Address> = envelope
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect();
                let out = mpki
                    .inbound(
                        &rcpts,
                        whole,
                        envelope.message_id.as_deref(),
                        smime::system_time(now),
                    )
                    .await;
                Ok(Some(out))
            }
        }
    }

    /// Encrypts one copy with its registered method, after loading the
    /// recipients' certificates the method reads.
    async fn transform(
        &self,
        method: MethodKind,
        content: &[u8],
        rcpts: &[Address],
        now: u64,
    ) -> Result<Vec<u8>, String> {
        if let Some(mpki) = &self.env.smime {
            mpki.prepare(method, rcpts, i64::try_from(now).unwrap_or(i64::MAX))
                .await
                .map_err(|e| e.to_string())?;
        }
        let m = self
            .env
            .registry
            .get(method)
            .ok_or_else(|| format!("{method} is not available"))?;
        m.transform(content, rcpts).map_err(|e| e.to_string())
    }
}

/// The whole edited mail in memory.
async fn read_edited(
    spool: &Spool,
    id: &QueueId,
    new_header: &[u8],
    old_header_len: usize,
) -> Result<Vec<u8>, PipelineError> {
    let mut r = edited_content(spool, id, new_header, old_header_len).await?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .await
        .map_err(|source| PipelineError::Read {
            id: id.clone(),
            source,
        })?;
    Ok(out)
}

/// Copies of `parent` already in the spool (an interrupted split), with
/// their recipients.
async fn existing_copies(
    spool: &Spool,
    parent: &QueueId,
) -> Result<Vec<(Vec<Address>, QueueId)>, PipelineError> {
    let s = spool.clone();
    let entries = tokio::task::spawn_blocking(move || s.list())
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))??;
    Ok(entries
        .into_iter()
        .filter(|e| e.state.parent.as_ref() == Some(parent))
        .map(|e| {
            (
                e.envelope
                    .recipients
                    .iter()
                    .map(|r| r.address.clone())
                    .collect(),
                e.envelope.id,
            )
        })
        .collect())
}

/// The edited mail as a stream: the new header section, then the original
/// from the end of its old header section on (the body is never loaded).
async fn edited_content(
    spool: &Spool,
    id: &QueueId,
    new_header: &[u8],
    old_header_len: usize,
) -> Result<impl tokio::io::AsyncRead + Unpin + use<>, PipelineError> {
    let (mut file, len) = spool.open_content(id).await?;
    let start = (old_header_len as u64).min(len);
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|source| PipelineError::Read {
            id: id.clone(),
            source,
        })?;
    Ok(std::io::Cursor::new(new_header.to_vec()).chain(file.take(len - start)))
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
mod policy_tests;
#[cfg(test)]
mod smime_tests;
#[cfg(test)]
mod tests;
