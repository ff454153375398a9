//! Run Command's bookkeeping: commands, their per-instance invocations, and how invocation
//! outcomes roll up into the command's status.
//!
//! Status mapping (`Status` / `StatusDetails`), as SSM reports them:
//!
//! | invocation            | Status     | StatusDetails       | counts against MaxErrors |
//! |-----------------------|------------|---------------------|--------------------------|
//! | waiting for a slot    | Pending    | Pending             |                          |
//! | agent unreachable     | Delayed    | Delayed             |                          |
//! | running               | InProgress | InProgress          |                          |
//! | succeeded             | Success    | Success             |                          |
//! | failed                | Failed     | Failed              | yes                      |
//! | not a managed node    | Failed     | Undeliverable       | no                       |
//! | never delivered       | TimedOut   | DeliveryTimedOut    | no                       |
//! | ran past the timeout  | TimedOut   | ExecutionTimedOut   | yes                      |
//! | being cancelled       | Cancelling | Cancelling          |                          |
//! | cancelled             | Cancelled  | Cancelled           |                          |
//! | stopped by MaxErrors  | Cancelled  | Terminated          |                          |

use std::collections::{BTreeMap, HashMap};

use crate::clock::Millis;
use crate::fleet::{Counts, InstallResult, Operation};
use crate::hooks::ScriptOutcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvocationState {
    Pending,
    Delayed,
    InProgress,
    Success,
    Failed,
    Undeliverable,
    DeliveryTimedOut,
    ExecutionTimedOut,
    Cancelling,
    Cancelled,
    Terminated,
}

impl InvocationState {
    pub fn status(self) -> &'static str {
        match self {
            InvocationState::Pending => "Pending",
            InvocationState::Delayed => "Delayed",
            InvocationState::InProgress => "InProgress",
            InvocationState::Success => "Success",
            InvocationState::Failed | InvocationState::Undeliverable => "Failed",
            InvocationState::DeliveryTimedOut | InvocationState::ExecutionTimedOut => "TimedOut",
            InvocationState::Cancelling => "Cancelling",
            InvocationState::Cancelled | InvocationState::Terminated => "Cancelled",
        }
    }

    pub fn status_details(self) -> &'static str {
        match self {
            InvocationState::Pending => "Pending",
            InvocationState::Delayed => "Delayed",
            InvocationState::InProgress => "InProgress",
            InvocationState::Success => "Success",
            InvocationState::Failed => "Failed",
            InvocationState::Undeliverable => "Undeliverable",
            InvocationState::DeliveryTimedOut => "DeliveryTimedOut",
            InvocationState::ExecutionTimedOut => "ExecutionTimedOut",
            InvocationState::Cancelling => "Cancelling",
            InvocationState::Cancelled => "Cancelled",
            InvocationState::Terminated => "Terminated",
        }
    }

    /// `CommandPluginStatus` has no Delayed or Cancelling.
    pub fn plugin_status(self) -> &'static str {
        match self {
            InvocationState::Pending | InvocationState::Delayed => "Pending",
            InvocationState::InProgress | InvocationState::Cancelling => "InProgress",
            other => other.status(),
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            InvocationState::Pending
                | InvocationState::Delayed
                | InvocationState::InProgress
                | InvocationState::Cancelling
        )
    }

    /// Failed and execution timeouts spend the error budget; delivery problems do not.
    pub fn is_error(self) -> bool {
        matches!(self, InvocationState::Failed | InvocationState::ExecutionTimedOut)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CommandState {
    Pending,
    InProgress,
    Cancelling,
    Success,
    Failed,
    Incomplete,
    DeliveryTimedOut,
    Cancelled,
    NoInstancesInTag,
}

impl CommandState {
    pub fn status(self) -> &'static str {
        match self {
            CommandState::Pending => "Pending",
            CommandState::InProgress => "InProgress",
            CommandState::Cancelling => "Cancelling",
            CommandState::Success | CommandState::NoInstancesInTag => "Success",
            CommandState::Failed | CommandState::Incomplete => "Failed",
            CommandState::DeliveryTimedOut => "TimedOut",
            CommandState::Cancelled => "Cancelled",
        }
    }

    pub fn status_details(self) -> &'static str {
        match self {
            CommandState::Pending => "Pending",
            CommandState::InProgress => "InProgress",
            CommandState::Cancelling => "Cancelling",
            CommandState::Success => "Success",
            CommandState::Failed => "Failed",
            CommandState::Incomplete => "Incomplete",
            CommandState::DeliveryTimedOut => "DeliveryTimedOut",
            CommandState::Cancelled => "Cancelled",
            CommandState::NoInstancesInTag => "NoInstancesInTag",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, CommandState::Pending | CommandState::InProgress | CommandState::Cancelling)
    }
}

