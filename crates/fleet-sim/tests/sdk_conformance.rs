//! Drives the simulator with the real aws-sdk-ssm and aws-sdk-ec2 clients, as patchd will.
//!
//! Every test starts its own server on 127.0.0.1:0 with a frozen clock (time scale 0) and
//! moves time with `SimServer::advance`, so nothing here depends on how fast the machine is.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::{
    CommandInvocationStatus, CommandStatus, InstanceInformationStringFilter, InstancePatchStateFilter,
    InstancePatchStateOperatorType, OperatingSystem, PatchComplianceDataState, PatchComplianceLevel,
    PatchFilter, PatchFilterGroup, PatchFilterKey, PatchOrchestratorFilter, PatchRule, PatchRuleGroup,
    PingStatus, ResourceTypeForTagging, Tag, Target,
};
use common::http::raw;
use common::sdk::{self, code};
use fleet_sim::{AgentState, Faults, InstanceView, Scenario, SimServer};

const START: &str = "2026-11-28T00:00:00Z";
const MINUTE: Duration = Duration::from_secs(60);

fn scenario() -> Scenario {
    let start = chrono::DateTime::parse_from_rfc3339(START).expect("valid instant").to_utc();
    Scenario::demo().with_time_scale(0.0).with_start(start)
}

async fn start(scenario: Scenario) -> SimServer {
    SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("server starts")
}

fn ssm_with_attempts(server: &SimServer, attempts: u32) -> aws_sdk_ssm::Client {
    let retries = Some(sdk::quick_retries(attempts));
    sdk::client!(aws_sdk_ssm, server.endpoint_url(), "us-east-1", sdk::static_credentials(), retries)
}

fn ssm(server: &SimServer) -> aws_sdk_ssm::Client {
    ssm_with_attempts(server, 1)
}

fn ec2_with_attempts(server: &SimServer, attempts: u32) -> aws_sdk_ec2::Client {
    let retries = Some(sdk::quick_retries(attempts));
    sdk::client!(aws_sdk_ec2, server.endpoint_url(), "us-east-1", sdk::static_credentials(), retries)
}

fn ec2(server: &SimServer) -> aws_sdk_ec2::Client {
    ec2_with_attempts(server, 1)
}

const SIGNED: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=AKID/20261128/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0",
);

fn managed_in_group<'a>(instances: &'a [InstanceView], group: &str) -> Vec<&'a InstanceView> {
    instances.iter().filter(|i| i.is_managed() && i.patch_group.as_deref() == Some(group)).collect()
}

/// Pages through every invocation of a command with ListCommandInvocations.
async fn all_invocations(
    client: &aws_sdk_ssm::Client,
    command_id: &str,
    page_size: i32,
) -> Vec<aws_sdk_ssm::types::CommandInvocation> {
    let mut invocations = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_command_invocations()
            .command_id(command_id)
            .max_results(page_size)
            .details(true)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("lists invocations");
        assert!(page.command_invocations().len() <= page_size as usize);
        invocations.extend(page.command_invocations().iter().cloned());
        match page.next_token() {
            Some(next) => token = Some(next.to_string()),
            None => return invocations,
        }
    }
}

fn is_terminal(status: Option<&CommandInvocationStatus>) -> bool {
    !matches!(
        status,
        None | Some(CommandInvocationStatus::Pending)
            | Some(CommandInvocationStatus::InProgress)
            | Some(CommandInvocationStatus::Delayed)
            | Some(CommandInvocationStatus::Cancelling)
    )
}

/// Advances the clock in steps until every invocation is terminal, polling as a client would.
/// A command of no invocations never completes: every caller targets instances.
async fn run_to_completion(
    server: &SimServer,
    client: &aws_sdk_ssm::Client,
    command_id: &str,
) -> Vec<aws_sdk_ssm::types::CommandInvocation> {
    for _ in 0..200 {
        server.advance(5 * MINUTE);
        let invocations = all_invocations(client, command_id, 10).await;
        if !invocations.is_empty() && invocations.iter().all(|i| is_terminal(i.status())) {
            return invocations;
        }
    }
    panic!("command {command_id} did not finish within 1000 simulated minutes");
}

