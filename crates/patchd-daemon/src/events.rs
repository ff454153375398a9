//! patchd's events: what happened (a window run started or completed, a task failed, a
//! finding became due soon or breached its SLA, a coverage gap was found), published to an
//! EventBridge bus, a signed webhook, both, or nowhere, as `[events]` says.
//!
//! Every event has a detail type (EventBridge's `DetailType`) and a JSON `detail` whose
//! fields are documented on its type here and in `docs/events.md`; every detail names the
//! `account` and `region` it is about. EventBridge events have source `patchd`.
//!
//! Events about lasting conditions go out once: an SLA event once per finding and level
//! (due soon, then breached), a coverage gap once per instance and kind of gap. The store
//! remembers what was announced ([`Store::claim_announcements`]); an announcement is claimed
//! before it is published, so a publishing failure loses that one event rather than
//! repeating it on every sync (at most once).
//!
//! Publishing never fails a window run or a sync: failures are logged and counted
//! ([`Publisher::stats`]).
//!
//! [`Store::claim_announcements`]: patchd_store::Store::claim_announcements

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use patchd_aws::{AwsClients, EntryRetry, EventEntry, EVENT_SOURCE};
use patchd_config::{Config, Events};
use patchd_sla::{FindingState, KevCatalog, SlaStatus};
use patchd_store::FindingRecord;
use serde::Serialize;
use sha2::Sha256;
use tracing::warn;

// ---------------------------------------------------------------------------------------------
// Events

/// `Window Run Started`: a window occurrence (or a manual run) was recorded and starts its
/// tasks. Not sent again when an interrupted run resumes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRunStarted {
    pub account: String,
    pub region: String,
    /// The name the run is recorded under: the window's, or `manual:...`.
    pub window: String,
    /// The run id patchd writes in every command's `Comment`.
    pub run_id: String,
    /// The store's id of the run.
    pub window_run_id: i64,
    pub scheduled_start: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// Started more than a minute after its scheduled start.
    pub late: bool,
    /// The tasks' names, by priority.
    pub tasks: Vec<String>,
    /// Every group the run patches.
    pub groups: Vec<String>,
}

/// `Window Run Completed`: a run finished every task (not sent for a run stopped by SIGTERM,
/// which resumes at the next start).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowRunCompleted {
    pub account: String,
    pub region: String,
    pub window: String,
    pub run_id: String,
    pub window_run_id: i64,
    pub scheduled_start: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// `succeeded`, `failed`, `cancelled` or `incomplete` (the sync could not read everything).
    pub status: String,
    /// Instances the tasks' groups selected, coverage gaps included.
    pub targeted: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Sent, but SSM could not deliver (instance stopped, agent gone, delivery timeout).
    pub undeliverable: usize,
    /// Coverage gaps plus managed instances never sent a command (cutoff, error budget).
    pub skipped: usize,
    pub duration_seconds: f64,
    pub budget_exceeded: bool,
}

/// `Sync Incomplete`: a compliance sync could not read some instances' results after every
/// retry. They stay in the sync backlog, and the daemon reads them again within minutes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SyncIncomplete {
    pub account: String,
    pub region: String,
    /// What asked for the sync: `window:<window>`, `compliance-poll`, `backlog`, `cli`.
    pub source: String,
    /// Instances the sync was asked to read.
    pub instances: usize,
    /// Instances it could not read.
    pub unread: usize,
    /// The first unread instances (at most 20), for a look at one of them.
    pub sample: Vec<String>,
    /// The last error of the first unread instance.
    pub error: String,
}

/// `Task Failed`: a task of a run ended `Failed` or `TimedOut`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskFailed {
    pub account: String,
    pub region: String,
    pub window: String,
    pub run_id: String,
    pub task: String,
    /// `Scan` or `Install`.
    pub operation: String,
    /// Why, in words: error budget exceeded, invocations failed, targets unknown...
    pub reason: String,
    pub targeted: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub undeliverable: usize,
    pub not_sent: usize,
    pub budget_exceeded: bool,
}

