//! The daemon issue's two benchmarks, each against the `fleet-sim` binary in its own process
//! so that patchd's CPU time and memory are its own:
//!
//! 1. `patchd scan` over the 10,000 instances of `scale-10k`, then the full compliance sync:
//!    wall time, AWS calls by operation against the minimum, patchd's CPU time and peak
//!    resident memory (from GNU time);
//! 2. `patchd run` idle with 100 windows configured: resident memory and CPU over 60 s.
//!
//! ```sh
//! cargo build --release -p patchd -p fleet-sim
//! cargo run --release -p patchd --example daemon_bench [-- scan|idle]
//! ```

#[path = "bench_support/mod.rs"]
mod bench_support;

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
        let scenario = root().join("crates/fleet-sim/scenarios/scale-10k.toml");
        let mut child = Command::new(binary("fleet-sim")?)
            .args(["--listen", "127.0.0.1:0", "--time-scale", time_scale, "--scenario"])
            .arg(&scenario)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let url = first.trim().strip_prefix("listening on ").ok_or("unexpected first line")?.to_string();
        Ok(Simulator { child, url })
    }

    /// Calls per operation so far, from the control API (answered calls, throttled included).
    fn calls(&self) -> Result<serde_json::Value, Error> {
        let address = self.url.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address)?;
        write!(stream, "GET /_sim/stats HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let body = response.split("\r\n\r\n").nth(1).ok_or("no body")?;
        let stats: serde_json::Value = serde_json::from_str(body)?;
        Ok(stats["calls"].clone())
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

fn scan_and_sync() -> Result<(), Error> {
    // 600 simulated seconds per second: a 30 s scan takes 50 ms of real time.
    let sim = Simulator::start("600")?;
    let dir = scratch("scan")?;
    let config = write_config(&dir, &sim.url, 1)?;
    let before = sim.calls()?;
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(binary("patchd")?)
        .args(patchd(&config)?.get_args())
        .args(["scan", "--group", "fleet", "--max-concurrency", "100%", "--max-errors", "100%"])
        .env("AWS_ACCESS_KEY_ID", "bench")
        .env("AWS_SECRET_ACCESS_KEY", "bench")
        .output()?;
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

fn main() -> Result<(), Error> {
    match std::env::args().nth(1).as_deref() {
        Some("scan") => scan_and_sync(),
        Some("idle") => idle(),
        None => {
            scan_and_sync()?;
            idle()
        }
        Some(other) => Err(format!("unknown benchmark `{other}`: scan or idle").into()),
    }
}
