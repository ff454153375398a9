//! Vendor release dates from outside SSM: yum `updateinfo.xml` (what every RPM distribution
//! publishes: ALAS, RHSA, ...) and a plain CSV of `id,release_date`.
//!
//! Parsing is all-or-nothing: one malformed entry fails the whole file with its line, so an
//! import never leaves a half-applied set of dates behind.

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// One advisory's release date, and where in the file it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advisory {
    pub id: String,
    pub released: DateTime<Utc>,
    pub line: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct AdvisoryError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Parses a file by its content: XML (`updateinfo.xml`) when it starts with `<`, CSV otherwise.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Advisory>, AdvisoryError> {
    let file = path.display().to_string();
    let advisories = if text.trim_start().starts_with('<') {
        parse_updateinfo(&file, text)?
    } else {
        parse_csv(&file, text)?
    };
    if advisories.is_empty() {
        return Err(AdvisoryError { file, line: 1, message: "no advisories found".into() });
    }
    Ok(advisories)
}

/// `issued date` values seen in the wild: "2026-01-05 12:00:00", "2026-01-05 12:00",
/// "2026-01-05", RFC 3339, and (Fedora) epoch seconds. All are read as UTC.
fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Some(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    // Epoch seconds, but not a bare year or other short number that would mean 1970.
    text.parse::<i64>().ok().filter(|s| *s > 100_000_000).and_then(|s| DateTime::from_timestamp(s, 0))
}

fn parse_updateinfo(file: &str, text: &str) -> Result<Vec<Advisory>, AdvisoryError> {
    let error = |line: usize, message: String| AdvisoryError { file: file.to_string(), line, message };
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| error(e.pos().row as usize, format!("not valid XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "updates" {
        return Err(error(
            1,
            format!("expected an updateinfo document (<updates>), found <{}>", root.tag_name().name()),
        ));
    }
    let mut advisories = Vec::new();
    for update in root.children().filter(|n| n.has_tag_name("update")) {
        let line = doc.text_pos_at(update.range().start).row as usize;
        let child = |name: &str| update.children().find(|n| n.has_tag_name(name));
        let id = child("id")
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| error(line, "<update> has no <id>".into()))?;
        let issued = child("issued")
            .and_then(|n| n.attribute("date"))
            .ok_or_else(|| error(line, format!("advisory {id} has no <issued date=\"...\">")))?;
        let released = parse_date(issued)
            .ok_or_else(|| error(line, format!("advisory {id}: cannot read issued date `{issued}`")))?;
        advisories.push(Advisory { id: id.to_string(), released, line });
    }
    Ok(advisories)
}

/// One advisory per line: `id,release_date`, an optional header row, `#` comments, fields
/// optionally in double quotes. Ids and dates never contain commas, so a line is a record.
fn parse_csv(file: &str, text: &str) -> Result<Vec<Advisory>, AdvisoryError> {
    let error = |line: usize, message: String| AdvisoryError { file: file.to_string(), line, message };
    let mut advisories = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(|f| f.trim().trim_matches('"').trim()).collect();
        let [id, date] = fields[..] else {
            return Err(error(
                line,
                format!("expected two columns (id,release_date), found {}", fields.len()),
            ));
        };
        if advisories.is_empty() && id.eq_ignore_ascii_case("id") {
            continue;
        }
        if id.is_empty() {
            return Err(error(line, "empty advisory id".into()));
        }
        let released = parse_date(date).ok_or_else(|| {
            error(line, format!("cannot read release date `{date}` of {id}; write YYYY-MM-DD or RFC 3339"))
        })?;
        advisories.push(Advisory { id: id.to_string(), released, line });
    }
    Ok(advisories)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn ids_and_dates(advisories: &[Advisory]) -> Vec<(&str, DateTime<Utc>, usize)> {
        advisories.iter().map(|a| (a.id.as_str(), a.released, a.line)).collect()
    }

    const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update author="alas@amazon.com" from="alas@amazon.com" status="final" type="security" version="2.0">
    <id>ALAS2-2026-2741</id>
    <title>Amazon Linux 2 - ALAS2-2026-2741: important priority package update for openssl</title>
    <issued date="2026-10-02 19:30" />
    <updated date="2026-10-03 00:00" />
    <severity>important</severity>
    <references>
      <reference href="https://example.invalid/CVE-2026-1000" id="CVE-2026-1000" title="" type="cve" />
    </references>
  </update>
  <update status="final" type="security" version="1">
    <id>RHSA-2026:1234</id>
    <issued date="2026-09-15" />
  </update>
  <update status="final" type="bugfix" version="1">
    <id>FEDORA-2026-abc</id>
    <issued date="1767225600" />
  </update>
</updates>
"#;

    #[test]
    fn updateinfo_issued_dates() {
        let got = parse(Path::new("updateinfo.xml"), UPDATEINFO).unwrap();
        assert_eq!(
            ids_and_dates(&got),
            vec![
                ("ALAS2-2026-2741", t("2026-10-02T19:30:00Z"), 3),
                ("RHSA-2026:1234", t("2026-09-15T00:00:00Z"), 13),
                ("FEDORA-2026-abc", t("2026-01-01T00:00:00Z"), 17),
            ]
        );
    }

    #[test]
    fn updateinfo_errors_name_the_line() {
        let missing = UPDATEINFO.replace("<issued date=\"2026-09-15\" />", "");
        assert_eq!(
            parse(Path::new("u.xml"), &missing).unwrap_err().to_string(),
            "u.xml:13: advisory RHSA-2026:1234 has no <issued date=\"...\">"
        );
        let bad_date = UPDATEINFO.replace("2026-09-15", "15/09/2026");
        assert!(parse(Path::new("u.xml"), &bad_date)
            .unwrap_err()
            .to_string()
            .starts_with("u.xml:13: advisory RHSA-2026:1234: cannot read issued date"));
        let broken =
            UPDATEINFO.replace("</id>\n    <issued date=\"2026-09-15\"", "\n    <issued date=\"2026-09-15\"");
        assert!(parse(Path::new("u.xml"), &broken).unwrap_err().to_string().contains("not valid XML"));
        assert_eq!(parse(Path::new("u.xml"), "<rss/>").unwrap_err().line, 1);
    }

    #[test]
    fn csv_with_and_without_header() {
        let text = "id,release_date\nALAS2-2026-1,2026-01-05\n# a comment\n\"USN-7000-1\", 2026-02-01T10:00:00+01:00\n";
        let got = parse(Path::new("dates.csv"), text).unwrap();
        assert_eq!(
            ids_and_dates(&got),
            vec![
                ("ALAS2-2026-1", t("2026-01-05T00:00:00Z"), 2),
                ("USN-7000-1", t("2026-02-01T09:00:00Z"), 4)
            ]
        );
        let got = parse(Path::new("dates.csv"), "KB5031234,2026-03-10\n").unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse(Path::new("d.csv"), "id,release_date\nA,2026-01-01\nB,tomorrow\nC,2026-01-02\n")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.csv:3: cannot read release date `tomorrow` of B; write YYYY-MM-DD or RFC 3339"
        );
        let err = parse(Path::new("d.csv"), "A,2026-01-01,extra\n").unwrap_err();
        assert_eq!(err.line, 1);
        let err = parse(Path::new("d.csv"), "A\n").unwrap_err();
        assert_eq!(err.message, "expected two columns (id,release_date), found 1");
        assert_eq!(parse(Path::new("d.csv"), "").unwrap_err().message, "no advisories found");
    }
}
