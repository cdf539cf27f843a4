"""The queue consumer: an SQS (FIFO) batch of ingest jobs, applied per collection by
the writer. A collection whose write fails reports all of its messages as failed, so
the queue keeps them (in order) for a retry; other collections in the batch are
unaffected.

Two kinds of failure, two fates:

- a **storage fault** (the live version cannot be read, the store refuses a write):
  the jobs are fine and will land once the store is repaired. They stay queued, are
  retried with backoff and never count toward the dead-letter queue (``deferred``).
- anything else (a message that cannot be parsed, a bug): after ``max_attempts``
  receives the messages are set aside in the dead-letter queue (``poison``), from
  which ``ragserve queue redrive`` brings them back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ragserve.ingest.jobs import IngestJob
from ragserve.ingest.writer import CollectionWriter, WriteResult
from ragserve.snapshots.errors import PointerConflict, SnapshotError

MAX_ATTEMPTS = 5


def is_storage_fault(exc: BaseException) -> bool:
    """A failure of the store, not of the jobs: retry them, never dead-letter them."""
    if isinstance(exc, PointerConflict):
        return False  # lost a race five times over: an ordinary retry
    if isinstance(exc, SnapshotError | OSError):
        return True
    return type(exc).__module__.startswith(("botocore", "boto3", "urllib3"))


@dataclass(slots=True)
class BatchOutcome:
    results: list[WriteResult] = field(default_factory=list)
    failed_message_ids: list[str] = field(default_factory=list)  # stay queued, retried
    deferred: list[dict] = field(default_factory=list)  # records failed by a storage fault (a subset of failed)
    poison: list[dict] = field(default_factory=list)  # records to move to the dead-letter queue (not failed)
    fault: str | None = None  # the last storage fault, for /health and the logs
    faults: dict[str, str] = field(default_factory=dict)  # collection -> its storage fault, safe for /health

    def response(self) -> dict:
        """The Lambda partial-batch response (ReportBatchItemFailures)."""
        return {"batchItemFailures": [{"itemIdentifier": m} for m in self.failed_message_ids]}


def receive_count(record: dict) -> int:
    try:
        return int((record.get("attributes") or {}).get("ApproximateReceiveCount", 1))
    except (TypeError, ValueError):
        return 1


def consume(records: Iterable[dict], writer: CollectionWriter, log=None, *,
            max_attempts: int = MAX_ATTEMPTS) -> BatchOutcome:
    groups: dict[str, list[tuple[dict, IngestJob | None]]] = {}
    for record in records:
        try:
            job = IngestJob.from_json(record["body"])
            group = job.collection
        except (KeyError, ValueError, TypeError):
            job, group = None, str((record.get("attributes") or {}).get("MessageGroupId", "?"))
        groups.setdefault(group, []).append((record, job))
    outcome = BatchOutcome()
    for collection, items in groups.items():
        jobs = [job for _, job in items if job is not None]
        if len(jobs) != len(items):  # unreadable message: never silently dropped
            if log:
                log.error("unreadable ingest message", extra={"collection": collection})
            _failed(outcome, [r for r, _ in items], max_attempts)
            continue
        try:
            outcome.results.append(writer.apply(collection, jobs))
        except Exception as exc:  # noqa: BLE001 - the messages stay queued and are retried
            records_ = [r for r, _ in items]
            if is_storage_fault(exc):
                reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                if log:
                    log.error("storage fault: jobs stay queued until the store is repaired", extra={
                        "collection": collection, "jobs": len(jobs), "code": getattr(exc, "code", "storage"),
                        "reason": reason})
                outcome.fault = reason
                # an OSError's text names files: /health gets the error class only
                outcome.faults[collection] = (f"{exc.code}: {exc.message}" if isinstance(exc, SnapshotError)
                                              else type(exc).__name__)
                outcome.failed_message_ids += [r["messageId"] for r in records_]
                outcome.deferred += records_
            else:
                if log:
                    log.exception("write failed", extra={"collection": collection, "jobs": len(jobs)})
                _failed(outcome, records_, max_attempts)
    return outcome


def _failed(outcome: BatchOutcome, records: list[dict], max_attempts: int) -> None:
    """Retry, or set aside once a group's messages have been tried ``max_attempts`` times
    (all of the group's: FIFO order is kept by dead-lettering the run together)."""
    if max(receive_count(r) for r in records) >= max_attempts:
        outcome.poison += records
    else:
        outcome.failed_message_ids += [r["messageId"] for r in records]
