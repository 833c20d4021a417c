//! Feeds arbitrary bytes to the clamd answer parser. Checks: no panic, and
//! what it accepts is what the filter may act on (a signature name is never
//! empty and has no control characters, so it cannot break a header or a
//! log line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use siegel_filter::clamd::{ClamdReply, parse_reply};

fuzz_target!(|data: &[u8]| {
    match parse_reply(data) {
        Ok(ClamdReply::Found(name)) => {
            assert!(!name.is_empty());
            assert!(!name.chars().any(char::is_control));
        }
        Ok(ClamdReply::Error(message)) => assert!(!message.chars().any(char::is_control)),
        Ok(ClamdReply::Clean | ClamdReply::SizeLimit) => {}
        Err(why) => assert!(why.len() < 1000, "messages stay short"),
    }
});
