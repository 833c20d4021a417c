//! Siegel's store: everything the gateway knows besides its spool.
//!
//! One API, two engines: an embedded SQLite file in the data folder for a
//! single node, PostgreSQL when several nodes share one database. The SQL of
//! every repository is written once and runs on both (numbered `$n`
//! parameters, `RETURNING`, `ON CONFLICT` exist in both); the `dispatch!`
//! macro instantiates each query for the engine in use. Only the migrations
//! differ (column types), and they live in parallel folders with the same
//! file names: `migrations/sqlite/` and `migrations/postgres/`.
//!
//! Private keys are sealed under a master key (see [`crypto`]); a node with
//! the wrong key refuses to start ([`StoreError::WrongMasterKey`]).
//!
//! Repositories hang off [`Store`]: [`Store::users`], [`Store::certificates`],
//! [`Store::pgp_keys`], [`Store::domain_keys`], [`Store::gina`],
//! [`Store::tracking`], [`Store::settings`], [`Store::licences`].

pub mod crypto;
mod error;
mod maintenance;
pub mod repo;
mod tracking_writer;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{SqlSafeStr, Transaction};

pub use crypto::{
    KeyId, Keyring, MASTER_KEY_ENV, MASTER_KEY_FILE, MASTER_KEY_FILE_ENV, MasterKey, OLD_KEY_FILE,
    STAGED_KEY_FILE, SecretBytes,
};
pub use error::StoreError;
pub use maintenance::{CheckReport, RotationReport, restore_sqlite};
pub use repo::*;
pub use tracking_writer::TrackingWriter;

/// The default database file inside the data folder.
pub const DEFAULT_DB_FILE: &str = "siegel.db";

/// Runs `$body` with `$p` bound to the engine's pool. The body is compiled
/// once per engine, so the same query text is type-checked against both.
macro_rules! dispatch {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            $crate::Pool::Sqlite($p) => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use dispatch;

/// The connection pool of the engine in use.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which engine a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Embedded SQLite file.
    Sqlite,
    /// Shared PostgreSQL database.
    Postgres,
}

impl Engine {
    /// Lower-case name, for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
}

/// Starting a write transaction. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can
/// fail with `SQLITE_BUSY` when another writer got in between, and the busy
/// timeout does not help with that upgrade.
pub(crate) trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// A handle on the store. Cheap to clone; all clones share one pool and one
/// keyring.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
    pub(crate) keys: Arc<RwLock<Keyring>>,
    /// The SQLite file, for backups; `None` on PostgreSQL or in memory.
    pub(crate) sqlite_path: Option<PathBuf>,
    /// The data folder, where a rotated master key is looked for when this
    /// node meets a key id it does not hold (see `Store::refresh_keyring`).
    pub(crate) key_dir: PathBuf,
    /// Licence states read lately, see [`Users::licence_state`].
    pub(crate) recent_licences: Arc<repo::RecentLicences>,
}

/// The migrations, compiled in so the binary needs no files beside it.
/// Index i of both lists is the same version with the same file name.
const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "gina",
        include_str!("../migrations/sqlite/0002_gina.sql"),
    ),
    (
        3,
        "key_sources",
        include_str!("../migrations/sqlite/0003_key_sources.sql"),
    ),
    (
        4,
        "capabilities",
        include_str!("../migrations/sqlite/0004_capabilities.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "gina",
        include_str!("../migrations/postgres/0002_gina.sql"),
    ),
    (
        3,
        "key_sources",
        include_str!("../migrations/postgres/0003_key_sources.sql"),
    ),
    (
        4,
        "capabilities",
        include_str!("../migrations/postgres/0004_capabilities.sql"),
    ),
];

/// The schema version this program creates and expects.
pub const SCHEMA_VERSION: i64 = 4;

