//! Each test gets a database of its own on each backend: an SQLite file in the temp
//! directory, or a fresh schema in the PostgreSQL database `PATCHD_TEST_POSTGRES_URL` names
//! (the store's connections select it through `search_path`). Cases are written once and run
//! on both; without the variable, the PostgreSQL half says so and passes.

#![allow(dead_code)]

use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use patchd_store::{OpenOptions, Store, StoreError};
use sqlx::{Connection, Executor};

pub const POSTGRES_ENV: &str = "PATCHD_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct TestDb {
    pub backend: Backend,
    /// The URL the store opens.
    pub url: String,
    sqlite_path: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(name: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let mut name: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(30).collect();
    name.make_ascii_lowercase();
    format!("{name}_{}_{n}_{nanos}", std::process::id())
}

impl TestDb {
    fn sqlite(name: &str) -> TestDb {
        let path = std::env::temp_dir().join(format!("patchd-store-{}.db", unique(name)));
        TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            sqlite_path: Some(path),
            postgres: None,
        }
    }

    async fn postgres(name: &str) -> Option<TestDb> {
        let admin = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())?;
        let schema = format!("t_{}", unique(name));
        let mut conn =
            sqlx::PgConnection::connect(&admin).await.expect("connect to PATCHD_TEST_POSTGRES_URL");
        conn.execute(format!("CREATE SCHEMA \"{schema}\"").as_str()).await.expect("create the test schema");
        conn.close().await.ok();
        let separator = if admin.contains('?') { '&' } else { '?' };
        Some(TestDb {
            backend: Backend::Postgres,
            url: format!("{admin}{separator}options[search_path]={schema}"),
            sqlite_path: None,
            postgres: Some((admin, schema)),
        })
    }

    pub async fn open(&self) -> Store {
        self.open_with(&OpenOptions::default()).await.expect("open the store")
    }

    pub async fn open_with(&self, options: &OpenOptions) -> Result<Store, StoreError> {
        Store::open(&self.url, options).await
    }

    /// Runs SQL on a connection of its own: for what the public API deliberately cannot do
    /// (forge a future migration, try to rewrite the audit log, count rows).
    pub async fn execute(&self, sql: &str) -> Result<u64, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await?;
                let n = conn.execute(sql).await?.rows_affected();
                conn.close().await?;
                Ok(n)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await?;
                let n = conn.execute(sql).await?.rows_affected();
                conn.close().await?;
                Ok(n)
            }
        }
    }

    /// Applies the shipped migrations up to `version` only: a database as an older patchd
    /// left it, for upgrade tests.
    pub async fn migrate_up_to(&self, version: i64) {
        fn up_to(mut migrator: sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
            migrator.migrations = migrator
                .migrations
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            migrator
        }
        match self.backend {
            Backend::Sqlite => {
                use std::str::FromStr;
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.url)
                    .expect("url")
                    .create_if_missing(true);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await.expect("connect");
                up_to(sqlx::migrate!("../../migrations/sqlite"), version)
                    .run_direct(&mut conn)
                    .await
                    .expect("migrate");
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect");
                up_to(sqlx::migrate!("../../migrations/postgres"), version)
                    .run_direct(&mut conn)
                    .await
                    .expect("migrate");
            }
        }
    }

    /// A single integer from SQL (a `count(*)`, typically).
    pub async fn count(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect(sql)
            }
            Backend::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect");
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.expect(sql)
            }
        }
    }

    async fn cleanup(&self) {
        if let Some(path) = &self.sqlite_path {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
        if let Some((admin, schema)) = &self.postgres {
            if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
                let _ = conn.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str()).await;
                let _ = conn.close().await;
            }
        }
    }
}

/// Runs one case against one backend in a database of its own, and drops that database
/// afterwards whether the case passed or panicked.
pub async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let db = match backend {
        Backend::Sqlite => TestDb::sqlite(name),
        Backend::Postgres => match TestDb::postgres(name).await {
            Some(db) => db,
            None => {
                // Straight to stderr: libtest captures println! and eprintln! of passing tests.
                let _ = writeln!(std::io::stderr(), "{name}: skipping postgres: {POSTGRES_ENV} is unset");
                return;
            }
        },
    };
    // A spawned task turns a panic into a value, so the cleanup below always runs.
    let outcome = tokio::spawn(case(db.clone())).await;
    db.cleanup().await;
    if let Err(error) = outcome {
        match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("the test task did not finish: {error}"),
        }
    }
}

/// Declares each listed case (an `async fn(TestDb)` in the including file) as two tests,
/// `sqlite::<case>` and `postgres::<case>`.
#[macro_export]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    use $crate::common::{run, Backend};
                    run(Backend::Sqlite, stringify!($case), super::$case).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    use $crate::common::{run, Backend};
                    run(Backend::Postgres, stringify!($case), super::$case).await
                }
            )*
        }
    };
}
