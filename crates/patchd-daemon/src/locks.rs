//! Group locks: two runs never patch one group (in one account and region) at the same time,
//! whichever process or host they run in.
//!
//! One interface, two places, chosen by the store's backend:
//! - **SQLite** (one host): a file per group under `<state_dir>/locks/`, locked with
//!   `File::try_lock`, an advisory lock the OS drops when the process dies, holding the pid.
//! - **PostgreSQL** (several hosts may share it): a row per group in the database
//!   ([`patchd_store::Store::try_lock_groups`]), with an expiry computed by the database's clock
//!   and renewed every third of the ttl while the run lasts; released when dropped. A holder that
//!   dies stops renewing and its rows are free once they expire.
//!
//! Either way every group of a run is locked, or none.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use patchd_store::{BackendKind, Candidate, Store, StoreError};
use tracing::{debug, error};

use crate::Scope;

/// Exclusive locks on groups, held until dropped.
#[derive(Debug)]
pub struct GroupLocks {
    held: Held,
}

#[derive(Debug)]
enum Held {
    /// Held open: closing a file drops its lock.
    Files { _open: Vec<File> },
    Rows {
        store: Store,
        scope: Scope,
        groups: Vec<String>,
        holder: String,
        renewer: tokio::task::JoinHandle<()>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("group `{group}` is being patched by another patchd run ({holder}; {lock}); wait for it to finish, or stop it")]
    Held {
        group: String,
        /// `pid N`, or `HOST pid N, PURPOSE` for a lock in the database.
        holder: String,
        /// Where the lock is: the lock file, or the database row and when it frees itself.
        lock: String,
    },
    #[error("cannot use the lock file {}: {source}; check that [daemon] state_dir exists and is writable", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot take the group locks in the database: {0}")]
    Store(#[from] StoreError),
}

impl GroupLocks {
    /// Locks every group or none, without waiting. `purpose` names the run for whoever finds the
    /// groups locked; `ttl` is how long a database lock outlives a holder that stopped renewing.
    pub async fn try_acquire(
        store: &Store,
        state_dir: &Path,
        scope: &Scope,
        groups: &[&str],
        purpose: &str,
        ttl: Duration,
    ) -> Result<GroupLocks, LockError> {
        match store.backend() {
            BackendKind::Sqlite => {
                Ok(GroupLocks { held: Held::Files { _open: lock_files(state_dir, scope, groups)? } })
            }
            BackendKind::Postgres => lock_rows(store, scope, groups, purpose, ttl).await,
        }
    }
}

impl Drop for GroupLocks {
    fn drop(&mut self) {
        if let Held::Rows { store, scope, groups, holder, renewer } = &self.held {
            renewer.abort();
            let (store, scope, groups, holder) =
                (store.clone(), scope.clone(), groups.clone(), holder.clone());
            // Released in the background; if the runtime is gone, expiry frees them.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let names: Vec<&str> = groups.iter().map(String::as_str).collect();
                    if let Err(e) =
                        store.release_group_locks(&scope.account, &scope.region, &names, &holder).await
                    {
                        debug!(error = %e, "group locks not released; they expire on their own");
                    }
                });
            }
        }
    }
}

async fn lock_rows(
    store: &Store,
    scope: &Scope,
    groups: &[&str],
    purpose: &str,
    ttl: Duration,
) -> Result<GroupLocks, LockError> {
    // A holder per acquisition: two runs of one process exclude each other too.
    let me = Candidate {
        holder: uuid::Uuid::new_v4().to_string(),
        host: crate::leader::hostname(),
        pid: std::process::id(),
    };
    match store.try_lock_groups(&scope.account, &scope.region, groups, &me, purpose, ttl).await? {
        Ok(()) => {}
        Err(held) => {
            return Err(LockError::Held {
                group: held.group,
                holder: format!("{} pid {}, {}", held.host, held.pid, held.purpose),
                lock: format!(
                    "lock row in the database, free in {} s unless its holder renews it",
                    (held.expires_in_ms.max(0) + 999) / 1000
                ),
            })
        }
    }
    let owned: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
    let renewer = {
        let (store, scope, groups, holder) = (store.clone(), scope.clone(), owned.clone(), me.holder.clone());
        tokio::spawn(async move {
            let names: Vec<&str> = groups.iter().map(String::as_str).collect();
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.renew_group_locks(&scope.account, &scope.region, &names, &holder, ttl).await {
                    Ok(n) if n == names.len() => {}
                    Ok(n) => error!(held = n, wanted = names.len(), scope = %scope,
                        "group locks expired and were taken by another run; this run's groups are no longer exclusive"),
                    Err(e) => debug!(error = %e, "group locks not renewed; retrying"),
                }
            }
        })
    };
    Ok(GroupLocks {
        held: Held::Rows {
            store: store.clone(),
            scope: scope.clone(),
            groups: owned,
            holder: me.holder,
            renewer,
        },
    })
}

/// The file locks. A group is locked per account and region: its instances there are not the
/// instances of the same group elsewhere.
fn lock_files(state_dir: &Path, scope: &Scope, groups: &[&str]) -> Result<Vec<File>, LockError> {
    let dir = state_dir.join("locks");
    std::fs::create_dir_all(&dir).map_err(|source| LockError::Io { path: dir.clone(), source })?;
    let mut files = Vec::with_capacity(groups.len());
    for group in groups {
        // Group names are letters, digits, `-`, `_` and `.`, account ids digits and regions
        // letters, digits and `-`; the prefix keeps `..` harmless.
        let path = dir.join(format!("group-{}-{}-{group}.lock", scope.account, scope.region));
        let io = |source| LockError::Io { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let pid: Option<u32> =
                    std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok());
                return Err(LockError::Held {
                    group: group.to_string(),
                    holder: pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}")),
                    lock: format!("lock file {}", path.display()),
                });
            }
            Err(TryLockError::Error(source)) => return Err(io(source)),
        }
        file.set_len(0).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        files.push(file);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_locks_exclude_and_name_the_holder() {
        let dir = std::env::temp_dir().join(format!("patchd-locks-{}", std::process::id()));
        let scope = Scope { name: "home".into(), account: "111122223333".into(), region: "eu-west-1".into() };
        let elsewhere = Scope { region: "us-east-1".into(), ..scope.clone() };
        let first = lock_files(&dir, &scope, &["web", "db"]).unwrap();
        let _other_region = lock_files(&dir, &elsewhere, &["db"]).expect("another region's db is free");
        match lock_files(&dir, &scope, &["db"]) {
            Err(LockError::Held { group, holder, lock }) => {
                assert_eq!(group, "db");
                assert_eq!(holder, format!("pid {}", std::process::id()));
                assert!(lock.contains("group-111122223333-eu-west-1-db.lock"), "{lock}");
            }
            other => panic!("expected a held lock, got {other:?}"),
        }
        drop(first);
        lock_files(&dir, &scope, &["db", ".."]).expect("free once dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
