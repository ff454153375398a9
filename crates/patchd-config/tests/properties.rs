//! Whatever an editor leaves in a file, loading it reports diagnostics; it never panics.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use proptest::prelude::*;

fn load(text: String) {
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
    let _ = patchd_config::load_sources(vec![(PathBuf::from("p.toml"), text)], now);
}

/// Lines that look like patchd configuration, so the generator reaches deep into validation
/// rather than stopping at TOML syntax.
fn config_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[[window]]".to_string()),
        Just("[[window.task]]".to_string()),
        Just("[[group]]".to_string()),
        Just("[group.tags]".to_string()),
        Just("[[baseline]]".to_string()),
        Just("[[baseline.rule]]".to_string()),
        Just("[sla]".to_string()),
        Just("[[exception]]".to_string()),
        Just("[aws]".to_string()),
        Just("[[aws.account]]".to_string()),
        (
            prop::sample::select(vec![
                "name",
                "schedule",
                "timezone",
                "offset_days",
                "duration_hours",
                "cutoff_hours",
                "groups",
                "operation",
                "max_concurrency",
                "max_errors",
                "operating_system",
                "patch_groups",
                "approve_after_days",
                "approve_until",
                "severity",
                "start_date",
                "end_date",
                "critical_days",
                "instance_ids",
                "Role",
                "\"Patch Group\"",
                "expires",
                "patches",
                "group",
                "accounts",
                "regions",
                "region",
                "role_arn",
            ]),
            prop_oneof![
                "\"[a-zA-Z0-9 ?*#/,()%-]{0,24}\"".prop_map(|s| s),
                (-5i64..400).prop_map(|n| n.to_string()),
                Just("2027-01-01".to_string()),
                Just("[\"g\", \"prod\"]".to_string()),
                Just("\"cron(0 2 ? * TUE#2 *)\"".to_string()),
                Just("\"rate(1 day)\"".to_string()),
                Just("true".to_string()),
                Just("[\"eu-west-1\", \"us-east-1\"]".to_string()),
                Just("[\"home\", \"g\"]".to_string()),
                Just("\"arn:aws:iam::123456789012:role/patchd\"".to_string()),
            ],
        )
            .prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        load(text);
    }

    #[test]
    fn configuration_shaped_text_never_panics(lines in prop::collection::vec(config_line(), 0..40)) {
        load(lines.join("\n"));
    }
}
