//! The simulated world: fleet, catalog, baselines and commands, advanced as a pure function of
//! the simulated clock.
//!
//! Every request first calls [`World::sync`], which processes the due events in time order
//! (invocations starting and finishing, reboots ending, agents coming back, fault ticks).
//! Nothing runs in the background, and every random draw comes from a ChaCha RNG seeded from
//! the scenario's seed and a stream number (per instance, per command invocation, per fault
//! tick), so the same scenario, seed and requests at the same simulated instants give the same
//! answers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::alarms::{AlarmState, AlarmView, Alarms};
use crate::baseline::{predefined, Approval, Baseline};
use crate::catalog::{Catalog, CatalogShape, Patch, PatchRelease};
use crate::clock::{to_datetime, Millis, SharedClock, SimClock};
use crate::commands::{
    Command, CommandRequest, InstallListOutcome, InvocationResult, InvocationState, Step, StepKind,
    NOOP_DOCUMENT,
};
use crate::faults::{Faults, Throttle};
use crate::fleet::{generate, AgentState, InstallPlan, Instance, Operation, PatchReport, STREAM_COMMAND};
use crate::hooks::{HookRule, Hooks};
use crate::platform::Platform;
use crate::random::derive_seed;
use crate::scenario::{Scenario, Timing};
use crate::stats::{bump, CallCounters, Stats};

const STREAM_FAULTS: u64 = 3;
const STREAM_WORLD: u64 = 4;
const STREAM_INITIAL_SCAN: u64 = 5;
const STREAM_REQUESTS: u64 = 6;
const STREAM_STEPS: u64 = 7;
const FAULT_TICK_MS: Millis = 60_000;
/// How long an Install whose override list cannot be used runs before it fails: the document
/// downloads the list before it does anything else.
const UNUSABLE_LIST_MS: Millis = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKind {
    Dispatch {
        command: usize,
    },
    Finish {
        command: usize,
        invocation: u32,
        timed_out: bool,
    },
    RebootDone {
        command: usize,
        invocation: u32,
    },
    /// The running step of a hook document's Install ended.
    StepDone {
        command: usize,
        invocation: u32,
    },
    CancelDone {
        command: usize,
        invocation: u32,
    },
    DeliveryTimeout {
        command: usize,
        invocation: u32,
    },
    AgentBack {
        instance: u32,
        epoch: u64,
    },
    FaultTick,
    AlarmCheck,
}

/// An install whose reboot the agent did not come back from: what finishing it needs if the
/// agent is brought back before the execution timeout.
#[derive(Debug, Clone, Copy)]
struct LostReboot {
    command: usize,
    invocation: u32,
    approval_ms: Millis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Event {
    at: Millis,
    seq: u64,
    kind: EventKind,
}

impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug)]
struct CachedApprovals {
    baseline_revision: u64,
    catalog_revision: u64,
    approvals: Arc<Vec<Approval>>,
}

/// Why a control action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no instance {0}; list instances with GET /_sim/instances")]
    UnknownInstance(String),
    #[error("instance {0} has no SSM agent; its agent state cannot change")]
    NoAgent(String),
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug)]
pub struct World {
    /// Shared with the server's other partitions.
    pub(crate) clock: SharedClock,
    pub(crate) now: Millis,
    pub(crate) start_ms: Millis,
    pub(crate) seed: u64,
    pub(crate) region: String,
    pub(crate) account_id: String,
    pub(crate) timing: Timing,
    pub(crate) faults: Faults,
    pub(crate) throttle: Throttle,
    pub(crate) catalog: Catalog,
    pub(crate) instances: Vec<Instance>,
    instance_index: HashMap<String, u32>,
    pub(crate) baselines: Vec<Baseline>,
    /// (patch group, operating system) → baseline id.
    pub(crate) patch_groups: BTreeMap<(String, String), String>,
    approval_cache: HashMap<String, CachedApprovals>,
    pub(crate) commands: Vec<Command>,
    pub(crate) command_index: HashMap<String, usize>,
    active: Vec<usize>,
    events: BinaryHeap<Reverse<Event>>,
    event_seq: u64,
    /// (SnapshotId, baseline id) → the instant whose approvals the snapshot froze.
    snapshots: HashMap<(String, String), Millis>,
    pub(crate) request_rng: ChaCha8Rng,
    world_rng: ChaCha8Rng,
    fault_ticks: u64,
    tick_scheduled: bool,
    pub(crate) counters: CallCounters,
    pub(crate) next_baseline_number: u64,
    pub(crate) client_tokens: HashMap<String, String>,
    pub(crate) request_number: u64,
    pub(crate) alarms: Alarms,
    pub(crate) hooks: Hooks,
    /// Instance → the invocation stuck behind its lost reboot.
    lost_reboots: HashMap<u32, LostReboot>,
    /// The server's S3, where nodes read install override lists (locked after the world).
    pub(crate) s3: Arc<Mutex<crate::s3::S3>>,
}

impl World {
    pub fn new(scenario: &Scenario) -> World {
        let start_ms = scenario.start_ms();
        let clock = SharedClock::new(SimClock::new(start_ms, scenario.time_scale));
        World::with_clock(scenario, scenario.seed, clock, start_ms, Arc::default())
    }

