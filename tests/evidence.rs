//! `patchd report evidence --format html`: the same figures as the JSON reports, nothing
//! outside the file, untrusted text escaped, and a page a real browser (Debian's chromium)
//! renders without a console error.
//!
//! The browser test skips when /usr/bin/chromium is missing, unless PATCHD_REQUIRE_CHROMIUM=1
//! (CI installs it with `PATCHD_INSTALL_CHROMIUM=1 .ci/install-test-deps.sh`).

#[path = "support/browser.rs"]
mod browser;
#[path = "support/history.rs"]
mod history;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use browser::{chromium, chromium_available, console_lines, png_size};
use history::{instance, prod_tags, t};
use patchd_store::{OpenOptions, PatchObservation, PatchState, PingStatus, ReleaseSource, Store};
use serde_json::Value;

const AT: &str = "2026-11-10T00:00:00Z";

/// Markup an attacker could put in an instance's Name tag or a patch title.
const HOSTILE_NAME: &str = "<img src=x onerror=alert(1)> & \"web\"";
const HOSTILE_TITLE: &str = "</script><script>alert('title')</script>";

const CONFIG: &str = r#"
[daemon]
database_url = "sqlite::memory:"

[sla]
stale_scan_hours = 72

[[sla.rule]]
cves = ["CVE-2026-9999"]
rank = "critical"
reason = "exploited in the wild <per the vendor>"

[[exception]]
name = "web-openssl-pin"
patches = ["ALAS2-2026-0003"]
group = "web"
reason = "pinned by the vendor; compensating control: WAF rule 42 & <monitoring>"
owner = "jane.doe@example.com"
expires = 2026-12-31

[[exception]]
name = "long-gone"
patches = ["ALAS2-2026-0099"]
instances = ["i-0aaaaaaaaaaaaaaa1"]
reason = "replaced by a newer kernel"
owner = "ops@example.com"
expires = 2026-11-01

[[baseline]]
name = "prod-al2"
operating_system = "AMAZON_LINUX_2"
patch_groups = ["prod"]

[[baseline.rule]]
classification = ["Security"]
approve_after_days = 0

[[group]]
name = "web"
[group.tags]
Role = "web"
"Patch Group" = "prod"

[[group]]
name = "db"
[group.tags]
Role = "db"
"Patch Group" = "prod"

[[window]]
name = "weekly"
schedule = "cron(0 3 ? * SUN *)"
duration_hours = 4

[[window.task]]
operation = "install"
groups = ["web"]

