//! The durable spool: "no 250 before durable".
//!
//! One data file per mail (`queue/<ID>`: content, envelope JSON, footer; see
//! [`format`](crate::format)) and, once anything changes, one small state file
//! (`state/<ID>.json`) with the per-recipient delivery status. A mail is
//! written in `incoming/`, fsync'ed, renamed into `queue/`, and `queue/` is
//! fsync'ed with a group commit before [`Incoming::commit`] returns. The full
//! contract, and what a crash at each step leaves, is in
//! `docs/design/queue-durability.md`.
//!
//! The spool knows nothing about SMTP, DNS or the pipeline: it stores, lists
//! and notifies. Three channels connect the parts that use it: newly
//! committed ids (to the pipeline worker), ids marked ready (to the delivery
//! scheduler) and admin requests (from the CLI, via `control/`).

mod commit;
mod content;
mod control;
mod format;
mod incoming;
mod memo;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use siegel_types::{Envelope, QueueId, SmtpReply};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

pub use content::{ContentReader, READ_WHOLE_UP_TO};
pub use control::Control;
pub use incoming::Incoming;

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file system operation failed; `path` names the file or directory.
    #[error("spool I/O on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A data file is damaged (truncated, bad footer, unreadable envelope).
    /// It has already been moved to `corrupt/`; the entry is gone from the queue.
    #[error("corrupt spool file {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// No committed entry has this id (never existed, or removed meanwhile).
    #[error("no queue entry {0}")]
    NotFound(QueueId),
    /// Another process (a running gateway) already holds the spool's lock.
    #[error("the spool at {} is already served by another process", .0.display())]
    AlreadyServed(PathBuf),
    /// Serialising our own data failed (our bug).
    #[error("could not encode the {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The group-commit thread is gone (our bug, or the process is shutting down).
    #[error("the spool's commit thread has stopped")]
    CommitterStopped,
    /// Only a held entry can be released; this one is elsewhere in its life.
    #[error("queue entry {id} is {stage:?}, not Held")]
    NotHeld { id: QueueId, stage: Stage },
    /// A blocking file task panicked or was cancelled (our bug).
    #[error("a spool background task failed: {0}")]
    Task(String),
}

/// One committed mail: its immutable envelope and its mutable state.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub envelope: Envelope,
    pub state: EntryState,
}

/// Everything about an entry that changes after the commit. Kept apart from
/// the data file so an update rewrites a few hundred bytes, not the mail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EntryState {
    /// Where the entry is in its life.
    pub stage: Stage,
    /// Same length and order as `envelope.recipients`.
    pub recipients: Vec<RcptState>,
    /// Header lines (each ending CRLF) the pipeline decided to put in front
    /// of the content at delivery, e.g. `Received: …\r\n`. The content file
    /// itself is never rewritten.
    #[serde(default)]
    pub prepend: String,
    /// Delivery attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds; 0 = as soon as possible.
    #[serde(default)]
    pub next_attempt: u64,
    /// Why held / last pipeline message.
    #[serde(default)]
    pub note: Option<String>,
    /// The entry this one was derived from ([`Spool::derive`]: a rewritten
    /// or split copy), for tracking and for finishing an interrupted split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<QueueId>,
}

impl EntryState {
    /// The state of a freshly committed mail with `recipients` recipients.
    pub fn new(recipients: usize) -> Self {
        Self {
            stage: Stage::Received,
            recipients: vec![RcptState::Pending; recipients],
            prepend: String::new(),
            attempts: 0,
            next_attempt: 0,
            note: None,
            parent: None,
        }
    }
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Stage {
    /// Committed, the pipeline has not finished with it.
    Received,
    /// The pipeline is done; the scheduler delivers it.
    Ready,
    /// Parked by the pipeline or an admin; nobody touches it until released.
    Held,
}

/// Delivery status of one recipient, as data a DSN can be built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum RcptState {
    /// Not yet delivered, no failure so far (or retried by an admin).
    Pending,
    /// The next hop answered 2xx.
    Delivered {
        at: u64,
        host: String,
        reply: SmtpReply,
    },
    /// Temporary failure; tried again later.
    Deferred { attempts: u32, last_error: String },
    /// Permanent failure; `dsn_queued` is true once the bounce was injected.
    Failed {
        at: u64,
        reason: String,
        reply: Option<SmtpReply>,
        dsn_queued: bool,
    },
}

