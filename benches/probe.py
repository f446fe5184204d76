"""Helpers of benches/run.sh: read a gateway's metrics, wait until a side has finished what
it accepted, sample the sustained cell, and print the summary.

    probe.py relayed PORT                          messages relayed so far
    probe.py wait-relayed PORT BEFORE T0 RUN.json  waits, prints the run's JSON + e2e fields
    probe.py wait-postfix QUEUE_DIR T0 RUN.json    the same for Postfix (queue directories empty)
    probe.py sample PORT SECONDS                   one JSON line per second: received, queued
    probe.py drain PORT                            waits for an empty queue, prints the drain rate
    probe.py half RESULTS CELL                     half the median accept rate of CELL
    probe.py summary RESULTS SUSTAINED OTHER       the tables
"""

import json
import os
import statistics
import sys
import time
import urllib.request


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def relayed(port):
    return int(metric(port, "mssante_messages_relayed_total"))


def finish(run_json, t0, done):
    """Waits until done() (600 s at most) and prints the run with its end-to-end time."""
    r = json.load(open(run_json))
    deadline = time.time() + 600
    while not done(r["messages_ok"]):
        if time.time() > deadline:
            r["e2e_timeout"] = True
            break
        time.sleep(0.02)
    e2e = time.time() - t0
    r["e2e_s"] = e2e
    r["e2e_per_s"] = r["messages_ok"] / e2e if e2e > 0 else 0.0
    print(json.dumps(r))


def postfix_queued(queue):
    return sum(
        len(files)
        for d in ("maildrop", "incoming", "active", "deferred")
        for _, _, files in os.walk(os.path.join(queue, d))
    )


