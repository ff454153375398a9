//! Several accounts and regions against the fleet simulator, which partitions its fleet by the
//! account and region of each request's credentials, as AWS does: the home account in two
//! regions, and a second account reached by assuming a role (STS AssumeRole with an external
//! id). The second account's fleet has the same seed as the home one, so the same instance
//! ids: what patchd records of one must never land on the other.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use fleet_sim::{Group, Partition, Scenario, SimServer, Timing};
use patchd_config::Config;
use patchd_daemon::events::Publisher;
use patchd_daemon::scheduler::{self, Control};
use patchd_daemon::window::{RunEnd, RunPlan};
use patchd_daemon::{scopes, Context};
use patchd_store::{Store, WindowRunQuery, WindowRunStatus};
use support::{never_stop, patchd_toml, scheduler_settings, simulator_clients, Scratch};
use tokio::sync::mpsc;

const HOME: &str = "123456789012";
const PAYMENTS: &str = "210987654321";
const EXTERNAL_ID: &str = "patchd-payments-7";

/// The home account's fleet in us-east-1 and a smaller one in eu-west-1; the payments
/// account's in us-east-1 with the home fleet's seed and shape, so the same instance ids.
fn scenario() -> Scenario {
    let web = |count| {
        Group::amazon_linux_2("web", count).with_tag("Role", "web").with_missing(0.6).with_scanned(0.0)
    };
    let west = Partition::new(HOME, "eu-west-1").with_seed(9).with_groups(vec![web(3)]);
    let payments = Partition::new(PAYMENTS, "us-east-1").with_seed(5).with_external_id(EXTERNAL_ID);
    // Installs and reboots are never waited for here: they keep the simulator's default times.
    let mut scenario = Scenario::of_groups("accounts", 5, vec![web(6)])
        .with_time_scale(600.0)
        .with_timing(Timing::brisk(30.0, 300.0, 90.0))
        .with_patches_per_os(30)
        .with_partition(west)
        .with_partition(payments.with_groups(vec![web(6)]));
    scenario.account_id = HOME.to_string();
    scenario
}

fn config_text(state_dir: &str, external_id: &str) -> String {
    let payments = format!(
        "regions = [\"us-east-1\", \"eu-west-1\"]\n\n[[aws.account]]\nname = \"payments\"\n\
         role_arn = \"arn:aws:iam::{PAYMENTS}:role/patchd\"\nexternal_id = \"{external_id}\"\nregions = [\"us-east-1\"]"
    );
    [
        patchd_toml::daemon_and_aws(state_dir, None, "", &payments),
        patchd_toml::group("web", "Role", "web"),
        "\n[[group]]\nname = \"payments-web\"\naccounts = [\"payments\"]\n[group.tags]\nRole = \"web\"\n"
            .to_string(),
        patchd_toml::scan_window("scan-everywhere", "cron(0 2 * * ? *)", 2, 1, "web"),
        // Always open: every hour, releasing for an hour. Scoped to one region.
        patchd_toml::window("hourly-east", "cron(0 * * * ? *)", 2, 1),
        "regions = [\"us-east-1\"]\n".to_string(),
        patchd_toml::task("scan", "scan", "web", ""),
        patchd_toml::scan_window("scan-payments", "cron(0 3 * * ? *)", 2, 1, "payments-web"),
    ]
    .concat()
}

struct Fixture {
    server: SimServer,
    config: Config,
    scopes: Vec<Context>,
    dir: Scratch,
}

async fn fixture(name: &str, external_id: &str) -> Fixture {
    let server = SimServer::start("127.0.0.1:0".parse().unwrap(), scenario()).await.unwrap();
    let dir = Scratch::new("scopes", name);
    let loaded = dir.load_config(&config_text(dir.to_str().unwrap(), external_id));
    // Scan-only windows leave the SLA unmet, which check rightly says; nothing else is wrong.
    assert!(
        loaded.warnings.iter().all(|w| w.message.contains("cannot meet any patch SLA")),
        "{:?}",
        loaded.warnings
    );
    let config = loaded.config;
    let home = simulator_clients(&config, &server);
    let store = dir.store().await;
    let events = Publisher::default();
    let shared =
        scopes::Shared { home: &home, store: &store, actor: "test", events: &events, host: "admin-1" };
    let scopes = scopes::connect(&config, &shared).await.expect("scopes connect");
    Fixture { server, config, scopes, dir }
}

