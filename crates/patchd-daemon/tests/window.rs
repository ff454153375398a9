//! Window occurrences against the fleet simulator, in-process on port 0: what a run sends,
//! what the store holds afterwards, the cutoff, missed occurrences, and resumption.

mod support;

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use fleet_sim::Scenario;
use patchd_daemon::scheduler::{self, Control};
use patchd_daemon::window::{self, RunEnd, RunPlan, RunSummary};
use patchd_store::{CommandStatus, FindingQuery, WindowRunQuery, WindowRunRecord, WindowRunStatus};
use support::fleet::web_group;
use support::{never_stop, patchd_toml, scheduler_settings, web_fleet, Fixture};
use tokio::sync::{mpsc, watch};

const GROUP_SIZE: usize = 8;

/// One group of Amazon Linux 2 instances, a quarter of them without an SSM agent, and a
/// clock running `time_scale` times real time.
fn scenario(time_scale: f64) -> Scenario {
    let web = web_group(GROUP_SIZE).with_unmanaged(0.25).with_missing(0.6);
    web_fleet("daemon-window", 11, time_scale, 40, web)
}

/// patchd's configuration: group `web`, and windows whose tasks scan then install it.
fn config_text(state_dir: &str) -> String {
    [
        patchd_toml::daemon_and_aws(state_dir, None, "", ""),
        patchd_toml::group("web", "Role", "web"),
        patchd_toml::window("nightly", "cron(0 2 * * ? *)", 2, 1),
        patchd_toml::task("scan", "scan", "web", "priority = 1"),
        patchd_toml::task("install", "install", "web", "priority = 2\nmax_concurrency = 2\nmax_errors = 1"),
        patchd_toml::window("cancelling", "cron(0 4 * * ? *)", 1, 0),
        "cutoff_behavior = \"CANCEL_TASK\"\n".to_string(),
        patchd_toml::task("install", "install", "web", ""),
        patchd_toml::scan_window("hourly-scan", "rate(1 hour)", 1, 0, "web"),
    ]
    .concat()
}

async fn fixture(name: &str, time_scale: f64) -> Fixture {
    Fixture::start("window", name, scenario(time_scale), config_text).await
}

fn managed(f: &Fixture) -> usize {
    f.server.instances().iter().filter(|i| i.is_managed()).count()
}

async fn execute(f: &Fixture, plan: &RunPlan, stop: watch::Receiver<bool>) -> RunSummary {
    f.execute(plan, stop).await
}

