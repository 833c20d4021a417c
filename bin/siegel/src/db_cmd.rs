//! `siegel db check`, `siegel backup`, `siegel restore`, `siegel master-key
//! rotate`: thin wrappers over the store's maintenance functions.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use siegel_config::Config;
use siegel_store::{MasterKey, Store};

use crate::cli::{DbAction, MasterKeyAction};

/// The environment variable that carries the new key when the current one
/// comes from `SIEGEL_MASTER_KEY` (no key file to rotate).
const NEW_KEY_ENV: &str = "SIEGEL_NEW_MASTER_KEY";

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// Opens the store the configuration names (migrations included).
pub async fn open(config: &Config) -> anyhow::Result<Store> {
    let url = config.database.url.as_deref().unwrap_or("");
    Store::connect(url, &config.server.data_dir)
        .await
        .with_context(|| {
            format!(
                "opening the store ({})",
                if url.is_empty() {
                    "SQLite in the data folder"
                } else {
                    "database.url"
                }
            )
        })
}

pub fn db(config: &Config, action: DbAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match action {
            DbAction::Check => {
                let store = open(config).await?;
                let report = store.check().await?;
                println!("engine:         {}", store.engine().name());
                println!(
                    "schema version: {} (this program expects {})",
                    report.schema_version, report.expected_version
                );
                for problem in &report.problems {
                    println!("problem:        {problem}");
                }
                if report.is_ok() {
                    println!("store ok");
                    Ok(ExitCode::SUCCESS)
                } else {
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    })
}

pub fn backup(config: &Config, out: &Path) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = open(config).await?;
        store
            .backup_to(out)
            .await
            .with_context(|| format!("backing up to {}", out.display()))?;
        println!("backup written to {}", out.display());
        Ok(ExitCode::SUCCESS)
    })
}

pub fn restore(config: &Config, from: &Path) -> anyhow::Result<ExitCode> {
    let spool = siegel_spool::Spool::open(&config.server.data_dir.join("spool"))?;
    anyhow::ensure!(
        !spool.is_served(),
        "the gateway is running on {}: stop it before restoring",
        config.server.data_dir.display()
    );
    let target: PathBuf =
        match config.database.url.as_deref() {
            None | Some("") => config.server.data_dir.join(siegel_store::DEFAULT_DB_FILE),
            Some(url) => PathBuf::from(url.strip_prefix("sqlite://").context(
                "restore works for the SQLite engine only; use pg_restore for PostgreSQL",
            )?),
        };
    runtime()?.block_on(siegel_store::restore_sqlite(from, &target))?;
    println!("restored {} from {}", target.display(), from.display());
    Ok(ExitCode::SUCCESS)
}

pub fn master_key(config: &Config, action: MasterKeyAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match action {
            MasterKeyAction::Rotate => {
                let store = open(config).await?;
                let report = match std::env::var(NEW_KEY_ENV) {
                    Ok(new) => store.rotate_master_key(&MasterKey::from_base64(new.trim())?).await?,
                    Err(_) => store.rotate_key_file(&config.server.data_dir).await.with_context(|| {
                        format!("rotating the key file (when the key comes from SIEGEL_MASTER_KEY, put the new key in {NEW_KEY_ENV})")
                    })?,
                };
                println!("master key rotated: {} secrets re-encrypted", report.re_encrypted);
                if std::env::var_os(NEW_KEY_ENV).is_some() {
                    println!(
                        "running nodes keyed by SIEGEL_MASTER_KEY follow only if they find the new key in SIEGEL_MASTER_KEY_FILE or DATA_DIR/master.key.new; restart the others with the new key"
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}
