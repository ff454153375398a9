//! Patch baselines: the model SSM stores, AWS's predefined defaults, and which patches a
//! baseline approves.

use chrono::NaiveDate;

use crate::catalog::Patch;
use crate::clock::Millis;
use crate::platform::{approval_delay_applies, Platform};

const DAY_MS: i64 = 86_400_000;

/// The account AWS's own patch baselines belong to in their ARNs.
pub const AWS_OWNER_ACCOUNT: &str = "075727635805";

pub const COMPLIANCE_LEVELS: [&str; 6] =
    ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNSPECIFIED"];

#[derive(Debug, Clone, PartialEq)]
pub struct PatchFilter {
    pub key: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PatchRule {
    pub filters: Vec<PatchFilter>,
    pub compliance_level: Option<String>,
    pub approve_after_days: Option<u32>,
    /// YYYY-MM-DD, as SSM takes it.
    pub approve_until_date: Option<String>,
    pub enable_non_security: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    pub id: String,
    pub name: String,
    pub operating_system: String,
    pub description: Option<String>,
    /// `None` when the baseline has no GlobalFilters at all (as opposed to an empty group).
    pub global_filters: Option<Vec<PatchFilter>>,
    pub approval_rules: Option<Vec<PatchRule>>,
    pub approved_patches: Vec<String>,
    pub approved_patches_compliance_level: Option<String>,
    pub approved_patches_enable_non_security: Option<bool>,
    pub rejected_patches: Vec<String>,
    pub rejected_patches_action: Option<String>,
    /// Kept verbatim: the simulator has no custom repositories.
    pub sources: Vec<serde_json::Value>,
    pub available_security_updates_compliance_status: Option<String>,
    pub created_ms: Millis,
    pub modified_ms: Millis,
    pub predefined: bool,
    pub tags: Vec<(String, String)>,
    /// Bumped on every update, so cached approvals know to refresh.
    pub revision: u64,
}

/// What a baseline says about one patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    NotApproved,
    Rejected,
    /// Approved from `from_ms` on; `critical` when its compliance level is CRITICAL.
    Approved {
        from_ms: Millis,
        critical: bool,
    },
}

impl Approval {
    pub fn approved_at(self, now_ms: Millis) -> bool {
        matches!(self, Approval::Approved { from_ms, .. } if from_ms <= now_ms)
    }
}

fn level_rank(level: &str) -> usize {
    COMPLIANCE_LEVELS.iter().position(|l| *l == level).unwrap_or(COMPLIANCE_LEVELS.len())
}

fn filter_matches(filter: &PatchFilter, patch: &Patch) -> bool {
    match patch.filter_property(&filter.key) {
        Some(property) => property.matches_any(&filter.values),
        None => false,
    }
}

fn listed(list: &[String], patch: &Patch) -> bool {
    list.iter().any(|entry| entry == &patch.id || entry == &patch.package)
}

impl Baseline {
    pub fn rejected_action_blocks(&self) -> bool {
        self.rejected_patches_action.as_deref() == Some("BLOCK")
    }

    /// Whether security updates that are available but not approved are reported
    /// (`AVAILABLE_SECURITY_UPDATE`), and whether they count as non-compliant.
    pub fn available_security_updates(&self) -> Option<bool> {
        if self.operating_system != "WINDOWS" {
            return None;
        }
        self.available_security_updates_compliance_status.as_deref().map(|status| status == "NON_COMPLIANT")
    }

    /// The baseline's verdict on each patch, independent of time except through `from_ms`.
    pub fn approvals(&self, patches: &[Patch]) -> Vec<Approval> {
        patches.iter().map(|patch| self.approval(patch)).collect()
    }

    pub fn approval(&self, patch: &Patch) -> Approval {
        if listed(&self.rejected_patches, patch) {
            return Approval::Rejected;
        }
        if listed(&self.approved_patches, patch) {
            let level = self.approved_patches_compliance_level.as_deref().unwrap_or("UNSPECIFIED");
            return Approval::Approved { from_ms: Millis::MIN, critical: level == "CRITICAL" };
        }
        let global = self.global_filters.as_deref().unwrap_or_default();
        if !global.iter().all(|filter| filter_matches(filter, patch)) {
            return Approval::NotApproved;
        }
        let delays_apply = approval_delay_applies(&self.operating_system);
        // Among the rules that select the patch, the earliest approval wins; on a tie, the most
        // severe compliance level.
        let best = self
            .approval_rules
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter(|rule| rule.filters.iter().all(|filter| filter_matches(filter, patch)))
            .filter_map(|rule| {
                let from_ms = if !delays_apply {
                    patch.released_ms
                } else if let Some(until) = &rule.approve_until_date {
                    let cutoff = NaiveDate::parse_from_str(until, "%Y-%m-%d").ok()?;
                    let end_of_day = cutoff.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis() + DAY_MS;
                    if patch.released_ms >= end_of_day {
                        return None;
                    }
                    patch.released_ms
                } else {
                    patch.released_ms + i64::from(rule.approve_after_days.unwrap_or(0)) * DAY_MS
                };
                let level = rule.compliance_level.as_deref().unwrap_or("UNSPECIFIED");
                Some((from_ms, level_rank(level), level == "CRITICAL"))
            })
            .min_by_key(|(from_ms, rank, _)| (*from_ms, *rank));
        match best {
            Some((from_ms, _, critical)) => Approval::Approved { from_ms, critical },
            None => Approval::NotApproved,
        }
    }
}

