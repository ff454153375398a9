//! Facts in, report rows out. No I/O: the caller reads the store and passes the instant.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use patchd_config::{Config, Operation, RiskRank};
use patchd_sla::{SlaClock, SlaStatus};
use serde::Serialize;

/// What the store knows of an instance.
#[derive(Debug, Clone)]
pub struct InstanceFacts {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub tags: Vec<(String, String)>,
    pub managed: bool,
    pub ping_status: Option<String>,
    pub last_scan: Option<DateTime<Utc>>,
    pub counts: StateCounts,
}

/// Patch counts by SSM state from the instance's latest scan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub installed: u32,
    pub installed_other: u32,
    pub installed_pending_reboot: u32,
    pub installed_rejected: u32,
    pub missing: u32,
    pub failed: u32,
    pub not_applicable: u32,
}

impl StateCounts {
    /// SSM's notion: nothing approved is missing, failed, or waiting for a reboot.
    pub fn compliant(&self) -> bool {
        self.missing == 0 && self.failed == 0 && self.installed_pending_reboot == 0
    }
}

/// What the store knows of a finding: a patch seen missing on an instance at some point.
#[derive(Debug, Clone)]
pub struct FindingFacts {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub patch_id: String,
    pub title: Option<String>,
    pub severity: Option<String>,
    pub cves: Vec<String>,
    pub ssm_release: Option<DateTime<Utc>>,
    pub advisory_release: Option<DateTime<Utc>>,
    /// The feed or import that gave `advisory_release`.
    pub advisory_source: Option<String>,
    /// The first time this patch was seen missing anywhere in the fleet.
    pub fleet_first_seen: DateTime<Utc>,
    /// SSM's current state: MISSING, FAILED, INSTALLED_PENDING_REBOOT, INSTALLED, ...
    pub state: String,
    pub installed_at: Option<DateTime<Utc>>,
}

impl FindingFacts {
    fn engine_state(&self) -> patchd_sla::FindingState {
        match (self.state.as_str(), self.installed_at) {
            ("INSTALLED" | "INSTALLED_OTHER", Some(installed_at)) => {
                patchd_sla::FindingState::Remediated { installed_at }
            }
            _ => patchd_sla::FindingState::Open,
        }
    }

