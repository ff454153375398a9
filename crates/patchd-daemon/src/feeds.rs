//! Vendor advisory feeds and the KEV catalog, fetched on their intervals and kept whole.
//!
//! Each feed (`[[advisories.source]]`, and `[sla] kev_catalog` when it is a URL) is fetched
//! with conditional requests (`If-None-Match`, `If-Modified-Since`), gzip accepted, within a
//! size and time bound. A fetch is either parsed whole and imported, or nothing of it is:
//!
//! - the last good copy of every feed stays in `state_dir/feeds/<name>.body` (with its
//!   validators in `<name>.meta`), replaced only once a new copy has parsed, so a failed or
//!   malformed fetch, or a restart, keeps the data of the last success;
//! - the dates of every configured source are written in one store transaction, each labelled
//!   with the source that gave it, so reports can say where every clock comes from;
//! - every fetch is recorded in the store's `feed_status` (shared by all hosts), which
//!   `patchd advisories status`, `/readyz` and metrics read.
//!
//! The dates are matched to SSM's patches by the rules of [`patchd_advisories::AdvisoryIndex`]:
//! by advisory id as placeholders (a later scan that finds the patch finds its date waiting),
//! and by package identity for the patches the store already knows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use http_body_util::BodyExt as _;
use patchd_advisories::{Advisory, AdvisoryIndex, FeedKind};
use patchd_config::{AdvisorySource, Config, FeedLocation, KEV_SOURCE};
use patchd_sla::KevCatalog;
use patchd_store::{FeedFetch, Store};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

/// A feed that failed is tried again after this long (or its refresh interval, if shorter).
const FAILED_FEED_RETRY: Duration = Duration::from_secs(15 * 60);
/// Red Hat's index pages hold at most 1,000 entries; more pages than this is a server loop.
const MAX_PAGES: u32 = 2_000;
const PER_PAGE: u32 = 1_000;
const MAX_REDIRECTS: usize = 5;
/// The KEV catalog is a few MB; anything far larger is not it.
const KEV_MAX_BYTES: u64 = 64 * 1024 * 1024;
const KEV_TIMEOUT: Duration = Duration::from_secs(120);

/// One feed to fetch: an advisory source or the KEV catalog.
#[derive(Debug, Clone)]
pub struct FeedSpec {
    pub name: String,
    pub content: FeedContent,
    pub location: FeedLocation,
    pub refresh: Duration,
    pub timeout: Duration,
    pub max_bytes: u64,
}

/// What a feed holds, which decides how it is parsed and what it feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedContent {
    /// Vendor advisories in one of the formats: release dates for the SLA clocks.
    Advisories(FeedKind),
    /// CISA's Known Exploited Vulnerabilities catalog: a risk input, dating nothing.
    Kev,
}

impl FeedSpec {
    pub fn kind_name(&self) -> &'static str {
        match self.content {
            FeedContent::Advisories(kind) => kind.name(),
            FeedContent::Kev => "kev",
        }
    }

    /// The advisory format, for feeds that hold advisories.
    fn advisories(&self) -> Option<FeedKind> {
        match self.content {
            FeedContent::Advisories(kind) => Some(kind),
            FeedContent::Kev => None,
        }
    }

    fn from_source(source: &AdvisorySource) -> FeedSpec {
        FeedSpec {
            name: source.name.clone(),
            content: FeedContent::Advisories(source.kind),
            location: source.location.clone(),
            refresh: source.refresh,
            timeout: source.timeout,
            max_bytes: source.max_bytes,
        }
    }
}

/// Every feed the configuration names: its advisory sources, then a KEV catalog given as a URL.
pub fn feed_specs(config: &Config) -> Vec<FeedSpec> {
    let mut specs: Vec<FeedSpec> = config.advisory_sources.iter().map(FeedSpec::from_source).collect();
    if let Some(location @ FeedLocation::Http(_)) = &config.sla.kev_catalog {
        specs.push(FeedSpec {
            name: KEV_SOURCE.to_string(),
            content: FeedContent::Kev,
            location: location.clone(),
            refresh: config.sla.kev_refresh,
            timeout: KEV_TIMEOUT,
            max_bytes: KEV_MAX_BYTES,
        });
    }
    specs
}

