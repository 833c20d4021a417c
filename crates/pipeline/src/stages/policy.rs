//! The policy stages: classify → decide → split (outbound), and the removal
//! of spoofed `X-Siegel-*` headers (inbound).
//!
//! These stages only edit the header section ([`crate::Content::set_header`]):
//! the body stays on disk, and the copies are written afterwards by
//! streaming the edited header and the original body. The keys of the
//! recipients are loaded before the stages run ([`crate::MessageCtx::keys`]).

use std::sync::Arc;

use siegel_policy::{BoxFuture, classify};
use siegel_types::{Address, Direction};

use crate::policy::{PolicyEnv, decide_and_split, facts_for};
use crate::{MessageCtx, Stage, Verdict};

/// The prefix of Siegel's own headers. Whoever can set them could claim a
/// verified signature or a decrypted mail, so inbound mail loses every one
/// of them before any Siegel stage adds its own.
pub const SIEGEL_PREFIX: &str = "X-Siegel-";

/// Inbound: removes every incoming `X-Siegel-*` header (anti-spoofing).
#[derive(Debug, Default, Clone, Copy)]
pub struct StripSiegelHeaders;

impl Stage for StripSiegelHeaders {
    fn name(&self) -> &'static str {
        "strip-x-siegel"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Inbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(strip(ctx)))
    }
}

fn strip(ctx: &mut MessageCtx<'_>) -> Verdict {
    {
        let mut found = false;
        let mut names = Vec::new();
        for name in header_names(ctx.content.header()) {
            let is_ours = name
                .get(..SIEGEL_PREFIX.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(SIEGEL_PREFIX));
            if is_ours
                && !ctx
                    .policy
                    .strip_headers
                    .iter()
                    .any(|h| h.eq_ignore_ascii_case(&name))
            {
                ctx.policy.strip_headers.push(name.clone());
                names.push(name);
                found = true;
            }
        }
        if found {
            let mut edit = siegel_policy::Classification::default();
            edit.strip_headers = names;
            let new = edit.apply(ctx.content.header());
            ctx.content.set_header(new);
            Verdict::Modified
        } else {
            Verdict::Continue
        }
    }
}

/// The names of the header fields in a header section, as the policy
/// crate's reader sees them (blanks before the colon trimmed, folded lines
/// skipped, lines without a colon skipped).
fn header_names(block: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for line in block.split(|&b| b == b'\n') {
        if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii_end();
        if !name.is_empty() && name.iter().all(u8::is_ascii_graphic) {
            names.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    names
}

/// Outbound: is the mail confidential, for whom, and which steering headers
/// and subject keyword must go before it leaves.
#[derive(Debug)]
pub struct Classify(pub Arc<PolicyEnv>);

impl Stage for Classify {
    fn name(&self) -> &'static str {
        "classify"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Outbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        let c = classify(
            ctx.content.header(),
            &recipients(ctx),
            &self.0.settings.rules,
        );
        let edits = c.new_subject.is_some() || !c.strip_headers.is_empty();
        if edits {
            let new = c.apply(ctx.content.header());
            ctx.content.set_header(new);
        }
        ctx.policy.classification = Some(c);
        Box::pin(std::future::ready(if edits {
            Verdict::Modified
        } else {
            Verdict::Continue
        }))
    }
}

/// Outbound: the encryption hierarchy per recipient, with the methods that
/// can run now. Needs [`Classify`] before it.
#[derive(Debug)]
pub struct Decide(pub Arc<PolicyEnv>);

impl Stage for Decide {
    fn name(&self) -> &'static str {
        "decide"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Outbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(self.decide(ctx)))
    }
}

impl Decide {
    fn decide(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        let Some(c) = ctx.policy.classification.clone() else {
            // A stage list without `classify` first is our bug; deciding as
            // "not confidential" could send confidential mail in clear.
            return Verdict::Hold("policy: decide ran without classification".to_owned());
        };
        let rcpts = recipients(ctx);
        let facts = facts_for(
            &self.0.settings,
            ctx.envelope.mail_from.address(),
            &rcpts,
            &c,
            ctx.keys,
        );
        let (decisions, split) = decide_and_split(&self.0.settings, &self.0.registry, &facts);
        ctx.policy.decisions = decisions;
        ctx.policy.split = Some(split);
        Verdict::Continue
    }
}

/// Outbound: checks the split is complete before anything is written. The
/// grouping itself is computed with the decisions ([`Decide`]); this stage
/// is where a later issue's per-group transforms (encrypt, GINA) will hook
/// in, and it guards the invariant that every recipient has exactly one
/// fate, so that no recipient is silently dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct SplitCopies;

impl Stage for SplitCopies {
    fn name(&self) -> &'static str {
        "split"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Outbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(check_split(ctx)))
    }
}

fn check_split(ctx: &MessageCtx<'_>) -> Verdict {
    {
        let Some(s) = &ctx.policy.split else {
            return Verdict::Hold("policy: split ran without decisions".to_owned());
        };
        let placed = s.groups.iter().map(|g| g.recipients.len()).sum::<usize>()
            + s.refused.len()
            + s.held.len();
        if placed != ctx.envelope.recipients.len() {
            return Verdict::Hold(format!(
                "policy: {placed} of {} recipients placed by the split",
                ctx.envelope.recipients.len()
            ));
        }
        let copies =
            s.groups.len() + usize::from(!s.refused.is_empty()) + usize::from(!s.held.is_empty());
        if copies > 1 {
            Verdict::Modified
        } else {
            Verdict::Continue
        }
    }
}

fn recipients(ctx: &MessageCtx<'_>) -> Vec<Address> {
    ctx.envelope
        .recipients
        .iter()
        .map(|r| r.address.clone())
        .collect()
}
