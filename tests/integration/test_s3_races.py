"""Races on S3 (moto in server mode, real boto3 clients): a writer and a compactor
committing to one collection at once, and retention deleting while a reader syncs.
Each ends with every accepted document present exactly once with its last text, and
every deleted one absent. Also the SQS side of storage faults: deferring, dead-letter
and redrive on a real FIFO queue."""

from __future__ import annotations

import random
import threading
import time
import uuid

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.queue import SqsJobQueue
from ragserve.ingest.writer import CollectionWriter
from ragserve.search.registry import CollectionRegistry
from ragserve.segments.compactor import Compactor
from ragserve.segments.policy import MergePolicy
from ragserve.segments.retention import apply_retention
from ragserve.settings import IndexSettings
from ragserve.snapshots.s3 import S3SnapshotStore
from tests.integration.conftest import aws_client, live_records

TOPICS = ["tides", "bread", "orbits", "moss", "glaciers", "violins", "lanterns", "bees"]


def _writes(seed: int, count: int) -> list[tuple[list[Document], list[str]]]:
    """``count`` batches of upserts (new ids and replacements) and deletes."""
    rng = random.Random(seed)
    batches, known = [], []
    for n in range(count):
        docs = [Document(f"d{n}-{j}", f"batch {n} note {j} on {rng.choice(TOPICS)}") for j in range(4)]
        if known:
            old = rng.choice(known)
            docs.append(Document(old, f"rewritten in batch {n}: {rng.choice(TOPICS)}"))
        deletes = [known.pop(rng.randrange(len(known)))] if len(known) > 3 and n % 3 == 0 else []
        known += [d.id for d in docs if d.id not in known and d.id not in deletes]
        batches.append((docs, deletes))
    return batches


def _expected(batches) -> dict[str, str]:
    state: dict[str, str] = {}
    for docs, deletes in batches:
        for d in docs:
            state[d.id] = d.text
        for i in deletes:
            state.pop(i, None)
    return state


def _store(moto_server, s3_bucket) -> S3SnapshotStore:
    return S3SnapshotStore(s3_bucket, "race/", client=aws_client("s3", moto_server))


def test_writer_and_compactor_racing_on_s3_lose_and_double_nothing(moto_server, s3_bucket, encoder, tmp_path):
    store = _store(moto_server, s3_bucket)
    writer = CollectionWriter(store, encoder, IndexSettings(hnsw_min_rows=12), tmp_path / "writer")
    compactor = Compactor(_store(moto_server, s3_bucket), MergePolicy(segments_per_tier=2, max_merge_at_once=3,
                                                                     floor_rows=1),
                          tmp_path / "compactor", hnsw_min_rows=12)
    batches = _writes(seed=7, count=24)
    done, merges, errors = threading.Event(), [], []

    def compact_forever() -> None:
        while not done.is_set():
            try:
                result = compactor.compact_once("race")
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return
            if result is not None:
                merges.append(result)

    writer.apply("race", [IngestJob("seed", 0, "race", tuple(batches[0][0]))])
    thread = threading.Thread(target=compact_forever)
    thread.start()
    try:
        for n, (docs, deletes) in enumerate(batches[1:], 1):
            writer.apply("race", [IngestJob(f"j{n}", 0, "race", tuple(docs), tuple(deletes))])
    finally:
        done.set()
        thread.join(60)

    assert not errors, errors
    assert merges, "the compactor never merged: the race was not exercised"
    live = live_records(store, "race", tmp_path / "check")
    assert {i: r["text"] for i, r in live.items()} == _expected(batches)


