//! The mPKI commands: `siegel ca …`, `siegel user …`, `siegel cert …`,
//! `siegel domain-cert …`. They work on the store directly, so they run
//! whether or not the gateway is running; the gateway sees the result on
//! the next mail (nothing is cached across mails).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use siegel_config::{Config, KeyType, SmimeCipher};
use siegel_pipeline::siegel_policy::Registry;
use siegel_pipeline::smime::{Mpki, MpkiSettings};
use siegel_store::{LicenceState, NewUser, Store};
use siegel_types::Address;

use crate::cli::{CaAction, CertAction, DomainCertAction, UserAction};

/// The mPKI settings from the configuration. The trust bundles are read
/// now: a bundle that does not parse stops the start instead of silently
/// trusting less.
pub fn settings(config: &Config) -> anyhow::Result<MpkiSettings> {
    let mut trust = siegel_crypto::smime::TrustStore::new();
    for f in &config.smime.trust_bundles {
        let pem = std::fs::read(f)
            .with_context(|| format!("reading smime.trust_bundles {}", f.display()))?;
        trust
            .add_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("smime.trust_bundles {}: {e}", f.display()))?;
    }
    let crl_url = match (&config.mpki.crl_url, config.admin.listen) {
        (Some(u), _) => u.clone(),
        (None, Some(addr)) => format!("http://{addr}/crl/ca.crl"),
        (None, None) => format!("http://{}/crl/ca.crl", config.smtp.hostname),
    };
    Ok(MpkiSettings {
        auto_enroll: config.mpki.auto_enroll,
        key: match config.mpki.key_type {
            KeyType::Rsa3072 => siegel_crypto::pki::KeyKind::Rsa3072,
            KeyType::P256 => siegel_crypto::pki::KeyKind::EcP256,
        },
        validity_days: config.mpki.validity_days,
        renew_before_days: config.mpki.renew_before_days,
        crl_url,
        cipher: cipher(config),
        trust,
        internal_domains: config.domains.internal.clone(),
        organization: None,
        onboarding: crate::pgp_cmd::onboarding(config),
    })
}

pub fn cipher(config: &Config) -> siegel_crypto::smime::ContentCipher {
    match config.smime.cipher {
        SmimeCipher::Cbc => siegel_crypto::smime::ContentCipher::Aes256Cbc,
        SmimeCipher::Gcm => siegel_crypto::smime::ContentCipher::Aes256Gcm,
    }
}

/// The registry of a gateway with this mPKI: S/MIME and domain S/MIME,
/// and TLS-only and plain copies signed in the sender's name. Serve and
/// `policy explain` share it, so that an explanation is the decision the
/// gateway would take.
pub fn registry_for(
    mpki: &std::sync::Arc<Mpki>,
    pgp: Option<&std::sync::Arc<siegel_pipeline::pgp::PgpKeys>>,
    gina: Option<&std::sync::Arc<siegel_pipeline::gina::Gina>>,
) -> Registry {
    let mut r = Registry::foundation();
    siegel_pipeline::smime::register_with(&mut r, mpki, pgp);
    if let Some(k) = pgp {
        siegel_pipeline::pgp::register(&mut r, k);
    }
    if let Some(g) = gina {
        siegel_pipeline::gina::register(&mut r, g);
    }
    r
}

/// Opens the store and the mPKI (creating the CA on first use).
pub async fn open(config: &Config) -> anyhow::Result<(Store, Mpki)> {
    let store = crate::db_cmd::open(config).await?;
    let mpki = Mpki::load_or_create(store.clone(), settings(config)?)
        .await
        .context("opening the mPKI CA")?;
    Ok((store, mpki))
}

/// A runtime for one command (the store is async).
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn now() -> i64 {
    siegel_store::unix_now()
}

pub(crate) fn address(text: &str) -> anyhow::Result<Address> {
    Address::parse(text).map_err(|e| anyhow::anyhow!("{text:?} is not a mail address: {e}"))
}

fn pem(der: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(openssl::x509::X509::from_der(der)?.to_pem()?)
}

