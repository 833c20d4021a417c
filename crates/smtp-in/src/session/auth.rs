//! AUTH PLAIN and LOGIN (RFC 4954, 4616) for submission listeners.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use siegel_smtp_wire::LineEvent;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{MAX_AUTH_FAILURES, Session, Stop};
use crate::spool::MailSpool;
use crate::{LOG_TARGET, Listener};

impl<S, Q> Session<S, Q>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: MailSpool,
{
    /// Reads one AUTH continuation line; `None` when the client cancelled.
    pub(super) async fn auth_line(&mut self, challenge: &str) -> Result<Option<Vec<u8>>, Stop> {
        self.output
            .extend_from_slice(format!("334 {challenge}\r\n").as_bytes());
        match self.next_line().await? {
            LineEvent::TooLong => {
                self.error(500, "5.5.2", "Line too long");
                Ok(None)
            }
            LineEvent::Line(line) if line == b"*" => {
                self.error(501, "5.7.0", "Authentication cancelled");
                Ok(None)
            }
            LineEvent::Line(line) => match BASE64.decode(&line) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(_) => {
                    self.error(501, "5.5.2", "Invalid base64");
                    Ok(None)
                }
            },
        }
    }

    pub(super) fn decode_initial(&mut self, initial: &str) -> Option<Vec<u8>> {
        if initial == "=" {
            return Some(Vec::new());
        }
        match BASE64.decode(initial) {
            Ok(bytes) => Some(bytes),
            Err(_) => {
                self.error(501, "5.5.2", "Invalid base64");
                None
            }
        }
    }

    pub(super) async fn auth(
        &mut self,
        mechanism: String,
        initial: Option<String>,
    ) -> Result<(), Stop> {
        if self.kind != Listener::Submission {
            self.error(502, "5.5.1", "AUTH not available on this port");
            return Ok(());
        }
        if !self.tls {
            self.error(
                538,
                "5.7.11",
                "Encryption required for requested authentication mechanism",
            );
            return Ok(());
        }
        if self.auth_user.is_some() {
            self.error(503, "5.5.1", "Already authenticated");
            return Ok(());
        }
        if self.helo.is_none() || self.tx.is_some() {
            self.error(503, "5.5.1", "AUTH not allowed now");
            return Ok(());
        }
        let credentials = match mechanism.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(i) => self.decode_initial(&i),
                    None => self.auth_line("").await?,
                };
                let Some(response) = response else {
                    return Ok(());
                };
                let mut parts = response.split(|&b| b == 0);
                match (parts.next(), parts.next(), parts.next(), parts.next()) {
                    (Some(authz), Some(user), Some(pass), None)
                        if authz.is_empty() || authz == user =>
                    {
                        Some((user.to_vec(), pass.to_vec()))
                    }
                    _ => None,
                }
            }
            "LOGIN" => {
                let user = match initial {
                    Some(i) => self.decode_initial(&i),
                    None => self.auth_line("VXNlcm5hbWU6").await?,
                };
                let Some(user) = user else { return Ok(()) };
                let Some(pass) = self.auth_line("UGFzc3dvcmQ6").await? else {
                    return Ok(());
                };
                Some((user, pass))
            }
            _ => {
                self.error(504, "5.5.4", "Unrecognized authentication type");
                return Ok(());
            }
        };
        let verified = match credentials.map(|(u, p)| (String::from_utf8(u), String::from_utf8(p)))
        {
            Some((Ok(user), Ok(pass))) if !user.is_empty() => {
                let authenticator = self.settings.authenticator.clone();
                let check_user = user.clone();
                let ok =
                    tokio::task::spawn_blocking(move || authenticator.verify(&check_user, &pass))
                        .await
                        .unwrap_or(false);
                ok.then_some(user)
            }
            _ => None,
        };
        match verified {
            Some(user) => {
                tracing::info!(target: LOG_TARGET, peer = %self.peer, user = %user, "authenticated");
                self.auth_user = Some(user);
                self.reply(235, "2.7.0", "Authentication successful");
            }
            None => {
                self.auth_failures += 1;
                tracing::info!(target: LOG_TARGET, peer = %self.peer, result = "rejected", reason = "authentication failed", "authentication failed");
                self.error(535, "5.7.8", "Authentication credentials invalid");
                if self.auth_failures >= MAX_AUTH_FAILURES {
                    self.reply(
                        421,
                        "4.7.0",
                        &format!(
                            "{} Error: too many authentication failures",
                            self.settings.hostname
                        ),
                    );
                    return Err(Stop::Dropped);
                }
            }
        }
        Ok(())
    }
}
