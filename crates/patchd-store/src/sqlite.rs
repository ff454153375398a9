//! SQLite: connect options and migrations.

use std::str::FromStr;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::Row;

use crate::types::OpenOptions;

pub(crate) static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

pub(crate) async fn connect(url: &str, options: &OpenOptions) -> Result<SqlitePool, sqlx::Error> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut connect = SqliteConnectOptions::from_str(url)?.create_if_missing(options.create);
    if options.create {
        // WAL is stored in the file, so a database this opened once stays in WAL mode. An
        // open that must not create leaves the mode alone: setting it would write the header
        // of an empty file that a mistaken path named.
        connect = connect.journal_mode(SqliteJournalMode::Wal);
    }
    let connect = connect
        // FULL, not the usual NORMAL: in WAL mode NORMAL may lose the last commits on power
        // loss, and a committed sync is evidence. Syncs are few, large transactions, so the
        // extra fsync per commit costs nothing measurable.
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(options.busy_timeout)
        // The default 2 MB page cache makes a sync of a million findings spill and re-read
        // index pages; 64 MB holds the hot parts of the indexes. Memory is only taken as used.
        .pragma("cache_size", "-65536")
        .analysis_limit(400)
        .optimize_on_close(true, 400);
    let pool = SqlitePoolOptions::new().acquire_timeout(options.acquire_timeout);
    let pool = if memory {
        // Each connection to `:memory:` is a database of its own, and the last connection to
        // close destroys it: one connection, kept forever.
        pool.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
    } else {
        pool.max_connections(options.max_connections.max(1))
    };
    pool.connect_with(connect).await
}

/// Applies pending migrations (the migrator takes no lock on SQLite; see `schema::migrate`).
pub(crate) async fn run_migrator(pool: &SqlitePool) -> Result<(), MigrateError> {
    // SQLite changes a constraint only by rebuilding the table, which its documentation
    // says to do with foreign keys off; the pragma is ignored inside a transaction, and
    // sqlx wraps each migration in one, so it is set on the connection beforehand.
    let mut conn = pool.acquire().await?;
    sqlx::query("PRAGMA foreign_keys = OFF").execute(&mut *conn).await?;
    let migrated = migrate_checked(&mut conn).await;
    // Never hand the pool a connection without foreign keys. (An in-memory database has
    // one connection, which must not be closed: closing it would destroy the database.)
    if sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await.is_err() {
        drop(conn.detach());
    }
    migrated
}

/// Applies pending migrations, then checks that every reference still has its row: a rebuilt
/// table that lost or renumbered a row would otherwise go unnoticed with foreign keys off.
async fn migrate_checked(conn: &mut SqliteConnection) -> Result<(), MigrateError> {
    MIGRATOR.run_direct(&mut *conn).await?;
    let dangling: Vec<sqlx::sqlite::SqliteRow> =
        sqlx::query("PRAGMA foreign_key_check").fetch_all(&mut *conn).await?;
    if let Some(row) = dangling.first() {
        let table: String = row.try_get(0).unwrap_or_default();
        return Err(MigrateError::Execute(sqlx::Error::Protocol(format!(
            "after migrating, {} row(s) of table {table} reference rows that do not exist",
            dangling.len()
        ))));
    }
    Ok(())
}
