//! AWS-RunPatchBaseline through Run Command: send, poll, find again after a crash, cancel.

use std::collections::HashSet;

use aws_sdk_ssm::operation::RequestId;
use aws_sdk_ssm::types::{CommandFilter, CommandFilterKey};
use chrono::{DateTime, SecondsFormat, Utc};
use patchd_config::{InstallHooks, Limit, Operation, RebootOption};
use patchd_model::{CommandStatus, Reported};
use tracing::instrument;
use uuid::Uuid;

use crate::client::AwsClients;
use crate::error::{AwsError, InvalidRequest};
use crate::time::utc;

/// The SSM document patchd runs.
pub const PATCH_DOCUMENT: &str = "AWS-RunPatchBaseline";
/// The same with hook documents around the install, for tasks with `[window.task.hooks]`: one
/// command per batch still, so the batch's one intent, one comment and one lookup keep it
/// from being sent twice, and SSM orders pre-install, install, post-install, reboot and
/// on-exit on each node itself.
pub const PATCH_WITH_HOOKS_DOCUMENT: &str = "AWS-RunPatchBaselineWithHooks";
/// SendCommand and CancelCommand take at most 50 instance ids.
pub const MAX_INSTANCES_PER_COMMAND: usize = 50;
/// SSM's limit on a command's comment.
pub const MAX_COMMENT_CHARS: usize = 100;
/// SendCommand's `TimeoutSeconds` range.
const TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 30..=2_592_000;
/// ListCommands and ListCommandInvocations answer at most 50 rows a page.
const COMMAND_PAGE: i32 = 50;

/// One AWS-RunPatchBaseline command to a batch of instances.
#[derive(Debug, Clone, Copy)]
pub struct PatchCommand<'a> {
    pub operation: Operation,
    pub reboot_option: RebootOption,
    /// One per rollout, so that every node is judged against the same approved patches even
    /// when approvals change while the rollout runs.
    pub snapshot_id: Option<Uuid>,
    /// At most [`MAX_INSTANCES_PER_COMMAND`], each once.
    pub instance_ids: &'a [String],
    /// The run id. SendCommand has no idempotency token: this is how a restarted daemon finds
    /// what it already sent ([`AwsClients::find_commands_by_comment`]). At most
    /// [`MAX_COMMENT_CHARS`] characters.
    pub comment: &'a str,
    /// How long an invocation may wait for its agent before it ends `DeliveryTimedOut`.
    pub timeout_seconds: u32,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    /// A CloudWatch alarm SSM watches while the command runs (`AlarmConfiguration`): when it
    /// is in ALARM, SSM stops the command and reports it in `TriggeredAlarms`. Polling
    /// failures are not ignored, so an alarm SSM cannot read stops the command too.
    pub alarm: Option<&'a str>,
    /// Hook documents around the install: sends [`PATCH_WITH_HOOKS_DOCUMENT`] instead.
    pub hooks: Option<&'a InstallHooks>,
    /// `InstallOverrideList`: the S3 URL of the list of patches to install instead of what
    /// the baseline approves (a promotion). Not with `hooks`: that document has no such
    /// parameter.
    pub install_override_list: Option<&'a str>,
}

impl PatchCommand<'_> {
    /// The document the command runs.
    pub fn document(&self) -> &'static str {
        document_for(self.hooks)
    }

    /// The limits SSM would refuse the command for, checked without calling it.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        check_instance_ids(self.instance_ids)?;
        let chars = self.comment.chars().count();
        if chars > MAX_COMMENT_CHARS {
            return Err(InvalidRequest::CommentTooLong { chars, max: MAX_COMMENT_CHARS });
        }
        if !TIMEOUT_SECONDS.contains(&self.timeout_seconds) {
            return Err(InvalidRequest::TimeoutOutOfRange {
                seconds: self.timeout_seconds,
                min: *TIMEOUT_SECONDS.start(),
                max: *TIMEOUT_SECONDS.end(),
            });
        }
        check_limit("MaxConcurrency", self.max_concurrency, 1)?;
        check_limit("MaxErrors", self.max_errors, 0)?;
        Ok(())
    }
}

