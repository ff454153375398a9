//! patchd-aws's patch-baseline calls against moto, an implementation of SSM nobody here wrote:
//! the simulator tests (simulator.rs) could share a misreading of the API with our client code,
//! moto cannot. What moto answers must be what we wrote: name, operating system, description,
//! the `managed-by = patchd` tag, the patch-group registration.
//!
//! moto 5.2.5 implements CreatePatchBaseline, DescribePatchBaselines, DeletePatchBaseline,
//! Register/DeregisterPatchBaselineForPatchGroup, GetPatchBaselineForPatchGroup and
//! ListTagsForResource, with the deviations from AWS noted where they show; it has no
//! GetPatchBaseline, UpdatePatchBaseline or DescribePatchGroups, so `baseline`,
//! `baselines_with_prefix` and `update_baseline` are covered by the simulator tests only, and
//! `patch_group_mappings` only for how it fails.
//!
//! Without `moto_server` (see .ci/install-test-deps.sh) each test prints why it is skipped and
//! passes, unless PATCHD_REQUIRE_MOTO=1, which makes a missing moto a failure.

// The fleet simulator's conformance tests own the launcher; sharing the file keeps one way to
// start, probe and reap moto.
#[path = "../../fleet-sim/tests/common/moto.rs"]
mod moto;
#[path = "../../fleet-sim/tests/common/sdk.rs"]
mod sdk;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_ssm::types::PatchOrchestratorFilter;
use patchd_aws::{
    AwsClients, AwsError, Backoff, BaselineDocument, BaselineFilter, BaselineRule, OperatingSystem,
    StaticEndpoint, MANAGED_TAG_KEY, MANAGED_TAG_VALUE,
};
use patchd_config::{Aws, RetryMode};

const OS: OperatingSystem = OperatingSystem::AmazonLinux2;

/// Our clients for moto. One attempt: moto answers an action it lacks with HTTP 500, which the
/// SDK would otherwise retry as a server error.
fn clients(moto: &moto::MotoServer) -> AwsClients {
    let url = moto.endpoint_url();
    let aws = Aws {
        region: Some("us-east-1".into()),
        endpoint_url: None,
        profile: None,
        max_attempts: 1,
        retry_mode: RetryMode::Standard,
        ..Aws::default()
    };
    let backoff = Backoff { initial: Duration::from_millis(5), max: Duration::from_millis(20) };
    AwsClients::with_static_credentials(&aws, &StaticEndpoint { backoff, ..StaticEndpoint::simulator(&url) })
}

