//! A validated schedule and the computation of its firing instants.

use chrono::offset::LocalResult;
use chrono::{DateTime, Days, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::cron::{MAX_YEAR, MIN_YEAR};
use crate::{Cron, Expression, Rate, ScheduleError};

/// The largest `ScheduleOffset` SSM accepts.
const MAX_OFFSET_DAYS: u8 = 6;

/// The parts of a schedule before validation, as a config file states them.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    pub expression: Expression,
    pub timezone: Tz,
    /// Days to move each cron match later ("two days after Patch Tuesday");
    /// 0 for none, at most 6, cron only.
    pub offset_days: u8,
    /// No firing before this instant (inclusive). Also the anchor of `rate`.
    pub start: Option<DateTime<Utc>>,
    /// No firing after this instant (inclusive).
    pub end: Option<DateTime<Utc>>,
}

/// A fully validated schedule: expression, timezone, offset and bounds.
///
/// See the crate documentation for how local times, DST changes, the offset
/// and the bounds turn an expression into firing instants.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: Expression,
    timezone: Tz,
    offset_days: u8,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl Schedule {
    pub fn new(spec: ScheduleSpec) -> Result<Schedule, ScheduleError> {
        let ScheduleSpec { expression, timezone, offset_days, start, end } = spec;
        if offset_days != 0 && !matches!(expression, Expression::Cron(_)) {
            return Err(ScheduleError::OffsetNeedsCron { offset_days });
        }
        if offset_days > MAX_OFFSET_DAYS {
            return Err(ScheduleError::OffsetOutOfRange { offset_days });
        }
        if let (Some(start), Some(end)) = (start, end) {
            if end < start {
                return Err(ScheduleError::EndBeforeStart { start, end });
            }
        }
        Ok(Schedule { expression, timezone, offset_days, start, end })
    }

    pub fn expression(&self) -> &Expression {
        &self.expression
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    pub fn offset_days(&self) -> u8 {
        self.offset_days
    }

    pub fn start(&self) -> Option<DateTime<Utc>> {
        self.start
    }

    pub fn end(&self) -> Option<DateTime<Utc>> {
        self.end
    }

    /// The first firing strictly after `after`, or `None` when the schedule
    /// never fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Searching strictly after the instant just before `start` makes the
        // start bound inclusive.
        let after = match self.start {
            Some(start) if start > after => {
                start.checked_sub_signed(TimeDelta::nanoseconds(1)).unwrap_or(after)
            }
            _ => after,
        };
        let next = match &self.expression {
            Expression::Cron(cron) => self.next_cron(cron, after),
            Expression::Rate(rate) => next_rate(rate, self.start, after),
            Expression::At(local) => resolve_local(self.timezone, *local).filter(|&instant| instant > after),
        };
        next.filter(|&instant| self.end.is_none_or(|end| instant <= end))
    }

    /// Successive firings strictly after `after`, computed lazily.
    pub fn firings_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        std::iter::successors(self.next_after(after), move |&previous| self.next_after(previous))
    }

    fn next_cron(&self, cron: &Cron, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Cron firings all lie within [1969-12-31, 2200-01-08] (matches in
        // 1970..=2199, at most 6 days of offset, at most a day of UTC offset).
        // Clamping `after` into a slightly wider window changes no answer and
        // keeps local-time conversion away from chrono's representable limits,
        // where it would panic.
        let floor = utc_midnight(MIN_YEAR - 10)?;
        let ceiling = utc_midnight(MAX_YEAR + 2)?;
        if after >= ceiling {
            return None;
        }
        let after = after.max(floor);
        let offset = Days::new(u64::from(self.offset_days));
        let local_after = after.with_timezone(&self.timezone).naive_local();
        // A local time at or before local(after) maps to an instant at or
        // before `after`, so the search can start just past it.
        let mut cursor = local_after.checked_sub_days(offset)?;
        loop {
            let matched = cron.next_after(cursor)?;
            let instant = resolve_local(self.timezone, matched.checked_add_days(offset)?);
            match instant {
                Some(instant) if instant > after => return Some(instant),
                // After a fall-back, `after` can sit in the repeated hour's
                // second occurrence while the next match's first occurrence
                // lies before it: that match already fired, so keep looking
                // (as for a local time that cannot be placed at all).
                _ => cursor = matched,
            }
        }
    }
}

fn utc_midnight(year: i32) -> Option<DateTime<Utc>> {
    Some(NaiveDate::from_ymd_opt(year, 1, 1)?.and_time(chrono::NaiveTime::MIN).and_utc())
}

fn next_rate(rate: &Rate, start: Option<DateTime<Utc>>, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    const NANOS: i128 = 1_000_000_000;
    let nanos = |t: DateTime<Utc>| i128::from(t.timestamp()) * NANOS + i128::from(t.timestamp_subsec_nanos());
    let anchor = nanos(start.unwrap_or(DateTime::UNIX_EPOCH));
    let step = i128::from(rate.interval_seconds()) * NANOS;
    let after = nanos(after);
    let steps = if after < anchor { 0 } else { (after - anchor) / step + 1 };
    let next = anchor + steps * step;
    let seconds = i64::try_from(next.div_euclid(NANOS)).ok()?;
    let subsec = u32::try_from(next.rem_euclid(NANOS)).ok()?;
    DateTime::from_timestamp(seconds, subsec)
}

/// The instant at which a local wall-clock time happens in `tz`.
///
/// A time that occurs twice (fall-back) resolves to its first occurrence. A
/// time that does not occur (spring-forward gap) resolves to the end of the
/// gap: the first instant whose local time is at or past it.
pub(crate) fn resolve_local(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(instant) => Some(instant.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => Some(a.min(b).with_timezone(&Utc)),
        LocalResult::None => end_of_gap(tz, local),
    }
}

/// Binary search over UTC seconds for the first instant whose local time is
/// at or past `local`. No UTC offset, even a historical one, reaches 16 hours,
/// so the local time is before `local` at the low end of the window and after
/// it at the high end. Any place
/// where the predicate flips is a jump over `local` (it cannot be reached
/// continuously, since it does not exist), so the search finds the gap
/// whatever its length.
fn end_of_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    const WINDOW: i64 = 26 * 3_600;
    let at_or_past = |seconds: i64| -> Option<bool> {
        let instant = DateTime::from_timestamp(seconds, 0)?;
        Some(instant.with_timezone(&tz).naive_local() >= local)
    };
    let target = local.and_utc().timestamp();
    let mut low = target.checked_sub(WINDOW)?;
    let mut high = target.checked_add(WINDOW)?;
    if at_or_past(low)? || !at_or_past(high)? {
        return None;
    }
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if at_or_past(middle)? {
            high = middle;
        } else {
            low = middle;
        }
    }
    DateTime::from_timestamp(high, 0)
}
