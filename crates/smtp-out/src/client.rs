//! A small SMTP client on tokio + rustls.
//!
//! Written here rather than taken from a crate because delivery must stream
//! the content from the spool file (a 100 MB mail must not need 100 MB of
//! RAM) and must see the reply to every single RCPT, which is what the
//! per-recipient delivery state and the DSNs are built from.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use siegel_types::{DsnRet, Envelope, Recipient, ReversePath, SmtpReply};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::TlsPolicy;

/// Longest reply line we accept; RFC 5321 allows 512, real servers send more,
/// but a peer streaming an endless line must not eat our memory.
const MAX_REPLY_LINE: u64 = 8 * 1024;
/// Most lines in one multi-line reply (EHLO lists are the longest, ~20).
const MAX_REPLY_LINES: usize = 200;
/// Size of the chunks the content is streamed in.
const CHUNK: usize = 64 * 1024;

/// Why talking to a next hop failed. Every variant except a 5xx
/// [`ClientError::Reply`] is temporary: the recipients stay queued.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connection to {peer} failed: {source}")]
    Connect { peer: String, source: io::Error },
    #[error("timeout while talking to {peer} ({stage})")]
    Timeout { peer: String, stage: &'static str },
    #[error("connection to {peer} broke: {source}")]
    Io { peer: String, source: io::Error },
    #[error("{peer} answered {reply} to {stage}")]
    Reply {
        peer: String,
        stage: &'static str,
        reply: SmtpReply,
    },
    #[error("malformed reply from {peer}: {what}")]
    Protocol { peer: String, what: String },
    #[error("TLS required but not offered by {peer}")]
    TlsNotOffered { peer: String },
    #[error("TLS with {peer} failed: {source}")]
    Tls { peer: String, source: io::Error },
    #[error("`{0}` is not a valid TLS server name")]
    ServerName(String),
}

impl ClientError {
    /// A 5xx reply: retrying cannot help.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Reply { reply, .. } if reply.is_permanent())
    }

    /// The peer's reply, when the failure was one.
    pub fn reply(&self) -> Option<&SmtpReply> {
        match self {
            Self::Reply { reply, .. } => Some(reply),
            _ => None,
        }
    }
}

/// Why the TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA file {path} holds no usable certificate")]
    CaEmpty { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// What the peer announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub esmtp: bool,
    pub pipelining: bool,
    pub starttls: bool,
    pub eight_bit: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    /// `SIZE n`; `Some(0)` means "announced without a limit".
    pub size: Option<u64>,
}

impl Capabilities {
    fn from_ehlo(lines: &[String]) -> Self {
        let mut caps = Self {
            esmtp: true,
            ..Self::default()
        };
        // The first line is the greeting name, the rest are keywords.
        for line in lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "STARTTLS" => caps.starttls = true,
                "8BITMIME" => caps.eight_bit = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "DSN" => caps.dsn = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                _ => {}
            }
        }
        caps
    }
}

/// Accepts every server certificate. Used ONLY for opportunistic TLS, where
/// the alternative is plain text: encryption against passive eavesdroppers is
/// still better than none (RFC 7435). Signatures are still checked so that the
/// handshake itself is sound.
#[derive(Debug)]
struct AcceptAnyServerCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens SMTP connections: holds our EHLO name, the timeouts and both TLS
/// configurations (verifying for `Required`, accept-any for opportunistic).
pub struct Connector {
    hostname: String,
    verified: TlsConnector,
    unverified: TlsConnector,
    connect_timeout: Duration,
    command_timeout: Duration,
}

