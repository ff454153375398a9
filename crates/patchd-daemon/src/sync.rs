//! Compliance sync: SSM's current patch state into the store's history.
//!
//! SSM keeps only each node's latest Scan or Install. After every Scan and Install, and on its
//! own schedule, the daemon reads that state and lets the store turn it into findings,
//! transitions and installed-at times (the rules are `patchd_store`'s, see its crate
//! documentation).
//!
//! # What a sync costs: calls in proportion to what changed
//!
//! Instances are read and recorded in batches of [`SYNC_BATCH_INSTANCES`]. For each batch:
//!
//! 1. `DescribeInstancePatchStates`, 50 ids a call: `ceil(n / 50)` calls. An instance whose
//!    `OperationEndTime` is no newer than the recorded one is unchanged and costs nothing more.
//! 2. For a changed instance, what the store holds open and SSM's counts decide the listing:
//!    - no open finding recorded and no open state in SSM's counts: no listing at all, only its
//!      summary is recorded;
//!    - open states in SSM's counts: `DescribeInstancePatches` filtered to the open states
//!      (missing, failed, pending reboot, installed-rejected, unapproved security update);
//!    - and, only when a recorded open finding is not among them (or SSM counts none open
//!      while findings are recorded open), a listing filtered to the installed states, whose
//!      InstalledTime dates the remediation.
//!
//!    A patch not listed leaves its finding as it was, as a not-applicable one always did.
//!    Installed patches that never were findings are never read.
//!
//! A sync of an unchanged fleet therefore costs `ceil(n / 50)` calls and writes nothing but
//! the backlog's bookkeeping; a scanned fleet of clean instances costs the same plus nothing.
//!
//! # Throttling and errors: nothing lost
//!
//! Every read goes through patchd-aws's per-operation [`Pacer`](patchd_aws::Pacer), which slows
//! an operation that AWS throttles and speeds it up again. A read that still fails after the
//! SDK's attempts is tried again in [`ReadRetry`] rounds with a doubling, jittered backoff,
//! without holding up the other instances' reads. An instance still unread after that is
//! counted in [`SyncOutcome::unread`] and written to the store's sync backlog; the daemon
//! syncs the backlog again within minutes, and any later sync that reads the instance takes it
//! out. A run whose sync left instances unread is recorded `incomplete`, never `succeeded`.
//!
//! # Batches and crashes
//!
//! Each batch is one [`Store::record_sync`](patchd_store::Store::record_sync) and so one
//! transaction: other writers (the audit log, window runs) wait for one batch, not for the
//! whole fleet, and memory holds one batch's patch lists, not the fleet's. A crash or a
//! cancelled sync keeps every committed batch; the instances of the lost batch still have an
//! older end time in the store than in SSM, so the next sync reads exactly those.
//!
//! # Release dates
//!
//! The SLA clock starts at an imported advisory's release date, else SSM's, else the
//! fleet-wide first sighting (an estimate); [`PatchRecord::release`](patchd_store::PatchRecord::release)
//! applies that order. SSM has dates only in `DescribeAvailablePatches`, and only for Windows
//! and Amazon Linux 1 and 2. [`ReleaseDates`] reads those catalogs for the systems the fleet
//! runs, at most once per refresh period (a day), and writes them to the store with the `ssm`
//! source; every sync asks it to refresh what is stale.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Timelike, Utc};
use patchd_aws::{
    AwsClients, AwsError, Coverage, InstancePatch, OperatingSystem, PatchCatalog, PatchCounts, PatchListing,
    PatchStateSummary, Target,
};
use patchd_store::{
    ComplianceSync, InstanceObservation, InstanceScan, PatchObservation, ReleaseSource, StoreError,
};
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tracing::{instrument, Instrument};

use crate::context::Context;

/// Instances read and recorded per batch (one [`Store::record_sync`](patchd_store::Store::record_sync)
/// transaction each). The batch's states and patch lists are all a sync holds in memory.
pub const SYNC_BATCH_INSTANCES: usize = 250;
/// Instances whose patches are being listed at once. SSM's per-operation quotas are not
/// published; a few in flight keep a large fleet's sync short, and the pacer holds them to
/// whatever rate AWS accepts.
pub const PATCH_FETCH_CONCURRENCY: usize = 4;
/// Instances recorded per inventory transaction.
const INVENTORY_BATCH_INSTANCES: usize = 1_000;
/// DescribeInstancePatchStates takes 50 ids a call.
const PATCH_STATE_IDS: usize = 50;
/// DescribeInstancePatches answers pages of 100 (patchd-aws asks for the largest).
const PATCH_PAGE: usize = 100;
/// How long a catalog that could not be read is left alone before the next attempt (at most
/// the refresh period), so that a missing IAM permission does not cost calls on every sync.
const FAILED_CATALOG_RETRY_MINUTES: i64 = 15;

/// What to sync.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    /// What asked for the sync, for the store's sync log: `window:prod/scan`, `interval`, ...
    pub source: &'a str,
    /// The managed instances to read. Repeated ids are read once.
    pub instance_ids: &'a [String],
}

/// What [`sync_groups`] did: the sync, and what it could not even ask for.
#[derive(Debug, Clone, Default)]
pub struct GroupsSync {
    pub outcome: SyncOutcome,
    /// Instances the groups selected that SSM does not manage (no agent): nothing to sync.
    pub gaps: usize,
    /// Instances of the backlog added to the groups' instances.
    pub from_backlog: usize,
    /// Groups whose instances could not be listed, with why.
    pub unresolved: Vec<(String, String)>,
    /// The instances the sync was asked to read.
    pub instance_ids: Vec<String>,
}

