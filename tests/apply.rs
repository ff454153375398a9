//! `patchd apply` and `patchd plan` as processes against the fleet simulator (in this test's
//! process, on port 0): --dry-run shows the plan and changes nothing, no terminal and no --yes
//! refuses, --yes creates and registers, a second apply says "no changes", a changed rule is
//! shown and applied field by field, and `patchd plan` shows the same plan (golden file), in
//! JSON too.

#[path = "support/golden.rs"]
mod golden;
mod support;

use std::path::PathBuf;

use fleet_sim::{Scenario, SimServer};
use support::{patchd_toml, run, stdout, web_fleet, web_group, Scratch};

impl Scratch {
    fn write_apply_config(&self, server: &SimServer, approve_after_days: u32) {
        self.write_apply_config_with(server, approve_after_days, "");
    }

    /// The `patchd-al2` baseline, then `more` (further sections).
    fn write_apply_config_with(&self, server: &SimServer, approve_after_days: u32, more: &str) {
        let text = [
            patchd_toml::daemon_and_aws(&self.state_dir(), Some(&server.endpoint_url()), "", ""),
            patchd_toml::al2_baseline("patchd-al2", "web", ""),
            patchd_toml::security_rule(approve_after_days, "compliance_level = \"HIGH\""),
            more.to_string(),
        ];
        std::fs::write(self.config(), text.concat()).unwrap();
    }
}

