#!/usr/bin/env bash
# Validates the deployment files that can be checked without a cluster or a container
# engine. Run from anywhere:  bash deploy/check.sh
#
#   - alert rules: promtool check rules + promtool test rules (unit tests)
#   - (metric names used by the rules and the dashboard: tests/deploy.rs, in the test suite)
#   - the Grafana dashboard: valid JSON, schemaVersion >= 36, ${DS_PROMETHEUS} input
#   - YAML syntax of every manifest; Kubernetes schemas if kubernetes-validate is installed
#   - the ConfigMap's TOML passes `check-config` (paths pointed at certs-test/), when a
#     built binary is found (target/release or target/debug, or $MSSANTE_GATEWAY_BIN)
#   - the systemd unit: systemd-analyze verify (and the offline security score)
#   - the Dockerfile: hadolint if installed (docker build itself is not attempted)
#
# Exit status: 0 when nothing failed (skipped checks are listed), 1 otherwise.
# Set CHECK_INSTALL=1 to let it install promtool (apt-get) and PyYAML (pip) when missing.

set -u
cd "$(dirname "$0")/.." || exit 1

pass=() fail=() skip=()
ok() { pass+=("$1"); echo "PASS  $1"; }
ko() { fail+=("$1"); echo "FAIL  $1"; }
no() { skip+=("$1"); echo "SKIP  $1"; }
section() { printf '\n== %s\n' "$1"; }

# ---- tools ----------------------------------------------------------------------------
if ! command -v promtool >/dev/null 2>&1 && [ "${CHECK_INSTALL:-0}" = 1 ] && command -v apt-get >/dev/null 2>&1; then
    section "installing promtool (Debian package prometheus)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if ! python3 -c 'import yaml' 2>/dev/null && [ "${CHECK_INSTALL:-0}" = 1 ]; then
    section "installing PyYAML"
    python3 -m pip install -q pyyaml
fi

# ---- Prometheus rules -------------------------------------------------------------------
section "Prometheus alert rules"
if command -v promtool >/dev/null 2>&1; then
    if promtool check rules deploy/prometheus/alerts.yml; then ok "promtool check rules"; else ko "promtool check rules"; fi
    if promtool test rules deploy/prometheus/alerts_test.yml; then ok "promtool test rules"; else ko "promtool test rules"; fi
else
    no "promtool not installed (apt-get install prometheus, or CHECK_INSTALL=1)"
fi

# ---- metric names -----------------------------------------------------------------------
# That the rules and the dashboard name only metrics the gateway exports is a test of the
# suite (tests/deploy.rs), run by scripts/test.sh.

# ---- Grafana ----------------------------------------------------------------------------
section "Grafana dashboard"
if python3 -m json.tool deploy/grafana/mssante-gateway.json >/dev/null; then
    ok "dashboard is valid JSON"
    if python3 - <<'EOF'
import json, sys
d = json.load(open("deploy/grafana/mssante-gateway.json"))
problems = []
if d.get("schemaVersion", 0) < 36:
    problems.append(f"schemaVersion {d.get('schemaVersion')} < 36")
if not any(i.get("name") == "DS_PROMETHEUS" for i in d.get("__inputs", [])):
    problems.append("no DS_PROMETHEUS input")
ids = [p["id"] for p in d["panels"]]
if len(ids) != len(set(ids)):
    problems.append("duplicate panel ids")
for p in d["panels"]:
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            problems.append(f"panel {p['title']!r}: datasource is not ${{DS_PROMETHEUS}}")
print(f"{len(d['panels'])} panels, schemaVersion {d['schemaVersion']}")
for p in problems:
    print(p)
sys.exit(1 if problems else 0)
EOF
    then ok "dashboard structure"; else ko "dashboard structure"; fi
else
    ko "dashboard is valid JSON"
fi

# ---- YAML -------------------------------------------------------------------------------
section "YAML syntax"
if python3 - <<'EOF'
import glob, sys
import yaml
bad = False
for f in sorted(glob.glob("deploy/kubernetes/*.yaml") + glob.glob("deploy/prometheus/*.yml")):
    try:
        docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]
        kinds = [d.get("kind", "-") if isinstance(d, dict) else type(d).__name__ for d in docs]
        print(f"{f}: {len(docs)} document(s) {kinds}")
    except yaml.YAMLError as e:
        print(f"{f}: {e}")
        bad = True
sys.exit(1 if bad else 0)
EOF
then ok "YAML syntax"; else ko "YAML syntax"; fi

