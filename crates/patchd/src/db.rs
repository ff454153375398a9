//! `patchd db migrate|status`.

use chrono::Utc;
use patchd_store::{OpenOptions, Store, StoreError};

use crate::cli::{DbCommand, GlobalArgs};
use crate::failure::Failure;
use crate::setup::{load_config, open_store, require_database_file, sqlite_file, store_failure};

pub async fn run(global: &GlobalArgs, command: &DbCommand) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    let url = &loaded.config.daemon.database_url;
    let missing = sqlite_file(url.expose()).is_some_and(|path| !std::path::Path::new(path).exists());
    if missing && matches!(command, DbCommand::Migrate) {
        // A new database: created (privately, with its directory) and migrated in one go.
        let store = open_store(&loaded.config).await?;
        let version = store.schema_version().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
        store.close().await;
        println!("{url}: migrated from empty to schema version {}", version.supported);
        return Ok(());
    }
    // `db status` only reads: a file that does not exist is an error, not a new database.
    require_database_file(url)?;
    // Opening without migrating (or creating) tells where the schema stands without changing
    // anything.
    let unmigrated =
        Store::open(url.expose(), &OpenOptions { migrate: false, create: false, ..OpenOptions::default() })
            .await;
    let (current, supported) = match unmigrated {
        Ok(store) => {
            let version = store.schema_version().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            (version.database, version.supported)
        }
        Err(StoreError::OutdatedSchema { database_version, supported_version }) => {
            (database_version, supported_version)
        }
        Err(e) => return Err(store_failure(url, e)),
    };
    let describe = |v: Option<i64>| v.map_or("empty".to_string(), |v| format!("schema version {v}"));
    match command {
        DbCommand::Status => {
            println!("{url}: {}; this patchd supports schema version {supported}", describe(current));
        }
        DbCommand::Migrate if current == Some(supported) => {
            println!("{url}: schema version {supported} is current, nothing to do");
        }
        DbCommand::Migrate => {
            open_store(&loaded.config).await?;
            println!("{url}: migrated from {} to schema version {supported}", describe(current));
        }
    }
    Ok(())
}