fn check_instance_ids(ids: &[String]) -> Result<(), InvalidRequest> {
    if ids.is_empty() {
        return Err(InvalidRequest::NoInstances);
    }
    if ids.len() > MAX_INSTANCES_PER_COMMAND {
        return Err(InvalidRequest::TooManyInstances { count: ids.len(), max: MAX_INSTANCES_PER_COMMAND });
    }
    let mut seen = HashSet::with_capacity(ids.len());
    if let Some(id) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        return Err(InvalidRequest::DuplicateInstance { id: id.clone() });
    }
    Ok(())
}

fn check_limit(parameter: &'static str, limit: Limit, min_count: u32) -> Result<(), InvalidRequest> {
    let ok = match limit {
        Limit::Count(n) => n >= min_count,
        Limit::Percent(p) => (min_count.min(1) as u8..=100).contains(&p),
    };
    if ok {
        Ok(())
    } else {
        Err(InvalidRequest::LimitOutOfRange { parameter, value: limit.to_string() })
    }
}

/// What SendCommand answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCommand {
    pub command_id: String,
    /// AWS's id of the SendCommand request, for the audit log (CloudTrail has it too).
    pub request_id: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    /// Invocations SSM created; managed nodes only.
    pub target_count: u32,
}

/// The finer outcome SSM puts only in the free-text `StatusDetails`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum InvocationOutcome {
    Pending,
    InProgress,
    Delayed,
    Cancelling,
    Success,
    Failed,
    /// The node stopped, lost its agent or was terminated before delivery.
    Undeliverable,
    /// The agent did not pick the command up within TimeoutSeconds.
    DeliveryTimedOut,
    /// The document ran past its execution timeout.
    ExecutionTimedOut,
    Cancelled,
    /// Never started because the command stopped (errors past MaxErrors, or cancelled).
    Terminated,
    InvalidPlatform,
    AccessDenied,
    /// Anything else, verbatim.
    Other(String),
}

impl InvocationOutcome {
    /// Parses `StatusDetails` whatever the spelling: the API sends `DeliveryTimedOut`, the
    /// documentation writes `Delivery Timed Out`, and case is not guaranteed.
    pub fn parse(details: &str) -> InvocationOutcome {
        let key: String =
            details.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect();
        match key.as_str() {
            "pending" => InvocationOutcome::Pending,
            "inprogress" => InvocationOutcome::InProgress,
            "delayed" => InvocationOutcome::Delayed,
            "cancelling" | "canceling" => InvocationOutcome::Cancelling,
            "success" => InvocationOutcome::Success,
            "failed" => InvocationOutcome::Failed,
            "undeliverable" => InvocationOutcome::Undeliverable,
            "deliverytimedout" => InvocationOutcome::DeliveryTimedOut,
            "executiontimedout" => InvocationOutcome::ExecutionTimedOut,
            "cancelled" | "canceled" => InvocationOutcome::Cancelled,
            "terminated" => InvocationOutcome::Terminated,
            "invalidplatform" => InvocationOutcome::InvalidPlatform,
            "accessdenied" => InvocationOutcome::AccessDenied,
            _ => InvocationOutcome::Other(details.trim().to_string()),
        }
    }

    /// Whether SSM counts this outcome against the command's MaxErrors: failures and
    /// execution timeouts do; delivery problems (undeliverable, delivery timeout, invalid
    /// platform, access denied) do not.
    pub fn counts_against_max_errors(&self) -> bool {
        matches!(self, InvocationOutcome::Failed | InvocationOutcome::ExecutionTimedOut)
    }

    /// Whether the invocation is over. [`InvocationOutcome::Other`] is not known to be.
    pub fn is_terminal(&self) -> bool {
        !matches!(
            self,
            InvocationOutcome::Pending
                | InvocationOutcome::InProgress
                | InvocationOutcome::Delayed
                | InvocationOutcome::Cancelling
                | InvocationOutcome::Other(_)
        )
    }
}

