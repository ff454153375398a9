//! patchd-aws against the fleet simulator, started in-process on 127.0.0.1:0 with the demo
//! scenario and a frozen clock: simulated time moves only through `SimServer::advance`, so
//! nothing here depends on how fast the machine is. Call counts come from the simulator's
//! own counters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleet_sim::{Faults, InstanceView, Scenario, SimServer};
use patchd_aws::{
    AwsClients, AwsError, Backoff, CommandStatus, Coverage, InvalidRequest, Invocation, InvocationOutcome,
    PatchCatalog, PatchCommand, PatchListing, PatchState, Reported, StaticEndpoint, Target, TransportKind,
    PATCH_DOCUMENT,
};
use patchd_config::{
    Aws, Group, Limit, Operation, Origin, PatchFilter, RebootOption, RetryMode, TagSelector,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const START: &str = "2026-11-28T00:00:00Z";
const MINUTE: Duration = Duration::from_secs(60);
const FAST: Backoff = Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(20) };

async fn start() -> SimServer {
    let start = chrono::DateTime::parse_from_rfc3339(START).expect("valid instant").to_utc();
    SimServer::start(
        "127.0.0.1:0".parse().expect("address"),
        Scenario::demo().with_time_scale(0.0).with_start(start),
    )
    .await
    .expect("simulator starts")
}

fn aws(max_attempts: u32) -> Aws {
    Aws {
        region: Some("us-east-1".into()),
        endpoint_url: None,
        profile: None,
        max_attempts,
        retry_mode: RetryMode::Standard,
        ..Aws::default()
    }
}

fn clients_for(url: &str, max_attempts: u32, backoff: Backoff) -> AwsClients {
    AwsClients::with_static_credentials(
        &aws(max_attempts),
        &StaticEndpoint { backoff, ..StaticEndpoint::simulator(url) },
    )
}

fn clients(server: &SimServer) -> AwsClients {
    clients_for(&server.endpoint_url(), 3, FAST)
}

fn group(tags: &[(&str, &str)], instance_ids: &[String]) -> Group {
    let mut selector: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in tags {
        selector.entry(key.to_string()).or_default().push(value.to_string());
    }
    Group {
        name: "test-group".into(),
        description: None,
        tags: TagSelector(selector),
        instance_ids: instance_ids.to_vec(),
        scope: Default::default(),
        origin: Origin { file: Arc::new(PathBuf::from("test.toml")), line: 1, col: 1 },
    }
}

/// The (Environment, Role) pair that covers the most instances, found from the simulator's
/// own view rather than written down, so the test follows the scenario.
fn largest_environment_role(view: &[InstanceView]) -> (String, String) {
    let mut sizes: BTreeMap<(String, String), usize> = BTreeMap::new();
    for instance in view {
        if let (Some(env), Some(role)) = (instance.tag("Environment"), instance.tag("Role")) {
            *sizes.entry((env.to_string(), role.to_string())).or_default() += 1;
        }
    }
    sizes.into_iter().max_by_key(|(_, n)| *n).map(|(pair, _)| pair).expect("the demo has tagged instances")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Managed,
    ConnectionLost,
    Unmanaged,
}

fn class_of(coverage: &Coverage) -> Class {
    match coverage {
        Coverage::Managed { .. } => Class::Managed,
        Coverage::ConnectionLost { .. } => Class::ConnectionLost,
        Coverage::Unmanaged => Class::Unmanaged,
    }
}

fn expected_class(instance: &InstanceView) -> Class {
    match instance.agent.as_deref() {
        None => Class::Unmanaged,
        Some("Online") => Class::Managed,
        Some(_) => Class::ConnectionLost,
    }
}

fn managed_ids(targets: &[Target], n: usize) -> Vec<String> {
    targets.iter().filter(|t| t.can_take_commands()).take(n).map(|t| t.instance_id.clone()).collect()
}

