//! The finding semantics of a compliance sync, as a pure function: given what the store holds
//! for some instances and what SSM now says about them, the rows to write. No I/O here, so the
//! rules are tested as tables and both backends apply exactly the same ones.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::types::{micros, InstanceScan, PatchObservation, PatchState, StateCounts};

/// A finding as stored before the sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PriorFinding {
    pub patch_ref: i64,
    pub state: PatchState,
    pub last_seen: DateTime<Utc>,
    pub installed_at: Option<DateTime<Utc>>,
}

/// Prior findings of the synced instances: instance ref -> patch id -> finding.
pub(crate) type Prior = HashMap<i64, HashMap<String, PriorFinding>>;

/// A finding row to insert or update. `patch_ref` is None for a patch the store may not know
/// yet; it is resolved after the patches are upserted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FindingWrite<'a> {
    pub instance_ref: i64,
    pub patch_id: &'a str,
    pub patch_ref: Option<i64>,
    pub state: PatchState,
    /// Only written when the row is inserted; an update keeps the stored value.
    pub first_seen_missing: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub installed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TransitionWrite<'a> {
    pub instance_ref: i64,
    pub patch_id: &'a str,
    pub patch_ref: Option<i64>,
    pub from: Option<PatchState>,
    pub to: PatchState,
    pub at: DateTime<Utc>,
    pub command_id: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub(crate) struct SummaryWrite<'a> {
    pub instance_ref: i64,
    pub scan: &'a InstanceScan<'a>,
    pub scanned_at: DateTime<Utc>,
    pub counts: StateCounts,
}

/// Patch metadata merged over every observation of the sync, and the earliest instant the
/// sync saw the patch open a finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatchWrite<'a> {
    pub patch_id: &'a str,
    pub title: Option<&'a str>,
    pub classification: Option<&'a str>,
    pub severity: Option<&'a str>,
    pub cve_ids: BTreeSet<&'a str>,
    pub first_seen_missing: Option<DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub(crate) struct Plan<'a> {
    pub findings: Vec<FindingWrite<'a>>,
    pub transitions: Vec<TransitionWrite<'a>>,
    pub summaries: Vec<SummaryWrite<'a>>,
    pub patches: Vec<PatchWrite<'a>>,
    pub instances: usize,
    pub stale_instances: usize,
    pub opened: usize,
    pub remediated: usize,
    pub reopened: usize,
}

/// One scan per instance: a sync that lists an instance twice keeps its latest scan (the later
/// one in the list on a tie), so the outcome never depends on hash order.
pub(crate) fn dedup_scans<'s, 'a>(scans: &'s [InstanceScan<'a>]) -> Vec<&'s InstanceScan<'a>> {
    let mut latest: HashMap<_, usize> = HashMap::with_capacity(scans.len());
    for (i, scan) in scans.iter().enumerate() {
        latest
            .entry(scan.instance)
            .and_modify(|j| {
                if scans[*j].observed_at <= scan.observed_at {
                    *j = i;
                }
            })
            .or_insert(i);
    }
    let mut keep: Vec<usize> = latest.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &scans[i]).collect()
}

