//! What GINA keeps besides the accounts: the content key of each container
//! (sealed under the master key; the mail itself is never stored), portal
//! sessions, one-time tokens, throttling counters, the portal's audit trail
//! and the portal's shared secrets.
//!
//! Everything here is shared by all nodes through the database: a portal
//! behind a load balancer keeps no login state in one node's memory.

use siegel_types::Address;

use super::{check_text, stored_address};
use crate::crypto::SecretBytes;
use crate::error::unique;
use crate::maintenance::{KeyCheckRow, seal_context};
use crate::{BeginWrite, Store, StoreError, dispatch};

fn check_container_id(id: &str) -> Result<(), StoreError> {
    if id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(StoreError::invalid(
            "container_id",
            "must be 32 lower-case hex digits",
        ))
    }
}

/// A container to record at sealing time.
#[derive(Debug, Clone)]
pub struct NewContainer<'a> {
    /// The container id (32 hex digits).
    pub container_id: &'a str,
    /// The original mail's Message-ID (for `siegel gina revoke`).
    pub message_id: Option<&'a str>,
    /// The internal sender.
    pub sender: &'a Address,
    /// The external recipient (the only account that may open it).
    pub recipient: &'a Address,
    /// The 32-byte content key; sealed before it is written.
    pub key: &'a SecretBytes,
    /// Sealing time, Unix seconds.
    pub created_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Where a read receipt goes at the first open (the sender asked).
    pub receipt_to: Option<&'a Address>,
}

/// A stored container (without its key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    /// Container id.
    pub container_id: String,
    /// Original Message-ID.
    pub message_id: Option<String>,
    /// Sender.
    pub sender: Address,
    /// Recipient.
    pub recipient: Address,
    /// Sealed, Unix seconds.
    pub created_at: i64,
    /// Expiry.
    pub expires_at: i64,
    /// When it was revoked.
    pub revoked_at: Option<i64>,
    /// When its key was deleted (revocation or expiry).
    pub shredded_at: Option<i64>,
    /// First successful open.
    pub first_opened_at: Option<i64>,
    /// Read receipt address.
    pub receipt_to: Option<Address>,
}

/// Whether a container can be opened now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Key present, not expired, not revoked.
    Open,
    /// Past its expiry (its key is deleted by the next sweep, if not yet).
    Expired,
    /// Revoked by the sender or an administrator; key deleted.
    Revoked,
}

impl ContainerRecord {
    /// The state at `now`.
    pub fn state(&self, now: i64) -> ContainerState {
        if self.revoked_at.is_some() {
            ContainerState::Revoked
        } else if now >= self.expires_at || self.shredded_at.is_some() {
            ContainerState::Expired
        } else {
            ContainerState::Open
        }
    }
}

type ContainerRow = (
    String,
    Option<String>,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);
const CONTAINER_COLUMNS: &str = "container_id, message_id, sender, recipient, created_at, \
     expires_at, revoked_at, shredded_at, first_opened_at, receipt_to";

fn container_from_row(r: ContainerRow) -> Result<ContainerRecord, StoreError> {
    Ok(ContainerRecord {
        container_id: r.0,
        message_id: r.1,
        sender: stored_address("gina_containers.sender", r.2)?,
        recipient: stored_address("gina_containers.recipient", r.3)?,
        created_at: r.4,
        expires_at: r.5,
        revoked_at: r.6,
        shredded_at: r.7,
        first_opened_at: r.8,
        receipt_to: r
            .9
            .map(|a| stored_address("gina_containers.receipt_to", a))
            .transpose()?,
    })
}

/// Message-IDs are stored without angle brackets.
fn bare_message_id(id: &str) -> &str {
    id.trim().trim_start_matches('<').trim_end_matches('>')
}

/// The containers repository.
pub struct GinaContainers<'a> {
    pub(crate) store: &'a Store,
}

