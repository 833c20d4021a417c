//! The one owner of retries: a timer heap of queue ids by due time, fed by
//! recovery at start, by the spool's ready channel and by admin requests;
//! deliveries run as tasks, at most `max_parallel` at a time. Delivery
//! workers keep no state of their own: everything is read from and written
//! back to the spool, so a crash loses nothing but the attempt in flight.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siegel_spool::{Control, Entry, RcptState, Spool, SpoolError, Stage};
use siegel_types::{Counters, QueueId, Recipient, SmtpReply};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::client::{
    ClientError, Connection, Connector, RcptResult, TlsSetupError, parse_reply_text,
};
use crate::dns::{Dns, DnsError};
use crate::dsn::{self, EXPIRED, Failure, REFUSED_BY};
use crate::{NextHop, Settings, TlsPolicy};

const LOG: &str = "siegel::smtp_out";
/// Cached connections idle longer than this are closed; a sink or MX that
/// sees no traffic should not keep our socket.
const IDLE_LIMIT: Duration = Duration::from_secs(5);
/// Idle connections kept per next hop.
const IDLE_PER_HOP: usize = 32;
/// Addresses tried per next hop and attempt (RFC 5321 §5.1 asks for a limit).
const MAX_ADDRESSES: usize = 5;
/// How long to wait before retrying when the spool itself failed.
const SPOOL_RETRY: u64 = 60;

/// Why delivery cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Dns(#[from] DnsError),
}

/// Checks that the delivery side can start with these settings (CA files
/// readable, resolver configurable), so that `serve` can refuse to start
/// rather than run a scheduler that cannot deliver.
pub fn validate(settings: &Settings) -> Result<(), SetupError> {
    Ctx::connector(settings)?;
    Dns::new(&settings.nameservers)?;
    Ok(())
}

struct Ctx {
    settings: Arc<Settings>,
    spool: Spool,
    counters: Arc<Counters>,
    connector: Connector,
    dns: Dns,
    pool: Pool,
    /// Per-recipient results for message tracking (see [`crate::run_with_events`]).
    events: Option<mpsc::UnboundedSender<crate::DeliveryEvent>>,
}

