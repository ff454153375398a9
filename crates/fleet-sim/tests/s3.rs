//! The simulator's S3 driven with the real aws-sdk-s3 client (path-style), and
//! AWS-RunPatchBaseline's InstallOverrideList read from it by the simulated nodes.
//!
//! Every test freezes the clock and moves it with `SimServer::advance`.

mod common;

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_ssm::types::{CommandInvocationStatus, PatchComplianceDataState, PatchOrchestratorFilter};
use common::http::raw;
use common::sdk::{self, code};
use fleet_sim::{Scenario, SimServer};
use serde_json::{json, Value};

const START: &str = "2026-11-28T00:00:00Z";
const HOUR: Duration = Duration::from_secs(3600);
const BUCKET: &str = "patch-lists";

async fn start() -> SimServer {
    let start = chrono::DateTime::parse_from_rfc3339(START).expect("valid instant").to_utc();
    let scenario = Scenario::minimal().with_time_scale(0.0).with_start(start);
    SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("server starts")
}

fn s3(server: &SimServer) -> aws_sdk_s3::Client {
    sdk::s3_client(&server.endpoint_url(), "us-east-1")
}

fn ssm(server: &SimServer) -> aws_sdk_ssm::Client {
    let retries = Some(sdk::quick_retries(1));
    sdk::client!(aws_sdk_ssm, server.endpoint_url(), "us-east-1", sdk::static_credentials(), retries)
}

async fn put(client: &aws_sdk_s3::Client, key: &str, body: &str) {
    client
        .put_object()
        .bucket(BUCKET)
        .key(key)
        .content_type("application/x-yaml")
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .expect("PutObject");
}

#[tokio::test]
async fn objects_round_trip_with_etags_checksums_and_listings() {
    let server = start().await;
    let client = s3(&server);
    client.create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");
    let head = client.head_bucket().bucket(BUCKET).send().await.expect("HeadBucket");
    assert_eq!(head.bucket_region(), Some("us-east-1"));

    let body = "patches:\n  - id: 'KB1'\n";
    let uploaded = client
        .put_object()
        .bucket(BUCKET)
        .key("lists/wave 1.yaml")
        .content_type("application/x-yaml")
        .metadata("owner", "patchd")
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .expect("PutObject");
    let etag = format!("\"{}\"", fleet_sim::digest::hex(&fleet_sim::digest::md5(body.as_bytes())));
    assert_eq!(uploaded.e_tag(), Some(etag.as_str()));
    // The SDK sent a CRC32 of the in-memory body, which S3 checks and echoes.
    assert_eq!(
        uploaded.checksum_crc32(),
        Some(fleet_sim::s3::ChecksumAlgorithm::Crc32.compute(body.as_bytes()).as_str())
    );

    let got = client.get_object().bucket(BUCKET).key("lists/wave 1.yaml").send().await.expect("GetObject");
    assert_eq!(got.e_tag(), Some(etag.as_str()));
    assert_eq!(got.content_type(), Some("application/x-yaml"));
    assert_eq!(got.content_length(), Some(body.len() as i64));
    assert_eq!(got.metadata().and_then(|m| m.get("owner")).map(String::as_str), Some("patchd"));
    let modified = got.last_modified().expect("Last-Modified").secs();
    assert_eq!(modified, server.now().timestamp(), "the simulated clock stamps objects");
    let bytes = got.body.collect().await.expect("body").into_bytes();
    assert_eq!(&bytes[..], body.as_bytes());
    assert_eq!(server.s3_object(BUCKET, "lists/wave 1.yaml").as_deref(), Some(body.as_bytes()));

    let head = client.head_object().bucket(BUCKET).key("lists/wave 1.yaml").send().await.expect("HeadObject");
    assert_eq!((head.content_length(), head.e_tag()), (Some(body.len() as i64), Some(etag.as_str())));

    put(&client, "lists/wave 2.yaml", "patches: []\n").await;
    put(&client, "other.txt", "x").await;
    let listed =
        client.list_objects_v2().bucket(BUCKET).prefix("lists/").send().await.expect("ListObjectsV2");
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["lists/wave 1.yaml", "lists/wave 2.yaml"]);
    assert_eq!(listed.key_count(), Some(2));
    let mut pages = client.list_objects_v2().bucket(BUCKET).max_keys(1).into_paginator().send();
    let mut paged = Vec::new();
    while let Some(page) = pages.next().await {
        paged.extend(page.expect("page").contents().iter().filter_map(|o| o.key().map(str::to_string)));
    }
    assert_eq!(paged, ["lists/wave 1.yaml", "lists/wave 2.yaml", "other.txt"]);

    client.delete_object().bucket(BUCKET).key("other.txt").send().await.expect("DeleteObject");
    client.delete_object().bucket(BUCKET).key("other.txt").send().await.expect("deleting twice succeeds");
    let stats = server.stats();
    assert_eq!((stats.calls("PutObject"), stats.calls("GetObject"), stats.calls("DeleteObject")), (3, 1, 2));
    server.shutdown().await;
}

