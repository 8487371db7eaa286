"""Turns the harness's raw measurements into loadtest/results/latest.{json,md,png}.

Usage: report.py RAW.jsonl OUT_PREFIX "machine description" quick|full NOTES_JSON

Every workload is measured in alternating rounds (each target once per round); a cell is the median of
the rounds, with the spread (min–max) beside it. A difference between two targets (what a proxy adds over
`direct`) is taken round by round, within the same round, and then its median.
"""
import datetime
import json
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw_path, out_prefix, machine, mode = sys.argv[1:5]
notes = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
rows = [json.loads(line) for line in open(raw_path)]
PROXIES = ["direct", "nginx", "haproxy", "gateway"]
WITH_LITELLM = PROXIES + ["litellm"]


def per_round(w, r):
    """The numbers of one measurement (one target, one round)."""
    lat = r.get("latency_us") or {}
    fb = r.get("first_byte_us") or {}
    e = {"errors": r.get("errors")}
    if r.get("mode") == "frontier":
        e.update(frontier_rps=r["frontier_rps"], first_failed_rps=r.get("first_failed_rps"), probes=r["probes"])
        return e
    if w == "slow_streams":
        held = r["held_streams"]
        e.update(rss_mib=round(r["rss_mib"], 1), rss_before_mib=round(r["rss_baseline_mib"], 1), held_streams=held)
        # Where the file limit allowed fewer streams: the memory they added, scaled to 10,000.
        if held:
            e["rss_at_10k_mib"] = round(r["rss_baseline_mib"] + (r["rss_mib"] - r["rss_baseline_mib"]) * 10000 / held, 1)
        return e
    # Streams are timed to their first token; everything else to the last byte.
    t = fb if w == "stream_ttft" else lat
    e.update(rps=round(r["rps"], 1), p50_us=t.get("p50"), p99_us=t.get("p99"), p999_us=t.get("p999"))
    # The names of the one-round reports before: a closed loop's rate is its maximum, an open loop's is
    # what it achieved of the rate offered.
    if r.get("rate") is not None:
        e.update(rate=int(r["rate"]), achieved_rps=e["rps"])
    else:
        e["max_rps"] = e["rps"]
    share = r.get("target_cpu_share")
    if share is not None:
        e["cpu_share"] = round(share, 3)
        if share > 0:
            e["rps_per_core"] = round(r["rps"] / share, 1)
    for k, out in [("target_cpu_us_per_request", "cpu_us_per_request"),
                   ("tcp_out_segs_per_request", "tcp_segs_per_request"),
                   ("target_syscalls_per_request", "syscalls_per_request")]:
        if r.get(k) is not None:
            e[out] = round(r[k], 2)
    return e


measured = {}  # workload -> target -> [per-round entries, with "round"]
for row in rows:
    e = per_round(row["workload"], row["result"])
    e["round"] = row.get("round", 1)
    measured.setdefault(row["workload"], {}).setdefault(row["target"], []).append(e)


