//! Each kind of mistake the configuration language catches, with the location it reports.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use patchd_config::{load_sources, Diagnostic, FeedLocation, LoadError, Loaded, Severity};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap()
}

/// A minimal valid configuration that each case extends with its mistake.
const BASE: &str = r#"
[[baseline]]
name = "prod-al2"
operating_system = "AMAZON_LINUX_2"
patch_groups = ["prod"]
[[baseline.rule]]
classification = ["Security"]
approve_after_days = 0

[[group]]
name = "prod-web"
[group.tags]
"Patch Group" = "prod"

[[window]]
name = "weekly"
schedule = "cron(0 3 ? * SUN *)"
duration_hours = 4
[[window.task]]
operation = "install"
groups = ["prod-web"]
"#;

fn load_files(files: &[(&str, &str)]) -> Result<Loaded, LoadError> {
    load_sources(files.iter().map(|(name, text)| (PathBuf::from(name), text.to_string())).collect(), now())
}

fn render(diagnostics: &[Diagnostic], severity: Severity) -> Vec<String> {
    diagnostics
        .iter()
        .filter(|d| d.severity == severity)
        .map(|d| format!("{}:{}: {}", d.origin.line, d.origin.col, d.message))
        .collect()
}

/// Asserts that `text` (appended to BASE unless it starts a new document) fails with exactly
/// the errors in `expected`, each given as "LINE:COL: message-prefix".
fn check_errors(text: &str, expected: &[&str]) {
    let errors = match load_files(&[("c.toml", text)]) {
        Ok(_) => panic!("expected errors {expected:?}, but the configuration is valid"),
        Err(LoadError::Invalid { diagnostics }) => render(&diagnostics, Severity::Error),
        Err(other) => panic!("unexpected failure {other}"),
    };
    assert_eq!(errors.len(), expected.len(), "errors: {errors:#?}");
    for (got, want) in errors.iter().zip(expected) {
        assert!(got.starts_with(want), "got `{got}`, want a message starting `{want}`\nall: {errors:#?}");
    }
}

fn check_warnings(text: &str, expected: &[&str]) {
    let loaded = match load_files(&[("c.toml", text)]) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid configuration: {e}: {e:?}"),
    };
    let warnings = render(&loaded.warnings, Severity::Warning);
    assert_eq!(warnings.len(), expected.len(), "warnings: {warnings:#?}");
    for (got, want) in warnings.iter().zip(expected) {
        assert!(got.contains(want), "got `{got}`, want it to contain `{want}`\nall: {warnings:#?}");
    }
}

fn with_base(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn base_is_valid_and_quiet() {
    check_warnings(BASE, &[]);
}

#[test]
fn example_configuration_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = load_files(&[("example.toml", &text)]).unwrap();
    assert_eq!(loaded.config.windows.len(), 3);
    assert_eq!(loaded.config.baselines.len(), 3);
}

#[test]
fn syntax_errors_are_located() {
    check_errors("[daemon]\nlisten = \n", &["2:10: invalid TOML"]);
}

#[test]
fn unknown_keys_suggest_the_closest_known_key() {
    let text = "[[group]]\nname = \"g\"\ninstance_id = [\"i-0abc1234\"]\n";
    let err = load_files(&[("c.toml", text)]).unwrap_err();
    let LoadError::Invalid { diagnostics } = err else { panic!() };
    let unknown = diagnostics.iter().find(|d| d.message.contains("unknown key")).unwrap();
    assert_eq!((unknown.origin.line, unknown.origin.col), (3, 1));
    assert_eq!(unknown.hint.as_deref(), Some("did you mean `instance_ids`?"));
    check_errors("[daemn]\n", &["1:2: unknown key `daemn` in the top level"]);
}

#[test]
fn types_and_ranges() {
    check_errors(
        &with_base("[sla]\ncritical_days = \"thirty\"\n"),
        &["23:17: `critical_days` in [sla] must be an integer, found a string"],
    );
    check_errors(
        &with_base("[sla]\ndue_soon_days = 400\n"),
        &["23:17: `due_soon_days` in [sla] must be between 0 and 365"],
    );
    check_errors(
        &BASE.replace("approve_after_days = 0", "approve_after_days = 361"),
        &["8:22: `approve_after_days` in [[baseline.rule]] must be between 0 and 360"],
    );
    check_errors(
        &BASE.replace("duration_hours = 4", "duration_hours = 0"),
        &["18:18: `duration_hours` in [[window]] must be between 1 and 24"],
    );
    check_errors(
        &BASE.replace("duration_hours = 4", "duration_hours = 4\ncutoff_hours = 4"),
        &["19:16: `cutoff_hours = 4` must be shorter than `duration_hours = 4`"],
    );
    check_errors(
        &BASE.replace("duration_hours = 4", "duration_hours = 4\noffset_days = 7"),
        &["19:15: `offset_days` in [[window]] must be between 1 and 6"],
    );
}

#[test]
fn offset_days_need_a_cron_schedule() {
    let text = BASE
        .replace("cron(0 3 ? * SUN *)", "rate(7 days)")
        .replace("duration_hours = 4", "duration_hours = 4\noffset_days = 2\nstart_date = 2026-01-04");
    let err = load_files(&[("c.toml", &text)]).unwrap_err();
    let LoadError::Invalid { diagnostics } = err else { panic!() };
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].origin.line, 19);
    assert!(diagnostics[0].message.contains("cron"), "{}", diagnostics[0].message);
}

