//! Where the open findings' SLA clocks start, per platform: how much of the picture rests on
//! estimates.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::judged::JudgedFinding;

/// Open findings of one platform by where their clocks come from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlatformClocks {
    /// The instances' operating system as recorded (`Ubuntu 22.04`), or `unknown`.
    pub platform: String,
    pub open: u64,
    /// Open findings whose clock is an estimate (no release date known).
    pub estimated: u64,
    /// (origin label, open findings), most findings first.
    pub origins: Vec<(String, u64)>,
}

impl PlatformClocks {
    pub fn estimated_share(&self) -> f64 {
        if self.open == 0 {
            0.0
        } else {
            self.estimated as f64 / self.open as f64
        }
    }
}

/// The store's per-platform clock counts, one entry per platform.
pub fn platform_clocks(counts: &[patchd_store::ClockCount]) -> Vec<PlatformClocks> {
    clocks_by_platform(
        counts.iter().map(|c| (c.platform.as_deref(), c.source.label(), c.source.estimated(), c.open)),
    )
}

/// The same figures from judged findings, one each.
pub(crate) fn platform_clocks_of(findings: &[JudgedFinding]) -> Vec<PlatformClocks> {
    clocks_by_platform(
        findings.iter().map(|f| (f.platform.as_deref(), f.clock_origin.clone(), f.estimated, 1)),
    )
}

fn clocks_by_platform<'a>(
    counts: impl Iterator<Item = (Option<&'a str>, String, bool, u64)>,
) -> Vec<PlatformClocks> {
    let mut by_platform: BTreeMap<String, PlatformClocks> = BTreeMap::new();
    for (platform, label, estimated, open) in counts {
        let platform = platform.unwrap_or("unknown").to_string();
        let entry = by_platform.entry(platform.clone()).or_insert_with(|| PlatformClocks {
            platform,
            open: 0,
            estimated: 0,
            origins: Vec::new(),
        });
        entry.open += open;
        if estimated {
            entry.estimated += open;
        }
        match entry.origins.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += open,
            None => entry.origins.push((label, open)),
        }
    }
    let mut platforms: Vec<PlatformClocks> = by_platform.into_values().collect();
    for p in &mut platforms {
        p.origins.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    platforms
}
