//! Rollouts: a task's command cut into batches (one SendCommand each), and how far each batch
//! got. This is what makes a rollout survive a crash without sending anything twice:
//!
//! 1. [`Store::plan_rollout`] records every batch (its instances and the exact `Comment` it
//!    will be sent with) before anything is sent; planning again returns the first plan.
//! 2. [`Store::mark_batch_sending`] records the intent to send a batch, *before* SendCommand.
//! 3. [`Store::mark_batch_sent`] records the command id SSM answered with, and the audit entry
//!    of the SendCommand, in one transaction.
//!
//! A batch found in `sending` after a restart may or may not have reached SSM; its comment,
//! unique across all rollouts, is how the caller finds out (ListCommands) before sending it.
//! A batch moves only forward: `planned → sending → sent`, or `sending → rejected` when SSM
//! refuses it. Once `sent`, a batch keeps its command id forever.
//!
//! With canary waves, every batch carries its wave, and [`Store::record_gate`] keeps each
//! wave's gate decision: the first decision stands, so a restarted rollout halted by a gate
//! stays halted.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::audit::{insert_audit, validate_audit};
use crate::db::{Arg, Query, Row, TxKind};
use crate::dialect::Dialect;
use crate::error::not_found;
use crate::read::{json, parsed};
use crate::types::{micros, AuditEntry, BatchState, WindowTaskId};
use crate::{Store, StoreError};

/// A rollout to plan: what its batches share, and the batches in sending order.
#[derive(Debug, Clone, Copy)]
pub struct NewRollout<'a> {
    /// The run id the batches' comments carry.
    pub run_key: &'a str,
    /// AWS-RunPatchBaseline's `SnapshotId` for every batch.
    pub snapshot_id: &'a str,
    /// The task's MaxConcurrency, resolved against its targets (at least 1).
    pub max_concurrency: u32,
    /// The task's MaxErrors, resolved against its targets.
    pub max_errors: u32,
    pub planned_at: DateTime<Utc>,
    /// Numbered 1, 2, ... in this order.
    pub batches: &'a [NewBatch<'a>],
}

/// One planned SendCommand.
#[derive(Debug, Clone, Copy)]
pub struct NewBatch<'a> {
    /// The exact `Comment` the batch is sent with; unique across every rollout.
    pub comment: &'a str,
    /// At least one; an instance appears in one batch of a rollout only.
    pub instance_ids: &'a [String],
    /// The canary wave it belongs to, from 1; never lower than the previous batch's.
    pub wave: u32,
}

/// A planned rollout as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRecord {
    pub task_id: WindowTaskId,
    pub run_key: String,
    pub snapshot_id: String,
    pub max_concurrency: u32,
    pub max_errors: u32,
    pub planned_at: DateTime<Utc>,
    /// In batch number order.
    pub batches: Vec<BatchRecord>,
}

impl RolloutRecord {
    /// Instances over all batches.
    pub fn instance_count(&self) -> usize {
        self.batches.iter().map(|b| b.instance_ids.len()).sum()
    }
}

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    /// 1-based, in sending order.
    pub number: u32,
    pub comment: String,
    pub instance_ids: Vec<String>,
    /// The canary wave, from 1 (plans without waves are one wave).
    pub wave: u32,
    pub state: BatchState,
    /// Set exactly when `state` is `Sent`.
    pub command_id: Option<String>,
    /// The first attempt to send it.
    pub sending_at: Option<DateTime<Utc>>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Why SSM refused it, when `state` is `Rejected`.
    pub error: Option<String>,
}

const ROLLOUT_COLUMNS: &str = "task_id, run_key, snapshot_id, max_concurrency, max_errors, planned_at";

fn batch_columns(d: Dialect) -> String {
    format!(
        "batch_no, comment, {}, wave, state, command_id, sending_at, sent_at, error",
        d.json_column("instance_ids")
    )
}