def numeric(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


workloads = {}
for w, by_target in measured.items():
    for t, entries in by_target.items():
        keys = sorted({k for e in entries for k, v in e.items() if numeric(v) and k != "round"})
        cell = {}
        spread = {}
        for k in keys:
            vals = [e[k] for e in entries if numeric(e.get(k))]
            if vals:
                cell[k] = round(statistics.median(vals), 2)
                spread[k] = [min(vals), max(vals)]
        cell["spread"] = spread
        cell["rounds"] = entries
        workloads.setdefault(w, {})[t] = cell


def get(w, t, k):
    return (workloads.get(w) or {}).get(t, {}).get(k)


def spread(w, t, k):
    return (workloads.get(w) or {}).get(t, {}).get("spread", {}).get(k)


def added(w, t, k, base="direct"):
    """Median over the rounds of (t's k − base's k) in the same round."""
    a = {e["round"]: e.get(k) for e in (measured.get(w) or {}).get(t, [])}
    b = {e["round"]: e.get(k) for e in (measured.get(w) or {}).get(base, [])}
    diffs = [a[r] - b[r] for r in a if r in b and numeric(a[r]) and numeric(b[r])]
    return round(statistics.median(diffs), 1) if diffs else None


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def num(v, digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}"


def signed(v):
    return "—" if v is None else f"{v:+,.0f}"


def cell(w, t, k, digits=0):
    """The median with the spread of the rounds: `52,476 (51,002–53,101)`."""
    v = get(w, t, k)
    if v is None:
        return "—"
    s = spread(w, t, k)
    if not s or len((measured.get(w) or {}).get(t, [])) < 2:
        return num(v, digits)
    return f"{num(v, digits)} ({num(s[0], digits)}–{num(s[1], digits)})"


def targets_of(w, candidates):
    return [t for t in candidates if t in (workloads.get(w) or {})]


rate_workloads = sorted((w for w in workloads if w.startswith("small_rate_")), key=lambda w: int(w.rsplit("_", 1)[1]))
gw_max = get("small_max", "gateway", "rps") or 0

# The targets of issue 15, exactly these rows: (target, measured, ratio, met).
checks = []


def check(name, measured_text, r, met):
    checks.append((name, measured_text, None if r is None else round(r, 3), met))


for w, label, limit in [("small_max", "small request", 1.10), ("prompt_64k", "64 KiB prompt", 1.00)]:
    g, n = get(w, "gateway", "rps_per_core"), get(w, "nginx", "rps_per_core")
    r = ratio(g, n)
    check(f"throughput per core, gateway ≥ {limit:.2f} × nginx ({label})",
          f"gateway {num(g)} rps/core, nginx {num(n)} rps/core", r, None if r is None else r >= limit)
g, n = get("small_max", "gateway", "cpu_us_per_request"), get("small_max", "nginx", "cpu_us_per_request")
r = ratio(g, n)
check("cpu per request, gateway ≤ 0.9 × nginx (small request)", f"gateway {num(g, 2)} µs, nginx {num(n, 2)} µs",
      r, None if r is None else r <= 0.9)
g, n = get("open_90", "gateway", "p50_us"), get("open_90", "nginx", "p50_us")
r = ratio(g, n)
check(f"open loop at 90 % of the gateway's max ({num(get('open_90', 'gateway', 'rate'))} rps): gateway p50 ≤ 2 × nginx p50",
      f"gateway {num(g)} µs, nginx {num(n)} µs", r, None if r is None else r <= 2)
a, an = added("one_conn", "gateway", "p99_us"), added("one_conn", "nginx", "p99_us")
check("added p99 at one connection over direct ≤ 50 µs (proxy on the driver's CPU)",
      f"gateway {signed(a)} µs (nginx {signed(an)} µs)", ratio(a, 50), None if a is None else a <= 50)
if rate_workloads:
    half = min(rate_workloads, key=lambda w: abs(int(w.rsplit("_", 1)[1]) - gw_max / 2))
    a, an = added(half, "gateway", "p99_us"), added(half, "nginx", "p99_us")
    r = ratio(a, an) if an and an > 0 else None
    check(f"added p99 over direct at half the gateway's max ({half.rsplit('_', 1)[1]} rps) ≤ nginx's",
          f"gateway {signed(a)} µs, nginx {signed(an)} µs", r, None if a is None or an is None else a <= an)
else:
    check("added p99 over direct at half the gateway's max ≤ nginx's", "not measured", None, None)
a = added("stream_ttft", "gateway", "p99_us")
check("TTFT p99 overhead over direct ≤ 100 µs", f"gateway {signed(a)} µs (nginx {signed(added('stream_ttft', 'nginx', 'p99_us'))} µs)",
      ratio(a, 100), None if a is None else a <= 100)
g, n = get("slow_streams", "gateway", "rss_at_10k_mib"), get("slow_streams", "nginx", "rss_at_10k_mib")
held = get("slow_streams", "gateway", "held_streams") or 0
scaled = "" if held >= 10000 else f"; {num(held)} held (file limit), scaled to 10,000"
r = ratio(g, n)
check("10,000 slow streams: gateway RSS ≤ 0.5 × nginx's", f"gateway {num(g, 1)} MiB, nginx {num(n, 1)} MiB{scaled}",
      r, None if r is None else r <= 0.5)

litellm_note = notes.get("litellm")
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "mode": mode,
    "machine": machine,
    "rounds": notes.get("rounds"),
    "notes": notes,
    "targets": {k: {"value": v, "ratio": r, "met": m} for k, v, r, m in checks},
}
with open(out_prefix + ".json", "w") as f:
    json.dump({"meta": meta, "workloads": workloads}, f, indent=2)

