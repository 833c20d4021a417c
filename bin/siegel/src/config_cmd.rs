//! `siegel config example|check`, and the one place that loads the
//! configuration for every other command.

use std::path::Path;
use std::process::ExitCode;

use siegel_config::Config;

use crate::cli::ConfigAction;

/// Loads the configuration file, or the embedded defaults without one.
/// Warnings (unknown keys) go to standard error; errors name file and key.
pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else {
        return Ok(Config::defaults());
    };
    let loaded = Config::load(path)?;
    for warning in &loaded.warnings {
        eprintln!("siegel: warning: {warning}");
    }
    Ok(loaded.config)
}

pub fn run(path: Option<&Path>, action: ConfigAction) -> anyhow::Result<ExitCode> {
    match action {
        ConfigAction::Example => {
            print!("{}", Config::example());
            Ok(ExitCode::SUCCESS)
        }
        ConfigAction::Check => {
            let Some(path) = path else {
                println!(
                    "no configuration file given (--config or SIEGEL_CONFIG): the embedded defaults are used, and they are valid"
                );
                return Ok(ExitCode::SUCCESS);
            };
            match Config::load(path) {
                Ok(loaded) => {
                    for warning in &loaded.warnings {
                        println!("warning: {warning}");
                    }
                    println!("{}: ok", path.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
