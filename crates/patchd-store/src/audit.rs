//! The audit log: append and list, nothing else. The schema's triggers refuse UPDATE and
//! DELETE, so even SQL typed by hand cannot rewrite what patchd did.

use chrono::{DateTime, Utc};

use crate::db::{Arg, Query, Tx, TxKind};
use crate::types::{micros, AuditEntry, AuditId, AuditRecord};
use crate::{Store, StoreError};

pub(crate) fn validate_audit(entry: &AuditEntry<'_>) -> Result<(), StoreError> {
    if entry.actor.is_empty() || entry.action.is_empty() {
        return Err(StoreError::InvalidInput(format!(
            "an audit entry needs an actor and an action (got {:?} and {:?})",
            entry.actor, entry.action
        )));
    }
    Ok(())
}

/// Appends `entry` in `tx`, the transaction of whatever it records.
pub(crate) async fn insert_audit(tx: &mut Tx<'_>, entry: &AuditEntry<'_>) -> Result<AuditId, StoreError> {
    let sql = format!(
        "INSERT INTO audit_log (at, actor, action, target, command_id, request_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, {}) RETURNING id",
        tx.dialect().json_param(7)
    );
    let query = Query::new(sql)
        .bind(micros(entry.at))
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.command_id)
        .bind(entry.request_id)
        .bind(Arg::opt_json(entry.details.map(serde_json::Value::to_string)));
    Ok(AuditId(tx.fetch_one(query).await?.int("id")?))
}

impl Store {
    /// Appends an entry and returns its id (ids grow in append order).
    pub async fn append_audit(&self, entry: &AuditEntry<'_>) -> Result<AuditId, StoreError> {
        validate_audit(entry)?;
        let mut tx = self.begin_fenced(TxKind::Write, false).await?;
        let id = insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Entries at or after `since`, oldest first (ties in append order), at most `limit`.
    pub async fn audit_since(
        &self,
        since: DateTime<Utc>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut query = Query::default();
        let since = query.arg(micros(since));
        let mut sql = format!(
            "SELECT id, at, actor, action, target, command_id, request_id, {} FROM audit_log \
             WHERE at >= {since} ORDER BY at, id",
            self.db.dialect().json_column("details")
        );
        if let Some(limit) = limit {
            let n = query.arg(i64::from(limit));
            sql.push_str(&format!(" LIMIT {n}"));
        }
        query.sql = sql.into();
        let rows = self.db.fetch_all(query).await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: AuditId(r.int("id")?),
                    at: r.time("at")?,
                    actor: r.text("actor")?,
                    action: r.text("action")?,
                    target: r.opt_text("target")?,
                    command_id: r.opt_text("command_id")?,
                    request_id: r.opt_text("request_id")?,
                    details: match r.opt_text("details")? {
                        None => None,
                        Some(text) => Some(
                            serde_json::from_str(&text)
                                .map_err(|_| StoreError::corrupt("audit_log.details", text))?,
                        ),
                    },
                })
            })
            .collect()
    }
}
