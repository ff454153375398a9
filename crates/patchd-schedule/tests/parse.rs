//! Parsing: canonical display, and the message, offset and hint of each
//! kind of error.

use patchd_schedule::{Expression, ParseError, RateUnit};

fn parse_error(source: &str) -> ParseError {
    match Expression::parse(source) {
        Ok(e) => panic!("`{source}` parsed as {e}, expected an error"),
        Err(err) => err,
    }
}

/// `hint` is a fragment the hint must contain; `None` means no hint.
fn check_error(source: &str, message: &str, offset: usize, hint: Option<&str>) {
    let err = parse_error(source);
    assert_eq!(err.message, message, "message for `{source}`");
    assert_eq!(err.to_string(), message, "display for `{source}`");
    assert_eq!(err.offset, offset, "offset for `{source}`: {message}");
    match (hint, &err.hint) {
        (None, None) => {}
        (Some(fragment), Some(got)) => {
            assert!(got.contains(fragment), "hint for `{source}`: `{got}`")
        }
        (want, got) => panic!("hint for `{source}`: wanted {want:?}, got {got:?}"),
    }
}

#[test]
fn canonical_display_round_trips() {
    let cases = [
        ("cron(0 2 ? * THU#3 *)", "cron(0 2 ? * THU#3 *)"),
        ("  cron(0   2 ?\t*  thu#3 *)  ", "cron(0 2 ? * THU#3 *)"),
        ("cron(15 10 ? * mon-fri *)", "cron(15 10 ? * MON-FRI *)"),
        ("cron(0 2 l * ? *)", "cron(0 2 L * ? *)"),
        ("cron(15 10 ? * 6L *)", "cron(15 10 ? * 6L *)"),
        ("cron(30 */20 * * * ? *)", "cron(30 */20 * * * ? *)"),
        ("rate(1 minute)", "rate(1 minute)"),
        ("rate(2 hours)", "rate(2 hours)"),
        ("rate( 7   days )", "rate(7 days)"),
        ("at(2026-12-01T03:00:00)", "at(2026-12-01T03:00:00)"),
        ("at( 0999-01-01T00:00:00 )", "at(0999-01-01T00:00:00)"),
    ];
    for (source, canonical) in cases {
        let parsed = Expression::parse(source);
        let shown = parsed.as_ref().map(|e| e.to_string());
        assert_eq!(shown.as_deref(), Ok(canonical), "{source}");
        let again = Expression::parse(canonical);
        assert_eq!(again, parsed, "{canonical} parses back to the same value");
        let via_from_str = source.parse::<Expression>();
        assert_eq!(via_from_str, parsed);
    }
}

#[test]
fn rate_accessors() {
    let Ok(Expression::Rate(rate)) = Expression::parse("rate(90 minutes)") else {
        panic!("rate did not parse");
    };
    assert_eq!(rate.count(), 90);
    assert_eq!(rate.unit(), RateUnit::Minutes);
    assert_eq!(rate.interval(), chrono::TimeDelta::minutes(90));
    let Ok(Expression::Rate(rate)) = Expression::parse("rate(1 day)") else {
        panic!("rate did not parse");
    };
    assert_eq!(rate.interval(), chrono::TimeDelta::days(1));
}

#[test]
fn at_parses_local_wall_time() {
    let Ok(Expression::At(at)) = Expression::parse("at(2028-02-29T23:59:59)") else {
        panic!("at did not parse");
    };
    assert_eq!(at.to_string(), "2028-02-29 23:59:59");
}

#[test]
fn field_values_out_of_range() {
    check_error("cron(60 2 ? * THU#3 *)", "minutes value `60` is out of range 0-59", 5, Some("59"));
    check_error(
        "cron(0 24 ? * THU#3 *)",
        "hours value `24` is out of range 0-23",
        7,
        Some("midnight is hour 0"),
    );
    check_error("cron(0 2 32 * ? *)", "day-of-month value `32` is out of range 1-31", 9, None);
    check_error("cron(0 2 0 * ? *)", "day-of-month value `0` is out of range 1-31", 9, None);
    check_error("cron(0 2 ? 13 THU *)", "month value `13` is out of range 1-12", 11, None);
    check_error("cron(0 2 ? * 8 *)", "day-of-week value `8` is out of range 1-7 (1 = SUN)", 13, None);
    check_error(
        "cron(0 2 ? * 0 *)",
        "day-of-week value `0` is out of range 1-7 (1 = SUN)",
        13,
        Some("1 = SUN to 7 = SAT"),
    );
    check_error("cron(0 2 ? * THU 1969)", "year value `1969` is out of range 1970-2199", 17, None);
    check_error("cron(0 2 ? * THU 2026-2200)", "year value `2200` is out of range 1970-2199", 22, None);
    check_error("cron(60 0 2 ? * THU *)", "seconds value `60` is out of range 0-59", 5, Some("59"));
    check_error(
        "cron(0 2 ? * 1,3,99999999999 *)",
        "day-of-week value `99999999999` is out of range 1-7 (1 = SUN)",
        17,
        None,
    );
    check_error("cron(0 2 32W * ? *)", "day-of-month value `32` is out of range 1-31", 9, None);
    check_error(
        "cron(0 2 ? * THU#6 *)",
        "day-of-week occurrence `#6` must be from 1 to 5",
        17,
        Some("second Tuesday"),
    );
}