impl Connector {
    /// Builds the TLS configurations once: trust anchors are webpki-roots,
    /// the system store (unreadable system certificates are skipped, not
    /// fatal: webpki-roots remains) and every PEM certificate in `ca_files`.
    pub fn new(
        hostname: &str,
        ca_files: &[PathBuf],
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, TlsSetupError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::debug!(target: "siegel::smtp_out", %error, "skipping system trust anchors");
        }
        roots.add_parsable_certificates(native.certs);
        for path in ca_files {
            let mut added = 0;
            for cert in
                CertificateDer::pem_file_iter(path).map_err(|source| TlsSetupError::CaFile {
                    path: path.clone(),
                    source,
                })?
            {
                let cert = cert.map_err(|source| TlsSetupError::CaFile {
                    path: path.clone(),
                    source,
                })?;
                if roots.add(cert).is_ok() {
                    added += 1;
                }
            }
            if added == 0 {
                return Err(TlsSetupError::CaEmpty { path: path.clone() });
            }
        }
        let verified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCertificate(provider)))
            .with_no_client_auth();
        Ok(Self {
            hostname: hostname.to_owned(),
            verified: TlsConnector::from(Arc::new(verified)),
            unverified: TlsConnector::from(Arc::new(unverified)),
            connect_timeout,
            command_timeout,
        })
    }

    /// Connects to `addr` (whose name, for certificate checks, is `host`),
    /// reads the greeting, says EHLO and negotiates STARTTLS per `policy`.
    /// Opportunistic TLS whose handshake fails is retried once in plain
    /// text; `Required` never falls back.
    pub async fn connect(
        &self,
        host: &str,
        addr: SocketAddr,
        policy: TlsPolicy,
    ) -> Result<Connection, ClientError> {
        match self.connect_once(host, addr, policy, true).await {
            Err(ClientError::Tls { peer, source }) if policy == TlsPolicy::Opportunistic => {
                tracing::info!(target: "siegel::smtp_out", %peer, error = %source, "TLS handshake failed, retrying in plain text");
                self.connect_once(host, addr, policy, false).await
            }
            other => other,
        }
    }

    async fn connect_once(
        &self,
        host: &str,
        addr: SocketAddr,
        policy: TlsPolicy,
        try_tls: bool,
    ) -> Result<Connection, ClientError> {
        let peer = format!("{host}[{addr}]");
        let tcp = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ClientError::Timeout {
                    peer,
                    stage: "connect",
                });
            }
            Ok(Err(source)) => return Err(ClientError::Connect { peer, source }),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            io: BufReader::new(Stream::Plain(tcp)),
            caps: Capabilities::default(),
            peer,
            host: host.to_owned(),
            timeout: self.command_timeout,
            last_used: Instant::now(),
            tls: false,
        };
        let greeting = conn.read_reply("greeting").await?;
        if !greeting.is_positive() {
            return Err(ClientError::Reply {
                peer: conn.peer,
                stage: "greeting",
                reply: greeting.into(),
            });
        }
        conn.hello(&self.hostname).await?;
        if !try_tls || !conn.caps.starttls {
            if policy == TlsPolicy::Required {
                return Err(ClientError::TlsNotOffered { peer: conn.peer });
            }
            return Ok(conn);
        }
        conn.write(b"STARTTLS\r\n", "STARTTLS").await?;
        let reply = conn.read_reply("STARTTLS").await?;
        if reply.code != 220 {
            if policy == TlsPolicy::Required {
                return Err(ClientError::TlsNotOffered { peer: conn.peer });
            }
            return Ok(conn);
        }
        let name = tls_server_name(host)?;
        let connector = match policy {
            TlsPolicy::Required => &self.verified,
            TlsPolicy::Opportunistic => &self.unverified,
        };
        let Connection {
            io,
            peer,
            host,
            timeout,
            ..
        } = conn;
        let Stream::Plain(tcp) = io.into_inner() else {
            return Err(ClientError::Protocol {
                peer,
                what: "STARTTLS on a TLS connection".into(),
            });
        };
        let tls = match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            // A handshake that hangs is a handshake that failed: opportunistic
            // TLS then falls back to plain text like for any other TLS error.
            Err(_) => {
                let source = io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out");
                return Err(ClientError::Tls { peer, source });
            }
            Ok(Err(source)) => return Err(ClientError::Tls { peer, source }),
            Ok(Ok(tls)) => tls,
        };
        let mut conn = Connection {
            io: BufReader::new(Stream::Tls(Box::new(tls))),
            caps: Capabilities::default(),
            peer,
            host,
            timeout,
            last_used: Instant::now(),
            tls: true,
        };
        conn.hello(&self.hostname).await?;
        Ok(conn)
    }
}

fn tls_server_name(host: &str) -> Result<ServerName<'static>, ClientError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let bare = bare.strip_prefix("IPv6:").unwrap_or(bare);
    ServerName::try_from(bare.to_owned()).map_err(|_| ClientError::ServerName(host.to_owned()))
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A reply with its lines kept apart (EHLO keywords are per line).
#[derive(Debug, Clone)]
struct RawReply {
    code: u16,
    lines: Vec<String>,
}

