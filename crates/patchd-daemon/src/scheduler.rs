//! When windows fire, and what becomes of firings missed while patchd was down.
//!
//! Every next firing is computed by the window's own schedule ([`patchd_schedule::Schedule`],
//! the type `patchd plan` prints from, with SSM's DST rules), and handed to
//! tokio-cron-scheduler as a **one-shot job at that exact UTC instant**, re-armed after each
//! firing. The library's own timezone recurrences are never used: they run an hour off after a
//! DST change until restart (tokio-cron-scheduler #107). The library stores a one-shot's
//! instant in whole epoch seconds, truncating both the delay and the clock reading, and checks
//! its jobs every 500 ms, so a job may fire up to about two seconds *before* its instant; the
//! firing handler therefore sleeps until the exact instant before an occurrence starts (see
//! the `one_shot_fires_early_by_up_to_two_seconds` test, which measures it).
//!
//! At start-up, before arming anything, [`run`]:
//! 0. brings the patch baselines in SSM in line with the `[[baseline]]` sections
//!    ([`baselines::reconcile`]), so that a late or resumed scan already judges by them; a
//!    failure is logged and the daemon goes on (the windows matter more);
//! 1. resumes every run recorded as in progress ([`window::interrupted_runs`]);
//! 2. for each enabled window, records every occurrence since its latest recorded run that can
//!    no longer run as `missed` (log line and audit entry), and starts late the one whose end
//!    minus cutoff has not passed yet ([`catch_up`]);
//! 3. arms each window's next firing and the periodic compliance sync
//!    (`[daemon] sync_interval`).
//!
//! [`Control::Reload`] swaps the configuration: firings whose instant is unchanged stay armed,
//! others are re-armed; runs in progress finish with the configuration they started with. The
//! baselines are reconciled again in the background, one reconciliation at a time.
//! [`Control::Stop`] stops releasing batches, lets runs persist their state, and returns
//! within the grace period; commands already in SSM keep running and are picked up by the next
//! start.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchd_config::{Config, Window};
use patchd_store::{Fence, StoreError, WindowRunQuery};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::events::{Event, LeadershipChange};
use crate::feeds::{FeedBook, Selection};
use crate::leader::{Leadership, Role, Status};
use crate::rollout::PollPolicy;
use crate::sync::{self, ReleaseDates, SyncRequest};
use crate::window::{self, Env, LockWait, RunEnd, RunPlan, RunSummary, TaskProgress, WindowError};
use crate::Context;
use crate::{baselines, scopes};

/// At most this many missed occurrences of one window are recorded one by one after a
/// downtime; the rest are counted in one log line and audit entry.
pub const MAX_MISSED_RECORDED: usize = 100;

/// How often a stopping daemon repeats its stop request (a rollout ends polling at the second one).
const STOP_NUDGE: Duration = Duration::from_millis(500);

/// How far back start-up looks for runs left in progress.
const RESUME_LOOKBACK: chrono::Duration = chrono::Duration::days(8);

/// How long a leader waits before resuming a run of its own that stopped without being asked
/// to (a SendCommand that could not be sure of the term in time, under throttling): soon, but
/// not in a tight loop against an API that is pushing back.
const STOPPED_RUN_RESUME_PAUSE: Duration = Duration::from_secs(10);

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `[daemon] state_dir`, for the group locks.
    pub state_dir: PathBuf,
    /// `[daemon] sync_interval`.
    pub sync_interval: Duration,
    /// `[daemon] sync_retry_interval`: how often the sync backlog is read again.
    pub sync_retry_interval: Duration,
    pub poll: PollPolicy,
    /// How long a stop waits for runs to persist their state before giving up on them.
    pub shutdown_grace: Duration,
    /// How old SSM's release dates may get before a sync refreshes them.
    pub release_refresh: chrono::Duration,
    /// Beaten by the scheduler loop every [`HEARTBEAT_EVERY`]: readiness checks and the
    /// systemd watchdog read it to tell a live loop from a stuck one.
    pub heartbeat: Heartbeat,
}

/// How often the scheduler loop proves it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// The instant of the scheduler loop's latest turn (Unix seconds; 0 before the first).
/// Cheap to clone: clones share the beat.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat(Arc<std::sync::atomic::AtomicI64>);

impl Heartbeat {
    pub fn beat(&self, now: DateTime<Utc>) {
        self.0.store(now.timestamp(), std::sync::atomic::Ordering::Relaxed);
    }

    /// None until the loop first turned.
    pub fn last(&self) -> Option<DateTime<Utc>> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            secs => DateTime::from_timestamp(secs, 0),
        }
    }
}

/// What the process (signals) tells the daemon.
#[derive(Debug)]
pub enum Control {
    /// A new, valid configuration (SIGHUP).
    Reload(Box<Config>),
    /// Stop releasing, persist, return (SIGTERM, SIGINT).
    Stop,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("the job scheduler failed: {0}")]
    Cron(#[from] JobSchedulerError),
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
}

// ---------------------------------------------------------------------------------------------
// Decisions (pure)

/// What start-up does about a window's past occurrences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CatchUp {
    /// Occurrences that can no longer run, oldest first, at most [`MAX_MISSED_RECORDED`].
    pub missed: Vec<DateTime<Utc>>,
    /// Missed occurrences beyond those listed.
    pub more_missed: usize,
    /// The occurrence to start late: started, but its end minus cutoff is still ahead.
    pub late: Option<DateTime<Utc>>,
}

