//! The daemon's live status page (`GET /` on its HTTP endpoint): the SLA picture, the most
//! urgent findings, the next window openings, the recent runs, the coverage gaps and the
//! daemon's own health. It is the evidence report's renderer at a glance: the same style, the
//! same badges and chart patterns (so it reads in grayscale), no script, and a modest refresh.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use patchd_config::RiskRank;
use patchd_sla::SlaStatus;

use super::{
    card, esc, minute, patterns, rank_label, status_badge, status_fill, total, OPEN_STATUSES, STYLE,
};
use crate::coverage::CoverageReport;
use crate::sla::SlaReport;

/// How often the page reloads itself, in seconds: the figures change at scans and runs, not
/// by the second, and every load reads the database.
pub const REFRESH_SECONDS: u32 = 60;

/// A window's next opening.
#[derive(Debug, Clone)]
pub struct Opening {
    pub window: String,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A recent window run.
#[derive(Debug, Clone)]
pub struct RecentRun {
    pub window: String,
    pub scheduled_start: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// As the store spells it: `succeeded`, `failed`, `running`, `missed`...
    pub status: String,
    pub sync_unread: u32,
}

/// The daemon's own state.
#[derive(Debug, Clone)]
pub struct Health {
    pub version: String,
    /// `leader`, `standby` or `sole`.
    pub role: String,
    pub scheduler_healthy: bool,
    pub last_heartbeat: Option<DateTime<Utc>>,
    pub database_reachable: bool,
    pub started_at: DateTime<Utc>,
}

/// What the page shows; `sla` needs its totals and its most urgent findings only.
#[derive(Debug)]
pub struct StatusPage<'a> {
    pub generated_at: DateTime<Utc>,
    pub sla: &'a SlaReport,
    pub coverage: &'a CoverageReport,
    pub openings: &'a [Opening],
    pub runs: &'a [RecentRun],
    pub health: &'a Health,
}

