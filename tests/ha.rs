//! High availability, as processes: several `patchd run` on one PostgreSQL database (each with
//! its own state_dir and HTTP port, as on separate hosts) against one simulated fleet. Every
//! check of duplicates and losses counts the simulator's own command history
//! (`SimServer::commands`), never patchd's view of it.
//!
//! - two daemons, one window: every reachable instance gets exactly one command per task;
//! - SIGKILL of the leader mid-rollout: the standby finishes the run; again while SSM throttles
//!   and fails calls (`POST /_sim/faults`);
//! - SIGSTOP of the leader past its ttl, a takeover, SIGCONT: the old leader steps down and
//!   sends nothing more;
//! - the leader's database connections terminated (`pg_terminate_backend`);
//! - SIGTERM of the leader: it resigns, and the standby takes over before the lease would have
//!   expired;
//! - a soak: three daemons, random kills and restarts;
//! - SQLite: a second daemon on one database file is refused, naming the holder.
//!
//! The PostgreSQL tests need `PATCHD_TEST_POSTGRES_URL` and skip, saying so, without it.

mod support;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_sim::CommandView;
use patchd_store::{LeaseRecord, OpenOptions, Store, WindowRunQuery, WindowRunRecord, WindowRunStatus};
use sqlx::{Connection, Executor};
use support::{patchd_toml, wait_for, web_fleet, web_group, Scratch, Sim};

const POSTGRES_ENV: &str = "PATCHD_TEST_POSTGRES_URL";
/// Short leases so that takeovers happen within seconds: a standby takes over at most
/// `LEASE_TTL + RENEW` after a leader dies.
const LEASE_TTL: &str = "3s";
const RENEW: &str = "1s";

/// A fleet of 30 web instances (a tenth without an agent) whose installs take about 1.5 s
/// (90 simulated seconds at 60 times real time).
fn sim() -> Sim {
    Sim::with_scenario(web_fleet("ha", 21, 60.0, 20, web_group(30).with_unmanaged(0.1).with_missing(0.8)))
}

/// The tests of this file run one at a time: each runs several daemons and a simulator, and
/// two cores shared by a dozen processes would make renewals late and the tests slow.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A schema of its own in the test database, dropped at the end.
struct Pg {
    admin: String,
    schema: String,
    url: String,
    rt: tokio::runtime::Runtime,
}

impl Pg {
    fn new(name: &str) -> Option<Pg> {
        let Some(admin) = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty()) else {
            let _ = writeln!(std::io::stderr(), "{name}: skipping: {POSTGRES_ENV} is unset");
            return None;
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let schema = format!("ha_{name}_{}", std::process::id());
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
            conn.execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str()).await.unwrap();
            conn.execute(format!("CREATE SCHEMA \"{schema}\"").as_str()).await.unwrap();
        });
        let separator = if admin.contains('?') { '&' } else { '?' };
        let url = format!("{admin}{separator}options[search_path]={schema}");
        Some(Pg { admin, schema, url, rt })
    }

    /// The URL a daemon uses: its connections carry `application_name`, so a test can find them.
    fn url_for(&self, name: &str) -> String {
        format!("{}&application_name={name}", self.url)
    }

    fn store<T>(&self, f: impl AsyncFnOnce(&Store) -> T) -> T {
        self.rt.block_on(async {
            let options = OpenOptions { max_connections: 1, ..OpenOptions::default() };
            let store = Store::open(&self.url, &options).await.expect("open the test schema");
            let out = f(&store).await;
            store.close().await;
            out
        })
    }

    fn lease(&self) -> Option<LeaseRecord> {
        self.store(async |s| s.lease(patchd_store::SCHEDULER_LEASE).await.unwrap())
    }

    fn runs(&self, window: &str) -> Vec<WindowRunRecord> {
        self.store(async |s| {
            s.window_runs(&WindowRunQuery { window: Some(window), ..Default::default() }).await.unwrap()
        })
    }

    /// Terminates every connection of `application`; returns how many.
    fn terminate(&self, application: &str) -> i64 {
        self.rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&self.admin).await.unwrap();
            let killed: Vec<(bool,)> = sqlx::query_as(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            )
            .bind(application)
            .fetch_all(&mut conn)
            .await
            .unwrap();
            killed.len() as i64
        })
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let (admin, schema) = (self.admin.clone(), self.schema.clone());
        self.rt.block_on(async {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = conn.execute(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE").as_str()).await;
            }
        });
    }
}

