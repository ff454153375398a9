//! Building the SSM and EC2 clients from `[aws]`. Retries are configured here and only here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_config::{AppName, BehaviorVersion, FrameworkMetadata, Region, SdkConfig};
use aws_sdk_ssm::config::interceptors::FinalizerInterceptorContextRef;
use aws_sdk_ssm::config::retry::RetryConfig;
use aws_sdk_ssm::config::{ConfigBag, Credentials, Intercept, RuntimeComponents, SharedCredentialsProvider};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use patchd_config::{Aws, RetryMode};

use crate::pacing::Pacer;

/// The SSM and EC2 clients patchd uses, sharing one configuration. Cheap to clone.
///
/// Nothing here knows whether the endpoint is AWS or a stand-in such as the fleet simulator:
/// the only difference is the endpoint URL and where the credentials come from.
#[derive(Debug, Clone)]
pub struct AwsClients {
    pub(crate) ssm: aws_sdk_ssm::Client,
    pub(crate) ec2: aws_sdk_ec2::Client,
    /// EventBridge, for [`AwsClients::put_events`](crate::AwsClients::put_events).
    pub(crate) events: aws_sdk_eventbridge::Client,
    /// STS, for [`AwsClients::account_id`](crate::AwsClients::account_id).
    pub(crate) sts: aws_sdk_sts::Client,
    /// S3, for the install lists of promotions ([`AwsClients::put_install_list`](crate::AwsClients::put_install_list)).
    pub(crate) s3: aws_sdk_s3::Client,
    pub(crate) shared: SdkConfig,
    /// Every attempt the SSM and EC2 clients make, by operation; shared by clones.
    calls: CallCounter,
}

impl AwsClients {
    /// Clients from the SDK's default chain (environment, profile files, SSO, web identity,
    /// container and instance credentials), with `[aws]` applied on top:
    ///
    /// - region: `[aws] region`, else the chain (`AWS_REGION`, the profile, instance metadata);
    /// - profile: `[aws] profile`, else `AWS_PROFILE`, else `default`;
    /// - endpoint: `endpoint_override` (the `--endpoint-url` flag), else `[aws] endpoint_url`,
    ///   else the SDK's own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_SSM` / `..._EC2` handling,
    ///   else AWS's regional endpoints;
    /// - retries: `max_attempts` and `retry_mode`, once for every call of both clients.
    ///
    /// Nothing is contacted here; a missing region or credentials surface on the first call
    /// as [`AwsError::Transport`](crate::AwsError::Transport). [`AwsClients::region`] tells
    /// whether a region was found.
    pub async fn new(aws: &Aws, endpoint_override: Option<&str>) -> AwsClients {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(retry_config(aws, Backoff::SDK_DEFAULT))
            .app_name(app_name())
            .framework_metadata(framework_metadata());
        if let Some(region) = &aws.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(profile) = &aws.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = endpoint_override.or(aws.endpoint_url.as_deref()) {
            loader = loader.endpoint_url(url);
        }
        AwsClients::from_shared(loader.load().await)
    }

    /// Clients for a known endpoint with fixed credentials and nothing read from the
    /// environment or profile files: the fleet simulator in tests, demos and benchmarks.
    /// `[aws]` still supplies the retry settings; `endpoint` may shorten the backoff.
    pub fn with_static_credentials(aws: &Aws, endpoint: &StaticEndpoint<'_>) -> AwsClients {
        let credentials =
            Credentials::new(endpoint.access_key_id, endpoint.secret_access_key, None, None, "patchd-static");
        let shared = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(endpoint.region.to_string()))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .endpoint_url(endpoint.url)
            .retry_config(retry_config(aws, endpoint.backoff))
            .app_name(app_name())
            .framework_metadata(framework_metadata())
            // What aws-config's loader would add; its role provider needs a clock.
            .time_source(aws_smithy_async::time::SystemTimeSource::new())
            .sleep_impl(aws_smithy_async::rt::sleep::TokioSleep::new())
            .build();
        AwsClients::from_shared(shared)
    }

    fn from_shared(shared: SdkConfig) -> AwsClients {
        AwsClients::with_counter(shared, CallCounter::default())
    }

    /// Clients over another configuration (another region, assumed credentials) that count
    /// their calls with these: `/metrics` shows patchd's calls, whatever account they reach.
    pub(crate) fn sibling(&self, shared: SdkConfig) -> AwsClients {
        AwsClients::with_counter(shared, self.calls.clone())
    }

    fn with_counter(shared: SdkConfig, calls: CallCounter) -> AwsClients {
        let ssm = aws_sdk_ssm::Client::from_conf(
            aws_sdk_ssm::config::Builder::from(&shared).interceptor(calls.clone()).build(),
        );
        let ec2 = aws_sdk_ec2::Client::from_conf(
            aws_sdk_ec2::config::Builder::from(&shared).interceptor(calls.clone()).build(),
        );
        let events = aws_sdk_eventbridge::Client::from_conf(
            aws_sdk_eventbridge::config::Builder::from(&shared).interceptor(calls.clone()).build(),
        );
        let sts = aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::config::Builder::from(&shared).interceptor(calls.clone()).build(),
        );
        // An endpoint URL means an S3-compatible service other than AWS's own: those answer
        // path-style requests, and bucket names need not be DNS labels under them.
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(shared.endpoint_url().is_some())
                .interceptor(calls.clone())
                .build(),
        );
        AwsClients { ssm, ec2, events, sts, s3, shared, calls }
    }

    /// API calls made through these clients (and their clones) since they were built, per
    /// operation: every attempt counts, retries included, and attempts AWS refused as
    /// throttled are counted apart too. Sorted by service and operation.
    pub fn call_counts(&self) -> Vec<CallCount> {
        self.calls.snapshot()
    }

    /// The adaptive per-operation pacing these clients (and their clones and siblings) share.
    pub fn pacer(&self) -> &Pacer {
        &self.calls.pacer
    }

    /// The region calls are signed for (and routed to, without an endpoint URL).
    pub fn region(&self) -> Option<&str> {
        self.shared.region().map(Region::as_ref)
    }

    /// The endpoint URL every call goes to, when one was set here or by `AWS_ENDPOINT_URL`.
    pub fn endpoint_url(&self) -> Option<&str> {
        self.shared.endpoint_url()
    }

    /// Attempts per call, first try included, as the SDK applies them.
    pub fn max_attempts(&self) -> u32 {
        self.shared.retry_config().map_or(1, RetryConfig::max_attempts)
    }
}

