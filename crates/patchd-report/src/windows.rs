//! The windows' next firings, as `patchd plan` prints them and the HTTP API serves them
//! (`/v1/windows`, `/v1/status`): every configured window with its upcoming occurrences.

use chrono::{DateTime, SecondsFormat, Utc};
use patchd_config::Config;
use serde::Serialize;

use crate::render::rfc3339;

/// One window and its next firings; part of `patchd plan --format json`'s contract.
#[derive(Debug, Serialize)]
pub struct WindowPlan {
    pub name: String,
    pub schedule: String,
    pub timezone: String,
    pub offset_days: u8,
    pub duration_hours: i64,
    pub cutoff_hours: i64,
    pub enabled: bool,
    pub next: Vec<Firing>,
}

#[derive(Debug, Serialize)]
pub struct Firing {
    /// RFC 3339 in UTC with a `Z` suffix.
    pub start: String,
    pub end: String,
    /// RFC 3339 with the window's own UTC offset at that instant.
    pub local_start: String,
}

/// Every configured window (disabled ones included, marked) with its first `count` firings
/// after `from`.
pub fn upcoming(config: &Config, from: DateTime<Utc>, count: usize) -> Vec<WindowPlan> {
    config
        .windows
        .iter()
        .map(|w| {
            let tz = w.schedule.timezone();
            WindowPlan {
                name: w.name.clone(),
                schedule: w.schedule.expression().to_string(),
                timezone: tz.name().to_string(),
                offset_days: w.schedule.offset_days(),
                duration_hours: w.duration.num_hours(),
                cutoff_hours: w.cutoff.num_hours(),
                enabled: w.enabled,
                next: w
                    .occurrences_after(from)
                    .take(count)
                    .map(|(start, end)| Firing {
                        start: rfc3339(start),
                        end: rfc3339(end),
                        local_start: start.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true),
                    })
                    .collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{config, t};

    #[test]
    fn firings_in_utc_and_in_the_window_s_own_offset() {
        let windows = upcoming(&config(), t("2026-11-28T00:00:00Z"), 2);
        let w = &windows[0];
        assert_eq!((w.name.as_str(), w.timezone.as_str(), w.duration_hours), ("w", "Europe/Berlin", 2));
        let firings: Vec<(&str, &str, &str)> =
            w.next.iter().map(|f| (f.start.as_str(), f.end.as_str(), f.local_start.as_str())).collect();
        assert_eq!(
            firings,
            vec![
                ("2026-11-29T01:00:00Z", "2026-11-29T03:00:00Z", "2026-11-29T02:00:00+01:00"),
                ("2026-12-06T01:00:00Z", "2026-12-06T03:00:00Z", "2026-12-06T02:00:00+01:00"),
            ]
        );
    }
}
