"""The ingest queue: SQS FIFO in AWS (group = collection, so one writer per
collection), and a durable SQLite queue with the same FIFO semantics locally.

A job is durable once ``send`` returns: that is when the API answers 202.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ragserve.ingest.jobs import IngestJob


class JobQueue(Protocol):
    def send(self, job: IngestJob) -> None: ...


def storage_fault_delay(receive_count: int) -> int:
    """Seconds before jobs held back by a storage fault are tried again: doubling from
    5 s, at most 15 minutes."""
    return int(min(900, 5 * 2 ** max(0, min(receive_count - 1, 8))))


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt: str
    group: str
    body: str
    receive_count: int


class SqsJobQueue:
    """SQS FIFO. The queue's own redrive (maxReceiveCount) is only a safety net set far
    above ``consumer.MAX_ATTEMPTS``: the consumer dead-letters poison messages itself and
    keeps storage faults queued (``defer``), see ``ragserve.ingest.consumer``."""

    def __init__(self, queue_url: str, client=None, *, dead_letter_url: str = "") -> None:
        self.queue_url = queue_url
        self.dead_letter_url = dead_letter_url
        self._client = client

    @property
    def client(self):
        if self._client is None:
            import boto3

            self._client = boto3.client("sqs")
        return self._client

    def send(self, job: IngestJob) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=job.to_json(),
                                 MessageGroupId=job.collection, MessageDeduplicationId=job.message_id)

    def defer(self, records: list[dict]) -> None:
        """Hold back records failed by a storage fault: visible again after a backoff."""
        from ragserve.ingest.consumer import receive_count

        for start in range(0, len(records), 10):
            entries = [{"Id": str(i), "ReceiptHandle": r["receiptHandle"],
                        "VisibilityTimeout": storage_fault_delay(receive_count(r))}
                       for i, r in enumerate(records[start:start + 10])]
            self.client.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=entries)

    def dead_letter(self, records: list[dict]) -> None:
        """Move records to the dead-letter queue (same group, in order), then delete them."""
        if not self.dead_letter_url:
            raise RuntimeError("no dead-letter queue configured (RAGSERVE_DEAD_LETTER_URL)")
        for r in records:
            attributes = r.get("attributes") or {}
            self.client.send_message(QueueUrl=self.dead_letter_url, MessageBody=r["body"],
                                     MessageGroupId=attributes.get("MessageGroupId", "unknown"),
                                     MessageDeduplicationId=f"{r['messageId']}.dlq")
            self.client.delete_message(QueueUrl=self.queue_url, ReceiptHandle=r["receiptHandle"])

    def redrive(self, max_messages: int = 10_000) -> int:
        """Move messages from the dead-letter queue back to the queue, in order; the count."""
        if not self.dead_letter_url:
            raise RuntimeError("no dead-letter queue configured (RAGSERVE_DEAD_LETTER_URL)")
        moved = 0
        while moved < max_messages:
            batch = self.client.receive_message(QueueUrl=self.dead_letter_url, MaxNumberOfMessages=10,
                                                AttributeNames=["MessageGroupId"], WaitTimeSeconds=0,
                                                VisibilityTimeout=60).get("Messages", [])
            if not batch:
                break
            for m in batch:
                self.client.send_message(QueueUrl=self.queue_url, MessageBody=m["Body"],
                                         MessageGroupId=m["Attributes"]["MessageGroupId"],
                                         MessageDeduplicationId=f"{m['MessageId']}.redrive")
                self.client.delete_message(QueueUrl=self.dead_letter_url, ReceiptHandle=m["ReceiptHandle"])
                moved += 1
        return moved


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    grp TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',   -- pending | done | dead
    receive_count INTEGER NOT NULL DEFAULT 0,
    visible_at REAL NOT NULL DEFAULT 0,
    receipt TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (state, grp, seq);
"""


