//! Scenarios: the fleet, its patch catalogs, timings and faults, read from TOML and validated
//! once into typed values.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::faults::Faults;
use crate::hooks::Hooks;
use crate::platform::Platform;

const DEMO_TOML: &str = include_str!("../scenarios/demo.toml");

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    /// Simulated seconds per real second; 0 freezes the clock (advance it explicitly).
    pub time_scale: f64,
    /// Simulated start instant; `None` means the real current time, truncated to the second.
    pub start: Option<DateTime<Utc>>,
    pub region: String,
    pub account_id: String,
    pub timing: Timing,
    pub catalog: CatalogSpec,
    pub faults: Faults,
    /// AWS-RunShellScript's duration and outcome rules.
    pub hooks: Hooks,
    pub groups: Vec<Group>,
    /// The ExternalId an AssumeRole into the primary account must give, if any.
    pub external_id: Option<String>,
    /// Fleets in other (account, region) pairs; the fields above are the primary partition.
    pub partitions: Vec<Partition>,
}

/// A fleet in another account or region. It shares the scenario's clock, timing, faults and
/// catalog settings (so the same patch ids), and has its own instances and state.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub account_id: String,
    pub region: String,
    /// Seeds the fleet; two partitions with the same seed and groups have the same instance ids.
    pub seed: u64,
    pub groups: Vec<Group>,
    /// The ExternalId an AssumeRole into this account must give, if any.
    pub external_id: Option<String>,
}

impl Partition {
    /// A partition with the same single group of ten Amazon Linux 2 instances as
    /// [`Scenario::minimal`], seed 1; rescale with [`Partition::with_instances`].
    pub fn new(account_id: impl Into<String>, region: impl Into<String>) -> Partition {
        Partition {
            account_id: account_id.into(),
            region: region.into(),
            seed: 1,
            groups: Scenario::minimal().groups,
            external_id: None,
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Partition {
        self.seed = seed;
        self
    }

    /// Rescales the group counts so the partition has `n` instances, keeping the mix.
    pub fn with_instances(mut self, n: usize) -> Partition {
        rescale(&mut self.groups, n);
        self
    }

    pub fn with_groups(mut self, groups: Vec<Group>) -> Partition {
        self.groups = groups;
        self
    }

    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Partition {
        self.external_id = Some(external_id.into());
        self
    }

    pub fn instance_count(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }
}

/// One slice of the fleet: instances sharing tags, platform mix and health.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub count: usize,
    /// Platforms with relative weights.
    pub platforms: Vec<(Platform, u32)>,
    pub tags: Vec<(String, String)>,
    /// Share of instances without an SSM agent (EC2 only).
    pub unmanaged: f64,
    /// Share of managed instances whose agent starts ConnectionLost.
    pub offline: f64,
    /// Share of instances that are stopped.
    pub stopped: f64,
    /// How far behind the group is: the chance that a recent applicable patch is missing
    /// (older patches are missing less often).
    pub missing: f64,
    /// Share of managed instances that already have a compliance report at the start.
    pub scanned: f64,
}

impl Group {
    /// `count` running Amazon Linux 2 instances with an agent and no tags, half behind on recent
    /// patches and all scanned: a scenario file's defaults for a group.
    pub fn amazon_linux_2(name: impl Into<String>, count: usize) -> Group {
        Group {
            name: name.into(),
            count,
            platforms: vec![(Platform::AmazonLinux2, 1)],
            tags: Vec::new(),
            unmanaged: 0.0,
            offline: 0.0,
            stopped: 0.0,
            missing: 0.5,
            scanned: 1.0,
        }
    }

    /// Adds (or replaces) a tag; the tags stay sorted by key, as a scenario file's are, so that
    /// a group built here and the same group read from TOML make the same instances.
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Group {
        let key = key.into();
        self.tags.retain(|(k, _)| *k != key);
        self.tags.push((key, value.into()));
        self.tags.sort();
        self
    }

    /// Every instance on `platform` instead.
    pub fn with_platform(mut self, platform: Platform) -> Group {
        self.platforms = vec![(platform, 1)];
        self
    }

    pub fn with_unmanaged(mut self, share: f64) -> Group {
        self.unmanaged = share;
        self
    }

