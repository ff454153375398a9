//! `patchd report`: reads the store, judges with the SLA engine, renders.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use patchd_config::{Config, RiskRank};
use patchd_sla::{KevCatalog, SlaStatus};
use patchd_store::{
    FindingQuery, FindingRecord, FindingStatus, InstanceKey, InstanceRecord, OpenFindingFilter, Store,
};

use crate::cli::{FailOn, GlobalArgs, ReportArgs, ReportFormat, ReportKind};
use crate::failure::{print_diagnostics, Failure};
use crate::report::{self, evidence, render, Filters, FindingFacts, InstanceFacts, Judge, StateCounts};
use crate::setup::{load_config, open_store};

pub async fn run(global: &GlobalArgs, args: &ReportArgs) -> Result<(), Failure> {
    check_arguments(args)?;
    let at = args.at.unwrap_or_else(Utc::now);
    let loaded = load_config(global, at)?;
    print_diagnostics(&loaded.warnings);
    let config = &loaded.config;
    if let Some(group) = &args.group {
        if config.group(group).is_none() {
            let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(anyhow::anyhow!(
                "--group {group}: no such group; configured groups: {}",
                names.join(", ")
            )
            .into());
        }
    }
    let kev = load_kev(config)?;
    let store = open_store(config).await?;
    let filters = Filters { group: args.group.clone(), rank: args.rank.as_deref().and_then(RiskRank::parse) };
    let mut instances = instances(&store).await?;
    let place =
        Place::resolve(config, &store, &instances, args.account.as_deref(), args.region.as_deref()).await?;
    instances.retain(|i| place.admits(&i.account, &i.region));
    let findings = |query: FindingQuery<'static>| {
        let (store, place) = (&store, &place);
        async move {
            let mut found = findings(store, &query).await?;
            found.retain(|f| place.admits(&f.account, &f.region));
            Ok::<_, Failure>(found)
        }
    };
    let judge = Judge { config, kev: &kev, at };
    // --fail-on judges the SLA report; the verdict waits until the report is written, so a
    // pipeline that fails still has the report to show.
    let mut verdict = Ok(());
    let output = match args.kind {
        ReportKind::Evidence => {
            let (since, until) = period(args, at)?;
            let query = FindingQuery { status: Some(FindingStatus::Open), ..Default::default() };
            let sla = report::sla(&judge, &instances, &findings(query).await?, &filters);
            let remediated = findings(remediated_between(since, until)).await?;
            let history = report::history(&judge, &instances, &remediated, &filters, since, until);
            let coverage = report::coverage(config, at, &instances, &filters);
            let compliance = report::compliance(config, at, &instances, &filters);
            verdict = fail_on(args.fail_on, &sla);
            evidence::render(&evidence::Evidence {
                config,
                generated_at: Utc::now().trunc_subsecs(0),
                version: env!("CARGO_PKG_VERSION"),
                group: args.group.as_deref(),
                account: place.account.as_deref(),
                account_name: place.account_name.as_deref(),
                region: place.region.as_deref(),
                sla: &sla,
                history: &history,
                coverage: &coverage,
                compliance: &compliance,
            })
        }
        ReportKind::Sla => {
            let started = std::time::Instant::now();
            let limit = match (args.limit, args.format) {
                (Some(0), _) | (None, ReportFormat::Json | ReportFormat::Csv | ReportFormat::Html) => None,
                (Some(n), _) => Some(n),
                (None, ReportFormat::Table) => Some(DEFAULT_TABLE_LIMIT),
            };
            let sla = match limit {
                None => {
                    let query = FindingQuery { status: Some(FindingStatus::Open), ..Default::default() };
                    let findings = findings(query).await?;
                    report::sla(&judge, &instances, &findings, &filters)
                }
                Some(limit) => {
                    sla_summary(&store, &judge, &instances, &filters, !place.is_everywhere(), limit).await?
                }
            };
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "judged");
            let out = match args.format {
                ReportFormat::Table => render::sla_table(&sla),
                ReportFormat::Json => render::json(&sla),
                ReportFormat::Csv | ReportFormat::Html => render::findings_csv(&sla.findings),
            };
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, bytes = out.len(), "rendered");
            verdict = fail_on(args.fail_on, &sla);
            out
        }
        ReportKind::History => {
            let (since, until) = period(args, at)?;
            let findings = findings(remediated_between(since, until)).await?;
            let history = report::history(&judge, &instances, &findings, &filters, since, until);
            match args.format {
                ReportFormat::Table => render::history_table(&history),
                ReportFormat::Json => render::json(&history),
                ReportFormat::Csv | ReportFormat::Html => render::findings_csv(&history.remediated),
            }
        }
        ReportKind::Compliance => {
            let compliance = report::compliance(config, at, &instances, &filters);
            match args.format {
                ReportFormat::Table => render::compliance_table(&compliance),
                ReportFormat::Json => render::json(&compliance),
                ReportFormat::Csv | ReportFormat::Html => render::compliance_csv(&compliance),
            }
        }
        ReportKind::Coverage => {
            let coverage = report::coverage(config, at, &instances, &filters);
            match args.format {
                ReportFormat::Table => render::coverage_table(&coverage),
                ReportFormat::Json => render::json(&coverage),
                ReportFormat::Csv | ReportFormat::Html => render::coverage_csv(&coverage),
            }
        }
    };
    match &args.out {
        Some(path) => {
            write_atomically(path, output.as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{output}"),
    }
    verdict
}

/// `--account` and `--region`: the part of the fleet a report covers. Applied to the
/// instances and findings read from the store before anything is judged, so every report kind
/// (and the evidence's headline figures) covers the same records.
#[derive(Debug, Default)]
pub(crate) struct Place {
    /// A 12-digit account id.
    account: Option<String>,
    /// That account's configured name, when known.
    account_name: Option<String>,
    region: Option<String>,
}

impl Place {
    /// Resolves `--account` (a configured name or a 12-digit id) and checks `--region`
    /// against the regions patchd knows of, so that a typo is an error, not an empty report.
    pub(crate) async fn resolve(
        config: &Config,
        store: &Store,
        instances: &[InstanceFacts],
        account: Option<&str>,
        region: Option<&str>,
    ) -> Result<Place, PlaceError> {
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
                return Err(PlaceError::Unknown(format!(
                    "region `{region}`: no instance is recorded in it and no account is configured in it; \
                     known regions: {}",
                    if known.is_empty() { "none yet".to_string() } else { known.join(", ") }
                )));
            }
        }
        Ok(Place { account, account_name, region: region.map(str::to_string) })
    }

    fn admits(&self, account: &str, region: &str) -> bool {
        self.account.as_deref().is_none_or(|a| a == account)
            && self.region.as_deref().is_none_or(|r| r == region)
    }

    fn is_everywhere(&self) -> bool {
        self.account.is_none() && self.region.is_none()
    }
}

