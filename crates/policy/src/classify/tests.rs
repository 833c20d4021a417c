#![allow(clippy::unwrap_used)]

use super::*;

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn rules() -> ClassificationRules {
    ClassificationRules::default()
}

fn decoded_subject(c: &Classification) -> String {
    rfc2047::decode(&c.new_subject.clone().unwrap().replace("\r\n", ""))
}

const LABEL: &str = "f42aa342-8706-4288-bd11-ebb85995028c";

fn msip(enabled: &str) -> String {
    format!(
        "msip_labels: MSIP_Label_{LABEL}_Enabled={enabled};\r\n MSIP_Label_{LABEL}_SetDate=2023-05-10T08:15:02Z;\r\n \
         MSIP_Label_{LABEL}_Method=Privileged; MSIP_Label_{LABEL}_Name=Vertraulich;\r\n \
         MSIP_Label_{LABEL}_SiteId=72f988bf-86f1-41af-91ab-2d7cd011db47;\r\n \
         MSIP_Label_{LABEL}_ActionId=0b1e4c61-55a2-4a8b-9c0e-7f1d5e6b2a11; MSIP_Label_{LABEL}_ContentBits=0\r\n"
    )
}

#[test]
fn plain_mail_is_not_confidential_and_untouched() {
    let c = classify(
        b"From: a@x.de\r\nSubject: Hello\r\n\r\nbody",
        &[addr("b@y.de")],
        &rules(),
    );
    assert!(!c.confidential);
    assert!(c.reasons.is_empty());
    assert_eq!(c.new_subject, None);
    assert!(c.strip_headers.is_empty());
    assert!(!c.is_confidential_for(&addr("b@y.de")));
}

#[test]
fn subject_keyword_case_insensitive_and_removed() {
    for (subject, want) in [
        ("[secure] Angebot", "Angebot"),
        ("Re: [SECURE] Angebot", "Re: Angebot"),
        ("Angebot [Vertraulich]", "Angebot"),
        ("[confidential][secure]x", "x"),
        ("a [secure]b", "a b"),
        ("[secure]", ""),
    ] {
        let c = classify(format!("Subject: {subject}\r\n").as_bytes(), &[], &rules());
        assert!(c.confidential, "{subject}");
        assert_eq!(c.new_subject.as_deref(), Some(want), "{subject}");
    }
    let c = classify(b"Subject: Re: [secure] [vertraulich] x\r\n", &[], &rules());
    assert_eq!(
        c.reasons,
        vec![
            Reason::SubjectKeyword {
                keyword: "[secure]".into()
            },
            Reason::SubjectKeyword {
                keyword: "[vertraulich]".into()
            }
        ]
    );
}

#[test]
fn keyword_in_utf8_b_subject_is_removed_and_reencoded() {
    // "[secure] Grüße aus Köln", as Thunderbird writes it.
    let c = classify(
        b"Subject: =?UTF-8?B?W3NlY3VyZV0gR3LDvMOfZSBhdXMgS8O2bG4=?=\r\n",
        &[],
        &rules(),
    );
    assert!(c.confidential);
    let new = c.new_subject.clone().unwrap();
    assert!(new.starts_with("=?UTF-8?B?"), "{new}");
    assert!(new.is_ascii());
    assert_eq!(decoded_subject(&c), "Grüße aus Köln");
}

#[test]
fn keyword_in_latin1_q_subject_folded_over_lines() {
    let block = b"Subject: =?iso-8859-1?Q?Pr=FCfbericht_?=\r\n =?iso-8859-1?Q?=5Bvertraulich=5D?=\r\n\tQ3\r\n";
    let c = classify(block, &[], &rules());
    assert!(c.confidential);
    assert_eq!(decoded_subject(&c), "Prüfbericht Q3");
}

#[test]
fn keyword_split_across_encoded_words_and_ascii_result_stays_plain() {
    let c = classify(
        b"Subject: =?utf-8?q?=5Bsec?= =?utf-8?q?ure=5D_Hello?=\r\n",
        &[],
        &rules(),
    );
    assert!(c.confidential);
    assert_eq!(c.new_subject.as_deref(), Some("Hello"));
}