/// The page, as one HTML document.
pub fn render(p: &StatusPage) -> String {
    let mut out = String::with_capacity(32 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\n\
         <meta name=\"generator\" content=\"patchd {version}\">\n\
         <title>patchd status</title>\n<style>{STYLE}{PAGE_STYLE}</style>\n</head>\n<body>\n<main class=\"page status\">\n\
         <header class=\"doc-header\">\n<p class=\"kicker\">patchd {version} &middot; live status</p>\n\
         <h1>Patch SLA status</h1>\n<p class=\"lead\">As of {at}; this page reloads every {REFRESH_SECONDS} s. \
         The JSON behind it: <a href=\"/v1/status\">/v1/status</a>, <a href=\"/v1/findings\">/v1/findings</a>, \
         <a href=\"/v1/runs\">/v1/runs</a>, <a href=\"/metrics\">/metrics</a>.</p>\n</header>\n",
        version = esc(&p.health.version),
        at = minute(p.generated_at),
    );
    health(&mut out, p.health, p.generated_at);
    sla(&mut out, p.sla);
    openings(&mut out, p.openings);
    runs(&mut out, p.runs);
    coverage(&mut out, p.coverage);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn health(out: &mut String, h: &Health, now: DateTime<Utc>) {
    out.push_str("<section id=\"daemon\" class=\"first\">\n<h2>Daemon</h2>\n<div class=\"cards\">\n");
    let beat = match h.last_heartbeat {
        Some(at) => format!("last heartbeat {} s ago", (now - at).num_seconds().max(0)),
        None => "the scheduler has not started yet".to_string(),
    };
    let (value, tone) = if h.scheduler_healthy { ("healthy", "good") } else { ("STALLED", "alert") };
    card(out, "Scheduler", value, &beat, tone);
    let role_note = match h.role.as_str() {
        "leader" => "this process schedules and sends",
        "standby" => "another process leads; this one takes over if it stops",
        _ => "no lease: this process schedules alone",
    };
    card(out, "Role", &h.role, role_note, "neutral");
    let (value, tone) = if h.database_reachable { ("reachable", "good") } else { ("UNREACHABLE", "alert") };
    card(out, "Database", value, "", tone);
    let up = (now - h.started_at).num_minutes().max(0);
    let uptime = if up >= 1440 {
        format!("{} d {} h", up / 1440, up % 1440 / 60)
    } else {
        format!("{} h {} min", up / 60, up % 60)
    };
    card(out, "Up", &uptime, &format!("since {}", minute(h.started_at)), "neutral");
    out.push_str("</div>\n</section>\n");
}

fn sla(out: &mut String, sla: &SlaReport) {
    out.push_str("<section id=\"sla\">\n<h2>Open findings</h2>\n<div class=\"cards\">\n");
    let breached = sla.count(SlaStatus::Breached);
    let critical = total(sla, Some(RiskRank::Critical), Some(SlaStatus::Breached));
    card(
        out,
        "Breached",
        &breached.to_string(),
        &format!("{critical} of them critical"),
        if breached > 0 { "alert" } else { "good" },
    );
    let due_soon = sla.count(SlaStatus::DueSoon);
    card(out, "Due soon", &due_soon.to_string(), "", if due_soon > 0 { "warn" } else { "good" });
    card(out, "Open", &total(sla, None, None).to_string(), "every rank and status", "neutral");
    out.push_str("</div>\n");
    out.push_str(&totals_chart(sla));
    out.push_str(
        "<div class=\"scroll\"><table class=\"numeric narrow\" id=\"totals\">\n<thead><tr><th>Rank</th><th>Breached</th>\
         <th>Due soon</th><th>OK</th><th>Excepted</th><th>Total</th></tr></thead>\n<tbody>\n",
    );
    for rank in RiskRank::ALL {
        let _ = write!(out, "<tr><td>{}</td>", rank_label(rank));
        for status in OPEN_STATUSES {
            let _ = write!(out, "<td>{}</td>", sla.count_of(rank, status));
        }
        let _ = writeln!(out, "<td class=\"strong\">{}</td></tr>", total(sla, Some(rank), None));
    }
    out.push_str("</tbody>\n</table></div>\n");
    out.push_str("<h3>Most urgent</h3>\n");
    if sla.findings.is_empty() {
        out.push_str("<p class=\"empty\">No open finding.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table id=\"urgent\">\n<thead><tr><th>Instance</th><th>Patch</th><th>Rank</th>\
         <th>Due</th><th class=\"num\">Days left</th><th>Status</th></tr></thead>\n<tbody>\n",
    );
    for f in &sla.findings {
        let _ = writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td><td class=\"nowrap\">{}</td>\
             <td class=\"num\">{:.0}</td><td>{}</td></tr>",
            esc(&f.instance_id),
            esc(&f.patch_id),
            rank_label(f.rank),
            f.due.format("%Y-%m-%d"),
            f.days_left,
            status_badge(f.status),
        );
    }
    out.push_str("</tbody>\n</table></div>\n</section>\n");
}

/// Open findings per rank as stacked bars by status: red, hatched, green and dotted, so the
/// statuses differ in grayscale too.
fn totals_chart(sla: &SlaReport) -> String {
    const ROW: f64 = 26.0;
    const LEFT: f64 = 80.0;
    const WIDTH: f64 = 640.0;
    let widest = RiskRank::ALL.iter().map(|r| total(sla, Some(*r), None)).max().unwrap_or(0).max(1) as f64;
    let height = ROW * RiskRank::ALL.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {height}\" role=\"img\" aria-label=\"Open findings by rank and SLA status\">{}",
        patterns("status"),
        w = LEFT + WIDTH + 60.0,
    );
    for (i, rank) in RiskRank::ALL.iter().enumerate() {
        let y = 6.0 + ROW * i as f64;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" class=\"axis\">{}</text>",
            LEFT - 8.0,
            y + 14.0,
            rank.as_str()
        );
        let mut x = LEFT;
        for status in OPEN_STATUSES {
            let n = sla.count_of(*rank, status);
            if n == 0 {
                continue;
            }
            let w = WIDTH * n as f64 / widest;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"0.5\"><title>{} {}: {n}</title></rect>",
                ROW - 8.0,
                status_fill(status, "status"),
                rank.as_str(),
                status.as_str(),
            );
            x += w;
        }
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis\">{}</text>",
            x + 6.0,
            y + 14.0,
            total(sla, Some(*rank), None)
        );
    }
    let mut x = LEFT;
    let y = height - 6.0;
    for status in OPEN_STATUSES {
        let label = super::status_label(status);
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\" stroke=\"#475467\" stroke-width=\"0.5\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" class=\"legend\">{label}</text>",
            y - 10.0,
            status_fill(status, "status"),
            x + 17.0,
        );
        x += 17.0 + 7.0 * label.len() as f64 + 18.0;
    }
    svg.push_str("</svg>\n");
    svg
}

