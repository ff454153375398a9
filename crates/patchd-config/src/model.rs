//! The validated configuration. Nothing here holds a string that still needs parsing:
//! schedules, durations, tag selectors and enums are typed at load time.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use patchd_model::OperatingSystem;
use patchd_schedule::Schedule;

use crate::diagnostic::{Located, Origin};

/// The merged configuration of one file or a directory of files.
#[derive(Debug, Clone)]
pub struct Config {
    pub daemon: Daemon,
    pub aws: Aws,
    pub sla: SlaPolicy,
    pub exceptions: Vec<Exception>,
    pub baselines: Vec<Baseline>,
    pub groups: Vec<Group>,
    pub windows: Vec<Window>,
    /// `[events]`: where patchd publishes its events; nothing when not written.
    pub events: Events,
    /// `[[advisories.source]]`: vendor advisory feeds that date the patches SSM gives no
    /// release date for.
    pub advisory_sources: Vec<AdvisorySource>,
    /// The files the configuration was read from, in merge order.
    pub sources: Vec<PathBuf>,
}

impl Config {
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    pub fn baseline(&self, name: &str) -> Option<&Baseline> {
        self.baselines.iter().find(|b| b.name == name)
    }

    pub fn window(&self, name: &str) -> Option<&Window> {
        self.windows.iter().find(|w| w.name == name)
    }

    pub fn advisory_source(&self, name: &str) -> Option<&AdvisorySource> {
        self.advisory_sources.iter().find(|s| s.name == name)
    }

    /// Whether anything gives the patches of `operating_system` (SSM's enum) their vendor
    /// release dates: SSM's own catalogs, or an `[[advisories.source]]`. Without one their SLA
    /// clocks start at first sighting, which understates the age of every older patch.
    pub fn dates_releases_of(&self, operating_system: OperatingSystem) -> bool {
        operating_system.dated_by_ssm()
            || self.advisory_sources.iter().any(|s| s.platforms.contains(&operating_system))
    }

    /// The KEV catalog file every surface reads: the configured file, or for a URL the last
    /// good copy the daemon (or `patchd advisories sync`) keeps in `state_dir`.
    pub fn kev_file(&self) -> Option<PathBuf> {
        match self.sla.kev_catalog.as_ref()? {
            FeedLocation::File(path) => Some(path.clone()),
            FeedLocation::Http(_) => Some(self.feed_cache_dir().join(format!("{KEV_SOURCE}.body"))),
        }
    }

    /// Where the last good copy of every fetched feed is kept, so that a failed fetch or a
    /// restart keeps the data of the last success.
    pub fn feed_cache_dir(&self) -> PathBuf {
        self.daemon.state_dir.join("feeds")
    }

    /// Baselines whose patch groups a group's `Patch Group`/`PatchGroup` tag selector reaches.
    pub fn baselines_for_group<'a>(&'a self, group: &'a Group) -> impl Iterator<Item = &'a Baseline> + 'a {
        let values = group.patch_group_values();
        self.baselines.iter().filter(move |b| b.patch_groups.iter().any(|pg| values.contains(&pg.as_str())))
    }
}

/// A database URL whose password never reaches a log line through `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn redacted(&self) -> String {
        // scheme://user:password@host -> scheme://user:***@host
        let url = &self.0;
        let Some(scheme_end) = url.find("://") else { return url.clone() };
        let rest = &url[scheme_end + 3..];
        match (rest.find('@'), rest.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                format!("{}{}:***{}", &url[..scheme_end + 3], &rest[..colon], &rest[at..])
            }
            _ => url.clone(),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

