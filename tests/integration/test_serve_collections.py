"""`ragserve serve` as a user runs it, over real HTTP on 127.0.0.1: the demo collection
answers the first search, ingests become searchable through the durable queue and the
single writer, Idempotency-Key replays create no second job, searches keep answering
while writes land, and a writer SIGKILLed mid-build loses nothing."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ragserve.ingest.queue import LocalJobQueue
from ragserve.snapshots.local import LocalSnapshotStore
from tests.corruption import flip_byte
from tests.integration.conftest import live_document_ids

WRITE_KEY, READ_KEY = "e2e-write", "e2e-read"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `ragserve serve` subprocess with its own data directory."""

    def __init__(self, data_dir: Path, *, demo: bool, extra_env: dict[str, str] | None = None,
                 ready_status: int = 200) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = {**os.environ, "RAGSERVE_DATA_DIR": str(data_dir), "RAGSERVE_API_KEYS": f"{WRITE_KEY}:write,"
               f"{READ_KEY}:read", "RAGSERVE_RATE_LIMIT_RPS": "1000", "RAGSERVE_RATE_LIMIT_BURST": "1000",
               "RAGSERVE_RECHECK_SECONDS": "0.2", "RAGSERVE_DEMO_COLLECTION": "default" if demo else "",
               **(extra_env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "ragserve.cli", "serve", "--port", str(self.port)],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        # drain stderr all the time: a full pipe would block the server's logging
        self._reader = threading.Thread(target=lambda: self.log.extend(iter(self.proc.stderr.readline, "")),
                                        daemon=True)
        self._reader.start()
        self._wait_ready(ready_status)

    def _wait_ready(self, status: int, timeout: float = 120.0) -> None:
        """Until /health answers ``status`` (200, or 503 for a server meant to be unhealthy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.read_log()[-3000:]
            try:
                if self.request("GET", "/health")[0] == status:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"server's /health did not answer {status}")

    def request(self, method, path, body=None, key=READ_KEY, headers=None):
        """(status, body): the body parsed when it is JSON."""
        status, _, data = self.exchange(method, path, body, key, headers)
        return status, json.loads(data) if data[:1] in (b"{", b"[") else data

    def exchange(self, method, path, body=None, key=READ_KEY, headers=None) -> tuple[int, dict[str, str], bytes]:
        """(status, response headers, raw body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        hdrs = {"x-api-key": key, **(headers or {})}
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=hdrs)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, dict(response.getheaders()), data

    def read_log(self) -> str:
        """What the server wrote to stderr so far."""
        return "".join(self.log)

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.read_log():
            assert time.monotonic() < deadline, f"{text!r} not logged"
            assert self.proc.poll() is None, self.read_log()[-3000:]
            time.sleep(0.05)

    def wait_for_documents(self, collection: str, count: int, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        body = None
        while time.monotonic() < deadline:
            status, body = self.request("GET", f"/v1/collections/{collection}")
            if status == 200 and body["documents"] == count:
                return body
            time.sleep(0.2)
        raise AssertionError(f"{collection} never reached {count} documents: {body}")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self._reader.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("serve-data"), demo=True)
    yield server
    server.stop()


def documents(prefix: str, n: int, start: int = 0) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": f"Document {i} from {prefix}: notes on topic {i % 9} and item {i}.",
             "metadata": {"batch": prefix, "n": i}} for i in range(start, start + n)]


def test_the_demo_collection_answers_the_first_search(server):
    status, body = server.request("POST", "/v1/search", {"query": "What is artificial intelligence?", "k": 3})
    assert status == 200, body
    assert body["index_version"] == 1
    assert body["results"][0]["metadata"]["category"] == "ai"
    assert body["next_offset"] == 3
    status, info = server.request("GET", "/v1/collections/default")
    assert status == 200 and info["documents"] > 800 and info["dtype"] == "f16"
    status, health = server.request("GET", "/health", key="")
    assert status == 200 and health["index_version"] == 1 and health["status"] == "healthy"


def test_a_repeated_search_is_a_query_cache_hit_visible_in_metrics(server):
    first = server.request("POST", "/v1/search", {"query": "Do you like to read books?", "k": 4})
    again = server.request("POST", "/v1/search", {"query": "do you like to READ books?", "k": 4})
    assert first == again and first[0] == 200
    status, metrics = server.request("GET", "/metrics")
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.decode().splitlines()
             if line.startswith("ragserve_cache_")}
    assert status == 200
    assert lines['ragserve_cache_lookups_total{cache="query",result="hit"}'] >= 1
    assert 0 < lines['ragserve_cache_hit_ratio{cache="query"}'] <= 1


