//! What one scanner found, as data.

use std::fmt;

use siegel_types::SpamScore;

/// clamd's result for one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirusScan {
    /// clamd scanned the whole mail (MIME decoded, archives opened as far
    /// as its limits go) and found nothing.
    Clean,
    /// clamd found this signature.
    Infected { signature: String },
    /// The mail was not scanned; `why` says why.
    Skipped { why: Skip },
}

/// spamd's result for one mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpamScan {
    /// Below spamd's threshold.
    Ham(SpamReport),
    /// At or above spamd's threshold.
    Spam(SpamReport),
    /// The mail was not scanned; `why` says why.
    Skipped { why: Skip },
}

/// What spamd says about a mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpamReport {
    pub score: SpamScore,
    /// spamd's `required_score` for the user it scanned as.
    pub threshold: SpamScore,
    /// The rules that hit (`SYMBOLS`); empty for `CHECK` and `REPORT`.
    pub symbols: Vec<String>,
    /// The human-readable report (`REPORT` only).
    pub report: Option<String>,
}

/// Why a mail was not scanned. Never an error: the filter decides what an
/// unscanned mail may do (see `fail_open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Larger than our limit for this scanner, so it was not sent.
    TooLarge { size: u64, limit: u64 },
    /// clamd refused the stream as larger than its `StreamMaxLength`.
    DaemonLimit { size: u64 },
}

impl Skip {
    /// A short token for headers (`reason=too-large`).
    pub fn token(&self) -> &'static str {
        "too-large"
    }
}

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size, limit } => {
                write!(f, "too large to scan ({size} octets, limit {limit})")
            }
            Self::DaemonLimit { size } => write!(
                f,
                "larger than clamd's StreamMaxLength ({size} octets): raise StreamMaxLength in clamd.conf \
                 to at least filter.virus_max_scan_size"
            ),
        }
    }
}