    fn patch_facts(&self) -> PatchFacts<'_> {
        PatchFacts {
            severity: self.severity.as_deref(),
            cves: &self.cves,
            ssm_release: self.ssm_release,
            advisory_release: self.advisory_release,
            fleet_first_seen: self.fleet_first_seen,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub group: Option<String>,
    pub rank: Option<RiskRank>,
}

fn days(d: Duration) -> f64 {
    (d.num_seconds() as f64 / 86_400.0 * 100.0).round() / 100.0
}

/// One finding judged by the engine.
#[derive(Debug, Clone, Serialize)]
pub struct JudgedFinding {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub instance_name: Option<String>,
    /// The instance's operating system as recorded (`Ubuntu 22.04`).
    pub platform: Option<String>,
    pub groups: Vec<String>,
    pub patch_id: String,
    pub title: Option<String>,
    pub severity: Option<String>,
    pub cves: Vec<String>,
    pub rank: RiskRank,
    pub rank_reason: String,
    pub clock: SlaClock,
    pub estimated: bool,
    /// Where the clock's start comes from: `advisory: amazon-linux-2023`, `ssm`, `first-seen`.
    pub clock_origin: String,
    pub due: DateTime<Utc>,
    /// Days from the report instant to the due date; negative when overdue.
    pub days_left: f64,
    pub state: String,
    pub installed_at: Option<DateTime<Utc>>,
    /// installed_at - clock, for remediated findings.
    pub days_to_remediate: Option<f64>,
    pub status: SlaStatus,
    pub exception: Option<String>,
}

/// `report::Judge` and friends are the SLA engine's, shared with `/metrics` and the events.
pub use patchd_sla::{groups_of, Judge, PatchFacts, PatchVerdict};

/// One finding, judged for a report: the patch's verdict, then the finding's own status.
fn judge_one(
    judge: &Judge<'_>,
    f: &FindingFacts,
    instance: Option<&InstanceFacts>,
    groups: &[&str],
) -> JudgedFinding {
    let verdict = judge.verdict(&f.patch_facts());
    let (status, exception) = judge.finding(&verdict, f.engine_state(), &f.patch_id, &f.instance_id, groups);
    let PatchVerdict { rank, rank_reason, clock, due, .. } = verdict;
    JudgedFinding {
        account: f.account.clone(),
        region: f.region.clone(),
        instance_id: f.instance_id.clone(),
        instance_name: instance.and_then(|i| i.name.clone()),
        platform: instance.and_then(|i| i.platform.clone()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        patch_id: f.patch_id.clone(),
        title: f.title.clone(),
        severity: f.severity.clone(),
        cves: f.cves.clone(),
        rank,
        rank_reason,
        estimated: clock.estimated(),
        clock_origin: clock_origin(clock.source, f.advisory_source.as_deref()),
        clock,
        due,
        days_left: days(due - judge.at),
        state: f.state.clone(),
        installed_at: f.installed_at,
        days_to_remediate: f.installed_at.map(|t| days(t - clock.start)),
        status,
        exception: exception.map(|e| e.name.clone()),
    }
}

/// The label reports give a clock's source; the same words as the store's
/// [`patchd_store::ReleaseOrigin::label`].
pub fn clock_origin(source: patchd_sla::ClockSource, advisory_source: Option<&str>) -> String {
    match (source, advisory_source) {
        (patchd_sla::ClockSource::Advisory, Some(feed)) => format!("advisory: {feed}"),
        (patchd_sla::ClockSource::Advisory, None) => "advisory".into(),
        (patchd_sla::ClockSource::Ssm, _) => "ssm".into(),
        (patchd_sla::ClockSource::FirstSeen, _) => "first-seen".into(),
    }
}

/// Open findings of one platform by where their clocks come from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlatformClocks {
    /// The instances' operating system as recorded (`Ubuntu 22.04`), or `unknown`.
    pub platform: String,
    pub open: u64,
    /// Open findings whose clock is an estimate (no release date known).
    pub estimated: u64,
    /// (origin label, open findings), most findings first.
    pub origins: Vec<(String, u64)>,
}

impl PlatformClocks {
    pub fn estimated_share(&self) -> f64 {
        if self.open == 0 {
            0.0
        } else {
            self.estimated as f64 / self.open as f64
        }
    }
}

/// The store's per-platform clock counts, one entry per platform.
pub fn platform_clocks(counts: &[patchd_store::ClockCount]) -> Vec<PlatformClocks> {
    clocks_by_platform(
        counts.iter().map(|c| (c.platform.as_deref(), c.source.label(), c.source.estimated(), c.open)),
    )
}

/// The same figures from judged findings, one each.
pub fn platform_clocks_of(findings: &[JudgedFinding]) -> Vec<PlatformClocks> {
    clocks_by_platform(
        findings.iter().map(|f| (f.platform.as_deref(), f.clock_origin.clone(), f.estimated, 1)),
    )
}

fn clocks_by_platform<'a>(
    counts: impl Iterator<Item = (Option<&'a str>, String, bool, u64)>,
) -> Vec<PlatformClocks> {
    let mut by_platform: BTreeMap<String, PlatformClocks> = BTreeMap::new();
    for (platform, label, estimated, open) in counts {
        let platform = platform.unwrap_or("unknown").to_string();
        let entry = by_platform.entry(platform.clone()).or_insert_with(|| PlatformClocks {
            platform,
            open: 0,
            estimated: 0,
            origins: Vec::new(),
        });
        entry.open += open;
        if estimated {
            entry.estimated += open;
        }
        match entry.origins.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += open,
            None => entry.origins.push((label, open)),
        }
    }
    let mut platforms: Vec<PlatformClocks> = by_platform.into_values().collect();
    for p in &mut platforms {
        p.origins.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    platforms
}

/// Every finding judged, with its instance's groups, filtered by rank and group.
pub fn judged<'f>(
    judge: &'f Judge<'f>,
    instances: &'f [InstanceFacts],
    findings: &'f [FindingFacts],
    filters: &'f Filters,
) -> impl Iterator<Item = JudgedFinding> + 'f {
    // Group membership is a property of the instance: match tags once per instance, not
    // once per finding (a fleet has a hundred findings per instance).
    let by_id: HashMap<(&str, &str, &str), (&InstanceFacts, Vec<&str>)> = instances
        .iter()
        .map(|i| {
            let groups = groups_of(judge.config, &i.account, &i.region, &i.instance_id, &i.tags);
            ((i.account.as_str(), i.region.as_str(), i.instance_id.as_str()), (i, groups))
        })
        .collect();
    findings
        .iter()
        .map(move |f| {
            let key = (f.account.as_str(), f.region.as_str(), f.instance_id.as_str());
            match by_id.get(&key) {
                Some((instance, groups)) => judge_one(judge, f, Some(instance), groups),
                None => {
                    let no_tags: &[(String, String)] = &[];
                    judge_one(
                        judge,
                        f,
                        None,
                        &groups_of(judge.config, &f.account, &f.region, &f.instance_id, no_tags),
                    )
                }
            }
        })
        .filter(move |j| filters.rank.is_none_or(|r| j.rank == r))
        .filter(move |j| filters.group.as_ref().is_none_or(|g| j.groups.contains(g)))
}