def test_ingest_becomes_searchable_and_delete_removes(server):
    status, body = server.request("POST", "/v1/collections/notes/documents",
                                  {"documents": [{"id": "n1", "text": "The lighthouse keeper rows to the island.",
                                                  "metadata": {"kind": "story"}}]}, key=WRITE_KEY)
    assert status == 202 and body["accepted"] == 1 and body["job_id"].startswith("job-")
    server.wait_for_documents("notes", 1)
    status, page = server.request("POST", "/v1/search", {"query": "lighthouse", "collection": "notes"})
    assert status == 200 and page["results"][0]["id"] == "n1"
    assert server.request("DELETE", "/v1/collections/notes/documents/n1", key=WRITE_KEY)[0] == 202
    server.wait_for_documents("notes", 0)


def test_a_read_key_cannot_write(server):
    status, body = server.request("POST", "/v1/collections/notes/documents",
                                  {"documents": [{"id": "x", "text": "x"}]}, key=READ_KEY)
    assert status == 403 and body["error"]["code"] == "forbidden"


def test_a_replayed_post_with_the_same_idempotency_key_creates_no_second_job(server):
    payload = {"documents": documents("idem", 3)}
    headers = {"Idempotency-Key": "retry-me-123"}
    first = server.request("POST", "/v1/collections/idem/documents", payload, key=WRITE_KEY, headers=headers)
    second = server.request("POST", "/v1/collections/idem/documents", payload, key=WRITE_KEY, headers=headers)
    assert first[0] == second[0] == 202
    assert first[1]["job_id"] == second[1]["job_id"]
    server.wait_for_documents("idem", 3)
    queue = LocalJobQueue(server.data_dir / "queue.sqlite3")
    rows = queue._connect().execute("SELECT COUNT(*) FROM messages WHERE message_id LIKE ?",
                                    (first[1]["job_id"] + "%",)).fetchone()
    assert rows[0] == 1
    third = server.request("POST", "/v1/collections/idem/documents", payload, key=WRITE_KEY)
    assert third[1]["job_id"] != first[1]["job_id"]  # no key: a new job (and a no-op write)
    other = server.request("POST", "/v1/collections/idem/documents", {"documents": documents("other", 1)},
                           key=WRITE_KEY, headers=headers)
    assert other[0] == 409 and other[1]["error"]["code"] == "idempotency_key_reused"


def test_concurrent_writes_each_get_their_own_job_and_all_land(server):
    # every function shares one process in `ragserve serve`: requests resolved on many
    # threads at once must not read each other's event (they once took each other's job id)
    from concurrent.futures import ThreadPoolExecutor

    def ingest(i):
        return server.request("POST", "/v1/collections/crowd/documents", {"documents": documents("crowd", 3, 3 * i)},
                              key=WRITE_KEY, headers={"Idempotency-Key": f"crowd-{i}"})

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ingest, range(16)))
    assert [status for status, _ in answers] == [202] * 16
    assert len({body["job_id"] for _, body in answers}) == 16
    server.wait_for_documents("crowd", 48)
    assert live_document_ids(LocalSnapshotStore(server.data_dir), "crowd", server.data_dir / "check") == \
        {d["id"] for d in documents("crowd", 48)}


