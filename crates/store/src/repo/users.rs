//! Internal users: the people behind the internal domains, as the directory
//! (or an admin) describes them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};
use siegel_types::Address;

use super::{check_text, stored_address, text_enum, unix_now};
use crate::error::unique;
use crate::{Store, StoreError, dispatch};

text_enum!(
    /// Whether a user counts against the licence.
    LicenceState, "licence_state", {
        /// Uses a seat.
        Licensed = "licensed",
        /// Known, but not (yet) given a seat: mail passes unprotected.
        Unlicensed = "unlicensed",
        /// Deliberately left out (role accounts, no-reply).
        Excluded = "excluded",
    }
);

/// An internal user as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// The user's address (primary key).
    pub address: Address,
    /// Display name from the directory.
    pub display_name: Option<String>,
    /// Directory attributes (department, phone, …) for disclaimers and rules.
    pub attributes: Map<String, Value>,
    /// Licence state.
    pub licence_state: LicenceState,
    /// Unix seconds when the user was first stored.
    pub created_at: i64,
    /// Unix seconds of the last mail seen from or to the user.
    pub last_seen: Option<i64>,
}

/// A user to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewUser {
    /// The user's address.
    pub address: Address,
    /// Display name.
    pub display_name: Option<String>,
    /// Directory attributes.
    pub attributes: Map<String, Value>,
    /// Licence state.
    pub licence_state: LicenceState,
}

type Row = (String, Option<String>, String, String, i64, Option<i64>);
const COLUMNS: &str = "address, display_name, attributes, licence_state, created_at, last_seen";

fn from_row(r: Row) -> Result<User, StoreError> {
    let attributes = match serde_json::from_str(&r.2) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            return Err(StoreError::Corrupt {
                field: "users.attributes",
                value: r.2,
            });
        }
        Err(source) => {
            return Err(StoreError::Json {
                field: "users.attributes",
                source,
            });
        }
    };
    Ok(User {
        address: stored_address("users.address", r.0)?,
        display_name: r.1,
        attributes,
        licence_state: LicenceState::from_stored(r.3)?,
        created_at: r.4,
        last_seen: r.5,
    })
}

/// The users repository.
pub struct Users<'a> {
    pub(crate) store: &'a Store,
}

/// How long [`Users::licence_state`] may answer from this node's memory.
/// A change made through this node is seen at once; one made by another
/// node (or by hand in the database) within this time.
pub const LICENCE_STATE_TTL: Duration = Duration::from_secs(5);

/// Past this many addresses the memory of licence states starts over, so a
/// flood of distinct senders cannot grow it without bound.
const RECENT_LICENCES_MAX: usize = 8192;

/// The licence states this node read lately, per address (`None`: no such
/// user), with when they were read.
#[derive(Debug)]
pub(crate) struct RecentLicences {
    ttl: Duration,
    seen: Mutex<HashMap<String, (Option<LicenceState>, Instant)>>,
}

impl Default for RecentLicences {
    fn default() -> Self {
        Self {
            ttl: LICENCE_STATE_TTL,
            seen: Mutex::default(),
        }
    }
}

impl RecentLicences {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<LicenceState>, Instant)>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, address: &Address) -> Option<Option<LicenceState>> {
        let seen = self.seen();
        let (state, at) = seen.get(address.as_str())?;
        (at.elapsed() < self.ttl).then_some(*state)
    }

    fn put(&self, address: &Address, state: Option<LicenceState>) {
        let mut seen = self.seen();
        if seen.len() >= RECENT_LICENCES_MAX {
            seen.clear();
        }
        seen.insert(address.as_str().to_owned(), (state, Instant::now()));
    }

    fn forget(&self, address: &Address) {
        self.seen().remove(address.as_str());
    }
}

