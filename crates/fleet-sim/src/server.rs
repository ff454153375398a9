//! The HTTP server: one endpoint for SSM (JSON 1.1), EventBridge (JSON 1.1), EC2 (Query),
//! STS (Query) and a path-style S3 (REST-XML, see [`crate::s3`]), plus the `/_sim/` control API and the `/feeds/` advisory feeds, over one locked
//! [`World`] per partition.
//!
//! A request's partition is (account, region) from its SigV4 credential scope: the region as
//! signed, the account of the key (an AssumeRole session's account, else the primary one).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::PatchRelease;
use crate::control;
use crate::ec2;
use crate::error::ApiError;
use crate::eventbridge::{self, RecordedEvent};
use crate::faults::Faults;
use crate::feeds::{self, FeedRequest};
use crate::fleet::{AgentState, InstanceView};
use crate::locks::lock;
use crate::partitions::Shared;
use crate::platform::Platform;
use crate::s3::{self, S3Error, S3Request};
use crate::scenario::Scenario;
use crate::ssm;
use crate::stats::{bump, Stats};
use crate::sts;
use crate::world::{ControlError, World};

const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A running simulator. Dropping it stops the server too; [`SimServer::shutdown`] waits for it.
pub struct SimServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl SimServer {
    /// Builds the scenario's world and serves it on `addr` (port 0 picks a free port).
    pub async fn start(addr: SocketAddr, scenario: Scenario) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let problems = scenario.partition_problems();
        if !problems.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("the scenario's partitions are invalid: {}", problems.join("; ")),
            ));
        }
        let shared = tokio::task::spawn_blocking(move || Shared::new(&scenario))
            .await
            .map_err(|e| std::io::Error::other(format!("building the simulated world failed: {e}")))?;
        let shared = Arc::new(shared);
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let (sender, receiver) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = receiver.await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "fleet-sim server stopped with an error");
            }
        });
        Ok(SimServer { addr, shared, shutdown: Some(sender), task: Some(task) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://HOST:PORT`, for an SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.shared.world().stats()
    }

    /// Moves the simulated clock forward and processes everything that falls due, in every
    /// partition.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.shared.advance(millis);
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        crate::clock::to_datetime(self.shared.world().sync())
    }

    /// Changes the clock's speed; every partition shares the clock.
    pub fn set_time_scale(&self, scale: f64) {
        self.shared.set_time_scale(scale);
    }

    /// The primary partition's account (the scenario's `account_id`).
    pub fn account_id(&self) -> &str {
        &self.shared.primary_account
    }

    /// The primary partition's region (the scenario's `region`).
    pub fn region(&self) -> &str {
        &self.shared.primary_region
    }

    /// The instances of one partition; empty for an (account, region) nobody defined or used.
    pub fn instances_in(&self, account_id: &str, region: &str) -> Vec<InstanceView> {
        let Some(world) = self.shared.existing(account_id, region) else { return Vec::new() };
        let mut world = lock(&world);
        world.sync();
        world.instances.iter().map(InstanceView::of).collect()
    }

    /// One instance of one partition.
    pub fn instance_in(&self, account_id: &str, region: &str, id: &str) -> Option<InstanceView> {
        let world = self.shared.existing(account_id, region)?;
        let mut world = lock(&world);
        world.sync();
        world.instance(id).map(InstanceView::of)
    }

    /// The call counters of one partition (`None` if it does not exist yet).
    pub fn stats_in(&self, account_id: &str, region: &str) -> Option<Stats> {
        let world = self.shared.existing(account_id, region)?;
        // Bound first: a guard in the tail expression would outlive `world` (edition 2021).
        let stats = lock(&world).stats();
        Some(stats)
    }

    /// Every partition that exists, defined or made on first use, as (account, region), the
    /// primary first.
    pub fn partitions(&self) -> Vec<(String, String)> {
        let mut keys = Vec::new();
        self.shared.for_each_world(|world| keys.push((world.account_id.clone(), world.region.clone())));
        keys[1..].sort();
        keys
    }

    /// Changes an agent's state in one partition.
    pub fn set_agent_in(
        &self,
        account_id: &str,
        region: &str,
        id: &str,
        state: AgentState,
    ) -> Result<(), ControlError> {
        let world = self
            .shared
            .existing(account_id, region)
            .ok_or_else(|| ControlError::UnknownInstance(id.to_string()))?;
        // Bound first: a guard in the tail expression would outlive `world` (edition 2021).
        let result = lock(&world).set_agent(id, state);
        result
    }

    pub fn instances(&self) -> Vec<InstanceView> {
        let mut world = self.shared.world();
        world.sync();
        world.instances.iter().map(InstanceView::of).collect()
    }

    pub fn instance(&self, id: &str) -> Option<InstanceView> {
        let mut world = self.shared.world();
        world.sync();
        world.instance(id).map(InstanceView::of)
    }

    pub fn set_agent(&self, id: &str, state: AgentState) -> Result<(), ControlError> {
        self.shared.world().set_agent(id, state)
    }

    /// Marks an instance whose agent will not come back after its next reboot (or unmarks it).
    pub fn set_lost_after_reboot(&self, id: &str, lost: bool) -> Result<(), ControlError> {
        self.shared.world().set_lost_after_reboot(id, lost)
    }

    /// Creates or sets a CloudWatch alarm that SendCommand's AlarmConfiguration can name.
    pub fn set_alarm(&self, name: &str, state: crate::alarms::AlarmState) -> Result<(), ControlError> {
        self.shared.world().set_alarm(name, state)
    }

    pub fn alarms(&self) -> Vec<crate::alarms::AlarmView> {
        self.shared.world().alarms()
    }

    /// Replaces the AWS-RunShellScript outcome rules.
    pub fn set_hook_outcomes(&self, rules: Vec<crate::hooks::HookRule>) -> Result<(), ControlError> {
        self.shared.world().set_hook_rules(rules)
    }

    /// Starts or stops an instance (a stopped instance is not a managed node).
    pub fn set_running(&self, id: &str, running: bool) -> Result<(), ControlError> {
        self.shared.world().set_running(id, running)
    }

    pub fn faults(&self) -> Faults {
        self.shared.world().faults.clone()
    }

    pub fn set_faults(&self, faults: Faults) -> Result<(), ControlError> {
        self.shared.world().set_faults(faults)
    }

    /// Releases a patch for `platform` at the simulated now; returns its id.
    pub fn release_patch(&self, platform: Platform, release: &PatchRelease) -> String {
        self.shared.world().release_patch(platform, release)
    }

    /// Every command SendCommand created, in every partition (the primary's first), each
    /// partition's in creation order.
    pub fn commands(&self) -> Vec<crate::commands::CommandView> {
        let mut all = Vec::new();
        self.shared.for_each_world(|world| all.extend(world.command_history()));
        all
    }

    /// The body of an object in the simulator's S3, whichever account owns its bucket.
    /// Creates bucket `name` for the primary account in its region, as its owner would with
    /// CreateBucket (a demo's or a test's bucket, made before anything uses it). An existing
    /// bucket is left as it is.
    pub fn create_bucket(&self, name: &str) {
        let created_ms = self.now().timestamp_millis();
        let (owner, region) = (self.shared.primary_account.clone(), self.shared.primary_region.clone());
        self.shared.s3().buckets.entry(name.to_string()).or_insert(crate::s3::Bucket {
            owner,
            region,
            created_ms,
            objects: Default::default(),
        });
    }

    pub fn s3_object(&self, bucket: &str, key: &str) -> Option<Bytes> {
        self.shared.s3().buckets.get(bucket)?.objects.get(key).map(|o| o.body.clone())
    }

    /// Every event EventBridge's PutEvents accepted, in arrival order.
    pub fn events(&self) -> Vec<RecordedEvent> {
        self.shared.bus().events.clone()
    }

    /// Fails the next `entries` PutEvents entries with `InternalFailure` (a partial failure:
    /// the request succeeds, `FailedEntryCount` counts them).
    pub fn fail_event_entries(&self, entries: u32) {
        self.shared.bus().fail_entries = entries;
    }

    /// Stops accepting connections, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            let _ = sender.send(());
        }
    }
}

