//! How a command fails, and the exit status each failure gives.

use std::process::ExitCode;

use patchd_config::{Diagnostic, Severity};

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

/// `run-now`: a canary wave's gate failed (reboot truth, error budget, alarm, gate URL or
/// gate command), so the task's remaining waves were never sent.
const EXIT_GATE_FAILED: u8 = 6;

/// Why a command failed: a configuration with errors (printed as diagnostics), or anything else.
#[derive(Debug)]
pub(crate) enum Failure {
    InvalidConfig(Vec<Diagnostic>),
    /// A report found what `--fail-on` names; the report itself was printed.
    PolicyViolation(String),
    /// A manual run exceeded its error budget; its summary was printed.
    BudgetExceeded(String),
    /// A sync could not read every instance; its summary was printed.
    SyncIncomplete(String),
    /// A wave's gate failed and halted the rollout; its summary was printed.
    GateFailed(String),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure::Other(error)
    }
}

impl From<patchd_report::ReportError> for Failure {
    fn from(error: patchd_report::ReportError) -> Self {
        Failure::Other(error.into())
    }
}

impl Failure {
    /// Says why on stderr and gives the exit status.
    pub(crate) fn report(self) -> ExitCode {
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
            Failure::GateFailed(why) => {
                eprintln!("patchd: {why}");
                ExitCode::from(EXIT_GATE_FAILED)
            }
            Failure::Other(error) => {
                eprintln!("patchd: error: {error:#}");
                ExitCode::FAILURE
            }
        }
    }
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
}
