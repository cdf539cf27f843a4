"""Accepting writes: validate, then make them durable in the queue before answering."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ragserve.api.requests import DocumentIn
from ragserve.documents import MAX_ID_CHARS, MAX_METADATA_BYTES, Document, has_visible_text, shorten
from ragserve.errors import InvalidInput, PayloadTooLarge
from ragserve.ingest.jobs import IngestJob, new_job_id, split_upserts
from ragserve.ingest.queue import JobQueue
from ragserve.settings import Limits
from ragserve.snapshots.format import validate_collection as check_collection_name


@dataclass(frozen=True, slots=True)
class Accepted:
    job_id: str
    accepted: int


def check_document_id(doc_id: str) -> str:
    # control characters (C0, DEL, C1) are never part of an id; nor is whitespace alone
    if not doc_id or not doc_id.strip() or len(doc_id) > MAX_ID_CHARS or any(
            unicodedata.category(c) == "Cc" for c in doc_id):
        raise InvalidInput(f"document ids are 1-{MAX_ID_CHARS} printable characters", code="invalid_document_id")
    return doc_id


def validate_documents(documents: Sequence[DocumentIn], limits: Limits, max_documents: int) -> list[Document]:
    if not documents:
        raise InvalidInput("at least one document is required", code="empty_input")
    if len(documents) > max_documents:
        raise PayloadTooLarge(f"{len(documents)} documents in one request; the limit is {max_documents}",
                              code="too_many_documents")
    seen: set[str] = set()
    out = []
    for i, doc in enumerate(documents):
        check_document_id(doc.id)
        if doc.id in seen:
            raise InvalidInput(f"document {i}: id {shorten(doc.id)!r} appears twice in this request",
                               code="duplicate_id")
        seen.add(doc.id)
        if len(doc.text) > limits.max_text_chars:
            raise PayloadTooLarge(f"document {i} has {len(doc.text)} characters; the limit is "
                                  f"{limits.max_text_chars}", code="text_too_long")
        if not has_visible_text(doc.text):
            raise InvalidInput(f"document {i}: text is empty or has no visible character", code="empty_text")
        if len(orjson.dumps(doc.metadata)) > MAX_METADATA_BYTES:
            raise PayloadTooLarge(f"document {i}: metadata is over {MAX_METADATA_BYTES} bytes",
                                  code="metadata_too_large")
        out.append(Document(doc.id, doc.text, doc.metadata))
    return out


def accept_upserts(queue: JobQueue, collection: str, documents: Sequence[DocumentIn], *, job_id: str | None = None,
                   limits: Limits, max_documents: int) -> Accepted:
    """Queue the documents under ``job_id`` (the idempotency layer's, or a new random one)."""
    check_collection_name(collection)
    docs = validate_documents(documents, limits, max_documents)
    job_id = job_id or new_job_id()
    for part in split_upserts(job_id, collection, docs):
        queue.send(part)
    return Accepted(job_id, len(docs))


def accept_delete(queue: JobQueue, collection: str, doc_id: str, *, job_id: str | None = None) -> Accepted:
    check_collection_name(collection)
    check_document_id(doc_id)
    job_id = job_id or new_job_id()
    queue.send(IngestJob(job_id, 0, collection, deletes=(doc_id,)))
    return Accepted(job_id, 1)
