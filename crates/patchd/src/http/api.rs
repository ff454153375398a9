//! Readiness and the read-only JSON API.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use chrono::Utc;
use patchd_config::RiskRank;
use patchd_report::render::rfc3339;
use patchd_report::{windows, Filters, Judge, ReportError, Reports};
use patchd_sla::SlaStatus;
use patchd_store::WindowRunQuery;
use serde_json::{json, Value};

use super::state::{HttpState, HEARTBEAT_STALE};
use crate::setup::load_kev;

/// How long a database check may take before readiness fails it.
const DB_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `a=1&b=2` into pairs, percent-decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let text = serde_json::to_string_pretty(body).unwrap_or_default() + "\n";
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(text))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    json_response(
        status,
        &json!({ "error": status.canonical_reason().unwrap_or("error"), "message": message }),
    )
}

/// A report the API could not make: the asker's mistake is a 400, a store that does not
/// answer a 503.
fn report_error(e: &ReportError) -> Response {
    let status = match e {
        ReportError::UnknownPlace(_) => StatusCode::BAD_REQUEST,
        ReportError::Store { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

/// Whether the database answers a trivial query within [`DB_CHECK_TIMEOUT`].
pub(crate) async fn database_check(state: &HttpState) -> Result<(), String> {
    match tokio::time::timeout(DB_CHECK_TIMEOUT, state.inner.setup.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("the database does not answer: {e}")),
        Err(_) => Err(format!("the database did not answer within {} s", DB_CHECK_TIMEOUT.as_secs())),
    }
}

/// 200 when the configuration is loaded, the database answers and the scheduler loop beat
/// recently; 503 naming the check that failed otherwise.
pub(crate) async fn readyz(state: &HttpState) -> Response {
    let now = Utc::now();
    let config = state.config();
    let config_check = if config.sources.is_empty() {
        json!({ "ok": false, "detail": "no configuration loaded" })
    } else {
        json!({ "ok": true, "detail": format!("{} file(s)", config.sources.len()) })
    };
    let db_check = match database_check(state).await {
        Ok(()) => json!({ "ok": true, "detail": state.inner.setup.store.backend().to_string() }),
        Err(why) => json!({ "ok": false, "detail": why }),
    };
    let last = state.inner.setup.heartbeat.last();
    let scheduler_check = match last {
        None => json!({ "ok": false, "detail": "the scheduler has not started yet" }),
        Some(at) if !state.heartbeat_recent(now) => json!({
            "ok": false,
            "detail": format!("the scheduler's last heartbeat is {} s old (limit {} s): the loop is stuck",
                (now - at).num_seconds(), HEARTBEAT_STALE.as_secs()),
            "last_heartbeat": rfc3339(at),
        }),
        Some(at) => {
            json!({ "ok": true, "detail": format!("{} s ago", (now - at).num_seconds().max(0)), "last_heartbeat": rfc3339(at) })
        }
    };
    // A standby is ready: standing by is its job. The role is shown, never a reason to fail.
    let leadership = leadership_json(state);
    // Feeds are detail, never readiness: a vendor's outage must not take the daemon out of a
    // load balancer, and the last good data stays in use meanwhile.
    let feeds = feeds_json(state, &config).await;
    let checks = json!({ "config": config_check, "database": db_check, "scheduler": scheduler_check });
    let failed: Vec<&str> = ["config", "database", "scheduler"]
        .into_iter()
        .filter(|name| checks[name]["ok"] != Value::Bool(true))
        .collect();
    if failed.is_empty() {
        json_response(
            StatusCode::OK,
            &json!({ "status": "ready", "checks": checks, "leadership": leadership, "feeds": feeds }),
        )
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "not ready", "failed": failed, "checks": checks, "leadership": leadership, "feeds": feeds }),
        )
    }
}

