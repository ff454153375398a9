//! The engine's steps composed once, for everyone who judges findings against a configuration:
//! `patchd report`, `/metrics` and the `/v1` API, and the daemon's SLA events. Judging the same
//! finding at the same instant gives the same rank, due date and status wherever it is done.

use chrono::{DateTime, Utc};
use patchd_config::{Config, Exception, Group, RiskRank};

use crate::{KevCatalog, RankReason, SlaClock, SlaStatus};

/// What judging needs besides the finding: the configuration (SLA policy, rank rules,
/// exceptions, groups), the KEV catalog, and the instant of the judgement.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    pub config: &'a Config,
    pub kev: &'a KevCatalog,
    pub at: DateTime<Utc>,
}

/// What the engine decides from the patch alone. Every open finding of one patch shares it
/// (only exceptions, which also look at the instance, can set one apart), so a judgement over
/// a fleet can judge each patch once rather than each finding.
#[derive(Debug, Clone)]
pub struct PatchVerdict {
    pub rank: RiskRank,
    /// Why the patch has its rank, in words (see [`describe`]).
    pub rank_reason: String,
    pub clock: SlaClock,
    pub due: DateTime<Utc>,
    /// The status of an open finding of this patch that no exception covers.
    pub open_status: SlaStatus,
}

/// The facts about a patch a verdict needs.
#[derive(Debug, Clone, Copy)]
pub struct PatchFacts<'p> {
    pub severity: Option<&'p str>,
    pub cves: &'p [String],
    pub ssm_release: Option<DateTime<Utc>>,
    pub advisory_release: Option<DateTime<Utc>>,
    /// The fleet-wide first sighting: the clock when no release date is known.
    pub fleet_first_seen: DateTime<Utc>,
}

impl<'a> Judge<'a> {
    pub fn verdict(&self, patch: &PatchFacts<'_>) -> PatchVerdict {
        let policy = &self.config.sla;
        let ranked = crate::rank(patch.severity, patch.cves, policy, self.kev);
        let clock = crate::clock(patch.ssm_release, patch.advisory_release, patch.fleet_first_seen);
        let due = crate::due_date(&clock, ranked.rank, policy);
        let open_status = crate::status(crate::FindingState::Open, due, self.at, policy, false);
        PatchVerdict { rank: ranked.rank, rank_reason: describe(&ranked.reason), clock, due, open_status }
    }

    /// One finding of a judged patch: its status, and the exception that covers it, if any.
    /// `groups` are the instance's, from [`groups_of`].
    pub fn finding(
        &self,
        verdict: &PatchVerdict,
        state: crate::FindingState,
        patch_id: &str,
        instance_id: &str,
        groups: &[&str],
    ) -> (SlaStatus, Option<&'a Exception>) {
        let exception =
            crate::covering_exception(&self.config.exceptions, patch_id, instance_id, groups, self.at);
        let status = crate::status(state, verdict.due, self.at, &self.config.sla, exception.is_some());
        (status, exception)
    }
}

/// The configured groups an instance belongs to: the group's `accounts`/`regions` admit the
/// instance's account (by its configured name) and region, its tag selector (when it has one)
/// matches, and its id is listed (when the group lists ids).
pub fn groups_of<'c, K: AsRef<str>, V: AsRef<str>>(
    config: &'c Config,
    account: &str,
    region: &str,
    instance_id: &str,
    tags: &[(K, V)],
) -> Vec<&'c str> {
    let pairs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    let account_name = config.aws.account_name_of(account);
    config
        .groups
        .iter()
        .filter(|g| g.scope.admits(account_name, region) && member(g, instance_id, &pairs))
        .map(|g| g.name.as_str())
        .collect()
}

fn member(group: &Group, instance_id: &str, tags: &[(&str, &str)]) -> bool {
    let by_tags = group.tags.0.is_empty() || group.tags.matches(tags.iter().copied());
    let by_id = group.instance_ids.is_empty() || group.instance_ids.iter().any(|id| id == instance_id);
    by_tags && by_id
}

/// A rank's reason as reports and events word it.
pub fn describe(reason: &RankReason) -> String {
    match reason {
        RankReason::VendorSeverity(s) => format!("vendor severity {s}"),
        RankReason::PolicyDefault => "no vendor severity: policy default".into(),
        RankReason::Rule { cve, reason: Some(why) } => format!("{cve}: {why}"),
        RankReason::Rule { cve, reason: None } => format!("{cve}: [[sla.rule]]"),
        RankReason::KnownExploited { cve } => format!("{cve} is in the CISA KEV catalog"),
    }
}
