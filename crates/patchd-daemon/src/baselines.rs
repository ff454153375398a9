//! Baselines as code: the `[[baseline]]` sections against what SSM has.
//!
//! [`diff`] is pure: the configured baselines and what SSM holds ([`Actual`], read by
//! [`read_actual`]) in, a [`Plan`] of [`Change`]s out, field by field. [`apply`] carries a
//! plan out and writes one audit entry per change; it is idempotent because a plan is always
//! computed from SSM's current state, so a second apply finds nothing to do.
//!
//! Ownership: patchd only changes baselines that carry the tag `managed-by = patchd` and whose
//! name starts with [`NAME_PREFIX`]. A configured name held by a baseline without the tag, or
//! a patch group registered to a baseline patchd does not manage, is a [`Change::Conflict`]
//! naming both sides; it is reported, never overwritten.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use patchd_aws::{
    AwsClients, AwsError, BaselineDocument, BaselineFilter, BaselineRule, OperatingSystem, PatchGroupMapping,
    RemoteBaseline, Target,
};
use patchd_config::{Approval, Baseline, PatchFilter, PATCH_GROUP_TAGS};
use patchd_store::StoreError;
use serde_json::json;

use crate::context::Context;

/// The name prefix of the baselines patchd manages; SSM is asked only for these.
pub const NAME_PREFIX: &str = "patchd-";

/// What SSM holds: every account-owned baseline named with the prefix (tagged or not) and
/// every patch-group registration of the account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actual {
    pub baselines: Vec<RemoteBaseline>,
    pub mappings: Vec<PatchGroupMapping>,
}

/// One field that differs between SSM and the configuration, both sides rendered as text
/// (`None`: the field, or the rule, is absent on that side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One step of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The configured baseline does not exist in SSM yet.
    Create { document: BaselineDocument },
    /// The managed baseline differs; `fields` says how, `document` is what it becomes.
    Update { id: String, fields: Vec<FieldChange>, document: BaselineDocument },
    /// The managed baseline already matches the configuration.
    Unchanged { id: String, name: String },
    /// A managed baseline the configuration no longer has, deleted (after its patch groups
    /// are deregistered) because `[daemon] prune_baselines = true`.
    Delete { id: String, name: String, patch_groups: Vec<String> },
    /// The same, kept because pruning is off: shown, never touched.
    Orphan { id: String, name: String },
    /// Register `baseline` for `patch_group`, after deregistering the managed baseline that
    /// holds the group today (`replaces`, id and name), if any.
    Register {
        baseline: String,
        patch_group: String,
        operating_system: String,
        replaces: Option<(String, String)>,
    },
    /// A managed baseline is registered for a patch group the configuration no longer gives it
    /// (and no other configured baseline wants).
    Deregister { id: String, baseline: String, patch_group: String },
    /// Something patchd must not overwrite.
    Conflict(Conflict),
}

/// Why a configured baseline or patch group cannot be brought in line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// A baseline with the configured name exists but does not carry patchd's tag.
    NameTaken { name: String, id: String },
    /// The patch group is registered (for this operating system) to a baseline patchd does
    /// not manage.
    PatchGroupTaken {
        patch_group: String,
        operating_system: String,
        wanted_by: String,
        registered_to: String,
        registered_id: String,
    },
    /// SSM cannot change a baseline's operating system in place.
    OperatingSystem { name: String, id: String, from: String, to: String },
    /// The configured name lacks the prefix patchd manages, so patchd would never find it again.
    Prefix { name: String },
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Conflict::NameTaken { name, id } => write!(
                f,
                "baseline {name} already exists as {id} without the tag managed-by = patchd; \
                 rename the [[baseline]] or tag the existing one if patchd should own it"
            ),
            Conflict::PatchGroupTaken {
                patch_group,
                operating_system,
                wanted_by,
                registered_to,
                registered_id,
            } => {
                write!(
                    f,
                    "patch group {patch_group} ({operating_system}) is registered to {registered_to} \
                     ({registered_id}), which patchd does not manage, not to {wanted_by}; \
                     deregister it in SSM if {wanted_by} should serve it"
                )
            }
            Conflict::OperatingSystem { name, id, from, to } => write!(
                f,
                "baseline {name} ({id}) is for {from}, the configuration says {to}; SSM cannot change \
                 a baseline's operating system, give the [[baseline]] a new name"
            ),
            Conflict::Prefix { name } => {
                write!(f, "baseline {name} does not start with {NAME_PREFIX}; patchd only manages names with that prefix")
            }
        }
    }
}

