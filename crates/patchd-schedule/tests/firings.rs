//! Firing instants of cron, rate and at expressions, without DST effects
//! (those are in `dst.rs`).

mod common;

use common::{bounded, check, check_all, check_schedule, expression, instant, tz};
use patchd_schedule::{Expression, Schedule, ScheduleError, ScheduleSpec};

#[test]
fn ssm_documentation_examples() {
    // Third Thursday of the month.
    check(
        "cron(0 2 ? * THU#3 *)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-15T02:00:00Z",
            "2026-02-19T02:00:00Z",
            "2026-03-19T02:00:00Z",
            "2026-04-16T02:00:00Z",
            "2026-05-21T02:00:00Z",
        ],
    );
    // Weekdays; 2026-01-02 is a Friday.
    check(
        "cron(15 10 ? * MON-FRI *)",
        "UTC",
        0,
        "2026-01-02T10:15:00Z",
        &[
            "2026-01-05T10:15:00Z",
            "2026-01-06T10:15:00Z",
            "2026-01-07T10:15:00Z",
            "2026-01-08T10:15:00Z",
            "2026-01-09T10:15:00Z",
            "2026-01-12T10:15:00Z",
        ],
    );
    // Last day of the month.
    check(
        "cron(0 2 L * ? *)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-31T02:00:00Z", "2026-02-28T02:00:00Z", "2026-03-31T02:00:00Z", "2026-04-30T02:00:00Z"],
    );
    // Last Friday of the month.
    check(
        "cron(15 10 ? * 6L *)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-30T10:15:00Z", "2026-02-27T10:15:00Z", "2026-03-27T10:15:00Z", "2026-04-24T10:15:00Z"],
    );
}

#[test]
fn names_and_numbers_mean_the_same_day() {
    let by_name = schedule_firings("cron(15 10 ? * FRIL *)");
    assert_eq!(by_name, schedule_firings("cron(15 10 ? * 6L *)"));
    assert_eq!(schedule_firings("cron(0 2 ? * tue#2 *)"), schedule_firings("cron(0 2 ? * 3#2 *)"));
    assert_eq!(schedule_firings("cron(0 2 ? jan-mar MON *)"), schedule_firings("cron(0 2 ? 1-3 2 *)"));
}

fn schedule_firings(source: &str) -> Vec<chrono::DateTime<chrono::Utc>> {
    common::schedule(source, "UTC", 0).firings_after(instant("2026-01-01T00:00:00Z")).take(12).collect()
}

#[test]
fn last_day_of_february_follows_leap_years() {
    check(
        "cron(0 0 L 2 ? *)",
        "UTC",
        0,
        "2026-06-01T00:00:00Z",
        &["2027-02-28T00:00:00Z", "2028-02-29T00:00:00Z", "2029-02-28T00:00:00Z"],
    );
    // 2100 is divisible by 100 but not by 400.
    check(
        "cron(0 0 L 2 ? *)",
        "UTC",
        0,
        "2099-06-01T00:00:00Z",
        &["2100-02-28T00:00:00Z", "2101-02-28T00:00:00Z"],
    );
    check("cron(0 0 29 2 ? *)", "UTC", 0, "2097-01-01T00:00:00Z", &["2104-02-29T00:00:00Z"]);
}

#[test]
fn last_weekday_of_the_month() {
    // Jan 2026 ends on a Saturday, Feb 2026 on a Saturday, Mar on a Tuesday,
    // May on a Sunday.
    check(
        "cron(0 18 LW * ? *)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-30T18:00:00Z",
            "2026-02-27T18:00:00Z",
            "2026-03-31T18:00:00Z",
            "2026-04-30T18:00:00Z",
            "2026-05-29T18:00:00Z",
        ],
    );
}

#[test]
fn nearest_weekday_stays_in_the_month() {
    // 2026-08-01 is a Saturday: the nearest weekday inside August is Monday 3rd,
    // not Friday July 31st. Feb 1st and Mar 1st 2026 are Sundays.
    check(
        "cron(0 0 1W * ? 2026)",
        "UTC",
        0,
        "2026-01-15T00:00:00Z",
        &[
            "2026-02-02T00:00:00Z",
            "2026-03-02T00:00:00Z",
            "2026-04-01T00:00:00Z",
            "2026-05-01T00:00:00Z",
            "2026-06-01T00:00:00Z",
            "2026-07-01T00:00:00Z",
            "2026-08-03T00:00:00Z",
        ],
    );
    // 2026-05-31 is a Sunday: Friday 29th, not Monday June 1st. 2026-01-31 is
    // a Saturday: Friday 30th. 30-day months have no 31st and are skipped.
    check(
        "cron(0 0 31W * ? 2026)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-30T00:00:00Z", "2026-03-31T00:00:00Z", "2026-05-29T00:00:00Z", "2026-07-31T00:00:00Z"],
    );
    // 2026-03-15 is a Sunday, 2026-08-15 a Saturday.
    check(
        "cron(0 0 15W 3,8 ? 2026)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-03-16T00:00:00Z", "2026-08-14T00:00:00Z"],
    );
    // February 2027 ends on Sunday the 28th.
    check("cron(0 0 28W 2 ? 2027)", "UTC", 0, "2026-01-01T00:00:00Z", &["2027-02-26T00:00:00Z"]);
}

