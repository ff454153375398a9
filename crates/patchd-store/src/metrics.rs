//! Cheap aggregate reads for the daemon's health checks and metrics: one `GROUP BY` each.

use crate::read::{parsed, Cols};
use crate::types::{CommandStatus, WindowRunStatus};
use crate::{with_pool, Store, StoreError};

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
        self.counters.statement();
        // PostgreSQL types a bare `1` as INT4, which an i64 does not decode: ask for a BIGINT.
        let one: i64 = with_pool!(self, |pool, _pg| sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
            .fetch_one(pool)
            .await?);
        debug_assert_eq!(one, 1);
        Ok(())
    }

    /// Recorded window runs, by window and status, ordered by window then status.
    pub async fn window_run_counts(&self) -> Result<Vec<WindowRunCount>, StoreError> {
        self.counters.statement();
        let rows = with_pool!(self, |pool, _pg| {
            let rows = sqlx::query(
                "SELECT window_name, status, COUNT(*) AS n FROM window_runs \
                 GROUP BY window_name, status ORDER BY window_name, status",
            )
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(WindowRunCount {
                        window: r.text("window_name")?,
                        status: parsed(r, "status", WindowRunStatus::parse)?,
                        count: r.int("n")?.max(0) as u64,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        })?;
        Ok(rows)
    }

    /// Recorded command invocations (one per instance and command), by status.
    pub async fn invocation_counts(&self) -> Result<Vec<(CommandStatus, u64)>, StoreError> {
        self.counters.statement();
        with_pool!(self, |pool, _pg| {
            let rows =
                sqlx::query("SELECT status, COUNT(*) AS n FROM invocations GROUP BY status ORDER BY status")
                    .fetch_all(pool)
                    .await?;
            rows.iter()
                .map(|r| Ok((parsed(r, "status", CommandStatus::parse)?, r.int("n")?.max(0) as u64)))
                .collect()
        })
    }
}
