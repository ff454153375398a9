//! patchd's patch history: what SSM forgets. SSM keeps only the current compliance state of
//! each node; this crate keeps, in SQLite (the default) or PostgreSQL, every instance and patch
//! patchd has seen, every finding (a patch seen missing on an instance) with each of its state
//! changes, the maintenance-window runs and their commands, the exceptions in force, and an
//! append-only audit log. It is the only crate that knows SQL.
//!
//! # Opening
//!
//! [`Store::open`] picks the backend from the URL scheme and, unless told otherwise, applies
//! pending migrations:
//!
//! | URL | backend |
//! |---|---|
//! | `sqlite:///var/lib/patchd/patchd.db`, `sqlite:relative.db` | SQLite file, created if missing |
//! | `sqlite::memory:` | SQLite in memory (tests; one connection) |
//! | `postgres://user:password@host/db`, `postgresql://...` | PostgreSQL |
//!
//! SQLite runs in WAL mode (readers never block the writer), with foreign keys enforced,
//! `synchronous = FULL` (a committed transaction survives a power cut, not just a crash) and a
//! busy timeout, all set on the connect options so that every pooled connection has them.
//! PostgreSQL objects live in the first schema of the connection's `search_path`
//! (`?options[search_path]=patchd` in the URL selects one).
//!
//! ```no_run
//! # async fn demo() -> Result<(), patchd_store::StoreError> {
//! use patchd_store::{OpenOptions, Store};
//! let store = Store::open("sqlite:///var/lib/patchd/patchd.db", &OpenOptions::default()).await?;
//! println!("{:?}", store.schema_version().await?);
//! # Ok(()) }
//! ```
//!
//! The schema is versioned by the migrations under `migrations/sqlite` and
//! `migrations/postgres` (embedded at build time). A database that a newer patchd migrated is
//! refused with [`StoreError::NewerSchema`], never altered; opened with `migrate: false`, a
//! database with pending migrations is refused with [`StoreError::OutdatedSchema`] and
//! [`Store::migrate`] (`patchd db migrate`) applies them.
//!
//! # Recording
//!
//! - [`Store::record_instances`]: inventory (name, platform, tags, whether SSM manages it,
//!   ping status); first and last seen.
//! - [`Store::record_sync`]: a compliance sync, the scan results of any number of instances.
//! - [`Store::set_release_dates`]: release dates from SSM or from vendor advisories.
//! - [`Store::record_window_run`], [`Store::update_window_run`], [`Store::record_window_task`],
//!   [`Store::record_invocations`]: what each maintenance window did.
//! - [`Store::record_exceptions`]: a snapshot of the configured risk acceptances.
//! - [`Store::append_audit`]: the audit log. There is no API to change or delete an entry,
//!   and database triggers refuse it from anyone else.
//!
//! ## Finding semantics (what a sync does)
//!
//! For each instance, given SSM's list of (patch, state, installed time) at `observed_at`:
//! - a patch seen `MISSING`, `FAILED`, `INSTALLED_PENDING_REBOOT` or
//!   `AVAILABLE_SECURITY_UPDATE` for the first time opens a finding (`first_seen_missing =
//!   observed_at`) and records a transition from nothing;
//! - a state change appends a transition (from, to, at, sync, command);
//! - an open finding that becomes `INSTALLED` or `INSTALLED_OTHER` is remediated at SSM's
//!   `InstalledTime`, or at `observed_at` when SSM gives none or gives one earlier than a scan
//!   that still saw the patch open (the pending-reboot case); any other state keeps it open
//!   (`INSTALLED_PENDING_REBOOT` until a later scan confirms the reboot, and
//!   `INSTALLED_REJECTED`, which SSM counts non-compliant);
//! - a remediated finding seen open again is reopened (`installed_at` cleared, its history
//!   kept, `first_seen_missing` unchanged);
//! - a patch installed at first sight, or `NOT_APPLICABLE`, is never a finding; it is counted in
//!   the instance's compliance summary. An open finding whose patch turns `NOT_APPLICABLE` (or
//!   leaves SSM's list) is left as it was: its `last_seen` stops advancing;
//! - each patch's fleet-wide first sighting (`PatchRecord::first_seen_missing`, the SLA clock
//!   when no release date is known) only ever moves earlier;
//! - a scan older than the instance's latest recorded scan is ignored; a re-sync of identical
//!   data changes nothing (no transitions, no finding updates).
//!
//! ## Crash safety and batching
//!
//! One sync is one transaction. The sync's row in `syncs`, its findings, transitions, patch
//! metadata and compliance summaries are written in that transaction, so readers see all of a
//! sync or none of it, and a crash (or a dropped future) mid-sync rolls it back entirely.
//! Writes are batched: multi-row `INSERT ... ON CONFLICT` chunked under SQLite's 32,766
//! bind-parameter limit, `UNNEST` of arrays on PostgreSQL. A sync of 10,000 instances x 100
//! patches (a million findings) is one transaction of about 416 statements on SQLite and 53 on
//! PostgreSQL; 2,000 x 20 takes 30 and 15. [`Store::stats`] counts transactions and statements.
//!
//! Writers are serialised (SQLite: `BEGIN IMMEDIATE`; PostgreSQL: a transaction-scoped advisory
//! lock), so two patchd processes sharing a database cannot interleave the read-then-write of
//! two syncs. The other side of that coin: while a sync is written, other writes wait (readers
//! do not). A caller syncing a very large fleet should pass it in batches of a thousand or so
//! instances, each its own atomic sync, so that an audit entry waits seconds rather than the
//! half-minute a million findings take on a small machine (see `docs/performance.md`).
//!
//! # Reading
//!
//! - [`Store::findings`]: findings with their instance and patch, filtered by status,
//!   remediation period, instance or patch, in pages ([`FindingQuery::after`]). Each page is
//!   read in one snapshot.
//! - [`Store::instances`]: instances with their latest compliance summary.
//! - [`Store::patches`], [`Store::patch`], [`Store::finding_history`].
//! - [`Store::audit_since`], [`Store::window_runs`], [`Store::invocations`],
//!   [`Store::command_invocations`], [`Store::exceptions_in_force`].
//!
//! All instants are UTC and stored with microsecond precision.
//!
//! # Schema
//!
//! `migrations/README.md` lists the tables. In short: `instances` and `patches` carry surrogate
//! ids that `findings` (one row per instance and patch ever seen missing, keyed by both ids) and
//! `finding_transitions` reference; `compliance_summaries` holds each instance's latest scan;
//! `syncs`, `window_runs`, `window_tasks`, `invocations`, `exception_snapshots` and
//! `exceptions`, and `audit_log` complete it. Open findings have a covering partial index
//! (`findings_open`), remediated ones an index by installation time (`findings_remediated`), so
//! listings are index range scans from their cursor.

