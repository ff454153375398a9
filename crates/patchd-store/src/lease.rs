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

use crate::dialect::Dialect;
use crate::read::Cols;
use crate::{with_pool, Store, StoreError};

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

/// `now` and `now + ttl` in each dialect, from the database's clock. SQLite's time text is RFC
/// 3339 in UTC to the millisecond, which compares in time order.
fn now_sql(pg: bool) -> &'static str {
    if pg {
        "clock_timestamp()"
    } else {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    }
}

/// `now + ttl`, the ttl bound as parameter `$n`: milliseconds on PostgreSQL, a modifier on SQLite.
fn later_sql(pg: bool, n: usize) -> String {
    if pg {
        format!("(clock_timestamp() + ${n}::float8 * interval '1 millisecond')")
    } else {
        format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', ${n})")
    }
}

fn remaining_sql(pg: bool, column: &str) -> String {
    if pg {
        format!("(extract(epoch from ({column} - clock_timestamp())) * 1000)::bigint")
    } else {
        format!("CAST(round((julianday({column}) - julianday('now')) * 86400000.0) AS INTEGER)")
    }
}

fn lease_columns(pg: bool) -> String {
    format!(
        "name, holder, host, pid, epoch, acquired_at, renewed_at, expires_at, \
         (expires_at > {now}) AS live, {remaining} AS expires_in_ms",
        now = now_sql(pg),
        remaining = remaining_sql(pg, "expires_at"),
    )
}

