"""Turns the harness's raw measurements into loadtest/results/latest.{json,md,png}.

Usage: report.py RAW.jsonl OUT_PREFIX "machine description" quick|full
"""
import datetime
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw_path, out_prefix, machine, mode = sys.argv[1:5]
rows = [json.loads(line) for line in open(raw_path)]
TARGETS = ["direct", "nginx", "gateway"]

workloads = {}
for row in rows:
    w, t, r = row["workload"], row["target"], row["result"]
    lat = r.get("latency_us") or {}
    fb = r.get("first_byte_us") or {}
    entry = {}
    if w == "small_max":
        entry = {"max_rps": round(r["rps"], 1), "p50_us": lat.get("p50"), "p99_us": lat.get("p99"), "p999_us": lat.get("p999")}
    elif w.startswith("small_rate_"):
        entry = {"rate": int(w.rsplit("_", 1)[1]), "achieved_rps": round(r["rps"], 1),
                 "p50_us": lat.get("p50"), "p99_us": lat.get("p99"), "p999_us": lat.get("p999")}
    elif w == "stream_ttft":
        # Time to first token (first body byte of the stream).
        entry = {"max_rps": round(r["rps"], 1), "p50_us": fb.get("p50"), "p99_us": fb.get("p99"), "p999_us": fb.get("p999")}
    elif w == "slow_streams":
        entry = {"rss_mib": round(r["rss_mib"], 1), "rss_before_mib": round(r["rss_baseline_mib"], 1),
                 "held_streams": r["held_streams"],
                 "p50_us": fb.get("p50"), "p99_us": fb.get("p99"), "p999_us": fb.get("p999")}
    if r.get("target_cpu_us_per_request") is not None and w != "slow_streams":
        entry["cpu_us_per_request"] = round(r["target_cpu_us_per_request"], 2)
    entry["errors"] = r["errors"]
    workloads.setdefault(w, {})[t] = entry


def get(w, t, k):
    return (workloads.get(w) or {}).get(t, {}).get(k)


rate_workloads = sorted((w for w in workloads if w.startswith("small_rate_")), key=lambda w: int(w.rsplit("_", 1)[1]))
gw_max = get("small_max", "gateway", "max_rps") or 0

# The four targets of the harness.
checks = []
nginx_max = get("small_max", "nginx", "max_rps") or 0
checks.append(("gateway max rate ≥ nginx's (small non-stream)", f"{gw_max:.0f} vs {nginx_max:.0f} rps", gw_max >= nginx_max))
if rate_workloads:
    half = min(rate_workloads, key=lambda w: abs(int(w.rsplit("_", 1)[1]) - gw_max / 2))
    added = (get(half, "gateway", "p99_us") or 0) - (get(half, "direct", "p99_us") or 0)
    checks.append((f"added p99 over direct ≤ 150 µs at half the gateway's max ({int(half.rsplit('_', 1)[1])} rps)",
                   f"{added} µs", added <= 150))
rss = get("slow_streams", "gateway", "rss_mib") or 0
held = get("slow_streams", "gateway", "held_streams") or 0
if held >= 10000 or not held:
    checks.append((f"10,000 concurrent slow streams in ≤ 256 MiB RSS ({held} held)", f"{rss:.1f} MiB",
                   rss <= 256 and held >= 10000))
else:
    # The file limit allowed fewer streams: scale the memory the streams added to 10,000 (said so).
    before = get("slow_streams", "gateway", "rss_before_mib") or 0
    at_10k = before + (rss - before) * 10000 / held
    checks.append((f"10,000 concurrent slow streams in ≤ 256 MiB RSS (only {held} held: file limit)",
                   f"{rss:.1f} MiB; ≈{at_10k:.0f} MiB at 10,000, extrapolated", at_10k <= 256))
