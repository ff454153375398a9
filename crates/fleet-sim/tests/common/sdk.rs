//! The real AWS SDK clients the tests drive the simulator (and moto) with: one builder for
//! every service crate, static keys, and the error code or message of a failed call.
#![allow(dead_code)]

use std::time::Duration;

use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::Credentials;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};

/// A client of the service crate `$sdk` (`aws_sdk_ssm`, `aws_sdk_ec2`, `aws_sdk_sts`) for
/// `$endpoint` in `$region`, with `$credentials` (any credentials provider) and `$retry` (an
/// `Option<RetryConfig>`; None keeps the SDK's default). Every service crate has a `Config`
/// builder of its own, with the same methods, hence a macro.
macro_rules! client {
    ($sdk:ident, $endpoint:expr, $region:expr, $credentials:expr, $retry:expr) => {{
        let mut builder = $sdk::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new($region))
            .credentials_provider($credentials)
            .endpoint_url($endpoint);
        builder.set_retry_config($retry);
        $sdk::Client::from_conf(builder.build())
    }};
}
// Not every test binary builds clients of its own.
#[allow(unused_imports)]
pub(crate) use client;

/// Keys that the simulator and moto accept (they accept any).
pub fn static_credentials() -> Credentials {
    Credentials::new("AKID", "SECRET", None, None, "test")
}

/// `attempts` in all, backing off from 1 ms to at most 5 ms: retries that a test can count
/// without waiting for them.
pub fn quick_retries(attempts: u32) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(1))
        .with_max_backoff(Duration::from_millis(5))
}

/// An SSM client for `endpoint` in us-east-1 with static test credentials.
pub fn ssm_client(endpoint: &str) -> aws_sdk_ssm::Client {
    client!(aws_sdk_ssm, endpoint, "us-east-1", static_credentials(), None)
}

/// An EC2 client for `endpoint` in us-east-1 with static test credentials.
pub fn ec2_client(endpoint: &str) -> aws_sdk_ec2::Client {
    client!(aws_sdk_ec2, endpoint, "us-east-1", static_credentials(), None)
}

/// The error code of a failed call of any service crate; `<no error>` when it succeeded.
pub fn code<T, E: ProvideErrorMetadata, R>(result: Result<T, SdkError<E, R>>) -> String {
    match result {
        Ok(_) => "<no error>".to_string(),
        Err(error) => error.code().unwrap_or("<no code>").to_string(),
    }
}

/// The error message of a failed call of any service crate; `<no error>` when it succeeded.
pub fn message<T, E: ProvideErrorMetadata, R>(result: Result<T, SdkError<E, R>>) -> String {
    match result {
        Ok(_) => "<no error>".to_string(),
        Err(error) => error.message().unwrap_or("<no message>").to_string(),
    }
}

/// Every Amazon Linux 2 patch SSM's DescribeAvailablePatches lists, page by page.
pub async fn available_al2_patches(client: &aws_sdk_ssm::Client) -> Vec<aws_sdk_ssm::types::Patch> {
    use aws_sdk_ssm::types::PatchOrchestratorFilter;
    let mut patches = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .describe_available_patches()
            .filters(PatchOrchestratorFilter::builder().key("PRODUCT").values("AmazonLinux2").build())
            .max_results(100)
            .set_next_token(token)
            .send()
            .await
            .expect("DescribeAvailablePatches");
        patches.extend(page.patches().iter().cloned());
        token = page.next_token().map(str::to_string);
        if token.is_none() {
            return patches;
        }
    }
}

/// An S3 client for `endpoint` in `region`, path-style (the simulator serves no virtual-hosted
/// bucket names), with static test credentials and no retries (so a test sees every answer).
pub fn s3_client(endpoint: &str, region: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.to_string()))
        .credentials_provider(static_credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
