//! `patchd check --resolve` as a process against the fleet simulator (in this test's process, on
//! port 0): instances whose patch group no `[[baseline]]` serves, or whose baseline SSM does not
//! have registered yet, are warned about per group and fail `--deny-warnings`; a fleet that is
//! fully covered passes clean; an endpoint that does not answer fails the check.

mod support;

use std::process::Output;

use fleet_sim::{Group, Platform, Scenario, SimServer};
use support::{patchd_toml, run, stderr, stdout, Scratch};

/// Nine running Amazon Linux 2 and Ubuntu instances, all `Role = web`: `Tier = front` are the
/// ones a patchd baseline serves (under either patch-group tag key); the rest are what
/// `--resolve` exists to find. The clock is frozen: nothing here needs simulated time.
fn scenario() -> Scenario {
    let web =
        |name, count, tier| Group::amazon_linux_2(name, count).with_tag("Role", "web").with_tag("Tier", tier);
    let groups = vec![
        web("front", 3, "front").with_tag("Patch Group", "web"),
        web("front-metadata-tags", 1, "front").with_tag("PatchGroup", "web"),
        web("legacy", 2, "legacy").with_tag("Patch Group", "legacy"),
        web("untagged", 2, "new"),
        web("ubuntu", 1, "ubuntu").with_tag("Patch Group", "web").with_platform(Platform::Ubuntu2204),
    ];
    let start = "2026-11-28T00:00:00Z".parse().expect("an instant");
    Scenario::of_groups("resolve", 7, groups).with_time_scale(0.0).with_start(start).with_patches_per_os(5)
}

impl Scratch {
    /// One AL2 baseline for patch group `web`, the `groups` (name, `[group.tags]` body) and a
    /// daily install window for all of them: a configuration `check` finds nothing wrong with
    /// on its own, so every warning comes from --resolve.
    fn write_resolve_config(&self, endpoint_url: &str, groups: &[(&str, &str)]) {
        // One attempt: the unreachable-endpoint case should fail at once, not after backoff.
        let aws = "max_attempts = 1";
        let names = groups.iter().map(|(name, _)| format!("\"{name}\"")).collect::<Vec<_>>().join(", ");
        let mut text = [
            patchd_toml::daemon_and_aws(&self.state_dir(), Some(endpoint_url), "", aws),
            patchd_toml::al2_baseline("patchd-al2", "web", ""),
            patchd_toml::security_rule(0, "compliance_level = \"CRITICAL\""),
            patchd_toml::window("nightly", "cron(0 2 * * ? *)", 2, 1),
            format!("\n[[window.task]]\noperation = \"install\"\ngroups = [{names}]\n"),
        ]
        .concat();
        for (name, tags) in groups {
            text.push_str(&format!("\n[[group]]\nname = \"{name}\"\n[group.tags]\n{tags}\n"));
        }
        std::fs::write(self.config(), text).unwrap();
    }
}

fn warnings(output: &Output) -> Vec<String> {
    stderr(output).lines().filter(|l| l.contains(": warning: ")).map(str::to_string).collect()
}

/// Ids of the simulated instances carrying `Tier = tier`, sorted as patchd lists them.
fn tier(server: &SimServer, tier: &str) -> Vec<String> {
    let mut ids: Vec<String> =
        server.instances().into_iter().filter(|i| i.tag("Tier") == Some(tier)).map(|i| i.id).collect();
    ids.sort();
    ids
}

fn start(rt: &tokio::runtime::Runtime) -> SimServer {
    let scenario = scenario();
    rt.block_on(SimServer::start("127.0.0.1:0".parse().unwrap(), scenario)).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
}

/// Groups that select only instances patch group `web` reaches, under either tag key.
const COVERED: &[(&str, &str)] = &[
    ("front", "Tier = \"front\"\n\"Patch Group\" = \"web\""),
    ("front-metadata-tags", "Tier = \"front\"\nPatchGroup = \"web\""),
];

#[test]
fn covered_groups_pass_once_their_baseline_is_registered() {
    let rt = runtime();
    let server = start(&rt);
    let scratch = Scratch::new("resolve-covered");
    scratch.write_resolve_config(&server.endpoint_url(), COVERED);
    assert_eq!(tier(&server, "front").len(), 4);
    // The `front` group: the ones tagged with the `Patch Group` key.
    let front: Vec<String> = tier(&server, "front")
        .into_iter()
        .filter(|id| server.instance(id).is_some_and(|i| i.tag("Patch Group").is_some()))
        .collect();
    assert_eq!(front.len(), 3);

    let offline = run(&scratch, &["check", "--deny-warnings"]);
    assert_eq!(offline.status.code(), Some(0), "the configuration alone is clean: {}", stderr(&offline));
    assert_eq!(server.stats().calls("DescribeInstances"), 0, "without --resolve nothing is asked");
    assert!(!stdout(&offline).contains("resolved"), "{}", stdout(&offline));

    // Configured but not applied: SSM has no baseline registered for patch group `web` yet.
    let before = run(&scratch, &["check", "--resolve"]);
    assert_eq!(before.status.code(), Some(0), "{}", stderr(&before));
    let found = warnings(&before);
    assert_eq!(found.len(), 2, "one line per group: {found:?}");
    let unregistered = "not registered to `patchd-al2` in SSM yet, nor to any other AMAZON_LINUX_2 baseline";
    assert!(
        found[0].contains(&format!(
            "group `front`: 3 of 3 instances are not on their patchd baseline in SSM yet: 3 instances with \
             patch group `web`, {unregistered} ({}, {}, {})",
            front[0], front[1], front[2]
        )),
        "{}",
        found[0]
    );
    assert!(
        found[1].contains(&format!(
            "group `front-metadata-tags`: 1 of 1 instance is not on its patchd baseline in SSM yet: 1 \
             instance with patch group `web`, {unregistered}"
        )),
        "{}",
        found[1]
    );
    assert!(stderr(&before).contains("run `patchd apply`"), "{}", stderr(&before));
    assert!(stdout(&before).contains(", 2 warnings"), "{}", stdout(&before));
    assert!(
        stdout(&before).contains("resolved  4 instances in 2 groups: 4 not on a registered patchd baseline"),
        "{}",
        stdout(&before)
    );
    let denied = run(&scratch, &["check", "--resolve", "--deny-warnings"]);
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert_eq!(warnings(&denied), found);

    let applied = run(&scratch, &["apply", "--yes"]);
    assert!(applied.status.success(), "{}", stderr(&applied));

    let after = run(&scratch, &["check", "--resolve", "--deny-warnings"]);
    assert_eq!(after.status.code(), Some(0), "{}", stderr(&after));
    assert_eq!(warnings(&after), Vec::<String>::new());
    assert!(
        stdout(&after).contains("resolved  4 instances in 2 groups: all on a registered patchd baseline"),
        "{}",
        stdout(&after)
    );
}

