//! `patchd plan`: upcoming window firings, the SLA feasibility table, and what `patchd apply`
//! would change in SSM's patch baselines (unless `--offline`).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use patchd_config::feasibility::{self, Row};
use patchd_config::Config;
use patchd_daemon::baselines::{self, Change, Conflict};
use patchd_daemon::Scope;
use patchd_report::render::rfc3339;
use patchd_report::windows::{self, WindowPlan};
use serde::Serialize;

use crate::cli::{Format, GlobalArgs, PlanArgs};
use crate::failure::{print_diagnostics, Failure};
use crate::setup::{load_config, runtime};

/// `patchd plan --format json`: a stable contract, documented in docs/configuration.md.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub from: String,
    pub windows: Vec<WindowPlan>,
    pub sla_feasibility: Vec<Row>,
    /// What `patchd apply` would change; None with `--offline`.
    pub baselines: Option<BaselinePlan>,
    /// What each promoting task would install if it started now; absent when no task
    /// promotes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<PromotionPlan>,
}

/// A promoting task and the set it would install, read from the database.
#[derive(Debug, Serialize)]
pub struct PromotionPlan {
    pub window: String,
    pub task: String,
    pub from: String,
    /// The run it would repeat; None when there is none yet (then `problem` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_run: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ended_at: Option<String>,
    pub patches: Vec<patchd_store::PromotedPatch>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// The baselines section of `patchd plan --format json`.
#[derive(Debug, Serialize)]
pub struct BaselinePlan {
    /// `[daemon] prune_baselines`: whether `delete` changes would be carried out.
    pub prune: bool,
    /// Whether `patchd apply` would change anything.
    pub has_work: bool,
    pub changes: Vec<BaselineChange>,
}

/// One change; which fields are present depends on `action`.
#[derive(Debug, Serialize)]
pub struct BaselineChange {
    /// create, update, unchanged, delete, keep (a managed baseline no longer configured, kept
    /// because pruning is off), register, move, deregister, conflict.
    pub action: &'static str,
    /// The 12-digit account and the region the change is in: each has its own baselines.
    pub account: String,
    pub region: String,
    /// The baseline's name.
    pub baseline: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_system: Option<String>,
    /// move: the baseline that holds the patch group today.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_baseline: Option<String>,
    /// update: each field that differs, both sides as text (null: absent on that side).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldChange>,
    /// conflict: what stands in the way, and what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

impl BaselineChange {
    fn new(action: &'static str, baseline: &str) -> BaselineChange {
        BaselineChange {
            action,
            account: String::new(),
            region: String::new(),
            baseline: baseline.to_string(),
            baseline_id: None,
            patch_group: None,
            operating_system: None,
            from_baseline: None,
            fields: Vec::new(),
            reason: None,
        }
    }

    fn with_id(mut self, id: &str) -> BaselineChange {
        self.baseline_id = Some(id.to_string());
        self
    }

    fn from_change(change: &Change, scope: &Scope) -> BaselineChange {
        let mut c = BaselineChange::of_change(change);
        c.account = scope.account.clone();
        c.region = scope.region.clone();
        c
    }

