//! One window occurrence, from firing to summary; the same path serves `run-now`, `scan` and
//! `install` (ad-hoc runs recorded as `manual:...`) and the resumption of a run whose process
//! died.
//!
//! An occurrence becomes a [`RunPlan`]: the name it is recorded under, its scheduled start,
//! when releasing stops (end minus cutoff), what happens to commands still running then, and
//! its tasks. [`execute`] then:
//!
//! 1. takes the lock of every group the plan patches ([`GroupLocks`]), so that two runs of one
//!    group never overlap, in this process or another;
//! 2. stores the plan, its run id and its SnapshotId in the audit log (`window-run-start`), then
//!    records the run (`running`, or `late` when it starts more than [`LATE_GRACE`] after its
//!    scheduled start): both before any AWS call, so a restarted process finds the same
//!    identity and resumes instead of starting over;
//! 3. runs the tasks by priority, lower first, equal priorities in parallel; each resolves its
//!    groups now, records the inventory, sends only to instances SSM can reach (the others are
//!    coverage gaps, logged and kept in the store with their managed and ping state), rolls out
//!    through [`rollout::run`], and syncs the compliance of its targets after a Scan or Install;
//! 4. starts nothing after end minus cutoff; with `CANCEL_TASK` it cancels what is still running
//!    at that instant (as SSM does), with `CONTINUE_TASK` it lets it finish;
//! 5. records each task's and the run's status and ends with one summary log line.
//!
//! Along the way it publishes its events ([`crate::events`]): `Window Run Started` once the run
//! is recorded, `Coverage Gap Found` for gaps not announced before, SLA transitions after each
//! sync, `Task Failed` and `Window Run Completed` at the end. Publishing never fails a run.
//!
//! A stop request (SIGTERM) stops releasing batches and leaves the run recorded as running:
//! the next start resumes it ([`interrupted_runs`]), and the rollout picks up what it had
//! planned and sent from the store, so nothing is sent twice.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchd_aws::{Coverage, Standing, Target};
use patchd_config::{
    Config, CutoffBehavior, Gate, InstallHooks, Limit, LocalHook, Located, Operation, Origin, Promotion,
    RebootOption, TagCap, Task, WavePolicy, Window,
};
use patchd_store::{
    CommandStatus, NewWindowRun, StoreError, WindowRunId, WindowRunQuery, WindowRunRecord, WindowRunStatus,
    WindowRunUpdate, WindowTaskId, WindowTaskObservation, WindowTaskRecord,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{error, info, warn};
use uuid::Uuid;

use crate::events::{CoverageGap, Event, TaskFailed, WindowRunCompleted, WindowRunStarted};
use crate::locks::{GroupLocks, LockError};
use crate::rollout::{self, PollPolicy, Progress, Rollout, RolloutOutcome};
use crate::sync::{self, ReleaseDates, SyncRequest};
use crate::{Context, Scope};

/// A run that starts this long after its scheduled start is recorded and logged as late.
pub const LATE_GRACE: chrono::Duration = chrono::Duration::seconds(60);

/// The audit action that stores a run's plan and identity before any work.
pub const RUN_START_ACTION: &str = "window-run-start";

/// Prefix of the names ad-hoc runs are recorded under.
pub const MANUAL_PREFIX: &str = "manual:";

/// How long a waiting run sleeps between two attempts at a held group lock.
const LOCK_RETRY: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Plans

/// What one run does. Stored in the audit log when the run starts, so a restarted process runs
/// exactly the same plan, whatever the configuration says by then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunPlan {
    /// The window name the run is recorded under: the window's own, or `manual:...`.
    pub record_as: String,
    pub scheduled_start: DateTime<Utc>,
    /// End minus cutoff: no batch is released, and no task starts, from this instant on.
    /// None for ad-hoc scans and installs, which run until done.
    pub stop_releasing_at: Option<DateTime<Utc>>,
    /// `CANCEL_TASK`: commands still running at `stop_releasing_at` are cancelled.
    pub cancel_at_cutoff: bool,
    pub tasks: Vec<TaskSpec>,
}

/// A task as stored with its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub name: String,
    /// `Scan` or `Install`.
    pub operation: String,
    pub groups: Vec<String>,
    /// `RebootIfNeeded` or `NoReboot`.
    pub reboot_option: String,
    /// As written in the configuration: `10` or `10%`.
    pub max_concurrency: String,
    pub max_errors: String,
    pub priority: u32,
    pub timeout_seconds: u32,
    /// Waves, bake, tag cap and gate; absent for a plain rollout (and in plans stored before
    /// waves existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waves: Option<WaveSpec>,
    /// Where a promoting task takes its patches from; absent for every other task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromoteSpec>,
}

/// [`Promotion`] as stored with a run's plan. The promoted set itself is chosen when the task
/// starts and kept in the store, so a resumed task installs the set it chose first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteSpec {
    pub from: String,
    pub bucket: String,
    pub prefix: String,
}

/// [`WavePolicy`] as stored with a run's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveSpec {
    pub shares: Vec<String>,
    pub bake_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_tag: Option<TagCapSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<HooksSpec>,
}

/// [`InstallHooks`] as stored with a run's plan: the documents' names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HooksSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_install: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_exit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagCapSpec {
    pub tag: String,
    pub max: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateSpec {
    pub reboot_truth: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<String>,
    /// Program and arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default)]
    pub command_timeout_seconds: u64,
}

impl WaveSpec {
    fn from_policy(policy: &WavePolicy) -> Option<WaveSpec> {
        if policy.is_plain() && policy.bake.is_zero() {
            return None;
        }
        Some(WaveSpec {
            shares: policy.shares.iter().map(ToString::to_string).collect(),
            bake_seconds: policy.bake.as_secs(),
            max_per_tag: policy.max_per_tag.as_ref().map(|c| TagCapSpec { tag: c.tag.clone(), max: c.max }),
            gate: policy.gate.as_ref().map(|g| GateSpec {
                reboot_truth: g.reboot_truth,
                url: g.url.clone(),
                alarm: g.alarm.clone(),
                command: g
                    .command
                    .iter()
                    .flat_map(|c| std::iter::once(c.program.clone()).chain(c.args.iter().cloned()))
                    .collect(),
                command_timeout_seconds: g.command.as_ref().map_or(0, |c| c.timeout.as_secs()),
            }),
            hooks: policy.hooks.as_ref().map(|h| HooksSpec {
                pre_install: h.pre_install.clone(),
                post_install: h.post_install.clone(),
                on_exit: h.on_exit.clone(),
            }),
        })
    }

