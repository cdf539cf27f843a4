"""Bulk build steps for the Step Functions Distributed Map (infra/constructs/bulk_pipeline.py).

``shard_handler({"bucket", "key", "collection", "job_id"})`` embeds one JSONL shard
(``{"id", "text", "metadata"}`` per line) and writes ``bulk/<job>/embedded/<shard>.jsonl``
and ``.npy`` (float16 vectors) to the bucket. ``merge_handler({"bucket", "collection",
"job_id", "prefix"})`` reads every embedded shard, builds one snapshot and publishes it
as the collection's next version. Both use the same core as ``ragserve index build``.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import orjson
from aws_lambda_powertools.utilities.typing import LambdaContext

from ragserve.api.app import InitResult
from ragserve.ingest.bulk import Shard, embed_shard, merge_shards, read_documents
from ragserve.ingest.writer import index_params
from ragserve.model.encoder import load_encoder
from ragserve.observability.telemetry import Telemetry
from ragserve.settings import IngestSettings
from ragserve.snapshots.format import validate_collection
from ragserve.stores import open_store

SETTINGS = IngestSettings.from_env()
telemetry = Telemetry("bulk")
logger = telemetry.logger
ENCODER = InitResult(lambda: load_encoder(settings=SETTINGS.encoder), telemetry, "model")
_s3 = None


def s3():
    global _s3
    if _s3 is None:
        import boto3

        _s3 = boto3.client("s3")
    return _s3


def embedded_prefix(job_id: str) -> str:
    return f"bulk/{job_id}/embedded/"


def _shard_name(key: str) -> str:
    return key.rsplit("/", 1)[-1].removesuffix(".jsonl")


@logger.inject_lambda_context
def shard_handler(event: dict, context: LambdaContext) -> dict:
    bucket, key, job_id = event["bucket"], event["key"], event["job_id"]
    validate_collection(event["collection"])
    body = s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    documents = read_documents(body.splitlines(), SETTINGS.limits.max_text_chars)
    shard = embed_shard(ENCODER.get(), documents)
    base = embedded_prefix(job_id) + _shard_name(key)
    vectors = io.BytesIO()
    np.save(vectors, shard.vectors)
    s3().put_object(Bucket=bucket, Key=base + ".npy", Body=vectors.getvalue())
    s3().put_object(Bucket=bucket, Key=base + ".jsonl", Body=b"\n".join(orjson.dumps(r) for r in shard.records))
    logger.info("shard embedded", extra={"key": key, "documents": len(documents), "job_id": job_id})
    return {"shard": key, "documents": len(documents)}


def _embedded_shards(bucket: str, job_id: str) -> list[Shard]:
    keys: list[str] = []
    for page in s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=embedded_prefix(job_id)):
        keys += [item["Key"] for item in page.get("Contents", []) if item["Key"].endswith(".npy")]
    shards = []
    for key in sorted(keys):  # shard order = key order: deterministic versions
        vectors = np.load(io.BytesIO(s3().get_object(Bucket=bucket, Key=key)["Body"].read()))
        lines = s3().get_object(Bucket=bucket, Key=key.removesuffix(".npy") + ".jsonl")["Body"].read()
        records = [orjson.loads(line) for line in lines.splitlines() if line.strip()]
        if len(records) != len(vectors):
            raise ValueError(f"{key}: {len(vectors)} vectors for {len(records)} documents")
        shards.append(Shard(records, vectors))
    return shards


@logger.inject_lambda_context
def merge_handler(event: dict, context: LambdaContext) -> dict:
    collection = validate_collection(event["collection"])
    shards = _embedded_shards(event["bucket"], event["job_id"])
    encoder = ENCODER.get()
    with tempfile.TemporaryDirectory() as scratch:  # /tmp in Lambda
        version = merge_shards(open_store(SETTINGS.store), collection, shards, model_id=encoder.model_id,
                               params=index_params(SETTINGS.index), scratch_dir=Path(scratch),
                               threads=encoder.threads)
    documents = sum(len(s.records) for s in shards)
    logger.info("bulk build published", extra={"collection": collection, "version": version,
                                                "documents": documents, "shards": len(shards)})
    return {"collection": collection, "version": version, "documents": documents, "shards": len(shards)}
