//! Every statement the store sends goes through here: a [`Query`] (SQL text and its
//! arguments) runs on the pool or in a [`Tx`], and its rows come back as [`Row`]s. The flows in
//! the other modules are written once against these types; what differs between SQLite and
//! PostgreSQL is SQL text (`dialect.rs`), connecting and migrating (`sqlite.rs`,
//! `postgres.rs`), and the few lines below that hand a query to each driver. This is also the
//! one place that counts statements and transactions, so no flow can forget to.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::database::HasStatementCache;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnection, PgPool, PgRow, Postgres};
use sqlx::sqlite::{Sqlite, SqliteConnection, SqlitePool, SqliteRow};
use sqlx::{Arguments, Database, Decode, Encode, Executor, IntoArguments, Transaction, Type};

use crate::dialect::Dialect;
use crate::types::{BackendKind, StoreStats};
use crate::{postgres, sqlite, StoreError};

#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The database behind a store and its counters. Cheap to clone: clones share both.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    transactions: AtomicU64,
    statements: AtomicU64,
}

impl Counters {
    fn statement(&self) {
        self.statements.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) use crate::dialect::TxKind;

/// How values that differ per backend are bound (the statement text is the dialect's).
impl Dialect {
    /// A duration as `now_plus` takes it: a date modifier on SQLite, milliseconds on PostgreSQL.
    pub(crate) fn duration(self, duration: Duration) -> Arg<'static> {
        let millis = duration.as_secs_f64() * 1000.0;
        match self {
            Dialect::Sqlite => format!("+{:.3} seconds", millis / 1000.0).into(),
            Dialect::Postgres => millis.into(),
        }
    }
}

impl Db {
    pub(crate) fn new(pool: Pool) -> Db {
        Db { pool, counters: Arc::default() }
    }

    pub(crate) fn dialect(&self) -> Dialect {
        match self.pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(crate) fn backend(&self) -> BackendKind {
        match self.dialect() {
            Dialect::Sqlite => BackendKind::Sqlite,
            Dialect::Postgres => BackendKind::Postgres,
        }
    }

    pub(crate) fn stats(&self) -> StoreStats {
        StoreStats {
            transactions: self.counters.transactions.load(Ordering::Relaxed),
            statements: self.counters.statements.load(Ordering::Relaxed),
        }
    }

    pub(crate) async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }

    pub(crate) fn migrator(&self) -> &'static Migrator {
        match self.pool {
            Pool::Sqlite(_) => &sqlite::MIGRATOR,
            Pool::Postgres(_) => &postgres::MIGRATOR,
        }
    }

    /// Applies pending migrations; counted as one statement, whatever the migrator sends.
    pub(crate) async fn run_migrator(&self) -> Result<(), MigrateError> {
        self.counters.statement();
        match &self.pool {
            Pool::Sqlite(pool) => sqlite::run_migrator(pool).await,
            Pool::Postgres(pool) => postgres::run_migrator(pool).await,
        }
    }

    pub(crate) async fn begin(&self, kind: TxKind) -> Result<Tx<'_>, StoreError> {
        let dialect = self.dialect();
        self.counters.statement();
        let conn = match &self.pool {
            Pool::Sqlite(pool) => TxConn::Sqlite(pool.begin_with(dialect.begin(kind)).await?),
            Pool::Postgres(pool) => TxConn::Postgres(pool.begin_with(dialect.begin(kind)).await?),
        };
        let mut tx = Tx { conn, counters: &self.counters, kind };
        if kind == TxKind::Exclusive {
            if let Some((lock, key)) = dialect.exclusive_lock() {
                tx.execute(Query::new(lock).bind(key)).await?;
            }
        }
        Ok(tx)
    }

    fn on(&self) -> On<'_> {
        let target = match &self.pool {
            Pool::Sqlite(pool) => Target::SqlitePool(pool),
            Pool::Postgres(pool) => Target::PostgresPool(pool),
        };
        On { target, counters: &self.counters }
    }

    pub(crate) async fn execute(&self, query: Query<'_>) -> Result<u64, StoreError> {
        Ok(self.on().run(query, Fetch::Nothing).await?.affected)
    }

    pub(crate) async fn fetch_all(&self, query: Query<'_>) -> Result<Vec<Row>, StoreError> {
        Ok(self.on().run(query, Fetch::All).await?.rows)
    }

    pub(crate) async fn fetch_optional(&self, query: Query<'_>) -> Result<Option<Row>, StoreError> {
        Ok(self.on().run(query, Fetch::First).await?.rows.pop())
    }

    pub(crate) async fn fetch_one(&self, query: Query<'_>) -> Result<Row, StoreError> {
        self.fetch_optional(query).await?.ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }
}

