//! Patch baselines and patch-group registrations: what patchd keeps in SSM from the
//! `[[baseline]]` sections.
//!
//! patchd only ever touches baselines it manages: owned by the account (`OWNER = Self`),
//! named with the caller's prefix and tagged [`MANAGED_TAG_KEY`] = [`MANAGED_TAG_VALUE`].
//! This module reads and writes them; deciding what to change is the caller's business.

use aws_sdk_ssm::types::{
    OperatingSystem as SdkOperatingSystem, PatchAction, PatchComplianceLevel, PatchFilter, PatchFilterGroup,
    PatchFilterKey, PatchOrchestratorFilter, PatchRule, PatchRuleGroup, Tag,
};
use patchd_model::{OperatingSystem, Reported};
use tracing::instrument;

use crate::client::AwsClients;
use crate::error::{AwsError, InvalidRequest};

/// The tag that marks a baseline as patchd's. Baselines without it are never changed.
pub const MANAGED_TAG_KEY: &str = "managed-by";
pub const MANAGED_TAG_VALUE: &str = "patchd";
/// DescribePatchBaselines and DescribePatchGroups answer at most 100 rows a page.
const BASELINE_PAGE: i32 = 100;

/// One patch filter as SSM spells it (`CLASSIFICATION`, `SEVERITY`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineFilter {
    pub key: String,
    pub values: Vec<String>,
}

/// One approval rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineRule {
    pub filters: Vec<BaselineFilter>,
    pub approve_after_days: Option<u32>,
    /// `YYYY-MM-DD`.
    pub approve_until: Option<String>,
    pub compliance_level: String,
    pub enable_non_security: bool,
}

/// The fields of a baseline patchd writes, as it writes them and as SSM returns them.
/// Absent values are SSM's defaults (`UNSPECIFIED`, `false`, `ALLOW_AS_DEPENDENCY`), so a
/// document read back compares equal to the one written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineDocument {
    pub name: String,
    pub description: Option<String>,
    pub operating_system: Reported<OperatingSystem>,
    pub global_filters: Vec<BaselineFilter>,
    pub rules: Vec<BaselineRule>,
    pub approved_patches: Vec<String>,
    pub approved_patches_compliance_level: String,
    pub approved_patches_enable_non_security: bool,
    pub rejected_patches: Vec<String>,
    pub rejected_patches_action: String,
}

/// A baseline as DescribePatchBaselines lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineIdentity {
    pub id: String,
    pub name: String,
    pub operating_system: Reported<OperatingSystem>,
}

/// A baseline read in full, with the patch groups it is registered for and whether it
/// carries patchd's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBaseline {
    pub id: String,
    pub document: BaselineDocument,
    pub patch_groups: Vec<String>,
    pub managed: bool,
}

/// One registration of DescribePatchGroups: a patch group served by a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchGroupMapping {
    pub patch_group: String,
    pub baseline: BaselineIdentity,
}

fn incomplete(operation: &'static str, error: impl std::fmt::Display) -> AwsError {
    AwsError::invalid(operation, InvalidRequest::Incomplete { detail: error.to_string() })
}

fn sdk_filters(operation: &'static str, filters: &[BaselineFilter]) -> Result<Vec<PatchFilter>, AwsError> {
    filters
        .iter()
        .map(|f| {
            PatchFilter::builder()
                .key(PatchFilterKey::from(f.key.as_str()))
                .set_values(Some(f.values.clone()))
                .build()
                .map_err(|e| incomplete(operation, e))
        })
        .collect()
}

fn sdk_filter_group(
    operation: &'static str,
    filters: &[BaselineFilter],
) -> Result<PatchFilterGroup, AwsError> {
    PatchFilterGroup::builder()
        .set_patch_filters(Some(sdk_filters(operation, filters)?))
        .build()
        .map_err(|e| incomplete(operation, e))
}

