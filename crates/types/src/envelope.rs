//! The envelope of one mail as accepted by `smtp-in` and kept in the spool.
//! It is immutable after the commit; per-recipient delivery state lives in
//! the spool's entry state, next to it.

use serde::{Deserialize, Serialize};

use crate::{Address, QueueId, ReversePath};

/// Which way a mail travels. Decided once, by relay control in `smtp-in`,
/// and carried with the mail: the pipeline runs different stages for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From outside to an internal domain.
    Inbound,
    /// From a trusted network or an authenticated user to anywhere.
    Outbound,
}

/// Where a mail came from, for tracking and loop prevention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Origin {
    /// Received over SMTP.
    Smtp {
        /// Peer IP address and port.
        peer: String,
        /// The EHLO/HELO name the client gave.
        helo: String,
        /// Whether the session was TLS-protected when DATA began.
        tls: bool,
        /// The authenticated submission user, if any.
        auth: Option<String>,
    },
    /// A delivery status notification made by this gateway.
    Dsn,
    /// Made by this gateway for another reason (portal, notifications).
    Local { what: String },
}

/// RFC 3461 NOTIFY: when the sender wants a DSN for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NotifyOn {
    pub success: bool,
    pub failure: bool,
    pub delay: bool,
    /// `NOTIFY=NEVER`.
    pub never: bool,
}

impl NotifyOn {
    /// Whether a failure DSN is wanted (the default without NOTIFY).
    pub fn wants_failure(explicit: Option<&NotifyOn>) -> bool {
        explicit.is_none_or(|n| n.failure && !n.never)
    }
}

/// RFC 3461 RET: what a DSN should return of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsnRet {
    Full,
    Headers,
}

/// One envelope recipient with its DSN parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: Address,
    /// RFC 3461 ORCPT as given (`rfc822;addr`), passed on unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orcpt: Option<String>,
    /// RFC 3461 NOTIFY; `None` when the client gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyOn>,
}

impl Recipient {
    pub fn new(address: Address) -> Self {
        Self {
            address,
            orcpt: None,
            notify: None,
        }
    }
}

/// Everything known about a mail besides its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub id: QueueId,
    pub mail_from: ReversePath,
    pub recipients: Vec<Recipient>,
    pub direction: Direction,
    pub origin: Origin,
    /// Seconds since the Unix epoch when the mail was committed.
    pub received_at: u64,
    /// Size of the content in octets, as stored.
    pub size: u64,
    /// `BODY=8BITMIME` was given.
    #[serde(default)]
    pub body_8bit: bool,
    /// `SMTPUTF8` was given.
    #[serde(default)]
    pub smtputf8: bool,
    /// RFC 3461 ENVID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_id: Option<String>,
    /// RFC 3461 RET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<DsnRet>,
    /// The `Message-ID` header of the content, when it had one (for logs and tracking).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_json_roundtrip() {
        let env = Envelope {
            id: QueueId::generate(),
            mail_from: ReversePath::Null,
            recipients: vec![Recipient {
                address: Address::parse("b@Example.COM").unwrap(),
                orcpt: Some("rfc822;b@example.com".into()),
                notify: Some(NotifyOn {
                    failure: true,
                    ..Default::default()
                }),
            }],
            direction: Direction::Inbound,
            origin: Origin::Smtp {
                peer: "127.0.0.1:4000".into(),
                helo: "x".into(),
                tls: false,
                auth: None,
            },
            received_at: 1,
            size: 2,
            body_8bit: true,
            smtputf8: false,
            env_id: None,
            ret: Some(DsnRet::Headers),
            message_id: None,
        };
        let json = serde_json::to_string(&env).unwrap();
        assert!(json.contains("\"b@example.com\""));
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(env, back);
        assert!(!NotifyOn::wants_failure(Some(&NotifyOn {
            never: true,
            ..Default::default()
        })));
        assert!(NotifyOn::wants_failure(None));
    }
}
