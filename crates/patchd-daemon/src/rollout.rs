//! One task's AWS-RunPatchBaseline rollout: batches of at most 50 instances, one SendCommand
//! each, released under the task's MaxConcurrency and MaxErrors counted across the whole task,
//! polled until every invocation is over, and every observation stored as it is made.
//!
//! # How a rollout goes
//!
//! 1. **Plan.** The targets are sorted and cut into batches of `min(50, max concurrency)`
//!    instances. Each batch gets a comment derived from the run, the task and its number
//!    (`patchd:<run id>:<task>:<n>`), unique and at most 100 characters. The plan (batches,
//!    comments, the snapshot id and the resolved limits) is stored before anything is sent;
//!    when the store already has a plan for the task, that plan is resumed instead.
//! 2. **Release.** A batch is released while the instances in flight plus the batch fit in
//!    the concurrency limit, the errors so far have not exceeded the error budget, no stop was
//!    requested and `stop_releasing_at` has not passed. Each SendCommand carries the run's
//!    SnapshotId, the task's reboot option and timeout, `MaxConcurrency` = the batch size (the
//!    whole batch fits) and `MaxErrors` = what is left of the task's budget, so SSM itself stops
//!    a batch that would overrun it.
//! 3. **Poll.** ListCommandInvocations, for every command with unfinished invocations, at an
//!    interval that doubles while nothing changes and drops back when something does
//!    ([`PollPolicy`]). Changed invocations are stored (`record_invocations`) before anything
//!    else looks at them. Throttling and network trouble that outlast the SDK's retries are
//!    waited out, never a reason to fail the run.
//!
//! # Canary waves
//!
//! A task with `waves` has its batches planned wave by wave ([`waves::cut`]), each batch
//! carrying its wave. A batch of wave `n + 1` is released only once every instance of wave `n`
//! is over, its bake has passed (counted from its last invocation's end, so a restart does not
//! restart it), and its gate passed ([`gates::judge`]). The gate's decision is stored with its
//! audit entry before anything acts on it, and the first decision stands: a halted rollout
//! stays halted across restarts. A per-tag cap (`max_per_tag`) is planned into the batches (no
//! batch holds more than the cap of one tag value) and enforced at release (no batch starts
//! while it would take a tag value over the cap with what is in flight).
//!
//! Counting is SSM's: Failed and ExecutionTimedOut count against MaxErrors; Undeliverable,
//! DeliveryTimedOut, InvalidPlatform and AccessDenied do not. An invocation waiting for an
//! offline agent (`Delayed`) does not hold a concurrency slot, as in SSM.
//!
//! # Crash safety
//!
//! The intent to send a batch is stored before SendCommand, the command id (with the audit
//! entry of the call) after it. A batch found in `sending` on resume may or may not have
//! reached SSM: it is looked up by its comment (ListCommands) and adopted when found, sent
//! otherwise. A SendCommand that failed without a clear "not received" answer (a timeout, a
//! server error) is looked up the same way before it is retried. So a process killed at any
//! point and started again sends each batch at most once, and polls what was sent before.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchd_aws::{
    AwsError, CommandSummary, Invocation, InvocationOutcome, PatchCommand, Reported, Standing,
    MAX_COMMENT_CHARS, MAX_INSTANCES_PER_COMMAND,
};
use patchd_config::{Limit, Task};
use patchd_store::{
    AuditEntry, BatchRecord, BatchState, CommandStatus, GateRecord, InvocationObservation, InvocationRecord,
    NewBatch, NewRollout, RolloutRecord, StoreError, WindowTaskId,
};
use tokio::sync::watch;
use tracing::{debug, info, instrument, warn};

use crate::gates::{self, WaveFacts};
use crate::{waves, Context};

/// How far before a batch's first sending attempt a lookup by comment starts, for clock skew
/// between this host and AWS.
const LOOKUP_SKEW: chrono::Duration = chrono::Duration::minutes(15);

/// One task's rollout.
#[derive(Debug, Clone)]
pub struct Rollout<'a> {
    /// The window run's id (a uuid string); every batch's comment carries it.
    pub run_id: &'a str,
    pub task: &'a Task,
    /// The task's row, created by the caller with `record_window_task`.
    pub task_id: WindowTaskId,
    /// Instances that can take commands (the caller left coverage gaps out). Ignored when the
    /// store already holds a plan for `task_id`: a resumed rollout keeps its batches.
    pub targets: &'a [String],
    /// One per window run, so every node of it is judged against the same approved patches.
    /// A resumed rollout keeps the snapshot it was planned with.
    pub snapshot_id: uuid::Uuid,
    /// No batch is released from this instant on (window end minus cutoff).
    pub stop_releasing_at: Option<DateTime<Utc>>,
    pub poll: PollPolicy,
    /// The value of the task's `max_per_tag` tag for each target that has it; empty when the
    /// task has no cap.
    pub capped_tag_values: HashMap<String, String>,
    /// A promotion's install list (`InstallOverrideList`): every batch installs exactly it.
    pub install_list_url: Option<&'a str>,
}

/// How often to poll: every `interval` at first, doubling while nothing changes up to
/// `max_interval`, back to `interval` on any change. The same pauses separate retries after
/// throttling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollPolicy {
    pub interval: Duration,
    pub max_interval: Duration,
}

impl Default for PollPolicy {
    /// 1 s doubling to 30 s.
    fn default() -> PollPolicy {
        PollPolicy { interval: Duration::from_secs(1), max_interval: Duration::from_secs(30) }
    }
}

impl PollPolicy {
    /// 10 ms doubling to 100 ms: for tests against the simulator.
    pub fn fast() -> PollPolicy {
        PollPolicy { interval: Duration::from_millis(10), max_interval: Duration::from_millis(100) }
    }

    /// The pause after `current`: back to `interval` when something changed, else doubled,
    /// within the bounds.
    pub fn next(&self, current: Duration, changed: bool) -> Duration {
        let max = self.max_interval.max(self.interval);
        if changed {
            self.interval
        } else {
            current.saturating_mul(2).clamp(self.interval, max)
        }
    }
}

/// Where the task's instances stand. `total = sent + (instances not sent)`; of the sent ones,
/// each is in exactly one of `in_flight`, `delayed`, or done (`succeeded`, `failed`,
/// `undeliverable`, `cancelled`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub total: usize,
    /// Instances in batches SSM accepted.
    pub sent: usize,
    /// Sent instances whose invocation is over.
    pub done: usize,
    pub succeeded: usize,
    /// Failed or timed out in execution: what counts against MaxErrors.
    pub failed: usize,
    /// Never delivered: Undeliverable, DeliveryTimedOut, InvalidPlatform, AccessDenied, or
    /// missing from a finished command.
    pub undeliverable: usize,
    /// Sent and not over, not waiting for an agent: what holds a concurrency slot.
    pub in_flight: usize,
    /// Waiting for an offline agent (`Delayed`); holds no concurrency slot, as in SSM.
    pub delayed: usize,
    /// Cancelled, or Terminated by SSM once its MaxErrors was exceeded.
    pub cancelled: usize,
    /// Instances of batches SSM refused (e.g. an instance stopped being a managed node);
    /// counted in `total - sent`.
    pub rejected: usize,
    /// The highest wave with a batch sent (0 before the first), of `waves`.
    pub wave: u32,
    pub waves: u32,
}

/// What a rollout did.
#[derive(Debug, Clone)]
pub struct RolloutOutcome {
    pub progress: Progress,
    /// Instances that never received a command: batches not released (budget, stop, cutoff)
    /// or refused by SSM.
    pub not_sent: usize,
    /// Errors exceeded the task's MaxErrors: no batch was released after that.
    pub budget_exceeded: bool,
    /// A stop was requested through the watch channel.
    pub stopped: bool,
    /// `stop_releasing_at` passed with batches left unreleased.
    pub cutoff: bool,
    /// A second stop request ended polling with invocations still in flight; they are in the
    /// store, and running the rollout again picks them up.
    pub abandoned: bool,
    /// The store already held a plan for the task: this call continued it.
    pub resumed: bool,
    /// Commands of the task, in batch order (those sent before a restart included).
    pub command_ids: Vec<String>,
    /// SendCommand calls this call made (attempts, failed ones included).
    pub send_calls: usize,
    /// ListCommandInvocations listings this call made (one per command polled, all pages).
    pub poll_calls: usize,
    /// The gate that halted the rollout, if one did: the remaining waves were never sent.
    pub gate_failure: Option<GateFailure>,
    /// Wave gates judged and passed.
    pub gates_passed: usize,
    /// Errors counted against the budget (failed invocations, and instances a gate's reboot
    /// truth found unhealthy), and the budget (MaxErrors resolved).
    pub errors: usize,
    pub max_errors: u32,
    /// MaxConcurrency resolved against the targets.
    pub max_concurrency: u32,
}

