//! The scan at SMTP time: after the mail is durable and before the client
//! hears the answer, so that a virus (or spam above the reject score) is
//! refused to the sending server instead of bounced to a sender address
//! that is probably forged (backscatter). PRODUCT.md: "reject at SMTP time
//! where possible, else quarantine".
//!
//! The verdict is written into the entry's state as a note
//! ([`SCANNED_AT_SMTP`]) with the scan's header lines, so the pipeline's
//! filter stage does not scan again. That state is written without fsync:
//! lost in a crash, the pipeline simply scans again.

use siegel_spool::{EntryState, Spool};
use siegel_types::{Direction, QueueId};

use crate::{Action, Filter};

/// Prefix of the note of a mail scanned at SMTP time; what follows is the
/// pipeline's part of the verdict: `deliver` or `quarantine: …`.
pub const SCANNED_AT_SMTP: &str = "filter: scanned at SMTP time: ";

/// What the SMTP server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtSmtp {
    /// 250; the pipeline carries out the recorded verdict.
    Accept,
    /// Refuse with this reply; the caller removes the mail.
    Refuse {
        code: u16,
        status: &'static str,
        text: String,
    },
}

/// What the filter stage finds recorded for a mail scanned at SMTP time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Deliver (the scan's header lines are in the entry's prepend).
    Deliver,
    /// Quarantine with this note.
    Quarantine(String),
}

/// The verdict recorded in `note`, if the mail was scanned at SMTP time.
pub fn recorded(note: Option<&str>) -> Option<Recorded> {
    let rest = note?.strip_prefix(SCANNED_AT_SMTP)?;
    if rest == "deliver" {
        Some(Recorded::Deliver)
    } else {
        rest.starts_with(crate::quarantine::NOTE_PREFIX)
            .then(|| Recorded::Quarantine(rest.to_owned()))
    }
}

/// Scans the committed mail `id` and records the verdict. Any trouble of
/// our own (the file, the state) accepts: the pipeline scans again and
/// decides, nothing is lost. A scanner that is down answers 451, so the
/// sender retries and the mail is not held here meanwhile.
pub async fn check(
    filter: &Filter,
    spool: &Spool,
    id: &QueueId,
    direction: Direction,
    recipients: usize,
) -> AtSmtp {
    if !filter.scans(direction) {
        return AtSmtp::Accept;
    }
    let (reader, len) = match spool.open_content(id).await {
        Ok(c) => c,
        Err(error) => {
            tracing::warn!(target: "siegel::filter", queue_id = %id, %error, "cannot scan at SMTP time; the pipeline will");
            return AtSmtp::Accept;
        }
    };
    let verdict = match filter.scan(direction, reader, len).await {
        Ok(v) => v,
        Err(error) => {
            tracing::warn!(target: "siegel::filter", queue_id = %id, %error, "cannot scan at SMTP time; the pipeline will");
            return AtSmtp::Accept;
        }
    };
    tracing::info!(target: "siegel::filter", queue_id = %id, ?direction, summary = %verdict.summary(), "scanned at SMTP time");
    let recorded = match &verdict.action {
        Action::Reject { reason } => {
            return AtSmtp::Refuse {
                code: 550,
                status: "5.7.1",
                text: reason.en.clone(),
            };
        }
        Action::TempFail { .. } => {
            return AtSmtp::Refuse {
                code: 451,
                status: "4.7.1",
                text: "Content scanner unavailable, try again later".to_owned(),
            };
        }
        Action::Deliver => "deliver".to_owned(),
        Action::Quarantine { note } => note.clone(),
    };
    let mut state = EntryState::new(recipients);
    state.note = Some(format!("{SCANNED_AT_SMTP}{recorded}"));
    if direction == Direction::Inbound {
        state.prepend = verdict.header_lines();
    }
    if let Err(error) = spool.save_state_unsynced(id, &state).await {
        tracing::warn!(target: "siegel::filter", queue_id = %id, %error, "cannot record the scan; the pipeline scans again");
    }
    AtSmtp::Accept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_notes_are_read_as_verdicts() {
        assert_eq!(
            recorded(Some("filter: scanned at SMTP time: deliver")),
            Some(Recorded::Deliver)
        );
        assert_eq!(
            recorded(Some("filter: scanned at SMTP time: quarantine: spam")),
            Some(Recorded::Quarantine("quarantine: spam".into()))
        );
        assert_eq!(recorded(Some("filter: scanned at SMTP time: reject")), None);
        assert_eq!(recorded(Some("released: quarantine: spam")), None);
        assert_eq!(recorded(None), None);
    }
}
