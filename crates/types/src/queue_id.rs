//! Queue ids: short, unique per node, sortable by arrival time, and safe to
//! use as file names (only `[0-9A-F]`).

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A queue id is not 20 upper-case hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a queue id (20 hex digits)")]
pub struct QueueIdError(pub String);

/// The id of one mail in one node's spool.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueId(String);

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl QueueId {
    /// A fresh id: microseconds since the epoch (13 hex digits), then 7 hex
    /// digits of a per-process counter mixed with the process id, so that
    /// two ids from one process never collide and a restarted process (a new
    /// microsecond) does not collide with its predecessor.
    pub fn generate() -> Self {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xF_FFFF;
        let pid = std::process::id() & 0xFF;
        Self(format!(
            "{:013X}{:02X}{:05X}",
            micros & 0x1F_FFFF_FFFF_FFFF,
            pid,
            n
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueId {
    type Error = QueueIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        let s = s.to_ascii_uppercase();
        if s.len() == 20 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s))
        } else {
            Err(QueueIdError(s))
        }
    }
}

impl std::str::FromStr for QueueId {
    type Err = QueueIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<QueueId> for String {
    fn from(q: QueueId) -> String {
        q.0
    }
}

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_sorted_and_parse_back() {
        let ids: Vec<QueueId> = (0..1000).map(|_| QueueId::generate()).collect();
        let mut set = std::collections::HashSet::new();
        for id in &ids {
            assert!(set.insert(id.clone()));
            assert_eq!(id.as_str().parse::<QueueId>().unwrap(), *id);
        }
        assert!(ids.first() < ids.last());
        assert!("../etc/passwd".parse::<QueueId>().is_err());
    }
}
