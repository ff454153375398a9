//! A fleet for the store's large cases and its benchmark: every instance missing the same
//! patches, in one account and region. Shared so that the benchmark measures the shape the
//! tests check.

use chrono::{DateTime, Utc};
use patchd_store::{InstanceKey, InstanceScan, PatchObservation, PatchState};

pub const FLEET_ACCOUNT: &str = "111122223333";
pub const FLEET_REGION: &str = "eu-west-1";

pub struct Fleet {
    pub instance_ids: Vec<String>,
    pub patch_ids: Vec<String>,
    pub cves: Vec<String>,
}

impl Fleet {
    pub fn new(instances: usize, patches: usize) -> Fleet {
        Fleet {
            instance_ids: (0..instances).map(|i| format!("i-{i:017x}")).collect(),
            patch_ids: (0..patches).map(|p| format!("kernel-{p}.x86_64:0:5.10.{p}-1.amzn2")).collect(),
            cves: vec!["CVE-2026-10001".to_string(), "CVE-2026-10002".to_string()],
        }
    }

    /// Every patch, in `state`.
    pub fn observations(&self, state: PatchState) -> Vec<PatchObservation<'_>> {
        self.patch_ids
            .iter()
            .map(|id| PatchObservation {
                patch_id: id,
                title: Some("kernel security update"),
                classification: Some("Security"),
                severity: Some("Important"),
                cve_ids: &self.cves,
                state,
                installed_time: None,
            })
            .collect()
    }

    /// One scan per instance at `at`, each listing `observations`.
    pub fn scans<'a>(
        &'a self,
        observations: &'a [PatchObservation<'a>],
        at: DateTime<Utc>,
    ) -> Vec<InstanceScan<'a>> {
        self.instance_ids
            .iter()
            .map(|id| InstanceScan {
                command_id: Some("3f8e2a64-0c1d-4c52-9d65-1c2e9c7b8a10"),
                baseline_id: Some("pb-0123456789abcdef0"),
                patch_group: Some("web"),
                ..InstanceScan::scan_at(
                    InstanceKey { account: FLEET_ACCOUNT, region: FLEET_REGION, instance_id: id },
                    at,
                    observations,
                )
            })
            .collect()
    }
}
