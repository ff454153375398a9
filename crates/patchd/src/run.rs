//! `patchd run`: the daemon. Wiring only: configuration, database, clients and signals; the
//! schedule and the runs live in `patchd-daemon`.

use std::time::Duration;

use chrono::Utc;
use patchd_aws::AwsClients;
use patchd_config::{Config, Severity};
use patchd_daemon::rollout::PollPolicy;
use patchd_daemon::scheduler::{self, Control, Settings};
use patchd_daemon::{Context, Scope};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::{GlobalArgs, RunArgs, RunnerArgs};
use crate::{load_config, open_store, Failure};

/// How long a stop waits for runs to persist before exiting: under the 30 s promised, with
/// room for the store to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// Account label of the default credential chain, until `[[aws.account]]` roles are used.
pub(crate) const DEFAULT_ACCOUNT: &str = "default";

pub async fn run(global: &GlobalArgs, args: &RunArgs) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    let ctx = context(&config, "daemon".to_string()).await?;
    info!(config = %global.config.display(), database = %config.daemon.database_url,
        endpoint = ctx.aws.endpoint_url().unwrap_or("aws"), region = %ctx.scope.region,
        pid = std::process::id(), "patchd starting");
    let settings = Settings {
        state_dir: config.daemon.state_dir.clone(),
        sync_interval: config.daemon.sync_interval,
        poll: poll_policy(&args.runner),
        shutdown_grace: SHUTDOWN_GRACE,
        release_refresh: chrono::Duration::days(1),
    };
    let (tx, rx) = mpsc::channel(8);
    let signals = tokio::spawn(forward_signals(global.clone_for_reload(), config.clone(), tx));
    let result = scheduler::run(ctx, config, settings, rx).await;
    signals.abort();
    result.map_err(|e| Failure::Other(anyhow::anyhow!("the daemon failed: {e}")))
}

/// SIGTERM and SIGINT stop; a second SIGINT exits at once; SIGHUP reloads.
async fn forward_signals(global: ReloadArgs, mut current: Config, tx: mpsc::Sender<Control>) {
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        error!("cannot install signal handlers; stop patchd with SIGKILL");
        return;
    };
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = term.recv() => {
                info!(signal = "SIGTERM", "stopping");
                stopping = true;
                let _ = tx.send(Control::Stop).await;
            }
            _ = int.recv() => {
                if stopping {
                    warn!(signal = "SIGINT", "second interrupt: exiting now");
                    std::process::exit(130);
                }
                info!(signal = "SIGINT", "stopping (interrupt again to exit at once)");
                stopping = true;
                let _ = tx.send(Control::Stop).await;
            }
            _ = hup.recv() => {
                if let Some(config) = reload(&global, &current) {
                    current = config.clone();
                    let _ = tx.send(Control::Reload(Box::new(config))).await;
                }
            }
        }
    }
}

/// What a reload needs of the global options.
#[derive(Debug, Clone)]
pub struct ReloadArgs {
    config: std::path::PathBuf,
    database: Option<String>,
    endpoint_url: Option<String>,
}

impl GlobalArgs {
    fn clone_for_reload(&self) -> ReloadArgs {
        ReloadArgs {
            config: self.config.clone(),
            database: self.database.clone(),
            endpoint_url: self.endpoint_url.clone(),
        }
    }
}

/// Loads the configuration again; None (with every error logged at its location) when it is
/// invalid, so the previous one stays in force.
fn reload(args: &ReloadArgs, current: &Config) -> Option<Config> {
    let global = GlobalArgs {
        config: args.config.clone(),
        database: args.database.clone(),
        endpoint_url: args.endpoint_url.clone(),
        log_format: crate::cli::LogFormat::Text,
    };
    info!(signal = "SIGHUP", config = %args.config.display(), "reloading the configuration");
    match load_config(&global, Utc::now()) {
        Ok(loaded) => {
            log_warnings(&loaded.warnings);
            let new = loaded.config;
            if new.daemon.database_url != current.daemon.database_url
                || new.daemon.state_dir != current.daemon.state_dir
                || new.aws.endpoint_url != current.aws.endpoint_url
                || new.aws.region != current.aws.region
                || new.aws.profile != current.aws.profile
            {
                warn!("[daemon] and [aws] changes take effect at the next restart; the schedule is reloaded now");
            }
            Some(new)
        }
        Err(Failure::InvalidConfig(diagnostics)) => {
            for d in &diagnostics {
                let location = d.origin.to_string();
                match d.severity {
                    Severity::Error => {
                        error!(location, message = %d.message, hint = d.hint.as_deref().unwrap_or(""),
                        "configuration error")
                    }
                    Severity::Warning => warn!(location, message = %d.message, "configuration warning"),
                }
            }
            let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
            error!(
                errors,
                "the new configuration is invalid; keeping the previous configuration and schedule"
            );
            None
        }
        Err(other) => {
            let message = match other {
                Failure::Other(e) => format!("{e:#}"),
                _ => "unexpected failure".to_string(),
            };
            error!(error = %message, "the configuration cannot be read; keeping the previous configuration and schedule");
            None
        }
    }
}

pub(crate) fn log_warnings(warnings: &[patchd_config::Diagnostic]) {
    for w in warnings {
        warn!(location = %w.origin, message = %w.message, "configuration warning");
    }
}

/// Clients, store and scope for the configuration's account.
pub(crate) async fn context(config: &Config, actor: String) -> Result<Context, Failure> {
    let store = open_store(config).await?;
    // load_config already applied --endpoint-url to [aws] endpoint_url.
    let aws = AwsClients::new(&config.aws, None).await;
    let Some(region) = aws.region().map(str::to_string) else {
        return Err(Failure::Other(anyhow::anyhow!(
            "no AWS region: set [aws] region in the configuration, or AWS_REGION"
        )));
    };
    Ok(Context { aws, store, scope: Scope { account: DEFAULT_ACCOUNT.to_string(), region }, actor })
}

pub(crate) fn poll_policy(args: &RunnerArgs) -> PollPolicy {
    let mut poll = PollPolicy::default();
    if let Some(interval) = args.poll_interval {
        poll.interval = interval;
    }
    poll
}
