//! The cron expression type and the search for its next local match.

mod parse;

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike};

use crate::ParseError;

/// First and last year SSM accepts in a cron year field.
pub(crate) const MIN_YEAR: i32 = 1970;
pub(crate) const MAX_YEAR: i32 = 2199;

/// A parsed `cron(...)` expression.
///
/// Each field is kept as a precomputed bitset so that finding the next match
/// skips whole years, months and days instead of stepping through time.
/// Matching is done on local wall-clock time; the timezone belongs to
/// [`Schedule`](crate::Schedule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    /// Canonical field text (single spaces, names upper-cased), kept so that
    /// `Display` reproduces what the operator wrote rather than an expansion.
    text: String,
    /// Bit `n` set = second `n` matches.
    seconds: u64,
    /// Bit `n` set = minute `n` matches.
    minutes: u64,
    /// Bit `n` set = hour `n` matches.
    hours: u64,
    /// Bit `n` set = month `n` (1-12) matches.
    months: u64,
    days: DaySpec,
    /// Bit `n` (over the four words) set = year `MIN_YEAR + n` matches.
    years: [u64; 4],
}

/// SSM requires exactly one of day-of-month and day-of-week to be `?`, so the
/// day rule is one or the other, never a combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaySpec {
    Month(DayOfMonth),
    Week(DayOfWeek),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfMonth {
    /// Bit `n` set = day `n` (1-31) matches; days a month lacks never match.
    Days(u64),
    /// `L`
    Last,
    /// `LW`
    LastWeekday,
    /// `nW`: the weekday nearest day `n`, staying inside the month.
    NearestWeekday(u32),
}

/// Weekdays are numbered 0 = Sunday .. 6 = Saturday internally (the SSM value
/// minus one), which is chrono's `num_days_from_sunday`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayOfWeek {
    /// Bit `n` set = weekday `n` matches.
    Days(u8),
    /// `wd#nth`
    Nth { weekday: u32, nth: u32 },
    /// `wdL`
    Last { weekday: u32 },
}

impl Cron {
    /// Parses the text between `cron(` and `)`; `base` is the byte offset of
    /// that text in the whole source so errors point into the source.
    pub(crate) fn parse_fields(fields: &str, base: usize) -> Result<Cron, ParseError> {
        parse::parse(fields, base)
    }

    /// Whether a local wall-clock time matches every field of the expression.
    /// Sub-second precision is ignored.
    pub fn matches(&self, local: NaiveDateTime) -> bool {
        let year = local.year();
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) || !self.has_year(year) {
            return false;
        }
        has_bit(self.seconds, local.second())
            && has_bit(self.minutes, local.minute())
            && has_bit(self.hours, local.hour())
            && has_bit(self.months, local.month())
            && has_bit(self.days_of(year, local.month()), local.day())
    }

    /// The first whole-second local time strictly after `cursor` that matches,
    /// or `None` if there is none up to the end of year 2199.
    pub(crate) fn next_after(&self, cursor: NaiveDateTime) -> Option<NaiveDateTime> {
        let floor = cursor.with_nanosecond(0)?;
        let start = floor.checked_add_signed(TimeDelta::seconds(1))?;
        let earliest = NaiveDate::from_ymd_opt(MIN_YEAR, 1, 1)?.and_time(NaiveTime::MIN);
        self.first_at_or_after(start.max(earliest))
    }

    fn first_at_or_after(&self, start: NaiveDateTime) -> Option<NaiveDateTime> {
        let (start_year, start_month, start_day) = (start.year(), start.month(), start.day());
        for year in (start_year.max(MIN_YEAR)..=MAX_YEAR).filter(|&y| self.has_year(y)) {
            let first_month = if year == start_year { start_month } else { 1 };
            for month in bits_from(self.months, first_month) {
                let same_month = year == start_year && month == start_month;
                let first_day = if same_month { start_day } else { 1 };
                for day in bits_from(self.days_of(year, month), first_day) {
                    let from = if same_month && day == start_day { start.time() } else { NaiveTime::MIN };
                    if let Some(time) = self.first_time_at_or_after(from) {
                        return Some(NaiveDate::from_ymd_opt(year, month, day)?.and_time(time));
                    }
                }
            }
        }
        None
    }

    fn first_time_at_or_after(&self, from: NaiveTime) -> Option<NaiveTime> {
        let (from_h, from_m, from_s) = (from.hour(), from.minute(), from.second());
        for hour in bits_from(self.hours, from_h) {
            let first_minute = if hour == from_h { from_m } else { 0 };
            for minute in bits_from(self.minutes, first_minute) {
                let first_second = if hour == from_h && minute == from_m { from_s } else { 0 };
                if let Some(second) = bits_from(self.seconds, first_second).next() {
                    return NaiveTime::from_hms_opt(hour, minute, second);
                }
            }
        }
        None
    }

    fn has_year(&self, year: i32) -> bool {
        let Ok(index) = usize::try_from(year - MIN_YEAR) else {
            return false;
        };
        self.years.get(index / 64).is_some_and(|word| word & (1 << (index % 64)) != 0)
    }

    /// The days of one month that match the day rule, as a bitset over 1-31.
    fn days_of(&self, year: i32, month: u32) -> u64 {
        let Some(first) = NaiveDate::from_ymd_opt(year, month, 1) else {
            return 0;
        };
        let length = days_in_month(year, month);
        let first_weekday = first.weekday().num_days_from_sunday();
        let weekday_of = |day: u32| (first_weekday + day - 1) % 7;
        let in_month = (1..=length).fold(0u64, |acc, day| acc | 1 << day);
        match self.days {
            DaySpec::Month(DayOfMonth::Days(days)) => days & in_month,
            DaySpec::Month(DayOfMonth::Last) => 1 << length,
            DaySpec::Month(DayOfMonth::LastWeekday) => {
                let day = match weekday_of(length) {
                    6 => length - 1,
                    0 => length - 2,
                    _ => length,
                };
                1 << day
            }
            DaySpec::Month(DayOfMonth::NearestWeekday(target)) => {
                if target > length {
                    return 0;
                }
                // Quartz semantics: never leave the month, so a Saturday 1st
                // moves forward to Monday and a Sunday last day moves back to
                // Friday.
                let day = match weekday_of(target) {
                    6 if target == 1 => 3,
                    6 => target - 1,
                    0 if target == length => target - 2,
                    0 => target + 1,
                    _ => target,
                };
                1 << day
            }
            DaySpec::Week(DayOfWeek::Days(weekdays)) => (1..=length)
                .filter(|&day| weekdays & (1 << weekday_of(day)) != 0)
                .fold(0, |acc, day| acc | 1 << day),
            DaySpec::Week(DayOfWeek::Nth { weekday, nth }) => {
                let first_match = 1 + (weekday + 7 - first_weekday) % 7;
                let day = first_match + 7 * (nth - 1);
                if day <= length {
                    1 << day
                } else {
                    0
                }
            }
            DaySpec::Week(DayOfWeek::Last { weekday }) => {
                let back = (weekday_of(length) + 7 - weekday) % 7;
                1 << (length - back)
            }
        }
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cron({})", self.text)
    }
}

