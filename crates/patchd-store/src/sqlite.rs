//! SQLite: connect options, and bulk writes as multi-row `INSERT ... VALUES (...), (...)`
//! chunked under the bind-parameter limit.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use patchd_config::Operation;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    Sqlite, SqliteArguments, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool,
    SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Pool, Row, Transaction};

use crate::dialect::{Dialect, FindingRow, InstanceIdRow, TransitionRow};
use crate::plan::{PatchWrite, Prior, PriorFinding, SummaryWrite};
use crate::types::{
    InstanceKey, InstanceObservation, InvocationObservation, OpenOptions, PatchState, ReleaseSource,
    SyncReport,
};
use crate::{Counters, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

/// Applies pending migrations, then checks that every reference still has its row: a rebuilt
/// table that lost or renumbered a row would otherwise go unnoticed with foreign keys off.
async fn migrate_checked(conn: &mut SqliteConnection) -> Result<(), MigrateError> {
    MIGRATOR.run_direct(&mut *conn).await?;
    let dangling: Vec<SqliteRow> = sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *conn).await?;
    if let Some(row) = dangling.first() {
        let table: String = row.try_get(0).unwrap_or_default();
        return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
            "after migrating, {} row(s) of table {table} reference rows that do not exist",
            dangling.len()
        ))));
    }
    Ok(())
}

/// SQLite's limit on bind parameters per statement (the default since 3.32, and the bundled
/// library's).
const MAX_BINDS: usize = 32_766;

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

pub(crate) async fn connect(url: &str, options: &OpenOptions) -> Result<SqlitePool, sqlx::Error> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let connect = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL, not the usual NORMAL: in WAL mode NORMAL may lose the last commits on power
        // loss, and a committed sync is evidence. Syncs are few, large transactions, so the
        // extra fsync per commit costs nothing measurable.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout)
        // The default 2 MB page cache makes a sync of a million findings spill and re-read
        // index pages; 64 MB holds the hot parts of the indexes. Memory is only taken as used.
        .pragma("cache_size", "-65536")
        .analysis_limit(400)
        .optimize_on_close(true, 400);
    let pool = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
    let pool = if memory {
        // Each connection to `:memory:` is a database of its own, and the last connection to
        // close destroys it: one connection, kept forever.
        pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
    } else {
        pool.max_connections(options.max_connections.max(1))
    };
    pool.connect_with(connect).await
}

/// `(?, ?), (?, ?), ...`: `n` copies of a row tuple.
fn tuples(tuple: &str, n: usize) -> String {
    let mut sql = String::with_capacity((tuple.len() + 2) * n);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(tuple);
    }
    sql
}

/// A statement whose text depends on its number of rows: not kept in the connection's
/// prepared-statement cache. Each batch of a sync has its own row counts, so cached, every
/// connection kept up to a hundred of these programs of tens of thousands of parameters each:
/// that, not the page cache, took a 10,000-instance scan and sync to 255 MB.
fn one_off(sql: &str) -> Query<'_> {
    sqlx::query(sql).persistent(false)
}

fn rows_per_statement(tuple: &str) -> usize {
    (MAX_BINDS / tuple.matches('?').count().max(1)).max(1)
}