fn count(r: &Row, column: &'static str) -> Result<u32, StoreError> {
    let n = r.int(column)?;
    u32::try_from(n).map_err(|_| StoreError::corrupt(column, n.to_string()))
}

fn batch_record(r: &Row) -> Result<BatchRecord, StoreError> {
    Ok(BatchRecord {
        number: count(r, "batch_no")?,
        comment: r.text("comment")?,
        instance_ids: json(r, "instance_ids")?,
        wave: count(r, "wave")?,
        state: parsed(r, "state", BatchState::parse)?,
        command_id: r.opt_text("command_id")?,
        sending_at: r.opt_time("sending_at")?,
        sent_at: r.opt_time("sent_at")?,
        error: r.opt_text("error")?,
    })
}

fn rollout_record(r: &Row, batches: Vec<BatchRecord>) -> Result<RolloutRecord, StoreError> {
    Ok(RolloutRecord {
        task_id: WindowTaskId(r.int("task_id")?),
        run_key: r.text("run_key")?,
        snapshot_id: r.text("snapshot_id")?,
        max_concurrency: count(r, "max_concurrency")?,
        max_errors: count(r, "max_errors")?,
        planned_at: r.time("planned_at")?,
        batches,
    })
}

fn validate_plan(rollout: &NewRollout<'_>) -> Result<(), StoreError> {
    let invalid = |message: String| Err(StoreError::InvalidInput(message));
    if rollout.run_key.is_empty() || rollout.snapshot_id.is_empty() {
        return invalid("a rollout needs a run key and a snapshot id".into());
    }
    if rollout.max_concurrency == 0 {
        return invalid("a rollout's max concurrency must be at least 1".into());
    }
    let mut comments = HashSet::new();
    let mut instances = HashSet::new();
    for (i, batch) in rollout.batches.iter().enumerate() {
        let number = i + 1;
        if batch.comment.is_empty() || !comments.insert(batch.comment) {
            return invalid(format!("batch {number} has an empty or repeated comment {:?}", batch.comment));
        }
        if batch.instance_ids.is_empty() {
            return invalid(format!("batch {number} has no instances"));
        }
        let previous_wave = i.checked_sub(1).map_or(1, |p| rollout.batches[p].wave);
        if batch.wave < previous_wave || batch.wave > previous_wave + 1 {
            return invalid(format!(
                "batch {number} is in wave {} after a batch of wave {previous_wave}; waves go 1, 2, ... in batch order",
                batch.wave
            ));
        }
        if let Some(id) = batch.instance_ids.iter().find(|id| id.is_empty() || !instances.insert(id.as_str()))
        {
            return invalid(format!("instance {id:?} of batch {number} is empty or already in a batch"));
        }
    }
    Ok(())
}

/// The task's batches, or the one numbered `number`, in number order.
fn batches_query(d: Dialect, task: WindowTaskId, number: Option<u32>) -> Query<'static> {
    let mut query = Query::default();
    let task = query.arg(task.0);
    let mut sql = format!("SELECT {} FROM rollout_batches WHERE task_id = {task}", batch_columns(d));
    if let Some(number) = number {
        let number = query.arg(i64::from(number));
        sql.push_str(&format!(" AND batch_no = {number}"));
    }
    sql.push_str(" ORDER BY batch_no");
    query.sql = sql.into();
    query
}

/// A wave's gate, as judged after the wave ended and its bake passed.
#[derive(Debug, Clone, PartialEq)]
pub struct GateRecord {
    pub wave: u32,
    pub passed: bool,
    /// Why it failed, in words; empty when it passed.
    pub reason: String,
    /// Each check's outcome, as the rollout describes it.
    pub checks: serde_json::Value,
    pub decided_at: DateTime<Utc>,
}

