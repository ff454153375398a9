//! Fault injection: throttling, server errors, latency, agents dropping off (for a while, or for
//! good after a reboot), failed installs, instances whose patch lists cannot be read.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::request::is_instance_id;

/// The names `faults.feed_errors` accepts (besides `*`), one per feed. They live here rather
/// than with the feeds so that the fault settings, which every world holds, need not depend
/// on the feed server.
pub const FEED_NAMES: [&str; 5] = ["amazon-linux-2", "amazon-linux-2023", "redhat", "ubuntu", "kev"];

/// Fault settings. Everything defaults to off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of AWS calls answered with a server error (SSM InternalServerError, EC2 InternalError).
    pub error_rate: f64,
    /// Share of AWS calls throttled at random, whatever the request rate: the "30% of calls
    /// throttled" condition, reproducible from the seed, which token buckets cannot give at low
    /// request rates.
    pub throttle_rate: f64,
    /// Added latency per AWS call, in real milliseconds.
    pub latency_ms: u64,
    /// Uniform extra latency up to this many real milliseconds.
    pub latency_jitter_ms: u64,
    /// Chance per simulated hour that an Online agent drops to ConnectionLost.
    pub agent_offline_per_hour: f64,
    /// How long (simulated seconds) a dropped agent stays ConnectionLost.
    pub agent_offline_seconds: f64,
    /// Chance that installing one patch fails (the patch becomes FAILED, the invocation Failed).
    pub install_failure_rate: f64,
    /// Chance that an invocation hangs until the execution timeout (ExecutionTimedOut).
    pub execution_timeout_rate: f64,
    /// Chance that an agent does not come back after an install rebooted its instance: the
    /// node stays ConnectionLost and the invocation runs into its execution timeout.
    pub lost_after_reboot_rate: f64,
    /// Per-operation rate limits in real requests per second ("*" applies to every other
    /// operation). The burst equals the rate, at least 1.
    pub throttle: BTreeMap<String, f64>,
    /// Instances whose patch lists stay unreadable: every DescribeInstancePatches call for one
    /// of them answers InternalServerError (HTTP 500), whatever its filters and paging; every
    /// other operation, and every other instance, behaves normally.
    pub unreadable_instances: BTreeSet<String>,
    /// Advisory feeds (`/feeds/...`, served by the `feeds` module) that answer HTTP 500: feed names
    /// (`amazon-linux-2`, `amazon-linux-2023`, `redhat`, `ubuntu`, `kev`) or `*` for all.
    pub feed_errors: BTreeSet<String>,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            error_rate: 0.0,
            throttle_rate: 0.0,
            latency_ms: 0,
            latency_jitter_ms: 0,
            agent_offline_per_hour: 0.0,
            agent_offline_seconds: 900.0,
            install_failure_rate: 0.0,
            execution_timeout_rate: 0.0,
            lost_after_reboot_rate: 0.0,
            throttle: BTreeMap::new(),
            unreadable_instances: BTreeSet::new(),
            feed_errors: BTreeSet::new(),
        }
    }
}

impl Faults {
    /// Everything wrong with the settings, one line each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
            ("install_failure_rate", self.install_failure_rate),
            ("execution_timeout_rate", self.execution_timeout_rate),
            ("lost_after_reboot_rate", self.lost_after_reboot_rate),
            ("agent_offline_per_hour", self.agent_offline_per_hour),
        ] {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("faults.{name} is {value}; use a probability between 0 and 1"));
            }
        }
        if !(self.agent_offline_seconds.is_finite() && self.agent_offline_seconds >= 0.0) {
            problems.push(format!(
                "faults.agent_offline_seconds is {}; use a number of seconds of at least 0",
                self.agent_offline_seconds
            ));
        }
        for (operation, tps) in &self.throttle {
            if !(tps.is_finite() && *tps > 0.0) {
                problems.push(format!(
                    "faults.throttle.{operation} is {tps}; use a rate above 0 requests per second"
                ));
            }
        }
        for id in &self.unreadable_instances {
            if !is_instance_id(id) {
                problems.push(format!(
                    "faults.unreadable_instances holds {id:?}; use instance ids such as i-0123456789abcdef0"
                ));
            }
        }
        for name in &self.feed_errors {
            if name != "*" && !FEED_NAMES.contains(&name.as_str()) {
                problems.push(format!(
                    "faults.feed_errors holds {name:?}; use feed names ({}) or \"*\"",
                    FEED_NAMES.join(", ")
                ));
            }
        }
        problems
    }

    /// Whether the advisory feed `name` must answer HTTP 500.
    pub fn feed_fails(&self, name: &str) -> bool {
        self.feed_errors.contains(name) || self.feed_errors.contains("*")
    }

    /// Whether DescribeInstancePatches with this request body must fail: it names an instance
    /// of `unreadable_instances`.
    pub fn patches_unreadable(&self, body: &serde_json::Value) -> bool {
        !self.unreadable_instances.is_empty()
            && body
                .get("InstanceId")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|id| self.unreadable_instances.contains(id))
    }

    /// Applies the members present in a JSON object onto these settings (the control API's
    /// partial update), then validates.
    pub fn merged(&self, patch: &serde_json::Value) -> Result<Faults, Vec<String>> {
        let mut current = serde_json::to_value(self).map_err(|e| vec![e.to_string()])?;
        let (Some(target), Some(source)) = (current.as_object_mut(), patch.as_object()) else {
            return Err(vec!["the body must be a JSON object of fault settings".into()]);
        };
        for (key, value) in source {
            target.insert(key.clone(), value.clone());
        }
        let faults: Faults = serde_json::from_value(current).map_err(|e| vec![e.to_string()])?;
        let problems = faults.problems();
        if problems.is_empty() {
            Ok(faults)
        } else {
            Err(problems)
        }
    }
}