#[tokio::test]
async fn streaming_uploads_arrive_aws_chunked_with_a_trailing_checksum() {
    let server = start().await;
    let client = s3(&server);
    client.create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");
    let path = std::env::temp_dir().join(format!("fleet-sim-s3-{}.yaml", std::process::id()));
    let body: String = (0..5000).map(|n| format!("  - id: 'KB{n}'\n")).collect();
    let body = format!("patches:\n{body}");
    std::fs::write(&path, &body).expect("temp file");
    // A file-backed body has no bytes in memory: the SDK sends it aws-chunked, signing each
    // chunk over http, with the CRC32 in a trailer.
    let stream = ByteStream::from_path(&path).await.expect("stream");
    let uploaded =
        client.put_object().bucket(BUCKET).key("big.yaml").body(stream).send().await.expect("PutObject");
    std::fs::remove_file(&path).ok();
    assert_eq!(
        uploaded.checksum_crc32(),
        Some(fleet_sim::s3::ChecksumAlgorithm::Crc32.compute(body.as_bytes()).as_str())
    );
    assert_eq!(server.s3_object(BUCKET, "big.yaml").as_deref(), Some(body.as_bytes()));
    let got = client.get_object().bucket(BUCKET).key("big.yaml").send().await.expect("GetObject");
    assert_eq!(got.content_encoding(), None, "aws-chunked is a transfer detail, not stored");
    server.shutdown().await;
}