/// Every configured feed: `ok` while its latest fetch left good data in place, with the age of
/// its last success and the latest error.
async fn feeds_json(state: &HttpState, config: &patchd_config::Config) -> Value {
    let specs = patchd_daemon::feeds::feed_specs(config);
    if specs.is_empty() {
        return json!({});
    }
    let recorded = match state.inner.setup.store.feed_status().await {
        Ok(recorded) => recorded,
        Err(e) => return json!({ "error": format!("cannot read feed status: {e}") }),
    };
    let now = Utc::now();
    let mut feeds = serde_json::Map::new();
    for spec in specs {
        let status = recorded.iter().find(|s| s.name == spec.name);
        let entry = match status {
            None => json!({ "ok": false, "detail": "not fetched yet" }),
            Some(s) => json!({
                "ok": s.failures == 0 && s.last_success_at.is_some(),
                "detail": match (&s.last_error, s.last_success_at) {
                    (Some(error), Some(at)) => format!("{} failed fetch(es), last: {error}; using data of {} s ago", s.failures, (now - at).num_seconds().max(0)),
                    (Some(error), None) => format!("never fetched successfully: {error}"),
                    (None, Some(at)) => format!("{} entries, last success {} s ago", s.advisories, (now - at).num_seconds().max(0)),
                    (None, None) => "not fetched yet".to_string(),
                },
                "last_success_at": s.last_success_at.map(rfc3339),
                "failures": s.failures,
                "advisories": s.advisories,
            }),
        };
        feeds.insert(spec.name, entry);
    }
    Value::Object(feeds)
}

/// `{"role", "epoch", "holder": {host, pid, live, expires_in_ms}, "changes"}`: who leads, as this
/// process last learned it from the database.
pub(crate) fn leadership_json(state: &HttpState) -> Value {
    let leadership = &state.inner.setup.leadership;
    let status = leadership.current();
    let holder = status.lease.as_ref().map(|l| {
        json!({
            "host": l.host,
            "pid": l.pid,
            "epoch": l.epoch,
            "this_process": l.holder == status.me.holder,
            "acquired_at": rfc3339(l.acquired_at),
            "expires_at": rfc3339(l.expires_at),
        })
    });
    json!({
        "role": status.role.name(),
        "epoch": status.role.epoch(),
        "holder": holder,
        "changes": leadership.counters.changes(),
    })
}

pub(crate) async fn status(state: &HttpState) -> Response {
    let now = Utc::now();
    let inner = &state.inner;
    let config = state.config();
    let mut next: Vec<(String, String, String)> = windows::upcoming(&config, now, 1)
        .iter()
        .filter(|w| w.enabled)
        .filter_map(|w| w.next.first().map(|f| (f.start.clone(), w.name.clone(), f.end.clone())))
        .collect();
    next.sort();
    let last = inner.setup.heartbeat.last();
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "started_at": rfc3339(inner.started_at),
        "uptime_seconds": inner.started.elapsed().as_secs(),
        "config": {
            "path": inner.setup.config_path.display().to_string(),
            "files": config.sources.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "windows": config.windows.len(),
            "groups": config.groups.len(),
        },
        "database": {
            "url": config.daemon.database_url.redacted(),
            "backend": inner.setup.store.backend().to_string(),
            "reachable": database_check(state).await.is_ok(),
        },
        "endpoint": {
            "aws": inner.setup.aws.endpoint_url().unwrap_or("aws"),
            "region": inner.setup.aws.region(),
        },
        "listen": inner.listen.to_string(),
        "scheduler": {
            "last_heartbeat": last.map(rfc3339),
            "healthy": state.heartbeat_recent(now),
        },
        "leadership": leadership_json(state),
        "next_firings": next.iter().map(|(start, window, end)| json!({ "window": window, "start": start, "end": end })).collect::<Vec<_>>(),
    });
    json_response(StatusCode::OK, &body)
}

/// A numeric parameter from 1 to `max`; the message of a 400 otherwise.
fn number(pairs: &[(String, String)], key: &str, default: u32, max: u32) -> Result<u32, String> {
    match pairs.iter().rev().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => match v.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("`{key}` must be a number from 1 to {max}, found `{v}`")),
        },
    }
}