#[test]
fn limits_ssm_imposes() {
    let many: Vec<String> = (1..=51).map(|i| format!("\"KB{i}\"")).collect();
    check_errors(
        &BASE.replace(
            "patch_groups = [\"prod\"]",
            &format!("patch_groups = [\"prod\"]\nrejected_patches = [{}]", many.join(", ")),
        ),
        &["6:"],
    );
    check_errors(
        &with_base("max_concurrency = \"0%\"\n"),
        &["22:19: `max_concurrency` must be a whole number (at least 1) or a percentage"],
    );
    check_errors(&with_base("max_errors = \"101%\"\n"), &["22:14: `max_errors` must be a whole number"]);
    check_errors(&with_base("max_concurrency = 0\n"), &["22:19: `max_concurrency`"]);
    check_errors(
        &with_base("timeout_seconds = 10\n"),
        &["22:19: `timeout_seconds` in [[window.task]] must be between 30 and 2592000"],
    );
    let filters = "[[baseline.rule]]\nclassification = [\"Security\"]\nseverity = [\"Critical\"]\nproduct = [\"AmazonLinux2\"]\nmsrc_severity = [\"Critical\"]\napprove_after_days = 1\n";
    check_errors(
        &with_base(&format!("[[baseline]]\nname = \"win\"\noperating_system = \"WINDOWS\"\n{filters}")),
        &["27:13: SSM does not filter WINDOWS patches by `severity`"],
    );
}

#[test]
fn percentages_and_counts_are_accepted() {
    check_warnings(&with_base("max_concurrency = \"100%\"\nmax_errors = \"0%\"\n"), &[]);
    check_warnings(&with_base("max_concurrency = \"7\"\nmax_errors = 0\n"), &[]);
}

#[test]
fn approval_rules() {
    check_errors(
        &BASE.replace("approve_after_days = 0", "approve_after_days = 0\napprove_until = 2027-01-01"),
        &["6:1: [[baseline.rule]] sets both"],
    );
    check_errors(
        &BASE.replace("approve_after_days = 0", ""),
        &["6:1: [[baseline.rule]] must say when patches are approved"],
    );
    check_errors(
        &BASE.replace("AMAZON_LINUX_2", "UBUNTU").replace("classification", "priority"),
        &["6:1: SSM has no approval delay for UBUNTU"],
    );
    check_errors(
        &BASE.replace("approve_after_days = 0", "approve_until = \"2027-01-01\""),
        &["8:17: `approve_until` in [[baseline.rule]] must be a date"],
    );
}

#[test]
fn enums_suggest_the_right_word() {
    let text = BASE.replace("\"install\"", "\"instal\"");
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", &text)]) else { panic!() };
    let d = &diagnostics[0];
    assert_eq!(d.message, "`operation` in [[window.task]] has an unknown value `instal`");
    assert_eq!(d.hint.as_deref(), Some("did you mean `install`?"));
    check_errors(
        &BASE.replace("AMAZON_LINUX_2", "AMAZONLINUX2"),
        &["4:20: `operating_system` in [[baseline]] has an unknown value"],
    );
}

#[test]
fn schedule_errors_point_inside_the_string() {
    // `8` is at byte 16 of the expression; the string starts at column 12, after its quote.
    check_errors(
        &BASE.replace("cron(0 3 ? * SUN *)", "cron(0 3 ? * 8 *)"),
        &["17:26: invalid schedule `cron(0 3 ? * 8 *)`: day-of-week"],
    );
    check_errors(&BASE.replace("cron(0 3 ? * SUN *)", "cron(0 3 * * SUN *)"), &["17:"]);
    check_errors(
        &BASE
            .replace("timezone", "x")
            .replace("duration_hours = 4", "duration_hours = 4\ntimezone = \"Europe/Berln\""),
        &["19:12: unknown timezone `Europe/Berln`"],
    );
}

#[test]
fn references_resolve() {
    check_errors(
        &BASE.replace("groups = [\"prod-web\"]", "groups = [\"prod-wbe\"]"),
        &["21:11: task `install` of window `weekly` names unknown group `prod-wbe`"],
    );
    let exception = "[[exception]]\nname = \"x\"\npatches = [\"ALAS2-1\"]\ngroup = \"nope\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2027-01-01\n";
    check_errors(&with_base(exception), &["25:9: exception `x` names unknown group `nope`"]);
}

#[test]
fn group_reached_by_two_baselines_for_one_os() {
    let second = "[[baseline]]\nname = \"prod-al2-b\"\noperating_system = \"AMAZON_LINUX_2\"\npatch_groups = [\"canary\"]\n[[baseline.rule]]\napprove_after_days = 1\n";
    let text =
        with_base(second).replace("\"Patch Group\" = \"prod\"", "\"Patch Group\" = [\"prod\", \"canary\"]");
    check_errors(
        &text,
        &["10:1: group `prod-web` is reached by 2 baselines for AMAZON_LINUX_2: prod-al2, prod-al2-b"],
    );
    // Different operating systems may share a group: each instance runs one OS.
    let ubuntu = "[[baseline]]\nname = \"prod-ubuntu\"\noperating_system = \"UBUNTU\"\npatch_groups = [\"prod\"]\n[[baseline.rule]]\npriority = [\"Required\"]\n";
    check_warnings(
        &with_base(ubuntu),
        &["baseline `prod-ubuntu` patches UBUNTU, for which SSM gives no release dates"],
    );
}

#[test]
fn names_are_unique_across_files() {
    let other = "[[group]]\nname = \"prod-web\"\ninstance_ids = [\"i-0abc1234\"]\n";
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("a.toml", BASE), ("b.toml", other)]) else {
        panic!()
    };
    let errors: Vec<String> =
        diagnostics.iter().filter(|d| d.severity == Severity::Error).map(|d| d.to_string()).collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("b.toml:2:8: error: group `prod-web` is defined twice"), "{}", errors[0]);
    assert!(errors[0].contains("first defined at a.toml:11:8"), "{}", errors[0]);
}

