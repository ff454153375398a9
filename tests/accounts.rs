//! Several accounts as a user meets them: `patchd scan` against the fleet simulator with the
//! home account and a second account reached through a role (AssumeRole with an external id).
//! The second account's fleet has the home fleet's instance ids; the reports keep them apart.

mod support;

use std::process::Output;

use fleet_sim::{Partition, Scenario, Timing};
use support::{patchd_toml, run, stderr, stdout, web_group, Scratch, Sim};

const HOME: &str = "123456789012";
const PAYMENTS: &str = "210987654321";

fn scenario() -> Scenario {
    scenario_with(0.0)
}

/// Both accounts' fleets, alike but for the account, with a share `unmanaged` of each group
/// without an agent. Nothing is scanned yet: the reports come from the test's own scans.
fn scenario_with(unmanaged: f64) -> Scenario {
    let web = web_group(5).with_missing(0.7).with_scanned(0.0).with_unmanaged(unmanaged);
    let payments = Partition::new(PAYMENTS, "us-east-1").with_seed(3).with_external_id("payments-secret");
    // Installs and reboots are never waited for here: they keep the simulator's default times.
    let mut scenario = Scenario::of_groups("accounts-process", 3, vec![web.clone()])
        .with_time_scale(600.0)
        .with_timing(Timing::brisk(30.0, 300.0, 90.0))
        .with_patches_per_os(20)
        .with_partition(payments.with_groups(vec![web]));
    scenario.account_id = HOME.to_string();
    scenario
}

fn write_config(scratch: &Scratch, url: &str, payments_group_scope: &str) {
    write_config_with(scratch, url, payments_group_scope, "")
}

/// `daemon_extra`: more `[daemon]` keys (`listen = ...`).
fn write_config_with(scratch: &Scratch, url: &str, payments_group_scope: &str, daemon_extra: &str) {
    let payments = format!(
        "[[aws.account]]\nname = \"payments\"\nrole_arn = \"arn:aws:iam::{PAYMENTS}:role/patchd\"\n\
         external_id = \"payments-secret\""
    );
    let web = format!(
        "\n[[group]]\nname = \"web\"\n{payments_group_scope}\n[group.tags]\nRole = \"web\"\n\"Patch Group\" = \"web\"\n"
    );
    let text = [
        patchd_toml::daemon_and_aws(&scratch.state_dir(), Some(url), daemon_extra, &payments),
        web,
        patchd_toml::window("weekly", "cron(0 3 ? * SUN *)", 3, 1),
        patchd_toml::task("install", "install", "web", ""),
        patchd_toml::al2_baseline("patchd-al2", "web", ""),
        patchd_toml::security_rule(3, "compliance_level = \"HIGH\""),
    ];
    std::fs::write(scratch.config(), text.concat()).unwrap();
}

fn text(out: &Output) -> (String, String) {
    (stdout(out), stderr(out))
}

/// Every (account, instance) the compliance report lists.
fn reported(scratch: &Scratch) -> Vec<(String, String)> {
    reported_with(scratch, &[])
}

