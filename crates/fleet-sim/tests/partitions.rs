//! Accounts and regions: STS with the real aws-sdk-sts client and aws-config's
//! `AssumeRoleProvider`, and partitions reached through the credentials of a request.
//!
//! The clock is frozen (time scale 0) but starts at the real now, because the SDK compares an
//! assumed role's Expiration with the wall clock and would refresh credentials dated in the
//! past on every call.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_config::sts::AssumeRoleProvider;
use aws_config::BehaviorVersion;
use aws_sdk_sts::types::Credentials as StsCredentials;
use common::sdk::{self, code, message, static_credentials};
use fleet_sim::{AgentState, Partition, Scenario, SimServer};

const PRIMARY: &str = "123456789012";
const SECOND: &str = "210987654321";
const EXTERNAL_ID: &str = "patchd-external-7";
const ROLE: &str = "arn:aws:iam::210987654321:role/patchd-reader";

fn scenario() -> Scenario {
    Scenario::minimal()
        .with_time_scale(0.0)
        .with_partition(
            Partition::new(SECOND, "eu-west-1").with_instances(5).with_seed(7).with_external_id(EXTERNAL_ID),
        )
        .with_partition(Partition::new(SECOND, "us-west-2").with_instances(3).with_seed(8))
}

async fn start(scenario: Scenario) -> SimServer {
    SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("server starts")
}

fn sts(
    server: &SimServer,
    region: &'static str,
    credentials: aws_sdk_sts::config::Credentials,
) -> aws_sdk_sts::Client {
    sdk::client!(aws_sdk_sts, server.endpoint_url(), region, credentials, None)
}

/// The credentials AssumeRole answered, as an SDK credentials value.
fn session(credentials: &StsCredentials) -> aws_sdk_sts::config::Credentials {
    aws_sdk_sts::config::Credentials::new(
        credentials.access_key_id(),
        credentials.secret_access_key(),
        Some(credentials.session_token().to_string()),
        None,
        "assumed",
    )
}

/// An SdkConfig pointing every client at the simulator with static keys.
async fn sdk_config(server: &SimServer, region: &'static str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(static_credentials())
        .endpoint_url(server.endpoint_url())
        .load()
        .await
}

async fn assume_role_provider(server: &SimServer, region: &'static str) -> AssumeRoleProvider {
    AssumeRoleProvider::builder(ROLE)
        .session_name("patchd-test")
        .external_id(EXTERNAL_ID)
        .configure(&sdk_config(server, region).await)
        .build()
        .await
}

fn ec2_with(
    server: &SimServer,
    region: &'static str,
    provider: impl aws_sdk_ec2::config::ProvideCredentials + 'static,
) -> aws_sdk_ec2::Client {
    sdk::client!(aws_sdk_ec2, server.endpoint_url(), region, provider, None)
}

fn ssm_with(
    server: &SimServer,
    region: &'static str,
    provider: impl aws_sdk_ec2::config::ProvideCredentials + 'static,
) -> aws_sdk_ssm::Client {
    sdk::client!(aws_sdk_ssm, server.endpoint_url(), region, provider, None)
}

async fn described_ids(client: &aws_sdk_ec2::Client) -> BTreeSet<String> {
    let output = client.describe_instances().send().await.expect("DescribeInstances answers");
    output
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| i.instance_id().map(str::to_string))
        .collect()
}

async fn managed_ids(client: &aws_sdk_ssm::Client) -> BTreeSet<String> {
    let output =
        client.describe_instance_information().send().await.expect("DescribeInstanceInformation answers");
    output.instance_information_list().iter().filter_map(|i| i.instance_id().map(str::to_string)).collect()
}

fn ids(views: &[fleet_sim::InstanceView]) -> BTreeSet<String> {
    views.iter().map(|v| v.id.clone()).collect()
}

/// Status and body of a plain HTTP/1.1 exchange.
async fn raw(
    server: &SimServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let (status, _, body) = common::http::raw(server, method, path, headers, body).await;
    (status, body)
}

