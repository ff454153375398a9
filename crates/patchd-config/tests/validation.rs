//! Each kind of mistake the configuration language catches, with the location it reports.

use std::path::PathBuf;

use chrono::{DateTime, TimeZone, Utc};
use patchd_config::{load_sources, Diagnostic, LoadError, Loaded, Severity};

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
    check_warnings(&with_base(ubuntu), &[]);
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
    assert_eq!(loaded.config.sla.kev_catalog, Some(PathBuf::from("/etc/patchd/kev.json")));
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
