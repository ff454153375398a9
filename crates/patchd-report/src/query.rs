//! The query service: reads the store's facts about part of the fleet and hands them to the
//! computation. `patchd report`, the HTTP API, `/metrics` and the demo all ask through it, so a
//! figure is the same wherever it is shown.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use patchd_config::{Config, RiskRank};
use patchd_sla::{groups_of, Judge, PatchFacts, PatchVerdict};
use patchd_store::{
    FindingQuery, FindingRecord, FindingStatus, InstanceKey, InstanceRecord, OpenFindingFilter, PatchRecord,
    Store, StoreError,
};

use crate::clocks::platform_clocks;
use crate::compliance::{compliance, ComplianceReport};
use crate::coverage::{coverage, CoverageReport};
use crate::facts::{Filters, FindingFacts, InstanceFacts, StateCounts};
use crate::history::{history, HistoryReport};
use crate::sla::{sla, sla_summary, urgency_tiers, PatchOpen, SlaReport};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// An account or region that names nothing patchd knows: the asker's mistake, said in
    /// words that list what is known.
    #[error("{0}")]
    UnknownPlace(String),
    /// The store did not answer.
    #[error("cannot read {what}: {error}")]
    Store { what: &'static str, error: StoreError },
}

fn unreadable(what: &'static str) -> impl FnOnce(StoreError) -> ReportError {
    move |error| ReportError::Store { what, error }
}

/// The part of the fleet a report covers (`--account`, `--region`; the API's `account` and
/// `region`). Applied to the instances and findings read from the store before anything is
/// judged, so every report kind (and the evidence's headline figures) covers the same records.
#[derive(Debug, Clone, Default)]
pub struct Place {
    /// A 12-digit account id.
    account: Option<String>,
    /// That account's configured name, when known.
    account_name: Option<String>,
    region: Option<String>,
}

impl Place {
    /// Resolves `account` (a configured name or a 12-digit id) and checks `region` against the
    /// regions patchd knows of, so that a typo is an error, not an empty report.
    async fn resolve(
        config: &Config,
        store: &Store,
        instances: &[InstanceFacts],
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<Place, ReportError> {
        let given_account = account;
        let account = match given_account {
            None => None,
            Some(given) => Some(account_id(config, store, given).await?),
        };
        let account_name = account.as_ref().and_then(|id| {
            let member = config.aws.accounts.iter().find(|a| a.account_id() == Some(id.as_str()));
            match (member, given_account) {
                (Some(member), _) => Some(member.name.clone()),
                (None, Some(given)) if given != id => Some(given.to_string()),
                _ => None,
            }
        });
        if let Some(region) = region {
            let mut known: Vec<&str> = instances.iter().map(|i| i.region.as_str()).collect();
            known.extend(config.aws.configured_home_regions().unwrap_or_default().iter().map(String::as_str));
            known.extend(config.aws.accounts.iter().flat_map(|a| a.regions.iter().map(String::as_str)));
            known.sort_unstable();
            known.dedup();
            if !known.contains(&region) {
                return Err(ReportError::UnknownPlace(format!(
                    "region `{region}`: no instance is recorded in it and no account is configured in it; \
                     known regions: {}",
                    if known.is_empty() { "none yet".to_string() } else { known.join(", ") }
                )));
            }
        }
        Ok(Place { account, account_name, region: region.map(str::to_string) })
    }

    /// The 12-digit account id, when the report covers one account.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// The covered account's configured name, when known.
    pub fn account_name(&self) -> Option<&str> {
        self.account_name.as_deref()
    }

    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    fn admits(&self, account: &str, region: &str) -> bool {
        self.account.as_deref().is_none_or(|a| a == account)
            && self.region.as_deref().is_none_or(|r| r == region)
    }

    fn is_everywhere(&self) -> bool {
        self.account.is_none() && self.region.is_none()
    }
}

/// An account's 12-digit id: given as such, from an `[[aws.account]]`'s role ARN, or, for the
/// home account, as patchd learned it when it last connected (the configuration cannot say).
pub async fn account_id(config: &Config, store: &Store, given: &str) -> Result<String, ReportError> {
    if given.len() == 12 && given.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(given.to_string());
    }
    if let Some(account) = config.aws.accounts.iter().find(|a| a.name == given) {
        if let Some(id) = account.account_id() {
            return Ok(id.to_string());
        }
    }
    if given == config.aws.name {
        let known = store.account_named(given).await.map_err(unreadable("account names"))?;
        return match known {
            Some(known) => Ok(known.account_id),
            None => Err(ReportError::UnknownPlace(format!(
                "account `{given}`: the home account's id is not known yet (patchd learns it from \
                 STS when it connects): run `patchd scan` or the daemon once, or pass the 12-digit id"
            ))),
        };
    }
    let mut names = vec![config.aws.name.as_str()];
    names.extend(config.aws.accounts.iter().map(|a| a.name.as_str()));
    Err(ReportError::UnknownPlace(format!(
        "account `{given}`: no configured account has that name; configured accounts: {} (or pass a 12-digit account id)",
        names.join(", ")
    )))
}