    pub fn with_missing(mut self, share: f64) -> Group {
        self.missing = share;
        self
    }

    pub fn with_scanned(mut self, share: f64) -> Group {
        self.scanned = share;
        self
    }
}

/// Durations of the simulated work, in simulated seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timing {
    /// From SendCommand to the first invocations leaving Pending.
    pub dispatch_delay_seconds: f64,
    /// How long GetCommandInvocation answers InvocationDoesNotExist after SendCommand.
    pub invocation_visibility_delay_seconds: f64,
    pub scan_seconds: f64,
    pub install_seconds: f64,
    /// Relative spread of scan and install durations (0.25 = plus or minus 25%).
    pub jitter: f64,
    pub reboot_seconds: f64,
    /// From CancelCommand to an in-progress invocation reporting Cancelled.
    pub cancel_seconds: f64,
    /// AWS-RunPatchBaseline's execution timeout.
    pub execution_timeout_seconds: f64,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            dispatch_delay_seconds: 1.0,
            invocation_visibility_delay_seconds: 2.0,
            scan_seconds: 40.0,
            install_seconds: 300.0,
            jitter: 0.25,
            reboot_seconds: 90.0,
            cancel_seconds: 2.0,
            execution_timeout_seconds: 7200.0,
        }
    }
}

impl Timing {
    /// Short work with little spread, for tests that wait for whole runs in real time: a
    /// command leaves Pending after a second and is visible at once, and scans, installs and
    /// reboots take the seconds given, give or take 10%.
    pub fn brisk(scan_seconds: f64, install_seconds: f64, reboot_seconds: f64) -> Timing {
        Timing {
            dispatch_delay_seconds: 1.0,
            invocation_visibility_delay_seconds: 0.0,
            scan_seconds,
            install_seconds,
            jitter: 0.1,
            reboot_seconds,
            ..Timing::default()
        }
    }
}

/// Size and time spread of the patch catalogs.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogSpec {
    /// Catalog entries per platform.
    pub patches: BTreeMap<Platform, usize>,
    pub history_days: u32,
    pub future_days: u32,
    pub future_share: f64,
}

impl CatalogSpec {
    pub fn patches_for(&self, platform: Platform) -> usize {
        self.patches.get(&platform).copied().unwrap_or(DEFAULT_PATCHES_PER_OS)
    }
}

const DEFAULT_PATCHES_PER_OS: usize = 120;

impl Default for CatalogSpec {
    fn default() -> CatalogSpec {
        CatalogSpec {
            patches: Platform::ALL.into_iter().map(|p| (p, DEFAULT_PATCHES_PER_OS)).collect(),
            history_days: 540,
            future_days: 30,
            future_share: 0.03,
        }
    }
}

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario {}: {source}; check the path", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("scenario {origin} is not valid TOML: {message}")]
    Syntax { origin: String, message: String },
    #[error("scenario {origin} is invalid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { origin: String, problems: Vec<String> },
}

impl ScenarioError {
    /// Every problem found, one per line, for callers that render them themselves.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ScenarioError::Invalid { problems, .. } => problems.clone(),
            other => vec![other.to_string()],
        }
    }
}

impl Scenario {
    /// The built-in demo fleet, the same as `scenarios/demo.toml`.
    pub fn demo() -> Scenario {
        match Scenario::parse(DEMO_TOML, "scenarios/demo.toml") {
            Ok(scenario) => scenario,
            // The demo file is part of the crate and covered by a test, so this is unreachable
            // in a released build; fall back to a minimal fleet rather than abort a server.
            Err(_) => Scenario::minimal(),
        }
    }