/// Occurrences of `window` after `last_recorded` (the scheduled start of its latest recorded
/// run, exclusive) up to `now`: those whose end minus cutoff has passed are missed, and the
/// latest one still open starts late (earlier open ones, overlapping it, are missed). Without a
/// recorded run nothing is reported missed (patchd was not running this window before), but an
/// occurrence open now still starts late.
pub fn catch_up(window: &Window, last_recorded: Option<DateTime<Utc>>, now: DateTime<Utc>) -> CatchUp {
    let mut result = CatchUp::default();
    if !window.enabled {
        return result;
    }
    // An occurrence that started more than a duration ago has ended.
    let open_from = now - window.duration - chrono::Duration::seconds(1);
    let from = match last_recorded {
        Some(t) => t,
        None => open_from,
    };
    let mut missed = 0usize;
    for start in window.schedule.firings_after(from).take_while(|s| *s <= now) {
        if window::stop_releasing_at(window, start) > now {
            if let Some(earlier) = result.late.replace(start) {
                if last_recorded.is_some() {
                    missed += 1;
                    if result.missed.len() < MAX_MISSED_RECORDED {
                        result.missed.push(earlier);
                    }
                }
            }
        } else if last_recorded.is_some() {
            missed += 1;
            if result.missed.len() < MAX_MISSED_RECORDED {
                result.missed.push(start);
            }
        }
    }
    result.more_missed = missed - result.missed.len();
    result
}

/// The next firing of an enabled window strictly after `after`.
pub fn next_firing(window: &Window, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    window.enabled.then(|| window.schedule.next_after(after)).flatten()
}

// ---------------------------------------------------------------------------------------------
// The engine

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Wake {
    Window { name: String, at: DateTime<Utc> },
    Sync,
}

struct Armed {
    at: DateTime<Utc>,
    job: Uuid,
}

/// tokio-cron-scheduler's scheduler, used for one-shot jobs only.
struct Timer {
    jobs: JobScheduler,
    wake: mpsc::UnboundedSender<Wake>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer").finish_non_exhaustive()
    }
}

impl Timer {
    /// One job that sends `wake` once, at `at` (the library may be up to two seconds early).
    async fn arm(&self, at: DateTime<Utc>, wake: Wake) -> Result<Uuid, JobSchedulerError> {
        let delay = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let instant = std::time::Instant::now() + delay;
        let tx = self.wake.clone();
        let job = Job::new_one_shot_at_instant(instant, move |_id, _scheduler| {
            let _ = tx.send(wake.clone());
        })?;
        self.jobs.add(job).await
    }

    async fn disarm(&self, job: Uuid) {
        if let Err(e) = self.jobs.remove(&job).await {
            debug!(error = %e, "one-shot job already gone");
        }
    }
}

/// What every spawned run shares.
#[derive(Debug, Clone)]
struct Shared {
    /// One per account and region, the home account's first (see [`crate::scopes`]).
    scopes: Arc<Vec<Context>>,
    settings: Arc<Settings>,
    release_dates: Arc<ReleaseDates>,
    feeds: Arc<FeedBook>,
    stop: watch::Receiver<bool>,
    /// Two reconciliations at once (a quick second SIGHUP) could both create a baseline.
    reconciling: Arc<tokio::sync::Mutex<()>>,
}

/// Brings SSM's baselines in line with `config`, logging what changed; never fails the daemon.
/// Every account and region has its own baselines and patch groups: each is reconciled.
async fn reconcile_baselines(shared: &Shared, config: &Config) {
    let _one_at_a_time = shared.reconciling.lock().await;
    for ctx in shared.scopes.iter() {
        if let Err(e) = baselines::reconcile(ctx, &config.baselines, config.daemon.prune_baselines).await {
            error!(scope = %ctx.scope, error = %e, "patch baselines not reconciled; windows run with what SSM has");
        }
    }
}

/// A run in flight: (window, scheduled start, account, region).
type RunKey = (String, DateTime<Utc>, String, String);

type Finished = (RunKey, Result<RunSummary, WindowError>);

/// [`run_under`] a leadership that is always this process's, with no lease and no fence: one
/// daemon alone on its database (tests, tools).
pub async fn run(
    scopes: Vec<Context>,
    config: Config,
    settings: Settings,
    control: mpsc::Receiver<Control>,
) -> Result<(), SchedulerError> {
    run_under(Leadership::sole(crate::leader::this_process()), scopes, config, settings, control).await
}

