//! The preview against what SSM then does: a baseline approving Security patches of Critical
//! and Important severity 7 days after release is applied in the fleet simulator (in-process,
//! on port 0, clock frozen) for the patch group its instances carry, every instance is scanned,
//! and what each scan reports approved (missing, installed, not applicable) must be exactly what
//! the local preview approves at the instant of that scan, with the compliance level the
//! preview gives.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use fleet_sim::{Group, PatchRelease, Platform, Scenario, SimServer};
use patchd_aws::{CommandStatus, PatchCommand, PatchState, Reported};
use patchd_config::{Baseline, Limit, Operation, RebootOption};
use patchd_daemon::baselines;
use patchd_daemon::preview::{self, Preview, Status};
use support::{clients_with_retries, home_context, TempDb, FAST};

const DAY: Duration = Duration::from_secs(86_400);
const APPROVE_AFTER_DAYS: u64 = 7;

/// Amazon Linux 2 instances tagged into patch group `web`, none scanned yet, half of the
/// applicable patches missing, with a frozen clock.
fn scenario() -> Scenario {
    let web = Group::amazon_linux_2("web", 6).with_tag("Patch Group", "web").with_scanned(0.0);
    let start = "2026-03-02T09:30:00Z".parse().expect("an instant");
    Scenario::of_groups("preview", 17, vec![web])
        .with_time_scale(0.0)
        .with_start(start)
        .with_patches_per_os(80)
}

fn configured() -> Baseline {
    let toml = format!(
        r#"
[[baseline]]
name = "patchd-web-al2"
operating_system = "AMAZON_LINUX_2"
patch_groups = ["web"]

[[baseline.rule]]
product = ["*"]
classification = ["Security"]
severity = ["Critical", "Important"]
approve_after_days = {APPROVE_AFTER_DAYS}
compliance_level = "CRITICAL"

[[baseline.rule]]
classification = ["Bugfix"]
approve_after_days = 30
compliance_level = "LOW"
"#
    );
    let loaded = patchd_config::load_sources(vec![("baselines.toml".into(), toml)], Utc::now())
        .unwrap_or_else(|e| panic!("the test configuration is valid: {e}"));
    loaded.config.baselines.into_iter().next().expect("one baseline")
}

/// States in which SSM lists a patch its baseline approves; anything else it lists
/// (`INSTALLED_OTHER`, ...) or leaves out is not approved.
fn approved_state(state: &Reported<PatchState>) -> bool {
    matches!(
        state.known(),
        Some(PatchState::Installed | PatchState::Missing | PatchState::NotApplicable | PatchState::Failed)
    )
}

#[tokio::test]
async fn the_preview_approves_exactly_what_a_scan_then_reports() {
    let scenario = scenario();
    let server =
        SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("simulator");
    let db = TempDb::new("preview", "scan");
    let ctx = home_context(clients_with_retries(&server, 2, FAST), db.store().await);

    // Two patches the rule selects, released so that at the scan one is exactly the delay old
    // (approved) and the other a day short of it (pending): an evaluator off by a day, or
    // counting from the wrong instant, disagrees with the scan on one of them.
    let security = |severity: &str| PatchRelease {
        classification: Some("Security".into()),
        severity: Some(severity.into()),
        ..PatchRelease::default()
    };
    let ripe = server.release_patch(Platform::AmazonLinux2, &security("Critical"));
    server.advance(DAY);
    let young = server.release_patch(Platform::AmazonLinux2, &security("Important"));
    server.advance(DAY * (APPROVE_AFTER_DAYS as u32 - 1));

    let baseline = configured();
    let plan = baselines::plan(&ctx.aws, std::slice::from_ref(&baseline), false).await.expect("plan");
    baselines::apply(&ctx, &plan, Utc::now()).await.expect("apply");

    let mut instance_ids: Vec<String> =
        server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect();
    instance_ids.sort();
    assert_eq!(instance_ids.len(), 6, "every instance of the scenario is managed");
    let sent = ctx
        .aws
        .send_patch_command(&PatchCommand {
            operation: Operation::Scan,
            reboot_option: RebootOption::NoReboot,
            snapshot_id: None,
            instance_ids: &instance_ids,
            comment: "preview test",
            timeout_seconds: 600,
            max_concurrency: Limit::Count(50),
            max_errors: Limit::Count(0),
            alarm: None,
            hooks: None,
            install_override_list: None,
        })
        .await
        .expect("send the scan");
    server.advance(Duration::from_secs(600));
    let command = ctx.aws.command(&sent.command_id).await.expect("the command");
    assert_eq!(command.status, CommandStatus::Success, "{command:?}");

    let candidates = preview::candidates(&ctx, baseline.operating_system).await.expect("candidates");
    assert!(candidates.iter().any(|c| c.id == ripe) && candidates.iter().any(|c| c.id == young));
    let states = ctx.aws.patch_states(&instance_ids).await.expect("patch states");
    assert_eq!(states.len(), instance_ids.len(), "every instance reported its scan");

    let mut ripe_missing_somewhere = false;
    for state in &states {
        let scanned_at = state.operation_ended_at.expect("the scan ended");
        let preview = Preview::build(&baseline, candidates.clone(), scanned_at);
        let approved: BTreeSet<&str> = preview
            .rows
            .iter()
            .filter(|r| r.status == Status::Approved)
            .map(|r| r.patch.id.as_str())
            .collect();
        let row = |id: &str| preview.rows.iter().find(|r| r.patch.id == id).expect("previewed");
        assert_eq!(row(&ripe).status, Status::Approved, "{ripe} is exactly {APPROVE_AFTER_DAYS} days old");
        assert_eq!(row(&young).status, Status::Pending, "{young} is a day short of the delay");
        assert!(
            approved.len() > 5 && approved.len() < candidates.len(),
            "the rules select some patches, not all"
        );

        let listed = ctx
            .aws
            .instance_patches(&state.instance_id, patchd_aws::PatchListing::All)
            .await
            .expect("instance patches");
        let reported: BTreeSet<&str> =
            listed.iter().filter(|p| approved_state(&p.state)).map(|p| p.kb_id.as_str()).collect();
        assert_eq!(reported, approved, "{}: approved by the scan vs by the preview", state.instance_id);

        let missing: Vec<&str> =
            listed.iter().filter(|p| p.state == PatchState::Missing).map(|p| p.kb_id.as_str()).collect();
        assert!(!missing.is_empty(), "{}: the scenario leaves patches missing", state.instance_id);
        assert!(!missing.contains(&young.as_str()), "a pending patch is not missing");
        ripe_missing_somewhere |= missing.contains(&ripe.as_str());
        // SSM counts a missing patch critical by the level of the rule that approved it.
        let critical =
            missing.iter().filter(|id| row(id).verdict.compliance_level() == Some("CRITICAL")).count();
        assert_eq!(state.counts.critical_non_compliant as usize, critical, "{}", state.instance_id);
        assert_eq!(state.counts.by_state.missing as usize, missing.len());
    }
    assert!(ripe_missing_somewhere, "the patch approved today is missing where it applies");
}
