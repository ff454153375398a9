//! Canary waves: how a task's instances are cut into growing waves, and how a wave is cut into
//! batches that respect a tag cap (at most one node of a cluster at a time). Pure decisions
//! over positions in the rollout's order, tested with tables and by simulation; the rollout
//! stores what they decide as its plan.

use std::collections::HashMap;
use std::ops::Range;

use patchd_config::Limit;

pub use patchd_config::{check_wave_shares as check_shares, SharesError};

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

/// The batches of a rollout, each with its wave (from 1): `targets` in order, cut into waves by
/// `shares` (one wave when there are none), each wave cut into batches of at most `size`
/// instances. With `cap = Some((tag_values, max))`, a batch never holds more than `max` instances
/// of one tag value: each instance goes to the first batch of its wave with room for it, so a
/// wave of three clusters capped at one per cluster becomes batches of three, one node of each.
pub fn cut(
    targets: &[String],
    shares: &[Limit],
    size: usize,
    cap: Option<(&HashMap<String, String>, usize)>,
) -> Vec<(u32, Vec<String>)> {
    let size = size.max(1);
    let ranges = if shares.is_empty() {
        plan(targets.len(), &[Limit::Percent(100)])
    } else {
        plan(targets.len(), shares)
    };
    let mut batches = Vec::new();
    for (index, range) in ranges.into_iter().enumerate() {
        let wave = index as u32 + 1;
        let mut open: Vec<(Vec<String>, HashMap<&str, usize>)> = Vec::new();
        for instance in &targets[range] {
            let value = cap.and_then(|(values, _)| values.get(instance)).map(String::as_str);
            let max = cap.map_or(usize::MAX, |(_, max)| max.max(1));
            let fits = |(members, counts): &(Vec<String>, HashMap<&str, usize>)| {
                members.len() < size && value.is_none_or(|v| counts.get(v).copied().unwrap_or(0) < max)
            };
            let slot = match open.iter().position(fits) {
                Some(slot) => slot,
                None => {
                    open.push((Vec::new(), HashMap::new()));
                    open.len() - 1
                }
            };
            let (members, counts) = &mut open[slot];
            members.push(instance.clone());
            if let Some(value) = value {
                *counts.entry(value).or_default() += 1;
            }
        }
        batches.extend(open.into_iter().map(|(members, _)| (wave, members)));
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_waves_and_respect_the_tag_cap() {
        let ids: Vec<String> = (0..9).map(|i| format!("i-{i}")).collect();
        let cluster = |id: &str| -> &'static str {
            let n: usize = id[2..].parse().unwrap();
            ["a", "b", "c"][n % 3]
        };
        let clusters: HashMap<String, String> =
            ids.iter().map(|id| (id.clone(), cluster(id).to_string())).collect();
        let cut_with = |text: &[&str], size, cap: Option<usize>| {
            cut(&ids, &shares(text), size, cap.map(|max| (&clusters, max)))
        };
        // No waves, no cap: plain chunks, all in wave 1.
        let plain = cut_with(&[], 4, None);
        assert_eq!(plain.iter().map(|(w, b)| (*w, b.len())).collect::<Vec<_>>(), [(1, 4), (1, 4), (1, 1)]);
        // A canary of one, then the rest, capped at one per cluster: every batch holds distinct
        // clusters, every instance is in exactly one batch, waves never go back.
        let capped = cut_with(&["1", "100%"], 50, Some(1));
        assert_eq!(capped[0], (1, vec!["i-0".to_string()]));
        let mut seen: Vec<&String> = Vec::new();
        let mut last_wave = 1;
        for (wave, batch) in &capped {
            assert!(*wave >= last_wave);
            last_wave = *wave;
            let mut clusters: Vec<_> = batch.iter().map(|id| cluster(id)).collect();
            clusters.sort();
            clusters.dedup();
            assert_eq!(clusters.len(), batch.len(), "{batch:?} has two nodes of one cluster");
            seen.extend(batch);
        }
        seen.sort();
        assert_eq!(seen.len(), ids.len());
        assert_eq!(capped.iter().filter(|(w, _)| *w == 2).count(), 3, "8 nodes of 3 clusters: 3 batches");
        // An instance without the tag is not capped.
        assert_eq!(cut(&ids, &[], 50, Some((&HashMap::new(), 1))).len(), 1);
    }

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
}
