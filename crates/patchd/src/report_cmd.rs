//! `patchd report`: asks `patchd-report` for the report the arguments name, renders it, and
//! turns `--fail-on` into the exit status.

use std::io::Write as _;
use std::path::Path;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use patchd_config::RiskRank;
use patchd_report::{evidence, render, Filters, Judge, Reports, SlaReport};
use patchd_sla::SlaStatus;

use crate::cli::{FailOn, GlobalArgs, ReportArgs, ReportFormat, ReportKind};
use crate::failure::{print_diagnostics, Failure};
use crate::setup::{load_config, load_kev, open_store_read_only, warn_about_kev};

/// Findings a table lists unless `--limit` says otherwise: a screenful of the most urgent.
const DEFAULT_TABLE_LIMIT: usize = 50;

pub async fn run(global: &GlobalArgs, args: &ReportArgs) -> Result<(), Failure> {
    check_arguments(args)?;
    let at = args.at.unwrap_or_else(Utc::now);
    let loaded = load_config(global, at)?;
    print_diagnostics(&loaded.warnings);
    let config = &loaded.config;
    if let Some(group) = &args.group {
        if config.group(group).is_none() {
            let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
            return Err(anyhow::anyhow!(
                "--group {group}: no such group; configured groups: {}",
                names.join(", ")
            )
            .into());
        }
    }
    let store = open_store_read_only(config).await?;
    let kev = load_kev(config);
    warn_about_kev(&kev);
    let filters = Filters { group: args.group.clone(), rank: args.rank.as_deref().and_then(RiskRank::parse) };
    let judge = Judge { config, kev: &kev.catalog, at };
    let reports = Reports::read(&store, judge, args.account.as_deref(), args.region.as_deref()).await?;
    // --fail-on judges the SLA report; the verdict waits until the report is written, so a
    // pipeline that fails still has the report to show.
    let mut verdict = Ok(());
    let output = match args.kind {
        ReportKind::Evidence => {
            let (since, until) = period(args, at)?;
            let sla = reports.sla(&filters).await?;
            let history = reports.history(&filters, since, until).await?;
            let place = reports.place();
            let promotions = store.promotions_between(since, until).await.map_err(anyhow::Error::from)?;
            verdict = fail_on(args.fail_on, &sla);
            evidence::render(&evidence::Evidence {
                config,
                generated_at: Utc::now().trunc_subsecs(0),
                version: env!("CARGO_PKG_VERSION"),
                group: args.group.as_deref(),
                account: place.account(),
                account_name: place.account_name(),
                region: place.region(),
                sla: &sla,
                history: &history,
                coverage: &reports.coverage(&filters),
                compliance: &reports.compliance(&filters),
                promotions: &promotions,
            })
        }
        ReportKind::Sla => {
            let started = std::time::Instant::now();
            let limit = match (args.limit, args.format) {
                (Some(0), _) | (None, ReportFormat::Json | ReportFormat::Csv | ReportFormat::Html) => None,
                (Some(n), _) => Some(n),
                (None, ReportFormat::Table) => Some(DEFAULT_TABLE_LIMIT),
            };
            let sla = match limit {
                None => reports.sla(&filters).await?,
                Some(limit) => reports.sla_summary(&filters, limit).await?,
            };
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "judged");
            let out = match args.format {
                ReportFormat::Table => render::sla_table(&sla),
                ReportFormat::Json => render::json(&sla),
                ReportFormat::Csv | ReportFormat::Html => render::findings_csv(&sla.findings),
            };
            tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, bytes = out.len(), "rendered");
            verdict = fail_on(args.fail_on, &sla);
            out
        }
        ReportKind::History => {
            let (since, until) = period(args, at)?;
            let history = reports.history(&filters, since, until).await?;
            match args.format {
                ReportFormat::Table => render::history_table(&history),
                ReportFormat::Json => render::json(&history),
                ReportFormat::Csv | ReportFormat::Html => render::findings_csv(&history.remediated),
            }
        }
        ReportKind::Compliance => {
            let compliance = reports.compliance(&filters);
            match args.format {
                ReportFormat::Table => render::compliance_table(&compliance),
                ReportFormat::Json => render::json(&compliance),
                ReportFormat::Csv | ReportFormat::Html => render::compliance_csv(&compliance),
            }
        }
        ReportKind::Coverage => {
            let coverage = reports.coverage(&filters);
            match args.format {
                ReportFormat::Table => render::coverage_table(&coverage),
                ReportFormat::Json => render::json(&coverage),
                ReportFormat::Csv | ReportFormat::Html => render::coverage_csv(&coverage),
            }
        }
    };
    match &args.out {
        Some(path) => {
            write_atomically(path, output.as_bytes())
                .map_err(|e| anyhow::anyhow!("cannot write the report to {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{output}"),
    }
    verdict
}

/// Refuses combinations that would silently produce something else than asked for.
fn check_arguments(args: &ReportArgs) -> Result<(), Failure> {
    if (args.kind == ReportKind::Evidence) != (args.format == ReportFormat::Html) {
        return Err(anyhow::anyhow!(
            "the evidence report is HTML only, and only it is: use `report evidence --format html --out FILE`"
        )
        .into());
    }
    // The evidence is the whole picture: its headline figures must equal the unfiltered sla and
    // history reports, so it takes no filter that would change them behind the reader's back.
    if args.kind == ReportKind::Evidence && (args.rank.is_some() || args.limit.is_some()) {
        return Err(anyhow::anyhow!(
            "report evidence covers every rank and lists every critical and high finding: drop --rank and --limit"
        )
        .into());
    }
    Ok(())
}

/// The remediation period of `history` and `evidence`: `--since` (default 90 days before
/// `--until`) to `--until` (exclusive, default `--at`).
fn period(args: &ReportArgs, at: DateTime<Utc>) -> Result<(DateTime<Utc>, DateTime<Utc>), Failure> {
    let until = args.until.unwrap_or(at);
    let since = args.since.unwrap_or(until - Duration::days(90));
    if since >= until {
        return Err(anyhow::anyhow!("--since {since} must be before --until {until}").into());
    }
    Ok((since, until))
}

/// Writes `bytes` to `path` so that a reader (or a crash) sees the old file or the whole new
/// one, never a half-written report: a temporary file in the same directory (a rename is only
/// atomic within one file system), flushed to disk, then renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names a directory, not a file")
    })?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(name);
    temp_name.push(format!(".{}.tmp", std::process::id()));
    let temp = dir.join(temp_name);
    let written = (|| {
        let mut file = std::fs::File::create_new(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

fn fail_on(threshold: Option<FailOn>, sla: &SlaReport) -> Result<(), Failure> {
    let breached = sla.count(SlaStatus::Breached);
    let due_soon = sla.count(SlaStatus::DueSoon);
    match threshold {
        Some(FailOn::Breached) if breached > 0 => Err(Failure::PolicyViolation(format!(
            "{breached} finding(s) breached their SLA (--fail-on breached)"
        ))),
        Some(FailOn::DueSoon) if breached + due_soon > 0 => Err(Failure::PolicyViolation(format!(
            "{breached} finding(s) breached and {due_soon} due soon (--fail-on due-soon)"
        ))),
        _ => Ok(()),
    }
}
