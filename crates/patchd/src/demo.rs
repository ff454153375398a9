//! `patchd demo`: the whole story on a simulated fleet, in about a minute.
//!
//! Nothing here is a mock of patchd: the simulator speaks SSM and EC2 on a loopback port, the
//! configuration is `config/demo.toml` as shipped, and every phase goes through the same code
//! the daemon runs (`baselines::reconcile`, `window::execute` with the plan a firing gets, the
//! compliance sync, the report computations). What the demo adds is the order of events: it
//! opens the windows one after the other instead of waiting for their cron instants, and it
//! speeds up the simulated clock so that scans and installs take seconds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use chrono::{DateTime, SecondsFormat, SubsecRound as _, Utc};
use fleet_sim::{Scenario, SimServer};
use patchd_aws::{AwsClients, StaticEndpoint};
use patchd_config::{Config, FeedLocation, RiskRank};
use patchd_daemon::baselines;
use patchd_daemon::feeds::{FeedBook, RefreshOutcome, Selection};
use patchd_daemon::rollout::PollPolicy;
use patchd_daemon::sync::ReleaseDates;
use patchd_daemon::window::{self, Env, LockWait, RunEnd, RunPlan, RunSummary, TaskProgress};
use patchd_daemon::{Context, Scope};
use patchd_report::{CoverageReport, Filters, Judge, Reports, SlaReport};
use patchd_sla::SlaStatus;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::cli::{DemoArgs, GlobalArgs, LogFormat, ReportArgs, ReportFormat, ReportKind};
use crate::failure::Failure;
use crate::manual::{render_summary, ProgressPrinter, Untermed};
use crate::setup::{load_kev, open_store};

/// Shipped with the binary, so the demo runs from any directory.
const DEMO_CONFIG: &str = include_str!("../../../config/demo.toml");
const CONFIG_FILE: &str = "patchd.toml";
const SCAN_WINDOW: &str = "nightly-scan";
const INSTALL_WINDOW: &str = "prod-install";
const PHASES: usize = 7;

pub async fn run(args: &DemoArgs) -> Result<(), Failure> {
    let dir = demo_dir(args.dir.as_deref())?;
    let config_path = dir.join(CONFIG_FILE);
    std::fs::write(&config_path, DEMO_CONFIG)
        .with_context(|| format!("cannot write {}", config_path.display()))?;

    let scenario = Scenario::demo().with_time_scale(args.speed).with_start(simulated_start(args, Utc::now()));
    let instances = scenario.instance_count();
    let server = SimServer::start(([127, 0, 0, 1], 0).into(), scenario)
        .await
        .map_err(|e| anyhow!("cannot start the fleet simulator on a loopback port: {e}"))?;
    let url = server.endpoint_url();

    let mut config = match patchd_config::load(&config_path, Utc::now()) {
        Ok(loaded) => loaded.config,
        Err(e) => return Err(Failure::Other(anyhow!("the shipped demo configuration does not load: {e}"))),
    };
    config.aws.endpoint_url = Some(url.clone());
    // The feeds the shipped file names live on the simulator too.
    aim_feeds_at(&mut config, &url);
    let store = open_store(&config).await?;
    let database = dir.join("patchd.db");
    // The simulator accepts any signature; static keys spare a machine without AWS
    // credentials the SDK's search through the credential chain.
    let aws = AwsClients::with_static_credentials(&config.aws, &StaticEndpoint::simulator(&url));
    let account =
        aws.account_id().await.map_err(|e| anyhow!("the simulator did not say its account id: {e}"))?;
    let scope = Scope {
        name: config.aws.name.clone(),
        account,
        region: aws.region().unwrap_or("us-east-1").to_string(),
    };
    // Connected as the daemon connects, so that the account's name is recorded and the
    // `patchd report --account home ...` a reader tries afterwards resolves.
    let ctx = patchd_daemon::scopes::attach(vec![(scope, aws)], &store, "demo", &Default::default())
        .await
        .swap_remove(0);

    println!("patchd demo: {instances} simulated EC2 instances at {url}, clock at {}x", args.speed);
    println!("  configuration  {} (config/demo.toml)", config_path.display());
    println!("  database       {}", database.display());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopper = tokio::spawn(stop_on_signal_or_deadline(stop_tx, args.duration));
    let demo = Demo {
        ctx: &ctx,
        config: &config,
        feeds: FeedBook::new(&config),
        stop: stop_rx,
        judged_at: std::cell::Cell::new(None),
    };
    let outcome = demo.story(&dir).await;
    stopper.abort();
    let judged_at = demo.judged_at.get();

    // A stop is a clean end only where the story noticed it (`Halt::Stopped`); an error stays
    // an error even after a stop was asked for, so that a stop cannot pass a failure off as
    // success.
    let finished = outcome.is_ok();
    let outcome = match outcome {
        Ok(()) => Ok(()),
        Err(Halt::Stopped) => {
            println!("\nstopped before the end; what ran is in the database");
            Ok(())
        }
        Err(Halt::Failed(failure)) => Err(failure),
    };
    print_next_steps(&config_path, &database, &dir, judged_at);
    if args.keep && finished {
        // Listening before saying "Ctrl-C stops it": an interrupt sent as soon as the line
        // appears must not fall between the two.
        let mut interrupt =
            signal(SignalKind::interrupt()).map_err(|e| anyhow!("cannot listen for Ctrl-C: {e}"))?;
        println!(
            "\nThe simulator keeps running at {url} (any AWS SDK or CLI can talk to it, with any keys):"
        );
        println!(
            "  AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo patchd scan --config {} --endpoint-url {url} --group web-prod",
            config_path.display()
        );
        println!("  AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo aws --region us-east-1 --endpoint-url {url} ssm describe-instance-information");
        println!("Ctrl-C stops it.");
        interrupt.recv().await;
    }
    server.shutdown().await;
    outcome
}