#[test]
fn singleton_sections_are_written_once() {
    let Err(LoadError::Invalid { diagnostics }) =
        load_files(&[("a.toml", "[sla]\n"), ("b.toml", "[sla]\ncritical_days = 14\n")])
    else {
        panic!()
    };
    assert!(
        diagnostics[0].to_string().starts_with("b.toml:1:1: error: `[sla]` is defined more than once"),
        "{}",
        diagnostics[0]
    );
}

#[test]
fn files_merge_into_one_configuration() {
    let (baselines, rest) = BASE.split_at(BASE.find("[[group]]").unwrap());
    let loaded = load_files(&[
        ("baselines.toml", baselines),
        ("windows.toml", rest),
        ("sla.toml", "[sla]\ncritical_days = 14\n"),
    ])
    .unwrap();
    assert_eq!(loaded.config.sla.critical_days, 14);
    assert_eq!(loaded.config.baselines.len(), 1);
    assert_eq!(loaded.config.windows[0].tasks[0].groups[0].value, "prod-web");
}

#[test]
fn invalid_values_everywhere_are_reported_together() {
    let text = "[daemon]\nlisten = \"nope\"\n[aws]\nregion = \"Mars\"\n[[group]]\nname = \"bad name!\"\ninstance_ids = [\"i-XYZ\"]\n";
    check_errors(
        text,
        &[
            "2:10: `listen`",
            "4:10: `Mars` is not an AWS region name",
            "6:8: group name `bad name!`",
            "7:17: `i-XYZ` is not an EC2 instance id",
        ],
    );
}

#[test]
fn exceptions_need_scope_owner_and_expiry() {
    check_errors(
        "[[exception]]\nname = \"x\"\npatches = [\"KB1\"]\nreason = \"r\"\n",
        &[
            "1:1: [[exception]] is missing the required key `expires`",
            "1:1: [[exception]] is missing the required key `owner`",
            "1:1: [[exception]] must say where it applies",
        ],
    );
}

#[test]
fn warnings() {
    check_warnings(&with_base("[sla]\ncritical_days = 45\n"), &["longer than PCI DSS allows"]);
    check_warnings(&with_base("reboot_option = \"NoReboot\"\n"), &["INSTALLED_PENDING_REBOOT"]);
    let expired = "[[exception]]\nname = \"x\"\npatches = [\"KB1\"]\ngroup = \"prod-web\"\nreason = \"r\"\nowner = \"o\"\nexpires = 2026-01-01\n";
    check_warnings(&with_base(expired), &["exception `x` expired on 2026-01-01"]);
    check_warnings(
        &with_base("[[group]]\nname = \"idle\"\ninstance_ids = [\"i-0abc1234\"]\n"),
        &["group `idle` is not targeted by any window task"],
    );
    check_warnings(
        &BASE.replace("cron(0 3 ? * SUN *)", "at(2026-01-01T00:00:00)"),
        &["cannot meet any patch SLA", "never opens again"],
    );
}

#[test]
fn relative_paths_resolve_against_the_file() {
    let loaded = load_files(&[(
        "/etc/patchd/main.toml",
        "[daemon]\nstate_dir = \"state\"\n[sla]\nkev_catalog = \"kev.json\"\n",
    )])
    .unwrap();
    assert_eq!(loaded.config.daemon.state_dir, PathBuf::from("/etc/patchd/state"));
    assert_eq!(loaded.config.daemon.database_url.expose(), "sqlite:///etc/patchd/state/patchd.db");
    assert_eq!(
        loaded.config.sla.kev_catalog,
        Some(FeedLocation::File(PathBuf::from("/etc/patchd/kev.json")))
    );
    assert_eq!(loaded.config.kev_file(), Some(PathBuf::from("/etc/patchd/kev.json")));
}

const UBUNTU_BASELINE: &str = r#"
[[baseline]]
name = "prod-ubuntu"
operating_system = "UBUNTU"
patch_groups = ["prod"]
[[baseline.rule]]
priority = ["Required"]
"#;

const UBUNTU_SOURCE: &str = r#"
[[advisories.source]]
name = "ubuntu"
kind = "ubuntu"
url = "https://mirror.example.internal/usn/database.json.gz"
platforms = ["UBUNTU"]
refresh = "12h"
"#;

#[test]
fn advisory_sources() {
    let loaded = load_files(&[("/etc/patchd/c.toml", &with_base(UBUNTU_SOURCE))]).unwrap();
    let source = &loaded.config.advisory_sources[0];
    assert_eq!(source.name, "ubuntu");
    assert_eq!(source.kind, patchd_advisories::FeedKind::Ubuntu);
    assert_eq!(
        source.location,
        FeedLocation::Http("https://mirror.example.internal/usn/database.json.gz".into())
    );
    assert_eq!((source.refresh.as_secs(), source.max_bytes), (12 * 3600, 512 * 1024 * 1024));
    // A plain path is a file, relative to the configuration.
    let loaded = load_files(&[(
        "/etc/patchd/c.toml",
        &with_base(
            &UBUNTU_SOURCE.replace("https://mirror.example.internal/usn/database.json.gz", "mirror/usn.json"),
        ),
    )])
    .unwrap();
    assert_eq!(
        loaded.config.advisory_sources[0].location,
        FeedLocation::File(PathBuf::from("/etc/patchd/mirror/usn.json"))
    );
    // A KEV URL is read from the last good copy in state_dir.
    let loaded = load_files(&[(
        "/etc/patchd/c.toml",
        "[daemon]\nstate_dir = \"/var/lib/p\"\n[sla]\nkev_catalog = \"https://www.cisa.gov/kev.json\"\nkev_refresh = \"12h\"\n",
    )])
    .unwrap();
    assert_eq!(loaded.config.kev_file(), Some(PathBuf::from("/var/lib/p/feeds/kev.body")));
    assert_eq!(loaded.config.sla.kev_refresh.as_secs(), 12 * 3600);
}

