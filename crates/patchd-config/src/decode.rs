//! Turns one file's TOML tree into typed sections, recording every problem it meets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use patchd_model::OperatingSystem;
use patchd_schedule::{Expression, Schedule, ScheduleSpec, Tz};
use toml::de::DeValue;
use toml::value::Datetime;

use crate::diagnostic::{did_you_mean, Diagnostics, Located, Origin};
use crate::model::*;
use crate::reader::{Source, TableReader};

/// What one file contributes. Singleton sections stay optional so the merge can tell
/// "not written here" from "written with defaults".
#[derive(Debug, Default)]
pub(crate) struct FilePart {
    pub(crate) daemon: Option<(Daemon, Origin)>,
    pub(crate) aws: Option<(AwsPart, Origin)>,
    pub(crate) sla: Option<(SlaPolicy, Origin)>,
    pub(crate) events: Option<(Events, Origin)>,
    pub(crate) advisory_sources: Vec<AdvisorySource>,
    pub(crate) exceptions: Vec<Exception>,
    pub(crate) baselines: Vec<Baseline>,
    pub(crate) groups: Vec<Group>,
    pub(crate) windows: Vec<Window>,
    /// Schedules written as `rate(...)` without a start date, for the anchor warning.
    pub(crate) unanchored_rates: Vec<(String, Origin)>,
    pub(crate) refs: Refs,
}

/// Names and references, recorded even when the section around them has errors, so that a
/// duplicate name or a misspelt group is reported in the same run as everything else.
#[derive(Debug, Default)]
pub(crate) struct Refs {
    /// (kind, name) of every baseline, group, window and exception.
    pub(crate) names: Vec<(&'static str, Located<String>)>,
    /// Group names referred to, and by what.
    pub(crate) groups: Vec<(Located<String>, String)>,
    /// Windows named by `[window.task.promote] from`, and by what.
    pub(crate) promotions: Vec<(Located<String>, String)>,
    /// The `accounts` and `regions` scopes of groups and windows name; whether those exist is
    /// only known once `[aws]`, which may be in another file, is merged.
    pub(crate) scopes: Vec<ScopeRef>,
}

#[derive(Debug)]
pub(crate) struct ScopeRef {
    /// What the scope belongs to, e.g. "group `eu-web`".
    pub(crate) context: String,
    pub(crate) accounts: Vec<Located<String>>,
    /// Only the well-formed region codes: a malformed one has its own error already.
    pub(crate) regions: Vec<Located<String>>,
}

/// `[aws]` and the account names it defines, including those of `[[aws.account]]` entries
/// dropped for errors, so that a scope naming such an account is not also "unknown".
#[derive(Debug)]
pub(crate) struct AwsPart {
    pub(crate) aws: Aws,
    pub(crate) account_names: Vec<String>,
    /// Whether every `[[aws.account]]` entry made it into `aws.accounts`; when one did not,
    /// which regions the accounts cover is unknown.
    pub(crate) complete: bool,
}

/// None when the file is not valid TOML: its syntax errors are reported, and checking what a
/// broken tree means would only add noise.
pub(crate) fn decode_file(src: &Source, d: &mut Diagnostics) -> Option<FilePart> {
    let (root, errors) = toml::de::DeTable::parse_recoverable(&src.text);
    for error in &errors {
        let origin = src.origin_at(error.span().map_or(0, |s| s.start));
        d.error(&origin, format!("invalid TOML: {}", error.message().trim_end()), None);
    }
    if !errors.is_empty() {
        return None;
    }
    crate::credentials::check(src, root.get_ref(), d);
    let base_dir = src.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut r = TableReader::new(src, root.get_ref(), &(0..0), "the top level");
    let mut part = FilePart::default();
    if let Some(mut t) = r.table(d, "daemon", "[daemon]") {
        let origin = t.origin.clone();
        part.daemon = Some((decode_daemon(&mut t, d, &base_dir), origin));
        t.finish(d);
    }
    if let Some(mut t) = r.table(d, "aws", "[aws]") {
        let origin = t.origin.clone();
        part.aws = Some((decode_aws(&mut t, d), origin));
        t.finish(d);
    }
    if let Some(mut t) = r.table(d, "sla", "[sla]") {
        let origin = t.origin.clone();
        part.sla = Some((decode_sla(&mut t, d, &base_dir), origin));
        t.finish(d);
    }
    if let Some(mut t) = r.table(d, "events", "[events]") {
        let origin = t.origin.clone();
        part.events = Some((decode_events(&mut t, d, &base_dir), origin));
        t.finish(d);
    }
    if let Some(mut t) = r.table(d, "advisories", "[advisories]") {
        for mut source in t.tables(d, "source", "[[advisories.source]]") {
            part.advisory_sources.extend(decode_advisory_source(&mut source, d, &base_dir, &mut part.refs));
            source.finish(d);
        }
        t.finish(d);
    }
    for mut t in r.tables(d, "exception", "[[exception]]") {
        part.exceptions.extend(decode_exception(&mut t, d, &mut part.refs));
        t.finish(d);
    }
    for mut t in r.tables(d, "baseline", "[[baseline]]") {
        part.baselines.extend(decode_baseline(&mut t, d, &mut part.refs));
        t.finish(d);
    }
    for mut t in r.tables(d, "group", "[[group]]") {
        part.groups.extend(decode_group(&mut t, d, &mut part.refs));
        t.finish(d);
    }
    for mut t in r.tables(d, "window", "[[window]]") {
        if let Some(window) = decode_window(&mut t, d, &mut part.unanchored_rates, &mut part.refs) {
            part.windows.push(window);
        }
        t.finish(d);
    }
    r.finish(d);
    Some(part)
}

const FEED_URL_HINT: &str = "write an https:// URL, an http:// URL to a loopback address (a local mirror), or a file path (file:///srv/mirror/feed.json or a plain path)";

/// How often a feed may be fetched: more often than every 5 minutes only loads the vendor;
/// less often than weekly leaves clocks stale.
const FEED_REFRESH_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(300)..=std::time::Duration::from_secs(7 * 86_400);

/// A feed's URL or path. Plain `http://` is accepted only to a loopback address: release dates
/// are compliance evidence, and anything on the way could rewrite them.
fn feed_location(base_dir: &Path, written: &str) -> Result<FeedLocation, String> {
    let written = written.trim();
    if let Some(path) = written.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(format!("`{written}` is not an absolute file URL"));
        }
        return Ok(FeedLocation::File(PathBuf::from(path)));
    }
    if let Some(rest) = written.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(format!("`{written}` has no host"));
        }
        return Ok(FeedLocation::Http(written.to_string()));
    }
    if let Some(rest) = written.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or("");
        let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
        return if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            Ok(FeedLocation::Http(written.to_string()))
        } else {
            Err(format!("`{written}` is plain http to another host; release dates fetched that way could be altered in transit"))
        };
    }
    if written.contains("://") {
        return Err(format!("`{written}` uses a scheme patchd cannot fetch"));
    }
    if written.is_empty() {
        return Err("the location is empty".into());
    }
    Ok(FeedLocation::File(resolve_path(base_dir, written)))
}

fn decode_advisory_source(
    r: &mut TableReader,
    d: &mut Diagnostics,
    base_dir: &Path,
    refs: &mut Refs,
) -> Option<AdvisorySource> {
    let name = r.required_string(d, "name", "\"amazon-linux-2023\"");
    if let Some(name) = &name {
        refs.names.push(("advisory source", name.clone()));
        if name.value == KEV_SOURCE {
            d.error(
                &name.origin,
                format!("`{KEV_SOURCE}` names the KEV catalog's feed"),
                Some("choose another name".into()),
            );
        }
    }
    let kinds: Vec<&'static str> = patchd_advisories::FeedKind::ALL.iter().map(|k| k.name()).collect();
    let kind = r.choice(d, "kind", &kinds).and_then(|k| patchd_advisories::FeedKind::from_name(k.value));
    if r.get("kind").is_none() {
        d.error(
            &r.origin,
            "[[advisories.source]] is missing the required key `kind`",
            Some(format!("add `kind = \"amazon-linux\"`; kinds: {}", kinds.join(", "))),
        );
    }
    let url = r.required_string(
        d,
        "url",
        "\"https://cdn.amazonlinux.com/al2023/core/mirrors/latest/x86_64/repodata/updateinfo.xml.gz\"",
    );
    let location = url.and_then(|url| match feed_location(base_dir, &url.value) {
        Ok(location) => Some(location),
        Err(message) => {
            d.error(&url.origin, format!("`url`: {message}"), Some(FEED_URL_HINT.into()));
            None
        }
    });
    let platforms = r.string_list(d, "platforms", "[\"AMAZON_LINUX_2023\"]");
    let mut platforms_ok = Vec::new();
    match platforms {
        None => d.error(
            &r.origin,
            "[[advisories.source]] is missing the required key `platforms`",
            Some("add the SSM operating systems it dates, e.g. `platforms = [\"AMAZON_LINUX_2023\"]`".into()),
        ),
        Some(list) => {
            for platform in list {
                if let Some(os) = OperatingSystem::parse(&platform.value) {
                    platforms_ok.push(os);
                } else {
                    let hint = did_you_mean(&platform.value, OperatingSystem::NAMES.iter().copied())
                        .unwrap_or_else(|| {
                            format!("SSM's operating systems: {}", OperatingSystem::NAMES.join(", "))
                        });
                    d.error(
                        &platform.origin,
                        format!("unknown operating system `{}`", platform.value),
                        Some(hint),
                    );
                }
            }
        }
    }
    let mut refresh = DEFAULT_FEED_REFRESH;
    if let Some(written) = r.string(d, "refresh", "\"6h\"") {
        match parse_interval(&written).filter(|i| FEED_REFRESH_RANGE.contains(i)) {
            Some(i) => refresh = i,
            None => d.error(
                &written.origin,
                format!("`refresh` must be a duration from 5m to 7d, found `{}`", written.value),
                Some("write a number and a unit (m, h, d), e.g. `refresh = \"6h\"`".into()),
            ),
        }
    }
    let mut timeout = DEFAULT_FEED_TIMEOUT;
    if let Some(written) = r.string(d, "timeout", "\"5m\"") {
        match parse_interval(&written).filter(|i| {
            (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(3600)).contains(i)
        }) {
            Some(i) => timeout = i,
            None => d.error(
                &written.origin,
                format!("`timeout` must be a duration from 1s to 1h, found `{}`", written.value),
                Some("write a number and a unit (s, m, h), e.g. `timeout = \"5m\"`".into()),
            ),
        }
    }
    let mut max_bytes = DEFAULT_FEED_MAX_BYTES;
    if let Some(mib) = r.integer(d, "max_size_mib", 1..=16_384, "512") {
        max_bytes = mib.value as u64 * 1024 * 1024;
    }
    Some(AdvisorySource {
        name: name?.value,
        kind: kind?,
        location: location?,
        platforms: platforms_ok,
        refresh,
        timeout,
        max_bytes,
        origin: r.origin.clone(),
    })
}