#[tokio::test]
async fn sts_answers_the_real_sdk() {
    let server = start(scenario()).await;
    let client = sts(&server, "us-east-1", static_credentials());

    let me = client.get_caller_identity().send().await.expect("GetCallerIdentity answers");
    assert_eq!(me.account(), Some(PRIMARY));
    assert_eq!(me.arn(), Some("arn:aws:iam::123456789012:user/sim"));
    assert!(me.user_id().is_some_and(|id| id.starts_with("AIDA")), "{:?}", me.user_id());

    let assumed = client
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("run-1")
        .external_id(EXTERNAL_ID)
        .duration_seconds(1800)
        .send()
        .await
        .expect("AssumeRole answers");
    let credentials = assumed.credentials().expect("credentials");
    assert!(credentials.access_key_id().starts_with("ASIA"), "{}", credentials.access_key_id());
    assert!(!credentials.secret_access_key().is_empty() && !credentials.session_token().is_empty());
    let expires = chrono::DateTime::from_timestamp(credentials.expiration().secs(), 0).expect("a time");
    assert_eq!(expires, server.now() + chrono::Duration::seconds(1800), "simulated now + DurationSeconds");
    let user = assumed.assumed_role_user().expect("assumed role user");
    assert_eq!(user.arn(), "arn:aws:sts::210987654321:assumed-role/patchd-reader/run-1");
    assert!(user.assumed_role_id().starts_with("AROA") && user.assumed_role_id().ends_with(":run-1"));

    let as_role = sts(&server, "eu-west-1", session(credentials));
    let them = as_role.get_caller_identity().send().await.expect("GetCallerIdentity as the role");
    assert_eq!(them.account(), Some(SECOND));
    assert_eq!(them.arn(), Some(user.arn()));
    assert_eq!(them.user_id(), Some(user.assumed_role_id()));

    assert_eq!(
        code(
            client.assume_role().role_arn(ROLE).role_session_name("s1").external_id("wrong-id").send().await
        ),
        "AccessDenied"
    );
    let missing = client.assume_role().role_arn(ROLE).role_session_name("run-2").send().await;
    assert_eq!(
        message(missing),
        format!("User: arn:aws:iam::123456789012:user/sim is not authorized to perform: sts:AssumeRole on resource: {ROLE}")
    );
    let elsewhere = "arn:aws:iam::999999999999:role/patchd-reader";
    assert_eq!(
        code(client.assume_role().role_arn(elsewhere).role_session_name("run-3").send().await),
        "AccessDenied"
    );
    // The primary account requires no ExternalId here, and any role name works (there is no IAM).
    let own = client
        .assume_role()
        .role_arn("arn:aws:iam::123456789012:role/any")
        .role_session_name("me")
        .send()
        .await;
    assert_eq!(
        own.expect("assumed into the primary account").assumed_role_user().map(|u| u.arn().to_string()),
        Some("arn:aws:sts::123456789012:assumed-role/any/me".to_string())
    );

    let invalid = client
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("no spaces!")
        .external_id(EXTERNAL_ID)
        .send()
        .await;
    let text = message(client.assume_role().role_arn(ROLE).role_session_name("x").send().await);
    assert_eq!(code(invalid), "ValidationError");
    assert!(text.contains("at 'roleSessionName' failed to satisfy constraint: Member must have length greater than or equal to 2"), "{text}");
    assert_eq!(
        code(client.assume_role().role_arn(ROLE).role_session_name("ok").duration_seconds(60).send().await),
        "ValidationError"
    );
    assert_eq!(
        code(
            client
                .assume_role()
                .role_arn("arn:aws:iam::210987654321:user/patchd")
                .role_session_name("ok")
                .send()
                .await
        ),
        "ValidationError"
    );

    // STS calls count (and would fault) in the caller's partition: static keys in us-east-1.
    let stats = server.stats();
    assert_eq!(stats.calls("GetCallerIdentity"), 1);
    assert_eq!(stats.calls("AssumeRole"), 9);
    let second = server.stats_in(SECOND, "eu-west-1").expect("a defined partition");
    assert_eq!(second.calls("GetCallerIdentity"), 1);
}

