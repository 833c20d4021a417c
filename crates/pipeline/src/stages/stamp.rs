//! Inbound: writes what the earlier stages found into header fields
//! (`X-Siegel-Encryption`, `X-Siegel-Signature`, filter results) that
//! clients and mailbox rules can rely on, because every incoming
//! `X-Siegel-*` field was removed before (`strip-x-siegel`).

use siegel_policy::BoxFuture;
use siegel_types::Direction;

use crate::{MessageCtx, Stage, Verdict};

/// Prepends the findings as header fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stamp;

fn stamp(ctx: &mut MessageCtx<'_>) -> Verdict {
    let fields = ctx.findings.stamp_fields();
    if fields.is_empty() {
        return Verdict::Continue;
    }
    let mut block = String::new();
    for f in fields {
        // Findings are our own tokens and addresses; a line break in one
        // would be our bug, and must still never split a header field.
        block.push_str(&f.replace(['\r', '\n'], " "));
        block.push_str("\r\n");
    }
    ctx.content.prepend_header(block.as_bytes());
    Verdict::Modified
}

impl Stage for Stamp {
    fn name(&self) -> &'static str {
        "stamp"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Inbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(std::future::ready(stamp(ctx)))
    }
}