    fn to_policy(&self) -> Option<WavePolicy> {
        let shares = self.shares.iter().map(|s| parse_limit(s)).collect::<Option<Vec<_>>>()?;
        let gate = self.gate.as_ref().map(|g| Gate {
            reboot_truth: g.reboot_truth,
            url: g.url.clone(),
            alarm: g.alarm.clone(),
            command: g.command.split_first().map(|(program, args)| LocalHook {
                program: program.clone(),
                args: args.to_vec(),
                timeout: Duration::from_secs(g.command_timeout_seconds.max(1)),
            }),
        });
        Some(WavePolicy {
            shares,
            bake: Duration::from_secs(self.bake_seconds),
            max_per_tag: self.max_per_tag.as_ref().map(|c| TagCap { tag: c.tag.clone(), max: c.max }),
            gate,
            hooks: self.hooks.as_ref().map(|h| InstallHooks {
                pre_install: h.pre_install.clone(),
                post_install: h.post_install.clone(),
                on_exit: h.on_exit.clone(),
            }),
        })
    }
}

impl TaskSpec {
    pub fn from_task(task: &Task) -> TaskSpec {
        TaskSpec {
            name: task.name.clone(),
            operation: task.operation.as_ssm().to_string(),
            groups: task.groups.iter().map(|g| g.value.clone()).collect(),
            reboot_option: task.reboot_option.as_ssm().to_string(),
            max_concurrency: task.max_concurrency.to_string(),
            max_errors: task.max_errors.to_string(),
            priority: task.priority,
            timeout_seconds: task.timeout_seconds,
            waves: WaveSpec::from_policy(&task.waves),
            promote: task.promote.as_ref().map(|p| PromoteSpec {
                from: p.from.value.clone(),
                bucket: p.bucket.clone(),
                prefix: p.prefix.clone(),
            }),
        }
    }

    /// The configuration type the rollout takes. Fails only on a plan written by hand.
    pub fn to_task(&self) -> Result<Task, WindowError> {
        let invalid = |what: &str| WindowError::InvalidPlan(format!("task `{}`: {what}", self.name));
        let operation = match self.operation.as_str() {
            "Scan" => Operation::Scan,
            "Install" => Operation::Install,
            _ => return Err(invalid("unknown operation")),
        };
        let reboot_option = match self.reboot_option.as_str() {
            "RebootIfNeeded" => RebootOption::RebootIfNeeded,
            "NoReboot" => RebootOption::NoReboot,
            _ => return Err(invalid("unknown reboot option")),
        };
        let origin = Origin { file: Arc::new(PathBuf::from("<stored run plan>")), line: 0, col: 0 };
        Ok(Task {
            name: self.name.clone(),
            operation,
            groups: self
                .groups
                .iter()
                .map(|g| Located { value: g.clone(), origin: origin.clone() })
                .collect(),
            reboot_option,
            max_concurrency: parse_limit(&self.max_concurrency)
                .ok_or_else(|| invalid("bad max_concurrency"))?,
            max_errors: parse_limit(&self.max_errors).ok_or_else(|| invalid("bad max_errors"))?,
            priority: self.priority,
            timeout_seconds: self.timeout_seconds,
            waves: match &self.waves {
                None => WavePolicy::default(),
                Some(spec) => spec.to_policy().ok_or_else(|| invalid("bad waves"))?,
            },
            promote: self.promote.as_ref().map(|p| Promotion {
                from: Located { value: p.from.clone(), origin: origin.clone() },
                bucket: p.bucket.clone(),
                prefix: p.prefix.clone(),
            }),
            origin,
        })
    }
}

fn parse_limit(text: &str) -> Option<Limit> {
    match text.strip_suffix('%') {
        Some(p) => p.parse().ok().map(Limit::Percent),
        None => text.parse().ok().map(Limit::Count),
    }
}

impl RunPlan {
    /// An occurrence of a configured window.
    pub fn for_window(window: &Window, scheduled_start: DateTime<Utc>) -> RunPlan {
        RunPlan::window_as(window, window.name.clone(), scheduled_start)
    }

    /// `patchd run-now WINDOW`: the window's tasks, now, with the window's duration and cutoff
    /// counted from now; recorded as `manual:WINDOW`.
    pub fn window_now(window: &Window, now: DateTime<Utc>) -> RunPlan {
        RunPlan::window_as(window, format!("{MANUAL_PREFIX}{}", window.name), now)
    }

    fn window_as(window: &Window, record_as: String, scheduled_start: DateTime<Utc>) -> RunPlan {
        let scheduled_start = to_micros(scheduled_start);
        RunPlan {
            record_as,
            scheduled_start,
            stop_releasing_at: Some(stop_releasing_at(window, scheduled_start)),
            cancel_at_cutoff: window.cutoff_behavior == CutoffBehavior::CancelTask,
            tasks: window.tasks.iter().map(TaskSpec::from_task).collect(),
        }
    }

    /// `patchd scan|install --group G...`: one task over the groups, recorded as
    /// `manual:scan:G1+G2`. It runs until done; the error budget still applies.
    pub fn adhoc(request: &AdhocRequest<'_>, now: DateTime<Utc>) -> RunPlan {
        let op = request.operation.as_ssm().to_lowercase();
        RunPlan {
            record_as: format!("{MANUAL_PREFIX}{op}:{}", request.groups.join("+")),
            scheduled_start: to_micros(now),
            stop_releasing_at: None,
            cancel_at_cutoff: false,
            tasks: vec![TaskSpec {
                name: op,
                operation: request.operation.as_ssm().to_string(),
                groups: request.groups.to_vec(),
                reboot_option: request.reboot_option.as_ssm().to_string(),
                max_concurrency: request.max_concurrency.to_string(),
                max_errors: request.max_errors.to_string(),
                priority: 1,
                timeout_seconds: request.timeout_seconds,
                waves: None,
                promote: None,
            }],
        }
    }

    /// Every group the plan patches, sorted, each once.
    pub fn groups(&self) -> Vec<&str> {
        let mut groups: Vec<&str> =
            self.tasks.iter().flat_map(|t| t.groups.iter().map(String::as_str)).collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }
}

/// The store keeps instants to the microsecond: a plan's start is cut to that, so the start
/// read back from the store finds the plan again.
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// End minus cutoff of the occurrence starting at `start`.
pub fn stop_releasing_at(window: &Window, start: DateTime<Utc>) -> DateTime<Utc> {
    start + window.duration - window.cutoff
}

/// An ad-hoc Scan or Install (`patchd scan`, `patchd install`).
#[derive(Debug, Clone, Copy)]
pub struct AdhocRequest<'a> {
    pub operation: Operation,
    pub groups: &'a [String],
    pub reboot_option: RebootOption,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub timeout_seconds: u32,
}

// ---------------------------------------------------------------------------------------------
// Environment, progress and results