mod account_names;
mod advisory_feeds;
mod announcements;
mod audit;
mod db;
mod dialect;
mod error;
mod exceptions;
mod lease;
mod metrics;
mod plan;
mod postgres;
mod promotions;
mod read;
mod relabel;
mod rollouts;
mod schema;
mod sqlite;
mod sync;
mod sync_backlog;
mod types;
mod windows;

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use patchd_config::DatabaseUrl;

use crate::db::{Db, Pool};

pub use account_names::AccountName;
pub use advisory_feeds::{FeedFetch, FeedStatus};
pub use announcements::{Announcement, AnnouncementRecord};
pub use error::StoreError;
pub use lease::{Bid, Candidate, Fence, GroupLockHolder, LeaseRecord, TermClock, SCHEDULER_LEASE};
pub use metrics::WindowRunCount;
pub use promotions::{PromotedPatch, PromotionOfRun, PromotionRecord, PromotionSource};
pub use relabel::{Relabelled, LEGACY_ACCOUNT};
pub use rollouts::{BatchRecord, GateRecord, NewBatch, NewRollout, RolloutRecord};
pub use sync_backlog::{RecordedCompliance, SyncBacklogEntry};
pub use types::*;

/// patchd's patch history, over SQLite or PostgreSQL. Cheap to clone: clones share the pool.
#[derive(Clone)]
pub struct Store {
    db: Db,
    /// Password redacted: the only form of the URL the store keeps.
    url: String,
    /// Set by [`Store::fenced`]: the run writes of this clone are conditional on it.
    fence: Option<Arc<Fence>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .field("url", &self.url)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    /// Connects to the database `url` names (see the crate documentation for the forms),
    /// then migrates it (`options.migrate`) or checks that it needs no migration.
    pub async fn open(url: &str, options: &OpenOptions) -> Result<Store, StoreError> {
        let redacted = DatabaseUrl::new(url).redacted();
        let connect_error = |source| StoreError::Connect { url: redacted.clone(), source };
        let pool = if url.starts_with("sqlite:") {
            Pool::Sqlite(sqlite::connect(url, options).await.map_err(connect_error)?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Pool::Postgres(postgres::connect(url, options).await.map_err(connect_error)?)
        } else {
            return Err(StoreError::UnsupportedUrl { url: redacted });
        };
        let store = Store { db: Db::new(pool), url: redacted, fence: None };
        if options.migrate {
            store.migrate().await?;
        } else {
            store.require_current_schema().await?;
        }
        tracing::debug!(backend = %store.backend(), url = %store.url, "store opened");
        Ok(store)
    }

    pub fn backend(&self) -> BackendKind {
        self.db.backend()
    }

    /// Work done through this store (and its clones) since it was opened.
    pub fn stats(&self) -> StoreStats {
        self.db.stats()
    }

    /// Closes every connection; pending operations finish first. Further calls fail with
    /// `Unavailable`.
    pub async fn close(&self) {
        self.db.close().await
    }

    /// Applies pending migrations. Refuses a database migrated by a newer patchd.
    pub async fn migrate(&self) -> Result<MigrationReport, StoreError> {
        let report = schema::migrate(&self.db).await?;
        if !report.applied.is_empty() {
            tracing::info!(applied = ?report.applied, version = report.version, "database migrated");
        }
        Ok(report)
    }

    /// The database's schema version and the one this build supports.
    pub async fn schema_version(&self) -> Result<SchemaVersion, StoreError> {
        schema::schema_version(&self.db).await
    }

    async fn require_current_schema(&self) -> Result<(), StoreError> {
        schema::require_current_schema(&self.db).await
    }

    /// Records an inventory observation of instances: inserts new ones, updates the
    /// descriptive facts of known ones, moves `last_seen`. Returns the number of instances
    /// recorded.
    pub async fn record_instances(
        &self,
        observed_at: DateTime<Utc>,
        instances: &[InstanceObservation<'_>],
    ) -> Result<usize, StoreError> {
        for o in instances {
            validate_key(&o.instance)?;
        }
        let observed_at = micros(observed_at);
        sync::record_instances(&self.db, observed_at, instances).await
    }

    /// Records a compliance sync atomically; see the crate documentation for the rules.
    pub async fn record_sync(&self, sync: &ComplianceSync<'_>) -> Result<SyncReport, StoreError> {
        validate_sync(sync)?;
        let report = sync::record_sync(&self.db, sync).await?;
        tracing::info!(
            sync = %report.sync_id,
            source = sync.source,
            instances = report.instances,
            stale = report.stale_instances,
            opened = report.opened,
            remediated = report.remediated,
            reopened = report.reopened,
            transitions = report.transitions,
            "compliance sync recorded"
        );
        Ok(report)
    }

    /// Sets release dates in bulk: `(patch id, released at, source)`.
    ///
    /// Each source has its own column, so an SSM date and an advisory's date for the same patch
    /// are both kept as evidence; [`PatchRecord::release`] prefers the advisory's. A patch the
    /// store has not seen yet gets a placeholder row holding only the date, so an import may
    /// come before the first scan that finds the patch missing: the order of imports and syncs
    /// does not matter. A repeated `(patch id, source)` keeps its last date. Returns the number
    /// of patches whose date was set or changed.
    pub async fn set_release_dates<S: AsRef<str> + Sync>(
        &self,
        dates: &[(S, DateTime<Utc>, ReleaseSource)],
    ) -> Result<usize, StoreError> {
        let mut latest: std::collections::HashMap<(ReleaseSource, &str), DateTime<Utc>> =
            std::collections::HashMap::with_capacity(dates.len());
        for (patch_id, at, source) in dates {
            let patch_id = patch_id.as_ref();
            if patch_id.is_empty() {
                return Err(StoreError::InvalidInput("a release date names an empty patch id".into()));
            }
            latest.insert((*source, patch_id), micros(*at));
        }
        let mut rows: Vec<(&str, DateTime<Utc>, ReleaseSource)> =
            latest.into_iter().map(|((source, id), at)| (id, at, source)).collect();
        rows.sort_unstable_by(|a, b| (a.2, a.0).cmp(&(b.2, b.0)));
        sync::set_release_dates(&self.db, &rows).await
    }
}

pub(crate) fn validate_key(key: &InstanceKey<'_>) -> Result<(), StoreError> {
    if key.account.is_empty() || key.region.is_empty() || key.instance_id.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "instance {}/{}/{} has an empty account, region or instance id",
            key.account, key.region, key.instance_id
        )));
    }
    Ok(())
}