fn has_credentials(headers: &HeaderMap, query: &str) -> bool {
    headers.contains_key(header::AUTHORIZATION)
        || query.contains("X-Amz-Signature=")
        || query.contains("X-Amz-Credential=")
}

/// A SigV4 credential scope: `Credential=AKID/date/region/service/aws4_request`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    access_key: String,
    region: String,
    service: String,
}

impl Scope {
    fn parse(credential: &str) -> Option<Scope> {
        let mut parts = credential.split('/');
        let access_key = parts.next()?.to_string();
        let _date = parts.next()?;
        let region = parts.next()?.to_string();
        let service = parts.next()?.to_string();
        Some(Scope { access_key, region, service })
    }
}

/// The credential scope of the `Authorization` header, else of a presigned URL's
/// `X-Amz-Credential`.
fn credential_scope(headers: &HeaderMap, query: &str) -> Option<Scope> {
    if let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let credential = value.split("Credential=").nth(1)?.split([',', ' ']).next()?;
        return Scope::parse(credential);
    }
    if !query.contains("X-Amz-Credential=") {
        return None;
    }
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "X-Amz-Credential")
        .and_then(|(_, v)| Scope::parse(&v))
}

enum Service {
    Ssm {
        operation: String,
    },
    /// EventBridge (`AWSEvents.<Operation>`), on the same endpoint as SSM.
    Events {
        operation: String,
    },
    Ec2 {
        action: Option<String>,
        params: Vec<(String, String)>,
    },
    Sts {
        action: Option<String>,
        params: Vec<(String, String)>,
    },
}