/// Why the story ended before its end.
enum Halt {
    /// A signal or `--duration` asked it to stop, and it stopped between steps or inside a
    /// window run, which then ended `Stopped`.
    Stopped,
    Failed(Failure),
}

impl From<Failure> for Halt {
    fn from(failure: Failure) -> Self {
        Halt::Failed(failure)
    }
}

impl From<anyhow::Error> for Halt {
    fn from(error: anyhow::Error) -> Self {
        Halt::Failed(Failure::Other(error))
    }
}

/// A fresh directory for this demo: the given one (created if need be, refused if it already
/// holds a database, so that two demos never mix), or a new one under the temporary directory.
fn demo_dir(given: Option<&Path>) -> Result<PathBuf, Failure> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => std::env::temp_dir().join(format!(
            "patchd-demo-{}-{}",
            Utc::now().format("%Y%m%d-%H%M%S"),
            std::process::id()
        )),
    };
    if dir.join("patchd.db").exists() {
        return Err(Failure::Other(anyhow!(
            "{} already holds a demo database; remove it, or give another --dir",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(std::fs::canonicalize(&dir).unwrap_or(dir))
}

/// Asks the demo to stop on SIGINT, SIGTERM or when `duration` is up; a second interrupt exits
/// at once.
async fn stop_on_signal_or_deadline(stop: watch::Sender<bool>, duration: std::time::Duration) {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return;
    };
    tokio::select! {
        _ = term.recv() => eprintln!("\npatchd demo: stopping (interrupt again to exit at once)"),
        _ = int.recv() => eprintln!("\npatchd demo: stopping (interrupt again to exit at once)"),
        _ = tokio::time::sleep(duration) => {
            eprintln!("\npatchd demo: --duration {}s is up; stopping", duration.as_secs());
        }
    }
    let _ = stop.send(true);
    // A rollout stops releasing at the first change and stops polling at the next one.
    let mut nudge = tokio::time::interval(std::time::Duration::from_millis(300));
    loop {
        tokio::select! {
            _ = int.recv() => {
                eprintln!("patchd demo: second interrupt: exiting now");
                std::process::exit(130);
            }
            _ = nudge.tick() => {
                stop.send_replace(true);
            }
        }
    }
}

/// Where the simulated clock starts: so far back that, running `speed` times faster than the
/// wall clock for at most `--duration`, it is still behind the wall clock when the demo ends.
/// Every record the demo leaves is then in the past, and the reports a reader runs afterwards
/// (as of now, or as of the instant the demo printed) see all of it.
fn simulated_start(args: &DemoArgs, now: DateTime<Utc>) -> DateTime<Utc> {
    let ahead = chrono::Duration::milliseconds((args.duration.as_secs_f64() * args.speed * 1000.0) as i64);
    (now - ahead).trunc_subsecs(0)
}

struct Demo<'a> {
    ctx: &'a Context,
    config: &'a Config,
    feeds: FeedBook,
    stop: watch::Receiver<bool>,
    /// The instant the latest SLA picture was judged at: the reports suggested at the end are
    /// run as of it, so they show the figures the demo printed.
    judged_at: std::cell::Cell<Option<DateTime<Utc>>>,
}

impl Demo<'_> {
    async fn story(&self, dir: &Path) -> Result<(), Halt> {
        phase(1, "baselines: the [[baseline]] sections go to SSM, as the daemon does at start-up");
        let changes =
            baselines::reconcile(self.ctx, &self.config.baselines, self.config.daemon.prune_baselines)
                .await
                .map_err(|e| anyhow!("applying the baselines failed: {e}"))?;
        for change in &changes {
            println!("  {change}");
        }
        println!("  {} change(s), each in the audit log", changes.len());
        self.check_stop()?;

        phase(2, "advisory feeds: vendor release dates for the platforms SSM does not date");
        let feeds = self.refresh_feeds().await?;
        for feed in &feeds.feeds {
            println!("  {:<20} {} entries", feed.name, feed.entries);
        }
        println!("  {} patch release date(s) from advisories (`patchd advisories status`)", feeds.dated);
        self.check_stop()?;

        phase(3, &format!("window {SCAN_WINDOW} opens: every group is scanned"));
        self.open_window(SCAN_WINDOW).await?;

        phase(4, "the SLA picture after the scan");
        let (before, gaps) = self.picture().await?;
        print!("{}", render_picture(&before, None));
        let unmanaged = gaps.gaps.iter().filter(|g| g.gap.as_str() == "unmanaged").count();
        let lost = gaps.gaps.iter().filter(|g| g.gap.as_str() == "agent-connection-lost").count();
        println!(
            "  blind spots: {unmanaged} instance(s) without an SSM agent, {lost} whose agent lost its connection \
             (`patchd report coverage`)"
        );
        self.check_stop()?;

        phase(
            5,
            &format!("window {INSTALL_WINDOW} opens: production installs in batches, web before databases"),
        );
        self.open_window(INSTALL_WINDOW).await?;

        phase(6, &format!("window {SCAN_WINDOW} again: the re-scan confirms what was installed"));
        self.open_window(SCAN_WINDOW).await?;

        phase(7, "the SLA picture after the install (before -> after)");
        let (after, _) = self.picture().await?;
        print!("{}", render_picture(&after, Some(&before)));

        let evidence = dir.join("evidence.html");
        self.write_evidence(dir, &evidence).await?;
        println!("\nThe auditor's evidence report: {}", evidence.display());
        Ok(())
    }

    /// `patchd report evidence` on the demo's database, judged at the simulator's clock.
    async fn write_evidence(&self, dir: &Path, out: &Path) -> Result<(), Failure> {
        let global = GlobalArgs {
            config: dir.join(CONFIG_FILE),
            database: None,
            endpoint_url: None,
            log_format: LogFormat::Text,
        };
        let args = ReportArgs {
            kind: ReportKind::Evidence,
            at: self.judged_at.get(),
            group: None,
            account: None,
            region: None,
            rank: None,
            since: None,
            until: None,
            format: ReportFormat::Html,
            limit: None,
            fail_on: None,
            out: Some(out.to_path_buf()),
        };
        crate::report_cmd::run(&global, &args).await
    }

    fn check_stop(&self) -> Result<(), Halt> {
        if *self.stop.borrow() {
            return Err(Halt::Stopped);
        }
        Ok(())
    }

    /// Opens a window now, as the daemon does when its instant comes, and prints its progress
    /// and summary.
    async fn open_window(&self, name: &str) -> Result<RunSummary, Halt> {
        self.check_stop()?;
        let w = self.config.window(name).ok_or_else(|| anyhow!("config/demo.toml has no window {name}"))?;
        let plan = RunPlan::for_window(w, Utc::now());
        let progress = Arc::new(ProgressPrinter::new(Untermed::Lines));
        let printer = progress.clone();
        let on_progress = move |p: &TaskProgress<'_>| printer.show(p);
        let release_dates = ReleaseDates::new(chrono::Duration::days(1));
        release_dates.use_advisories(self.feeds.index().await);
        let poll = PollPolicy {
            interval: std::time::Duration::from_millis(250),
            max_interval: std::time::Duration::from_secs(2),
        };
        let env = Env {
            ctx: self.ctx,
            config: self.config,
            release_dates: &release_dates,
            state_dir: &self.config.daemon.state_dir,
            poll: &poll,
            lock_wait: LockWait::Fail,
            on_progress: &on_progress,
        };
        let summary = window::execute(&env, &plan, self.stop.clone()).await;
        progress.finish();
        let summary = summary.map_err(|e| anyhow!("window {name} failed: {e}"))?;
        for line in render_summary(&summary).lines() {
            println!("  {line}");
        }
        if summary.end == RunEnd::Stopped {
            return Err(Halt::Stopped);
        }
        Ok(summary)
    }

    /// The SLA totals and the coverage gaps, judged now by the wall clock (the simulated clock
    /// runs behind it, see [`simulated_start`]). The feeds are fetched again first, as the
    /// daemon would have by then: a patch released during the demo is dated by its vendor's
    /// advisory, not estimated.
    async fn picture(&self) -> Result<(SlaReport, CoverageReport), Failure> {
        self.refresh_feeds().await?;
        let kev = load_kev(self.config);
        let at = Utc::now().trunc_subsecs(0);
        self.judged_at.set(Some(at));
        let judge = Judge { config: self.config, kev: &kev.catalog, at };
        let reports = Reports::read(&self.ctx.store, judge, None, None).await?;
        let everything = Filters::default();
        Ok((reports.sla_summary(&everything, 0).await?, reports.coverage(&everything)))
    }

    async fn refresh_feeds(&self) -> Result<RefreshOutcome, Failure> {
        let outcome = self
            .feeds
            .refresh(self.config, &self.ctx.store, Selection::All, &|_, _, _| {})
            .await
            .map_err(|e| anyhow!("advisory feeds not recorded: {e}"))?;
        if let Some(failed) = outcome.failed().next() {
            return Err(anyhow!("the simulator's feed {} failed: {:?}", failed.name, failed.outcome).into());
        }
        Ok(outcome)
    }
}