#[test]
fn fifth_weekday_skips_months_without_one() {
    check(
        "cron(0 0 ? * FRI#5 2026)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-30T00:00:00Z", "2026-05-29T00:00:00Z", "2026-07-31T00:00:00Z", "2026-10-30T00:00:00Z"],
    );
    check_all("cron(0 0 ? 2 MON#5 2027)", "UTC", 0, "2026-01-01T00:00:00Z", &[]);
}

#[test]
fn bare_l_in_day_of_week_is_saturday() {
    // 2026-01-03 is a Saturday.
    check(
        "cron(0 9 ? * L *)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-03T09:00:00Z", "2026-01-10T09:00:00Z"],
    );
}

#[test]
fn wrapping_weekday_range() {
    // FRI-MON is Fri, Sat, Sun, Mon; 2026-01-01 is a Thursday.
    check(
        "cron(0 12 ? * FRI-MON *)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &[
            "2026-01-02T12:00:00Z",
            "2026-01-03T12:00:00Z",
            "2026-01-04T12:00:00Z",
            "2026-01-05T12:00:00Z",
            "2026-01-09T12:00:00Z",
        ],
    );
}

#[test]
fn year_field_bounds() {
    check_all("cron(0 3 1 1 ? 2030)", "UTC", 0, "2026-01-01T00:00:00Z", &["2030-01-01T03:00:00Z"]);
    check_all(
        "cron(0 0 1 1 ? 2197-2199)",
        "UTC",
        0,
        "2026-01-01T00:00:00Z",
        &["2197-01-01T00:00:00Z", "2198-01-01T00:00:00Z", "2199-01-01T00:00:00Z"],
    );
    check_all("cron(0 0 * * ? *)", "UTC", 0, "2199-12-30T12:00:00Z", &["2199-12-31T00:00:00Z"]);
    check_all("cron(0 0 * * ? *)", "UTC", 0, "2250-01-01T00:00:00Z", &[]);
    check(
        "cron(0 0 1 1 ? 2026/4)",
        "UTC",
        0,
        "2026-06-01T00:00:00Z",
        &["2030-01-01T00:00:00Z", "2034-01-01T00:00:00Z"],
    );
}