/// The inventory and compliance of every managed instance of `groups` in `ctx`'s account and
/// region, plus the instances the sync backlog holds there: what the daemon's periodic sync
/// and `patchd sync` do. A group that cannot be resolved is reported, not fatal.
pub async fn sync_groups(
    ctx: &Context,
    groups: &[&patchd_config::Group],
    release_dates: &ReleaseDates,
    source: &str,
) -> Result<GroupsSync, SyncError> {
    let now = Utc::now();
    let mut done = GroupsSync::default();
    let mut targets: Vec<Target> = Vec::new();
    for group in groups.iter().filter(|g| ctx.scope.admitted_by(&g.scope)) {
        match ctx.aws.resolve_group(group).await {
            Ok(found) => targets.extend(found),
            Err(e) => {
                tracing::warn!(group = %group.name, scope = %ctx.scope, error = %e, "group not resolved; its instances are not synced");
                done.unresolved.push((group.name.clone(), e.to_string()));
            }
        }
    }
    targets.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    targets.dedup_by(|a, b| a.instance_id == b.instance_id);
    if let Err(e) = record_inventory(ctx, &targets, now).await {
        // The compliance is worth reading even when the inventory could not be written.
        tracing::warn!(scope = %ctx.scope, error = %e, "inventory not recorded");
    }
    let mut ids: Vec<String> =
        targets.iter().filter(|t| t.has_agent()).map(|t| t.instance_id.clone()).collect();
    done.gaps = targets.len() - ids.len();
    let known: HashSet<String> = ids.iter().cloned().collect();
    let backlog = ctx
        .store
        .sync_backlog(Some((&ctx.scope.account, &ctx.scope.region)))
        .await
        .map_err(SyncError::ReadStore)?;
    for entry in backlog {
        if !known.contains(&entry.instance_id) {
            done.from_backlog += 1;
            ids.push(entry.instance_id);
        }
    }
    drop(targets);
    let request = SyncRequest { source, instance_ids: &ids };
    done.outcome = sync_compliance(ctx, &request, release_dates).await?;
    done.instance_ids = ids;
    Ok(done)
}

/// What a sync did. `instances = changed + unchanged + unreported + gone + unread.len()`, plus
/// the instances a sync that failed on the store did not get to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    /// Distinct instances requested.
    pub instances: usize,
    /// Instances whose newer Scan or Install was read and recorded.
    pub changed: usize,
    /// Instances whose `OperationEndTime` is no newer than the one recorded: not read again.
    pub unchanged: usize,
    /// Instances SSM has no patch state for (never scanned, or not a managed node).
    pub unreported: usize,
    /// Instances SSM no longer knew when their patch list was asked for (terminated or
    /// deregistered between the two calls).
    pub gone: usize,
    /// Instances whose state or patches could not be read after every retry: in the store's
    /// sync backlog until a later sync reads them.
    pub unread: Vec<UnreadInstance>,
    /// Findings opened (patches seen missing on an instance for the first time).
    pub opened: usize,
    /// Open findings that became installed.
    pub remediated: usize,
    /// Remediated findings seen open again.
    pub reopened: usize,
    /// Finding state changes recorded, openings included.
    pub transitions: usize,
    /// `record_sync` transactions committed.
    pub batches: usize,
    /// `DescribeInstancePatchStates` requests (one per 50 ids, and one per retry round; the
    /// SDK's own retries not counted).
    pub state_calls: usize,
    /// `DescribeInstancePatches` pages requested (one per 100 patches, at least one per
    /// listing, and one per retry round; the SDK's own retries not counted).
    pub patch_calls: usize,
    /// Changed instances recorded from their counts alone: no open finding before, none now.
    pub listings_skipped: usize,
    /// Listings of installed patches, made where a recorded open finding disappeared.
    pub installed_listings: usize,
    /// Reads tried again after the SDK had given up.
    pub read_retries: usize,
    /// Release dates the store took from SSM's catalogs during this sync (0 unless a catalog
    /// was due for its refresh).
    pub release_dates: usize,
    pub elapsed: std::time::Duration,
}

/// An instance a sync could not read, and the last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadInstance {
    pub instance_id: String,
    pub error: String,
}

impl SyncOutcome {
    /// Whether every requested instance was read (or SSM had nothing to give).
    pub fn is_complete(&self) -> bool {
        self.unread.is_empty()
    }
}

/// How a sync paces itself. [`sync_compliance`] uses the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOptions {
    /// Instances per batch (one `record_sync` transaction).
    pub batch_instances: usize,
    /// Instances whose patches are listed at once.
    pub fetch_concurrency: usize,
    pub retry: ReadRetry,
}

impl Default for SyncOptions {
    fn default() -> SyncOptions {
        SyncOptions {
            batch_instances: SYNC_BATCH_INSTANCES,
            fetch_concurrency: PATCH_FETCH_CONCURRENCY,
            retry: ReadRetry::default(),
        }
    }
}

/// Retries of a read beyond the SDK's own attempts: `rounds` more tries after the first, the
/// n-th after a random wait between half and all of `initial * 2^n`, capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRetry {
    pub rounds: u32,
    pub initial: std::time::Duration,
    pub max: std::time::Duration,
}

impl Default for ReadRetry {
    /// Five rounds, 1 s doubling to 16 s: a read given up is one that failed for about half a
    /// minute (times the SDK's attempts), far beyond a burst of throttling.
    fn default() -> ReadRetry {
        ReadRetry {
            rounds: 5,
            initial: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(16),
        }
    }
}

/// Why a sync, an inventory record or a release-date refresh stopped. Whatever was committed
/// before the error stays committed; the next sync reads what is left.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("cannot read ssm's {catalog} patch catalog: {source}")]
    AvailablePatches {
        catalog: &'static str,
        #[source]
        source: AwsError,
    },

    #[error("cannot read the recorded fleet from the store: {0}")]
    ReadStore(#[source] StoreError),

    #[error(
        "cannot record a compliance sync batch ({recorded} instances were recorded first; \
         the next sync reads the rest): {source}"
    )]
    RecordSync {
        recorded: usize,
        #[source]
        source: StoreError,
    },

    #[error("cannot record the inventory of {instances} instances: {source}")]
    RecordInventory {
        instances: usize,
        #[source]
        source: StoreError,
    },

    #[error("cannot record ssm's release dates: {0}")]
    RecordReleaseDates(#[source] StoreError),
}

