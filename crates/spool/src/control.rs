//! Admin requests from the CLI to a running gateway.
//!
//! The CLI and the gateway are different processes; the spool directory is
//! the only thing they share. So a request is a small file in `control/`
//! (`retry <ID>` or `delete <ID>`), written under a dot-name and renamed, so
//! the gateway never reads half a request. The gateway polls the folder,
//! hands each request to whoever took the control channel (the scheduler
//! owns retries and deletions of queued mail) and deletes the file.
//!
//! `release <ID>` is the one request the spool carries out itself: a held
//! entry belongs to nobody (the pipeline only takes `Received` entries, the
//! scheduler only `Ready` ones), so sending it back to the pipeline needs no
//! owner's say, only the received channel, which the spool holds.

use std::path::Path;
use std::sync::Weak;
use std::time::Duration;

use siegel_types::QueueId;
use tokio::sync::mpsc::UnboundedSender;

use crate::Inner;

/// A request of the administrator about one queue entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Deliver now: next attempt as soon as possible, deferred recipients pending again.
    Retry(QueueId),
    /// Drop the mail without a DSN.
    Delete(QueueId),
}

impl Control {
    /// The control file's content.
    pub(crate) fn encode(&self) -> String {
        match self {
            Self::Retry(id) => format!("retry {id}\n"),
            Self::Delete(id) => format!("delete {id}\n"),
        }
    }

    /// Parses a control file's content; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (verb, id) = text.trim().split_once(' ')?;
        let id: QueueId = id.trim().parse().ok()?;
        match verb {
            "retry" => Some(Self::Retry(id)),
            "delete" => Some(Self::Delete(id)),
            _ => None,
        }
    }
}

/// What a control file asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// Handed to whoever took the control channel.
    Control(Control),
    /// Carried out by the spool: a held entry goes back to the pipeline.
    Release(QueueId),
}

impl Request {
    /// The control file's content.
    pub(crate) fn encode(&self) -> String {
        match self {
            Self::Control(c) => c.encode(),
            Self::Release(id) => format!("release {id}\n"),
        }
    }

    /// Parses a control file's content; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        if let Some(id) = text.trim().strip_prefix("release ") {
            return id.trim().parse().ok().map(Self::Release);
        }
        Control::parse(text).map(Self::Control)
    }
}

/// How often the gateway looks for new requests.
const POLL: Duration = Duration::from_millis(500);

/// Polls `control/` until the spool is dropped or nobody listens any more.
pub(crate) async fn poll(spool: Weak<Inner>, tx: UnboundedSender<Control>) {
    loop {
        tokio::time::sleep(POLL).await;
        let Some(inner) = spool.upgrade() else { return };
        let dir = inner.control.clone();
        drop(inner);
        let found = tokio::task::spawn_blocking(move || read_requests(&dir))
            .await
            .unwrap_or_default();
        for request in found {
            match request {
                Request::Control(c) => {
                    if tx.send(c).is_err() {
                        return;
                    }
                }
                Request::Release(id) => {
                    let Some(inner) = spool.upgrade() else { return };
                    let spool = crate::Spool { inner };
                    match spool.release_now(&id).await {
                        Ok(()) => {
                            tracing::info!(queue_id = %id, "held mail released to the pipeline")
                        }
                        Err(error) => {
                            tracing::warn!(queue_id = %id, %error, "release request not carried out")
                        }
                    }
                }
            }
        }
    }
}

/// Reads and deletes every complete request file, oldest first.
fn read_requests(dir: &Path) -> Vec<Request> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().starts_with('.'))
        .collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(&name);
        match std::fs::read_to_string(&path)
            .ok()
            .as_deref()
            .and_then(Request::parse)
        {
            Some(c) => out.push(c),
            None => {
                tracing::warn!(file = %path.display(), "ignoring unreadable spool control file")
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_encoding_roundtrips_and_rejects_junk() {
        let id = QueueId::generate();
        for c in [Control::Retry(id.clone()), Control::Delete(id)] {
            assert_eq!(Control::parse(&c.encode()), Some(c));
        }
        assert_eq!(Control::parse("retry ../../etc/passwd"), None);
        assert_eq!(Control::parse("explode 0123456789ABCDEF0123"), None);
        assert_eq!(Control::parse(""), None);
        let release = Request::Release(QueueId::generate());
        assert_eq!(Request::parse(&release.encode()), Some(release));
        assert_eq!(Request::parse("release ../x"), None);
        assert_eq!(Control::parse("release 0123456789ABCDEF0123"), None);
    }
}
