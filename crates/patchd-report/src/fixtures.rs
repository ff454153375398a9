//! A small configuration, instances and findings the computation's tests share.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use patchd_config::Config;

use crate::facts::{FindingFacts, InstanceFacts, StateCounts};

pub(crate) fn t(s: &str) -> DateTime<Utc> {
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
timezone = "Europe/Berlin"
duration_hours = 2
[[window.task]]
operation = "install"
groups = ["web"]
[[window.task]]
operation = "scan"
groups = ["db"]
"#;

pub(crate) fn config() -> Config {
    patchd_config::load_sources(vec![(PathBuf::from("c.toml"), CONFIG.into())], t("2026-11-28T00:00:00Z"))
        .unwrap()
        .config
}

pub(crate) fn instance(id: &str, role: &str) -> InstanceFacts {
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

pub(crate) fn finding(
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
