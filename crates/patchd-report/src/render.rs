//! Reports as an aligned table (fits 80 columns), JSON (the report structs, a documented
//! contract) or CSV (a header row, one row per finding / instance / gap).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::compliance::ComplianceReport;
use crate::coverage::CoverageReport;
use crate::history::HistoryReport;
use crate::judged::JudgedFinding;
use crate::sla::SlaReport;

/// Left-aligned columns separated by two spaces; the last column is not padded.
#[derive(Debug)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { rows: vec![header.iter().map(|h| h.to_string()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self, out: &mut String) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<width$}  ", width = widths[c]);
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

pub(crate) fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn minute(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M").to_string()
}

/// Cuts text to `max` characters, marking the cut, so one long id cannot widen a table.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

pub fn json<T: Serialize>(report: &T) -> String {
    // The report structs contain only strings, numbers and timestamps: serialising cannot fail.
    serde_json::to_string_pretty(report).unwrap_or_default() + "\n"
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv_line(out: &mut String, fields: &[String]) {
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    let _ = writeln!(out, "{}", line.join(","));
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// An instant as patchd writes it in JSON and CSV: RFC 3339 in UTC to the second, `Z` suffix.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn sla_table(report: &SlaReport) -> String {
    use patchd_sla::SlaStatus::*;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "SLA at {} UTC: {} breached, {} due soon, {} ok, {} excepted",
        minute(report.at),
        report.count(Breached),
        report.count(DueSoon),
        report.count(Ok),
        report.count(Excepted)
    );
    if report.findings.is_empty() {
        let _ = writeln!(out, "\nno open findings");
        return out;
    }
    let mut table = Table::new(&["INSTANCE", "PATCH", "RANK", "DUE", "DAYS", "STATUS"]);
    for f in &report.findings {
        let due = if f.estimated { format!("~{}", date(f.due)) } else { date(f.due) };
        table.row(vec![
            f.instance_id.clone(),
            shorten(&f.patch_id, 18),
            f.rank.to_string(),
            due,
            format!("{}", f.days_left.floor() as i64),
            f.status.to_string(),
        ]);
    }
    out.push('\n');
    table.render(&mut out);
    if report.omitted > 0 {
        let _ = writeln!(
            out,
            "... and {} more open findings (--limit 0 lists all; --format csv for a spreadsheet)",
            report.omitted
        );
    }
    if report.findings.iter().any(|f| f.estimated) {
        let _ =
            writeln!(out, "~ release date unknown: the clock starts when the patch was first seen missing");
    }
    if !report.clocks.is_empty() {
        out.push('\n');
        let mut clocks = Table::new(&["PLATFORM", "OPEN", "ESTIMATED", "CLOCKS FROM"]);
        for p in &report.clocks {
            let origins: Vec<String> = p.origins.iter().map(|(label, n)| format!("{label} ({n})")).collect();
            clocks.row(vec![
                p.platform.clone(),
                p.open.to_string(),
                format!("{} ({:.0}%)", p.estimated, p.estimated_share() * 100.0),
                origins.join(", "),
            ]);
        }
        clocks.render(&mut out);
    }
    out.push('\n');
    let mut totals = Table::new(&["RANK", "BREACHED", "DUE-SOON", "OK", "EXCEPTED"]);
    for rank in patchd_config::RiskRank::ALL {
        let n = |status| report.count_of(rank, status).to_string();
        totals.row(vec![rank.to_string(), n(Breached), n(DueSoon), n(Ok), n(Excepted)]);
    }
    totals.render(&mut out);
    out
}

const FINDING_COLUMNS: &[&str] = &[
    "account",
    "region",
    "instance_id",
    "instance_name",
    "groups",
    "patch_id",
    "title",
    "severity",
    "cves",
    "rank",
    "rank_reason",
    "clock_start",
    "clock_source",
    "estimated",
    "due",
    "days_left",
    "state",
    "installed_at",
    "days_to_remediate",
    "status",
    "exception",
    "clock_origin",
];

fn finding_fields(f: &JudgedFinding) -> Vec<String> {
    vec![
        f.account.clone(),
        f.region.clone(),
        f.instance_id.clone(),
        opt(&f.instance_name),
        f.groups.join(" "),
        f.patch_id.clone(),
        opt(&f.title),
        opt(&f.severity),
        f.cves.join(" "),
        f.rank.to_string(),
        f.rank_reason.clone(),
        rfc3339(f.clock.start),
        serde_json::to_value(f.clock.source)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        f.estimated.to_string(),
        rfc3339(f.due),
        f.days_left.to_string(),
        f.state.clone(),
        f.installed_at.map(rfc3339).unwrap_or_default(),
        opt(&f.days_to_remediate),
        f.status.to_string(),
        opt(&f.exception),
        f.clock_origin.clone(),
    ]
}

