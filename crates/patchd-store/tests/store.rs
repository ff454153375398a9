//! The store's behaviour, each case run on SQLite and on PostgreSQL (see `common`).

mod common;
#[path = "common/fleet.rs"]
mod fleet;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use common::{Backend, TestDb};
use fleet::Fleet;
use patchd_config::{Exception, ExceptionScope, Located, Operation, Origin};
use patchd_store::*;

on_both_backends!(
    the_database_answers_a_ping,
    migrations_apply_on_an_empty_database_and_twice_is_a_no_op,
    a_newer_schema_is_refused_and_left_alone,
    a_sync_opens_findings_records_transitions_remediates_and_is_idempotent,
    not_applicable_is_never_a_finding,
    pending_reboot_stays_open_until_a_later_scan_confirms_it,
    stale_scans_and_invalid_input_change_nothing,
    fleet_wide_first_seen_only_moves_earlier,
    release_dates_import_before_and_after_the_first_sighting,
    the_audit_log_appends_lists_and_refuses_rewrites,
    a_sync_interrupted_midway_leaves_nothing_visible,
    a_large_sync_is_one_transaction_of_few_statements,
    findings_page_and_filter,
    inventory_and_compliance_summaries,
    window_runs_tasks_and_invocations,
    a_window_occurrence_is_one_run_per_account_and_region,
    upgrading_keeps_runs_and_relabels_the_legacy_account,
    account_names_point_at_the_last_learned_id,
    exception_snapshots_are_evidence,
    listings_use_the_indexes,
    concurrent_writers_are_serialised,
    what_a_sync_reads_first_and_what_it_could_not_read,
);

const ACCOUNT: &str = "111122223333";
const REGION: &str = "eu-west-1";

fn t(hours: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap() + Duration::hours(hours)
}

fn key(instance_id: &str) -> InstanceKey<'_> {
    InstanceKey { account: ACCOUNT, region: REGION, instance_id }
}

fn p(patch_id: &str, state: PatchState) -> PatchObservation<'_> {
    PatchObservation {
        patch_id,
        title: Some("a patch"),
        classification: Some("Security"),
        severity: Some("Important"),
        cve_ids: &[],
        state,
        installed_time: None,
    }
}

fn installed(patch_id: &str, state: PatchState, at: DateTime<Utc>) -> PatchObservation<'_> {
    PatchObservation { installed_time: Some(at), ..p(patch_id, state) }
}

fn scan<'a>(
    instance_id: &'a str,
    at: DateTime<Utc>,
    patches: &'a [PatchObservation<'a>],
) -> InstanceScan<'a> {
    InstanceScan {
        command_id: Some("cmd-scan"),
        operation_start: Some(at - Duration::minutes(5)),
        baseline_id: Some("pb-0123"),
        patch_group: Some("web"),
        ..InstanceScan::scan_at(key(instance_id), at, patches)
    }
}

async fn sync(store: &Store, scans: &[InstanceScan<'_>]) -> SyncReport {
    let started_at = scans.iter().map(|s| s.observed_at).min().unwrap_or_else(|| t(0));
    store.record_sync(&ComplianceSync { source: "test", started_at, scans }).await.expect("record the sync")
}

async fn all_findings(store: &Store, query: FindingQuery<'_>) -> Vec<FindingRecord> {
    store.findings(&query).await.expect("list findings").findings
}

fn find<'f>(findings: &'f [FindingRecord], instance_id: &str, patch_id: &str) -> &'f FindingRecord {
    findings
        .iter()
        .find(|f| f.instance.instance_id == instance_id && f.patch.patch_id == patch_id)
        .unwrap_or_else(|| panic!("no finding {instance_id}/{patch_id} in {findings:#?}"))
}

/// (from, to, at) of a finding's history.
async fn history(
    store: &Store,
    instance_id: &str,
    patch_id: &str,
) -> Vec<(Option<PatchState>, PatchState, DateTime<Utc>)> {
    let h = store.finding_history(key(instance_id), patch_id).await.expect("history");
    h.into_iter().map(|t| (t.from, t.to, t.at)).collect()
}

async fn count(db: &TestDb, table: &str) -> i64 {
    db.count(&format!("SELECT count(*) FROM {table}")).await
}

// -------------------------------------------------------------------------------------------

async fn migrations_apply_on_an_empty_database_and_twice_is_a_no_op(db: TestDb) {
    let no_migrate = OpenOptions { migrate: false, ..OpenOptions::default() };
    let latest = match db.open_with(&no_migrate).await {
        Err(StoreError::OutdatedSchema { database_version: None, supported_version }) => supported_version,
        other => panic!("an empty database opened without migrating: {other:?}"),
    };
    assert!(latest >= 1);

    let store = db.open().await;
    assert_eq!(
        store.schema_version().await.unwrap(),
        SchemaVersion { database: Some(latest), supported: latest }
    );
    let applied = count(&db, "_sqlx_migrations").await;
    let again = store.migrate().await.unwrap();
    assert_eq!(again, MigrationReport { applied: vec![], version: latest }, "a second run applies nothing");
    assert_eq!(count(&db, "_sqlx_migrations").await, applied);
    store.close().await;

    let reopened = db.open_with(&no_migrate).await.expect("a current schema opens without migrating");
    assert_eq!(reopened.schema_version().await.unwrap().database, Some(latest));
    let expected = match db.backend {
        Backend::Sqlite => BackendKind::Sqlite,
        Backend::Postgres => BackendKind::Postgres,
    };
    assert_eq!(reopened.backend(), expected);
}

async fn a_newer_schema_is_refused_and_left_alone(db: TestDb) {
    let store = db.open().await;
    let supported = store.schema_version().await.unwrap().supported;
    store.close().await;
    let applied = count(&db, "_sqlx_migrations").await;
    let checksum = match db.backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    db.execute(&format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, {checksum}, 0)"
    ))
    .await
    .expect("forge a future migration");

    for migrate in [true, false] {
        let err = db.open_with(&OpenOptions { migrate, ..OpenOptions::default() }).await.unwrap_err();
        match &err {
            StoreError::NewerSchema { database_version: 9999, supported_version }
                if *supported_version == supported => {}
            other => panic!("migrate={migrate}: expected NewerSchema, got {other:?}"),
        }
        assert!(err.to_string().contains("upgrade patchd"), "{err}");
    }
    assert_eq!(count(&db, "_sqlx_migrations").await, applied + 1, "the newer database is not altered");
}

