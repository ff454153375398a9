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
        advisory_sources: Vec::new(),
        sources,
    };
    let mut unanchored_rates = Vec::new();
    let mut refs = crate::decode::Refs::default();
    for part in parts {
        refs.names.extend(part.refs.names);
        refs.groups.extend(part.refs.groups);
        refs.promotions.extend(part.refs.promotions);
        refs.scopes.extend(part.refs.scopes);
        daemons.extend(part.daemon);
        awss.extend(part.aws);
        slas.extend(part.sla);
        eventss.extend(part.events);
        config.advisory_sources.extend(part.advisory_sources);
        config.exceptions.extend(part.exceptions);
        config.baselines.extend(part.baselines);
        config.groups.extend(part.groups);
        config.windows.extend(part.windows);
        unanchored_rates.extend(part.unanchored_rates);
    }
    if let Some(daemon) = singleton(d, "daemon", daemons) {
        config.daemon = daemon;
    }
    // Account names of `[[aws.account]]` entries, even those dropped for errors.
    let (mut account_names, mut accounts_complete) = (Vec::new(), true);
    if let Some(part) = singleton(d, "aws", awss) {
        config.aws = part.aws;
        account_names = part.account_names;
        accounts_complete = part.complete;
    }
    if let Some(sla) = singleton(d, "sla", slas) {
        config.sla = sla;
    }
    if let Some(events) = singleton(d, "events", eventss) {
        config.events = events;
    }

    for kind in ["baseline", "group", "window", "exception", "advisory source"] {
        let names = refs.names.iter().filter(|(k, _)| *k == kind).map(|(_, n)| (n.value.as_str(), &n.origin));
        unique_names(d, kind, names);
    }

    check_group_references(&config, &refs, d);
    check_promotion_sources(&config, &refs, d);
    let accounts = Accounts::new(&config.aws, account_names, accounts_complete);
    check_scopes(&accounts, &refs, d);
    warn_disjoint_scopes(&config, &accounts, d);
    check_patch_groups(&config, d);
    warn_time_dependent(&config, now, &unanchored_rates, d);
    warn_undated_platforms(&config, d);
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

/// A promotion repeats what another window installed: that window must exist and install.
fn check_promotion_sources(config: &Config, refs: &crate::decode::Refs, d: &mut Diagnostics) {
    for (from, context) in &refs.promotions {
        match config.window(&from.value) {
            None => {
                let hint = did_you_mean(&from.value, config.windows.iter().map(|w| w.name.as_str()))
                    .unwrap_or_else(|| {
                        "`from` names the [[window]] whose installs this task repeats".to_string()
                    });
                d.error(
                    &from.origin,
                    format!("{context} promotes from unknown window `{}`", from.value),
                    Some(hint),
                );
            }
            Some(window) if !window.tasks.iter().any(|t| t.operation == Operation::Install) => d.error(
                &from.origin,
                format!("{context} promotes from window `{}`, which has no install task", from.value),
                Some("promote from a window that installs, such as a staging window".into()),
            ),
            Some(window) if window.tasks.iter().any(|t| t.promote.is_some()) => d.error(
                &from.origin,
                format!("{context} promotes from window `{}`, which promotes itself", from.value),
                Some("promote from the window that chooses the patches by its baseline".into()),
            ),
            Some(_) => {}
        }
    }
}

/// Every account name the configuration defines, with its regions where the configuration
/// says what they are.
struct Accounts<'a> {
    /// The home account first. None: the regions are only known at run time (the home account
    /// without `[aws] region`/`regions`, and accounts that inherit them), or the account was
    /// dropped for errors.
    all: Vec<(String, Option<&'a [String]>)>,
    home: &'a str,
    /// False when an `[[aws.account]]` entry has errors: it may be meant to cover any region,
    /// so checks that depend on regions would only pile onto its error.
    complete: bool,
}

