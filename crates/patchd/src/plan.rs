//! `patchd plan`: upcoming window firings and the SLA feasibility table.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};
use patchd_config::feasibility::{self, Row};
use patchd_config::Config;
use serde::Serialize;

use crate::cli::{Format, GlobalArgs, PlanArgs};
use crate::{load_config, print_diagnostics, Failure};

/// `patchd plan --format json`: a stable contract, documented in docs/configuration.md.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub from: String,
    pub windows: Vec<WindowPlan>,
    pub sla_feasibility: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct WindowPlan {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub offset_days: u8,
    pub duration_hours: i64,
    pub cutoff_hours: i64,
    pub enabled: bool,
    pub next: Vec<Firing>,
}

#[derive(Debug, Serialize)]
pub struct Firing {
    /// RFC 3339 in UTC with a `Z` suffix.
    pub start: String,
    pub end: String,
    /// RFC 3339 with the window's own UTC offset at that instant.
    pub local_start: String,
}

fn utc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn build(config: &Config, from: DateTime<Utc>, count: usize) -> Plan {
    let windows = config
        .windows
        .iter()
        .map(|w| {
            let tz = w.schedule.timezone();
            WindowPlan {
                name: w.name.clone(),
                schedule: w.schedule.expression().to_string(),
                timezone: tz.name().to_string(),
                offset_days: w.schedule.offset_days(),
                duration_hours: w.duration.num_hours(),
                cutoff_hours: w.cutoff.num_hours(),
                enabled: w.enabled,
                next: w
                    .occurrences_after(from)
                    .take(count)
                    .map(|(start, end)| Firing {
                        start: utc(start),
                        end: utc(end),
                        local_start: start.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true),
                    })
                    .collect(),
            }
        })
        .collect();
    Plan { from: utc(from), windows, sla_feasibility: feasibility::analyse(config, from) }
}

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> Result<(), Failure> {
    let from = args.from.unwrap_or_else(Utc::now);
    let loaded = load_config(global, from)?;
    print_diagnostics(&loaded.warnings);
    let plan = build(&loaded.config, from, args.count as usize);
    match args.format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&plan).map_err(anyhow::Error::from)?;
            println!("{json}");
        }
        Format::Table => print!("{}", render_table(&loaded.config, &plan, from)),
    }
    Ok(())
}

fn render_table(config: &Config, plan: &Plan, from: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Window openings after {}", plan.from);
    for (window, wp) in config.windows.iter().zip(&plan.windows) {
        let tz = window.schedule.timezone();
        let offset = if wp.offset_days > 0 { format!(" + {} day(s)", wp.offset_days) } else { String::new() };
        let state = if wp.enabled { "" } else { "  [disabled]" };
        let _ = writeln!(
            out,
            "\n  {}  {}{} in {}, {} h, cutoff {} h{}",
            wp.name, wp.schedule, offset, wp.timezone, wp.duration_hours, wp.cutoff_hours, state
        );
        if wp.next.is_empty() {
            let _ = writeln!(out, "    (never opens again)");
        }
        for (start, end) in window.occurrences_after(from).take(wp.next.len()) {
            let local = start.with_timezone(&tz);
            let local_end = end.with_timezone(&tz);
            let _ = writeln!(
                out,
                "    {} - {}   {} - {}",
                local.format("%a %Y-%m-%d %H:%M %Z"),
                local_end.format("%H:%M %Z"),
                start.format("%Y-%m-%dT%H:%MZ"),
                end.format("%Y-%m-%dT%H:%MZ"),
            );
        }
    }
    let _ = writeln!(out, "\nSLA feasibility (worst case over the next {} days)", feasibility::HORIZON_DAYS);
    if plan.sla_feasibility.is_empty() {
        let _ = writeln!(out, "  no groups configured");
        return out;
    }
    let header = ["GROUP", "BASELINE", "RANK", "APPROVAL", "GAP", "WINDOW", "WORST", "SLA", ""];
    let rows: Vec<[String; 9]> = plan
        .sla_feasibility
        .iter()
        .map(|r| {
            [
                r.group.clone(),
                r.baseline.clone().unwrap_or_else(|| "(AWS default)".into()),
                r.rank.to_string(),
                format!("{} d", r.approval_delay_days),
                r.longest_gap_days.map_or("-".into(), |g| format!("{g:.1} d")),
                r.window_hours.map_or("-".into(), |h| format!("{h} h")),
                r.worst_case_days.map_or("never".into(), |w| format!("{w:.1} d")),
                format!("{} d", r.sla_days),
                if r.ok { "ok".into() } else { "CANNOT MEET SLA".into() },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from(" ");
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(s, " {cell:w$}");
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    for note in plan
        .sla_feasibility
        .iter()
        .filter_map(|r| r.note.as_ref().map(|n| (r, n)))
        .map(|(r, n)| format!("  note: {}: {n}", r.group))
        .collect::<std::collections::BTreeSet<_>>()
    {
        let _ = writeln!(out, "{note}");
    }
    out
}