impl RawReply {
    fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl From<RawReply> for SmtpReply {
    fn from(raw: RawReply) -> Self {
        let class = raw.code / 100;
        let mut enhanced = None;
        let mut texts = Vec::with_capacity(raw.lines.len());
        for line in &raw.lines {
            match split_enhanced(line, class) {
                Some((code, rest)) => {
                    enhanced.get_or_insert_with(|| code.to_owned());
                    texts.push(rest);
                }
                None => texts.push(line.as_str()),
            }
        }
        SmtpReply {
            code: raw.code,
            enhanced,
            text: texts.join(" "),
        }
    }
}

/// Splits an RFC 3463 enhanced status code (`class.subject.detail`) off the
/// front of a reply line, when it is there and its class matches the code's.
fn split_enhanced(line: &str, class: u16) -> Option<(&str, &str)> {
    let (code, rest) = line.split_once(' ').unwrap_or((line, ""));
    let mut parts = code.split('.');
    let first = parts.next()?;
    let ok = first.len() == 1
        && first.parse::<u16>().ok() == Some(class)
        && parts.clone().count() == 2
        && parts.all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then_some((code, rest.trim()))
}

/// Parses a reply as logged (`451 4.3.0 text`) back into an [`SmtpReply`];
/// used to carry the last temporary answer into an expiry DSN.
pub fn parse_reply_text(text: &str) -> Option<SmtpReply> {
    let code: u16 = text.get(..3)?.parse().ok()?;
    if !(200..600).contains(&code) || text.as_bytes().get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    Some(
        RawReply {
            code,
            lines: vec![text.get(4..).unwrap_or("").to_owned()],
        }
        .into(),
    )
}

/// How the next hop answered one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptResult {
    /// The final reply after DATA was 2xx for this accepted recipient.
    Delivered(SmtpReply),
    /// Refused: at MAIL, RCPT or after DATA; the reply's class says whether
    /// for now (4xx) or for good (5xx).
    Refused(SmtpReply),
}

/// One open SMTP session, after EHLO (and STARTTLS when done).
pub struct Connection {
    io: BufReader<Stream>,
    caps: Capabilities,
    peer: String,
    host: String,
    timeout: Duration,
    last_used: Instant,
    tls: bool,
}

impl Connection {
    /// `host[ip:port]`, for logs and DSNs.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The next hop's host name (the MX or relay name).
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Whether the session runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// How long the connection has been idle.
    pub fn idle(&self) -> Duration {
        self.last_used.elapsed()
    }