impl SyncError {
    /// Whether the same work may succeed later unchanged (throttling, network trouble, a busy
    /// or unreachable database), as opposed to needing an operator (permissions, bad input).
    pub fn is_transient(&self) -> bool {
        match self {
            SyncError::AvailablePatches { source, .. } => source.is_transient(),
            SyncError::ReadStore(source)
            | SyncError::RecordSync { source, .. }
            | SyncError::RecordInventory { source, .. }
            | SyncError::RecordReleaseDates(source) => {
                matches!(source, StoreError::Busy(_) | StoreError::Unavailable(_))
            }
        }
    }
}

/// Reads SSM's compliance state of `request.instance_ids` and records what changed since the
/// last sync, with the default [`SyncOptions`]. See the module documentation for the cost.
pub async fn sync_compliance(
    ctx: &Context,
    request: &SyncRequest<'_>,
    release_dates: &ReleaseDates,
) -> Result<SyncOutcome, SyncError> {
    sync_compliance_with(ctx, request, release_dates, &SyncOptions::default()).await
}

/// [`sync_compliance`] with explicit batching, concurrency and retries.
///
/// AWS errors do not end the sync: an instance whose state or patches could not be read after
/// every retry is counted in [`SyncOutcome::unread`] and written to the store's backlog, and
/// the other instances are read and recorded. Only the store's errors end it.
#[instrument(
    skip_all,
    fields(source = request.source, instances = request.instance_ids.len()),
    err(Display)
)]
pub async fn sync_compliance_with(
    ctx: &Context,
    request: &SyncRequest<'_>,
    release_dates: &ReleaseDates,
    options: &SyncOptions,
) -> Result<SyncOutcome, SyncError> {
    let clock = Instant::now();
    let started_at = Utc::now();
    let ids = distinct(request.instance_ids);
    let mut outcome = SyncOutcome { instances: ids.len(), ..SyncOutcome::default() };

    for batch in ids.chunks(options.batch_instances.max(1)) {
        sync_batch(ctx, request.source, started_at, batch, options, &mut outcome).await?;
    }

    match release_dates.refresh_if_stale(ctx, Utc::now()).await {
        Ok(n) => outcome.release_dates = n,
        // Findings are recorded either way; their clock stays estimated (or advisory-based)
        // until a refresh succeeds.
        Err(error) => tracing::warn!(error = %error, "ssm release dates not refreshed"),
    }
    // Advisory ids were written as placeholders when their feed was imported; only patches
    // known by package identity need matching, and only new findings can bring new ones.
    if outcome.opened + outcome.reopened > 0 {
        if let Some(index) = release_dates.advisories() {
            match crate::feeds::date_by_package(&ctx.store, &index).await {
                Ok(n) => outcome.release_dates += n,
                Err(error) => tracing::warn!(error = %error, "advisory dates of new patches not written"),
            }
        }
    }

    outcome.elapsed = clock.elapsed();
    LATEST_SYNC.record(request.source, outcome.elapsed, Utc::now());
    tracing::info!(
        source = request.source,
        instances = outcome.instances,
        changed = outcome.changed,
        unchanged = outcome.unchanged,
        unreported = outcome.unreported,
        gone = outcome.gone,
        unread = outcome.unread.len(),
        opened = outcome.opened,
        remediated = outcome.remediated,
        reopened = outcome.reopened,
        transitions = outcome.transitions,
        batches = outcome.batches,
        state_calls = outcome.state_calls,
        patch_calls = outcome.patch_calls,
        listings_skipped = outcome.listings_skipped,
        installed_listings = outcome.installed_listings,
        read_retries = outcome.read_retries,
        release_dates = outcome.release_dates,
        elapsed_ms = u64::try_from(outcome.elapsed.as_millis()).unwrap_or(u64::MAX),
        "compliance synced"
    );
    if !outcome.unread.is_empty() {
        let incomplete = crate::events::SyncIncomplete {
            account: ctx.scope.account.clone(),
            region: ctx.scope.region.clone(),
            source: request.source.to_string(),
            instances: outcome.instances,
            unread: outcome.unread.len(),
            sample: outcome.unread.iter().take(20).map(|u| u.instance_id.clone()).collect(),
            error: outcome.unread[0].error.clone(),
        };
        ctx.events.publish(&[crate::events::Event::SyncIncomplete(incomplete)]).await;
        tracing::warn!(
            source = request.source,
            unread = outcome.unread.len(),
            first = %outcome.unread[0].instance_id,
            error = %outcome.unread[0].error,
            "sync incomplete: some instances' results could not be read; they stay in the backlog \
             and are read again by the next sync"
        );
    }
    Ok(outcome)
}

/// What the sync reads of one changed instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    /// No open finding recorded and none in SSM's counts: nothing to list.
    Nothing,
    /// The open patches; and the installed ones if a recorded open finding is not among them.
    Open,
    /// SSM counts no open patch, but findings are recorded open: only the installed patches,
    /// to close them with their InstalledTime.
    InstalledOnly,
}

fn listing_for(counts: &PatchCounts, recorded_open: usize) -> Listing {
    match (counts.by_state.open(), recorded_open) {
        (0, 0) => Listing::Nothing,
        (0, _) => Listing::InstalledOnly,
        _ => Listing::Open,
    }
}

