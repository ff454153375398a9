//! What the engine's tests against the simulator share: a scratch directory holding the
//! configuration, the SQLite store and the group locks; clients for the simulator; and the
//! knobs that make runs quick.
#![allow(dead_code)]

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use fleet_sim::SimServer;
use patchd_aws::{AwsClients, StaticEndpoint};
use patchd_config::Config;
use patchd_daemon::rollout::PollPolicy;
use patchd_daemon::sync::ReleaseDates;
use patchd_daemon::window::{self, Env, LockWait, RunPlan, RunSummary, TaskProgress};
use patchd_daemon::Context;
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

/// The simulator's primary account, with static keys and `[aws]`'s retry settings.
pub fn simulator_clients(config: &Config, server: &SimServer) -> AwsClients {
    AwsClients::with_static_credentials(&config.aws, &StaticEndpoint::simulator(&server.endpoint_url()))
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
