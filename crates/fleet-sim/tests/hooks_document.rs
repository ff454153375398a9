//! AWS-RunPatchBaselineWithHooks driven with the real aws-sdk-ssm client: hook documents
//! whose outcomes come from `/_sim/hook-outcomes` rules (a rule's `contains` matches the hook
//! document's name), and the steps reported as plugins.
//!
//! Every test freezes the clock and moves it with `SimServer::advance`.

mod common;

use std::time::Duration;

use aws_sdk_ssm::operation::send_command::builders::SendCommandFluentBuilder;
use aws_sdk_ssm::types::{CommandInvocationStatus, CommandStatus, InstancePatchState};
use common::http::raw;
use common::sdk::{self, code};
use fleet_sim::{Scenario, SimServer};
use serde_json::{json, Value};

const DOCUMENT: &str = "AWS-RunPatchBaselineWithHooks";
const START: &str = "2026-11-28T00:00:00Z";
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const STEPS: [&str; 4] = ["PreInstallHook", "InstallWithNoReboot", "PostInstallHook", "OnExit"];

fn scenario() -> Scenario {
    let start = chrono::DateTime::parse_from_rfc3339(START).expect("valid instant").to_utc();
    Scenario::minimal().with_time_scale(0.0).with_start(start)
}

async fn start() -> SimServer {
    SimServer::start("127.0.0.1:0".parse().expect("address"), scenario()).await.expect("server starts")
}

fn ssm(server: &SimServer) -> aws_sdk_ssm::Client {
    let retries = Some(sdk::quick_retries(1));
    sdk::client!(aws_sdk_ssm, server.endpoint_url(), "us-east-1", sdk::static_credentials(), retries)
}

async fn control(server: &SimServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, _, answer) = raw(server, method, path, &[("Content-Type", "application/json")], &text).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn ids(server: &SimServer) -> Vec<String> {
    server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect()
}

fn send(client: &aws_sdk_ssm::Client, targets: &[String]) -> SendCommandFluentBuilder {
    client.send_command().document_name(DOCUMENT).set_instance_ids(Some(targets.to_vec()))
}

fn install_with(client: &aws_sdk_ssm::Client, targets: &[String]) -> SendCommandFluentBuilder {
    send(client, targets)
        .parameters("Operation", vec!["Install".into()])
        .parameters("PreInstallHookDocName", vec!["DrainNode".into()])
        .parameters("PostInstallHookDocName", vec!["VerifyApp".into()])
        .parameters("OnExitHookDocName", vec!["NotifyTeam".into()])
}

/// A kernel fix every node misses, old enough for the default baseline to approve: installs
/// must reboot.
async fn release_kernel_fix(server: &SimServer) {
    let (status, _) = control(
        server,
        "POST",
        "/_sim/patches/release",
        json!({"os": "AMAZON_LINUX_2", "severity": "Critical", "classification": "Security", "reboot": true}),
    )
    .await;
    assert_eq!(status, 200);
    server.advance(8 * 24 * HOUR);
}

async fn patch_state(client: &aws_sdk_ssm::Client, id: &str) -> InstancePatchState {
    let states = client.describe_instance_patch_states().instance_ids(id).send().await.expect("states");
    states.instance_patch_states()[0].clone()
}

fn command_id(sent: &aws_sdk_ssm::operation::send_command::SendCommandOutput) -> String {
    sent.command().and_then(|c| c.command_id()).expect("id").to_string()
}