/// Reads and records one batch of instances: their states, the patch lists of those that
/// changed, one `record_sync`, and the backlog.
async fn sync_batch(
    ctx: &Context,
    source: &str,
    started_at: DateTime<Utc>,
    ids: &[String],
    options: &SyncOptions,
    outcome: &mut SyncOutcome,
) -> Result<(), SyncError> {
    let mut unread: Vec<UnreadInstance> = Vec::new();
    let mut states: Vec<PatchStateSummary> = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(PATCH_STATE_IDS) {
        let read =
            with_retries(&options.retry, "DescribeInstancePatchStates", || ctx.aws.patch_states(chunk)).await;
        outcome.state_calls += read.attempts;
        outcome.read_retries += read.attempts - 1;
        match read.result {
            Ok(found) => states.extend(found),
            Err(error) => {
                let error = error.to_string();
                unread.extend(
                    chunk.iter().map(|id| UnreadInstance { instance_id: id.clone(), error: error.clone() }),
                );
            }
        }
    }
    let unreadable_states: HashSet<&str> = unread.iter().map(|u| u.instance_id.as_str()).collect();
    let readable: Vec<String> =
        ids.iter().filter(|id| !unreadable_states.contains(id.as_str())).cloned().collect();
    let recorded = ctx
        .store
        .recorded_compliance(&ctx.scope.account, &ctx.scope.region, &readable)
        .await
        .map_err(SyncError::ReadStore)?;
    let states: HashMap<&str, &PatchStateSummary> =
        states.iter().map(|s| (s.instance_id.as_str(), s)).collect();

    let mut changed: Vec<(&PatchStateSummary, DateTime<Utc>, Listing)> = Vec::new();
    for id in &readable {
        let Some(state) = states.get(id.as_str()) else {
            outcome.unreported += 1;
            continue;
        };
        let record = recorded.get(id.as_str());
        match classify(state.operation_ended_at, record.and_then(|r| r.operation_end)) {
            Change::Unreported => outcome.unreported += 1,
            Change::Unchanged => outcome.unchanged += 1,
            Change::Changed(ended_at) => {
                let open = record.map_or(0, |r| r.open_patches.len());
                changed.push((state, ended_at, listing_for(&state.counts, open)));
            }
        }
    }

    let requests: Vec<ListRequest> = changed
        .iter()
        .map(|(state, _, listing)| ListRequest {
            instance_id: state.instance_id.clone(),
            listing: *listing,
            recorded_open: recorded
                .get(state.instance_id.as_str())
                .map(|r| r.open_patches.clone())
                .unwrap_or_default(),
        })
        .collect();
    let fetched = fetch_patch_lists(&ctx.aws, requests, options).await;

    let mut lists: Vec<(&PatchStateSummary, DateTime<Utc>, Vec<InstancePatch>)> =
        Vec::with_capacity(changed.len());
    for (&(state, ended_at, listing), fetch) in changed.iter().zip(fetched) {
        outcome.patch_calls += fetch.calls;
        outcome.read_retries += fetch.retries;
        outcome.installed_listings += usize::from(fetch.listed_installed);
        if listing == Listing::Nothing {
            outcome.listings_skipped += 1;
        }
        match fetch.result {
            Ok(patches) => lists.push((state, ended_at, patches)),
            Err(error @ AwsError::NotFound { .. }) => {
                outcome.gone += 1;
                tracing::warn!(instance = %state.instance_id, error = %error, "instance gone before its patch list was read");
            }
            Err(error) => unread
                .push(UnreadInstance { instance_id: state.instance_id.clone(), error: error.to_string() }),
        }
    }

    let observations: Vec<Vec<PatchObservation<'_>>> =
        lists.iter().map(|(state, _, patches)| observe(&state.instance_id, patches)).collect();
    let scans: Vec<InstanceScan<'_>> = lists
        .iter()
        .zip(&observations)
        .map(|((state, ended_at, _), patches)| InstanceScan {
            instance: ctx.scope.key(&state.instance_id),
            observed_at: *ended_at,
            command_id: None,
            operation: state.operation,
            operation_start: state.operation_started_at,
            operation_end: state.operation_ended_at,
            baseline_id: non_empty(&state.baseline_id),
            snapshot_id: state.snapshot_id.as_deref(),
            patch_group: state.patch_group.as_deref(),
            patches,
            counts: Some(state.counts.by_state),
        })
        .collect();
    if !scans.is_empty() {
        let sync = ComplianceSync { source, started_at, scans: &scans };
        let report = ctx
            .store
            .record_sync(&sync)
            .await
            .map_err(|source| SyncError::RecordSync { recorded: outcome.changed, source })?;
        outcome.batches += 1;
        outcome.changed += report.instances;
        // A scan older than the recorded one: another sync got there first.
        outcome.unchanged += report.stale_instances;
        outcome.opened += report.opened;
        outcome.remediated += report.remediated;
        outcome.reopened += report.reopened;
        outcome.transitions += report.transitions;
    }

    // Only once the batch is committed: an instance leaves the backlog when its results are in
    // the store (or SSM has none to give).
    let unread_ids: HashSet<&str> = unread.iter().map(|u| u.instance_id.as_str()).collect();
    let read: Vec<&str> = ids.iter().map(String::as_str).filter(|id| !unread_ids.contains(id)).collect();
    let failed: Vec<(&str, &str)> =
        unread.iter().map(|u| (u.instance_id.as_str(), u.error.as_str())).collect();
    ctx.store
        .update_sync_backlog(&ctx.scope.account, &ctx.scope.region, &failed, &read, Utc::now())
        .await
        .map_err(|source| SyncError::RecordSync { recorded: outcome.changed, source })?;
    outcome.unread.extend(unread);
    Ok(())
}

/// One read that was retried: its last result and how many calls it took.
pub(crate) struct Retried<T> {
    pub(crate) result: Result<T, AwsError>,
    pub(crate) attempts: usize,
}

