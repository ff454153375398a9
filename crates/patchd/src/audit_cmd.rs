//! `patchd audit`: the audit log, oldest first.

use chrono::{DateTime, Utc};
use patchd_report::render::{rfc3339, shorten, Table};
use patchd_store::AuditRecord;
use serde_json::json;

use crate::cli::{AuditArgs, Format, GlobalArgs};
use crate::failure::{print_diagnostics, Failure};
use crate::setup::{load_config, open_store_read_only};

/// Characters of the details column in the table; JSON has them whole.
const DETAILS_WIDTH: usize = 60;

pub async fn run(global: &GlobalArgs, args: &AuditArgs) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    print_diagnostics(&loaded.warnings);
    let store = open_store_read_only(&loaded.config).await?;
    let since = args.since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
    let entries = store
        .audit_since(since, None)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read the audit log: {e}"))?;
    store.close().await;
    let out = match args.format {
        Format::Table => table(&entries),
        Format::Json => json_lines(&entries),
    };
    print!("{out}");
    Ok(())
}

fn table(entries: &[AuditRecord]) -> String {
    let mut out = String::new();
    if entries.is_empty() {
        out.push_str("no audit entries\n");
        return out;
    }
    let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "TARGET", "COMMAND", "REQUEST", "DETAILS"]);
    let dash = || "-".to_string();
    for e in entries {
        t.row(vec![
            rfc3339(e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.as_deref().map_or_else(dash, |s| shorten(s, 40)),
            e.command_id.clone().unwrap_or_else(dash),
            e.request_id.clone().unwrap_or_else(dash),
            e.details.as_ref().map_or_else(dash, |d| shorten(&d.to_string(), DETAILS_WIDTH)),
        ]);
    }
    t.render(&mut out);
    out
}

/// A JSON array of the entries, details whole.
fn json_lines(entries: &[AuditRecord]) -> String {
    let rows: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            json!({
                "id": e.id.get(),
                "at": rfc3339(e.at),
                "actor": e.actor,
                "action": e.action,
                "target": e.target,
                "command_id": e.command_id,
                "request_id": e.request_id,
                "details": e.details,
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
}
