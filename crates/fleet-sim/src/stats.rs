//! Counters of what clients did and what the simulated world looks like.

use std::collections::BTreeMap;

use serde::Serialize;

/// A snapshot of the simulator's counters (the body of `GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Simulated now, RFC 3339.
    pub now: String,
    pub time_scale: f64,
    /// AWS calls received per operation, throttled and failed ones included.
    pub calls: BTreeMap<String, u64>,
    /// Calls answered with ThrottlingException / RequestLimitExceeded.
    pub throttled: BTreeMap<String, u64>,
    /// Calls answered with an injected server error (5xx).
    pub failed: BTreeMap<String, u64>,
    /// Calls answered with a client error (4xx other than throttling).
    pub client_errors: BTreeMap<String, u64>,
    pub commands_by_status: BTreeMap<String, u64>,
    /// Keyed by `Status` and by `Status/StatusDetails` where they differ.
    pub invocations_by_status: BTreeMap<String, u64>,
    /// `Online`, `ConnectionLost`, `NotManaged` (no agent) and `Stopped`.
    pub instances_by_agent: BTreeMap<String, u64>,
    pub instances: u64,
    /// Requests for a known advisory feed (`/feeds/...`), whatever the answer.
    pub feed_requests: u64,
    /// Feed requests answered 304 Not Modified (a matching If-None-Match or If-Modified-Since).
    pub feed_not_modified: u64,
    /// Feed requests answered with the injected HTTP 500 of the `feed_errors` fault.
    pub feed_errors: u64,
}

impl Stats {
    /// AWS calls received for an operation ("SendCommand", "DescribeInstances"...).
    pub fn calls(&self, operation: &str) -> u64 {
        self.calls.get(operation).copied().unwrap_or(0)
    }

    pub fn throttled(&self, operation: &str) -> u64 {
        self.throttled.get(operation).copied().unwrap_or(0)
    }

    pub fn failed(&self, operation: &str) -> u64 {
        self.failed.get(operation).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }
}

/// The request counters the world keeps between snapshots.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallCounters {
    pub calls: BTreeMap<String, u64>,
    pub throttled: BTreeMap<String, u64>,
    pub failed: BTreeMap<String, u64>,
    pub client_errors: BTreeMap<String, u64>,
    pub feed_requests: u64,
    pub feed_not_modified: u64,
    pub feed_errors: u64,
}

pub(crate) fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(count) => *count += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}