/// Runs `read` until it succeeds, fails for good, or `retry.rounds` more tries have failed
/// transiently, sleeping a jittered, doubling backoff between tries. Each try is itself the
/// SDK's `max_attempts` attempts.
pub(crate) async fn with_retries<T, F, Fut>(
    retry: &ReadRetry,
    operation: &'static str,
    mut read: F,
) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    let mut attempts = 0;
    let mut backoff = retry.initial;
    loop {
        attempts += 1;
        match read().await {
            Err(error) if error.is_transient() && attempts <= retry.rounds as usize => {
                let wait = backoff.mul_f64(0.5 + jitter() / 2.0);
                tracing::debug!(operation, attempts, wait_ms = wait.as_millis() as u64, error = %error, "read failed; retrying");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(retry.max);
            }
            result => return Retried { result, attempts },
        }
    }
}

/// A number in [0, 1), different for every caller: concurrent retries must not wake together.
fn jitter() -> f64 {
    // A v4 uuid is 122 random bits from the OS's generator; the low 64 are plenty.
    (uuid::Uuid::new_v4().as_u128() as u64 >> 11) as f64 / (1u64 << 53) as f64
}

/// One changed instance's listing to make.
struct ListRequest {
    instance_id: String,
    listing: Listing,
    /// Patch ids of its findings the store holds open.
    recorded_open: Vec<String>,
}

/// What reading one instance's patches took and gave.
struct Fetched {
    result: Result<Vec<InstancePatch>, AwsError>,
    /// DescribeInstancePatches pages requested, retries included (not the SDK's own).
    calls: usize,
    retries: usize,
    listed_installed: bool,
}

/// Reads one instance's patches as its [`Listing`] says: the open ones, then the installed ones
/// only if a recorded open finding is not among the open ones.
async fn fetch_one(aws: &AwsClients, request: &ListRequest, retry: &ReadRetry) -> Fetched {
    let mut fetched = Fetched { result: Ok(Vec::new()), calls: 0, retries: 0, listed_installed: false };
    let list = |listing: PatchListing| {
        with_retries(retry, "DescribeInstancePatches", move || {
            aws.instance_patches(&request.instance_id, listing)
        })
    };
    let mut patches = match request.listing {
        Listing::Nothing => return fetched,
        Listing::InstalledOnly => Vec::new(),
        Listing::Open => match fetched.count(list(PatchListing::Open).await) {
            Ok(open) => open,
            Err(error) => return Fetched { result: Err(error), ..fetched },
        },
    };
    let still_open: HashSet<&str> = patches.iter().map(|p| p.kb_id.trim()).collect();
    if request.recorded_open.iter().any(|id| !still_open.contains(id.as_str())) {
        fetched.listed_installed = true;
        match fetched.count(list(PatchListing::Installed).await) {
            Ok(installed) => patches.extend(installed),
            Err(error) => return Fetched { result: Err(error), ..fetched },
        }
    }
    Fetched { result: Ok(patches), ..fetched }
}

impl Fetched {
    /// Adds one retried listing's pages and retries to the counts and hands its result on.
    fn count(&mut self, read: Retried<Vec<InstancePatch>>) -> Result<Vec<InstancePatch>, AwsError> {
        let failed_tries = read.attempts - 1;
        self.retries += failed_tries;
        self.calls += failed_tries + read.result.as_ref().map_or(1, |patches| pages(patches.len()));
        read.result
    }
}

/// Pages of 100 a listing of `n` patches took (an empty listing is one page).
fn pages(n: usize) -> usize {
    n.div_ceil(PATCH_PAGE).max(1)
}

/// The patch lists of `requests`, in order, at most `options.fetch_concurrency` instances read
/// at once. A failed read does not stop the others.
async fn fetch_patch_lists(
    aws: &AwsClients,
    requests: Vec<ListRequest>,
    options: &SyncOptions,
) -> Vec<Fetched> {
    let concurrency = options.fetch_concurrency.max(1);
    let mut results: Vec<Option<Fetched>> = requests.iter().map(|_| None).collect();
    let mut tasks = JoinSet::new();
    let mut pending = requests.into_iter().enumerate();
    loop {
        while tasks.len() < concurrency {
            let Some((index, request)) = pending.next() else { break };
            let (aws, retry) = (aws.clone(), options.retry);
            tasks.spawn(async move { (index, fetch_one(&aws, &request, &retry).await) }.in_current_span());
        }
        let Some(joined) = tasks.join_next().await else { break };
        match joined {
            Ok((index, fetched)) => results[index] = Some(fetched),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            // Cancelled: only when this future is dropped, and then nobody reads the results.
            Err(_) => {}
        }
    }
    results
        .into_iter()
        .map(|r| {
            r.unwrap_or(Fetched { result: Ok(Vec::new()), calls: 0, retries: 0, listed_installed: false })
        })
        .collect()
}

/// SSM's patch list as the store takes it. Entries the store cannot hold (an empty id, a state
/// this version does not know) are left out and logged.
fn observe<'a>(instance_id: &str, patches: &'a [InstancePatch]) -> Vec<PatchObservation<'a>> {
    let mut left_out = 0usize;
    let observations = patches
        .iter()
        .filter_map(|patch| {
            let state = patch.state.known();
            let patch_id = patch.kb_id.trim();
            match state {
                Some(state) if !patch_id.is_empty() => Some(PatchObservation {
                    patch_id,
                    title: non_empty(&patch.title),
                    classification: non_empty(&patch.classification),
                    severity: non_empty(&patch.severity),
                    cve_ids: &patch.cve_ids,
                    state,
                    installed_time: patch.installed_at,
                }),
                _ => {
                    left_out += 1;
                    None
                }
            }
        })
        .collect();
    if left_out > 0 {
        tracing::warn!(
            instance = instance_id,
            left_out,
            "patches without an id or with a state patchd does not know were not recorded"
        );
    }
    observations
}

/// Whether an instance's patch list must be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    /// SSM has no completed Scan or Install for it.
    Unreported,
    /// SSM's operation ended no later than the one recorded: the list is the recorded one.
    Unchanged,
    /// A newer operation, ended at this instant.
    Changed(DateTime<Utc>),
}

