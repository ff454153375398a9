//! What a patching rollout gates on, driven with the real aws-sdk-ssm client and the control
//! API over plain HTTP: CloudWatch alarms named in SendCommand's AlarmConfiguration, agents
//! that do not come back after a reboot, and AWS-RunShellScript hooks with scripted outcomes.
//!
//! Every test freezes the clock and moves it with `SimServer::advance`.

mod common;

use std::time::Duration;

use aws_sdk_ssm::types::{
    Alarm, AlarmConfiguration, CommandInvocationStatus, CommandStatus, ExternalAlarmState,
    InstanceInformationStringFilter, PatchComplianceDataState, PingStatus,
};
use common::http::raw;
use common::sdk::{self, code};
use fleet_sim::{Scenario, SimServer};
use serde_json::{json, Value};

const START: &str = "2026-11-28T00:00:00Z";
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

fn scenario() -> Scenario {
    let start = chrono::DateTime::parse_from_rfc3339(START).expect("valid instant").to_utc();
    Scenario::minimal().with_time_scale(0.0).with_start(start)
}

async fn start(scenario: Scenario) -> SimServer {
    SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("server starts")
}

fn ssm(server: &SimServer) -> aws_sdk_ssm::Client {
    let retries = Some(sdk::quick_retries(1));
    sdk::client!(aws_sdk_ssm, server.endpoint_url(), "us-east-1", sdk::static_credentials(), retries)
}

/// A control call: status and the JSON body.
async fn control(server: &SimServer, method: &str, path: &str, body: Value) -> (u16, Value) {
    let text = if body.is_null() { String::new() } else { body.to_string() };
    let (status, _, answer) = raw(server, method, path, &[("Content-Type", "application/json")], &text).await;
    (status, serde_json::from_str(&answer).unwrap_or(Value::Null))
}

fn ids(server: &SimServer) -> Vec<String> {
    server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect()
}

fn gate(name: &str) -> AlarmConfiguration {
    AlarmConfiguration::builder()
        .alarms(Alarm::builder().name(name).build().expect("named"))
        .build()
        .expect("has alarms")
}

async fn invocation(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
    instance_id: &str,
) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
    client
        .get_command_invocation()
        .command_id(command_id)
        .instance_id(instance_id)
        .send()
        .await
        .expect("invocation exists")
}

async fn command(client: &aws_sdk_ssm::Client, command_id: &str) -> aws_sdk_ssm::types::Command {
    let listed = client.list_commands().command_id(command_id).send().await.expect("listed");
    listed.commands()[0].clone()
}

