//! The Ubuntu Security Team's USN database: one JSON object keyed by notice number, each value
//! a notice in the per-USN format. A single notice object (with its `id` and `releases`) is
//! read too, as an operator may import one.
//!
//! The database is large (a few hundred MB, mostly descriptions and download URLs), so it is
//! read in one streaming pass into just the fields used; everything else is skipped without
//! being stored.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::date::{from_epoch_seconds, parse_date};
use crate::{push_missing, Advisory, FeedError, FixedPackage};

/// Leaves are loose JSON so that a wrong type is reported against its notice.
#[derive(Default, Deserialize)]
#[serde(expecting = "a notice object")]
struct RawNotice {
    id: Option<Value>,
    timestamp: Option<Value>,
    cves: Option<Value>,
    releases: Option<BTreeMap<String, RawRelease>>,
}

#[derive(Deserialize)]
#[serde(expecting = "a release object")]
struct RawRelease {
    sources: Option<BTreeMap<String, RawPackage>>,
    binaries: Option<BTreeMap<String, RawPackage>>,
}

#[derive(Deserialize)]
#[serde(expecting = "a package object")]
struct RawPackage {
    version: Option<Value>,
}

enum Document {
    /// The notices, or the first problem with one.
    Database(Result<Vec<Advisory>, FeedError>),
    Single(RawNotice),
}

/// A value at the top level: a notice in a database, or any field of a single notice.
enum TopLevelValue {
    Notice(RawNotice),
    NotAnObject(&'static str),
}

pub(crate) fn parse(origin: &str, text: &str) -> Result<Vec<Advisory>, FeedError> {
    if !text.trim_start().starts_with('{') {
        return Err(FeedError::new(
            origin,
            "expected a USN database (a JSON object keyed by notice number) or a single USN object",
        ));
    }
    // The notice being read, to name it when the JSON under it is malformed.
    let reading = RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let document = DocumentSeed { origin, reading: &reading }
        .deserialize(&mut deserializer)
        .and_then(|document| deserializer.end().map(|()| document))
        .map_err(|e| {
            let mut error = crate::json_error(origin, &e);
            if let Some(key) = reading.borrow().as_deref() {
                error.message = format!("{} (in USN {})", error.message, notice_number(key));
            }
            error
        })?;
    match document {
        Document::Single(notice) => {
            let id = match &notice.id {
                Some(Value::String(id)) if !id.trim().is_empty() => id.trim().to_string(),
                Some(other) => {
                    return Err(FeedError::new(origin, format!("USN object's id {other} is not an id")))
                }
                None => return Err(FeedError::new(origin, "USN object has no id")),
            };
            Ok(vec![read_notice(origin, &id, notice)?])
        }
        Document::Database(notices) => notices,
    }
}

/// `7000-1` of `USN-7000-1` or of `7000-1`.
fn notice_number(key: &str) -> &str {
    let key = key.trim();
    key.strip_prefix("USN-").unwrap_or(key)
}

fn read_notice(origin: &str, key: &str, notice: RawNotice) -> Result<Advisory, FeedError> {
    let number = notice_number(key);
    if number.is_empty() {
        return Err(FeedError::new(origin, "a notice has an empty number"));
    }
    let error = |message: String| FeedError::new(format!("{origin}, USN {number}"), message);
    let released = match &notice.timestamp {
        Some(Value::Number(seconds)) => seconds.as_f64().and_then(from_epoch_seconds),
        Some(Value::String(text)) => parse_date(text),
        None | Some(Value::Null) => return Err(error("no timestamp".into())),
        Some(_) => None,
    };
    let released = released.ok_or_else(|| {
        error(format!("cannot read timestamp {}", notice.timestamp.as_ref().unwrap_or(&Value::Null)))
    })?;

    let mut cves = Vec::new();
    match notice.cves {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::String(item) = item else {
                    return Err(error("cves is not a list of strings".into()));
                };
                // The list mixes CVE ids with Launchpad bug URLs.
                if item.trim().starts_with("CVE-") {
                    push_missing(&mut cves, [item.trim().to_string()]);
                }
            }
        }
        Some(_) => return Err(error("cves is not a list of strings".into())),
    }

    let mut packages = Vec::new();
    for (release_name, release) in notice.releases.unwrap_or_default() {
        let listed =
            release.sources.unwrap_or_default().into_iter().chain(release.binaries.unwrap_or_default());
        for (name, package) in listed {
            let version = match package.version {
                Some(Value::String(version)) if !version.trim().is_empty() => version.trim().to_string(),
                _ => return Err(error(format!("release {release_name}: package {name} has no version"))),
            };
            push_missing(&mut packages, [FixedPackage { name, epoch: None, version, arch: None }]);
        }
    }

    Ok(Advisory { id: format!("USN-{number}"), released, severity: None, cves, packages })
}

