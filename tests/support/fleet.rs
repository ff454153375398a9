//! The simulated fleet that the process tests (tests/) and the engine tests
//! (crates/patchd-daemon/tests) run their windows against.
#![allow(dead_code)]

use fleet_sim::{Group, Scenario, Timing};

/// `count` Amazon Linux 2 instances tagged `Role = web` and `Patch Group = web`: what the
/// group `web` of the test configurations selects, in the patch group of their baselines.
pub fn web_group(count: usize) -> Group {
    Group::amazon_linux_2("web", count).with_tag("Role", "web").with_tag("Patch Group", "web")
}

/// `group` alone, with a catalog of `patches_per_os` per system and `timing`.
pub fn fleet_of(
    name: &str,
    seed: u64,
    time_scale: f64,
    patches_per_os: usize,
    timing: Timing,
    group: Group,
) -> Scenario {
    Scenario::of_groups(name, seed, vec![group])
        .with_time_scale(time_scale)
        .with_timing(timing)
        .with_patches_per_os(patches_per_os)
}