#[derive(Debug, Clone, Serialize)]
pub struct Count {
    pub rank: RiskRank,
    pub status: SlaStatus,
    pub count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SlaReport {
    pub at: DateTime<Utc>,
    /// Open findings, most urgent first.
    pub findings: Vec<JudgedFinding>,
    /// Open findings counted in `totals` but not listed (the listing was limited).
    pub omitted: u64,
    pub totals: Vec<Count>,
    /// Where the open findings' clocks come from, per platform (empty when not computed).
    pub clocks: Vec<PlatformClocks>,
}

impl SlaReport {
    pub fn count(&self, status: SlaStatus) -> usize {
        self.totals.iter().filter(|c| c.status == status).map(|c| c.count).sum()
    }
}

pub fn sla(
    judge: &Judge,
    instances: &[InstanceFacts],
    findings: &[FindingFacts],
    filters: &Filters,
) -> SlaReport {
    let mut open: Vec<JudgedFinding> = judged(judge, instances, findings, filters)
        .filter(|j| {
            matches!(j.status, SlaStatus::Ok | SlaStatus::DueSoon | SlaStatus::Breached | SlaStatus::Excepted)
        })
        .collect();
    open.sort_by(|a, b| urgency(a).cmp(&urgency(b)));
    let mut totals = Totals::default();
    for j in &open {
        totals.add(j.rank, j.status, 1);
    }
    let clocks = platform_clocks_of(&open);
    SlaReport { at: judge.at, findings: open, omitted: 0, totals: totals.into_counts(), clocks }
}

/// The SLA report's order: most urgent status, then highest rank, then earliest due date;
/// ties by instance and patch so the order is stable.
fn urgency(j: &JudgedFinding) -> impl Ord + '_ {
    (j.status, std::cmp::Reverse(j.rank), j.due, (&j.account, &j.region, &j.instance_id), &j.patch_id)
}

/// Finding counts per rank and status, most severe rank first.
#[derive(Debug, Default)]
pub struct Totals(BTreeMap<(std::cmp::Reverse<RiskRank>, SlaStatus), usize>);

impl Totals {
    pub fn add(&mut self, rank: RiskRank, status: SlaStatus, n: usize) {
        if n > 0 {
            *self.0.entry((std::cmp::Reverse(rank), status)).or_default() += n;
        }
    }

    pub fn into_counts(self) -> Vec<Count> {
        self.0.into_iter().map(|((rank, status), count)| Count { rank: rank.0, status, count }).collect()
    }
}

/// A patch with open findings, and how many the report counts.
#[derive(Debug, Clone)]
pub struct PatchOpen {
    pub patch_id: String,
    pub verdict: PatchVerdict,
    pub open: usize,
}

