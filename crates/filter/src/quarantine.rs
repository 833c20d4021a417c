//! The quarantine: held spool entries whose note starts with `quarantine: `.
//!
//! A quarantined mail stays in the spool (`Stage::Held`), so it keeps the
//! spool's durability, shows in `siegel queue list`, and needs no second
//! store. The note says why (`quarantine: virus Eicar-Signature`,
//! `quarantine: spam, score 12.0 (threshold 5.0)`). An administrator
//! either deletes it (no bounce) or releases it: [`release`] sends it back
//! through the whole pipeline — decryption, signing, encryption still
//! apply, nothing leaves less protected because it was released — with the
//! note `released: quarantine: …`, from which [`was_released`] lets the
//! filter stage deliver it instead of quarantining it again
//! ([`crate::FilterVerdict::after_release`]).
//!
//! Works whether the gateway runs or not (see [`Spool::release`]).

use siegel_spool::{Control, Entry, EntryState, RELEASED, Spool, SpoolError, Stage};
use siegel_types::QueueId;

/// Start of the note of every quarantined entry.
pub const NOTE_PREFIX: &str = "quarantine: ";

/// Why a quarantine operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The entry exists but is not in the quarantine (a mail in delivery,
    /// or held for another reason: `siegel queue` handles those).
    #[error("queue entry {id} is not in the quarantine ({what})")]
    NotQuarantined { id: QueueId, what: String },
    #[error(transparent)]
    Spool(#[from] SpoolError),
}

/// Whether the entry is in the quarantine.
pub fn is_quarantined(entry: &Entry) -> bool {
    entry.state.stage == Stage::Held
        && entry
            .state
            .note
            .as_deref()
            .is_some_and(|n| n.starts_with(NOTE_PREFIX))
}

/// Whether an administrator released this entry from the quarantine (so
/// the filter must deliver it rather than quarantine it again).
pub fn was_released(state: &EntryState) -> bool {
    state
        .note
        .as_deref()
        .and_then(|n| n.strip_prefix(RELEASED))
        .is_some_and(|n| n.starts_with(NOTE_PREFIX))
}

/// Every quarantined entry, oldest first.
pub fn list(spool: &Spool) -> Result<Vec<Entry>, SpoolError> {
    Ok(spool.list()?.into_iter().filter(is_quarantined).collect())
}

/// One quarantined entry, or why it is not one.
pub fn load(spool: &Spool, id: &QueueId) -> Result<Entry, QuarantineError> {
    let entry = spool.load(id)?;
    if is_quarantined(&entry) {
        return Ok(entry);
    }
    let what = match (&entry.state.stage, &entry.state.note) {
        (Stage::Held, Some(note)) => format!("held: {note}"),
        (stage, _) => format!("{stage:?}"),
    };
    Err(QuarantineError::NotQuarantined {
        id: id.clone(),
        what,
    })
}

/// Sends a quarantined mail on through the pipeline.
pub async fn release(spool: &Spool, id: &QueueId) -> Result<(), QuarantineError> {
    load(spool, id)?;
    spool.release(id).await?;
    Ok(())
}

/// Deletes a quarantined mail without a bounce.
pub async fn delete(spool: &Spool, id: &QueueId) -> Result<(), QuarantineError> {
    load(spool, id)?;
    spool.request(Control::Delete(id.clone())).await?;
    Ok(())
}
