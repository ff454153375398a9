//! Promotion against the fleet simulator: production installs exactly what staging's last
//! succeeded run installed, even after a newer critical patch was released and approved. What
//! was installed is read from the simulator (its DescribeInstancePatches and its command
//! history), never from patchd's view of it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use fleet_sim::{CommandView, Faults, Group, PatchRelease, Platform, Scenario, Timing};
use patchd_aws::{PatchListing, PatchState};
use patchd_daemon::window::{RunEnd, RunPlan, RunSummary};
use patchd_store::{CommandStatus, FindingQuery, FindingStatus, WindowRunStatus};
use support::{never_stop, patchd_toml, Fixture};

const BUCKET: &str = "acme-patch-lists";

/// Two staging and three production Amazon Linux 2 nodes, all missing most of their patches,
/// on a clock running 600 times real time.
fn scenario() -> Scenario {
    let group = |role: &str, n: usize| {
        Group::amazon_linux_2(format!("{role}-nodes"), n).with_tag("Role", role).with_missing(0.8)
    };
    let timing = Timing { execution_timeout_seconds: 600.0, ..Timing::brisk(40.0, 120.0, 30.0) };
    Scenario::of_groups("promotion", 29, vec![group("staging", 2), group("prod", 3)])
        .with_time_scale(600.0)
        .with_timing(timing)
        .with_patches_per_os(24)
}

/// Window `staging` installs group `staging`; window `prod` installs group `prod`, promoting
/// from `staging`.
fn config(state_dir: &str) -> String {
    [
        patchd_toml::daemon_and_aws(state_dir, None, "", ""),
        patchd_toml::group("staging", "Role", "staging"),
        patchd_toml::group("prod", "Role", "prod"),
        patchd_toml::window("staging", "cron(0 2 ? * TUE *)", 4, 1),
        patchd_toml::task("install", "install", "staging", "max_concurrency = 10"),
        patchd_toml::window("prod", "cron(0 2 ? * THU *)", 4, 1),
        patchd_toml::task(
            "install",
            "install",
            "prod",
            &format!(
                "max_concurrency = 10\n[window.task.promote]\nfrom = \"staging\"\nbucket = \"{BUCKET}\""
            ),
        ),
    ]
    .concat()
}

async fn run(f: &Fixture, window: &str) -> RunSummary {
    let window = f.config.window(window).unwrap();
    f.execute(&RunPlan::for_window(window, Utc::now()), never_stop()).await
}

