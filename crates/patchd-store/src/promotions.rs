//! Promotion: what an install task installed ([`Store::record_task_installs`]), which run of a
//! window a promoting task repeats ([`Store::promotion_source`]), and the set it chose
//! ([`Store::record_promotion`]), kept so that a resumed task installs the same set.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audit::{insert_audit, validate_audit};
use crate::db::{Arg, Query, Row, TxKind};
use crate::read::json;
use crate::types::{micros, AuditEntry, WindowRunId, WindowTaskId};
use crate::{Store, StoreError};

/// One patch of a promoted set, as DescribeInstancePatches named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromotedPatch {
    /// SSM's KBId: what AWS-RunPatchBaseline's install list names.
    pub id: String,
    pub title: String,
    pub classification: String,
    pub severity: String,
    /// On how many of the source's instances it was installed.
    pub instances: u32,
}

/// The run a promotion repeats, and everything its install tasks installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionSource {
    pub run: WindowRunId,
    /// As the run was recorded: the window, or `manual:` and the window for `run-now`.
    pub recorded_as: String,
    pub account: String,
    pub region: String,
    pub ended_at: DateTime<Utc>,
    /// Every install task's patches, merged by id and ordered by id.
    pub patches: Vec<PromotedPatch>,
}

/// The set a promoting task chose when it first started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionRecord {
    pub from_window: String,
    pub source_run: WindowRunId,
    /// Where the install list was put (`s3://bucket/key`).
    pub list_url: String,
    pub patches: Vec<PromotedPatch>,
    pub decided_at: DateTime<Utc>,
}

/// A promotion with the run and task that made it, for the evidence report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionOfRun {
    pub task: WindowTaskId,
    pub task_name: String,
    pub run: WindowRunId,
    pub window: String,
    pub promotion: PromotionRecord,
}

fn promotion_record(r: &Row) -> Result<PromotionRecord, StoreError> {
    Ok(PromotionRecord {
        from_window: r.text("from_window")?,
        source_run: WindowRunId(r.int("source_run_id")?),
        list_url: r.text("list_url")?,
        patches: json(r, "patches")?,
        decided_at: r.time("decided_at")?,
    })
}

/// Merges the sets of several tasks of one run: a patch installed by two tasks counts the
/// instances of both.
fn merge(sets: impl IntoIterator<Item = Vec<PromotedPatch>>) -> Vec<PromotedPatch> {
    let mut by_id: BTreeMap<String, PromotedPatch> = BTreeMap::new();
    for patch in sets.into_iter().flatten() {
        match by_id.get_mut(&patch.id) {
            Some(known) => known.instances += patch.instances,
            None => {
                by_id.insert(patch.id.clone(), patch);
            }
        }
    }
    by_id.into_values().collect()
}

impl Store {
    /// Records what an install task installed, read in full from SSM. Recording again (a
    /// resumed task read its instances again) replaces the earlier reading.
    pub async fn record_task_installs(
        &self,
        task: WindowTaskId,
        instances: u32,
        patches: &[PromotedPatch],
        captured_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut sorted = patches.to_vec();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let body = serde_json::to_string(&sorted).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let mut tx = self.begin_fenced(TxKind::Write, false).await?;
        let sql = format!(
            "INSERT INTO task_installs (task_id, instances, patches, captured_at) VALUES ($1, $2, {}, $4) \
             ON CONFLICT (task_id) DO UPDATE SET instances = excluded.instances, patches = excluded.patches, \
             captured_at = excluded.captured_at",
            tx.dialect().json_param(3)
        );
        tx.execute(
            Query::new(sql)
                .bind(task.0)
                .bind(i64::from(instances))
                .bind(Arg::json(body))
                .bind(micros(captured_at)),
        )
        .await?;
        tx.commit().await
    }

    /// What an install task installed, if it was read.
    pub async fn task_installs(&self, task: WindowTaskId) -> Result<Option<Vec<PromotedPatch>>, StoreError> {
        let sql = format!(
            "SELECT {} FROM task_installs WHERE task_id = $1",
            self.db.dialect().json_column("patches")
        );
        let row = self.db.fetch_optional(Query::new(sql).bind(task.0)).await?;
        row.as_ref().map(|r| json(r, "patches")).transpose()
    }

