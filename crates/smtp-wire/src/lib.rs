//! Sans-IO SMTP for the server side.
//!
//! Everything here works on byte slices and never touches a socket, so the
//! whole protocol surface can be unit-tested by splitting input at every
//! offset and fuzzed (see `fuzz/`). The tokio session loop in `smtp-in` only
//! moves bytes between the network, these state machines and the spool.
//!
//! - [`LineReader`]: command lines with a length limit that resynchronises
//!   after an over-long line instead of buffering it.
//! - [`parse_command`]: a command line into a typed [`Command`], with the
//!   precise reply for every syntax error ([`CommandError::reply`]).
//! - [`DataReceiver`]: DATA content, dot-unstuffed, CRLF-normalised, with the
//!   SMTP-smuggling defence (only `<CR><LF>.<CR><LF>` ends the content).
//! - [`HeaderScanner`]: a bounded look at the header section while the
//!   content streams past, to log the `Message-ID`.

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod command;
mod data;
mod headers;
mod line;

pub use command::{Command, CommandError, MailFrom, RcptTo, parse_command};
pub use data::{DataOutcome, DataProgress, DataReceiver};
pub use headers::HeaderScanner;
pub use line::{LineEvent, LineReader};