/// One "host": its own state_dir, configuration and log, one database for all.
struct Host {
    name: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Host {
    fn new(scratch: &Scratch, name: &str, database_url: &str, sim: &Sim, windows: &str) -> Host {
        Host::with_ttl(scratch, name, database_url, sim, windows, LEASE_TTL)
    }

    fn with_ttl(
        scratch: &Scratch,
        name: &str,
        database_url: &str,
        sim: &Sim,
        windows: &str,
        ttl: &str,
    ) -> Host {
        let dir = scratch.0.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("patchd.toml");
        let daemon = format!(
            "database_url = \"{database_url}\"\nlisten = \"127.0.0.1:0\"\nsync_interval = \"1h\"\n\
             lease_ttl = \"{ttl}\"\nlease_renew_interval = \"{RENEW}\""
        );
        let text = [
            patchd_toml::daemon_and_aws(
                &dir.display().to_string(),
                Some(&sim.server.endpoint_url()),
                &daemon,
                "",
            ),
            "\n[events]\nbus_name = \"patchd\"\n".to_string(),
            patchd_toml::group("web", "Role", "web"),
            windows.to_string(),
        ];
        std::fs::write(&config, text.concat()).unwrap();
        Host { name: name.to_string(), config, log: dir.join("patchd.log"), child: None }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut cmd = support::patchd_with_config(&self.config);
        cmd.args(["--log-format", "json", "run", "--poll-interval", "200ms"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(cmd.spawn().unwrap());
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().expect("running");
        let ok =
            Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill -{name} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then the exit status (within 30 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        support::exit_within(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            panic!("{} did not exit within 30 s of SIGTERM\n{}", self.name, self.read_log())
        })
    }

    fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The HTTP endpoint this process logged (it listens on port 0).
    fn listen(&self) -> Option<std::net::SocketAddr> {
        let log = self.read_log();
        let pid = self.pid()?;
        let start = log.rfind(&format!("\"pid\":{pid}"))?;
        let line = log[start..].lines().find(|l| l.contains("HTTP endpoint listening"))?;
        let at = line.find("\"listen\":\"")? + 10;
        line[at..].split('"').next()?.parse().ok()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process cannot die until continued.
            let _ = Command::new("kill").args(["-CONT", &child.id().to_string()]).status();
        }
        self.kill();
    }
}

/// A window opening at `at` that scans `web`, then installs it 4 instances at a time.
fn window(name: &str, at: DateTime<Utc>) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%S").to_string();
    let spread = "max_errors = \"100%\"";
    let (scan, install) =
        (format!("max_concurrency = 10\n{spread}"), format!("max_concurrency = 4\n{spread}"));
    patchd_toml::scan_then_install_once(name, &at, &scan, &install)
}

/// The simulator's commands, per (operation, instance), counted: what SSM was really asked.
fn sent_per_instance(commands: &[CommandView]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for command in commands {
        for instance in &command.instance_ids {
            *counts.entry((command.operation.clone(), instance.clone())).or_insert(0) += 1;
        }
    }
    counts
}

/// Every managed instance got exactly one Scan and one Install command: no duplicate, no loss.
fn assert_exactly_once(sim: &Sim, context: &str) {
    let managed: Vec<String> =
        sim.server.instances().iter().filter(|i| i.is_managed()).map(|i| i.id.clone()).collect();
    assert!(managed.len() >= 20, "the fleet has {} managed instances", managed.len());
    let counts = sent_per_instance(&sim.server.commands());
    let mut wrong = Vec::new();
    for operation in ["Scan", "Install"] {
        for id in &managed {
            let n = counts.get(&(operation.to_string(), id.clone())).copied().unwrap_or(0);
            if n != 1 {
                wrong.push(format!("{operation} {id}: {n} commands"));
            }
        }
    }
    let unmanaged_sent: Vec<_> = counts.keys().filter(|(_, id)| !managed.contains(id)).collect();
    assert!(
        wrong.is_empty() && unmanaged_sent.is_empty(),
        "{wrong:#?}\nunmanaged sent: {unmanaged_sent:?}\n{context}"
    );
}

/// The run of `window`, once it is over (not running or late).
fn finished_run(pg: &Pg, window: &str, timeout: Duration, context: impl Fn() -> String) -> WindowRunRecord {
    wait_for(
        &format!("the run of {window} to finish"),
        timeout,
        || {
            pg.runs(window)
                .into_iter()
                .next()
                .filter(|r| !matches!(r.status, WindowRunStatus::Running | WindowRunStatus::Late))
        },
        context,
    )
}

fn logs(hosts: &[&Host]) -> String {
    hosts.iter().map(|h| format!("--- {}\n{}", h.name, h.read_log())).collect()
}

/// The host whose process holds the lease, once one does.
fn leader_index(pg: &Pg, hosts: &[&Host]) -> Option<usize> {
    let lease = pg.lease().filter(|l| l.live)?;
    hosts.iter().position(|h| h.pid() == Some(lease.pid))
}

/// Installs sent so far, by the simulator's history.
fn installs_sent(sim: &Sim) -> usize {
    sim.server.commands().iter().filter(|c| c.operation == "Install").count()
}

/// Two daemons on one database with window `w` opening in 8 s, once `installs` Install
/// commands reached the simulator: the hosts and which of them leads.
fn two_hosts_mid_install(pg: &Pg, sim: &Sim, scratch: &Scratch, installs: usize) -> ([Host; 2], usize) {
    let at = Utc::now() + chrono::Duration::seconds(8);
    let mut hosts = [
        Host::new(scratch, "a", &pg.url_for("ha-a"), sim, &window("w", at)),
        Host::new(scratch, "b", &pg.url_for("ha-b"), sim, &window("w", at)),
    ];
    for h in hosts.iter_mut() {
        h.start();
    }
    wait_for(
        &format!("{installs} install(s) to be sent"),
        Duration::from_secs(60),
        || (installs_sent(sim) >= installs).then_some(()),
        || logs(&[&hosts[0], &hosts[1]]),
    );
    let leader = leader_index(pg, &[&hosts[0], &hosts[1]]).expect("a leader");
    (hosts, leader)
}

#[test]
fn two_daemons_one_window_every_instance_gets_exactly_one_command() {
    let _serial = serial();
    let Some(pg) = Pg::new("two") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-two");
    let at = Utc::now() + chrono::Duration::seconds(8);
    let mut a = Host::new(&scratch, "a", &pg.url_for("ha-a"), &sim, &window("both", at));
    let mut b = Host::new(&scratch, "b", &pg.url_for("ha-b"), &sim, &window("both", at));
    a.start();
    b.start();
    let run = finished_run(&pg, "both", Duration::from_secs(90), || logs(&[&a, &b]));
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}");
    assert_eq!(pg.runs("both").len(), 1, "one run for the occurrence");
    assert_exactly_once(&sim, &logs(&[&a, &b]));
    // The other one stood by (on a loaded machine a late renewal may move the lease, which
    // must not matter: the command history above is what counts).
    let stood_by = [&a, &b].iter().filter(|h| h.read_log().contains("standing by")).count();
    assert!(stood_by >= 1, "{}", logs(&[&a, &b]));

