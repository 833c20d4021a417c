//! Feeds arbitrary bytes to the spamd answer parser, whole and cut at
//! points the first byte chooses (the client feeds it what has arrived so
//! far). Checks: no panic; limits hold; an answer that is decided (done or
//! refused) on a prefix stays decided the same way when more bytes come, so
//! the client may stop reading as soon as it is decided.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siegel_filter::spamd::reply::{MAX_REPLY, Progress, parse, parse_status};

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let _ = parse_status(data);
    let whole = parse(data, false);
    let at_eof = parse(data, true);
    assert!(!matches!(at_eof, Ok(Progress::NeedMore)), "EOF must decide");
    if let Ok(Progress::Done(r)) = &whole {
        assert!(r.body.len() <= MAX_REPLY);
        assert_eq!(&at_eof, &whole, "a complete answer does not depend on EOF");
    }
    if data.len() > MAX_REPLY {
        return;
    }
    let step = usize::from(step) + 1;
    let mut cut = 0;
    while cut < data.len() {
        let partial = parse(&data[..cut], false);
        if !matches!(partial, Ok(Progress::NeedMore)) {
            assert_eq!(partial, whole, "decided at {cut} of {}", data.len());
        }
        cut += step;
    }
});
