//! Outbound: the sender's `Autocrypt:` header, so that correspondents'
//! clients (Thunderbird, K-9/Thunderbird for Android, Delta Chat, …) learn
//! our user's OpenPGP key from ordinary mail and can answer encrypted.
//!
//! Added before the policy splits the mail, so every copy carries it;
//! PGP/MIME keeps it in the outer header, where the Autocrypt spec wants
//! it. Only for licensed users of ours whose `From` is the envelope
//! sender (the spec requires `addr` to be the `From` address), and never
//! a second one when the client already sent its own.

use std::sync::Arc;

use siegel_policy::BoxFuture;
use siegel_types::Direction;

use crate::pgp::PgpKeys;
use crate::smime::{header_address, header_value};
use crate::{MessageCtx, Stage, Verdict};

/// Adds `Autocrypt: addr=…; keydata=…` for our licensed senders.
pub struct Autocrypt {
    keys: Arc<PgpKeys>,
}

impl Autocrypt {
    pub fn new(keys: Arc<PgpKeys>) -> Self {
        Self { keys }
    }

    async fn add(&self, ctx: &mut MessageCtx<'_>) -> Verdict {
        let Some(sender) = ctx.envelope.mail_from.address() else {
            return Verdict::Continue;
        };
        let header = ctx.content.header();
        if header_value(header, "autocrypt").is_some()
            || header_address(header, "from").as_ref() != Some(sender)
        {
            return Verdict::Continue;
        }
        let now = i64::try_from(ctx.now).unwrap_or(i64::MAX);
        match self.keys.autocrypt_header(Some(sender), now).await {
            Ok(Some(value)) => {
                ctx.content
                    .prepend_header(format!("Autocrypt: {value}\r\n").as_bytes());
                Verdict::Modified
            }
            Ok(None) => Verdict::Continue,
            // The key store did not answer: the mail waits rather than
            // leaving without the key its sender is known by.
            Err(crate::pgp::PgpKeysError::Store(e)) => {
                Verdict::TempFail(format!("OpenPGP key of {sender}: {e}"))
            }
            Err(error) => {
                tracing::warn!(target: "siegel::pgp", %sender, %error, "no Autocrypt header: the key cannot be used");
                Verdict::Continue
            }
        }
    }
}

impl Stage for Autocrypt {
    fn name(&self) -> &'static str {
        "autocrypt"
    }

    fn applies_to(&self, d: Direction) -> bool {
        d == Direction::Outbound
    }

    fn run<'a>(&'a self, ctx: &'a mut MessageCtx<'_>) -> BoxFuture<'a, Verdict> {
        Box::pin(self.add(ctx))
    }
}
