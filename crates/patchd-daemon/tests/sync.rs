//! Compliance sync against the fleet simulator, started in-process on 127.0.0.1:0 with the demo
//! scenario and a clock frozen at the start (simulated time moves only through `SimServer::advance`), into
//! an SQLite file of its own per test. Call counts come from the simulator's own counters, by
//! difference; what SSM reports comes from the simulator's own view where it has one.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use fleet_sim::{Faults, InstanceView, Scenario, SimServer, Stats};
use patchd_aws::{
    Backoff, Coverage, InvocationOutcome, PatchCatalog, PatchCommand, PatchListing,
    PatchState as AwsPatchState,
};
use patchd_config::{Group, Limit, Operation, Origin, RebootOption, TagSelector};
use patchd_daemon::sync::{
    record_inventory, sync_compliance, sync_compliance_with, ReleaseDates, SyncOptions, SyncOutcome,
    SyncRequest,
};
use patchd_daemon::Context;
use patchd_store::{
    FindingQuery, FindingRecord, FindingStatus, PatchState, PingStatus, ReleaseSource, Store,
};

use support::{clients_with_retries, home_context, TempDb, FAST};
const MINUTE: Duration = Duration::from_secs(60);
/// Big enough to show batching and paging, small enough to sync in about a second.
const FLEET: usize = 150;
const STATES: &str = "DescribeInstancePatchStates";
const PATCHES: &str = "DescribeInstancePatches";
const CATALOG: &str = "DescribeAvailablePatches";

struct Harness {
    server: SimServer,
    ctx: Context,
    dates: Arc<ReleaseDates>,
    _db: TempDb,
}

/// The demo fleet (300 instances, seven groups, five platforms, 150 patches per OS), rescaled
/// to `n` instances with the group mix kept.
fn demo(n: usize) -> Scenario {
    Scenario::demo().with_instances(n)
}

async fn harness(scenario: Scenario, max_attempts: u32, backoff: Backoff) -> Harness {
    // The real now, so that the syncs' own clock (the wall clock, which decides when SSM's
    // catalogs are due) and the simulated one agree on the day.
    let start = Utc::now().with_nanosecond(0).expect("valid instant");
    let scenario = scenario.with_time_scale(0.0).with_start(start);
    let server =
        SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("simulator starts");
    let db = TempDb::new("daemon-sync", "harness");
    let ctx = home_context(clients_with_retries(&server, max_attempts, backoff), db.store().await);
    Harness { server, ctx, dates: Arc::new(ReleaseDates::new(chrono::Duration::days(1))), _db: db }
}

/// Every running instance with an SSM agent, online or not, sorted by id.
fn managed(server: &SimServer) -> Vec<InstanceView> {
    let mut view: Vec<InstanceView> =
        server.instances().into_iter().filter(InstanceView::is_managed).collect();
    view.sort_by(|a, b| a.id.cmp(&b.id));
    view
}

fn ids(view: &[InstanceView]) -> Vec<String> {
    view.iter().map(|i| i.id.clone()).collect()
}

fn delta(before: &Stats, after: &Stats, operation: &str) -> u64 {
    after.calls(operation) - before.calls(operation)
}

async fn sync(h: &Harness, ids: &[String]) -> SyncOutcome {
    sync_compliance(&h.ctx, &SyncRequest { source: "interval", instance_ids: ids }, &h.dates)
        .await
        .expect("sync succeeds")
}

async fn findings(store: &Store, status: Option<FindingStatus>) -> Vec<FindingRecord> {
    store.findings(&FindingQuery { status, ..FindingQuery::default() }).await.expect("findings").findings
}

/// Open findings in state MISSING per instance id.
async fn missing_by_instance(store: &Store) -> BTreeMap<String, u32> {
    let mut missing = BTreeMap::new();
    for finding in findings(store, Some(FindingStatus::Open)).await {
        if finding.state == PatchState::Missing {
            *missing.entry(finding.instance.instance_id.clone()).or_insert(0) += 1;
        }
    }
    missing
}

/// What the simulator says each reported instance is missing, instances with none left out.
fn simulator_missing(view: &[InstanceView]) -> BTreeMap<String, u32> {
    view.iter().filter_map(|i| Some((i.id.clone(), i.missing?)).filter(|(_, n)| *n > 0)).collect()
}

fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(t.nanosecond() / 1_000 * 1_000).expect("valid")
}

fn group(tags: &[(&str, &str)]) -> Group {
    let mut selector: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, value) in tags {
        selector.entry(key.to_string()).or_default().push(value.to_string());
    }
    Group {
        name: "test-group".into(),
        description: None,
        tags: TagSelector(selector),
        instance_ids: Vec::new(),
        scope: Default::default(),
        origin: Origin { file: Arc::new(PathBuf::from("test.toml")), line: 1, col: 1 },
    }
}

#[tokio::test]
async fn a_first_sync_records_what_ssm_reports_missing() {
    let h = harness(demo(FLEET), 3, FAST).await;
    let view = managed(&h.server);
    let ids = ids(&view);
    let reported = view.iter().filter(|i| i.missing.is_some()).count();
    assert!(ids.len() > 50, "more than one DescribeInstancePatchStates call");
    assert!(reported > 0 && reported < ids.len(), "the fleet has reported and unreported nodes");

    let before = h.server.stats();
    let outcome = sync(&h, &ids).await;
    let after = h.server.stats();

    assert_eq!(outcome.instances, ids.len());
    assert_eq!((outcome.changed, outcome.unchanged, outcome.gone), (reported, 0, 0), "{outcome:?}");
    assert_eq!(outcome.unreported, ids.len() - reported);
    assert_eq!(outcome.batches, 1);
    assert_eq!(delta(&before, &after, STATES), ids.len().div_ceil(50) as u64, "50 ids a call");
    assert_eq!(outcome.state_calls, ids.len().div_ceil(50));

    // Findings match the simulator's own count of missing patches, instance by instance.
    let missing = missing_by_instance(&h.ctx.store).await;
    assert_eq!(missing, simulator_missing(&view));
    let open = findings(&h.ctx.store, Some(FindingStatus::Open)).await;
    assert_eq!(outcome.opened, open.len(), "every open finding was opened by this sync");
    assert_eq!(outcome.transitions, open.len(), "one opening transition each");

    // Only the open states are listed: one DescribeInstancePatches page per 100 of them, and
    // none at all for an instance with nothing open (no finding was recorded before).
    let records = h.ctx.store.instances().await.expect("instances");
    let mut pages = 0u64;
    for record in &records {
        let view = view.iter().find(|i| i.id == record.instance.instance_id).expect("requested");
        let Some(summary) = &record.compliance else {
            assert_eq!(view.missing, None, "{} has a report but no summary", view.id);
            continue;
        };
        assert_eq!(Some(summary.counts.missing), view.missing, "{}", view.id);
        assert!(summary.operation_end.is_some() && summary.operation == Some(Operation::Scan));
        let c = summary.counts;
        let open = c.installed_pending_reboot
            + c.installed_rejected
            + c.missing
            + c.failed
            + c.available_security_update;
        if open > 0 {
            pages += u64::from(open).div_ceil(100);
        }
    }
    assert!(pages > 0);
    assert_eq!(delta(&before, &after, PATCHES), pages);
    assert_eq!(outcome.patch_calls as u64, pages);
    assert_eq!(delta(&before, &after, CATALOG), 0, "no inventory yet: no catalog is known to be needed");

    // The patches themselves, for a few instances, as SSM lists them.
    for instance in view.iter().filter(|i| i.missing.is_some_and(|n| n > 0)).take(3) {
        let listed = h.ctx.aws.instance_patches(&instance.id, PatchListing::All).await.expect("patches");
        let expected: BTreeSet<&str> =
            listed.iter().filter(|p| p.state == AwsPatchState::Missing).map(|p| p.kb_id.as_str()).collect();
        let got: BTreeSet<String> = open
            .iter()
            .filter(|f| f.instance.instance_id == instance.id)
            .map(|f| f.patch.patch_id.clone())
            .collect();
        assert_eq!(got, expected.iter().map(|s| s.to_string()).collect(), "{}", instance.id);
    }
}

