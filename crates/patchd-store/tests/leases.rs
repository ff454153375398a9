//! Leadership leases, fenced writes and group locks, each case on SQLite and on PostgreSQL (see
//! `common`): one bidder wins, epochs grow at every takeover, a deposed holder can neither renew
//! nor write, and group locks exclude until released or expired.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::TestDb;
use patchd_config::Operation;
use patchd_store::*;

on_both_backends!(
    one_bidder_wins_and_the_epoch_grows_at_every_takeover,
    an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew,
    competing_bidders_elect_exactly_one,
    fenced_writes_are_refused_once_the_lease_moved_on,
    a_batch_intent_needs_an_unexpired_lease,
    group_locks_exclude_until_released_or_expired,
);

const TTL: Duration = Duration::from_secs(30);

fn candidate(name: &str) -> Candidate {
    Candidate { holder: format!("holder-{name}"), host: format!("host-{name}"), pid: 100 }
}

fn fence_of(lease: &LeaseRecord) -> Fence {
    Fence {
        lease: lease.name.clone(),
        holder: lease.holder.clone(),
        epoch: lease.epoch,
        term: TermClock::default(),
    }
}

async fn won(store: &Store, who: &Candidate, ttl: Duration) -> LeaseRecord {
    match store.bid_for_lease(SCHEDULER_LEASE, who, ttl, None).await.unwrap() {
        Bid::Won(lease) => lease,
        Bid::Held(lease) => panic!("{} expected to win, {} holds it", who.holder, lease.describe()),
    }
}

async fn one_bidder_wins_and_the_epoch_grows_at_every_takeover(db: TestDb) {
    let store = db.open().await;
    let (a, b) = (candidate("a"), candidate("b"));
    let first = won(&store, &a, TTL).await;
    assert_eq!((first.epoch, first.live), (1, true));
    assert!(first.expires_in_ms > 25_000 && first.expires_in_ms <= 30_000, "{first:?}");
    match store.bid_for_lease(SCHEDULER_LEASE, &b, TTL, None).await.unwrap() {
        Bid::Held(held) => assert_eq!((held.holder.as_str(), held.epoch), ("holder-a", 1)),
        Bid::Won(lease) => panic!("b took a live lease: {lease:?}"),
    }
    let renewed = store.renew_lease(&fence_of(&first), TTL).await.unwrap().expect("the holder renews");
    assert_eq!(renewed.epoch, 1, "a renewal keeps the term");
    assert!(store.resign_lease(&fence_of(&first)).await.unwrap());
    assert!(!store.resign_lease(&fence_of(&first)).await.unwrap(), "resigning twice changes nothing");
    let second = won(&store, &b, TTL).await;
    assert_eq!(second.epoch, 2);
    assert_eq!(store.renew_lease(&fence_of(&first), TTL).await.unwrap(), None, "a's term is over");
    assert!(!store.resign_lease(&fence_of(&first)).await.unwrap(), "a cannot end b's term");
    assert!(store.lease(SCHEDULER_LEASE).await.unwrap().unwrap().live);
    // A holder that let its term lapse and bids again starts a new term.
    store.resign_lease(&fence_of(&second)).await.unwrap();
    assert_eq!(won(&store, &b, TTL).await.epoch, 3);
}

