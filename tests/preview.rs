//! `patchd baseline preview` as a process against the fleet simulator (in this test's process,
//! on port 0, clock frozen): the table's rows and totals for a known baseline at a fixed
//! `--at`, an imported advisory's date replacing SSM's, the JSON contract of
//! docs/baselines.md, and an unknown baseline name.
//!
//! The expected totals come from SSM's catalog read by the test itself and the baseline's one
//! rule applied by hand, not from patchd.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_sim::{Group, PatchRelease, Platform, Scenario, SimServer};
use patchd_aws::{AwsClients, PatchCatalog, StaticEndpoint};
use patchd_config::{Aws, RetryMode};
use support::{patchd_toml, run, stdout, Scratch};

const AT: &str = "2026-03-08T00:00:00Z";
const DAY: Duration = Duration::from_secs(86_400);
/// An advisory date for a patch SSM also dates: the imported one must win.
const ADVISORY_DATE: &str = "2026-02-20T00:00:00Z";
/// An advisory SSM's catalog does not have, for the same system.
const ADVISORY_ONLY: &str = "ALAS2-2026-9999";
/// An advisory for another system, which an Amazon Linux 2 preview must leave out.
const OTHER_SYSTEM: &str = "RHSA-2026:9999";

/// One Amazon Linux 2 instance in patch group `web`, on a frozen clock.
fn scenario() -> Scenario {
    let web = Group::amazon_linux_2("web", 1).with_tag("Patch Group", "web");
    let start = instant("2026-03-02T09:30:00Z");
    Scenario::of_groups("preview-cli", 5, vec![web])
        .with_time_scale(0.0)
        .with_start(start)
        .with_patches_per_os(12)
}

impl Scratch {
    fn write_preview_config(&self, server: &SimServer, rejected: &str) {
        let text = [
            patchd_toml::daemon_and_aws(&self.state_dir(), Some(&server.endpoint_url()), "", ""),
            patchd_toml::al2_baseline("patchd-al2", "web", &format!("rejected_patches = [\"{rejected}\"]")),
            patchd_toml::security_rule(
                7,
                "severity = [\"Critical\", \"Important\"]\ncompliance_level = \"CRITICAL\"",
            ),
            patchd_toml::baseline("patchd-win", "WINDOWS", "web", ""),
            "\n[[baseline.rule]]\nmsrc_severity = [\"Critical\"]\napprove_after_days = 0\n".to_string(),
        ]
        .concat();
        std::fs::write(self.config(), text).unwrap();
    }
}

fn instant(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

/// The table row of a patch, split into words.
fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .unwrap_or_else(|| panic!("no row for {id} in:\n{table}"));
    line.split_whitespace().collect()
}

/// (approved, pending, not approved, rejected) computed from SSM's catalog with the baseline's
/// one rule, the imported date of `advisory_dated` and the rejection of `rejected`.
struct Expected {
    approved: usize,
    pending: usize,
    not_approved: usize,
    rejected: usize,
    catalog: usize,
}

fn expected(
    catalog: &[patchd_aws::AvailablePatch],
    advisory_dated: &str,
    rejected: &str,
    at: DateTime<Utc>,
) -> Expected {
    let mut e = Expected { approved: 0, pending: 0, not_approved: 0, rejected: 0, catalog: catalog.len() };
    for patch in catalog {
        let selected = patch.classification.as_deref() == Some("Security")
            && matches!(patch.severity.as_deref(), Some("Critical" | "Important"));
        let released =
            if patch.id == advisory_dated { Some(instant(ADVISORY_DATE)) } else { patch.release_date };
        match released {
            _ if patch.id == rejected => e.rejected += 1,
            Some(released) if selected && released + chrono::Duration::days(7) <= at => e.approved += 1,
            Some(_) if selected => e.pending += 1,
            _ => e.not_approved += 1,
        }
    }
    // The advisory-only patch has no classification: no rule selects it.
    e.not_approved += 1;
    e
}