    fn of_change(change: &Change) -> BaselineChange {
        match change {
            Change::Create { document } => {
                let mut c = BaselineChange::new("create", &document.name);
                c.operating_system = Some(document.operating_system.to_string());
                c
            }
            Change::Update { id, fields, document } => {
                let mut c = BaselineChange::new("update", &document.name).with_id(id);
                c.fields = fields
                    .iter()
                    .map(|f| FieldChange { field: f.field.clone(), from: f.from.clone(), to: f.to.clone() })
                    .collect();
                c
            }
            Change::Unchanged { id, name } => BaselineChange::new("unchanged", name).with_id(id),
            Change::Delete { id, name, .. } => BaselineChange::new("delete", name).with_id(id),
            Change::Orphan { id, name } => BaselineChange::new("keep", name).with_id(id),
            Change::Register { baseline, patch_group, operating_system, replaces } => {
                let action = if replaces.is_some() { "move" } else { "register" };
                let mut c = BaselineChange::new(action, baseline);
                c.patch_group = Some(patch_group.clone());
                c.operating_system = Some(operating_system.clone());
                c.from_baseline = replaces.as_ref().map(|(_, name)| name.clone());
                c
            }
            Change::Deregister { id, baseline, patch_group } => {
                let mut c = BaselineChange::new("deregister", baseline).with_id(id);
                c.patch_group = Some(patch_group.clone());
                c
            }
            Change::Conflict(conflict) => {
                let name = match conflict {
                    Conflict::NameTaken { name, .. }
                    | Conflict::OperatingSystem { name, .. }
                    | Conflict::Prefix { name } => name,
                    Conflict::PatchGroupTaken { wanted_by, .. } => wanted_by,
                };
                let mut c = BaselineChange::new("conflict", name);
                if let Conflict::PatchGroupTaken { patch_group, operating_system, .. } = conflict {
                    c.patch_group = Some(patch_group.clone());
                    c.operating_system = Some(operating_system.clone());
                }
                c.reason = Some(conflict.to_string());
                c
            }
        }
    }
}

pub fn build(config: &Config, from: DateTime<Utc>, count: usize) -> Plan {
    Plan {
        from: rfc3339(from),
        windows: windows::upcoming(config, from, count),
        sla_feasibility: feasibility::analyse(config, from),
        baselines: None,
        promotions: Vec::new(),
    }
}

/// The promoted sets as the database holds them now. Opened without migrating, and not at all
/// when the SQLite file does not exist: planning never creates or changes a database.
fn plan_promotions(config: &Config) -> Result<Vec<PromotionPlan>, Failure> {
    let promoting: Vec<(&str, &patchd_config::Task, &patchd_config::Promotion)> = config
        .windows
        .iter()
        .flat_map(|w| w.tasks.iter().filter_map(move |t| Some((w.name.as_str(), t, t.promote.as_ref()?))))
        .collect();
    if promoting.is_empty() {
        return Ok(Vec::new());
    }
    let url = config.daemon.database_url.expose();
    let plan_of =
        |window: &str, task: &patchd_config::Task, promotion: &patchd_config::Promotion| PromotionPlan {
            window: window.to_string(),
            task: task.name.clone(),
            from: promotion.from.value.clone(),
            source_run: None,
            source_ended_at: None,
            patches: Vec::new(),
            problem: None,
        };
    let missing_file =
        crate::setup::sqlite_file(url).is_some_and(|path| !std::path::Path::new(path).exists());
    if missing_file {
        return Ok(promoting
            .into_iter()
            .map(|(w, t, p)| PromotionPlan {
                problem: Some(format!(
                    "no database at {url} yet, so window `{}` has no recorded run",
                    p.from.value
                )),
                ..plan_of(w, t, p)
            })
            .collect());
    }
    runtime()?.block_on(async {
        let store = crate::setup::open_store_read_only(config).await?;
        let mut plans = Vec::with_capacity(promoting.len());
        for (window, task, promotion) in promoting {
            let source = store
                .promotion_source(&promotion.from.value)
                .await
                .map_err(|e| anyhow::anyhow!("cannot read the promoted sets from the database {url}: {e}"))?;
            plans.push(match source {
                Some(source) => PromotionPlan {
                    source_run: Some(source.run.get()),
                    source_ended_at: Some(rfc3339(source.ended_at)),
                    patches: source.patches,
                    ..plan_of(window, task, promotion)
                },
                None => PromotionPlan {
                    problem: Some(format!(
                        "window `{}` has no succeeded run whose installs were recorded: the task would fail and send nothing",
                        promotion.from.value
                    )),
                    ..plan_of(window, task, promotion)
                },
            });
        }
        Ok(plans)
    })
}

/// Reads the baselines and patch groups in SSM and diffs them against the configuration, in
/// every account and region (each has its own baselines).
fn plan_baselines(config: &Config) -> Result<Vec<(Scope, baselines::Plan)>, Failure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Failure::Other(anyhow::anyhow!(
            "cannot read the patch baselines in SSM: {e}; the windows and SLA feasibility above \
             need no AWS access: pass --offline to plan without it"
        ))
    };
    runtime()?.block_on(async {
        let scoped = crate::connect::scoped_clients(config).await.map_err(|e| match e {
            Failure::Other(e) => unreadable(&e),
            other => other,
        })?;
        let mut plans = Vec::with_capacity(scoped.len());
        for (scope, aws) in scoped {
            let plan = baselines::plan(&aws, &config.baselines, config.daemon.prune_baselines)
                .await
                .map_err(|e| unreadable(&format!("{scope}: {e}")))?;
            plans.push((scope, plan));
        }
        Ok(plans)
    })
}

