//! SSM operations over AWS JSON 1.1: request validation as AWS does it, and responses with the
//! model's member names.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::baseline::{Baseline, PatchFilter, PatchRule, COMPLIANCE_LEVELS};
use crate::catalog::Patch;
use crate::clock::{epoch_seconds, to_datetime, Millis};
use crate::commands::{
    AlarmGate, Command, CommandRequest, HookDocuments, InstallListOutcome, Invocation, InvocationResult,
    InvocationState, ShellScript, StepKind, NOOP_DOCUMENT,
};
use crate::error::ApiError;
use crate::fleet::{Instance, Operation, PatchReport, PatchState};
use crate::paging;
use crate::platform::{baseline_filter_keys, Platform, OPERATING_SYSTEMS};
use crate::request::{
    check_baseline_id, check_instance_id, check_length, check_patch_group, enum_error, is_guid, is_tag_text,
    pattern_error, Body,
};
use crate::world::World;

/// Every SSM operation the simulator answers.
pub const OPERATIONS: [&str; 21] = [
    "SendCommand",
    "ListCommands",
    "ListCommandInvocations",
    "GetCommandInvocation",
    "CancelCommand",
    "DescribeInstanceInformation",
    "DescribeInstancePatchStates",
    "DescribeInstancePatchStatesForPatchGroup",
    "DescribeInstancePatches",
    "DescribeAvailablePatches",
    "CreatePatchBaseline",
    "UpdatePatchBaseline",
    "GetPatchBaseline",
    "DescribePatchBaselines",
    "DeletePatchBaseline",
    "RegisterPatchBaselineForPatchGroup",
    "DeregisterPatchBaselineForPatchGroup",
    "GetPatchBaselineForPatchGroup",
    "DescribePatchGroups",
    "ListTagsForResource",
    "AddTagsToResource",
];

const DOCUMENT: &str = "AWS-RunPatchBaseline";
/// The hook document: scripts run before and after patching.
const SHELL_DOCUMENT: &str = "AWS-RunShellScript";
const SHELL_PLUGIN: &str = "aws:runShellScript";
/// AWS-RunPatchBaseline wrapped in pre-install, post-install and on-exit hook documents.
const HOOKS_DOCUMENT: &str = "AWS-RunPatchBaselineWithHooks";
/// The single step a hook document's Scan reports: scans run no hooks.
const HOOKS_SCAN_PLUGIN: &str = "Scan";
const AGENT_VERSION: &str = "3.3.1142.0";
const MAX_CUSTOM_BASELINES: usize = 50;
const MAX_GROUPS_PER_BASELINE: usize = 25;
const MAX_TAGS_PER_RESOURCE: usize = 50;

fn ts(ms: Millis) -> Value {
    json!(epoch_seconds(ms))
}

fn iso(ms: Millis) -> String {
    to_datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Takes `size` items from `items` (cursor, item); the cursor of the first item left over
/// becomes the next token.
fn page<T>(items: impl Iterator<Item = (u64, T)>, size: usize) -> (Vec<T>, Option<u64>) {
    let mut taken = Vec::with_capacity(size.min(128));
    for (cursor, item) in items {
        if taken.len() == size {
            return (taken, Some(cursor));
        }
        taken.push(item);
    }
    (taken, None)
}

fn with_token(mut response: Value, operation: &str, print: u64, next: Option<u64>) -> Value {
    if let (Some(cursor), Some(fields)) = (next, response.as_object_mut()) {
        fields.insert("NextToken".into(), json!(paging::encode(operation, print, cursor)));
    }
    response
}

fn start_cursor(body: &Body, operation: &str, print: u64, error_code: &str) -> Result<Option<u64>, ApiError> {
    match body.str("NextToken")? {
        None | Some("") => Ok(None),
        Some(token) => paging::decode(token, operation, print, error_code).map(Some),
    }
}

/// A fingerprint of a request without its paging members.
fn request_print(body: &Value) -> u64 {
    let mut canonical = body.clone();
    if let Some(fields) = canonical.as_object_mut() {
        fields.remove("NextToken");
        fields.remove("MaxResults");
    }
    paging::fingerprint(&[&canonical.to_string()])
}

fn check_command_id(id: &str) -> Result<(), ApiError> {
    check_length(id, "CommandId", 36, 36)
}

fn parse_instant(text: &str) -> Option<Millis> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|d| d.timestamp_millis())
        .ok()
        .or_else(|| {
            chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.fZ")
                .ok()
                .map(|d| d.and_utc().timestamp_millis())
        })
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|d| d.and_utc().timestamp_millis())
        })
}

/// ListCommands / ListCommandInvocations filters.
#[derive(Debug, Default)]
struct CommandFilters {
    after: Option<Millis>,
    before: Option<Millis>,
    statuses: Vec<String>,
    stage: Option<bool>,
    document: Option<String>,
}

const COMMAND_FILTER_KEYS: [&str; 5] =
    ["InvokedAfter", "InvokedBefore", "Status", "ExecutionStage", "DocumentName"];
const COMMAND_STATUSES: [&str; 7] =
    ["Pending", "InProgress", "Success", "Cancelled", "Failed", "TimedOut", "Cancelling"];

impl CommandFilters {
    fn parse(body: &Body) -> Result<CommandFilters, ApiError> {
        let mut filters = CommandFilters::default();
        let list = body.objects("Filters", Some(5))?;
        if body.has("Filters") && list.is_empty() {
            return Err(ApiError::constraint(
                "[]",
                "filters",
                "Member must have length greater than or equal to 1",
            ));
        }
        for filter in list {
            let key = filter.required_str("key")?;
            let value = filter.required_str("value")?;
            check_length(value, "value", 1, 128)?;
            match key {
                "InvokedAfter" | "InvokedBefore" => {
                    let instant = parse_instant(value).ok_or_else(|| {
                        ApiError::new(
                            "InvalidFilterValue",
                            format!("{value} is not a valid ISO 8601 timestamp"),
                        )
                    })?;
                    if key == "InvokedAfter" {
                        filters.after = Some(instant);
                    } else {
                        filters.before = Some(instant);
                    }
                }
                "Status" => {
                    if !COMMAND_STATUSES.contains(&value) {
                        return Err(ApiError::new(
                            "InvalidFilterValue",
                            format!(
                                "{value} is not a valid status; use one of {}",
                                COMMAND_STATUSES.join(", ")
                            ),
                        ));
                    }
                    filters.statuses.push(value.to_string());
                }
                "ExecutionStage" => match value {
                    "Executing" => filters.stage = Some(false),
                    "Complete" => filters.stage = Some(true),
                    _ => {
                        return Err(ApiError::new(
                            "InvalidFilterValue",
                            format!("{value} is not a valid execution stage; use Executing or Complete"),
                        ))
                    }
                },
                "DocumentName" => filters.document = Some(value.to_string()),
                other => {
                    if !COMMAND_FILTER_KEYS.contains(&other) {
                        return Err(ApiError::new(
                            "InvalidFilterKey",
                            format!("{other} is not a valid filter key"),
                        ));
                    }
                }
            }
        }
        Ok(filters)
    }

    fn matches(&self, command: &Command, status: &str, terminal: bool) -> bool {
        self.after.is_none_or(|after| command.requested_ms >= after)
            && self.before.is_none_or(|before| command.requested_ms <= before)
            && (self.statuses.is_empty() || self.statuses.iter().any(|s| s == status))
            && self.stage.is_none_or(|complete| complete == terminal)
            && self.document.as_deref().is_none_or(|name| name == command.request.document_name)
    }
}

impl World {
    /// Answers one SSM operation. The caller has counted the call and applied faults.
    pub(crate) fn ssm(&mut self, operation: &str, body: &Value) -> Result<String, ApiError> {
        let fields = Body::new(body)?;
        if operation == "DescribeInstancePatches" {
            return self.describe_instance_patches(&fields, body);
        }
        let value = match operation {
            "SendCommand" => self.send_command(&fields),
            "ListCommands" => self.list_commands(&fields, body),
            "ListCommandInvocations" => self.list_command_invocations(&fields, body),
            "GetCommandInvocation" => self.get_command_invocation(&fields),
            "CancelCommand" => self.cancel_command(&fields),
            "DescribeInstanceInformation" => self.describe_instance_information(&fields, body),
            "DescribeInstancePatchStates" => self.describe_instance_patch_states(&fields, body),
            "DescribeInstancePatchStatesForPatchGroup" => self.describe_patch_states_for_group(&fields, body),
            "DescribeAvailablePatches" => self.describe_available_patches(&fields, body),
            "CreatePatchBaseline" => self.create_patch_baseline(&fields, body),
            "UpdatePatchBaseline" => self.update_patch_baseline(&fields),
            "GetPatchBaseline" => self.get_patch_baseline(&fields),
            "DescribePatchBaselines" => self.describe_patch_baselines(&fields, body),
            "DeletePatchBaseline" => self.delete_patch_baseline(&fields),
            "RegisterPatchBaselineForPatchGroup" => self.register_patch_group(&fields),
            "DeregisterPatchBaselineForPatchGroup" => self.deregister_patch_group(&fields),
            "GetPatchBaselineForPatchGroup" => self.get_baseline_for_patch_group(&fields),
            "DescribePatchGroups" => self.describe_patch_groups(&fields, body),
            "ListTagsForResource" => self.list_tags(&fields),
            "AddTagsToResource" => self.add_tags(&fields),
            other => Err(ApiError::new("UnknownOperationException", format!("unknown operation {other}"))),
        }?;
        Ok(value.to_string())
    }

    // ----- Run Command -----