impl GinaContainers<'_> {
    /// Records a container and its sealed key (one write transaction that
    /// reads the key rows first, like every secret write: a master-key
    /// rotation can neither finish in between nor miss it).
    pub async fn insert(&self, c: &NewContainer<'_>) -> Result<(), StoreError> {
        check_container_id(c.container_id)?;
        if c.key.expose().len() != 32 {
            return Err(StoreError::invalid("key", "must be 32 bytes"));
        }
        if c.created_at > c.expires_at {
            return Err(StoreError::invalid("expires_at", "before created_at"));
        }
        let message_id = c.message_id.map(bare_message_id);
        if let Some(id) = message_id {
            check_text("message_id", id, 998)?;
        }
        let context = seal_context("gina_containers", c.container_id);
        dispatch!(self.store, p => {
            let mut tx = p.begin_write().await?;
            let rows: Vec<KeyCheckRow> = sqlx::query_as(self.store.key_rows_sql())
                .fetch_all(&mut *tx)
                .await?;
            let sealed = self.store.sealing_keyring(&rows)?.seal(&context, c.key.expose())?;
            sqlx::query(
                "INSERT INTO gina_containers (container_id, message_id, sender, recipient, key_enc, \
                 created_at, expires_at, receipt_to) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(c.container_id)
            .bind(message_id)
            .bind(c.sender.as_str())
            .bind(c.recipient.as_str())
            .bind(sealed)
            .bind(c.created_at)
            .bind(c.expires_at)
            .bind(c.receipt_to.map(Address::as_str))
            .execute(&mut *tx)
            .await
            .map_err(unique("container"))?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The container with this id.
    pub async fn by_id(&self, container_id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        check_container_id(container_id)?;
        let sql =
            format!("SELECT {CONTAINER_COLUMNS} FROM gina_containers WHERE container_id = $1");
        let row: Option<ContainerRow> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(container_id)
                .fetch_optional(p)
                .await?
        });
        row.map(container_from_row).transpose()
    }

    /// The containers made from one mail (any recipients).
    pub async fn for_message(&self, message_id: &str) -> Result<Vec<ContainerRecord>, StoreError> {
        let sql = format!(
            "SELECT {CONTAINER_COLUMNS} FROM gina_containers WHERE message_id = $1 ORDER BY id"
        );
        let rows: Vec<ContainerRow> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(bare_message_id(message_id))
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(container_from_row).collect()
    }

    /// The content key; `None` when there is no such container or its key
    /// was deleted (revoked or expired).
    pub async fn key(&self, container_id: &str) -> Result<Option<SecretBytes>, StoreError> {
        check_container_id(container_id)?;
        let sealed: Option<Option<Vec<u8>>> = dispatch!(self.store, p => {
            sqlx::query_scalar("SELECT key_enc FROM gina_containers WHERE container_id = $1")
                .bind(container_id)
                .fetch_optional(p)
                .await?
        });
        match sealed.flatten() {
            None => Ok(None),
            Some(sealed) => self
                .store
                .open_secret(
                    "gina_containers",
                    &seal_context("gina_containers", container_id),
                    &sealed,
                )
                .await
                .map(Some),
        }
    }

    /// Revokes every container of a mail: marks them and deletes their
    /// keys, so no copy can ever be opened again. Returns how many were
    /// revoked now (already revoked ones are not counted).
    pub async fn revoke_message(&self, message_id: &str, now: i64) -> Result<u64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE gina_containers SET revoked_at = $2, shredded_at = $2, key_enc = NULL \
                 WHERE message_id = $1 AND revoked_at IS NULL",
            )
            .bind(bare_message_id(message_id))
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// Deletes the keys of every container expired at `now`; returns how
    /// many. Run periodically by `serve` (any node: the update is
    /// idempotent).
    pub async fn shred_expired(&self, now: i64) -> Result<u64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE gina_containers SET key_enc = NULL, shredded_at = $1 \
                 WHERE expires_at <= $1 AND key_enc IS NOT NULL",
            )
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        }))
    }

    /// Records an open; true only for the first one (then the read
    /// receipt is due). One conditional UPDATE: two nodes opening at once
    /// cannot both see "first".
    pub async fn mark_opened(&self, container_id: &str, now: i64) -> Result<bool, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE gina_containers SET first_opened_at = $2 \
                 WHERE container_id = $1 AND first_opened_at IS NULL",
            )
            .bind(container_id)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
        }) == 1)
    }
}

/// A portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the cookie token (hex).
    pub token_hash: String,
    /// The logged-in address.
    pub address: Address,
    /// The session's CSRF token.
    pub csrf: String,
    /// Created, Unix seconds.
    pub created_at: i64,
    /// Last request (updated at most once a minute).
    pub last_seen: i64,
    /// Absolute end.
    pub expires_at: i64,
    /// Client address at login.
    pub client: String,
}