    /// The run a task promoting from `window` repeats: the window's latest succeeded run
    /// (scheduled or `run-now`, in any account and region) whose every install task's
    /// installs were read. None when there is no such run.
    pub async fn promotion_source(&self, window: &str) -> Result<Option<PromotionSource>, StoreError> {
        let manual = format!("manual:{window}");
        let sql = "SELECT r.id, r.window_name, r.account, r.region, r.ended_at FROM window_runs r \
             WHERE r.window_name IN ($1, $2) AND r.status = 'succeeded' AND r.ended_at IS NOT NULL \
             AND EXISTS (SELECT 1 FROM window_tasks t JOIN task_installs c ON c.task_id = t.id \
                         WHERE t.run_id = r.id) \
             AND NOT EXISTS (SELECT 1 FROM window_tasks t WHERE t.run_id = r.id AND t.operation = 'Install' \
                         AND NOT EXISTS (SELECT 1 FROM task_installs c WHERE c.task_id = t.id)) \
             ORDER BY r.ended_at DESC, r.id DESC LIMIT 1";
        let Some(run) = self.db.fetch_optional(Query::new(sql).bind(window).bind(manual.as_str())).await?
        else {
            return Ok(None);
        };
        let run_id = WindowRunId(run.int("id")?);
        let sql = format!(
            "SELECT {} FROM task_installs c JOIN window_tasks t ON t.id = c.task_id WHERE t.run_id = $1 \
             ORDER BY t.id",
            self.db.dialect().json_column("c.patches")
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(run_id.0)).await?;
        let sets =
            rows.iter().map(|r| json::<Vec<PromotedPatch>>(r, "patches")).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(PromotionSource {
            run: run_id,
            recorded_as: run.text("window_name")?,
            account: run.text("account")?,
            region: run.text("region")?,
            ended_at: run.time("ended_at")?,
            patches: merge(sets),
        }))
    }

    /// Records the set a promoting task chose, with its audit entry, in one transaction. A
    /// choice already recorded for the task stands and is returned instead.
    pub async fn record_promotion(
        &self,
        task: WindowTaskId,
        promotion: &PromotionRecord,
        audit: &AuditEntry<'_>,
    ) -> Result<PromotionRecord, StoreError> {
        validate_audit(audit)?;
        let body =
            serde_json::to_string(&promotion.patches).map_err(|e| StoreError::InvalidInput(e.to_string()))?;
        let mut tx = self.begin_fenced(TxKind::Exclusive, false).await?;
        let sql = format!(
            "INSERT INTO promotions (task_id, from_window, source_run_id, list_url, patches, decided_at) \
             VALUES ($1, $2, $3, $4, {}, $6) ON CONFLICT (task_id) DO NOTHING",
            tx.dialect().json_param(5)
        );
        let insert = Query::new(sql)
            .bind(task.0)
            .bind(promotion.from_window.as_str())
            .bind(promotion.source_run.0)
            .bind(promotion.list_url.as_str())
            .bind(Arg::json(body))
            .bind(micros(promotion.decided_at));
        if tx.execute(insert).await? == 1 {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        self.promotion(task).await?.ok_or(StoreError::NotFound { what: "promotion", id: task.0 })
    }

    /// The set a promoting task chose, if it chose one.
    pub async fn promotion(&self, task: WindowTaskId) -> Result<Option<PromotionRecord>, StoreError> {
        let sql = format!(
            "SELECT from_window, source_run_id, list_url, {}, decided_at FROM promotions WHERE task_id = $1",
            self.db.dialect().json_column("patches")
        );
        let row = self.db.fetch_optional(Query::new(sql).bind(task.0)).await?;
        row.as_ref().map(promotion_record).transpose()
    }

    /// Promotions decided in `[from, to)`, oldest first.
    pub async fn promotions_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PromotionOfRun>, StoreError> {
        let sql = format!(
            "SELECT p.task_id, t.task_name, t.run_id, r.window_name, p.from_window, p.source_run_id, \
             p.list_url, {}, p.decided_at FROM promotions p JOIN window_tasks t ON t.id = p.task_id \
             JOIN window_runs r ON r.id = t.run_id WHERE p.decided_at >= $1 AND p.decided_at < $2 \
             ORDER BY p.decided_at, p.task_id",
            self.db.dialect().json_column("p.patches")
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(micros(from)).bind(micros(to))).await?;
        rows.iter()
            .map(|r| {
                Ok(PromotionOfRun {
                    task: WindowTaskId(r.int("task_id")?),
                    task_name: r.text("task_name")?,
                    run: WindowRunId(r.int("run_id")?),
                    window: r.text("window_name")?,
                    promotion: promotion_record(r)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(id: &str, instances: u32) -> PromotedPatch {
        PromotedPatch {
            id: id.into(),
            title: format!("{id} title"),
            classification: "Security".into(),
            severity: "Critical".into(),
            instances,
        }
    }

    #[test]
    fn sets_of_several_tasks_merge_by_id_and_add_their_instances() {
        let merged = merge([vec![patch("b", 2), patch("a", 1)], vec![patch("b", 3)]]);
        assert_eq!(merged, vec![patch("a", 1), patch("b", 5)]);
    }
}