#[derive(Debug, Clone)]
pub struct Daemon {
    pub database_url: DatabaseUrl,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    /// How often the daemon syncs the compliance of every managed instance of the configured
    /// groups, besides the sync after each Scan and Install task.
    pub sync_interval: std::time::Duration,
    /// How soon the daemon syncs again the instances a sync could not read (the sync backlog).
    pub sync_retry_interval: std::time::Duration,
    /// Whether `patchd apply` deletes baselines patchd manages in SSM that the configuration
    /// no longer has. Off by default: they are only reported.
    pub prune_baselines: bool,
    /// The file holding the bearer token the HTTP endpoint requires on every path but
    /// `/healthz`. Required when `listen` is not a loopback address; read by the daemon at
    /// start-up, never by the loader.
    pub api_token_file: Option<PathBuf>,
    /// Serve the HTTP endpoint over TLS with this certificate chain and key (PEM); None:
    /// plain HTTP. Read by the daemon at start-up and again at each reload, never by the
    /// loader.
    pub tls: Option<TlsFiles>,
    /// `lease_ttl` and `lease_renew_interval`: leadership among daemons sharing a database.
    pub lease: LeaseTiming,
}

/// How long a leader's lease lasts without renewal, and how often it is renewed (and how often
/// a standby bids). A standby takes over at most `ttl + renew_every` after a leader died; a
/// leader that cannot renew for `ttl` stops releasing batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    pub ttl: std::time::Duration,
    pub renew_every: std::time::Duration,
}

impl Default for LeaseTiming {
    /// 15 s, renewed every 5 s: two renewals may fail before the lease is lost.
    fn default() -> LeaseTiming {
        LeaseTiming {
            ttl: std::time::Duration::from_secs(15),
            renew_every: std::time::Duration::from_secs(5),
        }
    }
}

/// The `lease_ttl` accepted: long enough for a database round trip under load, short enough
/// that a failover does not outlast a window's grace.
pub const LEASE_TTL_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(2)..=std::time::Duration::from_secs(300);

/// `[daemon] tls_cert_file` and `tls_key_file`, which go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9487";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/patchd";
/// `[daemon] sync_retry_interval` when not written: what throttling kept a sync from reading is
/// read again within minutes, not at the next `sync_interval`.
pub const DEFAULT_SYNC_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(120);
/// The shortest and longest `sync_retry_interval` accepted.
pub const SYNC_RETRY_INTERVAL_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(5)..=std::time::Duration::from_secs(3600);
/// `[daemon] sync_interval` when not written: four syncs a day.
pub const DEFAULT_SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// The shortest and longest `sync_interval` accepted: SSM's compliance calls are paged per
/// instance, so a fleet synced every few seconds would be throttled; a week is the longest gap
/// that still keeps `stale_scan_hours` meaningful.
pub const SYNC_INTERVAL_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(7 * 86_400);

/// `[events]`: patchd's events (window runs, task failures, SLA transitions, coverage gaps),
/// published to an EventBridge bus, a signed webhook, both, or nowhere (the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    /// An EventBridge bus name or ARN; None: nothing goes to EventBridge.
    pub bus_name: Option<String>,
    /// A webhook that receives the same events, one POST each, signed with
    /// `X-Patchd-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    pub webhook_url: Option<String>,
    /// The file holding the webhook's HMAC key (read by the daemon, never by the loader).
    /// Required with `webhook_url`.
    pub webhook_secret_file: Option<PathBuf>,
    /// Whether `SLA Due Soon` events are published (`SLA Breached` always is). Default on.
    pub due_soon: bool,
}

impl Default for Events {
    /// No sink: publishing is off.
    fn default() -> Events {
        Events { bus_name: None, webhook_url: None, webhook_secret_file: None, due_soon: true }
    }
}