/// `SLA Due Soon` and `SLA Breached`: an open finding reached that status, judged by the SLA
/// engine as `patchd report sla` judges it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaFinding {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub instance_name: Option<String>,
    /// SSM's KBId.
    pub patch_id: String,
    pub title: Option<String>,
    /// The vendor's severity, as SSM reports it.
    pub severity: Option<String>,
    pub cves: Vec<String>,
    /// `critical`, `high`, `medium` or `low`.
    pub rank: String,
    /// Why the finding has its rank.
    pub rank_reason: String,
    /// When the SLA clock started.
    pub clock_start: DateTime<Utc>,
    /// `advisory`, `ssm` or `first-seen` (an estimate: no release date known).
    pub clock_source: String,
    pub due: DateTime<Utc>,
    /// Days from the judgement to the due date, two decimals; negative once breached.
    pub days_left: f64,
    /// `due-soon` or `breached`.
    pub status: String,
    /// SSM's state of the patch on the instance: `MISSING`, `FAILED`, ...
    pub state: String,
    pub first_seen_missing: DateTime<Utc>,
}

/// `Coverage Gap Found`: an instance a task's groups select cannot take commands. Sent once
/// per instance and kind of gap.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CoverageGap {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    /// `not-managed` (no SSM agent registered, or the instance is stopped) or
    /// `agent-offline` (managed, but its agent is not online).
    pub gap: String,
    /// SSM's ping status for `agent-offline`: `ConnectionLost`, `Inactive`.
    pub ping_status: Option<String>,
    pub window: String,
    pub task: String,
    /// The task's groups.
    pub groups: Vec<String>,
}

/// `Leadership Gained` and `Leadership Lost`: this daemon started or ended a term as the one
/// that fires windows among those sharing its database (see `leader.rs`). Alert when gains and
/// losses do not alternate, or when no gain follows a loss within a few lease lifetimes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeadershipChange {
    /// The home account and region, as for every event.
    pub account: String,
    pub region: String,
    pub host: String,
    pub pid: u32,
    /// The term's epoch: it grows by one at every takeover.
    pub epoch: i64,
    /// Why a term ended: `stopped` (SIGTERM; resigned), `taken-over`, `lease-expired`; `gained`
    /// for a new term.
    pub reason: String,
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    WindowRunStarted(WindowRunStarted),
    WindowRunCompleted(WindowRunCompleted),
    TaskFailed(TaskFailed),
    SlaDueSoon(SlaFinding),
    SlaBreached(SlaFinding),
    CoverageGapFound(CoverageGap),
    LeadershipGained(LeadershipChange),
    LeadershipLost(LeadershipChange),
    SyncIncomplete(SyncIncomplete),
}

pub const WINDOW_RUN_STARTED: &str = "Window Run Started";
pub const WINDOW_RUN_COMPLETED: &str = "Window Run Completed";
pub const TASK_FAILED: &str = "Task Failed";
pub const SLA_DUE_SOON: &str = "SLA Due Soon";
pub const SLA_BREACHED: &str = "SLA Breached";
pub const COVERAGE_GAP_FOUND: &str = "Coverage Gap Found";
pub const LEADERSHIP_GAINED: &str = "Leadership Gained";
pub const LEADERSHIP_LOST: &str = "Leadership Lost";
pub const SYNC_INCOMPLETE: &str = "Sync Incomplete";

impl Event {
    /// (subject, level, state) of an event about a lasting condition: what the store
    /// remembers it was announced as. A finding has one subject whatever its status, and a
    /// breach (level 2) supersedes due-soon (level 1).
    pub(crate) fn announcement_key(&self) -> (String, u32, &'static str) {
        let finding_subject =
            |f: &SlaFinding| format!("{}/{}/{}/{}", f.account, f.region, f.instance_id, f.patch_id);
        match self {
            Event::SlaDueSoon(f) => (finding_subject(f), 1, "due-soon"),
            Event::SlaBreached(f) => (finding_subject(f), 2, "breached"),
            Event::CoverageGapFound(g) => {
                let state = if g.gap == "agent-offline" { "agent-offline" } else { "not-managed" };
                (format!("{}/{}/{}/{}", g.account, g.region, g.instance_id, g.gap), 1, state)
            }
            other => (other.detail_type().to_string(), 1, "announced"),
        }
    }