[[window.task]]
operation = "scan"
groups = ["db"]
"#;

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// A directory of its own holding the configuration, the database and the reports.
struct Fixture {
    dir: PathBuf,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("patchd-evidence-{}", unique(name)));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("patchd.toml"), CONFIG).unwrap();
        Fixture { dir }
    }

    fn database(&self) -> String {
        format!("sqlite://{}", self.dir.join("patchd.db").display())
    }

    fn patchd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_patchd"))
            .current_dir(&self.dir)
            .arg("--config")
            .arg(self.dir.join("patchd.toml"))
            .args(["--database", &self.database()])
            .args(args)
            .env_remove("PATCHD_CONFIG")
            .env_remove("PATCHD_DATABASE_URL")
            .output()
            .unwrap()
    }

    fn run_ok(&self, args: &[&str]) -> Output {
        let out = self.patchd(args);
        assert_eq!(out.status.code(), Some(0), "patchd {args:?}: {}", text(&out.stderr));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        serde_json::from_slice(&self.run_ok(args).stdout).unwrap()
    }

    /// Writes the evidence as of AT and returns its path and text.
    fn evidence(&self) -> (PathBuf, String) {
        let path = self.dir.join("evidence.html");
        let out = self.run_ok(&[
            "report",
            "evidence",
            "--format",
            "html",
            "--at",
            AT,
            "--out",
            path.to_str().unwrap(),
        ]);
        assert!(out.stdout.is_empty(), "--out leaves stdout empty: {}", text(&out.stdout));
        assert_eq!(text(&out.stderr).lines().last(), Some(format!("wrote {}", path.display()).as_str()));
        let html = std::fs::read_to_string(&path).unwrap();
        (path, html)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One patch on one instance as a scan reports it.
struct Seen {
    instance: &'static str,
    patch: &'static str,
    state: PatchState,
    installed: Option<&'static str>,
}

fn seen(instance: &'static str, patch: &'static str, state: PatchState) -> Seen {
    Seen { instance, patch, state, installed: None }
}

fn installed(instance: &'static str, patch: &'static str, at: &'static str) -> Seen {
    Seen { instance, patch, state: PatchState::Installed, installed: Some(at) }
}

/// (patch, severity, CVEs, title)
const CATALOG: &[(&str, Option<&str>, &[&str], &str)] = &[
    ("ALAS2-2026-0001", Some("Critical"), &["CVE-2026-1001", "CVE-2026-1002"], "openssl update"),
    ("ALAS2-2026-0002", Some("Important"), &["CVE-2026-2001"], "kernel update"),
    ("ALAS2-2026-0003", Some("Important"), &[], "openssl pinned update"),
    ("ALAS2-2026-0004", Some("Low"), &["CVE-2026-9999"], "curl update"),
    ("ALAS2-2026-0005", Some("Medium"), &[], "vim update"),
    ("ALAS2-2026-0006", Some("Critical"), &[], HOSTILE_TITLE),
    ("ALAS2-2026-0007", Some("Critical"), &[], "glibc update"),
    ("ALAS2-2026-0101", Some("Critical"), &["CVE-2026-0101"], "sudo update"),
    ("ALAS2-2026-0102", Some("Critical"), &[], "bash update"),
    ("ALAS2-2026-0103", Some("Important"), &[], "python update"),
    ("ALAS2-2026-0104", Some("Critical"), &[], "systemd update"),
    ("ALAS2-2026-0105", Some("Critical"), &[], "nss update"),
];

async fn sync(store: &Store, at: &str, rows: &[Seen]) {
    let cves: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (_, _, cves, _) = CATALOG.iter().find(|(id, ..)| *id == r.patch).unwrap();
            cves.iter().map(|c| c.to_string()).collect()
        })
        .collect();
    let mut by_instance: BTreeMap<&str, Vec<PatchObservation>> = BTreeMap::new();
    for (row, cves) in rows.iter().zip(&cves) {
        let (_, severity, _, title) = CATALOG.iter().find(|(id, ..)| *id == row.patch).unwrap();
        by_instance.entry(row.instance).or_default().push(PatchObservation {
            patch_id: row.patch,
            title: Some(title),
            classification: Some("Security"),
            severity: *severity,
            cve_ids: cves,
            state: row.state,
            installed_time: row.installed.map(t),
        });
    }
    history::record_scans(store, at, None, &by_instance).await;
}

const WEB_1: &str = "i-0aaaaaaaaaaaaaaa1";
const WEB_2: &str = "i-0aaaaaaaaaaaaaaa2";
const WEB_3: &str = "i-0aaaaaaaaaaaaaaa3";
const DB_1: &str = "i-0bbbbbbbbbbbbbbb1";

