//! `patchd`: keeps a fleet of EC2 instances patched through SSM Patch Manager, and proves it.

mod advisories;
mod apply;
mod audit_cmd;
mod baseline_cmd;
mod check;
mod cli;
mod completions;
mod connect;
mod db;
mod demo;
mod failure;
mod http;
mod manual;
mod notify;
mod plan;
mod report_cmd;
mod run;
mod setup;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};
use crate::setup::runtime;

fn main() -> ExitCode {
    quiet_when_the_reader_leaves();
    let cli = Cli::parse();
    // The demo tells its story on stdout (blind spots included); log lines would drown it.
    let default_level = if matches!(cli.command, Command::Demo(_)) { "error" } else { "info" };
    init_tracing(cli.global.log_format, default_level);
    let result = match &cli.command {
        Command::Check(args) => check::run(&cli.global, args),
        Command::Plan(args) => plan::run(&cli.global, args),
        Command::Report(args) => runtime().and_then(|rt| rt.block_on(report_cmd::run(&cli.global, args))),
        Command::Advisories(command) => {
            runtime().and_then(|rt| rt.block_on(advisories::run(&cli.global, command)))
        }
        Command::Db(command) => runtime().and_then(|rt| rt.block_on(db::run(&cli.global, command))),
        Command::Run(args) => runtime().and_then(|rt| rt.block_on(run::run(&cli.global, args))),
        Command::RunNow(args) => runtime().and_then(|rt| rt.block_on(manual::run_now(&cli.global, args))),
        Command::Scan(args) => runtime().and_then(|rt| rt.block_on(manual::scan(&cli.global, args))),
        Command::Install(args) => runtime().and_then(|rt| rt.block_on(manual::install(&cli.global, args))),
        Command::Sync(args) => runtime().and_then(|rt| rt.block_on(manual::sync(&cli.global, args))),
        Command::Apply(args) => runtime().and_then(|rt| rt.block_on(apply::run(&cli.global, args))),
        Command::Demo(args) => runtime().and_then(|rt| rt.block_on(demo::run(args))),
        Command::Audit(args) => runtime().and_then(|rt| rt.block_on(audit_cmd::run(&cli.global, args))),
        Command::Baseline(cli::BaselineCommand::Preview(args)) => {
            runtime().and_then(|rt| rt.block_on(baseline_cmd::preview(&cli.global, args)))
        }
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}

fn init_tracing(format: LogFormat, default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PATCHD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    tracing_subscriber::registry().with(fmt.with_filter(filter)).init();
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader left (`patchd report sla | head`)
/// fails, and `println!` panics on it with a backtrace. A reader that stopped reading is not an
/// error of patchd's: end quietly with the status a shell gives a process SIGPIPE ended, as
/// other command-line tools do. Every other panic keeps the default report.
fn quiet_when_the_reader_leaves() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message.is_some_and(|m| m.starts_with("failed printing to stdout") && m.contains("Broken pipe")) {
            std::process::exit(128 + 13);
        }
        default(info);
    }));
}
