"""The load test's traffic and arithmetic, shared by bench/locustfile.py (which sends the
traffic) and bench/load.py (which starts the server and locust and writes the report).
No locust import here: load.py must not pull in gevent's monkey patching.

- ``query_pool()``: 1,000 distinct, realistic queries, in a fixed (seeded) rank order:
  the questions of the demo collection (chatterbot-corpus) and the bench corpus's
  sentences; ``text_pool()``: 1,000 distinct texts to embed (demo answers + sentences).
- ``Zipf``: draws ranks with P(rank r) ∝ r^-s from a seeded generator, so popular
  queries repeat the way real traffic does and the caches see it.
- ``summarize``: one step's figures from the raw request records.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from report import percentile

# The checklist's "100x expected traffic". Expected: one team's RAG application, a few
# hundred users asking a question now and then, each question = one search (plus an
# embed or an ingest now and then): ~1 request/s on average, ~86k requests a day.
EXPECTED_RPS = 1.0
HUNDRED_X_RPS = 100 * EXPECTED_RPS

# Offered rates (req/s), one step each; HUNDRED_X_RPS is one of them.
STEPS: tuple[float, ...] = (5, 10, 25, 50, HUNDRED_X_RPS, 150, 200, 300, 400, 500, 600, 800, 1000)
QUICK_STEPS: tuple[float, ...] = (5, 25, HUNDRED_X_RPS)

MIX = {"search": 0.80, "embed": 0.17, "ingest": 0.03}  # share of normal requests by operation
ZIPF_S = 1.1
POOL_SIZE = 1000
SEED = 20240611
MAX_EMBED_BATCH = 16

# A step saturates when any of these holds (normal traffic, i.e. not the abuser's).
MIN_ACHIEVED_SHARE = 0.90  # achieved / offered
P95_TARGET_MS = 300.0
SETTLE_SECONDS = 2.0  # the start of each step (users joining) is not measured

# The per-key token bucket (one setting for every key: RAGSERVE_RATE_LIMIT_RPS/_BURST).
# Normal traffic is spread over READ_KEYS keys so each stays far below it; the abuser
# key sends ABUSER_BURST requests at once at the start of each step.
RATE_LIMIT_RPS = 10
RATE_LIMIT_BURST = 20
READ_KEYS = 400
WRITE_KEYS = 10
ABUSER_BURST = 3 * RATE_LIMIT_BURST


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _pool(candidates: Iterable[str], size: int, seed: int) -> list[str]:
    seen: set[str] = set()
    unique = []
    for text in candidates:
        key = _normal(text)
        if text.strip() and key not in seen:
            seen.add(key)
            unique.append(text.strip())
    random.Random(seed).shuffle(unique)  # rank order: popular queries come from both sources
    if len(unique) < size:
        raise ValueError(f"only {len(unique)} distinct texts for a pool of {size}")
    return unique[:size]


def query_pool(size: int = POOL_SIZE) -> list[str]:
    import corpus  # bench/

    from ragserve.local.demo import qa_pairs

    return _pool([q for _, q, _ in qa_pairs()] + corpus.sentences(), size, SEED)


def text_pool(size: int = POOL_SIZE) -> list[str]:
    import corpus

    from ragserve.local.demo import qa_pairs

    return _pool([a for _, _, a in qa_pairs()] + corpus.sentences(), size, SEED + 1)


class Zipf:
    """Ranks 0..n-1 with P(r) ∝ (r+1)^-s, from a seeded generator."""

    def __init__(self, n: int, s: float = ZIPF_S, seed: int = SEED) -> None:
        weights = np.arange(1, n + 1, dtype=np.float64) ** -s
        self._cdf = np.cumsum(weights / weights.sum())
        self._rng = np.random.default_rng(seed)

    def draw(self, size: int | None = None):
        u = self._rng.random(size)
        ranks = np.searchsorted(self._cdf, u, side="right")
        return np.minimum(ranks, len(self._cdf) - 1) if size is not None else min(int(ranks), len(self._cdf) - 1)


# --------------------------------------------------------------------------- measuring

# One request: start (epoch s), latency ms, operation, kind ("normal"/"abuser"), HTTP
# status (0: no response), handler ms from Server-Timing (nan: none), Retry-After given.
Record = tuple[float, float, str, str, int, float, bool]


def parse_cache_counters(text: str) -> dict[str, float]:
    """``{"query/hit": n, "query/miss": n, "embedding/hit": ...}`` from /metrics text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ragserve_cache_lookups_total{"):
            labels, _, value = line.partition("} ")
            parts = dict(p.split("=", 1) for p in labels.split("{", 1)[1].split(","))
            out[f"{parts['cache'].strip(chr(34))}/{parts['result'].strip(chr(34))}"] = float(value)
    return out


def hit_rate(before: dict[str, float], after: dict[str, float], cache: str) -> float:
    hits = after.get(f"{cache}/hit", 0) - before.get(f"{cache}/hit", 0)
    misses = after.get(f"{cache}/miss", 0) - before.get(f"{cache}/miss", 0)
    return hits / (hits + misses) if hits + misses > 0 else float("nan")


@dataclass(frozen=True)
class StepStats:
    requests: int  # normal requests started in the window
    achieved_rps: float  # normal responses completed in the window, per second
    p50: float
    p95: float
    p99: float
    by_op: dict[str, tuple[int, float, float, float, float, float]]  # n, p50, p95, p99, handler p50, p95
    errors: int  # normal: status >= 400 or no response
    errors_5xx: int  # normal: 5xx or no response
    normal_429: int
    abuser_requests: int
    abuser_429: int
    abuser_429_with_retry_after: int

    def saturated(self, offered: float) -> list[str]:
        """Why this step is saturated (empty: it is not)."""
        why = []
        if self.achieved_rps < MIN_ACHIEVED_SHARE * offered:
            why.append(f"achieved {self.achieved_rps:.0f} < {MIN_ACHIEVED_SHARE:.0%} of {offered:g} req/s")
        if not math.isnan(self.p95) and self.p95 > P95_TARGET_MS:
            why.append(f"p95 {self.p95:.0f} ms > {P95_TARGET_MS:.0f} ms")
        if self.errors_5xx:
            why.append(f"{self.errors_5xx} 5xx / no response")
        return why


def summarize(records: Iterable[Record], t0: float, t1: float, abuser_t0: float | None = None) -> StepStats:
    """Normal requests started in [t0, t1) (latency), responses completed in it (rate);
    abuser requests started in [abuser_t0, t1)."""
    records = list(records)
    started = [r for r in records if r[3] == "normal" and t0 <= r[0] < t1]
    completed = sum(1 for r in records if r[3] == "normal" and t0 <= r[0] + r[1] / 1000 < t1)
    a0 = t0 if abuser_t0 is None else abuser_t0
    abuser = [r for r in records if r[3] == "abuser" and a0 <= r[0] < t1]
    by_op = {}
    for op in MIX:
        rows = [r for r in started if r[2] == op]
        ok = [r[5] for r in rows if 200 <= r[4] < 300 and not math.isnan(r[5])]
        by_op[op] = (len(rows), percentile([r[1] for r in rows], 50), percentile([r[1] for r in rows], 95),
                     percentile([r[1] for r in rows], 99), percentile(ok, 50), percentile(ok, 95))
    latencies = [r[1] for r in started]
    return StepStats(
        requests=len(started), achieved_rps=completed / max(t1 - t0, 1e-9),
        p50=percentile(latencies, 50), p95=percentile(latencies, 95), p99=percentile(latencies, 99), by_op=by_op,
        errors=sum(1 for r in started if r[4] >= 400 or r[4] == 0),
        errors_5xx=sum(1 for r in started if r[4] >= 500 or r[4] == 0),
        normal_429=sum(1 for r in started if r[4] == 429),
        abuser_requests=len(abuser), abuser_429=sum(1 for r in abuser if r[4] == 429),
        abuser_429_with_retry_after=sum(1 for r in abuser if r[4] == 429 and r[6]),
    )


def env_list(name: str) -> list[str]:
    return [x for x in os.environ.get(name, "").split(",") if x]
