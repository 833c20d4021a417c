//! The fetcher against real HTTP servers started here on loopback: hyper's
//! server (plain and TLS) and Python's `http.server`. Names resolve through
//! a fixed table, never real DNS; only 127.0.0.1 is allowed past the guard,
//! so every other loopback or private address stays refused.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use siegel_fetch::{FetchConfig, FetchError, Fetcher, Resolver};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const MAX: usize = 64 * 1024;

/// A body of `left` bytes in 16 KiB frames without a Content-Length: the
/// cap must hold while streaming, not only against the header.
struct Chunks {
    left: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(16 * 1024);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

fn full(status: u16, body: &'static [u8]) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", "application/pkix-crl")
        .body(Full::new(Bytes::from_static(body)).boxed())
        .unwrap()
}

fn redirect(to: &str) -> Reply {
    Response::builder()
        .status(302)
        .header("location", to)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

async fn route(req: Request<Incoming>) -> Result<Reply, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let to = query.strip_prefix("to=").unwrap_or("").to_owned();
    Ok(match path.as_str() {
        "/ca.crl" => full(200, b"CRL BYTES"),
        "/host" => {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Response::new(Full::new(Bytes::from(host)).boxed())
        }
        "/big-streamed" => Response::new(Chunks { left: MAX * 4 }.boxed()),
        "/big-announced" => Response::new(Full::new(Bytes::from(vec![b'y'; MAX + 1])).boxed()),
        "/exactly-max" => Response::new(Full::new(Bytes::from(vec![b'z'; MAX])).boxed()),
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            full(200, b"late")
        }
        "/redirect" => redirect(&to),
        "/loop" => redirect("/loop"),
        _ => full(404, b"not found"),
    })
}

/// Serves `route` on 127.0.0.1 (TLS when `tls` is given); returns the port.
async fn server(tls: Option<TlsAcceptor>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(s), service_fn(route))
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service_fn(route))
                            .await;
                    }
                }
            });
        }
    });
    port
}