/// The summary form of the SLA report, for fleets too large to list: totals from per-patch
/// counts, and the `listed` findings, which the caller read in [`urgency_tiers`] order.
/// `exception_candidates` are every open finding of a patch some exception names: judged one
/// by one, since only they can be `excepted`.
pub fn sla_summary(
    judge: &Judge,
    instances: &[InstanceFacts],
    patches: &[PatchOpen],
    exception_candidates: &[FindingFacts],
    listed: &[FindingFacts],
    limit: usize,
    filters: &Filters,
) -> SlaReport {
    let excepted: Vec<JudgedFinding> = judged(judge, instances, exception_candidates, filters)
        .filter(|j| j.status == SlaStatus::Excepted)
        .collect();
    let mut excepted_per_patch: HashMap<&str, usize> = HashMap::new();
    for j in &excepted {
        *excepted_per_patch.entry(j.patch_id.as_str()).or_default() += 1;
    }
    let mut totals = Totals::default();
    let mut open_total = 0;
    for p in patches.iter().filter(|p| filters.rank.is_none_or(|r| p.verdict.rank == r)) {
        let n_excepted = excepted_per_patch.get(p.patch_id.as_str()).copied().unwrap_or(0);
        totals.add(p.verdict.rank, p.verdict.open_status, p.open.saturating_sub(n_excepted));
        totals.add(p.verdict.rank, SlaStatus::Excepted, n_excepted);
        open_total += p.open;
    }
    let mut findings: Vec<JudgedFinding> =
        judged(judge, instances, listed, filters).filter(|j| j.status != SlaStatus::Excepted).collect();
    findings.sort_by(|a, b| urgency(a).cmp(&urgency(b)));
    findings.truncate(limit);
    if findings.len() < limit {
        let mut excepted = excepted;
        excepted.sort_by(|a, b| urgency(a).cmp(&urgency(b)));
        findings.extend(excepted.into_iter().take(limit - findings.len()));
    }
    SlaReport {
        at: judge.at,
        omitted: (open_total - findings.len().min(open_total)) as u64,
        findings,
        totals: totals.into_counts(),
        clocks: Vec::new(),
    }
}

/// Patches in the order their open findings are listed: groups of patches whose findings
/// share status, rank and due date, most urgent first. Listing tier by tier, in instance order
/// within a tier, reproduces the full report's order without reading every finding.
pub fn urgency_tiers<'p>(patches: &'p [PatchOpen], filters: &Filters) -> Vec<Vec<&'p str>> {
    let mut ordered: Vec<&PatchOpen> =
        patches.iter().filter(|p| filters.rank.is_none_or(|r| p.verdict.rank == r)).collect();
    let key = |p: &PatchOpen| (p.verdict.open_status, std::cmp::Reverse(p.verdict.rank), p.verdict.due);
    ordered.sort_by_key(|p| key(p));
    let mut tiers: Vec<Vec<&str>> = Vec::new();
    let mut previous = None;
    for p in ordered {
        if previous != Some(key(p)) {
            tiers.push(Vec::new());
            previous = Some(key(p));
        }
        if let Some(tier) = tiers.last_mut() {
            tier.push(&p.patch_id);
        }
    }
    tiers
}

