"""`ragserve serve` as a user runs it, over real HTTP on 127.0.0.1: the demo collection
answers the first search, ingests become searchable through the durable queue and the
single writer, Idempotency-Key replays create no second job, searches keep answering
while writes land; and the storage faults of segmented collections: a writer or a
compaction SIGKILLed mid-publish loses and doubles nothing, a damaged live segment or
manifest or a garbage ``CURRENT`` holds writes back (queued, never dead-lettered,
/health degraded) while searches keep answering, and everything accepted lands once
the store is repaired. Each of those ends with the ground truth read from the store:
every document answered 202 present exactly once, every deleted one absent."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from ragserve.ingest.consumer import MAX_ATTEMPTS
from ragserve.ingest.queue import LocalJobQueue
from ragserve.segments.files import read_deletes, read_ids, read_records
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.manifest import BlobRef, SegmentEntry
from tests.corruption import flipped

WRITE_KEY, READ_KEY = "e2e-write", "e2e-read"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `ragserve serve` subprocess with its own data directory."""

    def __init__(self, data_dir: Path, *, demo: bool, extra_env: dict[str, str] | None = None,
                 ready_status: int = 200, prelude: str = "") -> None:
        self.data_dir = data_dir
        self.port = free_port()
        env = {**os.environ, "RAGSERVE_DATA_DIR": str(data_dir), "RAGSERVE_API_KEYS": f"{WRITE_KEY}:write,"
               f"{READ_KEY}:read", "RAGSERVE_RATE_LIMIT_RPS": "1000", "RAGSERVE_RATE_LIMIT_BURST": "1000",
               "RAGSERVE_RECHECK_SECONDS": "0.2", "RAGSERVE_DEMO_COLLECTION": "default" if demo else "",
               **(extra_env or {})}
        # ``prelude``: Python run in the server process before it serves (the kill hooks below)
        command = ([sys.executable, "-c", f"{prelude}\nfrom ragserve.cli import main\n"
                    f"raise SystemExit(main(['serve', '--port', '{self.port}']))"] if prelude
                   else [sys.executable, "-m", "ragserve.cli", "serve", "--port", str(self.port)])
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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

    def logged(self, message: str, **fields) -> int:
        """How many JSON log records say ``message`` with these fields."""
        count = 0
        for line in self.read_log().splitlines():
            if f'"message":"{message}"' not in line:
                continue
            record = json.loads(line)
            count += all(record.get(k) == v for k, v in fields.items())
        return count

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
    assert_exactly_once(LocalSnapshotStore(server.data_dir), "crowd", accepted=documents("crowd", 48))


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


# -- the ground truth: what the store holds ----------------------------------------------


def live_records(store, collection: str, cache_dir: Path | None = None) -> list[dict]:
    """Every live row of ``collection``'s live version, read from its blobs, each verified
    (a document stored twice is listed twice). ``cache_dir``: where the s3 store downloads."""
    manifest = store.manifest(collection, store.require_current(collection))
    found: list[dict] = []
    for entry in manifest.segments:
        for ref in entry.blobs():  # the index and the vectors too: all of it verifies
            store.blob(collection, ref, cache_dir)
        records = read_records(store.blob(collection, entry.docs, cache_dir))
        ids, _ = read_ids(store.blob(collection, entry.ids, cache_dir))
        assert [r["id"] for r in records] == ids and len(ids) == entry.rows, entry.id
        deleted = set()
        if entry.deletes is not None:
            deleted = set(read_deletes(store.blob(collection, entry.deletes, cache_dir), entry.rows).tolist())
        assert len(deleted) == entry.deleted, entry.id
        found += [r for row, r in enumerate(records) if row not in deleted]
    assert len(found) == manifest.count
    return found


