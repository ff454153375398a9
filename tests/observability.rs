//! The Grafana dashboard (deploy/grafana/patchd.json) and the Prometheus alert rules
//! (deploy/prometheus/alerts.yml, with their unit tests in alerts_test.yml) against the
//! metrics patchd really serves: every metric name and label their PromQL uses must be one
//! the daemon exports, so renaming a metric or a label breaks this test rather than a
//! dashboard or an alert in production.
//!
//! The rules are also run through `promtool check rules` and `promtool test rules` (each alert
//! fires on a synthetic series). That test skips when promtool is missing, unless
//! PATCHD_REQUIRE_PROMTOOL=1 (CI installs Debian's `prometheus` package with
//! `.ci/install-test-deps.sh`, which ships promtool).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::*;

/// Labels Prometheus attaches to every scraped sample: expressions may select and group by
/// them although patchd does not write them.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// What a scrape exports: each metric family and the label names its samples carry.
type Exported = BTreeMap<String, BTreeSet<String>>;

/// Families from the `# TYPE` lines, labels from the samples.
fn parse_exposition(text: &str) -> Exported {
    let mut exported = Exported::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split_whitespace().next().unwrap();
            exported.entry(name.to_string()).or_default();
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, _) = line.rsplit_once(' ').unwrap();
            let Some((name, labels)) = series.split_once('{') else { continue };
            // Label values are quoted and may hold commas: the names are what precedes `="`.
            for part in labels.split("\",") {
                if let Some((label, _)) = part.split_once("=\"") {
                    exported.entry(name.to_string()).or_default().insert(label.trim().to_string());
                }
            }
        }
    }
    exported
}

/// The label names each `sample(out, "patchd_...", &[("label", ...), ...], value)` call in
/// the metrics handler writes: `sample("name", &[(...)])` as the handler spells it, across
/// line breaks.
fn labels_in_source(source: &str) -> Exported {
    let mut exported = Exported::new();
    let mut rest = source;
    while let Some(at) = rest.find("\"patchd_") {
        rest = &rest[at + 1..];
        let name_end = rest.find('"').unwrap();
        let name = &rest[..name_end];
        let after = rest[name_end + 1..].trim_start();
        let Some(list) = after.strip_prefix(',').map(str::trim_start).and_then(|a| a.strip_prefix("&["))
        else {
            continue; // a `family(...)` call, or a name in a string
        };
        let list = &list[..list.find(']').unwrap()];
        let labels = exported.entry(name.to_string()).or_default();
        // `("label", value)` pairs, whose values may hold calls: the label opens each pair.
        let mut depth = 0;
        for (i, c) in list.char_indices() {
            match c {
                '(' => {
                    if depth == 0 {
                        let label =
                            list[i + 1..].trim_start().strip_prefix('"').and_then(|l| l.split('"').next());
                        labels.insert(label.expect("a label name as a string literal").to_string());
                    }
                    depth += 1;
                }
                ')' => depth -= 1,
                _ => {}
            }
        }
    }
    exported
}

/// A metric selector in a PromQL expression: the name and the labels its matchers name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    metric: String,
    matchers: Vec<String>,
}