/// What an invocation found or did, kept for its output and plugin details.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationResult {
    pub counts: Counts,
    pub install: InstallResult,
    pub baseline_id: String,
    pub patch_group: String,
}

/// What a node made of its command's InstallOverrideList when the invocation started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallListOutcome {
    /// The node's catalog entries the list selects (sorted), of `entries` listed.
    Read { selected: Vec<usize>, entries: usize },
    /// Why the node could not use the list: the invocation fails and installs nothing.
    Unusable(String),
}

#[derive(Debug, Clone)]
pub struct Invocation {
    pub instance: u32,
    pub state: InvocationState,
    pub dispatched_ms: Option<Millis>,
    pub start_ms: Option<Millis>,
    pub end_ms: Option<Millis>,
    /// Set when the work is done; the invocation may still wait for a reboot to finish.
    pub result: Option<InvocationResult>,
    /// AWS-RunShellScript's exit status and output, once the script ended.
    pub script: Option<ScriptOutcome>,
    /// AWS-RunPatchBaselineWithHooks's Install steps that started, in order.
    pub steps: Vec<Step>,
    /// The install override list as this node read it, for an Install that names one.
    pub install_list: Option<InstallListOutcome>,
}

impl Invocation {
    pub fn response_code(&self) -> i64 {
        // A hook document's invocation answers with the step that decided it.
        if let (InvocationState::Success | InvocationState::Failed, Some(step)) =
            (self.state, self.steps.last())
        {
            if let Some(code) = step.exit_code {
                return code;
            }
        }
        if let (InvocationState::Success | InvocationState::Failed, Some(script)) = (self.state, &self.script)
        {
            return script.exit_code;
        }
        match self.state {
            InvocationState::Success => 0,
            InvocationState::Failed | InvocationState::ExecutionTimedOut => 1,
            _ => -1,
        }
    }
}

/// A command as the simulator's history shows it (`GET /_sim/commands`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommandView {
    pub command_id: String,
    pub account: String,
    pub region: String,
    /// By the simulated clock.
    pub requested_at: chrono::DateTime<chrono::Utc>,
    pub comment: Option<String>,
    pub document_name: String,
    /// The patching documents' `Operation`: `Scan` or `Install`; empty for AWS-RunShellScript.
    pub operation: String,
    /// The document parameters as sent (each a list of strings, as SSM takes them), without
    /// the document's defaults: e.g. `InstallOverrideList`, `RebootOption`, `commands`.
    pub parameters: BTreeMap<String, Vec<String>>,
    /// The instances it targeted, in invocation order.
    pub instance_ids: Vec<String>,
    /// The CloudWatch alarm that stopped the command, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped_by_alarm: Option<String>,
    /// Each invocation's timeline, in invocation order: what ran when, by the simulator's own
    /// account, so a test can check overlap (a per-tag cap) without trusting the client.
    pub invocations: Vec<InvocationView>,
}

/// One invocation in the command history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InvocationView {
    pub instance_id: String,
    pub status: String,
    /// When it started running on the instance, by the simulated clock.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub ended_at: Option<chrono::DateTime<chrono::Utc>>,
}