/// Runs the daemon until [`Control::Stop`] (or the control channel closes).
///
/// `scopes` holds one context per account and region (see [`crate::scopes::connect`]), the
/// home account's first; a window fires in each scope its groups reach. Windows fire only
/// while `leadership` says this process leads (see [`crate::leader`]): each term of leadership
/// starts with the start-up steps (baselines, resume, catch-up, arming) under the term's fence,
/// and ends, when the lease is lost, by stopping every run of the term and disarming every
/// firing. In between, and before the first term, the daemon stands by: it beats its heartbeat
/// and takes reloads.
pub async fn run_under(
    leadership: Leadership,
    scopes: Vec<Context>,
    config: Config,
    settings: Settings,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), SchedulerError> {
    let (wake_tx, mut wake_rx) = mpsc::unbounded_channel();
    let mut jobs = JobScheduler::new().await?;
    jobs.start().await?;
    let timer = Timer { jobs: jobs.clone(), wake: wake_tx };
    let feeds = Arc::new(FeedBook::new(&config));
    let mut daemon = Daemon {
        scopes: Arc::new(scopes),
        feeds,
        config: Arc::new(config),
        release_dates: Arc::new(ReleaseDates::new(settings.release_refresh)),
        settings: Arc::new(settings),
        reconciling: Arc::default(),
    };
    let mut status = leadership.status.clone();
    let mut status_open = true;
    let mut heartbeat = tokio::time::interval(HEARTBEAT_EVERY);
    'terms: loop {
        // Standing by until this process leads.
        let fence = loop {
            let current = status.borrow_and_update().clone();
            if let Role::Leader { .. } = current.role {
                break current.fence;
            }
            tokio::select! {
                _ = heartbeat.tick() => daemon.settings.heartbeat.beat(Utc::now()),
                changed = status.changed(), if status_open => status_open = changed.is_ok(),
                command = control.recv() => match command {
                    Some(Control::Reload(new)) => {
                        daemon.reload(*new);
                    }
                    Some(Control::Stop) | None => break 'terms,
                },
            }
        };
        // Firings armed in an earlier term woke nobody while standing by: catch-up covers them.
        while wake_rx.try_recv().is_ok() {}
        let term = Term { fence, timer: &timer };
        match term.lead(&mut daemon, &mut wake_rx, &mut control, &mut status, &mut heartbeat).await? {
            TermEnd::Stopped => break,
            TermEnd::Deposed => {
                status_open = status.has_changed().is_ok();
                continue;
            }
        }
    }
    if let Err(e) = jobs.shutdown().await {
        debug!(error = %e, "job scheduler shutdown");
    }
    info!("daemon stopped");
    Ok(())
}

/// What outlives a term: contexts, configuration, settings.
#[derive(Debug)]
struct Daemon {
    /// One per account and region, the home account's first (see [`crate::scopes`]); stores
    /// unfenced.
    scopes: Arc<Vec<Context>>,
    config: Arc<Config>,
    settings: Arc<Settings>,
    release_dates: Arc<ReleaseDates>,
    feeds: Arc<FeedBook>,
    /// Two reconciliations at once (a quick second SIGHUP) could both create a baseline.
    reconciling: Arc<tokio::sync::Mutex<()>>,
}

impl Daemon {
    /// Takes a new configuration: `[events]` for runs started from now on, the schedule for the
    /// next arming.
    fn reload(&mut self, new: Config) {
        // Runs in flight keep the sinks they started with; later ones use the new.
        match scopes::with_events(&self.scopes, &new.events) {
            Ok(reloaded) => self.scopes = Arc::new(reloaded),
            Err(e) => error!(error = %e, "[events] not reloaded; events go where they went before"),
        }
        self.config = Arc::new(new);
    }
}

/// The contexts of a term: every store carries the term's fence.
fn fenced(scopes: &[Context], fence: Option<&Fence>) -> Vec<Context> {
    scopes
        .iter()
        .map(|ctx| match fence {
            Some(fence) => Context { store: ctx.store.fenced(fence.clone()), ..ctx.clone() },
            None => ctx.clone(),
        })
        .collect()
}

/// How a term ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TermEnd {
    /// [`Control::Stop`]: the daemon exits.
    Stopped,
    /// The lease was lost: stand by and bid again.
    Deposed,
}

/// One term of leadership.
struct Term<'a> {
    /// None for a leadership without a database lease ([`Leadership::sole`]).
    fence: Option<Fence>,
    timer: &'a Timer,
}

