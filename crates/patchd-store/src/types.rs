//! What goes in (borrowed observations) and what comes out (owned records).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Timelike, Utc};
use patchd_config::Operation;
pub use patchd_model::{CommandStatus, PatchState, PingStatus, StateCounts};

/// How [`Store::open`](crate::Store::open) connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Apply pending migrations before returning. When false, a database that is not exactly
    /// at this build's schema version is refused (`OutdatedSchema` or `NewerSchema`).
    pub migrate: bool,
    /// Create the SQLite file when it does not exist (PostgreSQL databases are never created).
    /// When false, a missing file is a `Connect` error: what a command that only reads wants,
    /// so that a mistyped path is an error rather than a new, empty database.
    pub create: bool,
    /// Pool size. SQLite serialises writers anyway; more connections serve concurrent readers.
    /// An in-memory SQLite database always uses one connection (each connection would
    /// otherwise see a database of its own).
    pub max_connections: u32,
    /// How long a writer waits for another writer's lock before failing with `Busy` (SQLite).
    pub busy_timeout: Duration,
    /// How long an operation waits for a free connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            migrate: true,
            create: true,
            max_connections: 8,
            busy_timeout: Duration::from_secs(30),
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// The database behind a [`Store`](crate::Store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        })
    }
}

/// The schema version of the database and the one this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The highest applied migration; None for an empty database.
    pub database: Option<i64>,
    /// The highest migration embedded in this build.
    pub supported: i64,
}

/// What [`Store::migrate`](crate::Store::migrate) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied by this call, in order; empty when the schema was already current.
    pub applied: Vec<i64>,
    /// The schema version now.
    pub version: i64,
}

/// Counters of the work the store did since it was opened, for metrics and for tests that
/// check batching.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Write transactions committed.
    pub transactions: u64,
    /// SQL statements sent to the database (round trips), reads included.
    pub statements: u64,
}

patchd_model::spelled_enum! {
    /// Where a patch's release date came from.
    pub ReleaseSource {
        /// SSM's DescribeAvailablePatches (Amazon Linux 1 and 2, Windows Server).
        Ssm = "ssm",
        /// A vendor advisory (ALAS, RHSA, USN, DSA, updateinfo.xml) or an operator's file.
        /// Wins over SSM's date in the SLA clock.
        Advisory = "advisory",
    }
}

patchd_model::spelled_enum! {
    /// What became of one occurrence of a maintenance window.
    pub WindowRunStatus {
        /// Recorded ahead of its start.
        Scheduled = "scheduled",
        Running = "running",
        Succeeded = "succeeded",
        /// At least one task failed.
        Failed = "failed",
        Cancelled = "cancelled",
        /// Never started (patchd was down, or the cutoff passed before it could start).
        Missed = "missed",
        /// Started later than scheduled (after a restart, for example); the tasks carry the
        /// outcome. Lateness is also visible as `started_at - scheduled_start`.
        Late = "late",
        /// Every command finished and none failed, but the compliance sync after them could not
        /// read some instances' results (`sync_unread` of them): not a success until a later
        /// sync reads them. The daemon retries them within minutes.
        Incomplete = "incomplete",
    }
}

patchd_model::spelled_enum! {
    /// How far a batch got.
    pub BatchState {
        /// Not sent, and no attempt recorded.
        Planned = "planned",
        /// The intent to send is recorded; SendCommand may or may not have reached SSM.
        Sending = "sending",
        /// SSM created the command (`command_id`).
        Sent = "sent",
        /// SSM refused the batch (`error`); nothing was created.
        Rejected = "rejected",
    }
}

pub(crate) fn parse_operation(text: &str) -> Option<Operation> {
    match text {
        "Scan" => Some(Operation::Scan),
        "Install" => Some(Operation::Install),
        _ => None,
    }
}

/// Timestamps are stored with microsecond precision (PostgreSQL's), on both backends, so that
/// a value read back compares equal to the one written and re-syncs stay idempotent.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// An instance's identity: SSM and EC2 ids are unique per account and region only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceKey<'a> {
    pub account: &'a str,
    pub region: &'a str,
    pub instance_id: &'a str,
}