/// An open transaction. Dropped without [`Tx::commit`], it rolls back.
pub(crate) struct Tx<'d> {
    conn: TxConn,
    counters: &'d Counters,
    kind: TxKind,
}

enum TxConn {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx<'_> {
    pub(crate) fn dialect(&self) -> Dialect {
        match self.conn {
            TxConn::Sqlite(_) => Dialect::Sqlite,
            TxConn::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Commits; a transaction that may have written counts as one.
    pub(crate) async fn commit(self) -> Result<(), StoreError> {
        self.counters.statement();
        match self.conn {
            TxConn::Sqlite(tx) => tx.commit().await?,
            TxConn::Postgres(tx) => tx.commit().await?,
        }
        if self.kind != TxKind::Snapshot {
            self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Ends the transaction without writing anything it did.
    pub(crate) async fn rollback(self) -> Result<(), StoreError> {
        self.counters.statement();
        match self.conn {
            TxConn::Sqlite(tx) => tx.rollback().await?,
            TxConn::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    fn on(&mut self) -> On<'_> {
        let target = match &mut self.conn {
            TxConn::Sqlite(tx) => Target::Sqlite(tx),
            TxConn::Postgres(tx) => Target::Postgres(tx),
        };
        On { target, counters: self.counters }
    }

    pub(crate) async fn execute(&mut self, query: Query<'_>) -> Result<u64, StoreError> {
        Ok(self.on().run(query, Fetch::Nothing).await?.affected)
    }

    pub(crate) async fn fetch_all(&mut self, query: Query<'_>) -> Result<Vec<Row>, StoreError> {
        Ok(self.on().run(query, Fetch::All).await?.rows)
    }

    pub(crate) async fn fetch_optional(&mut self, query: Query<'_>) -> Result<Option<Row>, StoreError> {
        Ok(self.on().run(query, Fetch::First).await?.rows.pop())
    }

    pub(crate) async fn fetch_one(&mut self, query: Query<'_>) -> Result<Row, StoreError> {
        self.fetch_optional(query).await?.ok_or(StoreError::Database(sqlx::Error::RowNotFound))
    }

    /// Runs `sql` once per chunk of `rows`, `{rows}` in it standing for the chunk as a table
    /// of columns `column1`, `column2`, ... (see `rows_query`), each row's values given by
    /// `cells`. Returns the rows affected.
    pub(crate) async fn execute_rows<'r, R, const N: usize>(
        &mut self,
        sql: &str,
        rows: &'r [R],
        cells: impl Fn(&'r R) -> [Arg<'r>; N],
    ) -> Result<u64, StoreError> {
        let dialect = self.dialect();
        let mut affected = 0;
        for chunk in rows.chunks(rows_per_statement(dialect, N)) {
            affected += self.execute(rows_query(dialect, sql, N, values(chunk, &cells))?).await?;
        }
        Ok(affected)
    }

    /// Like [`Tx::execute_rows`], for a statement that returns rows: each goes to `each` as
    /// soon as its chunk is read, so a large result is never held whole.
    pub(crate) async fn fetch_rows<'r, R, const N: usize>(
        &mut self,
        sql: &str,
        rows: &'r [R],
        cells: impl Fn(&'r R) -> [Arg<'r>; N],
        mut each: impl FnMut(&Row) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let dialect = self.dialect();
        for chunk in rows.chunks(rows_per_statement(dialect, N)) {
            for row in self.fetch_all(rows_query(dialect, sql, N, values(chunk, &cells))?).await? {
                each(&row)?;
            }
        }
        Ok(())
    }
}

/// The values of `rows`, row after row.
fn values<'r, R, const N: usize>(rows: &'r [R], cells: impl Fn(&'r R) -> [Arg<'r>; N]) -> Vec<Arg<'r>> {
    let mut values = Vec::with_capacity(rows.len() * N);
    for row in rows {
        values.extend(cells(row));
    }
    values
}

/// Where a statement runs, with the counters it is counted in.
struct On<'c> {
    target: Target<'c>,
    counters: &'c Counters,
}

