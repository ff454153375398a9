//! The daemon's benchmarks, each against the `fleet-sim` binary in its own process so that
//! patchd's CPU time and memory are its own:
//!
//! 1. `scan`: `patchd scan` over the 10,000 instances of `scale-10k`, then the full compliance
//!    sync: wall time, AWS calls by operation against the minimum, patchd's CPU time and peak
//!    resident memory (from GNU time);
//! 2. `idle`: `patchd run` idle with 100 windows configured: resident memory and CPU over 60 s;
//! 3. `sync`: the compliance sync's cost against what a competent script would spend (below),
//!    over fleets of 10,000 and 100,000 instances, on `scale-10k` (a third to half of the
//!    instances behind) and `scale-clean` (nine in ten instances fully patched).
//!
//! ```sh
//! cargo build --release -p patchd -p fleet-sim
//! cargo run --release -p patchd --example daemon_bench [-- scan|idle]
//! cargo run --release -p patchd --example daemon_bench -- sync [--instances 10000,100000] [--fleet scale|clean|both]
//! ```
//!
//! The `sync` baseline is what a boto3 script that knows SSM would call to read the same
//! instances patchd reads (the scanned ones, plus the running ones whose agent lost its
//! connection: SSM still holds their last report, and "every result SSM holds is recorded"): `DescribeInstancePatchStates` for 50 ids a call, `ceil(n / 50)`, then for each
//! instance with a compliance report (an `Operation`) `DescribeInstancePatches` filtered to the
//! open states (MISSING, FAILED, INSTALLED_PENDING_REBOOT, INSTALLED_REJECTED,
//! AVAILABLE_SECURITY_UPDATE) in pages of 100: `max(1, ceil(open / 100))`, with `open` the sum
//! of the matching counts of the instance's patch state. The benchmark reads those counts from
//! the simulator itself after patchd is done (the simulator checks that a request is signed,
//! not the signature), so its own calls are not counted as patchd's.

#[path = "bench_support/mod.rs"]
mod bench_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench_support::{binary, root, Error};

const OPERATIONS: [&str; 6] = [
    "DescribeInstances",
    "DescribeInstanceInformation",
    "SendCommand",
    "ListCommandInvocations",
    "DescribeInstancePatchStates",
    "DescribeInstancePatches",
];

/// The simulator on a free port; its first stdout line names the address.
struct Simulator {
    child: Child,
    url: String,
}

impl Simulator {
    fn start(time_scale: &str) -> Result<Simulator, Error> {
        Simulator::start_with(time_scale, "scale-10k", None)
    }

    /// `scenario` names a file of `crates/fleet-sim/scenarios`; `instances` rescales it.
    fn start_with(time_scale: &str, scenario: &str, instances: Option<usize>) -> Result<Simulator, Error> {
        let scenario = root().join(format!("crates/fleet-sim/scenarios/{scenario}.toml"));
        let mut command = Command::new(binary("fleet-sim")?);
        command.args(["--listen", "127.0.0.1:0", "--time-scale", time_scale, "--scenario"]).arg(&scenario);
        if let Some(n) = instances {
            command.arg("--instances").arg(n.to_string());
        }
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let url = first.trim().strip_prefix("listening on ").ok_or("unexpected first line")?.to_string();
        Ok(Simulator { child, url })
    }

    /// Calls per operation so far, from the control API (answered calls, throttled included).
    fn calls(&self) -> Result<serde_json::Value, Error> {
        Ok(self.stats()?["calls"].clone())
    }

