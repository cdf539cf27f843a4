"""The single writer of a collection: applies ingest jobs to the live version and
publishes the next one.

Crash safety: the next version is built in a scratch directory and published
(verified, data files first, manifest, then a conditional swap of CURRENT); the jobs
are acknowledged only after that. A writer killed at any point leaves the old version
live and its jobs in the queue; the restarted writer applies them again, and upserts
whose content hash is already live are no-ops, so nothing is lost or doubled.

A live version that cannot be read (a file altered or deleted in the store, or
``CURRENT`` naming a version that is not there) must not stop the writer: it builds on
the newest older version that verifies (readers refuse the bad one and still serve that
one) and publishes past the bad version. With no readable version at all it fails, and
the jobs stay queued until the store is repaired: an unreadable collection is never
overwritten by one without its documents.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ragserve.documents import Document
from ragserve.index.ann import IndexParams, VectorIndex
from ragserve.ingest.jobs import IngestJob
from ragserve.model.encoder import Encoder
from ragserve.settings import IndexSettings
from ragserve.snapshots.errors import SnapshotCorrupt, SnapshotMismatch, SnapshotMissing
from ragserve.snapshots.format import DATA_FILES, SnapshotMeta, read_manifest, write_manifest
from ragserve.snapshots.store import SnapshotStore


@dataclass(frozen=True, slots=True)
class WriteResult:
    collection: str
    version: int | None  # None: nothing changed, nothing published
    upserted: int
    deleted: int
    unchanged: int
    documents: int


@dataclass(slots=True)
class _Contents:
    records: list[dict]
    vectors: np.ndarray  # float16 (n, d)
    dtype: str
    params: dict


def index_params(settings: IndexSettings) -> IndexParams:
    return IndexParams(dtype=settings.dtype, connectivity=settings.connectivity,
                       expansion_add=settings.expansion_add, expansion_search=settings.expansion_search)


def write_snapshot(directory: Path, *, collection: str, version: int, model_id: str, records: Sequence[dict],
                   vectors: np.ndarray, params: IndexParams, threads: int = 0) -> SnapshotMeta:
    """Build the index over ``vectors`` (row i = records[i]) and write a complete snapshot."""
    directory.mkdir(parents=True, exist_ok=True)
    index = VectorIndex.build(np.asarray(vectors, dtype=np.float32), params, threads=threads)
    index.save(directory / "index.usearch", directory / "vectors.f16.npy")
    with (directory / "docs.jsonl").open("wb") as f:
        for record in records:
            f.write(orjson.dumps(record) + b"\n")
    stored = {k: v for k, v in vars_of(params).items() if k != "dtype"}
    return write_manifest(directory, collection=collection, version=version, model_id=model_id,
                          dimensions=int(vectors.shape[1]), dtype=params.dtype,
                          count=len(records), params=stored)


def vars_of(params: IndexParams) -> dict:
    return {name: getattr(params, name) for name in params.__dataclass_fields__}


class CollectionWriter:
    def __init__(self, store: SnapshotStore, encoder: Encoder, index_settings: IndexSettings, scratch_dir: Path,
                 *, log=None) -> None:
        self.store = store
        self.encoder = encoder
        self.index_settings = index_settings
        self.scratch_dir = scratch_dir
        self._log = log

    def _load(self, collection: str, version: int | None) -> _Contents:
        if version is None:
            return _Contents([], np.empty((0, self.encoder.dimensions), np.float16), self.index_settings.dtype,
                             {k: v for k, v in vars_of(index_params(self.index_settings)).items() if k != "dtype"})
        directory = self._fetch_readable(collection, version)
        meta = read_manifest(directory)
        with (directory / "docs.jsonl").open("rb") as f:
            records = [orjson.loads(line) for line in f if line.strip()]
        vectors = np.load(directory / "vectors.f16.npy")
        return _Contents(records, vectors, meta.dtype, dict(meta.params))

    def _fetch_readable(self, collection: str, version: int) -> Path:
        """The verified snapshot of ``version``, else of the newest older version that verifies."""
        try:
            return self.store.fetch(collection, version, self.scratch_dir / "live", files=DATA_FILES)
        except (SnapshotCorrupt, SnapshotMissing, SnapshotMismatch) as exc:
            unreadable = exc
        for older in sorted((v for v in self.store.versions(collection) if v < version), reverse=True):
            try:
                directory = self.store.fetch(collection, older, self.scratch_dir / "live", files=DATA_FILES)
            except (SnapshotCorrupt, SnapshotMissing, SnapshotMismatch):
                continue
            if self._log:
                self._log.error("live version unreadable, building on an older version", extra={
                    "collection": collection, "unreadable": version, "base": older, "reason": str(unreadable)})
            return directory
        if self._log:
            self._log.error("live version unreadable and no older version verifies; jobs stay queued",
                            extra={"collection": collection, "unreadable": version, "reason": str(unreadable)})
        raise unreadable

    def apply(self, collection: str, jobs: Iterable[IngestJob]) -> WriteResult:
        current = self.store.current(collection)
        live = self._load(collection, current)
        model_id = self.encoder.model_id
        rows = {r["id"]: i for i, r in enumerate(live.records)}
        final: dict[str, Document | None] = {}  # id -> new content, or None for a delete
        for job in jobs:
            for doc in job.upserts:
                final[doc.id] = doc
            for doc_id in job.deletes:
                final[doc_id] = None
        upserts = {i: d for i, d in final.items() if d is not None
                   and not (i in rows and live.records[rows[i]].get("hash") == d.content_hash(model_id))}
        deletes = {i for i, d in final.items() if d is None and i in rows}
        unchanged = sum(1 for i, d in final.items() if d is not None and i not in upserts)
        if not upserts and not deletes:
            return WriteResult(collection, None, 0, 0, unchanged, len(live.records))

        keep = [i for i, r in enumerate(live.records) if r["id"] not in upserts and r["id"] not in deletes]
        new_docs = list(upserts.values())
        version = self.store.next_version(collection)
        if self._log:
            self._log.info("building version", extra={"collection": collection, "version": version,
                                                      "upserts": len(new_docs), "deletes": len(deletes),
                                                      "kept": len(keep)})
        started = time.perf_counter()
        new_vectors = self.encoder.embed([d.text for d in new_docs]) if new_docs else \
            np.empty((0, self.encoder.dimensions), np.float32)
        records = [live.records[i] for i in keep] + [d.to_record(model_id) for d in new_docs]
        vectors = np.concatenate([live.vectors[keep].astype(np.float32), new_vectors]) if keep else new_vectors
        params = IndexParams(dtype=live.dtype, **live.params)
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        build_dir = Path(tempfile.mkdtemp(prefix=f"{collection}-v{version}-", dir=self.scratch_dir))
        try:
            write_snapshot(build_dir, collection=collection, version=version, model_id=model_id, records=records,
                           vectors=vectors, params=params, threads=self.encoder.threads)
            self.store.publish(collection, version, build_dir, expected_current=current)
        finally:
            shutil.rmtree(build_dir, ignore_errors=True)
        if self._log:
            self._log.info("published version", extra={
                "collection": collection, "version": version, "documents": len(records),
                "ms": round((time.perf_counter() - started) * 1000, 1)})
        return WriteResult(collection, version, len(new_docs), len(deletes), unchanged, len(records))
