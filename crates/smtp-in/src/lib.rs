//! Siegel's SMTP server (RFC 5321 with PIPELINING, SIZE, 8BITMIME,
//! SMTPUTF8, ENHANCEDSTATUSCODES, DSN, STARTTLS and, on submission
//! listeners, AUTH PLAIN/LOGIN).
//!
//! The protocol details (line limits, command syntax, dot-unstuffing and
//! the smuggling defence) live in the sans-IO `siegel-smtp-wire` crate; this
//! crate owns the sockets, TLS, timeouts, relay control and the hand-off to
//! the spool. Content is streamed into the spool while it arrives, and `250`
//! is answered only after the spool's commit (which is durable) returned.

// Tests may unwrap: a panic there is a failed test, not a crash on input.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod conn;
mod server;
mod session;
mod spool;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use server::Server;
pub use session::handle_session;
pub use spool::{IncomingMail, MailSpool};

/// Log target of every line this crate writes about mails and sessions.
pub const LOG_TARGET: &str = "siegel::smtp_in";

/// Default content line limit: far above RFC 5322's 998 octets, because
/// real mail breaks that rule, yet bounded so no line is unbounded.
pub const DEFAULT_CONTENT_LINE_LENGTH: usize = 64 * 1024;
/// Default command line limit: RFC 5321 says 512, but long MAIL FROM lines
/// with DSN parameters are common, so be tolerant.
pub const DEFAULT_LINE_LENGTH: usize = 4096;
/// Default number of bad commands before a client is dropped with 421.
pub const DEFAULT_MAX_ERRORS: usize = 20;

/// Checks submission credentials. Called through `spawn_blocking`, because a
/// real implementation hashes (argon2) and must not stall the runtime.
pub trait Authenticator: Send + Sync {
    fn verify(&self, user: &str, password: &str) -> bool;
}

/// An authenticator that refuses everybody (for port-25-only setups).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoAuthenticator;

impl Authenticator for NoAuthenticator {
    fn verify(&self, _user: &str, _password: &str) -> bool {
        false
    }
}

/// A last look at a mail after it was made durable and before the client
/// hears the answer: the virus and spam scan at SMTP time (PRODUCT.md:
/// "reject at SMTP time where possible"). A refusal here reaches the
/// sending server as a reply, instead of a bounce to a sender address that
/// is probably forged (backscatter).
pub trait AcceptanceCheck: Send + Sync {
    /// Judges the committed mail `id`. Called with the client waiting, so
    /// it must be bounded in time; on any trouble of its own it should
    /// accept and leave the decision to the pipeline.
    fn check<'a>(
        &'a self,
        id: &'a siegel_types::QueueId,
        direction: siegel_types::Direction,
        recipients: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Acceptance> + Send + 'a>>;
}

/// What an [`AcceptanceCheck`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acceptance {
    /// Answer 250; the mail goes on to the pipeline.
    Accept,
    /// Answer with this reply; the mail is removed from the spool.
    Refuse {
        code: u16,
        status: &'static str,
        text: String,
    },
}

/// Which kind of listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Listener {
    /// Port-25 style: mail from anywhere to internal domains, relaying only
    /// for trusted networks; no AUTH.
    Smtp,
    /// Submission: AUTH (after STARTTLS) is required before MAIL.
    Submission,
}

impl Listener {
    /// A short name for logs and start-up messages.
    pub fn name(self) -> &'static str {
        match self {
            Listener::Smtp => "smtp",
            Listener::Submission => "submission",
        }
    }
}

/// Server settings; built by the config crate, shared by all sessions.
pub struct Settings {
    /// Our name in the greeting and EHLO reply.
    pub hostname: String,
    /// Port-25 style listeners.
    pub listen: Vec<SocketAddr>,
    /// Submission listeners: AUTH PLAIN/LOGIN offered and accepted only
    /// after STARTTLS; MAIL refused (530 5.7.0) before AUTH.
    pub submission_listen: Vec<SocketAddr>,
    /// Peers allowed to relay to external domains without AUTH.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Domains we accept mail for from anyone (normalised: lower case, A-labels).
    pub internal_domains: Vec<String>,
    /// Largest accepted content, in octets (advertised as SIZE).
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// Command line limit in octets including CRLF.
    pub max_line_length: usize,
    /// Content line limit in octets without CRLF.
    pub max_content_line_length: usize,
    /// Idle time allowed while waiting for a command.
    pub command_timeout: Duration,
    /// Idle time allowed between content reads during DATA.
    pub data_timeout: Duration,
    /// Concurrent sessions over all listeners; more get `421 4.7.0`.
    pub max_connections: usize,
    /// Bad commands tolerated before the client is dropped with 421.
    pub max_errors: usize,
    /// STARTTLS is offered only when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub authenticator: Arc<dyn Authenticator>,
    /// Checked before every 250 (`None`: nothing to check).
    pub acceptance: Option<Arc<dyn AcceptanceCheck>>,
}

impl Settings {
    /// Settings with the defaults the brief and RFC 5321 suggest, listening
    /// nowhere; callers fill in what they need.
    pub fn new(hostname: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            listen: Vec::new(),
            submission_listen: Vec::new(),
            trusted_networks: Vec::new(),
            internal_domains: Vec::new(),
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_line_length: DEFAULT_LINE_LENGTH,
            max_content_line_length: DEFAULT_CONTENT_LINE_LENGTH,
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            max_connections: 500,
            max_errors: DEFAULT_MAX_ERRORS,
            tls: None,
            authenticator: Arc::new(NoAuthenticator),
            acceptance: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("hostname", &self.hostname)
            .field("listen", &self.listen)
            .field("submission_listen", &self.submission_listen)
            .field("trusted_networks", &self.trusted_networks)
            .field("internal_domains", &self.internal_domains)
            .field("max_message_size", &self.max_message_size)
            .field("tls", &self.tls.is_some())
            .field("acceptance", &self.acceptance.is_some())
            .finish_non_exhaustive()
    }
}

/// Errors of the server as a whole (sessions end with SMTP replies instead).
#[derive(Debug, thiserror::Error)]
pub enum SmtpInError {
    /// A listener could not be bound; nothing was started.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// No listener is configured.
    #[error("no SMTP listener configured")]
    NoListeners,
    /// An accept loop ended unexpectedly.
    #[error("listener task failed: {0}")]
    Task(String),
}
