//! Methods as one interface, and the registry the pipeline consults.
//!
//! Every way a mail can leave (S/MIME, OpenPGP, domain encryption, GINA,
//! TLS only, plain) implements [`Method`]; later issues add the real
//! cryptography. Until a method is registered and says it is available,
//! [`decide_all`] treats it as unavailable, and an unavailable method makes
//! a confidential mail wait ([`crate::Outcome::Hold`]) instead of leaving
//! with weaker protection. That is how an unfinished method can never
//! pretend to protect a mail.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use siegel_types::{Address, Envelope};

use crate::decide::{Decision, MethodKind, RecipientFacts, decide_with};

/// Why a method cannot run now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} is not available: {reason}")]
pub struct Unavailable {
    pub kind: MethodKind,
    pub reason: String,
}

/// Why a method failed to transform a mail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// The method has no key for this recipient (the facts were stale).
    #[error("{kind}: no usable key for {recipient}")]
    NoKey {
        kind: MethodKind,
        recipient: Address,
    },
    /// The method itself failed (bad key material, encoding error, …).
    #[error("{kind} failed: {reason}")]
    Failed { kind: MethodKind, reason: String },
    /// Something the method needs is down for now (the store): the mail
    /// must be tried again later, not held or sent another way.
    #[error("{kind}: temporary failure: {reason}")]
    Temporary { kind: MethodKind, reason: String },
}

/// A boxed future, so that methods can do I/O (load keys, store a GINA
/// container key) and still be held as trait objects in a [`Registry`].
/// This crate only names the type; it runs nothing itself.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a method knows about the copy it makes: the mail's envelope (sender,
/// Message-ID, direction) and the recipients who share this copy.
#[derive(Debug, Clone, Copy)]
pub struct CopyInfo<'a> {
    pub envelope: &'a Envelope,
    /// The recipients of this copy (a subset of the envelope's).
    pub recipients: &'a [Address],
    /// Whether the mail is confidential for these recipients.
    pub confidential: bool,
    /// Unix seconds; injected so that tests pin the clock.
    pub now: u64,
}

/// One way a mail can leave Siegel.
pub trait Method: Send + Sync {
    /// Which method this is; one implementation per kind in a [`Registry`].
    fn kind(&self) -> MethodKind;

    /// Whether it can run now (implemented, configured, keys reachable).
    fn available(&self) -> Result<(), Unavailable>;

    /// Whether [`Method::transform`] would change this copy. The pipeline
    /// asks first so that a mail nothing changes is passed on without
    /// being loaded or copied; the default is yes.
    fn changes<'a>(&'a self, copy: CopyInfo<'a>) -> BoxFuture<'a, Result<bool, MethodError>> {
        let _ = copy;
        Box::pin(std::future::ready(Ok(true)))
    }

    /// Turns the mail (header and body, as it leaves the pipeline's stages,
    /// not yet signed) into the copy sent to `copy.recipients`, who all
    /// share this copy (see [`crate::split`]). Signing is the method's job
    /// too, because what a signature must look like depends on it (S/MIME
    /// inside S/MIME encryption, an OpenPGP signature inside OpenPGP).
    fn transform<'a>(
        &'a self,
        input: &'a [u8],
        copy: CopyInfo<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, MethodError>>;
}

/// A method that sends the mail as it is: TLS only and plain.
///
/// TLS only means "signed, over TLS": the signature is added by the signing
/// stage (mPKI issue) and TLS is enforced by delivery, so the method itself
/// has nothing to change in the content. Only these two kinds can be built,
/// so a pass-through can never stand in for an encrypting method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassThrough(MethodKind);

impl PassThrough {
    /// TLS only.
    pub fn tls_only() -> Self {
        Self(MethodKind::TlsOnly)
    }

    /// Plain (inbound and local delivery).
    pub fn plain() -> Self {
        Self(MethodKind::Plain)
    }
}

impl Method for PassThrough {
    fn kind(&self) -> MethodKind {
        self.0
    }

    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }

    fn changes<'a>(&'a self, _copy: CopyInfo<'a>) -> BoxFuture<'a, Result<bool, MethodError>> {
        Box::pin(std::future::ready(Ok(false)))
    }

    fn transform<'a>(
        &'a self,
        input: &'a [u8],
        _copy: CopyInfo<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, MethodError>> {
        Box::pin(std::future::ready(Ok(input.to_vec())))
    }
}

/// The methods this Siegel can run, one per kind.
#[derive(Default)]
pub struct Registry {
    methods: BTreeMap<MethodKind, Box<dyn Method>>,
}

impl Registry {
    /// No methods: every decision holds or refuses.
    pub fn new() -> Self {
        Self::default()
    }

    /// What exists before the cryptography issues land: TLS only and plain.
    pub fn foundation() -> Self {
        let mut r = Self::new();
        r.register(Box::new(PassThrough::tls_only()));
        r.register(Box::new(PassThrough::plain()));
        r
    }

    /// Adds a method; returns the one it replaces for the same kind.
    pub fn register(&mut self, method: Box<dyn Method>) -> Option<Box<dyn Method>> {
        self.methods.insert(method.kind(), method)
    }

