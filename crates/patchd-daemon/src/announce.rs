//! Announcing lasting conditions once: SLA findings that became due soon or breached, and
//! coverage gaps, each published when it starts and remembered in the store so that it is not
//! published again until it ends and starts anew. Events themselves, and where they go, are
//! [`crate::events`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use patchd_config::Config;
use patchd_store::{Announcement, InstanceKey, OpenFindingFilter};
use tracing::{info, warn};

use crate::context::Context;
use crate::events::{judge, CoverageGap, Event};
use crate::sync::SYNC_BATCH_INSTANCES;

const SLA_KIND: &str = "sla";
const GAP_KIND: &str = "coverage-gap";

/// Publishes `SLA Due Soon` / `SLA Breached` for the open findings of `instance_ids` that
/// reached that status since they were last announced, judged at `now`. Returns the number of
/// events published. Never fails: problems are logged.
pub async fn announce_sla(
    ctx: &Context,
    config: &Config,
    instance_ids: &[String],
    now: DateTime<Utc>,
) -> usize {
    if !ctx.events.is_enabled() || instance_ids.is_empty() {
        return 0;
    }
    let kev = load_kev(config);
    let mut published = 0;
    // A chunk of instances at a time, like the sync's batches: a large fleet's open findings
    // are never all in memory at once.
    for chunk in instance_ids.chunks(SYNC_BATCH_INSTANCES) {
        let keys: Vec<InstanceKey<'_>> = chunk.iter().map(|id| ctx.scope.key(id)).collect();
        let filter = OpenFindingFilter { instances: Some(&keys), ..OpenFindingFilter::default() };
        let findings = match ctx.store.open_findings(&filter, None).await {
            Ok(findings) => findings,
            Err(e) => {
                warn!(error = %e, "SLA events: open findings not read");
                continue;
            }
        };
        // A finding announced before and no longer open was remediated: forget its
        // announcement, so that if it reopens it is announced again.
        let prefixes: Vec<String> =
            keys.iter().map(|k| format!("{}/{}/{}/", k.account, k.region, k.instance_id)).collect();
        let open: Vec<String> = findings
            .iter()
            .map(|f| {
                format!(
                    "{}/{}/{}/{}",
                    f.instance.account, f.instance.region, f.instance.instance_id, f.patch.patch_id
                )
            })
            .collect();
        if let Err(e) = ctx.store.retire_announcements(SLA_KIND, &prefixes, &open).await {
            warn!(error = %e, "SLA events: announcements of remediated findings not retired");
        }
        let judged: Vec<Event> = findings
            .iter()
            .filter_map(|f| judge(config, &kev.catalog, f, now))
            .filter(|e| matches!(e, Event::SlaBreached(_)) || ctx.events.wants_due_soon())
            .collect();
        published += announce(ctx, SLA_KIND, judged, now).await;
    }
    published
}

/// Publishes `Coverage Gap Found` for the gaps not announced before. `examined` are all the
/// instances the gaps were looked for on: the announcement of a gap one of them no longer has
/// is forgotten, so that a gap that closes and opens again is announced again.
pub async fn announce_gaps(
    ctx: &Context,
    examined: &[String],
    gaps: Vec<CoverageGap>,
    now: DateTime<Utc>,
) -> usize {
    if !ctx.events.is_enabled() {
        return 0;
    }
    let events: Vec<Event> = gaps.into_iter().map(Event::CoverageGapFound).collect();
    let open: Vec<String> = events.iter().map(|e| e.announcement_key().0).collect();
    // The store compares every announcement with every prefix: a chunk at a time keeps that
    // bounded on a large fleet.
    for chunk in examined.chunks(SYNC_BATCH_INSTANCES) {
        let prefixes: Vec<String> =
            chunk.iter().map(|id| format!("{}/{}/{id}/", ctx.scope.account, ctx.scope.region)).collect();
        if let Err(e) = ctx.store.retire_announcements(GAP_KIND, &prefixes, &open).await {
            warn!(error = %e, "coverage gap events: announcements of closed gaps not retired");
            break;
        }
    }
    announce(ctx, GAP_KIND, events, now).await
}

/// Claims each event's announcement and publishes the claimed ones.
async fn announce(ctx: &Context, kind: &str, events: Vec<Event>, now: DateTime<Utc>) -> usize {
    if events.is_empty() {
        return 0;
    }
    let keys: Vec<(String, u32, &'static str)> = events.iter().map(Event::announcement_key).collect();
    let claims: Vec<Announcement<'_>> = keys
        .iter()
        .map(|(subject, level, state)| Announcement { kind, subject, level: *level, state })
        .collect();
    let claimed = match ctx.store.claim_announcements(&claims, now).await {
        Ok(claimed) => claimed,
        Err(e) => {
            warn!(kind, error = %e, "events not announced: the store failed");
            return 0;
        }
    };
    let fresh: Vec<Event> =
        events.into_iter().zip(claimed).filter_map(|(event, claimed)| claimed.then_some(event)).collect();
    if !fresh.is_empty() {
        info!(kind, events = fresh.len(), "publishing events");
        ctx.events.publish(&fresh).await;
    }
    fresh.len()
}

fn load_kev(config: &Config) -> Arc<crate::feeds::LoadedKev> {
    let loaded = crate::feeds::kev_catalog(config);
    if let Some(problem) = &loaded.problem {
        warn!(error = %problem, "SLA events: ranking without the KEV catalog");
    }
    loaded
}
