//! Parsing of the fields between `cron(` and `)`.
//!
//! Every error carries the byte offset of the offending token in the whole
//! source, so all slicing below tracks `(offset, text)` pairs.

use super::{Cron, DayOfMonth, DayOfWeek, DaySpec, MAX_YEAR, MIN_YEAR};
use crate::lex::{tokens, Token};
use crate::ParseError;

const FIELD_ORDER: &str = "minutes hours day-of-month month day-of-week year";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Seconds,
    Minutes,
    Hours,
    DayOfMonth,
    Month,
    DayOfWeek,
    Year,
}

const MONTH_NAMES: [&str; 12] =
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Seconds => "seconds",
            Field::Minutes => "minutes",
            Field::Hours => "hours",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
            Field::Year => "year",
        }
    }

    fn bounds(self) -> (u32, u32) {
        match self {
            Field::Seconds | Field::Minutes => (0, 59),
            Field::Hours => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (1, 7),
            // Both bounds are small positive constants.
            Field::Year => (MIN_YEAR.unsigned_abs(), MAX_YEAR.unsigned_abs()),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &MONTH_NAMES,
            Field::DayOfWeek => &WEEKDAY_NAMES,
            _ => &[],
        }
    }

    /// Years are a line, not a cycle, so `2030-2026` is a mistake there while
    /// `FRI-MON` or `22-2` are meaningful elsewhere.
    fn cyclic(self) -> bool {
        self != Field::Year
    }

    fn range_text(self) -> String {
        let (min, max) = self.bounds();
        match self {
            Field::DayOfWeek => format!("{min}-{max} (1 = SUN)"),
            _ => format!("{min}-{max}"),
        }
    }

    fn accepted_values(self) -> String {
        match self {
            Field::Month => "use 1-12 or JAN-DEC".to_owned(),
            Field::DayOfWeek => "use 1-7 or SUN-SAT (1 = SUN, 7 = SAT)".to_owned(),
            _ => format!("use a number in {}", self.range_text()),
        }
    }
}

/// Bitset over the values of one field, indexed by `value - min`; 256 bits
/// are enough for the 230 years of the year field.
#[derive(Default)]
struct ValueSet([u64; 4]);

impl ValueSet {
    fn insert(&mut self, index: u32) {
        let index = index as usize;
        if let Some(word) = self.0.get_mut(index / 64) {
            *word |= 1 << (index % 64);
        }
    }

    /// The set as a `u64` with bit `n` meaning value `n`; only for fields whose
    /// values are all below 64.
    fn by_value(&self, field: Field) -> u64 {
        self.0[0] << field.bounds().0
    }
}

pub(super) fn parse(text: &str, base: usize) -> Result<Cron, ParseError> {
    let mut fields = tokens(text, base);
    let count = fields.len();
    if count == 6 {
        // Without a seconds field the expression fires at second 0.
        fields.insert(0, Token { offset: base, text: "0" });
    }
    let Ok(fields) = <[Token<'_>; 7]>::try_from(fields) else {
        return Err(field_count_error(&tokens(text, base), count, text, base));
    };
    let [seconds, minutes, hours, dom, month, dow, year] = fields;

    let seconds = parse_list(Field::Seconds, seconds)?.by_value(Field::Seconds);
    let minutes = parse_list(Field::Minutes, minutes)?.by_value(Field::Minutes);
    let hours = parse_list(Field::Hours, hours)?.by_value(Field::Hours);
    let day_of_month = parse_day_of_month(dom)?;
    let months = parse_list(Field::Month, month)?.by_value(Field::Month);
    let day_of_week = parse_day_of_week(dow)?;
    let years = parse_list(Field::Year, year)?.0;

    let days = match (day_of_month, day_of_week) {
        (Some(dom), None) => DaySpec::Month(dom),
        (None, Some(dow)) => DaySpec::Week(dow),
        (None, None) => {
            return Err(ParseError::new("day-of-month and day-of-week cannot both be `?`", dow.offset)
                .hint("set one of them, e.g. `*` in day-of-week to run every day"));
        }
        (Some(_), Some(_)) => {
            let hint = if dow.text == "*" {
                "use `?` in day-of-week when you set day-of-month"
            } else if dom.text == "*" {
                "use `?` in day-of-month when you set day-of-week"
            } else {
                "SSM cannot combine the two day fields; set one and put `?` in the other"
            };
            return Err(
                ParseError::new("one of day-of-month and day-of-week must be `?`", dow.offset).hint(hint)
            );
        }
    };

    let canonical: Vec<String> = tokens(text, base).iter().map(|t| t.upper()).collect();
    Ok(Cron { text: canonical.join(" "), seconds, minutes, hours, months, days, years })
}

