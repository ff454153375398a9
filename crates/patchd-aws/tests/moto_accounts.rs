//! patchd-aws's account calls against moto, an implementation of STS and EC2 nobody here
//! wrote: GetCallerIdentity names the account of the credentials, and clients built by
//! assuming a role in another account carry that role's credentials, so they see that
//! account's instances, not the home account's (moto partitions its state by the account of the
//! access key, as AWS does). The fleet simulator's STS is checked against the same answers in
//! its own tests; here the client side is.
//!
//! Without `moto_server` (see .ci/install-test-deps.sh) the test prints why it is skipped and
//! passes, unless PATCHD_REQUIRE_MOTO=1, which makes a missing moto a failure.

#[path = "../../fleet-sim/tests/common/moto.rs"]
mod moto;
#[path = "../../fleet-sim/tests/common/sdk.rs"]
mod sdk;

use aws_sdk_ec2::types::{Filter, ResourceType, Tag, TagSpecification};
use patchd_aws::{AwsClients, AwsError, PatchCommand, RoleToAssume, StaticEndpoint};
use patchd_config::{Aws, Limit, Operation, RebootOption};

const MOTO_HOME_ACCOUNT: &str = "123456789012";
const OTHER_ACCOUNT: &str = "111111111111";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assumed_role_clients_reach_the_other_account() {
    let Some(moto) = moto::server("assumed_role_clients_reach_the_other_account") else { return };
    let url = moto.endpoint_url();
    let aws = Aws { region: Some("us-east-1".into()), max_attempts: 1, ..Aws::default() };
    let home = AwsClients::with_static_credentials(&aws, &StaticEndpoint::simulator(&url));
    assert_eq!(home.account_id().await.expect("GetCallerIdentity"), MOTO_HOME_ACCOUNT);

    let role = RoleToAssume {
        role_arn: &format!("arn:aws:iam::{OTHER_ACCOUNT}:role/patchd"),
        external_id: Some("patchd-moto"),
        session_name: &patchd_aws::session_name("moto-test"),
    };
    let other = home.assuming(&role, "us-east-1").await;
    assert_eq!(other.account_id().await.expect("GetCallerIdentity as the role"), OTHER_ACCOUNT);
    assert_eq!(other.region(), Some("us-east-1"));

    // An instance in the home account: the home clients find it, the role's do not.
    let marker = format!("accounts-{}", std::process::id());
    let ec2 = sdk::ec2_client(&url);
    let image = ec2
        .describe_images()
        .filters(Filter::builder().name("name").values("amzn-ami-hvm-*").build())
        .send()
        .await
        .expect("moto lists its images")
        .images()
        .first()
        .and_then(|i| i.image_id())
        .expect("moto ships an Amazon Linux image")
        .to_string();
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Instance)
        .tags(Tag::builder().key("PatchdTest").value(&marker).build())
        .build();
    let launched = ec2
        .run_instances()
        .image_id(&image)
        .min_count(1)
        .max_count(1)
        .tag_specifications(tags)
        .send()
        .await
        .expect("moto launches an instance");
    let id = launched.instances()[0].instance_id().unwrap().to_string();

    // A command sent with the home clients is the home account's: the role's clients cannot
    // find it. (moto 5.2.5 does not implement DescribeInstanceInformation: it answers 500
    // with a NotImplementedError, so group resolution is covered by the simulator only.)
    let ids = [id];
    let command = PatchCommand {
        operation: Operation::Scan,
        reboot_option: RebootOption::NoReboot,
        snapshot_id: None,
        instance_ids: &ids,
        comment: &marker,
        timeout_seconds: 600,
        max_concurrency: Limit::Count(1),
        max_errors: Limit::Count(0),
        alarm: None,
        hooks: None,
        install_override_list: None,
    };
    let sent = home.send_patch_command(&command).await.expect("SendCommand in the home account");
    home.command(&sent.command_id).await.expect("the home account has the command");
    let elsewhere = other.command(&sent.command_id).await.expect_err("the other account does not");
    assert!(matches!(elsewhere, AwsError::NotFound { .. }), "{elsewhere:?}");

    // The two sets of clients share one call counter: /metrics counts every account's calls.
    let calls = home.call_counts();
    let identity = calls.iter().find(|c| c.operation == "GetCallerIdentity").map(|c| c.calls);
    assert_eq!(identity, Some(2), "{calls:?}");
}