#[tokio::test]
async fn sts_errors_use_the_query_envelope() {
    let server = start(Scenario::minimal().with_time_scale(0.0)).await;
    let signed = (
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKID/20261128/us-east-1/sts/aws4_request, SignedHeaders=host, Signature=0",
    );
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let (status, body) =
        raw(&server, "POST", "/", &[signed, form], "Action=GetSessionTokens&Version=2011-06-15").await;
    assert_eq!(status, 400);
    assert!(body.starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidAction</Code>"), "{body}");
    assert!(body.contains("<RequestId>"), "{body}");
    let (status, body) =
        raw(&server, "POST", "/", &[form], "Action=GetCallerIdentity&Version=2011-06-15").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("<Code>MissingAuthenticationToken</Code>"), "{body}");

    server.set_faults(fleet_sim::Faults { error_rate: 1.0, ..fleet_sim::Faults::default() }).expect("faults");
    let (status, body) =
        raw(&server, "POST", "/", &[signed, form], "Action=GetCallerIdentity&Version=2011-06-15").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("<Type>Receiver</Type>"), "{body}");
    assert_eq!(server.stats().failed("GetCallerIdentity"), 1);
}

#[tokio::test]
async fn credentials_pick_the_partition() {
    let server = start(scenario()).await;
    let primary = ids(&server.instances());
    let second = ids(&server.instances_in(SECOND, "eu-west-1"));
    let third = ids(&server.instances_in(SECOND, "us-west-2"));
    assert_eq!((primary.len(), second.len(), third.len()), (10, 5, 3));
    assert!(primary.is_disjoint(&second) && second.is_disjoint(&third));

    let provider =
        aws_sdk_ec2::config::SharedCredentialsProvider::new(assume_role_provider(&server, "eu-west-1").await);
    let ec2 = ec2_with(&server, "eu-west-1", provider.clone());
    assert_eq!(described_ids(&ec2).await, second);
    assert_eq!(managed_ids(&ssm_with(&server, "eu-west-1", provider.clone())).await, second);

    assert_eq!(described_ids(&ec2_with(&server, "us-east-1", static_credentials())).await, primary);
    assert_eq!(managed_ids(&ssm_with(&server, "us-east-1", static_credentials())).await, primary);

    // The region is the SDK's: the same assumed account elsewhere is another fleet, defined or
    // empty; so is the primary account in another region.
    assert_eq!(described_ids(&ec2_with(&server, "us-west-2", provider.clone())).await, third);
    assert!(described_ids(&ec2_with(&server, "ap-south-1", provider)).await.is_empty());
    assert!(described_ids(&ec2_with(&server, "eu-west-1", static_credentials())).await.is_empty());
    let partitions = server.partitions();
    assert_eq!(partitions[0], (PRIMARY.to_string(), "us-east-1".to_string()));
    assert!(partitions.contains(&(SECOND.to_string(), "ap-south-1".to_string())), "{partitions:?}");
    assert!(partitions.contains(&(PRIMARY.to_string(), "eu-west-1".to_string())), "{partitions:?}");

    // Each of the four clients on the provider assumed the role once and its identity cache
    // served its later calls. The provider's STS client signs with static keys for the SDK
    // config's region, so those calls count in the primary account's eu-west-1.
    assert_eq!(server.stats_in(PRIMARY, "eu-west-1").map(|s| s.calls("AssumeRole")), Some(4));
    assert_eq!(server.stats().calls("AssumeRole"), 0);
    assert_eq!(server.stats().calls("DescribeInstances"), 1);
    assert_eq!(server.stats_in(SECOND, "eu-west-1").map(|s| s.calls("DescribeInstances")), Some(1));

    let (status, body) =
        raw(&server, "GET", &format!("/_sim/instances?account={SECOND}&region=eu-west-1"), &[], "").await;
    assert_eq!(status, 200);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&body).expect("JSON");
    assert_eq!(
        listed.iter().filter_map(|v| v["id"].as_str().map(str::to_string)).collect::<BTreeSet<_>>(),
        second
    );
    let (_, body) =
        raw(&server, "GET", "/_sim/instances?account=999999999999&region=eu-west-1", &[], "").await;
    assert_eq!(body, "[]");
}

