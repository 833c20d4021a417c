//! The GINA method: the policy engine's way to encrypt for a recipient who
//! has no certificate and no key (PRODUCT.md "GINA, step by step").
//!
//! Per recipient (the split gives every GINA recipient a copy of its own),
//! [`GinaMethod`] turns the mail into a carrier mail:
//!
//! 1. At the first GINA mail to an address, it creates the recipient's
//!    account with a random initial password and mails that password to
//!    the *sender* (internal), who passes it on by phone. Once per
//!    recipient, also with several nodes (the store's `insert_initial`
//!    lets exactly one win).
//! 2. It seals the whole mail (headers, body, attachments) into a container
//!    with a fresh content key, records the key sealed under the master key
//!    ([`siegel_store::NewContainer`]; revocation and expiry delete it), and
//!    wraps the container into the HTML file and the carrier mail in the
//!    sender domain's theme.
//! 3. It signs the carrier in the sender's name when the sender has an
//!    S/MIME identity, like every other mail the sender sends.
//!
//! Crash safety of the notice: it is committed to the spool *before* the
//! account exists but handed on only after this node created the account;
//! when another node won the race, the notice is taken back. A crash in
//! between leaves a committed notice that is delivered after restart (and
//! the retried mail makes a new one if the account was not created): the
//! sender may get a second notice, never none with a password nobody knows.

use std::sync::Arc;
use std::time::Duration;

use siegel_gina::container::{SealParams, seal_bytes};
use siegel_gina::html::{FileInfo, file_bytes};
use siegel_gina::mail::{CarrierParams, NoticeParams, Person};
use siegel_gina::{Hasher, Lang, Themes};
use siegel_policy::{BoxFuture, CopyInfo, Method, MethodError, MethodKind, Unavailable};
use siegel_spool::Spool;
use siegel_store::{NewContainer, SecretBytes, Store};
use siegel_types::{Address, Direction, Envelope, Origin, QueueId, Recipient, ReversePath};

use crate::smime::Mpki;

/// The `[gina]`/`[portal]` settings the method needs.
#[derive(Debug, Clone)]
pub struct GinaSettings {
    /// `[portal] public_url`: where the container file posts to.
    pub portal_url: String,
    /// How long a container can be opened.
    pub container_expiry: Duration,
    /// Whether the carrier shows the original subject.
    pub carrier_shows_subject: bool,
    /// Language of the carrier and the notice (the sender's is not known).
    pub language: Lang,
    /// Our host name (Message-IDs).
    pub hostname: String,
    /// Sender of the gateway's own mails (the notice).
    pub system_from: Address,
    /// Our domains: read receipts go only to them.
    pub internal_domains: Vec<String>,
    /// Mail the initial password to the sender (the mail path). `false`:
    /// only hand it back in [`Sealed`] (`siegel gina seal`, which prints it).
    pub notify_sender: bool,
}

/// What sealing a mail for one recipient made.
pub struct Sealed {
    /// The carrier mail (signed in the sender's name when possible).
    pub carrier: Vec<u8>,
    /// The container file (the carrier's attachment).
    pub file: Vec<u8>,
    /// The container id.
    pub container_id: String,
    /// The initial password, when this mail created the account.
    pub initial_password: Option<siegel_gina::Secret>,
}

/// What the GINA method works with.
pub struct Gina {
    store: Store,
    spool: Spool,
    themes: Arc<Themes>,
    hasher: Arc<Hasher>,
    settings: GinaSettings,
    /// Signs the carrier (and nothing else) when set.
    mpki: Option<Arc<Mpki>>,
}

impl std::fmt::Debug for Gina {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gina")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// What went wrong while making a carrier, sorted by what it means.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The store or the spool did not answer: try again later.
    #[error("temporary failure: {0}")]
    Temporary(String),
    /// Our own bug or bad material: the copy cannot be made.
    #[error("{0}")]
    Failed(String),
}

impl From<siegel_store::StoreError> for Failure {
    fn from(e: siegel_store::StoreError) -> Self {
        Failure::Temporary(e.to_string())
    }
}

impl From<siegel_spool::SpoolError> for Failure {
    fn from(e: siegel_spool::SpoolError) -> Self {
        Failure::Temporary(e.to_string())
    }
}

fn failed(e: impl std::fmt::Display) -> Failure {
    Failure::Failed(e.to_string())
}