impl Events {
    /// Whether any sink is configured.
    pub fn enabled(&self) -> bool {
        self.bus_name.is_some() || self.webhook_url.is_some()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    Standard,
    Adaptive,
}

/// `[aws] name` when not written: the label of the account the default credential chain reaches.
pub const DEFAULT_HOME_ACCOUNT: &str = "home";

#[derive(Debug, Clone)]
pub struct Aws {
    /// None: the SDK finds it (AWS_REGION, the profile). Also the region of EventBridge and
    /// the home account's only region when `regions` is empty.
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    /// Total attempts per call, retries included; the SDK's retry layer owns all retrying.
    pub max_attempts: u32,
    pub retry_mode: RetryMode,
    /// The label of the home account: the one whose credentials come from the default chain,
    /// with no role assumed. Scopes and stored rows name it like any other account.
    pub name: String,
    /// The home account's regions; empty: the home region only (`region`, else the SDK's).
    pub regions: Vec<String>,
    /// Further accounts, reached by assuming a role; names differ from `name` and each other.
    pub accounts: Vec<Account>,
}

impl Default for Aws {
    /// `[aws]` not written: the home account in the SDK's region, no other account.
    fn default() -> Aws {
        Aws {
            region: None,
            endpoint_url: None,
            profile: None,
            max_attempts: 3,
            retry_mode: RetryMode::Standard,
            name: DEFAULT_HOME_ACCOUNT.to_string(),
            regions: Vec::new(),
            accounts: Vec::new(),
        }
    }
}

impl Aws {
    /// The home account's regions as far as the configuration says; None when they depend on
    /// the SDK's region, which is only known at run time.
    pub fn configured_home_regions(&self) -> Option<&[String]> {
        if !self.regions.is_empty() {
            Some(&self.regions)
        } else {
            self.region.as_ref().map(std::slice::from_ref)
        }
    }

    /// The configured name of the account with this 12-digit id, as recorded in the store: an
    /// `[[aws.account]]` whose role lives in that account, else the home account (whose id the
    /// configuration does not hold: it comes from the credentials at run time).
    pub fn account_name_of(&self, account_id: &str) -> &str {
        self.accounts
            .iter()
            .find(|a| a.account_id() == Some(account_id))
            .map_or(self.name.as_str(), |a| a.name.as_str())
    }

    /// Every account patchd works in, the home account first, with defaults resolved: the
    /// home account's regions are `regions`, else `region`, else `home_region` (the region
    /// the SDK resolved at run time); an account without `regions` gets the home account's.
    pub fn scope_accounts(&self, home_region: &str) -> Vec<ScopedAccount> {
        let home_regions = match self.configured_home_regions() {
            Some(regions) => regions.to_vec(),
            None => vec![home_region.to_string()],
        };
        let home = ScopedAccount {
            name: self.name.clone(),
            role_arn: None,
            external_id: None,
            regions: home_regions.clone(),
        };
        let others = self.accounts.iter().map(|a| ScopedAccount {
            name: a.name.clone(),
            role_arn: Some(a.role_arn.clone()),
            external_id: a.external_id.clone(),
            regions: if a.regions.is_empty() { home_regions.clone() } else { a.regions.clone() },
        });
        std::iter::once(home).chain(others).collect()
    }
}

/// Another AWS account reached by assuming a role.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub role_arn: String,
    pub external_id: Option<String>,
    /// Empty: the home account's regions (see [`Aws::scope_accounts`]).
    pub regions: Vec<String>,
    pub origin: Origin,
}

impl Account {
    /// The 12-digit id of the account the role lives in.
    pub fn account_id(&self) -> Option<&str> {
        account_of_role(&self.role_arn)
    }
}

/// `arn:aws:iam::123456789012:role/patchd` → `123456789012`; None when the ARN names no
/// 12-digit account.
pub fn account_of_role(role_arn: &str) -> Option<&str> {
    let account = role_arn.split(':').nth(4)?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())).then_some(account)
}

/// One account with everything needed to reach it, as [`Aws::scope_accounts`] resolves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedAccount {
    pub name: String,
    /// None for the home account, whose credentials come from the default chain as they are.
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    /// Never empty.
    pub regions: Vec<String>,
}

impl ScopedAccount {
    /// Whether this is the home account (no role to assume).
    pub fn is_home(&self) -> bool {
        self.role_arn.is_none()
    }
}

/// Where a group or window applies: `accounts = [...]` and `regions = [...]`. An empty list
/// admits everything, so configurations written before scoping existed keep their meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scoping {
    /// Account names (`[aws] name` or an `[[aws.account]]` name); empty: every account.
    pub accounts: Vec<String>,
    /// Region codes; empty: every region of the admitted accounts.
    pub regions: Vec<String>,
}