#[test]
fn malformed_encoded_subject_never_panics_and_plain_keyword_still_counts() {
    let c = classify(
        b"Subject: =?utf-8?B?@@@?= [secure] =?x?Q?\r\n",
        &[],
        &rules(),
    );
    assert!(c.confidential);
    assert_eq!(decoded_subject(&c), "=?utf-8?B?@@@?= =?x?Q?");
}

#[test]
fn sensitivity_header_is_honoured_and_kept() {
    let block = b"Sensitivity: company-confidential\r\nSubject: x\r\n";
    let c = classify(block, &[], &rules());
    assert!(c.confidential);
    assert_eq!(c.reasons, vec![Reason::Sensitivity]);
    assert!(c.strip_headers.is_empty());
    let off = ClassificationRules {
        honour_sensitivity: false,
        ..rules()
    };
    assert!(!classify(block, &[], &off).confidential);
    assert!(!classify(b"Sensitivity: Personal\r\n", &[], &rules()).confidential);
}

#[test]
fn siegel_header_is_honoured_and_always_stripped() {
    let c = classify(
        b"X-Siegel-Classification:  Confidential \r\n",
        &[],
        &rules(),
    );
    assert!(c.confidential);
    assert_eq!(c.reasons, vec![Reason::SiegelHeader]);
    assert_eq!(c.strip_headers, vec![SIEGEL_CLASSIFICATION.to_owned()]);

    let c = classify(b"x-siegel-classification: internal\r\n", &[], &rules());
    assert!(!c.confidential);
    assert_eq!(c.strip_headers, vec![SIEGEL_CLASSIFICATION.to_owned()]);

    let off = ClassificationRules {
        honour_siegel_header: false,
        ..rules()
    };
    let c = classify(b"X-Siegel-Classification: confidential\r\n", &[], &off);
    assert!(!c.confidential);
    assert_eq!(c.strip_headers, vec![SIEGEL_CLASSIFICATION.to_owned()]);
}

#[test]
fn purview_label_mapped_by_guid_only_when_enabled() {
    let mapped = ClassificationRules {
        purview_labels: vec![format!("{{{}}}", LABEL.to_uppercase())],
        ..rules()
    };
    let c = classify(msip("true").as_bytes(), &[], &mapped);
    assert!(c.confidential);
    assert_eq!(
        c.reasons,
        vec![Reason::PurviewLabel {
            id: LABEL.into(),
            name: Some("Vertraulich".into())
        }]
    );
    assert!(c.strip_headers.is_empty());

    assert!(!classify(msip("false").as_bytes(), &[], &mapped).confidential);
    assert!(!classify(msip("true").as_bytes(), &[], &rules()).confidential);
    // The label's Name is not what counts: another GUID named "Confidential" does not match.
    let other = ClassificationRules {
        purview_labels: vec!["00000000-0000-0000-0000-000000000000".into()],
        ..rules()
    };
    assert!(!classify(msip("true").as_bytes(), &[], &other).confidential);
    // Garbage in the header is skipped.
    let c = classify(
        b"msip_labels: ;;=;MSIP_Label_=true;MSIP_Label_x_Enabled=true;\xff\r\n",
        &[],
        &mapped,
    );
    assert!(!c.confidential);
}

#[test]
fn domain_and_recipient_rules_are_per_recipient() {
    let r = ClassificationRules {
        confidential_domains: vec!["Partner.Example".into(), "BÜCHER.example".into()],
        confidential_recipients: vec![addr("Chef@boss.example")],
        ..rules()
    };
    let (p, o, s, b, c) = (
        addr("a@partner.example"),
        addr("b@other.example"),
        addr("x@sub.partner.example"),
        addr("k@xn--bcher-kva.example"),
        addr("chef@boss.example"),
    );
    let cl = classify(
        b"Subject: hi\r\n",
        &[p.clone(), o.clone(), s.clone(), b.clone(), c.clone()],
        &r,
    );
    assert!(!cl.confidential);
    assert_eq!(cl.new_subject, None);
    assert!(cl.is_confidential_for(&p));
    assert!(!cl.is_confidential_for(&o));
    assert!(!cl.is_confidential_for(&s), "subdomains are not included");
    assert!(cl.is_confidential_for(&b));
    assert!(cl.is_confidential_for(&c));
    assert_eq!(cl.reasons_for(&p).count(), 1);
    assert_eq!(cl.reasons_for(&o).count(), 0);
    // A message-wide source makes it confidential for everybody.
    let cl = classify(b"Subject: [secure] hi\r\n", std::slice::from_ref(&o), &r);
    assert!(cl.is_confidential_for(&o));
}

