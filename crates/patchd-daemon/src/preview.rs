//! What a configured baseline approves, and from when.
//!
//! [`evaluate`] is pure: it judges one candidate patch against a `[[baseline]]` the way Patch
//! Manager does, so a baseline can be previewed before it exists in SSM. [`Preview::build`]
//! judges a list of candidates at an instant; [`candidates`] gathers them from SSM's catalog
//! (DescribeAvailablePatches, where SSM has one for the operating system) and from the store
//! (imported advisories, and patches earlier syncs recorded).
//!
//! The rules, in the order Patch Manager applies them:
//! 1. a patch in `rejected_patches` (by id or package name) is never approved, whatever else
//!    says so;
//! 2. a patch in `approved_patches` is approved from its release, whatever the filters say;
//! 3. otherwise every global filter must select it, and then every filter of at least one rule;
//!    each such rule approves it at release + `approve_after_days`, or at release when it was
//!    released on or before `approve_until` (never otherwise); on Debian-family systems at
//!    release, since their repositories carry no dates SSM trusts. The earliest approval wins;
//!    on a tie the more severe compliance level, then the earlier rule.
//!
//! A filter value may use `*` (any run of characters) and `?` (one character); everything else
//! compares exactly, case included.

use std::collections::HashMap;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use patchd_aws::{AvailablePatch, AwsError, OperatingSystem, PatchCatalog};
use patchd_config::{Approval, Baseline, PatchFilter, RejectedPatchesAction, COMPLIANCE_LEVELS};
use patchd_store::{PatchRecord, ReleaseSource, StoreError};

use crate::context::Context;

/// A patch the baseline may approve. Properties SSM would know but patchd does not (a patch
/// known only from an imported advisory has no classification) are `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Candidate {
    /// The advisory id (ALAS2-2026-1234) on Linux, the KB id on Windows.
    pub id: String,
    pub title: Option<String>,
    pub classification: Option<String>,
    /// The vendor's severity (Linux): the `SEVERITY` filter.
    pub severity: Option<String>,
    /// Microsoft's severity (Windows): the `MSRC_SEVERITY` filter.
    pub msrc_severity: Option<String>,
    /// Debian package priority: the `PRIORITY` filter.
    pub priority: Option<String>,
    /// Debian archive section: the `SECTION` filter.
    pub section: Option<String>,
    pub product: Option<String>,
    pub product_family: Option<String>,
    /// The package it updates, on Linux. Approved and rejected lists may name it.
    pub package: Option<String>,
    pub cve_ids: Vec<String>,
    pub released: Option<DateTime<Utc>>,
    /// Where `released` came from: an imported advisory's date wins over SSM's.
    pub release_source: Option<ReleaseSource>,
}

impl Candidate {
    /// The severity a person reads: MSRC's on Windows, the vendor's elsewhere.
    pub fn display_severity(&self) -> Option<&str> {
        self.msrc_severity.as_deref().or(self.severity.as_deref())
    }
}

/// What approved a patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovedBy {
    /// The baseline's `approved_patches` list.
    ApprovedPatches,
    /// The approval rule at this index of `Baseline::rules` (0-based).
    Rule(usize),
}

/// A baseline's verdict on one patch, independent of the instant it is looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approved from `from` on; `None` when the approval does not depend on a date patchd
    /// lacks (an explicitly approved patch, or a Debian-family one, without a release date).
    Approved {
        from: Option<DateTime<Utc>>,
        by: ApprovedBy,
        compliance_level: &'static str,
    },
    /// A rule selects the patch, but its approval is counted from a release date nobody gave.
    Undated {
        rule: usize,
        compliance_level: &'static str,
    },
    NotApproved,
    /// Listed in `rejected_patches`: never approved. With `ALLOW_AS_DEPENDENCY` it may still
    /// be installed as another package's dependency (and is then reported `INSTALLED_OTHER`);
    /// `BLOCK` refuses even that.
    Rejected {
        action: RejectedPatchesAction,
    },
}

