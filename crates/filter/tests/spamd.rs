//! The spamd client against a real spamd (private; packaged rules, offline).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use siegel_config::ScannerAddress;
use siegel_filter::{Skip, SpamScan, SpamScore, Spamd, SpamdCommand, Timeouts};
use support::*;

fn client(address: &ScannerAddress) -> Spamd {
    Spamd::new(address.clone(), Timeouts::default(), 500 * 1024)
}

fn gtube_mail() -> Vec<u8> {
    let mut mail = plain_mail();
    let body = mail.len() - "Alice\r\n".len();
    mail.splice(body..body, format!("{GTUBE}\r\n\r\n").into_bytes());
    mail
}

async fn scan(s: &Spamd, mail: &[u8]) -> SpamScan {
    s.scan(mail, mail.len() as u64)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One spamd for the whole test: it takes seconds to start (rule
/// compilation), so the commands and both transports share it.
#[tokio::test]
async fn spamd_calls_gtube_spam_and_a_normal_mail_ham_over_tcp_and_unix() {
    let d = Daemon::spamd();
    eprintln!("spamd ready after {:.1}s", d.start_seconds);
    for address in [&d.tcp, &d.unix] {
        let s = client(address);
        s.ping().await.unwrap();

        let SpamScan::Spam(r) = scan(&s, &gtube_mail()).await else {
            panic!("GTUBE not spam over {address}")
        };
        assert!(r.score >= SpamScore::points(1000), "{r:?}");
        assert_eq!(
            r.threshold,
            SpamScore::points(5),
            "Debian's default required_score"
        );
        assert!(r.symbols.iter().any(|s| s == "GTUBE"), "{:?}", r.symbols);
        assert_eq!(r.report, None);

        let SpamScan::Ham(r) = scan(&s, &plain_mail()).await else {
            panic!("a normal mail is spam over {address}")
        };
        assert!(r.score < r.threshold, "{r:?}");
        assert!(!r.symbols.iter().any(|s| s == "GTUBE"), "{:?}", r.symbols);
    }

    // CHECK: verdict only. REPORT: the human-readable table.
    let check = client(&d.tcp).with_command(SpamdCommand::Check);
    let SpamScan::Spam(r) = scan(&check, &gtube_mail()).await else {
        panic!()
    };
    assert!(r.symbols.is_empty() && r.report.is_none());
    let report = client(&d.unix).with_command(SpamdCommand::Report);
    let SpamScan::Spam(r) = scan(&report, &gtube_mail()).await else {
        panic!()
    };
    let text = r.report.unwrap();
    assert!(text.contains("GTUBE") && text.contains("1000"), "{text}");

    // A named user (spamd runs without user configs, but takes the header).
    let user = client(&d.unix).with_user("siegel").unwrap();
    assert!(matches!(
        scan(&user, &gtube_mail()).await,
        SpamScan::Spam(_)
    ));
    assert!(client(&d.unix).with_user("two words").is_err());
    assert!(client(&d.unix).with_user("x\r\nContent-length: 1").is_err());

    // Real mails: the shared samples are scanned without error (their
    // scores vary; none is GTUBE).
    let s = client(&d.tcp);
    for (name, mail) in real_mails() {
        match scan(&s, &mail).await {
            SpamScan::Ham(r) | SpamScan::Spam(r) => {
                assert!(!r.symbols.iter().any(|s| s == "GTUBE"), "{name}: {r:?}")
            }
            other => panic!("{name}: {other:?}"),
        }
    }

    // Many scans at once (more than spamd's children): all answered.
    let s = client(&d.unix);
    let mails: Vec<Vec<u8>> = (0..8)
        .map(|i| {
            if i % 2 == 0 {
                gtube_mail()
            } else {
                plain_mail()
            }
        })
        .collect();
    let results = futures_join(&s, &mails).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(matches!(r, SpamScan::Spam(_)), i % 2 == 0, "{i}: {r:?}");
    }
}

async fn futures_join(s: &Spamd, mails: &[Vec<u8>]) -> Vec<SpamScan> {
    let mut set = tokio::task::JoinSet::new();
    for (i, m) in mails.iter().enumerate() {
        let (s, m) = (s.clone(), m.clone());
        set.spawn(async move { (i, s.scan(&m[..], m.len() as u64).await.unwrap()) });
    }
    let mut out: Vec<(usize, SpamScan)> = set.join_all().await;
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

#[tokio::test]
async fn spamd_size_limit_skips_the_scan_without_connecting() {
    let s = Spamd::new(
        ScannerAddress::Unix("/nonexistent/spamd.sock".into()),
        Timeouts::default(),
        500 * 1024,
    );
    let mail = vec![b'x'; 500 * 1024 + 1];
    assert_eq!(
        scan(&s, &mail).await,
        SpamScan::Skipped {
            why: Skip::TooLarge {
                size: 500 * 1024 + 1,
                limit: 500 * 1024
            }
        }
    );
}
