//! A mail being received: content streams into `incoming/<id>` through a
//! bounded buffer, and `commit` makes it durable and visible in one step.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use siegel_types::{Envelope, QueueId};

use crate::format::footer;
use crate::{EntryState, Spool, SpoolError, blocking, now_unix};

/// Content is written to disk in pieces of this size, so memory per session
/// stays flat whatever the mail size.
const BUF_CAP: usize = 64 * 1024;

/// A mail whose content is being written. Nothing of it is visible to
/// `list`/`load` until [`Incoming::commit`] returns; dropping it without a
/// commit deletes the partial file.
pub struct Incoming {
    spool: Spool,
    id: QueueId,
    path: PathBuf,
    /// Created lazily at the first flush: a small mail then costs a single
    /// blocking hop (create, write, fsync, rename) at commit.
    file: Option<File>,
    buf: Vec<u8>,
    size: u64,
    /// Set once the file is renamed away or deleted, so Drop leaves it alone.
    finished: bool,
}

impl Incoming {
    pub(crate) fn new(spool: Spool, id: QueueId) -> Self {
        let path = spool.inner.incoming.join(id.as_str());
        Self {
            spool,
            id,
            path,
            file: None,
            buf: Vec::with_capacity(BUF_CAP),
            size: 0,
            finished: false,
        }
    }

    /// The queue id this mail will have once committed (for logs and the 250 reply).
    pub fn id(&self) -> &QueueId {
        &self.id
    }

    /// Content octets written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends content. Buffered: the disk is touched once per 64 KiB.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), SpoolError> {
        self.buf.extend_from_slice(chunk);
        self.size += chunk.len() as u64;
        if self.buf.len() >= BUF_CAP {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SpoolError> {
        let file = self.file.take();
        let buf = std::mem::take(&mut self.buf);
        let path = self.path.clone();
        let (file, mut buf, result) = blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => match create(&path) {
                    Ok(f) => f,
                    Err(e) => return (None, buf, Err(e)),
                },
            };
            let r = file.write_all(&buf).map_err(|source| SpoolError::Io {
                path: path.clone(),
                source,
            });
            (Some(file), buf, r)
        })
        .await?;
        self.file = file;
        buf.clear();
        if buf.capacity() > 2 * BUF_CAP {
            // One huge chunk must not pin its memory for the rest of the session.
            buf.shrink_to(BUF_CAP);
        }
        self.buf = buf;
        result
    }

    /// Makes the mail durable and visible: writes the rest of the content,
    /// the envelope and the footer, fsyncs the file, renames it into
    /// `queue/` and waits for the (group-committed) fsync of `queue/`. Only
    /// when this returns `Ok` may the SMTP server answer 250.
    ///
    /// The stored envelope gets this mail's id and its content size; a
    /// `received_at` of 0 is set to now. The initial state (Received, every
    /// recipient Pending) is implied by the absence of a state file, which
    /// saves a second file and fsync per mail.
    pub async fn commit(self, envelope: Envelope) -> Result<QueueId, SpoolError> {
        self.commit_inner(envelope, true, None).await
    }

    /// Commits durably, like [`Incoming::commit`], but does not hand the
    /// mail to the pipeline yet: the receiving side checks it first (virus
    /// scan at SMTP time) and then either [`Spool::announce`]s or
    /// [`Spool::remove`]s it. A crash in between leaves a committed mail
    /// that the pipeline's recovery scan finds: at least once, never lost.
    pub async fn commit_unannounced(self, envelope: Envelope) -> Result<QueueId, SpoolError> {
        self.commit_inner(envelope, false, None).await
    }

    /// Commits without telling the pipeline: for [`Spool::derive`], whose
    /// entries are past the pipeline already. `state` is the one `derive`
    /// wrote for it.
    pub(crate) async fn commit_quietly(
        self,
        envelope: Envelope,
        state: EntryState,
    ) -> Result<QueueId, SpoolError> {
        self.commit_inner(envelope, false, Some(state)).await
    }

    /// `state`: the entry's state file, already written; `None`: none (the
    /// implied initial state).
    async fn commit_inner(
        mut self,
        mut envelope: Envelope,
        announce: bool,
        state: Option<EntryState>,
    ) -> Result<QueueId, SpoolError> {
        envelope.id = self.id.clone();
        envelope.size = self.size;
        if envelope.received_at == 0 {
            envelope.received_at = now_unix();
        }
        let json = serde_json::to_vec(&envelope).map_err(|source| SpoolError::Encode {
            what: "envelope",
            source,
        })?;
        let file = self.file.take();
        let mut buf = std::mem::take(&mut self.buf);
        let path = self.path.clone();
        let target = self.spool.inner.queue.join(self.id.as_str());
        let content_len = self.size;
        let to = target.clone();
        blocking(move || {
            let io = |source| SpoolError::Io {
                path: path.clone(),
                source,
            };
            let mut file = match file {
                Some(f) => f,
                None => create(&path)?,
            };
            buf.extend_from_slice(&json);
            buf.extend_from_slice(&footer(content_len, json.len() as u64));
            file.write_all(&buf).map_err(io)?;
            // fdatasync also persists the file size, which is all a reader needs.
            file.sync_data().map_err(io)?;
            drop(file);
            std::fs::rename(&path, &to).map_err(io)
        })
        .await??;
        // From here the file is no longer in incoming/.
        self.finished = true;
        if let Err(e) = self.spool.inner.syncer.sync(&self.spool.inner.queue).await {
            // Not durable, and the client will hear a 4xx and send again:
            // take the mail back so it is not delivered twice.
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        self.spool.entry_added();
        self.spool.remember(envelope, content_len, state);
        if announce {
            let _ = self.spool.inner.received_tx.send(self.id.clone());
        }
        Ok(self.id.clone())
    }

    /// Gives the mail up (client sent RSET, connection lost, size exceeded).
    pub async fn abort(mut self) {
        self.finished = true;
        self.file = None;
        let path = self.path.clone();
        // Best effort: a leftover is deleted at the next open().
        let _ = blocking(move || std::fs::remove_file(path)).await;
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        if !self.finished {
            self.file = None;
            // Never created when nothing was flushed; NotFound is fine.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn create(path: &std::path::Path) -> Result<File, SpoolError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| SpoolError::Io {
            path: path.to_owned(),
            source,
        })
}