    fn send_command(&mut self, body: &Body) -> Result<Value, ApiError> {
        let document = body.required_str("DocumentName")?;
        let valid_name = (3..=128).contains(&document.len())
            && document.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c));
        if !valid_name {
            return Err(pattern_error(document, "DocumentName", r"^[a-zA-Z0-9_\-.:/]{3,128}$"));
        }
        let short_name = document.rsplit("document/").next().unwrap_or(document);
        let shell = short_name == SHELL_DOCUMENT;
        let with_hooks = short_name == HOOKS_DOCUMENT;
        if short_name != DOCUMENT && !shell && !with_hooks {
            return Err(ApiError::new(
                "InvalidDocument",
                format!("Document with name {document} does not exist."),
            ));
        }
        let document_version = body.str("DocumentVersion")?.unwrap_or("$DEFAULT");
        if !matches!(document_version, "$DEFAULT" | "$LATEST" | "1") {
            return Err(ApiError::new(
                "InvalidDocumentVersion",
                format!("Document {short_name} has no version {document_version}; it has version 1"),
            ));
        }
        let instance_ids = body.strings("InstanceIds", Some(50))?.unwrap_or_default();
        for id in &instance_ids {
            check_instance_id(id, "InstanceIds")?;
        }
        let targets = parse_targets(body)?;
        if !instance_ids.is_empty() && !targets.is_empty() {
            return Err(ApiError::validation("Specify either InstanceIds or Targets, not both."));
        }
        if instance_ids.is_empty() && targets.is_empty() {
            return Err(ApiError::validation("Either InstanceIds or Targets must be specified."));
        }
        let timeout_seconds = match body.int("TimeoutSeconds")? {
            None => 3600,
            Some(t) if !(30..=2_592_000).contains(&t) => {
                let bound = if t < 30 {
                    "Member must have value greater than or equal to 30"
                } else {
                    "Member must have value less than or equal to 2592000"
                };
                return Err(ApiError::constraint(t, "timeoutSeconds", bound));
            }
            Some(t) => t as u32,
        };
        let comment = body.str("Comment")?.map(str::to_string);
        if let Some(comment) = &comment {
            check_length(comment, "Comment", 0, 100)?;
        }
        let max_concurrency = body.str("MaxConcurrency")?.unwrap_or("50").to_string();
        if !is_max_concurrency(&max_concurrency) {
            return Err(pattern_error(
                &max_concurrency,
                "MaxConcurrency",
                r"^([1-9][0-9]*|[1-9][0-9]%|[1-9]%|100%)$",
            ));
        }
        let max_errors = body.str("MaxErrors")?.unwrap_or("0").to_string();
        if !is_max_errors(&max_errors) {
            return Err(pattern_error(
                &max_errors,
                "MaxErrors",
                r"^([1-9][0-9]*|[0]|[1-9][0-9]%|[0-9]%|100%)$",
            ));
        }
        let parameters = parse_parameters(body, short_name)?;
        let shell = if shell { Some(shell_script(&parameters)?) } else { None };
        let hook_documents = if with_hooks { Some(hook_documents(&parameters)?) } else { None };
        let alarm = parse_alarm_configuration(body)?;
        let operation = match parameters.get("Operation").and_then(|v| v.first()).map(String::as_str) {
            Some("Scan") => Operation::Scan,
            Some("Install") => Operation::Install,
            Some(other) => {
                return Err(ApiError::new(
                    "InvalidParameters",
                    format!("Parameter \"Operation\" has value \"{other}\" not in {{Scan, Install}}."),
                ))
            }
            None if shell.is_some() => Operation::Scan,
            None => {
                return Err(ApiError::new(
                    "InvalidParameters",
                    "Parameter \"Operation\" is required but not provided.",
                ))
            }
        };
        let reboot_if_needed =
            match parameters.get("RebootOption").and_then(|v| v.first()).map(String::as_str) {
                None | Some("RebootIfNeeded") => true,
                Some("NoReboot") => false,
                Some(other) => {
                    return Err(ApiError::new(
                        "InvalidParameters",
                        format!(
                    "Parameter \"RebootOption\" has value \"{other}\" not in {{RebootIfNeeded, NoReboot}}."
                ),
                    ))
                }
            };
        let snapshot_id = match parameters.get("SnapshotId").and_then(|v| v.first()) {
            None => None,
            Some(s) if s.is_empty() => None,
            Some(s) if is_guid(s) => Some(s.trim_matches(|c| c == '{' || c == '}').to_string()),
            Some(s) => {
                return Err(ApiError::new(
                    "InvalidParameters",
                    format!("Parameter \"SnapshotId\" value \"{s}\" does not match the GUID pattern."),
                ))
            }
        };
        for key in ["InstallOverrideList", "BaselineOverride"] {
            if let Some(value) = parameters.get(key).and_then(|v| v.first()) {
                let valid = value.is_empty()
                    || value.starts_with("https://")
                    || (value.starts_with("s3://") && value.len() > 5 && value[5..].contains('/'));
                if !valid {
                    return Err(ApiError::new(
                        "InvalidParameters",
                        format!("Parameter \"{key}\" value \"{value}\" must be an https:// or s3:// URL."),
                    ));
                }
            }
        }
        let baseline_override =
            parameters.get("BaselineOverride").and_then(|v| v.first()).is_some_and(|v| !v.is_empty());
        // Read by each node when its Install runs; a Scan ignores it, as AWS-RunPatchBaseline does.
        let install_override_list = parameters
            .get("InstallOverrideList")
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty() && operation == Operation::Install && shell.is_none())
            .cloned();

        let instances = if !instance_ids.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let mut resolved = Vec::with_capacity(instance_ids.len());
            let mut invalid = Vec::new();
            for id in &instance_ids {
                if !seen.insert(*id) {
                    return Err(ApiError::new(
                        "DuplicateInstanceId",
                        format!("Instance Id {id} is duplicated."),
                    ));
                }
                match self.instance_position(id) {
                    Some(index) if self.instances[index].is_managed() => resolved.push(index as u32),
                    _ => invalid.push(*id),
                }
            }
            if !invalid.is_empty() {
                return Err(ApiError::new(
                    "InvalidInstanceId",
                    format!(
                        "Instances [[{}]] not in a valid state for account {}",
                        invalid.join(", "),
                        self.account_id
                    ),
                ));
            }
            resolved
        } else {
            self.resolve_targets(&targets)?
        };

        let mut echo = Map::new();
        for key in [
            "OutputS3Region",
            "OutputS3BucketName",
            "OutputS3KeyPrefix",
            "ServiceRoleArn",
            "NotificationConfig",
            "CloudWatchOutputConfig",
        ] {
            if let Some(value) = body.raw(key) {
                echo.insert(key.to_string(), value.clone());
            }
        }
        let request = CommandRequest {
            document_name: document.to_string(),
            document_version: document_version.to_string(),
            comment,
            parameters,
            instance_ids: instance_ids.iter().map(|s| s.to_string()).collect(),
            targets,
            max_concurrency,
            max_errors,
            timeout_seconds,
            operation,
            reboot_if_needed,
            snapshot_id,
            baseline_override,
            install_override_list,
            shell,
            hook_documents,
            alarm,
            echo,
        };
        let index = self.create_command(request, instances);
        Ok(json!({ "Command": self.command_json(&self.commands[index]) }))
    }

    fn resolve_targets(&self, targets: &[(String, Vec<String>)]) -> Result<Vec<u32>, ApiError> {
        for (key, _) in targets {
            let known = key == "InstanceIds" || key == "tag-key" || key.starts_with("tag:");
            if !known {
                return Err(ApiError::new(
                    "InvalidParameters",
                    format!("Target key {key} is not supported; use InstanceIds, tag:<key> or tag-key"),
                ));
            }
        }
        let selected = self
            .instances
            .iter()
            .enumerate()
            .filter(|(_, instance)| instance.is_managed())
            .filter(|(_, instance)| targets.iter().all(|(key, values)| target_matches(instance, key, values)))
            .map(|(index, _)| index as u32)
            .collect();
        Ok(selected)
    }

    fn command_json(&self, command: &Command) -> Value {
        let counts = command.counts();
        let request = &command.request;
        let echo = |key: &str| request.echo.get(key).cloned();
        let mut value = json!({
            "CommandId": command.id,
            "DocumentName": request.document_name,
            "DocumentVersion": request.document_version,
            "Comment": request.comment.clone().unwrap_or_default(),
            "ExpiresAfter": ts(command.expires_after_ms()),
            "Parameters": request.parameters,
            "InstanceIds": request.instance_ids,
            "Targets": request.targets.iter().map(|(k, v)| json!({"Key": k, "Values": v})).collect::<Vec<_>>(),
            "RequestedDateTime": ts(command.requested_ms),
            "Status": command.state.status(),
            "StatusDetails": command.state.status_details(),
            "OutputS3Region": echo("OutputS3Region").unwrap_or_else(|| json!(self.region)),
            "OutputS3BucketName": echo("OutputS3BucketName").unwrap_or_else(|| json!("")),
            "OutputS3KeyPrefix": echo("OutputS3KeyPrefix").unwrap_or_else(|| json!("")),
            "MaxConcurrency": request.max_concurrency,
            "MaxErrors": request.max_errors,
            "TargetCount": counts.target,
            "CompletedCount": counts.completed,
            "ErrorCount": counts.errors,
            "DeliveryTimedOutCount": counts.delivery_timed_out,
            "ServiceRole": echo("ServiceRoleArn").unwrap_or_else(|| json!("")),
            "NotificationConfig": echo("NotificationConfig")
                .unwrap_or_else(|| json!({"NotificationArn": "", "NotificationEvents": []})),
            "CloudWatchOutputConfig": echo("CloudWatchOutputConfig")
                .unwrap_or_else(|| json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false})),
            "TimeoutSeconds": request.timeout_seconds,
        });
        if let (Some(gate), Some(fields)) = (&request.alarm, value.as_object_mut()) {
            fields.insert(
                "AlarmConfiguration".into(),
                json!({"IgnorePollAlarmFailure": gate.ignore_poll_alarm_failure, "Alarms": [{"Name": gate.alarm}]}),
            );
            if let Some(alarm) = &command.triggered_alarm {
                fields.insert("TriggeredAlarms".into(), json!([{"Name": alarm, "State": "ALARM"}]));
            }
        }
        value
    }

    /// The plugin an invocation runs: the document's single step.
    fn plugin_name(command: &Command, instance: &Instance) -> &'static str {
        if command.request.shell.is_some() {
            SHELL_PLUGIN
        } else {
            instance.platform.plugin_name()
        }
    }

    fn command_by_id(&self, id: &str) -> Result<usize, ApiError> {
        check_command_id(id)?;
        self.command_index.get(id).copied().ok_or_else(|| ApiError::new("InvalidCommandId", ""))
    }

    fn list_commands(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let size = body.page_size(1, 50, 50)?;
        let print = request_print(raw);
        let upper = start_cursor(body, "ListCommands", print, "InvalidNextToken")?;
        let only = match body.str("CommandId")? {
            Some(id) => Some(self.command_by_id(id)?),
            None => None,
        };
        let instance = match body.str("InstanceId")? {
            Some(id) => {
                check_instance_id(id, "InstanceId")?;
                Some(self.instance_position(id).map(|i| i as u32))
            }
            None => None,
        };
        let filters = CommandFilters::parse(body)?;
        let upper = upper.map_or(self.commands.len(), |u| (u as usize).min(self.commands.len()));
        let items = (0..upper).rev().filter_map(|index| {
            let command = &self.commands[index];
            let selected = only.is_none_or(|o| o == index)
                && instance.is_none_or(|i| i.is_some_and(|i| command.by_instance.contains_key(&i)))
                && filters.matches(command, command.state.status(), command.state.is_terminal());
            selected.then_some((index as u64 + 1, index))
        });
        let (indices, next) = page(items, size);
        let commands: Vec<Value> =
            indices.into_iter().map(|i| self.command_json(&self.commands[i])).collect();
        Ok(with_token(json!({ "Commands": commands }), "ListCommands", print, next))
    }

    fn list_command_invocations(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let size = body.page_size(1, 50, 50)?;
        let print = request_print(raw);
        let start = start_cursor(body, "ListCommandInvocations", print, "InvalidNextToken")?;
        let only = match body.str("CommandId")? {
            Some(id) => Some(self.command_by_id(id)?),
            None => None,
        };
        let instance = match body.str("InstanceId")? {
            Some(id) => {
                check_instance_id(id, "InstanceId")?;
                Some(self.instance_position(id).map(|i| i as u32))
            }
            None => None,
        };
        let details = body.bool("Details")?.unwrap_or(false);
        let filters = CommandFilters::parse(body)?;
        // Cursor: (command index + 1) << 24 | invocation index, walking commands newest first.
        let (first_command, first_invocation) = match start {
            Some(cursor) => (((cursor >> 24) as usize).saturating_sub(1), (cursor & 0xff_ffff) as usize),
            None => (self.commands.len().saturating_sub(1), 0),
        };
        let count = self.commands.len();
        let commands = &self.commands;
        let filters = &filters;
        let items = (0..count.min(first_command + 1)).rev().flat_map(move |c| {
            let skip = if c == first_command { first_invocation } else { 0 };
            let command = &commands[c];
            let command_selected = only.is_none_or(|o| o == c);
            command
                .invocations
                .iter()
                .enumerate()
                .skip(if command_selected { skip } else { command.invocations.len() })
                .filter(move |(_, inv)| {
                    instance.is_none_or(|i| i == Some(inv.instance))
                        && filters.matches(command, inv.state.status(), inv.state.is_terminal())
                })
                .map(move |(i, _)| ((((c as u64) + 1) << 24) | i as u64, (c, i)))
        });
        let (rows, next) = page(items, size);
        let invocations: Vec<Value> =
            rows.into_iter().map(|(c, i)| self.invocation_json(&self.commands[c], i, details)).collect();
        Ok(with_token(json!({ "CommandInvocations": invocations }), "ListCommandInvocations", print, next))
    }

    fn invocation_json(&self, command: &Command, index: usize, details: bool) -> Value {
        let inv = &command.invocations[index];
        let instance = &self.instances[inv.instance as usize];
        let plugins: Vec<Value> = if details {
            self.plugin_views(command, inv, instance)
                .iter()
                .map(|view| self.plugin_json(command, view))
                .collect()
        } else {
            vec![]
        };
        let request = &command.request;
        json!({
            "CommandId": command.id,
            "InstanceId": instance.id,
            "InstanceName": instance.computer_name(&self.region),
            "Comment": request.comment.clone().unwrap_or_default(),
            "DocumentName": request.document_name,
            "DocumentVersion": request.document_version,
            "RequestedDateTime": ts(command.requested_ms),
            "Status": inv.state.status(),
            "StatusDetails": inv.state.status_details(),
            "TraceOutput": "",
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
            "CommandPlugins": plugins,
            "ServiceRole": request.echo.get("ServiceRoleArn").cloned().unwrap_or_else(|| json!("")),
            "NotificationConfig": request.echo.get("NotificationConfig").cloned()
                .unwrap_or_else(|| json!({"NotificationArn": "", "NotificationEvents": []})),
            "CloudWatchOutputConfig": request.echo.get("CloudWatchOutputConfig").cloned()
                .unwrap_or_else(|| json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false})),
        })
    }

    /// The invocation's plugins in document order: its one step, or a hook document's
    /// Install steps (every step, those not reached too).
    fn plugin_views(&self, command: &Command, inv: &Invocation, instance: &Instance) -> Vec<PluginView> {
        let whole = |name: &str| PluginView {
            name: name.to_string(),
            status: inv.state.plugin_status(),
            status_details: inv.state.status_details(),
            response_code: inv.response_code(),
            output: self.output_text(command, inv, instance),
            error: World::error_text(inv),
            start_ms: inv.start_ms,
            end_ms: inv.end_ms.filter(|_| inv.start_ms.is_some()),
        };
        let Some(documents) = &command.request.hook_documents else {
            return vec![whole(World::plugin_name(command, instance))];
        };
        if command.request.operation == Operation::Scan {
            return vec![whole(HOOKS_SCAN_PLUGIN)];
        }
        // Steps the invocation never reached: still Pending when a step of its own ended it,
        // the invocation's status when something from outside did (cancel, timeouts).
        let stopped_from_outside = inv.state.is_terminal()
            && !matches!(inv.state, InvocationState::Success | InvocationState::Failed);
        StepKind::ALL
            .iter()
            .map(|kind| {
                let name = kind.plugin_name().to_string();
                let Some(step) = inv.steps.iter().find(|s| s.kind == *kind) else {
                    let (status, status_details) = if stopped_from_outside {
                        (inv.state.plugin_status(), inv.state.status_details())
                    } else {
                        ("Pending", "Pending")
                    };
                    return PluginView {
                        name,
                        status,
                        status_details,
                        response_code: -1,
                        output: String::new(),
                        error: String::new(),
                        start_ms: None,
                        end_ms: None,
                    };
                };
                let (status, status_details, response_code) = match step.exit_code {
                    Some(0) => ("Success", "Success", 0),
                    Some(code) => ("Failed", "Failed", code),
                    None => (inv.state.plugin_status(), inv.state.status_details(), -1),
                };
                let (output, error) = match kind.document(documents) {
                    Some(document) => hook_output(document, step.exit_code, step.output.as_deref()),
                    None => match (&inv.result, step.exit_code) {
                        (Some(result), Some(code)) => {
                            let mut result = result.clone();
                            // This step never reboots; the reboot comes after the post-install hook.
                            result.install.rebooted = false;
                            (self.patch_summary(command, &result, instance, code != 0), String::new())
                        }
                        _ => (String::new(), String::new()),
                    },
                };
                PluginView {
                    name,
                    status,
                    status_details,
                    response_code,
                    output,
                    error,
                    start_ms: Some(step.start_ms),
                    end_ms: step.end_ms,
                }
            })
            .collect()
    }

    fn plugin_json(&self, command: &Command, view: &PluginView) -> Value {
        let mut output = view.output.clone();
        if !view.error.is_empty() {
            // The plugin's Output holds both streams, as the agent joins them.
            output.push_str("\n----------ERROR-------\n");
            output.push_str(&view.error);
        }
        let mut plugin = json!({
            "Name": view.name,
            "Status": view.status,
            "StatusDetails": view.status_details,
            "ResponseCode": view.response_code,
            "Output": output,
            "StandardOutputUrl": "",
            "StandardErrorUrl": "",
            "OutputS3Region": command.request.echo.get("OutputS3Region").cloned().unwrap_or_else(|| json!(self.region)),
            "OutputS3BucketName": command.request.echo.get("OutputS3BucketName").cloned().unwrap_or_else(|| json!("")),
            "OutputS3KeyPrefix": command.request.echo.get("OutputS3KeyPrefix").cloned().unwrap_or_else(|| json!("")),
        });
        if let Some(fields) = plugin.as_object_mut() {
            if let Some(start) = view.start_ms {
                fields.insert("ResponseStartDateTime".into(), ts(start));
            }
            if let Some(end) = view.end_ms {
                fields.insert("ResponseFinishDateTime".into(), ts(end));
            }
        }
        plugin
    }

    /// Standard output of an AWS-RunShellScript invocation: the commands, as `set -x` would
    /// trace them, then what the outcome rule says the script printed.
    fn script_output(script: &ShellScript, inv: &Invocation) -> String {
        let Some(outcome) = &inv.script else {
            return match inv.state {
                InvocationState::ExecutionTimedOut => "Execution timed out.\n".into(),
                InvocationState::Undeliverable => "The instance is not a managed node.\n".into(),
                InvocationState::DeliveryTimedOut => {
                    "The agent did not receive the command in time.\n".into()
                }
                _ => String::new(),
            };
        };
        let mut text = String::new();
        if !script.working_directory.is_empty() {
            text.push_str(&format!("+ cd {}\n", script.working_directory));
        }
        for line in script.commands.iter().flat_map(|c| c.lines()) {
            text.push_str(&format!("+ {line}\n"));
        }
        if let Some(output) = &outcome.output {
            text.push_str(output);
            if !output.ends_with('\n') {
                text.push('\n');
            }
        }
        text
    }

    /// Standard error: what the agent adds when a script exits non-zero, or why an install
    /// override list could not be used.
    fn error_text(inv: &Invocation) -> String {
        if let Some(InstallListOutcome::Unusable(why)) = &inv.install_list {
            return format!("Failed to use the install override list {why}\n");
        }
        match &inv.script {
            Some(outcome) if outcome.exit_code != 0 => {
                format!("failed to run commands: exit status {}\n", outcome.exit_code)
            }
            _ => String::new(),
        }
    }

    /// A summary in the spirit of AWS-RunPatchBaseline's own output.
    fn output_text(&self, command: &Command, inv: &Invocation, instance: &Instance) -> String {
        if let Some(script) = &command.request.shell {
            return World::script_output(script, inv);
        }
        match (inv.state, &inv.result) {
            (InvocationState::Success | InvocationState::Failed, Some(result)) => {
                let mut text =
                    self.patch_summary(command, result, instance, inv.state == InvocationState::Failed);
                if let (Some(url), Some(InstallListOutcome::Read { selected, entries })) =
                    (&command.request.install_override_list, &inv.install_list)
                {
                    text.push_str(&format!(
                        "Install override list: {url} ({entries} listed, {} in this node's catalog); the baseline's approvals were not used to choose what to install\n",
                        selected.len()
                    ));
                }
                text
            }
            (InvocationState::Failed, None)
                if matches!(inv.install_list, Some(InstallListOutcome::Unusable(_))) =>
            {
                format!(
                    "Patch group: {}\nOperation type: Install\nInstance: {}\nNothing was installed.\n",
                    instance.patch_group().unwrap_or("-"),
                    instance.id
                )
            }
            (InvocationState::ExecutionTimedOut, _) => "Execution timed out.\n".to_string(),
            (InvocationState::Undeliverable, _) => "The instance is not a managed node.\n".to_string(),
            (InvocationState::DeliveryTimedOut, _) => {
                "The agent did not receive the command in time.\n".into()
            }
            _ => String::new(),
        }
    }

    /// What a patching operation reports: the baseline, what it installed, the counts.
    fn patch_summary(
        &self,
        command: &Command,
        result: &InvocationResult,
        instance: &Instance,
        failed: bool,
    ) -> String {
        let operation = command.request.operation.as_str();
        {
            {
                let c = result.counts;
                let mut text = format!(
                    "Patch group: {}\nOperation type: {operation}\nPatch baseline: {}\nInstance: {}\n",
                    if result.patch_group.is_empty() { "-" } else { &result.patch_group },
                    result.baseline_id,
                    instance.id
                );
                if let Some(snapshot) = &command.request.snapshot_id {
                    text.push_str(&format!("Snapshot id: {snapshot}\n"));
                }
                if command.request.operation == Operation::Install {
                    text.push_str(&format!(
                        "Installed now: {}, failed now: {}, rebooted: {}\n",
                        result.install.installed,
                        result.install.failed,
                        if result.install.rebooted { "yes" } else { "no" }
                    ));
                }
                text.push_str(&format!(
                    "Installed: {}, InstalledOther: {}, InstalledPendingReboot: {}, InstalledRejected: {}, Missing: {}, Failed: {}, NotApplicable: {}\n",
                    c.installed, c.installed_other, c.installed_pending_reboot, c.installed_rejected, c.missing, c.failed, c.not_applicable
                ));
                if command.request.baseline_override {
                    text.push_str("BaselineOverride used: compliance data was not reported\n");
                }
                if failed {
                    text.push_str(&format!("failed to install {} patches\n", result.install.failed));
                }
                text
            }
        }
    }

    fn get_command_invocation(&mut self, body: &Body) -> Result<Value, ApiError> {
        let command_id = body.required_str("CommandId")?;
        check_command_id(command_id)?;
        let instance_id = body.required_str("InstanceId")?;
        check_instance_id(instance_id, "InstanceId")?;
        let plugin_name = body.str("PluginName")?;
        if let Some(name) = plugin_name {
            check_length(name, "PluginName", 4, usize::MAX)?;
        }
        let index =
            *self.command_index.get(command_id).ok_or_else(|| ApiError::new("InvalidCommandId", ""))?;
        let command = &self.commands[index];
        let not_found = || ApiError::new("InvocationDoesNotExist", "");
        if self.now < command.requested_ms + self.visible_after_ms() {
            return Err(not_found());
        }
        let instance = self.instance_position(instance_id).ok_or_else(not_found)?;
        let position = *command.by_instance.get(&(instance as u32)).ok_or_else(not_found)?;
        let inv = &command.invocations[position as usize];
        let inst = &self.instances[instance];
        let views = self.plugin_views(command, inv, inst);
        let chosen = match plugin_name {
            Some(name) => {
                let found = views.iter().find(|view| view.name == name);
                Some(found.ok_or_else(|| ApiError::new("InvalidPluginName", ""))?)
            }
            None => None,
        };
        // A one-step document answers with its step; several steps without a PluginName
        // answer for the invocation as a whole, named after the step that decided it.
        let whole = match (chosen, views.as_slice()) {
            (Some(view), [_, _, ..]) => view.clone(),
            (_, [only]) => PluginView {
                status: inv.state.status(),
                status_details: inv.state.status_details(),
                ..only.clone()
            },
            (_, many) => {
                let started: Vec<&PluginView> = many.iter().filter(|v| v.start_ms.is_some()).collect();
                let deciding = started.last().copied().unwrap_or(&many[0]);
                PluginView {
                    name: deciding.name.clone(),
                    status: inv.state.status(),
                    status_details: inv.state.status_details(),
                    response_code: inv.response_code(),
                    output: started.iter().map(|v| format!("[{}]\n{}", v.name, v.output)).collect(),
                    error: started.iter().map(|v| v.error.as_str()).collect(),
                    start_ms: inv.start_ms,
                    end_ms: inv.end_ms.filter(|_| inv.start_ms.is_some()),
                }
            }
        };
        let start = whole.start_ms.map(iso).unwrap_or_default();
        let end = whole.end_ms.map(iso).unwrap_or_default();
        let elapsed = match (whole.start_ms, whole.end_ms) {
            (Some(s), Some(e)) => format!("PT{:.3}S", (e - s) as f64 / 1000.0),
            (Some(s), None) => format!("PT{:.3}S", (self.now - s) as f64 / 1000.0),
            _ => String::new(),
        };
        let request = &command.request;
        Ok(json!({
            "CommandId": command.id,
            "InstanceId": inst.id,
            "Comment": request.comment.clone().unwrap_or_default(),
            "DocumentName": request.document_name,
            "DocumentVersion": request.document_version,
            "PluginName": whole.name,
            "ResponseCode": whole.response_code,
            "ExecutionStartDateTime": start,
            "ExecutionElapsedTime": elapsed,
            "ExecutionEndDateTime": end,
            "Status": whole.status,
            "StatusDetails": whole.status_details,
            "StandardOutputContent": whole.output,
            "StandardOutputUrl": "",
            "StandardErrorContent": whole.error,
            "StandardErrorUrl": "",
            "CloudWatchOutputConfig": request.echo.get("CloudWatchOutputConfig").cloned()
                .unwrap_or_else(|| json!({"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false})),
        }))
    }

    fn cancel_command(&mut self, body: &Body) -> Result<Value, ApiError> {
        let command_id = body.required_str("CommandId")?;
        let index = self.command_by_id(command_id)?;
        let ids = body.strings("InstanceIds", Some(50))?.unwrap_or_default();
        let mut selected = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for id in &ids {
            check_instance_id(id, "InstanceIds")?;
            if !seen.insert(*id) {
                return Err(ApiError::new("DuplicateInstanceId", format!("Instance Id {id} is duplicated.")));
            }
            let in_command = self
                .instance_position(id)
                .map(|i| i as u32)
                .filter(|i| self.commands[index].by_instance.contains_key(i));
            match in_command {
                Some(i) => selected.push(i),
                None => {
                    return Err(ApiError::new(
                        "InvalidInstanceId",
                        format!("Instance {id} is not a target of command {command_id}"),
                    ))
                }
            }
        }
        self.cancel(index, if ids.is_empty() { None } else { Some(&selected) });
        Ok(json!({}))
    }

    // ----- managed nodes and compliance -----

    fn describe_instance_information(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let size = body.page_size(5, 50, 50)?;
        let print = request_print(raw);
        let start =
            start_cursor(body, "DescribeInstanceInformation", print, "InvalidNextToken")?.unwrap_or(0);
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        let legacy = body.objects("InstanceInformationFilterList", None)?;
        let modern = body.objects("Filters", None)?;
        if !legacy.is_empty() && !modern.is_empty() {
            return Err(ApiError::validation(
                "InstanceInformationFilterList and Filters cannot be used in the same request; use Filters",
            ));
        }
        for filter in &legacy {
            let key = filter.required_str("key")?;
            let values = filter.strings("valueSet", Some(100))?.unwrap_or_default();
            if !INSTANCE_INFO_KEYS.contains(&key) {
                return Err(ApiError::new("InvalidFilterKey", format!("{key} is not a valid filter key")));
            }
            filters.push((key.to_string(), values.iter().map(|s| s.to_string()).collect()));
        }
        for filter in &modern {
            let key = filter.required_str("Key")?;
            let values = filter.strings("Values", Some(100))?.unwrap_or_default();
            let is_tag = key.starts_with("tag:") || key == "tag-key";
            if !is_tag && !INSTANCE_INFO_KEYS.contains(&key) {
                return Err(ApiError::new("InvalidFilterKey", format!("{key} is not a valid filter key")));
            }
            filters.push((key.to_string(), values.iter().map(|s| s.to_string()).collect()));
        }
        let tags = filters.iter().filter(|(k, _)| k.starts_with("tag:") || k == "tag-key").count();
        if tags > 0 && tags < filters.len() {
            return Err(ApiError::validation("Tag filters cannot be combined with other filter types"));
        }
        for (key, values) in &filters {
            if values.is_empty() {
                return Err(ApiError::new(
                    "InvalidInstanceInformationFilterValue",
                    format!("filter {key} needs at least one value"),
                ));
            }
            let allowed: Option<&[&str]> = match key.as_str() {
                "PingStatus" => Some(&["Online", "ConnectionLost", "Inactive"]),
                "PlatformTypes" => Some(&["Windows", "Linux", "MacOS"]),
                "ResourceType" => Some(&["EC2Instance", "ManagedInstance"]),
                _ => None,
            };
            if let Some(allowed) = allowed {
                if let Some(bad) = values.iter().find(|v| !allowed.contains(&v.as_str())) {
                    return Err(ApiError::new(
                        "InvalidInstanceInformationFilterValue",
                        format!("{bad} is not a valid value for {key}; use one of {}", allowed.join(", ")),
                    ));
                }
            }
            if key == "InstanceIds" {
                if let Some(bad) = values.iter().find(|v| !crate::request::is_instance_id(v)) {
                    return Err(ApiError::new(
                        "InvalidInstanceId",
                        format!("{bad} is not a valid instance id"),
                    ));
                }
            }
        }
        let items = self
            .instances
            .iter()
            .enumerate()
            .skip(start as usize)
            .filter(|(_, instance)| instance.is_managed())
            .filter(|(_, instance)| filters.iter().all(|(k, v)| instance_info_matches(instance, k, v)))
            .map(|(index, instance)| (index as u64, instance));
        let (rows, next) = page(items, size);
        let list: Vec<Value> =
            rows.into_iter().map(|instance| self.instance_information_json(instance)).collect();
        Ok(with_token(json!({ "InstanceInformationList": list }), "DescribeInstanceInformation", print, next))
    }

    fn instance_information_json(&self, instance: &Instance) -> Value {
        let last_ping = match instance.agent {
            // Online agents ping every few minutes; derive a stable offset from the id.
            Some(crate::fleet::AgentState::Online) => {
                let jitter =
                    instance.id.bytes().fold(0u64, |acc, b| acc.wrapping_mul(31).wrapping_add(u64::from(b)));
                self.now - (jitter % 240_000) as Millis
            }
            _ => instance.agent_since_ms,
        };
        json!({
            "InstanceId": instance.id,
            "PingStatus": instance.agent.map_or("Inactive", |a| a.as_str()),
            "LastPingDateTime": ts(last_ping),
            "AgentVersion": AGENT_VERSION,
            "IsLatestVersion": false,
            "PlatformType": instance.platform.platform_type(),
            "PlatformName": instance.platform.platform_name(),
            "PlatformVersion": instance.platform.platform_version(),
            "ResourceType": "EC2Instance",
            "IPAddress": instance.private_ip(),
            "ComputerName": instance.computer_name(&self.region),
            "SourceId": instance.id,
            "SourceType": "AWS::EC2::Instance",
        })
    }

    fn patch_state_json(&self, instance: &Instance, report: &PatchReport) -> Value {
        let c = report.counts;
        let mut state = json!({
            "InstanceId": instance.id,
            "PatchGroup": report.patch_group,
            "BaselineId": report.baseline_id,
            "InstalledCount": c.installed,
            "InstalledOtherCount": c.installed_other,
            "InstalledPendingRebootCount": c.installed_pending_reboot,
            "InstalledRejectedCount": c.installed_rejected,
            "MissingCount": c.missing,
            "FailedCount": c.failed,
            "UnreportedNotApplicableCount": 0,
            "NotApplicableCount": c.not_applicable,
            "AvailableSecurityUpdateCount": c.available_security_update,
            "OperationStartTime": ts(report.start_ms),
            "OperationEndTime": ts(report.end_ms),
            "Operation": report.operation.as_str(),
            "CriticalNonCompliantCount": c.critical_non_compliant,
            "SecurityNonCompliantCount": c.security_non_compliant,
            "OtherNonCompliantCount": c.other_non_compliant,
        });
        if let Some(fields) = state.as_object_mut() {
            if let Some(snapshot) = &report.snapshot_id {
                fields.insert("SnapshotId".into(), json!(snapshot));
            }
            if let Some(option) = report.reboot_option {
                fields.insert("RebootOption".into(), json!(option));
            }
            if let Some(at) = report.last_no_reboot_install_ms {
                fields.insert("LastNoRebootInstallOperationTime".into(), ts(at));
            }
            if let Some(url) = &report.install_override_list {
                fields.insert("InstallOverrideList".into(), json!(url));
            }
        }
        state
    }

    fn describe_instance_patch_states(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let ids = body
            .strings("InstanceIds", Some(50))?
            .ok_or_else(|| ApiError::constraint("null", "instanceIds", "Member must not be null"))?;
        for id in &ids {
            check_instance_id(id, "InstanceIds")?;
        }
        let size = body.page_size(10, 100, 10)?;
        let print = request_print(raw);
        let start =
            start_cursor(body, "DescribeInstancePatchStates", print, "InvalidNextToken")?.unwrap_or(0);
        let items = ids.iter().enumerate().skip(start as usize).filter_map(|(position, id)| {
            let instance = self.instance(id)?;
            let report = instance.report.as_ref()?;
            Some((position as u64, (instance, report)))
        });
        let (rows, next) = page(items, size);
        let states: Vec<Value> = rows.into_iter().map(|(i, r)| self.patch_state_json(i, r)).collect();
        Ok(with_token(json!({ "InstancePatchStates": states }), "DescribeInstancePatchStates", print, next))
    }

    fn describe_patch_states_for_group(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let group = body.required_str("PatchGroup")?;
        check_patch_group(group)?;
        let size = body.page_size(10, 100, 10)?;
        let print = request_print(raw);
        let start =
            start_cursor(body, "DescribeInstancePatchStatesForPatchGroup", print, "InvalidNextToken")?
                .unwrap_or(0);
        let mut filters = Vec::new();
        for filter in body.objects("Filters", Some(4))? {
            let key = filter.required_str("Key")?;
            let values = filter.strings("Values", Some(1))?.unwrap_or_default();
            let kind = filter.required_str("Type")?;
            if crate::fleet::Counts::default().by_name(key).is_none() {
                return Err(ApiError::new("InvalidFilter", format!("{key} is not a valid filter key")));
            }
            let Some(value) = values.first().and_then(|v| v.parse::<i64>().ok()) else {
                return Err(ApiError::new("InvalidFilter", format!("filter {key} needs one integer value")));
            };
            if !["Equal", "NotEqual", "LessThan", "GreaterThan"].contains(&kind) {
                return Err(enum_error(kind, "Type", &["Equal", "NotEqual", "LessThan", "GreaterThan"]));
            }
            filters.push((key.to_string(), kind.to_string(), value));
        }
        let items = self.instances.iter().enumerate().skip(start as usize).filter_map(|(index, instance)| {
            let report = instance.report.as_ref()?;
            if report.patch_group != group {
                return None;
            }
            let selected = filters.iter().all(|(key, kind, value)| {
                let actual = i64::from(report.counts.by_name(key).unwrap_or(0));
                match kind.as_str() {
                    "Equal" => actual == *value,
                    "NotEqual" => actual != *value,
                    "LessThan" => actual < *value,
                    _ => actual > *value,
                }
            });
            selected.then_some((index as u64, (instance, report)))
        });
        let (rows, next) = page(items, size);
        let states: Vec<Value> = rows.into_iter().map(|(i, r)| self.patch_state_json(i, r)).collect();
        Ok(with_token(
            json!({ "InstancePatchStates": states }),
            "DescribeInstancePatchStatesForPatchGroup",
            print,
            next,
        ))
    }

    fn describe_instance_patches(&mut self, body: &Body, raw: &Value) -> Result<String, ApiError> {
        let id = body.required_str("InstanceId")?;
        check_instance_id(id, "InstanceId")?;
        let size = body.page_size(10, 100, 10)?;
        let print = request_print(raw);
        let start = start_cursor(body, "DescribeInstancePatches", print, "InvalidNextToken")?.unwrap_or(0);
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        for filter in body.objects("Filters", Some(5))? {
            let key = filter.str("Key")?.unwrap_or_default();
            let values: Vec<String> =
                filter.strings("Values", None)?.unwrap_or_default().iter().map(|s| s.to_string()).collect();
            match key {
                "Classification" | "KBId" | "Severity" => {}
                "State" => {
                    if let Some(bad) = values.iter().find(|v| PatchState::parse(v).is_none()) {
                        return Err(ApiError::new(
                            "InvalidFilter",
                            format!("{bad} is not a valid patch state"),
                        ));
                    }
                }
                other => {
                    return Err(ApiError::new(
                        "InvalidFilter",
                        format!(
                            "{other} is not a valid filter key; use Classification, KBId, Severity or State"
                        ),
                    ))
                }
            }
            filters.push((key.to_string(), values));
        }
        let instance =
            self.instance(id).filter(|i| i.agent.is_some() || i.report.is_some()).ok_or_else(|| {
                ApiError::new("InvalidInstanceId", format!("Instance {id} is not a managed node"))
            })?;
        let catalog = self.catalog.patches(instance.platform);
        let states: Vec<PatchState> = filters
            .iter()
            .filter(|(k, _)| k == "State")
            .flat_map(|(_, v)| v.iter().filter_map(|s| PatchState::parse(s)))
            .collect();
        let items = (start as usize..instance.tracked_patches()).filter_map(|index| {
            let row = instance.reported(index)?;
            let patch = catalog.get(index)?;
            let selected = filters.iter().all(|(key, values)| match key.as_str() {
                "Classification" => values.contains(&patch.classification),
                "KBId" => values.iter().any(|v| v == patch.kb_id()),
                "Severity" => values.contains(&patch.severity),
                _ => states.contains(&row.state),
            });
            selected.then_some((index as u64, (row, patch)))
        });
        let (rows, next) = page(items, size);
        // The hot path of compliance syncs: serialise borrowed rows straight to text.
        let patches: Vec<ComplianceRow<'_>> = rows
            .into_iter()
            .map(|(row, patch)| ComplianceRow {
                title: &patch.title,
                kb_id: patch.kb_id(),
                classification: &patch.classification,
                severity: &patch.severity,
                state: row.state.as_str(),
                installed_time: epoch_seconds(row.installed_ms.unwrap_or(0)),
                cve_ids: (matches!(row.state, PatchState::Missing | PatchState::Failed)
                    && !patch.cves.is_empty())
                .then(|| patch.cves.join(",")),
            })
            .collect();
        let next_token = next.map(|cursor| paging::encode("DescribeInstancePatches", print, cursor));
        let page = CompliancePage { patches, next_token };
        serde_json::to_string(&page)
            .map_err(|e| ApiError::new("InternalServerError", e.to_string()).with_status(500))
    }

    fn describe_available_patches(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let size = body.page_size(1, 100, 100)?;
        let print = request_print(raw);
        let start = start_cursor(body, "DescribeAvailablePatches", print, "InvalidNextToken")?.unwrap_or(0);
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        for filter in body.objects("Filters", Some(5))? {
            let key = filter.str("Key")?.unwrap_or_default();
            check_length(key, "Key", 1, 128)?;
            let values: Vec<String> =
                filter.strings("Values", None)?.unwrap_or_default().iter().map(|s| s.to_string()).collect();
            if !AVAILABLE_PATCH_KEYS.contains(&key) {
                return Err(ApiError::validation(format!(
                    "Invalid filter key {key}; use one of {}",
                    AVAILABLE_PATCH_KEYS.join(", ")
                )));
            }
            filters.push((key.to_string(), values));
        }
        let product = filters.iter().find(|(k, _)| k == "PRODUCT").map(|(_, v)| v.clone());
        let linux_only = filters.iter().any(|(k, _)| LINUX_ONLY_KEYS.contains(&k.as_str()));
        if linux_only && product.is_none() {
            return Err(ApiError::validation(
                "Linux patch filters require a PRODUCT filter, e.g. AmazonLinux2",
            ));
        }
        let platforms: Vec<Platform> = Platform::ALL
            .into_iter()
            .filter(|p| p.listed_by_describe_available_patches())
            .filter(|p| match &product {
                None => p.is_windows(),
                Some(values) => values
                    .iter()
                    .any(|v| p.product_aliases().iter().any(|a| crate::catalog::glob_match(v, a))),
            })
            .collect();
        let now = self.now;
        let catalog = &self.catalog;
        let items = platforms.into_iter().flat_map(|platform| {
            catalog
                .patches(platform)
                .iter()
                .enumerate()
                .map(move |(i, patch)| (((platform.index() as u64) << 32) | i as u64, patch))
        });
        let items = items.filter(|(cursor, patch)| {
            *cursor >= start
                && patch.is_released(now)
                && filters.iter().all(|(key, values)| {
                    patch.filter_property(key).is_some_and(|property| property.matches_any(values))
                })
        });
        let (rows, next) = page(items, size);
        let patches: Vec<Value> = rows.into_iter().map(available_patch_json).collect();
        Ok(with_token(json!({ "Patches": patches }), "DescribeAvailablePatches", print, next))
    }

    // ----- baselines -----

    fn create_patch_baseline(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let name = body.required_str("Name")?;
        check_baseline_name(name)?;
        let operating_system = body.str("OperatingSystem")?.unwrap_or("WINDOWS");
        if !OPERATING_SYSTEMS.contains(&operating_system) {
            return Err(enum_error(operating_system, "OperatingSystem", &OPERATING_SYSTEMS));
        }
        if let Some(token) = body.str("ClientToken")? {
            check_length(token, "ClientToken", 1, 64)?;
            let mut without_token = raw.clone();
            if let Some(fields) = without_token.as_object_mut() {
                fields.remove("ClientToken");
            }
            let key = format!("{token}\u{1f}{}", without_token);
            if let Some(id) = self.client_tokens.get(&key) {
                return Ok(json!({ "BaselineId": id }));
            }
            if self.client_tokens.keys().any(|k| k.starts_with(&format!("{token}\u{1f}"))) {
                return Err(ApiError::new(
                    "IdempotentParameterMismatch",
                    "the ClientToken was used with different parameters",
                ));
            }
        }
        let custom = self.baselines.iter().filter(|b| !b.predefined).count();
        if custom >= MAX_CUSTOM_BASELINES {
            return Err(ApiError::new(
                "ResourceLimitExceededException",
                format!("Maximum number of patch baselines ({MAX_CUSTOM_BASELINES}) reached"),
            ));
        }
        let mut baseline = Baseline {
            id: String::new(),
            name: name.to_string(),
            operating_system: operating_system.to_string(),
            description: None,
            global_filters: None,
            approval_rules: None,
            approved_patches: vec![],
            approved_patches_compliance_level: None,
            approved_patches_enable_non_security: None,
            rejected_patches: vec![],
            rejected_patches_action: None,
            sources: vec![],
            available_security_updates_compliance_status: None,
            created_ms: self.now,
            modified_ms: self.now,
            predefined: false,
            tags: parse_tags(body)?,
            revision: 0,
        };
        apply_baseline_fields(&mut baseline, body, false)?;
        self.next_baseline_number += 1;
        let suffix =
            crate::baseline::stable_hex17(&format!("{}/{}/{}", self.seed, self.next_baseline_number, name));
        baseline.id = format!("pb-{suffix}");
        let id = baseline.id.clone();
        self.baselines.push(baseline);
        if let Some(token) = body.str("ClientToken")? {
            let mut without_token = raw.clone();
            if let Some(fields) = without_token.as_object_mut() {
                fields.remove("ClientToken");
            }
            self.client_tokens.insert(format!("{token}\u{1f}{}", without_token), id.clone());
        }
        Ok(json!({ "BaselineId": id }))
    }

    fn find_baseline(&self, body: &Body) -> Result<usize, ApiError> {
        let id = body.required_str("BaselineId")?;
        check_baseline_id(id)?;
        self.baseline_position(id).ok_or_else(|| {
            ApiError::new("DoesNotExistException", format!("Patch Baseline {id} does not exist."))
        })
    }

    fn update_patch_baseline(&mut self, body: &Body) -> Result<Value, ApiError> {
        let index = self.find_baseline(body)?;
        if self.baselines[index].predefined {
            return Err(ApiError::validation(format!(
                "Patch baseline {} is provided by AWS and cannot be modified; create your own baseline",
                self.baselines[index].id
            )));
        }
        let replace = body.bool("Replace")?.unwrap_or(false);
        let mut updated = self.baselines[index].clone();
        if let Some(name) = body.str("Name")? {
            check_baseline_name(name)?;
            updated.name = name.to_string();
        } else if replace {
            return Err(ApiError::constraint("null", "name", "Member must not be null"));
        }
        apply_baseline_fields(&mut updated, body, replace)?;
        updated.modified_ms = self.now;
        updated.revision += 1;
        self.baselines[index] = updated;
        Ok(self.baseline_json(&self.baselines[index], false))
    }

    fn baseline_json(&self, baseline: &Baseline, with_groups: bool) -> Value {
        let mut value = json!({
            "BaselineId": baseline.id,
            "Name": baseline.name,
            "OperatingSystem": baseline.operating_system,
            "GlobalFilters": { "PatchFilters": filters_json(baseline.global_filters.as_deref().unwrap_or_default()) },
            "ApprovalRules": { "PatchRules": baseline.approval_rules.as_deref().unwrap_or_default().iter().map(rule_json).collect::<Vec<_>>() },
            "ApprovedPatches": baseline.approved_patches,
            "ApprovedPatchesComplianceLevel": baseline.approved_patches_compliance_level.as_deref().unwrap_or("UNSPECIFIED"),
            "ApprovedPatchesEnableNonSecurity": baseline.approved_patches_enable_non_security.unwrap_or(false),
            "RejectedPatches": baseline.rejected_patches,
            "RejectedPatchesAction": baseline.rejected_patches_action.as_deref().unwrap_or("ALLOW_AS_DEPENDENCY"),
            "CreatedDate": ts(baseline.created_ms),
            "ModifiedDate": ts(baseline.modified_ms),
            "Sources": baseline.sources,
        });
        if let Some(fields) = value.as_object_mut() {
            if let Some(description) = &baseline.description {
                fields.insert("Description".into(), json!(description));
            }
            if let Some(status) = &baseline.available_security_updates_compliance_status {
                fields.insert("AvailableSecurityUpdatesComplianceStatus".into(), json!(status));
            }
            if with_groups {
                let groups: Vec<&str> = self
                    .patch_groups
                    .iter()
                    .filter(|(_, id)| **id == baseline.id)
                    .map(|((group, _), _)| group.as_str())
                    .collect();
                fields.insert("PatchGroups".into(), json!(groups));
            }
        }
        value
    }

    fn get_patch_baseline(&mut self, body: &Body) -> Result<Value, ApiError> {
        let index = self.find_baseline(body)?;
        Ok(self.baseline_json(&self.baselines[index], true))
    }

    fn identity_json(&self, baseline: &Baseline) -> Value {
        let mut identity = json!({
            "BaselineId": baseline.id,
            "BaselineName": baseline.name,
            "OperatingSystem": baseline.operating_system,
            "DefaultBaseline": baseline.predefined && Platform::from_operating_system(&baseline.operating_system).is_some(),
        });
        if let (Some(description), Some(fields)) = (&baseline.description, identity.as_object_mut()) {
            fields.insert("BaselineDescription".into(), json!(description));
        }
        identity
    }

    fn describe_patch_baselines(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let size = body.page_size(1, 100, 100)?;
        let print = request_print(raw);
        let start = start_cursor(body, "DescribePatchBaselines", print, "InvalidNextToken")?.unwrap_or(0);
        let filters = orchestrator_filters(body, &["NAME_PREFIX", "OWNER", "OPERATING_SYSTEM"])?;
        let items = self.baselines.iter().enumerate().skip(start as usize).filter(|(_, baseline)| {
            filters.iter().all(|(key, values)| match key.as_str() {
                "NAME_PREFIX" => values.iter().any(|v| baseline.name.starts_with(v.as_str())),
                "OWNER" => values.iter().any(|v| match v.as_str() {
                    "AWS" => baseline.predefined,
                    "Self" => !baseline.predefined,
                    _ => true,
                }),
                _ => values.contains(&baseline.operating_system),
            })
        });
        let (rows, next) = page(items.map(|(i, b)| (i as u64, b)), size);
        let identities: Vec<Value> = rows.into_iter().map(|b| self.identity_json(b)).collect();
        Ok(with_token(json!({ "BaselineIdentities": identities }), "DescribePatchBaselines", print, next))
    }

    fn delete_patch_baseline(&mut self, body: &Body) -> Result<Value, ApiError> {
        let index = self.find_baseline(body)?;
        let id = self.baselines[index].id.clone();
        if self.baselines[index].predefined {
            return Err(ApiError::validation(format!(
                "Patch baseline {id} is provided by AWS and cannot be deleted"
            )));
        }
        if self.patch_groups.values().any(|b| *b == id) {
            return Err(ApiError::new(
                "ResourceInUseException",
                format!("Patch baseline {id} is registered with patch groups; deregister them first"),
            ));
        }
        self.baselines.remove(index);
        Ok(json!({ "BaselineId": id }))
    }

    fn register_patch_group(&mut self, body: &Body) -> Result<Value, ApiError> {
        let group = body.required_str("PatchGroup")?;
        check_patch_group(group)?;
        let index = self.find_baseline(body)?;
        let baseline = &self.baselines[index];
        let key = (group.to_string(), baseline.operating_system.clone());
        if let Some(existing) = self.patch_groups.get(&key) {
            return Err(ApiError::new(
                "AlreadyExistsException",
                format!(
                    "Patch Group {group} is already registered with baseline {existing} for operating system {}",
                    baseline.operating_system
                ),
            ));
        }
        let registered = self.patch_groups.values().filter(|id| **id == baseline.id).count();
        if registered >= MAX_GROUPS_PER_BASELINE {
            return Err(ApiError::new(
                "ResourceLimitExceededException",
                format!("a baseline can be registered with at most {MAX_GROUPS_PER_BASELINE} patch groups"),
            ));
        }
        let id = baseline.id.clone();
        self.patch_groups.insert(key, id.clone());
        Ok(json!({ "BaselineId": id, "PatchGroup": group }))
    }

    fn deregister_patch_group(&mut self, body: &Body) -> Result<Value, ApiError> {
        let group = body.required_str("PatchGroup")?;
        check_patch_group(group)?;
        let index = self.find_baseline(body)?;
        let baseline = &self.baselines[index];
        let key = (group.to_string(), baseline.operating_system.clone());
        if self.patch_groups.get(&key) != Some(&baseline.id) {
            return Err(ApiError::new(
                "InvalidResourceId",
                format!("Patch Baseline {} is not registered with Patch Group {group}", baseline.id),
            ));
        }
        let id = baseline.id.clone();
        self.patch_groups.remove(&key);
        Ok(json!({ "BaselineId": id, "PatchGroup": group }))
    }

    fn get_baseline_for_patch_group(&mut self, body: &Body) -> Result<Value, ApiError> {
        let group = body.required_str("PatchGroup")?;
        check_patch_group(group)?;
        let operating_system = body.str("OperatingSystem")?.unwrap_or("WINDOWS");
        if !OPERATING_SYSTEMS.contains(&operating_system) {
            return Err(enum_error(operating_system, "OperatingSystem", &OPERATING_SYSTEMS));
        }
        let registered = self.patch_groups.get(&(group.to_string(), operating_system.to_string())).cloned();
        let id = registered.or_else(|| {
            self.baselines
                .iter()
                .find(|b| b.predefined && b.operating_system == operating_system)
                .map(|b| b.id.clone())
        });
        let mut value = json!({ "PatchGroup": group, "OperatingSystem": operating_system });
        if let (Some(id), Some(fields)) = (id, value.as_object_mut()) {
            fields.insert("BaselineId".into(), json!(id));
        }
        Ok(value)
    }

    fn describe_patch_groups(&mut self, body: &Body, raw: &Value) -> Result<Value, ApiError> {
        let size = body.page_size(1, 100, 100)?;
        let print = request_print(raw);
        let start = start_cursor(body, "DescribePatchGroups", print, "InvalidNextToken")?.unwrap_or(0);
        let filters = orchestrator_filters(body, &["NAME_PREFIX", "OPERATING_SYSTEM"])?;
        let items =
            self.patch_groups.iter().enumerate().skip(start as usize).filter(|(_, ((group, os), _))| {
                filters.iter().all(|(key, values)| match key.as_str() {
                    "NAME_PREFIX" => values.iter().any(|v| group.starts_with(v.as_str())),
                    _ => values.iter().any(|v| v == os),
                })
            });
        let (rows, next) = page(items.map(|(i, entry)| (i as u64, entry)), size);
        let mappings: Vec<Value> = rows
            .into_iter()
            .filter_map(|((group, _), id)| {
                let baseline = self.baselines.iter().find(|b| b.id == *id)?;
                Some(json!({ "PatchGroup": group, "BaselineIdentity": self.identity_json(baseline) }))
            })
            .collect();
        Ok(with_token(json!({ "Mappings": mappings }), "DescribePatchGroups", print, next))
    }

    fn tagged_baseline(&self, body: &Body) -> Result<usize, ApiError> {
        let resource_type = body.required_str("ResourceType")?;
        if !TAGGABLE_TYPES.contains(&resource_type) {
            return Err(enum_error(resource_type, "ResourceType", &TAGGABLE_TYPES));
        }
        let id = body.required_str("ResourceId")?;
        let invalid = || {
            ApiError::new(
                "InvalidResourceId",
                format!("The resource ID \"{id}\" is not valid. Verify the ID and try again."),
            )
        };
        if resource_type != "PatchBaseline" {
            return Err(invalid());
        }
        match self.baseline_position(id) {
            Some(index) if !self.baselines[index].predefined => Ok(index),
            _ => Err(invalid()),
        }
    }

    fn list_tags(&mut self, body: &Body) -> Result<Value, ApiError> {
        let index = self.tagged_baseline(body)?;
        let tags: Vec<Value> =
            self.baselines[index].tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect();
        Ok(json!({ "TagList": tags }))
    }

    fn add_tags(&mut self, body: &Body) -> Result<Value, ApiError> {
        let index = self.tagged_baseline(body)?;
        if !body.has("Tags") {
            return Err(ApiError::constraint("null", "tags", "Member must not be null"));
        }
        let tags = parse_tags(body)?;
        let mut merged = self.baselines[index].tags.clone();
        for (key, value) in tags {
            match merged.iter_mut().find(|(k, _)| *k == key) {
                Some(existing) => existing.1 = value,
                None => merged.push((key, value)),
            }
        }
        if merged.len() > MAX_TAGS_PER_RESOURCE {
            return Err(ApiError::new(
                "TooManyTagsError",
                format!("a resource can have at most {MAX_TAGS_PER_RESOURCE} tags"),
            ));
        }
        self.baselines[index].tags = merged;
        Ok(json!({}))
    }
}

#[derive(serde::Serialize)]
struct ComplianceRow<'a> {
    #[serde(rename = "Title")]
    title: &'a str,
    #[serde(rename = "KBId")]
    kb_id: &'a str,
    #[serde(rename = "Classification")]
    classification: &'a str,
    #[serde(rename = "Severity")]
    severity: &'a str,
    #[serde(rename = "State")]
    state: &'a str,
    #[serde(rename = "InstalledTime")]
    installed_time: f64,
    #[serde(rename = "CVEIds", skip_serializing_if = "Option::is_none")]
    cve_ids: Option<String>,
}

#[derive(serde::Serialize)]
struct CompliancePage<'a> {
    #[serde(rename = "Patches")]
    patches: Vec<ComplianceRow<'a>>,
    #[serde(rename = "NextToken", skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

const TAGGABLE_TYPES: [&str; 10] = [
    "Document",
    "ManagedInstance",
    "MaintenanceWindow",
    "Parameter",
    "PatchBaseline",
    "OpsItem",
    "OpsMetadata",
    "Automation",
    "Association",
    "CloudConnector",
];

const INSTANCE_INFO_KEYS: [&str; 8] = [
    "InstanceIds",
    "AgentVersion",
    "PingStatus",
    "PlatformTypes",
    "ActivationIds",
    "IamRole",
    "ResourceType",
    "AssociationStatus",
];

const AVAILABLE_PATCH_KEYS: [&str; 17] = [
    "PRODUCT",
    "PRODUCT_FAMILY",
    "CLASSIFICATION",
    "MSRC_SEVERITY",
    "PATCH_SET",
    "PATCH_ID",
    "SEVERITY",
    "CVE_ID",
    "ADVISORY_ID",
    "BUGZILLA_ID",
    "NAME",
    "EPOCH",
    "VERSION",
    "RELEASE",
    "ARCH",
    "REPOSITORY",
    "SECURITY",
];

const LINUX_ONLY_KEYS: [&str; 10] = [
    "SEVERITY",
    "CVE_ID",
    "ADVISORY_ID",
    "BUGZILLA_ID",
    "NAME",
    "EPOCH",
    "VERSION",
    "RELEASE",
    "ARCH",
    "REPOSITORY",
];

const PATCH_FILTER_KEYS: [&str; 19] = [
    "ARCH",
    "ADVISORY_ID",
    "BUGZILLA_ID",
    "PATCH_SET",
    "PRODUCT",
    "PRODUCT_FAMILY",
    "CLASSIFICATION",
    "CVE_ID",
    "EPOCH",
    "MSRC_SEVERITY",
    "NAME",
    "PATCH_ID",
    "SECTION",
    "PRIORITY",
    "REPOSITORY",
    "RELEASE",
    "SEVERITY",
    "SECURITY",
    "VERSION",
];

fn available_patch_json(patch: &Patch) -> Value {
    let windows = patch.platform.is_windows();
    let mut value = json!({
        "Id": patch.id,
        "ReleaseDate": ts(patch.released_ms),
        "Title": patch.title,
        "Description": patch.title,
        "ContentUrl": patch.content_url(),
        "Vendor": patch.vendor(),
        "ProductFamily": patch.platform.product_family(),
        "Product": patch.platform.product(),
        "Classification": patch.classification,
        "Language": if windows { "All" } else { "" },
        "AdvisoryIds": if windows { vec![] } else { vec![patch.id.clone()] },
        "BugzillaIds": [],
        "CVEIds": patch.cves,
    });
    if let Some(fields) = value.as_object_mut() {
        if windows {
            fields.insert("MsrcSeverity".into(), json!(patch.severity));
            fields.insert("KbNumber".into(), json!(patch.id));
            fields.insert("MsrcNumber".into(), json!(""));
        } else {
            fields.insert("Severity".into(), json!(patch.severity));
            fields.insert("Name".into(), json!(patch.package));
            fields.insert("Epoch".into(), json!(0));
            fields.insert("Version".into(), json!(patch.version));
            fields.insert("Release".into(), json!(patch.release_label));
            fields.insert("Arch".into(), json!("x86_64"));
            fields.insert("Repository".into(), json!(patch.repository()));
        }
    }
    value
}

fn is_max_concurrency(text: &str) -> bool {
    if text.is_empty() || text.len() > 7 {
        return false;
    }
    match text.strip_suffix('%') {
        Some(percent) => matches!(percent.parse::<u32>(), Ok(1..=100)) && !percent.starts_with('0'),
        None => text.chars().all(|c| c.is_ascii_digit()) && !text.starts_with('0'),
    }
}

fn is_max_errors(text: &str) -> bool {
    if text.is_empty() || text.len() > 7 {
        return false;
    }
    match text.strip_suffix('%') {
        Some(percent) => {
            matches!(percent.parse::<u32>(), Ok(0..=100)) && (percent == "0" || !percent.starts_with('0'))
        }
        None => text == "0" || (text.chars().all(|c| c.is_ascii_digit()) && !text.starts_with('0')),
    }
}

fn parse_targets(body: &Body) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut targets = Vec::new();
    for target in body.objects("Targets", Some(5))? {
        let key = target.str("Key")?.unwrap_or_default();
        check_length(key, "Key", 1, 163)?;
        let values = target.strings("Values", Some(50))?.unwrap_or_default();
        if key == "resource-groups:Name" || key == "resource-groups:ResourceTypeFilters" {
            return Err(ApiError::new(
                "InvalidParameters",
                format!(
                    "Target key {key} is not supported by fleet-sim; use InstanceIds, tag:<key> or tag-key"
                ),
            ));
        }
        targets.push((key.to_string(), values.iter().map(|s| s.to_string()).collect()));
    }
    Ok(targets)
}