    /// A world on a clock it shares with others. `catalog_seed` is apart from the scenario's
    /// seed because AWS's patch catalog is the same in every account: partitions with their own
    /// fleet seeds still see the same patch ids.
    pub(crate) fn with_clock(
        scenario: &Scenario,
        catalog_seed: u64,
        clock: SharedClock,
        start_ms: Millis,
        s3: Arc<Mutex<crate::s3::S3>>,
    ) -> World {
        let shapes = Platform::ALL.map(|platform| CatalogShape {
            patches: scenario.catalog.patches_for(platform),
            history_days: scenario.catalog.history_days,
            future_days: scenario.catalog.future_days,
            future_share: scenario.catalog.future_share,
        });
        let catalog = Catalog::generate(shapes, start_ms, catalog_seed);
        let lists: [&[Patch]; 5] = Platform::ALL.map(|p| catalog.patches(p));
        let instances = generate(scenario, &lists, start_ms);
        let instance_index =
            instances.iter().enumerate().map(|(i, inst)| (inst.id.clone(), i as u32)).collect();
        let created = start_ms - 5 * 365 * 86_400_000;
        let baselines = Platform::ALL.iter().map(|p| predefined(*p, &scenario.region, created)).collect();
        let mut world = World {
            clock,
            now: start_ms,
            start_ms,
            seed: scenario.seed,
            region: scenario.region.clone(),
            account_id: scenario.account_id.clone(),
            timing: scenario.timing.clone(),
            faults: scenario.faults.clone(),
            throttle: Throttle::default(),
            catalog,
            instances,
            instance_index,
            baselines,
            patch_groups: BTreeMap::new(),
            approval_cache: HashMap::new(),
            commands: Vec::new(),
            command_index: HashMap::new(),
            active: Vec::new(),
            events: BinaryHeap::new(),
            event_seq: 0,
            snapshots: HashMap::new(),
            request_rng: ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, STREAM_REQUESTS, 0)),
            world_rng: ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, STREAM_WORLD, 0)),
            fault_ticks: 0,
            tick_scheduled: false,
            counters: CallCounters::default(),
            next_baseline_number: 0,
            client_tokens: HashMap::new(),
            request_number: 0,
            alarms: Alarms::default(),
            hooks: scenario.hooks.clone(),
            lost_reboots: HashMap::new(),
            s3,
        };
        world.initial_scans(scenario);
        world.schedule_fault_tick();
        world
    }

    /// Gives the share of managed instances a scenario says were scanned a report from a scan
    /// a few hours before the start, as a daily scan association would have left.
    fn initial_scans(&mut self, scenario: &Scenario) {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, STREAM_INITIAL_SCAN, 0));
        for index in 0..self.instances.len() {
            let instance = &self.instances[index];
            let share = scenario.groups.get(usize::from(instance.group)).map_or(1.0, |g| g.scanned);
            let draw: f64 = rng.random();
            let hours_before = rng.random_range(1.0..20.0);
            if !instance.is_managed() || draw >= share {
                continue;
            }
            let at = self.start_ms - (hours_before * 3_600_000.0) as Millis;
            let baseline = self.baseline_index_for(index);
            let approvals = self.approvals(baseline);
            let baseline_ref = &self.baselines[baseline];
            let catalog = self.catalog.patches(self.instances[index].platform);
            let instance = &mut self.instances[index];
            let counts = instance.evaluate(catalog, &approvals, baseline_ref, at, Operation::Scan);
            instance.report = Some(PatchReport {
                operation: Operation::Scan,
                start_ms: at - (self.timing.scan_seconds * 1000.0) as Millis,
                end_ms: at,
                baseline_id: baseline_ref.id.clone(),
                snapshot_id: None,
                patch_group: instance.patch_group().unwrap_or("").to_string(),
                reboot_option: Some("RebootIfNeeded"),
                last_no_reboot_install_ms: None,
                install_override_list: None,
                counts,
            });
        }
    }

    // ----- time -----

    /// Brings the world up to the clock's now and returns it.
    pub fn sync(&mut self) -> Millis {
        let now = self.clock.now();
        self.advance_to(now);
        now
    }

    /// Processes every event due at or before `target`, in time order.
    pub fn advance_to(&mut self, target: Millis) {
        while let Some(Reverse(event)) = self.events.peek().copied() {
            if event.at > target {
                break;
            }
            self.events.pop();
            self.now = self.now.max(event.at);
            self.handle(event.kind);
        }
        self.now = self.now.max(target);
    }

    pub fn advance_by(&mut self, by: Millis) -> Millis {
        self.clock.advance(by);
        self.sync()
    }

    pub fn set_time_scale(&mut self, scale: f64) {
        self.sync();
        self.clock.set_scale(scale);
    }

    pub fn time_scale(&self) -> f64 {
        self.clock.scale()
    }

    fn schedule(&mut self, at: Millis, kind: EventKind) {
        self.event_seq += 1;
        self.events.push(Reverse(Event { at, seq: self.event_seq, kind }));
    }

    fn handle(&mut self, kind: EventKind) {
        match kind {
            EventKind::Dispatch { command } => {
                if self.commands[command].state == crate::commands::CommandState::Pending {
                    self.commands[command].state = crate::commands::CommandState::InProgress;
                }
                self.dispatch(command);
                self.settle(command);
            }
            EventKind::Finish { command, invocation, timed_out } => {
                self.finish(command, invocation, timed_out)
            }
            EventKind::RebootDone { command, invocation } => self.reboot_done(command, invocation),
            EventKind::StepDone { command, invocation } => self.step_done(command, invocation),
            EventKind::CancelDone { command, invocation } => {
                let now = self.now;
                let inv = &mut self.commands[command].invocations[invocation as usize];
                if inv.state == InvocationState::Cancelling {
                    inv.state = InvocationState::Cancelled;
                    inv.end_ms = Some(now);
                    self.commands[command].in_progress -= 1;
                    self.dispatch(command);
                    self.settle(command);
                }
            }
            EventKind::DeliveryTimeout { command, invocation } => {
                let now = self.now;
                let cmd = &mut self.commands[command];
                let inv = &mut cmd.invocations[invocation as usize];
                if inv.state == InvocationState::Delayed {
                    inv.state = InvocationState::DeliveryTimedOut;
                    inv.end_ms = Some(now);
                    cmd.delayed.retain(|i| *i != invocation);
                    self.settle(command);
                }
            }
            EventKind::AgentBack { instance, epoch } => {
                let now = self.now;
                let inst = &mut self.instances[instance as usize];
                if inst.agent_epoch == epoch && inst.agent == Some(AgentState::ConnectionLost) {
                    inst.set_agent(Some(AgentState::Online), now);
                    self.retry_delayed();
                }
            }
            EventKind::FaultTick => self.fault_tick(),
            EventKind::AlarmCheck => {
                for command in self.active.clone() {
                    self.check_alarm(command);
                }
            }
        }
    }

    // ----- faults over time -----

    fn schedule_fault_tick(&mut self) {
        if !self.tick_scheduled && self.faults.agent_offline_per_hour > 0.0 {
            self.tick_scheduled = true;
            let at = self.now + FAULT_TICK_MS;
            self.schedule(at, EventKind::FaultTick);
        }
    }

    /// Drops Online agents to ConnectionLost at the configured hourly rate. Picks instances by
    /// geometric skips, so a tick costs in proportion to the drops, not the fleet size.
    fn fault_tick(&mut self) {
        self.tick_scheduled = false;
        let per_hour = self.faults.agent_offline_per_hour;
        if per_hour <= 0.0 {
            return;
        }
        self.fault_ticks += 1;
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, STREAM_FAULTS, self.fault_ticks));
        let chance = 1.0 - (1.0 - per_hour.min(1.0)).powf(FAULT_TICK_MS as f64 / 3_600_000.0);
        let now = self.now;
        let outage_ms = self.faults.agent_offline_seconds * 1000.0;
        let mut index = 0usize;
        loop {
            let draw: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let skip = if chance >= 1.0 { 0.0 } else { (draw.ln() / (1.0 - chance).ln()).floor() };
            if !skip.is_finite() || skip >= (self.instances.len() - index.min(self.instances.len())) as f64 {
                break;
            }
            index += skip as usize;
            if index >= self.instances.len() {
                break;
            }
            let duration = (outage_ms * rng.random_range(0.5..1.5)) as Millis;
            let instance = &mut self.instances[index];
            if instance.running && instance.agent == Some(AgentState::Online) {
                instance.set_agent(Some(AgentState::ConnectionLost), now);
                let epoch = instance.agent_epoch;
                self.schedule(
                    now + duration.max(1000),
                    EventKind::AgentBack { instance: index as u32, epoch },
                );
            }
            index += 1;
        }
        self.schedule_fault_tick();
    }

    // ----- instances -----

    pub fn instance_position(&self, id: &str) -> Option<usize> {
        self.instance_index.get(id).map(|i| *i as usize)
    }

    pub fn instance(&self, id: &str) -> Option<&Instance> {
        self.instance_position(id).map(|i| &self.instances[i])
    }

    pub fn set_agent(&mut self, id: &str, state: AgentState) -> Result<(), ControlError> {
        self.sync();
        let index =
            self.instance_position(id).ok_or_else(|| ControlError::UnknownInstance(id.to_string()))?;
        let now = self.now;
        let instance = &mut self.instances[index];
        if instance.agent.is_none() {
            return Err(ControlError::NoAgent(id.to_string()));
        }
        instance.set_agent(Some(state), now);
        if state == AgentState::Online {
            self.resume_lost_reboot(index as u32);
            self.retry_delayed();
        }
        Ok(())
    }

    /// Marks (or unmarks) an instance whose agent will not come back after its next reboot.
    pub fn set_lost_after_reboot(&mut self, id: &str, lost: bool) -> Result<(), ControlError> {
        self.sync();
        let index =
            self.instance_position(id).ok_or_else(|| ControlError::UnknownInstance(id.to_string()))?;
        if self.instances[index].agent.is_none() {
            return Err(ControlError::NoAgent(id.to_string()));
        }
        self.instances[index].lost_after_reboot = lost;
        Ok(())
    }

    // ----- alarms and hooks -----

    /// Creates or sets an alarm; one turning ALARM stops the commands gated on it at once.
    pub fn set_alarm(&mut self, name: &str, state: AlarmState) -> Result<(), ControlError> {
        let now = self.sync();
        self.alarms.set(name, state, now).map_err(ControlError::Invalid)?;
        if state == AlarmState::Alarm {
            // Through the event queue, so that alarms act where every other change of the
            // world does, in time order with what else falls due now.
            self.schedule(now, EventKind::AlarmCheck);
            self.advance_to(now);
        }
        Ok(())
    }

    pub fn alarms(&mut self) -> Vec<AlarmView> {
        self.sync();
        self.alarms.views()
    }

    pub fn set_hook_rules(&mut self, rules: Vec<HookRule>) -> Result<(), ControlError> {
        let problems = crate::hooks::rule_problems(&rules);
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems.join("; ")));
        }
        self.sync();
        self.hooks.outcomes = rules;
        Ok(())
    }

    pub fn hook_rules(&self) -> &[HookRule] {
        &self.hooks.outcomes
    }

    /// Stops an unfinished command whose alarm is in ALARM, as CancelCommand would, and
    /// remembers the alarm. Returns whether it stopped it.
    fn check_alarm(&mut self, command: usize) -> bool {
        let cmd = &self.commands[command];
        let Some(gate) = &cmd.request.alarm else { return false };
        if cmd.triggered_alarm.is_some()
            || cmd.state.is_terminal()
            || self.alarms.state(&gate.alarm) != AlarmState::Alarm
        {
            return false;
        }
        let alarm = gate.alarm.clone();
        self.commands[command].triggered_alarm = Some(alarm);
        self.cancel(command, None);
        true
    }

    pub fn set_running(&mut self, id: &str, running: bool) -> Result<(), ControlError> {
        self.sync();
        let index =
            self.instance_position(id).ok_or_else(|| ControlError::UnknownInstance(id.to_string()))?;
        self.instances[index].running = running;
        if running {
            self.retry_delayed();
        }
        Ok(())
    }

    pub fn set_faults(&mut self, faults: Faults) -> Result<(), ControlError> {
        let problems = faults.problems();
        if !problems.is_empty() {
            return Err(ControlError::Invalid(problems.join("; ")));
        }
        self.sync();
        self.faults = faults;
        self.throttle.reset();
        self.schedule_fault_tick();
        Ok(())
    }

    /// Releases a new patch for `platform` now; every instance of that platform gets it as
    /// missing (or not applicable). Returns the patch id.
    pub fn release_patch(&mut self, platform: Platform, request: &PatchRelease) -> String {
        self.sync();
        let now = self.now;
        let index = self.catalog.release(platform, request, now, &mut self.world_rng);
        let needs_reboot = self.catalog.patches(platform)[index].needs_reboot;
        for instance in self.instances.iter_mut().filter(|i| i.platform == platform) {
            let applicable = needs_reboot || crate::random::chance(&mut self.world_rng, 0.85);
            instance.track_new_patch(applicable);
        }
        self.catalog.patches(platform)[index].id.clone()
    }

    // ----- baselines -----

    pub(crate) fn baseline_position(&self, id: &str) -> Option<usize> {
        self.baselines.iter().position(|b| b.id == id)
    }

    fn default_baseline_position(&self, platform: Platform) -> usize {
        let os = platform.operating_system();
        self.baselines.iter().position(|b| b.predefined && b.operating_system == os).unwrap_or(0)
    }

    /// The baseline SSM applies to an instance: its patch group's for its OS, else the default.
    pub(crate) fn baseline_index_for(&self, instance: usize) -> usize {
        let inst = &self.instances[instance];
        let os = inst.platform.operating_system();
        inst.patch_group()
            .and_then(|group| self.patch_groups.get(&(group.to_string(), os.to_string())))
            .and_then(|id| self.baseline_position(id))
            .unwrap_or_else(|| self.default_baseline_position(inst.platform))
    }

    /// Baseline verdicts for its platform's catalog, cached until either changes.
    pub(crate) fn approvals(&mut self, baseline: usize) -> Arc<Vec<Approval>> {
        let b = &self.baselines[baseline];
        let revision = self.catalog.revision;
        if let Some(cached) = self.approval_cache.get(&b.id) {
            if cached.baseline_revision == b.revision && cached.catalog_revision == revision {
                return cached.approvals.clone();
            }
        }
        let approvals = match Platform::from_operating_system(&b.operating_system) {
            Some(platform) => Arc::new(b.approvals(self.catalog.patches(platform))),
            None => Arc::new(Vec::new()),
        };
        self.approval_cache.insert(
            b.id.clone(),
            CachedApprovals {
                baseline_revision: b.revision,
                catalog_revision: revision,
                approvals: approvals.clone(),
            },
        );
        approvals
    }

    // ----- commands -----

    /// Every command this partition ever created, in creation order: the simulator's own
    /// history, which tests count duplicates and losses from.
    pub fn command_history(&self) -> Vec<crate::commands::CommandView> {
        self.commands
            .iter()
            .map(|c| crate::commands::CommandView {
                command_id: c.id.clone(),
                account: self.account_id.clone(),
                region: self.region.clone(),
                requested_at: crate::clock::to_datetime(c.requested_ms),
                comment: c.request.comment.clone(),
                document_name: c.request.document_name.clone(),
                parameters: c.request.parameters.clone(),
                operation: if c.request.shell.is_some() {
                    String::new()
                } else {
                    c.request.operation.as_str().to_string()
                },
                instance_ids: c
                    .invocations
                    .iter()
                    .filter_map(|i| self.instances.get(i.instance as usize).map(|inst| inst.id.clone()))
                    .collect(),
                stopped_by_alarm: c.triggered_alarm.clone(),
                invocations: c
                    .invocations
                    .iter()
                    .filter_map(|i| {
                        Some(crate::commands::InvocationView {
                            instance_id: self.instances.get(i.instance as usize)?.id.clone(),
                            status: i.state.status().to_string(),
                            started_at: i.start_ms.map(crate::clock::to_datetime),
                            ended_at: i.end_ms.map(crate::clock::to_datetime),
                        })
                    })
                    .collect(),
            })
            .collect()
    }

    /// Creates a command for the given instances and schedules its dispatch.
    pub(crate) fn create_command(&mut self, request: CommandRequest, targets: Vec<u32>) -> usize {
        let number = self.commands.len() as u64;
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, STREAM_COMMAND, number << 32));
        // Command ids are AWS's random UUIDs, unique across accounts and regions: two
        // partitions sharing a seed (and so their instance ids) must still hand out different
        // ones. The partition is mixed into the id alone, so the draws that decide the
        // command's outcomes stay what the seed makes them.
        let mut bytes: [u8; 16] = rng.random();
        for (byte, mix) in bytes.iter_mut().zip(partition_index(&self.account_id, &self.region).to_le_bytes())
        {
            *byte ^= mix;
        }
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid().to_string();
        let command = Command::new(id.clone(), self.now, request, targets);
        let index = self.commands.len();
        let terminal = command.state.is_terminal();
        self.commands.push(command);
        self.command_index.insert(id, index);
        if !terminal {
            self.active.push(index);
            let at = self.now + (self.timing.dispatch_delay_seconds * 1000.0) as Millis;
            // The alarm is first read at dispatch, so SendCommand answers Pending as SSM does.
            self.schedule(at, EventKind::Dispatch { command: index });
        }
        index
    }

    /// The execution timeout of the command's document: AWS-RunShellScript's
    /// `executionTimeout`, else the scenario's for AWS-RunPatchBaseline.
    fn execution_timeout_ms(&self, command: usize) -> Millis {
        match &self.commands[command].request.shell {
            Some(script) => i64::from(script.execution_timeout_seconds) * 1000,
            None => (self.timing.execution_timeout_seconds * 1000.0) as Millis,
        }
    }

    fn invocation_rng(&self, command: usize, invocation: u32) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(derive_seed(
            self.seed,
            STREAM_COMMAND,
            ((command as u64) << 32) | (u64::from(invocation) + 1),
        ))
    }

    /// Starts invocations while the command has free concurrency: first those whose agent
    /// came back, then pending ones in target order.
    fn dispatch(&mut self, command: usize) {
        if self.commands[command].state == crate::commands::CommandState::Pending {
            return;
        }
        // Whatever frees a slot, the gate is read before another invocation starts.
        if self.check_alarm(command) {
            return;
        }
        loop {
            let cmd = &self.commands[command];
            if cmd.stopped || cmd.in_progress >= cmd.concurrency_limit {
                return;
            }
            let returning = cmd.delayed.iter().position(|inv| {
                let instance = &self.instances[cmd.invocations[*inv as usize].instance as usize];
                instance.running && instance.agent == Some(AgentState::Online)
            });
            if let Some(position) = returning {
                let invocation = self.commands[command].delayed.remove(position);
                self.deliver(command, invocation);
                continue;
            }
            let cmd = &mut self.commands[command];
            while cmd.next_pending < cmd.invocations.len()
                && cmd.invocations[cmd.next_pending].state != InvocationState::Pending
            {
                cmd.next_pending += 1;
            }
            if cmd.next_pending >= cmd.invocations.len() {
                return;
            }
            let invocation = cmd.next_pending as u32;
            cmd.next_pending += 1;
            self.deliver(command, invocation);
        }
    }

    fn deliver(&mut self, command: usize, invocation: u32) {
        let now = self.now;
        let timeout_ms = i64::from(self.commands[command].request.timeout_seconds) * 1000;
        let instance_index = self.commands[command].invocations[invocation as usize].instance as usize;
        let (managed, agent) = {
            let instance = &self.instances[instance_index];
            (instance.running && instance.agent.is_some(), instance.agent)
        };
        let operation = self.commands[command].request.operation;
        let inv = &mut self.commands[command].invocations[invocation as usize];
        inv.dispatched_ms.get_or_insert(now);
        if !managed {
            inv.state = InvocationState::Undeliverable;
            inv.end_ms = Some(now);
            return;
        }
        if agent == Some(AgentState::ConnectionLost) {
            if inv.state != InvocationState::Delayed {
                inv.state = InvocationState::Delayed;
                self.commands[command].delayed.push(invocation);
                self.schedule(now + timeout_ms, EventKind::DeliveryTimeout { command, invocation });
            }
            return;
        }
        inv.state = InvocationState::InProgress;
        inv.start_ms = Some(now);
        self.commands[command].in_progress += 1;
        let mut rng = self.invocation_rng(command, invocation);
        let hang = self.faults.execution_timeout_rate;
        if crate::random::chance(&mut rng, hang) {
            let at = now + self.execution_timeout_ms(command);
            self.schedule(at, EventKind::Finish { command, invocation, timed_out: true });
            return;
        }
        let request = &self.commands[command].request;
        if request.hook_documents.is_some() && operation == Operation::Install {
            self.start_step(command, invocation, StepKind::PreInstallHook);
            return;
        }
        if let (Operation::Install, Some(url)) = (operation, request.install_override_list.clone()) {
            let outcome = self.read_install_list(instance_index, &url);
            let unusable = matches!(outcome, InstallListOutcome::Unusable(_));
            self.commands[command].invocations[invocation as usize].install_list = Some(outcome);
            if unusable {
                self.schedule(
                    now + UNUSABLE_LIST_MS,
                    EventKind::Finish { command, invocation, timed_out: false },
                );
                return;
            }
        }
        let timing = &self.timing;
        let base = match (&self.commands[command].request.shell, operation) {
            (Some(_), _) => self.hooks.script_seconds,
            (None, Operation::Scan) => timing.scan_seconds,
            (None, Operation::Install) => timing.install_seconds,
        };
        let spread = if timing.jitter > 0.0 { rng.random_range(-timing.jitter..=timing.jitter) } else { 0.0 };
        let duration = (base * (1.0 + spread) * 1000.0).max(1.0) as Millis;
        self.schedule(now + duration, EventKind::Finish { command, invocation, timed_out: false });
    }

    fn finish(&mut self, command: usize, invocation: u32, timed_out: bool) {
        let now = self.now;
        if self.commands[command].invocations[invocation as usize].state != InvocationState::InProgress {
            return;
        }
        if timed_out {
            let inv = &mut self.commands[command].invocations[invocation as usize];
            inv.state = InvocationState::ExecutionTimedOut;
            inv.end_ms = Some(now);
            self.commands[command].in_progress -= 1;
            self.after_terminal(command);
            return;
        }
        let instance_index = self.commands[command].invocations[invocation as usize].instance as usize;
        if let Some(script) = &self.commands[command].request.shell {
            let outcome = self.hooks.outcome(&script.commands, &self.instances[instance_index].id);
            let inv = &mut self.commands[command].invocations[invocation as usize];
            inv.state =
                if outcome.exit_code == 0 { InvocationState::Success } else { InvocationState::Failed };
            inv.script = Some(outcome);
            inv.end_ms = Some(now);
            self.commands[command].in_progress -= 1;
            self.after_terminal(command);
            return;
        }
        let listed = match &self.commands[command].invocations[invocation as usize].install_list {
            Some(InstallListOutcome::Unusable(_)) => {
                self.end_invocation(command, invocation, InvocationState::Failed);
                return;
            }
            Some(InstallListOutcome::Read { selected, .. }) => Some(selected.clone()),
            None => None,
        };
        let baseline = self.baseline_index_for(instance_index);
        let approvals = self.approvals(baseline);
        let baseline_id = self.baselines[baseline].id.clone();
        let request = &self.commands[command].request;
        let (operation, reboot_if_needed) = (request.operation, request.reboot_if_needed);
        let approval_ms = match &request.snapshot_id {
            Some(snapshot) => *self.snapshots.entry((snapshot.clone(), baseline_id.clone())).or_insert(now),
            None => now,
        };
        let mut rng = self.invocation_rng(command, invocation);
        // Skip the draws the dispatch made, so install failures do not mirror durations.
        let _: u64 = rng.random();
        let failure_rate = self.faults.install_failure_rate;
        let platform = self.instances[instance_index].platform;
        let catalog = self.catalog.patches(platform);
        let instance = &mut self.instances[instance_index];
        // Decided before installing, so that the install can leave the reboot to us when the
        // agent will not survive it. No draw at a zero rate keeps older seeds' stories.
        let lose_agent = operation == Operation::Install
            && reboot_if_needed
            && (instance.lost_after_reboot
                || crate::random::chance(&mut rng, self.faults.lost_after_reboot_rate));
        let mut install = match operation {
            Operation::Install => instance.install(
                catalog,
                &approvals,
                InstallPlan {
                    approval_ms,
                    now_ms: now,
                    reboot_if_needed: reboot_if_needed && !lose_agent,
                    failure_rate,
                    listed: listed.as_deref(),
                },
                &mut rng,
            ),
            Operation::Scan => Default::default(),
        };
        let lost = lose_agent && instance.has_pending_reboot();
        let counts =
            instance.evaluate(catalog, &approvals, &self.baselines[baseline], approval_ms, operation);
        if lost {
            // Evaluated before the reboot: the last report the agent sends shows the reboot
            // still pending.
            instance.reboot();
            instance.lost_after_reboot = false;
            install.rebooted = true;
        }
        let patch_group = instance.patch_group().unwrap_or("").to_string();
        let result = InvocationResult { counts, install, baseline_id, patch_group };
        let rebooted = install.rebooted;
        self.commands[command].invocations[invocation as usize].result = Some(result);
        if lost {
            self.write_report(command, invocation);
            self.instances[instance_index].set_agent(Some(AgentState::ConnectionLost), now);
            self.lost_reboots.insert(instance_index as u32, LostReboot { command, invocation, approval_ms });
            let start = self.commands[command].invocations[invocation as usize].start_ms.unwrap_or(now);
            let at = (start + self.execution_timeout_ms(command)).max(now);
            self.schedule(at, EventKind::Finish { command, invocation, timed_out: true });
        } else if rebooted {
            let instance = &mut self.instances[instance_index];
            instance.set_agent(Some(AgentState::ConnectionLost), now);
            let epoch = instance.agent_epoch;
            let back = now + (self.timing.reboot_seconds * 1000.0) as Millis;
            self.schedule(back, EventKind::AgentBack { instance: instance_index as u32, epoch });
            // The agent reports the outcome once it is back after the reboot.
            self.schedule(back, EventKind::RebootDone { command, invocation });
        } else {
            self.complete(command, invocation);
        }
    }

    fn reboot_done(&mut self, command: usize, invocation: u32) {
        if self.commands[command].invocations[invocation as usize].state == InvocationState::InProgress {
            self.after_reboot(command, invocation);
        }
    }

    /// The agent is back after an install's reboot, its result's counts already re-evaluated
    /// where needed: AWS-RunPatchBaseline ends, a hook document goes on to its on-exit hook.
    fn after_reboot(&mut self, command: usize, invocation: u32) {
        if self.commands[command].request.hook_documents.is_some() {
            self.reevaluate(command, invocation);
            self.write_report(command, invocation);
            self.start_step(command, invocation, StepKind::OnExit);
        } else {
            self.complete(command, invocation);
        }
    }

    /// Compliance of the invocation's instance as of its approvals, into its result.
    fn reevaluate(&mut self, command: usize, invocation: u32) {
        let inv = &self.commands[command].invocations[invocation as usize];
        let index = inv.instance as usize;
        // The install's own instant, so that approvals the reboot waited through do not count.
        let installed_ms = inv
            .steps
            .iter()
            .find(|s| s.kind == StepKind::InstallWithNoReboot)
            .and_then(|s| s.end_ms)
            .unwrap_or(self.now);
        let approval_ms = match self.commands[command].request.snapshot_id {
            Some(_) => self.approval_instant(command, index),
            None => installed_ms,
        };
        let baseline = self.baseline_index_for(index);
        let approvals = self.approvals(baseline);
        let catalog = self.catalog.patches(self.instances[index].platform);
        let counts = self.instances[index].evaluate(
            catalog,
            &approvals,
            &self.baselines[baseline],
            approval_ms,
            Operation::Install,
        );
        if let Some(result) = &mut self.commands[command].invocations[invocation as usize].result {
            result.counts = counts;
        }
    }

    /// The instant whose approvals the command judges the instance by: its snapshot's, if it
    /// has one, else now.
    fn approval_instant(&mut self, command: usize, instance: usize) -> Millis {
        let now = self.now;
        let baseline = self.baseline_index_for(instance);
        let baseline_id = self.baselines[baseline].id.clone();
        match &self.commands[command].request.snapshot_id {
            Some(snapshot) => *self.snapshots.entry((snapshot.clone(), baseline_id)).or_insert(now),
            None => now,
        }
    }

    // ----- AWS-RunPatchBaselineWithHooks -----

    /// Starts a step of a hook document's Install. `AWS-Noop` takes no time; other hooks take
    /// a script's time, the install an install's.
    fn start_step(&mut self, command: usize, invocation: u32, kind: StepKind) {
        let now = self.now;
        let Some(documents) = &self.commands[command].request.hook_documents else { return };
        let base = match kind.document(documents) {
            Some(NOOP_DOCUMENT) => 0.0,
            Some(_) => self.hooks.script_seconds,
            None => self.timing.install_seconds,
        };
        let step_number = StepKind::ALL.iter().position(|k| *k == kind).unwrap_or(0) as u64;
        // A stream of its own per step, so that hooks leave the install's draws as they were.
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
            self.seed,
            STREAM_STEPS,
            ((command as u64) << 32) | (u64::from(invocation) << 3) | step_number,
        ));
        let jitter = self.timing.jitter;
        let spread = if jitter > 0.0 && base > 0.0 { rng.random_range(-jitter..=jitter) } else { 0.0 };
        let duration = (base * (1.0 + spread) * 1000.0) as Millis;
        let inv = &mut self.commands[command].invocations[invocation as usize];
        inv.steps.push(Step { kind, start_ms: now, end_ms: None, exit_code: None, output: None });
        if duration == 0 {
            // At once, not through the queue: a free hook must not let other events slip in.
            self.step_done(command, invocation);
        } else {
            self.schedule(now + duration, EventKind::StepDone { command, invocation });
        }
    }

    fn step_done(&mut self, command: usize, invocation: u32) {
        let now = self.now;
        let inv = &self.commands[command].invocations[invocation as usize];
        if inv.state != InvocationState::InProgress {
            return;
        }
        let Some(step) = inv.steps.last().filter(|s| s.end_ms.is_none()) else { return };
        let kind = step.kind;
        let instance_index = inv.instance as usize;
        let Some(documents) = self.commands[command].request.hook_documents.clone() else { return };
        let (exit_code, output) = match kind.document(&documents) {
            Some(NOOP_DOCUMENT) => (0, None),
            Some(document) => {
                // A hook's "script" is its document's name: the rules match on that.
                let outcome = self.hooks.outcome(&[document.to_string()], &self.instances[instance_index].id);
                (outcome.exit_code, outcome.output)
            }
            None => (self.install_step(command, invocation), None),
        };
        let inv = &mut self.commands[command].invocations[invocation as usize];
        if let Some(step) = inv.steps.last_mut() {
            step.end_ms = Some(now);
            step.exit_code = Some(exit_code);
            step.output = output;
        }
        if exit_code != 0 {
            self.end_invocation(command, invocation, InvocationState::Failed);
            return;
        }
        match kind {
            StepKind::PostInstallHook => self.reboot_between_hooks(command, invocation),
            StepKind::OnExit => self.end_invocation(command, invocation, InvocationState::Success),
            other => {
                if let Some(next) = other.next() {
                    self.start_step(command, invocation, next);
                }
            }
        }
    }

    /// Installs without rebooting and reports, as the install step of a hook document does.
    /// Returns the step's exit code: 1 when a patch failed to install.
    fn install_step(&mut self, command: usize, invocation: u32) -> i64 {
        let now = self.now;
        let instance_index = self.commands[command].invocations[invocation as usize].instance as usize;
        let baseline = self.baseline_index_for(instance_index);
        let approvals = self.approvals(baseline);
        let baseline_id = self.baselines[baseline].id.clone();
        let approval_ms = self.approval_instant(command, instance_index);
        let mut rng = self.invocation_rng(command, invocation);
        let _: u64 = rng.random();
        let failure_rate = self.faults.install_failure_rate;
        let platform = self.instances[instance_index].platform;
        let catalog = self.catalog.patches(platform);
        let instance = &mut self.instances[instance_index];
        let install = instance.install(
            catalog,
            &approvals,
            InstallPlan { approval_ms, now_ms: now, reboot_if_needed: false, failure_rate, listed: None },
            &mut rng,
        );
        let counts = instance.evaluate(
            catalog,
            &approvals,
            &self.baselines[baseline],
            approval_ms,
            Operation::Install,
        );
        let patch_group = instance.patch_group().unwrap_or("").to_string();
        let failed = install.failed > 0;
        self.commands[command].invocations[invocation as usize].result =
            Some(InvocationResult { counts, install, baseline_id, patch_group });
        self.write_report(command, invocation);
        i64::from(failed)
    }

    /// After the post-install hook: reboot if the document may and a patch needs it (the agent
    /// may not come back, as after AWS-RunPatchBaseline's reboot), then the on-exit hook.
    fn reboot_between_hooks(&mut self, command: usize, invocation: u32) {
        let now = self.now;
        let instance_index = self.commands[command].invocations[invocation as usize].instance as usize;
        let reboot_if_needed = self.commands[command].request.reboot_if_needed;
        if !(reboot_if_needed && self.instances[instance_index].has_pending_reboot()) {
            self.start_step(command, invocation, StepKind::OnExit);
            return;
        }
        let mut rng = self.invocation_rng(command, invocation);
        let _: u64 = rng.random();
        let instance = &mut self.instances[instance_index];
        let lost =
            instance.lost_after_reboot || crate::random::chance(&mut rng, self.faults.lost_after_reboot_rate);
        instance.reboot();
        instance.set_agent(Some(AgentState::ConnectionLost), now);
        if let Some(result) = &mut self.commands[command].invocations[invocation as usize].result {
            result.install.rebooted = true;
        }
        if lost {
            self.instances[instance_index].lost_after_reboot = false;
            let approval_ms = self.approval_instant(command, instance_index);
            self.lost_reboots.insert(instance_index as u32, LostReboot { command, invocation, approval_ms });
            let start = self.commands[command].invocations[invocation as usize].start_ms.unwrap_or(now);
            let at = (start + self.execution_timeout_ms(command)).max(now);
            self.schedule(at, EventKind::Finish { command, invocation, timed_out: true });
        } else {
            let epoch = self.instances[instance_index].agent_epoch;
            let back = now + (self.timing.reboot_seconds * 1000.0) as Millis;
            self.schedule(back, EventKind::AgentBack { instance: instance_index as u32, epoch });
            self.schedule(back, EventKind::RebootDone { command, invocation });
        }
    }

    /// What the instance's node reads at an InstallOverrideList URL: the catalog entries the
    /// list selects there, or why it cannot be used.
    fn read_install_list(&self, instance: usize, url: &str) -> InstallListOutcome {
        let unusable = |why: String| InstallListOutcome::Unusable(format!("{url}: {why}"));
        let Some(location) = url.strip_prefix("s3://") else {
            return unusable(
                "the simulated nodes have no network access, so only s3:// lists (read from the simulator's S3) can be downloaded".into(),
            );
        };
        let Some((bucket, key)) = location.split_once('/').filter(|(b, k)| !b.is_empty() && !k.is_empty())
        else {
            return unusable("not an s3://bucket/key URL".into());
        };
        let body = match crate::locks::lock(&self.s3).read(&self.account_id, bucket, key) {
            Ok(object) => object.body.clone(),
            Err(error) => {
                return unusable(format!("download failed: {}", crate::s3::describe_read_error(&error)))
            }
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return unusable("the list is not UTF-8 text".into());
        };
        let entries = match crate::install_list::parse(text) {
            Ok(entries) => entries,
            Err(error) => return unusable(format!("the list is not valid: {error}")),
        };
        let catalog = self.catalog.patches(self.instances[instance].platform);
        let selected = catalog
            .iter()
            .enumerate()
            .filter(|(_, patch)| {
                entries.iter().any(|entry| {
                    entry.id == patch.kb_id()
                        && entry.title.as_ref().is_none_or(|title| *title == patch.title)
                })
            })
            .map(|(index, _)| index)
            .collect();
        InstallListOutcome::Read { selected, entries: entries.len() }
    }

    /// Ends a running invocation with `state`, whatever compliance it already wrote.
    fn end_invocation(&mut self, command: usize, invocation: u32, state: InvocationState) {
        let now = self.now;
        let inv = &mut self.commands[command].invocations[invocation as usize];
        inv.state = state;
        inv.end_ms = Some(now);
        self.commands[command].in_progress -= 1;
        self.after_terminal(command);
    }

    /// The agent of an instance whose reboot it had not come back from is back: it finishes
    /// the install, reporting compliance after the reboot, if the invocation still waits.
    fn resume_lost_reboot(&mut self, instance: u32) {
        let Some(lost) = self.lost_reboots.remove(&instance) else { return };
        let LostReboot { command, invocation, approval_ms } = lost;
        if self.commands[command].invocations[invocation as usize].state != InvocationState::InProgress {
            return;
        }
        if self.commands[command].request.hook_documents.is_some() {
            self.after_reboot(command, invocation);
            return;
        }
        let index = instance as usize;
        let baseline = self.baseline_index_for(index);
        let approvals = self.approvals(baseline);
        let catalog = self.catalog.patches(self.instances[index].platform);
        let counts = self.instances[index].evaluate(
            catalog,
            &approvals,
            &self.baselines[baseline],
            approval_ms,
            Operation::Install,
        );
        if let Some(result) = &mut self.commands[command].invocations[invocation as usize].result {
            result.counts = counts;
        }
        self.complete(command, invocation);
    }

    /// Writes an invocation's compliance report, unless it must not (BaselineOverride).
    fn write_report(&mut self, command: usize, invocation: u32) {
        let now = self.now;
        let cmd = &self.commands[command];
        let inv = &cmd.invocations[invocation as usize];
        let Some(result) = &inv.result else { return };
        let instance_index = inv.instance as usize;
        if !cmd.request.baseline_override && cmd.request.shell.is_none() {
            let previous_no_reboot =
                self.instances[instance_index].report.as_ref().and_then(|r| r.last_no_reboot_install_ms);
            let last_no_reboot_install_ms =
                if cmd.request.operation == Operation::Install && !cmd.request.reboot_if_needed {
                    Some(now)
                } else {
                    previous_no_reboot
                };
            self.instances[instance_index].report = Some(PatchReport {
                operation: cmd.request.operation,
                start_ms: inv.start_ms.unwrap_or(now),
                end_ms: now,
                baseline_id: result.baseline_id.clone(),
                snapshot_id: cmd.request.snapshot_id.clone(),
                patch_group: result.patch_group.clone(),
                reboot_option: Some(if cmd.request.reboot_if_needed { "RebootIfNeeded" } else { "NoReboot" }),
                last_no_reboot_install_ms,
                install_override_list: cmd
                    .request
                    .install_override_list
                    .clone()
                    .filter(|_| cmd.request.operation == Operation::Install),
                counts: result.counts,
            });
        }
    }

    /// Ends a finished invocation: writes compliance and the status.
    fn complete(&mut self, command: usize, invocation: u32) {
        let now = self.now;
        let Some(result) = self.commands[command].invocations[invocation as usize].result.clone() else {
            return;
        };
        self.write_report(command, invocation);
        let inv = &mut self.commands[command].invocations[invocation as usize];
        inv.state =
            if result.install.failed > 0 { InvocationState::Failed } else { InvocationState::Success };
        inv.end_ms = Some(now);
        self.commands[command].in_progress -= 1;
        self.after_terminal(command);
    }

    /// After an invocation ended: enforce the error budget, start the next ones, settle.
    fn after_terminal(&mut self, command: usize) {
        let now = self.now;
        let cmd = &mut self.commands[command];
        if !cmd.stopped && cmd.counts().errors > cmd.error_limit {
            cmd.stopped = true;
            for inv in &mut cmd.invocations {
                if matches!(inv.state, InvocationState::Pending | InvocationState::Delayed) {
                    inv.state = InvocationState::Terminated;
                    inv.end_ms = Some(now);
                }
            }
            cmd.delayed.clear();
        }
        self.dispatch(command);
        self.settle(command);
    }

    fn settle(&mut self, command: usize) {
        let cmd = &mut self.commands[command];
        cmd.refresh_state();
        if cmd.state.is_terminal() {
            self.active.retain(|c| *c != command);
        }
    }

    fn retry_delayed(&mut self) {
        let waiting: Vec<usize> =
            self.active.iter().copied().filter(|c| !self.commands[*c].delayed.is_empty()).collect();
        for command in waiting {
            self.dispatch(command);
            self.settle(command);
        }
    }

    /// CancelCommand: pending and delayed invocations stop at once; running ones report
    /// Cancelled once the agent acknowledges.
    pub(crate) fn cancel(&mut self, command: usize, only: Option<&[u32]>) {
        let now = self.now;
        let cancel_ms = (self.timing.cancel_seconds * 1000.0) as Millis;
        let mut acknowledgements = Vec::new();
        let cmd = &mut self.commands[command];
        cmd.cancel_requested = true;
        for (position, inv) in cmd.invocations.iter_mut().enumerate() {
            if only.is_some_and(|ids| !ids.contains(&inv.instance)) {
                continue;
            }
            match inv.state {
                InvocationState::Pending | InvocationState::Delayed => {
                    inv.state = InvocationState::Cancelled;
                    inv.end_ms = Some(now);
                }
                InvocationState::InProgress => {
                    inv.state = InvocationState::Cancelling;
                    acknowledgements.push(position as u32);
                }
                _ => {}
            }
        }
        cmd.delayed.retain(|i| cmd.invocations[*i as usize].state == InvocationState::Delayed);
        for invocation in acknowledgements {
            self.schedule(now + cancel_ms, EventKind::CancelDone { command, invocation });
        }
        self.settle(command);
    }

    pub(crate) fn visible_after_ms(&self) -> Millis {
        (self.timing.invocation_visibility_delay_seconds * 1000.0) as Millis
    }

    // ----- observation -----

    pub fn stats(&mut self) -> Stats {
        self.sync();
        let mut stats = Stats {
            now: to_datetime(self.now).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            time_scale: self.clock.scale(),
            calls: self.counters.calls.clone(),
            throttled: self.counters.throttled.clone(),
            failed: self.counters.failed.clone(),
            client_errors: self.counters.client_errors.clone(),
            instances: self.instances.len() as u64,
            feed_requests: self.counters.feed_requests,
            feed_not_modified: self.counters.feed_not_modified,
            feed_errors: self.counters.feed_errors,
            ..Stats::default()
        };
        for command in &self.commands {
            bump(&mut stats.commands_by_status, command.state.status());
            for inv in &command.invocations {
                let (status, details) = (inv.state.status(), inv.state.status_details());
                bump(&mut stats.invocations_by_status, status);
                if status != details {
                    bump(&mut stats.invocations_by_status, &format!("{status}/{details}"));
                }
            }
        }
        for instance in &self.instances {
            let key = match (instance.running, instance.agent) {
                (false, _) => "Stopped",
                (true, None) => "NotManaged",
                (true, Some(agent)) => agent.as_str(),
            };
            bump(&mut stats.instances_by_agent, key);
        }
        stats
    }
}

