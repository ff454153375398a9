//! The instances: identity, tags, agent, and the compact per-patch state behind compliance.
//!
//! Each instance keeps one byte per catalog entry of its platform (plus the install time as a
//! u32), so 10,000 instances with 500 patches cost about 25 MB. The byte holds both the truth
//! on the machine (applicable, installed, pending reboot, last install failed) and the state
//! SSM reported at the last Scan/Install, which is all SSM keeps.

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::baseline::{Approval, Baseline};
use crate::catalog::Patch;
use crate::clock::Millis;
use crate::platform::Platform;
use crate::random::chance;
// Re-exported so `fleet_sim::fleet::derive_seed` keeps working for callers outside the crate.
pub use crate::random::derive_seed;
use crate::scenario::Scenario;

const APPLICABLE: u8 = 0x80;
const INSTALLED: u8 = 0x40;
const PENDING_REBOOT: u8 = 0x20;
const INSTALL_FAILED: u8 = 0x10;
const REPORT_MASK: u8 = 0x0f;

const DAY_MS: i64 = 86_400_000;
/// Install times are stored as seconds since this instant (2001-09-09), which fits a u32
/// until 2137.
const INSTALL_EPOCH_MS: Millis = 1_000_000_000_000;

/// A patch's compliance state as SSM reports it (`PatchComplianceDataState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PatchState {
    Installed = 1,
    InstalledOther,
    InstalledPendingReboot,
    InstalledRejected,
    Missing,
    NotApplicable,
    Failed,
    AvailableSecurityUpdate,
}

impl PatchState {
    const ALL: [PatchState; 8] = [
        PatchState::Installed,
        PatchState::InstalledOther,
        PatchState::InstalledPendingReboot,
        PatchState::InstalledRejected,
        PatchState::Missing,
        PatchState::NotApplicable,
        PatchState::Failed,
        PatchState::AvailableSecurityUpdate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PatchState::Installed => "INSTALLED",
            PatchState::InstalledOther => "INSTALLED_OTHER",
            PatchState::InstalledPendingReboot => "INSTALLED_PENDING_REBOOT",
            PatchState::InstalledRejected => "INSTALLED_REJECTED",
            PatchState::Missing => "MISSING",
            PatchState::NotApplicable => "NOT_APPLICABLE",
            PatchState::Failed => "FAILED",
            PatchState::AvailableSecurityUpdate => "AVAILABLE_SECURITY_UPDATE",
        }
    }

    /// Accepts the enum spelling and the CamelCase one AWS documents for the State filter.
    pub fn parse(text: &str) -> Option<PatchState> {
        let folded: String = text.chars().filter(|c| *c != '_').collect::<String>().to_ascii_uppercase();
        PatchState::ALL.into_iter().find(|state| state.as_str().replace('_', "") == folded)
    }

    fn from_bits(bits: u8) -> Option<PatchState> {
        let code = bits & REPORT_MASK;
        PatchState::ALL.into_iter().find(|state| *state as u8 == code)
    }

    pub fn is_installed(self) -> bool {
        matches!(
            self,
            PatchState::Installed
                | PatchState::InstalledOther
                | PatchState::InstalledPendingReboot
                | PatchState::InstalledRejected
        )
    }
}

/// The SSM agent's connection, as `PingStatus` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentState {
    Online,
    ConnectionLost,
}

impl AgentState {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Online => "Online",
            AgentState::ConnectionLost => "ConnectionLost",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    Scan,
    Install,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Scan => "Scan",
            Operation::Install => "Install",
        }
    }
}

/// The counters of an InstancePatchState.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub installed: u32,
    pub installed_other: u32,
    pub installed_pending_reboot: u32,
    pub installed_rejected: u32,
    pub missing: u32,
    pub failed: u32,
    pub not_applicable: u32,
    pub available_security_update: u32,
    pub critical_non_compliant: u32,
    pub security_non_compliant: u32,
    pub other_non_compliant: u32,
}

