//! `deploy/iam-policy.json` grants exactly the AWS actions this crate's code calls: every
//! SDK call in `src/*.rs` must be allowed (or patchd fails with AccessDenied in production),
//! and every allowed action must be called (or the policy grants more than patchd needs).
//!
//! The calls are found by reading the source: a client field (`ssm`, `ec2`, `events`, `sts`)
//! followed by an operation and, in the same statement, `.send()`. Every `.send()` in the
//! source must be accounted for that way, so a call through a client under another name fails
//! this test instead of escaping it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Client field or variable name → IAM service prefix.
const CLIENTS: &[(&str, &str)] =
    &[("ssm", "ssm"), ("ec2", "ec2"), ("events", "events"), ("sts", "sts"), ("s3", "s3")];

/// Operations whose IAM action is not the operation name in PascalCase, by SDK method name.
/// Title-casing gets the rest right, `list_tags_for_resource` → `ListTagsForResource` included.
const IRREGULAR: &[(&str, &str)] = &[("assume_role_with_saml", "AssumeRoleWithSAML")];

/// Actions the policy grants that no fluent call in this crate makes, each with the reason.
/// Keep this list short: every entry is a permission the test cannot tie to code.
const IMPLIED: &[(&str, &str)] = &[
    (
        "sts:AssumeRole",
        "made by aws-config's credential chain, not by a fluent call: a profile with `role_arn` \
         (`[aws] profile`) assumes its role with patchd's base credentials, and `[[aws.account]] \
         role_arn` names the roles patchd assumes in other accounts",
    ),
    (
        "cloudwatch:DescribeAlarms",
        "checked by SSM, not called by patchd: a SendCommand carrying an AlarmConfiguration (a \
         wave gate's `alarm`) needs the caller to be allowed to read the alarm's state",
    ),
];

/// Actions the code calls that IAM never checks, each with the reason: granting them would be
/// noise in a least-privilege policy.
const UNCHECKED: &[(&str, &str)] = &[(
    "sts:GetCallerIdentity",
    "AWS documents that no permission is required for it (an explicit deny cannot block it); \
     patchd calls it once per account at start-up to learn the 12-digit account id",
)];

/// A call found in the source.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Call {
    action: String,
    file: String,
    line: usize,
}

fn snake_to_pascal(snake: &str) -> String {
    if let Some((_, action)) = IRREGULAR.iter().find(|(s, _)| *s == snake) {
        return (*action).to_string();
    }
    snake
        .split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// The source with comment lines blanked (line numbers kept), so documentation that shows
/// a call is not mistaken for one.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| if line.trim_start().starts_with("//") { "" } else { line })
        .collect::<Vec<_>>()
        .join("\n")
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset].matches('\n').count() + 1
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier starting at `at`, if any.
fn ident_at(text: &str, at: usize) -> &str {
    let end = text[at..].bytes().position(|b| !is_ident(b)).map_or(text.len(), |n| at + n);
    &text[at..end]
}

fn skip_space(text: &str, mut at: usize) -> usize {
    while text.as_bytes().get(at).is_some_and(|b| b.is_ascii_whitespace()) {
        at += 1;
    }
    at
}

/// `request` when the statement that ends `text` starts `let mut request =`.
fn bound_name(text: &str) -> Option<&str> {
    let start = text.rfind([';', '{', '}']).map_or(0, |n| n + 1);
    let rest = text[start..].trim_start().strip_prefix("let ")?.trim_start();
    let rest = rest.strip_prefix("mut ").unwrap_or(rest).trim_start();
    let name = ident_at(rest, 0);
    (!name.is_empty() && rest[name.len()..].trim_start().starts_with('=')).then_some(name)
}

