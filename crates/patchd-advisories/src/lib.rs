//! Vendor advisories: what each vendor says it fixed and when, read from its published feed,
//! and the release date of each patch SSM reports, found by matching it to those advisories.
//!
//! Pure: no network and no file I/O. The caller fetches or reads bytes, [`decompress`]es
//! them, turns them into text ([`as_text`], [`into_text`]) and hands the text to
//! [`parse_document`] (a feed it knows the kind of) or [`parse_file`] (a file an operator
//! imports, recognised by its content). The formats are described in `docs/advisories.md`:
//!
//! | kind                   | document                                   | date read from        |
//! |------------------------|--------------------------------------------|-----------------------|
//! | [`FeedKind::AmazonLinux`] | yum `updateinfo.xml`                     | `<issued date>`       |
//! | [`FeedKind::RedHat`]   | one page of the Security Data API's CSAF index | `released_on`     |
//! | [`FeedKind::Ubuntu`]   | the USN database JSON (or one USN object)  | `timestamp`           |
//! | [`FeedKind::Csv`]      | an operator's `id,release_date` lines      | the second column     |
//!
//! Parsing is all-or-nothing: an entry without an id or a readable date, or a document that
//! is not the format it claims, fails the whole document with a [`FeedError`] that says where,
//! so an import or a feed refresh never leaves half of a feed's dates behind. An id listed
//! twice in one document keeps its earliest date.
//!
//! # Dating SSM's patches
//!
//! [`AdvisoryIndex`] gathers the advisories of every configured source and answers
//! [`AdvisoryIndex::date_patch`] for one patch as SSM reports it (its `KBId` and `Title`).
//! Two rules are tried in order:
//!
//! 1. [`MatchRule::AdvisoryId`]: the patch's `KBId`, else the first word of its title
//!    (`ALAS2023-2026-123: ...` or `RHSA-2026:1234: ...`, without the trailing colon), equals
//!    an advisory id, ignoring ASCII case. When several sources list the id, the earliest
//!    release wins. This is how SSM names patches in `DescribeAvailablePatches` and how the
//!    simulator names them everywhere.
//! 2. [`MatchRule::Package`]: SSM reports a Linux instance's missing patches by package, with
//!    a title `name.arch:epoch:version-release` (`openssl.x86_64:1:3.0.8-1.amzn2023.0.3`).
//!    The title (else the `KBId`) is read as that identity, or as a Debian one,
//!    `name:version` or `name.arch:version` with the epoch inside the version
//!    (`bind9:1:9.18.18-0ubuntu0.22.04.2`). It matches an advisory's [`FixedPackage`] with the
//!    same name, the same epoch (no epoch is epoch `0`, whether written apart as rpm does or
//!    inside the version as Debian does), the same version (with its release) and the same
//!    architecture; an advisory package without an architecture, or `noarch`, `all` or `src`,
//!    fixes every architecture, and an identity without one matches any. The earliest
//!    advisory fixing exactly that package wins.
//!
//! Limits of rule 2: versions are compared as strings, never ordered. A patch whose
//! version is newer than every advisory's fixed version (the vendor's next update of the
//! package, not yet in the feed), or a rebuild or backport whose release string differs,
//! stays undated; so does a patch reported under a name no advisory lists (an Ubuntu binary
//! package missing from the USN's `binaries`). A dot-separated suffix counts as an
//! architecture only when it is a known one, so `python3.11:3.11.6-1` keeps its name whole.
//! Titles that name no version (`openssl.x86_64`) cannot match by package.
//!
//! Nothing else is guessed: a patch no rule matches keeps whatever date SSM or the first
//! sighting gives it.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};

mod compression;
mod csv;
mod date;
mod index;
mod redhat;
mod ubuntu;
mod updateinfo;

pub use compression::{as_text, decompress, into_text, is_gzip};
pub use index::{AdvisoryIndex, Dating, MatchRule};

/// The formats patchd reads advisories from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedKind {
    /// yum `updateinfo.xml`, as Amazon Linux publishes it (and every RPM distribution).
    AmazonLinux,
    /// The Red Hat Security Data API's CSAF index, one JSON array per page.
    RedHat,
    /// The Ubuntu Security Team's USN database JSON.
    Ubuntu,
    /// An operator's file of `id,release_date` lines.
    Csv,
}

impl FeedKind {
    pub const ALL: [FeedKind; 4] = [FeedKind::AmazonLinux, FeedKind::RedHat, FeedKind::Ubuntu, FeedKind::Csv];

