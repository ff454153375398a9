//! `patchd run`, `patchd scan` as processes against the fleet simulator (in this test's
//! process, on port 0): a window fires and patches a group, a SIGKILL mid-rollout loses and
//! duplicates nothing, SIGHUP with a broken file keeps the old schedule, the baselines are
//! applied at start-up and on reload, and a manual scan prints its summary.

mod support;

use std::fs::File;
use std::process::{Child, Output};
use std::time::Duration;

use chrono::{DateTime, Utc};
use patchd_store::{CommandStatus, OpenOptions, Store, WindowRunQuery, WindowRunRecord, WindowRunStatus};
use support::{patchd, patchd_toml, signal, stop_daemon, web_fleet, web_group, Scratch, Sim};

const GROUP_SIZE: usize = 8;

/// A simulator with one group `web` (a quarter of it without an agent), running
/// `time_scale` times real time, and the runtime that serves it.
fn sim(time_scale: f64) -> Sim {
    let web = web_group(GROUP_SIZE).with_unmanaged(0.25).with_missing(0.6);
    Sim::with_scenario(web_fleet("daemon-process", 5, time_scale, 40, web))
}

fn database(scratch: &Scratch) -> String {
    format!("sqlite://{}", scratch.0.join("patchd.db").display())
}

/// The group `web`, then `windows` (any further sections).
fn write_config(scratch: &Scratch, sim: &Sim, windows: &str) {
    // Tests run daemons side by side: each takes a free port for its HTTP endpoint.
    let daemon = "sync_interval = \"1h\"\nlisten = \"127.0.0.1:0\"";
    let text = [
        patchd_toml::daemon_and_aws(&scratch.state_dir(), Some(&sim.server.endpoint_url()), daemon, ""),
        patchd_toml::group("web", "Role", "web"),
        windows.to_string(),
    ];
    std::fs::write(scratch.config(), text.concat()).unwrap();
}

/// A window that opens `seconds` from now (SSM's `at(...)`, UTC), scans `web` and then
/// installs it one instance at a time.
fn window_at(name: &str, at: DateTime<Utc>) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    patchd_toml::scan_then_install_once(name, &at, "", "max_concurrency = 1\nmax_errors = 1")
}

/// `patchd run`, logging JSON to log file `n`.
fn start_daemon(scratch: &Scratch, n: usize) -> Child {
    support::start_daemon(scratch, n, &[])
}

fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    support::wait_for(what, timeout, check, String::new)
}

/// The recorded runs of `window`, or why they cannot be read: before the daemon has created
/// and migrated its database, polls get an error and try again.
fn try_window_runs(sim: &Sim, scratch: &Scratch, window: &str) -> Result<Vec<WindowRunRecord>, String> {
    sim.rt.block_on(async {
        let store =
            Store::open(&database(scratch), &OpenOptions { migrate: false, ..OpenOptions::default() })
                .await
                .map_err(|e| e.to_string())?;
        let runs = store.window_runs(&WindowRunQuery { window: Some(window), ..Default::default() }).await;
        store.close().await;
        runs.map_err(|e| e.to_string())
    })
}

/// The recorded runs of `window`, for assertions: a database that cannot be read fails the
/// test rather than passing for "no runs".
fn window_runs(sim: &Sim, scratch: &Scratch, window: &str) -> Vec<WindowRunRecord> {
    try_window_runs(sim, scratch, window).unwrap_or_else(|e| panic!("window runs of {window}: {e}"))
}