#[tokio::test]
async fn a_sync_of_an_unchanged_fleet_reads_only_patch_states() {
    let h = harness(demo(FLEET), 3, FAST).await;
    let ids = ids(&managed(&h.server));
    let first = sync(&h, &ids).await;
    let findings_before = findings(&h.ctx.store, None).await;
    let transactions = h.ctx.store.stats().transactions;

    let before = h.server.stats();
    let second = sync(&h, &ids).await;
    let after = h.server.stats();

    assert_eq!(delta(&before, &after, STATES), ids.len().div_ceil(50) as u64);
    assert_eq!(delta(&before, &after, PATCHES), 0);
    assert_eq!(after.total_calls() - before.total_calls(), ids.len().div_ceil(50) as u64, "and nothing else");
    assert_eq!((second.changed, second.unchanged, second.unreported), (0, first.changed, first.unreported));
    assert_eq!((second.opened, second.transitions, second.batches, second.patch_calls), (0, 0, 0, 0));
    assert_eq!(h.ctx.store.stats().transactions, transactions, "nothing written");
    assert_eq!(findings(&h.ctx.store, None).await, findings_before);

    // A repeated id is read once.
    let mut twice = ids.clone();
    twice.extend(ids.iter().take(10).cloned());
    let before = h.server.stats();
    let third = sync(&h, &twice).await;
    assert_eq!(third.instances, ids.len());
    assert_eq!(delta(&before, &h.server.stats(), STATES), ids.len().div_ceil(50) as u64);
}

