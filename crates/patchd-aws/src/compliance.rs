//! Compliance as SSM reports it now. SSM keeps only the latest Scan/Install per node; the
//! history is patchd-store's to keep, from these reads.

use aws_sdk_ssm::types::PatchOrchestratorFilter;
use chrono::{DateTime, Utc};
use patchd_config::{Operation, PatchFilter, RebootOption};
use patchd_model::{OperatingSystem, PatchState, Reported, StateCounts};
use tracing::instrument;

use crate::client::AwsClients;
use crate::error::AwsError;
use crate::time::{utc, utc_unless_epoch};

/// DescribeInstancePatchStates takes at most 50 ids a call; a page of 50 answers them all.
const PATCH_STATE_IDS: usize = 50;
/// DescribeInstancePatches and DescribeAvailablePatches answer at most 100 rows a page.
const PATCH_PAGE: i32 = 100;

/// A node's compliance summary from its last Scan or Install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchStateSummary {
    pub instance_id: String,
    /// None when the node is in no patch group (SSM sends an empty string).
    pub patch_group: Option<String>,
    pub baseline_id: String,
    pub snapshot_id: Option<String>,
    /// None for an operation this version of patchd does not know.
    pub operation: Option<Operation>,
    pub operation_started_at: Option<DateTime<Utc>>,
    /// Unchanged since the last read means the node's patch list has not changed either.
    pub operation_ended_at: Option<DateTime<Utc>>,
    pub reboot_option: Option<RebootOption>,
    /// The last Install with NoReboot, whose patches wait for a reboot and a new scan.
    pub last_no_reboot_install_at: Option<DateTime<Utc>>,
    pub counts: PatchCounts,
}

/// The counts of a [`PatchStateSummary`]. Counts SSM leaves out are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchCounts {
    pub by_state: StateCounts,
    pub unreported_not_applicable: u32,
    pub critical_non_compliant: u32,
    pub security_non_compliant: u32,
    pub other_non_compliant: u32,
}

/// Which of a node's patches [`AwsClients::instance_patches`] lists, as DescribeInstancePatches'
/// `State` filter (values spelt as SSM's API reference spells the filter's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchListing {
    /// Every patch the node's baseline tracks, whatever its state.
    All,
    /// Patches that are, or keep, a finding open: missing, failed, installed but waiting for a
    /// reboot, installed though rejected, and Windows security updates the baseline does not
    /// approve.
    Open,
    /// Installed patches (approved or not): where a finding that disappeared from the open
    /// listing went, with its InstalledTime.
    Installed,
    /// Every patch an install put on the node, a reboot still pending or not: what a
    /// promotion repeats.
    Taken,
}

impl PatchListing {
    /// The `State` filter's values; None lists everything.
    pub fn states(self) -> Option<&'static [&'static str]> {
        match self {
            PatchListing::All => None,
            PatchListing::Open => Some(&[
                "Missing",
                "Failed",
                "InstalledPendingReboot",
                "InstalledRejected",
                "AvailableSecurityUpdate",
            ]),
            PatchListing::Installed => Some(&["Installed", "InstalledOther"]),
            PatchListing::Taken => Some(&["Installed", "InstalledOther", "InstalledPendingReboot"]),
        }
    }
}

/// One patch on one node (DescribeInstancePatches). SSM gives no release date here; that
/// comes from [`AwsClients::available_patches`] or the vendor's advisory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancePatch {
    pub title: String,
    /// The KB number on Windows, the advisory id elsewhere.
    pub kb_id: String,
    pub classification: String,
    pub severity: String,
    pub state: Reported<PatchState>,
    /// None when not installed.
    pub installed_at: Option<DateTime<Utc>>,
    /// SSM fills these for missing and failed patches only.
    pub cve_ids: Vec<String>,
}

/// Where DescribeAvailablePatches has a catalog: only Windows Server and Amazon Linux 1 and 2.
/// Release dates for other systems come from vendor advisories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchCatalog {
    Windows,
    AmazonLinux,
    AmazonLinux2,
}

impl PatchCatalog {
    /// The catalog for an SSM `OperatingSystem` value, if DescribeAvailablePatches has one.
    pub fn for_operating_system(operating_system: OperatingSystem) -> Option<PatchCatalog> {
        match operating_system {
            OperatingSystem::Windows => Some(PatchCatalog::Windows),
            OperatingSystem::AmazonLinux => Some(PatchCatalog::AmazonLinux),
            OperatingSystem::AmazonLinux2 => Some(PatchCatalog::AmazonLinux2),
            _ => None,
        }
    }