fn lease_record(r: &impl Cols) -> Result<LeaseRecord, StoreError> {
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

/// The ttl as each dialect's SQL takes it.
enum Ttl {
    Millis(f64),
    Modifier(String),
}

fn ttl_arg(pg: bool, ttl: Duration) -> Ttl {
    let millis = ttl.as_secs_f64() * 1000.0;
    if pg {
        Ttl::Millis(millis)
    } else {
        Ttl::Modifier(format!("+{:.3} seconds", millis / 1000.0))
    }
}

macro_rules! bind_ttl {
    ($query:expr, $ttl:expr) => {
        match &$ttl {
            Ttl::Millis(ms) => $query.bind(*ms),
            Ttl::Modifier(text) => $query.bind(text.clone()),
        }
    };
}

/// Whether a fence still holds, given the lease row read in the writer's transaction.
pub(crate) fn judge_fence(
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

/// The fence check of [`crate::dialect::Dialect::check_fence`], written once for both
/// backends' transaction types.
macro_rules! check_fence_in {
    ($tx:expr, $c:expr, $fence:expr, $require_live:expr, $pg:expr) => {{
        $c.statement();
        let row: Option<(String, i64, bool, String, i64)> = sqlx::query_as(&$crate::lease::fence_sql($pg))
            .bind(&$fence.lease)
            .fetch_optional(&mut **$tx)
            .await?;
        $crate::lease::judge_fence($fence, row, $require_live)
    }};
}
pub(crate) use check_fence_in;

/// The statement a fenced write reads the lease with.
pub(crate) fn fence_sql(pg: bool) -> String {
    format!(
        "SELECT holder, epoch, (expires_at > {now}) AS live, host, pid FROM leases WHERE name = $1{lock}",
        now = now_sql(pg),
        lock = if pg { " FOR SHARE" } else { "" }
    )
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

    /// The lease `name`, if anybody ever held it.
    pub async fn lease(&self, name: &str) -> Result<Option<LeaseRecord>, StoreError> {
        self.counters.statement();
        with_pool!(self, |pool, pg| {
            let sql = format!("SELECT {} FROM leases WHERE name = $1", lease_columns(pg));
            let row = sqlx::query(&sql).bind(name).fetch_optional(pool).await?;
            row.as_ref().map(lease_record).transpose()
        })
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
        self.counters.statement();
        let won: Option<LeaseRecord> = with_pool!(self, |pool, pg| {
            let ttl = ttl_arg(pg, ttl);
            let sql = format!(
                "INSERT INTO leases AS l (name, holder, host, pid, epoch, acquired_at, renewed_at, expires_at) \
                 VALUES ($1, $2, $3, $4, 1, {now}, {now}, {later}) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, host = excluded.host, \
                   pid = excluded.pid, epoch = l.epoch + 1, acquired_at = excluded.acquired_at, \
                   renewed_at = excluded.renewed_at, expires_at = excluded.expires_at \
                 WHERE l.expires_at <= {now} OR l.holder = $6 \
                 RETURNING {columns}",
                now = now_sql(pg),
                later = later_sql(pg, 5),
                columns = lease_columns(pg),
            );
            let query = sqlx::query(&sql)
                .bind(name)
                .bind(&candidate.holder)
                .bind(&candidate.host)
                .bind(i64::from(candidate.pid));
            let query = bind_ttl!(query, ttl);
            let row = query.bind(dead_holder.unwrap_or("")).fetch_optional(pool).await?;
            row.as_ref().map(lease_record).transpose()?
        });
        if let Some(record) = won {
            return Ok(Bid::Won(record));
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
        self.counters.statement();
        with_pool!(self, |pool, pg| {
            let ttl = ttl_arg(pg, ttl);
            let sql = format!(
                "UPDATE leases SET renewed_at = {now}, expires_at = {later} \
                 WHERE name = $1 AND holder = $2 AND epoch = $3 RETURNING {columns}",
                now = now_sql(pg),
                later = later_sql(pg, 4),
                columns = lease_columns(pg),
            );
            let query = sqlx::query(&sql).bind(&fence.lease).bind(&fence.holder).bind(fence.epoch);
            let row = bind_ttl!(query, ttl).fetch_optional(pool).await?;
            row.as_ref().map(lease_record).transpose()
        })
    }

    /// Ends `fence`'s term now, so that a standby's next bid wins. False when it had already
    /// ended.
    pub async fn resign_lease(&self, fence: &Fence) -> Result<bool, StoreError> {
        self.counters.statement();
        let affected = with_pool!(self, |pool, pg| {
            let sql = format!(
                "UPDATE leases SET expires_at = {now} \
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > {now}",
                now = now_sql(pg)
            );
            sqlx::query(&sql)
                .bind(&fence.lease)
                .bind(&fence.holder)
                .bind(fence.epoch)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected > 0)
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
        let c = &*self.counters;
        with_pool!(self, |pool, pg| {
            let mut tx = Dialect::begin_fenced(pool, c).await?;
            let ttl = ttl_arg(pg, ttl);
            let sql = format!(
                "INSERT INTO group_locks AS g (account, region, group_name, holder, host, pid, purpose, \
                   acquired_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, {now}, {later}) \
                 ON CONFLICT (account, region, group_name) DO UPDATE SET holder = excluded.holder, \
                   host = excluded.host, pid = excluded.pid, purpose = excluded.purpose, \
                   acquired_at = excluded.acquired_at, expires_at = excluded.expires_at \
                 WHERE g.expires_at <= {now} \
                 RETURNING holder",
                now = now_sql(pg),
                later = later_sql(pg, 8),
            );
            for group in groups {
                c.statement();
                let query = sqlx::query(&sql)
                    .bind(account)
                    .bind(region)
                    .bind(*group)
                    .bind(&holder.holder)
                    .bind(&holder.host)
                    .bind(i64::from(holder.pid))
                    .bind(purpose);
                let taken = bind_ttl!(query, ttl).fetch_optional(&mut *tx).await?;
                if taken.is_none() {
                    c.statement();
                    let sql = format!(
                        "SELECT host, pid, purpose, {remaining} AS expires_in_ms FROM group_locks \
                         WHERE account = $1 AND region = $2 AND group_name = $3",
                        remaining = remaining_sql(pg, "expires_at")
                    );
                    let row =
                        sqlx::query(&sql).bind(account).bind(region).bind(*group).fetch_one(&mut *tx).await?;
                    let pid = row.int("pid")?;
                    let held = GroupLockHolder {
                        group: group.to_string(),
                        host: row.text("host")?,
                        pid: u32::try_from(pid).unwrap_or(0),
                        purpose: row.text("purpose")?,
                        expires_in_ms: row.int("expires_in_ms")?,
                    };
                    tx.rollback().await?;
                    return Ok(Err(held));
                }
            }
            c.statement();
            tx.commit().await?;
            c.committed();
            Ok(Ok(()))
        })
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
        let mut held = 0;
        for group in groups {
            self.counters.statement();
            held += with_pool!(self, |pool, pg| {
                let ttl = ttl_arg(pg, ttl);
                let sql = format!(
                    "UPDATE group_locks SET expires_at = {later} \
                     WHERE account = $1 AND region = $2 AND group_name = $3 AND holder = $4",
                    later = later_sql(pg, 5)
                );
                let query = sqlx::query(&sql).bind(account).bind(region).bind(*group).bind(holder);
                bind_ttl!(query, ttl).execute(pool).await?.rows_affected()
            }) as usize;
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
            self.counters.statement();
            with_pool!(self, |pool, _pg| {
                sqlx::query(
                "DELETE FROM group_locks WHERE account = $1 AND region = $2 AND group_name = $3 AND holder = $4",
            )
            .bind(account)
            .bind(region)
            .bind(*group)
            .bind(holder)
            .execute(pool)
            .await?
            .rows_affected()
            });
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
