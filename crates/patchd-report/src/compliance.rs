//! Compliance per group: SSM's own notion (nothing approved missing, failed or waiting for a
//! reboot), instance by instance.

use chrono::{DateTime, Utc};
use patchd_config::Config;
use patchd_sla::groups_of;
use serde::Serialize;

use crate::facts::{Filters, InstanceFacts, StateCounts};

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

#[cfg(test)]
mod tests {

    use super::*;
    use crate::fixtures::{config, instance, t};

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
