//! Scale benchmark of the `fleet-sim` binary on `scenarios/scale-10k.toml`.
//!
//! Run: `cargo bench -p fleet-sim --bench scale` (release profile; Linux, as it reads /proc).
//! Cargo builds the `fleet-sim` binary with the bench profile first; running the bench
//! executable by hand needs `cargo build --release -p fleet-sim --bin fleet-sim` beforehand.
//!
//! It checks the simulator's performance targets and prints their figures:
//! start-up under 2 s, resident memory under 500 MB, DescribeInstancePatches p50 under 1 ms on
//! loopback; and it reports the server's CPU per request so a patchd benchmark can tell
//! whether the simulator could be its bottleneck. The exit status is non-zero when a target is
//! missed. Targets live here rather than in tests because the machines are shared and noisy:
//! a timed assertion in a test would fail at random, a benchmark is read by a human.
//!
//! The server is the real binary in its own process (as patchd's benchmarks run it), so its
//! memory and CPU can be read from /proc without counting the client's.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use aws_sdk_ssm::error::DisplayErrorContext;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const STARTUP_RUNS: usize = 5;
const WARM_UP: usize = 500;
const PATCH_CALLS: usize = 5_000;
const PATCH_STATE_CALLS: usize = 1_000;
const INVOCATION_CALLS: usize = 1_000;
const COMMANDS: usize = 10;
const INSTANCE_INFO_WALKS: usize = 2;
const EC2_WALKS: usize = 5;
const CONCURRENT_CLIENTS: usize = 8;
const CONCURRENT_CALLS: usize = 5_000;

const TARGET_STARTUP: Duration = Duration::from_secs(2);
const TARGET_MEMORY_KB: u64 = 500 * 1000;
const TARGET_PATCHES_P50: Duration = Duration::from_millis(1);

/// Long enough for a cold page cache on a loaded box; a hung binary should not hang the bench.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `fleet-sim` process; killed when dropped so an error or panic leaves nothing behind.
struct Server {
    child: Child,
    endpoint: String,
    // Kept open so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> anyhow::Result<PathBuf> {
    // Cargo builds the package's binaries with the bench's own profile before running a bench,
    // so this is always a fresh release build sitting next to the bench executable.
    let path = PathBuf::from(env!("CARGO_BIN_EXE_fleet-sim"));
    if !path.is_file() {
        bail!(
            "the fleet-sim binary is missing at {}; run `cargo build --release -p fleet-sim --bin fleet-sim` \
             or run this through `cargo bench -p fleet-sim --bench scale`",
            path.display()
        );
    }
    Ok(path)
}

fn scenario() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/scale-10k.toml")
}

/// Spawns the server and returns it with the time from spawn to its `listening on` line.
fn spawn(binary: &Path, scenario: &Path, log: &Path) -> anyhow::Result<(Server, Duration)> {
    let stderr = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(scenario)
        // Pinned so a RUST_LOG=debug in the caller's shell does not put per-call logging in the figures.
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stdout = child.stdout.take().context("stdout is piped")?;
    // Read on a thread so a server that never announces itself fails the bench instead of hanging it.
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let read = reader.read_line(&mut line);
        let _ = sender.send((read.map(|_| line), Instant::now(), reader));
    });
    let outcome = receiver.recv_timeout(STARTUP_TIMEOUT);
    let failure = |what: String, child: &mut Child| {
        let _ = child.kill();
        let _ = child.wait();
        let mut logged = String::new();
        let _ = File::open(log).and_then(|mut f| f.read_to_string(&mut logged));
        anyhow!("fleet-sim {what}; its stderr:\n{logged}")
    };
    let (line, at, reader) = match outcome {
        Ok((Ok(line), at, reader)) => (line, at, reader),
        Ok((Err(e), _, _)) => return Err(failure(format!("stdout could not be read: {e}"), &mut child)),
        Err(_) => {
            return Err(failure(format!("did not announce itself within {STARTUP_TIMEOUT:?}"), &mut child))
        }
    };
    let Some(address) = line.trim_end().strip_prefix("listening on ") else {
        return Err(failure(format!("printed {line:?} instead of `listening on http://...`"), &mut child));
    };
    let endpoint = address.to_string();
    Ok((Server { child, endpoint, _stdout: reader }, at - started))
}