/// Every (account, instance) the compliance report lists with `narrowing` (`--account`...).
fn reported_with(scratch: &Scratch, narrowing: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["report", "compliance", "--format", "json"];
    args.extend_from_slice(narrowing);
    let out = run(scratch, &args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut found = Vec::new();
    fn walk(v: &serde_json::Value, found: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(map) => {
                if let (Some(a), Some(i)) = (map.get("account"), map.get("instance_id")) {
                    found.push((a.as_str().unwrap().to_string(), i.as_str().unwrap().to_string()));
                }
                map.values().for_each(|v| walk(v, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    walk(&json, &mut found);
    found.sort();
    found.dedup();
    found
}

#[test]
fn a_scan_covers_every_account_and_the_reports_keep_them_apart() {
    let sim = Sim::with_scenario(scenario());
    let server = &sim.server;
    let managed = |account: &str| -> Vec<String> {
        let mut ids: Vec<String> = server
            .instances_in(account, "us-east-1")
            .into_iter()
            .filter(|i| i.is_managed())
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(managed(HOME), managed(PAYMENTS), "the same ids in both accounts");

    let scratch = Scratch::new("accounts-scan");
    write_config(&scratch, &server.endpoint_url(), "");
    let out = run(&scratch, &["scan", "--group", "web", "--poll-interval", "100ms"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains(&format!("== home ({HOME}) us-east-1")), "{stdout}");
    assert!(stdout.contains(&format!("== payments ({PAYMENTS}) us-east-1")), "{stdout}");
    assert_eq!(stdout.matches("status    succeeded").count(), 2, "{stdout}");
    for account in [HOME, PAYMENTS] {
        let sends = server.stats_in(account, "us-east-1").unwrap().calls.get("SendCommand").copied();
        assert_eq!(sends, Some(1), "one scan command in {account}");
    }

    let listed = reported(&scratch);
    let of = |account: &str| -> Vec<String> {
        listed.iter().filter(|(a, _)| a == account).map(|(_, i)| i.clone()).collect()
    };
    assert!(of(HOME).len() >= managed(HOME).len(), "{listed:?}");
    assert_eq!(of(HOME), of(PAYMENTS), "each account's instances under its own id: {listed:?}");
    assert!(listed.iter().all(|(a, _)| a == HOME || a == PAYMENTS), "{listed:?}");

    // Scoping the group to the payments account: the home fleet leaves the reports' groups, and
    // a scan reaches the payments account only.
    write_config(&scratch, &server.endpoint_url(), "accounts = [\"payments\"]");
    let listed = reported(&scratch);
    assert!(!listed.is_empty() && listed.iter().all(|(a, _)| a == PAYMENTS), "{listed:?}");
    let out = run(&scratch, &["scan", "--group", "web", "--poll-interval", "100ms"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stdout.contains("== "), "one scope, no headings: {stdout}");
    assert_eq!(server.stats_in(PAYMENTS, "us-east-1").unwrap().calls.get("SendCommand").copied(), Some(2));
    assert_eq!(server.stats_in(HOME, "us-east-1").unwrap().calls.get("SendCommand").copied(), Some(1));
}

/// Baselines live in each account and region: `plan` shows, `apply` makes, and the daemon's
/// reconciliation would find, one set per scope.
#[test]
fn plan_and_apply_cover_every_account() {
    let sim = Sim::with_scenario(scenario());
    let server = &sim.server;
    let scratch = Scratch::new("accounts-apply");
    write_config(&scratch, &server.endpoint_url(), "");

    let out = run(&scratch, &["plan", "--format", "json"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let changes = plan["baselines"]["changes"].as_array().unwrap();
    let creates: Vec<&str> =
        changes.iter().filter(|c| c["action"] == "create").map(|c| c["account"].as_str().unwrap()).collect();
    assert_eq!(creates, [HOME, PAYMENTS], "{changes:#?}");

    let out = run(&scratch, &["plan"]);
    let (stdout, _) = text(&out);
    assert!(
        stdout.contains(&format!(
            "Patch baselines in SSM ({}): payments ({PAYMENTS}) us-east-1",
            server.endpoint_url()
        )),
        "{stdout}"
    );

    // Before apply, SSM in each account has no registration for the patch group yet.
    let out = run(&scratch, &["check", "--resolve", "--deny-warnings"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    for scope in [format!("home ({HOME}) us-east-1"), format!("payments ({PAYMENTS}) us-east-1")] {
        assert!(stderr.contains(&format!("warning: {scope}: group `web`")), "{scope}: {stderr}");
    }

    let out = run(&scratch, &["apply", "--yes"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("applied 4 change(s)"), "create and register, twice: {stdout}");
    for account in [HOME, PAYMENTS] {
        let calls = server.stats_in(account, "us-east-1").unwrap().calls;
        assert_eq!(calls.get("CreatePatchBaseline").copied(), Some(1), "{account}: {calls:?}");
        assert_eq!(calls.get("RegisterPatchBaselineForPatchGroup").copied(), Some(1), "{account}: {calls:?}");
    }
    let out = run(&scratch, &["apply", "--yes"]);
    assert!(text(&out).0.contains("no changes"), "{}", text(&out).0);

    // check --resolve judges each account's instances against that account's registrations.
    let out = run(&scratch, &["check", "--resolve", "--deny-warnings"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}

/// `--account` and `--region` narrow every report to part of the fleet: PCI scope is often one
/// account. Names resolve from the configuration (a member's role ARN) or, for the home
/// account, from what patchd learned when it connected.
#[test]
fn reports_narrow_to_an_account_or_a_region() {
    let sim = Sim::with_scenario(scenario());
    let scratch = Scratch::new("accounts-narrow");
    write_config(&scratch, &sim.server.endpoint_url(), "");

    // Before patchd ever connected, the home account's id is unknown to the reports (a report
    // only reads: the database must exist first).
    let out = run(&scratch, &["db", "migrate"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let out = run(&scratch, &["report", "compliance", "--account", "home"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("account `home`: the home account's id is not known yet"), "{stderr}");
    assert!(stderr.contains("run `patchd scan` or the daemon once"), "{stderr}");

    let out = run(&scratch, &["scan", "--group", "web", "--poll-interval", "100ms"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");

    let everything = reported(&scratch);
    let payments = reported_with(&scratch, &["--account", "payments"]);
    let home = reported_with(&scratch, &["--account", "home"]);
    assert!(!payments.is_empty() && payments.iter().all(|(a, _)| a == PAYMENTS), "{payments:?}");
    assert!(!home.is_empty() && home.iter().all(|(a, _)| a == HOME), "{home:?}");
    assert_eq!(home.len() + payments.len(), everything.len(), "{everything:?}");
    assert_eq!(reported_with(&scratch, &["--account", HOME]), home, "an id works like the name");
    assert_eq!(reported_with(&scratch, &["--account", PAYMENTS]), payments);
    assert_eq!(reported_with(&scratch, &["--region", "us-east-1"]), everything);

    // The SLA report: each account's findings only, in the full listing and in the summary
    // (a --limit reads per-patch counts from the store instead of every finding).
    let sla = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["report", "sla", "--format", "json"];
        args.extend_from_slice(extra);
        let out = run(&scratch, &args);
        assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
        serde_json::from_str(&support::stdout(&out)).unwrap()
    };
    let open = |report: &serde_json::Value| -> u64 {
        report["totals"].as_array().unwrap().iter().map(|c| c["count"].as_u64().unwrap()).sum()
    };
    let all = sla(&[]);
    let in_payments = sla(&["--account", "payments"]);
    let in_home = sla(&["--account", "home"]);
    let findings = in_payments["findings"].as_array().unwrap();
    assert!(!findings.is_empty() && findings.iter().all(|f| f["account"] == PAYMENTS), "{in_payments:#}");
    assert!(open(&in_payments) > 0);
    assert_eq!(open(&in_payments) + open(&in_home), open(&all));
    let summary = sla(&["--account", "payments", "--limit", "3"]);
    assert_eq!(summary["totals"], in_payments["totals"], "the summary counts what the listing counts");
    assert_eq!(summary["findings"].as_array().unwrap().len(), 3);
    assert!(summary["findings"].as_array().unwrap().iter().all(|f| f["account"] == PAYMENTS));

    // The evidence for one account says so, in its header and its machine-readable headline.
    let page = scratch.0.join("evidence-payments.html");
    let out = run(
        &scratch,
        &["report", "evidence", "--format", "html", "--account", "payments", "--out", page.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", support::stderr(&out));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(&format!("all configured groups, account {PAYMENTS} (payments)")), "{html}");
    let data = html.split("id=\"patchd-evidence-data\">").nth(1).unwrap().split("</script>").next().unwrap();
    let headline: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(
        (headline["account"].as_str(), headline["account_name"].as_str()),
        (Some(PAYMENTS), Some("payments"))
    );
    assert_eq!(headline["totals"], in_payments["totals"], "the evidence counts what `report sla` counts");

    // A name or region patchd does not know is an error that says what it knows.
    let out = run(&scratch, &["report", "sla", "--account", "payment"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        support::stderr(&out).contains(
            "account `payment`: no configured account has that name; configured accounts: home, payments"
        ),
        "{}",
        support::stderr(&out)
    );
    let out = run(&scratch, &["report", "coverage", "--region", "us-east-9"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        support::stderr(&out).contains("region `us-east-9`: no instance is recorded in it and no account is configured in it; known regions: us-east-1"),
        "{}",
        support::stderr(&out)
    );
}

/// Blind spots are counted per instance, and an instance is an (account, region, id): the two
/// accounts' unmanaged instances share their ids and are still twice as many blind spots, in
/// `report coverage` and in `/metrics` (which count through the one function the evidence
/// report uses).
#[test]
fn blind_spots_of_two_accounts_are_counted_apart_even_when_their_ids_coincide() {
    let sim = Sim::with_scenario(scenario_with(0.4));
    let unmanaged = |account: &str| -> Vec<String> {
        let mut ids: Vec<String> = sim
            .server
            .instances_in(account, "us-east-1")
            .into_iter()
            .filter(|i| !i.is_managed())
            .map(|i| i.id)
            .collect();
        ids.sort();
        ids
    };
    assert!(!unmanaged(HOME).is_empty(), "the scenario has unmanaged instances");
    assert_eq!(unmanaged(HOME), unmanaged(PAYMENTS), "with the same ids in both accounts");
    let scratch = Scratch::new("accounts-gaps");
    let port = support::free_port();
    write_config_with(&scratch, &sim.server.endpoint_url(), "", &format!("listen = \"127.0.0.1:{port}\""));
    // The scan records every instance of both accounts, coverage gaps included.
    let out = run(&scratch, &["scan", "--group", "web", "--poll-interval", "100ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = run(&scratch, &["report", "coverage", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut blind: Vec<(String, String)> = json["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["account"].as_str().unwrap().to_string(), g["instance_id"].as_str().unwrap().to_string()))
        .collect();
    blind.sort();
    blind.dedup();
    let expected = 2 * unmanaged(HOME).len();
    assert_eq!(blind.len(), expected, "{blind:?}");
    let table = stdout(&run(&scratch, &["report", "coverage"]));
    assert!(table.contains(&format!(": {expected} of ")), "the table's headline: {table}");

    let daemon = support::start_daemon(&scratch, 1, &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let metrics = support::wait_for(
        "/metrics",
        std::time::Duration::from_secs(40),
        || support::get(addr, "/metrics", None).filter(|a| a.status == 200),
        || scratch.read_log(1),
    );
    assert_eq!(
        support::metric(&metrics.body, "patchd_instances_with_coverage_gaps", ""),
        Some(expected as f64),
        "{}",
        metrics.body
    );
    assert!(support::stop_daemon(daemon).success(), "{}", scratch.read_log(1));
}