def assert_exactly_once(store, collection: str, *, accepted: Iterable[dict | str], deleted: Iterable[str] = (),
                        cache_dir: Path | None = None) -> list[dict]:
    """Every accepted document present exactly once (with the text it was last sent with),
    every deleted one absent, nothing else there."""
    last: dict[str, str | None] = {}
    for doc in accepted:
        last[doc if isinstance(doc, str) else doc["id"]] = None if isinstance(doc, str) else doc["text"]
    gone = set(deleted)
    records = live_records(store, collection, cache_dir)
    counts = Counter(r["id"] for r in records)
    assert not {i: n for i, n in counts.items() if n > 1}, "documents stored twice"
    assert not gone & set(counts), "deleted documents are back"
    assert set(counts) == set(last) - gone
    texts = {r["id"]: r["text"] for r in records}
    for doc_id, text in last.items():
        assert text is None or doc_id in gone or texts[doc_id] == text, f"{doc_id}: not its last text"
    return records


def queue_of(data_dir: Path) -> LocalJobQueue:
    return LocalJobQueue(data_dir / "queue.sqlite3")


def hurry_deferred(data_dir: Path, collection: str) -> None:
    """Jobs held back by a storage fault wait 5 s between tries: make them due now."""
    queue_of(data_dir)._connect().execute(
        "UPDATE messages SET visible_at = 0 WHERE grp = ? AND state = 'pending' AND receipt IS NULL", (collection,))


def wait_until(what: str, check: Callable[[], object], *, timeout: float = 60.0,
               meanwhile: Callable[[], object] | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        if meanwhile:
            meanwhile()
        time.sleep(0.1)


def queue_drained(server: Server, collection: str) -> bool:
    rows = queue_of(server.data_dir)._connect().execute(
        "SELECT COUNT(*) FROM messages WHERE grp = ? AND state != 'done'", (collection,)).fetchone()
    return rows[0] == 0


def held_back(server: Server, collection: str, *, tries: int = MAX_ATTEMPTS + 2) -> None:
    """The collection's jobs have been tried ``tries`` times (more than the dead-letter
    limit), each refused by a storage fault; and they are still queued, the tries not
    counted toward the dead-letter queue."""
    assert tries > MAX_ATTEMPTS
    wait_until(f"{tries} storage faults of {collection}",
               lambda: server.logged(STORAGE_FAULT, collection=collection) >= tries,
               meanwhile=lambda: hurry_deferred(server.data_dir, collection))
    queue = queue_of(server.data_dir)
    assert "dead" not in queue.counts()
    pending, receives = queue._connect().execute(
        "SELECT COUNT(*), MAX(receive_count) FROM messages WHERE grp = ? AND state = 'pending'",
        (collection,)).fetchone()
    assert pending >= 1 and receives < MAX_ATTEMPTS  # however many tries


STORAGE_FAULT = "storage fault: jobs stay queued until the store is repaired"


def health_of(server: Server) -> dict:
    status, health = server.request("GET", "/health", key="")
    assert status in (200, 503) and isinstance(health, dict), health
    assert not PATH_IN_TEXT.search(json.dumps(health).encode()), health  # no file-system path on a public route
    return health


def ingest(server: Server, collection: str, docs: list[dict]) -> list[dict]:
    status, body = server.request("POST", f"/v1/collections/{collection}/documents", {"documents": docs},
                                  key=WRITE_KEY)
    assert status == 202 and body["accepted"] == len(docs), body
    return docs


def delete(server: Server, collection: str, doc_id: str) -> str:
    status, body = server.request("DELETE", f"/v1/collections/{collection}/documents/{doc_id}", key=WRITE_KEY)
    assert status == 202, body
    return doc_id


def blob_path(data_dir: Path, collection: str, ref: BlobRef) -> Path:
    return data_dir / "collections" / collection / "blobs" / ref.sha256


def flip_in_place(path: Path) -> tuple[int, int]:
    """Invert the middle byte of ``path`` where it lies (no truncation: a reader may have
    the file memory-mapped); returns (offset, original byte) for ``put_back``."""
    offset = path.stat().st_size // 2
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0xFF]))
    return offset, byte


def put_back(path: Path, damage: tuple[int, int]) -> None:
    offset, byte = damage
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(bytes([byte]))


