//! Coverage: the in-scope instances patchd cannot vouch for (blind spots).

use chrono::{DateTime, Duration, Utc};
use patchd_config::{Config, Operation};
use patchd_sla::groups_of;
use serde::Serialize;

use crate::facts::{Filters, InstanceFacts};

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

    use super::*;
    use crate::fixtures::{config, instance, t};

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
}
