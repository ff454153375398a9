//! The three SSM expression forms and their textual syntax.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

use crate::lex::tokens;
use crate::{Cron, ParseError, Rate};

const EXAMPLES: &str = "write e.g. `cron(0 2 ? * THU#3 *)`, `rate(1 day)` or `at(2026-12-01T03:00:00)`";
const AT_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// A parsed schedule expression, independent of any timezone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// `cron(...)`, matched against local wall-clock time.
    Cron(Cron),
    /// `rate(N unit)`, a fixed interval in absolute time.
    Rate(Rate),
    /// `at(yyyy-mm-ddThh:mm:ss)`, one run at a local wall-clock time.
    At(NaiveDateTime),
}

impl Expression {
    /// Parses `cron(...)`, `rate(...)` or `at(...)`. Surrounding whitespace
    /// is ignored; error offsets are byte offsets into `source`.
    pub fn parse(source: &str) -> Result<Expression, ParseError> {
        let start = source.len() - source.trim_start().len();
        let trimmed = source.trim();
        if trimmed.is_empty() {
            return Err(ParseError::new("schedule expression is empty", 0).hint(EXAMPLES));
        }
        let Some(open) = trimmed.find('(') else {
            let error = ParseError::new("expected `cron(...)`, `rate(...)` or `at(...)`", start);
            let bare_cron = trimmed.starts_with(|c: char| c.is_ascii_digit() || c == '*')
                && trimmed.split_whitespace().count() >= 5;
            return Err(if bare_cron {
                error.hint(format!("wrap the cron fields in `cron(...)`: `cron({trimmed})`"))
            } else {
                error.hint(EXAMPLES)
            });
        };
        let keyword = &trimmed[..open];
        let inner_start = start + open + 1;
        let after_open = &trimmed[open + 1..];
        let inner = match after_open.strip_suffix(')') {
            Some(inner) => inner,
            None => {
                return Err(match after_open.find(')') {
                    Some(close) => ParseError::new("unexpected text after `)`", inner_start + close + 1)
                        .hint("remove it; one expression per schedule"),
                    None => ParseError::new("missing `)` at the end", start + trimmed.len())
                        .hint("close the expression with `)`"),
                });
            }
        };
        match keyword {
            "cron" => Cron::parse_fields(inner, inner_start).map(Expression::Cron),
            "rate" => Rate::parse_inner(inner, inner_start).map(Expression::Rate),
            "at" => parse_at(inner, inner_start).map(Expression::At),
            _ => Err(unknown_keyword(keyword, start)),
        }
    }
}

fn unknown_keyword(keyword: &str, offset: usize) -> ParseError {
    let error = ParseError::new(format!("unknown expression type `{keyword}`"), offset);
    let known = ["cron", "rate", "at"];
    let lower = keyword.to_ascii_lowercase();
    if let Some(k) = known.iter().find(|k| lower == **k) {
        error.hint(format!("write `{k}` in lower case"))
    } else if let Some(k) = known.iter().find(|k| lower.trim() == **k) {
        error.hint(format!("remove the space: `{k}(`"))
    } else {
        error.hint(EXAMPLES)
    }
}

fn parse_at(inner: &str, base: usize) -> Result<NaiveDateTime, ParseError> {
    let parts = tokens(inner, base);
    let [value] = parts[..] else {
        let offset = parts.get(1).map_or(base, |t| t.offset);
        let error = ParseError::new("at() needs exactly one date and time, yyyy-mm-ddThh:mm:ss", offset);
        return Err(match parts[..] {
            [date, time] => {
                error.hint(format!("join the date and time with `T`: `at({}T{})`", date.text, time.text))
            }
            _ => error.hint("write e.g. `at(2026-12-01T03:00:00)`"),
        });
    };
    let text = value.text;
    let bytes = text.as_bytes();
    let shape_ok = bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        });
    if !shape_ok {
        let error = ParseError::new(
            format!("at() value `{text}` is not of the form yyyy-mm-ddThh:mm:ss"),
            value.offset,
        );
        let zoned = text.get(19..).is_some_and(|zone| zone.starts_with(['Z', 'z', '+', '-']));
        return Err(if zoned {
            error.hint("leave out the zone; the time is read in the schedule's timezone")
        } else {
            error.hint("write e.g. `at(2026-12-01T03:00:00)`, local to the schedule's timezone")
        });
    }
    // The shape check above guarantees ASCII digits at these positions.
    let number = |range: std::ops::Range<usize>| text[range].parse::<u32>().unwrap_or(u32::MAX);
    let year = text[0..4].parse::<i32>().unwrap_or(i32::MAX);
    let date = NaiveDate::from_ymd_opt(year, number(5..7), number(8..10)).ok_or_else(|| {
        ParseError::new(format!("at() date `{}` does not exist", &text[..10]), value.offset)
    })?;
    let time = NaiveTime::from_hms_opt(number(11..13), number(14..16), number(17..19)).ok_or_else(|| {
        ParseError::new(format!("at() time `{}` is not a valid time of day", &text[11..]), value.offset + 11)
            .hint("use 00:00:00 to 23:59:59")
    })?;
    Ok(date.and_time(time))
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expression::Cron(cron) => cron.fmt(f),
            Expression::Rate(rate) => rate.fmt(f),
            Expression::At(at) => write!(f, "at({})", at.format(AT_FORMAT)),
        }
    }
}

impl FromStr for Expression {
    type Err = ParseError;

    fn from_str(source: &str) -> Result<Expression, ParseError> {
        Expression::parse(source)
    }
}