impl Ctx {
    fn connector(settings: &Settings) -> Result<Connector, TlsSetupError> {
        Connector::new(
            &settings.hostname,
            &settings.tls_ca_files,
            settings.connect_timeout,
            settings.command_timeout,
        )
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What the scheduler does with an id after a delivery task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Try again at this Unix second.
    Later(u64),
    /// Removed from the spool, or not ours (held, gone).
    Finished,
}

#[derive(Default)]
struct Flags {
    retry: bool,
    delete: bool,
}

pub(crate) async fn run(
    settings: Arc<Settings>,
    spool: Spool,
    counters: Arc<Counters>,
    events: Option<mpsc::UnboundedSender<crate::DeliveryEvent>>,
) {
    let built = Ctx::connector(&settings)
        .map_err(SetupError::from)
        .and_then(|c| Ok((c, Dns::new(&settings.nameservers)?)));
    let (connector, dns) = match built {
        Ok(parts) => parts,
        Err(error) => {
            tracing::error!(target: LOG, %error, "delivery cannot start");
            return;
        }
    };
    let ctx = Arc::new(Ctx {
        settings,
        spool,
        counters,
        connector,
        dns,
        pool: Pool::default(),
        events,
    });
    let mut ready = ctx.spool.take_ready();
    let mut control = ctx.spool.take_control();
    if ready.is_none() {
        tracing::warn!(target: LOG, "the spool's ready channel was already taken; only recovery and retries run");
    }
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(QueueId, Next)>();
    let mut heap: BinaryHeap<Reverse<(u64, QueueId)>> = BinaryHeap::new();
    let mut planned: HashMap<QueueId, u64> = HashMap::new();
    let mut forced: HashSet<QueueId> = HashSet::new();
    let mut running: HashMap<QueueId, Flags> = HashMap::new();
    let plan = |heap: &mut BinaryHeap<_>, planned: &mut HashMap<_, _>, id: QueueId, due: u64| {
        planned.insert(id.clone(), due);
        heap.push(Reverse((due, id)));
    };

    // Recovery: everything ready survives a restart in the spool.
    let spool = ctx.spool.clone();
    match tokio::task::spawn_blocking(move || spool.list()).await {
        Ok(Ok(entries)) => {
            let mut n = 0;
            for entry in entries
                .into_iter()
                .filter(|e| e.state.stage == Stage::Ready)
            {
                plan(
                    &mut heap,
                    &mut planned,
                    entry.envelope.id,
                    entry.state.next_attempt,
                );
                n += 1;
            }
            tracing::info!(target: LOG, entries = n, "delivery scheduler started");
        }
        Ok(Err(error)) => {
            tracing::error!(target: LOG, %error, "cannot list the spool for recovery")
        }
        Err(error) => tracing::error!(target: LOG, %error, "spool listing task failed"),
    }

    let max_parallel = ctx.settings.max_parallel.max(1);
    loop {
        ctx.counters
            .queue_size
            .store(ctx.spool.len() as i64, Ordering::Relaxed);
        let now = unix_now();
        while running.len() < max_parallel {
            let Some(Reverse((due, _))) = heap.peek() else {
                break;
            };
            if *due > now {
                break;
            }
            let Some(Reverse((due, id))) = heap.pop() else {
                break;
            };
            if planned.get(&id) != Some(&due) || running.contains_key(&id) {
                continue; // superseded by a later plan
            }
            planned.remove(&id);
            let force = forced.remove(&id);
            running.insert(id.clone(), Flags::default());
            spawn_delivery(ctx.clone(), id, force, done_tx.clone());
        }
        let wait = match heap.peek() {
            Some(Reverse((due, _))) if running.len() < max_parallel => {
                Duration::from_secs(due.saturating_sub(now)).min(Duration::from_secs(1))
            }
            _ => Duration::from_secs(1),
        };
        tokio::select! {
            Some(id) = recv(&mut ready) => {
                // A mail made ready just before start-up is found both by the
                // recovery scan and on this channel: the second notice is a
                // duplicate. It must neither force a retry of a delivery in
                // progress nor replace a retry already scheduled.
                if !running.contains_key(&id) && !planned.contains_key(&id) {
                    plan(&mut heap, &mut planned, id, 0);
                }
            }
            Some(request) = recv(&mut control) => match request {
                Control::Retry(id) => {
                    tracing::info!(target: LOG, queue_id = %id, "retry requested");
                    if let Some(flags) = running.get_mut(&id) {
                        flags.retry = true;
                    } else {
                        forced.insert(id.clone());
                        plan(&mut heap, &mut planned, id, 0);
                    }
                }
                Control::Delete(id) => {
                    tracing::info!(target: LOG, queue_id = %id, "delete requested");
                    planned.remove(&id);
                    forced.remove(&id);
                    if let Some(flags) = running.get_mut(&id) {
                        flags.delete = true;
                    } else {
                        remove_entry(&ctx.spool, &id).await;
                    }
                }
            },
            Some((id, next)) = done_rx.recv() => {
                let flags = running.remove(&id).unwrap_or_default();
                if flags.delete {
                    remove_entry(&ctx.spool, &id).await;
                } else if flags.retry {
                    forced.insert(id.clone());
                    plan(&mut heap, &mut planned, id, 0);
                } else if let Next::Later(due) = next {
                    plan(&mut heap, &mut planned, id, due);
                }
            }
            () = tokio::time::sleep(wait) => ctx.pool.sweep(),
        }
    }
}

async fn recv<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(r) => match r.recv().await {
            Some(v) => Some(v),
            None => {
                *rx = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

async fn remove_entry(spool: &Spool, id: &QueueId) {
    match spool.remove(id).await {
        Ok(()) | Err(SpoolError::NotFound(_)) => {}
        Err(error) => tracing::error!(target: LOG, queue_id = %id, %error, "cannot remove entry"),
    }
}

/// Runs one delivery in its own task; a panic in it (a bug) must not leak
/// the scheduler's slot, so the outcome is awaited by a second task.
fn spawn_delivery(
    ctx: Arc<Ctx>,
    id: QueueId,
    force: bool,
    done: mpsc::UnboundedSender<(QueueId, Next)>,
) {
    tokio::spawn(async move {
        let retry_at = unix_now() + ctx.settings.retry_delay(1).as_secs();
        let next = match tokio::spawn(deliver(ctx, id.clone(), force)).await {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(target: LOG, queue_id = %id, %error, "delivery task failed");
                Next::Later(retry_at)
            }
        };
        let _ = done.send((id, next));
    });
}

/// Result of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Delivered {
        host: String,
        reply: SmtpReply,
    },
    Deferred {
        reason: String,
    },
    Failed {
        reason: String,
        reply: Option<SmtpReply>,
    },
}