fn invocations(
    sim: &Sim,
    scratch: &Scratch,
    run: &WindowRunRecord,
    task: usize,
) -> Vec<patchd_store::InvocationRecord> {
    sim.rt.block_on(async {
        let store = Store::open(&database(scratch), &OpenOptions::default()).await.unwrap();
        let found = store.invocations(run.tasks[task].id).await.unwrap();
        store.close().await;
        found
    })
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_window_fires_patches_its_group_and_survives_sigkill_mid_rollout() {
    let sim = sim(60.0);
    let managed = sim.managed();
    assert!(managed >= 3, "enough managed instances for several install batches");
    let scratch = Scratch::new("daemon-sigkill");
    let at = Utc::now() + chrono::Duration::seconds(4);
    write_config(&scratch, &sim, &window_at("soon", at));

    let daemon = start_daemon(&scratch, 1);
    // Kill the daemon once the install is under way (scan done, install sending).
    let mut daemon = daemon;
    wait_for("the install task to start", Duration::from_secs(40), || {
        let runs = try_window_runs(&sim, &scratch, "soon").ok()?;
        let run = runs.first()?;
        (run.tasks.len() == 2 && run.tasks[1].status == CommandStatus::InProgress && sim.sends() >= 2)
            .then_some(())
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let log = scratch.read_log(1);
    assert!(log.contains("window started"), "{log}");
    let run = &window_runs(&sim, &scratch, "soon")[0];
    assert!(matches!(run.status, WindowRunStatus::Running), "killed mid-run: {run:?}");
    assert_eq!(run.scheduled_start, at.with_nanosecond0());

    // Restart: the run is resumed from the store and completes.
    let daemon = start_daemon(&scratch, 2);
    let run = support::wait_for(
        "the resumed run to finish",
        Duration::from_secs(45),
        || {
            let runs = try_window_runs(&sim, &scratch, "soon").ok()?;
            runs.into_iter()
                .next()
                .filter(|r| !matches!(r.status, WindowRunStatus::Running | WindowRunStatus::Late))
        },
        || format!("{:#?}\n{}", try_window_runs(&sim, &scratch, "soon"), scratch.read_log(2)),
    );
    let status = stop_daemon(daemon);
    let log = scratch.read_log(2);
    assert!(status.success(), "exit after SIGTERM: {status:?}\n{log}");
    assert!(log.contains("resuming"), "{log}");
    assert!(log.contains("window run summary"), "{log}");
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}\n{log}");

    // Nothing lost: every managed instance has its install invocation, successful.
    let installs = invocations(&sim, &scratch, &run, 1);
    assert_eq!(installs.len(), managed, "{installs:#?}");
    assert!(installs.iter().all(|i| i.status == CommandStatus::Success), "{installs:#?}");
    // Nothing duplicated: SSM saw exactly one scan and one install invocation per instance.
    let stats = sim.server.stats();
    let sent: u64 =
        stats.invocations_by_status.iter().filter(|(k, _)| !k.contains('/')).map(|(_, v)| v).sum();
    assert_eq!(sent, 2 * managed as u64, "{stats:#?}");
    let commands: u64 = stats.commands_by_status.values().sum();
    assert_eq!(commands, stats.calls("SendCommand"), "every SendCommand created one command: {stats:#?}");
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_schedule() {
    let sim = sim(60.0);
    let scratch = Scratch::new("daemon-sighup");
    let at = Utc::now() + chrono::Duration::seconds(6);
    write_config(&scratch, &sim, &window_at("kept", at));
    let daemon = start_daemon(&scratch, 1);
    wait_for("the window to be armed", Duration::from_secs(20), || {
        scratch.read_log(1).contains("next firing armed").then_some(())
    });

    std::fs::write(scratch.config(), "[daemon]\nstate_dir = \"x\"\n\n[[window]]\nname = \"broken\"\nschedule = \"cron(99 2 * * ? *)\"\nduration_hours = 2\n").unwrap();
    signal(&daemon, "HUP");
    let log = wait_for("the reload to be refused", Duration::from_secs(10), || {
        let log = scratch.read_log(1);
        log.contains("keeping the previous configuration").then_some(log)
    });
    let config = scratch.config().display().to_string();
    assert!(log.contains(&format!("{config}:6:")), "each error is logged with its file:line: {log}");

    // The old schedule still fires.
    let run = wait_for("the old window to run", Duration::from_secs(40), || {
        try_window_runs(&sim, &scratch, "kept")
            .ok()?
            .into_iter()
            .find(|r| r.status == WindowRunStatus::Succeeded)
    });
    assert_eq!(run.tasks.len(), 2);
    assert!(window_runs(&sim, &scratch, "broken").is_empty());
    let status = stop_daemon(daemon);
    assert!(status.success(), "{}", scratch.read_log(1));
}

fn baseline(approve_after_days: u32) -> String {
    [patchd_toml::al2_baseline("patchd-web", "web", ""), patchd_toml::security_rule(approve_after_days, "")]
        .concat()
}

#[test]
fn the_daemon_applies_baselines_at_start_up_and_on_reload() {
    let sim = sim(1.0);
    let scratch = Scratch::new("daemon-baselines");
    write_config(&scratch, &sim, &baseline(7));
    let daemon = start_daemon(&scratch, 1);
    let calls = |operation: &str| sim.server.stats().calls(operation);
    support::wait_for(
        "the baseline to be created and registered",
        Duration::from_secs(20),
        || (calls("RegisterPatchBaselineForPatchGroup") == 1).then_some(()),
        || scratch.read_log(1),
    );
    assert_eq!(calls("CreatePatchBaseline"), 1);

    write_config(&scratch, &sim, &baseline(2));
    signal(&daemon, "HUP");
    support::wait_for(
        "the changed rule to be applied",
        Duration::from_secs(20),
        || (calls("UpdatePatchBaseline") == 1).then_some(()),
        || scratch.read_log(1),
    );
    let status = stop_daemon(daemon);
    assert!(status.success(), "{}", scratch.read_log(1));
    let log = scratch.read_log(1);
    assert!(log.contains("baseline change made"), "{log}");

    // A restart with nothing changed changes nothing.
    let daemon = start_daemon(&scratch, 2);
    support::wait_for(
        "the restarted daemon to find the baselines in line",
        Duration::from_secs(20),
        || scratch.read_log(2).contains("already in line with the configuration").then_some(()),
        || scratch.read_log(2),
    );
    assert!(stop_daemon(daemon).success());
    assert_eq!((calls("CreatePatchBaseline"), calls("UpdatePatchBaseline")), (1, 1));

    let audit = sim.rt.block_on(async {
        let store = Store::open(&database(&scratch), &OpenOptions::default()).await.unwrap();
        store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap()
    });
    let actions: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e.action.contains("baseline") || e.action.contains("patch-group"))
        .map(|e| (e.action.clone(), e.actor.clone()))
        .collect();
    let by_daemon = |action: &str| (action.to_string(), "daemon".to_string());
    assert_eq!(
        actions,
        vec![by_daemon("create-baseline"), by_daemon("register-patch-group"), by_daemon("update-baseline")]
    );
}

#[test]
fn a_manual_scan_prints_its_summary_and_respects_the_group_lock() {
    let sim = sim(300.0);
    let managed = sim.managed();
    let scratch = Scratch::new("daemon-scan");
    write_config(&scratch, &sim, "");

    let out = patchd(&scratch).args(["scan", "--group", "web", "--poll-interval", "100ms"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("run       manual:scan:web"), "{stdout}");
    assert!(stdout.contains("status    succeeded"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("scan ")).unwrap_or_else(|| panic!("{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..6],
        ["scan", "Scan", "Success", &GROUP_SIZE.to_string(), &managed.to_string(), "0"],
        "{row}"
    );
    let runs = window_runs(&sim, &scratch, "manual:scan:web");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].status, WindowRunStatus::Succeeded);

    // Another run holding the group's lock: refused, naming the holder.
    let locks = scratch.0.join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    // Groups are locked per account and region: the simulator's account, in us-east-1.
    let path = locks.join(format!("group-{}-us-east-1-web.lock", sim.server.account_id()));
    let lock = File::create(&path).unwrap();
    lock.try_lock().unwrap();
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    let sends = sim.sends();
    let out = patchd(&scratch).args(["install", "--group", "web"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("pid {}", std::process::id())), "{stderr}");
    assert_eq!(sim.sends(), sends, "the locked install sent nothing");
    drop(lock);

    // Unknown groups are named.
    let out = patchd(&scratch).args(["scan", "--group", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("unknown group(s) nope"), "{}", text(&out).1);
}

trait WholeSeconds {
    fn with_nanosecond0(self) -> Self;
}

impl WholeSeconds for DateTime<Utc> {
    fn with_nanosecond0(self) -> Self {
        DateTime::from_timestamp(self.timestamp(), 0).unwrap()
    }
}

#[test]
fn run_now_halted_by_a_wave_gate_exits_6_and_says_why() {
    let sim = sim(300.0);
    let scratch = Scratch::new("daemon-gate");
    let window = [
        patchd_toml::window("canary", "cron(0 2 * * ? *)", 4, 1),
        patchd_toml::task(
            "install",
            "install",
            "web",
            "waves = [\"1\", \"100%\"]\n[window.task.gate]\ncommand = [\"/bin/sh\", \"-c\", \"echo lb unhealthy; exit 2\"]",
        ),
    ]
    .concat();
    write_config(&scratch, &sim, &window);

    let out = patchd(&scratch).args(["run-now", "canary", "--poll-interval", "100ms"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(6), "{stdout}\n{stderr}");
    assert!(stdout.contains("status    failed"), "{stdout}");
    assert!(
        stdout.contains("install: waves 1 of 2 sent, 0 gate(s) passed; the gate after wave 1 of 2 failed"),
        "{stdout}"
    );
    assert!(
        stderr.contains(
            "task `install`: the gate after wave 1 of 2 failed: the gate command vetoed the wave (exit 2)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("wave-gate-failed"), "{stderr}");
    let installs = sim.server.commands().into_iter().filter(|c| c.operation == "Install").count();
    assert_eq!(installs, 1, "only the canary was sent");
}

#[test]
fn run_now_of_a_promoting_window_installs_what_staging_installed_and_plan_shows_it() {
    let sim = sim(300.0);
    sim.server.create_bucket("acme-patch-lists");
    let scratch = Scratch::new("daemon-promote");
    let windows = [
        patchd_toml::window("staging", "cron(0 2 ? * TUE *)", 4, 1),
        patchd_toml::task("install", "install", "web", "max_concurrency = 10\nmax_errors = 10"),
        patchd_toml::window("prod", "cron(0 2 ? * THU *)", 4, 1),
        patchd_toml::task(
            "install",
            "install",
            "web",
            "max_concurrency = 10\nmax_errors = 10\n[window.task.promote]\nfrom = \"staging\"\nbucket = \"acme-patch-lists\"",
        ),
    ]
    .concat();
    write_config(&scratch, &sim, &windows);

    // Before staging ran, plan says the promotion has nothing to install, and run-now refuses.
    let plan = patchd(&scratch).args(["plan", "--offline"]).output().unwrap();
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Promotion: prod task install installs only what window staging installed"),
        "{stdout}"
    );
    let early = patchd(&scratch).args(["run-now", "prod", "--poll-interval", "100ms"]).output().unwrap();
    let (stdout, stderr) = text(&early);
    assert_eq!(early.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("window `staging` has no succeeded run whose installs patchd read"), "{stderr}");

    let staged = patchd(&scratch).args(["run-now", "staging", "--poll-interval", "100ms"]).output().unwrap();
    let (stdout, stderr) = text(&staged);
    assert_eq!(staged.status.code(), Some(0), "{stdout}\n{stderr}");
    let recorded: usize = stdout
        .split("install: recorded the ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the summary says what staging installed: {stdout}"));
    assert!(recorded > 0, "{stdout}");

    let plan = patchd(&scratch).args(["plan", "--offline", "--format", "json"]).output().unwrap();
    let (stdout, stderr) = text(&plan);
    assert_eq!(plan.status.code(), Some(0), "{stdout}\n{stderr}");
    let plan: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let promotion = &plan["promotions"][0];
    assert_eq!((promotion["window"].as_str(), promotion["from"].as_str()), (Some("prod"), Some("staging")));
    assert_eq!(promotion["patches"].as_array().map(Vec::len), Some(recorded), "{promotion:#}");

    let promoted = patchd(&scratch).args(["run-now", "prod", "--poll-interval", "100ms"]).output().unwrap();
    let (stdout, stderr) = text(&promoted);
    assert_eq!(promoted.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "install: installs the {recorded} patch(es) window `staging` installed in run"
        )),
        "{stdout}"
    );
    let with_list = sim
        .server
        .commands()
        .into_iter()
        .filter(|c| {
            c.parameters
                .get("InstallOverrideList")
                .is_some_and(|v| v[0].starts_with("s3://acme-patch-lists/"))
        })
        .count();
    assert!(with_list > 0, "production's commands carry the install list");

    // The evidence report lists the promotion with the set it installed.
    let evidence = scratch.0.join("evidence.html");
    let out = patchd(&scratch)
        .args(["report", "evidence", "--format", "html", "--out", evidence.to_str().unwrap()])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let html = std::fs::read_to_string(&evidence).unwrap();
    let section = html.split("<section id=\"promotions\">").nth(1).expect("a Promotions section");
    let first_patch = plan["promotions"][0]["patches"][0]["id"].as_str().unwrap();
    assert!(section.contains("window staging run"), "{section}");
    assert!(section.contains(first_patch), "the promoted patch ids are listed: {section}");
}
