//! One file per stage. Each stage is a type implementing [`crate::Stage`];
//! the order they run in is the list in [`crate::Pipeline::standard`].

pub mod policy;
pub mod received;

pub use policy::{Classify, Decide, SIEGEL_PREFIX, SplitCopies, StripSiegelHeaders};
pub use received::ReceivedHeader;
