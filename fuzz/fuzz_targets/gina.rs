//! What the portal does with a posted container: extract the base64 from
//! the form (or a whole uploaded file), parse the header, open it with a
//! key — and the mail view of whatever decrypts (sanitiser, MIME parser).
//! Nothing may panic; only a genuine container with the right key opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use siegel_gina::container::{self, SealParams};
use siegel_gina::{ContentKey, Lang};
use siegel_types::Address;

fuzz_target!(|data: &[u8]| {
    let recipient = Address::parse("bob@partner.example").expect("valid address");
    let key = ContentKey::from_bytes(&[7u8; 32]).expect("32 bytes");
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(bytes) = siegel_gina::html::decode_posted(text) {
            if let Ok(p) = container::parse(&bytes) {
                let _ = p.open(&key, &recipient);
            }
        }
    }
    if let Ok(p) = container::parse(data) {
        assert!(p.open(&key, &recipient).is_err(), "random bytes never authenticate");
    }
    // The same bytes as a mail inside a real container: the portal's view.
    let params = SealParams { recipient: &recipient, theme: "example.com", now: 1, expires: 2 };
    let (sealed, bytes) = container::seal_bytes(&params, data).expect("sealing works");
    let plain = container::parse(&bytes).expect("own container").open(&sealed.key, &recipient).expect("opens");
    assert_eq!(plain, data);
    let _ = siegel_portal::view_mail(&plain, false, Lang::En);
});
