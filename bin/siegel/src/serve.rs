//! `siegel serve`: binds every listener first (so a taken port stops the
//! start before anything runs), then starts the pipeline worker, the
//! delivery scheduler, the SMTP listeners and the admin listener.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use siegel_config::Config;
use siegel_smtp_out::{NextHop, TlsPolicy};
use siegel_spool::Spool;
use siegel_types::Counters;

use crate::{auth, config_cmd, logging, tls};

pub fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let config = config_cmd::load(config_path)?;
    logging::init(
        &config.log.level,
        matches!(config.log.format, siegel_config::LogFormat::Json),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let data_dir = &config.server.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating data folder {}", data_dir.display()))?;
    let spool = Spool::open(&data_dir.join("spool")).context("opening the spool")?;
    spool
        .claim()
        .with_context(|| format!("another siegel is already serving {}", data_dir.display()))?;

    let store = crate::db_cmd::open(&config).await?;
    let counters = Arc::new(Counters::default());

    let server_tls = tls::load_or_generate(
        config.tls.cert.as_deref(),
        config.tls.key.as_deref(),
        data_dir,
        &config.smtp.hostname,
    )?;
    let authenticator = auth::ConfigUsers::new(
        config
            .smtp
            .submission
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password_hash.expose().to_owned())),
    )?;

    let filter = if config.filter.clamd.is_some() || config.filter.spamd.is_some() {
        let f = siegel_filter::Filter::from_config(&config.filter)
            .map_err(|e| anyhow::anyhow!("filter.spamd_user: {e}"))?;
        let show = |a: &Option<siegel_config::ScannerAddress>| {
            a.as_ref()
                .map_or_else(|| "off".to_owned(), ToString::to_string)
        };
        println!(
            "siegel: filter: clamd {}, spamd {}",
            show(&config.filter.clamd),
            show(&config.filter.spamd)
        );
        Some(Arc::new(f))
    } else {
        None
    };
    let acceptance = match &filter {
        Some(f) if config.filter.scan_at_smtp => Some(Arc::new(ScanAtSmtp {
            filter: Arc::clone(f),
            spool: spool.clone(),
        })
            as Arc<dyn siegel_smtp_in::AcceptanceCheck>),
        _ => None,
    };
    let smtp_in = Arc::new(siegel_smtp_in::Settings {
        hostname: config.smtp.hostname.clone(),
        listen: config.smtp.listen.clone(),
        submission_listen: config.smtp.submission.listen.clone(),
        trusted_networks: config.smtp.trusted_networks.clone(),
        internal_domains: config.domains.internal.clone(),
        max_message_size: config.smtp.max_message_size,
        max_recipients: config.smtp.max_recipients,
        max_line_length: config.smtp.max_line_length,
        max_content_line_length: siegel_smtp_in::DEFAULT_CONTENT_LINE_LENGTH,
        command_timeout: config.smtp.command_timeout,
        data_timeout: config.smtp.data_timeout,
        max_connections: config.smtp.max_connections,
        max_errors: siegel_smtp_in::DEFAULT_MAX_ERRORS,
        tls: Some(server_tls.config.clone()),
        authenticator: Arc::new(authenticator),
        acceptance,
    });
    let smtp_out = Arc::new(out_settings(&config)?);
    siegel_smtp_out::validate(&smtp_out).context("setting up delivery")?;

    let server = siegel_smtp_in::Server::bind(smtp_in, spool.clone(), counters.clone()).await?;
    let portal = match config.portal.listen {
        Some(addr) => Some(
            siegel_portal::Portal::bind(
                addr,
                Some(crate::gina_cmd::portal_tls(&config)?),
                crate::gina_cmd::portal_settings(&config)?,
                store.clone(),
                spool.clone(),
                crate::gina_cmd::themes(&config)?,
                siegel_portal::system_clock(),
                Some(Arc::new(crate::gina_cmd::Importer)),
            )
            .await?,
        ),
        None => None,
    };
    let admin = match config.admin.listen {
        Some(addr) => Some(siegel_admin::Admin::bind(addr, counters.clone()).await?),
        None => None,
    };

    for (addr, kind) in server.local_addrs() {
        println!("siegel: {} listening on {addr}", kind.name());
    }
    if let Some(addr) = admin.as_ref().and_then(|a| a.local_addr()) {
        println!("siegel: admin listening on http://{addr} (/metrics, /healthz)");
    }
    if let Some(addr) = portal.as_ref().and_then(|p| p.local_addr()) {
        println!(
            "siegel: portal listening on https://{addr} (public URL {})",
            config.portal.public_url
        );
    }
    println!(
        "siegel: tls certificate {}{}",
        server_tls.cert_path.display(),
        if server_tls.generated {
            " (self-signed, generated now)"
        } else {
            ""
        }
    );
    println!("siegel: data folder {}", data_dir.display());
    println!(
        "siegel: store {} (schema version {})",
        store.engine().name(),
        store.schema_version().await?
    );
    println!(
        "siegel: relay: {}",
        siegel_smtp_out::describe_routing(&smtp_out)
    );

    let mut mpki = siegel_pipeline::smime::Mpki::load_or_create(
        store.clone(),
        crate::pki_cmd::settings(&config)?,
    )
    .await
    .context("opening the mPKI CA")?;
    if config.smime.fetch_crls {
        mpki = mpki.with_crl_fetcher(fetcher(&config)?);
    }
    let mpki = Arc::new(mpki);
    println!(
        "siegel: mpki: CA {} (auto-enrolment {})",
        siegel_pipeline::smime::fingerprint(mpki.ca().certificate())?,
        if config.mpki.auto_enroll { "on" } else { "off" }
    );
    let admin = admin.map(|a| a.with_crl(Arc::new(crate::pki_cmd::Crl(Arc::clone(&mpki)))));
    let gina = crate::gina_cmd::method(&config, &store, &spool, Some(Arc::clone(&mpki)), true)?;
    let pgp = crate::pgp_cmd::keys(&config, &store);
    let registry = crate::pki_cmd::registry_for(&mpki, Some(&pgp), Some(&gina));
    let policy_settings = crate::policy_cmd::settings(&config, &registry);
    let gina_wanted = crate::policy_cmd::gina_configured(&config);
    if !gina_wanted.is_empty() && policy_settings.gina_sender_domains.is_empty() {
        // Honest start-up: GINA is configured but this build cannot run it,
        // so confidential mail without a certificate or key takes the
        // configured no-method path instead of waiting for it.
        println!(
            "siegel: policy: GINA is configured for {} but not available in this version: confidential mail \
             without a certificate or key is {} (policy.confidential_without_method)",
            gina_wanted.join(", "),
            if policy_settings.hold_when_no_method {
                "held"
            } else {
                "bounced with a reason"
            }
        );
    }
    let directory = crate::policy_cmd::wkd_directory(
        &config,
        Arc::new(siegel_pipeline::policy::StoreDirectory(store.clone())),
        Some(store.clone()),
    )?;
    let tracking = siegel_store::TrackingWriter::spawn(store.clone());
    let policy_env = Arc::new(siegel_pipeline::PolicyEnv {
        settings: policy_settings,
        registry,
        directory: Some(directory),
        tracker: Some(Arc::new(tracking.clone())),
        smime: Some(mpki),
        pgp: Some(pgp),
        filter,
    });
    let pipeline = Arc::new(siegel_pipeline::Pipeline::standard_with(
        config.smtp.hostname.clone(),
        policy_env,
    ));
    tokio::spawn(siegel_pipeline::run(pipeline, spool.clone()));
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(forward_delivery_events(
        events_rx,
        tracking,
        config.smtp.hostname.clone(),
    ));
    tokio::spawn(siegel_smtp_out::run_with_events(
        smtp_out,
        spool.clone(),
        counters.clone(),
        Some(events_tx),
    ));
    if let Some(admin) = admin {
        tokio::spawn(async move {
            if let Err(e) = admin.run().await {
                tracing::error!(target: "siegel::admin", error = %e, "admin listener stopped");
            }
        });
    }
    if let Some(portal) = portal {
        tokio::spawn(async move {
            if let Err(e) = portal.run().await {
                tracing::error!(target: "siegel::portal", error = %e, "portal listener stopped");
            }
        });
    }
    tokio::spawn(crate::gina_cmd::sweeper(
        store.clone(),
        config.portal.session_idle,
    ));
    let smtp = tokio::spawn(server.run());
    println!("siegel: ready");

    tokio::select! {
        result = smtp => {
            result.context("SMTP listener task")??;
            anyhow::bail!("SMTP listeners stopped");
        }
        () = shutdown_signal() => {
            println!("siegel: stopping");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Stores every delivery result as a tracking record (method = the result,
/// reason = the next hop's answer), so `siegel track` shows it next to the
/// decision. A record that cannot be stored is logged; delivery goes on.
async fn forward_delivery_events(
    mut events: tokio::sync::mpsc::UnboundedReceiver<siegel_smtp_out::DeliveryEvent>,
    writer: siegel_store::TrackingWriter,
    node: String,
) {
    let mut batch = Vec::new();
    while events.recv_many(&mut batch, 512).await > 0 {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let records = batch
            .drain(..)
            .map(|e| {
                let detail = siegel_pipeline::policy::one_line(&e.detail, 4096);
                siegel_store::TrackingEvent {
                    message_id: e.message_id,
                    queue_id: e.queue_id,
                    recipient: e.recipient,
                    method: e.result.to_owned(),
                    key_fingerprint: None,
                    reason: if detail.trim().is_empty() {
                        "-".to_owned()
                    } else {
                        detail
                    },
                    at,
                    node: node.clone(),
                }
            })
            .collect();
        // Delivery must not wait for the audit trail: the writer stores the
        // batch with the next group commit and logs a failure.
        writer.submit(records);
    }
}

/// Ctrl-C or SIGTERM. Every mail acknowledged so far is on disk already, so
/// stopping needs no draining for correctness.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn out_settings(config: &Config) -> anyhow::Result<siegel_smtp_out::Settings> {
    let hop = |key: &str, value: &str| -> anyhow::Result<NextHop> {
        value
            .parse::<NextHop>()
            .map_err(|e| anyhow::anyhow!("routing.{key}: {e}"))
    };
    let routes = config
        .routing
        .routes
        .iter()
        .map(|(domain, target)| Ok((domain.clone(), hop(&format!("routes.{domain}"), target)?)))
        .collect::<anyhow::Result<_>>()?;
    let tls_policy = config
        .tls
        .policy
        .iter()
        .map(|(domain, p)| {
            let p = match p {
                siegel_config::TlsPolicy::Opportunistic => TlsPolicy::Opportunistic,
                siegel_config::TlsPolicy::Required => TlsPolicy::Required,
            };
            (domain.clone(), p)
        })
        .collect();
    Ok(siegel_smtp_out::Settings {
        hostname: config.smtp.hostname.clone(),
        internal_domains: config.domains.internal.clone(),
        inbound_relay: config
            .routing
            .inbound_relay
            .as_deref()
            .map(|v| hop("inbound_relay", v))
            .transpose()?,
        outbound_relay: config
            .routing
            .outbound_relay
            .as_deref()
            .map(|v| hop("outbound_relay", v))
            .transpose()?,
        routes,
        tls_policy,
        tls_ca_files: config.tls.ca_files.clone(),
        retry: config.queue.retry.clone(),
        max_lifetime: config.queue.max_lifetime,
        max_parallel: config.queue.max_parallel_deliveries,
        connect_timeout: std::time::Duration::from_secs(30),
        command_timeout: std::time::Duration::from_secs(300),
        nameservers: config.dns.nameservers.clone(),
    })
}

/// The virus and spam scan while the sending server waits for its answer
/// ([`siegel_filter::at_smtp`]), as smtp-in's acceptance check.
struct ScanAtSmtp {
    filter: Arc<siegel_filter::Filter>,
    spool: siegel_spool::Spool,
}

impl siegel_smtp_in::AcceptanceCheck for ScanAtSmtp {
    fn check<'a>(
        &'a self,
        id: &'a siegel_types::QueueId,
        direction: siegel_types::Direction,
        recipients: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = siegel_smtp_in::Acceptance> + Send + 'a>>
    {
        Box::pin(async move {
            use siegel_filter::at_smtp::{AtSmtp, check};
            match check(&self.filter, &self.spool, id, direction, recipients).await {
                AtSmtp::Accept => siegel_smtp_in::Acceptance::Accept,
                AtSmtp::Refuse { code, status, text } => {
                    siegel_smtp_in::Acceptance::Refuse { code, status, text }
                }
            }
        })
    }
}

/// The client for the gateway's own HTTP(S) requests (`[fetch]`).
pub fn fetcher(config: &siegel_config::Config) -> anyhow::Result<siegel_fetch::Fetcher> {
    let f = &config.fetch;
    siegel_fetch::Fetcher::new(siegel_fetch::FetchConfig {
        total_timeout: f.timeout,
        connect_timeout: f.timeout.min(std::time::Duration::from_secs(5)),
        max_body: usize::try_from(f.max_body).unwrap_or(usize::MAX),
        allow: f.allow.clone(),
        ..siegel_fetch::FetchConfig::default()
    })
    .context("setting up outbound HTTP ([fetch])")
}