/// Finds the SDK calls in one file. Returns the calls and the offsets of `.send()`s that no
/// call accounts for.
fn scan(file: &str, text: &str) -> (Vec<Call>, Vec<usize>) {
    let code = code_of(text);
    let bytes = code.as_bytes();
    let sends: Vec<usize> = code.match_indices(".send()").map(|(i, _)| i).collect();
    let mut claimed = BTreeSet::new();
    let mut calls = Vec::new();
    for (client, service) in CLIENTS {
        for (start, _) in code.match_indices(client) {
            let end = start + client.len();
            // The whole identifier `ssm`, not `ssm_client` or `my_ssm`.
            if (start > 0 && is_ident(bytes[start - 1])) || bytes.get(end).is_some_and(|&b| is_ident(b)) {
                continue;
            }
            let dot = skip_space(&code, end);
            if bytes.get(dot) != Some(&b'.') {
                continue;
            }
            let at = skip_space(&code, dot + 1);
            let method = ident_at(&code, at);
            if method.is_empty() || bytes.get(skip_space(&code, at + method.len())) != Some(&b'(') {
                continue;
            }
            // An operation is sent in the same statement, or later through the variable the
            // statement binds the request to; `ssm.config()` and the like are not sent.
            let statement_end = code[at..].find(';').map_or(code.len(), |n| at + n);
            let sent_here = sends.iter().find(|&&s| s > at && s < statement_end);
            let sent_later = || {
                let name = bound_name(&code[..start])?;
                sends.iter().find(|&&s| s > statement_end && code[..s].trim_end().ends_with(name)).copied()
            };
            let Some(send) = sent_here.copied().or_else(sent_later) else { continue };
            claimed.insert(send);
            calls.push(Call {
                action: format!("{service}:{}", snake_to_pascal(method)),
                file: file.to_string(),
                line: line_at(&code, start),
            });
        }
    }
    let unclaimed = sends.into_iter().filter(|s| !claimed.contains(s)).collect();
    (calls, unclaimed)
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every SDK call in `src/*.rs`, by action.
fn calls_in_source() -> BTreeMap<String, Vec<Call>> {
    let src = crate_dir().join("src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src)
        .expect("read src/")
        .map(|e| e.expect("read src/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    let mut by_action: BTreeMap<String, Vec<Call>> = BTreeMap::new();
    let mut unattributed = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("read source file");
        let name = format!("src/{}", path.file_name().unwrap().to_string_lossy());
        let (calls, unclaimed) = scan(&name, &text);
        for call in calls {
            by_action.entry(call.action.clone()).or_default().push(call);
        }
        unattributed
            .extend(unclaimed.into_iter().map(|at| format!("{name}:{}", line_at(&code_of(&text), at))));
    }
    assert!(
        unattributed.is_empty(),
        "`.send()` calls the scanner cannot tie to a client it knows ({}): {unattributed:#?}\n\
         name the client `ssm`, `ec2`, `events` or `sts`, or teach CLIENTS in this test the new one",
        CLIENTS.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
    );
    by_action
}

/// Statements of the home policy that the role patchd assumes in another account does not
/// need, each with the reason.
const HOME_ONLY: &[(&str, &str)] = &[
    (
        "AssumeConfiguredAccountRoles",
        "patchd assumes member roles from the home account and never chains roles",
    ),
    (
        "PublishToPatchdEventBus",
        "every account's events go to the home account's bus, published with home credentials",
    ),
];

fn policy() -> Value {
    deploy_json("iam-policy.json")
}

fn deploy_json(name: &str) -> Value {
    let path = crate_dir().join("../../deploy").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    }
}

fn statements(policy: &Value) -> Vec<&Value> {
    policy["Statement"].as_array().expect("Statement is an array").iter().collect()
}

/// Action → the statements (by Sid) that allow it.
fn policy_actions(policy: &Value) -> BTreeMap<String, Vec<String>> {
    let mut actions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for statement in statements(policy) {
        let sid = statement["Sid"].as_str().unwrap_or_default().to_string();
        for action in strings(&statement["Action"]) {
            actions.entry(action).or_default().push(sid.clone());
        }
    }
    actions
}

fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    statements(policy)
        .into_iter()
        .find(|s| s["Sid"] == sid)
        .unwrap_or_else(|| panic!("the policy has no statement `{sid}`"))
}

#[test]
fn the_policy_grants_exactly_what_the_code_calls() {
    let policy = policy();
    let granted = policy_actions(&policy);
    let called = calls_in_source();
    let mut problems = Vec::new();
    for (action, calls) in &called {
        if !granted.contains_key(action) && !UNCHECKED.iter().any(|(a, _)| a == action) {
            let at: Vec<String> = calls.iter().map(|c| format!("{}:{}", c.file, c.line)).collect();
            problems.push(format!(
                "missing: {action} is called at {} but the policy does not allow it",
                at.join(", ")
            ));
        }
    }
    for (action, sids) in &granted {
        if !called.contains_key(action) && !IMPLIED.iter().any(|(a, _)| a == action) {
            problems.push(format!(
                "over-privilege: {action} (statement {}) is allowed but src/ never calls it",
                sids.join(", ")
            ));
        }
    }
    for (action, _) in UNCHECKED {
        if granted.contains_key(*action) {
            problems.push(format!("{action} needs no permission: leave it out of the policy"));
        }
        if !called.contains_key(*action) {
            problems.push(format!(
                "{action} is listed as unchecked but src/ never calls it: drop it from UNCHECKED"
            ));
        }
    }
    for (action, why) in IMPLIED {
        if !granted.contains_key(*action) {
            problems.push(format!("missing: {action}, needed because it is {why}"));
        }
    }
    assert!(problems.is_empty(), "deploy/iam-policy.json and src/ disagree:\n  {}", problems.join("\n  "));
}

#[test]
fn the_policies_are_well_formed() {
    assert_well_formed(&policy());
    assert_well_formed(&deploy_json("iam-member-policy.json"));
}

#[test]
fn the_member_policy_is_the_home_policy_less_what_only_home_does() {
    let home = policy();
    let member = deploy_json("iam-member-policy.json");
    let expected: Vec<&Value> = statements(&home)
        .into_iter()
        .filter(|s| !HOME_ONLY.iter().any(|(sid, _)| s["Sid"] == *sid))
        .collect();
    for (sid, _) in HOME_ONLY {
        assert!(
            statements(&home).iter().any(|s| s["Sid"] == *sid),
            "HOME_ONLY names `{sid}`, which deploy/iam-policy.json no longer has"
        );
    }
    assert_eq!(
        statements(&member),
        expected,
        "deploy/iam-member-policy.json must be deploy/iam-policy.json without {:?}, statement for statement",
        HOME_ONLY.iter().map(|(sid, _)| *sid).collect::<Vec<_>>()
    );
}

#[test]
fn the_member_trust_policy_admits_only_the_home_role_with_the_external_id() {
    let trust = deploy_json("iam-member-trust-policy.json");
    assert_eq!(trust["Version"], "2012-10-17");
    let statements = statements(&trust);
    assert_eq!(statements.len(), 1, "one statement: {trust:#}");
    let only = statements[0];
    assert_eq!(only["Effect"], "Allow");
    assert_eq!(strings(&only["Action"]), ["sts:AssumeRole"]);
    let principal = strings(&only["Principal"]["AWS"]);
    assert_eq!(principal, ["arn:aws:iam::${HOME_ACCOUNT_ID}:role/patchd"]);
    assert_eq!(only["Condition"]["StringEquals"]["sts:ExternalId"], "${EXTERNAL_ID}");
    // The home policy may assume that role name in any account, and no other role name.
    let home = policy();
    let assume = statement(&home, "AssumeConfiguredAccountRoles");
    assert_eq!(strings(&assume["Resource"]), ["arn:aws:iam::*:role/patchd"]);
}

fn assert_well_formed(policy: &Value) {
    assert_eq!(policy["Version"], "2012-10-17");
    let mut sids = BTreeSet::new();
    for statement in statements(policy) {
        let sid = statement["Sid"].as_str().expect("every statement has a Sid");
        assert!(
            !sid.is_empty() && sid.bytes().all(|b| b.is_ascii_alphanumeric()),
            "Sid `{sid}`: [A-Za-z0-9]+"
        );
        assert!(sids.insert(sid), "Sid `{sid}` is used twice");
        assert_eq!(statement["Effect"], "Allow", "{sid}");
        let actions = strings(&statement["Action"]);
        assert!(!actions.is_empty(), "{sid} allows no action");
        for action in &actions {
            assert!(!action.contains('*'), "{sid}: wildcard action `{action}`; list actions one by one");
        }
        assert!(!strings(&statement["Resource"]).is_empty(), "{sid} names no resource");
        assert!(statement.get("NotAction").is_none() && statement.get("NotResource").is_none(), "{sid}");
    }
}

/// The restrictions the README promises, so that loosening one is a visible change.
#[test]
fn writes_are_scoped() {
    let policy = policy();
    let send = statement(&policy, "RunPatchBaselineOnEc2Instances");
    assert_eq!(strings(&send["Action"]), ["ssm:SendCommand"]);
    assert_eq!(
        strings(&send["Resource"]),
        [
            "arn:aws:ssm:*::document/AWS-RunPatchBaseline",
            "arn:aws:ssm:*::document/AWS-RunPatchBaselineWithHooks",
            "arn:aws:ec2:*:*:instance/*"
        ]
    );
    let create = statement(&policy, "CreateBaselinesTaggedManagedByPatchd");
    assert_eq!(create["Condition"]["StringEquals"]["aws:RequestTag/managed-by"], "patchd");
    assert_eq!(
        create["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
        serde_json::json!(["managed-by"])
    );
    let owned = statement(&policy, "ChangeOnlyBaselinesManagedByPatchd");
    assert_eq!(owned["Condition"]["StringEquals"]["aws:ResourceTag/managed-by"], "patchd");
    assert_eq!(strings(&owned["Resource"]), ["arn:aws:ssm:*:*:patchbaseline/*"]);
    // Every write that changes a baseline or its patch groups is in the tag-scoped statement.
    for action in [
        "ssm:UpdatePatchBaseline",
        "ssm:DeletePatchBaseline",
        "ssm:RegisterPatchBaselineForPatchGroup",
        "ssm:DeregisterPatchBaselineForPatchGroup",
    ] {
        assert_eq!(policy_actions(&policy)[action], ["ChangeOnlyBaselinesManagedByPatchd"], "{action}");
    }
    let events = statement(&policy, "PublishToPatchdEventBus");
    assert_eq!(strings(&events["Resource"]), ["arn:aws:events:*:*:event-bus/patchd"]);
    assert_eq!(events["Condition"]["StringEquals"]["events:source"], "patchd");
    // Statements on every resource hold only reads, and CancelCommand (no resource type in IAM).
    for statement in statements(&policy) {
        if strings(&statement["Resource"]) != ["*"] || statement.get("Condition").is_some() {
            continue;
        }
        for action in strings(&statement["Action"]) {
            let name = action.split_once(':').map_or("", |(_, n)| n);
            let read = ["Describe", "Get", "List"].iter().any(|p| name.starts_with(p));
            assert!(read || action == "ssm:CancelCommand", "{action} is allowed on every resource");
        }
    }
}

#[test]
fn operation_names_become_actions() {
    for (snake, pascal) in [
        ("describe_instance_patches", "DescribeInstancePatches"),
        ("list_tags_for_resource", "ListTagsForResource"),
        ("get_patch_baseline_for_patch_group", "GetPatchBaselineForPatchGroup"),
        ("put_events", "PutEvents"),
        ("assume_role", "AssumeRole"),
        ("assume_role_with_saml", "AssumeRoleWithSAML"),
    ] {
        assert_eq!(snake_to_pascal(snake), pascal);
    }
}

#[test]
fn the_scanner_reads_calls_the_way_they_are_written() {
    let text = r#"
        /// self.ssm.delete_patch_baseline().send() in a comment is not a call
        let a = self
            .ssm
            .send_command()
            .document_name("AWS-RunPatchBaseline")
            .send()
            .await?;
        let pages = self.ssm.describe_patch_groups().into_paginator().page_size(50).send();
        let b = self.ec2 . describe_instances().send().await;
        let retry = clients.ssm.config().retry_config();
        let ids: Vec<String> = ec2.iter().map(|i| i.id.clone()).collect();
        let c = my_ssm.get_patch_baseline().send().await;
        let mut request = self.ssm.cancel_command().command_id(id);
        if wait { request = request.instance_ids(ids); }
        let d = request.send().await;
    "#;
    let (calls, unclaimed) = scan("x.rs", text);
    let found: Vec<(&str, usize)> = calls.iter().map(|c| (c.action.as_str(), c.line)).collect();
    assert_eq!(
        found,
        [
            ("ssm:SendCommand", 4),
            ("ssm:DescribePatchGroups", 9),
            ("ssm:CancelCommand", 14),
            ("ec2:DescribeInstances", 10)
        ]
    );
    // `my_ssm` is not a client the scanner knows: its `.send()` is reported, not ignored.
    assert_eq!(unclaimed.iter().map(|&at| line_at(&code_of(text), at)).collect::<Vec<_>>(), [13]);
}

#[test]
fn the_scanner_sees_every_client() {
    let called = calls_in_source();
    for action in ["ssm:SendCommand", "ssm:DescribeInstancePatches", "ec2:DescribeInstances"] {
        assert!(called.contains_key(action), "{action} not found in src/: {:#?}", called.keys());
    }
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/events.rs").exists()
            == called.contains_key("events:PutEvents"),
        "src/events.rs and events:PutEvents should come and go together: {:#?}",
        called.keys()
    );
}
