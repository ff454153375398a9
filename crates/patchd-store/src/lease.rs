//! Leadership and group locks shared through the database, for several patchd processes on
//! one PostgreSQL database (high availability).
//!
//! # The lease
//!
//! One row per lease name in `leases`: who holds it (a fresh id per process, its host and pid),
//! an **epoch** that grows by one at every change of holder, and an expiry computed with the
//! **database's clock**, so hosts whose clocks disagree still agree on who leads.
//!
//! - [`Store::bid_for_lease`] takes a lease that is free or expired, in one conditional
//!   statement (`INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <= now`): of two bidders,
//!   exactly one wins, and the winner's epoch is one more than the last holder's.
//! - [`Store::renew_lease`] extends it only where holder *and* epoch still match, so a process
//!   that lost its lease can never extend somebody else's term.
//! - [`Store::resign_lease`] ends a term at once (a clean stop), so a standby's next bid wins.
//!
//! # Fencing
//!
//! A store made with [`Store::fenced`] carries a [`Fence`] (lease, holder, epoch). Every write
//! a window run makes through it (run status, audit entries, rollout plans, batch intents,
//! command ids, invocations) first reads the lease row in the same transaction (on PostgreSQL
//! with `FOR SHARE`, which makes a concurrent takeover wait for the transaction) and is refused
//! with [`StoreError::Fenced`] unless the holder and epoch are still the fence's. The intent to
//! send a batch also requires the lease to be unexpired by the database's clock. So once a
//! takeover has committed, nothing the previous leader writes can commit after it, and the new
//! leader reads everything the old one committed.
//!
//! # Group locks
//!
//! `group_locks` holds one row per (account, region, group) being patched, with a holder, an
//! expiry renewed while the run lasts, and what holds it. A row whose expiry has passed is free.
//! The daemon uses it on PostgreSQL, where runs may start on different hosts; with SQLite the
//! locks are files (one host).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::db::{Query, Row, Tx, TxKind};
use crate::dialect::Dialect;
use crate::{Store, StoreError};

/// The lease of the daemon that fires windows, resumes runs, syncs and publishes events.
pub const SCHEDULER_LEASE: &str = "scheduler";

/// Who bids: one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Unique per process (a uuid), so a restarted process on the same host is a new holder.
    pub holder: String,
    pub host: String,
    pub pid: u32,
}

/// A lease as the database holds it, read with the database's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    pub name: String,
    pub holder: String,
    pub host: String,
    pub pid: u32,
    pub epoch: i64,
    pub acquired_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Unexpired when read.
    pub live: bool,
    /// Milliseconds left when read, by the database's clock (negative once expired).
    pub expires_in_ms: i64,
}

impl LeaseRecord {
    /// `host (pid N), epoch E`: how errors and logs name a holder.
    pub fn describe(&self) -> String {
        format!("{} (pid {}), epoch {}", self.host, self.pid, self.epoch)
    }
}

/// The outcome of a bid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bid {
    /// The bidder holds the lease now, under the record's (new) epoch.
    Won(LeaseRecord),
    /// Somebody else holds an unexpired lease.
    Held(LeaseRecord),
}

/// What a fenced store's writes are conditional on.
#[derive(Debug, Clone)]
pub struct Fence {
    pub lease: String,
    pub holder: String,
    pub epoch: i64,
    /// Until when, by this host's monotonic clock, the term is surely still current: what a
    /// caller checks before an action the database cannot fence (a SendCommand).
    pub term: TermClock,
}

/// The end of a term as this host can be sure of it: the instant a successful bid or renewal
/// was *sent* plus the lease's ttl. The database computed the expiry from a later instant of
/// its own, so, whatever the two clocks read, the real expiry is no earlier than this. Shared
/// by clones; the leadership loop moves it.
#[derive(Debug, Clone, Default)]
pub struct TermClock(std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl TermClock {
    /// A term surely current until `until`.
    pub fn until(until: std::time::Instant) -> TermClock {
        TermClock(std::sync::Arc::new(std::sync::Mutex::new(Some(until))))
    }

    pub fn extend_to(&self, until: std::time::Instant) {
        let mut end = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *end = Some(end.map_or(until, |e| e.max(until)));
    }

    /// Ends the term now (lost, resigned).
    pub fn end(&self) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// How long the term surely lasts from now; zero once over.
    pub fn remaining(&self) -> Duration {
        let end = *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        end.map_or(Duration::ZERO, |e| e.saturating_duration_since(std::time::Instant::now()))
    }
}

/// Who holds a group lock another run wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLockHolder {
    pub group: String,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    /// By the database's clock: when a holder that died stops blocking.
    pub expires_in_ms: i64,
}