fn unknown_parameters(pairs: &[(String, String)], known: &[&str]) -> Option<Response> {
    let unknown: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).filter(|k| !known.contains(k)).collect();
    (!unknown.is_empty()).then(|| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("unknown parameter(s): {}; this path takes {}", unknown.join(", "), known.join(", ")),
        )
    })
}

/// The windows with their next firings, as `patchd plan --format json` lists them.
pub(crate) fn windows(state: &HttpState, query: &str) -> Response {
    let pairs = query_pairs(query);
    if let Some(bad) = unknown_parameters(&pairs, &["count"]) {
        return bad;
    }
    let count = match number(&pairs, "count", 5, 1000) {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let now = Utc::now();
    let windows = windows::upcoming(&state.config(), now, count as usize);
    json_response(StatusCode::OK, &json!({ "from": rfc3339(now), "windows": windows }))
}

/// The most recent window runs with their tasks.
pub(crate) async fn runs(state: &HttpState, query: &str) -> Response {
    let pairs = query_pairs(query);
    if let Some(bad) = unknown_parameters(&pairs, &["limit", "window", "account", "region"]) {
        return bad;
    }
    let limit = match number(&pairs, "limit", 50, 1000) {
        Ok(n) => n,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let account = match get("account") {
        None => None,
        Some(given) => {
            match patchd_report::account_id(&state.config(), &state.inner.setup.store, given).await {
                Ok(id) => Some(id),
                Err(e) => return report_error(&e),
            }
        }
    };
    let query = WindowRunQuery {
        window: get("window"),
        account: account.as_deref(),
        region: get("region"),
        limit: Some(limit),
        ..Default::default()
    };
    let runs = match state.inner.setup.store.window_runs(&query).await {
        Ok(runs) => runs,
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot read window runs: {e}")),
    };
    let runs: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "id": r.id.get(),
                "window": r.window,
                "account": r.account,
                "region": r.region,
                "scheduled_start": rfc3339(r.scheduled_start),
                "started_at": r.started_at.map(rfc3339),
                "ended_at": r.ended_at.map(rfc3339),
                "status": r.status.as_str(),
                "sync_unread": r.sync_unread,
                "tasks": r.tasks.iter().map(|t| json!({
                    "name": t.name,
                    "operation": t.operation.as_ssm(),
                    "command_id": t.command_id,
                    "status": t.status.as_str(),
                    "started_at": t.started_at.map(rfc3339),
                    "ended_at": t.ended_at.map(rfc3339),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "count": runs.len(), "runs": runs }))
}

/// Open findings as `report sla --format json` lists them, filtered by status, rank, group,
/// account (a configured name or a 12-digit id) and region.
pub(crate) async fn findings(state: &HttpState, query: &str) -> Response {
    let pairs = query_pairs(query);
    if let Some(bad) = unknown_parameters(&pairs, &["status", "rank", "group", "account", "region", "limit"])
    {
        return bad;
    }
    let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let status = match get("status") {
        None => None,
        Some(s) => match [SlaStatus::Breached, SlaStatus::DueSoon, SlaStatus::Ok, SlaStatus::Excepted]
            .into_iter()
            .find(|st| st.as_str() == s)
        {
            Some(st) => Some(st),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("`status` must be breached, due-soon, ok or excepted, found `{s}`"),
                )
            }
        },
    };
    let rank = match get("rank") {
        None => None,
        Some(r) => match RiskRank::parse(&r) {
            Some(rank) => Some(rank),
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("`rank` must be critical, high, medium or low, found `{r}`"),
                )
            }
        },
    };
    let config = state.config();
    let group = get("group");
    if let Some(g) = &group {
        if config.group(g).is_none() {
            return error(StatusCode::BAD_REQUEST, &format!("`group`: no configured group is named `{g}`"));
        }
    }
    let limit = match pairs.iter().any(|(k, _)| k == "limit") {
        false => None,
        true => match number(&pairs, "limit", 0, 1_000_000) {
            Ok(n) => Some(n as usize),
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        },
    };
    let filters = Filters { group, rank };
    let (account, region) = (get("account"), get("region"));
    let kev = load_kev(&config);
    let judge = Judge { config: &config, kev: &kev.catalog, at: Utc::now() };
    let judged = async {
        let reports =
            Reports::read(&state.inner.setup.store, judge, account.as_deref(), region.as_deref()).await?;
        reports.sla(&filters).await
    };
    let report = match judged.await {
        Ok(report) => report,
        Err(e) => return report_error(&e),
    };
    let mut findings: Vec<_> =
        report.findings.into_iter().filter(|f| status.is_none_or(|s| f.status == s)).collect();
    let total = findings.len();
    if let Some(limit) = limit {
        findings.truncate(limit);
    }
    json_response(
        StatusCode::OK,
        &json!({ "at": report.at, "total": total, "count": findings.len(), "findings": findings }),
    )
}