/// Every change, configured baselines first (in configuration order, each followed by its
/// patch-group changes), then baselines the configuration no longer has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether [`apply`] would change anything in SSM.
    pub fn has_work(&self) -> bool {
        self.changes.iter().any(|c| {
            matches!(
                c,
                Change::Create { .. }
                    | Change::Update { .. }
                    | Change::Delete { .. }
                    | Change::Register { .. }
                    | Change::Deregister { .. }
            )
        })
    }

    pub fn conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.changes.iter().filter_map(|c| match c {
            Change::Conflict(conflict) => Some(conflict),
            _ => None,
        })
    }
}

/// The document patchd writes for a configured baseline.
pub fn desired(baseline: &Baseline) -> BaselineDocument {
    BaselineDocument {
        name: baseline.name.clone(),
        description: baseline.description.clone().filter(|d| !d.is_empty()),
        operating_system: baseline.operating_system.into(),
        global_filters: filters(&baseline.global_filters),
        rules: baseline
            .rules
            .iter()
            .map(|rule| BaselineRule {
                filters: filters(&rule.filters),
                approve_after_days: match rule.approval {
                    Approval::AfterDays(days) => Some(days),
                    _ => None,
                },
                approve_until: match rule.approval {
                    Approval::Until(date) => Some(date.format("%Y-%m-%d").to_string()),
                    _ => None,
                },
                compliance_level: rule.compliance_level.to_string(),
                enable_non_security: rule.enable_non_security,
            })
            .collect(),
        approved_patches: baseline.approved_patches.clone(),
        approved_patches_compliance_level: baseline.approved_patches_compliance_level.to_string(),
        approved_patches_enable_non_security: baseline.approved_patches_enable_non_security,
        rejected_patches: baseline.rejected_patches.clone(),
        rejected_patches_action: baseline.rejected_patches_action.as_ssm().to_string(),
    }
}

fn filters(filters: &[PatchFilter]) -> Vec<BaselineFilter> {
    filters.iter().map(|f| BaselineFilter { key: f.key.to_string(), values: f.values.clone() }).collect()
}

fn render_filters(filters: &[BaselineFilter]) -> String {
    if filters.is_empty() {
        return "(none)".into();
    }
    filters.iter().map(|f| format!("{}={}", f.key, f.values.join(","))).collect::<Vec<_>>().join(" ")
}

fn render_list(values: &[String]) -> String {
    format!("[{}]", values.join(", "))
}

/// A rule on one line: `CLASSIFICATION=Security SEVERITY=Critical after 0d CRITICAL`.
pub fn render_rule(rule: &BaselineRule) -> String {
    let mut text = render_filters(&rule.filters);
    if let Some(days) = rule.approve_after_days {
        text.push_str(&format!(" after {days}d"));
    }
    if let Some(date) = &rule.approve_until {
        text.push_str(&format!(" until {date}"));
    }
    text.push(' ');
    text.push_str(&rule.compliance_level);
    if rule.enable_non_security {
        text.push_str(" +non-security");
    }
    text
}

/// The fields of `to` that differ from `from`, in a fixed order.
pub fn field_changes(from: &BaselineDocument, to: &BaselineDocument) -> Vec<FieldChange> {
    let mut changes = Vec::new();
    let mut field = |name: &str, a: Option<String>, b: Option<String>| {
        if a != b {
            changes.push(FieldChange { field: name.to_string(), from: a, to: b });
        }
    };
    field("description", from.description.clone(), to.description.clone());
    field(
        "global_filters",
        Some(render_filters(&from.global_filters)),
        Some(render_filters(&to.global_filters)),
    );
    for i in 0..from.rules.len().max(to.rules.len()) {
        field(
            &format!("rule[{}]", i + 1),
            from.rules.get(i).map(render_rule),
            to.rules.get(i).map(render_rule),
        );
    }
    field(
        "approved_patches",
        Some(render_list(&from.approved_patches)),
        Some(render_list(&to.approved_patches)),
    );
    field(
        "approved_patches_compliance_level",
        Some(from.approved_patches_compliance_level.clone()),
        Some(to.approved_patches_compliance_level.clone()),
    );
    field(
        "approved_patches_enable_non_security",
        Some(from.approved_patches_enable_non_security.to_string()),
        Some(to.approved_patches_enable_non_security.to_string()),
    );
    field(
        "rejected_patches",
        Some(render_list(&from.rejected_patches)),
        Some(render_list(&to.rejected_patches)),
    );
    field(
        "rejected_patches_action",
        Some(from.rejected_patches_action.clone()),
        Some(to.rejected_patches_action.clone()),
    );
    changes
}