impl<'a> Accounts<'a> {
    fn new(aws: &'a Aws, names: Vec<String>, complete: bool) -> Accounts<'a> {
        let home_regions = aws.configured_home_regions();
        let mut all = vec![(aws.name.clone(), home_regions)];
        for name in names {
            if all.iter().any(|(n, _)| *n == name) {
                continue; // a duplicate or a clash with the home account, already an error
            }
            let regions = aws.accounts.iter().find(|a| a.name == name).and_then(|a| {
                if a.regions.is_empty() {
                    home_regions
                } else {
                    Some(a.regions.as_slice())
                }
            });
            all.push((name, regions));
        }
        Accounts { all, home: &aws.name, complete }
    }

    fn defines(&self, name: &str) -> bool {
        self.all.iter().any(|(n, _)| n == name)
    }

    fn admitted<'s>(
        &'s self,
        scope: &'s Scoping,
    ) -> impl Iterator<Item = &'s (String, Option<&'a [String]>)> {
        self.all.iter().filter(|(name, _)| scope.accounts.is_empty() || scope.accounts.contains(name))
    }

    /// Whether some account and region is admitted by every scope; None when that depends on
    /// regions only known at run time.
    fn meet(&self, scopes: &[&Scoping]) -> Option<bool> {
        // Lists that share nothing rule out every pair, whatever the accounts' regions are.
        let disjoint = |lists: Vec<&Vec<String>>| {
            let written: Vec<_> = lists.into_iter().filter(|l| !l.is_empty()).collect();
            written.split_first().is_some_and(|(first, rest)| {
                !first.iter().any(|item| rest.iter().all(|other| other.contains(item)))
            })
        };
        if disjoint(scopes.iter().map(|s| &s.accounts).collect())
            || disjoint(scopes.iter().map(|s| &s.regions).collect())
        {
            return Some(false);
        }
        let mut unknown = !self.complete;
        for (name, regions) in &self.all {
            if !scopes.iter().all(|s| s.accounts.is_empty() || s.accounts.contains(name)) {
                continue;
            }
            match regions {
                Some(regions) => {
                    if regions.iter().any(|r| scopes.iter().all(|s| s.admits(name, r))) {
                        return Some(true);
                    }
                }
                None => unknown = true,
            }
        }
        if unknown {
            None
        } else {
            Some(false)
        }
    }
}

/// Account names in scopes must exist, and a region in a scope must be one an account of that
/// scope is in, when the configuration says which regions those accounts are in.
fn check_scopes(accounts: &Accounts, refs: &crate::decode::Refs, d: &mut Diagnostics) {
    for scope in &refs.scopes {
        let mut all_known = true;
        for account in &scope.accounts {
            if accounts.defines(account) {
                continue;
            }
            all_known = false;
            let names = accounts.all.iter().map(|(n, _)| n.as_str());
            let hint = did_you_mean(account, names).unwrap_or_else(|| {
                if accounts.all.len() == 1 {
                    format!(
                        "the only account is `{}`, the home account ([aws] `name`); define others with \
                         [[aws.account]]",
                        accounts.home
                    )
                } else {
                    let names: Vec<&str> = accounts.all.iter().map(|(n, _)| n.as_str()).collect();
                    format!(
                        "defined accounts: {} (`{}` is the home account, [aws] `name`)",
                        names.join(", "),
                        accounts.home
                    )
                }
            });
            d.error(
                &account.origin,
                format!("{} names unknown account `{}`", scope.context, account.value),
                Some(hint),
            );
        }
        if !all_known || !accounts.complete || scope.regions.is_empty() {
            continue;
        }
        let written = Scoping {
            accounts: scope.accounts.iter().map(|a| a.value.clone()).collect(),
            regions: Vec::new(),
        };
        let admitted: Vec<_> = accounts.admitted(&written).collect();
        // An account whose regions are only known at run time could have any region.
        let Some(known) = admitted.iter().map(|(_, regions)| *regions).collect::<Option<Vec<_>>>() else {
            continue;
        };
        let mut available: Vec<&str> = known.iter().flat_map(|r| r.iter().map(String::as_str)).collect();
        available.sort_unstable();
        available.dedup();
        for region in &scope.regions {
            if available.contains(&region.value.as_str()) {
                continue;
            }
            let names: Vec<&str> = admitted.iter().map(|(n, _)| n.as_str()).collect();
            d.error(
                &region.origin,
                format!("no account in scope of {} has region `{}`", scope.context, region.value),
                Some(format!(
                    "the accounts in scope ({}) are in {}; add `{}` to an account's `regions`, or remove it here",
                    names.join(", "),
                    available.join(", "),
                    region.value
                )),
            );
        }
    }
}

