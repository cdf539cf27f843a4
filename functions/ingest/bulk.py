"""Bulk load steps for the Step Functions Distributed Map (infra/constructs/bulk_pipeline.py).

``shard_handler({"bucket", "key", "collection", "job_id"})`` embeds one JSONL shard
(``{"id", "text", "metadata"}`` per line), stores it as a segment of its own in the
collection's store (blobs only: no version lists it yet) and writes the segment's entry
to ``bulk/<job>/segments/<shard>.json``. ``merge_handler({"bucket", "collection",
"job_id", "prefix", "replace"})`` commits every shard's segment with one manifest: it
builds nothing, so it takes seconds whatever the load's size. Appends by default (a
document already in the collection under the same id is superseded); ``"replace":
true`` makes the load the whole collection. Both use the same core as ``ragserve index
build``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve.api.app import InitResult
from ragserve.ingest.bulk import commit_shards, embed_shard, read_documents, store_shard
from ragserve.ingest.writer import CollectionWriter
from ragserve.model.encoder import load_encoder
from ragserve.observability.telemetry import Telemetry
from ragserve.settings import IngestSettings
from ragserve.snapshots.format import validate_collection
from ragserve.snapshots.manifest import SegmentEntry
from ragserve.stores import open_store

SETTINGS = IngestSettings.from_env()
telemetry = Telemetry("bulk")
logger = telemetry.logger
ENCODER = InitResult(lambda: load_encoder(settings=SETTINGS.encoder), telemetry, "model")
SCRATCH = Path(tempfile.gettempdir()) / "ragserve-bulk"  # /tmp in Lambda
_s3 = None


def s3():
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def segments_prefix(job_id: str) -> str:
    return f"bulk/{job_id}/segments/"


def _shard_name(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".jsonl")


def _writer() -> CollectionWriter:
    return CollectionWriter(open_store(SETTINGS.store), ENCODER.get(), SETTINGS.index, SCRATCH, log=logger)


@logger.inject_lambda_context
def shard_handler(event: dict, context: LambdaContext) -> dict:
    bucket, key, job_id = event["bucket"], event["key"], event["job_id"]
    collection = validate_collection(event["collection"])
    body = s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    documents = read_documents(body.splitlines(), SETTINGS.limits.max_text_chars)
    if not documents:
        return {"shard": key, "documents": 0}
    writer = _writer()
    params = writer.shard_params(collection, replace=bool(event.get("replace")))
    shard = embed_shard(writer.encoder, documents)
    entry = store_shard(writer.store, collection, shard, params, SCRATCH / "build",
                        hnsw_min_rows=writer.hnsw_min_rows, threads=writer.encoder.threads)
    s3().put_object(Bucket=bucket, Key=segments_prefix(job_id) + _shard_name(key) + ".json",
                    Body=orjson.dumps(entry.to_dict()), ContentType="application/json")
    logger.info("shard stored", extra={"key": key, "documents": len(documents), "job_id": job_id,
                                       "bytes": entry.bytes})
    return {"shard": key, "documents": len(documents)}


def _stored_segments(bucket: str, job_id: str) -> list[SegmentEntry]:
    keys: list[str] = []
    for page in s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=segments_prefix(job_id)):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".json")]
    # shard order = key order: with a repeated id across shards, the later shard wins
    return [SegmentEntry.from_dict(orjson.loads(s3().get_object(Bucket=bucket, Key=key)["Body"].read()))
            for key in sorted(keys)]


@logger.inject_lambda_context
def merge_handler(event: dict, context: LambdaContext) -> dict:
    collection = validate_collection(event["collection"])
    entries = _stored_segments(event["bucket"], event["job_id"])
    result = commit_shards(_writer(), collection, entries, replace=bool(event.get("replace")))
    logger.info("bulk load committed", extra={"collection": collection, "version": result.version,
                                              "documents": result.documents, "shards": len(entries)})
    return {"collection": collection, "version": result.version, "documents": result.documents,
            "segments": len(entries)}