impl Gina {
    pub fn new(
        store: Store,
        spool: Spool,
        themes: Arc<Themes>,
        hasher: Arc<Hasher>,
        settings: GinaSettings,
        mpki: Option<Arc<Mpki>>,
    ) -> Self {
        Self {
            store,
            spool,
            themes,
            hasher,
            settings,
            mpki,
        }
    }

    /// Seals `mail` for `recipient`: the carrier mail, with the account
    /// made (and, with `notify_sender`, the sender notified) at the first
    /// mail.
    pub async fn seal(
        &self,
        mail: &[u8],
        envelope: &Envelope,
        recipient: &Address,
        now: i64,
    ) -> Result<Sealed, Failure> {
        let s = &self.settings;
        let lang = s.language;
        let head = mail_parser::MessageParser::default().parse_headers(mail);
        let from = head.as_ref().and_then(|m| m.from()).and_then(|f| f.first());
        let sender = envelope
            .mail_from
            .address()
            .cloned()
            .or_else(|| {
                from.and_then(|a| a.address())
                    .and_then(|a| Address::parse(a).ok())
            })
            .ok_or_else(|| failed("GINA needs a sender to notify and to sign as"))?;
        let sender_name = from.and_then(|a| a.name()).map(str::to_owned);
        let subject = head.as_ref().and_then(|m| m.subject()).map(str::to_owned);
        // RFC 8098: the sender asks for a receipt with this field; it goes
        // only to one of our own addresses (never a third party's).
        let receipt_to = crate::smime::header_address(mail, "disposition-notification-to")
            .filter(|a| s.internal_domains.iter().any(|d| d == a.domain()));
        let theme = self.themes.for_domain(sender.domain());
        let (first_time, initial_password) = self
            .account_for(recipient, &sender, sender_name.as_deref(), theme, now)
            .await?;
        let expires = now.saturating_add(i64::try_from(s.container_expiry.as_secs()).unwrap_or(0));
        let (sealed, container) = seal_bytes(
            &SealParams {
                recipient,
                theme: theme.name(),
                now,
                expires,
            },
            mail,
        )
        .map_err(failed)?;
        let id = sealed.header.id.to_string();
        self.store
            .gina_containers()
            .insert(&NewContainer {
                container_id: &id,
                message_id: envelope.message_id.as_deref(),
                sender: &sender,
                recipient,
                key: &SecretBytes::new(sealed.key.expose().to_vec()),
                created_at: now,
                expires_at: expires,
                receipt_to: receipt_to.as_ref(),
            })
            .await?;
        let shown = Person {
            address: &sender,
            name: sender_name.as_deref(),
        };
        let file = file_bytes(
            theme,
            lang,
            &FileInfo {
                sender: &shown.display(),
                recipient: recipient.as_str(),
                expires,
                portal_url: &s.portal_url,
            },
            &container,
        )
        .map_err(failed)?;
        let carrier = siegel_gina::mail::carrier(
            theme,
            lang,
            &CarrierParams {
                sender: shown,
                recipient,
                original_subject: subject.as_deref(),
                show_subject: s.carrier_shows_subject,
                portal_url: &s.portal_url,
                expires,
                first_time,
                date: now,
                hostname: &s.hostname,
                original_message_id: envelope.message_id.as_deref(),
                container_id: &id,
            },
            &file,
        )
        .map_err(failed)?;
        tracing::info!(
            target: "siegel::gina", queue_id = %envelope.id, container = %id,
            %recipient, first_time, "GINA container sealed"
        );
        let carrier = match &self.mpki {
            Some(mpki) => match mpki.sign_outbound(Some(&sender), &carrier, now).await {
                Ok(Some(signed)) => signed,
                Ok(None) => carrier,
                Err(e) => return Err(Failure::Temporary(format!("signing the carrier: {e}"))),
            },
            None => carrier,
        };
        Ok(Sealed {
            carrier,
            file,
            container_id: id,
            initial_password,
        })
    }

