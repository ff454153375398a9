//! The store's performance targets, measured:
//!
//! 1. ingesting 1,000,000 finding rows into SQLite through `record_sync` at no less than half
//!    the rate of a raw SQLite bulk insert of the same rows (a prepared INSERT executed per row
//!    in one transaction, through sqlx, into a table of the same shape), both in this run;
//! 2. reading all open findings of 10,000 instances x 100 patches for a report, with the
//!    query plans showing the indexes in use.
//!
//! `cargo run --release -p patchd-store --example store_bench [-- --instances N --patches M
//! --batch B --postgres URL]`. With `--postgres` (or `PATCHD_BENCH_POSTGRES_URL`), the store
//! half also runs against PostgreSQL, in a schema of its own that is dropped afterwards.

#[path = "../tests/common/fleet.rs"]
mod fleet;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use fleet::Fleet;
use patchd_store::{
    ComplianceSync, FindingCursor, FindingQuery, FindingStatus, InstanceScan, OpenOptions, PatchState, Store,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Executor, Row};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    instances: usize,
    patches: usize,
    batch: usize,
    postgres: Option<String>,
}

fn args() -> Result<Args, Error> {
    let mut args = Args {
        instances: 10_000,
        patches: 100,
        batch: 10_000,
        postgres: std::env::var("PATCHD_BENCH_POSTGRES_URL").ok().filter(|u| !u.is_empty()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--instances" => args.instances = value.parse()?,
            "--patches" => args.patches = value.parse()?,
            "--batch" => args.batch = value.parse::<usize>()?.max(1),
            "--postgres" => args.postgres = Some(value),
            other => {
                return Err(
                    format!("unknown flag {other}: use --instances, --patches, --batch, --postgres").into()
                )
            }
        }
    }
    Ok(args)
}

fn t(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).single().unwrap_or_default() + chrono::Duration::hours(hours)
}

fn per_second(rows: usize, elapsed: Duration) -> f64 {
    rows as f64 / elapsed.as_secs_f64()
}

