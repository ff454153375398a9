//! `patchd report`, `patchd advisories import` and `patchd db` against a seeded history, on
//! SQLite always and on PostgreSQL when `PATCHD_TEST_POSTGRES_URL` is set. Both backends must
//! print byte-identical reports: the golden files are shared.

#[path = "support/golden.rs"]
mod golden;
#[path = "support/history.rs"]
mod history;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use history::{instance, prod_tags, t};
use patchd_store::{OpenOptions, PatchObservation, PatchState, PingStatus, ReleaseSource, Store};
use sqlx::{Connection, Executor};

const POSTGRES_ENV: &str = "PATCHD_TEST_POSTGRES_URL";
const CONFIG: &str = "tests/fixtures/report/patchd.toml";
const AT: &str = "2026-11-10T00:00:00Z";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

fn patchd(database: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_patchd"))
        .current_dir(root())
        .args(["--config", CONFIG, "--database", database])
        .args(args)
        .env_remove("PATCHD_CONFIG")
        .env_remove("PATCHD_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Compares with tests/golden/report/`name`. Only SQLite's output may bless: the backends
/// after it are compared with what it wrote, so that blessing never hides a difference
/// between them.
fn golden(db: &TestDb, name: &str, actual: &str) {
    let path = root().join("tests/golden/report").join(name);
    if db.file.is_some() {
        golden::check(&path, actual);
    } else {
        golden::compare(&path, actual);
    }
}

/// A database of its own: an SQLite file, or a fresh PostgreSQL schema.
struct TestDb {
    url: String,
    cleanup: Option<(String, String)>,
    file: Option<PathBuf>,
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

impl TestDb {
    fn sqlite(name: &str) -> TestDb {
        let file = std::env::temp_dir().join(format!("patchd-report-{}.db", unique(name)));
        TestDb { url: format!("sqlite://{}", file.display()), cleanup: None, file: Some(file) }
    }

    fn postgres(rt: &tokio::runtime::Runtime, name: &str) -> Option<TestDb> {
        let Some(admin) = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty()) else {
            // Straight to stderr: libtest captures eprintln! of passing tests.
            let _ = writeln!(std::io::stderr(), "{name}: skipping postgres: {POSTGRES_ENV} is unset");
            return None;
        };
        let schema = format!("r_{}", unique(name));
        rt.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("connect to PostgreSQL");
            conn.execute(format!("CREATE SCHEMA \"{schema}\"").as_str()).await.expect("create schema");
        });
        let separator = if admin.contains('?') { '&' } else { '?' };
        Some(TestDb {
            url: format!("{admin}{separator}options[search_path]={schema}"),
            cleanup: Some((admin, schema)),
            file: None,
        })
    }

    fn all(rt: &tokio::runtime::Runtime, name: &str) -> Vec<TestDb> {
        let mut dbs = vec![TestDb::sqlite(name)];
        dbs.extend(TestDb::postgres(rt, name));
        dbs
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
            }
        }
        if let Some((admin, schema)) = self.cleanup.take() {
            if let Ok(rt) = tokio::runtime::Runtime::new() {
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                        let _ = conn.execute(format!("DROP SCHEMA \"{schema}\" CASCADE").as_str()).await;
                    }
                });
            }
        }
    }
}

struct Seen {
    id: &'static str,
    patch: &'static str,
    severity: Option<&'static str>,
    cves: &'static [&'static str],
    state: PatchState,
    installed: Option<&'static str>,
}

const fn seen(
    id: &'static str,
    patch: &'static str,
    severity: Option<&'static str>,
    cves: &'static [&'static str],
    state: PatchState,
) -> Seen {
    Seen { id, patch, severity, cves, state, installed: None }
}

async fn sync(store: &Store, at: &str, rows: &[Seen]) {
    let cves: Vec<Vec<String>> =
        rows.iter().map(|r| r.cves.iter().map(|c| c.to_string()).collect()).collect();
    let patches: Vec<PatchObservation> = rows
        .iter()
        .zip(&cves)
        .map(|(r, cves)| PatchObservation {
            patch_id: r.patch,
            title: Some("openssl, kernel update"),
            classification: Some("Security"),
            severity: r.severity,
            cve_ids: cves,
            state: r.state,
            installed_time: r.installed.map(t),
        })
        .collect();
    let mut by_instance: BTreeMap<&str, Vec<PatchObservation>> = BTreeMap::new();
    for (row, patch) in rows.iter().zip(patches) {
        by_instance.entry(row.id).or_default().push(patch);
    }
    history::record_scans(store, at, Some("11111111-2222-3333-4444-555555555555"), &by_instance).await;
}

