//! Property tests: parsing never panics, and iterated firings are strictly
//! increasing and land on matching local times (or just after a DST gap).

use chrono::{DateTime, TimeDelta, Utc};
use patchd_schedule::{Expression, Schedule, ScheduleSpec, Tz};
use proptest::prelude::*;
use proptest::sample::select;

const ZONES: [Tz; 5] =
    [Tz::UTC, Tz::Europe__Berlin, Tz::America__New_York, Tz::Australia__Lord_Howe, Tz::Asia__Kolkata];

/// 2026-01-01T00:00:00Z and 2028-01-01T00:00:00Z.
const FROM_2026: i64 = 1_767_225_600;
const UNTIL_2028: i64 = 1_830_297_600;

/// DST changes during 2026-2027 in the zones above that have them, as Unix
/// seconds.
const TRANSITIONS: [(Tz, i64); 12] = [
    (Tz::Europe__Berlin, 1_774_746_000),       // 2026-03-29T01:00Z
    (Tz::Europe__Berlin, 1_792_890_000),       // 2026-10-25T01:00Z
    (Tz::Europe__Berlin, 1_806_195_600),       // 2027-03-28T01:00Z
    (Tz::Europe__Berlin, 1_824_944_400),       // 2027-10-31T01:00Z
    (Tz::America__New_York, 1_772_953_200),    // 2026-03-08T07:00Z
    (Tz::America__New_York, 1_793_512_800),    // 2026-11-01T06:00Z
    (Tz::America__New_York, 1_805_007_600),    // 2027-03-14T07:00Z
    (Tz::America__New_York, 1_825_567_200),    // 2027-11-07T06:00Z
    (Tz::Australia__Lord_Howe, 1_775_314_800), // 2026-04-04T15:00Z
    (Tz::Australia__Lord_Howe, 1_791_041_400), // 2026-10-03T15:30Z
    (Tz::Australia__Lord_Howe, 1_806_764_400), // 2027-04-03T15:00Z
    (Tz::Australia__Lord_Howe, 1_822_491_000), // 2027-10-02T15:30Z
];

/// A zone and a start instant: anywhere in 2026-2027, or close to one of the
/// zone's DST changes (within a day and a half, or within 90 minutes so that
/// the start often falls inside a repeated or skipped hour), where
/// `next_after` has the most to get wrong.
fn zone_and_start() -> impl Strategy<Value = (Tz, i64)> {
    let near = |window: i64| {
        (select(TRANSITIONS.to_vec()), -window..window).prop_map(|((zone, at), delta)| (zone, at + delta))
    };
    prop_oneof![
        1 => (select(ZONES.to_vec()), FROM_2026..UNTIL_2028),
        1 => near(36 * 3_600),
        2 => near(90 * 60),
    ]
}

fn cronish_piece() -> impl Strategy<Value = &'static str> {
    select(vec![
        "*",
        "?",
        "L",
        "W",
        "LW",
        "#",
        "5L",
        "FRIL",
        "15W",
        "TUE#2",
        "0",
        "1",
        "7",
        "59",
        "60",
        "23",
        "24",
        "31",
        "32",
        "1-5",
        "5-1",
        "*/0",
        "*/5",
        "0/15",
        "a/b",
        ",",
        "-",
        "/",
        "JAN",
        "fri",
        "MON-FRI",
        "2026",
        "2199",
        "2200",
        "1969",
        "",
        "(",
        ")",
        " ",
        "  ",
        "\t",
        "minute",
        "minutes",
        "hours",
        "day",
        "2026-12-01T03:00:00",
        "T",
        ":",
        "é",
        "\u{a0}",
        "99999999999999999999",
    ])
}

fn cronish_source() -> impl Strategy<Value = String> {
    (
        select(vec!["cron(", "rate(", "at(", "", "CRON(", "cron (", " cron("]),
        prop::collection::vec((cronish_piece(), select(vec![" ", "", ",", "  "])), 0..9),
        select(vec![")", "", ") x", "))"]),
    )
        .prop_map(|(prefix, pieces, suffix)| {
            let mut source = prefix.to_owned();
            for (piece, separator) in pieces {
                source.push_str(piece);
                source.push_str(separator);
            }
            source.push_str(suffix);
            source
        })
}

