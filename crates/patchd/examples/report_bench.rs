//! End-to-end timing of `patchd report sla` over 10,000 instances x 100 open findings
//! (1,000,000 findings) on SQLite: the issue's target is under 2 s.
//!
//! ```sh
//! cargo build --release -p patchd
//! cargo run --release -p patchd --example report_bench [-- DB_FILE]
//! ```
//!
//! The database is seeded once (through the store's own sync API) and reused when DB_FILE
//! already exists, so repeated runs measure only the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use patchd_store::{
    ComplianceSync, InstanceKey, InstanceObservation, InstanceScan, OpenFindingFilter, OpenOptions,
    PatchObservation, PatchState, PingStatus, ReleaseSource, Store,
};

const INSTANCES: usize = 10_000;
const FINDINGS_PER_INSTANCE: usize = 100;
const PATCHES: usize = 500;
const ACCOUNT: &str = "111111111111";
const REGION: &str = "eu-central-1";

fn instance_id(i: usize) -> String {
    format!("i-{i:017x}")
}

async fn seed(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(url, &OpenOptions::default()).await?;
    let started = Instant::now();
    let at = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().ok_or("bad date")?;
    let ids: Vec<String> = (0..INSTANCES).map(instance_id).collect();
    let tags: Vec<BTreeMap<String, String>> = (0..INSTANCES)
        .map(|i| {
            let role = if i % 3 == 0 { "db" } else { "web" };
            // The report fixture's `web` group also selects on the patch group.
            [("Role".to_string(), role.to_string()), ("Patch Group".to_string(), "prod".to_string())].into()
        })
        .collect();
    let inventory: Vec<InstanceObservation> = ids
        .iter()
        .zip(&tags)
        .map(|(id, tags)| InstanceObservation {
            instance: InstanceKey { account: ACCOUNT, region: REGION, instance_id: id },
            name: Some("bench"),
            platform: Some("Amazon Linux 2"),
            tags,
            ssm_managed: true,
            ping_status: Some(PingStatus::Online),
        })
        .collect();
    store.record_instances(at, &inventory).await?;
    let patch_ids: Vec<String> = (0..PATCHES).map(|p| format!("ALAS2-2026-{p:04}")).collect();
    let severities = ["Critical", "Important", "Medium", "Low"];
    let no_cves: Vec<String> = Vec::new();
    // One sync per thousand instances: each is one transaction of batched statements.
    for chunk in ids.chunks(1_000) {
        let patch_lists: Vec<Vec<PatchObservation>> = chunk
            .iter()
            .enumerate()
            .map(|(n, _)| {
                (0..FINDINGS_PER_INSTANCE)
                    .map(|k| {
                        let p = (n * 7 + k * 5) % PATCHES;
                        PatchObservation {
                            patch_id: &patch_ids[p],
                            title: Some("kernel, openssl update"),
                            classification: Some("Security"),
                            severity: Some(severities[p % 4]),
                            cve_ids: &no_cves,
                            state: PatchState::Missing,
                            installed_time: None,
                        }
                    })
                    .collect()
            })
            .collect();
        let scans: Vec<InstanceScan> = chunk
            .iter()
            .zip(&patch_lists)
            .map(|(id, patches)| InstanceScan {
                patch_group: Some("prod"),
                ..InstanceScan::scan_at(
                    InstanceKey { account: ACCOUNT, region: REGION, instance_id: id },
                    at,
                    patches,
                )
            })
            .collect();
        store.record_sync(&ComplianceSync { source: "bench", started_at: at, scans: &scans }).await?;
    }
    let dates: Vec<(String, DateTime<Utc>, ReleaseSource)> = patch_ids
        .iter()
        .enumerate()
        .filter(|(p, _)| p % 3 != 0)
        .map(|(p, id)| (id.clone(), at - Duration::days((p % 120) as i64), ReleaseSource::Ssm))
        .collect();
    store.set_release_dates(&dates).await?;
    store.close().await;
    println!(
        "seeded {} findings ({INSTANCES} instances x {FINDINGS_PER_INSTANCE}) in {:.1} s",
        INSTANCES * FINDINGS_PER_INSTANCE,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The summary report's two queries, as the database plans them.
async fn print_plans(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::open(url, &OpenOptions::default()).await?;
    let some_patches = vec!["ALAS2-2026-0001".to_string(), "ALAS2-2026-0002".to_string()];
    let all = OpenFindingFilter::default();
    let (counts, _) = store.explain_open_findings(&all, None).await?;
    let tier = OpenFindingFilter { patch_ids: Some(&some_patches), ..all };
    let (_, listing) = store.explain_open_findings(&tier, Some(50)).await?;
    println!("plan, open findings per patch:\n  {}", counts.join("\n  "));
    println!("plan, the most urgent tier's findings:\n  {}", listing.join("\n  "));
    store.close().await;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let binary = root.join("target/release/patchd");
    if !binary.exists() {
        return Err(
            format!("{} is missing: run `cargo build --release -p patchd` first", binary.display()).into()
        );
    }
    let db: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("patchd-report-bench.db"));
    let url = format!("sqlite://{}", db.display());
    if !db.exists() {
        tokio::runtime::Runtime::new()?.block_on(seed(&url))?;
    }
    let config = root.join("tests/fixtures/report/patchd.toml");
    tokio::runtime::Runtime::new()?.block_on(print_plans(&url))?;
    let cases: [(&str, &[&str]); 5] = [
        ("table (the 50 most urgent, totals of all)", &[]),
        ("table --group web", &["--group", "web"]),
        ("json --limit 1000", &["--format", "json", "--limit", "1000"]),
        ("csv, every finding", &["--format", "csv"]),
        ("table --limit 0, every finding", &["--limit", "0"]),
    ];
    for (name, extra) in cases {
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..3 {
            let started = Instant::now();
            let out = Command::new(&binary)
                .args(["--config", &config.display().to_string(), "--database", &url])
                .args(["report", "sla", "--at", "2026-11-28T00:00:00Z"])
                .args(extra)
                .output()?;
            times.push(started.elapsed().as_secs_f64());
            if !out.status.success() {
                return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
            }
            bytes = out.stdout.len();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "report sla {name}: {bytes} bytes; min {:.2} s, median {:.2} s (3 runs)",
            times[0], times[1]
        );
    }
    Ok(())
}
