//! Rollout plans and batch states, each case run on SQLite and on PostgreSQL (see `common`).

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestDb;
use patchd_config::Operation;
use patchd_store::*;

on_both_backends!(
    a_plan_is_recorded_once_and_read_back,
    batches_move_forward_only_and_never_get_a_second_command,
    a_rejected_batch_keeps_its_reason,
    comments_and_command_ids_are_unique_across_rollouts,
);

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("i-{prefix}{i:016x}")).collect()
}

async fn task(store: &Store, window: &str, name: &str) -> WindowTaskId {
    let run = store
        .record_window_run(&NewWindowRun {
            window,
            scheduled_start: t(0),
            account: "111122223333",
            region: "eu-west-1",
            started_at: Some(t(0)),
            status: WindowRunStatus::Running,
        })
        .await
        .unwrap();
    store
        .record_window_task(
            run,
            &WindowTaskObservation {
                name,
                operation: Operation::Install,
                command_id: None,
                status: CommandStatus::InProgress,
                started_at: Some(t(0)),
                ended_at: None,
            },
        )
        .await
        .unwrap()
}

fn rollout<'a>(run_key: &'a str, batches: &'a [NewBatch<'a>]) -> NewRollout<'a> {
    NewRollout {
        run_key,
        snapshot_id: "7d3c5c1e-64a4-4c3f-9a43-1d2f7c1f2a10",
        max_concurrency: 100,
        max_errors: 5,
        planned_at: t(1),
        batches,
    }
}

fn audit<'a>(command_id: &'a str, details: &'a serde_json::Value) -> AuditEntry<'a> {
    AuditEntry {
        at: t(2),
        actor: "daemon",
        action: "send-command",
        target: Some("window:prod-web"),
        command_id: Some(command_id),
        request_id: Some("req-1"),
        details: Some(details),
    }
}

async fn a_plan_is_recorded_once_and_read_back(db: TestDb) {
    let store = db.open().await;
    let task_id = task(&store, "prod-web", "install").await;
    assert_eq!(store.rollout(task_id).await.unwrap(), None);
    assert!(store.rollout_batches(task_id).await.unwrap().is_empty());

    let first = ids("a", 50);
    let second = ids("b", 7);
    let batches = [
        NewBatch { comment: "patchd:run-1:install:1", instance_ids: &first, wave: 1 },
        NewBatch { comment: "patchd:run-1:install:2", instance_ids: &second, wave: 1 },
    ];
    let plan = store.plan_rollout(task_id, &rollout("run-1", &batches)).await.unwrap();
    assert_eq!(plan.task_id, task_id);
    assert_eq!(plan.run_key, "run-1");
    assert_eq!(plan.snapshot_id, "7d3c5c1e-64a4-4c3f-9a43-1d2f7c1f2a10");
    assert_eq!((plan.max_concurrency, plan.max_errors), (100, 5));
    assert_eq!(plan.planned_at, t(1));
    assert_eq!(plan.instance_count(), 57);
    assert_eq!(plan.batches.len(), 2);
    assert_eq!(plan.batches[0].number, 1);
    assert_eq!(plan.batches[0].instance_ids, first, "instance order is kept");
    assert_eq!(plan.batches[1].number, 2);
    assert_eq!(plan.batches[1].comment, "patchd:run-1:install:2");
    for batch in &plan.batches {
        assert_eq!(batch.state, BatchState::Planned);
        assert_eq!((batch.command_id.as_deref(), batch.sending_at, batch.sent_at), (None, None, None));
    }

    // A restart plans again, maybe with other targets: the first plan stands.
    let other = ids("c", 3);
    let replan = [NewBatch { comment: "patchd:run-1:install:1", instance_ids: &other, wave: 1 }];
    let again = store.plan_rollout(task_id, &rollout("run-1", &replan)).await.unwrap();
    assert_eq!(again, plan);
    assert_eq!(store.rollout_batches(task_id).await.unwrap(), plan.batches);
    assert_eq!(db.count("SELECT count(*) FROM rollout_batches").await, 2);

    // Bad plans and unknown tasks are refused without writing anything.
    let empty = ids("d", 0);
    let bad = [NewBatch { comment: "x", instance_ids: &empty, wave: 1 }];
    let other_task = task(&store, "prod-web", "scan").await;
    let err = store.plan_rollout(other_task, &rollout("run-1", &bad)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    let twice = [
        NewBatch { comment: "y1", instance_ids: &first, wave: 1 },
        NewBatch { comment: "y2", instance_ids: &first[..1], wave: 1 },
    ];
    let err = store.plan_rollout(other_task, &rollout("run-1", &twice)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "an instance in two batches: {err:?}");
    let nowhere = WindowTaskId::from(999_999);
    let fine = [NewBatch { comment: "z", instance_ids: &other, wave: 1 }];
    let err = store.plan_rollout(nowhere, &rollout("run-1", &fine)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { what: "window task", .. }), "{err:?}");
    assert_eq!(db.count("SELECT count(*) FROM rollouts").await, 1);

    // A rollout of nothing is a plan too (resuming it finds nothing to do).
    let none = store.plan_rollout(other_task, &rollout("run-1", &[])).await.unwrap();
    assert!(none.batches.is_empty());
}