impl Scoping {
    pub fn admits(&self, account_name: &str, region: &str) -> bool {
        (self.accounts.is_empty() || self.accounts.iter().any(|a| a == account_name))
            && (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
    }

    /// Whether nothing is excluded: neither list is written.
    pub fn is_everywhere(&self) -> bool {
        self.accounts.is_empty() && self.regions.is_empty()
    }
}

/// Risk rank: ours to compute (from vendor severity, raised by rules), not SSM's ComplianceLevel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RiskRank {
    Low,
    Medium,
    High,
    Critical,
}

impl RiskRank {
    /// Most severe first: the order reports list them in.
    pub const ALL: [RiskRank; 4] = [RiskRank::Critical, RiskRank::High, RiskRank::Medium, RiskRank::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            RiskRank::Critical => "critical",
            RiskRank::High => "high",
            RiskRank::Medium => "medium",
            RiskRank::Low => "low",
        }
    }

    pub fn parse(s: &str) -> Option<RiskRank> {
        RiskRank::ALL.into_iter().find(|r| r.as_str().eq_ignore_ascii_case(s))
    }

    /// The rank a vendor severity maps to, before any operator rule raises it. Vendors spell
    /// severities differently (ALAS "Important", RHSA "Moderate", MSRC "Critical", USN
    /// priority "high"); unknown words give None so the policy's default applies.
    pub fn from_vendor_severity(severity: &str) -> Option<RiskRank> {
        match severity.to_ascii_lowercase().as_str() {
            "critical" => Some(RiskRank::Critical),
            "important" | "high" => Some(RiskRank::High),
            "medium" | "moderate" => Some(RiskRank::Medium),
            "low" | "negligible" => Some(RiskRank::Low),
            _ => None,
        }
    }
}