/// Where a verdict leaves a patch at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    Approved,
    /// Approved later than the instant looked at.
    Pending,
    Undated,
    NotApproved,
    Rejected,
}

impl Status {
    /// The spelling of the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Pending => "pending",
            Status::Undated => "undated",
            Status::NotApproved => "not-approved",
            Status::Rejected => "rejected",
        }
    }
}

impl Verdict {
    pub fn status_at(&self, at: DateTime<Utc>) -> Status {
        match self {
            Verdict::Approved { from: Some(from), .. } if *from > at => Status::Pending,
            Verdict::Approved { .. } => Status::Approved,
            Verdict::Undated { .. } => Status::Undated,
            Verdict::NotApproved => Status::NotApproved,
            Verdict::Rejected { .. } => Status::Rejected,
        }
    }

    pub fn approved_from(&self) -> Option<DateTime<Utc>> {
        match self {
            Verdict::Approved { from, .. } => *from,
            _ => None,
        }
    }

    pub fn compliance_level(&self) -> Option<&'static str> {
        match self {
            Verdict::Approved { compliance_level, .. } | Verdict::Undated { compliance_level, .. } => {
                Some(compliance_level)
            }
            _ => None,
        }
    }
}

/// The baseline's verdict on one patch.
pub fn evaluate(baseline: &Baseline, patch: &Candidate) -> Verdict {
    if listed(&baseline.rejected_patches, patch) {
        return Verdict::Rejected { action: baseline.rejected_patches_action };
    }
    if listed(&baseline.approved_patches, patch) {
        return Verdict::Approved {
            from: patch.released,
            by: ApprovedBy::ApprovedPatches,
            compliance_level: baseline.approved_patches_compliance_level,
        };
    }
    let os = baseline.operating_system;
    if !baseline.global_filters.iter().all(|f| selects(f, patch, os)) {
        return Verdict::NotApproved;
    }
    let mut best: Option<(Option<DateTime<Utc>>, usize, usize)> = None;
    let mut undated: Option<usize> = None;
    for (index, rule) in baseline.rules.iter().enumerate() {
        if !rule.filters.iter().all(|f| selects(f, patch, os)) {
            continue;
        }
        let from = match (os.approves_on_release(), &rule.approval, patch.released) {
            (true, _, released) | (false, Approval::Immediate, released) => released,
            (false, Approval::AfterDays(days), Some(released)) => {
                Some(released + Duration::days(i64::from(*days)))
            }
            (false, Approval::Until(last_day), Some(released)) => {
                // "On or before" the date: anything released before the next midnight (UTC).
                let end_of_day = last_day.and_time(NaiveTime::MIN).and_utc() + Duration::days(1);
                if released >= end_of_day {
                    continue;
                }
                Some(released)
            }
            (false, Approval::AfterDays(_) | Approval::Until(_), None) => {
                undated.get_or_insert(index);
                continue;
            }
        };
        let key = (from, level_rank(rule.compliance_level), index);
        // `None` (no date needed) sorts before any date: it is approved already.
        if best.is_none_or(|b| (key.0, key.1) < (b.0, b.1)) {
            best = Some(key);
        }
    }
    match (best, undated) {
        (Some((from, _, index)), _) => Verdict::Approved {
            from,
            by: ApprovedBy::Rule(index),
            compliance_level: baseline.rules[index].compliance_level,
        },
        (None, Some(index)) => {
            Verdict::Undated { rule: index, compliance_level: baseline.rules[index].compliance_level }
        }
        (None, None) => Verdict::NotApproved,
    }
}

/// Most severe first, as SSM lists compliance levels.
fn level_rank(level: &str) -> usize {
    COMPLIANCE_LEVELS.iter().position(|l| *l == level).unwrap_or(COMPLIANCE_LEVELS.len())
}