/// How many of the most urgent findings and of the latest runs the status page lists.
const PAGE_ROWS: usize = 10;

/// `GET /`: the live status page, an HTML rendering of what `/v1/status`, `/v1/findings` and
/// `/v1/runs` serve, judged now.
pub(crate) async fn status_page(state: &HttpState) -> Response {
    use patchd_report::evidence::status_page::{self, Health, Opening, RecentRun, StatusPage};
    let now = Utc::now();
    let config = state.config();
    let kev = load_kev(&config);
    let judge = Judge { config: &config, kev: &kev.catalog, at: now };
    let everything = Filters::default();
    let judged = async {
        let reports = Reports::read(&state.inner.setup.store, judge, None, None).await?;
        let sla = reports.sla_summary(&everything, PAGE_ROWS).await?;
        Ok::<_, ReportError>((sla, reports.coverage(&everything)))
    };
    let (sla, coverage) = match judged.await {
        Ok(judged) => judged,
        Err(e) => return report_error(&e),
    };
    let store = &state.inner.setup.store;
    let recorded =
        store.window_runs(&WindowRunQuery { limit: Some(PAGE_ROWS as u32), ..Default::default() }).await;
    let runs: Vec<RecentRun> = match recorded {
        Ok(runs) => runs
            .into_iter()
            .map(|r| RecentRun {
                window: r.window,
                scheduled_start: r.scheduled_start,
                ended_at: r.ended_at,
                status: r.status.as_str().to_string(),
                sync_unread: r.sync_unread,
            })
            .collect(),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &format!("cannot read the runs: {e}")),
    };
    let mut openings: Vec<Opening> = config
        .windows
        .iter()
        .filter(|w| w.enabled)
        .filter_map(|w| {
            let (start, end) = w.occurrences_after(now).next()?;
            Some(Opening { window: w.name.clone(), start, end })
        })
        .collect();
    openings.sort_by_key(|o| o.start);
    let leadership = state.inner.setup.leadership.current();
    let health = Health {
        version: env!("CARGO_PKG_VERSION").to_string(),
        role: match (leadership.role.name(), &leadership.lease) {
            ("leader", None) => "sole".to_string(),
            (role, _) => role.to_string(),
        },
        scheduler_healthy: state.heartbeat_recent(now),
        last_heartbeat: state.inner.setup.heartbeat.last(),
        database_reachable: database_check(state).await.is_ok(),
        started_at: state.inner.started_at,
    };
    let page = status_page::render(&StatusPage {
        generated_at: now,
        sla: &sla,
        coverage: &coverage,
        openings: &openings,
        runs: &runs,
        health: &health,
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(page))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_pairs("status=due-soon&group=web%20tier&limit=5"),
            vec![
                ("status".to_string(), "due-soon".to_string()),
                ("group".to_string(), "web tier".to_string()),
                ("limit".to_string(), "5".to_string())
            ]
        );
    }
}
