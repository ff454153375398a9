//! The HTTP server: one endpoint for SSM (JSON 1.1) and EC2 (Query), plus the `/_sim/`
//! control API, over a single locked [`World`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use rand::Rng;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::catalog::PatchRelease;
use crate::control;
use crate::ec2;
use crate::error::ApiError;
use crate::eventbridge::{self, EventBus, RecordedEvent};
use crate::faults::Faults;
use crate::fleet::AgentState;
use crate::platform::Platform;
use crate::scenario::Scenario;
use crate::ssm;
use crate::stats::{bump, Stats};
use crate::world::{ControlError, World};

const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug)]
pub(crate) struct Shared {
    world: Mutex<World>,
    /// EventBridge's side of the endpoint: what PutEvents recorded.
    bus: Mutex<EventBus>,
}

impl Shared {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock would be a simulator bug; keep serving rather than
        // turn every later request into a panic too.
        self.world.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn bus(&self) -> MutexGuard<'_, EventBus> {
        self.bus.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A read-only view of an instance, for tests and the control API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub platform: String,
    pub operating_system: String,
    pub state: String,
    /// `Online`, `ConnectionLost`, or `None` when the instance has no SSM agent.
    pub agent: Option<String>,
    pub patch_group: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Patches the last Scan/Install reported missing (None before any report).
    pub missing: Option<u32>,
}

impl InstanceView {
    pub(crate) fn of(instance: &crate::fleet::Instance) -> InstanceView {
        InstanceView {
            id: instance.id.clone(),
            name: instance.name().to_string(),
            platform: instance.platform.scenario_name().to_string(),
            operating_system: instance.platform.operating_system().to_string(),
            state: if instance.running { "running" } else { "stopped" }.to_string(),
            agent: instance.agent.map(|a| a.as_str().to_string()),
            patch_group: instance.patch_group().map(str::to_string),
            tags: instance.tags.clone(),
            missing: instance.report.as_ref().map(|r| r.counts.missing),
        }
    }

    pub fn is_managed(&self) -> bool {
        self.state == "running" && self.agent.is_some()
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

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
        let world = tokio::task::spawn_blocking(move || World::new(&scenario))
            .await
            .map_err(|e| std::io::Error::other(format!("building the simulated world failed: {e}")))?;
        let shared = Arc::new(Shared { world: Mutex::new(world), bus: Mutex::default() });
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

    /// Moves the simulated clock forward and processes everything that falls due.
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 4);
        self.shared.world().advance_by(millis);
    }

    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        crate::clock::to_datetime(self.shared.world().sync())
    }

    pub fn set_time_scale(&self, scale: f64) {
        self.shared.world().set_time_scale(scale);
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

/// The service named by the SigV4 credential scope (`Credential=AKID/date/region/SERVICE/aws4_request`).
fn signed_service(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let scope = value.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_string)
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
}