impl Term<'_> {
    async fn lead(
        self,
        daemon: &mut Daemon,
        wake_rx: &mut mpsc::UnboundedReceiver<Wake>,
        control: &mut mpsc::Receiver<Control>,
        status: &mut watch::Receiver<Status>,
        heartbeat: &mut tokio::time::Interval,
    ) -> Result<TermEnd, SchedulerError> {
        let timer = self.timer;
        let epoch = self.fence.as_ref().map(|f| f.epoch);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut shared = Shared {
            scopes: Arc::new(fenced(&daemon.scopes, self.fence.as_ref())),
            release_dates: daemon.release_dates.clone(),
            feeds: daemon.feeds.clone(),
            settings: daemon.settings.clone(),
            stop: stop_rx,
            reconciling: daemon.reconciling.clone(),
        };
        let mut runs: JoinSet<Finished> = JoinSet::new();
        let mut active: HashSet<RunKey> = HashSet::new();
        let mut syncing: Option<tokio::task::JoinHandle<()>> = None;
        // The backlog's own slot: a periodic sync is never skipped because a backlog one runs.
        let mut backlog_syncing: Option<tokio::task::JoinHandle<()>> = None;
        let mut backlog_tick = tokio::time::interval(shared.settings.sync_retry_interval);
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Feeds are fetched by the leader only: one host loads the vendors, and its imports
        // are in the shared database for all.
        let mut refreshing_feeds: Option<tokio::task::JoinHandle<()>> = None;
        let mut feeds_tick = tokio::time::interval(FEEDS_TICK);
        feeds_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut armed: HashMap<String, Armed> = HashMap::new();
        let mut sync_job: Option<Uuid> = None;
        let mut status_open = true;
        let mut announced = false;
        // Set when a run stopped on its own while this term still leads: without it, the run
        // would wait for the next term to be resumed.
        let mut resume_at: Option<tokio::time::Instant> = None;
        let started = self.start(daemon, &shared, &mut runs, &mut active, &mut armed, &mut sync_job).await;
        let end = match started {
            Err(e) if is_fenced(&e) => {
                warn!(error = %e, "leadership ended while starting the term");
                TermEnd::Deposed
            }
            Err(e) => {
                self.wind_down(&stop_tx, runs, syncing, &armed, sync_job, &shared.settings).await;
                return Err(e);
            }
            Ok(()) => loop {
                if let Some(fence) = self.fence.as_ref().filter(|_| !announced) {
                    announce_leadership(&daemon.scopes, fence, Event::LeadershipGained, "gained");
                    announced = true;
                }
                tokio::select! {
                    _ = heartbeat.tick() => shared.settings.heartbeat.beat(Utc::now()),
                    _ = backlog_tick.tick() => {
                        if backlog_syncing.as_ref().is_none_or(|h| h.is_finished()) {
                            backlog_syncing = Some(tokio::spawn(backlog_sync(shared.clone(), daemon.config.clone())));
                        }
                    }
                    _ = feeds_tick.tick() => {
                        if refreshing_feeds.as_ref().is_none_or(|h| h.is_finished()) {
                            refreshing_feeds = Some(tokio::spawn(refresh_feeds(shared.clone(), daemon.config.clone())));
                        }
                    }
                    changed = status.changed(), if status_open => {
                        status_open = changed.is_ok();
                        let still = matches!(status.borrow_and_update().role, Role::Leader { epoch: e } if Some(e) == epoch);
                        if status_open && !still {
                            break TermEnd::Deposed;
                        }
                    }
                    wake = wake_rx.recv() => {
                        let Some(wake) = wake else { break TermEnd::Stopped };
                        match wake {
                            Wake::Window { name, at } => {
                                if armed.get(&name).is_some_and(|a| a.at == at) {
                                    armed.remove(&name);
                                }
                                let config = daemon.config.clone();
                                let Some(w) = config.window(&name).filter(|w| w.enabled) else {
                                    debug!(window = %name, "firing of a window no longer configured; ignored");
                                    continue;
                                };
                                if next_firing(w, at - chrono::Duration::seconds(1)) != Some(at) {
                                    debug!(window = %name, at = %at, "stale firing; ignored");
                                    continue;
                                }
                                // Re-arm first: the next firing never depends on how this one goes.
                                if !armed.contains_key(&name) {
                                    if let Some(next) = next_firing(w, at) {
                                        let job = timer.arm(next, Wake::Window { name: name.clone(), at: next }).await?;
                                        armed.insert(name.clone(), Armed { at: next, job });
                                        debug!(window = %name, next = %next, "next firing armed");
                                    }
                                }
                                info!(window = %name, scheduled_start = %at, "window firing");
                                let plan = RunPlan::for_window(w, at);
                                for ctx in shared.scopes.iter() {
                                    if let Some(scoped) = scopes::plan_in_scope(&config, Some(&name), &plan, &ctx.scope) {
                                        spawn_run(&mut runs, &mut active, &shared, &config, ctx, scoped);
                                    }
                                }
                            }
                            Wake::Sync => {
                                if syncing.as_ref().is_some_and(|h| !h.is_finished()) {
                                    warn!("periodic compliance sync still running; this one is skipped");
                                } else {
                                    syncing = Some(tokio::spawn(periodic_sync(shared.clone(), daemon.config.clone())));
                                }
                                sync_job = Some(arm_sync(timer, &shared.settings).await?);
                            }
                        }
                    }
                    command = control.recv() => match command {
                        Some(Control::Reload(new)) => {
                            daemon.reload(*new);
                            shared.scopes = Arc::new(fenced(&daemon.scopes, self.fence.as_ref()));
                            let config = daemon.config.clone();
                            rearm(timer, &config, &mut armed).await?;
                            let (shared_now, config_now) = (shared.clone(), config.clone());
                            tokio::spawn(async move { reconcile_baselines(&shared_now, &config_now).await });
                            info!(windows = config.windows.iter().filter(|w| w.enabled).count(), armed = armed.len(),
                                "configuration reloaded; schedule updated");
                        }
                        Some(Control::Stop) | None => break TermEnd::Stopped,
                    },
                    _ = tokio::time::sleep_until(resume_at.unwrap_or_else(tokio::time::Instant::now)),
                        if resume_at.is_some() =>
                    {
                        resume_at = None;
                        match resume_interrupted(&shared, &daemon.config, &mut runs, &mut active).await {
                            Err(e) if is_fenced(&e) => break TermEnd::Deposed,
                            Err(e) => {
                                warn!(error = %e, "stopped runs could not be resumed; trying again shortly");
                                resume_at = Some(tokio::time::Instant::now() + STOPPED_RUN_RESUME_PAUSE);
                            }
                            Ok(_) => {}
                        }
                    }
                    Some(finished) = runs.join_next(), if !runs.is_empty() => {
                        match finished {
                            Ok((key, result)) => {
                                match result {
                                    Err(e) if is_window_fenced(&e) => warn!(window = %key.0, scheduled_start = %key.1,
                                        error = %e, "window run handed over: this process no longer leads"),
                                    Err(e) => error!(window = %key.0, scheduled_start = %key.1, account = %key.2, region = %key.3,
                                        error = %e, "window run failed"),
                                    Ok(summary) if summary.end == RunEnd::Stopped && !*shared.stop.borrow() => {
                                        warn!(window = %key.0, scheduled_start = %key.1,
                                            resume_in_seconds = STOPPED_RUN_RESUME_PAUSE.as_secs(),
                                            "window run stopped while this process still leads; resuming it");
                                        resume_at.get_or_insert(tokio::time::Instant::now() + STOPPED_RUN_RESUME_PAUSE);
                                    }
                                    Ok(_) => {}
                                }
                                active.remove(&key);
                            }
                            Err(e) => error!(error = %e, "window run task panicked or was aborted"),
                        }
                    }
                }
            },
        };
        if let Some(fence) = &self.fence {
            let reason = match end {
                TermEnd::Stopped => "stopped",
                TermEnd::Deposed => status.borrow().ended.unwrap_or("lease-expired"),
            };
            announce_leadership(&daemon.scopes, fence, Event::LeadershipLost, reason);
        }
        match end {
            TermEnd::Stopped => {
                info!(runs = runs.len(), "stopping: no new batches are released; commands in SSM keep running")
            }
            TermEnd::Deposed => warn!(epoch, runs = runs.len(),
                "no longer the leader: this process's runs stop releasing batches; the new leader resumes them"),
        }
        if let Some(handle) = backlog_syncing {
            // Whatever it committed stays; the rest is still in the backlog for the next term.
            handle.abort();
        }
        if let Some(handle) = refreshing_feeds {
            // A feed is imported in one transaction: an abort leaves the last good data.
            handle.abort();
        }
        self.wind_down(&stop_tx, runs, syncing, &armed, sync_job, &shared.settings).await;
        Ok(end)
    }

    /// The start-up steps of a term, in order: baselines, resume, catch-up, arming.
    async fn start(
        &self,
        daemon: &Daemon,
        shared: &Shared,
        runs: &mut JoinSet<Finished>,
        active: &mut HashSet<RunKey>,
        armed: &mut HashMap<String, Armed>,
        sync_job: &mut Option<Uuid>,
    ) -> Result<(), SchedulerError> {
        let config = &daemon.config;
        // 0. Baselines first: whatever scans next should judge by the configured ones.
        reconcile_baselines(shared, config).await;
        // 1. Resume what a previous process (or a previous leader) left in progress.
        resume_interrupted(shared, config, runs, active).await?;
        // 2. Missed and late occurrences, in each scope the window reaches.
        for w in config.windows.iter().filter(|w| w.enabled) {
            for ctx in shared.scopes.iter() {
                catch_up_window(ctx, shared, config, w, runs, active).await?;
            }
        }
        // 3. Arm.
        arm_windows(self.timer, config, armed, Utc::now()).await?;
        *sync_job = Some(arm_sync(self.timer, &shared.settings).await?);
        info!(
            epoch = self.fence.as_ref().map(|f| f.epoch),
            windows = config.windows.iter().filter(|w| w.enabled).count(),
            armed = armed.len(),
            sync_interval_seconds = shared.settings.sync_interval.as_secs(),
            "daemon scheduling"
        );
        Ok(())
    }

    /// Ends a term: no new batch anywhere, firings disarmed, runs persist and return within the
    /// grace period.
    async fn wind_down(
        &self,
        stop_tx: &watch::Sender<bool>,
        mut runs: JoinSet<Finished>,
        syncing: Option<tokio::task::JoinHandle<()>>,
        armed: &HashMap<String, Armed>,
        sync_job: Option<Uuid>,
        settings: &Settings,
    ) {
        let _ = stop_tx.send(true);
        if let Some(job) = sync_job {
            self.timer.disarm(job).await;
        }
        for a in armed.values() {
            self.timer.disarm(a.job).await;
        }
        let grace = settings.shutdown_grace;
        let drained = tokio::time::timeout(grace, async {
            // A rollout stops releasing at the first change of the stop flag and stops polling at
            // the next one; the nudges make sure it sees a second change.
            let mut nudge = tokio::time::interval(STOP_NUDGE);
            loop {
                tokio::select! {
                    finished = runs.join_next() => match finished {
                        None => break,
                        Some(Ok((key, Err(e)))) if !is_window_fenced(&e) => {
                            error!(window = %key.0, scheduled_start = %key.1, account = %key.2, region = %key.3,
                                error = %e, "window run failed while stopping");
                        }
                        Some(_) => {}
                    },
                    _ = nudge.tick() => {
                        stop_tx.send_replace(true);
                    }
                }
            }
        })
        .await;
        if drained.is_err() {
            warn!(
                grace_seconds = grace.as_secs(),
                remaining = runs.len(),
                "runs did not stop within the grace period; they resume at the next start"
            );
            runs.abort_all();
        }
        if let Some(sync) = syncing {
            sync.abort();
        }
    }
}