impl Counts {
    /// The value of a count by its InstancePatchState member name.
    pub fn by_name(&self, name: &str) -> Option<u32> {
        Some(match name {
            "InstalledCount" => self.installed,
            "InstalledOtherCount" => self.installed_other,
            "InstalledPendingRebootCount" => self.installed_pending_reboot,
            "InstalledRejectedCount" => self.installed_rejected,
            "MissingCount" => self.missing,
            "FailedCount" => self.failed,
            "NotApplicableCount" => self.not_applicable,
            "UnreportedNotApplicableCount" => 0,
            "AvailableSecurityUpdateCount" => self.available_security_update,
            "CriticalNonCompliantCount" => self.critical_non_compliant,
            "SecurityNonCompliantCount" => self.security_non_compliant,
            "OtherNonCompliantCount" => self.other_non_compliant,
            _ => return None,
        })
    }
}

/// What SSM holds for an instance after its last Scan or Install (DescribeInstancePatchStates).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchReport {
    pub operation: Operation,
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub baseline_id: String,
    pub snapshot_id: Option<String>,
    pub patch_group: String,
    pub reboot_option: Option<&'static str>,
    pub last_no_reboot_install_ms: Option<Millis>,
    /// The install override list the Install used (its URL).
    pub install_override_list: Option<String>,
    pub counts: Counts,
}

/// One EC2 instance.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub platform: Platform,
    pub tags: Vec<(String, String)>,
    pub running: bool,
    /// `None` when no SSM agent is registered (the instance is EC2-only).
    pub agent: Option<AgentState>,
    pub agent_since_ms: Millis,
    /// Bumped on every agent change, so a scheduled "back online" for an older outage is
    /// recognised as stale.
    pub(crate) agent_epoch: u64,
    /// The agent will not come back after the next reboot (consumed by that reboot).
    pub lost_after_reboot: bool,
    pub instance_type: &'static str,
    pub private_ip: [u8; 4],
    pub availability_zone: char,
    pub launch_ms: Millis,
    pub registered_ms: Millis,
    pub report: Option<PatchReport>,
    /// Index of the scenario group the instance came from.
    pub group: u16,
    patches: Vec<u8>,
    installed_at: Vec<u32>,
}

/// One row of an instance's compliance list.
#[derive(Debug, Clone, Copy)]
pub struct ReportedPatch {
    pub catalog_index: usize,
    pub state: PatchState,
    pub installed_ms: Option<Millis>,
}

/// How an Install runs: approvals as of `approval_ms` (the snapshot), installed at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstallPlan<'a> {
    pub approval_ms: Millis,
    pub now_ms: Millis,
    pub reboot_if_needed: bool,
    pub failure_rate: f64,
    /// An install override list's choice (sorted catalog indices): these released patches
    /// and no others, whatever the baseline approves.
    pub listed: Option<&'a [usize]>,
}

/// What an Install did on an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallResult {
    pub installed: u32,
    pub failed: u32,
    pub rebooted: bool,
}