    // What an operator sees: both ready, one leader and one standby naming the same holder,
    // and the metrics agree.
    let lease = pg.lease().expect("a lease");
    let mut roles = Vec::new();
    let mut leaders = 0.0;
    for host in [&a, &b] {
        let addr =
            wait_for("the HTTP endpoint", Duration::from_secs(10), || host.listen(), || host.read_log());
        let ready = support::get(addr, "/readyz", None).expect("readyz answers");
        assert_eq!(ready.status, 200, "a standby is ready too: {}", ready.body);
        let leadership = ready.json()["leadership"].clone();
        assert_eq!(leadership["holder"]["pid"], lease.pid, "{leadership}");
        assert_eq!(leadership["holder"]["epoch"], lease.epoch, "{leadership}");
        let status = support::get(addr, "/v1/status", None).expect("status answers").json();
        assert_eq!(status["leadership"]["role"], leadership["role"]);
        roles.push(leadership["role"].as_str().unwrap_or("").to_string());
        let metrics = support::get(addr, "/metrics", None).expect("metrics answer").body;
        leaders += support::metric(&metrics, "patchd_leader", "").expect("patchd_leader");
        assert!(support::metric(&metrics, "patchd_lease_queries_total", "").unwrap_or(0.0) >= 1.0);
    }
    roles.sort();
    assert_eq!(roles, ["leader", "standby"]);
    assert_eq!(leaders, 1.0, "exactly one process reports patchd_leader 1");
    assert!(a.stop().success() && b.stop().success());
}

