//! `patchd report evidence`: the auditor's evidence as one self-contained HTML page.
//!
//! The page is meant to be opened, printed and filed by an assessor, possibly years later and
//! offline, so it references nothing outside itself: inline CSS, charts as inline SVG, no
//! script to run. Every figure comes from the reports the computation already produces (the same
//! code path as `report sla|history|coverage|compliance --format json`); this module only
//! lays them out. The headline figures are embedded once more as JSON so that a machine can
//! check the page against the JSON reports.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use patchd_config::{Approval, Config, ExceptionScope, RiskRank};
use patchd_sla::SlaStatus;
use serde::Serialize;

use crate::compliance::ComplianceReport;
use crate::coverage::CoverageReport;
use crate::history::{HistoryReport, RankHistory};
use crate::judged::JudgedFinding;
use crate::render::{date, shorten};

pub mod status_page;
use crate::sla::{Count, SlaReport};

/// The reports the page is laid out from, all judged as of `sla.at`.
#[derive(Debug)]
pub struct Evidence<'a> {
    pub config: &'a Config,
    pub generated_at: DateTime<Utc>,
    pub version: &'a str,
    /// `--group`, when the evidence covers one group only.
    pub group: Option<&'a str>,
    /// `--account` (its 12-digit id, and its configured name when known) and `--region`, when
    /// the evidence covers part of the fleet.
    pub account: Option<&'a str>,
    pub account_name: Option<&'a str>,
    pub region: Option<&'a str>,
    pub sla: &'a SlaReport,
    pub history: &'a HistoryReport,
    pub coverage: &'a CoverageReport,
    pub compliance: &'a ComplianceReport,
    /// Promotions decided in the period: which run's installs each promoting task repeated.
    pub promotions: &'a [patchd_store::PromotionOfRun],
}

/// The id of the `<script type="application/json">` element holding [`Headline`].
pub const DATA_ELEMENT_ID: &str = "patchd-evidence-data";

/// The headline figures, machine-readable. `totals` and `per_rank` are the very values of
/// `report sla --format json` and `report history --format json`.
#[derive(Debug, Serialize)]
struct Headline<'a> {
    patchd_version: &'a str,
    generated_at: DateTime<Utc>,
    at: DateTime<Utc>,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    group: Option<&'a str>,
    account: Option<&'a str>,
    account_name: Option<&'a str>,
    region: Option<&'a str>,
    open_findings: usize,
    totals: &'a [Count],
    /// Rows of the table of open critical and high findings.
    critical_high_listed: usize,
    per_rank: &'a [RankHistory],
    critical_percent_met: Option<f64>,
    coverage: CoverageHeadline,
    exceptions_in_force: usize,
}

#[derive(Debug, Serialize)]
struct CoverageHeadline {
    in_scope: usize,
    gaps: usize,
    instances_with_gaps: usize,
}

/// Statuses an open finding can have, most urgent first: the order of every legend and bar.
const OPEN_STATUSES: [SlaStatus; 4] =
    [SlaStatus::Breached, SlaStatus::DueSoon, SlaStatus::Ok, SlaStatus::Excepted];

pub fn render(e: &Evidence) -> String {
    let at = e.sla.at;
    let listed: Vec<&JudgedFinding> =
        e.sla.findings.iter().filter(|f| matches!(f.rank, RiskRank::Critical | RiskRank::High)).collect();
    let in_force: Vec<&patchd_config::Exception> =
        e.config.exceptions.iter().filter(|x| in_force(x, at)).collect();
    let critical = e.history.per_rank.iter().find(|r| r.rank == RiskRank::Critical);
    let headline = Headline {
        patchd_version: e.version,
        generated_at: e.generated_at,
        at,
        since: e.history.since,
        until: e.history.until,
        group: e.group,
        account: e.account,
        account_name: e.account_name,
        region: e.region,
        open_findings: e.sla.findings.len(),
        totals: &e.sla.totals,
        critical_high_listed: listed.len(),
        per_rank: &e.history.per_rank,
        critical_percent_met: critical.and_then(|r| r.percent_met),
        coverage: CoverageHeadline {
            in_scope: e.coverage.in_scope,
            gaps: e.coverage.gaps.len(),
            instances_with_gaps: e.coverage.instances_with_gaps(),
        },
        exceptions_in_force: in_force.len(),
    };

    let mut out = String::with_capacity(64 * 1024);
    let mut scope = match e.group {
        Some(g) => format!("group {g}"),
        None => "all configured groups".to_string(),
    };
    if let Some(account) = e.account {
        let _ = write!(scope, ", account {account}");
        if let Some(name) = e.account_name {
            let _ = write!(scope, " ({name})");
        }
    }
    if let Some(region) = e.region {
        let _ = write!(scope, ", region {region}");
    }
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"patchd {version}\">\n\
         <title>Patch SLA evidence, {scope}, {at}</title>\n<style>{STYLE}</style>\n\
         <script type=\"application/json\" id=\"{DATA_ELEMENT_ID}\">{data}</script>\n</head>\n<body>\n<main class=\"page\">\n",
        version = esc(e.version),
        scope = esc(&scope),
        at = date(at),
        data = json_for_script(&headline),
    );
    header(&mut out, e, &scope);
    summary(&mut out, e, &headline);
    policy(&mut out, e.config);
    open_findings(&mut out, e, &listed);
    remediation(&mut out, e);
    coverage(&mut out, e);
    exceptions(&mut out, e, &in_force);
    promotions(&mut out, e);
    method(&mut out, e);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

/// An exception holds through the whole of its `expires` day (UTC), as the SLA engine judges.
fn in_force(exception: &patchd_config::Exception, at: DateTime<Utc>) -> bool {
    at.date_naive() <= exception.expires
}

fn header(out: &mut String, e: &Evidence, scope: &str) {
    let sources: Vec<String> = e.config.sources.iter().map(|p| p.display().to_string()).collect();
    let _ = write!(
        out,
        "<header class=\"doc-header\">\n<p class=\"kicker\">PCI DSS requirement 6.3.3 &middot; patch SLA evidence</p>\n\
         <h1>Security patching: SLA evidence</h1>\n<dl class=\"meta\">\n\
         <div><dt>Scope</dt><dd>{scope}</dd></div>\n\
         <div><dt>Open findings as of</dt><dd>{at}</dd></div>\n\
         <div><dt>Remediation period</dt><dd>{since} to {until} (end exclusive)</dd></div>\n\
         <div><dt>Generated</dt><dd>{generated} by patchd {version}</dd></div>\n\
         <div><dt>Configuration</dt><dd>{sources}</dd></div>\n</dl>\n\
         <nav class=\"toc\"><a href=\"#summary\">Summary</a><a href=\"#policy\">Policy</a>\
         <a href=\"#open-findings\">Open findings</a><a href=\"#remediation\">Remediation</a>\
         <a href=\"#coverage\">Coverage gaps</a><a href=\"#exceptions\">Exceptions</a>\
         <a href=\"#method\">Method</a></nav>\n</header>\n",
        scope = esc(scope),
        at = minute(e.sla.at),
        since = minute(e.history.since),
        until = minute(e.history.until),
        generated = minute(e.generated_at),
        version = esc(e.version),
        sources = if sources.is_empty() { "(none)".to_string() } else { esc(&sources.join(", ")) },
    );
}

