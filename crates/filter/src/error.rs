//! Why a scan produced no result.
//!
//! Kept apart the way DESIGN.md asks: the daemon could not be reached or
//! was too slow (`Connect`, `Timeout`, `Io`), it misbehaved (`Protocol`),
//! it answered with an error of its own (`Daemon`), or our side failed to
//! read the mail (`Source`, `ShortContent`). The filter treats all but the
//! last two as "scanner down": the mail waits unless `fail_open` is set.

use std::fmt;
use std::io;
use std::time::Duration;

/// Which scanner an error or result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanner {
    /// ClamAV's daemon.
    Clamd,
    /// SpamAssassin's daemon.
    Spamd,
}

impl fmt::Display for Scanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Clamd => "clamd",
            Self::Spamd => "spamd",
        })
    }
}

/// The step of a conversation with a daemon, for "timed out while …".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Connecting,
    Sending,
    Reading,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Sending => "sending the mail",
            Self::Reading => "waiting for the answer",
        })
    }
}

/// Why a scan produced no result.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The daemon could not be reached: refused, no such socket, unknown host.
    #[error("cannot connect to {scanner} at {address}: {source}")]
    Connect {
        scanner: Scanner,
        address: String,
        #[source]
        source: io::Error,
    },
    /// A step did not finish in time (connect timeout, or the scan's
    /// overall deadline).
    #[error("{scanner} at {address} timed out while {step} (limit {limit:?})")]
    Timeout {
        scanner: Scanner,
        address: String,
        step: Step,
        limit: Duration,
    },
    /// The connection failed while talking (reset, closed before answering).
    #[error("{scanner} at {address}: connection failed while {step}: {source}")]
    Io {
        scanner: Scanner,
        address: String,
        step: Step,
        #[source]
        source: io::Error,
    },
    /// The daemon answered something its protocol does not allow (peer
    /// misbehaved, or it is not the daemon we think).
    #[error("{scanner} at {address} broke its protocol: {detail}")]
    Protocol {
        scanner: Scanner,
        address: String,
        detail: String,
    },
    /// The daemon answered with an error of its own (out of memory, bad
    /// request, a limit).
    #[error("{scanner} at {address} reported an error: {message}")]
    Daemon {
        scanner: Scanner,
        address: String,
        message: String,
    },
    /// Reading the mail to scan failed: our side, not the scanner's.
    #[error("reading the mail to scan failed: {0}")]
    Source(#[source] io::Error),
    /// The mail ended before the length we were told (a truncated spool
    /// file, or the caller's bug); nothing incomplete is called clean.
    #[error("the mail ended after {got} of {expected} octets")]
    ShortContent { expected: u64, got: u64 },
}

impl ScanError {
    /// Whether the scanner is to blame (down, slow, broken) rather than our
    /// side: only then may `fail_open` deliver the mail unscanned.
    pub fn is_scanner_failure(&self) -> bool {
        !matches!(self, Self::Source(_) | Self::ShortContent { .. })
    }
}
