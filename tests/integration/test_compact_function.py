"""The compaction function (functions/ingest/compact.py) against the local store: a
collection made of many small writes (as the queue consumer makes it) is merged into
fewer segments with the same documents, vectors and search results, and retention
drops what the merged version no longer references; the sample events in
events/compact/ run through the handler and through ``ragserve invoke``."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter
from ragserve.local.events import LocalContext
from ragserve.search.collection import LoadedCollection
from ragserve.segments.files import read_deletes, read_records
from ragserve.segments.policy import MergePolicy
from ragserve.settings import Env, IndexSettings
from ragserve.snapshots.local import LocalSnapshotStore

EVENTS_DIR = Path(__file__).resolve().parents[2] / "events"
MODULE = "functions.ingest.compact"
HNSW_MIN_ROWS = 8  # small: the merged segment gets an HNSW graph, the writes' segments do not
WRITES = 12  # one segment each: more than the policy allows (10 per tier at least)
TOPICS = ("cloud", "search", "billing", "cooking")


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    data = tmp_path / "data"
    monkeypatch.setenv(Env.DATA_DIR, str(data))
    monkeypatch.setenv(Env.INDEX_HNSW_MIN_ROWS, str(HNSW_MIN_ROWS))
    monkeypatch.setenv(Env.RETENTION_SECONDS, "0")  # only the live version is kept
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")  # (what `ragserve invoke` sets)
    return data


def load_handler():
    """The module imported afresh: it reads its settings (the environment) at import."""
    sys.modules.pop(MODULE, None)
    return importlib.import_module(MODULE)


@pytest.fixture
def compact(data_dir):
    yield load_handler()
    sys.modules.pop(MODULE, None)  # no later import gets this test's data dir


def context() -> LocalContext:
    return LocalContext(function_name="ragserve-test-compact", timeout_s=900.0)


def sample_event(name: str) -> dict:
    return json.loads((EVENTS_DIR / "compact" / name).read_text(encoding="utf-8"))


def build(store: LocalSnapshotStore, encoder, data_dir: Path, collection: str) -> None:
    """WRITES small writes, as the consumer applies them: two new documents each, and
    later writes that replace one document and delete another (deletion vectors)."""
    writer = CollectionWriter(store, encoder, IndexSettings(hnsw_min_rows=HNSW_MIN_ROWS), data_dir / "scratch")
    for n in range(WRITES):
        upserts = [Document(f"{collection}-{n}-{i}", f"Note {n}.{i} of {collection} about {TOPICS[(n + i) % 4]}: "
                            f"item number {n * 2 + i} in the series.", {"topic": TOPICS[(n + i) % 4], "n": n})
                   for i in range(2)]
        deletes: tuple[str, ...] = ()
        if n == 5:
            upserts.append(Document(f"{collection}-0-0", "Rewritten: serverless functions scale to zero.",
                                    {"topic": "cloud", "n": 99}))
        if n == 8:
            deletes = (f"{collection}-1-1",)
        result = writer.apply(collection, [IngestJob(f"job-{n}", 0, collection, tuple(upserts), deletes)])
        assert result.version is not None


def documents(store: LocalSnapshotStore, collection: str, cache: Path) -> dict[str, tuple]:
    """The live documents: id -> (text, metadata, vector bytes)."""
    manifest = store.live_manifest(collection)
    found: dict[str, tuple] = {}
    for entry in manifest.segments:
        records = read_records(store.blob(collection, entry.docs, cache))
        vectors = np.load(store.blob(collection, entry.vectors, cache))
        live = np.ones(entry.rows, dtype=bool)
        if entry.deletes is not None:
            live[read_deletes(store.blob(collection, entry.deletes, cache), entry.rows)] = False
        for row in np.flatnonzero(live).tolist():
            record = records[row]
            assert record["id"] not in found, f"{record['id']} is live twice"
            found[record["id"]] = (record["text"], record.get("metadata"), np.asarray(vectors[row], np.float16)
                                   .tobytes())
    return found


def search(store: LocalSnapshotStore, collection: str, cache: Path, query: np.ndarray) -> list[str]:
    loaded = LoadedCollection.open(store.live_manifest(collection), lambda ref: store.blob(collection, ref, cache))
    page = loaded.search(query, k=5, offset=0, where=None, include_text=False)
    return [hit["id"] for hit in page.results]


def test_direct_invoke_merges_small_segments_keeps_every_document_and_applies_retention(
        compact, data_dir, encoder, tmp_path):
    # GIVEN a collection of many small writes (the sample event's collection)
    event = sample_event("collection.json")
    collection = event["collection"]
    store = LocalSnapshotStore(data_dir)
    build(store, encoder, data_dir, collection)
    before = store.live_manifest(collection)
    policy = MergePolicy(floor_rows=HNSW_MIN_ROWS)
    assert len(before.segments) >= WRITES and policy.find_merge(before.segments) is not None
    docs_before = documents(store, collection, tmp_path / "before")
    query = encoder.embed(["Which notes are about search?"])[0]
    hits_before = search(store, collection, tmp_path / "before", query)
    versions_before = store.versions(collection)
    assert len(docs_before) == 2 * WRITES - 1 and docs_before[f"{collection}-0-0"][0].startswith("Rewritten")

    # WHEN the ingest function's trigger arrives
    result = compact.lambda_handler(event, context())

    # THEN the policy is satisfied with fewer segments, and the summary says what was done
    after = store.live_manifest(collection)
    assert len(after.segments) < len(before.segments)
    assert policy.find_merge(after.segments) is None
    assert after.version > before.version and after.count == before.count == len(docs_before)
    [summary] = result["collections"]
    assert summary["collection"] == collection and summary["error"] is None
    assert summary["merges"] >= 1 and summary["version"] == after.version
    assert summary["segments_merged"] >= len(before.segments) - len(after.segments) + summary["merges"]
    assert summary["rows_purged"] >= 2  # the replaced and the deleted rows
    assert result["merges"] == summary["merges"] and result["errors"] == [] and result["deferred"] == []
    # AND the documents are the same: ids, texts, metadata, vectors, and what a search finds
    assert documents(store, collection, tmp_path / "after") == docs_before
    assert search(store, collection, tmp_path / "after", query) == hits_before
    # AND retention kept only the live version and the blobs it references
    assert store.versions(collection) == [after.version]
    assert sorted(summary["versions_deleted"]) == [v for v in versions_before + list(
        range(before.version + 1, after.version)) if v != after.version]
    assert result["versions_deleted"] == len(summary["versions_deleted"])
    assert summary["blobs_deleted"] > 0 and summary["bytes_deleted"] > 0 and summary["retention_skipped"] is None
    assert {b.sha256 for b in store.blobs(collection)} == after.blobs()
    # AND the scratch space of the run is gone (a warm instance's /tmp does not fill up)
    assert not (data_dir / "scratch" / "compaction").exists()

    # WHEN it runs again THEN there is nothing left to do
    again = compact.lambda_handler(event, context())
    assert again["merges"] == 0 and again["versions_deleted"] == 0 and again["blobs_deleted"] == 0
    assert store.current(collection) == after.version


def test_scheduled_event_compacts_every_collection(compact, data_dir, encoder):
    store = LocalSnapshotStore(data_dir)
    for collection in ("events", "faq"):
        build(store, encoder, data_dir, collection)
    counts = {c: len(store.live_manifest(c).segments) for c in ("events", "faq")}

    result = compact.lambda_handler(sample_event("scheduled.json"), context())

    assert [c["collection"] for c in result["collections"]] == ["events", "faq"]
    for collection in ("events", "faq"):
        assert len(store.live_manifest(collection).segments) < counts[collection]
    assert result["merges"] == sum(c["merges"] for c in result["collections"]) >= 2
    assert result["versions_deleted"] > 0 and result["blobs_deleted"] > 0


def test_scheduled_run_leaves_collections_to_the_next_run_when_time_is_short(compact, data_dir, encoder):
    store = LocalSnapshotStore(data_dir)
    for collection in ("events", "faq"):
        build(store, encoder, data_dir, collection)
    short = LocalContext(function_name="ragserve-test-compact", timeout_s=900.0)
    remaining = iter([900_000, 1_000])  # at the start; before the second collection
    short.get_remaining_time_in_millis = lambda: next(remaining)

    result = compact.lambda_handler(sample_event("scheduled.json"), short)

    assert [c["collection"] for c in result["collections"]] == ["events"] and result["deferred"] == ["faq"]
    assert len(store.live_manifest("faq").segments) >= WRITES  # untouched


def test_invalid_or_missing_collection(compact, data_dir):
    with pytest.raises(Exception, match="invalid collection name"):
        compact.lambda_handler({"collection": "../etc"}, context())
    result = compact.lambda_handler({"collection": "nosuch"}, context())
    assert result["collections"][0]["merges"] == 0 and result["collections"][0]["error"] is None
    assert result["collections"][0]["retention_skipped"] == "no live version"


def test_disabled_compaction_does_nothing(data_dir, monkeypatch, encoder):
    store = LocalSnapshotStore(data_dir)
    build(store, encoder, data_dir, "events")
    version = store.current("events")
    monkeypatch.setenv(Env.COMPACTION_ENABLED, "false")
    try:
        result = load_handler().lambda_handler(sample_event("scheduled.json"), context())
    finally:
        sys.modules.pop(MODULE, None)
    assert result["enabled"] is False and result["collections"] == []
    assert store.current("events") == version and len(store.versions("events")) == WRITES


def test_ragserve_invoke_runs_the_sample_events(compact, data_dir, encoder, capsys):
    from ragserve.cli import main

    store = LocalSnapshotStore(data_dir)
    build(store, encoder, data_dir, "events")
    capsys.readouterr()
    for name in ("collection.json", "scheduled.json"):
        assert main(["invoke", "compact", str(EVENTS_DIR / "compact" / name)]) == 0
        result = json.loads(capsys.readouterr().out)
        assert [c["collection"] for c in result["collections"]] == ["events"]
    assert len(store.live_manifest("events").segments) < WRITES


def test_sample_events_are_what_make_events_writes():
    spec = importlib.util.spec_from_file_location("make_events", EVENTS_DIR / "make_events.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    written = {path: text for path, text in module.rendered_function_files().items() if path.startswith("compact/")}
    assert sorted(written) == ["compact/collection.json", "compact/scheduled.json"]
    assert sorted(p.name for p in (EVENTS_DIR / "compact").iterdir()) == ["collection.json", "scheduled.json"]
    for path, content in written.items():
        assert (EVENTS_DIR / path).read_text(encoding="utf-8") == content, f"run `python events/make_events.py`: {path}"
    scheduled = json.loads(written["compact/scheduled.json"])
    assert scheduled["source"] == "aws.events" and scheduled["detail-type"] == "Scheduled Event"
    assert "collection" not in scheduled