def summary(results, sustained, other):
    rows = [json.loads(line) for line in open(results)]
    cells = {}
    for r in rows:
        cells.setdefault(r["cell"], []).append(r)
    loads = [r["loadavg1"] for r in rows if "loadavg1" in r]
    print(f"\n{os.cpu_count()} CPUs shared by the servers and the load generator; 1-minute load "
          f"average during the runs: {min(loads):.1f} to {max(loads):.1f}\n")

    paired = [c[len("gateway "):] for c in cells if c.startswith("gateway ") and "@half" not in c]
    print(f"Paired cells, gateway vs {other or 'nothing'} (per pair: gateway rate / other rate)\n")
    print("| cell | pairs | gateway accept msgs/s | gateway e2e msgs/s | other accept | other e2e "
          "| accept ratio median (min-max) | e2e ratio median (min-max) | gateway p99 accept ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in paired:
        g = {r["run"]: r for r in cells[f"gateway {c}"]}
        o = {r["run"]: r for r in cells.get(f"{other} {c}", [])}
        pairs = sorted(set(g) & set(o))
        med = lambda rs, k: statistics.median(r[k] for r in rs) if rs else float("nan")

        def ratio(k):
            xs = [g[p][k] / o[p][k] for p in pairs if o[p][k]]
            if not xs:
                return "-"
            return f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"

        gs, os_ = list(g.values()), list(o.values())
        p99 = statistics.median(r["accept_latency"]["p99_ms"] for r in gs)
        timeouts = sum(1 for r in gs + os_ if r.get("e2e_timeout"))
        note = f" ({timeouts} timed out)" if timeouts else ""
        print(f"| {c}{note} | {len(pairs)} | {med(gs, 'messages_per_s'):.0f} | {med(gs, 'e2e_per_s'):.0f} "
              f"| {med(os_, 'messages_per_s'):.0f} | {med(os_, 'e2e_per_s'):.0f} "
              f"| {ratio('messages_per_s')} | {ratio('e2e_per_s')} | {p99:.2f} |")

    if "sustained intake" in cells and os.path.exists(sustained):
        samples = [json.loads(line) for line in open(sustained)]
        rates = [
            (b["t"], (b["received"] - a["received"]) / (b["t"] - a["t"]), b["queued"])
            for a, b in zip(samples, samples[1:])
            if b["t"] > a["t"]
        ]
        if rates:
            steady = [r for _, r, _ in rates[2:-1]] or [r for _, r, _ in rates]
            m = statistics.median(steady)
            print(f"\nSustained, internal server down: intake per second median {m:.0f} msgs/s, "
                  f"min {min(steady):.0f}, max {max(steady):.0f} "
                  f"({(min(steady) / m - 1) * 100:+.0f} % / {(max(steady) / m - 1) * 100:+.0f} % of the median), "
                  f"backlog at the end {rates[-1][2]:.0f}")
            print("  per 10 s: " + ", ".join(f"{t:.0f}s {r:.0f}" for t, r, _ in rates[::10]))
        d = cells.get("sustained drain", [{}])[0]
        if d:
            print(f"  then up: {d['drained']:.0f} messages drained in {d['drain_s']:.1f} s = "
                  f"{d['drain_per_s']:.0f} msgs/s")

    med = lambda c, k: statistics.median(r[k] for r in cells[c]) if c in cells else None
    print("\n| bare limit | rate | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for c in cells:
        if c.startswith("fsync"):
            print(f"| file-per-message commit loop, {c[6:]} writers (commits/s) | "
                  f"{med(c, 'commits_per_s'):.0f} | {med(c, 'p50_ms'):.2f} | {med(c, 'p99_ms'):.2f} |")
    for resume in ("", "--resume"):
        bare, gw = f"bare-tls{resume}", f"pair gateway 1k x1{resume}"
        if bare in cells and gw in cells:
            by_run = {r["run"]: r["handshakes_per_s"] for r in cells[bare]}
            xs = [r["handshakes_per_s"] / by_run[r["run"]] for r in cells[gw] if by_run.get(r["run"])]
            label = "resumed sessions" if resume else "full handshakes"
            print(f"| mutual-TLS accept loop, {label} (handshakes/s) | {med(bare, 'handshakes_per_s'):.0f} | | |")
            if xs:
                print(f"\ngateway 1 msg/conn / bare mTLS accept loop, {label}, {len(xs)} pairs: "
                      f"median {statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")
    if "gateway 1k x100 @half" in cells:
        r = cells["gateway 1k x100 @half"]
        print(f"p99 accept latency at half saturation ({med('gateway 1k x100 @half', 'messages_per_s'):.0f} msgs/s): "
              f"{statistics.median(x['accept_latency']['p99_ms'] for x in r):.2f} ms")
    if "idle" in cells:
        print(f"idle TLS sessions: {med('idle', 'sessions'):.0f} open, "
              f"{med('idle', 'kib_per_session'):.1f} KiB per session (gateway RSS delta, median)")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "relayed":
        print(relayed(args[0]))
    elif cmd == "wait-relayed":
        port, before, t0, run = args[0], int(args[1]), float(args[2]), args[3]
        finish(run, t0, lambda want: relayed(port) - before >= want)
    elif cmd == "wait-postfix":
        queue, t0, run = args[0], float(args[1]), args[2]
        finish(run, t0, lambda _want: postfix_queued(queue) == 0)
    elif cmd == "sample":
        port, secs = args[0], float(args[1])
        start = time.time()
        while time.time() - start < secs + 1:
            print(json.dumps({
                "t": time.time() - start,
                "received": metric(port, "mssante_messages_received_total"),
                "queued": metric(port, "mssante_queue_messages"),
            }), flush=True)
            time.sleep(1)
    elif cmd == "drain":
        port = args[0]
        before, t0 = relayed(port), time.time()
        backlog = metric(port, "mssante_queue_messages")
        deadline = t0 + 1800
        while metric(port, "mssante_queue_messages") > 0 and time.time() < deadline:
            time.sleep(0.2)
        t = time.time() - t0
        drained = relayed(port) - before
        print(json.dumps({"backlog": backlog, "drained": drained, "drain_s": t, "drain_per_s": drained / t}))
    elif cmd == "half":
        rates = [json.loads(line)["messages_per_s"] for line in open(args[0]) if json.loads(line)["cell"] == args[1]]
        print(f"{statistics.median(rates) / 2:.0f}")
    elif cmd == "summary":
        summary(args[0], args[1], args[2] if len(args) > 2 else "")
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
