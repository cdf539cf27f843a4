"""Locust traffic for bench/load.py (which starts the server and sets the LOAD_* variables).

    locust -f bench/locustfile.py --headless --host http://127.0.0.1:PORT

- ``Client``: one API client per key-holder, paced so that the users together offer the
  step's rate exactly (users = rate / ~2 req/s each, pace = users / rate): 80% searches
  on ``default`` (queries drawn Zipf from a 1,000-query pool), 17% embed batches of 1-16
  texts (Zipf from a 1,000-text pool), 3% ingests of 1-4 documents into ``loadtest``.
- ``Abuser``: one key that sends ``ABUSER_BURST`` searches at once at the start of each
  step, over its token bucket, so 429s are exercised (counted apart).
- ``Steps``: a warm-up, then fixed offered rates stepping up; after each step it reads
  /metrics and the CPU counters, and stops after the first saturated step.

Every request is recorded (start, latency, operation, kind, status, Server-Timing
handler ms, Retry-After present) and written with the step boundaries to LOAD_RESULTS.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import random
import time
import urllib.request

import gevent
import loadmix  # bench/ is on sys.path: locust adds the locustfile's directory
from locust import FastHttpUser, LoadTestShape, events, task
from report import machine_busy_jiffies, process_jiffies

log = logging.getLogger("bench.locustfile")

HOST_READ_KEYS = loadmix.env_list("LOAD_READ_KEYS")
WRITE_KEYS = loadmix.env_list("LOAD_WRITE_KEYS")
ABUSER_KEY = os.environ.get("LOAD_ABUSER_KEY", "")
METRICS_KEY = os.environ.get("LOAD_METRICS_KEY", "")
STEPS = [float(x) for x in loadmix.env_list("LOAD_STEPS")] or list(loadmix.STEPS)
STEP_SECONDS = float(os.environ.get("LOAD_STEP_SECONDS", "20"))
WARMUP_SECONDS = float(os.environ.get("LOAD_WARMUP_SECONDS", "10"))
WARMUP_RPS = float(os.environ.get("LOAD_WARMUP_RPS", "5"))
PER_USER_RPS = 2.0
RESULTS = os.environ.get("LOAD_RESULTS", "")
SERVER_PID = int(os.environ.get("LOAD_SERVER_PID", "0"))
HARNESS_PID = int(os.environ.get("LOAD_HARNESS_PID", "0"))

QUERIES = loadmix.query_pool()
TEXTS = loadmix.text_pool()

RECORDS: list[loadmix.Record] = []
BOUNDARIES: list[dict] = []
STATE = {"pace": 1.0 / PER_USER_RPS, "phase": -1}
_user_numbers = itertools.count()


@events.request.add_listener
def _record(request_type, name, response_time, response_length, response=None, context=None, exception=None,
            start_time=None, **_):
    status = getattr(response, "status_code", 0) or 0
    headers = getattr(response, "headers", None) or {}
    timing = headers.get("Server-Timing") or headers.get("server-timing") or ""
    handler_ms = float(timing.partition("dur=")[2]) if "dur=" in timing else math.nan
    retry_after = bool(headers.get("Retry-After") or headers.get("retry-after"))
    RECORDS.append((start_time or time.time(), float(response_time), name, (context or {}).get("kind", "normal"),
                    int(status), handler_ms, retry_after))


class Client(FastHttpUser):
    """One key-holder's application, paced at STATE['pace'] seconds between requests."""

    network_timeout = 60.0
    connection_timeout = 10.0

    def wait_time(self) -> float:
        return max(0.0, STATE["pace"] - (time.monotonic() - self._task_started))

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        self.key = HOST_READ_KEYS[self.number % len(HOST_READ_KEYS)]
        self.write_key = WRITE_KEYS[self.number % len(WRITE_KEYS)]
        self.rng = random.Random(loadmix.SEED + self.number)
        self.queries = loadmix.Zipf(len(QUERIES), seed=loadmix.SEED + 2 * self.number)
        self.texts = loadmix.Zipf(len(TEXTS), seed=loadmix.SEED + 2 * self.number + 1)
        self.ingested = 0
        self._task_started = time.monotonic()
        gevent.sleep(self.rng.uniform(0, STATE["pace"]))  # users joining a step do not all fire at once

    @task
    def act(self) -> None:
        self._task_started = time.monotonic()
        u = self.rng.random()
        if u < loadmix.MIX["search"]:
            body = {"query": QUERIES[self.queries.draw()], "k": 10, "collection": "default"}
            self._post("/v1/search", body, "search", self.key)
        elif u < loadmix.MIX["search"] + loadmix.MIX["embed"]:
            n = self.rng.randint(1, loadmix.MAX_EMBED_BATCH)
            self._post("/v1/embed", {"texts": [TEXTS[i] for i in self.texts.draw(n)]}, "embed", self.key)
        else:
            docs = []
            for _ in range(self.rng.randint(1, 4)):
                self.ingested += 1
                docs.append({"id": f"u{self.number}-{self.ingested}", "text": TEXTS[self.texts.draw()],
                             "metadata": {"source": "loadtest", "user": self.number}})
            self._post("/v1/collections/loadtest/documents", {"documents": docs}, "ingest", self.write_key)

    def _post(self, path: str, body: dict, name: str, key: str) -> None:
        with self.client.post(path, json=body, headers={"x-api-key": key}, name=name, catch_response=True,
                              context={"kind": "normal"}) as response:
            if not 200 <= response.status_code < 300:
                response.failure(f"HTTP {response.status_code}")


