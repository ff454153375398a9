//! What the process tests of `patchd run` share: the fleet simulator in this test's process,
//! a scratch directory with the configuration, the daemon process, and a bare HTTP/1.1 client.
#![allow(dead_code)]

pub mod fleet;
pub mod patchd_toml;

pub use fleet::web_group;

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fleet_sim::{Group, Scenario, SimServer, Timing};

pub struct Sim {
    pub server: SimServer,
    pub rt: tokio::runtime::Runtime,
}

impl Sim {
    /// One group `web` of 8 Amazon Linux 2 instances (a quarter without an agent), most of
    /// them missing patches.
    pub fn start(time_scale: f64) -> Sim {
        let web = web_group(8).with_unmanaged(0.25).with_missing(0.8);
        Sim::with_scenario(web_fleet("http-process", 11, time_scale, 40, web))
    }

    /// The simulator serving `scenario`, on a runtime of its own.
    pub fn with_scenario(scenario: Scenario) -> Sim {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let server = rt.block_on(SimServer::start("127.0.0.1:0".parse().unwrap(), scenario)).unwrap();
        Sim { server, rt }
    }

    /// How many instances SSM manages (running, with an agent).
    pub fn managed(&self) -> usize {
        self.server.instances().iter().filter(|i| i.is_managed()).count()
    }

    /// SendCommand calls the simulator received.
    pub fn sends(&self) -> u64 {
        self.server.stats().calls("SendCommand")
    }
}

/// The fleet of the process tests: `group` alone, with a catalog of `patches_per_os` per
/// system and work short enough for whole windows in seconds (scan 30 s, install 90 s,
/// reboot 20 s, simulated).
pub fn web_fleet(name: &str, seed: u64, time_scale: f64, patches_per_os: usize, group: Group) -> Scenario {
    fleet::fleet_of(name, seed, time_scale, patches_per_os, Timing::brisk(30.0, 90.0, 20.0), group)
}

pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("patchd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn config(&self) -> PathBuf {
        self.0.join("patchd.toml")
    }

    /// The state directory, as a configuration names it.
    pub fn state_dir(&self) -> String {
        self.0.display().to_string()
    }

    /// `[daemon]` keys beyond state_dir go in `daemon_extra`; windows and the rest in `rest`.
    pub fn write_config(&self, sim: &Sim, daemon_extra: &str, rest: &str) {
        let daemon = format!("sync_interval = \"1h\"\n{daemon_extra}");
        let text = [
            patchd_toml::daemon_and_aws(&self.state_dir(), Some(&sim.server.endpoint_url()), &daemon, ""),
            patchd_toml::group("web", "Role", "web"),
            patchd_toml::window("weekly", "cron(0 3 ? * SUN *)", 3, 1),
            patchd_toml::task("install", "install", "web", ""),
            rest.to_string(),
        ];
        std::fs::write(self.config(), text.concat()).unwrap();
    }

    pub fn log(&self, n: usize) -> PathBuf {
        self.0.join(format!("patchd-{n}.log"))
    }

    pub fn read_log(&self, n: usize) -> String {
        std::fs::read_to_string(self.log(n)).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What would point a patchd under test at the machine's own configuration, database or AWS.
pub const MACHINE_ENV: [&str; 5] =
    ["PATCHD_CONFIG", "PATCHD_DATABASE_URL", "PATCHD_ENDPOINT_URL", "AWS_PROFILE", "AWS_ENDPOINT_URL"];

pub fn patchd(scratch: &Scratch) -> Command {
    patchd_with_config(&scratch.config())
}

/// The patchd binary reading `config`, in an environment of its own: no configuration, AWS
/// profile or service manager of the machine's, static test credentials, info logs.
pub fn patchd_with_config(config: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_patchd"));
    cmd.arg("--config").arg(config);
    for var in MACHINE_ENV.iter().chain(&["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"]) {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDPATCHDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "patchd-test-secret")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("PATCHD_LOG", "info");
    cmd
}

/// `patchd ARGS` run to its end with no stdin and warnings-only logs: a one-shot command.
pub fn run(scratch: &Scratch, args: &[&str]) -> std::process::Output {
    patchd(scratch).args(args).env("PATCHD_LOG", "warn").stdin(Stdio::null()).output().unwrap()
}

/// `patchd scan` of `groups`, every instance at once and through any errors, polling every
/// 200 ms: the quickest whole scan, for tests that need the findings rather than the pacing.
pub fn scan_at_full_speed(scratch: &Scratch, groups: &[&str]) -> std::process::Output {
    let mut args = vec!["scan"];
    for group in groups {
        args.extend(["--group", group]);
    }
    args.extend(["--max-concurrency", "100%", "--max-errors", "100%", "--poll-interval", "200ms"]);
    run(scratch, &args)
}

pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `patchd run` with `env` added, logging JSON to log file `n`.
pub fn start_daemon(scratch: &Scratch, n: usize, env: &[(&str, &str)]) -> Child {
    let mut cmd = patchd(scratch);
    cmd.args(["--log-format", "json", "run", "--poll-interval", "200ms"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(scratch.log(n)).unwrap())
        .spawn()
        .unwrap()
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill -{name} failed");
}

pub fn stop_daemon(mut child: Child) -> std::process::ExitStatus {
    signal(&child, "TERM");
    exit_within(&mut child, Duration::from_secs(30)).expect("patchd did not exit within 30 s of SIGTERM")
}

/// The exit status of `child` once it has exited, within `timeout`; None, and the child
/// killed, when it has not.
pub fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}\n{}", context());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST /_sim/faults` with `body`, as any client of the simulator would set its faults.
pub fn post_faults(sim: &Sim, body: &str) {
    use std::io::{Read, Write};
    let addr = sim.server.addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /_sim/faults HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An HTTP answer: status, headers (names lowercased), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// GET `path` over a fresh connection, HTTP/1.1 written by hand; None when nothing answers.
pub fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let raw = exchange(&mut stream, addr, path, token).ok()?;
    parse_answer(raw)
}

/// GET `path` over HTTPS, trusting only the certificate authorities in `ca_file` (PEM). The
/// error is the client's reason when the handshake or the exchange fails.
pub fn get_tls(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    ca_file: &std::path::Path,
) -> Result<Answer, String> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file).map_err(|e| e.to_string())? {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::from(addr.ip());
    let connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    let raw = exchange(&mut stream, addr, path, token).map_err(|e| e.to_string())?;
    parse_answer(raw).ok_or_else(|| "not an HTTP answer".to_string())
}

fn exchange(
    stream: &mut (impl std::io::Read + std::io::Write),
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<Vec<u8>> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => Ok(raw),
        // A peer that closes without TLS's close_notify, after a whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(e),
    }
}

fn parse_answer(raw: Vec<u8>) -> Option<Answer> {
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Some(Answer { status, headers, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The value of the sample `name{labels}` (labels written exactly as exposed), or of `name`
/// without labels when `labels` is empty.
pub fn metric(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() { name.to_string() } else { format!("{name}{{{labels}}}") };
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// Sum of every sample of `name` whose labels contain `contains`.
pub fn metric_sum(text: &str, name: &str, contains: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(k, _)| (k == &name || k.starts_with(&format!("{name}{{"))) && k.contains(contains))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}