pub fn findings_csv(findings: &[JudgedFinding]) -> String {
    let mut out = String::new();
    csv_line(&mut out, &FINDING_COLUMNS.iter().map(|c| c.to_string()).collect::<Vec<_>>());
    for f in findings {
        csv_line(&mut out, &finding_fields(f));
    }
    out
}

pub fn history_table(report: &HistoryReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Remediated from {} to {} (UTC)\n", minute(report.since), minute(report.until));
    let mut summary = Table::new(&["RANK", "REMEDIATED", "MET", "MISSED", "MET %", "MEDIAN DAYS"]);
    for r in &report.per_rank {
        summary.row(vec![
            r.rank.to_string(),
            r.remediated.to_string(),
            r.met.to_string(),
            r.missed.to_string(),
            r.percent_met.map_or("-".into(), |p| format!("{p:.1}")),
            r.median_days_to_remediate.map_or("-".into(), |d| format!("{d:.1}")),
        ]);
    }
    summary.render(&mut out);
    if report.remediated.is_empty() {
        let _ = writeln!(out, "\nno findings were remediated in this period");
        return out;
    }
    out.push('\n');
    let mut table = Table::new(&["INSTANCE", "PATCH", "RANK", "INSTALLED", "DAYS", "STATUS"]);
    for f in &report.remediated {
        table.row(vec![
            f.instance_id.clone(),
            shorten(&f.patch_id, 18),
            f.rank.to_string(),
            f.installed_at.map(date).unwrap_or_default(),
            f.days_to_remediate.map_or("-".into(), |d| format!("{d:.1}")),
            f.status.to_string(),
        ]);
    }
    table.render(&mut out);
    out
}

pub fn compliance_table(report: &ComplianceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Compliance at {} UTC", minute(report.at));
    for group in &report.groups {
        let percent = if group.instances == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", group.compliant as f64 * 100.0 / group.instances as f64)
        };
        let _ = writeln!(
            out,
            "\n{}: {} of {} instances compliant ({percent})",
            group.group, group.compliant, group.instances
        );
        if group.instances_detail.is_empty() {
            continue;
        }
        let mut table = Table::new(&["INSTANCE", "OK", "MISS", "FAIL", "REBOOT", "INST", "LAST SCAN"]);
        for i in &group.instances_detail {
            table.row(vec![
                i.instance_id.clone(),
                if i.compliant { "yes" } else { "no" }.to_string(),
                i.counts.missing.to_string(),
                i.counts.failed.to_string(),
                i.counts.installed_pending_reboot.to_string(),
                (i.counts.installed + i.counts.installed_other).to_string(),
                i.last_scan.map_or("never".into(), minute),
            ]);
        }
        table.render(&mut out);
    }
    out
}

pub fn compliance_csv(report: &ComplianceReport) -> String {
    let mut out = String::new();
    let header = [
        "group",
        "account",
        "region",
        "instance_id",
        "instance_name",
        "platform",
        "compliant",
        "last_scan",
        "installed",
        "installed_other",
        "installed_pending_reboot",
        "installed_rejected",
        "missing",
        "failed",
        "not_applicable",
    ];
    csv_line(&mut out, &header.map(String::from));
    for group in &report.groups {
        for i in &group.instances_detail {
            let c = &i.counts;
            csv_line(
                &mut out,
                &[
                    group.group.clone(),
                    i.account.clone(),
                    i.region.clone(),
                    i.instance_id.clone(),
                    opt(&i.instance_name),
                    opt(&i.platform),
                    i.compliant.to_string(),
                    i.last_scan.map(rfc3339).unwrap_or_default(),
                    c.installed.to_string(),
                    c.installed_other.to_string(),
                    c.installed_pending_reboot.to_string(),
                    c.installed_rejected.to_string(),
                    c.missing.to_string(),
                    c.failed.to_string(),
                    c.not_applicable.to_string(),
                ],
            );
        }
    }
    out
}

pub fn coverage_table(report: &CoverageReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Coverage at {} UTC: {} of {} in-scope instances have blind spots",
        minute(report.at),
        report.instances_with_gaps(),
        report.in_scope
    );
    if report.gaps.is_empty() {
        return out;
    }
    out.push('\n');
    let mut table = Table::new(&["INSTANCE", "GAP", "DETAIL"]);
    for g in &report.gaps {
        table.row(vec![g.instance_id.clone(), g.gap.as_str().to_string(), shorten(&g.detail, 36)]);
    }
    table.render(&mut out);
    out
}

pub fn coverage_csv(report: &CoverageReport) -> String {
    let mut out = String::new();
    let header = ["account", "region", "instance_id", "instance_name", "groups", "gap", "detail"];
    csv_line(&mut out, &header.map(String::from));
    for g in &report.gaps {
        csv_line(
            &mut out,
            &[
                g.account.clone(),
                g.region.clone(),
                g.instance_id.clone(),
                opt(&g.instance_name),
                g.groups.join(" "),
                g.gap.as_str().to_string(),
                g.detail.clone(),
            ],
        );
    }
    out
}