/// `VmRSS` and `VmHWM` (peak resident set) of a process, in kB.
fn memory_kb(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status (this benchmark needs Linux)"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse().ok())
            .with_context(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// utime + stime of a whole process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat (this benchmark needs Linux)"))?;
    // The command name is in parentheses and may contain spaces; the numbered fields follow the
    // last ')'. There, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let rest = stat.rsplit_once(')').map(|(_, rest)| rest).context("malformed /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).context("malformed /proc stat");
    Ok(tick(11)? + tick(12)?)
}

/// Clock ticks per second. `sysconf` would need unsafe code, which the workspace forbids, so
/// ask `getconf` and fall back to Linux's usual 100.
fn clock_ticks_per_second() -> (u64, &'static str) {
    let asked = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0);
    match asked {
        Some(ticks) => (ticks, "getconf CLK_TCK"),
        None => (100, "assumed: getconf CLK_TCK failed"),
    }
}

/// CPU time of the server and of this process over a stretch of work.
#[derive(Clone, Copy)]
struct CpuMark {
    server: u64,
    bench: u64,
}

struct Probe {
    server_pid: String,
    ticks_per_second: u64,
}

impl Probe {
    fn mark(&self) -> anyhow::Result<CpuMark> {
        Ok(CpuMark { server: cpu_ticks(&self.server_pid)?, bench: cpu_ticks("self")? })
    }

    fn micros(&self, ticks: u64) -> f64 {
        ticks as f64 * 1e6 / self.ticks_per_second as f64
    }
}

/// Latencies and CPU of one operation.
struct Row {
    operation: String,
    samples: Vec<Duration>,
    rows_per_response: f64,
    server_cpu_us: f64,
    bench_cpu_us: f64,
}

impl Row {
    fn percentile(&self, p: f64) -> Duration {
        // Nearest rank on sorted samples.
        let rank = ((p / 100.0) * self.samples.len() as f64).ceil().max(1.0) as usize;
        self.samples[rank.min(self.samples.len()) - 1]
    }
}

/// Collects one operation's samples between two CPU marks.
struct Meter<'a> {
    probe: &'a Probe,
    operation: String,
    start: CpuMark,
    samples: Vec<Duration>,
    rows: usize,
}

impl<'a> Meter<'a> {
    fn new(probe: &'a Probe, operation: impl Into<String>) -> anyhow::Result<Meter<'a>> {
        Ok(Meter { probe, operation: operation.into(), start: probe.mark()?, samples: Vec::new(), rows: 0 })
    }

    fn record(&mut self, elapsed: Duration, rows: usize) {
        self.samples.push(elapsed);
        self.rows += rows;
    }

    fn finish(mut self) -> anyhow::Result<Row> {
        let end = self.probe.mark()?;
        let n = self.samples.len().max(1) as f64;
        self.samples.sort_unstable();
        Ok(Row {
            operation: self.operation,
            rows_per_response: self.rows as f64 / n,
            server_cpu_us: self.probe.micros(end.server - self.start.server) / n,
            bench_cpu_us: self.probe.micros(end.bench - self.start.bench) / n,
            samples: self.samples,
        })
    }
}

fn sdk<T, E: std::error::Error>(what: &str, result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow!("{what} failed: {}", DisplayErrorContext(&e)))
}

fn ssm_client(endpoint: &str) -> aws_sdk_ssm::Client {
    let credentials = aws_sdk_ssm::config::Credentials::new("AKID", "SECRET", None, None, "bench");
    let config = aws_sdk_ssm::Config::builder()
        .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
        .region(aws_sdk_ssm::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        // The scenario injects no faults: any retry would hide a real error and skew latencies.
        .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ssm::Client::from_conf(config)
}

fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    let credentials = aws_sdk_ec2::config::Credentials::new("AKID", "SECRET", None, None, "bench");
    let config = aws_sdk_ec2::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_ec2::Client::from_conf(config)
}

/// Managed nodes as DescribeInstanceInformation lists them.
struct Nodes {
    managed: Vec<String>,
    online: Vec<String>,
}

