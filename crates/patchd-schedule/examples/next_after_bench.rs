//! Measures how long `next_after` takes for typical and worst-case expressions.
//! Run with `cargo run --release -p patchd-schedule --example next_after_bench`.

use std::hint::black_box;
use std::time::Instant;

use chrono::{TimeZone, Utc};
use patchd_schedule::{Expression, Schedule, ScheduleSpec, Tz};

fn main() {
    let cases = [
        ("daily 02:30 Berlin", "cron(30 2 * * ? *)", Tz::Europe__Berlin, 0),
        ("every 15 min New York", "cron(0/15 * * * ? *)", Tz::America__New_York, 0),
        ("Patch Tuesday + 2 days", "cron(0 2 ? * TUE#2 *)", Tz::America__New_York, 2),
        ("last weekday of month", "cron(0 2 LW * ? *)", Tz::UTC, 0),
        ("never matches (Feb 30)", "cron(0 0 30 2 ? *)", Tz::UTC, 0),
        ("rate(6 hours)", "rate(6 hours)", Tz::UTC, 0),
    ];
    println!("{:<26} {:>12} {:>14}", "expression", "calls", "ns per call");
    for (label, text, timezone, offset_days) in cases {
        let schedule = Schedule::new(ScheduleSpec {
            expression: Expression::parse(text).expect("valid expression"),
            timezone,
            offset_days,
            start: None,
            end: None,
        })
        .expect("valid schedule");
        let mut at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let calls: u32 = 20_000;
        let started = Instant::now();
        for _ in 0..calls {
            match schedule.next_after(black_box(at)) {
                Some(next) => at = next,
                None => at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            }
        }
        let per_call = started.elapsed().as_nanos() / u128::from(calls);
        println!("{label:<26} {calls:>12} {per_call:>14}");
    }
}
