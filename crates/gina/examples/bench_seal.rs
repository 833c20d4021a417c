//! `bench/gina/run.sh`: containers built per second for 100 KB mails on one
//! core — seal (AES-256-GCM STREAM), the HTML file (base64) and the carrier
//! mail (MIME), i.e. everything the GINA method does per recipient except
//! the store write; and beside it the AES-256-GCM limit of the same core
//! (`ring` sealing the same bytes in one piece), so the figure reads as a
//! ratio of what the cipher allows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use siegel_gina::container::{SealParams, seal_bytes};
use siegel_gina::html::{FileInfo, file_bytes};
use siegel_gina::mail::{CarrierParams, Person, carrier};
use siegel_gina::{Lang, Themes};
use siegel_types::Address;

fn main() {
    let size: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100 * 1024);
    let seconds: f64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let mut mail =
        b"From: alice@example.com\r\nTo: bob@partner.example\r\nSubject: figures\r\n\r\n".to_vec();
    while mail.len() < size {
        mail.extend_from_slice(
            b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n",
        );
    }
    mail.truncate(size);
    let themes = Themes::embedded().unwrap();
    let theme = themes.default_theme();
    let bob = Address::parse("bob@partner.example").unwrap();
    let alice = Address::parse("alice@example.com").unwrap();
    let run = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < seconds {
            f();
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    let full = run(&mut || {
        let (sealed, bytes) = seal_bytes(
            &SealParams {
                recipient: &bob,
                theme: "example.com",
                now: 1_767_225_600,
                expires: 1_774_915_200,
            },
            &mail,
        )
        .unwrap();
        let file = file_bytes(
            theme,
            Lang::De,
            &FileInfo {
                sender: "alice@example.com",
                recipient: bob.as_str(),
                expires: 1_774_915_200,
                portal_url: "https://portal.example.com",
            },
            &bytes,
        )
        .unwrap();
        let m = carrier(
            theme,
            Lang::De,
            &CarrierParams {
                sender: Person {
                    address: &alice,
                    name: Some("Alice"),
                },
                recipient: &bob,
                original_subject: None,
                show_subject: false,
                portal_url: "https://portal.example.com",
                expires: 1_774_915_200,
                first_time: false,
                date: 1_767_225_600,
                hostname: "siegel.example.com",
                original_message_id: None,
                container_id: sealed.header.id.as_str(),
            },
            &file,
        )
        .unwrap();
        std::hint::black_box(m);
    });
    let seal_only = run(&mut || {
        std::hint::black_box(
            seal_bytes(
                &SealParams {
                    recipient: &bob,
                    theme: "example.com",
                    now: 1,
                    expires: 2,
                },
                &mail,
            )
            .unwrap(),
        );
    });
    // The cipher's limit: one AES-256-GCM seal of the same bytes.
    let key = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &[7u8; 32]).unwrap(),
    );
    let aes = run(&mut || {
        let mut buf = mail.clone();
        key.seal_in_place_append_tag(
            ring::aead::Nonce::assume_unique_for_key([1; 12]),
            ring::aead::Aad::empty(),
            &mut buf,
        )
        .unwrap();
        std::hint::black_box(buf);
    });
    println!("mail size: {size} bytes, {seconds} s per measurement, 1 thread");
    println!("containers/s (seal + HTML file + carrier mail): {full:.0}");
    println!("containers/s (seal only): {seal_only:.0}");
    println!("AES-256-GCM of the same bytes (ring, one piece): {aes:.0}/s");
    println!("full container vs. bare AES-GCM: {:.2}", full / aes);
}