#[tokio::test]
async fn scan_then_install_rollout_is_observable_and_consistent() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let instances = server.instances();
    let group = managed_in_group(&instances, "web-prod");
    let online: BTreeSet<&str> =
        group.iter().filter(|i| i.agent.as_deref() == Some("Online")).map(|i| i.id.as_str()).collect();
    assert!(group.len() > 50 && online.len() < group.len(), "demo web-prod has a few offline agents");
    let sent_at = server.now();

    let scan = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .targets(Target::builder().key("tag:Patch Group").values("web-prod").build())
        .parameters("Operation", vec!["Scan".into()])
        .max_concurrency("10")
        .max_errors("10%")
        .timeout_seconds(600)
        .comment("run-1 scan")
        .send()
        .await
        .expect("scan sent");
    let command = scan.command().expect("command");
    let scan_id = command.command_id().expect("id").to_string();
    assert_eq!(scan_id.len(), 36);
    assert_eq!(command.status(), Some(&CommandStatus::Pending));
    assert_eq!(command.target_count(), group.len() as i32);
    assert_eq!(command.comment(), Some("run-1 scan"));
    assert_eq!(command.document_name(), Some("AWS-RunPatchBaseline"));
    assert!(command.requested_date_time().is_some() && command.expires_after().is_some());

    let early =
        client.get_command_invocation().command_id(&scan_id).instance_id(group[0].id.as_str()).send().await;
    assert_eq!(code(early), "InvocationDoesNotExist", "GetCommandInvocation is eventually consistent");

    let invocations = run_to_completion(&server, &client, &scan_id).await;
    assert_eq!(invocations.len(), group.len());
    for invocation in &invocations {
        let id = invocation.instance_id().expect("instance id");
        let plugin = &invocation.command_plugins()[0];
        assert_eq!(plugin.name(), Some("PatchLinux"));
        if online.contains(id) {
            assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Success), "{id}");
            assert!(plugin.output().is_some_and(|o| o.contains("Operation type: Scan")));
        } else {
            assert_eq!(invocation.status(), Some(&CommandInvocationStatus::TimedOut), "{id}");
            assert_eq!(invocation.status_details(), Some("DeliveryTimedOut"));
        }
    }
    let listed = client.list_commands().command_id(&scan_id).send().await.expect("lists commands");
    let finished = &listed.commands()[0];
    assert_eq!(finished.completed_count(), finished.target_count());
    assert_eq!(finished.error_count(), 0);
    assert_eq!(finished.delivery_timed_out_count(), (group.len() - online.len()) as i32);

    let one = *online.iter().next().expect("an online node");
    let detail =
        client.get_command_invocation().command_id(&scan_id).instance_id(one).send().await.expect("visible");
    assert_eq!(detail.plugin_name(), Some("PatchLinux"));
    assert_eq!(detail.response_code(), 0);
    let started = detail.execution_start_date_time().expect("start");
    assert!(chrono::DateTime::parse_from_rfc3339(started).is_ok(), "ISO-8601 string: {started}");
    assert!(detail.execution_elapsed_time().is_some_and(|e| e.starts_with("PT")));

    let ids: Vec<String> = online.iter().map(|s| s.to_string()).collect();
    let mut scanned = Vec::new();
    for chunk in ids.chunks(50) {
        let states = client
            .describe_instance_patch_states()
            .set_instance_ids(Some(chunk.to_vec()))
            .max_results(100)
            .send()
            .await
            .expect("patch states");
        scanned.extend(states.instance_patch_states().iter().cloned());
    }
    assert_eq!(scanned.len(), online.len());
    for state in &scanned {
        assert_eq!(state.operation().as_str(), "Scan");
        assert_eq!(state.patch_group(), "web-prod");
        assert!(state.baseline_id().starts_with("arn:aws:ssm:us-east-1:"), "default baseline");
        assert!(state.operation_end_time().secs() >= sent_at.timestamp());
    }
    let before_install: u32 = scanned.iter().map(|s| s.missing_count() as u32).sum();
    assert!(before_install > 0, "a fresh fleet has missing patches");

    let snapshot = "11111111-2222-3333-4444-555555555555";
    let install = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(ids[..ids.len().min(50)].to_vec()))
        .parameters("Operation", vec!["Install".into()])
        .parameters("RebootOption", vec!["RebootIfNeeded".into()])
        .parameters("SnapshotId", vec![snapshot.into()])
        .max_concurrency("25%")
        .send()
        .await
        .expect("install sent");
    let install_id = install.command().and_then(|c| c.command_id()).expect("id").to_string();
    let installed = run_to_completion(&server, &client, &install_id).await;
    assert_eq!(installed.len(), ids.len().min(50), "one invocation per targeted instance");
    assert!(installed.iter().all(|i| i.status() == Some(&CommandInvocationStatus::Success)));
    let listed = client.list_commands().command_id(&install_id).send().await.expect("lists");
    assert_eq!(listed.commands()[0].status(), Some(&CommandStatus::Success));

    let target = ids[0].clone();
    let states = client.describe_instance_patch_states().instance_ids(&target).send().await.expect("states");
    let state = &states.instance_patch_states()[0];
    assert_eq!(state.operation().as_str(), "Install");
    assert_eq!(state.snapshot_id(), Some(snapshot));
    assert_eq!(
        (state.missing_count(), state.failed_count(), state.installed_pending_reboot_count()),
        (0, 0, Some(0))
    );
    assert_eq!(state.reboot_option().map(|r| r.as_str()), Some("RebootIfNeeded"));

    // DescribeInstancePatches agrees with the counts, page by page.
    let mut rows = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_instance_patches()
            .instance_id(&target)
            .max_results(10)
            .set_next_token(token)
            .send()
            .await
            .expect("patches");
        assert!(page.patches().len() <= 10);
        rows.extend(page.patches().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    let count =
        |wanted: PatchComplianceDataState| rows.iter().filter(|p| *p.state() == wanted).count() as i32;
    assert_eq!(count(PatchComplianceDataState::Installed), state.installed_count());
    assert_eq!(count(PatchComplianceDataState::InstalledOther), state.installed_other_count());
    assert_eq!(count(PatchComplianceDataState::NotApplicable), state.not_applicable_count());
    assert_eq!(count(PatchComplianceDataState::Missing), 0);
    let unique: BTreeSet<&str> = rows.iter().map(|p| p.kb_id()).collect();
    assert_eq!(unique.len(), rows.len(), "paging returns each patch once");
    let filtered = client
        .describe_instance_patches()
        .instance_id(&target)
        .filters(PatchOrchestratorFilter::builder().key("State").values("Installed").build())
        .max_results(100)
        .send()
        .await
        .expect("filtered");
    assert_eq!(filtered.patches().len() as i32, state.installed_count().min(100));
    assert!(filtered.patches().iter().all(|p| *p.state() == PatchComplianceDataState::Installed));

    // Amazon Linux 2 release dates come from DescribeAvailablePatches.
    let platform = instances.iter().find(|i| i.id == target).map(|i| i.platform.clone()).unwrap_or_default();
    if platform == "amazon-linux-2" {
        let available: HashMap<String, _> = sdk::available_al2_patches(&client)
            .await
            .iter()
            .map(|patch| (patch.id().unwrap_or_default().to_string(), patch.release_date().cloned()))
            .collect();
        for row in rows.iter().filter(|r| *r.state() == PatchComplianceDataState::Installed) {
            let released = available.get(row.kb_id()).unwrap_or_else(|| panic!("{} is listed", row.kb_id()));
            assert!(released.is_some(), "AL2 patches carry a release date");
        }
    }
    let stats = server.stats();
    assert_eq!(stats.calls("SendCommand"), 2);
    assert!(stats.calls("ListCommandInvocations") >= 2 * (group.len() as u64).div_ceil(10));
    assert_eq!(stats.commands_by_status.get("Success"), Some(&1));
    server.shutdown().await;
}