/// `--account`'s 12-digit id: given as such, from an `[[aws.account]]`'s role ARN, or, for the
/// home account, as patchd learned it when it last connected (the configuration cannot say).
pub(crate) async fn account_id(config: &Config, store: &Store, given: &str) -> Result<String, PlaceError> {
    if given.len() == 12 && given.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(given.to_string());
    }
    if let Some(account) = config.aws.accounts.iter().find(|a| a.name == given) {
        if let Some(id) = account.account_id() {
            return Ok(id.to_string());
        }
    }
    if given == config.aws.name {
        let known = store
            .account_named(given)
            .await
            .map_err(|e| PlaceError::Failed(anyhow::anyhow!("cannot read account names: {e}").into()))?;
        return match known {
            Some(known) => Ok(known.account_id),
            None => Err(PlaceError::Unknown(format!(
                "account `{given}`: the home account's id is not known yet (patchd learns it from \
                 STS when it connects): run `patchd scan` or the daemon once, or pass the 12-digit id"
            ))),
        };
    }
    let mut names = vec![config.aws.name.as_str()];
    names.extend(config.aws.accounts.iter().map(|a| a.name.as_str()));
    Err(PlaceError::Unknown(format!(
        "account `{given}`: no configured account has that name; configured accounts: {} (or pass a 12-digit account id)",
        names.join(", ")
    )))
}

