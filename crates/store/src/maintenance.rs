//! Start-up key check, `db check`, backup/restore and master-key rotation:
//! the operations the CLI exposes, as plain async functions.

use std::path::Path;

use sqlx::Row;

use crate::crypto::{
    Keyring, MASTER_KEY_FILE, MASTER_KEY_FILE_ENV, MasterKey, OLD_KEY_FILE, STAGED_KEY_FILE,
    SecretBytes, sealed_key_id,
};
use crate::{BeginWrite, KeyId, SCHEMA_VERSION, Store, StoreError, dispatch};

/// The plaintext sealed into `master_key_check`. Opening it proves the key.
const CHECK_PLAINTEXT: &[u8] = b"siegel master key check v1";
const CHECK_CONTEXT: &str = "master_key_check";

/// A table with a sealed column: (table, natural key column — part of the
/// seal's associated data `table:key` —, sealed column). Every such table
/// has an integer `id` the rotation pages by.
pub(crate) type SecretTable = (&'static str, &'static str, &'static str);

/// Every sealed column the rotation re-seals and `db check` counts.
pub(crate) const SECRET_TABLES: [SecretTable; 5] = [
    ("certificates", "fingerprint", "private_key_enc"),
    ("pgp_keys", "fingerprint", "private_key_enc"),
    ("domain_keys", "fingerprint", "private_key_enc"),
    ("gina_containers", "container_id", "key_enc"),
    ("gina_secrets", "name", "value_enc"),
];

/// Rows re-encrypted per transaction during rotation: small enough that a
/// transaction never holds the SQLite write lock for long.
const ROTATION_BATCH: i64 = 200;

/// What `siegel db check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The schema version in the database.
    pub schema_version: i64,
    /// The version this program expects.
    pub expected_version: i64,
    /// Everything that is wrong; empty when the store is healthy.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty() && self.schema_version == self.expected_version
    }
}

/// What a master-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationReport {
    /// Secrets re-sealed under the new key.
    pub re_encrypted: u64,
}

/// One row of `master_key_check`: key id (hex), sealed check value, state
/// (`current` or `pending`).
pub(crate) type KeyCheckRow = (String, Vec<u8>, String);

const KEY_ROWS: &str = "SELECT key_id, check_value, state FROM master_key_check";
/// PostgreSQL: a secret's writer holds a share lock on the key rows until it
/// commits, so the rotation's final step (which takes them `FOR UPDATE`)
/// waits for every write in flight and every later write sees the new state.
/// SQLite needs no lock: both run under `BEGIN IMMEDIATE`, one at a time.
const KEY_ROWS_FOR_SHARE: &str =
    "SELECT key_id, check_value, state FROM master_key_check FOR SHARE";

/// Whether `key` opens the check value of `row`: only then is a key found in
/// a file trusted, so a stray or foreign key file can never become current.
fn proves(key: &MasterKey, row: &KeyCheckRow) -> bool {
    key.id().to_hex() == row.0
        && Keyring::new(key.clone())
            .open("master_key_check", CHECK_CONTEXT, &row.1)
            .is_ok_and(|plain| plain.expose() == CHECK_PLAINTEXT)
}

pub(crate) fn seal_context(table: &str, fingerprint: &str) -> String {
    format!("{table}:{fingerprint}")
}