    /// The method for a kind, if registered.
    pub fn get(&self, kind: MethodKind) -> Option<&dyn Method> {
        self.methods.get(&kind).map(|m| m.as_ref())
    }

    /// Whether a kind can run now; an unregistered kind is unavailable.
    pub fn availability(&self, kind: MethodKind) -> Result<(), Unavailable> {
        match self.methods.get(&kind) {
            Some(m) => m.available(),
            None => Err(Unavailable {
                kind,
                reason: "not implemented in this version".to_owned(),
            }),
        }
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.methods.keys()).finish()
    }
}

/// Decides for every recipient, taking into account which methods can run
/// now. A confidential recipient whose method cannot run is held; any other
/// recipient falls through to the next method that can (noted in
/// [`Decision::skipped`]).
pub fn decide_all(facts: &[RecipientFacts], registry: &Registry) -> Vec<Decision> {
    let available = |kind| registry.availability(kind).map_err(|e| e.reason);
    facts.iter().map(|f| decide_with(f, &available)).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::decide::{KeyRef, Outcome};

    struct Broken(MethodKind);

    impl Method for Broken {
        fn kind(&self) -> MethodKind {
            self.0
        }
        fn available(&self) -> Result<(), Unavailable> {
            Err(Unavailable {
                kind: self.0,
                reason: "key store unreachable".into(),
            })
        }
        fn transform<'a>(
            &'a self,
            _: &'a [u8],
            _: CopyInfo<'a>,
        ) -> BoxFuture<'a, Result<Vec<u8>, MethodError>> {
            Box::pin(std::future::ready(Err(self
                .available()
                .unwrap_err()
                .into())))
        }
    }

    fn facts(confidential: bool) -> RecipientFacts {
        let mut f = RecipientFacts::new(Address::parse("b@partner.example").unwrap());
        f.smime = Some(KeyRef::valid("AA11"));
        f.confidential = confidential;
        f.gina_enabled = true;
        f
    }

    #[test]
    fn confidential_mail_is_held_when_its_method_is_missing() {
        let d = &decide_all(&[facts(true)], &Registry::foundation())[0];
        let Outcome::Hold { reason } = &d.outcome else {
            panic!("{d:?}")
        };
        assert!(
            reason.contains("S/MIME is not available (not implemented"),
            "{reason}"
        );
        assert!(reason.contains("AA11"), "{reason}");
    }

    #[test]
    fn other_mail_falls_through_and_says_so() {
        let d = &decide_all(&[facts(false)], &Registry::foundation())[0];
        assert_eq!(d.method(), Some(MethodKind::TlsOnly));
        assert_eq!(d.skipped[0].0, MethodKind::Smime);
        assert!(d.skipped[0].1.contains("not available"), "{:?}", d.skipped);
    }

    #[test]
    fn a_registered_but_unavailable_method_counts_as_unavailable() {
        let mut r = Registry::foundation();
        r.register(Box::new(Broken(MethodKind::Smime)));
        let d = &decide_all(&[facts(true)], &r)[0];
        assert!(
            matches!(&d.outcome, Outcome::Hold { reason } if reason.contains("key store unreachable"))
        );
        // Registering the same kind again replaces it.
        assert!(r.register(Box::new(Broken(MethodKind::Smime))).is_some());
        assert!(r.get(MethodKind::Smime).is_some());
        assert!(r.get(MethodKind::Pgp).is_none());
    }

    #[test]
    fn empty_registry_holds_even_plain_mail() {
        let mut f = facts(false);
        f.smime = None;
        let d = &decide_all(&[f], &Registry::new())[0];
        assert!(matches!(d.outcome, Outcome::Hold { .. }));
    }

    #[test]
    fn pass_through_copies_and_is_only_for_unencrypted_kinds() {
        let rcpt = [Address::parse("b@partner.example").unwrap()];
        let envelope = Envelope {
            id: siegel_types::QueueId::generate(),
            mail_from: siegel_types::ReversePath::Null,
            recipients: Vec::new(),
            direction: siegel_types::Direction::Outbound,
            origin: siegel_types::Origin::Dsn,
            received_at: 0,
            size: 0,
            body_8bit: false,
            smtputf8: false,
            env_id: None,
            ret: None,
            message_id: None,
        };
        let copy = CopyInfo {
            envelope: &envelope,
            recipients: &rcpt,
            confidential: false,
            now: 0,
        };
        let tls_only = PassThrough::tls_only();
        let mut out = tls_only.transform(b"x", copy);
        // A pass-through does no I/O: its future is ready at once.
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let std::task::Poll::Ready(out) = out.as_mut().poll(&mut cx) else {
            panic!("pass-through must not wait")
        };
        assert_eq!(out.unwrap(), b"x");
        assert_eq!(PassThrough::tls_only().kind(), MethodKind::TlsOnly);
        assert_eq!(PassThrough::plain().kind(), MethodKind::Plain);
        assert_eq!(format!("{:?}", Registry::foundation()), "{TlsOnly, Plain}");
    }
}