/// Compares at the store's precision (microseconds), so a value read back from the store
/// equals the one SSM sends again.
fn classify(ssm_end: Option<DateTime<Utc>>, recorded_end: Option<DateTime<Utc>>) -> Change {
    let Some(ended_at) = ssm_end else { return Change::Unreported };
    match recorded_end {
        Some(recorded) if micros(ended_at) <= micros(recorded) => Change::Unchanged,
        _ => Change::Changed(ended_at),
    }
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

fn distinct(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    ids.iter().filter(|id| seen.insert(id.as_str())).cloned().collect()
}

fn non_empty(text: &str) -> Option<&str> {
    Some(text.trim()).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Inventory

/// Records instances as EC2 and SSM saw them at `at`: name, operating system, tags, whether
/// SSM manages them and their agent's ping status. Coverage gaps (EC2 lists them, SSM does
/// not) are recorded too, with their EC2 platform, so reports can show them.
#[instrument(skip_all, fields(instances = targets.len()), err(Display))]
pub async fn record_inventory(ctx: &Context, targets: &[Target], at: DateTime<Utc>) -> Result<(), SyncError> {
    // A transaction per batch, like the sync: a 100,000-instance fleet's inventory is never
    // held as one statement's binds, and other writers wait for a batch, not the fleet.
    for chunk in targets.chunks(INVENTORY_BATCH_INSTANCES) {
        let platforms: Vec<Option<String>> = chunk.iter().map(platform_of).collect();
        let observations: Vec<InstanceObservation<'_>> = chunk
            .iter()
            .zip(&platforms)
            .map(|(target, platform)| {
                let agent = match &target.coverage {
                    Coverage::Managed { agent } | Coverage::ConnectionLost { agent } => Some(agent),
                    Coverage::Unmanaged => None,
                };
                InstanceObservation {
                    instance: ctx.scope.key(&target.instance_id),
                    name: target.name.as_deref(),
                    platform: platform.as_deref(),
                    tags: &target.tags,
                    ssm_managed: agent.is_some(),
                    ping_status: agent.and_then(|a| a.ping.known()),
                }
            })
            .collect();
        ctx.store
            .record_instances(at, &observations)
            .await
            .map_err(|source| SyncError::RecordInventory { instances: targets.len(), source })?;
    }
    tracing::debug!(instances = targets.len(), "inventory recorded");
    Ok(())
}

/// The operating system as SSM's agent names it (`Amazon Linux 2`, `Ubuntu 22.04`,
/// `Microsoft Windows Server 2022 Datacenter`), else EC2's platform details (`Linux/UNIX`).
fn platform_of(target: &Target) -> Option<String> {
    let agent = match &target.coverage {
        Coverage::Managed { agent } | Coverage::ConnectionLost { agent } => Some(agent),
        Coverage::Unmanaged => None,
    };
    agent
        .and_then(|a| {
            let name = a.platform_name.as_deref().and_then(non_empty)?;
            Some(operating_system(name, a.platform_version.as_deref()))
        })
        .or_else(|| target.platform_details.as_deref().and_then(non_empty).map(str::to_string))
}

/// SSM's PlatformName with its PlatformVersion, unless the name already carries a version
/// (Windows names do: `Microsoft Windows Server 2022 Datacenter` with version `10.0.20348`).
fn operating_system(name: &str, version: Option<&str>) -> String {
    let name = name.trim();
    match version.and_then(non_empty) {
        Some(version) if !name.chars().any(|c| c.is_ascii_digit()) => format!("{name} {version}"),
        _ => name.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The latest sync, for metrics

/// The latest compliance sync of this process: what it was (`source`), how long it took, when
/// it ended. Every sync records itself here as it ends, whoever started it, so the metrics
/// read a value rather than anything's wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestSync {
    pub source: String,
    pub duration: std::time::Duration,
    pub ended_at: DateTime<Utc>,
}

/// The process's [`LatestSync`]: a process has one set of metrics, and syncs start from the
/// scheduler, window runs and the manual commands alike.
#[derive(Debug, Default)]
pub struct LatestSyncCell(std::sync::Mutex<Option<LatestSync>>);

impl LatestSyncCell {
    fn record(&self, source: &str, duration: std::time::Duration, ended_at: DateTime<Utc>) {
        let latest = LatestSync { source: source.to_string(), duration, ended_at };
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(latest);
    }

    pub fn get(&self) -> Option<LatestSync> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

pub static LATEST_SYNC: LatestSyncCell = LatestSyncCell(std::sync::Mutex::new(None));

// ---------------------------------------------------------------------------------------------
// Release dates

/// The catalog of `DescribeAvailablePatches` that has release dates for an operating system
/// as [`record_inventory`] records it; None for systems SSM has no dates for (Amazon Linux
/// 2023, RHEL, Ubuntu, ...: their dates come from imported advisories).
pub fn catalog_for_platform(platform: &str) -> Option<PatchCatalog> {
    OperatingSystem::of_platform(platform).and_then(PatchCatalog::for_operating_system)
}

fn catalog_name(catalog: PatchCatalog) -> &'static str {
    match catalog {
        PatchCatalog::Windows => "windows",
        PatchCatalog::AmazonLinux => "amazon-linux",
        PatchCatalog::AmazonLinux2 => "amazon-linux-2",
    }
}

const ALL_CATALOGS: [PatchCatalog; 3] =
    [PatchCatalog::Windows, PatchCatalog::AmazonLinux, PatchCatalog::AmazonLinux2];

/// The catalogs managed instances of these operating systems need, in a fixed order.
fn catalogs_of<'p>(platforms: impl IntoIterator<Item = &'p str>) -> Vec<PatchCatalog> {
    let mut wanted = [false; ALL_CATALOGS.len()];
    for catalog in platforms.into_iter().filter_map(catalog_for_platform) {
        wanted[catalog_index(catalog)] = true;
    }
    ALL_CATALOGS.into_iter().filter(|c| wanted[catalog_index(*c)]).collect()
}

fn catalog_index(catalog: PatchCatalog) -> usize {
    match catalog {
        PatchCatalog::Windows => 0,
        PatchCatalog::AmazonLinux => 1,
        PatchCatalog::AmazonLinux2 => 2,
    }
}

/// SSM's release dates per catalog, shared by every sync of the process (`Arc` it; it is
/// `Send + Sync`). A catalog is read again once `refresh` has passed since its last read;
/// one that failed is tried again after 15 minutes (or `refresh`, if shorter).
pub struct ReleaseDates {
    refresh: chrono::Duration,
    catalogs: Mutex<[CatalogDates; ALL_CATALOGS.len()]>,
    /// The vendor advisories in use (see [`crate::feeds`]): what dates, by package, the
    /// patches a sync finds that no advisory id names.
    advisories: std::sync::Mutex<Option<Arc<patchd_advisories::AdvisoryIndex>>>,
}

#[derive(Debug, Default)]
struct CatalogDates {
    fetched_at: Option<DateTime<Utc>>,
    failed_at: Option<DateTime<Utc>>,
    /// Patch id (the KB id on Windows, the advisory id on Amazon Linux) -> earliest release.
    dates: HashMap<String, DateTime<Utc>>,
}

impl CatalogDates {
    fn is_due(&self, now: DateTime<Utc>, refresh: chrono::Duration) -> bool {
        let retry = refresh.min(chrono::Duration::minutes(FAILED_CATALOG_RETRY_MINUTES));
        if self.failed_at.is_some_and(|failed| now - failed < retry) {
            return false;
        }
        self.fetched_at.is_none_or(|fetched| now - fetched >= refresh)
    }
}

impl fmt::Debug for ReleaseDates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The dates themselves are thousands of entries: not for logs.
        f.debug_struct("ReleaseDates").field("refresh", &self.refresh).finish_non_exhaustive()
    }
}