fn classify(headers: &HeaderMap, query: &str, body: &Bytes, signed_service: Option<&str>) -> Service {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        if let Some(operation) = target.strip_prefix("AWSEvents.") {
            return Service::Events { operation: operation.to_string() };
        }
        let operation = target.strip_prefix("AmazonSSM.").unwrap_or(target).to_string();
        let operation = if target.starts_with("AmazonSSM.") { operation } else { format!("!{target}") };
        return Service::Ssm { operation };
    }
    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    let is_json =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("json"));
    if !is_json {
        params.extend(form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())));
    }
    let action = params.iter().find(|(k, _)| k == "Action").map(|(_, v)| v.clone());
    if action.is_none() && (is_json || signed_service == Some("ssm")) {
        return Service::Ssm { operation: "!".into() };
    }
    if signed_service == Some("sts") || action.as_deref().is_some_and(|a| sts::MODEL_ACTIONS.contains(&a)) {
        return Service::Sts { action, params };
    }
    Service::Ec2 { action, params }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large"),
    };
    let path = parts.uri.path();
    if path == "/_sim" || path.starts_with("/_sim/") {
        return control::handle(&shared, &parts.method, path, parts.uri.query().unwrap_or(""), &bytes);
    }
    if feeds::is_feed_path(path) {
        let request = FeedRequest {
            method: parts.method.clone(),
            path: path.to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts.headers.clone(),
        };
        let shared = shared.clone();
        return tokio::task::spawn_blocking(move || feeds::answer(&shared.primary, &shared.feeds, &request))
            .await
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "the feed could not be generated"));
    }
    let query = parts.uri.query().unwrap_or("");
    let authenticated = has_credentials(&parts.headers, query);
    let scope = credential_scope(&parts.headers, query);
    if is_s3(&parts.method, path, &parts.headers, scope.as_ref().map(|s| s.service.as_str())) {
        let (account, region) =
            shared.route(scope.as_ref().map(|s| (s.access_key.as_str(), s.region.as_str())));
        let world = shared.partition(&account, &region);
        let call = S3Call { method: &parts.method, path, query, headers: &parts.headers, body: &bytes };
        return answer_s3(&shared, &world, (&account, &region), authenticated, &call).await;
    }
    if parts.method != Method::POST && parts.method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let service = classify(&parts.headers, query, &bytes, scope.as_ref().map(|s| s.service.as_str()));
    let (account, region) = shared.route(scope.as_ref().map(|s| (s.access_key.as_str(), s.region.as_str())));
    let world = shared.partition(&account, &region);
    match service {
        Service::Ssm { operation } => answer_ssm(&world, &operation, authenticated, &bytes).await,
        Service::Events { operation } => {
            answer_events(&shared, &world, (&account, &region), &operation, authenticated, &bytes).await
        }
        Service::Ec2 { action, params } => answer_ec2(&world, action, authenticated, &params).await,
        Service::Sts { action, params } => {
            let access_key = scope.as_ref().map(|s| s.access_key.as_str());
            answer_sts(&shared, &world, action, authenticated, &params, access_key).await
        }
    }
}