fn lease_columns(d: Dialect) -> String {
    format!(
        "name, holder, host, pid, epoch, acquired_at, renewed_at, expires_at, \
         (expires_at > {now}) AS live, {remaining} AS expires_in_ms",
        now = d.now(),
        remaining = d.millis_until("expires_at"),
    )
}

fn lease_record(r: &Row) -> Result<LeaseRecord, StoreError> {
    let pid = r.int("pid")?;
    Ok(LeaseRecord {
        name: r.text("name")?,
        holder: r.text("holder")?,
        host: r.text("host")?,
        pid: u32::try_from(pid).map_err(|_| StoreError::corrupt("pid", pid.to_string()))?,
        epoch: r.int("epoch")?,
        acquired_at: r.time("acquired_at")?,
        renewed_at: r.time("renewed_at")?,
        expires_at: r.time("expires_at")?,
        live: r.flag("live")?,
        expires_in_ms: r.int("expires_in_ms")?,
    })
}

/// Whether a fence still holds, given the lease row read in the writer's transaction.
fn judge_fence(
    fence: &Fence,
    row: Option<(String, i64, bool, String, i64)>,
    require_live: bool,
) -> Result<(), StoreError> {
    let refused = |now_held_by: String| StoreError::Fenced { epoch: fence.epoch, now_held_by };
    match row {
        None => Err(refused("nobody: the lease is gone".into())),
        Some((holder, epoch, live, host, pid)) => {
            if holder != fence.holder || epoch != fence.epoch {
                Err(refused(format!("{host} (pid {pid}), epoch {epoch}")))
            } else if require_live && !live {
                Err(refused("nobody: this process's lease expired by the database's clock".into()))
            } else {
                Ok(())
            }
        }
    }
}

/// Refuses the transaction's writes unless `fence` still holds the lease (and, with
/// `require_live`, unexpired). On PostgreSQL the lease row stays share-locked until the
/// transaction ends, so a takeover cannot commit in between.
async fn check_fence(tx: &mut Tx<'_>, fence: &Fence, require_live: bool) -> Result<(), StoreError> {
    let d = tx.dialect();
    let sql = format!(
        "SELECT holder, epoch, (expires_at > {now}) AS live, host, pid FROM leases WHERE name = $1{lock}",
        now = d.now(),
        lock = d.for_share()
    );
    let row = tx.fetch_optional(Query::new(sql).bind(fence.lease.as_str())).await?;
    let row = match row {
        None => None,
        Some(r) => {
            Some((r.text("holder")?, r.int("epoch")?, r.flag("live")?, r.text("host")?, r.int("pid")?))
        }
    };
    judge_fence(fence, row, require_live)
}

impl Store {
    /// This store, whose run writes are conditional on `fence` (see the module documentation).
    pub fn fenced(&self, fence: Fence) -> Store {
        Store { fence: Some(std::sync::Arc::new(fence)), ..self.clone() }
    }

