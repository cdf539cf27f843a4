"""Bulk loads for large corpora: shard a JSONL input, embed shards in parallel, store
each shard as a segment of its own, and commit them all with one manifest. The same
shard and commit functions are what the AWS Step Functions Distributed Map calls
(functions/ingest/bulk.py); locally they run on a process pool (``ragserve index build``).

Input lines: ``{"id": str, "text": str, "metadata": {...}}``; a later line with the
same id replaces an earlier one. A bulk load appends to the collection (a document
already there under the same id is superseded); ``replace`` is explicit.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ragserve.documents import MAX_SAFE_INTEGER, Document, has_visible_text, is_safe_number
from ragserve.errors import InvalidInput
from ragserve.index.ann import IndexParams
from ragserve.ingest.writer import CollectionWriter, WriteResult
from ragserve.model.encoder import Encoder, load_encoder
from ragserve.segments.files import read_ids, store_segment
from ragserve.settings import EncoderSettings
from ragserve.snapshots.format import validate_collection as check_collection_name
from ragserve.snapshots.manifest import SegmentEntry
from ragserve.snapshots.store import SnapshotStore

CHUNK = 256  # documents per task sent to a worker process


@dataclass(frozen=True, slots=True)
class Shard:
    records: list[dict]  # to_record() of each document, in order
    vectors: np.ndarray  # float16 (n, d)


def read_documents(lines: Iterable[bytes | str], max_text_chars: int) -> list[Document]:
    """Parse and validate JSONL; the last line wins for a repeated id."""
    by_id: dict[str, Document] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
            doc = Document(str(data["id"]), data["text"], data.get("metadata") or {})
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise InvalidInput(f"line {number}: expected {{\"id\", \"text\", \"metadata\"}}: {exc}") from None
        if not isinstance(doc.text, str) or not has_visible_text(doc.text) or len(doc.text) > max_text_chars:
            raise InvalidInput(f"line {number}: text must be 1-{max_text_chars} characters with a visible one")
        if not isinstance(doc.metadata, dict) or not all(is_safe_number(v) for v in doc.metadata.values()):
            raise InvalidInput(f"line {number}: metadata must be an object whose numbers are within "
                               f"±{MAX_SAFE_INTEGER} (send larger ones as strings)")
        by_id.pop(doc.id, None)
        by_id[doc.id] = doc
    return list(by_id.values())


def embed_shard(encoder: Encoder, documents: list[Document]) -> Shard:
    """The shard step: embed one shard's documents."""
    vectors = encoder.embed([d.text for d in documents]) if documents else \
        np.empty((0, encoder.dimensions), np.float32)
    return Shard([d.to_record(encoder.model_id) for d in documents], vectors.astype(np.float16))


def store_shard(store: SnapshotStore, collection: str, shard: Shard, params: IndexParams, scratch_dir: Path, *,
                number: int = 0, hnsw_min_rows: int, threads: int = 0) -> SegmentEntry:
    """The shard step's second half: store the shard as a segment of its own (with an
    HNSW graph when it is large enough). Not part of any version until committed."""
    check_collection_name(collection)
    return store_segment(store, collection, f"s1-{number}", shard.records, shard.vectors, params, scratch_dir,
                         hnsw_min_rows=hnsw_min_rows, threads=threads)


def commit_shards(writer: CollectionWriter, collection: str, entries: list[SegmentEntry], *,
                  replace: bool = False) -> WriteResult:
    """The final step: one manifest over the stored shard segments. Appends by default (a
    document already in the collection under one of these ids is superseded); ``replace``
    makes them the whole collection."""
    cache = writer.scratch_dir / "blobs"
    segments = []
    for entry in entries:
        ids, hashes = read_ids(writer.store.blob(collection, entry.ids, cache))
        segments.append((entry, ids, hashes))
    return writer.commit_segments(collection, segments, replace=replace)


# --- the local process pool ----------------------------------------------------------

_worker_encoder: Encoder | None = None


def _init_worker(settings: EncoderSettings) -> None:
    global _worker_encoder
    _worker_encoder = load_encoder(settings=settings.model_copy(update={"threads": 1}))


def _embed_chunk(documents: list[Document]) -> Shard:
    assert _worker_encoder is not None
    return embed_shard(_worker_encoder, documents)


def chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def build_collection(documents: list[Document], collection: str, writer: CollectionWriter, *,
                     encoder_settings: EncoderSettings, max_segment_rows: int, replace: bool = False,
                     workers: int | None = None, progress=None) -> int:
    """Embed on ``workers`` processes (default: one per CPU), store segments of at most
    ``max_segment_rows`` rows, commit them as one version (appended unless ``replace``).
    Segments are built with the collection's own parameters (the writer's settings for a
    new collection, or with ``replace``)."""
    workers = workers or len(os.sched_getaffinity(0))
    check_collection_name(collection)
    params = writer.shard_params(collection, replace=replace)
    # spawn, not fork: the parent may hold onnxruntime's threads
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(encoder_settings,),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        shards = []
        for shard in pool.map(_embed_chunk, chunks(documents, CHUNK)):
            shards.append(shard)
            if progress:
                progress.advance(len(shard.records))
    if progress:
        progress.close()
    records = [r for s in shards for r in s.records]
    vectors = np.concatenate([s.vectors for s in shards]) if shards else np.empty((0, 0), np.float16)
    entries = []
    for number, start in enumerate(range(0, len(records), max_segment_rows)):
        part = Shard(records[start:start + max_segment_rows], vectors[start:start + max_segment_rows])
        entries.append(store_shard(writer.store, collection, part, params, writer.scratch_dir / "build",
                                   number=number, hnsw_min_rows=writer.hnsw_min_rows, threads=workers))
    return commit_shards(writer, collection, entries, replace=replace).version