/// An instance as inventory (EC2 DescribeInstances, SSM DescribeInstanceInformation) shows it.
#[derive(Debug, Clone, Copy)]
pub struct InstanceObservation<'a> {
    pub instance: InstanceKey<'a>,
    pub name: Option<&'a str>,
    /// The operating system as SSM names it (`Amazon Linux 2`, `Microsoft Windows Server 2022`).
    pub platform: Option<&'a str>,
    pub tags: &'a BTreeMap<String, String>,
    /// Whether SSM manages the instance (it appears in DescribeInstanceInformation).
    pub ssm_managed: bool,
    pub ping_status: Option<PingStatus>,
}

/// One compliance sync: the scan results of some instances, recorded atomically.
#[derive(Debug, Clone, Copy)]
pub struct ComplianceSync<'a> {
    /// What produced it, for the sync log: `compliance-poll`, `window:prod-web`, ...
    pub source: &'a str,
    /// When patchd started reading SSM for this sync.
    pub started_at: DateTime<Utc>,
    pub scans: &'a [InstanceScan<'a>],
}

/// The latest scan result of one instance: DescribeInstancePatchStates and the complete
/// DescribeInstancePatches list.
#[derive(Debug, Clone, Copy)]
pub struct InstanceScan<'a> {
    pub instance: InstanceKey<'a>,
    /// The instant the patch list describes (SSM's `OperationEndTime` is the natural choice:
    /// unchanged, it means the list is unchanged). Scans older than the instance's latest
    /// recorded scan are ignored.
    pub observed_at: DateTime<Utc>,
    /// The SSM command that produced the scan, when patchd knows it.
    pub command_id: Option<&'a str>,
    pub operation: Option<Operation>,
    pub operation_start: Option<DateTime<Utc>>,
    pub operation_end: Option<DateTime<Utc>>,
    pub baseline_id: Option<&'a str>,
    pub snapshot_id: Option<&'a str>,
    pub patch_group: Option<&'a str>,
    /// The patches SSM lists for the instance: every one, or (what patchd's sync reads) the
    /// open ones plus, where a recorded open finding is no longer among them, the installed
    /// ones. A recorded finding whose patch is not listed is left as it was.
    pub patches: &'a [PatchObservation<'a>],
    /// SSM's counts by state for this scan (DescribeInstancePatchStates), recorded as the
    /// instance's summary. None counts `patches`, which is right only when they are all listed.
    pub counts: Option<StateCounts>,
}

impl<'a> InstanceScan<'a> {
    /// A Scan that ended at `at` listing every patch in `patches`, with nothing else known:
    /// set the fields a caller knows on top of it.
    pub fn scan_at(
        instance: InstanceKey<'a>,
        at: DateTime<Utc>,
        patches: &'a [PatchObservation<'a>],
    ) -> Self {
        InstanceScan {
            instance,
            observed_at: at,
            command_id: None,
            operation: Some(Operation::Scan),
            operation_start: Some(at),
            operation_end: Some(at),
            baseline_id: None,
            snapshot_id: None,
            patch_group: None,
            patches,
            counts: None,
        }
    }
}

/// One `PatchComplianceData` entry.
#[derive(Debug, Clone, Copy)]
pub struct PatchObservation<'a> {
    /// SSM's `KBId`.
    pub patch_id: &'a str,
    pub title: Option<&'a str>,
    pub classification: Option<&'a str>,
    /// The vendor's severity.
    pub severity: Option<&'a str>,
    /// SSM fills `CVEIds` for missing and failed patches only; an empty list never erases
    /// CVEs already known.
    pub cve_ids: &'a [String],
    pub state: PatchState,
    pub installed_time: Option<DateTime<Utc>>,
}

/// What a compliance sync changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub sync_id: SyncId,
    /// Instances whose scan was recorded.
    pub instances: usize,
    /// Instances whose scan was older than the one already recorded, and was ignored.
    pub stale_instances: usize,
    /// Findings opened (patches seen missing on an instance for the first time).
    pub opened: usize,
    /// State changes recorded, openings included.
    pub transitions: usize,
    /// Open findings that became installed.
    pub remediated: usize,
    /// Remediated findings that became open again.
    pub reopened: usize,
}