    async fn hello(&mut self, hostname: &str) -> Result<(), ClientError> {
        self.write(format!("EHLO {hostname}\r\n").as_bytes(), "EHLO")
            .await?;
        let reply = self.read_reply("EHLO").await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply.lines);
            return Ok(());
        }
        // RFC 5321 §3.2: a server that does not know EHLO gets HELO.
        self.write(format!("HELO {hostname}\r\n").as_bytes(), "HELO")
            .await?;
        let reply = self.read_reply("HELO").await?;
        if !reply.is_positive() {
            return Err(ClientError::Reply {
                peer: self.peer.clone(),
                stage: "HELO",
                reply: reply.into(),
            });
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// RSET before reusing a cached connection: proves it is still alive and
    /// clears any transaction state.
    pub async fn reset(&mut self) -> Result<(), ClientError> {
        self.write(b"RSET\r\n", "RSET").await?;
        let reply = self.read_reply("RSET").await?;
        if !reply.is_positive() {
            return Err(ClientError::Reply {
                peer: self.peer.clone(),
                stage: "RSET",
                reply: reply.into(),
            });
        }
        Ok(())
    }

    /// Says QUIT and closes; errors do not matter any more at this point.
    pub async fn quit(mut self) {
        if self.write(b"QUIT\r\n", "QUIT").await.is_ok() {
            let _ = self.read_reply("QUIT").await;
        }
        let _ = self.io.get_mut().shutdown().await;
    }

    async fn write(&mut self, data: &[u8], stage: &'static str) -> Result<(), ClientError> {
        let io = self.io.get_mut();
        let fut = async {
            io.write_all(data).await?;
            io.flush().await
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(ClientError::Timeout {
                peer: self.peer.clone(),
                stage,
            }),
            Ok(Err(source)) => Err(ClientError::Io {
                peer: self.peer.clone(),
                source,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }

    async fn read_reply(&mut self, stage: &'static str) -> Result<RawReply, ClientError> {
        match tokio::time::timeout(self.timeout, read_reply(&mut self.io)).await {
            Err(_) => Err(ClientError::Timeout {
                peer: self.peer.clone(),
                stage,
            }),
            Ok(Err(ReadError::Io(source))) => Err(ClientError::Io {
                peer: self.peer.clone(),
                source,
            }),
            Ok(Err(ReadError::Malformed(what))) => Err(ClientError::Protocol {
                peer: self.peer.clone(),
                what,
            }),
            Ok(Ok(reply)) => {
                self.last_used = Instant::now();
                Ok(reply)
            }
        }
    }

    /// One mail transaction: MAIL, RCPT for each of `rcpts`, DATA with
    /// `prepend` and then `content_len` bytes of `content` (CRLF line ends),
    /// dot-stuffed. Returns one result per recipient, in order.
    ///
    /// `Err` means the session broke (timeout, I/O, garbage): the caller
    /// defers every recipient and drops the connection. A refusal of MAIL
    /// or DATA is not an error but applies to all recipients concerned.
    pub async fn send<R: AsyncRead + Unpin>(
        &mut self,
        envelope: &Envelope,
        rcpts: &[&Recipient],
        prepend: &[u8],
        content: R,
        content_len: u64,
    ) -> Result<Vec<RcptResult>, ClientError> {
        let needs_utf8 = envelope.smtputf8
            || envelope
                .mail_from
                .address()
                .is_some_and(|a| a.needs_smtputf8())
            || rcpts.iter().any(|r| r.address.needs_smtputf8());
        if needs_utf8 && !self.caps.smtputf8 {
            let reply = SmtpReply::new(
                554,
                "5.6.7",
                format!("SMTPUTF8 is required but not supported by {}", self.peer),
            );
            return Ok(rcpts
                .iter()
                .map(|_| RcptResult::Refused(reply.clone()))
                .collect());
        }
        let size = prepend.len() as u64 + content_len;
        let mail = self.mail_command(envelope, size, needs_utf8);
        let rcpt_cmds: Vec<String> = rcpts.iter().map(|r| self.rcpt_command(r)).collect();

        let mut results: Vec<Option<RcptResult>> = vec![None; rcpts.len()];
        let mut accepted = Vec::new();
        let data_reply;
        if self.caps.pipelining {
            // RFC 2920: MAIL, all RCPTs and DATA in one write, replies in order.
            let mut batch = mail.into_bytes();
            for cmd in &rcpt_cmds {
                batch.extend_from_slice(cmd.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.write(&batch, "MAIL").await?;
            let mail_reply = self.read_reply("MAIL").await?;
            for (i, slot) in results.iter_mut().enumerate() {
                let reply = self.read_reply("RCPT").await?;
                if !mail_reply.is_positive() {
                    *slot = Some(RcptResult::Refused(mail_reply.clone().into()));
                } else if reply.is_positive() {
                    accepted.push(i);
                } else {
                    *slot = Some(RcptResult::Refused(reply.into()));
                }
            }
            let reply = self.read_reply("DATA").await?;
            if accepted.is_empty() {
                if reply.code == 354 {
                    // A server that opened DATA with no recipient: close it empty.
                    self.write(b".\r\n", "DATA").await?;
                    self.read_reply("end of data").await?;
                }
                return Ok(finish(results));
            }
            data_reply = reply;
        } else {
            self.write(mail.as_bytes(), "MAIL").await?;
            let mail_reply = self.read_reply("MAIL").await?;
            if !mail_reply.is_positive() {
                let reply: SmtpReply = mail_reply.into();
                return Ok(rcpts
                    .iter()
                    .map(|_| RcptResult::Refused(reply.clone()))
                    .collect());
            }
            for (i, cmd) in rcpt_cmds.iter().enumerate() {
                self.write(cmd.as_bytes(), "RCPT").await?;
                let reply = self.read_reply("RCPT").await?;
                if reply.is_positive() {
                    accepted.push(i);
                } else {
                    results[i] = Some(RcptResult::Refused(reply.into()));
                }
            }
            if accepted.is_empty() {
                return Ok(finish(results));
            }
            self.write(b"DATA\r\n", "DATA").await?;
            data_reply = self.read_reply("DATA").await?;
        }
        if data_reply.code != 354 {
            let reply: SmtpReply = data_reply.into();
            for i in accepted {
                results[i] = Some(RcptResult::Refused(reply.clone()));
            }
            return Ok(finish(results));
        }
        self.stream_data(prepend, content, content_len).await?;
        let final_reply: SmtpReply = self.read_reply("end of data").await?.into();
        for i in accepted {
            results[i] = Some(if final_reply.is_positive() {
                RcptResult::Delivered(final_reply.clone())
            } else {
                RcptResult::Refused(final_reply.clone())
            });
        }
        Ok(finish(results))
    }

    fn mail_command(&self, envelope: &Envelope, size: u64, utf8: bool) -> String {
        let from = match &envelope.mail_from {
            ReversePath::Null => String::new(),
            ReversePath::Address(a) => a.to_string(),
        };
        let mut cmd = format!("MAIL FROM:<{from}>");
        if self.caps.size.is_some() {
            cmd.push_str(&format!(" SIZE={size}"));
        }
        if envelope.body_8bit && self.caps.eight_bit {
            cmd.push_str(" BODY=8BITMIME");
        }
        if utf8 {
            cmd.push_str(" SMTPUTF8");
        }
        if self.caps.dsn {
            match envelope.ret {
                Some(DsnRet::Full) => cmd.push_str(" RET=FULL"),
                Some(DsnRet::Headers) => cmd.push_str(" RET=HDRS"),
                None => {}
            }
            if let Some(envid) = &envelope.env_id {
                cmd.push_str(&format!(" ENVID={envid}"));
            }
        }
        cmd.push_str("\r\n");
        cmd
    }

    fn rcpt_command(&self, rcpt: &Recipient) -> String {
        let mut cmd = format!("RCPT TO:<{}>", rcpt.address);
        if self.caps.dsn {
            if let Some(n) = &rcpt.notify {
                let mut words = Vec::new();
                if n.never {
                    words.push("NEVER");
                } else {
                    if n.success {
                        words.push("SUCCESS");
                    }
                    if n.failure {
                        words.push("FAILURE");
                    }
                    if n.delay {
                        words.push("DELAY");
                    }
                }
                if !words.is_empty() {
                    cmd.push_str(&format!(" NOTIFY={}", words.join(",")));
                }
            }
            if let Some(orcpt) = &rcpt.orcpt {
                cmd.push_str(&format!(" ORCPT={orcpt}"));
            }
        }
        cmd.push_str("\r\n");
        cmd
    }

    async fn stream_data<R: AsyncRead + Unpin>(
        &mut self,
        prepend: &[u8],
        content: R,
        content_len: u64,
    ) -> Result<(), ClientError> {
        let mut stuffer = DotStuffer::default();
        let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
        stuffer.feed(prepend, &mut out);
        let mut content = content.take(content_len);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match tokio::time::timeout(self.timeout, content.read(&mut buf)).await {
                Err(_) => {
                    return Err(ClientError::Timeout {
                        peer: self.peer.clone(),
                        stage: "reading spool",
                    });
                }
                Ok(Err(source)) => {
                    return Err(ClientError::Io {
                        peer: self.peer.clone(),
                        source,
                    });
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                break;
            }
            stuffer.feed(&buf[..n], &mut out);
            if out.len() >= CHUNK {
                self.write(&out, "DATA").await?;
                out.clear();
            }
        }
        stuffer.finish(&mut out);
        self.write(&out, "DATA").await
    }
}

fn finish(results: Vec<Option<RcptResult>>) -> Vec<RcptResult> {
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                RcptResult::Refused(SmtpReply::new(451, "4.3.0", "no reply for this recipient"))
            })
        })
        .collect()
}

/// Streaming dot-stuffing (RFC 5321 §4.5.2) and the end-of-data marker.
#[derive(Debug)]
pub(crate) struct DotStuffer {
    at_line_start: bool,
    last: [u8; 2],
    any: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self {
            at_line_start: true,
            last: [0, 0],
            any: false,
        }
    }
}