#[cfg(test)]
impl CommandRequest {
    /// AWS-RunPatchBaseline's `operation` on no target yet, rebooting if needed, at
    /// `max_concurrency` and `max_errors`: what the unit tests of the command model send.
    pub(crate) fn run_patch_baseline(
        operation: Operation,
        max_concurrency: &str,
        max_errors: &str,
        timeout_seconds: u32,
    ) -> CommandRequest {
        CommandRequest {
            document_name: "AWS-RunPatchBaseline".into(),
            document_version: "$DEFAULT".into(),
            comment: None,
            parameters: BTreeMap::new(),
            instance_ids: vec![],
            targets: vec![],
            max_concurrency: max_concurrency.into(),
            max_errors: max_errors.into(),
            timeout_seconds,
            operation,
            reboot_if_needed: true,
            snapshot_id: None,
            baseline_override: false,
            install_override_list: None,
            shell: None,
            hook_documents: None,
            alarm: None,
            echo: serde_json::Map::new(),
        }
    }
}

/// AWS-RunShellScript's parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellScript {
    pub commands: Vec<String>,
    pub working_directory: String,
    pub execution_timeout_seconds: u32,
}

/// The documents AWS-RunPatchBaselineWithHooks runs around an Install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDocuments {
    pub pre_install: String,
    pub post_install: String,
    pub on_exit: String,
}

/// The hook document that does nothing; it is every hook's default.
pub const NOOP_DOCUMENT: &str = "AWS-Noop";

/// A step of AWS-RunPatchBaselineWithHooks's Install, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    PreInstallHook,
    InstallWithNoReboot,
    PostInstallHook,
    OnExit,
}

impl StepKind {
    pub const ALL: [StepKind; 4] = [
        StepKind::PreInstallHook,
        StepKind::InstallWithNoReboot,
        StepKind::PostInstallHook,
        StepKind::OnExit,
    ];

    /// The plugin name the step is reported under: the simulator's naming.
    pub fn plugin_name(self) -> &'static str {
        match self {
            StepKind::PreInstallHook => "PreInstallHook",
            StepKind::InstallWithNoReboot => "InstallWithNoReboot",
            StepKind::PostInstallHook => "PostInstallHook",
            StepKind::OnExit => "OnExit",
        }
    }

    /// The hook document the step runs; None for the install itself.
    pub fn document(self, documents: &HookDocuments) -> Option<&str> {
        match self {
            StepKind::PreInstallHook => Some(&documents.pre_install),
            StepKind::InstallWithNoReboot => None,
            StepKind::PostInstallHook => Some(&documents.post_install),
            StepKind::OnExit => Some(&documents.on_exit),
        }
    }

    pub fn next(self) -> Option<StepKind> {
        let position = StepKind::ALL.iter().position(|k| *k == self)?;
        StepKind::ALL.get(position + 1).copied()
    }
}

/// One step that started; `exit_code` is set once it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub kind: StepKind,
    pub start_ms: Millis,
    pub end_ms: Option<Millis>,
    pub exit_code: Option<i64>,
    /// A hook's rule output; unused for the install, whose output is its summary.
    pub output: Option<String>,
}

/// SendCommand's `AlarmConfiguration`: SSM takes exactly one alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmGate {
    pub alarm: String,
    pub ignore_poll_alarm_failure: bool,
}

