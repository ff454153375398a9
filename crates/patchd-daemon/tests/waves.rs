//! Canary waves and their gates against the fleet simulator, in-process on port 0: what was
//! sent, to whom and when is read from the simulator's own command history, never from
//! patchd's view of it.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use fleet_sim::{AlarmState, CommandView, Group, HookRule, PatchRelease, Platform, Scenario, Timing};
use patchd_daemon::window::{RunEnd, RunPlan, RunSummary};
use patchd_store::{CommandStatus, WindowRunStatus};
use support::{never_stop, patchd_toml, Fixture};

/// Three clusters of three Amazon Linux 2 web nodes, every one missing patches, with a clock
/// running 600 times real time.
fn scenario() -> Scenario {
    let cluster = |name: &str| {
        Group::amazon_linux_2(format!("web-{name}"), 3)
            .with_tag("Role", "web")
            .with_tag("Patch Group", "web")
            .with_tag("cluster", name)
            .with_missing(0.8)
    };
    let timing = Timing { execution_timeout_seconds: 600.0, ..Timing::brisk(40.0, 120.0, 30.0) };
    Scenario::of_groups("waves", 18, vec![cluster("a"), cluster("b"), cluster("c")])
        .with_time_scale(600.0)
        .with_timing(timing)
        .with_patches_per_os(30)
}

/// Group `web`, and window `canary` whose one install task has `task_extra` (waves, gate...).
fn config(task_extra: &str) -> impl FnOnce(&str) -> String + '_ {
    move |state_dir: &str| {
        [
            patchd_toml::daemon_and_aws(state_dir, None, "", ""),
            patchd_toml::group("web", "Role", "web"),
            patchd_toml::window("canary", "cron(0 2 * * ? *)", 4, 1),
            patchd_toml::task("install", "install", "web", task_extra),
        ]
        .concat()
    }
}

async fn run(name: &str, task_extra: &str) -> (Fixture, RunSummary) {
    let f = Fixture::start("waves", name, scenario(), config(task_extra)).await;
    let summary = run_window(&f).await;
    (f, summary)
}

/// The occurrence of window `canary` starting now.
async fn run_window(f: &Fixture) -> RunSummary {
    run_occurrence(f, Utc::now()).await
}

async fn run_occurrence(f: &Fixture, start: chrono::DateTime<Utc>) -> RunSummary {
    let window = f.config.window("canary").unwrap();
    f.execute(&RunPlan::for_window(window, start), never_stop()).await
}

/// The install commands the simulator received, in the order it received them.
fn installs(f: &Fixture) -> Vec<CommandView> {
    f.server.commands().into_iter().filter(|c| c.operation == "Install").collect()
}

fn sent_to(commands: &[CommandView]) -> Vec<String> {
    commands.iter().flat_map(|c| c.instance_ids.clone()).collect()
}

fn managed(f: &Fixture) -> Vec<String> {
    let mut ids: Vec<String> =
        f.server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect();
    ids.sort();
    ids
}

/// The audit entries of gate decisions, oldest first.
async fn gate_entries(f: &Fixture) -> Vec<(String, serde_json::Value)> {
    let audit = f.ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    audit
        .into_iter()
        .filter(|e| e.action.starts_with("wave-gate-"))
        .map(|e| (e.action, e.details.unwrap_or_default()))
        .collect()
}

