//! The queries reports need, and the decoders of the columns other modules read too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::db::{Query, Row, TxKind};
use crate::dialect::Dialect;
use crate::types::*;
use crate::{Store, StoreError};

/// A text column holding one of a closed set of values.
pub(crate) fn parsed<T>(
    row: &Row,
    column: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text = row.text(column)?;
    parse(&text).ok_or_else(|| StoreError::corrupt(column, text))
}

pub(crate) fn opt_parsed<T>(
    row: &Row,
    column: &'static str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, StoreError> {
    match row.opt_text(column)? {
        None => Ok(None),
        Some(text) => parse(&text).map(Some).ok_or_else(|| StoreError::corrupt(column, text)),
    }
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(row: &Row, column: &'static str) -> Result<T, StoreError> {
    let text = row.text(column)?;
    serde_json::from_str(&text).map_err(|_| StoreError::corrupt(column, text))
}

/// The `open_findings` column of the aggregates.
fn open_count(row: &Row) -> Result<u64, StoreError> {
    let open = row.int("open_findings")?;
    u64::try_from(open).map_err(|_| StoreError::corrupt("open_findings", open.to_string()))
}

fn count(row: &Row, column: &'static str) -> Result<u32, StoreError> {
    let n = row.int(column)?;
    u32::try_from(n).map_err(|_| StoreError::corrupt(column, n.to_string()))
}

fn instance_columns(d: Dialect) -> String {
    format!("i.id, i.account, i.region, i.instance_id, i.name, i.platform, {}", d.json_column("i.tags"))
}

fn instance_info(row: &Row) -> Result<InstanceInfo, StoreError> {
    Ok(InstanceInfo {
        account: row.text("account")?,
        region: row.text("region")?,
        instance_id: row.text("instance_id")?,
        name: row.opt_text("name")?,
        platform: row.opt_text("platform")?,
        tags: json::<BTreeMap<String, String>>(row, "tags")?,
    })
}

fn patch_columns(d: Dialect) -> String {
    format!(
        "p.id, p.patch_id, p.title, p.classification, p.severity, {}, p.ssm_released_at, \
         p.advisory_released_at, p.advisory_source, p.first_seen_missing",
        d.json_column("p.cve_ids")
    )
}

fn patch_record(row: &Row) -> Result<PatchRecord, StoreError> {
    Ok(PatchRecord {
        patch_id: row.text("patch_id")?,
        title: row.opt_text("title")?,
        classification: row.opt_text("classification")?,
        severity: row.opt_text("severity")?,
        cve_ids: json(row, "cve_ids")?,
        ssm_release: row.opt_time("ssm_released_at")?,
        advisory_release: row.opt_time("advisory_released_at")?,
        advisory_source: row.opt_text("advisory_source")?,
        first_seen_missing: row.opt_time("first_seen_missing")?,
    })
}

/// A finding row before its instance and patch are attached.
struct RawFinding {
    instance_ref: i64,
    patch_ref: i64,
    state: PatchState,
    first_seen_missing: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    installed_at: Option<DateTime<Utc>>,
}

fn raw_finding(row: &Row) -> Result<RawFinding, StoreError> {
    Ok(RawFinding {
        instance_ref: row.int("instance_ref")?,
        patch_ref: row.int("patch_ref")?,
        state: parsed(row, "state", PatchState::parse)?,
        first_seen_missing: row.time("first_seen_missing")?,
        last_seen: row.time("last_seen")?,
        installed_at: row.opt_time("installed_at")?,
    })
}

const FINDING_COLUMNS: &str = "SELECT f.instance_ref, f.patch_ref, f.state, f.first_seen_missing, \
    f.last_seen, f.installed_at FROM findings f";

/// The finding listing's SQL. Its ORDER BY is always an index order (the primary key, or
/// `findings_remediated` for remediated findings), so a page is an index range scan from the
/// cursor, however deep into the listing it starts.
fn findings_sql<'a>(query: &FindingQuery<'a>) -> Query<'a> {
    let mut b = Query::default();
    let mut conditions: Vec<String> = Vec::new();
    let remediated = query.remediated_order();
    if query.status == Some(FindingStatus::Open) {
        conditions.push("f.installed_at IS NULL".into());
    }
    if remediated {
        conditions.push("f.installed_at IS NOT NULL".into());
    }
    if let Some(since) = query.remediated_since {
        conditions.push(format!("f.installed_at >= {}", b.arg(micros(since))));
    }
    if let Some(until) = query.remediated_until {
        conditions.push(format!("f.installed_at < {}", b.arg(micros(until))));
    }
    if let Some(key) = query.instance {
        let (a, r, i) = (b.arg(key.account), b.arg(key.region), b.arg(key.instance_id));
        conditions.push(format!(
            "f.instance_ref = (SELECT id FROM instances WHERE account = {a} AND region = {r} AND \
             instance_id = {i})"
        ));
    }
    if let Some(patch_id) = query.patch_id {
        conditions
            .push(format!("f.patch_ref = (SELECT id FROM patches WHERE patch_id = {})", b.arg(patch_id)));
    }
    if let Some(after) = query.after {
        let (i, p) = (after.instance_ref, after.patch_ref);
        match after.installed_at {
            Some(at) if remediated => {
                let (at, i, p) = (b.arg(at), b.arg(i), b.arg(p));
                conditions.push(format!("(f.installed_at, f.instance_ref, f.patch_ref) > ({at}, {i}, {p})"));
            }
            _ => {
                let (i, p) = (b.arg(i), b.arg(p));
                conditions.push(format!("(f.instance_ref, f.patch_ref) > ({i}, {p})"));
            }
        }
    }
    b.sql = FINDING_COLUMNS.into();
    if !conditions.is_empty() {
        b.sql.to_mut().push_str(" WHERE ");
        b.sql.to_mut().push_str(&conditions.join(" AND "));
    }
    b.sql.to_mut().push_str(if remediated {
        " ORDER BY f.installed_at, f.instance_ref, f.patch_ref"
    } else {
        " ORDER BY f.instance_ref, f.patch_ref"
    });
    if let Some(limit) = query.limit {
        // One more than asked: its presence says whether there is a next page.
        let n = b.arg(i64::from(limit) + 1);
        b.sql.to_mut().push_str(&format!(" LIMIT {n}"));
    }
    b
}