rounds = notes.get("rounds", 1)
lines = [f"# Load test ({mode}), {meta['date']}", "", f"Machine: {machine}.", "",
         f"Method: `loadtest/README.md`. Every workload ran in {rounds} alternating rounds (each target once "
         "per round, in the order of the tables); a cell is the median of the rounds and, in brackets, their "
         "spread (min–max). What a proxy adds over `direct` is taken within each round, then its median. "
         "Latency in µs. `CPU share`: the target's CPU time over the window's wall time (1.00 = one core "
         "busy); `rps/core`: the rate over that share; `TCP segs/req`: the machine's TCP segments sent "
         "per request (system-wide, so the proxy's own are its count minus direct's, in `+segs`); "
         "`syscalls/req`: the target's system calls per request (perf, `raw_syscalls:sys_enter`; the gateway "
         "does its I/O through io_uring, where one `io_uring_enter` submits many operations, so its count is "
         "of ring submissions and waits, not of operations).", ""]
if notes.get("syscalls"):
    lines += [f"System calls: {notes['syscalls']}.", ""]
if litellm_note:
    lines += [f"LiteLLM: {litellm_note}.", ""]
elif "litellm" in (workloads.get("small_max") or {}):
    lines += [f"LiteLLM ({notes.get('litellm_mode')}) is slow: it is measured only in `small_max`, `one_conn` "
              f"and `stream_ttft`, at {notes.get('litellm_connections', 16)} connections where the others "
              "have 64 (more only queue inside it).", ""]