const DOCUMENT_PARAMETERS: [&str; 5] =
    ["Operation", "SnapshotId", "InstallOverrideList", "BaselineOverride", "RebootOption"];
/// AWS-RunPatchBaselineWithHooks has no InstallOverrideList or BaselineOverride.
const HOOKS_PARAMETERS: [&str; 6] = [
    "Operation",
    "SnapshotId",
    "RebootOption",
    "PreInstallHookDocName",
    "PostInstallHookDocName",
    "OnExitHookDocName",
];
const SHELL_PARAMETERS: [&str; 3] = ["commands", "workingDirectory", "executionTimeout"];
/// AWS-RunShellScript's `workingDirectory` maxChars.
const MAX_WORKING_DIRECTORY: usize = 4096;
/// AWS-RunShellScript's `executionTimeout` allowed range (its allowedPattern), in seconds.
const SHELL_TIMEOUT_SECONDS: std::ops::RangeInclusive<u32> = 1..=172_800;

/// `Parameters` as `document` defines them; only AWS-RunShellScript's `commands` (a
/// StringList) takes several values.
fn parse_parameters(body: &Body, document: &str) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut parameters = BTreeMap::new();
    let Some(map) = body.object("Parameters")? else { return Ok(parameters) };
    let defined: &[&str] = match document {
        SHELL_DOCUMENT => &SHELL_PARAMETERS,
        HOOKS_DOCUMENT => &HOOKS_PARAMETERS,
        _ => &DOCUMENT_PARAMETERS,
    };
    for (name, values) in map.entries() {
        if !defined.contains(&name.as_str()) {
            return Err(ApiError::new(
                "InvalidParameters",
                format!("Parameter \"{name}\" is not defined in document {document}."),
            ));
        }
        let Some(list) = values.as_array() else {
            return Err(ApiError::new(
                "SerializationException",
                format!("Parameters.{name}: expected a list"),
            ));
        };
        let strings =
            list.iter().map(|v| v.as_str().map(str::to_string)).collect::<Option<Vec<_>>>().ok_or_else(
                || ApiError::new("SerializationException", format!("Parameters.{name}: expected strings")),
            )?;
        if strings.len() > 1 && name != "commands" {
            return Err(ApiError::new(
                "InvalidParameters",
                format!("Parameter \"{name}\" of document {document} takes one value."),
            ));
        }
        parameters.insert(name.clone(), strings);
    }
    Ok(parameters)
}

