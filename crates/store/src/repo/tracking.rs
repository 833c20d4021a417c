//! Message tracking: per message and recipient, what the pipeline decided and
//! why. Append-only; every node writes its own events with its name.

use siegel_types::{Address, QueueId};

use super::{check_text, stored_address};
use crate::{BeginWrite, Store, StoreError, dispatch};

/// One decision about one recipient of one mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingEvent {
    /// The mail's Message-ID header, if it had one.
    pub message_id: Option<String>,
    /// The queue id on the node that handled it.
    pub queue_id: QueueId,
    /// The recipient the decision is about.
    pub recipient: Address,
    /// What was done (`smime-encrypt`, `pgp-encrypt`, `gina`, `plain`, …).
    pub method: String,
    /// The key or certificate used, if any.
    pub key_fingerprint: Option<String>,
    /// Why (the rule or fact that led to the decision).
    pub reason: String,
    /// When, Unix seconds.
    pub at: i64,
    /// The node that decided.
    pub node: String,
}

/// A stored event with its row id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackingRecord {
    /// Row id (increases with insertion).
    pub id: i64,
    /// The event.
    pub event: TrackingEvent,
}

type Row = (
    i64,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    String,
);
const COLUMNS: &str =
    "id, message_id, queue_id, recipient, method, key_fingerprint, reason, at, node";

fn from_row(r: Row) -> Result<TrackingRecord, StoreError> {
    let queue_id = QueueId::try_from(r.2.clone()).map_err(|_| StoreError::Corrupt {
        field: "tracking.queue_id",
        value: r.2,
    })?;
    Ok(TrackingRecord {
        id: r.0,
        event: TrackingEvent {
            message_id: r.1,
            queue_id,
            recipient: stored_address("tracking.recipient", r.3)?,
            method: r.4,
            key_fingerprint: r.5,
            reason: r.6,
            at: r.7,
            node: r.8,
        },
    })
}

/// Rows per multi-row INSERT in [`Tracking::record_many`]: 8 binds a row
/// stays far below SQLite's 32,766 bind limit.
const MANY_ROWS: usize = 500;

/// Checks an event before it is stored; returns its normalised fingerprint.
fn validate(e: &TrackingEvent) -> Result<Option<String>, StoreError> {
    if let Some(id) = &e.message_id {
        check_text("message_id", id, 998)?;
    }
    check_text("method", &e.method, 64)?;
    check_text("reason", &e.reason, 4096)?;
    check_text("node", &e.node, 255)?;
    e.key_fingerprint
        .as_deref()
        .map(super::normalise_fingerprint)
        .transpose()
}

/// The tracking repository.
pub struct Tracking<'a> {
    pub(crate) store: &'a Store,
}

impl Tracking<'_> {
    /// Appends an event; returns its id.
    pub async fn record(&self, e: &TrackingEvent) -> Result<i64, StoreError> {
        let fingerprint = validate(e)?;
        Ok(dispatch!(self.store, p => {
            sqlx::query_scalar(
                "INSERT INTO tracking (message_id, queue_id, recipient, method, key_fingerprint, \
                 reason, at, node) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
            )
            .bind(e.message_id.as_deref())
            .bind(e.queue_id.as_str())
            .bind(e.recipient.as_str())
            .bind(&e.method)
            .bind(fingerprint)
            .bind(&e.reason)
            .bind(e.at)
            .bind(&e.node)
            .fetch_one(p)
            .await?
        }))
    }

    /// Appends several events in one transaction (one commit, so one fsync
    /// on SQLite): the pipeline records a decision per recipient and the
    /// delivery side a result per attempt, and a commit each would make the
    /// audit trail the bottleneck of the relay. All or nothing.
    pub async fn record_many(&self, events: &[TrackingEvent]) -> Result<u64, StoreError> {
        let fingerprints = events.iter().map(validate).collect::<Result<Vec<_>, _>>()?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut inserted = 0;
        dispatch!(self.store, p => {
            let mut tx = p.begin_write().await?;
            for (chunk, fps) in events.chunks(MANY_ROWS).zip(fingerprints.chunks(MANY_ROWS)) {
                let mut qb = sqlx::QueryBuilder::new(
                    "INSERT INTO tracking (message_id, queue_id, recipient, method, key_fingerprint, \
                     reason, at, node) ",
                );
                qb.push_values(chunk.iter().zip(fps), |mut b, (e, fp)| {
                    b.push_bind(e.message_id.clone())
                        .push_bind(e.queue_id.as_str().to_owned())
                        .push_bind(e.recipient.as_str().to_owned())
                        .push_bind(e.method.clone())
                        .push_bind(fp.clone())
                        .push_bind(e.reason.clone())
                        .push_bind(e.at)
                        .push_bind(e.node.clone());
                });
                inserted += qb.build().execute(&mut *tx).await?.rows_affected();
            }
            tx.commit().await?;
        });
        Ok(inserted)
    }

    /// Events for one queue id, in order.
    pub async fn for_queue_id(&self, id: &QueueId) -> Result<Vec<TrackingRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tracking WHERE queue_id = $1 ORDER BY id");
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id.as_str()).fetch_all(p).await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Events for one Message-ID (across nodes and queue ids), in order.
    pub async fn for_message_id(
        &self,
        message_id: &str,
    ) -> Result<Vec<TrackingRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tracking WHERE message_id = $1 ORDER BY id");
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(message_id).fetch_all(p).await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Deletes events older than `before` (retention); returns how many.
    pub async fn purge_before(&self, before: i64) -> Result<u64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM tracking WHERE at < $1")
                .bind(before)
                .execute(p)
                .await?
                .rows_affected()
        }))
    }
}
