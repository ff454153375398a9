//! The rollout engine against the fleet simulator, in-process on port 0, with a clock running
//! 200 times real time (an Install takes 20 simulated seconds, a tenth of a real one) and an
//! SQLite store in a temporary file. What was sent is counted by the simulator itself.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fleet_sim::scenario::Timing;
use fleet_sim::{AgentState, Faults, Scenario, SimServer};
use patchd_aws::PatchCommand;
use patchd_config::{Limit, Operation, Origin, RebootOption, Task};
use patchd_daemon::rollout::{self, PollPolicy, Progress, Rollout, RolloutOutcome};
use patchd_daemon::Context;
use patchd_store::{
    BatchState, CommandStatus, NewWindowRun, WindowRunStatus, WindowTaskId, WindowTaskObservation,
};
use support::{clients_with_retries, home_context, TempDb, FAST};
use tokio::sync::watch;

const TIME_SCALE: f64 = 200.0;

fn timing(install_seconds: f64) -> Timing {
    Timing {
        dispatch_delay_seconds: 1.0,
        invocation_visibility_delay_seconds: 0.0,
        scan_seconds: 10.0,
        install_seconds,
        jitter: 0.25,
        reboot_seconds: 5.0,
        cancel_seconds: 1.0,
        execution_timeout_seconds: 600.0,
    }
}

/// `instances` managed, online Amazon Linux 2 nodes, each missing some approved patches.
fn scenario(instances: usize, install_seconds: f64, faults: Faults) -> Scenario {
    Scenario::minimal()
        .with_instances(instances)
        .with_patches_per_os(30)
        .with_time_scale(TIME_SCALE)
        .with_timing(timing(install_seconds))
        .with_faults(faults)
}

struct Fixture {
    server: SimServer,
    db: TempDb,
    ctx: Context,
    targets: Vec<String>,
    run_id: String,
    snapshot_id: uuid::Uuid,
    task_id: WindowTaskId,
}

/// A context as a freshly started process builds it: new clients, a new store pool.
async fn context(server: &SimServer, db: &TempDb, max_attempts: u32) -> Context {
    home_context(clients_with_retries(server, max_attempts, FAST), db.store().await)
}

async fn fixture(name: &str, scenario: Scenario, max_attempts: u32) -> Fixture {
    let server =
        SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("simulator starts");
    let db = TempDb::new("rollout", name);
    let ctx = context(&server, &db, max_attempts).await;
    let targets: Vec<String> =
        server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect();
    let run = ctx
        .store
        .record_window_run(&NewWindowRun {
            window: name,
            scheduled_start: Utc::now(),
            account: &ctx.scope.account,
            region: &ctx.scope.region,
            started_at: Some(Utc::now()),
            status: WindowRunStatus::Running,
        })
        .await
        .expect("record the run");
    let task_id = ctx
        .store
        .record_window_task(
            run,
            &WindowTaskObservation {
                name: "install",
                operation: Operation::Install,
                command_id: None,
                status: CommandStatus::InProgress,
                started_at: Some(Utc::now()),
                ended_at: None,
            },
        )
        .await
        .expect("record the task");
    Fixture {
        server,
        db,
        ctx,
        targets,
        run_id: uuid::Uuid::new_v4().to_string(),
        snapshot_id: uuid::Uuid::new_v4(),
        task_id,
    }
}

fn task(max_concurrency: Limit, max_errors: Limit) -> Task {
    Task {
        name: "install".into(),
        operation: Operation::Install,
        groups: Vec::new(),
        reboot_option: RebootOption::NoReboot,
        max_concurrency,
        max_errors,
        priority: 1,
        timeout_seconds: 60,
        waves: Default::default(),
        promote: None,
        origin: Origin { file: Arc::new(PathBuf::from("test.toml")), line: 1, col: 1 },
    }
}

fn rollout<'a>(f: &'a Fixture, task: &'a Task) -> Rollout<'a> {
    Rollout {
        run_id: &f.run_id,
        task,
        task_id: f.task_id,
        targets: &f.targets,
        snapshot_id: f.snapshot_id,
        stop_releasing_at: None,
        poll: PollPolicy::fast(),
        capped_tag_values: Default::default(),
        install_list_url: None,
    }
}

