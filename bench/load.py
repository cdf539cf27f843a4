"""Load test: `ragserve serve` driven by locust at fixed offered rates stepping up to
saturation.

    python bench/load.py [--quick] [--output docs/BENCHMARKS.md]

Starts `ragserve serve` on a free loopback port with a fresh data directory (the demo
`default` collection, 869 documents) and its own keys, then runs locust headless
(bench/locustfile.py): a Zipf-repeating mix of searches, embed batches and ingests at
5 .. 1,000 req/s, 20 s a step, plus one abusive key bursting over its rate limit. Per
step: offered vs achieved rate, end-to-end latency (overall and by operation), errors,
5xx, 429s (normal keys vs the abuser), query/embedding-cache hit rates from /metrics,
CPU of the server vs the load generator, and the handler time a Lambda invocation
would see (the local gateway's Server-Timing header). `--quick` runs three short steps,
prints the section and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import loadmix  # bench/ is sys.path[0] when run as a script
from report import (
    Figure,
    ForeignCpu,
    check,
    count_axis,
    fmt_ms,
    fmt_share,
    load_average,
    machine,
    machine_table,
    write_section,
)
from serve import LocalServe

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.load")
HZ = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def keys() -> dict[str, list[str]]:
    return {"read": [f"load-read-{i:03d}" for i in range(loadmix.READ_KEYS)],
            "write": [f"load-write-{i}" for i in range(loadmix.WRITE_KEYS)],
            "abuser": ["load-abuser"], "metrics": ["load-metrics"]}


def run_locust(server: LocalServe, results: Path, steps, step_seconds: float, warmup_seconds: float) -> int:
    k = keys()
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), str(REPO / "layers"), os.environ.get("PYTHONPATH", "")]),
           "LOAD_READ_KEYS": ",".join(k["read"]), "LOAD_WRITE_KEYS": ",".join(k["write"]),
           "LOAD_ABUSER_KEY": k["abuser"][0], "LOAD_METRICS_KEY": k["metrics"][0],
           "LOAD_STEPS": ",".join(f"{r:g}" for r in steps), "LOAD_STEP_SECONDS": str(step_seconds),
           "LOAD_WARMUP_SECONDS": str(warmup_seconds), "LOAD_WARMUP_RPS": f"{steps[0]:g}",
           "LOAD_RESULTS": str(results), "LOAD_SERVER_PID": str(server.pid), "LOAD_HARNESS_PID": str(os.getpid())}
    budget = warmup_seconds + step_seconds * len(steps) + 30  # a safety net: the shape stops first
    command = [str(Path(sys.executable).parent / "locust"), "-f", str(REPO / "bench" / "locustfile.py"),
               "--headless", "--host", server.url, "--only-summary", "--loglevel", "WARNING",
               "--exit-code-on-error", "0", "--run-time", f"{budget:.0f}s"]
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
    with ForeignCpu(exclude_pids=(server.pid, proc.pid)) as others:
        code = proc.wait(timeout=budget + 120)
    run_locust.foreign = others.share
    return code


def collection_info(server: LocalServe, name: str) -> dict:
    request = urllib.request.Request(f"{server.url}/v1/collections/{name}", headers={"x-api-key": keys()["metrics"][0]})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())
    except OSError:
        return {}


def analyse(data: dict) -> list[dict]:
    """One row per measured step (the warm-up is phase 0)."""
    records = [tuple(r) for r in data["records"]]
    bounds = data["boundaries"]
    rows = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        if start["phase"] == 0:
            continue
        seconds = end["t"] - start["t"]
        stats = loadmix.summarize(records, start["t"] + loadmix.SETTLE_SECONDS, end["t"], abuser_t0=start["t"])
        generator = sum(end[f] - start[f] for f in ("locust_jiffies", "harness_jiffies"))
        served = end["server_jiffies"] - start["server_jiffies"]
        busy = end["busy_jiffies"] - start["busy_jiffies"]
        rows.append({
            "offered": start["offered"], "seconds": seconds, "stats": stats,
            "saturated": stats.saturated(start["offered"]), "locust_saw": start.get("saturated", []),
            "query_hit": loadmix.hit_rate(start["counters"], end["counters"], "query"),
            "embedding_hit": loadmix.hit_rate(start["counters"], end["counters"], "embedding"),
            "server_cores": served / HZ / seconds, "generator_cores": generator / HZ / seconds,
            "others": max(0.0, (busy - served - generator) / (HZ * seconds * CPUS)),
        })
    return rows


def mean_handler_ms(records, window: tuple[float, float]) -> float:
    """Mean Server-Timing handler time of the normal 2xx requests started in ``window``."""
    t0, t1 = window
    values = [r[5] for r in records if r[3] == "normal" and t0 <= r[0] < t1 and 200 <= r[4] < 300
              and not math.isnan(r[5])]
    return sum(values) / len(values) if values else math.nan


def plot(rows: list[dict], output: Path) -> Figure:
    figure = Figure("load", "latency-throughput", "End-to-end latency and achieved rate vs offered rate", output,
                    size=(7.0, 4.6))
    offered = [r["offered"] for r in rows]
    with figure as (_fig, ax):
        for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
            ax.plot(offered, [getattr(r["stats"], q) for r in rows], style, label=f"{q} latency")
        ax.axhline(loadmix.P95_TARGET_MS, color="red", linestyle=":", label="300 ms target (p95)")
        ax.set_yscale("log")
        ax.set_ylabel("latency, ms (client side)")
        ax.set_xlabel("offered rate, req/s")
        count_axis(ax, offered)
        ax.tick_params(axis="x", labelrotation=60, labelsize=8)
        rate = ax.twinx()
        rate.plot(offered, [r["stats"].achieved_rps for r in rows], "d--", color="black", label="achieved req/s")
        rate.plot(offered, offered, ":", color="grey", label="achieved = offered")
        rate.set_yscale("log")
        rate.set_ylabel("achieved req/s")
        lines = ax.get_legend_handles_labels()
        more = rate.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower center", ncol=3,
                  bbox_to_anchor=(0.5, 1.08), frameon=False)
    return figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three short steps; print, write nothing")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    parser.add_argument("--steps", help="offered rates, req/s, comma-separated (default: the full or quick list)")
    parser.add_argument("--step-seconds", type=float, help="seconds per step (default 20, quick 6)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    steps = loadmix.QUICK_STEPS if args.quick else loadmix.STEPS
    if args.steps:
        steps = tuple(float(x) for x in args.steps.split(","))
    step_seconds, warmup_seconds = (6.0, 4.0) if args.quick else (20.0, 10.0)
    step_seconds = args.step_seconds or step_seconds
    write = not args.quick or args.output != parser.get_default("output")

    k = keys()
    api_keys = ",".join([f"{x}:read" for x in k["read"] + k["abuser"] + k["metrics"]]
                        + [f"{x}:write" for x in k["write"]])
    load_before = load_average()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="ragserve-bench-load-") as scratch:
        results = Path(scratch) / "results.json"
        with LocalServe({"RAGSERVE_API_KEYS": api_keys, "RAGSERVE_RATE_LIMIT_RPS": str(loadmix.RATE_LIMIT_RPS),
                         "RAGSERVE_RATE_LIMIT_BURST": str(loadmix.RATE_LIMIT_BURST),
                         "RAGSERVE_DEMO_COLLECTION": "default"}) as server:
            started = time.time()
            code = run_locust(server, results, steps, step_seconds, warmup_seconds)
            wall = time.time() - started
            loadtest = collection_info(server, "loadtest")
            default = collection_info(server, "default")
            server_errors, error_lines, log_lines = server.errors, list(server.error_lines), server.lines
        if code != 0 or not results.exists():
            log.error("locust failed", extra={"exit_code": code})
            return 1
        data = json.loads(results.read_text())
    load_after = load_average()
    rows = analyse(data)
    records = [tuple(r) for r in data["records"]]
    if not rows:
        log.error("no measured step")
        return 1

    saturation = next((i for i, r in enumerate(rows) if r["saturated"]), None)
    below = (saturation - 1) if saturation is not None else len(rows) - 1
    good = rows[below] if below >= 0 else None
    hundred = next((r for r in rows if r["offered"] == loadmix.HUNDRED_X_RPS), None)
    normal_429 = sum(r["stats"].normal_429 for r in rows)
    abuser_sent = sum(r["stats"].abuser_requests for r in rows)
    abuser_429 = sum(r["stats"].abuser_429 for r in rows)
    abuser_retry = sum(r["stats"].abuser_429_with_retry_after for r in rows)
    # handler time (Server-Timing) at the 100x step: what Lambda would bill per request at that rate
    b = data["boundaries"]
    at_100x = next(((b[i + 1]["t"] + loadmix.SETTLE_SECONDS, b[i + 2]["t"]) for i, r in enumerate(rows)
                    if r is hundred), None)
    handler_100x = mean_handler_ms(records, at_100x) if at_100x else math.nan
    lambda_concurrency = loadmix.HUNDRED_X_RPS * handler_100x / 1000

    lines = [
        "## Load test",
        "",
        f"_Generated by `bench/load.py` ({'quick' if args.quick else 'full'} run), "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Do not edit between the markers._",
        "",
        *machine_table({**info, "Packages": info["Packages"] + f", locust {_version('locust')}"}, load_before,
                       load_after),
        "",
        "### Method",
        "",
        f"- **Server**: `ragserve serve` (one Python process: the local API Gateway emulator, every function's "
        f"`lambda_handler`, the queue poller and the single writer) on 127.0.0.1 with a fresh `RAGSERVE_DATA_DIR`, "
        f"the demo `default` collection ({default.get('documents', '?')} documents, chatterbot-corpus), in-process "
        "caches (embedded defaults).",
        f"- **Load generator**: locust {_version('locust')}, headless, one process (`bench/locustfile.py`), on the "
        "same 2 cores. Each step offers a fixed rate: users = rate / 2, each paced at users / rate seconds "
        "between request starts (`constant_throughput`-style pacing), joining at random phases. A user waits "
        "for its answer before the next request, so past saturation the offered rate is not held "
        "(achieved < offered) rather than queueing without bound.",
        f"- **Mix** (normal keys): {loadmix.MIX['search']:.0%} `POST /v1/search` on `default` (k=10) with queries "
        f"drawn from a fixed pool of {loadmix.POOL_SIZE:,} distinct queries (the demo corpus's questions and "
        f"bench/corpus.py sentences, seeded order) with Zipf s={loadmix.ZIPF_S} repeats; "
        f"{loadmix.MIX['embed']:.0%} `POST /v1/embed` batches of 1-{loadmix.MAX_EMBED_BATCH} texts Zipf-drawn from "
        f"{loadmix.POOL_SIZE:,} texts; {loadmix.MIX['ingest']:.0%} `POST /v1/collections/loadtest/documents` "
        "(1-4 new documents, write keys). Ingests go to a separate collection so the writer's new versions do "
        "not change `default`'s index version, which is part of the query-cache key: they cost CPU (the writer "
        "embeds and rebuilds `loadtest` in the same process) but do not reset the search cache's key space.",
        f"- **Keys and the abuser**: there is one rate limit for every key "
        f"(`RAGSERVE_RATE_LIMIT_RPS={loadmix.RATE_LIMIT_RPS}`, `RAGSERVE_RATE_LIMIT_BURST={loadmix.RATE_LIMIT_BURST}`,"
        f" a token bucket per key), so normal traffic is spread over {loadmix.READ_KEYS} read keys and "
        f"{loadmix.WRITE_KEYS} write keys (at {steps[-1]:g} req/s, "
        f"~{steps[-1] * (1 - loadmix.MIX['ingest']) / loadmix.READ_KEYS:.1f} req/s per read key and "
        f"~{steps[-1] * loadmix.MIX['ingest'] / loadmix.WRITE_KEYS:.1f} per write key, below the limit) and one "
        f"abusive key sends {loadmix.ABUSER_BURST} searches at once (concurrently) at the start of every step "
        "(3x its burst). "
        "Its requests are counted apart and are not part of the offered or achieved rates.",
        f"- **Steps**: {warmup_seconds:.0f} s warm-up at {steps[0]:g} req/s, then "
        f"{', '.join(f'{r:g}' for r in steps)} req/s for {step_seconds:.0f} s each; the first "
        f"{loadmix.SETTLE_SECONDS:.0f} s of a step are not measured. The run stops after the first **saturated** "
        f"step: achieved < {loadmix.MIN_ACHIEVED_SHARE:.0%} of offered, p95 > {loadmix.P95_TARGET_MS:.0f} ms, or "
        "any 5xx / no answer. Latency is end to end at the client (request start to last byte), all operations.",
        "- **Cache hit rates**: deltas of `ragserve_cache_lookups_total` from `/metrics` between step boundaries "
        "(the embedding cache is looked up by embed requests and by searches that miss the query cache). "
        "**CPU**: /proc/<pid>/stat of the server vs locust + this script, in cores (2 = the machine); "
        "\"others\" is the share of the machine used by other processes in that step.",
        f"- **Expected traffic**: `EXPECTED_RPS = {loadmix.EXPECTED_RPS:g}` req/s (one team's RAG application: a "
        f"few hundred people asking questions now and then, ~{loadmix.EXPECTED_RPS * 86400:,.0f} requests/day), so "
        f"the checklist's 100x expected traffic is the {loadmix.HUNDRED_X_RPS:g} req/s step.",
        "",
        "### Per step (normal traffic)",
        "",
        "| offered req/s | achieved req/s | requests | p50 ms | p95 ms | p99 ms | errors | 5xx | 429 (normal) | "
        "abuser 429 / sent | query-cache hit | embedding-cache hit | server CPU | load-gen CPU | others | saturated |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        s = r["stats"]
        lines.append(
            f"| {r['offered']:g} | {s.achieved_rps:.1f} | {s.requests:,} | {fmt_ms(s.p50)} | {fmt_ms(s.p95)} | "
            f"{fmt_ms(s.p99)} | {s.errors / max(s.requests, 1):.2%} | {s.errors_5xx} | {s.normal_429} | "
            f"{s.abuser_429} / {s.abuser_requests} | {fmt_share(r['query_hit'])} | {fmt_share(r['embedding_hit'])} | "
            f"{r['server_cores']:.2f} | {r['generator_cores']:.2f} | {fmt_share(r['others'])} | "
            f"{'; '.join(r['saturated']) or 'no'} |")
    lines += [
        "",
        "### Per operation: end-to-end latency and handler time (Server-Timing)",
        "",
        "End to end = at the client. Handler = time inside `lambda_handler` (local gateway's `Server-Timing` "
        "header, 2xx only): what a warm Lambda invocation would bill.",
        "",
        "| offered req/s | operation | requests | p50 ms | p95 ms | p99 ms | handler p50 ms | handler p95 ms |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        for op, (n, p50, p95, p99, h50, h95) in r["stats"].by_op.items():
            lines.append(f"| {r['offered']:g} | {op} | {n:,} | {fmt_ms(p50)} | {fmt_ms(p95)} | {fmt_ms(p99)} | "
                         f"{fmt_ms(h50)} | {fmt_ms(h95)} |")

    figure = plot(rows, Path(args.output)) if write else None
    if figure is not None:
        lines += ["", figure.markdown]

    sat_text = (f"**{rows[saturation]['offered']:g} req/s** ({'; '.join(rows[saturation]['saturated'])})"
                if saturation is not None else f"not reached up to {rows[-1]['offered']:g} req/s")
    good_text = f"**{good['offered']:g} req/s**" if good else "none (the first step saturated)"
    hundred_ok = hundred is not None and not hundred["saturated"]
    lines += [
        "",
        "### Saturation and checks",
        "",
        f"Saturation point: {sat_text}. Highest step below saturation: {good_text}"
        + (f" (achieved {good['stats'].achieved_rps:.1f} req/s, server {good['server_cores']:.2f} cores, "
           f"load generator {good['generator_cores']:.2f} cores)." if good else "."),
        "",
    ]
    checks = []
    if good:
        g = good["stats"]
        checks += [
            (g.errors_5xx == 0, f"zero 5xx at {good['offered']:g} req/s ({g.errors_5xx})"),
            (g.p95 < loadmix.P95_TARGET_MS, f"p95 end to end {g.p95:.0f} ms < {loadmix.P95_TARGET_MS:.0f} ms at "
                                            f"{good['offered']:g} req/s"),
            (good["query_hit"] > 0.80, f"query-cache hit rate {fmt_share(good['query_hit'])} > 80% on the Zipf mix at "
                                       f"{good['offered']:g} req/s"),
        ]
    else:
        checks.append((False, "no step below saturation"))
    checks += [
        (hundred_ok, f"100x expected traffic ({loadmix.HUNDRED_X_RPS:g} req/s) is below saturation"
                     + ("" if hundred is not None else " (step not reached)")),
        (normal_429 == 0, f"normal keys saw no 429 ({normal_429} over the run)"),
        (abuser_429 > 0 and abuser_retry == abuser_429,
         f"the abusive key was limited: {abuser_429} of {abuser_sent} requests answered 429, "
         f"{abuser_retry} with Retry-After"),
        (server_errors == 0, f"no ERROR lines in the server log ({server_errors} of {log_lines:,} lines)"),
    ]
    lines += [f"- {check(ok)}: {text}" for ok, text in checks]
    if good:
        lines += ["", "The first two checks hold by construction at the highest step below saturation (they are "
                  "part of the saturation test); they are printed so a run that saturates at its first step fails."]

    by_op = hundred["stats"].by_op if hundred else {}
    lines += [
        "",
        "### Local ceiling vs Lambda",
        "",
        (f"Locally every function shares one Python process (one GIL, lambda_handler calls on a bounded "
         f"thread pool) on {CPUS} cores with the load generator, so the ceiling above is this machine's, not the "
         f"service's: at "
         f"{good['offered']:g} req/s the server used {good['server_cores']:.2f} cores and locust + this script "
         f"{good['generator_cores']:.2f}, with other processes taking {fmt_share(good['others'])} of the machine."
         if good else "Locally every function shares one Python process on this machine's cores with the load "
         "generator, so the ceiling above is this machine's, not the service's."),
        "In Lambda each concurrent request gets its own execution environment, so throughput scales with "
        "concurrency (up to the account's concurrency limit) and a request's latency is about its handler time "
        "plus API Gateway's overhead (not measured here)."
        + (f" Handler time at the {loadmix.HUNDRED_X_RPS:g} req/s (100x) step, from `Server-Timing`: mean "
           f"**{handler_100x:.1f} ms** over the mix (search p50 {fmt_ms(by_op['search'][4])} / p95 "
           f"{fmt_ms(by_op['search'][5])} ms, embed p50 {fmt_ms(by_op['embed'][4])} / p95 "
           f"{fmt_ms(by_op['embed'][5])} ms, ingest p50 {fmt_ms(by_op['ingest'][4])} ms), against end-to-end "
           f"p50 {fmt_ms(hundred['stats'].p50)} / p95 {fmt_ms(hundred['stats'].p95)} ms here: the difference is the "
           f"local HTTP server, the gateway emulator and queueing for the GIL and the cores. By Little's law "
           f"{loadmix.HUNDRED_X_RPS:g} req/s needs about {loadmix.HUNDRED_X_RPS:g} x {handler_100x / 1000:.4f} s = "
           f"**{lambda_concurrency:.1f} concurrent executions** in Lambda: an estimate from handler times "
           "measured under local contention (so on the high side), not a measurement in AWS. In AWS each search "
           "environment has its own in-process cache tier, so the hit rates above hold only with the shared "
           "Redis / DynamoDB tiers."
           if hundred else ""),
        "",
        (f"What the ceiling is made of: at the {good['offered']:g} req/s step {fmt_share(good['query_hit'])} of "
         "searches were query-cache hits (the Zipf draws come from a pool of 1,000 queries, so the hit rate climbs "
         "as the run goes on), so the local ceiling is mostly that of cached answers through one Python process; "
         "a mix of mostly new queries would saturate sooner, at about one embedded query per 3-5 ms of a core "
         "(see the Caches and Search sections for the uncached handler time)."
         if good else ""),
        "",
        f"After the run the `loadtest` collection held {loadtest.get('documents', '?')} documents at version "
        f"{loadtest.get('index_version', '?')}; `default` stayed at version {default.get('index_version', '?')}. "
        f"Run time {wall:.0f} s; other processes used {fmt_share(getattr(run_locust, 'foreign', math.nan))} of the "
        "machine over the run.",
        "",
        "### How to reproduce",
        "",
        "```",
        "make bench-load            # = .venv/bin/python bench/load.py (installs the bench extra first)",
        ".venv/bin/python bench/load.py --quick   # three 6 s steps, prints this section, writes nothing",
        "```",
    ]
    if error_lines:
        log.warning("server errors", extra={"first": error_lines[:3]})
    body = "\n".join(line for line in lines) + "\n"
    if args.quick:
        print(body)
    if write:
        write_section(Path(args.output), "load", body)
    return 0


def _version(dist: str) -> str:
    from report import version

    return version(dist)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "layers"))
    raise SystemExit(main())
