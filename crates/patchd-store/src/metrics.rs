//! Cheap aggregate reads for the daemon's health checks and metrics: one `GROUP BY` each.

use crate::db::Query;
use crate::read::parsed;
use crate::types::{CommandStatus, WindowRunStatus};
use crate::{Store, StoreError};

/// How many recorded runs of one window ended in one status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRunCount {
    pub window: String,
    pub status: WindowRunStatus,
    pub count: u64,
}

impl Store {
    /// A round trip to the database that reads nothing: whether it answers at all.
    pub async fn ping(&self) -> Result<(), StoreError> {
        // PostgreSQL types a bare `1` as INT4, which an i64 does not decode: ask for a BIGINT.
        let one = self.db.fetch_one(Query::new("SELECT CAST(1 AS BIGINT) AS one")).await?.int("one")?;
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Recorded window runs, by window and status, ordered by window then status.
    pub async fn window_run_counts(&self) -> Result<Vec<WindowRunCount>, StoreError> {
        let rows = self
            .db
            .fetch_all(Query::new(
                "SELECT window_name, status, COUNT(*) AS n FROM window_runs \
                 GROUP BY window_name, status ORDER BY window_name, status",
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok(WindowRunCount {
                    window: r.text("window_name")?,
                    status: parsed(r, "status", WindowRunStatus::parse)?,
                    count: r.int("n")?.max(0) as u64,
                })
            })
            .collect()
    }

    /// Wave gate decisions by window and outcome (`passed`, `failed`).
    pub async fn wave_gate_counts(&self) -> Result<Vec<(String, String, u64)>, StoreError> {
        let rows = self
            .db
            .fetch_all(Query::new(
                "SELECT r.window_name, g.outcome, COUNT(*) AS n FROM rollout_gates g \
                 JOIN window_tasks t ON t.id = g.task_id JOIN window_runs r ON r.id = t.run_id \
                 GROUP BY r.window_name, g.outcome ORDER BY r.window_name, g.outcome",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("window_name")?, r.text("outcome")?, r.int("n")?.max(0) as u64)))
            .collect()
    }

    /// Recorded command invocations (one per instance and command), by status.
    pub async fn invocation_counts(&self) -> Result<Vec<(CommandStatus, u64)>, StoreError> {
        let rows = self
            .db
            .fetch_all(Query::new(
                "SELECT status, COUNT(*) AS n FROM invocations GROUP BY status ORDER BY status",
            ))
            .await?;
        rows.iter()
            .map(|r| Ok((parsed(r, "status", CommandStatus::parse)?, r.int("n")?.max(0) as u64)))
            .collect()
    }
}