def test_searches_keep_answering_200_while_ingests_and_deletes_run(server):
    statuses: list[int] = []
    stop = threading.Event()

    def searcher():
        while not stop.is_set():
            status, _ = server.request("POST", "/v1/search", {"query": "topic 3 item", "collection": "busy", "k": 5})
            statuses.append(status)

    server.request("POST", "/v1/collections/busy/documents", {"documents": documents("busy", 50)}, key=WRITE_KEY)
    server.wait_for_documents("busy", 50)
    threads = [threading.Thread(target=searcher) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for round_ in range(5):
            assert server.request("POST", "/v1/collections/busy/documents",
                                  {"documents": documents("busy", 20, start=100 + 20 * round_)},
                                  key=WRITE_KEY)[0] == 202
            assert server.request("DELETE", f"/v1/collections/busy/documents/busy-{round_}", key=WRITE_KEY)[0] == 202
            time.sleep(0.3)
        server.wait_for_documents("busy", 50 + 100 - 5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def wait_for_build(server: Server, collection: str, documents: int, timeout: float = 60.0) -> int:
    """The version number of the first build of ``collection`` that holds ``documents``."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.read_log().splitlines():
            if '"message":"building version"' in line:
                record = json.loads(line)
                if record["collection"] == collection and record["kept"] + record["upserts"] == documents:
                    return record["version"]
        assert time.monotonic() < deadline, f"no build of {documents} documents logged"
        assert server.proc.poll() is None, server.read_log()[-3000:]
        time.sleep(0.02)


def test_a_writer_killed_mid_build_loses_nothing(tmp_path):
    server = Server(tmp_path / "data", demo=False)
    store = LocalSnapshotStore(tmp_path / "data")
    try:
        server.request("POST", "/v1/collections/big/documents", {"documents": documents("seed", 10)}, key=WRITE_KEY)
        server.wait_for_documents("big", 10)
        accepted = 10
        for batch in range(30):  # 3,000 documents: the next build takes seconds
            status, body = server.request("POST", "/v1/collections/big/documents",
                                          {"documents": documents("bulk", 100, start=batch * 100)}, key=WRITE_KEY)
            assert status == 202
            accepted += body["accepted"]
        # the build that holds every accepted document (earlier builds may have published
        # part of them already): killed while it embeds and indexes
        final = wait_for_build(server, "big", accepted)
        server.stop(signal.SIGKILL)
        assert server.proc.returncode == -signal.SIGKILL
        live = store.current("big")
        assert live is not None and live < final  # that build never went live
        store.fetch("big", live, tmp_path / "check")  # and what is live verifies: no half-written version
    finally:
        server.stop()

    restarted = Server(tmp_path / "data", demo=False)
    try:
        info = restarted.wait_for_documents("big", accepted, timeout=180)
        assert info["index_version"] >= 2
        status, page = restarted.request("POST", "/v1/search",
                                         {"query": "Document 2999 from bulk", "collection": "big", "k": 1})
        assert status == 200 and page["results"][0]["id"] == "bulk-2999"
    finally:
        restarted.stop()


def test_a_snapshot_with_a_wrong_sha256_is_refused_and_the_writer_publishes_past_it(server):
    import shutil

    server.request("POST", "/v1/collections/guarded/documents", {"documents": documents("guarded", 5)}, key=WRITE_KEY)
    server.wait_for_documents("guarded", 5)
    base = server.data_dir / "collections" / "guarded"
    # a v2 whose manifest does not match its index file (as a bad upload would be), made live
    shutil.copytree(base / "v1", base / "v2")
    manifest = json.loads((base / "v2" / "manifest.json").read_text())
    manifest["version"] = 2
    (base / "v2" / "manifest.json").write_text(json.dumps(manifest))
    index = base / "v2" / "index.usearch"
    flip_byte(index)
    (base / "CURRENT").write_text("2")

    deadline = time.monotonic() + 30
    while True:
        status, health = server.request("GET", "/health", key="")
        if health["status"] == "degraded" or time.monotonic() > deadline:
            break
        server.request("POST", "/v1/search", {"query": "notes", "collection": "guarded"})  # triggers the re-check
        time.sleep(0.2)
    assert status == 200 and health["status"] == "degraded"
    assert "guarded: v2 refused" in health["checks"]["collections"]
    status, page = server.request("POST", "/v1/search", {"query": "notes on topic 3", "collection": "guarded"})
    assert status == 200 and page["index_version"] == 1  # the old version stays live

    # the writer's next publish builds on v1 and goes past the bad v2: nothing accepted is lost
    assert server.request("POST", "/v1/collections/guarded/documents", {"documents": documents("later", 2)},
                          key=WRITE_KEY)[0] == 202
    assert server.wait_for_documents("guarded", 7, timeout=60)["index_version"] == 3
    ids = {json.loads(line)["id"] for line in (base / "v3" / "docs.jsonl").read_text().splitlines()}
    assert ids == {d["id"] for d in documents("guarded", 5) + documents("later", 2)}
    status, health = server.request("GET", "/health", key="")
    assert health["status"] == "healthy" and health["checks"]["collections"] == "ok", health