/// Publishes a leadership event through the home account's sinks, in the background: a
/// deposed leader may be cut off from AWS too, and must not wait on it.
fn announce_leadership(
    scopes: &[Context],
    fence: &Fence,
    event: fn(LeadershipChange) -> Event,
    reason: &str,
) {
    let Some(home) = scopes.first() else { return };
    let change = LeadershipChange {
        account: home.scope.account.clone(),
        region: home.scope.region.clone(),
        host: crate::leader::hostname(),
        pid: std::process::id(),
        epoch: fence.epoch,
        reason: reason.to_string(),
    };
    let publisher = home.events.clone();
    tokio::spawn(async move { publisher.publish(&[event(change)]).await });
}

/// Resumes every run recorded as in progress that this process is not already running, in
/// every scope; a run with no stored plan whose window is gone is abandoned.
async fn resume_interrupted(
    shared: &Shared,
    config: &Arc<Config>,
    runs: &mut JoinSet<Finished>,
    active: &mut HashSet<RunKey>,
) -> Result<(), SchedulerError> {
    let now = Utc::now();
    for ctx in shared.scopes.iter() {
        for (record, plan) in window::interrupted_runs(ctx, config, now - RESUME_LOOKBACK).await? {
            match plan {
                Some(plan) => {
                    info!(window = %record.window, scheduled_start = %record.scheduled_start, scope = %ctx.scope,
                        "resuming interrupted run");
                    spawn_run(runs, active, shared, config, ctx, plan);
                }
                None => {
                    window::abandon(ctx, &record, "no stored plan and no such window in the configuration")
                        .await?
                }
            }
        }
    }
    Ok(())
}