/// AWS-RunShellScript's parameters, with the document's defaults (no working directory, an
/// execution timeout of 3600 seconds).
fn shell_script(parameters: &BTreeMap<String, Vec<String>>) -> Result<ShellScript, ApiError> {
    let invalid = |message: String| ApiError::new("InvalidParameters", message);
    let commands = parameters.get("commands").cloned().unwrap_or_default();
    if commands.is_empty() {
        return Err(invalid("Parameter \"commands\" is required but not provided.".into()));
    }
    let working_directory =
        parameters.get("workingDirectory").and_then(|v| v.first()).cloned().unwrap_or_default();
    if working_directory.chars().count() > MAX_WORKING_DIRECTORY {
        return Err(invalid(format!(
            "Parameter \"workingDirectory\" is longer than {MAX_WORKING_DIRECTORY} characters."
        )));
    }
    let execution_timeout_seconds = match parameters.get("executionTimeout").and_then(|v| v.first()) {
        None => 3600,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|t| SHELL_TIMEOUT_SECONDS.contains(t) && !text.starts_with('0'))
            .ok_or_else(|| {
                invalid(format!(
                    "Parameter \"executionTimeout\" value \"{text}\" is not a number of seconds from 1 to 172800."
                ))
            })?,
    };
    Ok(ShellScript { commands, working_directory, execution_timeout_seconds })
}

