#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use super::*;
use crate::method::{Method, MethodError, Registry, Unavailable, decide_all};

use MethodKind::*;

fn rcpt() -> Address {
    Address::parse("bob@partner.example").unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum K {
    None,
    Valid,
    Invalid,
}

fn key(k: K, fp: &str) -> Option<KeyRef> {
    match k {
        K::None => None,
        K::Valid => Some(KeyRef::valid(fp)),
        K::Invalid => Some(KeyRef::invalid(fp, "expired 2025-01-01")),
    }
}

/// One row of the hierarchy table.
#[derive(Debug, Clone, Copy)]
struct Case {
    pref: Option<Preference>,
    smime: K,
    pgp: K,
    dsmime: K,
    dpgp: K,
    conf: bool,
    vtls: bool,
    gina: bool,
    ewkk: bool,
}

impl Case {
    fn facts(self) -> RecipientFacts {
        RecipientFacts {
            address: rcpt(),
            preference: self.pref,
            smime: key(self.smime, "SMIME-FP"),
            pgp: key(self.pgp, "PGP-FP"),
            domain_smime: key(self.dsmime, "DSMIME-FP"),
            domain_pgp: key(self.dpgp, "DPGP-FP"),
            confidential: self.conf,
            verified_tls_enough: self.vtls,
            gina_enabled: self.gina,
            encrypt_when_key_known: self.ewkk,
        }
    }

    /// PRODUCT.md's hierarchy, written as plainly as possible and
    /// independently of the implementation: `None` means refuse.
    fn expected(self) -> Option<MethodKind> {
        let may_encrypt = self.conf || self.ewkk;
        let can = |k: MethodKind| match k {
            Smime => may_encrypt && self.smime == K::Valid,
            Pgp => may_encrypt && self.pgp == K::Valid,
            DomainSmime => may_encrypt && self.dsmime == K::Valid,
            DomainPgp => may_encrypt && self.dpgp == K::Valid,
            Gina => self.conf && self.gina,
            TlsOnly => !self.conf || self.vtls,
            Plain => false,
        };
        if let Some(p) = self.pref
            && can(p.kind())
        {
            return Some(p.kind());
        }
        MethodKind::HIERARCHY.into_iter().find(|k| can(*k))
    }
}

fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let keys = [K::None, K::Valid, K::Invalid];
    let bools = [false, true];
    for pref in [
        None,
        Some(Preference::Gina),
        Some(Preference::Smime),
        Some(Preference::Pgp),
    ] {
        for smime in keys {
            for pgp in keys {
                for dsmime in [K::None, K::Valid] {
                    for dpgp in [K::None, K::Valid] {
                        for conf in bools {
                            for vtls in bools {
                                for gina in bools {
                                    for ewkk in bools {
                                        cases.push(Case {
                                            pref,
                                            smime,
                                            pgp,
                                            dsmime,
                                            dpgp,
                                            conf,
                                            vtls,
                                            gina,
                                            ewkk,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    cases
}

#[test]
fn whole_hierarchy_every_combination() {
    let cases = all_cases();
    assert_eq!(cases.len(), 4 * 3 * 3 * 2 * 2 * 2 * 2 * 2 * 2);
    for case in cases {
        let d = decide(&case.facts());
        let ctx = format!("{case:?} -> {d:#?}");
        assert_eq!(d.recipient, rcpt());
        assert_eq!(d.confidential, case.conf);
        assert!(!d.why.is_empty(), "{ctx}");
        match case.expected() {
            Some(kind) => {
                assert_eq!(d.method(), Some(kind), "{ctx}");
                // The fingerprint is the one of the chosen key, and the why names it.
                let fp = match kind {
                    Smime => Some("SMIME-FP"),
                    Pgp => Some("PGP-FP"),
                    DomainSmime => Some("DSMIME-FP"),
                    DomainPgp => Some("DPGP-FP"),
                    _ => None,
                };
                assert_eq!(d.fingerprint(), fp, "{ctx}");
                if let Some(fp) = fp {
                    assert!(d.why.contains(fp), "{ctx}");
                }
                assert_eq!(
                    d.requires_verified_tls,
                    kind == TlsOnly && case.conf,
                    "{ctx}"
                );
                if case.pref.map(Preference::kind) == Some(kind) {
                    assert!(d.why.starts_with("the recipient chose"), "{ctx}");
                }
                // Skipped: exactly the methods above the chosen one, plus an unserved preference.
                let mut want: Vec<MethodKind> = Vec::new();
                if let Some(p) = case.pref.map(Preference::kind)
                    && p != kind
                {
                    want.push(p);
                }
                for k in MethodKind::HIERARCHY.into_iter().take_while(|k| *k != kind) {
                    if !want.contains(&k) && Some(k) != case.pref.map(Preference::kind) {
                        want.push(k);
                    }
                }
                let mut got: Vec<MethodKind> = d.skipped.iter().map(|(k, _)| *k).collect();
                if case.pref.map(Preference::kind) == Some(kind) {
                    // A served preference lists every higher method as "the recipient chose …".
                    want = MethodKind::HIERARCHY
                        .into_iter()
                        .take_while(|k| *k != kind)
                        .collect();
                    assert!(
                        d.skipped.iter().all(|(_, why)| why.contains("chose")),
                        "{ctx}"
                    );
                } else {
                    got.dedup();
                }
                assert_eq!(got, want, "{ctx}");
            }
            None => {
                let Outcome::Refuse {
                    reason_en,
                    reason_de,
                } = &d.outcome
                else {
                    panic!("{ctx}")
                };
                assert!(case.conf && !case.vtls, "{ctx}");
                assert!(
                    reason_en.starts_with("The confidential message could not be encrypted"),
                    "{ctx}"
                );
                assert!(
                    reason_de.starts_with(
                        "Die vertrauliche Nachricht konnte nicht verschlüsselt werden"
                    ),
                    "{ctx}"
                );
                assert!(
                    reason_en.contains("partner.example") && reason_de.contains("partner.example")
                );
                assert!(!d.requires_verified_tls);
                let got: Vec<MethodKind> = d.skipped.iter().map(|(k, _)| *k).collect();
                let mut want: Vec<MethodKind> =
                    case.pref.map(Preference::kind).into_iter().collect();
                want.extend(
                    MethodKind::HIERARCHY
                        .into_iter()
                        .filter(|k| Some(*k) != case.pref.map(Preference::kind)),
                );
                assert_eq!(got, want, "{ctx}");
            }
        }
        assert!(d.skipped.iter().all(|(_, why)| !why.is_empty()), "{ctx}");
    }
}

/// Hand-written rows: the method and the words of the explanation.
#[test]
fn hierarchy_rows_with_explanations() {
    let base = Case {
        pref: None,
        smime: K::None,
        pgp: K::None,
        dsmime: K::None,
        dpgp: K::None,
        conf: false,
        vtls: false,
        gina: false,
        ewkk: true,
    };
    type Row = (
        Case,
        Option<MethodKind>,
        &'static str,
        Vec<(MethodKind, &'static str)>,
    );
    let rows: Vec<Row> = vec![
        (
            base,
            Some(TlsOnly),
            "not confidential and no key",
            vec![
                (Smime, "no S/MIME certificate"),
                (Pgp, "no OpenPGP key"),
                (
                    DomainSmime,
                    "no domain S/MIME certificate of partner.example",
                ),
                (DomainPgp, "no domain OpenPGP key"),
                (Gina, "only used for confidential mail"),
            ],
        ),
        (
            Case {
                smime: K::Valid,
                ..base
            },
            Some(Smime),
            "valid S/MIME certificate of the recipient known (SMIME-FP)",
            vec![],
        ),
        (
            Case {
                smime: K::Invalid,
                pgp: K::Valid,
                ..base
            },
            Some(Pgp),
            "valid OpenPGP key",
            vec![(Smime, "SMIME-FP is not valid: expired 2025-01-01")],
        ),
        (
            Case {
                smime: K::Valid,
                ewkk: false,
                ..base
            },
            Some(TlsOnly),
            "not confidential",
            vec![(Smime, "encryption whenever a key is known is switched off")],
        ),
        (
            Case {
                smime: K::Valid,
                ewkk: false,
                conf: true,
                ..base
            },
            Some(Smime),
            "SMIME-FP",
            vec![],
        ),
        (
            Case {
                dpgp: K::Valid,
                ..base
            },
            Some(DomainPgp),
            "domain OpenPGP key of partner.example known (DPGP-FP)",
            vec![],
        ),
        (
            Case {
                conf: true,
                gina: true,
                ..base
            },
            Some(Gina),
            "confidential mail and GINA is enabled",
            vec![],
        ),
        (
            Case {
                conf: true,
                gina: false,
                vtls: true,
                ..base
            },
            Some(TlsOnly),
            "verified certificate required",
            vec![(Gina, "switched off for the sender's domain")],
        ),
        (
            Case { conf: true, ..base },
            None,
            "GINA is switched off for the sender",
            vec![(TlsOnly, "not set for partner.example")],
        ),
        (
            Case {
                pref: Some(Preference::Pgp),
                smime: K::Valid,
                pgp: K::Valid,
                ..base
            },
            Some(Pgp),
            "the recipient chose OpenPGP in the portal; valid OpenPGP key",
            vec![(Smime, "the recipient chose OpenPGP in the portal")],
        ),
        (
            Case {
                pref: Some(Preference::Smime),
                smime: K::Invalid,
                pgp: K::Valid,
                ..base
            },
            Some(Pgp),
            "PGP-FP",
            vec![(
                Smime,
                "the recipient chose S/MIME in the portal, but the S/MIME certificate of the recipient SMIME-FP is not valid",
            )],
        ),
        (
            Case {
                pref: Some(Preference::Gina),
                smime: K::Valid,
                conf: true,
                gina: true,
                ..base
            },
            Some(Gina),
            "the recipient chose GINA in the portal",
            vec![(Smime, "the recipient chose GINA")],
        ),
        (
            Case {
                pref: Some(Preference::Gina),
                smime: K::Valid,
                conf: false,
                gina: true,
                ..base
            },
            Some(Smime),
            "SMIME-FP",
            vec![(
                Gina,
                "the recipient chose GINA in the portal, but GINA is only used for confidential mail",
            )],
        ),
        (
            Case {
                pref: Some(Preference::Gina),
                conf: true,
                gina: false,
                ..base
            },
            None,
            "could not be encrypted",
            vec![(
                Gina,
                "the recipient chose GINA in the portal, but GINA is switched off",
            )],
        ),
    ];
    for (case, method, why, skipped) in rows {
        let d = decide(&case.facts());
        assert_eq!(d.method(), method, "{case:?}: {d:#?}");
        assert!(d.why.contains(why), "{case:?}: `{}` lacks `{why}`", d.why);
        for (kind, text) in skipped {
            assert!(
                d.skipped
                    .iter()
                    .any(|(k, w)| *k == kind && w.contains(text)),
                "{case:?}: no skipped ({kind}, {text}) in {:#?}",
                d.skipped
            );
        }
    }
}

#[test]
fn summary_is_one_line_with_method_and_key() {
    let mut f = RecipientFacts::new(rcpt());
    f.pgp = Some(KeyRef::valid("ABCD"));
    let s = decide(&f).summary();
    assert!(
        s.starts_with("bob@partner.example: OpenPGP (ABCD): "),
        "{s}"
    );
    assert!(!s.contains('\n'));
}

#[test]
fn decision_roundtrips_through_json() {
    let mut f = RecipientFacts::new(rcpt());
    f.confidential = true;
    let d = decide(&f);
    let back: Decision = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back, d);
}

/// A method whose availability the test chooses.
struct Stub(MethodKind, bool);

impl Method for Stub {
    fn kind(&self) -> MethodKind {
        self.0
    }
    fn available(&self) -> Result<(), Unavailable> {
        if self.1 {
            Ok(())
        } else {
            Err(Unavailable {
                kind: self.0,
                reason: "switched off".into(),
            })
        }
    }
    fn transform<'a>(
        &'a self,
        input: &'a [u8],
        _: crate::CopyInfo<'a>,
    ) -> crate::BoxFuture<'a, Result<Vec<u8>, MethodError>> {
        Box::pin(std::future::ready(Ok(input.to_vec())))
    }
}

fn key_strategy(fp: &'static str) -> impl Strategy<Value = Option<KeyRef>> {
    prop_oneof![
        Just(None),
        Just(Some(KeyRef::valid(fp))),
        Just(Some(KeyRef::invalid(fp, "revoked"))),
        Just(Some(KeyRef {
            fingerprint: fp.into(),
            valid: false,
            why_invalid: None
        })),
    ]
}

fn facts_strategy() -> impl Strategy<Value = RecipientFacts> {
    (
        prop_oneof![
            Just(None),
            Just(Some(Preference::Gina)),
            Just(Some(Preference::Smime)),
            Just(Some(Preference::Pgp))
        ],
        key_strategy("S"),
        key_strategy("P"),
        key_strategy("DS"),
        key_strategy("DP"),
        any::<[bool; 4]>(),
    )
        .prop_map(
            |(preference, smime, pgp, domain_smime, domain_pgp, [c, v, g, e])| RecipientFacts {
                address: rcpt(),
                preference,
                smime,
                pgp,
                domain_smime,
                domain_pgp,
                confidential: c,
                verified_tls_enough: v,
                gina_enabled: g,
                encrypt_when_key_known: e,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// For any facts and any set of available methods (registered and
    /// working, registered and broken, or missing), a confidential
    /// recipient never ends in TLS only or plain unless verified TLS is
    /// enough, nobody ends in an unavailable method or in plain, and a
    /// confidential recipient gets exactly the method it would get with
    /// everything available, or is held/refused: never a downgrade.
    #[test]
    fn confidential_never_downgraded(
        facts in proptest::collection::vec(facts_strategy(), 1..5),
        availability in proptest::collection::vec(0u8..3, 7),
    ) {
        let kinds = [Smime, Pgp, DomainSmime, DomainPgp, Gina, TlsOnly, Plain];
        let mut registry = Registry::new();
        for (kind, a) in kinds.into_iter().zip(&availability) {
            match a {
                0 => {}
                1 => { registry.register(Box::new(Stub(kind, true))); }
                _ => { registry.register(Box::new(Stub(kind, false))); }
            }
        }
        let decisions = decide_all(&facts, &registry);
        prop_assert_eq!(decisions.len(), facts.len());
        for (f, d) in facts.iter().zip(&decisions) {
            prop_assert_eq!(&d.recipient, &f.address);
            if let Some(kind) = d.method() {
                prop_assert!(registry.availability(kind).is_ok(), "{:?} chose unavailable {}", f, kind);
                prop_assert!(kind != Plain);
                if f.confidential {
                    prop_assert!(kind != TlsOnly || (f.verified_tls_enough && d.requires_verified_tls), "{:?}", d);
                    prop_assert_eq!(Some(kind), decide(f).method(), "confidential downgrade: {:?}", d);
                }
            } else if !f.confidential {
                prop_assert!(matches!(d.outcome, Outcome::Hold { .. }), "non-confidential refused: {:?}", d);
            }
        }
    }
}