impl fmt::Display for RiskRank {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct SlaPolicy {
    pub critical_days: u32,
    pub high_days: u32,
    pub medium_days: u32,
    pub low_days: u32,
    pub due_soon_days: u32,
    /// An in-scope instance whose last scan is older than this is a coverage gap.
    pub stale_scan_hours: u32,
    /// Rank for a patch whose vendor severity is unknown or unrecognised.
    pub default_rank: RiskRank,
    pub rules: Vec<RankRule>,
    /// A CISA Known Exploited Vulnerabilities catalog (JSON), a file or a URL; any CVE in it
    /// ranks its patch critical.
    pub kev_catalog: Option<FeedLocation>,
    /// How often a KEV catalog given as a URL is fetched again.
    pub kev_refresh: std::time::Duration,
}

impl SlaPolicy {
    pub fn days(&self, rank: RiskRank) -> u32 {
        match rank {
            RiskRank::Critical => self.critical_days,
            RiskRank::High => self.high_days,
            RiskRank::Medium => self.medium_days,
            RiskRank::Low => self.low_days,
        }
    }
}

impl Default for SlaPolicy {
    fn default() -> Self {
        SlaPolicy {
            critical_days: 30,
            high_days: 90,
            medium_days: 90,
            low_days: 90,
            due_soon_days: 7,
            stale_scan_hours: 48,
            default_rank: RiskRank::Medium,
            rules: Vec::new(),
            kev_catalog: None,
            kev_refresh: DEFAULT_KEV_REFRESH,
        }
    }
}

/// Raises the rank of patches fixing any of `cves` to `rank` (never lowers it).
#[derive(Debug, Clone)]
pub struct RankRule {
    pub cves: Vec<String>,
    pub rank: RiskRank,
    pub reason: Option<String>,
    pub origin: Origin,
}

/// A documented risk acceptance: these patches may stay missing on these instances until `expires`.
#[derive(Debug, Clone)]
pub struct Exception {
    pub name: String,
    pub patches: Vec<String>,
    pub scope: ExceptionScope,
    pub reason: String,
    pub owner: String,
    /// Last day (inclusive, UTC) the acceptance holds.
    pub expires: NaiveDate,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExceptionScope {
    Instances(Vec<String>),
    Group(Located<String>),
}

/// The name the KEV catalog goes by among the fetched feeds (status, metrics, cache file).
pub const KEV_SOURCE: &str = "kev";
/// CISA updates the KEV catalog on working days.
pub const DEFAULT_KEV_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// `refresh` of an advisory source when not written: vendors publish several times a day.
pub const DEFAULT_FEED_REFRESH: std::time::Duration = std::time::Duration::from_secs(6 * 3600);
/// How long one fetch of a feed (all its pages) may take when `timeout` is not written.
pub const DEFAULT_FEED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// The largest feed accepted when `max_size` is not written, after decompression: Red Hat's
/// full index or Ubuntu's USN database are a few hundred MB at most.
pub const DEFAULT_FEED_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// Where a feed is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedLocation {
    /// `https://...`, or `http://` to a loopback address (a mirror on the same host).
    Http(String),
    /// `file:///...` or a plain path: an air-gapped mirror kept current by other means.
    File(PathBuf),
}

impl fmt::Display for FeedLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedLocation::Http(url) => f.write_str(url),
            FeedLocation::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One `[[advisories.source]]`: a vendor feed and the operating systems it dates.
#[derive(Debug, Clone)]
pub struct AdvisorySource {
    /// Names the source in reports (`advisory: amazon-linux-2023`), metrics and status.
    pub name: String,
    pub kind: patchd_advisories::FeedKind,
    pub location: FeedLocation,
    /// SSM operating systems (`AMAZON_LINUX_2023`, `UBUNTU`, ...) whose patches it dates.
    pub platforms: Vec<OperatingSystem>,
    pub refresh: std::time::Duration,
    pub timeout: std::time::Duration,
    /// Refused beyond this many bytes, compressed or not.
    pub max_bytes: u64,
    pub origin: Origin,
}

pub const COMPLIANCE_LEVELS: &[&str] = &["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNSPECIFIED"];

/// A patch baseline as SSM models it (`CreatePatchBaseline`).
#[derive(Debug, Clone)]
pub struct Baseline {
    pub name: String,
    pub description: Option<String>,
    pub operating_system: OperatingSystem,
    pub global_filters: Vec<PatchFilter>,
    pub rules: Vec<ApprovalRule>,
    pub approved_patches: Vec<String>,
    pub approved_patches_compliance_level: &'static str,
    pub approved_patches_enable_non_security: bool,
    pub rejected_patches: Vec<String>,
    pub rejected_patches_action: RejectedPatchesAction,
    /// Values of the `Patch Group` / `PatchGroup` tag this baseline is registered for.
    pub patch_groups: Vec<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedPatchesAction {
    AllowAsDependency,
    Block,
}

impl RejectedPatchesAction {
    pub fn as_ssm(self) -> &'static str {
        match self {
            RejectedPatchesAction::AllowAsDependency => "ALLOW_AS_DEPENDENCY",
            RejectedPatchesAction::Block => "BLOCK",
        }
    }
}

/// One `PatchFilter`: an SSM filter key and the values it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchFilter {
    pub key: &'static str,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    AfterDays(u32),
    Until(NaiveDate),
    /// Debian and Ubuntu: SSM has no approval delay there, patches are approved once available.
    Immediate,
}

#[derive(Debug, Clone)]
pub struct ApprovalRule {
    pub filters: Vec<PatchFilter>,
    pub approval: Approval,
    pub compliance_level: &'static str,
    pub enable_non_security: bool,
}

impl ApprovalRule {
    pub fn filter(&self, key: &str) -> Option<&PatchFilter> {
        self.filters.iter().find(|f| f.key == key)
    }
}

/// Tag selector: every key must match (AND), any of a key's values may (OR).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagSelector(pub BTreeMap<String, Vec<String>>);

impl TagSelector {
    pub fn matches<'t>(&self, tags: impl IntoIterator<Item = (&'t str, &'t str)> + Clone) -> bool {
        self.0.iter().all(|(key, values)| {
            tags.clone().into_iter().any(|(k, v)| k == key && values.iter().any(|want| want == v))
        })
    }
}

