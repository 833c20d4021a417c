//! A real HTTPS WKD server on 127.0.0.1 for tests (feature `test-server`):
//! a fresh test CA, one server certificate for the given host names, and
//! a fetcher that trusts that CA and resolves exactly those names to the
//! server ([`siegel_fetch::Resolver::Fixed`]), so no test reaches DNS or
//! the internet. Responses are set per host and path; every request is
//! counted, so tests can prove that the cache answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use siegel_fetch::{FetchConfig, Fetcher, Resolver};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Default)]
struct State {
    /// `host path` (no query) → status, body.
    routes: HashMap<String, (u16, Vec<u8>)>,
    /// `host path` → requests seen.
    hits: HashMap<String, usize>,
    /// Full request targets seen (with query), in order.
    log: Vec<String>,
    /// TCP connections accepted.
    connections: usize,
}

/// The running server. Dropping it does not stop it (the test's runtime
/// ends it).
#[derive(Clone)]
pub struct Server {
    state: Arc<Mutex<State>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The test CA (DER), to pass as an extra root.
    pub root: CertificateDer<'static>,
    names: Vec<String>,
}

fn key(host: &str, path: &str) -> String {
    format!("{} {path}", host.to_ascii_lowercase())
}

impl Server {
    /// Starts a server whose certificate names `names` (all resolved to it
    /// by [`Server::fetcher`]).
    pub async fn start(names: &[&str]) -> Server {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "WKD Test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let leaf = rcgen::CertificateParams::new(names.clone())
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let shared = Arc::clone(&state);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                shared.lock().unwrap().connections += 1;
                let acceptor = acceptor.clone();
                let state = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(answer(&state, &req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Server {
            state,
            addr,
            root: ca_cert.der().clone(),
            names,
        }
    }

    /// Answers `status` with `body` for GETs of `path` (no query) on `host`.
    pub fn serve(&self, host: &str, path: &str, status: u16, body: Vec<u8>) {
        let mut s = self.state.lock().unwrap();
        s.routes.insert(key(host, path), (status, body));
    }

    /// Requests seen for `path` on `host`.
    pub fn hits(&self, host: &str, path: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.hits.get(&key(host, path)).copied().unwrap_or(0)
    }

    /// TCP connections accepted (also those whose TLS handshake failed).
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// All requests seen (`host target`), in order.
    pub fn log(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// A fetcher that trusts the test CA, lets 127.0.0.1 past the SSRF
    /// guard, resolves the server's names to it and nothing else, and caps
    /// bodies at `max_body`.
    pub fn fetcher(&self, max_body: usize) -> Fetcher {
        self.fetcher_also_resolving(max_body, &[])
    }

    /// [`Server::fetcher`], also resolving `others` to the server, whose
    /// certificate does not name them: a TLS failure, as for a domain
    /// whose wildcard DNS sends `openpgpkey.<domain>` to its web server.
    pub fn fetcher_also_resolving(&self, max_body: usize, others: &[&str]) -> Fetcher {
        let mut table = HashMap::new();
        for n in self
            .names
            .iter()
            .map(String::as_str)
            .chain(others.iter().copied())
        {
            table.insert(n.to_ascii_lowercase(), vec![self.addr]);
        }
        Fetcher::new(FetchConfig {
            max_body,
            total_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            allow: vec!["127.0.0.1/32".parse::<ipnet::IpNet>().unwrap()],
            extra_roots: vec![self.root.clone()],
            native_roots: false,
            resolver: Resolver::Fixed(table),
            ..FetchConfig::default()
        })
        .unwrap()
    }
}

fn answer(state: &Mutex<State>, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_owned();
    let path = req.uri().path().to_owned();
    let k = key(&host, &path);
    let mut s = state.lock().unwrap();
    *s.hits.entry(k.clone()).or_default() += 1;
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    s.log.push(format!("{host} {target}"));
    let (status, body) = s
        .routes
        .get(&k)
        .cloned()
        .unwrap_or((404, b"not found".to_vec()));
    Response::builder()
        .status(status)
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
