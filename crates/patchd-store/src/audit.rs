//! The audit log: append and list, nothing else. The schema's triggers refuse UPDATE and
//! DELETE, so even SQL typed by hand cannot rewrite what patchd did.

use chrono::{DateTime, Utc};

use crate::read::{bind_all, Arg, Built, Cols};
use crate::types::{micros, AuditEntry, AuditId, AuditRecord};
use crate::{fenced_write, with_pool, Store, StoreError};

impl Store {
    /// Appends an entry and returns its id (ids grow in append order).
    pub async fn append_audit(&self, entry: &AuditEntry<'_>) -> Result<AuditId, StoreError> {
        if entry.actor.is_empty() || entry.action.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "an audit entry needs an actor and an action (got {:?} and {:?})",
                entry.actor, entry.action
            )));
        }
        let details = entry.details.map(serde_json::Value::to_string);
        self.counters.statement();
        let id: i64 = fenced_write!(self, false, |tx, pg| {
            let sql = format!(
                "INSERT INTO audit_log (at, actor, action, target, command_id, request_id, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, {}) RETURNING id",
                if pg { "$7::jsonb" } else { "$7" }
            );
            sqlx::query_scalar(&sql)
                .bind(micros(entry.at))
                .bind(entry.actor)
                .bind(entry.action)
                .bind(entry.target)
                .bind(entry.command_id)
                .bind(entry.request_id)
                .bind(details.as_deref())
                .fetch_one(&mut *tx)
                .await?
        })?;
        Ok(AuditId(id))
    }

    /// Entries at or after `since`, oldest first (ties in append order), at most `limit`.
    pub async fn audit_since(
        &self,
        since: DateTime<Utc>,
        limit: Option<u32>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut b = Built::default();
        let since = b.arg(Arg::Time(micros(since)));
        b.text = format!(
            "SELECT id, at, actor, action, target, command_id, request_id, {{details}} FROM audit_log \
             WHERE at >= {since} ORDER BY at, id"
        );
        if let Some(limit) = limit {
            let n = b.arg(Arg::Int(i64::from(limit)));
            b.text.push_str(&format!(" LIMIT {n}"));
        }
        self.counters.statement();
        with_pool!(self, |pool, pg| {
            let sql = b.text.replace("{details}", if pg { "details::text AS details" } else { "details" });
            let rows = bind_all!(sqlx::query(&sql), &b.args).fetch_all(pool).await?;
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
        })
    }
}
