//! Vendor advisory feeds generated from the simulated patch catalog.
//!
//! SSM dates patches only for Amazon Linux 2 and Windows; for the other platforms patchd reads
//! each vendor's advisory feed. So that tests and the demo can date every platform without a
//! network, the simulator serves those feeds itself, in each vendor's published format
//! (the contract is `spec/feeds.md`), generated from the catalog it simulates. The catalog is
//! the same in every partition and run-time releases go to the primary one, so the feeds show
//! the primary partition's catalog.
//!
//! | path | feed name | format |
//! | --- | --- | --- |
//! | `/feeds/amazon-linux-2/updateinfo.xml.gz` | `amazon-linux-2` | yum `updateinfo.xml`, gzip file |
//! | `/feeds/amazon-linux-2023/updateinfo.xml.gz` | `amazon-linux-2023` | the same for AL2023 |
//! | `/feeds/redhat/csaf.json?page=N&per_page=M[&after=YYYY-MM-DD]` | `redhat` | Red Hat Security Data API CSAF index pages (RHEL 9) |
//! | `/feeds/ubuntu/database.json.gz` | `ubuntu` | USN database JSON (Ubuntu 22.04), gzip file |
//! | `/feeds/kev/known_exploited_vulnerabilities.json` | `kev` | CISA KEV catalog |
//!
//! Windows has no feed: SSM dates it. An advisory appears once its release instant has passed
//! in simulated time, dated with that exact instant (catalog instants are whole seconds, so
//! second-precision formats lose nothing and agree with SSM's ReleaseDate).
//!
//! The KEV catalog lists the CVEs of the released security patches whose id hashes into
//! [`KEV_SHARE_PERCENT`] percent, plus those of every platform's critical patch released 25
//! days before the start, which KEV's 21-day due date has then overtaken: a fresh demo fleet
//! has a known-exploited finding past its due date. Each is added two days after its release.
//!
//! Every answer carries a strong `ETag` (a hash of the feed's uncompressed content, with a
//! `-gzip` suffix when the answer is gzip content-encoded) and `Last-Modified` (the simulated
//! instant of the newest entry; the Unix epoch for an empty feed). A matching `If-None-Match`
//! answers 304; without `If-None-Match`, an `If-Modified-Since` no earlier than Last-Modified
//! does (RFC 9110's precedence). Two releases within one second share a Last-Modified, so only
//! `If-None-Match` tells them apart.

use crate::xml::escape;
use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use chrono::{Days, NaiveDate, NaiveDateTime};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::catalog::{critical_anchor_ms, Catalog, Patch};
use crate::clock::{epoch_seconds, to_datetime, Millis};
// Defined with the fault settings that validate them; re-exported so
// `fleet_sim::feeds::FEED_NAMES` keeps working for callers outside the crate.
pub use crate::faults::FEED_NAMES;
use crate::locks::lock;
use crate::platform::Platform;
use crate::world::World;

const DAY_MS: Millis = 86_400_000;

/// Share of released security patches whose CVEs KEV lists, in percent of patch ids.
pub const KEV_SHARE_PERCENT: u64 = 3;
/// The critical anchor (see the catalog) whose CVEs KEV always lists: 25 days old at the start.
const KEV_ANCHOR_DAYS: i64 = -25;
/// CISA adds a CVE a little after the vendor's fix.
const KEV_ADDED_AFTER_MS: Millis = 2 * DAY_MS;
const KEV_DUE_DAYS: u64 = 21;

const CSAF_MAX_PER_PAGE: usize = 1000;
const HTTP_DATE: &str = "%a, %d %b %Y %H:%M:%S GMT";

/// One advisory feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feed {
    AmazonLinux2,
    AmazonLinux2023,
    RedHat,
    Ubuntu,
    Kev,
}

impl Feed {
    pub const ALL: [Feed; 5] =
        [Feed::AmazonLinux2, Feed::AmazonLinux2023, Feed::RedHat, Feed::Ubuntu, Feed::Kev];

    /// The name `faults.feed_errors` uses.
    pub fn name(self) -> &'static str {
        FEED_NAMES[self.index()]
    }

    pub fn path(self) -> &'static str {
        match self {
            Feed::AmazonLinux2 => "/feeds/amazon-linux-2/updateinfo.xml.gz",
            Feed::AmazonLinux2023 => "/feeds/amazon-linux-2023/updateinfo.xml.gz",
            Feed::RedHat => "/feeds/redhat/csaf.json",
            Feed::Ubuntu => "/feeds/ubuntu/database.json.gz",
            Feed::Kev => "/feeds/kev/known_exploited_vulnerabilities.json",
        }
    }

    pub fn from_path(path: &str) -> Option<Feed> {
        Feed::ALL.into_iter().find(|feed| feed.path() == path)
    }

    fn index(self) -> usize {
        match self {
            Feed::AmazonLinux2 => 0,
            Feed::AmazonLinux2023 => 1,
            Feed::RedHat => 2,
            Feed::Ubuntu => 3,
            Feed::Kev => 4,
        }
    }

    /// The catalogs the feed is generated from.
    fn platforms(self) -> &'static [Platform] {
        match self {
            Feed::AmazonLinux2 => &[Platform::AmazonLinux2],
            Feed::AmazonLinux2023 => &[Platform::AmazonLinux2023],
            Feed::RedHat => &[Platform::Rhel9],
            Feed::Ubuntu => &[Platform::Ubuntu2204],
            Feed::Kev => &Platform::ALL,
        }
    }

    /// Whether `patch`'s entry has appeared by `now_ms` (selection aside).
    fn shows(self, patch: &Patch, now_ms: Millis) -> bool {
        match self {
            Feed::Kev => patch.released_ms.saturating_add(KEV_ADDED_AFTER_MS) <= now_ms,
            _ => patch.is_released(now_ms),
        }
    }
}