/// S3 is REST: the other services POST (or GET the root, EC2's Query) and SSM names its
/// operation in `X-Amz-Target`, so a signed S3 scope, PUT, HEAD, DELETE or a GET below the
/// root is S3.
fn is_s3(method: &Method, path: &str, headers: &HeaderMap, signed_service: Option<&str>) -> bool {
    if headers.contains_key("x-amz-target") {
        return false;
    }
    if signed_service == Some("s3") {
        return true;
    }
    match *method {
        Method::PUT | Method::HEAD | Method::DELETE => true,
        Method::GET => path != "/",
        _ => false,
    }
}

struct S3Call<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a str,
    headers: &'a HeaderMap,
    body: &'a Bytes,
}

/// S3 calls count and fault in the caller's partition like any other call; the buckets are
/// the server's, one namespace for every account.
async fn answer_s3(
    shared: &Shared,
    world: &Mutex<World>,
    (account, region): (&str, &str),
    authenticated: bool,
    call: &S3Call<'_>,
) -> Response {
    let operation = s3::operation_name(call.method, call.path, call.query);
    let (verdict, request_id, host_id, latency) = {
        let mut world = lock(world);
        let request_id = request_id(&mut world);
        let request_id = request_id.replace('-', "")[..16].to_ascii_uppercase();
        let host_id = crate::digest::base64(&world.request_rng.random::<[u8; 32]>());
        if !authenticated {
            bump(&mut world.counters.calls, operation);
            bump(&mut world.counters.client_errors, operation);
            return s3_error(call.method, &S3Error::access_denied(), &request_id, &host_id);
        }
        let (verdict, latency) = admit(&mut world, operation);
        (verdict, request_id, host_id, latency)
    };
    let result = match verdict {
        Verdict::Throttled => Err(S3Error::slow_down()),
        Verdict::ServerError => Err(S3Error::internal()),
        Verdict::Proceed => {
            let request = S3Request {
                method: call.method,
                path: call.path,
                query: call.query,
                headers: call.headers,
                body: call.body,
                account,
                region,
                now_ms: shared.clock.now(),
            };
            shared.s3().answer(&request)
        }
    };
    if let Err(error) = &result {
        if error.status < 500 && error.code != "SlowDown" {
            bump(&mut lock(world).counters.client_errors, operation);
        }
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match result {
        Ok(answer) => {
            let mut response = Response::new(Body::from(answer.body));
            *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            let headers = response.headers_mut();
            for (name, value) in &answer.headers {
                if let (Ok(name), Ok(value)) =
                    (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value))
                {
                    headers.insert(name, value);
                }
            }
            s3_ids(headers, &request_id, &host_id);
            response
        }
        Err(error) => s3_error(call.method, &error, &request_id, &host_id),
    }
}