async fn an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew(db: TestDb) {
    let store = db.open().await;
    let first = won(&store, &candidate("a"), Duration::from_millis(300)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lapsed = store.lease(SCHEDULER_LEASE).await.unwrap().unwrap();
    assert!(!lapsed.live && lapsed.expires_in_ms < 0, "{lapsed:?}");
    let second = won(&store, &candidate("b"), TTL).await;
    assert_eq!(second.epoch, first.epoch + 1);
    assert_eq!(store.renew_lease(&fence_of(&first), TTL).await.unwrap(), None);
    // A dead holder named by the bidder is replaced at once, live lease or not.
    let third = store.bid_for_lease(SCHEDULER_LEASE, &candidate("c"), TTL, Some("holder-b")).await.unwrap();
    assert!(matches!(&third, Bid::Won(l) if l.epoch == 3 && l.holder == "holder-c"), "{third:?}");
    let wrong = store.bid_for_lease(SCHEDULER_LEASE, &candidate("d"), TTL, Some("holder-b")).await.unwrap();
    assert!(
        matches!(&wrong, Bid::Held(l) if l.holder == "holder-c"),
        "only the named holder is replaced: {wrong:?}"
    );
}

async fn competing_bidders_elect_exactly_one(db: TestDb) {
    let store = db.open().await;
    let bids: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store.bid_for_lease(SCHEDULER_LEASE, &candidate(&i.to_string()), TTL, None).await.unwrap()
            })
        })
        .collect();
    let mut winners = Vec::new();
    for bid in bids {
        if let Bid::Won(lease) = bid.await.unwrap() {
            winners.push(lease);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:#?}");
    assert_eq!(winners[0].epoch, 1);
    // Competing renewals by non-holders never extend the holder's term.
    let intruder = Fence { holder: "holder-x".into(), ..fence_of(&winners[0]) };
    assert_eq!(store.renew_lease(&intruder, Duration::from_secs(3600)).await.unwrap(), None);
    let lease = store.lease(SCHEDULER_LEASE).await.unwrap().unwrap();
    assert!(lease.expires_in_ms <= 30_000, "{lease:?}");
}

async fn run_in(store: &Store, window: &str) -> Result<WindowRunId, StoreError> {
    store
        .record_window_run(&NewWindowRun {
            window,
            scheduled_start: Utc::now(),
            account: "111122223333",
            region: "eu-west-1",
            started_at: Some(Utc::now()),
            status: WindowRunStatus::Running,
        })
        .await
}

const INSTANCE: &str = "i-0123456789abcdef0";

/// A task of `run` with a one-batch rollout planned for [`INSTANCE`], written through `store`.
async fn planned_task(store: &Store, run: WindowRunId, name: &str, operation: Operation) -> WindowTaskId {
    let observation = WindowTaskObservation {
        name,
        operation,
        command_id: None,
        status: CommandStatus::InProgress,
        started_at: None,
        ended_at: None,
    };
    let task = store.record_window_task(run, &observation).await.unwrap();
    let ids = vec![INSTANCE.to_string()];
    let comment = format!("patchd:run:{name}:1");
    let batches = [NewBatch { comment: &comment, instance_ids: &ids, wave: 1 }];
    let plan = NewRollout {
        run_key: "run",
        snapshot_id: "snap",
        max_concurrency: 1,
        max_errors: 0,
        planned_at: Utc::now(),
        batches: &batches,
    };
    store.plan_rollout(task, &plan).await.unwrap();
    task
}

fn audit_entry() -> AuditEntry<'static> {
    AuditEntry {
        at: Utc::now(),
        actor: "daemon",
        action: "window-run-start",
        target: Some("w"),
        command_id: None,
        request_id: None,
        details: None,
    }
}