struct DocumentSeed<'a> {
    origin: &'a str,
    reading: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Document, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for DocumentSeed<'_> {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a USN database (an object keyed by notice number)")
    }

    /// Notice numbers are never a notice's field names, so an `id` or `releases` key says the
    /// object is one notice rather than a database.
    ///
    /// Each notice is turned into an advisory as soon as it is read, so that the raw form of
    /// only one is held at a time. A problem with one is kept rather than returned: whether
    /// it matters is known only at the end, since a single notice's other fields may come
    /// before its `id`.
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut notices = Ok(Vec::new());
        let mut single = RawNotice::default();
        let mut is_single = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "id" => {
                    single.id = map.next_value()?;
                    is_single = true;
                }
                "releases" => {
                    single.releases = map.next_value()?;
                    is_single = true;
                }
                "timestamp" => single.timestamp = map.next_value()?,
                "cves" => single.cves = map.next_value()?,
                _ => {
                    self.reading.replace(Some(key.clone()));
                    let value = map.next_value::<TopLevelValue>()?;
                    self.reading.replace(None);
                    if notices.is_err() {
                        continue;
                    }
                    let read = match value {
                        TopLevelValue::Notice(notice) => read_notice(self.origin, &key, notice),
                        TopLevelValue::NotAnObject(found) => Err(FeedError::new(
                            format!("{}, USN {}", self.origin, notice_number(&key)),
                            format!("expected a notice object, found {found}"),
                        )),
                    };
                    match read {
                        Ok(advisory) => {
                            if let Ok(list) = &mut notices {
                                list.push(advisory);
                            }
                        }
                        Err(problem) => notices = Err(problem),
                    }
                }
            }
        }
        Ok(if is_single { Document::Single(single) } else { Document::Database(notices) })
    }
}

impl<'de> Deserialize<'de> for TopLevelValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TopLevelValueVisitor)
    }
}

struct TopLevelValueVisitor;