fn resolve_path(base_dir: &Path, written: &str) -> PathBuf {
    let path = PathBuf::from(written);
    if path.is_absolute() {
        path
    } else {
        base_dir.join(path)
    }
}

pub(crate) fn default_daemon() -> Daemon {
    let state_dir = PathBuf::from(DEFAULT_STATE_DIR);
    Daemon {
        database_url: default_database_url(&state_dir),
        listen: DEFAULT_LISTEN.parse().expect("the default listen address is valid"),
        state_dir,
        sync_interval: DEFAULT_SYNC_INTERVAL,
        sync_retry_interval: DEFAULT_SYNC_RETRY_INTERVAL,
        prune_baselines: false,
        api_token_file: None,
        tls: None,
        lease: LeaseTiming::default(),
    }
}

fn default_database_url(state_dir: &Path) -> DatabaseUrl {
    DatabaseUrl::new(format!("sqlite://{}", state_dir.join("patchd.db").display()))
}

fn decode_daemon(r: &mut TableReader, d: &mut Diagnostics, base_dir: &Path) -> Daemon {
    let mut daemon = default_daemon();
    if let Some(dir) = r.string(d, "state_dir", "\"/var/lib/patchd\"") {
        daemon.state_dir = resolve_path(base_dir, &dir);
    }
    daemon.database_url = default_database_url(&daemon.state_dir);
    if let Some(url) = r.string(d, "database_url", "\"sqlite:///var/lib/patchd/patchd.db\"") {
        if url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://") {
            daemon.database_url = DatabaseUrl::new(url.value);
        } else {
            d.error(
                &url.origin,
                "`database_url` must be an SQLite or PostgreSQL URL",
                Some("write `sqlite:///var/lib/patchd/patchd.db` or `postgres://user@host/patchd`".into()),
            );
        }
    }
    let listen = r.string(d, "listen", "\"127.0.0.1:9487\"");
    if let Some(listen) = &listen {
        match listen.parse() {
            Ok(addr) => daemon.listen = addr,
            Err(_) => d.error(
                &listen.origin,
                format!("`listen` must be an IP address and port, found `{}`", listen.value),
                Some("write `listen = \"127.0.0.1:9487\"`; use `0.0.0.0:9487` only behind a firewall".into()),
            ),
        }
    }
    if let Some(token) = r.string(d, "api_token_file", "\"/etc/patchd/api.token\"") {
        if token.trim().is_empty() {
            d.error(
                &token.origin,
                "`api_token_file` is empty",
                Some("name the file holding the API bearer token, e.g. `/etc/patchd/api.token`".into()),
            );
        } else {
            daemon.api_token_file = Some(resolve_path(base_dir, &token));
        }
    }
    let mut tls_file = |key: &'static str, example: &'static str| {
        let file = r.string(d, key, example)?;
        if file.trim().is_empty() {
            d.error(
                &file.origin,
                format!("`{key}` is empty"),
                Some(format!("name a PEM file, e.g. `{example}`")),
            );
            return None;
        }
        let path = resolve_path(base_dir, &file);
        Some((file.origin, path))
    };
    let cert = tls_file("tls_cert_file", "\"/etc/patchd/tls/cert.pem\"");
    let key = tls_file("tls_key_file", "\"/etc/patchd/tls/key.pem\"");
    match (cert, key) {
        (Some((_, cert_file)), Some((_, key_file))) => daemon.tls = Some(TlsFiles { cert_file, key_file }),
        (Some((origin, _)), None) => d.error(
            &origin,
            "`tls_cert_file` is set without `tls_key_file`",
            Some(
                "add `tls_key_file`, the certificate's private key (PEM), or drop both for plain HTTP".into(),
            ),
        ),
        (None, Some((origin, _))) => d.error(
            &origin,
            "`tls_key_file` is set without `tls_cert_file`",
            Some("add `tls_cert_file`, the certificate chain (PEM), or drop both for plain HTTP".into()),
        ),
        (None, None) => {}
    }
    if let Some(listen) = &listen {
        if !daemon.listen.ip().is_loopback() && daemon.api_token_file.is_some() && daemon.tls.is_none() {
            d.warning(
                &listen.origin,
                format!(
                    "`listen = \"{}\"` is not a loopback address and TLS is off: the bearer token and \
                     the answers cross the network in clear",
                    listen.value
                ),
                Some(
                    "set `tls_cert_file` and `tls_key_file`, or terminate TLS in front of patchd \
                     (a reverse proxy, a service mesh)"
                        .into(),
                ),
            );
        }
        if !daemon.listen.ip().is_loopback() && daemon.api_token_file.is_none() {
            d.error(
                &listen.origin,
                format!(
                    "`listen = \"{}\"` is not a loopback address, and `api_token_file` is not set: \
                     the API and metrics would be open to anyone who can reach the port",
                    listen.value
                ),
                Some(
                    "add `api_token_file = \"/etc/patchd/api.token\"` (a file holding the bearer token), \
                     or listen on `127.0.0.1`"
                        .into(),
                ),
            );
        }
    }
    if let Some(interval) = r.string(d, "sync_interval", "\"6h\"") {
        match parse_interval(&interval).filter(|i| SYNC_INTERVAL_RANGE.contains(i)) {
            Some(i) => daemon.sync_interval = i,
            None => d.error(
                &interval.origin,
                format!("`sync_interval` must be a duration from 1m to 7d, found `{}`", interval.value),
                Some(
                    "write a number and a unit (s, m, h, d), e.g. `sync_interval = \"6h\"` or `\"1h30m\"`"
                        .into(),
                ),
            ),
        }
    }
    if let Some(interval) = r.string(d, "sync_retry_interval", "\"2m\"") {
        match parse_interval(&interval).filter(|i| SYNC_RETRY_INTERVAL_RANGE.contains(i)) {
            Some(i) => daemon.sync_retry_interval = i,
            None => d.error(
                &interval.origin,
                format!("`sync_retry_interval` must be a duration from 5s to 1h, found `{}`", interval.value),
                Some("write a number and a unit (s, m, h), e.g. `sync_retry_interval = \"2m\"`".into()),
            ),
        }
    }
    if let Some(prune) = r.bool(d, "prune_baselines") {
        daemon.prune_baselines = prune;
    }
    decode_lease(r, d, &mut daemon.lease);
    daemon
}

/// `lease_ttl` and `lease_renew_interval`: the renewal must come at least twice per lease, so
/// that one late renewal does not cost the leadership.
fn decode_lease(r: &mut TableReader, d: &mut Diagnostics, lease: &mut LeaseTiming) {
    let ttl = r.string(d, "lease_ttl", "\"15s\"");
    if let Some(text) = &ttl {
        match parse_interval(text).filter(|t| LEASE_TTL_RANGE.contains(t)) {
            Some(t) => lease.ttl = t,
            None => d.error(
                &text.origin,
                format!("`lease_ttl` must be a duration from 2s to 5m, found `{}`", text.value),
                Some("write e.g. `lease_ttl = \"15s\"`; a standby takes over about this long after a leader dies".into()),
            ),
        }
    }
    let renew = r.string(d, "lease_renew_interval", "\"5s\"");
    if let Some(text) = &renew {
        match parse_interval(text).filter(|t| !t.is_zero()) {
            Some(t) => lease.renew_every = t,
            None => d.error(
                &text.origin,
                format!("`lease_renew_interval` must be a duration of at least 1s, found `{}`", text.value),
                Some("write e.g. `lease_renew_interval = \"5s\"`".into()),
            ),
        }
    }
    if lease.renew_every.saturating_mul(2) > lease.ttl {
        if let Some(at) = renew.as_ref().or(ttl.as_ref()) {
            d.error(
                &at.origin,
                format!(
                    "`lease_renew_interval` ({}s) must be at most half of `lease_ttl` ({}s)",
                    lease.renew_every.as_secs_f64(),
                    lease.ttl.as_secs_f64()
                ),
                Some("renew at least twice per lease, e.g. `lease_ttl = \"15s\"` with `lease_renew_interval = \"5s\"`".into()),
            );
        }
    }
}