fn s3_ids(headers: &mut HeaderMap, request_id: &str, host_id: &str) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amz-request-id"), value);
    }
    if let Ok(value) = HeaderValue::from_str(host_id) {
        headers.insert(HeaderName::from_static("x-amz-id-2"), value);
    }
}

/// S3's `<Error>` document; a HEAD answer carries the status alone, as S3's does.
fn s3_error(method: &Method, error: &S3Error, request_id: &str, host_id: &str) -> Response {
    let head = *method == Method::HEAD;
    let body = if head { String::new() } else { error.xml(request_id, host_id) };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    if !head {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    }
    s3_ids(headers, request_id, host_id);
    response
}

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_string()));
    *response.status_mut() = status;
    response
}

/// What the fault injector decided for one AWS call.
enum Verdict {
    Proceed,
    Throttled,
    ServerError,
}

/// Counts the call and applies throttling and injected errors; returns the added latency.
fn admit(world: &mut World, operation: &str) -> (Verdict, Duration) {
    bump(&mut world.counters.calls, operation);
    let latency = if world.faults.latency_ms > 0 || world.faults.latency_jitter_ms > 0 {
        let jitter = if world.faults.latency_jitter_ms > 0 {
            world.request_rng.random_range(0..=world.faults.latency_jitter_ms)
        } else {
            0
        };
        Duration::from_millis(world.faults.latency_ms + jitter)
    } else {
        Duration::ZERO
    };
    let faults = world.faults.clone();
    let throttled_at_random = crate::random::chance(&mut world.request_rng, faults.throttle_rate);
    if throttled_at_random || !world.throttle.admit(&faults, operation) {
        bump(&mut world.counters.throttled, operation);
        return (Verdict::Throttled, latency);
    }
    if crate::random::chance(&mut world.request_rng, faults.error_rate) {
        bump(&mut world.counters.failed, operation);
        return (Verdict::ServerError, latency);
    }
    (Verdict::Proceed, latency)
}

fn request_id(world: &mut World) -> String {
    world.request_number += 1;
    uuid::Builder::from_random_bytes(world.request_rng.random()).into_uuid().to_string()
}

fn ssm_response(status: u16, body: String, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-amz-json-1.1"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), value);
    }
    response
}

fn ssm_error(error: &ApiError, request_id: &str) -> Response {
    let body = serde_json::json!({ "__type": error.code, "message": error.message }).to_string();
    ssm_response(error.status, body, request_id)
}

