//! `patchd run-now`, `patchd scan`, `patchd install`: one run in the foreground, with a
//! progress line on a terminal (log lines otherwise) and a summary table at the end.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::anyhow;
use chrono::Utc;
use patchd_config::{Config, Limit, Operation, RebootOption};
use patchd_daemon::sync::ReleaseDates;
use patchd_daemon::window::{self, AdhocRequest, Env, LockWait, RunEnd, RunPlan, RunSummary, TaskProgress};
use patchd_daemon::{scopes, Context};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::cli::{AdhocArgs, GlobalArgs, InstallArgs, Reboot, RunNowArgs, RunnerArgs, ScanArgs, SyncArgs};
use crate::connect::contexts;
use crate::failure::Failure;
use crate::setup::{load_config, log_warnings};

pub async fn run_now(global: &GlobalArgs, args: &RunNowArgs) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    let Some(w) = config.window(&args.window) else {
        let known: Vec<&str> = config.windows.iter().map(|w| w.name.as_str()).collect();
        return Err(Failure::Other(anyhow!(
            "no window `{}` in the configuration; configured windows: {}",
            args.window,
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    };
    let plan = RunPlan::window_now(w, Utc::now());
    execute(&config, Some(&w.name), &plan, &args.runner).await
}

pub async fn scan(global: &GlobalArgs, args: &ScanArgs) -> Result<(), Failure> {
    adhoc(global, &args.task, Operation::Scan, RebootOption::RebootIfNeeded).await
}

pub async fn install(global: &GlobalArgs, args: &InstallArgs) -> Result<(), Failure> {
    let reboot = match args.reboot {
        Reboot::IfNeeded => RebootOption::RebootIfNeeded,
        Reboot::NoReboot => RebootOption::NoReboot,
    };
    adhoc(global, &args.task, Operation::Install, reboot).await
}

async fn adhoc(
    global: &GlobalArgs,
    args: &AdhocArgs,
    operation: Operation,
    reboot_option: RebootOption,
) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    known_groups(&config, &args.groups)?;
    let limit = |name: &str, text: &str, min: u32| -> Result<Limit, Failure> {
        let parsed = match text.trim().strip_suffix('%') {
            Some(p) => p.parse::<u8>().ok().filter(|p| u32::from(*p) >= min && *p <= 100).map(Limit::Percent),
            None => text.trim().parse::<u32>().ok().filter(|n| *n >= min).map(Limit::Count),
        };
        parsed.ok_or_else(|| {
            Failure::Other(anyhow!("--{name} must be a number (at least {min}) or a percentage like 10%"))
        })
    };
    let mut groups = args.groups.clone();
    groups.sort();
    groups.dedup();
    let request = AdhocRequest {
        operation,
        groups: &groups,
        reboot_option,
        max_concurrency: limit("max-concurrency", &args.max_concurrency, 1)?,
        max_errors: limit("max-errors", &args.max_errors, 0)?,
        timeout_seconds: args.timeout_seconds,
    };
    let plan = RunPlan::adhoc(&request, Utc::now());
    execute(&config, None, &plan, &args.runner).await
}

/// Runs the plan in every account and region its window and groups reach, one after the
/// other, each with its own summary; the first failure ends the command.
async fn execute(
    config: &Config,
    window: Option<&str>,
    plan: &RunPlan,
    runner: &RunnerArgs,
) -> Result<(), Failure> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let all = contexts(config, format!("cli:{user}")).await?;
    let scoped: Vec<(Context, RunPlan)> = all
        .iter()
        .filter_map(|ctx| scopes::plan_in_scope(config, window, plan, &ctx.scope).map(|p| (ctx.clone(), p)))
        .collect();
    if scoped.is_empty() {
        return Err(Failure::Other(anyhow!(
            "no configured account and region is in scope of these groups (see `accounts` and `regions` in the configuration)"
        )));
    }
    let several = scoped.len() > 1;
    for (ctx, plan) in &scoped {
        if several {
            println!("== {}", ctx.scope);
        }
        execute_in(config, ctx, plan, runner).await?;
    }
    Ok(())
}