    /// The control API's counters: `calls`, `throttled`, `failed`... per operation.
    fn stats(&self) -> Result<serde_json::Value, Error> {
        self.get("/_sim/stats")
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, Error> {
        let (status, body) = http(&self.url, &format!("GET {path}"), &[], "")?;
        if status != 200 {
            return Err(format!("GET {path}: HTTP {status}: {body}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// One SSM call over the JSON 1.1 protocol. The simulator routes on the credential scope
    /// and only checks that the request is signed, so a well-formed unsigned header does.
    fn ssm(&self, operation: &str, request: &serde_json::Value) -> Result<serde_json::Value, Error> {
        let target = format!("AmazonSSM.{operation}");
        let headers = [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", target.as_str()),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/ssm/aws4_request, \
                 SignedHeaders=host, Signature=0",
            ),
        ];
        let (status, body) = http(&self.url, "POST /", &headers, &request.to_string())?;
        if status != 200 {
            return Err(format!("{operation}: HTTP {status}: {body}").into());
        }
        Ok(serde_json::from_str(&body)?)
    }
}

/// A minimal HTTP/1.1 exchange on a fresh connection: (status, body).
fn http(url: &str, request_line: &str, headers: &[(&str, &str)], body: &str) -> Result<(u16, String), Error> {
    let address = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(address)?;
    let mut head = format!("{request_line} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8(response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or("no body")?;
    let status = head.split_whitespace().nth(1).ok_or("no status")?.parse()?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(body)? } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> Result<String, Error> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("short chunk")?);
        body = rest.get(size + 2..).ok_or("short chunk")?;
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_config(dir: &Path, url: &str, windows: usize) -> Result<PathBuf, Error> {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{dir}\"\ndatabase_url = \"sqlite://{dir}/patchd.db\"\nlisten = \"127.0.0.1:0\"\n\n\
         [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{url}\"\n\n\
         [[group]]\nname = \"fleet\"\n[group.tags]\nEnvironment = [\"prod\", \"staging\"]\n",
        dir = dir.display()
    );
    for n in 0..windows {
        // Far from now, so the idle daemon only waits: one window per minute of a Sunday night.
        text.push_str(&format!(
            "\n[[window]]\nname = \"w{n:03}\"\nschedule = \"cron({} {} ? * SUN *)\"\nduration_hours = 2\n\
             [[window.task]]\noperation = \"scan\"\ngroups = [\"fleet\"]\n",
            n % 60,
            n / 60
        ));
    }
    let path = dir.join("patchd.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn patchd(config: &Path) -> Result<Command, Error> {
    let mut command = Command::new(binary("patchd")?);
    command
        .arg("--config")
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .env_remove("PATCHD_CONFIG")
        .env_remove("PATCHD_DATABASE_URL");
    Ok(command)
}

fn scratch(name: &str) -> Result<PathBuf, Error> {
    let dir = std::env::temp_dir().join(format!("patchd-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// One GNU time -v field.
fn time_field<'a>(report: &'a str, label: &str) -> Option<&'a str> {
    report.lines().find_map(|l| l.trim().strip_prefix(label)).map(str::trim)
}

/// `patchd scan` of the whole fleet under GNU time (`-v`: peak RSS and CPU on stderr).
fn timed_scan(config: &Path) -> Result<std::process::Output, Error> {
    Ok(Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary("patchd")?)
        .args(patchd(config)?.get_args())
        .args(["scan", "--group", "fleet", "--max-concurrency", "100%", "--max-errors", "100%"])
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .output()?)
}

fn scan_and_sync() -> Result<(), Error> {
    // 600 simulated seconds per second: a 30 s scan takes 50 ms of real time.
    let sim = Simulator::start("600")?;
    let dir = scratch("scan")?;
    let config = write_config(&dir, &sim.url, 1)?;
    let before = sim.calls()?;
    let started = Instant::now();
    let out = timed_scan(&config)?;
    let wall = started.elapsed();
    let after = sim.calls()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("patchd scan failed: {stderr}").into());
    }
    println!("{}", String::from_utf8_lossy(&out.stdout));
    println!("patchd scan + sync of scale-10k: {:.1} s wall", wall.as_secs_f64());
    for (label, name) in [
        ("User time (seconds):", "user CPU s"),
        ("System time (seconds):", "system CPU s"),
        ("Maximum resident set size (kbytes):", "peak RSS kB"),
    ] {
        println!("  {name}: {}", time_field(&stderr, label).unwrap_or("?"));
    }
    println!("  AWS calls by operation:");
    for op in OPERATIONS {
        let n = after[op].as_u64().unwrap_or(0) - before[op].as_u64().unwrap_or(0);
        println!("    {op}: {n}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64, Error> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').ok_or("bad stat")?.1.split_whitespace().collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

fn rss_kb(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?)
}

fn idle() -> Result<(), Error> {
    let sim = Simulator::start("1")?;
    let dir = scratch("idle")?;
    let config = write_config(&dir, &sim.url, 100)?;
    let mut daemon = patchd(&config)?.arg("run").stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
    let pid = daemon.id();
    // Start-up (migrations, scheduling) is not idling.
    std::thread::sleep(Duration::from_secs(5));
    let ticks_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let mut peak_rss = 0;
    while started.elapsed() < Duration::from_secs(60) {
        peak_rss = peak_rss.max(rss_kb(pid)?);
        std::thread::sleep(Duration::from_secs(1));
    }
    let ticks = cpu_ticks(pid)? - ticks_before;
    let seconds = started.elapsed().as_secs_f64();
    // Linux reports CPU time in ticks of 1/100 s (USER_HZ).
    let share = ticks as f64 / 100.0 / seconds * 100.0;
    println!("patchd run, idle with 100 windows, over {seconds:.0} s:");
    println!("  resident memory: {} kB at the end, {} kB at most", rss_kb(pid)?, peak_rss);
    println!("  CPU: {:.2} s, {share:.3}% of one core", ticks as f64 / 100.0);
    Command::new("kill").arg("-TERM").arg(pid.to_string()).status()?;
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The counts of an InstancePatchState that DescribeInstancePatches' open-state filter returns.
const OPEN_COUNTS: [&str; 5] = [
    "MissingCount",
    "FailedCount",
    "InstalledPendingRebootCount",
    "InstalledRejectedCount",
    "AvailableSecurityUpdateCount",
];

/// What a competent script would call to read the same fleet's compliance (see the top).
#[derive(Debug, Default)]
struct Baseline {
    /// Instances the scan targeted.
    scanned: usize,
    /// Of those, instances whose patch state has an `Operation`.
    reported: usize,
    /// Of those, instances with at least one open patch, and their open patches in all.
    with_open: usize,
    open_patches: u64,
    state_calls: u64,
    patch_calls: u64,
    /// The patch listings if the script also skips the instances with nothing open.
    patch_calls_open_only: u64,
}

impl Baseline {
    fn total(&self) -> u64 {
        self.state_calls + self.patch_calls
    }
}

/// The instances patchd's Scan commands targeted, from the simulator's command history, and
/// the running instances whose agent lost its connection (not scanned, but read).
fn scanned_instances(sim: &Simulator) -> Result<Vec<String>, Error> {
    let history = sim.get("/_sim/commands")?;
    let mut ids = BTreeSet::new();
    for command in history["commands"].as_array().ok_or("no commands")? {
        if command["operation"] == "Scan" {
            for id in command["instance_ids"].as_array().ok_or("no instance_ids")? {
                ids.insert(id.as_str().ok_or("bad id")?.to_string());
            }
        }
    }
    for instance in sim.get("/_sim/instances")?.as_array().ok_or("no instances")? {
        if instance["state"] == "running" && instance["agent"] == "ConnectionLost" {
            ids.insert(instance["id"].as_str().ok_or("bad id")?.to_string());
        }
    }
    Ok(ids.into_iter().collect())
}

fn baseline(sim: &Simulator, ids: &[String]) -> Result<Baseline, Error> {
    let mut b = Baseline { scanned: ids.len(), ..Baseline::default() };
    for chunk in ids.chunks(50) {
        let mut token: Option<String> = None;
        loop {
            b.state_calls += 1;
            let mut request = serde_json::json!({ "InstanceIds": chunk, "MaxResults": 50 });
            if let Some(token) = &token {
                request["NextToken"] = token.clone().into();
            }
            let page = sim.ssm("DescribeInstancePatchStates", &request)?;
            for state in page["InstancePatchStates"].as_array().ok_or("no InstancePatchStates")? {
                if state["Operation"].as_str().is_none() {
                    continue;
                }
                let open: u64 = OPEN_COUNTS.iter().map(|c| state[*c].as_u64().unwrap_or(0)).sum();
                b.reported += 1;
                b.patch_calls += open.div_ceil(100).max(1);
                if open > 0 {
                    b.with_open += 1;
                    b.open_patches += open;
                    b.patch_calls_open_only += open.div_ceil(100);
                }
            }
            match page["NextToken"].as_str() {
                Some(next) => token = Some(next.to_string()),
                None => break,
            }
        }
    }
    Ok(b)
}

/// One `sync` case's figures, for the closing table.
struct SyncRow {
    fleet: &'static str,
    instances: usize,
    scanned: usize,
    sync_calls: u64,
    total_calls: u64,
    throttled: u64,
    baseline: u64,
    cpu_seconds: f64,
    peak_rss_mb: f64,
    wall_seconds: f64,
}

/// The text without terminal colour sequences (ESC [ ... m).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn counter(map: &serde_json::Value, op: &str) -> u64 {
    map[op].as_u64().unwrap_or(0)
}

fn sync_case(fleet: &'static str, scenario: &str, instances: usize) -> Result<SyncRow, Error> {
    println!("== sync: {fleet} fleet ({scenario}), {instances} instances");
    let sim = Simulator::start_with("600", scenario, Some(instances))?;
    let dir = scratch(&format!("sync-{fleet}-{instances}"))?;
    let config = write_config(&dir, &sim.url, 1)?;
    let before = sim.stats()?;
    let started = Instant::now();
    let out = timed_scan(&config)?;
    let wall = started.elapsed().as_secs_f64();
    let after = sim.stats()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("patchd scan failed: {stderr}").into());
    }
    // patchd's own account of the sync (its last log lines about it), then the figures.
    let log = strip_ansi(&format!("{}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("sync") && !l.contains("configuration warning") && !l.contains("Command being")
        })
        .collect();
    for line in &lines[lines.len().saturating_sub(4)..] {
        println!("  patchd: {}", line.trim());
    }
    let seconds =
        |label: &str| time_field(&stderr, label).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
    let cpu = seconds("User time (seconds):") + seconds("System time (seconds):");
    let peak_kb = seconds("Maximum resident set size (kbytes):");

    let mut calls = BTreeMap::new();
    let mut throttled = 0;
    for (op, n) in after["calls"].as_object().ok_or("no calls")? {
        let n = n.as_u64().unwrap_or(0) - counter(&before["calls"], op);
        if n > 0 {
            calls.insert(op.clone(), n);
        }
        throttled += counter(&after["throttled"], op) - counter(&before["throttled"], op);
    }
    let total: u64 = calls.values().sum();
    let sync_calls = ["DescribeInstancePatchStates", "DescribeInstancePatches"]
        .iter()
        .map(|op| calls.get(*op).copied().unwrap_or(0))
        .sum::<u64>();

    let ids = scanned_instances(&sim)?;
    let base = baseline(&sim, &ids)?;
    println!("  AWS calls by operation (throttled attempts included: {throttled}):");
    for (op, n) in &calls {
        let minimum = match op.as_str() {
            "DescribeInstancePatchStates" => format!("   baseline {}", base.state_calls),
            "DescribeInstancePatches" => format!("   baseline {}", base.patch_calls),
            _ => String::new(),
        };
        println!("    {op:<30} {n:>9}{minimum}");
    }
    println!(
        "  read {} instances (scanned, or with an agent that lost its connection); {} with a compliance report, {} of them with {} open patches",
        base.scanned, base.reported, base.with_open, base.open_patches
    );
    println!("  patchd total calls (scan + sync): {total}; of them sync calls: {sync_calls}");
    println!(
        "  baseline (sync): {} = {} DescribeInstancePatchStates + {} DescribeInstancePatches \
         ({} if clean instances are skipped too)",
        base.total(),
        base.state_calls,
        base.patch_calls,
        base.patch_calls_open_only
    );
    let ratio = |n: u64| n as f64 / base.total().max(1) as f64;
    println!(
        "  ratio sync calls / baseline: {:.2}; total calls / baseline: {:.2}",
        ratio(sync_calls),
        ratio(total)
    );
    println!(
        "  patchd: peak RSS {:.1} MB, CPU {cpu:.1} s (user + sys), {:.2} ms CPU per scanned instance, wall {wall:.1} s",
        peak_kb / 1024.0,
        cpu * 1000.0 / base.scanned.max(1) as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SyncRow {
        fleet,
        instances,
        scanned: base.scanned,
        sync_calls,
        total_calls: total,
        throttled,
        baseline: base.total(),
        cpu_seconds: cpu,
        peak_rss_mb: peak_kb / 1024.0,
        wall_seconds: wall,
    })
}

/// `sync [--instances 10000,100000] [--fleet scale|clean|both]`
fn sync(args: &[String]) -> Result<(), Error> {
    let mut sizes = vec![10_000, 100_000];
    let mut fleets = vec![("scale", "scale-10k"), ("clean", "scale-clean")];
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let value = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--instances" => {
                sizes = value.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>()?;
            }
            "--fleet" => match value.as_str() {
                "scale" => fleets.truncate(1),
                "clean" => {
                    fleets.remove(0);
                }
                "both" => {}
                other => return Err(format!("unknown fleet `{other}`: scale, clean or both").into()),
            },
            other => return Err(format!("unknown option `{other}`: --instances or --fleet").into()),
        }
    }
    let mut rows = Vec::new();
    for &(fleet, scenario) in &fleets {
        for &n in &sizes {
            rows.push(sync_case(fleet, scenario, n)?);
        }
    }
    println!("\n| fleet | instances | scanned | sync calls | total calls | throttled | baseline | sync / baseline | peak RSS | CPU | CPU per instance | wall |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.0} MB | {:.1} s | {:.2} ms | {:.1} s |",
            r.fleet,
            r.instances,
            r.scanned,
            r.sync_calls,
            r.total_calls,
            r.throttled,
            r.baseline,
            r.sync_calls as f64 / r.baseline.max(1) as f64,
            r.peak_rss_mb,
            r.cpu_seconds,
            r.cpu_seconds * 1000.0 / r.scanned.max(1) as f64,
            r.wall_seconds
        );
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("scan") => scan_and_sync(),
        Some("idle") => idle(),
        Some("sync") => sync(&args[1..]),
        None => {
            scan_and_sync()?;
            idle()
        }
        Some(other) => Err(format!("unknown benchmark `{other}`: scan, idle or sync").into()),
    }
}