/// Approved and rejected lists name patches by id or by package name.
fn listed(list: &[String], patch: &Candidate) -> bool {
    list.iter().any(|entry| *entry == patch.id || patch.package.as_deref() == Some(entry.as_str()))
}

/// Names SSM accepts for a product besides its own.
const PRODUCT_ALIASES: &[(&str, &str)] = &[("AmazonLinux2", "AmazonLinux2.0")];

/// Whether a filter selects the patch. A property the key does not apply to on this system
/// (SEVERITY on Windows, MSRC_SEVERITY elsewhere) never matches. A property SSM would know but
/// patchd does not (an advisory known only by its id) matches only a value that matches
/// anything, such as `*`: SSM might not select it, but nothing says it would not.
fn selects(filter: &PatchFilter, patch: &Candidate, os: OperatingSystem) -> bool {
    let windows = os == OperatingSystem::Windows;
    let one = |value: &Option<String>| -> Option<Vec<String>> { value.clone().map(|v| vec![v]) };
    let values: Option<Vec<String>> = match filter.key {
        "PRODUCT" => patch.product.as_ref().map(|product| {
            let mut names = vec![product.clone()];
            names.extend(
                PRODUCT_ALIASES
                    .iter()
                    .filter(|(name, _)| name == product)
                    .map(|(_, alias)| alias.to_string()),
            );
            names
        }),
        "PRODUCT_FAMILY" => one(&patch.product_family),
        "CLASSIFICATION" => one(&patch.classification),
        "SEVERITY" if !windows => one(&patch.severity),
        "MSRC_SEVERITY" if windows => one(&patch.msrc_severity),
        "PRIORITY" => one(&patch.priority),
        "SECTION" => one(&patch.section),
        // Windows updates from Microsoft Update are all in the OS patch set.
        "PATCH_SET" if windows => Some(vec!["OS".to_string()]),
        _ => return false,
    };
    match values {
        Some(values) => filter.values.iter().any(|pattern| values.iter().any(|v| glob(pattern, v))),
        None => filter.values.iter().any(|pattern| !pattern.is_empty() && pattern.chars().all(|c| c == '*')),
    }
}