fn scan<'a>(instance_ids: &'a [String], comment: &'a str) -> PatchCommand<'a> {
    PatchCommand {
        operation: Operation::Scan,
        reboot_option: RebootOption::RebootIfNeeded,
        snapshot_id: None,
        instance_ids,
        comment,
        timeout_seconds: 600,
        max_concurrency: Limit::Percent(100),
        max_errors: Limit::Count(0),
        alarm: None,
        hooks: None,
        install_override_list: None,
    }
}

/// Advances simulated time a step at a time until every invocation is over; returns them
/// and the number of polls.
async fn poll_until_done(
    server: &SimServer,
    clients: &AwsClients,
    command_id: &str,
    expected: usize,
    step: Duration,
) -> (Vec<Invocation>, u64) {
    for polls in 1..=100 {
        server.advance(step);
        let invocations = clients.list_invocations(command_id).await.expect("invocations list");
        assert_eq!(invocations.len(), expected, "one invocation per instance");
        if invocations.iter().all(Invocation::is_terminal) {
            return (invocations, polls);
        }
    }
    panic!("command {command_id} still running after 100 polls");
}

#[tokio::test]
async fn resolving_a_group_classifies_coverage_with_few_calls() {
    let server = start().await;
    let client = clients(&server);
    let view = server.instances();
    let (env, role) = largest_environment_role(&view);
    let selected: Vec<&InstanceView> = view
        .iter()
        .filter(|i| i.tag("Environment") == Some(env.as_str()) && i.tag("Role") == Some(role.as_str()))
        .collect();
    let expected: BTreeMap<&str, Class> = selected
        .iter()
        .filter(|i| i.state == "running")
        .map(|i| (i.id.as_str(), expected_class(i)))
        .collect();
    assert!(selected.iter().any(|i| i.state != "running"), "the group has stopped instances to leave out");
    let classes: BTreeSet<Class> = expected.values().copied().collect();
    assert_eq!(classes.len(), 3, "the demo's largest group has every kind of coverage: {classes:?}");

    let before = server.stats();
    let targets =
        client.resolve_group(&group(&[("Environment", &env), ("Role", &role)], &[])).await.expect("resolves");
    let after = server.stats();

    let got: BTreeMap<&str, Class> =
        targets.iter().map(|t| (t.instance_id.as_str(), class_of(&t.coverage))).collect();
    assert_eq!(got, expected);
    for target in &targets {
        let instance = selected.iter().find(|i| i.id == target.instance_id).expect("selected");
        assert_eq!(target.name.as_deref(), Some(instance.name.as_str()));
        assert_eq!(target.tags.get("Environment"), Some(&env));
        assert!(target.platform_details.is_some(), "{}", target.instance_id);
        assert_eq!(target.can_take_commands(), !target.coverage.is_gap());
        if let Coverage::Managed { agent } | Coverage::ConnectionLost { agent } = &target.coverage {
            assert!(agent.platform_type.is_some() && agent.last_ping.is_some());
        }
    }
    let n = expected.len() as u64;
    assert_eq!(after.calls("DescribeInstances") - before.calls("DescribeInstances"), 1);
    assert_eq!(
        after.calls("DescribeInstanceInformation") - before.calls("DescribeInstanceInformation"),
        n.div_ceil(50),
        "one DescribeInstanceInformation per 50 running instances, not per page of the account"
    );
    println!(
        "group Environment={env} Role={role}: {n} running instances, {} DescribeInstances + {} DescribeInstanceInformation calls",
        after.calls("DescribeInstances") - before.calls("DescribeInstances"),
        after.calls("DescribeInstanceInformation") - before.calls("DescribeInstanceInformation"),
    );
    let fleet_managed = view.iter().filter(|i| i.is_managed()).count() as u64;
    println!(
        "listing every managed node instead: {fleet_managed} nodes, {} DescribeInstanceInformation calls",
        fleet_managed.div_ceil(50)
    );
}