/// The rows a sync writes. `scans[i]` belongs to instance `instance_refs[i]`; `scanned_at` holds
/// the time of each instance's latest recorded scan.
pub(crate) fn plan<'a>(
    scans: &[&'a InstanceScan<'a>],
    instance_refs: &[i64],
    scanned_at: &HashMap<i64, DateTime<Utc>>,
    prior: &Prior,
) -> Plan<'a> {
    let mut plan = Plan::default();
    let mut patches: HashMap<&'a str, PatchWrite<'a>> = HashMap::new();
    let no_findings = HashMap::new();

    for (&scan, &instance_ref) in scans.iter().zip(instance_refs) {
        let observed_at = micros(scan.observed_at);
        if scanned_at.get(&instance_ref).is_some_and(|&latest| observed_at < latest) {
            plan.stale_instances += 1;
            continue;
        }
        plan.instances += 1;
        let known = prior.get(&instance_ref).unwrap_or(&no_findings);
        let mut counts = StateCounts::default();

        for observation in dedup_patches(scan.patches) {
            counts.add(observation.state);
            let state = observation.state;
            let before = known.get(observation.patch_id);
            let mut row = FindingWrite {
                instance_ref,
                patch_id: observation.patch_id,
                patch_ref: before.map(|f| f.patch_ref),
                state,
                first_seen_missing: observed_at,
                last_seen: observed_at,
                installed_at: None,
            };
            let transition = |from| TransitionWrite {
                instance_ref,
                patch_id: observation.patch_id,
                patch_ref: before.map(|f| f.patch_ref),
                from,
                to: state,
                at: observed_at,
                command_id: scan.command_id,
            };
            match before {
                // Not applicable: never a finding. An open finding whose patch turns not
                // applicable is left as it was; its last_seen stops advancing.
                _ if state == PatchState::NotApplicable => continue,
                // Installed (or rejected) at first sight: never seen missing, not a finding.
                None if !state.opens_finding() => continue,
                None => {
                    plan.opened += 1;
                    plan.transitions.push(transition(None));
                    let patch = merge_patch(&mut patches, observation);
                    patch.first_seen_missing =
                        Some(patch.first_seen_missing.map_or(observed_at, |t| t.min(observed_at)));
                }
                Some(f) if f.state == state => {
                    if observed_at <= f.last_seen {
                        continue;
                    }
                    row.installed_at = f.installed_at;
                    merge_patch(&mut patches, observation);
                }
                Some(f) => {
                    plan.transitions.push(transition(Some(f.state)));
                    row.installed_at = match (f.installed_at, state.remediates()) {
                        (None, true) => {
                            plan.remediated += 1;
                            Some(remediation_time(f, observed_at, observation.installed_time.map(micros)))
                        }
                        (Some(at), true) => Some(at),
                        (Some(_), false) => {
                            plan.reopened += 1;
                            None
                        }
                        (None, false) => None,
                    };
                    row.last_seen = observed_at.max(f.last_seen);
                    merge_patch(&mut patches, observation);
                }
            }
            plan.findings.push(row);
        }
        let counts = scan.counts.unwrap_or(counts);
        plan.summaries.push(SummaryWrite { instance_ref, scan, scanned_at: observed_at, counts });
    }
    let mut patches: Vec<PatchWrite<'a>> = patches.into_values().collect();
    patches.sort_unstable_by_key(|p| p.patch_id);
    plan.patches = patches;
    plan
}

/// When an open finding was remediated: SSM's InstalledTime, unless it contradicts a scan that
/// saw the patch still open. That happens after INSTALLED_PENDING_REBOOT: InstalledTime is the
/// install, not the reboot that made it effective, so the confirming scan's time is used.
fn remediation_time(
    before: &PriorFinding,
    observed_at: DateTime<Utc>,
    installed_time: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    match installed_time {
        Some(t) if t >= before.last_seen && t <= observed_at => t,
        _ => observed_at,
    }
}

/// One entry per patch id, the last one listed winning: SSM should not repeat a patch, and if
/// it does the outcome must not depend on anything but the input order.
fn dedup_patches<'s, 'a>(
    patches: &'s [PatchObservation<'a>],
) -> impl Iterator<Item = &'s PatchObservation<'a>> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(patches.len());
    for (i, p) in patches.iter().enumerate() {
        last.insert(p.patch_id, i);
    }
    patches.iter().enumerate().filter(move |(i, p)| last.get(p.patch_id) == Some(i)).map(|(_, p)| p)
}