def max_table(w, title):
    ts = targets_of(w, WITH_LITELLM)
    out = [f"## {title}", "",
           "| target | max rps | CPU share | rps/core | cpu µs/req | TCP segs/req | +segs | syscalls/req | p50 | p99 | errors |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in ts:
        plus = "—" if t == "direct" else num(added(w, t, "tcp_segs_per_request"), 2)
        out.append(f"| {t} | {cell(w, t, 'rps')} | {cell(w, t, 'cpu_share', 2)} | {cell(w, t, 'rps_per_core')} | "
                   f"{cell(w, t, 'cpu_us_per_request', 2)} | {cell(w, t, 'tcp_segs_per_request', 2)} | {plus} | "
                   f"{cell(w, t, 'syscalls_per_request', 2)} | {cell(w, t, 'p50_us')} | {cell(w, t, 'p99_us')} | "
                   f"{num(get(w, t, 'errors'))} |")
    return out + [""]


lines += max_table("small_max", "Small non-stream chat completion, maximum rate (closed loop, 64 connections)")
lines += max_table("prompt_64k", "64 KiB prompt, maximum rate (closed loop, 64 connections)")

w = "one_conn"
lines += ["## One connection (closed loop, small request): the latency a proxy adds", "",
          "For this workload the proxy is moved onto CPU 0, the driver's and the simulator's (`taskset`), and "
          "back to CPU 1 after: on a core of its own an idle vCPU's wake-up would dominate what it adds.", "",
          "| target | rps | p50 | p99 | added p50 | added p99 | CPU share |", "|---|---|---|---|---|---|---|"]
for t in targets_of(w, WITH_LITELLM):
    lines.append(f"| {t} | {cell(w, t, 'rps')} | {cell(w, t, 'p50_us')} | {cell(w, t, 'p99_us')} | "
                 f"{num(added(w, t, 'p50_us')) if t != 'direct' else '—'} | "
                 f"{num(added(w, t, 'p99_us')) if t != 'direct' else '—'} | {cell(w, t, 'cpu_share', 2)} |")
lines.append("")

lines += ["## Small non-stream chat completion at fixed rates (open loop)", "",
          "Fractions of the gateway's `small_max` median; `open_90` is 90 % of it, the same rate for every target.", "",
          "| rate (rps) | target | p50 | p99 | p999 | added p99 | CPU share | cpu µs/req | errors |",
          "|---|---|---|---|---|---|---|---|---|"]
for w in rate_workloads + (["open_90"] if "open_90" in workloads else []):
    for t in targets_of(w, PROXIES):
        rate = get(w, t, "rate") or w.rsplit("_", 1)[1]
        label = f"{num(rate)} (open_90)" if w == "open_90" else num(float(rate))
        lines.append(f"| {label} | {t} | {cell(w, t, 'p50_us')} | {cell(w, t, 'p99_us')} | {cell(w, t, 'p999_us')} | "
                     f"{num(added(w, t, 'p99_us')) if t != 'direct' else '—'} | {cell(w, t, 'cpu_share', 2)} | "
                     f"{cell(w, t, 'cpu_us_per_request', 2)} | {num(get(w, t, 'errors'))} |")
lines.append("")

w = "frontier"
if w in workloads:
    lines += ["## The frontier: the highest open-loop rate whose p99 stays under 1 ms", "",
              "Short open-loop probes from 10 % of direct's maximum, up by half again until one fails, then "
              "bisection between the last that passed and the first that failed (a bounded number of probes). "
              "0: even the first probe failed.", "",
              "| target | frontier rps | first failed rps | probes (rate: p99, last round) |", "|---|---|---|---|"]
    for t in targets_of(w, PROXIES):
        last = workloads[w][t]["rounds"][-1].get("probes") or []
        probes = ", ".join(f"{num(p['rate'])}: {num(p.get('p99_us'))}{'' if p['pass'] else '✗'}" for p in last)
        lines.append(f"| {t} | {cell(w, t, 'frontier_rps')} | {cell(w, t, 'first_failed_rps')} | {probes} |")
    lines.append("")

w = "stream_ttft"
lines += ["## Streaming: time to first token (16 concurrent streams, 5 ms simulated TTFT)", "",
          "`gateway_anthropic`: the same stream asked as Anthropic's `/v1/messages`, timed to its first "
          "`content_block_delta`.", "",
          "| target | p50 | p99 | p999 | overhead p50 | overhead p99 |", "|---|---|---|---|---|---|"]
for t in targets_of(w, PROXIES + ["gateway_anthropic", "litellm"]):
    lines.append(f"| {t} | {cell(w, t, 'p50_us')} | {cell(w, t, 'p99_us')} | {cell(w, t, 'p999_us')} | "
                 f"{num(added(w, t, 'p50_us')) if t != 'direct' else '—'} | "
                 f"{num(added(w, t, 'p99_us')) if t != 'direct' else '—'} |")
lines.append("")

w = "slow_streams"
lines += ["## Many concurrent slow streams (one token a second): resident memory", "",
          "| target | streams held | RSS MiB | RSS before MiB | at 10,000 streams MiB |", "|---|---|---|---|---|"]
for t in targets_of(w, PROXIES):
    lines.append(f"| {t} | {cell(w, t, 'held_streams')} | {cell(w, t, 'rss_mib', 1)} | {cell(w, t, 'rss_before_mib', 1)} | "
                 f"{cell(w, t, 'rss_at_10k_mib', 1)} |")
lines.append("")

lines += ["## Targets", "", "| target | measured (medians) | ratio | met |", "|---|---|---|---|"]
for k, v, r, m in checks:
    lines.append(f"| {k} | {v} | {'—' if r is None else f'{r:.2f}'} | {'—' if m is None else 'yes' if m else 'no'} |")
lines += ["", "For the absolute targets (µs) the ratio is to the limit.", ""]
with open(out_prefix + ".md", "w") as f:
    f.write("\n".join(lines))

fig, ax = plt.subplots(figsize=(8, 5))
curve = rate_workloads + (["open_90"] if "open_90" in workloads else [])
for t, color in zip(PROXIES, ["tab:green", "tab:blue", "tab:orange", "tab:red"]):
    pts = [(get(w, t, "rate"), get(w, t, "p50_us"), get(w, t, "p99_us")) for w in curve if get(w, t, "rate")]
    if not pts:
        continue
    pts.sort()
    ax.plot([p[0] for p in pts], [p[2] for p in pts], "o-", color=color, label=f"{t} p99")
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "x--", color=color, alpha=0.6, label=f"{t} p50")
ax.set_xlabel("offered rate (requests/s, open loop)")
ax.set_ylabel("latency (µs), median of the rounds")
ax.set_yscale("log")
ax.set_title("Small chat completion: latency against rate")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out_prefix + ".png", dpi=110)