impl Instance {
    /// Managed by SSM right now: has an agent and is running (stopped nodes are not listed).
    pub fn is_managed(&self) -> bool {
        self.running && self.agent.is_some()
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn name(&self) -> &str {
        self.tag("Name").unwrap_or("")
    }

    /// The patch group from the `Patch Group` tag, else the `PatchGroup` tag.
    pub fn patch_group(&self) -> Option<&str> {
        self.tag("Patch Group").or_else(|| self.tag("PatchGroup"))
    }

    pub fn private_ip(&self) -> String {
        let [a, b, c, d] = self.private_ip;
        format!("{a}.{b}.{c}.{d}")
    }

    pub fn private_dns_name(&self, region: &str) -> String {
        let [a, b, c, d] = self.private_ip;
        if region == "us-east-1" {
            format!("ip-{a}-{b}-{c}-{d}.ec2.internal")
        } else {
            format!("ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
        }
    }

    pub fn computer_name(&self, region: &str) -> String {
        if self.platform.is_windows() {
            format!("EC2AMAZ-{}", &self.id[self.id.len().saturating_sub(7)..].to_ascii_uppercase())
        } else {
            self.private_dns_name(region)
        }
    }

    /// Number of catalog entries tracked (equals the platform catalog's length).
    pub fn tracked_patches(&self) -> usize {
        self.patches.len()
    }

    /// Extends the per-patch state when the catalog grows.
    pub(crate) fn track_new_patch(&mut self, applicable: bool) {
        self.patches.push(if applicable { APPLICABLE } else { 0 });
        self.installed_at.push(0);
    }

    /// The reported compliance row of a catalog entry, if SSM lists it.
    pub fn reported(&self, catalog_index: usize) -> Option<ReportedPatch> {
        let bits = *self.patches.get(catalog_index)?;
        let state = PatchState::from_bits(bits)?;
        let installed_ms = if state.is_installed() {
            let seconds = self.installed_at.get(catalog_index).copied().unwrap_or(0);
            Some(INSTALL_EPOCH_MS + i64::from(seconds) * 1000)
        } else {
            None
        };
        Some(ReportedPatch { catalog_index, state, installed_ms })
    }

    /// Whether the patch is really installed on the machine (whatever SSM last reported).
    pub fn is_installed(&self, catalog_index: usize) -> bool {
        self.patches.get(catalog_index).is_some_and(|b| b & INSTALLED != 0)
    }

    pub fn is_applicable(&self, catalog_index: usize) -> bool {
        self.patches.get(catalog_index).is_some_and(|b| b & APPLICABLE != 0)
    }

    pub fn has_pending_reboot(&self) -> bool {
        self.patches.iter().any(|b| b & PENDING_REBOOT != 0)
    }

    /// Re-evaluates every released patch against `approvals` at `at_ms` and writes the
    /// reported states; returns the InstancePatchState counters.
    pub fn evaluate(
        &mut self,
        catalog: &[Patch],
        approvals: &[Approval],
        baseline: &Baseline,
        at_ms: Millis,
        operation: Operation,
    ) -> Counts {
        let mut counts = Counts::default();
        let blocks_rejected = baseline.rejected_action_blocks();
        let available_security = baseline.available_security_updates();
        for (index, bits) in self.patches.iter_mut().enumerate() {
            let (Some(patch), Some(approval)) = (catalog.get(index), approvals.get(index)) else {
                *bits &= !REPORT_MASK;
                continue;
            };
            let applicable = *bits & APPLICABLE != 0;
            let installed = *bits & INSTALLED != 0;
            let pending = *bits & PENDING_REBOOT != 0;
            let failed = *bits & INSTALL_FAILED != 0;
            let mut critical = false;
            let state = if !patch.is_released(at_ms) {
                None
            } else {
                match *approval {
                    Approval::Rejected if installed => Some(if blocks_rejected {
                        PatchState::InstalledRejected
                    } else {
                        PatchState::InstalledOther
                    }),
                    // Only an install override list installs what the baseline does not approve.
                    Approval::Rejected if failed && operation == Operation::Install => {
                        Some(PatchState::Failed)
                    }
                    Approval::Rejected => None,
                    Approval::Approved { from_ms, critical: level_critical } if from_ms <= at_ms => {
                        critical = level_critical;
                        Some(if !applicable {
                            PatchState::NotApplicable
                        } else if installed && pending {
                            PatchState::InstalledPendingReboot
                        } else if installed {
                            PatchState::Installed
                        } else if failed && operation == Operation::Install {
                            PatchState::Failed
                        } else {
                            PatchState::Missing
                        })
                    }
                    _ if installed && pending => Some(PatchState::InstalledPendingReboot),
                    _ if installed => Some(PatchState::InstalledOther),
                    _ if failed && operation == Operation::Install => Some(PatchState::Failed),
                    _ if applicable && patch.is_security() && available_security.is_some() => {
                        Some(PatchState::AvailableSecurityUpdate)
                    }
                    _ => None,
                }
            };
            *bits = (*bits & !REPORT_MASK) | state.map_or(0, |s| s as u8);
            let Some(state) = state else { continue };
            let non_compliant = match state {
                PatchState::Installed => {
                    counts.installed += 1;
                    false
                }
                PatchState::InstalledOther => {
                    counts.installed_other += 1;
                    false
                }
                PatchState::NotApplicable => {
                    counts.not_applicable += 1;
                    false
                }
                PatchState::InstalledPendingReboot => {
                    counts.installed_pending_reboot += 1;
                    true
                }
                PatchState::InstalledRejected => {
                    counts.installed_rejected += 1;
                    true
                }
                PatchState::Missing => {
                    counts.missing += 1;
                    true
                }
                PatchState::Failed => {
                    counts.failed += 1;
                    true
                }
                PatchState::AvailableSecurityUpdate => {
                    counts.available_security_update += 1;
                    available_security == Some(true)
                }
            };
            if non_compliant {
                if critical {
                    counts.critical_non_compliant += 1;
                } else if patch.is_security() {
                    counts.security_non_compliant += 1;
                } else {
                    counts.other_non_compliant += 1;
                }
            }
        }
        counts
    }

    /// Installs what the baseline approves at `at_ms` and is missing, failing each patch with
    /// `failure_rate`; reboots when allowed and a patch needs it.
    pub fn install(
        &mut self,
        catalog: &[Patch],
        approvals: &[Approval],
        plan: InstallPlan<'_>,
        rng: &mut ChaCha8Rng,
    ) -> InstallResult {
        let InstallPlan { approval_ms: at_ms, now_ms, reboot_if_needed, failure_rate, listed } = plan;
        let mut result = InstallResult::default();
        let stamp = install_stamp(now_ms);
        for (index, bits) in self.patches.iter_mut().enumerate() {
            *bits &= !INSTALL_FAILED;
            let (Some(patch), Some(approval)) = (catalog.get(index), approvals.get(index)) else { continue };
            let selected = match listed {
                Some(listed) => patch.is_released(now_ms) && listed.binary_search(&index).is_ok(),
                None => patch.is_released(at_ms) && approval.approved_at(at_ms),
            };
            if !selected || *bits & APPLICABLE == 0 || *bits & INSTALLED != 0 {
                continue;
            }
            if chance(rng, failure_rate) {
                *bits |= INSTALL_FAILED;
                result.failed += 1;
                continue;
            }
            *bits |= INSTALLED;
            if patch.needs_reboot {
                *bits |= PENDING_REBOOT;
            }
            if let Some(slot) = self.installed_at.get_mut(index) {
                *slot = stamp;
            }
            result.installed += 1;
        }
        if reboot_if_needed && self.has_pending_reboot() {
            self.reboot();
            result.rebooted = true;
        }
        result
    }

    /// Test hook: the patch is applicable and not installed on the machine.
    #[cfg(test)]
    pub(crate) fn forget_install(&mut self, catalog_index: usize) {
        if let Some(bits) = self.patches.get_mut(catalog_index) {
            *bits = (*bits | APPLICABLE) & !(INSTALLED | PENDING_REBOOT);
        }
    }

    /// A reboot activates everything that was waiting for one.
    pub fn reboot(&mut self) {
        for bits in &mut self.patches {
            *bits &= !PENDING_REBOOT;
        }
    }

    pub(crate) fn set_agent(&mut self, agent: Option<AgentState>, now_ms: Millis) {
        if self.agent != agent {
            self.agent_since_ms = now_ms;
        }
        self.agent = agent;
        self.agent_epoch += 1;
    }
}

/// A read-only view of an instance, for tests and the control API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub platform: String,
    pub operating_system: String,
    pub state: String,
    /// `Online`, `ConnectionLost`, or `None` when the instance has no SSM agent.
    pub agent: Option<String>,
    pub patch_group: Option<String>,
    pub tags: Vec<(String, String)>,
    /// Patches the last Scan/Install reported missing (None before any report).
    pub missing: Option<u32>,
    /// Whether the agent is marked not to come back after the next reboot.
    pub lost_after_reboot: bool,
}

impl InstanceView {
    pub(crate) fn of(instance: &Instance) -> InstanceView {
        InstanceView {
            id: instance.id.clone(),
            name: instance.name().to_string(),
            platform: instance.platform.scenario_name().to_string(),
            operating_system: instance.platform.operating_system().to_string(),
            state: if instance.running { "running" } else { "stopped" }.to_string(),
            agent: instance.agent.map(|a| a.as_str().to_string()),
            patch_group: instance.patch_group().map(str::to_string),
            tags: instance.tags.clone(),
            missing: instance.report.as_ref().map(|r| r.counts.missing),
            lost_after_reboot: instance.lost_after_reboot,
        }
    }

