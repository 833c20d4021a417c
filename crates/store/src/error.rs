//! The store's error type. Each variant says whose fault it is: bad input from
//! the caller, a database that is not in the state we need, a key problem, or
//! a failure of the database engine itself.

use std::path::PathBuf;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is neither `sqlite:` nor `postgres:`/`postgresql:`, or
    /// does not parse.
    #[error("database url `{url}` is not usable: {reason}")]
    BadUrl {
        /// The URL with any password removed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value handed to the store is not valid (bad address, empty field,
    /// window that ends before it starts, …). Nothing was written.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field that was refused.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// An address did not parse; it is refused, never stored unnormalised.
    #[error(transparent)]
    Address(#[from] siegel_types::AddressError),
    /// A row with the same unique key exists already.
    #[error("{what} already exists")]
    Duplicate {
        /// Which kind of row (e.g. "certificate fingerprint").
        what: &'static str,
    },
    /// The row to update or read does not exist.
    #[error("{what} not found")]
    NotFound {
        /// Which kind of row.
        what: &'static str,
    },
    /// The master key given to this node is not the one the store's secrets
    /// are encrypted with. Starting anyway would produce garbage or lose keys.
    #[error(
        "wrong master key: the store's secrets are encrypted under key id {expected}, this node has {given}"
    )]
    WrongMasterKey {
        /// Key id(s) recorded in the store.
        expected: String,
        /// Key id of the key this node was given.
        given: String,
    },
    /// The master key is a rotation target that never completed: some secrets
    /// are still under the previous key. Re-run the rotation with the old key.
    #[error(
        "master key {0} is from an unfinished rotation; start with the previous key and run the rotation again"
    )]
    RotationIncomplete(String),
    /// No master key: neither `SIEGEL_MASTER_KEY` nor a readable key file.
    #[error("master key: {0}")]
    MasterKey(String),
    /// A sealed secret (or the store's current key) names a key id that this
    /// node does not hold and could not find: not in `master.key`,
    /// `master.key.new` or `master.key.old` of its data folder, nor in
    /// `SIEGEL_MASTER_KEY_FILE`. Typical cause: the node's key comes from
    /// `SIEGEL_MASTER_KEY` and another node rotated the key.
    #[error(
        "master key id {0} is not known to this node (looked in master.key, master.key.new and master.key.old of the data folder and in SIEGEL_MASTER_KEY_FILE): if this node's key comes from SIEGEL_MASTER_KEY and the key was rotated, restart it with the new key or point SIEGEL_MASTER_KEY_FILE at the new key file"
    )]
    UnknownKeyId(String),
    /// A sealed secret failed authentication: it was altered, truncated, or
    /// moved to another row. It is never returned as plaintext.
    #[error("secret in {0} failed authentication (tampered or moved)")]
    Tampered(&'static str),
    /// The schema in the database is newer than this program knows.
    #[error("database schema version {found} is newer than this program's {known}")]
    SchemaTooNew {
        /// Version found in the database.
        found: i64,
        /// Latest version this program has.
        known: i64,
    },
    /// The operation only exists for one engine (e.g. backups of SQLite).
    #[error("{0} is only supported on SQLite")]
    SqliteOnly(&'static str),
    /// A file operation (key file, backup, data folder) failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Stored JSON does not parse (someone wrote the table by hand).
    #[error("stored JSON in {field} is invalid: {source}")]
    Json {
        /// The column.
        field: &'static str,
        /// The parser's complaint.
        source: serde_json::Error,
    },
    /// A stored enum column holds a value this program does not know.
    #[error("stored value `{value}` in {field} is not known")]
    Corrupt {
        /// The column.
        field: &'static str,
        /// The unknown value.
        value: String,
    },
    /// Running the schema migrations failed.
    #[error("schema migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other failure of the database engine or connection.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Database(e)
    }
}

impl StoreError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        StoreError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

/// Maps a unique-constraint violation to [`StoreError::Duplicate`] so callers
/// can tell "already there" from a broken database.
pub(crate) fn unique(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate { what },
        _ => StoreError::Database(e),
    }
}
