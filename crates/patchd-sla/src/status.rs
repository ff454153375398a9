//! The SLA clock, the due date, and a finding's status at an instant.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use patchd_config::{Exception, ExceptionScope, RiskRank, SlaPolicy};
use serde::Serialize;

/// Where the SLA clock's start comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClockSource {
    /// SSM's DescribeAvailablePatches (Amazon Linux 1/2, Windows).
    Ssm,
    /// An imported vendor advisory (updateinfo.xml, CSV).
    Advisory,
    /// Nothing better known: the first time the patch was seen missing anywhere in the fleet.
    FirstSeen,
}

impl ClockSource {
    /// The spelling reports, events and the store use (as it serialises).
    pub fn as_str(self) -> &'static str {
        match self {
            ClockSource::Ssm => "ssm",
            ClockSource::Advisory => "advisory",
            ClockSource::FirstSeen => "first-seen",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SlaClock {
    pub start: DateTime<Utc>,
    pub source: ClockSource,
}

impl SlaClock {
    /// True when the clock is a stand-in for an unknown release date.
    pub fn estimated(&self) -> bool {
        self.source == ClockSource::FirstSeen
    }
}

/// The clock of a finding: the release date when known (an advisory's date wins over SSM's,
/// since operators import advisories to correct or complete SSM), else the fleet-wide first
/// sighting.
pub fn clock(
    ssm_release: Option<DateTime<Utc>>,
    advisory_release: Option<DateTime<Utc>>,
    first_seen_missing_in_fleet: DateTime<Utc>,
) -> SlaClock {
    match (advisory_release, ssm_release) {
        (Some(start), _) => SlaClock { start, source: ClockSource::Advisory },
        (None, Some(start)) => SlaClock { start, source: ClockSource::Ssm },
        (None, None) => SlaClock { start: first_seen_missing_in_fleet, source: ClockSource::FirstSeen },
    }
}

pub fn due_date(clock: &SlaClock, rank: RiskRank, policy: &SlaPolicy) -> DateTime<Utc> {
    clock.start + Duration::days(i64::from(policy.days(rank)))
}

/// What the fleet says about a finding now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingState {
    /// Missing, failed, or installed but pending a reboot: still exposed.
    Open,
    /// Installed (and rebooted into, where needed) at this instant.
    Remediated { installed_at: DateTime<Utc> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlaStatus {
    Breached,
    DueSoon,
    Ok,
    Excepted,
    Missed,
    Met,
}

impl SlaStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SlaStatus::Ok => "ok",
            SlaStatus::DueSoon => "due-soon",
            SlaStatus::Breached => "breached",
            SlaStatus::Met => "met",
            SlaStatus::Missed => "missed",
            SlaStatus::Excepted => "excepted",
        }
    }
}

impl std::fmt::Display for SlaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exception in force for a patch on an instance at `at`, if any. An exception holds
/// through the whole of its `expires` day (UTC) and not a second longer.
pub fn covering_exception<'a>(
    exceptions: &'a [Exception],
    patch_id: &str,
    instance_id: &str,
    instance_groups: &[&str],
    at: DateTime<Utc>,
) -> Option<&'a Exception> {
    exceptions.iter().find(|e| {
        let in_force = at < end_of_day(e.expires);
        let patch = e.patches.iter().any(|p| p == patch_id);
        let scope = match &e.scope {
            ExceptionScope::Instances(ids) => ids.iter().any(|id| id == instance_id),
            ExceptionScope::Group(group) => instance_groups.contains(&group.value.as_str()),
        };
        in_force && patch && scope
    })
}

fn end_of_day(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc() + Duration::days(1)
}

/// The status of a finding at `at`.
///
/// Open findings: `breached` once `at` is past the due date, `due-soon` from `due_soon_days`
/// before it up to and including the due instant, `ok` before that. An exception in force
/// makes an open finding `excepted`. Remediated findings are `met` when installed at or
/// before the due date and `missed` after it, whatever exceptions say: an assessor asks what
/// happened, not what was accepted.
pub fn status(
    state: FindingState,
    due: DateTime<Utc>,
    at: DateTime<Utc>,
    policy: &SlaPolicy,
    excepted: bool,
) -> SlaStatus {
    match state {
        FindingState::Remediated { installed_at } if installed_at <= due => SlaStatus::Met,
        FindingState::Remediated { .. } => SlaStatus::Missed,
        FindingState::Open if excepted => SlaStatus::Excepted,
        FindingState::Open if at > due => SlaStatus::Breached,
        FindingState::Open if at >= due - Duration::days(i64::from(policy.due_soon_days)) => {
            SlaStatus::DueSoon
        }
        FindingState::Open => SlaStatus::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::ClockSource;

    #[test]
    fn clock_sources_are_spelt_as_they_serialise() {
        for source in [ClockSource::Ssm, ClockSource::Advisory, ClockSource::FirstSeen] {
            let json = serde_json::to_string(&source).expect("serialises");
            assert_eq!(json, format!("\"{}\"", source.as_str()));
        }
    }
}