pub fn ca(config: &Config, action: CaAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match action {
            CaAction::Export => {
                let (_, mpki) = open(config).await?;
                std::io::stdout().write_all(&mpki.ca().certificate_pem()?)?;
            }
            CaAction::Import { cert, key } => {
                let store = crate::db_cmd::open(config).await?;
                let c =
                    std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
                let k =
                    std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
                Mpki::import_ca(&store, &c, &k).await?;
                println!("CA imported; new certificates are issued by it");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn user(config: &Config, action: UserAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        match action {
            UserAction::Add { address: a, name } => {
                let a = address(&a)?;
                let (store, mpki) = open(config).await?;
                if store.users().get(&a).await?.is_none() {
                    store
                        .users()
                        .insert(&NewUser {
                            address: a.clone(),
                            display_name: name.clone(),
                            attributes: serde_json::Map::new(),
                            licence_state: LicenceState::Licensed,
                        })
                        .await?;
                }
                let r = mpki.issue_user(&a, name.as_deref(), now()).await?;
                println!(
                    "{} certificate {} (valid until {})",
                    r.address, r.fingerprint, r.not_after
                );
            }
            UserAction::List => {
                const PAGE: i64 = 500;
                let store = crate::db_cmd::open(config).await?;
                let mut after = None;
                loop {
                    let page = store.users().list(after.as_ref(), PAGE).await?;
                    for u in &page {
                        println!(
                            "{}  {}  {}",
                            u.address,
                            u.licence_state.as_str(),
                            u.display_name.as_deref().unwrap_or("-")
                        );
                    }
                    match page.last() {
                        Some(u) if page.len() as i64 == PAGE => after = Some(u.address.clone()),
                        _ => break,
                    }
                }
            }
            UserAction::ExportP12 {
                address: a,
                out,
                password_file,
            } => {
                let a = address(&a)?;
                let password = read_password(password_file.as_deref())?;
                anyhow::ensure!(!password.is_empty(), "the password must not be empty");
                let (_, mpki) = open(config).await?;
                let der = mpki.p12(&a, &password).await?;
                write_new(&out, &der)?;
                println!("wrote {}", out.display());
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn read_password(file: Option<&Path>) -> anyhow::Result<String> {
    let mut text = String::new();
    match file {
        Some(f) => {
            text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Writes a file that must not exist yet, readable by the owner only: it
/// holds a private key.
fn write_new(path: &PathBuf, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(data)?;
    Ok(())
}

pub fn cert(config: &Config, action: CertAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (_, mpki) = open(config).await?;
        match action {
            CertAction::Export { address: a } => {
                let c = mpki.certificate_of(&address(&a)?).await?;
                std::io::stdout().write_all(&c.to_pem()?)?;
            }
            CertAction::Import { file } => {
                let data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                for r in mpki.import_certificates(&data).await? {
                    println!("{} {} imported", r.address, r.fingerprint);
                }
            }
            CertAction::List => {
                for r in mpki.list().await? {
                    let state = if r.revoked {
                        "revoked".to_owned()
                    } else if let Some(by) = &r.superseded_by {
                        format!("superseded by {by}")
                    } else if r.not_after < now() {
                        "expired".to_owned()
                    } else {
                        "valid".to_owned()
                    };
                    println!(
                        "{}\t{}\t{}\t{}{}",
                        r.address,
                        r.fingerprint,
                        r.source_kind.as_str(),
                        state,
                        if r.has_private_key { "\tkey" } else { "" }
                    );
                }
            }
            CertAction::Revoke { fingerprint } => {
                let r = mpki.revoke(&fingerprint, now()).await?;
                println!("{} {} revoked", r.address, r.fingerprint);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn domain_cert(config: &Config, action: DomainCertAction) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let (_, mpki) = open(config).await?;
        match action {
            DomainCertAction::Import { domain, file } => {
                let data =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let fp = mpki.import_domain_certificate(&domain, &data).await?;
                println!("{domain} {fp} imported");
            }
            DomainCertAction::Export { domain } => {
                let d = siegel_types::normalise_domain(&domain)
                    .ok_or_else(|| anyhow::anyhow!("{domain:?} is not a domain name"))?;
                anyhow::ensure!(
                    config.domains.internal.contains(&d),
                    "{d} is not an internal domain (domains.internal)"
                );
                let c = mpki.own_domain_certificate(&d).await?;
                std::io::stdout().write_all(&pem(&c.to_der()?)?)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Serves the mPKI's CRL on the admin listener.
pub struct Crl(pub Arc<Mpki>);

impl siegel_admin::CrlSource for Crl {
    fn crl(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send + '_>> {
        Box::pin(async move {
            match self.0.crl_der(now()).await {
                Ok(der) => Some(der),
                Err(error) => {
                    tracing::error!(target: "siegel::mpki", %error, "cannot issue the CRL");
                    None
                }
            }
        })
    }
}