/// `90s`, `30m`, `6h`, `1d`, or a sum such as `1h30m`. None when malformed or overflowing.
pub(crate) fn parse_interval(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut number: Option<u64> = None;
    for c in text.chars() {
        if let Some(digit) = c.to_digit(10) {
            number = Some(number.unwrap_or(0).checked_mul(10)?.checked_add(u64::from(digit))?);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(number.take()?.checked_mul(unit)?)?;
    }
    if number.is_some() {
        // A trailing number without its unit: `6` could mean anything.
        return None;
    }
    Some(std::time::Duration::from_secs(total))
}

fn is_region(s: &str) -> bool {
    // e.g. us-east-1, eu-central-2, us-gov-west-1, ap-southeast-4
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

fn check_region(d: &mut Diagnostics, region: &Located<String>) -> bool {
    let ok = is_region(region);
    if !ok {
        d.error(
            &region.origin,
            format!("`{}` is not an AWS region name", region.value),
            Some("write a region code such as `us-east-1` or `eu-central-1`".into()),
        );
    }
    ok
}

/// A list of region codes: every malformed code and every repeat is reported. Returns the
/// well-formed codes, once each, and whether the list had no problem.
fn check_regions(d: &mut Diagnostics, regions: Vec<Located<String>>) -> (Vec<Located<String>>, bool) {
    let before = regions.len();
    let valid: Vec<Located<String>> = regions.into_iter().filter(|region| check_region(d, region)).collect();
    let malformed = valid.len() != before;
    let unique = no_repeats(d, valid, "region");
    let ok = !malformed && unique.1;
    (unique.0, ok)
}

/// Reports each value listed a second time in one list; returns the first of each and
/// whether there was no repeat. A repeat is harmless to patchd, but it is usually a
/// copy-and-paste slip where another value was meant.
fn no_repeats(d: &mut Diagnostics, items: Vec<Located<String>>, what: &str) -> (Vec<Located<String>>, bool) {
    let mut kept: Vec<Located<String>> = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        if let Some(first) = kept.iter().find(|k| k.value == item.value) {
            ok = false;
            d.error(
                &item.origin,
                format!("{what} `{}` is listed twice", item.value),
                Some(format!("first listed at {}; remove one", first.origin)),
            );
        } else {
            kept.push(item);
        }
    }
    (kept, ok)
}

/// `accounts` and `regions` of a `[[group]]` or `[[window]]`. Account names are only recorded
/// here: `[aws]` may be in another file, so they are resolved after the merge.
fn decode_scope(r: &mut TableReader, d: &mut Diagnostics, context: String, refs: &mut Refs) -> Scoping {
    let accounts = r.string_list(d, "accounts", "[\"payments-prod\"]").unwrap_or_default();
    let (accounts, _) = no_repeats(d, accounts, "account");
    let regions = r.string_list(d, "regions", "[\"eu-central-1\"]").unwrap_or_default();
    let (regions, _) = check_regions(d, regions);
    let scope = Scoping {
        accounts: accounts.iter().map(|a| a.value.clone()).collect(),
        regions: regions.iter().map(|r| r.value.clone()).collect(),
    };
    refs.scopes.push(ScopeRef { context, accounts, regions });
    scope
}

fn decode_aws(r: &mut TableReader, d: &mut Diagnostics) -> AwsPart {
    let mut aws = default_aws();
    if let Some(region) = r.string(d, "region", "\"eu-central-1\"") {
        if check_region(d, &region) {
            aws.region = Some(region.value);
        }
    }
    if let Some(url) = r.string(d, "endpoint_url", "\"http://127.0.0.1:4566\"") {
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                aws.endpoint_url = Some(url.value)
            }
            _ => d.error(
                &url.origin,
                format!("`endpoint_url` must be an http:// or https:// URL, found `{}`", url.value),
                Some(
                    "write `endpoint_url = \"http://127.0.0.1:4566\"`, or leave it out to talk to AWS".into(),
                ),
            ),
        }
    }
    aws.profile = r.string(d, "profile", "\"patching\"").map(|p| p.value);
    if let Some(n) = r.integer(d, "max_attempts", 1..=10, "3") {
        aws.max_attempts = n.value as u32;
    }
    if let Some(mode) = r.choice(d, "retry_mode", &["standard", "adaptive"]) {
        aws.retry_mode = if *mode == "adaptive" { RetryMode::Adaptive } else { RetryMode::Standard };
    }
    let home_name = r.string(d, "name", "\"admin\"");
    if let Some(name) = &home_name {
        if name.trim().is_empty() {
            d.error(
                &name.origin,
                "`name` in [aws] must not be empty",
                Some(format!("leave it out to call the home account `{DEFAULT_HOME_ACCOUNT}`")),
            );
        } else if check_name(d, name, "account") {
            aws.name = name.value.clone();
        }
    }
    let regions_origin = r.get("regions").map(|v| r.origin_of(v));
    if let Some(regions) = r.string_list(d, "regions", "[\"eu-central-1\", \"eu-west-1\"]") {
        if let (true, Some(origin)) = (regions.is_empty(), &regions_origin) {
            d.error(
                origin,
                "`regions` in [aws] is empty, so the home account would have no region",
                Some("list the home account's regions, e.g. `regions = [\"eu-central-1\"]`, or leave `regions` out to use `region`".into()),
            );
        }
        let (regions, ok) = check_regions(d, regions);
        if ok {
            aws.regions = regions.into_iter().map(|r| r.value).collect();
        }
    }
    let home_hint = match &home_name {
        Some(name) => format!("the home account is named at {}; give this account another `name`", name.origin),
        None => format!(
            "the home account (credentials from the default chain) is `{DEFAULT_HOME_ACCOUNT}` unless [aws] sets \
             `name`; give this account another `name`, or set `name` in [aws]"
        ),
    };
    let mut account_names = Vec::new();
    let mut names_seen: Vec<Located<String>> = Vec::new();
    let mut roles_seen: Vec<(Located<String>, Option<String>)> = Vec::new();
    let tables = r.tables(d, "account", "[[aws.account]]");
    let written = tables.len();
    for mut t in tables {
        let name = t.required_string(d, "name", "\"payments-prod\"");
        let role_arn = t.required_string(d, "role_arn", "\"arn:aws:iam::123456789012:role/patchd\"");
        let external_id = t.string(d, "external_id", "\"a-shared-secret\"").map(|s| s.value);
        // Absent or empty: the account is in the home account's regions.
        let regions = t.string_list(d, "regions", "[\"eu-central-1\"]").unwrap_or_default();
        let (regions, regions_ok) = check_regions(d, regions);
        let mut name_ok = false;
        if let Some(name) = &name {
            account_names.push(name.value.clone());
            name_ok = check_name(d, name, "account");
            if name.value == aws.name {
                name_ok = false;
                d.error(
                    &name.origin,
                    format!("`{}` is already the name of the home account ([aws] name)", name.value),
                    Some(home_hint.clone()),
                );
            } else if let Some(first) = names_seen.iter().find(|n| n.value == name.value) {
                name_ok = false;
                d.error(
                    &name.origin,
                    format!("account `{}` is defined twice", name.value),
                    Some(format!(
                        "first defined at {}; each [[aws.account]] needs its own `name`",
                        first.origin
                    )),
                );
            } else {
                names_seen.push(name.clone());
            }
        }
        let mut role_ok = false;
        if let Some(arn) = &role_arn {
            role_ok = is_role_arn(arn);
            if !role_ok {
                d.error(
                    &arn.origin,
                    format!("`role_arn` must be an IAM role ARN, found `{}`", arn.value),
                    Some("write `arn:aws:iam::<12-digit account id>:role/<role name>`".into()),
                );
            } else if let Some((first, first_name)) = roles_seen.iter().find(|(r, _)| r.value == arn.value) {
                // Two names for one role would patch the same instances twice, under two labels.
                role_ok = false;
                let first_name =
                    first_name.as_deref().map_or(String::new(), |n| format!(" by account `{n}`"));
                d.error(
                    &arn.origin,
                    format!("role `{}` is already assumed{first_name}", arn.value),
                    Some(format!(
                        "first used at {}; each [[aws.account]] must assume its own role (two accounts may \
                         share an account id with different roles)",
                        first.origin
                    )),
                );
            } else {
                roles_seen.push((arn.clone(), name.as_ref().map(|n| n.value.clone())));
            }
        }
        if let (Some(name), Some(role_arn), true, true, true) = (name, role_arn, name_ok, role_ok, regions_ok)
        {
            aws.accounts.push(Account {
                name: name.value,
                role_arn: role_arn.value,
                external_id,
                regions: regions.into_iter().map(|r| r.value).collect(),
                origin: t.origin.clone(),
            });
        }
        t.finish(d);
    }
    // `account` written as something other than `[[aws.account]]` sections is an error too.
    let malformed = written == 0 && r.get("account").is_some();
    let complete = aws.accounts.len() == written && !malformed;
    AwsPart { aws, account_names, complete }
}

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && account_of_role(arn).is_some()
        && parts[5].strip_prefix("role/").is_some_and(|name| !name.is_empty())
}