// ----- generation -----

/// The patches released by `now_ms`, oldest first (catalog order among equals).
fn released_in_order(patches: &[Patch], now_ms: Millis) -> Vec<&Patch> {
    let mut released: Vec<&Patch> = patches.iter().filter(|p| p.is_released(now_ms)).collect();
    released.sort_by_key(|p| p.released_ms);
    released
}

/// Second precision, as vendors write it.
fn utc_seconds(ms: Millis, format: &str) -> String {
    to_datetime(ms).format(format).to_string()
}

fn product_name(platform: Platform) -> &'static str {
    match platform {
        Platform::AmazonLinux2 => "Amazon Linux 2",
        Platform::AmazonLinux2023 => "Amazon Linux 2023",
        Platform::Ubuntu2204 => "Ubuntu 22.04 LTS",
        Platform::Rhel9 => "Red Hat Enterprise Linux 9",
        Platform::WindowsServer2022 => "Windows Server 2022",
    }
}

/// The catalog's titles start with the advisory id; feeds carry the id in a field of its own.
fn bare_title(patch: &Patch) -> &str {
    patch
        .title
        .strip_prefix(patch.id.as_str())
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(&patch.title)
}

/// yum `updateinfo.xml` of an Amazon Linux catalog: one `<update>` per released patch, oldest
/// first, each fixing its one package.
pub fn updateinfo_xml(platform: Platform, patches: &[Patch], now_ms: Millis) -> String {
    let released = released_in_order(patches, now_ms);
    let product = product_name(platform);
    let mut xml = String::with_capacity(256 + released.len() * 1200);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<updates>\n");
    for patch in released {
        let kind = if patch.is_security() {
            "security"
        } else if patch.classification == "Bugfix" {
            "bugfix"
        } else {
            "enhancement"
        };
        let issued = utc_seconds(patch.released_ms, "%Y-%m-%d %H:%M:%S");
        let description = if patch.cves.is_empty() {
            format!("Package updates are available for {product} that fix bugs or add enhancements.")
        } else {
            format!(
                "Package updates are available for {product} that fix the following vulnerabilities: {}",
                patch.cves.join(", ")
            )
        };
        xml.push_str(&format!(
            "  <update author=\"alas@amazon.com\" from=\"alas@amazon.com\" status=\"final\" type=\"{kind}\" version=\"2.0\">\n    <id>{}</id>\n    <title>{} - {}</title>\n    <issued date=\"{issued}\" />\n    <updated date=\"{issued}\" />\n",
            escape(&patch.id),
            product,
            escape(&patch.title),
        ));
        if patch.is_security() {
            xml.push_str(&format!("    <severity>{}</severity>\n", escape(&patch.severity.to_lowercase())));
        }
        xml.push_str(&format!("    <description>{}</description>\n    <references>\n", escape(&description)));
        for cve in &patch.cves {
            let cve = escape(cve);
            xml.push_str(&format!(
                "      <reference href=\"https://www.cve.org/CVERecord?id={cve}\" id=\"{cve}\" title=\"\" type=\"cve\" />\n"
            ));
        }
        let package = escape(&patch.package);
        let version = escape(&patch.version);
        let release = escape(&patch.release_label);
        xml.push_str(&format!(
            "    </references>\n    <pkglist>\n      <collection short=\"{}---{}\">\n        <name>{product}</name>\n        <package name=\"{package}\" epoch=\"0\" version=\"{version}\" release=\"{release}\" arch=\"x86_64\">\n          <filename>Packages/{package}-{version}-{release}.x86_64.rpm</filename>\n        </package>\n      </collection>\n    </pkglist>\n  </update>\n",
            platform.scenario_name(),
            patch.repository(),
        ));
    }
    xml.push_str("</updates>\n");
    xml
}

/// One entry of the Red Hat Security Data API's CSAF index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CsafEntry {
    /// Named `RHSA` even for RHBA and RHEA errata, as the API does.
    #[serde(rename = "RHSA")]
    pub rhsa: String,
    /// Lowercase; null for bug fix and enhancement errata.
    pub severity: Option<String>,
    pub released_on: String,
    #[serde(rename = "CVEs")]
    pub cves: Vec<String>,
    pub bugzillas: Vec<String>,
    pub released_packages: Vec<String>,
    pub resource_url: String,
    #[serde(skip)]
    pub released_ms: Millis,
}

/// A Bugzilla id per CVE, stable across runs, in the range Red Hat's current bugs use.
fn bugzilla_of(cve: &str) -> String {
    (2_000_000 + fnv1a(cve.as_bytes()) % 400_000).to_string()
}

/// The CSAF index of a RHEL catalog: every released erratum, newest first as the API lists it.
pub fn csaf_index(patches: &[Patch], now_ms: Millis) -> Vec<CsafEntry> {
    let mut entries: Vec<CsafEntry> = released_in_order(patches, now_ms)
        .into_iter()
        .map(|patch| CsafEntry {
            rhsa: patch.id.clone(),
            severity: patch.is_security().then(|| patch.severity.to_lowercase()),
            released_on: utc_seconds(patch.released_ms, "%Y-%m-%dT%H:%M:%SZ"),
            cves: patch.cves.clone(),
            bugzillas: patch.cves.iter().map(|cve| bugzilla_of(cve)).collect(),
            // Epoch 0, so the NEVRA has no `0:` prefix.
            released_packages: vec![format!(
                "{}-{}-{}.x86_64",
                patch.package, patch.version, patch.release_label
            )],
            resource_url: format!("https://access.redhat.com/hydra/rest/securitydata/csaf/{}.json", patch.id),
            released_ms: patch.released_ms,
        })
        .collect();
    entries.reverse();
    entries
}

