//! `patchd apply`: brings the patch baselines and patch-group registrations in SSM in line with
//! the `[[baseline]]` sections, after showing the plan field by field.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::anyhow;
use chrono::Utc;
use patchd_daemon::baselines::{self, Change, Plan};
use patchd_daemon::Scope;

use crate::cli::{ApplyArgs, GlobalArgs};
use crate::connect::{scoped_clients, with_store};
use crate::failure::Failure;
use crate::setup::{load_config, log_warnings, open_state};

pub async fn run(global: &GlobalArgs, args: &ApplyArgs) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    let prune = config.daemon.prune_baselines;
    // Every account and region has baselines of its own: one plan per scope, shown together
    // and confirmed once.
    let scoped = scoped_clients(&config).await?;
    let mut plans: Vec<(Scope, Plan)> = Vec::new();
    for (scope, aws) in &scoped {
        let plan = baselines::plan(aws, &config.baselines, prune)
            .await
            .map_err(|e| anyhow!("cannot read the patch baselines in SSM ({scope}): {e}"))?;
        plans.push((scope.clone(), plan));
    }
    match plans.as_slice() {
        [(_, only)] => print!("{}", render(only)),
        _ => print!("{}", render_scopes(&plans, config.aws.endpoint_url.as_deref().unwrap_or("AWS"))),
    }

    if !plans.iter().any(|(_, p)| p.has_work()) {
        println!("no changes");
        return Ok(());
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(());
    }
    if !args.yes && !confirm()? {
        println!("nothing changed");
        return Ok(());
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    // The clients that read the plans make the changes: no second round of STS calls.
    let store = open_state(&config).await?;
    let contexts = with_store(&config, store, &format!("cli:{user}"), scoped).await?;
    let mut applied = 0;
    for (scope, plan) in plans.iter().filter(|(_, p)| p.has_work()) {
        let Some(ctx) = contexts.iter().find(|c| c.scope == *scope) else { continue };
        let done = baselines::apply(ctx, plan, Utc::now()).await.map_err(|e| {
            anyhow!(
                "apply stopped in {scope}: {e}; what was done is in the audit log, run `patchd apply` again to finish"
            )
        })?;
        applied += done.len();
    }
    println!("applied {applied} change(s)");
    Ok(())
}

/// The plans of every scope: with one scope, the plan under the endpoint's heading as before;
/// with several, each under its account and region.
pub(crate) fn render_scopes(plans: &[(Scope, Plan)], endpoint: &str) -> String {
    let mut out = String::new();
    for (scope, plan) in plans {
        if plans.len() == 1 {
            let _ = writeln!(out, "\nPatch baselines in SSM ({endpoint})");
        } else {
            let _ = writeln!(out, "\nPatch baselines in SSM ({endpoint}): {scope}");
        }
        out.push_str(&render(plan));
    }
    out
}

/// Asks on the terminal; refuses when there is none to ask on.
fn confirm() -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Other(anyhow!(
            "not applying without confirmation: run on a terminal, or pass --yes (see the plan with --dry-run)"
        )));
    }
    print!("apply these changes? [y/N] ");
    std::io::stdout().flush().map_err(|e| anyhow!("cannot write to stdout: {e}"))?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| anyhow!("cannot read the answer: {e}"))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// The plan as text: one line per change, `+` create or register, `~` update or move, `-`
/// delete or deregister, `=` unchanged, `!` conflict; updated fields indented below.
pub(crate) fn render(plan: &Plan) -> String {
    let mut out = String::new();
    let count = |f: fn(&Change) -> bool| plan.changes.iter().filter(|c| f(c)).count();
    let orphans = count(|c| matches!(c, Change::Orphan { .. }));
    let kept = if orphans > 0 { format!(" ({orphans} more kept: pruning is off)") } else { String::new() };
    let _ = writeln!(
        out,
        "baselines: {} to create, {} to update, {} unchanged, {} to delete{kept}, {} patch-group change(s), {} conflict(s)",
        count(|c| matches!(c, Change::Create { .. })),
        count(|c| matches!(c, Change::Update { .. })),
        count(|c| matches!(c, Change::Unchanged { .. })),
        count(|c| matches!(c, Change::Delete { .. })),
        count(|c| matches!(c, Change::Register { .. } | Change::Deregister { .. })),
        count(|c| matches!(c, Change::Conflict(_))),
    );
    for change in &plan.changes {
        let _ = match change {
            Change::Create { document } => {
                writeln!(out, "  + create {} ({})", document.name, document.operating_system)
            }
            Change::Update { id, fields, document } => {
                let _ = writeln!(out, "  ~ update {} ({id})", document.name);
                for field in fields {
                    let side = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
                    let _ =
                        writeln!(out, "      {}: {} -> {}", field.field, side(&field.from), side(&field.to));
                }
                Ok(())
            }
            Change::Unchanged { id, name } => writeln!(out, "  = unchanged {name} ({id})"),
            Change::Delete { id, name, .. } => writeln!(out, "  - delete {name} ({id})"),
            Change::Orphan { id, name } => writeln!(
                out,
                "  - delete {name} ({id}): not in the configuration; kept, [daemon] prune_baselines = false"
            ),
            Change::Register { baseline, patch_group, operating_system, replaces: None } => {
                writeln!(out, "  + register patch group {patch_group} ({operating_system}) -> {baseline}")
            }
            Change::Register { baseline, patch_group, operating_system, replaces: Some((_, old)) } => {
                writeln!(out, "  ~ move patch group {patch_group} ({operating_system}): {old} -> {baseline}")
            }
            Change::Deregister { baseline, patch_group, .. } => {
                writeln!(out, "  - deregister patch group {patch_group} from {baseline}")
            }
            Change::Conflict(conflict) => writeln!(out, "  ! conflict: {conflict}"),
        };
    }
    out
}
