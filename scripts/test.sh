#!/usr/bin/env bash
# The project's test command (README, and CI through .ci/run): formatting, lints with
# warnings denied, then every test. Needs a Rust toolchain (rustup's stable with rustfmt
# and clippy) and promtool, which it installs with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool (Debian's prometheus package) checks the /metrics exposition and the alert
# rules in the tests.
if ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing promtool (Debian package prometheus)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    else
        echo "promtool is missing: install Debian's 'prometheus' package (it ships promtool), then run again" >&2
        exit 1
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --locked --all-targets
