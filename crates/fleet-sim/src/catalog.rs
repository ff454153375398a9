//! The patch catalog: per operating system, the advisories vendors publish over time.
//!
//! Each catalog entry is one advisory fixing one package (a simplification: real advisories can
//! cover several packages, and Linux compliance data is reported per package). Entries carry a
//! release instant; an entry whose release lies in the simulated future stays invisible until
//! the clock passes it, so a long demo sees new patches appear.

use chrono::{DateTime, Datelike, Utc};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::platform::Platform;

const DAY_MS: i64 = 86_400_000;

/// One advisory of the catalog.
#[derive(Debug, Clone)]
pub struct Patch {
    pub id: String,
    pub platform: Platform,
    pub title: String,
    pub package: String,
    pub version: String,
    pub release_label: String,
    pub classification: String,
    /// Vendor severity; MSRC severity for Windows.
    pub severity: String,
    /// Debian package priority (Ubuntu only; empty elsewhere).
    pub priority: String,
    pub section: String,
    pub cves: Vec<String>,
    pub released_ms: i64,
    pub needs_reboot: bool,
}

impl Patch {
    /// Whether SSM counts the patch as a security patch (`SecurityNonCompliantCount`).
    pub fn is_security(&self) -> bool {
        matches!(self.classification.as_str(), "Security" | "SecurityUpdates")
    }

    pub fn is_released(&self, now_ms: i64) -> bool {
        self.released_ms <= now_ms
    }

    /// The KB number of a Windows update ("KB5031234"); the advisory id elsewhere.
    pub fn kb_id(&self) -> &str {
        &self.id
    }

    /// The value a patch filter key selects, if the key applies to this patch.
    pub fn filter_property(&self, key: &str) -> Option<PatchProperty<'_>> {
        use PatchProperty::One;
        let property = match key {
            "PRODUCT" => PatchProperty::Product(self.platform),
            "PRODUCT_FAMILY" => One(self.platform.product_family()),
            "CLASSIFICATION" => One(&self.classification),
            "SEVERITY" if !self.platform.is_windows() => One(&self.severity),
            "MSRC_SEVERITY" if self.platform.is_windows() => One(&self.severity),
            "PRIORITY" => One(&self.priority),
            "SECTION" => One(&self.section),
            "PATCH_ID" | "ADVISORY_ID" => One(&self.id),
            "NAME" => One(&self.package),
            "CVE_ID" => PatchProperty::Many(&self.cves),
            "PATCH_SET" => One("OS"),
            "ARCH" => One("x86_64"),
            "EPOCH" => One("0"),
            "VERSION" => One(&self.version),
            "RELEASE" => One(&self.release_label),
            "REPOSITORY" => One(self.repository()),
            "SECURITY" => One(if self.is_security() { "SecurityUpdates" } else { "NonSecurityUpdates" }),
            _ => return None,
        };
        Some(property)
    }

    pub fn repository(&self) -> &'static str {
        match self.platform {
            Platform::AmazonLinux2 => "amzn2-core",
            Platform::AmazonLinux2023 => "amazonlinux",
            Platform::Ubuntu2204 => "jammy-security",
            Platform::Rhel9 => "rhel-9-for-x86_64-baseos-rpms",
            Platform::WindowsServer2022 => "",
        }
    }

    pub fn vendor(&self) -> &'static str {
        match self.platform {
            Platform::AmazonLinux2 | Platform::AmazonLinux2023 => "Amazon Linux",
            Platform::Ubuntu2204 => "Canonical",
            Platform::Rhel9 => "Red Hat",
            Platform::WindowsServer2022 => "Microsoft",
        }
    }

    pub fn content_url(&self) -> String {
        match self.platform {
            Platform::AmazonLinux2 => format!("https://alas.aws.amazon.com/AL2/{}.html", self.id),
            Platform::AmazonLinux2023 => format!("https://alas.aws.amazon.com/AL2023/{}.html", self.id),
            Platform::Ubuntu2204 => format!("https://ubuntu.com/security/notices/{}", self.id),
            Platform::Rhel9 => format!("https://access.redhat.com/errata/{}", self.id),
            Platform::WindowsServer2022 => {
                format!("https://support.microsoft.com/help/{}", self.id.trim_start_matches("KB"))
            }
        }
    }
}