async fn a_sync_opens_findings_records_transitions_remediates_and_is_idempotent(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;

    let a1 = [p("KB1", Missing), installed("KB2", Installed, t(-100)), p("KB3", Failed)];
    let b1 = [p("KB1", Missing)];
    let first = [scan("i-a", t(0), &a1), scan("i-b", t(0), &b1)];
    let r = sync(&store, &first).await;
    assert_eq!((r.instances, r.opened, r.transitions, r.remediated, r.reopened), (2, 3, 3, 0, 0));

    let open =
        all_findings(&store, FindingQuery { status: Some(FindingStatus::Open), ..Default::default() }).await;
    assert_eq!(open.len(), 3, "KB2 was installed at first sight: never a finding");
    let kb1 = find(&open, "i-a", "KB1");
    assert_eq!(
        (kb1.state, kb1.first_seen_missing, kb1.last_seen, kb1.installed_at),
        (Missing, t(0), t(0), None)
    );
    assert_eq!(kb1.patch.title.as_deref(), Some("a patch"));
    assert_eq!(history(&store, "i-a", "KB1").await, vec![(None, Missing, t(0))]);

    // The same data again: nothing changes.
    let before =
        (count(&db, "finding_transitions").await, all_findings(&store, FindingQuery::default()).await);
    let r = sync(&store, &first).await;
    assert_eq!((r.instances, r.opened, r.transitions, r.remediated), (2, 0, 0, 0));
    let after =
        (count(&db, "finding_transitions").await, all_findings(&store, FindingQuery::default()).await);
    assert_eq!(before, after, "an identical re-sync is a no-op");

    // Later: KB1 installed on i-a (SSM's InstalledTime between the scans), KB3 failed -> missing.
    let a2 = [installed("KB1", Installed, t(5)), installed("KB2", Installed, t(-100)), p("KB3", Missing)];
    let second = [scan("i-a", t(6), &a2), scan("i-b", t(6), &b1)];
    let r = sync(&store, &second).await;
    assert_eq!((r.opened, r.transitions, r.remediated, r.reopened), (0, 2, 1, 0));

    let all = all_findings(&store, FindingQuery::default()).await;
    let kb1 = find(&all, "i-a", "KB1");
    assert_eq!((kb1.state, kb1.installed_at, kb1.last_seen), (Installed, Some(t(5)), t(6)));
    assert_eq!(kb1.status(), FindingStatus::Remediated);
    let kb3 = find(&all, "i-a", "KB3");
    assert_eq!((kb3.state, kb3.first_seen_missing, kb3.installed_at), (Missing, t(0), None));
    let b = find(&all, "i-b", "KB1");
    assert_eq!((b.state, b.last_seen), (Missing, t(6)), "an unchanged finding is seen again");
    assert_eq!(
        history(&store, "i-a", "KB1").await,
        vec![(None, Missing, t(0)), (Some(Missing), Installed, t(6))]
    );
    assert_eq!(
        history(&store, "i-a", "KB3").await,
        vec![(None, Failed, t(0)), (Some(Failed), Missing, t(6))]
    );
    let transitions = store.finding_history(key("i-a"), "KB3").await.unwrap();
    assert_eq!(transitions[1].command_id.as_deref(), Some("cmd-scan"));
    assert_eq!(transitions[1].sync_id, r.sync_id);

    let remediated = all_findings(
        &store,
        FindingQuery { remediated_since: Some(t(0)), remediated_until: Some(t(6)), ..Default::default() },
    )
    .await;
    assert_eq!(remediated.len(), 1);
    assert_eq!(remediated[0].patch.patch_id, "KB1");
    let outside = FindingQuery { remediated_since: Some(t(6)), ..Default::default() };
    assert!(all_findings(&store, outside).await.is_empty());

    // Missing again: reopened, history kept, first sighting unchanged.
    let a3 = [p("KB1", Missing)];
    let r = sync(&store, &[scan("i-a", t(9), &a3)]).await;
    assert_eq!((r.transitions, r.reopened), (1, 1));
    let all = all_findings(&store, FindingQuery::default()).await;
    let kb1 = find(&all, "i-a", "KB1");
    assert_eq!((kb1.state, kb1.installed_at, kb1.first_seen_missing), (Missing, None, t(0)));
    assert_eq!(history(&store, "i-a", "KB1").await.len(), 3);
}

async fn not_applicable_is_never_a_finding(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    let first = [p("KB-NA", NotApplicable), p("KB-M", Missing)];
    let r = sync(&store, &[scan("i-a", t(0), &first)]).await;
    assert_eq!(r.opened, 1);
    let all = all_findings(&store, FindingQuery::default()).await;
    assert_eq!(all.len(), 1);
    assert!(store.patch("KB-NA").await.unwrap().is_none(), "a not-applicable patch is not even recorded");

    // The missing patch stops applying (package removed): the finding is left as it was.
    let later = [p("KB-NA", NotApplicable), p("KB-M", NotApplicable)];
    let r = sync(&store, &[scan("i-a", t(3), &later)]).await;
    assert_eq!((r.opened, r.transitions), (0, 0));
    let all = all_findings(&store, FindingQuery::default()).await;
    assert_eq!(all.len(), 1);
    assert_eq!((all[0].state, all[0].last_seen), (Missing, t(0)));
    assert_eq!(count(&db, "findings WHERE state = 'NOT_APPLICABLE'").await, 0);

    let summary = store.instances().await.unwrap()[0].compliance.clone().expect("a summary");
    assert_eq!((summary.counts.not_applicable, summary.counts.missing, summary.scanned_at), (2, 0, t(3)));
}

async fn pending_reboot_stays_open_until_a_later_scan_confirms_it(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    sync(
        &store,
        &[
            scan("i-a", t(0), &[p("KB1", Missing)]),
            scan("i-b", t(0), &[installed("KB1", InstalledPendingReboot, t(-1))]),
        ],
    )
    .await;

    // Installed with NoReboot at t(1); the scan at t(2) still sees the reboot pending.
    sync(&store, &[scan("i-a", t(2), &[installed("KB1", InstalledPendingReboot, t(1))])]).await;
    let open =
        all_findings(&store, FindingQuery { status: Some(FindingStatus::Open), ..Default::default() }).await;
    assert_eq!(open.len(), 2, "pending reboot is open, at first sight too");
    assert!(open.iter().all(|f| f.state == InstalledPendingReboot && f.installed_at.is_none()));

    // The reboot is confirmed at t(8). SSM still says InstalledTime t(1), before the scan that
    // saw the reboot pending: remediation counts from the confirming scan.
    sync(&store, &[scan("i-a", t(8), &[installed("KB1", Installed, t(1))])]).await;
    let all = all_findings(&store, FindingQuery::default()).await;
    let a = find(&all, "i-a", "KB1");
    assert_eq!((a.state, a.installed_at), (Installed, Some(t(8))));
    assert_eq!(
        history(&store, "i-a", "KB1").await,
        vec![
            (None, Missing, t(0)),
            (Some(Missing), InstalledPendingReboot, t(2)),
            (Some(InstalledPendingReboot), Installed, t(8))
        ]
    );
    let b = find(&all, "i-b", "KB1");
    assert_eq!(b.status(), FindingStatus::Open);
}