#[test]
fn advisory_source_errors() {
    let base_lines = BASE.lines().count();
    let at = |line: usize, col: usize| format!("{}:{col}: ", base_lines + line);
    check_errors(
        &with_base(
            &UBUNTU_SOURCE.replace("https://mirror.example.internal", "http://mirror.example.internal"),
        ),
        &[&format!(
            "{}`url`: `http://mirror.example.internal/usn/database.json.gz` is plain http to another host",
            at(5, 7)
        )],
    );
    check_errors(
        &with_base(
            &UBUNTU_SOURCE
                .replace("[\"UBUNTU\"]", "[\"UBUNTOO\"]")
                .replace("\"ubuntu\"\nurl", "\"ubunt\"\nurl"),
        ),
        &[
            &format!("{}`kind` in [[advisories.source]] has an unknown value `ubunt`", at(4, 8)),
            &format!("{}unknown operating system `UBUNTOO`", at(6, 14)),
        ],
    );
    check_errors(
        &with_base(&UBUNTU_SOURCE.replace("12h", "1m")),
        &[&format!("{}`refresh` must be a duration from 5m to 7d, found `1m`", at(7, 11))],
    );
    check_errors(
        &with_base(&format!("{UBUNTU_SOURCE}{UBUNTU_SOURCE}")),
        &[&format!("{}advisory source `ubuntu` is defined twice", at(10, 8))],
    );
    check_errors(
        &with_base("[sla]\nkev_catalog = \"ftp://x/kev.json\"\n"),
        &[&format!("{}`kev_catalog`: `ftp://x/kev.json` uses a scheme patchd cannot fetch", at(2, 15))],
    );
}

#[test]
fn a_system_nothing_dates_is_warned_about() {
    // SSM dates Amazon Linux 2; Ubuntu needs a source.
    check_warnings(
        &format!("{BASE}{UBUNTU_BASELINE}"),
        &["baseline `prod-ubuntu` patches UBUNTU, for which SSM gives no release dates"],
    );
    check_warnings(&format!("{BASE}{UBUNTU_BASELINE}{UBUNTU_SOURCE}"), &[]);
}

#[test]
fn database_password_is_redacted() {
    let loaded =
        load_files(&[("c.toml", "[daemon]\ndatabase_url = \"postgres://patchd:s3cret@db/patchd\"\n")])
            .unwrap();
    let shown = format!("{} {:?}", loaded.config.daemon.database_url, loaded.config);
    assert!(!shown.contains("s3cret"));
    assert!(shown.contains("postgres://patchd:***@db/patchd"));
}

/// The sources of the standard chain that every credential diagnostic names.
fn assert_explains_the_chain(diagnostic: &Diagnostic) {
    let hint = diagnostic.hint.as_deref().unwrap_or_default();
    for source in ["environment", "profile", "SSO", "IRSA", "container", "instance profile", "remove it"] {
        assert!(hint.contains(source), "the hint should mention `{source}`: {hint}");
    }
}

fn credential_errors(text: &str) -> Vec<Diagnostic> {
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", text)]) else {
        panic!("credentials in the configuration must be refused:\n{text}")
    };
    diagnostics.into_iter().filter(|d| d.severity == Severity::Error).collect()
}

#[test]
fn credentials_are_refused_in_aws() {
    let text = with_base(
        "[aws]\nregion = \"eu-central-1\"\naws_access_key_id = \"AKIAIOSFODNN7EXAMPLE\"\naws_secret_access_key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n",
    );
    // One error per key, at the key, instead of "unknown key"; the value is not reported again.
    check_errors(
        &text,
        &[
            "24:1: `aws_access_key_id` in [aws] is an AWS credential; patchd does not read credentials from its configuration",
            "25:1: `aws_secret_access_key` in [aws] is an AWS credential",
        ],
    );
    for diagnostic in credential_errors(&text) {
        assert_explains_the_chain(&diagnostic);
        let shown = diagnostic.to_string();
        assert!(
            !shown.contains("IOSFODNN7") && !shown.contains("wJalrXUtnFEMI"),
            "a secret is echoed: {shown}"
        );
    }
}

#[test]
fn credentials_are_refused_everywhere() {
    let account = "[aws]\n[[aws.account]]\nname = \"payments\"\nrole_arn = \"arn:aws:iam::123456789012:role/patchd\"\nregions = [\"eu-central-1\"]\nsession_token = \"FwoGZXIvYXdzEXAMPLE\"\n";
    check_errors(&with_base(account), &["27:1: `session_token` in [[aws.account]] is an AWS credential"]);
    // The top level, a dotted key, another spelling, a section patchd has never heard of.
    check_errors(
        &format!("secret_access_key = \"x\"\naws.AWS-Session-Token = \"y\"\n{BASE}"),
        &[
            "1:1: `secret_access_key` in the top level is an AWS credential",
            "2:5: `AWS-Session-Token` in [aws] is an AWS credential",
        ],
    );
    check_errors(
        &with_base("[credentials]\naccess_key_id = \"x\"\n"),
        &[
            "22:2: unknown key `credentials` in the top level",
            "23:1: `access_key_id` in [credentials] is an AWS credential",
        ],
    );
    check_errors(
        &with_base("[[group]]\nname = \"creds\"\n[group.tags]\naws_security_token = \"x\"\n"),
        &["25:1: `aws_security_token` in [group.tags] is an AWS credential"],
    );
    for diagnostic in credential_errors(&with_base(account)) {
        assert_explains_the_chain(&diagnostic);
    }
}

