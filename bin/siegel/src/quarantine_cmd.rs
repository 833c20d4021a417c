//! `siegel quarantine …`: the filter's quarantine, which is held spool
//! entries with a `quarantine: …` note (see `siegel_filter::quarantine`).
//! Reads the spool directly like `siegel queue`; a release or delete on a
//! running gateway goes through the spool's control requests.

use std::process::ExitCode;

use anyhow::Context;
use siegel_config::Config;
use siegel_filter::quarantine;
use siegel_spool::Spool;

use crate::cli::QuarantineAction;
use crate::queue_cmd::{details, parse_id, summary};

pub fn run(config: &Config, action: QuarantineAction) -> anyhow::Result<ExitCode> {
    let dir = config.server.data_dir.join("spool");
    anyhow::ensure!(
        dir.is_dir(),
        "no spool at {} (has the gateway ever run with this data folder?)",
        dir.display()
    );
    let spool =
        Spool::open(&dir).with_context(|| format!("opening the spool {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match action {
        QuarantineAction::List => {
            let entries = quarantine::list(&spool)?;
            if entries.is_empty() {
                println!("quarantine is empty");
            }
            for entry in &entries {
                let why = entry
                    .state
                    .note
                    .as_deref()
                    .and_then(|n| n.strip_prefix(quarantine::NOTE_PREFIX))
                    .unwrap_or("");
                println!("{} | {why}", summary(entry));
            }
        }
        QuarantineAction::Show { id } => {
            let entry = quarantine::load(&spool, &parse_id(&id)?)?;
            print!("{}", details(&entry));
        }
        QuarantineAction::Release { id } => {
            let id = parse_id(&id)?;
            runtime.block_on(quarantine::release(&spool, &id))?;
            println!("{id}: released");
        }
        QuarantineAction::Delete { id } => {
            let id = parse_id(&id)?;
            runtime.block_on(quarantine::delete(&spool, &id))?;
            println!("{id}: deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