/// An action patchd took, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct AuditEntry<'a> {
    pub at: DateTime<Utc>,
    /// Who: `daemon`, `cli:alice`, `api:<token name>`.
    pub actor: &'a str,
    /// What: `send-command`, `cancel-command`, `update-baseline`, ...
    pub action: &'a str,
    /// What it was done to: a window, a baseline, instance ids.
    pub target: Option<&'a str>,
    pub command_id: Option<&'a str>,
    /// The AWS request id of the call, to find it in CloudTrail.
    pub request_id: Option<&'a str>,
    pub details: Option<&'a serde_json::Value>,
}

/// A window occurrence to record, in one account and region: with several scopes, one
/// occurrence of a window is one run per scope.
#[derive(Debug, Clone, Copy)]
pub struct NewWindowRun<'a> {
    pub window: &'a str,
    pub scheduled_start: DateTime<Utc>,
    pub account: &'a str,
    pub region: &'a str,
    pub started_at: Option<DateTime<Utc>>,
    pub status: WindowRunStatus,
}

/// A change of a window run's state. Times left None keep their recorded value.
#[derive(Debug, Clone, Copy)]
pub struct WindowRunUpdate {
    pub status: WindowRunStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    /// Instances the run's compliance sync could not read; None keeps the recorded count.
    pub sync_unread: Option<u32>,
}

/// A task of a window run: one SSM command. Recorded again as it progresses; values left
/// None keep their recorded value.
#[derive(Debug, Clone, Copy)]
pub struct WindowTaskObservation<'a> {
    pub name: &'a str,
    pub operation: Operation,
    pub command_id: Option<&'a str>,
    pub status: CommandStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// One instance's invocation of a task's command (ListCommandInvocations).
#[derive(Debug, Clone, Copy)]
pub struct InvocationObservation<'a> {
    pub instance: InstanceKey<'a>,
    pub command_id: &'a str,
    pub status: CommandStatus,
    /// SSM's free-text `StatusDetails` (`Undeliverable`, `Delivery Timed Out`, ...).
    pub status_details: Option<&'a str>,
    pub requested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------------
// Ids

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub(crate) i64);

        impl $name {
            /// The database id, for display and for URLs of the HTTP API.
            pub fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        /// An id from outside (an HTTP API path, a CLI argument). Operations given an id that
        /// names nothing fail with `NotFound`.
        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                $name(id)
            }
        }
    };
}

id_type!(
    /// A committed compliance sync.
    SyncId
);
id_type!(
    /// An audit log entry; ids grow in append order.
    AuditId
);
id_type!(
    /// A window run.
    WindowRunId
);
id_type!(
    /// A task of a window run.
    WindowTaskId
);
id_type!(
    /// A snapshot of the configured exceptions.
    ExceptionSnapshotId
);

// ---------------------------------------------------------------------------------------------
// Records

/// An instance's identity and descriptive facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl InstanceInfo {
    pub fn key(&self) -> InstanceKey<'_> {
        InstanceKey { account: &self.account, region: &self.region, instance_id: &self.instance_id }
    }
}

/// An instance with its coverage facts and latest compliance summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRecord {
    pub instance: InstanceInfo,
    pub ssm_managed: bool,
    pub ping_status: Option<PingStatus>,
    /// First and latest inventory observation (or compliance sync, for an instance only a
    /// sync has reported).
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// None until a compliance sync has recorded a scan of the instance.
    pub compliance: Option<ComplianceSummary>,
}

/// An instance's latest recorded scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComplianceSummary {
    /// The scan's `observed_at`: the instance's last scan time.
    pub scanned_at: DateTime<Utc>,
    pub sync_id: SyncId,
    pub command_id: Option<String>,
    pub operation: Option<Operation>,
    pub operation_start: Option<DateTime<Utc>>,
    pub operation_end: Option<DateTime<Utc>>,
    pub baseline_id: Option<String>,
    pub snapshot_id: Option<String>,
    pub patch_group: Option<String>,
    pub counts: StateCounts,
}