pub(crate) fn default_aws() -> Aws {
    Aws::default()
}

/// `[events]`: an EventBridge bus and/or a signed webhook. The secret file is only named here;
/// the daemon reads it when it starts.
fn decode_events(r: &mut TableReader, d: &mut Diagnostics, base_dir: &Path) -> Events {
    let mut events = Events::default();
    if let Some(bus) = r.string(d, "bus_name", "\"patchd\"") {
        if is_event_bus(&bus) {
            events.bus_name = Some(bus.value);
        } else {
            d.error(
                &bus.origin,
                format!("`bus_name` must be an EventBridge bus name or ARN, found `{}`", bus.value),
                Some(
                    "write a name of up to 256 letters, digits and `.-_/` (e.g. `patchd`), or \
                     `arn:aws:events:<region>:<account id>:event-bus/<name>`"
                        .into(),
                ),
            );
        }
    }
    let url = r.string(d, "webhook_url", "\"https://hooks.example.com/patchd\"");
    if let Some(url) = &url {
        let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                events.webhook_url = Some(url.value.clone())
            }
            _ => d.error(
                &url.origin,
                format!("`webhook_url` must be an http:// or https:// URL, found `{}`", url.value),
                Some("write `webhook_url = \"https://hooks.example.com/patchd\"`".into()),
            ),
        }
    }
    let secret = r.string(d, "webhook_secret_file", "\"/etc/patchd/webhook.key\"");
    match (&url, &secret) {
        (Some(url), None) => d.error(
            &url.origin,
            "`webhook_url` needs `webhook_secret_file`: unsigned events could be forged by anyone who finds the URL",
            Some("add `webhook_secret_file = \"/etc/patchd/webhook.key\"`, a file holding the HMAC key".into()),
        ),
        (None, Some(secret)) => d.error(
            &secret.origin,
            "`webhook_secret_file` is set without `webhook_url`",
            Some("add `webhook_url`, or remove `webhook_secret_file`".into()),
        ),
        _ => {}
    }
    if let Some(secret) = secret {
        if secret.trim().is_empty() {
            d.error(
                &secret.origin,
                "`webhook_secret_file` is empty",
                Some("name the file holding the HMAC key".into()),
            );
        } else {
            events.webhook_secret_file = Some(resolve_path(base_dir, &secret));
        }
    }
    if let Some(due_soon) = r.bool(d, "due_soon") {
        events.due_soon = due_soon;
    }
    events
}

/// An EventBridge bus name (`[/\.\-_A-Za-z0-9]{1,256}`) or bus ARN.
fn is_event_bus(s: &str) -> bool {
    if let Some(rest) = s.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        return parts.len() == 5
            && parts[0].starts_with("aws")
            && parts[1] == "events"
            && is_region(parts[2])
            && parts[3].len() == 12
            && parts[3].bytes().all(|b| b.is_ascii_digit())
            && parts[4].strip_prefix("event-bus/").is_some_and(is_event_bus_name);
    }
    is_event_bus_name(s)
}

fn is_event_bus_name(s: &str) -> bool {
    (1..=256).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b))
}

fn is_cve(s: &str) -> bool {
    let mut parts = s.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("CVE"), Some(year), Some(seq), None)
            if year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit())
                && seq.len() >= 4 && seq.bytes().all(|b| b.is_ascii_digit())
    )
}

fn decode_sla(r: &mut TableReader, d: &mut Diagnostics, base_dir: &Path) -> SlaPolicy {
    let mut sla = SlaPolicy::default();
    let days = |r: &mut TableReader, d: &mut Diagnostics, key, slot: &mut u32| {
        if let Some(n) = r.integer(d, key, 1..=3650, "30") {
            *slot = n.value as u32;
        }
    };
    days(r, d, "critical_days", &mut sla.critical_days);
    days(r, d, "high_days", &mut sla.high_days);
    days(r, d, "medium_days", &mut sla.medium_days);
    days(r, d, "low_days", &mut sla.low_days);
    if let Some(n) = r.integer(d, "due_soon_days", 0..=365, "7") {
        sla.due_soon_days = n.value as u32;
    }
    if let Some(n) = r.integer(d, "stale_scan_hours", 1..=8760, "48") {
        sla.stale_scan_hours = n.value as u32;
    }
    let ranks = ["critical", "high", "medium", "low"];
    if let Some(rank) = r.choice(d, "default_rank", &ranks) {
        sla.default_rank = RiskRank::parse(&rank).unwrap_or(RiskRank::Medium);
    }
    if let Some(written) =
        r.string(d, "kev_catalog", "\"/var/lib/patchd/known_exploited_vulnerabilities.json\"")
    {
        match feed_location(base_dir, &written.value) {
            Ok(location) => sla.kev_catalog = Some(location),
            Err(message) => {
                d.error(&written.origin, format!("`kev_catalog`: {message}"), Some(FEED_URL_HINT.into()))
            }
        }
    }
    if let Some(refresh) = r.string(d, "kev_refresh", "\"24h\"") {
        match parse_interval(&refresh).filter(|i| FEED_REFRESH_RANGE.contains(i)) {
            Some(i) => sla.kev_refresh = i,
            None => d.error(
                &refresh.origin,
                format!("`kev_refresh` must be a duration from 5m to 7d, found `{}`", refresh.value),
                Some("write a number and a unit (m, h, d), e.g. `kev_refresh = \"24h\"`".into()),
            ),
        }
    }
    for mut t in r.tables(d, "rule", "[[sla.rule]]") {
        let cves = t.string_list(d, "cves", "[\"CVE-2024-3094\"]");
        let rank = t.choice(d, "rank", &ranks);
        let reason = t.string(d, "reason", "\"exploited in the wild\"").map(|s| s.value);
        if cves.is_none() {
            d.error(
                &t.origin,
                "[[sla.rule]] is missing the required key `cves`",
                Some("add `cves = [\"CVE-2024-3094\"]`".into()),
            );
        }
        if rank.is_none() && t.get("rank").is_none() {
            d.error(
                &t.origin,
                "[[sla.rule]] is missing the required key `rank`",
                Some("add `rank = \"critical\"`".into()),
            );
        }
        let mut valid = true;
        for cve in cves.iter().flatten() {
            if !is_cve(cve) {
                valid = false;
                d.error(
                    &cve.origin,
                    format!("`{}` is not a CVE id", cve.value),
                    Some("write CVE ids like `CVE-2024-3094`".into()),
                );
            }
        }
        if let (Some(cves), Some(rank), true) = (cves, rank, valid) {
            sla.rules.push(RankRule {
                cves: cves.into_iter().map(|c| c.value).collect(),
                rank: RiskRank::parse(&rank).unwrap_or(RiskRank::Critical),
                reason,
                origin: t.origin.clone(),
            });
        }
        t.finish(d);
    }
    if sla.critical_days > 30 {
        d.warning(
            &r.origin,
            format!("`critical_days = {}` is longer than PCI DSS allows for critical patches", sla.critical_days),
            Some("PCI DSS 6.3.3 requires critical security patches within one month of release: use 30 or less".into()),
        );
    }
    sla
}

/// A name other sections refer to: letters, digits and `-_.`, as SSM allows for baseline names.
fn check_name(d: &mut Diagnostics, name: &Located<String>, what: &str) -> bool {
    let ok = name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        d.error(
            &name.origin,
            format!(
                "{what} name `{}` may only contain letters, digits, `-`, `_` and `.` (at most 128)",
                name.value
            ),
            Some(format!("for example `{}`", sanitize(&name.value))),
        );
    }
    ok
}

fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    if s.is_empty() {
        "prod-web".into()
    } else {
        s
    }
}

fn date_of(d: &mut Diagnostics, dt: &Located<Datetime>, key: &str) -> Option<NaiveDate> {
    match (dt.date, dt.time) {
        (Some(date), None) => NaiveDate::from_ymd_opt(date.year.into(), date.month.into(), date.day.into()),
        _ => {
            d.error(
                &dt.origin,
                format!("`{key}` must be a date without a time"),
                Some(format!("write `{key} = 2027-03-31`")),
            );
            None
        }
    }
}

