//! Writing a compliance sync, an inventory and release dates: bulk statements in one
//! transaction (see the crate documentation), the finding rules being `plan.rs`'s.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use patchd_config::Operation;

use crate::db::{Arg, Db, Query, Tx, TxKind};
use crate::plan::{self, Plan, Prior, PriorFinding};
use crate::read::parsed;
use crate::types::{
    micros, ComplianceSync, InstanceKey, InstanceObservation, PatchState, ReleaseSource, SyncId, SyncReport,
};
use crate::StoreError;

/// Rows a sync must write before the store refreshes the planner's statistics.
const ANALYZE_AFTER_ROWS: usize = 10_000;

const ENSURE_INSTANCES: &str =
    "INSERT INTO instances (account, region, instance_id, ssm_managed, first_seen, last_seen) {rows} \
     ON CONFLICT (account, region, instance_id) DO NOTHING";

// A join, not `(account, region, instance_id) IN (VALUES ...)`: SQLite plans the IN as a scan
// of the whole index, the join as one lookup per key.
const INSTANCE_IDS: &str = "SELECT i.id, i.account, i.region, i.instance_id FROM ({rows}) AS v \
     JOIN instances i ON i.account = v.column1 AND i.region = v.column2 AND i.instance_id = v.column3";

const UPSERT_INSTANCES: &str = "INSERT INTO instances AS i (account, region, instance_id, name, platform, \
       tags, ssm_managed, ping_status, first_seen, last_seen) {rows} \
     ON CONFLICT (account, region, instance_id) DO UPDATE SET name = excluded.name, \
       platform = excluded.platform, tags = excluded.tags, ssm_managed = excluded.ssm_managed, \
       ping_status = excluded.ping_status, \
       first_seen = CASE WHEN excluded.first_seen < i.first_seen THEN excluded.first_seen \
         ELSE i.first_seen END, \
       last_seen = CASE WHEN excluded.last_seen > i.last_seen THEN excluded.last_seen ELSE i.last_seen END";

const SCANNED_AT: &str =
    "SELECT instance_ref, scanned_at FROM compliance_summaries WHERE instance_ref IN ({rows})";

const PRIOR_FINDINGS: &str = "SELECT f.instance_ref, f.patch_ref, p.patch_id, f.state, f.last_seen, \
       f.installed_at \
     FROM findings f JOIN patches p ON p.id = f.patch_ref WHERE f.instance_ref IN ({rows})";

const INSERT_SYNC: &str = "INSERT INTO syncs (source, started_at) VALUES ($1, $2) RETURNING id";

const FINISH_SYNC: &str = "UPDATE syncs SET instances = $1, stale_instances = $2, opened = $3, \
     transitions = $4, remediated = $5, reopened = $6 WHERE id = $7";

// Only a row whose content changes is written, so a re-sync leaves patches untouched.
const UPSERT_PATCHES: &str = "INSERT INTO patches AS p (patch_id, title, classification, severity, \
       cve_ids, first_seen_missing) {rows} \
     ON CONFLICT (patch_id) DO UPDATE SET \
       title = coalesce(excluded.title, p.title), \
       classification = coalesce(excluded.classification, p.classification), \
       severity = coalesce(excluded.severity, p.severity), \
       cve_ids = CASE WHEN excluded.cve_ids = '[]' THEN p.cve_ids ELSE excluded.cve_ids END, \
       first_seen_missing = CASE WHEN p.first_seen_missing IS NULL \
         OR excluded.first_seen_missing < p.first_seen_missing \
         THEN coalesce(excluded.first_seen_missing, p.first_seen_missing) \
         ELSE p.first_seen_missing END \
     WHERE coalesce(excluded.title, p.title) IS DISTINCT FROM p.title \
       OR coalesce(excluded.classification, p.classification) IS DISTINCT FROM p.classification \
       OR coalesce(excluded.severity, p.severity) IS DISTINCT FROM p.severity \
       OR (excluded.cve_ids <> '[]' AND excluded.cve_ids <> p.cve_ids) \
       OR (excluded.first_seen_missing IS NOT NULL \
           AND (p.first_seen_missing IS NULL OR excluded.first_seen_missing < p.first_seen_missing))";

const PATCH_REFS: &str = "SELECT patch_id, id FROM patches WHERE patch_id IN ({rows})";