async fn execute_in(
    config: &Config,
    ctx: &Context,
    plan: &RunPlan,
    runner: &RunnerArgs,
) -> Result<(), Failure> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return;
        };
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            if stopping {
                eprintln!("\npatchd: second interrupt: exiting now");
                std::process::exit(130);
            }
            stopping = true;
            warn!("stopping: no new batches are released (interrupt again to exit at once)");
            let _ = stop_tx.send(true);
            // The rollout ends polling at the next change: what is in flight is in the store,
            // and `patchd run` picks it up.
            let nudges = stop_tx.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    nudges.send_replace(true);
                }
            });
        }
    });

    let progress = ProgressPrinter::new(Untermed::Log);
    let on_progress = |p: &TaskProgress<'_>| progress.show(p);
    let release_dates = ReleaseDates::new(chrono::Duration::days(1));
    let poll = runner.poll_policy();
    let env = Env {
        ctx,
        config,
        release_dates: &release_dates,
        state_dir: &config.daemon.state_dir,
        poll: &poll,
        lock_wait: LockWait::Fail,
        on_progress: &on_progress,
    };
    let result = window::execute(&env, plan, stop_rx).await;
    signals.abort();
    progress.finish();
    let summary = result.map_err(|e| Failure::Other(anyhow!("{e}")))?;
    print!("{}", render_summary(&summary));
    match summary.end {
        RunEnd::Stopped => Err(Failure::Other(anyhow!(
            "stopped before the run finished; commands already sent keep running in SSM, and `patchd run` resumes the run"
        ))),
        RunEnd::Missed => Err(Failure::Other(anyhow!("the run could not start before its cutoff"))),
        _ if summary.tasks.iter().any(|t| t.gate_failure.is_some()) => {
            let failures: Vec<String> = summary
                .tasks
                .iter()
                .filter_map(|t| Some(format!("task `{}`: {}", t.name, t.gate_failure.as_ref()?)))
                .collect();
            Err(Failure::GateFailed(format!(
                "{}; the remaining waves were not sent (the decision is in the audit log as wave-gate-failed)",
                failures.join("; ")
            )))
        }
        _ if summary.tasks.iter().any(|t| t.promotion_failure.is_some()) => {
            let failures: Vec<String> = summary
                .tasks
                .iter()
                .filter_map(|t| Some(format!("task `{}`: {}", t.name, t.promotion_failure.as_ref()?)))
                .collect();
            Err(Failure::Other(anyhow!("{}; nothing was sent to its instances", failures.join("; "))))
        }
        _ if summary.budget_exceeded() => Err(Failure::BudgetExceeded(
            "the error budget (max errors) was exceeded; the rollout stopped releasing batches".to_string(),
        )),
        _ if summary.sync_unread() > 0 => Err(Failure::SyncIncomplete(sync_incomplete(summary.sync_unread()))),
        _ => Ok(()),
    }
}

/// Refuses group names the configuration does not have, listing those it has.
fn known_groups(config: &Config, groups: &[String]) -> Result<(), Failure> {
    let unknown: Vec<&str> =
        groups.iter().filter(|g| config.group(g).is_none()).map(String::as_str).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = config.groups.iter().map(|g| g.name.as_str()).collect();
    Err(Failure::Other(anyhow!(
        "unknown group(s) {}; configured groups: {}",
        unknown.join(", "),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )))
}

fn sync_incomplete(unread: usize) -> String {
    format!(
        "sync incomplete: the results of {unread} instances could not be read (AWS throttled or failed \
         past every retry); they are in the sync backlog: `patchd run` reads them again within \
         `sync_retry_interval`, or run `patchd sync`"
    )
}

