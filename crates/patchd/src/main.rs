//! `patchd`: keeps a fleet of EC2 instances patched through SSM Patch Manager, and proves it.

mod advisories;
mod apply;
mod baseline_cmd;
mod check;
mod cli;
mod db;
mod demo;
mod manual;
mod plan;
mod report;
mod report_cmd;
mod run;

use std::process::ExitCode;

use clap::Parser;
use patchd_config::{Diagnostic, LoadError, Loaded, Severity};

use crate::cli::{Cli, Command, GlobalArgs, LogFormat};

/// Exit status of a configuration that failed validation, distinct from other failures (1)
/// so that CI pipelines can tell "your config is wrong" from "patchd could not run".
const EXIT_INVALID_CONFIG: u8 = 2;

/// `report --fail-on` found breached (or due-soon) findings.
const EXIT_POLICY_VIOLATION: u8 = 3;

/// `run-now`, `scan` or `install`: a task exceeded its error budget (SSM MaxErrors), so the
/// rollout stopped releasing batches.
const EXIT_BUDGET_EXCEEDED: u8 = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its story on stdout (blind spots included); log lines would drown it.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "error" } else { "info" };
    init_tracing(cli.global.log_format, default_level);
    let result = match &cli.command {
        Command::Check(args) => check::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Report(args) => runtime().and_then(|rt| rt.block_on(report_cmd::run(&cli.global, args))),
        Command::Advisories(cli::AdvisoriesCommand::Import { files }) => {
            runtime().and_then(|rt| rt.block_on(db::import_advisories(&cli.global, files)))
        }
        Command::Db(command) => runtime().and_then(|rt| rt.block_on(db::run(&cli.global, command))),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run::run(&cli.global, args))),
        Command::RunNow(args) => runtime().and_then(|rt| rt.block_on(manual::run_now(&cli.global, args))),
        Command::Scan(args) => runtime().and_then(|rt| rt.block_on(manual::scan(&cli.global, args))),
        Command::Install(args) => runtime().and_then(|rt| rt.block_on(manual::install(&cli.global, args))),
        Command::Apply(args) => runtime().and_then(|rt| rt.block_on(apply::run(&cli.global, args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Baseline(cli::BaselineCommand::Preview(args)) => {
            runtime().and_then(|rt| rt.block_on(baseline_cmd::preview(&cli.global, args)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

/// Commands that touch the database or AWS run on a small runtime; `check` and `plan` need none.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

fn init_tracing(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
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
    /// A report found what `--fail-on` names; the report itself was printed.
    PolicyViolation(String),
    /// A manual run exceeded its error budget; its summary was printed.
    BudgetExceeded(String),
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
            Failure::PolicyViolation(why) => {
                eprintln!("patchd: {why}");
                ExitCode::from(EXIT_POLICY_VIOLATION)
            }
            Failure::BudgetExceeded(why) => {
                eprintln!("patchd: {why}");
                ExitCode::from(EXIT_BUDGET_EXCEEDED)
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

/// Opens (and migrates) the configured database, printing nothing: commands report what they
/// did themselves.
async fn open_store(config: &patchd_config::Config) -> Result<patchd_store::Store, Failure> {
    let url = &config.daemon.database_url;
    if let Some(path) = url.expose().strip_prefix("sqlite://").filter(|p| !p.is_empty() && *p != ":memory:") {
        if let Some(dir) = std::path::Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!("cannot create the database directory {}: {e}", dir.display())
            })?;
        }
    }
    patchd_store::Store::open(url.expose(), &patchd_store::OpenOptions::default())
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot open the database {url}: {e}")))
}
