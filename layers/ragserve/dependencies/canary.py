"""The canary's collection: a few documents the stack seeds in every stage, one query
and the id that must answer it first. The Synthetics canary (infra/constructs/health_canary.py)
searches it with its own read key, limited to this collection; the ops function's
/health checks that its ``CURRENT`` and manifest are readable.

The documents are far apart in meaning, so the expected hit stays first whatever run
id the canary appends to the query (which makes every run miss the query and
embedding caches, so that the model itself answers)."""

from __future__ import annotations

import hashlib

from ragserve.documents import Document
from ragserve.ingest.jobs import IngestJob

CANARY_COLLECTION = "canary"
CANARY_DOCUMENTS: tuple[tuple[str, str], ...] = (
    ("canary-lighthouse", "The lighthouse keeper rows out to the island every morning to trim the lamp."),
    ("canary-bread", "Knead the dough for ten minutes, then let it rise somewhere warm."),
    ("canary-orbit", "A satellite in geostationary orbit circles the Earth once a day."),
    ("canary-invoice", "Invoices are emailed on the first day of each month."),
    ("canary-violin", "The violinist tuned her instrument before the concert began."),
)
CANARY_QUERY = "Who rows a boat out to the lighthouse?"
CANARY_TOP_HIT = "canary-lighthouse"


def canary_documents() -> tuple[Document, ...]:
    return tuple(Document(doc_id, text, {"kind": "canary"}) for doc_id, text in CANARY_DOCUMENTS)


def seed_job() -> IngestJob:
    """The ingest job that (re)writes the canary collection. Its id is derived from the
    documents: sending it twice within SQS's deduplication window is one message, and
    applying it again later changes nothing (same content hashes)."""
    body = "\n".join(f"{doc_id}\t{text}" for doc_id, text in CANARY_DOCUMENTS)
    digest = hashlib.sha256(body.encode("utf-8")).hexdigest()
    return IngestJob(f"job-canary-{digest[:24]}", 0, CANARY_COLLECTION, canary_documents())