/// The USN database of an Ubuntu catalog: one object keyed by notice number ("7003-1").
pub fn usn_database(patches: &[Patch], now_ms: Millis) -> String {
    let mut notices = Map::new();
    for patch in released_in_order(patches, now_ms) {
        let number = patch.id.strip_prefix("USN-").unwrap_or(&patch.id);
        let title = bare_title(patch);
        let version = format!("{}-{}", patch.version, patch.release_label);
        // USNs mix bug links into `cves`; consumers must pick the CVE ids out.
        let mut references: Vec<String> = patch.cves.clone();
        references.push(format!(
            "https://launchpad.net/bugs/{}",
            1_000_000 + fnv1a(patch.id.as_bytes()) % 1_000_000
        ));
        let notice = json!({
            "id": patch.id,
            "title": title,
            "summary": title,
            "description": format!("Several security issues were fixed in {}.", patch.package),
            "action": "In general, a standard system update will make all the necessary changes.",
            "isummary": format!("Several security issues were fixed in {}.", patch.package),
            "timestamp": epoch_seconds(patch.released_ms),
            "cves": references,
            "releases": {
                "jammy": {
                    "sources": {
                        patch.package.as_str(): {
                            "version": version,
                            "description": format!("{} ({})", patch.package, title),
                        }
                    },
                    "binaries": { patch.package.as_str(): { "version": version } },
                    "archs": {},
                }
            },
        });
        notices.insert(number.to_string(), notice);
    }
    Value::Object(notices).to_string()
}

/// Whether KEV lists the CVEs of `patch` (once released and added): a stable few percent of
/// the security patches, plus every platform's 25-day-old critical anchor.
pub fn is_kev_listed(patch: &Patch, start_ms: Millis) -> bool {
    if !patch.is_security() || patch.cves.is_empty() {
        return false;
    }
    let anchor =
        patch.severity == "Critical" && patch.released_ms == critical_anchor_ms(start_ms, KEV_ANCHOR_DAYS);
    anchor || fnv1a(patch.id.as_bytes()) % 100 < KEV_SHARE_PERCENT
}

fn kev_vendor_product(patch: &Patch) -> (String, String) {
    match (patch.platform, patch.package.as_str()) {
        (Platform::WindowsServer2022, _) => ("Microsoft".into(), "Windows".into()),
        (_, "kernel" | "linux-image-generic") => ("Linux".into(), "Kernel".into()),
        (_, package) => (package.to_string(), package.to_string()),
    }
}

/// The CISA KEV catalog of the catalogs' listed patches (see [`is_kev_listed`]) added by
/// `now_ms`: one entry per CVE (the earliest addition wins), newest first.
pub fn kev_catalog(patches: &[Patch], start_ms: Millis, now_ms: Millis) -> String {
    kev_document(patches, start_ms, now_ms).0
}

/// The KEV catalog and the instant its newest entry was added (0 when empty).
fn kev_document(patches: &[Patch], start_ms: Millis, now_ms: Millis) -> (String, Millis) {
    let mut first_added: std::collections::BTreeMap<&str, (Millis, &Patch)> = Default::default();
    for patch in patches.iter().filter(|p| Feed::Kev.shows(p, now_ms) && is_kev_listed(p, start_ms)) {
        let added_ms = patch.released_ms + KEV_ADDED_AFTER_MS;
        for cve in &patch.cves {
            let entry = first_added.entry(cve.as_str()).or_insert((added_ms, patch));
            if added_ms < entry.0 {
                *entry = (added_ms, patch);
            }
        }
    }
    let mut listed: Vec<(&str, Millis, &Patch)> =
        first_added.into_iter().map(|(cve, (added_ms, patch))| (cve, added_ms, patch)).collect();
    listed.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let newest_ms = listed.first().map_or(0, |entry| entry.1);
    let vulnerabilities: Vec<Value> = listed
        .iter()
        .map(|(cve, added_ms, patch)| {
            let added = to_datetime(*added_ms).date_naive();
            let due = added.checked_add_days(Days::new(KEV_DUE_DAYS)).unwrap_or(added);
            let (vendor, product) = kev_vendor_product(patch);
            json!({
                "cveID": cve,
                "vendorProject": vendor,
                "product": product,
                "vulnerabilityName": format!("{vendor} {product} Vulnerability"),
                "dateAdded": added.format("%Y-%m-%d").to_string(),
                "shortDescription": format!("{cve} in {} is exploited in the wild; {} fixes it.", patch.package, patch.id),
                "requiredAction": "Apply mitigations per vendor instructions or discontinue use of the product if mitigations are unavailable.",
                "dueDate": due.format("%Y-%m-%d").to_string(),
                "knownRansomwareCampaignUse": "Unknown",
                "notes": patch.content_url(),
                "cwes": [],
            })
        })
        .collect();
    let document = json!({
        "title": "CISA Catalog of Known Exploited Vulnerabilities",
        "catalogVersion": utc_seconds(newest_ms, "%Y.%m.%d"),
        "dateReleased": to_datetime(newest_ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        "count": vulnerabilities.len(),
        "vulnerabilities": vulnerabilities,
    });
    (document.to_string(), newest_ms)
}

/// Gzip as a file (`.gz`) or a content encoding. The header carries no timestamp, so the same
/// content always compresses to the same bytes.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    // Fast compression: feeds are regenerated whenever the catalog changes, and size hardly
    // matters on loopback.
    let mut encoder = GzEncoder::new(Vec::with_capacity(bytes.len() / 4 + 64), Compression::fast());
    encoder.write_all(bytes).and_then(|()| encoder.finish()).expect("gzip into memory cannot fail")
}

