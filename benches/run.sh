#!/usr/bin/env bash
# The message-path benchmarks of BENCHMARKS.md, in one command from a clean clone:
#
#   bash benches/run.sh                      # gateway against Postfix, PAIRS=3 pairs per cell
#   VERSUS=/path/to/mssante-gateway bash benches/run.sh   # against another build (before/after)
#   QUICK=1 bash benches/run.sh              # one pair, small cells (a smoke run)
#
# Builds release; starts the gateway on a temporary copy of config/local.toml (random high
# loopback ports, temporary spool) relaying to an smtp-sink (the internal server), and the
# other side: a throwaway Postfix instance with the same PKI and mandatory client
# certificates relaying to its discard transport, or a second gateway from the binary
# VERSUS names (own spool and ports, same sink).
#
# Paired cells: each runs in pairs taken back to back, A B then B A, and so on, with a
# fixed number of messages; each run reports the accept rate (messages answered 250 per
# second) and the end-to-end rate (messages / time from the first connect until every
# accepted message has left the queue: relayed to the sink for a gateway, gone from the
# queue directories for Postfix). The summary gives, per cell, the median and min-max of
# the ratio gateway/other over the pairs, and the 1-minute load average during the runs.
#
# Then, for the gateway alone: a sustained cell (the internal server down for SUSTAIN
# seconds of load, then up: intake per second, then drain rate), the bare limits
# (mutual-TLS accept loop paired with the gateway at 1 msg/conn, with and without TLS
# session resumption; the commit loop of a file per message), p99 accept latency at half
# saturation and memory per 1,000 idle TLS sessions. Every run is bounded in messages and
# seconds. Loopback only.
#
# Environment: PAIRS (default 3), CONNS (parallel connections, default 16), SECS (seconds
# of the unpaired cells, default 3), SUSTAIN (seconds of the sustained cell, default 60),
# VERSUS (postfix, or a gateway binary), POSTFIX_TRANSPORT (relay, the default, or
# discard), PAIRED_ONLY=1 to stop after the paired cells, KEEP=1 to keep the temporary
# directory (logs, JSON results).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
    PAIRS=${PAIRS:-1}; RUNS=${RUNS:-1}; SECS=${SECS:-1}; SUSTAIN=${SUSTAIN:-5}; SCALE=10
else
    PAIRS=${PAIRS:-3}; RUNS=${RUNS:-3}; SECS=${SECS:-3}; SUSTAIN=${SUSTAIN:-60}; SCALE=1
fi
CONNS=${CONNS:-16}
VERSUS=${VERSUS:-postfix}