fn decode_exception(r: &mut TableReader, d: &mut Diagnostics, refs: &mut Refs) -> Option<Exception> {
    let name = r.required_string(d, "name", "\"legacy-openssl\"");
    let patches = r.string_list(d, "patches", "[\"ALAS2-2024-2500\"]");
    let instances = r.string_list(d, "instances", "[\"i-0abc1234def567890\"]");
    let group = r.string(d, "group", "\"legacy-batch\"");
    if let Some(group) = &group {
        let context =
            name.as_ref().map_or("an exception".to_string(), |n| format!("exception `{}`", n.value));
        refs.groups.push((group.clone(), context));
    }
    let reason =
        r.required_string(d, "reason", "\"vendor appliance; compensating control: network isolation\"");
    let owner = r.required_string(d, "owner", "\"jane.doe@example.com\"");
    let expires = r.datetime(d, "expires", "2027-03-31");
    if patches.as_ref().is_none_or(Vec::is_empty) {
        d.error(
            &r.origin,
            "[[exception]] must list the `patches` it accepts",
            Some("add `patches = [\"ALAS2-2024-2500\"]`".into()),
        );
    }
    let scope = match (instances, group) {
        (Some(ids), None) if !ids.is_empty() => {
            let ok = ids.iter().filter(|id| !check_instance_id(d, id)).count() == 0;
            ok.then(|| ExceptionScope::Instances(ids.into_iter().map(|i| i.value).collect()))
        }
        (None, Some(group)) => Some(ExceptionScope::Group(group)),
        (Some(_), Some(_)) => {
            d.error(
                &r.origin,
                "[[exception]] names both `instances` and `group`",
                Some("keep one: an exception covers either listed instances or one group".into()),
            );
            None
        }
        _ => {
            d.error(
                &r.origin,
                "[[exception]] must say where it applies",
                Some("add `instances = [\"i-0abc1234def567890\"]` or `group = \"legacy-batch\"`".into()),
            );
            None
        }
    };
    if expires.is_none() && r.get("expires").is_none() {
        d.error(
            &r.origin,
            "[[exception]] is missing the required key `expires`",
            Some("risk acceptances must expire: add `expires = 2027-03-31`".into()),
        );
    }
    let expires = expires.and_then(|e| date_of(d, &e, "expires"));
    if let Some(name) = &name {
        check_name(d, name, "exception");
        refs.names.push(("exception", name.clone()));
    }
    Some(Exception {
        name: name?.value,
        patches: patches?.into_iter().map(|p| p.value).collect(),
        scope: scope?,
        reason: reason?.value,
        owner: owner?.value,
        expires: expires?,
        origin: r.origin.clone(),
    })
}

fn check_instance_id(d: &mut Diagnostics, id: &Located<String>) -> bool {
    let hex = id.strip_prefix("i-").unwrap_or("");
    let ok = (hex.len() == 8 || hex.len() == 17)
        && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if !ok {
        d.error(
            &id.origin,
            format!("`{}` is not an EC2 instance id", id.value),
            Some("instance ids look like `i-0abc1234def567890` (17 hex digits) or `i-0abc1234`".into()),
        );
    }
    ok
}

/// Filter keys of `PatchFilter`, under the TOML names we accept for them.
const FILTER_KEYS: &[(&str, &str)] = &[
    ("product", "PRODUCT"),
    ("classification", "CLASSIFICATION"),
    ("severity", "SEVERITY"),
    ("msrc_severity", "MSRC_SEVERITY"),
    ("product_family", "PRODUCT_FAMILY"),
    ("patch_set", "PATCH_SET"),
    ("priority", "PRIORITY"),
    ("section", "SECTION"),
];

/// Which filter keys SSM accepts for an operating system.
fn filter_keys_for(os: OperatingSystem) -> &'static [&'static str] {
    match os {
        OperatingSystem::Windows => {
            &["PRODUCT", "PRODUCT_FAMILY", "CLASSIFICATION", "MSRC_SEVERITY", "PATCH_SET"]
        }
        OperatingSystem::Ubuntu | OperatingSystem::Debian | OperatingSystem::Raspbian => {
            &["PRODUCT", "PRIORITY", "SECTION"]
        }
        OperatingSystem::Macos => &["PRODUCT", "CLASSIFICATION"],
        _ => &["PRODUCT", "CLASSIFICATION", "SEVERITY"],
    }
}

fn decode_filters(r: &mut TableReader, d: &mut Diagnostics, os: Option<OperatingSystem>) -> Vec<PatchFilter> {
    let mut filters = Vec::new();
    for (toml_key, ssm_key) in FILTER_KEYS {
        let Some(values) = r.string_list(d, toml_key, "[\"Security\"]") else { continue };
        let origin = values.first().map_or_else(|| r.origin.clone(), |v| v.origin.clone());
        if values.is_empty() || values.len() > 20 {
            d.error(
                &origin,
                format!("`{toml_key}` in {} needs between 1 and 20 values, found {}", r.what, values.len()),
                None,
            );
        }
        if let Some(os) = os {
            if !filter_keys_for(os).contains(ssm_key) {
                let allowed: Vec<String> = filter_keys_for(os)
                    .iter()
                    .filter_map(|k| FILTER_KEYS.iter().find(|(_, s)| s == k).map(|(t, _)| format!("`{t}`")))
                    .collect();
                d.error(
                    &origin,
                    format!("SSM does not filter {os} patches by `{toml_key}`"),
                    Some(format!("for {os} use {}", allowed.join(", "))),
                );
            }
        }
        filters.push(PatchFilter { key: ssm_key, values: values.into_iter().map(|v| v.value).collect() });
    }
    if filters.len() > 4 {
        d.error(
            &r.origin,
            format!("{} has {} filters; SSM allows at most 4 per rule", r.what, filters.len()),
            Some("split it into several rules".into()),
        );
    }
    filters
}

fn decode_baseline(r: &mut TableReader, d: &mut Diagnostics, refs: &mut Refs) -> Option<Baseline> {
    let name = r.required_string(d, "name", "\"prod-amazon-linux-2\"");
    let description = r.string(d, "description", "\"...\"").map(|s| s.value);
    let os = r.spelled::<OperatingSystem>(d, "operating_system");
    if os.is_none() && r.get("operating_system").is_none() {
        d.error(
            &r.origin,
            "[[baseline]] is missing the required key `operating_system`",
            Some("add `operating_system = \"AMAZON_LINUX_2\"`".into()),
        );
    }
    let os_name = os.as_ref().map(|o| o.value);
    let global_filters = match r.table(d, "global_filters", "[baseline.global_filters]") {
        Some(mut t) => {
            let f = decode_filters(&mut t, d, os_name);
            t.finish(d);
            f
        }
        None => Vec::new(),
    };
    let mut rules = Vec::new();
    let rule_tables = r.tables(d, "rule", "[[baseline.rule]]");
    if rule_tables.len() > 10 {
        d.error(
            &r.origin,
            format!("[[baseline]] has {} rules; SSM allows at most 10", rule_tables.len()),
            None,
        );
    }
    for mut t in rule_tables {
        rules.extend(decode_rule(&mut t, d, os_name));
        t.finish(d);
    }
    let patch_list = |r: &mut TableReader, d: &mut Diagnostics, key| {
        let list = r.string_list(d, key, "[\"KB5034441\"]").unwrap_or_default();
        if list.len() > 50 {
            d.error(
                &list[50].origin,
                format!("`{key}` has {} entries; SSM allows at most 50", list.len()),
                Some("approve by rule instead, or split the baseline".into()),
            );
        }
        for id in &list {
            if id.is_empty() || id.len() > 100 {
                d.error(&id.origin, format!("patch id `{}` must be 1 to 100 characters", id.value), None);
            }
        }
        list.into_iter().map(|p| p.value).collect::<Vec<_>>()
    };
    let approved_patches = patch_list(r, d, "approved_patches");
    let rejected_patches = patch_list(r, d, "rejected_patches");
    let approved_level = r
        .choice(d, "approved_patches_compliance_level", COMPLIANCE_LEVELS)
        .map_or("UNSPECIFIED", |l| l.value);
    let approved_non_security = r.bool(d, "approved_patches_enable_non_security").unwrap_or(false);
    let rejected_action = match r.choice(d, "rejected_patches_action", &["ALLOW_AS_DEPENDENCY", "BLOCK"]) {
        Some(a) if *a == "BLOCK" => RejectedPatchesAction::Block,
        _ => RejectedPatchesAction::AllowAsDependency,
    };
    let patch_groups = r.string_list(d, "patch_groups", "[\"prod\"]").unwrap_or_default();
    for pg in &patch_groups {
        if pg.is_empty() || pg.len() > 256 {
            d.error(&pg.origin, "a patch group must be 1 to 256 characters", None);
        }
    }
    if rules.is_empty() && approved_patches.is_empty() && r.get("rule").is_none() {
        d.warning(
            &r.origin,
            "this baseline approves nothing: it has no `[[baseline.rule]]` and no `approved_patches`",
            Some("add a rule such as `[[baseline.rule]]` with `classification = [\"Security\"]` and `approve_after_days = 0`".into()),
        );
    }
    if let Some(name) = &name {
        if name.len() < 3 {
            d.error(&name.origin, "a baseline name must be at least 3 characters (SSM's minimum)", None);
        }
        check_name(d, name, "baseline");
        refs.names.push(("baseline", name.clone()));
    }
    Some(Baseline {
        name: name?.value,
        description,
        operating_system: os?.value,
        global_filters,
        rules,
        approved_patches,
        approved_patches_compliance_level: approved_level,
        approved_patches_enable_non_security: approved_non_security,
        rejected_patches,
        rejected_patches_action: rejected_action,
        patch_groups: patch_groups.into_iter().map(|p| p.value).collect(),
        origin: r.origin.clone(),
    })
}