/// FNV-1a: stable across runs and platforms, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

// ----- HTTP dates and conditional requests -----

/// IMF-fixdate (RFC 9110), to the second.
pub fn http_date(ms: Millis) -> String {
    utc_seconds(ms, HTTP_DATE)
}

/// Epoch seconds of an HTTP-date: IMF-fixdate, or the obsolete RFC 850 and asctime forms
/// recipients must still accept.
pub fn parse_http_date(text: &str) -> Option<i64> {
    let text = text.trim();
    [HTTP_DATE, "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"]
        .into_iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .map(|naive| naive.and_utc().timestamp())
}

/// The tag compared by content: weakness and the gzip representation's suffix ignored, since a
/// client holding either representation holds the same content.
fn content_tag(tag: &str) -> &str {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(tag);
    tag.strip_suffix("-gzip").unwrap_or(tag)
}

fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> Option<bool> {
    let mut present = false;
    let mut hit = false;
    for value in headers.get_all(header::IF_NONE_MATCH) {
        present = true;
        let Ok(list) = value.to_str() else { continue };
        hit |= list
            .split(',')
            .any(|candidate| candidate.trim() == "*" || content_tag(candidate) == content_tag(etag));
    }
    present.then_some(hit)
}

/// Whether the client's copy is current (RFC 9110 section 13.2.2: If-Modified-Since counts only
/// without If-None-Match).
fn not_modified(headers: &HeaderMap, etag: &str, last_modified_ms: Millis) -> bool {
    if let Some(hit) = if_none_match_hits(headers, etag) {
        return hit;
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date)
        .is_some_and(|since| since >= last_modified_ms.div_euclid(1000))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|value| value.to_str().ok()).any(|list| {
        list.split(',').any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let refused = parts.any(|param| {
                let param = param.trim();
                let weight = param.strip_prefix("q=").or_else(|| param.strip_prefix("Q="));
                weight.and_then(|q| q.trim().parse::<f64>().ok()) == Some(0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip")) && !refused
        })
    })
}

// ----- the CSAF index's paging -----

/// The query of a CSAF index page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsafQuery {
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
    /// Midnight UTC of `after`: entries released from then on are kept.
    pub after_ms: Option<Millis>,
}

impl Default for CsafQuery {
    fn default() -> CsafQuery {
        CsafQuery { page: 1, per_page: CSAF_MAX_PER_PAGE, after_ms: None }
    }
}

impl CsafQuery {
    /// Reads `page`, `per_page` and `after`; out-of-range numbers are clamped, text that is not
    /// a number or a date is an error. `after` keeps the whole day it names, so a client asking
    /// from the date of its newest entry misses nothing released later that day.
    pub fn parse(query: &str) -> Result<CsafQuery, String> {
        let mut parsed = CsafQuery::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let number = || {
                value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("{key} must be a whole number, not {value:?}"))
            };
            match key.as_ref() {
                "page" => parsed.page = usize::try_from(number()?.max(1)).unwrap_or(usize::MAX),
                "per_page" => {
                    parsed.per_page = number()?.clamp(1, CSAF_MAX_PER_PAGE as i64) as usize;
                }
                "after" => {
                    let date = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d")
                        .map_err(|_| format!("after must be a date YYYY-MM-DD, not {value:?}"))?;
                    parsed.after_ms =
                        Some(date.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_millis()));
                }
                _ => {}
            }
        }
        Ok(parsed)
    }

    /// The page's slice of an index ordered newest first.
    fn select<'a, T>(&self, entries: &'a [(Millis, T)]) -> &'a [(Millis, T)] {
        let kept = match self.after_ms {
            Some(after) => entries.partition_point(|(released, _)| *released >= after),
            None => entries.len(),
        };
        let start = (self.page - 1).saturating_mul(self.per_page).min(kept);
        &entries[start..kept.min(start.saturating_add(self.per_page))]
    }
}

// ----- serving -----

/// Generated feeds, kept until the catalog shows them differently.
#[derive(Debug, Default)]
pub(crate) struct FeedCache {
    slots: Mutex<[Option<Arc<Generated>>; 5]>,
}

/// Per catalog the feed draws from: (entries visible, catalog size). Catalog entries only ever
/// appear (the clock moving) or are added (a run-time release), so this names the content.
type CacheKey = Vec<(usize, usize)>;

#[derive(Debug)]
struct Generated {
    key: CacheKey,
    content: Content,
}

#[derive(Debug)]
enum Content {
    /// A whole-file feed: the body as served.
    File { body: Bytes, etag: String, newest_ms: Millis },
    /// The CSAF index, newest first: each entry's release and its JSON text.
    Csaf { entries: Vec<(Millis, String)> },
}

fn cache_key(feed: Feed, catalog: &Catalog, now_ms: Millis) -> CacheKey {
    feed.platforms()
        .iter()
        .map(|platform| {
            let patches = catalog.patches(*platform);
            (patches.iter().filter(|p| feed.shows(p, now_ms)).count(), patches.len())
        })
        .collect()
}

/// Copies of what the feed shows, so that generating it does not hold the world's lock.
fn inputs(feed: Feed, catalog: &Catalog, start_ms: Millis, now_ms: Millis) -> Vec<Patch> {
    feed.platforms()
        .iter()
        .flat_map(|platform| catalog.patches(*platform))
        .filter(|p| feed.shows(p, now_ms) && (feed != Feed::Kev || is_kev_listed(p, start_ms)))
        .cloned()
        .collect()
}

fn etag_of(feed: Feed, content: &[u8]) -> String {
    format!("\"{}-{:016x}\"", feed.name(), fnv1a(content))
}