ttft = (get("stream_ttft", "gateway", "p99_us") or 0) - (get("stream_ttft", "direct", "p99_us") or 0)
checks.append(("time-to-first-token overhead ≤ 100 µs p99", f"{ttft} µs", ttft <= 100))
if get("stream_ttft", "gateway_anthropic", "p99_us") is not None:
    # Reported beside the OpenAI one; no target of its own yet.
    a_ttft = get("stream_ttft", "gateway_anthropic", "p99_us") - (get("stream_ttft", "direct", "p99_us") or 0)
    a_p50 = get("stream_ttft", "gateway_anthropic", "p50_us") - (get("stream_ttft", "direct", "p50_us") or 0)
    o_p50 = (get("stream_ttft", "gateway", "p50_us") or 0) - (get("stream_ttft", "direct", "p50_us") or 0)
    checks.append(("Anthropic /v1/messages time-to-first-token overhead over direct (OpenAI's beside it)",
                   f"p50 {a_p50} µs (OpenAI {o_p50} µs), p99 {a_ttft} µs (OpenAI {ttft} µs)", None))

meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "mode": mode,
    "machine": machine,
    "targets": {k: {"value": v, "met": m} for k, v, m in checks},
}
with open(out_prefix + ".json", "w") as f:
    json.dump({"meta": meta, "workloads": workloads}, f, indent=2)


def cell(v, unit=""):
    return "—" if v is None else f"{v}{unit}"


lines = [f"# Load test ({mode}), {meta['date']}", "", f"Machine: {machine}.", "",
         "Method: `loadtest/README.md`. Latency in µs; `cpu/req` is the target process's CPU time per request.", ""]
lines += ["## Small non-stream chat completion, maximum rate (closed loop, 64 connections)", "",
          "| target | max rps | p50 | p99 | p999 | cpu/req µs |", "|---|---|---|---|---|---|"]
for t in TARGETS:
    lines.append(f"| {t} | {cell(get('small_max', t, 'max_rps'))} | {cell(get('small_max', t, 'p50_us'))} | "
                 f"{cell(get('small_max', t, 'p99_us'))} | {cell(get('small_max', t, 'p999_us'))} | "
                 f"{cell(get('small_max', t, 'cpu_us_per_request'))} |")
lines += ["", "## Small non-stream chat completion at fixed rates (open loop)", "",
          "| rate (rps) | target | p50 | p99 | p999 | cpu/req µs |", "|---|---|---|---|---|---|"]
for w in rate_workloads:
    for t in TARGETS:
        lines.append(f"| {w.rsplit('_', 1)[1]} | {t} | {cell(get(w, t, 'p50_us'))} | {cell(get(w, t, 'p99_us'))} | "
                     f"{cell(get(w, t, 'p999_us'))} | {cell(get(w, t, 'cpu_us_per_request'))} |")
lines += ["", "## Streaming: time to first token (16 concurrent streams, 5 ms simulated TTFT)", "",
          "`gateway_anthropic`: the same stream asked as Anthropic's `/v1/messages`, timed to its first "
          "`content_block_delta`.", "",
          "| target | p50 | p99 | p999 |", "|---|---|---|---|"]
for t in TARGETS + ["gateway_anthropic"]:
    lines.append(f"| {t} | {cell(get('stream_ttft', t, 'p50_us'))} | {cell(get('stream_ttft', t, 'p99_us'))} | "
                 f"{cell(get('stream_ttft', t, 'p999_us'))} |")
lines += ["", "## Many concurrent slow streams (one token a second): resident memory", "",
          "| target | streams held | RSS MiB |", "|---|---|---|"]
for t in TARGETS:
    lines.append(f"| {t} | {cell(get('slow_streams', t, 'held_streams'))} | {cell(get('slow_streams', t, 'rss_mib'))} |")
lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
for k, v, m in checks:
    lines.append(f"| {k} | {v} | {'—' if m is None else 'yes' if m else 'no'} |")
lines.append("")
with open(out_prefix + ".md", "w") as f:
    f.write("\n".join(lines))

fig, ax = plt.subplots(figsize=(8, 5))
for t, color in zip(TARGETS, ["tab:green", "tab:blue", "tab:red"]):
    xs = [int(w.rsplit("_", 1)[1]) for w in rate_workloads]
    p99 = [get(w, t, "p99_us") for w in rate_workloads]
    p50 = [get(w, t, "p50_us") for w in rate_workloads]
    ax.plot(xs, p99, "o-", color=color, label=f"{t} p99")
    ax.plot(xs, p50, "x--", color=color, alpha=0.6, label=f"{t} p50")
ax.set_xlabel("offered rate (requests/s, open loop)")
ax.set_ylabel("latency (µs)")
ax.set_yscale("log")
ax.set_title("Small chat completion: latency against rate")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(out_prefix + ".png", dpi=110)