#[tokio::test]
async fn same_seed_partitions_share_ids_not_state() {
    // The primary is seed 1 with the minimal fleet, and so is the second account's partition.
    let server =
        start(Scenario::minimal().with_time_scale(0.0).with_partition(Partition::new(SECOND, "us-east-1")))
            .await;
    let primary = server.instances();
    let twin = server.instances_in(SECOND, "us-east-1");
    assert_eq!(ids(&primary), ids(&twin), "same seed, same instance ids");
    let first = primary[0].id.clone();

    server.set_agent_in(SECOND, "us-east-1", &first, AgentState::ConnectionLost).expect("agent changes");
    assert_eq!(server.instance(&first).and_then(|i| i.agent), Some("Online".to_string()));
    assert_eq!(
        server.instance_in(SECOND, "us-east-1", &first).and_then(|i| i.agent),
        Some("ConnectionLost".to_string())
    );

    let provider = AssumeRoleProvider::builder("arn:aws:iam::210987654321:role/patchd")
        .session_name("twin")
        .configure(&sdk_config(&server, "us-east-1").await)
        .build()
        .await;
    let twin_ssm = ssm_with(&server, "us-east-1", provider);
    let online: Vec<String> = twin.iter().filter(|i| i.id != first).map(|i| i.id.clone()).collect();
    let sent = twin_ssm
        .send_command()
        .document_name("AWS-RunPatchBaseline")
        .set_instance_ids(Some(online.clone()))
        .parameters("Operation", vec!["Install".into()])
        .parameters("RebootOption", vec!["NoReboot".into()])
        .send()
        .await
        .expect("SendCommand in the twin");
    let command_id = sent.command().and_then(|c| c.command_id()).expect("a command id").to_string();
    server.advance(Duration::from_secs(3600));

    let static_ssm = ssm_with(&server, "us-east-1", static_credentials());
    let primary_commands = static_ssm.list_commands().send().await.expect("ListCommands");
    assert!(primary_commands.commands().is_empty(), "the primary never saw the twin's command");
    let missing = |views: &[fleet_sim::InstanceView], id: &str| {
        views.iter().find(|v| v.id == id).and_then(|v| v.missing)
    };
    let twin_after = server.instances_in(SECOND, "us-east-1");
    let primary_after = server.instances();
    assert_eq!(missing(&twin_after, &online[0]), Some(0), "the install ran in the twin");
    assert_eq!(missing(&primary_after, &online[0]), missing(&primary, &online[0]), "and not in the primary");
    let twin_commands = twin_ssm.list_commands().command_id(&command_id).send().await.expect("ListCommands");
    assert_eq!(twin_commands.commands().len(), 1);
    assert_eq!(server.stats().calls("SendCommand"), 0);
    assert_eq!(server.stats_in(SECOND, "us-east-1").map(|s| s.calls("SendCommand")), Some(1));
}

