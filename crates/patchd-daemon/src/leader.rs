//! Leadership among the `patchd run` processes that share one database.
//!
//! Exactly one of them leads: it fires windows, resumes interrupted runs, catches up missed
//! occurrences, reconciles baselines, syncs and publishes events. The others stand by: they
//! load and reload the configuration, serve HTTP, and bid for the lease every renewal
//! interval. The lease lives in the database ([`patchd_store::Store::bid_for_lease`]), with its
//! expiry computed by the database's clock and an epoch that grows at every takeover.
//!
//! [`Campaign::run`] is the loop that bids, renews and resigns; it publishes the [`Status`] on a
//! watch channel the scheduler and the HTTP endpoint read. What it does at each turn is
//! decided by [`next_step`], a pure function of the role, the outcome of the last lease call
//! and the clock, tested with tables.
//!
//! A leader knows its term is surely current until the instant it *sent* its latest successful
//! renewal plus the ttl ([`TermClock`]): the database's expiry is computed later than that,
//! whatever the two clocks read. When that instant passes without a renewal (the database is
//! unreachable, the process was paused), the leader steps down on its own, before anyone can
//! have taken over.
//!
//! On SQLite there is no standby: the database is on one host, and a second daemon is refused
//! at start with the holder named ([`LeaderError::Held`]). A holder on this host whose process
//! no longer exists (a crash, a SIGKILL) is replaced at once rather than after its ttl.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use patchd_config::LeaseTiming;
use patchd_store::{Bid, Candidate, Fence, LeaseRecord, Store, StoreError, TermClock, SCHEDULER_LEASE};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// What this process is, as the scheduler and the HTTP endpoint see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No lease call has answered yet.
    Starting,
    /// Somebody else leads (`leader`, when the database could say who), or nobody does yet.
    Standby { leader: Option<LeaseRecord> },
    /// This process leads, under `epoch`.
    Leader { epoch: i64 },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby { .. } => "standby",
            Role::Leader { .. } => "leader",
        }
    }

    pub fn epoch(&self) -> Option<i64> {
        match self {
            Role::Leader { epoch } => Some(*epoch),
            Role::Standby { leader } => leader.as_ref().map(|l| l.epoch),
            Role::Starting => None,
        }
    }
}

/// The role and what the HTTP endpoint shows about leadership.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: Role,
    /// This process, as it bids.
    pub me: Candidate,
    /// The lease as last read or won (holder, epoch, expiry).
    pub lease: Option<LeaseRecord>,
    /// While leading: the fence every run write of this term carries.
    pub fence: Option<Fence>,
    /// Why the latest term ended: `taken-over`, `lease-expired` or `stopped`.
    pub ended: Option<&'static str>,
}

/// Counters for metrics and benchmarks. Shared by clones.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Leadership gained or lost by this process.
    pub changes: Arc<AtomicU64>,
    /// Lease statements sent (bids, renewals, resignations).
    pub queries: Arc<AtomicU64>,
}

impl Counters {
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }
}

/// The handle the rest of the daemon holds.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub status: watch::Receiver<Status>,
    pub counters: Counters,
}

impl Leadership {
    /// A leadership that is always this process's, under no fence: for tests and tools that run
    /// the scheduler alone.
    pub fn sole(me: Candidate) -> Leadership {
        let status = Status { role: Role::Leader { epoch: 0 }, me, lease: None, fence: None, ended: None };
        let (_tx, rx) = watch::channel(status);
        // The sender is dropped: the status never changes, and `changed()` reports closed.
        Leadership { status: rx, counters: Counters::default() }
    }

    pub fn current(&self) -> Status {
        self.status.borrow().clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "another patchd run already uses this SQLite database: {holder}, lease expiring in {expires_in}s; \
         SQLite serves one daemon on one host (stop the other one, or use PostgreSQL to run several)"
    )]
    Held { holder: String, expires_in: i64 },
    #[error("the lease could not be read or taken: {0}")]
    Store(#[from] StoreError),
}

/// What the loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bid after this pause (standby).
    Bid(Duration),
    /// Renew after this pause (leader).
    Renew(Duration),
    /// The term surely ended by this host's clock without a successful renewal: step down now.
    StepDown,
}

/// The outcome of the last lease call, as [`next_step`] takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Won a bid, or renewed.
    Holding,
    /// Lost a bid, or a renewal found the lease taken.
    NotHolding,
    /// The call failed or timed out.
    Failed,
}

/// The next step, given whether this process leads, the last answer, how long its term surely
/// lasts (zero when not leading) and the timing. Pure.
///
/// - A standby bids every `renew_every`, whatever the last answer was.
/// - A leader renews every `renew_every`; after a failed renewal it retries sooner (a third of
///   the interval) while the term lasts, and never plans a renewal beyond the term's end: at
///   that end it steps down.
pub fn next_step(leading: bool, last: Answer, term_left: Duration, timing: &LeaseTiming) -> Step {
    if !leading {
        return Step::Bid(timing.renew_every);
    }
    if last == Answer::NotHolding || term_left.is_zero() {
        return Step::StepDown;
    }
    let pause = match last {
        Answer::Failed => timing.renew_every / 3,
        _ => timing.renew_every,
    };
    // Renew early enough that the renewal itself (bounded by its timeout) ends within the term.
    let latest = term_left.saturating_sub(call_timeout(timing));
    Step::Renew(pause.min(latest).max(timing.renew_every / 50))
}