/// AWS-RunPatchBaselineWithHooks's hook documents, `AWS-Noop` where not given. The names are
/// not looked up (the simulator has no documents), only checked for a document name's shape.
fn hook_documents(parameters: &BTreeMap<String, Vec<String>>) -> Result<HookDocuments, ApiError> {
    let name = |key: &str| -> Result<String, ApiError> {
        match parameters.get(key).and_then(|v| v.first()) {
            None => Ok(NOOP_DOCUMENT.to_string()),
            Some(value) if value.is_empty() => Ok(NOOP_DOCUMENT.to_string()),
            Some(value)
                if (3..=128).contains(&value.len())
                    && value.chars().all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c)) =>
            {
                Ok(value.clone())
            }
            Some(value) => Err(ApiError::new(
                "InvalidParameters",
                format!("Parameter \"{key}\" value \"{value}\" is not a document name."),
            )),
        }
    };
    Ok(HookDocuments {
        pre_install: name("PreInstallHookDocName")?,
        post_install: name("PostInstallHookDocName")?,
        on_exit: name("OnExitHookDocName")?,
    })
}

/// A hook step's standard output and error: which document ran, then what the rule says it
/// printed; a failure adds the agent's exit status line.
fn hook_output(document: &str, exit_code: Option<i64>, printed: Option<&str>) -> (String, String) {
    let Some(code) = exit_code else { return (String::new(), String::new()) };
    if document == NOOP_DOCUMENT {
        return (format!("Hook document {NOOP_DOCUMENT}: nothing to run.\n"), String::new());
    }
    let mut output = format!("Hook document {document} ran.\n");
    if let Some(printed) = printed {
        output.push_str(printed);
        if !printed.ends_with('\n') {
            output.push('\n');
        }
    }
    let error = if code == 0 {
        String::new()
    } else {
        format!("Hook document {document} failed: exit status {code}\n")
    };
    (output, error)
}

