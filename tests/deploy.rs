//! The monitoring shipped in `deploy/` names only metrics the gateway exports: every
//! `mssante_*` name in the alert rules, in their unit tests and in the Grafana dashboard is
//! a family defined in `src/metrics.rs` (with `_bucket`, `_sum` and `_count` for a
//! histogram). A renamed or misspelt metric fails here, instead of leaving an alert that
//! can never fire or a panel that stays empty.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mssante_gateway::metrics::Metrics;

/// What a family's name may be followed by in a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Histogram,
    Other,
}

/// The families `src/metrics.rs` defines: each string literal that is a metric name, a
/// histogram when the literal is the first argument of `HistogramOpts::new`.
fn defined_families(source: &str) -> BTreeMap<String, Kind> {
    let mut families = BTreeMap::new();
    let mut rest = source;
    let mut offset = 0;
    while let Some(i) = rest.find("\"mssante_") {
        let start = offset + i + 1;
        let literal: String = source[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        let end = start + literal.len();
        if source[end..].starts_with('"') {
            let before = source[..start - 1].trim_end();
            let kind = if before.ends_with("HistogramOpts::new(") {
                Kind::Histogram
            } else {
                Kind::Other
            };
            families.insert(literal, kind);
        }
        offset = end;
        rest = &source[end..];
    }
    families
}

/// The families a fresh registry exposes, with their `# TYPE`: those with series from
/// start-up (labelled families without a series yet are not rendered).
fn rendered_families() -> BTreeMap<String, Kind> {
    Metrics::new()
        .render()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| {
            let kind = if kind == "histogram" {
                Kind::Histogram
            } else {
                Kind::Other
            };
            (name.to_string(), kind)
        })
        .collect()
}

/// Every `mssante_` word of `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(i) = text[from..].find("mssante_") {
        let start = from + i;
        let glued =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        from = start + name.len();
        if !glued {
            names.insert(name);
        }
    }
    names
}

/// Whether `name` is a family of `families` or a histogram's series.
fn is_defined(name: &str, families: &BTreeMap<String, Kind>) -> bool {
    if families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| families.get(base) == Some(&Kind::Histogram))
    })
}

/// The text of a rules or rule-test file without its comment lines, where missing metrics
/// may be named on purpose ("needs metric ...").
fn without_comments(yaml: &str) -> String {
    yaml.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every string in a JSON document.
fn strings(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn families() -> BTreeMap<String, Kind> {
    let families = defined_families(&read("src/metrics.rs"));
    // The scan of the source must see what the registry renders, types included: were a
    // name ever built at run time, this would say so rather than let the checks below pass
    // on a partial list.
    for (name, kind) in rendered_families() {
        assert_eq!(
            families.get(&name),
            Some(&kind),
            "{name} is rendered by Metrics::new() as {kind:?} but the scan of src/metrics.rs finds {:?}",
            families.get(&name)
        );
    }
    families
}

fn assert_defined(file: &str, used: &BTreeSet<String>, families: &BTreeMap<String, Kind>) {
    assert!(
        used.len() >= 5,
        "{file}: only {used:?} found: is the scan broken?"
    );
    let unknown: Vec<&String> = used.iter().filter(|n| !is_defined(n, families)).collect();
    assert!(
        unknown.is_empty(),
        "{file} uses metrics that src/metrics.rs does not define: {unknown:?}\n(defined: {:?})",
        families.keys().collect::<Vec<_>>()
    );
}

#[test]
fn the_alert_rules_and_their_tests_use_only_exported_metrics() {
    let families = families();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
    ] {
        let used = metric_names(&without_comments(&read(file)));
        assert_defined(file, &used, &families);
    }
}

#[test]
fn the_dashboard_uses_only_exported_metrics() {
    let families = families();
    let file = "deploy/grafana/mssante-gateway.json";
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut texts = Vec::new();
    strings(&dashboard, &mut texts);
    let used: BTreeSet<String> = texts.iter().flat_map(|t| metric_names(t)).collect();
    assert_defined(file, &used, &families);
}

#[test]
fn the_checker_catches_a_misspelt_metric_and_a_suffix_on_a_non_histogram() {
    let families = families();
    assert_eq!(
        families.get("mssante_delivery_latency_seconds"),
        Some(&Kind::Histogram)
    );
    assert_eq!(
        families.get("mssante_outbound_failures_total"),
        Some(&Kind::Other)
    );
    let used = metric_names(
        "sum(rate(mssante_messages_deffered_total[5m])) / \
         histogram_quantile(0.99, rate(mssante_delivery_latency_seconds_bucket[1h])) \
         + mssante_queue_messages_count + {__name__=~\"mssante_reloads_total|x\"} \
         + not_mssante_at_all",
    );
    let unknown: BTreeSet<&str> = used
        .iter()
        .filter(|n| !is_defined(n, &families))
        .map(String::as_str)
        .collect();
    assert_eq!(
        unknown,
        BTreeSet::from([
            "mssante_messages_deffered_total",
            "mssante_queue_messages_count"
        ])
    );
    assert!(used.contains("mssante_reloads_total"));
    assert!(!used.iter().any(|n| n.starts_with("mssante_at")));
}
