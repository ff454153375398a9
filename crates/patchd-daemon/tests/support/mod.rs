//! What the engine's tests against the simulator share: a scratch directory holding the
//! configuration, the SQLite store and the group locks; clients for the simulator; and the
//! knobs that make runs quick.
#![allow(dead_code)]

// The configuration pieces the process tests at the workspace root compose theirs from.
#[path = "../../../../tests/support/patchd_toml.rs"]
pub mod patchd_toml;
// And the fleet they run against.
#[path = "../../../../tests/support/fleet.rs"]
pub mod fleet;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use fleet_sim::{Group, Scenario, SimServer, Timing};
use patchd_aws::{AwsClients, Backoff, StaticEndpoint};
use patchd_config::{Aws, Config, RetryMode};
use patchd_daemon::events::Publisher;
use patchd_daemon::rollout::PollPolicy;
use patchd_daemon::scheduler::Settings;
use patchd_daemon::sync::ReleaseDates;
use patchd_daemon::window::{self, Env, LockWait, RunPlan, RunSummary, TaskProgress};
use patchd_daemon::{Context, Scope};
use patchd_store::{OpenOptions, Store};
use tokio::sync::watch;

/// A fresh directory under the system's temp dir, removed when dropped. Derefs to its path.
pub struct Scratch(PathBuf);

impl Scratch {
    /// `patchd-<suite>-<name>-<pid>`: tests of one binary run in one process, so the name
    /// keeps them apart, and the pid keeps parallel runs of the suite apart.
    pub fn new(suite: &str, name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("patchd-{suite}-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// The configuration `text`, as if read from `patchd.toml` here; panics when invalid.
    pub fn load_config(&self, text: &str) -> patchd_config::Loaded {
        patchd_config::load_sources(vec![(self.0.join("patchd.toml"), text.to_string())], Utc::now())
            .unwrap_or_else(|e| panic!("test configuration is invalid: {e:?}"))
    }

    pub fn config(&self, text: &str) -> Config {
        self.load_config(text).config
    }

    /// The SQLite store in this directory.
    pub async fn store(&self) -> Store {
        Store::open(&format!("sqlite://{}", self.0.join("patchd.db").display()), &OpenOptions::default())
            .await
            .unwrap()
    }
}

impl Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The engine tests' fleet: `group` alone, with a catalog of `patches_per_os` per system and
/// work short enough for whole windows in seconds (scan 40 s, install 120 s, reboot 30 s,
/// simulated).
pub fn web_fleet(name: &str, seed: u64, time_scale: f64, patches_per_os: usize, group: Group) -> Scenario {
    fleet::fleet_of(name, seed, time_scale, patches_per_os, Timing::brisk(40.0, 120.0, 30.0), group)
}

/// Retries after 5 ms, then up to 20 ms: the simulator answers at once, and a test that waits
/// longer only takes longer.
pub const FAST: Backoff = Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(20) };

/// An SQLite file of its own under the system's temp dir, removed (with its WAL files) when
/// dropped.
pub struct TempDb(pub PathBuf);

impl TempDb {
    /// `patchd-<suite>-<name>-<pid>-<n>-<nanos>.db`: apart from every other test's, in this
    /// process and in parallel runs.
    pub fn new(suite: &str, name: &str) -> TempDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempDb(
            std::env::temp_dir().join(format!("patchd-{suite}-{name}-{}-{n}-{nanos}.db", std::process::id())),
        )
    }

    pub fn url(&self) -> String {
        format!("sqlite://{}", self.0.display())
    }