fn has_bit(bits: u64, n: u32) -> bool {
    n < 64 && bits & (1 << n) != 0
}

/// Set bits of `bits` at positions `>= from`, lowest first.
fn bits_from(bits: u64, from: u32) -> impl Iterator<Item = u32> {
    let mut rest = if from >= 64 { 0 } else { bits & (u64::MAX << from) };
    std::iter::from_fn(move || {
        if rest == 0 {
            return None;
        }
        let bit = rest.trailing_zeros();
        rest &= rest - 1;
        Some(bit)
    })
}

fn days_in_month(year: i32, month: u32) -> u32 {
    (28..=31).rev().find(|&day| NaiveDate::from_ymd_opt(year, month, day).is_some()).unwrap_or(28)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(fields: &str) -> Cron {
        match Cron::parse_fields(fields, 0) {
            Ok(cron) => cron,
            Err(err) => panic!("`{fields}` failed to parse: {err}"),
        }
    }

    fn local(text: &str) -> NaiveDateTime {
        match NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
            Ok(t) => t,
            Err(err) => panic!("bad test time `{text}`: {err}"),
        }
    }

    /// The first `expected.len()` matches after `after`, as local times.
    fn check(fields: &str, after: &str, expected: &[&str]) {
        let cron = cron(fields);
        let mut cursor = local(after);
        let mut got = Vec::new();
        for _ in expected {
            match cron.next_after(cursor) {
                Some(next) => {
                    assert!(cron.matches(next), "`{fields}` produced non-match {next}");
                    got.push(next.format("%Y-%m-%dT%H:%M:%S").to_string());
                    cursor = next;
                }
                None => break,
            }
        }
        assert_eq!(got, expected, "cron({fields}) after {after}");
    }

    #[test]
    fn bits_from_yields_set_bits_in_order() {
        assert_eq!(bits_from(0b1010_0110, 2).collect::<Vec<_>>(), [2, 5, 7]);
        assert_eq!(bits_from(u64::MAX, 63).collect::<Vec<_>>(), [63]);
        assert_eq!(bits_from(u64::MAX, 64).count(), 0);
    }

    #[test]
    fn days_in_month_handles_leap_years() {
        assert_eq!(days_in_month(2028, 2), 29);
        assert_eq!(days_in_month(2027, 2), 28);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2000, 2), 29);
        assert_eq!(days_in_month(2026, 4), 30);
        assert_eq!(days_in_month(2026, 12), 31);
    }

    #[test]
    fn plain_fields_carry_into_the_next_unit() {
        check("30 23 * * ? *", "2026-12-31T23:30:00", &["2027-01-01T23:30:00", "2027-01-02T23:30:00"]);
        check("*/20 * * * ? *", "2026-01-01T00:59:59", &["2026-01-01T01:00:00", "2026-01-01T01:20:00"]);
        check("10,50 * * * * ? *", "2026-01-01T00:00:50", &["2026-01-01T00:01:10", "2026-01-01T00:01:50"]);
    }

    #[test]
    fn sub_second_cursor_still_moves_strictly_forward() {
        let cron = cron("0 2 * * ? *");
        let cursor = local("2026-05-01T02:00:00") + TimeDelta::milliseconds(500);
        assert_eq!(cron.next_after(cursor), Some(local("2026-05-02T02:00:00")));
    }

    #[test]
    fn search_before_1970_starts_at_1970() {
        check("0 0 1 1 ? *", "1900-06-01T00:00:00", &["1970-01-01T00:00:00"]);
    }

    #[test]
    fn wrapping_ranges_cover_both_ends() {
        check(
            "0 22-1 * * ? 2026",
            "2026-01-01T12:00:00",
            &[
                "2026-01-01T22:00:00",
                "2026-01-01T23:00:00",
                "2026-01-02T00:00:00",
                "2026-01-02T01:00:00",
                "2026-01-02T22:00:00",
            ],
        );
    }

    #[test]
    fn impossible_dates_end_quickly() {
        check("0 0 30 2 ? *", "2026-01-01T00:00:00", &[]);
        check("0 0 31 4,6,9,11 ? *", "1970-01-01T00:00:00", &[]);
    }
}