PATH_IN_TEXT = re.compile(rb"/(tmp|work|home|root|var|usr)/")  # a file-system path shown to a caller


# -- a writer killed mid-publish, a compaction killed mid-merge ----------------------------

# Run in the server process before it serves. Once the test creates the ARMED file, the
# process SIGKILLs itself at KILL_POINT of the next KILL_OP ("write": the writer applying
# a batch; "compact": a merge after it), and while the GATE file exists the queue is not
# polled, so every job the test sends lands in one batch.
KILL_HOOK = '''
import os, signal, time
from pathlib import Path

from ragserve.ingest.writer import CollectionWriter
from ragserve.local.queue_poller import QueuePoller
from ragserve.segments.compactor import Compactor
from ragserve.snapshots import local

ARMED, GATE = Path(os.environ["TEST_KILL_ARMED"]), Path(os.environ["TEST_KILL_GATE"])
OP, POINT = os.environ["TEST_KILL_OP"], os.environ["TEST_KILL_POINT"]
doing = []


def kill_at(point):
    if point == POINT and doing and doing[-1] == OP and ARMED.exists():
        os.kill(os.getpid(), signal.SIGKILL)


def during(op, method):
    def run(*args, **kwargs):
        doing.append(op)
        try:
            return method(*args, **kwargs)
        finally:
            doing.pop()
    return run


def gated(method):
    def run(*args, **kwargs):
        while GATE.exists():
            time.sleep(0.02)
        return method(*args, **kwargs)
    return run


put_blob, publish, write_text = local.LocalSnapshotStore.put_blob, local.LocalSnapshotStore.publish, \\
    local.atomic_write_text


def put_blob_then_kill(self, collection, source):
    ref = put_blob(self, collection, source)
    kill_at("blob stored")
    return ref


def write_text_or_kill(path, text):
    if path.name == "CURRENT":
        kill_at("manifest stored")  # the manifest is written, CURRENT not swapped yet
    write_text(path, text)


def publish_then_kill(self, manifest, *, expected_current):
    publish(self, manifest, expected_current=expected_current)
    kill_at("published")  # CURRENT swapped; the jobs not acknowledged yet


CollectionWriter._apply_once = during("write", CollectionWriter._apply_once)
Compactor.compact_once = during("compact", Compactor.compact_once)
QueuePoller.poll_once = gated(QueuePoller.poll_once)
local.LocalSnapshotStore.put_blob = put_blob_then_kill
local.LocalSnapshotStore.publish = publish_then_kill
local.atomic_write_text = write_text_or_kill
'''

KILL_POINTS = ["blob stored", "manifest stored", "published"]
# A small collection compacts: a segment with over 20 % of its rows deleted is merged.
COMPACTING = {"RAGSERVE_DELETES_PCT_ALLOWED": "20"}


def armed_server(tmp_path: Path, op: str, point: str) -> Server:
    return Server(tmp_path / "data", demo=False, prelude=KILL_HOOK, extra_env={
        **COMPACTING, "TEST_KILL_OP": op, "TEST_KILL_POINT": point,
        "TEST_KILL_ARMED": str(tmp_path / "armed"), "TEST_KILL_GATE": str(tmp_path / "gate")})


