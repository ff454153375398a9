//! How long a full advisory feed takes to read, and how much memory it takes, per format.
//!
//! ```text
//! cargo run --release -p patchd-advisories --example feed_bench -- [--advisories 20000]
//! ```
//!
//! Generates a synthetic feed of realistic shape in each vendor format (Amazon Linux
//! updateinfo with descriptions, Red Hat index pages of 1000 errata, the Ubuntu USN database
//! with sources, binaries and descriptions), gzips it to a temporary directory, then measures
//! each format in a child process of its own, so that one format's peak memory cannot hide
//! another's: decompression, parsing, building the index and dating patches with it.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;
use patchd_advisories::{decompress, into_text, parse_document, Advisory, AdvisoryIndex, FeedKind};
use serde_json::{json, Map, Value};

const RED_HAT_PAGE_SIZE: usize = 1000;
const DEFAULT_ADVISORIES: usize = 20_000;
/// Far above any of the generated documents; the limit is not what is measured.
const DECOMPRESSED_LIMIT: usize = 2 << 30;
/// Every advisory is looked up this many times, so the figure is not one cold pass.
const LOOKUP_ROUNDS: usize = 5;
const BENCHED: [FeedKind; 3] = [FeedKind::AmazonLinux, FeedKind::RedHat, FeedKind::Ubuntu];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [child, kind, directory] if child == "--child" => {
            let kind = FeedKind::from_name(kind).expect("a feed kind");
            println!("{}", measure(kind, Path::new(directory)).to_line());
        }
        [] => run(DEFAULT_ADVISORIES),
        [flag, count] if flag == "--advisories" => run(count.parse().expect("--advisories takes a number")),
        _ => {
            eprintln!("usage: feed_bench [--advisories N]");
            std::process::exit(2);
        }
    }
}

fn run(advisories: usize) {
    let directory = std::env::temp_dir().join(format!("patchd-feed-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory).expect("a temporary directory");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "feed_bench: {advisories} advisories per format, {cores} cores, each format in its own process\n"
    );
    println!(
        "{:<13} {:>9} {:>9} {:>11} {:>9} {:>9} {:>12} {:>10} {:>10}",
        "format", "raw", "gzip", "decompress", "parse", "index", "lookup id", "lookup pkg", "peak RSS"
    );
    for kind in BENCHED {
        let sizes = write_feed(kind, advisories, &directory);
        let output = Command::new(std::env::current_exe().expect("this program's path"))
            .args(["--child", kind.name(), &directory.display().to_string()])
            .output()
            .expect("the child process starts");
        assert!(output.status.success(), "{kind}: {}", String::from_utf8_lossy(&output.stderr));
        let figures = Figures::from_line(&String::from_utf8_lossy(&output.stdout));
        assert_eq!(figures.advisories, advisories, "{kind}: every advisory parsed");
        assert_eq!(figures.matched, 2 * advisories * LOOKUP_ROUNDS, "{kind}: every lookup dated its patch");
        println!(
            "{:<13} {:>9} {:>9} {:>11} {:>9} {:>9} {:>12} {:>10} {:>10}",
            kind.name(),
            megabytes(sizes.raw),
            megabytes(sizes.gzip),
            milliseconds(figures.decompress),
            milliseconds(figures.parse),
            milliseconds(figures.index),
            nanoseconds(figures.lookup_by_id),
            nanoseconds(figures.lookup_by_package),
            megabytes(figures.peak_rss_bytes),
        );
        println!(
            "{:<13} {} document(s), {} fixed packages, RSS before decompressing {}",
            "",
            sizes.documents,
            figures.packages,
            megabytes(figures.rss_before_bytes)
        );
    }
    println!("\nlookup: AdvisoryIndex::date_patch per call, by advisory id and by package identity (title)");
    std::fs::remove_dir_all(&directory).expect("the temporary directory is removed");
}

struct Sizes {
    documents: usize,
    raw: usize,
    gzip: usize,
}

/// Writes the feed as gzip files `<kind>-<n>.gz`, one per document (per page for Red Hat).
fn write_feed(kind: FeedKind, advisories: usize, directory: &Path) -> Sizes {
    let mut random = SplitMix64(0x5eed_0000 + kind as u64);
    let documents = match kind {
        FeedKind::AmazonLinux => vec![amazon_linux_updateinfo(advisories, &mut random)],
        FeedKind::RedHat => red_hat_pages(advisories, &mut random),
        FeedKind::Ubuntu => vec![ubuntu_database(advisories, &mut random)],
        FeedKind::Csv => unreachable!("CSV is an operator's small file, not a feed"),
    };
    let mut sizes = Sizes { documents: documents.len(), raw: 0, gzip: 0 };
    for (number, document) in documents.iter().enumerate() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(document.as_bytes()).expect("gzip into memory");
        let compressed = encoder.finish().expect("gzip into memory");
        std::fs::write(document_path(directory, kind, number), &compressed).expect("the feed is written");
        sizes.raw += document.len();
        sizes.gzip += compressed.len();
    }
    sizes
}