/// What an expression refers to: its selectors, and the labels of its `by`, `without`, `on`,
/// `ignoring`, `group_left` and `group_right` clauses.
#[derive(Debug, Default, PartialEq, Eq)]
struct References {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// Words that are not metric names: operators, aggregations, keywords. Any other identifier
/// followed by `(` is a function; one that is not, a metric name.
const KEYWORDS: [&str; 22] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// A small PromQL scanner, enough for the expressions of the dashboard and the rules: it skips
/// strings, ranges (`[5m]`, `[$__range]`), numbers and durations, and fails on a selector it
/// cannot read rather than overlooking it.
fn references(expr: &str) -> References {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = References::default();
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let skip_ws = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let read_ident = |mut i: usize| {
        let start = i;
        while i < chars.len() && ident_char(chars[i]) {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    let skip_string = |mut i: usize| {
        let quote = chars[i];
        i += 1;
        while i < chars.len() && chars[i] != quote {
            i += if chars[i] == '\\' { 2 } else { 1 };
        }
        assert!(i < chars.len(), "unterminated string in {expr}");
        i + 1
    };
    // Whether the previous token was a metric name, which a `{` then belongs to.
    let mut after_metric = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '{' {
            assert!(after_metric, "a selector without a metric name in {expr}: name the metric");
            i += 1;
            loop {
                i = skip_ws(i);
                if chars[i] == '}' {
                    i += 1;
                    break;
                }
                let (label, next) = read_ident(i);
                assert!(!label.is_empty(), "cannot read the matchers of {expr}");
                refs.selectors.last_mut().unwrap().matchers.push(label);
                i = skip_ws(next);
                while matches!(chars[i], '=' | '!' | '~') {
                    i += 1;
                }
                i = skip_string(skip_ws(i));
                i = skip_ws(i);
                if chars[i] == ',' {
                    i += 1;
                }
            }
        } else if c == '$' {
            // A Grafana variable outside a string or a range: `$name` or `${name}`.
            i += 1;
            if chars.get(i) == Some(&'{') {
                while chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                i = read_ident(i).1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations: 0.1, 1e3, 2h, 1h30m.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if ident_start(c) {
            let (word, next) = read_ident(i);
            let peek = skip_ws(next);
            let call = chars.get(peek) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                i = next;
                if call {
                    let close = peek + chars[peek..].iter().position(|&c| c == ')').unwrap();
                    let list: String = chars[peek + 1..close].iter().collect();
                    refs.grouping
                        .extend(list.split(',').map(str::trim).filter(|l| !l.is_empty()).map(String::from));
                    i = close + 1;
                }
            } else if call || KEYWORDS.contains(&word.as_str()) {
                i = next;
            } else {
                refs.selectors.push(Selector { metric: word, matchers: Vec::new() });
                i = next;
                after_metric = true;
                continue;
            }
        } else {
            i += 1;
        }
        after_metric = false;
    }
    refs
}

/// One PromQL expression and where it comes from, with the labels a legend may use.
#[derive(Debug)]
struct Query {
    at: String,
    expr: String,
    legend: Option<String>,
}

/// The problems of `query` against `exported`: an unknown metric, or a label no metric of the
/// expression has.
fn check(query: &Query, exported: &Exported) -> Vec<String> {
    let mut problems = Vec::new();
    let refs = references(&query.expr);
    if refs.selectors.is_empty() {
        problems.push(format!("{}: no metric in `{}`", query.at, query.expr));
    }
    let mut known: BTreeSet<String> = TARGET_LABELS.iter().map(|l| l.to_string()).collect();
    for selector in &refs.selectors {
        let Some(labels) = exported.get(&selector.metric) else {
            problems.push(format!("{}: `{}` is not a metric patchd exports", query.at, selector.metric));
            continue;
        };
        for label in &selector.matchers {
            if !labels.contains(label) && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!(
                    "{}: `{}` has no label `{label}` (it has {labels:?})",
                    query.at, selector.metric
                ));
            }
        }
        known.extend(labels.iter().cloned());
    }
    for label in &refs.grouping {
        if !known.contains(label) {
            problems.push(format!("{}: groups by `{label}`, which none of its metrics has", query.at));
        }
    }
    let legend = query.legend.as_deref().unwrap_or("");
    for part in legend.split("{{").skip(1) {
        let label = part.split("}}").next().unwrap().trim();
        if !known.contains(label) {
            problems.push(format!("{}: the legend names `{label}`, which none of its metrics has", query.at));
        }
    }
    problems
}

/// Every query of the dashboard: the panels' targets (rows' collapsed panels included) and the
/// template variables' `label_values(selector, label)`.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<Query> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr =
                target["expr"].as_str().unwrap_or_else(|| panic!("panel {title}: a target with no expr"));
            let legend = target["legendFormat"].as_str().map(String::from);
            queries.push(Query {
                at: format!("dashboard panel \"{title}\""),
                expr: expr.to_string(),
                legend,
            });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap();
        let query = variable["query"]["query"].as_str().or(variable["query"].as_str()).unwrap();
        let inner =
            query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).unwrap_or_else(|| {
                panic!("variable {name}: only label_values(selector, label) is checked: {query}")
            });
        let (selector, label) = inner.rsplit_once(',').unwrap();
        // The label as a legend: it must be one of the selector's metric's.
        queries.push(Query {
            at: format!("dashboard variable ${name}"),
            expr: selector.trim().to_string(),
            legend: Some(format!("{{{{{}}}}}", label.trim())),
        });
    }
    queries
}

fn all_panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut panels = Vec::new();
    for panel in dashboard["panels"].as_array().expect("the dashboard has panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    panels
}