fn merge_patch<'m, 'a>(
    patches: &'m mut HashMap<&'a str, PatchWrite<'a>>,
    o: &PatchObservation<'a>,
) -> &'m mut PatchWrite<'a> {
    let patch = patches.entry(o.patch_id).or_insert_with(|| PatchWrite {
        patch_id: o.patch_id,
        title: None,
        classification: None,
        severity: None,
        cve_ids: BTreeSet::new(),
        first_seen_missing: None,
    });
    patch.title = patch.title.or(o.title);
    patch.classification = patch.classification.or(o.classification);
    patch.severity = patch.severity.or(o.severity);
    patch.cve_ids.extend(o.cve_ids.iter().map(String::as_str));
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::InstanceKey;
    use chrono::TimeZone;

    const KEY: InstanceKey<'static> = InstanceKey { account: "1", region: "eu-west-1", instance_id: "i-1" };

    fn t(day: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, day, 0, 0, 0).unwrap()
    }

    fn obs(patch_id: &str, state: PatchState, installed: Option<DateTime<Utc>>) -> PatchObservation<'_> {
        PatchObservation {
            patch_id,
            title: None,
            classification: None,
            severity: None,
            cve_ids: &[],
            state,
            installed_time: installed,
        }
    }

    fn scan<'a>(at: DateTime<Utc>, patches: &'a [PatchObservation<'a>]) -> InstanceScan<'a> {
        InstanceScan {
            command_id: Some("cmd"),
            operation: None,
            operation_start: None,
            operation_end: None,
            ..InstanceScan::scan_at(KEY, at, patches)
        }
    }

    fn prior(state: PatchState, last_seen: DateTime<Utc>, installed_at: Option<DateTime<Utc>>) -> Prior {
        let finding = PriorFinding { patch_ref: 7, state, last_seen, installed_at };
        HashMap::from([(1, HashMap::from([("p".to_string(), finding)]))])
    }

    /// (transitions as (from, to), the written finding's (state, installed_at), remediated, reopened)
    type Outcome =
        (Vec<(Option<PatchState>, PatchState)>, Option<(PatchState, Option<DateTime<Utc>>)>, usize, usize);

    fn check(before: &Prior, observation: PatchObservation<'_>, at: DateTime<Utc>, expected: Outcome) {
        let observations = [observation];
        let s = scan(at, &observations);
        let p = plan(&[&s], &[1], &HashMap::new(), before);
        let transitions: Vec<_> = p.transitions.iter().map(|t| (t.from, t.to)).collect();
        let finding = p.findings.first().map(|f| (f.state, f.installed_at));
        assert_eq!(
            (transitions, finding, p.remediated, p.reopened),
            expected,
            "{observation:?} over {before:?}"
        );
    }

    #[test]
    fn finding_rules() {
        use PatchState::*;
        let none = Prior::new();
        // First sight.
        check(&none, obs("p", Missing, None), t(2), (vec![(None, Missing)], Some((Missing, None)), 0, 0));
        check(&none, obs("p", Failed, None), t(2), (vec![(None, Failed)], Some((Failed, None)), 0, 0));
        let pending = InstalledPendingReboot;
        check(
            &none,
            obs("p", pending, Some(t(1))),
            t(2),
            (vec![(None, pending)], Some((pending, None)), 0, 0),
        );
        check(&none, obs("p", Installed, Some(t(1))), t(2), (vec![], None, 0, 0));
        check(&none, obs("p", InstalledOther, None), t(2), (vec![], None, 0, 0));
        check(&none, obs("p", InstalledRejected, None), t(2), (vec![], None, 0, 0));
        check(&none, obs("p", NotApplicable, None), t(2), (vec![], None, 0, 0));

        // Remediation: SSM's InstalledTime when it falls after the last open sighting.
        let open = prior(Missing, t(2), None);
        check(
            &open,
            obs("p", Installed, Some(t(3))),
            t(4),
            (vec![(Some(Missing), Installed)], Some((Installed, Some(t(3)))), 1, 0),
        );
        check(
            &open,
            obs("p", InstalledOther, None),
            t(4),
            (vec![(Some(Missing), InstalledOther)], Some((InstalledOther, Some(t(4)))), 1, 0),
        );
        // An InstalledTime before a scan that still saw it open: the confirming scan's time.
        let rebooting = prior(pending, t(3), None);
        check(
            &rebooting,
            obs("p", Installed, Some(t(2))),
            t(5),
            (vec![(Some(pending), Installed)], Some((Installed, Some(t(5)))), 1, 0),
        );
        // Pending reboot stays open.
        check(
            &open,
            obs("p", pending, Some(t(3))),
            t(4),
            (vec![(Some(Missing), pending)], Some((pending, None)), 0, 0),
        );
        // Installed but rejected by the baseline stays open.
        check(
            &open,
            obs("p", InstalledRejected, None),
            t(4),
            (vec![(Some(Missing), InstalledRejected)], Some((InstalledRejected, None)), 0, 0),
        );
        // Same state later: last_seen moves, nothing else.
        check(&open, obs("p", Missing, None), t(4), (vec![], Some((Missing, None)), 0, 0));
        // Same state, same instant (a re-sync): nothing at all.
        check(&open, obs("p", Missing, None), t(2), (vec![], None, 0, 0));
        // Not applicable any more: left alone.
        check(&open, obs("p", NotApplicable, None), t(4), (vec![], None, 0, 0));

        // Remediated findings.
        let fixed = prior(Installed, t(3), Some(t(3)));
        check(
            &fixed,
            obs("p", Missing, None),
            t(4),
            (vec![(Some(Installed), Missing)], Some((Missing, None)), 0, 1),
        );
        check(
            &fixed,
            obs("p", InstalledOther, None),
            t(4),
            (vec![(Some(Installed), InstalledOther)], Some((InstalledOther, Some(t(3)))), 0, 0),
        );
        check(&fixed, obs("p", Installed, Some(t(3))), t(3), (vec![], None, 0, 0));
    }

    #[test]
    fn stale_scans_are_ignored() {
        let observations = [obs("p", PatchState::Missing, None)];
        let s = scan(t(2), &observations);
        let p = plan(&[&s], &[1], &HashMap::from([(1, t(3))]), &Prior::new());
        assert_eq!((p.instances, p.stale_instances, p.findings.len(), p.summaries.len()), (0, 1, 0, 0));
        let p = plan(&[&s], &[1], &HashMap::from([(1, t(2))]), &Prior::new());
        assert_eq!(
            (p.instances, p.stale_instances, p.findings.len()),
            (1, 0, 1),
            "an equal instant is a re-sync"
        );
    }

    #[test]
    fn counts_patch_metadata_and_first_seen() {
        let cves = ["CVE-2026-2".to_string(), "CVE-2026-1".to_string()];
        let observations = [
            PatchObservation { title: Some("kernel"), cve_ids: &cves, ..obs("k", PatchState::Missing, None) },
            obs("o", PatchState::Installed, Some(t(1))),
            obs("n", PatchState::NotApplicable, None),
            obs("k", PatchState::Missing, None),
        ];
        let s = scan(t(2), &observations);
        let p = plan(&[&s], &[1], &HashMap::new(), &Prior::new());
        let counts = p.summaries[0].counts;
        assert_eq!(
            (counts.missing, counts.installed, counts.not_applicable),
            (1, 1, 1),
            "duplicates count once"
        );
        assert_eq!(p.patches.len(), 1, "only finding patches are written");
        assert_eq!(p.patches[0].first_seen_missing, Some(t(2)));
        assert_eq!(p.patches[0].title, None, "the last entry of a repeated patch wins");
    }

    #[test]
    fn repeated_instances_keep_their_latest_scan() {
        let a = scan(t(3), &[]);
        let b = scan(t(2), &[]);
        let c = scan(t(3), &[]);
        let scans = [a, b, c];
        let kept = dedup_scans(&scans);
        assert_eq!(kept.len(), 1);
        assert!(std::ptr::eq(kept[0], &scans[2]), "the later of two equal scans wins");
    }
}
