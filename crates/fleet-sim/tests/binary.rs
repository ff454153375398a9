//! The `fleet-sim` binary: its first stdout line, its control API, and a clean SIGTERM stop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleet-sim"))
}

#[test]
fn prints_its_address_first_serves_and_stops_on_sigterm() {
    let mut child = binary()
        .args(["--listen", "127.0.0.1:0", "--instances", "20", "--time-scale", "0", "--seed", "7"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).expect("reads the first line");
    let address =
        first.trim_end().strip_prefix("listening on http://").expect("first line names the endpoint");
    let port: u16 = address.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    assert!(address.starts_with("127.0.0.1:") && port != 0, "{first}");

    let mut stream = TcpStream::connect(address).expect("connects");
    stream
        .write_all(
            format!("GET /_sim/stats HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("reads");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"instances\":20"), "--instances rescales the demo fleet: {response}");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("the binary exits");
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
}

#[test]
fn an_invalid_scenario_exits_with_status_2_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("fleet-sim-binary-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.toml");
    std::fs::write(&path, "[[group]]\nname = \"a\"\ncount = 1\nplatforms = { beos = 1 }\n").expect("writes");
    let output = binary()
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.toml") && stderr.contains("unknown platform 'beos'"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing is announced before the scenario is valid");
    let _ = std::fs::remove_dir_all(&dir);
}