#[tokio::test]
async fn alarm_configuration_is_validated_and_echoed() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let target = ids(&server)[0].clone();
    let scan = || {
        client
            .send_command()
            .document_name("AWS-RunPatchBaseline")
            .instance_ids(&target)
            .parameters("Operation", vec!["Scan".into()])
    };
    let none = AlarmConfiguration::builder().set_alarms(Some(vec![])).build().expect("an empty list");
    let two = AlarmConfiguration::builder()
        .alarms(Alarm::builder().name("a").build().expect("named"))
        .alarms(Alarm::builder().name("b").build().expect("named"))
        .build()
        .expect("two");
    for (what, config) in
        [("no alarm", none), ("two alarms", two), ("blank name", gate("   ")), ("empty name", gate(""))]
    {
        let result = scan().alarm_configuration(config).send().await;
        assert_eq!(code(result), "ValidationException", "{what}");
    }
    assert_eq!(server.stats().commands_by_status.values().sum::<u64>(), 0, "no command was created");

    let config = AlarmConfiguration::builder()
        .ignore_poll_alarm_failure(true)
        .alarms(Alarm::builder().name("nobody-created-this").build().expect("named"))
        .build()
        .expect("valid");
    let sent = scan().alarm_configuration(config.clone()).send().await.expect("accepted");
    let id = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
    assert_eq!(sent.command().and_then(|c| c.alarm_configuration()), Some(&config));
    server.advance(10 * MINUTE);
    let done = command(&client, &id).await;
    assert_eq!(
        done.status(),
        Some(&CommandStatus::Success),
        "an unknown alarm has no data and stops nothing"
    );
    assert_eq!(done.alarm_configuration(), Some(&config));
    assert!(done.triggered_alarms().is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn an_alarm_stops_a_command_before_and_while_it_runs() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let targets: Vec<String> = ids(&server)[..3].to_vec();

    let (status, alarm) =
        control(&server, "PUT", "/_sim/alarms/deploy%20gate", json!({"state": "ALARM"})).await;
    assert_eq!(status, 200, "{alarm}");
    assert_eq!((alarm["name"].as_str(), alarm["state"].as_str()), (Some("deploy gate"), Some("ALARM")));
    let blocked = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(targets.clone()))
        .parameters("Operation", vec!["Scan".into()])
        .alarm_configuration(gate("deploy gate"))
        .send()
        .await
        .expect("accepted");
    let blocked_id = blocked.command().and_then(|c| c.command_id()).expect("id").to_string();
    assert_eq!(blocked.command().and_then(|c| c.status()), Some(&CommandStatus::Pending));
    server.advance(MINUTE);
    let stopped = command(&client, &blocked_id).await;
    assert_eq!(
        (stopped.status(), stopped.status_details()),
        (Some(&CommandStatus::Cancelled), Some("Cancelled"))
    );
    let triggered = stopped.triggered_alarms();
    assert_eq!(triggered.len(), 1);
    assert_eq!((triggered[0].name(), triggered[0].state()), ("deploy gate", &ExternalAlarmState::Alarm));
    for target in &targets {
        let inv = invocation(&client, &blocked_id, target).await;
        assert_eq!(inv.status(), Some(&CommandInvocationStatus::Cancelled));
    }

    let (status, _) = control(&server, "PUT", "/_sim/alarms/deploy%20gate", json!({"state": "OK"})).await;
    assert_eq!(status, 200);
    let running = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(targets.clone()))
        .parameters("Operation", vec!["Scan".into()])
        .max_concurrency("1")
        .alarm_configuration(gate("deploy gate"))
        .send()
        .await
        .expect("accepted");
    let running_id = running.command().and_then(|c| c.command_id()).expect("id").to_string();
    server.advance(MINUTE);
    assert_eq!(
        invocation(&client, &running_id, &targets[0]).await.status(),
        Some(&CommandInvocationStatus::Success)
    );
    assert_eq!(
        invocation(&client, &running_id, &targets[1]).await.status(),
        Some(&CommandInvocationStatus::InProgress)
    );
    let (status, _) = control(&server, "PUT", "/_sim/alarms/deploy%20gate", json!({"state": "ALARM"})).await;
    assert_eq!(status, 200);
    assert_eq!(command(&client, &running_id).await.status(), Some(&CommandStatus::Cancelling));
    server.advance(MINUTE);
    let stopped = command(&client, &running_id).await;
    assert_eq!(stopped.status(), Some(&CommandStatus::Cancelled));
    assert_eq!(stopped.triggered_alarms().len(), 1);
    let statuses: Vec<Option<CommandInvocationStatus>> = {
        let mut all = Vec::new();
        for target in &targets {
            all.push(invocation(&client, &running_id, target).await.status().cloned());
        }
        all
    };
    assert_eq!(
        statuses,
        vec![
            Some(CommandInvocationStatus::Success),
            Some(CommandInvocationStatus::Cancelled),
            Some(CommandInvocationStatus::Cancelled)
        ],
        "what finished keeps its result"
    );

    let (status, history) = control(&server, "GET", "/_sim/commands", Value::Null).await;
    assert_eq!(status, 200);
    let history = history["commands"].as_array().expect("a list").clone();
    assert_eq!(history.len(), 2);
    assert!(history.iter().all(|c| c["stopped_by_alarm"] == "deploy gate"), "{history:?}");
    let (status, alarms) = control(&server, "GET", "/_sim/alarms", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(alarms["alarms"][0]["name"], "deploy gate");
    assert_eq!(alarms["alarms"][0]["state"], "ALARM");
    assert!(alarms["alarms"][0]["updated_at"].as_str().is_some_and(|t| t.starts_with("2026-11-28T00:0")));
    server.shutdown().await;
}