def send_then_kill(server: Server, tmp_path: Path, send: Callable[[], None]) -> None:
    """Arm the hook, ``send`` the jobs (queued, not yet polled), open the gate: the
    batch they make is applied and the server kills itself at the armed point."""
    (tmp_path / "gate").touch()
    (tmp_path / "armed").touch()
    send()
    (tmp_path / "gate").unlink()
    server.proc.wait(timeout=120)
    server.stop()
    assert server.proc.returncode == -signal.SIGKILL, server.read_log()[-3000:]


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_writer_killed_mid_publish_loses_and_doubles_nothing(tmp_path, point):
    store = LocalSnapshotStore(tmp_path / "data")
    server = armed_server(tmp_path, "write", point)
    accepted: list[dict] = []
    deleted: list[str] = []

    def send() -> None:  # one batch: new documents, two replaced, one deleted, one added and deleted
        accepted.extend(ingest(server, "big", documents("more", 5)))
        changed = [{**d, "text": d["text"] + " Revised."} for d in documents("seed", 2)]
        accepted.extend(ingest(server, "big", changed))  # replaces seed-0 and seed-1
        deleted.append(delete(server, "big", "seed-2"))
        deleted.append(delete(server, "big", "more-4"))

    try:
        accepted += ingest(server, "big", documents("seed", 6))
        server.wait_for_documents("big", 6)
        before = store.current("big")
        send_then_kill(server, tmp_path, send)
    finally:
        server.stop()

    # the old version stays live until the swap, and whatever is live verifies
    assert (store.current("big") == before) == (point != "published")
    assert (max(store.versions("big")) > store.current("big")) == (point == "manifest stored")  # never made live
    assert store.manifest("big", store.current("big")).operation == "write"
    if point == "published":  # the batch is in, though never acknowledged
        assert_exactly_once(store, "big", accepted=accepted, deleted=deleted)
    else:
        assert_exactly_once(store, "big", accepted=documents("seed", 6))

    restarted = Server(tmp_path / "data", demo=False, extra_env=COMPACTING)
    try:
        info = restarted.wait_for_documents("big", 6 + 5 - 2)
        wait_until("the queue is drained", lambda: queue_drained(restarted, "big"))
        assert "dead" not in queue_of(restarted.data_dir).counts()
        assert_exactly_once(store, "big", accepted=accepted, deleted=deleted, cache_dir=tmp_path / "check")
        status, page = restarted.request("POST", "/v1/search", {"query": "Document 3 from more", "collection": "big",
                                                                 "k": 1})
        assert status == 200 and page["results"][0]["id"] == "more-3"
        assert page["index_version"] == info["index_version"]
    finally:
        restarted.stop()


@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_compaction_killed_mid_merge_loses_and_doubles_nothing(tmp_path, point):
    store = LocalSnapshotStore(tmp_path / "data")
    server = armed_server(tmp_path, "compact", point)
    accepted: list[dict] = []
    deleted: list[str] = []

    def send() -> None:  # one batch: a new segment, and 2 of the seed segment's 5 rows deleted
        accepted.extend(ingest(server, "merged", documents("more", 3)))
        deleted.extend(delete(server, "merged", f"seed-{i}") for i in (1, 3))

    try:
        accepted += ingest(server, "merged", documents("seed", 5))
        server.wait_for_documents("merged", 5)
        send_then_kill(server, tmp_path, send)
    finally:
        server.stop()

    # killed after the write was published, while compaction merged its segments
    live = store.manifest("merged", store.current("merged"))
    assert live.operation == ("compact" if point == "published" else "write")
    assert (max(store.versions("merged")) > live.version) == (point == "manifest stored")
    assert_exactly_once(store, "merged", accepted=accepted, deleted=deleted, cache_dir=tmp_path / "check")

    restarted = Server(tmp_path / "data", demo=False, extra_env=COMPACTING)
    try:
        restarted.wait_for_documents("merged", 6)
        wait_until("the queue is drained", lambda: queue_drained(restarted, "merged"))  # replayed: no-ops
        # one more write: compaction runs again after it
        accepted += ingest(restarted, "merged", documents("last", 1))
        deleted.append(delete(restarted, "merged", "more-0"))
        restarted.wait_for_documents("merged", 6)
        wait_until("the queue is drained", lambda: queue_drained(restarted, "merged"))
        assert "dead" not in queue_of(restarted.data_dir).counts()
        assert_exactly_once(store, "merged", accepted=accepted, deleted=deleted, cache_dir=tmp_path / "check")
        assert any(v.operation == "compact" for v in
                   (store.manifest("merged", n) for n in store.versions("merged"))), "no merge was committed"
    finally:
        restarted.stop()


# -- damage to the live version: writes wait, searches go on --------------------------------