/// What one fetch of one feed came to, for logs, the CLI and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedReport {
    pub name: String,
    pub outcome: FeedFetch,
    /// Advisories (or KEV entries) now in use for the feed: the new data's, or the last good.
    pub entries: usize,
    /// Bytes fetched (after decompression); 0 when not modified or failed.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// What a refresh did: per feed, and the patches whose dates changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshOutcome {
    pub feeds: Vec<FeedReport>,
    /// Patches whose advisory date (or its source) was set or changed.
    pub dated: usize,
}

impl RefreshOutcome {
    pub fn failed(&self) -> impl Iterator<Item = &FeedReport> {
        self.feeds.iter().filter(|f| matches!(f.outcome, FeedFetch::Failed { .. }))
    }
}

/// The feeds of a process: the last good advisories of every source (loaded from the cache at
/// start) and when each feed was last tried. Share it with `Arc`.
pub struct FeedBook {
    cache_dir: PathBuf,
    fetcher: Fetcher,
    /// Held for a whole refresh.
    refreshing: Mutex<()>,
    state: std::sync::Mutex<BookState>,
}

#[derive(Default)]
struct BookState {
    advisories: BTreeMap<String, Arc<Vec<Advisory>>>,
    kev_entries: usize,
    tried: BTreeMap<String, Tried>,
    /// The index of every source's advisories, rebuilt when one changes.
    index: Option<Arc<AdvisoryIndex>>,
}

#[derive(Debug, Clone, Copy)]
struct Tried {
    at: Instant,
    failed: bool,
}

impl std::fmt::Debug for FeedBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedBook").field("cache_dir", &self.cache_dir).finish_non_exhaustive()
    }
}

/// Which feeds a refresh fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Those whose interval has passed (or that failed and are due a retry): the daemon's tick.
    Due,
    /// Every feed, now: `patchd advisories sync`.
    All,
    /// One feed by name.
    Named(&'a str),
}

impl FeedBook {
    pub fn new(config: &Config) -> FeedBook {
        FeedBook {
            cache_dir: config.feed_cache_dir(),
            fetcher: Fetcher::new(),
            refreshing: Mutex::default(),
            state: std::sync::Mutex::default(),
        }
    }

    /// The index of the advisories in use, for dating the patches a sync finds.
    pub async fn index(&self) -> Option<Arc<AdvisoryIndex>> {
        self.with_state(|state| state.index.clone())
    }