/// A patch and what is known of its release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchRecord {
    pub patch_id: String,
    pub title: Option<String>,
    pub classification: Option<String>,
    pub severity: Option<String>,
    pub cve_ids: Vec<String>,
    pub ssm_release: Option<DateTime<Utc>>,
    pub advisory_release: Option<DateTime<Utc>>,
    /// The feed or import whose advisory gave `advisory_release` (`amazon-linux-2023`,
    /// `import:dates.csv`); None for dates written before feeds were recorded.
    pub advisory_source: Option<String>,
    /// The earliest time any instance was seen missing it; None for a patch known only from
    /// an advisory import.
    pub first_seen_missing: Option<DateTime<Utc>>,
}

impl PatchRecord {
    /// The release date the SLA clock uses, and its source: an advisory's date wins over SSM's.
    /// None: the clock falls back to `first_seen_missing` (an estimate).
    pub fn release(&self) -> Option<(DateTime<Utc>, ReleaseSource)> {
        match (self.advisory_release, self.ssm_release) {
            (Some(at), _) => Some((at, ReleaseSource::Advisory)),
            (None, Some(at)) => Some((at, ReleaseSource::Ssm)),
            (None, None) => None,
        }
    }
}

/// Where a patch's SLA clock starts, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReleaseOrigin {
    /// A vendor advisory; the feed or import that gave it, when recorded.
    Advisory(Option<String>),
    Ssm,
    /// No release date known: the first time the patch was seen missing (an estimate).
    FirstSeen,
}

impl ReleaseOrigin {
    pub(crate) fn parse(clock: &str, advisory_source: Option<String>) -> Option<ReleaseOrigin> {
        match clock {
            "advisory" => Some(ReleaseOrigin::Advisory(advisory_source)),
            "ssm" => Some(ReleaseOrigin::Ssm),
            "first-seen" => Some(ReleaseOrigin::FirstSeen),
            _ => None,
        }
    }

    /// `advisory: amazon-linux-2023`, `advisory`, `ssm` or `first-seen`.
    pub fn label(&self) -> String {
        match self {
            ReleaseOrigin::Advisory(Some(source)) => format!("advisory: {source}"),
            ReleaseOrigin::Advisory(None) => "advisory".into(),
            ReleaseOrigin::Ssm => "ssm".into(),
            ReleaseOrigin::FirstSeen => "first-seen".into(),
        }
    }

    pub fn estimated(&self) -> bool {
        *self == ReleaseOrigin::FirstSeen
    }
}

/// Open findings of one platform whose clocks come from one origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockCount {
    /// The instance's operating system as recorded (`Ubuntu 22.04`); None when unknown.
    pub platform: Option<String>,
    pub source: ReleaseOrigin,
    pub open: u64,
}

/// Open (still exposed) or remediated (installed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingStatus {
    Open,
    Remediated,
}

/// A finding with everything a report shows about it. Instances and patches are shared
/// between the findings of one page, so a page of many findings costs little memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRecord {
    pub instance: Arc<InstanceInfo>,
    pub patch: Arc<PatchRecord>,
    /// Never `NOT_APPLICABLE`.
    pub state: PatchState,
    /// When this instance was first seen missing the patch.
    pub first_seen_missing: DateTime<Utc>,
    /// When the patch was first seen missing anywhere in the fleet: the SLA clock when no
    /// release date is known.
    pub fleet_first_seen_missing: DateTime<Utc>,
    /// The latest scan that listed the patch on this instance.
    pub last_seen: DateTime<Utc>,
    /// Set when remediated.
    pub installed_at: Option<DateTime<Utc>>,
    pub(crate) cursor: FindingCursor,
}

impl FindingRecord {
    pub fn status(&self) -> FindingStatus {
        if self.installed_at.is_some() {
            FindingStatus::Remediated
        } else {
            FindingStatus::Open
        }
    }

    /// The position of this finding, to continue a listing after it.
    pub fn cursor(&self) -> FindingCursor {
        self.cursor
    }
}