#[test]
fn bad_names_and_values() {
    check_error("cron(0 2 ? FOO THU *)", "month value `FOO` is not a number or a name", 11, Some("JAN-DEC"));
    check_error(
        "cron(0 2 ? * THURSDAY *)",
        "day-of-week value `THURSDAY` is not a number or a name",
        13,
        Some("SUN-SAT"),
    );
    check_error("cron(x 2 ? * THU *)", "minutes value `x` is not a number", 5, Some("0-59"));
    check_error("cron(0 MON ? * THU *)", "hours value `MON` is not a number", 7, Some("0-23"));
    check_error(
        "cron(L 2 ? * THU *)",
        "minutes value `L` is not a number",
        5,
        Some("only allowed in day-of-month and day-of-week"),
    );
    check_error("cron(0,,5 2 ? * THU *)", "minutes has an empty list item", 7, Some("extra `,`"));
    check_error("cron(-5 2 ? * THU *)", "minutes is missing a value", 5, Some("0-59"));
    check_error(
        "cron(0 2 ? * THU 2030-2026)",
        "year range `2030-2026` runs backwards",
        17,
        Some("smaller value first"),
    );
    check_error("cron(0/0 2 ? * THU *)", "minutes step `0` must be a whole number from 1 to 60", 7, None);
    check_error("cron(0 2 ? * MON/2 *)", "day-of-week does not allow `/` steps", 16, Some("MON,WED,FRI"));
    check_error("cron(0 ²2 ? * THU *)", "hours value `²2` is not a number", 7, Some("0-23"));
}

#[test]
fn day_field_rules() {
    check_error(
        "cron(0 2 1 * THU *)",
        "one of day-of-month and day-of-week must be `?`",
        13,
        Some("put `?` in the other"),
    );
    check_error(
        "cron(0 2 1 * * *)",
        "one of day-of-month and day-of-week must be `?`",
        13,
        Some("use `?` in day-of-week when you set day-of-month"),
    );
    check_error(
        "cron(0 2 * * MON *)",
        "one of day-of-month and day-of-week must be `?`",
        13,
        Some("use `?` in day-of-month when you set day-of-week"),
    );
    check_error(
        "cron(0 2 ? * ? *)",
        "day-of-month and day-of-week cannot both be `?`",
        13,
        Some("set one of them"),
    );
    check_error(
        "cron(? 2 ? * THU *)",
        "minutes does not allow `?`",
        5,
        Some("only allowed in day-of-month or day-of-week"),
    );
    check_error(
        "cron(0 2 1-? * ? *)",
        "`?` must stand alone in day-of-month",
        9,
        Some("cannot be part of a list"),
    );
    check_error("cron(0 2 1,L * ? *)", "day-of-month `L` must stand alone", 11, Some("`LW`"));
    check_error("cron(0 2 15W,1 * ? *)", "day-of-month `W` must stand alone", 11, Some("`15W`"));
    check_error("cron(0 2 # * ? *)", "day-of-month does not allow `#`", 9, Some("day-of-week"));
    check_error("cron(0 2 ? * MON#1,FRI#3 *)", "day-of-week `#` must stand alone", 16, Some("`TUE#2`"));
    check_error("cron(0 2 ? * 5L,6 *)", "day-of-week `L` must stand alone", 14, Some("`6L`"));
    check_error("cron(0 2 ? * 1-5L *)", "day-of-week `L` must stand alone", 16, Some("`6L`"));
}

#[test]
fn field_count() {
    check_error(
        "cron(0 2 ? * *)",
        "cron expression has 5 fields; expected 6 (minutes hours day-of-month month day-of-week year) or 7 with leading seconds",
        14,
        Some("add `*` at the end"),
    );
    check_error(
        "cron(0 2 ? * * * * *)",
        "cron expression has 8 fields; expected 6 (minutes hours day-of-month month day-of-week year) or 7 with leading seconds",
        19,
        Some("separate fields"),
    );
    check_error(
        "cron()",
        "cron expression has 0 fields; expected 6 (minutes hours day-of-month month day-of-week year) or 7 with leading seconds",
        5,
        Some("minutes hours"),
    );
}

