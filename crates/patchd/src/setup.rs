//! What most commands do first: load the configuration, start a runtime, open the store.

use chrono::{DateTime, Utc};
use patchd_config::{Config, LoadError, Loaded};
use patchd_store::{Store, StoreError};
use tracing::warn;

use crate::cli::GlobalArgs;
use crate::failure::Failure;

/// Commands that touch the database or AWS run on a small runtime; `check` and `plan` need none.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// What to do when there is no configuration where patchd looked: the first thing a new user
/// meets when they run a command without `--config`.
const CONFIG_HINT: &str = "pass --config FILE (a TOML file, or a directory of *.toml files) or set \
PATCHD_CONFIG; to write one, start from config/example.toml; `patchd demo` shows patchd at work \
on a simulated fleet with no AWS account";

/// Loads the configuration named by the global options and applies their overrides.
pub(crate) fn load_config(global: &GlobalArgs, now: DateTime<Utc>) -> Result<Loaded, Failure> {
    let mut loaded = match patchd_config::load(&global.config, now) {
        Ok(loaded) => loaded,
        Err(LoadError::Invalid { diagnostics }) => return Err(Failure::InvalidConfig(diagnostics)),
        Err(error @ LoadError::NoFiles { .. }) => return Err(Failure::hinted(error, CONFIG_HINT)),
        Err(LoadError::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::hinted(LoadError::Io { path, source }, CONFIG_HINT))
        }
        Err(other) => return Err(Failure::Other(other.into())),
    };
    if let Some(url) = &global.database {
        loaded.config.daemon.database_url = patchd_config::DatabaseUrl::new(url.clone());
    }
    if let Some(url) = &global.endpoint_url {
        loaded.config.aws.endpoint_url = Some(url.clone());
    }
    Ok(loaded)
}

/// Configuration warnings as log lines, for commands whose stderr is a log.
pub(crate) fn log_warnings(warnings: &[patchd_config::Diagnostic]) {
    for w in warnings {
        warn!(location = %w.origin, message = %w.message, "configuration warning");
    }
}

/// The one KEV policy (see [`patchd_daemon::feeds::kev_catalog`]): one copy per version of the
/// file; what it could not read ranks nothing by KEV.
pub(crate) fn load_kev(config: &Config) -> std::sync::Arc<patchd_daemon::feeds::LoadedKev> {
    patchd_daemon::feeds::kev_catalog(config)
}

/// A report someone reads says when it ranked without the KEV catalog; the daemon's surfaces
/// say it through the feed's status and metrics instead of a line per scrape.
pub(crate) fn warn_about_kev(kev: &patchd_daemon::feeds::LoadedKev) {
    if let Some(problem) = &kev.problem {
        eprintln!("patchd: warning: {problem}; ranking without the KEV catalog");
    }
}

/// Opens (and migrates) the configured database, printing nothing: commands report what they
/// did themselves. A state directory or SQLite file patchd creates is private to its user:
/// the directory 0700, the database 0600 (SQLite gives its -wal and -shm files the database's
/// mode).
pub(crate) async fn open_store(config: &Config) -> Result<Store, Failure> {
    let url = &config.daemon.database_url;
    if let Some(path) = sqlite_file(url.expose()) {
        let path = std::path::Path::new(path);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_private_dir(dir)?;
        }
        create_private_file(path)?;
    }
    Store::open(url.expose(), &patchd_store::OpenOptions::default()).await.map_err(|e| store_failure(url, e))
}

/// Why a database could not be opened. The store's connect errors already name the URL and say
/// what to check: they are said as they are, not wrapped in a second "cannot open".
pub(crate) fn store_failure(url: &patchd_config::DatabaseUrl, error: StoreError) -> Failure {
    match error {
        StoreError::Connect { .. } | StoreError::UnsupportedUrl { .. } => Failure::Other(error.into()),
        e => Failure::Other(anyhow::anyhow!("cannot open the database {url}: {e}")),
    }
}

/// Opens the configured database for a command that only reads it: creates no file or
/// directory and migrates nothing. A SQLite file that does not exist, or a schema older than
/// this patchd's, is an error that says what to do, never an empty database and a reassuring
/// report.
pub(crate) async fn open_store_read_only(config: &Config) -> Result<Store, Failure> {
    let url = &config.daemon.database_url;
    require_database_file(url)?;
    let options =
        patchd_store::OpenOptions { migrate: false, create: false, ..patchd_store::OpenOptions::default() };
    Store::open(url.expose(), &options).await.map_err(|e| match e {
        StoreError::OutdatedSchema { .. } => Failure::hinted(
            anyhow::anyhow!("the database {url} is not ready: {e}"),
            "this command only reads the database and changed nothing; the daemon (`patchd run`) \
             also migrates when it starts",
        ),
        e => store_failure(url, e),
    })
}

/// A SQLite database URL whose file does not exist is an error naming the file: for commands
/// that read the database and must not create it.
pub(crate) fn require_database_file(url: &patchd_config::DatabaseUrl) -> Result<(), Failure> {
    let Some(path) = sqlite_file(url.expose()) else { return Ok(()) };
    if std::path::Path::new(path).exists() {
        return Ok(());
    }
    Err(Failure::hinted(
        anyhow::anyhow!("no database at {path} ({url}); this command only reads it and created nothing"),
        "check the path (--database, PATCHD_DATABASE_URL or [daemon] database_url); a new \
         database is created by `patchd db migrate`, or when the daemon (`patchd run`) first starts",
    ))
}

/// A database named on the command line (`--database`, `PATCHD_DATABASE_URL`) is one the user
/// means to use: a SQLite file it names that does not exist is an error, even for the commands
/// that need a database only sometimes (`check`, `plan`) and otherwise go on without one.
pub(crate) fn require_named_database(global: &GlobalArgs, config: &Config) -> Result<(), Failure> {
    match global.database {
        Some(_) => require_database_file(&config.daemon.database_url),
        None => Ok(()),
    }
}

/// The state directory (commands that run tasks keep their group locks there) and the store.
pub(crate) async fn open_state(config: &Config) -> Result<Store, Failure> {
    create_private_dir(&config.daemon.state_dir)?;
    open_store(config).await
}

/// The file an `sqlite://FILE[?options]` (or `sqlite:FILE`) URL names; None for memory
/// databases and other URLs.
pub(crate) fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, options) = rest.split_once('?').unwrap_or((rest, ""));
    let memory = path == ":memory:" || options.split('&').any(|o| o == "mode=memory");
    (!path.is_empty() && !memory).then_some(path)
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left as it is.
fn create_private_dir(dir: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Failure::Other(anyhow::anyhow!("cannot create the directory {}: {e}", dir.display())))
}

/// Creates an empty database file with mode 0600 unless it exists, before SQLite would create
/// it with the umask's mode.
fn create_private_file(path: &std::path::Path) -> Result<(), Failure> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => {
            Err(Failure::Other(anyhow::anyhow!("cannot create the database file {}: {e}", path.display())))
        }
    }
}
