//! The compliance sync as users meet it, under the faults production brings: `patchd scan`
//! and `patchd sync` against the demo fleet while fleet-sim throttles and fails calls (set
//! through `POST /_sim/faults`, as any client would), checked against a fresh read of the
//! simulator once the faults are off, and the sync backlog that `patchd run` reads again
//! within `sync_retry_interval`.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use fleet_sim::Scenario;
use patchd_aws::{AwsClients, PatchListing, StaticEndpoint};
use patchd_store::{OpenFindingFilter, OpenOptions, Store, WindowRunQuery, WindowRunStatus};
use support::{
    free_port, get, metric, metric_sum, patchd_toml, post_faults, run, scan_at_full_speed, stderr, stdout,
    Scratch, Sim,
};

/// The configuration: every group of the demo fleet by environment (production, staging,
/// development), and events to the simulator's EventBridge.
fn write_config(scratch: &Scratch, sim: &Sim, aws_extra: &str, daemon_extra: &str) {
    let daemon = format!("sync_interval = \"1h\"\n{daemon_extra}");
    let mut text = patchd_toml::daemon_and_aws(
        &scratch.state_dir(),
        Some(&sim.server.endpoint_url()),
        &daemon,
        aws_extra,
    );
    text.push_str("\n[events]\nbus_name = \"patchd\"\n");
    for environment in ["prod", "staging", "dev"] {
        text.push_str(&patchd_toml::group(environment, "Environment", environment));
    }
    std::fs::write(scratch.config(), text).unwrap();
}

fn store(sim: &Sim, scratch: &Scratch) -> Store {
    let url = format!("sqlite://{}", scratch.0.join("patchd.db").display());
    sim.rt.block_on(Store::open(&url, &OpenOptions { migrate: false, ..OpenOptions::default() })).unwrap()
}

fn scan_all(scratch: &Scratch) -> std::process::Output {
    scan_at_full_speed(scratch, &["prod", "staging", "dev"])
}

/// What SSM holds now, read afresh with faults off: the instances with a completed Scan or
/// Install, and every open (instance, patch).
struct Fresh {
    scanned: BTreeSet<String>,
    open: BTreeSet<(String, String)>,
}

fn fresh_read(sim: &Sim) -> Fresh {
    let url = sim.server.endpoint_url();
    let aws =
        AwsClients::with_static_credentials(&patchd_config::Aws::default(), &StaticEndpoint::simulator(&url));
    let managed: Vec<String> =
        sim.server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect();
    sim.rt.block_on(async {
        let states = aws.patch_states(&managed).await.unwrap();
        let scanned: BTreeSet<String> =
            states.iter().filter(|s| s.operation_ended_at.is_some()).map(|s| s.instance_id.clone()).collect();
        let mut open = BTreeSet::new();
        for id in &scanned {
            for patch in aws.instance_patches(id, PatchListing::Open).await.unwrap() {
                open.insert((id.clone(), patch.kb_id));
            }
        }
        Fresh { scanned, open }
    })
}

/// What patchd recorded: the instances with a compliance summary, and every open finding.
fn recorded(sim: &Sim, scratch: &Scratch) -> Fresh {
    let store = store(sim, scratch);
    sim.rt.block_on(async {
        let scanned = store
            .instances()
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.compliance.is_some())
            .map(|r| r.instance.instance_id)
            .collect();
        let open = store
            .open_findings(&OpenFindingFilter::default(), None)
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.instance.instance_id.clone(), f.patch.patch_id.clone()))
            .collect();
        store.close().await;
        Fresh { scanned, open }
    })
}

