//! Table tests for every rule of the SLA engine, boundaries to the second, and timezones.

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use patchd_config::{Exception, ExceptionScope, Located, Origin, RankRule, RiskRank, SlaPolicy};
use patchd_sla::*;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn origin() -> Origin {
    Origin { file: std::sync::Arc::new("t.toml".into()), line: 1, col: 1 }
}

fn policy() -> SlaPolicy {
    SlaPolicy {
        rules: vec![
            RankRule {
                cves: vec!["CVE-2024-3094".into()],
                rank: RiskRank::Critical,
                reason: Some("xz".into()),
                origin: origin(),
            },
            RankRule {
                cves: vec!["CVE-2023-0001".into()],
                rank: RiskRank::Low,
                reason: None,
                origin: origin(),
            },
        ],
        ..SlaPolicy::default()
    }
}

fn cves(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rank_rules() {
    let kev = KevCatalog::from_cves(["CVE-2021-44228"]);
    let p = policy();
    let cases: &[(Option<&str>, &[&str], RiskRank, &str)] = &[
        (Some("Critical"), &[], RiskRank::Critical, "vendor critical"),
        (Some("Important"), &[], RiskRank::High, "ALAS important"),
        (Some("High"), &[], RiskRank::High, "high"),
        (Some("Moderate"), &[], RiskRank::Medium, "RHSA moderate"),
        (Some("Medium"), &[], RiskRank::Medium, "medium"),
        (Some("Low"), &[], RiskRank::Low, "low"),
        (None, &[], RiskRank::Medium, "unknown: policy default"),
        (Some("Unspecified"), &[], RiskRank::Medium, "unrecognised: policy default"),
        (Some("Low"), &["CVE-2024-3094"], RiskRank::Critical, "raised by a rule"),
        (Some("low"), &["cve-2024-3094"], RiskRank::Critical, "CVE ids match case-insensitively"),
        (Some("Medium"), &["CVE-2021-44228"], RiskRank::Critical, "raised by KEV"),
        (Some("Critical"), &["CVE-2023-0001"], RiskRank::Critical, "a rule never lowers"),
        (Some("High"), &["CVE-2099-0000"], RiskRank::High, "unrelated CVE"),
    ];
    for (severity, list, expected, why) in cases {
        let got = rank(*severity, &cves(list), &p, &kev);
        assert_eq!(got.rank, *expected, "{why}");
    }
}

#[test]
fn rank_reasons_explain_the_raise() {
    let kev = KevCatalog::from_cves(["CVE-2021-44228"]);
    let got = rank(Some("Low"), &cves(&["CVE-2021-44228"]), &policy(), &kev);
    assert_eq!(got.reason, RankReason::KnownExploited { cve: "CVE-2021-44228".into() });
    let got = rank(Some("Low"), &cves(&["CVE-2024-3094"]), &policy(), &kev);
    assert_eq!(got.reason, RankReason::Rule { cve: "CVE-2024-3094".into(), reason: Some("xz".into()) });
    let got = rank(None, &[], &policy(), &kev);
    assert_eq!(got.reason, RankReason::PolicyDefault);
}

#[test]
fn policy_default_rank_applies_to_unknown_severity() {
    let p = SlaPolicy { default_rank: RiskRank::High, ..SlaPolicy::default() };
    assert_eq!(rank(None, &[], &p, &KevCatalog::default()).rank, RiskRank::High);
}

#[test]
fn kev_catalog_parses_cisa_json() {
    let json = r#"{"title":"CISA Catalog","catalogVersion":"2026.11.27","count":2,"vulnerabilities":[
        {"cveID":"CVE-2021-44228","vendorProject":"Apache","dateAdded":"2021-12-10","dueDate":"2021-12-24"},
        {"cveID":"CVE-2024-3094","vendorProject":"XZ","dateAdded":"2024-04-01","dueDate":"2024-04-22"}]}"#;
    let kev = KevCatalog::from_json(json).unwrap();
    assert_eq!(kev.len(), 2);
    assert!(kev.contains("cve-2024-3094"));
    assert!(KevCatalog::from_json("{\"vulnerabilities\": 3}").is_err());
    assert!(KevCatalog::from_json("not json").unwrap_err().to_string().contains("CISA"));
}

