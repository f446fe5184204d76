#!/usr/bin/env bash
# The message-path benchmarks of BENCHMARKS.md, in one command from a clean clone:
#
#   bash benches/run.sh            # RUNS=3 repetitions of each cell, medians reported
#   QUICK=1 bash benches/run.sh    # one repetition, shorter cells (a smoke run)
#
# Builds release; starts the gateway on a temporary copy of config/local.toml (random high
# loopback ports, temporary spool); measures inbound -> spool for 1 and 100 messages per
# connection x 1 KiB, 100 KiB, 10 MiB; the bare limits (mutual-TLS accept loop, spool
# fsync loop); p99 latency at half saturation; memory per 1,000 idle TLS sessions; and,
# when the postfix package is installed (apt-get install -y postfix), a throwaway Postfix
# instance with the same PKI and mandatory client certificates, relaying to the discard
# transport. Every run is bounded in messages and seconds. Loopback only.
#
# Environment: RUNS (repetitions, default 3), CONNS (parallel connections, default 16),
# SECS (seconds per cell, default 3), POSTFIX=0 to skip Postfix, KEEP=1 to keep the
# temporary directory (logs, JSON results).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    RUNS=${RUNS:-1}; SECS=${SECS:-1}
else
    RUNS=${RUNS:-3}; SECS=${SECS:-3}
fi
CONNS=${CONNS:-16}
POSTFIX=${POSTFIX:-1}

echo "== building (release)" >&2
cargo build --release --quiet --workspace --bins
LOADGEN=$ROOT/target/release/mssante-loadgen
GATEWAY=$ROOT/target/release/mssante-gateway

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mssante-bench.XXXXXX")
chmod 755 "$WORK" # Postfix's daemons run as the postfix user
GW_PID=
PF_CONF=
SINK_PID=
cleanup() {
    if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; fi
    if [ -n "$SINK_PID" ]; then kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; fi
    if [ -n "$PF_CONF" ]; then postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# A free high port (bind to port 0 and read what the kernel gave).
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listening on port $1" >&2
    return 1
}

# ---- the internal server: a sink -----------------------------------------------------
# The gateway relays what it accepts to its internal mail server; Postfix's smtp-sink
# (package postfix) plays that part, accepting everything. Without it the [relay] section
# points at a closed port and messages stay queued (inbound -> spool only).
SINK_PORT=$(free_port)
if command -v smtp-sink >/dev/null 2>&1; then
    # As root, smtp-sink insists on a user to run as.
    sink_user=()
    if [ "$(id -u)" = 0 ]; then sink_user=(-u "$(id -un nobody 2>/dev/null || echo nobody)"); fi
    smtp-sink "${sink_user[@]}" -c "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>&1 &
    SINK_PID=$!
    echo "== internal server: smtp-sink on 127.0.0.1:$SINK_PORT (path: inbound -> spool -> sink)" >&2
else
    echo "== no smtp-sink (apt-get install postfix): messages stay in the spool (path: inbound -> spool)" >&2
fi

# ---- the gateway -------------------------------------------------------------------
GW_PORT=$(free_port)
MX_PORT=$(free_port)
mkdir -p "$WORK/gateway"
sed -e "s|\.\./certs-test|$ROOT/certs-test|g" \
    -e "s|127.0.0.1:2526|127.0.0.1:$SINK_PORT|" \
    -e "s|\.\./var/spool|$WORK/gateway/spool|" \
    -e "s|127.0.0.1:2525|127.0.0.1:$GW_PORT|" \
    -e "s|127.0.0.1:9925|127.0.0.1:$MX_PORT|" \
    -e 's|^max_connections = .*|max_connections = 2000|' \
    -e 's|^max_connections_per_ip = .*|max_connections_per_ip = 2000|' \
    config/local.toml >"$WORK/gateway/gateway.toml"
"$GATEWAY" serve --config "$WORK/gateway/gateway.toml" >"$WORK/gateway/gateway.log" 2>&1 &
GW_PID=$!
wait_port "$GW_PORT"

# ---- Postfix (optional) ------------------------------------------------------------
PF_PORT=
setup_postfix() {
    command -v postfix >/dev/null && [ -x /usr/lib/postfix/sbin/master ] || return 1
    PF_PORT=$(free_port)
    local d=$WORK/postfix
    mkdir -p "$d/etc" "$d/queue" "$d/data"
    chown postfix "$d/data"
    cat >"$d/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = smtp.gateway.test.mssante.fr
mydestination =
mynetworks =
relay_domains = gateway.test.mssante.fr
relay_transport = discard:sink
smtpd_relay_restrictions = reject_unauth_destination
default_process_limit = 300
message_size_limit = 52428800
maillog_file = $d/maillog
maillog_file_prefixes = $d
smtpd_banner = \$myhostname ESMTP
smtpd_tls_security_level = encrypt
smtpd_tls_req_ccert = yes
smtpd_tls_ask_ccert = yes
smtpd_tls_cert_file = $ROOT/certs-test/gateway-chain.pem
smtpd_tls_key_file = $ROOT/certs-test/gateway.key
smtpd_tls_CAfile = $ROOT/certs-test/anchors.pem
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 0
smtpd_tls_session_cache_database =
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0
EOF
    # The daemons the path needs, unchrooted (the queue is a temporary directory).
    cat >"$d/etc/master.cf" <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    postfix -c "$d/etc" set-permissions >/dev/null 2>&1 || true
    postfix -c "$d/etc" check >"$d/check.log" 2>&1 || true
    postfix -c "$d/etc" start >"$d/start.log" 2>&1 || { cat "$d/start.log" >&2; return 1; }
    PF_CONF=$d/etc
    wait_port "$PF_PORT"
}
if [ "$POSTFIX" = 1 ]; then
    if setup_postfix; then
        echo "== postfix on 127.0.0.1:$PF_PORT ($(postconf -d mail_version 2>/dev/null | sed 's/.*= //'))" >&2
    else
        echo "== postfix unavailable (install it with: apt-get install -y postfix); gateway figures only" >&2
        PF_PORT=
    fi
