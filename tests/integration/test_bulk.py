"""Bulk loads: `ragserve index build` and ``build_collection`` on a process pool, and the
Step Functions shard and merge handlers against S3 on moto (server mode), all through
the same core: each shard is stored as a segment of its own, and one manifest commits
them all. A load appends (a document already there under the same id is superseded);
``replace`` makes it the whole collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from ragserve.documents import Document
from ragserve.ingest.bulk import build_collection, commit_shards, embed_shard, store_shard
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter, index_params
from ragserve.search.registry import CollectionRegistry
from ragserve.settings import EncoderSettings, IndexSettings
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.s3 import S3SnapshotStore
from tests.integration.conftest import live_records


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rows(n, start=0):
    topics = ["astronomy", "gardening", "finance", "football"]
    return [{"id": f"b{i}", "text": f"Note {i} about {topics[i % 4]}: item {i} of the bulk corpus.",
             "metadata": {"topic": topics[i % 4]}} for i in range(start, start + n)]


def documents(n, start=0) -> list[Document]:
    return [Document(r["id"], r["text"], r["metadata"]) for r in rows(n, start)]


def open_registry(store, encoder, cache_dir) -> CollectionRegistry:
    return CollectionRegistry(store, cache_dir, recheck_seconds=0, model_id=encoder.model_id,
                              dimensions=encoder.dimensions)


def top_hit(collection, encoder, query: str) -> dict:
    return collection.search(encoder.embed([query])[0], k=1, offset=0, where=None, include_text=True).results[0]


def test_index_build_command_builds_and_publishes_a_collection(tmp_path, encoder):
    source = tmp_path / "docs.jsonl"
    source.write_text(jsonl(rows(600)) + jsonl([{"id": "b0", "text": "Replaced: the telescope points at Mars."}]))
    env = {**os.environ, "RAGSERVE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "ragserve.cli", "index", "build", "--input", str(source),
                           "--collection", "bulk", "--dtype", "i8", "--workers", "2"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"collection": "bulk", "version": 1, "documents": 600, "loaded": 600,
                                       "dtype": "i8", "replace": False}
    assert '"message":"progress"' in done.stderr  # not a terminal: progress as log lines

    store = LocalSnapshotStore(tmp_path / "data")
    collection = open_registry(store, encoder, tmp_path / "cache").get("bulk")
    assert (len(collection), collection.manifest.dtype, collection.manifest.operation) == (600, "i8", "bulk")
    top = top_hit(collection, encoder, "telescope and Mars")
    assert top["id"] == "b0" and top["text"].startswith("Replaced")


def test_index_build_command_rejects_bad_input(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text(jsonl(rows(3)) + '{"id": "x"}\n')
    done = subprocess.run([sys.executable, "-m", "ragserve.cli", "index", "build", "--input", str(source),
                           "--collection", "bulk"], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "RAGSERVE_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 2
    assert "line 4" in done.stderr
    assert not (tmp_path / "data" / "collections" / "bulk").exists()


def test_build_collection_appends_and_replace_replaces(tmp_path, encoder):
    store = LocalSnapshotStore(tmp_path / "data")
    writer = CollectionWriter(store, encoder, IndexSettings(hnsw_min_rows=20), tmp_path / "scratch")
    writer.apply("notes", [IngestJob("j", 0, "notes", tuple(documents(10, start=1000)))])  # written before

    # append: 72 documents in segments of at most 25 rows (25, 25, 22), with b1000 (already
    # in the collection) replaced and b3 repeated across two of the new segments
    load = [*documents(70), Document("b3", "Repeated: a later line about comets wins."),
            Document("b1000", "Replaced: the telescope points at Mars.")]
    version = build_collection(load, "notes", writer, encoder_settings=EncoderSettings(), max_segment_rows=25,
                               workers=1)

    manifest = store.manifest("notes", version)
    assert (version, manifest.operation, manifest.parent, manifest.count) == (2, "bulk", 1, 80)
    assert [(s.rows, s.deleted, s.index is not None) for s in manifest.segments] == \
        [(10, 1, False), (25, 1, True), (25, 0, True), (22, 0, True)]
    live = live_records(store, "notes", tmp_path / "check")  # every id live exactly once
    assert set(live) == {f"b{i}" for i in [*range(70), *range(1000, 1010)]}
    assert live["b1000"]["text"].startswith("Replaced") and live["b3"]["text"].startswith("Repeated")
    collection = open_registry(store, encoder, tmp_path / "cache").get("notes")
    assert top_hit(collection, encoder, "telescope and Mars")["id"] == "b1000"
    assert top_hit(collection, encoder, "a later line about comets")["id"] == "b3"
    assert CollectionWriter(store, encoder, IndexSettings(), tmp_path / "s2").apply(  # hashes kept: no-op
        "notes", [IngestJob("again", 0, "notes", tuple(load[4:40]))]).version is None

    # replace, with a writer of other settings: the new segments and the manifest carry them
    replacer = CollectionWriter(store, encoder, IndexSettings(dtype="i8", hnsw_min_rows=20), tmp_path / "scratch2")
    version = build_collection(documents(30, start=500), "notes", replacer, encoder_settings=EncoderSettings(),
                               max_segment_rows=25, replace=True, workers=1)

    manifest = store.manifest("notes", version)
    assert (version, manifest.operation, manifest.parent, manifest.dtype, manifest.count) == (3, "replace", 2, "i8", 30)
    assert [(s.rows, s.index is not None) for s in manifest.segments] == [(25, True), (5, False)]
    assert set(live_records(store, "notes", tmp_path / "check")) == {f"b{i}" for i in range(500, 530)}
    collection = open_registry(store, encoder, tmp_path / "cache3").get("notes")
    assert collection.version == 3 and len(collection) == 30
    assert top_hit(collection, encoder, "Note 517 about gardening")["id"] == "b517"


def test_stored_shards_are_invisible_until_committed_on_s3(s3_client, s3_bucket, tmp_path, encoder):
    store = S3SnapshotStore(s3_bucket, "ragserve/", client=s3_client)
    writer = CollectionWriter(store, encoder, IndexSettings(hnsw_min_rows=20), tmp_path / "scratch")
    writer.apply("big", [IngestJob("j", 0, "big", tuple(documents(5, start=900)))])
    params = index_params(writer.index_settings)
    load = [*documents(40), Document("b900", "Replaced: a note about orchids.")]
    entries = [store_shard(store, "big", embed_shard(encoder, part), params, tmp_path / "build", number=n,
                           hnsw_min_rows=20) for n, part in enumerate([load[:30], load[30:]])]

    assert store.current("big") == 1  # stored, not committed: no version lists them
    assert len(open_registry(store, encoder, tmp_path / "cache").get("big")) == 5

    result = commit_shards(writer, "big", entries)

    assert (result.version, result.documents, result.segments) == (2, 45, 3)
    assert [s.index is not None for s in store.manifest("big", 2).segments] == [False, True, False]
    live = live_records(store, "big", tmp_path / "check")
    assert set(live) == {f"b{i}" for i in [*range(40), *range(900, 905)]}
    assert live["b900"]["text"] == "Replaced: a note about orchids."
    collection = open_registry(store, encoder, tmp_path / "cache").get("big")
    assert top_hit(collection, encoder, "orchids")["id"] == "b900"


BULK_SCRIPT = textwrap.dedent("""
    import json, sys
    from ragserve.local.events import LocalContext
    from functions.ingest import bulk
    bucket, jobs = sys.argv[1], json.loads(sys.argv[2])
    for job in jobs:
        for key in job["keys"]:
            print("SHARD " + json.dumps(bulk.shard_handler(
                {"bucket": bucket, "key": key, "collection": "big", "job_id": job["job_id"]}, LocalContext("shard"))))
        print(job["job_id"] + " " + json.dumps(bulk.merge_handler(
            {"bucket": bucket, "collection": "big", "job_id": job["job_id"],
             "prefix": "bulk/" + job["job_id"] + "/shards/", "replace": job["replace"]}, LocalContext("merge"))))