const WRITE_FINDINGS: &str = "INSERT INTO findings (instance_ref, patch_ref, state, first_seen_missing, \
       last_seen, installed_at) {rows} \
     ON CONFLICT (instance_ref, patch_ref) DO UPDATE SET state = excluded.state, \
       last_seen = excluded.last_seen, installed_at = excluded.installed_at";

const WRITE_TRANSITIONS: &str = "INSERT INTO finding_transitions (instance_ref, patch_ref, from_state, \
       to_state, at, sync_id, command_id) {rows}";

const WRITE_SUMMARIES: &str = "INSERT INTO compliance_summaries (instance_ref, sync_id, scanned_at, \
       command_id, operation, operation_start, operation_end, baseline_id, snapshot_id, patch_group, \
       installed, installed_other, installed_pending_reboot, installed_rejected, missing, failed, \
       not_applicable, available_security_update) {rows} \
     ON CONFLICT (instance_ref) DO UPDATE SET sync_id = excluded.sync_id, \
       scanned_at = excluded.scanned_at, command_id = excluded.command_id, \
       operation = excluded.operation, operation_start = excluded.operation_start, \
       operation_end = excluded.operation_end, baseline_id = excluded.baseline_id, \
       snapshot_id = excluded.snapshot_id, patch_group = excluded.patch_group, \
       installed = excluded.installed, installed_other = excluded.installed_other, \
       installed_pending_reboot = excluded.installed_pending_reboot, \
       installed_rejected = excluded.installed_rejected, missing = excluded.missing, \
       failed = excluded.failed, not_applicable = excluded.not_applicable, \
       available_security_update = excluded.available_security_update";

