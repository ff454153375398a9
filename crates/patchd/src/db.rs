//! `patchd db migrate|status` and `patchd advisories import`.

use std::path::PathBuf;

use chrono::Utc;
use patchd_store::{OpenOptions, ReleaseSource, Store, StoreError};

use crate::cli::{DbCommand, GlobalArgs};
use crate::{load_config, open_store, Failure};

pub async fn run(global: &GlobalArgs, command: &DbCommand) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    let url = &loaded.config.daemon.database_url;
    // Opening without migrating tells where the schema stands without changing anything.
    let unmigrated =
        Store::open(url.expose(), &OpenOptions { migrate: false, ..OpenOptions::default() }).await;
    let (current, supported) = match unmigrated {
        Ok(store) => {
            let version = store.schema_version().await.map_err(|e| anyhow::anyhow!("{url}: {e}"))?;
            (version.database, version.supported)
        }
        Err(StoreError::OutdatedSchema { database_version, supported_version }) => {
            (database_version, supported_version)
        }
        Err(e) => return Err(anyhow::anyhow!("cannot open the database {url}: {e}").into()),
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

pub async fn import_advisories(global: &GlobalArgs, files: &[PathBuf]) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    // Every file is parsed before anything is written: one bad line imports nothing.
    let mut dates = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
        let advisories =
            crate::advisories::parse(file, &text).map_err(|e| anyhow::anyhow!("{e}; nothing imported"))?;
        println!("{}: {} advisories", file.display(), advisories.len());
        dates.extend(advisories.into_iter().map(|a| (a.id, a.released, ReleaseSource::Advisory)));
    }
    let store = open_store(&loaded.config).await?;
    let changed = store.set_release_dates(&dates).await.map_err(|e| anyhow::anyhow!("import failed: {e}"))?;
    println!("imported {} release dates ({changed} new or changed)", dates.len());
    Ok(())
}