section "Kubernetes schemas"
if command -v kubernetes-validate >/dev/null 2>&1; then
    k8s=(deploy/kubernetes/{configmap,secrets,statefulset,service,poddisruptionbudget}.yaml)
    if kubernetes-validate -k 1.32 --strict "${k8s[@]}"; then ok "kubernetes-validate 1.32 --strict"; else ko "kubernetes-validate"; fi
    no "servicemonitor.yaml schema (a prometheus-operator CRD, not in the Kubernetes schemas)"
else
    no "kubernetes-validate not installed (pip install kubernetes-validate)"
fi
if command -v kubectl >/dev/null 2>&1; then
    if kubectl kustomize deploy/kubernetes >/dev/null; then ok "kubectl kustomize"; else ko "kubectl kustomize"; fi
fi

# ---- the ConfigMap's configuration ------------------------------------------------------
section "ConfigMap configuration (check-config)"
bin="${MSSANTE_GATEWAY_BIN:-}"
for b in target/release/mssante-gateway target/debug/mssante-gateway; do
    [ -z "$bin" ] && [ -x "$b" ] && bin="$b"
done
if [ -n "$bin" ] && python3 -c 'import yaml' 2>/dev/null; then
    tmp="$(mktemp -d)"
    # The volumes the pod mounts: the cache directory must exist (check-config says so).
    mkdir -p "$tmp/cache" "$tmp/spool"
    python3 - "$tmp" <<'EOF'
import os, sys, yaml
tmp = sys.argv[1]
c = os.path.abspath("certs-test")
text = yaml.safe_load(open("deploy/kubernetes/configmap.yaml"))["data"]["gateway.toml"]
for a, b in {
    "/etc/mssante-gateway/tls/tls.crt": f"{c}/gateway-chain.pem",
    "/etc/mssante-gateway/tls/tls.key": f"{c}/gateway.key",
    "/etc/mssante-gateway/trust/anchors.pem": f"{c}/anchors.pem",
    "/etc/mssante-gateway/trust/intermediates.pem": f"{c}/intermediate-ca.pem",
    "/var/spool/mssante-gateway": f"{tmp}/spool",
    "/var/cache/mssante-gateway": f"{tmp}/cache",
}.items():
    text = text.replace(a, b)
open(f"{tmp}/gateway.toml", "w").write(text)
EOF
    if "$bin" check-config --config "$tmp/gateway.toml"; then ok "configmap TOML passes check-config ($bin)"; else ko "configmap TOML check-config"; fi
    rm -rf "$tmp"
else
    no "check-config of the ConfigMap (no built binary: cargo build, or set MSSANTE_GATEWAY_BIN)"
fi

# ---- systemd ----------------------------------------------------------------------------
section "systemd unit"
if command -v systemd-analyze >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    # The binary is not installed here: point the unit at /bin/true so verify checks the
    # directives, not the presence of /usr/local/bin/mssante-gateway.
    sed 's#/usr/local/bin/mssante-gateway#/bin/true#g' deploy/systemd/mssante-gateway.service \
        >"$tmp/mssante-gateway.service"
    # verify exits 0 on unknown directives, printing a warning: any output is a failure.
    out="$(systemd-analyze verify "$tmp/mssante-gateway.service" 2>&1)"
    rc=$?
    if [ $rc -eq 0 ] && [ -z "$out" ]; then ok "systemd-analyze verify"; else echo "$out"; ko "systemd-analyze verify"; fi
    systemd-analyze security --offline=true "$tmp/mssante-gateway.service" 2>/dev/null | tail -n 1
    rm -rf "$tmp"
else
    no "systemd-analyze not installed"
fi

# ---- Docker -----------------------------------------------------------------------------
section "Dockerfile"
if command -v hadolint >/dev/null 2>&1; then
    if hadolint deploy/docker/Dockerfile; then ok "hadolint"; else ko "hadolint"; fi
else
    no "hadolint not installed (Dockerfile lint)"
fi
no "docker build (needs a container engine; run: docker build -f deploy/docker/Dockerfile .)"

# ---- summary ----------------------------------------------------------------------------
printf '\n== summary: %d passed, %d failed, %d skipped\n' "${#pass[@]}" "${#fail[@]}" "${#skip[@]}"
for f in "${fail[@]+"${fail[@]}"}"; do echo "  failed: $f"; done
[ "${#fail[@]}" -eq 0 ]
