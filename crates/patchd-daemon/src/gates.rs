//! A wave's gate: what must hold after a canary wave, and its bake, before the next wave is
//! released. The checks run in order, cheapest and most telling first, and the first that fails
//! decides:
//!
//! 1. **Reboot truth** (Install): every instance the wave's install ran on has its agent back `Online`,
//!    and its compliance shows no `FAILED` patch, nor `INSTALLED_PENDING_REBOOT` when the task
//!    may reboot. An instance that fails it counts as an error, like a failed invocation.
//! 2. **Error budget**: the task's errors so far, those of the reboot truth included, within
//!    MaxErrors.
//! 3. **Alarm**: none of the wave's commands was stopped by the task's CloudWatch alarm (SSM
//!    watches it through SendCommand's `AlarmConfiguration` and reports `TriggeredAlarms`).
//! 4. **URL**: a GET answering 2xx, told the run, task and wave in its query.
//! 5. **Command**: a program on the admin host exiting 0 within its timeout, told the run,
//!    task, wave and instances in its environment. Its output is kept with the decision.
//!
//! A gate that cannot find out (AWS unreachable after retries, the URL unreachable) fails:
//! releasing more of a fleet on a guess is what gates exist to prevent.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use http_body_util::BodyExt as _;
use patchd_aws::{AwsError, PingStatus, Reported};
use patchd_config::{Gate, LocalHook, RebootOption, Task};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt as _;
use tracing::{info, warn};

use crate::Context;

/// How long a gate URL may take to answer.
const URL_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a gate command's stdout and stderr is kept, each.
const OUTPUT_KEPT: usize = 8 * 1024;
/// Attempts at AWS reads that fail for now (throttling, network) before the gate fails.
const READ_ATTEMPTS: u32 = 5;

/// What the gate is judged on.
#[derive(Debug, Clone)]
pub struct WaveFacts<'a> {
    pub run_id: &'a str,
    pub task: &'a Task,
    pub wave: u32,
    pub waves: u32,
    /// Every instance of the wave that was sent a command.
    pub instances: Vec<String>,
    /// Those whose invocation ran on the instance (succeeded, or failed or timed out there):
    /// the ones whose reboot is checked. Undelivered and cancelled ones never installed.
    pub patched: Vec<String>,
    pub command_ids: Vec<String>,
    /// Errors of the task so far (failed invocations and earlier waves' unhealthy instances).
    pub errors: usize,
    pub max_errors: u32,
    /// How long to wait between attempts at a read that failed for now.
    pub retry_pause: Duration,
}

/// The decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    /// Why it failed; empty when it passed.
    pub reason: String,
    /// One object per check that ran, in order.
    pub checks: Value,
    /// Instances the reboot truth found unhealthy: they count as errors from now on.
    pub unhealthy: Vec<String>,
}

/// Judges the gate after `facts.wave`.
pub async fn judge(ctx: &Context, gate: &Gate, facts: &WaveFacts<'_>) -> Verdict {
    let mut checks = Vec::new();
    let mut unhealthy = Vec::new();
    let verdict = |checks: Vec<Value>, unhealthy: Vec<String>, failure: Option<String>| Verdict {
        passed: failure.is_none(),
        reason: failure.unwrap_or_default(),
        checks: Value::Array(checks),
        unhealthy,
    };

    if gate.reboot_truth
        && facts.task.operation == patchd_config::Operation::Install
        && !facts.patched.is_empty()
    {
        let pending_counts = facts.task.reboot_option == RebootOption::RebootIfNeeded;
        match reboot_truth(ctx, &facts.patched, pending_counts, facts.retry_pause).await {
            Ok(truth) => {
                unhealthy = truth.unhealthy();
                checks.push(truth.to_json());
            }
            Err(e) => {
                let reason = format!("the reboot truth could not be read: {e}");
                checks.push(json!({ "check": "reboot_truth", "passed": false, "error": e.to_string() }));
                return verdict(checks, unhealthy, Some(reason));
            }
        }
    }

    let errors = facts.errors + unhealthy.len();
    let within = errors <= facts.max_errors as usize;
    checks.push(json!({
        "check": "error_budget", "passed": within, "errors": errors, "max_errors": facts.max_errors,
    }));
    if !within {
        let mut reason = format!("{errors} error(s), more than max_errors {}", facts.max_errors);
        if !unhealthy.is_empty() {
            reason.push_str(&format!(" (not healthy after the install: {})", unhealthy.join(", ")));
        }
        return verdict(checks, unhealthy, Some(reason));
    }

    if let Some(alarm) = &gate.alarm {
        match triggered(ctx, &facts.command_ids, facts.retry_pause).await {
            Ok(stopped) => {
                let passed = stopped.is_empty();
                checks.push(json!({ "check": "alarm", "alarm": alarm, "passed": passed, "stopped_commands": stopped }));
                if !passed {
                    let reason =
                        format!("alarm `{alarm}` went into ALARM and SSM stopped {}", stopped.join(", "));
                    return verdict(checks, unhealthy, Some(reason));
                }
            }
            Err(e) => {
                checks.push(
                    json!({ "check": "alarm", "alarm": alarm, "passed": false, "error": e.to_string() }),
                );
                let reason = format!("whether alarm `{alarm}` stopped a command could not be read: {e}");
                return verdict(checks, unhealthy, Some(reason));
            }
        }
    }

    if let Some(url) = &gate.url {
        let asked = gate_url(url, facts);
        let (passed, detail) = match get(&asked).await {
            Ok(status) => (status.is_success(), json!({ "status": status.as_u16() })),
            Err(e) => (false, json!({ "error": e })),
        };
        let mut check = json!({ "check": "url", "url": asked, "passed": passed });
        merge(&mut check, detail);
        let failure = (!passed).then(|| match check.get("status") {
            Some(status) => format!("gate URL answered HTTP {status}"),
            None => format!("gate URL unreachable: {}", check["error"].as_str().unwrap_or_default()),
        });
        checks.push(check);
        if let Some(reason) = failure {
            return verdict(checks, unhealthy, Some(reason));
        }
    }

    if let Some(hook) = &gate.command {
        let ran = run_command(hook, facts).await;
        let failure = (!ran.passed()).then(|| ran.failure());
        checks.push(ran.to_json(hook));
        if let Some(reason) = failure {
            return verdict(checks, unhealthy, Some(reason));
        }
    }
    verdict(checks, unhealthy, None)
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(into), Value::Object(from)) = (into, from) {
        into.extend(from);
    }
}