/// Attempts of one AWS operation, see [`AwsClients::call_counts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCount {
    /// `SSM` or `EC2`, as the SDK names the service.
    pub service: String,
    /// The API's operation name, e.g. `SendCommand`.
    pub operation: String,
    /// Attempts, retries included.
    pub calls: u64,
    /// Attempts answered with a throttling error (HTTP 429, or a throttling error code).
    pub throttled: u64,
}

/// An SDK interceptor on every client: counts each attempt by operation once it completed,
/// and tells the [`Pacer`] whether it was throttled.
#[derive(Debug, Clone, Default)]
struct CallCounter {
    counts: Arc<Mutex<Counts>>,
    pacer: Pacer,
}

/// (service, operation) -> (attempts, throttled attempts).
type Counts = BTreeMap<(String, String), (u64, u64)>;

impl CallCounter {
    fn snapshot(&self) -> Vec<CallCount> {
        let counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        counts
            .iter()
            .map(|((service, operation), &(calls, throttled))| CallCount {
                service: service.clone(),
                operation: operation.clone(),
                calls,
                throttled,
            })
            .collect()
    }

    fn record(&self, service: &str, operation: &str, throttled: bool) {
        self.pacer.observe(operation, throttled);
        let mut counts = self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = counts.entry((service.to_string(), operation.to_string())).or_default();
        entry.0 += 1;
        if throttled {
            entry.1 += 1;
        }
    }
}

/// Error codes AWS services answer a throttled call with (JSON `__type`, Query `<Code>`).
const THROTTLING_CODES: &[&str] = &[
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Whether an HTTP answer is a throttling error: status 429, or an error status whose error
/// code (the `x-amzn-ErrorType` header or the body's `__type` / `<Code>`) is a throttling one.
fn is_throttling(status: u16, error_type: Option<&str>, body: Option<&[u8]>) -> bool {
    if status == 429 {
        return true;
    }
    if status < 400 {
        return false;
    }
    let code_matches = |code: &str| {
        // `x-amzn-ErrorType` and `__type` may carry a namespace or a trailing `:url`.
        let code = code.split(':').next().unwrap_or(code);
        let code = code.rsplit('#').next().unwrap_or(code);
        THROTTLING_CODES.contains(&code.trim())
    };
    if error_type.is_some_and(code_matches) {
        return true;
    }
    let Some(body) = body.and_then(|b| std::str::from_utf8(b).ok()) else { return false };
    THROTTLING_CODES.iter().any(|code| {
        body.contains(&format!("<Code>{code}</Code>"))
            || body.contains(&format!("\"{code}\""))
            || body.contains(&format!("#{code}\""))
    })
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "patchd-call-counter"
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, operation) = match cfg.load::<Metadata>() {
            Some(m) => (m.service().to_string(), m.name().to_string()),
            None => ("unknown".to_string(), "unknown".to_string()),
        };
        let throttled = context.response().is_some_and(|r| {
            is_throttling(r.status().as_u16(), r.headers().get("x-amzn-errortype"), r.body().bytes())
        });
        self.record(&service, &operation, throttled);
        Ok(())
    }
}

/// A fixed endpoint and credentials, see [`AwsClients::with_static_credentials`].
#[derive(Clone, Copy)]
pub struct StaticEndpoint<'a> {
    pub url: &'a str,
    pub region: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub backoff: Backoff,
}

