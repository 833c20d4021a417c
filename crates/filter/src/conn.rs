//! One connection to a scanner daemon, over TCP or a Unix socket, where
//! every step has a deadline.
//!
//! Both daemons close the connection after one answer, so there is no pool:
//! a connection is opened per scan (which is what clamdscan and spamc do
//! too; the saving over them is the process start, not the connect).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use siegel_config::ScannerAddress;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;

use crate::error::{ScanError, Scanner, Step};

/// How long a scan may take, step by step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for the daemon to accept the connection.
    pub connect: Duration,
    /// Longest time the whole scan may take (connect, send, answer).
    pub scan: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            scan: Duration::from_secs(120),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
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
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A connection with the scan's deadline; errors come out as [`ScanError`]
/// naming the scanner, its address and the step.
pub(crate) struct Conn {
    stream: Stream,
    scanner: Scanner,
    address: String,
    deadline: Instant,
    limit: Duration,
}

impl Conn {
    /// Connects within the connect timeout (and the scan deadline, which
    /// starts now).
    pub(crate) async fn open(
        scanner: Scanner,
        address: &ScannerAddress,
        timeouts: Timeouts,
    ) -> Result<Conn, ScanError> {
        let start = Instant::now();
        let deadline = start + timeouts.scan;
        let connect_by = (start + timeouts.connect).min(deadline);
        let name = address.to_string();
        let connect = async {
            match address {
                ScannerAddress::Tcp(hp) => TcpStream::connect(hp.as_str()).await.map(|s| {
                    // Small writes (a command, a chunk header) must not wait
                    // for Nagle.
                    let _ = s.set_nodelay(true);
                    Stream::Tcp(s)
                }),
                ScannerAddress::Unix(path) => UnixStream::connect(path).await.map(Stream::Unix),
            }
        };
        let stream = match tokio::time::timeout_at(connect_by, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => {
                return Err(ScanError::Connect {
                    scanner,
                    address: name,
                    source,
                });
            }
            Err(_) => {
                return Err(ScanError::Timeout {
                    scanner,
                    address: name,
                    step: Step::Connecting,
                    limit: timeouts.connect.min(timeouts.scan),
                });
            }
        };
        Ok(Conn {
            stream,
            scanner,
            address: name,
            deadline,
            limit: timeouts.scan,
        })
    }

    fn timeout(&self, step: Step) -> ScanError {
        ScanError::Timeout {
            scanner: self.scanner,
            address: self.address.clone(),
            step,
            limit: self.limit,
        }
    }

    pub(crate) fn io_error(&self, step: Step, source: io::Error) -> ScanError {
        ScanError::Io {
            scanner: self.scanner,
            address: self.address.clone(),
            step,
            source,
        }
    }

    pub(crate) fn protocol(&self, detail: impl Into<String>) -> ScanError {
        ScanError::Protocol {
            scanner: self.scanner,
            address: self.address.clone(),
            detail: detail.into(),
        }
    }

    pub(crate) fn daemon(&self, message: impl Into<String>) -> ScanError {
        ScanError::Daemon {
            scanner: self.scanner,
            address: self.address.clone(),
            message: message.into(),
        }
    }

    /// Writes all of `parts` before the deadline. The raw I/O error is
    /// returned so the caller can tell "the daemon closed early" (it may
    /// have said why) from a timeout.
    pub(crate) async fn write(&mut self, parts: &[&[u8]]) -> Result<(), WriteError> {
        let deadline = self.deadline;
        let stream = &mut self.stream;
        let all = async {
            for p in parts {
                stream.write_all(p).await?;
            }
            Ok::<(), io::Error>(())
        };
        match tokio::time::timeout_at(deadline, all).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(WriteError::Io(e)),
            Err(_) => Err(WriteError::Timeout(self.timeout(Step::Sending))),
        }
    }

    /// Half-closes: tells a daemon that reads to the end that the request is
    /// complete.
    pub(crate) async fn shutdown_write(&mut self) -> Result<(), ScanError> {
        match tokio::time::timeout_at(self.deadline, self.stream.shutdown()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error(Step::Sending, e)),
            Err(_) => Err(self.timeout(Step::Sending)),
        }
    }

    /// Reads what is available into `buf` (at most `max` octets in total)
    /// before the deadline; `Ok(0)` at end of stream.
    pub(crate) async fn read_some(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, ScanError> {
        let room = max.saturating_sub(buf.len());
        if room == 0 {
            return Err(self.protocol(format!("answer longer than {max} octets")));
        }
        let mut chunk = vec![0u8; room.min(16 * 1024)];
        match tokio::time::timeout_at(self.deadline, self.stream.read(&mut chunk)).await {
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Ok(Err(e)) => Err(self.io_error(Step::Reading, e)),
            Err(_) => Err(self.timeout(Step::Reading)),
        }
    }
}

/// A write that did not complete.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The connection failed; the daemon may have closed it after writing
    /// an answer that says why (clamd's size limit does this).
    Io(io::Error),
    /// The scan's deadline passed.
    Timeout(ScanError),
}
