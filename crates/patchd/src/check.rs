//! `patchd check`: validate and summarise.

use std::fmt::Write as _;

use chrono::Utc;
use patchd_config::Config;

use crate::cli::{CheckArgs, GlobalArgs};
use crate::{load_config, print_diagnostics, Failure};

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> Result<(), Failure> {
    let now = args.from.unwrap_or_else(Utc::now);
    let loaded = load_config(global, now)?;
    if args.deny_warnings && !loaded.warnings.is_empty() {
        return Err(Failure::InvalidConfig(loaded.warnings));
    }
    print_diagnostics(&loaded.warnings);
    print!("{}", summary(&loaded.config, loaded.warnings.len(), now));
    Ok(())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn summary(config: &Config, warnings: usize, now: chrono::DateTime<Utc>) -> String {
    let mut out = String::new();
    let files: Vec<String> = config.sources.iter().map(|p| p.display().to_string()).collect();
    let _ = writeln!(out, "configuration OK: {}", files.join(", "));
    let _ = writeln!(
        out,
        "  {}, {}, {}, {}, {}",
        plural(config.baselines.len(), "baseline"),
        plural(config.groups.len(), "group"),
        plural(config.windows.len(), "window"),
        plural(config.exceptions.len(), "exception"),
        plural(warnings, "warning"),
    );
    let _ = writeln!(out, "  database  {}", config.daemon.database_url);
    let endpoint = config.aws.endpoint_url.as_deref().unwrap_or("AWS (the SDK's default endpoint)");
    let region = config.aws.region.as_deref().unwrap_or("from the environment");
    let _ = writeln!(out, "  endpoint  {endpoint}, region {region}");
    if !config.windows.is_empty() {
        let _ = writeln!(out, "next openings:");
        let width = config.windows.iter().map(|w| w.name.len()).max().unwrap_or(0);
        for window in &config.windows {
            let next = match window.schedule.next_after(now) {
                _ if !window.enabled => "disabled".to_string(),
                Some(start) => {
                    let tz = window.schedule.timezone();
                    format!(
                        "{} {}  ({})",
                        start.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z"),
                        tz.name(),
                        start.format("%Y-%m-%dT%H:%M:%SZ")
                    )
                }
                None => "never again".to_string(),
            };
            let _ = writeln!(out, "  {:width$}  {next}", window.name);
        }
    }
    out
}