fn resolver(entries: &[(&str, SocketAddr)]) -> Resolver {
    let mut table: HashMap<String, Vec<SocketAddr>> = HashMap::new();
    for (host, addr) in entries {
        table.entry((*host).to_owned()).or_default().push(*addr);
    }
    Resolver::Fixed(table)
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn fetcher(resolver: Resolver) -> Fetcher {
    Fetcher::new(FetchConfig {
        max_body: MAX,
        total_timeout: Duration::from_secs(2),
        allow: vec!["127.0.0.1/32".parse().unwrap()],
        native_roots: false,
        resolver,
        ..FetchConfig::default()
    })
    .unwrap()
}

#[tokio::test]
async fn a_crl_is_fetched_through_a_name_from_the_fixed_resolver() {
    let port = server(None).await;
    let f = fetcher(resolver(&[("crl.example", local(port))]));
    let r = f.get("http://crl.example/ca.crl").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(&r.body[..], b"CRL BYTES");
    assert_eq!(r.content_type.as_deref(), Some("application/pkix-crl"));
    assert_eq!(r.url.as_str(), "http://crl.example/ca.crl");
    // the Host header names the URL's host, not the address
    let r = f.get("http://crl.example/host").await.unwrap();
    assert_eq!(&r.body[..], b"crl.example");
}

#[tokio::test]
async fn names_resolving_to_private_addresses_are_refused_before_connecting() {
    let port = server(None).await;
    for (addr, category) in [
        ("127.0.0.2", "loopback"),
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("192.0.2.10", "documentation"),
        ("[fd00::1]", "unique-local"),
        ("[::1]", "loopback"),
    ] {
        let ip: std::net::IpAddr = addr.trim_matches(['[', ']']).parse().unwrap();
        let f = fetcher(resolver(&[("internal.example", SocketAddr::new(ip, port))]));
        match f.get("http://internal.example/ca.crl").await {
            Err(FetchError::Forbidden {
                host,
                address,
                category: c,
            }) => {
                assert_eq!(host, "internal.example");
                assert_eq!(address, ip);
                assert_eq!(c, category);
            }
            other => panic!("{addr}: {other:?}"),
        }
        // the same address written into the URL is refused too
        let url = format!("http://{addr}:{port}/ca.crl");
        assert!(
            matches!(f.get(&url).await, Err(FetchError::Forbidden { .. })),
            "{url}"
        );
    }
}

#[tokio::test]
async fn only_the_permitted_addresses_of_a_mixed_answer_are_used() {
    let port = server(None).await;
    let f = fetcher(resolver(&[
        ("mixed.example", SocketAddr::from(([10, 0, 0, 1], port))),
        ("mixed.example", local(port)),
    ]));
    let r = f.get("http://mixed.example/ca.crl").await.unwrap();
    assert_eq!(&r.body[..], b"CRL BYTES");
}

#[tokio::test]
async fn a_redirect_to_a_private_address_is_refused() {
    let port = server(None).await;
    let f = fetcher(resolver(&[
        ("crl.example", local(port)),
        (
            "metadata.example",
            SocketAddr::from(([169, 254, 169, 254], 80)),
        ),
    ]));
    for target in [
        format!("http://127.0.0.2:{port}/ca.crl"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://metadata.example/latest/meta-data/".to_owned(),
        "http://[::ffff:127.0.0.1]/ca.crl".to_owned(),
    ] {
        let url = format!("http://crl.example/redirect?to={target}");
        match f.get(&url).await {
            Err(FetchError::Forbidden { .. }) => {}
            other => panic!("{target}: {other:?}"),
        }
    }
    // while a redirect to a permitted place is followed
    let r = f
        .get("http://crl.example/redirect?to=/ca.crl")
        .await
        .unwrap();
    assert_eq!(&r.body[..], b"CRL BYTES");
    assert_eq!(r.url.as_str(), "http://crl.example/ca.crl");
}

#[tokio::test]
async fn redirects_are_limited_and_schemes_checked() {
    let port = server(None).await;
    let f = fetcher(resolver(&[("crl.example", local(port))]));
    assert!(matches!(
        f.get("http://crl.example/loop").await,
        Err(FetchError::TooManyRedirects(3))
    ));
    assert!(matches!(
        f.get("http://crl.example/redirect?to=file:///etc/passwd")
            .await,
        Err(FetchError::UnsupportedScheme(s)) if s == "file"
    ));
    for url in [
        "ftp://crl.example/x",
        "file:///etc/passwd",
        "ldap://crl.example/cn=x",
    ] {
        assert!(
            matches!(f.get(url).await, Err(FetchError::UnsupportedScheme(_))),
            "{url}"
        );
    }
    assert!(matches!(
        f.get("not a url").await,
        Err(FetchError::InvalidUrl { .. })
    ));
    assert!(matches!(
        f.get("http://unknown.example/").await,
        Err(FetchError::UnknownHost(h)) if h == "unknown.example"
    ));
    assert!(matches!(
        f.get("http://crl.example/missing").await,
        Err(FetchError::Status { status: 404, .. })
    ));
}

#[tokio::test]
async fn oversized_bodies_are_an_error_streamed_or_announced() {
    let port = server(None).await;
    let f = fetcher(resolver(&[("crl.example", local(port))]));
    for path in ["/big-streamed", "/big-announced"] {
        match f.get(&format!("http://crl.example{path}")).await {
            Err(FetchError::TooLarge(n)) => assert_eq!(n, MAX),
            other => panic!("{path}: {other:?}"),
        }
    }
    let r = f.get("http://crl.example/exactly-max").await.unwrap();
    assert_eq!(r.body.len(), MAX);
}

#[tokio::test]
async fn a_slow_server_hits_the_deadline() {
    let port = server(None).await;
    let f = fetcher(resolver(&[("crl.example", local(port))]));
    let start = Instant::now();
    match f.get("http://crl.example/slow").await {
        Err(FetchError::Timeout(d)) => assert_eq!(d, Duration::from_secs(2)),
        other => panic!("{other:?}"),
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let f = fetcher(resolver(&[("crl.example", local(port))]));
    assert!(matches!(
        f.get("http://crl.example/ca.crl").await,
        Err(FetchError::Connect { .. })
    ));
}

/// A test CA and a server certificate for `crl.example` signed by it.
fn tls_pair() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Fetch Test CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["crl.example".to_owned()])
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
    (ca_cert.der().clone(), Arc::new(config))
}

#[tokio::test]
async fn https_with_an_extra_root_works_and_without_it_fails() {
    let (root, config) = tls_pair();
    let port = server(Some(TlsAcceptor::from(config))).await;
    let table = resolver(&[("crl.example", local(port)), ("plain.example", local(port))]);
    let trusting = Fetcher::new(FetchConfig {
        extra_roots: vec![root],
        ..fetcher(table.clone()).config().clone()
    })
    .unwrap();
    let r = trusting.get("https://crl.example/ca.crl").await.unwrap();
    assert_eq!(&r.body[..], b"CRL BYTES");
    // the certificate names crl.example only
    assert!(matches!(
        trusting.get("https://plain.example/ca.crl").await,
        Err(FetchError::Tls { .. })
    ));
    // https never redirects to http
    match trusting
        .get("https://crl.example/redirect?to=http://crl.example/ca.crl")
        .await
    {
        Err(FetchError::Downgrade { to }) => assert_eq!(to, "http://crl.example/ca.crl"),
        other => panic!("{other:?}"),
    }
    // webpki-roots alone do not know the test CA
    assert!(matches!(
        fetcher(table).get("https://crl.example/ca.crl").await,
        Err(FetchError::Tls { .. })
    ));
}

/// Python's `http.server` as an independent peer: a CRL file served from a
/// directory, and its Content-Length checked against the cap.
#[tokio::test]
async fn files_from_python_http_server() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crl"), b"\x30\x82 a DER CRL").unwrap();
    std::fs::write(dir.path().join("huge.crl"), vec![0u8; MAX * 2]).unwrap();
    let mut child = tokio::process::Command::new("python3")
        .args([
            "-u",
            "-m",
            "http.server",
            "0",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 is needed for this test");
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
    let port: u16 = line
        .split(" port ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected http.server line: {line}"));
    let f = fetcher(resolver(&[("crl.example", local(port))]));
    let r = f.get("http://crl.example/ca.crl").await.unwrap();
    assert_eq!(&r.body[..], b"\x30\x82 a DER CRL");
    assert!(matches!(
        f.get("http://crl.example/huge.crl").await,
        Err(FetchError::TooLarge(_))
    ));
    assert!(matches!(
        f.get("http://crl.example/none.crl").await,
        Err(FetchError::Status { status: 404, .. })
    ));
    child.kill().await.unwrap();
}
