//! Release dates in the forms vendors write them. A date without a zone is read as UTC: every
//! feed patchd reads publishes in UTC.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Epoch seconds below this (1973-03-03) are refused: a bare year or a small counter would
/// otherwise date an advisory in 1970 and make every patch it dates look decades overdue.
const EARLIEST_EPOCH_SECONDS: f64 = 100_000_000.0;

/// `2026-10-02 19:30:12`, `2026-10-02 19:30`, `2026-10-02`, RFC 3339 with `Z` or an offset,
/// the same without a zone (`2026-10-02T19:30:12`, fractions allowed), or epoch seconds
/// (Fedora's updateinfo), integer or decimal.
pub(crate) fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Some(instant.with_timezone(&Utc));
    }
    // `%.f` also accepts no fraction at all.
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M"] {
        if let Ok(instant) = NaiveDateTime::parse_from_str(text, format) {
            return Some(instant.and_utc());
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(day.and_time(NaiveTime::MIN).and_utc());
    }
    let is_decimal = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && text.bytes().filter(|&b| b == b'.').count() <= 1;
    if is_decimal {
        return text.parse::<f64>().ok().and_then(from_epoch_seconds);
    }
    None
}

pub(crate) fn from_epoch_seconds(seconds: f64) -> Option<DateTime<Utc>> {
    if !seconds.is_finite() || seconds < EARLIEST_EPOCH_SECONDS {
        return None;
    }
    // Microseconds: a float timestamp holds no finer truth, and rounding there drops the
    // binary noise (`...123456001`) that would make equal instants unequal.
    let micros = (seconds * 1e6).round();
    if micros >= i64::MAX as f64 {
        return None;
    }
    DateTime::from_timestamp_micros(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::t;

    #[test]
    fn every_form_vendors_write() {
        let cases = [
            ("2026-10-02 19:30:12", "2026-10-02T19:30:12Z"),
            ("2026-10-02 19:30", "2026-10-02T19:30:00Z"),
            ("2026-10-02", "2026-10-02T00:00:00Z"),
            (" 2026-10-02T19:30:12Z ", "2026-10-02T19:30:12Z"),
            ("2026-10-02T21:30:12+02:00", "2026-10-02T19:30:12Z"),
            ("2026-10-02T19:30:12", "2026-10-02T19:30:12Z"),
            ("2026-10-02T19:30:12.250", "2026-10-02T19:30:12.250Z"),
            ("2026-10-02 19:30:12.5", "2026-10-02T19:30:12.500Z"),
            ("2026-10-02T19:30", "2026-10-02T19:30:00Z"),
            ("1767225600", "2026-01-01T00:00:00Z"),
            ("1767225600.25", "2026-01-01T00:00:00.250Z"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_date(text), Some(t(expected)), "{text}");
        }
    }

    #[test]
    fn unreadable_dates() {
        for text in
            ["", "tomorrow", "15/09/2026", "2026", "2026-13-01", "1.2.3", "-1767225600", "2026-10-02 25:00"]
        {
            assert_eq!(parse_date(text), None, "{text}");
        }
    }

    #[test]
    fn epoch_seconds_keep_microseconds_and_refuse_the_1970s() {
        assert_eq!(from_epoch_seconds(1_789_000_000.123456), Some(t("2026-09-10T00:26:40.123456Z")));
        assert_eq!(from_epoch_seconds(2026.0), None);
        assert_eq!(from_epoch_seconds(f64::NAN), None);
        assert_eq!(from_epoch_seconds(1e300), None);
    }
}
