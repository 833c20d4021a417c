//! Carrying out what the stages decided: the outgoing copies of a mail,
//! each made by its method, committed to the spool before the original is
//! removed; and the tracking records and the one log line per mail.

use siegel_policy::{CopyInfo, Decision, MethodError, MethodKind, Split};
use siegel_spool::{EntryState, RcptState, Spool, Stage as EntryStage};
use siegel_types::{Address, Envelope, QueueId};

use crate::{Content, ContentError, POLICY_LOG, Pipeline, PipelineError, PolicyState, policy};

/// Note of an original whose copies are being written: a crash then leaves
/// it `Received` with this note, and the retry skips copies already made.
pub(crate) const SPLITTING: &str = "policy: writing copies";

/// One outgoing copy planned from the split: recipients (indexes into the
/// envelope) and what happens to them.
#[derive(Debug, Clone, PartialEq)]
struct Copy {
    rcpts: Vec<usize>,
    kind: CopyKind,
    /// The method of a Send copy (it makes the copy's content).
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

/// What became of one copy's method.
enum Made {
    /// The method made this content.
    Content(Vec<u8>),
    /// The method cannot make the copy: it is held with this note.
    Held(String),
    /// A dependency is down: the whole mail is tried again later.
    Retry(String),
}

impl Pipeline {
    /// Carries out what the stages decided for an entry they passed.
    /// `Ok(Some(why))`: a method met a temporary failure; the original
    /// stays `Received` (with the copies made so far) and is tried again.
    ///
    /// When the mail stays one copy with unchanged content and no method
    /// rewrites it, the entry itself is updated: Ready; or Ready with the
    /// refused recipients Failed (the scheduler sends the DSN); or Held.
    /// Otherwise, in this order, for crash safety:
    /// 1. the original's state is saved with the note `SPLITTING` (it stays
    ///    `Received`);
    /// 2. each copy is made by its method and committed with
    ///    [`Spool::derive`] (a copy without a method streams the edited
    ///    mail: the new header section, then the body from the original's
    ///    file); a Ready copy goes to the scheduler at once;
    /// 3. only when every copy is durable, the original is removed.
    ///
    /// A crash (or a temporary failure) before step 3 leaves the original
    /// `Received`; the worker runs it again and, seeing the note, does not
    /// make again a copy that exists (same recipients, same parent). A copy
    /// already delivered and removed before the crash is made again: a
    /// duplicate, never a loss.
    pub(crate) async fn commit_copies(
        &self,
        spool: &Spool,
        envelope: &Envelope,
        mut state: EntryState,
        mut content: Content,
        p: PolicyState,
        now: u64,
    ) -> Result<Option<String>, PipelineError> {
        let id = &envelope.id;
        let copies = plan(envelope, p.split.as_ref());
        // Per copy: its recipients' addresses, and whether its method
        // rewrites it (asked before anything is loaded or written).
        let mut made: Vec<(Vec<Address>, bool)> = Vec::with_capacity(copies.len());
        for copy in &copies {
            let addrs: Vec<Address> = copy
                .rcpts
                .iter()
                .filter_map(|&i| envelope.recipients.get(i).map(|r| r.address.clone()))
                .collect();
            let rewrites = match self.method_of(copy) {
                None => false,
                Some(m) => match m.changes(copy_info(envelope, &addrs, &p, now)).await {
                    Ok(b) => b,
                    Err(MethodError::Temporary { reason, .. }) => return Ok(Some(reason)),
                    // `make` meets the same problem and holds the copy.
                    Err(_) => true,
                },
            };
            made.push((addrs, rewrites));
        }
        let changed = content.is_modified() || made.iter().any(|(_, r)| *r);
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
            for (copy, (addrs, rewrites)) in copies.iter().zip(made) {
                if let Some((_, child)) = existing.iter().find(|(a, _)| *a == addrs) {
                    queued.extend(addrs.into_iter().map(|a| (a, child.clone())));
                    continue;
                }
                let mut env = envelope.clone();
                env.recipients = copy
                    .rcpts
                    .iter()
                    .filter_map(|&i| envelope.recipients.get(i).cloned())
                    .collect();
                let mut cs = EntryState::new(env.recipients.len());
                cs.prepend = state.prepend.clone();
                let mut kind = copy.kind.clone();
                let mut bytes = None;
                if let (true, Some(method)) = (rewrites, copy.method) {
                    let info = copy_info(envelope, &addrs, &p, now);
                    match self.make(method, info, &mut content).await {
                        Made::Content(b) => bytes = Some(b),
                        Made::Held(reason) => {
                            tracing::warn!(target: POLICY_LOG, queue_id = %id, %reason, "cannot make the copy; it is held");
                            kind = CopyKind::Hold(format!("policy: held: {reason}"));
                        }
                        Made::Retry(reason) => {
                            tracing::warn!(target: POLICY_LOG, queue_id = %id, %reason, "cannot make the copy now; the mail is tried again later");
                            return Ok(Some(reason));
                        }
                    }
                }
                apply_kind(&mut cs, &kind, now);
                if let CopyKind::Send(label) = &kind {
                    cs.note = Some(format!("policy: {label}"));
                }
                let child = match bytes {
                    Some(b) => spool.derive(id, env, std::io::Cursor::new(b), cs).await?,
                    None => spool.derive(id, env, content.reader().await?, cs).await?,
                };
                queued.extend(addrs.into_iter().map(|a| (a, child.clone())));
            }
            spool.remove(id).await?;
        }
        self.track(envelope, &p, &queued, changed, now).await;
        Ok(None)
    }

    /// The registered method that makes a Send copy.
    fn method_of(&self, copy: &Copy) -> Option<&dyn siegel_policy::Method> {
        match copy.kind {
            CopyKind::Send(_) => copy.method.and_then(|m| self.env.registry.get(m)),
            _ => None,
        }
    }

    /// Makes one copy's content with its registered method.
    async fn make(&self, method: MethodKind, copy: CopyInfo<'_>, content: &mut Content) -> Made {
        let Some(m) = self.env.registry.get(method) else {
            return Made::Held(format!("{method} is not available"));
        };
        let whole = match content.whole().await {
            Ok(w) => w,
            Err(e @ ContentError::TooLarge { .. }) => return Made::Held(format!("{method}: {e}")),
            Err(ContentError::Pipeline(e)) => return Made::Retry(e.to_string()),
        };
        match m.transform(&whole, copy).await {
            Ok(b) => Made::Content(b),
            Err(MethodError::Temporary { reason, .. }) => {
                Made::Retry(format!("{method}: {reason}"))
            }
            Err(e) => Made::Held(e.to_string()),
        }
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

/// What the method of a copy for `addrs` is told.
fn copy_info<'a>(
    envelope: &'a Envelope,
    addrs: &'a [Address],
    p: &PolicyState,
    now: u64,
) -> CopyInfo<'a> {
    CopyInfo {
        envelope,
        recipients: addrs,
        confidential: p
            .decisions
            .iter()
            .any(|d| d.confidential && addrs.contains(&d.recipient)),
        now,
    }
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
        .map_err(|e| siegel_spool::SpoolError::Task(e.to_string()))??;
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
