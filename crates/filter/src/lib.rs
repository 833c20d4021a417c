//! Virus and spam filtering through the scanners' own daemons.
//!
//! - [`Clamd`]: ClamAV's clamd, `zINSTREAM` over TCP or a Unix socket, the
//!   mail streamed in length-prefixed chunks; `PING`/`VERSION` for health.
//! - [`Spamd`]: SpamAssassin's spamd, `SPAMC/1.5` (`SYMBOLS`, `REPORT`,
//!   `CHECK`); its answer parser ([`spamd::reply`]) is sans-IO and fuzzed.
//! - [`Filter`]: runs the configured scanners on one mail (read once, sent
//!   to both at the same time) and returns a [`FilterVerdict`]: deliver
//!   with `X-Siegel-Virus`/`X-Siegel-Spam` headers, quarantine, reject
//!   with a reason in English and German, or a temporary failure while a
//!   scanner is down (unless `fail_open`).
//! - [`quarantine`]: quarantined mail is a held spool entry with a
//!   `quarantine: …` note; list, release (back through the pipeline),
//!   delete.
//!
//! Every step with a daemon has a deadline (connect timeout, and the scan's
//! overall timeout for every write and read), and answers are parsed with
//! limits, so a daemon that talks garbage or nothing yields a typed
//! [`ScanError`], never a panic or a hang.
//!
//! The pipeline stage that calls [`Filter::scan`] lives in the pipeline;
//! this crate knows the spool only for the quarantine.

pub mod at_smtp;
pub mod clamd;
mod conn;
mod error;
mod filter;
pub mod quarantine;
mod result;
pub mod spamd;
mod verdict;

pub use clamd::Clamd;
pub use conn::Timeouts;
pub use error::{ScanError, Scanner, Step};
pub use filter::{Filter, FilterError};
pub use result::{Skip, SpamReport, SpamScan, VirusScan};
pub use siegel_types::SpamScore;
pub use spamd::{BadUser, Spamd, SpamdCommand};
pub use verdict::{
    Action, FilterVerdict, Header, RELEASED_HEADER, Reason, Rules, SPAM_HEADER, VIRUS_HEADER,
    decide,
};
