//! The Filter with both real daemons: one read of the mail, both scanners,
//! one verdict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use siegel_config::{Config, ScannerAddress, SpamAction, VirusAction};
use siegel_filter::{Action, Filter, FilterError, FilterVerdict, ScanError, SpamScan, VirusScan};
use siegel_types::Direction;
use support::*;

fn config(clamd: Option<&ScannerAddress>, spamd: Option<&ScannerAddress>) -> siegel_config::Filter {
    let mut c = Config::defaults().filter;
    c.clamd = clamd.cloned();
    c.spamd = spamd.cloned();
    c.connect_timeout = Duration::from_secs(2);
    c.scan_timeout = Duration::from_secs(30);
    c
}

async fn run(f: &Filter, direction: Direction, mail: &[u8]) -> FilterVerdict {
    f.scan(direction, mail, mail.len() as u64)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn gtube_mail() -> Vec<u8> {
    let mut mail = plain_mail();
    mail.extend_from_slice(format!("{GTUBE}\r\n").as_bytes());
    mail
}

#[tokio::test]
async fn the_filter_scans_with_clamd_and_spamd_and_decides() {
    let (clamd, spamd) = (Daemon::clamd(), Daemon::spamd());
    let filter = Filter::from_config(&config(Some(&clamd.unix), Some(&spamd.tcp))).unwrap();

    // A normal mail inbound: both scanned, delivered with both headers.
    let v = run(&filter, Direction::Inbound, &plain_mail()).await;
    assert_eq!(v.action, Action::Deliver, "{}", v.summary());
    let lines = v.header_lines();
    assert!(
        lines.starts_with("X-Siegel-Virus: clean\r\nX-Siegel-Spam: no; score="),
        "{lines}"
    );
    assert!(lines.ends_with("; threshold=5.0\r\n"), "{lines}");
    assert!(matches!(v.virus, Some(Ok(VirusScan::Clean))));
    assert!(matches!(v.spam, Some(Ok(SpamScan::Ham(_)))));

    // Outbound: virus-scanned only (the default directions).
    let v = run(&filter, Direction::Outbound, &plain_mail()).await;
    assert_eq!(v.header_lines(), "X-Siegel-Virus: clean\r\n");
    assert!(v.spam.is_none());

    // EICAR in an attachment: rejected, with the reason in both languages.
    let v = run(
        &filter,
        Direction::Inbound,
        &mail_with_attachment(EICAR, "invoice.com"),
    )
    .await;
    let Action::Reject { reason } = &v.action else {
        panic!("{}", v.summary())
    };
    assert!(
        reason.en.contains(EICAR_NAME) && reason.de.contains(EICAR_NAME),
        "{reason:?}"
    );
    assert!(
        v.header_lines()
            .contains(&format!("X-Siegel-Virus: infected; name={EICAR_NAME}\r\n"))
    );
    // spamd saw the same mail at the same time.
    assert!(
        matches!(v.spam, Some(Ok(SpamScan::Ham(_) | SpamScan::Spam(_)))),
        "{}",
        v.summary()
    );

    // GTUBE: tagged by default.
    let v = run(&filter, Direction::Inbound, &gtube_mail()).await;
    assert_eq!(v.action, Action::Deliver);
    assert!(
        v.header_lines().contains("X-Siegel-Spam: yes; score=10"),
        "{}",
        v.header_lines()
    );

    // Quarantine and reject as configured, and the reject score.
    let mut c = config(Some(&clamd.tcp), Some(&spamd.unix));
    c.spam_action = SpamAction::Quarantine;
    c.virus_action = VirusAction::Quarantine;
    let quarantining = Filter::from_config(&c).unwrap();
    let v = run(&quarantining, Direction::Inbound, &gtube_mail()).await;
    match &v.action {
        Action::Quarantine { note } => {
            assert!(note.starts_with("quarantine: spam, score 10"), "{note}")
        }
        other => panic!("{other:?}"),
    }
    let v = run(
        &quarantining,
        Direction::Inbound,
        &mail_with_attachment(EICAR, "x.com"),
    )
    .await;
    assert_eq!(
        v.action,
        Action::Quarantine {
            note: format!("quarantine: virus {EICAR_NAME}")
        }
    );
    c.spam_reject_score = Some("500".parse().unwrap());
    let v = run(
        &Filter::from_config(&c).unwrap(),
        Direction::Inbound,
        &gtube_mail(),
    )
    .await;
    assert!(matches!(v.action, Action::Reject { .. }), "{}", v.summary());

    // A released mail is delivered, headers fresh.
    let v = run(&quarantining, Direction::Inbound, &gtube_mail())
        .await
        .after_release();
    assert_eq!(v.action, Action::Deliver);
    assert!(
        v.header_lines()
            .ends_with("X-Siegel-Quarantine: released\r\n")
    );
}

/// Counts what the filter reads.
struct Counted<'a> {
    inner: &'a [u8],
    read: usize,
}