/// The tag keys through which SSM assigns an instance to a patch group.
pub const PATCH_GROUP_TAGS: [&str; 2] = ["Patch Group", "PatchGroup"];

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub tags: TagSelector,
    pub instance_ids: Vec<String>,
    /// The accounts and regions whose instances belong to the group; everywhere by default.
    pub scope: Scoping,
    pub origin: Origin,
}

impl Group {
    /// Patch-group tag values the selector pins, i.e. which baselines can serve this group.
    pub fn patch_group_values(&self) -> Vec<&str> {
        PATCH_GROUP_TAGS
            .iter()
            .filter_map(|key| self.tags.0.get(*key))
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutoffBehavior {
    ContinueTask,
    CancelTask,
}

#[derive(Debug, Clone)]
pub struct Window {
    pub name: String,
    pub description: Option<String>,
    pub schedule: Schedule,
    pub duration: Duration,
    pub cutoff: Duration,
    pub cutoff_behavior: CutoffBehavior,
    pub enabled: bool,
    pub tasks: Vec<Task>,
    /// Where the window runs: a task reaches the instances of its groups that both this and
    /// the group's scope admit.
    pub scope: Scoping,
    pub origin: Origin,
}

impl Window {
    /// Window starts after `after`, each with its end.
    pub fn occurrences_after(
        &self,
        after: DateTime<Utc>,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        self.schedule.firings_after(after).map(move |start| (start, start + self.duration))
    }

    pub fn installs(&self) -> bool {
        self.tasks.iter().any(|t| t.operation == Operation::Install)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    Scan,
    Install,
}

impl Operation {
    /// The value of AWS-RunPatchBaseline's `Operation` parameter.
    pub fn as_ssm(self) -> &'static str {
        match self {
            Operation::Scan => "Scan",
            Operation::Install => "Install",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebootOption {
    RebootIfNeeded,
    NoReboot,
}

impl RebootOption {
    pub fn as_ssm(self) -> &'static str {
        match self {
            RebootOption::RebootIfNeeded => "RebootIfNeeded",
            RebootOption::NoReboot => "NoReboot",
        }
    }
}

/// SSM's MaxConcurrency / MaxErrors: an absolute count or a share of the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Count(u32),
    Percent(u8),
}

impl Limit {
    /// The limit for `targets` instances. A percentage rounds down, as SSM does, but a
    /// concurrency limit never drops below one or the task would never start.
    pub fn resolve(self, targets: u32, at_least_one: bool) -> u32 {
        let n = match self {
            Limit::Count(n) => n,
            Limit::Percent(p) => (u64::from(targets) * u64::from(p) / 100) as u32,
        };
        if at_least_one {
            n.max(1)
        } else {
            n
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(n) => write!(f, "{n}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Why a list of wave shares cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharesError(pub String);

impl std::fmt::Display for SharesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks cumulative wave shares such as `["1", "10%", "50%", "100%"]`: at least one, counts
/// growing among counts and percentages among percentages, and the last one `100%`, so that
/// no instance is left out of a rollout by the way its waves were written.
pub fn check_wave_shares(shares: &[Limit]) -> Result<(), SharesError> {
    let Some(last) = shares.last() else {
        return Err(SharesError("a rollout needs at least one wave".into()));
    };
    if *last != Limit::Percent(100) {
        return Err(SharesError(format!(
            "the last wave must be `100%`, not `{last}`: every instance is patched"
        )));
    }
    let (mut count, mut percent) = (0u32, 0u8);
    for share in shares {
        let grows = match *share {
            Limit::Count(n) => std::mem::replace(&mut count, n) < n,
            Limit::Percent(p) => std::mem::replace(&mut percent, p) < p,
        };
        if !grows {
            return Err(SharesError(format!(
                "wave share `{share}` does not grow: shares are cumulative, each larger than the one before"
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub operation: Operation,
    pub groups: Vec<Located<String>>,
    pub reboot_option: RebootOption,
    pub max_concurrency: Limit,
    pub max_errors: Limit,
    pub priority: u32,
    pub timeout_seconds: u32,
    /// Canary waves, their bake and their gates; the default is one wave and no gate.
    pub waves: WavePolicy,
    /// `[window.task.promote]`: install only what another window's last successful run
    /// installed. Install tasks only.
    pub promote: Option<Promotion>,
    pub origin: Origin,
}

/// Where a promoting task takes its patches from, and where it leaves the install list the
/// nodes read (AWS-RunPatchBaseline's `InstallOverrideList` is an S3 or https URL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The window whose last successful run's installs are repeated.
    pub from: Located<String>,
    pub bucket: String,
    /// Key prefix of the install lists, ending in `/` unless empty.
    pub prefix: String,
}

/// Where install lists go when `prefix` is not written.
pub const DEFAULT_PROMOTION_PREFIX: &str = "patchd/install-lists/";

/// How a task's instances are released in growing waves, and what must hold before the next
/// wave starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WavePolicy {
    /// Cumulative shares such as `1`, `10%`, `100%`; empty means one wave of every instance.
    pub shares: Vec<Limit>,
    /// The pause after a wave ends before its gate is judged.
    pub bake: std::time::Duration,
    /// At most `max` instances per value of a tag in flight at once, across the whole task.
    pub max_per_tag: Option<TagCap>,
    /// Judged after every wave; `None` when neither waves nor a gate were written, so a plain
    /// task behaves as it always did.
    pub gate: Option<Gate>,
    /// SSM documents run on each node around its install (`[window.task.hooks]`).
    pub hooks: Option<InstallHooks>,
}

/// The hook documents AWS-RunPatchBaselineWithHooks runs on each node: before the install
/// (which runs without rebooting), after it, and after the reboot. A failed pre-install hook
/// leaves the node unpatched; any failed hook fails the node's invocation, which counts
/// against the error budget.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallHooks {
    pub pre_install: Option<String>,
    pub post_install: Option<String>,
    pub on_exit: Option<String>,
}

impl WavePolicy {
    /// Whether anything beyond a plain rollout was asked for.
    pub fn is_plain(&self) -> bool {
        self.shares.is_empty() && self.max_per_tag.is_none() && self.gate.is_none() && self.hooks.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagCap {
    pub tag: String,
    pub max: u32,
}

/// What must hold after a wave for the next one to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    /// Every patched instance's agent back Online and its compliance free of FAILED (and of
    /// INSTALLED_PENDING_REBOOT when the task may reboot). Install tasks only.
    pub reboot_truth: bool,
    /// A GET that must answer 2xx; `run`, `task` and `wave` are added as query parameters.
    pub url: Option<String>,
    /// A CloudWatch alarm carried in every SendCommand's AlarmConfiguration: SSM stops the
    /// command when it fires, and the gate fails.
    pub alarm: Option<String>,
    /// An executable on the admin host; a non-zero exit vetoes the next wave.
    pub command: Option<LocalHook>,
}

impl Default for Gate {
    fn default() -> Gate {
        Gate { reboot_truth: true, url: None, alarm: None, command: None }
    }
}

/// A program run on the admin host with arguments (no shell), under a timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalHook {
    pub program: String,
    pub args: Vec<String>,
    pub timeout: std::time::Duration,
}

#[cfg(test)]
mod tests {
    #[test]
    fn role_arns_name_their_account() {
        use super::account_of_role;
        assert_eq!(account_of_role("arn:aws:iam::210987654321:role/patchd"), Some("210987654321"));
        assert_eq!(account_of_role("arn:aws-us-gov:iam::210987654321:role/x/y"), Some("210987654321"));
        assert_eq!(account_of_role("arn:aws:iam::12345:role/patchd"), None);
        assert_eq!(account_of_role("nonsense"), None);
    }

    use super::*;

    fn selector(pairs: &[(&str, &[&str])]) -> TagSelector {
        TagSelector(
            pairs.iter().map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect())).collect(),
        )
    }

    #[test]
    fn tag_selectors_and_keys_or_values() {
        let s = selector(&[("Environment", &["prod"]), ("Role", &["web", "edge"])]);
        let check = |tags: &[(&str, &str)]| s.matches(tags.iter().copied());
        assert!(check(&[("Environment", "prod"), ("Role", "edge")]));
        assert!(check(&[("Role", "web"), ("Environment", "prod"), ("Team", "x")]));
        assert!(!check(&[("Environment", "prod")]), "every key must match");
        assert!(!check(&[("Environment", "staging"), ("Role", "web")]));
        assert!(!check(&[("environment", "prod"), ("Role", "web")]), "tag keys are case-sensitive");
    }

    fn scoping(accounts: &[&str], regions: &[&str]) -> Scoping {
        Scoping {
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn scoping_admits_what_it_lists_and_empty_lists_admit_everything() {
        let everywhere = Scoping::default();
        assert!(everywhere.is_everywhere());
        assert!(everywhere.admits("home", "eu-west-1"));

        let accounts = scoping(&["payments", "analytics"], &[]);
        assert!(!accounts.is_everywhere());
        assert!(accounts.admits("analytics", "ap-south-1"), "every region of a listed account");
        assert!(!accounts.admits("home", "eu-west-1"));

        let regions = scoping(&[], &["eu-west-1"]);
        assert!(regions.admits("anyone", "eu-west-1"));
        assert!(!regions.admits("anyone", "eu-west-2"));

        let both = scoping(&["payments"], &["eu-west-1", "us-east-1"]);
        assert!(both.admits("payments", "us-east-1"));
        assert!(!both.admits("payments", "eu-central-1"), "both lists must admit the pair");
        assert!(!both.admits("analytics", "us-east-1"));
        assert!(!both.admits("Payments", "us-east-1"), "account names are case-sensitive");
    }

    #[test]
    fn scope_accounts_resolve_regions_home_first() {
        let account = |name: &str, regions: &[&str]| Account {
            name: name.to_string(),
            role_arn: format!("arn:aws:iam::111111111111:role/{name}"),
            external_id: None,
            regions: regions.iter().map(|r| r.to_string()).collect(),
            origin: Origin { file: std::sync::Arc::new("c.toml".into()), line: 1, col: 1 },
        };
        let mut aws =
            Aws { accounts: vec![account("a", &[]), account("b", &["us-east-1"])], ..Aws::default() };
        let regions = |aws: &Aws| {
            aws.scope_accounts("sdk-region-1").into_iter().map(|a| (a.name, a.regions)).collect::<Vec<_>>()
        };
        let owned = |pairs: &[(&str, &[&str])]| {
            pairs
                .iter()
                .map(|(n, rs)| (n.to_string(), rs.iter().map(|r| r.to_string()).collect::<Vec<_>>()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            regions(&aws),
            owned(&[("home", &["sdk-region-1"]), ("a", &["sdk-region-1"]), ("b", &["us-east-1"])])
        );
        aws.region = Some("eu-west-1".into());
        assert_eq!(regions(&aws)[1], owned(&[("a", &["eu-west-1"])])[0]);
        aws.regions = vec!["eu-central-1".into(), "eu-west-1".into()];
        assert_eq!(regions(&aws)[0], owned(&[("home", &["eu-central-1", "eu-west-1"])])[0]);
        assert_eq!(regions(&aws)[1].1, aws.regions);
    }

    #[test]
    fn limits_resolve_like_ssm() {
        assert_eq!(Limit::Percent(10).resolve(55, true), 5);
        assert_eq!(Limit::Percent(10).resolve(5, true), 1, "concurrency never drops to zero");
        assert_eq!(Limit::Percent(10).resolve(5, false), 0, "an error budget may be zero");
        assert_eq!(Limit::Count(50).resolve(3, true), 50);
    }

    #[test]
    fn vendor_severities_map_to_ranks() {
        for (severity, rank) in [
            ("Critical", Some(RiskRank::Critical)),
            ("Important", Some(RiskRank::High)),
            ("high", Some(RiskRank::High)),
            ("Moderate", Some(RiskRank::Medium)),
            ("Medium", Some(RiskRank::Medium)),
            ("Low", Some(RiskRank::Low)),
            ("Unspecified", None),
        ] {
            assert_eq!(RiskRank::from_vendor_severity(severity), rank, "{severity}");
        }
    }
}