/// The spool of one gateway: a directory, shared by cheap clones.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    root: PathBuf,
    incoming: PathBuf,
    queue: PathBuf,
    state: PathBuf,
    corrupt: PathBuf,
    control: PathBuf,
    lock_path: PathBuf,
    syncer: commit::Syncer,
    count: AtomicUsize,
    tmp_counter: AtomicU64,
    received_tx: UnboundedSender<QueueId>,
    received_rx: Mutex<Option<UnboundedReceiver<QueueId>>>,
    ready_tx: UnboundedSender<QueueId>,
    ready_rx: Mutex<Option<UnboundedReceiver<QueueId>>>,
    control_rx: Mutex<Option<UnboundedReceiver<Control>>>,
    control_tx: UnboundedSender<Control>,
    /// The lock file while this instance serves the spool.
    lock: Mutex<Option<File>>,
    /// Entries in flight, known without reading their files back.
    memo: memo::Memo,
}

/// Start of the note of an entry released from `Held` by an administrator;
/// the note it had while held follows, so a stage can tell what was
/// released (e.g. a quarantined mail, which the filter must not quarantine
/// again).
pub const RELEASED: &str = "released: ";

/// How often `claim` retries (100 ms apart) before it reports AlreadyServed.
const CLAIM_TRIES: u32 = 10;

/// Locks a mutex, ignoring poisoning: the guarded values stay consistent
/// whatever panicked while holding them (they are taken or set whole).
fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a state write must be on disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// File and directory fsync'ed (group-committed) before returning.
    Synced,
    /// Written and renamed, left to the kernel to flush.
    Lazy,
}

/// Runs blocking file work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SpoolError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SpoolError::Task(e.to_string()))
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The ids named by the files of a directory (other names are skipped).
fn ids_in(dir: &Path, suffix: &str) -> Result<Vec<QueueId>, SpoolError> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<QueueId>().ok())
        {
            ids.push(id);
        }
    }
    Ok(ids)
}

