//! Event announcements: each subject is claimed once per level, higher levels supersede lower
//! ones, on SQLite and on PostgreSQL (see `common`).

mod common;

use chrono::{TimeZone, Utc};
use common::TestDb;
use patchd_store::*;

on_both_backends!(
    a_subject_is_claimed_once_per_level,
    invalid_announcements_are_refused,
    ended_conditions_are_forgotten_and_announced_again,
);

fn sla<'a>(subject: &'a str, level: u32, state: &'a str) -> Announcement<'a> {
    Announcement { kind: "sla", subject, level, state }
}

async fn a_subject_is_claimed_once_per_level(db: TestDb) {
    let store = db.open().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap();
    let first = [sla("a/r/i-1/P1", 1, "due-soon"), sla("a/r/i-1/P2", 2, "breached")];
    assert_eq!(store.claim_announcements(&first, at).await.unwrap(), [true, true]);
    assert_eq!(store.claim_announcements(&first, at).await.unwrap(), [false, false], "never twice");

    // due-soon → breached is a new announcement; breached → due-soon is not.
    let later = at + chrono::Duration::days(1);
    let next = [sla("a/r/i-1/P1", 2, "breached"), sla("a/r/i-1/P2", 1, "due-soon")];
    assert_eq!(store.claim_announcements(&next, later).await.unwrap(), [true, false]);
    // Another kind is another namespace.
    let gap = Announcement { kind: "coverage-gap", subject: "a/r/i-1/P1", level: 1, state: "not-managed" };
    assert_eq!(store.claim_announcements(&[gap], later).await.unwrap(), [true]);

    let recorded = store.announcements("sla").await.unwrap();
    let rows: Vec<(&str, u32, &str)> =
        recorded.iter().map(|r| (r.subject.as_str(), r.level, r.state.as_str())).collect();
    assert_eq!(rows, [("a/r/i-1/P1", 2, "breached"), ("a/r/i-1/P2", 2, "breached")]);
    assert_eq!(recorded[0].announced_at, later);
    assert_eq!(recorded[1].announced_at, at, "a refused claim changes nothing");
    assert!(store.claim_announcements(&[], at).await.unwrap().is_empty());
}

async fn invalid_announcements_are_refused(db: TestDb) {
    let store = db.open().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap();
    for bad in
        [sla("", 1, "x"), sla("s", 0, "x"), Announcement { kind: "", subject: "s", level: 1, state: "x" }]
    {
        let error = store.claim_announcements(&[bad], at).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidInput(_)), "{error:?}");
    }
    assert!(store.announcements("sla").await.unwrap().is_empty());
}

async fn ended_conditions_are_forgotten_and_announced_again(db: TestDb) {
    let store = db.open().await;
    let at = Utc.with_ymd_and_hms(2026, 11, 28, 2, 0, 0).unwrap();
    let claims = [
        sla("a/r/i-1/P1", 2, "breached"),
        sla("a/r/i-1/P2", 2, "breached"),
        sla("a/r/i-10/P1", 2, "breached"),
        sla("a/r/i_2/P1", 1, "due-soon"),
    ];
    store.claim_announcements(&claims, at).await.unwrap();
    let gap =
        Announcement { kind: "coverage-gap", subject: "a/r/i-1/not-managed", level: 1, state: "not-managed" };
    store.claim_announcements(&[gap], at).await.unwrap();

    // i-1's P1 was remediated, P2 is still open. i-10 (a prefix of which is i-1) and other
    // kinds are untouched; `_` is matched literally.
    let retired = store
        .retire_announcements("sla", &["a/r/i-1/".into(), "a/r/ixx/".into()], &["a/r/i-1/P2".into()])
        .await
        .unwrap();
    assert_eq!(retired, 1);
    let left: Vec<String> =
        store.announcements("sla").await.unwrap().into_iter().map(|r| r.subject).collect();
    assert_eq!(left, ["a/r/i-1/P2", "a/r/i-10/P1", "a/r/i_2/P1"]);
    assert_eq!(store.announcements("coverage-gap").await.unwrap().len(), 1);
    assert_eq!(
        store.retire_announcements("sla", &["a/r/i-2/".into()], &[]).await.unwrap(),
        0,
        "`_` is no wildcard"
    );

    // Back again: claimed (and so published) once more.
    assert_eq!(store.claim_announcements(&[claims[0]], at).await.unwrap(), [true]);
    assert_eq!(store.retire_announcements("sla", &[], &[]).await.unwrap(), 0);
}