    /// Fetches the selected feeds of `config`, imports what changed, and records every fetch
    /// in the store. `progress` hears of every page fetched (name, page, bytes so far).
    pub async fn refresh(
        &self,
        config: &Config,
        store: &Store,
        selection: Selection<'_>,
        progress: &(dyn Fn(&str, u32, u64) + Sync),
    ) -> Result<RefreshOutcome, patchd_store::StoreError> {
        // One refresh at a time; the state itself is locked only between awaits, so a sync
        // asking for the index never waits for a feed download.
        let _one_refresh = self.refreshing.lock().await;
        let specs = feed_specs(config);
        // Sources taken out of the configuration stop dating anything.
        let configured: Vec<&str> =
            specs.iter().filter(|s| s.advisories().is_some()).map(|s| s.name.as_str()).collect();
        let mut changed = self.with_state(|state| {
            let before = state.advisories.len();
            state.advisories.retain(|name, _| configured.contains(&name.as_str()));
            state.advisories.len() != before || state.index.is_none()
        });
        let mut outcome = RefreshOutcome::default();
        for spec in &specs {
            // The last good copy, once per process: a restart keeps dating with it even when
            // the first fetch fails.
            if spec.advisories().is_some()
                && !self.with_state(|state| state.advisories.contains_key(&spec.name))
            {
                if let Some(advisories) = self.load_cached(spec) {
                    self.with_state(|state| state.advisories.insert(spec.name.clone(), Arc::new(advisories)));
                    changed = true;
                }
            }
            if spec.content == FeedContent::Kev && self.with_state(|state| state.kev_entries == 0) {
                let entries = Cache::new(&self.cache_dir, &spec.name)
                    .read(&spec.location)
                    .and_then(|cached| KevCatalog::from_json(&cached.body).ok())
                    .map_or(0, |kev| kev.len());
                self.with_state(|state| state.kev_entries = entries);
            }
            let due = match selection {
                Selection::All => true,
                Selection::Named(name) => name == spec.name,
                Selection::Due => self.with_state(|state| {
                    state.tried.get(&spec.name).is_none_or(|t| {
                        let wait = if t.failed { spec.refresh.min(FAILED_FEED_RETRY) } else { spec.refresh };
                        t.at.elapsed() >= wait
                    })
                }),
            };
            if !due {
                continue;
            }
            let started = Instant::now();
            let result = self.fetch_and_parse(spec, progress).await;
            let now = Utc::now();
            let (fetch, bytes) = match result {
                Ok(Fresh::NotModified) => {
                    info!(feed = %spec.name, "advisory feed not modified");
                    (FeedFetch::NotModified, 0)
                }
                Ok(Fresh::Advisories { advisories, bytes }) => {
                    let count = advisories.len() as u64;
                    info!(feed = %spec.name, advisories = count, bytes, "advisory feed imported");
                    self.with_state(|state| state.advisories.insert(spec.name.clone(), Arc::new(advisories)));
                    changed = true;
                    (FeedFetch::Imported { advisories: count }, bytes)
                }
                Ok(Fresh::Kev { entries, bytes }) => {
                    info!(feed = %spec.name, entries, bytes, "KEV catalog imported");
                    self.with_state(|state| state.kev_entries = entries);
                    (FeedFetch::Imported { advisories: entries as u64 }, bytes)
                }
                Err(e) => {
                    warn!(feed = %spec.name, location = %spec.location, error = %e,
                        "feed not refreshed; the last good data stays in use");
                    (FeedFetch::Failed { error: e.to_string() }, 0)
                }
            };
            let failed = matches!(fetch, FeedFetch::Failed { .. });
            let entries = self.with_state(|state| {
                state.tried.insert(spec.name.clone(), Tried { at: Instant::now(), failed });
                match spec.content {
                    FeedContent::Advisories(_) => state.advisories.get(&spec.name).map_or(0, |a| a.len()),
                    FeedContent::Kev => state.kev_entries,
                }
            });
            store
                .record_feed_fetch(&spec.name, spec.kind_name(), &spec.location.to_string(), now, &fetch)
                .await?;
            outcome.feeds.push(FeedReport {
                name: spec.name.clone(),
                outcome: fetch,
                entries,
                bytes,
                elapsed: started.elapsed(),
            });
        }
        if changed {
            let sources = self.with_state(|state| state.advisories.clone());
            let mut index = AdvisoryIndex::new();
            for (name, advisories) in &sources {
                index.add(name, advisories);
            }
            let index = Arc::new(index);
            self.with_state(|state| state.index = Some(index.clone()));
            outcome.dated = apply_dates(store, &index).await?;
        }
        Ok(outcome)
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut BookState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn load_cached(&self, spec: &FeedSpec) -> Option<Vec<Advisory>> {
        let kind = spec.advisories()?;
        let cached = Cache::new(&self.cache_dir, &spec.name).read(&spec.location)?;
        match parse(kind, &spec.name, &cached.body) {
            Ok(advisories) => Some(advisories),
            Err(e) => {
                warn!(feed = %spec.name, error = %e, "cached copy of the feed unreadable; ignored");
                None
            }
        }
    }

    async fn fetch_and_parse(
        &self,
        spec: &FeedSpec,
        progress: &(dyn Fn(&str, u32, u64) + Sync),
    ) -> Result<Fresh, FeedError> {
        let cache = Cache::new(&self.cache_dir, &spec.name);
        let cached = cache.read(&spec.location);
        let validators = cached.as_ref().map(|c| c.meta.validators.clone()).unwrap_or_default();
        let fetched = tokio::time::timeout(spec.timeout, self.fetcher.fetch(spec, &validators, progress))
            .await
            .map_err(|_| {
                FeedError::new(format!("no complete answer within {} s", spec.timeout.as_secs()))
            })??;
        let Fetched::Body { text, validators } = fetched else { return Ok(Fresh::NotModified) };
        let bytes = text.len() as u64;
        let fresh = match spec.content {
            FeedContent::Advisories(kind) => {
                Fresh::Advisories { advisories: parse(kind, &spec.name, &text)?, bytes }
            }
            FeedContent::Kev => {
                let kev = KevCatalog::from_json(&text).map_err(|e| FeedError::new(e.to_string()))?;
                if kev.is_empty() {
                    return Err(FeedError::new("the KEV catalog lists no vulnerabilities"));
                }
                Fresh::Kev { entries: kev.len(), bytes }
            }
        };
        // Only a copy that parsed replaces the last good one.
        cache.write(&spec.location, &validators, &text)?;
        Ok(fresh)
    }
}

enum Fresh {
    NotModified,
    Advisories { advisories: Vec<Advisory>, bytes: u64 },
    Kev { entries: usize, bytes: u64 },
}

fn parse(kind: FeedKind, name: &str, text: &str) -> Result<Vec<Advisory>, FeedError> {
    let advisories =
        patchd_advisories::parse_document(kind, name, text).map_err(|e| FeedError::new(e.to_string()))?;
    if advisories.is_empty() {
        return Err(FeedError::new("the feed lists no advisories"));
    }
    Ok(advisories)
}

/// Writes the dates `index` gives: every advisory id (placeholders for patches not seen yet),
/// then the patches the store knows only by package. One transaction each; returns the
/// patches whose date or source changed.
pub async fn apply_dates(store: &Store, index: &AdvisoryIndex) -> Result<usize, patchd_store::StoreError> {
    let by_id: Vec<(&str, DateTime<Utc>, &str)> = index.advisory_dates().collect();
    let mut dated = store.set_advisory_dates(&by_id).await?;
    dated += date_by_package(store, index).await?;
    Ok(dated)
}

/// Dates the patches no advisory id names, by their package identity (SSM's Linux titles).
pub async fn date_by_package(
    store: &Store,
    index: &AdvisoryIndex,
) -> Result<usize, patchd_store::StoreError> {
    if index.is_empty() {
        return Ok(0);
    }
    let undated = store.undated_patches().await?;
    let matched: Vec<(&str, DateTime<Utc>, &str)> = undated
        .iter()
        .filter_map(|(id, title)| {
            index.date_patch(id, title.as_deref()).map(|d| (id.as_str(), d.released, d.source))
        })
        .collect();
    store.set_advisory_dates(&matched).await
}

// ---------------------------------------------------------------------------------------------
// The KEV catalog in use

/// The KEV catalog a configuration names, with why it could not be read when it could not.
#[derive(Debug, Clone, Default)]
pub struct LoadedKev {
    pub catalog: KevCatalog,
    /// Set when a catalog is configured but unreadable (missing, not fetched yet, malformed).
    pub problem: Option<String>,
}

/// The configured KEV catalog (the file, or for a URL the last good copy the feeds keep), read
/// again only when the configuration names another file or the file changes (a feed refresh, an
/// operator's copy): reports, the API, metrics and events all rank with this one copy.
///
/// One policy for every surface, so that a finding never gets two ranks: a catalog that cannot
/// be read ranks nothing critical by KEV, and the caller says so (a warning, a log line); it
/// never fails a report, since every other rank still holds.
pub fn kev_catalog(config: &Config) -> Arc<LoadedKev> {
    static IN_USE: std::sync::Mutex<Option<(KevFile, Arc<LoadedKev>)>> = std::sync::Mutex::new(None);
    let Some(path) = config.kev_file() else { return Arc::default() };
    let file = KevFile::of(&path);
    let mut in_use = IN_USE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((seen, loaded)) = in_use.as_ref() {
        // A missing file stays missing until a stat says otherwise.
        if *seen == file {
            return loaded.clone();
        }
    }
    let loaded = Arc::new(read_kev(config, &path));
    *in_use = Some((file, loaded.clone()));
    loaded
}

/// What tells one version of a file from the next without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KevFile {
    path: PathBuf,
    modified: Option<std::time::SystemTime>,
    len: u64,
}