/// Ids as the JSON array `in_json` expects, chunked so no single statement gets huge.
fn id_chunks(ids: &[i64]) -> Vec<String> {
    ids.chunks(50_000).map(|chunk| serde_json::Value::from(chunk.to_vec()).to_string()).collect()
}

/// The WHERE clause of an open-finding filter. Instances are matched by one text key per
/// instance, `account/region/id` (none of the three contains a slash), so a set of any size is
/// one bind.
fn open_conditions<'a>(b: &mut Query<'a>, d: Dialect, filter: &OpenFindingFilter<'a>) -> String {
    let mut conditions = vec!["f.installed_at IS NULL".to_string()];
    if let Some(patch_ids) = filter.patch_ids {
        let n = b.arg(serde_json::Value::from(patch_ids.to_vec()).to_string());
        conditions.push(format!(
            "f.patch_ref IN (SELECT id FROM patches WHERE patch_id IN ({}))",
            d.json_texts(&n)
        ));
    }
    if let Some(instances) = filter.instances {
        let keys: Vec<String> =
            instances.iter().map(|k| format!("{}/{}/{}", k.account, k.region, k.instance_id)).collect();
        let n = b.arg(serde_json::Value::from(keys).to_string());
        conditions.push(format!(
            "f.instance_ref IN (SELECT id FROM instances WHERE account || '/' || region || '/' || instance_id \
             IN ({}))",
            d.json_texts(&n)
        ));
    }
    conditions.join(" AND ")
}

fn open_counts_sql<'a>(d: Dialect, filter: &OpenFindingFilter<'a>) -> Query<'a> {
    let mut b = Query::default();
    let conditions = open_conditions(&mut b, d, filter);
    b.sql = format!(
        "SELECT {}, c.open_findings FROM (SELECT f.patch_ref, COUNT(*) AS open_findings \
         FROM findings f WHERE {conditions} GROUP BY f.patch_ref) c \
         JOIN patches p ON p.id = c.patch_ref ORDER BY p.patch_id",
        patch_columns(d)
    )
    .into();
    b
}