    /// The name configuration files use (`kind = "amazon-linux"`).
    pub fn name(self) -> &'static str {
        match self {
            FeedKind::AmazonLinux => "amazon-linux",
            FeedKind::RedHat => "redhat",
            FeedKind::Ubuntu => "ubuntu",
            FeedKind::Csv => "csv",
        }
    }

    pub fn from_name(name: &str) -> Option<FeedKind> {
        FeedKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether the feed is fetched page by page until an empty page, rather than as one
    /// document.
    pub fn is_paged(self) -> bool {
        matches!(self, FeedKind::RedHat)
    }
}

impl fmt::Display for FeedKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One vendor advisory (an erratum, a security notice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    /// As the vendor writes it: `ALAS2023-2026-123`, `RHSA-2026:1234`, `USN-7000-1`.
    pub id: String,
    pub released: DateTime<Utc>,
    /// The vendor's own word (`important`, `moderate`...), as written; Ubuntu's notices and
    /// CSV files carry none.
    pub severity: Option<String>,
    pub cves: Vec<String>,
    pub packages: Vec<FixedPackage>,
}

/// A package version an advisory ships the fix in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FixedPackage {
    pub name: String,
    /// rpm's epoch when the feed writes it apart from the version. Debian versions keep
    /// their epoch inside `version` (`1:9.18.18-0ubuntu0.22.04.2`), as the USN does.
    pub epoch: Option<String>,
    /// rpm: `version-release`; Debian: the full version, as the feed gives it.
    pub version: String,
    /// `x86_64`, `aarch64`, `noarch`, `src`...; none when the feed does not say (Ubuntu).
    pub arch: Option<String>,
}

/// Why a document was refused, and where in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct FeedError {
    /// `updateinfo.xml:12`, `page 3, entry 17 (RHSA-2026:1234)`, `database.json, USN 7000-1`.
    pub location: String,
    pub message: String,
}

impl FeedError {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> FeedError {
        FeedError { location: location.into(), message: message.into() }
    }
}

/// Parses one document of a feed (one page for Red Hat). `origin` names it in errors: a file
/// name, a URL, `page 3`.
///
/// A Red Hat page may be empty (`[]`: past the last page); a document of any other kind
/// without advisories is refused, since an empty feed is far more likely a broken mirror
/// than a vendor that never published anything.
pub fn parse_document(kind: FeedKind, origin: &str, text: &str) -> Result<Vec<Advisory>, FeedError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let advisories = match kind {
        FeedKind::AmazonLinux => updateinfo::parse(origin, text)?,
        FeedKind::RedHat => redhat::parse(origin, text)?,
        FeedKind::Ubuntu => ubuntu::parse(origin, text)?,
        FeedKind::Csv => csv::parse(origin, text)?,
    };
    if advisories.is_empty() && !kind.is_paged() {
        return Err(FeedError::new(origin, "no advisories found"));
    }
    Ok(merge_duplicates(advisories))
}

/// Parses a file an operator imports (`patchd advisories import FILE`), recognising its kind
/// by its first character: `<` updateinfo XML, `[` a Red Hat page, `{` the USN database or
/// a single USN object, anything else CSV. A file without advisories is refused, even an
/// empty Red Hat page.
pub fn parse_file(origin: &str, text: &str) -> Result<(FeedKind, Vec<Advisory>), FeedError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let kind = match text.trim_start().chars().next() {
        Some('<') => FeedKind::AmazonLinux,
        Some('[') => FeedKind::RedHat,
        Some('{') => FeedKind::Ubuntu,
        _ => FeedKind::Csv,
    };
    let advisories = parse_document(kind, origin, text)?;
    if advisories.is_empty() {
        return Err(FeedError::new(origin, "no advisories found"));
    }
    Ok((kind, advisories))
}

/// A JSON error located as `origin:line:column`: feeds are often a single long line, so the
/// column matters. Syntax errors say so; type errors speak for themselves.
fn json_error(origin: &str, error: &serde_json::Error) -> FeedError {
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    let message = match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("not valid JSON: {message}")
        }
        serde_json::error::Category::Data | serde_json::error::Category::Io => message.to_string(),
    };
    FeedError::new(format!("{origin}:{}:{}", error.line(), error.column()), message)
}

/// Folds repeated ids into their first occurrence, keeping the earliest date: a vendor that
/// lists an advisory twice (once per repository, or re-issued) first published it then.
fn merge_duplicates(advisories: Vec<Advisory>) -> Vec<Advisory> {
    let mut position_of: HashMap<String, usize> = HashMap::with_capacity(advisories.len());
    let mut merged: Vec<Advisory> = Vec::with_capacity(advisories.len());
    for advisory in advisories {
        match position_of.get(&advisory.id) {
            Some(&position) => merged[position].absorb(advisory),
            None => {
                position_of.insert(advisory.id.clone(), merged.len());
                merged.push(advisory);
            }
        }
    }
    merged
}

