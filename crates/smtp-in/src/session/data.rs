//! DATA: content streamed into the spool, limits, the durable commit.

use siegel_smtp_wire::{DataOutcome, DataReceiver, HeaderScanner};
use siegel_types::{Counters, Direction, Envelope, Origin};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{HEADER_SCAN_LIMIT, READ_CHUNK, Session, Stop, WRITE_CHUNK, now_secs};
use crate::spool::{IncomingMail, MailSpool};
use crate::{Acceptance, LOG_TARGET};

impl<S, Q> Session<S, Q>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: MailSpool,
{
    pub(super) async fn data(&mut self) -> Result<(), Stop> {
        match &self.tx {
            None => {
                self.error(503, "5.5.1", "Need MAIL command");
                return Ok(());
            }
            Some(tx) if tx.recipients.is_empty() => {
                self.error(503, "5.5.1", "Need RCPT command");
                return Ok(());
            }
            Some(_) => {}
        }
        let mut incoming = match self.spool.begin().await {
            Ok(incoming) => incoming,
            Err(e) => {
                tracing::warn!(target: LOG_TARGET, peer = %self.peer, error = %e, "spool refused a new mail");
                self.tx = None;
                self.reply(451, "4.3.0", "Local error, try again");
                return Ok(());
            }
        };
        let tls_at_data = self.tls;
        self.output
            .extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
        // The 354 must reach the client before it sends content.
        if let Err(e) = self.flush().await {
            incoming.abort().await;
            return Err(e);
        }
        let mut receiver = DataReceiver::new(
            self.settings.max_message_size,
            self.settings.max_content_line_length,
        );
        let mut headers = HeaderScanner::new(HEADER_SCAN_LIMIT);
        let mut chunk = Vec::with_capacity(WRITE_CHUNK + READ_CHUNK);
        let mut write_error = None;
        loop {
            let before = chunk.len();
            let progress = receiver.feed(self.buffered(), &mut chunk);
            self.pos += progress.consumed;
            headers.feed(&chunk[before..]);
            let due = chunk.len() >= WRITE_CHUNK || progress.done;
            if write_error.is_none()
                && !receiver.failed()
                && due
                && let Err(e) = incoming.write(&chunk).await
            {
                write_error = Some(e.to_string());
            }
            if chunk.len() >= WRITE_CHUNK
                || progress.done
                || receiver.failed()
                || write_error.is_some()
            {
                chunk.clear();
            }
            if progress.done {
                break;
            }
            if let Err(stop) = self.fill(self.settings.data_timeout).await {
                incoming.abort().await;
                return Err(stop);
            }
        }
        let Some(tx) = self.tx.take() else {
            // Unreachable by construction (checked above); never panic on it.
            incoming.abort().await;
            self.reply(451, "4.3.0", "Local error, try again");
            return Ok(());
        };
        let message_id = headers.message_id();
        match receiver.outcome() {
            DataOutcome::TooBig { size } => {
                incoming.abort().await;
                self.reject(&tx.mail, &format!("message size {size} exceeds limit"));
                self.reply(
                    552,
                    "5.3.4",
                    "Message size exceeds fixed maximum message size",
                );
                return Ok(());
            }
            DataOutcome::LineTooLong => {
                incoming.abort().await;
                self.reject(&tx.mail, "content line too long");
                self.reply(554, "5.6.0", "Message content line too long");
                return Ok(());
            }
            DataOutcome::Ok { .. } => {}
        }
        if let Some(e) = write_error {
            incoming.abort().await;
            tracing::warn!(target: LOG_TARGET, peer = %self.peer, error = %e, "spool write failed");
            self.reply(451, "4.3.0", "Local error, try again");
            return Ok(());
        }
        let direction = if (self.trusted || self.auth_user.is_some()) && tx.external {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        let recipients_log = tx
            .recipients
            .iter()
            .map(|r| r.address.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let envelope = Envelope {
            id: incoming.id().clone(),
            mail_from: tx.mail.path.clone(),
            recipients: tx.recipients,
            direction,
            origin: Origin::Smtp {
                peer: self.peer.to_string(),
                helo: self.helo.clone().unwrap_or_default(),
                tls: tls_at_data,
                auth: self.auth_user.clone(),
            },
            received_at: now_secs(),
            size: incoming.size(),
            body_8bit: tx.mail.body8bit,
            smtputf8: tx.mail.smtputf8,
            env_id: tx.mail.envid.clone(),
            ret: tx.mail.ret,
            message_id: message_id.clone(),
        };
        let recipients = envelope.recipients.len();
        let committed = match &self.settings.acceptance {
            None => incoming.commit(envelope).await,
            Some(_) => incoming.commit_unannounced(envelope).await,
        };
        if let (Ok(id), Some(check)) = (&committed, self.settings.acceptance.clone()) {
            match check.check(id, direction, recipients).await {
                Acceptance::Accept => self.spool.announce(id),
                Acceptance::Refuse { code, status, text } => {
                    if let Err(e) = self.spool.discard(id).await {
                        // It stays in the spool: the pipeline decides again
                        // (and bounces instead), but nothing is lost.
                        tracing::error!(target: LOG_TARGET, queue_id = %id, error = %e, "cannot remove a refused mail");
                        self.spool.announce(id);
                    }
                    tracing::info!(
                        target: LOG_TARGET, queue_id = %id, message_id = message_id.as_deref().unwrap_or(""),
                        sender = %tx.mail.path, recipients = %recipients_log, peer = %self.peer,
                        direction = ?direction, result = "refused", reason = %text, "mail refused after the content check"
                    );
                    self.reply(code, status, &text);
                    return Ok(());
                }
            }
        }
        match committed {
            Ok(id) => {
                Counters::inc(&self.counters.accepted);
                tracing::info!(
                    target: LOG_TARGET, queue_id = %id, message_id = message_id.as_deref().unwrap_or(""),
                    sender = %tx.mail.path, recipients = %recipients_log, peer = %self.peer,
                    direction = ?direction, result = "accepted", "mail accepted"
                );
                self.reply(250, "2.0.0", &format!("Ok: queued as {id}"));
            }
            Err(e) => {
                tracing::warn!(
                    target: LOG_TARGET, message_id = message_id.as_deref().unwrap_or(""), sender = %tx.mail.path,
                    recipients = %recipients_log, peer = %self.peer, result = "deferred", reason = %e, "spool commit failed"
                );
                self.reply(451, "4.3.0", "Local error, try again");
            }
        }
        Ok(())
    }
}