#[test]
fn values_that_look_like_access_keys_are_refused() {
    let account = "[aws]\n[[aws.account]]\nname = \"payments\"\nrole_arn = \"arn:aws:iam::123456789012:role/patchd\"\nexternal_id = \"AKIAIOSFODNN7EXAMPLE\"\n";
    check_errors(
        &with_base(account),
        &["26:15: the value of `external_id` in [[aws.account]] looks like an AWS access key id (AKIA…); patchd does not read credentials from its configuration"],
    );
    // Inside a longer string, in a list, in a tag, in a temporary (ASIA) key.
    check_errors(
        &BASE.replace(
            "\"Patch Group\" = \"prod\"",
            "\"Patch Group\" = \"prod\"\nOwner = [\"ops\", \"key ASIAY34FZKBOKMUTVV7A\"]",
        ),
        &["14:17: the value of `Owner` in [group.tags] looks like an AWS access key id (ASIA…)"],
    );
    for diagnostic in credential_errors(&with_base(account)) {
        assert_explains_the_chain(&diagnostic);
        assert!(!diagnostic.to_string().contains("IOSFODNN7"), "{diagnostic}");
    }
    // Look-alikes that are not keys: role ids, lower case, longer words.
    check_warnings(
        &BASE.replace(
            "\"Patch Group\" = \"prod\"",
            "\"Patch Group\" = \"prod\"\nOwner = [\"AROAIOSFODNN7EXAMPLE\", \"akiaiosfodnn7example\", \"AKIAIOSFODNN7EXAMPLE2\"]",
        ),
        &[],
    );
}

/// An admin account (the home account) that assumes roles into two workload accounts, with
/// groups and windows scoped to some of them.
const MULTI: &str = r#"
[aws]
name = "admin"
region = "eu-central-1"
regions = ["eu-central-1", "eu-west-1"]

[[aws.account]]
name = "payments-prod"
role_arn = "arn:aws:iam::111111111111:role/patchd"
external_id = "patchd-payments"

[[aws.account]]
name = "analytics"
role_arn = "arn:aws:iam::222222222222:role/patchd"
regions = ["us-east-1", "eu-west-1"]

[[baseline]]
name = "prod-al2"
operating_system = "AMAZON_LINUX_2"
patch_groups = ["prod"]
[[baseline.rule]]
classification = ["Security"]
approve_after_days = 0

[[group]]
name = "payments-web"
accounts = ["payments-prod"]
[group.tags]
"Patch Group" = "prod"

[[group]]
name = "analytics-us"
accounts = ["analytics"]
regions = ["us-east-1"]
[group.tags]
"Patch Group" = "prod"

[[window]]
name = "weekly"
schedule = "cron(0 3 ? * SUN *)"
duration_hours = 4
regions = ["eu-west-1", "us-east-1"]
[[window.task]]
operation = "install"
groups = ["payments-web", "analytics-us"]
"#;

/// "LINE:COL" of the one occurrence of `needle` in `text`, for expectations that survive
/// edits to the configuration above them.
fn at(text: &str, needle: &str) -> String {
    assert_eq!(text.matches(needle).count(), 1, "`{needle}` must occur once");
    let offset = text.find(needle).unwrap();
    let line = text[..offset].matches('\n').count() + 1;
    let col = text[..offset].rsplit('\n').next().unwrap().chars().count() + 1;
    format!("{line}:{col}")
}

fn account_regions(loaded: &Loaded, home_region: &str) -> Vec<(String, Vec<String>)> {
    loaded.config.aws.scope_accounts(home_region).into_iter().map(|a| (a.name, a.regions)).collect()
}

fn pairs(items: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
    items.iter().map(|(n, rs)| (n.to_string(), rs.iter().map(|r| r.to_string()).collect())).collect()
}

#[test]
fn multi_account_configuration_is_valid() {
    check_warnings(MULTI, &[]);
    let loaded = load_files(&[("c.toml", MULTI)]).unwrap();
    let aws = &loaded.config.aws;
    assert_eq!(aws.name, "admin");
    assert_eq!(aws.regions, ["eu-central-1", "eu-west-1"]);
    assert!(aws.accounts[0].regions.is_empty(), "unwritten regions stay empty in the model");
    let scoped = aws.scope_accounts("ap-south-1");
    assert_eq!(
        scoped.iter().map(|a| (a.name.as_str(), a.role_arn.as_deref(), a.is_home())).collect::<Vec<_>>(),
        [
            ("admin", None, true),
            ("payments-prod", Some("arn:aws:iam::111111111111:role/patchd"), false),
            ("analytics", Some("arn:aws:iam::222222222222:role/patchd"), false),
        ]
    );
    assert_eq!(scoped[1].external_id.as_deref(), Some("patchd-payments"));
    assert_eq!(
        account_regions(&loaded, "ap-south-1"),
        pairs(&[
            ("admin", &["eu-central-1", "eu-west-1"]),
            ("payments-prod", &["eu-central-1", "eu-west-1"]),
            ("analytics", &["us-east-1", "eu-west-1"]),
        ])
    );
    let group = loaded.config.group("analytics-us").unwrap();
    assert_eq!(
        (group.scope.accounts.as_slice(), group.scope.regions.as_slice()),
        (&["analytics".to_string()][..], &["us-east-1".to_string()][..])
    );
    let window = loaded.config.window("weekly").unwrap();
    assert!(window.scope.accounts.is_empty() && window.scope.admits("admin", "us-east-1"));
    assert!(!window.scope.admits("admin", "eu-central-1"));
    // Without scoping, everything stays everywhere, as before accounts existed.
    let plain = load_files(&[("c.toml", BASE)]).unwrap();
    assert!(plain.config.groups[0].scope.is_everywhere() && plain.config.windows[0].scope.is_everywhere());
    assert_eq!(plain.config.aws.name, "home");
}