echo "== building (release)" >&2
cargo build --release --quiet --workspace --bins
LOADGEN=$ROOT/target/release/mssante-loadgen
GATEWAY=$ROOT/target/release/mssante-gateway

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mssante-bench.XXXXXX")
chmod 755 "$WORK" # Postfix's daemons run as the postfix user
PIDS=()
PF_CONF=
SINK_PID=
cleanup() {
    for p in "${PIDS[@]}" "$SINK_PID"; do
        if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
    done
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
# (package postfix) plays that part, accepting everything. End-to-end figures need it.
command -v smtp-sink >/dev/null 2>&1 || { echo "smtp-sink missing: apt-get install -y postfix" >&2; exit 1; }
SINK_PORT=$(free_port)
start_sink() {
    # As root, smtp-sink insists on a user to run as.
    local sink_user=()
    if [ "$(id -u)" = 0 ]; then sink_user=(-u "$(id -un nobody 2>/dev/null || echo nobody)"); fi
    smtp-sink "${sink_user[@]}" -c "127.0.0.1:$SINK_PORT" 1000 >/dev/null 2>&1 &
    SINK_PID=$!
    wait_port "$SINK_PORT"
}
stop_sink() {
    kill "$SINK_PID" 2>/dev/null || true; wait "$SINK_PID" 2>/dev/null || true; SINK_PID=
}
start_sink
echo "== internal server: smtp-sink on 127.0.0.1:$SINK_PORT" >&2

# ---- gateways ----------------------------------------------------------------------
# start_gateway NAME BINARY: sets <NAME>_PORT, <NAME>_METRICS, <NAME>_PID, <NAME>_CONF.
start_gateway() {
    local name=$1 bin=$2 port metrics dir=$WORK/$1
    port=$(free_port); metrics=$(free_port)
    mkdir -p "$dir"
    sed -e "s|\.\./certs-test|$ROOT/certs-test|g" \
        -e "s|127.0.0.1:2526|127.0.0.1:$SINK_PORT|" \
        -e "s|\.\./var/spool|$dir/spool|" \
        -e "s|127.0.0.1:2525|127.0.0.1:$port|" \
        -e "s|127.0.0.1:9925|127.0.0.1:$metrics|" \
        -e 's|^max_connections = .*|max_connections = 2000|' \
        -e 's|^max_connections_per_ip = .*|max_connections_per_ip = 2000|' \
        config/local.toml >"$dir/gateway.toml"
    "$bin" serve --config "$dir/gateway.toml" >>"$dir/gateway.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf -v "${name}_PORT" %s "$port"
    printf -v "${name}_METRICS" %s "$metrics"
    printf -v "${name}_PID" %s "$pid"
    printf -v "${name}_CONF" %s "$dir/gateway.toml"
    wait_port "$port"
}
start_gateway GW "$GATEWAY"
echo "== gateway on 127.0.0.1:$GW_PORT ($GATEWAY)" >&2

# ---- Postfix (optional) ------------------------------------------------------------
PF_PORT=
# Postfix relays to the same sink as the gateway (what an operator's Postfix connector
# does); POSTFIX_TRANSPORT=discard makes it drop messages instead (less work than the
# gateway does: no second SMTP session per message).
if [ "${POSTFIX_TRANSPORT:-relay}" = discard ]; then
    PF_TRANSPORT=discard:sink
else
    PF_TRANSPORT="relay:[127.0.0.1]:$SINK_PORT"
fi
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
relay_transport = $PF_TRANSPORT
smtp_tls_security_level = none
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
OTHER=
if [ "$VERSUS" = postfix ]; then
    if setup_postfix; then
        OTHER=postfix
        echo "== postfix on 127.0.0.1:$PF_PORT ($(postconf -d mail_version 2>/dev/null | sed 's/.*= //'))" >&2
    else
        echo "== postfix unavailable (apt-get install -y postfix): gateway figures only" >&2
    fi
elif [ -x "$VERSUS" ]; then
    start_gateway B "$VERSUS"
    OTHER=baseline
    echo "== baseline gateway on 127.0.0.1:$B_PORT ($VERSUS)" >&2
else
    echo "VERSUS must be postfix or an executable gateway binary: $VERSUS" >&2
    exit 1
fi

# ---- the measurements --------------------------------------------------------------
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
record() { # name, run, then the JSON line on stdin; the load average tells how shared the machine was
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["cell"]=sys.argv[1]; r["run"]=int(sys.argv[2]); r["loadavg1"]=float(open("/proc/loadavg").read().split()[0]); print(json.dumps(r))' "$1" "$2" >>"$RESULTS"
}
PROBE=$ROOT/benches/probe.py

# One run of a paired cell on SIDE (gateway, postfix, baseline): loadgen with a fixed
# number of messages, then wait until the side has finished every accepted message.
run_e2e() { # side, cell, pair, loadgen args...
    local side=$1 cell=$2 pair=$3 port metrics= before=0 t0
    shift 3
    case $side in
        gateway) port=$GW_PORT; metrics=$GW_METRICS ;;
        baseline) port=$B_PORT; metrics=$B_METRICS ;;
        postfix) port=$PF_PORT ;;
    esac
    if [ -n "$metrics" ]; then before=$(python3 "$PROBE" relayed "$metrics"); fi
    t0=$(date +%s.%N)
    "$LOADGEN" --target "127.0.0.1:$port" --certs "$ROOT/certs-test" --json "$@" >"$WORK/run.json"
    if [ -n "$metrics" ]; then
        python3 "$PROBE" wait-relayed "$metrics" "$before" "$t0" "$WORK/run.json"
    else
        python3 "$PROBE" wait-postfix "$WORK/postfix/queue" "$t0" "$WORK/run.json"
    fi | record "$side $cell" "$pair"
}

# A paired cell: PAIRS pairs, gateway then other, other then gateway, and so on.
paired() { # cell, loadgen args...
    local cell=$1 pair side
    shift
    for pair in $(seq 1 "$PAIRS"); do
        local order=(gateway "$OTHER")
        if [ $((pair % 2)) = 0 ]; then order=("$OTHER" gateway); fi
        for side in "${order[@]}"; do
            [ -n "$side" ] || continue
            echo "-- $side $cell (pair $pair/$PAIRS)" >&2
            run_e2e "$side" "$cell" "$pair" "$@"
        done
    done
}