impl tokio::io::AsyncRead for Counted<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        this.read += buf.filled().len() - before;
        r
    }
}

#[tokio::test]
async fn a_mail_too_large_for_clamd_is_quarantined_and_not_fully_read() {
    let clamd = Daemon::clamd_with_stream_max("1M");
    // spamd is configured but the mail is above its limit: it is never asked.
    let dead_spamd = ScannerAddress::Unix("/nonexistent/spamd.sock".into());
    let filter = Filter::from_config(&config(Some(&clamd.unix), Some(&dead_spamd))).unwrap();
    let mut mail = plain_mail();
    mail.resize(5 << 20, b'a');
    let mut counted = Counted {
        inner: &mail[..],
        read: 0,
    };
    let v = filter
        .scan(Direction::Inbound, &mut counted, mail.len() as u64)
        .await
        .unwrap();
    assert!(
        counted.read < 3 << 20,
        "{} of {} octets read although clamd stopped at 1 MiB",
        counted.read,
        mail.len()
    );
    match &v.action {
        Action::Quarantine { note } => {
            assert!(
                note.contains("not virus-scanned") && note.contains("StreamMaxLength"),
                "{note}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        v.header_lines(),
        "X-Siegel-Virus: unscanned; reason=too-large\r\nX-Siegel-Spam: unscanned; reason=too-large\r\n"
    );
    // With fail_open the admin accepts it unscanned.
    let mut c = config(Some(&clamd.unix), None);
    c.fail_open = true;
    let v = run(&Filter::from_config(&c).unwrap(), Direction::Inbound, &mail).await;
    assert_eq!(v.action, Action::Deliver);
}

#[tokio::test]
async fn a_scanner_that_is_down_makes_the_mail_wait_or_pass_marked_with_fail_open() {
    let clamd = Daemon::clamd();
    let gone = ScannerAddress::Unix("/nonexistent/spamd.sock".into());
    let v = run(
        &Filter::from_config(&config(Some(&clamd.unix), Some(&gone))).unwrap(),
        Direction::Inbound,
        &plain_mail(),
    )
    .await;
    match &v.action {
        Action::TempFail { reason } => assert!(
            reason.starts_with("spam scan failed: cannot connect to spamd"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(v.spam, Some(Err(ScanError::Connect { .. }))));

    let mut c = config(Some(&clamd.unix), Some(&gone));
    c.fail_open = true;
    let v = run(
        &Filter::from_config(&c).unwrap(),
        Direction::Inbound,
        &plain_mail(),
    )
    .await;
    assert_eq!(v.action, Action::Deliver);
    assert_eq!(
        v.header_lines(),
        "X-Siegel-Virus: clean\r\nX-Siegel-Spam: unscanned; reason=scanner-error\r\n"
    );
}

#[tokio::test]
async fn the_filter_reads_only_len_octets_and_refuses_a_short_mail() {
    let clamd = Daemon::clamd();
    let filter = Filter::from_config(&config(Some(&clamd.unix), None)).unwrap();
    let mut content = plain_mail();
    let len = content.len() as u64;
    content.extend_from_slice(EICAR); // e.g. the spool's trailer after the content
    let v = filter
        .scan(Direction::Inbound, &content[..], len)
        .await
        .unwrap();
    assert_eq!(v.action, Action::Deliver);
    match filter
        .scan(Direction::Inbound, &plain_mail()[..], len + 1)
        .await
    {
        Err(FilterError::Short { expected, got }) => assert_eq!((expected, got), (len + 1, len)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn without_scanners_for_a_direction_nothing_is_done() {
    let filter = Filter::from_config(&config(None, None)).unwrap();
    assert!(!filter.scans(Direction::Inbound) && !filter.scans(Direction::Outbound));
    // Not even the content is read.
    let v = filter
        .scan(Direction::Inbound, tokio::io::empty(), 1000)
        .await
        .unwrap();
    assert_eq!(v.action, Action::Deliver);
    assert!(v.headers.is_empty());
    let spam_only = Filter::from_config(&config(
        None,
        Some(&ScannerAddress::Tcp("127.0.0.1:1".into())),
    ))
    .unwrap();
    assert!(spam_only.scans(Direction::Inbound) && !spam_only.scans(Direction::Outbound));
}

#[tokio::test]
async fn health_reports_each_scanner() {
    let clamd = Daemon::clamd();
    let filter = Filter::from_config(&config(
        Some(&clamd.tcp),
        Some(&ScannerAddress::Unix("/nonexistent/spamd.sock".into())),
    ))
    .unwrap();
    let health = filter.health().await;
    assert_eq!(health.len(), 2);
    assert!(
        health[0].1.as_ref().is_ok_and(|v| v.starts_with("ClamAV ")),
        "{health:?}"
    );
    assert!(
        matches!(health[1].1, Err(ScanError::Connect { .. })),
        "{health:?}"
    );
}
