"""Idempotency of the write routes with Powertools' idempotency utility.

A write with an ``Idempotency-Key`` is recorded under (caller, collection, key) with a
fingerprint of the request: method, route and path parameters (the document id of a
DELETE) and the body. A replay of the same request answers the first response and
creates no second job; the same key for another request (another route, document id
or body) is a 409 ``idempotency_key_reused``; a replay while the first is still running
is a 409 ``idempotency_in_progress``. The record lives in DynamoDB in AWS (Powertools'
``DynamoDBPersistenceLayer``) and in a SQLite file locally (``SqlitePersistenceLayer``,
the same conditions as DynamoDB's) and expires after ``EXPIRES_SECONDS``: the key may
then be used again, for a new job.

Job ids are never shared by two different requests: a request the store records as new
gets a fresh random job id. Only when the store is down (the request then proceeds) is
the job id derived from caller, collection, key and fingerprint, so that a retry of the
very same request maps to the same job and the queue deduplicates it, while the same
key with another body is a job of its own.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    BasePersistenceLayer,
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyPersistenceLayerError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from ragserve.errors import Conflict
from ragserve.ingest.jobs import new_job_id

EXPIRES_SECONDS = 24 * 3600


class SqlitePersistenceLayer(BasePersistenceLayer):
    """Powertools' persistence contract on a local SQLite file."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._db().execute(
            "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, status TEXT NOT NULL, expiration INTEGER, "
            "in_progress_expiration INTEGER, data TEXT, validation TEXT)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
        return db

    def _get_record(self, idempotency_key) -> DataRecord:
        row = self._db().execute("SELECT id, status, expiration, in_progress_expiration, data, validation "
                                 "FROM records WHERE id = ?", (idempotency_key,)).fetchone()
        if row is None:
            raise IdempotencyItemNotFoundError
        return DataRecord(idempotency_key=row[0], status=row[1], expiry_timestamp=row[2],
                          in_progress_expiry_timestamp=row[3], response_data=row[4] or "", payload_hash=row[5] or "")

    def _put_record(self, data_record: DataRecord) -> None:
        now = int(time.time())
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT status, expiration, in_progress_expiration FROM records WHERE id = ?",
                             (data_record.idempotency_key,)).fetchone()
            # DynamoDB's condition: absent, expired, or in progress past its own expiry
            free = row is None or (row[1] or 0) < now or (
                row[0] == "INPROGRESS" and row[2] is not None and row[2] < now * 1000)
            if not free:
                db.execute("ROLLBACK")
                old = self._get_record(data_record.idempotency_key)
                self._validate_payload(data_payload=data_record, stored_data_record=old)  # as DynamoDB's layer does
                raise IdempotencyItemAlreadyExistsError(old_data_record=old)
            db.execute("INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?, ?)", (
                data_record.idempotency_key, data_record.status, data_record.expiry_timestamp,
                data_record.in_progress_expiry_timestamp, data_record.response_data, data_record.payload_hash))
            db.execute("COMMIT")
        except (IdempotencyItemAlreadyExistsError, IdempotencyValidationError):
            raise
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _update_record(self, data_record: DataRecord) -> None:
        self._db().execute("UPDATE records SET status = ?, expiration = ?, data = ?, validation = ? WHERE id = ?", (
            data_record.status, data_record.expiry_timestamp, data_record.response_data, data_record.payload_hash,
            data_record.idempotency_key))

    def _delete_record(self, data_record: DataRecord) -> None:
        self._db().execute("DELETE FROM records WHERE id = ?", (data_record.idempotency_key,))


def persistence_layer(table_name: str, local_path: Path) -> BasePersistenceLayer:
    if table_name:
        return DynamoDBPersistenceLayer(table_name=table_name)
    return SqlitePersistenceLayer(local_path)


def describe_route(method: str, resource: str, **parameters: str) -> str:
    """The route of a request as its fingerprint reads it: method, resource template and
    path parameters (decoded), e.g. ``DELETE /v1/collections/{c}/documents/{id} c="docs" id="a"``."""
    values = " ".join(f"{name}={json.dumps(value)}" for name, value in sorted(parameters.items()))
    return f"{method.upper()} {resource} {values}".rstrip()


def request_sha256(route: str, body: bytes) -> str:
    """What an Idempotency-Key stands for: the route (``describe_route``) and the body."""
    return hashlib.sha256(route.encode("utf-8", "surrogatepass") + b"\0" + body).hexdigest()


class IdempotentWrites:
    """Runs a write at most once per (caller, collection, Idempotency-Key) and request."""

    def __init__(self, persistence: BasePersistenceLayer, *, log=None) -> None:
        self._log = log
        self.config = IdempotencyConfig(event_key_jmespath="[principal, collection, key]",
                                        payload_validation_jmespath="request_sha256",
                                        expires_after_seconds=EXPIRES_SECONDS)
        self._persistence = persistence

    def run(self, *, principal: str, collection: str, key: str | None, body: bytes,
            write: Callable[[str], dict[str, Any]], route: str = "", context: Any = None) -> dict[str, Any]:
        """``write(job_id)`` once; its result again for a replay of the same request.

        ``route`` (``describe_route``) and ``body`` are the request the key stands for."""
        if not key:
            return write(new_job_id())
        if context is not None:
            self.config.register_lambda_context(context)
        fingerprint = request_sha256(route, body)
        ran: dict[str, Any] = {}  # what happened inside the guard, for a store that fails around it

        @idempotent_function(data_keyword_argument="request", config=self.config, persistence_store=self._persistence)
        def guarded(request: dict[str, Any]) -> dict[str, Any]:
            ran["job_id"] = new_job_id()  # recorded as a new request: a new job
            try:
                ran["result"] = write(ran["job_id"])
            except BaseException as exc:
                ran["error"] = exc
                raise
            return ran["result"]

        request = {"principal": principal, "collection": collection, "key": key, "request_sha256": fingerprint}
        try:
            return guarded(request=request)
        except IdempotencyValidationError:
            raise Conflict("this Idempotency-Key was used for another request (another route, document id or body); "
                           "use a new key for a new request", code="idempotency_key_reused") from None
        except IdempotencyAlreadyInProgressError:
            raise Conflict("a request with this Idempotency-Key is still in progress; retry shortly",
                           code="idempotency_in_progress") from None
        except IdempotencyPersistenceLayerError as exc:
            reason = type(exc.__cause__ or exc).__name__
            if "result" in ran:  # the job is queued; only recording the answer failed
                self._warn("idempotency store failed to record an answer; the job is queued", ran["job_id"], reason)
                return ran["result"]
            if "error" in ran:  # the write failed, and so did clearing the record
                raise ran["error"] from None
            job_id = new_job_id(collection, principal, key, fingerprint)
            self._warn("idempotency store unavailable; the job id is derived from the request", job_id, reason)
            return write(job_id)

    def _warn(self, message: str, job_id: str, reason: str) -> None:
        if self._log:
            self._log.warning(message, extra={"job_id": job_id, "error": reason})