async fn deliver(ctx: Arc<Ctx>, id: QueueId, force: bool) -> Next {
    let entry = match ctx.spool.fetch(&id).await {
        Ok(entry) => entry,
        Err(SpoolError::NotFound(_) | SpoolError::Corrupt { .. }) => return Next::Finished,
        Err(error) => {
            tracing::error!(target: LOG, queue_id = %id, %error, "cannot load entry");
            return Next::Later(unix_now() + SPOOL_RETRY);
        }
    };
    if entry.state.stage != Stage::Ready {
        // Held or back in the pipeline: it comes back through `ready`.
        return Next::Finished;
    }
    let now = unix_now();
    if !force && entry.state.next_attempt > now {
        return Next::Later(entry.state.next_attempt);
    }
    let mut state = entry.state.clone();
    state
        .recipients
        .resize(entry.envelope.recipients.len(), RcptState::Pending);
    let open: Vec<usize> = state
        .recipients
        .iter()
        .enumerate()
        .filter(|(_, r)| matches!(r, RcptState::Pending | RcptState::Deferred { .. }))
        .map(|(i, _)| i)
        .collect();
    let settings = &ctx.settings;
    let expires_at = entry
        .envelope
        .received_at
        .saturating_add(settings.max_lifetime.as_secs());

    if !open.is_empty() {
        let outcomes: Vec<(usize, String, Outcome)> = if now >= expires_at {
            open.iter()
                .map(|&i| {
                    let reply = match &state.recipients[i] {
                        RcptState::Deferred { last_error, .. } => parse_reply_text(last_error),
                        _ => None,
                    };
                    (
                        i,
                        "-".to_owned(),
                        Outcome::Failed {
                            reason: EXPIRED.to_owned(),
                            reply,
                        },
                    )
                })
                .collect()
        } else {
            state.attempts += 1;
            let mut groups: Vec<((NextHop, TlsPolicy), Vec<usize>)> = Vec::new();
            for &i in &open {
                let domain = entry.envelope.recipients[i].address.domain();
                let key = (settings.next_hop(domain), settings.tls_policy_for(domain));
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push(i),
                    None => groups.push((key, vec![i])),
                }
            }
            let mut all = Vec::new();
            for ((hop, policy), members) in groups {
                let results = attempt_hop(&ctx, &entry, &hop, policy, &members).await;
                all.extend(
                    members
                        .into_iter()
                        .zip(results)
                        .map(|(i, o)| (i, hop.to_string(), o)),
                );
            }
            all
        };
        for (i, next_hop, outcome) in outcomes {
            log_outcome(&entry, &entry.envelope.recipients[i], &next_hop, &outcome);
            if let Some(events) = &ctx.events {
                // The tracking side may be gone at shutdown; delivery goes on.
                let _ = events.send(crate::DeliveryEvent::new(
                    &entry.envelope,
                    &entry.envelope.recipients[i].address,
                    &outcome,
                ));
            }
            state.recipients[i] = match outcome {
                Outcome::Delivered { host, reply } => {
                    Counters::inc(&ctx.counters.delivered);
                    RcptState::Delivered {
                        at: now,
                        host,
                        reply,
                    }
                }
                Outcome::Deferred { reason } => {
                    Counters::inc(&ctx.counters.deferred);
                    let before = match &state.recipients[i] {
                        RcptState::Deferred { attempts, .. } => *attempts,
                        _ => 0,
                    };
                    RcptState::Deferred {
                        attempts: before + 1,
                        last_error: reason,
                    }
                }
                Outcome::Failed { reason, reply } => {
                    Counters::inc(&ctx.counters.bounced);
                    RcptState::Failed {
                        at: now,
                        reason,
                        reply,
                        dsn_queued: false,
                    }
                }
            };
        }
        if state
            .recipients
            .iter()
            .any(|r| matches!(r, RcptState::Deferred { .. } | RcptState::Pending))
        {
            let wanted = now.saturating_add(settings.retry_delay(state.attempts).as_secs().max(1));
            // Never sleep past the expiry: that attempt turns into the bounce.
            let next = wanted.min(expires_at.max(now + 1));
            state.next_attempt = next;
            if let Err(error) = ctx.spool.save_state(&id, &state).await {
                tracing::error!(target: LOG, queue_id = %id, %error, "cannot save delivery state");
            }
            return Next::Later(next);
        }
    }
    finish(&ctx, &entry, state, now).await
}