/// A deterministic 17-hex-digit suffix for ids derived from a name.
pub fn stable_hex17(text: &str) -> String {
    // FNV-1a: stable across runs and platforms, unlike the std hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let extra = (hash >> 60) ^ (hash & 0xf);
    format!("{hash:016x}{extra:x}")
}

fn filter(key: &str, values: &[&str]) -> PatchFilter {
    PatchFilter { key: key.into(), values: values.iter().map(|v| v.to_string()).collect() }
}

fn rule(filters: Vec<PatchFilter>, approve_after_days: Option<u32>) -> PatchRule {
    PatchRule {
        filters,
        compliance_level: Some("UNSPECIFIED".into()),
        approve_after_days,
        approve_until_date: None,
        enable_non_security: Some(false),
    }
}

/// AWS's predefined default baseline for a platform, as GetPatchBaseline shows it.
pub fn predefined(platform: Platform, region: &str, created_ms: Millis) -> Baseline {
    let name = platform.default_baseline_name();
    let (rules, description) = match platform {
        Platform::AmazonLinux2 | Platform::AmazonLinux2023 | Platform::Rhel9 => (
            vec![
                rule(
                    vec![
                        filter("PRODUCT", &["*"]),
                        filter("CLASSIFICATION", &["Security"]),
                        filter("SEVERITY", &["Critical", "Important"]),
                    ],
                    Some(7),
                ),
                rule(vec![filter("PRODUCT", &["*"]), filter("CLASSIFICATION", &["Bugfix"])], Some(7)),
            ],
            format!(
                "Default Patch Baseline for {} Provided by AWS.",
                match platform {
                    Platform::AmazonLinux2 => "Amazon Linux 2",
                    Platform::AmazonLinux2023 => "Amazon Linux 2023",
                    _ => "Redhat Enterprise Linux",
                }
            ),
        ),
        Platform::Ubuntu2204 => (
            vec![rule(
                vec![
                    filter("PRODUCT", &["*"]),
                    filter("PRIORITY", &["Required", "Important", "Standard", "Optional", "Extra"]),
                ],
                None,
            )],
            "Default Patch Baseline for Ubuntu Provided by AWS.".to_string(),
        ),
        Platform::WindowsServer2022 => (
            vec![rule(
                vec![
                    filter("PRODUCT", &["*"]),
                    filter("CLASSIFICATION", &["CriticalUpdates", "SecurityUpdates"]),
                    filter("MSRC_SEVERITY", &["Critical", "Important"]),
                ],
                Some(7),
            )],
            "Windows patch baseline for operating system updates Provided by AWS.".to_string(),
        ),
    };
    Baseline {
        id: format!("arn:aws:ssm:{region}:{AWS_OWNER_ACCOUNT}:patchbaseline/pb-{}", stable_hex17(name)),
        name: name.to_string(),
        operating_system: platform.operating_system().to_string(),
        description: Some(description),
        global_filters: Some(vec![]),
        approval_rules: Some(rules),
        approved_patches: vec![],
        approved_patches_compliance_level: Some("UNSPECIFIED".into()),
        approved_patches_enable_non_security: Some(false),
        rejected_patches: vec![],
        rejected_patches_action: Some("ALLOW_AS_DEPENDENCY".into()),
        sources: vec![],
        available_security_updates_compliance_status: None,
        created_ms,
        modified_ms: created_ms,
        predefined: true,
        tags: vec![],
        revision: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, CatalogShape};

    const START: Millis = 1_795_000_000_000;

    fn patch(platform: Platform, classification: &str, severity: &str, age_days: i64) -> Patch {
        Patch {
            id: format!("ID-{classification}-{severity}-{age_days}"),
            platform,
            title: "t".into(),
            package: "openssl".into(),
            version: "1".into(),
            release_label: "1".into(),
            classification: classification.into(),
            severity: severity.into(),
            priority: "Important".into(),
            section: "libs".into(),
            cves: vec!["CVE-2026-1".into()],
            released_ms: START - age_days * DAY_MS,
            needs_reboot: false,
        }
    }

    fn custom(os: &str, rules: Vec<PatchRule>) -> Baseline {
        let mut baseline = predefined(Platform::AmazonLinux2, "us-east-1", 0);
        baseline.predefined = false;
        baseline.operating_system = os.into();
        baseline.approval_rules = Some(rules);
        baseline
    }

    /// (classification, severity, age in days, approved now?)
    fn check(baseline: &Baseline, platform: Platform, cases: &[(&str, &str, i64, bool)]) {
        for (classification, severity, age, expected) in cases {
            let p = patch(platform, classification, severity, *age);
            assert_eq!(
                baseline.approval(&p).approved_at(START),
                *expected,
                "{} {classification}/{severity} aged {age}d",
                baseline.name
            );
        }
    }

    #[test]
    fn amazon_linux_default_approves_critical_and_important_security_after_seven_days() {
        let baseline = predefined(Platform::AmazonLinux2, "us-east-1", 0);
        check(
            &baseline,
            Platform::AmazonLinux2,
            &[
                ("Security", "Critical", 8, true),
                ("Security", "Important", 30, true),
                ("Security", "Critical", 6, false),
                ("Security", "Medium", 90, false),
                ("Bugfix", "Low", 8, true),
                ("Enhancement", "Low", 80, false),
            ],
        );
        assert!(baseline.id.starts_with("arn:aws:ssm:us-east-1:075727635805:patchbaseline/pb-"));
        assert_eq!(baseline.id.len(), "arn:aws:ssm:us-east-1:075727635805:patchbaseline/pb-".len() + 17);
    }

    #[test]
    fn windows_default_uses_msrc_severity() {
        let baseline = predefined(Platform::WindowsServer2022, "eu-west-1", 0);
        check(
            &baseline,
            Platform::WindowsServer2022,
            &[
                ("SecurityUpdates", "Critical", 10, true),
                ("SecurityUpdates", "Moderate", 10, false),
                ("CriticalUpdates", "Important", 10, true),
                ("Updates", "Unspecified", 100, false),
                ("SecurityUpdates", "Important", 2, false),
            ],
        );
    }

    #[test]
    fn ubuntu_approves_on_release_whatever_the_delay() {
        let mut baseline = predefined(Platform::Ubuntu2204, "us-east-1", 0);
        check(&baseline, Platform::Ubuntu2204, &[("Security", "High", 0, true)]);
        if let Some(rules) = baseline.approval_rules.as_mut() {
            rules[0].approve_after_days = Some(30);
        }
        check(&baseline, Platform::Ubuntu2204, &[("Security", "High", 1, true)]);
    }

    #[test]
    fn approve_until_date_cuts_off_later_releases() {
        let mut r = rule(vec![filter("CLASSIFICATION", &["Security"])], None);
        let cutoff = crate::clock::to_datetime(START - 10 * DAY_MS).format("%Y-%m-%d").to_string();
        r.approve_until_date = Some(cutoff);
        let baseline = custom("AMAZON_LINUX_2", vec![r]);
        check(
            &baseline,
            Platform::AmazonLinux2,
            &[("Security", "Low", 20, true), ("Security", "Low", 5, false)],
        );
    }

    #[test]
    fn explicit_lists_and_global_filters() {
        let mut baseline = custom("AMAZON_LINUX_2", vec![rule(vec![filter("SEVERITY", &["*"])], Some(0))]);
        let p = patch(Platform::AmazonLinux2, "Security", "Low", 3);
        assert!(baseline.approval(&p).approved_at(START));
        baseline.global_filters = Some(vec![filter("CLASSIFICATION", &["Bugfix"])]);
        assert_eq!(baseline.approval(&p), Approval::NotApproved);
        baseline.approved_patches = vec![p.id.clone()];
        baseline.approved_patches_compliance_level = Some("CRITICAL".into());
        assert_eq!(baseline.approval(&p), Approval::Approved { from_ms: Millis::MIN, critical: true });
        baseline.rejected_patches = vec!["openssl".into()];
        assert_eq!(baseline.approval(&p), Approval::Rejected, "rejection wins over approval");
    }

    #[test]
    fn earliest_rule_wins_and_carries_its_level() {
        let mut slow = rule(vec![filter("SEVERITY", &["Critical"])], Some(14));
        slow.compliance_level = Some("LOW".into());
        let mut fast = rule(vec![filter("CLASSIFICATION", &["Security"])], Some(2));
        fast.compliance_level = Some("CRITICAL".into());
        let baseline = custom("AMAZON_LINUX_2", vec![slow, fast]);
        let p = patch(Platform::AmazonLinux2, "Security", "Critical", 0);
        assert_eq!(
            baseline.approval(&p),
            Approval::Approved { from_ms: p.released_ms + 2 * DAY_MS, critical: true }
        );
    }

    #[test]
    fn defaults_leave_findings_in_a_generated_catalog() {
        let shape = CatalogShape { patches: 200, history_days: 540, future_days: 30, future_share: 0.03 };
        let catalog = Catalog::generate([shape; 5], START, 2);
        for platform in Platform::ALL {
            let baseline = predefined(platform, "us-east-1", 0);
            let approvals = baseline.approvals(catalog.patches(platform));
            let approved = approvals.iter().filter(|a| a.approved_at(START)).count();
            assert!(approved > 10 && approved < 200, "{platform}: {approved} approved");
        }
    }

    #[test]
    fn stable_ids() {
        assert_eq!(stable_hex17("x"), stable_hex17("x"));
        assert_eq!(stable_hex17("AWS-DefaultPatchBaseline").len(), 17);
    }
}
