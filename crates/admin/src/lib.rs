//! The admin listener. It never touches the mail path: it reads the shared
//! counters (and, later, the store) and answers over HTTP.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use siegel_types::Counters;
use tokio::net::TcpListener;

/// The admin listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The configured address could not be bound (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound admin listener, not yet serving: binding first lets `serve`
/// refuse to start half-way when the port is taken.
pub struct Admin {
    listener: TcpListener,
    counters: Arc<Counters>,
}

impl Admin {
    pub async fn bind(addr: SocketAddr, counters: Arc<Counters>) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self { listener, counters })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the process ends.
    pub async fn run(self) -> std::io::Result<()> {
        axum::serve(self.listener, router(self.counters)).await
    }
}

fn router(counters: Arc<Counters>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(counters)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(counters): State<Arc<Counters>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        counters.render_prometheus(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_path(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_health_and_metrics_over_http() {
        let counters = Arc::new(Counters::default());
        Counters::inc(&counters.accepted);
        Counters::inc(&counters.accepted);
        let admin = Admin::bind("127.0.0.1:0".parse().unwrap(), counters)
            .await
            .unwrap();
        let addr = admin.local_addr().unwrap();
        tokio::spawn(admin.run());
        let health = get_path(addr, "/healthz").await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        let metrics = get_path(addr, "/metrics").await;
        assert!(
            metrics.contains("siegel_mails_accepted_total 2"),
            "{metrics}"
        );
        assert!(metrics.contains("# TYPE siegel_queue_size gauge"));
        assert!(get_path(addr, "/nope").await.starts_with("HTTP/1.1 404"));
    }
}