/// A position in a finding listing. Only meaningful for a query of the same shape (the same
/// status and remediation-period filters) as the one that produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FindingCursor {
    pub(crate) installed_at: Option<DateTime<Utc>>,
    pub(crate) instance_ref: i64,
    pub(crate) patch_ref: i64,
}

/// Which findings to list. The default lists every finding, open and remediated.
///
/// Listings are ordered by instance then patch; a query restricted to remediated findings (by
/// `status` or by a remediation period) is ordered by `installed_at` first, so a period is read
/// through its index.
#[derive(Debug, Clone, Copy, Default)]
pub struct FindingQuery<'a> {
    pub status: Option<FindingStatus>,
    /// Remediated at or after this instant (implies remediated).
    pub remediated_since: Option<DateTime<Utc>>,
    /// Remediated before this instant (implies remediated).
    pub remediated_until: Option<DateTime<Utc>>,
    pub instance: Option<InstanceKey<'a>>,
    pub patch_id: Option<&'a str>,
    /// Continue after this finding (the `next` of the previous page).
    pub after: Option<FindingCursor>,
    /// At most this many findings (at least one); None for all of them.
    pub limit: Option<u32>,
}

impl FindingQuery<'_> {
    pub(crate) fn remediated_order(&self) -> bool {
        self.status == Some(FindingStatus::Remediated)
            || self.remediated_since.is_some()
            || self.remediated_until.is_some()
    }
}

/// Which open findings to count or list; the default selects all of them.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenFindingFilter<'a> {
    /// Only findings of these patches (SSM's `KBId`).
    pub patch_ids: Option<&'a [String]>,
    /// Only findings on these instances.
    pub instances: Option<&'a [InstanceKey<'a>]>,
}

/// How many open findings a patch has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchOpenCount {
    pub patch: Arc<PatchRecord>,
    pub open: u64,
}

/// One page of a finding listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingPage {
    pub findings: Vec<FindingRecord>,
    /// Where the next page starts; None when this page is the last.
    pub next: Option<FindingCursor>,
}

/// A state change of a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRecord {
    /// None for the first sighting, which opened the finding.
    pub from: Option<PatchState>,
    pub to: PatchState,
    pub at: DateTime<Utc>,
    pub sync_id: SyncId,
    pub command_id: Option<String>,
}

/// An audit log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub id: AuditId,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub command_id: Option<String>,
    pub request_id: Option<String>,
    pub details: Option<serde_json::Value>,
}

/// Which window runs to list: by window, account and region, and by scheduled start in
/// `[since, until)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowRunQuery<'a> {
    pub window: Option<&'a str>,
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The most recent this many; None for all.
    pub limit: Option<u32>,
}

/// A window run with its tasks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRunRecord {
    pub id: WindowRunId,
    pub window: String,
    pub scheduled_start: DateTime<Utc>,
    pub account: String,
    pub region: String,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub status: WindowRunStatus,
    /// Instances whose results the run's compliance sync could not read.
    pub sync_unread: u32,
    pub tasks: Vec<WindowTaskRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowTaskRecord {
    pub id: WindowTaskId,
    pub name: String,
    pub operation: Operation,
    pub command_id: Option<String>,
    pub status: CommandStatus,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationRecord {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub command_id: String,
    pub status: CommandStatus,
    pub status_details: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

/// What [`Store::record_exceptions`](crate::Store::record_exceptions) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExceptionSnapshot {
    pub id: ExceptionSnapshotId,
    pub taken_at: DateTime<Utc>,
    /// False when the configured exceptions equal the latest snapshot's, which is returned.
    pub created: bool,
}

/// A recorded risk acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExceptionRecord {
    pub name: String,
    pub patches: Vec<String>,
    pub scope: RecordedScope,
    pub reason: String,
    pub owner: String,
    /// Last day (inclusive, UTC) the acceptance holds.
    pub expires: NaiveDate,
    /// Where it was configured: `file:line:column`.
    pub origin: String,
    pub snapshot: ExceptionSnapshotId,
    pub snapshot_taken_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordedScope {
    Instances(Vec<String>),
    Group(String),
}
