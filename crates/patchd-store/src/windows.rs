//! Maintenance-window runs, their tasks (one SSM command each) and the per-instance
//! invocations. A run is keyed by (window, scheduled start, account, region), so a daemon
//! restarting in the middle of a window finds the run it was executing instead of starting a
//! second one, and each account and region a window reaches has a run of its own.

use chrono::{DateTime, Utc};

use crate::db::{Query, Row, TxKind};
use crate::error::not_found;
use crate::read::parsed;
use crate::sync::{instance_refs, last_of_each};
use crate::types::*;
use crate::{validate_key, Store, StoreError};

fn json_ids(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

fn task_record(r: &Row) -> Result<WindowTaskRecord, StoreError> {
    Ok(WindowTaskRecord {
        id: WindowTaskId(r.int("id")?),
        name: r.text("task_name")?,
        operation: parsed(r, "operation", parse_operation)?,
        command_id: r.opt_text("command_id")?,
        status: parsed(r, "status", CommandStatus::parse)?,
        started_at: r.opt_time("started_at")?,
        ended_at: r.opt_time("ended_at")?,
    })
}

fn invocation_record(r: &Row) -> Result<InvocationRecord, StoreError> {
    Ok(InvocationRecord {
        account: r.text("account")?,
        region: r.text("region")?,
        instance_id: r.text("instance_id")?,
        command_id: r.text("command_id")?,
        status: parsed(r, "status", CommandStatus::parse)?,
        status_details: r.opt_text("status_details")?,
        requested_at: r.opt_time("requested_at")?,
        started_at: r.opt_time("started_at")?,
        ended_at: r.opt_time("ended_at")?,
    })
}

/// A restart mid-window records the same occurrence again: keep the first record.
const INSERT_RUN: &str = "INSERT INTO window_runs \
      (window_name, scheduled_start, account, region, started_at, status) \
    VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (window_name, scheduled_start, account, region) DO NOTHING RETURNING id";

/// Progress reports may omit what an earlier one said (the command id, the start time).
const UPSERT_TASK: &str = "INSERT INTO window_tasks AS t \
      (run_id, task_name, operation, command_id, status, started_at, ended_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (run_id, task_name) DO UPDATE SET operation = excluded.operation, \
      command_id = COALESCE(excluded.command_id, t.command_id), status = excluded.status, \
      started_at = COALESCE(excluded.started_at, t.started_at), \
      ended_at = COALESCE(excluded.ended_at, t.ended_at) \
    RETURNING id";

/// Progress reports may omit what an earlier one said (the details, the times).
const UPSERT_INVOCATIONS: &str = "INSERT INTO invocations AS v (task_id, instance_ref, command_id, status, \
       status_details, requested_at, started_at, ended_at) {rows} \
     ON CONFLICT (task_id, instance_ref) DO UPDATE SET command_id = excluded.command_id, \
       status = excluded.status, \
       status_details = coalesce(excluded.status_details, v.status_details), \
       requested_at = coalesce(excluded.requested_at, v.requested_at), \
       started_at = coalesce(excluded.started_at, v.started_at), \
       ended_at = coalesce(excluded.ended_at, v.ended_at)";

const INVOCATION_COLUMNS: &str =
    "i.account, i.region, i.instance_id, v.command_id, v.status, v.status_details, \
     v.requested_at, v.started_at, v.ended_at";

impl Store {
    /// Records an occurrence of a window in a scope. When that occurrence (window, scheduled
    /// start, account, region) is already recorded (the daemon restarted mid-window), returns
    /// its id and changes nothing.
    pub async fn record_window_run(&self, run: &NewWindowRun<'_>) -> Result<WindowRunId, StoreError> {
        if run.window.is_empty() {
            return Err(StoreError::InvalidInput("a window run needs the window's name".into()));
        }
        if run.account.is_empty() || run.region.is_empty() {
            return Err(StoreError::InvalidInput(format!(
                "a run of window {} needs the account and region it runs in",
                run.window
            )));
        }
        let scheduled = micros(run.scheduled_start);
        let mut tx = self.begin_fenced(TxKind::Write, false).await?;
        let insert = Query::new(INSERT_RUN)
            .bind(run.window)
            .bind(scheduled)
            .bind(run.account)
            .bind(run.region)
            .bind(run.started_at.map(micros))
            .bind(run.status.as_str());
        let row = match tx.fetch_optional(insert).await? {
            Some(row) => row,
            None => {
                let recorded = Query::new(
                    "SELECT id FROM window_runs WHERE window_name = $1 AND scheduled_start = $2 \
                     AND account = $3 AND region = $4",
                )
                .bind(run.window)
                .bind(scheduled)
                .bind(run.account)
                .bind(run.region);
                tx.fetch_one(recorded).await?
            }
        };
        let id = row.int("id")?;
        tx.commit().await?;
        Ok(WindowRunId(id))
    }

    /// Changes a run's status; times given replace the recorded ones, times left None keep them.
    pub async fn update_window_run(
        &self,
        id: WindowRunId,
        update: &WindowRunUpdate,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_fenced(TxKind::Write, false).await?;
        let query = Query::new(
            "UPDATE window_runs SET status = $1, started_at = COALESCE($2, started_at), \
             ended_at = COALESCE($3, ended_at), sync_unread = COALESCE($4, sync_unread) WHERE id = $5",
        )
        .bind(update.status.as_str())
        .bind(update.started_at.map(micros))
        .bind(update.ended_at.map(micros))
        .bind(update.sync_unread.map(i64::from))
        .bind(id.0);
        let affected = tx.execute(query).await?;
        tx.commit().await?;
        if affected == 0 {
            return Err(StoreError::NotFound { what: "window run", id: id.0 });
        }
        Ok(())
    }

    /// Records a task of a run, or its progress: keyed by (run, task name). A command id or a
    /// time left None keeps the recorded one.
    pub async fn record_window_task(
        &self,
        run: WindowRunId,
        task: &WindowTaskObservation<'_>,
    ) -> Result<WindowTaskId, StoreError> {
        if task.name.is_empty() {
            return Err(StoreError::InvalidInput("a window task needs a name".into()));
        }
        let mut tx = self.begin_fenced(TxKind::Write, false).await?;
        let query = Query::new(UPSERT_TASK)
            .bind(run.0)
            .bind(task.name)
            .bind(task.operation.as_ssm())
            .bind(task.command_id)
            .bind(task.status.as_str())
            .bind(task.started_at.map(micros))
            .bind(task.ended_at.map(micros));
        let id = tx.fetch_one(query).await.map_err(|e| not_found(e, "window run", run.0))?.int("id")?;
        tx.commit().await?;
        Ok(WindowTaskId(id))
    }

    /// Records (or updates) the invocations of a task's command, in one transaction. Instances
    /// the store has not seen are created, first seen at `observed_at`. Returns the number of
    /// invocations written.
    pub async fn record_invocations(
        &self,
        task: WindowTaskId,
        observed_at: DateTime<Utc>,
        invocations: &[InvocationObservation<'_>],
    ) -> Result<usize, StoreError> {
        for o in invocations {
            validate_key(&o.instance)?;
        }
        if invocations.is_empty() {
            return Ok(0);
        }
        let observed_at = micros(observed_at);
        let unique = last_of_each(invocations, |o| o.instance);
        let mut tx = self.begin_fenced(TxKind::Exclusive, false).await?;
        let keys: Vec<(InstanceKey<'_>, DateTime<Utc>)> =
            unique.iter().map(|o| (o.instance, observed_at)).collect();
        let refs = instance_refs(&mut tx, &keys).await?;
        let rows: Vec<(i64, &InvocationObservation<'_>)> = refs.into_iter().zip(unique).collect();
        let n = tx
            .execute_rows(UPSERT_INVOCATIONS, &rows, |(instance_ref, o)| {
                [
                    task.0.into(),
                    (*instance_ref).into(),
                    o.command_id.into(),
                    o.status.as_str().into(),
                    o.status_details.into(),
                    o.requested_at.map(micros).into(),
                    o.started_at.map(micros).into(),
                    o.ended_at.map(micros).into(),
                ]
            })
            .await
            .map_err(|e| not_found(e, "window task", task.0))?;
        tx.commit().await?;
        Ok(n as usize)
    }

    /// Window runs with their tasks, most recent scheduled start first.
    pub async fn window_runs(&self, query: &WindowRunQuery<'_>) -> Result<Vec<WindowRunRecord>, StoreError> {
        let mut b = Query::default();
        let mut conditions = Vec::new();
        if let Some(window) = query.window {
            conditions.push(format!("window_name = {}", b.arg(window)));
        }
        if let Some(account) = query.account {
            conditions.push(format!("account = {}", b.arg(account)));
        }
        if let Some(region) = query.region {
            conditions.push(format!("region = {}", b.arg(region)));
        }
        if let Some(since) = query.since {
            conditions.push(format!("scheduled_start >= {}", b.arg(micros(since))));
        }
        if let Some(until) = query.until {
            conditions.push(format!("scheduled_start < {}", b.arg(micros(until))));
        }
        let mut sql =
            "SELECT id, window_name, scheduled_start, account, region, started_at, ended_at, status, \
             sync_unread FROM window_runs"
                .to_string();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY scheduled_start DESC, id DESC");
        if let Some(limit) = query.limit {
            let n = b.arg(i64::from(limit));
            sql.push_str(&format!(" LIMIT {n}"));
        }
        b.sql = sql.into();
        let d = self.db.dialect();
        let rows = self.db.fetch_all(b).await?;
        let mut runs = rows
            .iter()
            .map(|r| {
                Ok(WindowRunRecord {
                    id: WindowRunId(r.int("id")?),
                    window: r.text("window_name")?,
                    scheduled_start: r.time("scheduled_start")?,
                    account: r.text("account")?,
                    region: r.text("region")?,
                    started_at: r.opt_time("started_at")?,
                    ended_at: r.opt_time("ended_at")?,
                    status: parsed(r, "status", WindowRunStatus::parse)?,
                    sync_unread: u32::try_from(r.int("sync_unread")?).unwrap_or(u32::MAX),
                    tasks: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !runs.is_empty() {
            let ids: Vec<i64> = runs.iter().map(|r| r.id.0).collect();
            let sql = format!(
                "SELECT id, run_id, task_name, operation, command_id, status, started_at, ended_at \
                 FROM window_tasks WHERE run_id IN ({}) ORDER BY run_id, id",
                d.json_ints("$1")
            );
            let tasks = self.db.fetch_all(Query::new(sql).bind(json_ids(&ids))).await?;
            for t in &tasks {
                let run_id = t.int("run_id")?;
                if let Some(run) = runs.iter_mut().find(|r| r.id.0 == run_id) {
                    run.tasks.push(task_record(t)?);
                }
            }
        }
        Ok(runs)
    }

    /// The invocations of a task, by instance.
    pub async fn invocations(&self, task: WindowTaskId) -> Result<Vec<InvocationRecord>, StoreError> {
        let sql = format!(
            "SELECT {INVOCATION_COLUMNS} FROM invocations v JOIN instances i ON i.id = v.instance_ref \
             WHERE v.task_id = $1 ORDER BY i.account, i.region, i.instance_id"
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(task.0)).await?;
        rows.iter().map(invocation_record).collect()
    }

    /// The invocations of an SSM command, by instance: how a restarted daemon finds what a
    /// command it sent did.
    pub async fn command_invocations(&self, command_id: &str) -> Result<Vec<InvocationRecord>, StoreError> {
        let sql = format!(
            "SELECT {INVOCATION_COLUMNS} FROM invocations v JOIN instances i ON i.id = v.instance_ref \
             WHERE v.command_id = $1 ORDER BY i.account, i.region, i.instance_id"
        );
        let rows = self.db.fetch_all(Query::new(sql).bind(command_id)).await?;
        rows.iter().map(invocation_record).collect()
    }
}