/// What SendCommand asked for, validated.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    pub document_name: String,
    pub document_version: String,
    pub comment: Option<String>,
    pub parameters: BTreeMap<String, Vec<String>>,
    pub instance_ids: Vec<String>,
    pub targets: Vec<(String, Vec<String>)>,
    pub max_concurrency: String,
    pub max_errors: String,
    pub timeout_seconds: u32,
    pub operation: Operation,
    pub reboot_if_needed: bool,
    pub snapshot_id: Option<String>,
    pub baseline_override: bool,
    /// AWS-RunPatchBaseline's InstallOverrideList for an Install (a non-empty URL); a Scan
    /// ignores the parameter.
    pub install_override_list: Option<String>,
    /// Set for AWS-RunShellScript, whose invocations run the script instead of the patch
    /// operation (`operation` and the patching members above are then unused).
    pub shell: Option<ShellScript>,
    /// Set for AWS-RunPatchBaselineWithHooks, whose Install runs these around the patching.
    pub hook_documents: Option<HookDocuments>,
    pub alarm: Option<AlarmGate>,
    /// Echoed verbatim in Command: OutputS3*, ServiceRoleArn, NotificationConfig, CloudWatchOutputConfig.
    pub echo: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Command {
    pub id: String,
    pub requested_ms: Millis,
    pub request: CommandRequest,
    pub concurrency_limit: usize,
    pub error_limit: usize,
    pub invocations: Vec<Invocation>,
    pub by_instance: HashMap<u32, u32>,
    pub state: CommandState,
    pub(crate) next_pending: usize,
    /// Invocations waiting for their agent to come back.
    pub(crate) delayed: Vec<u32>,
    pub(crate) in_progress: usize,
    pub(crate) stopped: bool,
    pub(crate) cancel_requested: bool,
    /// The alarm that was in ALARM when SSM stopped the command.
    pub triggered_alarm: Option<String>,
}

/// "50" or "10%" of `targets`; percentages round up, and a concurrency is at least 1.
pub fn resolve_limit(text: &str, targets: usize, at_least_one: bool) -> usize {
    let value = if let Some(percent) = text.strip_suffix('%') {
        let percent: usize = percent.parse().unwrap_or(0);
        (targets * percent).div_ceil(100)
    } else {
        text.parse().unwrap_or(0)
    };
    if at_least_one {
        value.max(1)
    } else {
        value
    }
}

/// Counters a Command shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandCounts {
    pub target: usize,
    pub completed: usize,
    pub errors: usize,
    pub delivery_timed_out: usize,
}

impl Command {
    pub fn new(id: String, requested_ms: Millis, request: CommandRequest, instances: Vec<u32>) -> Command {
        let targets = instances.len();
        let concurrency_limit = resolve_limit(&request.max_concurrency, targets, true);
        let error_limit = resolve_limit(&request.max_errors, targets, false);
        let by_instance = instances.iter().enumerate().map(|(i, inst)| (*inst, i as u32)).collect();
        let invocations = instances
            .into_iter()
            .map(|instance| Invocation {
                instance,
                state: InvocationState::Pending,
                dispatched_ms: None,
                start_ms: None,
                end_ms: None,
                result: None,
                script: None,
                steps: Vec::new(),
                install_list: None,
            })
            .collect::<Vec<_>>();
        let state =
            if invocations.is_empty() { CommandState::NoInstancesInTag } else { CommandState::Pending };
        Command {
            id,
            requested_ms,
            request,
            concurrency_limit,
            error_limit,
            invocations,
            by_instance,
            state,
            next_pending: 0,
            delayed: Vec::new(),
            in_progress: 0,
            stopped: false,
            cancel_requested: false,
            triggered_alarm: None,
        }
    }

    pub fn counts(&self) -> CommandCounts {
        let mut counts = CommandCounts { target: self.invocations.len(), ..CommandCounts::default() };
        for invocation in &self.invocations {
            if invocation.state.is_terminal() {
                counts.completed += 1;
            }
            if invocation.state.is_error() {
                counts.errors += 1;
            }
            if invocation.state == InvocationState::DeliveryTimedOut {
                counts.delivery_timed_out += 1;
            }
        }
        counts
    }

    pub fn expires_after_ms(&self) -> Millis {
        self.requested_ms + i64::from(self.request.timeout_seconds) * 1000
    }