#[tokio::test]
async fn describe_instances_filters_and_paging() {
    let server = start(scenario()).await;
    let client = ec2(&server);
    let instances = server.instances();

    let everything = client.describe_instances().send().await.expect("describes");
    let all: Vec<_> = everything.reservations().iter().flat_map(|r| r.instances()).collect();
    assert_eq!(all.len(), instances.len(), "no MaxResults: one page with everything");
    assert!(everything.next_token().is_none());
    let windows = all.iter().find(|i| i.platform_details() == Some("Windows")).expect("a Windows node");
    assert_eq!(windows.platform().map(|p| p.as_str()), Some("windows"));
    assert!(windows.tags().iter().any(|t| t.key() == Some("Name")));
    assert!(windows.launch_time().is_some() && windows.private_ip_address().is_some());

    let mut seen = BTreeSet::new();
    let mut token = None;
    let mut pages = 0;
    loop {
        let page =
            client.describe_instances().max_results(37).set_next_token(token).send().await.expect("page");
        let count: usize = page.reservations().iter().map(|r| r.instances().len()).sum();
        assert!(count <= 37);
        for instance in page.reservations().iter().flat_map(|r| r.instances()) {
            assert!(seen.insert(instance.instance_id().unwrap_or_default().to_string()), "no repeats");
        }
        pages += 1;
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), instances.len());
    assert_eq!(pages, instances.len().div_ceil(37));

    let count_of = |response: &aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput| -> usize {
        response.reservations().iter().map(|r| r.instances().len()).sum()
    };
    let filter = |name: &str, values: &[&str]| {
        Filter::builder().name(name).set_values(Some(values.iter().map(|v| v.to_string()).collect())).build()
    };
    for (name, values, expected) in [
        (
            "tag:Environment",
            vec!["prod"],
            instances.iter().filter(|i| i.tag("Environment") == Some("prod")).count(),
        ),
        (
            "tag:Role",
            vec!["db", "batch"],
            instances.iter().filter(|i| matches!(i.tag("Role"), Some("db" | "batch"))).count(),
        ),
        ("tag-key", vec!["PatchGroup"], instances.iter().filter(|i| i.tag("PatchGroup").is_some()).count()),
        ("instance-state-name", vec!["stopped"], instances.iter().filter(|i| i.state == "stopped").count()),
        (
            "platform-details",
            vec!["Red Hat Enterprise Linux"],
            instances.iter().filter(|i| i.platform == "rhel-9").count(),
        ),
        ("instance-id", vec![instances[3].id.as_str()], 1),
        (
            "tag:Patch Group",
            vec!["web-*"],
            instances.iter().filter(|i| i.tag("Patch Group").is_some_and(|g| g.starts_with("web-"))).count(),
        ),
    ] {
        let response =
            client.describe_instances().filters(filter(name, &values)).send().await.expect("filtered");
        assert_eq!(count_of(&response), expected, "{name}={values:?}");
        assert!(expected > 0, "{name} selects something in the demo fleet");
    }
    let combined = client
        .describe_instances()
        .filters(filter("tag:Environment", &["prod"]))
        .filters(filter("instance-state-name", &["running"]))
        .send()
        .await
        .expect("combined");
    let expected =
        instances.iter().filter(|i| i.tag("Environment") == Some("prod") && i.state == "running").count();
    assert_eq!(count_of(&combined), expected, "filters are ANDed");

    let by_id = client
        .describe_instances()
        .instance_ids(&instances[0].id)
        .instance_ids(&instances[1].id)
        .send()
        .await;
    assert_eq!(count_of(&by_id.expect("by id")), 2);
    let unknown = client.describe_instances().instance_ids("i-0123456789abcdef0").send().await;
    assert_eq!(code(unknown), "InvalidInstanceID.NotFound");
    let malformed = client.describe_instances().instance_ids("i-nope").send().await;
    assert_eq!(code(malformed), "InvalidInstanceID.Malformed");
    let combination = client.describe_instances().instance_ids(&instances[0].id).max_results(10).send().await;
    assert_eq!(code(combination), "InvalidParameterCombination");
    for bad in [4, 1001] {
        let result = client.describe_instances().max_results(bad).send().await;
        assert_eq!(code(result), "InvalidParameterValue", "MaxResults {bad}");
    }
    let bad_filter = client.describe_instances().filters(filter("colour", &["red"])).send().await;
    assert_eq!(code(bad_filter), "InvalidParameterValue");
    let bad_token = client.describe_instances().max_results(5).next_token("forged").send().await;
    assert_eq!(code(bad_token), "InvalidParameterValue");
    assert_eq!(server.stats().calls("DescribeInstances"), 1 + pages as u64 + 7 + 1 + 3 + 2 + 2 + 1);
    server.shutdown().await;
}

#[tokio::test]
async fn instance_information_lists_managed_nodes_with_filters() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let instances = server.instances();
    let managed: Vec<&InstanceView> = instances.iter().filter(|i| i.is_managed()).collect();

    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_instance_information()
            .max_results(50)
            .set_next_token(token)
            .send()
            .await
            .expect("lists");
        listed.extend(page.instance_information_list().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(listed.len(), managed.len(), "unmanaged and stopped nodes are not listed");
    for info in &listed {
        let id = info.instance_id().expect("id");
        let view = managed.iter().find(|m| m.id == id).expect("managed");
        assert_eq!(info.ping_status().map(|p| p.as_str()), view.agent.as_deref());
        let expected_type = if view.platform.starts_with("windows") { "Windows" } else { "Linux" };
        assert_eq!(info.platform_type().map(|p| p.as_str()), Some(expected_type));
        assert!(info.platform_name().is_some() && info.platform_version().is_some());
        assert!(info.last_ping_date_time().is_some());
    }
    let rhel = listed.iter().find(|i| i.platform_name() == Some("Red Hat Enterprise Linux")).expect("RHEL");
    assert_eq!(rhel.platform_version(), Some("9.4"));

    let lost = client
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder()
                .key("PingStatus")
                .values("ConnectionLost")
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("filtered");
    let expected_lost = managed.iter().filter(|m| m.agent.as_deref() == Some("ConnectionLost")).count();
    assert!(expected_lost > 0);
    assert_eq!(lost.instance_information_list().len(), expected_lost.min(50));
    assert!(lost
        .instance_information_list()
        .iter()
        .all(|i| i.ping_status() == Some(&PingStatus::ConnectionLost)));

    let by_tag = client
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder()
                .key("tag:Patch Group")
                .values("db-prod")
                .build()
                .expect("filter"),
        )
        .max_results(50)
        .send()
        .await
        .expect("by tag");
    assert_eq!(by_tag.instance_information_list().len(), managed_in_group(&instances, "db-prod").len());

    let mixed = client
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder().key("tag:Role").values("db").build().expect("filter"),
        )
        .filters(
            InstanceInformationStringFilter::builder()
                .key("PingStatus")
                .values("Online")
                .build()
                .expect("filter"),
        )
        .send()
        .await;
    assert_eq!(code(mixed), "ValidationException", "tag filters do not combine with other types");
    for bad in [4, 51] {
        let result = client.describe_instance_information().max_results(bad).send().await;
        assert_eq!(code(result), "ValidationException", "MaxResults {bad}");
    }
    let bad_key = client
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder().key("Colour").values("red").build().expect("filter"),
        )
        .send()
        .await;
    assert_eq!(code(bad_key), "InvalidFilterKey");
    let bad_token = client.describe_instance_information().next_token("forged").send().await;
    assert_eq!(code(bad_token), "InvalidNextToken");

    server.set_agent(&managed[0].id, AgentState::ConnectionLost).expect("managed");
    let one = client
        .describe_instance_information()
        .filters(
            InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .values(managed[0].id.as_str())
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("one");
    assert_eq!(one.instance_information_list()[0].ping_status(), Some(&PingStatus::ConnectionLost));
    server.shutdown().await;
}