/// One node's part of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command_id: String,
    pub instance_id: String,
    pub instance_name: Option<String>,
    pub status: Reported<CommandStatus>,
    /// `StatusDetails` as SSM sent it.
    pub status_details: String,
    pub outcome: InvocationOutcome,
    pub requested_at: Option<DateTime<Utc>>,
    /// When the first plugin started, if one did.
    pub started_at: Option<DateTime<Utc>>,
    /// When the last plugin finished, if all did.
    pub ended_at: Option<DateTime<Utc>>,
    /// The document's steps (plugins) as SSM reports them, in order: with hooks, how each
    /// hook went on the node.
    pub steps: Vec<Step>,
}

/// One step (plugin) of an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub status: String,
    pub response_code: i32,
}

/// Where one invocation stands, for counting. The one classification behind a rollout's error
/// budget and progress and a window run's summary, so they never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    InFlight,
    /// Waiting for an agent that is not connected.
    Delayed,
    Succeeded,
    /// Counts against MaxErrors (failed, or timed out while executing).
    Failed,
    /// Never ran: the node stopped, lost its agent, refused the platform or the permission.
    Undeliverable,
    Cancelled,
}

impl Invocation {
    /// An invocation with what SSM said of it, its times and name unknown. Its outcome comes
    /// from the details, or from the status when SSM leaves the details empty: the one place
    /// either is read.
    pub fn new(
        command_id: &str,
        instance_id: &str,
        status: Reported<CommandStatus>,
        status_details: &str,
    ) -> Invocation {
        let outcome = if status_details.trim().is_empty() {
            InvocationOutcome::parse(status.as_str())
        } else {
            InvocationOutcome::parse(status_details)
        };
        Invocation {
            command_id: command_id.to_string(),
            instance_id: instance_id.to_string(),
            instance_name: None,
            status,
            status_details: status_details.to_string(),
            outcome,
            requested_at: None,
            started_at: None,
            ended_at: None,
            steps: Vec::new(),
        }
    }

    /// Over, by the typed status or, failing that, by the details.
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.status, &self.outcome)
    }

    /// As [`InvocationOutcome::counts_against_max_errors`]; details patchd does not know
    /// count when the status says Failed or TimedOut, since over-counting only stops a
    /// rollout early while under-counting lets it run past its error budget.
    pub fn counts_against_max_errors(&self) -> bool {
        counts_against_max_errors(&self.status, &self.outcome)
    }

    /// See [`Standing`].
    pub fn standing(&self) -> Standing {
        Standing::of(&self.status, &self.outcome)
    }
}

impl Standing {
    /// An invocation's standing from its status and details, as SSM reports them or as the
    /// store recorded them.
    pub fn of(status: &Reported<CommandStatus>, outcome: &InvocationOutcome) -> Standing {
        use InvocationOutcome as O;
        if counts_against_max_errors(status, outcome) {
            return Standing::Failed;
        }
        if !is_terminal(status, outcome) {
            let delayed = *status == CommandStatus::Delayed || *outcome == O::Delayed;
            return if delayed { Standing::Delayed } else { Standing::InFlight };
        }
        match (outcome, status) {
            (O::Success, _) => Standing::Succeeded,
            (O::Undeliverable | O::DeliveryTimedOut | O::InvalidPlatform | O::AccessDenied, _) => {
                Standing::Undeliverable
            }
            (O::Cancelled | O::Terminated, _) => Standing::Cancelled,
            (_, Reported::Known(CommandStatus::Success)) => Standing::Succeeded,
            (_, Reported::Known(CommandStatus::Cancelled)) => Standing::Cancelled,
            // Over, but in a way patchd does not know: not a success, and nothing SSM counts.
            _ => Standing::Undeliverable,
        }
    }
}