fn document_path(directory: &Path, kind: FeedKind, number: usize) -> PathBuf {
    directory.join(format!("{}-{number}.gz", kind.name()))
}

/// What a child process reports.
#[derive(Debug, Default)]
struct Figures {
    advisories: usize,
    packages: usize,
    matched: usize,
    decompress: Duration,
    parse: Duration,
    index: Duration,
    lookup_by_id: Duration,
    lookup_by_package: Duration,
    rss_before_bytes: usize,
    peak_rss_bytes: usize,
}

impl Figures {
    fn to_line(&self) -> String {
        format!(
            "advisories={} packages={} matched={} decompress_ns={} parse_ns={} index_ns={} lookup_id_ns={} lookup_pkg_ns={} rss_before={} peak_rss={}",
            self.advisories,
            self.packages,
            self.matched,
            self.decompress.as_nanos(),
            self.parse.as_nanos(),
            self.index.as_nanos(),
            self.lookup_by_id.as_nanos(),
            self.lookup_by_package.as_nanos(),
            self.rss_before_bytes,
            self.peak_rss_bytes,
        )
    }

    fn from_line(line: &str) -> Figures {
        let mut figures = Figures::default();
        for pair in line.split_whitespace() {
            let (key, value) = pair.split_once('=').expect("key=value");
            let number: u64 = value.parse().expect("a number");
            let nanos = Duration::from_nanos(number);
            match key {
                "advisories" => figures.advisories = number as usize,
                "packages" => figures.packages = number as usize,
                "matched" => figures.matched = number as usize,
                "decompress_ns" => figures.decompress = nanos,
                "parse_ns" => figures.parse = nanos,
                "index_ns" => figures.index = nanos,
                "lookup_id_ns" => figures.lookup_by_id = nanos,
                "lookup_pkg_ns" => figures.lookup_by_package = nanos,
                "rss_before" => figures.rss_before_bytes = number as usize,
                "peak_rss" => figures.peak_rss_bytes = number as usize,
                _ => panic!("unknown figure {key}"),
            }
        }
        figures
    }
}

/// In the child: reads the feed as the daemon would after fetching it.
fn measure(kind: FeedKind, directory: &Path) -> Figures {
    let compressed: Vec<Vec<u8>> = (0..)
        .map(|number| document_path(directory, kind, number))
        .take_while(|path| path.exists())
        .map(|path| std::fs::read(path).expect("the feed is readable"))
        .collect();
    let mut figures = Figures { rss_before_bytes: proc_status_bytes("VmRSS:"), ..Figures::default() };

    let mut advisories: Vec<Advisory> = Vec::new();
    for (number, bytes) in compressed.iter().enumerate() {
        let origin = format!("page {}", number + 1);
        let started = Instant::now();
        let text =
            into_text(&origin, decompress(&origin, bytes, DECOMPRESSED_LIMIT).expect("gzip")).expect("UTF-8");
        figures.decompress += started.elapsed();
        let started = Instant::now();
        advisories.extend(parse_document(kind, &origin, &text).expect("a valid feed"));
        figures.parse += started.elapsed();
    }
    drop(compressed);
    figures.advisories = advisories.len();
    figures.packages = advisories.iter().map(|a| a.packages.len()).sum();

    let started = Instant::now();
    let mut index = AdvisoryIndex::new();
    index.add(kind.name(), &advisories);
    figures.index = started.elapsed();

    // SSM's view of each advisory's first package: `name.arch:epoch:version-release` on
    // RPM systems, `name:version` on Ubuntu.
    let titles: Vec<String> = advisories
        .iter()
        .map(|advisory| {
            let package = &advisory.packages[0];
            match kind {
                FeedKind::Ubuntu => format!("{}:{}", package.name, package.version),
                _ => {
                    let arch = package.arch.as_deref().filter(|a| *a != "src").unwrap_or("x86_64");
                    let epoch = package.epoch.as_deref().unwrap_or("0");
                    format!("{}.{arch}:{epoch}:{}", package.name, package.version)
                }
            }
        })
        .collect();
    let started = Instant::now();
    for _ in 0..LOOKUP_ROUNDS {
        for advisory in &advisories {
            figures.matched += usize::from(index.date_patch(&advisory.id, None).is_some());
        }
    }
    figures.lookup_by_id = started.elapsed() / (LOOKUP_ROUNDS * advisories.len()).max(1) as u32;
    let started = Instant::now();
    for _ in 0..LOOKUP_ROUNDS {
        for title in &titles {
            figures.matched += usize::from(index.date_patch("not-an-advisory", Some(title)).is_some());
        }
    }
    figures.lookup_by_package = started.elapsed() / (LOOKUP_ROUNDS * titles.len()).max(1) as u32;

    figures.peak_rss_bytes = proc_status_bytes("VmHWM:");
    figures
}