#[tokio::test]
async fn errors_are_the_sdks_typed_errors() {
    let server = start().await;
    let client = s3(&server);
    let missing_bucket = client.get_object().bucket("no-such-bucket").key("k").send().await;
    assert_eq!(code(missing_bucket), "NoSuchBucket");
    assert_eq!(code(client.put_object().bucket("no-such-bucket").key("k").send().await), "NoSuchBucket");
    assert_eq!(code(client.create_bucket().bucket("Not_Valid").send().await), "InvalidBucketName");
    assert_eq!(code(client.create_bucket().bucket("ab").send().await), "InvalidBucketName");
    client.create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");
    // S3 answers its owner 200 again in us-east-1, for legacy compatibility.
    client.create_bucket().bucket(BUCKET).send().await.expect("re-created in us-east-1");

    let error = client.get_object().bucket(BUCKET).key("absent.yaml").send().await.expect_err("no such key");
    assert!(matches!(error.as_service_error(), Some(GetObjectError::NoSuchKey(_))), "{error:?}");
    assert_eq!(error.as_service_error().and_then(|e| e.message()), Some("The specified key does not exist."));
    assert!(error.as_service_error().and_then(|e| e.meta().extra("s3_extended_request_id")).is_some());
    let error = client.head_object().bucket(BUCKET).key("absent.yaml").send().await.expect_err("no such key");
    assert!(matches!(error.as_service_error(), Some(HeadObjectError::NotFound(_))), "{error:?}");
    let error = client.head_bucket().bucket("no-such-bucket").send().await.expect_err("no such bucket");
    assert!(error.as_service_error().is_some_and(|e| e.is_not_found()), "{error:?}");

    let bad_crc = client
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .checksum_crc32("AAAAAA==")
        .body(ByteStream::from_static(b"data"))
        .send()
        .await;
    assert_eq!(code(bad_crc), "BadDigest");
    let bad_md5 = client
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .content_md5(fleet_sim::digest::base64(&fleet_sim::digest::md5(b"other")))
        .body(ByteStream::from_static(b"data"))
        .send()
        .await;
    assert_eq!(code(bad_md5), "BadDigest");
    let good_md5 = client
        .put_object()
        .bucket(BUCKET)
        .key("k")
        .content_md5(fleet_sim::digest::base64(&fleet_sim::digest::md5(b"data")))
        .checksum_sha256(fleet_sim::digest::base64(&fleet_sim::digest::sha256(b"data")))
        .body(ByteStream::from_static(b"data"))
        .send()
        .await;
    assert!(good_md5.is_ok(), "{good_md5:?}");

    // Another region: a location constraint is required, and re-creating is an error there.
    let west = sdk::s3_client(&server.endpoint_url(), "eu-west-1");
    assert_eq!(
        code(west.create_bucket().bucket("west-lists").send().await),
        "IllegalLocationConstraintException"
    );
    let configuration = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest1)
        .build();
    let create =
        || west.create_bucket().bucket("west-lists").create_bucket_configuration(configuration.clone());
    create().send().await.expect("CreateBucket in eu-west-1");
    let again = create().send().await.expect_err("already owned");
    assert!(again.as_service_error().is_some_and(|e| e.is_bucket_already_owned_by_you()), "{again:?}");
    assert_eq!(
        code(client.get_object().bucket("west-lists").key("k").send().await),
        "AuthorizationHeaderMalformed"
    );

    let (status, head, body) = raw(&server, "GET", &format!("/{BUCKET}/k"), &[], "").await;
    assert_eq!(status, 403, "unsigned: {head}");
    assert!(body.contains("<Code>AccessDenied</Code>") && head.contains("x-amz-request-id"), "{body}");
    server.shutdown().await;
}

/// The control API reads what the nodes would read.
#[tokio::test]
async fn the_control_api_shows_buckets_and_objects() {
    let server = start().await;
    let client = s3(&server);
    client.create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");
    put(&client, "a/list.yaml", "patches: []\n").await;
    let (status, _, body) = raw(&server, "GET", "/_sim/s3", &[], "").await;
    let buckets: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(status, 200);
    assert_eq!(
        buckets["buckets"][0],
        json!({"name": BUCKET, "owner": "123456789012", "region": "us-east-1", "objects": 1})
    );
    let (_, _, body) = raw(&server, "GET", &format!("/_sim/s3/{BUCKET}"), &[], "").await;
    let listing: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(listing["objects"][0]["key"], "a/list.yaml");
    let (status, head, body) = raw(&server, "GET", &format!("/_sim/s3/{BUCKET}/a/list.yaml"), &[], "").await;
    assert_eq!((status, body.as_str()), (200, "patches: []\n"));
    assert!(head.contains("content-type: application/x-yaml"), "{head}");
    let (status, _, _) = raw(&server, "GET", &format!("/_sim/s3/{BUCKET}/absent"), &[], "").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

// ----- InstallOverrideList -----

struct Fleet {
    server: SimServer,
    ssm: aws_sdk_ssm::Client,
    s3: aws_sdk_s3::Client,
    /// Approved by the default baseline (released 8 days ago), missing everywhere.
    approved: String,
    /// Released an hour ago: not approved yet, missing everywhere.
    fresh: String,
    fresh_title: String,
}

async fn release(server: &SimServer, title: &str) -> String {
    let body = json!({"os": "AMAZON_LINUX_2", "severity": "Critical", "classification": "Security", "reboot": true, "title": title});
    let (status, _, answer) = raw(
        server,
        "POST",
        "/_sim/patches/release",
        &[("Content-Type", "application/json")],
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).expect("json");
    answer["id"].as_str().expect("id").to_string()
}

async fn fleet() -> Fleet {
    let server = start().await;
    let approved = release(&server, "approved kernel fix").await;
    server.advance(8 * 24 * HOUR);
    let fresh_title = "fresh openssl fix".to_string();
    let fresh = release(&server, &fresh_title).await;
    server.advance(HOUR);
    let s3 = s3(&server);
    s3.create_bucket().bucket(BUCKET).send().await.expect("CreateBucket");
    let ssm = ssm(&server);
    // A scan first, so that compliance reports list both patches.
    let nodes: Vec<String> =
        server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect();
    let scan = ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(nodes))
        .parameters("Operation", vec!["Scan".into()])
        .send()
        .await;
    assert!(scan.is_ok(), "{scan:?}");
    server.advance(HOUR);
    Fleet { server, ssm, s3, approved, fresh, fresh_title }
}

