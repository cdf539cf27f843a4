"""Caches, measured through the real search and embed handlers (not a timed test).

    python bench/cache.py [--quick] [--output docs/BENCHMARKS.md]

1. Search handler time on a query-cache hit (the same search repeated) against a miss
   (each search new: query embedding + index search), interleaved in one run; target:
   warm p50 under 2 ms on a hit. With a local `redis-server` on PATH, also the hit time
   through Redis (the AWS tier's backend).
2. Re-embedding 1,000 texts that are already in the embedding cache against the first
   pass; target: at least 10x faster.
The hit rate is read back from the Prometheus registry that /metrics renders.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import corpus  # bench/ is sys.path[0] when run as a script
from report import check, fmt_ratio, load_average, machine, machine_table, median, percentile, write_section

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen | None, str]:
    if not shutil.which("redis-server"):
        return None, ""
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0"


def search_event(query: str, k: int = 10) -> dict:
    from ragserve.local.events import rest_event

    return rest_event("POST", "/v1/search", body=json.dumps({"query": query, "k": k}).encode(),
                      headers={"x-api-key": "bench"})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output", default=str(REPO / "docs" / "BENCHMARKS.md"))
    args = parser.parse_args(argv)
    load_before = load_average()
    rounds = 60 if args.quick else 400
    data_dir = Path(tempfile.mkdtemp(prefix="ragserve-bench-cache-"))
    redis_proc, redis_url = start_redis()
    os.environ.update({"RAGSERVE_DATA_DIR": str(data_dir), "POWERTOOLS_METRICS_DISABLED": "true",
                       "POWERTOOLS_TRACE_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "WARNING"})
    try:
        import ragserve
        from ragserve.documents import Document
        from ragserve.ingest.jobs import IngestJob
        from ragserve.ingest.writer import CollectionWriter
        from ragserve.local.events import LocalContext
        from ragserve.settings import IndexSettings
        from ragserve.snapshots.local import LocalSnapshotStore

        sentences = corpus.sentences()
        passages = corpus.passages(count=64)
        documents = [Document(f"d{i}", text, {"n": i}) for i, text in enumerate(sentences + passages)]
        encoder = ragserve.load_encoder()
        CollectionWriter(LocalSnapshotStore(data_dir), encoder, IndexSettings(), data_dir / "s").apply(
            "default", [IngestJob("bench", 0, "default", tuple(documents))])

        from functions.search import handler as search_handler
        from ragserve.cache.stats import LOOKUPS

        context = LocalContext("search")
        hit_event = search_event("How do cold starts affect serverless functions?")
        hit_body = search_handler.lambda_handler(hit_event, context)["body"].encode()  # warms the cache
        misses, hits = [], []
        for i in range(rounds):  # interleaved: each new query misses both caches
            event = search_event(f"{sentences[i % len(sentences)]} (variant {i})")
            t = time.perf_counter()
            assert search_handler.lambda_handler(event, context)["statusCode"] == 200
            misses.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            assert search_handler.lambda_handler(hit_event, context)["statusCode"] == 200
            hits.append((time.perf_counter() - t) * 1000)
        hit_ratio = LOOKUPS.value(cache="query", result="hit") / max(
            1, LOOKUPS.value(cache="query", result="hit") + LOOKUPS.value(cache="query", result="miss"))

        redis_hits: list[float] = []
        if redis_url:
            from ragserve.cache import build_query_cache, query_cache_key
            from ragserve.settings import CacheSettings

            remote = build_query_cache(CacheSettings(query_url=redis_url, query_max_items=0))  # Redis tier only
            key = query_cache_key(collection="default", index_version=1, query="q", k=10)
            remote.put(key, hit_body)
            for _ in range(rounds):
                t = time.perf_counter()
                assert remote.get(key) is not None
                redis_hits.append((time.perf_counter() - t) * 1000)

        from ragserve.cache import CachingEncoder, LruEmbeddingCache

        texts = [f"{sentences[i % len(sentences)]} (copy {i})" for i in range(1000)]
        first, second = [], []
        for _ in range(3):
            caching = CachingEncoder(encoder, LruEmbeddingCache(5000))
            t = time.perf_counter()
            caching.embed(texts)
            first.append(time.perf_counter() - t)
            t = time.perf_counter()
            caching.embed(texts)
            second.append(time.perf_counter() - t)
    finally:
        if redis_proc:
            redis_proc.terminate()
        shutil.rmtree(data_dir, ignore_errors=True)

    hit_p50, miss_p50 = median(hits), median(misses)
    speedup = median(first) / median(second)
    info = machine(("onnxruntime", "numpy", "redis", "usearch"))
    lines = [
        "## Caches",
        "",
        f"_Generated by `bench/cache.py` ({'quick' if args.quick else 'full'} run). "
        "Do not edit between the markers._",
        "",
        *machine_table(info, load_before, load_average()),
        "",
        f"Search handler (`functions.search.handler.lambda_handler`, whole event in, response out), "
        f"{len(documents)} documents, k=10, {rounds} hit/miss pairs interleaved; in-process query cache "
        "(the embedded default):",
        "",
        "| path | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|",
        f"| query-cache miss (embed query + search) | {miss_p50:.2f} | {percentile(misses, 95):.2f} | "
        f"{percentile(misses, 99):.2f} |",
        f"| query-cache hit | {hit_p50:.2f} | {percentile(hits, 95):.2f} | {percentile(hits, 99):.2f} |",
    ]
    if redis_hits:
        lines.append(f"| Redis tier hit, cache call alone (local redis-server, guarded) | {median(redis_hits):.3f} | "
                     f"{percentile(redis_hits, 95):.3f} | {percentile(redis_hits, 99):.3f} |")
    lines += [
        "",
        f"Hit vs miss: {fmt_ratio(miss_p50 / hit_p50)} faster at p50. Query-cache hit rate in the registry "
        f"(`ragserve_cache_hit_ratio`) over this run: {hit_ratio:.2f}.",
        "",
        "| embedding cache, 1,000 texts | seconds (median of 3) |",
        "|---|---:|",
        f"| first pass (all misses: embed + store) | {median(first):.3f} |",
        f"| second pass (all hits) | {median(second):.4f} |",
        "",
        f"- {check(hit_p50 < 2.0)}: search handler p50 on a query-cache hit {hit_p50:.2f} ms (target < 2 ms)",
        f"- {check(speedup >= 10)}: re-embedding 1,000 cached texts {speedup:.0f}× faster than the first pass "
        "(target ≥ 10×)",
    ]
    body = "\n".join(lines) + "\n"
    print(body)
    if not args.quick or args.output != parser.get_default("output"):
        write_section(Path(args.output), "cache", body)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "layers"))
    raise SystemExit(main())
