//! The feeds' all-or-nothing rule at the level that matters: what reaches the database. A feed
//! served by a scripted HTTP server answers a good document, then a truncated, a malformed and
//! an oversized one, then 304; only the good one changes any date, and the failures are
//! recorded as such while the last good data stays in use.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, Response, StatusCode};
use chrono::{DateTime, Utc};
use patchd_daemon::feeds::{FeedBook, Selection};
use patchd_store::{FeedFetch, OpenOptions, Store};

/// What the scripted server answers next: status, body, ETag.
#[derive(Clone)]
struct Script(Arc<Mutex<(u16, Vec<u8>, &'static str)>>);

impl Script {
    fn set(&self, status: u16, body: Vec<u8>, etag: &'static str) {
        *self.0.lock().unwrap() = (status, body, etag);
    }
}

async fn serve(script: Script) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let script = script.clone();
        async move {
            let (status, body, etag) = script.0.lock().unwrap().clone();
            if status == 200 && headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == etag) {
                return Response::builder().status(StatusCode::NOT_MODIFIED).body(Body::empty()).unwrap();
            }
            Response::builder().status(status).header(header::ETAG, etag).body(Body::from(body)).unwrap()
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn updateinfo(ids_and_dates: &[(&str, &str)]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\"?>\n<updates>\n");
    for (id, date) in ids_and_dates {
        xml.push_str(&format!(
            "<update type=\"security\"><id>{id}</id><issued date=\"{date}\"/><severity>critical</severity></update>\n"
        ));
    }
    xml.push_str("</updates>\n");
    xml
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2_encoder();
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn flate2_encoder() -> flate2::write::GzEncoder<Vec<u8>> {
    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default())
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn dates(store: &Store) -> Vec<(String, Option<DateTime<Utc>>, Option<String>)> {
    let mut dates: Vec<_> = store
        .patches()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.patch_id, p.advisory_release, p.advisory_source))
        .collect();
    dates.sort();
    dates
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_is_imported_whole_or_not_at_all() {
    let dir = std::env::temp_dir().join(format!("patchd-feeds-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = Script(Arc::new(Mutex::new((200, Vec::new(), "\"1\""))));
    let addr = serve(script.clone()).await;
    let toml = format!(
        r#"
[daemon]
state_dir = "{dir}"

[[advisories.source]]
name = "al2023"
kind = "amazon-linux"
url = "http://{addr}/updateinfo.xml.gz"
platforms = ["AMAZON_LINUX_2023"]
max_size_mib = 1
"#,
        dir = dir.display()
    );
    let config = patchd_config::load_sources(vec![(PathBuf::from("/etc/patchd/c.toml"), toml)], Utc::now())
        .unwrap()
        .config;
    let store = Store::open(&format!("sqlite://{}", dir.join("p.db").display()), &OpenOptions::default())
        .await
        .unwrap();
    let book = FeedBook::new(&config);
    let refresh = || async { book.refresh(&config, &store, Selection::All, &|_, _, _| {}).await.unwrap() };

    let good =
        updateinfo(&[("ALAS2023-2026-001", "2026-09-01 10:00:00"), ("ALAS2023-2026-002", "2026-10-01")]);
    script.set(200, gzip(good.as_bytes()), "\"1\"");
    let outcome = refresh().await;
    assert_eq!(outcome.feeds[0].outcome, FeedFetch::Imported { advisories: 2 });
    assert_eq!(outcome.dated, 2);
    let imported = vec![
        ("ALAS2023-2026-001".to_string(), Some(t("2026-09-01T10:00:00Z")), Some("al2023".to_string())),
        ("ALAS2023-2026-002".to_string(), Some(t("2026-10-01T00:00:00Z")), Some("al2023".to_string())),
    ];
    assert_eq!(dates(&store).await, imported);

    // Each bad answer imports nothing: not the good entries before the damage, not a changed date.
    let changed = updateinfo(&[("ALAS2023-2026-001", "2026-01-01"), ("ALAS2023-2026-003", "2026-11-01")]);
    let full = gzip(changed.as_bytes());
    let truncated = full[..full.len() / 2].to_vec();
    let malformed = changed.replace("</updates>", "");
    let entry_without_date = changed.replace("<issued date=\"2026-11-01\"/>", "");
    let oversized = gzip(updateinfo(&vec![("ALAS2023-2026-009", "2026-11-01"); 30_000]).as_bytes());
    let bad: [(u16, Vec<u8>, &str); 5] = [
        (200, truncated, "gzip"),
        (200, malformed.into_bytes(), "not valid XML"),
        (200, entry_without_date.into_bytes(), "has no <issued date"),
        (200, oversized, "larger than"),
        (500, b"down".to_vec(), "HTTP 500"),
    ];
    for (n, (status, body, why)) in bad.into_iter().enumerate() {
        script.set(status, body, "\"2\"");
        let outcome = refresh().await;
        let report = &outcome.feeds[0];
        match &report.outcome {
            FeedFetch::Failed { error } => assert!(error.contains(why), "{why}: {error}"),
            other => panic!("{why}: {other:?}"),
        }
        assert_eq!(report.entries, 2, "the last good data stays in use");
        assert_eq!(dates(&store).await, imported, "{why}: nothing imported");
        let status = store.feed_status().await.unwrap();
        assert_eq!((status[0].failures, status[0].advisories), (n as u32 + 1, 2), "{status:?}");
        assert!(status[0].last_error.as_deref().unwrap().contains(why), "{status:?}");
    }

    // The server's copy is the last good one again: 304, and the failure count resets.
    script.set(200, gzip(good.as_bytes()), "\"1\"");
    let outcome = refresh().await;
    assert_eq!(outcome.feeds[0].outcome, FeedFetch::NotModified);
    let status = store.feed_status().await.unwrap();
    assert_eq!((status[0].failures, status[0].last_error.as_deref()), (0, None));

    // A restart (a new book) dates with the cached copy even while the feed is down.
    script.set(500, b"down".to_vec(), "\"3\"");
    let restarted = FeedBook::new(&config);
    let outcome = restarted.refresh(&config, &store, Selection::All, &|_, _, _| {}).await.unwrap();
    assert!(matches!(outcome.feeds[0].outcome, FeedFetch::Failed { .. }));
    assert_eq!(outcome.feeds[0].entries, 2);
    let index = restarted.index().await.expect("the cached copy's index");
    assert_eq!(
        index.date_patch("ALAS2023-2026-002", None).map(|d| (d.released, d.source)),
        Some((t("2026-10-01T00:00:00Z"), "al2023"))
    );
    store.close().await;
    std::fs::remove_dir_all(dir).unwrap();
}
