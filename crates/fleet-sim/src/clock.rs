//! The simulated clock: real time multiplied by a scale, plus explicit jumps.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch, the simulator's unit of time.
pub type Millis = i64;

pub fn to_datetime(ms: Millis) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Epoch seconds with millisecond precision, the JSON 1.1 timestamp form.
pub fn epoch_seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// A clock that runs `scale` times faster than real time from an anchor, and can be pushed
/// forward. A scale of 0 freezes it, so only explicit advances move it (what tests want).
#[derive(Debug, Clone)]
pub struct SimClock {
    anchor_real: Instant,
    anchor_sim: Millis,
    scale: f64,
    last: Millis,
}

impl SimClock {
    pub fn new(start: Millis, scale: f64) -> SimClock {
        SimClock { anchor_real: Instant::now(), anchor_sim: start, scale: sanitize(scale), last: start }
    }

    pub fn now(&mut self) -> Millis {
        let elapsed = self.anchor_real.elapsed().as_secs_f64() * 1000.0 * self.scale;
        let now = self.anchor_sim.saturating_add(elapsed as i64);
        // Float rounding must never make time run backwards between two readings.
        self.last = self.last.max(now);
        self.last
    }

    pub fn advance(&mut self, by: Millis) {
        let now = self.now();
        self.anchor_sim = now.saturating_add(by.max(0));
        self.anchor_real = Instant::now();
        self.last = self.anchor_sim;
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    pub fn set_scale(&mut self, scale: f64) {
        let now = self.now();
        self.anchor_sim = now;
        self.anchor_real = Instant::now();
        self.scale = sanitize(scale);
    }
}

/// One simulated clock shared by every partition of a server, so two accounts never disagree on
/// "now" (a command sent in one and a scan in another are ordered as they happened).
#[derive(Debug, Clone)]
pub struct SharedClock(Arc<Mutex<SimClock>>);

impl SharedClock {
    pub fn new(clock: SimClock) -> SharedClock {
        SharedClock(Arc::new(Mutex::new(clock)))
    }

    fn lock(&self) -> MutexGuard<'_, SimClock> {
        // SimClock's methods cannot leave it half-updated, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn now(&self) -> Millis {
        self.lock().now()
    }

    pub fn advance(&self, by: Millis) {
        self.lock().advance(by);
    }

    pub fn scale(&self) -> f64 {
        self.lock().scale()
    }

    pub fn set_scale(&self, scale: f64) {
        self.lock().set_scale(scale);
    }
}

fn sanitize(scale: f64) -> f64 {
    if scale.is_finite() && scale >= 0.0 {
        scale
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_clock_moves_only_when_advanced() {
        let mut clock = SimClock::new(1_000, 0.0);
        assert_eq!(clock.now(), 1_000);
        clock.advance(5_000);
        assert_eq!(clock.now(), 6_000);
        clock.advance(-10);
        assert_eq!(clock.now(), 6_000, "negative advances are ignored");
    }

    #[test]
    fn running_clock_never_goes_backwards() {
        let mut clock = SimClock::new(0, 1000.0);
        let mut previous = clock.now();
        for _ in 0..1000 {
            let now = clock.now();
            assert!(now >= previous);
            previous = now;
        }
    }

    #[test]
    fn changing_scale_keeps_current_time() {
        let mut clock = SimClock::new(50_000, 0.0);
        clock.set_scale(60.0);
        assert!(clock.now() >= 50_000);
        clock.set_scale(0.0);
        let frozen = clock.now();
        assert_eq!(clock.now(), frozen);
        clock.set_scale(f64::NAN);
        assert_eq!(clock.scale(), 0.0);
    }

    #[test]
    fn timestamps_convert() {
        assert_eq!(epoch_seconds(1_500), 1.5);
        assert_eq!(to_datetime(0).timestamp(), 0);
    }
}
