//! Installed licences. The store keeps the signed document as given; checking
//! its signature is the licensing module's job, not the store's.

use super::{check_text, unix_now};
use crate::error::unique;
use crate::{Store, StoreError, dispatch};

/// A licence to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewLicence {
    /// The licence's own id (unique).
    pub licence_id: String,
    /// Who it is for.
    pub holder: String,
    /// Number of licensed users.
    pub seats: i64,
    /// Start, Unix seconds.
    pub valid_from: i64,
    /// End, Unix seconds.
    pub valid_until: i64,
    /// The signed licence document, verbatim.
    pub document: String,
}

/// An installed licence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Licence {
    /// Row id.
    pub id: i64,
    /// The licence as installed.
    pub licence: NewLicence,
    /// When it was installed.
    pub installed_at: i64,
}

type Row = (i64, String, String, i64, i64, i64, String, i64);
const COLUMNS: &str =
    "id, licence_id, holder, seats, valid_from, valid_until, document, installed_at";

fn from_row(r: Row) -> Licence {
    Licence {
        id: r.0,
        licence: NewLicence {
            licence_id: r.1,
            holder: r.2,
            seats: r.3,
            valid_from: r.4,
            valid_until: r.5,
            document: r.6,
        },
        installed_at: r.7,
    }
}

/// The licences repository.
pub struct Licences<'a> {
    pub(crate) store: &'a Store,
}

impl Licences<'_> {
    /// Installs a licence. The same licence id twice is a duplicate.
    pub async fn insert(&self, l: &NewLicence) -> Result<Licence, StoreError> {
        check_text("licence_id", &l.licence_id, 128)?;
        check_text("holder", &l.holder, 512)?;
        if l.document.trim().is_empty() {
            return Err(StoreError::invalid("document", "must not be empty"));
        }
        if l.seats < 0 {
            return Err(StoreError::invalid("seats", "must not be negative"));
        }
        if l.valid_from > l.valid_until {
            return Err(StoreError::invalid(
                "validity",
                "valid_from is after valid_until",
            ));
        }
        let sql = format!(
            "INSERT INTO licences (licence_id, holder, seats, valid_from, valid_until, document, \
             installed_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
        );
        let row: Row = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(&l.licence_id)
                .bind(&l.holder)
                .bind(l.seats)
                .bind(l.valid_from)
                .bind(l.valid_until)
                .bind(&l.document)
                .bind(unix_now())
                .fetch_one(p)
                .await
                .map_err(unique("licence"))?
        });
        Ok(from_row(row))
    }

    /// All licences, oldest first.
    pub async fn all(&self) -> Result<Vec<Licence>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM licences ORDER BY id");
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(p).await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Licences valid at `now`.
    pub async fn valid_at(&self, now: i64) -> Result<Vec<Licence>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM licences WHERE valid_from <= $1 AND valid_until >= $1 ORDER BY id"
        );
        let rows: Vec<Row> = dispatch!(self.store, p => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(now).fetch_all(p).await?
        });
        Ok(rows.into_iter().map(from_row).collect())
    }

    /// Removes a licence; false when there was none.
    pub async fn delete(&self, licence_id: &str) -> Result<bool, StoreError> {
        Ok(dispatch!(self.store, p => {
            sqlx::query("DELETE FROM licences WHERE licence_id = $1")
                .bind(licence_id)
                .execute(p)
                .await?
                .rows_affected()
        }) > 0)
    }
}