impl Users<'_> {
    /// The user's licence state (`None`: not a user), as the mail path
    /// asks it for every outbound mail (signing, Autocrypt): answered from
    /// this node's memory when read less than [`LICENCE_STATE_TTL`] ago.
    pub async fn licence_state(
        &self,
        address: &Address,
    ) -> Result<Option<LicenceState>, StoreError> {
        let recent = &self.store.recent_licences;
        if let Some(state) = recent.get(address) {
            return Ok(state);
        }
        let state = self.get(address).await?.map(|u| u.licence_state);
        recent.put(address, state);
        Ok(state)
    }

    /// Creates a user. An existing address is [`StoreError::Duplicate`].
    pub async fn insert(&self, user: &NewUser) -> Result<User, StoreError> {
        if let Some(name) = &user.display_name {
            check_text("display_name", name, 256)?;
        }
        let attributes = Value::Object(user.attributes.clone()).to_string();
        let sql = format!(
            "INSERT INTO users ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL) RETURNING {COLUMNS}"
        );
        let row: Row = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(user.address.as_str())
                .bind(user.display_name.as_deref())
                .bind(attributes)
                .bind(user.licence_state.as_str())
                .bind(unix_now())
                .fetch_one(p)
                .await
                .map_err(unique("user"))?
        });
        self.store.recent_licences.forget(&user.address);
        from_row(row)
    }

    /// The user with this address.
    pub async fn get(&self, address: &Address) -> Result<Option<User>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE address = $1");
        let row: Option<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(address.as_str())
                .fetch_optional(p)
                .await?
        });
        row.map(from_row).transpose()
    }

    /// Users in address order, `limit` at a time, after `after` (paging).
    pub async fn list(&self, after: Option<&Address>, limit: i64) -> Result<Vec<User>, StoreError> {
        let sql =
            format!("SELECT {COLUMNS} FROM users WHERE address > $1 ORDER BY address LIMIT $2");
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(after.map_or("", Address::as_str))
                .bind(limit)
                .fetch_all(p)
                .await?
        });
        rows.into_iter().map(from_row).collect()
    }

    /// Records that mail from or to the user was seen at `at`. Never moves
    /// `last_seen` backwards, so two nodes reporting out of order agree.
    pub async fn touch(&self, address: &Address, at: i64) -> Result<(), StoreError> {
        let n = dispatch!(self.store, p => {
            sqlx::query(
                "UPDATE users SET last_seen = CASE WHEN last_seen IS NULL OR last_seen < $2 \
                 THEN $2 ELSE last_seen END WHERE address = $1",
            )
            .bind(address.as_str())
            .bind(at)
            .execute(p)
            .await?
            .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound { what: "user" });
        }
        Ok(())
    }

    /// Changes a user's licence state.
    pub async fn set_licence_state(
        &self,
        address: &Address,
        state: LicenceState,
    ) -> Result<(), StoreError> {
        self.store.recent_licences.forget(address);
        let n = dispatch!(self.store, p => {
            sqlx::query("UPDATE users SET licence_state = $2 WHERE address = $1")
                .bind(address.as_str())
                .bind(state.as_str())
                .execute(p)
                .await?
                .rows_affected()
        });
        if n == 0 {
            return Err(StoreError::NotFound { what: "user" });
        }
        Ok(())
    }

    /// Number of users in a licence state (seat counting).
    pub async fn count(&self, state: LicenceState) -> Result<i64, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE licence_state = $1")
                .bind(state.as_str())
                .fetch_one(p)
                .await?
        }))
    }

    /// Deletes a user; false when there was none.
    pub async fn delete(&self, address: &Address) -> Result<bool, StoreError> {
        self.store.recent_licences.forget(address);
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM users WHERE address = $1")
                .bind(address.as_str())
                .execute(p)
                .await?
                .rows_affected()
        }) > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(a: &str) -> Address {
        Address::parse(a).unwrap()
    }

    #[test]
    fn recent_licence_states_expire_and_stay_bounded() {
        let fresh = RecentLicences::default();
        fresh.put(&addr("a@example.com"), Some(LicenceState::Licensed));
        assert_eq!(
            fresh.get(&addr("a@example.com")),
            Some(Some(LicenceState::Licensed))
        );
        fresh.forget(&addr("a@example.com"));
        assert_eq!(fresh.get(&addr("a@example.com")), None);

        let expired = RecentLicences {
            ttl: Duration::ZERO,
            seen: Mutex::default(),
        };
        expired.put(&addr("a@example.com"), None);
        assert_eq!(expired.get(&addr("a@example.com")), None);

        for i in 0..RECENT_LICENCES_MAX + 10 {
            fresh.put(&addr(&format!("u{i}@example.com")), None);
        }
        assert!(fresh.seen().len() <= RECENT_LICENCES_MAX);
        assert_eq!(
            fresh.get(&addr(&format!("u{}@example.com", RECENT_LICENCES_MAX + 9))),
            Some(None)
        );
    }
}
