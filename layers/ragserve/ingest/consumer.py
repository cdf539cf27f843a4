"""The queue consumer: an SQS (FIFO) batch of ingest jobs, applied per collection by
the writer. A collection whose write fails reports all of its messages as failed, so
SQS keeps them (in order) for a retry; other collections in the batch are unaffected."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter, WriteResult


@dataclass(slots=True)
class BatchOutcome:
    results: list[WriteResult] = field(default_factory=list)
    failed_message_ids: list[str] = field(default_factory=list)

    def response(self) -> dict:
        """The Lambda partial-batch response (ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}


def consume(records: Iterable[dict], writer: CollectionWriter, log=None) -> BatchOutcome:
    groups: dict[str, list[tuple[str, IngestJob | None]]] = {}
    for record in records:
        try:
            job = IngestJob.from_json(record["body"])
            group = job.collection
        except (KeyError, ValueError, TypeError):
            job, group = None, str((record.get("attributes") or {}).get("MessageGroupId", "?"))
        groups.setdefault(group, []).append((record["messageId"], job))
    outcome = BatchOutcome()
    for collection, items in groups.items():
        jobs = [job for _, job in items if job is not None]
        if len(jobs) != len(items):  # unreadable message: never silently dropped
            if log:
                log.error("unreadable ingest message", extra={"collection": collection})
            outcome.failed_message_ids += [message_id for message_id, _ in items]
            continue
        try:
            outcome.results.append(writer.apply(collection, jobs))
        except Exception:  # noqa: BLE001 - the messages stay queued and are retried
            if log:
                log.exception("write failed", extra={"collection": collection, "jobs": len(jobs)})
            outcome.failed_message_ids += [message_id for message_id, _ in items]
    return outcome