/// Runs a window's occurrence now in every scope it reaches, as the scheduler does; returns
/// the scopes it ran in, as (account, region).
async fn run_window(f: &Fixture, window: &str) -> Vec<(String, String, RunEnd)> {
    let w = f.config.window(window).unwrap();
    let plan = RunPlan::for_window(w, Utc::now());
    let mut ran = Vec::new();
    for ctx in &f.scopes {
        let Some(scoped) = scopes::plan_in_scope(&f.config, Some(window), &plan, &ctx.scope) else {
            continue;
        };
        let summary = support::execute(ctx, &f.config, &f.dir, &scoped, never_stop()).await;
        ran.push((ctx.scope.account.clone(), ctx.scope.region.clone(), summary.end));
    }
    ran
}

fn ids(server: &SimServer, account: &str, region: &str) -> BTreeSet<String> {
    server.instances_in(account, region).into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect()
}

async fn recorded(store: &Store, account: &str, region: &str) -> BTreeSet<String> {
    store
        .instances()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.instance.account == account && r.instance.region == region && r.compliance.is_some())
        .map(|r| r.instance.instance_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_fleets_stay_apart() {
    let f = fixture("apart", EXTERNAL_ID).await;
    let scopes: Vec<_> = f
        .scopes
        .iter()
        .map(|c| (c.scope.name.as_str(), c.scope.account.as_str(), c.scope.region.as_str()))
        .collect();
    assert_eq!(
        scopes,
        [("home", HOME, "us-east-1"), ("home", HOME, "eu-west-1"), ("payments", PAYMENTS, "us-east-1")],
        "the home account's id comes from GetCallerIdentity, the other's from its role"
    );
    let home_east = ids(&f.server, HOME, "us-east-1");
    let payments_east = ids(&f.server, PAYMENTS, "us-east-1");
    assert!(!home_east.is_empty());
    assert_eq!(home_east, payments_east, "same seed, same ids: the test can tell a mix-up");

    let payments = &f.scopes[2];
    let web = f.config.groups.iter().find(|g| g.name == "web").unwrap();
    let found = payments.aws.resolve_group(web).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(found.len(), 6);
    let ran = run_window(&f, "scan-everywhere").await;
    let finished = RunEnd::Finished(WindowRunStatus::Succeeded);
    assert_eq!(
        ran,
        [
            (HOME.to_string(), "us-east-1".to_string(), finished),
            (HOME.to_string(), "eu-west-1".to_string(), finished),
            (PAYMENTS.to_string(), "us-east-1".to_string(), finished),
        ]
    );

    // Each scope's scan reached its own partition: the simulator saw one Scan command per
    // partition, on that partition's instances only.
    for (account, region) in [(HOME, "us-east-1"), (HOME, "eu-west-1"), (PAYMENTS, "us-east-1")] {
        let stats = f.server.stats_in(account, region).expect("partition exists");
        assert_eq!(stats.calls.get("SendCommand").copied(), Some(1), "{account} {region}: {stats:?}");
    }
    // The store holds each scope's instances under that scope, the shared ids twice.
    let store = &f.scopes[0].store;
    assert_eq!(recorded(store, HOME, "us-east-1").await, home_east);
    assert_eq!(recorded(store, PAYMENTS, "us-east-1").await, payments_east);
    assert_eq!(recorded(store, HOME, "eu-west-1").await, ids(&f.server, HOME, "eu-west-1"));
    let all = store.instances().await.unwrap();
    assert_eq!(all.len(), home_east.len() * 2 + ids(&f.server, HOME, "eu-west-1").len());
    assert!(all.iter().all(|r| r.instance.account == HOME || r.instance.account == PAYMENTS));

    // One run per scope, each recorded with its scope.
    let runs = store
        .window_runs(&WindowRunQuery { window: Some("scan-everywhere"), ..Default::default() })
        .await
        .unwrap();
    let mut run_scopes: Vec<_> = runs.iter().map(|r| (r.account.as_str(), r.region.as_str())).collect();
    run_scopes.sort_unstable();
    assert_eq!(run_scopes, [(HOME, "eu-west-1"), (HOME, "us-east-1"), (PAYMENTS, "us-east-1")]);

    // One AssumeRole served every call the payments scope made (its SSM, EC2 and STS clients
    // share one cached session); STS answers in the caller's (home) partition.
    let sts = f.server.stats_in(HOME, "us-east-1").unwrap();
    assert_eq!(sts.calls.get("AssumeRole").copied(), Some(1), "{:?}", sts.calls);
    assert_eq!(sts.calls.get("GetCallerIdentity").copied(), Some(1), "once, at start-up");

    // A group scoped to one account runs there only.
    let ran = run_window(&f, "scan-payments").await;
    assert_eq!(ran, [(PAYMENTS.to_string(), "us-east-1".to_string(), finished)]);
    let stats = f.server.stats_in(PAYMENTS, "us-east-1").unwrap();
    assert_eq!(stats.calls.get("SendCommand").copied(), Some(2));
    let stats = f.server.stats_in(HOME, "us-east-1").unwrap();
    assert_eq!(stats.calls.get("SendCommand").copied(), Some(1), "the home account is not touched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_role_fails_its_scope_only() {
    let f = fixture("refused", "not-the-secret").await;
    let payments = f.scopes.iter().find(|c| c.scope.account == PAYMENTS).unwrap();
    let group = f.config.groups.iter().find(|g| g.name == "web").unwrap();
    let error = payments.aws.resolve_group(group).await.expect_err("the role refuses the external id");
    // What the log line shows: the operation, that it is a permission problem, and STS's reason.
    let text = error.to_string();
    assert!(matches!(error, patchd_aws::AwsError::AccessDenied { .. }), "{error:?}");
    assert!(text.starts_with("DescribeInstances denied by aws: CredentialsNotLoaded"), "{text}");
    assert!(text.contains("not authorized to perform: sts:AssumeRole"), "{text}");
    assert!(text.contains(&format!("arn:aws:iam::{PAYMENTS}:role/patchd")), "{text}");

    let home = &f.scopes[0];
    let found = home.aws.resolve_group(group).await.expect("the home account is unaffected");
    assert_eq!(found.len(), f.server.instances_in(HOME, "us-east-1").len());
    assert_eq!(f.server.stats_in(PAYMENTS, "us-east-1").unwrap().calls.get("DescribeInstances"), None);
}

/// The daemon's own loop: at start-up the hourly window's open occurrence starts late in every
/// scope the window reaches (its region, in both accounts), and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_fires_a_window_in_every_scope_it_reaches() {
    let f = fixture("scheduler", EXTERNAL_ID).await;
    let mut config = f.config.clone();
    config.windows.retain(|w| w.name == "hourly-east");
    let settings = scheduler_settings(&f.dir);
    let (tx, rx) = mpsc::channel(4);
    let daemon = tokio::spawn(scheduler::run(f.scopes.clone(), config, settings, rx));
    let store = f.scopes[0].store.clone();
    let started = std::time::Instant::now();
    let query = WindowRunQuery { window: Some("hourly-east"), ..Default::default() };
    let runs = loop {
        let runs = store.window_runs(&query).await.unwrap();
        if runs.len() >= 2 && runs.iter().all(|r| r.status == WindowRunStatus::Succeeded) {
            break runs;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the runs did not finish: {runs:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tx.send(Control::Stop).await.unwrap();
    daemon.await.unwrap().unwrap();

    let mut scopes: Vec<_> = runs.iter().map(|r| (r.account.as_str(), r.region.as_str())).collect();
    scopes.sort_unstable();
    assert_eq!(scopes, [(HOME, "us-east-1"), (PAYMENTS, "us-east-1")], "{runs:#?}");
    assert_eq!(runs[0].scheduled_start, runs[1].scheduled_start, "one occurrence, one run per scope");
    assert_eq!(f.server.stats_in(HOME, "eu-west-1").unwrap().calls.get("SendCommand"), None);
}

/// A reload gives every scope the sinks `[events]` names now, or, when the webhook's key
/// cannot be read, changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rewires_every_scope_to_the_new_events_sinks() {
    let f = fixture("events-reload", EXTERNAL_ID).await;
    assert!(f.scopes.iter().all(|c| !c.events.is_enabled()));
    let events = patchd_config::Events { bus_name: Some("patchd-reloaded".into()), ..Default::default() };
    let reloaded = scopes::with_events(&f.scopes, &events).expect("no key file to read");
    assert_eq!(reloaded.len(), f.scopes.len());
    for (before, after) in f.scopes.iter().zip(&reloaded) {
        assert!(after.events.is_enabled(), "{}", after.scope);
        assert_eq!(before.scope, after.scope);
    }
    let unreadable = patchd_config::Events {
        webhook_url: Some("https://chat.example/hook".into()),
        webhook_secret_file: Some(f.dir.join("no-such-key")),
        ..Default::default()
    };
    assert!(scopes::with_events(&f.scopes, &unreadable).is_err());
}