// ---------------------------------------------------------------------------------------------
// Reboot truth

#[derive(Debug, Default)]
struct RebootTruth {
    checked: usize,
    /// Agent not Online (or SSM no longer knows the instance), with its status.
    offline: Vec<(String, String)>,
    failed_patches: Vec<String>,
    pending_reboot: Vec<String>,
}

impl RebootTruth {
    fn unhealthy(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .offline
            .iter()
            .map(|(id, _)| id)
            .chain(&self.failed_patches)
            .chain(&self.pending_reboot)
            .collect();
        all.into_iter().cloned().collect()
    }

    fn to_json(&self) -> Value {
        json!({
            "check": "reboot_truth",
            "passed": self.unhealthy().is_empty(),
            "checked": self.checked,
            "offline": self.offline.iter().map(|(id, ping)| json!({ "instance_id": id, "ping_status": ping })).collect::<Vec<_>>(),
            "failed_patches": self.failed_patches,
            "pending_reboot": self.pending_reboot,
        })
    }
}

async fn reboot_truth(
    ctx: &Context,
    patched: &[String],
    pending_counts: bool,
    pause: Duration,
) -> Result<RebootTruth, AwsError> {
    let agents = with_retries(pause, || ctx.aws.describe_agents(patched)).await?;
    let states = with_retries(pause, || ctx.aws.patch_states(patched)).await?;
    let mut truth = RebootTruth { checked: patched.len(), ..RebootTruth::default() };
    for id in patched {
        match agents.get(id).map(|a| &a.ping) {
            Some(Reported::Known(PingStatus::Online)) => {}
            Some(ping) => truth.offline.push((id.clone(), ping.to_string())),
            None => truth.offline.push((id.clone(), "not managed".into())),
        }
    }
    for state in &states {
        if state.counts.by_state.failed > 0 {
            truth.failed_patches.push(state.instance_id.clone());
        }
        if pending_counts && state.counts.by_state.installed_pending_reboot > 0 {
            truth.pending_reboot.push(state.instance_id.clone());
        }
    }
    Ok(truth)
}

