//! An operator's own dates: one advisory per line, `id,release_date`, with an optional header
//! row, `#` comments and fields optionally in double quotes. Ids and dates never contain
//! commas, so a line is a record and no CSV quoting rules are needed.

use crate::date::parse_date;
use crate::{Advisory, FeedError};

pub(crate) fn parse(origin: &str, text: &str) -> Result<Vec<Advisory>, FeedError> {
    let error = |line: usize, message: String| FeedError::new(format!("{origin}:{line}"), message);
    let mut advisories = Vec::new();
    let mut header_allowed = true;
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
        if std::mem::take(&mut header_allowed) && id.eq_ignore_ascii_case("id") {
            continue;
        }
        if id.is_empty() {
            return Err(error(line, "empty advisory id".into()));
        }
        let released = parse_date(date).ok_or_else(|| {
            error(line, format!("cannot read release date `{date}` of {id}; write YYYY-MM-DD or RFC 3339"))
        })?;
        advisories.push(Advisory {
            id: id.to_string(),
            released,
            severity: None,
            cves: vec![],
            packages: vec![],
        });
    }
    Ok(advisories)
}

#[cfg(test)]
mod tests {
    use crate::tests::t;
    use crate::{parse_document, FeedKind};

    fn check(text: &str) -> Result<Vec<(String, String)>, String> {
        parse_document(FeedKind::Csv, "dates.csv", text)
            .map(|advisories| {
                advisories
                    .into_iter()
                    .map(|a| {
                        assert!(a.severity.is_none() && a.cves.is_empty() && a.packages.is_empty());
                        (a.id, a.released.to_rfc3339())
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    fn expect(pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        Ok(pairs.iter().map(|(id, date)| (id.to_string(), t(date).to_rfc3339())).collect())
    }

    #[test]
    fn with_and_without_header() {
        assert_eq!(
            check("id,release_date\nALAS2-2026-1,2026-01-05\n# a comment\n\n\"USN-7000-1\", 2026-02-01T10:00:00+01:00\n"),
            expect(&[("ALAS2-2026-1", "2026-01-05T00:00:00Z"), ("USN-7000-1", "2026-02-01T09:00:00Z")])
        );
        assert_eq!(check("KB5031234,2026-03-10 08:15\n"), expect(&[("KB5031234", "2026-03-10T08:15:00Z")]));
        assert_eq!(
            check("RHSA-2026:1,1767225600\r\nRHSA-2026:1,2025-12-01\r\n"),
            expect(&[("RHSA-2026:1", "2025-12-01T00:00:00Z")]),
            "CRLF lines; a repeated id keeps its earliest date"
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            check("id,release_date\nA,2026-01-01\nB,tomorrow\nC,2026-01-02\n"),
            Err("dates.csv:3: cannot read release date `tomorrow` of B; write YYYY-MM-DD or RFC 3339".into())
        );
        assert_eq!(
            check("A,2026-01-01,extra\n"),
            Err("dates.csv:1: expected two columns (id,release_date), found 3".into())
        );
        assert_eq!(
            check("\nA\n"),
            Err("dates.csv:2: expected two columns (id,release_date), found 1".into())
        );
        assert_eq!(check("\"\",2026-01-01\n"), Err("dates.csv:1: empty advisory id".into()));
        assert_eq!(
            check("A,2026-01-01\nid,release_date\n"),
            Err("dates.csv:2: cannot read release date `release_date` of id; write YYYY-MM-DD or RFC 3339"
                .into()),
            "a header is only a header on the first row"
        );
    }
}