fn gate_record(r: &Row) -> Result<GateRecord, StoreError> {
    let outcome = r.text("outcome")?;
    Ok(GateRecord {
        wave: count(r, "wave")?,
        passed: match outcome.as_str() {
            "passed" => true,
            "failed" => false,
            _ => return Err(StoreError::corrupt("outcome", outcome)),
        },
        reason: r.text("reason")?,
        checks: json(r, "checks")?,
        decided_at: r.time("decided_at")?,
    })
}

fn no_batch(task: WindowTaskId, number: u32) -> StoreError {
    StoreError::InvalidInput(format!("task {task} has no rollout batch {number}; plan the rollout first"))
}

impl Store {
    /// Records a rollout's plan in one transaction, unless the task already has one: then the
    /// recorded plan is returned unchanged, so a restarted caller continues the plan it made
    /// before (batches are never re-cut). A comment used by another rollout is refused.
    pub async fn plan_rollout(
        &self,
        task: WindowTaskId,
        rollout: &NewRollout<'_>,
    ) -> Result<RolloutRecord, StoreError> {
        validate_plan(rollout)?;
        if let Some(existing) = self.rollout(task).await? {
            return Ok(existing);
        }
        let planned_at = micros(rollout.planned_at);
        let written = async {
            let mut tx = self.begin_fenced(TxKind::Exclusive, false).await?;
            let rollout_row = Query::new(
                "INSERT INTO rollouts (task_id, run_key, snapshot_id, max_concurrency, max_errors, \
                 planned_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task_id) DO NOTHING",
            )
            .bind(task.0)
            .bind(rollout.run_key)
            .bind(rollout.snapshot_id)
            .bind(i64::from(rollout.max_concurrency))
            .bind(i64::from(rollout.max_errors))
            .bind(planned_at);
            if tx.execute(rollout_row).await? == 0 {
                // Planned by someone else since the check above: theirs stands.
                tx.rollback().await?;
                return Ok(false);
            }
            let sql = format!(
                "INSERT INTO rollout_batches (task_id, batch_no, comment, instance_ids, wave, state) \
                 VALUES ($1, $2, $3, {}, $5, 'planned')",
                tx.dialect().json_param(4)
            );
            for (i, batch) in rollout.batches.iter().enumerate() {
                let batch_row = Query::new(sql.as_str())
                    .bind(task.0)
                    .bind(i as i64 + 1)
                    .bind(batch.comment)
                    .bind(Arg::json(serde_json::Value::from(batch.instance_ids.to_vec()).to_string()))
                    .bind(i64::from(batch.wave));
                tx.execute(batch_row).await?;
            }
            tx.commit().await?;
            Ok::<bool, StoreError>(true)
        }
        .await;
        let created = written.map_err(|e| not_found(e, "window task", task.0))?;
        let record = self.rollout(task).await?.ok_or(StoreError::NotFound { what: "rollout", id: task.0 })?;
        if created {
            tracing::debug!(task = %task, batches = record.batches.len(), "rollout planned");
        }
        Ok(record)
    }

    /// The task's rollout plan with every batch's state, if one was planned. Read in one
    /// snapshot.
    pub async fn rollout(&self, task: WindowTaskId) -> Result<Option<RolloutRecord>, StoreError> {
        let mut tx = self.db.begin(TxKind::Snapshot).await?;
        let head =
            Query::new(format!("SELECT {ROLLOUT_COLUMNS} FROM rollouts WHERE task_id = $1")).bind(task.0);
        let Some(head) = tx.fetch_optional(head).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let rows = tx.fetch_all(batches_query(tx.dialect(), task, None)).await?;
        tx.commit().await?;
        let batches = rows.iter().map(batch_record).collect::<Result<Vec<_>, _>>()?;
        Ok(Some(rollout_record(&head, batches)?))
    }