fn generate(feed: Feed, patches: &[Patch], start_ms: Millis, now_ms: Millis) -> Content {
    let newest_release_ms = patches.iter().map(|p| p.released_ms).max().unwrap_or(0);
    let file = |text: String, compress: bool, newest_ms: Millis| {
        let etag = etag_of(feed, text.as_bytes());
        let body = if compress { Bytes::from(gzip(text.as_bytes())) } else { Bytes::from(text) };
        Content::File { body, etag, newest_ms }
    };
    match feed {
        Feed::AmazonLinux2 => {
            file(updateinfo_xml(Platform::AmazonLinux2, patches, now_ms), true, newest_release_ms)
        }
        Feed::AmazonLinux2023 => {
            file(updateinfo_xml(Platform::AmazonLinux2023, patches, now_ms), true, newest_release_ms)
        }
        Feed::Ubuntu => file(usn_database(patches, now_ms), true, newest_release_ms),
        Feed::Kev => {
            let (text, newest_added_ms) = kev_document(patches, start_ms, now_ms);
            file(text, false, newest_added_ms)
        }
        Feed::RedHat => Content::Csaf {
            entries: csaf_index(patches, now_ms)
                .into_iter()
                .map(|entry| (entry.released_ms, serde_json::to_string(&entry).unwrap_or_default()))
                .collect(),
        },
    }
}

/// What generating a feed the cache lacks takes, copied out of the world.
struct Miss {
    key: CacheKey,
    patches: Vec<Patch>,
    start_ms: Millis,
    now_ms: Millis,
}

/// A feed request, detached from the connection so it can be answered off the async runtime.
#[derive(Debug)]
pub(crate) struct FeedRequest {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
}

pub(crate) fn is_feed_path(path: &str) -> bool {
    path == "/feeds" || path.starts_with("/feeds/")
}