fn openings(out: &mut String, openings: &[Opening]) {
    out.push_str("<section id=\"openings\">\n<h2>Next window openings</h2>\n");
    if openings.is_empty() {
        out.push_str("<p class=\"empty\">No enabled window opens again.</p>\n</section>\n");
        return;
    }
    out.push_str("<div class=\"scroll\"><table>\n<thead><tr><th>Window</th><th>Opens</th><th>Closes</th></tr></thead>\n<tbody>\n");
    for o in openings {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td></tr>",
            esc(&o.window),
            minute(o.start),
            minute(o.end)
        );
    }
    out.push_str("</tbody>\n</table></div>\n</section>\n");
}

fn runs(out: &mut String, runs: &[RecentRun]) {
    out.push_str("<section id=\"runs\">\n<h2>Recent runs</h2>\n");
    if runs.is_empty() {
        out.push_str("<p class=\"empty\">No window has run yet.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<div class=\"scroll\"><table>\n<thead><tr><th>Window</th><th>Scheduled</th><th>Ended</th><th>Outcome</th></tr></thead>\n<tbody>\n",
    );
    for r in runs {
        // A run that succeeded without reading every result is not shown as a success.
        let (outcome, tone) = match (r.status.as_str(), r.sync_unread) {
            ("succeeded", 0) => ("succeeded".to_string(), "ok"),
            ("succeeded", n) => (format!("incomplete: {n} unread"), "due-soon"),
            ("failed" | "missed", _) => (r.status.clone(), "breached"),
            (other, _) => (other.to_string(), "excepted"),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"nowrap\">{}</td><td class=\"nowrap\">{}</td><td><span class=\"badge {tone}\">{}</span></td></tr>",
            esc(&r.window),
            minute(r.scheduled_start),
            r.ended_at.map_or_else(|| "-".to_string(), minute),
            esc(&outcome),
        );
    }
    out.push_str("</tbody>\n</table></div>\n</section>\n");
}

/// How many blind-spot rows are listed before the rest is only counted.
const GAPS_LISTED: usize = 20;

fn coverage(out: &mut String, c: &CoverageReport) {
    out.push_str("<section id=\"coverage\">\n<h2>Coverage gaps</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"lead\">{} of {} in-scope instance(s) have a blind spot: patchd cannot see or patch them.</p>",
        c.instances_with_gaps(),
        c.in_scope
    );
    if c.gaps.is_empty() {
        out.push_str("</section>\n");
        return;
    }
    out.push_str("<div class=\"scroll\"><table id=\"gaps\">\n<thead><tr><th>Instance</th><th>Gap</th><th>Detail</th></tr></thead>\n<tbody>\n");
    for g in c.gaps.iter().take(GAPS_LISTED) {
        let _ = writeln!(
            out,
            "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&g.instance_id),
            g.gap.as_str(),
            esc(&g.detail)
        );
    }
    out.push_str("</tbody>\n</table></div>\n");
    if c.gaps.len() > GAPS_LISTED {
        let _ = writeln!(
            out,
            "<p class=\"note\">and {} more: <code>patchd report coverage</code> lists them all.</p>",
            c.gaps.len() - GAPS_LISTED
        );
    }
    out.push_str("</section>\n");
}

/// On a phone the page fills the screen and wide tables scroll inside their box.
const PAGE_STYLE: &str = r#"
.status .scroll { overflow-x: auto; }
.status .chart { width: 100%; height: auto; max-width: 800px; }
@media (max-width: 640px) {
  .page { margin: 0; padding: 16px; box-shadow: none; }
  h1 { font-size: 22px; }
  .status table { font-size: 12px; }
}
"#;