fn total(sla: &SlaReport, rank: Option<RiskRank>, status: Option<SlaStatus>) -> usize {
    sla.totals
        .iter()
        .filter(|c| rank.is_none_or(|r| c.rank == r) && status.is_none_or(|s| c.status == s))
        .map(|c| c.count)
        .sum()
}

fn summary(out: &mut String, e: &Evidence, headline: &Headline) {
    let sla = e.sla;
    let breached = sla.count(SlaStatus::Breached);
    let critical = e.history.per_rank.iter().find(|r| r.rank == RiskRank::Critical);
    let (percent, percent_note) = match critical {
        Some(RankHistory { percent_met: Some(p), met, remediated, .. }) => {
            (format!("{p:.1} %"), format!("{met} of {remediated} critical patches installed within SLA"))
        }
        _ => ("n/a".to_string(), "no critical patch was installed in the period".to_string()),
    };
    out.push_str("<section id=\"summary\" class=\"first\">\n<h2>Summary</h2>\n<div class=\"cards\">\n");
    card(
        out,
        "Open findings",
        &headline.open_findings.to_string(),
        &format!("{} breached, {} due soon", breached, sla.count(SlaStatus::DueSoon)),
        if breached > 0 { "alert" } else { "good" },
    );
    card(
        out,
        "Critical patches within SLA",
        &percent,
        &percent_note,
        match critical.and_then(|r| r.percent_met) {
            Some(p) if p >= 100.0 => "good",
            Some(_) => "alert",
            None => "neutral",
        },
    );
    card(
        out,
        "Coverage gaps",
        &headline.coverage.gaps.to_string(),
        &format!(
            "{} of {} in-scope instances affected",
            headline.coverage.instances_with_gaps, headline.coverage.in_scope
        ),
        if headline.coverage.gaps > 0 { "warn" } else { "good" },
    );
    card(
        out,
        "Exceptions in force",
        &headline.exceptions_in_force.to_string(),
        &counted(sla.count(SlaStatus::Excepted), "covering {} open finding", "covering {} open findings"),
        "neutral",
    );
    out.push_str("</div>\n");

    out.push_str(
        "<h3>Open findings by rank and SLA status</h3>\n<table class=\"numeric narrow\" id=\"totals\">\n<thead><tr>\
         <th>Rank</th><th>SLA</th>",
    );
    for status in OPEN_STATUSES {
        let _ = write!(out, "<th>{}</th>", status_badge(status));
    }
    out.push_str("<th>Open</th></tr></thead>\n<tbody>\n");
    for rank in RiskRank::ALL {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{} d</td>",
            rank_label(rank),
            e.config.sla.days(rank)
        );
        for status in OPEN_STATUSES {
            let n = total(sla, Some(rank), Some(status));
            let _ = write!(out, "<td class=\"{}\">{n}</td>", if n == 0 { "zero" } else { "" });
        }
        let _ = writeln!(out, "<td class=\"strong\">{}</td></tr>", total(sla, Some(rank), None));
    }
    out.push_str("</tbody>\n<tfoot><tr><th scope=\"row\">All ranks</th><td></td>");
    for status in OPEN_STATUSES {
        let _ = write!(out, "<td>{}</td>", total(sla, None, Some(status)));
    }
    let _ = writeln!(out, "<td class=\"strong\">{}</td></tr></tfoot>\n</table>", total(sla, None, None));
    out.push_str("</section>\n");
}

fn card(out: &mut String, label: &str, value: &str, note: &str, tone: &str) {
    let _ = writeln!(
        out,
        "<div class=\"card {tone}\"><div class=\"card-label\">{}</div><div class=\"card-value\">{}</div>\
         <div class=\"card-note\">{}</div></div>",
        esc(label),
        esc(value),
        esc(note)
    );
}