    /// A tiny single-group fleet, handy for unit tests.
    pub fn minimal() -> Scenario {
        Scenario {
            name: "minimal".into(),
            seed: 1,
            time_scale: 1.0,
            start: None,
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            timing: Timing::default(),
            catalog: CatalogSpec::default(),
            faults: Faults::default(),
            hooks: Hooks::default(),
            groups: vec![Group::amazon_linux_2("default", 10)],
            external_id: None,
            partitions: Vec::new(),
        }
    }

    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.to_path_buf(), source })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, "<text>")
    }

    fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text)
            .map_err(|e| ScenarioError::Syntax { origin: origin.to_string(), message: e.to_string() })?;
        raw.validate().map_err(|problems| ScenarioError::Invalid { origin: origin.to_string(), problems })
    }

    /// Rescales the primary partition's group counts so it has `n` instances, keeping the mix.
    pub fn with_instances(mut self, n: usize) -> Scenario {
        rescale(&mut self.groups, n);
        self
    }

    /// Adds a fleet in another (account, region).
    pub fn with_partition(mut self, partition: Partition) -> Scenario {
        self.partitions.push(partition);
        self
    }

    /// Makes AssumeRole into the primary account require this ExternalId.
    pub fn with_external_id(mut self, external_id: impl Into<String>) -> Scenario {
        self.external_id = Some(external_id.into());
        self
    }

    /// The simulated start instant in milliseconds (the real now, to the second, when unset).
    pub(crate) fn start_ms(&self) -> i64 {
        self.start.map(|s| s.timestamp_millis()).unwrap_or_else(|| chrono::Utc::now().timestamp() * 1000)
    }

    /// What is wrong with the partitions (builders do not check; the server and the TOML
    /// reader do).
    pub fn partition_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        seen.insert((self.account_id.as_str(), self.region.as_str()));
        let mut external_ids: BTreeMap<&str, &str> = BTreeMap::new();
        if let Some(id) = &self.external_id {
            external_ids.insert(&self.account_id, id);
        }
        for (index, partition) in self.partitions.iter().enumerate() {
            let label = format!("partition[{index}] ({} {})", partition.account_id, partition.region);
            if !is_account_id(&partition.account_id) {
                problems.push(format!("{label}: account_id must be 12 digits"));
            }
            if !is_region(&partition.region) {
                problems.push(format!("{label}: region is not a region name; use e.g. eu-west-1"));
            }
            if !seen.insert((partition.account_id.as_str(), partition.region.as_str())) {
                problems.push(format!(
                    "{label}: this account and region is defined twice (the scenario's own account_id and region are the first partition)"
                ));
            }
            if let Some(id) = &partition.external_id {
                if !is_external_id(id) {
                    problems.push(format!(
                        "{label}: external_id must be 2 to 1224 characters of letters, digits and +=,.@:/-"
                    ));
                }
                match external_ids.insert(&partition.account_id, id) {
                    Some(other) if other != id => problems.push(format!(
                        "{label}: external_id differs from another partition of account {}; an account has one",
                        partition.account_id
                    )),
                    _ => {}
                }
            }
            let total = partition.instance_count();
            if total > MAX_INSTANCES {
                problems.push(format!("{label}: {total} instances; use at most {MAX_INSTANCES}"));
            }
        }
        problems
    }

    /// The primary scenario narrowed to one other partition: what that partition's world is
    /// built from.
    pub(crate) fn for_partition(&self, partition: &Partition) -> Scenario {
        Scenario {
            account_id: partition.account_id.clone(),
            region: partition.region.clone(),
            seed: partition.seed,
            groups: partition.groups.clone(),
            external_id: partition.external_id.clone(),
            partitions: Vec::new(),
            ..self.clone_settings()
        }
    }

    /// Everything but the fleet and the partitions, without cloning the (possibly large)
    /// group and partition lists.
    fn clone_settings(&self) -> Scenario {
        Scenario {
            name: self.name.clone(),
            seed: self.seed,
            time_scale: self.time_scale,
            start: self.start,
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            timing: self.timing.clone(),
            catalog: self.catalog.clone(),
            faults: self.faults.clone(),
            hooks: self.hooks.clone(),
            groups: Vec::new(),
            external_id: None,
            partitions: Vec::new(),
        }
    }

    /// An empty fleet for an (account, region) the scenario does not define.
    pub(crate) fn empty_partition(&self, account_id: &str, region: &str) -> Scenario {
        Scenario { account_id: account_id.to_string(), region: region.to_string(), ..self.clone_settings() }
    }

    /// The fleet of `groups` alone, seeded, in the default account and region, with the
    /// defaults of a scenario file for everything else (real time, default timing and catalogs).
    pub fn of_groups(name: impl Into<String>, seed: u64, groups: Vec<Group>) -> Scenario {
        Scenario { name: name.into(), seed, groups, ..Scenario::minimal() }
    }

    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.seed = seed;
        self
    }

    pub fn with_time_scale(mut self, scale: f64) -> Scenario {
        self.time_scale = if scale.is_finite() && scale >= 0.0 { scale } else { 0.0 };
        self
    }

    pub fn with_start(mut self, start: DateTime<Utc>) -> Scenario {
        self.start = Some(start);
        self
    }

    pub fn with_faults(mut self, faults: Faults) -> Scenario {
        self.faults = faults;
        self
    }

    pub fn with_hooks(mut self, hooks: Hooks) -> Scenario {
        self.hooks = hooks;
        self
    }

    pub fn with_timing(mut self, timing: Timing) -> Scenario {
        self.timing = timing;
        self
    }

    /// Sets every platform's catalog size.
    pub fn with_patches_per_os(mut self, patches: usize) -> Scenario {
        for platform in Platform::ALL {
            self.catalog.patches.insert(platform, patches);
        }
        self
    }

    pub fn instance_count(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }
}

