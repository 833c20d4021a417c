//! Siegel's shared vocabulary. Everything here is plain data: no I/O, no
//! async, so that every other crate (and the fuzzers) can use it freely.

mod address;
mod envelope;
mod metrics;
mod pattern;
mod queue_id;
mod reply;
mod score;

pub use address::{Address, AddressError, ReversePath, normalise_domain};
pub use envelope::{Direction, DsnRet, Envelope, NotifyOn, Origin, Recipient};
pub use metrics::Counters;
pub use pattern::AddressPattern;
pub use queue_id::{QueueId, QueueIdError};
pub use reply::SmtpReply;
pub use score::{SpamScore, SpamScoreError};
