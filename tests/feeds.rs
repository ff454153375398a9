//! Vendor advisory feeds as users meet them: `patchd run` fetches the simulator's feeds (each
//! vendor's real format, generated from the catalog the simulator serves to SSM), and the SLA
//! clocks of Amazon Linux 2023, RHEL and Ubuntu findings start at the vendor's release instead
//! of the first sighting. A feed that starts failing keeps its last good data, and `/metrics`,
//! `/readyz` and `patchd advisories status` say so.

mod support;

use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_sim::Scenario;
use support::{
    free_port, get, metric, patchd_toml, post_faults, run, scan_at_full_speed, stderr, stdout, Scratch, Sim,
};

const PLATFORM_FEEDS: [(&str, &str); 3] = [
    ("Amazon Linux 2023", "amazon-linux-2023"),
    ("Red Hat Enterprise Linux 9.4", "redhat"),
    ("Ubuntu 22.04", "ubuntu"),
];

fn write_config(scratch: &Scratch, sim: &Sim, port: u16) {
    let url = sim.server.endpoint_url();
    let url = url.trim_end_matches('/');
    let daemon = format!("sync_interval = \"1h\"\nlisten = \"127.0.0.1:{port}\"");
    let mut text = patchd_toml::daemon_and_aws(&scratch.state_dir(), Some(url), &daemon, "");
    text.push_str(&format!(
        "\n[sla]\nkev_catalog = \"{url}/feeds/kev/known_exploited_vulnerabilities.json\"\n"
    ));
    for (name, kind, path, platform) in [
        ("amazon-linux-2023", "amazon-linux", "amazon-linux-2023/updateinfo.xml.gz", "AMAZON_LINUX_2023"),
        ("redhat", "redhat", "redhat/csaf.json", "REDHAT_ENTERPRISE_LINUX"),
        ("ubuntu", "ubuntu", "ubuntu/database.json.gz", "UBUNTU"),
    ] {
        text.push_str(&format!(
            "\n[[advisories.source]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}/feeds/{path}\"\n\
             platforms = [\"{platform}\"]\n"
        ));
    }
    text.push_str(
        "\n[[group]]\nname = \"all\"\n[group.tags]\nEnvironment = [\"prod\", \"staging\", \"dev\"]\n",
    );
    std::fs::write(scratch.config(), text).unwrap();
}