fn open_list_sql<'a>(d: Dialect, filter: &OpenFindingFilter<'a>, limit: Option<u32>) -> Query<'a> {
    let mut b = Query::default();
    let conditions = open_conditions(&mut b, d, filter);
    b.sql = format!(
        "SELECT f.instance_ref, f.patch_ref, f.state, f.first_seen_missing, f.last_seen, f.installed_at \
         FROM findings f JOIN instances i ON i.id = f.instance_ref JOIN patches p ON p.id = f.patch_ref \
         WHERE {conditions} ORDER BY i.account, i.region, i.instance_id, p.patch_id"
    )
    .into();
    if let Some(limit) = limit {
        let n = b.arg(i64::from(limit));
        b.sql.to_mut().push_str(&format!(" LIMIT {n}"));
    }
    b
}

/// Open findings counted by the operating system of their instance and where their patch's
/// release date comes from: the figures behind "how many clocks are still estimated".
fn open_clock_counts_sql<'a>(d: Dialect, filter: &OpenFindingFilter<'a>) -> Query<'a> {
    let mut b = Query::default();
    let conditions = open_conditions(&mut b, d, filter);
    b.sql = format!(
        "SELECT i.platform, p.advisory_source, \
         CASE WHEN p.advisory_released_at IS NOT NULL THEN 'advisory' \
              WHEN p.ssm_released_at IS NOT NULL THEN 'ssm' ELSE 'first-seen' END AS clock, \
         COUNT(*) AS open_findings \
         FROM findings f JOIN instances i ON i.id = f.instance_ref JOIN patches p ON p.id = f.patch_ref \
         WHERE {conditions} GROUP BY 1, 2, 3 ORDER BY 1, 3, 2"
    )
    .into();
    b
}

impl Store {
    /// Open findings per (instance platform, clock source, advisory feed); see
    /// [`ClockCount`].
    pub async fn open_clock_counts(
        &self,
        filter: &OpenFindingFilter<'_>,
    ) -> Result<Vec<ClockCount>, StoreError> {
        let rows = self.db.fetch_all(open_clock_counts_sql(self.db.dialect(), filter)).await?;
        rows.iter()
            .map(|row| {
                let clock = row.text("clock")?;
                Ok(ClockCount {
                    platform: row.opt_text("platform")?,
                    source: ReleaseOrigin::parse(&clock, row.opt_text("advisory_source")?)
                        .ok_or_else(|| StoreError::corrupt("clock", clock.clone()))?,
                    open: open_count(row)?,
                })
            })
            .collect()
    }

    /// Findings with their instance and patch; see [`FindingQuery`]. Each page is read in
    /// one snapshot, and `next` continues after its last finding.
    pub async fn findings(&self, query: &FindingQuery<'_>) -> Result<FindingPage, StoreError> {
        // A page of nothing could not say whether more follow.
        let query = &FindingQuery { limit: query.limit.map(|n| n.max(1)), ..*query };
        let mut findings = self.finding_records(findings_sql(query)).await?;
        let more = query.limit.is_some_and(|limit| findings.len() > limit as usize);
        if let Some(limit) = query.limit {
            findings.truncate(limit as usize);
        }
        let next = if more { findings.last().map(FindingRecord::cursor) } else { None };
        Ok(FindingPage { findings, next })
    }

    /// Open findings per patch, with the patch: what a summary of a whole fleet needs, in
    /// one aggregate query instead of a million rows.
    pub async fn open_finding_counts(
        &self,
        filter: &OpenFindingFilter<'_>,
    ) -> Result<Vec<PatchOpenCount>, StoreError> {
        let rows = self.db.fetch_all(open_counts_sql(self.db.dialect(), filter)).await?;
        rows.iter()
            .map(|row| Ok(PatchOpenCount { patch: Arc::new(patch_record(row)?), open: open_count(row)? }))
            .collect()
    }

    /// Open findings the filter selects, ordered by instance (account, region, id) then patch
    /// id, at most `limit` of them. With a patch filter this reads through the patch index,
    /// so the few patches a report lists first cost a few thousand rows, not the fleet.
    pub async fn open_findings(
        &self,
        filter: &OpenFindingFilter<'_>,
        limit: Option<u32>,
    ) -> Result<Vec<FindingRecord>, StoreError> {
        self.finding_records(open_list_sql(self.db.dialect(), filter, limit)).await
    }