/// `patchd sync`: the groups' compliance and the backlog, in every account and region.
pub async fn sync(global: &GlobalArgs, args: &SyncArgs) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    known_groups(&config, &args.groups)?;
    let groups: Vec<&patchd_config::Group> = if args.groups.is_empty() {
        config.groups.iter().collect()
    } else {
        config.groups.iter().filter(|g| args.groups.contains(&g.name)).collect()
    };
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_string());
    let source = format!("cli:{user}");
    let release_dates = ReleaseDates::new(chrono::Duration::days(1));
    let mut unread = 0;
    for ctx in &contexts(&config, source.clone()).await? {
        let started = Instant::now();
        let done = patchd_daemon::sync::sync_groups(ctx, &groups, &release_dates, &source)
            .await
            .map_err(|e| Failure::Other(anyhow!("{}: {e}", ctx.scope)))?;
        print!("{}", render_sync(&ctx.scope.to_string(), &done, started.elapsed()));
        unread += done.outcome.unread.len();
    }
    if unread > 0 {
        return Err(Failure::SyncIncomplete(sync_incomplete(unread)));
    }
    Ok(())
}

fn render_sync(scope: &str, done: &patchd_daemon::sync::GroupsSync, elapsed: std::time::Duration) -> String {
    let o = &done.outcome;
    let mut out = format!("sync      {scope}\n");
    out.push_str(&format!(
        "instances {} ({} from the backlog; {} without an SSM agent)\n",
        o.instances, done.from_backlog, done.gaps
    ));
    out.push_str(&format!(
        "read      {} changed, {} unchanged, {} never scanned, {} gone\n",
        o.changed, o.unchanged, o.unreported, o.gone
    ));
    out.push_str(&format!(
        "findings  {} opened, {} remediated, {} reopened\n",
        o.opened, o.remediated, o.reopened
    ));
    out.push_str(&format!(
        "api calls {} ({} patch states, {} patch listings; {} retried)\n",
        o.state_calls + o.patch_calls,
        o.state_calls,
        o.patch_calls,
        o.read_retries
    ));
    out.push_str(&format!("duration  {:.1}s\n", elapsed.as_secs_f64()));
    for (group, why) in &done.unresolved {
        out.push_str(&format!("group     {group} not resolved: {why}\n"));
    }
    if !o.unread.is_empty() {
        out.push_str(&format!("status    incomplete: {} instances not read\n", o.unread.len()));
        for u in o.unread.iter().take(10) {
            out.push_str(&format!("  {}  {}\n", u.instance_id, u.error));
        }
        if o.unread.len() > 10 {
            out.push_str(&format!("  ... and {} more\n", o.unread.len() - 10));
        }
    } else {
        out.push_str("status    complete\n");
    }
    out.push('\n');
    out
}

/// Where progress goes when standard output is not a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Untermed {
    /// Log lines on stderr, as the daemon writes them.
    Log,
    /// Plain lines on stdout, at most one a second per task.
    Lines,
}

/// A task's progress: one line rewritten in place on a terminal; otherwise log lines or plain
/// lines (see [`Untermed`]), written only when something changed.
pub(crate) struct ProgressPrinter {
    terminal: bool,
    untermed: Untermed,
    started: Instant,
    /// The task and count last shown, and when.
    last: Mutex<(String, u64, Instant)>,
}

impl ProgressPrinter {
    pub(crate) fn new(untermed: Untermed) -> ProgressPrinter {
        let now = Instant::now();
        ProgressPrinter {
            terminal: std::io::stdout().is_terminal(),
            untermed,
            started: now,
            last: Mutex::new((String::new(), u64::MAX, now)),
        }
    }