#[tokio::test]
async fn tags_and_ids_together_select_their_intersection() {
    let server = start().await;
    let client = clients(&server);
    let view = server.instances();
    let (env, role) = largest_environment_role(&view);
    let running = |i: &&InstanceView| i.state == "running";
    let inside: Vec<String> = view
        .iter()
        .filter(running)
        .filter(|i| i.tag("Environment") == Some(env.as_str()) && i.tag("Role") == Some(role.as_str()))
        .take(3)
        .map(|i| i.id.clone())
        .collect();
    let outside = view
        .iter()
        .filter(running)
        .find(|i| i.tag("Role") != Some(role.as_str()))
        .expect("another role")
        .id
        .clone();
    let mut ids = inside.clone();
    ids.push(outside.clone());

    let both = client
        .resolve_group(&group(&[("Environment", &env), ("Role", &role)], &ids))
        .await
        .expect("resolves");
    let got: BTreeSet<String> = both.iter().map(|t| t.instance_id.clone()).collect();
    assert_eq!(got, inside.iter().cloned().collect::<BTreeSet<_>>());

    let only_ids = client.resolve_group(&group(&[], &ids)).await.expect("resolves");
    let got: BTreeSet<String> = only_ids.iter().map(|t| t.instance_id.clone()).collect();
    assert_eq!(got, ids.iter().cloned().collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn a_scan_runs_to_completion_and_polling_costs_one_call_per_poll() {
    let server = start().await;
    let client = clients(&server);
    let view = server.instances();
    let (env, role) = largest_environment_role(&view);
    let targets =
        client.resolve_group(&group(&[("Environment", &env), ("Role", &role)], &[])).await.expect("resolves");
    let ids = managed_ids(&targets, 50);
    assert_eq!(ids.len(), 50);

    let sent = client.send_patch_command(&scan(&ids, "run-scan-1")).await.expect("sent");
    assert!(sent.request_id.as_deref().is_some_and(|id| !id.is_empty()), "request id for the audit log");
    assert_eq!(sent.target_count, 50);
    assert!(sent.requested_at.is_some());
    assert_eq!(server.stats().calls("SendCommand"), 1);

    let before = server.stats().calls("ListCommandInvocations");
    let (invocations, polls) = poll_until_done(&server, &client, &sent.command_id, 50, MINUTE).await;
    assert_eq!(server.stats().calls("ListCommandInvocations") - before, polls, "50 rows fit one page");
    for invocation in &invocations {
        assert_eq!(invocation.status, CommandStatus::Success, "{invocation:?}");
        assert_eq!(invocation.outcome, InvocationOutcome::Success);
        assert!(!invocation.counts_against_max_errors());
        let (requested, started, ended) =
            (invocation.requested_at.unwrap(), invocation.started_at.unwrap(), invocation.ended_at.unwrap());
        assert!(requested <= started && started <= ended, "{invocation:?}");
    }
    let got: BTreeSet<&str> = invocations.iter().map(|i| i.instance_id.as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect());
}

#[tokio::test]
async fn offline_agents_wait_delayed_then_time_out_without_counting_as_errors() {
    let server = start().await;
    let client = clients(&server);
    let view = server.instances();
    let (env, role) = largest_environment_role(&view);
    let targets =
        client.resolve_group(&group(&[("Environment", &env), ("Role", &role)], &[])).await.expect("resolves");
    let online = targets.iter().find(|t| t.can_take_commands()).expect("an online node");
    let offline = targets
        .iter()
        .find(|t| matches!(t.coverage, Coverage::ConnectionLost { .. }))
        .expect("an offline node");
    let ids = vec![online.instance_id.clone(), offline.instance_id.clone()];

    let sent = client.send_patch_command(&scan(&ids, "run-offline")).await.expect("sent");
    server.advance(2 * MINUTE);
    let invocations = client.list_invocations(&sent.command_id).await.expect("listed");
    let waiting = invocations.iter().find(|i| i.instance_id == offline.instance_id).expect("offline row");
    assert_eq!(
        (&waiting.status, &waiting.outcome),
        (&Reported::Known(CommandStatus::Delayed), &InvocationOutcome::Delayed)
    );
    assert!(!waiting.is_terminal());

    let (invocations, _) = poll_until_done(&server, &client, &sent.command_id, 2, 5 * MINUTE).await;
    let timed_out = invocations.iter().find(|i| i.instance_id == offline.instance_id).expect("offline row");
    assert_eq!(timed_out.status, CommandStatus::TimedOut);
    assert_eq!(timed_out.outcome, InvocationOutcome::DeliveryTimedOut);
    assert!(!timed_out.counts_against_max_errors(), "delivery timeouts do not count against MaxErrors");
    let done = invocations.iter().find(|i| i.instance_id == online.instance_id).expect("online row");
    assert_eq!(done.outcome, InvocationOutcome::Success);
}

#[tokio::test]
async fn an_install_shows_in_patch_states_and_instance_patches() {
    let server = start().await;
    let client = clients(&server);
    let mut candidates: Vec<InstanceView> = server
        .instances()
        .into_iter()
        .filter(|i| i.is_managed() && i.agent.as_deref() == Some("Online") && i.missing.unwrap_or(0) > 0)
        .collect();
    candidates.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<String> = candidates.iter().take(3).map(|i| i.id.clone()).collect();
    assert_eq!(ids.len(), 3);

    let before_patches = client.instance_patches(&ids[0], PatchListing::All).await.expect("patches");
    let missing: Vec<_> = before_patches.iter().filter(|p| p.state == PatchState::Missing).collect();
    assert!(!missing.is_empty());
    assert!(missing.iter().any(|p| !p.cve_ids.is_empty()), "missing security patches carry CVE ids");
    for patch in &missing {
        assert!(patch.cve_ids.iter().all(|id| id.starts_with("CVE-") && !id.contains(',')), "{patch:?}");
        assert_eq!(patch.installed_at, None);
    }
    let before_states = client.patch_states(&ids).await.expect("states");
    assert_eq!(before_states.len(), 3);

    let snapshot = uuid::Uuid::from_u128(0x5eed_0000_0000_4000_8000_0000_0000_0001);
    let install = PatchCommand {
        operation: Operation::Install,
        reboot_option: RebootOption::NoReboot,
        snapshot_id: Some(snapshot),
        ..scan(&ids, "run-install-1")
    };
    let sent = client.send_patch_command(&install).await.expect("sent");
    let (invocations, _) = poll_until_done(&server, &client, &sent.command_id, 3, MINUTE).await;
    assert!(invocations.iter().all(|i| i.outcome == InvocationOutcome::Success), "{invocations:?}");

    let calls = server.stats().calls("DescribeInstancePatchStates");
    let states = client.patch_states(&ids).await.expect("states");
    assert_eq!(server.stats().calls("DescribeInstancePatchStates") - calls, 1, "3 ids, one call");
    assert_eq!(states.len(), 3);
    for state in &states {
        let before =
            before_states.iter().find(|s| s.instance_id == state.instance_id).expect("reported before");
        assert_eq!(state.operation, Some(Operation::Install));
        assert_eq!(state.reboot_option, Some(RebootOption::NoReboot));
        assert_eq!(state.snapshot_id, Some(snapshot.to_string()));
        assert!(state.last_no_reboot_install_at.is_some());
        assert!(state.operation_ended_at > before.operation_ended_at);
        assert_eq!(state.counts.by_state.missing, 0, "{state:?}");
        assert!(before.counts.by_state.missing > 0, "{before:?}");
        // Only patches that need a reboot stay INSTALLED_PENDING_REBOOT; the rest are INSTALLED.
        assert!(
            state.counts.by_state.installed + state.counts.by_state.installed_pending_reboot
                > before.counts.by_state.installed,
            "{before:?} -> {state:?}"
        );
        assert!(!state.baseline_id.is_empty());
    }

    let calls = server.stats().calls("DescribeInstancePatches");
    let after = client.instance_patches(&ids[0], PatchListing::All).await.expect("patches");
    let pages = server.stats().calls("DescribeInstancePatches") - calls;
    assert_eq!(pages, (after.len() as u64).div_ceil(100).max(1), "pages of 100");
    let state = states.iter().find(|s| s.instance_id == ids[0]).expect("state");
    let of = |wanted: PatchState| after.iter().filter(|p| p.state == wanted).count() as u32;
    assert_eq!(of(PatchState::InstalledPendingReboot), state.counts.by_state.installed_pending_reboot);
    assert_eq!(of(PatchState::Installed), state.counts.by_state.installed);
    assert_eq!(of(PatchState::NotApplicable), state.counts.by_state.not_applicable);
    assert_eq!(of(PatchState::Missing), 0);
    assert!(after.iter().filter(|p| p.state == PatchState::Installed).all(|p| p.installed_at.is_some()));

    // The State filter, as SSM applies it: each listing is exactly its states' share of the
    // whole one, in one call per page.
    let is_open = |state: &PatchState| {
        matches!(
            state,
            PatchState::Missing
                | PatchState::Failed
                | PatchState::InstalledPendingReboot
                | PatchState::InstalledRejected
                | PatchState::AvailableSecurityUpdate
        )
    };
    let kb = |patches: &[patchd_aws::InstancePatch]| -> BTreeSet<String> {
        patches.iter().map(|p| p.kb_id.clone()).collect()
    };
    for (listing, wanted) in [
        (PatchListing::Open, &is_open as &dyn Fn(&PatchState) -> bool),
        (PatchListing::Installed, &|s: &PatchState| {
            matches!(s, PatchState::Installed | PatchState::InstalledOther)
        }),
    ] {
        let calls = server.stats().calls("DescribeInstancePatches");
        let listed = client.instance_patches(&ids[0], listing).await.expect("filtered patches");
        let expected: Vec<_> =
            after.iter().filter(|p| p.state.known().is_some_and(|s| wanted(&s))).cloned().collect();
        assert_eq!(kb(&listed), kb(&expected), "{listing:?}");
        assert_eq!(
            server.stats().calls("DescribeInstancePatches") - calls,
            (listed.len() as u64).div_ceil(100).max(1)
        );
    }
    let open = client.instance_patches(&ids[0], PatchListing::Open).await.expect("open");
    assert_eq!(
        open.len() as u32,
        state.counts.by_state.installed_pending_reboot,
        "after the install only reboots are open"
    );
}

#[tokio::test]
async fn ssm_limits_give_typed_errors_without_calling_aws() {
    let server = start().await;
    let client = clients(&server);
    let many: Vec<String> = (0..51).map(|i| format!("i-{i:017x}")).collect();

    let error = client.send_patch_command(&scan(&many, "run")).await.expect_err("51 ids");
    assert!(
        matches!(
            error,
            AwsError::Invalid {
                operation: "SendCommand",
                problem: InvalidRequest::TooManyInstances { count: 51, max: 50 }
            }
        ),
        "{error:?}"
    );
    let long = "r".repeat(101);
    let error = client.send_patch_command(&scan(&many[..2], &long)).await.expect_err("101 chars");
    assert!(
        matches!(
            error,
            AwsError::Invalid { problem: InvalidRequest::CommentTooLong { chars: 101, max: 100 }, .. }
        ),
        "{error:?}"
    );
    let error =
        client.cancel_command("c0ffee00-0000-4000-8000-000000000000", Some(&many)).await.expect_err("51");
    assert!(matches!(error, AwsError::Invalid { operation: "CancelCommand", .. }), "{error:?}");
    assert_eq!(server.stats().total_calls(), 0, "nothing reached the endpoint");
}

#[tokio::test]
async fn commands_are_found_again_by_their_run_id() {
    let server = start().await;
    let client = clients(&server);
    let ids: Vec<String> = server
        .instances()
        .iter()
        .filter(|i| i.agent.as_deref() == Some("Online"))
        .take(4)
        .map(|i| i.id.clone())
        .collect();
    let earlier = server.now() - chrono::Duration::hours(1);
    let first = client.send_patch_command(&scan(&ids[..2], "run-7f3a")).await.expect("sent");
    let second = client.send_patch_command(&scan(&ids[2..], "run-other")).await.expect("sent");

    let found = client.find_commands_by_comment("run-7f3a", earlier, PATCH_DOCUMENT).await.expect("listed");
    assert_eq!(found.len(), 1, "{found:?}");
    let command = &found[0];
    assert_eq!(command.command_id, first.command_id);
    assert_eq!(command.comment, "run-7f3a");
    assert_eq!(command.document_name, "AWS-RunPatchBaseline");
    assert_eq!(command.operation, Some(Operation::Scan));
    assert_eq!(command.instance_ids, ids[..2].to_vec());
    assert_eq!(command.max_concurrency.as_deref(), Some("100%"));
    assert_eq!(command.target_count, 2);

    let later = server.now() + chrono::Duration::hours(1);
    assert!(client
        .find_commands_by_comment("run-7f3a", later, PATCH_DOCUMENT)
        .await
        .expect("listed")
        .is_empty());
    assert_eq!(client.command(&second.command_id).await.expect("known").comment, "run-other");
    let unknown = client.command("c0ffee00-0000-4000-8000-000000000000").await.expect_err("unknown id");
    assert!(matches!(unknown, AwsError::NotFound { .. }), "{unknown:?}");
}

#[tokio::test]
async fn cancelling_stops_what_has_not_finished() {
    let server = start().await;
    let client = clients(&server);
    let ids: Vec<String> = server
        .instances()
        .iter()
        .filter(|i| i.agent.as_deref() == Some("Online"))
        .take(5)
        .map(|i| i.id.clone())
        .collect();
    let install = PatchCommand {
        operation: Operation::Install,
        reboot_option: RebootOption::NoReboot,
        max_concurrency: Limit::Count(1),
        ..scan(&ids, "run-cancel")
    };
    let sent = client.send_patch_command(&install).await.expect("sent");
    server.advance(Duration::from_secs(10));
    let cancel = client.cancel_command(&sent.command_id, None).await.expect("cancel accepted");
    assert!(cancel.request_id.is_some());

    let (invocations, _) = poll_until_done(&server, &client, &sent.command_id, 5, MINUTE).await;
    let stopped = invocations
        .iter()
        .filter(|i| matches!(i.outcome, InvocationOutcome::Cancelled | InvocationOutcome::Terminated))
        .count();
    assert!(stopped >= 4, "with one at a time, at least four never ran: {invocations:?}");
    assert!(invocations.iter().all(|i| !i.counts_against_max_errors()));
    let command = client.command(&sent.command_id).await.expect("known");
    assert!(command.status.known().is_some_and(CommandStatus::is_terminal), "{command:?}");

    let error =
        client.cancel_command("c0ffee00-0000-4000-8000-000000000000", None).await.expect_err("unknown");
    assert!(matches!(error, AwsError::NotFound { operation: "CancelCommand", .. }), "{error:?}");
}

#[tokio::test]
async fn throttling_surfaces_only_once_the_retries_are_exhausted() {
    let server = start().await;
    let client = clients_for(&server.endpoint_url(), 3, FAST);
    // One request per 1000 s: the first call gets the only token, every later attempt is refused.
    let throttle =
        BTreeMap::from([("ListCommands".to_string(), 0.001), ("DescribeInstances".to_string(), 0.001)]);
    server.set_faults(Faults { throttle, ..Faults::default() }).expect("valid faults");
    let after = server.now();

    client.find_commands_by_comment("run", after, PATCH_DOCUMENT).await.expect("first call has a token");
    let error = client.find_commands_by_comment("run", after, PATCH_DOCUMENT).await.expect_err("throttled");
    assert!(matches!(error, AwsError::Throttled { operation: "ListCommands", .. }), "{error:?}");
    assert!(error.request_id().is_some());
    let stats = server.stats();
    assert_eq!(stats.calls("ListCommands"), 1 + 3, "the SDK made all 3 attempts, and nothing more");
    assert_eq!(stats.throttled("ListCommands"), 3);

    let everything = group(&[("Environment", "prod")], &[]);
    client.resolve_group(&everything).await.expect("first call has a token");
    let error = client.resolve_group(&everything).await.expect_err("throttled");
    assert!(matches!(error, AwsError::Throttled { operation: "DescribeInstances", .. }), "{error:?}");
    assert_eq!(server.stats().calls("DescribeInstances"), 1 + 3);
}

#[tokio::test]
async fn throttling_is_absorbed_when_a_retry_gets_through() {
    let server = start().await;
    // One token a second; up to ten attempts backing off from 250 ms reach well past it.
    let client = clients_for(
        &server.endpoint_url(),
        10,
        Backoff { initial: Duration::from_millis(250), max: Duration::from_secs(2) },
    );
    let throttle = BTreeMap::from([("ListCommands".to_string(), 1.0)]);
    server.set_faults(Faults { throttle, ..Faults::default() }).expect("valid faults");
    let after = server.now();

    client.find_commands_by_comment("run", after, PATCH_DOCUMENT).await.expect("first call has a token");
    client.find_commands_by_comment("run", after, PATCH_DOCUMENT).await.expect("a retry gets through");
    let stats = server.stats();
    assert!(stats.throttled("ListCommands") >= 1, "the second call arrived before the bucket refilled");
    assert_eq!(stats.calls("ListCommands"), 2 + stats.throttled("ListCommands"), "every refusal was retried");
}

#[tokio::test]
async fn available_patches_carry_release_dates() {
    let server = start().await;
    let client = clients(&server);
    let security = PatchFilter { key: "CLASSIFICATION", values: vec!["Security".into()] };
    let linux = client.available_patches(PatchCatalog::AmazonLinux2, &[security]).await.expect("listed");
    assert!(!linux.is_empty());
    for patch in &linux {
        assert_eq!(patch.classification.as_deref(), Some("Security"));
        assert!(
            patch.release_date.is_some() && patch.severity.is_some() && patch.package.is_some(),
            "{patch:?}"
        );
    }
    assert!(linux.iter().any(|p| !p.cve_ids.is_empty()));

    let calls = server.stats().calls("DescribeAvailablePatches");
    let critical = PatchFilter { key: "MSRC_SEVERITY", values: vec!["Critical".into()] };
    let windows = client.available_patches(PatchCatalog::Windows, &[critical]).await.expect("listed");
    assert!(!windows.is_empty());
    assert!(windows.iter().all(|p| p.msrc_severity.as_deref() == Some("Critical") && p.kb_number.is_some()));
    assert_eq!(
        server.stats().calls("DescribeAvailablePatches") - calls,
        (windows.len() as u64).div_ceil(100).max(1),
        "pages of 100"
    );
}

/// A one-shot HTTP endpoint that records each request's head and answers with `body`; the
/// simulator does not expose request headers, so this is where the user agent is checked.
async fn recording_endpoint(
    content_type: &'static str,
    body: &'static str,
) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("one request");
        let mut request = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.expect("reads");
            request.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string())
                    })
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                if rest.len() >= length {
                    break;
                }
            }
            if n == 0 {
                break;
            }
        }
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\nx-amzn-requestid: recorded-1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(reply.as_bytes()).await.expect("writes");
        let text = String::from_utf8_lossy(&request).to_string();
        let head = text.split("\r\n\r\n").next().unwrap_or_default().to_string();
        head.lines().map(|l| l.to_ascii_lowercase()).collect()
    });
    (url, task)
}

