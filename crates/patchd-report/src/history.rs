//! The remediation history: findings remediated in a period, and how many met their SLA.

use chrono::{DateTime, Utc};
use patchd_config::RiskRank;
use patchd_sla::{Judge, SlaStatus};
use serde::Serialize;

use crate::facts::{Filters, FindingFacts, InstanceFacts};
use crate::judged::{judged, JudgedFinding};

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

#[cfg(test)]
mod tests {
    use patchd_sla::KevCatalog;

    use super::*;
    use crate::fixtures::{config, finding, instance, t};

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
}
