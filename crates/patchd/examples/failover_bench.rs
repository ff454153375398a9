//! The high-availability issue's figures, with patchd's default lease (15 s, renewed every 5 s):
//!
//! 1. failover time after SIGKILL and after SIGTERM of the leader: from the signal to the
//!    standby's term in the database (the lease row's `acquired_at`), median and max over
//!    `--trials` trials each (default 10), the leader killed at a random point of its renewal
//!    cycle;
//! 2. lease statements per minute, from each daemon's `patchd_lease_queries_total`;
//! 3. a soak: three daemons, a window every 20 s patching 27 instances, a random SIGKILL,
//!    SIGTERM or SIGSTOP-past-the-ttl every few seconds; duplicates and losses counted from the
//!    simulator's command history.
//!
//! Two "hosts" are two processes with their own state_dir and port on this machine, sharing one
//! PostgreSQL database (a fresh schema, `failover_bench`).
//!
//! ```sh
//! cargo build --release -p patchd -p fleet-sim
//! cargo run --release -p patchd --example failover_bench -- postgres://postgres@127.0.0.1:5432/test [--trials N] [--soak-cycles N]
//! ```
//! `PATCHD_BENCH_TARGET_DIR` names another target directory; `PATCHD_BENCH_PROFILE=debug`
//! checks the benchmark itself with debug binaries.

#[path = "bench_support/mod.rs"]
mod bench_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use patchd_store::{LeaseRecord, OpenOptions, Store, SCHEDULER_LEASE};
use sqlx::{Connection, Executor};

use bench_support::{binary, root, Error};

/// The simulator, in its own process.
struct Simulator {
    child: Child,
    url: String,
}

impl Simulator {
    fn start(scenario: &Path) -> Result<Simulator, Error> {
        let mut child = Command::new(binary("fleet-sim")?)
            .args(["--listen", "127.0.0.1:0", "--scenario"])
            .arg(scenario)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut first = String::new();
        BufReader::new(stdout).read_line(&mut first)?;
        let url = first.trim().strip_prefix("listening on ").ok_or("unexpected first line")?.to_string();
        Ok(Simulator { child, url })
    }

    fn get(&self, path: &str) -> Result<serde_json::Value, Error> {
        http_get(self.url.trim_start_matches("http://"), path)
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(address: &str, path: &str) -> Result<serde_json::Value, Error> {
    let text = http_get_text(address, path)?;
    Ok(serde_json::from_str(&text)?)
}

fn http_get_text(address: &str, path: &str) -> Result<String, Error> {
    let mut stream = TcpStream::connect(address)?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let body = response.split_once("\r\n\r\n").ok_or("no body")?.1;
    Ok(body.to_string())
}

/// One daemon ("host").
struct Host {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn new(dir: &Path, name: &str, database: &str, sim: &str, extra: &str) -> Result<Host, Error> {
        let home = dir.join(name);
        std::fs::create_dir_all(&home)?;
        let config = home.join("patchd.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = \"{home}\"\ndatabase_url = \"{database}\"\nlisten = \"127.0.0.1:0\"\nsync_interval = \"6h\"\n\n\
                 [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{sim}\"\n\n[[group]]\nname = \"web\"\n[group.tags]\nRole = \"web\"\n{extra}",
                home = home.display()
            ),
        )?;
        Ok(Host { name: name.into(), config, log: home.join("patchd.log"), child: None })
    }

    fn start(&mut self) -> Result<(), Error> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(binary("patchd")?)
            .arg("--config")
            .arg(&self.config)
            .args(["--log-format", "json", "run"])
            .env("AWS_ACCESS_KEY_ID", "AKIDPATCHDBENCH")
            .env("AWS_SECRET_ACCESS_KEY", "bench")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("PATCHD_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, name: &str) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
        }
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The HTTP address the daemon logged (it listens on port 0).
    fn listen(&self) -> Option<String> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let pid = self.pid()?;
        // The latest start of this process: its pid is in the "patchd starting" line.
        let start = log.rfind(&format!("\"pid\":{pid}"))?;
        let line = log[start..].lines().find(|l| l.contains("HTTP endpoint listening"))?;
        let at = line.find("\"listen\":\"")? + 10;
        Some(line[at..].split('"').next()?.to_string())
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.signal("CONT");
        self.reap();
    }
}