/// A failed gate: after which wave, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailure {
    pub wave: u32,
    pub waves: u32,
    pub reason: String,
}

impl std::fmt::Display for GateFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the gate after wave {} of {} failed: {}", self.wave, self.waves, self.reason)
    }
}

/// Why a rollout could not go on. The store holds everything done up to the error, so running
/// the rollout again continues it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RolloutError {
    #[error("rollout state could not be read or written: {0}")]
    Store(#[from] StoreError),

    /// An AWS error that waiting will not fix (access denied, a rejected request).
    #[error("rollout stopped: {0}")]
    Aws(#[from] AwsError),

    /// The task cannot be sent as configured (comment too long, timeout out of range...).
    #[error("task `{task}` cannot be sent: {problem}")]
    Invalid { task: String, problem: String },

    /// This process's term of leadership ended (or cannot be proven current long enough for a
    /// SendCommand to leave before it could end): nothing more is sent or written.
    #[error(
        "leadership ended before batch {batch} could be sent ({reason}); the new leader resumes the rollout"
    )]
    Deposed { batch: u32, reason: String },

    /// The store's plan for the task belongs to another run.
    #[error(
        "task {task_id} was planned for run {planned}, not {given}; resume it with the run it belongs to"
    )]
    PlanMismatch { task_id: WindowTaskId, planned: String, given: String },
}

impl RolloutError {
    /// The rollout stopped because leadership moved on, not because anything failed.
    pub fn is_deposed(&self) -> bool {
        match self {
            RolloutError::Deposed { .. } => true,
            RolloutError::Store(e) => e.is_fenced(),
            _ => false,
        }
    }
}

/// How long a term must surely last, after the batch's intent is stored, for its SendCommand to
/// be sent: the call (the SDK's retries included) is cut off at the term's end minus this, so
/// that no attempt leaves after a new leader may have looked the batch up.
const SEND_MARGIN: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------
// Planning

/// The comment of batch `number`: `patchd:<run>:<task name>:<n>`, or, when the name would not
/// fit in SSM's 100 characters, `patchd:<run>:task-<task id>:<n>`. Unique either way (a run
/// never has two tasks of one name, and task ids are unique).
pub fn batch_comment(run_id: &str, task_name: &str, task_id: WindowTaskId, number: u32) -> Option<String> {
    let named = format!("patchd:{run_id}:{task_name}:{number}");
    if named.chars().count() <= MAX_COMMENT_CHARS {
        return Some(named);
    }
    let by_id = format!("patchd:{run_id}:task-{task_id}:{number}");
    (by_id.chars().count() <= MAX_COMMENT_CHARS).then_some(by_id)
}

/// The batch size: 50, or the concurrency limit when it is lower, so a whole batch can run at
/// once without overrunning it.
pub fn batch_size(max_concurrency: u32) -> usize {
    (max_concurrency as usize).clamp(1, MAX_INSTANCES_PER_COMMAND)
}

/// Sorted, deduplicated targets cut into batches: the same targets always give the same
/// batches.
pub fn cut_batches(targets: &[String], size: usize) -> Vec<Vec<String>> {
    let mut sorted: Vec<String> = targets.iter().filter(|t| !t.is_empty()).cloned().collect();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.chunks(size.max(1)).map(<[String]>::to_vec).collect()
}

/// MaxConcurrency and MaxErrors for `targets` instances.
fn resolve_limits(task: &Task, targets: usize) -> (u32, u32) {
    let n = u32::try_from(targets).unwrap_or(u32::MAX);
    (task.max_concurrency.resolve(n, true), task.max_errors.resolve(n, false))
}

fn invalid(task: &Task, problem: impl ToString) -> RolloutError {
    RolloutError::Invalid { task: task.name.clone(), problem: problem.to_string() }
}

/// The stored plan for the task, or a new one stored now. Returns whether it was resumed.
async fn load_or_plan(ctx: &Context, rollout: &Rollout<'_>) -> Result<(RolloutRecord, bool), RolloutError> {
    if let Some(plan) = ctx.store.rollout(rollout.task_id).await? {
        check_resumed(rollout, &plan)?;
        return Ok((plan, true));
    }
    let task = rollout.task;
    let mut targets: Vec<String> = rollout.targets.iter().filter(|t| !t.is_empty()).cloned().collect();
    targets.sort_unstable();
    targets.dedup();
    let (max_concurrency, max_errors) = resolve_limits(task, targets.len());
    let cap = task.waves.max_per_tag.as_ref().map(|c| (&rollout.capped_tag_values, c.max as usize));
    let cut = waves::cut(&targets, &task.waves.shares, batch_size(max_concurrency), cap);
    let mut comments = Vec::with_capacity(cut.len());
    for number in 1..=cut.len() as u32 {
        let comment =
            batch_comment(rollout.run_id, &task.name, rollout.task_id, number).ok_or_else(|| {
                invalid(task, format!("the run id makes comments longer than {MAX_COMMENT_CHARS} characters"))
            })?;
        comments.push(comment);
    }
    // What SSM would refuse for every batch is refused before anything is stored or sent.
    if let (Some((_, first)), Some(comment)) = (cut.first(), comments.first()) {
        let command = patch_command(
            task,
            rollout.install_list_url,
            rollout.snapshot_id,
            first,
            comment,
            max_concurrency,
            max_errors,
        );
        command.validate().map_err(|problem| invalid(task, problem))?;
    }
    let new: Vec<NewBatch<'_>> = cut
        .iter()
        .zip(&comments)
        .map(|((wave, instance_ids), comment)| NewBatch { comment, instance_ids, wave: *wave })
        .collect();
    let snapshot = rollout.snapshot_id.hyphenated().to_string();
    let plan = ctx
        .store
        .plan_rollout(
            rollout.task_id,
            &NewRollout {
                run_key: rollout.run_id,
                snapshot_id: &snapshot,
                max_concurrency,
                max_errors,
                planned_at: Utc::now(),
                batches: &new,
            },
        )
        .await?;
    // Someone else may have planned it between the read and the write: theirs stands, and it
    // must belong to this run.
    check_resumed(rollout, &plan)?;
    Ok((plan, false))
}

fn check_resumed(rollout: &Rollout<'_>, plan: &RolloutRecord) -> Result<(), RolloutError> {
    if plan.run_key != rollout.run_id {
        return Err(RolloutError::PlanMismatch {
            task_id: rollout.task_id,
            planned: plan.run_key.clone(),
            given: rollout.run_id.to_string(),
        });
    }
    let given = rollout.snapshot_id.hyphenated().to_string();
    if plan.snapshot_id != given {
        warn!(task = %rollout.task.name, planned = %plan.snapshot_id, given = %given,
            "resuming with the snapshot the rollout was planned with");
    }
    let planned: HashSet<&str> =
        plan.batches.iter().flat_map(|b| b.instance_ids.iter().map(String::as_str)).collect();
    let new = rollout.targets.iter().filter(|t| !planned.contains(t.as_str())).count();
    if new > 0 {
        warn!(task = %rollout.task.name, new, "targets found since the rollout was planned are left for the next run");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn patch_command<'a>(
    task: &'a Task,
    install_list_url: Option<&'a str>,
    snapshot_id: uuid::Uuid,
    instance_ids: &'a [String],
    comment: &'a str,
    max_concurrency: u32,
    max_errors_left: u32,
) -> PatchCommand<'a> {
    PatchCommand {
        operation: task.operation,
        reboot_option: task.reboot_option,
        snapshot_id: Some(snapshot_id),
        instance_ids,
        comment,
        timeout_seconds: task.timeout_seconds,
        // The whole batch fits under the task's limit when it is released.
        max_concurrency: Limit::Count((instance_ids.len() as u32).min(max_concurrency).max(1)),
        max_errors: Limit::Count(max_errors_left),
        alarm: task.waves.gate.as_ref().and_then(|g| g.alarm.as_deref()),
        hooks: task.waves.hooks.as_ref(),
        install_override_list: install_list_url,
    }
}