""")


def test_step_functions_shard_and_merge_handlers_on_s3(moto_server, s3_client, s3_bucket, tmp_path, encoder):
    def upload(job_id, shards):
        keys = []
        for number, content in enumerate(shards):
            key = f"bulk/{job_id}/shards/part-{number:03d}.jsonl"
            s3_client.put_object(Bucket=s3_bucket, Key=key, Body=jsonl(content).encode())
            keys.append(key)
        return keys

    jobs = [
        {"job_id": "job-1", "replace": False, "keys": upload("job-1", [rows(100, start=s * 100) for s in range(3)])},
        {"job_id": "job-2", "replace": False, "keys": upload("job-2", [
            [*rows(10, start=300), {"id": "b0", "text": "Replaced: the telescope points at Mars."}]])},
    ]
    env = {**os.environ, "RAGSERVE_STORE": "s3", "RAGSERVE_SNAPSHOT_BUCKET": s3_bucket,
           "RAGSERVE_CACHE_DIR": str(tmp_path / "cache"), "RAGSERVE_INDEX_HNSW_MIN_ROWS": "50",
           "AWS_ENDPOINT_URL": moto_server, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", BULK_SCRIPT, s3_bucket, json.dumps(jobs)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith("job-"))
    assert json.loads(lines["job-1"]) == {"collection": "big", "version": 1, "documents": 300, "segments": 3}
    assert json.loads(lines["job-2"]) == {"collection": "big", "version": 2, "documents": 310, "segments": 1}

    store = S3SnapshotStore(s3_bucket, client=s3_client)
    collection = open_registry(store, encoder, tmp_path / "fetch").get("big")
    assert len(collection) == 310
    assert [(s.records[0]["id"], s.entry.deleted, s.entry.index is not None) for s in collection.segments] == \
        [("b0", 1, True), ("b100", 0, True), ("b200", 0, True), ("b300", 0, False)]  # shard order kept
    assert top_hit(collection, encoder, "telescope and Mars")["text"].startswith("Replaced")
    page = collection.search(encoder.embed(["finance"])[0], k=5, offset=0, where={"topic": "finance"},
                             include_text=False)
    assert len(page.results) == 5
    assert set(live_records(store, "big", tmp_path / "check")) == {f"b{i}" for i in range(310)}


@pytest.mark.parametrize(("line", "why"), [
    ('{"id": "a", "text": "\\u200b\\u200c\\u200d"}', "visible"),
    ('{"id": "a", "text": "\\ufeff\\u0301"}', "visible"),
    ('{"id": "a", "text": "fine", "metadata": {"n": 18446744073709551616}}', "numbers"),
    ('{"id": "a", "text": "fine", "metadata": {"n": 9007199254740993}}', "numbers"),
])
def test_bulk_input_follows_the_api_rules(line, why):
    from ragserve.errors import InvalidInput
    from ragserve.ingest.bulk import read_documents

    with pytest.raises(InvalidInput) as info:
        read_documents([line], 8192)

    assert why in info.value.message and info.value.message.startswith("line 1:")


def test_bulk_input_keeps_safe_numbers_and_visible_text():
    from ragserve.ingest.bulk import read_documents

    docs = read_documents(['{"id": "a", "text": "caf\\u00e9\\u0301", "metadata": {"n": 9007199254740991}}'], 8192)

    assert [(d.id, d.metadata["n"]) for d in docs] == [("a", 2**53 - 1)]