async fn stale_scans_and_invalid_input_change_nothing(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    sync(&store, &[scan("i-a", t(5), &[p("KB1", Missing)])]).await;

    let r = sync(&store, &[scan("i-a", t(1), &[installed("KB1", Installed, t(0))])]).await;
    assert_eq!((r.instances, r.stale_instances, r.transitions), (0, 1, 0), "an older scan is ignored");
    assert_eq!(all_findings(&store, FindingQuery::default()).await[0].state, Missing);

    let bad = [p("", Missing)];
    let err = store
        .record_sync(&ComplianceSync { source: "test", started_at: t(6), scans: &[scan("i-a", t(6), &bad)] })
        .await;
    assert!(matches!(err, Err(StoreError::InvalidInput(_))), "{err:?}");
    let err = store
        .record_sync(&ComplianceSync { source: "test", started_at: t(6), scans: &[scan("", t(6), &[])] })
        .await;
    assert!(matches!(err, Err(StoreError::InvalidInput(_))), "{err:?}");
    assert_eq!(count(&db, "syncs").await, 2, "invalid input writes nothing");
}

async fn fleet_wide_first_seen_only_moves_earlier(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    sync(&store, &[scan("i-a", t(10), &[p("KB1", Missing)])]).await;
    assert_eq!(store.patch("KB1").await.unwrap().unwrap().first_seen_missing, Some(t(10)));

    // Another instance reports an older scan that saw the patch missing earlier.
    sync(&store, &[scan("i-b", t(4), &[p("KB1", Failed)])]).await;
    // And a later instance does not move it.
    sync(&store, &[scan("i-c", t(20), &[p("KB1", Missing)])]).await;
    // Nor does remediating the earliest one.
    sync(&store, &[scan("i-b", t(21), &[installed("KB1", Installed, t(21))])]).await;

    assert_eq!(store.patch("KB1").await.unwrap().unwrap().first_seen_missing, Some(t(4)));
    let all = all_findings(&store, FindingQuery::default()).await;
    for f in &all {
        assert_eq!(f.fleet_first_seen_missing, t(4), "{}", f.instance.instance_id);
    }
    assert_eq!(find(&all, "i-a", "KB1").first_seen_missing, t(10));
    assert_eq!(find(&all, "i-c", "KB1").first_seen_missing, t(20));
}

async fn release_dates_import_before_and_after_the_first_sighting(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    // An advisory import before anyone saw the patch: a placeholder keeps the date.
    let n = store.set_release_dates(&[("KB1", t(-48), ReleaseSource::Advisory)]).await.unwrap();
    assert_eq!(n, 1);
    let placeholder = store.patch("KB1").await.unwrap().expect("a placeholder");
    assert_eq!((placeholder.title.as_deref(), placeholder.first_seen_missing), (None, None));
    assert_eq!(placeholder.release(), Some((t(-48), ReleaseSource::Advisory)));

    sync(&store, &[scan("i-a", t(0), &[p("KB1", Missing), p("KB2", Missing)])]).await;
    let all = all_findings(&store, FindingQuery::default()).await;
    let kb1 = find(&all, "i-a", "KB1");
    assert_eq!(kb1.patch.release(), Some((t(-48), ReleaseSource::Advisory)));
    assert_eq!(kb1.patch.title.as_deref(), Some("a patch"), "the sync fills the placeholder in");
    assert_eq!(find(&all, "i-a", "KB2").patch.release(), None, "no date: the clock is an estimate");

    // SSM's date is kept beside the advisory's, which still wins; both imports are idempotent.
    let dates = vec![
        ("KB1".to_string(), t(-72), ReleaseSource::Ssm),
        ("KB2".to_string(), t(-24), ReleaseSource::Ssm),
        ("KB1".to_string(), t(-48), ReleaseSource::Advisory),
    ];
    assert_eq!(store.set_release_dates(&dates).await.unwrap(), 2);
    assert_eq!(store.set_release_dates(&dates).await.unwrap(), 0, "the same dates change nothing");
    let kb1 = store.patch("KB1").await.unwrap().unwrap();
    assert_eq!((kb1.ssm_release, kb1.advisory_release), (Some(t(-72)), Some(t(-48))));
    assert_eq!(kb1.release(), Some((t(-48), ReleaseSource::Advisory)));
    assert_eq!(store.patch("KB2").await.unwrap().unwrap().release(), Some((t(-24), ReleaseSource::Ssm)));

    // A corrected advisory date replaces the old one; the last of a repeated pair wins.
    let n = store
        .set_release_dates(&[
            ("KB1", t(-50), ReleaseSource::Advisory),
            ("KB1", t(-49), ReleaseSource::Advisory),
        ])
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(store.patch("KB1").await.unwrap().unwrap().advisory_release, Some(t(-49)));
    assert_eq!(store.patches().await.unwrap().len(), 2);
}

async fn the_audit_log_appends_lists_and_refuses_rewrites(db: TestDb) {
    let store = db.open().await;
    let details = serde_json::json!({"instances": ["i-a", "i-b"], "max_concurrency": "10%"});
    let entries = [
        AuditEntry {
            at: t(0),
            actor: "daemon",
            action: "send-command",
            target: Some("window:prod-web"),
            command_id: Some("cmd-1"),
            request_id: Some("req-1"),
            details: Some(&details),
        },
        AuditEntry {
            at: t(2),
            actor: "cli:alice",
            action: "cancel-command",
            target: None,
            command_id: Some("cmd-1"),
            request_id: None,
            details: None,
        },
        AuditEntry {
            at: t(2),
            actor: "daemon",
            action: "update-baseline",
            target: Some("pb-1"),
            command_id: None,
            request_id: Some("req-3"),
            details: None,
        },
    ];
    let mut ids = Vec::new();
    for e in &entries {
        ids.push(store.append_audit(e).await.unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow in append order");

    let all = store.audit_since(t(0), None).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].details.as_ref(), Some(&details));
    assert_eq!((all[0].command_id.as_deref(), all[0].request_id.as_deref()), (Some("cmd-1"), Some("req-1")));
    let later = store.audit_since(t(1), None).await.unwrap();
    assert_eq!(
        later.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["cancel-command", "update-baseline"]
    );
    assert_eq!(store.audit_since(t(1), Some(1)).await.unwrap().len(), 1);

    let err = store.append_audit(&AuditEntry { actor: "", ..entries[1] }).await;
    assert!(matches!(err, Err(StoreError::InvalidInput(_))));

    // Append-only below the API too.
    assert!(db.execute("UPDATE audit_log SET actor = 'mallory'").await.is_err());
    assert!(db.execute("DELETE FROM audit_log").await.is_err());
    assert_eq!(store.audit_since(t(0), None).await.unwrap(), all);
}

