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


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    message_id: str
    receipt: str
    group: str
    body: str
    receive_count: int


class SqsJobQueue:
    def __init__(self, queue_url: str, client=None) -> None:
        self.queue_url = queue_url
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
    and a dead-letter state after ``max_receives``."""

    def __init__(self, path: Path, *, max_receives: int = 5) -> None:
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