impl Fleet {
    fn nodes(&self) -> Vec<String> {
        self.server.instances().into_iter().filter(|i| i.is_managed()).map(|i| i.id).collect()
    }

    async fn install(&self, targets: &[String], list: &str) -> String {
        let sent = self
            .ssm
            .send_command()
            .document_name("AWS-RunPatchBaseline")
            .set_instance_ids(Some(targets.to_vec()))
            .parameters("Operation", vec!["Install".into()])
            .parameters("InstallOverrideList", vec![list.into()])
            .send()
            .await
            .expect("SendCommand");
        let id = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
        self.server.advance(HOUR);
        id
    }

    /// The state DescribeInstancePatches reports for a patch (by KBId) on a node.
    async fn state(&self, node: &str, kb: &str) -> Option<PatchComplianceDataState> {
        let filter = PatchOrchestratorFilter::builder().key("KBId").values(kb).build();
        let page = self
            .ssm
            .describe_instance_patches()
            .instance_id(node)
            .filters(filter)
            .send()
            .await
            .expect("patches");
        page.patches().first().map(|p| p.state().clone())
    }

    async fn invocation(
        &self,
        command: &str,
        node: &str,
    ) -> aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput {
        self.ssm
            .get_command_invocation()
            .command_id(command)
            .instance_id(node)
            .send()
            .await
            .expect("invocation")
    }
}

#[tokio::test]
async fn an_override_list_installs_exactly_the_listed_patches() {
    let f = fleet().await;
    let nodes = f.nodes();
    let node = &nodes[0];
    assert_eq!(f.state(node, &f.approved).await, Some(PatchComplianceDataState::Missing));
    let list = format!(
        "# wave 1\npatches:\n  -\n    id: '{}'\n    title: \"{}\"\n  - id: 'ALAS2-0000-NOT-HERE'\n",
        f.fresh, f.fresh_title
    );
    put(&f.s3, "wave1.yaml", &list).await;
    let url = format!("s3://{BUCKET}/wave1.yaml");
    let command = f.install(std::slice::from_ref(node), &url).await;

    let invocation = f.invocation(&command, node).await;
    assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Success));
    assert!(invocation.standard_output_content().unwrap_or("").contains(&url), "{invocation:?}");
    // Listed, not approved by the baseline: installed, and reported against the baseline.
    assert_eq!(f.state(node, &f.fresh).await, Some(PatchComplianceDataState::InstalledOther));
    // Approved but not listed: still missing.
    assert_eq!(f.state(node, &f.approved).await, Some(PatchComplianceDataState::Missing));

    let states = f
        .ssm
        .describe_instance_patch_states()
        .instance_ids(node)
        .instance_ids(&nodes[1])
        .send()
        .await
        .expect("states");
    let state = &states.instance_patch_states()[0];
    assert_eq!(state.install_override_list(), Some(url.as_str()));
    assert_eq!(state.operation().as_str(), "Install");
    assert_eq!(
        states.instance_patch_states()[1].install_override_list(),
        None,
        "a node the command did not touch"
    );

    let history = f.server.commands();
    let sent = history.iter().find(|c| c.command_id == command).expect("in the history");
    assert_eq!(sent.parameters.get("InstallOverrideList"), Some(&vec![url.clone()]));
    let (_, _, body) = raw(&f.server, "GET", "/_sim/commands", &[], "").await;
    let commands: Value = serde_json::from_str(&body).expect("json");
    let sent = commands["commands"]
        .as_array()
        .and_then(|all| all.iter().find(|c| c["command_id"] == command.as_str()));
    assert_eq!(
        sent.map(|c| &c["parameters"]),
        Some(&json!({"Operation": ["Install"], "InstallOverrideList": [url]}))
    );

    // A title that does not match the patch's leaves it alone.
    let other = &nodes[1];
    put(&f.s3, "wrong-title.yaml", &format!("patches:\n- id: {}\n  title: not its title\n", f.fresh)).await;
    f.install(std::slice::from_ref(other), &format!("s3://{BUCKET}/wrong-title.yaml")).await;
    assert_ne!(f.state(other, &f.fresh).await, Some(PatchComplianceDataState::InstalledOther));
    assert_eq!(f.state(other, &f.approved).await, Some(PatchComplianceDataState::Missing));

    // Without a list, the same install installs what the baseline approves.
    let plain = f
        .ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .instance_ids(other)
        .parameters("Operation", vec!["Install".into()])
        .send()
        .await
        .expect("SendCommand");
    assert!(plain.command().is_some());
    f.server.advance(HOUR);
    assert_eq!(f.state(other, &f.approved).await, Some(PatchComplianceDataState::Installed));
    let states = f.ssm.describe_instance_patch_states().instance_ids(other).send().await.expect("states");
    assert_eq!(states.instance_patch_states()[0].install_override_list(), None);
    f.server.shutdown().await;
}

