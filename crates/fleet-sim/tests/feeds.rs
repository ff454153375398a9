//! The advisory feeds over HTTP: formats as served, agreement with SSM's release dates,
//! conditional requests, paging, gzip, the `feed_errors` fault and the feed counters.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use fleet_sim::feeds::{http_date, parse_http_date};
use fleet_sim::{Scenario, SimServer};
use serde_json::Value;

use common::http::{header, raw, raw_bytes};
use common::sdk;

const AL2: &str = "/feeds/amazon-linux-2/updateinfo.xml.gz";
const CSAF: &str = "/feeds/redhat/csaf.json";
const UBUNTU: &str = "/feeds/ubuntu/database.json.gz";
const KEV: &str = "/feeds/kev/known_exploited_vulnerabilities.json";

async fn start() -> SimServer {
    let start: DateTime<Utc> = "2026-11-28T00:00:00Z".parse().expect("an instant");
    let scenario = Scenario::minimal().with_time_scale(0.0).with_start(start);
    SimServer::start("127.0.0.1:0".parse().expect("address"), scenario).await.expect("server starts")
}

fn ssm(server: &SimServer) -> aws_sdk_ssm::Client {
    sdk::ssm_client(&server.endpoint_url())
}

fn gunzip(bytes: &[u8]) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes).read_to_string(&mut text).expect("a gzip body");
    text
}

/// Advisory id → issued instant (epoch seconds) of an updateinfo.xml.
fn issued_dates(xml: &str) -> BTreeMap<String, i64> {
    xml.split("<update ")
        .skip(1)
        .map(|update| {
            let id = update.split("<id>").nth(1).and_then(|s| s.split("</id>").next()).expect("an id");
            let date =
                update.split("<issued date=\"").nth(1).and_then(|s| s.split('"').next()).expect("a date");
            let date = NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S").expect("the documented form");
            (id.to_string(), date.and_utc().timestamp())
        })
        .collect()
}

/// Advisory id → ReleaseDate (epoch seconds, fractions kept) of every AL2 patch SSM lists.
async fn ssm_release_dates(server: &SimServer) -> BTreeMap<String, f64> {
    let patches = sdk::available_al2_patches(&ssm(server)).await;
    let released =
        |patch: &aws_sdk_ssm::types::Patch| patch.release_date().expect("a release date").as_secs_f64();
    patches.iter().map(|patch| (patch.id().expect("an id").to_string(), released(patch))).collect()
}

async fn get(server: &SimServer, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    raw_bytes(server, path, headers).await
}

