//! The store's one error type. Variants are what a caller branches on: retry later (`Busy`,
//! `Unavailable`), stop and tell the operator (`NewerSchema`, `OutdatedSchema`, `Migrate`), or
//! fix the caller (`InvalidInput`, `NotFound`).

/// Everything that can go wrong in the store.
///
/// Messages are lowercase, carry no secrets (URLs are redacted) and end with what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no backend this build supports.
    #[error(
        "unsupported database url {url}: use sqlite://PATH (sqlite::memory: for a throw-away database) \
         or postgres://USER@HOST/DATABASE"
    )]
    UnsupportedUrl {
        /// The URL, password redacted.
        url: String,
    },

    /// The URL could not be parsed, or the first connection failed.
    #[error(
        "cannot open {url}: {source}; check the url, that the server is reachable, \
         and that the file's directory exists"
    )]
    Connect {
        /// The URL, password redacted.
        url: String,
        source: sqlx::Error,
    },

    /// The database was migrated by a newer patchd: this build refuses to touch it.
    #[error(
        "the database schema is at version {database_version}, newer than this patchd supports \
         ({supported_version}); upgrade patchd to the release that migrated it"
    )]
    NewerSchema { database_version: i64, supported_version: i64 },

    /// Opened without migrating, and migrations are pending.
    #[error(
        "the database schema is at version {}, this patchd needs {supported_version}; \
         run `patchd db migrate`",
        database_version.map_or_else(|| "none (empty database)".to_string(), |v| v.to_string())
    )]
    OutdatedSchema { database_version: Option<i64>, supported_version: i64 },

    /// Applying migrations failed (a changed or unknown applied migration, or a failed one).
    #[error(
        "cannot migrate the database: {0}; restore the migration files of the release \
         that applied them, or restore a backup"
    )]
    Migrate(#[source] sqlx::migrate::MigrateError),

    /// Another writer held the database longer than the busy timeout, or a lock conflict
    /// aborted the transaction. Nothing was written; retrying is safe.
    #[error("the database is busy: {0}; nothing was written, retry later")]
    Busy(#[source] sqlx::Error),

    /// The connection is gone or the pool could not get one in time. Nothing was written
    /// unless the error arrived after commit, which the store never reports as a failure.
    #[error("the database is unavailable: {0}; retry when it is reachable again")]
    Unavailable(#[source] sqlx::Error),

    /// The caller passed something the store cannot record (an empty id, for example).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// An update named a row that does not exist.
    #[error("no {what} with id {id}; record it first")]
    NotFound { what: &'static str, id: i64 },

    /// A stored value this build cannot interpret: written by something other than patchd-store.
    #[error(
        "the database holds a value this patchd cannot read: {column} = {value:?}; was it edited by hand?"
    )]
    Corrupt { column: &'static str, value: String },

    /// A fenced store's write was refused: the process no longer holds the lease under the
    /// epoch it acts for. Nothing was written; the current leader carries the work on.
    #[error(
        "this patchd no longer leads (it acted for epoch {epoch}; the lease is now held by {now_held_by}): \
         nothing was written, the leader carries the run on"
    )]
    Fenced { epoch: i64, now_held_by: String },

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        if is_busy(&error) {
            return StoreError::Busy(error);
        }
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(error),
            other => StoreError::Database(other),
        }
    }
}

fn is_busy(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = error else { return false };
    let Some(code) = db.code() else { return false };
    // SQLite reports extended result codes; the primary code is the low byte.
    // 5 = SQLITE_BUSY, 6 = SQLITE_LOCKED.
    if let Ok(n) = code.parse::<i64>() {
        return matches!(n & 0xff, 5 | 6);
    }
    // PostgreSQL: lock_not_available, serialization_failure, deadlock_detected.
    matches!(&*code, "55P03" | "40001" | "40P01")
}

impl StoreError {
    /// The write was refused because leadership moved on (see [`StoreError::Fenced`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, StoreError::Fenced { .. })
    }

    pub(crate) fn corrupt(column: &'static str, value: impl Into<String>) -> StoreError {
        StoreError::Corrupt { column, value: value.into() }
    }
}

/// A foreign-key violation on an id the caller passed means the id does not exist.
pub(crate) fn not_found(error: StoreError, what: &'static str, id: i64) -> StoreError {
    match &error {
        StoreError::Database(sqlx::Error::Database(db))
            if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation =>
        {
            StoreError::NotFound { what, id }
        }
        _ => error,
    }
}