async fn with_retries<T, F, Fut>(pause: Duration, mut call: F) -> Result<T, AwsError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AwsError>>,
{
    let mut attempt = 1;
    loop {
        match call().await {
            Err(e) if e.is_transient() && attempt < READ_ATTEMPTS => {
                warn!(error = %e, attempt, "a gate read failed for now; retrying");
                tokio::time::sleep(pause * attempt).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Alarm

/// The wave's commands SSM stopped because an alarm of theirs went into ALARM.
async fn triggered(ctx: &Context, command_ids: &[String], pause: Duration) -> Result<Vec<String>, AwsError> {
    let mut stopped = Vec::new();
    for id in command_ids {
        let command = with_retries(pause, || ctx.aws.command(id)).await?;
        if !command.triggered_alarms.is_empty() {
            stopped.push(id.clone());
        }
    }
    Ok(stopped)
}

// ---------------------------------------------------------------------------------------------
// URL

/// The gate URL with `run`, `task` and `wave` appended to its query.
fn gate_url(url: &str, facts: &WaveFacts<'_>) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!(
        "{url}{separator}run={}&task={}&wave={}&waves={}",
        query_escape(facts.run_id),
        query_escape(&facts.task.name),
        facts.wave,
        facts.waves
    )
}

fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn get(url: &str) -> Result<http::StatusCode, String> {
    let (client, roots_problem) = crate::http_client::build();
    let request = http::Request::get(url)
        .header(http::header::USER_AGENT, concat!("patchd/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("invalid URL: {e}"))?;
    let answer = tokio::time::timeout(URL_TIMEOUT, async {
        let response = client.request(request).await.map_err(|e| match &roots_problem {
            Some(roots) if url.starts_with("https://") => {
                format!("{e} (the system's trust roots could not be loaded: {roots})")
            }
            _ => e.to_string(),
        })?;
        let status = response.status();
        // Read the body so the connection closes cleanly; what it says is not judged.
        let _ = response.into_body().collect().await;
        Ok::<_, String>(status)
    })
    .await;
    answer.unwrap_or_else(|_| Err(format!("no answer within {} s", URL_TIMEOUT.as_secs())))
}

// ---------------------------------------------------------------------------------------------
// Command on the admin host

#[derive(Debug)]
struct Ran {
    exit_code: Option<i32>,
    timed_out: bool,
    spawn_error: Option<String>,
    stdout: String,
    stderr: String,
    millis: u128,
}

impl Ran {
    fn passed(&self) -> bool {
        self.exit_code == Some(0) && !self.timed_out && self.spawn_error.is_none()
    }

    fn failure(&self) -> String {
        if let Some(e) = &self.spawn_error {
            format!("the gate command could not be started: {e}")
        } else if self.timed_out {
            format!("the gate command did not finish within its timeout ({} ms)", self.millis)
        } else {
            match self.exit_code {
                Some(code) => format!("the gate command vetoed the wave (exit {code})"),
                None => "the gate command was killed by a signal".into(),
            }
        }
    }

    fn to_json(&self, hook: &LocalHook) -> Value {
        json!({
            "check": "command",
            "passed": self.passed(),
            "argv": std::iter::once(&hook.program).chain(&hook.args).collect::<Vec<_>>(),
            "exit_code": self.exit_code,
            "timed_out": self.timed_out,
            "error": self.spawn_error,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_ms": self.millis as u64,
        })
    }
}

async fn run_command(hook: &LocalHook, facts: &WaveFacts<'_>) -> Ran {
    let started = std::time::Instant::now();
    let mut ran = Ran {
        exit_code: None,
        timed_out: false,
        spawn_error: None,
        stdout: String::new(),
        stderr: String::new(),
        millis: 0,
    };
    let child = tokio::process::Command::new(&hook.program)
        .args(&hook.args)
        .env("PATCHD_RUN_ID", facts.run_id)
        .env("PATCHD_TASK", &facts.task.name)
        .env("PATCHD_WAVE", facts.wave.to_string())
        .env("PATCHD_WAVES", facts.waves.to_string())
        .env("PATCHD_INSTANCE_IDS", facts.instances.join(","))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            ran.spawn_error = Some(format!("{}: {e}", hook.program));
            return ran;
        }
    };
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let finished = tokio::time::timeout(hook.timeout, async {
        let (status, _, _) =
            tokio::join!(child.wait(), stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
        status
    })
    .await;
    match finished {
        Ok(Ok(status)) => ran.exit_code = status.code(),
        Ok(Err(e)) => ran.spawn_error = Some(e.to_string()),
        Err(_) => {
            ran.timed_out = true;
            let _ = child.kill().await;
        }
    }
    ran.stdout = kept(&out);
    ran.stderr = kept(&err);
    ran.millis = started.elapsed().as_millis();
    info!(program = %hook.program, exit_code = ?ran.exit_code, timed_out = ran.timed_out, "gate command ran");
    ran
}

/// The start of a stream, as text, cut at `OUTPUT_KEPT` bytes on a character boundary.
fn kept(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= OUTPUT_KEPT {
        return text.into_owned();
    }
    let mut end = OUTPUT_KEPT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_urls_carry_the_run_escaped() {
        let task = patchd_config::Task {
            name: "install prod".into(),
            operation: patchd_config::Operation::Install,
            groups: vec![],
            reboot_option: RebootOption::RebootIfNeeded,
            max_concurrency: patchd_config::Limit::Count(1),
            max_errors: patchd_config::Limit::Count(0),
            priority: 1,
            timeout_seconds: 600,
            waves: Default::default(),
            promote: None,
            origin: patchd_config::Origin { file: std::sync::Arc::new("t".into()), line: 0, col: 0 },
        };
        let facts = WaveFacts {
            run_id: "r-1",
            task: &task,
            wave: 2,
            waves: 4,
            instances: vec![],
            patched: vec![],
            command_ids: vec![],
            errors: 0,
            max_errors: 0,
            retry_pause: Duration::ZERO,
        };
        assert_eq!(
            gate_url("http://h/gate", &facts),
            "http://h/gate?run=r-1&task=install%20prod&wave=2&waves=4"
        );
        assert_eq!(
            gate_url("http://h/g?x=1", &facts),
            "http://h/g?x=1&run=r-1&task=install%20prod&wave=2&waves=4"
        );
    }

    #[test]
    fn kept_output_is_cut_on_a_character_boundary() {
        let long = "é".repeat(OUTPUT_KEPT);
        let cut = kept(long.as_bytes());
        assert!(cut.ends_with(&format!("({} bytes in all)", long.len())));
        assert!(cut.len() < long.len());
        assert_eq!(kept(b"short"), "short");
    }
}
