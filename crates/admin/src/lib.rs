//! The admin listener. It never touches the mail path: it reads the shared
//! counters (and, later, the store) and answers over HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
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

/// Where the CRL comes from (the mPKI over the store). A trait so this
/// crate needs neither the store nor OpenSSL.
pub trait CrlSource: Send + Sync {
    /// The current CRL, DER; `None` when it cannot be made now.
    fn crl(&self) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + '_>>;
}

/// A bound admin listener, not yet serving: binding first lets `serve`
/// refuse to start half-way when the port is taken.
pub struct Admin {
    listener: TcpListener,
    counters: Arc<Counters>,
    crl: Option<Arc<dyn CrlSource>>,
}

#[derive(Clone)]
struct AppState {
    counters: Arc<Counters>,
    crl: Option<Arc<dyn CrlSource>>,
}

impl Admin {
    pub async fn bind(addr: SocketAddr, counters: Arc<Counters>) -> Result<Self, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| AdminError::Bind { addr, source })?;
        Ok(Self {
            listener,
            counters,
            crl: None,
        })
    }

    /// Serves the CA's CRL at `/crl/ca.crl`: clients check the
    /// certificates Siegel issues against it (its URL is in each of them).
    pub fn with_crl(mut self, crl: Arc<dyn CrlSource>) -> Self {
        self.crl = Some(crl);
        self
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until the process ends.
    pub async fn run(self) -> std::io::Result<()> {
        let state = AppState {
            counters: self.counters,
            crl: self.crl,
        };
        axum::serve(self.listener, router(state)).await
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/crl/ca.crl", get(crl))
        .with_state(state)
}

async fn crl(State(state): State<AppState>) -> axum::response::Response {
    let Some(source) = &state.crl else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match source.crl().await {
        Some(der) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/pkix-crl"),
            )],
            der,
        )
            .into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let counters = state.counters;
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
        // Without an mPKI there is no CRL.
        assert!(
            get_path(addr, "/crl/ca.crl")
                .await
                .starts_with("HTTP/1.1 404")
        );
    }

    struct FixedCrl;
    impl CrlSource for FixedCrl {
        fn crl(&self) -> Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + '_>> {
            Box::pin(async { Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]) })
        }
    }

    #[tokio::test]
    async fn serves_the_crl_as_der() {
        let admin = Admin::bind(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(Counters::default()),
        )
        .await
        .unwrap()
        .with_crl(Arc::new(FixedCrl));
        let addr = admin.local_addr().unwrap();
        tokio::spawn(admin.run());
        let r = get_path(addr, "/crl/ca.crl").await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("application/pkix-crl"), "{r}");
    }
}