fn security_rule(days: i32, level: PatchComplianceLevel) -> PatchRuleGroup {
    let filters = PatchFilterGroup::builder()
        .patch_filters(
            PatchFilter::builder()
                .key(PatchFilterKey::Classification)
                .values("Security")
                .build()
                .expect("filter"),
        )
        .build()
        .expect("group");
    PatchRuleGroup::builder()
        .patch_rules(
            PatchRule::builder()
                .patch_filter_group(filters)
                .approve_after_days(days)
                .compliance_level(level)
                .build(),
        )
        .build()
        .expect("rules")
}

#[tokio::test]
async fn baselines_patch_groups_and_tags() {
    let server = start(scenario()).await;
    let client = ssm(&server);

    let defaults = client
        .describe_patch_baselines()
        .filters(PatchOrchestratorFilter::builder().key("OWNER").values("AWS").build())
        .send()
        .await
        .expect("predefined");
    let al2_default = defaults
        .baseline_identities()
        .iter()
        .find(|b| b.baseline_name() == Some("AWS-AmazonLinux2DefaultPatchBaseline"))
        .expect("AWS-AmazonLinux2DefaultPatchBaseline");
    assert!(al2_default.default_baseline());
    let default_id = al2_default.baseline_id().expect("id").to_string();
    assert!(default_id.starts_with("arn:aws:ssm:us-east-1:") && default_id.contains(":patchbaseline/pb-"));
    let fetched =
        client.get_patch_baseline().baseline_id(&default_id).send().await.expect("gets AWS baseline");
    let rule = &fetched.approval_rules().expect("rules").patch_rules()[0];
    assert_eq!(rule.approve_after_days(), Some(7));

    let created = client
        .create_patch_baseline()
        .name("patchd-web-prod")
        .operating_system(OperatingSystem::AmazonLinux2)
        .approval_rules(security_rule(0, PatchComplianceLevel::Critical))
        .rejected_patches("openssl")
        .description("created by the conformance test")
        .client_token("token-1")
        .tags(Tag::builder().key("owner").value("patchd").build().expect("tag"))
        .send()
        .await
        .expect("creates");
    let id = created.baseline_id().expect("id").to_string();
    assert!(id.starts_with("pb-") && id.len() == 20, "{id}");
    let again = client
        .create_patch_baseline()
        .name("patchd-web-prod")
        .operating_system(OperatingSystem::AmazonLinux2)
        .approval_rules(security_rule(0, PatchComplianceLevel::Critical))
        .rejected_patches("openssl")
        .description("created by the conformance test")
        .client_token("token-1")
        .tags(Tag::builder().key("owner").value("patchd").build().expect("tag"))
        .send()
        .await
        .expect("idempotent");
    assert_eq!(again.baseline_id(), Some(id.as_str()), "ClientToken makes creation idempotent");

    let updated =
        client.update_patch_baseline().baseline_id(&id).description("updated").send().await.expect("updates");
    assert_eq!(updated.description(), Some("updated"));
    assert_eq!(updated.rejected_patches(), ["openssl".to_string()], "Replace=false keeps the rest");
    let replaced = client
        .update_patch_baseline()
        .baseline_id(&id)
        .name("patchd-web-prod")
        .approval_rules(security_rule(0, PatchComplianceLevel::Critical))
        .replace(true)
        .send()
        .await
        .expect("replaces");
    assert!(
        replaced.rejected_patches().is_empty() && replaced.description().is_none(),
        "Replace=true clears"
    );

    let registered = client
        .register_patch_baseline_for_patch_group()
        .baseline_id(&id)
        .patch_group("web-prod")
        .send()
        .await
        .expect("registers");
    assert_eq!(registered.patch_group(), Some("web-prod"));
    let twice = client
        .register_patch_baseline_for_patch_group()
        .baseline_id(&default_id)
        .patch_group("web-prod")
        .send()
        .await;
    assert_eq!(code(twice), "AlreadyExistsException");
    let for_group = client
        .get_patch_baseline_for_patch_group()
        .patch_group("web-prod")
        .operating_system(OperatingSystem::AmazonLinux2)
        .send()
        .await
        .expect("gets");
    assert_eq!(for_group.baseline_id(), Some(id.as_str()));
    let unregistered = client
        .get_patch_baseline_for_patch_group()
        .patch_group("nobody")
        .operating_system(OperatingSystem::AmazonLinux2)
        .send()
        .await
        .expect("gets default");
    assert_eq!(unregistered.baseline_id(), Some(default_id.as_str()));
    let groups = client.describe_patch_groups().send().await.expect("groups");
    assert_eq!(groups.mappings().len(), 1);
    assert_eq!(groups.mappings()[0].baseline_identity().and_then(|b| b.baseline_id()), Some(id.as_str()));
    let got = client.get_patch_baseline().baseline_id(&id).send().await.expect("gets");
    assert_eq!(got.patch_groups(), ["web-prod".to_string()]);
    let own = client
        .describe_patch_baselines()
        .filters(PatchOrchestratorFilter::builder().key("OWNER").values("Self").build())
        .send()
        .await
        .expect("own");
    assert_eq!(own.baseline_identities().len(), 1);

    // A scan now judges web-prod's Amazon Linux 2 nodes by the registered baseline.
    let al2: Vec<String> = managed_in_group(&server.instances(), "web-prod")
        .into_iter()
        .filter(|i| i.platform == "amazon-linux-2" && i.agent.as_deref() == Some("Online"))
        .map(|i| i.id.clone())
        .take(5)
        .collect();
    let sent = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(al2.clone()))
        .parameters("Operation", vec!["Scan".into()])
        .send()
        .await
        .expect("scan");
    let command_id = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
    run_to_completion(&server, &client, &command_id).await;
    let states =
        client.describe_instance_patch_states().set_instance_ids(Some(al2)).send().await.expect("states");
    assert!(!states.instance_patch_states().is_empty());
    for state in states.instance_patch_states() {
        assert_eq!(state.baseline_id(), id);
        assert_eq!(
            state.critical_non_compliant_count(),
            Some(state.missing_count()),
            "every approved patch is CRITICAL"
        );
    }
    let critical = client
        .describe_instance_patch_states_for_patch_group()
        .patch_group("web-prod")
        .filters(
            InstancePatchStateFilter::builder()
                .key("CriticalNonCompliantCount")
                .values("0")
                .r#type(InstancePatchStateOperatorType::GreaterThan)
                .build()
                .expect("filter"),
        )
        .max_results(10)
        .send()
        .await
        .expect("by group");
    // The scan above left some of these nodes with critical patches missing.
    let expected = states.instance_patch_states().iter().filter(|s| s.missing_count() > 0).count();
    assert!(expected > 0, "the scenario leaves critical patches missing");
    assert!(critical.instance_patch_states().len() >= expected.min(10), "{critical:#?}");
    assert!(critical.instance_patch_states().iter().all(|s| s.critical_non_compliant_count() > Some(0)));

    let in_use = client.delete_patch_baseline().baseline_id(&id).send().await;
    assert_eq!(code(in_use), "ResourceInUseException");
    client
        .deregister_patch_baseline_for_patch_group()
        .baseline_id(&id)
        .patch_group("web-prod")
        .send()
        .await
        .expect("deregisters");
    let not_registered = client
        .deregister_patch_baseline_for_patch_group()
        .baseline_id(&id)
        .patch_group("web-prod")
        .send()
        .await;
    assert_eq!(code(not_registered), "InvalidResourceId");

    client
        .add_tags_to_resource()
        .resource_type(ResourceTypeForTagging::PatchBaseline)
        .resource_id(&id)
        .tags(Tag::builder().key("team").value("security").build().expect("tag"))
        .send()
        .await
        .expect("tags");
    let tags = client
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::PatchBaseline)
        .resource_id(&id)
        .send()
        .await
        .expect("lists tags");
    let tags: BTreeMap<&str, &str> = tags.tag_list().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, BTreeMap::from([("owner", "patchd"), ("team", "security")]));
    let foreign = client
        .list_tags_for_resource()
        .resource_type(ResourceTypeForTagging::PatchBaseline)
        .resource_id("pb-00000000000000000")
        .send()
        .await;
    assert_eq!(code(foreign), "InvalidResourceId");

    let deleted = client.delete_patch_baseline().baseline_id(&id).send().await.expect("deletes");
    assert_eq!(deleted.baseline_id(), Some(id.as_str()));
    let gone = client.get_patch_baseline().baseline_id(&id).send().await;
    assert_eq!(code(gone), "DoesNotExistException");
    let both_delays = client
        .create_patch_baseline()
        .name("bad")
        .operating_system(OperatingSystem::AmazonLinux2)
        .approval_rules(
            PatchRuleGroup::builder()
                .patch_rules(
                    PatchRule::builder()
                        .patch_filter_group(
                            PatchFilterGroup::builder()
                                .set_patch_filters(Some(vec![]))
                                .build()
                                .expect("group"),
                        )
                        .approve_after_days(7)
                        .approve_until_date("2026-01-01")
                        .build(),
                )
                .build()
                .expect("rules"),
        )
        .send()
        .await;
    assert_eq!(code(both_delays), "ValidationException");
    let windows_key_on_linux = client
        .create_patch_baseline()
        .name("bad-keys")
        .operating_system(OperatingSystem::AmazonLinux2)
        .global_filters(
            PatchFilterGroup::builder()
                .patch_filters(
                    PatchFilter::builder()
                        .key(PatchFilterKey::MsrcSeverity)
                        .values("Critical")
                        .build()
                        .expect("f"),
                )
                .build()
                .expect("group"),
        )
        .send()
        .await;
    assert_eq!(code(windows_key_on_linux), "ValidationException");
    server.shutdown().await;
}

