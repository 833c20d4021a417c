//! The GINA portal: where recipients without keys open their encrypted
//! containers, register, read safely, download attachments and reply.
//!
//! The portal never imports the mail path: it talks to the store (accounts,
//! container keys, sessions, audit) and hands new mail (replies, read
//! receipts, verification mails) to the spool's public API as inbound or
//! outbound mail, which the pipeline then filters and tracks like any other.
//!
//! Security in the shape of the code (DESIGN.md practice 11):
//! * handlers that need a login take a [`session::PortalUser`]; there is no
//!   other way to get one;
//! * every state-changing form carries a CSRF token, checked in
//!   [`session::check_csrf`]; cross-site POSTs are refused by
//!   [`security::layer`] before any handler runs, except `/open`, which
//!   changes nothing and only shows the posted container again;
//! * one layer sets CSP, HSTS, frame-ancestors, nosniff, no-referrer and
//!   no-store on every response.

mod forms;
mod handlers;
mod mailview;
mod security;
pub mod session;
mod wkd;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use siegel_gina::{Hasher, Lang, PasswordPolicy, Themes};
use siegel_spool::Spool;
use siegel_store::Store;
use siegel_types::Address;
use tokio::net::TcpListener;

pub use handlers::KeyImporter;
pub use mailview::{MailView, view_mail};

/// What the portal needs to know; built by the binary from `[portal]`,
/// `[gina]` and `[domains]`.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[portal] public_url` (https, no trailing slash).
    pub public_url: String,
    /// Internal domains: the only ones portal users may write to.
    pub internal_domains: Vec<String>,
    /// Idle timeout of a session.
    pub session_idle: Duration,
    /// Absolute timeout of a session.
    pub session_max: Duration,
    /// Largest request body.
    pub max_upload: u64,
    /// The password policy.
    pub policy: PasswordPolicy,
    /// Account lock-out after this many failures …
    pub lock_after: u32,
    /// … for this long.
    pub lock_for: Duration,
    /// Failures allowed per client address per window.
    pub client_limit: u32,
    /// The window.
    pub client_window: Duration,
    /// Registration in advance allowed.
    pub signup: bool,
    /// Validity of a registration link.
    pub signup_link_valid: Duration,
    /// Our host name (Message-IDs, Reporting-UA).
    pub hostname: String,
    /// Node name in the audit trail.
    pub node: String,
    /// Sender of the portal's own mails.
    pub system_from: Address,
    /// Language when neither account nor browser says.
    pub default_lang: Lang,
}

/// The clock: injectable so tests can move time (expiry, timeouts).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(siegel_store::unix_now)
}

