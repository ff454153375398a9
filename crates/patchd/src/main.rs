//! `patchd`: keeps a fleet of EC2 instances patched through SSM Patch Manager, and proves it.

mod advisories;
mod apply;
mod audit_cmd;
mod baseline_cmd;
mod check;
mod cli;
mod db;
mod demo;
mod http;
mod manual;
mod notify;
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

/// `run-now`, `scan`, `install` or `sync`: the compliance sync could not read some instances'
/// results (AWS throttled or failed past every retry). The commands may all have succeeded;
/// the history is not complete until a later sync reads what is in the backlog.
const EXIT_SYNC_INCOMPLETE: u8 = 5;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo tells its story on stdout (blind spots included); log lines would drown it.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "error" } else { "info" };
    init_tracing(cli.global.log_format, default_level);
    let result = match &cli.command {
        Command::Check(args) => check::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Report(args) => runtime().and_then(|rt| rt.block_on(report_cmd::run(&cli.global, args))),
        Command::Advisories(command) => {
            runtime().and_then(|rt| rt.block_on(advisories::run(&cli.global, command)))
        }
        Command::Db(command) => runtime().and_then(|rt| rt.block_on(db::run(&cli.global, command))),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run::run(&cli.global, args))),
        Command::RunNow(args) => runtime().and_then(|rt| rt.block_on(manual::run_now(&cli.global, args))),
        Command::Scan(args) => runtime().and_then(|rt| rt.block_on(manual::scan(&cli.global, args))),
        Command::Install(args) => runtime().and_then(|rt| rt.block_on(manual::install(&cli.global, args))),
        Command::Sync(args) => runtime().and_then(|rt| rt.block_on(manual::sync(&cli.global, args))),
        Command::Apply(args) => runtime().and_then(|rt| rt.block_on(apply::run(&cli.global, args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Audit(args) => runtime().and_then(|rt| rt.block_on(audit_cmd::run(&cli.global, args))),
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
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter)).init();
}

/// Why a command failed: a configuration with errors (printed as diagnostics), or anything else.
#[derive(Debug)]
enum Failure {
    InvalidConfig(Vec<Diagnostic>),
    /// A report found what `--fail-on` names; the report itself was printed.
    PolicyViolation(String),
    /// A manual run exceeded its error budget; its summary was printed.
    BudgetExceeded(String),
    /// A sync could not read every instance; its summary was printed.
    SyncIncomplete(String),
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
            Failure::SyncIncomplete(why) => {
                eprintln!("patchd: {why}");
                ExitCode::from(EXIT_SYNC_INCOMPLETE)
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
/// did themselves. A state directory or SQLite file patchd creates is private to its user:
/// the directory 0700, the database 0600 (SQLite gives its -wal and -shm files the database's
/// mode).
async fn open_store(config: &patchd_config::Config) -> Result<patchd_store::Store, Failure> {
    let url = &config.daemon.database_url;
    if let Some(path) = sqlite_file(url.expose()) {
        let path = std::path::Path::new(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        create_private_file(path)?;
    }
    patchd_store::Store::open(url.expose(), &patchd_store::OpenOptions::default())
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot open the database {url}: {e}")))
}

/// The file an `sqlite://FILE[?options]` URL names; None for memory databases and other URLs.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://")?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot create the directory {}: {e}", dir.display())))
}

/// Creates an empty database file with mode 0600 unless it exists, before SQLite would create
/// it with the umask's mode.
fn create_private_file(path: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            Err(Failure::Other(anyhow::anyhow!("cannot create the database file {}: {e}", path.display())))
        }
    }
}