fn rescale(groups: &mut [Group], n: usize) {
    if groups.is_empty() {
        return;
    }
    let total: usize = groups.iter().map(|g| g.count).sum();
    let weights: Vec<f64> =
        if total == 0 { vec![1.0; groups.len()] } else { groups.iter().map(|g| g.count as f64).collect() };
    for (group, count) in groups.iter_mut().zip(apportion(n, &weights)) {
        group.count = count;
    }
}

fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.chars().all(|c| c.is_ascii_digit())
}

fn is_region(text: &str) -> bool {
    !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// STS's ExternalId: 2 to 1224 characters of `[\w+=,.@:\/-]`.
pub(crate) fn is_external_id(text: &str) -> bool {
    (2..=1224).contains(&text.chars().count())
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
}

/// Splits `total` by `weights` with the largest-remainder method, so the parts sum exactly.
pub(crate) fn apportion(total: usize, weights: &[f64]) -> Vec<usize> {
    let sum: f64 = weights.iter().sum();
    if weights.is_empty() || sum <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| total as f64 * w / sum).collect();
    let mut parts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut remaining = total.saturating_sub(parts.iter().sum());
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let ra = exact[a] - exact[a].floor();
        let rb = exact[b] - exact[b].floor();
        rb.partial_cmp(&ra).unwrap_or(std::cmp::Ordering::Equal).then(a.cmp(&b))
    });
    for index in order.into_iter().cycle() {
        if remaining == 0 {
            break;
        }
        parts[index] += 1;
        remaining -= 1;
    }
    parts
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    seed: Option<u64>,
    time_scale: Option<f64>,
    start: Option<toml::Value>,
    region: Option<String>,
    account_id: Option<String>,
    #[serde(default)]
    timing: Timing,
    #[serde(default)]
    catalog: RawCatalog,
    #[serde(default)]
    faults: Faults,
    #[serde(default)]
    hooks: Hooks,
    #[serde(default)]
    group: Vec<RawGroup>,
    external_id: Option<String>,
    #[serde(default)]
    partition: Vec<RawPartition>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartition {
    account_id: String,
    region: String,
    seed: Option<u64>,
    external_id: Option<String>,
    #[serde(default)]
    group: Vec<RawGroup>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    patches_per_os: Option<usize>,
    #[serde(default)]
    per_os: BTreeMap<String, usize>,
    history_days: Option<u32>,
    future_days: Option<u32>,
    future_share: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    name: String,
    count: usize,
    platforms: BTreeMap<String, u32>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    unmanaged: f64,
    #[serde(default)]
    offline: f64,
    #[serde(default)]
    stopped: f64,
    missing: Option<f64>,
    scanned: Option<f64>,
}

fn check_share(problems: &mut Vec<String>, what: &str, value: f64) {
    if !(0.0..=1.0).contains(&value) {
        problems.push(format!("{what} is {value}; use a share between 0 and 1"));
    }
}