fn field_count_error(fields: &[Token<'_>], n: usize, text: &str, base: usize) -> ParseError {
    let message = format!(
        "cron expression has {n} field{}; expected 6 ({FIELD_ORDER}) or 7 with leading seconds",
        if n == 1 { "" } else { "s" }
    );
    if n > 7 {
        let offset = fields.get(7).map_or(base, |t| t.offset);
        return ParseError::new(message, offset)
            .hint("separate fields with spaces and use `,` inside a field for lists");
    }
    let error = ParseError::new(message, base + text.len());
    match n {
        5 => error.hint("SSM cron has a year field; add `*` at the end for every year"),
        _ => error.hint(format!("write the fields as `{FIELD_ORDER}`")),
    }
}

/// Parses a comma-separated list of values, ranges and steps.
fn parse_list(field: Field, token: Token<'_>) -> Result<ValueSet, ParseError> {
    let mut set = ValueSet::default();
    for item in token.split(',') {
        parse_item(field, item, &mut set)?;
    }
    Ok(set)
}

fn parse_item(field: Field, item: Token<'_>, set: &mut ValueSet) -> Result<(), ParseError> {
    let (min, max) = field.bounds();
    if item.text.is_empty() {
        return Err(ParseError::new(format!("{} has an empty list item", field.name()), item.offset)
            .hint("remove the extra `,`"));
    }
    if item.text == "?" {
        return Err(question_mark_error(field, item));
    }
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            if field == Field::DayOfWeek {
                return Err(ParseError::new("day-of-week does not allow `/` steps", step.offset - 1)
                    .hint("list the days instead, e.g. `MON,WED,FRI`"));
            }
            (base, Some(parse_step(field, step)?))
        }
        None => (item, None),
    };
    let (start, end) = if base.text == "*" {
        (min, max)
    } else if let Some((from, to)) = base.split_once('-') {
        (parse_value(field, from)?, parse_value(field, to)?)
    } else {
        let value = parse_value(field, base)?;
        // `a/n` means "from a, every n, to the end of the field".
        (value, if step.is_some() { max } else { value })
    };
    if start > end && !field.cyclic() {
        return Err(ParseError::new(
            format!("{} range `{}` runs backwards", field.name(), base.text),
            base.offset,
        )
        .hint("write the smaller value first"));
    }
    let size = max - min + 1;
    let length = if start <= end { end - start } else { end + size - start };
    let step = step.unwrap_or(1);
    for k in (0..=length).step_by(step as usize) {
        set.insert((start - min + k) % size);
    }
    Ok(())
}

fn parse_step(field: Field, step: Token<'_>) -> Result<u32, ParseError> {
    let (min, max) = field.bounds();
    let size = max - min + 1;
    let error = || {
        ParseError::new(
            format!("{} step `{}` must be a whole number from 1 to {size}", field.name(), step.text),
            step.offset,
        )
    };
    match parse_number(step.text) {
        Some(n) if (1..=size).contains(&n) => Ok(n),
        _ => Err(error()),
    }
}