impl KevFile {
    fn of(path: &Path) -> KevFile {
        let meta = std::fs::metadata(path).ok();
        KevFile {
            path: path.to_path_buf(),
            modified: meta.as_ref().and_then(|m| m.modified().ok()),
            len: meta.map_or(0, |m| m.len()),
        }
    }
}

fn read_kev(config: &Config, path: &Path) -> LoadedKev {
    let read = std::fs::read_to_string(path).map_err(|e| match &config.sla.kev_catalog {
        Some(FeedLocation::Http(url)) => format!(
            "no copy of the KEV catalog {url} yet ({}: {e}); `patchd advisories sync --source kev` fetches it",
            path.display()
        ),
        _ => format!("cannot read the KEV catalog {} ([sla] kev_catalog): {e}", path.display()),
    });
    match read.and_then(|text| KevCatalog::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))) {
        Ok(catalog) => LoadedKev { catalog, problem: None },
        Err(problem) => LoadedKev { catalog: KevCatalog::default(), problem: Some(problem) },
    }
}

// ---------------------------------------------------------------------------------------------
// Fetching

/// Why a feed was not refreshed: said in logs, `feed_status.last_error` and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FeedError(String);

impl FeedError {
    fn new(message: impl Into<String>) -> FeedError {
        FeedError(message.into())
    }
}

