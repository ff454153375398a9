//! PostgreSQL: bulk writes as `INSERT ... SELECT FROM UNNEST($1::type[], ...)`, one array per
//! column. A statement's size does not grow with the number of bind parameters, so a chunk can
//! be much larger than SQLite's, and the prepared statement is the same for every chunk.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use patchd_config::Operation;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow, Postgres};
use sqlx::{Pool, Row, Transaction};

use crate::dialect::{Dialect, FindingRow, InstanceIdRow, TransitionRow};
use crate::plan::{PatchWrite, Prior, PriorFinding, SummaryWrite};
use crate::sqlite::{json_error, release_column};
use crate::types::{
    micros, InstanceKey, InstanceObservation, InvocationObservation, OpenOptions, PatchState, ReleaseSource,
    SyncReport,
};
use crate::{Counters, StoreError};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

/// Rows per statement: bounds the size of one message, not a protocol limit.
const ROWS_PER_STATEMENT: usize = 50_000;

/// The advisory lock every write transaction takes, so that two patchd processes sharing a
/// database never interleave a sync's read-then-write ("patchd" in ASCII).
const WRITE_LOCK: i64 = 0x7061_7463_6864;

pub(crate) async fn connect(url: &str, options: &OpenOptions) -> Result<PgPool, sqlx::Error> {
    let connect = PgConnectOptions::from_str(url)?;
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
}

fn state(row: &PgRow, column: &'static str) -> Result<PatchState, StoreError> {
    let text: String = row.try_get(column)?;
    PatchState::parse(&text).ok_or_else(|| StoreError::corrupt(column, text))
}