/// What a patch filter compares its values with.
#[derive(Debug)]
pub enum PatchProperty<'a> {
    One(&'a str),
    Many(&'a [String]),
    Product(Platform),
}

impl PatchProperty<'_> {
    /// Whether any of `values` selects this property (values may use `*` and `?` wildcards).
    pub fn matches_any(&self, values: &[String]) -> bool {
        values.iter().any(|value| match self {
            PatchProperty::One(text) => glob_match(value, text),
            PatchProperty::Many(items) => items.iter().any(|item| glob_match(value, item)),
            PatchProperty::Product(platform) => {
                platform.product_aliases().iter().any(|alias| glob_match(value, alias))
            }
        })
    }
}

/// `*` matches any run of characters, `?` any one character; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// What the control API or a test asks for when releasing a patch at run time.
#[derive(Debug, Clone, Default)]
pub struct PatchRelease {
    pub severity: Option<String>,
    pub classification: Option<String>,
    pub cves: Option<Vec<String>>,
    pub package: Option<String>,
    pub title: Option<String>,
    pub needs_reboot: Option<bool>,
}

/// How a catalog is generated.
#[derive(Debug, Clone, Copy)]
pub struct CatalogShape {
    pub patches: usize,
    pub history_days: u32,
    pub future_days: u32,
    pub future_share: f64,
}

/// The catalogs of every platform.
#[derive(Debug, Clone)]
pub struct Catalog {
    patches: [Vec<Patch>; 5],
    next_number: [u32; 5],
    /// Bumped whenever a patch is added, so cached baseline evaluations know to refresh.
    pub revision: u64,
}

impl Catalog {
    pub fn generate(shapes: [CatalogShape; 5], start_ms: i64, seed: u64) -> Catalog {
        let mut patches: [Vec<Patch>; 5] = Default::default();
        let mut next_number = [0u32; 5];
        for platform in Platform::ALL {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xCA7A_1060 ^ (platform.index() as u64) << 40);
            let (list, next) = generate_platform(platform, shapes[platform.index()], start_ms, &mut rng);
            patches[platform.index()] = list;
            next_number[platform.index()] = next;
        }
        Catalog { patches, next_number, revision: 0 }
    }

    pub fn patches(&self, platform: Platform) -> &[Patch] {
        &self.patches[platform.index()]
    }

    pub fn find(&self, id: &str) -> Option<&Patch> {
        self.patches.iter().flatten().find(|p| p.id == id)
    }

    /// Adds a patch released at `now_ms` and returns its index in the platform's catalog.
    pub fn release(
        &mut self,
        platform: Platform,
        request: &PatchRelease,
        now_ms: i64,
        rng: &mut ChaCha8Rng,
    ) -> usize {
        let number = self.next_number[platform.index()];
        self.next_number[platform.index()] += 1;
        let mut draft = draw_properties(platform, rng, true);
        if let Some(severity) = &request.severity {
            draft.severity = severity.clone();
        }
        if let Some(classification) = &request.classification {
            draft.classification = classification.clone();
        }
        if let Some(package) = &request.package {
            draft.package = package.clone();
        }
        if let Some(reboot) = request.needs_reboot {
            draft.needs_reboot = reboot;
        }
        let year = year_of(now_ms);
        let cves = match &request.cves {
            Some(cves) => cves.clone(),
            None if is_security_classification(&draft.classification) => draw_cves(rng, year),
            None => Vec::new(),
        };
        let mut patch = build_patch(platform, draft, number, whole_second(now_ms), cves, rng);
        if let Some(title) = &request.title {
            patch.title = title.clone();
        }
        let list = &mut self.patches[platform.index()];
        list.push(patch);
        self.revision += 1;
        list.len() - 1
    }
}

