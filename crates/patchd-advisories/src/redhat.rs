//! One page of the Red Hat Security Data API's CSAF index: a JSON array of errata, each with
//! its id under `RHSA` (RHBA and RHEA errata too), `released_on`, `severity`, `CVEs` and
//! `released_packages` as NEVRA strings.

use serde::Deserialize;
use serde_json::Value;

use crate::date::parse_date;
use crate::{push_missing, Advisory, FeedError, FixedPackage};

/// The fields read, each as loose JSON so that a wrong type is reported against its entry
/// rather than as a bare position in a page that is often one long line. The others
/// (`bugzillas`, `resource_url`...) are skipped without being stored.
#[derive(Deserialize)]
#[serde(expecting = "an erratum (a JSON object)")]
struct RawErratum {
    #[serde(rename = "RHSA")]
    id: Option<Value>,
    released_on: Option<Value>,
    severity: Option<Value>,
    #[serde(rename = "CVEs")]
    cves: Option<Value>,
    released_packages: Option<Value>,
}

pub(crate) fn parse(origin: &str, text: &str) -> Result<Vec<Advisory>, FeedError> {
    if !text.trim_start().starts_with('[') {
        return Err(FeedError::new(
            origin,
            "expected a JSON array of errata (a page of the Red Hat Security Data API's CSAF index)",
        ));
    }
    let errata: Vec<RawErratum> = serde_json::from_str(text).map_err(|e| crate::json_error(origin, &e))?;
    errata.into_iter().enumerate().map(|(index, erratum)| read_erratum(origin, index + 1, erratum)).collect()
}

fn read_erratum(origin: &str, number: usize, erratum: RawErratum) -> Result<Advisory, FeedError> {
    let id = match &erratum.id {
        Some(Value::String(id)) if !id.trim().is_empty() => id.trim(),
        Some(other) => {
            return Err(FeedError::new(
                format!("{origin}, entry {number}"),
                format!("RHSA is {other}, not an id"),
            ))
        }
        None => return Err(FeedError::new(format!("{origin}, entry {number}"), "no RHSA id")),
    };
    let error = |message: String| FeedError::new(format!("{origin}, entry {number} ({id})"), message);
    let released = match &erratum.released_on {
        Some(Value::String(date)) => {
            parse_date(date).ok_or_else(|| error(format!("cannot read released_on `{date}`")))?
        }
        Some(other) => return Err(error(format!("cannot read released_on {other}"))),
        None => return Err(error("no released_on date".into())),
    };
    let severity = match erratum.severity {
        Some(Value::String(severity)) if !severity.trim().is_empty() => Some(severity.trim().to_string()),
        None | Some(Value::String(_)) => None,
        Some(other) => return Err(error(format!("severity {other} is not a string"))),
    };
    let mut cves = Vec::new();
    for cve in strings(erratum.cves.as_ref()).map_err(|_| error("CVEs is not a list of strings".into()))? {
        push_missing(&mut cves, [cve.to_string()]);
    }
    let mut packages = Vec::new();
    let nevras = strings(erratum.released_packages.as_ref())
        .map_err(|_| error("released_packages is not a list of strings".into()))?;
    for nevra in nevras {
        let package = parse_nevra(nevra).ok_or_else(|| {
            error(format!("cannot read package `{nevra}` (expected name-[epoch:]version-release.arch)"))
        })?;
        push_missing(&mut packages, [package]);
    }
    Ok(Advisory { id: id.to_string(), released, severity, cves, packages })
}

/// The non-empty strings of a JSON array; null or absent is an empty list.
fn strings(value: Option<&Value>) -> Result<Vec<&str>, ()> {
    match value {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| match item {
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(Ok(s.trim())),
                _ => Some(Err(())),
            })
            .collect(),
        Some(_) => Err(()),
    }
}