/// Executes `head <tuples> tail` over `rows` in as few statements as the bind limit allows;
/// returns the rows affected.
async fn execute_chunked<R>(
    conn: &mut SqliteConnection,
    c: &Counters,
    (head, tuple, tail): (&str, &str, &str),
    rows: &[R],
    bind: impl for<'q> Fn(Query<'q>, &'q R) -> Query<'q>,
) -> Result<u64, StoreError> {
    let mut affected = 0;
    for chunk in rows.chunks(rows_per_statement(tuple)) {
        let sql = format!("{head} {} {tail}", tuples(tuple, chunk.len()));
        let query = chunk.iter().fold(one_off(&sql), &bind);
        c.statement();
        affected += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(affected)
}

/// Like `execute_chunked`, for statements that return rows.
async fn fetch_chunked<R>(
    conn: &mut SqliteConnection,
    c: &Counters,
    (head, tuple, tail): (&str, &str, &str),
    rows: &[R],
    bind: impl for<'q> Fn(Query<'q>, &'q R) -> Query<'q>,
) -> Result<Vec<SqliteRow>, StoreError> {
    let mut out = Vec::new();
    for chunk in rows.chunks(rows_per_statement(tuple)) {
        let sql = format!("{head} {} {tail}", tuples(tuple, chunk.len()));
        let query = chunk.iter().fold(one_off(&sql), &bind);
        c.statement();
        out.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(out)
}

fn state(row: &SqliteRow, column: &'static str) -> Result<PatchState, StoreError> {
    let text: String = row.try_get(column)?;
    PatchState::parse(&text).ok_or_else(|| StoreError::corrupt(column, text))
}

fn cve_json(patch: &PatchWrite<'_>) -> String {
    serde_json::Value::from(patch.cve_ids.iter().copied().collect::<Vec<&str>>()).to_string()
}

impl Dialect for Sqlite {
    async fn begin_write(pool: &Pool<Self>, c: &Counters) -> Result<Transaction<'static, Self>, StoreError> {
        // IMMEDIATE takes the write lock now. A deferred transaction that reads, then writes,
        // fails with SQLITE_BUSY_SNAPSHOT (not retried by the busy timeout) when another writer
        // committed in between.
        c.statement();
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn begin_fenced(pool: &Pool<Self>, c: &Counters) -> Result<Transaction<'static, Self>, StoreError> {
        c.statement();
        Ok(pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn check_fence(
        tx: &mut Transaction<'static, Self>,
        c: &Counters,
        fence: &crate::lease::Fence,
        require_live: bool,
    ) -> Result<(), StoreError> {
        crate::lease::check_fence_in!(tx, c, fence, require_live, false)
    }

    async fn begin_read(pool: &Pool<Self>, c: &Counters) -> Result<Transaction<'static, Self>, StoreError> {
        c.statement();
        Ok(pool.begin().await?)
    }

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    async fn applied_migrations(
        conn: &mut SqliteConnection,
        c: &Counters,
    ) -> Result<Vec<(i64, bool)>, StoreError> {
        c.statement();
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_optional(&mut *conn)
        .await?;
        if exists.is_none() {
            return Ok(Vec::new());
        }
        c.statement();
        Ok(sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?)
    }

    async fn run_migrator(pool: &Pool<Self>) -> Result<(), MigrateError> {
        // SQLite changes a constraint only by rebuilding the table, which its documentation
        // says to do with foreign keys off; the pragma is ignored inside a transaction, and
        // sqlx wraps each migration in one, so it is set on the connection beforehand.
        let mut conn = pool.acquire().await?;
        sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
        let migrated = migrate_checked(&mut conn).await;
        // Never hand the pool a connection without foreign keys. (An in-memory database has
        // one connection, which must not be closed: closing it would destroy the database.)
        if sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await.is_err() {
            drop(conn.detach());
        }
        migrated
    }

    async fn analyze(pool: &Pool<Self>, c: &Counters) -> Result<(), StoreError> {
        // Bounded by the connection's analysis_limit, so this samples instead of scanning.
        c.statement();
        sqlx::query("PRAGMA optimize").execute(pool).await?;
        Ok(())
    }

    async fn ensure_instances(
        conn: &mut SqliteConnection,
        c: &Counters,
        keys: &[(InstanceKey<'_>, DateTime<Utc>)],
    ) -> Result<Vec<InstanceIdRow>, StoreError> {
        execute_chunked(
            conn,
            c,
            (
                "INSERT INTO instances (account, region, instance_id, ssm_managed, first_seen, last_seen) \
                 VALUES",
                "(?, ?, ?, 1, ?, ?)",
                "ON CONFLICT (account, region, instance_id) DO NOTHING",
            ),
            keys,
            |q, (k, at)| q.bind(k.account).bind(k.region).bind(k.instance_id).bind(*at).bind(*at),
        )
        .await?;
        let rows = fetch_chunked(
            conn,
            c,
            (
                // A join, not `(account, region, instance_id) IN (VALUES ...)`: SQLite plans
                // the IN as a scan of the whole index, the join as one lookup per key.
                "SELECT i.id, i.account, i.region, i.instance_id FROM (VALUES",
                "(?, ?, ?)",
                ") AS v JOIN instances i \
                 ON i.account = v.column1 AND i.region = v.column2 AND i.instance_id = v.column3",
            ),
            keys,
            |q, (k, _)| q.bind(k.account).bind(k.region).bind(k.instance_id),
        )
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).collect()
    }

    async fn upsert_instances(
        conn: &mut SqliteConnection,
        c: &Counters,
        at: DateTime<Utc>,
        instances: &[InstanceObservation<'_>],
    ) -> Result<usize, StoreError> {
        let tags: Vec<String> = instances
            .iter()
            .map(|o| serde_json::to_string(o.tags))
            .collect::<Result<_, _>>()
            .map_err(json_error)?;
        let rows: Vec<(&InstanceObservation<'_>, &str)> =
            instances.iter().zip(tags.iter().map(String::as_str)).collect();
        let n = execute_chunked(
            conn,
            c,
            (
                "INSERT INTO instances (account, region, instance_id, name, platform, tags, ssm_managed, \
                 ping_status, first_seen, last_seen) VALUES",
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "ON CONFLICT (account, region, instance_id) DO UPDATE SET name = excluded.name, \
                 platform = excluded.platform, tags = excluded.tags, ssm_managed = excluded.ssm_managed, \
                 ping_status = excluded.ping_status, \
                 first_seen = min(instances.first_seen, excluded.first_seen), \
                 last_seen = max(instances.last_seen, excluded.last_seen)",
            ),
            &rows,
            |q, (o, tags)| {
                q.bind(o.instance.account)
                    .bind(o.instance.region)
                    .bind(o.instance.instance_id)
                    .bind(o.name)
                    .bind(o.platform)
                    .bind(*tags)
                    .bind(o.ssm_managed)
                    .bind(o.ping_status.map(|p| p.as_str()))
                    .bind(at)
                    .bind(at)
            },
        )
        .await?;
        Ok(n as usize)
    }

    async fn scanned_at(
        conn: &mut SqliteConnection,
        c: &Counters,
        refs: &[i64],
    ) -> Result<HashMap<i64, DateTime<Utc>>, StoreError> {
        let rows = fetch_chunked(
            conn,
            c,
            ("SELECT instance_ref, scanned_at FROM compliance_summaries WHERE instance_ref IN (", "?", ")"),
            refs,
            |q, id| q.bind(*id),
        )
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn prior_findings(
        conn: &mut SqliteConnection,
        c: &Counters,
        refs: &[i64],
    ) -> Result<Prior, StoreError> {
        let rows = fetch_chunked(
            conn,
            c,
            (
                "SELECT f.instance_ref, f.patch_ref, p.patch_id, f.state, f.last_seen, f.installed_at \
                 FROM findings f JOIN patches p ON p.id = f.patch_ref WHERE f.instance_ref IN (",
                "?",
                ")",
            ),
            refs,
            |q, id| q.bind(*id),
        )
        .await?;
        let mut prior = Prior::new();
        for r in &rows {
            let finding = PriorFinding {
                patch_ref: r.try_get("patch_ref")?,
                state: state(r, "state")?,
                last_seen: r.try_get("last_seen")?,
                installed_at: r.try_get("installed_at")?,
            };
            prior.entry(r.try_get("instance_ref")?).or_default().insert(r.try_get("patch_id")?, finding);
        }
        Ok(prior)
    }

    async fn insert_sync(
        conn: &mut SqliteConnection,
        c: &Counters,
        source: &str,
        started_at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        c.statement();
        Ok(sqlx::query_scalar("INSERT INTO syncs (source, started_at) VALUES (?, ?) RETURNING id")
            .bind(source)
            .bind(started_at)
            .fetch_one(&mut *conn)
            .await?)
    }

    async fn finish_sync(
        conn: &mut SqliteConnection,
        c: &Counters,
        r: &SyncReport,
    ) -> Result<(), StoreError> {
        c.statement();
        sqlx::query(
            "UPDATE syncs SET instances = ?, stale_instances = ?, opened = ?, transitions = ?, \
             remediated = ?, reopened = ? WHERE id = ?",
        )
        .bind(r.instances as i64)
        .bind(r.stale_instances as i64)
        .bind(r.opened as i64)
        .bind(r.transitions as i64)
        .bind(r.remediated as i64)
        .bind(r.reopened as i64)
        .bind(r.sync_id.0)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    async fn upsert_patches(
        conn: &mut SqliteConnection,
        c: &Counters,
        patches: &[PatchWrite<'_>],
    ) -> Result<(), StoreError> {
        let rows: Vec<(&PatchWrite<'_>, String)> = patches.iter().map(|p| (p, cve_json(p))).collect();
        execute_chunked(
            conn,
            c,
            (
                "INSERT INTO patches AS p (patch_id, title, classification, severity, cve_ids, \
                 first_seen_missing) VALUES",
                "(?, ?, ?, ?, ?, ?)",
                // Only write a row whose content changes, so a re-sync leaves patches untouched.
                "ON CONFLICT (patch_id) DO UPDATE SET \
                   title = coalesce(excluded.title, p.title), \
                   classification = coalesce(excluded.classification, p.classification), \
                   severity = coalesce(excluded.severity, p.severity), \
                   cve_ids = CASE WHEN excluded.cve_ids = '[]' THEN p.cve_ids ELSE excluded.cve_ids END, \
                   first_seen_missing = CASE WHEN p.first_seen_missing IS NULL \
                     OR excluded.first_seen_missing < p.first_seen_missing \
                     THEN coalesce(excluded.first_seen_missing, p.first_seen_missing) \
                     ELSE p.first_seen_missing END \
                 WHERE coalesce(excluded.title, p.title) IS NOT p.title \
                   OR coalesce(excluded.classification, p.classification) IS NOT p.classification \
                   OR coalesce(excluded.severity, p.severity) IS NOT p.severity \
                   OR (excluded.cve_ids <> '[]' AND excluded.cve_ids <> p.cve_ids) \
                   OR (excluded.first_seen_missing IS NOT NULL \
                       AND (p.first_seen_missing IS NULL \
                            OR excluded.first_seen_missing < p.first_seen_missing))",
            ),
            &rows,
            |q, (p, cves)| {
                q.bind(p.patch_id)
                    .bind(p.title)
                    .bind(p.classification)
                    .bind(p.severity)
                    .bind(cves.as_str())
                    .bind(p.first_seen_missing)
            },
        )
        .await?;
        Ok(())
    }

    async fn patch_refs(
        conn: &mut SqliteConnection,
        c: &Counters,
        patch_ids: &[&str],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let rows = fetch_chunked(
            conn,
            c,
            ("SELECT patch_id, id FROM patches WHERE patch_id IN (", "?", ")"),
            patch_ids,
            |q, id| q.bind(*id),
        )
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    async fn write_findings(
        conn: &mut SqliteConnection,
        c: &Counters,
        rows: &[FindingRow],
    ) -> Result<(), StoreError> {
        execute_chunked(
            conn,
            c,
            (
                "INSERT INTO findings (instance_ref, patch_ref, state, first_seen_missing, last_seen, \
                 installed_at) VALUES",
                "(?, ?, ?, ?, ?, ?)",
                "ON CONFLICT (instance_ref, patch_ref) DO UPDATE SET state = excluded.state, \
                 last_seen = excluded.last_seen, installed_at = excluded.installed_at",
            ),
            rows,
            |q, f| {
                q.bind(f.instance_ref)
                    .bind(f.patch_ref)
                    .bind(f.state.as_str())
                    .bind(f.first_seen_missing)
                    .bind(f.last_seen)
                    .bind(f.installed_at)
            },
        )
        .await?;
        Ok(())
    }

    async fn write_transitions(
        conn: &mut SqliteConnection,
        c: &Counters,
        rows: &[TransitionRow<'_>],
    ) -> Result<(), StoreError> {
        execute_chunked(
            conn,
            c,
            (
                "INSERT INTO finding_transitions (instance_ref, patch_ref, from_state, to_state, at, \
                 sync_id, command_id) VALUES",
                "(?, ?, ?, ?, ?, ?, ?)",
                "",
            ),
            rows,
            |q, t| {
                q.bind(t.instance_ref)
                    .bind(t.patch_ref)
                    .bind(t.from.map(PatchState::as_str))
                    .bind(t.to.as_str())
                    .bind(t.at)
                    .bind(t.sync_id)
                    .bind(t.command_id)
            },
        )
        .await?;
        Ok(())
    }

    async fn write_summaries(
        conn: &mut SqliteConnection,
        c: &Counters,
        sync_id: i64,
        rows: &[SummaryWrite<'_>],
    ) -> Result<(), StoreError> {
        execute_chunked(
            conn,
            c,
            (
                "INSERT INTO compliance_summaries (instance_ref, sync_id, scanned_at, command_id, operation, \
                 operation_start, operation_end, baseline_id, snapshot_id, patch_group, installed, \
                 installed_other, installed_pending_reboot, installed_rejected, missing, failed, \
                 not_applicable, available_security_update) VALUES",
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "ON CONFLICT (instance_ref) DO UPDATE SET sync_id = excluded.sync_id, \
                 scanned_at = excluded.scanned_at, command_id = excluded.command_id, \
                 operation = excluded.operation, operation_start = excluded.operation_start, \
                 operation_end = excluded.operation_end, baseline_id = excluded.baseline_id, \
                 snapshot_id = excluded.snapshot_id, patch_group = excluded.patch_group, \
                 installed = excluded.installed, installed_other = excluded.installed_other, \
                 installed_pending_reboot = excluded.installed_pending_reboot, \
                 installed_rejected = excluded.installed_rejected, missing = excluded.missing, \
                 failed = excluded.failed, not_applicable = excluded.not_applicable, \
                 available_security_update = excluded.available_security_update",
            ),
            rows,
            |q, s| {
                let n = &s.counts;
                q.bind(s.instance_ref)
                    .bind(sync_id)
                    .bind(s.scanned_at)
                    .bind(s.scan.command_id)
                    .bind(s.scan.operation.map(Operation::as_ssm))
                    .bind(s.scan.operation_start.map(crate::micros))
                    .bind(s.scan.operation_end.map(crate::micros))
                    .bind(s.scan.baseline_id)
                    .bind(s.scan.snapshot_id)
                    .bind(s.scan.patch_group)
                    .bind(n.installed)
                    .bind(n.installed_other)
                    .bind(n.installed_pending_reboot)
                    .bind(n.installed_rejected)
                    .bind(n.missing)
                    .bind(n.failed)
                    .bind(n.not_applicable)
                    .bind(n.available_security_update)
            },
        )
        .await?;
        Ok(())
    }

    async fn set_release_dates(
        conn: &mut SqliteConnection,
        c: &Counters,
        rows: &[(&str, DateTime<Utc>, ReleaseSource)],
    ) -> Result<usize, StoreError> {
        let mut changed = 0;
        for source in ReleaseSource::ALL {
            let column = release_column(*source);
            let of_source: Vec<(&str, DateTime<Utc>)> =
                rows.iter().filter(|r| r.2 == *source).map(|r| (r.0, r.1)).collect();
            let head = format!("INSERT INTO patches AS p (patch_id, {column}) VALUES");
            let tail = format!(
                "ON CONFLICT (patch_id) DO UPDATE SET {column} = excluded.{column} \
                 WHERE p.{column} IS NOT excluded.{column}"
            );
            changed += execute_chunked(conn, c, (&head, "(?, ?)", &tail), &of_source, |q, (id, at)| {
                q.bind(*id).bind(*at)
            })
            .await?;
        }
        Ok(changed as usize)
    }

    async fn upsert_invocations(
        conn: &mut SqliteConnection,
        c: &Counters,
        task_id: i64,
        rows: &[(i64, &InvocationObservation<'_>)],
    ) -> Result<usize, StoreError> {
        let n = execute_chunked(
            conn,
            c,
            (
                "INSERT INTO invocations AS v (task_id, instance_ref, command_id, status, status_details, \
                 requested_at, started_at, ended_at) VALUES",
                "(?, ?, ?, ?, ?, ?, ?, ?)",
                "ON CONFLICT (task_id, instance_ref) DO UPDATE SET command_id = excluded.command_id, \
                 status = excluded.status, \
                 status_details = coalesce(excluded.status_details, v.status_details), \
                 requested_at = coalesce(excluded.requested_at, v.requested_at), \
                 started_at = coalesce(excluded.started_at, v.started_at), \
                 ended_at = coalesce(excluded.ended_at, v.ended_at)",
            ),
            rows,
            |q, (instance_ref, o)| {
                q.bind(task_id)
                    .bind(*instance_ref)
                    .bind(o.command_id)
                    .bind(o.status.as_str())
                    .bind(o.status_details)
                    .bind(o.requested_at.map(crate::micros))
                    .bind(o.started_at.map(crate::micros))
                    .bind(o.ended_at.map(crate::micros))
            },
        )
        .await?;
        Ok(n as usize)
    }
}

pub(crate) fn release_column(source: ReleaseSource) -> &'static str {
    match source {
        ReleaseSource::Ssm => "ssm_released_at",
        ReleaseSource::Advisory => "advisory_released_at",
    }
}

pub(crate) fn json_error(error: serde_json::Error) -> StoreError {
    StoreError::InvalidInput(format!("cannot encode as JSON: {error}"))
}