fn migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|&(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

fn map_migrate(e: MigrateError) -> StoreError {
    match e {
        MigrateError::VersionMissing(found) => StoreError::SchemaTooNew {
            found,
            known: SCHEMA_VERSION,
        },
        other => StoreError::Migrate(other),
    }
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Store {
    /// Opens the store a node is configured with: `url` is `sqlite://PATH`,
    /// `postgres://…`, or empty for `data_dir/siegel.db`. The master key
    /// comes from `SIEGEL_MASTER_KEY` or `data_dir/master.key` (created on
    /// first start). Migrations run before this returns.
    pub async fn connect(url: &str, data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
            path: data_dir.to_owned(),
            source,
        })?;
        let key = MasterKey::load(data_dir)?;
        Self::open(url, data_dir, key).await
    }

    /// Like [`Store::connect`] with an explicit master key (tests, the
    /// rotation command, embedding).
    pub async fn open(url: &str, data_dir: &Path, key: MasterKey) -> Result<Store, StoreError> {
        let default_url;
        let url = if url.trim().is_empty() {
            std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Io {
                path: data_dir.to_owned(),
                source,
            })?;
            default_url = format!("sqlite://{}", data_dir.join(DEFAULT_DB_FILE).display());
            default_url.as_str()
        } else {
            url.trim()
        };
        let bad = |reason: String| StoreError::BadUrl {
            url: redact(url),
            reason,
        };
        // Held on SQLite until the master key is verified (its check value
        // may be written by whichever node is first).
        let mut open_lock = None;
        let store = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| bad(e.to_string()))?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(30));
            let file = options.get_filename().to_owned();
            let in_memory = file.as_os_str().is_empty() || file == Path::new(":memory:");
            let sqlite_path = (!in_memory).then_some(file);
            let lock = sqlite_open_lock(sqlite_path.as_deref()).await?;
            // Every pooled connection to `:memory:` would be its own empty
            // database, so an in-memory store gets exactly one connection.
            let pool = SqlitePoolOptions::new()
                .max_connections(if in_memory { 1 } else { 8 })
                .connect_with(options)
                .await?;
            migrate_sqlite(&pool).await?;
            open_lock = lock;
            Store {
                pool: Pool::Sqlite(pool),
                keys: Arc::new(RwLock::new(Keyring::new(key))),
                sqlite_path,
                key_dir: data_dir.to_owned(),
                recent_licences: Arc::default(),
            }
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let options = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .connect_with(options)
                .await?;
            // sqlx holds a PostgreSQL advisory lock while migrating, so two
            // nodes starting at once apply each migration exactly once.
            migrator(POSTGRES_MIGRATIONS)
                .run(&pool)
                .await
                .map_err(map_migrate)?;
            Store {
                pool: Pool::Postgres(pool),
                keys: Arc::new(RwLock::new(Keyring::new(key))),
                sqlite_path: None,
                key_dir: data_dir.to_owned(),
                recent_licences: Arc::default(),
            }
        } else {
            return Err(bad("scheme must be sqlite: or postgres:".into()));
        };
        store.verify_master_key().await?;
        drop(open_lock);
        Ok(store)
    }

    /// Which engine this store runs on.
    pub fn engine(&self) -> Engine {
        match self.pool {
            Pool::Sqlite(_) => Engine::Sqlite,
            Pool::Postgres(_) => Engine::Postgres,
        }
    }

    /// The SQLite database file (for `siegel restore`, which needs the path
    /// while no node runs); `None` on PostgreSQL or in memory.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// The id of the key new secrets are sealed with.
    pub fn master_key_id(&self) -> KeyId {
        self.keyring().current().id()
    }

    /// A snapshot of the keyring. A poisoned lock still holds a consistent
    /// keyring (it is only ever replaced whole), so poisoning is ignored.
    pub(crate) fn keyring(&self) -> Keyring {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn update_keyring(&self, f: impl FnOnce(&mut Keyring)) {
        match self.keys.write() {
            Ok(mut k) => f(&mut k),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    /// The highest migration applied to the database.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        const SQL: &str = "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success";
        Ok(dispatch!(self, p => sqlx::query_scalar::<_, i64>(SQL).fetch_one(p).await?))
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        dispatch!(self, p => p.close().await)
    }
}

/// Takes an exclusive lock on a file next to the SQLite database for the
/// first connection and the migrations. sqlx takes no lock on SQLite, and a
/// brand-new database switching to WAL while another process does the same
/// can fail with "database is locked" at once (the busy handler does not
/// cover that switch); under the lock the second node waits, then finds the
/// database in WAL mode with every migration applied.
async fn sqlite_open_lock(file: Option<&Path>) -> Result<Option<std::fs::File>, StoreError> {
    let lock = match file {
        Some(file) => {
            let mut lock_path = file.as_os_str().to_owned();
            lock_path.push(".migrate-lock");
            let lock_path = PathBuf::from(lock_path);
            let for_error = lock_path.clone();
            let guard = tokio::task::spawn_blocking(move || {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lock_path)
                    .and_then(|f| f.lock().map(|()| f));
                f.map_err(|source| StoreError::Io {
                    path: lock_path,
                    source,
                })
            })
            .await
            .map_err(|e| StoreError::Io {
                path: for_error,
                source: std::io::Error::other(e),
            })??;
            Some(guard)
        }
        None => None,
    };
    Ok(lock)
}

/// Applies the SQLite migrations (under the lock of [`sqlite_open_lock`]).
async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    migrator(SQLITE_MIGRATIONS)
        .run(pool)
        .await
        .map_err(map_migrate)
}
