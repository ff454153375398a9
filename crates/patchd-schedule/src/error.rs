use chrono::{DateTime, Utc};

/// Why a schedule expression or timezone name was rejected.
///
/// `offset` is the byte offset in the parsed string where the problem starts,
/// so a caller that knows where the string came from (a config file line and
/// column) can point at the exact token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub hint: Option<String>,
    pub offset: usize,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>, offset: usize) -> ParseError {
        ParseError { message: message.into(), hint: None, offset }
    }

    pub(crate) fn hint(mut self, hint: impl Into<String>) -> ParseError {
        self.hint = Some(hint.into());
        self
    }
}

/// Why a set of otherwise valid schedule parts does not form a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// SSM only applies `ScheduleOffset` to cron expressions.
    #[error(
        "an offset of {} only applies to cron(...) schedules; remove the offset or use a cron expression",
        days(*offset_days)
    )]
    OffsetNeedsCron { offset_days: u8 },
    #[error(
        "an offset of {} is out of range; use 1 to 6 days, or 0 for none",
        days(*offset_days)
    )]
    OffsetOutOfRange { offset_days: u8 },
    #[error("the end {end} is before the start {start}; move the end after the start")]
    EndBeforeStart { start: DateTime<Utc>, end: DateTime<Utc> },
}

fn days(n: u8) -> String {
    if n == 1 {
        "1 day".to_owned()
    } else {
        format!("{n} days")
    }
}