#[tokio::test]
async fn events_record_the_callers_partition() {
    let server = start(scenario()).await;
    let signed = (
        "Authorization",
        "AWS4-HMAC-SHA256 Credential=AKID/20261128/eu-west-1/events/aws4_request, SignedHeaders=host, Signature=0",
    );
    let body = r#"{"Entries":[{"Source":"patchd","DetailType":"Test","Detail":"{}"}]}"#;
    let (status, answer) = raw(
        &server,
        "POST",
        "/",
        &[signed, ("X-Amz-Target", "AWSEvents.PutEvents"), ("Content-Type", "application/x-amz-json-1.1")],
        body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let events = server.events();
    assert_eq!((events[0].account_id.as_str(), events[0].region.as_str()), (PRIMARY, "eu-west-1"));
}

#[tokio::test]
async fn control_clock_advances_sts_time_too() {
    let server = start(scenario()).await;
    let before = server.now();
    server.advance(Duration::from_secs(600));
    let (_, body) = raw(&server, "POST", "/_sim/clock/advance", &[], r#"{"seconds": 60}"#).await;
    assert!(body.contains("time_scale"), "{body}");
    // STS reads the clock every partition shares.
    let assumed = sts(&server, "us-east-1", static_credentials())
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("clock")
        .external_id(EXTERNAL_ID)
        .send()
        .await
        .expect("assumed");
    let expires = assumed.credentials().map(|c| c.expiration().secs()).expect("credentials");
    assert_eq!(expires, (before + chrono::Duration::seconds(660 + 3600)).timestamp());
}

#[test]
fn partitions_in_toml() {
    let scenario = Scenario::from_toml_str(
        r#"
        account_id = "123456789012"
        region = "us-east-1"
        seed = 4
        external_id = "primary-id"
        [[group]]
        name = "web"
        count = 2
        platforms = { amazon-linux-2 = 1 }

        [[partition]]
        account_id = "210987654321"
        region = "eu-west-1"
        seed = 7
        external_id = "second-id"
        [[partition.group]]
        name = "db"
        count = 3
        platforms = { rhel-9 = 1 }

        [[partition]]
        account_id = "210987654321"
        region = "us-west-2"
        "#,
    )
    .expect("valid");
    assert_eq!(scenario.external_id.as_deref(), Some("primary-id"));
    assert_eq!(scenario.partitions.len(), 2);
    let first = &scenario.partitions[0];
    assert_eq!((first.seed, first.instance_count(), first.external_id.as_deref()), (7, 3, Some("second-id")));
    let second = &scenario.partitions[1];
    assert_eq!(
        (second.seed, second.instance_count()),
        (4, 0),
        "seed defaults to the scenario's; no groups, no instances"
    );

    let problems = Scenario::from_toml_str(
        r#"
        [[group]]
        name = "web"
        count = 1
        platforms = { amazon-linux-2 = 1 }
        [[partition]]
        account_id = "123456789012"
        region = "us-east-1"
        [[partition]]
        account_id = "12"
        region = "EU"
        external_id = "x"
        [[partition.group]]
        name = "a"
        count = 1
        platforms = { centos-7 = 1 }
        "#,
    )
    .expect_err("invalid")
    .problems()
    .join("\n");
    for expected in [
        "defined twice",
        "12 digits",
        "not a region name",
        "external_id must be",
        "partition[1].group[0] (a): unknown platform",
    ] {
        assert!(problems.contains(expected), "missing {expected:?} in:\n{problems}");
    }
}

#[tokio::test]
async fn conflicting_partitions_are_refused_at_start() {
    let duplicate = Scenario::minimal().with_partition(Partition::new("123456789012", "us-east-1"));
    let error =
        SimServer::start("127.0.0.1:0".parse().expect("address"), duplicate).await.expect_err("refused");
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("defined twice"), "{error}");
}

/// moto's STS answers parse with the same SDK calls (shape only: moto has no partitions).
#[tokio::test]
async fn moto_sts_parses_like_the_simulator() {
    let Some(moto) = common::moto::server("moto_sts_parses_like_the_simulator") else { return };
    let client = sdk::client!(aws_sdk_sts, moto.endpoint_url(), "us-east-1", static_credentials(), None);
    let me = client.get_caller_identity().send().await.expect("moto GetCallerIdentity");
    assert!(me.account().is_some_and(|a| a.len() == 12) && me.arn().is_some() && me.user_id().is_some());
    let assumed = client
        .assume_role()
        .role_arn(ROLE)
        .role_session_name("run-1")
        .external_id(EXTERNAL_ID)
        .send()
        .await
        .expect("moto AssumeRole");
    let credentials = assumed.credentials().expect("credentials");
    assert!(!credentials.access_key_id().is_empty() && !credentials.session_token().is_empty());
    assert_eq!(
        assumed.assumed_role_user().map(|u| u.arn()),
        Some("arn:aws:sts::210987654321:assumed-role/patchd-reader/run-1")
    );
}