async fn a_sync_interrupted_midway_leaves_nothing_visible(db: TestDb) {
    let store = db.open().await;
    sync(&store, &[scan("i-before", t(0), &[p("KB0", PatchState::Missing)])]).await;
    let committed =
        (count(&db, "syncs").await, count(&db, "findings").await, count(&db, "finding_transitions").await);
    assert_eq!(committed, (1, 1, 1));

    let before = store.stats();
    let writer = store.clone();
    let task = tokio::spawn(async move {
        let fleet = Fleet::new(3_000, 20);
        let observations = fleet.observations(PatchState::Missing);
        let scans = fleet.scans(&observations, t(1));
        writer.record_sync(&ComplianceSync { source: "doomed", started_at: t(1), scans: &scans }).await
    });
    // Wait until the sync is well into its writes (past the instances and patches, into the
    // findings), then drop it, as a crash or a cancelled task would.
    loop {
        let now = store.stats();
        assert_eq!(
            now.transactions, before.transactions,
            "the sync committed before it could be interrupted"
        );
        if now.statements >= before.statements + 10 {
            break;
        }
        tokio::task::yield_now().await;
    }
    task.abort();
    assert!(task.await.expect_err("the sync was aborted").is_cancelled());

    let after =
        (count(&db, "syncs").await, count(&db, "findings").await, count(&db, "finding_transitions").await);
    assert_eq!(after, committed, "nothing of the interrupted sync is visible");
    assert_eq!(count(&db, "instances").await, 1);
    assert_eq!(count(&db, "compliance_summaries").await, 1);
    assert_eq!(count(&db, "patches").await, 1);
    assert_eq!(store.instances().await.unwrap().len(), 1);

    // The store is still usable, and the same sync now lands whole.
    let fleet = Fleet::new(3_000, 20);
    let observations = fleet.observations(PatchState::Missing);
    let scans = fleet.scans(&observations, t(1));
    let r = sync(&store, &scans).await;
    assert_eq!(r.opened, 60_000);
    assert_eq!(count(&db, "findings").await, 60_001);
}

async fn a_large_sync_is_one_transaction_of_few_statements(db: TestDb) {
    let store = db.open().await;
    let fleet = Fleet::new(2_000, 20);
    let observations = fleet.observations(PatchState::Missing);
    let scans = fleet.scans(&observations, t(0));

    let before = store.stats();
    let r = sync(&store, &scans).await;
    let after = store.stats();
    assert_eq!((r.instances, r.opened, r.transitions), (2_000, 40_000, 40_000));
    assert_eq!(after.transactions - before.transactions, 1, "one sync, one transaction");
    let statements = after.statements - before.statements;
    assert!(statements <= 40, "40,000 findings took {statements} statements");
    println!("{:?}: 2,000 instances x 20 patches in {statements} statements", db.backend);

    // A second sync a day later: every finding seen again, still one transaction.
    let scans = fleet.scans(&observations, t(24));
    let before = store.stats();
    let r = sync(&store, &scans).await;
    let after = store.stats();
    assert_eq!((r.opened, r.transitions), (0, 0));
    assert_eq!(after.transactions - before.transactions, 1);
    assert!(after.statements - before.statements <= 40);

    assert_eq!(count(&db, "findings").await, 40_000);
    assert_eq!(count(&db, "findings WHERE last_seen IS NOT NULL AND installed_at IS NULL").await, 40_000);
    let instances = store.instances().await.unwrap();
    assert_eq!(instances.len(), 2_000);
    assert!(instances
        .iter()
        .all(|i| i.compliance.as_ref().is_some_and(|c| c.counts.missing == 20 && c.scanned_at == t(24))));
    let page = store.findings(&FindingQuery { limit: Some(5), ..Default::default() }).await.unwrap();
    assert_eq!(page.findings[0].last_seen, t(24));
    assert_eq!(page.findings[0].patch.cve_ids, fleet.cves);
}

async fn findings_page_and_filter(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    let fleet = Fleet::new(6, 5);
    let observations = fleet.observations(Missing);
    sync(&store, &fleet.scans(&observations, t(0))).await;
    // Remediate a few, at different times.
    let i0 = &fleet.instance_ids[0];
    let i1 = &fleet.instance_ids[1];
    let fixed0: Vec<PatchObservation<'_>> = fleet
        .patch_ids
        .iter()
        .enumerate()
        .map(|(n, id)| if n < 3 { installed(id, Installed, t(n as i64 + 1)) } else { p(id, Missing) })
        .collect();
    let fixed1: Vec<PatchObservation<'_>> =
        fleet.patch_ids.iter().map(|id| installed(id, InstalledOther, t(2))).collect();
    sync(&store, &[scan(i0, t(10), &fixed0), scan(i1, t(10), &fixed1)]).await;

    // Pages of 7 visit every finding exactly once, in order.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page =
            store.findings(&FindingQuery { after, limit: Some(7), ..Default::default() }).await.unwrap();
        assert!(page.findings.len() <= 7);
        seen.extend(page.findings.iter().map(|f| (f.instance.instance_id.clone(), f.patch.patch_id.clone())));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 30);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 30, "no finding twice");

    let open = FindingQuery { status: Some(FindingStatus::Open), ..Default::default() };
    assert_eq!(all_findings(&store, open).await.len(), 30 - 3 - 5);
    let remediated = FindingQuery { status: Some(FindingStatus::Remediated), ..Default::default() };
    let fixed = all_findings(&store, remediated).await;
    assert_eq!(fixed.len(), 8);
    assert!(
        fixed.windows(2).all(|w| w[0].installed_at <= w[1].installed_at),
        "remediated: by installation time"
    );

    // Remediated findings, paged by 3 through the period index.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let q = FindingQuery { remediated_since: Some(t(2)), after, limit: Some(3), ..Default::default() };
        let page = store.findings(&q).await.unwrap();
        paged.extend(page.findings.iter().map(|f| f.installed_at));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(paged.len(), 7, "t(2) onwards: two on i0, five on i1");

    let by_instance = FindingQuery { instance: Some(key(i0)), ..Default::default() };
    assert_eq!(all_findings(&store, by_instance).await.len(), 5);
    let by_patch = FindingQuery {
        patch_id: Some(&fleet.patch_ids[4]),
        status: Some(FindingStatus::Open),
        ..Default::default()
    };
    assert_eq!(all_findings(&store, by_patch).await.len(), 5, "every instance but i1");
    let nobody = FindingQuery { patch_id: Some("KB-unknown"), ..Default::default() };
    assert!(all_findings(&store, nobody).await.is_empty());

    // Findings of a page share their instance.
    let page = all_findings(&store, FindingQuery { instance: Some(key(i0)), ..Default::default() }).await;
    assert!(Arc::ptr_eq(&page[0].instance, &page[1].instance));
}

