//! `rate(N unit)` expressions.

use std::fmt;

use chrono::TimeDelta;

use crate::lex::tokens;
use crate::ParseError;

/// A fixed interval, `rate(N minute|minutes|hour|hours|day|days)`.
///
/// Firings are every interval in absolute (UTC) time, so a DST change moves
/// them on the local clock. They are anchored at the schedule's `start`
/// when it has one and at the Unix epoch (1970-01-01T00:00:00Z) otherwise:
/// `rate(1 day)` without a start fires at 00:00:00Z every day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    unit: RateUnit,
}

/// The unit of a [`Rate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateUnit {
    Minutes,
    Hours,
    Days,
}

impl RateUnit {
    fn seconds(self) -> i64 {
        match self {
            RateUnit::Minutes => 60,
            RateUnit::Hours => 3_600,
            RateUnit::Days => 86_400,
        }
    }

    fn word(self, count: u32) -> &'static str {
        match (self, count == 1) {
            (RateUnit::Minutes, true) => "minute",
            (RateUnit::Minutes, false) => "minutes",
            (RateUnit::Hours, true) => "hour",
            (RateUnit::Hours, false) => "hours",
            (RateUnit::Days, true) => "day",
            (RateUnit::Days, false) => "days",
        }
    }
}

impl Rate {
    /// How many units between firings (at least 1).
    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn unit(&self) -> RateUnit {
        self.unit
    }

    /// The time between firings.
    pub fn interval(&self) -> TimeDelta {
        TimeDelta::seconds(self.interval_seconds())
    }

    /// Cannot overflow: at most `u32::MAX * 86_400`, far below `i64::MAX`.
    pub(crate) fn interval_seconds(&self) -> i64 {
        i64::from(self.count) * self.unit.seconds()
    }

    /// Parses the text between `rate(` and `)`; `base` is its byte offset in
    /// the whole source.
    pub(crate) fn parse_inner(text: &str, base: usize) -> Result<Rate, ParseError> {
        let example = "write e.g. `rate(30 minutes)`, `rate(1 hour)` or `rate(7 days)`";
        let parts = tokens(text, base);
        let [count, unit] = parts[..] else {
            let offset = parts.get(2).map_or(base, |t| t.offset);
            let error = ParseError::new("rate() needs a number and a unit", offset);
            let glued = parts.first().and_then(|t| {
                let digits = t.text.bytes().take_while(u8::is_ascii_digit).count();
                (parts.len() == 1 && digits > 0 && digits < t.text.len()).then(|| t.text.split_at(digits))
            });
            return Err(match glued {
                Some((number, unit)) => error
                    .hint(format!("put a space between the number and the unit: `rate({number} {unit})`")),
                None => error.hint(example),
            });
        };
        let (count_at, count_text) = (count.offset, count.text);
        let (unit_at, unit_text) = (unit.offset, unit.text);
        if !count_text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseError::new(
                format!("rate value `{count_text}` is not a whole number"),
                count_at,
            )
            .hint(example));
        }
        let count = match count_text.parse::<u32>() {
            Ok(0) => return Err(ParseError::new("rate value must be at least 1", count_at).hint(example)),
            Ok(count) => count,
            Err(_) => {
                return Err(ParseError::new(format!("rate value `{count_text}` is too large"), count_at)
                    .hint("use a larger unit, e.g. days instead of minutes"))
            }
        };
        let (unit, singular) = match unit_text {
            "minute" => (RateUnit::Minutes, true),
            "minutes" => (RateUnit::Minutes, false),
            "hour" => (RateUnit::Hours, true),
            "hours" => (RateUnit::Hours, false),
            "day" => (RateUnit::Days, true),
            "days" => (RateUnit::Days, false),
            _ => return Err(unknown_unit(unit_text, unit_at, count)),
        };
        let rate = Rate { count, unit };
        if singular != (count == 1) {
            let (form, why) = if singular { ("singular", "more than 1") } else { ("plural", "1") };
            return Err(ParseError::new(
                format!("rate unit `{unit_text}` is {form} but the value is {why}"),
                unit_at,
            )
            .hint(format!("write `{rate}`")));
        }
        Ok(rate)
    }
}

fn unknown_unit(unit: &str, offset: usize, count: u32) -> ParseError {
    let error = ParseError::new(format!("rate unit `{unit}` is not known"), offset);
    let lower = unit.to_ascii_lowercase();
    let known = [RateUnit::Minutes, RateUnit::Hours, RateUnit::Days]
        .into_iter()
        .find(|u| lower == u.word(1) || lower == u.word(2));
    if let Some(known) = known {
        return error.hint(format!("units are lower-case: `{}`", known.word(count)));
    }
    if lower.starts_with("week") {
        let days = count.saturating_mul(7);
        return error.hint(format!("SSM has no weeks; write `rate({days} days)`"));
    }
    error.hint("use minute(s), hour(s) or day(s): singular for 1, plural otherwise")
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate({} {})", self.count, self.unit.word(self.count))
    }
}