/// Every recipient is delivered or failed: bounce the failed ones (once),
/// then drop the entry.
async fn finish(ctx: &Ctx, entry: &Entry, mut state: siegel_spool::EntryState, now: u64) -> Next {
    let id = &entry.envelope.id;
    let failed: Vec<(usize, Failure<'_>)> = state
        .recipients
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match r {
            RcptState::Failed {
                at,
                reason,
                reply,
                dsn_queued: false,
            } => Some((
                i,
                Failure {
                    recipient: &entry.envelope.recipients[i],
                    reason,
                    reply: reply.as_ref(),
                    at: *at,
                },
            )),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        let failures: Vec<Failure<'_>> = failed.iter().map(|(_, f)| f.clone()).collect();
        let sender_internal = entry
            .envelope
            .mail_from
            .address()
            .is_some_and(|a| ctx.settings.is_internal(a.domain()));
        let original = match original_for_dsn(ctx, entry, &state.prepend).await {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::warn!(target: LOG, queue_id = %id, %error, "cannot read the original for the DSN; sending it without");
                state.prepend.clone().into_bytes()
            }
        };
        if let Some(dsn) = dsn::build(
            &ctx.settings.hostname,
            &entry.envelope,
            &failures,
            &original,
            sender_internal,
            now,
        ) {
            match ctx.spool.inject(dsn.envelope, &dsn.content).await {
                Ok(dsn_id) => tracing::info!(
                    target: LOG,
                    queue_id = %id,
                    dsn_queue_id = %dsn_id,
                    sender = %entry.envelope.mail_from,
                    failed = failures.len(),
                    "DSN queued"
                ),
                Err(error) => {
                    tracing::error!(target: LOG, queue_id = %id, %error, "cannot queue the DSN");
                    return Next::Later(now + SPOOL_RETRY);
                }
            }
        }
        let indexes: Vec<usize> = failed.iter().map(|(i, _)| *i).collect();
        drop(failed);
        for i in indexes {
            if let RcptState::Failed { dsn_queued, .. } = &mut state.recipients[i] {
                *dsn_queued = true;
            }
        }
        // Narrows the window in which a crash would send the DSN twice.
        if let Err(error) = ctx.spool.save_state(id, &state).await {
            tracing::warn!(target: LOG, queue_id = %id, %error, "cannot save DSN state");
        }
    }
    match ctx.spool.remove(id).await {
        Ok(()) | Err(SpoolError::NotFound(_)) => Next::Finished,
        Err(error) => {
            tracing::error!(target: LOG, queue_id = %id, %error, "cannot remove delivered entry");
            Next::Later(now + SPOOL_RETRY)
        }
    }
}

/// The original as sent (prepended lines + content): whole for RET=FULL
/// under the limit, else enough to hold its header section.
async fn original_for_dsn(ctx: &Ctx, entry: &Entry, prepend: &str) -> Result<Vec<u8>, SpoolError> {
    const HEADER_LIMIT: u64 = 256 * 1024;
    let (file, len) = ctx.spool.open_content(&entry.envelope.id).await?;
    let limit = if dsn::wants_full_content(&entry.envelope) {
        len
    } else {
        len.min(HEADER_LIMIT)
    };
    let mut out = prepend.as_bytes().to_vec();
    file.take(limit)
        .read_to_end(&mut out)
        .await
        .map_err(|source| SpoolError::Io {
            path: ctx.spool.dir().to_path_buf(),
            source,
        })?;
    Ok(out)
}

fn log_outcome(entry: &Entry, rcpt: &Recipient, next_hop: &str, outcome: &Outcome) {
    let env = &entry.envelope;
    let message_id = env.message_id.as_deref().unwrap_or("-");
    match outcome {
        Outcome::Delivered { host, reply } => tracing::info!(
            target: LOG, queue_id = %env.id, message_id, sender = %env.mail_from, recipient = %rcpt.address,
            next_hop, host = %host, result = "delivered", reply = %reply
        ),
        Outcome::Deferred { reason } => tracing::info!(
            target: LOG, queue_id = %env.id, message_id, sender = %env.mail_from, recipient = %rcpt.address,
            next_hop, result = "deferred", reason = %reason
        ),
        Outcome::Failed { reason, reply } => tracing::info!(
            target: LOG, queue_id = %env.id, message_id, sender = %env.mail_from, recipient = %rcpt.address,
            next_hop, result = "bounced", reason = %reason,
            reply = %reply.as_ref().map(ToString::to_string).unwrap_or_default()
        ),
    }
}