async fn fenced_writes_are_refused_once_the_lease_moved_on(db: TestDb) {
    let store = db.open().await;
    let a = won(&store, &candidate("a"), TTL).await;
    let as_a = store.fenced(fence_of(&a));
    let run = run_in(&as_a, "w").await.expect("the leader records its run");
    let task = planned_task(&as_a, run, "install", Operation::Install).await;
    as_a.append_audit(&audit_entry()).await.unwrap();

    store.resign_lease(&fence_of(&a)).await.unwrap();
    won(&store, &candidate("b"), TTL).await;
    let audit_before = store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap().len();
    let refused: Vec<(&str, StoreError)> = vec![
        ("record_window_run", run_in(&as_a, "other").await.unwrap_err()),
        (
            "update_window_run",
            as_a.update_window_run(
                run,
                &WindowRunUpdate {
                    status: WindowRunStatus::Failed,
                    started_at: None,
                    ended_at: Some(Utc::now()),
                    sync_unread: None,
                },
            )
            .await
            .unwrap_err(),
        ),
        ("append_audit", as_a.append_audit(&audit_entry()).await.unwrap_err()),
        ("mark_batch_sending", as_a.mark_batch_sending(task, 1, Utc::now()).await.unwrap_err()),
        (
            "record_invocations",
            as_a.record_invocations(
                task,
                Utc::now(),
                &[InvocationObservation {
                    instance: InstanceKey {
                        account: "111122223333",
                        region: "eu-west-1",
                        instance_id: INSTANCE,
                    },
                    command_id: "c-1",
                    status: CommandStatus::InProgress,
                    status_details: None,
                    requested_at: None,
                    started_at: None,
                    ended_at: None,
                }],
            )
            .await
            .unwrap_err(),
        ),
    ];
    for (what, error) in &refused {
        assert!(error.is_fenced(), "{what}: {error}");
        assert!(error.to_string().contains("host-b (pid 100), epoch 2"), "{what}: {error}");
    }
    // Nothing of it landed.
    let runs = store.window_runs(&WindowRunQuery::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, WindowRunStatus::Running);
    assert_eq!(
        store.audit_since(Utc::now() - chrono::Duration::hours(1), None).await.unwrap().len(),
        audit_before
    );
    assert_eq!(store.rollout_batch(task, 1).await.unwrap().unwrap().state, BatchState::Planned);
    assert!(store.invocations(task).await.unwrap().is_empty());
    // The unfenced store (reports, the new leader's reads) is unaffected.
    run_in(&store, "manual:scan:web").await.expect("unfenced writes go on");
}

async fn a_batch_intent_needs_an_unexpired_lease(db: TestDb) {
    let store = db.open().await;
    let a = won(&store, &candidate("a"), Duration::from_millis(300)).await;
    let as_a = store.fenced(fence_of(&a));
    let run = run_in(&as_a, "w").await.unwrap();
    let task = planned_task(&as_a, run, "scan", Operation::Scan).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Lapsed, nobody took over: observations are still a's to record, a new batch is not.
    let error = as_a.mark_batch_sending(task, 1, Utc::now()).await.unwrap_err();
    assert!(error.is_fenced() && error.to_string().contains("expired"), "{error}");
    as_a.append_audit(&audit_entry()).await.expect("the term is still a's");
    // Renewed, it may send again.
    store.renew_lease(&fence_of(&a), TTL).await.unwrap().expect("nobody took over");
    assert_eq!(as_a.mark_batch_sending(task, 1, Utc::now()).await.unwrap().state, BatchState::Sending);
}

async fn group_locks_exclude_until_released_or_expired(db: TestDb) {
    let store = db.open().await;
    let (a, b) = (candidate("a"), candidate("b"));
    let lock = |who: &Candidate, groups: &'static [&'static str], ttl| {
        let store = store.clone();
        let who = who.clone();
        async move {
            store.try_lock_groups("111122223333", "eu-west-1", groups, &who, "window w", ttl).await.unwrap()
        }
    };
    lock(&a, &["web", "db"], TTL).await.expect("free groups are taken");
    let held = lock(&b, &["api", "db"], TTL).await.expect_err("db is a's");
    assert_eq!(
        (held.group.as_str(), held.host.as_str(), held.purpose.as_str()),
        ("db", "host-a", "window w")
    );
    assert!(held.expires_in_ms > 0);
    // All or none: b's refused attempt did not keep `api`.
    lock(&a, &["api"], TTL).await.expect("api stayed free");
    // Another region's db is another lock.
    store.try_lock_groups("111122223333", "us-east-1", &["db"], &b, "x", TTL).await.unwrap().unwrap();
    assert_eq!(
        store.renew_group_locks("111122223333", "eu-west-1", &["web", "db"], "holder-a", TTL).await.unwrap(),
        2
    );
    store.release_group_locks("111122223333", "eu-west-1", &["web", "db", "api"], "holder-a").await.unwrap();
    lock(&b, &["db"], Duration::from_millis(300)).await.expect("released");
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock(&a, &["db"], TTL).await.expect("expired locks are free");
    assert_eq!(
        store.renew_group_locks("111122223333", "eu-west-1", &["db"], "holder-b", TTL).await.unwrap(),
        0,
        "a lock taken over is not renewed by its old holder"
    );
}
