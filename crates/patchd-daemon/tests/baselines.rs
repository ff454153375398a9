//! Baselines as code against the fleet simulator, in-process on port 0, with an SQLite store
//! in a temporary file: plan and apply create, update, leave alone, refuse to overwrite, prune
//! and register patch groups, and a second apply finds nothing to do.

mod support;

use std::io::{Read, Write};

use chrono::Utc;
use fleet_sim::{Scenario, SimServer};
use patchd_aws::OperatingSystem;
use patchd_config::Baseline;
use patchd_daemon::baselines::{self, Change, Conflict, FieldChange};
use patchd_daemon::Context;
use support::{clients_with_retries, home_context, TempDb, FAST};

/// A database file of its own, removed at the end of the test.
struct Fixture {
    server: SimServer,
    _db: TempDb,
    ctx: Context,
}

async fn fixture(name: &str) -> Fixture {
    let server = SimServer::start("127.0.0.1:0".parse().expect("address"), Scenario::minimal())
        .await
        .expect("simulator starts");
    let db = TempDb::new("baselines", name);
    let ctx = home_context(clients_with_retries(&server, 2, FAST), db.store().await);
    Fixture { server, _db: db, ctx }
}

/// The `[[baseline]]` sections of `toml`, loaded and validated like any configuration.
fn configured(toml: &str) -> Vec<Baseline> {
    let loaded = patchd_config::load_sources(vec![("baselines.toml".into(), toml.to_string())], Utc::now())
        .unwrap_or_else(|e| panic!("the test configuration is valid: {e}"));
    loaded.config.baselines
}

fn al2(name: &str, days: u32, groups: &str) -> String {
    format!(
        r#"
[[baseline]]
name = "{name}"
operating_system = "AMAZON_LINUX_2"
patch_groups = [{groups}]
rejected_patches_action = "BLOCK"

[[baseline.rule]]
classification = ["Security"]
severity = ["Critical", "Important"]
approve_after_days = {days}
compliance_level = "CRITICAL"
"#
    )
}

/// A baseline made by hand (no `managed-by` tag), through the simulator's SSM wire protocol.
/// Blocking: call it only from a multi-threaded runtime.
fn hand_made(server: &SimServer, operation: &str, body: &str) -> String {
    let addr = server.addr();
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the simulator");
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-amz-json-1.1\r\n\
         X-Amz-Target: AmazonSSM.{operation}\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=0\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{operation} failed: {answer}");
    answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

fn kinds(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c {
            Change::Create { document } => format!("create {}", document.name),
            Change::Update { document, .. } => format!("update {}", document.name),
            Change::Unchanged { name, .. } => format!("unchanged {name}"),
            Change::Delete { name, .. } => format!("delete {name}"),
            Change::Orphan { name, .. } => format!("orphan {name}"),
            Change::Register { baseline, patch_group, replaces, .. } => match replaces {
                Some((_, old)) => format!("register {patch_group} {old} -> {baseline}"),
                None => format!("register {patch_group} {baseline}"),
            },
            Change::Deregister { baseline, patch_group, .. } => {
                format!("deregister {patch_group} {baseline}")
            }
            Change::Conflict(conflict) => format!("conflict {conflict:?}"),
        })
        .collect()
}

async fn audit_actions(ctx: &Context) -> Vec<String> {
    let since = Utc::now() - chrono::Duration::days(1);
    let entries = ctx.store.audit_since(since, None).await.expect("read the audit log");
    entries.into_iter().map(|e| format!("{} {}", e.action, e.target.unwrap_or_default())).collect()
}

