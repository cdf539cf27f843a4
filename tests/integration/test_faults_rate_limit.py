"""A burst above the per-key rate limit, over real HTTP against `ragserve serve` with a
low token bucket: reads and writes from three keys at once (write-only, read-only and
one key doing both) get 200/202 or a 429 with an integer ``Retry-After`` and the JSON
error shape, never a 5xx; every write answered 202 is in the collection afterwards, and
no write answered 429 is."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from test_serve_collections import READ_KEY, WRITE_KEY, Server, documents

from ragserve.snapshots.local import LocalSnapshotStore
from tests.integration.conftest import live_document_ids

WRITER, READER, MIXED = "burst-writer", "burst-reader", "burst-mixed"
RATE, BURST = 1, 3  # tokens a second, bucket size: far fewer than a burst asks for
PER_KEY = 16
COLLECTION = "metered"


class Outcome(NamedTuple):
    key: str
    kind: str  # "read" or "write"
    doc_id: str | None  # the document a write sent
    status: int
    headers: dict[str, str]
    body: bytes


def test_a_burst_over_the_rate_limit_is_429_with_retry_after_and_loses_no_accepted_write(tmp_path):
    server = Server(tmp_path / "data", demo=False, extra_env={
        "RAGSERVE_API_KEYS": f"{WRITE_KEY}:write,{READ_KEY}:read,{WRITER}:write,{READER}:read,{MIXED}:write",
        "RAGSERVE_RATE_LIMIT_RPS": str(RATE), "RAGSERVE_RATE_LIMIT_BURST": str(BURST)})
    try:
        seed = documents("seed", 4)
        assert server.request("POST", f"/v1/collections/{COLLECTION}/documents", {"documents": seed},
                              key=WRITE_KEY)[0] == 202
        server.wait_for_documents(COLLECTION, len(seed))

        def write(key: str, i: int) -> Outcome:
            doc = documents(key, 1, start=i)
            return Outcome(key, "write", doc[0]["id"], *server.exchange(
                "POST", f"/v1/collections/{COLLECTION}/documents", {"documents": doc}, key=key))

        def read(key: str, i: int) -> Outcome:
            return Outcome(key, "read", None, *server.exchange(
                "POST", "/v1/search", {"query": f"notes on topic {i % 9}", "collection": COLLECTION, "k": 3}, key=key))

        calls = []
        for i in range(PER_KEY):  # interleaved: the keys' requests arrive together
            calls += [(write, WRITER, i), (read, READER, i), ((write, read)[i % 2], MIXED, i)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            outcomes = [f.result() for f in [pool.submit(call, key, i) for call, key, i in calls]]

        assert {o.status for o in outcomes} <= {200, 202, 429}, [o.status for o in outcomes]  # never a 5xx
        for key in (WRITER, READER, MIXED):
            mine = [o.status for o in outcomes if o.key == key]
            assert mine.count(429) >= 1 and len(mine) - mine.count(429) >= BURST, (key, mine)
        for o in outcomes:
            assert o.status in ({"read": 200, "write": 202}[o.kind], 429), o
            if o.status == 429:
                assert o.headers["Content-Type"].startswith("application/json")
                assert o.headers["Retry-After"].isdigit() and int(o.headers["Retry-After"]) >= 1, o.headers
                error = json.loads(o.body)["error"]
                assert set(error) == {"code", "message", "request_id"} and error["code"] == "rate_limited"
                assert error["message"] and error["request_id"]

        # Retry-After is honest: after waiting it, the same key is let through
        refused_read = next(o for o in outcomes if o.key == READER and o.status == 429)
        time.sleep(int(refused_read.headers["Retry-After"]))
        assert read(READER, 0).status == 200

        accepted = {o.doc_id for o in outcomes if o.kind == "write" and o.status == 202}
        refused = {o.doc_id for o in outcomes if o.kind == "write" and o.status == 429}
        assert accepted and refused
        server.wait_for_documents(COLLECTION, len(seed) + len(accepted), timeout=60)
        ids = live_document_ids(LocalSnapshotStore(tmp_path / "data"), COLLECTION, tmp_path / "check")
        assert ids == {d["id"] for d in seed} | accepted  # every 202 landed; no 429 did
    finally:
        server.stop()
