//! `siegel`: the one binary. Wiring only — every behaviour lives in a crate
//! under `crates/`, named after where it sits in the flow of a mail.

mod auth;
mod cli;
mod config_cmd;
mod db_cmd;
mod gina_cmd;
mod logging;
mod pgp_cmd;
mod pki_cmd;
mod policy_cmd;
mod quarantine_cmd;
mod queue_cmd;
mod serve;
mod tls;
mod track_cmd;

use std::process::ExitCode;

use clap::Parser;

fn with_config(
    path: Option<&std::path::Path>,
    f: impl FnOnce(&siegel_config::Config) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    f(&config_cmd::load(path)?)
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Serve => serve::run(cli.config.as_deref()),
        cli::Command::Config { action } => config_cmd::run(cli.config.as_deref(), action),
        cli::Command::Queue { action } => queue_cmd::run(cli.config.as_deref(), action),
        cli::Command::Quarantine { action } => {
            with_config(cli.config.as_deref(), |c| quarantine_cmd::run(c, action))
        }
        cli::Command::PasswordHash => auth::print_hash_from_stdin(),
        cli::Command::Db { action } => {
            with_config(cli.config.as_deref(), |c| db_cmd::db(c, action))
        }
        cli::Command::Backup { out } => {
            with_config(cli.config.as_deref(), |c| db_cmd::backup(c, &out))
        }
        cli::Command::Restore { from } => {
            with_config(cli.config.as_deref(), |c| db_cmd::restore(c, &from))
        }
        cli::Command::MasterKey { action } => {
            with_config(cli.config.as_deref(), |c| db_cmd::master_key(c, action))
        }
        cli::Command::Track { id } => {
            with_config(cli.config.as_deref(), |c| track_cmd::run(c, &id))
        }
        cli::Command::Policy {
            action:
                cli::PolicyAction::Explain {
                    from,
                    to,
                    subject,
                    header,
                },
        } => with_config(cli.config.as_deref(), |c| {
            policy_cmd::explain(
                c,
                policy_cmd::ExplainArgs {
                    from,
                    to,
                    subject,
                    headers: header,
                },
            )
        }),
        cli::Command::Ca { action } => {
            with_config(cli.config.as_deref(), |c| pki_cmd::ca(c, action))
        }
        cli::Command::User { action } => {
            with_config(cli.config.as_deref(), |c| pki_cmd::user(c, action))
        }
        cli::Command::Cert { action } => {
            with_config(cli.config.as_deref(), |c| pki_cmd::cert(c, action))
        }
        cli::Command::DomainCert { action } => {
            with_config(cli.config.as_deref(), |c| pki_cmd::domain_cert(c, action))
        }
        cli::Command::Pgp { action } => {
            with_config(cli.config.as_deref(), |c| pgp_cmd::pgp(c, action))
        }
        cli::Command::DomainKey { action } => {
            with_config(cli.config.as_deref(), |c| pgp_cmd::domain_key(c, action))
        }
        cli::Command::Gina { action } => {
            with_config(cli.config.as_deref(), |c| gina_cmd::run(c, action))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("siegel: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
