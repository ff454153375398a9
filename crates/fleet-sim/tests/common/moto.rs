//! A moto server (PyPI `moto[server]`) for conformance tests, and AWS SDK clients that point at
//! any endpoint, so the same test code can talk to the simulator and to moto.
//!
//! moto is optional: without `moto_server`, [`server`] prints why the moto half is skipped and
//! answers `None`, so `cargo test` passes on a machine that has only the Rust toolchain.
//! `.ci/install-test-deps.sh` installs it into `.venv/`.

// Each test binary that declares `mod common` compiles this file, and not every binary uses
// every helper.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Names the `moto_server` executable when it is not on PATH.
pub const MOTO_SERVER_ENV: &str = "PATCHD_MOTO_SERVER";
/// When set to `1`, a missing `moto_server` fails the moto half instead of skipping it, so CI
/// cannot pass green with a broken install.
pub const REQUIRE_MOTO_ENV: &str = "PATCHD_REQUIRE_MOTO";

/// How long a fresh `moto_server` may take to answer. It imports Flask and botocore first, which
/// takes about a second on an idle machine and several when tests load both cores.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Another process can take the port between our probe releasing it and moto binding it.
const START_ATTEMPTS: usize = 3;

/// A running `moto_server` on 127.0.0.1, stopped when dropped.
///
/// moto_server runs under a `sh` guard that kills moto when the guard's standard input reaches
/// end of file. The write end of that pipe lives only in this process, so moto also goes when
/// the test process ends without running destructors: a shared server in a `static` (see
/// [`server`]) is never dropped, and a test binary can be killed.
#[derive(Debug)]
pub struct MotoServer {
    guard: Child,
    guard_stdin: Option<ChildStdin>,
    addr: SocketAddr,
    log: PathBuf,
}

impl MotoServer {
    /// Starts `moto_server` from `program` and waits until it answers as moto.
    pub fn start(program: &Path) -> Result<MotoServer, String> {
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port().map_err(|e| format!("cannot find a free port on 127.0.0.1: {e}"))?;
            match MotoServer::start_on(program, port) {
                Ok(server) => return Ok(server),
                Err(problem) => failures.push(problem),
            }
        }
        Err(failures.join("\n"))
    }

    fn start_on(program: &Path, port: u16) -> Result<MotoServer, String> {
        let log = std::env::temp_dir().join(format!("patchd-moto-server-{}-{port}.log", std::process::id()));
        // Only start-up output is worth keeping (it says why moto did not come up); once moto
        // answers, the file is unlinked and moto's request log goes to a file nobody can open.
        let log_file = File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| format!("cannot reopen {}: {e}", log.display()))?;
        // The guard runs moto and a watcher in the background and waits for moto, so it exits
        // when moto does (a port taken meanwhile, a broken install) and start-up fails fast.
        // The watcher reads the guard's stdin (through fd 3: a background job's own stdin is
        // /dev/null) until end of file, that is until this process drops the pipe or dies, and
        // then kills moto. SIGKILL because moto keeps nothing worth a clean exit, and its
        // SIGTERM handler takes about two seconds to tear the interpreter down.
        let script = r#"set -u
exec 3<&0
"$0" -H 127.0.0.1 -p "$1" 3<&- &
moto=$!
{ read -r _ignored || true; kill -KILL "$moto" 2>/dev/null; } <&3 3<&- &
exec 3<&-
wait "$moto""#;
        let mut guard = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(program)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot run sh to start {}: {e}", program.display()))?;
        let guard_stdin = guard.stdin.take();
        let mut server =
            MotoServer { guard, guard_stdin, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)), log };

        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if let Ok(Some(status)) = server.guard.try_wait() {
                return Err(format!(
                    "moto_server on port {port} exited ({status}) before answering; its output:\n{}",
                    server.log_tail()
                ));
            }
            if answers_as_moto(server.addr) {
                let _ = std::fs::remove_file(&server.log);
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "moto_server on port {port} did not answer within {READY_TIMEOUT:?}; its output:\n{}",
            server.log_tail()
        ))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // Closing the pipe makes the guard kill moto and reap it; waiting for the guard then
        // means no moto outlives this value.
        drop(self.guard_stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.guard.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                // SIGKILL cannot be ignored, so this is only a wedged shell; killing it closes
                // nothing moto needs, and the watcher has already sent its signal.
                _ => {
                    let _ = self.guard.kill();
                    let _ = self.guard.wait();
                    break;
                }
            }
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The moto server shared by every test of this process, started on first use, or `None` (after
/// printing why to stderr) when `moto_server` is not installed.
///
/// One server per process keeps the moto half fast: moto takes a second or more to start and
/// loads each service's model on its first request. Tests sharing it must not depend on its
/// global state: they tag what they create with a unique value and filter by it.
///
/// Panics when moto is installed but does not start, or when [`REQUIRE_MOTO_ENV`] is `1` and it
/// is missing: a moto half that silently stops running is worse than a red test.
pub fn server(test: &str) -> Option<&'static MotoServer> {
    static SERVER: OnceLock<Result<MotoServer, String>> = OnceLock::new();
    let program = program_or_skip(test)?;
    match SERVER.get_or_init(|| MotoServer::start(&program)) {
        Ok(server) => Some(server),
        Err(problem) => panic!("{test}: cannot start {}:\n{problem}", program.display()),
    }
}

/// The `moto_server` to run, or `None` after printing that `test` skips its moto half.
///
/// Panics when [`REQUIRE_MOTO_ENV`] is `1` and there is none.
pub fn program_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(program) = moto_server_program() {
        return Some(program);
    }
    let why = format!(
        "moto_server not on PATH and {MOTO_SERVER_ENV} not set \
         (run .ci/install-test-deps.sh and add .venv/bin to PATH)"
    );
    if std::env::var(REQUIRE_MOTO_ENV).as_deref() == Ok("1") {
        panic!("{test}: {REQUIRE_MOTO_ENV}=1 but {why}");
    }
    // Straight to the process's stderr: libtest captures eprintln! of passing tests, and a
    // skip nobody sees is a silent one.
    let _ = writeln!(std::io::stderr(), "{test}: skipping moto half: {why}");
    None
}

/// `$PATCHD_MOTO_SERVER` if set, else the first executable `moto_server` on PATH.
///
/// A `PATCHD_MOTO_SERVER` that names nothing runnable panics: someone asked for that program.
pub fn moto_server_program() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os(MOTO_SERVER_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        assert!(
            is_executable(&path),
            "{MOTO_SERVER_ENV}={} is not an executable file: point it at moto_server or unset it",
            path.display()
        );
        return Some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("moto_server")).find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A port that was free a moment ago; the caller retries when someone else takes it first.
fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Whether `addr` serves moto's own API. A plain connect is not enough: if another program took
/// the port, the tests would talk to it.
fn answers_as_moto(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /moto-api/data.json HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0_u8; 64];
    let mut read = 0;
    while read < head.len() {
        match stream.read(&mut head[read..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
    let head = String::from_utf8_lossy(&head[..read]);
    head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200")
}