#[test]
fn documented_multi_account_example_is_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let intro = doc.find("An admin account that assumes roles").expect("the example is documented");
    let start = intro + doc[intro..].find("```toml\n").unwrap() + "```toml\n".len();
    let example = &doc[start..start + doc[start..].find("```").unwrap()];
    let loaded = load_files(&[("configuration.md", example)]).unwrap();
    assert_eq!(render(&loaded.warnings, Severity::Warning), Vec::<String>::new());
    assert_eq!(
        account_regions(&loaded, "us-west-2"),
        pairs(&[
            ("admin", &["eu-central-1", "eu-west-1"]),
            ("payments-prod", &["eu-central-1", "eu-west-1"]),
            ("analytics-prod", &["eu-west-1", "us-east-1"]),
        ])
    );
}

#[test]
fn accounts_without_regions_inherit_the_home_regions() {
    let account =
        "[[aws.account]]\nname = \"payments-prod\"\nrole_arn = \"arn:aws:iam::111111111111:role/patchd\"\n";
    // The home region is `[aws] region`...
    let with_region = with_base(&format!("[aws]\nregion = \"eu-west-1\"\n{account}"));
    let loaded = load_files(&[("c.toml", &with_region)]).unwrap();
    assert_eq!(
        account_regions(&loaded, "ap-south-1"),
        pairs(&[("home", &["eu-west-1"]), ("payments-prod", &["eu-west-1"])])
    );
    // ... else the SDK's, known at run time; `regions = []` means the same as leaving it out.
    let without = with_base(&format!("[aws]\n{account}regions = []\n"));
    let loaded = load_files(&[("c.toml", &without)]).unwrap();
    assert_eq!(
        account_regions(&loaded, "ap-south-1"),
        pairs(&[("home", &["ap-south-1"]), ("payments-prod", &["ap-south-1"])])
    );
}

#[test]
fn scopes_name_defined_accounts() {
    let text = MULTI.replace("accounts = [\"payments-prod\"]", "accounts = [\"paymnts-prod\"]");
    check_errors(
        &text,
        &[&format!(
            "{}: group `payments-web` names unknown account `paymnts-prod`",
            at(&text, "\"paymnts-prod\"")
        )],
    );
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", &text)]) else { panic!() };
    assert_eq!(diagnostics[0].hint.as_deref(), Some("did you mean `payments-prod`?"));
    // The home account is named by `[aws] name`, and nothing close is listed in full.
    let text = MULTI.replace("accounts = [\"payments-prod\"]", "accounts = [\"admin\", \"billing\"]");
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", &text)]) else { panic!() };
    assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
    assert_eq!(diagnostics[0].to_string(), format!(
        "c.toml:{}: error: group `payments-web` names unknown account `billing`\n  = hint: defined accounts: admin, payments-prod, analytics (`admin` is the home account, [aws] `name`)",
        at(&text, "\"billing\"")
    ));
    // Without [[aws.account]] the home account is the only one, called `home` by default.
    let text = BASE.replace("name = \"weekly\"", "name = \"weekly\"\naccounts = [\"prod\"]");
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", &text)]) else { panic!() };
    assert!(diagnostics[0].message.starts_with("window `weekly` names unknown account `prod`"));
    assert!(
        diagnostics[0].hint.as_deref().unwrap().starts_with("the only account is `home`"),
        "{}",
        diagnostics[0]
    );
    check_warnings(&BASE.replace("name = \"weekly\"", "name = \"weekly\"\naccounts = [\"home\"]"), &[]);
}

#[test]
fn scope_regions_are_region_codes_of_accounts_in_scope() {
    let text = MULTI.replace(
        "regions = [\"eu-west-1\", \"us-east-1\"]",
        "regions = [\"eu-west\", \"ap-south-1\", \"eu-west\"]",
    );
    check_errors(
        &text,
        &[
            &format!("{}: `eu-west` is not an AWS region name", at(&text, "\"eu-west\", \"ap")),
            &format!(
                "{}: no account in scope of window `weekly` has region `ap-south-1`",
                at(&text, "\"ap-south-1\"")
            ),
            &format!("{}: `eu-west` is not an AWS region name", at(&text, "\"eu-west\"]")),
        ],
    );
    // A group in one account may only name that account's regions.
    let text = MULTI.replace("regions = [\"us-east-1\"]\n[group", "regions = [\"eu-central-1\"]\n[group");
    check_errors(
        &text,
        &[&format!(
            "{}: no account in scope of group `analytics-us` has region `eu-central-1`",
            at(&text, "\"eu-central-1\"]\n[group")
        )],
    );
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", &text)]) else { panic!() };
    assert_eq!(
        diagnostics[0].hint.as_deref(),
        Some("the accounts in scope (analytics) are in eu-west-1, us-east-1; add `eu-central-1` to an account's `regions`, or remove it here")
    );
    // A region listed twice is a slip.
    let text =
        MULTI.replace("regions = [\"eu-west-1\", \"us-east-1\"]", "regions = [\"eu-west-1\", \"eu-west-1\"]");
    check_errors(
        &text,
        &[&format!("{}: region `eu-west-1` is listed twice", at(&text, "\"eu-west-1\"]\n[[window.task"))],
    );
    // When the home region is only known at run time, any region may be the home account's.
    check_warnings(&BASE.replace("name = \"weekly\"", "name = \"weekly\"\nregions = [\"ap-south-1\"]"), &[]);
}

