use super::*;
use crate::error::{Scanner, Step};
use crate::result::Skip;

fn rules() -> Rules {
    Rules::from(&siegel_config::Config::defaults().filter)
}

fn report(score: i32, threshold: i32) -> SpamReport {
    SpamReport {
        score: SpamScore::points(score),
        threshold: SpamScore::points(threshold),
        symbols: vec!["GTUBE".into()],
        report: None,
    }
}

fn down(scanner: Scanner) -> ScanError {
    ScanError::Timeout {
        scanner,
        address: "tcp:127.0.0.1:1".into(),
        step: Step::Reading,
        limit: std::time::Duration::from_secs(1),
    }
}

fn infected() -> Option<Result<VirusScan, ScanError>> {
    Some(Ok(VirusScan::Infected {
        signature: "Win.Test.EICAR_HDB-1".into(),
    }))
}

fn header_of(v: &FilterVerdict, name: &str) -> Option<String> {
    v.headers
        .iter()
        .find(|h| h.name == name)
        .map(|h| h.value.clone())
}

#[test]
fn clean_and_ham_are_delivered_with_both_headers() {
    let v = decide(
        &rules(),
        Some(Ok(VirusScan::Clean)),
        Some(Ok(SpamScan::Ham(report(1, 5)))),
    );
    assert_eq!(v.action, Action::Deliver);
    assert_eq!(
        v.header_lines(),
        "X-Siegel-Virus: clean\r\nX-Siegel-Spam: no; score=1.0; threshold=5.0\r\n"
    );
    assert_eq!(v.summary(), "virus=clean spam=no(1.0/5.0) action=deliver");
}

#[test]
fn a_virus_is_rejected_by_default_with_a_bilingual_reason() {
    let v = decide(&rules(), infected(), None);
    let Action::Reject { reason } = &v.action else {
        panic!("{:?}", v.action)
    };
    assert!(reason.en.contains("Win.Test.EICAR_HDB-1") && reason.en.contains("virus"));
    assert!(reason.de.contains("Win.Test.EICAR_HDB-1") && reason.de.contains("Virus"));
    assert_eq!(reason.one_line(), format!("{} / {}", reason.en, reason.de));
    assert_eq!(
        header_of(&v, VIRUS_HEADER).as_deref(),
        Some("infected; name=Win.Test.EICAR_HDB-1")
    );
}

#[test]
fn a_virus_goes_to_the_quarantine_when_configured() {
    let mut r = rules();
    r.virus_action = VirusAction::Quarantine;
    let v = decide(&r, infected(), Some(Ok(SpamScan::Ham(report(0, 5)))));
    assert_eq!(
        v.action,
        Action::Quarantine {
            note: "quarantine: virus Win.Test.EICAR_HDB-1".into()
        }
    );
}

#[test]
fn spam_is_tagged_quarantined_or_rejected_as_configured() {
    let spam = || Some(Ok(SpamScan::Spam(report(12, 5))));
    let v = decide(&rules(), Some(Ok(VirusScan::Clean)), spam());
    assert_eq!(v.action, Action::Deliver, "tag is the default");
    assert_eq!(
        header_of(&v, SPAM_HEADER).as_deref(),
        Some("yes; score=12.0; threshold=5.0")
    );

    let mut r = rules();
    r.spam_action = SpamAction::Quarantine;
    let v = decide(&r, None, spam());
    assert_eq!(
        v.action,
        Action::Quarantine {
            note: "quarantine: spam, score 12.0 (threshold 5.0)".into()
        }
    );

    r.spam_action = SpamAction::Reject;
    let v = decide(&r, None, spam());
    let Action::Reject { reason } = v.action else {
        panic!()
    };
    assert!(
        reason.en.contains("spam (score 12.0, limit 5.0)"),
        "{}",
        reason.en
    );
    assert!(
        reason
            .de
            .contains("Spam eingestuft (Bewertung 12.0, Grenzwert 5.0)")
    );
}

#[test]
fn the_reject_score_overrides_tag_and_quarantine_but_not_below_it() {
    for action in [SpamAction::Tag, SpamAction::Quarantine] {
        let mut r = rules();
        r.spam_action = action;
        r.spam_reject_score = Some(SpamScore::points(15));
        let v = decide(&r, None, Some(Ok(SpamScan::Spam(report(15, 5)))));
        assert!(matches!(v.action, Action::Reject { .. }), "{action:?}");
        let v = decide(&r, None, Some(Ok(SpamScan::Spam(report(14, 5)))));
        assert!(!matches!(v.action, Action::Reject { .. }), "{action:?}");
    }
}