impl<'a> StaticEndpoint<'a> {
    /// The fleet simulator's view of an endpoint: any credentials do, region `us-east-1`,
    /// and the SDK's default backoff.
    pub fn simulator(url: &'a str) -> StaticEndpoint<'a> {
        StaticEndpoint {
            url,
            region: "us-east-1",
            access_key_id: "AKIDPATCHDSIM",
            secret_access_key: "patchd-sim-secret",
            backoff: Backoff::SDK_DEFAULT,
        }
    }
}

impl fmt::Debug for StaticEndpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs even when it is a test one: habits leak.
        f.debug_struct("StaticEndpoint")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"***")
            .field("backoff", &self.backoff)
            .finish()
    }
}

/// The SDK's exponential backoff between attempts: a random share of `initial * 2^n`,
/// capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// What the SDK uses unless told otherwise: 1 s, doubling, at most 20 s.
    pub const SDK_DEFAULT: Backoff =
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(20) };
}

fn retry_config(aws: &Aws, backoff: Backoff) -> RetryConfig {
    let base = match aws.retry_mode {
        RetryMode::Standard => RetryConfig::standard(),
        RetryMode::Adaptive => RetryConfig::adaptive(),
    };
    // The configuration validates 1..=10; a zero would make the SDK refuse every call.
    base.with_max_attempts(aws.max_attempts.max(1))
        .with_initial_backoff(backoff.initial)
        .with_max_backoff(backoff.max)
}

/// `app/patchd` in the user agent, the SDK's supported way to tag an application's calls.
fn app_name() -> AppName {
    AppName::new("patchd").expect("\"patchd\" is a valid app name")
}

/// `lib/patchd/<version>`, so CloudTrail shows which patchd release made a call.
fn framework_metadata() -> FrameworkMetadata {
    FrameworkMetadata::new("patchd", Some(env!("CARGO_PKG_VERSION")))
        .expect("a crate name and semver version are valid user-agent tokens")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws(mode: RetryMode, attempts: u32) -> Aws {
        Aws {
            region: Some("eu-central-1".into()),
            endpoint_url: Some("http://127.0.0.1:9".into()),
            profile: None,
            max_attempts: attempts,
            retry_mode: mode,
            ..patchd_config::Aws::default()
        }
    }

    #[tokio::test]
    async fn aws_section_shapes_the_clients() {
        let clients = AwsClients::new(&aws(RetryMode::Adaptive, 5), None).await;
        assert_eq!(clients.region(), Some("eu-central-1"));
        assert_eq!(clients.endpoint_url(), Some("http://127.0.0.1:9"));
        assert_eq!(clients.max_attempts(), 5);
        let retry = clients.ssm.config().retry_config().expect("retry config set");
        assert_eq!(retry.mode(), aws_sdk_ssm::config::retry::RetryMode::Adaptive);
        assert_eq!(retry.max_attempts(), 5);
        let ec2_retry = clients.ec2.config().retry_config().expect("retry config set");
        assert_eq!(ec2_retry.max_attempts(), 5, "both clients share the one retry setting");
        assert_eq!(clients.ssm.config().app_name().map(|a| a.to_string()).as_deref(), Some("patchd"));
    }

    #[tokio::test]
    async fn the_endpoint_flag_wins_over_the_file() {
        let clients = AwsClients::new(&aws(RetryMode::Standard, 3), Some("http://127.0.0.1:10")).await;
        assert_eq!(clients.endpoint_url(), Some("http://127.0.0.1:10"));
        let retry = clients.ssm.config().retry_config().expect("retry config set");
        assert_eq!(retry.mode(), aws_sdk_ssm::config::retry::RetryMode::Standard);
    }

    #[test]
    fn throttling_answers_are_told_apart() {
        assert!(is_throttling(429, None, None));
        assert!(!is_throttling(200, None, Some(b"ThrottlingException")));
        assert!(is_throttling(400, Some("ThrottlingException:http://internal.amazon.com/"), None));
        assert!(is_throttling(
            400,
            None,
            Some(br#"{"__type":"com.amazonaws.ssm#ThrottlingException","message":"Rate exceeded"}"#)
        ));
        assert!(is_throttling(400, None, Some(br#"{"__type":"ThrottlingException"}"#)));
        assert!(is_throttling(
            503,
            None,
            Some(b"<Response><Errors><Error><Code>RequestLimitExceeded</Code></Error></Errors></Response>")
        ));
        assert!(!is_throttling(400, Some("InvalidInstanceId"), Some(br#"{"__type":"InvalidInstanceId"}"#)));
    }

    #[test]
    fn calls_are_counted_by_operation() {
        let counter = CallCounter::default();
        counter.record("SSM", "SendCommand", false);
        counter.record("SSM", "SendCommand", true);
        counter.record("EC2", "DescribeInstances", false);
        let counts = counter.clone().snapshot();
        assert_eq!(counts.len(), 2);
        assert_eq!(counts[0].operation, "DescribeInstances");
        assert_eq!((counts[1].calls, counts[1].throttled), (2, 1));
    }

    #[test]
    fn static_endpoints_hide_the_secret() {
        let endpoint = StaticEndpoint::simulator("http://127.0.0.1:1");
        let text = format!("{endpoint:?}");
        assert!(!text.contains(endpoint.secret_access_key), "{text}");
    }
}
