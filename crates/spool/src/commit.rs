//! Group commit of directory fsyncs.
//!
//! A rename is durable only once its directory is fsync'ed, and a directory
//! fsync costs a disk flush (milliseconds). Twenty sessions committing at the
//! same time would pay twenty flushes one after another; instead, each
//! committer renames its file first and then asks this thread for a sync of
//! the directory. The thread takes every request pending at that moment,
//! fsyncs each named directory once, and wakes all of them. A request is only
//! sent after its rename returned, and the fsync starts after the request was
//! received, so every waiter's rename is covered by the fsync it waits for.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use tokio::sync::oneshot;

use crate::SpoolError;

/// The result of one fsync, shareable between waiters (`io::Error` is not `Clone`).
type SyncResult = Result<(), (io::ErrorKind, String)>;

struct Request {
    dir: PathBuf,
    done: oneshot::Sender<SyncResult>,
}

/// Handle to the directory-sync thread. The thread ends when the handle is dropped.
pub(crate) struct Syncer {
    tx: mpsc::Sender<Request>,
    /// How many directory fsyncs were done (to see the batching in benchmarks).
    fsyncs: Arc<AtomicU64>,
}

impl Syncer {
    pub(crate) fn start() -> io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Request>();
        let fsyncs = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&fsyncs);
        std::thread::Builder::new()
            .name("siegel-spool-sync".into())
            .spawn(move || run(&rx, &counter))?;
        Ok(Self { tx, fsyncs })
    }

    /// Waits until `dir` was fsync'ed after this call began.
    pub(crate) async fn sync(&self, dir: &Path) -> Result<(), SpoolError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Request {
                dir: dir.to_owned(),
                done,
            })
            .map_err(|_| SpoolError::CommitterStopped)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((kind, msg))) => Err(SpoolError::Io {
                path: dir.to_owned(),
                source: io::Error::new(kind, msg),
            }),
            Err(_) => Err(SpoolError::CommitterStopped),
        }
    }

    pub(crate) fn fsyncs(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }
}

fn run(rx: &mpsc::Receiver<Request>, fsyncs: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let mut results: HashMap<PathBuf, SyncResult> = HashMap::new();
        for req in &batch {
            if !results.contains_key(&req.dir) {
                let r = File::open(&req.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| (e.kind(), e.to_string()));
                fsyncs.fetch_add(1, Ordering::Relaxed);
                results.insert(req.dir.clone(), r);
            }
        }
        for req in batch {
            let r = results.get(&req.dir).cloned().unwrap_or(Ok(()));
            // The waiter may have been cancelled; nothing to do then.
            let _ = req.done.send(r);
        }
    }
}