#[test]
fn sigkill_of_the_leader_mid_rollout_the_standby_finishes_the_run() {
    let _serial = serial();
    let Some(pg) = Pg::new("kill") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-kill");
    let (mut hosts, leader) = two_hosts_mid_install(&pg, &sim, &scratch, 2);
    let epoch = pg.lease().unwrap().epoch;
    hosts[leader].kill();
    let [a, b] = &hosts;
    let run = finished_run(&pg, "w", Duration::from_secs(90), || logs(&[a, b]));
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}\n{}", logs(&[a, b]));
    let lease = pg.lease().unwrap();
    assert!(lease.epoch > epoch, "the standby took over: {lease:?}");
    let survivor = &hosts[1 - leader];
    assert!(survivor.read_log().contains("resuming interrupted run"), "{}", survivor.read_log());
    assert_exactly_once(&sim, &logs(&[a, b]));
}

#[test]
fn sigkill_of_the_leader_while_it_judges_a_wave_gate_the_standby_resumes_the_waves_once() {
    let _serial = serial();
    let Some(pg) = Pg::new("gate") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-gate");
    // The gate command leaves a mark as it starts, then takes 4 s: long enough to kill the
    // leader while it judges the canary's gate, before the decision is stored.
    let marks = scratch.0.join("gate-marks");
    std::fs::create_dir_all(&marks).unwrap();
    let install = format!(
        "max_concurrency = 4\nmax_errors = \"100%\"\nwaves = [\"1\", \"50%\", \"100%\"]\n\
         [window.task.gate]\ncommand = [\"/bin/sh\", \"-c\", \"touch {}/wave-$PATCHD_WAVE-$$; sleep 4\"]\n\
         command_timeout_seconds = 30",
        marks.display()
    );
    let at = (Utc::now() + chrono::Duration::seconds(8)).format("%Y-%m-%dT%H:%M:%S").to_string();
    let windows = patchd_toml::scan_then_install_once(
        "w",
        &at,
        "max_concurrency = 10\nmax_errors = \"100%\"",
        &install,
    );
    let mut hosts = [
        Host::new(&scratch, "a", &pg.url_for("ha-a"), &sim, &windows),
        Host::new(&scratch, "b", &pg.url_for("ha-b"), &sim, &windows),
    ];
    for h in hosts.iter_mut() {
        h.start();
    }
    let judging = |wave: u32| {
        std::fs::read_dir(&marks)
            .unwrap()
            .filter(|e| {
                e.as_ref().unwrap().file_name().to_string_lossy().starts_with(&format!("wave-{wave}-"))
            })
            .count()
    };
    wait_for(
        "the leader to judge the canary's gate",
        Duration::from_secs(60),
        || (judging(1) > 0).then_some(()),
        || logs(&[&hosts[0], &hosts[1]]),
    );
    let leader = leader_index(&pg, &[&hosts[0], &hosts[1]]).expect("a leader");
    assert_eq!(installs_sent(&sim), 1, "only the canary was sent before its gate");
    hosts[leader].kill();

    let [a, b] = &hosts;
    let run = finished_run(&pg, "w", Duration::from_secs(120), || logs(&[a, b]));
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}\n{}", logs(&[a, b]));
    assert_exactly_once(&sim, &logs(&[a, b]));
    let installs: Vec<CommandView> =
        sim.server.commands().into_iter().filter(|c| c.operation == "Install").collect();
    assert_eq!(installs[0].instance_ids.len(), 1, "the canary went alone: {installs:#?}");
    assert!(judging(1) >= 2, "the standby judged the gate the killed leader never decided");
    assert_eq!((judging(2), judging(3)), (1, 1), "every later gate was judged once");
}