/// The plan that brings SSM in line with `configured`. Pure.
pub fn diff(configured: &[Baseline], actual: &Actual, prune: bool) -> Plan {
    let managed = |name: &str| actual.baselines.iter().find(|b| b.managed && b.document.name == name);
    let by_id = |id: &str| actual.baselines.iter().find(|b| b.id == id);
    let configured_names: BTreeSet<&str> = configured.iter().map(|b| b.name.as_str()).collect();
    // (patch group, operating system) pairs some usable configured baseline wants.
    let mut wanted: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut changes = Vec::new();

    for baseline in configured {
        let document = desired(baseline);
        if !baseline.name.starts_with(NAME_PREFIX) {
            changes.push(Change::Conflict(Conflict::Prefix { name: baseline.name.clone() }));
            continue;
        }
        match managed(&baseline.name) {
            Some(remote) if remote.document.operating_system != document.operating_system => {
                changes.push(Change::Conflict(Conflict::OperatingSystem {
                    name: baseline.name.clone(),
                    id: remote.id.clone(),
                    from: remote.document.operating_system.to_string(),
                    to: document.operating_system.to_string(),
                }));
                continue;
            }
            Some(remote) => {
                let fields = field_changes(&remote.document, &document);
                if fields.is_empty() {
                    changes.push(Change::Unchanged { id: remote.id.clone(), name: baseline.name.clone() });
                } else {
                    changes.push(Change::Update { id: remote.id.clone(), fields, document });
                }
            }
            None => match actual.baselines.iter().find(|b| b.document.name == baseline.name) {
                Some(foreign) => {
                    changes.push(Change::Conflict(Conflict::NameTaken {
                        name: baseline.name.clone(),
                        id: foreign.id.clone(),
                    }));
                    continue;
                }
                None => changes.push(Change::Create { document }),
            },
        }
        let own_id = managed(&baseline.name).map(|b| b.id.as_str());
        for group in &baseline.patch_groups {
            wanted.insert((group.as_str(), baseline.operating_system.as_str()));
            let current = actual.mappings.iter().find(|m| {
                m.patch_group == *group && m.baseline.operating_system == baseline.operating_system
            });
            match current {
                Some(m) if Some(m.baseline.id.as_str()) == own_id => {}
                Some(m) if by_id(&m.baseline.id).is_some_and(|b| b.managed) => {
                    changes.push(Change::Register {
                        baseline: baseline.name.clone(),
                        patch_group: group.clone(),
                        operating_system: baseline.operating_system.to_string(),
                        replaces: Some((m.baseline.id.clone(), m.baseline.name.clone())),
                    })
                }
                Some(m) => changes.push(Change::Conflict(Conflict::PatchGroupTaken {
                    patch_group: group.clone(),
                    operating_system: baseline.operating_system.to_string(),
                    wanted_by: baseline.name.clone(),
                    registered_to: m.baseline.name.clone(),
                    registered_id: m.baseline.id.clone(),
                })),
                None => changes.push(Change::Register {
                    baseline: baseline.name.clone(),
                    patch_group: group.clone(),
                    operating_system: baseline.operating_system.to_string(),
                    replaces: None,
                }),
            }
        }
    }

    // Registrations of configured, managed baselines that the configuration dropped.
    for mapping in &actual.mappings {
        let Some(remote) = by_id(&mapping.baseline.id).filter(|b| b.managed) else { continue };
        let key = (mapping.patch_group.as_str(), mapping.baseline.operating_system.as_str());
        let still_configured = configured.iter().any(|b| b.name == remote.document.name);
        if still_configured && !wanted.contains(&key) {
            changes.push(Change::Deregister {
                id: remote.id.clone(),
                baseline: remote.document.name.clone(),
                patch_group: mapping.patch_group.clone(),
            });
        }
    }

    for remote in actual.baselines.iter().filter(|b| b.managed) {
        if configured_names.contains(remote.document.name.as_str()) {
            continue;
        }
        let (id, name) = (remote.id.clone(), remote.document.name.clone());
        if prune {
            let patch_groups = actual
                .mappings
                .iter()
                .filter(|m| {
                    m.baseline.id == remote.id
                        && !wanted.contains(&(m.patch_group.as_str(), m.baseline.operating_system.as_str()))
                })
                .map(|m| m.patch_group.clone())
                .collect();
            changes.push(Change::Delete { id, name, patch_groups });
        } else {
            changes.push(Change::Orphan { id, name });
        }
    }
    Plan { changes }
}

