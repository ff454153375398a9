//! `patchd baseline preview`: which patches a configured baseline approves, and when.

use std::fmt::Write as _;

use anyhow::anyhow;
use chrono::{DateTime, Utc};
use patchd_config::{Baseline, RejectedPatchesAction};
use patchd_daemon::preview::{self, ApprovedBy, Preview, Row, Status, Verdict};
use patchd_daemon::{Context, Publisher};
use patchd_report::render::{rfc3339, Table};
use serde::Serialize;

use crate::cli::{Format, GlobalArgs, PreviewArgs};
use crate::connect::scoped_clients;
use crate::failure::Failure;
use crate::setup::{load_config, log_warnings, open_store_read_only};

pub async fn preview(global: &GlobalArgs, args: &PreviewArgs) -> Result<(), Failure> {
    let now = Utc::now();
    let at = args.at.unwrap_or(now);
    let loaded = load_config(global, now)?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    let Some(baseline) = config.baseline(&args.name) else {
        let names: Vec<&str> = config.baselines.iter().map(|b| b.name.as_str()).collect();
        let known = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        return Err(anyhow!(
            "no [[baseline]] named `{}` in the configuration; configured baselines: {known}",
            args.name
        )
        .into());
    };
    // A preview only reads: the database (imported advisories, synced patches) is opened
    // without creating or migrating it, first, so that a wrong path fails before AWS is asked,
    // and connecting records nothing in it.
    let store = open_store_read_only(&config).await?;
    let Some((scope, aws)) = scoped_clients(&config).await?.into_iter().next() else {
        return Err(anyhow!("no account and region is configured").into());
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let ctx = Context { aws, store, scope, actor: format!("cli:{user}"), events: Publisher::default() };
    let preview = preview::preview(&ctx, baseline, at).await.map_err(|e| anyhow!("{e}"))?;
    match args.format {
        Format::Table => print!("{}", render_table(baseline, &preview)),
        Format::Json => print!("{}", render_json(baseline, &preview)),
    }
    Ok(())
}

fn date(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn rejected_note(action: RejectedPatchesAction) -> &'static str {
    match action {
        RejectedPatchesAction::Block => "rejected (blocked)",
        RejectedPatchesAction::AllowAsDependency => "rejected (allowed as dependency)",
    }
}

/// `rule[N]` counts from 1, as `patchd apply` names rules.
fn approved_by(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Approved { by: ApprovedBy::Rule(index), .. } | Verdict::Undated { rule: index, .. } => {
            format!("rule[{}]", index + 1)
        }
        Verdict::Approved { by: ApprovedBy::ApprovedPatches, .. } => "approved_patches".to_string(),
        Verdict::NotApproved | Verdict::Rejected { .. } => "-".to_string(),
    }
}

fn approved_cell(row: &Row) -> String {
    match (row.status, &row.verdict) {
        (Status::Approved, Verdict::Approved { from: Some(from), .. }) => date(*from),
        (Status::Approved, _) => "approved".to_string(),
        (Status::Pending, Verdict::Approved { from: Some(from), .. }) => {
            format!("pending until {}", date(*from))
        }
        (Status::Pending, _) => "pending".to_string(),
        (Status::Undated, _) => "unknown: no release date".to_string(),
        (Status::NotApproved, _) => "not approved".to_string(),
        (Status::Rejected, Verdict::Rejected { action }) => rejected_note(*action).to_string(),
        (Status::Rejected, _) => "rejected".to_string(),
    }
}

pub(crate) fn render_table(baseline: &Baseline, preview: &Preview) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "baseline {} ({}) at {}",
        baseline.name,
        baseline.operating_system,
        rfc3339(preview.at)
    );
    let mut table =
        Table::new(&["PATCH", "CLASSIFICATION", "SEVERITY", "RELEASED", "APPROVED", "RULE", "COMPLIANCE"]);
    for row in &preview.rows {
        let released = match (row.patch.released, row.patch.release_source) {
            (Some(at), Some(source)) => format!("{} ({source})", date(at)),
            (Some(at), None) => date(at),
            (None, _) => "unknown".to_string(),
        };
        table.row(vec![
            row.patch.id.clone(),
            row.patch.classification.clone().unwrap_or_else(|| "-".into()),
            row.patch.display_severity().unwrap_or("-").to_string(),
            released,
            approved_cell(row),
            approved_by(&row.verdict),
            row.verdict.compliance_level().unwrap_or("-").to_string(),
        ]);
    }
    table.render(&mut out);
    let t = preview.totals;
    let _ = writeln!(
        out,
        "{} patches: {} approved now, {} pending later, {} undated, {} not approved, {} rejected",
        preview.rows.len(),
        t.approved,
        t.pending,
        t.undated,
        t.not_approved,
        t.rejected
    );
    out
}

/// The JSON contract, documented in docs/baselines.md.
#[derive(Serialize)]
struct JsonPreview<'a> {
    baseline: &'a str,
    operating_system: &'a str,
    at: DateTime<Utc>,
    patches: Vec<JsonPatch<'a>>,
    totals: JsonTotals,
}

#[derive(Serialize)]
struct JsonPatch<'a> {
    id: &'a str,
    title: Option<&'a str>,
    classification: Option<&'a str>,
    severity: Option<&'a str>,
    product: Option<&'a str>,
    released: Option<DateTime<Utc>>,
    release_source: Option<&'static str>,
    status: &'static str,
    approved_at: Option<DateTime<Utc>>,
    approved_by: Option<&'static str>,
    rule: Option<usize>,
    compliance_level: Option<&'static str>,
    rejected_action: Option<&'static str>,
}

#[derive(Serialize)]
struct JsonTotals {
    approved: usize,
    pending: usize,
    undated: usize,
    not_approved: usize,
    rejected: usize,
}

pub(crate) fn render_json(baseline: &Baseline, preview: &Preview) -> String {
    let patches = preview
        .rows
        .iter()
        .map(|row| {
            let (approved_by, rule) = match row.verdict {
                Verdict::Approved { by: ApprovedBy::Rule(i), .. } | Verdict::Undated { rule: i, .. } => {
                    (Some("rule"), Some(i + 1))
                }
                Verdict::Approved { by: ApprovedBy::ApprovedPatches, .. } => (Some("approved_patches"), None),
                Verdict::NotApproved | Verdict::Rejected { .. } => (None, None),
            };
            JsonPatch {
                id: &row.patch.id,
                title: row.patch.title.as_deref(),
                classification: row.patch.classification.as_deref(),
                severity: row.patch.display_severity(),
                product: row.patch.product.as_deref(),
                released: row.patch.released,
                release_source: row.patch.release_source.map(|s| s.as_str()),
                status: row.status.as_str(),
                approved_at: row.verdict.approved_from(),
                approved_by,
                rule,
                compliance_level: row.verdict.compliance_level(),
                rejected_action: match row.verdict {
                    Verdict::Rejected { action } => Some(action.as_ssm()),
                    _ => None,
                },
            }
        })
        .collect();
    let t = preview.totals;
    let document = JsonPreview {
        baseline: &baseline.name,
        operating_system: baseline.operating_system.as_str(),
        at: preview.at,
        patches,
        totals: JsonTotals {
            approved: t.approved,
            pending: t.pending,
            undated: t.undated,
            not_approved: t.not_approved,
            rejected: t.rejected,
        },
    };
    // Only strings, numbers and timestamps: serialising cannot fail.
    serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
}