    /// Makes sure `recipient` has an account; at the first mail creates it
    /// and notifies the sender. First: the recipient has not registered
    /// yet (the carrier explains the initial password); second: the
    /// initial password, when this call created the account.
    async fn account_for(
        &self,
        recipient: &Address,
        sender: &Address,
        sender_name: Option<&str>,
        theme: &siegel_gina::Theme,
        now: i64,
    ) -> Result<(bool, Option<siegel_gina::Secret>), Failure> {
        if let Some(a) = self.store.gina().by_address(recipient).await? {
            return Ok((a.must_register, None));
        }
        let s = &self.settings;
        let password = siegel_gina::new_initial_password().map_err(failed)?;
        let hash = self.hasher.hash(&password).await.map_err(failed)?;
        if !s.notify_sender {
            let created = self
                .store
                .gina()
                .insert_initial(recipient, None, &hash, s.language.tag())
                .await?;
            return Ok((true, created.map(|_| password)));
        }
        let notice = siegel_gina::mail::initial_password_notice(
            theme,
            s.language,
            &NoticeParams {
                from: &s.system_from,
                to: Person {
                    address: sender,
                    name: sender_name,
                },
                recipient,
                password: &password,
                portal_url: &s.portal_url,
                date: now,
                hostname: &s.hostname,
            },
        )
        .map_err(failed)?;
        // Durable first, handed on only once the account is ours.
        let mut incoming = self.spool.begin().await?;
        incoming.write(&notice).await?;
        let notice_id = incoming
            .commit_unannounced(self.notice_envelope(sender))
            .await?;
        match self
            .store
            .gina()
            .insert_initial(recipient, None, &hash, s.language.tag())
            .await
        {
            Ok(Some(_)) => {
                self.spool.announce(&notice_id);
                tracing::info!(
                    target: "siegel::gina", %recipient, %sender, notice = %notice_id,
                    "GINA account created; the sender gets the initial password"
                );
                Ok((true, Some(password)))
            }
            Ok(None) => {
                // Another node created it a moment ago and notifies.
                self.take_back(&notice_id).await;
                Ok((true, None))
            }
            Err(e) => {
                self.take_back(&notice_id).await;
                Err(e.into())
            }
        }
    }

    async fn take_back(&self, id: &QueueId) {
        if let Err(error) = self.spool.remove(id).await {
            // Not removed, so it is delivered after all; the password in it
            // is then not the account's. Rare (a failing disk) and visible.
            tracing::error!(target: "siegel::gina", queue_id = %id, %error, "cannot take back an unneeded GINA notice");
            self.spool.announce(id);
        }
    }

    fn notice_envelope(&self, sender: &Address) -> Envelope {
        Envelope {
            id: QueueId::generate(),
            mail_from: ReversePath::Address(self.settings.system_from.clone()),
            recipients: vec![Recipient::new(sender.clone())],
            direction: Direction::Inbound,
            origin: Origin::Local {
                what: "gina-notice".to_owned(),
            },
            received_at: 0,
            size: 0,
            body_8bit: false,
            smtputf8: false,
            env_id: None,
            ret: None,
            message_id: None,
        }
    }
}

/// The policy's GINA method over [`Gina`].
pub struct GinaMethod(pub Arc<Gina>);

impl Method for GinaMethod {
    fn kind(&self) -> MethodKind {
        MethodKind::Gina
    }

    fn available(&self) -> Result<(), Unavailable> {
        Ok(())
    }

    fn transform<'a>(
        &'a self,
        input: &'a [u8],
        copy: CopyInfo<'a>,
    ) -> BoxFuture<'a, Result<Vec<u8>, MethodError>> {
        Box::pin(async move {
            let kind = MethodKind::Gina;
            // The split gives each GINA recipient a copy of its own: a
            // container opens for one account only.
            let [recipient] = copy.recipients else {
                return Err(MethodError::Failed {
                    kind,
                    reason: format!(
                        "a GINA copy must have one recipient, not {}",
                        copy.recipients.len()
                    ),
                });
            };
            let now = i64::try_from(copy.now).unwrap_or(i64::MAX);
            match self.0.seal(input, copy.envelope, recipient, now).await {
                Ok(sealed) => Ok(sealed.carrier),
                Err(Failure::Temporary(reason)) => Err(MethodError::Temporary { kind, reason }),
                Err(Failure::Failed(reason)) => Err(MethodError::Failed { kind, reason }),
            }
        })
    }
}

/// Registers the GINA method.
pub fn register(registry: &mut siegel_policy::Registry, gina: &Arc<Gina>) {
    registry.register(Box::new(GinaMethod(Arc::clone(gina))));
}
