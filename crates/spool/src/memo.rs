//! What this process knows of the entries it committed and is still moving
//! along (pipeline, first delivery attempt), so that the hot path does not
//! read back from disk what it has just written: the envelope, the content
//! length and the latest state.
//!
//! The files stay the truth for everyone else (the CLI, the next start):
//! a memo entry is dropped as soon as a durable state is written (a
//! deferral, a hold, a release) or the entry goes, so the memo holds only
//! mails in flight and its size follows the throughput, not the queue. Mails
//! that wait before their first durable state (the pipeline retrying while
//! a scanner is down) could still pile up, so the memo is capped: past
//! [`MEMO_MAX`] entries new mails are simply not remembered and take the
//! file path, as before the memo existed.
//! The one thing that lives only here is a *lazy* state (`mark_ready`, a
//! scan result), which by its contract may be lost in a crash: the file
//! then shows the last durable state, from which the pipeline recomputes it.

use std::collections::HashMap;
use std::sync::Mutex;

use siegel_types::{Envelope, QueueId};

use crate::{Entry, EntryState, locked};

struct Memoed {
    envelope: Envelope,
    content_len: u64,
    state: EntryState,
    /// A state file exists on disk (so removal must delete it).
    state_file: bool,
}

/// Most entries remembered (each a few hundred bytes to a few KiB).
pub(crate) const MEMO_MAX: usize = 10_000;

#[derive(Default)]
pub(crate) struct Memo {
    entries: Mutex<HashMap<QueueId, Memoed>>,
}

impl Memo {
    /// Remembers a freshly committed entry.
    pub(crate) fn insert(
        &self,
        envelope: Envelope,
        content_len: u64,
        state: EntryState,
        state_file: bool,
    ) {
        let mut entries = locked(&self.entries);
        if entries.len() >= MEMO_MAX {
            return;
        }
        entries.insert(
            envelope.id.clone(),
            Memoed {
                envelope,
                content_len,
                state,
                state_file,
            },
        );
    }

    pub(crate) fn entry(&self, id: &QueueId) -> Option<Entry> {
        locked(&self.entries).get(id).map(|m| Entry {
            envelope: m.envelope.clone(),
            state: m.state.clone(),
        })
    }

    pub(crate) fn content_len(&self, id: &QueueId) -> Option<u64> {
        locked(&self.entries).get(id).map(|m| m.content_len)
    }

    pub(crate) fn contains(&self, id: &QueueId) -> bool {
        locked(&self.entries).contains_key(id)
    }

    /// Replaces the state of a remembered entry; `false` when the entry is
    /// not remembered (the caller then writes the file).
    pub(crate) fn set_state(&self, id: &QueueId, state: &EntryState) -> bool {
        match locked(&self.entries).get_mut(id) {
            Some(m) => {
                m.state = state.clone();
                true
            }
            None => false,
        }
    }

    /// Forgets the entry. `Some(state_file)` when it was remembered: whether
    /// a state file may exist on disk.
    pub(crate) fn forget(&self, id: &QueueId) -> Option<bool> {
        locked(&self.entries).remove(id).map(|m| m.state_file)
    }

    pub(crate) fn len(&self) -> usize {
        locked(&self.entries).len()
    }
}
