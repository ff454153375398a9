//! Canary waves (issue 18, groundwork): how a task's instances are cut into growing waves, and
//! which of them may be in flight at once when a tag caps them (at most one node of a cluster
//! at a time). Pure decisions over positions in the rollout's order, tested with tables and
//! by simulation; the rollout does not use them yet.

use std::collections::HashMap;
use std::ops::Range;

use patchd_config::Limit;

/// Why a list of wave shares cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharesError(pub String);

impl std::fmt::Display for SharesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks cumulative wave shares such as `["1", "10%", "50%", "100%"]`: at least one, counts
/// growing among counts and percentages among percentages, and the last one `100%`, so that
/// no instance is left out of a rollout by the way its waves were written.
pub fn check_shares(shares: &[Limit]) -> Result<(), SharesError> {
    let Some(last) = shares.last() else {
        return Err(SharesError("a rollout needs at least one wave".into()));
    };
    if *last != Limit::Percent(100) {
        return Err(SharesError(format!(
            "the last wave must be `100%`, not `{last}`: every instance is patched"
        )));
    }
    let (mut count, mut percent) = (0u32, 0u8);
    for share in shares {
        let grows = match *share {
            Limit::Count(n) => std::mem::replace(&mut count, n) < n,
            Limit::Percent(p) => std::mem::replace(&mut percent, p) < p,
        };
        if !grows {
            return Err(SharesError(format!(
                "wave share `{share}` does not grow: shares are cumulative, each larger than the one before"
            )));
        }
    }
    Ok(())
}

/// The positions each wave covers, for `targets` instances in rollout order: wave `i` is
/// `end(i-1)..end(i)`. A share is cumulative and rounds up, so a 1% canary of a small fleet
/// is still one instance. Every wave takes at least one instance more than the one before
/// while any remain, a wave with nothing left to take is dropped, and the last wave ends at
/// `targets` whatever the shares say.
pub fn plan(targets: usize, shares: &[Limit]) -> Vec<Range<usize>> {
    let mut waves = Vec::new();
    let mut start = 0;
    for (i, share) in shares.iter().enumerate() {
        if start == targets {
            break;
        }
        let wanted = match *share {
            Limit::Count(n) => n as usize,
            Limit::Percent(p) => (targets * usize::from(p)).div_ceil(100),
        };
        let end = if i + 1 == shares.len() { targets } else { wanted.clamp(start + 1, targets) };
        waves.push(start..end);
        start = end;
    }
    if start < targets {
        waves.push(start..targets);
    }
    waves
}