#[tokio::test]
async fn send_command_limits_and_unknown_ids() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let instances = server.instances();
    let managed: Vec<String> = instances.iter().filter(|i| i.is_managed()).map(|i| i.id.clone()).collect();
    let unmanaged =
        instances.iter().find(|i| i.agent.is_none() && i.state == "running").expect("EC2-only node");
    let stopped = instances.iter().find(|i| i.state == "stopped").expect("stopped node");
    let scan = || {
        client
            .send_command()
            .document_name("AWS-RunPatchBaseline")
            .parameters("Operation", vec!["Scan".into()])
    };
    let target = |key: &str, value: &str| Target::builder().key(key).values(value).build();

    let cases: Vec<(&str, aws_sdk_ssm::operation::send_command::builders::SendCommandFluentBuilder, &str)> = vec![
        ("51 instance ids", scan().set_instance_ids(Some(managed[..51].to_vec())), "ValidationException"),
        (
            "ids and targets",
            scan().instance_ids(&managed[0]).targets(target("tag:Role", "web")),
            "ValidationException",
        ),
        ("neither", scan(), "ValidationException"),
        (
            "six targets",
            scan().set_targets(Some((0..6).map(|i| target(&format!("tag:K{i}"), "v")).collect())),
            "ValidationException",
        ),
        (
            "51 target values",
            scan().targets(
                Target::builder()
                    .key("tag:Role")
                    .set_values(Some((0..51).map(|i| i.to_string()).collect()))
                    .build(),
            ),
            "ValidationException",
        ),
        (
            "other document",
            scan().document_name("AWS-RunPowerShellScript").instance_ids(&managed[0]),
            "InvalidDocument",
        ),
        (
            "patching parameters to the shell document",
            scan().document_name("AWS-RunShellScript").instance_ids(&managed[0]),
            "InvalidParameters",
        ),
        (
            "no Operation",
            client.send_command().document_name("AWS-RunPatchBaseline").instance_ids(&managed[0]),
            "InvalidParameters",
        ),
        (
            "bad Operation",
            client
                .send_command()
                .document_name("AWS-RunPatchBaseline")
                .instance_ids(&managed[0])
                .parameters("Operation", vec!["Upgrade".into()]),
            "InvalidParameters",
        ),
        (
            "bad RebootOption",
            scan().instance_ids(&managed[0]).parameters("RebootOption", vec!["Always".into()]),
            "InvalidParameters",
        ),
        (
            "bad SnapshotId",
            scan().instance_ids(&managed[0]).parameters("SnapshotId", vec!["nope".into()]),
            "InvalidParameters",
        ),
        (
            "unknown parameter",
            scan().instance_ids(&managed[0]).parameters("Colour", vec!["red".into()]),
            "InvalidParameters",
        ),
        ("timeout too short", scan().instance_ids(&managed[0]).timeout_seconds(29), "ValidationException"),
        (
            "timeout too long",
            scan().instance_ids(&managed[0]).timeout_seconds(2_592_001),
            "ValidationException",
        ),
        ("long comment", scan().instance_ids(&managed[0]).comment("x".repeat(101)), "ValidationException"),
        ("MaxConcurrency 0", scan().instance_ids(&managed[0]).max_concurrency("0"), "ValidationException"),
        ("MaxErrors 101%", scan().instance_ids(&managed[0]).max_errors("101%"), "ValidationException"),
        ("duplicate ids", scan().instance_ids(&managed[0]).instance_ids(&managed[0]), "DuplicateInstanceId"),
        ("unmanaged node", scan().instance_ids(&unmanaged.id), "InvalidInstanceId"),
        ("stopped node", scan().instance_ids(&stopped.id), "InvalidInstanceId"),
        ("unknown node", scan().instance_ids("i-0123456789abcdef0"), "InvalidInstanceId"),
        ("malformed node", scan().instance_ids("i-xyz"), "ValidationException"),
    ];
    for (what, request, expected) in cases {
        assert_eq!(code(request.send().await), expected, "{what}");
    }
    assert_eq!(server.stats().commands_by_status.values().sum::<u64>(), 0, "no command was created");

    let accepted = scan()
        .set_instance_ids(Some(managed[..50].to_vec()))
        .max_concurrency("100%")
        .max_errors("0")
        .timeout_seconds(30)
        .comment("x".repeat(100))
        .parameters("SnapshotId", vec!["{11111111-2222-3333-4444-555555555555}".into()])
        .send()
        .await
        .expect("limits are inclusive");
    assert_eq!(accepted.command().map(|c| c.target_count()), Some(50));

    let fake = "00000000-0000-0000-0000-000000000000";
    assert_eq!(code(client.list_command_invocations().command_id(fake).send().await), "InvalidCommandId");
    assert_eq!(code(client.cancel_command().command_id(fake).send().await), "InvalidCommandId");
    assert_eq!(code(client.list_commands().command_id(fake).send().await), "InvalidCommandId");
    assert_eq!(
        code(client.get_command_invocation().command_id(fake).instance_id(&managed[0]).send().await),
        "InvalidCommandId"
    );
    assert_eq!(code(client.list_commands().max_results(51).send().await), "ValidationException");
    assert_eq!(code(client.list_commands().max_results(0).send().await), "ValidationException");
    assert_eq!(code(client.list_commands().next_token("forged").send().await), "InvalidNextToken");
    assert_eq!(
        code(client.describe_instance_patches().instance_id("i-0123456789abcdef0").send().await),
        "InvalidInstanceId"
    );
    assert_eq!(
        code(client.describe_instance_patches().instance_id(&managed[0]).max_results(9).send().await),
        "ValidationException"
    );
    assert_eq!(
        code(client.describe_instance_patch_states().instance_ids(&managed[0]).max_results(101).send().await),
        "ValidationException"
    );
    assert_eq!(
        code(client.describe_available_patches().max_results(101).send().await),
        "ValidationException"
    );
    assert_eq!(
        code(client.get_patch_baseline().baseline_id("pb-0123456789abcdef0").send().await),
        "DoesNotExistException"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn tag_targets_and_paging_across_commands() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let instances = server.instances();
    let expected = instances
        .iter()
        .filter(|i| i.is_managed() && i.tag("Environment") == Some("staging") && i.tag("Role") == Some("db"))
        .count();
    let sent = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .targets(Target::builder().key("tag:Environment").values("staging").build())
        .targets(Target::builder().key("tag:Role").values("db").values("nothing").build())
        .parameters("Operation", vec!["Scan".into()])
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.command().map(|c| c.target_count()), Some(expected as i32), "entries AND, values OR");
    let nothing = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .targets(Target::builder().key("tag-key").values("NoSuchTag").build())
        .parameters("Operation", vec!["Scan".into()])
        .send()
        .await
        .expect("sent");
    let nothing = nothing.command().expect("command");
    assert_eq!((nothing.target_count(), nothing.status()), (0, Some(&CommandStatus::Success)));

    for _ in 0..5 {
        client
            .send_command()
            .document_name("AWS-RunPatchBaseline")
            .targets(Target::builder().key("tag:Patch Group").values("db-staging").build())
            .parameters("Operation", vec!["Scan".into()])
            .send()
            .await
            .expect("sent");
    }
    let mut ids = Vec::new();
    let mut token = None;
    loop {
        let page = client.list_commands().max_results(3).set_next_token(token).send().await.expect("page");
        ids.extend(page.commands().iter().map(|c| c.command_id().unwrap_or_default().to_string()));
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(ids.len(), 7);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 7);
    let completed = client
        .list_commands()
        .filters(
            aws_sdk_ssm::types::CommandFilter::builder()
                .key(aws_sdk_ssm::types::CommandFilterKey::ExecutionStage)
                .value("Complete")
                .build()
                .expect("filter"),
        )
        .send()
        .await
        .expect("filtered");
    assert_eq!(completed.commands().len(), 1, "only the empty command is complete");
    let all_invocations = client.list_command_invocations().max_results(50).send().await.expect("all");
    assert!(!all_invocations.command_invocations().is_empty());
    assert!(
        all_invocations.command_invocations().iter().all(|i| i.command_plugins().is_empty()),
        "Details=false"
    );
    let token = all_invocations.next_token().map(str::to_string);
    if let Some(token) = token {
        let wrong = client.list_command_invocations().command_id(&ids[0]).next_token(token).send().await;
        assert_eq!(code(wrong), "InvalidNextToken", "a token belongs to its request");
    }
    let everyone = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .targets(Target::builder().key("InstanceIds").values("*").build())
        .parameters("Operation", vec!["Scan".into()])
        .send()
        .await
        .expect("sent");
    let managed = instances.iter().filter(|i| i.is_managed()).count();
    assert_eq!(
        everyone.command().map(|c| c.target_count()),
        Some(managed as i32),
        "InstanceIds=* is every node"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn cancel_and_error_budget_through_the_sdk() {
    let faults = Faults { install_failure_rate: 1.0, ..Faults::default() };
    let server = start(scenario().with_faults(faults)).await;
    let client = ssm(&server);
    let group: Vec<String> = managed_in_group(&server.instances(), "db-prod")
        .into_iter()
        .filter(|i| i.agent.as_deref() == Some("Online"))
        .map(|i| i.id.clone())
        .collect();

    let failing = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(group.clone()))
        .parameters("Operation", vec!["Install".into()])
        .max_concurrency("2")
        .max_errors("1")
        .send()
        .await
        .expect("sent");
    let failing_id = failing.command().and_then(|c| c.command_id()).expect("id").to_string();
    let invocations = run_to_completion(&server, &client, &failing_id).await;
    let failed = invocations.iter().filter(|i| i.status() == Some(&CommandInvocationStatus::Failed)).count();
    let terminated = invocations.iter().filter(|i| i.status_details() == Some("Terminated")).count();
    assert!((2..=3).contains(&failed), "{failed}: at most the in-flight ones fail after the budget is spent");
    assert_eq!(failed + terminated, group.len());
    let command = client.list_commands().command_id(&failing_id).send().await.expect("listed");
    let command = &command.commands()[0];
    assert_eq!((command.status(), command.status_details()), (Some(&CommandStatus::Failed), Some("Failed")));
    assert_eq!(command.error_count(), failed as i32);

    server.set_faults(Faults::default()).expect("valid");
    let long = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(group.clone()))
        .parameters("Operation", vec!["Install".into()])
        .max_concurrency("3")
        .send()
        .await
        .expect("sent");
    let long_id = long.command().and_then(|c| c.command_id()).expect("id").to_string();
    server.advance(MINUTE);
    let running = all_invocations(&client, &long_id, 50).await;
    assert_eq!(
        running.iter().filter(|i| i.status() == Some(&CommandInvocationStatus::InProgress)).count(),
        3
    );
    client.cancel_command().command_id(&long_id).send().await.expect("cancels");
    let cancelling = client.list_commands().command_id(&long_id).send().await.expect("listed");
    assert_eq!(cancelling.commands()[0].status(), Some(&CommandStatus::Cancelling));
    server.advance(MINUTE);
    let cancelled = client.list_commands().command_id(&long_id).send().await.expect("listed");
    assert_eq!(cancelled.commands()[0].status(), Some(&CommandStatus::Cancelled));
    let invocations = all_invocations(&client, &long_id, 50).await;
    assert_eq!(invocations.len(), group.len());
    assert!(invocations.iter().all(|i| i.status() == Some(&CommandInvocationStatus::Cancelled)));
    server.shutdown().await;
}