fn ids_tagged(f: &Fixture, role: &str) -> Vec<String> {
    let mut ids: Vec<String> = f
        .server
        .instances()
        .into_iter()
        .filter(|i| i.tags.iter().any(|(k, v)| k == "Role" && v == role))
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

fn installs_to(f: &Fixture, ids: &[String]) -> Vec<CommandView> {
    f.server
        .commands()
        .into_iter()
        .filter(|c| c.operation == "Install" && c.instance_ids.iter().any(|i| ids.contains(i)))
        .collect()
}

/// Per instance, by the simulator: patch id → (state, installed at).
async fn patches_of(
    f: &Fixture,
    ids: &[String],
) -> BTreeMap<String, BTreeMap<String, (PatchState, Option<DateTime<Utc>>)>> {
    let mut out = BTreeMap::new();
    for id in ids {
        let patches = f.ctx.aws.instance_patches(id, PatchListing::All).await.unwrap();
        let states =
            patches.into_iter().filter_map(|p| Some((p.kb_id, (p.state.known()?, p.installed_at)))).collect();
        out.insert(id.clone(), states);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_installs_exactly_what_staging_installed_after_a_newer_critical_patch() {
    let f = Fixture::start("promotion", "exact", scenario(), config).await;
    support::create_bucket(&f.server, BUCKET).await;
    let (staging, prod) = (ids_tagged(&f, "staging"), ids_tagged(&f, "prod"));

    // Nothing to promote yet: the task fails, and production is sent nothing.
    let early = run(&f, "prod").await;
    assert_eq!(early.end, RunEnd::Finished(WindowRunStatus::Failed), "{early:#?}");
    let failure = early.tasks[0].promotion_failure.as_deref().unwrap_or_default();
    assert!(failure.contains("window `staging` has no succeeded run"), "{failure}");
    assert!(installs_to(&f, &prod).is_empty(), "no command before staging ran");

    // Staging installs what its baseline approves, and patchd records what that was.
    let staged = run(&f, "staging").await;
    assert_eq!(staged.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{staged:#?}");
    let staging_after = patches_of(&f, &staging).await;
    let staging_set: BTreeSet<String> = staging_after
        .values()
        .flat_map(|patches| patches.iter())
        .filter(|(_, (state, _))| matches!(state, PatchState::Installed | PatchState::InstalledOther))
        .filter(|(_, (_, at))| at.is_some_and(|at| at > Utc::now() - chrono::Duration::days(30)))
        .map(|(id, _)| id.clone())
        .collect();
    assert!(!staging_set.is_empty(), "staging installed something");
    let recorded = staged.tasks[0].installs_recorded.expect("installs recorded for the promotion");
    assert_eq!(recorded, staging_set.len(), "patchd recorded what the simulator says staging installed");

    // A critical kernel fix is released in between, and the baseline has approved it by the
    // time production patches.
    let newer = f.server.release_patch(
        Platform::AmazonLinux2,
        &PatchRelease {
            severity: Some("Critical".into()),
            classification: Some("Security".into()),
            ..PatchRelease::default()
        },
    );
    f.server.advance(Duration::from_secs(8 * 86_400));
    let prod_before = patches_of(&f, &prod).await;

    let promoted = run(&f, "prod").await;
    assert_eq!(promoted.end, RunEnd::Finished(WindowRunStatus::Succeeded), "{promoted:#?}");
    let task = &promoted.tasks[0];
    assert_eq!(task.status, CommandStatus::Success);
    assert!(task.promoted.as_deref().is_some_and(|p| p.contains("window `staging`")), "{task:?}");

    // Every production command carried the install list.
    let commands = installs_to(&f, &prod);
    assert!(!commands.is_empty());
    for command in &commands {
        let list = command.parameters.get("InstallOverrideList").and_then(|v| v.first());
        assert!(
            list.is_some_and(|url| url.starts_with(&format!("s3://{BUCKET}/patchd/install-lists/"))),
            "{command:#?}"
        );
    }

    // From the simulator: each production node took exactly the staging patches it missed,
    // and nothing else; the newer critical patch is still missing everywhere.
    let prod_after = patches_of(&f, &prod).await;
    for id in &prod {
        let before = &prod_before[id];
        let after = &prod_after[id];
        let taken: BTreeSet<&String> = after
            .iter()
            .filter(|(patch, (state, _))| {
                state.remediates() && !before.get(*patch).is_some_and(|(was, _)| was.remediates())
            })
            .map(|(patch, _)| patch)
            .collect();
        let expected: BTreeSet<&String> = before
            .iter()
            .filter(|(patch, (state, _))| {
                matches!(state, PatchState::Missing | PatchState::Failed) && staging_set.contains(*patch)
            })
            .map(|(patch, _)| patch)
            .collect();
        assert_eq!(
            taken, expected,
            "{id}: installed exactly staging's patches it was missing; before {before:?}, after {after:?}"
        );
        assert_eq!(after.get(&newer).map(|(s, _)| *s), Some(PatchState::Missing), "{id}: {newer} held back");
    }

    // The store keeps the newer patch as an open finding on every production node: promotion
    // holds a patch back, it does not hide it from the SLA.
    let open = f
        .ctx
        .store
        .findings(&FindingQuery {
            status: Some(FindingStatus::Open),
            patch_id: Some(&newer),
            ..FindingQuery::default()
        })
        .await
        .unwrap();
    let held: BTreeSet<&str> = open.findings.iter().map(|o| o.instance.instance_id.as_str()).collect();
    assert_eq!(held, prod.iter().map(String::as_str).collect(), "the newer patch is open on every prod node");

    // And the choice is audited with the set it promoted.
    let audit = f.ctx.store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap();
    let promote = audit.iter().find(|e| e.action == "promote").expect("a promote audit entry");
    let listed: BTreeSet<String> = promote.details.as_ref().unwrap()["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, staging_set);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_run_whose_installs_could_not_all_be_read_is_never_promoted() {
    let f = Fixture::start("promotion", "unread", scenario(), config).await;
    support::create_bucket(&f.server, BUCKET).await;
    let (staging, prod) = (ids_tagged(&f, "staging"), ids_tagged(&f, "prod"));
    // One staging node's patch list cannot be read: what staging installed is not known in full.
    let faults = Faults { unreadable_instances: [staging[0].clone()].into(), ..Faults::default() };
    f.server.set_faults(faults).expect("valid faults");

    let staged = run(&f, "staging").await;
    let task = &staged.tasks[0];
    assert!(task.sync_unread >= 1, "the unread node is counted: {task:?}");
    assert_eq!(task.installs_recorded, None, "a partial set is not recorded: {task:?}");
    assert_eq!(f.ctx.store.promotion_source("staging").await.unwrap(), None);

    f.server.set_faults(Faults::default()).expect("valid faults");
    let promoted = run(&f, "prod").await;
    assert_eq!(promoted.end, RunEnd::Finished(WindowRunStatus::Failed), "{promoted:#?}");
    assert!(promoted.tasks[0].promotion_failure.is_some(), "{promoted:#?}");
    assert!(installs_to(&f, &prod).is_empty(), "production is sent nothing");
}