#[test]
fn sigkill_of_the_leader_while_ssm_throttles_and_fails_calls_still_sends_each_batch_once() {
    let _serial = serial();
    let Some(pg) = Pg::new("faults") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-faults");
    let at = Utc::now() + chrono::Duration::seconds(8);
    let mut hosts = [
        Host::new(&scratch, "a", &pg.url_for("ha-a"), &sim, &window("w", at)),
        Host::new(&scratch, "b", &pg.url_for("ha-b"), &sim, &window("w", at)),
    ];
    for h in hosts.iter_mut() {
        // A few more SDK attempts than the default 3: the faults below must be waited out,
        // not turn a group's resolution into a failed task.
        let text = std::fs::read_to_string(&h.config).unwrap().replacen(
            "region = \"us-east-1\"",
            "region = \"us-east-1\"\nmax_attempts = 6",
            1,
        );
        std::fs::write(&h.config, text).unwrap();
        h.start();
    }
    wait_for(
        "a leader",
        Duration::from_secs(30),
        || leader_index(&pg, &[&hosts[0], &hosts[1]]),
        || logs(&[&hosts[0], &hosts[1]]),
    );
    // From now on SSM throttles one call in ten and fails one in thirty with a server error:
    // SendCommand included, whose lost answers patchd must look up rather than resend.
    support::post_faults(&sim, r#"{"throttle_rate": 0.1, "error_rate": 0.033}"#);
    wait_for(
        "two installs to be sent",
        Duration::from_secs(60),
        || (installs_sent(&sim) >= 2).then_some(()),
        || logs(&[&hosts[0], &hosts[1]]),
    );
    let leader = leader_index(&pg, &[&hosts[0], &hosts[1]]).expect("a leader");
    hosts[leader].kill();
    let [a, b] = &hosts;
    let run = finished_run(&pg, "w", Duration::from_secs(120), || logs(&[a, b]));
    support::post_faults(&sim, r#"{"throttle_rate": 0.0, "error_rate": 0.0}"#);
    let stats = sim.server.stats();
    let (throttled, failed): (u64, u64) = (stats.throttled.values().sum(), stats.failed.values().sum());
    assert!(throttled > 0 && failed > 0, "the faults hit: {stats:#?}");
    assert_ne!(run.status, WindowRunStatus::Running, "{run:?}");
    assert_exactly_once(&sim, &format!("throttled {throttled}, failed {failed}\n{}", logs(&[a, b])));
}

#[test]
fn sigstop_past_the_ttl_then_sigcont_the_old_leader_steps_down_and_sends_nothing_more() {
    let _serial = serial();
    let Some(pg) = Pg::new("stop") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-stop");
    let (hosts, leader) = two_hosts_mid_install(&pg, &sim, &scratch, 1);
    let old_pid = hosts[leader].pid().unwrap();
    hosts[leader].signal("STOP");
    // The standby takes over once the ttl has passed, and carries on sending.
    let lease = wait_for(
        "the standby to take over",
        Duration::from_secs(30),
        || pg.lease().filter(|l| l.live && l.pid != old_pid),
        || logs(&[&hosts[0], &hosts[1]]),
    );
    let sent_at_takeover = installs_sent(&sim);
    wait_for(
        "the new leader to send",
        Duration::from_secs(30),
        || (installs_sent(&sim) > sent_at_takeover).then_some(()),
        || logs(&[&hosts[0], &hosts[1]]),
    );
    hosts[leader].signal("CONT");
    let [a, b] = &hosts;
    wait_for(
        "the old leader to step down",
        Duration::from_secs(20),
        || hosts[leader].read_log().contains("leadership lost").then_some(()),
        || logs(&[a, b]),
    );
    let run = finished_run(&pg, "w", Duration::from_secs(90), || logs(&[a, b]));
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}");
    assert_exactly_once(&sim, &logs(&[a, b]));
    let now = pg.lease().unwrap();
    assert_eq!((now.pid, now.epoch), (lease.pid, lease.epoch), "the old leader did not take the lease back");
    // From the moment it learned it had lost, the old leader sent nothing.
    let old = hosts[leader].read_log();
    let after = &old[old.find("leadership lost").unwrap()..];
    assert!(!after.contains("batch sent"), "{after}");
}

#[test]
fn terminated_database_connections_cause_no_duplicate_and_leadership_recovers() {
    let _serial = serial();
    let Some(pg) = Pg::new("term_conns") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-conns");
    let (hosts, leader) = two_hosts_mid_install(&pg, &sim, &scratch, 2);
    let application = if leader == 0 { "ha-a" } else { "ha-b" };
    // Twice, a second apart: a pool reconnects, and the second cut lands on new connections.
    assert!(pg.terminate(application) > 0, "the leader had connections");
    std::thread::sleep(Duration::from_secs(1));
    pg.terminate(application);
    let [a, b] = &hosts;
    let run = finished_run(&pg, "w", Duration::from_secs(90), || logs(&[a, b]));
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}\n{}", logs(&[a, b]));
    assert_exactly_once(&sim, &logs(&[a, b]));
    wait_for("a live leader", Duration::from_secs(20), || leader_index(&pg, &[a, b]), || logs(&[a, b]));
}

