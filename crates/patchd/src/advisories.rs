//! `patchd advisories sync|status|import`: vendor release dates from outside SSM.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use patchd_advisories::AdvisoryIndex;
use patchd_daemon::feeds::{self, FeedBook, FeedReport, Selection};
use patchd_store::{FeedFetch, FeedStatus};

use crate::cli::{AdvisoriesCommand, Format, GlobalArgs};
use crate::failure::Failure;
use crate::setup::{load_config, open_store, open_store_read_only};

pub async fn run(global: &GlobalArgs, command: &AdvisoriesCommand) -> Result<(), Failure> {
    match command {
        AdvisoriesCommand::Sync { source } => sync(global, source.as_deref()).await,
        AdvisoriesCommand::Status { format } => status(global, *format).await,
        AdvisoriesCommand::Import { files } => import(global, files).await,
    }
}

async fn sync(global: &GlobalArgs, only: Option<&str>) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    let config = &loaded.config;
    let specs = feeds::feed_specs(config);
    if specs.is_empty() {
        return Err(anyhow::anyhow!(
            "nothing to fetch: the configuration has no [[advisories.source]] and no `kev_catalog` URL; \
             see docs/configuration.md, section [[advisories.source]]"
        )
        .into());
    }
    if let Some(name) = only {
        if !specs.iter().any(|s| s.name == name) {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(anyhow::anyhow!("no feed named `{name}`; configured: {}", names.join(", ")).into());
        }
    }
    let store = open_store(config).await?;
    let book = FeedBook::new(config);
    let interactive = std::io::stderr().is_terminal();
    let progress = move |name: &str, page: u32, bytes: u64| {
        if interactive {
            eprint!("\r\x1b[K{name}: page {page}, {}", human_bytes(bytes));
            let _ = std::io::stderr().flush();
        }
    };
    let selection = only.map_or(Selection::All, Selection::Named);
    let outcome = book
        .refresh(config, &store, selection, &progress)
        .await
        .map_err(|e| anyhow::anyhow!("feeds not recorded in the database: {e}"))?;
    if interactive {
        eprint!("\r\x1b[K");
    }
    for feed in &outcome.feeds {
        println!("{}", feed_line(feed));
    }
    let count = |f: fn(&FeedFetch) -> bool| outcome.feeds.iter().filter(|r| f(&r.outcome)).count();
    let imported = count(|o| matches!(o, FeedFetch::Imported { .. }));
    let unchanged = count(|o| matches!(o, FeedFetch::NotModified));
    let failed = outcome.failed().count();
    println!(
        "{} feed(s): {imported} imported, {unchanged} not modified, {failed} failed; {} patch release date(s) set or changed",
        outcome.feeds.len(),
        outcome.dated
    );
    if failed > 0 {
        return Err(anyhow::anyhow!(
            "{failed} feed(s) not refreshed; their last good data stays in use (see `patchd advisories status`)"
        )
        .into());
    }
    Ok(())
}

fn feed_line(feed: &FeedReport) -> String {
    let seconds = feed.elapsed.as_secs_f64();
    match &feed.outcome {
        FeedFetch::Imported { advisories } => format!(
            "{:<20} imported {advisories} entries ({}) in {seconds:.1} s",
            feed.name,
            human_bytes(feed.bytes)
        ),
        FeedFetch::NotModified => {
            format!("{:<20} not modified; {} entries in use", feed.name, feed.entries)
        }
        FeedFetch::Failed { error } => format!(
            "{:<20} FAILED: {error}; keeping the last good data ({} entries)",
            feed.name, feed.entries
        ),
    }
}

fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * 1024 => format!("{:.1} MB", b as f64 / (1024.0 * 1024.0)),
        b if b >= 1024 => format!("{:.1} kB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

async fn status(global: &GlobalArgs, format: Format) -> Result<(), Failure> {
    let now = Utc::now();
    let loaded = load_config(global, now)?;
    let config = &loaded.config;
    let store = open_store_read_only(config).await?;
    let recorded = store.feed_status().await.map_err(|e| anyhow::anyhow!("cannot read feed status: {e}"))?;
    let rows = status_rows(&feeds::feed_specs(config), recorded);
    match format {
        Format::Json => {
            let json: Vec<serde_json::Value> = rows
                .iter()
                .map(|row| {
                    serde_json::json!({
                        "name": row.name,
                        "kind": row.kind,
                        "location": row.location,
                        "configured": row.configured,
                        "last_success_at": row.status.as_ref().and_then(|s| s.last_success_at),
                        "last_attempt_at": row.status.as_ref().and_then(|s| s.last_attempt_at),
                        "last_changed_at": row.status.as_ref().and_then(|s| s.last_changed_at),
                        "advisories": row.status.as_ref().map_or(0, |s| s.advisories),
                        "failures": row.status.as_ref().map_or(0, |s| s.failures),
                        "last_error": row.status.as_ref().and_then(|s| s.last_error.clone()),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json).map_err(anyhow::Error::from)?);
        }
        Format::Table => {
            if rows.is_empty() {
                println!("no feeds: the configuration has no [[advisories.source]] and no `kev_catalog` URL");
                return Ok(());
            }
            println!(
                "{:<20} {:<13} {:>10}  {:<20} {:>7}  {:>8}  LAST ERROR",
                "FEED", "KIND", "ADVISORIES", "LAST SUCCESS", "AGE", "FAILURES"
            );
            for row in &rows {
                let status = row.status.as_ref();
                let success = status.and_then(|s| s.last_success_at);
                let name =
                    if row.configured { row.name.clone() } else { format!("{} (not configured)", row.name) };
                println!(
                    "{:<20} {:<13} {:>10}  {:<20} {:>7}  {:>8}  {}",
                    name,
                    row.kind,
                    status.map_or(0, |s| s.advisories),
                    success.map_or("never".to_string(), |t| t.format("%Y-%m-%d %H:%M UTC").to_string()),
                    success.map_or("-".to_string(), |t| age(now, t)),
                    status.map_or(0, |s| s.failures),
                    status.and_then(|s| s.last_error.as_deref()).unwrap_or("-"),
                );
            }
        }
    }
    Ok(())
}

struct StatusRow {
    name: String,
    kind: String,
    location: String,
    configured: bool,
    status: Option<FeedStatus>,
}

/// Configured feeds first (in configuration order, even if never fetched), then feeds the
/// database remembers that the configuration no longer has.
fn status_rows(specs: &[feeds::FeedSpec], mut recorded: Vec<FeedStatus>) -> Vec<StatusRow> {
    let mut rows = Vec::new();
    for spec in specs {
        let status = recorded.iter().position(|s| s.name == spec.name).map(|i| recorded.remove(i));
        rows.push(StatusRow {
            name: spec.name.clone(),
            kind: spec.kind_name().to_string(),
            location: spec.location.to_string(),
            configured: true,
            status,
        });
    }
    rows.extend(recorded.into_iter().map(|s| StatusRow {
        name: s.name.clone(),
        kind: s.kind.clone(),
        location: s.location.clone(),
        configured: false,
        status: Some(s),
    }));
    rows
}

fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let minutes = (now - then).num_minutes().max(0);
    match minutes {
        m if m < 60 => format!("{m}m"),
        m if m < 48 * 60 => format!("{}h", m / 60),
        m => format!("{}d", m / (24 * 60)),
    }
}

async fn import(global: &GlobalArgs, files: &[PathBuf]) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    // Every file is parsed before anything is written: one bad line imports nothing.
    let mut index = AdvisoryIndex::new();
    let mut total = 0;
    for file in files {
        let text = std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let origin = file.display().to_string();
        let text = patchd_advisories::decompress(&origin, &text, usize::MAX)
            .map_err(|e| anyhow::anyhow!("{e}; nothing imported"))?;
        let text = patchd_advisories::into_text(&origin, text)
            .map_err(|e| anyhow::anyhow!("{e}; nothing imported"))?;
        let (kind, advisories) = patchd_advisories::parse_file(&origin, &text)
            .map_err(|e| anyhow::anyhow!("{e}; nothing imported"))?;
        println!("{}: {} advisories ({})", file.display(), advisories.len(), kind.name());
        total += advisories.len();
        index.add(&import_source(file), &advisories);
    }
    let store = open_store(&loaded.config).await?;
    let changed =
        feeds::apply_dates(&store, &index).await.map_err(|e| anyhow::anyhow!("import failed: {e}"))?;
    println!("imported {total} release dates ({changed} patches new or changed)");
    Ok(())
}

/// The source a manual import's dates are labelled with in reports.
fn import_source(file: &Path) -> String {
    format!(
        "import:{}",
        file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned())
    )
}