#[tokio::test]
async fn an_install_is_recorded_as_remediation() {
    let h = harness(demo(FLEET), 3, FAST).await;
    let view = managed(&h.server);
    let all = ids(&view);
    sync(&h, &all).await;
    let targets: Vec<String> = view
        .iter()
        .filter(|i| i.agent.as_deref() == Some("Online") && i.missing.is_some_and(|n| n > 0))
        .take(3)
        .map(|i| i.id.clone())
        .collect();
    assert_eq!(targets.len(), 3);
    let open_before: Vec<FindingRecord> = findings(&h.ctx.store, Some(FindingStatus::Open))
        .await
        .into_iter()
        .filter(|f| targets.contains(&f.instance.instance_id))
        .collect();
    assert!(!open_before.is_empty());

    let sent_at = h.server.now();
    let install = PatchCommand {
        operation: Operation::Install,
        reboot_option: RebootOption::RebootIfNeeded,
        snapshot_id: None,
        instance_ids: &targets,
        comment: "run-sync-install",
        timeout_seconds: 600,
        max_concurrency: Limit::Percent(100),
        max_errors: Limit::Count(0),
        alarm: None,
        hooks: None,
        install_override_list: None,
    };
    let sent = h.ctx.aws.send_patch_command(&install).await.expect("sent");
    let mut done = false;
    for _ in 0..60 {
        h.server.advance(MINUTE);
        let invocations = h.ctx.aws.list_invocations(&sent.command_id).await.expect("listed");
        if invocations.len() == 3 && invocations.iter().all(|i| i.is_terminal()) {
            assert!(invocations.iter().all(|i| i.outcome == InvocationOutcome::Success), "{invocations:?}");
            done = true;
            break;
        }
    }
    assert!(done, "the install finished within an hour of simulated time");
    let finished_at = h.server.now();

    let before = h.server.stats();
    let outcome = sync(&h, &all).await;
    let after = h.server.stats();

    assert_eq!(outcome.changed, 3, "only the installed instances changed: {outcome:?}");
    assert_eq!(outcome.unchanged + outcome.changed + outcome.unreported, all.len());
    assert_eq!(delta(&before, &after, PATCHES), outcome.patch_calls as u64);
    assert!(outcome.patch_calls <= 6, "the three changed instances' lists only");
    assert_eq!(outcome.remediated, open_before.len());
    assert_eq!(outcome.transitions, open_before.len(), "one transition per remediation");
    assert_eq!(outcome.opened, 0);

    let remediated = findings(&h.ctx.store, Some(FindingStatus::Remediated)).await;
    assert_eq!(remediated.len(), open_before.len());
    for finding in &open_before {
        let now = remediated
            .iter()
            .find(|f| {
                f.instance.instance_id == finding.instance.instance_id
                    && f.patch.patch_id == finding.patch.patch_id
            })
            .expect("remediated");
        let installed_at = now.installed_at.expect("installed-at time");
        assert!(sent_at <= installed_at && installed_at <= finished_at, "{installed_at} outside the install");
        assert!(matches!(now.state, PatchState::Installed | PatchState::InstalledOther), "{:?}", now.state);
        assert_eq!(now.first_seen_missing, finding.first_seen_missing);
        let history = h
            .ctx
            .store
            .finding_history(h.ctx.scope.key(&finding.instance.instance_id), &finding.patch.patch_id)
            .await
            .expect("history");
        let steps: Vec<(Option<PatchState>, PatchState)> = history.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(steps, vec![(None, PatchState::Missing), (Some(PatchState::Missing), now.state)]);
    }
    // The installed-at times are SSM's InstalledTime.
    let listed = h.ctx.aws.instance_patches(&targets[0], PatchListing::All).await.expect("patches");
    for finding in remediated.iter().filter(|f| f.instance.instance_id == targets[0]) {
        let patch = listed.iter().find(|p| p.kb_id == finding.patch.patch_id).expect("listed");
        assert_eq!(finding.installed_at, patch.installed_at.map(micros));
    }
    let records = h.ctx.store.instances().await.expect("instances");
    for id in &targets {
        let summary = records
            .iter()
            .find(|r| &r.instance.instance_id == id)
            .and_then(|r| r.compliance.clone())
            .expect("summary");
        assert_eq!(summary.operation, Some(Operation::Install));
        assert_eq!(summary.counts.missing, 0);
    }
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_until_every_result_is_recorded() {
    // Ten attempts, backing off from 100 ms to at most 400 ms: a call throttled 30% of the time
    // fails all ten with a chance of 6 in a million.
    let backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_millis(400) };
    // 60 patches per OS: one DescribeInstancePatches page per instance.
    let h = harness(demo(60).with_patches_per_os(60), 10, backoff).await;
    let view = managed(&h.server);
    let ids = ids(&view);
    let reported = view.iter().filter(|i| i.missing.is_some()).count();
    assert!(reported > 40, "{reported} patch lists");
    // 30% of all calls are throttled at random (ThrottlingException) and 10% of the rest fail
    // with InternalServerError: the SDK retries both.
    let faults = Faults { throttle_rate: 0.3, error_rate: 0.1, ..Faults::default() };
    h.server.set_faults(faults).expect("valid faults");

    let before = h.server.stats();
    let outcome = sync(&h, &ids).await;
    let after = h.server.stats();

    let throttled = after.throttled(PATCHES) - before.throttled(PATCHES);
    let failed = after.failed(PATCHES) - before.failed(PATCHES);
    println!(
        "{outcome:?}\n{PATCHES}: {} calls, {throttled} throttled, {failed} failed",
        delta(&before, &after, PATCHES)
    );
    assert!(failed > 0, "server errors hit the patch lists");
    assert!(throttled > 0, "the patch lists were throttled");
    let refused =
        |op: &str| (after.throttled(op) - before.throttled(op)) + (after.failed(op) - before.failed(op));
    assert_eq!(delta(&before, &after, STATES) - refused(STATES), ids.len().div_ceil(50) as u64);
    assert_eq!(delta(&before, &after, PATCHES) - refused(PATCHES), outcome.patch_calls as u64);

    assert_eq!(outcome.changed, reported, "{outcome:?}");
    assert_eq!(missing_by_instance(&h.ctx.store).await, simulator_missing(&view));

    // Still faulty: the next sync has nothing to fetch.
    let before = h.server.stats();
    let again = sync(&h, &ids).await;
    assert_eq!(delta(&before, &h.server.stats(), PATCHES), 0);
    assert_eq!(again.unchanged, reported);
}