#[tokio::test]
async fn alarm_controls_refuse_bad_input_and_keep_partitions_apart() {
    let server = start(scenario()).await;
    for (body, path) in [
        (json!({"state": "RED"}), "/_sim/alarms/gate"),
        (json!({}), "/_sim/alarms/gate"),
        (json!({"state": "OK"}), "/_sim/alarms/%20%20"),
        (json!({"state": "OK"}), "/_sim/alarms/bad%zz"),
    ] {
        let (status, answer) = control(&server, "PUT", path, body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
    }
    let (status, _) = control(
        &server,
        "PUT",
        "/_sim/alarms/gate?account=210987654321&region=eu-west-1",
        json!({"state": "ALARM"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, primary) = control(&server, "GET", "/_sim/alarms", Value::Null).await;
    assert_eq!(primary, json!({"alarms": []}));
    let (_, other) =
        control(&server, "GET", "/_sim/alarms?account=210987654321&region=eu-west-1", Value::Null).await;
    assert_eq!(other["alarms"][0]["state"], "ALARM");
    let (_, nowhere) = control(&server, "GET", "/_sim/alarms?region=ap-south-1", Value::Null).await;
    assert_eq!(nowhere, json!({"alarms": []}));
    server.shutdown().await;
}

async fn ping(client: &aws_sdk_ssm::Client, id: &str) -> Option<PingStatus> {
    let info = client
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder().key("InstanceIds").values(id).build().expect("filter"),
        )
        .send()
        .await
        .expect("described");
    info.instance_information_list().first().and_then(|i| i.ping_status()).cloned()
}

async fn pending_reboot(client: &aws_sdk_ssm::Client, id: &str) -> i32 {
    let states = client.describe_instance_patch_states().instance_ids(id).send().await.expect("states");
    states.instance_patch_states()[0].installed_pending_reboot_count().unwrap_or(-1)
}

#[tokio::test]
async fn an_agent_lost_after_its_reboot_runs_into_the_execution_timeout() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let targets: Vec<String> = ids(&server)[..3].to_vec();
    // A kernel fix every node misses, approved by the default baseline a week after release.
    let (status, released) = control(
        &server,
        "POST",
        "/_sim/patches/release",
        json!({"os": "AMAZON_LINUX_2", "severity": "Critical", "classification": "Security", "reboot": true}),
    )
    .await;
    assert_eq!(status, 200);
    let kernel = released["id"].as_str().expect("id").to_string();
    server.advance(8 * 24 * HOUR);

    for target in &targets[1..] {
        let path = format!("/_sim/instances/{target}/agent");
        let (status, view) = control(&server, "POST", &path, json!({"after_reboot": "lost"})).await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(view["lost_after_reboot"], true);
        assert_eq!(view["agent"], "Online");
    }
    let (status, _) = control(
        &server,
        "POST",
        &format!("/_sim/instances/{}/agent", targets[0]),
        json!({"after_reboot": "gone"}),
    )
    .await;
    assert_eq!(status, 400);

    let sent = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(targets.clone()))
        .parameters("Operation", vec!["Install".into()])
        .parameters("RebootOption", vec!["RebootIfNeeded".into()])
        .max_errors("0")
        .send()
        .await
        .expect("sent");
    let id = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
    server.advance(10 * MINUTE);
    assert_eq!(invocation(&client, &id, &targets[0]).await.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(ping(&client, &targets[0]).await, Some(PingStatus::Online));
    assert_eq!(pending_reboot(&client, &targets[0]).await, 0);
    for lost in &targets[1..] {
        assert_eq!(invocation(&client, &id, lost).await.status(), Some(&CommandInvocationStatus::InProgress));
        assert_eq!(ping(&client, lost).await, Some(PingStatus::ConnectionLost));
        assert!(pending_reboot(&client, lost).await > 0, "the install's report is the last one");
        let patches = client
            .describe_instance_patches()
            .instance_id(lost)
            .max_results(100)
            .send()
            .await
            .expect("patches");
        let mut rows = patches.patches().to_vec();
        let mut token = patches.next_token().map(str::to_string);
        while let Some(next) = token {
            let page = client
                .describe_instance_patches()
                .instance_id(lost)
                .max_results(100)
                .next_token(next)
                .send()
                .await
                .expect("patches");
            rows.extend(page.patches().iter().cloned());
            token = page.next_token().map(str::to_string);
        }
        let row = rows.iter().find(|p| p.kb_id() == kernel).expect("the kernel fix is listed");
        assert_eq!(row.state(), &PatchComplianceDataState::InstalledPendingReboot);
    }

    // One comes back before the timeout: its agent finishes the install after the reboot.
    let (status, view) = control(
        &server,
        "POST",
        &format!("/_sim/instances/{}/agent", targets[2]),
        json!({"state": "Online"}),
    )
    .await;
    assert_eq!((status, view["agent"].as_str()), (200, Some("Online")));
    assert_eq!(invocation(&client, &id, &targets[2]).await.status(), Some(&CommandInvocationStatus::Success));
    assert_eq!(pending_reboot(&client, &targets[2]).await, 0);

    server.advance(2 * HOUR);
    let timed_out = invocation(&client, &id, &targets[1]).await;
    assert_eq!(
        (timed_out.status(), timed_out.status_details()),
        (Some(&CommandInvocationStatus::TimedOut), Some("ExecutionTimedOut"))
    );
    assert_eq!(ping(&client, &targets[1]).await, Some(PingStatus::ConnectionLost));
    assert!(pending_reboot(&client, &targets[1]).await > 0, "nothing reported after the reboot");
    let done = command(&client, &id).await;
    assert_eq!((done.status(), done.error_count()), (Some(&CommandStatus::Failed), 1));

    let (status, _) = control(
        &server,
        "POST",
        &format!("/_sim/instances/{}/agent", targets[1]),
        json!({"state": "Online"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(ping(&client, &targets[1]).await, Some(PingStatus::Online));
    server.shutdown().await;
}

#[tokio::test]
async fn the_lost_after_reboot_rate_is_a_fault_setting() {
    let server = start(scenario()).await;
    let (status, faults) = control(&server, "GET", "/_sim/faults", Value::Null).await;
    assert_eq!((status, faults["lost_after_reboot_rate"].as_f64()), (200, Some(0.0)));
    let (status, faults) =
        control(&server, "POST", "/_sim/faults", json!({"lost_after_reboot_rate": 0.25})).await;
    assert_eq!((status, faults["lost_after_reboot_rate"].as_f64()), (200, Some(0.25)));
    let (status, answer) =
        control(&server, "POST", "/_sim/faults", json!({"lost_after_reboot_rate": 2})).await;
    assert_eq!(status, 400, "{answer}");
    let toml = r#"
        [faults]
        lost_after_reboot_rate = 0.1
        [hooks]
        script_seconds = 2
        [[hooks.outcomes]]
        contains = "drain"
        exit_code = 4
        [[group]]
        name = "web"
        count = 3
        platforms = { amazon-linux-2 = 1 }
    "#;
    let parsed = Scenario::from_toml_str(toml).expect("valid scenario");
    assert_eq!(parsed.faults.lost_after_reboot_rate, 0.1);
    assert_eq!((parsed.hooks.script_seconds, parsed.hooks.outcomes[0].exit_code), (2.0, 4));
    server.shutdown().await;
}

#[tokio::test]
async fn shell_script_hooks_run_with_scripted_outcomes() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let targets: Vec<String> = ids(&server)[..2].to_vec();
    let rules = json!([
        {"contains": "drain", "instance_ids": [targets[1]], "exit_code": 3, "output": "still serving 12 connections"},
        {"contains": "never-matches", "exit_code": 9},
    ]);
    let (status, set) = control(&server, "PUT", "/_sim/hook-outcomes", rules.clone()).await;
    assert_eq!((status, &set["rules"]), (200, &rules));
    let (_, shown) = control(&server, "GET", "/_sim/hook-outcomes", Value::Null).await;
    assert_eq!(shown["rules"], rules);
    for bad in [json!([{"exit_code": 300}]), json!([{"instance_ids": ["web-1"]}]), json!({"contains": "x"})] {
        let (status, answer) = control(&server, "PUT", "/_sim/hook-outcomes", bad).await;
        assert_eq!(status, 400, "{answer}");
    }
    let states_before = client
        .describe_instance_patch_states()
        .set_instance_ids(Some(targets.clone()))
        .send()
        .await
        .expect("states");

    let shell =
        || client.send_command().document_name("AWS-RunShellScript").set_instance_ids(Some(targets.clone()));
    for (what, request, expected) in [
        ("no commands", shell(), "InvalidParameters"),
        (
            "a patching parameter",
            shell().parameters("commands", vec!["true".into()]).parameters("Operation", vec!["Scan".into()]),
            "InvalidParameters",
        ),
        (
            "timeout 0",
            shell()
                .parameters("commands", vec!["true".into()])
                .parameters("executionTimeout", vec!["0".into()]),
            "InvalidParameters",
        ),
        (
            "timeout too long",
            shell()
                .parameters("commands", vec!["true".into()])
                .parameters("executionTimeout", vec!["172801".into()]),
            "InvalidParameters",
        ),
        (
            "two directories",
            shell()
                .parameters("commands", vec!["true".into()])
                .parameters("workingDirectory", vec!["/a".into(), "/b".into()]),
            "InvalidParameters",
        ),
    ] {
        assert_eq!(code(request.send().await), expected, "{what}");
    }

    let sent = shell()
        .parameters("commands", vec!["systemctl stop app".into(), "lb drain --wait".into()])
        .parameters("workingDirectory", vec!["/opt/app".into()])
        .parameters("executionTimeout", vec!["600".into()])
        .comment("pre-patch hook")
        .max_errors("1")
        .send()
        .await
        .expect("accepted");
    let command_id = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
    assert_eq!(sent.command().and_then(|c| c.document_name()), Some("AWS-RunShellScript"));
    server.advance(Duration::from_secs(3));
    assert_eq!(
        invocation(&client, &command_id, &targets[0]).await.status(),
        Some(&CommandInvocationStatus::InProgress)
    );
    server.advance(MINUTE);

    let ok = invocation(&client, &command_id, &targets[0]).await;
    assert_eq!(
        (ok.status(), ok.response_code(), ok.plugin_name()),
        (Some(&CommandInvocationStatus::Success), 0, Some("aws:runShellScript"))
    );
    let stdout = ok.standard_output_content().unwrap_or_default();
    assert!(
        stdout.contains("+ cd /opt/app")
            && stdout.contains("+ systemctl stop app")
            && stdout.contains("+ lb drain --wait"),
        "{stdout}"
    );
    assert_eq!(ok.standard_error_content(), Some(""));
    let failed = invocation(&client, &command_id, &targets[1]).await;
    assert_eq!(
        (failed.status(), failed.status_details(), failed.response_code()),
        (Some(&CommandInvocationStatus::Failed), Some("Failed"), 3)
    );
    assert!(failed.standard_output_content().unwrap_or_default().contains("still serving 12 connections"));
    assert!(failed.standard_error_content().unwrap_or_default().contains("exit status 3"));
    let wrong_plugin = client
        .get_command_invocation()
        .command_id(&command_id)
        .instance_id(&targets[0])
        .plugin_name("PatchLinux")
        .send()
        .await;
    assert_eq!(code(wrong_plugin), "InvalidPluginName");

    let listed =
        client.list_command_invocations().command_id(&command_id).details(true).send().await.expect("listed");
    for inv in listed.command_invocations() {
        let plugin = &inv.command_plugins()[0];
        assert_eq!(plugin.name(), Some("aws:runShellScript"));
        let expected = if inv.instance_id() == Some(targets[1].as_str()) { 3 } else { 0 };
        assert_eq!(plugin.response_code(), expected);
    }
    let done = command(&client, &command_id).await;
    assert_eq!(
        (done.status(), done.status_details(), done.error_count(), done.completed_count()),
        (Some(&CommandStatus::Failed), Some("Incomplete"), 1, 2),
        "one error within MaxErrors 1"
    );

    let states_after = client
        .describe_instance_patch_states()
        .set_instance_ids(Some(targets.clone()))
        .send()
        .await
        .expect("states");
    assert_eq!(
        states_before.instance_patch_states(),
        states_after.instance_patch_states(),
        "compliance untouched"
    );
    let history = server.commands();
    assert_eq!(
        (history[0].document_name.as_str(), history[0].operation.as_str()),
        ("AWS-RunShellScript", "")
    );

    let (status, cleared) = control(&server, "DELETE", "/_sim/hook-outcomes", Value::Null).await;
    assert_eq!((status, cleared), (200, json!({"rules": []})));
    let again = shell().parameters("commands", vec!["lb drain".into()]).send().await.expect("accepted");
    let again_id = again.command().and_then(|c| c.command_id()).expect("id").to_string();
    server.advance(MINUTE);
    assert_eq!(command(&client, &again_id).await.status(), Some(&CommandStatus::Success), "no rule: exit 0");
    server.shutdown().await;
}
