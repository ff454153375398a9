//! The CISA Known Exploited Vulnerabilities catalog: the CVEs known to be exploited in the
//! wild. A patch that fixes one of them is ranked critical, whatever its vendor severity.

use std::collections::HashSet;

use serde::Deserialize;

/// The CVE ids of a KEV catalog, for fast membership tests.
#[derive(Debug, Clone, Default)]
pub struct KevCatalog {
    cves: HashSet<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the KEV catalog is not valid CISA KEV JSON: {0}; download it from CISA's known_exploited_vulnerabilities.json feed")]
pub struct KevError(#[from] serde_json::Error);

#[derive(Deserialize)]
struct CatalogFile {
    vulnerabilities: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "cveID")]
    cve_id: String,
}

impl KevCatalog {
    /// Parses the catalog's JSON (`{"vulnerabilities": [{"cveID": ...}, ...]}`); other fields
    /// (`dateAdded`, `dueDate`, ...) are ignored.
    pub fn from_json(text: &str) -> Result<KevCatalog, KevError> {
        let file: CatalogFile = serde_json::from_str(text)?;
        Ok(KevCatalog {
            cves: file.vulnerabilities.into_iter().map(|e| e.cve_id.to_ascii_uppercase()).collect(),
        })
    }

    pub fn from_cves<I: IntoIterator<Item = S>, S: AsRef<str>>(cves: I) -> KevCatalog {
        KevCatalog { cves: cves.into_iter().map(|c| c.as_ref().to_ascii_uppercase()).collect() }
    }

    pub fn contains(&self, cve: &str) -> bool {
        self.cves.contains(&cve.to_ascii_uppercase())
    }

    pub fn len(&self) -> usize {
        self.cves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cves.is_empty()
    }
}

/// The KEV catalog a configuration names, with why it could not be read when it could not.
#[derive(Debug, Clone, Default)]
pub struct LoadedKev {
    pub catalog: KevCatalog,
    /// Set when a catalog is configured but unreadable (missing, not fetched yet, malformed).
    pub problem: Option<String>,
}

/// Reads the configured KEV catalog: the file, or for a URL the last good copy the feeds keep.
///
/// One policy for every surface (reports, API, metrics, events), so that a finding never gets
/// two ranks: a catalog that cannot be read ranks nothing critical by KEV, and the caller says
/// so (a warning, a log line); it never fails a report, since the other ranks still hold.
pub fn load_kev(config: &patchd_config::Config) -> LoadedKev {
    let Some(path) = config.kev_file() else { return LoadedKev::default() };
    let read = std::fs::read_to_string(&path).map_err(|e| match &config.sla.kev_catalog {
        Some(patchd_config::FeedLocation::Http(url)) => format!(
            "no copy of the KEV catalog {url} yet ({}: {e}); `patchd advisories sync --source kev` fetches it",
            path.display()
        ),
        _ => format!("cannot read the KEV catalog {} ([sla] kev_catalog): {e}", path.display()),
    });
    match read.and_then(|text| KevCatalog::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))) {
        Ok(catalog) => LoadedKev { catalog, problem: None },
        Err(problem) => LoadedKev { catalog: KevCatalog::default(), problem: Some(problem) },
    }
}
