//! The label values `src/` writes as literals for the counters are those `metrics::labels`
//! lists, and every value it lists is produced somewhere. Counting a series that is not
//! listed panics in debug builds, but only on a path a test takes; this reads the code, so
//! a reason on an untested path cannot slip through.
//!
//! A literal is read where the code writes a label:
//! - `reason: "x"`, `reason = "x"` (events, refusals, log fields): a `reason` of some family;
//! - `stage: "x"`, `stage = "x"`: a stage of `mssante_rejections_total`;
//! - the last argument of `Refusal::new(..)` and `command_error(..)`: a refusal reason;
//! - `.reject("stage", "reason")`: a pair of `mssante_rejections_total`;
//! - `.inc(&[..])` on a `ListedCounter`: a value of some family;
//! - the body of a function that returns a label (`fn ..reason..(..) -> &'static str`, and
//!   those of [`LABEL_FUNCTIONS`]): a value of some family.

#[path = "common/sources.rs"]
mod sources;

use std::collections::BTreeSet;
use std::path::Path;

use mssante_gateway::metrics::labels::{self, Family};

/// Functions that return a label and are not named after a reason: (file, name).
const LABEL_FUNCTIONS: &[(&str, &str)] = &[
    ("src/spool/mod.rs", "as_str"),
    ("src/autoreply.rs", "as_str"),
    ("src/relay/dsn.rs", "as_str"),
    ("src/inbound/mod.rs", "listener_name"),
    ("src/smtp/session.rs", "stage_of"),
];

/// The source files of `src/` but the registry itself, as (path from the crate root,
/// text without comment lines).
fn code() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    sources::rust_files(&root.join("src"))
        .into_iter()
        .map(|path| {
            let name = path
                .strip_prefix(root)
                .expect("below the root")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("source");
            let text: Vec<&str> = text
                .lines()
                .map(|l| {
                    if l.trim_start().starts_with("//") {
                        ""
                    } else {
                        l
                    }
                })
                .collect();
            (name, text.join("\n"))
        })
        .filter(|(name, _)| name != "src/metrics.rs")
        .collect()
}

/// A label-shaped value: lower case, digits and underscores.
fn is_label(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The string literal `text` starts with (after blanks), if it does.
fn literal(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    rest.get(..end)
}

/// The top-level arguments of the call whose `(` is at `open`, as text.
fn arguments(text: &str, open: usize) -> Vec<&str> {
    let mut args = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut start) = (0usize, false, false, open + 1);
    for (i, c) in text.char_indices().skip_while(|(i, _)| *i < open) {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    args.push(&text[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                args.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    args.retain(|a| !a.trim().is_empty());
    args
}

/// The body (from its `{` to the matching `}`) of each function named `name` returning
/// `&'static str`.
fn label_function_bodies(text: &str, name: impl Fn(&str) -> bool) -> Vec<&str> {
    let mut bodies = Vec::new();
    for (at, _) in text.match_indices("fn ") {
        let rest = &text[at + 3..];
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = rest.find('{') else { continue };
        let signature = &rest[..open];
        if !name(&ident) || !signature.contains("-> &'static str") {
            continue;
        }
        let mut depth = 0usize;
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        bodies.push(&rest[open..open + i + 1]);
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    bodies
}

/// Where `key` is written as a field or binding name (`key:` or `key =`, not `x_key:`),
/// the text after it.
fn after_key<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices(key) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = text[at + key.len()..].trim_start();
        if let Some(value) = rest
            .strip_prefix(':')
            .filter(|r| !r.starts_with(':'))
            .or_else(|| rest.strip_prefix('=').filter(|r| !r.starts_with('=')))
        {
            found.push(value);
        }
    }
    found
}

/// The values a family's label `name` takes.
fn values_of(family: &Family, name: &str) -> BTreeSet<&'static str> {
    let Some(i) = family.labels.iter().position(|l| *l == name) else {
        return BTreeSet::new();
    };
    family
        .series()
        .into_iter()
        .filter_map(|s| s.get(i).copied())
        .collect()
}

/// What the registry allows, by where a literal is read.
struct Registry {
    reasons: BTreeSet<&'static str>,
    stages: BTreeSet<&'static str>,
    refusals: BTreeSet<&'static str>,
    any: BTreeSet<&'static str>,
}

impl Registry {
    fn read() -> Registry {
        let families = labels::FAMILIES;
        let all = |name: &str| -> BTreeSet<&'static str> {
            families.iter().flat_map(|f| values_of(f, name)).collect()
        };
        Registry {
            reasons: all("reason"),
            stages: values_of(&labels::REJECTIONS, "stage"),
            refusals: values_of(&labels::REJECTIONS, "reason"),
            any: families.iter().flat_map(|f| f.series()).flatten().collect(),
        }
    }
}