#[test]
fn account_names_and_roles_are_unique() {
    let second =
        "[[aws.account]]\nname = \"payments-prod\"\nrole_arn = \"arn:aws:iam::111111111111:role/patchd\"\n";
    let text = MULTI.replace("[[baseline]]", &format!("{second}\n[[baseline]]"));
    let dup_name = text.match_indices("name = \"payments-prod\"").nth(1).unwrap().0;
    let line = text[..dup_name].matches('\n').count() + 1;
    check_errors(
        &text,
        &[
            &format!("{line}:8: account `payments-prod` is defined twice"),
            &format!("{}:12: role `arn:aws:iam::111111111111:role/patchd` is already assumed by account `payments-prod`", line + 1),
        ],
    );
    // The home account's name is taken, whether written or the default.
    let text = MULTI.replace("name = \"analytics\"", "name = \"admin\"");
    check_errors(
        &text,
        &[
            &format!(
                "{}: `admin` is already the name of the home account ([aws] name)",
                at(&text, "\"admin\"\nrole_arn")
            ),
            &format!(
                "{}: group `analytics-us` names unknown account `analytics`",
                at(&text, "\"analytics\"")
            ),
        ],
    );
    let Err(LoadError::Invalid { diagnostics }) = load_files(&[("c.toml", &text)]) else { panic!() };
    assert!(diagnostics[0]
        .hint
        .as_deref()
        .unwrap()
        .contains(&format!("named at c.toml:{}", at(&text, "\"admin\"\nregion"))));
    let text = with_base(
        "[aws]\n[[aws.account]]\nname = \"home\"\nrole_arn = \"arn:aws:iam::111111111111:role/patchd\"\n",
    );
    check_errors(&text, &["24:8: `home` is already the name of the home account ([aws] name)"]);
    // One account id behind two roles is fine: different roles reach different permissions.
    let text = MULTI.replace("222222222222:role/patchd", "111111111111:role/patchd-analytics");
    check_warnings(&text, &[]);
}

#[test]
fn home_account_name_and_regions() {
    check_errors(
        &with_base("[aws]\nname = \"admin account\"\nregions = []\n"),
        &["23:8: account name `admin account` may only contain", "24:11: `regions` in [aws] is empty"],
    );
    check_errors(
        &with_base("[aws]\nregions = [\"eu-west-1\", \"eu-west-1\", \"west\"]\n"),
        &["23:25: region `eu-west-1` is listed twice", "23:38: `west` is not an AWS region name"],
    );
    // `region` need not be one of `regions`: it is where EventBridge is called from.
    let loaded =
        load_files(&[("c.toml", &with_base("[aws]\nregion = \"us-east-1\"\nregions = [\"eu-west-1\"]\n"))])
            .unwrap();
    assert_eq!(account_regions(&loaded, "x"), pairs(&[("home", &["eu-west-1"])]));
}

#[test]
fn window_and_group_scopes_that_never_meet_are_warned_about() {
    // The window runs in eu-west-1 only; analytics-us is in us-east-1 only.
    let text = MULTI.replace("regions = [\"eu-west-1\", \"us-east-1\"]", "regions = [\"eu-west-1\"]");
    check_warnings(
        &text,
        &["window `weekly` and group `analytics-us` have no account and region in common, so task `install` never reaches the group"],
    );
    let loaded = load_files(&[("c.toml", &text)]).unwrap();
    assert_eq!(
        format!("{}:{}", loaded.warnings[0].origin.line, loaded.warnings[0].origin.col),
        at(&text, "\"analytics-us\"]")
    );
    assert_eq!(
        loaded.warnings[0].hint.as_deref(),
        Some("the window is scoped to regions `eu-west-1`, the group to accounts `analytics` in regions `us-east-1`; widen `accounts`/`regions` on one of them, or drop the group from the task")
    );
    // Disjoint account lists, and disjoint region lists even when the regions are only known
    // at run time, never meet either.
    let text = MULTI.replace("regions = [\"eu-west-1\", \"us-east-1\"]", "accounts = [\"admin\"]");
    check_warnings(&text, &["group `payments-web` have no account", "group `analytics-us` have no account"]);
    let text = BASE
        .replace("name = \"weekly\"", "name = \"weekly\"\nregions = [\"eu-west-1\"]")
        .replace("name = \"prod-web\"", "name = \"prod-web\"\nregions = [\"us-east-1\"]");
    check_warnings(&text, &["window `weekly` and group `prod-web` have no account and region in common"]);
}

#[test]
fn waves_and_gates_are_checked_where_they_are_written() {
    // The task's keys continue BASE's last table, `[[window.task]]`, from line 22.
    check_errors(
        &with_base("waves = [\"10%\", \"5%\", \"100%\"]\n"),
        &["22:9: wave share `5%` does not grow"],
    );
    check_errors(
        &with_base("waves = [\"1\", \"50%\"]\n"),
        &["22:9: the last wave must be `100%`, not `50%`"],
    );
    check_errors(&with_base("waves = [\"0\", \"100%\"]\n"), &["22:9: wave share `0` must be a count"]);
    check_errors(
        &with_base("max_per_tag = { tag = \"cluster\", max = 0 }\n"),
        &["22:40: `max` in `max_per_tag` must be between 1 and 1000"],
    );
    check_errors(
        &with_base("[window.task.gate]\nurl = \"ftp://health\"\n"),
        &["23:7: gate `url` must be an http:// or https:// URL"],
    );
    check_errors(
        &with_base("[window.task.gate]\nurll = \"http://h\"\n"),
        &["23:1: unknown key `urll` in [window.task.gate]"],
    );
    check_warnings(&with_base("bake_minutes = 5\n"), &["`bake_minutes` pauses between waves"]);
}

