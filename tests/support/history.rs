//! A compliance history written straight into a store, for the report tests that need a known
//! one (tests/report.rs, tests/evidence.rs): one account and region, instances tagged into the
//! `prod` patch group, Amazon Linux 2 scans under one baseline.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use patchd_store::{
    ComplianceSync, InstanceKey, InstanceObservation, InstanceScan, PatchObservation, PingStatus, Store,
};

pub const ACCOUNT: &str = "111111111111";
pub const REGION: &str = "eu-central-1";

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The tags of an instance of `role` (`web`, `db`) in the `prod` patch group.
pub fn prod_tags(role: &str) -> BTreeMap<String, String> {
    [("Role".to_string(), role.to_string()), ("Patch Group".to_string(), "prod".to_string())].into()
}

/// An Amazon Linux 2 instance of the account, as an inventory read sees it.
pub fn instance<'a>(
    id: &'a str,
    name: &'a str,
    tags: &'a BTreeMap<String, String>,
    managed: bool,
    ping: Option<PingStatus>,
) -> InstanceObservation<'a> {
    InstanceObservation {
        instance: InstanceKey { account: ACCOUNT, region: REGION, instance_id: id },
        name: Some(name),
        platform: Some("Amazon Linux 2"),
        tags,
        ssm_managed: managed,
        ping_status: ping,
    }
}

/// One compliance sync at `at`: a Scan of each instance of `patches` that ended at `at`, by
/// the command `command_id` when the history knows it.
pub async fn record_scans(
    store: &Store,
    at: &str,
    command_id: Option<&str>,
    patches: &BTreeMap<&str, Vec<PatchObservation<'_>>>,
) {
    let scans: Vec<InstanceScan> = patches
        .iter()
        .map(|(id, patches)| InstanceScan {
            command_id,
            baseline_id: Some("pb-0123456789abcdef0"),
            patch_group: Some("prod"),
            ..InstanceScan::scan_at(
                InstanceKey { account: ACCOUNT, region: REGION, instance_id: id },
                t(at),
                patches,
            )
        })
        .collect();
    store.record_sync(&ComplianceSync { source: "test", started_at: t(at), scans: &scans }).await.unwrap();
}