/// Parses without panicking; on success the canonical form parses back to
/// the same value and a schedule built from it can be queried; on failure
/// the offset is a character boundary within the source.
fn exercise(source: &str) -> Result<(), TestCaseError> {
    match Expression::parse(source) {
        Ok(expression) => {
            let canonical = expression.to_string();
            prop_assert_eq!(Expression::parse(&canonical), Ok(expression.clone()));
            let schedule = Schedule::new(ScheduleSpec {
                expression,
                timezone: Tz::Europe__Berlin,
                offset_days: 0,
                start: None,
                end: None,
            });
            if let Ok(schedule) = schedule {
                let after = DateTime::from_timestamp(FROM_2026, 0).unwrap_or_default();
                let _ = schedule.firings_after(after).take(3).count();
            }
        }
        Err(err) => {
            // Callers slice the source at the offset to point at a column.
            prop_assert!(source.is_char_boundary(err.offset), "{source:?}: {err:?}");
            prop_assert!(!err.message.is_empty());
        }
    }
    Ok(())
}

fn valid_cron() -> impl Strategy<Value = String> {
    let seconds = select(vec!["", "0 ", "30 ", "*/20 ", "0,45 "]);
    let minutes = select(vec!["*", "0", "15", "*/15", "0-30/10", "45-15", "5,35", "59"]);
    let hours = select(vec!["*", "2", "1-3", "22-2", "*/6", "0,12", "2/5", "23"]);
    let days = select(vec![
        ("?", "*"),
        ("?", "MON-FRI"),
        ("?", "THU#3"),
        ("?", "1#5"),
        ("?", "6L"),
        ("?", "L"),
        ("?", "FRI-MON"),
        ("?", "SUN"),
        ("L", "?"),
        ("LW", "?"),
        ("15W", "?"),
        ("1W", "?"),
        ("31W", "?"),
        ("31", "?"),
        ("*/5", "?"),
        ("1,15", "?"),
        ("29", "?"),
        ("*", "?"),
    ]);
    let months = select(vec!["*", "JAN-JUN", "3,10", "11-2", "*/3", "FEB", "4"]);
    let years = select(vec!["*", "2026-2030", "2026/2", "2027", "2026-2199"]);
    (seconds, minutes, hours, days, months, years).prop_map(
        |(seconds, minutes, hours, (dom, dow), months, years)| {
            format!("cron({seconds}{minutes} {hours} {dom} {months} {dow} {years})")
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_arbitrary_text(source in any::<String>()) {
        exercise(&source)?;
    }

    #[test]
    fn parse_never_panics_on_cronish_text(source in cronish_source()) {
        exercise(&source)?;
    }

    #[test]
    fn firings_increase_and_match(
        source in valid_cron(),
        (timezone, start) in zone_and_start(),
        offset_days in 0u8..=6,
    ) {
        let fail = |what: String| TestCaseError::fail(format!("{source}: {what}"));
        let expression = Expression::parse(&source).map_err(|e| fail(e.to_string()))?;
        let Expression::Cron(cron) = expression.clone() else {
            return Err(fail("not a cron expression".to_owned()));
        };
        let schedule = Schedule::new(ScheduleSpec {
            expression,
            timezone,
            offset_days,
            start: None,
            end: None,
        })
        .map_err(|e| fail(e.to_string()))?;
        let local = |t: DateTime<Utc>| t.with_timezone(&timezone).naive_local();
        let offset = TimeDelta::days(i64::from(offset_days));
        let second = TimeDelta::seconds(1);

        let mut previous = DateTime::from_timestamp(start, 0).unwrap_or_default();
        for _ in 0..50 {
            let Some(next) = schedule.next_after(previous) else { break };
            prop_assert!(next > previous, "{} went from {} to {}", source, previous, next);
            // Nothing fires strictly between the two.
            prop_assert_eq!(schedule.next_after(next - TimeDelta::nanoseconds(1)), Some(next));
            let wall = local(next);
            let before = local(next - second);
            let after_gap = before + second < wall;
            if after_gap {
                // The end of a gap: some skipped local time in it matches.
                let mut skipped = before + second;
                let mut found = false;
                while skipped <= wall && !found {
                    found = cron.matches(skipped - offset);
                    skipped += second;
                }
                prop_assert!(found, "{} fired at {} ({} local) after a gap with no match",
                    source, next, wall);
            } else {
                prop_assert!(cron.matches(wall - offset),
                    "{} fired at {} ({} local) which does not match", source, next, wall);
            }
            previous = next;
        }
    }
}