fn decode_rule(
    r: &mut TableReader,
    d: &mut Diagnostics,
    os: Option<OperatingSystem>,
) -> Option<ApprovalRule> {
    let filters = decode_filters(r, d, os);
    let after = r.integer(d, "approve_after_days", 0..=360, "7");
    let until = r.datetime(d, "approve_until", "2027-01-31");
    let compliance_level =
        r.choice(d, "compliance_level", COMPLIANCE_LEVELS).map_or("UNSPECIFIED", |l| l.value);
    let enable_non_security = r.bool(d, "enable_non_security").unwrap_or(false);
    let debian = os.is_some_and(OperatingSystem::approves_on_release);
    let given_after = r.get("approve_after_days").is_some();
    let given_until = r.get("approve_until").is_some();
    let approval = match (after, until) {
        _ if debian && (given_after || given_until) => {
            d.error(
                &r.origin,
                format!("SSM has no approval delay for {}: `approve_after_days` and `approve_until` do not apply", os.map_or("", OperatingSystem::as_str)),
                Some("remove them: Debian and Ubuntu patches are approved as soon as the repositories publish them".into()),
            );
            None
        }
        _ if debian => Some(Approval::Immediate),
        _ if given_after && given_until => {
            d.error(
                &r.origin,
                "[[baseline.rule]] sets both `approve_after_days` and `approve_until`",
                Some("keep one of them".into()),
            );
            None
        }
        (Some(n), _) => Some(Approval::AfterDays(n.value as u32)),
        (_, Some(date)) => date_of(d, &date, "approve_until").map(Approval::Until),
        _ if !given_after && !given_until => {
            d.error(
                &r.origin,
                "[[baseline.rule]] must say when patches are approved",
                Some(
                    "add `approve_after_days = 7` (days after release) or `approve_until = 2027-01-31`"
                        .into(),
                ),
            );
            None
        }
        _ => None,
    };
    Some(ApprovalRule { filters, approval: approval?, compliance_level, enable_non_security })
}

fn decode_group(r: &mut TableReader, d: &mut Diagnostics, refs: &mut Refs) -> Option<Group> {
    let name = r.required_string(d, "name", "\"prod-web\"");
    let description = r.string(d, "description", "\"...\"").map(|s| s.value);
    let context = name.as_ref().map_or("a group".to_string(), |n| format!("group `{}`", n.value));
    let scope = decode_scope(r, d, context, refs);
    let instance_ids = r.string_list(d, "instance_ids", "[\"i-0abc1234def567890\"]").unwrap_or_default();
    let ids_written = !instance_ids.is_empty();
    let instance_ids: Vec<Located<String>> =
        instance_ids.into_iter().filter(|id| check_instance_id(d, id)).collect();
    let mut tags = BTreeMap::new();
    if let Some(t) = r.table(d, "tags", "[group.tags]") {
        for (key, value) in t.entries() {
            let Some(values) = t.strings_of(d, &key, value, "[\"prod\", \"staging\"]") else { continue };
            if key.is_empty() || key.len() > 128 {
                d.error(&key.origin, "a tag key must be 1 to 128 characters", None);
            }
            if values.is_empty() {
                d.error(
                    &key.origin,
                    format!("tag `{}` lists no values, so it can match nothing", key.value),
                    Some("list at least one value".into()),
                );
            }
            tags.insert(key.value, values.into_iter().map(|v| v.value).collect::<Vec<_>>());
        }
    }
    if tags.is_empty() && !ids_written {
        d.error(
            &r.origin,
            "[[group]] selects no instances",
            Some("add `[group.tags]` (e.g. `Environment = \"prod\"`) or `instance_ids = [...]`".into()),
        );
    }
    if let Some(name) = &name {
        check_name(d, name, "group");
        refs.names.push(("group", name.clone()));
    }
    Some(Group {
        name: name?.value,
        description,
        tags: TagSelector(tags),
        instance_ids: instance_ids.into_iter().map(|i| i.value).collect(),
        scope,
        origin: r.origin.clone(),
    })
}

/// A TOML date or date-time as an instant. A date or local date-time is wall-clock time in
/// the window's timezone; `end_of_day` makes a bare end date include its whole day.
fn instant_of(dt: &Datetime, tz: Tz, end_of_day: bool) -> Option<DateTime<Utc>> {
    let date = dt.date?;
    let date = NaiveDate::from_ymd_opt(date.year.into(), date.month.into(), date.day.into())?;
    let time = match dt.time {
        Some(t) => NaiveTime::from_hms_opt(t.hour.into(), t.minute.into(), t.second.unwrap_or(0).into())?,
        None if end_of_day => NaiveTime::from_hms_opt(23, 59, 59)?,
        None => NaiveTime::MIN,
    };
    let naive = NaiveDateTime::new(date, time);
    match dt.offset {
        Some(toml::value::Offset::Z) => Some(Utc.from_utc_datetime(&naive)),
        Some(toml::value::Offset::Custom { minutes }) => {
            Some(Utc.from_utc_datetime(&(naive - Duration::minutes(minutes.into()))))
        }
        // A wall time in a DST gap moves past the gap, as window firings do.
        None => tz
            .from_local_datetime(&naive)
            .earliest()
            .or_else(|| tz.from_local_datetime(&(naive + Duration::hours(1))).earliest())
            .map(|t| t.with_timezone(&Utc)),
    }
}

fn decode_window(
    r: &mut TableReader,
    d: &mut Diagnostics,
    unanchored_rates: &mut Vec<(String, Origin)>,
    refs: &mut Refs,
) -> Option<Window> {
    let name = r.required_string(d, "name", "\"prod-patch-tuesday\"");
    let description = r.string(d, "description", "\"...\"").map(|s| s.value);
    let expression = r.required_string(d, "schedule", "\"cron(0 2 ? * TUE#2 *)\"").and_then(|s| {
        Expression::parse(&s)
            .map_err(|e| {
                // Point at the offending token inside the string: one past the opening quote.
                let origin = Origin {
                    col: s.origin.col + 1 + s[..e.offset.min(s.len())].chars().count() as u32,
                    ..s.origin.clone()
                };
                d.error(&origin, format!("invalid schedule `{}`: {}", s.value, e.message), e.hint.clone());
            })
            .ok()
            .map(|expr| (expr, s.origin))
    });
    let timezone = match r.string(d, "timezone", "\"Europe/Berlin\"") {
        Some(tz) => match patchd_schedule::parse_timezone(&tz) {
            Ok(tz) => Some(tz),
            Err(e) => {
                let hint = did_you_mean(&tz, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name())).or(e.hint);
                d.error(&tz.origin, format!("unknown timezone `{}`", tz.value), hint);
                None
            }
        },
        None => Some(Tz::UTC),
    };
    let offset_days = r.integer(d, "offset_days", 1..=6, "2");
    let duration = r.integer(d, "duration_hours", 1..=24, "4");
    if duration.is_none() && r.get("duration_hours").is_none() {
        d.error(
            &r.origin,
            "[[window]] is missing the required key `duration_hours`",
            Some("add `duration_hours = 4` (1 to 24, as in SSM)".into()),
        );
    }
    let cutoff = r.integer(d, "cutoff_hours", 0..=23, "1");
    let cutoff_behavior = match r.choice(d, "cutoff_behavior", &["CONTINUE_TASK", "CANCEL_TASK"]) {
        Some(b) if *b == "CANCEL_TASK" => CutoffBehavior::CancelTask,
        _ => CutoffBehavior::ContinueTask,
    };
    let enabled = r.bool(d, "enabled").unwrap_or(true);
    let context = name.as_ref().map_or("a window".to_string(), |n| format!("window `{}`", n.value));
    let scope = decode_scope(r, d, context, refs);
    let start = r.datetime(d, "start_date", "2027-01-01");
    let end = r.datetime(d, "end_date", "2027-12-31");
    if let (Some(duration), Some(cutoff)) = (&duration, &cutoff) {
        if cutoff.value >= duration.value {
            d.error(
                &cutoff.origin,
                format!(
                    "`cutoff_hours = {}` must be shorter than `duration_hours = {}`",
                    cutoff.value, duration.value
                ),
                Some(
                    "the cutoff is the last part of the window in which no new task starts; make it smaller"
                        .into(),
                ),
            );
        }
    }
    let mut tasks = Vec::new();
    let task_tables = r.tables(d, "task", "[[window.task]]");
    let task_count = task_tables.len();
    for (index, mut t) in task_tables.into_iter().enumerate() {
        tasks.extend(decode_task(&mut t, d, index, task_count, name.as_ref(), refs));
        t.finish(d);
    }
    for (i, task) in tasks.iter().enumerate() {
        if let Some(first) = tasks[..i].iter().find(|t| t.name == task.name) {
            d.error(
                &task.origin,
                format!("task name `{}` is used twice in this window", task.name),
                Some(format!("first used at {}; give each task its own `name`", first.origin)),
            );
        }
    }
    if task_count == 0 && r.get("task").is_none() {
        d.warning(
            &r.origin,
            "this window has no tasks, so it does nothing when it opens",
            Some("add a `[[window.task]]` with `operation = \"scan\"` or `\"install\"`".into()),
        );
    }
    if let Some(name) = &name {
        check_name(d, name, "window");
        refs.names.push(("window", name.clone()));
    }
    let (expression, schedule_origin) = expression?;
    let tz = timezone?;
    let start_at = start.as_ref().and_then(|s| instant_of(s, tz, false));
    let end_at = end.as_ref().and_then(|e| instant_of(e, tz, true));
    for (given, parsed, key) in [(&start, start_at, "start_date"), (&end, end_at, "end_date")] {
        if let (Some(given), None) = (given, parsed) {
            d.error(
                &given.origin,
                format!("`{key}` must be a date or a date and time"),
                Some(format!("write `{key} = 2027-01-01` or `{key} = 2027-01-01T00:00:00Z`")),
            );
        }
    }
    if matches!(expression, Expression::Rate(_)) && start_at.is_none() {
        unanchored_rates.push((name.as_ref()?.value.clone(), schedule_origin.clone()));
    }
    let spec = ScheduleSpec {
        expression,
        timezone: tz,
        offset_days: offset_days.as_ref().map_or(0, |o| o.value as u8),
        start: start_at,
        end: end_at,
    };
    let schedule = match Schedule::new(spec) {
        Ok(s) => s,
        Err(e) => {
            let at = offset_days.as_ref().map_or(&schedule_origin, |o| &o.origin);
            d.error(at, e.to_string(), None);
            return None;
        }
    };
    Some(Window {
        name: name?.value,
        description,
        schedule,
        duration: Duration::hours(duration?.value),
        cutoff: Duration::hours(cutoff.map_or(0, |c| c.value)),
        cutoff_behavior,
        enabled,
        tasks,
        scope,
        origin: r.origin.clone(),
    })
}