impl Dialect for Postgres {
    async fn begin_write(pool: &Pool<Self>, c: &Counters) -> Result<Transaction<'static, Self>, StoreError> {
        c.statement();
        let mut tx = pool.begin().await?;
        c.statement();
        sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
        Ok(tx)
    }

    async fn begin_fenced(pool: &Pool<Self>, c: &Counters) -> Result<Transaction<'static, Self>, StoreError> {
        c.statement();
        Ok(pool.begin_with("BEGIN").await?)
    }

    async fn check_fence(
        tx: &mut Transaction<'static, Self>,
        c: &Counters,
        fence: &crate::lease::Fence,
        require_live: bool,
    ) -> Result<(), StoreError> {
        crate::lease::check_fence_in!(tx, c, fence, require_live, true)
    }

    async fn begin_read(pool: &Pool<Self>, c: &Counters) -> Result<Transaction<'static, Self>, StoreError> {
        c.statement();
        Ok(pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?)
    }

    fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    async fn applied_migrations(
        conn: &mut PgConnection,
        c: &Counters,
    ) -> Result<Vec<(i64, bool)>, StoreError> {
        c.statement();
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
        if !exists {
            return Ok(Vec::new());
        }
        c.statement();
        Ok(sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?)
    }

    async fn run_migrator(pool: &Pool<Self>) -> Result<(), MigrateError> {
        MIGRATOR.run(pool).await
    }

    async fn analyze(pool: &Pool<Self>, c: &Counters) -> Result<(), StoreError> {
        c.statement();
        sqlx::query("ANALYZE instances, patches, findings, finding_transitions, compliance_summaries")
            .execute(pool)
            .await?;
        Ok(())
    }

    async fn ensure_instances(
        conn: &mut PgConnection,
        c: &Counters,
        keys: &[(InstanceKey<'_>, DateTime<Utc>)],
    ) -> Result<Vec<InstanceIdRow>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(ROWS_PER_STATEMENT) {
            let accounts: Vec<&str> = chunk.iter().map(|(k, _)| k.account).collect();
            let regions: Vec<&str> = chunk.iter().map(|(k, _)| k.region).collect();
            let ids: Vec<&str> = chunk.iter().map(|(k, _)| k.instance_id).collect();
            let ats: Vec<DateTime<Utc>> = chunk.iter().map(|(_, at)| *at).collect();
            c.statement();
            sqlx::query(
                "INSERT INTO instances (account, region, instance_id, ssm_managed, first_seen, last_seen) \
                 SELECT a, r, i, TRUE, t, t \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(a, r, i, t) \
                 ON CONFLICT (account, region, instance_id) DO NOTHING",
            )
            .bind(&accounts)
            .bind(&regions)
            .bind(&ids)
            .bind(ats)
            .execute(&mut *conn)
            .await?;
            c.statement();
            let rows = sqlx::query(
                "SELECT i.id, i.account, i.region, i.instance_id FROM instances i \
                 JOIN UNNEST($1::text[], $2::text[], $3::text[]) AS u(a, r, iid) \
                   ON i.account = u.a AND i.region = u.r AND i.instance_id = u.iid",
            )
            .bind(accounts)
            .bind(regions)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                out.push((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?));
            }
        }
        Ok(out)
    }

    async fn upsert_instances(
        conn: &mut PgConnection,
        c: &Counters,
        at: DateTime<Utc>,
        instances: &[InstanceObservation<'_>],
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for chunk in instances.chunks(ROWS_PER_STATEMENT) {
            let tags: Vec<String> = chunk
                .iter()
                .map(|o| serde_json::to_string(o.tags))
                .collect::<Result<_, _>>()
                .map_err(json_error)?;
            c.statement();
            n += sqlx::query(
                "INSERT INTO instances AS i (account, region, instance_id, name, platform, tags, \
                   ssm_managed, ping_status, first_seen, last_seen) \
                 SELECT a, r, iid, n, p, t::jsonb, m, ps, $9, $9 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                   $7::boolean[], $8::text[]) AS u(a, r, iid, n, p, t, m, ps) \
                 ON CONFLICT (account, region, instance_id) DO UPDATE SET name = excluded.name, \
                   platform = excluded.platform, tags = excluded.tags, ssm_managed = excluded.ssm_managed, \
                   ping_status = excluded.ping_status, \
                   first_seen = LEAST(i.first_seen, excluded.first_seen), \
                   last_seen = GREATEST(i.last_seen, excluded.last_seen)",
            )
            .bind(chunk.iter().map(|o| o.instance.account).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.instance.region).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.instance.instance_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.name).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.platform).collect::<Vec<_>>())
            .bind(tags)
            .bind(chunk.iter().map(|o| o.ssm_managed).collect::<Vec<_>>())
            .bind(chunk.iter().map(|o| o.ping_status.map(|p| p.as_str())).collect::<Vec<_>>())
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
        }
        Ok(n as usize)
    }

    async fn scanned_at(
        conn: &mut PgConnection,
        c: &Counters,
        refs: &[i64],
    ) -> Result<HashMap<i64, DateTime<Utc>>, StoreError> {
        let mut out = HashMap::with_capacity(refs.len());
        for chunk in refs.chunks(ROWS_PER_STATEMENT) {
            c.statement();
            let rows = sqlx::query(
                "SELECT instance_ref, scanned_at FROM compliance_summaries WHERE instance_ref = ANY($1)",
            )
            .bind(chunk)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                out.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        Ok(out)
    }

    async fn prior_findings(
        conn: &mut PgConnection,
        c: &Counters,
        refs: &[i64],
    ) -> Result<Prior, StoreError> {
        let mut prior = Prior::new();
        for chunk in refs.chunks(ROWS_PER_STATEMENT) {
            c.statement();
            let rows = sqlx::query(
                "SELECT f.instance_ref, f.patch_ref, p.patch_id, f.state, f.last_seen, f.installed_at \
                 FROM findings f JOIN patches p ON p.id = f.patch_ref WHERE f.instance_ref = ANY($1)",
            )
            .bind(chunk)
            .fetch_all(&mut *conn)
            .await?;
            for r in &rows {
                let finding = PriorFinding {
                    patch_ref: r.try_get("patch_ref")?,
                    state: state(r, "state")?,
                    last_seen: r.try_get("last_seen")?,
                    installed_at: r.try_get("installed_at")?,
                };
                prior.entry(r.try_get("instance_ref")?).or_default().insert(r.try_get("patch_id")?, finding);
            }
        }
        Ok(prior)
    }

    async fn insert_sync(
        conn: &mut PgConnection,
        c: &Counters,
        source: &str,
        started_at: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        c.statement();
        Ok(sqlx::query_scalar("INSERT INTO syncs (source, started_at) VALUES ($1, $2) RETURNING id")
            .bind(source)
            .bind(started_at)
            .fetch_one(&mut *conn)
            .await?)
    }

    async fn finish_sync(conn: &mut PgConnection, c: &Counters, r: &SyncReport) -> Result<(), StoreError> {
        c.statement();
        sqlx::query(
            "UPDATE syncs SET instances = $1, stale_instances = $2, opened = $3, transitions = $4, \
             remediated = $5, reopened = $6 WHERE id = $7",
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
        conn: &mut PgConnection,
        c: &Counters,
        patches: &[PatchWrite<'_>],
    ) -> Result<(), StoreError> {
        for chunk in patches.chunks(ROWS_PER_STATEMENT) {
            let cves: Vec<String> = chunk
                .iter()
                .map(|p| {
                    serde_json::Value::from(p.cve_ids.iter().copied().collect::<Vec<&str>>()).to_string()
                })
                .collect();
            c.statement();
            sqlx::query(
                "INSERT INTO patches AS p (patch_id, title, classification, severity, cve_ids, \
                 first_seen_missing) \
                 SELECT id, t, cl, sev, cves::jsonb, fs \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) \
                   AS u(id, t, cl, sev, cves, fs) \
                 ON CONFLICT (patch_id) DO UPDATE SET \
                   title = COALESCE(excluded.title, p.title), \
                   classification = COALESCE(excluded.classification, p.classification), \
                   severity = COALESCE(excluded.severity, p.severity), \
                   cve_ids = CASE WHEN excluded.cve_ids = '[]'::jsonb THEN p.cve_ids \
                     ELSE excluded.cve_ids END, \
                   first_seen_missing = CASE WHEN p.first_seen_missing IS NULL \
                     OR excluded.first_seen_missing < p.first_seen_missing \
                     THEN COALESCE(excluded.first_seen_missing, p.first_seen_missing) \
                     ELSE p.first_seen_missing END \
                 WHERE COALESCE(excluded.title, p.title) IS DISTINCT FROM p.title \
                   OR COALESCE(excluded.classification, p.classification) IS DISTINCT FROM p.classification \
                   OR COALESCE(excluded.severity, p.severity) IS DISTINCT FROM p.severity \
                   OR (excluded.cve_ids <> '[]'::jsonb AND excluded.cve_ids <> p.cve_ids) \
                   OR (excluded.first_seen_missing IS NOT NULL \
                       AND (p.first_seen_missing IS NULL \
                            OR excluded.first_seen_missing < p.first_seen_missing))",
            )
            .bind(chunk.iter().map(|p| p.patch_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|p| p.title).collect::<Vec<_>>())
            .bind(chunk.iter().map(|p| p.classification).collect::<Vec<_>>())
            .bind(chunk.iter().map(|p| p.severity).collect::<Vec<_>>())
            .bind(cves)
            .bind(chunk.iter().map(|p| p.first_seen_missing).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn patch_refs(
        conn: &mut PgConnection,
        c: &Counters,
        patch_ids: &[&str],
    ) -> Result<HashMap<String, i64>, StoreError> {
        let mut out = HashMap::with_capacity(patch_ids.len());
        for chunk in patch_ids.chunks(ROWS_PER_STATEMENT) {
            c.statement();
            let rows = sqlx::query("SELECT patch_id, id FROM patches WHERE patch_id = ANY($1)")
                .bind(chunk)
                .fetch_all(&mut *conn)
                .await?;
            for r in &rows {
                out.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        Ok(out)
    }

    async fn write_findings(
        conn: &mut PgConnection,
        c: &Counters,
        rows: &[FindingRow],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            c.statement();
            sqlx::query(
                "INSERT INTO findings (instance_ref, patch_ref, state, first_seen_missing, last_seen, \
                 installed_at) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], \
                   $5::timestamptz[], $6::timestamptz[]) \
                 ON CONFLICT (instance_ref, patch_ref) DO UPDATE SET state = excluded.state, \
                   last_seen = excluded.last_seen, installed_at = excluded.installed_at",
            )
            .bind(chunk.iter().map(|f| f.instance_ref).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.patch_ref).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.state.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.first_seen_missing).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.last_seen).collect::<Vec<_>>())
            .bind(chunk.iter().map(|f| f.installed_at).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn write_transitions(
        conn: &mut PgConnection,
        c: &Counters,
        rows: &[TransitionRow<'_>],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            c.statement();
            sqlx::query(
                "INSERT INTO finding_transitions (instance_ref, patch_ref, from_state, to_state, at, \
                   sync_id, command_id) \
                 SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[], \
                   $6::bigint[], $7::text[])",
            )
            .bind(chunk.iter().map(|t| t.instance_ref).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.patch_ref).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.from.map(PatchState::as_str)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.to.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.sync_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|t| t.command_id).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn write_summaries(
        conn: &mut PgConnection,
        c: &Counters,
        sync_id: i64,
        rows: &[SummaryWrite<'_>],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let count =
                |f: fn(&SummaryWrite<'_>) -> u32| chunk.iter().map(|s| i64::from(f(s))).collect::<Vec<i64>>();
            c.statement();
            sqlx::query(
                "INSERT INTO compliance_summaries (instance_ref, sync_id, scanned_at, command_id, operation, \
                   operation_start, operation_end, baseline_id, snapshot_id, patch_group, installed, \
                   installed_other, installed_pending_reboot, installed_rejected, missing, failed, \
                   not_applicable, available_security_update) \
                 SELECT u.instance_ref, $18, u.scanned_at, u.command_id, u.operation, u.operation_start, \
                   u.operation_end, u.baseline_id, u.snapshot_id, u.patch_group, u.installed, \
                   u.installed_other, u.installed_pending_reboot, u.installed_rejected, u.missing, \
                   u.failed, u.not_applicable, \
                   u.available_security_update \
                 FROM UNNEST($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::timestamptz[], \
                     $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::bigint[], $11::bigint[], \
                     $12::bigint[], $13::bigint[], $14::bigint[], $15::bigint[], $16::bigint[], \
                     $17::bigint[]) \
                   AS u(instance_ref, scanned_at, command_id, operation, operation_start, operation_end, \
                     baseline_id, snapshot_id, patch_group, installed, installed_other, \
                     installed_pending_reboot, installed_rejected, missing, failed, not_applicable, \
                     available_security_update) \
                 ON CONFLICT (instance_ref) DO UPDATE SET sync_id = excluded.sync_id, \
                   scanned_at = excluded.scanned_at, command_id = excluded.command_id, \
                   operation = excluded.operation, operation_start = excluded.operation_start, \
                   operation_end = excluded.operation_end, baseline_id = excluded.baseline_id, \
                   snapshot_id = excluded.snapshot_id, patch_group = excluded.patch_group, \
                   installed = excluded.installed, installed_other = excluded.installed_other, \
                   installed_pending_reboot = excluded.installed_pending_reboot, \
                   installed_rejected = excluded.installed_rejected, missing = excluded.missing, \
                   failed = excluded.failed, not_applicable = excluded.not_applicable, \
                   available_security_update = excluded.available_security_update",
            )
            .bind(chunk.iter().map(|s| s.instance_ref).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scanned_at).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.command_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.operation.map(Operation::as_ssm)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.operation_start.map(micros)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.operation_end.map(micros)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.baseline_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.snapshot_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|s| s.scan.patch_group).collect::<Vec<_>>())
            .bind(count(|s| s.counts.installed))
            .bind(count(|s| s.counts.installed_other))
            .bind(count(|s| s.counts.installed_pending_reboot))
            .bind(count(|s| s.counts.installed_rejected))
            .bind(count(|s| s.counts.missing))
            .bind(count(|s| s.counts.failed))
            .bind(count(|s| s.counts.not_applicable))
            .bind(count(|s| s.counts.available_security_update))
            .bind(sync_id)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn set_release_dates(
        conn: &mut PgConnection,
        c: &Counters,
        rows: &[(&str, DateTime<Utc>, ReleaseSource)],
    ) -> Result<usize, StoreError> {
        let mut changed = 0;
        for source in ReleaseSource::ALL {
            let column = release_column(*source);
            let of_source: Vec<&(&str, DateTime<Utc>, ReleaseSource)> =
                rows.iter().filter(|r| r.2 == *source).collect();
            let sql = format!(
                "INSERT INTO patches AS p (patch_id, {column}) \
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) \
                 ON CONFLICT (patch_id) DO UPDATE SET {column} = excluded.{column} \
                 WHERE p.{column} IS DISTINCT FROM excluded.{column}"
            );
            for chunk in of_source.chunks(ROWS_PER_STATEMENT) {
                c.statement();
                changed += sqlx::query(&sql)
                    .bind(chunk.iter().map(|r| r.0).collect::<Vec<_>>())
                    .bind(chunk.iter().map(|r| r.1).collect::<Vec<_>>())
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
            }
        }
        Ok(changed as usize)
    }

    async fn upsert_invocations(
        conn: &mut PgConnection,
        c: &Counters,
        task_id: i64,
        rows: &[(i64, &InvocationObservation<'_>)],
    ) -> Result<usize, StoreError> {
        let mut n = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            c.statement();
            n += sqlx::query(
                "INSERT INTO invocations AS v (task_id, instance_ref, command_id, status, status_details, \
                   requested_at, started_at, ended_at) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], \
                   $6::timestamptz[], $7::timestamptz[], $8::timestamptz[]) \
                 ON CONFLICT (task_id, instance_ref) DO UPDATE SET command_id = excluded.command_id, \
                   status = excluded.status, \
                   status_details = COALESCE(excluded.status_details, v.status_details), \
                   requested_at = COALESCE(excluded.requested_at, v.requested_at), \
                   started_at = COALESCE(excluded.started_at, v.started_at), \
                   ended_at = COALESCE(excluded.ended_at, v.ended_at)",
            )
            .bind(task_id)
            .bind(chunk.iter().map(|(r, _)| *r).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.command_id).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.status.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.status_details).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.requested_at.map(micros)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.started_at.map(micros)).collect::<Vec<_>>())
            .bind(chunk.iter().map(|(_, o)| o.ended_at.map(micros)).collect::<Vec<_>>())
            .execute(&mut *conn)
            .await?
            .rows_affected();
        }
        Ok(n as usize)
    }
}