#[test]
fn duplicate_headers_any_hit_counts_and_apply_cleans_all() {
    let msg = b"Subject: hello\r\nX-Siegel-Classification: confidential\r\nSubject: [secure] again\r\n\
x-siegel-classification: confidential\r\n  folded\r\nTo: b@y.de\r\n\r\nSubject: [secure] in body\r\nX-Siegel-Classification: x\r\n";
    let c = classify(msg, &[], &rules());
    assert!(c.confidential);
    assert_eq!(c.reasons.len(), 2);
    let out = c.apply(msg);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Subject: hello\r\nSubject: again\r\nTo: b@y.de\r\n\r\nSubject: [secure] in body\r\nX-Siegel-Classification: x\r\n"
    );
}

#[test]
fn apply_writes_encoded_subject_and_keeps_lf_line_ends() {
    let msg = b"Subject: [secure] Gr=?x\nFrom: a@x.de\n\nbody\n";
    let c = classify(msg, &[], &rules());
    let out = String::from_utf8(c.apply(msg)).unwrap();
    assert!(out.starts_with("Subject: =?UTF-8?B?"), "{out}");
    assert!(out.ends_with("?=\nFrom: a@x.de\n\nbody\n"), "{out}");
    assert!(!out.contains('\r'));
    // Nothing to do: bytes unchanged.
    let msg = b"Subject: hi\r\nSensitivity: Company-Confidential\r\n\r\nx";
    assert_eq!(classify(msg, &[], &rules()).apply(msg), msg.to_vec());
}

#[test]
fn validate_reports_every_problem_with_its_key() {
    let r = ClassificationRules {
        subject_keywords: vec!["[ok]".into(), " ".into(), "[x] ".into()],
        purview_labels: vec![LABEL.into(), "Confidential".into()],
        confidential_domains: vec!["partner.example".into(), "bad domain".into()],
        ..rules()
    };
    let keys: Vec<String> = r.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        [
            "subject_keywords[1]",
            "subject_keywords[2]",
            "purview_labels[1]",
            "confidential_domains[1]"
        ]
    );
    assert!(rules().validate().is_empty());
    assert!(
        RuleProblem {
            key: "purview_labels[1]".into(),
            message: "m".into()
        }
        .to_string()
        .starts_with("policy.purview_labels[1]")
    );
}

#[test]
fn empty_keyword_matches_nothing() {
    let r = ClassificationRules {
        subject_keywords: vec![String::new()],
        ..rules()
    };
    assert!(!classify(b"Subject: anything\r\n", &[], &r).confidential);
}

#[test]
fn rules_deserialize_with_defaults_and_reject_unknown_keys() {
    let r: ClassificationRules =
        toml::from_str("confidential_domains = [\"partner.example\"]").unwrap();
    assert_eq!(r.subject_keywords, rules().subject_keywords);
    assert!(r.honour_sensitivity && r.honour_siegel_header);
    assert_eq!(r.confidential_domains, ["partner.example"]);
    assert!(toml::from_str::<ClassificationRules>("confidential_domain = []").is_err());
    assert!(
        toml::from_str::<ClassificationRules>("confidential_recipients = [\"no-at\"]").is_err()
    );
}

proptest::proptest! {
    #[test]
    fn classify_and_apply_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
        let r = ClassificationRules { purview_labels: vec![LABEL.into()], ..rules() };
        let c = classify(&bytes, &[addr("a@b.de")], &r);
        let out = c.apply(&bytes);
        // What we strip is really gone afterwards.
        let again = classify(&out, &[], &r);
        proptest::prop_assert!(!again.reasons.contains(&Reason::SiegelHeader));
    }

    #[test]
    fn header_like_input_never_panics(s in "((Subject|X-Siegel-Classification|msip_labels|Sensitivity): [ -~\u{e4}\u{fc}=?_\\[\\]]{0,40}\r?\n[ \t]?){0,6}") {
        let c = classify(s.as_bytes(), &[], &rules());
        let _ = c.apply(s.as_bytes());
    }
}