    /// The PRODUCT filter that selects this catalog. Windows is what SSM lists without one.
    fn product(self) -> Option<&'static str> {
        match self {
            PatchCatalog::Windows => None,
            PatchCatalog::AmazonLinux => Some("AmazonLinux2018.03"),
            PatchCatalog::AmazonLinux2 => Some("AmazonLinux2"),
        }
    }
}

/// A patch in SSM's catalog (DescribeAvailablePatches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailablePatch {
    /// The KB id on Windows, the advisory id on Amazon Linux.
    pub id: String,
    pub kb_number: Option<String>,
    pub title: Option<String>,
    pub release_date: Option<DateTime<Utc>>,
    pub classification: Option<String>,
    /// Vendor severity on Linux.
    pub severity: Option<String>,
    /// Microsoft's severity on Windows.
    pub msrc_severity: Option<String>,
    pub cve_ids: Vec<String>,
    pub advisory_ids: Vec<String>,
    pub product: Option<String>,
    pub product_family: Option<String>,
    /// The package, on Linux.
    pub package: Option<String>,
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

fn text(value: Option<&str>) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

/// SSM's `CVEIds` of a patch on a node is one string; split it into ids, keeping order and
/// dropping repeats.
pub(crate) fn split_cve_ids(value: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for id in value.split(|c: char| c == ',' || c == ';' || c.is_whitespace()).filter(|s| !s.is_empty()) {
        if !ids.iter().any(|seen| seen == id) {
            ids.push(id.to_string());
        }
    }
    ids
}

impl AwsClients {
    /// Compliance summaries of the given nodes, 50 ids a call. A node that never reported a
    /// Scan or Install has no summary, and unknown ids are left out.
    #[instrument(skip(self, instance_ids), fields(instances = instance_ids.len()), err(Display))]
    pub async fn patch_states(&self, instance_ids: &[String]) -> Result<Vec<PatchStateSummary>, AwsError> {
        const OPERATION: &str = "DescribeInstancePatchStates";
        let mut states = Vec::with_capacity(instance_ids.len());
        for chunk in instance_ids.chunks(PATCH_STATE_IDS) {
            let mut next_token: Option<String> = None;
            loop {
                self.pacer().admit(OPERATION).await;
                let page = self
                    .ssm
                    .describe_instance_patch_states()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .max_results(PATCH_STATE_IDS as i32)
                    .set_next_token(next_token.take())
                    .send()
                    .await
                    .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
                for state in page.instance_patch_states() {
                    states.push(PatchStateSummary {
                        instance_id: state.instance_id().to_string(),
                        patch_group: text(Some(state.patch_group())),
                        baseline_id: state.baseline_id().to_string(),
                        snapshot_id: text(state.snapshot_id()),
                        operation: match state.operation().as_str() {
                            "Scan" => Some(Operation::Scan),
                            "Install" => Some(Operation::Install),
                            _ => None,
                        },
                        operation_started_at: utc_unless_epoch(state.operation_start_time()),
                        operation_ended_at: utc_unless_epoch(state.operation_end_time()),
                        reboot_option: state.reboot_option().and_then(|r| match r.as_str() {
                            "RebootIfNeeded" => Some(RebootOption::RebootIfNeeded),
                            "NoReboot" => Some(RebootOption::NoReboot),
                            _ => None,
                        }),
                        last_no_reboot_install_at: state
                            .last_no_reboot_install_operation_time()
                            .and_then(utc),
                        counts: PatchCounts {
                            by_state: StateCounts {
                                installed: count(state.installed_count()),
                                installed_other: count(state.installed_other_count()),
                                installed_pending_reboot: count(
                                    state.installed_pending_reboot_count().unwrap_or(0),
                                ),
                                installed_rejected: count(state.installed_rejected_count().unwrap_or(0)),
                                missing: count(state.missing_count()),
                                failed: count(state.failed_count()),
                                not_applicable: count(state.not_applicable_count()),
                                available_security_update: count(
                                    state.available_security_update_count().unwrap_or(0),
                                ),
                            },
                            unreported_not_applicable: count(
                                state.unreported_not_applicable_count().unwrap_or(0),
                            ),
                            critical_non_compliant: count(state.critical_non_compliant_count().unwrap_or(0)),
                            security_non_compliant: count(state.security_non_compliant_count().unwrap_or(0)),
                            other_non_compliant: count(state.other_non_compliant_count().unwrap_or(0)),
                        },
                    });
                }
                match page.next_token().filter(|t| !t.is_empty()) {
                    Some(token) => next_token = Some(token.to_string()),
                    None => break,
                }
            }
        }
        Ok(states)
    }

