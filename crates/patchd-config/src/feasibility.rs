//! SLA feasibility: can the configured schedule install a patch of each rank within its SLA?
//!
//! For a group, the worst case is a patch released just after an install window opened:
//! it waits for the baseline's approval delay, then for the next install window, which then
//! runs for its full duration. So the worst-case age at install is the approval delay plus the
//! longest gap between consecutive install-window starts over the next year, plus the duration
//! of the window that closes the gap.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use crate::diagnostic::Diagnostics;
use crate::model::*;

/// How far ahead window starts are examined.
pub const HORIZON_DAYS: i64 = 365;

/// SSM's predefined baselines approve most security patches seven days after release; that
/// is what a group with no patchd baseline gets.
pub const AWS_DEFAULT_APPROVAL_DAYS: u32 = 7;

/// One line of the feasibility table: `patchd plan`'s `sla_feasibility` contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub group: String,
    pub rank: RiskRank,
    /// None when no install window will ever reach the group.
    pub worst_case_days: Option<f64>,
    pub sla_days: u32,
    pub ok: bool,
    /// The baseline the delay comes from; None for the assumed AWS default baseline.
    pub baseline: Option<String>,
    pub approval_delay_days: u32,
    pub longest_gap_days: Option<f64>,
    pub window_hours: Option<f64>,
    /// Why the row is not ok, when the numbers alone do not say.
    pub note: Option<String>,
}