fn sdk_rules(operation: &'static str, rules: &[BaselineRule]) -> Result<PatchRuleGroup, AwsError> {
    let rules = rules
        .iter()
        .map(|rule| {
            Ok(PatchRule::builder()
                .patch_filter_group(sdk_filter_group(operation, &rule.filters)?)
                .compliance_level(PatchComplianceLevel::from(rule.compliance_level.as_str()))
                .set_approve_after_days(rule.approve_after_days.map(|d| d as i32))
                .set_approve_until_date(rule.approve_until.clone())
                .enable_non_security(rule.enable_non_security)
                .build())
        })
        .collect::<Result<Vec<_>, AwsError>>()?;
    PatchRuleGroup::builder().set_patch_rules(Some(rules)).build().map_err(|e| incomplete(operation, e))
}

fn read_filters(group: Option<&PatchFilterGroup>) -> Vec<BaselineFilter> {
    group
        .map(|g| {
            g.patch_filters()
                .iter()
                .map(|f| BaselineFilter { key: f.key().as_str().to_string(), values: f.values().to_vec() })
                .collect()
        })
        .unwrap_or_default()
}

fn read_rules(group: Option<&PatchRuleGroup>) -> Vec<BaselineRule> {
    group
        .map(|g| {
            g.patch_rules()
                .iter()
                .map(|r| BaselineRule {
                    filters: read_filters(r.patch_filter_group()),
                    approve_after_days: r.approve_after_days().and_then(|d| u32::try_from(d).ok()),
                    approve_until: r.approve_until_date().map(str::to_string),
                    compliance_level: r.compliance_level().map_or("UNSPECIFIED", |l| l.as_str()).to_string(),
                    enable_non_security: r.enable_non_security().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Sets the fields of `document` that CreatePatchBaseline and UpdatePatchBaseline both take
/// (their builders share no trait), so that a baseline is written the same way either way.
/// Returns early from the caller when a filter or rule cannot be built.
macro_rules! with_document {
    ($builder:expr, $operation:expr, $document:expr) => {
        $builder
            .name(&$document.name)
            .set_description($document.description.clone())
            .global_filters(sdk_filter_group($operation, &$document.global_filters)?)
            .approval_rules(sdk_rules($operation, &$document.rules)?)
            .set_approved_patches(Some($document.approved_patches.clone()))
            .approved_patches_compliance_level(PatchComplianceLevel::from(
                $document.approved_patches_compliance_level.as_str(),
            ))
            .approved_patches_enable_non_security($document.approved_patches_enable_non_security)
            .set_rejected_patches(Some($document.rejected_patches.clone()))
            .rejected_patches_action(PatchAction::from($document.rejected_patches_action.as_str()))
    };
}

impl AwsClients {
    /// The account's own baselines (`OWNER = Self`) whose name starts with `name_prefix`, all
    /// pages. AWS's predefined baselines are never listed.
    #[instrument(skip(self), err(Display))]
    pub async fn list_baselines(&self, name_prefix: &str) -> Result<Vec<BaselineIdentity>, AwsError> {
        const OPERATION: &str = "DescribePatchBaselines";
        let mut filters = vec![PatchOrchestratorFilter::builder().key("OWNER").values("Self").build()];
        if !name_prefix.is_empty() {
            filters.push(PatchOrchestratorFilter::builder().key("NAME_PREFIX").values(name_prefix).build());
        }
        let mut pages = self
            .ssm
            .describe_patch_baselines()
            .set_filters(Some(filters))
            .into_paginator()
            .page_size(BASELINE_PAGE)
            .send();
        let mut baselines = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
            baselines.extend(page.baseline_identities().iter().filter_map(baseline_identity));
        }
        tracing::debug!(baselines = baselines.len(), "baselines listed");
        Ok(baselines)
    }

    /// Whether the baseline carries patchd's tag (ListTagsForResource).
    #[instrument(skip(self), err(Display))]
    pub async fn is_managed_baseline(&self, baseline_id: &str) -> Result<bool, AwsError> {
        const OPERATION: &str = "ListTagsForResource";
        let answer = self
            .ssm
            .list_tags_for_resource()
            .resource_type(aws_sdk_ssm::types::ResourceTypeForTagging::PatchBaseline)
            .resource_id(baseline_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        Ok(answer.tag_list().iter().any(|t| t.key() == MANAGED_TAG_KEY && t.value() == MANAGED_TAG_VALUE))
    }

    /// One baseline in full (GetPatchBaseline), with its patch groups and its tag.
    #[instrument(skip(self), err(Display))]
    pub async fn baseline(&self, baseline_id: &str) -> Result<RemoteBaseline, AwsError> {
        const OPERATION: &str = "GetPatchBaseline";
        let b = self
            .ssm
            .get_patch_baseline()
            .baseline_id(baseline_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        let document = BaselineDocument {
            name: b.name().unwrap_or_default().to_string(),
            description: b.description().filter(|d| !d.is_empty()).map(str::to_string),
            operating_system: Reported::parse(b.operating_system().map_or("", |o| o.as_str())),
            global_filters: read_filters(b.global_filters()),
            rules: read_rules(b.approval_rules()),
            approved_patches: b.approved_patches().to_vec(),
            approved_patches_compliance_level: b
                .approved_patches_compliance_level()
                .map_or("UNSPECIFIED", |l| l.as_str())
                .to_string(),
            approved_patches_enable_non_security: b.approved_patches_enable_non_security().unwrap_or(false),
            rejected_patches: b.rejected_patches().to_vec(),
            rejected_patches_action: b
                .rejected_patches_action()
                .map_or("ALLOW_AS_DEPENDENCY", |a| a.as_str())
                .to_string(),
        };
        let managed = self.is_managed_baseline(baseline_id).await?;
        Ok(RemoteBaseline {
            id: baseline_id.to_string(),
            document,
            patch_groups: b.patch_groups().to_vec(),
            managed,
        })
    }

    /// Every account-owned baseline named with `name_prefix`, read in full, tagged or not:
    /// the caller tells patchd's own ([`RemoteBaseline::managed`]) from name clashes.
    #[instrument(skip(self), err(Display))]
    pub async fn baselines_with_prefix(&self, name_prefix: &str) -> Result<Vec<RemoteBaseline>, AwsError> {
        let mut baselines = Vec::new();
        for identity in self.list_baselines(name_prefix).await? {
            baselines.push(self.baseline(&identity.id).await?);
        }
        Ok(baselines)
    }

    /// Creates a baseline tagged as patchd's and returns its id.
    #[instrument(skip(self, document), fields(name = %document.name), err(Display))]
    pub async fn create_baseline(&self, document: &BaselineDocument) -> Result<String, AwsError> {
        const OPERATION: &str = "CreatePatchBaseline";
        let tag = Tag::builder()
            .key(MANAGED_TAG_KEY)
            .value(MANAGED_TAG_VALUE)
            .build()
            .map_err(|e| incomplete(OPERATION, e))?;
        // One statement from the client to `send()`: the IAM policy test reads the call so.
        let answer = with_document!(
            self.ssm
                .create_patch_baseline()
                .operating_system(SdkOperatingSystem::from(document.operating_system.as_str())),
            OPERATION,
            document
        )
        .tags(tag)
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        let id = answer.baseline_id().unwrap_or_default().to_string();
        tracing::info!(baseline = %document.name, id = %id, "baseline created");
        Ok(id)
    }

    /// Replaces every field of a baseline with `document` (`Replace = true`: what the
    /// document leaves out is cleared in SSM). The operating system cannot change.
    #[instrument(skip(self, document), fields(name = %document.name), err(Display))]
    pub async fn update_baseline(
        &self,
        baseline_id: &str,
        document: &BaselineDocument,
    ) -> Result<(), AwsError> {
        const OPERATION: &str = "UpdatePatchBaseline";
        with_document!(
            self.ssm.update_patch_baseline().baseline_id(baseline_id).replace(true),
            OPERATION,
            document
        )
        .send()
        .await
        .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        tracing::info!(baseline = %document.name, id = %baseline_id, "baseline updated");
        Ok(())
    }

    /// Deletes a baseline. SSM refuses while patch groups are registered to it
    /// (`ResourceInUseException`): deregister them first.
    #[instrument(skip(self), err(Display))]
    pub async fn delete_baseline(&self, baseline_id: &str) -> Result<(), AwsError> {
        const OPERATION: &str = "DeletePatchBaseline";
        self.ssm
            .delete_patch_baseline()
            .baseline_id(baseline_id)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        tracing::info!(id = %baseline_id, "baseline deleted");
        Ok(())
    }

    /// Every patch-group registration of the account (DescribePatchGroups), all pages.
    #[instrument(skip(self), err(Display))]
    pub async fn patch_group_mappings(&self) -> Result<Vec<PatchGroupMapping>, AwsError> {
        const OPERATION: &str = "DescribePatchGroups";
        let mut pages = self.ssm.describe_patch_groups().into_paginator().page_size(BASELINE_PAGE).send();
        let mut mappings = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| AwsError::from_sdk(OPERATION, e))?;
            mappings.extend(page.mappings().iter().filter_map(|m| {
                Some(PatchGroupMapping {
                    patch_group: m.patch_group()?.to_string(),
                    baseline: baseline_identity(m.baseline_identity()?)?,
                })
            }));
        }
        tracing::debug!(mappings = mappings.len(), "patch groups listed");
        Ok(mappings)
    }

    /// The baseline that serves `patch_group` on `operating_system`
    /// (GetPatchBaselineForPatchGroup): the registered one, else the default for that OS.
    #[instrument(skip(self), err(Display))]
    pub async fn baseline_for_patch_group(
        &self,
        patch_group: &str,
        operating_system: OperatingSystem,
    ) -> Result<Option<String>, AwsError> {
        const OPERATION: &str = "GetPatchBaselineForPatchGroup";
        let answer = self
            .ssm
            .get_patch_baseline_for_patch_group()
            .patch_group(patch_group)
            .operating_system(SdkOperatingSystem::from(operating_system.as_str()))
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        Ok(answer.baseline_id().map(str::to_string))
    }

    /// Registers `baseline_id` for `patch_group`. SSM refuses when the group already has a
    /// baseline of the same operating system (`AlreadyExistsException`).
    #[instrument(skip(self), err(Display))]
    pub async fn register_patch_group(&self, baseline_id: &str, patch_group: &str) -> Result<(), AwsError> {
        const OPERATION: &str = "RegisterPatchBaselineForPatchGroup";
        self.ssm
            .register_patch_baseline_for_patch_group()
            .baseline_id(baseline_id)
            .patch_group(patch_group)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        tracing::info!(id = %baseline_id, patch_group, "patch group registered");
        Ok(())
    }

    /// Removes the registration of `baseline_id` for `patch_group`.
    #[instrument(skip(self), err(Display))]
    pub async fn deregister_patch_group(&self, baseline_id: &str, patch_group: &str) -> Result<(), AwsError> {
        const OPERATION: &str = "DeregisterPatchBaselineForPatchGroup";
        self.ssm
            .deregister_patch_baseline_for_patch_group()
            .baseline_id(baseline_id)
            .patch_group(patch_group)
            .send()
            .await
            .map_err(|e| AwsError::from_sdk(OPERATION, e))?;
        tracing::info!(id = %baseline_id, patch_group, "patch group deregistered");
        Ok(())
    }
}

/// A baseline as SSM identifies it in listings; None without an id, which SSM always sends.
fn baseline_identity(b: &aws_sdk_ssm::types::PatchBaselineIdentity) -> Option<BaselineIdentity> {
    Some(BaselineIdentity {
        id: b.baseline_id()?.to_string(),
        name: b.baseline_name().unwrap_or_default().to_string(),
        operating_system: Reported::parse(b.operating_system().map_or("", |o| o.as_str())),
    })
}
