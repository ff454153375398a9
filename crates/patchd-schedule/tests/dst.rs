//! Daylight-saving changes: skipped local times fire at the end of the gap,
//! repeated local times fire once at their first occurrence, and iterating
//! never repeats or goes backwards.

mod common;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use common::{check, check_all, expression, instant, schedule, tz};
use patchd_schedule::{Expression, Schedule, ScheduleSpec};

#[test]
fn berlin_spring_forward_fires_at_the_end_of_the_gap() {
    check(
        "cron(30 2 * * ? *)",
        "Europe/Berlin",
        0,
        "2026-03-27T12:00:00Z",
        &["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"],
    );
}

#[test]
fn berlin_fall_back_fires_once_at_the_first_occurrence() {
    check(
        "cron(30 2 * * ? *)",
        "Europe/Berlin",
        0,
        "2026-10-23T12:00:00Z",
        &["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"],
    );
    // Asked from inside the repeated hour (02:10 CET, second occurrence), the
    // 02:30 match has already fired.
    check(
        "cron(30 2 * * ? *)",
        "Europe/Berlin",
        0,
        "2026-10-25T02:10:00+01:00",
        &["2026-10-26T02:30:00+01:00"],
    );
}

#[test]
fn new_york_spring_forward_fires_at_the_end_of_the_gap() {
    check(
        "cron(30 2 * * ? *)",
        "America/New_York",
        0,
        "2026-03-06T12:00:00Z",
        &["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
    );
}

#[test]
fn new_york_fall_back() {
    // New York repeats 01:00-01:59, so 02:30 is unambiguous.
    check(
        "cron(30 2 * * ? *)",
        "America/New_York",
        0,
        "2026-10-30T12:00:00Z",
        &["2026-10-31T02:30:00-04:00", "2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"],
    );
    check(
        "cron(30 1 * * ? *)",
        "America/New_York",
        0,
        "2026-10-30T12:00:00Z",
        &["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
    );
    check(
        "cron(30 1 * * ? *)",
        "America/New_York",
        0,
        "2026-11-01T01:00:00-05:00",
        &["2026-11-02T01:30:00-05:00"],
    );
}

#[test]
fn every_fifteen_minutes_across_fall_back_never_repeats() {
    check(
        "cron(0/15 * * * ? *)",
        "Europe/Berlin",
        0,
        "2026-10-24T23:50:00Z",
        &[
            "2026-10-25T00:00:00Z",
            "2026-10-25T00:15:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T00:45:00Z",
            // 01:00Z-01:59Z repeat 02:00-02:59 local, which already fired.
            "2026-10-25T02:00:00Z",
            "2026-10-25T02:15:00Z",
        ],
    );
    check("cron(0/15 * * * ? *)", "Europe/Berlin", 0, "2026-10-25T01:10:00Z", &["2026-10-25T02:00:00Z"]);
    check(
        "cron(0/15 * * * ? *)",
        "America/New_York",
        0,
        "2026-11-01T04:50:00Z",
        &[
            "2026-11-01T05:00:00Z",
            "2026-11-01T05:15:00Z",
            "2026-11-01T05:30:00Z",
            "2026-11-01T05:45:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T07:15:00Z",
        ],
    );
}

#[test]
fn every_second_from_inside_the_repeated_hour() {
    // Every second of 02:00-02:59 CET already fired at its first occurrence.
    let started = std::time::Instant::now();
    check(
        "cron(* * * * * ? *)",
        "Europe/Berlin",
        0,
        "2026-10-25T01:00:00Z",
        &["2026-10-25T02:00:00Z", "2026-10-25T02:00:01Z"],
    );
    check("cron(* * * * * ? *)", "Europe/Berlin", 0, "2026-10-25T00:59:59Z", &["2026-10-25T02:00:00Z"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn skipped_times_collapse_into_one_firing() {
    // 02:00, 02:15, 02:30 and 02:45 do not exist on 2026-03-29 in Berlin.
    check(
        "cron(0/15 2 * * ? *)",
        "Europe/Berlin",
        0,
        "2026-03-28T12:00:00Z",
        &["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:15:00+02:00"],
    );
    // 03:00 CEST is both the end of the gap and a match itself: one firing.
    check(
        "cron(0/15 * * * ? *)",
        "Europe/Berlin",
        0,
        "2026-03-29T00:30:00Z",
        &["2026-03-29T00:45:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:15:00Z"],
    );
}

#[test]
fn lord_howe_half_hour_shifts() {
    // 02:00-02:29 are skipped on 2026-10-04.
    check(
        "cron(15 2 * * ? *)",
        "Australia/Lord_Howe",
        0,
        "2026-10-02T12:00:00Z",
        &["2026-10-03T02:15:00+10:30", "2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
    );
    // 01:30-01:59 repeat on 2026-04-05.
    check(
        "cron(45 1 * * ? *)",
        "Australia/Lord_Howe",
        0,
        "2026-04-03T00:00:00Z",
        &["2026-04-04T01:45:00+11:00", "2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
    );
}

#[test]
fn offset_days_land_on_dst_changes() {
    // Last Friday of March 2026 is the 27th; two days later is the gap day.
    check(
        "cron(30 2 ? * 6L *)",
        "Europe/Berlin",
        2,
        "2026-03-02T00:00:00Z",
        &["2026-03-29T03:00:00+02:00", "2026-04-26T02:30:00+02:00"],
    );
    // Fourth Friday of October 2026 is the 23rd; two days later 02:30 repeats.
    check(
        "cron(30 2 ? * FRI#4 *)",
        "Europe/Berlin",
        2,
        "2026-10-01T00:00:00Z",
        &["2026-10-25T02:30:00+02:00", "2026-11-29T02:30:00+01:00"],
    );
    // The offset counts local days, not 48 hours: Friday 09:00 EST plus two
    // days is Sunday 09:00 EDT, 47 hours later.
    check(
        "cron(0 9 ? * FRI#1 *)",
        "America/New_York",
        2,
        "2026-03-01T00:00:00Z",
        &["2026-03-08T09:00:00-04:00"],
    );
}

#[test]
fn at_in_a_gap_or_overlap() {
    check_all(
        "at(2026-03-29T02:30:00)",
        "Europe/Berlin",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-03-29T01:00:00Z"],
    );
    check_all(
        "at(2026-10-25T02:30:00)",
        "Europe/Berlin",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-10-25T00:30:00Z"],
    );
    // Samoa skipped all of 2011-12-30: a 24-hour gap.
    check_all(
        "at(2011-12-30T12:00:00)",
        "Pacific/Apia",
        0,
        "2011-01-01T00:00:00Z",
        &["2011-12-30T10:00:00Z"],
    );
}

/// Reference firings by brute force over every UTC minute in a window: a
/// minute fires when some matching local time lies after every local time
/// seen so far (so repeated times only count once) and at or before this
/// minute's local time (so skipped times count at the end of the gap).
fn brute_force(
    source: &str,
    zone: &str,
    offset_days: u8,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let Expression::Cron(cron) = expression(source) else {
        panic!("{source} is not a cron expression");
    };
    let timezone = tz(zone);
    let local = |t: DateTime<Utc>| t.with_timezone(&timezone).naive_local();
    let offset = TimeDelta::days(i64::from(offset_days));
    let matches = |f: NaiveDateTime| cron.matches(f - offset);
    let minute = TimeDelta::minutes(1);
    let mut seen = local(from - minute);
    let mut out = Vec::new();
    let mut u = from;
    while u <= to {
        let now = local(u);
        let mut candidate = seen + minute;
        while candidate <= now {
            if matches(candidate) {
                out.push(u);
                break;
            }
            candidate += minute;
        }
        seen = seen.max(now);
        u += minute;
    }
    out
}

#[test]
fn agrees_with_brute_force_around_dst_changes() {
    let sources = [
        "cron(0/15 * * * ? *)",
        "cron(7,37 * * * ? *)",
        "cron(30 2 * * ? *)",
        "cron(45 1 * * ? *)",
        "cron(0 0-3 * * ? *)",
        "cron(*/10 1-3 ? * SUN *)",
        "cron(30 2 ? * FRI#4 *)",
        "cron(0 2 L * ? *)",
    ];
    let windows = [
        ("Europe/Berlin", "2026-03-28T00:00:00Z"),
        ("Europe/Berlin", "2026-10-24T00:00:00Z"),
        ("America/New_York", "2026-03-07T00:00:00Z"),
        ("America/New_York", "2026-10-31T00:00:00Z"),
        ("Australia/Lord_Howe", "2026-04-04T00:00:00Z"),
        ("Australia/Lord_Howe", "2026-10-03T00:00:00Z"),
        ("Asia/Kolkata", "2026-10-24T00:00:00Z"),
    ];
    for source in sources {
        for (zone, from) in windows {
            for offset_days in [0, 2] {
                let from = instant(from);
                let to = from + TimeDelta::days(3);
                let expected = brute_force(source, zone, offset_days, from, to);
                let got: Vec<DateTime<Utc>> = schedule(source, zone, offset_days)
                    .firings_after(from - TimeDelta::seconds(1))
                    .take_while(|t| *t <= to)
                    .collect();
                assert_eq!(got, expected, "{source} in {zone} offset {offset_days} from {from}");
            }
        }
    }
}

#[test]
fn firings_after_matches_repeated_next_after() {
    let schedule = Schedule::new(ScheduleSpec {
        expression: expression("cron(0/20 0-3 * * ? *)"),
        timezone: tz("Europe/Berlin"),
        offset_days: 0,
        start: None,
        end: None,
    })
    .ok();
    let Some(schedule) = schedule else {
        panic!("schedule rejected");
    };
    let after = instant("2026-10-24T12:00:00Z");
    let lazy: Vec<_> = schedule.firings_after(after).take(30).collect();
    let mut manual = Vec::new();
    let mut cursor = after;
    while manual.len() < 30 {
        let Some(next) = schedule.next_after(cursor) else {
            break;
        };
        manual.push(next);
        cursor = next;
    }
    assert_eq!(lazy, manual);
    assert!(lazy.windows(2).all(|w| w[0] < w[1]));
}