fn check_non_negative(problems: &mut Vec<String>, what: &str, value: f64) {
    if !(value.is_finite() && value >= 0.0) {
        problems.push(format!("{what} is {value}; use a number of at least 0"));
    }
}

const MAX_PATCHES_PER_OS: usize = 20_000;
const MAX_INSTANCES: usize = 200_000;

impl RawScenario {
    fn validate(self) -> Result<Scenario, Vec<String>> {
        let mut problems = Vec::new();
        let time_scale = self.time_scale.unwrap_or(1.0);
        check_non_negative(&mut problems, "time_scale", time_scale);
        let start = match &self.start {
            None => None,
            Some(value) => {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Datetime(d) => d.to_string(),
                    other => format!("{other:?}"),
                };
                match DateTime::parse_from_rfc3339(&text) {
                    Ok(instant) => Some(instant.with_timezone(&Utc)),
                    Err(_) => {
                        problems.push(format!(
                            "start is {text}; use an RFC 3339 instant with a zone, e.g. 2026-11-28T00:00:00Z"
                        ));
                        None
                    }
                }
            }
        };
        let region = self.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            problems.push(format!("region '{region}' is not a region name; use e.g. us-east-1"));
        }
        let account_id = self.account_id.unwrap_or_else(|| "123456789012".into());
        if account_id.len() != 12 || !account_id.chars().all(|c| c.is_ascii_digit()) {
            problems.push(format!("account_id '{account_id}' must be 12 digits"));
        }

        let timing = self.timing;
        for (what, value) in [
            ("timing.dispatch_delay_seconds", timing.dispatch_delay_seconds),
            ("timing.invocation_visibility_delay_seconds", timing.invocation_visibility_delay_seconds),
            ("timing.scan_seconds", timing.scan_seconds),
            ("timing.install_seconds", timing.install_seconds),
            ("timing.reboot_seconds", timing.reboot_seconds),
            ("timing.cancel_seconds", timing.cancel_seconds),
            ("timing.execution_timeout_seconds", timing.execution_timeout_seconds),
        ] {
            check_non_negative(&mut problems, what, value);
        }
        check_share(&mut problems, "timing.jitter", timing.jitter);

        let mut catalog = CatalogSpec::default();
        if let Some(all) = self.catalog.patches_per_os {
            for platform in Platform::ALL {
                catalog.patches.insert(platform, all);
            }
        }
        for (name, count) in &self.catalog.per_os {
            match Platform::from_scenario_name(name) {
                Some(platform) => {
                    catalog.patches.insert(platform, *count);
                }
                None => problems.push(format!(
                    "catalog.per_os: unknown platform '{name}'; use one of {}",
                    platform_names()
                )),
            }
        }
        for (platform, count) in &catalog.patches {
            if *count == 0 || *count > MAX_PATCHES_PER_OS {
                problems.push(format!(
                    "catalog: {count} patches for {platform}; use between 1 and {MAX_PATCHES_PER_OS}"
                ));
            }
        }
        if let Some(days) = self.catalog.history_days {
            if days == 0 {
                problems.push("catalog.history_days is 0; use at least 1".into());
            }
            catalog.history_days = days;
        }
        if let Some(days) = self.catalog.future_days {
            catalog.future_days = days;
        }
        if let Some(share) = self.catalog.future_share {
            check_share(&mut problems, "catalog.future_share", share);
            catalog.future_share = share;
        }

        problems.extend(self.faults.problems());
        problems.extend(self.hooks.problems());

        if self.group.is_empty() {
            problems.push("no [[group]] defined; add at least one group of instances".into());
        }
        let groups = validate_groups(self.group, "", &mut problems);
        let total: usize = groups.iter().map(|g| g.count).sum();
        if total > MAX_INSTANCES {
            problems.push(format!("the fleet has {total} instances; use at most {MAX_INSTANCES}"));
        }
        if let Some(id) = &self.external_id {
            if !is_external_id(id) {
                problems
                    .push("external_id must be 2 to 1224 characters of letters, digits and +=,.@:/-".into());
            }
        }
        let seed = self.seed.unwrap_or(1);
        let partitions: Vec<Partition> = self
            .partition
            .into_iter()
            .enumerate()
            .map(|(index, raw)| Partition {
                groups: validate_groups(raw.group, &format!("partition[{index}]."), &mut problems),
                account_id: raw.account_id,
                region: raw.region,
                seed: raw.seed.unwrap_or(seed),
                external_id: raw.external_id,
            })
            .collect();
        let scenario = Scenario {
            name: self.name.unwrap_or_else(|| "scenario".into()),
            seed,
            time_scale,
            start,
            region,
            account_id,
            timing,
            catalog,
            faults: self.faults,
            hooks: self.hooks,
            groups,
            external_id: self.external_id,
            partitions,
        };
        problems.extend(scenario.partition_problems());
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(scenario)
    }
}