impl<'de> Visitor<'de> for TopLevelValueVisitor {
    type Value = TopLevelValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a notice object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TopLevelValue, A::Error> {
        RawNotice::deserialize(de::value::MapAccessDeserializer::new(map)).map(TopLevelValue::Notice)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevelValue, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(TopLevelValue::NotAnObject("an array"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevelValue, E> {
        Ok(TopLevelValue::NotAnObject("a string"))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevelValue, E> {
        Ok(TopLevelValue::NotAnObject("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevelValue, E> {
        Ok(TopLevelValue::NotAnObject("a number"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevelValue, E> {
        Ok(TopLevelValue::NotAnObject("a number"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevelValue, E> {
        Ok(TopLevelValue::NotAnObject("a number"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<TopLevelValue, E> {
        Ok(TopLevelValue::NotAnObject("null"))
    }
}

#[cfg(test)]
mod tests {
    use crate::tests::t;
    use crate::{parse_document, Advisory, FeedKind, FixedPackage};

    const DATABASE: &str = r#"{
  "7000-1": {"id": "USN-7000-1", "title": "OpenSSL vulnerabilities", "summary": "openssl vulnerabilities",
             "description": "It was discovered that OpenSSL incorrectly handled...", "action": "In general, a standard system update will make all the necessary changes.",
             "isummary": "Several security issues were fixed in OpenSSL.",
             "timestamp": 1789000000.123456,
             "cves": ["CVE-2026-1000", "https://launchpad.net/bugs/665531", "CVE-2026-1001"],
             "releases": {
               "noble": {"sources": {"openssl": {"version": "3.0.13-0ubuntu3.5", "description": "Secure Socket Layer (SSL) cryptography library"}},
                         "binaries": {"libssl3t64": {"pocket": "security", "version": "3.0.13-0ubuntu3.5"}, "openssl": {"pocket": "security", "version": "3.0.13-0ubuntu3.5"}},
                         "archs": {"amd64": {"urls": {"http://security.ubuntu.com/ubuntu/pool/main/o/openssl/libssl3t64_3.0.13-0ubuntu3.5_amd64.deb": {"md5": "0123", "size": 1900000}}}}},
               "jammy": {"sources": {"openssl": {"version": "3.0.2-0ubuntu1.18", "description": "Secure Socket Layer (SSL) cryptography library"}},
                         "binaries": {"libssl3": {"pocket": "security", "version": "3.0.2-0ubuntu1.18"}},
                         "archs": {}}
             }},
  "7001-1": {"title": "BIND vulnerability", "timestamp": 1789100000, "cves": ["CVE-2026-2000"],
             "releases": {"jammy": {"sources": {"bind9": {"version": "1:9.18.28-0ubuntu0.22.04.1"}}, "binaries": {"bind9": {"version": "1:9.18.28-0ubuntu0.22.04.1"}}}}},
  "7002-1": {"id": "7002-1", "timestamp": 1789200000, "cves": [], "releases": {}}
}"#;

    fn parse(text: &str) -> Result<Vec<Advisory>, String> {
        parse_document(FeedKind::Ubuntu, "database.json", text).map_err(|e| e.to_string())
    }

    fn package(name: &str, version: &str) -> FixedPackage {
        FixedPackage { name: name.into(), epoch: None, version: version.into(), arch: None }
    }

    #[test]
    fn reads_notices_with_every_release_package() {
        let notices = parse(DATABASE).unwrap();
        let dates: Vec<_> =
            notices.iter().map(|a| (a.id.as_str(), a.released, a.severity.as_deref())).collect();
        assert_eq!(
            dates,
            [
                ("USN-7000-1", t("2026-09-10T00:26:40.123456Z"), None),
                ("USN-7001-1", t("2026-09-11T04:13:20Z"), None),
                ("USN-7002-1", t("2026-09-12T08:00:00Z"), None),
            ]
        );
        assert_eq!(notices[0].cves, ["CVE-2026-1000", "CVE-2026-1001"], "bug URLs are not CVEs");
        assert_eq!(
            notices[0].packages,
            [
                package("openssl", "3.0.2-0ubuntu1.18"),
                package("libssl3", "3.0.2-0ubuntu1.18"),
                package("openssl", "3.0.13-0ubuntu3.5"),
                package("libssl3t64", "3.0.13-0ubuntu3.5"),
            ],
            "releases in name order, sources then binaries, each package version once"
        );
        assert_eq!(notices[1].packages, [package("bind9", "1:9.18.28-0ubuntu0.22.04.1")]);
        assert!(notices[2].packages.is_empty() && notices[2].cves.is_empty());
    }

    #[test]
    fn reads_a_single_notice() {
        let single = r#"{"a_field_patchd_does_not_know": {"jammy": ["curl"]}, "action": "update", "cves": ["CVE-2026-3000"], "description": "...", "id": "USN-7003-2",
                         "isummary": "...", "references": [], "releases": {"jammy": {"binaries": {"curl": {"version": "7.81.0-1ubuntu1.20"}}}},
                         "summary": "curl", "timestamp": "2026-09-13T00:00:00Z", "title": "curl vulnerability"}"#;
        let notices = parse(single).unwrap();
        assert_eq!(notices.len(), 1);
        assert_eq!((notices[0].id.as_str(), notices[0].released), ("USN-7003-2", t("2026-09-13T00:00:00Z")));
        assert_eq!(notices[0].packages, [package("curl", "7.81.0-1ubuntu1.20")]);
        assert_eq!(
            parse(r#"{"releases": {}, "timestamp": 1789000000}"#),
            Err("database.json: USN object has no id".into())
        );
    }

    #[test]
    fn one_bad_notice_refuses_the_database_naming_it() {
        let with =
            |notice: &str| format!("{{\"7000-1\": {{\"timestamp\": 1789000000}}, \"7004-1\": {notice}}}");
        let cases = [
            (with(r#"{"cves": []}"#), "database.json, USN 7004-1: no timestamp"),
            (with(r#"{"timestamp": null}"#), "database.json, USN 7004-1: no timestamp"),
            (with(r#"{"timestamp": "soon"}"#), "database.json, USN 7004-1: cannot read timestamp \"soon\""),
            (with(r#"{"timestamp": 0}"#), "database.json, USN 7004-1: cannot read timestamp 0"),
            (with(r#"{"timestamp": [1]}"#), "database.json, USN 7004-1: cannot read timestamp [1]"),
            (
                with(r#"{"timestamp": 1789000000, "cves": "CVE-1"}"#),
                "database.json, USN 7004-1: cves is not a list of strings",
            ),
            (
                with(r#"{"timestamp": 1789000000, "cves": [1]}"#),
                "database.json, USN 7004-1: cves is not a list of strings",
            ),
            (
                with(r#"{"timestamp": 1789000000, "releases": {"jammy": {"sources": {"curl": {"description": "x"}}}}}"#),
                "database.json, USN 7004-1: release jammy: package curl has no version",
            ),
            (with(r#""withdrawn""#), "database.json, USN 7004-1: expected a notice object, found a string"),
            (with(r#"[1, {"a": 2}]"#), "database.json, USN 7004-1: expected a notice object, found an array"),
            (
                with(r#"{"timestamp": 1789000000, "releases": {"jammy": "gone"}}"#),
                "database.json:1:102: invalid type: string \"gone\", expected a release object (in USN 7004-1)",
            ),
            (
                "{\"7000-1\": {\"timestamp\": 1789000000},\n \"7004-1\": {\"timestamp\": 17890".into(),
                "database.json:2:30: not valid JSON: EOF while parsing an object (in USN 7004-1)",
            ),
            (
                "{\"7000-1\": {\"timestamp\": 1789000000}} {}".into(),
                "database.json:1:39: not valid JSON: trailing characters",
            ),
            (
                "[]".into(),
                "database.json: expected a USN database (a JSON object keyed by notice number) or a single USN object",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(&text), Err(expected.to_string()), "{text}");
        }
    }
}
