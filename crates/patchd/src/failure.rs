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
    /// Anything else, and what to do about it: printed as the error, then `patchd: hint: ...`.
    Hinted {
        error: anyhow::Error,
        hint: String,
    },
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
            Failure::Hinted { error, hint } => {
                eprintln!("patchd: error: {}", describe(&error));
                eprintln!("patchd: hint: {hint}");
                ExitCode::FAILURE
            }
            Failure::Other(error) => {
                eprintln!("patchd: error: {}", describe(&error));
                ExitCode::FAILURE
            }
        }
    }

    /// An error with what to do about it.
    pub(crate) fn hinted(error: impl Into<anyhow::Error>, hint: impl Into<String>) -> Failure {
        Failure::Hinted { error: error.into(), hint: hint.into() }
    }
}

/// An error and its causes on one line, each cause once.
///
/// Most error types here say their cause in their own message (`cannot read FILE: CAUSE`) and
/// also return it as their `source()`, so that a log line of the error alone is complete.
/// Printing the chain as anyhow's `{:#}` does would then say every cause twice; a cause whose
/// text the message already holds is left out.
pub(crate) fn describe(error: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

pub(crate) fn print_diagnostics(diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        eprintln!("{diagnostic}");
    }
}

#[cfg(test)]
mod tests {
    use super::describe;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct Embeds {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the configuration cannot be loaded")]
    struct Wraps(#[source] std::io::Error);

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)")
    }

    #[test]
    fn a_cause_the_message_already_holds_is_said_once() {
        let error = anyhow::Error::new(Embeds { path: "/etc/patchd", source: not_found() });
        assert_eq!(describe(&error), "cannot read /etc/patchd: No such file or directory (os error 2)");
        let outer = error.context("starting");
        assert_eq!(
            describe(&outer),
            "starting: cannot read /etc/patchd: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn a_cause_the_message_does_not_hold_is_added() {
        let error = anyhow::Error::new(Wraps(not_found()));
        assert_eq!(
            describe(&error),
            "the configuration cannot be loaded: No such file or directory (os error 2)"
        );
    }
}
