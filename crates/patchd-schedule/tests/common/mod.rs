//! Helpers shared by the integration tests.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use patchd_schedule::{parse_timezone, Expression, Schedule, ScheduleSpec, Tz};

/// An instant from RFC 3339 text; any offset is accepted so that tests can
/// state local times (`2026-03-29T03:00:00+02:00`) next to UTC ones.
pub fn instant(text: &str) -> DateTime<Utc> {
    match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(err) => panic!("bad test instant `{text}`: {err}"),
    }
}

pub fn tz(name: &str) -> Tz {
    match parse_timezone(name) {
        Ok(tz) => tz,
        Err(err) => panic!("bad test timezone `{name}`: {err}"),
    }
}

pub fn expression(source: &str) -> Expression {
    match Expression::parse(source) {
        Ok(e) => e,
        Err(err) => panic!("`{source}` failed to parse: {err} (offset {})", err.offset),
    }
}

pub fn bounded(
    source: &str,
    zone: &str,
    offset_days: u8,
    start: Option<&str>,
    end: Option<&str>,
) -> Schedule {
    let spec = ScheduleSpec {
        expression: expression(source),
        timezone: tz(zone),
        offset_days,
        start: start.map(instant),
        end: end.map(instant),
    };
    match Schedule::new(spec) {
        Ok(s) => s,
        Err(err) => panic!("`{source}` is not a valid schedule: {err}"),
    }
}

pub fn schedule(source: &str, zone: &str, offset_days: u8) -> Schedule {
    bounded(source, zone, offset_days, None, None)
}

fn show(instants: &[DateTime<Utc>]) -> Vec<String> {
    instants.iter().map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)).collect()
}

/// The first `expected.len()` firings after `after`, by feeding each result
/// back into `next_after`.
pub fn check(source: &str, zone: &str, offset_days: u8, after: &str, expected: &[&str]) {
    check_schedule(&schedule(source, zone, offset_days), after, expected, false);
}

/// Like [`check`], and also asserts that nothing fires after the last one.
pub fn check_all(source: &str, zone: &str, offset_days: u8, after: &str, expected: &[&str]) {
    check_schedule(&schedule(source, zone, offset_days), after, expected, true);
}

pub fn check_schedule(schedule: &Schedule, after: &str, expected: &[&str], exhaustive: bool) {
    let wanted: Vec<DateTime<Utc>> = expected.iter().map(|t| instant(t)).collect();
    let limit = if exhaustive { wanted.len() + 1 } else { wanted.len() };
    let got: Vec<DateTime<Utc>> = schedule.firings_after(instant(after)).take(limit).collect();
    assert_eq!(
        show(&got),
        show(&wanted),
        "{} in {} (offset {} days) after {after}",
        schedule.expression(),
        schedule.timezone(),
        schedule.offset_days()
    );
}
