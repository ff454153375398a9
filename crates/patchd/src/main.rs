//! `patchd`: keeps a fleet of EC2 instances patched through SSM Patch Manager, and proves it.

mod advisories;
mod check;
mod cli;
mod plan;
mod report;

use std::process::ExitCode;

use clap::Parser;
use patchd_config::{Diagnostic, LoadError, Loaded, Severity};

use crate::cli::{Cli, Command, GlobalArgs, LogFormat};

/// Exit status of a configuration that failed validation, distinct from other failures (1)
/// so that CI pipelines can tell "your config is wrong" from "patchd could not run".
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.log_format);
    let result = match &cli.command {
        Command::Check(args) => check::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Why a command failed: a configuration with errors (printed as diagnostics), or anything else.
#[derive(Debug)]
enum Failure {
    InvalidConfig(Vec<Diagnostic>),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

impl Failure {
    fn report(self) -> ExitCode {
        match self {
            Failure::InvalidConfig(diagnostics) => {
                print_diagnostics(&diagnostics);
                let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
                let warnings = diagnostics.len() - errors;
                eprintln!("patchd: the configuration is invalid: {errors} error(s), {warnings} warning(s)");
                ExitCode::from(EXIT_INVALID_CONFIG)
            }
            Failure::Other(error) => {
                eprintln!("patchd: error: {error:#}");
                ExitCode::FAILURE
            }
        }
    }
}

fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
}

/// Loads the configuration named by the global options and applies their overrides.
fn load_config(global: &GlobalArgs, now: chrono::DateTime<chrono::Utc>) -> Result<Loaded, Failure> {
    let mut loaded = match patchd_config::load(&global.config, now) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid { diagnostics }) => return Err(Failure::InvalidConfig(diagnostics)),
        Err(other) => return Err(Failure::Other(other.into())),
    };
    if let Some(url) = &global.database {
        loaded.config.daemon.database_url = patchd_config::DatabaseUrl::new(url.clone());
    }
    if let Some(url) = &global.endpoint_url {
        loaded.config.aws.endpoint_url = Some(url.clone());
    }
    Ok(loaded)
}