type SessionRow = (String, String, String, i64, i64, i64, String);

/// The sessions repository.
pub struct GinaSessions<'a> {
    pub(crate) store: &'a Store,
}

impl GinaSessions<'_> {
    /// Stores a new session.
    pub async fn create(&self, s: &SessionRecord) -> Result<(), StoreError> {
        dispatch!(self.store, p => {
            sqlx::query(
                "INSERT INTO gina_sessions (token_hash, address, csrf, created_at, last_seen, \
                 expires_at, client) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&s.token_hash)
            .bind(s.address.as_str())
            .bind(&s.csrf)
            .bind(s.created_at)
            .bind(s.last_seen)
            .bind(s.expires_at)
            .bind(&s.client)
            .execute(p)
            .await
            .map_err(unique("session"))?;
        });
        Ok(())
    }

    /// The session with this token hash.
    pub async fn find(&self, token_hash: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<SessionRow> = dispatch!(self.store, p => {
            sqlx::query_as(
                "SELECT token_hash, address, csrf, created_at, last_seen, expires_at, client \
                 FROM gina_sessions WHERE token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(p)
            .await?
        });
        row.map(|r| {
            Ok(SessionRecord {
                token_hash: r.0,
                address: stored_address("gina_sessions.address", r.1)?,
                csrf: r.2,
                created_at: r.3,
                last_seen: r.4,
                expires_at: r.5,
                client: r.6,
            })
        })
        .transpose()
    }

    /// Records activity.
    pub async fn touch(&self, token_hash: &str, now: i64) -> Result<(), StoreError> {
        dispatch!(self.store, p => {
            sqlx::query("UPDATE gina_sessions SET last_seen = $2 WHERE token_hash = $1")
                .bind(token_hash)
                .bind(now)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Ends one session.
    pub async fn delete(&self, token_hash: &str) -> Result<(), StoreError> {
        dispatch!(self.store, p => {
            sqlx::query("DELETE FROM gina_sessions WHERE token_hash = $1")
                .bind(token_hash)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Ends every session of an address except `keep` (password changed or
    /// reset: other devices must log in again).
    pub async fn delete_for(
        &self,
        address: &Address,
        keep: Option<&str>,
    ) -> Result<u64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM gina_sessions WHERE address = $1 AND token_hash <> $2")
                .bind(address.as_str())
                .bind(keep.unwrap_or(""))
                .execute(p)
                .await?
                .rows_affected()
        }))
    }

    /// Deletes sessions past their absolute end or idle since `idle_before`.
    pub async fn purge(&self, now: i64, idle_before: i64) -> Result<u64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM gina_sessions WHERE expires_at <= $1 OR last_seen < $2")
                .bind(now)
                .bind(idle_before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}

/// A one-time token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// What it is for (`signup`).
    pub purpose: String,
    /// The address it confirms.
    pub address: Address,
    /// Created.
    pub created_at: i64,
    /// Valid until.
    pub expires_at: i64,
}

/// The one-time tokens repository.
pub struct GinaTokens<'a> {
    pub(crate) store: &'a Store,
}

impl GinaTokens<'_> {
    /// Stores a token (its hash).
    pub async fn create(
        &self,
        token_hash: &str,
        purpose: &str,
        address: &Address,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        dispatch!(self.store, p => {
            sqlx::query(
                "INSERT INTO gina_tokens (token_hash, purpose, address, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(token_hash)
            .bind(purpose)
            .bind(address.as_str())
            .bind(now)
            .bind(expires_at)
            .execute(p)
            .await
            .map_err(unique("token"))?;
        });
        Ok(())
    }

    /// The token if it is valid and unused at `now`, without using it.
    pub async fn peek(
        &self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<(String, String, i64, i64)> = dispatch!(self.store, p => {
            sqlx::query_as(
                "SELECT purpose, address, created_at, expires_at FROM gina_tokens \
                 WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
            )
            .bind(token_hash)
            .bind(purpose)
            .bind(now)
            .fetch_optional(p)
            .await?
        });
        row.map(|r| {
            Ok(TokenRecord {
                purpose: r.0,
                address: stored_address("gina_tokens.address", r.1)?,
                created_at: r.2,
                expires_at: r.3,
            })
        })
        .transpose()
    }

    /// Uses the token: one conditional UPDATE, so it works exactly once even
    /// when two requests race. `None` when unknown, used or expired.
    pub async fn take(
        &self,
        token_hash: &str,
        purpose: &str,
        now: i64,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<(String, String, i64, i64)> = dispatch!(self.store, p => {
            sqlx::query_as(
                "UPDATE gina_tokens SET used_at = $3 WHERE token_hash = $1 AND purpose = $2 \
                 AND used_at IS NULL AND expires_at > $3 \
                 RETURNING purpose, address, created_at, expires_at",
            )
            .bind(token_hash)
            .bind(purpose)
            .bind(now)
            .fetch_optional(p)
            .await?
        });
        row.map(|r| {
            Ok(TokenRecord {
                purpose: r.0,
                address: stored_address("gina_tokens.address", r.1)?,
                created_at: r.2,
                expires_at: r.3,
            })
        })
        .transpose()
    }

    /// How many tokens were made for an address since `since` (limits
    /// verification mails per address).
    pub async fn count_since(&self, address: &Address, since: i64) -> Result<i64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM gina_tokens WHERE address = $1 AND created_at >= $2")
                .bind(address.as_str())
                .bind(since)
                .fetch_one(p)
                .await?
        }))
    }
}