/// What a server said the last good copy was, for conditional requests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

enum Fetched {
    NotModified,
    Body { text: String, validators: Validators },
}

struct Fetcher {
    client: crate::http_client::Client,
    /// Why the system's trust roots could not be loaded: https feeds then fail saying so, while
    /// file and loopback mirrors still work.
    roots_problem: Option<String>,
}

impl Fetcher {
    fn new() -> Fetcher {
        let (client, roots_problem) = crate::http_client::build();
        Fetcher { client, roots_problem }
    }

    async fn fetch(
        &self,
        spec: &FeedSpec,
        validators: &Validators,
        progress: &(dyn Fn(&str, u32, u64) + Sync),
    ) -> Result<Fetched, FeedError> {
        match &spec.location {
            FeedLocation::File(path) => read_file(path, validators, spec.max_bytes),
            FeedLocation::Http(url) if spec.advisories().is_some_and(FeedKind::is_paged) => {
                self.fetch_pages(spec, url, validators, progress).await
            }
            FeedLocation::Http(url) => {
                let fetched = self.get(url, validators, spec.max_bytes).await?;
                if let Fetched::Body { text, .. } = &fetched {
                    progress(&spec.name, 1, text.len() as u64);
                }
                Ok(fetched)
            }
        }
    }

    /// Red Hat's index, page after page until an empty one, joined into one JSON array. The
    /// newest entries come first, so an unchanged first page (answered 304) means an unchanged
    /// index.
    async fn fetch_pages(
        &self,
        spec: &FeedSpec,
        url: &str,
        validators: &Validators,
        progress: &(dyn Fn(&str, u32, u64) + Sync),
    ) -> Result<Fetched, FeedError> {
        let separator = if url.contains('?') { '&' } else { '?' };
        let mut joined = String::from("[");
        let mut first_validators = Validators::default();
        let mut total: u64 = 0;
        for page in 1..=MAX_PAGES {
            let page_url = format!("{url}{separator}page={page}&per_page={PER_PAGE}");
            let ask = if page == 1 { validators.clone() } else { Validators::default() };
            let remaining = spec.max_bytes.saturating_sub(total);
            let (text, got) = match self.get(&page_url, &ask, remaining).await {
                Ok(Fetched::NotModified) if page == 1 => return Ok(Fetched::NotModified),
                Ok(Fetched::NotModified) => {
                    return Err(FeedError::new(format!(
                        "page {page} answered 304 to an unconditional request"
                    )))
                }
                Ok(Fetched::Body { text, validators }) => (text, validators),
                Err(e) => return Err(FeedError::new(format!("page {page}: {e}"))),
            };
            if page == 1 {
                first_validators = got;
            }
            total += text.len() as u64;
            progress(&spec.name, page, total);
            let inner = text.trim();
            let inner = inner
                .strip_prefix('[')
                .and_then(|s| s.strip_suffix(']'))
                .ok_or_else(|| FeedError::new(format!("page {page} is not a JSON array")))?
                .trim();
            if inner.is_empty() {
                joined.push(']');
                return Ok(Fetched::Body { text: joined, validators: first_validators });
            }
            if joined.len() > 1 {
                joined.push(',');
            }
            joined.push_str(inner);
        }
        Err(FeedError::new(format!("more than {MAX_PAGES} pages; refusing the index")))
    }

