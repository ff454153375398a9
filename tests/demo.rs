//! `patchd demo` as a user runs it: the whole story ends with fewer open findings than it
//! started with and leaves a database the reports read; Ctrl-C and `--duration` stop it
//! cleanly; a directory that already holds a database is refused.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("patchd-demo-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn patchd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    // The demo must need nothing from the environment: no credentials, no endpoint, no config.
    for var in
        support::MACHINE_ENV.iter().chain(&["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PATCHD_LOG"])
    {
        cmd.env_remove(var);
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd
}

fn demo(dir: &Path, extra: &[&str]) -> Output {
    patchd().args(["demo", "--dir"]).arg(dir).args(extra).stdin(Stdio::null()).output().unwrap()
}

/// `patchd demo --dir DIR EXTRA` running, its stdout piped for [`Lines`] to read.
fn spawn_demo(dir: &Path, extra: &[&str]) -> Child {
    let mut cmd = patchd();
    cmd.args(["demo", "--dir"]).arg(dir).args(extra);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap()
}

/// `before -> after` of the `all` row's TOTAL column in the final picture.
fn open_totals(stdout: &str) -> (u64, u64) {
    let row = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("all ") && l.contains("->"))
        .unwrap_or_else(|| panic!("no before -> after row in:\n{stdout}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    let n = cells.len();
    (cells[n - 3].parse().unwrap(), cells[n - 1].parse().unwrap())
}

/// Runs the command the demo suggested that starts with `patchd <command>`, exactly as
/// printed plus `extra`, in `dir`; it must succeed.
fn suggested(stdout: &str, command: &str, extra: &[&str], dir: &Path) -> Output {
    let line = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("patchd {command}")))
        .unwrap_or_else(|| panic!("the demo suggests no `patchd {command}`:\n{stdout}"));
    let args: Vec<&str> = line.split_whitespace().skip(1).collect();
    let out = patchd().args(&args).args(extra).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "`{line}` failed: {out:?}");
    out
}

