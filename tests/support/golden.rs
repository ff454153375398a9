//! Golden files under tests/golden: compared byte for byte, rewritten only with
//! `PATCHD_BLESS=1`.
//!
//! Any other value of `PATCHD_BLESS` (`0`, empty, `true`) is an error rather than a request: a
//! variable left set in a shell must not turn every comparison into a silent rewrite.

use std::path::Path;

const BLESS_ENV: &str = "PATCHD_BLESS";

/// Whether this run rewrites golden files; panics on a value other than `1`.
pub fn blessing() -> bool {
    match std::env::var_os(BLESS_ENV) {
        None => false,
        Some(v) if v == "1" => true,
        Some(other) => panic!("{BLESS_ENV}={other:?}: set it to 1 to rewrite the golden files, or unset it"),
    }
}

/// Compares `actual` with the golden file at `path`, or rewrites the file when blessing.
pub fn check(path: &Path, actual: &str) {
    if blessing() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap();
        return;
    }
    compare(path, actual);
}

/// Compares even when blessing: for output that must equal what another run just blessed.
pub fn compare(path: &Path, actual: &str) {
    let hint = if blessing() {
        "which this run just blessed from another output: blessing cannot settle a difference between them"
    } else {
        "PATCHD_BLESS=1 to accept"
    };
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("missing {}; run with {BLESS_ENV}=1", path.display()));
    assert_eq!(actual, expected, "output differs from {} ({hint})", path.display());
}
