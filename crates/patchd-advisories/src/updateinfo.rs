//! yum's `updateinfo.xml`: `<updates>` of `<update>`, each with its `<id>`, `<issued date>`,
//! optional `<severity>`, `<references>` (CVEs among them) and `<pkglist>`.

use roxmltree::{Document, Node};

use crate::date::parse_date;
use crate::{push_missing, Advisory, FeedError, FixedPackage};

pub(crate) fn parse(origin: &str, text: &str) -> Result<Vec<Advisory>, FeedError> {
    let document = Document::parse(text)
        .map_err(|e| FeedError::new(format!("{origin}:{}", e.pos().row), format!("not valid XML: {e}")))?;
    let root = document.root_element();
    if root.tag_name().name() != "updates" {
        return Err(FeedError::new(
            format!("{origin}:{}", line_of(&document, root)),
            format!("expected an updateinfo document (<updates>), found <{}>", root.tag_name().name()),
        ));
    }
    root.children()
        .filter(|n| n.has_tag_name("update"))
        .map(|update| read_update(origin, &document, update))
        .collect()
}

/// Lines are found only for errors: roxmltree counts them from the start of the text, which
/// would make a large feed quadratic.
fn line_of(document: &Document, node: Node) -> u32 {
    document.text_pos_at(node.range().start).row
}

fn read_update(origin: &str, document: &Document, update: Node) -> Result<Advisory, FeedError> {
    let error = |message: String| FeedError::new(format!("{origin}:{}", line_of(document, update)), message);
    let id = child_text(update, "id").ok_or_else(|| error("<update> has no <id>".into()))?;
    let issued = child(update, "issued")
        .and_then(|n| n.attribute("date"))
        .ok_or_else(|| error(format!("advisory {id} has no <issued date=\"...\">")))?;
    let released = parse_date(issued)
        .ok_or_else(|| error(format!("advisory {id}: cannot read issued date `{issued}`")))?;

    let mut cves = Vec::new();
    let references = child(update, "references").into_iter().flat_map(|r| r.children());
    for reference in references.filter(|n| n.has_tag_name("reference")) {
        let is_cve = reference.attribute("type").is_some_and(|t| t.eq_ignore_ascii_case("cve"));
        match reference.attribute("id").map(str::trim) {
            Some(cve) if is_cve && !cve.is_empty() => push_missing(&mut cves, [cve.to_string()]),
            _ => {}
        }
    }

    let mut packages = Vec::new();
    let collections = child(update, "pkglist").into_iter().flat_map(|p| p.children());
    for collection in collections.filter(|n| n.has_tag_name("collection")) {
        for package in collection.children().filter(|n| n.has_tag_name("package")) {
            let package = read_package(package).map_err(|message| {
                FeedError::new(
                    format!("{origin}:{}", line_of(document, package)),
                    format!("advisory {id}: {message}"),
                )
            })?;
            push_missing(&mut packages, [package]);
        }
    }

    Ok(Advisory {
        id: id.to_string(),
        released,
        severity: child_text(update, "severity").map(String::from),
        cves,
        packages,
    })
}

fn read_package(package: Node) -> Result<FixedPackage, String> {
    let attribute = |name: &str| package.attribute(name).map(str::trim).filter(|v| !v.is_empty());
    let name = attribute("name").ok_or("<package> has no name")?;
    let version = attribute("version").ok_or_else(|| format!("package {name} has no version"))?;
    let version = match attribute("release") {
        Some(release) => format!("{version}-{release}"),
        None => version.to_string(),
    };
    Ok(FixedPackage {
        name: name.to_string(),
        epoch: attribute("epoch").map(String::from),
        version,
        arch: attribute("arch").map(String::from),
    })
}

fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children().find(|n| n.has_tag_name(name))
}

fn child_text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name).and_then(|n| n.text()).map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use crate::tests::{package, t};
    use crate::{parse_document, Advisory, FeedKind};

    const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update author="alas@amazon.com" from="alas@amazon.com" status="final" type="security" version="2.0">
    <id>ALAS2023-2026-123</id>
    <title>Amazon Linux 2023 - ALAS2023-2026-123: important priority package update for openssl</title>
    <issued date="2026-10-02 19:30:12" />
    <updated date="2026-10-03 00:00:00" />
    <severity>important</severity>
    <description>Package updates are available for Amazon Linux 2023 that fix the following vulnerabilities: CVE-2026-1000, CVE-2026-1001</description>
    <references>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2026-1000" id="CVE-2026-1000" title="" type="cve" />
      <reference href="https://bugzilla.example/2201234" id="2201234" title="" type="bugzilla" />
      <reference href="https://www.cve.org/CVERecord?id=CVE-2026-1001" id="CVE-2026-1001" title="" type="cve" />
    </references>
    <pkglist>
      <collection short="amazon-linux-2023---amazonlinux">
        <name>Amazon Linux 2023</name>
        <package name="openssl" epoch="1" version="3.0.8" release="1.amzn2023.0.3" arch="x86_64">
          <filename>Packages/openssl-3.0.8-1.amzn2023.0.3.x86_64.rpm</filename>
        </package>
        <package name="openssl-libs" epoch="1" version="3.0.8" release="1.amzn2023.0.3" arch="aarch64">
          <filename>Packages/openssl-libs-3.0.8-1.amzn2023.0.3.aarch64.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
  <update status="final" type="bugfix" version="1">
    <id>ALAS2023-2026-124</id>
    <issued date="2026-10-05 08:00" />
    <references />
    <pkglist><collection short="x"><package name="tzdata" version="2026a" release="1.amzn2023" arch="noarch"/></collection></pkglist>
  </update>
  <update status="final" type="enhancement" version="1">
    <id>ALAS2023-2026-125</id>
    <issued date="2026-10-06" />
  </update>
  <update status="final" type="security" version="1">
    <id>ALAS2023-2026-126</id>
    <issued date="2026-10-07T10:00:00Z" />
  </update>
  <update status="final" type="bugfix" version="1">
    <id>FEDORA-2026-abc</id>
    <issued date="1767225600" />
  </update>