enum Target<'c> {
    SqlitePool(&'c SqlitePool),
    PostgresPool(&'c PgPool),
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

/// What a statement's caller reads back.
#[derive(Debug, Clone, Copy)]
enum Fetch {
    Nothing,
    All,
    First,
}

/// What a statement came to: the rows it affected, or those it returned.
#[derive(Default)]
struct Done {
    affected: u64,
    rows: Vec<Row>,
}

impl On<'_> {
    async fn run(self, query: Query<'_>, fetch: Fetch) -> Result<Done, StoreError> {
        self.counters.statement();
        Ok(match self.target {
            Target::SqlitePool(pool) => run_on(pool, &query, fetch).await?,
            Target::PostgresPool(pool) => run_on(pool, &query, fetch).await?,
            Target::Sqlite(conn) => run_on(conn, &query, fetch).await?,
            Target::Postgres(conn) => run_on(conn, &query, fetch).await?,
        })
    }
}

/// What the executor needs of a driver beyond `sqlx::Database`.
trait Driver: Database + HasStatementCache {
    fn add<'q>(arguments: &mut Self::Arguments<'q>, arg: &'q Arg<'_>) -> Result<(), BoxDynError>;
    fn rows_affected(done: &Self::QueryResult) -> u64;
    fn row(row: Self::Row) -> Row;
}

type DriverQuery<'q, DB> = sqlx::query::Query<'q, DB, <DB as Database>::Arguments<'q>>;

fn prepare<'q, DB: Driver>(query: &'q Query<'_>) -> Result<DriverQuery<'q, DB>, sqlx::Error>
where
    DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let mut arguments = DB::Arguments::default();
    arguments.reserve(query.args.len(), 0);
    for arg in &query.args {
        DB::add(&mut arguments, arg).map_err(sqlx::Error::Encode)?;
    }
    Ok(sqlx::query_with(&query.sql, arguments).persistent(query.persistent))
}

async fn run_on<'c, DB: Driver>(
    on: impl Executor<'c, Database = DB>,
    query: &Query<'_>,
    fetch: Fetch,
) -> Result<Done, sqlx::Error>
where
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    let prepared = prepare::<DB>(query)?;
    Ok(match fetch {
        Fetch::Nothing => {
            Done { affected: DB::rows_affected(&prepared.execute(on).await?), ..Done::default() }
        }
        Fetch::All => {
            Done { rows: prepared.fetch_all(on).await?.into_iter().map(DB::row).collect(), ..Done::default() }
        }
        Fetch::First => Done {
            rows: prepared.fetch_optional(on).await?.map(DB::row).into_iter().collect(),
            ..Done::default()
        },
    })
}

/// Adds a value both drivers encode the same way. A value that is there is added as itself,
/// not as an `Option`, which costs a little more per value in a bulk statement.
fn add_value<'q, DB: Database>(arguments: &mut DB::Arguments<'q>, arg: &'q Arg<'_>) -> Result<(), BoxDynError>
where
    i64: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    f64: Encode<'q, DB> + Type<DB>,
    bool: Encode<'q, DB> + Type<DB>,
    Option<bool>: Encode<'q, DB> + Type<DB>,
    &'q str: Encode<'q, DB> + Type<DB>,
    Option<&'q str>: Encode<'q, DB> + Type<DB>,
    DateTime<Utc>: Encode<'q, DB> + Type<DB>,
    Option<DateTime<Utc>>: Encode<'q, DB> + Type<DB>,
    NaiveDate: Encode<'q, DB> + Type<DB>,
{
    match arg {
        Arg::Int(Some(v)) => arguments.add(*v),
        Arg::Int(None) => arguments.add(None::<i64>),
        Arg::Float(v) => arguments.add(*v),
        Arg::Bool(Some(v)) => arguments.add(*v),
        Arg::Bool(None) => arguments.add(None::<bool>),
        Arg::Text(Some(v)) | Arg::Json(Some(v)) => arguments.add(v.as_ref()),
        Arg::Text(None) | Arg::Json(None) => arguments.add(None::<&str>),
        Arg::Time(Some(v)) => arguments.add(*v),
        Arg::Time(None) => arguments.add(None::<DateTime<Utc>>),
        Arg::Date(v) => arguments.add(*v),
        Arg::Column(_) => Err("column arrays exist only in PostgreSQL's bulk statements".into()),
    }
}

impl Driver for Sqlite {
    fn add<'q>(arguments: &mut Self::Arguments<'q>, arg: &'q Arg<'_>) -> Result<(), BoxDynError> {
        add_value::<Self>(arguments, arg)
    }

    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    fn row(row: SqliteRow) -> Row {
        Row::Sqlite(row)
    }
}

