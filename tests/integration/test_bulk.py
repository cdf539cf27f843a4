"""Bulk builds: `ragserve index build` on a process pool, and the Step Functions shard
and merge handlers against S3 on moto (server mode), both through the same core."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from ragserve.search.registry import CollectionRegistry
from ragserve.snapshots.local import LocalSnapshotStore
from ragserve.snapshots.s3 import S3SnapshotStore


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def rows(n, start=0):
    topics = ["astronomy", "gardening", "finance", "football"]
    return [{"id": f"b{i}", "text": f"Note {i} about {topics[i % 4]}: item {i} of the bulk corpus.",
             "metadata": {"topic": topics[i % 4]}} for i in range(start, start + n)]


def test_index_build_command_builds_and_publishes_a_collection(tmp_path, encoder):
    source = tmp_path / "docs.jsonl"
    source.write_text(jsonl(rows(600)) + jsonl([{"id": "b0", "text": "Replaced: the telescope points at Mars."}]))
    env = {**os.environ, "RAGSERVE_DATA_DIR": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "ragserve.cli", "index", "build", "--input", str(source),
                           "--collection", "bulk", "--dtype", "i8", "--workers", "2"],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"collection": "bulk", "version": 1, "documents": 600, "dtype": "i8"}
    assert '"message":"progress"' in done.stderr  # not a terminal: progress as log lines

    store = LocalSnapshotStore(tmp_path / "data")
    registry = CollectionRegistry(store, tmp_path / "cache", recheck_seconds=0, model_id=encoder.model_id,
                                  dimensions=encoder.dimensions)
    collection = registry.get("bulk")
    assert (len(collection), collection.meta.dtype) == (600, "i8")
    top = collection.search(encoder.embed(["telescope and Mars"])[0], k=1, offset=0, where=None, include_text=True)
    assert top.results[0]["id"] == "b0" and top.results[0]["text"].startswith("Replaced")


def test_index_build_command_rejects_bad_input(tmp_path):
    source = tmp_path / "docs.jsonl"
    source.write_text(jsonl(rows(3)) + '{"id": "x"}\n')
    done = subprocess.run([sys.executable, "-m", "ragserve.cli", "index", "build", "--input", str(source),
                           "--collection", "bulk"], capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "RAGSERVE_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 2
    assert "line 4" in done.stderr
    assert not (tmp_path / "data" / "collections" / "bulk").exists()


BULK_SCRIPT = textwrap.dedent("""
    import json, sys
    from ragserve.local.events import LocalContext
    from functions.ingest import bulk
    bucket, keys = sys.argv[1], json.loads(sys.argv[2])
    for key in keys:
        print("SHARD " + json.dumps(bulk.shard_handler(
            {"bucket": bucket, "key": key, "collection": "big", "job_id": "job-1"}, LocalContext("shard"))))
    print("MERGE " + json.dumps(bulk.merge_handler(
        {"bucket": bucket, "collection": "big", "job_id": "job-1", "prefix": "bulk/job-1/shards/"},
        LocalContext("merge"))))
""")


def test_step_functions_shard_and_merge_handlers_on_s3(moto_server, s3_client, s3_bucket, tmp_path, encoder):
    keys = []
    for shard in range(3):
        key = f"bulk/job-1/shards/part-{shard:03d}.jsonl"
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=jsonl(rows(100, start=shard * 100)).encode())
        keys.append(key)
    env = {**os.environ, "RAGSERVE_STORE": "s3", "RAGSERVE_SNAPSHOT_BUCKET": s3_bucket,
           "RAGSERVE_CACHE_DIR": str(tmp_path / "cache"), "AWS_ENDPOINT_URL": moto_server,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run([sys.executable, "-c", BULK_SCRIPT, s3_bucket, json.dumps(keys)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ", 1)[0] in ("SHARD", "MERGE"))
    assert json.loads(lines["MERGE"]) == {"collection": "big", "version": 1, "documents": 300, "shards": 3}

    store = S3SnapshotStore(s3_bucket, client=s3_client)
    registry = CollectionRegistry(store, tmp_path / "fetch", recheck_seconds=0, model_id=encoder.model_id,
                                  dimensions=encoder.dimensions)
    collection = registry.get("big")
    assert len(collection) == 300 and collection.records[0]["id"] == "b0"  # shard order kept
    page = collection.search(encoder.embed(["finance"])[0], k=5, offset=0, where={"topic": "finance"},
                             include_text=False)
    assert len(page.results) == 5
