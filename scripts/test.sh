#!/usr/bin/env bash
# The project's test command (README, and CI through .ci/run): formatting, lints with
# warnings denied, then every test. Needs a Rust toolchain (rustup's stable with rustfmt
# and clippy), promtool, xmlsec1, postfix, haproxy and systemd-analyze, which it installs
# with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: promtool (package prometheus) checks the /metrics
# exposition and the alert rules; xmlsec1 is the independent XMLDSig verifier that the
# liste blanche's signature check is compared with (tests/whitelist_forgery.rs); postfix
# plays a stock internal mail server (tests/addresses.rs) in a throw-away instance of its
# own (the system one is left unconfigured); haproxy balances two gateways with the PROXY
# protocol in tests/fleet.rs (its own process and configuration, under a temp dir);
# systemd-analyze verifies the systemd unit (tests/operations.rs).
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v xmlsec1 >/dev/null 2>&1 || missing+=(xmlsec1)
[ -x /usr/sbin/postfix ] || missing+=(postfix)
[ -x /usr/sbin/haproxy ] || missing+=(haproxy)
[ -x /usr/bin/systemd-analyze ] || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing Debian packages: ${missing[*]}"
        echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "missing Debian packages: ${missing[*]} (promtool comes with 'prometheus'); install them, then run again" >&2
        exit 1
    fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked --all-targets