#[tokio::test]
async fn create_then_no_op() {
    let f = fixture("create").await;
    let config = configured(&al2("patchd-al2", 7, r#""web""#));

    let plan = baselines::plan(&f.ctx.aws, &config, false).await.expect("plan");
    assert_eq!(kinds(&plan.changes), ["create patchd-al2", "register web patchd-al2"]);
    let done = baselines::apply(&f.ctx, &plan, Utc::now()).await.expect("apply");
    assert_eq!(done.len(), 2);
    assert_eq!(
        audit_actions(&f.ctx).await,
        ["create-baseline patchd-al2", "register-patch-group patchd-al2"]
    );

    // What SSM holds reads back equal to what was written, tagged and registered.
    let actual = baselines::read_actual(&f.ctx.aws).await.expect("read");
    assert_eq!(actual.baselines.len(), 1);
    let remote = &actual.baselines[0];
    assert!(remote.managed);
    assert_eq!(remote.document, baselines::desired(&config[0]));
    assert_eq!(remote.patch_groups, ["web"]);
    let served = f.ctx.aws.baseline_for_patch_group("web", OperatingSystem::AmazonLinux2).await.expect("get");
    assert_eq!(served.as_deref(), Some(remote.id.as_str()));

    let again = baselines::plan(&f.ctx.aws, &config, false).await.expect("plan");
    assert_eq!(kinds(&again.changes), ["unchanged patchd-al2"]);
    assert!(!again.has_work());
    assert!(baselines::apply(&f.ctx, &again, Utc::now()).await.expect("apply").is_empty());
    assert_eq!(audit_actions(&f.ctx).await.len(), 2, "a no-op apply writes nothing");
}

#[tokio::test]
async fn update_field_by_field() {
    let f = fixture("update").await;
    let first = configured(&al2("patchd-al2", 7, r#""web""#));
    baselines::apply(&f.ctx, &baselines::plan(&f.ctx.aws, &first, false).await.expect("plan"), Utc::now())
        .await
        .expect("apply");

    let changed =
        configured(&al2("patchd-al2", 3, r#""web""#).replace("\"BLOCK\"", "\"ALLOW_AS_DEPENDENCY\""));
    let plan = baselines::plan(&f.ctx.aws, &changed, false).await.expect("plan");
    let [Change::Update { fields, .. }] = plan.changes.as_slice() else {
        panic!("one update expected: {:?}", kinds(&plan.changes));
    };
    assert_eq!(
        fields,
        &[
            FieldChange {
                field: "rule[1]".into(),
                from: Some("CLASSIFICATION=Security SEVERITY=Critical,Important after 7d CRITICAL".into()),
                to: Some("CLASSIFICATION=Security SEVERITY=Critical,Important after 3d CRITICAL".into()),
            },
            FieldChange {
                field: "rejected_patches_action".into(),
                from: Some("BLOCK".into()),
                to: Some("ALLOW_AS_DEPENDENCY".into()),
            },
        ]
    );
    baselines::apply(&f.ctx, &plan, Utc::now()).await.expect("apply");
    let actual = baselines::read_actual(&f.ctx.aws).await.expect("read");
    assert_eq!(actual.baselines[0].document, baselines::desired(&changed[0]));
    assert!(!baselines::plan(&f.ctx.aws, &changed, false).await.expect("plan").has_work());
    let actions = audit_actions(&f.ctx).await;
    assert_eq!(actions.last().map(String::as_str), Some("update-baseline patchd-al2"));
}

// Multi-threaded: `hand_made` blocks its thread while the simulator answers on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_baselines_are_conflicts_never_overwritten() {
    let f = fixture("conflict").await;
    let hand = hand_made(
        &f.server,
        "CreatePatchBaseline",
        r#"{"Name":"hand-al2","OperatingSystem":"AMAZON_LINUX_2","ApprovalRules":{"PatchRules":[{"PatchFilterGroup":{"PatchFilters":[{"Key":"CLASSIFICATION","Values":["Security"]}]},"ApproveAfterDays":14}]}}"#,
    );
    let hand_id = serde_json::from_str::<serde_json::Value>(&hand).expect("json")["BaselineId"]
        .as_str()
        .expect("an id")
        .to_string();
    hand_made(
        &f.server,
        "RegisterPatchBaselineForPatchGroup",
        &format!(r#"{{"BaselineId":"{hand_id}","PatchGroup":"db"}}"#),
    );
    // Same name as a configured baseline, but without patchd's tag.
    hand_made(
        &f.server,
        "CreatePatchBaseline",
        r#"{"Name":"patchd-taken","OperatingSystem":"AMAZON_LINUX_2"}"#,
    );

    let config =
        configured(&format!("{}{}", al2("patchd-al2", 7, r#""db", "web""#), al2("patchd-taken", 7, "")));
    let plan = baselines::plan(&f.ctx.aws, &config, true).await.expect("plan");
    let conflicts: Vec<&Conflict> = plan.conflicts().collect();
    assert_eq!(conflicts.len(), 2, "{:?}", kinds(&plan.changes));
    assert!(matches!(
        conflicts[0],
        Conflict::PatchGroupTaken { patch_group, wanted_by, registered_to, registered_id, .. }
            if patch_group == "db" && wanted_by == "patchd-al2" && registered_to == "hand-al2" && *registered_id == hand_id
    ));
    let text = conflicts[0].to_string();
    assert!(text.contains("hand-al2") && text.contains("patchd-al2"), "{text}");
    assert!(matches!(conflicts[1], Conflict::NameTaken { name, .. } if name == "patchd-taken"));

    baselines::apply(&f.ctx, &plan, Utc::now()).await.expect("apply");
    let served = f.ctx.aws.baseline_for_patch_group("db", OperatingSystem::AmazonLinux2).await.expect("get");
    assert_eq!(served.as_deref(), Some(hand_id.as_str()), "the hand-made registration stays");
    let actual = baselines::read_actual(&f.ctx.aws).await.expect("read");
    let taken = actual.baselines.iter().find(|b| b.document.name == "patchd-taken").expect("still there");
    assert!(!taken.managed);
    assert!(taken.document.rules.is_empty(), "the hand-made baseline is not overwritten");
    // The rest of the plan went through; the conflicts remain, nothing else to do.
    let again = baselines::plan(&f.ctx.aws, &config, true).await.expect("plan");
    assert!(!again.has_work(), "{:?}", kinds(&again.changes));
    assert_eq!(again.conflicts().count(), 2);
}

#[tokio::test]
async fn prune_off_keeps_prune_on_deletes() {
    let f = fixture("prune").await;
    let both = configured(&format!("{}{}", al2("patchd-a", 7, r#""web""#), al2("patchd-b", 7, r#""db""#)));
    baselines::apply(&f.ctx, &baselines::plan(&f.ctx.aws, &both, false).await.expect("plan"), Utc::now())
        .await
        .expect("apply");

    let one = configured(&al2("patchd-a", 7, r#""web""#));
    let kept = baselines::plan(&f.ctx.aws, &one, false).await.expect("plan");
    assert_eq!(kinds(&kept.changes), ["unchanged patchd-a", "orphan patchd-b"]);
    assert!(!kept.has_work());
    baselines::apply(&f.ctx, &kept, Utc::now()).await.expect("apply");
    assert_eq!(baselines::read_actual(&f.ctx.aws).await.expect("read").baselines.len(), 2);

    let pruned = baselines::plan(&f.ctx.aws, &one, true).await.expect("plan");
    assert_eq!(kinds(&pruned.changes), ["unchanged patchd-a", "delete patchd-b"]);
    baselines::apply(&f.ctx, &pruned, Utc::now()).await.expect("apply");
    let actual = baselines::read_actual(&f.ctx.aws).await.expect("read");
    assert_eq!(actual.baselines.iter().map(|b| b.document.name.as_str()).collect::<Vec<_>>(), ["patchd-a"]);
    assert!(actual.mappings.iter().all(|m| m.patch_group != "db"));
    let actions = audit_actions(&f.ctx).await;
    assert_eq!(
        &actions[actions.len() - 2..],
        ["deregister-patch-group patchd-b", "delete-baseline patchd-b"]
    );
}

#[tokio::test]
async fn patch_groups_register_move_and_deregister() {
    let f = fixture("groups").await;
    let start = configured(&format!("{}{}", al2("patchd-a", 7, r#""web", "api""#), al2("patchd-b", 7, "")));
    baselines::apply(&f.ctx, &baselines::plan(&f.ctx.aws, &start, false).await.expect("plan"), Utc::now())
        .await
        .expect("apply");

    // web moves from a to b; api is dropped from a.
    let moved = configured(&format!("{}{}", al2("patchd-a", 7, ""), al2("patchd-b", 7, r#""web""#)));
    let plan = baselines::plan(&f.ctx.aws, &moved, false).await.expect("plan");
    assert_eq!(
        kinds(&plan.changes),
        [
            "unchanged patchd-a",
            "unchanged patchd-b",
            "register web patchd-a -> patchd-b",
            "deregister api patchd-a"
        ]
    );
    baselines::apply(&f.ctx, &plan, Utc::now()).await.expect("apply");
    let actual = baselines::read_actual(&f.ctx.aws).await.expect("read");
    let groups: Vec<(&str, &str)> =
        actual.mappings.iter().map(|m| (m.patch_group.as_str(), m.baseline.name.as_str())).collect();
    assert_eq!(groups, [("web", "patchd-b")]);
    assert!(!baselines::plan(&f.ctx.aws, &moved, false).await.expect("plan").has_work());
}
