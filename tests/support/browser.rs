//! Debian's chromium, headless, for the tests of pages a browser must render: the evidence
//! report and the daemon's status page. A missing browser skips those tests with a reason,
//! unless PATCHD_REQUIRE_CHROMIUM=1 (CI) makes it a failure.
#![allow(dead_code)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs chromium headless with a profile of its own in `scratch`, killed after a minute.
pub fn chromium(scratch: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", scratch.join("profile").display()))
        .args(["--enable-logging=stderr", "--v=0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// Lines where chromium reports something the page logged or failed to load: with
/// `--enable-logging=stderr` every console message is logged with `CONSOLE`.
pub fn console_lines(stderr: &[u8]) -> Vec<String> {
    text(stderr).lines().filter(|l| l.contains(":CONSOLE")).map(str::to_string).collect()
}

/// Width and height from a PNG's IHDR chunk, which the format puts first, at a fixed offset.
pub fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "not a PNG: {} bytes", png.len());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&png[16..20]), be(&png[20..24]))
}

pub fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    if std::env::var("PATCHD_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
        panic!("{CHROMIUM} is missing and PATCHD_REQUIRE_CHROMIUM=1: run PATCHD_INSTALL_CHROMIUM=1 .ci/install-test-deps.sh");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipping: {CHROMIUM} is missing (PATCHD_INSTALL_CHROMIUM=1 .ci/install-test-deps.sh installs it)"
    );
    false
}