#[tokio::test]
async fn hook_document_parameters_are_validated() {
    let server = start().await;
    let client = ssm(&server);
    let targets = ids(&server)[..1].to_vec();
    let scan = || send(&client, &targets).parameters("Operation", vec!["Scan".into()]);
    for (what, request) in [
        (
            "InstallOverrideList",
            scan().parameters("InstallOverrideList", vec!["https://example.com/list.yaml".into()]),
        ),
        ("BaselineOverride", scan().parameters("BaselineOverride", vec!["s3://bucket/b.json".into()])),
        ("an unknown parameter", scan().parameters("PreHook", vec!["DrainNode".into()])),
        ("no Operation", send(&client, &targets).parameters("RebootOption", vec!["NoReboot".into()])),
        ("a bad Operation", send(&client, &targets).parameters("Operation", vec!["Patch".into()])),
        ("a bad RebootOption", scan().parameters("RebootOption", vec!["Always".into()])),
        ("a bad SnapshotId", scan().parameters("SnapshotId", vec!["yesterday".into()])),
        ("a hook that is no document name", scan().parameters("OnExitHookDocName", vec!["a b".into()])),
        ("two hook documents", scan().parameters("PreInstallHookDocName", vec!["One".into(), "Two".into()])),
    ] {
        assert_eq!(code(request.send().await), "InvalidParameters", "{what}");
    }
    assert!(server.commands().is_empty(), "nothing was created");

    let sent = install_with(&client, &targets)
        .parameters("RebootOption", vec!["NoReboot".into()])
        .parameters("SnapshotId", vec!["6c1d2f6e-3a86-4a4e-9d5f-0e8e6d0c7a11".into()])
        .comment("hooked install")
        .max_concurrency("10%")
        .max_errors("0")
        .timeout_seconds(600)
        .send()
        .await
        .expect("accepted");
    let command = sent.command().expect("command");
    assert_eq!(
        (command.document_name(), command.comment(), command.max_concurrency(), command.timeout_seconds()),
        (Some(DOCUMENT), Some("hooked install"), Some("10%"), Some(600))
    );
    let history = server.commands();
    assert_eq!(
        (history[0].document_name.as_str(), history[0].operation.as_str(), history[0].comment.as_deref()),
        (DOCUMENT, "Install", Some("hooked install"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn hook_outcomes_decide_how_far_an_install_goes() {
    let server = start().await;
    let client = ssm(&server);
    let targets = ids(&server)[..4].to_vec();
    release_kernel_fix(&server).await;
    let rules = json!([
        {"contains": "DrainNode", "instance_ids": [targets[0]], "exit_code": 1, "output": "12 connections still open"},
        {"contains": "VerifyApp", "instance_ids": [targets[1]], "exit_code": 3},
        {"contains": "NotifyTeam", "instance_ids": [targets[2]], "exit_code": 4},
    ]);
    let (status, _) = control(&server, "PUT", "/_sim/hook-outcomes", rules).await;
    assert_eq!(status, 200);
    let before = patch_state(&client, &targets[0]).await;
    assert!(before.missing_count() > 0, "the node is behind");

    let sent = install_with(&client, &targets).max_errors("3").send().await.expect("sent");
    let id = command_id(&sent);
    server.advance(3 * HOUR);

    let mut outcomes = Vec::new();
    for target in &targets {
        let inv =
            client.get_command_invocation().command_id(&id).instance_id(target).send().await.expect("exists");
        outcomes.push((inv.status().cloned(), inv.status_details().map(str::to_string), inv.response_code()));
    }
    let failed = |code| (Some(CommandInvocationStatus::Failed), Some("Failed".to_string()), code);
    assert_eq!(
        outcomes,
        vec![
            failed(1),
            failed(3),
            failed(4),
            (Some(CommandInvocationStatus::Success), Some("Success".into()), 0)
        ]
    );

    let drained = patch_state(&client, &targets[0]).await;
    assert_eq!(drained, before, "a failed pre-install hook leaves compliance as it was");
    let unverified = patch_state(&client, &targets[1]).await;
    assert!(
        unverified.installed_pending_reboot_count().unwrap_or(0) > 0,
        "no reboot after a failed post hook"
    );
    for rebooted in &targets[2..] {
        let state = patch_state(&client, rebooted).await;
        assert_eq!(state.installed_pending_reboot_count(), Some(0), "installed and rebooted");
        assert_eq!(state.missing_count(), 0);
        assert!(state.installed_count() > before.installed_count());
    }
    let done = client.list_commands().command_id(&id).send().await.expect("listed").commands()[0].clone();
    assert_eq!(
        (done.status(), done.status_details(), done.error_count()),
        (Some(&CommandStatus::Failed), Some("Incomplete"), 3),
        "three errors within MaxErrors 3"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plugin_details_list_the_steps() {
    let server = start().await;
    let client = ssm(&server);
    let targets = ids(&server)[..3].to_vec();
    release_kernel_fix(&server).await;
    let rules = json!([
        {"contains": "DrainNode", "instance_ids": [targets[0]], "exit_code": 1, "output": "12 connections still open"},
        {"contains": "VerifyApp", "instance_ids": [targets[1]], "exit_code": 3, "output": "health check failed"},
    ]);
    let (status, _) = control(&server, "PUT", "/_sim/hook-outcomes", rules).await;
    assert_eq!(status, 200);
    let sent = install_with(&client, &targets).max_errors("2").send().await.expect("sent");
    let id = command_id(&sent);
    server.advance(Duration::from_secs(3));
    let running = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&targets[2])
        .send()
        .await
        .expect("exists");
    assert_eq!(
        (running.status(), running.plugin_name()),
        (Some(&CommandInvocationStatus::InProgress), Some("PreInstallHook"))
    );
    server.advance(3 * HOUR);

    let listed =
        client.list_command_invocations().command_id(&id).details(true).send().await.expect("listed");
    let mut seen = 0;
    for inv in listed.command_invocations() {
        let plugins = inv.command_plugins();
        let names: Vec<&str> = plugins.iter().filter_map(|p| p.name()).collect();
        assert_eq!(names, STEPS);
        let statuses: Vec<&str> = plugins.iter().filter_map(|p| p.status()).map(|s| s.as_str()).collect();
        let codes: Vec<i32> = plugins.iter().map(|p| p.response_code()).collect();
        let target = inv.instance_id().expect("instance");
        if target == targets[0] {
            assert_eq!(statuses, ["Failed", "Pending", "Pending", "Pending"]);
            assert_eq!(codes, [1, -1, -1, -1]);
            let output = plugins[0].output().unwrap_or_default();
            assert!(output.contains("DrainNode") && output.contains("12 connections still open"), "{output}");
            assert!(plugins[1].response_start_date_time().is_none(), "never reached");
        } else if target == targets[1] {
            assert_eq!(statuses, ["Success", "Success", "Failed", "Pending"]);
            assert_eq!(codes, [0, 0, 3, -1]);
            assert!(plugins[1].output().unwrap_or_default().contains("Operation type: Install"));
        } else {
            assert_eq!(statuses, ["Success"; 4]);
            let times: Vec<f64> = plugins
                .iter()
                .flat_map(|p| [p.response_start_date_time(), p.response_finish_date_time()])
                .map(|t| t.expect("set").as_secs_f64())
                .collect();
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "steps run in order: {times:?}");
            assert!(times[6] - times[5] >= 60.0, "the reboot comes between the last two hooks");
        }
        seen += 1;
    }
    assert_eq!(seen, 3);

    let post = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&targets[1])
        .plugin_name("PostInstallHook")
        .send()
        .await
        .expect("a step");
    assert_eq!((post.status(), post.response_code()), (Some(&CommandInvocationStatus::Failed), 3));
    let stdout = post.standard_output_content().unwrap_or_default();
    assert!(stdout.contains("VerifyApp") && stdout.contains("health check failed"), "{stdout}");
    assert!(post.standard_error_content().unwrap_or_default().contains("exit status 3"));
    let pending = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&targets[1])
        .plugin_name("OnExit")
        .send()
        .await
        .expect("a step");
    assert_eq!((pending.status(), pending.response_code()), (Some(&CommandInvocationStatus::Pending), -1));
    let whole = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&targets[1])
        .send()
        .await
        .expect("exists");
    assert_eq!(
        (whole.status(), whole.plugin_name(), whole.response_code()),
        (Some(&CommandInvocationStatus::Failed), Some("PostInstallHook"), 3)
    );
    assert!(whole.standard_output_content().unwrap_or_default().contains("[InstallWithNoReboot]"));
    let wrong = client
        .get_command_invocation()
        .command_id(&id)
        .instance_id(&targets[1])
        .plugin_name("PatchLinux")
        .send()
        .await;
    assert_eq!(code(wrong), "InvalidPluginName");
    server.shutdown().await;
}

#[tokio::test]
async fn a_scan_runs_no_hooks() {
    let server = start().await;
    let client = ssm(&server);
    let targets = ids(&server)[..2].to_vec();
    let (status, _) =
        control(&server, "PUT", "/_sim/hook-outcomes", json!([{"contains": "", "exit_code": 9}])).await;
    assert_eq!(status, 200);
    let sent = send(&client, &targets)
        .parameters("Operation", vec!["Scan".into()])
        .parameters("PreInstallHookDocName", vec!["DrainNode".into()])
        .send()
        .await
        .expect("sent");
    let id = command_id(&sent);
    server.advance(10 * MINUTE);
    let listed =
        client.list_command_invocations().command_id(&id).details(true).send().await.expect("listed");
    for inv in listed.command_invocations() {
        assert_eq!(inv.status(), Some(&CommandInvocationStatus::Success), "no hook ran to fail");
        let names: Vec<&str> = inv.command_plugins().iter().filter_map(|p| p.name()).collect();
        assert_eq!(names, ["Scan"]);
        assert!(inv.command_plugins()[0].output().unwrap_or_default().contains("Operation type: Scan"));
    }
    assert_eq!(server.commands()[0].operation, "Scan");
    server.shutdown().await;
}