/// The `expr:` values of a rules file (inline, or a `>-` / `|` block), and the `series:` of
/// a unit-test file, each with the rule or test it belongs to. YAML read line by line: the
/// workspace has no YAML crate, and promtool checks the files' syntax.
fn yaml_queries(file: &str, text: &str) -> Vec<Query> {
    let lines: Vec<&str> = text.lines().collect();
    let mut queries = Vec::new();
    let mut rule = String::from("?");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(name) = trimmed.strip_prefix("- alert: ") {
            rule = name.trim().to_string();
        }
        let key = ["expr:", "- series:", "series:"].into_iter().find(|k| trimmed.starts_with(k));
        if let Some(key) = key {
            let value = trimmed[key.len()..].trim();
            let expr = if matches!(value, ">" | ">-" | "|" | "|-") {
                let mut block = Vec::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty()
                        || lines[i + 1].len() - lines[i + 1].trim_start().len() > indent)
                {
                    i += 1;
                    block.push(lines[i].trim());
                }
                block.join(" ")
            } else {
                value.trim_matches('\'').trim_matches('"').to_string()
            };
            let at = if key == "expr:" { format!("{file} rule {rule}") } else { format!("{file} series") };
            queries.push(Query { at, expr, legend: None });
        }
        i += 1;
    }
    queries
}

/// `GET /metrics` of a daemon on the fleet simulator with a fresh SQLite database, after a
/// manual scan recorded findings, a run and invocations.
fn scrape_a_daemon() -> String {
    let sim = Sim::start(300.0);
    let scratch = Scratch::new("observability");
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    scratch.write_config(&sim, &format!("listen = \"127.0.0.1:{port}\""), "");
    let scan = scan_at_full_speed(&scratch, &["web"]);
    assert!(scan.status.success(), "{}", stderr(&scan));
    let daemon = start_daemon(&scratch, 1, &[]);
    let metrics = wait_for(
        "/metrics to answer 200",
        Duration::from_secs(40),
        || get(addr, "/metrics", None).filter(|a| a.status == 200),
        || scratch.read_log(1),
    );
    assert!(stop_daemon(daemon).success(), "{}", scratch.read_log(1));
    metrics.body
}

/// Every metric and label the dashboard and the rules query is one patchd exports.
///
/// The exported set comes from what the daemon serves: a scrape of `patchd run` against a
/// fresh database after a manual scan. Every family's `# TYPE` line is in every scrape, even
/// while it has no sample (the latest sync's before the first sync, a feed's last success
/// before one), so the metric names come from the scrape alone. Labels are read from the
/// samples; a family with no sample here (no feed configured, an empty sync backlog, which is
/// one unlabelled 0) takes its label names from the `sample(...)` calls of the metrics
/// handler's source instead.
#[test]
fn the_dashboard_and_the_rules_query_only_what_patchd_exports() {
    let text = scrape_a_daemon();
    let mut exported = parse_exposition(&text);
    assert!(exported.len() >= 25, "a scrape with every family: {text}");
    let source = labels_in_source(&read("crates/patchd/src/http/metrics.rs"));
    for (name, labels) in &source {
        assert!(
            exported.contains_key(name),
            "the handler writes samples of {name}, the scrape has no family"
        );
        if exported[name].is_empty() {
            exported.get_mut(name).unwrap().extend(labels.iter().cloned());
        }
    }

    let dashboard: serde_json::Value = serde_json::from_str(&read("deploy/grafana/patchd.json")).unwrap();
    let mut queries = dashboard_queries(&dashboard);
    let dashboard_count = queries.len();
    queries.extend(yaml_queries("alerts.yml", &read("deploy/prometheus/alerts.yml")));
    let rules_count = queries.len() - dashboard_count;
    queries.extend(yaml_queries("alerts_test.yml", &read("deploy/prometheus/alerts_test.yml")));
    assert!(
        dashboard_count >= 30 && rules_count >= 10,
        "{dashboard_count} dashboard queries, {rules_count} rules"
    );

    let problems: Vec<String> = queries.iter().flat_map(|q| check(q, &exported)).collect();
    assert!(problems.is_empty(), "{}\n\nexported: {exported:#?}", problems.join("\n"));

    // And the check can fail: a renamed metric, an unknown label, a legend of neither.
    let renamed = Query { at: "probe".into(), expr: "sum(patchd_open_finding)".into(), legend: None };
    assert_eq!(check(&renamed, &exported).len(), 1);
    let label = Query {
        at: "probe".into(),
        expr: "max by (group) (patchd_open_findings{rank=\"critical\",region=\"x\"})".into(),
        legend: Some("{{platform}}".into()),
    };
    assert_eq!(check(&label, &exported).len(), 3, "{:?}", check(&label, &exported));
}

