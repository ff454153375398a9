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
