//! Events against the fleet simulator (EventBridge PutEvents on the same endpoint as SSM) and a
//! local webhook: what a window run publishes, that SLA breaches and coverage gaps go out once,
//! batching, partial-failure resends, and the webhook's signature.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use chrono::Utc;
use fleet_sim::{RecordedEvent, Scenario};
use patchd_aws::{AwsClients, EntryRetry, StaticEndpoint};
use patchd_daemon::events::{self, CoverageGap, Event, Publisher, PublisherStats};
use patchd_daemon::window::{self, RunEnd, RunPlan, RunSummary};
use patchd_store::WindowRunStatus;
use support::fleet::web_group;
use support::{never_stop, patchd_toml, web_fleet, Fixture, Scratch};

const GROUP_SIZE: usize = 6;

/// Amazon Linux 2 instances far behind on a catalog with a long history, one in three without
/// an SSM agent.
fn scenario() -> Scenario {
    let web = web_group(GROUP_SIZE).with_unmanaged(0.34).with_missing(0.9);
    let mut scenario = web_fleet("daemon-events", 5, 600.0, 20, web);
    scenario.catalog.history_days = 200;
    scenario
}

/// An SLA of one day for every rank: any patch released more than a day ago and still missing
/// is breached.
fn config_text(state_dir: &str, events: &str) -> String {
    let sla = "\n[sla]\ncritical_days = 1\nhigh_days = 1\nmedium_days = 1\nlow_days = 1\ndue_soon_days = 0\n";
    [
        patchd_toml::daemon_and_aws(state_dir, None, "", ""),
        sla.to_string(),
        format!("\n{events}\n"),
        patchd_toml::group("web", "Role", "web"),
        patchd_toml::scan_window("scan-often", "rate(1 hour)", 1, 0, "web"),
    ]
    .concat()
}

async fn fixture(name: &str, events: &str) -> Fixture {
    Fixture::start("events", name, scenario(), |state_dir| config_text(state_dir, events)).await
}

async fn execute(f: &Fixture, plan: &RunPlan) -> RunSummary {
    f.execute(plan, never_stop()).await
}

