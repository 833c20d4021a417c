//! Outbound HTTP(S) GETs for the gateway: CRL distribution points now, WKD
//! and webhooks later.
//!
//! Every URL fetched here comes from outside (a certificate in a signed
//! mail, a recipient's domain), so the fetch is built to be harmless
//! whatever the URL says:
//!
//! * **SSRF guard after DNS resolution** ([`guard`]): loopback, private,
//!   link-local, unique-local, multicast, unspecified and documentation
//!   addresses are refused, unless an address is on the configured allow
//!   list; the connection goes to exactly the addresses that were checked.
//! * **Redirects** are followed only up to a limit, each target re-checked
//!   (scheme, guard); https never redirects to plain http.
//! * **Limits**: a connect timeout per address, one deadline for the whole
//!   fetch (redirects and body included), and a cap on the body size —
//!   a larger body is an error, never truncated data.
//! * **TLS** is rustls with `ring`, trusting webpki-roots, optionally the
//!   system store, and configured extra roots.
//!
//! Tests use [`Resolver::Fixed`] so that no name ever goes to real DNS.

pub mod guard;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use url::Url;

pub use guard::Guard;

/// Why a fetch failed. Every variant is a plain reason the caller can log
/// or store; none means "retry immediately".
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL does not parse or has no host.
    #[error("invalid URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// Only `http` and `https` are fetched (no `file:`, `ftp:`, `ldap:`).
    #[error("unsupported URL scheme `{0}`")]
    UnsupportedScheme(String),
    /// A redirect from https to plain http.
    #[error("refusing redirect from https to http: {to}")]
    Downgrade {
        /// The redirect target.
        to: String,
    },
    /// A redirect without a usable `Location`.
    #[error("bad redirect: {0}")]
    BadRedirect(String),
    /// More redirects than configured.
    #[error("more than {0} redirects")]
    TooManyRedirects(u8),
    /// DNS resolution failed.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// A [`Resolver::Fixed`] knows no such host (tests never reach DNS).
    #[error("host {0} is not in the fixed resolver")]
    UnknownHost(String),
    /// Every address of the host is one the guard refuses.
    #[error("refusing to connect to {host} ({address}): {category} address")]
    Forbidden {
        /// The host name (or IP literal) of the URL.
        host: String,
        /// The first refused address.
        address: IpAddr,
        /// Why it is refused ("loopback", "private", ...).
        category: &'static str,
    },
    /// No permitted address accepted a TCP connection.
    #[error("cannot connect to {host}: {source}")]
    Connect {
        /// The host name.
        host: String,
        /// The last connection error.
        source: std::io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, protocol).
    #[error("TLS with {host} failed: {source}")]
    Tls {
        /// The host name.
        host: String,
        /// rustls' error, wrapped by tokio-rustls.
        source: std::io::Error,
    },
    /// The server spoke broken HTTP or closed the connection early.
    #[error("HTTP error: {0}")]
    Http(#[source] hyper::Error),
    /// The server answered with a status other than 2xx (or a redirect).
    #[error("HTTP status {status} from {url}")]
    Status {
        /// The status code.
        status: u16,
        /// The URL that answered.
        url: String,
    },
    /// The body is larger than the configured cap.
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    /// The deadline passed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The TLS configuration could not be built (a bad extra root).
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// How host names become addresses.
#[derive(Debug, Clone, Default)]
pub enum Resolver {
    /// The system resolver (`getaddrinfo` on a blocking thread).
    #[default]
    System,
    /// A fixed table, host name (lower case) → socket addresses (their
    /// ports are used as given, like `curl --connect-to`). Names not in the
    /// table fail with [`FetchError::UnknownHost`]; IP literals in URLs need
    /// no entry.
    Fixed(HashMap<String, Vec<SocketAddr>>),
}

/// Settings of a [`Fetcher`].
#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Per address tried.
    pub connect_timeout: Duration,
    /// For the whole fetch: connects, TLS, redirects and body.
    pub total_timeout: Duration,
    /// Largest body accepted, in bytes.
    pub max_body: usize,
    /// Redirects followed before giving up.
    pub max_redirects: u8,
    /// Addresses the guard lets through although they are not public (an
    /// internal CRL server; loopback in tests).
    pub allow: Vec<IpNet>,
    /// Trust anchors in addition to webpki-roots (DER).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Also trust the system's certificate store.
    pub native_roots: bool,
    /// Sent as `User-Agent`.
    pub user_agent: String,
    /// Name resolution.
    pub resolver: Resolver,
}

