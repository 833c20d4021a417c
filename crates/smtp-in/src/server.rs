//! Listeners and the accept loops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use siegel_types::Counters;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::session::handle_session;
use crate::spool::MailSpool;
use crate::{LOG_TARGET, Listener, Settings, SmtpInError};

/// The bound SMTP server: all listeners are bound before anything runs, so
/// a bad address fails start-up as a whole instead of half-starting.
pub struct Server<Q = siegel_spool::Spool> {
    listeners: Vec<(TcpListener, Listener)>,
    settings: Arc<Settings>,
    spool: Q,
    counters: Arc<Counters>,
}

impl<Q: MailSpool> Server<Q> {
    /// Binds every configured listener, or none.
    pub async fn bind(
        settings: Arc<Settings>,
        spool: Q,
        counters: Arc<Counters>,
    ) -> Result<Self, SmtpInError> {
        let wanted = settings.listen.iter().map(|a| (*a, Listener::Smtp)).chain(
            settings
                .submission_listen
                .iter()
                .map(|a| (*a, Listener::Submission)),
        );
        let mut listeners = Vec::new();
        for (addr, kind) in wanted {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| SmtpInError::Bind { addr, source })?;
            listeners.push((listener, kind));
        }
        if listeners.is_empty() {
            return Err(SmtpInError::NoListeners);
        }
        Ok(Self {
            listeners,
            settings,
            spool,
            counters,
        })
    }

    /// The bound addresses (with the real port when 0 was configured).
    pub fn local_addrs(&self) -> Vec<(SocketAddr, Listener)> {
        self.listeners
            .iter()
            .filter_map(|(l, kind)| l.local_addr().ok().map(|a| (a, *kind)))
            .collect()
    }

    /// Runs the accept loops, one task per connection. Returns only if a
    /// loop task dies, which is a bug; transient accept errors (EMFILE, …)
    /// are logged and retried.
    pub async fn run(self) -> Result<(), SmtpInError> {
        let permits = Arc::new(Semaphore::new(self.settings.max_connections.max(1)));
        let mut loops = tokio::task::JoinSet::new();
        for (listener, kind) in self.listeners {
            loops.spawn(accept_loop(
                listener,
                kind,
                self.settings.clone(),
                self.spool.clone(),
                self.counters.clone(),
                permits.clone(),
            ));
        }
        match loops.join_next().await {
            Some(Err(e)) => Err(SmtpInError::Task(e.to_string())),
            _ => Err(SmtpInError::Task("accept loop ended".into())),
        }
    }
}

async fn accept_loop<Q: MailSpool>(
    listener: TcpListener,
    kind: Listener,
    settings: Arc<Settings>,
    spool: Q,
    counters: Arc<Counters>,
    permits: Arc<Semaphore>,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let (settings, spool, counters) =
                    (settings.clone(), spool.clone(), counters.clone());
                tokio::spawn(async move {
                    handle_session(stream, peer, kind, settings, spool, counters).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::info!(target: LOG_TARGET, peer = %peer, result = "rejected", reason = "too many connections", "connection refused");
                tokio::spawn(async move {
                    let _ = stream
                        .write_all(b"421 4.7.0 Too many connections\r\n")
                        .await;
                    let _ = stream.shutdown().await;
                });
            }
        }
    }
}
