//! Client-side pacing of SSM's Patch Manager reads, one rate per operation, that adapts to
//! throttling.
//!
//! Why not only the SDK's `adaptive` retry mode: its token bucket is one per client, so
//! throttling of DescribeInstancePatches slows SendCommand and every other call the client
//! makes, and it still gives up after `max_attempts`, leaving the caller with an error. Patch
//! Manager's quotas are per operation, so the rates here are too; the caller decides how long
//! to keep retrying (the compliance sync retries reads in rounds, see patchd-daemon's sync).
//!
//! # The rule, judged once a second
//!
//! Each operation's attempts are counted in windows of a second (a window with fewer than
//! [`MIN_SAMPLE`] attempts is merged into the next, too few to judge).
//! - A window with [`CONGESTED_SHARE`] or more of its attempts throttled cuts the rate to
//!   [`CUT`] of what it was (of the attempts actually made, the first time).
//! - The window after a cut judges it. Throttling that comes from the request rate (a quota:
//!   a token bucket per operation, as AWS applies them) leaves the successes per second where
//!   they were when the rate drops, so the cut stays. Throttling that does not depend on the
//!   rate (a share of calls refused whatever the rate) loses successes in proportion: the cut
//!   is undone and no new cut is tried for [`HOLD`], so that such throttling cannot starve
//!   the reads; the caller's retries handle it instead.
//! - A quiet window grows the rate by [`GROWTH`]; once it passes [`UNPACED_ABOVE`] pacing ends.
//!
//! The rates learn from every attempt the SDK makes (its own retries included): the call
//! counter interceptor reports each one to [`Pacer::observe`]. Callers that want pacing await
//! [`Pacer::admit`] before each request they send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The slowest a paced operation goes: a quota lower than this is a misconfigured account.
const MIN_RATE: f64 = 1.0;
/// Above this rate (requests a second) pacing ends: no Patch Manager read quota is near it.
const UNPACED_ABOVE: f64 = 200.0;
/// Attempts a window needs before it is judged.
const MIN_SAMPLE: u32 = 5;
/// The throttled share of a window's attempts that counts as congestion.
const CONGESTED_SHARE: f64 = 0.1;
/// A cut keeps this share of the rate.
const CUT: f64 = 0.7;
/// A cut after which the successes per second fell below this share of what they were did
/// not relieve anything: the throttling does not depend on the rate.
const CUT_COST: f64 = 0.75;
/// How long cuts are not tried again after one was undone.
const HOLD: Duration = Duration::from_secs(30);
/// A quiet window grows the rate by this factor.
const GROWTH: f64 = 1.1;
const WINDOW: Duration = Duration::from_secs(1);

/// What one operation's pacing looks like now.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq)]
struct PaceState {
    /// Requests a second the operation is held to; None while unpaced.
    pub rate: Option<f64>,
    /// Throttled attempts seen since start.
    pub throttled: u64,
}

/// Per-operation adaptive rates, shared by clones of [`AwsClients`](crate::AwsClients).
#[derive(Debug, Clone, Default)]
pub struct Pacer(Arc<Mutex<HashMap<String, Rate>>>);

#[derive(Debug, Clone)]
struct Rate {
    limit: Option<f64>,
    /// The earliest instant the next paced request may go.
    next_slot: Instant,
    window_start: Instant,
    attempts: u32,
    throttled_in_window: u32,
    /// The last cut, until the window after it has judged it.
    pending_cut: Option<Cut>,
    hold_until: Option<Instant>,
    throttled: u64,
}

#[derive(Debug, Clone, Copy)]
struct Cut {
    limit_before: Option<f64>,
    successes_per_second_before: f64,
}

impl Rate {
    fn new(now: Instant) -> Rate {
        Rate {
            limit: None,
            next_slot: now,
            window_start: now,
            attempts: 0,
            throttled_in_window: 0,
            pending_cut: None,
            hold_until: None,
            throttled: 0,
        }
    }

    /// Judges the current window if it is over.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW && self.attempts >= MIN_SAMPLE {
            self.judge(elapsed.as_secs_f64(), now);
            self.window_start = now;
            self.attempts = 0;
            self.throttled_in_window = 0;
        }
    }

    fn observe(&mut self, throttled: bool, now: Instant) {
        self.roll(now);
        self.attempts = self.attempts.saturating_add(1);
        if throttled {
            self.throttled += 1;
            self.throttled_in_window = self.throttled_in_window.saturating_add(1);
        }
    }

    /// Judges the window that just ended: `seconds` long, with `self.attempts` attempts.
    fn judge(&mut self, seconds: f64, now: Instant) {
        let attempts = f64::from(self.attempts);
        let throttled = f64::from(self.throttled_in_window);
        let successes_per_second = (attempts - throttled) / seconds;
        if let Some(cut) = self.pending_cut.take() {
            if successes_per_second < CUT_COST * cut.successes_per_second_before {
                self.limit = cut.limit_before;
                self.hold_until = Some(now + HOLD);
                return;
            }
        }
        let held = self.hold_until.is_some_and(|until| now < until);
        if throttled / attempts >= CONGESTED_SHARE {
            if held {
                return;
            }
            let current = self.limit.unwrap_or(attempts / seconds);
            self.pending_cut =
                Some(Cut { limit_before: self.limit, successes_per_second_before: successes_per_second });
            self.limit = Some((current * CUT).max(MIN_RATE));
        } else if let Some(limit) = self.limit {
            let grown = limit * GROWTH;
            self.limit = (grown <= UNPACED_ABOVE).then_some(grown);
        }
    }

    /// How long the caller waits before sending, and books its slot.
    fn admit(&mut self, now: Instant) -> Duration {
        self.roll(now);
        let Some(limit) = self.limit else {
            self.next_slot = now;
            return Duration::ZERO;
        };
        let slot = self.next_slot.max(now);
        self.next_slot = slot + Duration::from_secs_f64(1.0 / limit);
        slot - now
    }
}