    /// Records a wave's gate decision with its audit entry, in one transaction. A decision
    /// already recorded for the wave stands and is returned instead: judging again after a
    /// restart cannot turn a failed gate into a passed one.
    pub async fn record_gate(
        &self,
        task: WindowTaskId,
        gate: &GateRecord,
        audit: &AuditEntry<'_>,
    ) -> Result<GateRecord, StoreError> {
        validate_audit(audit)?;
        let mut tx = self.begin_fenced(TxKind::Exclusive, false).await?;
        let sql = format!(
            "INSERT INTO rollout_gates (task_id, wave, outcome, reason, checks, decided_at) \
             VALUES ($1, $2, $3, $4, {}, $6) ON CONFLICT (task_id, wave) DO NOTHING",
            tx.dialect().json_param(5)
        );
        let insert = Query::new(sql)
            .bind(task.0)
            .bind(i64::from(gate.wave))
            .bind(if gate.passed { "passed" } else { "failed" })
            .bind(gate.reason.as_str())
            .bind(Arg::json(gate.checks.to_string()))
            .bind(micros(gate.decided_at));
        if tx.execute(insert).await? == 1 {
            insert_audit(&mut tx, audit).await?;
        }
        tx.commit().await?;
        let stored = self.rollout_gates(task).await?.into_iter().find(|g| g.wave == gate.wave);
        stored.ok_or(StoreError::NotFound { what: "rollout gate", id: task.0 })
    }

    /// The task's gate decisions, by wave.
    pub async fn rollout_gates(&self, task: WindowTaskId) -> Result<Vec<GateRecord>, StoreError> {
        let sql = format!(
            "SELECT wave, outcome, reason, {}, decided_at FROM rollout_gates WHERE task_id = $1 ORDER BY wave",
            self.db.dialect().json_column("checks")
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(task.0)).await?;
        rows.iter().map(gate_record).collect()
    }

    /// The task's batches in number order; empty when no rollout was planned.
    pub async fn rollout_batches(&self, task: WindowTaskId) -> Result<Vec<BatchRecord>, StoreError> {
        let rows = self.db.fetch_all(batches_query(self.db.dialect(), task, None)).await?;
        rows.iter().map(batch_record).collect()
    }

    /// One batch, if it exists.
    pub async fn rollout_batch(
        &self,
        task: WindowTaskId,
        number: u32,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let row = self.db.fetch_optional(batches_query(self.db.dialect(), task, Some(number))).await?;
        row.as_ref().map(batch_record).transpose()
    }

    /// Records the intent to send a batch; call it before SendCommand, every attempt. The
    /// first attempt's time is kept (a lookup by comment starts there). A batch already sent
    /// or rejected is refused with `InvalidInput`: it must never be sent again.
    pub async fn mark_batch_sending(
        &self,
        task: WindowTaskId,
        number: u32,
        at: DateTime<Utc>,
    ) -> Result<BatchRecord, StoreError> {
        // The one write that requires the lease unexpired: a process whose term may have ended
        // by the database's clock must not release a batch, even before anyone takes over.
        let mut tx = self.begin_fenced(TxKind::Write, true).await?;
        let query = Query::new(
            "UPDATE rollout_batches SET state = 'sending', sending_at = COALESCE(sending_at, $3) \
             WHERE task_id = $1 AND batch_no = $2 AND state IN ('planned', 'sending')",
        )
        .bind(task.0)
        .bind(i64::from(number))
        .bind(micros(at));
        let updated = tx.execute(query).await?;
        tx.commit().await?;
        let batch = self.rollout_batch(task, number).await?.ok_or_else(|| no_batch(task, number))?;
        if updated == 0 {
            return Err(StoreError::InvalidInput(format!(
                "batch {number} of task {task} is already {} ({}); a batch is never sent twice",
                batch.state,
                batch.command_id.as_deref().or(batch.error.as_deref()).unwrap_or("no command")
            )));
        }
        Ok(batch)
    }

