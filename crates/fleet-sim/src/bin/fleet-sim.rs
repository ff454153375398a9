//! `fleet-sim`: serve a simulated fleet over the SSM and EC2 wire protocols.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use fleet_sim::{Scenario, SimServer};

/// A simulated EC2 fleet behind SSM (JSON 1.1) and EC2 (Query) endpoints.
#[derive(Debug, Parser)]
#[command(name = "fleet-sim", version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:4566")]
    listen: String,
    /// Scenario TOML file (default: the built-in demo fleet).
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Rescale the scenario's fleet to this many instances.
    #[arg(long)]
    instances: Option<usize>,
    /// Seed for every random choice (overrides the scenario's).
    #[arg(long)]
    seed: Option<u64>,
    /// Simulated seconds per real second (overrides the scenario's); 0 freezes the clock.
    #[arg(long)]
    time_scale: Option<f64>,
}

fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve --listen {listen}; use HOST:PORT such as 127.0.0.1:4566"))?
        .next()
        .with_context(|| format!("--listen {listen} resolves to no address"))
}

/// SIGTERM, listened for from before the address is printed: whoever starts the simulator may
/// stop it as soon as it reads the address, and a signal that came before the handler would
/// kill the process instead of stopping it cleanly.
#[cfg(unix)]
fn listen_for_sigterm() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
            None
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal(terminate: Option<tokio::signal::unix::Signal>) {
    let interrupt = tokio::signal::ctrl_c();
    match terminate {
        Some(mut terminate) => {
            tokio::select! {
                _ = interrupt => {}
                _ = terminate.recv() => {}
            }
        }
        None => {
            let _ = interrupt.await;
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut scenario = match &args.scenario {
        Some(path) => Scenario::from_file(path)?,
        None => Scenario::demo(),
    };
    if let Some(n) = args.instances {
        scenario = scenario.with_instances(n);
    }
    if let Some(seed) = args.seed {
        scenario = scenario.with_seed(seed);
    }
    if let Some(scale) = args.time_scale {
        anyhow::ensure!(scale.is_finite() && scale >= 0.0, "--time-scale must be a number of at least 0");
        scenario = scenario.with_time_scale(scale);
    }
    let addr = resolve(&args.listen)?;
    let summary = scenario.to_string();
    #[cfg(unix)]
    let terminate = listen_for_sigterm();
    let server =
        SimServer::start(addr, scenario).await.with_context(|| format!("cannot listen on {addr}"))?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", server.endpoint_url())?;
        stdout.flush()?;
    }
    tracing::info!(scenario = %summary, endpoint = %server.endpoint_url(), now = %server.now(), "fleet-sim ready");
    #[cfg(unix)]
    wait_for_signal(terminate).await;
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleet-sim: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleet-sim: {error:#}");
            let invalid_scenario = error.downcast_ref::<fleet_sim::ScenarioError>().is_some();
            ExitCode::from(if invalid_scenario { 2 } else { 1 })
        }
    }
}