fn open_lock_file(path: &Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

/// Crash recovery at open: deletes partial mails in `incoming/` (never
/// acknowledged: the client got no 250 and sends again), interrupted state
/// saves, and state files whose mail is gone.
fn recover(incoming: &Path, queue: &Path, state: &Path) -> Result<(), SpoolError> {
    let mut leftovers = 0;
    for entry in std::fs::read_dir(incoming).map_err(io_err(incoming))? {
        let path = entry.map_err(io_err(incoming))?.path();
        std::fs::remove_file(&path).map_err(io_err(&path))?;
        leftovers += 1;
    }
    if leftovers > 0 {
        tracing::info!(
            count = leftovers,
            "deleted unacknowledged partial mails from spool incoming/"
        );
    }
    let queued = ids_in(queue, "")?;
    let known: std::collections::HashSet<&QueueId> = queued.iter().collect();
    for entry in std::fs::read_dir(state).map_err(io_err(state))? {
        let path = entry.map_err(io_err(state))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let orphan = match name
            .strip_suffix(".json")
            .and_then(|n| n.parse::<QueueId>().ok())
        {
            Some(id) => !known.contains(&id),
            None => true, // temporary file of an interrupted save
        };
        if orphan {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

impl Spool {
    /// Opens (and creates) the spool in `dir`, and recovers from a crash:
    /// partial mails in `incoming/` and half-written state files are deleted,
    /// state files whose mail is gone are dropped. Recovery is skipped when
    /// a gateway serves the spool (see [`Spool::claim`]), since those files
    /// are then its work in progress. Open a spool once per process and
    /// clone the handle: a second unclaimed open would recover (delete) the
    /// first one's mails in progress.
    pub fn open(dir: &Path) -> Result<Spool, SpoolError> {
        let sub = |name: &str| dir.join(name);
        let (incoming, queue, state, corrupt, control) = (
            sub("incoming"),
            sub("queue"),
            sub("state"),
            sub("corrupt"),
            sub("control"),
        );
        for d in [&incoming, &queue, &state, &corrupt, &control] {
            std::fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let lock_path = dir.join("lock");
        // Recovery only while nobody serves the spool: a CLI opening the
        // spool of a running gateway must not delete its mails in progress.
        // The shared lock keeps a gateway from claiming meanwhile.
        let lock = open_lock_file(&lock_path)?;
        match lock.try_lock_shared() {
            Ok(()) => recover(&incoming, &queue, &state)?,
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(SpoolError::Io {
                    path: lock_path,
                    source: e,
                });
            }
        }
        drop(lock);
        let queued = ids_in(&queue, "")?.len();
        let syncer = commit::Syncer::start().map_err(io_err(dir))?;
        let (received_tx, received_rx) = unbounded_channel();
        let (ready_tx, ready_rx) = unbounded_channel();
        let (control_tx, control_rx) = unbounded_channel();
        Ok(Spool {
            inner: Arc::new(Inner {
                root: dir.to_owned(),
                lock_path,
                incoming,
                queue,
                state,
                corrupt,
                control,
                syncer,
                count: AtomicUsize::new(queued),
                tmp_counter: AtomicU64::new(0),
                received_tx,
                received_rx: Mutex::new(Some(received_rx)),
                ready_tx,
                ready_rx: Mutex::new(Some(ready_rx)),
                control_tx,
                control_rx: Mutex::new(Some(control_rx)),
                lock: Mutex::new(None),
                memo: memo::Memo::default(),
            }),
        })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.root
    }

    /// Takes the spool for this process's lifetime (the running gateway).
    /// A second gateway on the same directory would deliver every mail twice,
    /// so it gets [`SpoolError::AlreadyServed`]. The lock is released by the
    /// OS when the process ends, also on `kill -9`. Call it right after
    /// `open`, before the first `begin`. Waits up to a second for a CLI's
    /// momentary shared lock.
    pub fn claim(&self) -> Result<(), SpoolError> {
        let mut held = locked(&self.inner.lock);
        if held.is_some() {
            return Ok(());
        }
        let path = &self.inner.lock_path;
        let mut file = open_lock_file(path)?;
        // A CLI holds a shared lock for a moment while it opens or checks
        // the spool; only a lock that stays is another gateway.
        let mut tries = 0;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if tries < CLAIM_TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(SpoolError::AlreadyServed(self.inner.root.clone()));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(SpoolError::Io {
                        path: path.clone(),
                        source: e,
                    });
                }
            }
        }
        // For humans looking at the folder; not used for locking.
        let _ = file
            .set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        *held = Some(file);
        Ok(())
    }

    /// Whether some process (this one included) serves the spool.
    pub fn is_served(&self) -> bool {
        if locked(&self.inner.lock).is_some() {
            return true;
        }
        let Ok(file) = open_lock_file(&self.inner.lock_path) else {
            return false;
        };
        matches!(
            file.try_lock_shared(),
            Err(std::fs::TryLockError::WouldBlock)
        )
    }

    /// Starts a new mail in `incoming/` with a fresh queue id.
    pub async fn begin(&self) -> Result<Incoming, SpoolError> {
        Ok(Incoming::new(self.clone(), QueueId::generate()))
    }

    /// Stores a mail the gateway made itself (a DSN) with the same durable
    /// commit as a received one. `envelope.id` is replaced by a fresh id,
    /// which is returned.
    pub async fn inject(&self, envelope: Envelope, content: &[u8]) -> Result<QueueId, SpoolError> {
        let mut incoming = self.begin().await?;
        incoming.write(content).await?;
        incoming.commit(envelope).await
    }

    /// Commits a mail derived from `parent` (a copy with an edited header,
    /// or one copy of a split) directly in `state` (normally Ready), with
    /// the parent noted in `state.parent`. The content is streamed from
    /// `content` in pieces, never held whole in memory.
    ///
    /// Order, for crash safety: the state file is written and synced first,
    /// then the data file is committed like a received mail. A crash in
    /// between leaves an orphan state file that `open` drops; after the
    /// commit the entry is complete with its state, so the pipeline never
    /// sees it as `Received` (it is not announced on the received channel).
    /// A Ready entry is announced to the scheduler. The caller removes the
    /// parent only after every copy is derived.
    pub async fn derive(
        &self,
        parent: &QueueId,
        envelope: Envelope,
        mut content: impl tokio::io::AsyncRead + Unpin,
        mut state: EntryState,
    ) -> Result<QueueId, SpoolError> {
        use tokio::io::AsyncReadExt;
        let mut incoming = self.begin().await?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = content
                .read(&mut buf)
                .await
                .map_err(|source| SpoolError::Io {
                    path: self.data_path(parent),
                    source,
                })?;
            if n == 0 {
                break;
            }
            incoming.write(&buf[..n]).await?;
        }
        state.parent = Some(parent.clone());
        // One state per recipient, as `load` requires; missing ones are Pending.
        state
            .recipients
            .resize(envelope.recipients.len(), RcptState::Pending);
        let id = incoming.id().clone();
        self.write_state_file(&id, &state, Durability::Synced)
            .await?;
        let id = incoming.commit_quietly(envelope, state.clone()).await?;
        if state.stage == Stage::Ready {
            let _ = self.inner.ready_tx.send(id.clone());
        }
        Ok(id)
    }

    /// All committed entries, oldest first. Damaged ones are moved to
    /// `corrupt/`, logged and skipped, so one bad file cannot stop the queue.
    pub fn list(&self) -> Result<Vec<Entry>, SpoolError> {
        let mut ids = ids_in(&self.inner.queue, "")?;
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load(&id) {
                Ok(e) => out.push(e),
                Err(SpoolError::Corrupt { .. } | SpoolError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// One committed entry.
    pub fn load(&self, id: &QueueId) -> Result<Entry, SpoolError> {
        if let Some(entry) = self.inner.memo.entry(id) {
            return Ok(entry);
        }
        let path = self.data_path(id);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SpoolError::NotFound(id.clone()));
            }
            Err(e) => return Err(SpoolError::Io { path, source: e }),
        };
        let envelope = match self.checked_envelope(id, &mut file, &path) {
            Ok((env, _)) => env,
            Err(e) => return Err(e),
        };
        let state = self.read_state(id, &envelope)?;
        Ok(Entry { envelope, state })
    }

    /// [`Spool::load`] for async callers: an entry in flight comes from
    /// memory, any other is read on a blocking thread.
    pub async fn fetch(&self, id: &QueueId) -> Result<Entry, SpoolError> {
        if let Some(entry) = self.inner.memo.entry(id) {
            return Ok(entry);
        }
        let (this, id) = (self.clone(), id.clone());
        blocking(move || this.load(&id)).await?
    }

    /// Reads the envelope; a damaged file is quarantined before the error returns.
    fn checked_envelope(
        &self,
        id: &QueueId,
        file: &mut File,
        path: &Path,
    ) -> Result<(Envelope, u64), SpoolError> {
        let result = format::read_envelope(file, path).and_then(|(env, len)| {
            if &env.id == id {
                Ok((env, len))
            } else {
                Err(SpoolError::Corrupt {
                    path: path.to_owned(),
                    reason: format!("envelope names id {}", env.id),
                })
            }
        });
        if let Err(SpoolError::Corrupt { reason, .. }) = &result {
            self.quarantine(id, reason);
        }
        result
    }

    /// Moves a damaged entry to `corrupt/` so it stays for inspection but
    /// out of the queue.
    fn quarantine(&self, id: &QueueId, reason: &str) {
        self.inner.memo.forget(id);
        let moved = std::fs::rename(self.data_path(id), self.inner.corrupt.join(id.as_str()));
        let _ = std::fs::rename(
            self.state_path(id),
            self.inner.corrupt.join(format!("{id}.state.json")),
        );
        match moved {
            Ok(()) => {
                self.entry_removed();
                tracing::error!(queue_id = %id, reason, "corrupt spool entry moved to corrupt/");
            }
            Err(e) => {
                tracing::error!(queue_id = %id, reason, error = %e, "corrupt spool entry could not be moved")
            }
        }
    }

    /// The state file, or the initial state when there is none yet. A state
    /// file that cannot be used is set aside and the initial state used: the
    /// mail is then processed and delivered again (a duplicate, never a loss).
    fn read_state(&self, id: &QueueId, envelope: &Envelope) -> Result<EntryState, SpoolError> {
        let path = self.state_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(EntryState::new(envelope.recipients.len()));
            }
            Err(e) => return Err(SpoolError::Io { path, source: e }),
        };
        let problem = match serde_json::from_slice::<EntryState>(&bytes) {
            Ok(s) if s.recipients.len() == envelope.recipients.len() => return Ok(s),
            Ok(s) => format!(
                "{} recipient states for {} recipients",
                s.recipients.len(),
                envelope.recipients.len()
            ),
            Err(e) => e.to_string(),
        };
        tracing::error!(queue_id = %id, problem, "unusable spool state file moved to corrupt/, starting over");
        let _ = std::fs::rename(&path, self.inner.corrupt.join(format!("{id}.state.json")));
        Ok(EntryState::new(envelope.recipients.len()))
    }

    /// Replaces the entry's state durably (temp file, fsync, rename,
    /// group-committed fsync of `state/`).
    ///
    /// The file is then the truth, and the entry is no longer remembered
    /// in memory: a deferred or held mail is read from disk when its turn
    /// comes, so memory does not grow with the queue.
    pub async fn save_state(&self, id: &QueueId, state: &EntryState) -> Result<(), SpoolError> {
        if !self.exists(id) {
            return Err(SpoolError::NotFound(id.clone()));
        }
        self.write_state_file(id, state, Durability::Synced).await?;
        self.inner.memo.forget(id);
        Ok(())
    }

    /// Whether the entry is committed and not removed.
    fn exists(&self, id: &QueueId) -> bool {
        self.inner.memo.contains(id) || self.data_path(id).exists()
    }

    /// Keeps a lazy state in memory when the entry is remembered (no file:
    /// losing it in a crash is harmless by the caller's contract), else
    /// writes it without fsync.
    async fn save_lazily(&self, id: &QueueId, state: &EntryState) -> Result<(), SpoolError> {
        if self.inner.memo.set_state(id, state) {
            return Ok(());
        }
        if !self.data_path(id).exists() {
            return Err(SpoolError::NotFound(id.clone()));
        }
        self.write_state_file(id, state, Durability::Lazy).await
    }

    /// Saves `state` without fsync: for facts whose loss in a crash is
    /// harmless because the pipeline recomputes them (a scan result made
    /// at SMTP time; lost, the mail is simply scanned again).
    pub async fn save_state_unsynced(
        &self,
        id: &QueueId,
        state: &EntryState,
    ) -> Result<(), SpoolError> {
        self.save_lazily(id, state).await
    }

    /// Hands a mail committed with [`Incoming::commit_unannounced`] to the
    /// pipeline.
    pub fn announce(&self, id: &QueueId) {
        let _ = self.inner.received_tx.send(id.clone());
    }

    /// Writes the state file, whether or not the data file exists yet
    /// ([`Spool::derive`] writes it first). `Durability::Lazy` skips both
    /// fsyncs: only for states whose loss is harmless (see [`Spool::mark_ready`]).
    async fn write_state_file(
        &self,
        id: &QueueId,
        state: &EntryState,
        durability: Durability,
    ) -> Result<(), SpoolError> {
        let json = serde_json::to_vec(state).map_err(|source| SpoolError::Encode {
            what: "entry state",
            source,
        })?;
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let tmp = self.inner.state.join(format!(".{id}.{n}.tmp"));
        let target = self.state_path(id);
        blocking(move || {
            let io = |source| SpoolError::Io {
                path: tmp.clone(),
                source,
            };
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io)?;
            f.write_all(&json).map_err(io)?;
            if durability == Durability::Synced {
                f.sync_data().map_err(io)?;
            }
            drop(f);
            std::fs::rename(&tmp, &target).map_err(io)
        })
        .await??;
        match durability {
            Durability::Synced => self.inner.syncer.sync(&self.inner.state).await,
            Durability::Lazy => Ok(()),
        }
    }

    /// Saves `state` with stage Ready, then tells the scheduler.
    ///
    /// Not fsync'ed: the pipeline's result can always be recomputed. If a
    /// crash loses (or tears) this state file, the entry is found at its
    /// initial state (`Received`, or `corrupt/` for a torn file, which falls
    /// back to the initial state) and the pipeline runs again; the content
    /// itself was made durable by the commit. This saves one file and one
    /// directory fsync per mail on the hot path (see queue-durability.md).
    pub async fn mark_ready(&self, id: &QueueId, mut state: EntryState) -> Result<(), SpoolError> {
        state.stage = Stage::Ready;
        self.save_lazily(id, &state).await?;
        let _ = self.inner.ready_tx.send(id.clone());
        Ok(())
    }

    /// Deletes the entry (delivered, bounced, or deleted by an admin). The
    /// data file goes first: a crash in between leaves an orphan state file,
    /// which `open` drops, never a mail without its delivery status.
    pub async fn remove(&self, id: &QueueId) -> Result<(), SpoolError> {
        let data = self.data_path(id);
        let state = self.state_path(id);
        let missing = id.clone();
        // An entry remembered since its commit has a state file only if
        // one was written durably for it (which would have forgotten it)
        // or `derive` wrote one first.
        let state_file = self.inner.memo.forget(id).unwrap_or(true);
        blocking(move || {
            match std::fs::remove_file(&data) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(SpoolError::NotFound(missing));
                }
                Err(e) => {
                    return Err(SpoolError::Io {
                        path: data,
                        source: e,
                    });
                }
            }
            if !state_file {
                return Ok(());
            }
            match std::fs::remove_file(&state) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(SpoolError::Io {
                    path: state,
                    source: e,
                }),
                _ => Ok(()),
            }
        })
        .await??;
        self.entry_removed();
        // Not fsync'ed: a removal lost in a crash brings the mail back and it
        // is delivered again — the at-least-once window, which the journal's
        // commit interval bounds. Making it durable cost one directory fsync
        // per mail on the hot path (half of all fsyncs under load) and would
        // not close the window (the crash can come before the unlink).
        Ok(())
    }

    /// The content, positioned at its first octet, and its length. Read
    /// exactly that many octets; the envelope follows them in the file. A
    /// content of at most [`READ_WHOLE_UP_TO`] octets comes already read.
    pub async fn open_content(&self, id: &QueueId) -> Result<(ContentReader, u64), SpoolError> {
        let this = self.clone();
        let id = id.clone();
        // Known length: the file was written and checked by this process.
        let known = self.inner.memo.content_len(&id);
        blocking(move || {
            let path = this.data_path(&id);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(SpoolError::NotFound(id));
                }
                Err(e) => return Err(SpoolError::Io { path, source: e }),
            };
            let len = match known {
                Some(len) => len,
                None => {
                    let (_, len) = this.checked_envelope(&id, &mut file, &path)?;
                    io::Seek::seek(&mut file, io::SeekFrom::Start(0)).map_err(io_err(&path))?;
                    len
                }
            };
            if len <= READ_WHOLE_UP_TO {
                let mut bytes = Vec::with_capacity(len as usize);
                io::Read::read_to_end(&mut io::Read::take(&mut file, len), &mut bytes)
                    .map_err(io_err(&path))?;
                if bytes.len() as u64 != len {
                    return Err(SpoolError::Io {
                        path,
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "content shorter than recorded",
                        ),
                    });
                }
                return Ok((ContentReader::Memory(io::Cursor::new(bytes)), len));
            }
            Ok((ContentReader::File(tokio::fs::File::from_std(file)), len))
        })
        .await?
    }

    /// Ids of newly committed mails, in commit order. Only the first caller
    /// (the pipeline worker) gets the receiver.
    pub fn take_received(&self) -> Option<UnboundedReceiver<QueueId>> {
        locked(&self.inner.received_rx).take()
    }

    /// Ids marked ready. Only the first caller (the delivery scheduler) gets the receiver.
    pub fn take_ready(&self) -> Option<UnboundedReceiver<QueueId>> {
        locked(&self.inner.ready_rx).take()
    }

    /// Admin requests written by the CLI into `control/`. The first call
    /// starts the poller (needs a tokio runtime) and gets the receiver.
    pub fn take_control(&self) -> Option<UnboundedReceiver<Control>> {
        let rx = locked(&self.inner.control_rx).take()?;
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(control::poll(
                    Arc::downgrade(&self.inner),
                    self.inner.control_tx.clone(),
                ));
            }
            Err(_) => tracing::warn!(
                "take_control outside a tokio runtime: control requests will not be polled"
            ),
        }
        Some(rx)
    }

    /// An admin request (CLI side). A running gateway owns the queue, so it
    /// gets the request as a control file; a stopped one is changed here
    /// directly: Retry sets `next_attempt` to 0 and deferred recipients back
    /// to Pending, Delete removes the entry.
    pub async fn request(&self, c: Control) -> Result<(), SpoolError> {
        if self.is_served() {
            return self.write_control(&c).await;
        }
        match c {
            Control::Retry(id) => {
                let mut entry = self.load(&id)?;
                entry.state.next_attempt = 0;
                for r in &mut entry.state.recipients {
                    if matches!(r, RcptState::Deferred { .. }) {
                        *r = RcptState::Pending;
                    }
                }
                self.save_state(&id, &entry.state).await
            }
            Control::Delete(id) => self.remove(&id).await,
        }
    }

    /// Sends a held entry back through the pipeline: an administrator's
    /// decision about a quarantined or held mail. Its state becomes that of
    /// a received mail (header additions and delivery attempts cleared,
    /// recipient states kept) with the note `released: <note while held>`.
    /// A running gateway gets the request as a control file and carries it
    /// out within a second; a stopped one has the entry set to `Received`
    /// here, and the pipeline's recovery takes it at the next start.
    pub async fn release(&self, id: &QueueId) -> Result<(), SpoolError> {
        let entry = self.load(id)?;
        if entry.state.stage != Stage::Held {
            return Err(SpoolError::NotHeld {
                id: id.clone(),
                stage: entry.state.stage,
            });
        }
        if self.is_served() {
            return self
                .write_request(control::Request::Release(id.clone()))
                .await;
        }
        self.release_now(id).await
    }

    /// Carries out a release (see [`Spool::release`]) in this process and
    /// tells this process's pipeline.
    pub(crate) async fn release_now(&self, id: &QueueId) -> Result<(), SpoolError> {
        let entry = self.load(id)?;
        if entry.state.stage != Stage::Held {
            return Err(SpoolError::NotHeld {
                id: id.clone(),
                stage: entry.state.stage,
            });
        }
        let mut state = entry.state;
        state.stage = Stage::Received;
        state.prepend.clear();
        state.attempts = 0;
        state.next_attempt = 0;
        state.note = Some(format!(
            "{RELEASED}{}",
            state.note.as_deref().unwrap_or("held")
        ));
        self.save_state(id, &state).await?;
        let _ = self.inner.received_tx.send(id.clone());
        Ok(())
    }

    async fn write_control(&self, c: &Control) -> Result<(), SpoolError> {
        self.write_request(control::Request::Control(c.clone()))
            .await
    }

    async fn write_request(&self, c: control::Request) -> Result<(), SpoolError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = self.inner.tmp_counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{nanos:024}-{}-{n}", std::process::id());
        let tmp = self.inner.control.join(format!(".{name}"));
        let target = self.inner.control.join(name);
        let text = c.encode();
        blocking(move || {
            let io = |source| SpoolError::Io {
                path: tmp.clone(),
                source,
            };
            std::fs::write(&tmp, text).map_err(io)?;
            std::fs::rename(&tmp, &target).map_err(io)
        })
        .await?
    }

    /// Entries remembered in memory (in flight since their commit).
    pub fn in_flight(&self) -> usize {
        self.inner.memo.len()
    }

    pub(crate) fn remember(&self, envelope: Envelope, content_len: u64, state: Option<EntryState>) {
        let state_file = state.is_some();
        let state = state.unwrap_or_else(|| EntryState::new(envelope.recipients.len()));
        self.inner
            .memo
            .insert(envelope, content_len, state, state_file);
    }

    /// Committed entries currently present.
    pub fn len(&self) -> usize {
        self.inner.count.load(Ordering::Relaxed)
    }

    /// No committed entry present.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Directory fsyncs done so far by the group commit; compared with the
    /// number of commits it shows how well commits are batched.
    pub fn dir_fsyncs(&self) -> u64 {
        self.inner.syncer.fsyncs()
    }

    fn data_path(&self, id: &QueueId) -> PathBuf {
        self.inner.queue.join(id.as_str())
    }

    fn state_path(&self, id: &QueueId) -> PathBuf {
        self.inner.state.join(format!("{id}.json"))
    }

    pub(crate) fn entry_added(&self) {
        self.inner.count.fetch_add(1, Ordering::Relaxed);
    }

    fn entry_removed(&self) {
        // Saturating: a count off by one must not wrap to usize::MAX.
        let _ = self
            .inner
            .count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
                Some(c.saturating_sub(1))
            });
    }
}

#[cfg(test)]
mod tests;