/// One SMTP transaction to one next hop for `members` (indexes into the
/// envelope's recipients); one outcome per member, in order.
async fn attempt_hop(
    ctx: &Ctx,
    entry: &Entry,
    hop: &NextHop,
    policy: TlsPolicy,
    members: &[usize],
) -> Vec<Outcome> {
    let all = |o: Outcome| members.iter().map(|_| o.clone()).collect::<Vec<_>>();
    let key = (hop.clone(), policy);
    if let Some(conn) = ctx.pool.take(&key).await {
        match transact(ctx, entry, conn, &key, members).await {
            Ok(outcomes) => return outcomes,
            Err(error) => {
                // A cached connection may have been closed by the peer
                // meanwhile; that says nothing about the next hop.
                tracing::debug!(target: LOG, %error, "cached connection failed, opening a new one");
            }
        }
    }
    let targets = match ctx.dns.resolve(hop).await {
        Ok(t) => t,
        Err(e) if e.is_permanent() => {
            let reply = SmtpReply {
                code: 550,
                enhanced: Some(e.status().to_owned()),
                text: e.to_string(),
            };
            return all(Outcome::Failed {
                reason: e.to_string(),
                reply: Some(reply),
            });
        }
        Err(e) => {
            return all(Outcome::Deferred {
                reason: e.to_string(),
            });
        }
    };
    let mut last_error = format!("no address for {hop}");
    for target in &targets {
        for addr in target.addrs.iter().take(MAX_ADDRESSES) {
            let conn = match ctx.connector.connect(&target.name, *addr, policy).await {
                Ok(conn) => conn,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            return match transact(ctx, entry, conn, &key, members).await {
                Ok(outcomes) => outcomes,
                Err(e) => all(Outcome::Deferred {
                    reason: e.to_string(),
                }),
            };
        }
    }
    all(Outcome::Deferred { reason: last_error })
}

async fn transact(
    ctx: &Ctx,
    entry: &Entry,
    mut conn: Connection,
    key: &(NextHop, TlsPolicy),
    members: &[usize],
) -> Result<Vec<Outcome>, ClientError> {
    let rcpts: Vec<&Recipient> = members
        .iter()
        .map(|&i| &entry.envelope.recipients[i])
        .collect();
    let (file, len) = match ctx.spool.open_content(&entry.envelope.id).await {
        Ok(c) => c,
        Err(error) => {
            ctx.pool.put(key.clone(), conn);
            return Ok(rcpts
                .iter()
                .map(|_| Outcome::Deferred {
                    reason: error.to_string(),
                })
                .collect());
        }
    };
    let results = conn
        .send(
            &entry.envelope,
            &rcpts,
            entry.state.prepend.as_bytes(),
            file,
            len,
        )
        .await?;
    let (host, name) = (conn.peer().to_owned(), conn.host().to_owned());
    ctx.pool.put(key.clone(), conn);
    Ok(results
        .into_iter()
        .map(|r| match r {
            RcptResult::Delivered(reply) => Outcome::Delivered {
                host: host.clone(),
                reply,
            },
            RcptResult::Refused(reply) if reply.is_permanent() => Outcome::Failed {
                reason: format!("{REFUSED_BY}{name}"),
                reply: Some(reply),
            },
            RcptResult::Refused(reply) => Outcome::Deferred {
                reason: format!("{reply} (from {host})"),
            },
        })
        .collect())
}

/// Idle connections per next hop, reused with RSET: many small mails to one
/// relay then cost one transaction each instead of a TCP + TLS handshake.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<(NextHop, TlsPolicy), Vec<Connection>>>,
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(NextHop, TlsPolicy), Vec<Connection>>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn take(&self, key: &(NextHop, TlsPolicy)) -> Option<Connection> {
        loop {
            let conn = self.lock().get_mut(key).and_then(Vec::pop)?;
            if conn.idle() > IDLE_LIMIT {
                continue;
            }
            let mut conn = conn;
            if conn.reset().await.is_ok() {
                return Some(conn);
            }
        }
    }

    fn put(&self, key: (NextHop, TlsPolicy), conn: Connection) {
        let mut idle = self.lock();
        let list = idle.entry(key).or_default();
        if list.len() < IDLE_PER_HOP {
            list.push(conn);
        } else {
            drop(idle);
            tokio::spawn(conn.quit());
        }
    }

    /// Closes connections idle for too long (politely, with QUIT).
    fn sweep(&self) {
        let mut stale = Vec::new();
        {
            let mut idle = self.lock();
            for list in idle.values_mut() {
                let (old, fresh): (Vec<_>, Vec<_>) =
                    list.drain(..).partition(|c| c.idle() > IDLE_LIMIT);
                *list = fresh;
                stale.extend(old);
            }
            idle.retain(|_, list| !list.is_empty());
        }
        for conn in stale {
            tokio::spawn(conn.quit());
        }
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
