//! Promotion: a task that installs exactly what another window's last successful run
//! installed, however many patches were released since.
//!
//! Two halves, both run by [`window`](crate::window):
//!
//! - **Capture.** When an install task of a window some task promotes from ends, patchd reads
//!   back from SSM what it installed on each node its command succeeded on: the patches whose
//!   InstalledTime falls within that node's Install operation. A reading that misses a node
//!   is not recorded at all, so an incomplete set can never be promoted.
//! - **Promote.** When a promoting task starts it chooses the source run once (the store keeps
//!   the choice, so a resumed task installs the same set), puts the set in S3 as an install
//!   list, and sends AWS-RunPatchBaseline with `InstallOverrideList` pointing at it. The
//!   nodes install exactly the listed patches they miss and still report compliance against
//!   their baseline, so a patch released after the source run stays an open finding, its
//!   SLA clock running.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use patchd_aws::CommandStatus;
use patchd_aws::{install_list_url, ListedPatch, PatchListing};
use patchd_config::{Operation, Promotion};
use patchd_store::{AuditEntry, PromotedPatch, PromotionRecord, StoreError, WindowTaskId};
use tracing::{info, warn};

use crate::context::Context;
use crate::sync::{with_retries, ReadRetry};

/// DescribeInstancePatchStates takes at most 50 instance ids.
const STATE_IDS: usize = 50;
/// SSM reports InstalledTime to the second while operation times carry milliseconds.
const CLOCK_SLACK_SECONDS: i64 = 1;

/// What [`capture_installs`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Instances whose installs were read.
    pub instances: usize,
    pub patches: usize,
    /// Instances that could not be read; the capture was not recorded when non-zero.
    pub unread: usize,
    pub calls: usize,
}

