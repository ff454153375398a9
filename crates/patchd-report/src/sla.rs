//! The SLA report: open findings judged as of an instant, most urgent first, with totals per
//! rank and status. [`sla`] judges every finding; [`sla_summary`] builds the same totals from
//! per-patch counts for fleets too large to list.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use patchd_config::RiskRank;
use patchd_sla::{Judge, PatchVerdict, SlaStatus};
use serde::Serialize;

use crate::clocks::{platform_clocks_of, PlatformClocks};
use crate::facts::{Filters, FindingFacts, InstanceFacts};
use crate::judged::{judged, JudgedFinding};

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
    /// Open findings with `status`, every rank.
    pub fn count(&self, status: SlaStatus) -> usize {
        self.totals.iter().filter(|c| c.status == status).map(|c| c.count).sum()
    }

    /// Open findings of `rank` with `status`.
    pub fn count_of(&self, rank: RiskRank, status: SlaStatus) -> usize {
        self.totals.iter().filter(|c| c.rank == rank && c.status == status).map(|c| c.count).sum()
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
struct Totals(BTreeMap<(std::cmp::Reverse<RiskRank>, SlaStatus), usize>);

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
pub(crate) struct PatchOpen {
    pub patch_id: String,
    pub verdict: PatchVerdict,
    pub open: usize,
}

/// The summary form of the SLA report, for fleets too large to list: totals from per-patch
/// counts, and the `listed` findings, which the caller read in [`urgency_tiers`] order.
/// `exception_candidates` are every open finding of a patch some exception names: judged one
/// by one, since only they can be `excepted`.
pub(crate) fn sla_summary(
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
pub(crate) fn urgency_tiers<'p>(patches: &'p [PatchOpen], filters: &Filters) -> Vec<Vec<&'p str>> {
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

#[cfg(test)]
mod tests {
    use patchd_sla::KevCatalog;

    use super::*;
    use crate::fixtures::{config, finding, instance, t};

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
}
