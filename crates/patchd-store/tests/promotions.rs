//! What promotions read and keep: which run of a window a promoting task repeats, and the set
//! it chose. Each case runs on SQLite and on PostgreSQL (see `common`).

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::TestDb;
use patchd_config::Operation;
use patchd_store::*;

on_both_backends!(
    the_source_is_the_latest_succeeded_run_read_in_full,
    a_promotion_is_chosen_once_and_audited_once,
);

fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn patch(id: &str, instances: u32) -> PromotedPatch {
    PromotedPatch {
        id: id.into(),
        title: format!("{id} fix"),
        classification: "Security".into(),
        severity: "Critical".into(),
        instances,
    }
}

/// A run of `window` that started at `t(start)` and ended as `status` ten minutes later, with
/// one task per entry of `tasks` (name, operation).
async fn run(
    store: &Store,
    window: &str,
    start: i64,
    status: WindowRunStatus,
    tasks: &[(&str, Operation)],
) -> (WindowRunId, Vec<WindowTaskId>) {
    let run = store
        .record_window_run(&NewWindowRun {
            window,
            scheduled_start: t(start),
            account: "111122223333",
            region: "eu-west-1",
            started_at: Some(t(start)),
            status: WindowRunStatus::Running,
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (name, operation) in tasks {
        let observation = WindowTaskObservation {
            name,
            operation: *operation,
            command_id: None,
            status: CommandStatus::Success,
            started_at: Some(t(start)),
            ended_at: Some(t(start + 10)),
        };
        ids.push(store.record_window_task(run, &observation).await.unwrap());
    }
    let update =
        WindowRunUpdate { status, started_at: None, ended_at: Some(t(start + 10)), sync_unread: None };
    store.update_window_run(run, &update).await.unwrap();
    (run, ids)
}

async fn the_source_is_the_latest_succeeded_run_read_in_full(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.promotion_source("staging").await.unwrap(), None, "nothing ran yet");

    let install = [("install", Operation::Install)];
    let (first, tasks) = run(&store, "staging", 0, WindowRunStatus::Succeeded, &install).await;
    store
        .record_task_installs(tasks[0], 2, &[patch("ALAS2-2", 2), patch("ALAS2-1", 1)], t(11))
        .await
        .unwrap();
    let source = store.promotion_source("staging").await.unwrap().unwrap();
    assert_eq!((source.run, source.recorded_as.as_str()), (first, "staging"));
    assert_eq!(source.patches, [patch("ALAS2-1", 1), patch("ALAS2-2", 2)], "ordered by id");

    // A later failed run, and a later succeeded run whose installs were not read in full, are
    // passed over.
    let (_, failed) = run(&store, "staging", 100, WindowRunStatus::Failed, &install).await;
    store.record_task_installs(failed[0], 1, &[patch("ALAS2-9", 1)], t(111)).await.unwrap();
    run(&store, "staging", 200, WindowRunStatus::Succeeded, &install).await;
    assert_eq!(store.promotion_source("staging").await.unwrap().unwrap().run, first);

    // A run-now of the window counts, and two install tasks of one run merge their sets.
    let two =
        [("install-a", Operation::Install), ("scan", Operation::Scan), ("install-b", Operation::Install)];
    let (manual, tasks) = run(&store, "manual:staging", 300, WindowRunStatus::Succeeded, &two).await;
    store.record_task_installs(tasks[0], 1, &[patch("ALAS2-3", 1)], t(311)).await.unwrap();
    assert_eq!(
        store.promotion_source("staging").await.unwrap().unwrap().run,
        first,
        "install-b was not read, so the run is not a source yet"
    );
    store
        .record_task_installs(tasks[2], 2, &[patch("ALAS2-3", 2), patch("ALAS2-4", 2)], t(312))
        .await
        .unwrap();
    let source = store.promotion_source("staging").await.unwrap().unwrap();
    assert_eq!((source.run, source.recorded_as.as_str()), (manual, "manual:staging"));
    assert_eq!(source.patches, [patch("ALAS2-3", 3), patch("ALAS2-4", 2)]);
    assert_eq!(store.promotion_source("prod").await.unwrap(), None, "another window's runs are not a source");
}

async fn a_promotion_is_chosen_once_and_audited_once(db: TestDb) {
    let store = db.open().await;
    let (source, _) =
        run(&store, "staging", 0, WindowRunStatus::Succeeded, &[("install", Operation::Install)]).await;
    let (_, prod) =
        run(&store, "prod", 100, WindowRunStatus::Running, &[("install", Operation::Install)]).await;
    assert_eq!(store.promotion(prod[0]).await.unwrap(), None);
    let chosen = PromotionRecord {
        from_window: "staging".into(),
        source_run: source,
        list_url: "s3://acme-patch-lists/patchd/install-lists/r-1/install.yaml".into(),
        patches: vec![patch("ALAS2-1", 2)],
        decided_at: t(101),
    };
    let details = serde_json::json!({ "patches": ["ALAS2-1"] });
    let audit = AuditEntry {
        at: t(101),
        actor: "daemon",
        action: "promote",
        target: Some("install"),
        command_id: None,
        request_id: None,
        details: Some(&details),
    };
    assert_eq!(store.record_promotion(prod[0], &chosen, &audit).await.unwrap(), chosen);

    // Chosen again after a restart, from a newer source: the first choice stands.
    let later = PromotionRecord { patches: vec![patch("ALAS2-7", 1)], decided_at: t(150), ..chosen.clone() };
    assert_eq!(store.record_promotion(prod[0], &later, &audit).await.unwrap(), chosen);
    let promotes =
        store.audit_since(t(0), None).await.unwrap().into_iter().filter(|e| e.action == "promote").count();
    assert_eq!(promotes, 1, "one audit entry for the one decision");

    let decided = store.promotions_between(t(0), t(200)).await.unwrap();
    assert_eq!(decided.len(), 1);
    assert_eq!(
        (decided[0].task, decided[0].window.as_str(), &decided[0].promotion),
        (prod[0], "prod", &chosen)
    );
    assert!(store.promotions_between(t(102), t(200)).await.unwrap().is_empty());
}