/// The literals of `text` (a file of `path`) in label positions that the registry does
/// not list, each described, and all the literals read there.
fn unlisted<'a>(
    path: &str,
    text: &'a str,
    registry: &Registry,
) -> (Vec<String>, BTreeSet<&'a str>) {
    let mut wrong = Vec::new();
    let mut read = BTreeSet::new();
    let mut check = |value: Option<&'a str>, allowed: &dyn Fn(&str) -> bool, what: &str| {
        if let Some(v) = value.filter(|v| is_label(v)) {
            read.insert(v);
            if !allowed(v) {
                wrong.push(format!("{path}: {what} \"{v}\""));
            }
        }
    };
    let within = |set: &BTreeSet<&'static str>| {
        let set = set.clone();
        move |v: &str| set.contains(v)
    };
    for key in ["reason", "stage"] {
        let allowed = within(if key == "reason" {
            &registry.reasons
        } else {
            &registry.stages
        });
        for rest in after_key(text, key) {
            check(literal(rest), &allowed, key);
        }
    }
    for call in ["Refusal::new(", "command_error("] {
        for (at, _) in text.match_indices(call) {
            let args = arguments(text, at + call.len() - 1);
            let last = args.last().and_then(|a| literal(a));
            check(
                last,
                &within(&registry.refusals),
                call.trim_end_matches('('),
            );
        }
    }
    for (at, _) in text.match_indices(".reject(") {
        let args = arguments(text, at + ".reject(".len() - 1);
        if let [stage, reason] = args[..] {
            match (literal(stage), literal(reason)) {
                (Some(s), r @ Some(_)) => {
                    let pair = |r: &str| labels::REJECTIONS.has(&[s, r]);
                    check(r, &pair, &format!(".reject(\"{s}\", ..)"));
                }
                (s, r) => {
                    check(s, &within(&registry.stages), ".reject stage");
                    check(r, &within(&registry.refusals), ".reject reason");
                }
            }
        }
    }
    for (at, _) in text.match_indices(".inc(&[") {
        for arg in arguments(text, at + ".inc(&".len()) {
            check(literal(arg), &within(&registry.any), ".inc");
        }
    }
    let listed = |name: &str| name.contains("reason") || LABEL_FUNCTIONS.contains(&(path, name));
    for body in label_function_bodies(text, listed) {
        for piece in body.split('"').skip(1).step_by(2) {
            check(
                Some(piece),
                &within(&registry.any),
                "label function returns",
            );
        }
    }
    (wrong, read)
}

#[test]
fn every_label_literal_in_the_code_is_listed() {
    let registry = Registry::read();
    let files = code();
    assert!(files.len() > 50, "{} files read", files.len());
    let (mut wrong, mut read) = (Vec::new(), BTreeSet::new());
    for (path, text) in &files {
        let (w, r) = unlisted(path, text, &registry);
        wrong.extend(w);
        read.extend(r);
    }
    assert!(
        read.len() > 60,
        "only {} values read: the reader misses a form",
        read.len()
    );
    assert!(
        wrong.is_empty(),
        "label values not in metrics::labels (add them there and to docs/OPERATIONS.md \
         section 6.2, or fix the typo):\n{}",
        wrong.join("\n")
    );
}

/// A listed value that nothing produces any more would sit at 0 for ever, documented:
/// each is read in a label position of the code, or its constant is used there.
#[test]
fn every_listed_value_is_produced_somewhere() {
    let registry = Registry::read();
    let files = code();
    let mut produced: BTreeSet<String> = BTreeSet::new();
    for (path, text) in &files {
        produced.extend(
            unlisted(path, text, &registry)
                .1
                .into_iter()
                .map(str::to_string),
        );
    }
    for (name, value) in constants(&metrics_source()) {
        if files
            .iter()
            .any(|(_, text)| text.contains(&format!("labels::{name}")))
        {
            produced.insert(value);
        }
    }
    let stale: Vec<&str> = registry
        .any
        .iter()
        .copied()
        .filter(|v| !produced.contains(*v))
        .collect();
    assert!(
        stale.is_empty(),
        "listed in metrics::labels but produced nowhere in src/: {stale:?}"
    );
}

/// A constant is its value in capitals, so that a reader knows the label from the name.
#[test]
fn each_constant_is_named_after_its_value() {
    let source = metrics_source();
    let constants = constants(&source);
    assert!(constants.len() > 40, "{} constants read", constants.len());
    for (name, value) in constants {
        assert_eq!(name, value.to_uppercase(), "labels::{name}");
    }
}

#[test]
fn the_reader_finds_the_forms_it_checks() {
    let registry = Registry::read();
    let code = r#"
        Refusal::new(550, (5, 7, 1), format!("a, b"), "bogus_refusal")
        self.command_error(reply(501, (5, 5, 4), "Syntax"), "dn_not_listed")
        Event::Refused { stage: "nowhere", reason: "syntax_error" }
        tracing::info!(reason = "bogus_log", peer_reason = "ignored", "text")
        m.reject("data", "dn_not_listed");
        m.reject(stage, "bogus_stage_unknown");
        m.outbound_failures_total.inc(&["bogus_counted"]);
        pub fn reason(&self) -> &'static str { match self { A => "dns_temporary", B => "bogus_arm" } }
        fn other(&self) -> &'static str { "ignored_too" }
    "#;
    let (wrong, read) = unlisted("x.rs", code, &registry);
    assert_eq!(read.len(), 9, "{read:?}");
    assert_eq!(
        wrong,
        [
            "x.rs: reason \"bogus_log\"",
            "x.rs: stage \"nowhere\"",
            "x.rs: Refusal::new \"bogus_refusal\"",
            "x.rs: .reject(\"data\", ..) \"dn_not_listed\"",
            "x.rs: .reject reason \"bogus_stage_unknown\"",
            "x.rs: .inc \"bogus_counted\"",
            "x.rs: label function returns \"bogus_arm\"",
        ]
    );
}

/// The text of `src/metrics.rs`, the registry.
fn metrics_source() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/metrics.rs"))
        .expect("src/metrics.rs")
}

/// The `pub const NAME: &str = "value";` of the registry, as (name, value).
fn constants(source: &str) -> Vec<(String, String)> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| {
            let (name, rest) = l.split_once(": &str = ")?;
            Some((name.to_string(), literal(rest)?.to_string()))
        })
        .collect()
}