class LocalJobQueue:
    """SQS FIFO semantics on SQLite (WAL, synchronous=FULL): deduplication by message
    id, per-group order, at most one batch of a group in flight, visibility timeout,
    and a dead-letter state: set by the consumer (``dead_letter``), or after
    ``max_receives`` as a safety net."""

    def __init__(self, path: Path, *, max_receives: int = 100) -> None:
        self.path = path
        self.max_receives = max_receives
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            self._local.db = db
        return db

    def send(self, job: IngestJob) -> None:
        db = self._connect()
        db.execute("INSERT OR IGNORE INTO messages (message_id, grp, body, created_at) VALUES (?, ?, ?, ?)",
                   (job.message_id, job.collection, job.to_json(), time.time()))

    def receive(self, max_messages: int = 10, visibility_timeout: float = 300.0) -> list[ReceivedMessage]:
        """The oldest messages of groups with nothing in flight, in order, one group per call."""
        db = self._connect()
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            heads = db.execute(
                "SELECT m.grp, m.visible_at FROM messages m JOIN (SELECT grp, MIN(seq) AS head FROM messages "
                "WHERE state = 'pending' GROUP BY grp) h ON m.seq = h.head ORDER BY m.seq").fetchall()
            # a group whose oldest message is in flight or delayed waits: FIFO order per group
            group = next((g for g, visible_at in heads if visible_at <= now), None)
            if group is None:
                db.execute("COMMIT")
                return []
            rows = db.execute(
                "SELECT seq, message_id, body, receive_count, visible_at FROM messages "
                "WHERE state = 'pending' AND grp = ? ORDER BY seq LIMIT ?", (group, max_messages)).fetchall()
            receipt = uuid.uuid4().hex
            out = []
            for seq, message_id, body, count, visible_at in rows:
                if visible_at > now:
                    break
                if count >= self.max_receives:  # poison: set aside, and stop here to keep order
                    db.execute("UPDATE messages SET state = 'dead' WHERE seq = ?", (seq,))
                    break
                db.execute("UPDATE messages SET receive_count = receive_count + 1, visible_at = ?, receipt = ? "
                           "WHERE seq = ?", (now + visibility_timeout, receipt, seq))
                out.append(ReceivedMessage(message_id, receipt, group, body, count + 1))
            db.execute("COMMIT")
            return out
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def delete(self, messages: list[ReceivedMessage]) -> None:
        db = self._connect()
        db.executemany("UPDATE messages SET state = 'done', receipt = NULL WHERE message_id = ? AND receipt = ?",
                       [(m.message_id, m.receipt) for m in messages])

    def release(self, messages: list[ReceivedMessage], delay: float = 1.0) -> None:
        """Make messages visible again after ``delay`` seconds (a failed attempt)."""
        db = self._connect()
        db.executemany("UPDATE messages SET visible_at = ?, receipt = NULL WHERE message_id = ? AND receipt = ?",
                       [(time.time() + delay, m.message_id, m.receipt) for m in messages])

    def defer(self, records: list[dict]) -> None:
        """Hold back records failed by a storage fault: not counted as a receive, visible
        again after a backoff."""
        db = self._connect()
        db.executemany("UPDATE messages SET receive_count = MAX(receive_count - 1, 0), visible_at = ?, "
                       "receipt = NULL WHERE message_id = ? AND receipt = ?",
                       [(time.time() + storage_fault_delay(1), r["messageId"], r["receiptHandle"])
                        for r in records])

    def dead_letter(self, records: list[dict]) -> None:
        db = self._connect()
        db.executemany("UPDATE messages SET state = 'dead', receipt = NULL WHERE message_id = ? AND receipt = ?",
                       [(r["messageId"], r["receiptHandle"]) for r in records])

    def redrive(self, group: str | None = None) -> int:
        """Dead-lettered messages back to the queue, at their old place in their group."""
        cursor = self._connect().execute(
            "UPDATE messages SET state = 'pending', receive_count = 0, visible_at = 0, receipt = NULL "
            "WHERE state = 'dead' AND (? IS NULL OR grp = ?)", (group, group))
        return cursor.rowcount

    def purge_done(self, older_than: float) -> int:
        """Forget applied messages queued before ``older_than`` (they hold full texts)."""
        cursor = self._connect().execute("DELETE FROM messages WHERE state = 'done' AND created_at < ?",
                                         (older_than,))
        return cursor.rowcount

    def recover_in_flight(self) -> int:
        """Make every in-flight message visible again. Only for the sole consumer at its
        start (it holds the writer lock): in-flight messages then belong to a consumer
        that died, and need not wait out their visibility timeout."""
        cursor = self._connect().execute(
            "UPDATE messages SET visible_at = 0, receipt = NULL WHERE state = 'pending' AND receipt IS NOT NULL")
        return cursor.rowcount

    def counts(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        return {state: n for state, n in rows}