fn is_fenced(e: &SchedulerError) -> bool {
    matches!(e, SchedulerError::Store(s) if s.is_fenced())
}

fn is_window_fenced(e: &WindowError) -> bool {
    matches!(e, WindowError::Store(s) if s.is_fenced())
}

async fn catch_up_window(
    ctx: &Context,
    shared: &Shared,
    config: &Arc<Config>,
    w: &Window,
    runs: &mut JoinSet<Finished>,
    active: &mut HashSet<RunKey>,
) -> Result<(), SchedulerError> {
    let now = Utc::now();
    if !scopes::window_reaches(config, &w.name, &ctx.scope) {
        return Ok(());
    }
    let query = WindowRunQuery {
        window: Some(&w.name),
        account: Some(&ctx.scope.account),
        region: Some(&ctx.scope.region),
        limit: Some(1),
        ..Default::default()
    };
    let latest = ctx.store.window_runs(&query).await?;
    let plan = catch_up(w, latest.first().map(|r| r.scheduled_start), now);
    for at in &plan.missed {
        window::record_missed(ctx, &w.name, *at, now, "patchd was not running before end minus cutoff")
            .await?;
    }
    if plan.more_missed > 0 {
        warn!(window = %w.name, scope = %ctx.scope, more_missed = plan.more_missed,
            "further missed occurrences were not recorded one by one");
    }
    if let Some(at) = plan.late {
        let scoped = scopes::plan_in_scope(config, Some(&w.name), &RunPlan::for_window(w, at), &ctx.scope);
        if let Some(scoped) = scoped {
            warn!(window = %w.name, scope = %ctx.scope, scheduled_start = %at, late_seconds = (now - at).num_seconds(),
                "window start was missed while patchd was down; starting late");
            spawn_run(runs, active, shared, config, ctx, scoped);
        }
    }
    Ok(())
}

async fn arm_windows(
    timer: &Timer,
    config: &Config,
    armed: &mut HashMap<String, Armed>,
    now: DateTime<Utc>,
) -> Result<(), JobSchedulerError> {
    for w in &config.windows {
        if let Some(at) = next_firing(w, now) {
            let job = timer.arm(at, Wake::Window { name: w.name.clone(), at }).await?;
            armed.insert(w.name.clone(), Armed { at, job });
            info!(window = %w.name, next = %at, "next firing armed");
        }
    }
    Ok(())
}

/// After a reload: keep the jobs whose instant is unchanged, replace the others.
async fn rearm(
    timer: &Timer,
    config: &Config,
    armed: &mut HashMap<String, Armed>,
) -> Result<(), JobSchedulerError> {
    let now = Utc::now();
    let wanted: HashMap<&str, DateTime<Utc>> =
        config.windows.iter().filter_map(|w| Some((w.name.as_str(), next_firing(w, now)?))).collect();
    let names: Vec<String> = armed.keys().cloned().collect();
    for name in names {
        if wanted.get(name.as_str()) != armed.get(&name).map(|a| &a.at) {
            if let Some(old) = armed.remove(&name) {
                timer.disarm(old.job).await;
            }
        }
    }
    for (name, at) in wanted {
        if !armed.contains_key(name) {
            let job = timer.arm(at, Wake::Window { name: name.to_string(), at }).await?;
            armed.insert(name.to_string(), Armed { at, job });
            info!(window = name, next = %at, "next firing armed");
        }
    }
    Ok(())
}

async fn arm_sync(timer: &Timer, settings: &Settings) -> Result<Uuid, JobSchedulerError> {
    let at =
        Utc::now() + chrono::Duration::from_std(settings.sync_interval).unwrap_or(chrono::Duration::hours(6));
    timer.arm(at, Wake::Sync).await
}

