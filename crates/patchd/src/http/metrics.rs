//! `/metrics`: the Prometheus text exposition format 0.0.4, written by hand.
//!
//! Gauges that read the store (SLA totals, coverage, window runs, invocations) are computed
//! at most once per [`CACHE_FOR`]; process gauges and AWS call counters are read live.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use patchd_config::RiskRank;
use patchd_report::{Filters, Gap, Judge, Reports};
use patchd_sla::SlaStatus;
use patchd_store::{CommandStatus, WindowRunStatus};

use super::api;
use super::state::HttpState;
use crate::setup::load_kev;

/// How long the store-derived part of a scrape is reused.
pub(crate) const CACHE_FOR: Duration = Duration::from_secs(5);

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn handle(state: &HttpState) -> Response {
    let mut out = String::new();
    live(state, &mut out);
    let cached = {
        let mut cache = state.inner.metrics.0.lock().await;
        match cache.as_ref() {
            Some((at, text)) if at.elapsed() < CACHE_FOR => Ok(text.clone()),
            _ => match from_store(state).await {
                Ok(text) => {
                    *cache = Some((Instant::now(), text.clone()));
                    Ok(text)
                }
                Err(e) => Err(e),
            },
        }
    };
    match cached {
        Ok(text) => out.push_str(&text),
        Err(e) => {
            tracing::warn!(error = %e, "metrics from the store are unavailable");
            return api::error(StatusCode::SERVICE_UNAVAILABLE, &format!("metrics unavailable: {e}"));
        }
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .body(Body::from(out))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

/// `# HELP` and `# TYPE` lines of one metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value escaped as the format asks: backslash, double quote and newline.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {}", format_value(value));
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// Cheap gauges and counters, read at every scrape.
fn live(state: &HttpState, out: &mut String) {
    let inner = &state.inner;
    family(out, "patchd_build_info", "gauge", "Always 1; the version is a label.");
    sample(out, "patchd_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    family(out, "patchd_start_time_seconds", "gauge", "When this patchd process started (Unix time).");
    sample(out, "patchd_start_time_seconds", &[], seconds(inner.started_at));
    family(
        out,
        "patchd_scheduler_heartbeat_timestamp_seconds",
        "gauge",
        "The scheduler loop's latest turn (Unix time; 0 before the first).",
    );
    sample(
        out,
        "patchd_scheduler_heartbeat_timestamp_seconds",
        &[],
        inner.setup.heartbeat.last().map_or(0.0, seconds),
    );
    family(out, "patchd_scheduler_healthy", "gauge", "1 when the scheduler's heartbeat is recent, else 0.");
    sample(out, "patchd_scheduler_healthy", &[], f64::from(u8::from(state.heartbeat_recent(Utc::now()))));
    let leadership = &inner.setup.leadership;
    let leading = matches!(leadership.current().role, patchd_daemon::leader::Role::Leader { .. });
    family(
        out,
        "patchd_leader",
        "gauge",
        "1 while this process leads (fires windows, resumes runs, syncs), 0 while it stands by. Alert when the sum over all processes is not 1.",
    );
    sample(out, "patchd_leader", &[], f64::from(u8::from(leading)));
    let events = inner.setup.events.stats();
    family(
        out,
        "patchd_events_published_total",
        "counter",
        "Events this process delivered to [events] sinks (EventBridge, the webhook); one per sink.",
    );
    sample(out, "patchd_events_published_total", &[], events.published as f64);
    family(
        out,
        "patchd_events_failed_total",
        "counter",
        "Events this process could not deliver to a sink after its retries: they are lost (the log names each).",
    );
    sample(out, "patchd_events_failed_total", &[], events.failed as f64);
    family(
        out,
        "patchd_leadership_changes_total",
        "counter",
        "Times this process gained or lost leadership.",
    );
    sample(out, "patchd_leadership_changes_total", &[], leadership.counters.changes() as f64);
    family(
        out,
        "patchd_lease_queries_total",
        "counter",
        "Lease statements sent: bids, renewals, resignations.",
    );
    sample(out, "patchd_lease_queries_total", &[], leadership.counters.queries() as f64);

    let calls = inner.setup.aws.call_counts();
    family(out, "patchd_aws_api_calls_total", "counter", "AWS API attempts since start, retries included.");
    for c in &calls {
        sample(
            out,
            "patchd_aws_api_calls_total",
            &[("service", &c.service), ("operation", &c.operation)],
            c.calls as f64,
        );
    }
    family(
        out,
        "patchd_aws_api_throttles_total",
        "counter",
        "AWS API attempts answered with a throttling error.",
    );
    for c in &calls {
        sample(
            out,
            "patchd_aws_api_throttles_total",
            &[("service", &c.service), ("operation", &c.operation)],
            c.throttled as f64,
        );
    }

    let last = patchd_daemon::sync::LATEST_SYNC.get();
    family(out, "patchd_last_sync_duration_seconds", "gauge", "How long the latest compliance sync took.");
    family(
        out,
        "patchd_last_sync_timestamp_seconds",
        "gauge",
        "When the latest compliance sync ended (Unix time).",
    );
    if let Some(s) = last {
        sample(out, "patchd_last_sync_duration_seconds", &[("source", &s.source)], s.duration.as_secs_f64());
        sample(out, "patchd_last_sync_timestamp_seconds", &[("source", &s.source)], seconds(s.ended_at));
    }
}

/// The gauges that read the store and judge findings.
async fn from_store(state: &HttpState) -> Result<String, String> {
    let inner = &state.inner;
    let config = state.config();
    let now = Utc::now();
    let mut out = String::new();
    let store = &inner.setup.store;

    let runs = store.window_run_counts().await.map_err(|e| format!("cannot count window runs: {e}"))?;
    let mut windows: Vec<&str> = config.windows.iter().map(|w| w.name.as_str()).collect();
    windows.extend(runs.iter().map(|r| r.window.as_str()));
    windows.sort();
    windows.dedup();
    let fired = |w: &str| -> u64 {
        runs.iter()
            .filter(|r| {
                r.window == w && !matches!(r.status, WindowRunStatus::Missed | WindowRunStatus::Scheduled)
            })
            .map(|r| r.count)
            .sum()
    };
    let missed = |w: &str| -> u64 {
        runs.iter().filter(|r| r.window == w && r.status == WindowRunStatus::Missed).map(|r| r.count).sum()
    };
    family(
        &mut out,
        "patchd_windows_fired_total",
        "counter",
        "Window occurrences that started (on time or late), from the store.",
    );
    for w in &windows {
        sample(&mut out, "patchd_windows_fired_total", &[("window", w)], fired(w) as f64);
    }
    family(
        &mut out,
        "patchd_windows_missed_total",
        "counter",
        "Window occurrences recorded as missed, from the store.",
    );
    for w in &windows {
        sample(&mut out, "patchd_windows_missed_total", &[("window", w)], missed(w) as f64);
    }
    family(&mut out, "patchd_window_runs", "gauge", "Recorded window runs by window and current status.");
    for r in &runs {
        sample(
            &mut out,
            "patchd_window_runs",
            &[("window", &r.window), ("status", r.status.as_str())],
            r.count as f64,
        );
    }

    let gates = store.wave_gate_counts().await.map_err(|e| format!("cannot count wave gates: {e}"))?;
    family(
        &mut out,
        "patchd_wave_gates_total",
        "counter",
        "Canary wave gates judged, by window and outcome (passed, failed), from the store. A failed gate halted its task.",
    );
    for (window, outcome) in windows.iter().flat_map(|w| [(*w, "failed"), (*w, "passed")]) {
        let n: u64 = gates.iter().filter(|(gw, go, _)| gw == window && go == outcome).map(|g| g.2).sum();
        sample(&mut out, "patchd_wave_gates_total", &[("window", window), ("outcome", outcome)], n as f64);
    }

    let backlog = store.sync_backlog(None).await.map_err(|e| format!("cannot read the sync backlog: {e}"))?;
    family(
        &mut out,
        "patchd_sync_unread_instances",
        "gauge",
        "Instances whose latest Scan or Install a compliance sync could not read (throttled or failed past every retry), by account and region: the sync backlog, read again every sync_retry_interval. Alert when it stays above 0.",
    );
    let mut unread: std::collections::BTreeMap<(&str, &str), usize> = std::collections::BTreeMap::new();
    for entry in &backlog {
        *unread.entry((&entry.account, &entry.region)).or_default() += 1;
    }
    if unread.is_empty() {
        sample(&mut out, "patchd_sync_unread_instances", &[], 0.0);
    }
    for ((account, region), n) in &unread {
        sample(
            &mut out,
            "patchd_sync_unread_instances",
            &[("account", account), ("region", region)],
            *n as f64,
        );
    }
    family(
        &mut out,
        "patchd_sync_unread_oldest_seconds",
        "gauge",
        "How long the oldest instance of the sync backlog has been unread (0 when the backlog is empty).",
    );
    let oldest = backlog.iter().map(|e| e.first_failed_at).min();
    sample(
        &mut out,
        "patchd_sync_unread_oldest_seconds",
        &[],
        oldest.map_or(0.0, |at| (now - at).num_seconds().max(0) as f64),
    );

    feed_metrics(&mut out, &config, store, now).await?;

    let invocations =
        store.invocation_counts().await.map_err(|e| format!("cannot count invocations: {e}"))?;
    family(
        &mut out,
        "patchd_command_invocations",
        "gauge",
        "Recorded command invocations (one per instance and command) by status.",
    );
    for status in CommandStatus::ALL {
        let n = invocations.iter().find(|(s, _)| s == status).map_or(0, |(_, n)| *n);
        sample(&mut out, "patchd_command_invocations", &[("status", status.as_str())], n as f64);
    }

    let kev = load_kev(&config);
    let judge = Judge { config: &config, kev: &kev.catalog, at: now };
    let reports = Reports::read(store, judge, None, None).await.map_err(|e| e.to_string())?;
    let everything = Filters::default();
    // report sla's totals, computed the same way, from per-patch counts, listing nothing.
    let sla = reports.sla_summary(&everything, 0).await.map_err(|e| e.to_string())?;
    let oldest = reports.oldest_open_per_rank().await.map_err(|e| e.to_string())?;
    family(
        &mut out,
        "patchd_open_findings",
        "gauge",
        "Open findings by risk rank and SLA status, as `patchd report sla` counts them.",
    );
    for rank in [RiskRank::Critical, RiskRank::High, RiskRank::Medium, RiskRank::Low] {
        for status in [SlaStatus::Breached, SlaStatus::DueSoon, SlaStatus::Ok, SlaStatus::Excepted] {
            sample(
                &mut out,
                "patchd_open_findings",
                &[("rank", rank.as_str()), ("status", status.as_str())],
                sla.count_of(rank, status) as f64,
            );
        }
    }
    family(
        &mut out,
        "patchd_oldest_open_critical_finding_age_seconds",
        "gauge",
        "Age of the oldest open critical finding, from its SLA clock start (0 when there is none).",
    );
    let critical = oldest.iter().find(|(rank, _)| *rank == RiskRank::Critical).map(|(_, start)| *start);
    sample(
        &mut out,
        "patchd_oldest_open_critical_finding_age_seconds",
        &[],
        critical.map_or(0.0, |start| (now - start).num_seconds().max(0) as f64),
    );

    let coverage = reports.coverage(&everything);
    family(&mut out, "patchd_instances_in_scope", "gauge", "Instances that belong to a configured group.");
    sample(&mut out, "patchd_instances_in_scope", &[], coverage.in_scope as f64);
    family(
        &mut out,
        "patchd_coverage_gaps",
        "gauge",
        "Coverage gaps by kind, as `patchd report coverage` lists them.",
    );
    for gap in [Gap::Unmanaged, Gap::AgentConnectionLost, Gap::NoInstallWindow, Gap::StaleScan] {
        let n = coverage.gaps.iter().filter(|g| g.gap == gap).count();
        sample(&mut out, "patchd_coverage_gaps", &[("gap", gap.as_str())], n as f64);
    }
    family(
        &mut out,
        "patchd_instances_with_coverage_gaps",
        "gauge",
        "Distinct in-scope instances with at least one gap.",
    );
    sample(&mut out, "patchd_instances_with_coverage_gaps", &[], coverage.instances_with_gaps() as f64);
    Ok(out)
}

/// Each feed's health, and where the open findings' clocks come from per platform.
async fn feed_metrics(
    out: &mut String,
    config: &patchd_config::Config,
    store: &patchd_store::Store,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let specs = patchd_daemon::feeds::feed_specs(config);
    let recorded = store.feed_status().await.map_err(|e| format!("cannot read feed status: {e}"))?;
    let status = |name: &str| recorded.iter().find(|s| s.name == name);
    family(
        out,
        "patchd_feed_up",
        "gauge",
        "1 while a feed's latest fetch left good data in place (imported or not modified), 0 after a failed fetch (its last good data stays in use) or before the first success.",
    );
    for spec in &specs {
        let up = status(&spec.name).is_some_and(|s| s.failures == 0 && s.last_success_at.is_some());
        sample(out, "patchd_feed_up", &[("feed", &spec.name)], if up { 1.0 } else { 0.0 });
    }
    family(out, "patchd_feed_failures", "gauge", "Failed fetches of a feed since its last success.");
    for spec in &specs {
        sample(
            out,
            "patchd_feed_failures",
            &[("feed", &spec.name)],
            status(&spec.name).map_or(0, |s| s.failures) as f64,
        );
    }
    family(
        out,
        "patchd_feed_last_success_age_seconds",
        "gauge",
        "Seconds since a feed's last successful fetch (absent before the first). Alert when it exceeds a few refresh intervals.",
    );
    for spec in &specs {
        if let Some(at) = status(&spec.name).and_then(|s| s.last_success_at) {
            sample(
                out,
                "patchd_feed_last_success_age_seconds",
                &[("feed", &spec.name)],
                (now - at).num_seconds().max(0) as f64,
            );
        }
    }
    family(
        out,
        "patchd_feed_advisories",
        "gauge",
        "Advisories (KEV: vulnerabilities) in a feed's data in use.",
    );
    for spec in &specs {
        sample(
            out,
            "patchd_feed_advisories",
            &[("feed", &spec.name)],
            status(&spec.name).map_or(0, |s| s.advisories) as f64,
        );
    }
    let counts = store
        .open_clock_counts(&patchd_store::OpenFindingFilter::default())
        .await
        .map_err(|e| format!("cannot count clocks: {e}"))?;
    family(
        out,
        "patchd_open_findings_by_clock",
        "gauge",
        "Open findings by instance platform and where their SLA clock starts: `advisory: <feed>`, `ssm`, or `first-seen` (an estimate that understates age).",
    );
    for c in &counts {
        let platform = c.platform.as_deref().unwrap_or("unknown");
        sample(
            out,
            "patchd_open_findings_by_clock",
            &[("platform", platform), ("clock", &c.source.label())],
            c.open as f64,
        );
    }
    family(
        out,
        "patchd_open_findings_estimated_ratio",
        "gauge",
        "Share of a platform's open findings whose SLA clock is estimated (no release date known). 0 on a platform every feed dates.",
    );
    for p in patchd_report::platform_clocks(&counts) {
        sample(
            out,
            "patchd_open_findings_estimated_ratio",
            &[("platform", &p.platform)],
            p.estimated_share(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_follow_the_text_format() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "Help.");
        sample(&mut out, "x_total", &[("a", "q\"u\\o\nte"), ("b", "2")], 3.0);
        sample(&mut out, "x_total", &[], 0.25);
        assert_eq!(
            out,
            "# HELP x_total Help.\n# TYPE x_total counter\nx_total{a=\"q\\\"u\\\\o\\nte\",b=\"2\"} 3\nx_total 0.25\n"
        );
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
    }
}
