//! The OpenPGP commands: `siegel pgp …` and `siegel domain-key …`. Like
//! the mPKI commands they work on the store directly, so they run whether
//! or not the gateway is running.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use siegel_config::{Config, PgpKeyType};
use siegel_openpgp::KeyAlgorithm;
use siegel_pipeline::pgp::{PgpKeys, PgpSettings};
use siegel_store::Store;

use crate::cli::{DomainKeyAction, PgpAction};
use crate::pki_cmd::{address, now, runtime};

/// The `[openpgp]` settings in the form the mail path needs them.
pub fn settings(config: &Config) -> PgpSettings {
    PgpSettings {
        algorithm: match config.openpgp.key_type {
            PgpKeyType::Cv25519 => KeyAlgorithm::Cv25519,
            PgpKeyType::Rsa3072 => KeyAlgorithm::Rsa3072,
        },
        auto_enroll: config.openpgp.auto_enroll,
        autocrypt: config.openpgp.autocrypt,
        internal_domains: config.domains.internal.clone(),
        onboarding: onboarding(config),
    }
}

/// `[users]` in the form the mail path needs it.
pub fn onboarding(config: &Config) -> siegel_pipeline::onboarding::Onboarding {
    siegel_pipeline::onboarding::Onboarding {
        onboard: config.users.onboard.clone(),
        exclude: config.users.exclude.clone(),
    }
}

/// The OpenPGP keys over `store`.
pub fn keys(config: &Config, store: &Store) -> Arc<PgpKeys> {
    Arc::new(PgpKeys::new(store.clone(), settings(config)))
}

pub fn pgp(config: &Config, action: PgpAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = crate::db_cmd::open(config).await?;
        let keys = keys(config, &store);
        match action {
            PgpAction::Export { address: a } => {
                let armoured = keys.export(&address(&a)?, now()).await?;
                std::io::stdout().write_all(armoured.as_bytes())?;
            }
            PgpAction::Import { file } => {
                let data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let (stored, skipped) = keys.import(&data, now()).await?;
                for r in &stored {
                    println!("{} {} imported", r.address, r.fingerprint);
                }
                for s in &skipped {
                    eprintln!("siegel: skipped {s}");
                }
                if stored.is_empty() {
                    anyhow::bail!("no usable OpenPGP key in {}", file.display());
                }
            }
            PgpAction::List => {
                let now = now();
                for r in keys.list().await? {
                    let unconfirmed = r
                        .source_detail
                        .as_deref()
                        .is_some_and(|d| d.ends_with("-unconfirmed"));
                    let state = if r.revoked {
                        "revoked".to_owned()
                    } else if unconfirmed {
                        format!(
                            "changed key, not confirmed (in use: {})",
                            r.superseded_by.as_deref().unwrap_or("-")
                        )
                    } else if let Some(by) = &r.superseded_by {
                        format!("superseded by {by}")
                    } else if r.not_after < now {
                        "expired".to_owned()
                    } else {
                        "valid".to_owned()
                    };
                    let source = match &r.source_detail {
                        Some(d) => format!("{} ({d})", r.source_kind.as_str()),
                        None => r.source_kind.as_str().to_owned(),
                    };
                    println!(
                        "{}\t{}\t{}\t{}{}",
                        r.address,
                        r.fingerprint,
                        source,
                        state,
                        if r.has_private_key { "\tkey" } else { "" }
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn domain_key(config: &Config, action: DomainKeyAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let store = crate::db_cmd::open(config).await?;
        let keys = keys(config, &store);
        match action {
            DomainKeyAction::Import { domain, file } => {
                let d = siegel_types::normalise_domain(&domain)
                    .ok_or_else(|| anyhow::anyhow!("{domain:?} is not a domain name"))?;
                let data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let fp = keys.import_domain_key(&d, &data, now()).await?;
                println!("{d} {fp} imported");
            }
            DomainKeyAction::Export { domain } => {
                let d = siegel_types::normalise_domain(&domain)
                    .ok_or_else(|| anyhow::anyhow!("{domain:?} is not a domain name"))?;
                anyhow::ensure!(
                    config.domains.internal.contains(&d),
                    "{d} is not an internal domain (domains.internal)"
                );
                let cert = keys.own_domain_key(&d, now()).await?;
                let armoured = PgpKeys::engine(now()).export_public(&cert)?;
                std::io::stdout().write_all(armoured.as_bytes())?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