/// A throttling counter after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleState {
    /// Failures in the current window.
    pub failures: i64,
    /// Locked until this Unix second, if locked.
    pub locked_until: Option<i64>,
}

impl ThrottleState {
    /// Whether the key is locked at `now`.
    pub fn locked(&self, now: i64) -> bool {
        self.locked_until.is_some_and(|t| t > now)
    }
}

/// The throttling repository: failure counters with a window and a
/// temporary lock, one row per limited key.
pub struct GinaThrottle<'a> {
    pub(crate) store: &'a Store,
}

impl GinaThrottle<'_> {
    /// Counts a failure of `key` at `now`. A window older than `window`
    /// seconds starts over at 1; when the count reaches `limit` the key is
    /// locked for `lock_for` seconds. One statement (`INSERT … ON CONFLICT
    /// DO UPDATE … RETURNING`): concurrent failures on any number of nodes
    /// each count exactly once.
    pub async fn fail(
        &self,
        key: &str,
        now: i64,
        window: i64,
        limit: i64,
        lock_for: i64,
    ) -> Result<ThrottleState, StoreError> {
        if limit < 1 || window < 1 || lock_for < 0 {
            return Err(StoreError::invalid(
                "throttle",
                "limit and window must be ≥ 1",
            ));
        }
        check_text("throttle key", key, 512)?;
        let fresh_before = now - window;
        let lock = now.saturating_add(lock_for);
        let row: (i64, Option<i64>) = dispatch!(self.store, p => {
            sqlx::query_as(
                "INSERT INTO gina_throttle (key, failures, window_start, locked_until) \
                 VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5 ELSE NULL END) \
                 ON CONFLICT (key) DO UPDATE SET \
                   failures = CASE WHEN gina_throttle.window_start < $3 THEN 1 \
                                   ELSE gina_throttle.failures + 1 END, \
                   window_start = CASE WHEN gina_throttle.window_start < $3 THEN $2 \
                                       ELSE gina_throttle.window_start END, \
                   locked_until = CASE WHEN (CASE WHEN gina_throttle.window_start < $3 THEN 1 \
                                                  ELSE gina_throttle.failures + 1 END) >= $4 THEN $5 \
                                       WHEN gina_throttle.locked_until > $2 THEN gina_throttle.locked_until \
                                       ELSE NULL END \
                 RETURNING failures, locked_until",
            )
            .bind(key)
            .bind(now)
            .bind(fresh_before)
            .bind(limit)
            .bind(lock)
            .fetch_one(p)
            .await?
        });
        Ok(ThrottleState {
            failures: row.0,
            locked_until: row.1,
        })
    }

    /// The counter of `key`, if any.
    pub async fn state(&self, key: &str) -> Result<Option<ThrottleState>, StoreError> {
        let row: Option<(i64, Option<i64>)> = dispatch!(self.store, p => {
            sqlx::query_as("SELECT failures, locked_until FROM gina_throttle WHERE key = $1")
                .bind(key)
                .fetch_optional(p)
                .await?
        });
        Ok(row.map(|r| ThrottleState {
            failures: r.0,
            locked_until: r.1,
        }))
    }

    /// Forgets the counter (after a success).
    pub async fn clear(&self, key: &str) -> Result<(), StoreError> {
        dispatch!(self.store, p => {
            sqlx::query("DELETE FROM gina_throttle WHERE key = $1")
                .bind(key)
                .execute(p)
                .await?;
        });
        Ok(())
    }
}