    pub fn is_managed(&self) -> bool {
        self.state == "running" && self.agent.is_some()
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn install_stamp(ms: Millis) -> u32 {
    ((ms - INSTALL_EPOCH_MS) / 1000).clamp(0, i64::from(u32::MAX)) as u32
}

pub(crate) const STREAM_FLEET: u64 = 1;
pub(crate) const STREAM_COMMAND: u64 = 2;

fn pick_platform(rng: &mut ChaCha8Rng, platforms: &[(Platform, u32)]) -> Platform {
    let total: u32 = platforms.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (platform, weight) in platforms {
        if roll < *weight {
            return *platform;
        }
        roll -= weight;
    }
    platforms.first().map(|(p, _)| *p).unwrap_or(Platform::AmazonLinux2)
}

/// How much more often a recent patch is missing than an old one.
fn missing_weight(age_ms: i64) -> f64 {
    match age_ms / DAY_MS {
        d if d < 30 => 1.0,
        d if d < 90 => 0.5,
        d if d < 180 => 0.2,
        _ => 0.05,
    }
}

/// Builds the fleet a scenario describes, sorted by instance id.
pub fn generate(scenario: &Scenario, catalogs: &[&[Patch]; 5], start_ms: Millis) -> Vec<Instance> {
    let mut instances = Vec::with_capacity(scenario.instance_count());
    let mut ids = HashSet::with_capacity(scenario.instance_count());
    let mut global = 0u64;
    for (group_index, group) in scenario.groups.iter().enumerate() {
        for number in 0..group.count {
            let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(scenario.seed, STREAM_FLEET, global));
            global += 1;
            let mut id;
            loop {
                id =
                    format!("i-{:017x}", rng.random::<u64>() & 0x0fff_ffff_ffff_ffff | 0x0100_0000_0000_0000);
                if ids.insert(id.clone()) {
                    break;
                }
            }
            let platform = pick_platform(&mut rng, &group.platforms);
            let mut tags = vec![("Name".to_string(), format!("{}-{:03}", group.name, number + 1))];
            tags.extend(group.tags.iter().filter(|(k, _)| k != "Name").cloned());
            let running = !chance(&mut rng, group.stopped);
            let agent = if chance(&mut rng, group.unmanaged) {
                None
            } else if chance(&mut rng, group.offline) {
                Some(AgentState::ConnectionLost)
            } else {
                Some(AgentState::Online)
            };
            let launch_ms = start_ms - rng.random_range(30 * DAY_MS..700 * DAY_MS);
            let types = platform.instance_types();
            let instance_type = types[rng.random_range(0..types.len())];
            let private_ip =
                [10, rng.random_range(0..4), rng.random_range(0..=255), rng.random_range(4..=254)];
            let availability_zone = ['a', 'b', 'c'][rng.random_range(0..3)];
            let agent_since_ms = match agent {
                Some(AgentState::ConnectionLost) => start_ms - rng.random_range(3_600_000..5 * DAY_MS),
                _ => launch_ms,
            };
            let catalog = catalogs[platform.index()];
            let mut patches = Vec::with_capacity(catalog.len());
            let mut installed_at = Vec::with_capacity(catalog.len());
            for patch in catalog {
                let applicable = patch.needs_reboot || chance(&mut rng, 0.75);
                let mut bits = if applicable { APPLICABLE } else { 0 };
                let mut stamp = 0;
                let age = start_ms - patch.released_ms;
                if applicable && age > 0 && patch.released_ms > launch_ms - 400 * DAY_MS {
                    let missing = (group.missing * missing_weight(age)).clamp(0.0, 1.0);
                    if !chance(&mut rng, missing) {
                        bits |= INSTALLED;
                        let lag = rng.random_range(DAY_MS / 2..=(20 * DAY_MS).min(age).max(DAY_MS / 2 + 1));
                        stamp = install_stamp((patch.released_ms + lag).min(start_ms - 3_600_000));
                    }
                } else if applicable && age > 0 {
                    // Patches older than the image were already in the AMI.
                    bits |= INSTALLED;
                    stamp = install_stamp(launch_ms);
                }
                patches.push(bits);
                installed_at.push(stamp);
            }
            instances.push(Instance {
                id,
                platform,
                tags,
                running,
                agent,
                agent_since_ms,
                agent_epoch: 0,
                lost_after_reboot: false,
                instance_type,
                private_ip,
                availability_zone,
                launch_ms,
                registered_ms: launch_ms + 120_000,
                report: None,
                group: u16::try_from(group_index).unwrap_or(u16::MAX),
                patches,
                installed_at,
            });
        }
    }
    instances.sort_by(|a, b| a.id.cmp(&b.id));
    instances
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::predefined;
    use crate::catalog::{Catalog, CatalogShape};

    const START: Millis = 1_795_000_000_000;

    fn fleet(n: usize) -> (Catalog, Vec<Instance>) {
        let scenario = Scenario::demo().with_instances(n);
        let shape = CatalogShape { patches: 80, history_days: 540, future_days: 30, future_share: 0.03 };
        let catalog = Catalog::generate([shape; 5], START, scenario.seed);
        let lists: [&[Patch]; 5] = Platform::ALL.map(|p| catalog.patches(p));
        let instances = generate(&scenario, &lists, START);
        (catalog, instances)
    }

    #[test]
    fn generation_is_deterministic_unique_and_sorted() {
        let (_, a) = fleet(300);
        let (_, b) = fleet(300);
        assert_eq!(a.len(), 300);
        assert!(a.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(a.iter().map(|i| &i.id).collect::<Vec<_>>(), b.iter().map(|i| &i.id).collect::<Vec<_>>());
        for instance in &a {
            assert_eq!(instance.id.len(), 19, "{}", instance.id);
            assert!(instance.id[2..].chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert!(a.iter().any(|i| i.agent.is_none()), "demo has unmanaged instances");
        assert!(a.iter().any(|i| i.agent == Some(AgentState::ConnectionLost)));
        assert!(a.iter().any(|i| !i.running));
        assert!(Platform::ALL.iter().all(|p| a.iter().any(|i| i.platform == *p)));
    }

    #[test]
    fn scan_reports_states_and_counts() {
        let (catalog, mut instances) = fleet(50);
        let instance =
            instances.iter_mut().find(|i| i.platform == Platform::AmazonLinux2).expect("an AL2 node");
        let baseline = predefined(Platform::AmazonLinux2, "us-east-1", 0);
        let patches = catalog.patches(Platform::AmazonLinux2);
        let approvals = baseline.approvals(patches);
        let counts = instance.evaluate(patches, &approvals, &baseline, START, Operation::Scan);
        let listed: Vec<ReportedPatch> = (0..patches.len()).filter_map(|i| instance.reported(i)).collect();
        let count = |state: PatchState| listed.iter().filter(|r| r.state == state).count() as u32;
        assert_eq!(counts.installed, count(PatchState::Installed));
        assert_eq!(counts.missing, count(PatchState::Missing));
        assert_eq!(counts.not_applicable, count(PatchState::NotApplicable));
        assert_eq!(counts.installed_other, count(PatchState::InstalledOther));
        assert_eq!(
            counts.security_non_compliant + counts.other_non_compliant + counts.critical_non_compliant,
            counts.missing + counts.failed + counts.installed_pending_reboot + counts.installed_rejected
        );
        for row in &listed {
            assert!(patches[row.catalog_index].is_released(START), "unreleased patches are not reported");
            assert_eq!(row.installed_ms.is_some(), row.state.is_installed());
        }
    }

    fn plan(reboot_if_needed: bool, failure_rate: f64) -> InstallPlan<'static> {
        InstallPlan { approval_ms: START, now_ms: START, reboot_if_needed, failure_rate, listed: None }
    }

    #[test]
    fn install_with_and_without_reboot() {
        let (catalog, instances) = fleet(60);
        let platform = Platform::AmazonLinux2;
        let patches = catalog.patches(platform);
        let baseline = predefined(platform, "us-east-1", 0);
        let approvals = baseline.approvals(patches);
        let original = instances.iter().find(|i| i.platform == platform).expect("an AL2 node").clone();
        let mut rng = ChaCha8Rng::seed_from_u64(3);

        let mut no_reboot = original.clone();
        let result = no_reboot.install(patches, &approvals, plan(false, 0.0), &mut rng);
        let counts = no_reboot.evaluate(patches, &approvals, &baseline, START, Operation::Install);
        assert_eq!(counts.missing, 0);
        assert!(!result.rebooted);
        let kernel_installed = result.installed > 0 && no_reboot.has_pending_reboot();
        if kernel_installed {
            assert!(counts.installed_pending_reboot > 0);
        }

        let mut reboot = original.clone();
        let result = reboot.install(patches, &approvals, plan(true, 0.0), &mut rng);
        let counts = reboot.evaluate(patches, &approvals, &baseline, START, Operation::Install);
        assert_eq!((counts.missing, counts.installed_pending_reboot), (0, 0));
        assert_eq!(result.rebooted, kernel_installed);

        let mut failing = original;
        let result = failing.install(patches, &approvals, plan(true, 1.0), &mut rng);
        let counts = failing.evaluate(patches, &approvals, &baseline, START, Operation::Install);
        assert_eq!(result.installed, 0);
        assert_eq!(counts.failed, result.failed);
        let rescan = failing.evaluate(patches, &approvals, &baseline, START, Operation::Scan);
        assert_eq!(
            (rescan.failed, rescan.missing),
            (0, result.failed),
            "a scan reports failed patches as missing"
        );
    }

    #[test]
    fn rejected_and_available_security_states() {
        let (catalog, instances) = fleet(80);
        let platform = Platform::WindowsServer2022;
        let patches = catalog.patches(platform);
        let mut instance = instances.into_iter().find(|i| i.platform == platform).expect("a Windows node");
        let mut baseline = predefined(platform, "us-east-1", 0);
        // Nothing was released before the cutoff, so missing security updates are only "available".
        if let Some(rules) = baseline.approval_rules.as_mut() {
            rules[0].approve_after_days = None;
            rules[0].approve_until_date = Some("2000-01-01".into());
        }
        baseline.available_security_updates_compliance_status = Some("NON_COMPLIANT".into());
        let installed_security = (0..patches.len())
            .find(|i| instance.is_installed(*i) && patches[*i].is_security())
            .expect("an installed security update");
        baseline.rejected_patches = vec![patches[installed_security].id.clone()];
        baseline.rejected_patches_action = Some("BLOCK".into());
        let approvals = baseline.approvals(patches);
        let counts = instance.evaluate(patches, &approvals, &baseline, START, Operation::Scan);
        assert_eq!(
            instance.reported(installed_security).map(|r| r.state),
            Some(PatchState::InstalledRejected)
        );
        assert_eq!(counts.installed_rejected, 1);
        assert!(counts.available_security_update > 0);
        assert_eq!(counts.missing, 0);
        assert_eq!(
            counts.security_non_compliant,
            counts.available_security_update + 1,
            "available security updates count as non-compliant when the baseline says so"
        );

        baseline.rejected_patches_action = Some("ALLOW_AS_DEPENDENCY".into());
        baseline.available_security_updates_compliance_status = Some("COMPLIANT".into());
        baseline.revision += 1;
        let approvals = baseline.approvals(patches);
        let counts = instance.evaluate(patches, &approvals, &baseline, START, Operation::Scan);
        assert_eq!(instance.reported(installed_security).map(|r| r.state), Some(PatchState::InstalledOther));
        assert_eq!(counts.security_non_compliant, 0, "{counts:?}");
        assert!(counts.available_security_update > 0);
    }

    #[test]
    fn state_names() {
        assert_eq!(PatchState::parse("InstalledOther"), Some(PatchState::InstalledOther));
        assert_eq!(PatchState::parse("INSTALLED_PENDING_REBOOT"), Some(PatchState::InstalledPendingReboot));
        assert_eq!(PatchState::parse("nope"), None);
        assert_eq!(Counts::default().by_name("MissingCount"), Some(0));
        assert_eq!(Counts::default().by_name("Bogus"), None);
    }
}
