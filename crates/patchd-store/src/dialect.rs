//! What differs between SQLite and PostgreSQL (bulk writes, transactions, migrations), as a
//! trait each backend implements, and the orchestration written once on top of it.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use chrono::{DateTime, Utc};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{Database, Pool, Transaction};

use crate::plan::{self, PatchWrite, Plan, Prior, SummaryWrite};
use crate::types::{
    ComplianceSync, InstanceKey, InstanceObservation, InvocationObservation, MigrationReport, PatchState,
    ReleaseSource, SchemaVersion, SyncId, SyncReport,
};
use crate::{Counters, StoreError};

/// A finding row with both references resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FindingRow {
    pub instance_ref: i64,
    pub patch_ref: i64,
    pub state: PatchState,
    pub first_seen_missing: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub installed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct TransitionRow<'a> {
    pub instance_ref: i64,
    pub patch_ref: i64,
    pub from: Option<PatchState>,
    pub to: PatchState,
    pub at: DateTime<Utc>,
    pub sync_id: i64,
    pub command_id: Option<&'a str>,
}

/// An instance row as the database returns it when asked for ids.
pub(crate) type InstanceIdRow = (i64, String, String, String);

/// The SQL each backend speaks for itself. Methods take the connection of an open
/// transaction; each counts the statements it sends.
///
/// Methods are declared `-> impl Future + Send` rather than `async fn`: with `async fn`, the
/// generic code below yields futures the compiler cannot prove `Send` for every lifetime
/// ("implementation of `Send` is not general enough"), and the daemon could not spawn them.
pub(crate) trait Dialect: Database + Sized {
    /// A transaction for a read-then-write sequence, serialised against every other writer.
    fn begin_write(
        pool: &Pool<Self>,
        c: &Counters,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, StoreError>> + Send;
    /// A transaction for one of a run's writes: serialised against other writers on SQLite,
    /// but not behind the sync's write lock on PostgreSQL (row locks suffice there).
    fn begin_fenced(
        pool: &Pool<Self>,
        c: &Counters,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, StoreError>> + Send;
    /// Refuses the transaction's writes unless `fence` still holds the lease (and, with
    /// `require_live`, unexpired). On PostgreSQL the lease row stays share-locked until the
    /// transaction ends, so a takeover cannot commit in between.
    fn check_fence(
        tx: &mut Transaction<'static, Self>,
        c: &Counters,
        fence: &crate::lease::Fence,
        require_live: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// A transaction whose reads all see one snapshot.
    fn begin_read(
        pool: &Pool<Self>,
        c: &Counters,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, StoreError>> + Send;

    fn migrator() -> &'static Migrator;
    /// Applied migrations `(version, success)`; empty when the migrations table does not exist.
    fn applied_migrations(
        conn: &mut Self::Connection,
        c: &Counters,
    ) -> impl Future<Output = Result<Vec<(i64, bool)>, StoreError>> + Send;
    /// Applies pending migrations (the migrator takes its own lock).
    fn run_migrator(pool: &Pool<Self>) -> impl Future<Output = Result<(), MigrateError>> + Send;
    /// Refreshes the query planner's statistics.
    fn analyze(pool: &Pool<Self>, c: &Counters) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inserts the instances that do not exist yet (`first_seen = last_seen` = the instant
    /// given with each) and returns the ids of all of them.
    fn ensure_instances(
        conn: &mut Self::Connection,
        c: &Counters,
        keys: &[(InstanceKey<'_>, DateTime<Utc>)],
    ) -> impl Future<Output = Result<Vec<InstanceIdRow>, StoreError>> + Send;
    fn upsert_instances(
        conn: &mut Self::Connection,
        c: &Counters,
        at: DateTime<Utc>,
        instances: &[InstanceObservation<'_>],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    fn scanned_at(
        conn: &mut Self::Connection,
        c: &Counters,
        refs: &[i64],
    ) -> impl Future<Output = Result<HashMap<i64, DateTime<Utc>>, StoreError>> + Send;
    fn prior_findings(
        conn: &mut Self::Connection,
        c: &Counters,
        refs: &[i64],
    ) -> impl Future<Output = Result<Prior, StoreError>> + Send;
    fn insert_sync(
        conn: &mut Self::Connection,
        c: &Counters,
        source: &str,
        started_at: DateTime<Utc>,
    ) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn finish_sync(
        conn: &mut Self::Connection,
        c: &Counters,
        report: &SyncReport,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn upsert_patches(
        conn: &mut Self::Connection,
        c: &Counters,
        patches: &[PatchWrite<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn patch_refs(
        conn: &mut Self::Connection,
        c: &Counters,
        patch_ids: &[&str],
    ) -> impl Future<Output = Result<HashMap<String, i64>, StoreError>> + Send;
    fn write_findings(
        conn: &mut Self::Connection,
        c: &Counters,
        rows: &[FindingRow],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn write_transitions(
        conn: &mut Self::Connection,
        c: &Counters,
        rows: &[TransitionRow<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn write_summaries(
        conn: &mut Self::Connection,
        c: &Counters,
        sync_id: i64,
        rows: &[SummaryWrite<'_>],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Sets one source's release date per patch, inserting placeholders for unknown patches;
    /// returns how many rows changed.
    fn set_release_dates(
        conn: &mut Self::Connection,
        c: &Counters,
        rows: &[(&str, DateTime<Utc>, ReleaseSource)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
    fn upsert_invocations(
        conn: &mut Self::Connection,
        c: &Counters,
        task_id: i64,
        rows: &[(i64, &InvocationObservation<'_>)],
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

pub(crate) fn supported_version<DB: Dialect>() -> i64 {
    DB::migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

fn succeeded(applied: &[(i64, bool)]) -> HashSet<i64> {
    applied.iter().filter(|(_, ok)| *ok).map(|(v, _)| *v).collect()
}

fn is_current<DB: Dialect>(applied: &[(i64, bool)]) -> bool {
    let done = succeeded(applied);
    DB::migrator().iter().all(|m| done.contains(&m.version))
}

/// The last item of each key, in input order: a repeated key in one multi-row upsert is an
/// error on PostgreSQL, and "the last observation wins" must not depend on hash order.
fn last_of_each<T, K: std::hash::Hash + Eq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut last: HashMap<K, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &items[i]).collect()
}

/// The refusal rule shared by `open` and `migrate`: a database that applied a migration this
/// build does not know was migrated by a newer patchd (versions only grow), and is never
/// touched.
fn refuse_unknown<DB: Dialect>(applied: &[(i64, bool)]) -> Result<(), StoreError> {
    let unknown = applied.iter().any(|(v, _)| !DB::migrator().iter().any(|m| m.version == *v));
    match applied.iter().map(|(v, _)| *v).max() {
        Some(database_version) if unknown => {
            Err(StoreError::NewerSchema { database_version, supported_version: supported_version::<DB>() })
        }
        _ => Ok(()),
    }
}

pub(crate) async fn migrate<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
) -> Result<MigrationReport, StoreError> {
    let supported = supported_version::<DB>();
    let before = {
        let mut conn = pool.acquire().await?;
        DB::applied_migrations(&mut conn, c).await?
    };
    refuse_unknown::<DB>(&before)?;
    c.statement();
    match DB::run_migrator(pool).await {
        Ok(()) => Ok(migration_report::<DB>(&before)),
        // A newer patchd migrated the database between the check above and the migrator's
        // lock: the migrator refuses to run, and so do we.
        Err(MigrateError::VersionMissing(database_version)) if database_version > supported => {
            Err(StoreError::NewerSchema { database_version, supported_version: supported })
        }
        // SQLite's migrator takes no lock: two processes starting together both try to apply
        // the same migration and the second fails. If the database is now current, it was
        // migrated, just not by us.
        Err(error @ MigrateError::ExecuteMigration(..)) => {
            let mut conn = pool.acquire().await?;
            if is_current::<DB>(&DB::applied_migrations(&mut conn, c).await?) {
                Ok(MigrationReport { applied: Vec::new(), version: supported })
            } else {
                Err(StoreError::Migrate(error))
            }
        }
        Err(other) => Err(StoreError::Migrate(other)),
    }
}

pub(crate) async fn schema_version<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
) -> Result<SchemaVersion, StoreError> {
    let mut conn = pool.acquire().await?;
    let applied = DB::applied_migrations(&mut conn, c).await?;
    Ok(SchemaVersion {
        database: succeeded(&applied).into_iter().max(),
        supported: supported_version::<DB>(),
    })
}

pub(crate) async fn require_current_schema<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let applied = DB::applied_migrations(&mut conn, c).await?;
    let supported = supported_version::<DB>();
    refuse_unknown::<DB>(&applied)?;
    if is_current::<DB>(&applied) {
        Ok(())
    } else {
        Err(StoreError::OutdatedSchema {
            database_version: succeeded(&applied).into_iter().max(),
            supported_version: supported,
        })
    }
}

/// What a run of the migrator applied, given the migrations applied before it.
pub(crate) fn migration_report<DB: Dialect>(before: &[(i64, bool)]) -> MigrationReport {
    let done = succeeded(before);
    let applied = DB::migrator().iter().map(|m| m.version).filter(|v| !done.contains(v)).collect();
    MigrationReport { applied, version: supported_version::<DB>() }
}

pub(crate) async fn record_instances<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
    observed_at: DateTime<Utc>,
    instances: &[InstanceObservation<'_>],
) -> Result<usize, StoreError> {
    if instances.is_empty() {
        return Ok(0);
    }
    let unique: Vec<InstanceObservation<'_>> =
        last_of_each(instances, |o| o.instance).into_iter().copied().collect();

    let mut tx = DB::begin_write(pool, c).await?;
    let n = DB::upsert_instances(&mut tx, c, observed_at, &unique).await?;
    tx.commit().await?;
    c.committed();
    Ok(n)
}

pub(crate) async fn set_release_dates<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
    rows: &[(&str, DateTime<Utc>, ReleaseSource)],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = DB::begin_write(pool, c).await?;
    let n = DB::set_release_dates(&mut tx, c, rows).await?;
    tx.commit().await?;
    c.committed();
    Ok(n)
}

/// Resolves instance keys to ids, creating the instances a sync or an invocation names
/// before inventory has seen them. `ids[i]` belongs to `keys[i]`.
pub(crate) async fn instance_refs<DB: Dialect>(
    conn: &mut DB::Connection,
    c: &Counters,
    keys: &[(InstanceKey<'_>, DateTime<Utc>)],
) -> Result<Vec<i64>, StoreError> {
    let rows = DB::ensure_instances(conn, c, keys).await?;
    let by_key: HashMap<InstanceKey<'_>, i64> = rows
        .iter()
        .map(|(id, account, region, instance_id)| (InstanceKey { account, region, instance_id }, *id))
        .collect();
    keys.iter()
        .map(|(key, _)| {
            by_key
                .get(key)
                .copied()
                .ok_or_else(|| StoreError::corrupt("instances.instance_id", key.instance_id))
        })
        .collect()
}

pub(crate) async fn record_sync<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
    sync: &ComplianceSync<'_>,
) -> Result<SyncReport, StoreError> {
    let scans = plan::dedup_scans(sync.scans);
    let mut tx = DB::begin_write(pool, c).await?;

    let sync_id = DB::insert_sync(&mut tx, c, sync.source, crate::micros(sync.started_at)).await?;
    let keys: Vec<(InstanceKey<'_>, DateTime<Utc>)> =
        scans.iter().map(|s| (s.instance, crate::micros(s.observed_at))).collect();
    let refs = instance_refs::<DB>(&mut tx, c, &keys).await?;
    let scanned_at = DB::scanned_at(&mut tx, c, &refs).await?;
    let prior = DB::prior_findings(&mut tx, c, &refs).await?;
    let plan = plan::plan(&scans, &refs, &scanned_at, &prior);

    DB::upsert_patches(&mut tx, c, &plan.patches).await?;
    let mut unknown: Vec<&str> = plan
        .findings
        .iter()
        .filter(|f| f.patch_ref.is_none())
        .map(|f| f.patch_id)
        .chain(plan.transitions.iter().filter(|t| t.patch_ref.is_none()).map(|t| t.patch_id))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    let patch_refs = DB::patch_refs(&mut tx, c, &unknown).await?;
    let resolve = |known: Option<i64>, patch_id: &str| {
        known
            .or_else(|| patch_refs.get(patch_id).copied())
            .ok_or_else(|| StoreError::corrupt("patches.patch_id", patch_id))
    };

    let mut findings = plan
        .findings
        .iter()
        .map(|f| {
            Ok(FindingRow {
                instance_ref: f.instance_ref,
                patch_ref: resolve(f.patch_ref, f.patch_id)?,
                state: f.state,
                first_seen_missing: f.first_seen_missing,
                last_seen: f.last_seen,
                installed_at: f.installed_at,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Key order makes the inserts walk the primary key's B-tree from left to right.
    findings.sort_unstable_by_key(|f| (f.instance_ref, f.patch_ref));
    let transitions = plan
        .transitions
        .iter()
        .map(|t| {
            Ok(TransitionRow {
                instance_ref: t.instance_ref,
                patch_ref: resolve(t.patch_ref, t.patch_id)?,
                from: t.from,
                to: t.to,
                at: t.at,
                sync_id,
                command_id: t.command_id,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;

    DB::write_findings(&mut tx, c, &findings).await?;
    DB::write_transitions(&mut tx, c, &transitions).await?;
    DB::write_summaries(&mut tx, c, sync_id, &plan.summaries).await?;
    let report = report(SyncId(sync_id), &plan);
    DB::finish_sync(&mut tx, c, &report).await?;
    tx.commit().await?;
    c.committed();

    // A first sync can take a table from empty to a million rows. Until the planner's
    // statistics catch up (PostgreSQL's autovacuum gets there a minute or more later), it
    // plans listings for an empty table: a bitmap scan and a sort of every open finding for
    // each page, instead of an index range scan. The sync is committed whatever happens here.
    if findings.len() + transitions.len() >= ANALYZE_AFTER_ROWS {
        if let Err(error) = DB::analyze(pool, c).await {
            tracing::warn!(%error, "cannot refresh the query planner's statistics after a large sync");
        }
    }
    Ok(report)
}

/// Rows a sync must write before the store refreshes the planner's statistics.
const ANALYZE_AFTER_ROWS: usize = 10_000;

fn report(sync_id: SyncId, plan: &Plan<'_>) -> SyncReport {
    SyncReport {
        sync_id,
        instances: plan.instances,
        stale_instances: plan.stale_instances,
        opened: plan.opened,
        transitions: plan.transitions.len(),
        remediated: plan.remediated,
        reopened: plan.reopened,
    }
}

pub(crate) async fn record_invocations<DB: Dialect>(
    pool: &Pool<DB>,
    c: &Counters,
    task_id: i64,
    observed_at: DateTime<Utc>,
    invocations: &[InvocationObservation<'_>],
    fence: Option<&crate::lease::Fence>,
) -> Result<usize, StoreError> {
    if invocations.is_empty() {
        return Ok(0);
    }
    let unique = last_of_each(invocations, |o| o.instance);

    let mut tx = DB::begin_write(pool, c).await?;
    if let Some(fence) = fence {
        DB::check_fence(&mut tx, c, fence, false).await?;
    }
    let keys: Vec<(InstanceKey<'_>, DateTime<Utc>)> =
        unique.iter().map(|o| (o.instance, observed_at)).collect();
    let refs = instance_refs::<DB>(&mut tx, c, &keys).await?;
    let rows: Vec<(i64, &InvocationObservation<'_>)> = refs.into_iter().zip(unique).collect();
    let n = DB::upsert_invocations(&mut tx, c, task_id, &rows)
        .await
        .map_err(|e| not_found(e, "window task", task_id))?;
    tx.commit().await?;
    c.committed();
    Ok(n)
}

/// A foreign-key violation on an id the caller passed means the id does not exist.
pub(crate) fn not_found(error: StoreError, what: &'static str, id: i64) -> StoreError {
    match &error {
        StoreError::Database(sqlx::Error::Database(db))
            if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            StoreError::NotFound { what, id }
        }
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_applied_migrations_are_refused() {
        let check = |applied: &[(i64, bool)]| match refuse_unknown::<sqlx::Sqlite>(applied) {
            Ok(()) => None,
            Err(StoreError::NewerSchema { database_version, supported_version }) => {
                Some((database_version, supported_version))
            }
            Err(other) => panic!("{other:?}"),
        };
        let supported = supported_version::<sqlx::Sqlite>();
        let newer = supported + 1;
        assert_eq!(check(&[]), None, "an empty database");
        assert_eq!(check(&[(1, true)]), None);
        assert_eq!(
            check(&[(1, true), (newer, true)]),
            Some((newer, supported)),
            "a newer patchd migrated it"
        );
        assert_eq!(
            check(&[(1, true), (newer + 5, false)]),
            Some((newer + 5, supported)),
            "even a failed newer migration"
        );
        assert_eq!(
            last_of_each(&[("a", 1), ("b", 2), ("a", 3)], |x| x.0),
            [&("b", 2), &("a", 3)],
            "the last of each key, in input order"
        );
    }
}
