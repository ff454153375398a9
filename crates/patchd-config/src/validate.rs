//! Checks that span sections and files: one definition of each singleton section, unique
//! names, references that resolve, patch-group ownership, and the warnings that need a clock.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};

use crate::decode::{default_aws, default_daemon, FilePart};
use crate::diagnostic::{did_you_mean, Diagnostics, Origin};
use crate::feasibility;
use crate::model::*;

fn singleton<T>(d: &mut Diagnostics, section: &str, found: Vec<(T, Origin)>) -> Option<T> {
    let mut found = found.into_iter();
    let (first, first_origin) = found.next()?;
    for (_, origin) in found {
        d.error(
            &origin,
            format!("`[{section}]` is defined more than once"),
            Some(format!("it is first defined at {first_origin}; keep one `[{section}]` across all files")),
        );
    }
    Some(first)
}

fn unique_names<'a>(d: &mut Diagnostics, what: &str, items: impl Iterator<Item = (&'a str, &'a Origin)>) {
    let mut seen: HashMap<&str, &Origin> = HashMap::new();
    for (name, origin) in items {
        if let Some(first) = seen.get(name) {
            d.error(
                origin,
                format!("{what} `{name}` is defined twice"),
                Some(format!(
                    "first defined at {first}; names must be unique across all configuration files"
                )),
            );
        } else {
            seen.insert(name, origin);
        }
    }
}

pub(crate) fn merge_and_check(
    parts: Vec<FilePart>,
    sources: Vec<PathBuf>,
    now: DateTime<Utc>,
    d: &mut Diagnostics,
) -> Config {
    let mut daemons = Vec::new();
    let mut awss = Vec::new();
    let mut slas = Vec::new();
    let mut eventss = Vec::new();
    let mut config = Config {
        daemon: default_daemon(),
        aws: default_aws(),
        sla: SlaPolicy::default(),
        exceptions: Vec::new(),
        baselines: Vec::new(),
        groups: Vec::new(),
        windows: Vec::new(),
        events: Events::default(),
        sources,
    };
    let mut unanchored_rates = Vec::new();
    let mut refs = crate::decode::Refs::default();
    for part in parts {
        refs.names.extend(part.refs.names);
        refs.groups.extend(part.refs.groups);
        daemons.extend(part.daemon);
        awss.extend(part.aws);
        slas.extend(part.sla);
        eventss.extend(part.events);
        config.exceptions.extend(part.exceptions);
        config.baselines.extend(part.baselines);
        config.groups.extend(part.groups);
        config.windows.extend(part.windows);
        unanchored_rates.extend(part.unanchored_rates);
    }
    if let Some(daemon) = singleton(d, "daemon", daemons) {
        config.daemon = daemon;
    }
    if let Some(aws) = singleton(d, "aws", awss) {
        config.aws = aws;
    }
    if let Some(sla) = singleton(d, "sla", slas) {
        config.sla = sla;
    }
    if let Some(events) = singleton(d, "events", eventss) {
        config.events = events;
    }

    for kind in ["baseline", "group", "window", "exception"] {
        let names = refs.names.iter().filter(|(k, _)| *k == kind).map(|(_, n)| (n.value.as_str(), &n.origin));
        unique_names(d, kind, names);
    }
    unique_names(d, "account", config.aws.accounts.iter().map(|a| (a.name.as_str(), &a.origin)));

    check_group_references(&config, &refs, d);
    check_patch_groups(&config, d);
    warn_time_dependent(&config, now, &unanchored_rates, d);
    if !d.has_errors() {
        feasibility::warn(&config, &feasibility::analyse(&config, now), d);
    }
    config
}

fn unknown_group(config: &Config, d: &mut Diagnostics, name: &str, origin: &Origin, context: &str) {
    let hint = did_you_mean(name, config.groups.iter().map(|g| g.name.as_str())).unwrap_or_else(|| {
        if config.groups.is_empty() {
            "no [[group]] is defined yet: add one with `name` and `[group.tags]`".to_string()
        } else {
            let names: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
            format!("defined groups: {}", names.join(", "))
        }
    });
    d.error(origin, format!("{context} names unknown group `{name}`"), Some(hint));
}