/// The store's records of one part of the fleet, judged as of one instant. The instances are
/// read once, so every report made from one `Reports` covers the same instances.
#[derive(Debug)]
pub struct Reports<'a> {
    store: &'a Store,
    judge: Judge<'a>,
    place: Place,
    instances: Vec<InstanceFacts>,
}

impl<'a> Reports<'a> {
    /// Reads the instances of `account` (a configured name or a 12-digit id) and `region`;
    /// None covers every one. An account or region patchd does not know is
    /// [`ReportError::UnknownPlace`].
    pub async fn read(
        store: &'a Store,
        judge: Judge<'a>,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<Reports<'a>, ReportError> {
        let records = store.instances().await.map_err(unreadable("instances"))?;
        let mut instances: Vec<InstanceFacts> = records.into_iter().map(instance_facts).collect();
        let place = Place::resolve(judge.config, store, &instances, account, region).await?;
        instances.retain(|i| place.admits(&i.account, &i.region));
        Ok(Reports { store, judge, place, instances })
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Every open finding, judged and listed, most urgent first.
    pub async fn sla(&self, filters: &Filters) -> Result<SlaReport, ReportError> {
        let open =
            self.findings(FindingQuery { status: Some(FindingStatus::Open), ..Default::default() }).await?;
        Ok(sla(&self.judge, &self.instances, &open, filters))
    }

    /// The SLA report without reading every open finding: per-patch counts give the totals, the
    /// findings of patches an exception names are judged one by one, and the listing reads tier
    /// by tier, most urgent first, until `limit` findings are found (0: totals only).
    pub async fn sla_summary(&self, filters: &Filters, limit: usize) -> Result<SlaReport, ReportError> {
        let judge = &self.judge;
        let in_scope = self.instances_in_scope(filters);
        let scope = OpenFindingFilter { patch_ids: None, instances: in_scope.as_deref() };
        let counts = self.store.open_finding_counts(&scope).await.map_err(unreadable("findings"))?;
        let patches: Vec<PatchOpen> = counts
            .iter()
            .map(|c| PatchOpen {
                patch_id: c.patch.patch_id.clone(),
                verdict: patch_verdict(judge, &c.patch),
                open: c.open as usize,
            })
            .collect();

        let named: Vec<String> = {
            let counted: HashSet<&str> = patches.iter().map(|p| p.patch_id.as_str()).collect();
            let mut named: Vec<String> = judge
                .config
                .exceptions
                .iter()
                .flat_map(|e| &e.patches)
                .filter(|p| counted.contains(p.as_str()))
                .cloned()
                .collect();
            named.sort();
            named.dedup();
            named
        };
        let candidates = if named.is_empty() {
            Vec::new()
        } else {
            let filter = OpenFindingFilter { patch_ids: Some(&named), ..scope };
            let rows = self.store.open_findings(&filter, None).await.map_err(unreadable("findings"))?;
            rows.iter().map(finding_facts).collect()
        };

        let mut listed: Vec<FindingFacts> = Vec::new();
        // Findings of a patch an exception names may be excepted, and excepted findings are
        // listed last: they do not count towards filling the listing.
        let mut surely_listed = 0;
        for tier in urgency_tiers(&patches, filters) {
            if surely_listed >= limit {
                break;
            }
            let tier: Vec<String> = tier.into_iter().map(str::to_string).collect();
            let maybe_excepted = candidates.iter().filter(|c| tier.contains(&c.patch_id)).count();
            let want = limit - surely_listed + maybe_excepted;
            let filter = OpenFindingFilter { patch_ids: Some(&tier), ..scope };
            let rows =
                self.store.open_findings(&filter, Some(want as u32)).await.map_err(unreadable("findings"))?;
            surely_listed += rows.iter().filter(|r| !named.contains(&r.patch.patch_id)).count();
            listed.extend(rows.iter().map(finding_facts));
        }
        let mut report = sla_summary(judge, &self.instances, &patches, &candidates, &listed, limit, filters);
        let clocks = self.store.open_clock_counts(&scope).await.map_err(unreadable("findings"))?;
        report.clocks = platform_clocks(&clocks);
        Ok(report)
    }

    /// The SLA clock start of the oldest open finding of each rank (excepted ones included),
    /// from per-patch counts.
    pub async fn oldest_open_per_rank(&self) -> Result<Vec<(RiskRank, DateTime<Utc>)>, ReportError> {
        let in_scope = self.instances_in_scope(&Filters::default());
        let scope = OpenFindingFilter { patch_ids: None, instances: in_scope.as_deref() };
        let counts = self.store.open_finding_counts(&scope).await.map_err(unreadable("findings"))?;
        let mut oldest: BTreeMap<RiskRank, DateTime<Utc>> = BTreeMap::new();
        for c in counts.iter().filter(|c| c.open > 0) {
            let verdict = patch_verdict(&self.judge, &c.patch);
            let start = verdict.clock.start;
            oldest.entry(verdict.rank).and_modify(|t| *t = (*t).min(start)).or_insert(start);
        }
        Ok(oldest.into_iter().collect())
    }

    /// Findings remediated in [since, until), and how many met their SLA, per rank.
    pub async fn history(
        &self,
        filters: &Filters,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<HistoryReport, ReportError> {
        let query = FindingQuery {
            remediated_since: Some(since),
            remediated_until: Some(until),
            ..Default::default()
        };
        let remediated = self.findings(query).await?;
        Ok(history(&self.judge, &self.instances, &remediated, filters, since, until))
    }

    pub fn compliance(&self, filters: &Filters) -> ComplianceReport {
        compliance(self.judge.config, self.judge.at, &self.instances, filters)
    }

    pub fn coverage(&self, filters: &Filters) -> CoverageReport {
        coverage(self.judge.config, self.judge.at, &self.instances, filters)
    }

    /// The instances whose findings count, when not every instance's do: part of the fleet
    /// was left out, or a group filter narrows it.
    fn instances_in_scope(&self, filters: &Filters) -> Option<Vec<InstanceKey<'_>>> {
        (!self.place.is_everywhere() || filters.group.is_some()).then(|| {
            self.instances
                .iter()
                .filter(|i| {
                    filters.group.as_ref().is_none_or(|group| {
                        groups_of(self.judge.config, &i.account, &i.region, &i.instance_id, &i.tags)
                            .contains(&group.as_str())
                    })
                })
                .map(|i| InstanceKey { account: &i.account, region: &i.region, instance_id: &i.instance_id })
                .collect()
        })
    }

    /// Every finding the query selects in this part of the fleet, page by page, so memory holds
    /// one page of store rows at a time besides the facts kept.
    async fn findings(&self, query: FindingQuery<'_>) -> Result<Vec<FindingFacts>, ReportError> {
        let mut facts = Vec::new();
        let mut query = FindingQuery { limit: Some(50_000), ..query };
        loop {
            let page = self.store.findings(&query).await.map_err(unreadable("findings"))?;
            facts.extend(
                page.findings
                    .iter()
                    .filter(|f| self.place.admits(&f.instance.account, &f.instance.region))
                    .map(finding_facts),
            );
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(facts),
            }
        }
    }
}

/// The verdict every open finding of `patch` shares. The store sets a patch's first sighting
/// when it opens its first finding, so a patch without one has none open before `judge.at`.
fn patch_verdict(judge: &Judge<'_>, patch: &PatchRecord) -> PatchVerdict {
    judge.verdict(&PatchFacts {
        severity: patch.severity.as_deref(),
        cves: &patch.cve_ids,
        ssm_release: patch.ssm_release,
        advisory_release: patch.advisory_release,
        fleet_first_seen: patch.first_seen_missing.unwrap_or(judge.at),
    })
}

fn instance_facts(record: InstanceRecord) -> InstanceFacts {
    let c = record.compliance.as_ref().map(|c| c.counts).unwrap_or_default();
    InstanceFacts {
        account: record.instance.account,
        region: record.instance.region,
        instance_id: record.instance.instance_id,
        name: record.instance.name,
        platform: record.instance.platform,
        tags: record.instance.tags.into_iter().collect(),
        managed: record.ssm_managed,
        ping_status: record.ping_status.map(|p| p.as_str().to_string()),
        last_scan: record.compliance.as_ref().map(|c| c.scanned_at),
        counts: StateCounts {
            installed: c.installed,
            installed_other: c.installed_other,
            installed_pending_reboot: c.installed_pending_reboot,
            installed_rejected: c.installed_rejected,
            missing: c.missing + c.available_security_update,
            failed: c.failed,
            not_applicable: c.not_applicable,
        },
    }
}

fn finding_facts(record: &FindingRecord) -> FindingFacts {
    FindingFacts {
        account: record.instance.account.clone(),
        region: record.instance.region.clone(),
        instance_id: record.instance.instance_id.clone(),
        patch_id: record.patch.patch_id.clone(),
        title: record.patch.title.clone(),
        severity: record.patch.severity.clone(),
        cves: record.patch.cve_ids.clone(),
        ssm_release: record.patch.ssm_release,
        advisory_release: record.patch.advisory_release,
        advisory_source: record.patch.advisory_source.clone(),
        fleet_first_seen: record.fleet_first_seen_missing,
        state: record.state.as_str().to_string(),
        installed_at: record.installed_at,
    }
}