async fn batches_move_forward_only_and_never_get_a_second_command(db: TestDb) {
    let store = db.open().await;
    let task_id = task(&store, "prod-web", "install").await;
    let first = ids("a", 2);
    let second = ids("b", 2);
    let batches = [
        NewBatch { comment: "patchd:run-2:install:1", instance_ids: &first, wave: 1 },
        NewBatch { comment: "patchd:run-2:install:2", instance_ids: &second, wave: 1 },
    ];
    store.plan_rollout(task_id, &rollout("run-2", &batches)).await.unwrap();
    let details = serde_json::json!({"batch": 1});

    // The intent must come first.
    let err = store.mark_batch_sent(task_id, 1, "cmd-1", t(2), Some(&audit("cmd-1", &details))).await;
    assert!(matches!(err, Err(StoreError::InvalidInput(_))), "{err:?}");
    assert_eq!(db.count("SELECT count(*) FROM audit_log").await, 0, "a refused send writes no audit");

    let sending = store.mark_batch_sending(task_id, 1, t(2)).await.unwrap();
    assert_eq!((sending.state, sending.sending_at), (BatchState::Sending, Some(t(2))));
    // A retry after a crash records its intent again; the first attempt's time stays.
    let retry = store.mark_batch_sending(task_id, 1, t(9)).await.unwrap();
    assert_eq!((retry.state, retry.sending_at), (BatchState::Sending, Some(t(2))));

    assert!(store.mark_batch_sent(task_id, 1, "cmd-1", t(3), Some(&audit("cmd-1", &details))).await.unwrap());
    let sent = store.rollout_batch(task_id, 1).await.unwrap().unwrap();
    assert_eq!(sent.state, BatchState::Sent);
    assert_eq!(sent.command_id.as_deref(), Some("cmd-1"));
    assert_eq!(sent.sent_at, Some(t(3)));
    let log = store.audit_since(t(0), None).await.unwrap();
    assert_eq!(log.len(), 1, "the send and its audit entry are written together");
    assert_eq!(log[0].command_id.as_deref(), Some("cmd-1"));
    assert_eq!(log[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(log[0].details.as_ref(), Some(&details));

    // Recording the same command again (a resumed run finding it by comment) is a no-op.
    assert!(!store
        .mark_batch_sent(task_id, 1, "cmd-1", t(4), Some(&audit("cmd-1", &details)))
        .await
        .unwrap());
    assert_eq!(store.audit_since(t(0), None).await.unwrap().len(), 1, "no second audit entry");
    assert_eq!(store.rollout_batch(task_id, 1).await.unwrap().unwrap().sent_at, Some(t(3)));

    // A sent batch never gets another command, and is never marked for sending again.
    let err = store.mark_batch_sent(task_id, 1, "cmd-other", t(5), None).await.unwrap_err();
    assert!(err.to_string().contains("cmd-1"), "{err}");
    let err = store.mark_batch_sending(task_id, 1, t(5)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("never sent twice"), "{err}");
    let err = store.mark_batch_rejected(task_id, 1, "nope").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");

    // Unknown batches.
    assert_eq!(store.rollout_batch(task_id, 3).await.unwrap(), None);
    assert!(matches!(store.mark_batch_sending(task_id, 3, t(5)).await, Err(StoreError::InvalidInput(_))));
    assert!(matches!(
        store.mark_batch_sent(task_id, 3, "c", t(5), None).await,
        Err(StoreError::InvalidInput(_))
    ));

    // The other batch is untouched, and its own command can be recorded without an audit entry.
    let plan = store.rollout(task_id).await.unwrap().unwrap();
    assert_eq!(plan.batches[1].state, BatchState::Planned);
    store.mark_batch_sending(task_id, 2, t(6)).await.unwrap();
    assert!(store.mark_batch_sent(task_id, 2, "cmd-2", t(6), None).await.unwrap());
    let states: Vec<_> = store
        .rollout_batches(task_id)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.number, b.state, b.command_id))
        .collect();
    assert_eq!(
        states,
        [(1, BatchState::Sent, Some("cmd-1".to_string())), (2, BatchState::Sent, Some("cmd-2".to_string()))]
    );
    assert_eq!(store.audit_since(t(0), None).await.unwrap().len(), 1);
}