    /// The database's plans for [`Store::open_finding_counts`] and [`Store::open_findings`],
    /// one line per step, to check that they read through indexes.
    pub async fn explain_open_findings(
        &self,
        filter: &OpenFindingFilter<'_>,
        limit: Option<u32>,
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let d = self.db.dialect();
        let counts = self.explain(open_counts_sql(d, filter)).await?;
        let listing = self.explain(open_list_sql(d, filter, limit)).await?;
        Ok((counts, listing))
    }

    async fn explain(&self, mut query: Query<'_>) -> Result<Vec<String>, StoreError> {
        let (explain, step) = self.db.dialect().explain();
        query.sql = format!("{explain} {}", query.sql).into();
        let rows = self.db.fetch_all(query).await?;
        rows.iter().map(|r| r.text(step)).collect()
    }

    /// Runs a query selecting finding columns and attaches each finding's instance and
    /// patch, all in one read snapshot.
    async fn finding_records(&self, query: Query<'_>) -> Result<Vec<FindingRecord>, StoreError> {
        let d = self.db.dialect();
        let mut tx = self.db.begin(TxKind::Snapshot).await?;
        let rows = tx.fetch_all(query).await?;
        let raw = rows.iter().map(raw_finding).collect::<Result<Vec<_>, _>>()?;
        drop(rows);

        let mut instance_ids: Vec<i64> = raw.iter().map(|f| f.instance_ref).collect();
        instance_ids.sort_unstable();
        instance_ids.dedup();
        let mut patch_ids: Vec<i64> = raw.iter().map(|f| f.patch_ref).collect();
        patch_ids.sort_unstable();
        patch_ids.dedup();

        let mut instances: HashMap<i64, Arc<InstanceInfo>> = HashMap::with_capacity(instance_ids.len());
        let sql =
            format!("SELECT {} FROM instances i WHERE i.id IN ({})", instance_columns(d), d.json_ints("$1"));
        for ids in id_chunks(&instance_ids) {
            for row in tx.fetch_all(Query::new(sql.as_str()).bind(ids)).await? {
                instances.insert(row.int("id")?, Arc::new(instance_info(&row)?));
            }
        }
        let mut patches: HashMap<i64, Arc<PatchRecord>> = HashMap::with_capacity(patch_ids.len());
        let sql = format!("SELECT {} FROM patches p WHERE p.id IN ({})", patch_columns(d), d.json_ints("$1"));
        for ids in id_chunks(&patch_ids) {
            for row in tx.fetch_all(Query::new(sql.as_str()).bind(ids)).await? {
                patches.insert(row.int("id")?, Arc::new(patch_record(&row)?));
            }
        }
        tx.commit().await?;
        raw.into_iter()
            .map(|f| {
                let instance = instances.get(&f.instance_ref).cloned().ok_or_else(|| {
                    StoreError::corrupt("findings.instance_ref", f.instance_ref.to_string())
                })?;
                let patch = patches
                    .get(&f.patch_ref)
                    .cloned()
                    .ok_or_else(|| StoreError::corrupt("findings.patch_ref", f.patch_ref.to_string()))?;
                Ok(FindingRecord {
                    fleet_first_seen_missing: patch.first_seen_missing.unwrap_or(f.first_seen_missing),
                    instance,
                    patch,
                    state: f.state,
                    first_seen_missing: f.first_seen_missing,
                    last_seen: f.last_seen,
                    installed_at: f.installed_at,
                    cursor: FindingCursor {
                        installed_at: f.installed_at,
                        instance_ref: f.instance_ref,
                        patch_ref: f.patch_ref,
                    },
                })
            })
            .collect()
    }

    /// The database's plan for a finding listing (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's
    /// EXPLAIN), one line per step: to check that listings use the indexes.
    pub async fn explain_findings(&self, query: &FindingQuery<'_>) -> Result<Vec<String>, StoreError> {
        self.explain(findings_sql(query)).await
    }