#[test]
fn clock_prefers_release_dates() {
    let seen = t("2026-06-10T08:00:00Z");
    let ssm = t("2026-06-01T00:00:00Z");
    let advisory = t("2026-05-30T00:00:00Z");
    assert_eq!(clock(Some(ssm), None, seen), SlaClock { start: ssm, source: ClockSource::Ssm });
    assert_eq!(
        clock(Some(ssm), Some(advisory), seen),
        SlaClock { start: advisory, source: ClockSource::Advisory }
    );
    let estimated = clock(None, None, seen);
    assert_eq!(estimated, SlaClock { start: seen, source: ClockSource::FirstSeen });
    assert!(estimated.estimated());
    assert!(!clock(Some(ssm), None, seen).estimated());
}

#[test]
fn due_dates_per_rank() {
    let p = SlaPolicy { high_days: 60, ..SlaPolicy::default() };
    let c = SlaClock { start: t("2026-01-31T12:00:00Z"), source: ClockSource::Ssm };
    assert_eq!(due_date(&c, RiskRank::Critical, &p), t("2026-03-02T12:00:00Z"));
    assert_eq!(due_date(&c, RiskRank::High, &p), t("2026-04-01T12:00:00Z"));
    assert_eq!(due_date(&c, RiskRank::Low, &p), t("2026-05-01T12:00:00Z"));
}

#[test]
fn due_dates_are_instants_whatever_the_timezone_of_the_release() {
    // A release stamped 2026-03-01T00:30+01:00 is 2026-02-28T23:30Z; thirty days later is the
    // same instant in any zone, and DST in between changes nothing.
    let berlin = FixedOffset::east_opt(3600).unwrap();
    let release = berlin.with_ymd_and_hms(2026, 3, 1, 0, 30, 0).unwrap().with_timezone(&Utc);
    let c = SlaClock { start: release, source: ClockSource::Advisory };
    let due = due_date(&c, RiskRank::Critical, &SlaPolicy::default());
    assert_eq!(due, t("2026-03-30T23:30:00Z"));
    assert_eq!(due, t("2026-03-31T01:30:00+02:00"));
}

#[test]
fn status_boundaries_to_the_second() {
    let p = SlaPolicy::default(); // due soon 7 days before
    let due = t("2026-12-31T12:00:00Z");
    let warn_starts = due - Duration::days(7);
    let one = Duration::seconds(1);
    let cases = [
        (warn_starts - one, SlaStatus::Ok),
        (warn_starts, SlaStatus::DueSoon),
        (due - one, SlaStatus::DueSoon),
        (due, SlaStatus::DueSoon),
        (due + one, SlaStatus::Breached),
    ];
    for (at, expected) in cases {
        assert_eq!(status(FindingState::Open, due, at, &p, false), expected, "at {at}");
    }
}

#[test]
fn remediated_findings_are_met_or_missed() {
    let p = SlaPolicy::default();
    let due = t("2026-12-31T12:00:00Z");
    let later = t("2027-06-01T00:00:00Z");
    let one = Duration::seconds(1);
    let installed = |at| FindingState::Remediated { installed_at: at };
    assert_eq!(status(installed(due - one), due, later, &p, false), SlaStatus::Met);
    assert_eq!(status(installed(due), due, later, &p, false), SlaStatus::Met);
    assert_eq!(status(installed(due + one), due, later, &p, false), SlaStatus::Missed);
    // An exception does not rewrite history.
    assert_eq!(status(installed(due + one), due, later, &p, true), SlaStatus::Missed);
}

#[test]
fn zero_warning_window_means_no_due_soon() {
    let p = SlaPolicy { due_soon_days: 0, ..SlaPolicy::default() };
    let due = t("2026-12-31T12:00:00Z");
    assert_eq!(status(FindingState::Open, due, due - Duration::seconds(1), &p, false), SlaStatus::Ok);
    assert_eq!(status(FindingState::Open, due, due, &p, false), SlaStatus::DueSoon);
}

fn exception(scope: ExceptionScope, expires: (i32, u32, u32)) -> Exception {
    Exception {
        name: "x".into(),
        patches: vec!["ALAS2-2026-1".into()],
        scope,
        reason: "r".into(),
        owner: "o".into(),
        expires: NaiveDate::from_ymd_opt(expires.0, expires.1, expires.2).unwrap(),
        origin: origin(),
    }
}