/// `name-[epoch:]version-release.arch`, split from the right because names contain dashes
/// and dots (`java-17-openjdk-headless`, `python3.11`) while version, release and arch
/// contain no dash. An epoch written before the name (`1:openssl-3.0.7-27.el9.x86_64`, as
/// some tools print it) is accepted too.
pub(crate) fn parse_nevra(nevra: &str) -> Option<FixedPackage> {
    let (rest, arch) = nevra.rsplit_once('.')?;
    let (rest, release) = rest.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    let (epoch, version) = match version.split_once(':') {
        Some((epoch, version)) => (Some(epoch), version),
        None => (None, version),
    };
    let (epoch, name) = match (epoch, name.split_once(':')) {
        (None, Some((epoch, name))) => (Some(epoch), name),
        (_, None) => (epoch, name),
        (Some(_), Some(_)) => return None,
    };
    let is_number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let parts_present = [name, version, release, arch].iter().all(|part| !part.is_empty());
    if !parts_present || !epoch.is_none_or(is_number) || nevra.contains(char::is_whitespace) {
        return None;
    }
    Some(FixedPackage {
        name: name.to_string(),
        epoch: epoch.map(String::from),
        version: format!("{version}-{release}"),
        arch: Some(arch.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{package, t};
    use crate::{parse_document, FeedKind};

    const PAGE: &str = r#"[
  {"RHSA": "RHSA-2026:1234", "severity": "important", "released_on": "2026-10-02T19:30:12Z",
   "CVEs": ["CVE-2026-1000", "CVE-2026-1001"], "bugzillas": ["2201234"],
   "released_packages": ["openssl-1:3.0.7-27.el9_4.x86_64", "openssl-libs-1:3.0.7-27.el9_4.aarch64", "openssl-3.0.7-27.el9_4.src"],
   "resource_url": "https://access.redhat.com/hydra/rest/securitydata/csaf/RHSA-2026:1234.json"},
  {"RHSA": "RHBA-2026:1300", "severity": null, "released_on": "2026-10-03T01:00:00+02:00",
   "CVEs": [], "bugzillas": [], "released_packages": ["tzdata-2026a-1.el9.noarch"],
   "resource_url": "https://access.redhat.com/hydra/rest/securitydata/csaf/RHBA-2026:1300.json"},
  {"RHSA": "RHEA-2026:1301", "released_on": "2026-10-04T08:00:00"}
]"#;

    fn parse(text: &str) -> Result<Vec<Advisory>, String> {
        parse_document(FeedKind::RedHat, "page 3", text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_errata_of_every_type() {
        let errata = parse(PAGE).unwrap();
        let dates: Vec<_> =
            errata.iter().map(|a| (a.id.as_str(), a.released, a.severity.as_deref())).collect();
        assert_eq!(
            dates,
            [
                ("RHSA-2026:1234", t("2026-10-02T19:30:12Z"), Some("important")),
                ("RHBA-2026:1300", t("2026-10-02T23:00:00Z"), None),
                ("RHEA-2026:1301", t("2026-10-04T08:00:00Z"), None),
            ]
        );
        assert_eq!(errata[0].cves, ["CVE-2026-1000", "CVE-2026-1001"]);
        assert_eq!(
            errata[0].packages,
            [
                package("openssl", Some("1"), "3.0.7-27.el9_4", "x86_64"),
                package("openssl-libs", Some("1"), "3.0.7-27.el9_4", "aarch64"),
                package("openssl", None, "3.0.7-27.el9_4", "src"),
            ]
        );
        assert_eq!(errata[1].packages, [package("tzdata", None, "2026a-1.el9", "noarch")]);
        assert!(errata[2].cves.is_empty() && errata[2].packages.is_empty());
    }

    #[test]
    fn nevra_is_split_from_the_right() {
        let cases = [
            (
                "java-17-openjdk-headless-1:17.0.9.0.9-2.el9.x86_64",
                package("java-17-openjdk-headless", Some("1"), "17.0.9.0.9-2.el9", "x86_64"),
            ),
            ("python3.11-3.11.5-1.el9_3.aarch64", package("python3.11", None, "3.11.5-1.el9_3", "aarch64")),
            ("1:openssl-3.0.7-27.el9.x86_64", package("openssl", Some("1"), "3.0.7-27.el9", "x86_64")),
            ("kernel-5.14.0-362.8.1.el9_3.x86_64", package("kernel", None, "5.14.0-362.8.1.el9_3", "x86_64")),
        ];
        for (nevra, expected) in cases {
            assert_eq!(parse_nevra(nevra), Some(expected), "{nevra}");
        }
        for bad in [
            "openssl",
            "openssl-3.0.7.x86_64",
            "-3.0.7-1.x86_64",
            "openssl-3.0.7-1.",
            "a-x:1.0-1.x86_64",
            "1:a-2:1.0-1.x86_64",
            "a b-1-1.x86_64",
        ] {
            assert_eq!(parse_nevra(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_bad_entry_refuses_the_page_naming_it() {
        let entry =
            |json: &str| format!("[{{\"RHSA\": \"RHSA-2026:1\", \"released_on\": \"2026-01-01\"}}, {json}]");
        let cases = [
            (entry(r#"{"released_on": "2026-01-01"}"#), "page 3, entry 2: no RHSA id"),
            (entry(r#"{"RHSA": 12, "released_on": "2026-01-01"}"#), "page 3, entry 2: RHSA is 12, not an id"),
            (entry(r#"{"RHSA": "RHSA-2026:2"}"#), "page 3, entry 2 (RHSA-2026:2): no released_on date"),
            (
                entry(r#"{"RHSA": "RHSA-2026:2", "released_on": null}"#),
                "page 3, entry 2 (RHSA-2026:2): no released_on date",
            ),
            (
                entry(r#"{"RHSA": "RHSA-2026:2", "released_on": "last week"}"#),
                "page 3, entry 2 (RHSA-2026:2): cannot read released_on `last week`",
            ),
            (
                entry(r#"{"RHSA": "RHSA-2026:2", "released_on": 1767225600}"#),
                "page 3, entry 2 (RHSA-2026:2): cannot read released_on 1767225600",
            ),
            (
                entry(r#"{"RHSA": "RHSA-2026:2", "released_on": "2026-01-01", "CVEs": "CVE-2026-1"}"#),
                "page 3, entry 2 (RHSA-2026:2): CVEs is not a list of strings",
            ),
            (
                entry(r#"{"RHSA": "RHSA-2026:2", "released_on": "2026-01-01", "released_packages": ["openssl"]}"#),
                "page 3, entry 2 (RHSA-2026:2): cannot read package `openssl` (expected name-[epoch:]version-release.arch)",
            ),
            (
                entry(r#"{"RHSA": "RHSA-2026:2", "released_on": "2026-01-01", "severity": 3}"#),
                "page 3, entry 2 (RHSA-2026:2): severity 3 is not a string",
            ),
            (
                entry(r#""RHSA-2026:2""#),
                "page 3:1:68: invalid type: string \"RHSA-2026:2\", expected an erratum (a JSON object)",
            ),
            (
                "[{\"RHSA\": \"RHSA-2026:1\",\n \"released_on\": \"2026-01-01\"".into(),
                "page 3:2:28: not valid JSON: EOF while parsing an object",
            ),
            (
                r#"{"message": "rate limited"}"#.into(),
                "page 3: expected a JSON array of errata (a page of the Red Hat Security Data API's CSAF index)",
            ),
            ("[] trailing".into(), "page 3:1:4: not valid JSON: trailing characters"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(&text), Err(expected.to_string()), "{text}");
        }
    }
}