/// Token buckets per operation, refilled in real time (throttling is about the client's real
/// request rate, whatever the simulated clock does).
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: HashMap<String, Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

impl Throttle {
    /// Takes a token for `operation`; false means the call is throttled.
    pub fn admit(&mut self, faults: &Faults, operation: &str) -> bool {
        let Some(rate) = faults.throttle.get(operation).or_else(|| faults.throttle.get("*")).copied() else {
            return true;
        };
        let burst = rate.max(1.0);
        let now = Instant::now();
        let bucket = self
            .buckets
            .entry(operation.to_string())
            .or_insert_with(|| Bucket { tokens: burst, refreshed: now });
        let elapsed = now.duration_since(bucket.refreshed).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.refreshed = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets all buckets, e.g. after the limits changed.
    pub fn reset(&mut self) {
        self.buckets.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_throttle() {
        let faults =
            Faults { throttle: BTreeMap::from([("SendCommand".into(), 0.001)]), ..Faults::default() };
        let mut throttle = Throttle::default();
        assert!(throttle.admit(&faults, "SendCommand"));
        assert!(!throttle.admit(&faults, "SendCommand"));
        assert!(throttle.admit(&faults, "ListCommands"), "other operations are not limited");
        let everything = Faults { throttle: BTreeMap::from([("*".into(), 2.0)]), ..Faults::default() };
        let mut throttle = Throttle::default();
        assert!(throttle.admit(&everything, "ListCommands"));
        assert!(throttle.admit(&everything, "ListCommands"));
        assert!(!throttle.admit(&everything, "ListCommands"));
        assert!(throttle.admit(&everything, "GetCommandInvocation"), "buckets are per operation");
    }

    #[test]
    fn partial_updates_keep_other_settings() {
        let base = Faults { latency_ms: 5, ..Faults::default() };
        let merged = base.merged(&serde_json::json!({"error_rate": 0.5})).expect("valid");
        assert_eq!((merged.latency_ms, merged.error_rate), (5, 0.5));
        assert!(base.merged(&serde_json::json!({"error_rate": 5})).is_err());
        assert!(base.merged(&serde_json::json!({"bogus": 1})).is_err());
        assert!(base.merged(&serde_json::json!([1])).is_err());
    }

    #[test]
    fn validation() {
        let bad =
            Faults { throttle: BTreeMap::from([("X".into(), 0.0)]), error_rate: -1.0, ..Faults::default() };
        assert_eq!(bad.problems().len(), 2);
        assert!(Faults::default().problems().is_empty());
        let ids = Faults {
            unreadable_instances: BTreeSet::from([
                "i-0123456789abcdef0".into(),
                "not-an-id".into(),
                "i-1".into(),
            ]),
            ..Faults::default()
        };
        let problems = ids.problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"not-an-id\"")), "{problems:?}");
    }

    #[test]
    fn feed_errors_merge_and_validate() {
        let merged = Faults::default()
            .merged(&serde_json::json!({"feed_errors": ["redhat", "kev"]}))
            .expect("known feeds");
        assert!(merged.feed_fails("redhat") && merged.feed_fails("kev"));
        assert!(!merged.feed_fails("ubuntu"));
        let everything = merged.merged(&serde_json::json!({"feed_errors": ["*"]})).expect("wildcard");
        assert!(FEED_NAMES.iter().all(|name| everything.feed_fails(name)));
        let problems = Faults::default()
            .merged(&serde_json::json!({"feed_errors": ["windows", "redhat"]}))
            .expect_err("windows has no feed");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("\"windows\""), "{problems:?}");
    }

    #[test]
    fn unreadable_instances_merge_and_match() {
        let merged = Faults { error_rate: 0.1, ..Faults::default() }
            .merged(&serde_json::json!({"unreadable_instances": ["i-0123456789abcdef0", "i-01234567"]}))
            .expect("valid ids");
        assert_eq!(merged.error_rate, 0.1, "other settings are kept");
        assert_eq!(merged.unreadable_instances.len(), 2);
        assert!(merged.patches_unreadable(&serde_json::json!({"InstanceId": "i-01234567"})));
        assert!(merged.patches_unreadable(&serde_json::json!({
            "InstanceId": "i-0123456789abcdef0",
            "Filters": [{"Key": "State", "Values": ["Missing"]}],
            "NextToken": "x"
        })));
        assert!(!merged.patches_unreadable(&serde_json::json!({"InstanceId": "i-0fffffffffffffff0"})));
        assert!(!merged.patches_unreadable(&serde_json::json!({})));
        let cleared = merged.merged(&serde_json::json!({"unreadable_instances": []})).expect("valid");
        assert!(cleared.unreadable_instances.is_empty(), "a list replaces the previous one");
        let bad = Faults::default().merged(&serde_json::json!({"unreadable_instances": ["x"]}));
        assert!(bad.is_err());
    }
}