fi

# ---- the measurements --------------------------------------------------------------
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
record() { # name, run, then the JSON line on stdin; the load average tells how shared the machine was
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["cell"]=sys.argv[1]; r["run"]=int(sys.argv[2]); r["loadavg1"]=float(open("/proc/loadavg").read().split()[0]); print(json.dumps(r))' "$1" "$2" >>"$RESULTS"
}

# cell name, target port, loadgen arguments...
cell() {
    local name=$1 port=$2; shift 2
    for run in $(seq 1 "$RUNS"); do
        echo "-- $name (run $run/$RUNS)" >&2
        "$LOADGEN" --target "127.0.0.1:$port" --certs "$ROOT/certs-test" --json "$@" | record "$name" "$run"
    done
}

matrix() { # server label, port
    local s=$1 port=$2 ten=$((QUICK == 1 ? 4 : 8))
    cell "$s 1k x1"    "$port" -c "$CONNS" -m 1   --size 1k   -n 1000000 -d "$SECS"
    cell "$s 1k x100"  "$port" -c "$CONNS" -m 100 --size 1k   -n 1000000 -d "$SECS"
    cell "$s 100k x1"  "$port" -c "$CONNS" -m 1   --size 100k -n 1000000 -d "$SECS"
    cell "$s 100k x100" "$port" -c "$CONNS" -m 100 --size 100k -n 1000000 -d "$SECS"
    # 10 MiB: a handful of messages, bounded in count.
    cell "$s 10m x1"   "$port" -c 2 -m 1   --size 10m -n "$ten" -d 20
    cell "$s 10m x100" "$port" -c 2 -m 100 --size 10m -n "$ten" -d 20
}

# The fsync loop first, in fresh directories of the spool's file system: it only creates
# files, like the spool, and nothing has deleted any yet (see limits::fsync_loop).
echo "== bare limit: spool commit loop" >&2
for run in $(seq 1 "$RUNS"); do
    for p in 1 "$CONNS"; do
        echo "-- fsync x$p (run $run/$RUNS)" >&2
        "$LOADGEN" fsync --dir "$WORK/fsync-$run-$p" --parallel "$p" --duration "$SECS" --json |
            record "fsync x$p" "$run"
    done
done

echo "== gateway on 127.0.0.1:$GW_PORT" >&2
matrix gateway "$GW_PORT"

# Half saturation, right after the gateway's matrix (Postfix deletes every message it
# discards, and on ext4 without a journal inode allocation then slows down for a while): the median saturated rate of "1k x100", halved, with the same
# connections; the latency there is the target's.
HALF=$(python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rates = [json.loads(l)["messages_per_s"] for l in open(sys.argv[1]) if json.loads(l)["cell"] == "gateway 1k x100"]
print(f"{statistics.median(rates) / 2:.0f}")
EOF
)
cell "gateway 1k x100 @half" "$GW_PORT" -c "$CONNS" -m 100 --size 1k -n 1000000 -d "$SECS" --rate "$HALF"
[ -n "$PF_PORT" ] && matrix postfix "$PF_PORT"
if [ -n "$PF_PORT" ]; then
    PF_HALF=$(python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
rates = [json.loads(l)["messages_per_s"] for l in open(sys.argv[1]) if json.loads(l)["cell"] == "postfix 1k x100"]
print(f"{statistics.median(rates) / 2:.0f}")
EOF
)
    cell "postfix 1k x100 @half" "$PF_PORT" -c "$CONNS" -m 100 --size 1k -n 1000000 -d "$SECS" --rate "$PF_HALF"
fi


# The handshake limit, each run paired with a gateway run of one message per connection
# right before it: on a shared machine only measurements taken together compare.
echo "== bare limit: mutual-TLS accept loop, paired with the gateway at 1 msg/conn" >&2
for run in $(seq 1 "$RUNS"); do
    echo "-- pair $run/$RUNS: gateway 1k x1, bare-tls" >&2
    "$LOADGEN" --target "127.0.0.1:$GW_PORT" --certs "$ROOT/certs-test" --json \
        -c "$CONNS" -m 1 --size 1k -n 1000000 -d "$SECS" | record "pair gateway 1k x1" "$run"
    "$LOADGEN" bare-tls --config "$WORK/gateway/gateway.toml" --certs "$ROOT/certs-test" \
        -c "$CONNS" -n 1000000 -d "$SECS" --json | record "bare-tls" "$run"