    /// Records the command SSM created for a batch in `sending`, with the audit entry of that
    /// SendCommand, in one transaction. Recording the same command again changes nothing and
    /// returns false (no second audit entry); a different command for a sent batch, or a batch
    /// whose intent was not recorded first, is refused with `InvalidInput`.
    pub async fn mark_batch_sent(
        &self,
        task: WindowTaskId,
        number: u32,
        command_id: &str,
        sent_at: DateTime<Utc>,
        audit: Option<&AuditEntry<'_>>,
    ) -> Result<bool, StoreError> {
        if command_id.is_empty() {
            return Err(StoreError::InvalidInput("a sent batch needs its command id".into()));
        }
        if let Some(entry) = audit {
            validate_audit(entry)?;
        }
        let mut tx = self.begin_fenced(TxKind::Exclusive, false).await?;
        let batch =
            Query::new("SELECT state, command_id FROM rollout_batches WHERE task_id = $1 AND batch_no = $2")
                .bind(task.0)
                .bind(i64::from(number));
        let Some(row) = tx.fetch_optional(batch).await? else { return Err(no_batch(task, number)) };
        let state = parsed(&row, "state", BatchState::parse)?;
        let recorded = row.opt_text("command_id")?;
        match state {
            BatchState::Sent if recorded.as_deref() == Some(command_id) => {
                // Nothing to write: the command was recorded before.
                tx.rollback().await?;
                return Ok(false);
            }
            BatchState::Sending => {}
            other => {
                return Err(StoreError::InvalidInput(format!(
                    "batch {number} of task {task} is {other}{}, it cannot become command {command_id}; \
                     record the intent to send before sending",
                    recorded.map(|id| format!(" as command {id}")).unwrap_or_default()
                )))
            }
        }
        let sent = Query::new(
            "UPDATE rollout_batches SET state = 'sent', command_id = $3, sent_at = $4, error = NULL \
             WHERE task_id = $1 AND batch_no = $2",
        )
        .bind(task.0)
        .bind(i64::from(number))
        .bind(command_id)
        .bind(micros(sent_at));
        tx.execute(sent).await?;
        if let Some(entry) = audit {
            insert_audit(&mut tx, entry).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records that SSM refused a batch in `sending` (nothing was created), with why.
    pub async fn mark_batch_rejected(
        &self,
        task: WindowTaskId,
        number: u32,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_fenced(TxKind::Write, false).await?;
        let query = Query::new(
            "UPDATE rollout_batches SET state = 'rejected', error = $3 \
             WHERE task_id = $1 AND batch_no = $2 AND state = 'sending'",
        )
        .bind(task.0)
        .bind(i64::from(number))
        .bind(error);
        let updated = tx.execute(query).await?;
        tx.commit().await?;
        if updated == 0 {
            let batch = self.rollout_batch(task, number).await?.ok_or_else(|| no_batch(task, number))?;
            return Err(StoreError::InvalidInput(format!(
                "batch {number} of task {task} is {}, only a batch being sent can be rejected",
                batch.state
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_checked() {
        let a = vec!["i-1".to_string(), "i-2".to_string()];
        let b = vec!["i-2".to_string()];
        let plan = |batches: &[NewBatch<'_>]| {
            validate_plan(&NewRollout {
                run_key: "run",
                snapshot_id: "snap",
                max_concurrency: 1,
                max_errors: 0,
                planned_at: Utc::now(),
                batches,
            })
        };
        assert!(plan(&[NewBatch { comment: "c1", instance_ids: &a, wave: 1 }]).is_ok());
        assert!(plan(&[]).is_ok(), "a rollout of nothing is a plan too");
        assert!(plan(&[
            NewBatch { comment: "c1", instance_ids: &a, wave: 1 },
            NewBatch { comment: "c2", instance_ids: &b, wave: 1 }
        ])
        .is_err());
        assert!(plan(&[
            NewBatch { comment: "c1", instance_ids: &a, wave: 1 },
            NewBatch { comment: "c1", instance_ids: &[], wave: 1 }
        ])
        .is_err());
        assert!(plan(&[NewBatch { comment: "c1", instance_ids: &[], wave: 1 }]).is_err());
    }
}
