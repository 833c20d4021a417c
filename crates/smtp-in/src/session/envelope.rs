//! EHLO, MAIL and RCPT: the envelope, SIZE, and relay control.

use siegel_smtp_wire::{MailFrom, RcptTo};
use siegel_types::{Counters, Recipient};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, Transaction};
use crate::spool::MailSpool;
use crate::{LOG_TARGET, Listener};

impl<S, Q> Session<S, Q>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    Q: MailSpool,
{
    pub(super) fn auth_offered(&self) -> bool {
        self.kind == Listener::Submission && self.tls && self.auth_user.is_none()
    }

    pub(super) fn ehlo(&mut self, name: String) {
        self.helo = Some(name);
        self.tx = None;
        let mut lines = vec![
            self.settings.hostname.clone(),
            "PIPELINING".into(),
            format!("SIZE {}", self.settings.max_message_size),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "DSN".into(),
        ];
        if self.settings.tls.is_some() && !self.tls {
            lines.push("STARTTLS".into());
        }
        if self.auth_offered() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.output
                .extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    pub(super) fn mail(&mut self, mail: MailFrom) {
        if self.helo.is_none() {
            return self.error(503, "5.5.1", "Send EHLO or HELO first");
        }
        if self.tx.is_some() {
            return self.error(503, "5.5.1", "Nested MAIL command");
        }
        if self.kind == Listener::Submission && self.auth_user.is_none() {
            return self.error(530, "5.7.0", "Authentication required");
        }
        if mail
            .size
            .is_some_and(|s| s > self.settings.max_message_size)
        {
            self.reject(&mail, "declared size too big");
            return self.reply(
                552,
                "5.3.4",
                "Message size exceeds fixed maximum message size",
            );
        }
        self.tx = Some(Transaction {
            mail,
            recipients: Vec::new(),
            external: false,
        });
        self.reply(250, "2.1.0", "Ok");
    }

    pub(super) fn reject(&self, mail: &MailFrom, reason: &str) {
        Counters::inc(&self.counters.rejected);
        tracing::info!(target: LOG_TARGET, peer = %self.peer, sender = %mail.path, result = "rejected", reason, "mail rejected");
    }

    pub(super) fn rcpt(&mut self, rcpt: RcptTo) {
        let internal = self
            .settings
            .internal_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(rcpt.path.domain()));
        let may_relay = self.trusted || self.auth_user.is_some();
        let max = self.settings.max_recipients;
        let Some(tx) = self.tx.as_mut() else {
            return self.error(503, "5.5.1", "Need MAIL command");
        };
        if tx.recipients.len() >= max {
            return self.reply(452, "4.5.3", "Too many recipients");
        }
        if rcpt.path.needs_smtputf8() && !tx.mail.smtputf8 {
            return self.error(553, "5.6.7", "Non-ASCII addresses require SMTPUTF8");
        }
        if !internal && !may_relay {
            Counters::inc(&self.counters.rejected);
            tracing::info!(
                target: LOG_TARGET, peer = %self.peer, sender = %tx.mail.path, recipients = %rcpt.path,
                result = "rejected", reason = "relay access denied", "recipient rejected"
            );
            return self.error(554, "5.7.1", "Relay access denied");
        }
        tx.external |= !internal;
        tx.recipients.push(Recipient {
            address: rcpt.path,
            orcpt: rcpt.orcpt,
            notify: rcpt.notify,
        });
        self.reply(250, "2.1.5", "Ok");
    }
}