def damage_live(server: Server, collection: str, target: str) -> tuple[Path, tuple[int, int]]:
    """Flip one byte of the live manifest or of a blob of the newest segment; returns
    the file and what ``put_back`` needs."""
    store = LocalSnapshotStore(server.data_dir)
    version = store.current(collection)
    if target == "manifest":
        path = server.data_dir / "collections" / collection / "versions" / f"v{version}.json"
    else:
        newest = store.manifest(collection, version).segments[-1]
        path = blob_path(server.data_dir, collection, getattr(newest, target))
    return path, flip_in_place(path)


@pytest.mark.parametrize("target", ["docs", "ids", "vectors", "manifest"])
def test_a_damaged_live_version_holds_writes_until_it_is_restored(server, target):
    collection = f"damaged-{target}"
    store = LocalSnapshotStore(server.data_dir)
    accepted = ingest(server, collection, documents("first", 5))
    server.wait_for_documents(collection, 5)
    accepted += ingest(server, collection, documents("second", 3))  # the newest segment
    server.wait_for_documents(collection, 8)
    live = store.current(collection)

    # GIVEN one byte of the live version altered
    path, damage = damage_live(server, collection, target)

    # WHEN writes come in THEN they are accepted, tried again and again and held back:
    # never published past the damage, never dead-lettered
    accepted += ingest(server, collection, documents("during", 2))
    accepted += ingest(server, collection, [{**documents("second", 1)[0], "text": "A second thought."}])
    deleted = [delete(server, collection, "first-0")]
    held_back(server, collection)
    assert store.current(collection) == live

    # AND /health says which collection's writes wait, and why; searches go on answering
    health = health_of(server)
    assert health["status"] == "degraded", health
    reason = health["checks"]["writer"]
    assert f"{collection}: writes held back by a storage fault" in reason
    assert ("store_unreadable" if target == "manifest" else "snapshot_corrupt") in reason, reason
    status, page = server.request("POST", "/v1/search", {"query": "notes on topic 2", "collection": collection})
    assert status == 200 and page["index_version"] == live

    # WHEN the byte is restored THEN the queued jobs land, once
    put_back(path, damage)
    wait_until("the held-back jobs land", lambda: queue_drained(server, collection),
               meanwhile=lambda: hurry_deferred(server.data_dir, collection))
    info = server.wait_for_documents(collection, 8 + 2 - 1)
    assert info["index_version"] > live
    assert_exactly_once(store, collection, accepted=accepted, deleted=deleted)
    assert "dead" not in queue_of(server.data_dir).counts()
    health = health_of(server)
    assert health["checks"]["writer"] == "ok" and health["status"] == "healthy", health


def test_a_garbage_current_keeps_searches_on_the_loaded_version_and_holds_writes(server):
    collection = "pointer"
    store = LocalSnapshotStore(server.data_dir)
    accepted = ingest(server, collection, documents("first", 4))
    server.wait_for_documents(collection, 4)
    live = store.current(collection)
    pointer = server.data_dir / "collections" / collection / "CURRENT"
    original = pointer.read_bytes()

    # GIVEN garbage in CURRENT
    pointer.write_bytes(b"\x00\xffnot a version\n")

    # THEN searches keep answering from the loaded version, /health says degraded, and no
    # answer (errors included) is a 5xx or shows a file-system path
    answers = []

    def ask() -> None:
        answers.append(server.exchange("POST", "/v1/search", {"query": "topic 1", "collection": collection}))

    health = wait_until("CURRENT is reported unreadable",
                        lambda: "CURRENT unreadable" in (h := health_of(server))["checks"]["collections"] and h,
                        meanwhile=ask)
    assert health["status"] == "degraded"
    assert f"{collection}: CURRENT unreadable (snapshot_corrupt), serving v{live}" in health["checks"]["collections"]
    ask()
    searches = list(answers)
    answers.append(server.exchange("GET", f"/v1/collections/{collection}"))
    answers.append(server.exchange("POST", "/v1/search", {"query": "x", "collection": collection, "k": 0}))  # a 4xx
    answers.append(server.exchange("POST", "/v1/search", {"query": "x", "collection": "absent"}))  # a 404
    for status, _, body in answers:
        assert status < 500 and not PATH_IN_TEXT.search(body), (status, body)
    assert {json.loads(body)["index_version"] for _, _, body in searches} == {live}
    assert answers[-3][0] == 200 and json.loads(answers[-3][2])["index_version"] == live
    assert answers[-2][0] in (400, 422) and answers[-1][0] == 404

    # AND writes are accepted and wait
    accepted += ingest(server, collection, documents("during", 3))
    deleted = [delete(server, collection, "first-1")]
    held_back(server, collection)
    assert pointer.read_bytes() == b"\x00\xffnot a version\n"  # nothing published over it
    assert f"{collection}: writes held back" in health_of(server)["checks"]["writer"]

    # WHEN CURRENT is restored THEN they land, once
    pointer.write_bytes(original)
    wait_until("the held-back jobs land", lambda: queue_drained(server, collection),
               meanwhile=lambda: hurry_deferred(server.data_dir, collection))
    assert server.wait_for_documents(collection, 4 + 3 - 1)["index_version"] > live
    assert_exactly_once(store, collection, accepted=accepted, deleted=deleted)
    health = wait_until("health is healthy", lambda: (h := health_of(server))["status"] == "healthy" and h,
                        meanwhile=ask)
    assert health["checks"]["collections"] == "ok" and health["checks"]["writer"] == "ok"


