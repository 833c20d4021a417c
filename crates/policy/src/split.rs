//! Splitting one mail into one outgoing copy per method group.
//!
//! Who may share a copy:
//! - **S/MIME, OpenPGP, GINA: one copy per recipient.** Both S/MIME and
//!   OpenPGP could encrypt one copy to several keys, but the encrypted
//!   envelope then names every recipient's key (issuer and serial, key id),
//!   which would show Bcc recipients to everybody else; and one broken key
//!   would fail the copy for all. GINA builds one container per recipient
//!   account anyway.
//! - **Domain S/MIME, domain OpenPGP: one copy per domain key.** Everyone
//!   behind the same gateway key receives the same ciphertext, and the key
//!   names only the domain, so nobody becomes visible.
//! - **TLS only, plain: one copy**, split only by whether verified TLS is
//!   required, because that changes how the copy must be delivered.
//!
//! Refused and held recipients get no copy; they are returned separately.
//! Everything keeps the order of the decisions, so the split is stable.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use siegel_types::Address;

use crate::decide::{Decision, MethodKind, Outcome};

/// One outgoing copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub method: MethodKind,
    /// The key this copy is encrypted to (a recipient's or a domain's);
    /// `None` for GINA, TLS only and plain.
    pub fingerprint: Option<String>,
    /// Delivery must use TLS with a verified certificate.
    pub requires_verified_tls: bool,
    pub recipients: Vec<Address>,
}

/// The result of [`split`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Split {
    /// The copies to send, in order of their first recipient.
    pub groups: Vec<Group>,
    /// Recipients the mail must not be sent to (bounce).
    pub refused: Vec<Decision>,
    /// Recipients whose method cannot run now (keep the mail for them).
    pub held: Vec<Decision>,
}

/// What makes two recipients share a copy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Sharing {
    PerRecipient(usize),
    SameKey(MethodKind, Option<String>),
    Shared(MethodKind, bool),
}

/// Groups decisions into outgoing copies (see the module documentation for
/// who shares a copy).
pub fn split(decisions: &[Decision]) -> Split {
    let mut out = Split::default();
    let mut index: HashMap<Sharing, usize> = HashMap::new();
    for (i, d) in decisions.iter().enumerate() {
        let (method, fingerprint) = match &d.outcome {
            Outcome::Method { kind, fingerprint } => (*kind, fingerprint.clone()),
            Outcome::Refuse { .. } => {
                out.refused.push(d.clone());
                continue;
            }
            Outcome::Hold { .. } => {
                out.held.push(d.clone());
                continue;
            }
        };
        let key = match method {
            MethodKind::Smime | MethodKind::Pgp | MethodKind::Gina => Sharing::PerRecipient(i),
            MethodKind::DomainSmime | MethodKind::DomainPgp => {
                Sharing::SameKey(method, fingerprint.clone())
            }
            MethodKind::TlsOnly | MethodKind::Plain => {
                Sharing::Shared(method, d.requires_verified_tls)
            }
        };
        let slot = *index.entry(key).or_insert_with(|| {
            out.groups.push(Group {
                method,
                fingerprint,
                requires_verified_tls: d.requires_verified_tls,
                recipients: Vec::new(),
            });
            out.groups.len() - 1
        });
        if let Some(group) = out.groups.get_mut(slot) {
            group.recipients.push(d.recipient.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::decide::{KeyRef, RecipientFacts, decide};

    fn facts(a: &str) -> RecipientFacts {
        RecipientFacts::new(Address::parse(a).unwrap())
    }

    fn addrs(g: &Group) -> Vec<&str> {
        g.recipients.iter().map(Address::as_str).collect()
    }

    #[test]
    fn groups_by_method_and_keeps_order() {
        let mut all = Vec::new();
        let mut f = facts("s1@a.example");
        f.smime = Some(KeyRef::valid("S1"));
        all.push(f);
        all.push(facts("t1@b.example"));
        let mut f = facts("d1@c.example");
        f.domain_smime = Some(KeyRef::valid("DC"));
        all.push(f.clone());
        let mut f = facts("s2@a.example");
        f.smime = Some(KeyRef::valid("S2"));
        all.push(f);
        all.push(facts("t2@e.example"));
        let mut f = facts("d2@c.example");
        f.domain_smime = Some(KeyRef::valid("DC"));
        all.push(f);
        let mut f = facts("g@f.example");
        f.confidential = true;
        f.gina_enabled = true;
        all.push(f);
        let mut f = facts("r@g.example");
        f.confidential = true;
        all.push(f);
        let mut f = facts("v@h.example");
        f.confidential = true;
        f.verified_tls_enough = true;
        all.push(f);
        let decisions: Vec<Decision> = all.iter().map(decide).collect();
        let s = split(&decisions);

        let got: Vec<(MethodKind, Option<&str>, bool, Vec<&str>)> = s
            .groups
            .iter()
            .map(|g| {
                (
                    g.method,
                    g.fingerprint.as_deref(),
                    g.requires_verified_tls,
                    addrs(g),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (MethodKind::Smime, Some("S1"), false, vec!["s1@a.example"]),
                (
                    MethodKind::TlsOnly,
                    None,
                    false,
                    vec!["t1@b.example", "t2@e.example"]
                ),
                (
                    MethodKind::DomainSmime,
                    Some("DC"),
                    false,
                    vec!["d1@c.example", "d2@c.example"]
                ),
                (MethodKind::Smime, Some("S2"), false, vec!["s2@a.example"]),
                (MethodKind::Gina, None, false, vec!["g@f.example"]),
                (MethodKind::TlsOnly, None, true, vec!["v@h.example"]),
            ]
        );
        assert_eq!(s.refused.len(), 1);
        assert_eq!(s.refused[0].recipient.as_str(), "r@g.example");
        assert!(s.held.is_empty());
    }

    #[test]
    fn every_recipient_ends_in_exactly_one_place() {
        let mut f = facts("h@x.example");
        f.confidential = true;
        f.smime = Some(KeyRef::valid("H"));
        let held = crate::decide_all(&[f], &crate::Registry::foundation());
        let mut decisions = held.clone();
        decisions.push(decide(&facts("p@y.example")));
        let s = split(&decisions);
        assert_eq!(s.held, held);
        assert_eq!(s.groups.len(), 1);
        assert_eq!(addrs(&s.groups[0]), ["p@y.example"]);
        assert_eq!(split(&[]), Split::default());
    }

    #[test]
    fn gina_and_pgp_recipients_never_share_a_copy() {
        let mut decisions = Vec::new();
        for a in ["a@x.example", "b@x.example"] {
            let mut f = facts(a);
            f.confidential = true;
            f.gina_enabled = true;
            decisions.push(decide(&f));
            let mut f = facts(a);
            f.pgp = Some(KeyRef::valid("SAME"));
            decisions.push(decide(&f));
        }
        let s = split(&decisions);
        assert_eq!(s.groups.len(), 4);
        assert!(s.groups.iter().all(|g| g.recipients.len() == 1));
    }
}