fn validate_sync(sync: &ComplianceSync<'_>) -> Result<(), StoreError> {
    for scan in sync.scans {
        validate_key(&scan.instance)?;
        if let Some(p) = scan.patches.iter().find(|p| p.patch_id.is_empty()) {
            return Err(StoreError::InvalidInput(format!(
                "the scan of {} lists a patch with an empty id (title {:?})",
                scan.instance.instance_id, p.title
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The daemon spawns store calls; a future that is not `Send` for every lifetime (the
    /// classic trap of async fns in traits) would only show up there. This must compile.
    #[allow(dead_code)]
    fn store_calls_can_be_spawned(store: Store) {
        let s = store.clone();
        tokio::spawn(async move {
            let sync = ComplianceSync { source: "t", started_at: Utc::now(), scans: &[] };
            s.record_sync(&sync).await
        });
        let s = store.clone();
        tokio::spawn(async move { s.findings(&FindingQuery::default()).await });
        let s = store.clone();
        tokio::spawn(async move { s.record_exceptions(&[], Utc::now()).await });
        let s = store.clone();
        tokio::spawn(async move { s.window_runs(&WindowRunQuery::default()).await });
        tokio::spawn(async move { store.migrate().await });
        tokio::spawn(async move { Store::open("sqlite::memory:", &OpenOptions::default()).await });
    }

    #[tokio::test]
    async fn futures_are_send_and_urls_are_redacted() {
        let store = Store::open("sqlite::memory:", &OpenOptions::default()).await.unwrap();
        let sync = ComplianceSync { source: "t", started_at: Utc::now(), scans: &[] };
        let fut = store.record_sync(&sync);
        assert_send(&fut);
        fut.await.unwrap();
        assert_send(&store.findings(&FindingQuery::default()));

        let err = Store::open("mysql://u:secret@h/db", &OpenOptions::default()).await.unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedUrl { .. }));
        assert!(!err.to_string().contains("secret"), "{err}");
        // Nothing listens on port 1: the pool retries a refused connection until the acquire
        // timeout, then fails.
        let quick =
            OpenOptions { acquire_timeout: std::time::Duration::from_millis(200), ..OpenOptions::default() };
        let err = Store::open("postgres://u:secret@127.0.0.1:1/db", &quick).await.unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        assert!(!err.to_string().contains("secret") && !format!("{err:?}").contains("secret"), "{err:?}");
        assert!(!format!("{store:?}").contains("secret"));
    }

    #[tokio::test]
    async fn an_open_that_must_not_create_leaves_a_missing_file_missing() {
        let dir = std::env::temp_dir().join(format!("patchd-store-no-create-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("missing.db");
        let url = format!("sqlite://{}", file.display());
        let read_only = OpenOptions { migrate: false, create: false, ..OpenOptions::default() };
        let err = Store::open(&url, &read_only).await.unwrap_err();
        assert!(matches!(err, StoreError::Connect { .. }), "{err:?}");
        assert!(!file.exists(), "the open created {}", file.display());

        // An empty file is refused as unmigrated, and not written to.
        std::fs::write(&file, "").unwrap();
        let err = Store::open(&url, &read_only).await.unwrap_err();
        assert!(matches!(err, StoreError::OutdatedSchema { database_version: None, .. }), "{err:?}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