#[test]
fn the_scanner_reads_selectors_grouping_and_skips_strings_ranges_and_variables() {
    let refs = references(
        "sum by (service, operation) (rate(patchd_aws_api_calls_total{job=~\"$job\", service='S{x}'}[$__rate_interval])) \
         / on (job) group_left (version) patchd_build_info offset 1h > 0.5 and time() - patchd_start_time_seconds > 2h",
    );
    let names: Vec<&str> = refs.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["patchd_aws_api_calls_total", "patchd_build_info", "patchd_start_time_seconds"]);
    assert_eq!(refs.selectors[0].matchers, ["job", "service"]);
    assert_eq!(refs.grouping, ["service", "operation", "job", "version"]);
    assert_eq!(references("absent(patchd_build_info)").selectors.len(), 1);
    assert!(references("time() - 5").selectors.is_empty());
}

#[test]
fn the_dashboard_is_json_with_unique_panel_ids_and_imports_anywhere() {
    let dashboard: serde_json::Value = serde_json::from_str(&read("deploy/grafana/patchd.json")).unwrap();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36, "a current schema");
    let input = &dashboard["__inputs"][0];
    assert_eq!(
        (input["name"].as_str(), input["pluginId"].as_str()),
        (Some("DS_PROMETHEUS"), Some("prometheus"))
    );
    let mut ids = BTreeSet::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        let id = panel["id"].as_u64().unwrap_or_else(|| panic!("panel {title} has no id"));
        assert!(ids.insert(id), "panel id {id} ({title}) is used twice");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "panel {title} has no gridPos");
        // Every datasource is the import's input, never a uid of the machine it was made on.
        let mut sources = vec![&panel["datasource"]];
        sources.extend(panel["targets"].as_array().into_iter().flatten().map(|t| &t["datasource"]));
        for source in sources.into_iter().filter(|s| !s.is_null()) {
            assert_eq!(source["uid"], "${DS_PROMETHEUS}", "panel {title}");
        }
    }
    // The brief's sections are there.
    let titles: Vec<&str> = all_panels(&dashboard).iter().filter_map(|p| p["title"].as_str()).collect();
    for row in [
        "SLA",
        "Window runs",
        "Coverage",
        "Compliance sync",
        "AWS API",
        "Scheduler and leadership",
        "Advisory feeds",
    ] {
        assert!(titles.contains(&row), "no row {row}: {titles:?}");
    }
}

/// Each alert of alerts.yml says what happened and what to do, and a unit test of
/// alerts_test.yml expects it to fire.
#[test]
fn every_alert_has_a_summary_a_description_and_a_firing_test() {
    let rules = read("deploy/prometheus/alerts.yml");
    let tests = read("deploy/prometheus/alerts_test.yml");
    assert!(!rules.contains('\t') && !tests.contains('\t'), "YAML forbids tabs for indentation");
    let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert!(blocks.len() >= 8, "{} alerts", blocks.len());
    let test_lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for block in blocks {
        let name = block.lines().next().unwrap().trim();
        for key in ["expr:", "severity:", "summary:", "description:"] {
            assert!(block.contains(key), "alert {name} has no {key}");
        }
        let fires = test_lines.windows(3).any(|w| {
            w[0] == format!("alertname: {name}") && w[1] == "exp_alerts:" && w[2].starts_with("- exp_labels:")
        });
        assert!(fires, "alerts_test.yml has no test where {name} fires");
    }
}

/// Where promtool is, or None with the reason printed; a failure under
/// PATCHD_REQUIRE_PROMTOOL=1, as CI sets it.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|dir| dir.join("promtool")).find(|candidate| candidate.is_file())
    });
    if found.is_some() {
        return found;
    }
    if std::env::var("PATCHD_REQUIRE_PROMTOOL").is_ok_and(|v| v == "1") {
        panic!("promtool is missing and PATCHD_REQUIRE_PROMTOOL=1: run PATCHD_INSTALL_PROMTOOL=1 .ci/install-test-deps.sh");
    }
    // Straight to stderr: libtest captures eprintln! of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipping: promtool is missing (PATCHD_INSTALL_PROMTOOL=1 .ci/install-test-deps.sh installs Debian's prometheus package)"
    );
    None
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else { return };
    let root = workspace_root();
    for args in [
        ["check", "rules", "deploy/prometheus/alerts.yml"],
        ["test", "rules", "deploy/prometheus/alerts_test.yml"],
    ] {
        let out = Command::new(&promtool).args(args).current_dir(&root).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
