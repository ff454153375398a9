//! The command line: global options every subcommand accepts, and the subcommands.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps a fleet of EC2 instances patched through AWS Systems Manager and proves it
/// against the PCI DSS patch SLA.
///
/// patchd reads baselines, instance groups, maintenance windows and SLA policy from TOML
/// files, fires Scan and Install tasks (AWS-RunPatchBaseline) on schedule, keeps the history
/// of every finding, and reports what is overdue, at risk, or not covered at all.
#[derive(Debug, Parser)]
#[command(name = "patchd", version, propagate_version = true, max_term_width = 100)]
#[command(after_help = "New here? `patchd demo` shows the whole story on a simulated fleet, with no AWS \
account. Then `patchd check --config config/example.toml`, and `patchd plan` to see when each window \
opens and whether the schedule can meet the SLA.")]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration: one TOML file, or a directory whose *.toml files are merged.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "PATCHD_CONFIG",
        default_value = "/etc/patchd",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// Database URL, overriding `[daemon] database_url` (sqlite://FILE or postgres://...).
    #[arg(long, global = true, env = "PATCHD_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database: Option<String>,

    /// AWS endpoint, overriding `[aws] endpoint_url` (e.g. the fleet simulator). The SDK's
    /// own AWS_ENDPOINT_URL is honoured too when neither is set.
    #[arg(long, global = true, env = "PATCHD_ENDPOINT_URL", value_name = "URL")]
    pub endpoint_url: Option<String>,

    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch patchd keep a simulated fleet patched, in about a minute, with no AWS account.
    ///
    /// Starts the fleet simulator in this process (300 instances over seven patch groups and
    /// five platforms, some without an SSM agent, some offline) with its clock sped up, copies
    /// config/demo.toml next to a fresh SQLite database, and runs the daemon's engine through
    /// a day in the life: baselines applied, the scan window, the SLA picture, the production
    /// install window in batches under its concurrency and error budget, a re-scan, and the
    /// SLA picture again. Ends with the evidence report and the commands to explore the
    /// database. Ctrl-C stops cleanly.
    Demo(DemoArgs),
    /// Validate the configuration and summarise it.
    ///
    /// Reports every problem at once as FILE:LINE:COL: error: MESSAGE, with a hint, then
    /// warnings (e.g. a schedule that cannot meet the SLA). Exits 0 when valid, 2 when the
    /// configuration has errors, 1 when it cannot be read (or, with --resolve, when the
    /// endpoint cannot be asked).
    Check(CheckArgs),
    /// Show when each window opens next, whether the schedule can meet the SLA, and what
    /// `patchd apply` would change in SSM's patch baselines.
    ///
    /// The feasibility table gives, per group and risk rank, the worst-case age of a patch at
    /// install: the baseline's approval delay, plus the longest gap between install windows
    /// over the next 365 days, plus the window's duration. The baselines section reads SSM
    /// (DescribePatchBaselines, GetPatchBaseline, DescribePatchGroups) and changes nothing;
    /// --offline leaves it out.
    Plan(PlanArgs),
    /// Bring the patch baselines and patch groups in SSM in line with the configuration.
    ///
    /// Shows the plan first: each `[[baseline]]` to create, update (field by field) or leave
    /// alone, patch-group registrations to add, move or remove, managed baselines the
    /// configuration no longer has (deleted only with `[daemon] prune_baselines = true`), and
    /// conflicts (a name or patch group held by a baseline patchd does not manage), which are
    /// never overwritten. Asks before changing anything on a terminal, unless --yes. Every
    /// change is written to the audit log; a second apply finds no changes.
    Apply(ApplyArgs),
    /// Patch baselines: what they approve, and when.
    #[command(subcommand)]
    Baseline(BaselineCommand),
    /// Run the daemon: fire every window on schedule and keep the history in sync.
    ///
    /// Resumes runs a previous process left in progress, records occurrences missed while it
    /// was down (and starts late those still before end minus cutoff), then fires each window
    /// at the instants `patchd plan` lists. SIGTERM or SIGINT stop releasing batches and exit
    /// within 30 s (commands already in SSM keep running and are picked up by the next start);
    /// a second SIGINT exits at once. SIGHUP reloads the configuration; an invalid one is
    /// refused with its errors logged, and the previous schedule stays in force.
    Run(RunArgs),
    /// Run a window's tasks now, in the foreground (recorded as `manual:WINDOW`).
    ///
    /// Uses the window's duration and cutoff counted from now. Takes the same group locks as
    /// the daemon. Exit status 4 when a task exceeded its error budget, 6 when a canary wave's
    /// gate failed and the remaining waves were not sent.
    RunNow(RunNowArgs),
    /// Scan groups now, in the foreground (AWS-RunPatchBaseline Operation=Scan).
    ///
    /// Recorded as `manual:scan:GROUP`; the compliance of the scanned instances is synced into
    /// the history afterwards. Exit status 4 when the error budget was exceeded, 5 when the
    /// sync could not read every scanned instance (the run is then `incomplete`).
    Scan(ScanArgs),
    /// Install approved patches on groups now, in the foreground (Operation=Install).
    ///
    /// Recorded as `manual:install:GROUP`; compliance is synced afterwards. Exit status 4 when
    /// the error budget was exceeded, 5 when the sync could not read every instance.
    Install(InstallArgs),
    /// Read SSM's compliance of the groups' instances into the history now, without a Scan.
    ///
    /// Reads every managed instance of the groups (all configured groups unless --group is
    /// given) whose latest Scan or Install is newer than the one recorded, plus every instance
    /// the sync backlog holds: those an earlier sync could not read because AWS throttled or
    /// failed. Exit status 5 when some instances still could not be read; they stay in the
    /// backlog, and `patchd run` reads them again within `sync_retry_interval`.
    Sync(SyncArgs),
    /// Answer "are we compliant, what is overdue, where are the blind spots" from the history.
    ///
    /// sla: every open finding with its rank, SLA clock (~ when the release date is unknown),
    /// due date and status, with totals. compliance: per group and instance. coverage:
    /// in-scope instances SSM does not manage, whose agent lost its connection, that no install
    /// window targets, or that were not scanned recently. history: findings remediated in a
    /// period, met or missed, and the share met per rank. Exit status 0 even when findings are
    /// breached, unless --fail-on says otherwise (then 3).
    Report(ReportArgs),
    /// Print the audit log: every change patchd made, and who or what made it.
    ///
    /// One line per entry, oldest first: time (UTC), actor (`daemon`, `cli:...`), action,
    /// target, SSM command id, AWS request id (to find the call in CloudTrail) and the
    /// details, abbreviated (--format json has them whole). The log has no update or delete
    /// path.
    Audit(AuditArgs),
    /// Vendor release dates from outside SSM.
    #[command(subcommand)]
    Advisories(AdvisoriesCommand),
    /// The database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Print the shell completion script for bash, zsh or fish on standard output.
    ///
    /// The script completes every subcommand, option and enumerated value of this patchd;
    /// regenerate it after an upgrade, and start a new shell to use it.
    #[command(after_long_help = COMPLETIONS_INSTALL)]
    Completions(CompletionsArgs),
    /// Write man pages: patchd.1 and one page per subcommand (patchd-report.1,
    /// patchd-db-status.1, ...).
    ///
    /// Writes into an existing directory and prints each file it wrote. For every user:
    /// `patchd man --out /usr/share/man/man1` (or /usr/local/share/man/man1), then `mandb` so
    /// that `man -k patchd` finds them. Without installing: `man -l DIR/patchd-report.1`.
    Man(ManArgs),
}