/// A `/proc/self/status` figure in bytes; 0 where there is no procfs.
fn proc_status_bytes(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kilobytes| kilobytes * 1024)
}

fn megabytes(bytes: usize) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn milliseconds(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1e3)
}

fn nanoseconds(duration: Duration) -> String {
    format!("{} ns", duration.as_nanos())
}

/// A small deterministic generator: the same feed on every run, without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const PACKAGES: &[&str] = &[
    "openssl",
    "kernel",
    "glibc",
    "curl",
    "python3",
    "openssh",
    "bind",
    "sudo",
    "systemd",
    "nss",
    "krb5",
    "libxml2",
    "expat",
    "zlib",
    "sqlite",
    "git",
    "vim",
    "tar",
    "perl",
    "httpd",
    "nginx",
    "postgresql",
    "libtiff",
    "libpng",
    "freetype",
    "gnutls",
    "libssh",
    "samba",
    "cups",
    "polkit",
    "dbus",
    "less",
];
const WORDS: &[&str] = &[
    "a",
    "flaw",
    "was",
    "found",
    "in",
    "the",
    "handling",
    "of",
    "certain",
    "input",
    "which",
    "could",
    "allow",
    "remote",
    "attacker",
    "to",
    "cause",
    "denial",
    "service",
    "or",
    "possibly",
    "execute",
    "arbitrary",
    "code",
    "when",
    "processing",
    "specially",
    "crafted",
    "data",
    "memory",
    "buffer",
    "overflow",
    "use-after-free",
    "validation",
    "issue",
    "library",
    "function",
    "incorrectly",
];
const SEVERITIES: &[&str] = &["critical", "important", "medium", "low"];

fn prose(random: &mut SplitMix64, characters: usize) -> String {
    let mut text = String::with_capacity(characters + 16);
    while text.len() < characters {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(random.pick(WORDS));
    }
    text.push('.');
    text
}

fn cve(random: &mut SplitMix64) -> String {
    format!("CVE-{}-{}", 2022 + random.below(5), 10_000 + random.below(50_000))
}

/// Released an hour or so apart, from 2020 on: 20,000 advisories span a couple of years.
fn release_seconds(number: usize) -> i64 {
    1_577_836_800 + number as i64 * 3_600 + (number as i64 * 7_919) % 1_800
}

/// A version no other advisory of the feed ships, as a vendor's successive updates are.
fn version(number: usize) -> String {
    format!("{}.{}.{}", 1 + number % 7, number / 7 % 40, number / 280)
}

fn amazon_linux_updateinfo(count: usize, random: &mut SplitMix64) -> String {
    let mut xml = String::with_capacity(count * 3_000);
    xml.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<updates>\n");
    for number in 0..count {
        let released = chrono::DateTime::from_timestamp(release_seconds(number), 0).expect("a date");
        let id = format!("ALAS2023-{}-{number:05}", released.format("%Y"));
        let package = random.pick(PACKAGES);
        let severity = random.pick(SEVERITIES);
        let cves = [cve(random), cve(random)];
        let (version, release) =
            (version(number), format!("{}.amzn2023.0.{}", 1 + random.below(30), random.below(5)));
        let epoch = if random.below(4) == 0 { "1" } else { "0" };
        let _ = write!(
            xml,
            "  <update author=\"alas@amazon.com\" from=\"alas@amazon.com\" status=\"final\" type=\"security\" version=\"2.0\">\n\
             \x20   <id>{id}</id>\n\
             \x20   <title>Amazon Linux 2023 - {id}: {severity} priority package update for {package}</title>\n\
             \x20   <issued date=\"{issued}\" />\n\
             \x20   <updated date=\"{issued}\" />\n\
             \x20   <severity>{severity}</severity>\n\
             \x20   <description>Package updates are available for Amazon Linux 2023 that fix the following vulnerabilities:\n\
             {cve0}:\n\t{text0}\n{cve1}:\n\t{text1}\n</description>\n\
             \x20   <references>\n",
            issued = released.format("%Y-%m-%d %H:%M:%S"),
            cve0 = cves[0],
            cve1 = cves[1],
            text0 = prose(random, 300),
            text1 = prose(random, 300),
        );
        for cve in &cves {
            let _ = writeln!(
                xml,
                "      <reference href=\"https://www.cve.org/CVERecord?id={cve}\" id=\"{cve}\" title=\"\" type=\"cve\" />"
            );
        }
        xml.push_str("    </references>\n    <pkglist>\n");
        xml.push_str("      <collection short=\"amazon-linux-2023---amazonlinux\">\n        <name>Amazon Linux 2023</name>\n");
        for (name, arch) in [
            (package.to_string(), "x86_64"),
            (format!("{package}-libs"), "aarch64"),
            (format!("{package}-doc"), "noarch"),
        ] {
            let _ = write!(
                xml,
                "        <package name=\"{name}\" epoch=\"{epoch}\" version=\"{version}\" release=\"{release}\" arch=\"{arch}\">\n\
                 \x20         <filename>Packages/{name}-{version}-{release}.{arch}.rpm</filename>\n\
                 \x20       </package>\n"
            );
        }
        xml.push_str("      </collection>\n    </pkglist>\n  </update>\n");
    }
    xml.push_str("</updates>\n");
    xml
}