/// How long one lease call may take: a slower answer counts as a failure.
pub fn call_timeout(timing: &LeaseTiming) -> Duration {
    (timing.renew_every / 2).max(Duration::from_millis(200))
}

/// Bids once. On SQLite (`single_host`) the bid must win, or the start is refused naming the
/// holder; a holder on this host whose process is gone is replaced at once.
pub async fn start(
    store: &Store,
    me: Candidate,
    timing: LeaseTiming,
    single_host: bool,
) -> Result<(Leadership, Campaign), LeaderError> {
    let counters = Counters::default();
    let sent = Instant::now();
    counters.queries.fetch_add(1, Ordering::Relaxed);
    let mut bid = store.bid_for_lease(SCHEDULER_LEASE, &me, timing.ttl, None).await?;
    if single_host {
        if let Bid::Held(held) = &bid {
            if held.host == me.host && !process_exists(held.pid) {
                warn!(holder = %held.describe(), "the previous holder of this database's lease is gone; taking over at once");
                counters.queries.fetch_add(1, Ordering::Relaxed);
                bid = store.bid_for_lease(SCHEDULER_LEASE, &me, timing.ttl, Some(&held.holder)).await?;
            }
        }
        if let Bid::Held(held) = &bid {
            return Err(LeaderError::Held {
                holder: held.describe(),
                expires_in: held.expires_in_ms.max(0) / 1000,
            });
        }
    }
    let (status, term) = match bid {
        Bid::Won(lease) => won(&me, lease, sent + timing.ttl),
        Bid::Held(lease) => (
            Status {
                role: Role::Standby { leader: Some(lease.clone()) },
                me: me.clone(),
                lease: Some(lease),
                fence: None,
                ended: None,
            },
            None,
        ),
    };
    if let Role::Leader { epoch } = status.role {
        counters.changes.fetch_add(1, Ordering::Relaxed);
        info!(epoch, host = %me.host, pid = me.pid, "leadership gained");
    } else if let Some(lease) = &status.lease {
        info!(leader = %lease.describe(), "standing by: another patchd leads");
    }
    let (tx, rx) = watch::channel(status);
    let leadership = Leadership { status: rx, counters: counters.clone() };
    Ok((leadership, Campaign { store: store.clone(), me, timing, tx, term, counters }))
}

fn won(me: &Candidate, lease: LeaseRecord, surely_until: Instant) -> (Status, Option<TermClock>) {
    let term = TermClock::until(surely_until);
    let fence = Fence {
        lease: SCHEDULER_LEASE.to_string(),
        holder: me.holder.clone(),
        epoch: lease.epoch,
        term: term.clone(),
    };
    let status = Status {
        role: Role::Leader { epoch: lease.epoch },
        me: me.clone(),
        lease: Some(lease),
        fence: Some(fence),
        ended: None,
    };
    (status, Some(term))
}

/// The bidding and renewing loop, started by [`start`] and run by [`Campaign::run`].
#[derive(Debug)]
pub struct Campaign {
    store: Store,
    me: Candidate,
    timing: LeaseTiming,
    tx: watch::Sender<Status>,
    /// While leading.
    term: Option<TermClock>,
    counters: Counters,
}