fn classify(headers: &HeaderMap, query: &str, body: &Bytes) -> Service {
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
    if action.is_none() && (is_json || signed_service(headers).as_deref() == Some("ssm")) {
        return Service::Ssm { operation: "!".into() };
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
        return control::handle(&shared, &parts.method, path, &bytes);
    }
    if parts.method != Method::POST && parts.method != Method::GET {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
    }
    let query = parts.uri.query().unwrap_or("");
    let authenticated = has_credentials(&parts.headers, query);
    match classify(&parts.headers, query, &bytes) {
        Service::Ssm { operation } => answer_ssm(&shared, &operation, authenticated, &bytes).await,
        Service::Events { operation } => answer_events(&shared, &operation, authenticated, &bytes).await,
        Service::Ec2 { action, params } => answer_ec2(&shared, action, authenticated, &params).await,
    }
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
    let throttled_at_random = crate::fleet::chance(&mut world.request_rng, faults.throttle_rate);
    if throttled_at_random || !world.throttle.admit(&faults, operation) {
        bump(&mut world.counters.throttled, operation);
        return (Verdict::Throttled, latency);
    }
    if crate::fleet::chance(&mut world.request_rng, faults.error_rate) {
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

async fn answer_ssm(shared: &Shared, operation: &str, authenticated: bool, body: &Bytes) -> Response {
    let (result, request_id, latency) = {
        let mut world = shared.world();
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
                    Ok(value) => world.ssm(operation, &value),
                    Err(e) => {
                        Err(ApiError::new("SerializationException", format!("the body is not JSON: {e}")))
                    }
                }
            }
        };
        if let Err(error) = &result {
            if error.status < 500 && error.code != "ThrottlingException" {
                bump(&mut world.counters.client_errors, counted);
            }
        }
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
async fn answer_events(shared: &Shared, operation: &str, authenticated: bool, body: &Bytes) -> Response {
    let known = eventbridge::OPERATIONS.contains(&operation);
    let counted = if known { operation } else { "UnknownOperation" };
    let (verdict, request_id, latency) = {
        let mut world = shared.world();
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
            Ok(value) => shared.bus().put_events(&value, body.len()),
            Err(e) => Err(ApiError::new("SerializationException", format!("the body is not JSON: {e}"))),
        },
    };
    if let Err(error) = &result {
        if error.status < 500 && error.code != "ThrottlingException" {
            bump(&mut shared.world().counters.client_errors, counted);
        }
    }
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
    shared: &Shared,
    action: Option<String>,
    authenticated: bool,
    params: &[(String, String)],
) -> Response {
    let (result, request_id, latency) = {
        let mut world = shared.world();
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
        if let Err(error) = &result {
            if error.status < 500 && error.code != "RequestLimitExceeded" {
                bump(&mut world.counters.client_errors, &counted);
            }
        }
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

pub(crate) fn json_response(status: StatusCode, value: &impl Serialize) -> Response {
    let body = serde_json::to_string(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Releases a patch through the control API's body.
pub(crate) fn release_from_json(
    world: &mut World,
    body: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let os = body
        .get("os")
        .and_then(|v| v.as_str())
        .ok_or("give \"os\", e.g. AMAZON_LINUX_2 or amazon-linux-2")?;
    let platform = Platform::from_operating_system(os)
        .or_else(|| Platform::from_scenario_name(os))
        .ok_or_else(|| {
            format!(
                "unknown os {os}; use one of {}",
                Platform::ALL.iter().map(|p| p.operating_system()).collect::<Vec<_>>().join(", ")
            )
        })?;
    let text = |key: &str| body.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let cves = match body.get("cves") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or("cves must be strings")?,
        ),
        Some(_) => return Err("cves must be a list of strings".into()),
    };
    let release = PatchRelease {
        severity: text("severity"),
        classification: text("classification"),
        cves,
        package: text("package"),
        title: text("title"),
        needs_reboot: body.get("reboot").and_then(|v| v.as_bool()),
    };
    let id = world.release_patch(platform, &release);
    let patch = world.catalog.find(&id).ok_or("the patch vanished")?;
    Ok(serde_json::json!({
        "id": id,
        "os": platform.operating_system(),
        "title": patch.title,
        "classification": patch.classification,
        "severity": patch.severity,
        "cves": patch.cves,
        "reboot": patch.needs_reboot,
        "released": crate::clock::to_datetime(patch.released_ms).to_rfc3339(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_scope_names_the_service() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKID/20261128/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=abc",
            ),
        );
        assert_eq!(signed_service(&headers).as_deref(), Some("ssm"));
        assert!(has_credentials(&headers, ""));
        assert!(has_credentials(&HeaderMap::new(), "X-Amz-Signature=1"));
        assert!(!has_credentials(&HeaderMap::new(), ""));
    }

    #[test]
    fn classification_by_target_or_form() {
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-target", HeaderValue::from_static("AmazonSSM.ListCommands"));
        assert!(
            matches!(classify(&headers, "", &Bytes::new()), Service::Ssm { operation } if operation == "ListCommands")
        );
        let form = Bytes::from_static(b"Action=DescribeInstances&Version=2016-11-15");
        match classify(&HeaderMap::new(), "", &form) {
            Service::Ec2 { action, params } => {
                assert_eq!(action.as_deref(), Some("DescribeInstances"));
                assert_eq!(params.len(), 2);
            }
            Service::Ssm { .. } | Service::Events { .. } => panic!("form bodies are EC2"),
        }
        let mut other = HeaderMap::new();
        other.insert("x-amz-target", HeaderValue::from_static("AmazonEC2.Foo"));
        assert!(
            matches!(classify(&other, "", &Bytes::new()), Service::Ssm { operation } if operation.starts_with('!'))
        );
    }
}