#[test]
fn exceptions_cover_listed_instances_or_a_group_until_they_expire() {
    let by_instance = [exception(ExceptionScope::Instances(vec!["i-0abc1234".into()]), (2026, 12, 31))];
    let group = Located { value: "legacy".to_string(), origin: origin() };
    let by_group = [exception(ExceptionScope::Group(group), (2026, 12, 31))];
    let at = t("2026-12-31T23:59:59Z");
    assert!(covering_exception(&by_instance, "ALAS2-2026-1", "i-0abc1234", &[], at).is_some());
    assert!(
        covering_exception(&by_instance, "ALAS2-2026-1", "i-0def5678", &[], at).is_none(),
        "other instance"
    );
    assert!(covering_exception(&by_instance, "ALAS2-2026-2", "i-0abc1234", &[], at).is_none(), "other patch");
    assert!(covering_exception(&by_group, "ALAS2-2026-1", "i-0def5678", &["web", "legacy"], at).is_some());
    assert!(covering_exception(&by_group, "ALAS2-2026-1", "i-0def5678", &["web"], at).is_none());
    // The expiry day is included to its last second, and not one second more.
    let expired = t("2027-01-01T00:00:00Z");
    assert!(covering_exception(&by_instance, "ALAS2-2026-1", "i-0abc1234", &[], expired).is_none());
}

#[test]
fn an_excepted_open_finding_is_excepted_even_when_past_due() {
    let due = t("2026-12-01T00:00:00Z");
    let at = t("2026-12-15T00:00:00Z");
    assert_eq!(status(FindingState::Open, due, at, &SlaPolicy::default(), true), SlaStatus::Excepted);
    assert_eq!(status(FindingState::Open, due, at, &SlaPolicy::default(), false), SlaStatus::Breached);
}

/// Group membership follows the group's account and region scope: an exception granted to a
/// group scoped to one account does not cover the same instance id in another account.
#[test]
fn groups_and_exceptions_follow_the_scope() {
    let text = r#"
[aws]
region = "eu-west-1"

[[aws.account]]
name = "payments"
role_arn = "arn:aws:iam::210987654321:role/patchd"

[[group]]
name = "payments-web"
accounts = ["payments"]
[group.tags]
Role = "web"

[[group]]
name = "web"
[group.tags]
Role = "web"

[[exception]]
name = "waiver"
patches = ["KB1"]
group = "payments-web"
reason = "vendor fix pending"
owner = "ops"
expires = 2099-01-01
"#;
    let loaded = patchd_config::load_sources(vec![("t.toml".into(), text.into())], t("2026-11-28T00:00:00Z"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let config = loaded.config;
    let tags = [("Role", "web")];
    assert_eq!(groups_of(&config, "210987654321", "eu-west-1", "i-1", &tags), ["payments-web", "web"]);
    assert_eq!(groups_of(&config, "111122223333", "eu-west-1", "i-1", &tags), ["web"], "the home account");

    let kev = KevCatalog::default();
    let judge = Judge { config: &config, kev: &kev, at: t("2026-11-28T00:00:00Z") };
    let cves = ["CVE-2026-1".to_string()];
    let verdict = judge.verdict(&PatchFacts {
        severity: Some("Critical"),
        cves: &cves,
        ssm_release: Some(t("2026-01-01T00:00:00Z")),
        advisory_release: None,
        fleet_first_seen: t("2026-01-02T00:00:00Z"),
    });
    assert_eq!((verdict.rank, verdict.open_status), (RiskRank::Critical, SlaStatus::Breached));
    let in_payments = groups_of(&config, "210987654321", "eu-west-1", "i-1", &tags);
    let (status, exception) = judge.finding(&verdict, FindingState::Open, "KB1", "i-1", &in_payments);
    assert_eq!((status, exception.map(|e| e.name.as_str())), (SlaStatus::Excepted, Some("waiver")));
    let at_home = groups_of(&config, "111122223333", "eu-west-1", "i-1", &tags);
    assert_eq!(judge.finding(&verdict, FindingState::Open, "KB1", "i-1", &at_home).0, SlaStatus::Breached);
}