/// One entry of CommandPlugins, or what GetCommandInvocation answers for one plugin.
#[derive(Debug, Clone)]
struct PluginView {
    name: String,
    status: &'static str,
    status_details: &'static str,
    response_code: i64,
    output: String,
    error: String,
    start_ms: Option<Millis>,
    end_ms: Option<Millis>,
}

/// SendCommand's `AlarmConfiguration`, within the model's bounds: `Alarms` is a list of
/// exactly one alarm whose name is 1 to 255 characters and not blank.
fn parse_alarm_configuration(body: &Body) -> Result<Option<AlarmGate>, ApiError> {
    let Some(config) = body.object("AlarmConfiguration")? else { return Ok(None) };
    let ignore_poll_alarm_failure = config.bool("IgnorePollAlarmFailure")?.unwrap_or(false);
    let member = "alarmConfiguration.alarms";
    let Some(alarms) = config.list("Alarms")? else {
        return Err(ApiError::constraint("null", member, "Member must not be null"));
    };
    let bound = match alarms.len() {
        0 => Some("Member must have length greater than or equal to 1"),
        1 => None,
        _ => Some("Member must have length less than or equal to 1"),
    };
    if let Some(bound) = bound {
        let names: Vec<String> = alarms
            .iter()
            .map(|a| a.get("Name").and_then(Value::as_str).unwrap_or_default().to_string())
            .collect();
        return Err(ApiError::constraint(format!("[{}]", names.join(", ")), member, bound));
    }
    let Some(alarm) = config.objects("Alarms", Some(1))?.into_iter().next() else {
        return Err(ApiError::constraint("[]", member, "Member must have length greater than or equal to 1"));
    };
    let name_member = "alarmConfiguration.alarms.1.member.name";
    let name = alarm
        .str("Name")?
        .ok_or_else(|| ApiError::constraint("null", name_member, "Member must not be null"))?;
    let length = name.chars().count();
    if length == 0 {
        return Err(ApiError::constraint(
            name,
            name_member,
            "Member must have length greater than or equal to 1",
        ));
    }
    if length > 255 {
        return Err(ApiError::constraint(
            name,
            name_member,
            "Member must have length less than or equal to 255",
        ));
    }
    if name.trim().is_empty() {
        return Err(ApiError::constraint(
            name,
            name_member,
            r"Member must satisfy regular expression pattern: ^(?!\s*$).+",
        ));
    }
    Ok(Some(AlarmGate { alarm: name.to_string(), ignore_poll_alarm_failure }))
}