def test_a_next_version_with_an_altered_blob_is_refused_and_holds_writes_until_repaired(server):
    collection = "guarded"
    store = LocalSnapshotStore(server.data_dir)
    accepted = ingest(server, collection, documents("guarded", 5))
    server.wait_for_documents(collection, 5)
    v1 = store.manifest(collection, 1)

    # GIVEN a v2 made live whose segment names a docs blob stored with other bytes (a bad
    # copy or restore): its manifest verifies, the blob does not
    docs = blob_path(server.data_dir, collection, v1.segments[0].docs).read_bytes() + b"\n"  # same records
    good = BlobRef(hashlib.sha256(docs).hexdigest(), len(docs))
    blob_path(server.data_dir, collection, good).write_bytes(flipped(docs))
    entry = v1.segments[0]
    forged = SegmentEntry(id="s2-0", rows=entry.rows, vectors=entry.vectors, docs=good, ids=entry.ids)
    v2 = v1.successor(2, [forged], "repair", parent=1)
    (server.data_dir / "collections" / collection / "versions" / "v2.json").write_bytes(v2.to_json())
    (server.data_dir / "collections" / collection / "CURRENT").write_text("2\n")

    # THEN readers refuse v2 and keep v1 live, /health says degraded
    def search() -> tuple[int, dict]:
        return server.request("POST", "/v1/search", {"query": "notes on topic 3", "collection": collection})

    health = wait_until("v2 is refused", lambda: "v2 refused" in (h := health_of(server))["checks"]["collections"]
                        and h, meanwhile=search)
    assert health["status"] == "degraded"
    assert f"{collection}: v2 refused (snapshot_corrupt), serving v1" in health["checks"]["collections"]
    status, page = search()
    assert status == 200 and page["index_version"] == 1

    # WHEN more documents are accepted THEN the writer holds them: it does not publish a
    # version that carries the altered blob on
    accepted += ingest(server, collection, documents("later", 2))
    held_back(server, collection)
    assert store.current(collection) == 2
    assert f"{collection}: writes held back" in health_of(server)["checks"]["writer"]

    # WHEN the blob is repaired THEN they land on top of v2: nothing lost, nothing doubled
    blob_path(server.data_dir, collection, good).write_bytes(docs)
    wait_until("the held-back jobs land", lambda: queue_drained(server, collection),
               meanwhile=lambda: hurry_deferred(server.data_dir, collection))
    assert server.wait_for_documents(collection, 7)["index_version"] == 3
    assert_exactly_once(store, collection, accepted=accepted)
    health = health_of(server)
    assert health["status"] == "healthy" and health["checks"]["collections"] == "ok", health