/// A small fleet with one finding of every kind the SLA report distinguishes.
async fn seed(url: &str) {
    use PatchState::*;
    let store = Store::open(url, &OpenOptions::default()).await.unwrap();
    let (web, db) = (prod_tags("web"), prod_tags("db"));
    let inventory = [
        instance("i-0aaaaaaaaaaaaaaa1", "web-1", &web, true, Some(PingStatus::Online)),
        instance("i-0aaaaaaaaaaaaaaa2", "web-2", &web, true, Some(PingStatus::ConnectionLost)),
        instance("i-0bbbbbbbbbbbbbbb1", "db-1", &db, true, Some(PingStatus::Online)),
        instance("i-0ccccccccccccccc1", "web-3", &web, false, None),
    ];
    store.record_instances(t("2026-11-09T00:00:00Z"), &inventory).await.unwrap();
    sync(
        &store,
        "2026-10-01T00:00:00Z",
        &[
            seen("i-0aaaaaaaaaaaaaaa1", "ALAS2-2026-0001", Some("Critical"), &["CVE-2026-1001"], Missing),
            seen("i-0aaaaaaaaaaaaaaa1", "ALAS2-2026-0002", Some("Important"), &[], Missing),
            seen("i-0aaaaaaaaaaaaaaa1", "ALAS2-2026-0003", Some("Medium"), &[], Installed),
            seen("i-0bbbbbbbbbbbbbbb1", "ALAS2-2026-0001", Some("Critical"), &["CVE-2026-1001"], Missing),
            seen("i-0bbbbbbbbbbbbbbb1", "ALAS2-2026-0004", Some("Low"), &["CVE-2026-9999"], Failed),
            seen("i-0aaaaaaaaaaaaaaa2", "ALAS2-2026-0005", None, &[], Missing),
        ],
    )
    .await;
    let mut fixed = seen("i-0aaaaaaaaaaaaaaa1", "ALAS2-2026-0001", Some("Critical"), &[], Installed);
    fixed.installed = Some("2026-10-19T06:00:00Z");
    sync(
        &store,
        "2026-11-08T00:00:00Z",
        &[
            fixed,
            seen("i-0aaaaaaaaaaaaaaa1", "ALAS2-2026-0002", Some("Important"), &[], Missing),
            seen("i-0aaaaaaaaaaaaaaa1", "ALAS2-2026-0003", Some("Medium"), &[], Installed),
            seen("i-0bbbbbbbbbbbbbbb1", "ALAS2-2026-0001", Some("Critical"), &[], InstalledPendingReboot),
            seen("i-0bbbbbbbbbbbbbbb1", "ALAS2-2026-0004", Some("Low"), &["CVE-2026-9999"], Failed),
        ],
    )
    .await;
    let dates = [
        ("ALAS2-2026-0001", t("2026-09-20T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0002", t("2026-09-25T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0004", t("2026-10-15T00:00:00Z"), ReleaseSource::Ssm),
    ];
    store.set_release_dates(&dates).await.unwrap();
    store.close().await;
}

fn run_ok(database: &str, args: &[&str]) -> String {
    let out = patchd(database, args);
    assert_eq!(out.status.code(), Some(0), "patchd {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn reports_are_the_same_on_every_backend() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for db in TestDb::all(&rt, "reports") {
        rt.block_on(seed(&db.url));
        let url = db.url.as_str();
        for (kind, formats) in [
            ("sla", &["table", "json", "csv"][..]),
            ("compliance", &["table", "csv"][..]),
            ("coverage", &["table", "json"][..]),
            ("history", &["table", "csv"][..]),
        ] {
            for format in formats {
                let mut args = vec!["report", kind, "--at", AT, "--format", format];
                if kind == "history" {
                    args.extend(["--since", "2026-10-01T00:00:00Z"]);
                }
                golden(&db, &format!("{kind}.{format}"), &run_ok(url, &args));
            }
        }
        golden(&db, "sla-group-db.table", &run_ok(url, &["report", "sla", "--at", AT, "--group", "db"]));
    }
}

/// `--limit` reads per-patch counts and only the most urgent findings: its listing must be
/// exactly the head of the full listing, and its totals the full totals.
#[test]
fn a_limited_sla_listing_is_the_head_of_the_full_one() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for db in TestDb::all(&rt, "limit") {
        rt.block_on(seed(&db.url));
        let url = db.url.as_str();
        for group in [None, Some("web")] {
            let mut args = vec!["report", "sla", "--at", AT, "--format", "json"];
            if let Some(group) = group {
                args.extend(["--group", group]);
            }
            let full: serde_json::Value = serde_json::from_str(&run_ok(url, &args)).unwrap();
            let all = full["findings"].as_array().unwrap();
            assert!(all.len() >= 2, "the seed should have open findings: {full}");
            assert_eq!(full["omitted"], 0);
            for limit in 1..=all.len() + 1 {
                let n = limit.to_string();
                let mut limited_args = args.clone();
                limited_args.extend(["--limit", &n]);
                let limited: serde_json::Value = serde_json::from_str(&run_ok(url, &limited_args)).unwrap();
                let shown = limit.min(all.len());
                assert_eq!(limited["findings"].as_array().unwrap()[..], all[..shown], "--limit {limit}");
                assert_eq!(limited["totals"], full["totals"], "--limit {limit}");
                assert_eq!(limited["omitted"], all.len() - shown, "--limit {limit}");
            }
        }
        let table = run_ok(url, &["report", "sla", "--at", AT, "--limit", "1"]);
        assert!(table.contains("... and 3 more open findings (--limit 0 lists all"), "{table}");
    }
}

#[test]
fn fail_on_turns_findings_into_an_exit_status() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDb::sqlite("fail-on");
    rt.block_on(seed(&db.url));
    let out = patchd(&db.url, &["report", "sla", "--at", AT, "--fail-on", "breached"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("1 finding(s) breached their SLA"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("SLA at 2026-11-10 00:00 UTC"));
    // Before anything was due, nothing fails.
    let out = patchd(&db.url, &["report", "sla", "--at", "2026-10-02T00:00:00Z", "--fail-on", "due-soon"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = patchd(&db.url, &["report", "sla", "--at", AT, "--group", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no such group; configured groups: web, db"), "{}", text(&out.stderr));
}

#[test]
fn imported_advisories_start_the_clock() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for db in TestDb::all(&rt, "advisories") {
        rt.block_on(seed(&db.url));
        let url = db.url.as_str();
        let before = run_ok(url, &["report", "sla", "--at", AT, "--format", "csv"]);
        let estimated = before.lines().find(|l| l.contains("ALAS2-2026-0005")).unwrap();
        assert!(estimated.contains(",first-seen,true,"), "{estimated}");
        // A malformed file imports nothing, not even its good lines.
        let out = patchd(url, &["advisories", "import", "tests/fixtures/advisories/broken.csv"]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            text(&out.stderr),
            "patchd: error: tests/fixtures/advisories/broken.csv:4: cannot read release date `next week` of ALAS2-2026-0005; write YYYY-MM-DD or RFC 3339; nothing imported\n"
        );
        let out = run_ok(url, &["advisories", "import", "tests/fixtures/advisories/updateinfo.xml"]);
        assert_eq!(
            out,
            "tests/fixtures/advisories/updateinfo.xml: 2 advisories (amazon-linux)\nimported 2 release dates (2 patches new or changed)\n"
        );
        let after = run_ok(url, &["report", "sla", "--at", AT, "--format", "csv"]);
        let dated = after.lines().find(|l| l.contains("ALAS2-2026-0005")).unwrap();
        assert!(dated.contains(",2026-10-05T00:00:00Z,advisory,false,2027-01-03T00:00:00Z,"), "{dated}");
        // Reports name the import the date came from.
        assert!(dated.ends_with(",advisory: import:updateinfo.xml"), "{dated}");
    }
}

/// An unreadable KEV catalog is one decision everywhere: rank without it, say so, never fail.
/// (Reports used to fail on it while the daemon's events ranked without it.)
#[test]
fn an_unreadable_kev_catalog_ranks_without_it_and_says_so() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = TestDb::sqlite("kev-unreadable");
    rt.block_on(seed(&db.url));
    let dir = std::env::temp_dir().join(format!("patchd-kev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let base = std::fs::read_to_string(root().join(CONFIG)).unwrap();
    let without = run_ok(&db.url, &["report", "sla", "--at", AT, "--format", "json"]);
    for (name, kev) in [("missing", None), ("malformed", Some("{\"vulnerabilities\": 7}"))] {
        let kev_path = dir.join(format!("{name}.json"));
        if let Some(text) = kev {
            std::fs::write(&kev_path, text).unwrap();
        }
        let config = dir.join(format!("{name}.toml"));
        let written = base.replace("[sla]\n", &format!("[sla]\nkev_catalog = \"{}\"\n", kev_path.display()));
        std::fs::write(&config, written).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_patchd"))
            .current_dir(root())
            .args(["--config"])
            .arg(&config)
            .args(["--database", &db.url, "report", "sla", "--at", AT, "--format", "json"])
            .env_remove("PATCHD_CONFIG")
            .env_remove("PATCHD_DATABASE_URL")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("; ranking without the KEV catalog"),
            "{name}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), without, "{name}: the same ranks as without a catalog");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn db_migrate_and_status() {
    let db = TestDb::sqlite("migrate");
    let url = db.url.as_str();
    // `db status` only reads: no database there is an error, and it creates none.
    let missing = patchd(url, &["db", "status"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing.stderr));
    assert!(text(&missing.stderr).contains("no database at "), "{}", text(&missing.stderr));
    assert!(!db.file.as_ref().unwrap().exists(), "db status created the database");
    let migrated = run_ok(url, &["db", "migrate"]);
    assert!(migrated.contains(": migrated from empty to schema version "), "{migrated}");
    let status = run_ok(url, &["db", "status"]);
    assert!(status.contains(": schema version "), "{status}");
    let again = run_ok(url, &["db", "migrate"]);
    assert!(again.contains("is current, nothing to do"), "{again}");
}
