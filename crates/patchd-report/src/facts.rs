//! What the store knows, as the computation takes it: instances, findings, and the filters a
//! report applies.

use chrono::{DateTime, Utc};
use patchd_config::RiskRank;
use patchd_sla::PatchFacts;
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
    pub(crate) fn engine_state(&self) -> patchd_sla::FindingState {
        match (self.state.as_str(), self.installed_at) {
            ("INSTALLED" | "INSTALLED_OTHER", Some(installed_at)) => {
                patchd_sla::FindingState::Remediated { installed_at }
            }
            _ => patchd_sla::FindingState::Open,
        }
    }

    pub(crate) fn patch_facts(&self) -> PatchFacts<'_> {
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