// ---------------------------------------------------------------------------------------------
// The state of a rollout, and the decisions taken on it (pure, unit-tested)

/// Why no further batch is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Halt {
    /// Every batch was sent (or refused by SSM).
    AllReleased,
    /// Errors exceeded MaxErrors.
    Budget,
    /// A stop was requested.
    Stop,
    /// `stop_releasing_at` passed (or would pass before a bake ends).
    Cutoff,
    /// A wave's gate failed.
    Gate,
}

/// What to do about the next batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Send the batch at this index of the plan.
    Send(usize),
    /// Wait for slots to free up, for a wave to end or for its bake to pass.
    Wait,
    /// Judge the gate after this wave, then decide again.
    Judge(u32),
    Halted(Halt),
}

/// The next release, given the next unsent batch (index, size), the instances holding a slot,
/// the errors so far and the clock. Order matters: a spent budget wins over everything.
#[allow(clippy::too_many_arguments)]
fn next_release(
    next: Option<(usize, usize)>,
    in_flight: usize,
    max_concurrency: u32,
    errors: usize,
    max_errors: u32,
    stop: bool,
    now: DateTime<Utc>,
    stop_releasing_at: Option<DateTime<Utc>>,
) -> Release {
    let Some((index, size)) = next else { return Release::Halted(Halt::AllReleased) };
    if errors > max_errors as usize {
        Release::Halted(Halt::Budget)
    } else if stop {
        Release::Halted(Halt::Stop)
    } else if stop_releasing_at.is_some_and(|at| now >= at) {
        Release::Halted(Halt::Cutoff)
    } else if in_flight > 0 && in_flight + size > max_concurrency as usize {
        Release::Wait
    } else {
        Release::Send(index)
    }
}

/// A batch as the rollout tracks it.
#[derive(Debug, Clone)]
struct Batch {
    record: BatchRecord,
    /// `sending` in the store, and not found by its comment: sendable like a planned batch.
    unsent: bool,
}

impl Batch {
    fn sendable(&self) -> bool {
        self.record.state == BatchState::Planned || (self.record.state == BatchState::Sending && self.unsent)
    }
}

#[derive(Debug)]
struct State {
    max_concurrency: u32,
    max_errors: u32,
    batches: Vec<Batch>,
    /// The latest invocation seen per instance of a sent batch.
    seen: HashMap<String, Invocation>,
    /// Instances a finished command never listed.
    lost: HashSet<String>,
    /// The last wave of the plan (1 without waves).
    waves: u32,
    /// Whether waves are judged by a gate; without one, waves only pace the release.
    gated: bool,
    bake: Duration,
    /// `max_per_tag`'s cap, and each capped instance's tag value.
    cap: Option<usize>,
    tag_of: HashMap<String, String>,
    /// Gate decisions by wave, as stored.
    gates: BTreeMap<u32, GateRecord>,
    /// Instances a gate's reboot truth found unhealthy: errors like failed invocations.
    unhealthy: BTreeSet<String>,
    /// When this process first saw each wave over, by its own clock: a bake counts from there.
    /// SSM's invocation times come from another clock, and a restarted process bakes again
    /// rather than less.
    waves_over_at: BTreeMap<u32, DateTime<Utc>>,
}

impl State {
    fn new(plan: &RolloutRecord) -> State {
        State {
            max_concurrency: plan.max_concurrency.max(1),
            max_errors: plan.max_errors,
            batches: plan.batches.iter().map(|b| Batch { record: b.clone(), unsent: false }).collect(),
            seen: HashMap::new(),
            lost: HashSet::new(),
            waves: plan.batches.iter().map(|b| b.wave).max().unwrap_or(1),
            gated: false,
            bake: Duration::ZERO,
            cap: None,
            tag_of: HashMap::new(),
            gates: BTreeMap::new(),
            unhealthy: BTreeSet::new(),
            waves_over_at: BTreeMap::new(),
        }
    }

    /// Notes the waves seen over for the first time at `now`.
    fn note_waves_over(&mut self, now: DateTime<Utc>) {
        for wave in 1..=self.waves {
            if !self.waves_over_at.contains_key(&wave) && self.wave_over(wave) {
                self.waves_over_at.insert(wave, now);
            }
        }
    }

    /// The task's wave policy and the gate decisions already stored.
    fn with_waves(mut self, task: &Task, tag_of: &HashMap<String, String>, gates: Vec<GateRecord>) -> State {
        self.gated = task.waves.gate.is_some();
        self.bake = task.waves.bake;
        self.cap = task.waves.max_per_tag.as_ref().map(|c| c.max.max(1) as usize);
        self.tag_of = if self.cap.is_some() { tag_of.clone() } else { HashMap::new() };
        for gate in gates {
            self.unhealthy.extend(unhealthy_in(&gate.checks));
            self.gates.insert(gate.wave, gate);
        }
        self
    }

    /// Errors against the budget: failed invocations and unhealthy instances, each once.
    fn errors(&self, progress: &Progress) -> usize {
        let unhealthy_not_failed =
            self.unhealthy.iter().filter(|id| self.standing_of(id) != Standing::Failed).count();
        progress.failed + unhealthy_not_failed
    }

    /// Whether every batch of `wave` left the plan (sent or refused) and every sent instance of
    /// it is over.
    fn wave_over(&self, wave: u32) -> bool {
        self.batches.iter().filter(|b| b.record.wave == wave).all(|b| match b.record.state {
            BatchState::Rejected => true,
            BatchState::Sent => b
                .record
                .instance_ids
                .iter()
                .all(|id| !matches!(self.standing_of(id), Standing::InFlight | Standing::Delayed)),
            BatchState::Planned | BatchState::Sending => false,
        })
    }

    /// What the gate after `wave` is judged on.
    fn wave_facts<'a>(&self, rollout: &'a Rollout<'_>, wave: u32) -> WaveFacts<'a> {
        let sent: Vec<&Batch> = self
            .batches
            .iter()
            .filter(|b| b.record.wave == wave && b.record.state == BatchState::Sent)
            .collect();
        let instances: Vec<String> =
            sent.iter().flat_map(|b| b.record.instance_ids.iter().cloned()).collect();
        let patched = instances
            .iter()
            .filter(|id| matches!(self.standing_of(id), Standing::Succeeded | Standing::Failed))
            .cloned()
            .collect();
        WaveFacts {
            run_id: rollout.run_id,
            task: rollout.task,
            wave,
            waves: self.waves,
            instances,
            patched,
            command_ids: sent.iter().filter_map(|b| b.record.command_id.clone()).collect(),
            errors: self.errors(&self.progress()),
            max_errors: self.max_errors,
            retry_pause: rollout.poll.interval,
        }
    }

    /// Whether batch `index` may start now without taking a tag value over the cap.
    fn fits_cap(&self, index: usize) -> bool {
        let Some(cap) = self.cap else { return true };
        let mut busy: HashMap<&str, usize> = HashMap::new();
        for batch in self.batches.iter().filter(|b| b.record.state == BatchState::Sent) {
            for id in &batch.record.instance_ids {
                if matches!(self.standing_of(id), Standing::InFlight | Standing::Delayed) {
                    if let Some(value) = self.tag_of.get(id) {
                        *busy.entry(value).or_default() += 1;
                    }
                }
            }
        }
        let mut wanted: HashMap<&str, usize> = HashMap::new();
        for id in &self.batches[index].record.instance_ids {
            if let Some(value) = self.tag_of.get(id) {
                *wanted.entry(value).or_default() += 1;
            }
        }
        wanted.iter().all(|(value, n)| busy.get(value).copied().unwrap_or(0) + n <= cap)
    }

    fn standing_of(&self, instance: &str) -> Standing {
        match self.seen.get(instance) {
            Some(invocation) => invocation.standing(),
            None if self.lost.contains(instance) => Standing::Undeliverable,
            // Sent, not listed yet: SSM is still creating or dispatching it.
            None => Standing::InFlight,
        }
    }

    fn progress(&self) -> Progress {
        let mut p = Progress { waves: self.waves, ..Progress::default() };
        for batch in &self.batches {
            let n = batch.record.instance_ids.len();
            p.total += n;
            match batch.record.state {
                BatchState::Sent => {}
                BatchState::Rejected => {
                    p.rejected += n;
                    continue;
                }
                BatchState::Planned | BatchState::Sending => continue,
            }
            p.sent += n;
            p.wave = p.wave.max(batch.record.wave);
            for instance in &batch.record.instance_ids {
                match self.standing_of(instance) {
                    Standing::InFlight => p.in_flight += 1,
                    Standing::Delayed => p.delayed += 1,
                    Standing::Succeeded => p.succeeded += 1,
                    Standing::Failed => p.failed += 1,
                    Standing::Undeliverable => p.undeliverable += 1,
                    Standing::Cancelled => p.cancelled += 1,
                }
            }
        }
        p.done = p.succeeded + p.failed + p.undeliverable + p.cancelled;
        p
    }