    /// One GET, following redirects, with the size bound applied to the body as received and
    /// again after decompression.
    async fn get(&self, url: &str, validators: &Validators, max_bytes: u64) -> Result<Fetched, FeedError> {
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = http::Request::get(&url)
                .header(http::header::USER_AGENT, concat!("patchd/", env!("CARGO_PKG_VERSION")))
                .header(http::header::ACCEPT_ENCODING, "gzip");
            if let Some(etag) = &validators.etag {
                request = request.header(http::header::IF_NONE_MATCH, etag);
            }
            if let Some(modified) = &validators.last_modified {
                request = request.header(http::header::IF_MODIFIED_SINCE, modified);
            }
            let request = request
                .body(http_body_util::Empty::new())
                .map_err(|e| FeedError::new(format!("invalid URL `{url}`: {e}")))?;
            let response = self.client.request(request).await.map_err(|e| match &self.roots_problem {
                Some(roots) if url.starts_with("https://") => FeedError::new(format!(
                    "request failed: {e} (the system's trust roots could not be loaded: {roots})"
                )),
                _ => FeedError::new(format!("request failed: {e}")),
            })?;
            let status = response.status();
            if status == http::StatusCode::NOT_MODIFIED {
                return Ok(Fetched::NotModified);
            }
            if status.is_redirection() {
                let location =
                    response.headers().get(http::header::LOCATION).and_then(|v| v.to_str().ok()).ok_or_else(
                        || FeedError::new(format!("answered HTTP {status} without a Location")),
                    )?;
                url = redirect_target(&url, location)?;
                continue;
            }
            if !status.is_success() {
                return Err(FeedError::new(format!("answered HTTP {status}")));
            }
            let header = |name: http::header::HeaderName| {
                response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
            };
            let got = Validators {
                etag: header(http::header::ETAG),
                last_modified: header(http::header::LAST_MODIFIED),
            };
            if let Some(length) = header(http::header::CONTENT_LENGTH).and_then(|l| l.parse::<u64>().ok()) {
                if length > max_bytes {
                    return Err(too_large(max_bytes));
                }
            }
            let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
            let body = http_body_util::Limited::new(response.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        too_large(max_bytes)
                    } else {
                        FeedError::new(format!("body cut short: {e}"))
                    }
                })?
                .to_bytes();
            return Ok(Fetched::Body { text: decode(&url, &body, max_bytes)?, validators: got });
        }
        Err(FeedError::new(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

fn too_large(max_bytes: u64) -> FeedError {
    FeedError::new(format!(
        "larger than {} MiB; raise `max_size_mib` if the feed really is that large",
        max_bytes / (1024 * 1024)
    ))
}

/// gzip (as a transfer encoding or as the file itself) undone within the bound, then UTF-8.
fn decode(origin: &str, bytes: &[u8], max_bytes: u64) -> Result<String, FeedError> {
    let limit = usize::try_from(max_bytes).unwrap_or(usize::MAX);
    let plain =
        patchd_advisories::decompress(origin, bytes, limit).map_err(|e| FeedError::new(e.to_string()))?;
    patchd_advisories::into_text(origin, plain).map_err(|e| FeedError::new(e.to_string()))
}

fn redirect_target(from: &str, location: &str) -> Result<String, FeedError> {
    let bad = |e: &dyn std::fmt::Display| {
        FeedError::new(format!("redirected to `{location}`, which is not a URL: {e}"))
    };
    if let Ok(target) = location.parse::<http::Uri>() {
        if target.scheme().is_some() {
            return Ok(target.to_string());
        }
    }
    // A reference on the same host: an absolute path replaces the base's path, a relative one
    // is resolved against its directory (RFC 3986, 5.2).
    let base: http::Uri = from.parse().map_err(|e| bad(&e))?;
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let directory = &base.path()[..=base.path().rfind('/').unwrap_or(0)];
        format!("{}{location}", if directory.is_empty() { "/" } else { directory })
    };
    let mut parts = base.into_parts();
    parts.path_and_query = Some(path.parse().map_err(|e| bad(&e))?);
    http::Uri::from_parts(parts).map(|uri| uri.to_string()).map_err(|e| bad(&e))
}

/// A mirror on disk: "not modified" when its mtime is the one the last good copy had.
fn read_file(path: &Path, validators: &Validators, max_bytes: u64) -> Result<Fetched, FeedError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| FeedError::new(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > max_bytes {
        return Err(too_large(max_bytes));
    }
    let mtime = meta.modified().ok().map(|m| DateTime::<Utc>::from(m).to_rfc3339());
    if mtime.is_some() && validators.last_modified == mtime {
        return Ok(Fetched::NotModified);
    }
    let bytes =
        std::fs::read(path).map_err(|e| FeedError::new(format!("cannot read {}: {e}", path.display())))?;
    let text = decode(&path.display().to_string(), &bytes, max_bytes)?;
    Ok(Fetched::Body { text, validators: Validators { etag: None, last_modified: mtime } })
}

// ---------------------------------------------------------------------------------------------
// The last good copy

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    location: String,
    fetched_at: DateTime<Utc>,
    #[serde(flatten)]
    validators: Validators,
}

