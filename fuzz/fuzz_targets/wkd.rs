//! Feeds arbitrary bytes to what the WKD code reads from outside: a WKD
//! server's response body (filtered for an address), stored material to
//! be served, and hash path segments. Invariants: nothing panics; a kept
//! key names the address and is public only; hashes are 32 characters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siegel_types::Address;

fuzz_target!(|data: &[u8]| {
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"a@example.org"[..], data),
    };
    let text = String::from_utf8_lossy(head);
    let _ = siegel_wkd::is_local_hash(&text);
    if let Ok(address) = Address::parse(&text) {
        assert_eq!(siegel_wkd::local_hash(address.local()).len(), 32);
        let _ = siegel_wkd::urls(&address);
        if let siegel_wkd::Lookup::Found(k) =
            siegel_wkd::filter(&address, body, "https://fuzz.example/".to_owned())
        {
            assert!(!k.cert.is_tsk());
            assert!(
                siegel_openpgp::addresses(&k.cert)
                    .iter()
                    .any(|a| a.as_str().eq_ignore_ascii_case(address.as_str()))
            );
        }
    }
    if let Ok(public) = siegel_wkd::public_key_bytes(body) {
        assert!(!public.is_empty());
    }
});