#[test]
fn instances_off_every_patchd_baseline_are_named_per_group() {
    let rt = runtime();
    let server = start(&rt);
    let scratch = Scratch::new("resolve-gaps");
    // `web` selects by role alone, as groups often do, so it reaches instances whatever their
    // patch-group tag; `front` selects by patch group and still reaches the Ubuntu instance.
    scratch.write_resolve_config(
        &server.endpoint_url(),
        &[("front", "Role = \"web\"\n\"Patch Group\" = \"web\""), ("web", "Role = \"web\"")],
    );
    let applied = run(&scratch, &["apply", "--yes"]);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let (legacy, untagged, ubuntu) = (tier(&server, "legacy"), tier(&server, "new"), tier(&server, "ubuntu"));
    assert_eq!((legacy.len(), untagged.len(), ubuntu.len()), (2, 2, 1));
    let on_ubuntu = format!(
        "1 instance of UBUNTU with patch group `web`, which no UBUNTU [[baseline]] lists ({})",
        ubuntu[0]
    );

    let checked = run(&scratch, &["check", "--resolve"]);
    assert_eq!(checked.status.code(), Some(0), "{}", stderr(&checked));
    let (found, undated): (Vec<String>, Vec<String>) =
        warnings(&checked).into_iter().partition(|w| w.contains("would be patched against"));
    assert_eq!(found.len(), 2, "one line per group: {found:?}");
    // The fleet's Ubuntu instance: no [[advisories.source]] dates its patches, in either group.
    assert_eq!(undated.len(), 2, "{undated:?}");
    for (group, line) in ["front", "web"].iter().zip(&undated) {
        assert!(
            line.contains(&format!("group `{group}`: 1 instance(s) run UBUNTU, whose patches neither SSM nor any [[advisories.source]] dates")),
            "{line}"
        );
    }
    assert!(
        found[0].contains(&format!(
            "group `front`: 1 of 4 instances would be patched against an AWS default baseline, not a patchd \
             one: {on_ubuntu}"
        )),
        "{}",
        found[0]
    );
    let line = &found[1];
    for expected in [
        "group `web`: 5 of 9 instances would be patched against an AWS default baseline, not a patchd one: "
            .to_string(),
        format!(
            "2 instances with patch group `legacy`, which no [[baseline]] lists ({}, {})",
            legacy[0], legacy[1]
        ),
        on_ubuntu.clone(),
        format!("2 instances with no patch-group tag ({}, {})", untagged[0], untagged[1]),
    ] {
        assert!(line.contains(&expected), "missing {expected:?} in\n{line}");
    }
    for covered in tier(&server, "front") {
        assert!(!found.iter().any(|l| l.contains(&covered)), "{covered} is on patchd-al2: {found:?}");
    }
    let text = stderr(&checked);
    assert!(
        text.contains("approve most patches only 7 days after release, which may break the SLA"),
        "{text}"
    );
    assert!(
        stdout(&checked).contains("resolved  9 instances in 2 groups: 5 not on a registered patchd baseline"),
        "{}",
        stdout(&checked)
    );

    let denied = run(&scratch, &["check", "--resolve", "--deny-warnings"]);
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert_eq!(warnings(&denied), warnings(&checked));
    assert!(
        stderr(&denied).contains("the configuration is invalid: 0 error(s), 4 warning(s)"),
        "{}",
        stderr(&denied)
    );
    assert!(stdout(&denied).is_empty(), "{}", stdout(&denied));
}

#[test]
fn an_endpoint_that_does_not_answer_fails_the_check() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let scratch = Scratch::new("resolve-unreachable");
    scratch.write_resolve_config(&url, COVERED);

    let checked = run(&scratch, &["check", "--resolve"]);
    assert_eq!(checked.status.code(), Some(1), "{}", stderr(&checked));
    let text = stderr(&checked);
    assert!(text.contains(&format!("patchd: error: check --resolve cannot ask {url}")), "{text}");
    assert!(text.contains("got no answer"), "{text}");
    assert!(stdout(&checked).is_empty(), "no summary for a check that did not finish: {}", stdout(&checked));

    // Without --resolve the endpoint is never contacted, so the same configuration passes.
    assert_eq!(run(&scratch, &["check"]).status.code(), Some(0));
}