/// Three months of history ending just before AT: open findings breached, due soon, ok,
/// excepted and estimated; critical and high patches installed in time and late in several
/// weeks; an unmanaged instance, one whose agent is lost, and a group no install window targets.
async fn seed(url: &str) {
    use PatchState::*;
    let store = Store::open(url, &OpenOptions::default()).await.unwrap();
    let (web, db) = (prod_tags("web"), prod_tags("db"));
    let inventory = [
        instance(WEB_1, HOSTILE_NAME, &web, true, Some(PingStatus::Online)),
        instance(WEB_2, "web-2", &web, true, Some(PingStatus::ConnectionLost)),
        instance(WEB_3, "web-3", &web, false, None),
        instance(DB_1, "db-1", &db, true, Some(PingStatus::Online)),
    ];
    store.record_instances(t("2026-11-09T00:00:00Z"), &inventory).await.unwrap();

    sync(
        &store,
        "2026-08-20T00:00:00Z",
        &[
            seen(WEB_1, "ALAS2-2026-0101", Missing),
            seen(WEB_1, "ALAS2-2026-0102", Missing),
            seen(WEB_2, "ALAS2-2026-0104", Missing),
            seen(DB_1, "ALAS2-2026-0103", Missing),
        ],
    )
    .await;
    sync(
        &store,
        "2026-09-02T00:00:00Z",
        &[
            seen(WEB_1, "ALAS2-2026-0101", Missing),
            installed(WEB_1, "ALAS2-2026-0102", "2026-09-01T04:00:00Z"),
            installed(WEB_2, "ALAS2-2026-0104", "2026-09-01T12:00:00Z"),
            seen(DB_1, "ALAS2-2026-0103", Missing),
        ],
    )
    .await;
    sync(
        &store,
        "2026-09-12T00:00:00Z",
        &[
            installed(WEB_1, "ALAS2-2026-0101", "2026-09-10T03:00:00Z"),
            installed(WEB_1, "ALAS2-2026-0102", "2026-09-01T04:00:00Z"),
        ],
    )
    .await;
    sync(
        &store,
        "2026-10-01T00:00:00Z",
        &[
            installed(WEB_1, "ALAS2-2026-0101", "2026-09-10T03:00:00Z"),
            seen(WEB_1, "ALAS2-2026-0001", Missing),
            seen(WEB_1, "ALAS2-2026-0002", Missing),
            seen(WEB_1, "ALAS2-2026-0003", Missing),
            seen(WEB_2, "ALAS2-2026-0105", Missing),
            seen(DB_1, "ALAS2-2026-0103", Missing),
            seen(DB_1, "ALAS2-2026-0004", Failed),
            seen(DB_1, "ALAS2-2026-0001", Missing),
        ],
    )
    .await;
    sync(
        &store,
        "2026-10-20T00:00:00Z",
        &[
            installed(DB_1, "ALAS2-2026-0103", "2026-10-18T02:00:00Z"),
            seen(DB_1, "ALAS2-2026-0004", Failed),
            seen(DB_1, "ALAS2-2026-0001", Missing),
        ],
    )
    .await;
    sync(
        &store,
        "2026-11-08T00:00:00Z",
        &[
            seen(WEB_1, "ALAS2-2026-0001", Missing),
            seen(WEB_1, "ALAS2-2026-0002", Missing),
            seen(WEB_1, "ALAS2-2026-0003", Missing),
            seen(WEB_1, "ALAS2-2026-0005", Missing),
            seen(WEB_1, "ALAS2-2026-0006", Missing),
            installed(WEB_2, "ALAS2-2026-0105", "2026-11-06T03:00:00Z"),
            seen(DB_1, "ALAS2-2026-0001", Missing),
            seen(DB_1, "ALAS2-2026-0004", Failed),
            seen(DB_1, "ALAS2-2026-0007", InstalledPendingReboot),
        ],
    )
    .await;
    let dates = [
        ("ALAS2-2026-0001", t("2026-09-20T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0002", t("2026-09-25T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0003", t("2026-09-01T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0004", t("2026-09-28T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0006", t("2026-10-15T00:00:00Z"), ReleaseSource::Advisory),
        ("ALAS2-2026-0007", t("2026-11-01T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0101", t("2026-07-01T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0102", t("2026-08-15T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0103", t("2026-08-01T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0104", t("2026-08-18T00:00:00Z"), ReleaseSource::Ssm),
        ("ALAS2-2026-0105", t("2026-10-02T00:00:00Z"), ReleaseSource::Ssm),
    ];
    store.set_release_dates(&dates).await.unwrap();
    store.close().await;
}

fn seeded(name: &str) -> Fixture {
    let fixture = Fixture::new(name);
    tokio::runtime::Runtime::new().unwrap().block_on(seed(&fixture.database()));
    fixture
}

/// The JSON the page embeds for machines.
fn embedded_data(html: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"patchd-evidence-data\">";
    let start = html.find(open).expect("the page embeds its data") + open.len();
    let end = start + html[start..].find("</script>").unwrap();
    serde_json::from_str(&html[start..end]).unwrap()
}

/// The `<tr ...>` rows of the table with this id.
fn table_rows<'h>(html: &'h str, id: &str) -> Vec<&'h str> {
    let start = html.find(&format!("<table id=\"{id}\"")).unwrap_or_else(|| panic!("no table #{id}"));
    let table = &html[start..start + html[start..].find("</table>").unwrap()];
    let body = &table[table.find("<tbody>").unwrap()..];
    body.match_indices("<tr").map(|(i, _)| &body[i..i + body[i..].find("</tr>").unwrap()]).collect()
}

#[test]
fn evidence_figures_are_the_json_reports_figures() {
    let fixture = seeded("figures");
    let sla = fixture.json(&["report", "sla", "--format", "json", "--at", AT]);
    let history = fixture.json(&["report", "history", "--format", "json", "--at", AT]);
    let coverage = fixture.json(&["report", "coverage", "--format", "json", "--at", AT]);
    let (_, html) = fixture.evidence();
    let data = embedded_data(&html);

    // The seed must exercise what the page shows, or the comparisons below prove little.
    let statuses: Vec<&str> =
        sla["totals"].as_array().unwrap().iter().map(|c| c["status"].as_str().unwrap()).collect();
    for status in ["breached", "due-soon", "ok", "excepted"] {
        assert!(statuses.contains(&status), "the seed has no {status} finding: {statuses:?}");
    }
    let per_rank = history["per_rank"].as_array().unwrap();
    assert!(
        per_rank.iter().any(|r| r["missed"].as_u64() > Some(0))
            && per_rank.iter().any(|r| r["met"].as_u64() > Some(0))
    );
    assert!(!coverage["gaps"].as_array().unwrap().is_empty());

    assert_eq!(data["at"], sla["at"]);
    assert_eq!(data["totals"], sla["totals"], "totals per rank and status");
    assert_eq!(data["open_findings"], sla["findings"].as_array().unwrap().len());
    assert_eq!(data["since"], history["since"]);
    assert_eq!(data["until"], history["until"]);
    assert_eq!(data["per_rank"], history["per_rank"], "remediation per rank");
    assert_eq!(data["critical_percent_met"], per_rank[0]["percent_met"]);
    assert_eq!(data["coverage"]["gaps"], coverage["gaps"].as_array().unwrap().len());
    assert_eq!(data["coverage"]["in_scope"], coverage["in_scope"]);

    let critical_high: Vec<&Value> = sla["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rank"] == "critical" || f["rank"] == "high")
        .collect();
    let rows = table_rows(&html, "open-critical-high");
    assert_eq!(rows.len(), critical_high.len(), "one row per open critical or high finding");
    assert_eq!(data["critical_high_listed"], critical_high.len());
    // Same findings, same order as the sla report.
    for (row, finding) in rows.iter().zip(&critical_high) {
        let status = format!("data-status=\"{}\"", finding["status"].as_str().unwrap());
        assert!(
            row.contains(finding["patch_id"].as_str().unwrap()) && row.contains(&status),
            "{row}\n{finding}"
        );
    }
    assert_eq!(table_rows(&html, "coverage-gaps").len(), coverage["gaps"].as_array().unwrap().len());
    let exceptions = table_rows(&html, "exceptions-in-force");
    assert_eq!(exceptions.len(), 1, "only the exception in force: {exceptions:?}");
    assert!(exceptions[0].contains("jane.doe@example.com") && exceptions[0].contains("2026-12-31"));
}

#[test]
fn evidence_is_self_contained_escaped_and_complete() {
    let fixture = seeded("contained");
    let (_, html) = fixture.evidence();
    for reference in
        ["http://", "https://", "src=\"", "src='", "@import", "<link", "<iframe", "<object", "<embed"]
    {
        assert!(
            !html.contains(reference),
            "the page must reference nothing outside itself: found {reference}"
        );
    }
    // Links only within the page (the table of contents), fills only from the page's own SVG.
    for (i, _) in html.match_indices("href=\"") {
        assert!(html[i..].starts_with("href=\"#"), "external link: {}", &html[i..i + 60]);
    }
    for (i, _) in html.match_indices("url(") {
        assert!(html[i..].starts_with("url(#"), "external resource: {}", &html[i..i + 40]);
    }
    // The only <script> holds data, not code.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(!html.contains("<img"), "an instance name became markup");
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt; &amp; &quot;web&quot;"),
        "escaped instance name"
    );
    assert!(
        html.contains("&lt;/script&gt;&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;"),
        "escaped title"
    );
    for heading in [
        "<h2>Summary</h2>",
        "<h2>Policy</h2>",
        "<h2>Open findings</h2>",
        "<h2>Remediation over the period</h2>",
        "<h2>Coverage gaps</h2>",
        "<h2>Exceptions in force</h2>",
        "<h2>Method</h2>",
        "<h3>Open critical and high findings",
        "<h3>Remediation deadlines</h3>",
        "<h3>Patch baselines</h3>",
        "<h3>Maintenance windows</h3>",
        "<h3>Age of open findings against the SLA</h3>",
        "<h3>SLA status per group</h3>",
        "<h3>Remediation per week</h3>",
        "<h3>Where the SLA clocks come from</h3>",
    ] {
        assert!(html.contains(heading), "missing {heading}");
    }
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 3, "three charts");
    for print_rule in ["@media print", "thead { display: table-header-group; }", "tr { break-inside: avoid;"]
    {
        assert!(html.contains(print_rule), "missing print rule {print_rule}");
    }
    // The policy as configured: windows with their schedules, baselines with their rules.
    assert!(
        html.contains("cron(0 3 ? * SUN *)")
            && html.contains("prod-al2")
            && html.contains("approved 0 days after release")
    );
}

#[test]
fn out_writes_any_report_to_a_file_instead_of_stdout() {
    let fixture = seeded("out");
    let args = ["report", "sla", "--format", "json", "--at", AT];
    let printed = fixture.run_ok(&args).stdout;
    let path = fixture.dir.join("nested-name.json");
    let mut with_out = args.to_vec();
    with_out.extend(["--out", path.to_str().unwrap()]);
    let out = fixture.run_ok(&with_out);
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).ends_with(&format!("wrote {}\n", path.display())), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&path).unwrap(), printed);
    // Replaced whole, with no temporary file left behind.
    let coverage = ["report", "coverage", "--at", AT, "--out", path.to_str().unwrap()];
    fixture.run_ok(&coverage);
    assert!(std::fs::read_to_string(&path).unwrap().contains("i-0aaaaaaaaaaaaaaa3"));
    let leftovers: Vec<String> = std::fs::read_dir(&fixture.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // --fail-on still fails the pipeline, once the report is written.
    let page = fixture.dir.join("failing.html");
    let failing = [
        "report",
        "evidence",
        "--format",
        "html",
        "--at",
        AT,
        "--fail-on",
        "breached",
        "--out",
        page.to_str().unwrap(),
    ];
    let out = fixture.patchd(&failing);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&page).unwrap().ends_with("</html>\n"));
    // A directory that does not exist is an error, not a report on stdout.
    let missing = fixture.dir.join("no/such/dir/report.txt");
    let out = fixture.patchd(&["report", "sla", "--at", AT, "--out", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("cannot write the report to"), "{}", text(&out.stderr));
}