#[tokio::test]
async fn throttling_and_server_errors_surface_after_retries() {
    let server = start(scenario()).await;
    let client = ssm_with_attempts(&server, 3);
    let ec2_client = ec2_with_attempts(&server, 2);
    let throttle = BTreeMap::from([
        ("DescribeInstanceInformation".to_string(), 0.0001),
        ("DescribeInstances".to_string(), 0.0001),
    ]);
    server.set_faults(Faults { throttle, ..Faults::default() }).expect("valid");

    client.describe_instance_information().send().await.expect("the burst admits one call");
    let throttled = client.describe_instance_information().send().await;
    let error = throttled.expect_err("throttled");
    assert_eq!(error.code(), Some("ThrottlingException"));
    assert_eq!(error.message(), Some("Rate exceeded"));
    let stats = server.stats();
    assert_eq!(stats.calls("DescribeInstanceInformation"), 4, "one success, then three attempts");
    assert_eq!(stats.throttled("DescribeInstanceInformation"), 3);
    client.list_commands().send().await.expect("other operations are not limited");

    ec2_client.describe_instances().max_results(5).send().await.expect("burst");
    let ec2_throttled = ec2_client.describe_instances().max_results(5).send().await;
    assert_eq!(code(ec2_throttled), "RequestLimitExceeded");
    assert_eq!(server.stats().throttled("DescribeInstances"), 2);

    server.set_faults(Faults { error_rate: 1.0, ..Faults::default() }).expect("valid");
    let failed = client.list_commands().send().await;
    assert_eq!(code(failed), "InternalServerError");
    assert_eq!(server.stats().failed("ListCommands"), 3, "5xx are retried too");
    let ec2_failed = ec2_client.describe_instances().send().await;
    assert_eq!(code(ec2_failed), "InternalError");
    server.shutdown().await;
}