/// `report sla` as JSON, every open finding listed.
fn sla(scratch: &Scratch) -> serde_json::Value {
    let out = run(scratch, &["report", "sla", "--format", "json", "--limit", "0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn findings(report: &serde_json::Value) -> &Vec<serde_json::Value> {
    report["findings"].as_array().unwrap()
}

fn key(f: &serde_json::Value) -> (String, String) {
    (f["instance_id"].as_str().unwrap().to_string(), f["patch_id"].as_str().unwrap().to_string())
}

fn clock_start(f: &serde_json::Value) -> DateTime<Utc> {
    f["clock"]["start"].as_str().unwrap().parse().unwrap()
}

#[test]
fn the_daemon_dates_every_platform_from_the_vendor_feeds_and_keeps_them_through_failures() {
    let sim = Sim::with_scenario(Scenario::demo().with_time_scale(60.0));
    let scratch = Scratch::new("feeds");
    let port = free_port();
    write_config(&scratch, &sim, port);
    let scan = scan_at_full_speed(&scratch, &["all"]);
    assert!(scan.status.success(), "{}\n{}", stdout(&scan), stderr(&scan));

    // Before any feed: the three platforms' clocks start at first sighting (today).
    let before = sla(&scratch);
    let instance_platform = |report: &serde_json::Value| report["clocks"].clone();
    for (platform, _) in PLATFORM_FEEDS {
        let clocks = instance_platform(&before);
        let row = clocks
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["platform"] == platform)
            .unwrap_or_else(|| panic!("no {platform} in {clocks}\n{}", stdout(&scan)))
            .clone();
        assert_eq!(row["estimated"], row["open"], "{platform} before the feeds: {row}");
    }

    let daemon = support::start_daemon(&scratch, 1, &[]);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let up = |feed: &str| {
        get(addr, "/metrics", None)
            .and_then(|a| metric(&a.body, "patchd_feed_up", &format!("feed=\"{feed}\"")))
    };
    support::wait_for(
        "every feed imported",
        Duration::from_secs(60),
        || ["amazon-linux-2023", "redhat", "ubuntu", "kev"].iter().all(|f| up(f) == Some(1.0)).then_some(()),
        || scratch.read_log(1),
    );

    // After: no estimated clock on a platform with a feed, every critical finding there
    // dated by its vendor's advisory.
    let after = sla(&scratch);
    for (platform, feed) in PLATFORM_FEEDS {
        let row =
            after["clocks"].as_array().unwrap().iter().find(|c| c["platform"] == platform).unwrap().clone();
        assert_eq!(row["estimated"], 0, "{platform}: {row}");
        assert!(row.to_string().contains(&format!("advisory: {feed}")), "{platform}: {row}");
    }
    let origins: std::collections::BTreeSet<&str> = findings(&after)
        .iter()
        .filter(|f| f["rank"] == "critical")
        .map(|f| f["clock_origin"].as_str().unwrap())
        .collect();
    for (_, feed) in PLATFORM_FEEDS {
        assert!(
            origins.contains(format!("advisory: {feed}").as_str()),
            "critical findings dated by {feed}: {origins:?}"
        );
    }

    // A critical patch released long ago but first seen today: "ok" on its estimated clock,
    // breached on its vendor's.
    let now = Utc::now();
    let old_and_breached: Vec<&serde_json::Value> = findings(&after)
        .iter()
        .filter(|f| f["rank"] == "critical" && f["clock_origin"].as_str().unwrap().starts_with("advisory: "))
        .filter(|f| clock_start(f) < now - chrono::Duration::days(60))
        .collect();
    assert!(!old_and_breached.is_empty(), "no critical finding released more than 60 days ago");
    for f in &old_and_breached {
        assert_eq!(f["status"], "breached", "{f}");
        let earlier =
            findings(&before).iter().find(|b| key(b) == key(f)).expect("the same finding before the feeds");
        assert_eq!(
            (&earlier["status"], &earlier["clock_origin"]),
            (&serde_json::json!("ok"), &serde_json::json!("first-seen")),
            "{earlier}"
        );
        assert!(now - clock_start(earlier) < chrono::Duration::days(1), "first seen today: {earlier}");
    }

    // Conditional requests: a manual sync right after finds nothing new.
    let manual = run(&scratch, &["advisories", "sync"]);
    assert!(manual.status.success(), "{}\n{}", stdout(&manual), stderr(&manual));
    let unchanged = stdout(&manual).lines().filter(|l| l.contains(" not modified; ")).count();
    assert_eq!(unchanged, 4, "{}", stdout(&manual));
    assert!(!stdout(&manual).contains(" 0 entries in use"), "{}", stdout(&manual));
    assert!(sim.server.stats().feed_not_modified >= 4, "{:?}", sim.server.stats());

    // Red Hat's feed starts failing: the fetch fails whole, its data stays in use, and the
    // metrics, /readyz and the status say so.
    post_faults(&sim, r#"{"feed_errors": ["redhat"]}"#);
    let failing = run(&scratch, &["advisories", "sync", "--source", "redhat"]);
    assert_eq!(failing.status.code(), Some(1), "{}", stdout(&failing));
    assert!(stdout(&failing).contains("redhat               FAILED: "), "{}", stdout(&failing));
    assert!(stdout(&failing).contains("500"), "{}", stdout(&failing));
    assert!(
        stderr(&failing).contains("1 feed(s) not refreshed; their last good data stays in use"),
        "{}",
        stderr(&failing)
    );
    // Store-derived metrics are cached for a few seconds.
    let metrics = support::wait_for(
        "the failure in /metrics",
        Duration::from_secs(30),
        || {
            get(addr, "/metrics", None)
                .map(|a| a.body)
                .filter(|m| metric(m, "patchd_feed_up", "feed=\"redhat\"") == Some(0.0))
        },
        || scratch.read_log(1),
    );
    assert_eq!(metric(&metrics, "patchd_feed_failures", "feed=\"redhat\""), Some(1.0));
    assert_eq!(metric(&metrics, "patchd_feed_up", "feed=\"ubuntu\""), Some(1.0));
    assert_eq!(
        metric(&metrics, "patchd_open_findings_estimated_ratio", "platform=\"Red Hat Enterprise Linux 9.4\""),
        Some(0.0)
    );
    let ready = get(addr, "/readyz", None).unwrap();
    assert_eq!(ready.status, 200, "a failing feed is detail, not unreadiness: {}", ready.body);
    let ready = ready.json();
    assert_eq!(ready["feeds"]["redhat"]["ok"], false, "{ready}");
    assert!(ready["feeds"]["redhat"]["detail"].as_str().unwrap().contains("500"), "{ready}");
    let status = run(&scratch, &["advisories", "status"]);
    let line = stdout(&status).lines().find(|l| l.starts_with("redhat")).unwrap().to_string();
    assert!(line.contains(" 1  ") && line.contains("500"), "{line}");
    let still = sla(&scratch);
    let rhel = still["clocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["platform"] == "Red Hat Enterprise Linux 9.4")
        .unwrap()
        .clone();
    assert_eq!(rhel["estimated"], 0, "the last good data still dates RHEL: {rhel}");

    let status = support::stop_daemon(daemon);
    assert!(status.success(), "{status:?}");
}