def test_retention_never_deletes_what_a_syncing_reader_needs(moto_server, s3_bucket, encoder, tmp_path):
    store = _store(moto_server, s3_bucket)
    writer = CollectionWriter(store, encoder, IndexSettings(), tmp_path / "writer")
    reader = CollectionRegistry(_store(moto_server, s3_bucket), tmp_path / "reader", recheck_seconds=0,
                                model_id=encoder.model_id, dimensions=encoder.dimensions)
    janitor = _store(moto_server, s3_bucket)
    batches = _writes(seed=11, count=16)
    writer.apply("kept", [IngestJob("seed", 0, "kept", tuple(batches[0][0]))])
    reader.get("kept")
    done, seen, deleted, blobs_deleted, errors = threading.Event(), set(), [], [], []

    def read_forever() -> None:
        while not done.is_set():
            try:
                seen.add(reader.get("kept").version)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    def clean_forever() -> None:
        while not done.is_set():
            result = apply_retention(janitor, "kept", window_seconds=0.5)
            deleted.extend(result.versions_deleted)
            blobs_deleted.append(result.blobs_deleted)
            time.sleep(0.05)

    threads = [threading.Thread(target=read_forever), threading.Thread(target=clean_forever)]
    for t in threads:
        t.start()
    try:
        for n, (docs, deletes) in enumerate(batches[1:], 1):
            writer.apply("kept", [IngestJob(f"j{n}", 0, "kept", tuple(docs), tuple(deletes))])
            time.sleep(0.15)
        time.sleep(6.0)  # old blobs age past the window and its clock slack
        writer.apply("kept", [IngestJob("last", 0, "kept", (Document("final", "the last note"),))])
    finally:
        done.set()
        for t in threads:
            t.join(60)

    assert not errors, errors
    assert deleted and sum(blobs_deleted), "retention deleted nothing: the race was not exercised"
    assert reader.health().status == "healthy", reader.health()
    assert len(seen) > 3  # the reader synced many versions while retention ran
    final = reader.get("kept")
    assert final.version == store.current("kept")
    expected = {**_expected(batches), "final": "the last note"}
    assert {i: r["text"] for i, r in live_records(store, "kept", tmp_path / "check").items()} == expected


def _fifo(sqs, name: str, dlq_arn: str | None = None) -> str:
    attributes = {"FifoQueue": "true", "ContentBasedDeduplication": "false"}
    if dlq_arn:
        attributes["RedrivePolicy"] = f'{{"deadLetterTargetArn": "{dlq_arn}", "maxReceiveCount": "1000"}}'
    return sqs.create_queue(QueueName=f"{name}-{uuid.uuid4().hex[:8]}.fifo", Attributes=attributes)["QueueUrl"]


def _records(sqs, url: str, count: int) -> list[dict]:
    """Messages received as the Lambda event source hands them over."""
    got = []
    while len(got) < count:
        for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"],
                                     VisibilityTimeout=60).get("Messages", []):
            got.append({"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                        "attributes": m["Attributes"]})
    return got


def test_sqs_dead_letter_and_redrive_keep_every_job_in_order(moto_server):
    sqs = aws_client("sqs", moto_server)
    dlq = _fifo(sqs, "dlq")
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = SqsJobQueue(_fifo(sqs, "ingest", dlq_arn), client=sqs, dead_letter_url=dlq)
    jobs = [IngestJob(f"job-{n}", 0, "docs", (Document(f"d{n}", f"text {n}"),)) for n in range(3)]
    for job in jobs:
        queue.send(job)

    queue.dead_letter(_records(sqs, queue.queue_url, 3))

    counts = {url: int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
                       ["Attributes"]["ApproximateNumberOfMessages"]) for url in (queue.queue_url, dlq)}
    assert counts == {queue.queue_url: 0, dlq: 3}
    assert queue.redrive() == 3
    back = [IngestJob.from_json(r["body"]) for r in _records(sqs, queue.queue_url, 3)]
    assert [j.job_id for j in back] == [j.job_id for j in jobs]


def test_sqs_defer_hides_jobs_for_the_backoff_without_losing_them(moto_server):
    sqs = aws_client("sqs", moto_server)
    queue = SqsJobQueue(_fifo(sqs, "ingest"), client=sqs)
    queue.send(IngestJob("job-1", 0, "docs", (Document("a", "text"),)))
    records = _records(sqs, queue.queue_url, 1)

    queue.defer(records)

    assert sqs.receive_message(QueueUrl=queue.queue_url, MaxNumberOfMessages=10).get("Messages", []) == []
    sqs.change_message_visibility(QueueUrl=queue.queue_url, ReceiptHandle=records[0]["receiptHandle"],
                                  VisibilityTimeout=0)  # the backoff, elapsed
    again = _records(sqs, queue.queue_url, 1)
    assert IngestJob.from_json(again[0]["body"]).job_id == "job-1"