/// A stable number for an (account, region): FNV-1a over both, so that it does not depend on
/// the order partitions are listed or created in.
fn partition_index(account_id: &str, region: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in account_id.bytes().chain([b'/']).chain(region.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::CommandState;
    use crate::fleet::Operation;

    const HOUR: Millis = 3_600_000;

    fn world(n: usize) -> World {
        let scenario = Scenario::minimal()
            .with_instances(n)
            .with_time_scale(0.0)
            .with_start(chrono::DateTime::parse_from_rfc3339("2026-11-28T00:00:00Z").expect("valid").into());
        World::new(&scenario)
    }

    fn request(operation: Operation, max_concurrency: &str, max_errors: &str) -> CommandRequest {
        CommandRequest::run_patch_baseline(operation, max_concurrency, max_errors, 600)
    }

    /// Makes every kernel fix missing everywhere, so installs must reboot.
    fn missing_kernel_fixes(world: &mut World) {
        let platform = Platform::AmazonLinux2;
        let kernel: Vec<usize> = world
            .catalog
            .patches(platform)
            .iter()
            .enumerate()
            .filter(|(_, p)| p.needs_reboot && p.released_ms < world.now - 10 * 86_400_000)
            .map(|(i, _)| i)
            .collect();
        assert!(!kernel.is_empty());
        for instance in world.instances.iter_mut().filter(|i| i.platform == platform) {
            for index in &kernel {
                instance.forget_install(*index);
            }
        }
    }

    fn states(world: &World, command: usize) -> Vec<InvocationState> {
        world.commands[command].invocations.iter().map(|i| i.state).collect()
    }

    fn count(world: &World, command: usize, state: InvocationState) -> usize {
        states(world, command).iter().filter(|s| **s == state).count()
    }

    #[test]
    fn concurrency_is_never_exceeded_and_all_finish() {
        let mut w = world(10);
        let all: Vec<u32> = (0..10).collect();
        let c = w.create_command(request(Operation::Scan, "3", "0"), all);
        assert_eq!(w.commands[c].state, CommandState::Pending);
        let mut seen_max = 0;
        for _ in 0..400 {
            w.advance_by(5_000);
            let running = count(&w, c, InvocationState::InProgress);
            assert!(running <= 3, "{running} running");
            seen_max = seen_max.max(running);
        }
        assert_eq!(seen_max, 3);
        assert_eq!(w.commands[c].state, CommandState::Success);
        assert!(w.instances.iter().all(|i| i.report.as_ref().is_some_and(|r| r.end_ms > w.start_ms)));
    }

    #[test]
    fn error_budget_terminates_the_rest() {
        let mut w = world(8);
        w.faults.install_failure_rate = 1.0;
        let c = w.create_command(request(Operation::Install, "1", "1"), (0..8).collect());
        w.advance_by(48 * HOUR);
        let cmd = &w.commands[c];
        assert_eq!((cmd.state.status(), cmd.state.status_details()), ("Failed", "Failed"));
        assert_eq!(count(&w, c, InvocationState::Failed), 2, "MaxErrors 1 stops after the second error");
        assert_eq!(count(&w, c, InvocationState::Terminated), 6);
        assert_eq!(cmd.counts().completed, 8);
    }

    #[test]
    fn offline_agent_is_delayed_then_delivered_or_times_out() {
        let mut w = world(3);
        let ids: Vec<String> = w.instances.iter().map(|i| i.id.clone()).collect();
        w.set_agent(&ids[0], AgentState::ConnectionLost).expect("managed");
        w.set_agent(&ids[1], AgentState::ConnectionLost).expect("managed");
        let c = w.create_command(request(Operation::Scan, "50", "0"), vec![0, 1, 2]);
        w.advance_by(10_000);
        assert_eq!(states(&w, c)[..2], [InvocationState::Delayed, InvocationState::Delayed]);
        w.set_agent(&ids[0], AgentState::Online).expect("managed");
        w.advance_by(HOUR);
        let final_states = states(&w, c);
        assert_eq!(
            final_states,
            vec![InvocationState::Success, InvocationState::DeliveryTimedOut, InvocationState::Success]
        );
        let cmd = &w.commands[c];
        assert_eq!((cmd.state.status(), cmd.state.status_details()), ("TimedOut", "DeliveryTimedOut"));
        assert_eq!(cmd.counts().delivery_timed_out, 1);
        assert_eq!(cmd.counts().errors, 0);
    }

    #[test]
    fn stopped_instances_are_undeliverable_and_do_not_fail_the_command() {
        let mut w = world(2);
        let id = w.instances[1].id.clone();
        w.set_running(&id, false).expect("exists");
        let c = w.create_command(request(Operation::Scan, "50", "0"), vec![0, 1]);
        w.advance_by(HOUR);
        assert_eq!(states(&w, c), vec![InvocationState::Success, InvocationState::Undeliverable]);
        assert_eq!(w.commands[c].state, CommandState::Success);
    }

    #[test]
    fn cancellation_of_pending_and_running() {
        let mut w = world(4);
        let c = w.create_command(request(Operation::Install, "2", "0"), (0..4).collect());
        w.advance_by(5_000);
        assert_eq!(count(&w, c, InvocationState::InProgress), 2);
        w.cancel(c, None);
        assert_eq!(count(&w, c, InvocationState::Cancelling), 2);
        assert_eq!(count(&w, c, InvocationState::Cancelled), 2);
        assert_eq!(w.commands[c].state, CommandState::Cancelling);
        w.advance_by(HOUR);
        assert_eq!(count(&w, c, InvocationState::Cancelled), 4);
        assert_eq!(w.commands[c].state, CommandState::Cancelled);
        assert!(w.instances.iter().all(|i| i.report.as_ref().is_none_or(|r| r.operation == Operation::Scan)));
    }

    #[test]
    fn partial_cancel_leaves_the_others_running() {
        let mut w = world(3);
        let c = w.create_command(request(Operation::Scan, "1", "0"), vec![0, 1, 2]);
        w.cancel(c, Some(&[2]));
        w.advance_by(HOUR);
        assert_eq!(
            states(&w, c),
            vec![InvocationState::Success, InvocationState::Success, InvocationState::Cancelled]
        );
        assert_eq!(w.commands[c].state, CommandState::Cancelled);
    }

    #[test]
    fn reboot_takes_the_agent_away_and_brings_it_back() {
        let mut w = world(6);
        missing_kernel_fixes(&mut w);
        let c = w.create_command(request(Operation::Install, "50", "0"), (0..6).collect());
        let mut seen_rebooting = 0;
        for _ in 0..60 {
            w.advance_by(10_000);
            let offline = w.instances.iter().filter(|i| i.agent == Some(AgentState::ConnectionLost)).count();
            // An invocation whose work is done but still runs is waiting for its reboot.
            let rebooting = w.commands[c]
                .invocations
                .iter()
                .filter(|i| i.state == InvocationState::InProgress && i.result.is_some())
                .count();
            assert_eq!(offline, rebooting);
            seen_rebooting = seen_rebooting.max(rebooting);
        }
        assert!(seen_rebooting > 0);
        assert!(w.commands[c].invocations.iter().all(|i| i.result.is_some_and_rebooted()));
        w.advance_by(HOUR);
        assert!(w.instances.iter().all(|i| i.agent == Some(AgentState::Online)));
        assert_eq!(w.commands[c].state, CommandState::Success);
        for instance in &w.instances {
            let report = instance.report.as_ref().expect("reported");
            assert_eq!((report.counts.missing, report.counts.installed_pending_reboot), (0, 0));
            assert_eq!(report.reboot_option, Some("RebootIfNeeded"));
        }
    }

    trait Rebooted {
        fn is_some_and_rebooted(&self) -> bool;
    }

    impl Rebooted for Option<InvocationResult> {
        fn is_some_and_rebooted(&self) -> bool {
            self.as_ref().is_some_and(|r| r.install.rebooted)
        }
    }

    #[test]
    fn no_reboot_leaves_patches_pending() {
        let mut w = world(6);
        missing_kernel_fixes(&mut w);
        let mut req = request(Operation::Install, "50", "0");
        req.reboot_if_needed = false;
        let c = w.create_command(req, (0..6).collect());
        w.advance_by(HOUR);
        assert_eq!(w.commands[c].state, CommandState::Success);
        for instance in &w.instances {
            let report = instance.report.as_ref().expect("reported");
            assert!(report.counts.installed_pending_reboot > 0);
            assert_eq!(report.reboot_option, Some("NoReboot"));
            assert_eq!(instance.agent, Some(AgentState::Online), "no reboot happened");
        }
        assert!(w
            .instances
            .iter()
            .all(|i| i.report.as_ref().is_some_and(|r| r.last_no_reboot_install_ms.is_some())));
    }

    #[test]
    fn execution_timeouts_count_as_errors() {
        let mut w = world(3);
        w.faults.execution_timeout_rate = 1.0;
        let c = w.create_command(request(Operation::Scan, "50", "5"), vec![0, 1, 2]);
        w.advance_by(3 * HOUR);
        assert_eq!(count(&w, c, InvocationState::ExecutionTimedOut), 3);
        assert_eq!(w.commands[c].counts().errors, 3);
        assert_eq!(w.commands[c].state.status_details(), "Incomplete");
    }

    #[test]
    fn baseline_override_writes_no_compliance() {
        let mut w = world(2);
        let before: Vec<Option<PatchReport>> = w.instances.iter().map(|i| i.report.clone()).collect();
        let mut req = request(Operation::Install, "50", "0");
        req.baseline_override = true;
        let c = w.create_command(req, vec![0, 1]);
        w.advance_by(HOUR);
        assert_eq!(w.commands[c].state, CommandState::Success);
        let after: Vec<Option<PatchReport>> = w.instances.iter().map(|i| i.report.clone()).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn same_seed_same_story() {
        let run = || {
            let mut w = world(20);
            w.faults.install_failure_rate = 0.05;
            let c = w.create_command(request(Operation::Install, "5", "50"), (0..20).collect());
            w.advance_by(6 * HOUR);
            let id = w.commands[c].id.clone();
            (id, states(&w, c), w.instances.iter().map(|i| i.report.clone()).collect::<Vec<_>>())
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn offline_fault_drops_and_restores_agents() {
        let mut w = world(200);
        let mut faults = w.faults.clone();
        faults.agent_offline_per_hour = 0.5;
        faults.agent_offline_seconds = 600.0;
        w.set_faults(faults).expect("valid");
        w.advance_by(30 * 60_000);
        let lost = w.instances.iter().filter(|i| i.agent == Some(AgentState::ConnectionLost)).count();
        assert!(lost > 5, "{lost} agents lost");
        let mut faults = w.faults.clone();
        faults.agent_offline_per_hour = 0.0;
        w.set_faults(faults).expect("valid");
        w.advance_by(2 * HOUR);
        assert!(w.instances.iter().all(|i| i.agent == Some(AgentState::Online)));
    }

    #[test]
    fn released_patches_show_up_in_the_next_scan() {
        let mut w = world(3);
        let id = w.release_patch(
            Platform::AmazonLinux2,
            &PatchRelease { severity: Some("Critical".into()), ..PatchRelease::default() },
        );
        assert!(w.catalog.find(&id).is_some());
        let tracked = w.catalog.patches(Platform::AmazonLinux2).len();
        assert!(w.instances.iter().all(|i| i.tracked_patches() == tracked));
        // Default AL2 approval waits 7 days.
        w.advance_by(8 * 24 * HOUR);
        let c = w.create_command(request(Operation::Scan, "50", "0"), vec![0, 1, 2]);
        w.advance_by(HOUR);
        assert_eq!(w.commands[c].state, CommandState::Success);
        let index = tracked - 1;
        for instance in &w.instances {
            let row = instance.reported(index);
            assert!(row.is_some_and(|r| !r.state.is_installed()), "{row:?}");
        }
    }

    fn gated(operation: Operation, max_concurrency: &str, alarm: &str) -> CommandRequest {
        let mut req = request(operation, max_concurrency, "0");
        req.alarm =
            Some(crate::commands::AlarmGate { alarm: alarm.into(), ignore_poll_alarm_failure: false });
        req
    }

    #[test]
    fn an_alarm_stops_what_has_not_finished() {
        let mut w = world(3);
        let c = w.create_command(gated(Operation::Scan, "1", "gate"), vec![0, 1, 2]);
        w.set_alarm("gate", AlarmState::Ok).expect("valid");
        w.advance_by(60_000);
        assert_eq!(states(&w, c)[..2], [InvocationState::Success, InvocationState::InProgress]);
        w.set_alarm("gate", AlarmState::Alarm).expect("valid");
        assert_eq!(w.commands[c].state, CommandState::Cancelling);
        w.advance_by(HOUR);
        assert_eq!(
            states(&w, c),
            vec![InvocationState::Success, InvocationState::Cancelled, InvocationState::Cancelled]
        );
        assert_eq!(w.commands[c].state, CommandState::Cancelled);
        assert_eq!(w.commands[c].triggered_alarm.as_deref(), Some("gate"));
        assert_eq!(w.command_history()[0].stopped_by_alarm.as_deref(), Some("gate"));
    }

    #[test]
    fn an_alarm_already_in_alarm_stops_the_command_at_dispatch() {
        let mut w = world(2);
        w.set_alarm("gate", AlarmState::Alarm).expect("valid");
        let stopped = w.create_command(gated(Operation::Scan, "50", "gate"), vec![0, 1]);
        let unknown = w.create_command(gated(Operation::Scan, "50", "never-created"), vec![0, 1]);
        assert_eq!(w.commands[stopped].state, CommandState::Pending, "SendCommand answers Pending");
        w.advance_by(HOUR);
        assert_eq!(states(&w, stopped), vec![InvocationState::Cancelled; 2]);
        assert_eq!(w.commands[stopped].state, CommandState::Cancelled);
        assert_eq!(w.commands[unknown].state, CommandState::Success, "an unknown alarm has no data");
        assert_eq!(w.commands[unknown].triggered_alarm, None);
    }

    #[test]
    fn a_lost_agent_leaves_the_install_pending_until_the_execution_timeout() {
        let mut w = world(3);
        missing_kernel_fixes(&mut w);
        let ids: Vec<String> = w.instances.iter().map(|i| i.id.clone()).collect();
        w.set_lost_after_reboot(&ids[0], true).expect("managed");
        w.set_lost_after_reboot(&ids[1], true).expect("managed");
        let c = w.create_command(request(Operation::Install, "50", "5"), vec![0, 1, 2]);
        w.advance_by(HOUR);
        assert_eq!(
            states(&w, c),
            vec![InvocationState::InProgress, InvocationState::InProgress, InvocationState::Success]
        );
        for lost in &w.instances[..2] {
            assert_eq!(lost.agent, Some(AgentState::ConnectionLost));
            assert!(!lost.lost_after_reboot, "the mark is spent by the reboot");
            let report = lost.report.as_ref().expect("reported before the reboot");
            assert_eq!(report.operation, Operation::Install);
            assert!(report.counts.installed_pending_reboot > 0);
        }
        w.set_agent(&ids[1], AgentState::Online).expect("managed");
        assert_eq!(states(&w, c)[1], InvocationState::Success, "a returning agent finishes the install");
        assert_eq!(w.instances[1].report.as_ref().map(|r| r.counts.installed_pending_reboot), Some(0));
        w.advance_by(2 * HOUR);
        assert_eq!(states(&w, c)[0], InvocationState::ExecutionTimedOut);
        assert_eq!(w.commands[c].counts().errors, 1);
        assert_eq!(w.instances[0].agent, Some(AgentState::ConnectionLost), "it never came back");
        assert!(w.instances[0].report.as_ref().is_some_and(|r| r.counts.installed_pending_reboot > 0));
        w.set_agent(&ids[0], AgentState::Online).expect("managed");
        assert_eq!(states(&w, c)[0], InvocationState::ExecutionTimedOut, "too late to change the outcome");
    }

    #[test]
    fn the_lost_after_reboot_rate_loses_rebooting_agents_only() {
        let mut w = world(4);
        missing_kernel_fixes(&mut w);
        w.faults.lost_after_reboot_rate = 1.0;
        let scan = w.create_command(request(Operation::Scan, "50", "0"), vec![0, 1]);
        let mut no_reboot = request(Operation::Install, "50", "0");
        no_reboot.reboot_if_needed = false;
        let quiet = w.create_command(no_reboot, vec![2]);
        w.advance_by(HOUR);
        assert_eq!(w.commands[scan].state, CommandState::Success);
        assert_eq!(w.commands[quiet].state, CommandState::Success);
        let install = w.create_command(request(Operation::Install, "50", "0"), vec![0, 1, 3]);
        w.advance_by(HOUR);
        assert_eq!(count(&w, install, InvocationState::InProgress), 3);
        assert_eq!(w.instances[2].agent, Some(AgentState::Online), "no reboot, nothing lost");
    }

    fn shell(commands: &[&str]) -> CommandRequest {
        let mut req = request(Operation::Scan, "50", "0");
        req.document_name = "AWS-RunShellScript".into();
        req.shell = Some(crate::commands::ShellScript {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            working_directory: String::new(),
            execution_timeout_seconds: 600,
        });
        req
    }

    #[test]
    fn shell_scripts_follow_the_outcome_rules_and_leave_compliance_alone() {
        let mut w = world(2);
        let before: Vec<Option<PatchReport>> = w.instances.iter().map(|i| i.report.clone()).collect();
        let target = w.instances[1].id.clone();
        w.set_hook_rules(vec![HookRule {
            contains: "drain".into(),
            instance_ids: Some(vec![target]),
            exit_code: 7,
            output: None,
        }])
        .expect("valid");
        let c = w.create_command(shell(&["lb drain"]), vec![0, 1]);
        w.advance_by(3_000);
        assert_eq!(count(&w, c, InvocationState::InProgress), 2, "scripts take a few seconds");
        w.advance_by(60_000);
        assert_eq!(states(&w, c), vec![InvocationState::Success, InvocationState::Failed]);
        assert_eq!(w.commands[c].invocations[1].response_code(), 7);
        assert_eq!(w.commands[c].invocations[0].response_code(), 0);
        let after: Vec<Option<PatchReport>> = w.instances.iter().map(|i| i.report.clone()).collect();
        assert_eq!(before, after);
        assert_eq!(w.command_history()[0].operation, "");
        w.faults.execution_timeout_rate = 1.0;
        let hung = w.create_command(shell(&["sleep 9999"]), vec![0]);
        w.advance_by(599_000);
        assert_eq!(states(&w, hung), vec![InvocationState::InProgress]);
        w.advance_by(5_000);
        assert_eq!(states(&w, hung), vec![InvocationState::ExecutionTimedOut], "executionTimeout applies");
    }

    fn with_hooks(operation: Operation, pre: &str, post: &str, on_exit: &str) -> CommandRequest {
        let mut req = request(operation, "50", "0");
        req.document_name = "AWS-RunPatchBaselineWithHooks".into();
        req.hook_documents = Some(crate::commands::HookDocuments {
            pre_install: pre.into(),
            post_install: post.into(),
            on_exit: on_exit.into(),
        });
        req
    }

    fn rule(contains: &str, instance: &str, exit_code: i64) -> HookRule {
        HookRule {
            contains: contains.into(),
            instance_ids: Some(vec![instance.into()]),
            exit_code,
            output: None,
        }
    }

    fn step_kinds(w: &World, command: usize, invocation: usize) -> Vec<StepKind> {
        w.commands[command].invocations[invocation].steps.iter().map(|s| s.kind).collect()
    }

    #[test]
    fn hook_failures_stop_the_install_where_they_happen() {
        let mut w = world(4);
        missing_kernel_fixes(&mut w);
        let ids: Vec<String> = w.instances.iter().map(|i| i.id.clone()).collect();
        w.set_hook_rules(vec![
            rule("Drain", &ids[0], 2),
            rule("Verify", &ids[1], 3),
            rule("Notify", &ids[2], 4),
        ])
        .expect("valid");
        let before = w.instances[0].report.clone();
        let c =
            w.create_command(with_hooks(Operation::Install, "Drain", "Verify", "Notify"), vec![0, 1, 2, 3]);
        w.advance_by(3 * HOUR);
        use InvocationState as I;
        assert_eq!(states(&w, c), vec![I::Failed, I::Failed, I::Failed, I::Success]);
        let codes: Vec<i64> = w.commands[c].invocations.iter().map(|i| i.response_code()).collect();
        assert_eq!(codes, vec![2, 3, 4, 0]);

        assert_eq!(step_kinds(&w, c, 0), vec![StepKind::PreInstallHook]);
        assert_eq!(w.instances[0].report, before, "a failed pre-install hook patches nothing");

        assert_eq!(step_kinds(&w, c, 1).len(), 3);
        assert!(w.instances[1].has_pending_reboot(), "no reboot after a failed post-install hook");
        let pending = w.instances[1].report.as_ref().map(|r| r.counts.installed_pending_reboot);
        assert!(pending.is_some_and(|n| n > 0), "{pending:?}");

        for rebooted in [2, 3] {
            assert_eq!(step_kinds(&w, c, rebooted), StepKind::ALL.to_vec());
            assert!(!w.instances[rebooted].has_pending_reboot());
            let report = w.instances[rebooted].report.as_ref().expect("reported");
            assert_eq!(report.counts.installed_pending_reboot, 0);
            assert_eq!(report.reboot_option, Some("RebootIfNeeded"));
            let steps = &w.commands[c].invocations[rebooted].steps;
            let reboot_gap = steps[3].start_ms - steps[2].end_ms.expect("ended");
            assert_eq!(reboot_gap, (w.timing.reboot_seconds * 1000.0) as Millis, "the reboot comes between");
            assert!(
                steps[1].end_ms.expect("ended") - steps[1].start_ms > 60_000,
                "the install takes its time"
            );
        }
        assert_eq!(w.commands[c].state, CommandState::Failed);
        assert_eq!(w.command_history()[0].operation, "Install");
    }

    #[test]
    fn noop_hooks_are_free_and_no_reboot_leaves_patches_pending() {
        let mut w = world(1);
        missing_kernel_fixes(&mut w);
        let mut req = with_hooks(Operation::Install, "AWS-Noop", "AWS-Noop", "AWS-Noop");
        req.reboot_if_needed = false;
        let c = w.create_command(req, vec![0]);
        w.advance_by(HOUR);
        assert_eq!(states(&w, c), vec![InvocationState::Success]);
        let steps = &w.commands[c].invocations[0].steps;
        assert_eq!(steps[0].start_ms, steps[1].start_ms, "AWS-Noop takes no time");
        assert_eq!(steps[2].start_ms, steps[3].start_ms, "nothing between the last two hooks");
        assert!(w.instances[0].has_pending_reboot());
        let report = w.instances[0].report.as_ref().expect("reported");
        assert_eq!(
            (report.reboot_option, report.last_no_reboot_install_ms.is_some()),
            (Some("NoReboot"), true)
        );

        let scan = w.create_command(with_hooks(Operation::Scan, "Drain", "Verify", "Notify"), vec![0]);
        w.advance_by(HOUR);
        assert_eq!(states(&w, scan), vec![InvocationState::Success]);
        assert!(w.commands[scan].invocations[0].steps.is_empty(), "a scan runs no hooks");
    }

    #[test]
    fn a_lost_agent_holds_the_on_exit_hook_until_it_returns() {
        let mut w = world(2);
        missing_kernel_fixes(&mut w);
        let ids: Vec<String> = w.instances.iter().map(|i| i.id.clone()).collect();
        w.set_lost_after_reboot(&ids[0], true).expect("managed");
        w.set_lost_after_reboot(&ids[1], true).expect("managed");
        let c = w.create_command(with_hooks(Operation::Install, "Drain", "Verify", "Notify"), vec![0, 1]);
        w.advance_by(HOUR);
        assert_eq!(states(&w, c), vec![InvocationState::InProgress; 2]);
        assert_eq!(step_kinds(&w, c, 0).len(), 3, "on-exit waits for the agent");
        assert_eq!(w.instances[0].agent, Some(AgentState::ConnectionLost));
        w.set_agent(&ids[0], AgentState::Online).expect("managed");
        w.advance_by(60_000);
        assert_eq!(states(&w, c)[0], InvocationState::Success);
        assert_eq!(step_kinds(&w, c, 0), StepKind::ALL.to_vec());
        w.advance_by(2 * HOUR);
        assert_eq!(states(&w, c)[1], InvocationState::ExecutionTimedOut);
    }

    #[test]
    fn stats_count_states() {
        let mut w = world(5);
        let stats = w.stats();
        assert_eq!(stats.instances, 5);
        assert_eq!(stats.instances_by_agent.get("Online"), Some(&5));
        w.create_command(request(Operation::Scan, "50", "0"), vec![0]);
        let stats = w.stats();
        assert_eq!(stats.commands_by_status.get("Pending"), Some(&1));
        assert_eq!(stats.invocations_by_status.get("Pending"), Some(&1));
        assert!(w.set_agent("i-nope", AgentState::Online).is_err());
    }
}
