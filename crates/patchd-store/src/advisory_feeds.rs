//! Release dates from vendor advisory feeds, and how each feed's fetches went.
//!
//! - [`Store::set_advisory_dates`]: the dates of one or more feeds, each labelled with the feed
//!   that gave it, written in one transaction: a feed is imported whole or not at all.
//! - [`Store::undated_patches`]: the patches no advisory dates yet, for matching by package.
//! - [`Store::record_feed_fetch`] / [`Store::feed_status`]: the shared record of every feed's
//!   fetches, so `patchd advisories status`, `/readyz` and metrics tell the same story on
//!   every host.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::db::{Query, TxKind};
use crate::types::micros;
use crate::{Store, StoreError};

/// What one fetch of a feed came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedFetch {
    /// New data, parsed whole and imported: `advisories` entries.
    Imported { advisories: u64 },
    /// The server (or the file's mtime) said nothing changed; the last good data stays.
    NotModified,
    /// Nothing imported; the last good data stays in use.
    Failed { error: String },
}

/// One feed as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStatus {
    pub name: String,
    pub kind: String,
    pub location: String,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The latest fetch that left good data in place (imported, or not modified since).
    pub last_success_at: Option<DateTime<Utc>>,
    /// The latest fetch whose data was new.
    pub last_changed_at: Option<DateTime<Utc>>,
    pub advisories: u64,
    /// Failed fetches since the last success.
    pub failures: u32,
    /// The error of the latest failed fetch; cleared by a success.
    pub last_error: Option<String>,
}

const UPSERT_ADVISORY_DATE: &str =
    "INSERT INTO patches AS p (patch_id, advisory_released_at, advisory_source) \
     VALUES ($1, $2, $3) ON CONFLICT (patch_id) DO UPDATE SET \
     advisory_released_at = excluded.advisory_released_at, advisory_source = excluded.advisory_source";

impl Store {
    /// Sets the advisory release date of each `(patch id, date, source)`. A patch the store has
    /// not seen yet gets a placeholder row holding only the date, so feeds may come before the
    /// scan that finds the patch missing. Only rows whose date or source changes are written,
    /// so a feed refreshed with nothing new costs one read. Returns the rows changed.
    pub async fn set_advisory_dates(
        &self,
        dates: &[(&str, DateTime<Utc>, &str)],
    ) -> Result<usize, StoreError> {
        if dates.iter().any(|(id, _, _)| id.is_empty()) {
            return Err(StoreError::InvalidInput("an advisory date names an empty patch id".into()));
        }
        let mut sources: Vec<&str> = dates.iter().map(|(_, _, source)| *source).collect();
        sources.sort_unstable();
        sources.dedup();
        let stored = self.advisory_dates_from(&sources).await?;
        let mut wanted: HashMap<&str, (DateTime<Utc>, &str)> = HashMap::with_capacity(dates.len());
        for (id, at, source) in dates {
            wanted.insert(id, (micros(*at), source));
        }
        let mut changes: Vec<(&str, DateTime<Utc>, &str)> = wanted
            .into_iter()
            .filter(|(id, (at, source))| {
                stored
                    .get(*id)
                    .is_none_or(|(s_at, s_source)| s_at != at || s_source.as_deref() != Some(*source))
            })
            .map(|(id, (at, source))| (id, at, source))
            .collect();
        if changes.is_empty() {
            return Ok(0);
        }
        changes.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        for (id, at, source) in &changes {
            tx.execute(Query::new(UPSERT_ADVISORY_DATE).bind(*id).bind(*at).bind(*source)).await?;
        }
        tx.commit().await?;
        Ok(changes.len())
    }

    /// Patch id -> (advisory date, source) of the patches these sources date. A refresh of one
    /// feed reads that feed's rows, not every feed's. A patch another source dates is not read:
    /// it is written again, which the upsert makes harmless.
    async fn advisory_dates_from(
        &self,
        sources: &[&str],
    ) -> Result<HashMap<String, (DateTime<Utc>, Option<String>)>, StoreError> {
        let sources = serde_json::Value::from(sources.to_vec()).to_string();
        let sql = format!(
            "SELECT patch_id, advisory_released_at, advisory_source FROM patches \
             WHERE advisory_released_at IS NOT NULL AND advisory_source IN ({})",
            self.db.dialect().json_texts("$1")
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(sources)).await?;
        rows.iter()
            .map(|r| {
                Ok((r.text("patch_id")?, (r.time("advisory_released_at")?, r.opt_text("advisory_source")?)))
            })
            .collect()
    }

    /// (patch id, title) of every patch no advisory dates yet: what matching by package can
    /// still date.
    pub async fn undated_patches(&self) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = self
            .db
            .fetch_all(Query::new(
                "SELECT patch_id, title FROM patches WHERE advisory_released_at IS NULL ORDER BY patch_id",
            ))
            .await?;
        rows.iter().map(|r| Ok((r.text("patch_id")?, r.opt_text("title")?))).collect()
    }

    /// Records one fetch of a feed at `at`.
    pub async fn record_feed_fetch(
        &self,
        name: &str,
        kind: &str,
        location: &str,
        at: DateTime<Utc>,
        fetch: &FeedFetch,
    ) -> Result<(), StoreError> {
        let at = micros(at);
        let (advisories, error) = match fetch {
            FeedFetch::Imported { advisories } => {
                (Some(i64::try_from(*advisories).unwrap_or(i64::MAX)), None)
            }
            FeedFetch::NotModified => (None, None),
            FeedFetch::Failed { error } => (None, Some(error.as_str())),
        };
        let succeeded = error.is_none();
        let changed = matches!(fetch, FeedFetch::Imported { .. });
        let query = Query::new(
            "INSERT INTO feed_status AS f (name, kind, location, last_attempt_at, last_success_at, \
             last_changed_at, advisories, failures, last_error) \
             VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN $4 END, CASE WHEN $6 THEN $4 END, \
             coalesce($7, 0), CASE WHEN $5 THEN 0 ELSE 1 END, $8) \
             ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, location = excluded.location, \
             last_attempt_at = excluded.last_attempt_at, \
             last_success_at = coalesce(excluded.last_success_at, f.last_success_at), \
             last_changed_at = coalesce(excluded.last_changed_at, f.last_changed_at), \
             advisories = coalesce($7, f.advisories), \
             failures = CASE WHEN $5 THEN 0 ELSE f.failures + 1 END, \
             last_error = excluded.last_error",
        )
        .bind(name)
        .bind(kind)
        .bind(location)
        .bind(at)
        .bind(succeeded)
        .bind(changed)
        .bind(advisories)
        .bind(error);
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        tx.execute(query).await?;
        tx.commit().await
    }

    /// Every feed the store has a record of, by name.
    pub async fn feed_status(&self) -> Result<Vec<FeedStatus>, StoreError> {
        let rows = self
            .db
            .fetch_all(Query::new(
                "SELECT name, kind, location, last_attempt_at, last_success_at, last_changed_at, \
                 advisories, failures, last_error FROM feed_status ORDER BY name",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FeedStatus {
                    name: r.text("name")?,
                    kind: r.text("kind")?,
                    location: r.text("location")?,
                    last_attempt_at: r.opt_time("last_attempt_at")?,
                    last_success_at: r.opt_time("last_success_at")?,
                    last_changed_at: r.opt_time("last_changed_at")?,
                    advisories: u64::try_from(r.int("advisories")?).unwrap_or(0),
                    failures: u32::try_from(r.int("failures")?).unwrap_or(u32::MAX),
                    last_error: r.opt_text("last_error")?,
                })
            })
            .collect()
    }
}