struct Db {
    admin: String,
    url: String,
    rt: tokio::runtime::Runtime,
    store: Option<Store>,
}

impl Db {
    fn fresh(admin: &str, schema: &str) -> Result<Db, Error> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(admin).await?;
            conn.execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str()).await?;
            conn.execute(format!("CREATE SCHEMA {schema}").as_str()).await?;
            Ok::<(), sqlx::Error>(())
        })?;
        let separator = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{separator}options[search_path]={schema}");
        let store =
            rt.block_on(Store::open(&url, &OpenOptions { max_connections: 1, ..OpenOptions::default() }))?;
        Ok(Db { admin: admin.into(), url, rt, store: Some(store) })
    }

    fn lease(&self) -> Option<LeaseRecord> {
        let store = self.store.as_ref()?;
        self.rt.block_on(store.lease(SCHEDULER_LEASE)).ok().flatten()
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            self.rt.block_on(store.close());
        }
        let _ = &self.admin;
    }
}

fn wait_for<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Result<T, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err("timed out".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leader_of<'a>(db: &Db, hosts: &'a mut [Host]) -> Option<&'a mut Host> {
    let lease = db.lease().filter(|l| l.live)?;
    hosts.iter_mut().find(|h| h.pid() == Some(lease.pid))
}

/// A small xorshift: reproducible "random" points of the renewal cycle.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn stats(values: &mut [f64]) -> (f64, f64, f64) {
    values.sort_by(|a, b| a.total_cmp(b));
    let median = if values.len() % 2 == 1 {
        values[values.len() / 2]
    } else {
        (values[values.len() / 2 - 1] + values[values.len() / 2]) / 2.0
    };
    (values[0], median, values[values.len() - 1])
}