fn is_terminal(status: &Reported<CommandStatus>, outcome: &InvocationOutcome) -> bool {
    status.known().is_some_and(CommandStatus::is_terminal) || outcome.is_terminal()
}

fn counts_against_max_errors(status: &Reported<CommandStatus>, outcome: &InvocationOutcome) -> bool {
    match outcome {
        InvocationOutcome::Other(_) => {
            matches!(status.known(), Some(CommandStatus::Failed | CommandStatus::TimedOut))
        }
        known => known.counts_against_max_errors(),
    }
}

/// A command as ListCommands reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSummary {
    pub command_id: String,
    pub document_name: String,
    pub comment: String,
    /// The document's `Operation` parameter, when it is one patchd knows.
    pub operation: Option<Operation>,
    pub instance_ids: Vec<String>,
    pub requested_at: Option<DateTime<Utc>>,
    pub status: Reported<CommandStatus>,
    pub status_details: String,
    pub max_concurrency: Option<String>,
    pub max_errors: Option<String>,
    pub target_count: u32,
    pub completed_count: u32,
    pub error_count: u32,
    pub delivery_timed_out_count: u32,
    /// Alarms of the command's AlarmConfiguration that were in ALARM and stopped it.
    pub triggered_alarms: Vec<String>,
}

/// CancelCommand's acknowledgement; invocations report `Cancelled` later, as they stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelRequested {
    pub request_id: Option<String>,
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