/// One audit event to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// `login`, `login_failed`, `locked`, `reset`, `open`, …
    pub event: String,
    /// The account (or the address tried).
    pub address: Option<String>,
    /// The container involved.
    pub container_id: Option<String>,
    /// The client address.
    pub client: Option<String>,
    /// Free text ("-" when there is nothing to say).
    pub detail: String,
    /// The node that saw it.
    pub node: String,
}

/// A stored audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Row id.
    pub id: i64,
    /// The event.
    pub event: AuditEvent,
}

/// The portal's audit trail.
pub struct GinaAudit<'a> {
    pub(crate) store: &'a Store,
}

type AuditRow = (
    i64,
    i64,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    String,
    String,
);

impl GinaAudit<'_> {
    /// Stores events in one transaction (the portal batches them).
    pub async fn record_many(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events {
            check_text("event", &e.event, 64)?;
        }
        dispatch!(self.store, p => {
            let mut tx = p.begin_write().await?;
            for chunk in events.chunks(500) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO gina_audit (at, event, address, container_id, client, detail, node) ",
                );
                qb.push_values(chunk, |mut b, e| {
                    b.push_bind(e.at)
                        .push_bind(e.event.clone())
                        .push_bind(e.address.clone())
                        .push_bind(e.container_id.clone())
                        .push_bind(e.client.clone())
                        .push_bind(e.detail.chars().take(2000).collect::<String>())
                        .push_bind(e.node.clone());
                });
                qb.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The newest events, optionally of one address, newest first.
    pub async fn recent(
        &self,
        address: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows: Vec<AuditRow> = dispatch!(self.store, p => {
            sqlx::query_as(
                "SELECT id, at, event, address, container_id, client, detail, node FROM gina_audit \
                 WHERE ($1 = '' OR address = $1) ORDER BY id DESC LIMIT $2",
            )
            .bind(address.unwrap_or(""))
            .bind(limit)
            .fetch_all(p)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|r| AuditRecord {
                id: r.0,
                event: AuditEvent {
                    at: r.1,
                    event: r.2,
                    address: r.3,
                    container_id: r.4,
                    client: r.5,
                    detail: r.6,
                    node: r.7,
                },
            })
            .collect())
    }
}

/// Portal secrets shared by all nodes.
pub struct GinaSecrets<'a> {
    pub(crate) store: &'a Store,
}

impl GinaSecrets<'_> {
    /// The secret `name`; made from `fresh` by whichever node asks first
    /// (`ON CONFLICT DO NOTHING`, then read back), so all nodes agree.
    pub async fn get_or_create(
        &self,
        name: &str,
        fresh: &SecretBytes,
    ) -> Result<SecretBytes, StoreError> {
        check_text("secret name", name, 128)?;
        let context = seal_context("gina_secrets", name);
        let read = || async {
            let sealed: Option<Vec<u8>> = dispatch!(self.store, p => {
                sqlx::query_scalar("SELECT value_enc FROM gina_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_optional(p)
                    .await?
            });
            Ok::<_, StoreError>(sealed)
        };
        if let Some(sealed) = read().await? {
            return self
                .store
                .open_secret("gina_secrets", &context, &sealed)
                .await;
        }
        dispatch!(self.store, p => {
            let mut tx = p.begin_write().await?;
            let rows: Vec<KeyCheckRow> = sqlx::query_as(self.store.key_rows_sql())
                .fetch_all(&mut *tx)
                .await?;
            let sealed = self.store.sealing_keyring(&rows)?.seal(&context, fresh.expose())?;
            sqlx::query(
                "INSERT INTO gina_secrets (name, value_enc, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(sealed)
            .bind(super::unix_now())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        let sealed = read()
            .await?
            .ok_or(StoreError::NotFound { what: "secret" })?;
        self.store
            .open_secret("gina_secrets", &context, &sealed)
            .await
    }
}