/// MaxConcurrency / MaxErrors as SSM accepts them: `10`, `"10"` or `"10%"`.
fn decode_limit(r: &mut TableReader, d: &mut Diagnostics, key: &'static str, min: u32) -> Option<Limit> {
    let value = r.get(key)?;
    let origin = r.origin_of(value);
    let text = match value.get_ref() {
        DeValue::Integer(i) => i.to_string(),
        DeValue::String(s) => s.trim().to_string(),
        _ => String::new(),
    };
    let parsed = match text.strip_suffix('%') {
        Some(p) => p.parse::<u8>().ok().filter(|p| u32::from(*p) >= min && *p <= 100).map(Limit::Percent),
        None => text.parse::<u32>().ok().filter(|n| *n >= min).map(Limit::Count),
    };
    if parsed.is_none() {
        d.error(
            &origin,
            format!("`{key}` must be a whole number (at least {min}) or a percentage like \"10%\""),
            Some(format!("write `{key} = 5` or `{key} = \"10%\"`")),
        );
    }
    parsed
}

fn decode_task(
    r: &mut TableReader,
    d: &mut Diagnostics,
    index: usize,
    count: usize,
    window: Option<&Located<String>>,
    refs: &mut Refs,
) -> Option<Task> {
    let operation = r.choice(d, "operation", &["scan", "install"]);
    if operation.is_none() && r.get("operation").is_none() {
        d.error(
            &r.origin,
            "[[window.task]] is missing the required key `operation`",
            Some("add `operation = \"scan\"` or `operation = \"install\"`".into()),
        );
    }
    let operation = operation.map(|o| if *o == "install" { Operation::Install } else { Operation::Scan });
    let name = r.string(d, "name", "\"install-prod\"");
    let groups = r.string_list(d, "groups", "[\"prod-web\"]");
    match &groups {
        None if r.get("groups").is_none() => d.error(
            &r.origin,
            "[[window.task]] is missing the required key `groups`",
            Some("add `groups = [\"prod-web\"]`: the [[group]] names the task targets".into()),
        ),
        Some(g) if g.is_empty() => d.error(
            &r.origin,
            "`groups` is empty, so the task targets nothing",
            Some("list at least one [[group]] name".into()),
        ),
        _ => {}
    }
    let default_name = operation.map(|op| {
        let op = op.as_ssm().to_lowercase();
        if count == 1 {
            op
        } else {
            format!("{op}-{}", index + 1)
        }
    });
    let task_name = name.as_ref().map(|n| n.value.clone()).or(default_name);
    let context = match (&task_name, window) {
        (Some(task), Some(window)) => format!("task `{task}` of window `{}`", window.value),
        (None, Some(window)) => format!("a task of window `{}`", window.value),
        _ => "a task".to_string(),
    };
    for group in groups.iter().flatten() {
        refs.groups.push((group.clone(), context.clone()));
    }
    let reboot_option = match r.choice(d, "reboot_option", &["RebootIfNeeded", "NoReboot"]) {
        Some(o) if *o == "NoReboot" => RebootOption::NoReboot,
        _ => RebootOption::RebootIfNeeded,
    };
    let max_concurrency = decode_limit(r, d, "max_concurrency", 1).unwrap_or(Limit::Count(50));
    let max_errors = decode_limit(r, d, "max_errors", 0).unwrap_or(Limit::Count(0));
    let priority = r.integer(d, "priority", 0..=1_000_000, "1").map_or(1, |p| p.value as u32);
    let timeout_seconds =
        r.integer(d, "timeout_seconds", 30..=2_592_000, "3600").map_or(3600, |t| t.value as u32);
    let waves = decode_wave_policy(r, d, operation);
    let promote = decode_promotion(r, d, operation, &waves, window, &context, refs);
    let operation = operation?;
    if operation == Operation::Install && reboot_option == RebootOption::NoReboot {
        d.warning(
            &r.origin,
            "`reboot_option = \"NoReboot\"` leaves patches INSTALLED_PENDING_REBOOT, which stay open findings until a reboot and a new scan",
            Some("schedule a reboot and a scan before the SLA is due, or use `RebootIfNeeded`".into()),
        );
    }
    Some(Task {
        name: task_name?,
        operation,
        groups: groups?,
        reboot_option,
        max_concurrency,
        max_errors,
        priority,
        timeout_seconds,
        waves,
        promote,
        origin: r.origin.clone(),
    })
}

/// `[window.task.promote]`: `from` (a window), `bucket` and `prefix`. Whether `from` names a
/// window with an install task is checked once every file is merged.
fn decode_promotion(
    r: &mut TableReader,
    d: &mut Diagnostics,
    operation: Option<Operation>,
    waves: &WavePolicy,
    window: Option<&Located<String>>,
    context: &str,
    refs: &mut Refs,
) -> Option<Promotion> {
    let mut p = r.table(d, "promote", "[window.task.promote]")?;
    let from = p.required_string(d, "from", "\"staging\"");
    let bucket = p.required_string(d, "bucket", "\"acme-patch-lists\"");
    let prefix = p.string(d, "prefix", "\"patchd/install-lists/\"");
    let origin = p.origin.clone();
    p.finish(d);
    if operation == Some(Operation::Scan) {
        d.error(
            &origin,
            "a scan task installs nothing, so it has nothing to promote",
            Some("move `[window.task.promote]` to an install task".into()),
        );
    }
    if waves.hooks.is_some() {
        d.error(
            &origin,
            "`promote` and `[window.task.hooks]` cannot be combined: AWS-RunPatchBaselineWithHooks has no InstallOverrideList parameter",
            Some("run the hooks as a gate `command`, or drop one of the two".into()),
        );
    }
    if let Some(bucket) = &bucket {
        if let Err(problem) = check_bucket_name(&bucket.value) {
            d.error(
                &bucket.origin,
                format!("`bucket` `{}` is not an S3 bucket name: {problem}", bucket.value),
                Some(
                    "write the bare bucket name, e.g. `bucket = \"acme-patch-lists\"`, not an s3:// URL"
                        .into(),
                ),
            );
        }
    }
    let prefix = match prefix {
        None => DEFAULT_PROMOTION_PREFIX.to_string(),
        Some(prefix) if prefix.value.starts_with('/') || prefix.value.contains("//") => {
            d.error(
                &prefix.origin,
                format!("`prefix` `{}` would make S3 keys with an empty path segment", prefix.value),
                Some("write it without a leading `/`, e.g. `prefix = \"patchd/install-lists/\"`".into()),
            );
            prefix.value
        }
        Some(prefix) if prefix.value.is_empty() || prefix.value.ends_with('/') => prefix.value,
        Some(prefix) => format!("{}/", prefix.value),
    };
    let from = from?;
    if window.is_some_and(|w| w.value == from.value) {
        d.error(
            &from.origin,
            format!("{context} promotes from its own window"),
            Some("name the window that installs first, e.g. `from = \"staging\"`".into()),
        );
    } else {
        refs.promotions.push((from.clone(), context.to_string()));
    }
    Some(Promotion { from, bucket: bucket?.value, prefix })
}