async fn answer_ssm(world: &Mutex<World>, operation: &str, authenticated: bool, body: &Bytes) -> Response {
    let (result, request_id, latency) = {
        let mut world = lock(world);
        let request_id = request_id(&mut world);
        let known = ssm::OPERATIONS.contains(&operation);
        let counted = if known { operation } else { "UnknownOperation" };
        if !authenticated {
            bump(&mut world.counters.calls, counted);
            bump(&mut world.counters.client_errors, counted);
            let error = ApiError::new("MissingAuthenticationTokenException", "Missing Authentication Token");
            return ssm_error(&error, &request_id);
        }
        let (verdict, latency) = admit(&mut world, counted);
        let result = match verdict {
            Verdict::Throttled => Err(ApiError::new("ThrottlingException", "Rate exceeded")),
            Verdict::ServerError => {
                Err(ApiError::new("InternalServerError", "An internal error occurred.").with_status(500))
            }
            Verdict::Proceed if !known => Err(ApiError::new(
                "UnknownOperationException",
                match operation.trim_start_matches('!') {
                    "" => "Missing X-Amz-Target header: name the operation, e.g. AmazonSSM.ListCommands"
                        .to_string(),
                    other => format!("Unknown operation {other}"),
                },
            )),
            Verdict::Proceed => {
                world.sync();
                let parsed: Result<serde_json::Value, _> =
                    if body.is_empty() { Ok(serde_json::json!({})) } else { serde_json::from_slice(body) };
                match parsed {
                    Ok(value)
                        if operation == "DescribeInstancePatches"
                            && world.faults.patches_unreadable(&value) =>
                    {
                        // The `unreadable_instances` fault: this instance's patches stay unreadable.
                        bump(&mut world.counters.failed, counted);
                        Err(ApiError::new("InternalServerError", "An internal error occurred.")
                            .with_status(500))
                    }
                    Ok(value) => world.ssm(operation, &value),
                    Err(e) => {
                        Err(ApiError::new("SerializationException", format!("the body is not JSON: {e}")))
                    }
                }
            }
        };
        count_refusal(&mut world, counted, &result, "ThrottlingException");
        (result, request_id, latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match result {
        Ok(text) => {
            tracing::debug!(operation, "ssm call answered");
            ssm_response(200, text, &request_id)
        }
        Err(error) => {
            tracing::debug!(operation, code = %error.code, "ssm call failed");
            ssm_error(&error, &request_id)
        }
    }
}

/// EventBridge speaks the same JSON 1.1 protocol as SSM; calls count and fault like any other.
async fn answer_events(
    shared: &Shared,
    world: &Mutex<World>,
    origin: (&str, &str),
    operation: &str,
    authenticated: bool,
    body: &Bytes,
) -> Response {
    let known = eventbridge::OPERATIONS.contains(&operation);
    let counted = if known { operation } else { "UnknownOperation" };
    let (verdict, request_id, latency) = {
        let mut world = lock(world);
        let request_id = request_id(&mut world);
        if !authenticated {
            bump(&mut world.counters.calls, counted);
            bump(&mut world.counters.client_errors, counted);
            let error = ApiError::new("MissingAuthenticationTokenException", "Missing Authentication Token");
            return ssm_error(&error, &request_id);
        }
        let (verdict, latency) = admit(&mut world, counted);
        (verdict, request_id, latency)
    };
    let result = match verdict {
        Verdict::Throttled => Err(ApiError::new("ThrottlingException", "Rate exceeded")),
        Verdict::ServerError => {
            Err(ApiError::new("InternalException", "An internal error occurred.").with_status(500))
        }
        Verdict::Proceed if !known => {
            Err(ApiError::new("UnknownOperationException", format!("Unknown operation {operation}")))
        }
        Verdict::Proceed => match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(value) => shared.bus().put_events(&value, body.len(), origin),
            Err(e) => Err(ApiError::new("SerializationException", format!("the body is not JSON: {e}"))),
        },
    };
    count_refusal(&mut lock(world), counted, &result, "ThrottlingException");
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match result {
        Ok(text) => ssm_response(200, text, &request_id),
        Err(error) => ssm_error(&error, &request_id),
    }
}

fn ec2_response(status: u16, body: String, request_id: &str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml;charset=UTF-8"));
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), value);
    }
    response
}