/// A task reaches the instances its window's scope and its group's scope both admit; when
/// they share no account and region the task never patches that group, which is legal but
/// almost certainly not what was meant.
fn warn_disjoint_scopes(config: &Config, accounts: &Accounts, d: &mut Diagnostics) {
    let resolved = |scope: &Scoping| scope.accounts.iter().all(|a| accounts.defines(a));
    for window in &config.windows {
        if !resolved(&window.scope) {
            continue; // unknown accounts are errors already; a warning would repeat them
        }
        for task in &window.tasks {
            for group_ref in &task.groups {
                let Some(group) = config.group(group_ref) else { continue };
                if !resolved(&group.scope) || accounts.meet(&[&window.scope, &group.scope]) != Some(false) {
                    continue;
                }
                d.warning(
                    &group_ref.origin,
                    format!(
                        "window `{}` and group `{}` have no account and region in common, so task `{}` never reaches the group",
                        window.name, group.name, task.name
                    ),
                    Some(format!(
                        "the window is scoped to {}, the group to {}; widen `accounts`/`regions` on one of them, or drop the group from the task",
                        describe(&window.scope),
                        describe(&group.scope)
                    )),
                );
            }
        }
    }
}

fn describe(scope: &Scoping) -> String {
    let list = |items: &[String]| items.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ");
    match (scope.accounts.is_empty(), scope.regions.is_empty()) {
        (true, true) => "every account and region".to_string(),
        (false, true) => format!("accounts {}", list(&scope.accounts)),
        (true, false) => format!("regions {}", list(&scope.regions)),
        (false, false) => format!("accounts {} in regions {}", list(&scope.accounts), list(&scope.regions)),
    }
}

/// SSM registers one baseline per operating system per patch group; a second one is refused
/// by the API, and a group reached by two would be patched by whichever SSM picks.
fn check_patch_groups(config: &Config, d: &mut Diagnostics) {
    let mut owners: BTreeMap<(&str, &str), &Baseline> = BTreeMap::new();
    for baseline in &config.baselines {
        for pg in &baseline.patch_groups {
            match owners.get(&(baseline.operating_system.as_str(), pg.as_str())) {
                Some(first) if first.name != baseline.name => d.error(
                    &baseline.origin,
                    format!("patch group `{pg}` is served by two {} baselines: `{}` and `{}`", baseline.operating_system, first.name, baseline.name),
                    Some(format!("SSM registers one baseline per operating system per patch group; remove `{pg}` from one of them (the other is at {})", first.origin)),
                ),
                _ => {
                    owners.insert((baseline.operating_system.as_str(), pg), baseline);
                }
            }
        }
    }
    for group in &config.groups {
        let mut by_os: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for baseline in config.baselines_for_group(group) {
            by_os.entry(baseline.operating_system.as_str()).or_default().push(&baseline.name);
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

fn warn_undated_platforms(config: &Config, d: &mut Diagnostics) {
    for baseline in config.baselines.iter().filter(|b| !config.dates_releases_of(b.operating_system)) {
        d.warning(
            &baseline.origin,
            format!(
                "baseline `{}` patches {}, for which SSM gives no release dates and no [[advisories.source]] \
                 lists it: SLA clocks of its patches start when they are first seen missing, which \
                 understates their age",
                baseline.name, baseline.operating_system
            ),
            Some(format!(
                "add an [[advisories.source]] with `platforms = [\"{}\"]` (docs/configuration.md)",
                baseline.operating_system
            )),
        );
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