fn of_type<'a>(events: &'a [RecordedEvent], detail_type: &str) -> Vec<&'a RecordedEvent> {
    events.iter().filter(|e| e.detail_type == detail_type).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_run_publishes_its_events_and_each_breach_once() {
    let f = fixture("run", "[events]\nbus_name = \"patchd-test\"").await;
    let managed = f.server.instances().iter().filter(|i| i.is_managed()).count();
    assert!(managed > 0 && managed < GROUP_SIZE, "the scenario mixes managed and unmanaged instances");
    let window = f.config.window("scan-often").unwrap();
    let start = Utc::now();
    let summary = execute(&f, &RunPlan::for_window(window, start)).await;
    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{summary:#?}");

    let events = f.server.events();
    assert!(events
        .iter()
        .all(|e| e.source == "patchd" && e.event_bus_name.as_deref() == Some("patchd-test")));
    let started = of_type(&events, "Window Run Started");
    assert_eq!(started.len(), 1, "{events:#?}");
    assert_eq!(started[0].detail["window"], "scan-often");
    assert_eq!(started[0].detail["account"], "123456789012");
    assert_eq!(started[0].detail["region"], "us-east-1");
    assert_eq!(started[0].detail["tasks"], serde_json::json!(["scan"]));
    let completed = of_type(&events, "Window Run Completed");
    assert_eq!(completed.len(), 1);
    let detail = &completed[0].detail;
    assert_eq!(detail["status"], "succeeded");
    assert_eq!(detail["run_id"], started[0].detail["run_id"]);
    assert_eq!(detail["targeted"], GROUP_SIZE);
    assert_eq!(detail["succeeded"], managed);
    assert_eq!(detail["skipped"], summary.skipped());
    assert_eq!(detail["failed"], 0);
    assert!(detail["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(of_type(&events, "Task Failed").is_empty());

    let gaps = of_type(&events, "Coverage Gap Found");
    assert_eq!(gaps.len(), GROUP_SIZE - managed, "one per instance without an agent");
    assert!(gaps.iter().all(|g| g.detail["gap"] == "not-managed"));

    let breached = of_type(&events, "SLA Breached");
    assert!(!breached.is_empty(), "old missing patches breach a one-day SLA: {events:#?}");
    let mut subjects: Vec<String> = breached
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e.detail["instance_id"].as_str().unwrap(),
                e.detail["patch_id"].as_str().unwrap()
            )
        })
        .collect();
    subjects.sort();
    let all = subjects.len();
    subjects.dedup();
    assert_eq!(subjects.len(), all, "one event per finding");
    for e in &breached {
        assert_eq!(e.detail["status"], "breached");
        assert!(e.detail["days_left"].as_f64().unwrap() < 0.0);
        assert!(["critical", "high", "medium", "low"].contains(&e.detail["rank"].as_str().unwrap()));
        assert!(e.detail["due"].is_string() && e.detail["clock_start"].is_string());
    }
    assert!(of_type(&events, "SLA Due Soon").is_empty(), "due_soon_days = 0");
    let recorded = f.ctx.store.announcements("sla").await.unwrap();
    assert_eq!(recorded.len(), breached.len());

    // The next occurrence syncs the same findings again: no second breach, no second gap.
    let before = events.len();
    let again = execute(&f, &RunPlan::for_window(window, start + chrono::Duration::hours(1))).await;
    assert_eq!(again.end, RunEnd::Finished(WindowRunStatus::Succeeded));
    let events = f.server.events();
    let new: Vec<&str> = events[before..].iter().map(|e| e.detail_type.as_str()).collect();
    assert_eq!(new, ["Window Run Started", "Window Run Completed"], "{new:?}");
    // A sync outside a window announces nothing new either.
    let ids: Vec<String> =
        f.server.instances().iter().filter(|i| i.is_managed()).map(|i| i.id.clone()).collect();
    assert_eq!(patchd_daemon::announce::announce_sla(&f.ctx, &f.config, &ids, Utc::now()).await, 0);
    assert_eq!(f.server.events().len(), events.len());
    assert_eq!(f.ctx.events.stats(), PublisherStats { published: events.len() as u64, failed: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_is_announced_before_the_run_completes() {
    let f = fixture("failed", "[events]\nbus_name = \"patchd\"").await;
    f.server.set_faults(fleet_sim::Faults { install_failure_rate: 1.0, ..Default::default() }).unwrap();
    let groups = vec!["web".to_string()];
    let request = window::AdhocRequest {
        operation: patchd_config::Operation::Install,
        groups: &groups,
        reboot_option: patchd_config::RebootOption::NoReboot,
        max_concurrency: patchd_config::Limit::Count(1),
        max_errors: patchd_config::Limit::Count(0),
        timeout_seconds: 600,
    };
    let summary = execute(&f, &RunPlan::adhoc(&request, Utc::now())).await;
    assert_eq!(summary.end, RunEnd::Finished(WindowRunStatus::Failed), "{summary:#?}");

    let events = f.server.events();
    let types: Vec<&str> = events.iter().map(|e| e.detail_type.as_str()).collect();
    let failed = types.iter().position(|t| *t == "Task Failed").expect("a Task Failed event");
    assert_eq!(types.last(), Some(&"Window Run Completed"));
    assert!(failed < types.len() - 1, "{types:?}");
    let detail = &events[failed].detail;
    assert_eq!(detail["window"], "manual:install:web");
    assert_eq!(detail["task"], "install");
    assert_eq!(detail["operation"], "Install");
    assert_eq!(detail["budget_exceeded"], true, "{detail}");
    assert_eq!(detail["reason"], "error budget (max_errors) exceeded");
    assert!(detail["failed"].as_u64().unwrap() >= 1);
    assert_eq!(events.last().unwrap().detail["status"], "failed");
}

fn gap(n: usize) -> Event {
    Event::CoverageGapFound(CoverageGap {
        account: "123456789012".into(),
        region: "us-east-1".into(),
        instance_id: format!("i-{n:017x}"),
        gap: "not-managed".into(),
        ping_status: None,
        window: "w".into(),
        task: "scan".into(),
        groups: vec!["web".into()],
    })
}

fn quick_retry(rounds: u32) -> EntryRetry {
    EntryRetry { rounds, initial: Duration::from_millis(10), max: Duration::from_millis(50) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_go_out_ten_a_call() {
    let f = fixture("batch", "").await;
    assert!(!f.ctx.events.is_enabled(), "no [events]: nothing is published");
    let publisher =
        Publisher::build(Some((f.ctx.aws.clone(), "patchd".into())), None, true, quick_retry(3)).unwrap();
    let events: Vec<Event> = (0..25).map(gap).collect();
    publisher.publish(&events).await;
    assert_eq!(f.server.stats().calls("PutEvents"), 3, "25 events: 10 + 10 + 5");
    let recorded = f.server.events();
    assert_eq!(recorded.len(), 25);
    assert_eq!(recorded[24].detail["instance_id"], format!("i-{:017x}", 24), "in order");
    assert_eq!(publisher.stats(), PublisherStats { published: 25, failed: 0 });

    // A reloaded [events] keeps counting into the process's totals, which /metrics exports.
    let reloaded = Publisher::build(Some((f.ctx.aws.clone(), "patchd".into())), None, true, quick_retry(3))
        .unwrap()
        .counting_on(&publisher);
    reloaded.publish(&[gap(99)]).await;
    assert_eq!(publisher.stats(), PublisherStats { published: 26, failed: 0 });
    assert_eq!(reloaded.stats(), publisher.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_entries_are_resent_and_the_resends_are_bounded() {
    let f = fixture("partial", "").await;
    let publisher =
        Publisher::build(Some((f.ctx.aws.clone(), "patchd".into())), None, true, quick_retry(2)).unwrap();

    // Three of the first ten entries fail once: only those three are sent again.
    f.server.fail_event_entries(3);
    publisher.publish(&(0..12).map(gap).collect::<Vec<_>>()).await;
    assert_eq!(f.server.stats().calls("PutEvents"), 3, "10 (3 refused), the 3 again, then 2");
    let mut ids: Vec<String> =
        f.server.events().iter().map(|e| e.detail["instance_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 12, "each event recorded once");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12);
    assert_eq!(publisher.stats(), PublisherStats { published: 12, failed: 0 });

    // An entry refused on every attempt is given up after the configured resends, counted,
    // and does not hold up the others.
    f.server.fail_event_entries(1_000);
    publisher.publish(&[gap(100), gap(101)]).await;
    assert_eq!(f.server.stats().calls("PutEvents"), 3 + 3, "one call and two resends");
    assert_eq!(publisher.stats(), PublisherStats { published: 12, failed: 2 });
    f.server.fail_event_entries(0);
}

type Received = Arc<Mutex<Vec<(HeaderMap, bytes::Bytes)>>>;

/// A webhook receiver on port 0 that records each request and answers 204.
async fn webhook_server() -> (String, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: bytes::Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_are_signed_over_the_body() {
    let (url, received) = webhook_server().await;
    let dir = Scratch::new("events", "webhook");
    let key_file = dir.join("webhook.key");
    std::fs::write(&key_file, "s3cret-key\n").unwrap();
    let text =
        format!("[events]\nwebhook_url = \"{url}\"\nwebhook_secret_file = \"{}\"\n", key_file.display());
    let config = dir.config(&text);
    let aws =
        AwsClients::with_static_credentials(&config.aws, &StaticEndpoint::simulator("http://127.0.0.1:9"));
    let publisher = Publisher::from_config(&config.events, &aws).unwrap();
    publisher.publish(&[gap(1), gap(2)]).await;
    assert_eq!(publisher.stats(), PublisherStats { published: 2, failed: 0 });

    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "one POST per event");
    for (headers, body) in &received {
        let signature = headers.get("x-patchd-signature").expect("signed").to_str().unwrap();
        // The key file's trailing newline is not part of the key.
        let expected = format!("sha256={}", events::hex(&events::hmac_sha256(b"s3cret-key", body)));
        assert_eq!(signature, expected);
        assert_eq!(headers.get("x-patchd-event").unwrap(), "Coverage Gap Found");
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["source"], "patchd");
        assert_eq!(json["detail-type"], "Coverage Gap Found");
        assert_eq!(json["account"], "123456789012");
        assert_eq!(json["detail"]["gap"], "not-managed");
    }
    let wrong = format!("sha256={}", events::hex(&events::hmac_sha256(b"other", &received[0].1)));
    assert_ne!(received[0].0.get("x-patchd-signature").unwrap().to_str().unwrap(), wrong);
}

/// A breach is announced once while the finding stays open; once the patch is installed and
/// later found missing again (a reopened finding), the breach is announced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_finding_is_announced_again() {
    use patchd_store::{ComplianceSync, InstanceScan, PatchObservation, PatchState};
    let f = fixture("reopen", "[events]\nbus_name = \"patchd-test\"").await;
    let instance = "i-0aaaaaaaaaaaaaaa1";
    let t0 = Utc::now() - chrono::Duration::days(10);
    let sync = |at: chrono::DateTime<Utc>, state: PatchState| {
        let store = f.ctx.store.clone();
        async move {
            let patches = [PatchObservation {
                patch_id: "KB-REOPEN-1",
                title: Some("a critical fix"),
                classification: Some("Security"),
                severity: Some("Critical"),
                cve_ids: &[],
                state,
                installed_time: (state == PatchState::Installed).then_some(at),
            }];
            let key = patchd_store::InstanceKey {
                account: "123456789012",
                region: "us-east-1",
                instance_id: instance,
            };
            let scans = [InstanceScan {
                operation: None,
                operation_start: None,
                operation_end: None,
                ..InstanceScan::scan_at(key, at, &patches)
            }];
            store
                .record_sync(&ComplianceSync { source: "test", started_at: at, scans: &scans })
                .await
                .unwrap();
        }
    };
    let breaches = |f: &Fixture| of_type(&f.server.events(), "SLA Breached").len();
    let ids = [instance.to_string()];

    sync(t0, PatchState::Missing).await;
    patchd_daemon::announce::announce_sla(&f.ctx, &f.config, &ids, Utc::now()).await;
    patchd_daemon::announce::announce_sla(&f.ctx, &f.config, &ids, Utc::now()).await;
    assert_eq!(breaches(&f), 1, "a lasting breach is announced once");

    sync(t0 + chrono::Duration::days(1), PatchState::Installed).await;
    patchd_daemon::announce::announce_sla(&f.ctx, &f.config, &ids, Utc::now()).await;
    assert_eq!(breaches(&f), 1, "remediated: nothing to announce");
    assert!(f.ctx.store.announcements("sla").await.unwrap().is_empty(), "the ended breach is forgotten");

    sync(t0 + chrono::Duration::days(2), PatchState::Missing).await;
    patchd_daemon::announce::announce_sla(&f.ctx, &f.config, &ids, Utc::now()).await;
    patchd_daemon::announce::announce_sla(&f.ctx, &f.config, &ids, Utc::now()).await;
    assert_eq!(breaches(&f), 2, "reopened: announced again, once");
}

/// A coverage gap is announced once while it lasts; once the agent is back online the gap's
/// announcement is forgotten, and the agent going offline again is a new gap, announced again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coverage_gap_that_closes_and_reopens_is_announced_again() {
    let f = fixture("gap-reopen", "[events]\nbus_name = \"patchd-test\"").await;
    let instance = f.server.instances().into_iter().find(|i| i.is_managed()).expect("a managed instance").id;
    let window = f.config.window("scan-often").unwrap();
    let start = Utc::now();
    let mut occurrence = 0;
    let mut run = || {
        occurrence += 1;
        RunPlan::for_window(window, start + chrono::Duration::hours(occurrence))
    };
    let offline_gaps = |f: &Fixture| {
        of_type(&f.server.events(), "Coverage Gap Found")
            .into_iter()
            .filter(|e| e.detail["instance_id"] == instance.as_str())
            .inspect(|e| {
                assert_eq!(e.detail["gap"], "agent-offline", "{}", e.detail);
                assert_eq!(e.detail["ping_status"], "ConnectionLost", "{}", e.detail);
            })
            .count()
    };
    let unmanaged_gaps = |f: &Fixture| {
        of_type(&f.server.events(), "Coverage Gap Found")
            .iter()
            .filter(|e| e.detail["gap"] == "not-managed")
            .count()
    };

    f.server.set_agent(&instance, fleet_sim::AgentState::ConnectionLost).unwrap();
    execute(&f, &run()).await;
    execute(&f, &run()).await;
    assert_eq!(offline_gaps(&f), 1, "a lasting gap is announced once");
    let unmanaged = unmanaged_gaps(&f);
    assert!(unmanaged > 0, "the scenario has instances without an agent");

    f.server.set_agent(&instance, fleet_sim::AgentState::Online).unwrap();
    execute(&f, &run()).await;
    assert_eq!(offline_gaps(&f), 1, "closed: nothing to announce");
    let subjects: Vec<String> =
        f.ctx.store.announcements("coverage-gap").await.unwrap().into_iter().map(|a| a.subject).collect();
    assert!(!subjects.iter().any(|s| s.contains(&instance)), "the closed gap is forgotten: {subjects:?}");
    assert_eq!(subjects.len(), unmanaged, "the gaps that stay open stay announced: {subjects:?}");

    f.server.set_agent(&instance, fleet_sim::AgentState::ConnectionLost).unwrap();
    execute(&f, &run()).await;
    execute(&f, &run()).await;
    assert_eq!(offline_gaps(&f), 2, "reopened: announced again, once");
    assert_eq!(unmanaged_gaps(&f), unmanaged, "the lasting gaps are never announced twice");
}
