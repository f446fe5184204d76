//! The JSON log as `serve` writes it (`log.format = "json"`), captured in a test process,
//! and the check of its lines against `docs/log-schema.json`.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

/// Kinds of the schema whose lines come from paths another test file drives: the
/// liste blanche downloads (tests/whitelist_refresh.rs).
pub const ELSEWHERE: &[&str] = &[
    "liste blanche downloaded",
    "liste blanche unchanged",
    "liste blanche refresh failed",
];

/// The records written so far, shared with the subscriber's writer.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs the JSON format of `serve`, at the filter a default configuration gives,
    /// for this thread while the guard lives: the tests that use it run on a
    /// current-thread runtime, so the gateway's tasks log here. (`cargo test` runs the
    /// tests of a file in one process, where another may have set the global subscriber.)
    pub fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = mssante_gateway::logging::json_subscriber(
            tracing_subscriber::EnvFilter::new("off,mssante_gateway=info"),
            move || writer.clone(),
        );
        (captured, tracing::subscriber::set_default(subscriber))
    }

    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        String::from_utf8(bytes)
            .expect("the log is UTF-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// `docs/log-schema.json`.
pub fn schema() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/log-schema.json"))
            .expect("docs/log-schema.json"),
    )
    .expect("the schema is JSON")
}

/// The titles of the schema's kinds of decision.
pub fn kinds() -> Vec<String> {
    schema()["allOf"]
        .as_array()
        .expect("allOf")
        .iter()
        .map(|k| k["title"].as_str().expect("a title").to_owned())
        .collect()
}

/// Checks every line against the schema (and that no value is a Rust debug string);
/// returns the kinds of decision seen.
pub fn check(lines: &[String]) -> BTreeSet<String> {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON schema");
    // Each kind of decision: its title, and the condition that recognises its lines.
    let kinds: Vec<(String, jsonschema::Validator)> = schema["allOf"]
        .as_array()
        .expect("allOf")
        .iter()
        .map(|k| {
            (
                k["title"].as_str().expect("a title").to_owned(),
                jsonschema::validator_for(&k["if"]).expect("a valid condition"),
            )
        })
        .collect();
    let mut seen = BTreeSet::new();
    for line in lines {
        let record: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let errors: Vec<String> = validator
            .iter_errors(&record)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{line}\n{}", errors.join("\n"));
        for (key, value) in record.as_object().expect("an object") {
            if let Some(text) = value.as_str() {
                assert!(
                    !text.starts_with("Some(") && text != "None" && !text.starts_with("[\""),
                    "{key} is a debug string: {line}"
                );
            }
        }
        for (title, condition) in &kinds {
            if condition.is_valid(&record) {
                seen.insert(title.clone());
            }
        }
    }
    seen
}
