//! What a compliance sync needs to know before it reads SSM, and what it could not read.
//!
//! - [`Store::recorded_compliance`]: for a batch of instances, the end of their latest recorded
//!   Scan or Install and their open findings, so that the sync lists only what may have changed
//!   (see patchd-daemon's sync module for the rules).
//! - [`Store::update_sync_backlog`] / [`Store::sync_backlog`]: instances whose latest results a
//!   sync could not read, kept until a later sync reads them. The backlog is in the database,
//!   not in a process, so a restart, another host or a manual command all see the same one.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::db::{Query, TxKind};
use crate::types::micros;
use crate::{Store, StoreError};

/// An instance as the store last recorded its compliance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedCompliance {
    /// The end of its latest recorded Scan or Install (the scan time when SSM gave none);
    /// None before its first recorded scan.
    pub operation_end: Option<DateTime<Utc>>,
    /// Patch ids of its open findings (not installed), in no particular order.
    pub open_patches: Vec<String>,
}

/// An instance whose latest results a sync could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBacklogEntry {
    pub account: String,
    pub region: String,
    pub instance_id: String,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    /// Syncs that tried and failed to read it.
    pub attempts: u32,
    pub last_error: String,
}

const UPSERT_BACKLOG: &str = "INSERT INTO sync_backlog \
    (account, region, instance_id, first_failed_at, last_failed_at, attempts, last_error) \
    VALUES ($1, $2, $3, $4, $4, 1, $5) \
    ON CONFLICT (account, region, instance_id) DO UPDATE SET last_failed_at = excluded.last_failed_at, \
    attempts = sync_backlog.attempts + 1, last_error = excluded.last_error";

impl Store {
    /// The recorded compliance of `instance_ids` in one account and region: two statements
    /// whatever their number. Instances the store has never recorded a scan of are absent.
    pub async fn recorded_compliance(
        &self,
        account: &str,
        region: &str,
        instance_ids: &[String],
    ) -> Result<HashMap<String, RecordedCompliance>, StoreError> {
        if instance_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids = serde_json::Value::from(instance_ids.to_vec()).to_string();
        let d = self.db.dialect();
        // Both statements read `instances i` with their joins, for these ids only.
        let of_these = |select: &str, joins: &str| {
            format!(
                "SELECT {select} FROM instances i {joins} \
                 WHERE i.account = $1 AND i.region = $2 AND i.instance_id IN ({})",
                d.json_texts("$3")
            )
        };
        let ends_sql = of_these(
            "i.instance_id, s.operation_end, s.scanned_at",
            "JOIN compliance_summaries s ON s.instance_ref = i.id",
        );
        let open_sql = of_these(
            "i.instance_id, p.patch_id",
            "JOIN findings f ON f.instance_ref = i.id AND f.installed_at IS NULL \
             JOIN patches p ON p.id = f.patch_ref",
        );
        let mut recorded: HashMap<String, RecordedCompliance> = HashMap::with_capacity(instance_ids.len());
        let ends =
            self.db.fetch_all(Query::new(ends_sql).bind(account).bind(region).bind(ids.as_str())).await?;
        for row in &ends {
            let end = match row.opt_time("operation_end")? {
                Some(end) => end,
                None => row.time("scanned_at")?,
            };
            recorded.entry(row.text("instance_id")?).or_default().operation_end = Some(end);
        }
        let open =
            self.db.fetch_all(Query::new(open_sql).bind(account).bind(region).bind(ids.as_str())).await?;
        for row in &open {
            recorded.entry(row.text("instance_id")?).or_default().open_patches.push(row.text("patch_id")?);
        }
        Ok(recorded)
    }

    /// The distinct operating systems of the SSM-managed instances recorded in one account and
    /// region (what decides which of SSM's patch catalogs to read), without reading the fleet.
    pub async fn managed_platforms(&self, account: &str, region: &str) -> Result<Vec<String>, StoreError> {
        let query = Query::new(
            "SELECT DISTINCT platform FROM instances \
             WHERE account = $1 AND region = $2 AND ssm_managed = TRUE AND platform IS NOT NULL \
             ORDER BY platform",
        )
        .bind(account)
        .bind(region);
        let rows = self.db.fetch_all(query).await?;
        rows.iter().map(|r| r.text("platform")).collect()
    }

    /// After a sync of one account and region: `unread` (instance id, why) join the backlog
    /// or count one more attempt; `read` leave it. One transaction.
    pub async fn update_sync_backlog(
        &self,
        account: &str,
        region: &str,
        unread: &[(&str, &str)],
        read: &[&str],
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if unread.is_empty() && read.is_empty() {
            return Ok(());
        }
        let at = micros(at);
        let read = serde_json::Value::from(read.to_vec()).to_string();
        if unread.is_empty() {
            // The common case, a sync that read everything while the backlog is empty,
            // must write nothing: one read decides.
            let any = Query::new(
                "SELECT EXISTS (SELECT 1 FROM sync_backlog WHERE account = $1 AND region = $2) AS found",
            )
            .bind(account)
            .bind(region);
            if !self.db.fetch_one(any).await?.flag("found")? {
                return Ok(());
            }
        }
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        let sql = format!(
            "DELETE FROM sync_backlog WHERE account = $1 AND region = $2 AND instance_id IN ({})",
            tx.dialect().json_texts("$3")
        );
        tx.execute(Query::new(sql).bind(account).bind(region).bind(read)).await?;
        for (instance_id, error) in unread {
            let query = Query::new(UPSERT_BACKLOG)
                .bind(account)
                .bind(region)
                .bind(*instance_id)
                .bind(at)
                .bind(*error);
            tx.execute(query).await?;
        }
        tx.commit().await
    }

    /// The backlog, oldest failure first; `scope` narrows it to one (account, region).
    pub async fn sync_backlog(
        &self,
        scope: Option<(&str, &str)>,
    ) -> Result<Vec<SyncBacklogEntry>, StoreError> {
        let (account, region) = scope.unwrap_or(("", ""));
        let query = Query::new(
            "SELECT account, region, instance_id, first_failed_at, last_failed_at, attempts, last_error \
             FROM sync_backlog WHERE ($1 = '' OR (account = $1 AND region = $2)) \
             ORDER BY first_failed_at, account, region, instance_id",
        )
        .bind(account)
        .bind(region);
        let rows = self.db.fetch_all(query).await?;
        rows.iter()
            .map(|r| {
                Ok(SyncBacklogEntry {
                    account: r.text("account")?,
                    region: r.text("region")?,
                    instance_id: r.text("instance_id")?,
                    first_failed_at: r.time("first_failed_at")?,
                    last_failed_at: r.time("last_failed_at")?,
                    attempts: u32::try_from(r.int("attempts")?).unwrap_or(u32::MAX),
                    last_error: r.text("last_error")?,
                })
            })
            .collect()
    }
}