fn check_group_references(config: &Config, refs: &crate::decode::Refs, d: &mut Diagnostics) {
    let defined = |name: &str| refs.names.iter().any(|(kind, n)| *kind == "group" && n.value == name);
    for (group, context) in &refs.groups {
        if !defined(group) {
            unknown_group(config, d, group, &group.origin, context);
        }
    }
    for group in &config.groups {
        let targeted = refs.groups.iter().any(|(g, _)| g.value == group.name);
        if !targeted {
            d.warning(
                &group.origin,
                format!(
                    "group `{}` is not targeted by any window task, so it is never scanned or patched",
                    group.name
                ),
                Some("add it to the `groups` of a `[[window.task]]`".into()),
            );
        }
    }
}

/// SSM registers one baseline per operating system per patch group; a second one is refused
/// by the API, and a group reached by two would be patched by whichever SSM picks.
fn check_patch_groups(config: &Config, d: &mut Diagnostics) {
    let mut owners: BTreeMap<(&str, &str), &Baseline> = BTreeMap::new();
    for baseline in &config.baselines {
        for pg in &baseline.patch_groups {
            match owners.get(&(baseline.operating_system, pg.as_str())) {
                Some(first) if first.name != baseline.name => d.error(
                    &baseline.origin,
                    format!("patch group `{pg}` is served by two {} baselines: `{}` and `{}`", baseline.operating_system, first.name, baseline.name),
                    Some(format!("SSM registers one baseline per operating system per patch group; remove `{pg}` from one of them (the other is at {})", first.origin)),
                ),
                _ => {
                    owners.insert((baseline.operating_system, pg), baseline);
                }
            }
        }
    }
    for group in &config.groups {
        let mut by_os: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for baseline in config.baselines_for_group(group) {
            by_os.entry(baseline.operating_system).or_default().push(&baseline.name);
        }
        for (os, names) in by_os {
            if names.len() > 1 {
                d.error(
                    &group.origin,
                    format!("group `{}` is reached by {} baselines for {os}: {}", group.name, names.len(), names.join(", ")),
                    Some("a group's instances must have one baseline per operating system: narrow its `Patch Group` tag values or the baselines' `patch_groups`".into()),
                );
            }
        }
    }
    for baseline in &config.baselines {
        for pg in &baseline.patch_groups {
            let selected = config.groups.iter().any(|g| g.patch_group_values().contains(&pg.as_str()));
            if !selected && !config.groups.is_empty() {
                d.warning(
                    &baseline.origin,
                    format!(
                        "baseline `{}` serves patch group `{pg}`, but no [[group]] selects that patch group",
                        baseline.name
                    ),
                    Some(format!(
                        "add `\"Patch Group\" = \"{pg}\"` to the `[group.tags]` of the group it is meant for"
                    )),
                );
            }
        }
    }
}

fn warn_time_dependent(
    config: &Config,
    now: DateTime<Utc>,
    unanchored_rates: &[(String, Origin)],
    d: &mut Diagnostics,
) {
    let today = now.date_naive();
    for exception in &config.exceptions {
        if exception.expires < today {
            d.warning(
                &exception.origin,
                format!(
                    "exception `{}` expired on {}; its findings count as open again",
                    exception.name, exception.expires
                ),
                Some("renew it with a new review and `expires` date, or remove it".into()),
            );
        } else if exception.expires > today + Duration::days(365) {
            d.warning(
                &exception.origin,
                format!(
                    "exception `{}` runs until {}, more than a year from now",
                    exception.name, exception.expires
                ),
                Some("risk acceptances should be reviewed at least yearly: set an earlier `expires`".into()),
            );
        }
    }
    for window in &config.windows {
        if window.schedule.next_after(now).is_none() {
            d.warning(
                &window.origin,
                format!(
                    "window `{}` never opens again after {}",
                    window.name,
                    now.format("%Y-%m-%d %H:%M UTC")
                ),
                Some("check its `schedule`, `start_date` and `end_date`".into()),
            );
        }
    }
    for (name, origin) in unanchored_rates {
        d.warning(
            origin,
            format!("window `{name}` uses a rate schedule without `start_date`, so its cadence counts from 1970-01-01T00:00:00Z"),
            Some("add `start_date` to choose when the first interval starts".into()),
        );
    }
}
