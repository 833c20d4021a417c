//! One file per stage. Each stage is a type implementing [`crate::Stage`];
//! the order they run in is the list in [`crate::Pipeline::standard_with`].

pub mod autocrypt;
pub mod decrypt;
pub mod filter;
pub mod harvest;
pub mod policy;
pub mod received;
pub mod stamp;
pub mod verify;

pub use autocrypt::Autocrypt;
pub use decrypt::Decrypt;
pub use filter::Scan;
pub use harvest::Harvest;
pub use policy::{Classify, Decide, SIEGEL_PREFIX, SplitCopies, StripSiegelHeaders};
pub use received::ReceivedHeader;
pub use stamp::Stamp;
pub use verify::Verify;