impl Default for FetchConfig {
    /// Sized for CRLs: big public CAs publish CRLs of a few megabytes.
    fn default() -> Self {
        FetchConfig {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_body: 16 * 1024 * 1024,
            max_redirects: 3,
            allow: Vec::new(),
            extra_roots: Vec::new(),
            native_roots: true,
            user_agent: concat!("Siegel/", env!("CARGO_PKG_VERSION")).to_owned(),
            resolver: Resolver::System,
        }
    }
}

/// A successful fetch.
#[derive(Debug, Clone)]
pub struct Response {
    /// The URL that finally answered (after redirects).
    pub url: Url,
    /// The 2xx status.
    pub status: u16,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, at most `max_body` bytes.
    pub body: Bytes,
}

/// Fetches URLs under one [`FetchConfig`]. Cheap to clone.
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

struct Inner {
    config: FetchConfig,
    guard: Guard,
    tls: TlsConnector,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// What one request/response exchange produced.
enum Hop {
    Done(Response),
    Redirect(Url),
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Fetcher {
    /// Builds the TLS configuration once.
    pub fn new(config: FetchConfig) -> Result<Fetcher, FetchError> {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if config.native_roots {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::debug!(target: "siegel::fetch", %error, "skipping system trust anchors");
            }
            roots.add_parsable_certificates(native.certs);
        }
        for cert in &config.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| FetchError::Setup(format!("extra root: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| FetchError::Setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Fetcher {
            inner: Arc::new(Inner {
                guard: Guard::new(config.allow.clone()),
                config,
                tls: TlsConnector::from(Arc::new(tls)),
            }),
        })
    }

    /// The settings this fetcher was made with.
    pub fn config(&self) -> &FetchConfig {
        &self.inner.config
    }

    /// GETs `url`, following redirects, within the total timeout.
    pub async fn get(&self, url: &str) -> Result<Response, FetchError> {
        let url = parse(url)?;
        let deadline = self.inner.config.total_timeout;
        match tokio::time::timeout(deadline, self.follow(url)).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(deadline)),
        }
    }

    async fn follow(&self, mut url: Url) -> Result<Response, FetchError> {
        let mut redirects = 0u8;
        loop {
            match self.hop(&url).await? {
                Hop::Done(response) => return Ok(response),
                Hop::Redirect(next) => {
                    redirects += 1;
                    if redirects > self.inner.config.max_redirects {
                        return Err(FetchError::TooManyRedirects(
                            self.inner.config.max_redirects,
                        ));
                    }
                    if url.scheme() == "https" && next.scheme() == "http" {
                        return Err(FetchError::Downgrade {
                            to: next.to_string(),
                        });
                    }
                    tracing::debug!(target: "siegel::fetch", from = %url, to = %next, "redirect");
                    url = next;
                }
            }
        }
    }

    async fn hop(&self, url: &Url) -> Result<Hop, FetchError> {
        let host = url.host().ok_or_else(|| FetchError::InvalidUrl {
            url: url.to_string(),
            reason: "no host".to_owned(),
        })?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| FetchError::UnsupportedScheme(url.scheme().to_owned()))?;
        let host_text = match &host {
            url::Host::Domain(d) => (*d).to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let addresses = match host {
            url::Host::Ipv4(ip) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
            url::Host::Ipv6(ip) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
            url::Host::Domain(name) => self.resolve(name, port).await?,
        };
        let mut permitted = Vec::new();
        let mut refused = None;
        for a in addresses {
            match self.inner.guard.check(a.ip()) {
                Ok(()) => permitted.push(a),
                Err(category) => {
                    tracing::info!(target: "siegel::fetch", host = %host_text, address = %a.ip(), category, "refusing address");
                    refused.get_or_insert((a.ip(), category));
                }
            }
        }
        if permitted.is_empty() {
            return Err(match refused {
                Some((address, category)) => FetchError::Forbidden {
                    host: host_text,
                    address,
                    category,
                },
                None => FetchError::Resolve {
                    host: host_text,
                    source: std::io::Error::other("no addresses"),
                },
            });
        }
        let tcp = self.connect(&host_text, &permitted).await?;
        let io: Box<dyn Io> = if url.scheme() == "https" {
            let name = match url.host() {
                Some(url::Host::Ipv4(ip)) => ServerName::IpAddress(IpAddr::V4(ip).into()),
                Some(url::Host::Ipv6(ip)) => ServerName::IpAddress(IpAddr::V6(ip).into()),
                _ => {
                    ServerName::try_from(host_text.clone()).map_err(|e| FetchError::InvalidUrl {
                        url: url.to_string(),
                        reason: e.to_string(),
                    })?
                }
            };
            let tls =
                self.inner
                    .tls
                    .connect(name, tcp)
                    .await
                    .map_err(|source| FetchError::Tls {
                        host: host_text.clone(),
                        source,
                    })?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        self.exchange(url, io).await
    }

    async fn resolve(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, FetchError> {
        match &self.inner.config.resolver {
            Resolver::Fixed(table) => table
                .get(&name.to_ascii_lowercase())
                .cloned()
                .ok_or_else(|| FetchError::UnknownHost(name.to_owned())),
            Resolver::System => tokio::net::lookup_host((name, port))
                .await
                .map(|it| it.collect())
                .map_err(|source| FetchError::Resolve {
                    host: name.to_owned(),
                    source,
                }),
        }
    }

    async fn connect(&self, host: &str, addresses: &[SocketAddr]) -> Result<TcpStream, FetchError> {
        let limit = self.inner.config.connect_timeout;
        let mut last = std::io::Error::other("no address tried");
        for a in addresses {
            match tokio::time::timeout(limit, TcpStream::connect(a)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect to {a} timed out after {limit:?}"),
                    )
                }
            }
        }
        Err(FetchError::Connect {
            host: host.to_owned(),
            source: last,
        })
    }

    /// One HTTP/1.1 request on `io`. The connection is driven in this task
    /// (not spawned), so the fetch deadline bounds it too.
    async fn exchange(&self, url: &Url, io: Box<dyn Io>) -> Result<Hop, FetchError> {
        let config = &self.inner.config;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io))
                .await
                .map_err(FetchError::Http)?;
        let request = request(url, &config.user_agent)?;
        let max_body = config.max_body;
        let work = async move {
            let response = sender
                .send_request(request)
                .await
                .map_err(FetchError::Http)?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| FetchError::BadRedirect(format!("{status} without Location")))?;
                let next = url
                    .join(location)
                    .map_err(|e| FetchError::BadRedirect(format!("`{location}`: {e}")))?;
                check_scheme(&next)?;
                return Ok(Hop::Redirect(next));
            }
            if !status.is_success() {
                return Err(FetchError::Status {
                    status: status.as_u16(),
                    url: url.to_string(),
                });
            }
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let announced = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if announced.is_some_and(|n| n > max_body as u64) {
                return Err(FetchError::TooLarge(max_body));
            }
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| match e.downcast::<hyper::Error>() {
                    Ok(http) => FetchError::Http(*http),
                    Err(_) => FetchError::TooLarge(max_body),
                })?
                .to_bytes();
            Ok(Hop::Done(Response {
                url: url.clone(),
                status: status.as_u16(),
                content_type,
                body,
            }))
        };
        let mut work = std::pin::pin!(work);
        let mut conn = std::pin::pin!(conn);
        let mut conn_done = false;
        loop {
            tokio::select! {
                result = &mut work => return result,
                // The connection ends after the response (Connection:
                // close); its error, if any, reaches `work` as well.
                _ = &mut conn, if !conn_done => conn_done = true,
            }
        }
    }
}