impl Advisory {
    fn absorb(&mut self, repeat: Advisory) {
        self.released = self.released.min(repeat.released);
        if self.severity.is_none() {
            self.severity = repeat.severity;
        }
        push_missing(&mut self.cves, repeat.cves);
        push_missing(&mut self.packages, repeat.packages);
    }
}

/// Appends the items not already present. Lists are a few items long, so a scan is cheaper
/// than hashing.
fn push_missing<T: PartialEq>(list: &mut Vec<T>, items: impl IntoIterator<Item = T>) {
    for item in items {
        if !list.contains(&item) {
            list.push(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    pub(crate) fn package(name: &str, epoch: Option<&str>, version: &str, arch: &str) -> FixedPackage {
        FixedPackage {
            name: name.into(),
            epoch: epoch.map(String::from),
            version: version.into(),
            arch: Some(arch.into()),
        }
    }

    #[test]
    fn feed_kind_names_round_trip() {
        for kind in FeedKind::ALL {
            assert_eq!(FeedKind::from_name(kind.name()), Some(kind));
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(FeedKind::from_name("RedHat"), None);
        assert_eq!(
            FeedKind::ALL.map(FeedKind::is_paged),
            [false, true, false, false],
            "only Red Hat's API pages"
        );
    }

    #[test]
    fn parse_file_recognises_each_kind() {
        let cases = [
            (
                "\n  <updates><update><id>ALAS2-2026-1</id><issued date=\"2026-01-05\"/></update></updates>",
                FeedKind::AmazonLinux,
            ),
            (r#"[{"RHSA": "RHSA-2026:1", "released_on": "2026-01-05T00:00:00Z"}]"#, FeedKind::RedHat),
            (r#"{"7000-1": {"timestamp": 1767571200, "releases": {}}}"#, FeedKind::Ubuntu),
            (r#"{"id": "USN-7000-1", "timestamp": 1767571200, "releases": {}}"#, FeedKind::Ubuntu),
            ("ALAS2-2026-1,2026-01-05\n", FeedKind::Csv),
            ("\u{feff}id,release_date\nALAS2-2026-1,2026-01-05\n", FeedKind::Csv),
        ];
        for (text, expected) in cases {
            let (kind, advisories) = parse_file("f", text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(kind, expected, "{text}");
            assert_eq!(advisories.len(), 1, "{text}");
            assert_eq!(advisories[0].released, t("2026-01-05T00:00:00Z"), "{text}");
        }
    }

    #[test]
    fn empty_documents_are_refused_except_a_red_hat_page() {
        assert_eq!(parse_document(FeedKind::RedHat, "page 4", " [ ]\n"), Ok(vec![]));
        assert_eq!(parse_file("rh.json", "[]").unwrap_err().to_string(), "rh.json: no advisories found");
        let empties = [
            (FeedKind::AmazonLinux, "<updates/>"),
            (FeedKind::Ubuntu, "{}"),
            (FeedKind::Csv, "id,release_date\n"),
            (FeedKind::Csv, ""),
        ];
        for (kind, text) in empties {
            let error = parse_document(kind, "feed", text).unwrap_err();
            assert_eq!(error.to_string(), "feed: no advisories found", "{kind} {text}");
        }
    }

    #[test]
    fn a_repeated_id_keeps_its_earliest_date_and_everything_it_lists() {
        let text = r#"[
            {"RHSA": "RHSA-2026:1", "released_on": "2026-02-01T00:00:00Z", "severity": null,
             "CVEs": ["CVE-2026-2"], "released_packages": ["a-1-1.el9.x86_64"]},
            {"RHSA": "RHSA-2026:2", "released_on": "2026-01-15T00:00:00Z"},
            {"RHSA": "RHSA-2026:1", "released_on": "2026-01-01T00:00:00Z", "severity": "low",
             "CVEs": ["CVE-2026-1", "CVE-2026-2"], "released_packages": ["b-1-1.el9.x86_64", "a-1-1.el9.x86_64"]}
        ]"#;
        let advisories = parse_document(FeedKind::RedHat, "page 1", text).unwrap();
        assert_eq!(advisories.len(), 2);
        let first = &advisories[0];
        assert_eq!((first.id.as_str(), first.released), ("RHSA-2026:1", t("2026-01-01T00:00:00Z")));
        assert_eq!(first.severity.as_deref(), Some("low"));
        assert_eq!(first.cves, ["CVE-2026-2", "CVE-2026-1"]);
        let names: Vec<&str> = first.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