#[test]
fn a_canary_rollout_loads_as_written() {
    let text = with_base(
        "waves = [\"1\", \"10%\", \"100%\"]\nbake_minutes = 15\nmax_per_tag = { tag = \"cluster\", max = 1 }\n\
         [window.task.gate]\nurl = \"https://health.example.com/gate\"\nalarm = \"web-5xx\"\n\
         command = [\"/usr/local/bin/check-lb\", \"--strict\"]\ncommand_timeout_seconds = 30\n",
    );
    let loaded = load_files(&[("c.toml", &text)]).unwrap();
    let waves = &loaded.config.windows[0].tasks[0].waves;
    let shares: Vec<String> = waves.shares.iter().map(ToString::to_string).collect();
    assert_eq!(shares, ["1", "10%", "100%"]);
    assert_eq!(waves.bake, std::time::Duration::from_secs(15 * 60));
    let cap = waves.max_per_tag.as_ref().unwrap();
    assert_eq!((cap.tag.as_str(), cap.max), ("cluster", 1));
    let gate = waves.gate.as_ref().unwrap();
    assert!(gate.reboot_truth, "an install's gate checks the reboot by default");
    assert_eq!(gate.url.as_deref(), Some("https://health.example.com/gate"));
    assert_eq!(gate.alarm.as_deref(), Some("web-5xx"));
    let command = gate.command.as_ref().unwrap();
    assert_eq!(
        (command.program.as_str(), command.args.as_slice()),
        ("/usr/local/bin/check-lb", &["--strict".to_string()][..])
    );
    assert_eq!(command.timeout, std::time::Duration::from_secs(30));

    // Without waves or a gate, a task is the plain rollout it always was.
    let plain = load_files(&[("c.toml", BASE)]).unwrap();
    assert!(plain.config.windows[0].tasks[0].waves.is_plain());
}

#[test]
fn install_hooks_name_ssm_documents_and_belong_to_installs() {
    check_errors(
        &with_base("[window.task.hooks]\npre_install = \"drain node\"\n"),
        &["23:15: `pre_install` must name an SSM document"],
    );
    let scan = BASE.replace("operation = \"install\"", "operation = \"scan\"");
    check_errors(
        &format!("{scan}[window.task.hooks]\npre_install = \"DrainNode\"\n"),
        &["22:1: hooks run around an install; a scan task runs none"],
    );
    let loaded = load_files(&[(
        "c.toml",
        &with_base("[window.task.hooks]\npre_install = \"DrainNode\"\npost_install = \"UndrainNode\"\n"),
    )])
    .unwrap();
    let hooks = loaded.config.windows[0].tasks[0].waves.hooks.clone().unwrap();
    assert_eq!(hooks.pre_install.as_deref(), Some("DrainNode"));
    assert_eq!(hooks.post_install.as_deref(), Some("UndrainNode"));
    assert_eq!(hooks.on_exit, None);
}

/// BASE's install task promoting with `promote` (the body of `[window.task.promote]`), and a
/// `staging` window with `staging_task` (an install unless said otherwise).
fn promoting(promote: &str, staging_task: &str) -> String {
    format!(
        "{BASE}[window.task.promote]\n{promote}\n\n[[window]]\nname = \"staging\"\nschedule = \"cron(0 3 ? * TUE *)\"\nduration_hours = 4\n[[window.task]]\n{staging_task}\ngroups = [\"prod-web\"]\n"
    )
}

#[test]
fn a_promotion_loads_with_its_bucket_and_default_prefix() {
    let text = promoting("from = \"staging\"\nbucket = \"acme-patch-lists\"", "operation = \"install\"");
    let loaded = load_files(&[("c.toml", &text)]).unwrap();
    let promotion = loaded.config.windows[0].tasks[0].promote.clone().unwrap();
    assert_eq!(promotion.from.value, "staging");
    assert_eq!(promotion.bucket, "acme-patch-lists");
    assert_eq!(promotion.prefix, "patchd/install-lists/");
    let custom = promoting(
        "from = \"staging\"\nbucket = \"acme-patch-lists\"\nprefix = \"lists\"",
        "operation = \"install\"",
    );
    let loaded = load_files(&[("c.toml", &custom)]).unwrap();
    assert_eq!(loaded.config.windows[0].tasks[0].promote.as_ref().unwrap().prefix, "lists/");
}

#[test]
fn a_promotion_names_an_installing_window_and_a_bucket() {
    check_errors(
        &promoting("from = \"stagin\"\nbucket = \"acme-patch-lists\"", "operation = \"install\""),
        &["23:8: task `install` of window `weekly` promotes from unknown window `stagin`"],
    );
    check_errors(
        &promoting("from = \"staging\"\nbucket = \"acme-patch-lists\"", "operation = \"scan\""),
        &["23:8: task `install` of window `weekly` promotes from window `staging`, which has no install task"],
    );
    check_errors(
        &promoting("from = \"weekly\"\nbucket = \"acme-patch-lists\"", "operation = \"install\""),
        &["23:8: task `install` of window `weekly` promotes from its own window"],
    );
    check_errors(
        &promoting("from = \"staging\"\nbucket = \"s3://Acme\"", "operation = \"install\""),
        &["24:10: `bucket` `s3://Acme` is not an S3 bucket name"],
    );
    check_errors(
        &promoting("from = \"staging\"", "operation = \"install\""),
        &["22:1: [window.task.promote] is missing the required key `bucket`"],
    );
    let hooks = BASE.to_string() + "[window.task.hooks]\npre_install = \"DrainNode\"\n";
    check_errors(
        &format!("{hooks}[window.task.promote]\nfrom = \"staging\"\nbucket = \"acme-patch-lists\"\n\n[[window]]\nname = \"staging\"\nschedule = \"cron(0 3 ? * TUE *)\"\nduration_hours = 4\n[[window.task]]\noperation = \"install\"\ngroups = [\"prod-web\"]\n"),
        &["24:1: `promote` and `[window.task.hooks]` cannot be combined"],
    );
}
