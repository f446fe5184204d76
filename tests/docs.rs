//! The README's configuration reference against the parser: every key the parser accepts
//! has its row. The accepted keys are read from the parser itself: a configuration with
//! an unknown key in a section is refused with the list of that section's keys.
//!
//! The operations guide against the metrics: every value `metrics::labels` lists for a
//! counter's label has its row, with what it means and what to do.
mod common;

use mssante_gateway::config::Config;
use mssante_gateway::metrics::labels;

/// Sections of the reference, as TOML paths (`""`: the top level), and the keys inside
/// them that are tables documented by their own keys.
const SECTIONS: &[&str] = &[
    "",
    "tls",
    "tls.crl_sources",
    "inbound",
    "inbound.proxy_protocol",
    "spool",
    "whitelist",
    "policy",
    "submission",
    "submission.proxy_protocol",
    "metrics",
    "log",
    "relay",
    "dns",
    "outbound",
    "limits",
    "operator",
    "operator.legal_representative",
    "operator.project_lead",
    "operator.technical_lead",
    "operator.incident_contacts",
    "operator.domains",
];

const PROBE: &str = "zz_undocumented_probe";

/// A configuration where every section exists, so that each is parsed.
fn full_config(dir: &std::path::Path) -> toml::Table {
    let mut t = common::base_config(&dir.join("spool"));
    common::set(&mut t, "relay", "internal", "127.0.0.1:2526");
    common::set(&mut t, "submission", "listen", "127.0.0.1:2587");
    common::set(
        &mut t,
        "submission",
        "allow",
        toml::Value::Array(vec!["127.0.0.1".into()]),
    );
    for section in ["inbound", "submission"] {
        let table = t[section].as_table_mut().expect("section");
        table.insert("proxy_protocol".into(), toml::Table::new().into());
    }
    let mut source = toml::Table::new();
    source.insert("url".into(), "http://crl.example/ca.crl".into());
    source.insert(
        "file".into(),
        dir.join("ca.crl").to_string_lossy().into_owned().into(),
    );
    t["tls"].as_table_mut().expect("[tls]").insert(
        "crl_sources".into(),
        toml::Value::Array(vec![source.into()]),
    );
    // The operator section of the bundled test configuration, which has every field.
    let local: toml::Table = toml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/local.toml"))
            .expect("config/local.toml"),
    )
    .expect("config/local.toml is TOML");
    t.insert("operator".into(), local["operator"].clone());
    for s in ["policy", "metrics", "log", "dns", "outbound", "limits"] {
        t.entry(s).or_insert_with(|| toml::Table::new().into());
    }
    t
}