impl AwsClients {
    /// Sends AWS-RunPatchBaseline to `command.instance_ids`. The limits SSM enforces are
    /// checked first ([`PatchCommand::validate`]); a violation is
    /// [`AwsError::Invalid`] and nothing is sent.
    #[instrument(
        skip(self, command),
        fields(
            operation = command.operation.as_ssm(),
            instances = command.instance_ids.len(),
            comment = command.comment,
            command_id = tracing::field::Empty,
        ),
        err(Display)
    )]
    pub async fn send_patch_command(&self, command: &PatchCommand<'_>) -> Result<SentCommand, AwsError> {
        const OPERATION: &str = "SendCommand";
        command.validate().map_err(|problem| AwsError::invalid(OPERATION, problem))?;
        let mut request = self
            .ssm
            .send_command()
            .document_name(command.document())
            .set_instance_ids(Some(command.instance_ids.to_vec()))
            .parameters("Operation", vec![command.operation.as_ssm().to_string()])
            .parameters("RebootOption", vec![command.reboot_option.as_ssm().to_string()])
            .comment(command.comment)
            // validate() bounds it to 2,592,000, well inside i32.
            .timeout_seconds(command.timeout_seconds as i32)
            .max_concurrency(command.max_concurrency.to_string())
            .max_errors(command.max_errors.to_string());
        if let Some(snapshot) = command.snapshot_id {
            request = request.parameters("SnapshotId", vec![snapshot.hyphenated().to_string()]);
        }
        if let Some(url) = command.install_override_list {
            request = request.parameters("InstallOverrideList", vec![url.to_string()]);
        }
        if let Some(hooks) = command.hooks {
            for (parameter, document) in [
                ("PreInstallHookDocName", &hooks.pre_install),
                ("PostInstallHookDocName", &hooks.post_install),
                ("OnExitHookDocName", &hooks.on_exit),
            ] {
                if let Some(document) = document {
                    request = request.parameters(parameter, vec![document.clone()]);
                }
            }
        }
        if let Some(alarm) = command.alarm {
            let alarm = aws_sdk_ssm::types::Alarm::builder().name(alarm).build().map_err(|e| {
                AwsError::invalid(OPERATION, InvalidRequest::Incomplete { detail: format!("alarm: {e}") })
            })?;
            let configuration = aws_sdk_ssm::types::AlarmConfiguration::builder()
                .ignore_poll_alarm_failure(false)
                .alarms(alarm)
                .build()
                .map_err(|e| {
                    AwsError::invalid(OPERATION, InvalidRequest::Incomplete { detail: format!("alarm: {e}") })
                })?;
            request = request.alarm_configuration(configuration);
        }
        let output = request.send().await.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        let request_id = output.request_id().map(str::to_string);
        let sent = output.command();
        let Some(command_id) = sent.and_then(|c| c.command_id()) else {
            return Err(AwsError::Service {
                operation: OPERATION,
                code: "MissingCommandId".into(),
                message: "SendCommand answered without a command id".into(),
                request_id,
            });
        };
        tracing::Span::current().record("command_id", command_id);
        Ok(SentCommand {
            command_id: command_id.to_string(),
            request_id,
            requested_at: sent.and_then(|c| c.requested_date_time()).and_then(utc),
            target_count: sent.map_or(0, |c| count(c.target_count())),
        })
    }

    /// Every invocation of a command, all pages, with plugin times (`Details=true`). This is
    /// the way to poll: one call per 50 nodes, consistent right after SendCommand, unlike
    /// GetCommandInvocation.
    #[instrument(skip(self), err(Display))]
    pub async fn list_invocations(&self, command_id: &str) -> Result<Vec<Invocation>, AwsError> {
        const OPERATION: &str = "ListCommandInvocations";
        let mut pages = self
            .ssm
            .list_command_invocations()
            .command_id(command_id)
            .details(true)
            .into_paginator()
            .page_size(COMMAND_PAGE)
            .send();
        let mut invocations = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
            for row in page.command_invocations() {
                let Some(instance_id) = row.instance_id() else { continue };
                let status = row
                    .status()
                    .map_or(Reported::Known(CommandStatus::Pending), |s| Reported::parse(s.as_str()));
                let plugins = row.command_plugins();
                let started_at =
                    plugins.iter().filter_map(|p| p.response_start_date_time()).filter_map(utc).min();
                let finished: Vec<_> =
                    plugins.iter().map(|p| p.response_finish_date_time().and_then(utc)).collect();
                let ended_at = if finished.is_empty() || finished.iter().any(Option::is_none) {
                    None
                } else {
                    finished.into_iter().flatten().max()
                };
                let steps = plugins
                    .iter()
                    .map(|p| Step {
                        name: p.name().unwrap_or_default().to_string(),
                        status: p.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                        response_code: p.response_code(),
                    })
                    .collect();
                invocations.push(Invocation {
                    steps,
                    instance_name: row.instance_name().filter(|n| !n.is_empty()).map(str::to_string),
                    requested_at: row.requested_date_time().and_then(utc),
                    started_at,
                    ended_at,
                    ..Invocation::new(
                        row.command_id().unwrap_or(command_id),
                        instance_id,
                        status,
                        row.status_details().unwrap_or_default(),
                    )
                });
            }
        }
        tracing::debug!(
            invocations = invocations.len(),
            terminal = invocations.iter().filter(|i| i.is_terminal()).count(),
            "invocations listed"
        );
        Ok(invocations)
    }

    /// AWS-RunPatchBaseline commands requested after `invoked_after` whose comment is exactly
    /// `run_id`, newest first: after a crash, what a run had already sent. ListCommands cannot
    /// filter by comment, so the time and document filters narrow the listing and the
    /// comment is matched here.
    #[instrument(skip(self), err(Display))]
    pub async fn find_commands_by_comment(
        &self,
        run_id: &str,
        invoked_after: DateTime<Utc>,
        document: &str,
    ) -> Result<Vec<CommandSummary>, AwsError> {
        const OPERATION: &str = "ListCommands";
        let after = CommandFilter::builder()
            .key(CommandFilterKey::InvokedAfter)
            .value(invoked_after.to_rfc3339_opts(SecondsFormat::Secs, true))
            .build()
            .expect("key and value are set");
        let document = CommandFilter::builder()
            .key(CommandFilterKey::DocumentName)
            .value(document)
            .build()
            .expect("key and value are set");
        let mut pages = self
            .ssm
            .list_commands()
            .filters(after)
            .filters(document)
            .into_paginator()
            .page_size(COMMAND_PAGE)
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
            found.extend(page.commands().iter().filter(|c| c.comment() == Some(run_id)).map(summary));
        }
        tracing::debug!(found = found.len(), "commands found by comment");
        Ok(found)
    }

    /// The command's current roll-up (ListCommands by id).
    #[instrument(skip(self), err(Display))]
    pub async fn command(&self, command_id: &str) -> Result<CommandSummary, AwsError> {
        const OPERATION: &str = "ListCommands";
        let output = self
            .ssm
            .list_commands()
            .command_id(command_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        let request_id = output.request_id().map(str::to_string);
        output.commands().first().map(summary).ok_or_else(|| AwsError::NotFound {
            operation: OPERATION,
            code: "InvalidCommandId".into(),
            message: format!("no command {command_id}"),
            request_id,
        })
    }

    /// Asks SSM to stop a command on all its nodes (`None`) or on some (at most 50).
    #[instrument(skip(self, instance_ids), fields(instances = instance_ids.map(<[String]>::len)), err(Display))]
    pub async fn cancel_command(
        &self,
        command_id: &str,
        instance_ids: Option<&[String]>,
    ) -> Result<CancelRequested, AwsError> {
        const OPERATION: &str = "CancelCommand";
        if let Some(ids) = instance_ids {
            check_instance_ids(ids).map_err(|problem| AwsError::invalid(OPERATION, problem))?;
        }
        let output = self
            .ssm
            .cancel_command()
            .command_id(command_id)
            .set_instance_ids(instance_ids.map(<[String]>::to_vec))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        Ok(CancelRequested { request_id: output.request_id().map(str::to_string) })
    }
}