/// One moto server serves every test of this binary, so names must not collide between them.
fn unique(what: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("patchd-moto-{what}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn document(name: &str) -> BaselineDocument {
    let filter = |key: &str, values: &[&str]| BaselineFilter {
        key: key.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    BaselineDocument {
        name: name.into(),
        description: Some("security patches, critical ones at once".into()),
        operating_system: OS.into(),
        global_filters: vec![filter("PRODUCT", &["AmazonLinux2"])],
        rules: vec![BaselineRule {
            filters: vec![filter("CLASSIFICATION", &["Security"]), filter("SEVERITY", &["Critical"])],
            approve_after_days: Some(0),
            approve_until: None,
            compliance_level: "CRITICAL".into(),
            enable_non_security: false,
        }],
        approved_patches: vec!["openssl".into()],
        approved_patches_compliance_level: "HIGH".into(),
        approved_patches_enable_non_security: false,
        rejected_patches: vec!["telnet".into()],
        rejected_patches_action: "BLOCK".into(),
    }
}

/// Whether `error` is moto's known failure to tag a patch baseline: its tag store answers
/// InvalidResourceId for every PatchBaseline id, both when CreatePatchBaseline carries `Tags`
/// and in ListTagsForResource. AWS tags the baseline in the same call that creates it.
fn is_moto_tag_deviation(error: &AwsError) -> bool {
    matches!(error, AwsError::NotFound { code, .. } if code == "InvalidResourceId")
}

/// Creates `document` with our client and returns its id and whether it carries patchd's tag.
///
/// moto stores the baseline before failing to tag it, so on the known deviation the baseline
/// exists untagged and is found again by name, as AWS's answer would have named it. moto only
/// tags when the request has `Tags`, so the failure still shows a tag was sent; its key and
/// value are checked by the simulator tests alone.
async fn create(aws: &AwsClients, document: &BaselineDocument) -> (String, bool) {
    match aws.create_baseline(document).await {
        Ok(id) => {
            assert!(id.starts_with("pb-"), "CreatePatchBaseline answered {id:?}, not a pb- id");
            (id, true)
        }
        Err(e) if is_moto_tag_deviation(&e) => {
            eprintln!(
                "CreatePatchBaseline: known moto deviation: {e}; AWS creates the baseline with its tags. \
                 Looking it up by name"
            );
            let found = aws.list_baselines(&document.name).await.expect("DescribePatchBaselines");
            assert_eq!(found.len(), 1, "moto stored {} baselines named {}", found.len(), document.name);
            (found[0].id.clone(), false)
        }
        Err(e) => panic!("CreatePatchBaseline {}: {e}", document.name),
    }
}

/// The description as DescribePatchBaselines returns it. patchd reads descriptions only through
/// GetPatchBaseline, which moto lacks, so this one read goes through the bare SDK client.
async fn described(moto: &moto::MotoServer, name: &str) -> Option<String> {
    let filter = PatchOrchestratorFilter::builder().key("NAME_PREFIX").values(name).build();
    let answer = sdk::ssm_client(&moto.endpoint_url())
        .describe_patch_baselines()
        .filters(filter)
        .send()
        .await
        .expect("DescribePatchBaselines");
    let identities = answer.baseline_identities();
    assert_eq!(identities.len(), 1, "DescribePatchBaselines NAME_PREFIX={name}: {identities:?}");
    identities[0].baseline_description().map(str::to_string)
}

#[tokio::test]
async fn a_baseline_round_trips_through_moto() {
    let Some(moto) = moto::server("a_baseline_round_trips_through_moto") else { return };
    let aws = clients(moto);
    let name = unique("al2");
    let written = document(&name);

    let (id, tagged) = create(&aws, &written).await;

    // NAME_PREFIX with the whole name means the same to AWS (a prefix match) and to moto
    // (which compares whole names).
    let listed = aws.list_baselines(&name).await.expect("DescribePatchBaselines by full name");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].id.as_str(), listed[0].name.as_str(), listed[0].operating_system.as_str()),
        (id.as_str(), name.as_str(), OS.as_str())
    );
    assert_eq!(described(moto, &name).await, written.description);

    // patchd lists its own baselines by the `patchd-` prefix; moto does not match prefixes.
    let ours = aws.list_baselines("patchd-").await.expect("DescribePatchBaselines by prefix");
    if ours.iter().any(|b| b.id == id) {
        assert!(ours.iter().all(|b| b.name.starts_with("patchd-")), "{ours:?}");
    } else {
        assert!(ours.is_empty(), "NAME_PREFIX=patchd- listed other baselines but not ours: {ours:?}");
        eprintln!(
            "DescribePatchBaselines: known moto deviation: NAME_PREFIX compared with whole names; AWS lists \
             every baseline whose name starts with the value"
        );
    }

    match aws.is_managed_baseline(&id).await {
        Ok(managed) => {
            assert!(tagged, "ListTagsForResource works in moto, but tagging at creation did not");
            assert!(managed, "the baseline lacks {MANAGED_TAG_KEY} = {MANAGED_TAG_VALUE}");
        }
        Err(e) if !tagged && is_moto_tag_deviation(&e) => {
            eprintln!("ListTagsForResource: known moto deviation: {e}; AWS lists the baseline's tags");
        }
        Err(e) => panic!("ListTagsForResource {id}: {e}"),
    }

    let group = unique("group");
    let default = aws.baseline_for_patch_group(&group, OS).await.expect("GetPatchBaselineForPatchGroup");
    let default = default.expect("a patch group nobody registered has the default baseline of its OS");
    assert_ne!(default, id);

    aws.register_patch_group(&id, &group).await.expect("RegisterPatchBaselineForPatchGroup");
    let serving = aws.baseline_for_patch_group(&group, OS).await.expect("GetPatchBaselineForPatchGroup");
    assert_eq!(serving.as_deref(), Some(id.as_str()), "patch group {group} on {OS}");
    // A registration is per operating system: the group's Windows nodes keep their default.
    let windows = aws
        .baseline_for_patch_group(&group, OperatingSystem::Windows)
        .await
        .expect("GetPatchBaselineForPatchGroup");
    assert!(windows.as_deref().is_some_and(|w| w != id), "{windows:?}");

    match aws.patch_group_mappings().await {
        Ok(mappings) => {
            let mine: Vec<_> = mappings.iter().filter(|m| m.patch_group == group).collect();
            assert_eq!(mine.len(), 1, "{mappings:?}");
            assert_eq!(
                (
                    mine[0].baseline.id.as_str(),
                    mine[0].baseline.name.as_str(),
                    mine[0].baseline.operating_system.as_str()
                ),
                (id.as_str(), name.as_str(), OS.as_str())
            );
        }
        Err(e) if is_moto_unimplemented(&e) => {
            eprintln!("DescribePatchGroups: not implemented by moto ({e}); covered by the simulator tests");
        }
        Err(e) => panic!("DescribePatchGroups: {e}"),
    }

    // SSM keeps one baseline per operating system per patch group; patchd must move a
    // registration (deregister, then register), never stack a second one.
    let rival = document(&unique("rival"));
    let (rival_id, _) = create(&aws, &rival).await;
    match aws.register_patch_group(&rival_id, &group).await {
        Err(AwsError::Service { code, .. }) if code == "AlreadyExistsException" => {}
        other => panic!("a second {OS} baseline for {group}: expected AlreadyExistsException, got {other:?}"),
    }
    let still = aws.baseline_for_patch_group(&group, OS).await.expect("GetPatchBaselineForPatchGroup");
    assert_eq!(still.as_deref(), Some(id.as_str()), "the refused registration changed the mapping");

    aws.deregister_patch_group(&id, &group).await.expect("DeregisterPatchBaselineForPatchGroup");
    let after = aws.baseline_for_patch_group(&group, OS).await.expect("GetPatchBaselineForPatchGroup");
    if after.as_deref() == Some(id.as_str()) {
        eprintln!(
            "GetPatchBaselineForPatchGroup: known moto deviation: still the deregistered baseline; AWS \
             answers the default baseline again"
        );
    } else {
        assert_eq!(
            after.as_deref(),
            Some(default.as_str()),
            "a deregistered group falls back to the default"
        );
    }

    for (baseline, name) in [(&id, &name), (&rival_id, &rival.name)] {
        aws.delete_baseline(baseline).await.expect("DeletePatchBaseline");
        let gone = aws.list_baselines(name).await.expect("DescribePatchBaselines");
        assert!(gone.is_empty(), "{name} is still listed after DeletePatchBaseline: {gone:?}");
    }
}

/// How moto 5.2.5 answers an action it does not implement: HTTP 500 with an HTML page, which
/// the SDK cannot read as an AWS error, so it reaches us as an unreadable response.
fn is_moto_unimplemented(error: &AwsError) -> bool {
    matches!(error, AwsError::Transport { kind: patchd_aws::TransportKind::Response, .. })
}