    pub(crate) fn show(&self, p: &TaskProgress<'_>) {
        let done = p.progress.done as u64;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let unchanged = last.0 == p.task && last.1 == done;
        let finished = p.progress.done == p.progress.total;
        if !self.terminal
            && (unchanged
                || (self.untermed == Untermed::Lines
                    && last.0 == p.task
                    && !finished
                    && last.2.elapsed() < std::time::Duration::from_secs(1)))
        {
            return;
        }
        *last = (p.task.to_string(), done, Instant::now());
        let elapsed = self.started.elapsed().as_secs();
        let wave = if p.progress.waves > 1 {
            format!(", wave {}/{}", p.progress.wave.max(1), p.progress.waves)
        } else {
            String::new()
        };
        let line = format!(
            "{}: {}/{} done, {} failed, {} in flight{wave}, {:02}:{:02} elapsed",
            p.task,
            p.progress.done,
            p.progress.total,
            p.progress.failed,
            p.progress.in_flight,
            elapsed / 60,
            elapsed % 60
        );
        match (self.terminal, self.untermed) {
            (true, _) => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "\r  {line}   ");
                let _ = out.flush();
            }
            (false, Untermed::Lines) => println!("  {line}"),
            (false, Untermed::Log) => info!(
                task = p.task,
                done = p.progress.done,
                total = p.progress.total,
                failed = p.progress.failed,
                in_flight = p.progress.in_flight,
                elapsed_seconds = elapsed,
                "progress"
            ),
        }
    }

    /// Ends the line rewritten in place.
    pub(crate) fn finish(&self) {
        if self.terminal {
            println!();
        }
    }
}

/// The summary table printed at the end of a manual run.
pub(crate) fn render_summary(s: &RunSummary) -> String {
    let status = match s.end {
        RunEnd::Finished(status) => status.as_str().to_string(),
        RunEnd::Stopped => "stopped".to_string(),
        RunEnd::AlreadyDone(status) => format!("already {status}"),
        RunEnd::Missed => "missed".to_string(),
    };
    let mut out = String::new();
    out.push_str(&format!("run       {}\n", s.record_as));
    if let Some(id) = s.run_id {
        out.push_str(&format!("run id    {id}\n"));
    }
    out.push_str(&format!("status    {status}\n"));
    out.push_str(&format!("duration  {:.1}s\n", s.duration.as_secs_f64()));
    out.push_str(&format!("api calls {}\n", s.api_calls()));
    if s.sync_unread() > 0 {
        out.push_str(&format!("sync      incomplete: {} instances not read\n", s.sync_unread()));
    }
    out.push('\n');
    let header =
        ["TASK", "OPERATION", "STATUS", "TARGETED", "SUCCEEDED", "FAILED", "UNDELIVERABLE", "SKIPPED"];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for t in &s.tasks {
        rows.push(vec![
            t.name.clone(),
            t.operation.as_ssm().to_string(),
            t.status.as_str().to_string(),
            t.targeted.to_string(),
            t.succeeded.to_string(),
            t.failed.to_string(),
            t.undeliverable.to_string(),
            (t.gaps + t.not_sent).to_string(),
        ]);
    }
    rows.push(vec![
        "total".to_string(),
        String::new(),
        String::new(),
        s.targeted().to_string(),
        s.succeeded().to_string(),
        s.failed().to_string(),
        s.undeliverable().to_string(),
        s.skipped().to_string(),
    ]);
    let widths: Vec<usize> =
        (0..header.len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i < 3 {
                    format!("{cell:<w$}", w = widths[i])
                } else {
                    format!("{cell:>w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for t in s.tasks.iter().filter(|t| t.waves > 1) {
        out.push_str(&format!(
            "\n{}: waves {} of {} sent, {} gate(s) passed",
            t.name, t.waves_sent, t.waves, t.gates_passed
        ));
        if let Some(gate) = &t.gate_failure {
            out.push_str(&format!("; {gate}"));
        }
        out.push('\n');
    }
    for t in &s.tasks {
        if let Some(promoted) = &t.promoted {
            out.push_str(&format!("\n{}: {promoted}\n", t.name));
        }
        if let Some(patches) = t.installs_recorded {
            out.push_str(&format!(
                "\n{}: recorded the {patches} patch(es) it installed, for the windows that promote from this one\n",
                t.name
            ));
        }
    }
    out.push_str("\nskipped: coverage gaps (not managed by SSM, or agent offline) and instances never sent a command\n");
    out
}