async fn inventory_and_compliance_summaries(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    let tags = BTreeMap::from([
        ("Environment".to_string(), "prod".to_string()),
        ("Patch Group".to_string(), "web".to_string()),
    ]);
    let no_tags = BTreeMap::new();
    let inventory = [
        InstanceObservation {
            instance: key("i-a"),
            name: Some("web-1"),
            platform: Some("Amazon Linux 2"),
            tags: &tags,
            ssm_managed: true,
            ping_status: Some(PingStatus::Online),
        },
        InstanceObservation {
            instance: key("i-unmanaged"),
            name: None,
            platform: None,
            tags: &no_tags,
            ssm_managed: false,
            ping_status: None,
        },
    ];
    assert_eq!(store.record_instances(t(0), &inventory).await.unwrap(), 2);

    let patches = [
        p("KB1", Missing),
        installed("KB2", Installed, t(-5)),
        p("KB3", NotApplicable),
        p("KB4", InstalledPendingReboot),
    ];
    sync(&store, &[scan("i-a", t(1), &patches), scan("i-sync-only", t(1), &[p("KB1", Missing)])]).await;

    // Inventory later: the connection was lost, a tag changed.
    let tags2 = BTreeMap::from([("Environment".to_string(), "prod".to_string())]);
    let later =
        [InstanceObservation { tags: &tags2, ping_status: Some(PingStatus::ConnectionLost), ..inventory[0] }];
    store.record_instances(t(3), &later).await.unwrap();

    let instances = store.instances().await.unwrap();
    assert_eq!(
        instances.iter().map(|i| i.instance.instance_id.as_str()).collect::<Vec<_>>(),
        ["i-a", "i-sync-only", "i-unmanaged"]
    );
    let a = &instances[0];
    assert_eq!(
        (a.instance.name.as_deref(), a.instance.platform.as_deref()),
        (Some("web-1"), Some("Amazon Linux 2"))
    );
    assert_eq!(a.instance.tags, tags2);
    assert_eq!(
        (a.ping_status, a.ssm_managed, a.first_seen, a.last_seen),
        (Some(PingStatus::ConnectionLost), true, t(0), t(3))
    );
    let summary = a.compliance.as_ref().expect("scanned");
    assert_eq!(summary.scanned_at, t(1));
    assert_eq!(
        summary.counts,
        StateCounts {
            installed: 1,
            missing: 1,
            not_applicable: 1,
            installed_pending_reboot: 1,
            ..StateCounts::default()
        }
    );
    assert_eq!(
        (summary.operation, summary.baseline_id.as_deref(), summary.patch_group.as_deref()),
        (Some(Operation::Scan), Some("pb-0123"), Some("web"))
    );
    assert_eq!(summary.command_id.as_deref(), Some("cmd-scan"));

    let sync_only = &instances[1];
    assert!(sync_only.ssm_managed, "SSM reported on it, so SSM manages it");
    assert_eq!(sync_only.first_seen, t(1));
    let unmanaged = &instances[2];
    assert!(!unmanaged.ssm_managed && unmanaged.compliance.is_none(), "a coverage gap");

    let open = all_findings(&store, FindingQuery { instance: Some(key("i-a")), ..Default::default() }).await;
    assert_eq!(open[0].instance.tags, tags2);
}

/// `prod-web`'s occurrence at t(0) in the home scope, started on time.
fn running_web_run() -> NewWindowRun<'static> {
    NewWindowRun {
        window: "prod-web",
        scheduled_start: t(0),
        account: ACCOUNT,
        region: REGION,
        started_at: Some(t(0)),
        status: WindowRunStatus::Running,
    }
}

async fn a_window_occurrence_is_one_run_per_account_and_region(db: TestDb) {
    let store = db.open().await;
    let home = running_web_run();
    let other_account = NewWindowRun { account: "444455556666", ..home };
    let other_region = NewWindowRun { region: "us-east-1", ..home };
    let ids = [
        store.record_window_run(&home).await.unwrap(),
        store.record_window_run(&other_account).await.unwrap(),
        store.record_window_run(&other_region).await.unwrap(),
    ];
    assert!(ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2], "{ids:?}");
    assert_eq!(store.record_window_run(&other_account).await.unwrap(), ids[1], "a restart finds its own run");

    let only = |account, region| WindowRunQuery { account, region, ..Default::default() };
    let runs = store.window_runs(&only(Some("444455556666"), None)).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| (r.id, r.account.as_str(), r.region.as_str())).collect::<Vec<_>>(),
        [(ids[1], "444455556666", REGION)]
    );
    assert_eq!(store.window_runs(&only(None, Some("us-east-1"))).await.unwrap()[0].id, ids[2]);
    assert_eq!(store.window_runs(&only(None, None)).await.unwrap().len(), 3);

    let unscoped = NewWindowRun { account: "", ..home };
    assert!(matches!(store.record_window_run(&unscoped).await, Err(StoreError::InvalidInput(_))));
}

async fn account_names_point_at_the_last_learned_id(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.account_named("home").await.unwrap(), None, "never connected");
    store.remember_account_names(&[("home", ACCOUNT), ("payments", "444455556666")], t(0)).await.unwrap();
    let home = store.account_named("home").await.unwrap().unwrap();
    assert_eq!((home.account_id.as_str(), home.learned_at), (ACCOUNT, t(0)));
    // Credentials for another account under the same name: the name follows them.
    store.remember_account_names(&[("home", "777788889999")], t(1)).await.unwrap();
    let home = store.account_named("home").await.unwrap().unwrap();
    assert_eq!((home.account_id.as_str(), home.learned_at), ("777788889999", t(1)));
    assert_eq!(store.account_named("payments").await.unwrap().unwrap().account_id, "444455556666");
    for bad in [[("", ACCOUNT)], [("home", "default")], [("home", "12345678901x")]] {
        let refused = store.remember_account_names(&bad, t(2)).await;
        assert!(matches!(refused, Err(StoreError::InvalidInput(_))), "{bad:?}: {refused:?}");
    }
    assert_eq!(
        store.account_named("home").await.unwrap().unwrap().learned_at,
        t(1),
        "refusals change nothing"
    );
}