fn validate_groups(raw_groups: Vec<RawGroup>, prefix: &str, problems: &mut Vec<String>) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for (index, raw) in raw_groups.into_iter().enumerate() {
        let label = format!("{prefix}group[{index}] ({})", raw.name);
        if raw.name.trim().is_empty() {
            problems.push(format!("{prefix}group[{index}]: name is empty; give the group a name"));
        }
        if !names.insert(raw.name.clone()) {
            problems.push(format!("{label}: name is used twice; group names must be unique"));
        }
        let mut platforms = Vec::new();
        for (name, weight) in &raw.platforms {
            match Platform::from_scenario_name(name) {
                Some(platform) => platforms.push((platform, *weight)),
                None => problems
                    .push(format!("{label}: unknown platform '{name}'; use one of {}", platform_names())),
            }
        }
        if raw.platforms.is_empty() || raw.platforms.values().all(|w| *w == 0) {
            problems
                .push(format!("{label}: platforms is empty; give at least one platform a weight above 0"));
        }
        for (key, value) in &raw.tags {
            if key.is_empty() || key.len() > 128 || value.len() > 256 || key.starts_with("aws:") {
                problems.push(format!(
                    "{label}: tag '{key}' is not a valid EC2 tag (1..128 character key not starting with aws:, value up to 256)"
                ));
            }
        }
        let missing = raw.missing.unwrap_or(0.5);
        let scanned = raw.scanned.unwrap_or(1.0);
        check_share(problems, &format!("{label}: unmanaged"), raw.unmanaged);
        check_share(problems, &format!("{label}: offline"), raw.offline);
        check_share(problems, &format!("{label}: stopped"), raw.stopped);
        check_share(problems, &format!("{label}: missing"), missing);
        check_share(problems, &format!("{label}: scanned"), scanned);
        groups.push(Group {
            name: raw.name,
            count: raw.count,
            platforms,
            tags: raw.tags.into_iter().collect(),
            unmanaged: raw.unmanaged,
            offline: raw.offline,
            stopped: raw.stopped,
            missing,
            scanned,
        });
    }
    groups
}