impl Store {
    /// The query a secret's writer runs inside its write transaction before
    /// sealing (see [`Store::sealing_keyring`]).
    pub(crate) fn key_rows_sql(&self) -> &'static str {
        match self.pool {
            crate::Pool::Sqlite(_) => KEY_ROWS,
            crate::Pool::Postgres(_) => KEY_ROWS_FOR_SHARE,
        }
    }

    /// Where a rotated key may be found: the data folder's key files (the
    /// rotation stages the new key as `master.key.new`, then renames it to
    /// `master.key`; the old one becomes `master.key.old`) and
    /// `SIEGEL_MASTER_KEY_FILE` for nodes keyed by environment.
    fn key_candidates(&self) -> Vec<std::path::PathBuf> {
        let mut paths: Vec<_> = [STAGED_KEY_FILE, MASTER_KEY_FILE, OLD_KEY_FILE]
            .iter()
            .map(|name| self.key_dir.join(name))
            .collect();
        if let Some(path) = std::env::var_os(MASTER_KEY_FILE_ENV) {
            paths.push(path.into());
        }
        paths
    }

    /// Brings the shared keyring in line with `master_key_check`: loads keys
    /// it names that this node lacks (from [`Store::key_candidates`], each
    /// proven by its check value), and makes the sealing key the *pending*
    /// one when a rotation runs, else the current one. Old keys stay for
    /// reading: a reader may hold a ciphertext fetched before the re-seal.
    /// Returns the keyring as it is afterwards.
    pub(crate) fn learn_keys(&self, rows: &[KeyCheckRow]) -> Keyring {
        let ring = self.keyring();
        let target = rows
            .iter()
            .find(|r| r.2 == "pending")
            .or_else(|| rows.iter().find(|r| r.2 == "current"));
        let missing: Vec<&KeyCheckRow> = rows.iter().filter(|r| !ring.holds_hex(&r.0)).collect();
        let on_target = target.is_none_or(|t| t.0 == ring.current().id().to_hex());
        if missing.is_empty() && on_target {
            return ring;
        }
        let mut found: Vec<MasterKey> = Vec::new();
        if !missing.is_empty() {
            for path in self.key_candidates() {
                match MasterKey::read_file(&path) {
                    Ok(key) => {
                        if !found.iter().any(|k| k.id() == key.id())
                            && missing.iter().any(|r| proves(&key, r))
                        {
                            tracing::info!(key_id = %key.id(), path = %path.display(), "learned a rotated master key");
                            found.push(key);
                        }
                    }
                    // Absent files are normal (no rotation staged); others
                    // are only logged: the caller reports the missing key.
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read a candidate master key file"),
                }
            }
        }
        self.update_keyring(|k| {
            for key in found {
                k.add(key);
            }
            if let Some(key) = target.and_then(|t| k.find_hex(&t.0)).cloned() {
                k.rotate_to(key);
            }
        });
        self.keyring()
    }

    /// The keyring to seal a secret with, given the key rows read (and, on
    /// PostgreSQL, share-locked) in the writer's transaction. Refuses with
    /// [`StoreError::UnknownKeyId`] when this node's sealing key is no longer
    /// recorded (a rotation finished and the new key cannot be found): a
    /// secret under a retired key would be unreadable for every other node.
    /// While a rotation is pending and its key cannot be found, sealing under
    /// the old key is allowed: the rotation re-seals it before it finishes.
    pub(crate) fn sealing_keyring(&self, rows: &[KeyCheckRow]) -> Result<Keyring, StoreError> {
        let ring = self.learn_keys(rows);
        let sealing = ring.current().id().to_hex();
        if rows.is_empty() || rows.iter().any(|r| r.0 == sealing) {
            return Ok(ring);
        }
        let wanted = rows
            .iter()
            .find(|r| r.2 == "current")
            .or_else(|| rows.first())
            .map(|r| r.0.clone())
            .unwrap_or(sealing);
        Err(StoreError::UnknownKeyId(wanted))
    }

    /// Re-reads `master_key_check` and learns a rotated key (see
    /// [`Store::learn_keys`]); returns the id new secrets are now sealed
    /// under. Called by itself when a secret names an unknown key and by
    /// [`Store::check`]; a gateway may also call it on a timer.
    pub async fn refresh_keyring(&self) -> Result<KeyId, StoreError> {
        let rows: Vec<KeyCheckRow> = dispatch!(self, p => {
            sqlx::query_as(KEY_ROWS).fetch_all(p).await?
        });
        Ok(self.learn_keys(&rows).current().id())
    }

    /// Opens a sealed secret; when it names a key this node does not hold
    /// (another node rotated), learns the key once and tries again.
    pub(crate) async fn open_secret(
        &self,
        table: &'static str,
        context: &str,
        sealed: &[u8],
    ) -> Result<SecretBytes, StoreError> {
        match self.keyring().open(table, context, sealed) {
            Err(StoreError::UnknownKeyId(_)) => {
                self.refresh_keyring().await?;
                self.keyring().open(table, context, sealed)
            }
            other => other,
        }
    }

    /// Makes sure this node's master key is the store's. The first node to
    /// start records a check value; every later start must open it. Two
    /// nodes racing on an empty store with different keys: one insert wins
    /// and the other node gets `WrongMasterKey`.
    pub(crate) async fn verify_master_key(&self) -> Result<(), StoreError> {
        let key = self.keyring().current().clone();
        let check = key.seal(CHECK_CONTEXT, CHECK_PLAINTEXT)?;
        let rows: Vec<(String, Vec<u8>, String)> = dispatch!(self, p => {
            sqlx::query(
                "INSERT INTO master_key_check (key_id, check_value, state) \
                 SELECT $1, $2, 'current' \
                 WHERE NOT EXISTS (SELECT 1 FROM master_key_check)",
            )
            .bind(key.id().to_hex())
            .bind(check)
            .execute(p)
            .await
            .map(|_| ())
            .or_else(|e| match &e {
                // Lost the race to another node; its row is read below.
                sqlx::Error::Database(db) if db.is_unique_violation() => Ok(()),
                _ => Err(e),
            })?;
            sqlx::query_as("SELECT key_id, check_value, state FROM master_key_check")
                .fetch_all(p)
                .await?
        });
        let wanted = key.id().to_hex();
        let Some((_, value, state)) = rows.iter().find(|(id, _, _)| *id == wanted) else {
            return Err(StoreError::WrongMasterKey {
                expected: rows
                    .iter()
                    .map(|(id, _, _)| id.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                given: wanted,
            });
        };
        let ring = crate::Keyring::new(key);
        match ring.open("master_key_check", CHECK_CONTEXT, value) {
            Ok(plain) if plain.expose() == CHECK_PLAINTEXT => {}
            _ => {
                return Err(StoreError::WrongMasterKey {
                    expected: format!("{wanted} (but its check value does not open: altered?)"),
                    given: wanted,
                });
            }
        }
        if state != "current" {
            return Err(StoreError::RotationIncomplete(wanted));
        }
        Ok(())
    }

    /// `siegel db check`: schema version, engine integrity check, expected
    /// tables, master key, and secrets under keys other than the current one.
    pub async fn check(&self) -> Result<CheckReport, StoreError> {
        let schema_version = self.schema_version().await?;
        let mut problems = Vec::new();
        match &self.pool {
            crate::Pool::Sqlite(p) => {
                let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
                    .fetch_all(p)
                    .await?;
                problems.extend(rows.into_iter().filter(|r| r != "ok"));
                let fk = sqlx::query("PRAGMA foreign_key_check").fetch_all(p).await?;
                if !fk.is_empty() {
                    problems.push(format!("{} foreign key violations", fk.len()));
                }
                for table in crate::repo::TABLES {
                    let present: bool = sqlx::query_scalar(
                        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1)",
                    )
                    .bind(table)
                    .fetch_one(p)
                    .await?;
                    if !present {
                        problems.push(format!("table {table} is missing"));
                    }
                }
            }
            crate::Pool::Postgres(p) => {
                for table in crate::repo::TABLES {
                    let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                        .bind(table)
                        .fetch_one(p)
                        .await?;
                    if !present {
                        problems.push(format!("table {table} is missing"));
                    }
                }
            }
        }
        if problems.is_empty() {
            // Another node may have rotated since this one last looked.
            self.refresh_keyring().await?;
            let current = self.keyring().current().key_id_bytes().to_vec();
            for (table, _, column) in SECRET_TABLES {
                // Bytes 3..=10 of a sealed value are its key id (1-based
                // `substr` works on BLOB and BYTEA alike): counted in the
                // database, so a large table is not loaded into memory.
                let sql = format!(
                    "SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL \
                     AND substr({column}, 3, 8) <> $1"
                );
                let stale: i64 = dispatch!(self, p => {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .bind(current.clone())
                        .fetch_one(p)
                        .await?
                });
                if stale > 0 {
                    problems.push(format!(
                        "{stale} secrets in {table} are not sealed under the current master key {}",
                        self.master_key_id()
                    ));
                }
            }
        }
        if schema_version != SCHEMA_VERSION {
            problems.push(format!(
                "schema version is {schema_version}, this program expects {SCHEMA_VERSION}"
            ));
        }
        Ok(CheckReport {
            schema_version,
            expected_version: SCHEMA_VERSION,
            problems,
        })
    }

    /// `siegel backup`: an online-consistent copy of the SQLite database
    /// (`VACUUM INTO` reads one snapshot while writers go on). The target must
    /// not exist. PostgreSQL has its own tools (`pg_dump`).
    pub async fn backup_to(&self, target: &Path) -> Result<(), StoreError> {
        let crate::Pool::Sqlite(p) = &self.pool else {
            return Err(StoreError::SqliteOnly("backup"));
        };
        if target.exists() {
            return Err(StoreError::Io {
                path: target.to_owned(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
        }
        let text = target
            .to_str()
            .ok_or_else(|| StoreError::invalid("backup path", "must be UTF-8"))?;
        sqlx::query("VACUUM INTO $1").bind(text).execute(p).await?;
        let io = |source| StoreError::Io {
            path: target.to_owned(),
            source,
        };
        std::fs::File::open(target)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        Ok(())
    }

    /// `siegel master-key rotate`: re-seals every secret under `new`.
    ///
    /// Steps, each safe to interrupt and repeat: (1) record `new` as a
    /// *pending* key; (2) make it this node's current key while the old one
    /// stays in the keyring for reading, so the node keeps serving; (3)
    /// re-seal in batches, each batch one transaction, each row updated only
    /// if it still holds the ciphertext that was read (a concurrent write is
    /// never overwritten); passes repeat until none is left under another key;
    /// (4) in one transaction that excludes secret writers, check that no
    /// secret slipped in under another key (else back to 3), mark `new`
    /// current and forget the old check value. Running nodes follow by
    /// themselves when they can find the new key (see
    /// [`Store::refresh_keyring`] and docs/design/store.md).
    pub async fn rotate_master_key(&self, new: &MasterKey) -> Result<RotationReport, StoreError> {
        let new_id = new.id();
        if new_id == self.master_key_id() {
            return Ok(RotationReport { re_encrypted: 0 });
        }
        let check = new.seal(CHECK_CONTEXT, CHECK_PLAINTEXT)?;
        dispatch!(self, p => {
            sqlx::query(
                "INSERT INTO master_key_check (key_id, check_value, state) VALUES ($1, $2, 'pending') \
                 ON CONFLICT (key_id) DO UPDATE SET check_value = excluded.check_value, state = 'pending'",
            )
            .bind(new_id.to_hex())
            .bind(check)
            .execute(p)
            .await?;
        });
        self.update_keyring(|k| k.rotate_to(new.clone()));

        let mut re_encrypted = 0u64;
        loop {
            loop {
                let mut pass = 0u64;
                for table in SECRET_TABLES {
                    pass += self.rotate_table(table).await?;
                }
                re_encrypted += pass;
                if pass == 0 {
                    break;
                }
            }
            if self.finish_rotation(new_id).await? {
                break;
            }
        }
        self.update_keyring(|k| k.drop_others());
        Ok(RotationReport { re_encrypted })
    }

    /// `siegel master-key rotate` for a node whose key is the key file
    /// `data_dir/master.key`: makes a new key, saves it as `master.key.new`
    /// *before* anything is re-sealed (so a crash never leaves secrets under a
    /// key that exists nowhere), rotates, then keeps the old key as
    /// `master.key.old` (backups made before the rotation need it) and moves
    /// the new one into place. An interrupted run is resumed with the saved
    /// `master.key.new`. Refused when the key comes from `SIEGEL_MASTER_KEY`:
    /// then the operator supplies the new key and calls
    /// [`Store::rotate_master_key`]. Nodes running on the same data folder
    /// need no restart: they find the new key in `master.key.new` (during)
    /// or `master.key` (after).
    pub async fn rotate_key_file(&self, data_dir: &Path) -> Result<RotationReport, StoreError> {
        use crate::crypto::MASTER_KEY_ENV;
        if std::env::var_os(MASTER_KEY_ENV).is_some() {
            return Err(StoreError::MasterKey(format!(
                "the key comes from {MASTER_KEY_ENV}; rotate with an explicit new key"
            )));
        }
        let current = data_dir.join(MASTER_KEY_FILE);
        let staged = data_dir.join(STAGED_KEY_FILE);
        let old = data_dir.join(OLD_KEY_FILE);
        let in_file = MasterKey::read_file(&current)?;
        if in_file.id() != self.master_key_id() {
            return Err(StoreError::MasterKey(format!(
                "{} does not hold this node's key {}",
                current.display(),
                self.master_key_id()
            )));
        }
        let new = MasterKey::load_or_create_file(&staged)?;
        let report = self.rotate_master_key(&new).await?;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StoreError::Io { path, source }
        };
        std::fs::rename(&current, &old).map_err(io(&old))?;
        std::fs::rename(&staged, &current).map_err(io(&current))?;
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(data_dir))?;
        Ok(report)
    }

    /// The rotation's last step: in one transaction that excludes every
    /// secret writer (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: the key rows
    /// `FOR UPDATE`, which writers share-lock), counts secrets not under
    /// `new`; when there are none, marks `new` current and drops the old key's
    /// row. Returns false (nothing changed) when a writer that had not yet
    /// switched to the pending key slipped a secret in after the last pass.
    async fn finish_rotation(&self, new: KeyId) -> Result<bool, StoreError> {
        let is_pg = matches!(self.pool, crate::Pool::Postgres(_));
        let new_bytes = new.to_bytes().to_vec();
        let done = dispatch!(self, p => {
            let mut tx = p.begin_write().await?;
            if is_pg {
                sqlx::query("SELECT key_id FROM master_key_check FOR UPDATE")
                    .fetch_all(&mut *tx)
                    .await?;
            }
            let mut stale = 0i64;
            for (table, _, column) in SECRET_TABLES {
                let sql = format!(
                    "SELECT COUNT(*) FROM {table} WHERE {column} IS NOT NULL \
                     AND substr({column}, 3, 8) <> $1"
                );
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .bind(new_bytes.clone())
                    .fetch_one(&mut *tx)
                    .await?;
                stale += n;
            }
            if stale > 0 {
                tx.rollback().await?;
                false
            } else {
                sqlx::query("DELETE FROM master_key_check WHERE key_id <> $1")
                    .bind(new.to_hex())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE master_key_check SET state = 'current' WHERE key_id = $1")
                    .bind(new.to_hex())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                true
            }
        });
        Ok(done)
    }

    /// One pass over one table; returns how many rows it re-sealed.
    async fn rotate_table(&self, (table, key, column): SecretTable) -> Result<u64, StoreError> {
        let select = format!(
            "SELECT id, {key}, {column} FROM {table} \
             WHERE {column} IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
        );
        let update = format!("UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3");
        let mut after = 0i64;
        let mut done = 0u64;
        loop {
            let ring = self.keyring();
            let current = ring.current().id();
            let batch_len = dispatch!(self, p => {
                let mut tx = p.begin_write().await?;
                let rows = sqlx::query(sqlx::AssertSqlSafe(select.clone()))
                    .bind(after)
                    .bind(ROTATION_BATCH)
                    .fetch_all(&mut *tx)
                    .await?;
                for row in &rows {
                    let id: i64 = row.try_get(0)?;
                    let fingerprint: String = row.try_get(1)?;
                    let sealed: Vec<u8> = row.try_get(2)?;
                    after = id;
                    if sealed_key_id(&sealed) == Some(current) {
                        continue;
                    }
                    let context = seal_context(table, &fingerprint);
                    let plain = ring.open(table, &context, &sealed)?;
                    let resealed = ring.seal(&context, plain.expose())?;
                    let n = sqlx::query(sqlx::AssertSqlSafe(update.clone()))
                        .bind(resealed)
                        .bind(id)
                        .bind(sealed)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    done += n;
                }
                tx.commit().await?;
                rows.len()
            });
            if (batch_len as i64) < ROTATION_BATCH {
                return Ok(done);
            }
        }
    }
}