#[test]
fn evidence_and_html_go_together() {
    let fixture = Fixture::new("formats");
    for args in [
        &["report", "evidence", "--format", "json"][..],
        &["report", "evidence"][..],
        &["report", "sla", "--format", "html"][..],
        &["report", "evidence", "--format", "html", "--rank", "critical"][..],
    ] {
        let out = fixture.patchd(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(text(&out.stderr).contains("report evidence"), "{args:?}: {}", text(&out.stderr));
    }
}

#[test]
fn a_browser_renders_the_evidence_without_errors() {
    if !chromium_available() {
        return;
    }
    let fixture = seeded("browser");
    let (page, html) = fixture.evidence();
    let url = format!("file://{}", page.display());

    // The console check must be able to fail: a page that logs an error and loads a missing
    // file has to be caught by it.
    let control = fixture.dir.join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><title>control</title><script>console.error('control error')</script>",
    )
    .unwrap();
    let out = chromium(&fixture.dir, &["--dump-dom", &format!("file://{}", control.display())]);
    let logged = console_lines(&out.stderr);
    assert!(
        logged.iter().any(|l| l.contains("control error")),
        "the console check sees nothing: {}",
        text(&out.stderr)
    );

    let screenshot = fixture.dir.join("evidence.png");
    let out = chromium(
        &fixture.dir,
        &[
            &format!("--screenshot={}", screenshot.display()),
            "--window-size=1280,4000",
            "--hide-scrollbars",
            &url,
        ],
    );
    assert!(out.status.success(), "chromium failed: {}", text(&out.stderr));
    assert_eq!(console_lines(&out.stderr), Vec::<String>::new(), "console messages while rendering");
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert_eq!(png_size(&png), (1280, 4000));
    // A blank page of that size compresses to a few kilobytes; text and charts do not.
    assert!(png.len() > 20 * 1024, "screenshot of {} bytes: did the page render?", png.len());

    // The DOM the browser built holds what the file says: the parser read the whole page.
    let out = chromium(&fixture.dir, &["--dump-dom", &url]);
    assert!(out.status.success(), "chromium failed: {}", text(&out.stderr));
    assert_eq!(console_lines(&out.stderr), Vec::<String>::new());
    let dom = text(&out.stdout);
    assert_eq!(embedded_data(&dom), embedded_data(&html));
    assert_eq!(table_rows(&dom, "open-critical-high").len(), table_rows(&html, "open-critical-high").len());
    assert_eq!(dom.matches("<svg").count(), 3, "the three charts are in the DOM");
    assert!(!dom.contains("<img"), "no instance name turned into an element");
}
