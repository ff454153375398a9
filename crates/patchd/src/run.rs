//! `patchd run`: the daemon. Wiring only: configuration, database, clients and signals; the
//! schedule and the runs live in `patchd-daemon`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use patchd_config::{Config, Severity};
use patchd_daemon::leader;
use patchd_daemon::scheduler::{self, Control, Heartbeat, Settings};
use patchd_store::BackendKind;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::cli::{GlobalArgs, RunArgs};
use crate::connect::contexts;
use crate::failure::Failure;
use crate::http::{self, ApiToken, Certificate};
use crate::notify::{self, Notifier};
use crate::setup::{load_config, log_warnings};

/// How long a stop waits for runs to persist before exiting: under the 30 s promised, with
/// room for the store to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

pub async fn run(global: &GlobalArgs, args: &RunArgs) -> Result<(), Failure> {
    let loaded = load_config(global, Utc::now())?;
    log_warnings(&loaded.warnings);
    let config = loaded.config;
    let notifier = Notifier::from_env().map(Arc::new);
    let token = match &config.daemon.api_token_file {
        Some(path) => Some(ApiToken::read(path).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?),
        None => None,
    };
    let certificate = match &config.daemon.tls {
        Some(files) => Some(Certificate::load(files).map_err(|e| Failure::Other(anyhow::anyhow!(e)))?),
        None => None,
    };
    let scopes = contexts(&config, "daemon".to_string()).await?;
    let ctx = scopes[0].clone();
    // Leadership before the HTTP port: on SQLite a second daemon is refused here, naming the
    // first, rather than by a port conflict that would not say what holds the database.
    let me = leader::this_process();
    let single_host = ctx.store.backend() == BackendKind::Sqlite;
    let (leadership, campaign) = leader::start(&ctx.store, me, config.daemon.lease, single_host)
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("{e}")))?;
    // Bind before anything is scheduled: a taken port stops start-up, not a running daemon.
    let listener = http::bind(config.daemon.listen).await?;
    info!(config = %global.config.display(), database = %config.daemon.database_url,
        endpoint = ctx.aws.endpoint_url().unwrap_or("aws"), home = %ctx.scope, scopes = scopes.len(),
        pid = std::process::id(), "patchd starting");
    let heartbeat = Heartbeat::default();
    let current = Arc::new(RwLock::new(Arc::new(config.clone())));
    let server = http::serve(
        listener,
        http::Setup {
            config: current.clone(),
            config_path: global.config.clone(),
            store: ctx.store.clone(),
            aws: ctx.aws.clone(),
            heartbeat: heartbeat.clone(),
            leadership: leadership.clone(),
            token,
            events: ctx.events.clone(),
            tls: certificate.clone(),
        },
    )?;
    info!(listen = %server.addr, auth = config.daemon.api_token_file.is_some(), tls = certificate.is_some(),
        "HTTP endpoint listening");
    let settings = Settings {
        state_dir: config.daemon.state_dir.clone(),
        sync_interval: config.daemon.sync_interval,
        sync_retry_interval: config.daemon.sync_retry_interval,
        poll: args.runner.poll_policy(),
        shutdown_grace: SHUTDOWN_GRACE,
        release_refresh: chrono::Duration::days(1),
        heartbeat: heartbeat.clone(),
    };
    let stopping = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(8);
    let signals = tokio::spawn(forward_signals(
        global.clone_for_reload(),
        config.clone(),
        tx,
        Reloaded { current, notifier: notifier.clone(), stopping: stopping.clone(), certificate },
    ));
    let supervisor = notifier.clone().map(|n| {
        let status = format!(
            "STATUS=scheduling {} window(s); HTTP on {}",
            config.windows.iter().filter(|w| w.enabled).count(),
            server.addr
        );
        tokio::spawn(supervise(n, heartbeat.clone(), stopping.clone(), status))
    });
    let (campaign_stop, campaign_stopped) = tokio::sync::watch::channel(false);
    let campaign = tokio::spawn(campaign.run(campaign_stopped));
    let result = scheduler::run_under(leadership, scopes, config, settings, rx).await;
    // Resign only once the runs have stopped, so that the next leader resumes them whole.
    let _ = campaign_stop.send(true);
    let _ = campaign.await;
    signals.abort();
    if let Some(n) = &notifier {
        if !stopping.swap(true, Ordering::SeqCst) {
            n.notify("STOPPING=1\nSTATUS=stopping");
        }
    }
    if let Some(s) = supervisor {
        s.abort();
    }
    server.stop().await;
    result.map_err(|e| Failure::Other(anyhow::anyhow!("the daemon failed: {e}")))
}