/// The last item of each key, in input order: a repeated key in one multi-row upsert is an
/// error on PostgreSQL, and "the last observation wins" must not depend on hash order.
pub(crate) fn last_of_each<T, K: std::hash::Hash + Eq>(items: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut last: HashMap<K, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        last.insert(key(item), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    keep.into_iter().map(|i| &items[i]).collect()
}

fn json_error(error: serde_json::Error) -> StoreError {
    StoreError::InvalidInput(format!("cannot encode as JSON: {error}"))
}

pub(crate) async fn record_instances(
    db: &Db,
    observed_at: DateTime<Utc>,
    instances: &[InstanceObservation<'_>],
) -> Result<usize, StoreError> {
    if instances.is_empty() {
        return Ok(0);
    }
    let unique = last_of_each(instances, |o| o.instance);
    let tags: Vec<String> =
        unique.iter().map(|o| serde_json::to_string(o.tags)).collect::<Result<_, _>>().map_err(json_error)?;
    let rows: Vec<(&InstanceObservation<'_>, &str)> =
        unique.into_iter().zip(tags.iter().map(String::as_str)).collect();

    let mut tx = db.begin(TxKind::Exclusive).await?;
    let n = tx
        .execute_rows(UPSERT_INSTANCES, &rows, |(o, tags)| {
            [
                o.instance.account.into(),
                o.instance.region.into(),
                o.instance.instance_id.into(),
                o.name.into(),
                o.platform.into(),
                Arg::json(*tags),
                o.ssm_managed.into(),
                o.ping_status.map(|p| p.as_str()).into(),
                observed_at.into(),
                observed_at.into(),
            ]
        })
        .await?;
    tx.commit().await?;
    Ok(n as usize)
}

/// Sets one source's release date per patch, inserting placeholders for unknown patches;
/// returns how many rows changed.
pub(crate) async fn set_release_dates(
    db: &Db,
    rows: &[(&str, DateTime<Utc>, ReleaseSource)],
) -> Result<usize, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut tx = db.begin(TxKind::Exclusive).await?;
    let mut changed = 0;
    for source in ReleaseSource::ALL {
        let column = release_column(*source);
        let of_source: Vec<&(&str, DateTime<Utc>, ReleaseSource)> =
            rows.iter().filter(|r| r.2 == *source).collect();
        let sql = format!(
            "INSERT INTO patches AS p (patch_id, {column}) {{rows}} \
             ON CONFLICT (patch_id) DO UPDATE SET {column} = excluded.{column} \
             WHERE p.{column} IS DISTINCT FROM excluded.{column}"
        );
        changed += tx.execute_rows(&sql, &of_source, |(id, at, _)| [(*id).into(), (*at).into()]).await?;
    }
    tx.commit().await?;
    Ok(changed as usize)
}

fn release_column(source: ReleaseSource) -> &'static str {
    match source {
        ReleaseSource::Ssm => "ssm_released_at",
        ReleaseSource::Advisory => "advisory_released_at",
    }
}

/// Resolves instance keys to ids, creating the instances a sync or an invocation names
/// before inventory has seen them (`first_seen = last_seen` = the instant given with each).
/// `ids[i]` belongs to `keys[i]`.
pub(crate) async fn instance_refs(
    tx: &mut Tx<'_>,
    keys: &[(InstanceKey<'_>, DateTime<Utc>)],
) -> Result<Vec<i64>, StoreError> {
    tx.execute_rows(ENSURE_INSTANCES, keys, |(k, at)| {
        [k.account.into(), k.region.into(), k.instance_id.into(), true.into(), (*at).into(), (*at).into()]
    })
    .await?;
    let position: HashMap<InstanceKey<'_>, usize> =
        keys.iter().enumerate().map(|(i, (k, _))| (*k, i)).collect();
    let mut ids: Vec<Option<i64>> = vec![None; keys.len()];
    tx.fetch_rows(
        INSTANCE_IDS,
        keys,
        |(k, _)| [k.account.into(), k.region.into(), k.instance_id.into()],
        |r| {
            let (account, region, instance_id) =
                (r.text("account")?, r.text("region")?, r.text("instance_id")?);
            if let Some(&i) =
                position.get(&InstanceKey { account: &account, region: &region, instance_id: &instance_id })
            {
                ids[i] = Some(r.int("id")?);
            }
            Ok(())
        },
    )
    .await?;
    keys.iter()
        .map(|(k, _)| {
            ids[position[k]].ok_or_else(|| StoreError::corrupt("instances.instance_id", k.instance_id))
        })
        .collect()
}

pub(crate) async fn record_sync(db: &Db, sync: &ComplianceSync<'_>) -> Result<SyncReport, StoreError> {
    let scans = plan::dedup_scans(sync.scans);
    let mut tx = db.begin(TxKind::Exclusive).await?;

    let sync_id = tx
        .fetch_one(Query::new(INSERT_SYNC).bind(sync.source).bind(micros(sync.started_at)))
        .await?
        .int("id")?;
    let keys: Vec<(InstanceKey<'_>, DateTime<Utc>)> =
        scans.iter().map(|s| (s.instance, micros(s.observed_at))).collect();
    let refs = instance_refs(&mut tx, &keys).await?;

    let mut scanned_at: HashMap<i64, DateTime<Utc>> = HashMap::with_capacity(refs.len());
    tx.fetch_rows(
        SCANNED_AT,
        &refs,
        |id| [(*id).into()],
        |r| {
            scanned_at.insert(r.int("instance_ref")?, r.time("scanned_at")?);
            Ok(())
        },
    )
    .await?;
    let mut prior = Prior::new();
    tx.fetch_rows(
        PRIOR_FINDINGS,
        &refs,
        |id| [(*id).into()],
        |r| {
            let finding = PriorFinding {
                patch_ref: r.int("patch_ref")?,
                state: parsed(r, "state", PatchState::parse)?,
                last_seen: r.time("last_seen")?,
                installed_at: r.opt_time("installed_at")?,
            };
            prior.entry(r.int("instance_ref")?).or_default().insert(r.text("patch_id")?, finding);
            Ok(())
        },
    )
    .await?;
    let plan = plan::plan(&scans, &refs, &scanned_at, &prior);

    let cves: Vec<String> = plan
        .patches
        .iter()
        .map(|p| serde_json::Value::from(p.cve_ids.iter().copied().collect::<Vec<&str>>()).to_string())
        .collect();
    let patches: Vec<_> = plan.patches.iter().zip(&cves).collect();
    tx.execute_rows(UPSERT_PATCHES, &patches, |(p, cves)| {
        [
            p.patch_id.into(),
            p.title.into(),
            p.classification.into(),
            p.severity.into(),
            Arg::json(cves.as_str()),
            p.first_seen_missing.into(),
        ]
    })
    .await?;

    let mut unknown: Vec<&str> = plan
        .findings
        .iter()
        .filter(|f| f.patch_ref.is_none())
        .map(|f| f.patch_id)
        .chain(plan.transitions.iter().filter(|t| t.patch_ref.is_none()).map(|t| t.patch_id))
        .collect();
    unknown.sort_unstable();
    unknown.dedup();
    let mut patch_refs: HashMap<String, i64> = HashMap::with_capacity(unknown.len());
    tx.fetch_rows(
        PATCH_REFS,
        &unknown,
        |id| [(*id).into()],
        |r| {
            patch_refs.insert(r.text("patch_id")?, r.int("id")?);
            Ok(())
        },
    )
    .await?;
    let resolve = |known: Option<i64>, patch_id: &str| {
        known
            .or_else(|| patch_refs.get(patch_id).copied())
            .ok_or_else(|| StoreError::corrupt("patches.patch_id", patch_id))
    };

    // (instance ref, patch ref, finding), in key order: the inserts then walk the primary
    // key's B-tree from left to right.
    let mut findings = plan
        .findings
        .iter()
        .map(|f| Ok((f.instance_ref, resolve(f.patch_ref, f.patch_id)?, f)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    findings.sort_unstable_by_key(|(instance_ref, patch_ref, _)| (*instance_ref, *patch_ref));
    let transitions = plan
        .transitions
        .iter()
        .map(|t| Ok((resolve(t.patch_ref, t.patch_id)?, t)))
        .collect::<Result<Vec<_>, StoreError>>()?;

    tx.execute_rows(WRITE_FINDINGS, &findings, |(instance_ref, patch_ref, f)| {
        [
            (*instance_ref).into(),
            (*patch_ref).into(),
            f.state.as_str().into(),
            f.first_seen_missing.into(),
            f.last_seen.into(),
            f.installed_at.into(),
        ]
    })
    .await?;
    tx.execute_rows(WRITE_TRANSITIONS, &transitions, |(patch_ref, t)| {
        [
            t.instance_ref.into(),
            (*patch_ref).into(),
            t.from.map(PatchState::as_str).into(),
            t.to.as_str().into(),
            t.at.into(),
            sync_id.into(),
            t.command_id.into(),
        ]
    })
    .await?;
    tx.execute_rows(WRITE_SUMMARIES, &plan.summaries, |s| {
        let n = &s.counts;
        [
            s.instance_ref.into(),
            sync_id.into(),
            s.scanned_at.into(),
            s.scan.command_id.into(),
            s.scan.operation.map(Operation::as_ssm).into(),
            s.scan.operation_start.map(micros).into(),
            s.scan.operation_end.map(micros).into(),
            s.scan.baseline_id.into(),
            s.scan.snapshot_id.into(),
            s.scan.patch_group.into(),
            i64::from(n.installed).into(),
            i64::from(n.installed_other).into(),
            i64::from(n.installed_pending_reboot).into(),
            i64::from(n.installed_rejected).into(),
            i64::from(n.missing).into(),
            i64::from(n.failed).into(),
            i64::from(n.not_applicable).into(),
            i64::from(n.available_security_update).into(),
        ]
    })
    .await?;
    let report = report(SyncId(sync_id), &plan);
    let r = &report;
    tx.execute(
        Query::new(FINISH_SYNC)
            .bind(r.instances as i64)
            .bind(r.stale_instances as i64)
            .bind(r.opened as i64)
            .bind(r.transitions as i64)
            .bind(r.remediated as i64)
            .bind(r.reopened as i64)
            .bind(r.sync_id.0),
    )
    .await?;
    tx.commit().await?;

    // A first sync can take a table from empty to a million rows. Until the planner's
    // statistics catch up (PostgreSQL's autovacuum gets there a minute or more later), it
    // plans listings for an empty table: a bitmap scan and a sort of every open finding for
    // each page, instead of an index range scan. The sync is committed whatever happens here.
    if findings.len() + transitions.len() >= ANALYZE_AFTER_ROWS {
        if let Err(error) = db.execute(Query::new(db.dialect().analyze())).await {
            tracing::warn!(%error, "cannot refresh the query planner's statistics after a large sync");
        }
    }
    Ok(report)
}

fn report(sync_id: SyncId, plan: &Plan<'_>) -> SyncReport {
    SyncReport {
        sync_id,
        instances: plan.instances,
        stale_instances: plan.stale_instances,
        opened: plan.opened,
        transitions: plan.transitions.len(),
        remediated: plan.remediated,
        reopened: plan.reopened,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_of_each_key_is_kept_in_input_order() {
        assert_eq!(
            last_of_each(&[("a", 1), ("b", 2), ("a", 3)], |x| x.0),
            [&("b", 2), &("a", 3)],
            "the last of each key, in input order"
        );
    }
}