#[test]
fn rate_errors() {
    check_error(
        "rate(1 minutes)",
        "rate unit `minutes` is plural but the value is 1",
        7,
        Some("`rate(1 minute)`"),
    );
    check_error(
        "rate(5 minute)",
        "rate unit `minute` is singular but the value is more than 1",
        7,
        Some("`rate(5 minutes)`"),
    );
    check_error("rate(1 days)", "rate unit `days` is plural but the value is 1", 7, Some("`rate(1 day)`"));
    check_error(
        "rate(12 hour)",
        "rate unit `hour` is singular but the value is more than 1",
        8,
        Some("`rate(12 hours)`"),
    );
    check_error("rate(0 hours)", "rate value must be at least 1", 5, Some("rate(30 minutes)"));
    check_error("rate(2 weeks)", "rate unit `weeks` is not known", 7, Some("`rate(14 days)`"));
    check_error("rate(2 Hours)", "rate unit `Hours` is not known", 7, Some("`hours`"));
    check_error("rate(two hours)", "rate value `two` is not a whole number", 5, Some("rate(30 minutes)"));
    check_error("rate(-1 hours)", "rate value `-1` is not a whole number", 5, Some("rate(30 minutes)"));
    check_error("rate(2hours)", "rate() needs a number and a unit", 5, Some("`rate(2 hours)`"));
    check_error("rate(2 hours 5)", "rate() needs a number and a unit", 13, Some("rate(30 minutes)"));
    check_error("rate(99999999999 days)", "rate value `99999999999` is too large", 5, Some("larger unit"));
}

#[test]
fn at_errors() {
    check_error(
        "at(2026-12-01 03:00:00)",
        "at() needs exactly one date and time, yyyy-mm-ddThh:mm:ss",
        14,
        Some("`at(2026-12-01T03:00:00)`"),
    );
    check_error("at(2026-02-30T03:00:00)", "at() date `2026-02-30` does not exist", 3, None);
    check_error(
        "at(2026-12-01T24:00:00)",
        "at() time `24:00:00` is not a valid time of day",
        14,
        Some("23:59:59"),
    );
    check_error(
        "at(2026-12-01T03:00:00Z)",
        "at() value `2026-12-01T03:00:00Z` is not of the form yyyy-mm-ddThh:mm:ss",
        3,
        Some("leave out the zone"),
    );
    check_error(
        "at(2026-12-1T03:00:00)",
        "at() value `2026-12-1T03:00:00` is not of the form yyyy-mm-ddThh:mm:ss",
        3,
        Some("at(2026-12-01T03:00:00)"),
    );
    check_error(
        "at(2026-12-01T03:00)",
        "at() value `2026-12-01T03:00` is not of the form yyyy-mm-ddThh:mm:ss",
        3,
        Some("at(2026-12-01T03:00:00)"),
    );
    check_error(
        "at()",
        "at() needs exactly one date and time, yyyy-mm-ddThh:mm:ss",
        3,
        Some("at(2026-12-01T03:00:00)"),
    );
}

#[test]
fn expression_shape_errors() {
    check_error(
        "crontab(0 2 ? * THU *)",
        "unknown expression type `crontab`",
        0,
        Some("cron(0 2 ? * THU#3 *)"),
    );
    check_error("  crontab(0 2 ? * THU *)", "unknown expression type `crontab`", 2, Some("rate(1 day)"));
    check_error("CRON(0 2 ? * THU *)", "unknown expression type `CRON`", 0, Some("lower case"));
    check_error("cron (0 2 ? * THU *)", "unknown expression type `cron `", 0, Some("remove the space"));
    check_error(
        "0 2 ? * THU *",
        "expected `cron(...)`, `rate(...)` or `at(...)`",
        0,
        Some("`cron(0 2 ? * THU *)`"),
    );
    check_error("cron(0 2 ? * THU *", "missing `)` at the end", 18, Some("close the expression"));
    check_error("cron(0 2 ? * THU *) x", "unexpected text after `)`", 19, Some("one expression"));
    check_error("", "schedule expression is empty", 0, Some("rate(1 day)"));
    check_error("   ", "schedule expression is empty", 0, Some("rate(1 day)"));
}

#[test]
fn offsets_count_bytes_in_the_whole_source() {
    // Leading whitespace and multi-byte characters before the error shift it.
    let err = parse_error("   cron(0  2 ? * MON 3000)");
    assert_eq!(err.offset, 21);
    let err = parse_error("cron(0 2 ?\u{a0}* MON 3000)");
    assert_eq!(&"cron(0 2 ?\u{a0}* MON 3000)"[err.offset..], "3000)");
}