async fn runs(f: &Fixture, window: &str) -> Vec<WindowRunRecord> {
    f.ctx.store.window_runs(&WindowRunQuery { window: Some(window), ..Default::default() }).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_occurrence_scans_then_installs_its_group() {
    let f = fixture("occurrence", 600.0).await;
    let managed = managed(&f);
    assert!(managed > 0 && managed < GROUP_SIZE, "the scenario mixes managed and unmanaged instances");
    let window = f.config.window("nightly").unwrap();
    let start = Utc::now();
    let summary = execute(&f, &RunPlan::for_window(window, start), never_stop()).await;

    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{summary:#?}");
    assert!(!summary.late);
    assert_eq!(summary.tasks.len(), 2);
    for (task, name) in summary.tasks.iter().zip(["scan", "install"]) {
        assert_eq!(task.name, name);
        assert_eq!(task.status, CommandStatus::Success, "{task:?}");
        assert_eq!(task.targeted, GROUP_SIZE, "every instance of the group is in scope");
        assert_eq!(task.gaps, GROUP_SIZE - managed, "unmanaged instances are coverage gaps");
        assert_eq!(task.succeeded, managed);
        assert_eq!(task.not_sent, 0);
    }
    assert_eq!(summary.skipped(), 2 * (GROUP_SIZE - managed));
    assert!(summary.api_calls() > 0);

    // The run and its tasks, in order, in the store.
    let recorded = runs(&f, "nightly").await;
    assert_eq!(recorded.len(), 1);
    let run = &recorded[0];
    assert_eq!(run.status, WindowRunStatus::Succeeded);
    assert_eq!(run.scheduled_start.timestamp(), start.timestamp());
    assert!(run.started_at.is_some() && run.ended_at.is_some());
    let tasks: Vec<(&str, CommandStatus)> = run.tasks.iter().map(|t| (t.name.as_str(), t.status)).collect();
    assert_eq!(tasks, [("scan", CommandStatus::Success), ("install", CommandStatus::Success)]);
    assert!(run.tasks[0].ended_at <= run.tasks[1].started_at, "priority 1 finishes before priority 2 starts");
    let invocations = f.ctx.store.invocations(run.tasks[1].id).await.unwrap();
    assert_eq!(invocations.len(), managed, "one install invocation per managed instance");

    // Inventory keeps the gaps, with their coverage.
    let instances = f.ctx.store.instances().await.unwrap();
    assert_eq!(instances.len(), GROUP_SIZE);
    assert_eq!(instances.iter().filter(|i| !i.ssm_managed).count(), GROUP_SIZE - managed);

    // The syncs after scan and install: findings opened by the scan, remediated by the install.
    let findings = f.ctx.store.findings(&FindingQuery::default()).await.unwrap().findings;
    assert!(!findings.is_empty(), "the scan found missing patches");
    assert!(findings.iter().any(|x| x.installed_at.is_some()), "the install remediated findings");

    // The run's identity is in the audit log, before the work.
    let audit = f.ctx.store.audit_since(start - chrono::Duration::seconds(5), None).await.unwrap();
    let actions: Vec<&str> = audit.iter().map(|e| e.action.as_str()).collect();
    let first = actions.iter().position(|a| *a == window::RUN_START_ACTION).expect("start recorded");
    assert!(actions.iter().skip(first).any(|a| *a == "window-run-end"), "{actions:?}");

    // Firing the same occurrence again does nothing.
    let sends = f.server.stats().calls("SendCommand");
    let again = execute(&f, &RunPlan::for_window(window, start), never_stop()).await;
    assert_eq!(again.end, RunEnd::AlreadyDone(WindowRunStatus::Succeeded));
    assert_eq!(f.server.stats().calls("SendCommand"), sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_starts_after_end_minus_cutoff() {
    // Scans take about two real seconds; releasing stops one second into the run.
    let f = fixture("cutoff", 20.0).await;
    let window = f.config.window("nightly").unwrap();
    let stop_at = DateTime::from_timestamp(Utc::now().timestamp() + 1, 0).unwrap();
    let start = stop_at - window.duration + window.cutoff;
    let plan = RunPlan::for_window(window, start);
    assert_eq!(plan.stop_releasing_at, Some(stop_at));
    let summary = execute(&f, &plan, never_stop()).await;

    assert_eq!(summary.tasks[0].name, "scan");
    assert_eq!(summary.tasks[0].succeeded, managed(&f), "the scan released before the cutoff finished");
    assert_eq!(summary.tasks[1].name, "install");
    assert_eq!(summary.tasks[1].status, CommandStatus::Cancelled, "the install never started");
    assert_eq!(summary.tasks[1].send_calls, 0);
    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Cancelled));
    let run = &runs(&f, "nightly").await[0];
    assert_eq!(run.status, WindowRunStatus::Cancelled);
    assert_eq!(run.tasks[1].status, CommandStatus::Cancelled);
    assert_eq!(run.tasks[1].started_at, None);
    let invocations = f.ctx.store.invocations(run.tasks[1].id).await.unwrap();
    assert!(invocations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_task_cancels_what_still_runs_at_the_cutoff() {
    // Installs take about six real seconds; the cutoff comes after two.
    let f = fixture("cancel", 20.0).await;
    let window = f.config.window("cancelling").unwrap();
    let stop_at = DateTime::from_timestamp(Utc::now().timestamp() + 2, 0).unwrap();
    let plan = RunPlan::for_window(window, stop_at - window.duration);
    assert!(plan.cancel_at_cutoff);
    let summary = execute(&f, &plan, never_stop()).await;
    let task = &summary.tasks[0];
    assert_eq!(task.status, CommandStatus::Cancelled, "{summary:#?}");
    assert_eq!(task.cancelled, managed(&f), "{task:?}");
    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Cancelled));
    let audit = f.ctx.store.audit_since(plan.scheduled_start, None).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "cancel-at-cutoff"), "the cancellation is audited");
    assert!(f.server.stats().calls("CancelCommand") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_occurrence_past_its_cutoff_is_recorded_missed() {
    let f = fixture("missed", 600.0).await;
    let window = f.config.window("nightly").unwrap();
    let start = Utc::now() - chrono::Duration::hours(3);
    let summary = execute(&f, &RunPlan::for_window(window, start), never_stop()).await;
    assert_eq!(summary.end, RunEnd::Missed);
    let run = &runs(&f, "nightly").await[0];
    assert_eq!(run.status, WindowRunStatus::Missed);
    assert_eq!(run.started_at, None);
    assert!(run.tasks.is_empty());
    assert_eq!(f.server.stats().calls("SendCommand"), 0);
    let audit = f.ctx.store.audit_since(start, None).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "window-missed" && e.target.as_deref() == Some("nightly")));
}

/// An hourly scan whose latest occurrence is half an hour before `now`, whatever the time of
/// day: the window's schedule and that occurrence.
///
/// `scheduler::run` reads the wall clock, so the test cannot hand it an instant; it hands it
/// a schedule instead, one that puts `now` in the middle of an occurrence. With occurrences at
/// the top of each hour, a test run in an hour's first minute would start within
/// [`window::LATE_GRACE`], not late.
fn hourly_half_an_hour_before(now: DateTime<Utc>) -> (String, DateTime<Utc>) {
    let minute = DateTime::from_timestamp(now.timestamp() - now.timestamp() % 60, 0).unwrap();
    let occurrence = minute - chrono::Duration::minutes(30);
    (format!("cron({} * * * ? *)", occurrence.minute()), occurrence)
}