fn target_matches(instance: &Instance, key: &str, values: &[String]) -> bool {
    if key == "InstanceIds" {
        // `Values=*` targets every managed node.
        return values.iter().any(|v| v == "*" || *v == instance.id);
    }
    if key == "tag-key" {
        return values.iter().any(|v| instance.tag(v).is_some());
    }
    match key.strip_prefix("tag:") {
        Some(tag) => instance.tag(tag).is_some_and(|value| values.iter().any(|v| v == value)),
        None => false,
    }
}

fn instance_info_matches(instance: &Instance, key: &str, values: &[String]) -> bool {
    let any = |actual: &str| values.iter().any(|v| v == actual);
    match key {
        "InstanceIds" => any(&instance.id),
        "AgentVersion" => any(AGENT_VERSION),
        "PingStatus" => instance.agent.is_some_and(|a| any(a.as_str())),
        "PlatformTypes" => any(instance.platform.platform_type()),
        "ResourceType" => any("EC2Instance"),
        "tag-key" => values.iter().any(|k| instance.tag(k).is_some()),
        _ => match key.strip_prefix("tag:") {
            Some(tag) => instance.tag(tag).is_some_and(any),
            None => false,
        },
    }
}

fn orchestrator_filters(body: &Body, allowed: &[&str]) -> Result<Vec<(String, Vec<String>)>, ApiError> {
    let mut filters = Vec::new();
    for filter in body.objects("Filters", Some(5))? {
        let key = filter.str("Key")?.unwrap_or_default();
        if !allowed.contains(&key) {
            return Err(ApiError::validation(format!(
                "Invalid filter key {key}; use one of {}",
                allowed.join(", ")
            )));
        }
        let values = filter.strings("Values", None)?.unwrap_or_default();
        filters.push((key.to_string(), values.iter().map(|s| s.to_string()).collect()));
    }
    Ok(filters)
}