/// The document a patch command with these hooks runs.
pub fn document_for(hooks: Option<&InstallHooks>) -> &'static str {
    if hooks.is_some() {
        PATCH_WITH_HOOKS_DOCUMENT
    } else {
        PATCH_DOCUMENT
    }
}

fn summary(command: &aws_sdk_ssm::types::Command) -> CommandSummary {
    let operation =
        command.parameters().and_then(|p| p.get("Operation")).and_then(|v| v.first()).and_then(|v| {
            match v.as_str() {
                "Scan" => Some(Operation::Scan),
                "Install" => Some(Operation::Install),
                _ => None,
            }
        });
    CommandSummary {
        command_id: command.command_id().unwrap_or_default().to_string(),
        document_name: command.document_name().unwrap_or_default().to_string(),
        comment: command.comment().unwrap_or_default().to_string(),
        operation,
        instance_ids: command.instance_ids().to_vec(),
        requested_at: command.requested_date_time().and_then(utc),
        status: command
            .status()
            .map_or(Reported::Known(CommandStatus::Pending), |s| Reported::parse(s.as_str())),
        status_details: command.status_details().unwrap_or_default().to_string(),
        max_concurrency: command.max_concurrency().map(str::to_string),
        max_errors: command.max_errors().map(str::to_string),
        target_count: count(command.target_count()),
        completed_count: count(command.completed_count()),
        error_count: count(command.error_count()),
        delivery_timed_out_count: count(command.delivery_timed_out_count()),
        triggered_alarms: command
            .triggered_alarms()
            .iter()
            .filter(|a| a.state().as_str() == "ALARM")
            .map(|a| a.name().to_string())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_details_parse_whatever_the_spelling() {
        use InvocationOutcome as O;
        for (details, outcome, terminal, counts) in [
            ("Pending", O::Pending, false, false),
            ("InProgress", O::InProgress, false, false),
            ("In Progress", O::InProgress, false, false),
            ("Delayed", O::Delayed, false, false),
            ("Cancelling", O::Cancelling, false, false),
            ("Success", O::Success, true, false),
            ("Failed", O::Failed, true, true),
            ("Undeliverable", O::Undeliverable, true, false),
            ("DeliveryTimedOut", O::DeliveryTimedOut, true, false),
            ("Delivery Timed Out", O::DeliveryTimedOut, true, false),
            ("ExecutionTimedOut", O::ExecutionTimedOut, true, true),
            ("Execution Timed Out", O::ExecutionTimedOut, true, true),
            ("Cancelled", O::Cancelled, true, false),
            ("Canceled", O::Cancelled, true, false),
            ("Terminated", O::Terminated, true, false),
            ("Invalid Platform", O::InvalidPlatform, true, false),
            ("InvalidPlatform", O::InvalidPlatform, true, false),
            ("Access Denied", O::AccessDenied, true, false),
            ("access-denied", O::AccessDenied, true, false),
            (" Rate Exceeded ", O::Other("Rate Exceeded".into()), false, false),
        ] {
            let parsed = InvocationOutcome::parse(details);
            assert_eq!(parsed, outcome, "{details:?}");
            assert_eq!(parsed.is_terminal(), terminal, "{details:?} terminal");
            assert_eq!(parsed.counts_against_max_errors(), counts, "{details:?} counts");
        }
    }

    fn invocation(status: CommandStatus, details: &str) -> Invocation {
        Invocation::new("c", "i-1", Reported::Known(status), details)
    }

    #[test]
    fn unknown_details_fall_back_to_the_status() {
        let failed = invocation(CommandStatus::Failed, "Something New");
        assert!(failed.is_terminal());
        assert!(failed.counts_against_max_errors(), "unknown failures count, to be safe");
        let delivery = invocation(CommandStatus::TimedOut, "DeliveryTimedOut");
        assert!(!delivery.counts_against_max_errors());
        let running = invocation(CommandStatus::InProgress, "Something New");
        assert!(!running.is_terminal());
        assert!(!running.counts_against_max_errors());
    }

    fn command<'a>(instance_ids: &'a [String], comment: &'a str) -> PatchCommand<'a> {
        PatchCommand {
            operation: Operation::Scan,
            reboot_option: RebootOption::NoReboot,
            snapshot_id: None,
            instance_ids,
            comment,
            timeout_seconds: 600,
            max_concurrency: Limit::Percent(10),
            max_errors: Limit::Count(0),
            alarm: None,
            hooks: None,
            install_override_list: None,
        }
    }

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("i-{i:017x}")).collect()
    }

    #[test]
    fn ssm_limits_are_checked_before_sending() {
        assert_eq!(command(&ids(50), &"r".repeat(100)).validate(), Ok(()));
        assert_eq!(command(&[], "r").validate(), Err(InvalidRequest::NoInstances));
        assert_eq!(
            command(&ids(51), "r").validate(),
            Err(InvalidRequest::TooManyInstances { count: 51, max: 50 })
        );
        assert_eq!(
            command(&ids(3), &"é".repeat(101)).validate(),
            Err(InvalidRequest::CommentTooLong { chars: 101, max: 100 }),
            "characters, not bytes"
        );
        let one = ids(1);
        let twice = vec![one[0].clone(), one[0].clone()];
        assert!(matches!(command(&twice, "r").validate(), Err(InvalidRequest::DuplicateInstance { .. })));
        let mut short = command(&one, "r");
        short.timeout_seconds = 29;
        assert!(matches!(short.validate(), Err(InvalidRequest::TimeoutOutOfRange { .. })));
        let mut never = command(&one, "r");
        never.max_concurrency = Limit::Count(0);
        assert!(matches!(
            never.validate(),
            Err(InvalidRequest::LimitOutOfRange { parameter: "MaxConcurrency", .. })
        ));
        never.max_concurrency = Limit::Percent(0);
        assert!(never.validate().is_err());
        let mut strict = command(&one, "r");
        strict.max_errors = Limit::Percent(0);
        assert_eq!(strict.validate(), Ok(()), "an error budget of 0% is valid");
        strict.max_errors = Limit::Percent(101);
        assert!(strict.validate().is_err());
    }
}