fn assert_matches_ssm(sim: &Sim, scratch: &Scratch) {
    let ssm = fresh_read(sim);
    let ours = recorded(sim, scratch);
    assert!(ssm.scanned.len() > 200, "the demo fleet was scanned: {}", ssm.scanned.len());
    let missing: Vec<&String> = ssm.scanned.difference(&ours.scanned).collect();
    assert!(
        missing.is_empty(),
        "{} scanned instances not recorded, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    assert_eq!(ours.open.len(), ssm.open.len(), "open findings against a fresh read");
    assert!(ours.open == ssm.open, "the open findings differ from a fresh read of the simulator");
}

#[test]
fn a_scan_while_ssm_throttles_and_fails_records_every_result() {
    let sim = Sim::with_scenario(Scenario::demo());
    let scratch = Scratch::new("sync-faults");
    write_config(&scratch, &sim, "", "");
    post_faults(&sim, r#"{"throttle_rate": 0.3, "error_rate": 0.05}"#);

    let out = scan_all(&scratch);
    let (text, errors) = (stdout(&out), stderr(&out));
    let stats = sim.server.stats();
    assert!(stats.throttled("DescribeInstancePatches") > 0, "the sync's reads were throttled");
    assert!(stats.failed("DescribeInstancePatches") > 0, "and failed");
    assert_eq!(out.status.code(), Some(0), "{text}\n{errors}");
    assert!(!text.contains("sync      incomplete"), "{text}");
    for line in text.lines().filter(|l| l.starts_with("status")) {
        assert_eq!(line, "status    succeeded", "{text}");
    }
    assert!(
        !sim.server.events().iter().any(|e| e.detail_type == "Sync Incomplete"),
        "nothing was left unread"
    );

    post_faults(&sim, r#"{"throttle_rate": 0.0, "error_rate": 0.0}"#);
    assert_matches_ssm(&sim, &scratch);
}

#[test]
fn reads_that_stay_impossible_end_incomplete_and_the_daemon_reads_them_within_its_retry_interval() {
    let sim = Sim::with_scenario(Scenario::demo());
    let scratch = Scratch::new("sync-unreadable");
    let port = free_port();
    // One attempt per read: the sync's own retries (five rounds) are what is tested here.
    write_config(
        &scratch,
        &sim,
        "max_attempts = 1",
        &format!("listen = \"127.0.0.1:{port}\"\nsync_retry_interval = \"5s\""),
    );
    let mut unreadable: Vec<String> = sim
        .server
        .instances()
        .into_iter()
        .filter(|i| i.is_managed() && i.missing.is_some_and(|n| n > 0))
        .map(|i| i.id)
        .collect();
    unreadable.sort();
    unreadable.truncate(3);
    let ids = serde_json::to_string(&unreadable).unwrap();
    post_faults(&sim, &format!(r#"{{"unreadable_instances": {ids}}}"#));

    let out = scan_all(&scratch);
    let (text, errors) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(5), "{text}\n{errors}");
    assert!(text.contains("sync      incomplete: 3 instances not read"), "{text}");
    assert!(errors.contains("sync incomplete: the results of 3 instances could not be read"), "{errors}");
    let incomplete: Vec<serde_json::Value> = sim
        .server
        .events()
        .into_iter()
        .filter(|e| e.detail_type == "Sync Incomplete")
        .map(|e| e.detail)
        .collect();
    assert_eq!(incomplete.len(), 1, "one Sync Incomplete event: {incomplete:?}");
    assert_eq!(incomplete[0]["unread"], 3);
    assert_eq!(incomplete[0]["source"], "window:manual:scan:dev+prod+staging", "{:?}", incomplete[0]);
    let mut sample: Vec<String> =
        incomplete[0]["sample"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    sample.sort();
    assert_eq!(sample, unreadable);
    let db = store(&sim, &scratch);
    let (runs, backlog) = sim.rt.block_on(async {
        let runs = db.window_runs(&WindowRunQuery::default()).await.unwrap();
        let backlog = db.sync_backlog(None).await.unwrap();
        db.close().await;
        (runs, backlog)
    });
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].status, runs[0].sync_unread), (WindowRunStatus::Incomplete, 3), "{runs:?}");
    let held: Vec<&str> = backlog.iter().map(|e| e.instance_id.as_str()).collect();
    assert_eq!(held, unreadable.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(backlog.iter().all(|e| e.last_error.contains("InternalServerError")), "{backlog:?}");

    // `patchd sync` by hand, still failing: it says so and exits 5 again.
    let out = run(&scratch, &["sync"]);
    assert_eq!(out.status.code(), Some(5), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("status    incomplete: 3 instances not read"), "{}", stdout(&out));

    // The daemon shows the backlog, then reads it once the reads work again.
    let daemon = support::start_daemon(&scratch, 1, &[("PATCHD_LOG", "off")]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // The sum over accounts and regions, once the family is exposed at all.
    let unread = || {
        let answer = get(addr, "/metrics", None)?;
        answer
            .body
            .contains("\npatchd_sync_unread_instances")
            .then(|| metric_sum(&answer.body, "patchd_sync_unread_instances", ""))
    };
    support::wait_for(
        "the backlog in /metrics",
        Duration::from_secs(30),
        || unread().filter(|n| *n == 3.0),
        || scratch.read_log(1),
    );
    post_faults(&sim, r#"{"unreadable_instances": []}"#);
    support::wait_for(
        "the daemon to read the backlog",
        Duration::from_secs(30),
        || unread().filter(|n| *n == 0.0),
        || scratch.read_log(1),
    );
    // The latest sync's figures reach the metrics as a value, whatever the log says: the
    // daemon runs with every log line off.
    let last = support::wait_for(
        "the backlog sync in /metrics",
        Duration::from_secs(30),
        || {
            get(addr, "/metrics", None)
                .and_then(|a| metric(&a.body, "patchd_last_sync_duration_seconds", "source=\"backlog\""))
        },
        || scratch.read_log(1),
    );
    assert!(last > 0.0, "{last}");
    let status = support::stop_daemon(daemon);
    assert!(status.success(), "{status:?}");

    assert_matches_ssm(&sim, &scratch);
    let db = store(&sim, &scratch);
    let backlog = sim.rt.block_on(async {
        let backlog = db.sync_backlog(None).await.unwrap();
        db.close().await;
        backlog
    });
    assert!(backlog.is_empty(), "{backlog:?}");
}
