//! The HTTP endpoint of `patchd run`, over HTTP against a daemon process on the fleet
//! simulator: liveness, readiness, metrics equal to `patchd report`, the JSON API, the bearer
//! token off loopback, TLS with certificate rotation, and a taken port failing start-up.

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

fn report(scratch: &Scratch, kind: &str) -> serde_json::Value {
    let out = patchd(scratch).args(["report", kind, "--format", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn wait_ready(scratch: &Scratch, addr: SocketAddr, token: Option<&str>) {
    wait_for(
        "/readyz to answer 200",
        Duration::from_secs(40),
        || get(addr, "/readyz", token).filter(|a| a.status == 200),
        || scratch.read_log(1),
    );
}

/// A fleet scanned once by hand (which records findings and syncs them into the history), then
/// the daemon serving on a free loopback port.
fn scanned_then_serving(name: &str) -> (Sim, Scratch, SocketAddr, std::process::Child) {
    let sim = Sim::start(300.0);
    let scratch = Scratch::new(name);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    scratch.write_config(&sim, &format!("listen = \"127.0.0.1:{port}\""), "");
    let scan =
        patchd(&scratch).args(["scan", "--group", "web", "--poll-interval", "200ms"]).output().unwrap();
    assert!(scan.status.success(), "{}", String::from_utf8_lossy(&scan.stderr));
    let daemon = start_daemon(&scratch, 1, &[]);
    (sim, scratch, addr, daemon)
}

#[test]
fn health_metrics_and_api_agree_with_the_reports() {
    let (sim, scratch, addr, daemon) = scanned_then_serving("http-api");
    let health =
        wait_for("/healthz", Duration::from_secs(30), || get(addr, "/healthz", None), || scratch.read_log(1));
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    wait_ready(&scratch, addr, None);
    let ready = get(addr, "/readyz", None).unwrap();
    let ready_json = ready.json();
    assert_eq!(ready_json["status"], "ready", "{}", ready.body);
    for check in ["config", "database", "scheduler"] {
        assert_eq!(ready_json["checks"][check]["ok"], true, "{}", ready.body);
    }

    let sla = report(&scratch, "sla");
    let coverage = report(&scratch, "coverage");
    let metrics = get(addr, "/metrics", None).unwrap();
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    assert_eq!(metrics.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = &metrics.body;
    for name in [
        "patchd_build_info",
        "patchd_scheduler_heartbeat_timestamp_seconds",
        "patchd_windows_fired_total",
        "patchd_windows_missed_total",
        "patchd_command_invocations",
        "patchd_aws_api_calls_total",
        "patchd_aws_api_throttles_total",
        "patchd_last_sync_duration_seconds",
        "patchd_open_findings",
        "patchd_oldest_open_critical_finding_age_seconds",
        "patchd_coverage_gaps",
        "patchd_instances_in_scope",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
    }

    // The SLA totals equal `report sla --format json`, rank by rank and status by status.
    let totals = sla["totals"].as_array().unwrap();
    let mut open = 0.0;
    for rank in ["critical", "high", "medium", "low"] {
        for status in ["breached", "due-soon", "ok", "excepted"] {
            let expected: f64 = totals
                .iter()
                .filter(|c| c["rank"] == rank && c["status"] == status)
                .map(|c| c["count"].as_f64().unwrap())
                .sum();
            let labels = format!("rank=\"{rank}\",status=\"{status}\"");
            assert_eq!(metric(text, "patchd_open_findings", &labels), Some(expected), "{labels}\n{text}");
            open += expected;
        }
    }
    assert!(open > 0.0, "the scan found missing patches: {sla}");
    // Coverage gaps equal `report coverage --format json`.
    let gaps = coverage["gaps"].as_array().unwrap();
    for gap in ["unmanaged", "agent-connection-lost", "no-install-window", "stale-scan"] {
        let expected = gaps.iter().filter(|g| g["gap"] == gap).count() as f64;
        assert_eq!(metric(text, "patchd_coverage_gaps", &format!("gap=\"{gap}\"")), Some(expected), "{gap}");
    }
    assert_eq!(metric(text, "patchd_instances_in_scope", ""), coverage["in_scope"].as_f64());
    // The manual scan's run and invocations are in the store the metrics read.
    assert_eq!(metric(text, "patchd_windows_fired_total", "window=\"manual:scan:web\""), Some(1.0), "{text}");
    assert!(metric_sum(text, "patchd_command_invocations", "status=\"Success\"") >= 1.0, "{text}");
    // The daemon's own AWS calls are counted by operation (start-up reconciles baselines).
    assert!(metric_sum(text, "patchd_aws_api_calls_total", "service=\"SSM\"") >= 1.0, "{text}");

    // /v1/findings?status=breached lists what the report counts as breached.
    let breached: f64 =
        totals.iter().filter(|c| c["status"] == "breached").map(|c| c["count"].as_f64().unwrap()).sum();
    let findings = get(addr, "/v1/findings?status=breached", None).unwrap();
    assert_eq!(findings.status, 200, "{}", findings.body);
    let findings = findings.json();
    assert_eq!(findings["total"].as_f64(), Some(breached), "{findings}");
    assert!(findings["findings"].as_array().unwrap().iter().all(|f| f["status"] == "breached"));
    let all = get(addr, "/v1/findings", None).unwrap().json();
    assert_eq!(all["total"].as_f64(), Some(open));
    let limited = get(addr, "/v1/findings?limit=2", None).unwrap().json();
    assert_eq!(limited["findings"].as_array().unwrap().len(), 2.min(open as usize));
    assert_eq!(get(addr, "/v1/findings?status=late", None).unwrap().status, 400);
    assert_eq!(get(addr, "/v1/findings?group=nope", None).unwrap().status, 400);
    // Narrowed to an account (by name: the home account's id was learned at the scan) or a
    // region; a name or region patchd does not know is the asker's mistake.
    let total = |path: &str| get(addr, path, None).unwrap().json()["total"].as_f64();
    assert_eq!(total("/v1/findings?account=home"), Some(open));
    assert_eq!(total("/v1/findings?region=us-east-1"), Some(open));
    assert_eq!(total("/v1/findings?account=999999999999"), Some(0.0));
    let unknown = get(addr, "/v1/findings?account=nope", None).unwrap();
    assert_eq!(unknown.status, 400, "{}", unknown.body);
    assert!(unknown.body.contains("configured accounts: home"), "{}", unknown.body);
    assert_eq!(get(addr, "/v1/findings?region=mars-1", None).unwrap().status, 400);

    let status = get(addr, "/v1/status", None).unwrap().json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["database"]["reachable"], true);
    assert_eq!(status["listen"], addr.to_string());
    assert_eq!(status["next_firings"][0]["window"], "weekly", "{status}");
    let windows = get(addr, "/v1/windows?count=3", None).unwrap().json();
    assert_eq!(windows["windows"][0]["name"], "weekly");
    assert_eq!(windows["windows"][0]["next"].as_array().unwrap().len(), 3);
    let runs = get(addr, "/v1/runs?limit=5", None).unwrap().json();
    assert_eq!(runs["runs"][0]["window"], "manual:scan:web", "{runs}");
    assert_eq!(
        runs["runs"][0]["account"],
        sim.server.account_id(),
        "the home account's id, from STS: {runs}"
    );
    assert_eq!(runs["runs"][0]["region"], "us-east-1", "{runs}");
    let elsewhere = get(addr, "/v1/runs?region=eu-west-1", None).unwrap().json();
    assert_eq!(elsewhere["count"], 0, "{elsewhere}");
    assert_eq!(get(addr, "/v1/runs?limit=0", None).unwrap().status, 400);
    let by_name = get(addr, "/v1/runs?limit=5&account=home", None).unwrap().json();
    assert_eq!(by_name["runs"], runs["runs"], "the home account by name: {by_name}");
    let by_id =
        get(addr, &format!("/v1/runs?limit=5&account={}", sim.server.account_id()), None).unwrap().json();
    assert_eq!(by_id["runs"], runs["runs"]);
    assert_eq!(get(addr, "/v1/runs?account=999999999999", None).unwrap().json()["count"], 0);
    assert_eq!(get(addr, "/v1/runs?account=nope", None).unwrap().status, 400);
    assert_eq!(get(addr, "/nowhere", None).unwrap().status, 404);

    let exit = stop_daemon(daemon);
    assert!(exit.success(), "{}", scratch.read_log(1));
    // Stopped means stopped: the port is free again.
    assert!(get(addr, "/healthz", None).is_none());
}

#[test]
fn off_loopback_every_path_but_healthz_needs_the_token() {
    let sim = Sim::start(60.0);
    let scratch = Scratch::new("http-token");
    let port = free_port();
    let token = "c0ffee0123456789abcdef0123456789";
    let token_file = scratch.0.join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    // 0.0.0.0 is every address of the machine, loopback included: the test connects through
    // 127.0.0.1 but the daemon sees a non-loopback `listen` and enforces the token.
    scratch.write_config(
        &sim,
        &format!("listen = \"0.0.0.0:{port}\"\napi_token_file = \"{}\"", token_file.display()),
        "",
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = start_daemon(&scratch, 1, &[]);
    let health =
        wait_for("/healthz", Duration::from_secs(30), || get(addr, "/healthz", None), || scratch.read_log(1));
    assert_eq!(health.status, 200, "no token needed for liveness");
    wait_ready(&scratch, addr, Some(token));
    for path in ["/", "/readyz", "/metrics", "/v1/status", "/v1/windows", "/v1/runs", "/v1/findings"] {
        let refused = get(addr, path, None).unwrap();
        assert_eq!(refused.status, 401, "{path}: {}", refused.body);
        assert_eq!(refused.header("www-authenticate"), Some("Bearer realm=\"patchd\""), "{path}");
        let wrong = get(addr, path, Some("c0ffee0123456789abcdef012345678X")).unwrap();
        assert_eq!(wrong.status, 401, "{path}");
        let allowed = get(addr, path, Some(token)).unwrap();
        assert_eq!(allowed.status, 200, "{path}: {}", allowed.body);
    }
    assert!(stop_daemon(daemon).success(), "{}", scratch.read_log(1));
    assert!(!scratch.read_log(1).contains(token), "the token is never logged");
}

#[test]
fn a_non_loopback_listen_without_a_token_file_is_refused_at_its_line() {
    let sim = Sim::start(60.0);
    let scratch = Scratch::new("http-refused");
    scratch.write_config(&sim, "listen = \"0.0.0.0:9487\"", "");
    let out = patchd(&scratch).arg("check").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let config = scratch.config().display().to_string();
    // write_config puts `listen` on line 5.
    assert!(stderr.contains(&format!("{config}:5:")), "{stderr}");
    assert!(stderr.contains("api_token_file"), "{stderr}");
}

#[test]
fn a_taken_port_fails_start_up_naming_the_address_and_the_key() {
    let sim = Sim::start(60.0);
    let scratch = Scratch::new("http-taken");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    scratch.write_config(&sim, &format!("listen = \"{addr}\""), "");
    let out = patchd(&scratch).arg("run").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {addr} ([daemon] listen)")), "{stderr}");
    drop(holder);
}

/// With `tls_cert_file` and `tls_key_file` the endpoint speaks HTTPS only; a SIGHUP reads the
/// certificate again (rotation without a restart), and a reload that cannot read it keeps the
/// certificate in use.
#[test]
fn tls_serves_the_endpoint_and_a_reload_rotates_the_certificate() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tls");
    let (first_ca, second_ca) = (fixtures.join("first-ca.pem"), fixtures.join("second-ca.pem"));
    let sim = Sim::start(60.0);
    let scratch = Scratch::new("http-tls");
    let (cert, key) = (scratch.0.join("cert.pem"), scratch.0.join("key.pem"));
    let install = |which: &str| {
        std::fs::copy(fixtures.join(format!("{which}-cert.pem")), &cert).unwrap();
        std::fs::copy(fixtures.join(format!("{which}-key.pem")), &key).unwrap();
    };
    install("first");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    scratch.write_config(
        &sim,
        &format!(
            "listen = \"{addr}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
        "",
    );
    let daemon = start_daemon(&scratch, 1, &[]);
    let health = wait_for(
        "/healthz over TLS",
        Duration::from_secs(30),
        || get_tls(addr, "/healthz", None, &first_ca).ok(),
        || scratch.read_log(1),
    );
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let status = get_tls(addr, "/v1/status", None, &first_ca).unwrap();
    assert_eq!(status.status, 200, "{}", status.body);
    assert!(get(addr, "/healthz", None).is_none(), "no plain HTTP on the TLS port");
    let untrusted = get_tls(addr, "/healthz", None, &second_ca).unwrap_err();
    assert!(untrusted.contains("invalid peer certificate"), "{untrusted}");
    assert!(scratch.read_log(1).contains("\"tls\":true"), "{}", scratch.read_log(1));

    // Rotation: new files, SIGHUP, and new connections get the new certificate.
    install("second");
    signal(&daemon, "HUP");
    wait_for(
        "the rotated certificate",
        Duration::from_secs(20),
        || get_tls(addr, "/healthz", None, &second_ca).ok(),
        || scratch.read_log(1),
    );
    // Refused for its certificate, not for any other reason (a daemon gone would refuse too).
    let old =
        get_tls(addr, "/healthz", None, &first_ca).expect_err("the old certificate is no longer presented");
    assert!(old.contains("invalid peer certificate"), "{old}");

    // A reload that cannot read the certificate keeps the one in use.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    signal(&daemon, "HUP");
    wait_for(
        "the refused reload in the log",
        Duration::from_secs(20),
        || scratch.read_log(1).contains("TLS certificate not reloaded").then_some(()),
        || scratch.read_log(1),
    );
    assert_eq!(get_tls(addr, "/healthz", None, &second_ca).unwrap().status, 200);
    assert!(stop_daemon(daemon).success(), "{}", scratch.read_log(1));

    // At start-up, a key that cannot be read stops patchd with the file and the key named.
    install("second");
    std::fs::remove_file(&key).unwrap();
    let out = patchd(&scratch).arg("run").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read the private key {} ([daemon] tls_key_file)", key.display())),
        "{stderr}"
    );
}

/// The rows of the table `id` in `html`, each as its cells' text (tags stripped).
fn table_rows(html: &str, id: &str) -> Vec<Vec<String>> {
    let table = html.split(&format!(" id=\"{id}\"")).nth(1).unwrap_or_else(|| panic!("no table {id}"));
    let body = table.split("<tbody>").nth(1).unwrap().split("</tbody>").next().unwrap();
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let inner = cell.split_once('>').map_or("", |(_, rest)| rest);
                    let mut text = String::new();
                    let mut in_tag = false;
                    for c in inner.split("</td>").next().unwrap().chars() {
                        match c {
                            '<' => in_tag = true,
                            '>' => in_tag = false,
                            c if !in_tag => text.push(c),
                            _ => {}
                        }
                    }
                    text.trim().to_string()
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_status_page_shows_the_reports_figures_and_renders_on_a_phone_and_a_desk() {
    let (_sim, scratch, addr, daemon) = scanned_then_serving("http-page");
    wait_ready(&scratch, addr, None);

    let page = get(addr, "/", None).unwrap();
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    let html = &page.body;
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"60\">"), "it refreshes itself");
    assert!(!html.contains("<script"), "no script");
    // The SLA table equals `report sla`, rank by rank and status by status.
    let sla = report(&scratch, "sla");
    let rows = table_rows(html, "totals");
    let statuses = ["breached", "due-soon", "ok", "excepted"];
    for (row, rank) in rows.iter().zip(["critical", "high", "medium", "low"]) {
        assert_eq!(row[0], rank);
        for (cell, status) in row[1..5].iter().zip(statuses) {
            let expected = sla["totals"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["rank"] == rank && t["status"] == status)
                .map_or(0, |t| t["count"].as_u64().unwrap());
            assert_eq!(cell.parse::<u64>().unwrap(), expected, "{rank} {status}");
        }
    }
    // The most urgent findings are the report's first ones.
    let urgent = table_rows(html, "urgent");
    let first = &sla["findings"][0];
    assert_eq!(urgent[0][0], first["instance_id"].as_str().unwrap(), "{first}");
    assert_eq!(urgent[0][1], first["patch_id"].as_str().unwrap(), "{first}");
    // Coverage, the recent run, the next opening and the daemon's health.
    let coverage = report(&scratch, "coverage");
    let with_gaps: std::collections::BTreeSet<&str> =
        coverage["gaps"].as_array().unwrap().iter().map(|g| g["instance_id"].as_str().unwrap()).collect();
    assert!(
        html.contains(&format!(
            "{} of {} in-scope instance(s) have a blind spot",
            with_gaps.len(),
            coverage["in_scope"]
        )),
        "{html}"
    );
    assert!(html.contains("manual:scan:web"), "the recent run");
    assert!(html.contains("<td>weekly</td>"), "the next opening");
    assert!(html.contains("<div class=\"card-value\">healthy</div>"), "the scheduler beats");

    if browser::chromium_available() {
        for (name, size) in [("phone", (390, 844)), ("desk", (1280, 2400))] {
            let screenshot = scratch.0.join(format!("status-{name}.png"));
            let out = browser::chromium(
                &scratch.0,
                &[
                    &format!("--screenshot={}", screenshot.display()),
                    &format!("--window-size={},{}", size.0, size.1),
                    "--hide-scrollbars",
                    &format!("http://{addr}/"),
                ],
            );
            assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(browser::console_lines(&out.stderr), Vec::<String>::new(), "{name}: console messages");
            let png = std::fs::read(&screenshot).expect("a screenshot");
            assert_eq!(browser::png_size(&png), size, "{name}");
            assert!(png.len() > 20 * 1024, "{name}: {} bytes, did the page lay out?", png.len());
        }
        // On a phone the page is no wider than the screen: wide tables scroll in their box.
        let out = browser::chromium(
            &scratch.0,
            &["--window-size=390,844", "--dump-dom", &format!("http://{addr}/")],
        );
        let dom = String::from_utf8_lossy(&out.stdout);
        assert_eq!(table_rows(&dom, "totals"), rows, "the browser parsed the table the server sent");
    }
    assert!(stop_daemon(daemon).success(), "{}", scratch.read_log(1));
}