fn is_security_classification(classification: &str) -> bool {
    matches!(classification, "Security" | "SecurityUpdates")
}

fn year_of(ms: i64) -> i32 {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|d| d.year()).unwrap_or(2026)
}

struct Draft {
    classification: String,
    severity: String,
    priority: String,
    section: String,
    package: String,
    needs_reboot: bool,
}

fn pick<'a>(rng: &mut ChaCha8Rng, weighted: &[(&'a str, u32)]) -> &'a str {
    let total: u32 = weighted.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total.max(1));
    for (item, weight) in weighted {
        if roll < *weight {
            return item;
        }
        roll -= weight;
    }
    weighted.last().map(|(item, _)| *item).unwrap_or("")
}

const LINUX_PACKAGES: [&str; 24] = [
    "kernel",
    "openssl",
    "glibc",
    "curl",
    "systemd",
    "openssh",
    "sudo",
    "python3",
    "bind",
    "nss",
    "krb5-libs",
    "libxml2",
    "git",
    "vim",
    "polkit",
    "expat",
    "zlib",
    "sqlite",
    "libssh2",
    "tzdata",
    "ca-certificates",
    "nghttp2",
    "libcurl",
    "binutils",
];

fn draw_properties(platform: Platform, rng: &mut ChaCha8Rng, force_critical: bool) -> Draft {
    // Kernel fixes are about one advisory in ten, and the ones that need a reboot.
    let mut package = if rng.random_bool(0.1) {
        "kernel".to_string()
    } else {
        LINUX_PACKAGES[rng.random_range(1..LINUX_PACKAGES.len())].to_string()
    };
    let (classification, severity, priority) = match platform {
        Platform::AmazonLinux2 | Platform::AmazonLinux2023 => {
            let class = if force_critical {
                "Security"
            } else {
                pick(rng, &[("Security", 70), ("Bugfix", 20), ("Enhancement", 10)])
            };
            let severity = if force_critical {
                "Critical"
            } else if class == "Security" {
                pick(rng, &[("Critical", 12), ("Important", 40), ("Medium", 33), ("Low", 15)])
            } else {
                pick(rng, &[("Medium", 40), ("Low", 60)])
            };
            (class, severity, "")
        }
        Platform::Rhel9 => {
            let class = if force_critical {
                "Security"
            } else {
                pick(rng, &[("Security", 65), ("Bugfix", 25), ("Enhancement", 10)])
            };
            let severity = if force_critical {
                "Critical"
            } else if class == "Security" {
                pick(rng, &[("Critical", 8), ("Important", 42), ("Moderate", 38), ("Low", 12)])
            } else {
                "None"
            };
            (class, severity, "")
        }
        Platform::Ubuntu2204 => {
            let severity = if force_critical {
                "Critical"
            } else {
                pick(rng, &[("Critical", 6), ("High", 30), ("Medium", 44), ("Low", 15), ("Negligible", 5)])
            };
            let priority =
                pick(rng, &[("Required", 10), ("Important", 30), ("Standard", 30), ("Optional", 30)]);
            if package == "kernel" {
                package = "linux-image-generic".to_string();
            }
            ("Security", severity, priority)
        }
        Platform::WindowsServer2022 => {
            let class = if force_critical {
                "SecurityUpdates"
            } else {
                pick(
                    rng,
                    &[
                        ("SecurityUpdates", 60),
                        ("CriticalUpdates", 10),
                        ("Updates", 20),
                        ("DefinitionUpdates", 5),
                        ("UpdateRollups", 5),
                    ],
                )
            };
            let severity = if force_critical {
                "Critical"
            } else if class == "SecurityUpdates" {
                pick(rng, &[("Critical", 25), ("Important", 60), ("Moderate", 10), ("Low", 5)])
            } else {
                "Unspecified"
            };
            package = match class {
                "SecurityUpdates" | "UpdateRollups" => "Cumulative Update".to_string(),
                "DefinitionUpdates" => "Microsoft Defender Antivirus".to_string(),
                _ => ".NET Framework".to_string(),
            };
            (class, severity, "")
        }
    };
    let needs_reboot = match platform {
        Platform::WindowsServer2022 => package == "Cumulative Update",
        _ => package == "kernel" || package == "linux-image-generic",
    };
    let section = match platform {
        Platform::Ubuntu2204 if needs_reboot => "kernel",
        Platform::Ubuntu2204 => "libs",
        _ => "",
    };
    Draft {
        classification: classification.to_string(),
        severity: severity.to_string(),
        priority: priority.to_string(),
        section: section.to_string(),
        package,
        needs_reboot,
    }
}

