//! Feeds arbitrary bytes through the session's view of the wire: command
//! lines are read and parsed; after a `DATA` line the rest goes through the
//! DATA receiver, then back to commands. Checks the invariants the server
//! relies on: progress is always made, limits hold, stored content has no
//! bare LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siegel_smtp_wire::{
    Command, DataReceiver, HeaderScanner, LineEvent, LineReader, parse_command,
};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses a chunk size so that splits are exercised too.
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 64) + 1;
    let mut reader = LineReader::new(64);
    let mut receiver: Option<DataReceiver> = None;
    let mut headers = HeaderScanner::new(256);
    let mut out = Vec::new();
    for piece in data.chunks(chunk) {
        let mut rest = piece;
        while !rest.is_empty() {
            if let Some(rx) = receiver.as_mut() {
                let progress = rx.feed(rest, &mut out);
                assert!(progress.consumed <= rest.len());
                assert!(progress.consumed > 0 || progress.done);
                headers.feed(&out);
                assert!(out.len() <= 1000);
                for (i, &b) in out.iter().enumerate() {
                    assert!(b != b'\n' || (i > 0 && out[i - 1] == b'\r'));
                }
                out.clear();
                rest = &rest[progress.consumed..];
                if progress.done {
                    let _ = rx.outcome();
                    let _ = headers.message_id();
                    receiver = None;
                }
            } else {
                let (n, event) = reader.feed(rest);
                assert!(n > 0 && n <= rest.len());
                rest = &rest[n..];
                if let Some(LineEvent::Line(line)) = event {
                    assert!(line.len() < 64);
                    match parse_command(&line) {
                        Ok(Command::Data) => receiver = Some(DataReceiver::new(1000, 100)),
                        Ok(_) => {}
                        Err(e) => {
                            let _ = e.reply().to_string();
                        }
                    }
                }
            }
        }
    }
});