async fn a_rejected_batch_keeps_its_reason(db: TestDb) {
    let store = db.open().await;
    let task_id = task(&store, "prod-db", "install").await;
    let first = ids("a", 1);
    let batches = [NewBatch { comment: "patchd:run-3:install:1", instance_ids: &first, wave: 1 }];
    store.plan_rollout(task_id, &rollout("run-3", &batches)).await.unwrap();
    let err = store.mark_batch_rejected(task_id, 1, "InvalidInstanceId").await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "only a batch being sent: {err:?}");

    store.mark_batch_sending(task_id, 1, t(2)).await.unwrap();
    store.mark_batch_rejected(task_id, 1, "SendCommand: InvalidInstanceId").await.unwrap();
    let batch = store.rollout_batch(task_id, 1).await.unwrap().unwrap();
    assert_eq!(batch.state, BatchState::Rejected);
    assert_eq!(batch.error.as_deref(), Some("SendCommand: InvalidInstanceId"));
    assert_eq!(batch.command_id, None);
    assert!(store.mark_batch_sending(task_id, 1, t(3)).await.is_err(), "a rejected batch is not retried");
    assert!(store.mark_batch_sent(task_id, 1, "cmd-x", t(3), None).await.is_err());
}

async fn comments_and_command_ids_are_unique_across_rollouts(db: TestDb) {
    let store = db.open().await;
    let one = task(&store, "prod-web", "install").await;
    let two = task(&store, "prod-web", "scan").await;
    let first = ids("a", 2);
    let second = ids("b", 2);
    store
        .plan_rollout(
            one,
            &rollout("run-4", &[NewBatch { comment: "patchd:run-4:1", instance_ids: &first, wave: 1 }]),
        )
        .await
        .unwrap();
    // The same comment in another rollout would make a lookup by comment ambiguous.
    let clash = [NewBatch { comment: "patchd:run-4:1", instance_ids: &second, wave: 1 }];
    assert!(store.plan_rollout(two, &rollout("run-4", &clash)).await.is_err());
    assert_eq!(store.rollout(two).await.unwrap(), None, "a refused plan leaves nothing behind");
    assert_eq!(db.count("SELECT count(*) FROM rollouts").await, 1);

    let fine = [NewBatch { comment: "patchd:run-4:2", instance_ids: &second, wave: 1 }];
    store.plan_rollout(two, &rollout("run-4", &fine)).await.unwrap();
    store.mark_batch_sending(one, 1, t(2)).await.unwrap();
    store.mark_batch_sending(two, 1, t(2)).await.unwrap();
    store.mark_batch_sent(one, 1, "cmd-same", t(3), None).await.unwrap();
    // One SSM command cannot be two batches.
    assert!(store.mark_batch_sent(two, 1, "cmd-same", t(3), None).await.is_err());
    assert_eq!(store.rollout_batch(two, 1).await.unwrap().unwrap().state, BatchState::Sending);
}