fn draw_cves(rng: &mut ChaCha8Rng, year: i32) -> Vec<String> {
    let count = rng.random_range(1..=3);
    (0..count).map(|_| format!("CVE-{}-{}", year, rng.random_range(10_000..60_000))).collect()
}

fn build_patch(
    platform: Platform,
    draft: Draft,
    number: u32,
    released_ms: i64,
    cves: Vec<String>,
    rng: &mut ChaCha8Rng,
) -> Patch {
    let year = year_of(released_ms);
    let month = DateTime::<Utc>::from_timestamp_millis(released_ms).map(|d| d.month()).unwrap_or(1);
    let security = is_security_classification(&draft.classification);
    let id = match platform {
        Platform::AmazonLinux2 => format!("ALAS2-{year}-{:04}", 1000 + number),
        Platform::AmazonLinux2023 => format!("ALAS2023-{year}-{:03}", 100 + number),
        Platform::Rhel9 => {
            let prefix = match draft.classification.as_str() {
                "Security" => "RHSA",
                "Bugfix" => "RHBA",
                _ => "RHEA",
            };
            format!("{prefix}-{year}:{:04}", 1000 + number)
        }
        Platform::Ubuntu2204 => format!("USN-{}-{}", 7000 + number, 1 + number % 3 / 2),
        Platform::WindowsServer2022 => format!("KB5{:06}", 30_000 + number * 7),
    };
    let version =
        format!("{}.{}.{}", rng.random_range(1..6), rng.random_range(0..20), rng.random_range(0..40));
    let release_label = match platform {
        Platform::AmazonLinux2 => format!("{}.amzn2", rng.random_range(1..200)),
        Platform::AmazonLinux2023 => format!("{}.amzn2023", rng.random_range(1..200)),
        Platform::Rhel9 => format!("{}.el9_4", rng.random_range(1..60)),
        Platform::Ubuntu2204 => format!("0ubuntu{}.{}", rng.random_range(1..9), rng.random_range(1..20)),
        Platform::WindowsServer2022 => String::new(),
    };
    let title = match platform {
        Platform::AmazonLinux2 | Platform::AmazonLinux2023 => {
            if security {
                format!("{id}: {} {} security update", draft.severity, draft.package)
            } else {
                format!("{id}: {} {} update", draft.package, draft.classification.to_lowercase())
            }
        }
        Platform::Rhel9 => match draft.classification.as_str() {
            "Security" => format!("{id}: {}: {} security update", draft.severity, draft.package),
            "Bugfix" => format!("{id}: {} bug fix update", draft.package),
            _ => format!("{id}: {} enhancement update", draft.package),
        },
        Platform::Ubuntu2204 => format!("{id}: {} vulnerabilities", draft.package),
        Platform::WindowsServer2022 => match draft.classification.as_str() {
            "SecurityUpdates" | "UpdateRollups" => format!(
                "{year}-{month:02} Cumulative Update for Microsoft server operating system version 21H2 for x64-based Systems ({id})"
            ),
            "DefinitionUpdates" => {
                format!("Security Intelligence Update for Microsoft Defender Antivirus - {id}")
            }
            _ => format!("{year}-{month:02} Update for .NET Framework 4.8.1 for Microsoft server operating system version 21H2 ({id})"),
        },
    };
    Patch {
        id,
        platform,
        title,
        package: draft.package,
        version,
        release_label,
        classification: draft.classification,
        severity: draft.severity,
        priority: draft.priority,
        section: draft.section,
        cves,
        released_ms,
        needs_reboot: draft.needs_reboot,
    }
}