fn thousands(n: f64) -> String {
    let n = n.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The raw baseline: the `findings` table's shape (columns, primary key, checks, indexes;
/// no foreign keys, since there are no parent rows), one prepared INSERT per row, one
/// transaction, the store's connect options.
async fn raw_insert(
    path: &Path,
    instances: usize,
    patches: usize,
    multi_row: bool,
) -> Result<Duration, Error> {
    let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
    conn.execute(
        "CREATE TABLE raw_findings (
            instance_ref INTEGER NOT NULL, patch_ref INTEGER NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('MISSING', 'FAILED', 'INSTALLED_PENDING_REBOOT',
                'AVAILABLE_SECURITY_UPDATE', 'INSTALLED_REJECTED', 'INSTALLED', 'INSTALLED_OTHER')),
            first_seen_missing TEXT NOT NULL, last_seen TEXT NOT NULL, installed_at TEXT,
            PRIMARY KEY (instance_ref, patch_ref),
            CHECK ((installed_at IS NULL) = (state NOT IN ('INSTALLED', 'INSTALLED_OTHER')))
        ) STRICT, WITHOUT ROWID;
        CREATE INDEX raw_open
            ON raw_findings (instance_ref, patch_ref, state, first_seen_missing, last_seen, installed_at)
            WHERE installed_at IS NULL;
        CREATE INDEX raw_remediated ON raw_findings (installed_at) WHERE installed_at IS NOT NULL;
        CREATE INDEX raw_patch ON raw_findings (patch_ref);",
    )
    .await?;
    let at = t(0);
    let start = Instant::now();
    let mut tx = conn.begin().await?;
    if multi_row {
        // For context only: the same rows with the store's own technique, as many
        // `(?, ?, ?, ?, ?, ?)` tuples per statement as SQLite's 32,766 parameters allow.
        let keys: Vec<(i64, i64)> =
            (1..=instances as i64).flat_map(|i| (1..=patches as i64).map(move |p| (i, p))).collect();
        for chunk in keys.chunks(32_766 / 6) {
            let tuples = vec!["(?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO raw_findings (instance_ref, patch_ref, state, first_seen_missing, last_seen, \
                 installed_at) \
                 VALUES {tuples}"
            );
            let mut query = sqlx::query(&sql);
            for (i, p) in chunk {
                query = query.bind(i).bind(p).bind("MISSING").bind(at).bind(at).bind(None::<DateTime<Utc>>);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        let elapsed = start.elapsed();
        conn.close().await?;
        return Ok(elapsed);
    }
    for i in 1..=instances as i64 {
        for p in 1..=patches as i64 {
            sqlx::query(
                "INSERT INTO raw_findings (instance_ref, patch_ref, state, first_seen_missing, last_seen, \
                 installed_at) \
                 VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(i)
            .bind(p)
            .bind("MISSING")
            .bind(at)
            .bind(at)
            .bind(None::<DateTime<Utc>>)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let elapsed = start.elapsed();
    conn.close().await?;
    Ok(elapsed)
}

/// A finding row as the raw table holds it.
type RawFinding = (i64, i64, String, DateTime<Utc>, DateTime<Utc>, Option<DateTime<Utc>>);

/// The read baseline: the same rows straight out of the raw table through sqlx, decoded into
/// the same Rust types, with no store logic.
async fn raw_read(path: &Path) -> Result<(Duration, usize), Error> {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let start = Instant::now();
    let rows = sqlx::query(
        "SELECT instance_ref, patch_ref, state, first_seen_missing, last_seen, installed_at FROM \
         raw_findings \
         WHERE installed_at IS NULL ORDER BY instance_ref, patch_ref",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut n = 0;
    for row in &rows {
        let decoded: RawFinding = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
            row.try_get(5)?,
        );
        n += usize::from(decoded.5.is_none());
    }
    let elapsed = start.elapsed();
    conn.close().await?;
    Ok((elapsed, n))
}

/// Records every instance's scan, `batch` instances per sync; returns the time and the number
/// of syncs.
async fn ingest(
    store: &Store,
    scans: &[InstanceScan<'_>],
    batch: usize,
    at: DateTime<Utc>,
) -> Result<(Duration, usize), Error> {
    let start = Instant::now();
    let mut syncs = 0;
    for chunk in scans.chunks(batch) {
        store.record_sync(&ComplianceSync { source: "bench", started_at: at, scans: chunk }).await?;
        syncs += 1;
    }
    Ok((start.elapsed(), syncs))
}

/// Reads every open finding, page by page; returns the time and the number read.
async fn read_open(store: &Store, page: Option<u32>) -> Result<(Duration, usize), Error> {
    let start = Instant::now();
    let mut after: Option<FindingCursor> = None;
    let mut n = 0;
    loop {
        let query =
            FindingQuery { status: Some(FindingStatus::Open), after, limit: page, ..FindingQuery::default() };
        let result = store.findings(&query).await?;
        n += result.findings.len();
        match result.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok((start.elapsed(), n))
}

async fn bench_store(
    label: &str,
    store: &Store,
    fleet: &Fleet,
    args: &Args,
    raw: Option<Duration>,
) -> Result<(), Error> {
    let rows = fleet.instance_ids.len() * fleet.patch_ids.len();
    let missing = fleet.observations(PatchState::Missing);
    let scans = fleet.scans(&missing, t(0));

    let stats = store.stats();
    let (elapsed, syncs) = ingest(store, &scans, args.batch, t(0)).await?;
    let used = store.stats();
    let rate = per_second(rows, elapsed);
    println!(
        "{label}: ingest {} findings (+ as many transitions) in {syncs} sync(s): {:.2} s, {} rows/s, \
         {} transactions, {} statements",
        thousands(rows as f64),
        elapsed.as_secs_f64(),
        thousands(rate),
        used.transactions - stats.transactions,
        used.statements - stats.statements,
    );
    if let Some(raw) = raw {
        let raw_rate = per_second(rows, raw);
        println!(
            "{label}: store / raw = {:.2} (target >= 0.50): {}",
            rate / raw_rate,
            if rate >= raw_rate / 2.0 { "met" } else { "NOT MET" }
        );
    }

    let scans = fleet.scans(&missing, t(24));
    let (elapsed, _) = ingest(store, &scans, args.batch, t(24)).await?;
    println!(
        "{label}: re-sync a day later, nothing changed ({} findings seen again): {:.2} s",
        thousands(rows as f64),
        elapsed.as_secs_f64()
    );

    for page in [Some(10_000), Some(100_000), None] {
        let (elapsed, n) = read_open(store, page).await?;
        println!(
            "{label}: read all open findings ({}), {}: {:.2} s, {} rows/s",
            thousands(n as f64),
            page.map_or_else(|| "one query".to_string(), |p| format!("pages of {}", thousands(f64::from(p)))),
            elapsed.as_secs_f64(),
            thousands(per_second(n, elapsed))
        );
    }

    let first =
        FindingQuery { status: Some(FindingStatus::Open), limit: Some(10_000), ..FindingQuery::default() };
    let page = store.findings(&first).await?;
    let later = FindingQuery { after: page.next, ..first };
    let period = FindingQuery {
        remediated_since: Some(t(0)),
        remediated_until: Some(t(24 * 30)),
        limit: Some(10_000),
        ..FindingQuery::default()
    };
    for (name, query) in
        [("open, first page", first), ("open, next page", later), ("remediated in a period", period)]
    {
        println!("{label}: plan for {name}:");
        for line in store.explain_findings(&query).await? {
            println!("    {line}");
        }
    }
    Ok(())
}

fn file_size(path: &Path) -> u64 {
    ["", "-wal"]
        .iter()
        .map(|suffix| {
            let mut p = path.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(PathBuf::from(p)).map(|m| m.len()).unwrap_or(0)
        })
        .sum()
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = args()?;
    let dir = std::env::temp_dir().join(format!("patchd-store-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let fleet = Fleet::new(args.instances, args.patches);
    let rows = args.instances * args.patches;
    println!("{} instances x {} patches = {} findings", args.instances, args.patches, thousands(rows as f64));

    let raw_path = dir.join("raw.db");
    let raw = raw_insert(&raw_path, args.instances, args.patches, false).await?;
    println!(
        "raw sqlite: prepared INSERT per row, one transaction: {:.2} s, {} rows/s",
        raw.as_secs_f64(),
        thousands(per_second(rows, raw))
    );
    let multi = raw_insert(&dir.join("raw-multi.db"), args.instances, args.patches, true).await?;
    println!(
        "raw sqlite: multi-row INSERT, one transaction (context): {:.2} s, {} rows/s",
        multi.as_secs_f64(),
        thousands(per_second(rows, multi))
    );

    let (elapsed, n) = raw_read(&raw_path).await?;
    println!(
        "raw sqlite: read {} rows back through sqlx: {:.2} s, {} rows/s",
        thousands(n as f64),
        elapsed.as_secs_f64(),
        thousands(per_second(n, elapsed))
    );

    let store_path = dir.join("store.db");
    let store = Store::open(&format!("sqlite://{}", store_path.display()), &OpenOptions::default()).await?;
    bench_store("sqlite", &store, &fleet, &args, Some(raw)).await?;
    store.close().await;
    println!("sqlite: database size {} MB", file_size(&store_path) / 1_000_000);

    if let Some(url) = &args.postgres {
        let schema = format!("patchd_bench_{}", std::process::id());
        let mut admin = sqlx::PgConnection::connect(url).await?;
        admin.execute(format!("CREATE SCHEMA {schema}").as_str()).await?;
        let separator = if url.contains('?') { '&' } else { '?' };
        let result = async {
            let store = Store::open(
                &format!("{url}{separator}options[search_path]={schema}"),
                &OpenOptions::default(),
            )
            .await?;
            bench_store("postgres", &store, &fleet, &args, None).await?;
            store.close().await;
            Ok::<(), Error>(())
        }
        .await;
        admin.execute(format!("DROP SCHEMA {schema} CASCADE").as_str()).await?;
        result?;
    }

    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