fn spawn_run(
    runs: &mut JoinSet<Finished>,
    active: &mut HashSet<RunKey>,
    shared: &Shared,
    config: &Arc<Config>,
    ctx: &Context,
    plan: RunPlan,
) {
    let key =
        (plan.record_as.clone(), plan.scheduled_start, ctx.scope.account.clone(), ctx.scope.region.clone());
    if !active.insert(key.clone()) {
        debug!(window = %key.0, scheduled_start = %key.1, scope = %ctx.scope, "occurrence already running in this process");
        return;
    }
    let shared = shared.clone();
    let ctx = ctx.clone();
    let config = config.clone();
    runs.spawn(async move {
        // The library may fire up to two seconds early: start at the instant itself.
        if let Ok(early) = (plan.scheduled_start - Utc::now()).to_std() {
            tokio::time::sleep(early).await;
        }
        let progress = |p: &TaskProgress<'_>| {
            debug!(
                window = p.run,
                task = p.task,
                done = p.progress.done,
                total = p.progress.total,
                failed = p.progress.failed,
                "progress"
            );
        };
        let env = Env {
            ctx: &ctx,
            config: &config,
            release_dates: &shared.release_dates,
            state_dir: &shared.settings.state_dir,
            poll: &shared.settings.poll,
            lock_wait: LockWait::UntilCutoff,
            on_progress: &progress,
        };
        let result = window::execute(&env, &plan, shared.stop.clone()).await;
        if let Ok(summary) = &result {
            if let RunEnd::AlreadyDone(status) = summary.end {
                debug!(window = %key.0, status = %status, "occurrence already done");
            }
        }
        (key, result)
    });
}

/// The periodic compliance sync of every managed instance of the configured groups, in every
/// account and region, one scope after the other (each is one store transaction).
async fn periodic_sync(shared: Shared, config: Arc<Config>) {
    for ctx in shared.scopes.iter() {
        sync_scope(ctx, &shared, &config).await;
    }
}

async fn sync_scope(ctx: &Context, shared: &Shared, config: &Config) {
    let started = std::time::Instant::now();
    let groups: Vec<&patchd_config::Group> = config.groups.iter().collect();
    match sync::sync_groups(ctx, &groups, &shared.release_dates, "compliance-poll").await {
        Ok(done) => {
            info!(
                scope = %ctx.scope,
                instances = done.outcome.instances,
                unread = done.outcome.unread.len(),
                gaps = done.gaps,
                duration_seconds = started.elapsed().as_secs_f64(),
                "periodic compliance sync done"
            );
            crate::announce::announce_sla(ctx, config, &done.instance_ids, Utc::now()).await;
        }
        Err(e) => error!(scope = %ctx.scope, error = %e, "periodic compliance sync failed"),
    }
}

/// How often the leader looks for feeds whose interval has passed.
const FEEDS_TICK: Duration = Duration::from_secs(30);

/// Fetches the feeds that are due and hands the advisories in use to the syncs.
async fn refresh_feeds(shared: Shared, config: Arc<Config>) {
    let Some(ctx) = shared.scopes.first() else { return };
    match shared.feeds.refresh(&config, &ctx.store, Selection::Due, &|_, _, _| {}).await {
        Ok(outcome) => {
            if !outcome.feeds.is_empty() {
                info!(
                    feeds = outcome.feeds.len(),
                    failed = outcome.failed().count(),
                    dated = outcome.dated,
                    "advisory feeds refreshed"
                );
            }
        }
        Err(e) => error!(error = %e, "advisory feeds not recorded"),
    }
    shared.release_dates.use_advisories(shared.feeds.index().await);
}

