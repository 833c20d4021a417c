//! A tiny scripted SMTP responder on 127.0.0.1:0 for unit tests of the
//! client's wire behaviour (the end-to-end tests use real sinks).
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How the responder answers.
#[derive(Clone, Default)]
pub struct Script {
    /// EHLO keywords, e.g. `PIPELINING`, `SIZE 1000000`.
    pub extensions: Vec<String>,
    /// EHLO answered 502 (an old server that only knows HELO).
    pub no_ehlo: bool,
    /// Reply per RCPT address (default `250 2.1.5 ok`).
    pub rcpt: HashMap<String, String>,
    /// Final replies after DATA, one per transaction (default `250 2.0.0 queued`).
    pub data_replies: Arc<Mutex<VecDeque<String>>>,
    /// STARTTLS is offered with this server config.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// STARTTLS is offered, accepted with 220, then garbage follows.
    pub broken_tls: bool,
}

/// What the responder saw, over all connections.
#[derive(Debug, Default)]
pub struct Seen {
    pub commands: Vec<String>,
    /// DATA as received (still dot-stuffed), up to and excluding `.` CRLF.
    pub messages: Vec<Vec<u8>>,
    /// MAIL arrived together with DATA in one read (pipelining).
    pub batched: bool,
    pub connections: usize,
    pub tls_connections: usize,
}

pub struct Responder {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
}

impl Responder {
    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                shared.lock().unwrap().connections += 1;
                tokio::spawn(session(Box::new(tcp), script.clone(), shared.clone()));
            }
        });
        Self { addr, seen }
    }

    pub fn commands(&self) -> Vec<String> {
        self.seen.lock().unwrap().commands.clone()
    }

    pub fn messages(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().messages.clone()
    }
}

async fn session(io: Box<dyn Io>, script: Script, seen: Arc<Mutex<Seen>>) {
    let mut io = BufReader::new(io);
    let _ = io.get_mut().write_all(b"220 sink.test ESMTP\r\n").await;
    let mut tls = false;
    loop {
        let mut line = String::new();
        if io.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        seen.lock().unwrap().commands.push(cmd.clone());
        let reply = if upper.starts_with("EHLO") {
            if script.no_ehlo {
                "502 5.5.1 unknown command\r\n".to_owned()
            } else {
                let mut ext = script.extensions.clone();
                if (script.tls.is_some() || script.broken_tls) && !tls {
                    ext.push("STARTTLS".into());
                }
                let mut r = String::from("250-sink.test");
                for e in ext {
                    r.push_str(&format!("\r\n250-{e}"));
                }
                r.push_str("\r\n250 ENHANCEDSTATUSCODES\r\n");
                r
            }
        } else if upper.starts_with("HELO")
            || upper.starts_with("RSET")
            || upper.starts_with("NOOP")
        {
            "250 2.0.0 ok\r\n".to_owned()
        } else if upper.starts_with("STARTTLS") && script.broken_tls {
            let _ = io
                .get_mut()
                .write_all(b"220 2.0.0 go ahead\r\nthis is not TLS at all\r\n")
                .await;
            return;
        } else if upper.starts_with("STARTTLS") {
            let Some(config) = script.tls.clone().filter(|_| !tls) else {
                let _ = io.get_mut().write_all(b"502 5.5.1 no\r\n").await;
                continue;
            };
            let _ = io.get_mut().write_all(b"220 2.0.0 go ahead\r\n").await;
            let stream = io.into_inner();
            let Ok(tls_stream) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await
            else {
                return;
            };
            seen.lock().unwrap().tls_connections += 1;
            io = BufReader::new(Box::new(tls_stream) as Box<dyn Io>);
            tls = true;
            continue;
        } else if upper.starts_with("MAIL FROM:") {
            if io.buffer().windows(6).any(|w| w == b"DATA\r\n") {
                seen.lock().unwrap().batched = true;
            }
            "250 2.1.0 ok\r\n".to_owned()
        } else if upper.starts_with("RCPT TO:") {
            let addr = cmd[8..]
                .trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_owned();
            format!(
                "{}\r\n",
                script
                    .rcpt
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| "250 2.1.5 ok".into())
            )
        } else if upper == "DATA" {
            let _ = io.get_mut().write_all(b"354 go on\r\n").await;
            let mut data = Vec::new();
            loop {
                let mut l = Vec::new();
                if io.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                    return;
                }
                if l == b".\r\n" {
                    break;
                }
                data.extend_from_slice(&l);
            }
            seen.lock().unwrap().messages.push(data);
            let next = script.data_replies.lock().unwrap().pop_front();
            format!("{}\r\n", next.unwrap_or_else(|| "250 2.0.0 queued".into()))
        } else if upper.starts_with("QUIT") {
            let _ = io.get_mut().write_all(b"221 2.0.0 bye\r\n").await;
            return;
        } else {
            "500 5.5.2 what?\r\n".to_owned()
        };
        if io.get_mut().write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A self-signed certificate for `localhost`: the server config, and the
/// certificate in PEM (to trust it as a CA file).
pub fn tls_for_localhost() -> (Arc<rustls::ServerConfig>, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    (Arc::new(config), pem)
}