/// The last picture's "after" counts: rank -> (status as the JSON reports spell it, count).
fn final_picture(stdout: &str) -> Vec<(String, Vec<(&'static str, u64)>)> {
    let picture = stdout.rsplit("[7/7]").next().unwrap();
    let statuses = ["breached", "due-soon", "ok", "excepted"];
    picture
        .lines()
        .filter_map(|l| {
            let rank = l.split_whitespace().next()?;
            if !["critical", "high", "medium", "low"].contains(&rank) {
                return None;
            }
            let afters: Vec<u64> = l
                .split("->")
                .skip(1)
                .map(|c| c.split_whitespace().next().unwrap().parse().unwrap())
                .collect();
            Some((rank.to_string(), statuses.iter().copied().zip(afters).collect()))
        })
        .collect()
}

#[test]
fn the_demo_tells_the_whole_story_and_leaves_a_database_to_explore() {
    let scratch = Scratch::new("story");
    let out = demo(&scratch.0, &["--speed", "600"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}\n{stdout}");
    for phase in 1..=7 {
        assert!(stdout.contains(&format!("[{phase}/7]")), "phase {phase} missing:\n{stdout}");
    }
    assert!(stdout.contains("create patchd-prod-al2"), "{stdout}");
    assert!(stdout.contains("register patch group web-prod (AMAZON_LINUX_2) -> patchd-prod-al2"), "{stdout}");
    assert!(stdout.contains("install-web: "), "progress lines: {stdout}");
    // The canary wave and its gate, in the progress and in the summary.
    assert!(stdout.contains(", wave 1/3,"), "the canary wave in progress: {stdout}");
    assert!(stdout.contains("install-web: waves 3 of 3 sent, 3 gate(s) passed"), "{stdout}");
    assert!(stdout.contains("blind spots: "), "{stdout}");
    let (before, after) = open_totals(&stdout);
    assert!(after < before, "the install should close findings: {before} -> {after}\n{stdout}");

    let evidence = std::fs::read_to_string(scratch.0.join("evidence.html")).expect("the evidence report");
    assert!(evidence.contains("id=\"patchd-evidence-data\""), "not the evidence report");
    assert!(stdout.contains("The auditor's evidence report: "), "{stdout}");

    // The reports it suggests, run as printed, show the figures it printed: every record the
    // demo left is in the past, and they judge as of the instant of its last picture.
    let config = scratch.0.join("patchd.toml");
    let report = suggested(&stdout, "report sla", &["--format", "json"], &scratch.0);
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    for (rank, statuses) in final_picture(&stdout) {
        for (status, printed) in statuses {
            let counted = json["totals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["rank"] == rank.as_str() && t["status"] == status)
                .map_or(0, |t| t["count"].as_u64().unwrap());
            assert_eq!(counted, printed, "report sla: {rank} {status}\n{stdout}");
        }
    }
    let coverage = suggested(&stdout, "report coverage", &["--format", "json"], &scratch.0);
    let coverage: serde_json::Value = serde_json::from_slice(&coverage.stdout).unwrap();
    let blind: std::collections::BTreeSet<&str> =
        coverage["gaps"].as_array().unwrap().iter().map(|g| g["instance_id"].as_str().unwrap()).collect();
    let line = stdout.lines().find(|l| l.contains("blind spots: ")).unwrap();
    let printed: usize = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|n| !n.is_empty())
        .map(|n| n.parse::<usize>().unwrap())
        .sum();
    assert_eq!(blind.len(), printed, "report coverage counts the blind spots the demo printed: {line}");
    let history = suggested(&stdout, "report history", &["--format", "json"], &scratch.0);
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let remediated: u64 =
        history["per_rank"].as_array().unwrap().iter().map(|r| r["remediated"].as_u64().unwrap()).sum();
    assert!(remediated > 0, "report history shows what the demo's install remediated: {history}");
    suggested(&stdout, "report evidence", &[], &scratch.0);
    assert!(scratch.0.join("evidence.html").exists());
    // Every platform has a dated source (SSM's or a feed's): no clock is an estimate, and each
    // names where it comes from.
    let clocks = json["clocks"].as_array().expect("clocks per platform");
    let platforms: Vec<&str> = clocks.iter().map(|c| c["platform"].as_str().unwrap()).collect();
    for platform in ["Amazon Linux 2023", "Red Hat Enterprise Linux 9.4", "Ubuntu 22.04"] {
        let c = clocks
            .iter()
            .find(|c| c["platform"] == platform)
            .unwrap_or_else(|| panic!("{platform} not among {platforms:?}"));
        assert!(c["open"].as_u64().unwrap() > 0, "{c}");
        assert_eq!(c["estimated"], 0, "{platform}: {c}");
    }
    let origins = serde_json::to_string(clocks).unwrap();
    for feed in ["advisory: amazon-linux-2023", "advisory: redhat", "advisory: ubuntu", "ssm"] {
        assert!(origins.contains(feed), "{feed} not in {origins}");
    }
    let status = patchd().args(["advisories", "status", "--config"]).arg(&config).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    for feed in ["amazon-linux-2023", "redhat", "ubuntu", "kev"] {
        assert!(status.lines().any(|l| l.starts_with(feed) && !l.contains("never")), "{feed}:\n{status}");
    }
    let runs =
        patchd().args(["report", "history", "--format", "json", "--config"]).arg(&config).output().unwrap();
    assert!(runs.status.success(), "{runs:?}");
    // The demo fleet is the home account: the reports know its id by name.
    let home = patchd()
        .args(["report", "sla", "--format", "json", "--account", "home", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(home.status.success(), "{home:?}");
    let home: serde_json::Value = serde_json::from_slice(&home.stdout).unwrap();
    assert_eq!(home["totals"], json["totals"], "every finding of the demo is the home account's");

    // A second demo into the same directory would mix two fleets' histories.
    let again = demo(&scratch.0, &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds a demo database"), "{again:?}");
}

/// The child's stdout, line by line.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl Lines {
    fn of(child: &mut Child) -> Lines {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Reads to the end whether or not anyone still listens, so the child never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Lines { rx, seen: String::new() }
    }

    /// Reads until a line contains `marker`; returns all that was read so far.
    fn until(&mut self, marker: &str, timeout: Duration) -> &str {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                    if line.contains(marker) {
                        return &self.seen;
                    }
                }
                Err(_) => panic!("no `{marker}` within {timeout:?}; output so far:\n{}", self.seen),
            }
        }
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    support::exit_within(child, timeout)
        .unwrap_or_else(|| panic!("patchd demo did not stop within {timeout:?}"))
}

#[test]
fn ctrl_c_stops_the_demo_cleanly() {
    let scratch = Scratch::new("interrupt");
    // Real time on the simulator: the install window would take many minutes.
    let mut child = spawn_demo(&scratch.0, &["--speed", "1"]);
    let mut lines = Lines::of(&mut child);
    lines.until("[3/7]", Duration::from_secs(60));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = wait_exit(&mut child, Duration::from_secs(30));
    // Exiting 0 alone would not tell a clean stop from a failure that a stop excused.
    lines.until("stopped before the end", Duration::from_secs(5));
    assert!(status.success(), "an interrupted demo exits 0: {status:?}\n{}", lines.seen);
    assert!(scratch.0.join("patchd.db").exists());
}

#[test]
fn duration_bounds_the_demo() {
    let scratch = Scratch::new("duration");
    // At real time the story would take many minutes; the bound ends it after three seconds.
    let out = demo(&scratch.0, &["--speed", "1", "--duration", "3s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("stopped before the end"), "{stdout}");
    assert!(stdout.contains("patchd report sla"), "the way to explore is still shown: {stdout}");
}

#[test]
fn keep_leaves_the_simulator_running_until_ctrl_c() {
    let scratch = Scratch::new("keep");
    let mut child = spawn_demo(&scratch.0, &["--keep", "--speed", "600"]);
    let mut lines = Lines::of(&mut child);
    let seen = lines.until("Ctrl-C stops it.", Duration::from_secs(120)).to_string();
    let line =
        seen.lines().find(|l| l.contains("keeps running at http://")).expect("the simulator's address");
    let address = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap();
    let address = address.trim_end_matches(|c: char| !c.is_ascii_digit());
    // The story is over and the endpoint still answers.
    std::net::TcpStream::connect(address).unwrap_or_else(|e| panic!("{address} does not answer: {e}"));
    assert!(child.try_wait().unwrap().is_none(), "the demo exited instead of keeping the simulator");
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