impl Driver for Postgres {
    fn add<'q>(arguments: &mut Self::Arguments<'q>, arg: &'q Arg<'_>) -> Result<(), BoxDynError> {
        match arg {
            Arg::Column(Column::Ints(v)) => arguments.add(v.as_slice()),
            Arg::Column(Column::Bools(v)) => arguments.add(v.as_slice()),
            // Encoded as it is added, so the borrowed texts need not outlive this call.
            Arg::Column(Column::Texts(v) | Column::Jsons(v)) => {
                arguments.add(v.iter().map(|text| text.as_deref()).collect::<Vec<_>>())
            }
            Arg::Column(Column::Times(v)) => arguments.add(v.as_slice()),
            value => add_value::<Self>(arguments, value),
        }
    }

    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }

    fn row(row: PgRow) -> Row {
        Row::Postgres(row)
    }
}

/// SQL text with `$n` placeholders (SQLite reads them too) and the arguments they stand for.
#[derive(Debug, Clone)]
pub(crate) struct Query<'a> {
    pub sql: Cow<'a, str>,
    args: Vec<Arg<'a>>,
    /// Whether the connection keeps the statement prepared for the next time its text comes.
    persistent: bool,
}

impl Default for Query<'_> {
    fn default() -> Self {
        Query { sql: Cow::Borrowed(""), args: Vec::new(), persistent: true }
    }
}