/// Why a promoting task could not start.
#[derive(Debug, thiserror::Error)]
pub enum PromotionError {
    #[error(
        "window `{from}` has no succeeded run whose installs patchd read, so there is nothing to promote; \
         run it first (`patchd run-now {from}`)"
    )]
    NoSource { from: String },
    #[error("the install list could not be put at {url}: {source}")]
    PutList { url: String, source: patchd_aws::AwsError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads and records what install task `task` installed on the nodes its command succeeded on.
pub async fn capture_installs(
    ctx: &Context,
    task: WindowTaskId,
    retry: &ReadRetry,
) -> Result<Capture, StoreError> {
    let succeeded: Vec<String> = ctx
        .store
        .invocations(task)
        .await?
        .into_iter()
        .filter(|i| i.status == CommandStatus::Success)
        .map(|i| i.instance_id)
        .collect();
    let mut capture = Capture { instances: 0, patches: 0, unread: 0, calls: 0 };
    let mut windows: HashMap<String, (DateTime<Utc>, DateTime<Utc>)> = HashMap::new();
    for chunk in succeeded.chunks(STATE_IDS) {
        let read = with_retries(retry, "DescribeInstancePatchStates", || ctx.aws.patch_states(chunk)).await;
        capture.calls += read.attempts;
        match read.result {
            Ok(states) => {
                for state in states {
                    if let (Some(Operation::Install), Some(start), Some(end)) =
                        (state.operation, state.operation_started_at, state.operation_ended_at)
                    {
                        windows.insert(state.instance_id, (start, end));
                    }
                }
            }
            Err(error) => warn!(task = %task, error = %error, "installs not read: patch states unavailable"),
        }
    }
    let mut by_id: BTreeMap<String, PromotedPatch> = BTreeMap::new();
    for instance in &succeeded {
        let Some(&(start, end)) = windows.get(instance) else {
            // Its patch states were unreadable, or an operation after the install replaced
            // them: what the install put there can no longer be told apart.
            capture.unread += 1;
            continue;
        };
        let read = with_retries(retry, "DescribeInstancePatches", || {
            ctx.aws.instance_patches(instance, PatchListing::Taken)
        })
        .await;
        capture.calls += read.attempts;
        let Ok(patches) = read.result else {
            capture.unread += 1;
            continue;
        };
        capture.instances += 1;
        let slack = Duration::seconds(CLOCK_SLACK_SECONDS);
        for patch in patches {
            let during = patch.installed_at.is_some_and(|at| at >= start - slack && at <= end + slack);
            if !during || patch.kb_id.trim().is_empty() {
                continue;
            }
            by_id
                .entry(patch.kb_id.clone())
                .or_insert_with(|| PromotedPatch {
                    id: patch.kb_id.clone(),
                    title: patch.title.clone(),
                    classification: patch.classification.clone(),
                    severity: patch.severity.clone(),
                    instances: 0,
                })
                .instances += 1;
        }
    }
    capture.patches = by_id.len();
    if capture.unread > 0 {
        warn!(task = %task, unread = capture.unread,
            "installs not recorded: a promotion may only repeat a set read in full");
        return Ok(capture);
    }
    let patches: Vec<PromotedPatch> = by_id.into_values().collect();
    ctx.store.record_task_installs(task, capture.instances as u32, &patches, Utc::now()).await?;
    info!(task = %task, instances = capture.instances, patches = capture.patches, "installs recorded for promotion");
    Ok(capture)
}

/// The S3 key of a task's install list: one per run and task, so a resumed task overwrites
/// its own list with the same content and never another run's.
fn list_key(prefix: &str, run_id: &str, task_name: &str) -> String {
    let task: String = task_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect();
    format!("{prefix}{run_id}/{task}.yaml")
}

/// Chooses (or, resumed, reads back) the set promoting task `task` installs, and puts its
/// install list in S3 unless the set is empty.
pub async fn prepare(
    ctx: &Context,
    run_id: &str,
    task: WindowTaskId,
    task_name: &str,
    promotion: &Promotion,
) -> Result<PromotionRecord, PromotionError> {
    let from = &promotion.from.value;
    let chosen = match ctx.store.promotion(task).await? {
        Some(chosen) => chosen,
        None => {
            let source = ctx
                .store
                .promotion_source(from)
                .await?
                .ok_or_else(|| PromotionError::NoSource { from: from.clone() })?;
            let key = list_key(&promotion.prefix, run_id, task_name);
            let record = PromotionRecord {
                from_window: from.clone(),
                source_run: source.run,
                list_url: install_list_url(&promotion.bucket, &key),
                patches: source.patches,
                decided_at: Utc::now(),
            };
            let details = serde_json::json!({
                "task": task_name,
                "from_window": from,
                "source_run": source.run.get(),
                "source_recorded_as": source.recorded_as,
                "source_ended_at": source.ended_at,
                "install_list": record.list_url,
                "patches": record.patches.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
            });
            let audit = AuditEntry {
                at: record.decided_at,
                actor: &ctx.actor,
                action: "promote",
                target: Some(task_name),
                command_id: None,
                request_id: None,
                details: Some(&details),
            };
            ctx.store.record_promotion(task, &record, &audit).await?
        }
    };
    if !chosen.patches.is_empty() {
        let (bucket, key) = split_s3_url(&chosen.list_url);
        let listed: Vec<ListedPatch> =
            chosen.patches.iter().map(|p| ListedPatch { id: p.id.clone(), title: p.title.clone() }).collect();
        ctx.aws
            .put_install_list(bucket, key, &listed)
            .await
            .map_err(|source| PromotionError::PutList { url: chosen.list_url.clone(), source })?;
    }
    info!(task = task_name, from = %chosen.from_window, source_run = %chosen.source_run,
        patches = chosen.patches.len(), list = %chosen.list_url, "promotion chosen");
    Ok(chosen)
}

/// `s3://bucket/key` as written by [`install_list_url`].
fn split_s3_url(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("s3://").unwrap_or(url);
    rest.split_once('/').unwrap_or((rest, ""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_keys_are_per_run_and_task_and_safe_in_a_url() {
        assert_eq!(
            list_key("patchd/install-lists/", "r-1", "install prod/eu"),
            "patchd/install-lists/r-1/install_prod_eu.yaml"
        );
        let url = install_list_url("acme-lists", &list_key("", "r-1", "prod"));
        assert_eq!(split_s3_url(&url), ("acme-lists", "r-1/prod.yaml"));
    }
}