fn no_stop() -> watch::Receiver<bool> {
    // The receiver outlives its sender: "no stop will ever come".
    watch::channel(false).1
}

async fn run(ctx: &Context, rollout: &Rollout<'_>) -> RolloutOutcome {
    tokio::time::timeout(Duration::from_secs(60), rollout::run(ctx, rollout, no_stop(), &|_: &Progress| {}))
        .await
        .expect("the rollout ends within a minute")
        .expect("the rollout succeeds")
}

/// Commands the simulator holds, whoever sent them.
fn commands_in_simulator(server: &SimServer) -> u64 {
    server.stats().commands_by_status.values().sum()
}

/// The store's invocations of the task by status/details, and the instances they cover.
async fn stored(f: &Fixture, ctx: &Context) -> (BTreeMap<String, usize>, HashSet<String>) {
    let rows = ctx.store.invocations(f.task_id).await.expect("read invocations");
    let mut by_status = BTreeMap::new();
    let mut instances = HashSet::new();
    for row in rows {
        let key = format!("{}/{}", row.status, row.status_details.unwrap_or_default());
        *by_status.entry(key).or_insert(0) += 1;
        assert!(instances.insert(row.instance_id.clone()), "one invocation per instance");
    }
    (by_status, instances)
}

/// Every command the simulator has is one of the outcome's, each for exactly one batch and
/// with that batch's comment (so the run id is in it).
async fn check_one_command_per_batch(f: &Fixture, ctx: &Context, outcome: &RolloutOutcome) {
    let batches = ctx.store.rollout_batches(f.task_id).await.expect("read batches");
    let sent: Vec<_> = batches.iter().filter(|b| b.state == BatchState::Sent).collect();
    assert_eq!(
        commands_in_simulator(&f.server),
        sent.len() as u64,
        "one command per sent batch, no duplicate"
    );
    assert_eq!(outcome.command_ids.len(), sent.len());
    for batch in sent {
        let id = batch.command_id.as_deref().expect("a sent batch has its command id");
        assert!(outcome.command_ids.iter().any(|c| c == id));
        let command = ctx.aws.command(id).await.expect("the command exists");
        assert_eq!(command.comment, batch.comment);
        assert!(command.comment.contains(&f.run_id), "{}", command.comment);
        let mut sent_to = command.instance_ids.clone();
        sent_to.sort();
        assert_eq!(sent_to, batch.instance_ids, "batch {}", batch.number);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_over_a_thousand_instances_sends_twenty_commands_and_records_everything() {
    let f = fixture("thousand", scenario(1000, 20.0, Faults::default()), 3).await;
    assert_eq!(f.targets.len(), 1000);
    let task = task(Limit::Percent(10), Limit::Count(0));
    let progress_calls = AtomicUsize::new(0);
    let on_progress = |p: &Progress| {
        assert_eq!(p.total, 1000);
        assert!(p.done <= p.sent && p.sent <= p.total, "{p:?}");
        progress_calls.fetch_add(1, Ordering::Relaxed);
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        rollout::run(&f.ctx, &rollout(&f, &task), no_stop(), &on_progress),
    )
    .await
    .expect("done within a minute")
    .expect("the rollout succeeds");

    assert_eq!(f.server.stats().calls("SendCommand"), 20, "ceil(1000 / 50) SendCommand calls");
    assert_eq!(outcome.send_calls, 20);
    assert_eq!(outcome.max_concurrency, 100, "10% of 1,000");
    assert!(outcome.poll_calls >= 20, "every command is polled at least once");
    assert_eq!(f.server.stats().calls("ListCommandInvocations") as usize, outcome.poll_calls);
    let p = &outcome.progress;
    assert_eq!((p.total, p.sent, p.done, p.succeeded, p.in_flight), (1000, 1000, 1000, 1000, 0), "{p:?}");
    assert_eq!(
        (outcome.not_sent, outcome.budget_exceeded, outcome.stopped, outcome.resumed),
        (0, false, false, false)
    );
    assert!(progress_calls.load(Ordering::Relaxed) > 1);
    check_one_command_per_batch(&f, &f.ctx, &outcome).await;

    let (by_status, instances) = stored(&f, &f.ctx).await;
    assert_eq!(by_status, BTreeMap::from([("Success/Success".to_string(), 1000)]));
    assert_eq!(instances, f.targets.iter().cloned().collect::<HashSet<_>>(), "every instance recorded");

    // Every SendCommand is in the audit log with its command id and AWS request id.
    let audit = f.ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    let sends: Vec<_> = audit.iter().filter(|e| e.action == "send-command").collect();
    assert_eq!(sends.len(), 20);
    for entry in sends {
        let id = entry.command_id.as_deref().expect("command id");
        assert!(outcome.command_ids.iter().any(|c| c == id));
        assert!(entry.request_id.as_deref().is_some_and(|r| !r.is_empty()), "{entry:?}");
        let details = entry.details.as_ref().expect("details");
        assert_eq!(details["snapshot_id"], f.snapshot_id.hyphenated().to_string(), "one snapshot per run");
    }
    // Running the finished rollout again sends and polls nothing.
    let again = run(&f.ctx, &rollout(&f, &task)).await;
    assert!(again.resumed);
    assert_eq!((again.send_calls, again.poll_calls, again.progress.succeeded), (0, 0, 1000));
    assert_eq!(f.server.stats().calls("SendCommand"), 20);
}

/// Runs a rollout while sampling, from the simulator, how many invocations run at once, and,
/// from the progress reports, how many patchd counts in flight. Returns both maxima.
async fn concurrency_of(instances: usize, max_concurrency: u32) -> (RolloutOutcome, usize, usize, u64) {
    let f = fixture("concurrency", scenario(instances, 20.0, Faults::default()), 3).await;
    let task = task(Limit::Count(max_concurrency), Limit::Count(0));
    let reported = AtomicUsize::new(0);
    let observed = Arc::new(AtomicUsize::new(0));
    let running = |server: &SimServer| {
        let stats = server.stats();
        stats.invocations_by_status.get("InProgress").copied().unwrap_or(0) as usize
    };
    let on_progress = |p: &Progress| {
        reported.fetch_max(p.in_flight, Ordering::Relaxed);
        observed.fetch_max(running(&f.server), Ordering::Relaxed);
    };
    let rollout = rollout(&f, &task);
    let sampling = async {
        loop {
            observed.fetch_max(running(&f.server), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let outcome = tokio::select! {
        outcome = rollout::run(&f.ctx, &rollout, no_stop(), &on_progress) => outcome.expect("the rollout succeeds"),
        _ = sampling => unreachable!("sampling never ends"),
        _ = tokio::time::sleep(Duration::from_secs(60)) => panic!("the rollout did not end within a minute"),
    };
    let sends = f.server.stats().calls("SendCommand");
    (outcome, reported.load(Ordering::Relaxed), observed.load(Ordering::Relaxed), sends)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_limited_across_the_whole_task() {
    let (outcome, reported, observed, sends) = concurrency_of(1000, 100).await;
    assert_eq!(outcome.progress.succeeded, 1000);
    assert_eq!(sends, 20);
    assert!(reported <= 100, "patchd counted {reported} in flight, limit 100");
    assert!(observed <= 100, "the simulator ran {observed} invocations at once, limit 100");
    assert!(observed > 50, "the limit is used, not just respected: at most {observed} ran at once");

    // Below 50, batches shrink to the limit so that a whole batch fits.
    let (outcome, reported, observed, sends) = concurrency_of(120, 15).await;
    assert_eq!(outcome.progress.succeeded, 120);
    assert_eq!(sends, 8, "ceil(120 / 15)");
    assert!(reported <= 15 && observed <= 15, "reported {reported}, observed {observed}, limit 15");
    assert!(observed > 1, "{observed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_waited_out_and_every_result_is_recorded() {
    // One attempt per call: every throttle and server error reaches the rollout itself. 30% of
    // calls are throttled, a quarter of the rest fail with a server error.
    let faults = Faults { throttle_rate: 0.3, error_rate: 0.25, ..Faults::default() };
    let f = fixture("throttled", scenario(300, 20.0, faults), 1).await;
    let task = task(Limit::Count(100), Limit::Count(0));
    let outcome = run(&f.ctx, &rollout(&f, &task)).await;

    let stats = f.server.stats();
    let throttled: u64 = stats.throttled.values().sum();
    let failed: u64 = stats.failed.values().sum();
    let calls = stats.total_calls();
    assert!(throttled * 100 >= calls * 20, "{throttled} of {calls} calls throttled: the test must throttle");
    assert!(
        failed > 0,
        "server errors were injected: {failed} of {calls} calls failed, {throttled} throttled"
    );
    assert_eq!(outcome.progress.succeeded, 300, "{:?}", outcome.progress);
    assert_eq!(outcome.not_sent, 0);
    // The checks below call SSM too: without faults.
    f.server.set_faults(Faults::default()).unwrap();
    check_one_command_per_batch(&f, &f.ctx, &outcome).await;
    assert_eq!(commands_in_simulator(&f.server), 6, "ceil(300 / 50) commands despite retried sends");
    assert!(stats.calls("SendCommand") >= 6);
    let (by_status, instances) = stored(&f, &f.ctx).await;
    assert_eq!(by_status, BTreeMap::from([("Success/Success".to_string(), 300)]));
    assert_eq!(instances.len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_agents_are_undeliverable_and_spend_no_error_budget() {
    let f = fixture("offline", scenario(300, 20.0, Faults::default()), 3).await;
    // Agents that drop after the targets were resolved: 10% of them.
    let offline: Vec<String> = f.targets.iter().step_by(10).cloned().collect();
    assert_eq!(offline.len(), 30);
    for id in &offline {
        f.server.set_agent(id, AgentState::ConnectionLost).expect("known instance");
    }
    let task = task(Limit::Count(100), Limit::Count(0));
    let outcome = run(&f.ctx, &rollout(&f, &task)).await;

    let p = &outcome.progress;
    assert_eq!((p.succeeded, p.undeliverable, p.failed, p.delayed, p.in_flight), (270, 30, 0, 0, 0), "{p:?}");
    assert_eq!(outcome.errors, 0);
    assert!(!outcome.budget_exceeded, "a zero error budget survives undeliverable nodes");
    assert_eq!(outcome.not_sent, 0, "every batch went out");
    let (by_status, _) = stored(&f, &f.ctx).await;
    assert_eq!(
        by_status,
        BTreeMap::from([("Success/Success".to_string(), 270), ("TimedOut/DeliveryTimedOut".to_string(), 30)])
    );
    let rows = f.ctx.store.invocations(f.task_id).await.unwrap();
    for row in rows.iter().filter(|r| r.status == CommandStatus::TimedOut) {
        assert!(offline.contains(&row.instance_id), "{} was online", row.instance_id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_beyond_max_errors_stop_the_rollout_and_leave_the_rest_untouched() {
    let faults = Faults { install_failure_rate: 0.5, ..Faults::default() };
    let f = fixture("budget", scenario(500, 20.0, faults), 3).await;
    let task = task(Limit::Count(100), Limit::Count(10));
    let outcome = run(&f.ctx, &rollout(&f, &task)).await;

    assert!(outcome.budget_exceeded, "{outcome:?}");
    assert!(outcome.errors > 10, "{}", outcome.errors);
    assert_eq!(outcome.progress.failed, outcome.errors);
    assert_eq!(outcome.progress.in_flight, 0, "what was in flight was polled to the end");
    assert!(outcome.not_sent >= 300, "at most the first 100 (+50) instances went out: {outcome:?}");
    assert_eq!(outcome.progress.sent + outcome.not_sent, 500);
    check_one_command_per_batch(&f, &f.ctx, &outcome).await;

    // The instances of unreleased batches never received a command and have no invocation.
    let batches = f.ctx.store.rollout_batches(f.task_id).await.unwrap();
    let unsent: HashSet<String> = batches
        .iter()
        .filter(|b| b.state == BatchState::Planned)
        .flat_map(|b| b.instance_ids.iter().cloned())
        .collect();
    assert_eq!(unsent.len(), outcome.not_sent);
    let mut commanded = HashSet::new();
    for id in &outcome.command_ids {
        commanded.extend(f.ctx.aws.command(id).await.unwrap().instance_ids);
    }
    assert!(commanded.is_disjoint(&unsent), "an instance of an unreleased batch received a command");
    let (_, recorded) = stored(&f, &f.ctx).await;
    assert!(recorded.is_disjoint(&unsent));
    assert_eq!(recorded.len(), outcome.progress.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_by_ssm_is_recorded_and_the_rest_goes_on() {
    let f = fixture("refused", scenario(150, 20.0, Faults::default()), 3).await;
    // Stopped after the targets were resolved: SSM refuses its whole batch (InvalidInstanceId).
    let mut sorted = f.targets.clone();
    sorted.sort();
    f.server.set_running(&sorted[60], false).expect("known instance");
    let task = task(Limit::Count(100), Limit::Count(0));
    let outcome = run(&f.ctx, &rollout(&f, &task)).await;

    let p = &outcome.progress;
    assert_eq!((p.succeeded, p.rejected, outcome.not_sent), (100, 50, 50), "{p:?}");
    let batches = f.ctx.store.rollout_batches(f.task_id).await.unwrap();
    let states: Vec<BatchState> = batches.iter().map(|b| b.state).collect();
    assert_eq!(states, [BatchState::Sent, BatchState::Rejected, BatchState::Sent]);
    assert!(batches[1].error.as_deref().is_some_and(|e| e.contains("InvalidInstanceId")), "{:?}", batches[1]);
    let audit = f.ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "send-command-rejected").count(), 1);
    assert_eq!(commands_in_simulator(&f.server), 2);
}

/// Kills a rollout (drops its future, closes its connections) once `kill_after` SendCommand
/// calls reached the simulator, then runs it again from a new context; checks that nothing was
/// sent twice and nothing lost. Returns how many batches the store had recorded as sent, and
/// the simulator had, at the kill.
async fn kill_and_resume(name: &str, instances: usize, latency_ms: u64, kill_after: u64) -> (usize, u64) {
    let faults = Faults { latency_ms, ..Faults::default() };
    let f = fixture(name, scenario(instances, 20.0, faults), 3).await;
    let task = task(Limit::Count(100), Limit::Count(0));
    let batches = instances.div_ceil(50) as u64;

    // The first process.
    let first_ctx = context(&f.server, &f.db, 3).await;
    let first = {
        let ctx = first_ctx.clone();
        let task = task.clone();
        let (run_id, targets, snapshot_id, task_id) =
            (f.run_id.clone(), f.targets.clone(), f.snapshot_id, f.task_id);
        tokio::spawn(async move {
            let rollout = Rollout {
                run_id: &run_id,
                task: &task,
                task_id,
                targets: &targets,
                snapshot_id,
                stop_releasing_at: None,
                poll: PollPolicy::fast(),
                capped_tag_values: Default::default(),
                install_list_url: None,
            };
            rollout::run(&ctx, &rollout, no_stop(), &|_: &Progress| {}).await
        })
    };
    let started = std::time::Instant::now();
    while f.server.stats().calls("SendCommand") < kill_after {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first process never sent {kill_after} batches"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    // Its database connections die with it, as they would with the process (a future dropped
    // while beginning a transaction can leave its connection inside it, holding SQLite's write
    // lock, until the connection is closed).
    first_ctx.store.close().await;
    let sent_at_kill = f.server.stats().calls("SendCommand");
    assert!(
        (kill_after..batches).contains(&sent_at_kill),
        "killed mid-way: {sent_at_kill} of {batches} sent"
    );

    // The second process: new clients, a new store pool, the same run and task.
    let ctx = context(&f.server, &f.db, 3).await;
    let recorded_at_kill = ctx
        .store
        .rollout_batches(f.task_id)
        .await
        .unwrap()
        .iter()
        .filter(|b| b.state == BatchState::Sent)
        .count();
    let outcome = run(&ctx, &rollout(&f, &task)).await;
    assert!(outcome.resumed);
    assert_eq!(f.server.stats().calls("SendCommand"), batches, "no batch sent twice");
    assert_eq!(outcome.send_calls as u64, batches - sent_at_kill);
    assert_eq!(outcome.progress.succeeded, instances, "{:?}", outcome.progress);
    assert_eq!(outcome.command_ids.len() as u64, batches);
    check_one_command_per_batch(&f, &ctx, &outcome).await;
    let (by_status, recorded) = stored(&f, &ctx).await;
    assert_eq!(by_status, BTreeMap::from([("Success/Success".to_string(), instances)]), "no result lost");
    assert_eq!(recorded.len(), instances);
    let audit = ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    let mut audited: Vec<&str> =
        audit.iter().filter(|e| e.action == "send-command").filter_map(|e| e.command_id.as_deref()).collect();
    assert_eq!(audited.len() as u64, batches, "every command audited once");
    audited.sort();
    audited.dedup();
    assert_eq!(audited.len() as u64, batches);
    (recorded_at_kill, sent_at_kill)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_killed_mid_way_resumes_without_sending_anything_twice() {
    kill_and_resume("crash", 1000, 0, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_killed_while_ssm_creates_a_command_adopts_it_on_resume() {
    // Every answer takes 40 ms, and the kill comes within a millisecond or two of the third
    // SendCommand reaching SSM: the command exists, its id never reached the store.
    let (recorded, created) = kill_and_resume("in-flight-send", 300, 40, 3).await;
    assert_eq!(created, 3);
    assert_eq!(recorded, 2, "the third batch was left `sending` with its command created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_command_id_was_never_recorded_is_found_by_its_comment() {
    let f = fixture("lost-id", scenario(200, 20.0, Faults::default()), 3).await;
    let task = task(Limit::Count(100), Limit::Count(0));

    // Stopped before it starts: the plan is stored, nothing is sent.
    let (stop_tx, stop_rx) = watch::channel(true);
    let planned = rollout::run(&f.ctx, &rollout(&f, &task), stop_rx, &|_: &Progress| {}).await.unwrap();
    drop(stop_tx);
    assert!(planned.stopped);
    assert_eq!((planned.send_calls, planned.not_sent, planned.progress.sent), (0, 200, 0));
    let plan = f.ctx.store.rollout(f.task_id).await.unwrap().expect("the plan is stored");
    assert_eq!(plan.batches.len(), 4);
    assert_eq!(plan.snapshot_id, f.snapshot_id.hyphenated().to_string());

    // A process that recorded its intent for batch 1, sent it, and died before recording the
    // command id; and one that recorded its intent for batch 2 and died before sending.
    let first = &plan.batches[0];
    f.ctx.store.mark_batch_sending(f.task_id, 1, Utc::now()).await.unwrap();
    let sent = f
        .ctx
        .aws
        .send_patch_command(&PatchCommand {
            operation: Operation::Install,
            reboot_option: RebootOption::NoReboot,
            snapshot_id: Some(f.snapshot_id),
            instance_ids: &first.instance_ids,
            comment: &first.comment,
            timeout_seconds: 60,
            max_concurrency: Limit::Count(50),
            max_errors: Limit::Count(0),
            alarm: None,
            hooks: None,
            install_override_list: None,
        })
        .await
        .unwrap();
    f.ctx.store.mark_batch_sending(f.task_id, 2, Utc::now()).await.unwrap();
    assert_eq!(f.server.stats().calls("SendCommand"), 1);

    let ctx = context(&f.server, &f.db, 3).await;
    let outcome = run(&ctx, &rollout(&f, &task)).await;
    assert!(outcome.resumed);
    assert_eq!(f.server.stats().calls("SendCommand"), 4, "batch 1 adopted, batches 2 to 4 sent once");
    assert_eq!(outcome.send_calls, 3);
    assert_eq!(outcome.command_ids[0], sent.command_id, "batch 1 is the command sent before the crash");
    assert_eq!(outcome.progress.succeeded, 200);
    check_one_command_per_batch(&f, &ctx, &outcome).await;
    let (_, instances) = stored(&f, &ctx).await;
    assert_eq!(instances.len(), 200);
    let audit = ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    let recovered = audit
        .iter()
        .find(|e| e.command_id.as_deref() == Some(sent.command_id.as_str()))
        .expect("the adopted command is audited");
    assert_eq!(recovered.action, "send-command");
    assert!(recovered.details.as_ref().is_some_and(|d| d.get("recovered").is_some()), "{recovered:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_request_or_the_cutoff_stops_releasing_but_in_flight_work_is_polled_to_the_end() {
    let f = fixture("stop", scenario(400, 20.0, Faults::default()), 3).await;
    let task = task(Limit::Count(100), Limit::Count(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Stop as soon as the first progress report shows work in flight.
    let on_progress = |p: &Progress| {
        if p.in_flight > 0 {
            let _ = stop_tx.send_if_modified(|stop| !std::mem::replace(stop, true));
        }
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        rollout::run(&f.ctx, &rollout(&f, &task), stop_rx, &on_progress),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(outcome.stopped && !outcome.abandoned && !outcome.cutoff);
    assert_eq!(outcome.progress.sent, 100, "the first two batches only: {:?}", outcome.progress);
    assert_eq!((outcome.progress.succeeded, outcome.progress.in_flight), (100, 0), "polled to the end");
    assert_eq!(outcome.not_sent, 300);

    // The window's cutoff passed before the rest could go: nothing more is released.
    let cut = Rollout { stop_releasing_at: Some(Utc::now()), ..rollout(&f, &task) };
    let outcome = run(&f.ctx, &cut).await;
    assert!(outcome.cutoff && outcome.resumed && !outcome.stopped);
    assert_eq!((outcome.send_calls, outcome.not_sent), (0, 300));
    assert_eq!(f.server.stats().calls("SendCommand"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_in_flight_cancels_unfinished_commands_and_a_second_stop_abandons_polling() {
    // Installs of 10 simulated minutes: 3 real seconds, long enough to cancel.
    let f = fixture("cancel", scenario(120, 600.0, Faults::default()), 3).await;
    let task = task(Limit::Count(100), Limit::Count(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let rollout_ = rollout(&f, &task);
    let running = rollout::run(&f.ctx, &rollout_, stop_rx, &|_: &Progress| {});
    let cancelling = async {
        while f.server.stats().invocations_by_status.get("InProgress").copied().unwrap_or(0) < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        let cancelled =
            rollout::cancel_in_flight(&f.ctx, f.task_id, patchd_aws::PATCH_DOCUMENT).await.expect("cancel");
        assert_eq!(cancelled, 2, "both batches in flight");
    };
    let (outcome, ()) =
        tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(running, cancelling) })
            .await
            .expect("cancelled work ends quickly");
    let outcome = outcome.unwrap();
    assert!(outcome.stopped);
    assert_eq!(outcome.progress.cancelled, 100, "{:?}", outcome.progress);
    assert_eq!(outcome.not_sent, 20);
    assert_eq!(f.server.stats().calls("CancelCommand"), 2);
    let audit = f.ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    assert_eq!(audit.iter().filter(|e| e.action == "cancel-command").count(), 2);
    assert_eq!(
        rollout::cancel_in_flight(&f.ctx, f.task_id, patchd_aws::PATCH_DOCUMENT).await.unwrap(),
        0,
        "nothing left to cancel"
    );

    // A second stop request ends polling at once, with work still in flight.
    let g = fixture("abandon", scenario(50, 1200.0, Faults::default()), 3).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let rollout_ = rollout(&g, &task);
    let running = rollout::run(&g.ctx, &rollout_, stop_rx, &|_: &Progress| {});
    let stopping = async {
        while g.server.stats().calls("ListCommandInvocations") < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop_tx.send(true).unwrap();
    };
    let (outcome, ()) =
        tokio::time::timeout(Duration::from_secs(4), async { tokio::join!(running, stopping) })
            .await
            .expect("a second stop ends the rollout at once");
    let outcome = outcome.unwrap();
    assert!(outcome.stopped && outcome.abandoned);
    assert_eq!(outcome.progress.in_flight, 50);
}

/// Fencing, without timing luck: a leader that was deposed (its lease taken over in the
/// database) or whose term ran out by its own clock sends no further batch, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_sends_nothing_and_writes_nothing() {
    use patchd_store::{Bid, Candidate, Fence, TermClock, SCHEDULER_LEASE};
    let f = fixture("deposed", scenario(12, 20.0, Faults::default()), 3).await;
    let ttl = Duration::from_secs(30);
    let old = Candidate { holder: "old".into(), host: "a".into(), pid: 1 };
    let Bid::Won(lease) = f.ctx.store.bid_for_lease(SCHEDULER_LEASE, &old, ttl, None).await.unwrap() else {
        panic!("the first bid wins")
    };
    let fence = |term: TermClock| Fence {
        lease: SCHEDULER_LEASE.into(),
        holder: "old".into(),
        epoch: lease.epoch,
        term,
    };
    let task = task(Limit::Count(4), Limit::Count(0));
    let rollout = rollout(&f, &task);

    // A term this host cannot vouch for (its clock says it ended): refused before SendCommand.
    let lapsed = Context { store: f.ctx.store.fenced(fence(TermClock::default())), ..f.ctx.clone() };
    let error = rollout::run(&lapsed, &rollout, no_stop(), &|_: &Progress| {}).await.unwrap_err();
    assert!(error.is_deposed(), "{error}");
    assert_eq!(commands_in_simulator(&f.server), 0, "nothing sent on a lapsed term");

    // The lease taken over in the database: even with a term this host believes current, the
    // batch intent is refused in the store, so nothing is sent.
    let current = TermClock::until(std::time::Instant::now() + ttl);
    let deposed = Context { store: f.ctx.store.fenced(fence(current)), ..f.ctx.clone() };
    assert!(f.ctx.store.resign_lease(&fence(TermClock::default())).await.unwrap());
    let new = Candidate { holder: "new".into(), host: "b".into(), pid: 2 };
    let Bid::Won(taken) = f.ctx.store.bid_for_lease(SCHEDULER_LEASE, &new, ttl, None).await.unwrap() else {
        panic!("a resigned lease is free")
    };
    assert_eq!(taken.epoch, lease.epoch + 1);
    let error = rollout::run(&deposed, &rollout, no_stop(), &|_: &Progress| {}).await.unwrap_err();
    assert!(error.is_deposed(), "{error}");
    assert!(error.to_string().contains("b (pid 2), epoch"), "{error}");
    assert_eq!(commands_in_simulator(&f.server), 0, "nothing sent by the deposed leader");
    // The lapsed term recorded batch 1's intent (the database still vouched for it), then did
    // not send; the deposed one recorded nothing. The new leader looks batch 1 up by comment.
    let batches = f.ctx.store.rollout_batches(f.task_id).await.unwrap();
    let states: Vec<BatchState> = batches.iter().map(|b| b.state).collect();
    assert_eq!(states, [BatchState::Sending, BatchState::Planned, BatchState::Planned], "{batches:?}");

    // The new leader's rollout of the same task sends every batch, once.
    let leader = Context {
        store: f.ctx.store.fenced(Fence {
            lease: SCHEDULER_LEASE.into(),
            holder: "new".into(),
            epoch: taken.epoch,
            term: TermClock::until(std::time::Instant::now() + ttl),
        }),
        ..f.ctx.clone()
    };
    let outcome = run(&leader, &rollout).await;
    assert_eq!(outcome.progress.succeeded, f.targets.len());
    check_one_command_per_batch(&f, &leader, &outcome).await;
}
