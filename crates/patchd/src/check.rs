//! `patchd check`: validate and summarise; with `--resolve`, also ask the endpoint which
//! instances of the configured groups SSM would not judge by a patchd baseline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::anyhow;
use chrono::Utc;
use patchd_aws::{AwsClients, Target};
use patchd_config::{Config, Diagnostic, Group, Severity};
use patchd_daemon::baselines::{placement, Placement};
use patchd_daemon::scopes;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::failure::{print_diagnostics, Failure};
use crate::setup::{load_config, require_named_database};

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<(), Failure> {
    let now = args.from.unwrap_or_else(Utc::now);
    let loaded = load_config(global, now)?;
    require_named_database(global, &loaded.config)?;
    let mut warnings = loaded.warnings;
    let mut resolution = None;
    if args.resolve {
        match resolve(&loaded.config) {
            Ok(found) => {
                warnings.extend(found.diagnostics.iter().cloned());
                resolution = Some(found);
            }
            Err(failure) => {
                // The configuration's own warnings are already known; the failed resolution
                // should not hide them.
                print_diagnostics(&warnings);
                return Err(failure);
            }
        }
    }
    if args.deny_warnings && !warnings.is_empty() {
        return Err(Failure::InvalidConfig(warnings));
    }
    print_diagnostics(&warnings);
    print!("{}", summary(&loaded.config, warnings.len(), now, resolution.as_ref()));
    Ok(())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn summary(
    config: &Config,
    warnings: usize,
    now: chrono::DateTime<Utc>,
    resolution: Option<&Resolution>,
) -> String {
    let mut out = String::new();
    let files: Vec<String> = config.sources.iter().map(|p| p.display().to_string()).collect();
    let _ = writeln!(out, "configuration OK: {}", files.join(", "));
    let _ = writeln!(
        out,
        "  {}, {}, {}, {}, {}",
        plural(config.baselines.len(), "baseline"),
        plural(config.groups.len(), "group"),
        plural(config.windows.len(), "window"),
        plural(config.exceptions.len(), "exception"),
        plural(warnings, "warning"),
    );
    let _ = writeln!(out, "  database  {}", config.daemon.database_url);
    let endpoint = config.aws.endpoint_url.as_deref().unwrap_or("AWS (the SDK's default endpoint)");
    let region = config.aws.region.as_deref().unwrap_or("from the environment");
    let _ = writeln!(out, "  endpoint  {endpoint}, region {region}");
    if let Some(resolution) = resolution {
        let judged = match resolution.off_baseline {
            0 => "all on a registered patchd baseline".to_string(),
            n => format!("{n} not on a registered patchd baseline (see the warnings)"),
        };
        let _ = writeln!(
            out,
            "  resolved  {} in {}: {judged}",
            plural(resolution.instances, "instance"),
            plural(config.groups.len(), "group"),
        );
    }
    if !config.windows.is_empty() {
        let _ = writeln!(out, "next openings:");
        let width = config.windows.iter().map(|w| w.name.len()).max().unwrap_or(0);
        for window in &config.windows {
            let next = match window.schedule.next_after(now) {
                _ if !window.enabled => "disabled".to_string(),
                Some(start) => {
                    let tz = window.schedule.timezone();
                    format!(
                        "{} {}  ({})",
                        start.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                        tz.name(),
                        start.format("%Y-%m-%dT%H:%M:%SZ")
                    )
                }
                None => "never again".to_string(),
            };
            let _ = writeln!(out, "  {:width$}  {next}", window.name);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// --resolve

/// What the endpoint said about the configured groups.
struct Resolution {
    /// Distinct running instances over all groups.
    instances: usize,
    /// Distinct instances SSM would not judge by their patchd baseline.
    off_baseline: usize,
    diagnostics: Vec<Diagnostic>,
}

/// Resolves every configured group and judges each instance's patch group against the
/// `[[baseline]]` sections and SSM's registrations. Any call that fails fails the check: a
/// partial answer would read as "these groups are fine".
fn resolve(config: &Config) -> Result<Resolution, Failure> {
    crate::setup::runtime()?.block_on(async {
        let home = AwsClients::new(&config.aws, None).await;
        let endpoint = match (home.endpoint_url(), home.region()) {
            (Some(url), Some(region)) => format!("{url} (region {region})"),
            (Some(url), None) => url.to_string(),
            (None, Some(region)) => format!("AWS in {region}"),
            (None, None) => "AWS".to_string(),
        };
        let cannot = |e: &dyn std::fmt::Display| {
            Failure::Other(anyhow!(
                "check --resolve cannot ask {endpoint}: {e}; or run `patchd check` without --resolve"
            ))
        };
        let scoped = scopes::clients(config, &home, &patchd_daemon::leader::hostname())
            .await
            .map_err(|e| cannot(&e))?;
        let several = scoped.len() > 1;
        let mut seen = BTreeSet::new();
        let mut off = BTreeSet::new();
        let mut diagnostics = Vec::new();
        // Each account and region has its own instances and its own patch-group registrations.
        for (scope, aws) in &scoped {
            let in_scope = |e: patchd_aws::AwsError| cannot(&format!("{scope}: {e}"));
            let mappings = aws.patch_group_mappings().await.map_err(in_scope)?;
            for group in config.groups.iter().filter(|g| scope.admitted_by(&g.scope)) {
                let targets = aws.resolve_group(group).await.map_err(in_scope)?;
                let placements: Vec<(&Target, Placement)> =
                    targets.iter().map(|t| (t, placement(t, &config.baselines, &mappings))).collect();
                for (target, placement) in &placements {
                    let key = (scope.account.clone(), scope.region.clone(), target.instance_id.clone());
                    seen.insert(key.clone());
                    if *placement != Placement::OnBaseline {
                        off.insert(key);
                    }
                }
                let mut found = group_diagnostics(group, &placements);
                found.extend(undated_systems(config, group, &targets));
                diagnostics.extend(found.into_iter().map(|mut d| {
                    if several {
                        d.message = format!("{scope}: {}", d.message);
                    }
                    d
                }));
            }
        }
        Ok(Resolution { instances: seen.len(), off_baseline: off.len(), diagnostics })
    })
}

/// The operating systems a group's instances run that nothing dates: their findings' SLA
/// clocks would be estimates (first sighting), which understate age.
fn undated_systems(config: &Config, group: &Group, targets: &[Target]) -> Vec<Diagnostic> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for os in targets.iter().filter_map(Target::operating_system).filter(|os| !config.dates_releases_of(*os))
    {
        *counts.entry(os.as_str()).or_default() += 1;
    }
    counts
        .into_iter()
        .map(|(os, n)| Diagnostic {
            severity: Severity::Warning,
            origin: group.origin.clone(),
            message: format!(
                "group `{}`: {n} instance(s) run {os}, whose patches neither SSM nor any [[advisories.source]] \
                 dates: their SLA clocks start when a scan first sees a patch missing, which understates its age",
                group.name
            ),
            hint: Some(format!("add an [[advisories.source]] with `platforms = [\"{os}\"]` (docs/advisories.md)")),
        })
        .collect()
}

/// How many instance ids a warning names before it only counts the rest.
const IDS_SHOWN: usize = 3;

fn some_ids(ids: &[&str]) -> String {
    let shown = ids[..ids.len().min(IDS_SHOWN)].join(", ");
    match ids.len().saturating_sub(IDS_SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// At most two warnings for a group: instances the configuration leaves to an AWS default
/// baseline, and instances whose patchd baseline SSM does not have registered yet. They are
/// separate because their fixes are: edit the configuration or the tags, or run `patchd apply`.
fn group_diagnostics(group: &Group, placements: &[(&Target, Placement)]) -> Vec<Diagnostic> {
    let total = placements.len();
    let mut by_placement: BTreeMap<&Placement, Vec<&str>> = BTreeMap::new();
    for (target, placement) in placements {
        by_placement.entry(placement).or_default().push(&target.instance_id);
    }
    let count = |gap: bool| {
        by_placement
            .iter()
            .filter(|(p, _)| **p != &Placement::OnBaseline && p.is_configuration_gap() == gap)
            .map(|(_, ids)| ids.len())
            .sum::<usize>()
    };
    let warning = |message: String, hint: String| Diagnostic {
        severity: Severity::Warning,
        origin: group.origin.clone(),
        message,
        hint: Some(hint),
    };
    let delay =
        "the AWS default baselines approve most patches only 7 days after release, which may break the SLA";
    let mut diagnostics = Vec::new();

    let gaps = count(true);
    if gaps > 0 {
        let mut parts = Vec::new();
        let (mut list, mut tag) = (false, false);
        for (placement, ids) in &by_placement {
            let n = plural(ids.len(), "instance");
            let ids = some_ids(ids);
            match placement {
                Placement::Unlisted { patch_group } => {
                    list = true;
                    parts.push(format!(
                        "{n} with patch group `{patch_group}`, which no [[baseline]] lists ({ids})"
                    ));
                }
                Placement::OtherOs { patch_group, operating_system } => {
                    list = true;
                    parts.push(format!(
                        "{n} of {operating_system} with patch group `{patch_group}`, which no {operating_system} [[baseline]] lists ({ids})"
                    ));
                }
                Placement::Untagged => {
                    tag = true;
                    parts.push(format!("{n} with no patch-group tag ({ids})"));
                }
                Placement::OnBaseline | Placement::Unregistered { .. } => {}
            }
        }
        let mut fixes = Vec::new();
        if list {
            fixes.push(
                "add the patch group to the `patch_groups` of a [[baseline]] for their operating system",
            );
        }
        if tag {
            fixes.push("tag the instances `Patch Group` or `PatchGroup` (exact case) with a patch group a [[baseline]] lists");
        }
        diagnostics.push(warning(
            format!(
                "group `{}`: {gaps} of {} would be patched against an AWS default baseline, not a patchd one: {}",
                group.name,
                plural(total, "instance"),
                parts.join("; ")
            ),
            format!("{delay}; {}", fixes.join(", or ")),
        ));
    }

    let unregistered = count(false);
    if unregistered > 0 {
        let parts: Vec<String> = by_placement
            .iter()
            .filter_map(|(placement, ids)| {
                let Placement::Unregistered { patch_group, baseline, operating_system, registered } = placement
                else {
                    return None;
                };
                let n = plural(ids.len(), "instance");
                let ids = some_ids(ids);
                Some(match registered {
                    Some(other) => format!(
                        "{n} with patch group `{patch_group}`, registered in SSM to `{other}` instead of `{baseline}` for {operating_system} ({ids})"
                    ),
                    None => format!(
                        "{n} with patch group `{patch_group}`, not registered to `{baseline}` in SSM yet, nor to any other {operating_system} baseline ({ids})"
                    ),
                })
            })
            .collect();
        diagnostics.push(warning(
            format!(
                "group `{}`: {unregistered} of {} {} not on {} patchd baseline in SSM yet: {}",
                group.name,
                plural(total, "instance"),
                if unregistered == 1 { "is" } else { "are" },
                if unregistered == 1 { "its" } else { "their" },
                parts.join("; ")
            ),
            "until then SSM judges them by the baseline it has registered for the patch group, or by an AWS default \
             baseline, whose 7-day approval delay may break the SLA; run `patchd apply`"
                .to_string(),
        ));
    }
    diagnostics
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use patchd_aws::{
        Agent, BaselineIdentity, Coverage, OperatingSystem, PatchGroupMapping, PingStatus, Reported,
    };
    use patchd_config::{Baseline, Origin, RejectedPatchesAction, TagSelector};

    use super::*;

    fn origin() -> Origin {
        Origin { file: Arc::new(PathBuf::from("patchd.toml")), line: 7, col: 1 }
    }

    fn baseline(name: &str, os: &str, patch_groups: &[&str]) -> Baseline {
        Baseline {
            name: name.into(),
            description: None,
            operating_system: OperatingSystem::parse(os).expect("an SSM operating system"),
            global_filters: Vec::new(),
            rules: Vec::new(),
            approved_patches: Vec::new(),
            approved_patches_compliance_level: "UNSPECIFIED",
            approved_patches_enable_non_security: false,
            rejected_patches: Vec::new(),
            rejected_patches_action: RejectedPatchesAction::AllowAsDependency,
            patch_groups: patch_groups.iter().map(|s| s.to_string()).collect(),
            origin: origin(),
        }
    }

    fn mapping(patch_group: &str, name: &str, os: &str) -> PatchGroupMapping {
        PatchGroupMapping {
            patch_group: patch_group.into(),
            baseline: BaselineIdentity {
                id: format!("pb-{name}"),
                name: name.into(),
                operating_system: Reported::parse(os),
            },
        }
    }

    fn agent(platform_type: &str, name: &str, version: &str) -> Agent {
        Agent {
            ping: Reported::Known(PingStatus::Online),
            last_ping: None,
            platform_type: Some(platform_type.into()),
            platform_name: Some(name.into()),
            platform_version: Some(version.into()),
            agent_version: None,
        }
    }

    fn target(id: &str, tags: &[(&str, &str)], details: &str, coverage: Coverage) -> Target {
        Target {
            instance_id: id.into(),
            name: None,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            platform_details: Some(details.into()),
            coverage,
        }
    }

    fn al2(id: &str, tags: &[(&str, &str)]) -> Target {
        target(id, tags, "Linux/UNIX", Coverage::Managed { agent: agent("Linux", "Amazon Linux", "2") })
    }

    #[test]
    fn operating_systems_come_from_the_agent_then_from_ec2() {
        let cases: &[(Target, Option<&str>)] = &[
            (al2("i-1", &[]), Some("AMAZON_LINUX_2")),
            (
                target(
                    "i-2",
                    &[],
                    "Linux/UNIX",
                    Coverage::ConnectionLost { agent: agent("Linux", "Amazon Linux", "2023") },
                ),
                Some("AMAZON_LINUX_2023"),
            ),
            (
                target(
                    "i-3",
                    &[],
                    "Linux/UNIX",
                    Coverage::Managed { agent: agent("Linux", "Amazon Linux AMI", "2018.03") },
                ),
                Some("AMAZON_LINUX"),
            ),
            (
                target(
                    "i-4",
                    &[],
                    "Linux/UNIX",
                    Coverage::Managed { agent: agent("Linux", "Ubuntu", "22.04") },
                ),
                Some("UBUNTU"),
            ),
            (
                target(
                    "i-5",
                    &[],
                    "Red Hat Enterprise Linux",
                    Coverage::Managed { agent: agent("Linux", "Red Hat Enterprise Linux Server", "9.4") },
                ),
                Some("REDHAT_ENTERPRISE_LINUX"),
            ),
            (
                target(
                    "i-6",
                    &[],
                    "Windows",
                    Coverage::Managed {
                        agent: agent("Windows", "Microsoft Windows Server 2022 Datacenter", "10.0.20348"),
                    },
                ),
                Some("WINDOWS"),
            ),
            // No agent: EC2's billing product is all there is.
            (target("i-7", &[], "Windows with SQL Server Standard", Coverage::Unmanaged), Some("WINDOWS")),
            (target("i-8", &[], "Red Hat BYOL Linux", Coverage::Unmanaged), Some("REDHAT_ENTERPRISE_LINUX")),
            (target("i-9", &[], "Linux/UNIX", Coverage::Unmanaged), None),
            // An agent name patchd does not know falls back to EC2, which may not know either.
            (
                target(
                    "i-10",
                    &[],
                    "Linux/UNIX",
                    Coverage::Managed { agent: agent("Linux", "Gentoo", "2.15") },
                ),
                None,
            ),
            (
                target(
                    "i-11",
                    &[],
                    "Linux/UNIX",
                    Coverage::Managed { agent: agent("Linux", "Amazon Linux", "3000") },
                ),
                None,
            ),
        ];
        for (target, expected) in cases {
            assert_eq!(
                target.operating_system().map(OperatingSystem::as_str),
                *expected,
                "{}",
                target.instance_id
            );
        }
    }

    #[test]
    fn placements() {
        let baselines =
            [baseline("patchd-al2", "AMAZON_LINUX_2", &["web"]), baseline("patchd-win", "WINDOWS", &["win"])];
        let registered = vec![mapping("web", "patchd-al2", "AMAZON_LINUX_2")];
        let unknown_os =
            |id: &str, tags: &[(&str, &str)]| target(id, tags, "Linux/UNIX", Coverage::Unmanaged);
        let ubuntu = target(
            "i-ub",
            &[("Patch Group", "web")],
            "Linux/UNIX",
            Coverage::Managed { agent: agent("Linux", "Ubuntu", "22.04") },
        );
        let on = Placement::OnBaseline;
        let cases: Vec<(&str, Target, Vec<PatchGroupMapping>, Placement)> = vec![
            ("listed and registered", al2("i-1", &[("Patch Group", "web")]), registered.clone(), on.clone()),
            (
                "the other key counts too",
                al2("i-2", &[("PatchGroup", "web")]),
                registered.clone(),
                on.clone(),
            ),
            (
                "keys are case-sensitive",
                al2("i-3", &[("patch group", "web"), ("Patchgroup", "web")]),
                registered.clone(),
                Placement::Untagged,
            ),
            (
                "an empty value is no patch group",
                al2("i-4", &[("Patch Group", "")]),
                registered.clone(),
                Placement::Untagged,
            ),
            (
                "`Patch Group` wins over `PatchGroup`",
                al2("i-5", &[("Patch Group", "legacy"), ("PatchGroup", "web")]),
                registered.clone(),
                Placement::Unlisted { patch_group: "legacy".into() },
            ),
            (
                "listed only for another OS",
                ubuntu.clone(),
                registered.clone(),
                Placement::OtherOs { patch_group: "web".into(), operating_system: OperatingSystem::Ubuntu },
            ),
            (
                "unknown OS: any baseline listing the patch group counts",
                unknown_os("i-6", &[("Patch Group", "web")]),
                registered.clone(),
                on.clone(),
            ),
            (
                "listed but not registered in SSM",
                al2("i-7", &[("Patch Group", "web")]),
                Vec::new(),
                Placement::Unregistered {
                    patch_group: "web".into(),
                    baseline: "patchd-al2".into(),
                    operating_system: "AMAZON_LINUX_2".into(),
                    registered: None,
                },
            ),
            (
                "registered to someone else's baseline",
                al2("i-8", &[("Patch Group", "web")]),
                vec![mapping("web", "team-al2", "AMAZON_LINUX_2"), mapping("web", "patchd-al2", "UBUNTU")],
                Placement::Unregistered {
                    patch_group: "web".into(),
                    baseline: "patchd-al2".into(),
                    operating_system: "AMAZON_LINUX_2".into(),
                    registered: Some("team-al2".into()),
                },
            ),
            (
                "a registration of another patch group does not count",
                al2("i-9", &[("Patch Group", "web")]),
                vec![mapping("web2", "patchd-al2", "AMAZON_LINUX_2")],
                Placement::Unregistered {
                    patch_group: "web".into(),
                    baseline: "patchd-al2".into(),
                    operating_system: "AMAZON_LINUX_2".into(),
                    registered: None,
                },
            ),
        ];
        for (why, target, mappings, expected) in cases {
            assert_eq!(placement(&target, &baselines, &mappings), expected, "{why}");
        }
    }

    #[test]
    fn a_group_gets_one_warning_per_kind_of_fix() {
        let group = Group {
            name: "web".into(),
            description: None,
            tags: TagSelector(BTreeMap::from([("Role".to_string(), vec!["web".to_string()])])),
            instance_ids: Vec::new(),
            scope: Default::default(),
            origin: origin(),
        };
        let targets: Vec<Target> = (1..=9).map(|i| al2(&format!("i-{i}"), &[])).collect();
        let unregistered = Placement::Unregistered {
            patch_group: "web".into(),
            baseline: "patchd-al2".into(),
            operating_system: "AMAZON_LINUX_2".into(),
            registered: None,
        };
        let legacy = Placement::Unlisted { patch_group: "legacy".into() };
        let kinds = [
            Placement::OnBaseline,
            legacy.clone(),
            legacy.clone(),
            legacy.clone(),
            legacy,
            Placement::Untagged,
            Placement::Untagged,
            unregistered,
            Placement::OnBaseline,
        ];
        let placements: Vec<(&Target, Placement)> = targets.iter().zip(kinds).collect();
        let text: Vec<String> =
            group_diagnostics(&group, &placements).iter().map(|d| d.to_string()).collect();
        assert_eq!(
            text,
            [
                "patchd.toml:7:1: warning: group `web`: 6 of 9 instances would be patched against an AWS default \
                 baseline, not a patchd one: 4 instances with patch group `legacy`, which no [[baseline]] lists \
                 (i-2, i-3, i-4 and 1 more); 2 instances with no patch-group tag (i-6, i-7)\n  \
                 = hint: the AWS default baselines approve most patches only 7 days after release, which may \
                 break the SLA; add the patch group to the `patch_groups` of a [[baseline]] for their operating \
                 system, or tag the instances `Patch Group` or `PatchGroup` (exact case) with a patch group a \
                 [[baseline]] lists",
                "patchd.toml:7:1: warning: group `web`: 1 of 9 instances is not on its patchd baseline in SSM \
                 yet: 1 instance with patch group `web`, not registered to `patchd-al2` in SSM yet, nor to any \
                 other AMAZON_LINUX_2 baseline (i-8)\n  \
                 = hint: until then SSM judges them by the baseline it has registered for the patch group, or by \
                 an AWS default baseline, whose 7-day approval delay may break the SLA; run `patchd apply`",
            ]
        );
        let covered: Vec<(&Target, Placement)> = targets.iter().map(|t| (t, Placement::OnBaseline)).collect();
        assert!(group_diagnostics(&group, &covered).is_empty());
    }
}