#[test]
fn apply_creates_then_says_no_changes_then_updates() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(SimServer::start("127.0.0.1:0".parse().unwrap(), Scenario::minimal())).unwrap();
    let scratch = Scratch::new("apply-cycle");
    scratch.write_apply_config(&server, 7);

    let dry = run(&scratch, &["apply", "--dry-run"]);
    assert!(dry.status.success(), "{dry:?}");
    let text = stdout(&dry);
    assert!(text.contains("+ create patchd-al2 (AMAZON_LINUX_2)"), "{text}");
    assert!(text.contains("+ register patch group web (AMAZON_LINUX_2) -> patchd-al2"), "{text}");
    assert!(text.contains("dry run: nothing changed"), "{text}");
    assert_eq!(server.stats().calls("CreatePatchBaseline"), 0);

    // No terminal to ask on and no --yes: refused, nothing changed.
    let refused = run(&scratch, &["apply"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pass --yes"));
    assert_eq!(server.stats().calls("CreatePatchBaseline"), 0);

    let applied = run(&scratch, &["apply", "--yes"]);
    assert!(applied.status.success(), "{applied:?}");
    assert!(stdout(&applied).contains("applied 2 change(s)"), "{}", stdout(&applied));
    assert_eq!(server.stats().calls("CreatePatchBaseline"), 1);
    assert_eq!(server.stats().calls("RegisterPatchBaselineForPatchGroup"), 1);

    let again = run(&scratch, &["apply", "--yes"]);
    assert!(again.status.success(), "{again:?}");
    let text = stdout(&again);
    assert!(text.contains("= unchanged patchd-al2"), "{text}");
    assert!(text.trim_end().ends_with("no changes"), "{text}");
    assert_eq!(server.stats().calls("CreatePatchBaseline"), 1);

    scratch.write_apply_config(&server, 3);
    let dry = run(&scratch, &["apply", "--dry-run"]);
    let text = stdout(&dry);
    assert!(text.contains("~ update patchd-al2"), "{text}");
    assert!(
        text.contains(
            "rule[1]: CLASSIFICATION=Security after 7d HIGH -> CLASSIFICATION=Security after 3d HIGH"
        ),
        "{text}"
    );
    let applied = run(&scratch, &["apply", "-y"]);
    assert!(applied.status.success(), "{applied:?}");
    assert_eq!(server.stats().calls("UpdatePatchBaseline"), 1);
    assert!(stdout(&run(&scratch, &["apply", "--dry-run"])).contains("no changes"));
}

fn golden(name: &str, actual: &str) {
    golden::check(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden").join(name), actual);
}

/// A baseline the first apply creates and the second no longer names.
fn old_baseline() -> String {
    [patchd_toml::al2_baseline("patchd-old", "batch", ""), patchd_toml::security_rule(7, "")].concat()
}

/// A baseline the second apply adds, with rejected patches and a rule of several keys.
fn new_baseline() -> String {
    let rejected = "rejected_patches = [\"ALAS2-2026-0001\"]\nrejected_patches_action = \"BLOCK\"";
    let rule = "severity = [\"Critical\", \"Important\"]\ncompliance_level = \"CRITICAL\"";
    [patchd_toml::al2_baseline("patchd-db", "db", rejected), patchd_toml::security_rule(0, rule)].concat()
}

#[test]
fn plan_shows_each_baseline_change_and_apply_carries_it_out() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(SimServer::start("127.0.0.1:0".parse().unwrap(), Scenario::minimal())).unwrap();
    let scratch = Scratch::new("apply-plan");
    scratch.write_apply_config_with(&server, 7, &old_baseline());
    let applied = run(&scratch, &["apply", "--yes"]);
    assert!(applied.status.success(), "{applied:?}");

    // One rule changed, one baseline added, one dropped (kept: pruning is off).
    scratch.write_apply_config_with(&server, 3, &new_baseline());
    let plan = run(&scratch, &["plan", "--from", "2026-12-01T00:00:00Z"]);
    assert!(plan.status.success(), "{plan:?}");
    let text = stdout(&plan).replace(&server.endpoint_url(), "ENDPOINT");
    golden("plan-baselines.stdout", &text);

    let json = run(&scratch, &["plan", "--from", "2026-12-01T00:00:00Z", "--format", "json"]);
    assert!(json.status.success(), "{json:?}");
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let baselines = &json["baselines"];
    assert_eq!(baselines["prune"], false);
    assert_eq!(baselines["has_work"], true);
    let actions: Vec<(String, String)> = baselines["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["action"].as_str().unwrap().to_string(), c["baseline"].as_str().unwrap().to_string()))
        .collect();
    let expect = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        actions,
        vec![
            expect("update", "patchd-al2"),
            expect("create", "patchd-db"),
            expect("register", "patchd-db"),
            expect("keep", "patchd-old"),
        ]
    );
    let update = &baselines["changes"][0];
    assert_eq!(update["fields"][0]["field"], "rule[1]");
    assert_eq!(update["fields"][0]["to"], "CLASSIFICATION=Security after 3d HIGH");

    // Offline: no SSM call, no baselines section.
    let calls = server.stats().calls("DescribePatchBaselines");
    let offline = run(&scratch, &["plan", "--offline", "--format", "json"]);
    assert!(offline.status.success(), "{offline:?}");
    let offline: serde_json::Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert!(offline["baselines"].is_null());
    assert_eq!(server.stats().calls("DescribePatchBaselines"), calls);

    // What plan showed is what apply does; after it the plan is empty.
    let applied = run(&scratch, &["apply", "--yes"]);
    assert!(stdout(&applied).contains("applied 3 change(s)"), "{}", stdout(&applied));
    let text = stdout(&run(&scratch, &["plan", "--from", "2026-12-01T00:00:00Z"]));
    assert!(
        text.contains("baselines: 0 to create, 0 to update, 2 unchanged, 0 to delete (1 more kept"),
        "{text}"
    );
    assert!(!text.contains("run `patchd apply`"), "{text}");
}

#[test]
fn plan_without_a_reachable_endpoint_prints_the_offline_part_then_fails() {
    let scratch = Scratch::new("apply-unreachable");
    // Nothing listens on port 9 of loopback; one attempt keeps the test quick.
    let text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:9\"\nmax_attempts = 1\n",
        scratch.0.display()
    );
    std::fs::write(scratch.config(), text).unwrap();
    let out = run(&scratch, &["plan"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stdout(&out).contains("SLA feasibility"), "{}", stdout(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the patch baselines in SSM"), "{stderr}");
    assert!(stderr.contains("--offline"), "{stderr}");
    let out = run(&scratch, &["plan", "--offline"]);
    assert!(out.status.success(), "{out:?}");
}

/// A fleet of six Amazon Linux 2 instances tagged `Patch Group = web`, at 300x real time.
fn tagged_fleet(rt: &tokio::runtime::Runtime) -> SimServer {
    let scenario = web_fleet("apply-then-scan", 11, 300.0, 60, web_group(6).with_missing(0.8));
    rt.block_on(SimServer::start("127.0.0.1:0".parse().unwrap(), scenario)).unwrap()
}

/// Missing patches over every instance of `web` after its latest scan, from the history.
fn missing_in_web(scratch: &Scratch) -> u64 {
    let out = run(scratch, &["report", "compliance", "--format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let group = report["groups"].as_array().unwrap().iter().find(|g| g["group"] == "web").unwrap();
    group["instances_detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["counts"]["missing"].as_u64().unwrap())
        .sum()
}

/// The whole workflow: change a rule, `plan`, `apply`, and the next scan judges by it.
#[test]
fn a_changed_rule_applied_shows_in_the_next_scan() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = tagged_fleet(&rt);
    let scratch = Scratch::new("apply-rescan");
    let group = &patchd_toml::group("web", "Role", "web");
    // 360 days: hardly anything in the catalog is old enough to be approved yet.
    scratch.write_apply_config_with(&server, 360, group);
    assert!(run(&scratch, &["apply", "--yes"]).status.success());
    let scan = |scratch: &Scratch| {
        let out = run(scratch, &["scan", "--group", "web", "--poll-interval", "100ms"]);
        assert!(out.status.success(), "{out:?}");
    };
    scan(&scratch);
    let strict = missing_in_web(&scratch);

    scratch.write_apply_config_with(&server, 0, group);
    let plan = stdout(&run(&scratch, &["plan"]));
    assert!(plan.contains("after 360d HIGH -> CLASSIFICATION=Security after 0d HIGH"), "{plan}");
    assert!(run(&scratch, &["apply", "--yes"]).status.success());
    scan(&scratch);
    let immediate = missing_in_web(&scratch);
    assert!(
        immediate > strict,
        "approving security patches on release should leave more missing than after 360 days: {immediate} vs {strict}"
    );
}