/// `siegel restore`: replaces the SQLite database at `target` with a backup
/// made by [`Store::backup_to`]. Only while no node runs on `target`. The
/// backup is integrity-checked first; stale `-wal`/`-shm` files of the old
/// database are removed (SQLite would otherwise replay the old WAL onto the
/// restored file); the file is swapped in with a rename.
pub async fn restore_sqlite(backup: &Path, target: &Path) -> Result<(), StoreError> {
    use sqlx::ConnectOptions;
    use std::str::FromStr;
    let url = format!("sqlite://{}", backup.display());
    let mut conn = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .map_err(|e| StoreError::BadUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?
        .read_only(true)
        .connect()
        .await?;
    let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut conn)
        .await?;
    if integrity.iter().any(|r| r != "ok") {
        return Err(StoreError::invalid(
            "backup",
            format!("integrity check failed: {}", integrity.join("; ")),
        ));
    }
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .map_err(|_| StoreError::invalid("backup", "not a Siegel store"))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known: SCHEMA_VERSION,
        });
    }
    sqlx::Connection::close(conn).await?;

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Io { path, source }
    };
    let mut tmp = target.as_os_str().to_owned();
    tmp.push(".restore-tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::copy(backup, &tmp).map_err(io(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = target.as_os_str().to_owned();
        side.push(suffix);
        let side = std::path::PathBuf::from(side);
        match std::fs::remove_file(&side) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&side)(e)),
            _ => {}
        }
    }
    std::fs::rename(&tmp, target).map_err(io(target))?;
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}