pub fn run(global: &GlobalArgs, args: &PlanArgs) -> Result<(), Failure> {
    let from = args.from.unwrap_or_else(Utc::now);
    let loaded = load_config(global, from)?;
    print_diagnostics(&loaded.warnings);
    let config = &loaded.config;
    crate::setup::require_named_database(global, config)?;
    let mut plan = build(config, from, args.count as usize);
    plan.promotions = plan_promotions(config)?;
    // The offline part is printed even when SSM cannot be read, and the failure comes last.
    let baseline_plan = if args.offline { None } else { Some(plan_baselines(config)) };
    let baseline_plan = match baseline_plan {
        Some(Ok(p)) => Some(p),
        Some(Err(failure)) => {
            if args.format == Format::Table {
                print!("{}", render_table(config, &plan, from));
            }
            return Err(failure);
        }
        None => None,
    };
    plan.baselines = baseline_plan.as_ref().map(|plans| BaselinePlan {
        prune: config.daemon.prune_baselines,
        has_work: plans.iter().any(|(_, p)| p.has_work()),
        changes: plans
            .iter()
            .flat_map(|(scope, p)| p.changes.iter().map(move |c| BaselineChange::from_change(c, scope)))
            .collect(),
    });
    match args.format {
        Format::Json => {
            let json = serde_json::to_string_pretty(&plan).map_err(anyhow::Error::from)?;
            println!("{json}");
        }
        Format::Table => {
            print!("{}", render_table(config, &plan, from));
            if let Some(plans) = &baseline_plan {
                let endpoint = config.aws.endpoint_url.as_deref().unwrap_or("AWS");
                print!("{}", crate::apply::render_scopes(plans, endpoint));
                if plans.iter().any(|(_, p)| p.has_work()) {
                    println!("  run `patchd apply` to make these changes");
                }
            }
        }
    }
    Ok(())
}

fn render_table(config: &Config, plan: &Plan, from: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Window openings after {}", plan.from);
    for (window, wp) in config.windows.iter().zip(&plan.windows) {
        let tz = window.schedule.timezone();
        let offset = if wp.offset_days > 0 { format!(" + {} day(s)", wp.offset_days) } else { String::new() };
        let state = if wp.enabled { "" } else { "  [disabled]" };
        let _ = writeln!(
            out,
            "\n  {}  {}{} in {}, {} h, cutoff {} h{}",
            wp.name, wp.schedule, offset, wp.timezone, wp.duration_hours, wp.cutoff_hours, state
        );
        for rollout in &wp.rollouts {
            let _ = writeln!(out, "    task {}", rollout.summary());
            for hook in &rollout.hooks {
                let _ = writeln!(out, "      hook {hook} (on each node, AWS-RunPatchBaselineWithHooks)");
            }
            for check in &rollout.gate {
                let _ = writeln!(out, "      gate: {check}");
            }
        }
        if wp.next.is_empty() {
            let _ = writeln!(out, "    (never opens again)");
        }
        for (start, end) in window.occurrences_after(from).take(wp.next.len()) {
            let local = start.with_timezone(&tz);
            let local_end = end.with_timezone(&tz);
            let _ = writeln!(
                out,
                "    {} - {}   {} - {}",
                local.format("%a %Y-%m-%d %H:%M %Z"),
                local_end.format("%H:%M %Z"),
                start.format("%Y-%m-%dT%H:%MZ"),
                end.format("%Y-%m-%dT%H:%MZ"),
            );
        }
    }
    for promotion in &plan.promotions {
        let _ = writeln!(
            out,
            "\nPromotion: {} task {} installs only what window {} installed",
            promotion.window, promotion.task, promotion.from
        );
        match (&promotion.problem, promotion.source_run, &promotion.source_ended_at) {
            (Some(problem), _, _) => {
                let _ = writeln!(out, "  {problem}");
            }
            (None, Some(run), Some(ended)) => {
                let _ =
                    writeln!(out, "  from run {run}, ended {ended}: {} patch(es)", promotion.patches.len());
                for patch in &promotion.patches {
                    let _ = writeln!(
                        out,
                        "    {}  {}  {}  on {} instance(s)  {}",
                        patch.id, patch.severity, patch.classification, patch.instances, patch.title
                    );
                }
            }
            _ => {}
        }
    }
    let _ = writeln!(out, "\nSLA feasibility (worst case over the next {} days)", feasibility::HORIZON_DAYS);
    if plan.sla_feasibility.is_empty() {
        let _ = writeln!(out, "  no groups configured");
        return out;
    }
    let header = ["GROUP", "BASELINE", "RANK", "APPROVAL", "GAP", "WINDOW", "WORST", "SLA", ""];
    let rows: Vec<[String; 9]> = plan
        .sla_feasibility
        .iter()
        .map(|r| {
            [
                r.group.clone(),
                r.baseline.clone().unwrap_or_else(|| "(AWS default)".into()),
                r.rank.to_string(),
                format!("{} d", r.approval_delay_days),
                r.longest_gap_days.map_or("-".into(), |g| format!("{g:.1} d")),
                r.window_hours.map_or("-".into(), |h| format!("{h} h")),
                r.worst_case_days.map_or("never".into(), |w| format!("{w:.1} d")),
                format!("{} d", r.sla_days),
                if r.ok { "ok".into() } else { "CANNOT MEET SLA".into() },
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::from(" ");
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(s, " {cell:w$}");
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(&header.map(String::from)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    for note in plan
        .sla_feasibility
        .iter()
        .filter_map(|r| r.note.as_ref().map(|n| (r, n)))
        .map(|(r, n)| format!("  note: {}: {n}", r.group))
        .collect::<std::collections::BTreeSet<_>>()
    {
        let _ = writeln!(out, "{note}");
    }
    out
}