/// Syncs again, in every account and region, the instances earlier syncs could not read.
async fn backlog_sync(shared: Shared, config: Arc<Config>) {
    for ctx in shared.scopes.iter() {
        let backlog = match ctx.store.sync_backlog(Some((&ctx.scope.account, &ctx.scope.region))).await {
            Ok(backlog) => backlog,
            Err(e) => {
                warn!(scope = %ctx.scope, error = %e, "sync backlog not read");
                continue;
            }
        };
        if backlog.is_empty() {
            continue;
        }
        let ids: Vec<String> = backlog.into_iter().map(|entry| entry.instance_id).collect();
        let request = SyncRequest { source: "backlog", instance_ids: &ids };
        match sync::sync_compliance(ctx, &request, &shared.release_dates).await {
            Ok(outcome) => {
                info!(scope = %ctx.scope, instances = ids.len(), still_unread = outcome.unread.len(),
                "sync backlog read again")
            }
            Err(e) => error!(scope = %ctx.scope, error = %e, "sync of the backlog failed"),
        }
        crate::announce::announce_sla(ctx, &config, &ids, Utc::now()).await;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use patchd_config::CutoffBehavior;
    use patchd_schedule::{Expression, Schedule, ScheduleSpec, Tz};

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn window(expr: &str, tz: Tz, hours: i64, cutoff: i64) -> Window {
        let schedule = Schedule::new(ScheduleSpec {
            expression: Expression::parse(expr).unwrap(),
            timezone: tz,
            offset_days: 0,
            start: None,
            end: None,
        })
        .unwrap();
        Window {
            name: "w".into(),
            description: None,
            schedule,
            duration: chrono::Duration::hours(hours),
            cutoff: chrono::Duration::hours(cutoff),
            cutoff_behavior: CutoffBehavior::ContinueTask,
            enabled: true,
            tasks: Vec::new(),
            scope: Default::default(),
            origin: patchd_config::Origin { file: Arc::new(PathBuf::from("t.toml")), line: 1, col: 1 },
        }
    }

    #[test]
    fn catch_up_records_missed_and_starts_the_open_one_late() {
        // Daily at 02:00 UTC, 4 h long, 1 h cutoff: releasing stops at 05:00.
        let w = window("cron(0 2 * * ? *)", Tz::UTC, 4, 1);
        let check = |last: Option<&str>, now: &str, missed: &[&str], late: Option<&str>| {
            let got = catch_up(&w, last.map(t), t(now));
            let want: Vec<_> = missed.iter().map(|s| t(s)).collect();
            assert_eq!(got.missed, want, "missed, last={last:?} now={now}");
            assert_eq!(got.late, late.map(t), "late, last={last:?} now={now}");
        };
        // Down from before the 1st's run to the 3rd at 03:00: 2nd missed, 3rd starts late.
        check(
            Some("2026-03-01T02:00:00Z"),
            "2026-03-03T03:00:00Z",
            &["2026-03-02T02:00:00Z"],
            Some("2026-03-03T02:00:00Z"),
        );
        // Back at 05:00 exactly: end minus cutoff has passed, so the 3rd is missed too.
        check(
            Some("2026-03-01T02:00:00Z"),
            "2026-03-03T05:00:00Z",
            &["2026-03-02T02:00:00Z", "2026-03-03T02:00:00Z"],
            None,
        );
        // At 04:59:59 it can still start.
        check(Some("2026-03-02T02:00:00Z"), "2026-03-03T04:59:59Z", &[], Some("2026-03-03T02:00:00Z"));
        // Never ran before: nothing is missed, but an open occurrence starts late.
        check(None, "2026-03-03T03:00:00Z", &[], Some("2026-03-03T02:00:00Z"));
        check(None, "2026-03-03T06:00:00Z", &[], None);
        // The firing itself is not "late": an occurrence at now is started by catch-up too.
        check(Some("2026-03-02T02:00:00Z"), "2026-03-03T02:00:00Z", &[], Some("2026-03-03T02:00:00Z"));
    }

    #[test]
    fn catch_up_caps_the_missed_list() {
        let w = window("rate(5 minutes)", Tz::UTC, 1, 0);
        let got = catch_up(&w, Some(t("2026-03-01T00:00:00Z")), t("2026-03-02T00:00:00Z"));
        assert_eq!(got.missed.len(), MAX_MISSED_RECORDED);
        // 288 firings in the day after the recorded one; the last 12 are open (1 h duration),
        // of which the latest starts late and the 11 earlier overlapping ones are missed.
        assert_eq!(got.missed.len() + got.more_missed, 288 - 1);
        assert_eq!(got.late, Some(t("2026-03-02T00:00:00Z")));
    }

    #[test]
    fn firings_follow_the_schedule_across_dst() {
        // 02:30 Berlin daily: on 2026-03-29 the local time is skipped and fires at 03:00 CEST
        // (01:00Z); on 2026-10-25 it is repeated and fires once, at the first one (00:30Z).
        let w = window("cron(30 2 * * ? *)", Tz::Europe__Berlin, 2, 0);
        let mut at = t("2026-03-27T12:00:00Z");
        let mut got = Vec::new();
        for _ in 0..4 {
            at = next_firing(&w, at).unwrap();
            got.push(at);
        }
        assert_eq!(
            got,
            vec![
                t("2026-03-28T01:30:00Z"),
                t("2026-03-29T01:00:00Z"),
                t("2026-03-30T00:30:00Z"),
                t("2026-03-31T00:30:00Z")
            ]
        );
        let after = next_firing(&w, t("2026-10-24T12:00:00Z")).unwrap();
        assert_eq!(after, t("2026-10-25T00:30:00Z"));
        assert_eq!(next_firing(&w, after), Some(t("2026-10-26T01:30:00Z")));
        let mut disabled = w.clone();
        disabled.enabled = false;
        assert_eq!(next_firing(&disabled, after), None);
    }

    /// Measures the library's one-shot precision: it keeps whole epoch seconds and ticks every
    /// 500 ms, so a job can fire before its instant. This is why firings sleep until the exact
    /// instant before starting.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_shot_fires_early_by_up_to_two_seconds() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let jobs = JobScheduler::new().await.unwrap();
        jobs.start().await.unwrap();
        let timer = Timer { jobs, wake: tx };
        // Aim just before a whole second, where truncation costs the most.
        let now = Utc::now();
        let target = now + chrono::Duration::milliseconds(2950 - i64::from(now.timestamp_subsec_millis()));
        timer.arm(target, Wake::Sync).await.unwrap();
        let wake = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap();
        let fired = Utc::now();
        assert_eq!(wake, Some(Wake::Sync));
        let offset = (fired - target).num_milliseconds();
        // Early by up to ~2 s, never later than one tick (plus scheduling slack) after it.
        assert!((-2100..=1000).contains(&offset), "fired {offset} ms from its instant");
    }
}
