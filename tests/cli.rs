//! `patchd` as a user meets it: commands, exit codes, stdout and stderr.

#[path = "support/golden.rs"]
mod golden;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Runs patchd from the workspace root, so that paths in its output are stable.
fn patchd(args: &[&str]) -> Output {
    patchd_with_env(args, &[])
}

fn patchd_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    cmd.current_dir(root()).args(args);
    for var in ["PATCHD_CONFIG", "PATCHD_DATABASE_URL", "PATCHD_ENDPOINT_URL", "PATCHD_LOG"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Compares with a golden file under tests/golden; `PATCHD_BLESS=1` rewrites it.
fn golden(name: &str, actual: &str) {
    golden::check(&root().join("tests/golden").join(name), actual);
}

/// A scratch directory of configuration files, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, files: &[(&str, &str)]) -> Scratch {
        let dir = std::env::temp_dir().join(format!("patchd-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in files {
            std::fs::write(dir.join(file), text).unwrap();
        }
        Scratch(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const FROM: &str = "2026-11-28T00:00:00Z";

#[test]
fn check_passes_the_example_and_summarises_it() {
    let out = patchd(&["check", "--config", "config/example.toml", "--from", FROM]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    golden("check-example.stdout", &stdout(&out));
    golden("check-example.stderr", &stderr(&out));
}

#[test]
fn check_reports_every_error_with_its_location() {
    let out = patchd(&["check", "--config", "tests/fixtures/invalid/everything-wrong.toml", "--from", FROM]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    let err = stderr(&out);
    for line in err.lines() {
        let located = line.starts_with("tests/fixtures/invalid/everything-wrong.toml:")
            && (line.contains(": error: ") || line.contains(": warning: "));
        assert!(
            located
                || line.starts_with("  = hint: ")
                || line.starts_with("patchd: the configuration is invalid"),
            "unexpected line: {line}"
        );
    }
    assert!(err.ends_with("patchd: the configuration is invalid: 27 error(s), 2 warning(s)\n"), "{err}");
    golden("check-everything-wrong.stderr", &err);
}

#[test]
fn check_exits_1_when_the_configuration_cannot_be_read() {
    let out = patchd(&["check", "--config", "tests/fixtures/no-such-file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).starts_with("patchd: error: cannot read tests/fixtures/no-such-file.toml:"),
        "{}",
        stderr(&out)
    );
    let empty = Scratch::new("empty", &[]);
    let out = patchd(&["check", "--config", empty.path()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("holds no *.toml files"), "{}", stderr(&out));
}

#[test]
fn a_directory_of_files_is_one_configuration() {
    let out = patchd(&["check", "-c", "tests/fixtures/split", "--from", FROM]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(
        "configuration OK: tests/fixtures/split/10-groups.toml, tests/fixtures/split/20-windows.toml, tests/fixtures/split/30-baselines.toml\n  1 baseline, 1 group, 1 window, 0 exceptions, 0 warnings\n"
    ), "{text}");
}

#[test]
fn names_must_be_unique_across_files() {
    let group = "[[group]]\nname = \"web\"\ninstance_ids = [\"i-0abc1234\"]\n";
    let dir = Scratch::new("dup", &[("a.toml", group), ("b.toml", group)]);
    let out = patchd(&["check", "-c", dir.path()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let expected = format!(
        "{}/b.toml:2:8: error: group `web` is defined twice\n  = hint: first defined at {}/a.toml:2:8",
        dir.path(),
        dir.path()
    );
    assert!(err.starts_with(&expected), "{err}");
}

#[test]
fn the_environment_names_the_configuration() {
    let out = patchd_with_env(&["check", "--from", FROM], &[("PATCHD_CONFIG", "tests/fixtures/split")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = patchd_with_env(&["check"], &[("PATCHD_CONFIG", "tests/fixtures/none")]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn global_options_override_the_configuration() {
    let out = patchd_with_env(
        &[
            "--database",
            "postgres://patchd:hunter2@db.internal/patchd",
            "check",
            "-c",
            "tests/fixtures/split",
            "--endpoint-url",
            "http://127.0.0.1:4566",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("database  postgres://patchd:***@db.internal/patchd\n"), "{text}");
    assert!(!text.contains("hunter2"));
    assert!(text.contains("endpoint  http://127.0.0.1:4566, region from the environment\n"), "{text}");
    let out = patchd_with_env(
        &["check", "-c", "tests/fixtures/split"],
        &[("PATCHD_ENDPOINT_URL", "http://127.0.0.1:9999")],
    );
    assert!(stdout(&out).contains("endpoint  http://127.0.0.1:9999,"), "{}", stdout(&out));
}

#[test]
fn deny_warnings_turns_warnings_into_failure() {
    let out = patchd(&["check", "-c", "config/example.toml", "--deny-warnings", "--from", FROM]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(": warning: "));
    let out = patchd(&["check", "-c", "tests/fixtures/split", "--deny-warnings", "--from", FROM]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

fn plan_json(config: &str, from: &str, count: &str) -> Value {
    let out =
        patchd(&["plan", "-c", config, "--offline", "--from", from, "--count", count, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn starts(plan: &Value, window: &str) -> Vec<(String, String)> {
    let w = plan["windows"].as_array().unwrap().iter().find(|w| w["name"] == window).unwrap();
    w["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["start"].as_str().unwrap().to_string(), f["local_start"].as_str().unwrap().to_string()))
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn plan_fires_after_a_spring_forward_gap() {
    let plan = plan_json("tests/fixtures/dst", "2026-03-27T12:00:00Z", "3");
    // 02:30 does not exist in Berlin on 2026-03-29: the window opens at 03:00 CEST.
    assert_eq!(
        starts(&plan, "berlin-0230"),
        pairs(&[
            ("2026-03-28T01:30:00Z", "2026-03-28T02:30:00+01:00"),
            ("2026-03-29T01:00:00Z", "2026-03-29T03:00:00+02:00"),
            ("2026-03-30T00:30:00Z", "2026-03-30T02:30:00+02:00"),
        ])
    );
    let plan = plan_json("tests/fixtures/dst", "2026-03-07T12:00:00Z", "2");
    // New York's gap is 02:00-03:00, so 01:30 still exists on 2026-03-08.
    assert_eq!(
        starts(&plan, "new-york-0130"),
        pairs(&[
            ("2026-03-08T06:30:00Z", "2026-03-08T01:30:00-05:00"),
            ("2026-03-09T05:30:00Z", "2026-03-09T01:30:00-04:00")
        ])
    );
}

#[test]
fn plan_fires_once_in_a_fall_back_overlap() {
    let plan = plan_json("tests/fixtures/dst", "2026-10-24T12:00:00Z", "2");
    // 02:30 happens twice in Berlin on 2026-10-25: the window opens once, at the first.
    assert_eq!(
        starts(&plan, "berlin-0230"),
        pairs(&[
            ("2026-10-25T00:30:00Z", "2026-10-25T02:30:00+02:00"),
            ("2026-10-26T01:30:00Z", "2026-10-26T02:30:00+01:00")
        ])
    );
    let plan = plan_json("tests/fixtures/dst", "2026-10-31T12:00:00Z", "2");
    assert_eq!(
        starts(&plan, "new-york-0130"),
        pairs(&[
            ("2026-11-01T05:30:00Z", "2026-11-01T01:30:00-04:00"),
            ("2026-11-02T06:30:00Z", "2026-11-02T01:30:00-05:00")
        ])
    );
}

#[test]
fn plan_applies_offset_days_after_the_cron_match() {
    let plan = plan_json("tests/fixtures/dst", FROM, "3");
    // Second Tuesdays: 2026-12-08, 2027-01-12, 2027-02-09; two days later at 02:00 New York time.
    assert_eq!(
        starts(&plan, "two-days-after-patch-tuesday"),
        pairs(&[
            ("2026-12-10T07:00:00Z", "2026-12-10T02:00:00-05:00"),
            ("2027-01-14T07:00:00Z", "2027-01-14T02:00:00-05:00"),
            ("2027-02-11T07:00:00Z", "2027-02-11T02:00:00-05:00"),
        ])
    );
}

#[test]
fn plan_json_is_the_documented_contract() {
    let plan = plan_json("config/example.toml", FROM, "2");
    let window = &plan["windows"][0];
    assert_eq!(window["name"], "daily-scan");
    assert_eq!(window["timezone"], "Europe/Berlin");
    let firing = &window["next"][0];
    assert_eq!(firing["start"], "2026-11-28T00:00:00Z".replace("28T00", "29T00"));
    assert_eq!(firing["end"], "2026-11-29T02:00:00Z");
    assert_eq!(firing["local_start"], "2026-11-29T01:00:00+01:00");
    let rows = plan["sla_feasibility"].as_array().unwrap();
    let critical_windows =
        rows.iter().find(|r| r["group"] == "windows-ad" && r["rank"] == "critical").unwrap();
    assert_eq!(critical_windows["sla_days"], 30);
    assert_eq!(critical_windows["ok"], false);
    assert_eq!(critical_windows["worst_case_days"], 37.25);
    for row in rows {
        for key in ["group", "rank", "worst_case_days", "sla_days", "ok"] {
            assert!(row.get(key).is_some(), "row without `{key}`: {row}");
        }
    }
}

#[test]
fn plan_table_reads_well() {
    let out = patchd(&["plan", "-c", "config/example.toml", "--offline", "--from", FROM, "--count", "3"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    golden("plan-example.stdout", &stdout(&out));
}

#[test]
fn plan_rejects_an_invalid_configuration_like_check() {
    let out = patchd(&["plan", "-c", "tests/fixtures/invalid/everything-wrong.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = patchd(&["plan", "-c", "config/example.toml", "--from", "yesterday"]);
    assert_eq!(out.status.code(), Some(2), "clap reports usage errors with 2");
    assert!(stderr(&out).contains("RFC 3339"), "{}", stderr(&out));
}

#[test]
fn help_teaches_the_tool() {
    let out = patchd(&["--help"]);
    let text = stdout(&out);
    for needle in
        ["check", "plan", "--config", "PATCHD_CONFIG", "--database", "--endpoint-url", "--log-format"]
    {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
    let text = stdout(&patchd(&["plan", "--help"]));
    assert!(text.contains("worst-case age"), "{text}");
}

#[test]
fn a_reader_that_stops_early_ends_patchd_quietly() {
    use std::io::Read as _;
    // Far more than a pipe holds, so patchd is still writing when the reader leaves.
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .current_dir(root())
        .args(["plan", "-c", "config/example.toml", "--offline", "--count", "1000"])
        .env_remove("PATCHD_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 64];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The read end is closed here, as `| head` closes it.
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "the status a shell gives a process SIGPIPE ended");
    let stderr = stderr(&out);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "no panic, no backtrace: {stderr}"
    );
}
