//! Snapshots of the configured exceptions (risk acceptances). The configuration is the policy;
//! the snapshots are the evidence of which acceptances were in force when, even after the
//! configuration changed.

use chrono::{DateTime, Utc};
use patchd_config::{Exception, ExceptionScope};

use crate::db::{Arg, Query, Row, TxKind};
use crate::dialect::Dialect;
use crate::read::json;
use crate::types::{micros, ExceptionRecord, ExceptionSnapshot, ExceptionSnapshotId, RecordedScope};
use crate::{Store, StoreError};

/// An exception as stored, without its snapshot: what two snapshots are compared on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    name: String,
    patches: Vec<String>,
    scope: RecordedScope,
    reason: String,
    owner: String,
    expires: chrono::NaiveDate,
    origin: String,
}

impl Entry {
    fn from_config(e: &Exception) -> Entry {
        Entry {
            name: e.name.clone(),
            patches: e.patches.clone(),
            scope: match &e.scope {
                ExceptionScope::Instances(ids) => RecordedScope::Instances(ids.clone()),
                ExceptionScope::Group(group) => RecordedScope::Group(group.value.clone()),
            },
            reason: e.reason.clone(),
            owner: e.owner.clone(),
            expires: e.expires,
            origin: e.origin.to_string(),
        }
    }

    fn from_row(r: &Row) -> Result<Entry, StoreError> {
        let scope = match (r.opt_text("instances")?, r.opt_text("group_name")?) {
            (Some(ids), None) => RecordedScope::Instances(
                serde_json::from_str(&ids).map_err(|_| StoreError::corrupt("exceptions.instances", ids))?,
            ),
            (None, Some(group)) => RecordedScope::Group(group),
            (ids, group) => {
                return Err(StoreError::corrupt("exceptions.group_name", format!("{ids:?} {group:?}")))
            }
        };
        Ok(Entry {
            name: r.text("name")?,
            patches: json(r, "patches")?,
            scope,
            reason: r.text("reason")?,
            owner: r.text("owner")?,
            expires: r.date("expires")?,
            origin: r.text("origin")?,
        })
    }
}

fn entry_columns(d: Dialect) -> String {
    format!(
        "name, {}, {}, group_name, reason, owner, expires, origin",
        d.json_column("patches"),
        d.json_column("instances")
    )
}

impl Store {
    /// Records the configured exceptions as of `taken_at`. A new snapshot is taken only when
    /// they differ from the latest one (in any field, the configuration file and line
    /// included); otherwise the latest snapshot is returned with `created: false`.
    pub async fn record_exceptions(
        &self,
        exceptions: &[Exception],
        taken_at: DateTime<Utc>,
    ) -> Result<ExceptionSnapshot, StoreError> {
        let mut entries: Vec<Entry> = exceptions.iter().map(Entry::from_config).collect();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let taken_at = micros(taken_at);
        let d = self.db.dialect();
        let mut tx = self.db.begin(TxKind::Exclusive).await?;
        let latest = tx
            .fetch_optional(Query::new(
                "SELECT id, taken_at FROM exception_snapshots ORDER BY taken_at DESC, id DESC LIMIT 1",
            ))
            .await?;
        if let Some(latest) = latest {
            let id = latest.int("id")?;
            let sql =
                format!("SELECT {} FROM exceptions WHERE snapshot_id = $1 ORDER BY name", entry_columns(d));
            let rows = tx.fetch_all(Query::new(sql).bind(id)).await?;
            let recorded = rows.iter().map(Entry::from_row).collect::<Result<Vec<_>, _>>()?;
            if recorded == entries {
                // Nothing to write: the latest snapshot stands.
                tx.rollback().await?;
                return Ok(ExceptionSnapshot {
                    id: ExceptionSnapshotId(id),
                    taken_at: latest.time("taken_at")?,
                    created: false,
                });
            }
        }
        let snapshot =
            Query::new("INSERT INTO exception_snapshots (taken_at) VALUES ($1) RETURNING id").bind(taken_at);
        let id = tx.fetch_one(snapshot).await?.int("id")?;
        let sql = format!(
            "INSERT INTO exceptions (snapshot_id, name, patches, instances, group_name, reason, \
             owner, expires, origin) VALUES ($1, $2, {}, {}, $5, $6, $7, $8, $9)",
            d.json_param(3),
            d.json_param(4)
        );
        for e in &entries {
            let (instances, group) = match &e.scope {
                RecordedScope::Instances(ids) => {
                    (Some(serde_json::Value::from(ids.clone()).to_string()), None)
                }
                RecordedScope::Group(group) => (None, Some(group.as_str())),
            };
            let query = Query::new(sql.as_str())
                .bind(id)
                .bind(e.name.as_str())
                .bind(Arg::json(serde_json::Value::from(e.patches.clone()).to_string()))
                .bind(Arg::opt_json(instances))
                .bind(group)
                .bind(e.reason.as_str())
                .bind(e.owner.as_str())
                .bind(e.expires)
                .bind(e.origin.as_str());
            tx.execute(query).await?;
        }
        tx.commit().await?;
        Ok(ExceptionSnapshot { id: ExceptionSnapshotId(id), taken_at, created: true })
    }

    /// The exceptions in force at `at`: those of the latest snapshot taken at or before `at`
    /// that have not expired (an exception holds through its whole `expires` day, UTC).
    pub async fn exceptions_in_force(&self, at: DateTime<Utc>) -> Result<Vec<ExceptionRecord>, StoreError> {
        let sql = format!(
            "SELECT s.id AS snapshot_id, s.taken_at, {} FROM exceptions e \
             JOIN exception_snapshots s ON s.id = e.snapshot_id \
             WHERE s.id = (SELECT id FROM exception_snapshots WHERE taken_at <= $1 \
                           ORDER BY taken_at DESC, id DESC LIMIT 1) \
               AND e.expires >= $2 \
             ORDER BY e.name",
            entry_columns(self.db.dialect())
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(micros(at)).bind(at.date_naive())).await?;
        rows.iter()
            .map(|r| {
                let e = Entry::from_row(r)?;
                Ok(ExceptionRecord {
                    name: e.name,
                    patches: e.patches,
                    scope: e.scope,
                    reason: e.reason,
                    owner: e.owner,
                    expires: e.expires,
                    origin: e.origin,
                    snapshot: ExceptionSnapshotId(r.int("snapshot_id")?),
                    snapshot_taken_at: r.time("taken_at")?,
                })
            })
            .collect()
    }
}