#[test]
fn preview_table_json_and_unknown_name() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let scenario = scenario();
    let server = rt.block_on(SimServer::start("127.0.0.1:0".parse().unwrap(), scenario)).unwrap();
    let security = |severity: &str| PatchRelease {
        classification: Some("Security".into()),
        severity: Some(severity.into()),
        ..PatchRelease::default()
    };
    // Released at the start (2026-03-02T09:30Z): approved 7 days later, after --at.
    let pending = server.release_patch(Platform::AmazonLinux2, &security("Critical"));
    server.advance(DAY);
    // SSM dates it today, but its advisory says 2026-02-20: approved since 2026-02-27.
    let advisory_dated = server.release_patch(Platform::AmazonLinux2, &security("Important"));
    server.advance(DAY);
    let rejected = server.release_patch(Platform::AmazonLinux2, &security("Critical"));

    let scratch = Scratch::new("preview-cli");
    scratch.write_preview_config(&server, &rejected);
    let csv = scratch.0.join("advisories.csv");
    std::fs::write(
        &csv,
        format!("id,release_date\n{advisory_dated},{ADVISORY_DATE}\n{ADVISORY_ONLY},2026-03-01\n{OTHER_SYSTEM},2026-03-01\n"),
    )
    .unwrap();
    let imported = run(&scratch, &["advisories", "import", csv.to_str().unwrap()]);
    assert!(imported.status.success(), "{imported:?}");

    let aws = Aws {
        region: Some("us-east-1".into()),
        endpoint_url: None,
        profile: None,
        max_attempts: 2,
        retry_mode: RetryMode::Standard,
        ..Aws::default()
    };
    let url = server.endpoint_url();
    let clients = AwsClients::with_static_credentials(&aws, &StaticEndpoint::simulator(&url));
    let catalog = rt.block_on(clients.available_patches(PatchCatalog::AmazonLinux2, &[])).unwrap();
    let at = instant(AT);
    let want = expected(&catalog, &advisory_dated, &rejected, at);
    assert!(want.approved > 0 && want.not_approved > 1, "the fixture exercises every status");

    // The table.
    let table = run(&scratch, &["baseline", "preview", "patchd-al2", "--at", "2026-03-08"]);
    assert!(table.status.success(), "{table:?}");
    let text = stdout(&table);
    assert_eq!(
        text.lines().next(),
        Some("baseline patchd-al2 (AMAZON_LINUX_2) at 2026-03-08T00:00:00Z"),
        "{text}"
    );
    assert_eq!(
        row(&text, "PATCH"),
        ["PATCH", "CLASSIFICATION", "SEVERITY", "RELEASED", "APPROVED", "RULE", "COMPLIANCE"]
    );
    let start = instant("2026-03-02T09:30:00Z");
    assert_eq!(
        row(&text, &pending),
        [
            pending.as_str(),
            "Security",
            "Critical",
            &date(start),
            "(ssm)",
            "pending",
            "until",
            "2026-03-09",
            "rule[1]",
            "CRITICAL"
        ]
    );
    assert_eq!(
        row(&text, &advisory_dated),
        [
            advisory_dated.as_str(),
            "Security",
            "Important",
            "2026-02-20",
            "(advisory)",
            "2026-02-27",
            "rule[1]",
            "CRITICAL"
        ]
    );
    assert_eq!(
        row(&text, &rejected),
        [
            rejected.as_str(),
            "Security",
            "Critical",
            "2026-03-04",
            "(ssm)",
            "rejected",
            "(allowed",
            "as",
            "dependency)",
            "-",
            "-"
        ]
    );
    assert_eq!(
        row(&text, ADVISORY_ONLY),
        [ADVISORY_ONLY, "-", "-", "2026-03-01", "(advisory)", "not", "approved", "-", "-"]
    );
    assert!(!text.contains(OTHER_SYSTEM), "another system's advisory is left out:\n{text}");
    // Rows by approval date: every dated approval before the pending ones, and in order.
    let approvals: Vec<&str> = text
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().nth(5))
        .take_while(|cell| cell.starts_with("20") || *cell == "pending")
        .collect();
    assert_eq!(approvals.len(), want.approved + want.pending, "{text}");
    assert!(approvals[..want.approved].windows(2).all(|w| w[0] <= w[1]), "{text}");
    assert_eq!(
        text.lines().last(),
        Some(
            format!(
                "{} patches: {} approved now, {} pending later, 0 undated, {} not approved, {} rejected",
                want.catalog + 1,
                want.approved,
                want.pending,
                want.not_approved,
                want.rejected
            )
            .as_str()
        ),
        "{text}"
    );

    // The JSON contract.
    let json = run(&scratch, &["baseline", "preview", "patchd-al2", "--at", AT, "--format", "json"]);
    assert!(json.status.success(), "{json:?}");
    let doc: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("valid JSON");
    assert_eq!(doc["baseline"], "patchd-al2");
    assert_eq!(doc["operating_system"], "AMAZON_LINUX_2");
    assert_eq!(doc["at"], AT);
    let patches = doc["patches"].as_array().expect("patches");
    assert_eq!(patches.len(), want.catalog + 1);
    let patch = |id: &str| patches.iter().find(|p| p["id"] == id).unwrap_or_else(|| panic!("{id} in {doc}"));
    let p = patch(&pending);
    assert_eq!(
        (&p["status"], &p["approved_at"], &p["approved_by"], &p["rule"], &p["compliance_level"]),
        (&"pending".into(), &"2026-03-09T09:30:00Z".into(), &"rule".into(), &1.into(), &"CRITICAL".into())
    );
    assert_eq!((&p["released"], &p["release_source"]), (&"2026-03-02T09:30:00Z".into(), &"ssm".into()));
    assert_eq!(
        (&p["classification"], &p["severity"], &p["product"]),
        (&"Security".into(), &"Critical".into(), &"AmazonLinux2".into())
    );
    let a = patch(&advisory_dated);
    assert_eq!(
        (&a["status"], &a["release_source"], &a["approved_at"]),
        (&"approved".into(), &"advisory".into(), &"2026-02-27T00:00:00Z".into())
    );
    let r = patch(&rejected);
    assert_eq!(
        (&r["status"], &r["rejected_action"], &r["approved_at"]),
        (&"rejected".into(), &"ALLOW_AS_DEPENDENCY".into(), &serde_json::Value::Null)
    );
    assert_eq!(patch(ADVISORY_ONLY)["status"], "not-approved");
    let totals = &doc["totals"];
    let count = |key: &str| totals[key].as_u64().map(|n| n as usize);
    assert_eq!(
        [count("approved"), count("pending"), count("undated"), count("not_approved"), count("rejected")],
        [Some(want.approved), Some(want.pending), Some(0), Some(want.not_approved), Some(want.rejected)]
    );

    // An unknown name names the configured baselines.
    let unknown = run(&scratch, &["baseline", "preview", "patchd-nope"]);
    assert_eq!(unknown.status.code(), Some(1), "{unknown:?}");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("patchd-nope") && stderr.contains("patchd-al2, patchd-win"), "{stderr}");
}
