//! PostgreSQL: connect options and migrations.

use std::str::FromStr;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::types::OpenOptions;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

pub(crate) async fn connect(url: &str, options: &OpenOptions) -> Result<PgPool, sqlx::Error> {
    let connect = PgConnectOptions::from_str(url)?;
    PgPoolOptions::new()
        .max_connections(options.max_connections.max(1))
        .acquire_timeout(options.acquire_timeout)
        .connect_with(connect)
        .await
}

/// Applies pending migrations under the migrator's own advisory lock.
pub(crate) async fn run_migrator(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
