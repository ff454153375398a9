//! What the benchmarks under `examples/` share: where the workspace and the measured binaries
//! are. (A folder without `main.rs`, so cargo does not take it for an example of its own.)

use std::path::{Path, PathBuf};

pub type Error = Box<dyn std::error::Error>;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The binaries measured: release builds in the workspace's `target/`, unless
/// `PATCHD_BENCH_TARGET_DIR` names another target directory, or `PATCHD_BENCH_PROFILE=debug`
/// checks the benchmark itself (its CPU and memory figures are then not the ones to quote).
pub fn binary(name: &str) -> Result<PathBuf, Error> {
    let profile = std::env::var("PATCHD_BENCH_PROFILE").unwrap_or_else(|_| "release".into());
    let target =
        std::env::var("PATCHD_BENCH_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root().join("target"));
    let path = target.join(profile).join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{} is missing: run `cargo build --release -p patchd -p fleet-sim`", path.display())
            .into())
    }
}