fn failover(admin: &str, trials: usize) -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("patchd-failover-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sim = Simulator::start(&root().join("crates/fleet-sim/scenarios/demo.toml"))?;
    let db = Db::fresh(admin, "failover_bench")?;
    let mut hosts =
        vec![Host::new(&dir, "a", &db.url, &sim.url, "")?, Host::new(&dir, "b", &db.url, &sim.url, "")?];
    for h in hosts.iter_mut() {
        h.start()?;
    }
    wait_for(Duration::from_secs(60), || db.lease().filter(|l| l.live))?;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Lease statements per minute, leader and standby, in steady state.
    std::thread::sleep(Duration::from_secs(6));
    let read = |h: &Host| -> Option<f64> {
        let text = http_get_text(&h.listen()?, "/metrics").ok()?;
        text.lines()
            .find(|l| l.starts_with("patchd_lease_queries_total "))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let before: Vec<Option<f64>> = hosts.iter().map(read).collect();
    std::thread::sleep(Duration::from_secs(60));
    let after: Vec<Option<f64>> = hosts.iter().map(read).collect();
    let lease = db.lease().ok_or("no lease")?;
    for (i, h) in hosts.iter().enumerate() {
        let role = if h.pid() == Some(lease.pid) { "leader" } else { "standby" };
        match (before[i], after[i]) {
            (Some(b), Some(a)) => println!("lease statements per minute, {role} ({}): {}", h.name, a - b),
            _ => println!("lease statements per minute, {role} ({}): metrics unreadable", h.name),
        }
    }

    for signal in ["KILL", "TERM"] {
        let mut seconds = Vec::new();
        for trial in 1..=trials {
            // A random point of the leader's 5 s renewal cycle.
            std::thread::sleep(Duration::from_millis(2000 + rng.below(5000)));
            let old = db.lease().filter(|l| l.live).ok_or("no live lease before the trial")?;
            let leader = leader_of(&db, &mut hosts).ok_or("the leader is not one of ours")?;
            let signalled: DateTime<Utc> = Utc::now();
            leader.signal(signal);
            let new =
                wait_for(Duration::from_secs(60), || db.lease().filter(|l| l.live && l.epoch > old.epoch))?;
            let took = (new.acquired_at - signalled).num_milliseconds() as f64 / 1000.0;
            println!(
                "SIG{signal} trial {trial}: epoch {} -> {}, standby leads after {took:.2} s",
                old.epoch, new.epoch
            );
            seconds.push(took);
            // Bring the old leader back as the new standby.
            for h in hosts.iter_mut() {
                if h.pid() == Some(old.pid) {
                    if signal == "TERM" {
                        let _ = h.child.as_mut().map(Child::wait);
                        h.child = None;
                    } else {
                        h.reap();
                    }
                    h.start()?;
                }
            }
        }
        let (min, median, max) = stats(&mut seconds);
        println!("SIG{signal}: failover over {trials} trials: min {min:.2} s, median {median:.2} s, max {max:.2} s");
    }
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A window `at(...)` that scans then installs `web`, 5 at a time.
fn window(name: &str, at: DateTime<Utc>) -> String {
    format!(
        "\n[[window]]\nname = \"{name}\"\nschedule = \"at({})\"\nduration_hours = 1\ncutoff_hours = 0\n\n\
         [[window.task]]\nname = \"scan\"\noperation = \"scan\"\ngroups = [\"web\"]\npriority = 1\nmax_concurrency = 10\nmax_errors = \"100%\"\n\n\
         [[window.task]]\nname = \"install\"\noperation = \"install\"\ngroups = [\"web\"]\npriority = 2\nmax_concurrency = 5\nmax_errors = \"100%\"\n",
        at.format("%Y-%m-%dT%H:%M:%S")
    )
}

fn soak(admin: &str, cycles: usize) -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("patchd-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let scenario = dir.join("scenario.toml");
    std::fs::write(
        &scenario,
        "name = \"soak\"\nseed = 21\ntime_scale = 60.0\n\n[timing]\ndispatch_delay_seconds = 1\ninvocation_visibility_delay_seconds = 0\n\
         scan_seconds = 30\ninstall_seconds = 90\nreboot_seconds = 20\njitter = 0.1\n\n[catalog]\npatches_per_os = 20\n\n\
         [[group]]\nname = \"web\"\ncount = 30\nplatforms = { amazon-linux-2 = 1 }\ntags = { Role = \"web\", \"Patch Group\" = \"web\" }\nunmanaged = 0.1\nmissing = 0.8\n",
    )?;
    let sim = Simulator::start(&scenario)?;
    let db = Db::fresh(admin, "failover_soak")?;
    let first = Utc::now() + chrono::Duration::seconds(15);
    let windows = (cycles / 6).max(3);
    let text: String = (0..windows)
        .map(|i| window(&format!("soak-{i}"), first + chrono::Duration::seconds(20 * i as i64)))
        .collect();
    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|n| Host::new(&dir, n, &db.url, &sim.url, &text))
        .collect::<Result<_, _>>()?;
    // Short leases, as in the tests, so that many takeovers fit in the soak.
    for h in &hosts {
        let config = std::fs::read_to_string(&h.config)?.replacen(
            "sync_interval = \"6h\"",
            "sync_interval = \"6h\"\nlease_ttl = \"3s\"\nlease_renew_interval = \"1s\"",
            1,
        );
        std::fs::write(&h.config, config)?;
    }
    for h in hosts.iter_mut() {
        h.start()?;
    }
    let mut rng = Rng(0x5eed_cafe_f00d);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut done = 0;
    while done < cycles {
        std::thread::sleep(Duration::from_millis(1500 + rng.below(2500)));
        let victim = rng.below(3) as usize;
        if hosts[victim].child.is_none() {
            hosts[victim].start()?;
            continue;
        }
        let kind = ["SIGKILL", "SIGTERM", "SIGSTOP"][rng.below(3) as usize];
        match kind {
            "SIGKILL" => hosts[victim].reap(),
            "SIGTERM" => {
                hosts[victim].signal("TERM");
                let _ = hosts[victim].child.as_mut().map(Child::wait);
                hosts[victim].child = None;
            }
            _ => {
                hosts[victim].signal("STOP");
                std::thread::sleep(Duration::from_secs(4));
                hosts[victim].signal("CONT");
            }
        }
        *kinds.entry(kind).or_default() += 1;
        done += 1;
        if hosts.iter().all(|h| h.child.is_none()) {
            let i = rng.below(3) as usize;
            hosts[i].start()?;
        }
    }
    for h in hosts.iter_mut().filter(|h| h.child.is_none()) {
        h.start()?;
    }
    // Every run over.
    let store = db.store.as_ref().ok_or("no store")?;
    wait_for(Duration::from_secs(300), || {
        let runs = db.rt.block_on(store.window_runs(&Default::default())).ok()?;
        let over = runs
            .iter()
            .filter(|r| {
                !matches!(
                    r.status,
                    patchd_store::WindowRunStatus::Running | patchd_store::WindowRunStatus::Late
                )
            })
            .count();
        (runs.len() == windows && over == windows).then_some(())
    })?;
    let commands = sim.get("/_sim/commands")?;
    let instances = sim.get("/_sim/instances")?;
    let managed: Vec<String> = instances
        .as_array()
        .ok_or("instances")?
        .iter()
        .filter(|i| i["agent"] == "Online" && i["state"] == "running")
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    let mut per: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let list = commands["commands"].as_array().ok_or("commands")?;
    for c in list {
        let run = c["comment"].as_str().and_then(|t| t.split(':').nth(1)).unwrap_or("").to_string();
        let op = c["operation"].as_str().unwrap_or("").to_string();
        for id in c["instance_ids"].as_array().into_iter().flatten() {
            *per.entry((run.clone(), op.clone(), id.as_str().unwrap_or("").to_string())).or_default() += 1;
        }
    }
    let runs: std::collections::BTreeSet<String> = per.keys().map(|(r, _, _)| r.clone()).collect();
    let duplicates = per.values().filter(|n| **n > 1).count();
    let mut lost = 0;
    for run in &runs {
        for op in ["Scan", "Install"] {
            lost += managed
                .iter()
                .filter(|id| !per.contains_key(&(run.clone(), op.to_string(), (*id).clone())))
                .count();
        }
    }
    let takeovers = db.lease().map_or(0, |l| l.epoch - 1);
    println!(
        "soak: {done} disruptions {kinds:?}, {takeovers} takeovers, {} runs, {} commands, {} (run, operation, instance) sends, {duplicates} duplicates, {lost} left out",
        runs.len(),
        list.len(),
        per.len()
    );
    drop(hosts);
    let _ = std::fs::remove_dir_all(&dir);
    if duplicates > 0 || lost > 0 {
        return Err("the soak broke an invariant".into());
    }
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let admin = args
        .iter()
        .find(|a| a.starts_with("postgres"))
        .cloned()
        .or_else(|| std::env::var("PATCHD_TEST_POSTGRES_URL").ok())
        .ok_or("give a PostgreSQL URL (or set PATCHD_TEST_POSTGRES_URL)")?;
    let number = |flag: &str, default: usize| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let trials = number("--trials", 10);
    let cycles = number("--soak-cycles", 30);
    if !args.iter().any(|a| a == "--soak-only") {
        failover(&admin, trials)?;
    }
    if cycles > 0 {
        soak(&admin, cycles)?;
    }
    Ok(())
}