    /// Recomputes the command's status from its invocations.
    pub fn refresh_state(&mut self) {
        if self.state == CommandState::NoInstancesInTag {
            return;
        }
        let counts = self.counts();
        let any = |wanted: &[InvocationState]| self.invocations.iter().any(|i| wanted.contains(&i.state));
        if counts.completed < counts.target {
            self.state = if any(&[InvocationState::Cancelling]) {
                CommandState::Cancelling
            } else if self.state == CommandState::Pending
                && !any(&[InvocationState::InProgress, InvocationState::Delayed])
                && counts.completed == 0
            {
                CommandState::Pending
            } else {
                CommandState::InProgress
            };
            return;
        }
        let non_success = self
            .invocations
            .iter()
            .filter(|i| !matches!(i.state, InvocationState::Success | InvocationState::Undeliverable))
            .count();
        self.state = if self.stopped || counts.errors > self.error_limit {
            CommandState::Failed
        } else if self.cancel_requested && any(&[InvocationState::Cancelled]) {
            CommandState::Cancelled
        } else if non_success == 0 {
            CommandState::Success
        } else if counts.delivery_timed_out > self.error_limit && counts.errors == 0 {
            CommandState::DeliveryTimedOut
        } else {
            CommandState::Incomplete
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_concurrency: &str, max_errors: &str) -> CommandRequest {
        CommandRequest::run_patch_baseline(Operation::Scan, max_concurrency, max_errors, 3600)
    }

    fn command_with(states: &[InvocationState], max_errors: &str) -> Command {
        let mut command =
            Command::new("c".into(), 0, request("50", max_errors), (0..states.len() as u32).collect());
        for (invocation, state) in command.invocations.iter_mut().zip(states) {
            invocation.state = *state;
        }
        command.state = CommandState::InProgress;
        command.refresh_state();
        command
    }

    #[test]
    fn limits() {
        for (text, targets, at_least_one, expected) in [
            ("50", 10, true, 50),
            ("10%", 25, true, 3),
            ("1%", 10, true, 1),
            ("0", 10, false, 0),
            ("0%", 10, false, 0),
            ("100%", 7, false, 7),
            ("5%", 0, true, 1),
        ] {
            assert_eq!(resolve_limit(text, targets, at_least_one), expected, "{text} of {targets}");
        }
    }

    #[test]
    fn roll_up() {
        use CommandState as C;
        use InvocationState as I;
        for (states, max_errors, expected) in [
            (vec![I::Success, I::Success], "0", C::Success),
            (vec![I::Success, I::Undeliverable], "0", C::Success),
            (vec![I::Success, I::Failed], "0", C::Failed),
            (vec![I::Success, I::Failed], "1", C::Incomplete),
            (vec![I::Success, I::ExecutionTimedOut], "1", C::Incomplete),
            (vec![I::Success, I::DeliveryTimedOut], "0", C::DeliveryTimedOut),
            (vec![I::Success, I::DeliveryTimedOut], "1", C::Incomplete),
            (vec![I::Success, I::InProgress], "0", C::InProgress),
            (vec![I::Cancelling, I::Success], "0", C::Cancelling),
        ] {
            assert_eq!(
                command_with(&states, max_errors).state,
                expected,
                "{states:?} with MaxErrors {max_errors}"
            );
        }
        let mut cancelled = command_with(&[InvocationState::Cancelled, InvocationState::Success], "0");
        cancelled.cancel_requested = true;
        cancelled.refresh_state();
        assert_eq!(cancelled.state, CommandState::Cancelled);
        let empty = Command::new("e".into(), 0, request("50", "0"), vec![]);
        assert_eq!((empty.state.status(), empty.state.status_details()), ("Success", "NoInstancesInTag"));
    }

    #[test]
    fn counters() {
        use InvocationState as I;
        let command = command_with(
            &[I::Success, I::Failed, I::ExecutionTimedOut, I::DeliveryTimedOut, I::Undeliverable, I::Pending],
            "5",
        );
        assert_eq!(
            command.counts(),
            CommandCounts { target: 6, completed: 5, errors: 2, delivery_timed_out: 1 }
        );
        assert_eq!(
            (I::Undeliverable.status(), I::Undeliverable.status_details()),
            ("Failed", "Undeliverable")
        );
        assert_eq!(I::Terminated.status(), "Cancelled");
        assert_eq!(I::Delayed.plugin_status(), "Pending");
    }
}