#[tokio::test]
async fn calls_name_patchd_and_its_retry_budget_in_their_headers() {
    let (url, recorded) = recording_endpoint("application/x-amz-json-1.1", r#"{"Commands":[]}"#).await;
    let client = clients_for(&url, 4, FAST);
    let found =
        client.find_commands_by_comment("run", chrono::Utc::now(), PATCH_DOCUMENT).await.expect("answered");
    assert!(found.is_empty());
    let head = recorded.await.expect("recorded");
    let header = |name: &str| {
        head.iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")).map(|v| v.trim().to_string()))
            .unwrap_or_default()
    };
    let user_agent = header("user-agent");
    assert!(user_agent.contains("patchd/"), "{user_agent}");
    assert!(user_agent.contains(&format!("lib/patchd/{}", env!("CARGO_PKG_VERSION"))), "{user_agent}");
    assert!(user_agent.contains("app/patchd"), "{user_agent}");
    assert_eq!(header("x-amz-target"), "amazonssm.listcommands");
    assert_eq!(header("amz-sdk-request"), "attempt=1; max=4", "max_attempts reaches the SDK's retry layer");
    assert!(
        !head.iter().any(|l| l.contains(StaticEndpoint::simulator("").secret_access_key)),
        "no secret on the wire"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let client = clients_for(&url, 2, FAST);
    let error = client.command("c0ffee00-0000-4000-8000-000000000000").await.expect_err("nothing listens");
    assert!(
        matches!(error, AwsError::Transport { operation: "ListCommands", kind: TransportKind::Dispatch, .. }),
        "{error:?}"
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn call_counts_show_every_attempt_and_each_throttle_by_operation() {
    let server = start().await;
    let client = clients_for(&server.endpoint_url(), 3, FAST);
    let throttle =
        BTreeMap::from([("ListCommands".to_string(), 0.001), ("DescribeInstances".to_string(), 0.001)]);
    server.set_faults(Faults { throttle, ..Faults::default() }).expect("valid faults");
    let after = server.now();
    client.find_commands_by_comment("run", after, PATCH_DOCUMENT).await.expect("first call has a token");
    client.find_commands_by_comment("run", after, PATCH_DOCUMENT).await.expect_err("throttled");
    let everything = group(&[("Environment", "prod")], &[]);
    client.resolve_group(&everything).await.expect("first call has a token");
    client.resolve_group(&everything).await.expect_err("throttled");

    // Clones share the counters; the simulator's own tally is the reference.
    let counts = client.clone().call_counts();
    let find = |service: &str, operation: &str| {
        counts
            .iter()
            .find(|c| c.service == service && c.operation == operation)
            .map(|c| (c.calls, c.throttled))
            .unwrap_or_else(|| panic!("{service} {operation} not counted: {counts:?}"))
    };
    let stats = server.stats();
    assert_eq!(find("SSM", "ListCommands"), (stats.calls("ListCommands"), stats.throttled("ListCommands")));
    assert_eq!(find("SSM", "ListCommands"), (1 + 3, 3), "JSON 1.1 throttling errors are recognised");
    assert_eq!(
        find("EC2", "DescribeInstances").1,
        3,
        "EC2 Query throttling errors are recognised: {counts:?}"
    );
    assert_eq!(find("EC2", "DescribeInstances").0, stats.calls("DescribeInstances"));
    let (calls, throttled) = find("SSM", "DescribeInstanceInformation");
    assert!(calls >= 1 && throttled == 0, "{counts:?}");
}