impl ReleaseDates {
    /// An empty cache whose catalogs are read again after `refresh` (a day in the daemon).
    pub fn new(refresh: chrono::Duration) -> ReleaseDates {
        ReleaseDates { refresh, catalogs: Mutex::new(Default::default()), advisories: Default::default() }
    }

    /// Dates the patches later syncs find by these advisories too.
    pub fn use_advisories(&self, index: Option<Arc<patchd_advisories::AdvisoryIndex>>) {
        *self.advisories.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = index;
    }

    fn advisories(&self) -> Option<Arc<patchd_advisories::AdvisoryIndex>> {
        self.advisories.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Reads the catalogs that the managed instances recorded for `ctx.scope` need (see
    /// [`catalog_for_platform`]; [`record_inventory`] records their platforms) and that are
    /// due at `now`, and writes their dates to the store with the `ssm` source. Returns the
    /// number of patches whose date the store set or changed. While the catalogs are fresh
    /// this costs neither a store read nor an AWS call.
    ///
    /// A catalog that cannot be read is reported (the first such error) after the others
    /// have been read and written.
    #[instrument(skip_all, err(Display))]
    pub async fn refresh_if_stale(&self, ctx: &Context, now: DateTime<Utc>) -> Result<usize, SyncError> {
        {
            let cache = self.catalogs.lock().await;
            if !cache.iter().any(|c| c.is_due(now, self.refresh)) {
                return Ok(0);
            }
        }
        let platforms = ctx
            .store
            .managed_platforms(&ctx.scope.account, &ctx.scope.region)
            .await
            .map_err(SyncError::ReadStore)?;
        let catalogs = catalogs_of(platforms.iter().map(String::as_str));
        self.refresh_catalogs(ctx, &catalogs, now).await
    }

    /// [`ReleaseDates::refresh_if_stale`] for the given catalogs.
    pub async fn refresh_catalogs(
        &self,
        ctx: &Context,
        catalogs: &[PatchCatalog],
        now: DateTime<Utc>,
    ) -> Result<usize, SyncError> {
        // Held across the calls: a second sync waits and then finds the catalogs fresh,
        // rather than reading them again.
        let mut cache = self.catalogs.lock().await;
        let mut fetched: Vec<(PatchCatalog, HashMap<String, DateTime<Utc>>)> = Vec::new();
        let mut first_error = None;
        for &catalog in catalogs {
            let entry = &mut cache[catalog_index(catalog)];
            if !entry.is_due(now, self.refresh) || fetched.iter().any(|(c, _)| *c == catalog) {
                continue;
            }
            match ctx.aws.available_patches(catalog, &[]).await {
                Ok(patches) => fetched.push((catalog, earliest_release_dates(&patches))),
                Err(source) => {
                    entry.failed_at = Some(now);
                    let error = SyncError::AvailablePatches { catalog: catalog_name(catalog), source };
                    tracing::warn!(error = %error, "patch catalog not read");
                    first_error.get_or_insert(error);
                }
            }
        }

        let mut written = 0;
        if !fetched.is_empty() {
            let rows: Vec<(&str, DateTime<Utc>, ReleaseSource)> = fetched
                .iter()
                .flat_map(|(_, dates)| dates.iter().map(|(id, at)| (id.as_str(), *at, ReleaseSource::Ssm)))
                .collect();
            if !rows.is_empty() {
                // Only once the store has the dates is a catalog fresh: a failed write is
                // tried again on the next call.
                written = ctx.store.set_release_dates(&rows).await.map_err(SyncError::RecordReleaseDates)?;
            }
            for (catalog, dates) in fetched {
                tracing::info!(
                    catalog = catalog_name(catalog),
                    patches = dates.len(),
                    "ssm release dates read"
                );
                let entry = &mut cache[catalog_index(catalog)];
                *entry = CatalogDates { fetched_at: Some(now), failed_at: None, dates };
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(written),
        }
    }

    /// SSM's release date of a patch, from the catalogs read so far.
    pub async fn release_date(&self, patch_id: &str) -> Option<DateTime<Utc>> {
        let cache = self.catalogs.lock().await;
        cache.iter().find_map(|c| c.dates.get(patch_id).copied())
    }

    /// When a catalog was last read successfully.
    pub async fn fetched_at(&self, catalog: PatchCatalog) -> Option<DateTime<Utc>> {
        self.catalogs.lock().await[catalog_index(catalog)].fetched_at
    }
}

/// Release dates by the id DescribeInstancePatches reports (`KBId`): the KB number on Windows,
/// the advisory id on Amazon Linux. A patch listed more than once (one entry per package of
/// an advisory) keeps its earliest date.
fn earliest_release_dates(patches: &[patchd_aws::AvailablePatch]) -> HashMap<String, DateTime<Utc>> {
    let mut dates: HashMap<String, DateTime<Utc>> = HashMap::with_capacity(patches.len());
    for patch in patches {
        let Some(released) = patch.release_date else { continue };
        let id = patch.kb_number.as_deref().unwrap_or(&patch.id);
        dates.entry(id.to_string()).and_modify(|at| *at = (*at).min(released)).or_insert(released);
    }
    dates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("valid instant").to_utc()
    }

    #[test]
    fn only_newer_operations_are_read_again() {
        let t = at("2026-11-28T10:00:00.123456Z");
        let noise = t + chrono::Duration::nanoseconds(789);
        for (ssm, recorded, expected) in [
            (None, None, Change::Unreported),
            (None, Some(t), Change::Unreported),
            (Some(t), None, Change::Changed(t)),
            (Some(t), Some(t), Change::Unchanged),
            // The store keeps microseconds; SSM's value parsed again may carry more.
            (Some(noise), Some(t), Change::Unchanged),
            (Some(t), Some(t + chrono::Duration::seconds(1)), Change::Unchanged),
            (
                Some(t + chrono::Duration::microseconds(1)),
                Some(t),
                Change::Changed(t + chrono::Duration::microseconds(1)),
            ),
        ] {
            assert_eq!(classify(ssm, recorded), expected, "{ssm:?} vs {recorded:?}");
        }
    }

    #[test]
    fn operating_systems_are_named_as_ssm_names_them() {
        for (name, version, expected) in [
            ("Amazon Linux", Some("2"), "Amazon Linux 2"),
            ("Amazon Linux", Some("2023"), "Amazon Linux 2023"),
            ("Amazon Linux AMI", Some("2018.03"), "Amazon Linux AMI 2018.03"),
            ("Ubuntu", Some("22.04"), "Ubuntu 22.04"),
            (
                "Microsoft Windows Server 2022 Datacenter",
                Some("10.0.20348"),
                "Microsoft Windows Server 2022 Datacenter",
            ),
            ("Red Hat Enterprise Linux", None, "Red Hat Enterprise Linux"),
            ("Red Hat Enterprise Linux", Some(" "), "Red Hat Enterprise Linux"),
        ] {
            assert_eq!(operating_system(name, version), expected);
        }
    }

    #[test]
    fn only_windows_and_amazon_linux_1_and_2_have_ssm_catalogs() {
        for (platform, expected) in [
            ("Amazon Linux 2", Some(PatchCatalog::AmazonLinux2)),
            ("Amazon Linux AMI 2018.03", Some(PatchCatalog::AmazonLinux)),
            ("Amazon Linux 2023", None),
            ("Amazon Linux 2022", None),
            ("Microsoft Windows Server 2022 Datacenter", Some(PatchCatalog::Windows)),
            ("Windows", Some(PatchCatalog::Windows)),
            ("Ubuntu 22.04", None),
            ("Red Hat Enterprise Linux 9.4", None),
            ("Linux/UNIX", None),
        ] {
            assert_eq!(catalog_for_platform(platform), expected, "{platform}");
        }
    }

    #[test]
    fn catalogs_are_due_daily_and_failures_wait_a_while() {
        let day = chrono::Duration::days(1);
        let t = at("2026-11-28T00:00:00Z");
        assert!(CatalogDates::default().is_due(t, day));
        let fresh = CatalogDates { fetched_at: Some(t), ..CatalogDates::default() };
        assert!(!fresh.is_due(t + chrono::Duration::hours(23), day));
        assert!(fresh.is_due(t + day, day));
        let failed = CatalogDates { failed_at: Some(t), ..CatalogDates::default() };
        assert!(!failed.is_due(t + chrono::Duration::minutes(14), day));
        assert!(failed.is_due(t + chrono::Duration::minutes(15), day));
        assert!(failed.is_due(t + chrono::Duration::minutes(1), chrono::Duration::minutes(1)));
    }

    #[test]
    fn repeated_catalog_entries_keep_their_earliest_date() {
        let entry = |id: &str, kb: Option<&str>, released: Option<&str>| patchd_aws::AvailablePatch {
            id: id.into(),
            kb_number: kb.map(str::to_string),
            title: None,
            release_date: released.map(at),
            classification: None,
            severity: None,
            msrc_severity: None,
            cve_ids: Vec::new(),
            advisory_ids: Vec::new(),
            product: None,
            product_family: None,
            package: None,
        };
        let dates = earliest_release_dates(&[
            entry("ALAS2-2026-1", None, Some("2026-03-02T00:00:00Z")),
            entry("ALAS2-2026-1", None, Some("2026-03-01T00:00:00Z")),
            entry("ALAS2-2026-1", None, Some("2026-03-03T00:00:00Z")),
            entry("8f1c0000-guid", Some("KB5031234"), Some("2026-04-01T00:00:00Z")),
            entry("ALAS2-2026-2", None, None),
        ]);
        assert_eq!(dates.len(), 2, "{dates:?}");
        assert_eq!(dates["ALAS2-2026-1"], at("2026-03-01T00:00:00Z"));
        assert_eq!(dates["KB5031234"], at("2026-04-01T00:00:00Z"));
    }
}