/// Whether a run waits for a group lock another run holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Fail at once, naming the holder (manual commands).
    Fail,
    /// Retry until the plan's `stop_releasing_at`, then record the occurrence as missed
    /// (the daemon). A plan without one waits until stopped.
    UntilCutoff,
}

/// What a run works with.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub ctx: &'a Context,
    /// The groups tasks resolve at firing time.
    pub config: &'a Config,
    pub release_dates: &'a ReleaseDates,
    /// `[daemon] state_dir`: the group locks live in its `locks/` folder.
    pub state_dir: &'a Path,
    pub poll: &'a PollPolicy,
    pub lock_wait: LockWait,
    pub on_progress: &'a (dyn Fn(&TaskProgress<'_>) + Send + Sync),
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("scope", &self.ctx.scope)
            .field("state_dir", &self.state_dir)
            .field("lock_wait", &self.lock_wait)
            .finish_non_exhaustive()
    }
}

/// Progress of one task of a run, for progress lines.
#[derive(Debug, Clone, Copy)]
pub struct TaskProgress<'a> {
    pub run: &'a str,
    pub task: &'a str,
    pub progress: &'a Progress,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// Every task ran; the run's status is final (`succeeded`, `failed` or `cancelled`).
    Finished(WindowRunStatus),
    /// A stop was requested: no new batch was released, the run stays recorded as running and
    /// resumes at the next start.
    Stopped,
    /// The occurrence was already finished (recorded with this status): nothing was done.
    AlreadyDone(WindowRunStatus),
    /// Recorded as missed: it could not start before end minus cutoff.
    Missed,
}

/// One task's share of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSummary {
    pub name: String,
    pub operation: Operation,
    pub status: CommandStatus,
    /// Instances the task's groups selected, coverage gaps included.
    pub targeted: usize,
    /// Coverage gaps: not managed by SSM, or agent not online. Never sent a command.
    pub gaps: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Sent, but SSM could not deliver (instance stopped, agent gone, delivery timeout).
    pub undeliverable: usize,
    /// Cancelled (the cutoff's `CANCEL_TASK`) or terminated by SSM past MaxErrors.
    pub cancelled: usize,
    /// Managed instances never sent a command: cutoff, stop or error budget.
    pub not_sent: usize,
    pub budget_exceeded: bool,
    /// The failed gate that halted the task's waves, in words.
    pub gate_failure: Option<String>,
    /// What a promoting task installs, in words ("the 3 patches window `staging` installed
    /// in run 12").
    pub promoted: Option<String>,
    /// Why a promoting task could not start; nothing was sent.
    pub promotion_failure: Option<String>,
    /// For an install task of a window another task promotes from: the patches its
    /// installs were recorded with, None when not read.
    pub installs_recorded: Option<usize>,
    /// Waves the task was planned in (1 without waves), and the highest one sent.
    pub waves: u32,
    pub waves_sent: u32,
    pub gates_passed: usize,
    pub send_calls: u64,
    pub poll_calls: u64,
    pub sync_calls: u64,
    /// Instances whose results the compliance sync after the task could not read (they are in
    /// the sync backlog). Non-zero makes a run that would have succeeded `incomplete`.
    pub sync_unread: usize,
}

impl TaskSummary {
    fn new(spec: &TaskSpec, operation: Operation) -> TaskSummary {
        TaskSummary {
            name: spec.name.clone(),
            operation,
            status: CommandStatus::Pending,
            targeted: 0,
            gaps: 0,
            succeeded: 0,
            failed: 0,
            undeliverable: 0,
            cancelled: 0,
            not_sent: 0,
            budget_exceeded: false,
            gate_failure: None,
            promoted: None,
            promotion_failure: None,
            installs_recorded: None,
            waves: 0,
            waves_sent: 0,
            gates_passed: 0,
            send_calls: 0,
            poll_calls: 0,
            sync_calls: 0,
            sync_unread: 0,
        }
    }
}

/// What a run did, also written as its summary log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub record_as: String,
    pub scheduled_start: DateTime<Utc>,
    pub window_run: Option<WindowRunId>,
    pub run_id: Option<Uuid>,
    pub end: RunEnd,
    pub late: bool,
    pub tasks: Vec<TaskSummary>,
    pub started_at: DateTime<Utc>,
    pub duration: Duration,
}