async fn instance_information(ssm: &aws_sdk_ssm::Client, meter: &mut Meter<'_>) -> anyhow::Result<Nodes> {
    let mut nodes = Nodes { managed: Vec::new(), online: Vec::new() };
    let mut token: Option<String> = None;
    loop {
        let started = Instant::now();
        let page = sdk(
            "DescribeInstanceInformation",
            ssm.describe_instance_information().max_results(50).set_next_token(token.take()).send().await,
        )?;
        meter.record(started.elapsed(), page.instance_information_list().len());
        for node in page.instance_information_list() {
            let Some(id) = node.instance_id() else { continue };
            nodes.managed.push(id.to_string());
            if node.ping_status().map(|s| s.as_str()) == Some("Online") {
                nodes.online.push(id.to_string());
            }
        }
        match page.next_token() {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(nodes),
        }
    }
}

async fn instance_patches(
    ssm: &aws_sdk_ssm::Client,
    ids: &[String],
    rng: &mut ChaCha8Rng,
    page_size: i32,
    calls: usize,
    meter: &mut Meter<'_>,
) -> anyhow::Result<()> {
    for _ in 0..calls {
        let id = &ids[rng.random_range(0..ids.len())];
        let started = Instant::now();
        let page = sdk(
            "DescribeInstancePatches",
            ssm.describe_instance_patches().instance_id(id).max_results(page_size).send().await,
        )?;
        meter.record(started.elapsed(), page.patches().len());
    }
    Ok(())
}

async fn ec2_walk(ec2: &aws_sdk_ec2::Client, meter: Option<&mut Meter<'_>>) -> anyhow::Result<usize> {
    let mut meter = meter;
    let mut token: Option<String> = None;
    let mut total = 0;
    loop {
        let started = Instant::now();
        let page = sdk(
            "DescribeInstances",
            ec2.describe_instances().max_results(1000).set_next_token(token.take()).send().await,
        )?;
        let elapsed = started.elapsed();
        let count: usize = page.reservations().iter().map(|r| r.instances().len()).sum();
        total += count;
        if let Some(meter) = meter.as_deref_mut() {
            meter.record(elapsed, count);
        }
        match page.next_token() {
            Some(next) => token = Some(next.to_string()),
            None => return Ok(total),
        }
    }
}

/// Figures of the concurrent DescribeInstancePatches run.
struct Throughput {
    requests_per_second: f64,
    server_cores: f64,
    server_cpu_us: f64,
}

struct Figures {
    rows: Vec<Row>,
    throughput: Throughput,
    idle_server_cores: f64,
}