fn check_baseline_name(name: &str) -> Result<(), ApiError> {
    let valid = (3..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(pattern_error(name, "Name", r"^[a-zA-Z0-9_\-.]{3,128}$"))
    }
}

fn parse_tags(body: &Body) -> Result<Vec<(String, String)>, ApiError> {
    let mut tags = Vec::new();
    for tag in body.objects("Tags", Some(1000))? {
        let key = tag.required_str("Key")?;
        let value = tag.required_str("Value")?;
        check_length(key, "Key", 1, 128)?;
        check_length(value, "Value", 0, 256)?;
        if !is_tag_text(key) || !is_tag_text(value) {
            return Err(pattern_error(key, "Key", r"^([\p{L}\p{Z}\p{N}_.:/=+\-@]*)$"));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::new(
                "InvalidParameters",
                format!("Tag keys starting with aws: are reserved: {key}"),
            ));
        }
        tags.push((key.to_string(), value.to_string()));
    }
    Ok(tags)
}

fn parse_filter_group(
    group: &Body,
    operating_system: &str,
    member: &str,
) -> Result<Vec<PatchFilter>, ApiError> {
    let mut filters: Vec<PatchFilter> = Vec::new();
    for filter in group.objects("PatchFilters", Some(4))? {
        let key = filter.required_str("Key")?;
        if !PATCH_FILTER_KEYS.contains(&key) {
            return Err(enum_error(key, "Key", &PATCH_FILTER_KEYS));
        }
        if !baseline_filter_keys(operating_system).contains(&key) {
            return Err(ApiError::validation(format!(
                "{member}: patch filter key {key} is not supported for operating system {operating_system}; use one of {}",
                baseline_filter_keys(operating_system).join(", ")
            )));
        }
        if filters.iter().any(|f| f.key == key) {
            return Err(ApiError::validation(format!("{member}: patch filter key {key} is used twice")));
        }
        let values = filter
            .strings("Values", Some(20))?
            .ok_or_else(|| ApiError::constraint("null", "values", "Member must not be null"))?;
        if values.is_empty() {
            return Err(ApiError::constraint(
                "[]",
                "values",
                "Member must have length greater than or equal to 1",
            ));
        }
        for value in &values {
            check_length(value, "Values", 1, 64)?;
        }
        filters.push(PatchFilter {
            key: key.to_string(),
            values: values.iter().map(|s| s.to_string()).collect(),
        });
    }
    Ok(filters)
}

fn compliance_level(body: &Body, key: &str) -> Result<Option<String>, ApiError> {
    match body.str(key)? {
        None => Ok(None),
        Some(level) if COMPLIANCE_LEVELS.contains(&level) => Ok(Some(level.to_string())),
        Some(level) => Err(enum_error(level, key, &COMPLIANCE_LEVELS)),
    }
}

fn parse_rules(body: &Body, operating_system: &str) -> Result<Option<Vec<PatchRule>>, ApiError> {
    let Some(group) = body.object("ApprovalRules")? else { return Ok(None) };
    let mut rules = Vec::new();
    for (index, rule) in group.objects("PatchRules", Some(10))?.into_iter().enumerate() {
        let member = format!("ApprovalRules.PatchRules[{index}]");
        let filter_group = rule
            .object("PatchFilterGroup")?
            .ok_or_else(|| ApiError::constraint("null", "patchFilterGroup", "Member must not be null"))?;
        let filters = parse_filter_group(&filter_group, operating_system, &member)?;
        let approve_after_days = match rule.int("ApproveAfterDays")? {
            None => None,
            Some(days) if (0..=360).contains(&days) => Some(days as u32),
            Some(days) => {
                let bound = if days < 0 {
                    "Member must have value greater than or equal to 0"
                } else {
                    "Member must have value less than or equal to 360"
                };
                return Err(ApiError::constraint(days, "approveAfterDays", bound));
            }
        };
        let approve_until_date = rule.str("ApproveUntilDate")?.map(str::to_string);
        if let Some(date) = &approve_until_date {
            check_length(date, "ApproveUntilDate", 1, 10)?;
            if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
                return Err(ApiError::validation(format!(
                    "{member}: ApproveUntilDate {date} is not a date; use YYYY-MM-DD"
                )));
            }
        }
        if approve_after_days.is_some() && approve_until_date.is_some() {
            return Err(ApiError::validation(format!(
                "{member}: specify either ApproveAfterDays or ApproveUntilDate, not both"
            )));
        }
        rules.push(PatchRule {
            filters,
            compliance_level: compliance_level(&rule, "ComplianceLevel")?,
            approve_after_days,
            approve_until_date,
            enable_non_security: rule.bool("EnableNonSecurity")?,
        });
    }
    Ok(Some(rules))
}

fn patch_id_list(body: &Body, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    let Some(ids) = body.strings(key, Some(50))? else { return Ok(None) };
    for id in &ids {
        check_length(id, key, 1, 100)?;
    }
    Ok(Some(ids.iter().map(|s| s.to_string()).collect()))
}

/// Reads the optional baseline members. With `replace`, members left out are cleared.
fn apply_baseline_fields(baseline: &mut Baseline, body: &Body, replace: bool) -> Result<(), ApiError> {
    let os = baseline.operating_system.clone();
    macro_rules! set {
        ($field:expr, $value:expr) => {
            match $value {
                Some(value) => $field = value,
                None if replace => $field = Default::default(),
                None => {}
            }
        };
    }
    let global = match body.object("GlobalFilters")? {
        Some(group) => Some(Some(parse_filter_group(&group, &os, "GlobalFilters")?)),
        None => None,
    };
    set!(baseline.global_filters, global);
    set!(baseline.approval_rules, parse_rules(body, &os)?.map(Some));
    set!(baseline.approved_patches, patch_id_list(body, "ApprovedPatches")?);
    set!(baseline.rejected_patches, patch_id_list(body, "RejectedPatches")?);
    set!(
        baseline.approved_patches_compliance_level,
        compliance_level(body, "ApprovedPatchesComplianceLevel")?.map(Some)
    );
    set!(
        baseline.approved_patches_enable_non_security,
        body.bool("ApprovedPatchesEnableNonSecurity")?.map(Some)
    );
    let action = match body.str("RejectedPatchesAction")? {
        None => None,
        Some(action @ ("ALLOW_AS_DEPENDENCY" | "BLOCK")) => Some(Some(action.to_string())),
        Some(other) => {
            return Err(enum_error(other, "RejectedPatchesAction", &["ALLOW_AS_DEPENDENCY", "BLOCK"]))
        }
    };
    set!(baseline.rejected_patches_action, action);
    let description = match body.str("Description")? {
        Some(text) => {
            check_length(text, "Description", 1, 1024)?;
            Some(Some(text.to_string()))
        }
        None => None,
    };
    set!(baseline.description, description);
    let sources = match body.list("Sources")? {
        Some(list) if list.len() > 20 => {
            return Err(ApiError::constraint(
                format!("[{} sources]", list.len()),
                "sources",
                "Member must have length less than or equal to 20",
            ))
        }
        Some(list) => Some(list.clone()),
        None => None,
    };
    set!(baseline.sources, sources);
    let status = match body.str("AvailableSecurityUpdatesComplianceStatus")? {
        None => None,
        Some(s @ ("COMPLIANT" | "NON_COMPLIANT")) => Some(Some(s.to_string())),
        Some(other) => {
            return Err(enum_error(
                other,
                "AvailableSecurityUpdatesComplianceStatus",
                &["COMPLIANT", "NON_COMPLIANT"],
            ))
        }
    };
    set!(baseline.available_security_updates_compliance_status, status);
    Ok(())
}

fn filters_json(filters: &[PatchFilter]) -> Vec<Value> {
    filters.iter().map(|f| json!({"Key": f.key, "Values": f.values})).collect()
}

fn rule_json(rule: &PatchRule) -> Value {
    let mut value = json!({
        "PatchFilterGroup": { "PatchFilters": filters_json(&rule.filters) },
        "ComplianceLevel": rule.compliance_level.as_deref().unwrap_or("UNSPECIFIED"),
        "EnableNonSecurity": rule.enable_non_security.unwrap_or(false),
    });
    if let Some(fields) = value.as_object_mut() {
        if let Some(days) = rule.approve_after_days {
            fields.insert("ApproveAfterDays".into(), json!(days));
        }
        if let Some(date) = &rule.approve_until_date {
            fields.insert("ApproveUntilDate".into(), json!(date));
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_and_error_patterns() {
        for (text, concurrency, errors) in [
            ("50", true, true),
            ("0", false, true),
            ("10%", true, true),
            ("0%", false, true),
            ("100%", true, true),
            ("101%", false, false),
            ("05", false, false),
            ("", false, false),
            ("12345678", false, false),
            ("abc", false, false),
        ] {
            assert_eq!(is_max_concurrency(text), concurrency, "MaxConcurrency {text}");
            assert_eq!(is_max_errors(text), errors, "MaxErrors {text}");
        }
    }

    #[test]
    fn paging_takes_a_page_and_points_at_the_next_item() {
        let (rows, next) = page((0..10u64).map(|i| (i, i)), 4);
        assert_eq!((rows, next), (vec![0, 1, 2, 3], Some(4)));
        let (rows, next) = page((0..4u64).map(|i| (i, i)), 4);
        assert_eq!((rows, next), (vec![0, 1, 2, 3], None));
    }

    #[test]
    fn targets_and_instance_information_filters() {
        let world = World::new(&crate::scenario::Scenario::demo().with_instances(40));
        let instance =
            world.instances.iter().find(|i| i.is_managed() && i.tag("Role").is_some()).expect("a node");
        let role = instance.tag("Role").unwrap_or_default().to_string();
        let v = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(target_matches(instance, &format!("tag:{}", "Role"), &v(&["other", &role])));
        assert!(!target_matches(instance, "tag:Role", &v(&["other"])));
        assert!(target_matches(instance, "tag-key", &v(&["Nope", "Role"])));
        assert!(target_matches(instance, "InstanceIds", &v(&[&instance.id])));
        assert!(target_matches(instance, "InstanceIds", &v(&["*"])));
        assert!(!target_matches(instance, "resource-groups:Name", &v(&["x"])));
        let ping = instance.agent.map(|a| a.as_str()).unwrap_or_default();
        assert!(instance_info_matches(instance, "PingStatus", &v(&[ping])));
        assert!(instance_info_matches(instance, "PlatformTypes", &v(&[instance.platform.platform_type()])));
        assert!(instance_info_matches(instance, "tag:Role", &v(&[&role])));
        assert!(!instance_info_matches(instance, "AssociationStatus", &v(&["Success"])));
    }

    #[test]
    fn instants() {
        assert!(parse_instant("2026-11-28T00:00:00Z").is_some());
        assert!(parse_instant("2026-11-28T00:00:00.123Z").is_some());
        assert!(parse_instant("2026-11-28").is_some());
        assert!(parse_instant("yesterday").is_none());
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
    }
}