/// READY=1 once the scheduler loop turns (configuration loaded, database open, HTTP
/// listening, windows armed), then WATCHDOG=1 at half of WATCHDOG_USEC while the loop's
/// heartbeat is recent: a stuck loop stops the keep-alives and systemd restarts the process.
async fn supervise(notifier: Arc<Notifier>, heartbeat: Heartbeat, stopping: Arc<AtomicBool>, status: String) {
    while heartbeat.last().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    notifier.notify(&format!("READY=1\n{status}\nMAINPID={}", std::process::id()));
    let Some(every) = notify::watchdog_interval() else { return };
    info!(interval_ms = every.as_millis() as u64, "systemd watchdog keep-alives enabled");
    let mut tick = tokio::time::interval(every);
    let mut warned = false;
    loop {
        tick.tick().await;
        // While stopping the loop no longer beats, but the exit is bounded by the grace period.
        if stopping.load(Ordering::SeqCst) || http::heartbeat_recent(&heartbeat, Utc::now()) {
            notifier.notify("WATCHDOG=1");
            warned = false;
        } else if !warned {
            warn!(last_heartbeat = ?heartbeat.last(), "the scheduler loop is not turning; withholding the systemd watchdog keep-alive");
            warned = true;
        }
    }
}

/// What a signal changes besides the scheduler: the configuration the HTTP endpoint reads, and
/// systemd's view of the service.
#[derive(Debug)]
struct Reloaded {
    current: Arc<RwLock<Arc<Config>>>,
    notifier: Option<Arc<Notifier>>,
    stopping: Arc<AtomicBool>,
    /// The HTTP endpoint's certificate, read again at each reload (rotation without restart).
    certificate: Option<Arc<Certificate>>,
}

impl Reloaded {
    fn notify(&self, state: &str) {
        if let Some(n) = &self.notifier {
            n.notify(state);
        }
    }

    fn stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            self.notify("STOPPING=1\nSTATUS=stopping: no new batches are released");
        }
    }
}

/// SIGTERM and SIGINT stop; a second SIGINT exits at once; SIGHUP reloads.
async fn forward_signals(
    global: ReloadArgs,
    mut current: Config,
    tx: mpsc::Sender<Control>,
    shared: Reloaded,
) {
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
                shared.stop();
                let _ = tx.send(Control::Stop).await;
            }
            _ = int.recv() => {
                if stopping {
                    warn!(signal = "SIGINT", "second interrupt: exiting now");
                    std::process::exit(130);
                }
                info!(signal = "SIGINT", "stopping (interrupt again to exit at once)");
                stopping = true;
                shared.stop();
                let _ = tx.send(Control::Stop).await;
            }
            _ = hup.recv() => {
                shared.notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
                if let Some(certificate) = &shared.certificate {
                    let files = certificate.files();
                    match certificate.reload() {
                        Ok(()) => info!(cert = %files.cert_file.display(), "TLS certificate read again"),
                        Err(e) => error!(error = %e, "TLS certificate not reloaded; the previous one is still presented"),
                    }
                }
                if let Some(config) = reload(&global, &current) {
                    current = config.clone();
                    *shared.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config.clone());
                    let _ = tx.send(Control::Reload(Box::new(config))).await;
                    shared.notify("READY=1\nSTATUS=configuration reloaded");
                } else {
                    shared.notify("READY=1\nSTATUS=reload refused: the new configuration is invalid; the previous one stays in force");
                }
            }
        }
    }
}

/// CLOCK_MONOTONIC in microseconds, which `RELOADING=1` carries for `Type=notify-reload`;
/// without libc, read from /proc/uptime (the same clock on Linux, to the centisecond).
fn monotonic_usec() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0, |secs| (secs * 1_000_000.0) as u64)
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
                || new.daemon.listen != current.daemon.listen
                || new.daemon.api_token_file != current.daemon.api_token_file
                || new.daemon.tls != current.daemon.tls
            {
                warn!("[daemon] and [aws] changes take effect at the next restart; the schedule and [events] are reloaded now");
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
                Failure::Other(e) | Failure::Hinted { error: e, .. } => crate::failure::describe(&e),
                _ => "unexpected failure".to_string(),
            };
            error!(error = %message, "the configuration cannot be read; keeping the previous configuration and schedule");
            None
        }
    }
}