/// A plain decimal number; `None` for anything else, including values too
/// large for `u32` (the caller reports those as out of range or invalid).
fn parse_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_value(field: Field, token: Token<'_>) -> Result<u32, ParseError> {
    let (min, max) = field.bounds();
    let name = field.name();
    if token.text.is_empty() {
        return Err(
            ParseError::new(format!("{name} is missing a value"), token.offset).hint(field.accepted_values())
        );
    }
    if token.text.bytes().all(|b| b.is_ascii_digit()) {
        return match parse_number(token.text) {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(out_of_range(field, token)),
        };
    }
    let upper = token.upper();
    if let Some(index) = field.names().iter().position(|n| *n == upper) {
        // Names are listed in value order starting at the field minimum.
        return Ok(min + index as u32);
    }
    let what = if field.names().is_empty() { "is not a number" } else { "is not a number or a name" };
    let error = ParseError::new(format!("{name} value `{}` {what}", token.text), token.offset);
    Err(if looks_special(&upper) {
        error.hint("`L`, `W` and `#` are only allowed in day-of-month and day-of-week, standing alone")
    } else {
        error.hint(field.accepted_values())
    })
}

/// Whether a value is one of the day-field specials (`L`, `LW`, `15W`, `6L`,
/// `FRIL`, `TUE#2`) written somewhere they are not allowed.
fn looks_special(upper: &str) -> bool {
    if upper.contains('#') {
        return true;
    }
    match upper.strip_suffix(['L', 'W']) {
        Some(rest) => {
            rest.is_empty()
                || rest == "L"
                || rest.bytes().all(|b| b.is_ascii_digit())
                || WEEKDAY_NAMES.contains(&rest)
        }
        None => false,
    }
}

fn out_of_range(field: Field, token: Token<'_>) -> ParseError {
    let error = ParseError::new(
        format!("{} value `{}` is out of range {}", field.name(), token.text, field.range_text()),
        token.offset,
    );
    match (field, parse_number(token.text)) {
        (Field::DayOfWeek, Some(0)) => {
            error.hint("day-of-week counts from 1 = SUN to 7 = SAT; use 1 or SUN for Sunday")
        }
        (Field::Hours, Some(24)) => error.hint("midnight is hour 0"),
        (Field::Minutes | Field::Seconds, Some(60)) => error.hint("the last one is 59"),
        (Field::Month, Some(0)) => error.hint("months count from 1 = JAN"),
        _ => error,
    }
}

fn question_mark_error(field: Field, token: Token<'_>) -> ParseError {
    if matches!(field, Field::DayOfMonth | Field::DayOfWeek) {
        ParseError::new(format!("`?` must stand alone in {}", field.name()), token.offset)
            .hint("`?` means \"no value\"; it cannot be part of a list or range")
    } else {
        ParseError::new(format!("{} does not allow `?`", field.name()), token.offset)
            .hint("`?` is only allowed in day-of-month or day-of-week; use `*` for every value")
    }
}

/// `None` means `?`.
fn parse_day_of_month(token: Token<'_>) -> Result<Option<DayOfMonth>, ParseError> {
    let upper = token.upper();
    match upper.as_str() {
        "?" => return Ok(None),
        "L" => return Ok(Some(DayOfMonth::Last)),
        "LW" => return Ok(Some(DayOfMonth::LastWeekday)),
        _ => {}
    }
    if let Some(day) = upper.strip_suffix('W') {
        let day_token = Token { offset: token.offset, text: &token.text[..day.len()] };
        if !day.is_empty() && day.bytes().all(|b| b.is_ascii_digit()) {
            let day = parse_value(Field::DayOfMonth, day_token)?;
            return Ok(Some(DayOfMonth::NearestWeekday(day)));
        }
    }
    if let Some(at) = upper.find(['L', 'W']) {
        let special = &upper[at..=at];
        return Err(ParseError::new(format!("day-of-month `{special}` must stand alone"), token.offset + at)
            .hint("write `L` (last day), `LW` (last weekday) or one day with `W`, e.g. `15W`"));
    }
    if let Some(at) = upper.find('#') {
        return Err(ParseError::new("day-of-month does not allow `#`", token.offset + at).hint(
            "`#` picks the nth weekday; use it in day-of-week, e.g. `TUE#2`, with `?` in day-of-month",
        ));
    }
    if upper.contains('?') {
        return Err(question_mark_error(Field::DayOfMonth, token));
    }
    Ok(Some(DayOfMonth::Days(parse_list(Field::DayOfMonth, token)?.by_value(Field::DayOfMonth))))
}