async fn load(endpoint: &str, probe: &Probe) -> anyhow::Result<Figures> {
    let ssm = ssm_client(endpoint);
    let ec2 = ec2_client(endpoint);
    // Fixed seed: the same instances are asked for on every run, so runs compare.
    let mut rng = ChaCha8Rng::seed_from_u64(20261128);
    let mut rows = Vec::new();

    // The scenario's clock runs at real time; this shows what the server spends with no calls.
    let idle_start = probe.mark()?;
    let idle_started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_cpu = probe.micros(probe.mark()?.server - idle_start.server);
    let idle_server_cores = idle_cpu / idle_started.elapsed().as_micros() as f64;

    // The first walk opens the connection and collects the ids; only later walks are measured.
    let mut warm = Meter::new(probe, "warm-up")?;
    let nodes = instance_information(&ssm, &mut warm).await?;
    if nodes.managed.len() < 1000 || nodes.online.len() < COMMANDS * 50 {
        bail!(
            "DescribeInstanceInformation listed {} managed nodes ({} online); is this scale-10k?",
            nodes.managed.len(),
            nodes.online.len()
        );
    }
    let mut meter = Meter::new(probe, "DescribeInstanceInformation (50/page, full walk)")?;
    for _ in 0..INSTANCE_INFO_WALKS {
        instance_information(&ssm, &mut meter).await?;
    }
    rows.push(meter.finish()?);

    instance_patches(&ssm, &nodes.managed, &mut rng, 100, WARM_UP, &mut warm).await?;
    for page_size in [50, 100] {
        let mut meter = Meter::new(probe, format!("DescribeInstancePatches (MaxResults {page_size})"))?;
        instance_patches(&ssm, &nodes.managed, &mut rng, page_size, PATCH_CALLS, &mut meter).await?;
        rows.push(meter.finish()?);
    }

    let mut meter = Meter::new(probe, "DescribeInstancePatchStates (50 ids)")?;
    for _ in 0..PATCH_STATE_CALLS {
        let ids: Vec<String> = nodes.managed.choose_multiple(&mut rng, 50).cloned().collect();
        let started = Instant::now();
        let page = sdk(
            "DescribeInstancePatchStates",
            ssm.describe_instance_patch_states().set_instance_ids(Some(ids)).max_results(50).send().await,
        )?;
        meter.record(started.elapsed(), page.instance_patch_states().len());
    }
    rows.push(meter.finish()?);

    // Distinct online nodes per command, so every invocation is real work for the simulator.
    let mut online = nodes.online.clone();
    online.shuffle(&mut rng);
    let mut command_ids = Vec::new();
    let mut meter = Meter::new(probe, "SendCommand (Scan, 50 ids)")?;
    for targets in online.chunks(50).take(COMMANDS) {
        let started = Instant::now();
        let sent = sdk(
            "SendCommand",
            ssm.send_command()
                .document_name("AWS-RunPatchBaseline")
                .set_instance_ids(Some(targets.to_vec()))
                .parameters("Operation", vec!["Scan".to_string()])
                .max_concurrency("50")
                .max_errors("10")
                .send()
                .await,
        )?;
        meter.record(started.elapsed(), 1);
        let id = sent.command().and_then(|c| c.command_id()).context("SendCommand answered no CommandId")?;
        command_ids.push(id.to_string());
    }
    rows.push(meter.finish()?);

    let mut meter = Meter::new(probe, "ListCommandInvocations (50, Details)")?;
    for _ in 0..INVOCATION_CALLS {
        let id = &command_ids[rng.random_range(0..command_ids.len())];
        let started = Instant::now();
        let page = sdk(
            "ListCommandInvocations",
            ssm.list_command_invocations().command_id(id).max_results(50).details(true).send().await,
        )?;
        meter.record(started.elapsed(), page.command_invocations().len());
    }
    rows.push(meter.finish()?);

    let listed = ec2_walk(&ec2, None).await?;
    if listed != 10_000 {
        bail!("DescribeInstances listed {listed} instances, expected the scenario's 10,000");
    }
    let mut meter = Meter::new(probe, "EC2 DescribeInstances (1000/page, full walk)")?;
    for _ in 0..EC2_WALKS {
        ec2_walk(&ec2, Some(&mut meter)).await?;
    }
    rows.push(meter.finish()?);

    // Several clients at once: does the server keep up, and how much of a core does it need?
    // The client runs on one thread, so on a 2-core box this is bounded by the client.
    let ids = std::sync::Arc::new(nodes.managed.clone());
    let start = probe.mark()?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENT_CLIENTS {
        let ssm = ssm.clone();
        let ids = ids.clone();
        let mut rng = ChaCha8Rng::seed_from_u64(worker as u64);
        tasks.spawn(async move {
            for _ in 0..CONCURRENT_CALLS / CONCURRENT_CLIENTS {
                let id = &ids[rng.random_range(0..ids.len())];
                sdk(
                    "DescribeInstancePatches",
                    ssm.describe_instance_patches().instance_id(id).max_results(100).send().await,
                )?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a client task panicked")??;
    }
    let wall = started.elapsed();
    let calls = (CONCURRENT_CALLS / CONCURRENT_CLIENTS * CONCURRENT_CLIENTS) as f64;
    let server_us = probe.micros(probe.mark()?.server - start.server);
    let throughput = Throughput {
        requests_per_second: calls / wall.as_secs_f64(),
        server_cores: server_us / wall.as_micros() as f64,
        server_cpu_us: server_us / calls,
    };

    Ok(Figures { rows, throughput, idle_server_cores })
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() - 1) / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1000.0)
}

fn run() -> anyhow::Result<bool> {
    let binary = binary()?;
    let scenario = scenario();
    let (ticks_per_second, ticks_source) = clock_ticks_per_second();
    let log = std::env::temp_dir().join(format!("fleet-sim-scale-bench-{}.log", std::process::id()));
    println!("fleet-sim scale benchmark");
    println!("  binary:   {}", binary.display());
    println!("  scenario: {}", scenario.display());
    println!(
        "  cores: {}, clock ticks: {ticks_per_second}/s ({ticks_source}), server stderr: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        log.display()
    );
    if cfg!(debug_assertions) {
        println!("  WARNING: debug build; run `cargo bench -p fleet-sim --bench scale` for real figures");
    }

    // Start-up: the last run's server stays up for the load below.
    let mut startups = Vec::new();
    let mut server = None;
    for run in 0..STARTUP_RUNS {
        let (started, took) = spawn(&binary, &scenario, &log)?;
        startups.push(took);
        if run + 1 == STARTUP_RUNS {
            server = Some(started);
        }
    }
    let server = server.context("at least one start-up run")?;
    startups.sort_unstable();
    let (rss_started, hwm_started) = memory_kb(server.pid())?;

    let probe = Probe { server_pid: server.pid().to_string(), ticks_per_second };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let figures = runtime.block_on(load(&server.endpoint, &probe))?;
    let (rss_loaded, hwm_loaded) = memory_kb(server.pid())?;
    drop(server);
    let _ = std::fs::remove_file(&log);

    println!();
    println!(
        "start-up to `listening on` ({STARTUP_RUNS} runs): min {} ms, median {} ms, max {} ms",
        ms(startups[0]),
        ms(median(&startups)),
        ms(startups[startups.len() - 1])
    );
    println!(
        "server memory: after start-up VmRSS {} (VmHWM {}); after the load VmRSS {} (VmHWM {})",
        mb(rss_started),
        mb(hwm_started),
        mb(rss_loaded),
        mb(hwm_loaded)
    );
    println!("server CPU while idle (clock at real time, no calls): {:.3} cores", figures.idle_server_cores);
    println!();
    println!("sequential calls through aws-sdk-ssm / aws-sdk-ec2 on loopback, one in flight (ms):");
    println!(
        "| {:<48} | {:>6} | {:>8} | {:>7} | {:>7} | {:>7} | {:>7} | {:>15} | {:>14} |",
        "operation", "n", "rows/rsp", "p50", "p90", "p99", "max", "server CPU µs/req", "bench CPU µs/req"
    );
    println!(
        "|{:-<50}|{:->8}|{:->10}|{:->9}|{:->9}|{:->9}|{:->9}|{:->19}|{:->18}|",
        "", "", "", "", "", "", "", "", ""
    );
    for row in &figures.rows {
        println!(
            "| {:<48} | {:>6} | {:>8.1} | {:>7} | {:>7} | {:>7} | {:>7} | {:>17.0} | {:>16.0} |",
            row.operation,
            row.samples.len(),
            row.rows_per_response,
            ms(row.percentile(50.0)),
            ms(row.percentile(90.0)),
            ms(row.percentile(99.0)),
            ms(row.percentile(100.0)),
            row.server_cpu_us,
            row.bench_cpu_us
        );
    }
    let t = &figures.throughput;
    println!();
    println!(
        "DescribeInstancePatches (MaxResults 100), {CONCURRENT_CLIENTS} in flight: {:.0} req/s, \
         server {:.0} µs CPU/req, server busy {:.2} cores",
        t.requests_per_second, t.server_cpu_us, t.server_cores
    );
    println!(
        "(server CPU is utime+stime of the fleet-sim process over each row, at {ticks_per_second} ticks/s: \
         rows with few calls are coarse)"
    );

    let patches: Vec<&Row> =
        figures.rows.iter().filter(|r| r.operation.starts_with("DescribeInstancePatches")).collect();
    let mut checks = vec![
        (
            format!("start-up median {} ms < {} ms", ms(median(&startups)), TARGET_STARTUP.as_millis()),
            median(&startups) < TARGET_STARTUP,
        ),
        (
            format!("peak resident memory {} < {}", mb(hwm_loaded.max(hwm_started)), mb(TARGET_MEMORY_KB)),
            hwm_loaded.max(hwm_started) < TARGET_MEMORY_KB,
        ),
    ];
    for row in patches {
        checks.push((
            format!("{} p50 {} ms < {} ms", row.operation, ms(row.percentile(50.0)), ms(TARGET_PATCHES_P50)),
            row.percentile(50.0) < TARGET_PATCHES_P50,
        ));
    }
    println!();
    println!("targets:");
    for (what, met) in &checks {
        println!("  {} {what}", if *met { "met   " } else { "MISSED" });
    }
    Ok(checks.iter().all(|(_, met)| *met))
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("scale bench: a target was missed (see above)");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("scale bench: {error:#}");
            ExitCode::from(2)
        }
    }
}