#[test]
fn a_scanner_that_is_down_makes_the_mail_wait_unless_fail_open() {
    let v = decide(
        &rules(),
        Some(Err(down(Scanner::Clamd))),
        Some(Ok(SpamScan::Ham(report(0, 5)))),
    );
    let Action::TempFail { reason } = &v.action else {
        panic!("{:?}", v.action)
    };
    assert!(reason.starts_with("virus scan failed: clamd"), "{reason}");
    assert_eq!(header_of(&v, VIRUS_HEADER), None, "never marked as scanned");

    let v = decide(
        &rules(),
        Some(Ok(VirusScan::Clean)),
        Some(Err(down(Scanner::Spamd))),
    );
    assert!(matches!(v.action, Action::TempFail { .. }));

    let mut r = rules();
    r.fail_open = true;
    let v = decide(
        &r,
        Some(Err(down(Scanner::Clamd))),
        Some(Err(down(Scanner::Spamd))),
    );
    assert_eq!(v.action, Action::Deliver);
    assert_eq!(
        v.header_lines(),
        "X-Siegel-Virus: unscanned; reason=scanner-error\r\nX-Siegel-Spam: unscanned; reason=scanner-error\r\n"
    );
}

#[test]
fn our_own_read_failure_is_never_delivered_even_fail_open() {
    let mut r = rules();
    r.fail_open = true;
    let v = decide(
        &r,
        Some(Err(ScanError::ShortContent {
            expected: 10,
            got: 5,
        })),
        None,
    );
    assert!(matches!(v.action, Action::TempFail { .. }));
}

#[test]
fn too_large_for_clamd_is_quarantined_unless_fail_open_and_spam_just_skips() {
    let skip = Skip::TooLarge {
        size: 100,
        limit: 10,
    };
    let v = decide(
        &rules(),
        Some(Ok(VirusScan::Skipped { why: skip })),
        Some(Ok(SpamScan::Skipped { why: skip })),
    );
    let Action::Quarantine { note } = &v.action else {
        panic!("{:?}", v.action)
    };
    assert!(
        note.starts_with("quarantine: not virus-scanned: too large"),
        "{note}"
    );
    assert_eq!(
        v.header_lines(),
        "X-Siegel-Virus: unscanned; reason=too-large\r\nX-Siegel-Spam: unscanned; reason=too-large\r\n"
    );

    let v = decide(&rules(), None, Some(Ok(SpamScan::Skipped { why: skip })));
    assert_eq!(v.action, Action::Deliver);

    let mut r = rules();
    r.fail_open = true;
    let v = decide(
        &r,
        Some(Ok(VirusScan::Skipped {
            why: Skip::DaemonLimit { size: 100 },
        })),
        None,
    );
    assert_eq!(v.action, Action::Deliver);
}

#[test]
fn strongest_action_wins() {
    // A virus is certain; spamd being down does not delay the rejection.
    let v = decide(&rules(), infected(), Some(Err(down(Scanner::Spamd))));
    assert!(matches!(v.action, Action::Reject { .. }));
    // Quarantine beats waiting: the mail is held, not delivered.
    let mut r = rules();
    r.spam_action = SpamAction::Quarantine;
    let v = decide(
        &r,
        Some(Err(down(Scanner::Clamd))),
        Some(Ok(SpamScan::Spam(report(9, 5)))),
    );
    assert!(matches!(v.action, Action::Quarantine { .. }));
    // Virus and spam both rejecting: the virus is the reason given.
    r.spam_action = SpamAction::Reject;
    let v = decide(&r, infected(), Some(Ok(SpamScan::Spam(report(9, 5)))));
    let Action::Reject { reason } = v.action else {
        panic!()
    };
    assert!(reason.en.contains("virus"));
}

#[test]
fn release_delivers_what_was_held_but_not_what_is_unscanned() {
    let mut r = rules();
    r.virus_action = VirusAction::Quarantine;
    let v = decide(&r, infected(), None).after_release();
    assert_eq!(v.action, Action::Deliver);
    assert_eq!(
        v.header_lines(),
        "X-Siegel-Virus: infected; name=Win.Test.EICAR_HDB-1\r\nX-Siegel-Quarantine: released\r\n"
    );
    let v = decide(&r, Some(Err(down(Scanner::Clamd))), None).after_release();
    assert!(matches!(v.action, Action::TempFail { .. }));
}

#[test]
fn odd_signature_names_cannot_break_the_header() {
    let v = decide(
        &rules(),
        Some(Ok(VirusScan::Infected {
            signature: "Evil name; x=\"y\"\u{e4}".into(),
        })),
        None,
    );
    assert_eq!(
        header_of(&v, VIRUS_HEADER).as_deref(),
        Some("infected; name=Evil_name__x__y__")
    );
}

#[test]
fn nothing_to_scan_adds_nothing() {
    let v = decide(&rules(), None, None);
    assert_eq!(v.action, Action::Deliver);
    assert!(v.headers.is_empty());
    assert_eq!(FilterVerdict::unfiltered().action, Action::Deliver);
}