/// After a downtime: occurrences that can no longer run are recorded missed, the open one
/// starts late and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_records_missed_occurrences_and_starts_the_open_one_late() {
    let f = fixture("catch-up", 600.0).await;
    let now = Utc::now();
    let (schedule, hour) = hourly_half_an_hour_before(now);
    // The hourly window last ran five hours ago.
    window::record_missed(
        &f.ctx,
        "hourly-scan",
        hour - chrono::Duration::hours(5),
        now,
        "seeded by the test",
    )
    .await
    .unwrap();

    let (tx, rx) = mpsc::channel(4);
    let settings = scheduler_settings(&f.dir);
    // Only the hourly window, so that the time of day the test runs at cannot open another.
    let mut config = f.dir.config(&config_text(f.dir.to_str().unwrap()).replace("rate(1 hour)", &schedule));
    config.windows.retain(|w| w.name == "hourly-scan");
    let daemon = tokio::spawn(scheduler::run(vec![f.ctx.clone()], config, settings, rx));
    let late_run = loop {
        let found = runs(&f, "hourly-scan").await;
        if let Some(run) =
            found.iter().find(|r| r.scheduled_start == hour && r.status == WindowRunStatus::Succeeded)
        {
            break run.clone();
        }
        assert!(Utc::now() - now < chrono::Duration::seconds(30), "the late run did not finish: {found:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tx.send(Control::Stop).await.unwrap();
    daemon.await.unwrap().unwrap();

    let recorded = runs(&f, "hourly-scan").await;
    let missed: Vec<DateTime<Utc>> =
        recorded.iter().filter(|r| r.status == WindowRunStatus::Missed).map(|r| r.scheduled_start).collect();
    let expected: Vec<DateTime<Utc>> = (1..=5).map(|h| hour - chrono::Duration::hours(h)).collect();
    assert_eq!(missed, expected, "most recent first: four missed while down, plus the seeded one");
    let audit = f.ctx.store.audit_since(now - chrono::Duration::seconds(1), None).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "window-missed").count(), 4 + 1);
    // The run's `late` status gives way to its final one; what stays is the audit entry its
    // late start wrote, naming the run and how late it was.
    let late_starts: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|e| e.action == "window-late-start" && e.target.as_deref() == Some("hourly-scan"))
        .filter_map(|e| e.details.as_ref())
        .collect();
    assert_eq!(late_starts.len(), 1, "a late start says so: {audit:#?}");
    assert_eq!(late_starts[0]["window_run_id"], late_run.id.get(), "{late_starts:?}");
    let late_seconds = late_starts[0]["late_seconds"].as_i64().unwrap();
    let started_late_by = late_run.started_at.unwrap() - hour;
    assert!(started_late_by > window::LATE_GRACE, "{started_late_by}");
    assert_eq!(late_seconds, started_late_by.num_seconds(), "{late_starts:?}");
}

/// A stop mid-rollout leaves the run in progress; executing the same plan again resumes it
/// from the store and sends nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_resumes_without_sending_twice() {
    let f = fixture("resume", 60.0).await;
    let window = f.config.window("nightly").unwrap();
    let plan = RunPlan::for_window(window, Utc::now());
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = &f.server;
    let stopper = async {
        // Stop once the install has sent its first batch.
        while server.stats().calls("SendCommand") < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_tx.send(true).unwrap();
    };
    let (first, ()) = tokio::join!(execute(&f, &plan, stop_rx), stopper);
    assert_eq!(first.end, RunEnd::Stopped, "{first:#?}");
    let run = &runs(&f, "nightly").await[0];
    assert!(matches!(run.status, WindowRunStatus::Running | WindowRunStatus::Late));

    // The restarted process finds the run and its plan in the store.
    let interrupted = window::interrupted_runs(&f.ctx, &f.config, plan.scheduled_start).await.unwrap();
    assert_eq!(interrupted.len(), 1);
    assert_eq!(interrupted[0].1.as_ref(), Some(&plan));
    let sends_before = f.server.stats().calls("SendCommand");
    let second = execute(&f, &plan, never_stop()).await;
    assert_eq!(second.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{second:#?}");
    assert_eq!(second.run_id, first.run_id, "same run id after the restart");

    let managed = managed(&f);
    let run = &runs(&f, "nightly").await[0];
    let invocations = f.ctx.store.invocations(run.tasks[1].id).await.unwrap();
    assert_eq!(invocations.len(), managed, "every managed instance installed, none lost");
    assert!(invocations.iter().all(|i| i.status == CommandStatus::Success));
    // Each managed instance was sent one scan and one install, whatever the batching.
    let stats = f.server.stats();
    let commands: u64 = stats.commands_by_status.values().sum();
    assert_eq!(commands, stats.calls("SendCommand"), "no failed sends to excuse a count mismatch");
    assert!(stats.calls("SendCommand") >= sends_before);
    let sent: u64 =
        stats.invocations_by_status.iter().filter(|(k, _)| !k.contains('/')).map(|(_, v)| v).sum();
    assert_eq!(sent, 2 * managed as u64, "one scan and one install invocation per managed instance");
}