impl DotStuffer {
    /// Appends `input` to `out`, doubling a `.` at the start of every line.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if input.is_empty() {
            return;
        }
        self.any = true;
        let mut rest = input;
        while !rest.is_empty() {
            if self.at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(pos) => {
                    out.extend_from_slice(&rest[..=pos]);
                    rest = &rest[pos + 1..];
                    self.at_line_start = true;
                }
                None => {
                    out.extend_from_slice(rest);
                    rest = &[];
                    self.at_line_start = false;
                }
            }
        }
        self.last = match input {
            [.., a, b] => [*a, *b],
            [b] => [self.last[1], *b],
            [] => self.last,
        };
    }

    /// Ends the data: a CRLF when the content did not end with one (never an
    /// extra empty line), then `.` CRLF.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.any && self.last[1] != b'\n' {
            if self.last[1] == b'\r' {
                out.push(b'\n');
            } else {
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b".\r\n");
    }
}

enum ReadError {
    Io(io::Error),
    Malformed(String),
}

/// Reads one (possibly multi-line) reply: `250-…` lines until `250 …`.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(io: &mut R) -> Result<RawReply, ReadError> {
    let mut lines = Vec::new();
    let mut code = None;
    loop {
        let mut line = Vec::new();
        let n = (&mut *io)
            .take(MAX_REPLY_LINE)
            .read_until(b'\n', &mut line)
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            )));
        }
        if line.last() != Some(&b'\n') {
            return Err(ReadError::Malformed("reply line too long".into()));
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        let this: u16 = text
            .get(..3)
            .and_then(|c| c.parse().ok())
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| {
                ReadError::Malformed(format!("`{}`", text.chars().take(80).collect::<String>()))
            })?;
        if code.is_some_and(|c| c != this) {
            return Err(ReadError::Malformed(
                "reply code changed within a multi-line reply".into(),
            ));
        }
        code = Some(this);
        let sep = text.as_bytes().get(3).copied();
        lines.push(text.get(4..).unwrap_or("").to_owned());
        match sep {
            None | Some(b' ') => return Ok(RawReply { code: this, lines }),
            Some(b'-') if lines.len() < MAX_REPLY_LINES => {}
            Some(b'-') => return Err(ReadError::Malformed("too many reply lines".into())),
            Some(_) => return Err(ReadError::Malformed(format!("`{text}`"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stuff(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = DotStuffer::default();
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_across_chunks() {
        assert_eq!(
            stuff(&[b".a\r\nb\r\n..c\r\n"]),
            b"..a\r\nb\r\n...c\r\n.\r\n"
        );
        // A line start that falls on a chunk boundary is still seen.
        assert_eq!(stuff(&[b"x\r\n", b".y\r\n"]), b"x\r\n..y\r\n.\r\n");
        // A dot in the middle of a line is left alone.
        assert_eq!(stuff(&[b"a.b\r", b"\n"]), b"a.b\r\n.\r\n");
    }

    #[test]
    fn end_of_data_adds_crlf_only_when_missing() {
        assert_eq!(stuff(&[b"a\r\n"]), b"a\r\n.\r\n");
        assert_eq!(stuff(&[b"a"]), b"a\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r"]), b"a\r\n.\r\n");
        assert_eq!(stuff(&[b"a\r\n", b"b"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(stuff(&[]), b".\r\n");
    }

    #[tokio::test]
    async fn multi_line_reply_with_enhanced_code() {
        let mut input: &[u8] = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 DSN\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n";
        let mut reader = BufReader::new(&mut input);
        let ehlo = read_reply(&mut reader)
            .await
            .ok()
            .unwrap_or_else(|| panic!("reply"));
        let caps = Capabilities::from_ehlo(&ehlo.lines);
        assert!(caps.pipelining && caps.dsn && !caps.starttls);
        assert_eq!(caps.size, Some(1000));
        let refusal: SmtpReply = read_reply(&mut reader)
            .await
            .ok()
            .unwrap_or_else(|| panic!("reply"))
            .into();
        assert_eq!(refusal, SmtpReply::new(550, "5.1.1", "no such user"));
    }

    #[tokio::test]
    async fn garbage_reply_is_an_error_not_a_panic() {
        for bad in [
            &b"hello\r\n"[..],
            b"25",
            b"250-a\r\n251 b\r\n",
            b"999 x\r\n",
        ] {
            let mut input = bad;
            let mut reader = BufReader::new(&mut input);
            assert!(read_reply(&mut reader).await.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reply_text_parses_back() {
        let r = parse_reply_text("451 4.7.1 try later").unwrap_or_else(|| panic!("parse"));
        assert_eq!(r, SmtpReply::new(451, "4.7.1", "try later"));
        assert!(parse_reply_text("connection refused").is_none());
    }
}