/// Why a report could not be narrowed to an account or region.
#[derive(Debug)]
pub(crate) enum PlaceError {
    /// The account or region names nothing patchd knows: the asker's mistake.
    Unknown(String),
    Failed(Failure),
}

impl From<Failure> for PlaceError {
    fn from(failure: Failure) -> Self {
        PlaceError::Failed(failure)
    }
}

impl From<PlaceError> for Failure {
    fn from(error: PlaceError) -> Self {
        match error {
            PlaceError::Unknown(why) => Failure::Other(anyhow::anyhow!(why)),
            PlaceError::Failed(failure) => failure,
        }
    }
}

/// Refuses combinations that would silently produce something else than asked for.
fn check_arguments(args: &ReportArgs) -> Result<(), Failure> {
    if (args.kind == ReportKind::Evidence) != (args.format == ReportFormat::Html) {
        return Err(anyhow::anyhow!(
            "the evidence report is HTML only, and only it is: use `report evidence --format html --out FILE`"
        )
        .into());
    }
    // The evidence is the whole picture: its headline figures must equal the unfiltered sla and
    // history reports, so it takes no filter that would change them behind the reader's back.
    if args.kind == ReportKind::Evidence && (args.rank.is_some() || args.limit.is_some()) {
        return Err(anyhow::anyhow!(
            "report evidence covers every rank and lists every critical and high finding: drop --rank and --limit"
        )
        .into());
    }
    Ok(())
}

/// The remediation period of `history` and `evidence`: `--since` (default 90 days before
/// `--until`) to `--until` (exclusive, default `--at`).
fn period(args: &ReportArgs, at: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), Failure> {
    let until = args.until.unwrap_or(at);
    let since = args.since.unwrap_or(until - Duration::days(90));
    if since >= until {
        return Err(anyhow::anyhow!("--since {since} must be before --until {until}").into());
    }
    Ok((since, until))
}