fn policy(out: &mut String, config: &Config) {
    let sla = &config.sla;
    out.push_str("<section id=\"policy\">\n<h2>Policy</h2>\n");
    out.push_str(
        "<p class=\"lead\">The written policy this evidence is judged against, as configured. \
         The SLA clock of a patch starts at its vendor release date.</p>\n",
    );
    out.push_str(
        "<h3>Remediation deadlines</h3>\n<table class=\"narrow\">\n<thead><tr><th>Rank</th><th>Install within</th></tr></thead>\n<tbody>\n",
    );
    for rank in RiskRank::ALL {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{} days of release</td></tr>",
            rank_label(rank),
            sla.days(rank)
        );
    }
    let kev = match &sla.kev_catalog {
        Some(path) => format!("any CVE in the CISA KEV catalog {} ranks its patch critical", path),
        None => "no CISA KEV catalog configured".to_string(),
    };
    let _ = writeln!(
        out,
        "</tbody>\n</table>\n<ul class=\"facts\">\n<li>A finding is <em>due soon</em> within {} days of its due date.</li>\n\
         <li>A patch without a recognised vendor severity is ranked {}.</li>\n<li>{}.</li>\n\
         <li>An in-scope instance not scanned within {} hours is a coverage gap.</li>\n</ul>",
        sla.due_soon_days,
        esc(sla.default_rank.as_str()),
        esc(&kev),
        sla.stale_scan_hours
    );
    if !sla.rules.is_empty() {
        out.push_str(
            "<h3>Rank rules</h3>\n<table>\n<thead><tr><th>CVEs</th><th>Raised to</th><th>Reason</th></tr></thead>\n<tbody>\n",
        );
        for rule in &sla.rules {
            let _ = writeln!(
                out,
                "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td></tr>",
                esc(&rule.cves.join(", ")),
                rank_label(rule.rank),
                esc(rule.reason.as_deref().unwrap_or("")),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    out.push_str("<h3>Groups in scope</h3>\n");
    if config.groups.is_empty() {
        out.push_str("<p class=\"empty\">No groups are configured.</p>\n");
    } else {
        out.push_str(
            "<table>\n<thead><tr><th>Group</th><th>Members</th><th>Description</th></tr></thead>\n<tbody>\n",
        );
        for group in &config.groups {
            let mut members: Vec<String> = group
                .tags
                .0
                .iter()
                .map(|(key, values)| format!("tag {key} = {}", values.join(" or ")))
                .collect();
            if !group.instance_ids.is_empty() {
                members.push(format!("instances {}", group.instance_ids.join(", ")));
            }
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&group.name),
                esc(&members.join("; ")),
                esc(group.description.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    out.push_str("<h3>Patch baselines</h3>\n");
    if config.baselines.is_empty() {
        out.push_str("<p class=\"empty\">No baselines are configured: SSM's default baselines apply.</p>\n");
    } else {
        out.push_str(
            "<table>\n<thead><tr><th>Baseline</th><th>Operating system</th><th>Patch groups</th>\
             <th>Approval rules</th><th>Explicit lists</th></tr></thead>\n<tbody>\n",
        );
        for baseline in &config.baselines {
            let rules: Vec<String> = baseline
                .rules
                .iter()
                .map(|rule| {
                    let filters: Vec<String> = rule
                        .filters
                        .iter()
                        .map(|f| format!("{} = {}", f.key, f.values.join(" | ")))
                        .collect();
                    let approval = match &rule.approval {
                        Approval::AfterDays(d) => format!("approved {d} days after release"),
                        Approval::Until(day) => format!("approved if released by {day}"),
                        Approval::Immediate => "approved once available".to_string(),
                    };
                    let filters =
                        if filters.is_empty() { "all patches".to_string() } else { filters.join(", ") };
                    let non_security = if rule.enable_non_security { ", non-security too" } else { "" };
                    format!(
                        "<li>{}: {}, compliance {}{non_security}</li>",
                        esc(&filters),
                        approval,
                        rule.compliance_level
                    )
                })
                .collect();
            let mut lists = Vec::new();
            if !baseline.approved_patches.is_empty() {
                lists.push(format!("approved: {}", baseline.approved_patches.join(", ")));
            }
            if !baseline.rejected_patches.is_empty() {
                lists.push(format!(
                    "rejected ({}): {}",
                    baseline.rejected_patches_action.as_ssm(),
                    baseline.rejected_patches.join(", ")
                ));
            }
            let description = baseline
                .description
                .as_deref()
                .map(|d| format!("<div class=\"sub\">{}</div>", esc(d)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr><td>{}{description}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&baseline.name),
                esc(baseline.operating_system.as_str()),
                esc(&baseline.patch_groups.join(", ")),
                if rules.is_empty() {
                    "none".to_string()
                } else {
                    format!("<ul class=\"cell-list\">{}</ul>", rules.concat())
                },
                esc(&lists.join("; "))
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }

    out.push_str("<h3>Maintenance windows</h3>\n");
    if config.windows.is_empty() {
        out.push_str("<p class=\"empty\">No maintenance windows are configured.</p>\n");
    } else {
        out.push_str(
            "<table>\n<thead><tr><th>Window</th><th>Schedule</th><th>Duration</th><th>Tasks</th>\
             <th>State</th></tr></thead>\n<tbody>\n",
        );
        for window in &config.windows {
            let schedule = &window.schedule;
            let offset = match schedule.offset_days() {
                0 => String::new(),
                d => format!(" + {d} day(s)"),
            };
            let tasks: Vec<String> = window
                .tasks
                .iter()
                .map(|t| {
                    let groups: Vec<&str> = t.groups.iter().map(|g| g.value.as_str()).collect();
                    format!(
                        "<li>{} {} ({}, concurrency {}, errors {})</li>",
                        t.operation.as_ssm(),
                        esc(&groups.join(", ")),
                        t.reboot_option.as_ssm(),
                        t.max_concurrency,
                        t.max_errors
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td><span class=\"mono\">{}</span>{}<div class=\"sub\">{}</div></td>\
                 <td>{} h, cutoff {} h</td><td><ul class=\"cell-list\">{}</ul></td><td>{}</td></tr>",
                esc(&window.name),
                esc(&schedule.expression().to_string()),
                esc(&offset),
                esc(schedule.timezone().name()),
                window.duration.num_hours(),
                window.cutoff.num_hours(),
                tasks.concat(),
                if window.enabled { "enabled" } else { "<strong>disabled</strong>" },
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");
}

fn open_findings(out: &mut String, e: &Evidence, listed: &[&JudgedFinding]) {
    let sla = e.sla;
    out.push_str("<section id=\"open-findings\">\n<h2>Open findings</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"lead\">Every patch missing, failed or awaiting a reboot on an instance as of {}, \
         judged against its due date.</p>",
        minute(sla.at)
    );
    if sla.findings.is_empty() {
        out.push_str("<p class=\"empty\">There are no open findings.</p>\n</section>\n");
        return;
    }
    figure(
        out,
        "Age of open findings against the SLA",
        "Days since release (or first sighting, when the release date is unknown) of every open \
         finding, stacked by rank; dashed lines mark each rank's deadline.",
        &age_chart(sla, &e.config.sla),
    );
    figure(
        out,
        "SLA status per group",
        "Open findings of each group's instances by status; an instance in two groups counts in both.",
        &group_chart(e),
    );

    let _ = writeln!(out, "<h3>Open critical and high findings ({})</h3>", listed.len());
    if listed.is_empty() {
        out.push_str("<p class=\"empty\">No critical or high finding is open.</p>\n");
    } else {
        out.push_str(
            "<table id=\"open-critical-high\">\n<thead><tr><th>Instance</th><th>Patch</th><th>CVEs</th>\
             <th>Rank</th><th>Released</th><th>Due</th><th class=\"num\">Days overdue</th><th>Status</th></tr></thead>\n<tbody>\n",
        );
        for f in listed {
            let released = if f.estimated {
                format!("{}<div class=\"sub\">estimated: first seen missing</div>", date(f.clock.start))
            } else {
                format!("{}<div class=\"sub\">{}</div>", date(f.clock.start), esc(&clock_source(f)))
            };
            let overdue = if f.days_left < 0.0 {
                format!("<strong>{}</strong>", (-f.days_left).ceil() as i64)
            } else {
                format!("<span class=\"sub\">due in {} d</span>", f.days_left.floor() as i64)
            };
            let status = match &f.exception {
                Some(name) => format!("{}<div class=\"sub\">{}</div>", status_badge(f.status), esc(name)),
                None => status_badge(f.status),
            };
            let _ = writeln!(
                out,
                "<tr data-rank=\"{rank}\" data-status=\"{status_key}\"><td><span class=\"mono\">{id}</span>{name}</td>\
                 <td><span class=\"mono\">{patch}</span>{title}</td><td class=\"mono\">{cves}</td><td>{rank_label}</td>\
                 <td class=\"nowrap\">{released}</td><td class=\"nowrap\">{due}</td><td class=\"num\">{overdue}</td><td>{status}</td></tr>",
                rank = f.rank.as_str(),
                status_key = f.status.as_str(),
                id = esc(&f.instance_id),
                name = sub(f.instance_name.as_deref()),
                patch = esc(&f.patch_id),
                title = sub(f.title.as_deref()),
                // One unbreakable span per CVE: a narrow column wraps between CVEs, not inside one.
                cves = if f.cves.is_empty() {
                    "&mdash;".to_string()
                } else {
                    f.cves.iter().map(|c| format!("<span class=\"nowrap\">{}</span>", esc(c))).collect::<Vec<_>>().join(", ")
                },
                rank_label = rank_label(f.rank),
                due = if f.estimated { format!("~{}", date(f.due)) } else { date(f.due) },
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    clock_origins(out, sla);
    let rest = sla.findings.len() - listed.len();
    if rest > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{} counted above but not listed here; \
             <code>patchd report sla --format csv</code> lists every open finding.</p>",
            counted(rest, "{} open medium or low finding is", "{} open medium or low findings are")
        );
    }
    out.push_str("</section>\n");
}

/// Where the open findings' clocks come from, per platform: an assessor's first question about
/// any age shown ("released when, says who?").
fn clock_origins(out: &mut String, sla: &SlaReport) {
    if sla.clocks.is_empty() {
        return;
    }
    out.push_str(
        "<h3>Where the SLA clocks come from</h3>\n<table class=\"clocks\">\n<thead><tr><th>Platform</th>\
         <th class=\"num\">Open</th><th class=\"num\">Estimated</th><th>Release dates from</th></tr></thead>\n<tbody>\n",
    );
    for p in &sla.clocks {
        let origins: Vec<String> =
            p.origins.iter().map(|(label, n)| format!("{} ({n})", esc(label))).collect();
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{} ({:.0}%)</td><td>{}</td></tr>",
            esc(&p.platform),
            p.open,
            p.estimated,
            p.estimated_share() * 100.0,
            origins.join(", ")
        );
    }
    out.push_str(
        "</tbody>\n</table>\n<p class=\"note\">An estimated clock starts when the patch was first seen missing, \
         which understates its age; a vendor advisory feed (<code>[[advisories.source]]</code>) dates it.</p>\n",
    );
}

fn clock_source(f: &JudgedFinding) -> String {
    match f.clock.source {
        patchd_sla::ClockSource::Ssm => "release date from SSM".into(),
        patchd_sla::ClockSource::Advisory => format!("release date from {}", f.clock_origin),
        patchd_sla::ClockSource::FirstSeen => "estimated: first seen missing".into(),
    }
}

fn remediation(out: &mut String, e: &Evidence) {
    let history = e.history;
    out.push_str("<section id=\"remediation\">\n<h2>Remediation over the period</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"lead\">Findings remediated from {} to {}, and whether each was installed by its \
         due date (met) or after it (missed). Exceptions do not change what happened.</p>",
        minute(history.since),
        minute(history.until)
    );
    out.push_str(
        "<table class=\"numeric narrow\" id=\"per-rank\">\n<thead><tr><th>Rank</th><th>Remediated</th><th>Met</th>\
         <th>Missed</th><th>Within SLA</th><th>Median days to remediate</th></tr></thead>\n<tbody>\n",
    );
    for r in &history.per_rank {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td class=\"strong\">{}</td><td>{}</td></tr>",
            rank_label(r.rank),
            r.remediated,
            r.met,
            r.missed,
            r.percent_met.map_or("&mdash;".to_string(), |p| format!("{p:.1} %")),
            r.median_days_to_remediate.map_or("&mdash;".to_string(), |d| format!("{d:.1}")),
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if history.remediated.is_empty() {
        out.push_str("<p class=\"empty\">Nothing was remediated in the period.</p>\n</section>\n");
        return;
    }
    figure(
        out,
        "Remediation per week",
        "Findings remediated each week of the period (weeks start on the period's first day), \
         installed within their SLA or not.",
        &weekly_chart(history),
    );
    let critical: Vec<&JudgedFinding> =
        history.remediated.iter().filter(|f| f.rank == RiskRank::Critical).collect();
    let _ = writeln!(out, "<h3>Critical patches installed in the period ({})</h3>", critical.len());
    if critical.is_empty() {
        out.push_str("<p class=\"empty\">No critical patch was installed in the period.</p>\n");
    } else {
        out.push_str(
            "<table id=\"remediated-critical\">\n<thead><tr><th>Instance</th><th>Patch</th><th>Released</th>\
             <th>Due</th><th>Installed</th><th class=\"num\">Days to remediate</th><th>SLA</th></tr></thead>\n<tbody>\n",
        );
        for f in critical {
            let _ = writeln!(
                out,
                "<tr><td><span class=\"mono\">{}</span>{}</td><td><span class=\"mono\">{}</span>{}</td><td class=\"nowrap\">{}{}</td>\
                 <td class=\"nowrap\">{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&f.instance_id),
                sub(f.instance_name.as_deref()),
                esc(&f.patch_id),
                sub(f.title.as_deref()),
                date(f.clock.start),
                if f.estimated { "<div class=\"sub\">estimated: first seen missing</div>" } else { "" },
                date(f.due),
                f.installed_at.map(minute).unwrap_or_default(),
                f.days_to_remediate.map_or(String::new(), |d| format!("{d:.1}")),
                status_badge(f.status),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");
}

fn coverage(out: &mut String, e: &Evidence) {
    let coverage = e.coverage;
    out.push_str("<section id=\"coverage\">\n<h2>Coverage gaps</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"lead\">In-scope instances (members of a configured group; {} in all) that patchd \
         cannot vouch for: blind spots the figures above do not cover.</p>",
        coverage.in_scope
    );
    out.push_str("<table id=\"compliance\" class=\"numeric narrow\">\n<thead><tr><th>Group</th><th>Instances</th><th>Compliant at last scan</th></tr></thead>\n<tbody>\n");
    for g in &e.compliance.groups {
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td>{}</td></tr>",
            esc(&g.group),
            g.instances,
            g.compliant
        );
    }
    out.push_str("</tbody>\n</table>\n");
    if coverage.in_scope == 0 {
        out.push_str(
            "<p class=\"empty\">No instance of a configured group has been recorded yet: there is nothing to vouch for.</p>\n</section>\n",
        );
        return;
    }
    if coverage.gaps.is_empty() {
        out.push_str("<p class=\"empty\">No coverage gaps: every in-scope instance is managed, reachable, targeted by an install window and recently scanned.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"coverage-gaps\">\n<thead><tr><th>Instance</th><th>Account / region</th><th>Groups</th>\
         <th>Gap</th><th>Detail</th></tr></thead>\n<tbody>\n",
    );
    for g in &coverage.gaps {
        let _ = writeln!(
            out,
            "<tr><td><span class=\"mono\">{}</span>{}</td><td><span class=\"mono\">{}</span><div class=\"sub\">{}</div></td><td>{}</td>\
             <td><span class=\"badge gap\">{}</span></td><td>{}</td></tr>",
            esc(&g.instance_id),
            sub(g.instance_name.as_deref()),
            esc(&g.account),
            esc(&g.region),
            esc(&g.groups.join(", ")),
            g.gap.as_str(),
            esc(&g.detail)
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn exceptions(out: &mut String, e: &Evidence, in_force: &[&patchd_config::Exception]) {
    out.push_str("<section id=\"exceptions\">\n<h2>Exceptions in force</h2>\n");
    let _ = writeln!(
        out,
        "<p class=\"lead\">Documented risk acceptances in force on {}: the findings they cover are \
         <em>excepted</em> until the end of the expiry day (UTC), then count as open again.</p>",
        date(e.sla.at)
    );
    if in_force.is_empty() {
        out.push_str("<p class=\"empty\">No exception is in force.</p>\n");
    } else {
        let mut covered: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &e.sla.findings {
            if let Some(name) = &f.exception {
                *covered.entry(name.as_str()).or_default() += 1;
            }
        }
        out.push_str(
            "<table id=\"exceptions-in-force\">\n<thead><tr><th>Exception</th><th>Patches</th><th>Scope</th>\
             <th>Owner</th><th>Reason</th><th>Expires</th><th class=\"num\">Findings covered</th></tr></thead>\n<tbody>\n",
        );
        for x in in_force {
            let scope = match &x.scope {
                ExceptionScope::Instances(ids) => format!("instances {}", ids.join(", ")),
                ExceptionScope::Group(group) => format!("group {}", group.value),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"nowrap\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&x.name),
                esc(&x.patches.join(", ")),
                esc(&scope),
                esc(&x.owner),
                esc(&x.reason),
                x.expires,
                covered.get(x.name.as_str()).copied().unwrap_or(0),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    let expired = e.config.exceptions.len() - in_force.len();
    if expired > 0 {
        let _ = writeln!(
            out,
            "<p class=\"note\">{expired} configured exception(s) had expired by then and cover nothing.</p>"
        );
    }
    out.push_str("</section>\n");
}

/// Which installs each promoting task repeated: the set it installed and where it came from.
/// Shown only when something promotes, or promoted in the period.
fn promotions(out: &mut String, e: &Evidence) {
    let configured = e.config.windows.iter().flat_map(|w| &w.tasks).any(|t| t.promote.is_some());
    if e.promotions.is_empty() && !configured {
        return;
    }
    out.push_str("<section id=\"promotions\">\n<h2>Promotions</h2>\n");
    out.push_str(
        "<p class=\"lead\">A promoting task installs exactly the patches an earlier window's last \
         succeeded run installed, as SSM reported them on that run's instances, through \
         AWS-RunPatchBaseline's install list. Patches released since stay open findings on the \
         promoted instances, their SLA clock running.</p>\n",
    );
    if e.promotions.is_empty() {
        out.push_str("<p class=\"empty\">No promotion was decided in the period.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table id=\"promotions-decided\">\n<thead><tr><th>Decided</th><th>Run</th><th>Task</th>\
         <th>Promoted from</th><th class=\"num\">Patches</th><th>Patch ids</th></tr></thead>\n<tbody>\n",
    );
    for p in e.promotions {
        let ids: Vec<&str> = p.promotion.patches.iter().map(|x| x.id.as_str()).collect();
        let _ = writeln!(
            out,
            "<tr><td class=\"nowrap\">{}</td><td>{} (run {})</td><td>{}</td><td>window {} run {}</td>\
             <td class=\"num\">{}</td><td class=\"mono\">{}</td></tr>",
            date(p.promotion.decided_at),
            esc(&p.window),
            p.run,
            esc(&p.task_name),
            esc(&p.promotion.from_window),
            p.promotion.source_run,
            ids.len(),
            esc(&ids.join(", ")),
        );
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

fn method(out: &mut String, e: &Evidence) {
    let _ = write!(
        out,
        "<section id=\"method\" class=\"compact\">\n<h2>Method</h2>\n<ul class=\"facts\">\n\
         <li>patchd records every scan SSM Patch Manager reports: when each patch was first seen missing \
         on each instance, every state change, and when it was installed. SSM itself keeps only the \
         current state.</li>\n\
         <li>Rank is the vendor severity (Critical &rarr; critical, Important/High &rarr; high, \
         Medium/Moderate &rarr; medium, Low &rarr; low), raised by the rank rules and the KEV catalog \
         above, never lowered.</li>\n\
         <li>A finding is due its rank's number of days after the patch's release date (from SSM or an \
         imported vendor advisory). When no release date is known the clock starts when the patch was \
         first seen missing anywhere in the fleet, and the finding is marked <em>estimated</em> (due \
         dates with <code>~</code>).</li>\n\
         <li>Status of an open finding: <em>breached</em> past its due date, <em>due soon</em> within \
         {due_soon} days of it, <em>ok</em> otherwise, <em>excepted</em> while an exception covers it. \
         A remediated finding <em>met</em> its SLA when installed by its due date, otherwise it \
         <em>missed</em> it. A patch installed but awaiting a reboot stays open.</li>\n\
         <li>The same figures, machine-readable: <code>patchd report sla|history|coverage|compliance \
         --format json --at {at}</code>; the headline figures are also embedded in this file \
         (element <code>#{DATA_ELEMENT_ID}</code>).</li>\n</ul>\n</section>\n",
        due_soon = e.config.sla.due_soon_days,
        at = e.sla.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
}

fn figure(out: &mut String, title: &str, caption: &str, svg: &str) {
    let _ = writeln!(
        out,
        "<figure>\n<h3>{}</h3>\n{svg}\n<figcaption>{}</figcaption>\n</figure>",
        esc(title),
        esc(caption)
    );
}

// ---- charts -------------------------------------------------------------------------------
//
// Hand-written SVG: a viewBox, so the chart scales to the page (and the printed page) without
// redrawing, and every series both colour-coded and labelled or patterned, so a grayscale
// print still tells them apart.

const CHART_WIDTH: f64 = 760.0;

/// Colours of the ranks: one hue, darker for more severe, so grayscale keeps the order.
fn rank_colour(rank: RiskRank) -> &'static str {
    match rank {
        RiskRank::Critical => "#1d3557",
        RiskRank::High => "#3d6fa8",
        RiskRank::Medium => "#8cb3dc",
        RiskRank::Low => "#cfe0f2",
    }
}

/// Fill of a status: a pattern where two statuses would be similar greys in print.
fn status_fill(status: SlaStatus, chart: &str) -> String {
    match status {
        SlaStatus::Breached | SlaStatus::Missed => "#b42318".to_string(),
        SlaStatus::DueSoon => format!("url(#{chart}-hatch)"),
        SlaStatus::Ok | SlaStatus::Met => "#4e9f6d".to_string(),
        SlaStatus::Excepted => format!("url(#{chart}-dots)"),
    }
}

fn patterns(chart: &str) -> String {
    format!(
        "<defs><pattern id=\"{chart}-hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(45)\"><rect width=\"6\" height=\"6\" fill=\"#f3b34c\"/>\
         <rect width=\"2.5\" height=\"6\" fill=\"#a05a00\"/></pattern>\
         <pattern id=\"{chart}-dots\" width=\"5\" height=\"5\" patternUnits=\"userSpaceOnUse\">\
         <rect width=\"5\" height=\"5\" fill=\"#e4e7ec\"/><circle cx=\"2.5\" cy=\"2.5\" r=\"1\" fill=\"#667085\"/>\
         </pattern></defs>"
    )
}

/// A tick step of 1, 2 or 5 times a power of ten that gives at most `max_ticks` ticks to `max`.
fn tick_step(max: f64, max_ticks: f64) -> f64 {
    let mut magnitude = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            let step = m * magnitude;
            if max / step <= max_ticks {
                return step;
            }
        }
        magnitude *= 10.0;
    }
}

/// One legend entry per (fill, label), laid out left to right from `x`.
fn legend(svg: &mut String, x: f64, y: f64, entries: &[(String, String)]) {
    let mut x = x;
    for (fill, label) in entries {
        let _ = write!(
            svg,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{fill}\" stroke=\"#475467\" stroke-width=\"0.5\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" class=\"legend\">{}</text>",
            y - 10.0,
            x + 17.0,
            esc(label)
        );
        x += 17.0 + 7.0 * label.chars().count() as f64 + 18.0;
    }
}

fn age_chart(sla: &SlaReport, policy: &patchd_config::SlaPolicy) -> String {
    let ages: Vec<(f64, RiskRank)> = sla
        .findings
        .iter()
        .map(|f| (((sla.at - f.clock.start).num_seconds() as f64 / 86_400.0).max(0.0), f.rank))
        .collect();
    let oldest = ages.iter().map(|(a, _)| *a).fold(0.0, f64::max);
    let longest_sla = RiskRank::ALL.iter().map(|r| policy.days(*r)).max().unwrap_or(0) as f64;
    let span = oldest.max(longest_sla) * 1.05 + 1.0;
    let bin = [1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 30.0, 60.0, 90.0, 180.0, 365.0]
        .into_iter()
        .find(|w| span / w <= 36.0)
        .unwrap_or(730.0);
    let bins = (span / bin).ceil() as usize;
    let mut counts = vec![[0usize; 4]; bins];
    for (age, rank) in &ages {
        let i = ((age / bin) as usize).min(bins - 1);
        counts[i][rank_index(*rank)] += 1;
    }
    let tallest = counts.iter().map(|c| c.iter().sum::<usize>()).max().unwrap_or(0).max(1) as f64;

    let (left, right, top, bottom) = (46.0, 16.0, 64.0, 44.0);
    let height = 300.0;
    let plot_w = CHART_WIDTH - left - right;
    let plot_h = height - top - bottom;
    let x_max = bins as f64 * bin;
    let x = |days: f64| left + days / x_max * plot_w;
    let axis = CountAxis::new(left, top, plot_w, plot_h, tallest);
    let y = |n: f64| axis.y(n);

    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" \
         aria-label=\"Histogram of the age in days of open findings by rank, with each rank's SLA deadline\">"
    );
    axis.draw(&mut svg);
    let bar_w = plot_w / bins as f64;
    for (i, stack) in counts.iter().enumerate() {
        let mut base = 0.0;
        // Most severe at the bottom, where the eye compares bars.
        for rank in RiskRank::ALL {
            let n = stack[rank_index(rank)] as f64;
            if n == 0.0 {
                continue;
            }
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"0.7\"><title>{} {}: {} to {} days old</title></rect>",
                left + i as f64 * bar_w + 1.0,
                y(base + n),
                (bar_w - 2.0).max(1.0),
                y(base) - y(base + n),
                rank_colour(rank),
                n,
                rank.as_str(),
                i as f64 * bin,
                (i + 1) as f64 * bin
            );
            base += n;
        }
        let n = stack.iter().sum::<usize>();
        if n > 0 {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" class=\"value\" text-anchor=\"middle\">{n}</text>",
                left + (i as f64 + 0.5) * bar_w,
                y(n as f64) - 4.0
            );
        }
    }
    // X axis ticks: a handful of round day counts.
    let x_step = tick_step(x_max, 10.0).max(bin);
    let mut d = 0.0;
    while d <= x_max + 0.01 {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" class=\"tick\"/>\
             <text x=\"{0:.1}\" y=\"{3:.1}\" class=\"axis\" text-anchor=\"middle\">{4}</text>",
            x(d),
            top + plot_h,
            top + plot_h + 4.0,
            top + plot_h + 16.0,
            d
        );
        d += x_step;
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-title\" text-anchor=\"middle\">age in days</text>",
        left + plot_w / 2.0,
        height - 8.0
    );
    // One dashed line per distinct deadline, naming every rank that shares it.
    let mut deadlines: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
    for rank in RiskRank::ALL {
        deadlines.entry(policy.days(rank)).or_default().push(rank.as_str());
    }
    for (row, (days, ranks)) in deadlines.iter().enumerate() {
        let lx = x(f64::from(*days));
        let label = format!("{} SLA {} d", ranks.join(", "), days);
        let anchor = if lx > left + plot_w * 0.7 { "end" } else { "start" };
        let tx = if anchor == "end" { lx - 4.0 } else { lx + 4.0 };
        let _ = write!(
            svg,
            "<line x1=\"{lx:.1}\" x2=\"{lx:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" class=\"deadline\"/>\
             <text x=\"{tx:.1}\" y=\"{:.1}\" class=\"deadline-label\" text-anchor=\"{anchor}\">{}</text>",
            top - 10.0 - 14.0 * (row % 2) as f64,
            top + plot_h,
            top - 13.0 - 14.0 * (row % 2) as f64,
            esc(&label)
        );
    }
    let entries: Vec<(String, String)> =
        RiskRank::ALL.iter().map(|r| (rank_colour(*r).to_string(), r.as_str().to_string())).collect();
    legend(&mut svg, left, 14.0, &entries);
    svg.push_str("</svg>");
    svg
}

fn rank_index(rank: RiskRank) -> usize {
    match rank {
        RiskRank::Critical => 0,
        RiskRank::High => 1,
        RiskRank::Medium => 2,
        RiskRank::Low => 3,
    }
}

/// The plot area of a bar chart and its vertical scale: counts from 0 to `max` in `step`s.
struct CountAxis {
    left: f64,
    top: f64,
    width: f64,
    height: f64,
    max: f64,
    step: f64,
}

impl CountAxis {
    /// A scale for counts up to `tallest`, rounded up to a whole tick.
    fn new(left: f64, top: f64, width: f64, height: f64, tallest: f64) -> CountAxis {
        let step = tick_step(tallest, 5.0);
        CountAxis { left, top, width, height, max: (tallest / step).ceil() * step, step }
    }

    fn y(&self, n: f64) -> f64 {
        self.top + self.height - n / self.max * self.height
    }

    /// Horizontal grid lines with their counts, and the plot's frame.
    fn draw(&self, svg: &mut String) {
        let (left, top) = (self.left, self.top);
        let mut n = 0.0;
        while n <= self.max + 0.01 {
            let _ = write!(
                svg,
                "<line x1=\"{left:.1}\" x2=\"{right:.1}\" y1=\"{line_y:.1}\" y2=\"{line_y:.1}\" class=\"grid\"/>\
                 <text x=\"{label_x:.1}\" y=\"{label_y:.1}\" class=\"axis\" text-anchor=\"end\">{n}</text>",
                right = left + self.width,
                line_y = self.y(n),
                label_x = left - 6.0,
                label_y = self.y(n) + 4.0
            );
            n += self.step;
        }
        let _ = write!(
            svg,
            "<line x1=\"{left:.1}\" x2=\"{left:.1}\" y1=\"{top:.1}\" y2=\"{bottom:.1}\" class=\"frame\"/>\
             <line x1=\"{left:.1}\" x2=\"{right:.1}\" y1=\"{bottom:.1}\" y2=\"{bottom:.1}\" class=\"frame\"/>",
            bottom = top + self.height,
            right = left + self.width
        );
    }
}

fn group_chart(e: &Evidence) -> String {
    const NO_GROUP: &str = "(no group)";
    let mut rows: Vec<(String, [usize; 4])> =
        e.compliance.groups.iter().map(|g| (g.group.clone(), [0; 4])).collect();
    for f in &e.sla.findings {
        let Some(s) = OPEN_STATUSES.iter().position(|s| *s == f.status) else { continue };
        if f.groups.is_empty() {
            match rows.iter_mut().find(|(g, _)| g == NO_GROUP) {
                Some(row) => row.1[s] += 1,
                None => {
                    let mut counts = [0; 4];
                    counts[s] = 1;
                    rows.push((NO_GROUP.to_string(), counts));
                }
            }
        }
        for g in &f.groups {
            if let Some(row) = rows.iter_mut().find(|(name, _)| name == g) {
                row.1[s] += 1;
            }
        }
    }
    let widest = rows.iter().map(|(_, c)| c.iter().sum::<usize>()).max().unwrap_or(0).max(1) as f64;
    let label_w = 8.0 + 7.5 * rows.iter().map(|(g, _)| g.chars().count()).max().unwrap_or(4).min(24) as f64;
    let (left, right, top, row_h) = (label_w.max(60.0), 50.0, 40.0, 30.0);
    let plot_w = CHART_WIDTH - left - right;
    let height = top + row_h * rows.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" \
         aria-label=\"Open findings per group, stacked by SLA status\">{}",
        patterns("groups")
    );
    for (i, (group, counts)) in rows.iter().enumerate() {
        let y = top + i as f64 * row_h;
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"label\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + row_h / 2.0 + 4.0,
            esc(&shorten(group, 24))
        );
        let mut x = left;
        for (s, status) in OPEN_STATUSES.iter().enumerate() {
            let n = counts[s];
            if n == 0 {
                continue;
            }
            let w = n as f64 / widest * plot_w;
            let _ = write!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"1\"><title>{}: {n} {}</title></rect>",
                y + 4.0,
                row_h - 8.0,
                status_fill(*status, "groups"),
                esc(group),
                status.as_str()
            );
            // Counts inside segments wide enough to hold them; the total at the end says the rest.
            if w >= 22.0 {
                let class = if *status == SlaStatus::Breached { "in-bar light" } else { "in-bar" };
                let _ = write!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{:.1}\" class=\"{class}\" text-anchor=\"middle\">{n}</text>",
                    x + w / 2.0,
                    y + row_h / 2.0 + 4.0
                );
            }
            x += w;
        }
        let total: usize = counts.iter().sum();
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" class=\"value\">{}</text>",
            x + 6.0,
            y + row_h / 2.0 + 4.0,
            if total == 0 { "none".to_string() } else { total.to_string() }
        );
    }
    let entries: Vec<(String, String)> =
        OPEN_STATUSES.iter().map(|s| (status_fill(*s, "groups"), status_label(*s).to_string())).collect();
    legend(&mut svg, left, 18.0, &entries);
    svg.push_str("</svg>");
    svg
}

fn weekly_chart(history: &HistoryReport) -> String {
    let weeks =
        ((history.until - history.since).num_seconds() as f64 / (7.0 * 86_400.0)).ceil().max(1.0) as usize;
    let mut counts = vec![(0usize, 0usize); weeks];
    for f in &history.remediated {
        let Some(installed) = f.installed_at else { continue };
        let week = ((installed - history.since).num_seconds() / (7 * 86_400)).max(0) as usize;
        let slot = &mut counts[week.min(weeks - 1)];
        match f.status {
            SlaStatus::Met => slot.0 += 1,
            _ => slot.1 += 1,
        }
    }
    let tallest = counts.iter().map(|(m, x)| m + x).max().unwrap_or(0).max(1) as f64;
    let (left, right, top, bottom) = (46.0, 16.0, 40.0, 52.0);
    let height = 280.0;
    let plot_w = CHART_WIDTH - left - right;
    let plot_h = height - top - bottom;
    let axis = CountAxis::new(left, top, plot_w, plot_h, tallest);
    let y = |n: f64| axis.y(n);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {CHART_WIDTH} {height}\" role=\"img\" \
         aria-label=\"Findings remediated per week, within SLA and after it\">{}",
        patterns("weeks")
    );
    axis.draw(&mut svg);
    let slot_w = plot_w / weeks as f64;
    let bar_w = (slot_w * 0.7).min(40.0);
    let label_every = weeks.div_ceil(14);
    for (i, (met, missed)) in counts.iter().enumerate() {
        let cx = left + (i as f64 + 0.5) * slot_w;
        let start = history.since + Duration::days(7 * i as i64);
        let mut base = 0.0;
        for (n, status) in [(*met, SlaStatus::Met), (*missed, SlaStatus::Missed)] {
            if n == 0 {
                continue;
            }
            let n = n as f64;
            let _ = write!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{:.1}\" fill=\"{}\" stroke=\"#fff\" stroke-width=\"0.7\"><title>week of {}: {} {}</title></rect>",
                cx - bar_w / 2.0,
                y(base + n),
                y(base) - y(base + n),
                if status == SlaStatus::Met { "#4e9f6d".to_string() } else { "url(#weeks-missed)".to_string() },
                date(start),
                n,
                status.as_str()
            );
            base += n;
        }
        if met + missed > 0 {
            let _ = write!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" class=\"value\" text-anchor=\"middle\">{}</text>",
                y(base) - 4.0,
                met + missed
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{cx:.1}\" y=\"{:.1}\" class=\"axis\" text-anchor=\"middle\">{}</text>",
                top + plot_h + 16.0,
                start.format("%b %d")
            );
        }
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" class=\"axis-title\" text-anchor=\"middle\">week starting</text>",
        left + plot_w / 2.0,
        height - 12.0
    );
    // Missed is the figure an assessor looks for: solid red with a hatch, darkest in grayscale.
    svg.push_str(
        "<defs><pattern id=\"weeks-missed\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" \
         patternTransform=\"rotate(-45)\"><rect width=\"6\" height=\"6\" fill=\"#b42318\"/>\
         <rect width=\"2\" height=\"6\" fill=\"#7a1710\"/></pattern></defs>",
    );
    legend(
        &mut svg,
        left,
        18.0,
        &[
            ("#4e9f6d".to_string(), "met: installed within SLA".to_string()),
            ("url(#weeks-missed)".to_string(), "missed: installed late".to_string()),
        ],
    );
    svg.push_str("</svg>");
    svg
}

// ---- text ---------------------------------------------------------------------------------

/// Escapes text for HTML element content and quoted attribute values alike: instance names,
/// patch titles and configuration strings come from outside and may contain markup.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// JSON safe inside `<script>`: the HTML parser ends the element at the first `</script`
/// whatever the JSON means, so `<`, `>` and `&` are written as JSON's `\u` escapes, which
/// decode to the same string. serde_json never emits them outside strings.
fn json_for_script<T: Serialize>(value: &T) -> String {
    // The headline holds only strings, numbers and timestamps: serialising cannot fail.
    let json = serde_json::to_string(value).unwrap_or_default();
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

/// `one` or `many` with `{}` replaced by `n`, whichever agrees with it.
fn counted(n: usize, one: &str, many: &str) -> String {
    if n == 1 { one } else { many }.replace("{}", &n.to_string())
}

fn sub(text: Option<&str>) -> String {
    match text {
        Some(t) if !t.is_empty() => format!("<div class=\"sub\">{}</div>", esc(t)),
        _ => String::new(),
    }
}

fn status_label(status: SlaStatus) -> &'static str {
    match status {
        SlaStatus::Breached => "breached",
        SlaStatus::DueSoon => "due soon",
        SlaStatus::Ok => "ok",
        SlaStatus::Excepted => "excepted",
        SlaStatus::Missed => "missed",
        SlaStatus::Met => "met",
    }
}

/// A status as a badge whose text says what the colour means, for grayscale prints.
fn status_badge(status: SlaStatus) -> String {
    format!("<span class=\"badge {}\">{}</span>", status.as_str(), status_label(status))
}

fn rank_label(rank: RiskRank) -> String {
    format!("<span class=\"rank {0}\">{0}</span>", rank.as_str())
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

const STYLE: &str = r#"
:root { --ink: #101828; --muted: #475467; --faint: #98a2b3; --line: #d0d5dd; --bg: #f2f4f7;
  --accent: #1d3557; --red: #b42318; --amber: #b54708; --green: #067647; --grey: #475467; }
* { box-sizing: border-box; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
html { background: var(--bg); }
body { margin: 0; color: var(--ink); font: 14px/1.5 "Inter", "Segoe UI", "Helvetica Neue", Arial, "Liberation Sans", sans-serif; }
.page { max-width: 1120px; margin: 24px auto; background: #fff; padding: 40px 48px; box-shadow: 0 1px 3px rgba(16,24,40,.1); }
h1 { font-size: 28px; line-height: 1.2; margin: 4px 0 20px; letter-spacing: -0.01em; }
h2 { font-size: 20px; margin: 0 0 8px; padding-bottom: 6px; border-bottom: 2px solid var(--accent); color: var(--accent); }
h3 { font-size: 15px; margin: 24px 0 8px; }
section { margin-top: 40px; }
.kicker { text-transform: uppercase; letter-spacing: .08em; font-size: 12px; color: var(--muted); margin: 0; }
.lead { color: var(--muted); margin: 4px 0 16px; max-width: 72ch; }
.note, .empty { color: var(--muted); font-style: italic; }
.meta { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 8px 24px; margin: 0 0 16px; }
.meta div { border-left: 3px solid var(--line); padding-left: 10px; }
.meta dt { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
.meta dd { margin: 0; font-weight: 600; overflow-wrap: anywhere; }
.toc { display: flex; flex-wrap: wrap; gap: 6px 18px; font-size: 13px; padding-top: 10px; border-top: 1px solid var(--line); }
.toc a { color: var(--accent); text-decoration: none; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin: 16px 0 8px; }
.card { border: 1px solid var(--line); border-top: 4px solid var(--faint); border-radius: 6px; padding: 12px 14px; }
.card.alert { border-top-color: var(--red); } .card.warn { border-top-color: var(--amber); }
.card.good { border-top-color: var(--green); } .card.neutral { border-top-color: var(--accent); }
.card-label { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .05em; }
.card-value { font-size: 30px; font-weight: 700; line-height: 1.2; margin: 4px 0; font-variant-numeric: tabular-nums; }
.card-note { font-size: 12.5px; color: var(--muted); }
table { width: 100%; border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { text-align: left; vertical-align: top; padding: 6px 8px; border-bottom: 1px solid var(--line); overflow-wrap: break-word; }
table.narrow { width: auto; min-width: 55%; }
table.narrow th, table.narrow td { padding-left: 14px; padding-right: 14px; }
.nowrap, span.mono { white-space: nowrap; }
thead th { background: #f9fafb; font-size: 11.5px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); border-bottom: 2px solid var(--line); }
tbody tr:nth-child(even) { background: #fcfcfd; }
tfoot td, tfoot th { font-weight: 700; border-top: 2px solid var(--line); }
table.numeric td, .num { text-align: right; font-variant-numeric: tabular-nums; }
table.numeric thead th:not(:first-child) { text-align: right; }
td.zero { color: var(--faint); } .strong { font-weight: 700; }
.mono, code { font-family: "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
.sub { font-size: 11.5px; color: var(--muted); white-space: normal; }
ul.facts { margin: 8px 0; padding-left: 20px; } ul.facts li { margin: 3px 0; }
ul.cell-list { margin: 0; padding-left: 16px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 11.5px; font-weight: 700; white-space: nowrap; border: 1px solid currentColor; }
.badge.breached, .badge.missed { color: #fff; background: var(--red); border-color: var(--red); }
.badge.due-soon { color: #7a2e0e; background: #fef0c7; border-color: var(--amber); }
.badge.ok, .badge.met { color: var(--green); background: #ecfdf3; }
.badge.excepted { color: var(--grey); background: #f2f4f7; border-style: dashed; }
.badge.gap { color: #7a2e0e; background: #fff6ed; }
thead .badge { text-transform: none; letter-spacing: 0; }
.rank { font-weight: 600; text-transform: capitalize; }
.rank.critical { color: #1d3557; } .rank.high { color: #3d6fa8; }
figure { margin: 16px 0 24px; }
figure h3 { margin-top: 8px; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 4px; }
svg.chart { width: 100%; height: auto; display: block; font-family: inherit; }
svg .grid { stroke: #eaecf0; stroke-width: 1; } svg .frame { stroke: #667085; stroke-width: 1; }
svg .tick { stroke: #667085; }
svg .axis { font-size: 11px; fill: #475467; } svg .axis-title { font-size: 11.5px; fill: #475467; }
svg .legend, svg .label { font-size: 12px; fill: #344054; } svg .value { font-size: 11px; font-weight: 700; fill: #101828; }
svg .in-bar { font-size: 11px; font-weight: 700; fill: #101828; paint-order: stroke; stroke: #fff; stroke-width: 3px; stroke-linejoin: round; }
svg .in-bar.light { fill: #fff; stroke: none; }
svg .deadline { stroke: #b42318; stroke-width: 1.5; stroke-dasharray: 5 3; }
svg .deadline-label { font-size: 11.5px; font-weight: 700; fill: #b42318; }
section.compact { font-size: 13px; }
thead { display: table-header-group; }
tfoot { display: table-footer-group; }
tr { break-inside: avoid; page-break-inside: avoid; }
@page { size: A4; margin: 14mm 12mm 16mm; }
@media (max-width: 800px) { .cards { grid-template-columns: repeat(2, 1fr); } .page { padding: 20px; } }
@media print {
  html, body { background: #fff; }
  body { font-size: 10pt; }
  .page { max-width: none; margin: 0; padding: 0; box-shadow: none; }
  .toc { display: none; }
  section { break-before: page; page-break-before: always; margin-top: 0; }
  section.first, section.compact { break-before: auto; page-break-before: auto; margin-top: 24px; }
  h2, h3 { break-after: avoid; page-break-after: avoid; }
  figure, .cards, .card, .meta { break-inside: avoid; page-break-inside: avoid; }
  table { font-size: 8.5pt; }
  .mono, code { font-size: 7.5pt; }
  .sub, .badge { font-size: 7.5pt; }
  th, td { padding: 4px 5px; }
  .cards { grid-template-columns: repeat(4, 1fr); }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_content_and_attributes() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('b')"> & co"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt; &amp; co"
        );
    }

    #[test]
    fn json_cannot_close_its_script_element() {
        #[derive(Serialize)]
        struct Probe<'a> {
            text: &'a str,
        }
        let text = "</script><script>alert(1)</script> & <!--";
        let json = json_for_script(&Probe { text });
        assert!(!json.contains('<') && !json.contains('>'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(back["text"], text);
    }

    #[test]
    fn tick_steps_are_round_and_few() {
        assert_eq!(tick_step(1.0, 5.0), 1.0);
        assert_eq!(tick_step(7.0, 5.0), 2.0);
        assert_eq!(tick_step(23.0, 5.0), 5.0);
        assert_eq!(tick_step(480.0, 5.0), 100.0);
    }
}