#[derive(Debug, Clone, Serialize)]
pub struct RankHistory {
    pub rank: RiskRank,
    pub remediated: usize,
    pub met: usize,
    pub missed: usize,
    /// Share met, in percent with one decimal; None when nothing was remediated.
    pub percent_met: Option<f64>,
    pub median_days_to_remediate: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryReport {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub remediated: Vec<JudgedFinding>,
    pub per_rank: Vec<RankHistory>,
}

/// Findings remediated in [since, until), and how many met their SLA, per rank.
pub fn history(
    judge: &Judge,
    instances: &[InstanceFacts],
    findings: &[FindingFacts],
    filters: &Filters,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> HistoryReport {
    let mut remediated: Vec<JudgedFinding> = judged(judge, instances, findings, filters)
        .filter(|j| matches!(j.status, SlaStatus::Met | SlaStatus::Missed))
        .filter(|j| j.installed_at.is_some_and(|t| t >= since && t < until))
        .collect();
    remediated.sort_by(|a, b| {
        (a.installed_at, &a.instance_id, &a.patch_id).cmp(&(b.installed_at, &b.instance_id, &b.patch_id))
    });
    let per_rank = RiskRank::ALL
        .iter()
        .map(|&rank| {
            let of_rank: Vec<&JudgedFinding> = remediated.iter().filter(|j| j.rank == rank).collect();
            let met = of_rank.iter().filter(|j| j.status == SlaStatus::Met).count();
            let mut durations: Vec<f64> = of_rank.iter().filter_map(|j| j.days_to_remediate).collect();
            durations.sort_by(f64::total_cmp);
            RankHistory {
                rank,
                remediated: of_rank.len(),
                met,
                missed: of_rank.len() - met,
                percent_met: (!of_rank.is_empty())
                    .then(|| (met as f64 * 1000.0 / of_rank.len() as f64).round() / 10.0),
                median_days_to_remediate: durations.get(durations.len() / 2).copied(),
            }
        })
        .collect();
    HistoryReport { since, until, remediated, per_rank }
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceCompliance {
    pub instance_id: String,
    pub instance_name: Option<String>,
    pub platform: Option<String>,
    pub account: String,
    pub region: String,
    pub compliant: bool,
    pub scanned: bool,
    pub last_scan: Option<DateTime<Utc>>,
    pub counts: StateCounts,
}

#[derive(Debug, Clone, Serialize)]
pub struct GroupCompliance {
    pub group: String,
    pub instances: usize,
    pub compliant: usize,
    pub instances_detail: Vec<InstanceCompliance>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComplianceReport {
    pub at: DateTime<Utc>,
    pub groups: Vec<GroupCompliance>,
}

pub fn compliance(
    config: &Config,
    at: DateTime<Utc>,
    instances: &[InstanceFacts],
    filters: &Filters,
) -> ComplianceReport {
    let groups = config
        .groups
        .iter()
        .filter(|g| filters.group.as_ref().is_none_or(|f| *f == g.name))
        .map(|group| {
            let mut detail: Vec<InstanceCompliance> = instances
                .iter()
                .filter(|i| {
                    groups_of(config, &i.account, &i.region, &i.instance_id, &i.tags)
                        .contains(&group.name.as_str())
                })
                .map(|i| InstanceCompliance {
                    instance_id: i.instance_id.clone(),
                    instance_name: i.name.clone(),
                    platform: i.platform.clone(),
                    account: i.account.clone(),
                    region: i.region.clone(),
                    // An instance never scanned cannot be shown compliant.
                    compliant: i.last_scan.is_some() && i.counts.compliant(),
                    scanned: i.last_scan.is_some(),
                    last_scan: i.last_scan,
                    counts: i.counts,
                })
                .collect();
            detail.sort_by(|a, b| (a.compliant, &a.instance_id).cmp(&(b.compliant, &b.instance_id)));
            GroupCompliance {
                group: group.name.clone(),
                instances: detail.len(),
                compliant: detail.iter().filter(|i| i.compliant).count(),
                instances_detail: detail,
            }
        })
        .collect();
    ComplianceReport { at, groups }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Gap {
    /// EC2 lists it, SSM does not manage it: it is never scanned or patched.
    Unmanaged,
    /// The SSM agent stopped reporting: commands cannot reach it.
    AgentConnectionLost,
    /// None of its groups is targeted by an enabled install window.
    NoInstallWindow,
    /// Never scanned, or not within `stale_scan_hours`.
    StaleScan,
}

impl Gap {
    pub fn as_str(self) -> &'static str {
        match self {
            Gap::Unmanaged => "unmanaged",
            Gap::AgentConnectionLost => "agent-connection-lost",
            Gap::NoInstallWindow => "no-install-window",
            Gap::StaleScan => "stale-scan",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CoverageGap {
    pub instance_id: String,
    pub instance_name: Option<String>,
    pub account: String,
    pub region: String,
    pub groups: Vec<String>,
    pub gap: Gap,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CoverageReport {
    pub at: DateTime<Utc>,
    pub in_scope: usize,
    pub gaps: Vec<CoverageGap>,
}

impl CoverageReport {
    /// Distinct instances with at least one gap. An instance is an (account, region, id):
    /// two accounts' instances that share an id are two blind spots, never one.
    pub fn instances_with_gaps(&self) -> usize {
        let instances: std::collections::BTreeSet<(&str, &str, &str)> = self
            .gaps
            .iter()
            .map(|g| (g.account.as_str(), g.region.as_str(), g.instance_id.as_str()))
            .collect();
        instances.len()
    }
}

/// In-scope instances (members of a configured group) that are blind spots.
pub fn coverage(
    config: &Config,
    at: DateTime<Utc>,
    instances: &[InstanceFacts],
    filters: &Filters,
) -> CoverageReport {
    // (window scope, group) of every enabled install task: a window scoped elsewhere does not
    // install the instance even when it targets the instance's group.
    let installing: Vec<(&patchd_config::Scoping, &str)> = config
        .windows
        .iter()
        .filter(|w| w.enabled)
        .flat_map(|w| w.tasks.iter().map(move |t| (w, t)))
        .filter(|(_, t)| t.operation == Operation::Install)
        .flat_map(|(w, t)| t.groups.iter().map(move |g| (&w.scope, g.value.as_str())))
        .collect();
    let stale_before = at - Duration::hours(i64::from(config.sla.stale_scan_hours));
    let mut in_scope = 0;
    let mut gaps = Vec::new();
    for instance in instances {
        let groups =
            groups_of(config, &instance.account, &instance.region, &instance.instance_id, &instance.tags);
        if groups.is_empty() || filters.group.as_ref().is_some_and(|g| !groups.contains(&g.as_str())) {
            continue;
        }
        in_scope += 1;
        let mut found = Vec::new();
        if !instance.managed {
            found.push((
                Gap::Unmanaged,
                "not a managed node in SSM (no agent, or no instance profile)".to_string(),
            ));
        } else if let Some(ping) = instance.ping_status.as_deref().filter(|p| *p != "Online") {
            found.push((Gap::AgentConnectionLost, format!("SSM agent ping status {ping}")));
        }
        let account_name = config.aws.account_name_of(&instance.account);
        let installed = |group: &&str| {
            installing.iter().any(|(scope, g)| g == group && scope.admits(account_name, &instance.region))
        };
        if !groups.iter().any(installed) {
            found.push((
                Gap::NoInstallWindow,
                format!("no enabled install window targets {}", groups.join(", ")),
            ));
        }
        match instance.last_scan {
            None => found.push((Gap::StaleScan, "never scanned".to_string())),
            Some(t) if t < stale_before => {
                found.push((Gap::StaleScan, format!("last scanned {} ago", human_age(at - t))))
            }
            Some(_) => {}
        }
        for (gap, detail) in found {
            gaps.push(CoverageGap {
                instance_id: instance.instance_id.clone(),
                instance_name: instance.name.clone(),
                account: instance.account.clone(),
                region: instance.region.clone(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
                gap,
                detail,
            });
        }
    }
    gaps.sort_by(|a, b| (a.gap, &a.instance_id).cmp(&(b.gap, &b.instance_id)));
    CoverageReport { at, in_scope, gaps }
}

fn human_age(d: Duration) -> String {
    if d.num_hours() < 48 {
        format!("{} h", d.num_hours())
    } else {
        format!("{} days", d.num_days())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use patchd_sla::{KevCatalog, SlaStatus};

    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const CONFIG: &str = r#"
[sla]
stale_scan_hours = 24
[[sla.rule]]
cves = ["CVE-2026-9999"]
rank = "critical"

[[exception]]
name = "accepted"
patches = ["P-ACCEPTED"]
group = "web"
reason = "r"
owner = "o"
expires = 2027-01-31

[[group]]
name = "web"
[group.tags]
Role = "web"

[[group]]
name = "db"
[group.tags]
Role = "db"

[[window]]
name = "w"
schedule = "cron(0 2 ? * SUN *)"
duration_hours = 2
[[window.task]]
operation = "install"
groups = ["web"]
[[window.task]]
operation = "scan"
groups = ["db"]
"#;

    fn config() -> Config {
        patchd_config::load_sources(vec![(PathBuf::from("c.toml"), CONFIG.into())], t("2026-11-28T00:00:00Z"))
            .unwrap()
            .config
    }

    fn instance(id: &str, role: &str) -> InstanceFacts {
        InstanceFacts {
            account: "111111111111".into(),
            region: "eu-central-1".into(),
            instance_id: id.into(),
            name: Some(format!("{role}-1")),
            platform: Some("Amazon Linux 2".into()),
            tags: vec![("Role".into(), role.into())],
            managed: true,
            ping_status: Some("Online".into()),
            last_scan: Some(t("2026-11-27T12:00:00Z")),
            counts: StateCounts::default(),
        }
    }

    fn finding(
        instance: &str,
        patch: &str,
        severity: &str,
        released: Option<&str>,
        state: &str,
    ) -> FindingFacts {
        FindingFacts {
            account: "111111111111".into(),
            region: "eu-central-1".into(),
            instance_id: instance.into(),
            patch_id: patch.into(),
            title: None,
            severity: Some(severity.into()),
            cves: vec![],
            ssm_release: released.map(t),
            advisory_release: None,
            advisory_source: None,
            fleet_first_seen: t("2026-11-20T00:00:00Z"),
            state: state.into(),
            installed_at: None,
        }
    }

    #[test]
    fn sla_report_judges_every_open_finding() {
        let config = config();
        let kev = KevCatalog::default();
        let judge = Judge { config: &config, kev: &kev, at: t("2026-11-28T00:00:00Z") };
        let instances = vec![instance("i-0000000000000000a", "web"), instance("i-0000000000000000b", "db")];
        let mut raised =
            finding("i-0000000000000000b", "P-RAISED", "Low", Some("2026-10-01T00:00:00Z"), "MISSING");
        raised.cves = vec!["CVE-2026-9999".into()];
        let mut fixed =
            finding("i-0000000000000000a", "P-FIXED", "Critical", Some("2026-11-01T00:00:00Z"), "INSTALLED");
        fixed.installed_at = Some(t("2026-11-10T00:00:00Z"));
        let findings = vec![
            finding("i-0000000000000000a", "P-BREACHED", "Critical", Some("2026-10-01T00:00:00Z"), "MISSING"),
            finding("i-0000000000000000a", "P-SOON", "Critical", Some("2026-11-01T00:00:00Z"), "FAILED"),
            finding(
                "i-0000000000000000a",
                "P-OK",
                "Important",
                Some("2026-11-01T00:00:00Z"),
                "INSTALLED_PENDING_REBOOT",
            ),
            finding("i-0000000000000000a", "P-ESTIMATED", "Medium", None, "MISSING"),
            finding("i-0000000000000000a", "P-ACCEPTED", "Critical", Some("2026-09-01T00:00:00Z"), "MISSING"),
            raised,
            fixed,
        ];
        let report = sla(&judge, &instances, &findings, &Filters::default());
        let got: Vec<(&str, RiskRank, SlaStatus)> =
            report.findings.iter().map(|f| (f.patch_id.as_str(), f.rank, f.status)).collect();
        assert_eq!(
            got,
            vec![
                ("P-BREACHED", RiskRank::Critical, SlaStatus::Breached),
                ("P-RAISED", RiskRank::Critical, SlaStatus::Breached),
                ("P-SOON", RiskRank::Critical, SlaStatus::DueSoon),
                ("P-OK", RiskRank::High, SlaStatus::Ok),
                ("P-ESTIMATED", RiskRank::Medium, SlaStatus::Ok),
                ("P-ACCEPTED", RiskRank::Critical, SlaStatus::Excepted),
            ]
        );
        let estimated = &report.findings[4];
        assert!(estimated.estimated);
        assert_eq!(estimated.due, t("2027-02-18T00:00:00Z"));
        assert_eq!(report.findings[0].days_left, -28.0);
        assert_eq!(report.findings[0].groups, vec!["web".to_string()]);
        assert_eq!(report.count(SlaStatus::Breached), 2);
        // Filters narrow by group and rank.
        let db_only = sla(&judge, &instances, &findings, &Filters { group: Some("db".into()), rank: None });
        assert_eq!(db_only.findings.len(), 1);
        let high = sla(&judge, &instances, &findings, &Filters { group: None, rank: Some(RiskRank::High) });
        assert_eq!(high.findings.len(), 1);
    }

    #[test]
    fn history_counts_met_and_missed_per_rank() {
        let config = config();
        let kev = KevCatalog::default();
        let judge = Judge { config: &config, kev: &kev, at: t("2026-12-31T00:00:00Z") };
        let installed = |patch: &str, released: &str, at: &str| {
            let mut f = finding("i-0000000000000000a", patch, "Critical", Some(released), "INSTALLED");
            f.installed_at = Some(t(at));
            f
        };
        let findings = vec![
            installed("MET", "2026-11-01T00:00:00Z", "2026-11-20T00:00:00Z"),
            installed("MISSED", "2026-10-01T00:00:00Z", "2026-11-15T00:00:00Z"),
            installed("BEFORE", "2026-09-01T00:00:00Z", "2026-09-05T00:00:00Z"),
            finding("i-0000000000000000a", "OPEN", "Critical", Some("2026-11-01T00:00:00Z"), "MISSING"),
        ];
        let report = history(
            &judge,
            &[instance("i-0000000000000000a", "web")],
            &findings,
            &Filters::default(),
            t("2026-11-01T00:00:00Z"),
            t("2026-12-01T00:00:00Z"),
        );
        let patches: Vec<&str> = report.remediated.iter().map(|f| f.patch_id.as_str()).collect();
        assert_eq!(patches, vec!["MISSED", "MET"]);
        let critical = &report.per_rank[0];
        assert_eq!(
            (critical.remediated, critical.met, critical.missed, critical.percent_met),
            (2, 1, 1, Some(50.0))
        );
        assert_eq!(report.per_rank[1].percent_met, None);
        assert_eq!(report.remediated[0].days_to_remediate, Some(45.0));
    }

    #[test]
    fn coverage_finds_blind_spots_in_scope_only() {
        let config = config();
        let at = t("2026-11-28T00:00:00Z");
        let mut unmanaged = instance("i-0000000000000000a", "web");
        unmanaged.managed = false;
        unmanaged.last_scan = None;
        let mut lost = instance("i-0000000000000000b", "web");
        lost.ping_status = Some("ConnectionLost".into());
        let mut stale = instance("i-0000000000000000c", "web");
        stale.last_scan = Some(t("2026-11-26T00:00:00Z"));
        let healthy = instance("i-0000000000000000d", "web");
        let db = instance("i-0000000000000000e", "db");
        let out_of_scope = instance("i-0000000000000000f", "batch");
        let report =
            coverage(&config, at, &[unmanaged, lost, stale, healthy, db, out_of_scope], &Filters::default());
        assert_eq!(report.in_scope, 5);
        let got: Vec<(&str, Gap)> = report.gaps.iter().map(|g| (g.instance_id.as_str(), g.gap)).collect();
        assert_eq!(
            got,
            vec![
                ("i-0000000000000000a", Gap::Unmanaged),
                ("i-0000000000000000b", Gap::AgentConnectionLost),
                ("i-0000000000000000e", Gap::NoInstallWindow),
                ("i-0000000000000000a", Gap::StaleScan),
                ("i-0000000000000000c", Gap::StaleScan),
            ]
        );
        assert_eq!(report.gaps[4].detail, "last scanned 2 days ago");
    }

    #[test]
    fn compliance_per_group_and_instance() {
        let config = config();
        let mut failing = instance("i-0000000000000000a", "web");
        failing.counts.missing = 2;
        let fine = instance("i-0000000000000000b", "web");
        let mut never = instance("i-0000000000000000c", "web");
        never.last_scan = None;
        let report =
            compliance(&config, t("2026-11-28T00:00:00Z"), &[failing, fine, never], &Filters::default());
        let web = &report.groups[0];
        assert_eq!((web.group.as_str(), web.instances, web.compliant), ("web", 3, 1));
        let order: Vec<(&str, bool)> =
            web.instances_detail.iter().map(|i| (i.instance_id.as_str(), i.compliant)).collect();
        assert_eq!(
            order,
            vec![
                ("i-0000000000000000a", false),
                ("i-0000000000000000c", false),
                ("i-0000000000000000b", true)
            ]
        );
        assert_eq!(report.groups[1].instances, 0);
    }
}