    /// Every instance with its latest compliance summary, ordered by account, region and id.
    pub async fn instances(&self) -> Result<Vec<InstanceRecord>, StoreError> {
        let sql = format!(
            "SELECT {}, i.ssm_managed, i.ping_status, i.first_seen, i.last_seen, \
               s.sync_id, s.scanned_at, s.command_id, s.operation, s.operation_start, s.operation_end, \
               s.baseline_id, s.snapshot_id, s.patch_group, s.installed, s.installed_other, \
               s.installed_pending_reboot, s.installed_rejected, s.missing, s.failed, s.not_applicable, \
               s.available_security_update \
             FROM instances i LEFT JOIN compliance_summaries s ON s.instance_ref = i.id \
             ORDER BY i.account, i.region, i.instance_id",
            instance_columns(self.db.dialect())
        );
        let rows = self.db.fetch_all(Query::new(sql)).await?;
        rows.iter().map(instance_record).collect()
    }

    /// Every known patch, ordered by id.
    pub async fn patches(&self) -> Result<Vec<PatchRecord>, StoreError> {
        let sql = format!("SELECT {} FROM patches p ORDER BY p.patch_id", patch_columns(self.db.dialect()));
        let rows = self.db.fetch_all(Query::new(sql)).await?;
        rows.iter().map(patch_record).collect()
    }

    pub async fn patch(&self, patch_id: &str) -> Result<Option<PatchRecord>, StoreError> {
        let sql = format!("SELECT {} FROM patches p WHERE p.patch_id = $1", patch_columns(self.db.dialect()));
        let row = self.db.fetch_optional(Query::new(sql).bind(patch_id)).await?;
        row.as_ref().map(patch_record).transpose()
    }

    /// Every state change of one finding, oldest first; empty when there is no such finding.
    pub async fn finding_history(
        &self,
        instance: InstanceKey<'_>,
        patch_id: &str,
    ) -> Result<Vec<TransitionRecord>, StoreError> {
        let query = Query::new(
            "SELECT t.from_state, t.to_state, t.at, t.sync_id, t.command_id FROM finding_transitions t \
             JOIN instances i ON i.id = t.instance_ref JOIN patches p ON p.id = t.patch_ref \
             WHERE i.account = $1 AND i.region = $2 AND i.instance_id = $3 AND p.patch_id = $4 \
             ORDER BY t.at, t.id",
        )
        .bind(instance.account)
        .bind(instance.region)
        .bind(instance.instance_id)
        .bind(patch_id);
        let rows = self.db.fetch_all(query).await?;
        rows.iter()
            .map(|r| {
                Ok(TransitionRecord {
                    from: opt_parsed(r, "from_state", PatchState::parse)?,
                    to: parsed(r, "to_state", PatchState::parse)?,
                    at: r.time("at")?,
                    sync_id: SyncId(r.int("sync_id")?),
                    command_id: r.opt_text("command_id")?,
                })
            })
            .collect()
    }
}

fn instance_record(row: &Row) -> Result<InstanceRecord, StoreError> {
    let compliance = match row.opt_int("sync_id")? {
        None => None,
        Some(sync_id) => Some(ComplianceSummary {
            scanned_at: row.time("scanned_at")?,
            sync_id: SyncId(sync_id),
            command_id: row.opt_text("command_id")?,
            operation: opt_parsed(row, "operation", parse_operation)?,
            operation_start: row.opt_time("operation_start")?,
            operation_end: row.opt_time("operation_end")?,
            baseline_id: row.opt_text("baseline_id")?,
            snapshot_id: row.opt_text("snapshot_id")?,
            patch_group: row.opt_text("patch_group")?,
            counts: StateCounts {
                installed: count(row, "installed")?,
                installed_other: count(row, "installed_other")?,
                installed_pending_reboot: count(row, "installed_pending_reboot")?,
                installed_rejected: count(row, "installed_rejected")?,
                missing: count(row, "missing")?,
                failed: count(row, "failed")?,
                not_applicable: count(row, "not_applicable")?,
                available_security_update: count(row, "available_security_update")?,
            },
        }),
    };
    Ok(InstanceRecord {
        instance: instance_info(row)?,
        ssm_managed: row.flag("ssm_managed")?,
        ping_status: opt_parsed(row, "ping_status", PingStatus::parse)?,
        first_seen: row.time("first_seen")?,
        last_seen: row.time("last_seen")?,
        compliance,
    })
}
