//! `siegel policy explain`: the decision the gateway would take now for a
//! mail, with the store's keys and the configured knobs, sending nothing.
//! It calls the same functions as the pipeline's policy stages
//! ([`siegel_pipeline::policy::explain`]), so what it prints is what happens.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use siegel_config::{Config, NoMethod};
use siegel_pipeline::PolicySettings;
use siegel_pipeline::policy::{self, StoreDirectory};
use siegel_pipeline::siegel_policy::{MethodKind, Outcome, Registry};
use siegel_types::Address;

/// The sender domains for which GINA is configured (default: every internal
/// domain), whether or not this build can run GINA.
pub fn gina_configured(config: &Config) -> Vec<String> {
    config
        .policy
        .gina_sender_domains
        .clone()
        .unwrap_or_else(|| config.domains.internal.clone())
}

/// The policy knobs as the pipeline sees them. GINA counts as enabled only
/// when this build can run it: a configured but missing method must lead to
/// the configured no-method outcome (bounce by default), not to a mail that
/// waits in the queue for a method that will never come.
pub fn settings(config: &Config, registry: &Registry) -> PolicySettings {
    let p = &config.policy;
    let gina_runs = registry.availability(MethodKind::Gina).is_ok();
    PolicySettings {
        rules: p.rules.clone(),
        encrypt_when_key_known: p.encrypt_when_key_known,
        verified_tls_enough: p.verified_tls_enough.clone(),
        gina_sender_domains: if gina_runs {
            gina_configured(config)
        } else {
            Vec::new()
        },
        hold_when_no_method: p.confidential_without_method == NoMethod::Hold,
        internal_domains: config.domains.internal.clone(),
    }
}

/// What `siegel policy explain` was asked.
#[derive(Debug)]
pub struct ExplainArgs {
    pub from: String,
    pub to: Vec<String>,
    pub subject: Option<String>,
    pub headers: Vec<String>,
}

