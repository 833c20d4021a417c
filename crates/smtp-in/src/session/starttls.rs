//! STARTTLS (RFC 3207).

use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use super::Stop;
use crate::LOG_TARGET;
use crate::conn::Conn;
use crate::spool::MailSpool;

impl<S, Q> Session<S, Q>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: MailSpool,
{
    pub(super) async fn starttls(&mut self) -> Result<(), Stop> {
        let Some(config) = self.settings.tls.clone() else {
            self.error(502, "5.5.1", "STARTTLS not available");
            return Ok(());
        };
        if self.tls {
            self.error(503, "5.5.1", "TLS already active");
            return Ok(());
        }
        self.reply(220, "2.0.0", "Ready to start TLS");
        self.flush().await?;
        // RFC 3207 / command injection defence: anything the client sent
        // after STARTTLS in clear text is discarded, never executed.
        self.input.clear();
        self.pos = 0;
        self.reader.reset();
        let Conn::Plain(plain) = std::mem::replace(&mut self.io, Conn::Upgrading) else {
            return Err(Stop::Io(std::io::Error::other(
                "STARTTLS on a non-plain stream",
            )));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake =
            tokio::time::timeout(self.settings.command_timeout, acceptor.accept(plain)).await;
        match handshake {
            Ok(Ok(stream)) => self.io = Conn::Tls(Box::new(stream)),
            Ok(Err(e)) => {
                tracing::info!(target: LOG_TARGET, peer = %self.peer, error = %e, "TLS handshake failed");
                return Err(Stop::Closed);
            }
            Err(_) => return Err(Stop::Closed),
        }
        self.tls = true;
        self.helo = None;
        self.tx = None;
        self.auth_user = None;
        Ok(())
    }
}