#[tokio::test]
async fn raw_http_auth_unknown_operations_and_control_api() {
    let server = start(scenario()).await;
    let json = ("Content-Type", "application/x-amz-json-1.1");

    let (status, head, body) =
        raw(&server, "POST", "/", &[json, ("X-Amz-Target", "AmazonSSM.ListCommands")], "{}").await;
    assert_eq!(status, 400);
    let error: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(
        error,
        serde_json::json!({"__type": "MissingAuthenticationTokenException", "message": "Missing Authentication Token"})
    );
    assert!(head.contains("x-amzn-requestid:"));

    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let (status, _, body) =
        raw(&server, "POST", "/", &[form], "Action=DescribeInstances&Version=2016-11-15").await;
    assert_eq!(status, 401);
    assert!(
        body.contains("<Code>MissingAuthenticationToken</Code>") && body.contains("<RequestID>"),
        "{body}"
    );

    let (status, _, body) =
        raw(&server, "POST", "/", &[json, SIGNED, ("X-Amz-Target", "AmazonSSM.CreateAssociation")], "{}")
            .await;
    assert_eq!(status, 400);
    assert!(body.contains("\"__type\":\"UnknownOperationException\""), "{body}");
    let (status, _, body) =
        raw(&server, "POST", "/", &[form, SIGNED], "Action=RunInstances&Version=2016-11-15").await;
    assert_eq!(status, 400);
    assert!(body.contains("<Code>InvalidAction</Code>"), "{body}");
    let (status, head, body) = raw(
        &server,
        "POST",
        "/",
        &[form, SIGNED],
        "Action=DescribeInstances&Version=2016-11-15&MaxResults=5",
    )
    .await;
    assert_eq!(status, 200);
    assert!(head.contains("x-amzn-requestid:"));
    assert!(
        body.contains("xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"") && body.contains("<requestId>")
    );
    let (status, _, body) =
        raw(&server, "POST", "/", &[json, SIGNED, ("X-Amz-Target", "AmazonSSM.ListCommands")], "{not json")
            .await;
    assert_eq!(status, 400);
    assert!(body.contains("SerializationException"));

    let calls_before = server.stats().total_calls();
    let (status, _, body) = raw(&server, "GET", "/_sim/clock", &[], "").await;
    assert_eq!(status, 200);
    let clock: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(clock["now"], "2026-11-28T00:00:00.000Z");
    assert_eq!(clock["time_scale"], 0.0);
    let (_, _, body) = raw(&server, "POST", "/_sim/clock/advance", &[], r#"{"seconds": 3600}"#).await;
    let clock: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(clock["now"], "2026-11-28T01:00:00.000Z");
    let (status, _, _) = raw(&server, "POST", "/_sim/clock/advance", &[], r#"{"seconds": -1}"#).await;
    assert_eq!(status, 400);

    let (status, _, body) = raw(
        &server,
        "POST",
        "/_sim/patches/release",
        &[],
        r#"{"os": "AMAZON_LINUX_2", "severity": "Critical", "classification": "Security", "cves": ["CVE-2026-99999"]}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let released: serde_json::Value = serde_json::from_str(&body).expect("json");
    let patch_id = released["id"].as_str().expect("id").to_string();
    assert!(patch_id.starts_with("ALAS2-2026-"), "{patch_id}");
    let client = ssm(&server);
    let found = client
        .describe_available_patches()
        .filters(PatchOrchestratorFilter::builder().key("PRODUCT").values("AmazonLinux2").build())
        .filters(PatchOrchestratorFilter::builder().key("CVE_ID").values("CVE-2026-99999").build())
        .send()
        .await
        .expect("available");
    assert_eq!(found.patches().len(), 1);
    assert_eq!(found.patches()[0].id(), Some(patch_id.as_str()));
    assert_eq!(found.patches()[0].severity(), Some("Critical"));
    let linux_without_product = client
        .describe_available_patches()
        .filters(PatchOrchestratorFilter::builder().key("CVE_ID").values("CVE-2026-99999").build())
        .send()
        .await;
    assert_eq!(code(linux_without_product), "ValidationException");
    let ubuntu = client
        .describe_available_patches()
        .filters(PatchOrchestratorFilter::builder().key("PRODUCT").values("Ubuntu22.04").build())
        .send()
        .await
        .expect("answers");
    assert!(ubuntu.patches().is_empty(), "DescribeAvailablePatches covers Amazon Linux 2 and Windows only");
    let windows =
        client.describe_available_patches().max_results(5).send().await.expect("windows by default");
    assert_eq!(windows.patches().len(), 5);
    assert!(windows
        .patches()
        .iter()
        .all(|p| p.product() == Some("WindowsServer2022") && p.msrc_severity().is_some()));
    assert!(windows.next_token().is_some());

    let node = server.instances().into_iter().find(|i| i.agent.as_deref() == Some("Online")).expect("online");
    let path = format!("/_sim/instances/{}/agent", node.id);
    let (status, _, _) = raw(&server, "POST", &path, &[], r#"{"state": "ConnectionLost"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(server.instance(&node.id).and_then(|i| i.agent), Some("ConnectionLost".to_string()));
    let (status, _, _) =
        raw(&server, "POST", "/_sim/instances/i-0000000000000000f/agent", &[], r#"{"state": "Online"}"#)
            .await;
    assert_eq!(status, 404);
    let (status, _, body) = raw(&server, "POST", "/_sim/faults", &[], r#"{"error_rate": 0.25}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(server.faults().error_rate, 0.25);
    let (status, _, _) = raw(&server, "POST", "/_sim/faults", &[], r#"{"error_rate": 7}"#).await;
    assert_eq!(status, 400);
    let (status, _, body) = raw(&server, "GET", "/_sim/stats", &[], "").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(stats["instances_by_agent"]["ConnectionLost"].as_u64().is_some_and(|n| n > 0));
    let (status, _, _) = raw(&server, "GET", "/_sim/nowhere", &[], "").await;
    assert_eq!(status, 404);
    assert_eq!(server.stats().total_calls(), calls_before + 4, "control calls are not AWS calls");
    server.shutdown().await;
}

#[tokio::test]
async fn patch_states_for_patch_group_filter_and_page() {
    let server = start(scenario()).await;
    let client = ssm(&server);
    let reported = managed_in_group(&server.instances(), "web-staging").len();
    let mut states = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_instance_patch_states_for_patch_group()
            .patch_group("web-staging")
            .max_results(10)
            .set_next_token(token)
            .send()
            .await
            .expect("page");
        assert!(page.instance_patch_states().len() <= 10);
        states.extend(page.instance_patch_states().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert!(
        !states.is_empty() && states.len() <= reported,
        "scanned share of 90%: {} of {reported}",
        states.len()
    );
    assert!(states.iter().all(|s| s.patch_group() == "web-staging" && s.operation().as_str() == "Scan"));
    let missing = client
        .describe_instance_patch_states_for_patch_group()
        .patch_group("web-staging")
        .filters(
            InstancePatchStateFilter::builder()
                .key("MissingCount")
                .values("0")
                .r#type(InstancePatchStateOperatorType::GreaterThan)
                .build()
                .expect("filter"),
        )
        .max_results(100)
        .send()
        .await
        .expect("filtered");
    let expected = states.iter().filter(|s| s.missing_count() > 0).count();
    assert_eq!(missing.instance_patch_states().len(), expected);
    let bad = client
        .describe_instance_patch_states_for_patch_group()
        .patch_group("web-staging")
        .filters(
            InstancePatchStateFilter::builder()
                .key("Colour")
                .values("1")
                .r#type(InstancePatchStateOperatorType::Equal)
                .build()
                .expect("filter"),
        )
        .send()
        .await;
    assert_eq!(code(bad), "InvalidFilter");
    server.shutdown().await;
}

/// One rollout with install failures; everything a client sees of it.
async fn observed_rollout() -> (String, Vec<(String, String)>, Vec<(String, String)>) {
    let faults = Faults { install_failure_rate: 0.05, ..Faults::default() };
    let server = start(scenario().with_faults(faults)).await;
    let client = ssm(&server);
    let sent = client
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .targets(Target::builder().key("tag:Patch Group").values("db-prod").build())
        .parameters("Operation", vec!["Install".into()])
        .max_concurrency("5")
        .max_errors("100%")
        .send()
        .await
        .expect("sent");
    let id = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
    let invocations = run_to_completion(&server, &client, &id).await;
    let outcomes = invocations
        .iter()
        .map(|i| {
            (
                i.instance_id().unwrap_or_default().to_string(),
                i.status_details().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let first = invocations[0].instance_id().unwrap_or_default().to_string();
    let patches =
        client.describe_instance_patches().instance_id(first).max_results(100).send().await.expect("patches");
    let rows =
        patches.patches().iter().map(|p| (p.kb_id().to_string(), p.state().as_str().to_string())).collect();
    server.shutdown().await;
    (id, outcomes, rows)
}

#[tokio::test]
async fn same_scenario_seed_and_requests_give_the_same_answers() {
    let first = observed_rollout().await;
    let second = observed_rollout().await;
    assert!(first.1.iter().any(|(_, details)| details == "Failed"), "the failure rate shows: {:?}", first.1);
    assert_eq!(first, second);
}
