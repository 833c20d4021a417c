//! The clamd client against a real clamd (private, tiny test database).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use siegel_config::ScannerAddress;
use siegel_filter::{Clamd, ScanError, Skip, Timeouts, VirusScan};
use support::*;
use tokio::io::{AsyncRead, ReadBuf};

fn client(address: &ScannerAddress) -> Clamd {
    Clamd::new(address.clone(), Timeouts::default(), 200 << 20)
}

async fn scan(c: &Clamd, mail: &[u8]) -> VirusScan {
    c.scan(mail, mail.len() as u64)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn clamd_finds_eicar_over_tcp_and_over_a_unix_socket() {
    let d = Daemon::clamd();
    for address in [&d.tcp, &d.unix] {
        let c = client(address);
        assert_eq!(
            scan(&c, EICAR).await,
            VirusScan::Infected {
                signature: EICAR_NAME.into()
            },
            "{address}"
        );
        assert_eq!(scan(&c, &plain_mail()).await, VirusScan::Clean, "{address}");
    }
}

#[tokio::test]
async fn clamd_decodes_mime_and_finds_eicar_and_the_custom_signature_in_base64_attachments() {
    let d = Daemon::clamd();
    let c = client(&d.unix);
    let mail = mail_with_attachment(EICAR, "eicar.com");
    assert!(
        !mail.windows(EICAR.len()).any(|w| w == EICAR),
        "the test string must only be there base64-encoded"
    );
    assert_eq!(
        scan(&c, &mail).await,
        VirusScan::Infected {
            signature: EICAR_NAME.into()
        }
    );
    let mut doc = b"%PDF-1.4 harmless looking document ".to_vec();
    doc.extend_from_slice(CUSTOM);
    assert_eq!(
        scan(&c, &mail_with_attachment(&doc, "report.pdf")).await,
        VirusScan::Infected {
            signature: CUSTOM_NAME.into()
        }
    );
    assert_eq!(
        scan(&c, &mail_with_attachment(b"just some bytes", "notes.txt")).await,
        VirusScan::Clean
    );
}

#[tokio::test]
async fn clamd_calls_real_mails_clean() {
    let d = Daemon::clamd();
    let c = client(&d.tcp);
    for (name, mail) in real_mails() {
        assert_eq!(scan(&c, &mail).await, VirusScan::Clean, "{name}");
    }
}

#[tokio::test]
async fn clamd_answers_ping_and_version() {
    let d = Daemon::clamd();
    for address in [&d.tcp, &d.unix] {
        let c = client(address);
        c.ping().await.unwrap();
        let v = c.version().await.unwrap();
        assert!(v.starts_with("ClamAV 1."), "{v}");
    }
}

#[tokio::test]
async fn clamd_stream_max_length_is_a_clear_skip_not_a_broken_pipe() {
    let d = Daemon::clamd_with_stream_max("1M");
    for address in [&d.unix, &d.tcp] {
        let c = client(address);
        let mut mail = plain_mail();
        mail.resize(3 << 20, b'a');
        let len = mail.len() as u64;
        assert_eq!(
            scan(&c, &mail).await,
            VirusScan::Skipped {
                why: Skip::DaemonLimit { size: len }
            },
            "{address}"
        );
        // Just under the limit it is scanned.
        let mut small = mail_with_attachment(EICAR, "e.com");
        small.resize(1000 * 1000, b' ');
        assert!(
            matches!(scan(&c, &small).await, VirusScan::Infected { .. }),
            "{address}"
        );
    }
}

#[tokio::test]
async fn our_size_limit_skips_the_scan_without_connecting() {
    // Nothing listens there: the skip must come before any connection.
    let c = Clamd::new(
        ScannerAddress::Unix("/nonexistent/clamd.sock".into()),
        Timeouts::default(),
        1000,
    );
    let mail = vec![b'x'; 1001];
    assert_eq!(
        scan(&c, &mail).await,
        VirusScan::Skipped {
            why: Skip::TooLarge {
                size: 1001,
                limit: 1000
            }
        }
    );
}

#[tokio::test]
async fn only_len_octets_are_scanned_and_a_short_mail_is_an_error() {
    let d = Daemon::clamd();
    let c = client(&d.unix);
    // What follows the content (the spool's envelope trailer) is not mail.
    let mut content = plain_mail();
    let len = content.len() as u64;
    content.extend_from_slice(EICAR);
    assert_eq!(c.scan(&content[..], len).await.unwrap(), VirusScan::Clean);
    match c.scan(&plain_mail()[..], len + 10).await {
        Err(ScanError::ShortContent { expected, got }) => {
            assert_eq!((expected, got), (len + 10, len));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_clamd_that_is_not_there_is_a_connect_error() {
    let d = Daemon::clamd();
    let gone = d.tcp.clone();
    drop(d);
    for address in [gone, ScannerAddress::Unix("/nonexistent/clamd.sock".into())] {
        let started = Instant::now();
        match client(&address).scan(&b"x"[..], 1).await {
            Err(ScanError::Connect { .. }) => {}
            other => panic!("{address}: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}

/// A mail of `len` octets made up as it is read: `a`s, with EICAR in the
/// last line. Nothing of it exists in memory beyond one read buffer.
struct Generated {
    len: u64,
    pos: u64,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let tail_start = self.len - EICAR.len() as u64;
        let n = (buf.remaining() as u64).min(self.len - self.pos) as usize;
        let mut chunk = vec![b'a'; n];
        for (i, b) in chunk.iter_mut().enumerate() {
            let at = self.pos + i as u64;
            if at >= tail_start {
                *b = EICAR[(at - tail_start) as usize];
            } else if at % 100 == 99 {
                *b = b'\n';
            }
        }
        buf.put_slice(&chunk);
        self.pos += n as u64;
        Poll::Ready(Ok(()))
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    field("VmHWM:")
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .unwrap()
}

#[tokio::test]
async fn a_100_mb_mail_is_streamed_to_clamd_not_held_in_memory() {
    let d = Daemon::clamd_with_stream_max("120M");
    let c = client(&d.unix);
    let len = 100 << 20;
    let before = rss_kib();
    let result = c.scan(Generated { len, pos: 0 }, len).await.unwrap();
    // clamd saw the last octets: the whole stream arrived.
    assert_eq!(
        result,
        VirusScan::Infected {
            signature: EICAR_NAME.into()
        }
    );
    let peak = peak_rss_kib();
    assert!(
        peak < before + 30 * 1024,
        "peak RSS {peak} KiB vs {before} KiB before the scan: the mail was buffered"
    );
}
