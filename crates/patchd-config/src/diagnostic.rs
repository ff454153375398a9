//! Problems found in configuration files, each pinned to a file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where something was written: a file and a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    pub file: Arc<PathBuf>,
    pub line: u32,
    pub col: u32,
}

impl Origin {
    pub fn file(&self) -> &Path {
        &self.file
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// A value together with where it was written, for messages that point back at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> std::ops::Deref for Located<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// One problem: `FILE:LINE:COL: error: MESSAGE`, then an optional hint on how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub origin: Origin,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.origin, self.severity, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  = hint: {hint}")?;
        }
        Ok(())
    }
}

/// Collects diagnostics so that one pass reports every problem, not only the first.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn error(&mut self, origin: &Origin, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Error, origin, message.into(), hint);
    }

    pub(crate) fn warning(&mut self, origin: &Origin, message: impl Into<String>, hint: Option<String>) {
        self.push(Severity::Warning, origin, message.into(), hint);
    }

    fn push(&mut self, severity: Severity, origin: &Origin, message: String, hint: Option<String>) {
        self.items.push(Diagnostic { severity, origin: origin.clone(), message, hint });
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Errors first, then warnings, each in file order, so the output reads top to bottom.
    pub(crate) fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.items
            .sort_by(|a, b| (a.severity, &a.origin, &a.message).cmp(&(b.severity, &b.origin, &b.message)));
        self.items.dedup();
        self.items
    }
}

/// "did you mean `x`?" for a misspelt word, when one candidate is close enough to be a likely typo.
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}
