//! AWS Systems Manager maintenance-window schedules: parsing of `cron(...)`,
//! `rate(...)` and `at(...)` expressions and computation of their firing
//! instants, with SSM's semantics. Pure: no I/O, and no clock (every query
//! takes the reference instant as a parameter).
//!
//! # Expressions
//!
//! - `cron(min hour day-of-month month day-of-week year)`, optionally with a
//!   leading seconds field. Exactly one of the day fields is `?`. Day-of-week
//!   counts 1 = SUN to 7 = SAT. Day-of-month knows `L` (last day), `LW` (last
//!   weekday) and `15W` (the weekday nearest the 15th, never leaving the
//!   month); day-of-week knows `TUE#2` (second Tuesday), `6L` (last Friday)
//!   and a bare `L` (Saturday). Ranges wrap on cyclic fields (`FRI-MON`,
//!   `22-2`); `a/n` steps run from `a` to the end of the field. Years run
//!   1970-2199, and nothing fires after 2199.
//! - `rate(N unit)` with `minute`/`hour`/`day` singular for 1 and plural
//!   otherwise. Firings are every interval in absolute time, unaffected by
//!   DST, anchored at the schedule's start if it has one and at the Unix
//!   epoch (1970-01-01T00:00:00Z) otherwise.
//! - `at(yyyy-mm-ddThh:mm:ss)`: one firing at that local time.
//!
//! # Local time and DST
//!
//! Cron and `at` are read as wall-clock time in the schedule's IANA timezone.
//! A local time skipped by a spring-forward change fires at the end of the
//! gap, i.e. at the transition instant (Europe/Berlin 2026-03-29 02:30 fires
//! at 03:00 CEST = 01:00Z), and several skipped times collapse into one
//! firing. A local time repeated by a fall-back change fires once, at its
//! first occurrence (Berlin 2026-10-25 02:30 fires at 00:30Z only).
//!
//! # Offset and bounds
//!
//! A cron schedule may have an offset of 1 to 6 days: each match's local date
//! moves that many days later at the same local wall time, and the result is
//! then mapped to an instant with the DST rules above ("two days after Patch
//! Tuesday"). The year bound applies to the match, before the offset.
//! `start` and `end` are inclusive: nothing fires before `start` or after
//! `end`.
//!
//! [`Schedule::next_after`] returns the first firing strictly after an
//! instant, so feeding each result back in yields a strictly increasing
//! sequence, even through a repeated hour.
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use patchd_schedule::{Expression, Schedule, ScheduleSpec, Tz};
//!
//! let schedule = Schedule::new(ScheduleSpec {
//!     expression: Expression::parse("cron(0 2 ? * TUE#2 *)")?,
//!     timezone: Tz::Europe__Berlin,
//!     offset_days: 2,
//!     start: None,
//!     end: None,
//! })?;
//! // Patch Tuesday in May 2026 is the 12th; two days later, 02:00 CEST.
//! let after = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
//! let next = Utc.with_ymd_and_hms(2026, 5, 14, 0, 0, 0).unwrap();
//! assert_eq!(schedule.next_after(after), Some(next));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cron;
mod error;
mod expression;
mod lex;
mod rate;
mod schedule;
mod timezone;

pub use chrono_tz::Tz;

pub use crate::cron::Cron;
pub use crate::error::{ParseError, ScheduleError};
pub use crate::expression::Expression;
pub use crate::rate::{Rate, RateUnit};
pub use crate::schedule::{Schedule, ScheduleSpec};
pub use crate::timezone::parse_timezone;