#[test]
fn sigterm_of_the_leader_hands_over_at_the_standbys_next_bid() {
    let _serial = serial();
    let Some(pg) = Pg::new("sigterm") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-sigterm");
    // A long lease: were it not resigned, the standby would wait 20 s.
    let mut a = Host::with_ttl(&scratch, "a", &pg.url_for("ha-a"), &sim, "", "20s");
    let mut b = Host::with_ttl(&scratch, "b", &pg.url_for("ha-b"), &sim, "", "20s");
    a.start();
    let first =
        wait_for("a to lead", Duration::from_secs(30), || pg.lease().filter(|l| l.live), || a.read_log());
    assert_eq!(Some(first.pid), a.pid());
    b.start();
    wait_for(
        "b to stand by",
        Duration::from_secs(30),
        || b.read_log().contains("standing by").then_some(()),
        || b.read_log(),
    );
    let last_before = pg.lease().unwrap();
    assert!(a.stop().success(), "{}", a.read_log());
    assert!(a.read_log().contains("leadership resigned"), "{}", a.read_log());
    let next = wait_for(
        "b to lead",
        Duration::from_secs(30),
        || pg.lease().filter(|l| l.live && Some(l.pid) == b.pid()),
        || logs(&[&a, &b]),
    );
    assert_eq!(next.epoch, last_before.epoch + 1);
    // Each change of term was announced, with its epoch and why.
    let changes = wait_for(
        "the leadership events",
        Duration::from_secs(10),
        || {
            let changes: Vec<(String, i64, String)> = sim
                .server
                .events()
                .iter()
                .filter(|e| e.detail_type.starts_with("Leadership"))
                .map(|e| {
                    (
                        e.detail_type.clone(),
                        e.detail["epoch"].as_i64().unwrap_or(0),
                        e.detail["reason"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            (changes.len() >= 3).then_some(changes)
        },
        || format!("{:#?}", sim.server.events()),
    );
    let e = last_before.epoch;
    assert_eq!(
        changes,
        [
            ("Leadership Gained".to_string(), e, "gained".to_string()),
            ("Leadership Lost".to_string(), e, "stopped".to_string()),
            ("Leadership Gained".to_string(), e + 1, "gained".to_string()),
        ]
    );
    // Resigning, not expiry, handed it over: b took it before a's last renewal would have run out.
    // Resigning, not expiry, handed it over: b took it long before a's lease would have run out.
    assert!(
        next.acquired_at < last_before.expires_at,
        "b took over at {}, a's lease ran until at least {}",
        next.acquired_at,
        last_before.expires_at
    );
    assert!(b.stop().success());
}

#[test]
fn a_soak_of_kills_and_restarts_never_patches_an_instance_twice() {
    let _serial = serial();
    let Some(pg) = Pg::new("soak") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-soak");
    // Three windows, 25 s apart, each a scan and an install of the whole group.
    let first = Utc::now() + chrono::Duration::seconds(10);
    let windows: String =
        (0..3).map(|i| window(&format!("soak-{i}"), first + chrono::Duration::seconds(25 * i))).collect();
    let mut hosts: Vec<Host> = ["a", "b", "c"]
        .iter()
        .map(|n| Host::new(&scratch, n, &pg.url_for(&format!("ha-{n}")), &sim, &windows))
        .collect();
    for h in hosts.iter_mut() {
        h.start();
    }
    // A deterministic "random" sequence: the test must fail the same way twice.
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let mut cycles = 0;
    while cycles < 20 {
        std::thread::sleep(Duration::from_millis(1500 + next(2000)));
        let victim = next(3) as usize;
        if hosts[victim].child.is_none() {
            hosts[victim].start();
            continue;
        }
        match next(3) {
            0 => hosts[victim].kill(),
            1 => {
                hosts[victim].stop();
            }
            _ => {
                // Paused past the ttl, then let go.
                hosts[victim].signal("STOP");
                std::thread::sleep(Duration::from_secs(4));
                hosts[victim].signal("CONT");
            }
        }
        cycles += 1;
        // Keep at least one daemon up.
        if hosts.iter().all(|h| h.child.is_none()) {
            hosts[next(3) as usize].start();
        }
    }
    for h in hosts.iter_mut().filter(|h| h.child.is_none()) {
        h.start();
    }
    let refs: Vec<&Host> = hosts.iter().collect();
    for i in 0..3 {
        let run = finished_run(&pg, &format!("soak-{i}"), Duration::from_secs(180), || logs(&refs));
        assert!(matches!(run.status, WindowRunStatus::Succeeded), "{run:?}");
    }
    // Per run (the run id in each command's comment), every managed instance: one Scan, one Install.
    let managed: Vec<String> =
        sim.server.instances().iter().filter(|i| i.is_managed()).map(|i| i.id.clone()).collect();
    let mut per_run: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    let commands = sim.server.commands();
    for c in &commands {
        let run = c.comment.as_deref().and_then(|t| t.split(':').nth(1)).unwrap_or("").to_string();
        for id in &c.instance_ids {
            *per_run.entry((run.clone(), c.operation.clone(), id.clone())).or_insert(0) += 1;
        }
    }
    let runs: std::collections::BTreeSet<&String> = per_run.keys().map(|(r, _, _)| r).collect();
    assert_eq!(runs.len(), 3, "three runs sent commands: {runs:?}");
    let duplicates: Vec<_> = per_run.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "duplicates: {duplicates:#?}\n{}", logs(&refs));
    for run in &runs {
        for op in ["Scan", "Install"] {
            let missing: Vec<&String> = managed
                .iter()
                .filter(|id| !per_run.contains_key(&((*run).clone(), op.to_string(), (*id).clone())))
                .collect();
            assert!(missing.is_empty(), "run {run} {op}: left out {missing:?}");
        }
    }
    let _ = writeln!(std::io::stderr(), "soak: {cycles} cycles, {} commands, 0 duplicates", commands.len());
}

#[test]
fn a_second_daemon_on_one_sqlite_file_is_refused_naming_the_holder() {
    let _serial = serial();
    let sim = sim();
    let scratch = Scratch::new("ha-sqlite");
    let url = format!("sqlite://{}", scratch.0.join("shared.db").display());
    let mut a = Host::new(&scratch, "a", &url, &sim, "");
    let b = Host::new(&scratch, "b", &url, &sim, "");
    a.start();
    wait_for(
        "a to lead",
        Duration::from_secs(30),
        || a.read_log().contains("leadership gained").then_some(()),
        || a.read_log(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
        .arg("--config")
        .arg(&b.config)
        .arg("run")
        .env("AWS_ACCESS_KEY_ID", "AKIDPATCHDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "patchd-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PATCHD_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let pid = a.pid().unwrap();
    assert!(stderr.contains(&format!("(pid {pid})")), "names the holder's pid: {stderr}");
    assert!(stderr.contains(&patchd_daemon::leader::hostname()), "names the holder's host: {stderr}");
    assert!(stderr.contains("use PostgreSQL"), "{stderr}");
    // The holder is untouched, and once it is gone the file is free again at once.
    assert!(a.stop().success(), "{}", a.read_log());
    let mut c = Host::new(&scratch, "c", &url, &sim, "");
    c.start();
    wait_for(
        "c to lead",
        Duration::from_secs(30),
        || c.read_log().contains("leadership gained").then_some(()),
        || c.read_log(),
    );
    assert!(c.stop().success());
}

#[test]
fn a_run_stopped_by_a_send_slower_than_the_term_is_resumed_by_the_same_leader() {
    let _serial = serial();
    let Some(pg) = Pg::new("slow-send") else { return };
    let sim = sim();
    let scratch = Scratch::new("ha-slow-send");
    let at = Utc::now() + chrono::Duration::seconds(6);
    let mut host = Host::new(&scratch, "a", &pg.url_for("ha-a"), &sim, &window("w", at));
    // Every call takes 3.5 s: longer than what is left of a 3 s lease when a batch is sent, so
    // the send is cut off at the term's end although the lease keeps being renewed.
    sim.server
        .set_faults(fleet_sim::Faults { latency_ms: 3_500, ..Default::default() })
        .expect("valid faults");
    host.start();
    wait_for(
        "a run to stop on a send the term could not cover",
        Duration::from_secs(90),
        || host.read_log().contains("window run stopped while this process still leads").then_some(()),
        || logs(&[&host]),
    );
    sim.server.set_faults(fleet_sim::Faults::default()).expect("valid faults");

    // No new term, no restart: the leader resumes its own run and finishes it.
    let run = finished_run(&pg, "w", Duration::from_secs(120), || logs(&[&host]));
    assert_eq!(run.status, WindowRunStatus::Succeeded, "{run:?}\n{}", logs(&[&host]));
    assert_exactly_once(&sim, &logs(&[&host]));
    let lease = pg.lease().expect("a lease");
    assert_eq!(lease.epoch, 1, "one term from start to end: {lease:?}");
}
