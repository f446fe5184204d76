//! The library's top-level modules call each other one way only: a module that uses
//! another (`crate::x` in its code, comments aside) may not be used by it, directly or
//! through others. The README's module map describes the same layering.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[path = "common/sources.rs"]
mod sources;

/// The top-level module a file of `src/` belongs to (`None` for lib.rs, main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_string_lossy();
    let name = first.trim_end_matches(".rs");
    (!matches!(name, "lib" | "main")).then(|| name.to_string())
}

/// The modules `code` names as `crate::<module>`, comments left out.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// A cycle of the graph, if it has one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut c = path[i..].to_vec();
            c.push(node.to_string());
            return Some(c);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = sources::rust_files(&src);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        let code = std::fs::read_to_string(file).expect("source");
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses(&code).into_iter().filter(|m| *m != module));
    }
    assert!(graph.len() > 10, "modules found: {:?}", graph.keys());
    assert!(graph["gateway"].contains("relay"), "the scan sees uses");
    if let Some(c) = cycle(&graph) {
        panic!("module cycle: {}", c.join(" -> "));
    }
}

#[test]
fn the_checker_finds_a_cycle_and_ignores_comments() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.insert("a".into(), uses("use crate::b::X; // crate::c"));
    graph.insert("b".into(), uses("fn f() { crate::c::g() }"));
    graph.insert("c".into(), BTreeSet::new());
    assert_eq!(cycle(&graph), None);
    graph.insert("c".into(), uses("use crate::a;"));
    assert_eq!(
        cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