async fn answer_ec2(
    world: &Mutex<World>,
    action: Option<String>,
    authenticated: bool,
    params: &[(String, String)],
) -> Response {
    let (result, request_id, latency) = {
        let mut world = lock(world);
        let request_id = request_id(&mut world);
        let counted = match action.as_deref() {
            Some(action) if ec2::ACTIONS.contains(&action) => action.to_string(),
            Some(_) => "UnknownAction".to_string(),
            None => "MissingAction".to_string(),
        };
        if !authenticated {
            bump(&mut world.counters.calls, &counted);
            bump(&mut world.counters.client_errors, &counted);
            let error =
                ApiError::new("MissingAuthenticationToken", "Request is missing Authentication Token")
                    .with_status(401);
            return ec2_response(error.status, ec2::error_xml(&error, &request_id), &request_id);
        }
        let (verdict, latency) = admit(&mut world, &counted);
        let result = match (verdict, action.as_deref()) {
            (Verdict::Throttled, _) => {
                Err(ApiError::new("RequestLimitExceeded", "Request limit exceeded.").with_status(503))
            }
            (Verdict::ServerError, _) => {
                Err(ApiError::new("InternalError", "An internal error has occurred").with_status(500))
            }
            (Verdict::Proceed, None) => {
                Err(ApiError::new("MissingAction", "The request must contain the parameter Action"))
            }
            (Verdict::Proceed, Some(action)) => {
                world.sync();
                world.ec2(action, params, &request_id)
            }
        };
        count_refusal(&mut world, &counted, &result, "RequestLimitExceeded");
        (result, request_id, latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match result {
        Ok(xml) => ec2_response(200, xml, &request_id),
        Err(error) => ec2_response(error.status, ec2::error_xml(&error, &request_id), &request_id),
    }
}

fn sts_response(status: u16, body: String, request_id: &str) -> Response {
    // STS sends `text/xml`, like EC2.
    ec2_response(status, body, request_id)
}

/// STS is one service for all accounts, but its calls count and fault in the caller's
/// partition like any other call.
async fn answer_sts(
    shared: &Shared,
    world: &Mutex<World>,
    action: Option<String>,
    authenticated: bool,
    params: &[(String, String)],
    access_key: Option<&str>,
) -> Response {
    let counted = match action.as_deref() {
        Some(action) if sts::ACTIONS.contains(&action) => action,
        Some(_) => "UnknownAction",
        None => "MissingAction",
    };
    let (verdict, request_id, latency) = {
        let mut world = lock(world);
        let request_id = request_id(&mut world);
        if !authenticated {
            bump(&mut world.counters.calls, counted);
            bump(&mut world.counters.client_errors, counted);
            let error =
                ApiError::new("MissingAuthenticationToken", "Request is missing Authentication Token")
                    .with_status(403);
            return sts_response(error.status, sts::error_xml(&error, &request_id), &request_id);
        }
        let (verdict, latency) = admit(&mut world, counted);
        (verdict, request_id, latency)
    };
    let result = match (verdict, action.as_deref()) {
        (Verdict::Throttled, _) => Err(ApiError::new("Throttling", "Rate exceeded")),
        (Verdict::ServerError, _) => {
            Err(ApiError::new("InternalFailure", "An internal error occurred.").with_status(500))
        }
        (Verdict::Proceed, None) => {
            Err(ApiError::new("MissingAction", "The request must contain the parameter Action"))
        }
        (Verdict::Proceed, Some(action)) => {
            let now = shared.clock.now();
            shared.sts().answer(action, params, access_key, now, &request_id)
        }
    };
    count_refusal(&mut lock(world), counted, &result, "Throttling");
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match result {
        Ok(xml) => sts_response(200, xml, &request_id),
        Err(error) => sts_response(error.status, sts::error_xml(&error, &request_id), &request_id),
    }
}

/// A refusal the caller caused counts as a client error of `operation`; throttling (the
/// service's `throttling_code`) and server faults are the service's, not the caller's.
fn count_refusal<T>(world: &mut World, operation: &str, result: &Result<T, ApiError>, throttling_code: &str) {
    if let Err(error) = result {
        if error.status < 500 && error.code != throttling_code {
            bump(&mut world.counters.client_errors, operation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `unreadable_instances` fault over the wire: DescribeInstancePatches for a listed
    /// instance answers InternalServerError whatever its filters; other instances and other
    /// operations on the same instance answer normally.
    #[tokio::test]
    async fn unreadable_instances_fail_only_their_patch_listings() {
        use aws_sdk_ssm::types::PatchOrchestratorFilter;
        let server = SimServer::start(
            "127.0.0.1:0".parse().expect("address"),
            Scenario::minimal().with_time_scale(0.0),
        )
        .await
        .expect("server");
        let ids: Vec<String> = server.instances().into_iter().map(|i| i.id).collect();
        let (broken, healthy) = (ids[0].clone(), ids[1].clone());
        server
            .set_faults(Faults { unreadable_instances: [broken.clone()].into(), ..Faults::default() })
            .expect("valid faults");
        let config = aws_sdk_ssm::Config::builder()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_ssm::config::Credentials::new("AKID", "SECRET", None, None, "test"))
            .endpoint_url(server.endpoint_url())
            .retry_config(aws_sdk_ssm::config::retry::RetryConfig::disabled())
            .build();
        let ssm = aws_sdk_ssm::Client::from_conf(config);
        let open = PatchOrchestratorFilter::builder().key("State").values("Missing").values("Failed").build();
        for filters in [vec![], vec![open]] {
            let error = ssm
                .describe_instance_patches()
                .instance_id(&broken)
                .set_filters(Some(filters.clone()))
                .send()
                .await
                .expect_err("unreadable");
            let raw = error.raw_response().expect("an HTTP answer");
            assert_eq!(raw.status().as_u16(), 500);
            assert_eq!(aws_sdk_ssm::error::ProvideErrorMetadata::code(&error), Some("InternalServerError"));
            ssm.describe_instance_patches()
                .instance_id(&healthy)
                .set_filters(Some(filters))
                .send()
                .await
                .expect("other instances are readable");
        }
        let states = ssm
            .describe_instance_patch_states()
            .instance_ids(&broken)
            .instance_ids(&healthy)
            .send()
            .await
            .expect("patch states stay readable");
        assert_eq!(states.instance_patch_states().len(), 2);
        let stats = server.stats();
        assert_eq!((stats.calls("DescribeInstancePatches"), stats.failed("DescribeInstancePatches")), (4, 2));
        server.set_faults(Faults::default()).expect("valid faults");
        ssm.describe_instance_patches().instance_id(&broken).send().await.expect("readable once cleared");
    }

    #[test]
    fn credential_scope_names_the_service() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261128/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=abc",
            ),
        );
        let scope = credential_scope(&headers, "").expect("a scope");
        assert_eq!(
            (scope.access_key.as_str(), scope.region.as_str(), scope.service.as_str()),
            ("AKID", "us-east-1", "ssm")
        );
        let presigned = credential_scope(
            &HeaderMap::new(),
            "Action=GetCallerIdentity&X-Amz-Credential=ASIAX%2F20261128%2Feu-west-1%2Fsts%2Faws4_request",
        )
        .expect("a presigned scope");
        assert_eq!((presigned.access_key.as_str(), presigned.region.as_str()), ("ASIAX", "eu-west-1"));
        assert!(has_credentials(&headers, ""));
        assert!(has_credentials(&HeaderMap::new(), "X-Amz-Signature=1"));
        assert!(!has_credentials(&HeaderMap::new(), ""));
    }

    #[test]
    fn classification_by_target_or_form() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", HeaderValue::from_static("AmazonSSM.ListCommands"));
        assert!(
            matches!(classify(&headers, "", &Bytes::new(), None), Service::Ssm { operation } if operation == "ListCommands")
        );
        let form = Bytes::from_static(b"Action=DescribeInstances&Version=2016-11-15");
        match classify(&HeaderMap::new(), "", &form, Some("ec2")) {
            Service::Ec2 { action, params } => {
                assert_eq!(action.as_deref(), Some("DescribeInstances"));
                assert_eq!(params.len(), 2);
            }
            Service::Ssm { .. } | Service::Events { .. } | Service::Sts { .. } => {
                panic!("form bodies are EC2")
            }
        }
        let sts_form = Bytes::from_static(b"Action=GetCallerIdentity&Version=2011-06-15");
        assert!(matches!(classify(&HeaderMap::new(), "", &sts_form, None), Service::Sts { .. }));
        let unknown = Bytes::from_static(b"Action=Frobnicate&Version=2011-06-15");
        assert!(matches!(classify(&HeaderMap::new(), "", &unknown, Some("sts")), Service::Sts { .. }));
        let mut other = HeaderMap::new();
        other.insert("x-amz-target", HeaderValue::from_static("AmazonEC2.Foo"));
        assert!(
            matches!(classify(&other, "", &Bytes::new(), None), Service::Ssm { operation } if operation.starts_with('!'))
        );
    }
}