fn text(status: StatusCode, message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// What one answer serves, before conditional headers decide whether the body goes out.
struct Representation {
    body: Bytes,
    etag: String,
    last_modified_ms: Millis,
    content_type: &'static str,
    gzip_encoded: bool,
    /// Whether the body depends on Accept-Encoding.
    negotiated: bool,
}

fn represent(feed: Feed, content: &Content, query: &CsafQuery, headers: &HeaderMap) -> Representation {
    match content {
        Content::File { body, etag, newest_ms } => Representation {
            body: body.clone(),
            etag: etag.clone(),
            last_modified_ms: *newest_ms,
            content_type: if feed == Feed::Kev { "application/json" } else { "application/gzip" },
            gzip_encoded: false,
            negotiated: false,
        },
        Content::Csaf { entries } => {
            let page = query.select(entries);
            let mut json =
                String::with_capacity(2 + page.iter().map(|(_, text)| text.len() + 1).sum::<usize>());
            json.push('[');
            for (position, (_, entry)) in page.iter().enumerate() {
                if position > 0 {
                    json.push(',');
                }
                json.push_str(entry);
            }
            json.push(']');
            let identity = etag_of(feed, json.as_bytes());
            let gzip_encoded = accepts_gzip(headers);
            let (body, etag) = if gzip_encoded {
                let tag = format!("{}-gzip\"", identity.trim_end_matches('"'));
                (Bytes::from(gzip(json.as_bytes())), tag)
            } else {
                (Bytes::from(json), identity)
            };
            Representation {
                body,
                etag,
                last_modified_ms: entries.first().map_or(0, |(released, _)| *released),
                content_type: "application/json",
                gzip_encoded,
                negotiated: true,
            }
        }
    }
}

impl FeedCache {
    fn get(&self, feed: Feed, key: &CacheKey) -> Option<Arc<Generated>> {
        lock(&self.slots)[feed.index()].as_ref().filter(|generated| generated.key == *key).cloned()
    }

    fn put(&self, feed: Feed, generated: Arc<Generated>) {
        lock(&self.slots)[feed.index()] = Some(generated);
    }
}

/// Answers a request under `/feeds/` (blocking: generation and compression are CPU work).
/// The feeds come from the primary partition's catalog; `cache` keeps what they last generated.
pub(crate) fn answer(primary: &Mutex<World>, cache: &FeedCache, request: &FeedRequest) -> Response {
    let Some(feed) = Feed::from_path(&request.path) else {
        let known: Vec<&str> = Feed::ALL.iter().map(|feed| feed.path()).collect();
        return text(
            StatusCode::NOT_FOUND,
            format!("no feed at {}; feeds: {}\n", request.path, known.join(", ")),
        );
    };
    if request.method != Method::GET && request.method != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "feeds answer GET\n".to_string());
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let query =
        if feed == Feed::RedHat { CsafQuery::parse(&request.query) } else { Ok(CsafQuery::default()) };
    let cached = {
        let mut world = lock(primary);
        let now_ms = world.sync();
        world.counters.feed_requests += 1;
        if world.faults.feed_fails(feed.name()) {
            world.counters.feed_errors += 1;
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("feed {} failed (fault feed_errors)\n", feed.name()),
            );
        }
        let key = cache_key(feed, &world.catalog, now_ms);
        match cache.get(feed, &key) {
            Some(generated) => Ok(generated),
            None => {
                let patches = inputs(feed, &world.catalog, world.start_ms, now_ms);
                Err(Miss { key, patches, start_ms: world.start_ms, now_ms })
            }
        }
    };
    let query = match query {
        Ok(query) => query,
        Err(message) => return text(StatusCode::BAD_REQUEST, format!("{message}\n")),
    };
    let generated = cached.unwrap_or_else(|miss| {
        let content = generate(feed, &miss.patches, miss.start_ms, miss.now_ms);
        let generated = Arc::new(Generated { key: miss.key, content });
        cache.put(feed, generated.clone());
        generated
    });
    let representation = represent(feed, &generated.content, &query, &request.headers);
    let fresh = not_modified(&request.headers, &representation.etag, representation.last_modified_ms);
    let mut response = if fresh {
        lock(primary).counters.feed_not_modified += 1;
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(representation.body));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(representation.content_type));
        if representation.gzip_encoded {
            response.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        response
    };
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&representation.etag) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(date) = HeaderValue::from_str(&http_date(representation.last_modified_ms)) {
        headers.insert(header::LAST_MODIFIED, date);
    }
    if representation.negotiated {
        headers.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::catalog::{CatalogShape, PatchRelease};

    /// 2026-11-28T00:00:00Z.
    const START: Millis = 1_795_824_000_000;

    fn catalog(patches: usize) -> Catalog {
        let shape = CatalogShape { patches, history_days: 540, future_days: 30, future_share: 0.1 };
        Catalog::generate([shape; 5], START, 9)
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut text = String::new();
        GzDecoder::new(bytes).read_to_string(&mut text).expect("gzip");
        text
    }

    /// The text between `open` and the next `close` after each `open`.
    fn all_between<'a>(text: &'a str, open: &str, close: &str) -> Vec<&'a str> {
        text.split(open).skip(1).filter_map(|rest| rest.split(close).next()).collect()
    }

    #[test]
    fn feed_names_are_the_fault_names() {
        assert_eq!(Feed::ALL.map(Feed::name), FEED_NAMES);
        for feed in Feed::ALL {
            assert_eq!(Feed::from_path(feed.path()), Some(feed));
            assert!(is_feed_path(feed.path()));
        }
        assert_eq!(Feed::from_path("/feeds/windows/updates.json"), None);
        assert!(crate::catalog::CRITICAL_ANCHOR_DAYS.contains(&KEV_ANCHOR_DAYS));
    }

    #[test]
    fn updateinfo_lists_each_released_patch_once_at_its_instant() {
        let catalog = catalog(200);
        for platform in [Platform::AmazonLinux2, Platform::AmazonLinux2023] {
            let patches = catalog.patches(platform);
            let xml = updateinfo_xml(platform, patches, START);
            assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<updates>\n"));
            assert!(xml.ends_with("</updates>\n"));
            let released: Vec<&Patch> = patches.iter().filter(|p| p.is_released(START)).collect();
            assert!(released.len() < patches.len(), "the catalog has future patches");
            assert_eq!(xml.matches("<update ").count(), released.len());
            assert_eq!(xml.matches("</update>").count(), released.len());
            let ids = all_between(&xml, "<id>", "</id>");
            let issued = all_between(&xml, "<issued date=\"", "\"");
            assert_eq!((ids.len(), issued.len()), (released.len(), released.len()));
            for patch in patches {
                let found: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == patch.id).collect();
                if !patch.is_released(START) {
                    assert!(found.is_empty(), "{} is not released yet", patch.id);
                    continue;
                }
                assert_eq!(found.len(), 1, "{}", patch.id);
                let date =
                    NaiveDateTime::parse_from_str(issued[found[0]], "%Y-%m-%d %H:%M:%S").expect("date");
                assert_eq!(date.and_utc().timestamp_millis(), patch.released_ms, "{}", patch.id);
            }
            let security = released.iter().filter(|p| p.is_security()).count();
            assert_eq!(xml.matches("type=\"security\"").count(), security);
            assert_eq!(xml.matches("<severity>").count(), security, "only security updates carry one");
            assert!(!xml.contains("<severity>Critical"), "severities are lowercase");
            let cves: usize = released.iter().map(|p| p.cves.len()).sum();
            assert_eq!(xml.matches("type=\"cve\"").count(), cves);
            assert!(xml.contains("epoch=\"0\"") && xml.contains("arch=\"x86_64\""));
        }
    }

    #[test]
    fn updateinfo_escapes_text_and_shows_run_time_releases() {
        let mut catalog = catalog(20);
        let release = PatchRelease {
            title: Some("<script> & \"quotes\" 'too'".into()),
            package: Some("a&b".into()),
            ..PatchRelease::default()
        };
        let later = START + DAY_MS;
        catalog.release(Platform::AmazonLinux2, &release, later, &mut ChaCha8Rng::seed_from_u64(3));
        let xml = updateinfo_xml(Platform::AmazonLinux2, catalog.patches(Platform::AmazonLinux2), later);
        assert!(xml.contains("&lt;script&gt; &amp; &quot;quotes&quot; &apos;too&apos;"), "{xml}");
        assert!(xml.contains("name=\"a&amp;b\""));
        assert!(!xml.contains("<script>") && !xml.contains("a&b"));
        let before =
            updateinfo_xml(Platform::AmazonLinux2, catalog.patches(Platform::AmazonLinux2), later - 1000);
        assert!(!before.contains("&lt;script&gt;"), "not released a second earlier");
    }

    #[test]
    fn csaf_index_is_newest_first_with_exact_instants() {
        let catalog = catalog(300);
        let patches = catalog.patches(Platform::Rhel9);
        let index = csaf_index(patches, START);
        let released = patches.iter().filter(|p| p.is_released(START)).count();
        assert_eq!(index.len(), released);
        assert!(index.windows(2).all(|w| w[0].released_ms >= w[1].released_ms));
        let text = serde_json::to_string(&index).expect("serializes");
        let parsed: Vec<Value> = serde_json::from_str(&text).expect("a JSON array");
        for (entry, json) in index.iter().zip(&parsed) {
            let patch = catalog.find(&entry.rhsa).expect("a catalog patch");
            assert_eq!(json["RHSA"], patch.id.as_str());
            let released = chrono::DateTime::parse_from_rfc3339(json["released_on"].as_str().expect("text"))
                .expect("RFC 3339");
            assert_eq!(released.timestamp_millis(), patch.released_ms);
            assert_eq!(json["CVEs"], json!(patch.cves));
            assert_eq!(json["bugzillas"].as_array().map(Vec::len), Some(patch.cves.len()));
            let nevra = format!("{}-{}-{}.x86_64", patch.package, patch.version, patch.release_label);
            assert_eq!(json["released_packages"], json!([nevra]));
            assert!(json.get("released_ms").is_none());
            if patch.id.starts_with("RHSA-") {
                assert_eq!(json["severity"], patch.severity.to_lowercase());
            } else {
                assert_eq!(json["severity"], Value::Null, "{}", patch.id);
            }
        }
        let mut ids: Vec<&str> = index.iter().map(|e| e.rhsa.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), index.len());
    }

    #[test]
    fn csaf_pages_and_after() {
        let entries: Vec<(Millis, u32)> = (0..25).map(|i| (START - i64::from(i) * DAY_MS, i)).collect();
        let page = |query: &str| -> Vec<u32> {
            CsafQuery::parse(query).expect("valid").select(&entries).iter().map(|(_, i)| *i).collect()
        };
        assert_eq!(page("").len(), 25);
        assert_eq!(page("page=1&per_page=10"), (0..10).collect::<Vec<_>>());
        assert_eq!(page("page=3&per_page=10"), (20..25).collect::<Vec<_>>());
        assert!(page("page=4&per_page=10").is_empty());
        assert!(page("page=99999999999&per_page=1000").is_empty());
        assert_eq!(page("page=0&per_page=0"), vec![0], "clamped to the first page of one");
        assert_eq!(page("per_page=5000").len(), 25);
        // START is midnight: the day two days back is kept whole, the third day back is not.
        assert_eq!(page("after=2026-11-26"), vec![0, 1, 2]);
        assert_eq!(page("after=2026-11-26&page=2&per_page=2"), vec![2]);
        assert!(page("after=2030-01-01").is_empty());
        for bad in ["page=one", "per_page=1.5", "page=", "after=yesterday", "after=2026-13-01"] {
            assert!(CsafQuery::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(CsafQuery::parse("other=x").expect("ignored"), CsafQuery::default());
    }

    #[test]
    fn usn_database_keys_versions_and_timestamps() {
        let catalog = catalog(150);
        let patches = catalog.patches(Platform::Ubuntu2204);
        let text = usn_database(patches, START);
        let database: Map<String, Value> = serde_json::from_str(&text).expect("a JSON object");
        assert_eq!(database.len(), patches.iter().filter(|p| p.is_released(START)).count());
        for patch in patches.iter().filter(|p| p.is_released(START)) {
            let key = patch.id.strip_prefix("USN-").expect("USN id");
            let notice = &database[key];
            assert_eq!(notice["id"], patch.id.as_str());
            let timestamp = notice["timestamp"].as_f64().expect("a number");
            assert_eq!((timestamp * 1000.0).round() as i64, patch.released_ms);
            let version = format!("{}-{}", patch.version, patch.release_label);
            let jammy = &notice["releases"]["jammy"];
            assert_eq!(jammy["sources"][patch.package.as_str()]["version"], version.as_str());
            assert_eq!(jammy["binaries"][patch.package.as_str()]["version"], version.as_str());
            let cves: Vec<&str> = notice["cves"]
                .as_array()
                .expect("a list")
                .iter()
                .filter_map(Value::as_str)
                .filter(|c| c.starts_with("CVE-"))
                .collect();
            assert_eq!(cves, patch.cves.iter().map(String::as_str).collect::<Vec<_>>());
            assert!(!notice["title"].as_str().expect("text").starts_with("USN-"));
        }
    }

    #[test]
    fn kev_lists_a_stable_few_and_every_due_soon_anchor() {
        let catalog = catalog(400);
        let all: Vec<Patch> = Platform::ALL.iter().flat_map(|p| catalog.patches(*p)).cloned().collect();
        let text = kev_catalog(&all, START, START);
        assert_eq!(text, kev_catalog(&all, START, START), "deterministic");
        let document: Value = serde_json::from_str(&text).expect("JSON");
        let vulnerabilities = document["vulnerabilities"].as_array().expect("a list");
        assert_eq!(document["count"], vulnerabilities.len());
        let listed: std::collections::BTreeSet<&str> =
            vulnerabilities.iter().filter_map(|v| v["cveID"].as_str()).collect();
        assert_eq!(listed.len(), vulnerabilities.len(), "one entry per CVE");
        for platform in Platform::ALL {
            let anchor = catalog
                .patches(platform)
                .iter()
                .find(|p| p.released_ms == critical_anchor_ms(START, KEV_ANCHOR_DAYS))
                .expect("every catalog has the 25-day anchor");
            assert!(anchor.cves.iter().all(|cve| listed.contains(cve.as_str())), "{platform}");
        }
        let security = all.iter().filter(|p| p.is_security() && p.released_ms + 2 * DAY_MS <= START).count();
        let hashed = all
            .iter()
            .filter(|p| p.is_security() && p.released_ms + 2 * DAY_MS <= START)
            .filter(|p| fnv1a(p.id.as_bytes()) % 100 < KEV_SHARE_PERCENT)
            .count();
        assert!(hashed > 0 && hashed * 10 < security, "{hashed} of {security}");
        let today = to_datetime(START).date_naive();
        for entry in vulnerabilities {
            let added = NaiveDate::parse_from_str(entry["dateAdded"].as_str().expect("date"), "%Y-%m-%d")
                .expect("YYYY-MM-DD");
            let due = NaiveDate::parse_from_str(entry["dueDate"].as_str().expect("date"), "%Y-%m-%d")
                .expect("YYYY-MM-DD");
            assert!(added <= today);
            assert_eq!((due - added).num_days(), 21);
            let cve = entry["cveID"].as_str().expect("id");
            let first_release = all
                .iter()
                .filter(|p| is_kev_listed(p, START) && p.cves.iter().any(|c| c == cve))
                .map(|p| p.released_ms)
                .min()
                .expect("from a listed patch");
            assert_eq!(added, to_datetime(first_release + 2 * DAY_MS).date_naive(), "{cve}");
        }
        let anchor_added = to_datetime(critical_anchor_ms(START, KEV_ANCHOR_DAYS) + 2 * DAY_MS).date_naive();
        assert!(anchor_added + Days::new(21) < today, "the anchor's KEV due date has passed at the start");
        let later = kev_catalog(&all, START, START + 40 * DAY_MS);
        let later: Value = serde_json::from_str(&later).expect("JSON");
        assert!(later["count"].as_u64() > document["count"].as_u64(), "future releases are added later");
    }

    #[test]
    fn kev_skips_entries_added_in_the_future() {
        let catalog = catalog(60);
        let all: Vec<Patch> = Platform::ALL.iter().flat_map(|p| catalog.patches(*p)).cloned().collect();
        let three_days_anchor = critical_anchor_ms(START, -3);
        let just_before = kev_catalog(&all, START, three_days_anchor + 2 * DAY_MS - 1000);
        let document: Value = serde_json::from_str(&just_before).expect("JSON");
        let newest = document["dateReleased"].as_str().expect("text");
        let newest = chrono::DateTime::parse_from_rfc3339(newest).expect("RFC 3339").timestamp_millis();
        assert!(newest < three_days_anchor + 2 * DAY_MS);
        assert!(kev_catalog(&[], START, START).contains("\"count\":0"));
    }

    #[test]
    fn gzip_round_trips() {
        let text = updateinfo_xml(Platform::AmazonLinux2, catalog(50).patches(Platform::AmazonLinux2), START);
        let compressed = gzip(text.as_bytes());
        assert_eq!(&compressed[..2], &[0x1f, 0x8b]);
        assert!(compressed.len() < text.len());
        assert_eq!(gunzip(&compressed), text);
        assert_eq!(gzip(text.as_bytes()), compressed, "no timestamp in the header");
    }

    #[test]
    fn http_dates() {
        let ms = 1_445_412_480_000; // 2015-10-21T07:28:00Z
        assert_eq!(http_date(ms), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(http_date(ms + 999), "Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT"), Some(ms / 1000));
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784_111_777));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn conditional_requests() {
        let etag = "\"kev-00000000000000ff\"";
        let modified = 1_445_412_480_000;
        let inm = |value| headers(&[(header::IF_NONE_MATCH, value)]);
        assert!(not_modified(&inm("\"kev-00000000000000ff\""), etag, modified));
        assert!(not_modified(&inm("W/\"kev-00000000000000ff\""), etag, modified));
        assert!(not_modified(&inm("\"x\", \"kev-00000000000000ff\""), etag, modified));
        assert!(not_modified(&inm("*"), etag, modified));
        assert!(not_modified(&inm("\"kev-00000000000000ff-gzip\""), etag, modified), "same content");
        assert!(!not_modified(&inm("\"kev-00000000000000fe\""), etag, modified));
        assert!(!not_modified(&HeaderMap::new(), etag, modified));
        let ims = |value| headers(&[(header::IF_MODIFIED_SINCE, value)]);
        assert!(not_modified(&ims("Wed, 21 Oct 2015 07:28:00 GMT"), etag, modified));
        assert!(not_modified(&ims("Wed, 21 Oct 2015 07:28:00 GMT"), etag, modified + 500), "to the second");
        assert!(not_modified(&ims("Thu, 22 Oct 2015 00:00:00 GMT"), etag, modified));
        assert!(!not_modified(&ims("Wed, 21 Oct 2015 07:27:59 GMT"), etag, modified));
        assert!(!not_modified(&ims("garbage"), etag, modified));
        let both = headers(&[
            (header::IF_NONE_MATCH, "\"other\""),
            (header::IF_MODIFIED_SINCE, "Thu, 22 Oct 2015 00:00:00 GMT"),
        ]);
        assert!(!not_modified(&both, etag, modified), "If-None-Match decides when present");
    }

    #[test]
    fn gzip_negotiation() {
        let accept = |value| accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, value)]));
        assert!(accept("gzip"));
        assert!(accept("deflate, GZIP;q=0.5"));
        assert!(accept("br, x-gzip"));
        assert!(!accept("gzip;q=0"));
        assert!(!accept("identity"));
        assert!(!accept("gzipped"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn cache_key_moves_with_time_and_releases() {
        let mut catalog = catalog(100);
        let key = cache_key(Feed::RedHat, &catalog, START);
        assert_eq!(key, cache_key(Feed::RedHat, &catalog, START + 1));
        assert_ne!(key, cache_key(Feed::RedHat, &catalog, START + 30 * DAY_MS), "future patches appear");
        catalog.release(Platform::Rhel9, &PatchRelease::default(), START, &mut ChaCha8Rng::seed_from_u64(1));
        assert_ne!(key, cache_key(Feed::RedHat, &catalog, START));
        assert_eq!(cache_key(Feed::Kev, &catalog, START).len(), 5);
        let inputs = inputs(Feed::Kev, &catalog, START, START);
        assert!(inputs.iter().all(|p| is_kev_listed(p, START) && p.released_ms + 2 * DAY_MS <= START));
    }
}