#[tokio::test]
async fn amazon_linux_feed_agrees_with_ssm_and_answers_conditionally() {
    let server = start().await;
    let (status, head, body) = get(&server, AL2, &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/gzip"));
    assert_eq!(header(&head, "content-encoding"), None, "a .gz file, not a transfer encoding");
    let etag = header(&head, "etag").expect("an ETag").to_string();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let last_modified = header(&head, "last-modified").expect("Last-Modified").to_string();

    let feed = issued_dates(&gunzip(&body));
    let ssm = ssm_release_dates(&server).await;
    assert!(feed.len() > 50, "{} updates", feed.len());
    assert_eq!(feed.keys().collect::<Vec<_>>(), ssm.keys().collect::<Vec<_>>(), "the same advisories");
    for (id, seconds) in &feed {
        assert_eq!(*seconds as f64, ssm[id], "{id}: the feed and SSM name the same instant");
    }
    let newest = feed.values().max().copied().expect("entries");
    assert_eq!(parse_http_date(&last_modified), Some(newest), "{last_modified}");

    let (status, head, body) = get(&server, AL2, &[("If-None-Match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    assert_eq!(header(&head, "etag"), Some(etag.as_str()));
    let (status, _, _) = get(&server, AL2, &[("If-Modified-Since", &last_modified)]).await;
    assert_eq!(status, 304);
    let a_second_earlier = http_date((newest - 1) * 1000);
    let (status, _, _) = get(&server, AL2, &[("If-Modified-Since", &a_second_earlier)]).await;
    assert_eq!(status, 200);
    let (status, _, _) =
        get(&server, AL2, &[("If-None-Match", "\"stale\""), ("If-Modified-Since", &last_modified)]).await;
    assert_eq!(status, 200, "If-None-Match decides when present");

    let (status, _, released) = raw(
        &server,
        "POST",
        "/_sim/patches/release",
        &[],
        r#"{"os": "AMAZON_LINUX_2", "severity": "Critical", "classification": "Security"}"#,
    )
    .await;
    assert_eq!(status, 200, "{released}");
    let released: Value = serde_json::from_str(&released).expect("json");
    let id = released["id"].as_str().expect("an id");
    let (status, head, body) = get(&server, AL2, &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 200, "a release changes the feed");
    let after_release = header(&head, "etag").expect("an ETag").to_string();
    assert_ne!(after_release, etag);
    assert_eq!(issued_dates(&gunzip(&body))[id], server.now().timestamp());

    server.advance(Duration::from_secs(3 * 86_400));
    let (status, head, body) = get(&server, AL2, &[("If-None-Match", &after_release)]).await;
    assert_eq!(status, 200, "patches released meanwhile appear");
    let later = issued_dates(&gunzip(&body));
    assert!(later.len() > feed.len() + 1, "{} then {}", feed.len(), later.len());
    let last_modified = parse_http_date(header(&head, "last-modified").expect("Last-Modified"));
    assert_eq!(last_modified, later.values().max().copied());

    let stats = server.stats();
    assert_eq!((stats.feed_requests, stats.feed_not_modified, stats.feed_errors), (7, 2, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn redhat_index_pages_gzip_and_faults() {
    let server = start().await;
    let (status, head, whole) = get(&server, CSAF, &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let whole: Vec<Value> = serde_json::from_slice(&whole).expect("a JSON array");
    assert!(whole.len() > 50);

    let mut paged = Vec::new();
    for page in 1.. {
        let (status, _, body) = get(&server, &format!("{CSAF}?page={page}&per_page=40"), &[]).await;
        assert_eq!(status, 200);
        if body == b"[]" {
            break;
        }
        let entries: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        assert!(!entries.is_empty() && entries.len() <= 40);
        paged.extend(entries);
    }
    assert_eq!(paged, whole, "pages join to the whole index");
    let released: Vec<&str> = whole.iter().map(|e| e["released_on"].as_str().expect("a date")).collect();
    assert!(released.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let (status, head, compressed) =
        get(&server, &format!("{CSAF}?per_page=40"), &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-encoding"), Some("gzip"));
    assert_eq!(header(&head, "vary"), Some("Accept-Encoding"));
    let first_page: Vec<Value> = serde_json::from_str(&gunzip(&compressed)).expect("JSON inside");
    assert_eq!(first_page, whole[..40]);
    let gzip_etag = header(&head, "etag").expect("an ETag").to_string();
    let (status, _, _) = get(&server, &format!("{CSAF}?per_page=40"), &[("If-None-Match", &gzip_etag)]).await;
    assert_eq!(status, 304, "the same content, whichever encoding the client holds it in");
    let (status, _, _) = get(&server, &format!("{CSAF}?per_page=41"), &[("If-None-Match", &gzip_etag)]).await;
    assert_eq!(status, 200, "another page is other content");

    let day = &released[10][..10];
    let (_, _, body) = get(&server, &format!("{CSAF}?after={day}"), &[]).await;
    let recent: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
    assert!(recent.len() >= 11 && recent.len() < whole.len());
    assert!(recent.iter().all(|e| e["released_on"].as_str().expect("a date")[..10] >= *day));
    for bad in ["page=two", "per_page=", "after=28/11/2026"] {
        let (status, _, _) = get(&server, &format!("{CSAF}?{bad}"), &[]).await;
        assert_eq!(status, 400, "{bad}");
    }

    let (status, _, body) = raw(&server, "POST", "/_sim/faults", &[], r#"{"feed_errors": ["redhat"]}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = get(&server, CSAF, &[]).await;
    assert_eq!(status, 500);
    let (status, _, _) = get(&server, KEV, &[]).await;
    assert_eq!(status, 200, "other feeds keep answering");
    let (status, _, body) =
        raw(&server, "POST", "/_sim/faults", &[], r#"{"feed_errors": ["windows"]}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) = raw(&server, "POST", "/_sim/faults", &[], r#"{"feed_errors": []}"#).await;
    assert_eq!(status, 200);
    let (status, _, _) = get(&server, CSAF, &[]).await;
    assert_eq!(status, 200);

    let (status, _, body) = get(&server, "/feeds/windows/updates.json", &[]).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = raw(&server, "POST", CSAF, &[], "").await;
    assert_eq!(status, 405);

    let (_, _, stats) = raw(&server, "GET", "/_sim/stats", &[], "").await;
    let stats: Value = serde_json::from_str(&stats).expect("json");
    let pages = paged.len().div_ceil(40) + 1;
    // The whole index, the pages, three conditional ones, `after`, three refused queries, two
    // under the fault and one after it; 404 and 405 name no feed and do not count.
    let requests = 1 + pages + 3 + 1 + 3 + 2 + 1;
    assert_eq!(stats["feed_requests"], requests, "{stats}");
    assert_eq!(stats["feed_not_modified"], 1);
    assert_eq!(stats["feed_errors"], 1);
    server.shutdown().await;
}

#[tokio::test]
async fn ubuntu_database_and_kev_catalog() {
    let server = start().await;
    let (status, head, body) = get(&server, UBUNTU, &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/gzip"));
    let database: serde_json::Map<String, Value> = serde_json::from_str(&gunzip(&body)).expect("an object");
    assert!(database.len() > 50);
    let mut newest = 0.0f64;
    for (key, notice) in &database {
        assert_eq!(notice["id"].as_str(), Some(format!("USN-{key}").as_str()));
        assert!(notice["releases"]["jammy"]["sources"].as_object().is_some_and(|s| s.len() == 1));
        newest = newest.max(notice["timestamp"].as_f64().expect("epoch seconds"));
    }
    let last_modified = parse_http_date(header(&head, "last-modified").expect("Last-Modified"));
    assert_eq!(last_modified, Some(newest as i64));

    let (status, head, body) = get(&server, KEV, &[]).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-type"), Some("application/json"));
    let kev: Value = serde_json::from_slice(&body).expect("JSON");
    let vulnerabilities = kev["vulnerabilities"].as_array().expect("a list");
    assert_eq!(kev["count"], vulnerabilities.len());
    assert!(vulnerabilities.len() >= 5, "at least every platform's due-soon anchor");
    let today = server.now().date_naive().format("%Y-%m-%d").to_string();
    assert!(vulnerabilities.iter().all(|v| v["dateAdded"].as_str().expect("a date") <= today.as_str()));
    let released =
        DateTime::parse_from_rfc3339(kev["dateReleased"].as_str().expect("an instant")).expect("RFC 3339");
    let last_modified = parse_http_date(header(&head, "last-modified").expect("Last-Modified"));
    assert_eq!(last_modified, Some(released.timestamp()));
    let etag = header(&head, "etag").expect("an ETag").to_string();
    let (status, _, _) = get(&server, KEV, &[("If-None-Match", &etag)]).await;
    assert_eq!(status, 304);
    server.shutdown().await;
}