    /// EventBridge's `DetailType`.
    pub fn detail_type(&self) -> &'static str {
        match self {
            Event::WindowRunStarted(_) => WINDOW_RUN_STARTED,
            Event::WindowRunCompleted(_) => WINDOW_RUN_COMPLETED,
            Event::TaskFailed(_) => TASK_FAILED,
            Event::SlaDueSoon(_) => SLA_DUE_SOON,
            Event::SlaBreached(_) => SLA_BREACHED,
            Event::CoverageGapFound(_) => COVERAGE_GAP_FOUND,
            Event::LeadershipGained(_) => LEADERSHIP_GAINED,
            Event::LeadershipLost(_) => LEADERSHIP_LOST,
            Event::SyncIncomplete(_) => SYNC_INCOMPLETE,
        }
    }

    /// The event's `detail`.
    pub fn detail(&self) -> serde_json::Value {
        let value = match self {
            Event::WindowRunStarted(d) => serde_json::to_value(d),
            Event::WindowRunCompleted(d) => serde_json::to_value(d),
            Event::TaskFailed(d) => serde_json::to_value(d),
            Event::SlaDueSoon(d) | Event::SlaBreached(d) => serde_json::to_value(d),
            Event::CoverageGapFound(d) => serde_json::to_value(d),
            Event::LeadershipGained(d) | Event::LeadershipLost(d) => serde_json::to_value(d),
            Event::SyncIncomplete(d) => serde_json::to_value(d),
        };
        // Plain structs of strings, numbers and instants: serialising cannot fail.
        value.unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    fn scope(&self) -> (&str, &str) {
        match self {
            Event::WindowRunStarted(d) => (&d.account, &d.region),
            Event::WindowRunCompleted(d) => (&d.account, &d.region),
            Event::TaskFailed(d) => (&d.account, &d.region),
            Event::SlaDueSoon(d) | Event::SlaBreached(d) => (&d.account, &d.region),
            Event::CoverageGapFound(d) => (&d.account, &d.region),
            Event::LeadershipGained(d) | Event::LeadershipLost(d) => (&d.account, &d.region),
            Event::SyncIncomplete(d) => (&d.account, &d.region),
        }
    }

    /// The webhook's body: an envelope shaped like an EventBridge event, so one consumer can
    /// read both.
    pub fn envelope(&self, id: &str, time: DateTime<Utc>) -> serde_json::Value {
        let (account, region) = self.scope();
        serde_json::json!({
            "version": "0",
            "id": id,
            "detail-type": self.detail_type(),
            "source": EVENT_SOURCE,
            "account": account,
            "time": time.to_rfc3339_opts(SecondsFormat::Secs, true),
            "region": region,
            "resources": [],
            "detail": self.detail(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Publisher

/// Where events go, built from `[events]`. Cheap to clone; the default publishes nothing.
#[derive(Clone, Default)]
pub struct Publisher {
    inner: Option<Arc<Inner>>,
    /// Shared with the publisher a reload replaces ([`Publisher::counting_on`]), so the
    /// counts `/metrics` exports cover the whole process, not only the latest `[events]`.
    counts: Arc<EventCounts>,
}

/// Events published and lost, by every publisher of one process.
#[derive(Debug, Default)]
struct EventCounts {
    published: AtomicU64,
    failed: AtomicU64,
}

struct Inner {
    bus: Option<(AwsClients, String)>,
    webhook: Option<Webhook>,
    retry: EntryRetry,
    due_soon: bool,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The webhook key stays out of logs.
        match &self.inner {
            None => f.write_str("Publisher(none)"),
            Some(inner) => f
                .debug_struct("Publisher")
                .field("bus", &inner.bus.as_ref().map(|(_, bus)| bus))
                .field("webhook", &inner.webhook.as_ref().map(|w| &w.url))
                .field("stats", &self.stats())
                .finish(),
        }
    }
}

/// Events published and lost by this process's publishers, reloads included (per sink: an event sent to both
/// EventBridge and a webhook counts twice).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublisherStats {
    pub published: u64,
    pub failed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error(
        "cannot read the webhook key {} ([events] webhook_secret_file): {source}; create it, readable by patchd",
        path.display()
    )]
    Secret { path: std::path::PathBuf, source: std::io::Error },
    #[error("the webhook key {} ([events] webhook_secret_file) is empty; write a random key into it", path.display())]
    EmptySecret { path: std::path::PathBuf },
    #[error("the webhook client cannot be built: {0}")]
    Client(String),
}

impl Publisher {
    /// A publisher for `[events]`, sending to EventBridge through `aws` (the same SDK
    /// configuration as SSM and EC2). Reads the webhook's key file.
    pub fn from_config(events: &Events, aws: &AwsClients) -> Result<Publisher, PublisherError> {
        let webhook = match (&events.webhook_url, &events.webhook_secret_file) {
            (Some(url), Some(path)) => Some((url.clone(), read_secret(path)?)),
            _ => None,
        };
        let bus = events.bus_name.clone().map(|bus| (aws.clone(), bus));
        Publisher::build(bus, webhook, events.due_soon, EntryRetry::default())
    }

    /// A publisher with explicit sinks and resend policy (tests, demos).
    pub fn build(
        bus: Option<(AwsClients, String)>,
        webhook: Option<(String, Vec<u8>)>,
        due_soon: bool,
        retry: EntryRetry,
    ) -> Result<Publisher, PublisherError> {
        if bus.is_none() && webhook.is_none() {
            return Ok(Publisher::default());
        }
        let webhook = match webhook {
            Some((url, key)) => Some(Webhook::new(url, key)?),
            None => None,
        };
        Ok(Publisher {
            inner: Some(Arc::new(Inner { bus, webhook, retry, due_soon })),
            counts: Arc::default(),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Whether `SLA Due Soon` events are wanted.
    pub fn wants_due_soon(&self) -> bool {
        self.inner.as_ref().is_some_and(|i| i.due_soon)
    }

    pub fn stats(&self) -> PublisherStats {
        PublisherStats {
            published: self.counts.published.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
        }
    }

    /// This publisher, counting into `previous`'s counts: a reloaded `[events]` keeps adding
    /// to the process's totals.
    pub fn counting_on(self, previous: &Publisher) -> Publisher {
        Publisher { counts: previous.counts.clone(), ..self }
    }

    /// Publishes `events` to every sink. Never fails: what could not be published is logged
    /// and counted.
    pub async fn publish(&self, events: &[Event]) {
        let Some(inner) = &self.inner else { return };
        if events.is_empty() {
            return;
        }
        let now = Utc::now();
        if let Some((aws, bus)) = &inner.bus {
            let entries: Vec<EventEntry> = events
                .iter()
                .map(|e| EventEntry {
                    detail_type: e.detail_type().to_string(),
                    detail: e.detail().to_string(),
                    resources: Vec::new(),
                    time: Some(now),
                })
                .collect();
            match aws.put_events(bus, &entries, inner.retry).await {
                Ok(outcome) => {
                    self.counts.published.fetch_add(outcome.event_ids.len() as u64, Ordering::Relaxed);
                    self.counts.failed.fetch_add(outcome.failed.len() as u64, Ordering::Relaxed);
                    for failed in &outcome.failed {
                        warn!(bus = %bus, detail_type = %failed.detail_type, code = %failed.error_code,
                            message = %failed.error_message, "event not published to EventBridge");
                    }
                }
                Err(e) => {
                    // Earlier batches of this call may have gone out; count the rest as lost
                    // at most once by counting what the error left unsent as all.
                    self.counts.failed.fetch_add(entries.len() as u64, Ordering::Relaxed);
                    warn!(bus = %bus, events = entries.len(), error = %e, "events not published to EventBridge");
                }
            }
        }
        if let Some(webhook) = &inner.webhook {
            for event in events {
                let id = uuid::Uuid::new_v4().to_string();
                let body = event.envelope(&id, now).to_string();
                match webhook.post(event.detail_type(), body).await {
                    Ok(()) => {
                        self.counts.published.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(problem) => {
                        self.counts.failed.fetch_add(1, Ordering::Relaxed);
                        warn!(url = %webhook.url, detail_type = event.detail_type(), problem,
                            "event not delivered to the webhook");
                    }
                }
            }
        }
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, PublisherError> {
    let text =
        std::fs::read(path).map_err(|source| PublisherError::Secret { path: path.to_path_buf(), source })?;
    // A trailing newline from `echo` or an editor is not part of the key.
    let key = text.trim_ascii().to_vec();
    if key.is_empty() {
        return Err(PublisherError::EmptySecret { path: path.to_path_buf() });
    }
    Ok(key)
}

// ---------------------------------------------------------------------------------------------
// Webhook

/// The header carrying the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Patchd-Signature";
/// Attempts per webhook delivery (transport errors and 5xx/429 answers are retried).
const WEBHOOK_ATTEMPTS: u32 = 3;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

struct Webhook {
    url: String,
    key: Vec<u8>,
    client: HttpsClient,
}

impl Webhook {
    fn new(url: String, key: Vec<u8>) -> Result<Webhook, PublisherError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(provider)
            .map_err(|e| PublisherError::Client(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector);
        Ok(Webhook { url, key, client })
    }

    async fn post(&self, detail_type: &str, body: String) -> Result<(), String> {
        let signature = format!("sha256={}", hex(&hmac_sha256(&self.key, body.as_bytes())));
        let mut problem = String::new();
        for attempt in 0..WEBHOOK_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let request = http::Request::post(&self.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::USER_AGENT, concat!("patchd/", env!("CARGO_PKG_VERSION")))
                .header(SIGNATURE_HEADER, &signature)
                .header("X-Patchd-Event", detail_type)
                .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
                .map_err(|e| format!("invalid request: {e}"))?;
            match tokio::time::timeout(WEBHOOK_TIMEOUT, self.client.request(request)).await {
                Err(_) => problem = format!("no answer within {} s", WEBHOOK_TIMEOUT.as_secs()),
                Ok(Err(e)) => problem = format!("request failed: {e}"),
                Ok(Ok(response)) => {
                    let status = response.status();
                    if status.is_success() {
                        return Ok(());
                    }
                    problem = format!("answered HTTP {status}");
                    if !(status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS) {
                        return Err(problem);
                    }
                }
            }
        }
        Err(problem)
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`, from the `hmac` crate (RustCrypto).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    // HMAC takes a key of any length (a longer one is hashed first): `new_from_slice` cannot
    // fail for it.
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of every length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An open finding judged at `now` as `patchd report sla` judges it (the same
/// [`patchd_sla::Judge`]): an SLA event when it is due soon or breached (and no exception
/// covers it).
pub fn judge(config: &Config, kev: &KevCatalog, f: &FindingRecord, now: DateTime<Utc>) -> Option<Event> {
    let judge = patchd_sla::Judge { config, kev, at: now };
    let patch = &f.patch;
    let verdict = judge.verdict(&patchd_sla::PatchFacts {
        severity: patch.severity.as_deref(),
        cves: &patch.cve_ids,
        ssm_release: patch.ssm_release,
        advisory_release: patch.advisory_release,
        fleet_first_seen: f.fleet_first_seen_missing,
    });
    let tags: Vec<(&str, &str)> = f.instance.tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let instance = &f.instance;
    let groups =
        patchd_sla::groups_of(config, &instance.account, &instance.region, &instance.instance_id, &tags);
    let (status, _) =
        judge.finding(&verdict, FindingState::Open, &patch.patch_id, &instance.instance_id, &groups);
    if !matches!(status, SlaStatus::Breached | SlaStatus::DueSoon) {
        return None;
    }
    let patchd_sla::PatchVerdict { rank, rank_reason, clock, due, .. } = verdict;
    let detail = SlaFinding {
        account: f.instance.account.clone(),
        region: f.instance.region.clone(),
        instance_id: f.instance.instance_id.clone(),
        instance_name: f.instance.name.clone(),
        patch_id: patch.patch_id.clone(),
        title: patch.title.clone(),
        severity: patch.severity.clone(),
        cves: patch.cve_ids.clone(),
        rank: rank.as_str().to_string(),
        rank_reason,
        clock_start: clock.start,
        clock_source: clock.source.as_str().to_string(),
        due,
        days_left: ((due - now).num_seconds() as f64 / 86_400.0 * 100.0).round() / 100.0,
        status: status.as_str().to_string(),
        state: f.state.as_str().to_string(),
        first_seen_missing: f.first_seen_missing,
    };
    Some(if status == SlaStatus::Breached { Event::SlaBreached(detail) } else { Event::SlaDueSoon(detail) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test cases 1 and 6 (a key longer than the block).
        let mac = hmac_sha256(&[0x0b; 20], b"Hi There");
        assert_eq!(hex(&mac), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        let mac = hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(hex(&mac), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
    }

    #[test]
    fn run_completed_detail_is_documented_json() {
        let event = Event::WindowRunCompleted(WindowRunCompleted {
            account: "default".into(),
            region: "eu-central-1".into(),
            window: "prod-weekly".into(),
            run_id: "4b1c".into(),
            window_run_id: 7,
            scheduled_start: t("2026-11-19T02:00:00Z"),
            started_at: t("2026-11-19T02:00:01Z"),
            ended_at: t("2026-11-19T02:41:10Z"),
            status: "failed".into(),
            targeted: 40,
            succeeded: 36,
            failed: 2,
            undeliverable: 1,
            skipped: 1,
            duration_seconds: 2469.5,
            budget_exceeded: false,
        });
        assert_eq!(event.detail_type(), "Window Run Completed");
        assert_eq!(
            event.detail(),
            serde_json::json!({
                "account": "default", "region": "eu-central-1", "window": "prod-weekly",
                "run_id": "4b1c", "window_run_id": 7,
                "scheduled_start": "2026-11-19T02:00:00Z", "started_at": "2026-11-19T02:00:01Z",
                "ended_at": "2026-11-19T02:41:10Z", "status": "failed",
                "targeted": 40, "succeeded": 36, "failed": 2, "undeliverable": 1, "skipped": 1,
                "duration_seconds": 2469.5, "budget_exceeded": false,
            })
        );
    }

    #[test]
    fn sla_and_gap_details_and_their_announcement_keys() {
        let finding = SlaFinding {
            account: "default".into(),
            region: "us-east-1".into(),
            instance_id: "i-0abc".into(),
            instance_name: Some("web-1".into()),
            patch_id: "ALAS2-2026-0001".into(),
            title: Some("openssl".into()),
            severity: Some("Critical".into()),
            cves: vec!["CVE-2026-0001".into()],
            rank: "critical".into(),
            rank_reason: "vendor severity Critical".into(),
            clock_start: t("2026-10-01T00:00:00Z"),
            clock_source: "ssm".into(),
            due: t("2026-10-31T00:00:00Z"),
            days_left: -3.5,
            status: "breached".into(),
            state: "MISSING".into(),
            first_seen_missing: t("2026-10-02T00:00:00Z"),
        };
        let breached = Event::SlaBreached(finding.clone());
        let detail = breached.detail();
        assert_eq!(breached.detail_type(), "SLA Breached");
        for key in
            ["account", "region", "instance_id", "patch_id", "cves", "rank", "due", "status", "days_left"]
        {
            assert!(detail.get(key).is_some(), "{key} missing from {detail}");
        }
        assert_eq!(detail["due"], "2026-10-31T00:00:00Z");
        assert_eq!(detail["cves"], serde_json::json!(["CVE-2026-0001"]));
        let soon = Event::SlaDueSoon(SlaFinding { status: "due-soon".into(), ..finding });
        let (a, level_a, _) = soon.announcement_key();
        let (b, level_b, _) = breached.announcement_key();
        assert_eq!(a, b, "one subject per finding");
        assert!(level_b > level_a, "a breach supersedes due-soon");

        let gap = Event::CoverageGapFound(CoverageGap {
            account: "default".into(),
            region: "us-east-1".into(),
            instance_id: "i-0def".into(),
            gap: "agent-offline".into(),
            ping_status: Some("ConnectionLost".into()),
            window: "prod".into(),
            task: "scan".into(),
            groups: vec!["web".into()],
        });
        assert_eq!(gap.detail_type(), "Coverage Gap Found");
        assert_eq!(gap.announcement_key().0, "default/us-east-1/i-0def/agent-offline");
        let envelope = gap.envelope("id-1", t("2026-11-01T00:00:00Z"));
        assert_eq!(envelope["source"], "patchd");
        assert_eq!(envelope["detail-type"], "Coverage Gap Found");
        assert_eq!(envelope["detail"]["ping_status"], "ConnectionLost");
    }
}
