//! The schema version: applying migrations at open, and refusing a database this build must
//! not touch.

use std::collections::HashSet;

use sqlx::migrate::{MigrateError, Migrator};

use crate::db::{Db, Query};
use crate::types::{MigrationReport, SchemaVersion};
use crate::StoreError;

fn supported_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

fn succeeded(applied: &[(i64, bool)]) -> HashSet<i64> {
    applied.iter().filter(|(_, ok)| *ok).map(|(v, _)| *v).collect()
}

fn is_current(migrator: &Migrator, applied: &[(i64, bool)]) -> bool {
    let done = succeeded(applied);
    migrator.iter().all(|m| done.contains(&m.version))
}

/// The refusal rule shared by `open` and `migrate`: a database that applied a migration this
/// build does not know was migrated by a newer patchd (versions only grow), and is never
/// touched.
fn refuse_unknown(migrator: &Migrator, applied: &[(i64, bool)]) -> Result<(), StoreError> {
    let unknown = applied.iter().any(|(v, _)| !migrator.iter().any(|m| m.version == *v));
    match applied.iter().map(|(v, _)| *v).max() {
        Some(database_version) if unknown => {
            Err(StoreError::NewerSchema { database_version, supported_version: supported_version(migrator) })
        }
        _ => Ok(()),
    }
}

/// Applied migrations `(version, success)`; empty when the migrations table does not exist.
async fn applied_migrations(db: &Db) -> Result<Vec<(i64, bool)>, StoreError> {
    let exists = db.fetch_one(Query::new(db.dialect().migrations_table_exists())).await?;
    if !exists.flag("found")? {
        return Ok(Vec::new());
    }
    let rows =
        db.fetch_all(Query::new("SELECT version, success FROM _sqlx_migrations ORDER BY version")).await?;
    rows.iter().map(|r| Ok((r.int("version")?, r.flag("success")?))).collect()
}

pub(crate) async fn migrate(db: &Db) -> Result<MigrationReport, StoreError> {
    let migrator = db.migrator();
    let supported = supported_version(migrator);
    let before = applied_migrations(db).await?;
    refuse_unknown(migrator, &before)?;
    match db.run_migrator().await {
        Ok(()) => Ok(migration_report(migrator, &before)),
        // A newer patchd migrated the database between the check above and the migrator's
        // lock: the migrator refuses to run, and so do we.
        Err(MigrateError::VersionMissing(database_version)) if database_version > supported => {
            Err(StoreError::NewerSchema { database_version, supported_version: supported })
        }
        // SQLite's migrator takes no lock: two processes starting together both try to apply
        // the same migration and the second fails. If the database is now current, it was
        // migrated, just not by us.
        Err(error @ MigrateError::ExecuteMigration(..)) => {
            if is_current(migrator, &applied_migrations(db).await?) {
                Ok(MigrationReport { applied: Vec::new(), version: supported })
            } else {
                Err(StoreError::Migrate(error))
            }
        }
        Err(other) => Err(StoreError::Migrate(other)),
    }
}

pub(crate) async fn schema_version(db: &Db) -> Result<SchemaVersion, StoreError> {
    let applied = applied_migrations(db).await?;
    Ok(SchemaVersion {
        database: succeeded(&applied).into_iter().max(),
        supported: supported_version(db.migrator()),
    })
}

pub(crate) async fn require_current_schema(db: &Db) -> Result<(), StoreError> {
    let migrator = db.migrator();
    let applied = applied_migrations(db).await?;
    refuse_unknown(migrator, &applied)?;
    if is_current(migrator, &applied) {
        Ok(())
    } else {
        Err(StoreError::OutdatedSchema {
            database_version: succeeded(&applied).into_iter().max(),
            supported_version: supported_version(migrator),
        })
    }
}

/// What a run of the migrator applied, given the migrations applied before it.
fn migration_report(migrator: &Migrator, before: &[(i64, bool)]) -> MigrationReport {
    let done = succeeded(before);
    let applied = migrator.iter().map(|m| m.version).filter(|v| !done.contains(v)).collect();
    MigrationReport { applied, version: supported_version(migrator) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_applied_migrations_are_refused() {
        let migrator = &crate::sqlite::MIGRATOR;
        let check = |applied: &[(i64, bool)]| match refuse_unknown(migrator, applied) {
            Ok(()) => None,
            Err(StoreError::NewerSchema { database_version, supported_version }) => {
                Some((database_version, supported_version))
            }
            Err(other) => panic!("{other:?}"),
        };
        let supported = supported_version(migrator);
        let newer = supported + 1;
        assert_eq!(check(&[]), None, "an empty database");
        assert_eq!(check(&[(1, true)]), None);
        assert_eq!(
            check(&[(1, true), (newer, true)]),
            Some((newer, supported)),
            "a newer patchd migrated it"
        );
        assert_eq!(
            check(&[(1, true), (newer + 5, false)]),
            Some((newer + 5, supported)),
            "even a failed newer migration"
        );
    }
}