impl Serialize for RiskRank {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn days(d: Duration) -> f64 {
    d.num_seconds() as f64 / 86_400.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The ranks a rule approves: from its severity-like filters, or every rank without one.
fn ranks_of(rule: &ApprovalRule) -> Vec<RiskRank> {
    // PRIORITY (Debian, Ubuntu) is the package priority, not a security severity.
    let severity = ["SEVERITY", "MSRC_SEVERITY"].iter().find_map(|key| rule.filter(key));
    match severity {
        None => RiskRank::ALL.to_vec(),
        Some(filter) => {
            let mut ranks: Vec<RiskRank> =
                filter.values.iter().filter_map(|v| RiskRank::from_vendor_severity(v)).collect();
            ranks.sort();
            ranks.dedup();
            ranks
        }
    }
}

/// Approval delay per rank for newly released patches; `approve_until` rules approve nothing
/// new, so they do not count.
fn approval_delays(baseline: &Baseline) -> Vec<(RiskRank, u32)> {
    let mut delays: Vec<(RiskRank, u32)> = Vec::new();
    for rule in &baseline.rules {
        let delay = match rule.approval {
            Approval::AfterDays(n) => n,
            Approval::Immediate => 0,
            Approval::Until(_) => continue,
        };
        for rank in ranks_of(rule) {
            match delays.iter_mut().find(|(r, _)| *r == rank) {
                Some((_, d)) => *d = (*d).min(delay),
                None => delays.push((rank, delay)),
            }
        }
    }
    delays.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
    delays
}

/// The longest wait for an install window plus that window's duration, over the horizon.
/// None when install windows stop opening (an end date, a one-off `at()`).
struct Reach {
    longest_gap: Duration,
    window: Duration,
}

fn reach(windows: &[&Window], from: DateTime<Utc>) -> Option<Reach> {
    let horizon = from + Duration::days(HORIZON_DAYS);
    let mut starts: Vec<(DateTime<Utc>, Duration)> = Vec::new();
    for window in windows {
        let mut occurrences = window.schedule.firings_after(from);
        for start in occurrences.by_ref() {
            starts.push((start, window.duration));
            if start > horizon {
                break;
            }
        }
    }
    starts.sort();
    // The wait after the horizon's last start must also be bounded, or the schedule runs out.
    if starts.last().is_none_or(|(last, _)| *last <= horizon) {
        return None;
    }
    let mut previous = from;
    let mut worst: Option<Reach> = None;
    for (start, duration) in starts {
        let gap = start - previous;
        if worst.as_ref().is_none_or(|w| gap + duration > w.longest_gap + w.window) {
            worst = Some(Reach { longest_gap: gap, window: duration });
        }
        previous = start;
        if start > horizon {
            break;
        }
    }
    worst
}

/// The feasibility table for every configured group.
pub fn analyse(config: &Config, from: DateTime<Utc>) -> Vec<Row> {
    let mut rows = Vec::new();
    for group in &config.groups {
        let install_windows: Vec<&Window> = config
            .windows
            .iter()
            .filter(|w| w.enabled)
            .filter(|w| {
                w.tasks.iter().any(|t| {
                    t.operation == Operation::Install && t.groups.iter().any(|g| g.value == group.name)
                })
            })
            .collect();
        let reach = if install_windows.is_empty() { None } else { reach(&install_windows, from) };
        let no_window_note = if install_windows.is_empty() {
            "no enabled install window targets this group"
        } else {
            "the install windows of this group stop opening"
        };
        let baselines: Vec<&Baseline> = config.baselines_for_group(group).collect();
        // (baseline name, approval delay per rank); None stands for SSM's default baseline.
        type DelayPlan<'a> = (Option<&'a str>, Vec<(RiskRank, u32)>);
        let mut plans: Vec<DelayPlan> =
            baselines.iter().map(|b| (Some(b.name.as_str()), approval_delays(b))).collect();
        if plans.is_empty() {
            plans.push((None, RiskRank::ALL.iter().map(|r| (*r, AWS_DEFAULT_APPROVAL_DAYS)).collect()));
        }
        for (baseline, delays) in plans {
            for (rank, delay) in delays {
                let sla_days = config.sla.days(rank);
                let (worst, gap, hours, note) = match &reach {
                    Some(r) => {
                        let worst = f64::from(delay) + days(r.longest_gap) + days(r.window);
                        let note = baseline.is_none().then(|| {
                            format!("no patchd baseline serves this group; assumed the AWS default baseline's {AWS_DEFAULT_APPROVAL_DAYS}-day approval delay")
                        });
                        (
                            Some(round2(worst)),
                            Some(round2(days(r.longest_gap))),
                            Some(r.window.num_minutes() as f64 / 60.0),
                            note,
                        )
                    }
                    None => (None, None, None, Some(no_window_note.to_string())),
                };
                rows.push(Row {
                    group: group.name.clone(),
                    rank,
                    worst_case_days: worst,
                    sla_days,
                    ok: worst.is_some_and(|w| w <= f64::from(sla_days)),
                    baseline: baseline.map(str::to_string),
                    approval_delay_days: delay,
                    longest_gap_days: gap,
                    window_hours: hours,
                    note,
                });
            }
        }
    }
    rows
}

/// Turns failing rows into warnings on the group, plus a warning for baselines that approve
/// no critical patch at all (the one rank PCI DSS fixes a deadline for).
pub(crate) fn warn(config: &Config, rows: &[Row], d: &mut Diagnostics) {
    for group in &config.groups {
        let targeted = config
            .windows
            .iter()
            .flat_map(|w| &w.tasks)
            .any(|t| t.groups.iter().any(|g| g.value == group.name));
        if !targeted {
            // Validation already warns that nothing targets the group at all.
            continue;
        }
        let group_rows: Vec<&Row> = rows.iter().filter(|r| r.group == group.name && !r.ok).collect();
        if let Some(row) = group_rows.iter().find(|r| r.worst_case_days.is_none()) {
            d.warning(
                &group.origin,
                format!(
                    "group `{}` cannot meet any patch SLA: {}",
                    group.name,
                    row.note.as_deref().unwrap_or_default()
                ),
                Some(
                    "add an `operation = \"install\"` task for this group to a window that keeps opening"
                        .into(),
                ),
            );
            continue;
        }
        for row in group_rows {
            let worst = row.worst_case_days.unwrap_or_default();
            d.warning(
                &group.origin,
                format!(
                    "group `{}`: {} patches can wait up to {worst:.1} days before install ({} days approval{} + {:.1} days between install windows + {} h window), over the {}-day SLA",
                    group.name,
                    row.rank,
                    row.approval_delay_days,
                    if row.baseline.is_none() { " by the assumed AWS default baseline" } else { "" },
                    row.longest_gap_days.unwrap_or_default(),
                    row.window_hours.unwrap_or_default(),
                    row.sla_days,
                ),
                Some("shorten `approve_after_days`, open install windows more often, or both".into()),
            );
        }
    }
    for baseline in &config.baselines {
        let delays = approval_delays(baseline);
        if !baseline.rules.is_empty() && !delays.iter().any(|(r, _)| *r == RiskRank::Critical) {
            d.warning(
                &baseline.origin,
                format!("baseline `{}` has no rule that approves newly released critical patches", baseline.name),
                Some("add a rule whose severity filter includes `Critical` (or has no severity filter), with `approve_after_days`".into()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::TimeZone;

    use super::*;

    fn config(baseline_rules: &str, os: &str, windows: &str) -> Config {
        let text = format!(
            r#"
[[baseline]]
name = "base"
operating_system = "{os}"
patch_groups = ["pg"]
{baseline_rules}

[[group]]
name = "g"
[group.tags]
"Patch Group" = "pg"

{windows}
"#
        );
        let from = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        match crate::load_sources(vec![(PathBuf::from("t.toml"), text)], from) {
            Ok(loaded) => loaded.config,
            Err(crate::LoadError::Invalid { diagnostics }) => panic!("{diagnostics:#?}"),
            Err(e) => panic!("{e}"),
        }
    }

    fn install_window(name: &str, schedule: &str, hours: u32, extra: &str) -> String {
        format!("[[window]]\nname = \"{name}\"\nschedule = \"{schedule}\"\nduration_hours = {hours}\n{extra}\n[[window.task]]\noperation = \"install\"\ngroups = [\"g\"]\n")
    }

    fn rows(config: &Config) -> Vec<(RiskRank, Option<f64>, bool)> {
        let from = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        analyse(config, from).into_iter().map(|r| (r.rank, r.worst_case_days, r.ok)).collect()
    }

    const SEVEN_DAYS_ALL: &str =
        "[[baseline.rule]]\nclassification = [\"Security\"]\napprove_after_days = 7\n";

    #[test]
    fn seven_day_delay_and_a_monthly_window_cannot_meet_thirty_days() {
        // Second Tuesday of each month: the longest gap in the next year is five weeks.
        let c =
            config(SEVEN_DAYS_ALL, "AMAZON_LINUX_2", &install_window("m", "cron(0 2 ? * TUE#2 *)", 4, ""));
        let got = rows(&c);
        assert_eq!(got[0], (RiskRank::Critical, Some(round2(7.0 + 35.0 + 4.0 / 24.0)), false));
        // Every other rank has 90 days.
        assert!(got[1..].iter().all(|(_, _, ok)| *ok));
    }

    #[test]
    fn daily_window_with_no_delay_is_comfortable() {
        let rules = "[[baseline.rule]]\nseverity = [\"Critical\"]\napprove_after_days = 0\n";
        let c = config(rules, "AMAZON_LINUX_2", &install_window("d", "cron(0 2 * * ? *)", 3, ""));
        assert_eq!(rows(&c), vec![(RiskRank::Critical, Some(round2(1.0 + 3.0 / 24.0)), true)]);
    }

    #[test]
    fn several_windows_share_the_gap() {
        let windows = format!(
            "{}{}",
            install_window("sun", "cron(0 2 ? * SUN *)", 2, ""),
            install_window("wed", "cron(0 2 ? * WED *)", 2, "")
        );
        let c = config(SEVEN_DAYS_ALL, "AMAZON_LINUX_2", &windows);
        // Sunday to Wednesday is 3 days, Wednesday to Sunday 4: the worst wait is 4 days.
        assert_eq!(rows(&c)[0].1, Some(round2(7.0 + 4.0 + 2.0 / 24.0)));
    }

    #[test]
    fn ranks_follow_the_rules_severity_filters() {
        let rules = "[[baseline.rule]]\nseverity = [\"Critical\", \"Important\"]\napprove_after_days = 1\n[[baseline.rule]]\nseverity = [\"Important\", \"Low\"]\napprove_after_days = 10\n";
        let c = config(rules, "AMAZON_LINUX_2", &install_window("d", "cron(0 2 * * ? *)", 1, ""));
        let delays: Vec<(RiskRank, u32)> =
            analyse(&c, Utc::now()).iter().map(|r| (r.rank, r.approval_delay_days)).collect();
        assert_eq!(delays, vec![(RiskRank::Critical, 1), (RiskRank::High, 1), (RiskRank::Low, 10)]);
    }

    #[test]
    fn ubuntu_has_no_approval_delay() {
        let rules = "[[baseline.rule]]\npriority = [\"Required\", \"Important\"]\n";
        let c = config(rules, "UBUNTU", &install_window("w", "cron(0 2 ? * SUN *)", 4, ""));
        let got = analyse(&c, Utc::now());
        assert_eq!(got.len(), 4);
        assert!(got.iter().all(|r| r.approval_delay_days == 0 && r.ok));
    }

    #[test]
    fn approve_until_approves_nothing_new() {
        let rules = "[[baseline.rule]]\napprove_until = 2026-06-01\n";
        let c = config(rules, "AMAZON_LINUX_2", &install_window("w", "cron(0 2 ? * SUN *)", 4, ""));
        assert!(analyse(&c, Utc::now()).is_empty());
    }

    #[test]
    fn windows_that_stop_opening_cannot_meet_any_sla() {
        let c = config(
            SEVEN_DAYS_ALL,
            "AMAZON_LINUX_2",
            &install_window("w", "cron(0 2 ? * SUN *)", 4, "end_date = 2027-03-01"),
        );
        assert!(rows(&c).iter().all(|(_, worst, ok)| worst.is_none() && !ok));
    }

    #[test]
    fn a_late_first_window_counts_as_a_gap() {
        let c = config(
            SEVEN_DAYS_ALL,
            "AMAZON_LINUX_2",
            &install_window("w", "cron(0 0 * * ? *)", 1, "start_date = 2027-01-27T00:00:00Z"),
        );
        // Nothing installs before the start date, 60 days after 2026-11-28.
        assert_eq!(rows(&c)[0].1, Some(round2(7.0 + 60.0 + 1.0 / 24.0)));
    }

    #[test]
    fn groups_without_a_patchd_baseline_assume_the_aws_default() {
        let mut c =
            config(SEVEN_DAYS_ALL, "AMAZON_LINUX_2", &install_window("w", "cron(0 2 * * ? *)", 1, ""));
        c.baselines.clear();
        let got = analyse(&c, Utc::now());
        assert_eq!(got.len(), 4);
        assert!(got
            .iter()
            .all(|r| r.baseline.is_none() && r.approval_delay_days == AWS_DEFAULT_APPROVAL_DAYS));
        assert!(got[0].note.as_deref().unwrap().contains("AWS default"));
    }
}
