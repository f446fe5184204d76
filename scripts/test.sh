#!/usr/bin/env bash
# The project's test command (README, and CI through .ci/run): formatting, lints with
# warnings denied, then every test. Needs only a Rust toolchain (rustup's stable with
# rustfmt and clippy).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --locked --all-targets