#[tokio::test]
async fn a_list_the_node_cannot_use_fails_the_invocation_and_installs_nothing() {
    let f = fleet().await;
    let nodes = f.nodes();
    put(&f.s3, "broken.yaml", &format!("patches:\n  - id: '{}'\n    severity: high\n", f.fresh)).await;
    let cases = [
        (format!("s3://{BUCKET}/absent.yaml"), "NoSuchKey"),
        ("s3://no-such-bucket/list.yaml".to_string(), "NoSuchBucket"),
        ("https://example.com/list.yaml".to_string(), "no network"),
        (format!("s3://{BUCKET}/broken.yaml"), "line 3"),
    ];
    for (node, (url, reason)) in nodes.iter().zip(&cases) {
        let before = f.ssm.describe_instance_patch_states().instance_ids(node).send().await.expect("states");
        let command = f.install(std::slice::from_ref(node), url).await;
        let invocation = f.invocation(&command, node).await;
        assert_eq!(invocation.status(), Some(&CommandInvocationStatus::Failed), "{url}");
        assert_ne!(invocation.response_code(), 0, "{url}");
        let error = invocation.standard_error_content().unwrap_or("");
        assert!(error.contains(url.as_str()) && error.contains(reason), "{url}: {error}");
        assert_eq!(f.state(node, &f.approved).await, Some(PatchComplianceDataState::Missing), "{url}");
        assert_eq!(
            f.state(node, &f.fresh).await.filter(|s| *s != PatchComplianceDataState::Missing),
            None,
            "{url}"
        );
        let after = f.ssm.describe_instance_patch_states().instance_ids(node).send().await.expect("states");
        assert_eq!(
            before.instance_patch_states()[0].operation_end_time(),
            after.instance_patch_states()[0].operation_end_time(),
            "{url}: a failed download reports no compliance"
        );
    }
    f.server.shutdown().await;
}

#[tokio::test]
async fn a_scan_ignores_the_list() {
    let f = fleet().await;
    let node = f.nodes()[0].clone();
    let sent = f
        .ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .instance_ids(&node)
        .parameters("Operation", vec!["Scan".into()])
        .parameters("InstallOverrideList", vec![format!("s3://{BUCKET}/absent.yaml")])
        .send()
        .await
        .expect("SendCommand");
    let command = sent.command().and_then(|c| c.command_id()).expect("id").to_string();
    f.server.advance(HOUR);
    assert_eq!(f.invocation(&command, &node).await.status(), Some(&CommandInvocationStatus::Success));
    let states = f.ssm.describe_instance_patch_states().instance_ids(&node).send().await.expect("states");
    assert_eq!(states.instance_patch_states()[0].install_override_list(), None);
    f.server.shutdown().await;
}