/// `None` means `?`.
fn parse_day_of_week(token: Token<'_>) -> Result<Option<DayOfWeek>, ParseError> {
    let upper = token.upper();
    match upper.as_str() {
        "?" => return Ok(None),
        // Quartz reads a bare `L` in day-of-week as the last day of the week.
        "L" => return Ok(Some(DayOfWeek::Days(1 << 6))),
        _ => {}
    }
    let standalone = |at: usize, special: &str| {
        ParseError::new(format!("day-of-week `{special}` must stand alone"), token.offset + at)
            .hint("write one weekday with it, e.g. `TUE#2` or `6L`, not a list or range")
    };
    if let Some((weekday, nth)) = token.split_once('#') {
        let lists = |text: &str| text.contains([',', '-', '/', '*']);
        if lists(weekday.text) || lists(nth.text) {
            return Err(standalone(weekday.text.len(), "#"));
        }
        let weekday = parse_value(Field::DayOfWeek, weekday)?;
        let nth_value = match parse_number(nth.text) {
            Some(n) if (1..=5).contains(&n) => n,
            _ => {
                return Err(ParseError::new(
                    format!("day-of-week occurrence `#{}` must be from 1 to 5", nth.text),
                    nth.offset,
                )
                .hint("`TUE#2` is the second Tuesday of the month"));
            }
        };
        return Ok(Some(DayOfWeek::Nth { weekday: weekday - 1, nth: nth_value }));
    }
    if let Some(weekday) = upper.strip_suffix('L') {
        let weekday_token = Token { offset: token.offset, text: &token.text[..weekday.len()] };
        if weekday.contains([',', '-', '/', '*']) {
            return Err(standalone(weekday.len(), "L"));
        }
        let weekday = parse_value(Field::DayOfWeek, weekday_token)?;
        return Ok(Some(DayOfWeek::Last { weekday: weekday - 1 }));
    }
    if let Some(at) = upper.find('L') {
        return Err(standalone(at, "L"));
    }
    if upper.contains('?') {
        return Err(question_mark_error(Field::DayOfWeek, token));
    }
    let set = parse_list(Field::DayOfWeek, token)?;
    // Index 0 is SUN (value 1), which is exactly the internal weekday number.
    let weekdays = u8::try_from(set.0[0] & 0x7f).unwrap_or(0x7f);
    Ok(Some(DayOfWeek::Days(weekdays)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(field: Field, text: &str) -> Vec<u32> {
        let set = match parse_list(field, Token { offset: 0, text }) {
            Ok(set) => set,
            Err(err) => panic!("{text}: {err}"),
        };
        let (min, max) = field.bounds();
        (min..=max)
            .filter(|v| {
                let i = (v - min) as usize;
                set.0[i / 64] & (1 << (i % 64)) != 0
            })
            .collect()
    }

    #[test]
    fn lists_ranges_and_steps() {
        assert_eq!(values(Field::Minutes, "5/15"), [5, 20, 35, 50]);
        assert_eq!(values(Field::Minutes, "*/20"), [0, 20, 40]);
        assert_eq!(values(Field::Minutes, "10-30/10,59"), [10, 20, 30, 59]);
        assert_eq!(values(Field::Hours, "22-2"), [0, 1, 2, 22, 23]);
        assert_eq!(values(Field::Hours, "22-2/2"), [0, 2, 22]);
        assert_eq!(values(Field::DayOfWeek, "FRI-MON"), [1, 2, 6, 7]);
        assert_eq!(values(Field::Month, "nov-feb"), [1, 2, 11, 12]);
        assert_eq!(values(Field::DayOfMonth, "30-2"), [1, 2, 30, 31]);
        assert_eq!(values(Field::Year, "2197/2"), [2197, 2199]);
        assert_eq!(values(Field::Year, "2199"), [2199]);
    }
}
