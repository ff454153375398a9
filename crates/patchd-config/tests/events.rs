//! `[events]`: the EventBridge bus, the signed webhook, and what the loader refuses, each with
//! its `file:line`.

use std::path::PathBuf;

use chrono::{TimeZone, Utc};
use patchd_config::{load_sources, Events, LoadError, Severity};

fn load(text: &str) -> Result<Events, Vec<String>> {
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
    match load_sources(vec![(PathBuf::from("/etc/patchd/events.toml"), text.to_string())], now) {
        Ok(loaded) => Ok(loaded.config.events),
        Err(LoadError::Invalid { diagnostics }) => Err(diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{}:{}: {}", d.origin.file.display(), d.origin.line, d.message))
            .collect()),
        Err(other) => panic!("unexpected failure {other}"),
    }
}

#[test]
fn no_events_section_publishes_nothing() {
    let events = load("").unwrap();
    assert_eq!(events, Events::default());
    assert!(!events.enabled());
    assert!(events.due_soon, "due-soon events are on unless turned off");
}

#[test]
fn a_bus_and_a_signed_webhook() {
    let events = load(
        r#"
[events]
bus_name = "arn:aws:events:eu-central-1:123456789012:event-bus/patchd"
webhook_url = "https://hooks.example.com/patchd"
webhook_secret_file = "keys/webhook.key"
due_soon = false
"#,
    )
    .unwrap();
    assert_eq!(events.bus_name.as_deref(), Some("arn:aws:events:eu-central-1:123456789012:event-bus/patchd"));
    assert_eq!(events.webhook_url.as_deref(), Some("https://hooks.example.com/patchd"));
    assert_eq!(
        events.webhook_secret_file,
        Some(PathBuf::from("/etc/patchd/keys/webhook.key")),
        "relative to the file"
    );
    assert!(!events.due_soon);
    assert!(events.enabled());
    assert_eq!(load("[events]\nbus_name = \"default\"\n").unwrap().bus_name.as_deref(), Some("default"));
}

#[test]
fn mistakes_are_reported_where_they_are_written() {
    let errors = load(
        r#"
[events]
bus_name = "my bus!"
webhook_url = "ftp://hooks.example.com"
due_soon = "yes"
"#,
    )
    .unwrap_err();
    let joined = errors.join("\n");
    assert!(joined.contains("events.toml:3: `bus_name` must be an EventBridge bus name or ARN"), "{joined}");
    assert!(joined.contains("events.toml:4: `webhook_url` must be an http:// or https:// URL"), "{joined}");
    assert!(joined.contains("events.toml:5:"), "{joined}");

    let errors = load("[events]\nwebhook_url = \"https://h.example.com/x\"\n").unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("/etc/patchd/events.toml:2: `webhook_url` needs `webhook_secret_file`"),
        "{errors:?}"
    );

    let errors = load("[events]\nwebhook_secret_file = \"k\"\n").unwrap_err();
    assert!(errors[0].contains(":2: `webhook_secret_file` is set without `webhook_url`"), "{errors:?}");

    let errors = load("[events]\nbus_name = \"arn:aws:events:eu-central-1:1234:event-bus/x\"\n").unwrap_err();
    assert_eq!(errors.len(), 1, "a bus ARN needs a 12-digit account: {errors:?}");

    let errors = load("[events]\nbus = \"patchd\"\n").unwrap_err();
    assert!(errors[0].contains(":2:") && errors[0].contains("bus"), "unknown keys are reported: {errors:?}");

    let errors = load("[events]\nbus_name = \"a\"\n").and_then(|_| load("[events]\n[events]\n"));
    assert!(errors.is_err(), "a duplicate table is invalid TOML");
}
