"""Bulk builds for large corpora: shard a JSONL input, embed shards in parallel, merge
into one snapshot and publish it. The same shard and merge functions are what the AWS
Step Functions Distributed Map calls (functions/ingest/bulk.py); locally they run on a
process pool (``ragserve index build``).

Input lines: ``{"id": str, "text": str, "metadata": {...}}``; a later line with the
same id replaces an earlier one. A bulk build replaces the collection's contents.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ragserve.documents import Document
from ragserve.errors import InvalidInput
from ragserve.index.ann import IndexParams
from ragserve.ingest.writer import write_snapshot
from ragserve.model.encoder import Encoder, load_encoder
from ragserve.model.manifest import resolve_model
from ragserve.settings import EncoderSettings
from ragserve.snapshots.format import validate_collection as check_collection_name
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
        if not isinstance(doc.text, str) or not doc.text.strip() or len(doc.text) > max_text_chars:
            raise InvalidInput(f"line {number}: text must be 1-{max_text_chars} characters, not blank")
        by_id.pop(doc.id, None)
        by_id[doc.id] = doc
    return list(by_id.values())


def embed_shard(encoder: Encoder, documents: list[Document]) -> Shard:
    """The shard step: embed one shard's documents."""
    vectors = encoder.embed([d.text for d in documents]) if documents else \
        np.empty((0, encoder.dimensions), np.float32)
    return Shard([d.to_record(encoder.model_id) for d in documents], vectors.astype(np.float16))


def merge_shards(store: SnapshotStore, collection: str, shards: Iterable[Shard], *, model_id: str,
                 params: IndexParams, scratch_dir: Path, threads: int = 0) -> int:
    """The merge step: one snapshot from every shard, published as the next version."""
    check_collection_name(collection)
    shards = list(shards)
    records = [r for s in shards for r in s.records]
    vectors = np.concatenate([s.vectors for s in shards]) if shards else np.empty((0, 0), np.float16)
    seen: dict[str, int] = {}
    for row, record in enumerate(records):  # a repeated id across shards: the last one wins
        seen[record["id"]] = row
    if len(seen) != len(records):
        keep = sorted(seen.values())
        records, vectors = [records[i] for i in keep], vectors[keep]
    current = store.current(collection)
    version = store.next_version(collection)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    build_dir = Path(tempfile.mkdtemp(prefix=f"{collection}-bulk-v{version}-", dir=scratch_dir))
    try:
        write_snapshot(build_dir, collection=collection, version=version, model_id=model_id, records=records,
                       vectors=vectors, params=params, threads=threads)
        store.publish(collection, version, build_dir, expected_current=current)
    finally:
        shutil.rmtree(build_dir, ignore_errors=True)
    return version


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


def build_collection(documents: list[Document], collection: str, store: SnapshotStore, *,
                     encoder_settings: EncoderSettings, params: IndexParams, scratch_dir: Path,
                     workers: int | None = None, progress=None) -> int:
    """Embed on ``workers`` processes (default: one per CPU), merge, publish; the version."""
    workers = workers or len(os.sched_getaffinity(0))
    model_id = resolve_model(encoder_settings.artifacts_dir, encoder_settings.model_id, encoder_settings.variant).id
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
    return merge_shards(store, collection, shards, model_id=model_id, params=params,
                        scratch_dir=scratch_dir, threads=workers)
