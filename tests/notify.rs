//! systemd's notification protocol, as `patchd run` speaks it to a socket this test binds:
//! READY=1 after start-up, WATCHDOG=1 keep-alives at half of WATCHDOG_USEC, RELOADING=1 and
//! READY=1 around a SIGHUP reload, STOPPING=1 after SIGTERM.

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::*;

/// Datagrams until one contains `wanted`, within `timeout`; all of them, in order.
fn receive_until(socket: &UnixDatagram, wanted: &str, timeout: Duration, seen: &mut Vec<String>) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = message.lines().any(|l| l == wanted);
            seen.push(message);
            if found {
                return true;
            }
        }
    }
    false
}

#[test]
fn ready_then_watchdog_keep_alives_then_stopping() {
    let sim = Sim::start(60.0);
    let scratch = Scratch::new("notify");
    scratch.write_config(&sim, "listen = \"127.0.0.1:0\"", "");
    let path = scratch.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let daemon =
        start_daemon(&scratch, 1, &[("NOTIFY_SOCKET", path.to_str().unwrap()), ("WATCHDOG_USEC", "1000000")]);
    let mut seen = Vec::new();
    let ready = receive_until(&socket, "READY=1", Duration::from_secs(40), &mut seen);
    assert!(ready, "no READY=1: {seen:?}\n{}", scratch.read_log(1));
    let ready_message = seen.last().unwrap().clone();
    assert!(ready_message.contains("STATUS="), "{ready_message}");
    assert!(ready_message.contains(&format!("MAINPID={}", daemon.id())), "{ready_message}");
    // Keep-alives every 0.5 s while the scheduler beats.
    let started = Instant::now();
    assert!(receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5), &mut seen), "{seen:?}");
    assert!(receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5), &mut seen), "{seen:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A reload is bracketed by RELOADING=1 and READY=1.
    signal(&daemon, "HUP");
    assert!(receive_until(&socket, "RELOADING=1", Duration::from_secs(10), &mut seen), "{seen:?}");
    assert!(receive_until(&socket, "READY=1", Duration::from_secs(10), &mut seen), "{seen:?}");
    assert!(seen.last().unwrap().contains("STATUS=configuration reloaded"), "{seen:?}");
    signal(&daemon, "TERM");
    assert!(receive_until(&socket, "STOPPING=1", Duration::from_secs(10), &mut seen), "{seen:?}");
    let mut daemon = daemon;
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{}", scratch.read_log(1));
    // Order: READY before any WATCHDOG, STOPPING last of the three kinds.
    let first = |what: &str| seen.iter().position(|m| m.lines().any(|l| l == what)).unwrap();
    assert!(first("READY=1") < first("WATCHDOG=1"));
    assert!(first("WATCHDOG=1") < first("STOPPING=1"));
}