/// Days relative to the start at which every catalog gets a critical security patch, so a
/// fresh fleet shows breached (45 days > 30), due soon (25), fine (10), not yet approved by a
/// 7-day rule (3), and one still to come (+2, a critical patch appears during a demo).
pub(crate) const CRITICAL_ANCHOR_DAYS: [i64; 5] = [-45, -25, -10, -3, 2];

/// When the critical anchor `days` from the start is released. Anchor releases sit
/// mid-morning so they are not exactly on a day boundary.
pub(crate) fn critical_anchor_ms(start_ms: i64, days: i64) -> i64 {
    whole_second(start_ms + days * DAY_MS - 5 * 3_600_000)
}

/// Release instants are whole seconds because vendor feeds date advisories to the second
/// (updateinfo's `issued`, CSAF's `released_on`): SSM's ReleaseDate and a feed's date are then
/// the same instant, not a sub-second apart.
fn whole_second(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

fn generate_platform(
    platform: Platform,
    shape: CatalogShape,
    start_ms: i64,
    rng: &mut ChaCha8Rng,
) -> (Vec<Patch>, u32) {
    let history_ms = i64::from(shape.history_days.max(1)) * DAY_MS;
    let future_ms = i64::from(shape.future_days.max(1)) * DAY_MS;
    let mut drafts: Vec<(i64, bool)> = Vec::with_capacity(shape.patches);
    for index in 0..shape.patches {
        if let Some(days) = CRITICAL_ANCHOR_DAYS.get(index) {
            drafts.push((critical_anchor_ms(start_ms, *days), true));
        } else if crate::random::chance(rng, shape.future_share) {
            let released = start_ms + rng.random_range(60_000..future_ms.max(60_001));
            drafts.push((whole_second(released), false));
        } else {
            let released = start_ms - rng.random_range(3_600_000..history_ms.max(3_600_001));
            drafts.push((whole_second(released), false));
        }
    }
    drafts.sort_by_key(|(released, _)| *released);
    let mut patches = Vec::with_capacity(drafts.len());
    for (number, (released, anchored)) in drafts.into_iter().enumerate() {
        let mut draft = draw_properties(platform, rng, anchored);
        if anchored && released < start_ms - 40 * DAY_MS {
            // The breached anchor is a kernel fix, so installing it exercises reboots.
            draft.needs_reboot = true;
            draft.package = if platform == Platform::Ubuntu2204 {
                "linux-image-generic".into()
            } else if platform.is_windows() {
                "Cumulative Update".into()
            } else {
                "kernel".into()
            };
        }
        let cves = if is_security_classification(&draft.classification) {
            draw_cves(rng, year_of(released))
        } else {
            Vec::new()
        };
        patches.push(build_patch(platform, draft, number as u32, released, cves, rng));
    }
    let next = patches.len() as u32;
    (patches, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(patches: usize) -> CatalogShape {
        CatalogShape { patches, history_days: 540, future_days: 30, future_share: 0.03 }
    }

    const START: i64 = 1_795_000_000_000;

    #[test]
    fn ids_follow_each_vendor_format() {
        let catalog = Catalog::generate([shape(40); 5], START, 7);
        let check = |platform: Platform, accept: &dyn Fn(&str) -> bool| {
            for patch in catalog.patches(platform) {
                assert!(accept(&patch.id), "{platform}: unexpected id {}", patch.id);
            }
        };
        check(Platform::AmazonLinux2, &|id| id.starts_with("ALAS2-20") && id.len() == 15);
        check(Platform::AmazonLinux2023, &|id| id.starts_with("ALAS2023-20"));
        check(Platform::Rhel9, &|id| {
            (id.starts_with("RHSA-") || id.starts_with("RHBA-") || id.starts_with("RHEA-"))
                && id.contains(':')
        });
        check(Platform::Ubuntu2204, &|id| id.starts_with("USN-"));
        check(Platform::WindowsServer2022, &|id| id.starts_with("KB5") && id.len() == 9);
    }

    #[test]
    fn ids_are_unique_and_sorted_by_release() {
        let catalog = Catalog::generate([shape(500); 5], START, 1);
        for platform in Platform::ALL {
            let patches = catalog.patches(platform);
            let mut ids: Vec<&str> = patches.iter().map(|p| p.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), patches.len(), "{platform}");
            assert!(patches.windows(2).all(|w| w[0].released_ms <= w[1].released_ms));
        }
    }

    #[test]
    fn anchors_cover_every_sla_bucket_and_the_future() {
        let catalog = Catalog::generate([shape(60); 5], START, 3);
        for platform in Platform::ALL {
            let critical_ages: Vec<i64> = catalog
                .patches(platform)
                .iter()
                .filter(|p| p.severity == "Critical" && p.is_security())
                .map(|p| (START - p.released_ms) / DAY_MS)
                .collect();
            assert!(critical_ages.iter().any(|&d| d > 30), "{platform}: no breached critical");
            assert!(critical_ages.iter().any(|&d| (20..30).contains(&d)), "{platform}: none due soon");
            assert!(critical_ages.iter().any(|&d| (0..20).contains(&d)), "{platform}: none fine");
            assert!(catalog.patches(platform).iter().any(|p| p.released_ms > START));
            assert!(catalog.patches(platform).iter().any(|p| p.needs_reboot));
        }
    }

    #[test]
    fn same_seed_same_catalog() {
        let a = Catalog::generate([shape(30); 5], START, 11);
        let b = Catalog::generate([shape(30); 5], START, 11);
        let ids =
            |c: &Catalog| c.patches(Platform::Rhel9).iter().map(|p| p.title.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
    }

    #[test]
    fn globbing() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("Amazon*", "AmazonLinux2", true),
            ("AmazonLinux2", "AmazonLinux2023", false),
            ("Amazon?inux2", "AmazonLinux2", true),
            ("*2023", "AmazonLinux2023", true),
            ("", "", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ] {
            assert_eq!(glob_match(pattern, text), expected, "{pattern} vs {text}");
        }
    }

    #[test]
    fn release_instants_are_whole_seconds() {
        let ragged_start = START + 123;
        let mut catalog = Catalog::generate([shape(80); 5], ragged_start, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        catalog.release(Platform::Rhel9, &PatchRelease::default(), ragged_start + 5_432, &mut rng);
        for platform in Platform::ALL {
            for patch in catalog.patches(platform) {
                assert_eq!(patch.released_ms % 1000, 0, "{platform} {}", patch.id);
            }
        }
        let released = catalog.patches(Platform::Rhel9).last().expect("the release");
        assert_eq!(released.released_ms, START + 5_000, "floored, so already released at the instant asked");
    }

    #[test]
    fn released_patch_gets_next_id() {
        let mut catalog = Catalog::generate([shape(10); 5], START, 5);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let request = PatchRelease { severity: Some("Critical".into()), ..PatchRelease::default() };
        let index = catalog.release(Platform::AmazonLinux2, &request, START + DAY_MS, &mut rng);
        let patch = &catalog.patches(Platform::AmazonLinux2)[index];
        assert_eq!(index, 10);
        assert_eq!(patch.severity, "Critical");
        assert!(patch.id.ends_with("1010"), "{}", patch.id);
        assert_eq!(catalog.revision, 1);
    }
}