struct Cached {
    meta: Meta,
    body: String,
}

struct Cache {
    body: PathBuf,
    meta: PathBuf,
}

impl Cache {
    fn new(dir: &Path, name: &str) -> Cache {
        Cache { body: dir.join(format!("{name}.body")), meta: dir.join(format!("{name}.meta")) }
    }

    /// The last good copy, if it was fetched from `location` (a changed URL starts afresh).
    fn read(&self, location: &FeedLocation) -> Option<Cached> {
        let meta: Meta = serde_json::from_slice(&std::fs::read(&self.meta).ok()?).ok()?;
        if meta.location != location.to_string() {
            return None;
        }
        let body = std::fs::read_to_string(&self.body).ok()?;
        Some(Cached { meta, body })
    }

    /// Body, then its validators, each through a temporary file and a rename: a crash leaves
    /// the old copy or the new one, and a body without its meta is fetched afresh.
    fn write(&self, location: &FeedLocation, validators: &Validators, body: &str) -> Result<(), FeedError> {
        let dir = self.body.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| FeedError::new(format!("cannot create {}: {e}", dir.display())))?;
        let _ = std::fs::remove_file(&self.meta);
        replace_file(&self.body, body.as_bytes())?;
        let meta =
            Meta { location: location.to_string(), fetched_at: Utc::now(), validators: validators.clone() };
        let meta = serde_json::to_vec_pretty(&meta).map_err(|e| FeedError::new(e.to_string()))?;
        replace_file(&self.meta, &meta)
    }
}

fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), FeedError> {
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| FeedError::new(format!("cannot write {}: {e}", path.display()));
    std::fs::write(&tmp, bytes).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with_kev(path: &Path) -> Config {
        let text = format!("[sla]\nkev_catalog = \"{}\"\n", path.display());
        patchd_config::load_sources(vec![(PathBuf::from("/etc/patchd/c.toml"), text)], Utc::now())
            .unwrap()
            .config
    }

    #[test]
    fn the_kev_catalog_is_read_once_per_version_and_one_decision_when_unreadable() {
        let dir = std::env::temp_dir().join(format!("patchd-kev-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kev.json");
        let config = config_with_kev(&path);
        let missing = kev_catalog(&config);
        assert!(
            missing.catalog.is_empty()
                && missing.problem.as_deref().unwrap().contains("cannot read the KEV catalog")
        );
        std::fs::write(&path, r#"{"vulnerabilities": [{"cveID": "CVE-2026-1000"}]}"#).unwrap();
        let first = kev_catalog(&config);
        assert!(first.catalog.contains("CVE-2026-1000") && first.problem.is_none());
        assert!(Arc::ptr_eq(&first, &kev_catalog(&config)), "unchanged: not read again");
        std::fs::write(&path, "{\"vulnerabilities\": 7}").unwrap();
        let broken = kev_catalog(&config);
        assert!(
            broken.catalog.is_empty()
                && broken.problem.as_deref().unwrap().contains("not valid CISA KEV JSON")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn redirects_keep_the_host_for_paths() {
        let to = |from: &str, location: &str| redirect_target(from, location).expect("a URL");
        assert_eq!(to("https://a.example/x/y?z", "/q"), "https://a.example/q");
        assert_eq!(to("https://a.example/x/y?z", "q?page=2"), "https://a.example/x/q?page=2");
        assert_eq!(to("https://a.example", "q"), "https://a.example/q");
        assert_eq!(to("https://a.example/x", "https://b.example/r"), "https://b.example/r");
        assert!(redirect_target("https://a.example/x", "two words").is_err());
    }

    #[test]
    fn a_copy_is_kept_only_for_its_location() {
        let dir = std::env::temp_dir().join(format!("patchd-feed-cache-{}", uuid::Uuid::new_v4()));
        let cache = Cache::new(&dir, "f");
        let here = FeedLocation::Http("https://a.example/f".into());
        let validators = Validators { etag: Some("\"1\"".into()), last_modified: None };
        cache.write(&here, &validators, "body").unwrap();
        let read = cache.read(&here).unwrap();
        assert_eq!((read.body.as_str(), read.meta.validators), ("body", validators));
        assert!(cache.read(&FeedLocation::Http("https://b.example/f".into())).is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