impl Campaign {
    /// Bids and renews until `stop` turns true, then resigns a lease it holds so that a standby
    /// takes over at its next bid.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut last = if self.term.is_some() { Answer::Holding } else { Answer::NotHolding };
        loop {
            let left = self.term.as_ref().map_or(Duration::ZERO, TermClock::remaining);
            let step = next_step(self.term.is_some(), last, left, &self.timing);
            let pause = match step {
                Step::Bid(p) | Step::Renew(p) => p,
                Step::StepDown => {
                    self.step_down(last);
                    last = Answer::NotHolding;
                    continue;
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            last = match step {
                Step::Renew(_) => self.renew().await,
                _ => self.bid().await,
            };
        }
        self.resign().await;
    }

    async fn renew(&mut self) -> Answer {
        let Some(fence) = self.tx.borrow().fence.clone() else { return Answer::NotHolding };
        let sent = Instant::now();
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let call = self.store.renew_lease(&fence, self.timing.ttl);
        match tokio::time::timeout(call_timeout(&self.timing), call).await {
            Ok(Ok(Some(lease))) => {
                fence.term.extend_to(sent + self.timing.ttl);
                self.tx.send_modify(|s| s.lease = Some(lease));
                Answer::Holding
            }
            Ok(Ok(None)) => Answer::NotHolding,
            Ok(Err(e)) => {
                warn!(error = %e, term_left_ms = fence.term.remaining().as_millis() as u64, "lease renewal failed");
                Answer::Failed
            }
            Err(_) => {
                warn!(term_left_ms = fence.term.remaining().as_millis() as u64, "lease renewal timed out");
                Answer::Failed
            }
        }
    }

    async fn bid(&mut self) -> Answer {
        let sent = Instant::now();
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        let call = self.store.bid_for_lease(SCHEDULER_LEASE, &self.me, self.timing.ttl, None);
        match tokio::time::timeout(call_timeout(&self.timing), call).await {
            Ok(Ok(Bid::Won(lease))) => {
                let (status, term) = won(&self.me, lease, sent + self.timing.ttl);
                let epoch = status.role.epoch().unwrap_or_default();
                self.term = term;
                self.tx.send_replace(status);
                self.counters.changes.fetch_add(1, Ordering::Relaxed);
                info!(epoch, host = %self.me.host, pid = self.me.pid, "leadership gained");
                Answer::Holding
            }
            Ok(Ok(Bid::Held(lease))) => {
                let changed = self.tx.borrow().lease.as_ref().map(|l| (&l.holder, l.epoch))
                    != Some((&lease.holder, lease.epoch));
                if changed {
                    info!(leader = %lease.describe(), live = lease.live, "standing by: another patchd leads");
                }
                self.tx.send_modify(|s| {
                    s.role = Role::Standby { leader: Some(lease.clone()) };
                    s.lease = Some(lease);
                });
                Answer::NotHolding
            }
            Ok(Err(e)) => {
                warn!(error = %e, "bid for the lease failed");
                Answer::Failed
            }
            Err(_) => {
                warn!("bid for the lease timed out");
                Answer::Failed
            }
        }
    }

    fn step_down(&mut self, last: Answer) {
        let Some(term) = self.term.take() else { return };
        term.end();
        let epoch = self.tx.borrow().role.epoch();
        let (ended, reason) = if last == Answer::NotHolding {
            ("taken-over", "another patchd took the lease over")
        } else {
            ("lease-expired", "the lease could not be renewed before its term ended")
        };
        error!(epoch, reason, "leadership lost: no further batch is released; standing by");
        self.counters.changes.fetch_add(1, Ordering::Relaxed);
        self.tx.send_modify(|s| {
            s.role = Role::Standby { leader: None };
            s.fence = None;
            s.ended = Some(ended);
        });
    }

    async fn resign(&mut self) {
        let Some(term) = self.term.take() else { return };
        term.end();
        let fence = self.tx.borrow().fence.clone();
        self.tx.send_modify(|s| {
            s.role = Role::Standby { leader: None };
            s.fence = None;
            s.ended = Some("stopped");
        });
        let Some(fence) = fence else { return };
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(call_timeout(&self.timing), self.store.resign_lease(&fence)).await {
            Ok(Ok(true)) => {
                info!(epoch = fence.epoch, "leadership resigned: a standby takes over at its next bid")
            }
            Ok(Ok(false)) => info!(epoch = fence.epoch, "leadership had already passed on"),
            Ok(Err(e)) => {
                warn!(error = %e, "could not resign the lease; a standby takes over when it expires")
            }
            Err(_) => warn!("resigning the lease timed out; a standby takes over when it expires"),
        }
    }
}

/// This process as it bids: a fresh holder id, the host name and the pid.
pub fn this_process() -> Candidate {
    Candidate { holder: uuid::Uuid::new_v4().to_string(), host: hostname(), pid: std::process::id() }
}

/// This machine's name: what the lease and group locks record of their holder, and the role
/// session name `patchd-<host>`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// Whether a process with this pid exists on this host (Linux: `/proc/<pid>`).
fn process_exists(pid: u32) -> bool {
    pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_step_follows_role_answer_and_term() {
        let timing = LeaseTiming { ttl: Duration::from_secs(15), renew_every: Duration::from_secs(5) };
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (leading, last answer, term left) -> step
        let table = [
            (false, Answer::NotHolding, s(0), Step::Bid(s(5))),
            (false, Answer::Failed, s(0), Step::Bid(s(5))),
            (true, Answer::Holding, s(15), Step::Renew(s(5))),
            // A failed renewal is retried sooner while the term lasts...
            (true, Answer::Failed, s(10), Step::Renew(s(5) / 3)),
            // ...and never later than the term's end minus one call's timeout.
            (true, Answer::Holding, s(3), Step::Renew(ms(500))),
            (true, Answer::Failed, ms(2600), Step::Renew(ms(100))),
            // Close to the end, retries come at least every fiftieth of the interval.
            (true, Answer::Failed, ms(2000), Step::Renew(ms(100))),
            (true, Answer::Failed, ms(100), Step::Renew(ms(100))),
            // The lease is somebody else's, or the term is over: step down.
            (true, Answer::NotHolding, s(15), Step::StepDown),
            (true, Answer::Failed, s(0), Step::StepDown),
        ];
        for (leading, last, left, want) in table {
            let got = next_step(leading, last, left, &timing);
            assert_eq!(got, want, "leading={leading} last={last:?} left={left:?}");
        }
    }
}
