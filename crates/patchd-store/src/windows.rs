//! Maintenance-window runs, their tasks (one SSM command each) and the per-instance
//! invocations. A run is keyed by (window, scheduled start, account, region), so a daemon
//! restarting in the middle of a window finds the run it was executing instead of starting a
//! second one, and each account and region a window reaches has a run of its own.

use chrono::{DateTime, Utc};

use crate::dialect::{self, not_found};
use crate::read::{bind_all, parsed, Arg, Built, Cols};
use crate::types::*;
use crate::{fenced_write, validate_key, with_pool, Store, StoreError};

fn json_ids(ids: &[i64]) -> String {
    serde_json::Value::from(ids.to_vec()).to_string()
}

fn task_record(r: &impl Cols) -> Result<WindowTaskRecord, StoreError> {
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

fn invocation_record(r: &impl Cols) -> Result<InvocationRecord, StoreError> {
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
        let c = &*self.counters;
        let id: i64 = fenced_write!(self, false, |tx, _pg| {
            c.statement();
            let inserted: Option<i64> = sqlx::query_scalar(INSERT_RUN)
                .bind(run.window)
                .bind(scheduled)
                .bind(run.account)
                .bind(run.region)
                .bind(run.started_at.map(micros))
                .bind(run.status.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            match inserted {
                Some(id) => id,
                None => {
                    c.statement();
                    sqlx::query_scalar(
                        "SELECT id FROM window_runs WHERE window_name = $1 AND scheduled_start = $2 \
                         AND account = $3 AND region = $4",
                    )
                    .bind(run.window)
                    .bind(scheduled)
                    .bind(run.account)
                    .bind(run.region)
                    .fetch_one(&mut *tx)
                    .await?
                }
            }
        })?;
        Ok(WindowRunId(id))
    }

    /// Changes a run's status; times given replace the recorded ones, times left None keep them.
    pub async fn update_window_run(
        &self,
        id: WindowRunId,
        update: &WindowRunUpdate,
    ) -> Result<(), StoreError> {
        self.counters.statement();
        let affected = fenced_write!(self, false, |tx, _pg| sqlx::query(
            "UPDATE window_runs SET status = $1, started_at = COALESCE($2, started_at), \
             ended_at = COALESCE($3, ended_at), sync_unread = COALESCE($4, sync_unread) WHERE id = $5",
        )
        .bind(update.status.as_str())
        .bind(update.started_at.map(micros))
        .bind(update.ended_at.map(micros))
        .bind(update.sync_unread.map(i64::from))
        .bind(id.0)
        .execute(&mut *tx)
        .await?
        .rows_affected())?;
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
        self.counters.statement();
        let id: Result<i64, StoreError> = fenced_write!(self, false, |tx, _pg| {
            sqlx::query_scalar(UPSERT_TASK)
                .bind(run.0)
                .bind(task.name)
                .bind(task.operation.as_ssm())
                .bind(task.command_id)
                .bind(task.status.as_str())
                .bind(task.started_at.map(micros))
                .bind(task.ended_at.map(micros))
                .fetch_one(&mut *tx)
                .await?
        });
        Ok(WindowTaskId(id.map_err(|e| not_found(e, "window run", run.0))?))
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
        let observed_at = micros(observed_at);
        with_pool!(self, |pool, _pg| dialect::record_invocations(
            pool,
            &self.counters,
            task.0,
            observed_at,
            invocations,
            self.fence.as_deref(),
        )
        .await)
    }

    /// Window runs with their tasks, most recent scheduled start first.
    pub async fn window_runs(&self, query: &WindowRunQuery<'_>) -> Result<Vec<WindowRunRecord>, StoreError> {
        let mut b = Built::default();
        let mut conditions = Vec::new();
        if let Some(window) = query.window {
            conditions.push(format!("window_name = {}", b.arg(Arg::Text(window))));
        }
        if let Some(account) = query.account {
            conditions.push(format!("account = {}", b.arg(Arg::Text(account))));
        }
        if let Some(region) = query.region {
            conditions.push(format!("region = {}", b.arg(Arg::Text(region))));
        }
        if let Some(since) = query.since {
            conditions.push(format!("scheduled_start >= {}", b.arg(Arg::Time(micros(since)))));
        }
        if let Some(until) = query.until {
            conditions.push(format!("scheduled_start < {}", b.arg(Arg::Time(micros(until)))));
        }
        b.text = "SELECT id, window_name, scheduled_start, account, region, started_at, ended_at, status, \
             sync_unread FROM window_runs"
            .into();
        if !conditions.is_empty() {
            b.text.push_str(" WHERE ");
            b.text.push_str(&conditions.join(" AND "));
        }
        b.text.push_str(" ORDER BY scheduled_start DESC, id DESC");
        if let Some(limit) = query.limit {
            let n = b.arg(Arg::Int(i64::from(limit)));
            b.text.push_str(&format!(" LIMIT {n}"));
        }
        let c = &*self.counters;
        with_pool!(self, |pool, pg| {
            c.statement();
            let rows = bind_all!(sqlx::query(&b.text), &b.args).fetch_all(pool).await?;
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
                    if pg {
                        "SELECT jsonb_array_elements_text($1::jsonb)::bigint"
                    } else {
                        "SELECT value FROM json_each($1)"
                    }
                );
                c.statement();
                let tasks = sqlx::query(&sql).bind(json_ids(&ids)).fetch_all(pool).await?;
                for t in &tasks {
                    let run_id = t.int("run_id")?;
                    if let Some(run) = runs.iter_mut().find(|r| r.id.0 == run_id) {
                        run.tasks.push(task_record(t)?);
                    }
                }
            }
            Ok(runs)
        })
    }

    /// The invocations of a task, by instance.
    pub async fn invocations(&self, task: WindowTaskId) -> Result<Vec<InvocationRecord>, StoreError> {
        self.counters.statement();
        with_pool!(self, |pool, _pg| {
            let sql = format!(
                "SELECT {INVOCATION_COLUMNS} FROM invocations v JOIN instances i ON i.id = v.instance_ref \
                 WHERE v.task_id = $1 ORDER BY i.account, i.region, i.instance_id"
            );
            let rows = sqlx::query(&sql).bind(task.0).fetch_all(pool).await?;
            rows.iter().map(invocation_record).collect()
        })
    }

    /// The invocations of an SSM command, by instance: how a restarted daemon finds what a
    /// command it sent did.
    pub async fn command_invocations(&self, command_id: &str) -> Result<Vec<InvocationRecord>, StoreError> {
        self.counters.statement();
        with_pool!(self, |pool, _pg| {
            let sql = format!(
                "SELECT {INVOCATION_COLUMNS} FROM invocations v JOIN instances i ON i.id = v.instance_ref \
                 WHERE v.command_id = $1 ORDER BY i.account, i.region, i.instance_id"
            );
            let rows = sqlx::query(&sql).bind(command_id).fetch_all(pool).await?;
            rows.iter().map(invocation_record).collect()
        })
    }
}
