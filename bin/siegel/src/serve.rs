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
    });
    let smtp_out = Arc::new(out_settings(&config)?);
    siegel_smtp_out::validate(&smtp_out).context("setting up delivery")?;

    let server = siegel_smtp_in::Server::bind(smtp_in, spool.clone(), counters.clone()).await?;
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

    let pipeline = Arc::new(siegel_pipeline::Pipeline::standard(
        config.smtp.hostname.clone(),
    ));
    tokio::spawn(siegel_pipeline::run(pipeline, spool.clone()));
    tokio::spawn(siegel_smtp_out::run(
        smtp_out,
        spool.clone(),
        counters.clone(),
    ));
    if let Some(admin) = admin {
        tokio::spawn(async move {
            if let Err(e) = admin.run().await {
                tracing::error!(target: "siegel::admin", error = %e, "admin listener stopped");
            }
        });
    }
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