fn remediated_between(since: DateTime<Utc>, until: DateTime<Utc>) -> FindingQuery<'static> {
    FindingQuery { remediated_since: Some(since), remediated_until: Some(until), ..Default::default() }
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the whole new
/// one, never a half-written report: a temporary file in the same directory (a rename is only
/// atomic within one file system), flushed to disk, then renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names a directory, not a file")
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = std::fs::File::create_new(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// Findings a table lists unless `--limit` says otherwise: a screenful of the most urgent.
const DEFAULT_TABLE_LIMIT: usize = 50;

/// The SLA report without reading every open finding: per-patch counts give the totals, the
/// findings of patches an exception names are judged one by one, and the listing reads tier by
/// tier, most urgent first, until `limit` findings are found.
///
/// `instances_only`: count and list only the findings of `instances` (the caller kept part of
/// the fleet); without it, and without a group filter, every open finding counts.
async fn sla_summary(
    store: &Store,
    judge: &Judge<'_>,
    instances: &[InstanceFacts],
    filters: &Filters,
    instances_only: bool,
    limit: usize,
) -> Result<report::SlaReport, Failure> {
    let failed = |e: patchd_store::StoreError| anyhow::anyhow!("cannot read findings: {e}");
    let in_scope: Option<Vec<InstanceKey>> = (instances_only || filters.group.is_some()).then(|| {
        instances
            .iter()
            .filter(|i| {
                filters.group.as_ref().is_none_or(|group| {
                    report::groups_of(judge.config, &i.account, &i.region, &i.instance_id, &i.tags)
                        .contains(&group.as_str())
                })
            })
            .map(|i| InstanceKey { account: &i.account, region: &i.region, instance_id: &i.instance_id })
            .collect()
    });
    let scope = OpenFindingFilter { patch_ids: None, instances: in_scope.as_deref() };
    let counts = store.open_finding_counts(&scope).await.map_err(failed)?;
    let patches: Vec<report::PatchOpen> = counts
        .iter()
        .map(|c| {
            let p = &c.patch;
            report::PatchOpen {
                patch_id: p.patch_id.clone(),
                // The store sets a patch's first sighting when it opens its first finding.
                verdict: judge.verdict(&report::PatchFacts {
                    severity: p.severity.as_deref(),
                    cves: &p.cve_ids,
                    ssm_release: p.ssm_release,
                    advisory_release: p.advisory_release,
                    fleet_first_seen: p.first_seen_missing.unwrap_or(judge.at),
                }),
                open: c.open as usize,
            }
        })
        .collect();

    let named: Vec<String> = {
        let counted: std::collections::HashSet<&str> = patches.iter().map(|p| p.patch_id.as_str()).collect();
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
        store.open_findings(&filter, None).await.map_err(failed)?.iter().map(finding_facts).collect()
    };

    let mut listed: Vec<FindingFacts> = Vec::new();
    // Findings of a patch an exception names may be excepted, and excepted findings are
    // listed last: they do not count towards filling the listing.
    let mut surely_listed = 0;
    for tier in report::urgency_tiers(&patches, filters) {
        if surely_listed >= limit {
            break;
        }
        let tier: Vec<String> = tier.into_iter().map(str::to_string).collect();
        let maybe_excepted = candidates.iter().filter(|c| tier.contains(&c.patch_id)).count();
        let want = limit - surely_listed + maybe_excepted;
        let filter = OpenFindingFilter { patch_ids: Some(&tier), ..scope };
        let rows = store.open_findings(&filter, Some(want as u32)).await.map_err(failed)?;
        surely_listed += rows.iter().filter(|r| !named.contains(&r.patch.patch_id)).count();
        listed.extend(rows.iter().map(finding_facts));
    }
    let mut report = report::sla_summary(judge, instances, &patches, &candidates, &listed, limit, filters);
    report.clocks = report::platform_clocks(&store.open_clock_counts(&scope).await.map_err(failed)?);
    Ok(report)
}

fn fail_on(threshold: Option<FailOn>, sla: &report::SlaReport) -> Result<(), Failure> {
    let breached = sla.count(SlaStatus::Breached);
    let due_soon = sla.count(SlaStatus::DueSoon);
    match threshold {
        Some(FailOn::Breached) if breached > 0 => Err(Failure::PolicyViolation(format!(
            "{breached} finding(s) breached their SLA (--fail-on breached)"
        ))),
        Some(FailOn::DueSoon) if breached + due_soon > 0 => Err(Failure::PolicyViolation(format!(
            "{breached} finding(s) breached and {due_soon} due soon (--fail-on due-soon)"
        ))),
        _ => Ok(()),
    }
}

/// The SLA engine's one KEV policy (see [`patchd_sla::load_kev`]); the CLI says what it could
/// not read on stderr.
fn load_kev(config: &Config) -> Result<KevCatalog, Failure> {
    let loaded = patchd_sla::load_kev(config);
    if let Some(problem) = &loaded.problem {
        eprintln!("patchd: warning: {problem}; ranking without the KEV catalog");
    }
    Ok(loaded.catalog)
}

async fn instances(store: &Store) -> Result<Vec<InstanceFacts>, Failure> {
    let records = store.instances().await.map_err(|e| anyhow::anyhow!("cannot read instances: {e}"))?;
    Ok(records.into_iter().map(instance_facts).collect())
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

/// Reads every finding the query selects, page by page, so memory holds one page of store
/// rows at a time besides the facts kept.
async fn findings(store: &Store, query: &FindingQuery<'_>) -> Result<Vec<FindingFacts>, Failure> {
    let mut facts = Vec::new();
    let mut query = FindingQuery { limit: Some(50_000), ..*query };
    loop {
        let page = store.findings(&query).await.map_err(|e| anyhow::anyhow!("cannot read findings: {e}"))?;
        facts.extend(page.findings.iter().map(finding_facts));
        match page.next {
            Some(next) => query.after = Some(next),
            None => return Ok(facts),
        }
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

/// `report sla`'s totals and its `limit` most urgent findings as of `at`, for `patchd demo`.
pub(crate) async fn sla_snapshot(
    config: &Config,
    store: &Store,
    at: chrono::DateTime<Utc>,
    limit: usize,
) -> Result<report::SlaReport, Failure> {
    let kev = load_kev(config)?;
    let instances = instances(store).await?;
    let judge = Judge { config, kev: &kev, at };
    sla_summary(store, &judge, &instances, &Filters { group: None, rank: None }, false, limit).await
}

/// The coverage gaps as of `at`, for `patchd demo`.
pub(crate) async fn coverage_snapshot(
    config: &Config,
    store: &Store,
    at: chrono::DateTime<Utc>,
) -> Result<report::CoverageReport, Failure> {
    let instances = instances(store).await?;
    Ok(report::coverage(config, at, &instances, &Filters { group: None, rank: None }))
}

/// What `/metrics` shows of the SLA picture as of `at`: `report sla`'s totals (computed the
/// same way, from per-patch counts, without listing findings) and the SLA clock start of the
/// oldest open finding of each rank (excepted ones included).
pub(crate) async fn sla_gauges(
    config: &Config,
    store: &Store,
    at: chrono::DateTime<Utc>,
) -> Result<(report::SlaReport, Vec<(RiskRank, chrono::DateTime<Utc>)>), Failure> {
    let totals = sla_snapshot(config, store, at, 0).await?;
    let kev = load_kev(config)?;
    let judge = Judge { config, kev: &kev, at };
    let scope = OpenFindingFilter { patch_ids: None, instances: None };
    let counts =
        store.open_finding_counts(&scope).await.map_err(|e| anyhow::anyhow!("cannot read findings: {e}"))?;
    let mut oldest: std::collections::BTreeMap<RiskRank, chrono::DateTime<Utc>> = Default::default();
    for c in counts.iter().filter(|c| c.open > 0) {
        let p = &c.patch;
        let verdict = judge.verdict(&report::PatchFacts {
            severity: p.severity.as_deref(),
            cves: &p.cve_ids,
            ssm_release: p.ssm_release,
            advisory_release: p.advisory_release,
            fleet_first_seen: p.first_seen_missing.unwrap_or(at),
        });
        let start = verdict.clock.start;
        oldest.entry(verdict.rank).and_modify(|t| *t = (*t).min(start)).or_insert(start);
    }
    Ok((totals, oldest.into_iter().collect()))
}

/// `report sla --format json`'s open findings as of `at` under `filters`, every one of them,
/// most urgent first: what the HTTP API's `/v1/findings` lists. `account` and `region` as
/// `--account` and `--region` take them.
pub(crate) async fn sla_full(
    config: &Config,
    store: &Store,
    at: chrono::DateTime<Utc>,
    filters: &Filters,
    account: Option<&str>,
    region: Option<&str>,
) -> Result<report::SlaReport, PlaceError> {
    let kev = load_kev(config)?;
    let mut instances = instances(store).await?;
    let place = Place::resolve(config, store, &instances, account, region).await?;
    instances.retain(|i| place.admits(&i.account, &i.region));
    let judge = Judge { config, kev: &kev, at };
    let query = FindingQuery { status: Some(FindingStatus::Open), ..Default::default() };
    let mut open = findings(store, &query).await?;
    open.retain(|f| place.admits(&f.account, &f.region));
    Ok(report::sla(&judge, &instances, &open, filters))
}