impl Pacer {
    fn with_rate<T>(&self, operation: &str, f: impl FnOnce(&mut Rate) -> T) -> T {
        let mut rates = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let rate = rates.entry(operation.to_string()).or_insert_with(|| Rate::new(Instant::now()));
        f(rate)
    }

    /// Waits for `operation`'s next slot; returns at once while it is unpaced.
    pub async fn admit(&self, operation: &str) {
        let wait = self.with_rate(operation, |rate| rate.admit(Instant::now()));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// One completed attempt of `operation`, throttled or not.
    pub fn observe(&self, operation: &str, throttled: bool) {
        self.observe_at(operation, throttled, Instant::now());
    }

    fn observe_at(&self, operation: &str, throttled: bool, now: Instant) {
        self.with_rate(operation, |rate| rate.observe(throttled, now));
    }

    #[cfg(test)]
    fn state(&self, operation: &str) -> PaceState {
        self.with_rate(operation, |rate| PaceState { rate: rate.limit, throttled: rate.throttled })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds one second of `attempts` attempts of which `throttled` were refused, starting at
    /// second `second`, then one attempt a second later so that the window is judged.
    fn second(rate: &mut Rate, t0: Instant, second: u64, attempts: u32, throttled: u32) {
        let start = t0 + Duration::from_secs(second);
        for i in 0..attempts {
            let at = start + Duration::from_secs_f64(f64::from(i) / f64::from(attempts));
            rate.observe(i < throttled, at);
        }
    }

    /// A quota of `quota` requests a second: what is sent beyond it is throttled.
    fn against_quota(rate: &mut Rate, t0: Instant, seconds: u64, offered: u32, quota: u32) {
        for s in 0..seconds {
            rate.roll(t0 + Duration::from_secs(s));
            let sent = rate.limit.map_or(offered, |l| (l.round() as u32).min(offered));
            second(rate, t0, s, sent, sent.saturating_sub(quota));
        }
    }

    #[test]
    fn a_quota_brings_the_rate_down_to_about_the_quota() {
        let t0 = Instant::now();
        let mut rate = Rate::new(t0);
        against_quota(&mut rate, t0, 40, 500, 20);
        let limit = rate.limit.expect("paced");
        assert!((14.0..=26.0).contains(&limit), "settled at {limit}");
        assert!(rate.throttled > 0);
    }

    #[test]
    fn throttling_whatever_the_rate_is_not_chased_down() {
        let t0 = Instant::now();
        let mut rate = Rate::new(t0);
        // 30% refused at random, whatever is sent: every cut costs successes and is undone.
        for s in 0..120 {
            rate.roll(t0 + Duration::from_secs(s));
            let sent = rate.limit.map_or(200, |l| (l.round() as u32).min(200));
            second(&mut rate, t0, s, sent, sent * 3 / 10);
        }
        assert!(rate.limit.is_none_or(|l| l >= 100.0), "starved to {:?}", rate.limit);
    }

    #[test]
    fn quiet_seconds_grow_the_rate_until_pacing_ends() {
        let t0 = Instant::now();
        let mut rate = Rate::new(t0);
        rate.limit = Some(10.0);
        let mut s = 0;
        while rate.limit.is_some() {
            second(&mut rate, t0, s, 10, 0);
            s += 1;
            assert!(s < 1_000, "pacing never ends");
        }
        assert!(s > 20, "growth is gradual: {s} seconds");
    }

    #[test]
    fn too_few_attempts_are_not_judged() {
        let t0 = Instant::now();
        let mut rate = Rate::new(t0);
        for s in 0..10 {
            rate.observe(true, t0 + Duration::from_secs(s * 2));
        }
        // Five attempts accumulate over several seconds before a judgment, then it is one cut.
        assert_eq!(rate.limit, Some(MIN_RATE));
        assert_eq!(rate.throttled, 10);
    }

    #[test]
    fn paced_requests_get_evenly_spaced_slots() {
        let t0 = Instant::now();
        let mut rate = Rate::new(t0);
        assert_eq!(rate.admit(t0), Duration::ZERO, "unpaced");
        rate.limit = Some(4.0);
        assert_eq!(rate.admit(t0), Duration::ZERO);
        assert_eq!(rate.admit(t0), Duration::from_millis(250));
        assert_eq!(rate.admit(t0), Duration::from_millis(500));
        // A caller that comes after its slot has passed goes at once.
        assert_eq!(rate.admit(t0 + Duration::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn operations_are_paced_apart() {
        let pacer = Pacer::default();
        let t0 = Instant::now();
        for s in 0..3 {
            for i in 0..10 {
                pacer.observe_at(
                    "DescribeInstancePatches",
                    true,
                    t0 + Duration::from_millis(s * 1_000 + i * 90),
                );
            }
        }
        assert!(pacer.state("DescribeInstancePatches").rate.is_some());
        assert_eq!(pacer.state("SendCommand"), PaceState { rate: None, throttled: 0 });
    }
}