/// Where each shell looks for completion scripts, in `patchd completions --help`.
const COMPLETIONS_INSTALL: &str = "\
Install the script where your shell looks for completions:

  bash  patchd completions bash > /usr/share/bash-completion/completions/patchd
        (one user: ~/.local/share/bash-completion/completions/patchd)

  zsh   patchd completions zsh > /usr/local/share/zsh/site-functions/_patchd
        (any directory in $fpath, as a file named _patchd; `compinit` must run in
        ~/.zshrc, and `rm -f ~/.zcompdump*` makes it see a new file)

  fish  patchd completions fish > ~/.config/fish/completions/patchd.fish
        (every user: /usr/share/fish/vendor_completions.d/patchd.fish)

To try it in the current shell: `source <(patchd completions bash)` or
`patchd completions fish | source`.";

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print the completion script for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: CompletionShell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into; it must exist.
    #[arg(long, value_name = "DIR", value_hint = clap::ValueHint::DirPath)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only entries at or after this instant (RFC 3339 or YYYY-MM-DD); default: all.
    #[arg(long, value_name = "RFC3339", value_parser = parse_date_or_instant)]
    pub since: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the configuration copy, the database and the evidence report
    /// (default: a new directory under the system's temporary directory). It must not hold a
    /// database already.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 300.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Stop after this long, wherever the demo is (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// Keep the simulator running at the end, for exploring with patchd or any AWS SDK or
    /// CLI, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Subcommand)]