done

# On a freshly started gateway each time: after the matrix, the allocator holds freed
# memory that new sessions would reuse without growing the RSS.
echo "== 1,000 idle TLS sessions" >&2
for run in $(seq 1 "$RUNS"); do
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
    rm -rf "$WORK/gateway/spool"
    "$GATEWAY" serve --config "$WORK/gateway/gateway.toml" >>"$WORK/gateway/gateway.log" 2>&1 &
    GW_PID=$!
    wait_port "$GW_PORT"
    sleep 0.5
    "$LOADGEN" idle --pid "$GW_PID" --target "127.0.0.1:$GW_PORT" --certs "$ROOT/certs-test" \
        -c 20 -n 1000 -d 60 --json | record "idle" "$run"
done

python3 - "$RESULTS" "$(nproc)" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cells = {}
for r in rows:
    cells.setdefault(r["cell"], []).append(r)
med = lambda c, k: statistics.median(r[k] for r in cells[c]) if c in cells else None
lat = lambda c, k: statistics.median(r["accept_latency"][k] for r in cells[c]) if c in cells else None
runs = max(r["run"] for r in rows)
loads = [r["loadavg1"] for r in rows if "loadavg1" in r]
print(f"\nmedians of {runs} run(s) per cell, {sys.argv[2]} CPUs shared by server and load generator"
      f" (1-minute load average during the runs: {min(loads):.1f} to {max(loads):.1f})\n")
print(f"| cell | msgs/s | MiB/s | handshakes/s | p50 ms | p90 ms | p99 ms | max ms | errors |")
print(f"|---|---:|---:|---:|---:|---:|---:|---:|---|")
for c, rs in cells.items():
    if "messages_per_s" not in rs[0] or c == "bare-tls":
        continue
    errs = {}
    for r in rs:
        for k, v in r["errors"].items():
            errs[k] = errs.get(k, 0) + v
    e = ", ".join(f"{k}: {v}" for k, v in errs.items()) or "0"
    print(f"| {c} | {med(c,'messages_per_s'):.0f} | {med(c,'mib_per_s'):.1f} | {med(c,'handshakes_per_s'):.0f} | "
          f"{lat(c,'p50_ms'):.2f} | {lat(c,'p90_ms'):.2f} | {lat(c,'p99_ms'):.2f} | {lat(c,'max_ms'):.2f} | {e} |")
print()
print("| bare limit | rate | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
if "bare-tls" in cells:
    print(f"| mutual-TLS accept loop (handshakes/s) | {med('bare-tls','handshakes_per_s'):.0f} | | |")
for c in cells:
    if c.startswith("fsync"):
        print(f"| spool commit loop, {c[6:]} writers (commits/s; 2 fsyncs each) | {med(c,'commits_per_s'):.0f} | {med(c,'p50_ms'):.2f} | {med(c,'p99_ms'):.2f} |")
if "idle" in cells:
    print(f"\nidle TLS sessions: {med('idle','sessions'):.0f} open, {med('idle','kib_per_session'):.1f} KiB per session (gateway RSS delta, median)")
print("\nratios (medians):")
def ratio(a, b, label):
    x, y = a, b
    if x is not None and y:
        print(f"  {label}: {x:.0f} / {y:.0f} = {x / y:.2f}")
g = lambda c: med(c, "messages_per_s")
for s in ["1k x1", "1k x100", "100k x1", "100k x100", "10m x1", "10m x100"]:
    ratio(g(f"gateway {s}"), g(f"postfix {s}"), f"gateway/postfix msgs/s, {s}")
if "bare-tls" in cells and "pair gateway 1k x1" in cells:
    by_run = {r["run"]: r["handshakes_per_s"] for r in cells["bare-tls"]}
    rs = [r["handshakes_per_s"] / by_run[r["run"]] for r in cells["pair gateway 1k x1"] if by_run.get(r["run"])]
    if rs:
        print(f"  gateway 1 msg/conn handshakes/s / bare mTLS handshakes/s, median of {len(rs)} paired runs: {statistics.median(rs):.2f}"
              f" (pairs: {', '.join(f'{x:.2f}' for x in rs)})")
ratio(g("gateway 1k x100"), med(f"fsync x{max(int(c[7:]) for c in cells if c.startswith('fsync x'))}", "commits_per_s") if any(c.startswith("fsync") for c in cells) else None,
      "gateway 1k x100 msgs/s / parallel fsync commits/s")
if "gateway 1k x100 @half" in cells:
    print(f"  p99 accept latency at half saturation ({med('gateway 1k x100 @half','messages_per_s'):.0f} msgs/s): "
          f"{lat('gateway 1k x100 @half','p99_ms'):.2f} ms")
EOF