    /// The fence this store's run writes are conditional on, if any.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_deref()
    }

    /// A transaction for one of a run's writes: refused unless this store's fence, if it has
    /// one, still holds (`require_live`: and the lease is unexpired).
    pub(crate) async fn begin_fenced(&self, kind: TxKind, require_live: bool) -> Result<Tx<'_>, StoreError> {
        let mut tx = self.db.begin(kind).await?;
        if let Some(fence) = self.fence.as_deref() {
            check_fence(&mut tx, fence, require_live).await?;
        }
        Ok(tx)
    }

    /// The lease `name`, if anybody ever held it.
    pub async fn lease(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError> {
        let sql = format!("SELECT {} FROM leases WHERE name = $1", lease_columns(self.db.dialect()));
        let row = self.db.fetch_optional(Query::new(sql).bind(name)).await?;
        row.as_ref().map(lease_record).transpose()
    }

    /// Takes the lease when it is free or expired (epoch + 1), else reports who holds it.
    /// `dead_holder` also lets the bid replace that holder while its lease is unexpired: for a
    /// holder known to be dead (SQLite, same host, no such process), never on a guess.
    pub async fn bid_for_lease(
        &self,
        name: &str,
        candidate: &Candidate,
        ttl: Duration,
        dead_holder: Option<&str>,
    ) -> Result<Bid, StoreError> {
        let d = self.db.dialect();
        let sql = format!(
            "INSERT INTO leases AS l (name, holder, host, pid, epoch, acquired_at, renewed_at, expires_at) \
             VALUES ($1, $2, $3, $4, 1, {now}, {now}, {later}) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, host = excluded.host, \
               pid = excluded.pid, epoch = l.epoch + 1, acquired_at = excluded.acquired_at, \
               renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
             WHERE l.expires_at <= {now} OR l.holder = $6 \
             RETURNING {columns}",
            now = d.now(),
            later = d.now_plus("$5"),
            columns = lease_columns(d),
        );
        let query = Query::new(sql)
            .bind(name)
            .bind(&candidate.holder)
            .bind(&candidate.host)
            .bind(i64::from(candidate.pid))
            .bind(d.duration(ttl))
            .bind(dead_holder.unwrap_or(""));
        if let Some(row) = self.db.fetch_optional(query).await? {
            return Ok(Bid::Won(lease_record(&row)?));
        }
        match self.lease(name).await? {
            Some(record) => Ok(Bid::Held(record)),
            // Deleted between the two statements (by hand): the next bid will insert it.
            None => Err(StoreError::InvalidInput(format!("lease {name} vanished while bidding; bid again"))),
        }
    }

    /// Extends the lease for `ttl` from the database's now, when `fence` still holds it; None
    /// when it does not (taken over, or deleted). An expired lease nobody took over is renewed:
    /// nobody else acted under it.
    pub async fn renew_lease(&self, fence: &Fence, ttl: Duration) -> Result<Option<LeaseRecord>, StoreError> {
        let d = self.db.dialect();
        let sql = format!(
            "UPDATE leases SET renewed_at = {now}, expires_at = {later} \
             WHERE name = $1 AND holder = $2 AND epoch = $3 RETURNING {columns}",
            now = d.now(),
            later = d.now_plus("$4"),
            columns = lease_columns(d),
        );
        let query = Query::new(sql)
            .bind(fence.lease.as_str())
            .bind(&fence.holder)
            .bind(fence.epoch)
            .bind(d.duration(ttl));
        let row = self.db.fetch_optional(query).await?;
        row.as_ref().map(lease_record).transpose()
    }

    /// Ends `fence`'s term now, so that a standby's next bid wins. False when it had already
    /// ended.
    pub async fn resign_lease(&self, fence: &Fence) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE leases SET expires_at = {now} \
             WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > {now}",
            now = self.db.dialect().now()
        );
        let query = Query::new(sql).bind(fence.lease.as_str()).bind(&fence.holder).bind(fence.epoch);
        Ok(self.db.execute(query).await? > 0)
    }

    /// Locks every group of `groups` in (account, region) for `holder`, or none: the first
    /// group somebody else holds unexpired is returned. The locks last `ttl` unless renewed.
    #[allow(clippy::too_many_arguments)]
    pub async fn try_lock_groups(
        &self,
        account: &str,
        region: &str,
        groups: &[&str],
        holder: &Candidate,
        purpose: &str,
        ttl: Duration,
    ) -> Result<Result<(), GroupLockHolder>, StoreError> {
        let d = self.db.dialect();
        let lock = format!(
            "INSERT INTO group_locks AS g (account, region, group_name, holder, host, pid, purpose, \
               acquired_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, {now}, {later}) \
             ON CONFLICT (account, region, group_name) DO UPDATE SET holder = excluded.holder, \
               host = excluded.host, pid = excluded.pid, purpose = excluded.purpose, \
               acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
             WHERE g.expires_at <= {now} \
             RETURNING holder",
            now = d.now(),
            later = d.now_plus("$8"),
        );
        let held_by = format!(
            "SELECT host, pid, purpose, {remaining} AS expires_in_ms FROM group_locks \
             WHERE account = $1 AND region = $2 AND group_name = $3",
            remaining = d.millis_until("expires_at")
        );
        let mut tx = self.db.begin(TxKind::Write).await?;
        for group in groups {
            let query = Query::new(lock.as_str())
                .bind(account)
                .bind(region)
                .bind(*group)
                .bind(&holder.holder)
                .bind(&holder.host)
                .bind(i64::from(holder.pid))
                .bind(purpose)
                .bind(d.duration(ttl));
            if tx.fetch_optional(query).await?.is_none() {
                let row = tx
                    .fetch_one(Query::new(held_by.as_str()).bind(account).bind(region).bind(*group))
                    .await?;
                let held = GroupLockHolder {
                    group: group.to_string(),
                    host: row.text("host")?,
                    pid: u32::try_from(row.int("pid")?).unwrap_or(0),
                    purpose: row.text("purpose")?,
                    expires_in_ms: row.int("expires_in_ms")?,
                };
                tx.rollback().await?;
                return Ok(Err(held));
            }
        }
        tx.commit().await?;
        Ok(Ok(()))
    }

    /// Extends `holder`'s locks on `groups` for `ttl`; returns how many it still held.
    pub async fn renew_group_locks(
        &self,
        account: &str,
        region: &str,
        groups: &[&str],
        holder: &str,
        ttl: Duration,
    ) -> Result<usize, StoreError> {
        let d = self.db.dialect();
        let sql = format!(
            "UPDATE group_locks SET expires_at = {later} \
             WHERE account = $1 AND region = $2 AND group_name = $3 AND holder = $4",
            later = d.now_plus("$5")
        );
        let mut held = 0;
        for group in groups {
            let query = Query::new(sql.as_str())
                .bind(account)
                .bind(region)
                .bind(*group)
                .bind(holder)
                .bind(d.duration(ttl));
            held += self.db.execute(query).await? as usize;
        }
        Ok(held)
    }

    /// Releases `holder`'s locks on `groups` (those it still holds).
    pub async fn release_group_locks(
        &self,
        account: &str,
        region: &str,
        groups: &[&str],
        holder: &str,
    ) -> Result<(), StoreError> {
        for group in groups {
            let query = Query::new(
                "DELETE FROM group_locks WHERE account = $1 AND region = $2 AND group_name = $3 AND holder = $4",
            )
            .bind(account)
            .bind(region)
            .bind(*group)
            .bind(holder);
            self.db.execute(query).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_holds_only_for_its_holder_and_epoch() {
        let fence =
            Fence { lease: "scheduler".into(), holder: "a".into(), epoch: 3, term: TermClock::default() };
        let row =
            |holder: &str, epoch, live| Some((holder.to_string(), epoch, live, "host-b".to_string(), 7));
        assert!(judge_fence(&fence, row("a", 3, true), true).is_ok());
        assert!(judge_fence(&fence, row("a", 3, false), false).is_ok(), "lapsed, nobody took over");
        let lapsed = judge_fence(&fence, row("a", 3, false), true).unwrap_err();
        assert!(lapsed.to_string().contains("expired"), "{lapsed}");
        let taken = judge_fence(&fence, row("b", 4, true), false).unwrap_err();
        assert!(taken.to_string().contains("host-b (pid 7), epoch 4"), "{taken}");
        assert!(judge_fence(&fence, row("a", 4, true), false).is_err(), "same holder, later term");
        assert!(judge_fence(&fence, None, false).is_err());
    }

    #[test]
    fn a_term_clock_only_moves_forward_until_ended() {
        let start = std::time::Instant::now();
        let clock = TermClock::until(start + Duration::from_secs(10));
        clock.extend_to(start + Duration::from_secs(5));
        assert!(clock.remaining() > Duration::from_secs(9), "an older renewal never shortens the term");
        clock.extend_to(start + Duration::from_secs(20));
        assert!(clock.remaining() > Duration::from_secs(19));
        clock.end();
        assert_eq!(clock.remaining(), Duration::ZERO);
        assert_eq!(TermClock::default().remaining(), Duration::ZERO);
    }
}