impl RunSummary {
    fn sum(&self, f: impl Fn(&TaskSummary) -> usize) -> usize {
        self.tasks.iter().map(f).sum()
    }
    pub fn targeted(&self) -> usize {
        self.sum(|t| t.targeted)
    }
    pub fn succeeded(&self) -> usize {
        self.sum(|t| t.succeeded)
    }
    pub fn failed(&self) -> usize {
        self.sum(|t| t.failed)
    }
    pub fn undeliverable(&self) -> usize {
        self.sum(|t| t.undeliverable)
    }
    /// Coverage gaps plus managed instances never sent a command.
    pub fn skipped(&self) -> usize {
        self.sum(|t| t.gaps + t.not_sent)
    }
    pub fn budget_exceeded(&self) -> bool {
        self.tasks.iter().any(|t| t.budget_exceeded)
    }
    /// Instances whose results the run's compliance syncs could not read.
    pub fn sync_unread(&self) -> usize {
        self.sum(|t| t.sync_unread)
    }
    /// SendCommand, polling and compliance-sync calls the run made (group resolution not
    /// included).
    pub fn api_calls(&self) -> u64 {
        self.tasks.iter().map(|t| t.send_calls + t.poll_calls + t.sync_calls).sum()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    #[error("stored run plan is unusable: {0}")]
    InvalidPlan(String),
}

// ---------------------------------------------------------------------------------------------
// Running

/// The audit record of a run's start: its plan and identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StartRecord {
    run_id: Uuid,
    snapshot_id: Uuid,
    plan: RunPlan,
    /// The scope the run was started in; absent in records from before multi-account
    /// support, which were all made in the home account's one region.
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl StartRecord {
    fn made_in(&self, scope: &Scope) -> bool {
        self.account.as_ref().is_none_or(|a| *a == scope.account)
            && self.region.as_ref().is_none_or(|r| *r == scope.region)
    }
}

/// Runs a plan to its end, or until `stop` turns true. See the module documentation.
pub async fn execute(
    env: &Env<'_>,
    plan: &RunPlan,
    mut stop: watch::Receiver<bool>,
) -> Result<RunSummary, WindowError> {
    let ctx = env.ctx;
    let name = plan.record_as.as_str();
    let mut summary = RunSummary {
        record_as: plan.record_as.clone(),
        scheduled_start: plan.scheduled_start,
        window_run: None,
        run_id: None,
        end: RunEnd::Missed,
        late: false,
        tasks: Vec::new(),
        started_at: Utc::now(),
        duration: Duration::ZERO,
    };
    let clock = std::time::Instant::now();

    let recorded_before = recorded_run(ctx, name, plan.scheduled_start).await?;
    if let Some(existing) = &recorded_before {
        if !in_progress(existing.status) {
            info!(window = name, scheduled_start = %plan.scheduled_start, status = %existing.status,
                "window occurrence already recorded as finished; nothing to do");
            summary.window_run = Some(existing.id);
            summary.end = RunEnd::AlreadyDone(existing.status);
            return Ok(summary);
        }
    }

    // Locks first: a run that waits for another run of its groups records nothing until it
    // can start, and one that cannot start before the cutoff is recorded as missed.
    let groups = plan.groups();
    let purpose = format!("window run {name} at {}", plan.scheduled_start);
    let ttl = env.config.daemon.lease.ttl;
    let _locks = loop {
        match GroupLocks::try_acquire(&ctx.store, env.state_dir, &ctx.scope, &groups, &purpose, ttl).await {
            Ok(locks) => break locks,
            Err(LockError::Held { group, holder, lock }) if env.lock_wait == LockWait::UntilCutoff => {
                let now = Utc::now();
                // A run already recorded must be resumed whatever the time: its commands'
                // outcomes are still to be collected.
                if recorded_before.is_none() && plan.stop_releasing_at.is_some_and(|at| now >= at) {
                    let reason = format!("group `{group}` stayed locked by {holder} until the cutoff");
                    record_missed(ctx, name, plan.scheduled_start, now, &reason).await?;
                    summary.end = RunEnd::Missed;
                    return Ok(summary);
                }
                warn!(window = name, group, holder, lock, "group locked by another run; waiting");
                tokio::select! {
                    _ = tokio::time::sleep(LOCK_RETRY) => {}
                    _ = stop.wait_for(|s| *s) => {
                        summary.end = RunEnd::Stopped;
                        return Ok(summary);
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    };

    // With the locks held, the record is authoritative: look again.
    let existing = recorded_run(ctx, name, plan.scheduled_start).await?;
    if let Some(existing) = &existing {
        if !in_progress(existing.status) {
            summary.window_run = Some(existing.id);
            summary.end = RunEnd::AlreadyDone(existing.status);
            return Ok(summary);
        }
    }
    let now = Utc::now();
    summary.started_at = now;
    if existing.is_none() && plan.stop_releasing_at.is_some_and(|at| now >= at) {
        record_missed(ctx, name, plan.scheduled_start, now, "end minus cutoff passed before it could start")
            .await?;
        return Ok(summary);
    }

    // Identity: recovered from the audit log when the run was started before, else new and
    // stored before the run is recorded and before any AWS call.
    let start = match find_start_record(ctx, name, plan.scheduled_start).await? {
        Some(start) => {
            info!(window = name, run_id = %start.run_id, "resuming an interrupted window run");
            start
        }
        None => {
            let start = StartRecord {
                run_id: Uuid::new_v4(),
                snapshot_id: Uuid::new_v4(),
                plan: plan.clone(),
                account: Some(ctx.scope.account.clone()),
                region: Some(ctx.scope.region.clone()),
            };
            let late_by = now - plan.scheduled_start;
            let details = serde_json::json!({
                "run_id": start.run_id,
                "snapshot_id": start.snapshot_id,
                "plan": start.plan,
                "account": start.account,
                "region": start.region,
                "late_seconds": late_by.num_seconds().max(0),
            });
            ctx.audit(now, RUN_START_ACTION, name, &details).await?;
            start
        }
    };
    let plan = &start.plan;
    let late = existing
        .as_ref()
        .map_or(now - plan.scheduled_start > LATE_GRACE, |r| r.status == WindowRunStatus::Late);
    summary.late = late;
    summary.run_id = Some(start.run_id);
    let run = match &existing {
        Some(r) => r.id,
        None => {
            let status = if late { WindowRunStatus::Late } else { WindowRunStatus::Running };
            let id = ctx
                .store
                .record_window_run(&NewWindowRun {
                    window: name,
                    scheduled_start: plan.scheduled_start,
                    account: &ctx.scope.account,
                    region: &ctx.scope.region,
                    started_at: Some(now),
                    status,
                })
                .await?;
            if late {
                let late_seconds = (now - plan.scheduled_start).num_seconds();
                warn!(window = name, scheduled_start = %plan.scheduled_start, late_seconds,
                    run_id = %start.run_id, "window started late");
                let details = serde_json::json!({ "window_run_id": id.get(), "late_seconds": late_seconds,
                    "scheduled_start": plan.scheduled_start });
                ctx.audit(now, "window-late-start", name, &details).await?;
            } else {
                info!(window = name, scheduled_start = %plan.scheduled_start, run_id = %start.run_id,
                    "window started");
            }
            id
        }
    };
    summary.window_run = Some(run);
    if existing.is_none() {
        // Resumed runs were announced when they first started.
        let mut tasks: Vec<&TaskSpec> = plan.tasks.iter().collect();
        tasks.sort_by_key(|t| t.priority);
        let started = Event::WindowRunStarted(WindowRunStarted {
            account: ctx.scope.account.clone(),
            region: ctx.scope.region.clone(),
            window: name.to_string(),
            run_id: start.run_id.to_string(),
            window_run_id: run.get(),
            scheduled_start: plan.scheduled_start,
            started_at: now,
            late,
            tasks: tasks.iter().map(|t| t.name.clone()).collect(),
            groups: plan.groups().into_iter().map(str::to_string).collect(),
        });
        ctx.events.publish(&[started]).await;
    }

    let recorded_tasks: Vec<WindowTaskRecord> = existing.map(|r| r.tasks).unwrap_or_default();
    let run_id = start.run_id.to_string();
    let ids = RunIds { run, run_id: &run_id, snapshot_id: start.snapshot_id };

    let mut specs: Vec<&TaskSpec> = plan.tasks.iter().collect();
    specs.sort_by_key(|t| t.priority);
    let mut halted: Option<&'static str> = None;
    let mut stopped = false;
    let mut index = 0;
    while index < specs.len() {
        let priority = specs[index].priority;
        let level: Vec<&TaskSpec> =
            specs[index..].iter().take_while(|t| t.priority == priority).copied().collect();
        index += level.len();
        if *stop.borrow() {
            stopped = true;
            break;
        }
        if halted.is_none() && plan.stop_releasing_at.is_some_and(|at| Utc::now() >= at) {
            halted = Some("cutoff");
        }
        if let Some(reason) = halted {
            for spec in level {
                summary.tasks.push(not_started(ctx, run, name, spec, reason).await?);
            }
            continue;
        }
        let runs: Vec<_> = level
            .iter()
            .map(|spec| {
                let recorded = recorded_tasks.iter().find(|t| t.name == spec.name);
                run_task(env, plan, &ids, spec, recorded, stop.clone())
            })
            .collect();
        let results = join_all(runs).await;
        for result in results {
            let (task, task_stopped) = result?;
            if task.budget_exceeded {
                halted = Some("an earlier task exceeded its error budget");
            } else if task.gate_failure.is_some() {
                halted = Some("an earlier task's wave gate failed");
            }
            stopped |= task_stopped;
            summary.tasks.push(task);
        }
        if stopped {
            break;
        }
    }

    summary.duration = clock.elapsed();
    let ended = Utc::now();
    if stopped {
        summary.end = RunEnd::Stopped;
        info!(window = name, run_id = %run_id, "window run stopped; it resumes at the next start");
    } else {
        let status = final_status(&summary.tasks);
        let sync_unread = u32::try_from(summary.sync_unread()).unwrap_or(u32::MAX);
        ctx.store
            .update_window_run(
                run,
                &WindowRunUpdate {
                    status,
                    started_at: None,
                    ended_at: Some(ended),
                    sync_unread: Some(sync_unread),
                },
            )
            .await?;
        summary.end = RunEnd::Finished(status);
        let details = serde_json::json!({
            "window_run_id": run.get(), "run_id": run_id, "status": status.as_str(),
            "targeted": summary.targeted(), "succeeded": summary.succeeded(), "failed": summary.failed(),
            "skipped": summary.skipped(), "api_calls": summary.api_calls(), "sync_unread": summary.sync_unread(),
        });
        ctx.audit(ended, "window-run-end", name, &details).await?;
        ctx.events.publish(&end_events(ctx, &summary, &run_id, status, ended)).await;
    }
    log_summary(&summary);
    Ok(summary)
}

/// `Task Failed` for each failed task, then `Window Run Completed`.
fn end_events(
    ctx: &Context,
    summary: &RunSummary,
    run_id: &str,
    status: WindowRunStatus,
    ended: DateTime<Utc>,
) -> Vec<Event> {
    let (account, region) = (&ctx.scope.account, &ctx.scope.region);
    let mut out: Vec<Event> = summary
        .tasks
        .iter()
        .filter(|t| matches!(t.status, CommandStatus::Failed | CommandStatus::TimedOut))
        .map(|t| {
            let reason = if let Some(gate) = &t.gate_failure {
                gate.clone()
            } else if let Some(promotion) = &t.promotion_failure {
                promotion.clone()
            } else if t.budget_exceeded {
                "error budget (max_errors) exceeded".to_string()
            } else if t.failed > 0 {
                format!("{} invocation(s) failed", t.failed)
            } else if t.not_sent > 0 {
                format!("{} instance(s) could not be sent the command", t.not_sent)
            } else {
                "targets could not be resolved or the rollout failed; see the daemon log".to_string()
            };
            Event::TaskFailed(TaskFailed {
                account: account.clone(),
                region: region.clone(),
                window: summary.record_as.clone(),
                run_id: run_id.to_string(),
                task: t.name.clone(),
                operation: t.operation.as_ssm().to_string(),
                reason,
                targeted: t.targeted,
                succeeded: t.succeeded,
                failed: t.failed,
                undeliverable: t.undeliverable,
                not_sent: t.not_sent,
                budget_exceeded: t.budget_exceeded,
            })
        })
        .collect();
    out.push(Event::WindowRunCompleted(WindowRunCompleted {
        account: account.clone(),
        region: region.clone(),
        window: summary.record_as.clone(),
        run_id: run_id.to_string(),
        window_run_id: summary.window_run.map_or(0, |id| id.get()),
        scheduled_start: summary.scheduled_start,
        started_at: summary.started_at,
        ended_at: ended,
        status: status.as_str().to_string(),
        targeted: summary.targeted(),
        succeeded: summary.succeeded(),
        failed: summary.failed(),
        undeliverable: summary.undeliverable(),
        skipped: summary.skipped(),
        duration_seconds: summary.duration.as_secs_f64(),
        budget_exceeded: summary.budget_exceeded(),
    }));
    out
}

fn in_progress(status: WindowRunStatus) -> bool {
    matches!(status, WindowRunStatus::Running | WindowRunStatus::Late | WindowRunStatus::Scheduled)
}

fn final_status(tasks: &[TaskSummary]) -> WindowRunStatus {
    if tasks.iter().any(|t| t.status == CommandStatus::Failed || t.status == CommandStatus::TimedOut) {
        WindowRunStatus::Failed
    } else if tasks.iter().any(|t| t.status == CommandStatus::Cancelled) {
        WindowRunStatus::Cancelled
    } else if tasks.iter().any(|t| t.sync_unread > 0) {
        // The commands succeeded, but their results are not all recorded: not a success yet.
        WindowRunStatus::Incomplete
    } else {
        WindowRunStatus::Succeeded
    }
}

/// The one structured line every run ends with.
fn log_summary(s: &RunSummary) {
    let status = match s.end {
        RunEnd::Finished(status) => status.as_str(),
        RunEnd::Stopped => "stopped",
        RunEnd::AlreadyDone(_) => "already-done",
        RunEnd::Missed => "missed",
    };
    let sends: u64 = s.tasks.iter().map(|t| t.send_calls).sum();
    let polls: u64 = s.tasks.iter().map(|t| t.poll_calls).sum();
    let syncs: u64 = s.tasks.iter().map(|t| t.sync_calls).sum();
    info!(
        window = %s.record_as,
        run_id = s.run_id.map(|u| u.to_string()).unwrap_or_default(),
        status,
        late = s.late,
        instances_targeted = s.targeted(),
        succeeded = s.succeeded(),
        failed = s.failed(),
        undeliverable = s.undeliverable(),
        skipped = s.skipped(),
        budget_exceeded = s.budget_exceeded(),
        duration_seconds = s.duration.as_secs_f64(),
        api_calls = s.api_calls(),
        send_command_calls = sends,
        poll_calls = polls,
        sync_calls = syncs,
        sync_unread = s.sync_unread(),
        "window run summary"
    );
}

struct RunIds<'a> {
    run: WindowRunId,
    run_id: &'a str,
    snapshot_id: Uuid,
}

/// A task that never started (cutoff, or an earlier task's error budget): recorded cancelled.
async fn not_started(
    ctx: &Context,
    run: WindowRunId,
    window: &str,
    spec: &TaskSpec,
    reason: &str,
) -> Result<TaskSummary, WindowError> {
    let task = spec.to_task()?;
    warn!(window, task = %spec.name, reason, "task not started");
    let now = Utc::now();
    ctx.store
        .record_window_task(
            run,
            &WindowTaskObservation {
                name: &spec.name,
                operation: task.operation,
                command_id: None,
                status: CommandStatus::Cancelled,
                started_at: None,
                ended_at: Some(now),
            },
        )
        .await?;
    let mut summary = TaskSummary::new(spec, task.operation);
    summary.status = CommandStatus::Cancelled;
    Ok(summary)
}

/// One task: targets, inventory, rollout, cutoff, sync. Returns its summary and whether it
/// stopped on request.
async fn run_task(
    env: &Env<'_>,
    plan: &RunPlan,
    ids: &RunIds<'_>,
    spec: &TaskSpec,
    recorded: Option<&WindowTaskRecord>,
    stop: watch::Receiver<bool>,
) -> Result<(TaskSummary, bool), WindowError> {
    let ctx = env.ctx;
    let window = plan.record_as.as_str();
    let task = spec.to_task()?;
    let mut summary = TaskSummary::new(spec, task.operation);

    if let Some(done) = recorded.filter(|t| is_terminal(t.status)) {
        // Finished before the restart: its outcome is in the store.
        summary.status = done.status;
        count_recorded(ctx, done.id, &mut summary).await?;
        info!(window, task = %spec.name, status = %done.status, "task already finished before the restart");
        return Ok((summary, false));
    }

    // Targets as the groups select them now.
    let now = Utc::now();
    let mut targets: BTreeMap<String, Target> = BTreeMap::new();
    let mut resolve_failed = None;
    for group in &spec.groups {
        let Some(definition) = env.config.group(group) else {
            resolve_failed = Some(format!("group `{group}` is not in the configuration"));
            continue;
        };
        match ctx.aws.resolve_group(definition).await {
            Ok(found) => targets.extend(found.into_iter().map(|t| (t.instance_id.clone(), t))),
            Err(e) => resolve_failed = Some(format!("group `{group}` could not be resolved: {e}")),
        }
    }
    let targets: Vec<Target> = targets.into_values().collect();
    summary.targeted = targets.len();
    if !targets.is_empty() {
        if let Err(e) = sync::record_inventory(ctx, &targets, now).await {
            warn!(window, task = %spec.name, error = %e, "inventory not recorded");
        }
    }
    let managed: Vec<String> =
        targets.iter().filter(|t| t.can_take_commands()).map(|t| t.instance_id.clone()).collect();
    let gaps: Vec<&Target> = targets.iter().filter(|t| !t.can_take_commands()).collect();
    summary.gaps = gaps.len();
    for gap in &gaps {
        let coverage = match &gap.coverage {
            Coverage::Unmanaged => "not managed by ssm",
            Coverage::ConnectionLost { .. } => "ssm agent not online",
            Coverage::Managed { .. } => "managed",
        };
        warn!(window, task = %spec.name, instance = %gap.instance_id, coverage, "coverage gap: no command sent");
    }
    let gap_events: Vec<CoverageGap> = gaps
        .iter()
        .map(|gap| {
            let (kind, ping) = match &gap.coverage {
                Coverage::ConnectionLost { agent } => ("agent-offline", Some(agent.ping.to_string())),
                _ => ("not-managed", None),
            };
            CoverageGap {
                account: ctx.scope.account.clone(),
                region: ctx.scope.region.clone(),
                instance_id: gap.instance_id.clone(),
                gap: kind.to_string(),
                ping_status: ping,
                window: window.to_string(),
                task: spec.name.clone(),
                groups: spec.groups.clone(),
            }
        })
        .collect();
    let examined: Vec<String> = targets.iter().map(|t| t.instance_id.clone()).collect();
    crate::announce::announce_gaps(ctx, &examined, gap_events, now).await;

    let task_id = ctx
        .store
        .record_window_task(
            ids.run,
            &WindowTaskObservation {
                name: &spec.name,
                operation: task.operation,
                command_id: None,
                status: CommandStatus::InProgress,
                started_at: Some(now),
                ended_at: None,
            },
        )
        .await?;
    info!(window, task = %spec.name, operation = task.operation.as_ssm(), targeted = targets.len(),
        managed = managed.len(), gaps = gaps.len(), "task started");

    if let Some(problem) = resolve_failed {
        error!(window, task = %spec.name, problem, "task failed: targets unknown");
        summary.status = CommandStatus::Failed;
        finish_task(ctx, ids.run, spec, task.operation, CommandStatus::Failed).await?;
        return Ok((summary, false));
    }

    let mut install_list_url = None;
    if let (Some(promotion), false) = (&task.promote, managed.is_empty()) {
        match crate::promotion::prepare(ctx, ids.run_id, task_id, &spec.name, promotion).await {
            Ok(chosen) => {
                summary.promoted = Some(format!(
                    "installs the {} patch(es) window `{}` installed in run {}",
                    chosen.patches.len(),
                    chosen.from_window,
                    chosen.source_run
                ));
                if chosen.patches.is_empty() {
                    info!(window, task = %spec.name, from = %chosen.from_window,
                        "the promoted run installed nothing, so nothing is sent");
                    summary.status = CommandStatus::Success;
                    finish_task(ctx, ids.run, spec, task.operation, CommandStatus::Success).await?;
                    return Ok((summary, false));
                }
                install_list_url = Some(chosen.list_url);
            }
            Err(e) => {
                error!(window, task = %spec.name, error = %e, "task failed: nothing to promote");
                summary.promotion_failure = Some(e.to_string());
                summary.not_sent = managed.len();
                summary.status = CommandStatus::Failed;
                finish_task(ctx, ids.run, spec, task.operation, CommandStatus::Failed).await?;
                return Ok((summary, false));
            }
        }
    }

    let rollout = Rollout {
        run_id: ids.run_id,
        task: &task,
        task_id,
        targets: &managed,
        snapshot_id: ids.snapshot_id,
        stop_releasing_at: plan.stop_releasing_at,
        poll: env.poll.clone(),
        capped_tag_values: match &task.waves.max_per_tag {
            None => HashMap::new(),
            Some(cap) => targets
                .iter()
                .filter_map(|t| Some((t.instance_id.clone(), t.tags.get(&cap.tag)?.clone())))
                .collect(),
        },
        install_list_url: install_list_url.as_deref(),
    };
    let report = |progress: &Progress| {
        (env.on_progress)(&TaskProgress { run: window, task: &spec.name, progress });
    };
    let outcome =
        if managed.is_empty() { None } else { Some(roll_out(env, plan, &rollout, stop, &report).await) };
    let outcome: Option<RolloutOutcome> = match outcome {
        None => None,
        Some(Ok(outcome)) => Some(outcome),
        Some(Err(e)) if e.is_deposed() => {
            // Nothing more may be written under this process's term: the new leader resumes
            // the rollout from what the store holds.
            warn!(window, task = %spec.name, error = %e, "rollout handed over: this process no longer leads");
            return Ok((summary, true));
        }
        Some(Err(e)) => {
            error!(window, task = %spec.name, error = %e, "rollout failed");
            summary.status = CommandStatus::Failed;
            finish_task(ctx, ids.run, spec, task.operation, CommandStatus::Failed).await?;
            return Ok((summary, false));
        }
    };
    if let Some(o) = &outcome {
        summary.succeeded = o.progress.succeeded;
        summary.failed = o.progress.failed;
        summary.undeliverable = o.progress.undeliverable;
        summary.cancelled = o.progress.cancelled;
        summary.not_sent = o.not_sent;
        summary.budget_exceeded = o.budget_exceeded;
        summary.gate_failure = o.gate_failure.as_ref().map(ToString::to_string);
        summary.waves = o.progress.waves;
        summary.waves_sent = o.progress.wave;
        summary.gates_passed = o.gates_passed;
        summary.send_calls = o.send_calls as u64;
        summary.poll_calls = o.poll_calls as u64;
        if o.stopped || o.abandoned {
            return Ok((summary, true));
        }
    }

    // The compliance of what the task touched, so the history follows every Scan and Install.
    let finished = summary.succeeded + summary.failed;
    if finished > 0 {
        let source = format!("window:{window}");
        // Every instance of the groups SSM manages, not only those sent the command: an agent
        // that lost its connection still has its last results in SSM, and reading an
        // unchanged one costs a 50th of a call.
        let with_agent: Vec<String> =
            targets.iter().filter(|t| t.has_agent()).map(|t| t.instance_id.clone()).collect();
        let request = SyncRequest { source: &source, instance_ids: &with_agent };
        match sync::sync_compliance(ctx, &request, env.release_dates).await {
            Ok(outcome) => {
                summary.sync_calls = (outcome.state_calls + outcome.patch_calls) as u64;
                summary.sync_unread = outcome.unread.len();
            }
            Err(e) => {
                // The store failed under the sync: what it did not commit is unread, and the
                // next sync (whose end times still differ from SSM's) reads it.
                error!(window, task = %spec.name, error = %e, "compliance sync after the task failed");
                summary.sync_unread = with_agent.len();
            }
        }
        crate::announce::announce_sla(ctx, env.config, &managed, Utc::now()).await;
    }
    if task.operation == Operation::Install && summary.succeeded > 0 && promoted_from(env.config, window) {
        match crate::promotion::capture_installs(ctx, task_id, &crate::sync::ReadRetry::default()).await {
            Ok(capture) => {
                summary.sync_calls += capture.calls as u64;
                // Unread installs are results not recorded: the run must not report success.
                summary.sync_unread += capture.unread;
                if capture.unread == 0 {
                    summary.installs_recorded = Some(capture.patches);
                }
            }
            Err(e) => {
                error!(window, task = %spec.name, error = %e, "installs not recorded for promotion");
                summary.sync_unread += summary.succeeded;
            }
        }
    }

    summary.status = task_status(&summary, outcome.as_ref());
    finish_task(ctx, ids.run, spec, task.operation, summary.status).await?;
    info!(window, task = %spec.name, status = %summary.status, succeeded = summary.succeeded,
        failed = summary.failed, undeliverable = summary.undeliverable, not_sent = summary.not_sent,
        budget_exceeded = summary.budget_exceeded, waves = summary.waves, waves_sent = summary.waves_sent,
        gate_failure = summary.gate_failure.as_deref(), "task finished");
    Ok((summary, false))
}

/// Whether some task promotes from the window a run was recorded as (`run-now` included).
fn promoted_from(config: &Config, recorded_as: &str) -> bool {
    let window = recorded_as.strip_prefix(MANUAL_PREFIX).unwrap_or(recorded_as);
    config
        .windows
        .iter()
        .flat_map(|w| &w.tasks)
        .any(|t| t.promote.as_ref().is_some_and(|p| p.from.value == window))
}

/// The rollout, with the cutoff's cancellation beside it when the plan says `CANCEL_TASK`.
async fn roll_out(
    env: &Env<'_>,
    plan: &RunPlan,
    rollout: &Rollout<'_>,
    stop: watch::Receiver<bool>,
    report: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<RolloutOutcome, rollout::RolloutError> {
    let running = rollout::run(env.ctx, rollout, stop, report);
    let cancel_at = plan.stop_releasing_at.filter(|_| plan.cancel_at_cutoff);
    let Some(cancel_at) = cancel_at else {
        return running.await;
    };
    tokio::pin!(running);
    let wait = (cancel_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::select! {
        outcome = &mut running => return outcome,
        _ = tokio::time::sleep(wait) => {}
    }
    warn!(window = %plan.record_as, task = %rollout.task.name, "cutoff reached: cancelling commands still running (CANCEL_TASK)");
    match rollout::cancel_in_flight(env.ctx, rollout.task_id, rollout::document_of(rollout.task)).await {
        Ok(_) => {
            let details = serde_json::json!({ "task": rollout.task.name, "reason": "cutoff" });
            if let Err(e) = env.ctx.audit(Utc::now(), "cancel-at-cutoff", &plan.record_as, &details).await {
                warn!(error = %e, "audit entry not written");
            }
        }
        Err(e) => {
            error!(window = %plan.record_as, task = %rollout.task.name, error = %e, "cancelling at the cutoff failed")
        }
    }
    running.await
}

fn task_status(summary: &TaskSummary, outcome: Option<&RolloutOutcome>) -> CommandStatus {
    let cutoff = outcome.is_some_and(|o| o.cutoff);
    if summary.budget_exceeded || summary.failed > 0 || summary.gate_failure.is_some() {
        CommandStatus::Failed
    } else if summary.cancelled > 0 || (summary.not_sent > 0 && cutoff) {
        CommandStatus::Cancelled
    } else if summary.not_sent > 0 {
        // Refused by SSM (e.g. an instance stopped being a managed node between resolution
        // and sending).
        CommandStatus::Failed
    } else {
        CommandStatus::Success
    }
}

fn is_terminal(status: CommandStatus) -> bool {
    matches!(
        status,
        CommandStatus::Success | CommandStatus::Failed | CommandStatus::Cancelled | CommandStatus::TimedOut
    )
}

async fn finish_task(
    ctx: &Context,
    run: WindowRunId,
    spec: &TaskSpec,
    operation: Operation,
    status: CommandStatus,
) -> Result<WindowTaskId, WindowError> {
    Ok(ctx
        .store
        .record_window_task(
            run,
            &WindowTaskObservation {
                name: &spec.name,
                operation,
                command_id: None,
                status,
                started_at: None,
                ended_at: Some(Utc::now()),
            },
        )
        .await?)
}

/// A finished task's counts, from its recorded invocations.
async fn count_recorded(
    ctx: &Context,
    task: WindowTaskId,
    summary: &mut TaskSummary,
) -> Result<(), WindowError> {
    for invocation in ctx.store.invocations(task).await? {
        // Classified as the rollout classifies it, from what the store recorded.
        match crate::rollout::from_record(&invocation).standing() {
            Standing::Succeeded => summary.succeeded += 1,
            Standing::Failed => summary.failed += 1,
            Standing::Undeliverable => summary.undeliverable += 1,
            Standing::Cancelled => summary.cancelled += 1,
            Standing::InFlight | Standing::Delayed => {}
        }
        summary.targeted += 1;
    }
    Ok(())
}

/// The recorded run of an occurrence, if any.
async fn recorded_run(
    ctx: &Context,
    window: &str,
    scheduled_start: DateTime<Utc>,
) -> Result<Option<WindowRunRecord>, StoreError> {
    let runs = ctx
        .store
        .window_runs(&WindowRunQuery {
            window: Some(window),
            account: Some(&ctx.scope.account),
            region: Some(&ctx.scope.region),
            since: Some(scheduled_start),
            until: Some(scheduled_start + chrono::Duration::milliseconds(1)),
            limit: Some(1),
        })
        .await?;
    Ok(runs.into_iter().next())
}

/// The start record of an occurrence, written when it first started.
async fn find_start_record(
    ctx: &Context,
    window: &str,
    scheduled_start: DateTime<Utc>,
) -> Result<Option<StartRecord>, StoreError> {
    let entries = ctx.store.audit_since(scheduled_start, None).await?;
    Ok(entries
        .into_iter()
        .filter(|e| e.action == RUN_START_ACTION && e.target.as_deref() == Some(window))
        .filter_map(|e| serde_json::from_value::<StartRecord>(e.details?).ok())
        .find(|s| {
            to_micros(s.plan.scheduled_start) == to_micros(scheduled_start)
                && s.plan.record_as == window
                && s.made_in(&ctx.scope)
        }))
}

/// Records an occurrence that can no longer run as `missed`, with a log line and an audit entry.
pub async fn record_missed(
    ctx: &Context,
    window: &str,
    scheduled_start: DateTime<Utc>,
    now: DateTime<Utc>,
    reason: &str,
) -> Result<WindowRunId, StoreError> {
    let id = ctx
        .store
        .record_window_run(&NewWindowRun {
            window,
            scheduled_start,
            account: &ctx.scope.account,
            region: &ctx.scope.region,
            started_at: None,
            status: WindowRunStatus::Missed,
        })
        .await?;
    warn!(window, scheduled_start = %scheduled_start, reason, "window occurrence missed");
    let details = serde_json::json!({ "window_run_id": id.get(), "scheduled_start": scheduled_start, "reason": reason });
    ctx.audit(now, "window-missed", window, &details).await?;
    Ok(id)
}

/// Runs recorded as in progress (`running` or `late`) whose scheduled start is at or after
/// `since`, each with the plan stored when it started: what a restarted process resumes. A run
/// whose plan cannot be found (the process died between recording and its first step, which
/// cannot happen in this version's order) is returned with the configured window's plan when
/// the window still exists.
pub async fn interrupted_runs(
    ctx: &Context,
    config: &Config,
    since: DateTime<Utc>,
) -> Result<Vec<(WindowRunRecord, Option<RunPlan>)>, StoreError> {
    let query = WindowRunQuery {
        account: Some(&ctx.scope.account),
        region: Some(&ctx.scope.region),
        since: Some(since),
        ..Default::default()
    };
    let runs = ctx.store.window_runs(&query).await?;
    let mut found = Vec::new();
    for run in
        runs.into_iter().filter(|r| matches!(r.status, WindowRunStatus::Running | WindowRunStatus::Late))
    {
        let plan = match find_start_record(ctx, &run.window, run.scheduled_start).await? {
            Some(start) => Some(start.plan),
            None => config.window(&run.window).map(|w| RunPlan::for_window(w, run.scheduled_start)),
        };
        found.push((run, plan));
    }
    Ok(found)
}

/// Marks an interrupted run that cannot be resumed (no plan) as failed.
pub async fn abandon(ctx: &Context, run: &WindowRunRecord, reason: &str) -> Result<(), StoreError> {
    let now = Utc::now();
    ctx.store
        .update_window_run(
            run.id,
            &WindowRunUpdate {
                status: WindowRunStatus::Failed,
                started_at: None,
                ended_at: Some(now),
                sync_unread: None,
            },
        )
        .await?;
    error!(window = %run.window, scheduled_start = %run.scheduled_start, reason, "interrupted run cannot be resumed");
    let details = serde_json::json!({ "window_run_id": run.id.get(), "reason": reason });
    ctx.audit(now, "window-run-abandoned", &run.window, &details).await
}

/// Polls every future to completion on the current task; outputs in input order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future completed")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_through_the_stored_plan() {
        for text in ["10%", "1", "0", "100%", "50"] {
            assert_eq!(parse_limit(text).map(|l| l.to_string()).as_deref(), Some(text));
        }
        assert_eq!(parse_limit("x"), None);
    }

    #[test]
    fn run_status_follows_the_tasks() {
        let spec = TaskSpec {
            name: "t".into(),
            operation: "Scan".into(),
            groups: vec!["g".into()],
            reboot_option: "RebootIfNeeded".into(),
            max_concurrency: "10%".into(),
            max_errors: "0".into(),
            priority: 1,
            timeout_seconds: 600,
            waves: None,
            promote: None,
        };
        let with = |status| TaskSummary { status, ..TaskSummary::new(&spec, Operation::Scan) };
        assert_eq!(final_status(&[with(CommandStatus::Success)]), WindowRunStatus::Succeeded);
        assert_eq!(
            final_status(&[with(CommandStatus::Success), with(CommandStatus::Cancelled)]),
            WindowRunStatus::Cancelled
        );
        assert_eq!(
            final_status(&[with(CommandStatus::Failed), with(CommandStatus::Cancelled)]),
            WindowRunStatus::Failed
        );
        assert_eq!(final_status(&[]), WindowRunStatus::Succeeded);
        let unread = TaskSummary { sync_unread: 3, ..with(CommandStatus::Success) };
        assert_eq!(
            final_status(&[with(CommandStatus::Success), unread.clone()]),
            WindowRunStatus::Incomplete
        );
        let failed_and_unread = TaskSummary { status: CommandStatus::Failed, ..unread };
        assert_eq!(final_status(&[failed_and_unread]), WindowRunStatus::Failed, "a failure says more");
        let task = spec.to_task().unwrap();
        assert_eq!(TaskSpec::from_task(&task), spec);
    }
}