fn red_hat_pages(count: usize, random: &mut SplitMix64) -> Vec<String> {
    let errata: Vec<Value> = (0..count)
        .map(|number| {
            let released = chrono::DateTime::from_timestamp(release_seconds(number), 0).expect("a date");
            let kind = ["RHSA", "RHSA", "RHSA", "RHBA", "RHEA"][random.below(5)];
            let id = format!("{kind}-{}:{number:05}", released.format("%Y"));
            let package = random.pick(PACKAGES);
            let epoch = if random.below(4) == 0 { "1:" } else { "" };
            let version = format!("{}-{}.el9_{}", version(number), 1 + random.below(60), random.below(5));
            let packages: Vec<String> = [
                (package.to_string(), "x86_64"),
                (package.to_string(), "aarch64"),
                (package.to_string(), "src"),
                (format!("{package}-libs"), "x86_64"),
                (format!("{package}-libs"), "aarch64"),
                (format!("{package}-devel"), "ppc64le"),
            ]
            .into_iter()
            .map(|(name, arch)| format!("{name}-{epoch}{version}.{arch}"))
            .collect();
            let severity = if kind == "RHSA" { json!(random.pick(SEVERITIES)) } else { Value::Null };
            json!({
                "RHSA": id,
                "severity": severity,
                "released_on": released.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "CVEs": [cve(random), cve(random)],
                "bugzillas": [(2_000_000 + random.below(400_000)).to_string()],
                "released_packages": packages,
                "resource_url": format!("https://access.redhat.com/hydra/rest/securitydata/csaf/{id}.json"),
            })
        })
        .collect();
    errata.chunks(RED_HAT_PAGE_SIZE).map(|page| serde_json::to_string(page).expect("JSON")).collect()
}

fn ubuntu_database(count: usize, random: &mut SplitMix64) -> String {
    const RELEASES: &[&str] = &["focal", "jammy", "noble"];
    let mut database = Map::new();
    for number in 0..count {
        let key = format!("{}-{}", 6000 + number, 1 + random.below(2));
        let package = random.pick(PACKAGES);
        let mut releases = Map::new();
        for (series, release) in RELEASES.iter().enumerate().skip(random.below(2)) {
            let version = format!("{}-0ubuntu{}.{}", version(number), series + 1, random.below(20));
            let version = if random.below(8) == 0 { format!("1:{version}") } else { version };
            let binaries: Map<String, Value> = [
                package.to_string(),
                format!("lib{package}1"),
                format!("lib{package}-dev"),
                format!("{package}-doc"),
            ]
            .into_iter()
            .map(|name| (name, json!({"pocket": "security", "version": version})))
            .collect();
            releases.insert(
                release.to_string(),
                json!({
                    "sources": {package: {"version": version, "description": prose(random, 60)}},
                    "binaries": binaries,
                    "archs": {},
                }),
            );
        }
        let bug = format!("https://launchpad.net/bugs/{}", 1_000_000 + random.below(900_000));
        let notice = json!({
            "id": format!("USN-{key}"),
            "title": format!("{package} vulnerabilities"),
            "summary": format!("{package} vulnerabilities"),
            "isummary": format!("Several security issues were fixed in {package}."),
            "description": prose(random, 1_000),
            "action": "In general, a standard system update will make all the necessary changes.",
            "timestamp": release_seconds(number) as f64 + random.below(1_000_000) as f64 / 1e6,
            "cves": [cve(random), cve(random), bug],
            "releases": releases,
        });
        database.insert(key, notice);
    }
    serde_json::to_string(&database).expect("JSON")
}
