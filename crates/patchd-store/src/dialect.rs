//! The SQL of each backend where the two spell it differently. Statements are written once,
//! with `$n` placeholders (SQLite reads them too), and take these fragments where the
//! spellings part; everything else about a statement (its flow, binding, decoding) is shared.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// The advisory lock every exclusive transaction takes on PostgreSQL, so that two patchd
/// processes sharing a database never interleave a sync's read-then-write ("patchd" in ASCII).
const EXCLUSIVE_LOCK: i64 = 0x7061_7463_6864;

/// What a transaction is for, which decides how it begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxKind {
    /// A read-then-write sequence (a sync, an inventory): serialised against every other
    /// writer, so two processes sharing the database cannot interleave theirs.
    Exclusive,
    /// One of a run's writes: serialised on SQLite, which has a single writer anyway, but not
    /// behind the exclusive lock on PostgreSQL, where row locks suffice.
    Write,
    /// Reads that must all see one snapshot.
    Snapshot,
}

impl Dialect {
    pub(crate) fn begin(self, kind: TxKind) -> &'static str {
        match (self, kind) {
            // IMMEDIATE takes the write lock now. A deferred transaction that reads, then
            // writes, fails with SQLITE_BUSY_SNAPSHOT (not retried by the busy timeout) when
            // another writer committed in between.
            (Dialect::Sqlite, TxKind::Exclusive | TxKind::Write) => "BEGIN IMMEDIATE",
            (Dialect::Sqlite, TxKind::Snapshot) => "BEGIN",
            (Dialect::Postgres, TxKind::Exclusive | TxKind::Write) => "BEGIN",
            (Dialect::Postgres, TxKind::Snapshot) => "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        }
    }

    /// What an exclusive transaction sends after BEGIN, where BEGIN alone does not serialise
    /// it: the statement and the lock's key, its one parameter.
    pub(crate) fn exclusive_lock(self) -> Option<(&'static str, i64)> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some(("SELECT pg_advisory_xact_lock($1)", EXCLUSIVE_LOCK)),
        }
    }

    /// Parameter `$n` bound as JSON text, typed as a JSON column (PostgreSQL's `jsonb` does not
    /// take text without a cast).
    pub(crate) fn json_param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("${n}::jsonb"),
        }
    }

    /// A JSON column selected as text, under its own name.
    pub(crate) fn json_column(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_string(),
            Dialect::Postgres => format!("{column}::text AS {}", column.rsplit('.').next().unwrap_or(column)),
        }
    }

    /// The elements of the JSON array of strings bound as `param`, as a subquery of one column,
    /// `value`: a set of any size in one bind, so the statement is prepared once.
    pub(crate) fn json_texts(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each({param})"),
            Dialect::Postgres => format!("SELECT jsonb_array_elements_text({param}::jsonb) AS value"),
        }
    }

    /// Like `json_texts`, for an array of integers.
    pub(crate) fn json_ints(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each({param})"),
            Dialect::Postgres => format!("SELECT jsonb_array_elements_text({param}::jsonb)::bigint AS value"),
        }
    }

    /// The database's clock, for leases: hosts whose clocks disagree still agree on it. SQLite's
    /// time text is RFC 3339 in UTC to the millisecond, which compares in time order.
    pub(crate) fn now(self) -> &'static str {
        match self {
            Dialect::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Dialect::Postgres => "clock_timestamp()",
        }
    }

    /// `now` plus the duration bound as `param` (see `duration`).
    pub(crate) fn now_plus(self, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', {param})"),
            Dialect::Postgres => format!("(clock_timestamp() + {param}::float8 * interval '1 millisecond')"),
        }
    }

    /// Whole milliseconds from `now` to the instant in `column`; negative once it has passed.
    pub(crate) fn millis_until(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => {
                format!("CAST(round((julianday({column}) - julianday('now')) * 86400000.0) AS INTEGER)")
            }
            Dialect::Postgres => {
                format!("(extract(epoch from ({column} - clock_timestamp())) * 1000)::bigint")
            }
        }
    }

    /// Appended to a SELECT, keeps the rows read from changing until the transaction ends.
    /// SQLite needs none: its writers are serialised.
    pub(crate) fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }

    /// The prefix that asks for a statement's plan, and the column holding each step.
    pub(crate) fn explain(self) -> (&'static str, &'static str) {
        match self {
            Dialect::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
            Dialect::Postgres => ("EXPLAIN", "QUERY PLAN"),
        }
    }

    /// Refreshes the query planner's statistics of the tables a sync fills.
    pub(crate) fn analyze(self) -> &'static str {
        match self {
            // Bounded by the connection's analysis_limit, so this samples instead of scanning.
            Dialect::Sqlite => "PRAGMA optimize",
            Dialect::Postgres => {
                "ANALYZE instances, patches, findings, finding_transitions, compliance_summaries"
            }
        }
    }

    /// Whether sqlx's migrations table exists (column `found`).
    pub(crate) fn migrations_table_exists(self) -> &'static str {
        match self {
            Dialect::Sqlite => {
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' \
                 AND name = '_sqlx_migrations') AS found"
            }
            Dialect::Postgres => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS found",
        }
    }
}