#[test]
fn impossible_schedules_return_none_quickly() {
    let started = std::time::Instant::now();
    check_all("cron(0 0 30 2 ? *)", "UTC", 0, "1970-01-01T00:00:00Z", &[]);
    check_all("cron(0 0 31 4,6,9,11 ? *)", "Europe/Berlin", 0, "1970-01-01T00:00:00Z", &[]);
    check_all("cron(0 0 ? 2 MON#5 2026-2027)", "UTC", 0, "2026-01-01T00:00:00Z", &[]);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn seconds_field() {
    check(
        "cron(30 0/20 * * * ? *)",
        "UTC",
        0,
        "2026-01-01T00:40:30Z",
        &["2026-01-01T01:00:30Z", "2026-01-01T01:20:30Z", "2026-01-01T01:40:30Z"],
    );
    check(
        "cron(*/15 0 0 1 1 ? 2027)",
        "UTC",
        0,
        "2026-12-31T23:59:59.5Z",
        &["2027-01-01T00:00:00Z", "2027-01-01T00:00:15Z", "2027-01-01T00:00:30Z", "2027-01-01T00:00:45Z"],
    );
}

#[test]
fn cron_in_a_timezone_fires_at_local_time() {
    // Winter in Berlin is UTC+1, summer UTC+2; Kolkata is UTC+5:30 all year.
    check(
        "cron(0 2 ? * TUE#2 *)",
        "Europe/Berlin",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-13T01:00:00Z", "2026-02-10T01:00:00Z"],
    );
    check("cron(0 2 ? * TUE#2 *)", "Europe/Berlin", 0, "2026-07-01T00:00:00Z", &["2026-07-14T00:00:00Z"]);
    check(
        "cron(0 1 * * ? *)",
        "Asia/Kolkata",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-01-01T19:30:00Z", "2026-01-02T19:30:00Z"],
    );
}

#[test]
fn offset_moves_matches_days_later() {
    // Two days after Patch Tuesday (the second Tuesday).
    check(
        "cron(0 2 ? * TUE#2 *)",
        "UTC",
        2,
        "2026-01-01T00:00:00Z",
        &["2026-01-15T02:00:00Z", "2026-02-12T02:00:00Z", "2026-03-12T02:00:00Z"],
    );
    // Across the month end, including a leap February.
    check(
        "cron(0 2 L * ? *)",
        "UTC",
        3,
        "2028-01-01T00:00:00Z",
        &["2028-01-03T02:00:00Z", "2028-02-03T02:00:00Z", "2028-03-03T02:00:00Z", "2028-04-03T02:00:00Z"],
    );
    // Across the year end: last Friday of December 2026 is the 25th.
    check("cron(0 22 ? 12 6L *)", "UTC", 6, "2026-12-01T00:00:00Z", &["2026-12-31T22:00:00Z"]);
    check("cron(0 22 ? 12 FRI#4 2026)", "UTC", 6, "2026-12-01T00:00:00Z", &["2026-12-31T22:00:00Z"]);
    // A match at the end of 2199 still fires, in 2200.
    check_all("cron(0 0 31 12 ? 2199)", "UTC", 6, "2199-01-01T00:00:00Z", &["2200-01-06T00:00:00Z"]);
}

#[test]
fn offset_search_starts_early_enough() {
    // The match on Tuesday the 13th fires on Thursday the 15th; asking after
    // the 14th (after the match but before the firing) must still find it.
    check(
        "cron(0 2 ? * TUE#2 *)",
        "UTC",
        2,
        "2026-01-14T00:00:00Z",
        &["2026-01-15T02:00:00Z", "2026-02-12T02:00:00Z"],
    );
}

#[test]
fn rate_is_anchored_at_the_epoch_without_a_start() {
    check("rate(1 day)", "UTC", 0, "2026-01-01T12:00:00Z", &["2026-01-02T00:00:00Z"]);
    check(
        "rate(5 minutes)",
        "Europe/Berlin",
        0,
        "2026-01-01T00:02:30Z",
        &["2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:15:00Z"],
    );
    // 7 hours does not divide a day, so the phase is fixed by the epoch:
    // 2026-01-01T00:00Z is 490,896 = 7 * 70,128 hours after it.
    check(
        "rate(7 hours)",
        "UTC",
        0,
        "2025-12-31T23:00:00Z",
        &["2026-01-01T00:00:00Z", "2026-01-01T07:00:00Z", "2026-01-01T14:00:00Z"],
    );
    check("rate(1 minute)", "UTC", 0, "1969-12-31T23:59:30Z", &["1970-01-01T00:00:00Z"]);
}

#[test]
fn rate_is_anchored_at_the_start_and_ignores_dst() {
    // Berlin springs forward at 01:00Z on 2026-03-29; the firings do not move.
    let schedule = bounded("rate(2 hours)", "Europe/Berlin", 0, Some("2026-03-28T22:30:00Z"), None);
    check_schedule(
        &schedule,
        "2026-03-01T00:00:00Z",
        &["2026-03-28T22:30:00Z", "2026-03-29T00:30:00Z", "2026-03-29T02:30:00Z", "2026-03-29T04:30:00Z"],
        false,
    );
    check_schedule(&schedule, "2026-03-29T00:30:00Z", &["2026-03-29T02:30:00Z"], false);
    let odd_start =
        bounded("rate(1 minute)", "UTC", 0, Some("2026-01-01T00:00:00.5Z"), Some("2026-01-01T00:02:00.5Z"));
    check_schedule(
        &odd_start,
        "2025-01-01T00:00:00Z",
        &["2026-01-01T00:00:00.5Z", "2026-01-01T00:01:00.5Z", "2026-01-01T00:02:00.5Z"],
        true,
    );
}

#[test]
fn at_fires_once_at_local_time() {
    check_all(
        "at(2026-12-01T03:00:00)",
        "Europe/Berlin",
        0,
        "2026-01-01T00:00:00Z",
        &["2026-12-01T02:00:00Z"],
    );
    check_all("at(2026-12-01T03:00:00)", "UTC", 0, "2026-12-01T03:00:00Z", &[]);
    check_all(
        "at(2026-12-01T03:00:00)",
        "America/New_York",
        0,
        "2026-12-01T07:59:59Z",
        &["2026-12-01T08:00:00Z"],
    );
}

#[test]
fn start_and_end_are_inclusive() {
    let schedule =
        bounded("cron(0 2 * * ? *)", "UTC", 0, Some("2026-01-05T02:00:00Z"), Some("2026-01-07T02:00:00Z"));
    check_schedule(
        &schedule,
        "2026-01-01T00:00:00Z",
        &["2026-01-05T02:00:00Z", "2026-01-06T02:00:00Z", "2026-01-07T02:00:00Z"],
        true,
    );
    check_schedule(&schedule, "2026-01-07T02:00:00Z", &[], true);
    let at = bounded("at(2026-12-01T03:00:00)", "UTC", 0, Some("2026-12-02T00:00:00Z"), None);
    check_schedule(&at, "2026-01-01T00:00:00Z", &[], true);
    let equal = bounded(
        "at(2026-12-01T03:00:00)",
        "UTC",
        0,
        Some("2026-12-01T03:00:00Z"),
        Some("2026-12-01T03:00:00Z"),
    );
    check_schedule(&equal, "2026-01-01T00:00:00Z", &["2026-12-01T03:00:00Z"], true);
}

fn spec(source: &str, offset_days: u8, start: Option<&str>, end: Option<&str>) -> ScheduleSpec {
    ScheduleSpec {
        expression: expression(source),
        timezone: tz("UTC"),
        offset_days,
        start: start.map(instant),
        end: end.map(instant),
    }
}

#[test]
fn invalid_schedules_are_rejected() {
    let cases = [
        (
            spec("rate(1 day)", 2, None, None),
            ScheduleError::OffsetNeedsCron { offset_days: 2 },
            "an offset of 2 days only applies to cron(...) schedules; remove the offset or use a cron expression",
        ),
        (
            spec("at(2026-12-01T03:00:00)", 1, None, None),
            ScheduleError::OffsetNeedsCron { offset_days: 1 },
            "an offset of 1 day only applies to cron(...) schedules; remove the offset or use a cron expression",
        ),
        (
            spec("cron(0 2 ? * TUE#2 *)", 7, None, None),
            ScheduleError::OffsetOutOfRange { offset_days: 7 },
            "an offset of 7 days is out of range; use 1 to 6 days, or 0 for none",
        ),
        (
            spec(
                "cron(0 2 ? * TUE#2 *)",
                0,
                Some("2026-02-01T00:00:00Z"),
                Some("2026-01-01T00:00:00Z"),
            ),
            ScheduleError::EndBeforeStart {
                start: instant("2026-02-01T00:00:00Z"),
                end: instant("2026-01-01T00:00:00Z"),
            },
            "the end 2026-01-01 00:00:00 UTC is before the start 2026-02-01 00:00:00 UTC; move the end after the start",
        ),
    ];
    for (spec, error, message) in cases {
        let source = spec.expression.to_string();
        let got = Schedule::new(spec).err();
        assert_eq!(got.as_ref(), Some(&error), "{source}");
        assert_eq!(got.map(|e| e.to_string()).as_deref(), Some(message));
    }
    assert!(Schedule::new(spec("cron(0 2 ? * TUE#2 *)", 6, None, None)).is_ok());
}

#[test]
fn accessors_return_the_spec() {
    let schedule = bounded("cron(0 2 ? * TUE#2 *)", "Europe/Berlin", 2, Some("2026-01-01T00:00:00Z"), None);
    assert_eq!(schedule.expression().to_string(), "cron(0 2 ? * TUE#2 *)");
    assert_eq!(schedule.timezone(), tz("Europe/Berlin"));
    assert_eq!(schedule.offset_days(), 2);
    assert_eq!(schedule.start(), Some(instant("2026-01-01T00:00:00Z")));
    assert_eq!(schedule.end(), None);
    assert!(matches!(schedule.expression(), Expression::Cron(_)));
}

#[test]
fn extreme_instants_do_not_panic() {
    use chrono::{DateTime, Utc};
    let sources = [
        "cron(0 2 ? * TUE#2 *)",
        "cron(* * * * ? *)",
        "rate(1 minute)",
        "rate(4294967295 days)",
        "at(9999-12-31T23:59:59)",
        "at(0000-01-01T00:00:00)",
    ];
    let zones = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "America/New_York"];
    let instants = [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, DateTime::UNIX_EPOCH];
    for source in sources {
        for zone in zones {
            for bound in [None, Some(DateTime::<Utc>::MIN_UTC), Some(DateTime::<Utc>::MAX_UTC)] {
                let schedule = Schedule::new(ScheduleSpec {
                    expression: expression(source),
                    timezone: tz(zone),
                    offset_days: 0,
                    start: bound,
                    end: None,
                });
                // Every one of these is a valid schedule: skipping a rejected one would leave
                // its extreme instants untried.
                let schedule =
                    schedule.unwrap_or_else(|e| panic!("{source} in {zone} from {bound:?} is refused: {e}"));
                for after in instants {
                    let _ = schedule.next_after(after);
                }
            }
        }
    }
}