    fn next_unsent(&self) -> Option<(usize, usize)> {
        self.batches.iter().position(Batch::sendable).map(|i| (i, self.batches[i].record.instance_ids.len()))
    }

    fn release(&self, stop: bool, now: DateTime<Utc>, stop_releasing_at: Option<DateTime<Utc>>) -> Release {
        let p = self.progress();
        let errors = self.errors(&p);
        let decide = |next| {
            next_release(
                next,
                p.in_flight,
                self.max_concurrency,
                errors,
                self.max_errors,
                stop,
                now,
                stop_releasing_at,
            )
        };
        let Some((first, _)) = self.next_unsent() else { return decide(None) };
        // A stop and the cutoff win over waves, as over everything else.
        let halted_without_budget =
            next_release(Some((first, 0)), 0, u32::MAX, 0, u32::MAX, stop, now, stop_releasing_at);
        if let Release::Halted(halt) = halted_without_budget {
            return Release::Halted(halt);
        }
        let over_budget = errors > self.max_errors as usize;
        let wave = self.batches[first].record.wave;
        if wave > 1 {
            let previous = wave - 1;
            match self.gates.get(&previous) {
                Some(gate) if !gate.passed => return Release::Halted(Halt::Gate),
                Some(_) => {}
                None if !self.wave_over(previous) => {
                    return if over_budget { Release::Halted(Halt::Budget) } else { Release::Wait };
                }
                // A spent budget is judged at once, so the decision says which instances spent
                // it (an agent that did not come back, say); there is nothing to bake for.
                None if over_budget && self.gated => return Release::Judge(previous),
                None => {
                    let baked_at = self.waves_over_at.get(&previous).map(|over| *over + chrono_of(self.bake));
                    if let Some(baked_at) = baked_at.filter(|at| now < *at && !over_budget) {
                        // A bake that would end past the cutoff leaves nothing to release.
                        if stop_releasing_at.is_some_and(|cutoff| baked_at >= cutoff) {
                            return Release::Halted(Halt::Cutoff);
                        }
                        return Release::Wait;
                    }
                    if self.gated {
                        return Release::Judge(previous);
                    }
                }
            }
        }
        if over_budget {
            return Release::Halted(Halt::Budget);
        }
        // Within the wave, the first batch that fits the free slots and the tag cap; a batch
        // held back by the cap does not hold back those after it.
        let candidates = (first..self.batches.len())
            .filter(|&i| self.batches[i].record.wave == wave && self.batches[i].sendable());
        for index in candidates {
            let size = self.batches[index].record.instance_ids.len();
            if let Release::Send(_) = decide(Some((index, size))) {
                if self.fits_cap(index) {
                    return Release::Send(index);
                }
            }
        }
        Release::Wait
    }

    /// The gate still owed after the last wave, once every instance is over.
    fn final_gate(&self) -> Option<u32> {
        let last = self.waves;
        let sent_any =
            self.batches.iter().any(|b| b.record.wave == last && b.record.state == BatchState::Sent);
        (self.gated
            && sent_any
            && !self.gates.contains_key(&last)
            && self.active().is_empty()
            && self.wave_over(last))
        .then_some(last)
    }

    fn gate_failure(&self) -> Option<GateFailure> {
        self.gates.values().find(|g| !g.passed).map(|g| GateFailure {
            wave: g.wave,
            waves: self.waves,
            reason: g.reason.clone(),
        })
    }

    /// Sent batches with an instance not over yet: the commands to poll.
    fn active(&self) -> Vec<usize> {
        (0..self.batches.len())
            .filter(|&i| {
                let b = &self.batches[i].record;
                b.state == BatchState::Sent
                    && b.instance_ids
                        .iter()
                        .any(|id| matches!(self.standing_of(id), Standing::InFlight | Standing::Delayed))
            })
            .collect()
    }

    fn errors_left(&self) -> u32 {
        let errors = self.errors(&self.progress());
        self.max_errors.saturating_sub(u32::try_from(errors).unwrap_or(u32::MAX))
    }

    fn command_ids(&self) -> Vec<String> {
        self.batches.iter().filter_map(|b| b.record.command_id.clone()).collect()
    }

    /// Adopts invocations recorded before a restart (those of the batch's own command).
    fn seed(&mut self, recorded: &[InvocationRecord]) {
        let commands: HashSet<&str> =
            self.batches.iter().filter_map(|b| b.record.command_id.as_deref()).collect();
        for record in recorded {
            if commands.contains(record.command_id.as_str()) {
                self.seen.insert(record.instance_id.clone(), from_record(record));
            }
        }
    }

    fn mark_sent(&mut self, index: usize, command_id: &str, at: DateTime<Utc>) {
        let batch = &mut self.batches[index];
        batch.record.state = BatchState::Sent;
        batch.record.command_id = Some(command_id.to_string());
        batch.record.sent_at = Some(at);
        batch.unsent = false;
    }
}

/// The document the task's batches are sent with.
pub fn document_of(task: &Task) -> &'static str {
    patchd_aws::document_for(task.waves.hooks.as_ref())
}