class Abuser(FastHttpUser):
    """A key that bursts over its limit once a step, all requests at once (sent one after
    the other, a slow server would pace them under the limit); its 429s are expected."""

    fixed_count = 1
    network_timeout = 60.0
    concurrency = loadmix.ABUSER_BURST  # connections in its pool

    def wait_time(self) -> float:
        return 0.2

    def on_start(self) -> None:
        self.phase = -1

    @task
    def burst(self) -> None:
        if STATE["phase"] == self.phase or not ABUSER_KEY:
            return
        self.phase = STATE["phase"]
        gevent.joinall([gevent.spawn(self._search, i) for i in range(loadmix.ABUSER_BURST)])

    def _search(self, i: int) -> None:
        body = {"query": QUERIES[i % 10], "k": 10, "collection": "default"}
        with self.client.post("/v1/search", json=body, headers={"x-api-key": ABUSER_KEY}, name="abuser",
                              catch_response=True, context={"kind": "abuser"}) as response:
            if response.status_code in (200, 429):
                response.success()


def _metrics(host: str) -> dict[str, float]:
    request = urllib.request.Request(f"{host}/metrics", headers={"x-api-key": METRICS_KEY})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return loadmix.parse_cache_counters(answer.read().decode())
    except OSError as exc:
        log.warning("metrics not read: %s", exc)
        return {}


class Steps(LoadTestShape):
    """Warm-up, then STEPS offered rates of STEP_SECONDS each; stop after a saturated step."""

    def __init__(self) -> None:
        super().__init__()
        self.phases = [("warm-up", WARMUP_RPS, WARMUP_SECONDS)] + [(f"{r:g}", r, STEP_SECONDS) for r in STEPS]
        self.ends = list(itertools.accumulate(p[2] for p in self.phases))
        self.stopping = False

    def _boundary(self, phase: int) -> None:
        """Close the previous phase (counters, CPU, saturation) and open ``phase``."""
        now = time.time()
        BOUNDARIES.append({
            "phase": phase, "name": self.phases[phase][0] if phase < len(self.phases) else "end",
            "offered": self.phases[phase][1] if phase < len(self.phases) else 0.0, "t": now,
            "counters": _metrics(self.runner.environment.host),
            "server_jiffies": process_jiffies(SERVER_PID), "locust_jiffies": process_jiffies("self"),
            "harness_jiffies": process_jiffies(HARNESS_PID), "busy_jiffies": machine_busy_jiffies(),
        })
        if len(BOUNDARIES) >= 2 and BOUNDARIES[-2]["phase"] > 0:  # a measured step just ended
            previous = BOUNDARIES[-2]
            stats = loadmix.summarize(RECORDS, previous["t"] + loadmix.SETTLE_SECONDS, now)
            why = stats.saturated(previous["offered"])
            previous["saturated"] = why
            log.warning("step %s req/s: achieved %.1f, p95 %.0f ms%s", previous["name"], stats.achieved_rps,
                        stats.p95, f"; saturated: {'; '.join(why)}" if why else "")
            if why:
                self.stopping = True

    def tick(self):
        run_time = self.get_run_time()
        phase = next((i for i, end in enumerate(self.ends) if run_time < end), len(self.phases))
        if phase != STATE["phase"]:
            self._boundary(phase)
            STATE["phase"] = phase
        if self.stopping or phase >= len(self.phases):
            return None
        rate = self.phases[phase][1]
        users = max(1, round(rate / PER_USER_RPS))
        STATE["pace"] = users / rate
        return users + 1, 100.0  # + the abuser


@events.quitting.add_listener
def _write_results(environment, **_):
    if RESULTS:
        with open(RESULTS, "w") as out:
            json.dump({"boundaries": BOUNDARIES, "records": RECORDS,
                       "user_rps": PER_USER_RPS, "steps": STEPS, "step_seconds": STEP_SECONDS}, out)