    /// The patches SSM tracks on one node in the states `listing` selects, all pages of 100.
    /// Each page waits for the operation's [`Pacer`](crate::Pacer) slot.
    #[instrument(skip(self), err(Display))]
    pub async fn instance_patches(
        &self,
        instance_id: &str,
        listing: PatchListing,
    ) -> Result<Vec<InstancePatch>, AwsError> {
        const OPERATION: &str = "DescribeInstancePatches";
        let filters: Option<Vec<PatchOrchestratorFilter>> = listing.states().map(|states| {
            vec![PatchOrchestratorFilter::builder()
                .key("State")
                .set_values(Some(states.iter().map(|s| s.to_string()).collect()))
                .build()]
        });
        let mut patches = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            self.pacer().admit(OPERATION).await;
            let page = self
                .ssm
                .describe_instance_patches()
                .instance_id(instance_id)
                .set_filters(filters.clone())
                .max_results(PATCH_PAGE)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
            patches.extend(page.patches().iter().map(|p| InstancePatch {
                title: p.title().to_string(),
                kb_id: p.kb_id().to_string(),
                classification: p.classification().to_string(),
                severity: p.severity().to_string(),
                state: Reported::parse(p.state().as_str()),
                installed_at: utc_unless_epoch(p.installed_time()),
                cve_ids: p.cve_ids().map(split_cve_ids).unwrap_or_default(),
            }));
            match page.next_token().filter(|t| !t.is_empty()) {
                Some(token) => next_token = Some(token.to_string()),
                None => break,
            }
        }
        tracing::debug!(patches = patches.len(), "instance patches listed");
        Ok(patches)
    }

    /// The catalog's released patches, filtered by `filters` (DescribeAvailablePatches keys
    /// such as CLASSIFICATION, SEVERITY, MSRC_SEVERITY, CVE_ID), all pages of 100. The
    /// catalog's PRODUCT filter is added unless `filters` has one.
    #[instrument(skip(self, filters), fields(filters = filters.len()), err(Display))]
    pub async fn available_patches(
        &self,
        catalog: PatchCatalog,
        filters: &[PatchFilter],
    ) -> Result<Vec<AvailablePatch>, AwsError> {
        const OPERATION: &str = "DescribeAvailablePatches";
        let mut request: Vec<PatchOrchestratorFilter> = filters
            .iter()
            .map(|f| PatchOrchestratorFilter::builder().key(f.key).set_values(Some(f.values.clone())).build())
            .collect();
        if let Some(product) = catalog.product().filter(|_| !filters.iter().any(|f| f.key == "PRODUCT")) {
            request.push(PatchOrchestratorFilter::builder().key("PRODUCT").values(product).build());
        }
        let mut pages = self
            .ssm
            .describe_available_patches()
            .set_filters(Some(request))
            .into_paginator()
            .page_size(PATCH_PAGE)
            .send();
        let mut patches = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
            patches.extend(page.patches().iter().filter_map(|p| {
                Some(AvailablePatch {
                    id: text(p.id())?,
                    kb_number: text(p.kb_number()),
                    title: text(p.title()),
                    release_date: p.release_date().and_then(utc),
                    classification: text(p.classification()),
                    severity: text(p.severity()),
                    msrc_severity: text(p.msrc_severity()),
                    cve_ids: p.cve_ids().to_vec(),
                    advisory_ids: p.advisory_ids().to_vec(),
                    product: text(p.product()),
                    product_family: text(p.product_family()),
                    package: text(p.name()),
                })
            }));
        }
        tracing::debug!(patches = patches.len(), "available patches listed");
        Ok(patches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cve_strings_split_into_ids() {
        for (text, ids) in [
            ("CVE-2026-1234", vec!["CVE-2026-1234"]),
            ("CVE-2026-1234,CVE-2026-5678", vec!["CVE-2026-1234", "CVE-2026-5678"]),
            ("CVE-2026-1234, CVE-2026-5678 ;CVE-2026-1234", vec!["CVE-2026-1234", "CVE-2026-5678"]),
            ("", vec![]),
            (" , ", vec![]),
        ] {
            assert_eq!(split_cve_ids(text), ids, "{text:?}");
        }
    }

    #[test]
    fn only_three_systems_have_a_catalog() {
        assert_eq!(PatchCatalog::for_operating_system(OperatingSystem::Windows), Some(PatchCatalog::Windows));
        assert_eq!(
            PatchCatalog::for_operating_system(OperatingSystem::AmazonLinux2),
            Some(PatchCatalog::AmazonLinux2)
        );
        assert_eq!(PatchCatalog::for_operating_system(OperatingSystem::AmazonLinux2023), None);
        assert_eq!(PatchCatalog::for_operating_system(OperatingSystem::Ubuntu), None);
    }
}