/// Reads what SSM holds for [`diff`].
pub async fn read_actual(aws: &AwsClients) -> Result<Actual, AwsError> {
    Ok(Actual {
        baselines: aws.baselines_with_prefix(NAME_PREFIX).await?,
        mappings: aws.patch_group_mappings().await?,
    })
}

/// Reads SSM and plans.
pub async fn plan(aws: &AwsClients, configured: &[Baseline], prune: bool) -> Result<Plan, AwsError> {
    Ok(diff(configured, &read_actual(aws).await?, prune))
}

/// The daemon's step at start-up and on reload: plan against SSM and apply, each change and
/// conflict logged. Returns the changes made.
pub async fn reconcile(
    ctx: &Context,
    configured: &[Baseline],
    prune: bool,
) -> Result<Vec<Change>, BaselineError> {
    let plan = plan(&ctx.aws, configured, prune).await?;
    if !plan.has_work() {
        tracing::info!(
            baselines = configured.len(),
            conflicts = plan.conflicts().count(),
            "patch baselines already in line with the configuration"
        );
        for conflict in plan.conflicts() {
            tracing::warn!(conflict = %conflict, "baseline conflict left alone");
        }
        return Ok(Vec::new());
    }
    apply(ctx, &plan, Utc::now()).await
}

impl std::fmt::Display for Change {
    /// One line for logs: `create patchd-al2`, `register web -> patchd-al2`...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Create { document } => write!(f, "create {}", document.name),
            Change::Update { id, fields, document } => {
                let names: Vec<&str> = fields.iter().map(|c| c.field.as_str()).collect();
                write!(f, "update {} ({id}): {}", document.name, names.join(", "))
            }
            Change::Unchanged { id, name } => write!(f, "unchanged {name} ({id})"),
            Change::Delete { id, name, .. } => write!(f, "delete {name} ({id})"),
            Change::Orphan { id, name } => write!(f, "keep {name} ({id}), not configured, pruning off"),
            Change::Register { baseline, patch_group, operating_system, replaces } => match replaces {
                Some((_, old)) => {
                    write!(f, "move patch group {patch_group} ({operating_system}): {old} -> {baseline}")
                }
                None => write!(f, "register patch group {patch_group} ({operating_system}) -> {baseline}"),
            },
            Change::Deregister { baseline, patch_group, .. } => {
                write!(f, "deregister patch group {patch_group} from {baseline}")
            }
            Change::Conflict(conflict) => write!(f, "conflict: {conflict}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error("the audit log could not be written: {0}")]
    Store(#[from] StoreError),
    #[error("baseline {0} was planned but neither exists nor was created; plan again")]
    Missing(String),
}

/// Carries out `plan`: creates and updates, then patch-group changes, then deletions. Each
/// change done is logged and written to the audit log (actor `ctx.actor`, at `now`) before the
/// next starts; the first failure stops the apply, and applying a fresh plan resumes it.
/// Returns the changes made, in order.
pub async fn apply(ctx: &Context, plan: &Plan, now: DateTime<Utc>) -> Result<Vec<Change>, BaselineError> {
    let mut done = Vec::new();
    // Baseline ids by name, including the ones created here.
    let mut ids: Vec<(String, String)> = Vec::new();
    for change in &plan.changes {
        match change {
            Change::Create { document } => {
                let id = ctx.aws.create_baseline(document).await?;
                audit(ctx, now, "create-baseline", &document.name, json!({ "baseline_id": id })).await?;
                ids.push((document.name.clone(), id));
                done.push(change.clone());
            }
            Change::Update { id, fields, document } => {
                ctx.aws.update_baseline(id, document).await?;
                let fields: Vec<_> =
                    fields.iter().map(|f| json!({ "field": f.field, "from": f.from, "to": f.to })).collect();
                audit(
                    ctx,
                    now,
                    "update-baseline",
                    &document.name,
                    json!({ "baseline_id": id, "fields": fields }),
                )
                .await?;
                ids.push((document.name.clone(), id.clone()));
                done.push(change.clone());
            }
            Change::Unchanged { id, name } => ids.push((name.clone(), id.clone())),
            _ => {}
        }
    }
    for change in &plan.changes {
        match change {
            Change::Deregister { id, baseline, patch_group } => {
                ctx.aws.deregister_patch_group(id, patch_group).await?;
                let details = json!({ "baseline_id": id, "patch_group": patch_group });
                audit(ctx, now, "deregister-patch-group", baseline, details).await?;
                done.push(change.clone());
            }
            Change::Register { baseline, patch_group, replaces, .. } => {
                let id = ids
                    .iter()
                    .find(|(name, _)| name == baseline)
                    .map(|(_, id)| id.clone())
                    .ok_or_else(|| BaselineError::Missing(baseline.clone()))?;
                if let Some((old_id, old_name)) = replaces {
                    ctx.aws.deregister_patch_group(old_id, patch_group).await?;
                    let details = json!({ "baseline_id": old_id, "patch_group": patch_group });
                    audit(ctx, now, "deregister-patch-group", old_name, details).await?;
                }
                ctx.aws.register_patch_group(&id, patch_group).await?;
                let details = json!({ "baseline_id": id, "patch_group": patch_group });
                audit(ctx, now, "register-patch-group", baseline, details).await?;
                done.push(change.clone());
            }
            _ => {}
        }
    }
    for change in &plan.changes {
        if let Change::Delete { id, name, patch_groups } = change {
            for group in patch_groups {
                ctx.aws.deregister_patch_group(id, group).await?;
                let details = json!({ "baseline_id": id, "patch_group": group });
                audit(ctx, now, "deregister-patch-group", name, details).await?;
            }
            ctx.aws.delete_baseline(id).await?;
            audit(ctx, now, "delete-baseline", name, json!({ "baseline_id": id })).await?;
            done.push(change.clone());
        }
    }
    for conflict in plan.conflicts() {
        tracing::warn!(conflict = %conflict, "baseline conflict left alone");
    }
    tracing::info!(changes = done.len(), "baselines applied");
    Ok(done)
}

async fn audit(
    ctx: &Context,
    at: DateTime<Utc>,
    action: &str,
    target: &str,
    details: serde_json::Value,
) -> Result<(), StoreError> {
    // Logged as each change is made, so a failed apply still shows what it did.
    tracing::info!(action, target, details = %details, actor = %ctx.actor, "baseline change made");
    ctx.audit(at, action, target, &details).await
}

// ---------------------------------------------------------------------------------------------
// Where an instance stands

/// Which baseline SSM would judge one instance by, as far as patchd is concerned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    /// A `[[baseline]]` for its patch group (and operating system, when known) is registered
    /// for that patch group in SSM.
    OnBaseline,
    /// No `[[baseline]]` lists its patch group.
    Unlisted { patch_group: String },
    /// `[[baseline]]`s list its patch group, but none for its operating system.
    OtherOs { patch_group: String, operating_system: OperatingSystem },
    /// No `Patch Group` / `PatchGroup` tag.
    Untagged,
    /// The configured baseline is not registered for the patch group in SSM (yet): SSM uses
    /// `registered` instead, or the default baseline when that is `None`.
    Unregistered {
        patch_group: String,
        baseline: String,
        operating_system: String,
        registered: Option<String>,
    },
}

impl Placement {
    /// On the AWS default baseline because of the configuration, whatever `patchd apply` does.
    pub fn is_configuration_gap(&self) -> bool {
        matches!(self, Placement::Unlisted { .. } | Placement::OtherOs { .. } | Placement::Untagged)
    }
}

/// The instance's patch group as SSM reads it. SSM documents the two keys as alternatives and
/// does not say which wins when both are set; `Patch Group` is taken first, as the simulator
/// does, so both sides agree.
pub fn patch_group(target: &Target) -> Option<&str> {
    PATCH_GROUP_TAGS
        .iter()
        .filter_map(|key| target.tags.get(*key))
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

/// Where `target` stands with the configured baselines and SSM's registrations: a decision
/// of `patchd check --resolve`, pure so that it is tested with tables.
pub fn placement(target: &Target, baselines: &[Baseline], mappings: &[PatchGroupMapping]) -> Placement {
    let Some(patch_group) = patch_group(target) else { return Placement::Untagged };
    let listing: Vec<&Baseline> =
        baselines.iter().filter(|b| b.patch_groups.iter().any(|pg| pg == patch_group)).collect();
    if listing.is_empty() {
        return Placement::Unlisted { patch_group: patch_group.to_string() };
    }
    // Unknown OS: any baseline listing the patch group may be the one; only an instance none of
    // them can serve is reported, so an unknown OS never raises a false alarm.
    let candidates: Vec<&Baseline> = match target.operating_system() {
        Some(os) => {
            let mine: Vec<&Baseline> = listing.iter().copied().filter(|b| b.operating_system == os).collect();
            if mine.is_empty() {
                return Placement::OtherOs { patch_group: patch_group.to_string(), operating_system: os };
            }
            mine
        }
        None => listing,
    };
    // Matched by name: DescribePatchGroups names the baseline, and `patchd apply` refuses to
    // register over a same-named baseline it does not manage, so a name match is patchd's.
    let registered_to = |os: OperatingSystem| {
        mappings.iter().find(|m| m.patch_group == patch_group && m.baseline.operating_system == os)
    };
    if candidates.iter().any(|b| registered_to(b.operating_system).is_some_and(|m| m.baseline.name == b.name))
    {
        return Placement::OnBaseline;
    }
    let baseline = candidates[0];
    Placement::Unregistered {
        patch_group: patch_group.to_string(),
        baseline: baseline.name.clone(),
        operating_system: baseline.operating_system.to_string(),
        registered: registered_to(baseline.operating_system).map(|m| m.baseline.name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use patchd_aws::BaselineIdentity;

    fn document(name: &str) -> BaselineDocument {
        BaselineDocument {
            name: name.into(),
            description: None,
            operating_system: patchd_aws::OperatingSystem::AmazonLinux2.into(),
            global_filters: vec![],
            rules: vec![BaselineRule {
                filters: vec![BaselineFilter {
                    key: "CLASSIFICATION".into(),
                    values: vec!["Security".into()],
                }],
                approve_after_days: Some(7),
                approve_until: None,
                compliance_level: "CRITICAL".into(),
                enable_non_security: false,
            }],
            approved_patches: vec![],
            approved_patches_compliance_level: "UNSPECIFIED".into(),
            approved_patches_enable_non_security: false,
            rejected_patches: vec![],
            rejected_patches_action: "ALLOW_AS_DEPENDENCY".into(),
        }
    }

    fn remote(id: &str, name: &str, managed: bool) -> RemoteBaseline {
        RemoteBaseline { id: id.into(), document: document(name), patch_groups: vec![], managed }
    }

    fn mapping(group: &str, id: &str, name: &str) -> PatchGroupMapping {
        PatchGroupMapping {
            patch_group: group.into(),
            baseline: BaselineIdentity {
                id: id.into(),
                name: name.into(),
                operating_system: patchd_aws::OperatingSystem::AmazonLinux2.into(),
            },
        }
    }

    #[test]
    fn field_changes_name_each_field_and_rule() {
        let from = document("patchd-a");
        let mut to = document("patchd-a");
        to.rules[0].approve_after_days = Some(3);
        to.rules.push(to.rules[0].clone());
        to.rejected_patches_action = "BLOCK".into();
        let fields: Vec<_> = field_changes(&from, &to).into_iter().map(|f| (f.field, f.from, f.to)).collect();
        assert_eq!(
            fields,
            vec![
                (
                    "rule[1]".into(),
                    Some("CLASSIFICATION=Security after 7d CRITICAL".into()),
                    Some("CLASSIFICATION=Security after 3d CRITICAL".into())
                ),
                ("rule[2]".into(), None, Some("CLASSIFICATION=Security after 3d CRITICAL".into())),
                ("rejected_patches_action".into(), Some("ALLOW_AS_DEPENDENCY".into()), Some("BLOCK".into())),
            ]
        );
        assert!(field_changes(&from, &from).is_empty());
    }

    #[test]
    fn orphans_are_deleted_only_when_pruning() {
        let actual = Actual {
            baselines: vec![remote("pb-1", "patchd-old", true), remote("pb-2", "patchd-hand", false)],
            mappings: vec![mapping("web", "pb-1", "patchd-old")],
        };
        assert_eq!(
            diff(&[], &actual, false).changes,
            vec![Change::Orphan { id: "pb-1".into(), name: "patchd-old".into() }]
        );
        assert_eq!(
            diff(&[], &actual, true).changes,
            vec![Change::Delete {
                id: "pb-1".into(),
                name: "patchd-old".into(),
                patch_groups: vec!["web".into()]
            }]
        );
        assert!(!diff(&[], &actual, false).has_work());
    }
}