/// A database written before accounts were known (migration 0004, the home account labelled
/// `default`) keeps every run, task and invocation through migration 0005, and the home
/// account's real id and region replace the legacy labels once, without touching records that
/// already carry a real scope.
async fn upgrading_keeps_runs_and_relabels_the_legacy_account(db: TestDb) {
    db.migrate_up_to(4).await;
    for sql in [
        "INSERT INTO instances (id, account, region, instance_id, ssm_managed, first_seen, last_seen) \
         VALUES (1, 'default', 'eu-west-1', 'i-a', 1, '2026-03-01T00:00:00.000000Z', '2026-03-01T00:00:00.000000Z'), \
                (2, 'default', 'eu-west-1', 'i-c', 1, '2026-03-01T00:00:00.000000Z', '2026-03-01T00:00:00.000000Z')",
        "INSERT INTO window_runs (id, window_name, scheduled_start, status) \
         VALUES (7, 'prod-web', '2026-03-01T02:00:00.000000Z', 'succeeded'), \
                (8, 'prod-web', '2026-03-02T02:00:00.000000Z', 'missed')",
        "INSERT INTO window_tasks (id, run_id, task_name, operation, status) VALUES (70, 7, 'install', 'Install', 'Success')",
        "INSERT INTO invocations (task_id, instance_ref, command_id, status) VALUES (70, 1, 'cmd-1', 'Success')",
        "INSERT INTO event_announcements (kind, subject, level, state, announced_at) \
         VALUES ('sla', 'default/eu-west-1/i-a/KB1', 2, 'breached', '2026-03-01T00:00:00.000000Z')",
    ] {
        let sql = if db.backend == Backend::Postgres { sql.replace(", 1, '2026", ", true, '2026") } else { sql.into() };
        db.execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    if db.backend == Backend::Postgres {
        // Explicit ids leave identity sequences behind; a later insert would reuse id 1.
        for table in ["instances", "window_runs", "window_tasks"] {
            db.count(&format!("SELECT setval(pg_get_serial_sequence('{table}', 'id'), 100)")).await;
        }
    }
    let store = db.open().await;
    let runs = store.window_runs(&WindowRunQuery::default()).await.unwrap();
    let scopes: Vec<_> = runs.iter().map(|r| (r.id, r.account.as_str(), r.region.as_str())).collect();
    assert_eq!(
        scopes,
        [(WindowRunId::from(8), "default", "default"), (WindowRunId::from(7), "default", "eu-west-1")],
        "the region comes from the instances a run reached, else it is unknown"
    );
    assert_eq!(runs[1].tasks.len(), 1);
    assert_eq!(store.invocations(runs[1].tasks[0].id).await.unwrap()[0].instance_id, "i-a");

    // An instance recorded under the real account after the upgrade keeps its twin apart.
    let no_tags = BTreeMap::new();
    let twin = InstanceObservation {
        instance: InstanceKey { account: ACCOUNT, region: "eu-west-1", instance_id: "i-a" },
        name: None,
        platform: None,
        tags: &no_tags,
        ssm_managed: false,
        ping_status: None,
    };
    let other = InstanceObservation { instance: key("i-b"), ..twin };
    store.record_instances(t(0), &[twin, other]).await.unwrap();
    let done = store.relabel_legacy_scope(ACCOUNT, "eu-central-1").await.unwrap();
    assert_eq!(
        done,
        Relabelled { instances: 1, window_runs: 2, announcements: 1 },
        "i-c, not i-a: it has a twin"
    );
    let runs = store.window_runs(&WindowRunQuery::default()).await.unwrap();
    let scopes: Vec<_> = runs.iter().map(|r| (r.account.as_str(), r.region.as_str())).collect();
    assert_eq!(scopes, [(ACCOUNT, "eu-central-1"), (ACCOUNT, "eu-west-1")]);
    let legacy = db.count("SELECT COUNT(*) FROM instances WHERE account = 'default'").await;
    assert_eq!(legacy, 1, "the legacy i-a is kept apart from its twin, not merged by guess");
    let subjects = db
        .count("SELECT COUNT(*) FROM event_announcements WHERE subject = '111122223333/eu-west-1/i-a/KB1'")
        .await;
    assert_eq!(subjects, 1);
    assert!(store.relabel_legacy_scope(ACCOUNT, "eu-central-1").await.unwrap().is_empty(), "idempotent");
    assert!(matches!(
        store.relabel_legacy_scope("default", "eu-west-1").await,
        Err(StoreError::InvalidInput(_))
    ));
}

async fn window_runs_tasks_and_invocations(db: TestDb) {
    let store = db.open().await;
    let run = running_web_run();
    let id = store.record_window_run(&run).await.unwrap();
    // A restart mid-window finds the same run.
    let again =
        store.record_window_run(&NewWindowRun { status: WindowRunStatus::Late, ..run }).await.unwrap();
    assert_eq!(id, again);
    let missed =
        NewWindowRun { scheduled_start: t(-168), started_at: None, status: WindowRunStatus::Missed, ..run };
    store.record_window_run(&missed).await.unwrap();

    let task = WindowTaskObservation {
        name: "install",
        operation: Operation::Install,
        command_id: None,
        status: CommandStatus::Pending,
        started_at: Some(t(0)),
        ended_at: None,
    };
    let task_id = store.record_window_task(id, &task).await.unwrap();
    let progressed = WindowTaskObservation {
        command_id: Some("cmd-9"),
        status: CommandStatus::InProgress,
        started_at: None,
        ..task
    };
    assert_eq!(store.record_window_task(id, &progressed).await.unwrap(), task_id);

    let invocations = [
        InvocationObservation {
            instance: key("i-a"),
            command_id: "cmd-9",
            status: CommandStatus::InProgress,
            status_details: Some("InProgress"),
            requested_at: Some(t(0)),
            started_at: Some(t(0)),
            ended_at: None,
        },
        InvocationObservation {
            instance: key("i-b"),
            command_id: "cmd-9",
            status: CommandStatus::Failed,
            status_details: Some("Undeliverable"),
            requested_at: Some(t(0)),
            started_at: None,
            ended_at: Some(t(1)),
        },
    ];
    assert_eq!(store.record_invocations(task_id, t(0), &invocations).await.unwrap(), 2);
    let done = InvocationObservation {
        status: CommandStatus::Success,
        status_details: Some("Success"),
        ended_at: Some(t(2)),
        ..invocations[0]
    };
    store.record_invocations(task_id, t(2), &[done]).await.unwrap();
    store
        .update_window_run(
            id,
            &WindowRunUpdate {
                status: WindowRunStatus::Failed,
                started_at: None,
                ended_at: Some(t(3)),
                sync_unread: None,
            },
        )
        .await
        .unwrap();

    let runs =
        store.window_runs(&WindowRunQuery { window: Some("prod-web"), ..Default::default() }).await.unwrap();
    assert_eq!(runs.len(), 2);
    let latest = &runs[0];
    assert_eq!(
        (latest.id, latest.status, latest.started_at, latest.ended_at),
        (id, WindowRunStatus::Failed, Some(t(0)), Some(t(3)))
    );
    assert_eq!(latest.tasks.len(), 1);
    let recorded = &latest.tasks[0];
    assert_eq!(
        (recorded.command_id.as_deref(), recorded.status, recorded.started_at),
        (Some("cmd-9"), CommandStatus::InProgress, Some(t(0)))
    );
    assert_eq!((runs[1].status, runs[1].started_at), (WindowRunStatus::Missed, None));
    let since =
        store.window_runs(&WindowRunQuery { since: Some(t(-1)), ..Default::default() }).await.unwrap();
    assert_eq!(since.len(), 1);

    let listed = store.invocations(task_id).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        (listed[0].instance_id.as_str(), listed[0].status, listed[0].ended_at, listed[0].started_at),
        ("i-a", CommandStatus::Success, Some(t(2)), Some(t(0)))
    );
    assert_eq!(
        (listed[1].status, listed[1].status_details.as_deref()),
        (CommandStatus::Failed, Some("Undeliverable"))
    );
    assert_eq!(store.command_invocations("cmd-9").await.unwrap(), listed);

    // Ids from outside (an HTTP API URL, say) that name nothing.
    let nowhere = WindowRunId::from(999_999);
    let update = WindowRunUpdate {
        status: WindowRunStatus::Succeeded,
        started_at: None,
        ended_at: None,
        sync_unread: None,
    };
    assert!(matches!(
        store.update_window_run(nowhere, &update).await,
        Err(StoreError::NotFound { what: "window run", .. })
    ));
    assert!(matches!(
        store.record_window_task(nowhere, &task).await,
        Err(StoreError::NotFound { what: "window run", .. })
    ));
    let err = store.record_invocations(WindowTaskId::from(999_999), t(0), &invocations).await;
    assert!(matches!(err, Err(StoreError::NotFound { what: "window task", .. })), "{err:?}");
    assert_eq!(store.invocations(task_id).await.unwrap().len(), 2);
}