/// Which of `pending` (tag values, in rollout order; `None` for an instance without the tag)
/// may start now, given the tag values of those `in_flight`, `slots` free places under the
/// concurrency limit, and at most `max_per_value` in flight per tag value. An instance without
/// the tag is not capped. Returns positions in `pending`, in order: an instance held back by
/// the cap does not hold back the ones after it.
pub fn releasable(
    pending: &[Option<&str>],
    in_flight: &[Option<&str>],
    slots: usize,
    max_per_value: usize,
) -> Vec<usize> {
    let mut busy: HashMap<&str, usize> = HashMap::new();
    for value in in_flight.iter().flatten() {
        *busy.entry(value).or_default() += 1;
    }
    let mut released = Vec::new();
    for (position, value) in pending.iter().enumerate() {
        if released.len() == slots {
            break;
        }
        match value {
            Some(value) => {
                let n = busy.entry(value).or_default();
                if *n < max_per_value {
                    *n += 1;
                    released.push(position);
                }
            }
            None => released.push(position),
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(text: &[&str]) -> Vec<Limit> {
        text.iter()
            .map(|s| match s.strip_suffix('%') {
                Some(p) => Limit::Percent(p.parse().unwrap()),
                None => Limit::Count(s.parse().unwrap()),
            })
            .collect()
    }

    /// Each wave as (first position, one past the last).
    fn bounds(waves: Vec<Range<usize>>) -> Vec<(usize, usize)> {
        waves.into_iter().map(|w| (w.start, w.end)).collect()
    }

    #[test]
    fn waves_grow_round_up_and_end_with_everyone() {
        let canary = shares(&["1", "10%", "50%", "100%"]);
        let cases: [(usize, &[(usize, usize)]); 5] = [
            (200, &[(0, 1), (1, 20), (20, 100), (100, 200)]),
            (10, &[(0, 1), (1, 2), (2, 5), (5, 10)]),
            (3, &[(0, 1), (1, 2), (2, 3)]),
            (1, &[(0, 1)]),
            (0, &[]),
        ];
        for (targets, expected) in cases {
            assert_eq!(bounds(plan(targets, &canary)), expected, "{targets} instances");
        }
        assert_eq!(bounds(plan(7, &shares(&["100%"]))), [(0, 7)]);
        assert_eq!(
            bounds(plan(5, &shares(&["10", "100%"]))),
            [(0, 5)],
            "a first wave larger than the fleet takes it all"
        );
    }

    #[test]
    fn every_instance_is_in_exactly_one_wave() {
        for targets in 0..120 {
            for text in [&["1", "10%", "50%", "100%"][..], &["5%", "25%", "100%"], &["2", "3", "100%"]] {
                let waves = plan(targets, &shares(text));
                let covered: Vec<usize> = waves.iter().flat_map(Clone::clone).collect();
                assert_eq!(covered, (0..targets).collect::<Vec<_>>(), "{targets} with {text:?}");
                assert!(waves.iter().all(|w| !w.is_empty()), "{targets} with {text:?}: {waves:?}");
            }
        }
    }

    #[test]
    fn shares_must_grow_and_end_at_everyone() {
        assert_eq!(check_shares(&shares(&["1", "10%", "50%", "100%"])), Ok(()));
        let refused = [
            (&[][..], "at least one wave"),
            (&["1", "50%"], "must be `100%`"),
            (&["10%", "10%", "100%"], "does not grow"),
            (&["5", "2", "100%"], "does not grow"),
        ];
        for (text, why) in refused {
            let error = check_shares(&shares(text)).unwrap_err();
            assert!(error.0.contains(why), "{text:?}: {error}");
        }
    }

    #[test]
    fn the_cap_holds_back_a_busy_value_but_not_the_instances_after_it() {
        let pending = [Some("db-a"), Some("db-a"), Some("db-b"), None, Some("db-c")];
        assert_eq!(releasable(&pending, &[], 10, 1), [0, 2, 3, 4]);
        assert_eq!(releasable(&pending, &[Some("db-b")], 10, 1), [0, 3, 4]);
        assert_eq!(releasable(&pending, &[], 2, 1), [0, 2], "within the free slots");
        assert_eq!(releasable(&pending, &[], 10, 2), [0, 1, 2, 3, 4]);
    }

    /// A rollout simulated to the end, one instance finishing at a time: the cap is never
    /// exceeded, the rollout never stalls, and everyone is patched.
    #[test]
    fn a_capped_rollout_never_exceeds_the_cap_and_finishes() {
        let clusters: Vec<Option<String>> =
            (0..40).map(|i| if i % 7 == 0 { None } else { Some(format!("cluster-{}", i % 5)) }).collect();
        for (slots, cap) in [(1, 1), (3, 1), (10, 1), (10, 2)] {
            let mut pending: Vec<usize> = (0..clusters.len()).collect();
            let mut in_flight: Vec<usize> = Vec::new();
            let mut done = 0;
            while done < clusters.len() {
                let values: Vec<Option<&str>> = pending.iter().map(|&i| clusters[i].as_deref()).collect();
                let busy: Vec<Option<&str>> = in_flight.iter().map(|&i| clusters[i].as_deref()).collect();
                let started = releasable(&values, &busy, slots - in_flight.len(), cap);
                for position in started.iter().rev() {
                    in_flight.push(pending.remove(*position));
                }
                let mut per_value: HashMap<&str, usize> = HashMap::new();
                for value in in_flight.iter().filter_map(|&i| clusters[i].as_deref()) {
                    *per_value.entry(value).or_default() += 1;
                }
                assert!(per_value.values().all(|n| *n <= cap), "cap {cap} exceeded: {per_value:?}");
                assert!(!in_flight.is_empty(), "stalled with {} pending", pending.len());
                in_flight.remove(0);
                done += 1;
            }
            assert!(pending.is_empty() && in_flight.is_empty());
        }
    }
}