#[tokio::test]
async fn a_sync_cut_short_keeps_whole_batches_and_the_next_one_reads_the_rest() {
    let h = harness(demo(FLEET), 3, FAST).await;
    let view = managed(&h.server);
    let ids = ids(&view);
    let reported = view.iter().filter(|i| i.missing.is_some()).count();
    // Slow calls, so the sync is still busy when the first batch has committed.
    h.server.set_faults(Faults { latency_ms: 2, ..Faults::default() }).expect("valid faults");
    let options = SyncOptions { batch_instances: 20, fetch_concurrency: 2, ..SyncOptions::default() };

    let base = h.ctx.store.stats().transactions;
    let task = {
        let (ctx, dates, ids) = (h.ctx.clone(), h.dates.clone(), ids.clone());
        tokio::spawn(async move {
            let request = SyncRequest { source: "interval", instance_ids: &ids };
            sync_compliance_with(&ctx, &request, &dates, &options).await
        })
    };
    for _ in 0..10_000 {
        if h.ctx.store.stats().transactions > base || task.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let cut = task.await;
    assert!(cut.as_ref().is_err_and(|e| e.is_cancelled()), "the sync was still running: {cut:?}");

    let records = h.ctx.store.instances().await.expect("instances");
    let recorded = records.iter().filter(|r| r.compliance.is_some()).count();
    assert!(recorded > 0 && recorded < reported, "{recorded} of {reported} recorded");
    // Batches are 20 requested ids each: of every batch, all its reported instances or none.
    let has_summary =
        |id: &String| records.iter().any(|r| &r.instance.instance_id == id && r.compliance.is_some());
    let is_reported = |id: &String| view.iter().any(|i| &i.id == id && i.missing.is_some());
    for batch in ids.chunks(20) {
        let reported_here: Vec<&String> = batch.iter().filter(|id| is_reported(id)).collect();
        let recorded_here = reported_here.iter().filter(|id| has_summary(id)).count();
        assert!(
            recorded_here == 0 || recorded_here == reported_here.len(),
            "only whole batches are committed"
        );
    }

    h.server.set_faults(Faults::default()).expect("valid faults");
    let before = h.server.stats();
    let rest = sync(&h, &ids).await;
    assert_eq!((rest.changed, rest.unchanged), (reported - recorded, recorded), "{rest:?}");
    assert_eq!(delta(&before, &h.server.stats(), PATCHES), rest.patch_calls as u64);
    assert_eq!(missing_by_instance(&h.ctx.store).await, simulator_missing(&view), "nothing lost");
}

#[tokio::test]
async fn inventory_records_coverage_platform_and_tags() {
    // The whole demo: its production groups have every kind of coverage.
    let h = harness(Scenario::demo(), 3, FAST).await;
    let targets = h.ctx.aws.resolve_group(&group(&[("Environment", "prod")])).await.expect("resolves");
    let at = h.server.now();
    record_inventory(&h.ctx, &targets, at).await.expect("recorded");

    let records = h.ctx.store.instances().await.expect("instances");
    assert_eq!(records.len(), targets.len());
    let mut kinds = BTreeSet::new();
    for target in &targets {
        let record = records.iter().find(|r| r.instance.instance_id == target.instance_id).expect("recorded");
        assert_eq!(record.instance.name, target.name);
        assert_eq!(record.instance.tags, target.tags);
        assert_eq!(
            (record.instance.account.as_str(), record.instance.region.as_str()),
            ("123456789012", "us-east-1")
        );
        assert_eq!((record.first_seen, record.last_seen), (micros(at), micros(at)));
        let (managed, ping) = match &target.coverage {
            Coverage::Managed { .. } => (true, Some(PingStatus::Online)),
            Coverage::ConnectionLost { .. } => (true, Some(PingStatus::ConnectionLost)),
            Coverage::Unmanaged => (false, None),
        };
        assert_eq!((record.ssm_managed, record.ping_status), (managed, ping), "{}", target.instance_id);
        let platform = record.instance.platform.clone().expect("a platform");
        let sim = h.server.instance(&target.instance_id).expect("simulated");
        let expected = match (managed, sim.platform.as_str()) {
            (false, _) => target.platform_details.clone().expect("ec2 platform"),
            (true, "amazon-linux-2") => "Amazon Linux 2".into(),
            (true, "amazon-linux-2023") => "Amazon Linux 2023".into(),
            (true, "rhel-9") => "Red Hat Enterprise Linux 9.4".into(),
            (true, "ubuntu-22.04") => "Ubuntu 22.04".into(),
            (true, "windows-server-2022") => "Microsoft Windows Server 2022 Datacenter".into(),
            (true, other) => panic!("unexpected platform {other}"),
        };
        assert_eq!(platform, expected, "{}", target.instance_id);
        kinds.insert((managed, ping.is_some_and(|p| p == PingStatus::Online)));
    }
    assert_eq!(kinds.len(), 3, "managed online, managed offline and unmanaged instances: {kinds:?}");
}

#[tokio::test]
async fn release_dates_come_from_ssm_catalogs_of_the_fleet_and_are_read_daily() {
    let h = harness(demo(FLEET), 3, FAST).await;
    let t0 = h.server.now();

    // A fleet of RHEL only: SSM has no catalog for it, so nothing is read.
    let rhel = h
        .ctx
        .aws
        .resolve_group(&group(&[("Environment", "staging"), ("Role", "db")]))
        .await
        .expect("resolves");
    record_inventory(&h.ctx, &rhel, t0).await.expect("recorded");
    let before = h.server.stats();
    assert_eq!(h.dates.refresh_if_stale(&h.ctx, t0).await.expect("refreshed"), 0);
    assert_eq!(delta(&before, &h.server.stats(), CATALOG), 0);

    // Production runs Amazon Linux 2 and Windows Server among others.
    let prod = h.ctx.aws.resolve_group(&group(&[("Environment", "prod")])).await.expect("resolves");
    record_inventory(&h.ctx, &prod, t0).await.expect("recorded");
    let before = h.server.stats();
    let written = h.dates.refresh_if_stale(&h.ctx, t0).await.expect("refreshed");
    let calls = delta(&before, &h.server.stats(), CATALOG);
    assert!(calls >= 2 && written > 100, "{calls} calls, {written} dates");
    assert_eq!(h.dates.fetched_at(PatchCatalog::AmazonLinux2).await, Some(t0));
    assert_eq!(h.dates.fetched_at(PatchCatalog::Windows).await, Some(t0));
    assert_eq!(h.dates.fetched_at(PatchCatalog::AmazonLinux).await, None, "no Amazon Linux 1 in the fleet");

    // Within the day: no call. A day later: read again (nothing new, so nothing written).
    let before = h.server.stats();
    assert_eq!(h.dates.refresh_if_stale(&h.ctx, t0 + chrono::Duration::hours(23)).await.expect("fresh"), 0);
    assert_eq!(delta(&before, &h.server.stats(), CATALOG), 0);
    let before = h.server.stats();
    assert_eq!(h.dates.refresh_if_stale(&h.ctx, t0 + chrono::Duration::days(1)).await.expect("refreshed"), 0);
    assert_eq!(delta(&before, &h.server.stats(), CATALOG), calls);

    // The store has SSM's dates, as SSM lists them.
    let mut expected: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    for catalog in [PatchCatalog::AmazonLinux2, PatchCatalog::Windows] {
        for patch in h.ctx.aws.available_patches(catalog, &[]).await.expect("listed") {
            let id = patch.kb_number.clone().unwrap_or(patch.id.clone());
            let at = micros(patch.release_date.expect("a release date"));
            expected.entry(id).and_modify(|d| *d = (*d).min(at)).or_insert(at);
        }
    }
    let stored: BTreeMap<String, DateTime<Utc>> = h
        .ctx
        .store
        .patches()
        .await
        .expect("patches")
        .into_iter()
        .filter_map(|p| Some((p.patch_id, p.ssm_release?)))
        .collect();
    assert_eq!(stored, expected);
    assert!(stored.keys().any(|id| id.starts_with("KB")) && stored.keys().any(|id| id.starts_with("ALAS2-")));

    // Findings of the synced fleet carry them where SSM has them, and only there.
    let managed: Vec<String> =
        prod.iter().filter(|t| !t.coverage.is_gap()).map(|t| t.instance_id.clone()).collect();
    let before = h.server.stats();
    sync_compliance(&h.ctx, &SyncRequest { source: "window:prod/scan", instance_ids: &managed }, &h.dates)
        .await
        .expect("synced");
    assert_eq!(delta(&before, &h.server.stats(), CATALOG), 0, "the catalogs are fresh");
    let open = findings(&h.ctx.store, Some(FindingStatus::Open)).await;
    let mut with_date = 0;
    for finding in &open {
        let id = finding.patch.patch_id.as_str();
        let ssm_has_it = id.starts_with("KB") || id.starts_with("ALAS2-");
        if ssm_has_it {
            assert_eq!(finding.patch.release(), Some((expected[id], ReleaseSource::Ssm)), "{id}");
            with_date += 1;
        } else {
            assert_eq!(finding.patch.release(), None, "{id} keeps the estimated clock");
        }
    }
    assert!(with_date > 0 && with_date < open.len(), "{with_date} of {} findings dated by ssm", open.len());
}
