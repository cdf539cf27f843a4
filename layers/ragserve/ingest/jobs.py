"""An ingest job: upserts and deletes for one collection, as one queue message."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import orjson

from ragserve.documents import Document

# SQS caps a message at 256 KiB: a request is split into parts below this size.
MAX_MESSAGE_BYTES = 240 * 1024


@dataclass(frozen=True, slots=True)
class IngestJob:
    job_id: str  # the id the caller got back; parts of one request share it
    part: int
    collection: str
    upserts: tuple[Document, ...] = ()
    deletes: tuple[str, ...] = ()

    @property
    def message_id(self) -> str:
        """Deduplication id of this part: a replayed request maps to the same ids."""
        return f"{self.job_id}.{self.part}"

    def to_json(self) -> str:
        return orjson.dumps({
            "job_id": self.job_id, "part": self.part, "collection": self.collection,
            "upserts": [{"id": d.id, "text": d.text, "metadata": dict(d.metadata)} for d in self.upserts],
            "deletes": list(self.deletes),
        }).decode()

    @classmethod
    def from_json(cls, body: str | bytes) -> IngestJob:
        """The job ``to_json`` wrote; ValueError for any other message (never a TypeError or
        KeyError: the consumer reports it failed, and a message of the wrong shape must not
        be applied half-read)."""
        data = orjson.loads(body)
        if not isinstance(data, dict):
            raise ValueError("an ingest message is a JSON object")
        job_id, part, collection = data.get("job_id"), data.get("part"), data.get("collection")
        upserts, deletes = data.get("upserts", []), data.get("deletes", [])
        if not (isinstance(job_id, str) and isinstance(collection, str) and type(part) is int
                and isinstance(upserts, list) and isinstance(deletes, list)
                and all(isinstance(d, str) for d in deletes) and all(_is_record(u) for u in upserts)):
            raise ValueError("not an ingest job: job_id, part, collection, upserts or deletes of the wrong type")
        return cls(job_id, part, collection, tuple(Document.from_record(u) for u in upserts), tuple(deletes))


def _is_record(value: object) -> bool:
    return (isinstance(value, dict) and isinstance(value.get("id"), str) and isinstance(value.get("text"), str)
            and isinstance(value.get("metadata") or {}, dict))


def new_job_id(collection: str | None = None, principal: str | None = None, idempotency_key: str | None = None,
               request_sha256: str = "") -> str:
    """The job id of one accepted request: ``job-`` + 32 hex digits.

    Random, unless ``idempotency_key`` is given: then derived from the caller, the
    collection, the key and the request's fingerprint (route, path parameters and body,
    ``request_sha256``). Only the idempotency layer asks for a derived id, and only when
    its store cannot say whether the request is new (the store is down): a true retry of
    the same request then maps to the same job, which the queue deduplicates, while the
    same key with another route or body is another job. Whenever the store answers, a
    new request gets a random id and a replay gets the recorded answer, so the id of a
    write is never shared by two different requests (a key reused after its record
    expired included)."""
    if idempotency_key:
        digest = hashlib.sha256(
            f"{principal}\0{collection}\0{idempotency_key}\0{request_sha256}".encode()).hexdigest()
        return "job-" + digest[:32]
    return "job-" + uuid.uuid4().hex


def split_upserts(job_id: str, collection: str, documents: list[Document]) -> list[IngestJob]:
    """Parts of at most MAX_MESSAGE_BYTES each, in the caller's order."""
    parts: list[IngestJob] = []
    batch: list[Document] = []
    size = 0
    for doc in documents:
        doc_size = len(orjson.dumps({"id": doc.id, "text": doc.text, "metadata": dict(doc.metadata)})) + 1
        if batch and size + doc_size > MAX_MESSAGE_BYTES - 512:
            parts.append(IngestJob(job_id, len(parts), collection, tuple(batch)))
            batch, size = [], 0
        batch.append(doc)
        size += doc_size
    if batch:
        parts.append(IngestJob(job_id, len(parts), collection, tuple(batch)))
    return parts