/// S3's rules for a general-purpose bucket name.
fn check_bucket_name(name: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&name.len()) {
        return Err("it must be 3 to 63 characters long");
    }
    if !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-') {
        return Err("it may hold only lowercase letters, digits, `.` and `-`");
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err("it must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return Err("it may not hold two dots in a row");
    }
    Ok(())
}

/// SSM's document names: letters, digits, `_`, `-` and `.`, 3 to 128 of them.
fn is_document_name(name: &str) -> bool {
    (3..=128).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// `waves`, `bake_minutes`, `max_per_tag`, `[window.task.hooks]` and `[window.task.gate]`.
fn decode_wave_policy(r: &mut TableReader, d: &mut Diagnostics, operation: Option<Operation>) -> WavePolicy {
    let mut policy = WavePolicy::default();
    if let Some(value) = r.get("waves") {
        let origin = r.origin_of(value);
        let items: Vec<&toml::de::DeValue<'_>> = match value.get_ref() {
            DeValue::Array(items) => items.iter().map(|i| i.get_ref()).collect(),
            _ => vec![value.get_ref()],
        };
        let mut shares = Vec::with_capacity(items.len());
        for item in items {
            let text = match item {
                DeValue::Integer(i) => i.to_string(),
                DeValue::String(s) => s.trim().to_string(),
                _ => String::new(),
            };
            let share = match text.strip_suffix('%') {
                Some(p) => p.parse::<u8>().ok().filter(|p| (1..=100).contains(p)).map(Limit::Percent),
                None => text.parse::<u32>().ok().filter(|n| *n >= 1).map(Limit::Count),
            };
            match share {
                Some(share) => shares.push(share),
                None => {
                    d.error(
                        &origin,
                        format!("wave share `{text}` must be a count (at least 1) or a percentage like \"10%\""),
                        Some("write `waves = [\"1\", \"10%\", \"50%\", \"100%\"]`: a canary, then growing shares".into()),
                    );
                    return policy;
                }
            }
        }
        if let Err(e) = check_wave_shares(&shares) {
            d.error(
                &origin,
                e.to_string(),
                Some("write `waves = [\"1\", \"10%\", \"50%\", \"100%\"]`".into()),
            );
        }
        policy.shares = shares;
    }
    if let Some(bake) = r.integer(d, "bake_minutes", 0..=1440, "15") {
        if policy.shares.len() < 2 {
            d.warning(
                &bake.origin,
                "`bake_minutes` pauses between waves, and this task has fewer than two",
                Some("add `waves = [\"1\", \"100%\"]`, or remove `bake_minutes`".into()),
            );
        }
        policy.bake = std::time::Duration::from_secs(bake.value as u64 * 60);
    }
    if let Some(mut cap) = r.table(d, "max_per_tag", "`max_per_tag`") {
        let tag = cap.required_string(d, "tag", "\"cluster\"");
        let max = cap.integer(d, "max", 1..=1000, "1").map_or(1, |m| m.value as u32);
        cap.finish(d);
        policy.max_per_tag = tag.map(|tag| TagCap { tag: tag.value, max });
    }
    if let Some(mut h) = r.table(d, "hooks", "[window.task.hooks]") {
        let mut hooks = InstallHooks::default();
        for (key, slot) in [
            ("pre_install", &mut hooks.pre_install),
            ("post_install", &mut hooks.post_install),
            ("on_exit", &mut hooks.on_exit),
        ] {
            if let Some(name) = h.string(d, key, "\"DrainFromLoadBalancer\"") {
                if !is_document_name(&name.value) {
                    d.error(
                        &name.origin,
                        format!("`{key}` must name an SSM document: 3 to 128 letters, digits, `_`, `-` or `.`, not `{}`", name.value),
                        Some("create the hook as a Command document in SSM and write its name here".into()),
                    );
                }
                *slot = Some(name.value);
            }
        }
        if operation == Some(Operation::Scan) {
            d.error(
                &h.origin,
                "hooks run around an install; a scan task runs none",
                Some("move `[window.task.hooks]` to an install task".into()),
            );
        }
        h.finish(d);
        policy.hooks = Some(hooks);
    }
    if let Some(mut g) = r.table(d, "gate", "[window.task.gate]") {
        let mut gate = Gate::default();
        if let Some(truth) = g.bool(d, "reboot_truth") {
            gate.reboot_truth = truth;
        }
        if let Some(url) = g.string(d, "url", "\"https://health.example.com/gate\"") {
            if !(url.value.starts_with("http://") || url.value.starts_with("https://")) {
                d.error(
                    &url.origin,
                    format!("gate `url` must be an http:// or https:// URL, not `{}`", url.value),
                    None,
                );
            }
            gate.url = Some(url.value);
        }
        if let Some(alarm) = g.string(d, "alarm", "\"prod-web-5xx\"") {
            if alarm.value.trim().is_empty() || alarm.value.chars().count() > 255 {
                d.error(
                    &alarm.origin,
                    "gate `alarm` must be a CloudWatch alarm name of 1 to 255 characters",
                    None,
                );
            }
            gate.alarm = Some(alarm.value);
        }
        let timeout = g.integer(d, "command_timeout_seconds", 1..=3600, "60");
        if let Some(command) = g.string_list(d, "command", "[\"/usr/local/bin/check-lb\", \"--strict\"]") {
            match command.split_first() {
                Some((program, args)) if !program.value.trim().is_empty() => {
                    gate.command = Some(LocalHook {
                        program: program.value.clone(),
                        args: args.iter().map(|a| a.value.clone()).collect(),
                        timeout: std::time::Duration::from_secs(timeout.map_or(60, |t| t.value as u64)),
                    });
                }
                _ => d.error(
                    &g.origin,
                    "gate `command` needs a program to run",
                    Some("write `command = [\"/usr/local/bin/check-lb\", \"--strict\"]`".into()),
                ),
            }
        } else if let Some(timeout) = timeout {
            d.warning(
                &timeout.origin,
                "`command_timeout_seconds` without a gate `command` does nothing",
                None,
            );
        }
        if gate.reboot_truth && operation == Some(Operation::Scan) {
            // A scan reboots nothing: there is no reboot to tell the truth about.
            gate.reboot_truth = false;
        }
        g.finish(d);
        policy.gate = Some(gate);
    } else if !policy.shares.is_empty() {
        policy.gate = Some(Gate { reboot_truth: operation != Some(Operation::Scan), ..Gate::default() });
    }
    policy
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_interval;

    #[test]
    fn intervals_parse_as_written() {
        let check = |text: &str, expected: Option<u64>| {
            assert_eq!(parse_interval(text), expected.map(Duration::from_secs), "{text:?}");
        };
        check("6h", Some(6 * 3600));
        check("90s", Some(90));
        check("30m", Some(1800));
        check("1d", Some(86_400));
        check("1h30m", Some(5400));
        check(" 2h ", Some(7200));
        check("6", None);
        check("h", None);
        check("1h30", None);
        check("6 h", None);
        check("1w", None);
        check("", None);
        check("99999999999999999999d", None);
    }

    #[test]
    fn sync_interval_is_read_with_its_default_and_range() {
        let load = |text: &str| {
            crate::load_sources(vec![("p.toml".into(), text.to_string())], chrono::Utc::now())
                .map(|l| l.config.daemon.sync_interval)
                .map_err(|e| match e {
                    crate::LoadError::Invalid { diagnostics } => {
                        diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n")
                    }
                    other => other.to_string(),
                })
        };
        assert_eq!(load("[daemon]\n"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(load("[daemon]\nsync_interval = \"90m\"\n"), Ok(Duration::from_secs(5400)));
        let retry = |text: &str| {
            crate::load_sources(vec![("p.toml".into(), text.to_string())], chrono::Utc::now())
                .map(|l| l.config.daemon.sync_retry_interval)
                .map_err(|e| e.to_string())
        };
        assert_eq!(retry("[daemon]\n"), Ok(Duration::from_secs(120)));
        assert_eq!(retry("[daemon]\nsync_retry_interval = \"30s\"\n"), Ok(Duration::from_secs(30)));
        assert!(retry("[daemon]\nsync_retry_interval = \"2s\"\n").is_err());
        for bad in ["\"30s\"", "\"8d\"", "\"6\"", "6"] {
            let err = load(&format!("[daemon]\nsync_interval = {bad}\n")).unwrap_err();
            assert!(err.starts_with("p.toml:2:17: error: `sync_interval`"), "{bad}: {err}");
        }
    }

    #[test]
    fn prune_baselines_defaults_to_false() {
        let load = |text: &str| {
            crate::load_sources(vec![("p.toml".into(), text.to_string())], chrono::Utc::now())
                .map(|l| l.config.daemon.prune_baselines)
                .map_err(|e| e.to_string())
        };
        assert_eq!(load("[daemon]\n"), Ok(false));
        assert_eq!(load("[daemon]\nprune_baselines = true\n"), Ok(true));
        assert!(load("[daemon]\nprune_baselines = \"yes\"\n").is_err());
    }
}