    /// The store in this file, migrated.
    pub async fn store(&self) -> Store {
        Store::open(&self.url(), &OpenOptions::default()).await.expect("open the store")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

/// Clients for the simulator at `server` as `[aws]` in us-east-1 builds them, with standard
/// retries up to `max_attempts` backing off by `backoff`.
pub fn clients_with_retries(server: &SimServer, max_attempts: u32, backoff: Backoff) -> AwsClients {
    let aws = Aws {
        region: Some("us-east-1".into()),
        max_attempts,
        retry_mode: RetryMode::Standard,
        ..Aws::default()
    };
    let url = server.endpoint_url();
    let endpoint = StaticEndpoint { backoff, ..StaticEndpoint::simulator(&url) };
    AwsClients::with_static_credentials(&aws, &endpoint)
}

/// The engine's context in the simulator's home scope (account 123456789012, us-east-1),
/// acting as `test` and publishing no events.
pub fn home_context(aws: AwsClients, store: Store) -> Context {
    let scope = Scope { name: "home".into(), account: "123456789012".into(), region: "us-east-1".into() };
    Context { aws, store, scope, actor: "test".into(), events: Default::default() }
}

/// The simulator's primary account, with static keys and `[aws]`'s retry settings.
pub fn simulator_clients(config: &Config, server: &SimServer) -> AwsClients {
    AwsClients::with_static_credentials(&config.aws, &StaticEndpoint::simulator(&server.endpoint_url()))
}

/// Creates bucket `name` in the simulator's primary account, as an operator creates the
/// bucket promotions put their install lists in.
pub async fn create_bucket(server: &SimServer, name: &str) {
    let url = server.endpoint_url();
    let endpoint = StaticEndpoint::simulator(&url);
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(endpoint.region.to_string()))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            endpoint.access_key_id,
            endpoint.secret_access_key,
            None,
            None,
            "test",
        ))
        .endpoint_url(endpoint.url)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config).create_bucket().bucket(name).send().await.expect("bucket created");
}

/// A stop signal that never comes.
pub fn never_stop() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

/// Polls every 100 ms: simulated commands finish in real milliseconds.
pub fn quick_poll() -> PollPolicy {
    PollPolicy { interval: Duration::from_millis(100), ..PollPolicy::default() }
}

/// The daemon loop's settings for a test: state in `state_dir`, quick polling, syncs hourly
/// (a test triggers its own), and the daemon's own grace and refresh periods.
pub fn scheduler_settings(state_dir: &Path) -> Settings {
    Settings {
        state_dir: state_dir.to_path_buf(),
        sync_interval: Duration::from_secs(3600),
        sync_retry_interval: Duration::from_secs(120),
        poll: quick_poll(),
        shutdown_grace: Duration::from_secs(10),
        release_refresh: chrono::Duration::days(1),
        heartbeat: Default::default(),
    }
}

/// What a test of windows runs in: the simulator, a scratch directory holding the
/// configuration and the store, and the engine's context over them in the home scope.
pub struct Fixture {
    pub server: SimServer,
    pub ctx: Context,
    pub config: Config,
    pub dir: Scratch,
}

impl Fixture {
    /// The simulator serving `scenario`, and `Scratch::new(suite, name)` holding the
    /// configuration `config_text(state_dir)`; events go where that configuration says.
    pub async fn start(
        suite: &str,
        name: &str,
        scenario: Scenario,
        config_text: impl FnOnce(&str) -> String,
    ) -> Fixture {
        let server = SimServer::start("127.0.0.1:0".parse().unwrap(), scenario).await.unwrap();
        let dir = Scratch::new(suite, name);
        let config = dir.config(&config_text(dir.to_str().unwrap()));
        let aws = simulator_clients(&config, &server);
        let events = Publisher::from_config(&config.events, &aws).expect("publisher builds");
        let ctx = Context { events, ..home_context(aws, dir.store().await) };
        Fixture { server, ctx, config, dir }
    }

    /// Runs `plan` as the daemon would, with the test knobs of [`execute`].
    pub async fn execute(&self, plan: &RunPlan, stop: watch::Receiver<bool>) -> RunSummary {
        execute(&self.ctx, &self.config, &self.dir, plan, stop).await
    }
}

/// Runs `plan` in `ctx` as the daemon would, with the test knobs: quick polling, a group lock
/// that is taken or fails at once, release dates refreshed daily, no progress output.
pub async fn execute(
    ctx: &Context,
    config: &Config,
    state_dir: &Path,
    plan: &RunPlan,
    stop: watch::Receiver<bool>,
) -> RunSummary {
    let dates = ReleaseDates::new(chrono::Duration::days(1));
    let poll = quick_poll();
    let progress = |_: &TaskProgress<'_>| {};
    let env = Env {
        ctx,
        config,
        release_dates: &dates,
        state_dir,
        poll: &poll,
        lock_wait: LockWait::Fail,
        on_progress: &progress,
    };
    window::execute(&env, plan, stop).await.expect("run executes")
}