fn assert_halted_after_the_canary(f: &Fixture, summary: &RunSummary) {
    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Failed), "{summary:#?}");
    let task = &summary.tasks[0];
    assert_eq!(task.status, CommandStatus::Failed);
    assert_eq!((task.waves, task.waves_sent), (3, 1), "{task:?}");
    assert!(task.gate_failure.as_deref().is_some_and(|g| g.contains("after wave 1 of 3")), "{task:?}");
    let installs = installs(f);
    assert_eq!(
        sent_to(&installs),
        [managed(f)[0].clone()],
        "only the canary received a command: {installs:#?}"
    );
    assert_eq!(task.not_sent, managed(f).len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_release_a_canary_first_and_never_two_nodes_of_a_cluster_at_once() {
    let (f, summary) = run(
        "cap",
        "waves = [\"1\", \"50%\", \"100%\"]\nmax_concurrency = 10\nmax_per_tag = { tag = \"cluster\", max = 1 }",
    )
    .await;
    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{summary:#?}");
    let task = &summary.tasks[0];
    assert_eq!((task.waves, task.waves_sent, task.gate_failure.as_deref()), (3, 3, None));

    let installs = installs(&f);
    let mut everyone = sent_to(&installs);
    everyone.sort();
    assert_eq!(everyone, managed(&f), "every managed node, each once");
    assert_eq!(installs[0].instance_ids.len(), 1, "the canary is one node");

    // From the simulator's timeline: per cluster, no two invocations overlap.
    let cluster_of: BTreeMap<String, String> = f
        .server
        .instances()
        .into_iter()
        .map(|i| {
            let cluster = i.tags.iter().find(|(k, _)| k == "cluster").map(|(_, v)| v.clone()).unwrap();
            (i.id, cluster)
        })
        .collect();
    type Span = (chrono::DateTime<Utc>, chrono::DateTime<Utc>);
    let mut spans: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for invocation in installs.iter().flat_map(|c| &c.invocations) {
        let (Some(start), Some(end)) = (invocation.started_at, invocation.ended_at) else {
            panic!("every invocation ran: {invocation:?}");
        };
        spans.entry(cluster_of[&invocation.instance_id].as_str()).or_default().push((start, end));
    }
    for (cluster, spans) in &mut spans {
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "two nodes of cluster {cluster} in flight at once: {pair:?}");
        }
    }
    // And a wave starts only after the one before ended.
    let canary_end = installs[0].invocations[0].ended_at.unwrap();
    assert!(installs[1..].iter().flat_map(|c| &c.invocations).all(|i| i.started_at.unwrap() >= canary_end));

    let gates = gate_entries(&f).await;
    let decided: Vec<(&str, u64)> =
        gates.iter().map(|(a, d)| (a.as_str(), d["wave"].as_u64().unwrap())).collect();
    assert_eq!(decided, [("wave-gate-passed", 1), ("wave-gate-passed", 2), ("wave-gate-passed", 3)]);
    assert_eq!(gates[0].1["checks"][0]["check"], "reboot_truth", "{}", gates[0].1);
}

/// A gate URL on a local port answering `status`; it records the queries it was asked, and
/// calls `on_wave(wave)` before answering.
async fn gate_server(
    status: u16,
    on_wave: impl Fn(u64) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let on_wave = Arc::new(on_wave);
    let app = axum::Router::new().route(
        "/gate",
        axum::routing::get(move |uri: axum::http::Uri| {
            let seen = seen.clone();
            let on_wave = on_wave.clone();
            async move {
                let query = uri.query().unwrap_or_default().to_string();
                let wave = query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("wave="))
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0);
                // The hook may block (it talks to the simulator over plain sockets).
                tokio::task::block_in_place(|| on_wave(wave));
                seen.lock().unwrap().push(query);
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, asked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_url_answering_500_halts_the_rollout_after_the_canary() {
    let (addr, asked) = gate_server(500, |_| {}).await;
    let extra =
        format!("waves = [\"1\", \"50%\", \"100%\"]\n[window.task.gate]\nurl = \"http://{addr}/gate\"");
    let (f, summary) = run("url", &extra).await;
    assert_halted_after_the_canary(&f, &summary);
    let start = summary.scheduled_start;
    assert!(summary.tasks[0].gate_failure.as_deref().unwrap().contains("HTTP 500"), "{summary:#?}");
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].contains("task=install") && asked[0].contains("wave=1") && asked[0].contains("run="));

    let gates = gate_entries(&f).await;
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].0, "wave-gate-failed");
    // What /metrics exports as patchd_wave_gates_total.
    let counted = f.ctx.store.wave_gate_counts().await.unwrap();
    assert_eq!(counted, [("canary".to_string(), "failed".to_string(), 1)]);

    // Judged once: running the occurrence again does not judge it again or send more.
    let sends = f.server.stats().calls("SendCommand");
    let again = run_occurrence(&f, start).await;
    assert!(matches!(again.end, RunEnd::AlreadyDone(_)), "{again:#?}");
    assert_eq!(f.server.stats().calls("SendCommand"), sends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_host_command_vetoes_the_next_wave_and_its_output_is_audited() {
    let extra = "waves = [\"1\", \"50%\", \"100%\"]\n[window.task.gate]\n\
                 command = [\"/bin/sh\", \"-c\", \"echo load balancer still draining $PATCHD_INSTANCE_IDS wave $PATCHD_WAVE; exit 3\"]\n\
                 command_timeout_seconds = 20\n[events]\nbus_name = \"patchd\"";
    let (f, summary) = run("veto", extra).await;
    assert_halted_after_the_canary(&f, &summary);
    assert!(summary.tasks[0].gate_failure.as_deref().unwrap().contains("exit 3"), "{summary:#?}");
    // The Task Failed event says which gate and why.
    let events = f.server.events();
    let failed = events.iter().find(|e| e.detail_type == "Task Failed").expect("a Task Failed event");
    let reason = failed.detail["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the gate after wave 1 of 3 failed: the gate command vetoed the wave (exit 3)"),
        "{reason}"
    );

    let gates = gate_entries(&f).await;
    assert_eq!(gates.len(), 1);
    let command =
        gates[0].1["checks"].as_array().unwrap().iter().find(|c| c["check"] == "command").unwrap().clone();
    let canary = &managed(&f)[0];
    assert_eq!(command["exit_code"], 3);
    assert_eq!(command["stdout"], format!("load balancer still draining {canary} wave 1\n"), "{command}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_raised_between_waves_stops_the_next_wave_and_halts() {
    let server_url: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let url = server_url.clone();
    // After the canary, the service's alarm fires (told through the simulator's control API,
    // as CloudWatch would be told by the service's metrics).
    let (addr, _) = gate_server(200, move |wave| {
        if wave == 1 {
            let endpoint = url.lock().unwrap().clone().unwrap();
            set_alarm_over_http(&endpoint, "web-5xx", "ALARM");
        }
    })
    .await;
    let extra = format!(
        "waves = [\"1\", \"50%\", \"100%\"]\n[window.task.gate]\nurl = \"http://{addr}/gate\"\nalarm = \"web-5xx\""
    );
    let f = Fixture::start("waves", "alarm", scenario(), config(&extra)).await;
    *server_url.lock().unwrap() = Some(f.server.endpoint_url());
    f.server.set_alarm("web-5xx", AlarmState::Ok).unwrap();
    let summary = run_window(&f).await;

    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Failed), "{summary:#?}");
    let task = &summary.tasks[0];
    assert_eq!((task.waves, task.waves_sent), (3, 2), "{task:?}");
    let reason = task.gate_failure.as_deref().unwrap();
    assert!(reason.contains("after wave 2 of 3") && reason.contains("web-5xx"), "{reason}");
    let installs = installs(&f);
    assert_eq!(installs.len(), 2, "the third wave was never sent: {installs:#?}");
    assert_eq!(installs[0].stopped_by_alarm, None);
    assert_eq!(installs[1].stopped_by_alarm.as_deref(), Some("web-5xx"));
    assert!(
        installs[1].invocations.iter().all(|i| i.status == "Cancelled"),
        "SSM stopped the wave before it installed anything: {:#?}",
        installs[1].invocations
    );
}