fn platform_names() -> String {
    Platform::ALL.iter().map(|p| p.scenario_name()).collect::<Vec<_>>().join(", ")
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({} instances in {} groups, seed {})",
            self.name,
            self.instance_count(),
            self.groups.len(),
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Scenario::from_toml_str(text) {
            Ok(_) => vec![],
            Err(e) => e.problems(),
        }
    }

    /// The builders make what a scenario file says, tags in any order: tests that build their
    /// fleet in code get the instances the same file would give them.
    #[test]
    fn a_fleet_built_in_code_is_the_fleet_its_file_describes() {
        let web = Group::amazon_linux_2("web", 8)
            .with_tag("Role", "web")
            .with_tag("Patch Group", "web")
            .with_unmanaged(0.25)
            .with_missing(0.6)
            .with_scanned(0.0);
        let built = Scenario::of_groups("built", 5, vec![web])
            .with_time_scale(60.0)
            .with_timing(Timing::brisk(30.0, 90.0, 20.0))
            .with_patches_per_os(40);
        let text = r#"
            name = "built"
            seed = 5
            time_scale = 60.0
            timing = { dispatch_delay_seconds = 1, invocation_visibility_delay_seconds = 0, scan_seconds = 30, install_seconds = 90, reboot_seconds = 20, jitter = 0.1 }
            catalog = { patches_per_os = 40 }
            group = [{ name = "web", count = 8, platforms = { amazon-linux-2 = 1 }, tags = { Role = "web", "Patch Group" = "web" }, unmanaged = 0.25, missing = 0.6, scanned = 0.0 }]
        "#;
        assert_eq!(built, Scenario::from_toml_str(text).expect("valid"));
    }

    #[test]
    fn demo_parses_and_is_a_few_hundred_instances() {
        let demo = Scenario::parse(DEMO_TOML, "demo").expect("demo scenario is valid");
        assert!((200..=600).contains(&demo.instance_count()), "{}", demo.instance_count());
        assert_eq!(Scenario::demo(), demo);
        let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");
        for file in ["demo.toml", "scale-10k.toml", "hostile.toml"] {
            let path = Path::new(shipped).join(file);
            let scenario = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(scenario.instance_count() > 0);
        }
        let scale = Scenario::from_file(&Path::new(shipped).join("scale-10k.toml")).expect("valid");
        assert_eq!(scale.instance_count(), 10_000);
        assert!(Platform::ALL.iter().all(|p| scale.catalog.patches_for(*p) == 500));
    }

    #[test]
    fn minimal_file() {
        let scenario = Scenario::from_toml_str(
            r#"
            seed = 9
            start = 2026-01-01T00:00:00Z
            [[group]]
            name = "a"
            count = 3
            platforms = { rhel-9 = 1 }
            tags = { "Patch Group" = "a" }
            "#,
        )
        .expect("valid");
        assert_eq!(scenario.seed, 9);
        assert_eq!(scenario.start.map(|s| s.to_rfc3339()), Some("2026-01-01T00:00:00+00:00".into()));
        assert_eq!(scenario.groups[0].platforms, vec![(Platform::Rhel9, 1)]);
        assert_eq!(scenario.groups[0].tags, vec![("Patch Group".to_string(), "a".to_string())]);
        let quoted = Scenario::from_toml_str(
            "start = \"2026-01-01T00:00:00Z\"\n[[group]]\nname='a'\ncount=1\nplatforms={rhel-9=1}\n",
        )
        .expect("valid");
        assert_eq!(quoted.start, scenario.start);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems(
            r#"
            time_scale = -1
            account_id = "12"
            [catalog]
            patches_per_os = 0
            [faults]
            error_rate = 2.0
            [[group]]
            name = "a"
            count = 1
            platforms = { centos-7 = 1 }
            offline = 1.5
            "#,
        );
        let joined = found.join("\n");
        for expected in [
            "time_scale",
            "account_id",
            "catalog: 0 patches",
            "error_rate",
            "unknown platform 'centos-7'",
            "offline",
        ] {
            assert!(joined.contains(expected), "missing {expected:?} in:\n{joined}");
        }
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_rejected() {
        let unknown = problems("colour = 'red'\n[[group]]\nname='a'\ncount=1\nplatforms={rhel-9=1}\n");
        assert!(unknown.join("").contains("colour"), "{unknown:?}");
        let syntax = Scenario::from_toml_str("[[group]\n").expect_err("broken");
        assert!(matches!(syntax, ScenarioError::Syntax { .. }));
        assert!(problems("").join("").contains("no [[group]]"));
        let missing = Scenario::from_file(Path::new("/nonexistent/scenario.toml")).expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/scenario.toml"));
    }

    #[test]
    fn rescaling_keeps_the_mix_and_the_total() {
        let demo = Scenario::demo();
        for n in [0, 1, 7, 100, 10_000] {
            let scaled = demo.clone().with_instances(n);
            assert_eq!(scaled.instance_count(), n);
        }
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]), vec![4, 3, 3]);
        assert_eq!(apportion(5, &[0.0, 2.0]), vec![0, 5]);
        assert_eq!(apportion(3, &[]), Vec::<usize>::new());
    }

    #[test]
    fn builders() {
        let s = Scenario::minimal().with_seed(5).with_time_scale(60.0).with_patches_per_os(9);
        assert_eq!((s.seed, s.time_scale), (5, 60.0));
        assert_eq!(s.catalog.patches_for(Platform::Ubuntu2204), 9);
        assert_eq!(Scenario::minimal().with_time_scale(f64::INFINITY).time_scale, 0.0);
    }
}