/// Every feed URL written for the simulator's placeholder address, aimed at the one it runs on.
fn aim_feeds_at(config: &mut Config, url: &str) {
    const PLACEHOLDER: &str = "http://127.0.0.1:4566";
    let aim = |location: &mut FeedLocation| {
        if let FeedLocation::Http(feed) = location {
            if let Some(path) = feed.strip_prefix(PLACEHOLDER) {
                *feed = format!("{}{path}", url.trim_end_matches('/'));
            }
        }
    };
    for source in &mut config.advisory_sources {
        aim(&mut source.location);
    }
    if let Some(kev) = &mut config.sla.kev_catalog {
        aim(kev);
    }
}

fn phase(n: usize, what: &str) {
    println!("\n[{n}/{PHASES}] {what}");
}

const PICTURE_STATUSES: [SlaStatus; 4] =
    [SlaStatus::Breached, SlaStatus::DueSoon, SlaStatus::Ok, SlaStatus::Excepted];

/// Open findings per rank and SLA status; with `before`, each cell reads `before -> now`.
fn render_picture(now: &SlaReport, before: Option<&SlaReport>) -> String {
    let mut rows: Vec<Vec<String>> = vec![["RANK", "BREACHED", "DUE SOON", "OK", "EXCEPTED", "TOTAL"]
        .iter()
        .map(|h| h.to_string())
        .collect()];
    let cell = |rank: Option<RiskRank>, status: Option<SlaStatus>| {
        let of = |report: &SlaReport| -> usize {
            RiskRank::ALL
                .iter()
                .filter(|r| rank.is_none_or(|want| want == **r))
                .flat_map(|r| PICTURE_STATUSES.iter().map(move |s| (*r, *s)))
                .filter(|(_, s)| status.is_none_or(|want| want == *s))
                .map(|(r, s)| report.count_of(r, s))
                .sum()
        };
        match before {
            Some(b) => format!("{} -> {}", of(b), of(now)),
            None => of(now).to_string(),
        }
    };
    for rank in RiskRank::ALL.iter().copied().map(Some).chain([None]) {
        let mut row = vec![rank.map_or("all".to_string(), |r| r.as_str().to_string())];
        row.extend(PICTURE_STATUSES.iter().map(|s| cell(rank, Some(*s))));
        row.push(cell(rank, None));
        rows.push(row);
    }
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i == 0 {
                        format!("{c:<w$}", w = widths[i])
                    } else {
                        format!("{c:>w$}", w = widths[i])
                    }
                })
                .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn print_next_steps(config: &Path, database: &Path, dir: &Path, judged_at: Option<DateTime<Utc>>) {
    let c = config.display();
    println!("\nEverything is in {}:", dir.display());
    println!("  database  {}", database.display());
    // As of the instant the last picture was judged, the reports show the very figures above;
    // without `--at` they judge as of the moment they run, when some clocks have moved on.
    let at = judged_at
        .map(|at| format!(" --at {}", at.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .unwrap_or_default();
    println!("Explore it (no simulator needed; drop --at to judge as of now):");
    println!("  patchd report evidence   --config {c}{at} --format html --out evidence.html");
    println!("  patchd report sla        --config {c}{at}");
    println!("  patchd report compliance --config {c}{at}");
    println!("  patchd report coverage   --config {c}{at}");
    println!("  patchd report history    --config {c}{at}");
    println!("  patchd plan              --config {c} --offline");
}