/// PUT /_sim/alarms/NAME on the simulator, over a plain blocking socket.
fn set_alarm_over_http(endpoint: &str, name: &str, state: &str) {
    {
        use std::io::{Read, Write};
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
        let body = format!("{{\"state\":\"{state}\"}}");
        let mut stream = std::net::TcpStream::connect(&host).unwrap();
        write!(
            stream,
            "PUT /_sim/alarms/{name} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stays_offline_after_its_reboot_fails_the_gate() {
    let f = Fixture::start("waves", "lost", scenario(), config("waves = [\"1\", \"50%\", \"100%\"]")).await;
    // A kernel fix every node needs, approved by the default baseline a week after release.
    f.server.release_patch(
        Platform::AmazonLinux2,
        &PatchRelease {
            severity: Some("Critical".into()),
            classification: Some("Security".into()),
            needs_reboot: Some(true),
            ..PatchRelease::default()
        },
    );
    f.server.advance(Duration::from_secs(8 * 86_400));
    let canary = managed(&f)[0].clone();
    f.server.set_lost_after_reboot(&canary, true).unwrap();
    let summary = run_window(&f).await;

    assert_halted_after_the_canary(&f, &summary);
    let reason = summary.tasks[0].gate_failure.clone().unwrap();
    assert!(reason.contains(&canary), "the reason names the node that did not come back: {reason}");
    let gates = gate_entries(&f).await;
    let truth = &gates[0].1["checks"][0];
    assert_eq!(truth["check"], "reboot_truth", "{truth}");
    assert_eq!(truth["offline"][0]["instance_id"], canary.as_str(), "{truth}");
    assert_eq!(truth["offline"][0]["ping_status"], "ConnectionLost", "{truth}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_killed_while_judging_a_gate_resumes_without_sending_twice() {
    // The gate URL never answers its first request: the process dies waiting for it.
    let hang_first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hang = hang_first.clone();
    let app = axum::Router::new().route(
        "/gate",
        axum::routing::get(move || {
            let hang = hang.clone();
            async move {
                if hang.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let extra =
        format!("waves = [\"1\", \"50%\", \"100%\"]\n[window.task.gate]\nurl = \"http://{addr}/gate\"");
    let f = Fixture::start("waves", "resume", scenario(), config(&extra)).await;
    let window = f.config.window("canary").unwrap();
    let plan = RunPlan::for_window(window, Utc::now());

    let first = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            summary = f.execute(&plan, never_stop()) => Some(summary),
            () = async {
                while hang_first.load(std::sync::atomic::Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => None,
        }
    })
    .await
    .expect("the gate was asked");
    assert!(first.is_none(), "the first process was cut off while judging the canary's gate");
    assert_eq!(sent_to(&installs(&f)).len(), 1, "only the canary was sent");

    // The restarted process resumes the same run: the canary is not sent again, the gate is
    // judged (answered now), and the other waves follow.
    let second = f.execute(&plan, never_stop()).await;
    assert_eq!(second.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{second:#?}");
    let mut sent = sent_to(&installs(&f));
    sent.sort();
    assert_eq!(sent, managed(&f), "every managed node exactly once, counted by the simulator");
    let decided: Vec<String> =
        gate_entries(&f).await.into_iter().map(|(a, d)| format!("{a}:{}", d["wave"])).collect();
    assert_eq!(decided, ["wave-gate-passed:1", "wave-gate-passed:2", "wave-gate-passed:3"]);
}

/// The audit's `install-hooks` entries: each finished node's steps, by instance id.
async fn hook_steps(f: &Fixture) -> BTreeMap<String, serde_json::Value> {
    let audit = f.ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    audit
        .into_iter()
        .filter(|e| e.action == "install-hooks")
        .flat_map(|e| e.details.unwrap_or_default()["invocations"].as_array().cloned().unwrap_or_default())
        .map(|i| (i["instance_id"].as_str().unwrap().to_string(), i["steps"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_whose_post_install_hook_fails_halts_the_rollout() {
    let extra = "waves = [\"1\", \"50%\", \"100%\"]\n[window.task.hooks]\npre_install = \"DrainNode\"\n\
                 post_install = \"CheckServiceStarted\"";
    let f = Fixture::start("waves", "post-hook", scenario(), config(extra)).await;
    let canary = managed(&f)[0].clone();
    f.server
        .set_hook_outcomes(vec![HookRule {
            contains: "CheckServiceStarted".into(),
            instance_ids: Some(vec![canary.clone()]),
            exit_code: 3,
            output: Some("service did not start".into()),
        }])
        .unwrap();
    let summary = run_window(&f).await;

    assert_halted_after_the_canary(&f, &summary);
    let installs: Vec<CommandView> = f
        .server
        .commands()
        .into_iter()
        .filter(|c| c.document_name == "AWS-RunPatchBaselineWithHooks")
        .collect();
    assert_eq!(
        sent_to(&installs),
        std::slice::from_ref(&canary),
        "no node of a later wave received a command"
    );
    let steps = hook_steps(&f).await;
    let canary_steps = steps[&canary].as_array().unwrap();
    let post = canary_steps.iter().find(|s| s["step"] == "PostInstallHook").expect("the post-install step");
    assert_eq!(post["status"], "Failed", "{canary_steps:?}");
    assert_eq!(post["response_code"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pre_install_hook_leaves_its_node_unpatched_and_counts_against_the_budget() {
    let extra = "max_errors = 1\n[window.task.hooks]\npre_install = \"DrainNode\"\non_exit = \"UndrainNode\"";
    let f = Fixture::start("waves", "pre-hook", scenario(), config(extra)).await;
    let stuck = managed(&f)[4].clone();
    let before = f.server.instance(&stuck).unwrap();
    f.server
        .set_hook_outcomes(vec![HookRule {
            contains: "DrainNode".into(),
            instance_ids: Some(vec![stuck.clone()]),
            exit_code: 1,
            output: None,
        }])
        .unwrap();
    let summary = run_window(&f).await;

    let task = &summary.tasks[0];
    assert_eq!((task.failed, task.succeeded), (1, managed(&f).len() - 1), "{task:?}");
    assert!(!task.budget_exceeded, "one failure is within max_errors = 1");
    let after = f.server.instance(&stuck).unwrap();
    assert_eq!(after.missing, before.missing, "the node whose drain failed was not patched");
    let steps = hook_steps(&f).await;
    assert_eq!(steps.len(), managed(&f).len(), "every node's steps are in the audit log");
    assert_eq!(steps[&stuck][0]["step"], "PreInstallHook");
    assert_eq!(steps[&stuck][0]["status"], "Failed");
}
