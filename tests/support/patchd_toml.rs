//! patchd.toml in pieces: the sections that the process tests (tests/) and the engine tests
//! (crates/patchd-daemon/tests) configure again and again, written once, so that each test's
//! configuration shows only what the test is about. Each piece starts on a line of its own.
#![allow(dead_code)]

/// `[daemon]` keeping its state in `state_dir`, with `daemon_extra` keys, then `[aws]` in
/// us-east-1 at `endpoint_url` (none: AWS's own endpoints), with `aws_extra` keys.
pub fn daemon_and_aws(
    state_dir: &str,
    endpoint_url: Option<&str>,
    daemon_extra: &str,
    aws_extra: &str,
) -> String {
    let endpoint = endpoint_url.map(|url| format!("endpoint_url = \"{url}\"\n")).unwrap_or_default();
    format!(
        "\n[daemon]\nstate_dir = \"{state_dir}\"\n{daemon_extra}\n\n[aws]\nregion = \"us-east-1\"\n{endpoint}{aws_extra}\n"
    )
}

/// `[[group]]` `name`: the instances tagged `key = value`.
pub fn group(name: &str, key: &str, value: &str) -> String {
    format!("\n[[group]]\nname = \"{name}\"\n[group.tags]\n\"{key}\" = \"{value}\"\n")
}

/// `[[window]]` `name`, open `duration_hours` from each `schedule` firing, starting no task in
/// its last `cutoff_hours`; its `[[window.task]]`s follow it.
pub fn window(name: &str, schedule: &str, duration_hours: u32, cutoff_hours: u32) -> String {
    format!(
        "\n[[window]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nduration_hours = {duration_hours}\ncutoff_hours = {cutoff_hours}\n"
    )
}

/// `[[window.task]]` `name`: `operation` (scan, install) over `group`, with `extra` keys
/// (priority, max_concurrency...), one a line.
pub fn task(name: &str, operation: &str, group: &str, extra: &str) -> String {
    format!("\n[[window.task]]\nname = \"{name}\"\noperation = \"{operation}\"\ngroups = [\"{group}\"]\n{extra}\n")
}

/// `[[baseline]]` `name` for Amazon Linux 2, serving `patch_group`, with `extra` keys; its
/// `[[baseline.rule]]`s follow it.
pub fn al2_baseline(name: &str, patch_group: &str, extra: &str) -> String {
    baseline(name, "AMAZON_LINUX_2", patch_group, extra)
}

/// `[[baseline]]` `name` for `operating_system`, serving `patch_group`, with `extra` keys.
pub fn baseline(name: &str, operating_system: &str, patch_group: &str, extra: &str) -> String {
    format!(
        "\n[[baseline]]\nname = \"{name}\"\noperating_system = \"{operating_system}\"\npatch_groups = [\"{patch_group}\"]\n{extra}\n"
    )
}

/// `[[baseline.rule]]` approving Security patches `approve_after_days` after their release,
/// with `extra` keys (compliance_level...).
pub fn security_rule(approve_after_days: u32, extra: &str) -> String {
    format!("\n[[baseline.rule]]\nclassification = [\"Security\"]\napprove_after_days = {approve_after_days}\n{extra}\n")
}

/// `[[window]]` `name`, opening once at `at` (`%Y-%m-%dT%H:%M:%S`, UTC, as SSM's `at(...)`)
/// for an hour, whose tasks scan the group `web` and then install it, with `scan_extra` and
/// `install_extra` keys.
pub fn scan_then_install_once(name: &str, at: &str, scan_extra: &str, install_extra: &str) -> String {
    [
        window(name, &format!("at({at})"), 1, 0),
        task("scan", "scan", "web", &format!("priority = 1\n{scan_extra}")),
        task("install", "install", "web", &format!("priority = 2\n{install_extra}")),
    ]
    .concat()
}

/// `[[window]]` `name` whose one task, `scan`, scans `group`.
pub fn scan_window(
    name: &str,
    schedule: &str,
    duration_hours: u32,
    cutoff_hours: u32,
    group: &str,
) -> String {
    [window(name, schedule, duration_hours, cutoff_hours), task("scan", "scan", group, "")].concat()
}
