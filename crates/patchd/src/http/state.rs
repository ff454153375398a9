//! What every request handler sees: the configuration in force, the store, the clients, the
//! scheduler's heartbeat and leadership, and when the process started.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchd_aws::AwsClients;
use patchd_config::Config;
use patchd_daemon::leader::Leadership;
use patchd_daemon::scheduler::{Heartbeat, HEARTBEAT_EVERY};
use patchd_store::Store;

use super::auth::ApiToken;
use super::tls::Certificate;

/// How stale the scheduler's heartbeat may get before the daemon counts as stuck: three beats.
pub(crate) const HEARTBEAT_STALE: Duration = Duration::from_secs(3 * HEARTBEAT_EVERY.as_secs());

/// What the server is built from.
#[derive(Debug)]
pub(crate) struct Setup {
    /// The configuration in force; `patchd run` swaps it on a successful SIGHUP reload.
    pub config: Arc<RwLock<Arc<Config>>>,
    /// `--config` as given.
    pub config_path: std::path::PathBuf,
    pub store: Store,
    pub aws: AwsClients,
    pub heartbeat: Heartbeat,
    /// Leader or standby, for `/readyz`, `/v1/status` and the metrics.
    pub leadership: Leadership,
    pub token: Option<ApiToken>,
    /// Counts what the daemon's events publishers sent and lost, for the metrics.
    pub events: patchd_daemon::Publisher,
    /// Serve HTTPS with this certificate; None: plain HTTP.
    pub tls: Option<Arc<Certificate>>,
}

/// Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct HttpState {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub setup: Setup,
    pub listen: SocketAddr,
    pub started: Instant,
    pub started_at: DateTime<Utc>,
    pub metrics: MetricsCache,
}

/// The store-derived text of the latest `/metrics` scrape, and when it was computed.
#[derive(Debug, Default)]
pub(super) struct MetricsCache(pub tokio::sync::Mutex<Option<(Instant, String)>>);

impl HttpState {
    pub(super) fn config(&self) -> Arc<Config> {
        self.inner.setup.config.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Whether the scheduler loop turned within [`HEARTBEAT_STALE`] of `now`.
    pub(super) fn heartbeat_recent(&self, now: DateTime<Utc>) -> bool {
        heartbeat_recent(&self.inner.setup.heartbeat, now)
    }
}

pub(crate) fn heartbeat_recent(heartbeat: &Heartbeat, now: DateTime<Utc>) -> bool {
    heartbeat.last().is_some_and(|last| (now - last).num_seconds() <= HEARTBEAT_STALE.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_recent_for_three_beats() {
        let now = Utc::now();
        let heartbeat = Heartbeat::default();
        assert!(!heartbeat_recent(&heartbeat, now), "no beat yet: not started");
        heartbeat.beat(now - chrono::Duration::seconds(15));
        assert!(heartbeat_recent(&heartbeat, now));
        heartbeat.beat(now - chrono::Duration::seconds(16));
        assert!(!heartbeat_recent(&heartbeat, now), "a stuck loop");
        heartbeat.beat(now);
        assert!(heartbeat_recent(&heartbeat, now));
    }
}