</updates>
"#;

    fn parse(text: &str) -> Result<Vec<Advisory>, String> {
        parse_document(FeedKind::AmazonLinux, "updateinfo.xml", text).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_dates_severity_cves_and_packages() {
        let advisories = parse(UPDATEINFO).unwrap();
        let dates: Vec<_> = advisories.iter().map(|a| (a.id.as_str(), a.released)).collect();
        assert_eq!(
            dates,
            [
                ("ALAS2023-2026-123", t("2026-10-02T19:30:12Z")),
                ("ALAS2023-2026-124", t("2026-10-05T08:00:00Z")),
                ("ALAS2023-2026-125", t("2026-10-06T00:00:00Z")),
                ("ALAS2023-2026-126", t("2026-10-07T10:00:00Z")),
                ("FEDORA-2026-abc", t("2026-01-01T00:00:00Z")),
            ]
        );
        let openssl = &advisories[0];
        assert_eq!(openssl.severity.as_deref(), Some("important"));
        assert_eq!(openssl.cves, ["CVE-2026-1000", "CVE-2026-1001"]);
        assert_eq!(
            openssl.packages,
            [
                package("openssl", Some("1"), "3.0.8-1.amzn2023.0.3", "x86_64"),
                package("openssl-libs", Some("1"), "3.0.8-1.amzn2023.0.3", "aarch64"),
            ]
        );
        let tzdata = &advisories[1];
        assert_eq!((tzdata.severity.as_deref(), tzdata.cves.len()), (None, 0));
        assert_eq!(tzdata.packages, [package("tzdata", None, "2026a-1.amzn2023", "noarch")]);
        assert!(advisories[2].packages.is_empty());
    }

    #[test]
    fn one_bad_update_refuses_the_document_with_its_line() {
        let cases = [
            (UPDATEINFO.replace("<id>ALAS2023-2026-125</id>", ""), "updateinfo.xml:33: <update> has no <id>"),
            (
                UPDATEINFO.replace("<issued date=\"2026-10-06\" />", ""),
                "updateinfo.xml:33: advisory ALAS2023-2026-125 has no <issued date=\"...\">",
            ),
            (
                UPDATEINFO.replace("2026-10-06", "06/10/2026"),
                "updateinfo.xml:33: advisory ALAS2023-2026-125: cannot read issued date `06/10/2026`",
            ),
            (
                UPDATEINFO.replace("<package name=\"tzdata\" ", "<package "),
                "updateinfo.xml:31: advisory ALAS2023-2026-124: <package> has no name",
            ),
            (
                UPDATEINFO.replace("name=\"tzdata\" version=\"2026a\"", "name=\"tzdata\""),
                "updateinfo.xml:31: advisory ALAS2023-2026-124: package tzdata has no version",
            ),
            (
                "<rss version=\"2.0\"/>".into(),
                "updateinfo.xml:1: expected an updateinfo document (<updates>), found <rss>",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(&text), Err(expected.to_string()));
        }
    }

    #[test]
    fn malformed_xml_is_refused() {
        let broken =
            UPDATEINFO.replace("</id>\n    <issued date=\"2026-10-06\"", "\n    <issued date=\"2026-10-06\"");
        let error = parse(&broken).unwrap_err();
        assert!(error.starts_with("updateinfo.xml:") && error.contains("not valid XML"), "{error}");
        let truncated = &UPDATEINFO[..UPDATEINFO.len() / 2];
        assert!(parse(truncated).unwrap_err().contains("not valid XML"));
        assert!(parse("").unwrap_err().contains("not valid XML"));
        let doctype = "<!DOCTYPE updates [<!ENTITY a \"aaaa\">]><updates/>";
        assert!(
            parse(doctype).unwrap_err().contains("not valid XML"),
            "no DTD, so no entity expansion bombs"
        );
    }
}