/// `*` matches any run of characters, `?` exactly one; everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer match with one backtrack point: the last `*` seen, and how much of
    // the text it has swallowed so far.
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(c) if *c == '?' || *c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                Some((star, swallowed)) => {
                    p = star + 1;
                    t = swallowed + 1;
                    last_star = Some((star, swallowed + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// One patch of a preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub patch: Candidate,
    pub verdict: Verdict,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub approved: usize,
    pub pending: usize,
    pub undated: usize,
    pub not_approved: usize,
    pub rejected: usize,
}

/// A baseline's verdicts on a set of candidates at one instant.
#[derive(Debug, Clone)]
pub struct Preview {
    pub at: DateTime<Utc>,
    /// Approved and pending ones by approval instant (those approved without a date first),
    /// then undated, not approved and rejected; ties by patch id.
    pub rows: Vec<Row>,
    pub totals: Totals,
}

impl Preview {
    pub fn build(baseline: &Baseline, candidates: Vec<Candidate>, at: DateTime<Utc>) -> Preview {
        let mut rows: Vec<Row> = candidates
            .into_iter()
            .map(|patch| {
                let verdict = evaluate(baseline, &patch);
                Row { status: verdict.status_at(at), verdict, patch }
            })
            .collect();
        rows.sort_by(|a, b| {
            let group = |s: Status| match s {
                Status::Approved | Status::Pending => 0,
                other => other as u8,
            };
            (group(a.status), a.verdict.approved_from(), &a.patch.id).cmp(&(
                group(b.status),
                b.verdict.approved_from(),
                &b.patch.id,
            ))
        });
        let mut totals = Totals::default();
        for row in &rows {
            let slot = match row.status {
                Status::Approved => &mut totals.approved,
                Status::Pending => &mut totals.pending,
                Status::Undated => &mut totals.undated,
                Status::NotApproved => &mut totals.not_approved,
                Status::Rejected => &mut totals.rejected,
            };
            *slot += 1;
        }
        Preview { at, rows, totals }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("cannot read SSM's patch catalog: {0}")]
    Catalog(#[source] AwsError),
    #[error("cannot read the imported advisories: {0}")]
    Store(#[source] StoreError),
}

fn from_catalog(patch: AvailablePatch) -> Candidate {
    Candidate {
        released: patch.release_date,
        release_source: patch.release_date.map(|_| ReleaseSource::Ssm),
        id: patch.id,
        title: patch.title,
        classification: patch.classification,
        severity: patch.severity,
        msrc_severity: patch.msrc_severity,
        priority: None,
        section: None,
        product: patch.product,
        product_family: patch.product_family,
        package: patch.package,
        cve_ids: patch.cve_ids,
    }
}

fn from_store(record: PatchRecord, windows: bool) -> Candidate {
    let release = record.release();
    // A sync records the severity SSM listed for the node: MSRC's on Windows.
    let (severity, msrc_severity) = if windows { (None, record.severity) } else { (record.severity, None) };
    Candidate {
        id: record.patch_id,
        title: record.title,
        classification: record.classification,
        severity,
        msrc_severity,
        cve_ids: record.cve_ids,
        released: release.map(|(at, _)| at),
        release_source: release.map(|(_, source)| source),
        ..Candidate::default()
    }
}

/// Merges SSM's catalog with what the store knows. An imported advisory's date replaces
/// SSM's. A patch SSM's catalog lacks is added from the store when its id is in the system's
/// advisory namespace and either an advisory dates it or the system has no SSM catalog at all
/// (then the store's patches, recorded by syncs and imports, are all there is).
pub fn merge(
    operating_system: OperatingSystem,
    catalog: Option<Vec<AvailablePatch>>,
    store: Vec<PatchRecord>,
) -> Vec<Candidate> {
    let has_catalog = catalog.is_some();
    let mut candidates: Vec<Candidate> = catalog.unwrap_or_default().into_iter().map(from_catalog).collect();
    let position: HashMap<String, usize> =
        candidates.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
    let prefixes = operating_system.advisory_prefixes();
    let windows = operating_system == OperatingSystem::Windows;
    for record in store {
        match (position.get(&record.patch_id), record.advisory_release) {
            (Some(&index), Some(advisory)) => {
                candidates[index].released = Some(advisory);
                candidates[index].release_source = Some(ReleaseSource::Advisory);
            }
            (Some(_), None) => {}
            (None, advisory) => {
                let ours = prefixes.iter().any(|p| record.patch_id.starts_with(p));
                if ours && (advisory.is_some() || !has_catalog) {
                    candidates.push(from_store(record, windows));
                }
            }
        }
    }
    candidates
}

/// Every patch the baseline's operating system may see: SSM's catalog where it has one, and
/// the store's imported advisories and synced patches.
pub async fn candidates(
    ctx: &Context,
    operating_system: OperatingSystem,
) -> Result<Vec<Candidate>, PreviewError> {
    let catalog = match PatchCatalog::for_operating_system(operating_system) {
        Some(catalog) => Some(ctx.aws.available_patches(catalog, &[]).await.map_err(PreviewError::Catalog)?),
        None => None,
    };
    let store = ctx.store.patches().await.map_err(PreviewError::Store)?;
    Ok(merge(operating_system, catalog, store))
}

/// What `baseline` approves among its system's patches, as of `at`.
pub async fn preview(ctx: &Context, baseline: &Baseline, at: DateTime<Utc>) -> Result<Preview, PreviewError> {
    let candidates = candidates(ctx, baseline.operating_system).await?;
    Ok(Preview::build(baseline, candidates, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(toml: &str) -> Baseline {
        let loaded = patchd_config::load_sources(vec![("b.toml".into(), toml.to_string())], Utc::now())
            .unwrap_or_else(|e| panic!("the test baseline is valid: {e}"));
        loaded.config.baselines.into_iter().next().expect("one baseline")
    }

    fn instant(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("RFC 3339").with_timezone(&Utc)
    }

    const AT: &str = "2026-06-15T12:00:00Z";

    fn al2(id: &str, classification: &str, severity: &str, released: DateTime<Utc>) -> Candidate {
        Candidate {
            id: id.into(),
            classification: Some(classification.into()),
            severity: Some(severity.into()),
            product: Some("AmazonLinux2".into()),
            product_family: Some("AmazonLinux".into()),
            package: Some("openssl".into()),
            released: Some(released),
            release_source: Some(ReleaseSource::Ssm),
            ..Candidate::default()
        }
    }

    /// Security + Critical,Important after 7 days; `extra` goes in the `[[baseline]]` table.
    fn security_after_7(extra: &str) -> Baseline {
        baseline(&format!(
            r#"
[[baseline]]
name = "patchd-al2"
operating_system = "AMAZON_LINUX_2"
{extra}
[[baseline.rule]]
product = ["*"]
classification = ["Security"]
severity = ["Critical", "Important"]
approve_after_days = 7
compliance_level = "CRITICAL"
"#
        ))
    }

    #[test]
    fn after_days_counts_from_release_to_the_second() {
        let b = security_after_7("");
        let at = instant(AT);
        let day = Duration::days(1);
        let second = Duration::seconds(1);
        // (classification, severity, age, expected status, expected approval instant)
        let cases = [
            ("Security", "Critical", day * 7, Status::Approved, Some(at)),
            ("Security", "Important", day * 30, Status::Approved, Some(at - day * 23)),
            ("Security", "Critical", day * 7 - second, Status::Pending, Some(at + second)),
            ("Security", "Important", Duration::zero(), Status::Pending, Some(at + day * 7)),
            ("Security", "Medium", day * 90, Status::NotApproved, None),
            ("Bugfix", "Critical", day * 90, Status::NotApproved, None),
        ];
        for (classification, severity, age, status, from) in cases {
            let verdict = evaluate(&b, &al2("ALAS2-1", classification, severity, at - age));
            assert_eq!(verdict.status_at(at), status, "{classification}/{severity} aged {age}");
            assert_eq!(verdict.approved_from(), from, "{classification}/{severity} aged {age}");
            if status != Status::NotApproved {
                assert_eq!(
                    verdict,
                    Verdict::Approved { from, by: ApprovedBy::Rule(0), compliance_level: "CRITICAL" }
                );
            }
        }
    }

    #[test]
    fn filter_values_are_case_sensitive_globs() {
        let at = instant(AT);
        let old = at - Duration::days(100);
        for (filter, expected) in [
            (r#"classification = ["Secur*"]"#, true),
            (r#"classification = ["Securit?"]"#, true),
            (r#"classification = ["security"]"#, false),
            (r#"classification = ["Sec"]"#, false),
            (r#"classification = ["*ity"]"#, true),
            (r#"product = ["AmazonLinux2"]"#, true),
            (r#"product = ["AmazonLinux2.0"]"#, true),
            (r#"product = ["AmazonLinux2023"]"#, false),
            (r#"product = ["Amazon*"]"#, true),
            (r#"severity = ["Low", "Critical"]"#, true),
        ] {
            let b = baseline(&format!(
                "[[baseline]]\nname = \"b-1\"\noperating_system = \"AMAZON_LINUX_2\"\n[[baseline.rule]]\n{filter}\napprove_after_days = 0\n"
            ));
            let verdict = evaluate(&b, &al2("ALAS2-1", "Security", "Critical", old));
            assert_eq!(verdict.status_at(at) == Status::Approved, expected, "{filter}");
        }
    }

    #[test]
    fn windows_filters_on_msrc_severity_and_patch_set() {
        let b = baseline(
            r#"
[[baseline]]
name = "patchd-win"
operating_system = "WINDOWS"
[[baseline.rule]]
patch_set = ["OS"]
classification = ["SecurityUpdates", "CriticalUpdates"]
msrc_severity = ["Critical", "Important"]
approve_after_days = 2
"#,
        );
        let at = instant(AT);
        let kb = |classification: &str, msrc: &str, age_days: i64| Candidate {
            id: "KB5030001".into(),
            classification: Some(classification.into()),
            msrc_severity: Some(msrc.into()),
            // A vendor severity on a Windows patch is not what MSRC_SEVERITY reads.
            severity: Some("Low".into()),
            product: Some("WindowsServer2022".into()),
            released: Some(at - Duration::days(age_days)),
            ..Candidate::default()
        };
        for (classification, msrc, age, expected) in [
            ("SecurityUpdates", "Critical", 3, Status::Approved),
            ("CriticalUpdates", "Important", 2, Status::Approved),
            ("SecurityUpdates", "Important", 1, Status::Pending),
            ("SecurityUpdates", "Moderate", 30, Status::NotApproved),
            ("Updates", "Critical", 30, Status::NotApproved),
        ] {
            assert_eq!(
                evaluate(&b, &kb(classification, msrc, age)).status_at(at),
                expected,
                "{classification}/{msrc}"
            );
        }
    }

    #[test]
    fn approve_until_takes_releases_up_to_the_end_of_that_day() {
        let b = baseline(
            r#"
[[baseline]]
name = "patchd-frozen"
operating_system = "REDHAT_ENTERPRISE_LINUX"
[[baseline.rule]]
classification = ["Security"]
approve_until = 2026-06-01
"#,
        );
        let at = instant(AT);
        let last_moment = instant("2026-06-01T23:59:59Z");
        let approved = evaluate(&b, &al2("RHSA-2026:1", "Security", "Low", last_moment));
        assert_eq!(approved.status_at(at), Status::Approved);
        assert_eq!(approved.approved_from(), Some(last_moment), "approved from its release");
        let next_day = evaluate(&b, &al2("RHSA-2026:2", "Security", "Low", instant("2026-06-02T00:00:00Z")));
        assert_eq!(next_day, Verdict::NotApproved);
    }

    #[test]
    fn debian_family_approves_on_release_even_without_a_date() {
        let b = baseline(
            r#"
[[baseline]]
name = "patchd-ubuntu"
operating_system = "UBUNTU"
[[baseline.rule]]
priority = ["Required", "Important"]
"#,
        );
        let at = instant(AT);
        let usn = |priority: &str, released: Option<DateTime<Utc>>| Candidate {
            id: "USN-7001-1".into(),
            priority: Some(priority.into()),
            released,
            ..Candidate::default()
        };
        let today = at - Duration::hours(1);
        assert_eq!(evaluate(&b, &usn("Important", Some(today))).approved_from(), Some(today));
        assert_eq!(evaluate(&b, &usn("Important", Some(today))).status_at(at), Status::Approved);
        assert_eq!(evaluate(&b, &usn("Required", None)).status_at(at), Status::Approved);
        assert_eq!(evaluate(&b, &usn("Optional", Some(today))), Verdict::NotApproved);
    }

    #[test]
    fn explicit_lists_global_filters_and_rejection() {
        let toml = |extra: &str| {
            format!(
                r#"
[[baseline]]
name = "patchd-al2"
operating_system = "AMAZON_LINUX_2"
approved_patches_compliance_level = "HIGH"
{extra}
[baseline.global_filters]
classification = ["Bugfix"]
[[baseline.rule]]
severity = ["*"]
approve_after_days = 0
"#
            )
        };
        let at = instant(AT);
        let patch = al2("ALAS2-7", "Security", "Low", at - Duration::days(3));
        assert_eq!(
            evaluate(&baseline(&toml("")), &patch),
            Verdict::NotApproved,
            "global filters must match too"
        );

        let listed = evaluate(&baseline(&toml(r#"approved_patches = ["ALAS2-7"]"#)), &patch);
        assert_eq!(
            listed,
            Verdict::Approved {
                from: patch.released,
                by: ApprovedBy::ApprovedPatches,
                compliance_level: "HIGH"
            }
        );
        let by_package = evaluate(&baseline(&toml(r#"approved_patches = ["openssl"]"#)), &patch);
        assert_eq!(by_package.status_at(at), Status::Approved, "lists may name the package");

        let rejected = baseline(&toml(
            r#"approved_patches = ["ALAS2-7"]
rejected_patches = ["openssl"]
rejected_patches_action = "BLOCK""#,
        ));
        assert_eq!(
            evaluate(&rejected, &patch),
            Verdict::Rejected { action: RejectedPatchesAction::Block },
            "rejection wins over approval"
        );
        let allowed = baseline(&toml(r#"rejected_patches = ["ALAS2-7"]"#));
        assert_eq!(
            evaluate(&allowed, &patch),
            Verdict::Rejected { action: RejectedPatchesAction::AllowAsDependency }
        );
    }

    #[test]
    fn earliest_rule_wins_then_the_more_severe_level() {
        let b = baseline(
            r#"
[[baseline]]
name = "patchd-al2"
operating_system = "AMAZON_LINUX_2"
[[baseline.rule]]
severity = ["Critical"]
approve_after_days = 14
compliance_level = "LOW"
[[baseline.rule]]
classification = ["Security"]
approve_after_days = 2
compliance_level = "MEDIUM"
[[baseline.rule]]
product = ["*"]
approve_after_days = 2
compliance_level = "CRITICAL"
[[baseline.rule]]
product = ["AmazonLinux2"]
approve_after_days = 2
compliance_level = "CRITICAL"
"#,
        );
        let released = instant(AT);
        let verdict = evaluate(&b, &al2("ALAS2-1", "Security", "Critical", released));
        assert_eq!(
            verdict,
            Verdict::Approved {
                from: Some(released + Duration::days(2)),
                by: ApprovedBy::Rule(2),
                compliance_level: "CRITICAL"
            }
        );
    }

    #[test]
    fn unknown_properties_match_only_wildcards_and_unknown_dates_are_undated() {
        let b = security_after_7("");
        let at = instant(AT);
        // An advisory known only by id and date: no classification or severity to select it.
        let bare = Candidate { id: "ALAS2-9".into(), released: Some(at), ..Candidate::default() };
        assert_eq!(evaluate(&b, &bare), Verdict::NotApproved);

        let wildcard = baseline(
            "[[baseline]]\nname = \"b-1\"\noperating_system = \"AMAZON_LINUX_2\"\n[[baseline.rule]]\nproduct = [\"*\"]\napprove_after_days = 1\n",
        );
        assert_eq!(evaluate(&wildcard, &bare).status_at(at), Status::Pending);

        let undated = Candidate { released: None, ..al2("ALAS2-3", "Security", "Critical", at) };
        assert_eq!(evaluate(&b, &undated), Verdict::Undated { rule: 0, compliance_level: "CRITICAL" });
        assert_eq!(evaluate(&b, &undated).status_at(at), Status::Undated);
    }

    #[test]
    fn globbing() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "x", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("a*c", "abcbc", true),
            ("?", "", false),
            ("Important", "important", false),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern:?} vs {text:?}");
        }
    }

    fn record(id: &str, advisory: Option<&str>, severity: Option<&str>) -> PatchRecord {
        PatchRecord {
            patch_id: id.into(),
            title: None,
            classification: severity.map(|_| "Security".to_string()),
            severity: severity.map(str::to_string),
            cve_ids: vec![],
            ssm_release: None,
            advisory_release: advisory.map(instant),
            advisory_source: advisory.map(|_| "import:dates.csv".to_string()),
            first_seen_missing: None,
        }
    }

    fn available(id: &str, released: &str) -> AvailablePatch {
        AvailablePatch {
            id: id.into(),
            kb_number: None,
            title: None,
            release_date: Some(instant(released)),
            classification: Some("Security".into()),
            severity: Some("Critical".into()),
            msrc_severity: None,
            cve_ids: vec![],
            advisory_ids: vec![],
            product: Some("AmazonLinux2".into()),
            product_family: None,
            package: None,
        }
    }

    #[test]
    fn merge_prefers_advisory_dates_and_keeps_other_systems_out() {
        let catalog =
            vec![available("ALAS2-1", "2026-06-01T00:00:00Z"), available("ALAS2-2", "2026-06-02T00:00:00Z")];
        let store = vec![
            record("ALAS2-1", Some("2026-05-20T00:00:00Z"), None),
            record("ALAS2-2", None, Some("Low")),
            record("ALAS2-3", Some("2026-05-21T00:00:00Z"), None),
            record("ALAS2-4", None, Some("Low")),
            record("ALAS2023-5", Some("2026-05-22T00:00:00Z"), None),
            record("RHSA-2026:6", Some("2026-05-23T00:00:00Z"), None),
        ];
        let merged = merge(OperatingSystem::AmazonLinux2, Some(catalog), store.clone());
        let summary: Vec<_> = merged.iter().map(|c| (c.id.as_str(), c.released, c.release_source)).collect();
        assert_eq!(
            summary,
            [
                ("ALAS2-1", Some(instant("2026-05-20T00:00:00Z")), Some(ReleaseSource::Advisory)),
                ("ALAS2-2", Some(instant("2026-06-02T00:00:00Z")), Some(ReleaseSource::Ssm)),
                ("ALAS2-3", Some(instant("2026-05-21T00:00:00Z")), Some(ReleaseSource::Advisory)),
            ],
            "ALAS2-4 is SSM's to list; other systems' advisories stay out"
        );
        assert_eq!(merged[1].severity.as_deref(), Some("Critical"), "the catalog's properties are kept");

        // Without an SSM catalog the store is all there is, dated or not.
        let rhel = merge(OperatingSystem::RedhatEnterpriseLinux, None, store.clone());
        assert_eq!(rhel.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["RHSA-2026:6"]);
        let al2023 = merge(OperatingSystem::AmazonLinux2023, None, store);
        assert_eq!(al2023.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["ALAS2023-5"]);
    }

    #[test]
    fn a_preview_sorts_by_approval_and_counts_each_status() {
        let b = security_after_7(r#"rejected_patches = ["ALAS2-R"]"#);
        let at = instant(AT);
        let day = Duration::days(1);
        let candidates = vec![
            al2("ALAS2-R", "Security", "Critical", at - day * 30),
            al2("ALAS2-N", "Bugfix", "Low", at - day * 30),
            al2("ALAS2-P", "Security", "Critical", at - day * 2),
            Candidate { released: None, ..al2("ALAS2-U", "Security", "Critical", at) },
            al2("ALAS2-B", "Security", "Important", at - day * 20),
            al2("ALAS2-A", "Security", "Critical", at - day * 8),
        ];
        let preview = Preview::build(&b, candidates, at);
        let order: Vec<(&str, Status)> =
            preview.rows.iter().map(|r| (r.patch.id.as_str(), r.status)).collect();
        assert_eq!(
            order,
            [
                ("ALAS2-B", Status::Approved),
                ("ALAS2-A", Status::Approved),
                ("ALAS2-P", Status::Pending),
                ("ALAS2-U", Status::Undated),
                ("ALAS2-N", Status::NotApproved),
                ("ALAS2-R", Status::Rejected),
            ]
        );
        assert_eq!(
            preview.totals,
            Totals { approved: 2, pending: 1, undated: 1, not_approved: 1, rejected: 1 }
        );
    }
}
