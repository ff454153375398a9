//! The windows' next firings, as `patchd plan` prints them and the HTTP API serves them
//! (`/v1/windows`, `/v1/status`): every configured window with its upcoming occurrences.

use chrono::{DateTime, SecondsFormat, Utc};
use patchd_config::{Config, Task};
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
    /// The window's tasks that roll out in canary waves or behind a gate; absent when none do.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<TaskRollout>,
}

/// How a task releases its instances: its waves, bake, tag cap and gate.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct TaskRollout {
    pub task: String,
    /// Cumulative shares, as written (`1`, `10%`...); empty for one wave.
    pub waves: Vec<String>,
    pub bake_minutes: u64,
    /// `at most N per TAG in flight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_tag: Option<String>,
    /// The gate's checks after each wave, in the order they are judged.
    pub gate: Vec<String>,
    /// The hook documents run on each node, as `stage: document`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<String>,
}

impl TaskRollout {
    /// The task's rollout, unless it is a plain one (one wave, no cap, no gate).
    pub fn of(task: &Task) -> Option<TaskRollout> {
        let policy = &task.waves;
        if policy.is_plain() {
            return None;
        }
        let mut gate = Vec::new();
        if let Some(g) = &policy.gate {
            if g.reboot_truth {
                gate.push("reboot truth (agents Online, no FAILED or pending-reboot patches)".to_string());
            }
            gate.push(format!("error budget (max_errors {})", task.max_errors));
            if let Some(alarm) = &g.alarm {
                gate.push(format!("alarm `{alarm}` not in ALARM (SendCommand AlarmConfiguration)"));
            }
            if let Some(url) = &g.url {
                gate.push(format!("GET {url} answers 2xx"));
            }
            if let Some(command) = &g.command {
                let argv: Vec<&str> = std::iter::once(command.program.as_str())
                    .chain(command.args.iter().map(String::as_str))
                    .collect();
                gate.push(format!("`{}` exits 0 within {} s", argv.join(" "), command.timeout.as_secs()));
            }
        }
        let hooks = policy.hooks.as_ref().map_or_else(Vec::new, |h| {
            [("pre-install", &h.pre_install), ("post-install", &h.post_install), ("on-exit", &h.on_exit)]
                .into_iter()
                .filter_map(|(stage, doc)| Some(format!("{stage}: {}", doc.as_ref()?)))
                .collect()
        });
        Some(TaskRollout {
            hooks,
            task: task.name.clone(),
            waves: policy.shares.iter().map(ToString::to_string).collect(),
            bake_minutes: policy.bake.as_secs() / 60,
            max_per_tag: policy
                .max_per_tag
                .as_ref()
                .map(|c| format!("at most {} per `{}` in flight", c.max, c.tag)),
            gate,
        })
    }

    /// One line: `install: waves 1, 10%, 100%; bake 15 min; at most 1 per `cluster` in flight`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.waves.is_empty() {
            parts.push(format!("waves {}", self.waves.join(", ")));
        }
        if self.bake_minutes > 0 {
            parts.push(format!("bake {} min", self.bake_minutes));
        }
        parts.extend(self.max_per_tag.clone());
        format!("{}: {}", self.task, parts.join("; "))
    }
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
                rollouts: w.tasks.iter().filter_map(TaskRollout::of).collect(),
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
