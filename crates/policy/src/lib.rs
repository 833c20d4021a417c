//! Siegel's policy core: which outbound mail is confidential, and how each
//! recipient must receive it.
//!
//! This crate is pure logic (no I/O, no async, no database) so that the
//! decision that protects every mail can be tested exhaustively and
//! explained exactly: the pipeline gathers the facts (headers, keys, knobs),
//! this crate decides, and tracking stores the [`Decision`] with its reasons.
//!
//! - [`classify`]: confidential or not, for whom, why; the cleaned Subject.
//! - [`decide`]/[`decide_all`]: the encryption hierarchy per recipient.
//! - [`Method`]/[`Registry`]: the interface every protection method implements.
//! - [`split`]: one outgoing copy per method group.

mod classify;
mod decide;
mod headers;
mod method;
mod rfc2047;
mod split;

pub use classify::{
    Classification, ClassificationRules, MSIP_LABELS, Reason, RuleProblem, SENSITIVITY,
    SIEGEL_CLASSIFICATION, classify,
};
pub use decide::{Decision, KeyRef, MethodKind, Outcome, Preference, RecipientFacts, decide};
pub use method::{
    BoxFuture, CopyInfo, Method, MethodError, PassThrough, Registry, Unavailable, decide_all,
};
pub use split::{Group, Split, split};
