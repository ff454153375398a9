//! One finding judged for a report: the SLA engine's verdict on its patch, then its own status,
//! with what a reader needs beside it (instance name, platform, groups, where the clock starts).

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use patchd_config::RiskRank;
use patchd_sla::{groups_of, Judge, PatchVerdict, SlaClock, SlaStatus};
use patchd_store::ReleaseOrigin;
use serde::Serialize;

use crate::facts::{Filters, FindingFacts, InstanceFacts};

/// Days with two decimals, as the reports show durations.
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

/// The label reports give a clock's source: the store's words for it, so that a finding's
/// origin reads the same as the per-platform counts the store makes.
fn clock_origin(source: patchd_sla::ClockSource, advisory_source: Option<&str>) -> String {
    let origin = match source {
        patchd_sla::ClockSource::Advisory => ReleaseOrigin::Advisory(advisory_source.map(str::to_string)),
        patchd_sla::ClockSource::Ssm => ReleaseOrigin::Ssm,
        patchd_sla::ClockSource::FirstSeen => ReleaseOrigin::FirstSeen,
    };
    origin.label()
}

/// Every finding judged, with its instance's groups, filtered by rank and group.
pub(crate) fn judged<'f>(
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