impl<'a> Query<'a> {
    pub(crate) fn new(sql: impl Into<Cow<'a, str>>) -> Query<'a> {
        Query { sql: sql.into(), ..Query::default() }
    }

    /// The next argument, `$1`, `$2`, ... in the order bound.
    pub(crate) fn bind(mut self, arg: impl Into<Arg<'a>>) -> Query<'a> {
        self.args.push(arg.into());
        self
    }

    /// Adds an argument to a query whose text is still being written; returns its placeholder.
    pub(crate) fn arg(&mut self, arg: impl Into<Arg<'a>>) -> String {
        self.args.push(arg.into());
        format!("${}", self.args.len())
    }
}

/// A bound value. Each variant carries its own SQL type, so even a NULL is typed (PostgreSQL
/// needs that).
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Float(f64),
    Bool(Option<bool>),
    Text(Option<Cow<'a, str>>),
    /// JSON as text: a `jsonb` column on PostgreSQL, which takes it through a cast.
    Json(Option<Cow<'a, str>>),
    Time(Option<DateTime<Utc>>),
    Date(NaiveDate),
    /// One column of a PostgreSQL bulk statement.
    Column(Column<'a>),
}

impl<'a> Arg<'a> {
    pub(crate) fn json(text: impl Into<Cow<'a, str>>) -> Arg<'a> {
        Arg::Json(Some(text.into()))
    }

    pub(crate) fn opt_json(text: Option<impl Into<Cow<'a, str>>>) -> Arg<'a> {
        Arg::Json(text.map(Into::into))
    }
}

/// A column of values as one PostgreSQL array.
#[derive(Debug, Clone)]
pub(crate) enum Column<'a> {
    Ints(Vec<Option<i64>>),
    Bools(Vec<Option<bool>>),
    Texts(Vec<Option<Cow<'a, str>>>),
    Jsons(Vec<Option<Cow<'a, str>>>),
    Times(Vec<Option<DateTime<Utc>>>),
}

impl<'a> Column<'a> {
    /// An empty column of `value`'s type.
    fn like(value: &Arg<'_>, capacity: usize) -> Option<Column<'a>> {
        Some(match value {
            Arg::Int(_) => Column::Ints(Vec::with_capacity(capacity)),
            Arg::Bool(_) => Column::Bools(Vec::with_capacity(capacity)),
            Arg::Text(_) => Column::Texts(Vec::with_capacity(capacity)),
            Arg::Json(_) => Column::Jsons(Vec::with_capacity(capacity)),
            Arg::Time(_) => Column::Times(Vec::with_capacity(capacity)),
            Arg::Float(_) | Arg::Date(_) | Arg::Column(_) => return None,
        })
    }

    /// Appends `value`, which must be of the column's type.
    fn push(&mut self, value: Arg<'a>) -> Option<()> {
        match (self, value) {
            (Column::Ints(column), Arg::Int(v)) => column.push(v),
            (Column::Bools(column), Arg::Bool(v)) => column.push(v),
            (Column::Texts(column), Arg::Text(v)) | (Column::Jsons(column), Arg::Json(v)) => column.push(v),
            (Column::Times(column), Arg::Time(v)) => column.push(v),
            _ => return None,
        }
        Some(())
    }

    fn sql_type(&self) -> &'static str {
        match self {
            Column::Ints(_) => "bigint[]",
            Column::Bools(_) => "boolean[]",
            Column::Texts(_) => "text[]",
            Column::Jsons(_) => "jsonb[]",
            Column::Times(_) => "timestamptz[]",
        }
    }
}

/// `values`, `n` to a row, as one column each, typed after the first row.
fn columns(values: Vec<Arg<'_>>, n: usize) -> Result<Vec<Column<'_>>, StoreError> {
    let mixed =
        |j: usize| StoreError::InvalidInput(format!("column {} of a bulk statement mixes types", j + 1));
    let rows = values.len() / n;
    let mut columns = values
        .iter()
        .take(n)
        .enumerate()
        .map(|(j, v)| Column::like(v, rows).ok_or_else(|| mixed(j)))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, value) in values.into_iter().enumerate() {
        columns[i % n].push(value).ok_or_else(|| mixed(i % n))?;
    }
    Ok(columns)
}

/// SQLite's limit on bind parameters per statement (the default since 3.32, and the bundled
/// library's).
const SQLITE_MAX_BINDS: usize = 32_766;

/// PostgreSQL's rows per bulk statement: bounds the size of one message, not a protocol limit.
const POSTGRES_ROWS_PER_STATEMENT: usize = 50_000;

fn rows_per_statement(dialect: Dialect, columns: usize) -> usize {
    match dialect {
        Dialect::Sqlite => (SQLITE_MAX_BINDS / columns.max(1)).max(1),
        Dialect::Postgres => POSTGRES_ROWS_PER_STATEMENT,
    }
}

/// `sql` with `{rows}` replaced by `rows` as a table of columns `column1`, `column2`, ...
///
/// SQLite: `VALUES (?, ?), (?, ?), ...`, one bind per value. The text depends on the number of
/// rows, so it is not kept prepared: cached, every connection kept up to a hundred of these
/// programs of tens of thousands of parameters each, which took a 10,000-instance scan and
/// sync to 255 MB.
///
/// PostgreSQL: `SELECT * FROM UNNEST($1::bigint[], ...) AS u(column1, ...)`, one array per
/// column, so the text is the same for every chunk and prepared once.
fn rows_query<'r>(
    dialect: Dialect,
    sql: &str,
    n: usize,
    values: Vec<Arg<'r>>,
) -> Result<Query<'r>, StoreError> {
    match dialect {
        Dialect::Sqlite => {
            let tuple = format!("({})", vec!["?"; n].join(", "));
            let rows = values.len() / n;
            let mut table = String::with_capacity(7 + (tuple.len() + 2) * rows);
            table.push_str("VALUES ");
            for i in 0..rows {
                if i > 0 {
                    table.push_str(", ");
                }
                table.push_str(&tuple);
            }
            Ok(Query { sql: Cow::Owned(sql.replacen("{rows}", &table, 1)), args: values, persistent: false })
        }
        Dialect::Postgres => {
            let columns = columns(values, n)?;
            let arrays: Vec<String> =
                columns.iter().enumerate().map(|(j, c)| format!("${}::{}", j + 1, c.sql_type())).collect();
            let names: Vec<String> = (1..=n).map(|j| format!("column{j}")).collect();
            let table = format!("SELECT * FROM UNNEST({}) AS u({})", arrays.join(", "), names.join(", "));
            let args = columns.into_iter().map(Arg::Column).collect();
            Ok(Query { sql: Cow::Owned(sql.replacen("{rows}", &table, 1)), args, persistent: true })
        }
    }
}

macro_rules! arg_from {
    ($($t:ty => |$v:ident| $arg:expr),+ $(,)?) => {$(
        impl<'a> From<$t> for Arg<'a> {
            fn from($v: $t) -> Arg<'a> {
                $arg
            }
        }
    )+};
}

arg_from! {
    i64 => |v| Arg::Int(Some(v)),
    Option<i64> => |v| Arg::Int(v),
    f64 => |v| Arg::Float(v),
    bool => |v| Arg::Bool(Some(v)),
    Option<bool> => |v| Arg::Bool(v),
    &'a str => |v| Arg::Text(Some(Cow::Borrowed(v))),
    Option<&'a str> => |v| Arg::Text(v.map(Cow::Borrowed)),
    &'a String => |v| Arg::Text(Some(Cow::Borrowed(v.as_str()))),
    String => |v| Arg::Text(Some(Cow::Owned(v))),
    Option<String> => |v| Arg::Text(v.map(Cow::Owned)),
    DateTime<Utc> => |v| Arg::Time(Some(v)),
    Option<DateTime<Utc>> => |v| Arg::Time(v),
    NaiveDate => |v| Arg::Date(v),
}

/// A row of either driver, read by column name.
pub(crate) enum Row {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A Rust type both drivers decode.
pub(crate) trait Decoded:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl<T> Decoded for T where
    T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}

impl Row {
    pub(crate) fn get<T: Decoded>(&self, column: &str) -> Result<T, StoreError> {
        use sqlx::Row as _;
        Ok(match self {
            Row::Sqlite(row) => row.try_get(column)?,
            Row::Postgres(row) => row.try_get(column)?,
        })
    }

    pub(crate) fn text(&self, column: &str) -> Result<String, StoreError> {
        self.get(column)
    }

    pub(crate) fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        self.get(column)
    }

    pub(crate) fn int(&self, column: &str) -> Result<i64, StoreError> {
        self.get(column)
    }

    pub(crate) fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        self.get(column)
    }

    pub(crate) fn flag(&self, column: &str) -> Result<bool, StoreError> {
        self.get(column)
    }

    pub(crate) fn time(&self, column: &str) -> Result<DateTime<Utc>, StoreError> {
        self.get(column)
    }

    pub(crate) fn opt_time(&self, column: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.get(column)
    }

    pub(crate) fn date(&self, column: &str) -> Result<NaiveDate, StoreError> {
        self.get(column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<[Arg<'static>; 4]> {
        let at = DateTime::<Utc>::UNIX_EPOCH;
        vec![
            [1_i64.into(), "a".into(), Arg::json("[]"), at.into()],
            [2_i64.into(), None::<&str>.into(), Arg::opt_json(None::<&str>), None::<DateTime<Utc>>.into()],
        ]
    }

    #[test]
    fn rows_are_values_on_sqlite_and_one_array_per_column_on_postgres() {
        let rows = rows();
        let sql = "INSERT INTO t (a, b, c, d) {rows} ON CONFLICT DO NOTHING";

        let values = || rows.iter().flatten().cloned().collect::<Vec<_>>();
        let sqlite = rows_query(Dialect::Sqlite, sql, 4, values()).unwrap();
        assert_eq!(
            sqlite.sql,
            "INSERT INTO t (a, b, c, d) VALUES (?, ?, ?, ?), (?, ?, ?, ?) ON CONFLICT DO NOTHING"
        );
        assert_eq!(sqlite.args.len(), 8, "one bind per value");
        assert!(!sqlite.persistent, "its text changes with the number of rows");

        let postgres = rows_query(Dialect::Postgres, sql, 4, values()).unwrap();
        assert_eq!(
            postgres.sql,
            "INSERT INTO t (a, b, c, d) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::jsonb[], \
             $4::timestamptz[]) AS u(column1, column2, column3, column4) ON CONFLICT DO NOTHING"
        );
        assert!(postgres.persistent, "the same text for every chunk");
        match &postgres.args[..] {
            [Arg::Column(Column::Ints(ids)), Arg::Column(Column::Texts(texts)), Arg::Column(Column::Jsons(json)), Arg::Column(Column::Times(times))] =>
            {
                assert_eq!(ids, &[Some(1), Some(2)]);
                assert_eq!(texts, &[Some("a".into()), None]);
                assert_eq!(json, &[Some("[]".into()), None]);
                assert_eq!(times.len(), 2);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sqlite_chunks_stay_under_its_bind_limit() {
        assert_eq!(rows_per_statement(Dialect::Sqlite, 6), 5_461);
        assert_eq!(rows_per_statement(Dialect::Sqlite, 1), SQLITE_MAX_BINDS);
        assert_eq!(rows_per_statement(Dialect::Sqlite, 40_000), 1);
        assert_eq!(rows_per_statement(Dialect::Postgres, 18), POSTGRES_ROWS_PER_STATEMENT);
    }

    #[test]
    fn a_column_of_mixed_types_is_refused_on_postgres() {
        let values: Vec<Arg<'static>> = vec![1_i64.into(), "one".into()];
        let err = rows_query(Dialect::Postgres, "SELECT * FROM ({rows}) AS v", 1, values).unwrap_err();
        assert!(err.to_string().contains("column 1"), "{err}");
    }
}