/// The portal could not start.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The shared form key could not be read or made.
    #[error("portal secret: {0}")]
    Store(#[from] siegel_store::StoreError),
    /// Hashing set-up failed.
    #[error(transparent)]
    Hash(#[from] siegel_gina::accounts::HashError),
}

pub(crate) struct Inner {
    pub settings: Settings,
    pub store: Store,
    pub spool: Spool,
    pub themes: Themes,
    pub hasher: Hasher,
    pub form_key: ring::hmac::Key,
    pub audit: tokio::sync::mpsc::UnboundedSender<siegel_store::AuditEvent>,
    pub clock: Clock,
    pub origin: String,
    pub keys: Option<Arc<dyn handlers::KeyImporter>>,
}

/// Shared state of all handlers.
#[derive(Clone)]
pub(crate) struct AppState(pub Arc<Inner>);

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Queues an audit event; a background task stores them in batches.
    pub fn audit(
        &self,
        event: &str,
        address: Option<&str>,
        container: Option<&str>,
        client: &str,
        detail: &str,
    ) {
        let _ = self.audit.send(siegel_store::AuditEvent {
            at: self.now(),
            event: event.to_owned(),
            address: address.map(str::to_owned),
            container_id: container.map(str::to_owned),
            client: Some(client.to_owned()),
            detail: if detail.is_empty() {
                "-".to_owned()
            } else {
                detail.to_owned()
            },
            node: self.settings.node.clone(),
        });
    }
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of(url: &str) -> String {
    let rest_at = url.find("://").map_or(0, |i| i + 3);
    match url[rest_at..].find('/') {
        Some(i) => url[..rest_at + i].to_owned(),
        None => url.to_owned(),
    }
}

/// A bound portal, not yet serving.
pub struct Portal {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
}

impl Portal {
    /// Binds the listener and prepares the state (`keys` checks uploaded
    /// certificates and keys; `None` refuses uploads).
    /// `tls = None` serves plain HTTP (tests, or TLS terminated by a load
    /// balancer in front).
    #[allow(clippy::too_many_arguments)]
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        settings: Settings,
        store: Store,
        spool: Spool,
        themes: Themes,
        clock: Clock,
        keys: Option<Arc<dyn KeyImporter>>,
    ) -> Result<Portal, PortalError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| PortalError::Bind { addr, source })?;
        let fresh = siegel_store::SecretBytes::new(
            siegel_gina::accounts::new_token()
                .map_err(siegel_gina::accounts::HashError::from)?
                .into_bytes(),
        );
        let secret = store
            .gina_secrets()
            .get_or_create("portal-form-key", &fresh)
            .await?;
        let form_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(audit_writer(store.clone(), rx));
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hasher = Hasher::new(parallel)?;
        let origin = origin_of(&settings.public_url);
        let max = usize::try_from(settings.max_upload).unwrap_or(usize::MAX);
        let state = AppState(Arc::new(Inner {
            settings,
            store,
            spool,
            themes,
            hasher,
            form_key,
            audit: tx,
            clock,
            origin,
            keys,
        }));
        let router = routes(state.clone())
            .layer(DefaultBodyLimit::max(max))
            .layer(axum::middleware::from_fn_with_state(state, security::layer));
        Ok(Portal {
            listener,
            tls,
            router,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the process ends. Each connection gets its own task;
    /// a TLS handshake that does not finish in 10 s is dropped.
    pub async fn run(self) -> std::io::Result<()> {
        let acceptor = self.tls.map(tokio_rustls::TlsAcceptor::from);
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(target: "siegel::portal", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let router = self.router.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(security::ClientAddr(peer));
                        let r = router.clone();
                        async move {
                            use tower::ServiceExt;
                            r.oneshot(req.map(axum::body::Body::new)).await
                        }
                    },
                );
                let builder = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(acceptor) => {
                        let Ok(Ok(tls)) =
                            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
                                .await
                        else {
                            return;
                        };
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                            .await;
                    }
                    None => {
                        let _ = builder
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                            .await;
                    }
                }
            });
        }
    }
}

/// Stores audit events in batches (one transaction per batch), so opens
/// and logins do not each wait for an fsync.
async fn audit_writer(
    store: Store,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<siegel_store::AuditEvent>,
) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 500).await > 0 {
        if let Err(e) = store.gina_audit().record_many(&batch).await {
            tracing::error!(target: "siegel::portal", error = %e, events = batch.len(), "audit events not stored");
        }
        batch.clear();
    }
}

fn routes(state: AppState) -> Router {
    use handlers::*;
    Router::new()
        .route("/", get(home))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/open", post(open))
        .route("/read", post(read))
        .route("/login", post(login))
        .route("/register", post(register))
        .route("/logout", post(logout))
        .route("/attachment", post(attachment))
        .route("/compose", get(compose_new).post(compose_reply))
        .route("/send", post(send))
        .route("/settings", get(settings_page))
        .route("/settings/password", post(settings_password))
        .route("/settings/question", post(settings_question))
        .route("/settings/method", post(settings_method))
        .route("/settings/language", post(settings_language))
        .route("/reset", get(reset_page).post(reset_start))
        .route("/reset/answer", post(reset_answer))
        .route("/signup", get(signup_page).post(signup_send))
        .route("/signup/verify", get(signup_verify))
        .route("/lang/{lang}", get(set_lang))
        .route("/theme/{name}/portal.css", get(theme_css))
        .route("/theme/{name}/logo", get(theme_logo))
        .route("/favicon.ico", get(favicon))
        .route("/.well-known/openpgpkey/hu/{hash}", get(wkd::direct))
        .route(
            "/.well-known/openpgpkey/{domain}/hu/{hash}",
            get(wkd::advanced),
        )
        .route("/.well-known/openpgpkey/policy", get(wkd::direct_policy))
        .route(
            "/.well-known/openpgpkey/{domain}/policy",
            get(wkd::advanced_policy),
        )
        .fallback(not_found)
        .with_state(state)
}