fn parse(url: &str) -> Result<Url, FetchError> {
    let parsed = Url::parse(url).map_err(|e| FetchError::InvalidUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    check_scheme(&parsed)?;
    if parsed.host().is_none() {
        return Err(FetchError::InvalidUrl {
            url: url.to_owned(),
            reason: "no host".to_owned(),
        });
    }
    Ok(parsed)
}

fn check_scheme(url: &Url) -> Result<(), FetchError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(FetchError::UnsupportedScheme(other.to_owned())),
    }
}

fn request(url: &Url, user_agent: &str) -> Result<Request<Empty<Bytes>>, FetchError> {
    let invalid = |reason: String| FetchError::InvalidUrl {
        url: url.to_string(),
        reason,
    };
    let mut target = url.path().to_owned();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err(invalid("no host".to_owned())),
    };
    Request::get(target)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            HeaderValue::from_str(user_agent).map_err(|e| invalid(e.to_string()))?,
        )
        .header(header::ACCEPT, "*/*")
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pipeline runs fetches on a multi-threaded runtime (`tokio::spawn`).
    #[test]
    fn fetches_are_send() {
        fn send<T: Send>(_: &T) {}
        let Ok(fetcher) = Fetcher::new(FetchConfig::default()) else {
            panic!("default configuration must build");
        };
        let future = fetcher.get("http://crl.example/ca.crl");
        send(&future);
        send(&fetcher);
    }

    #[test]
    fn requests_name_the_host_and_port_and_keep_the_query() {
        let Ok(url) = Url::parse("http://crl.example:8080/a/b.crl?x=1") else {
            panic!("test URL");
        };
        let Ok(req) = request(&url, "Siegel/test") else {
            panic!("request");
        };
        assert_eq!(req.uri(), "/a/b.crl?x=1");
        assert_eq!(req.headers()[header::HOST], "crl.example:8080");
        assert_eq!(req.headers()[header::CONNECTION], "close");
        assert!(matches!(
            parse("http://"),
            Err(FetchError::InvalidUrl { .. })
        ));
    }
}