fn chrono_of(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// The instances a stored gate decision found unhealthy (its reboot truth's lists).
fn unhealthy_in(checks: &serde_json::Value) -> Vec<String> {
    let Some(truth) = checks.as_array().and_then(|c| c.iter().find(|c| c["check"] == "reboot_truth")) else {
        return Vec::new();
    };
    let ids = |key: &str| -> Vec<String> {
        truth[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().or_else(|| v["instance_id"].as_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut all = ids("offline");
    all.extend(ids("failed_patches"));
    all.extend(ids("pending_reboot"));
    all
}

/// An invocation as stored, in the adapter's type, so one classification serves both.
pub(crate) fn from_record(record: &InvocationRecord) -> Invocation {
    let details = record.status_details.as_deref().unwrap_or(record.status.as_str());
    Invocation {
        requested_at: record.requested_at,
        started_at: record.started_at,
        ended_at: record.ended_at,
        ..Invocation::new(&record.command_id, &record.instance_id, Reported::Known(record.status), details)
    }
}

/// The store's status for an invocation; a status patchd does not know is stored by what its
/// details say.
fn store_status(invocation: &Invocation) -> CommandStatus {
    match &invocation.status {
        Reported::Known(status) => *status,
        Reported::Unknown(_) => match &invocation.outcome {
            InvocationOutcome::Success => CommandStatus::Success,
            InvocationOutcome::Delayed => CommandStatus::Delayed,
            InvocationOutcome::Pending => CommandStatus::Pending,
            InvocationOutcome::Cancelling => CommandStatus::Cancelling,
            InvocationOutcome::Cancelled | InvocationOutcome::Terminated => CommandStatus::Cancelled,
            InvocationOutcome::DeliveryTimedOut | InvocationOutcome::ExecutionTimedOut => {
                CommandStatus::TimedOut
            }
            InvocationOutcome::Failed
            | InvocationOutcome::Undeliverable
            | InvocationOutcome::InvalidPlatform
            | InvocationOutcome::AccessDenied => CommandStatus::Failed,
            InvocationOutcome::InProgress | InvocationOutcome::Other(_) => CommandStatus::InProgress,
        },
    }
}

/// Whether an observation differs from the previous one in anything the store keeps.
fn changed(before: Option<&Invocation>, now: &Invocation) -> bool {
    before.is_none_or(|b| {
        b.command_id != now.command_id
            || b.status != now.status
            || b.status_details != now.status_details
            || b.requested_at != now.requested_at
            || b.started_at != now.started_at
            || b.ended_at != now.ended_at
    })
}

// ---------------------------------------------------------------------------------------------
// The loop

/// How a call ended, for the outcome.
#[derive(Debug, Default)]
struct Counters {
    send_calls: usize,
    poll_calls: usize,
}

/// Rolls the task out, or resumes it when the store already has its plan, until every
/// released invocation is over. `stop` set to true stops releasing batches (what is in flight
/// is still polled); a second change of it ends polling too (`abandoned`), as does dropping
/// the future: everything is in the store and a later call continues.
#[instrument(
    skip_all,
    fields(run = rollout.run_id, task = %rollout.task.name, task_id = %rollout.task_id),
    err(Display)
)]
pub async fn run(
    ctx: &Context,
    rollout: &Rollout<'_>,
    mut stop: watch::Receiver<bool>,
    on_progress: &(dyn Fn(&Progress) + Send + Sync),
) -> Result<RolloutOutcome, RolloutError> {
    let (plan, resumed) = load_or_plan(ctx, rollout).await?;
    let snapshot_id = plan.snapshot_id.parse::<uuid::Uuid>().unwrap_or(rollout.snapshot_id);
    let gates = if resumed { ctx.store.rollout_gates(rollout.task_id).await? } else { Vec::new() };
    let mut state = State::new(&plan).with_waves(rollout.task, &rollout.capped_tag_values, gates);
    if resumed {
        state.seed(&ctx.store.invocations(rollout.task_id).await?);
    }
    info!(
        batches = plan.batches.len(),
        waves = state.waves,
        instances = plan.instance_count(),
        max_concurrency = plan.max_concurrency,
        max_errors = plan.max_errors,
        snapshot = %snapshot_id,
        resumed,
        "rollout started"
    );
    let mut counters = Counters::default();
    let mut stop_seen = *stop.borrow_and_update();
    let mut stop_open = true;
    let mut abandoned = false;

    // Batches a previous process was sending: adopt what reached SSM before sending anything.
    for index in 0..state.batches.len() {
        if state.batches[index].record.state == BatchState::Sending {
            adopt_or_unsent(ctx, rollout, &mut state, index).await?;
        }
    }

    let mut halt = release_batches(ctx, rollout, snapshot_id, &mut state, &mut counters, &stop).await?;
    on_progress(&state.progress());
    let mut interval = rollout.poll.interval;
    loop {
        let active = state.active();
        if active.is_empty() && halt.is_some() {
            if matches!(halt, Some(Halt::AllReleased | Halt::Budget)) && !stop_seen {
                if let Some(wave) = state.final_gate() {
                    judge_gate(ctx, rollout, &mut state, wave).await?;
                    on_progress(&state.progress());
                }
            }
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            signal = stop.changed(), if stop_open => match signal {
                Ok(()) => {
                    if stop_seen {
                        abandoned = !state.active().is_empty();
                        info!(in_flight = state.progress().in_flight, "second stop request: polling ends");
                        break;
                    }
                    stop_seen = *stop.borrow_and_update();
                    if stop_seen {
                        info!("stop requested: no further batch is released");
                    }
                }
                Err(_) => stop_open = false,
            },
        }
        let observed = poll(ctx, rollout, &mut state, &active, &mut counters).await?;
        let before = state.progress();
        halt = release_batches(ctx, rollout, snapshot_id, &mut state, &mut counters, &stop).await?;
        let progress = state.progress();
        let changed = observed == Observed::Changed || progress != before;
        if changed {
            on_progress(&progress);
        }
        interval = match observed {
            Observed::Throttled => rollout.poll.next(interval, false),
            _ => rollout.poll.next(interval, changed),
        };
    }

    let progress = state.progress();
    on_progress(&progress);
    let errors = state.errors(&progress);
    let not_sent = progress.total - progress.sent;
    let halt = halt.or_else(|| match state.release(stop_seen, Utc::now(), rollout.stop_releasing_at) {
        Release::Halted(h) => Some(h),
        _ => None,
    });
    let outcome = RolloutOutcome {
        not_sent,
        gate_failure: state.gate_failure(),
        gates_passed: state.gates.values().filter(|g| g.passed).count(),
        budget_exceeded: errors > plan.max_errors as usize,
        stopped: stop_seen || *stop.borrow(),
        cutoff: halt == Some(Halt::Cutoff),
        abandoned,
        resumed,
        command_ids: state.command_ids(),
        send_calls: counters.send_calls,
        poll_calls: counters.poll_calls,
        errors,
        max_errors: plan.max_errors,
        max_concurrency: plan.max_concurrency,
        progress,
    };
    info!(
        succeeded = outcome.progress.succeeded,
        failed = outcome.progress.failed,
        undeliverable = outcome.progress.undeliverable,
        cancelled = outcome.progress.cancelled,
        in_flight = outcome.progress.in_flight + outcome.progress.delayed,
        not_sent = outcome.not_sent,
        budget_exceeded = outcome.budget_exceeded,
        stopped = outcome.stopped,
        cutoff = outcome.cutoff,
        gate_failed = outcome.gate_failure.as_ref().map(ToString::to_string),
        send_calls = outcome.send_calls,
        poll_calls = outcome.poll_calls,
        "rollout ended"
    );
    Ok(outcome)
}

/// Sends batches while they fit; returns why releasing stopped for good, if it did.
async fn release_batches(
    ctx: &Context,
    rollout: &Rollout<'_>,
    snapshot_id: uuid::Uuid,
    state: &mut State,
    counters: &mut Counters,
    stop: &watch::Receiver<bool>,
) -> Result<Option<Halt>, RolloutError> {
    loop {
        let stop_now = *stop.borrow();
        let now = Utc::now();
        state.note_waves_over(now);
        match state.release(stop_now, now, rollout.stop_releasing_at) {
            Release::Send(index) => {
                send_batch(ctx, rollout, snapshot_id, state, index, counters, stop).await?;
            }
            Release::Wait => return Ok(None),
            Release::Judge(wave) => judge_gate(ctx, rollout, state, wave).await?,
            Release::Halted(halt) => {
                if halt != Halt::AllReleased {
                    let unsent = state.batches.iter().filter(|b| b.sendable()).count();
                    debug!(?halt, unsent_batches = unsent, "releasing stopped");
                }
                return Ok(Some(halt));
            }
        }
    }
}

/// Judges the gate after `wave` and stores the decision with its audit entry; the stored
/// decision (an earlier one, if another process judged first) is what the rollout follows.
async fn judge_gate(
    ctx: &Context,
    rollout: &Rollout<'_>,
    state: &mut State,
    wave: u32,
) -> Result<(), RolloutError> {
    let Some(gate) = rollout.task.waves.gate.as_ref() else { return Ok(()) };
    let facts = state.wave_facts(rollout, wave);
    info!(wave, waves = state.waves, instances = facts.instances.len(), "judging the wave's gate");
    let verdict = gates::judge(ctx, gate, &facts).await;
    let at = Utc::now();
    let record = GateRecord {
        wave,
        passed: verdict.passed,
        reason: verdict.reason.clone(),
        checks: verdict.checks.clone(),
        decided_at: at,
    };
    let details = serde_json::json!({
        "run": rollout.run_id,
        "task": rollout.task.name,
        "wave": wave,
        "waves": state.waves,
        "passed": verdict.passed,
        "reason": verdict.reason,
        "instances": facts.instances,
        "checks": verdict.checks,
    });
    let target = format!("{}:{}:wave-{wave}", rollout.run_id, rollout.task.name);
    let entry = AuditEntry {
        at,
        actor: &ctx.actor,
        action: if verdict.passed { "wave-gate-passed" } else { "wave-gate-failed" },
        target: Some(&target),
        command_id: None,
        request_id: None,
        details: Some(&details),
    };
    let stored = ctx.store.record_gate(rollout.task_id, &record, &entry).await?;
    if stored.passed {
        info!(wave, "gate passed");
    } else {
        warn!(wave, reason = %stored.reason, "gate failed: the remaining waves are not released");
    }
    state.unhealthy.extend(unhealthy_in(&stored.checks));
    state.gates.insert(wave, stored);
    Ok(())
}

/// What sending one batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendResult {
    Sent,
    Rejected,
    /// Transient failures until releasing had to stop; the batch stays `sending` and unsent.
    GaveUp,
}

async fn send_batch(
    ctx: &Context,
    rollout: &Rollout<'_>,
    snapshot_id: uuid::Uuid,
    state: &mut State,
    index: usize,
    counters: &mut Counters,
    stop: &watch::Receiver<bool>,
) -> Result<SendResult, RolloutError> {
    let task = rollout.task;
    let number = state.batches[index].record.number;
    let instance_ids = state.batches[index].record.instance_ids.clone();
    let comment = state.batches[index].record.comment.clone();
    let mut pause = rollout.poll.interval;
    loop {
        let errors_left = state.errors_left();
        let command = patch_command(
            task,
            rollout.install_list_url,
            snapshot_id,
            &instance_ids,
            &comment,
            state.max_concurrency,
            errors_left,
        );
        // The intent first: a crash from here on leaves a batch to look up, not to resend.
        let record = ctx.store.mark_batch_sending(rollout.task_id, number, Utc::now()).await?;
        state.batches[index].record = record;
        state.batches[index].unsent = true;
        // Fenced by the store (the write above), but SSM cannot check an epoch: send only while
        // this host can be sure the term lasts, and never let an attempt leave after that.
        let budget = match ctx.store.fence() {
            None => None,
            Some(fence) => {
                let left = fence.term.remaining();
                if left <= SEND_MARGIN {
                    return Err(RolloutError::Deposed {
                        batch: number,
                        reason: format!("{} ms of the term left", left.as_millis()),
                    });
                }
                Some(left - SEND_MARGIN)
            }
        };
        counters.send_calls += 1;
        let sending = ctx.aws.send_patch_command(&command);
        let answer = match budget {
            None => sending.await,
            Some(budget) => match tokio::time::timeout(budget, sending).await {
                Ok(answer) => answer,
                Err(_) => {
                    return Err(RolloutError::Deposed {
                        batch: number,
                        reason: "the term ended while SendCommand was unanswered; the batch is looked up by its comment"
                            .into(),
                    })
                }
            },
        };
        let error = match answer {
            Ok(sent) => {
                let at = Utc::now();
                let details = serde_json::json!({
                    "run": rollout.run_id,
                    "task": task.name,
                    "batch": number,
                    "comment": comment,
                    "operation": task.operation.as_ssm(),
                    "reboot_option": task.reboot_option.as_ssm(),
                    "snapshot_id": snapshot_id.hyphenated().to_string(),
                    "instances": instance_ids,
                    "max_concurrency": command.max_concurrency.to_string(),
                    "max_errors": command.max_errors.to_string(),
                });
                record_sent(
                    ctx,
                    rollout,
                    state,
                    index,
                    &sent.command_id,
                    sent.request_id.as_deref(),
                    at,
                    &details,
                )
                .await?;
                info!(batch = number, command_id = %sent.command_id, instances = instance_ids.len(),
                    max_errors = errors_left, "batch sent");
                return Ok(SendResult::Sent);
            }
            Err(error) => error,
        };
        match &error {
            AwsError::NotFound { code, .. } if code.starts_with("InvalidInstanceId") => {
                // An instance is no longer a managed node (stopped, terminated, agent gone):
                // SSM refuses the whole batch and creates nothing. The rest goes on.
                warn!(batch = number, error = %error, "batch refused by ssm; its instances are not patched in this run");
                let reason = error.to_string();
                ctx.store.mark_batch_rejected(rollout.task_id, number, &reason).await?;
                let details = serde_json::json!({
                    "run": rollout.run_id, "task": task.name, "batch": number, "comment": comment,
                    "instances": instance_ids, "error": reason,
                });
                ctx.store
                    .append_audit(&AuditEntry {
                        at: Utc::now(),
                        actor: &ctx.actor,
                        action: "send-command-rejected",
                        target: Some(&comment),
                        command_id: None,
                        request_id: error.request_id(),
                        details: Some(&details),
                    })
                    .await?;
                let batch = &mut state.batches[index];
                batch.record.state = BatchState::Rejected;
                batch.record.error = Some(reason);
                batch.unsent = false;
                return Ok(SendResult::Rejected);
            }
            e if e.is_transient() => {
                warn!(batch = number, error = %error, pause_ms = pause.as_millis() as u64,
                    "sending failed for now; retrying");
            }
            _ => return Err(error.into()),
        }
        // Throttled: SSM refused the call, nothing was created. Anything else transient (a
        // timeout, a server error) may have created the command: look before sending again.
        let certain_unsent = matches!(error, AwsError::Throttled { .. });
        loop {
            tokio::time::sleep(pause).await;
            pause = rollout.poll.next(pause, false);
            if certain_unsent {
                break;
            }
            match lookup(ctx, &state.batches[index].record, document_of(rollout.task)).await {
                Ok(Some(found)) => {
                    adopt(ctx, rollout, state, index, &found).await?;
                    return Ok(SendResult::Sent);
                }
                Ok(None) => break,
                Err(e) if e.is_transient() => {
                    warn!(batch = number, error = %e, "looking the batch up failed for now; retrying");
                }
                Err(e) => return Err(e.into()),
            }
        }
        if *stop.borrow() || rollout.stop_releasing_at.is_some_and(|at| Utc::now() >= at) {
            warn!(batch = number, "releasing stopped while the batch could not be sent; left unsent");
            return Ok(SendResult::GaveUp);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn record_sent(
    ctx: &Context,
    rollout: &Rollout<'_>,
    state: &mut State,
    index: usize,
    command_id: &str,
    request_id: Option<&str>,
    at: DateTime<Utc>,
    details: &serde_json::Value,
) -> Result<(), RolloutError> {
    let number = state.batches[index].record.number;
    let comment = state.batches[index].record.comment.clone();
    let entry = AuditEntry {
        at,
        actor: &ctx.actor,
        action: "send-command",
        target: Some(&comment),
        command_id: Some(command_id),
        request_id,
        details: Some(details),
    };
    ctx.store.mark_batch_sent(rollout.task_id, number, command_id, at, Some(&entry)).await?;
    state.mark_sent(index, command_id, at);
    Ok(())
}

/// The command SSM has for a batch's comment, if any. Two commands for one comment (a send
/// whose answer was lost, sent again by something other than patchd) are reported; the
/// earliest is the batch's.
async fn lookup(
    ctx: &Context,
    batch: &BatchRecord,
    document: &str,
) -> Result<Option<CommandSummary>, AwsError> {
    let since = batch.sending_at.unwrap_or_else(Utc::now) - LOOKUP_SKEW;
    let mut found = ctx.aws.find_commands_by_comment(&batch.comment, since, document).await?;
    found.sort_by(|a, b| a.requested_at.cmp(&b.requested_at).then_with(|| a.command_id.cmp(&b.command_id)));
    if found.len() > 1 {
        let ids: Vec<&str> = found.iter().map(|c| c.command_id.as_str()).collect();
        warn!(batch = batch.number, comment = %batch.comment, commands = ?ids,
            "more than one command carries this batch's comment; the earliest is the batch's");
    }
    Ok(found.into_iter().next())
}

/// Records a command found by comment as the batch's.
async fn adopt(
    ctx: &Context,
    rollout: &Rollout<'_>,
    state: &mut State,
    index: usize,
    found: &CommandSummary,
) -> Result<(), RolloutError> {
    let number = state.batches[index].record.number;
    info!(batch = number, command_id = %found.command_id, "batch found sent by its comment; not sending it again");
    let details = serde_json::json!({
        "run": rollout.run_id,
        "task": rollout.task.name,
        "batch": number,
        "comment": found.comment,
        "instances": found.instance_ids,
        "requested_at": found.requested_at.map(|t| t.to_rfc3339()),
        "recovered": "found by comment after the send was not recorded",
    });
    record_sent(ctx, rollout, state, index, &found.command_id, None, Utc::now(), &details).await
}

/// For a batch left `sending`: adopts its command when SSM has one, else marks it sendable.
/// Transient lookup errors are waited out: sending without knowing could send it twice.
async fn adopt_or_unsent(
    ctx: &Context,
    rollout: &Rollout<'_>,
    state: &mut State,
    index: usize,
) -> Result<(), RolloutError> {
    let mut pause = rollout.poll.interval;
    loop {
        match lookup(ctx, &state.batches[index].record, document_of(rollout.task)).await {
            Ok(Some(found)) => return adopt(ctx, rollout, state, index, &found).await,
            Ok(None) => {
                debug!(batch = state.batches[index].record.number, "batch left sending was not sent");
                state.batches[index].unsent = true;
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                warn!(error = %e, "looking up a batch left sending failed for now; retrying");
                tokio::time::sleep(pause).await;
                pause = rollout.poll.next(pause, false);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    Unchanged,
    Changed,
    /// A listing failed for now (throttling, network): back off.
    Throttled,
}

/// Lists the invocations of the given batches' commands and stores what changed.
async fn poll(
    ctx: &Context,
    rollout: &Rollout<'_>,
    state: &mut State,
    active: &[usize],
    counters: &mut Counters,
) -> Result<Observed, RolloutError> {
    let mut updates: Vec<Invocation> = Vec::new();
    let mut throttled = false;
    for &index in active {
        let batch = &state.batches[index].record;
        let Some(command_id) = batch.command_id.clone() else { continue };
        counters.poll_calls += 1;
        let listed = match ctx.aws.list_invocations(&command_id).await {
            Ok(listed) => listed,
            Err(e) if e.is_transient() => {
                debug!(command_id, error = %e, "polling failed for now; backing off");
                throttled = true;
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let members: HashSet<&str> = batch.instance_ids.iter().map(String::as_str).collect();
        let mut listed_ids = HashSet::new();
        for invocation in listed {
            if !members.contains(invocation.instance_id.as_str()) {
                continue;
            }
            listed_ids.insert(invocation.instance_id.clone());
            if changed(state.seen.get(&invocation.instance_id), &invocation) {
                updates.push(invocation);
            }
        }
        let missing: Vec<String> =
            batch.instance_ids.iter().filter(|id| !listed_ids.contains(id.as_str())).cloned().collect();
        let listed_all_over = listed_ids.iter().all(|id| {
            updates
                .iter()
                .find(|u| &u.instance_id == id)
                .or_else(|| state.seen.get(id))
                .is_some_and(Invocation::is_terminal)
        });
        if !missing.is_empty() && listed_all_over {
            // Instances SSM never listed keep the command unfinished for patchd; once SSM says
            // the command is over, they never will be.
            counters.poll_calls += 1;
            match ctx.aws.command(&command_id).await {
                Ok(summary) if summary.status.known().is_some_and(CommandStatus::is_terminal) => {
                    warn!(command_id, missing = missing.len(), "instances missing from a finished command");
                    state.lost.extend(missing);
                }
                Ok(_) => {}
                Err(e) if e.is_transient() => throttled = true,
                Err(e) => return Err(e.into()),
            }
        }
    }
    if !updates.is_empty() {
        let observations: Vec<InvocationObservation<'_>> = updates
            .iter()
            .map(|i| InvocationObservation {
                instance: ctx.scope.key(&i.instance_id),
                command_id: &i.command_id,
                status: store_status(i),
                status_details: Some(i.status_details.as_str()).filter(|d| !d.is_empty()),
                requested_at: i.requested_at,
                started_at: i.started_at,
                ended_at: i.ended_at,
            })
            .collect();
        // Stored before anything acts on it.
        ctx.store.record_invocations(rollout.task_id, Utc::now(), &observations).await?;
        debug!(changed = updates.len(), "invocations recorded");
        if rollout.task.waves.hooks.is_some() {
            audit_hooks(ctx, rollout, &updates).await?;
        }
    }
    let any = !updates.is_empty();
    for invocation in updates {
        state.seen.insert(invocation.instance_id.clone(), invocation);
    }
    Ok(if any {
        Observed::Changed
    } else if throttled {
        Observed::Throttled
    } else {
        Observed::Unchanged
    })
}

/// Each node's hook steps, in one audit entry per poll, once its invocation is over: which hook
/// ran, and how it ended, is evidence of the drain and the re-enable around the patch.
async fn audit_hooks(
    ctx: &Context,
    rollout: &Rollout<'_>,
    updates: &[Invocation],
) -> Result<(), RolloutError> {
    let finished: Vec<serde_json::Value> = updates
        .iter()
        .filter(|i| i.is_terminal())
        .map(|i| {
            let steps: Vec<serde_json::Value> = i
                .steps
                .iter()
                .map(|s| serde_json::json!({ "step": s.name, "status": s.status, "response_code": s.response_code }))
                .collect();
            serde_json::json!({
                "instance_id": i.instance_id,
                "command_id": i.command_id,
                "status": i.status.as_str(),
                "status_details": i.status_details,
                "steps": steps,
            })
        })
        .collect();
    if finished.is_empty() {
        return Ok(());
    }
    let details =
        serde_json::json!({ "run": rollout.run_id, "task": rollout.task.name, "invocations": finished });
    ctx.audit(Utc::now(), "install-hooks", &rollout.task.name, &details).await?;
    Ok(())
}

/// Cancels the task's commands that still have unfinished invocations (the window cutoff's
/// `CANCEL_TASK`), each with an audit entry. Batches left `sending` are looked up first, so a
/// command whose send was not recorded is cancelled too. Returns the number of commands asked
/// to cancel; their invocations report Cancelled as they stop, which a running rollout polls.
/// A command that cannot be cancelled is logged and the others are still tried; the call fails
/// only when something failed and nothing could be cancelled.
#[instrument(skip(ctx), fields(task_id = %task_id), err(Display))]
pub async fn cancel_in_flight(
    ctx: &Context,
    task_id: WindowTaskId,
    document: &str,
) -> Result<usize, RolloutError> {
    let Some(plan) = ctx.store.rollout(task_id).await? else { return Ok(0) };
    let recorded = ctx.store.invocations(task_id).await?;
    let over: HashSet<(&str, &str)> = recorded
        .iter()
        .filter(|r| from_record(r).is_terminal())
        .map(|r| (r.command_id.as_str(), r.instance_id.as_str()))
        .collect();
    let mut commands: Vec<(u32, String)> = Vec::new();
    let mut first_error: Option<AwsError> = None;
    for batch in &plan.batches {
        let command_id = match batch.state {
            BatchState::Sent => batch.command_id.clone(),
            BatchState::Sending => match lookup(ctx, batch, document).await {
                Ok(found) => found.map(|c| c.command_id),
                Err(e) => {
                    warn!(batch = batch.number, error = %e, "cannot tell whether a batch being sent went out");
                    first_error.get_or_insert(e);
                    None
                }
            },
            BatchState::Planned | BatchState::Rejected => None,
        };
        let Some(command_id) = command_id else { continue };
        let unfinished =
            batch.instance_ids.iter().any(|id| !over.contains(&(command_id.as_str(), id.as_str())));
        if unfinished {
            commands.push((batch.number, command_id));
        }
    }
    let mut cancelled = 0;
    for (number, command_id) in commands {
        match ctx.aws.cancel_command(&command_id, None).await {
            Ok(answer) => {
                cancelled += 1;
                let details =
                    serde_json::json!({ "run": plan.run_key, "batch": number, "task_id": task_id.get() });
                ctx.store
                    .append_audit(&AuditEntry {
                        at: Utc::now(),
                        actor: &ctx.actor,
                        action: "cancel-command",
                        target: Some(&command_id),
                        command_id: Some(&command_id),
                        request_id: answer.request_id.as_deref(),
                        details: Some(&details),
                    })
                    .await?;
                info!(batch = number, command_id, "cancel requested");
            }
            Err(AwsError::NotFound { .. }) => {
                debug!(command_id, "nothing to cancel: command unknown or over")
            }
            Err(e) => {
                warn!(batch = number, command_id, error = %e, "cancel failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if cancelled == 0 => Err(e.into()),
        _ => Ok(cancelled),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 2, minute, 0).unwrap()
    }

    #[test]
    fn releases_follow_the_budget_the_stop_the_cutoff_and_the_free_slots() {
        let cutoff = Some(at(30));
        // (next batch, in flight, max concurrency, errors, max errors, stop, now) -> release
        let cases = [
            (None, 0, 100, 0, 0, false, at(0), Release::Halted(Halt::AllReleased)),
            (None, 0, 100, 9, 0, true, at(59), Release::Halted(Halt::AllReleased)),
            (Some((3, 50)), 0, 100, 0, 0, false, at(0), Release::Send(3)),
            (Some((3, 50)), 50, 100, 0, 0, false, at(0), Release::Send(3)),
            (Some((3, 50)), 51, 100, 0, 0, false, at(0), Release::Wait),
            (Some((3, 50)), 99, 100, 0, 0, false, at(0), Release::Wait),
            (Some((3, 10)), 0, 10, 0, 0, false, at(0), Release::Send(3)),
            (Some((3, 10)), 1, 10, 0, 0, false, at(0), Release::Wait),
            // Errors must exceed the budget, as SSM counts: 5 of 5 still releases.
            (Some((3, 50)), 0, 100, 5, 5, false, at(0), Release::Send(3)),
            (Some((3, 50)), 0, 100, 6, 5, false, at(0), Release::Halted(Halt::Budget)),
            (Some((3, 50)), 0, 100, 1, 0, true, at(40), Release::Halted(Halt::Budget)),
            (Some((3, 50)), 0, 100, 0, 0, true, at(0), Release::Halted(Halt::Stop)),
            (Some((3, 50)), 0, 100, 0, 0, false, at(29), Release::Send(3)),
            (Some((3, 50)), 0, 100, 0, 0, false, at(30), Release::Halted(Halt::Cutoff)),
            (Some((3, 50)), 90, 100, 0, 0, false, at(30), Release::Halted(Halt::Cutoff)),
        ];
        for (next, in_flight, limit, errors, budget, stop, now, expected) in cases {
            assert_eq!(
                next_release(next, in_flight, limit, errors, budget, stop, now, cutoff),
                expected,
                "next {next:?}, in flight {in_flight}/{limit}, errors {errors}/{budget}, stop {stop}, {now}"
            );
        }
        assert_eq!(next_release(Some((0, 50)), 0, 100, 0, 0, false, at(59), None), Release::Send(0));
    }

    #[test]
    fn batches_are_sorted_deduplicated_and_at_most_fifty() {
        let targets: Vec<String> =
            (0..120).rev().map(|i| format!("i-{i:03}")).chain(["i-007".into()]).collect();
        let batches = cut_batches(&targets, batch_size(100));
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 20]);
        assert_eq!(batches[0][0], "i-000");
        assert_eq!(batches[2][19], "i-119");
        assert_eq!(cut_batches(&targets, batch_size(100)), batches, "deterministic");
        assert_eq!(batch_size(7), 7, "a batch never exceeds the concurrency limit");
        assert_eq!(batch_size(0), 1);
        assert_eq!(batch_size(5000), 50);
        assert!(cut_batches(&[], 50).is_empty());
    }

    #[test]
    fn comments_fit_ssm_and_stay_unique() {
        let run = "6f1c2a9e-2b7d-4c55-9a0e-3f3b1c2d4e5f";
        let task = WindowTaskId::from(42);
        assert_eq!(
            batch_comment(run, "install", task, 7).as_deref(),
            Some("patchd:6f1c2a9e-2b7d-4c55-9a0e-3f3b1c2d4e5f:install:7")
        );
        let long = "a-task-name-long-enough-to-push-the-comment-past-one-hundred-chars";
        let comment = batch_comment(run, long, task, 120).unwrap();
        assert_eq!(comment, "patchd:6f1c2a9e-2b7d-4c55-9a0e-3f3b1c2d4e5f:task-42:120");
        assert!(batch_comment(run, "install", task, 9999).unwrap().chars().count() <= MAX_COMMENT_CHARS);
        assert_eq!(batch_comment(&"r".repeat(100), "install", task, 1), None);
    }

    #[test]
    fn polling_backs_off_while_nothing_changes() {
        let policy = PollPolicy::default();
        let mut interval = policy.interval;
        let mut seen = Vec::new();
        for _ in 0..7 {
            interval = policy.next(interval, false);
            seen.push(interval.as_secs());
        }
        assert_eq!(seen, [2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(policy.next(interval, true), Duration::from_secs(1));
        let odd = PollPolicy { interval: Duration::from_secs(5), max_interval: Duration::from_secs(1) };
        assert_eq!(odd.next(Duration::from_secs(5), false), Duration::from_secs(5), "max below initial");
    }

    fn invocation(status: impl Into<Reported<CommandStatus>>, details: &str) -> Invocation {
        Invocation::new("c", "i", status.into(), details)
    }

    #[test]
    fn invocations_stand_as_ssm_counts_them() {
        use CommandStatus as S;
        let known = Reported::Known;
        for (status, details, expected) in [
            (known(S::Pending), "Pending", Standing::InFlight),
            (known(S::InProgress), "InProgress", Standing::InFlight),
            (known(S::Cancelling), "Cancelling", Standing::InFlight),
            (known(S::Delayed), "Delayed", Standing::Delayed),
            (known(S::Success), "Success", Standing::Succeeded),
            (known(S::Failed), "Failed", Standing::Failed),
            (known(S::TimedOut), "ExecutionTimedOut", Standing::Failed),
            (known(S::TimedOut), "Execution Timed Out", Standing::Failed),
            (known(S::Failed), "Undeliverable", Standing::Undeliverable),
            (known(S::TimedOut), "DeliveryTimedOut", Standing::Undeliverable),
            (known(S::Failed), "InvalidPlatform", Standing::Undeliverable),
            (known(S::Cancelled), "Cancelled", Standing::Cancelled),
            (known(S::Cancelled), "Terminated", Standing::Cancelled),
            (known(S::Failed), "Something New", Standing::Failed),
            (known(S::Success), "Something New", Standing::Succeeded),
            (Reported::Unknown("Weird".into()), "Weird", Standing::InFlight),
        ] {
            assert_eq!(invocation(status.clone(), details).standing(), expected, "{status:?} / {details}");
        }
    }

    #[test]
    fn stored_invocations_classify_like_listed_ones() {
        for status in CommandStatus::ALL {
            let record = InvocationRecord {
                account: "a".into(),
                region: "r".into(),
                instance_id: "i".into(),
                command_id: "c".into(),
                status: *status,
                status_details: None,
                requested_at: None,
                started_at: None,
                ended_at: None,
            };
            let back = from_record(&record);
            assert_eq!(store_status(&back), *status);
            for details in ["Undeliverable", "DeliveryTimedOut", "ExecutionTimedOut", "Terminated"] {
                let detailed =
                    from_record(&InvocationRecord { status_details: Some(details.into()), ..record.clone() });
                let listed = invocation(detailed.status.clone(), details);
                assert_eq!(detailed.standing(), listed.standing(), "{status} / {details}");
            }
        }
        let odd = invocation(Reported::Unknown("New".into()), "DeliveryTimedOut");
        assert_eq!(store_status(&odd), CommandStatus::TimedOut);
    }

    fn plan(sizes: &[usize], max_concurrency: u32, max_errors: u32) -> RolloutRecord {
        let mut next = 0;
        RolloutRecord {
            task_id: WindowTaskId::from(1),
            run_key: "run".into(),
            snapshot_id: "s".into(),
            max_concurrency,
            max_errors,
            planned_at: at(0),
            batches: sizes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let ids = (next..next + n).map(|k| format!("i-{k}")).collect();
                    next += n;
                    BatchRecord {
                        number: i as u32 + 1,
                        comment: format!("c{i}"),
                        instance_ids: ids,
                        wave: 1,
                        state: BatchState::Planned,
                        command_id: None,
                        sending_at: None,
                        sent_at: None,
                        error: None,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn progress_counts_each_instance_once_and_delayed_ones_hold_no_slot() {
        let mut state = State::new(&plan(&[3, 3, 2], 3, 0));
        assert_eq!(state.release(false, at(0), None), Release::Send(0));
        state.mark_sent(0, "c-1", at(1));
        let p = state.progress();
        assert_eq!((p.total, p.sent, p.in_flight, p.done), (8, 3, 3, 0), "sent, not listed yet: in flight");
        assert_eq!(state.release(false, at(1), None), Release::Wait);
        assert_eq!(state.active(), [0]);

        let mut seen = |id: &str, status: CommandStatus, details: &str| {
            let mut i = invocation(status, details);
            i.instance_id = id.into();
            state.seen.insert(id.into(), i);
        };
        seen("i-0", CommandStatus::Success, "Success");
        seen("i-1", CommandStatus::Delayed, "Delayed");
        seen("i-2", CommandStatus::Failed, "Undeliverable");
        let p = state.progress();
        assert_eq!((p.in_flight, p.delayed, p.succeeded, p.undeliverable, p.done), (0, 1, 1, 1, 2));
        assert_eq!(state.release(false, at(2), None), Release::Send(1), "a delayed invocation holds no slot");
        assert_eq!(state.active(), [0], "but its command is still polled");

        state.mark_sent(1, "c-2", at(3));
        let mut i = invocation(CommandStatus::Failed, "Failed");
        i.instance_id = "i-3".into();
        state.seen.insert("i-3".into(), i);
        assert_eq!(state.errors_left(), 0);
        assert_eq!(state.release(false, at(3), None), Release::Halted(Halt::Budget));
        let p = state.progress();
        assert_eq!((p.failed, p.sent, p.total - p.sent), (1, 6, 2));
        assert_eq!(state.command_ids(), ["c-1", "c-2"]);

        state.batches[2].record.state = BatchState::Rejected;
        assert_eq!(state.progress().rejected, 2);
        assert_eq!(state.next_unsent(), None);
    }
}