fn origin(line: u32) -> Origin {
    Origin { file: Arc::new(PathBuf::from("config/exceptions.toml")), line, col: 1 }
}

fn exception(name: &str, scope: ExceptionScope, expires: NaiveDate) -> Exception {
    Exception {
        name: name.into(),
        patches: vec!["KB1".into(), "KB2".into()],
        scope,
        reason: "the vendor's fix breaks the payment service".into(),
        owner: "alice@example.com".into(),
        expires,
        origin: origin(3),
    }
}

async fn exception_snapshots_are_evidence(db: TestDb) {
    let store = db.open().await;
    let day = |d| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
    let configured = vec![
        exception("legacy-app", ExceptionScope::Instances(vec!["i-a".into(), "i-b".into()]), day(10)),
        exception(
            "batch",
            ExceptionScope::Group(Located { value: "batch".into(), origin: origin(9) }),
            day(3),
        ),
    ];
    let first = store.record_exceptions(&configured, t(0)).await.unwrap();
    assert!(first.created);
    let same = store.record_exceptions(&configured, t(5)).await.unwrap();
    assert_eq!((same.id, same.created, same.taken_at), (first.id, false, t(0)), "unchanged: no new snapshot");

    let in_force = store.exceptions_in_force(t(1)).await.unwrap();
    assert_eq!(in_force.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["batch", "legacy-app"]);
    let legacy = &in_force[1];
    assert_eq!(legacy.scope, RecordedScope::Instances(vec!["i-a".into(), "i-b".into()]));
    assert_eq!((legacy.expires, legacy.origin.as_str()), (day(10), "config/exceptions.toml:3:1"));
    assert_eq!(in_force[0].scope, RecordedScope::Group("batch".into()));
    // "batch" expires on 3 March: in force through that day, gone on the 4th (t(72) = 5 March).
    assert_eq!(store.exceptions_in_force(t(47)).await.unwrap().len(), 2);
    assert_eq!(store.exceptions_in_force(t(48)).await.unwrap().len(), 1);
    assert!(
        store.exceptions_in_force(t(-1)).await.unwrap().is_empty(),
        "nothing recorded before the first snapshot"
    );

    // The configuration drops "batch": a new snapshot, while the old one remains evidence.
    let second = store.record_exceptions(&configured[..1], t(6)).await.unwrap();
    assert!(second.created && second.id != first.id);
    assert_eq!(store.exceptions_in_force(t(7)).await.unwrap().len(), 1);
    assert_eq!(store.exceptions_in_force(t(5)).await.unwrap().len(), 2, "as of before the change");
}

async fn listings_use_the_indexes(db: TestDb) {
    let store = db.open().await;
    let fleet = Fleet::new(20, 5);
    let observations = fleet.observations(PatchState::Missing);
    sync(&store, &fleet.scans(&observations, t(0))).await;
    let open = FindingQuery { status: Some(FindingStatus::Open), limit: Some(100), ..Default::default() };
    let period = FindingQuery {
        remediated_since: Some(t(0)),
        remediated_until: Some(t(5)),
        limit: Some(100),
        ..Default::default()
    };
    if db.backend == Backend::Sqlite {
        let open_plan = store.explain_findings(&open).await.unwrap().join("\n");
        let period_plan = store.explain_findings(&period).await.unwrap().join("\n");
        assert!(open_plan.contains("COVERING INDEX findings_open"), "{open_plan}");
        assert!(period_plan.contains("findings_remediated"), "{period_plan}");
        assert!(!open_plan.contains("TEMP B-TREE"), "no sort: {open_plan}");
        assert!(!period_plan.contains("TEMP B-TREE"), "no sort: {period_plan}");
    } else {
        // PostgreSQL's planner prefers a sequential or bitmap scan and a sort on a table this
        // small, whatever the indexes. With those priced out (still possible, never preferred),
        // the plan shows whether an index serves the query in its order. The benchmark shows
        // the plans on a million findings.
        let priced_out = ["enable_seqscan", "enable_bitmapscan", "enable_sort"];
        let url =
            priced_out.iter().fold(db.url.clone(), |url, option| format!("{url}&options[{option}]=off"));
        let store =
            Store::open(&url, &OpenOptions { migrate: false, ..OpenOptions::default() }).await.unwrap();
        let open_plan = store.explain_findings(&open).await.unwrap().join("\n");
        let period_plan = store.explain_findings(&period).await.unwrap().join("\n");
        assert!(open_plan.contains("Index Only Scan using findings_open on"), "covering: {open_plan}");
        assert!(period_plan.contains("using findings_remediated on"), "{period_plan}");
        assert!(!open_plan.contains("Sort"), "no sort: {open_plan}");
        assert!(!period_plan.contains("Sort"), "no sort: {period_plan}");
    }
}

