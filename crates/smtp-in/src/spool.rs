//! The seam to the spool.
//!
//! The session is generic over these traits so that it can be tested with an
//! in-memory spool and so that this crate does not depend on the spool's
//! internals (DESIGN.md: smtp-in meets the rest only at the spool's API).
//! `siegel_spool::Spool` implements them (below), and is what production uses.

use std::future::Future;

use siegel_types::{Envelope, QueueId};

/// Something that can take new mails.
pub trait MailSpool: Clone + Send + Sync + 'static {
    type Incoming: IncomingMail;
    type Error: std::error::Error + Send + Sync + 'static;
    /// Starts a new spool entry; content is written into it while it arrives.
    fn begin(&self) -> impl Future<Output = Result<Self::Incoming, Self::Error>> + Send;
    /// Hands an entry committed with [`IncomingMail::commit_unannounced`]
    /// on to the rest of the gateway.
    fn announce(&self, id: &QueueId);
    /// Removes a committed entry that was refused before the reply.
    fn discard(&self, id: &QueueId) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// A spool entry being received.
pub trait IncomingMail: Send + 'static {
    type Error: std::error::Error + Send + Sync + 'static;
    fn id(&self) -> &QueueId;
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<(), Self::Error>> + Send;
    fn size(&self) -> u64;
    /// Makes the entry durable; only after `Ok` may `250` be answered.
    fn commit(
        self,
        envelope: Envelope,
    ) -> impl Future<Output = Result<QueueId, Self::Error>> + Send;
    /// Makes the entry durable without handing it on yet (it is checked
    /// first; see [`crate::AcceptanceCheck`]).
    fn commit_unannounced(
        self,
        envelope: Envelope,
    ) -> impl Future<Output = Result<QueueId, Self::Error>> + Send;
    /// Throws the entry away (size exceeded, client vanished, …).
    fn abort(self) -> impl Future<Output = ()> + Send;
}

impl MailSpool for siegel_spool::Spool {
    type Incoming = siegel_spool::Incoming;
    type Error = siegel_spool::SpoolError;
    fn begin(&self) -> impl Future<Output = Result<Self::Incoming, Self::Error>> + Send {
        siegel_spool::Spool::begin(self)
    }
    fn announce(&self, id: &QueueId) {
        siegel_spool::Spool::announce(self, id)
    }
    fn discard(&self, id: &QueueId) -> impl Future<Output = Result<(), Self::Error>> + Send {
        siegel_spool::Spool::remove(self, id)
    }
}

impl IncomingMail for siegel_spool::Incoming {
    type Error = siegel_spool::SpoolError;
    fn id(&self) -> &QueueId {
        siegel_spool::Incoming::id(self)
    }
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = Result<(), Self::Error>> + Send {
        siegel_spool::Incoming::write(self, chunk)
    }
    fn size(&self) -> u64 {
        siegel_spool::Incoming::size(self)
    }
    fn commit(
        self,
        envelope: Envelope,
    ) -> impl Future<Output = Result<QueueId, Self::Error>> + Send {
        siegel_spool::Incoming::commit(self, envelope)
    }
    fn commit_unannounced(
        self,
        envelope: Envelope,
    ) -> impl Future<Output = Result<QueueId, Self::Error>> + Send {
        siegel_spool::Incoming::commit_unannounced(self, envelope)
    }
    fn abort(self) -> impl Future<Output = ()> + Send {
        siegel_spool::Incoming::abort(self)
    }
}
