//! patchd's configuration language: TOML files that ops teams edit and review like code.
//!
//! [`load`] reads one file or a directory of `*.toml` files, merges them, and validates the
//! result in one pass that reports every problem at once, each with its file, line and column.
//! What comes out is a [`Config`] of typed values: the rest of patchd never re-parses a string.

mod credentials;
mod decode;
mod diagnostic;
pub mod feasibility;
mod model;
mod reader;
mod secrets;
mod validate;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

pub use diagnostic::{Diagnostic, Located, Origin, Severity};
pub use model::*;

/// A configuration that passed validation, and the warnings it raised.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Diagnostic>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{dir} holds no *.toml files; point --config at a file or at a directory of *.toml files")]
    NoFiles { dir: PathBuf },
    /// The configuration has errors; `diagnostics` holds all of them, warnings after errors.
    #[error("the configuration has {} error(s)", .diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
    Invalid { diagnostics: Vec<Diagnostic> },
}

/// Loads a file, or every `*.toml` file of a directory (in name order), as one configuration.
/// `now` is the instant time-dependent checks are made against (expired exceptions, windows
/// that never fire again, SLA feasibility over the next year).
pub fn load(path: &Path, now: DateTime<Utc>) -> Result<Loaded, LoadError> {
    let io = |source| LoadError::Io { path: path.to_path_buf(), source };
    let files = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(LoadError::NoFiles { dir: path.to_path_buf() });
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|source| LoadError::Io { path: file.clone(), source })?;
        sources.push((file, text));
    }
    load_sources(sources, now)
}

/// Validates configuration text already in memory, as if read from the named files.
pub fn load_sources(files: Vec<(PathBuf, String)>, now: DateTime<Utc>) -> Result<Loaded, LoadError> {
    let mut diagnostics = diagnostic::Diagnostics::default();
    let sources: Vec<reader::Source> =
        files.into_iter().map(|(path, text)| reader::Source::new(path, text)).collect();
    let parts: Vec<Option<decode::FilePart>> =
        sources.iter().map(|src| decode::decode_file(src, &mut diagnostics)).collect();
    // Cross-file checks would misreport what the unparsable file defines.
    let Some(parts) = parts.into_iter().collect::<Option<Vec<_>>>() else {
        return Err(LoadError::Invalid { diagnostics: diagnostics.into_sorted() });
    };
    let config = validate::merge_and_check(
        parts,
        sources.iter().map(|s| s.path.to_path_buf()).collect(),
        now,
        &mut diagnostics,
    );
    if diagnostics.has_errors() {
        return Err(LoadError::Invalid { diagnostics: diagnostics.into_sorted() });
    }
    Ok(Loaded { config, warnings: diagnostics.into_sorted() })
}