pub enum BaselineCommand {
    /// Which catalog patches a configured baseline approves, and the date each one became (or
    /// becomes) approved.
    ///
    /// Patches come from SSM's catalog (DescribeAvailablePatches) and from imported
    /// advisories; the baseline's rules, approved and rejected lists are evaluated locally the
    /// way Patch Manager evaluates them, so no baseline needs to exist in SSM yet.
    Preview(PreviewArgs),
}

#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The `[[baseline]]` to preview.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Evaluate approvals as of this instant instead of now (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = parse_date_or_instant)]
    pub at: Option<DateTime<Utc>>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Options of the commands that run tasks.
#[derive(Debug, Args)]
pub struct RunnerArgs {
    /// How often running commands are polled (e.g. 30s, 2m); default: the rollout's own.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub poll_interval: Option<std::time::Duration>,
}

impl RunnerArgs {
    pub fn poll_policy(&self) -> patchd_daemon::rollout::PollPolicy {
        let mut poll = patchd_daemon::rollout::PollPolicy::default();
        if let Some(interval) = self.poll_interval {
            poll.interval = interval;
        }
        poll
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Args)]
pub struct RunNowArgs {
    /// The window whose tasks to run.
    #[arg(value_name = "WINDOW")]
    pub window: String,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// A configured group; repeat for several. Default: every configured group.
    #[arg(long = "group", short = 'g', value_name = "GROUP")]
    pub groups: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    #[command(flatten)]
    pub task: AdhocArgs,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    pub task: AdhocArgs,
    /// Whether instances may reboot to finish the install.
    #[arg(long, value_enum, default_value_t = Reboot::IfNeeded)]
    pub reboot: Reboot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reboot {
    /// RebootIfNeeded.
    IfNeeded,
    /// NoReboot: patches stay INSTALLED_PENDING_REBOOT (open findings) until a reboot and a scan.
    NoReboot,
}

#[derive(Debug, Args)]
pub struct AdhocArgs {
    /// A configured group; repeat for several.
    #[arg(long = "group", short = 'g', required = true, value_name = "GROUP")]
    pub groups: Vec<String>,
    /// SSM MaxConcurrency: a number or a percentage.
    #[arg(long, default_value = "50", value_name = "N|N%")]
    pub max_concurrency: String,
    /// SSM MaxErrors, the error budget: a number or a percentage.
    #[arg(long, default_value = "0", value_name = "N|N%")]
    pub max_errors: String,
    /// SendCommand delivery timeout in seconds (30 to 2592000).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u32).range(30..=2_592_000))]
    pub timeout_seconds: u32,
    #[command(flatten)]
    pub runner: RunnerArgs,
}

#[derive(Debug, Subcommand)]
pub enum AdvisoriesCommand {
    /// Fetch the configured advisory feeds and the KEV catalog now, as the daemon does on
    /// their intervals.
    ///
    /// Each `[[advisories.source]]` is fetched with a conditional request (unchanged feeds cost
    /// one round trip), parsed whole, and its release dates imported in one transaction,
    /// labelled with the source's name. A feed that fails or is malformed keeps the data of its
    /// last success. Prints a line per feed and a summary; exits 1 if any feed failed.
    Sync {
        /// Only this source (`kev` for the KEV catalog).
        #[arg(long, value_name = "NAME")]
        source: Option<String>,
    },
    /// Show every feed: last success and its age, advisories in use, failures, last error.
    Status {
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Import release dates from files: yum updateinfo.xml, a Red Hat security-data index
    /// page, an Ubuntu USN database, or `id,release_date` CSV.
    ///
    /// Imported dates start the SLA clock of their patches (instead of the first time a patch
    /// was seen missing) and are recorded with their source (`import:<file name>`). A malformed
    /// file imports nothing and names the line at fault.
    Import {
        /// updateinfo.xml, JSON or CSV files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Apply pending migrations (patchd also does this when it starts).
    Migrate,
    /// Show the database's schema version and the one this patchd supports.
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportKind {
    Sla,
    Compliance,
    Coverage,
    History,
    /// The auditor's evidence: one self-contained HTML file (--format html --out FILE).
    Evidence,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    Csv,
    /// evidence only: a self-contained page to open, print and file.
    Html,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    Breached,
    DueSoon,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Which report.
    #[arg(value_enum)]
    pub kind: ReportKind,

    /// Judge as of this instant instead of now (RFC 3339).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub at: Option<DateTime<Utc>>,

    /// Only instances of this configured group.
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Only instances of this account: a configured account name (`[aws] name`, an
    /// `[[aws.account]]` name) or a 12-digit account id. The home account's id is the one
    /// patchd learned when it last connected.
    #[arg(long, value_name = "NAME|ID")]
    pub account: Option<String>,

    /// Only instances in this region.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,

    /// Only findings of this risk rank (sla, history).
    #[arg(long, value_parser = ["critical", "high", "medium", "low"])]
    pub rank: Option<String>,

    /// history, evidence: start of the period (default: 90 days before --until).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub since: Option<DateTime<Utc>>,

    /// history, evidence: end of the period, exclusive (default: --at).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub until: Option<DateTime<Utc>>,

    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,

    /// sla: list at most N open findings, the most urgent first; the totals still count every
    /// finding. Default: 50 for the table, all for json and csv; 0 lists all.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Exit with status 3 when any open finding is breached (or due soon or breached).
    #[arg(long, value_enum)]
    pub fail_on: Option<FailOn>,

    /// Write the report to FILE instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Treat warnings as errors (exit 2 when there is any warning).
    #[arg(long)]
    pub deny_warnings: bool,

    /// Check as of this instant instead of now (RFC 3339): expired exceptions, next openings,
    /// SLA feasibility.
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,

    /// Also ask the endpoint: warn about instances of a configured group whose patch-group tag
    /// maps to no patchd baseline (SSM would judge them by the AWS default baseline).
    #[arg(long)]
    pub resolve: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Apply without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Show the plan and change nothing.
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Plan from this instant instead of now (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub from: Option<DateTime<Utc>>,

    /// How many firings of each window to list.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub count: u32,

    /// Output format. The JSON form is a stable contract, documented in docs/configuration.md.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Leave out the patch baselines section, which reads SSM (the rest needs no AWS access).
    #[arg(long)]
    pub offline: bool,
}

/// `90s`, `30m`, `2h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number.parse().map_err(|_| format!("`{s}` is not a duration; write e.g. 30s or 2m"))?;
    let seconds = match unit {
        "ms" => return Ok(std::time::Duration::from_millis(n)),
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("`{s}` is not a duration; write e.g. 500ms, 30s or 2m")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

fn parse_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(speed) if (1.0..=100_000.0).contains(&speed) => Ok(speed),
        _ => Err(format!("`{s}` is not a speed between 1 (real time) and 100000")),
    }
}

/// An RFC 3339 instant, or a calendar date taken as its midnight UTC.
fn parse_date_or_instant(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(date) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(date.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    parse_instant(s).map_err(|e| format!("{e}, or a date such as 2026-12-01"))
}

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}; write an RFC 3339 instant such as 2026-12-01T00:00:00Z"))
}