async fn concurrent_writers_are_serialised(db: TestDb) {
    use PatchState::*;
    // Two stores (two pools, as two patchd processes would have) on one database, syncing the
    // same instances at once: each sync reads the findings the other may be writing.
    let (one, two) = (db.open().await, db.open().await);
    let fleet = Fleet::new(300, 10);
    let missing = fleet.observations(Missing);
    let failed = fleet.observations(Failed);
    let (a, b) = (fleet.scans(&missing, t(1)), fleet.scans(&failed, t(2)));
    let sync_a = ComplianceSync { source: "one", started_at: t(1), scans: &a };
    let sync_b = ComplianceSync { source: "two", started_at: t(2), scans: &b };
    let (ra, rb) = tokio::join!(one.record_sync(&sync_a), two.record_sync(&sync_b));
    let (ra, rb) = (ra.expect("first writer"), rb.expect("second writer"));
    // Whichever committed first opened the findings; the other saw them and either changed
    // their state (the later scan) or was ignored as stale (the earlier one).
    assert_eq!(ra.opened + rb.opened, 3_000);
    assert_eq!(count(&db, "findings").await, 3_000);
    assert_eq!(count(&db, "findings WHERE state = 'FAILED'").await, 3_000, "the later scan wins");
    let transitions = count(&db, "finding_transitions").await;
    assert!(transitions == 3_000 || transitions == 6_000, "{transitions}");
    assert_eq!(store_patch_first_seen(&one).await, Some(if ra.opened > 0 { t(1) } else { t(2) }));
}

async fn store_patch_first_seen(store: &Store) -> Option<DateTime<Utc>> {
    store.patches().await.unwrap().iter().filter_map(|p| p.first_seen_missing).min()
}

/// What `/readyz` asks of the database, on each backend.
async fn the_database_answers_a_ping(db: TestDb) {
    let store = db.open().await;
    store.ping().await.expect("a reachable database answers");
    store.close().await;
    assert!(store.ping().await.is_err(), "a closed store does not");
}

/// The store's side of a sync that lists only what may have changed: the recorded end times and
/// open findings it decides from, SSM's counts as the summary, runs recorded `incomplete`, and
/// the backlog of instances it could not read.
async fn what_a_sync_reads_first_and_what_it_could_not_read(db: TestDb) {
    use PatchState::*;
    let store = db.open().await;
    let a = [p("KB1", Missing), installed("KB2", Installed, t(-1))];
    let b = [p("KB3", Failed)];
    sync(&store, &[scan("i-a", t(0), &a), scan("i-b", t(1), &b)]).await;

    let ids: Vec<String> = ["i-a", "i-b", "i-new"].iter().map(|s| s.to_string()).collect();
    let recorded = store.recorded_compliance(ACCOUNT, REGION, &ids).await.unwrap();
    assert_eq!(recorded.len(), 2, "an instance never scanned is absent: {recorded:?}");
    assert_eq!(recorded["i-a"].operation_end, Some(t(0)));
    assert_eq!(recorded["i-a"].open_patches, vec!["KB1".to_string()], "KB2 was never a finding");
    assert_eq!(
        (recorded["i-b"].operation_end, &recorded["i-b"].open_patches[..]),
        (Some(t(1)), &["KB3".to_string()][..])
    );
    assert!(
        store.recorded_compliance("999999999999", REGION, &ids).await.unwrap().is_empty(),
        "another account's"
    );

    // A partial listing with SSM's counts: the summary keeps the counts, the unlisted finding
    // stays as it was.
    let counts = StateCounts { installed: 40, missing: 1, not_applicable: 7, ..StateCounts::default() };
    let partial = [p("KB9", Missing)];
    let later = InstanceScan { counts: Some(counts), ..scan("i-b", t(2), &partial) };
    sync(&store, &[later]).await;
    let records = store.instances().await.unwrap();
    let b_summary =
        records.iter().find(|r| r.instance.instance_id == "i-b").and_then(|r| r.compliance.clone()).unwrap();
    assert_eq!(b_summary.counts, counts);
    let open: BTreeSet<String> = store
        .recorded_compliance(ACCOUNT, REGION, &ids)
        .await
        .unwrap()
        .remove("i-b")
        .unwrap()
        .open_patches
        .into_iter()
        .collect();
    assert_eq!(open, BTreeSet::from(["KB3".to_string(), "KB9".to_string()]), "KB3 was not listed: left open");

    // The backlog: failures join it or count an attempt more; reads take instances out.
    assert!(store.sync_backlog(None).await.unwrap().is_empty());
    store
        .update_sync_backlog(ACCOUNT, REGION, &[("i-a", "throttled"), ("i-b", "500")], &[], t(3))
        .await
        .unwrap();
    store.update_sync_backlog(ACCOUNT, REGION, &[("i-a", "throttled again")], &["i-b"], t(4)).await.unwrap();
    store.update_sync_backlog("999999999999", REGION, &[("i-a", "elsewhere")], &[], t(5)).await.unwrap();
    let backlog = store.sync_backlog(Some((ACCOUNT, REGION))).await.unwrap();
    assert_eq!(backlog.len(), 1, "{backlog:?}");
    let entry = &backlog[0];
    assert_eq!(
        (
            entry.instance_id.as_str(),
            entry.first_failed_at,
            entry.last_failed_at,
            entry.attempts,
            entry.last_error.as_str()
        ),
        ("i-a", t(3), t(4), 2, "throttled again")
    );
    assert_eq!(store.sync_backlog(None).await.unwrap().len(), 2, "both accounts");
    store.update_sync_backlog(ACCOUNT, REGION, &[], &["i-a"], t(6)).await.unwrap();
    assert!(store.sync_backlog(Some((ACCOUNT, REGION))).await.unwrap().is_empty());
    assert_eq!(
        store.managed_platforms(ACCOUNT, REGION).await.unwrap(),
        Vec::<String>::new(),
        "no inventory yet"
    );

    // A run whose sync left instances unread is `incomplete`, with the count.
    let run = store
        .record_window_run(&NewWindowRun {
            window: "w",
            scheduled_start: t(0),
            account: ACCOUNT,
            region: REGION,
            status: WindowRunStatus::Running,
            started_at: Some(t(0)),
        })
        .await
        .unwrap();
    let update = WindowRunUpdate {
        status: WindowRunStatus::Incomplete,
        started_at: None,
        ended_at: Some(t(1)),
        sync_unread: Some(3),
    };
    store.update_window_run(run, &update).await.unwrap();
    let runs = store.window_runs(&WindowRunQuery::default()).await.unwrap();
    assert_eq!((runs[0].status, runs[0].sync_unread), (WindowRunStatus::Incomplete, 3));
}