/// The keys the parser accepts in `section`, from its refusal of an unknown one.
fn accepted_keys(dir: &std::path::Path, section: &str) -> Vec<String> {
    let mut t = full_config(dir);
    let target = if section.is_empty() {
        &mut t
    } else {
        let mut at = &mut t;
        for part in section.split('.') {
            at = match at.get_mut(part).expect("section present") {
                toml::Value::Table(table) => table,
                toml::Value::Array(items) => items
                    .first_mut()
                    .and_then(|v| v.as_table_mut())
                    .expect("an array of tables"),
                other => panic!("{section}: {other:?}"),
            };
        }
        at
    };
    target.insert(PROBE.into(), 0.into());
    let text = toml::to_string(&t).expect("toml");
    let path = dir.join("gateway.toml");
    let errors = match Config::from_toml(&path, &text) {
        Ok(_) => panic!("{section}: an unknown key was accepted"),
        Err(e) => e.to_string(),
    };
    let line = errors
        .lines()
        .find(|l| l.contains(PROBE))
        .unwrap_or_else(|| panic!("{section}: no refusal of the probe in:\n{errors}"));
    let expected = line
        .split_once("expected ")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("{section}: {line}"));
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_configuration_key_has_a_row_in_the_readme() {
    let dir = tempfile::tempdir().expect("tempdir");
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    // The keys named in the first cell of each table row (a row may document two keys),
    // each with the names quoted in the rest of its row: a table's row may document its
    // keys inline (`operator.legal_representative`: `structure_name`, `name`...).
    let backticked = |text: &str| -> Vec<String> {
        text.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut documented: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for row in readme.lines().filter_map(|l| l.strip_prefix("| ")) {
        if let Some((first, rest)) = row.split_once(" | ") {
            for key in backticked(first) {
                documented.entry(key).or_default().extend(backticked(rest));
            }
        }
    }
    let is_documented = |path: &str| {
        documented.contains_key(path)
            || path.rsplit_once('.').is_some_and(|(table, key)| {
                documented
                    .get(table)
                    .is_some_and(|inline| inline.iter().any(|k| k == key))
            })
    };
    let mut missing = Vec::new();
    let mut checked = 0;
    for section in SECTIONS {
        let keys = accepted_keys(dir.path(), section);
        assert!(!keys.is_empty(), "{section}: no keys read");
        for key in keys {
            let path = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            // A key that is itself a section is checked as one.
            if SECTIONS.contains(&path.as_str()) {
                continue;
            }
            checked += 1;
            if !is_documented(&path) {
                missing.push(path);
            }
        }
    }
    assert!(checked > 60, "only {checked} keys read");
    assert!(
        missing.is_empty(),
        "configuration keys without a row in the README's reference: {missing:?}"
    );
}

/// The operations guide's section 6.2 explains every label value of `metrics::labels`: a
/// family's table sits under a heading that names it, with a row per value (first cell)
/// saying what happened and what to do; for a two-label family the second cell names the
/// values of the first label the row occurs with (the stages of a refusal reason).
#[test]
fn every_metric_label_value_has_a_row_in_the_operations_guide() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/OPERATIONS.md"))
        .expect("docs/OPERATIONS.md");
    let section = guide
        .split_once("### 6.2 ")
        .and_then(|(_, rest)| rest.split_once("\n### "))
        .map(|(section, _)| section)
        .expect("section 6.2 of the operations guide");
    // (heading, rows as cells) of each table below a `####` heading.
    let mut tables: Vec<(&str, Vec<Vec<&str>>)> = Vec::new();
    for line in section.lines() {
        if let Some(heading) = line.strip_prefix("#### ") {
            tables.push((heading, Vec::new()));
        } else if let (Some(row), Some((_, rows))) = (line.strip_prefix("| "), tables.last_mut()) {
            rows.push(row.trim_end_matches(" |").split(" | ").collect());
        }
    }
    let mut missing = Vec::new();
    for family in labels::FAMILIES {
        let name = format!("`{}`", family.name);
        let rows: Vec<&Vec<&str>> = tables
            .iter()
            .filter(|(heading, _)| heading.contains(&name))
            .flat_map(|(_, rows)| rows)
            .collect();
        for series in family.series() {
            let (value, with) = match series[..] {
                [value] => (value, None),
                [first, second] => (second, Some(first)),
                _ => panic!("{}: more than two labels", family.name),
            };
            let explained = rows.iter().any(|cells| {
                cells.first() == Some(&format!("`{value}`").as_str())
                    && with
                        .is_none_or(|w| cells.get(1).is_some_and(|c| c.contains(&format!("`{w}`"))))
                    && cells
                        .iter()
                        .skip(1)
                        .filter(|c| !c.trim().is_empty())
                        .count()
                        >= 2
            });
            if !explained {
                missing.push(match with {
                    Some(w) => format!("{} {value} ({w})", family.name),
                    None => format!("{} {value}", family.name),
                });
            }
        }
    }
    assert!(
        missing.is_empty(),
        "label values without a row (value, meaning, what to do) under a heading naming \
         their metric in docs/OPERATIONS.md section 6.2:\n{}",
        missing.join("\n")
    );
}