pub fn explain(config: &Config, args: ExplainArgs) -> anyhow::Result<ExitCode> {
    let from =
        Address::parse(&args.from).map_err(|e| anyhow::anyhow!("--from {:?}: {e}", args.from))?;
    let to = args
        .to
        .iter()
        .map(|t| Address::parse(t).map_err(|e| anyhow::anyhow!("--to {t:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!to.is_empty(), "give at least one --to");
    let mut header = format!("From: <{from}>\r\n");
    if let Some(s) = &args.subject {
        header.push_str(&format!("Subject: {s}\r\n"));
    }
    for h in &args.headers {
        anyhow::ensure!(
            h.contains(':') && !h.contains(['\r', '\n']),
            "--header {h:?} is not of the form \"Name: value\""
        );
        header.push_str(h);
        header.push_str("\r\n");
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (x, settings) = runtime.block_on(async {
        let (store, mpki) = crate::pki_cmd::open(config).await?;
        let mpki = std::sync::Arc::new(mpki);
        let dir = config.server.data_dir.join("spool");
        let spool = siegel_spool::Spool::open(&dir)
            .with_context(|| format!("opening the spool {}", dir.display()))?;
        // The same methods as the gateway; `explain` only asks whether they
        // can run, it never makes a copy.
        let gina = crate::gina_cmd::method(config, &store, &spool, None, true)?;
        let pgp = crate::pgp_cmd::keys(config, &store);
        let registry = crate::pki_cmd::registry_for(&mpki, Some(&pgp), Some(&gina));
        let settings = settings(config, &registry);
        // WKD is asked as on the mail path, but nothing found is stored:
        // `explain` must not change the store.
        let directory = wkd_directory(config, Arc::new(StoreDirectory(store)), None)?;
        let x = policy::explain(
            &settings,
            &registry,
            Some(directory.as_ref()),
            Some(&from),
            &to,
            header.as_bytes(),
            now,
        )
        .await
        .context("looking up keys")?;
        anyhow::Ok((x, settings))
    })?;

    let c = &x.classification;
    if c.reasons.is_empty() {
        println!("classification: not confidential");
    } else {
        let reasons: Vec<String> = c.reasons.iter().map(ToString::to_string).collect();
        println!("classification: confidential ({})", reasons.join("; "));
    }
    if let Some(s) = &c.new_subject {
        println!("subject sent:   {s}");
    }
    if !c.strip_headers.is_empty() {
        println!("removed:        {}", c.strip_headers.join(", "));
    }
    for d in &x.decisions {
        println!();
        println!("{}", d.recipient);
        let (what, key) = match &d.outcome {
            Outcome::Method { kind, fingerprint } => {
                let mut w = kind.to_string();
                if d.requires_verified_tls {
                    w.push_str(" (verified TLS required)");
                }
                (w, fingerprint.clone())
            }
            Outcome::Refuse { .. } => ("refused: bounced to the sender".to_owned(), None),
            Outcome::Hold { .. } => ("held in the queue".to_owned(), None),
        };
        let what = if matches!(d.outcome, Outcome::Refuse { .. }) && settings.hold_when_no_method {
            "held in the queue (confidential_without_method = \"hold\")".to_owned()
        } else {
            what
        };
        println!("  decision:   {what}");
        println!("  key:        {}", key.as_deref().unwrap_or("-"));
        println!("  why:        {}", d.why);
        if let Outcome::Refuse { reason_de, .. } = &d.outcome {
            println!("  (deutsch):  {reason_de}");
        }
        for (i, (kind, why)) in d.skipped.iter().enumerate() {
            let label = if i == 0 { "not higher:" } else { "           " };
            println!("  {label} {kind}: {why}");
        }
    }
    println!();
    println!("copies:");
    for (i, g) in x.split.groups.iter().enumerate() {
        let rcpts: Vec<&str> = g.recipients.iter().map(Address::as_str).collect();
        println!(
            "  {}. {}{}{} → {}",
            i + 1,
            g.method,
            g.fingerprint
                .as_deref()
                .map(|f| format!(" ({f})"))
                .unwrap_or_default(),
            if g.requires_verified_tls {
                ", verified TLS required"
            } else {
                ""
            },
            rcpts.join(", ")
        );
    }
    for (what, list) in [("refused", &x.split.refused), ("held", &x.split.held)] {
        if !list.is_empty() {
            let rcpts: Vec<&str> = list.iter().map(|d| d.recipient.as_str()).collect();
            println!("  {what}: {}", rcpts.join(", "));
        }
    }
    println!();
    println!("(nothing was sent)");
    Ok(ExitCode::SUCCESS)
}

/// The key directory with WKD in front of `inner` when `[wkd] enabled`
/// (found keys recorded in `store` if given); `inner` itself otherwise.
pub fn wkd_directory(
    config: &Config,
    inner: Arc<dyn policy::KeyDirectory>,
    store: Option<siegel_store::Store>,
) -> anyhow::Result<Arc<dyn policy::KeyDirectory>> {
    if !config.wkd.enabled {
        return Ok(inner);
    }
    let f = &config.fetch;
    // A WKD answer is a few keys: a megabyte is plenty, whatever `[fetch]
    // max_body` allows for CRLs.
    let fetcher = siegel_fetch::Fetcher::new(siegel_fetch::FetchConfig {
        total_timeout: f.timeout,
        connect_timeout: f.timeout.min(std::time::Duration::from_secs(5)),
        max_body: usize::try_from(f.max_body.min(1 << 20)).unwrap_or(1 << 20),
        allow: f.allow.clone(),
        ..siegel_fetch::FetchConfig::default()
    })
    .context("setting up outbound HTTP for WKD ([fetch])")?;
    let client = siegel_wkd::Client::new(
        fetcher,
        siegel_wkd::CacheSettings {
            positive_ttl: config.wkd.cache_ttl,
            negative_ttl: config.wkd.negative_ttl,
            ..siegel_wkd::CacheSettings::default()
        },
    );
    Ok(Arc::new(siegel_pipeline::WkdDirectory::new(
        inner,
        Arc::new(client),
        store,
        config.domains.internal.clone(),
    )))
}