# cell name, target port, loadgen arguments... (unpaired, gateway-only measurements)
cell() {
    local name=$1 port=$2; shift 2
    for run in $(seq 1 "$RUNS"); do
        echo "-- $name (run $run/$RUNS)" >&2
        "$LOADGEN" --target "127.0.0.1:$port" --certs "$ROOT/certs-test" --json "$@" | record "$name" "$run"
    done
}

echo "== paired cells: gateway vs ${OTHER:-nothing}" >&2
paired "1k x1"         -c "$CONNS" -m 1   --size 1k   -n $((3200 / SCALE))  -d 600
paired "1k x100"       -c "$CONNS" -m 100 --size 1k   -n $((16000 / SCALE)) -d 600
paired "100k x100"     -c "$CONNS" -m 100 --size 100k -n $((6400 / SCALE))  -d 600
paired "1k x1 resumed" -c "$CONNS" -m 1   --size 1k   -n $((3200 / SCALE))  -d 600 --resume

if [ "${PAIRED_ONLY:-0}" = 1 ]; then
    python3 "$PROBE" summary "$RESULTS" /nonexistent "${OTHER:-}"
    exit 0
fi

# ---- the gateway alone ----------------------------------------------------------------
# Sustained: the internal server is down while SUSTAIN seconds of load arrive (the backlog
# grows), then up: intake per second from the gateway's own counter, then the drain.
echo "== sustained: ${SUSTAIN}s of 1k x100 with the internal server down, then up" >&2
stop_sink
python3 "$PROBE" sample "$GW_METRICS" "$SUSTAIN" >"$WORK/sustained.jsonl" &
SAMPLER=$!
"$LOADGEN" --target "127.0.0.1:$GW_PORT" --certs "$ROOT/certs-test" --json \
    -c "$CONNS" -m 100 --size 1k -n 100000000 -d "$SUSTAIN" | record "sustained intake" 1
wait "$SAMPLER" || true
start_sink
python3 "$PROBE" drain "$GW_METRICS" | record "sustained drain" 1

# The fsync loop, in fresh directories of the spool's file system: the commit sequence of
# a message with a file of its own (see limits::fsync_loop).
echo "== bare limit: a file per message commit loop" >&2
for run in $(seq 1 "$RUNS"); do
    for p in 1 "$CONNS"; do
        echo "-- fsync x$p (run $run/$RUNS)" >&2
        "$LOADGEN" fsync --dir "$WORK/fsync-$run-$p" --parallel "$p" --duration "$SECS" --json |
            record "fsync x$p" "$run"
    done
done

# Half saturation: the median accept rate of the paired "1k x100" runs, halved, with the
# same connections; the latency there is the target's.
HALF=$(python3 "$PROBE" half "$RESULTS" "gateway 1k x100")
cell "gateway 1k x100 @half" "$GW_PORT" -c "$CONNS" -m 100 --size 1k -n 1000000 -d "$SECS" --rate "$HALF"

# The handshake limit, each run paired with a gateway run of one message per connection
# right before it: on a shared machine only measurements taken together compare.
echo "== bare limit: mutual-TLS accept loop, paired with the gateway at 1 msg/conn" >&2
for run in $(seq 1 "$RUNS"); do
    for resume in "" --resume; do
        echo "-- pair $run/$RUNS: gateway 1k x1, bare-tls ${resume:-(full handshakes)}" >&2
        "$LOADGEN" --target "127.0.0.1:$GW_PORT" --certs "$ROOT/certs-test" --json $resume \
            -c "$CONNS" -m 1 --size 1k -n 1000000 -d "$SECS" | record "pair gateway 1k x1$resume" "$run"
        "$LOADGEN" bare-tls --config "$GW_CONF" --certs "$ROOT/certs-test" $resume \
            -c "$CONNS" -n 1000000 -d "$SECS" --json | record "bare-tls$resume" "$run"
    done
done

# On a freshly started gateway each time: after the runs, the allocator holds freed
# memory that new sessions would reuse without growing the RSS.
echo "== 1,000 idle TLS sessions" >&2
for run in $(seq 1 "$RUNS"); do
    kill "$GW_PID"; wait "$GW_PID" 2>/dev/null || true
    rm -rf "$WORK/GW/spool"
    start_gateway GW "$GATEWAY"
    sleep 0.5
    "$LOADGEN" idle --pid "$GW_PID" --target "127.0.0.1:$GW_PORT" --certs "$ROOT/certs-test" \
        -c 20 -n 1000 -d 60 --json | record "idle" "$run"
done

python3 "$PROBE" summary "$RESULTS" "$WORK/sustained.jsonl" "${OTHER:-}"
