"""The single writer of a collection: applies ingest jobs as one new segment and
publishes the next version. A write costs what it changes (docs/ARCHITECTURE.md
section 5): it embeds the batch, stores one segment of its documents, rewrites the
deletion vectors of the segments whose rows it replaces or deletes, and publishes a
manifest. It never reads or rewrites the other segments' files.

Crash safety: blobs first, then the manifest, then a conditional swap of ``CURRENT``;
the jobs are acknowledged only after that. A writer killed at any point leaves the old
version live and its jobs in the queue; the restarted writer applies them again, and
upserts whose content hash is already live are no-ops, so nothing is lost or doubled.

A live version that cannot be read (``CURRENT`` unreadable, its manifest damaged or
gone, a segment's ids or deletion vector altered) stops the writer with
``StoreUnreadable``: it never publishes past a version it could not read, as that
would drop that version's documents. The jobs stay queued (the consumer retries a
storage fault with backoff, without counting it toward the dead-letter queue) until
the store is repaired (``ragserve collections verify`` / ``repair``; on S3, restore the
object's previous version).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ragserve.documents import Document
from ragserve.index.ann import IndexParams
from ragserve.ingest.jobs import IngestJob
from ragserve.model.encoder import Encoder
from ragserve.segments.files import (
    manifest_params,
    read_deletes,
    read_ids,
    store_deletes,
    store_segment,
    stored_params,
)
from ragserve.segments.idmap import IdMap
from ragserve.settings import IndexSettings
from ragserve.snapshots.errors import PointerConflict, SnapshotError, StoreUnreadable
from ragserve.snapshots.manifest import SegmentEntry, VersionManifest, empty_manifest
from ragserve.snapshots.store import SnapshotStore, read_live

PUBLISH_ATTEMPTS = 5  # a compaction that commits meanwhile moves CURRENT: re-read and retry


@dataclass(frozen=True, slots=True)
class WriteResult:
    collection: str
    version: int | None  # None: nothing changed, nothing published
    upserted: int
    deleted: int
    unchanged: int
    documents: int
    segments: int = 0
    bytes_written: int = 0  # blobs and manifest this write stored


def index_params(settings: IndexSettings) -> IndexParams:
    return IndexParams(dtype=settings.dtype, connectivity=settings.connectivity,
                       expansion_add=settings.expansion_add, expansion_search=settings.expansion_search)


@dataclass(slots=True)
class _Batch:
    """The net effect of a run of jobs: the last word on each id wins."""

    final: dict[str, Document | None] = field(default_factory=dict)

    @classmethod
    def of(cls, jobs: Iterable[IngestJob]) -> _Batch:
        batch = cls()
        for job in jobs:
            for doc in job.upserts:
                batch.final[doc.id] = doc
            for doc_id in job.deletes:
                batch.final[doc_id] = None
        return batch


class CollectionWriter:
    def __init__(self, store: SnapshotStore, encoder: Encoder, index_settings: IndexSettings, scratch_dir: Path,
                 *, hnsw_min_rows: int | None = None, log=None) -> None:
        self.store = store
        self.encoder = encoder
        self.index_settings = index_settings
        self.scratch_dir = scratch_dir
        self.hnsw_min_rows = hnsw_min_rows if hnsw_min_rows is not None else index_settings.hnsw_min_rows
        self._log = log
        self._maps: dict[str, IdMap] = {}

    # -- reading the live version ------------------------------------------------------

    def live(self, collection: str) -> tuple[int | None, VersionManifest | None]:
        """``(CURRENT, its manifest)``; ``StoreUnreadable`` if either cannot be read."""
        return read_live(self.store, collection, waiting="writes wait")

    def shard_params(self, collection: str, *, replace: bool) -> IndexParams:
        """What a bulk load's segments are built with: the live collection's parameters,
        or this writer's settings for a new collection (and with ``replace``)."""
        _, live = self.live(collection)
        return manifest_params(live) if live is not None and not replace else index_params(self.index_settings)

    def id_map(self, collection: str, manifest: VersionManifest | None) -> IdMap:
        """The id map of ``collection`` brought to ``manifest`` (reads only what changed)."""
        ids = self._maps.setdefault(collection, IdMap())
        if ids.version == (manifest.version if manifest else None) and manifest is not None:
            return ids
        cache = self.scratch_dir / "blobs"
        try:
            ids.sync(manifest,
                     lambda e: read_ids(self.store.blob(collection, e.ids, cache)),
                     lambda e: read_deletes(self.store.blob(collection, e.deletes, cache), e.rows))
        except (SnapshotError, ValueError, KeyError, TypeError) as exc:
            self._maps.pop(collection, None)  # half-synced: rebuild from scratch next time
            reason = exc.message if isinstance(exc, SnapshotError) else f"{type(exc).__name__}: {exc}"
            raise StoreUnreadable(f"collection {collection!r} v{manifest.version if manifest else '-'}: a segment "
                                  f"cannot be read ({reason}); writes wait until it is repaired") from None
        return ids

    def _base(self, collection: str, manifest: VersionManifest | None) -> VersionManifest:
        if manifest is not None:
            if manifest.model_id != self.encoder.model_id or manifest.dimensions != self.encoder.dimensions:
                raise StoreUnreadable(f"collection {collection!r} was embedded with {manifest.model_id} "
                                      f"({manifest.dimensions} dims); this writer embeds with {self.encoder.model_id}")
            return manifest
        params = index_params(self.index_settings)
        return empty_manifest(collection, model_id=self.encoder.model_id, dimensions=self.encoder.dimensions,
                              dtype=params.dtype, params=stored_params(params))

    # -- writing -----------------------------------------------------------------------

    def apply(self, collection: str, jobs: Iterable[IngestJob]) -> WriteResult:
        batch = _Batch.of(jobs)
        vectors: dict[str, np.ndarray] = {}  # embedded once, whatever the retries
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                return self._apply_once(collection, batch, vectors)
            except PointerConflict:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
                if self._log:
                    self._log.info("publish conflict, retrying on the new version",
                                   extra={"collection": collection, "attempt": attempt})
        raise AssertionError("unreachable")

    def commit_segments(self, collection: str, segments: list[tuple[SegmentEntry, list[str], list[str | None]]],
                        *, replace: bool = False, operation: str = "bulk") -> WriteResult:
        """Commit segments stored already (a bulk load's shards, with each row's id and
        hash) as one new version. Appends by default: a document already in the
        collection with an id of these segments is superseded (marked deleted where it
        was), and within the new segments the later row of an id wins. ``replace=True``
        makes these segments the whole collection."""
        for attempt in range(1, PUBLISH_ATTEMPTS + 1):
            try:
                return self._commit_once(collection, segments, replace, operation)
            except PointerConflict:
                if attempt == PUBLISH_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _commit_once(self, collection: str, new: list[tuple[SegmentEntry, list[str], list[str | None]]],
                     replace: bool, operation: str) -> WriteResult:
        current, manifest = self.live(collection)
        # a replacement's segments were built with this writer's settings (and model): so is its manifest
        base = self._base(collection, manifest if not replace else None)
        ids = self.id_map(collection, manifest) if not replace else None
        version = self.store.next_version(collection)
        scratch = self.scratch_dir / "build"
        later: dict[str, tuple[int, int]] = {}  # id -> (new segment number, row): the last one wins
        for number, (_, seg_ids, _) in enumerate(new):
            for row, doc_id in enumerate(seg_ids):
                later[doc_id] = (number, row)
        touched: dict[str, list[int]] = {}
        if ids is not None:
            for doc_id in later:
                if doc_id in ids.where:
                    segment_id, row = ids.where[doc_id]
                    touched.setdefault(segment_id, []).append(row)
        written, segments = 0, []
        for entry in (base.segments if not replace else ()):
            rows = touched.get(entry.id)
            if rows:
                deleted = np.union1d(ids.segments[entry.id].deleted, np.asarray(rows, dtype=np.uint32))
                if len(deleted) == entry.rows:
                    continue
                ref = store_deletes(self.store, collection, deleted, scratch)
                written += ref.size
                entry = entry.with_deletes(ref, len(deleted))
            segments.append(entry)
        used: set[str] = set()
        for number, (entry, seg_ids, _) in enumerate(new):
            # a stored shard's id names the version it was built for; give it a fresh one here
            renamed = SegmentEntry(id=base.next_segment_id(version, used), rows=entry.rows, vectors=entry.vectors,
                                   docs=entry.docs, ids=entry.ids, index=entry.index)
            used.add(renamed.id)
            dup = [row for row, doc_id in enumerate(seg_ids) if later[doc_id] != (number, row)]
            if len(dup) == entry.rows:
                continue
            if dup:
                ref = store_deletes(self.store, collection, np.asarray(dup), scratch)
                written += ref.size
                renamed = renamed.with_deletes(ref, len(dup))
            segments.append(renamed)
        published = base.successor(version, segments, "replace" if replace else operation, parent=current)
        self.store.publish(published, expected_current=current)
        written += len(published.to_json())
        if replace:
            self._maps.pop(collection, None)
        else:
            self.id_map(collection, published)
        if self._log:
            self._log.info("segments committed", extra={
                "collection": collection, "version": version, "new_segments": len(new), "replace": replace,
                "documents": published.count, "segments": len(published.segments)})
        return WriteResult(collection, version, len(later), 0, 0, published.count, len(published.segments),
                           written)

    def _apply_once(self, collection: str, batch: _Batch, cache: dict[str, np.ndarray]) -> WriteResult:
        current, manifest = self.live(collection)
        base = self._base(collection, manifest)
        ids = self.id_map(collection, manifest)
        model_id = self.encoder.model_id
        upserts = {i: d for i, d in batch.final.items() if d is not None
                   and not (i in ids.where and ids.hash_of(i) == d.content_hash(model_id))}
        deletes = [i for i, d in batch.final.items() if d is None and i in ids.where]
        unchanged = sum(1 for i, d in batch.final.items() if d is not None and i not in upserts)
        if not upserts and not deletes:
            return WriteResult(collection, None, 0, 0, unchanged, base.count if manifest else 0,
                               len(base.segments))

        started = time.perf_counter()
        version = self.store.next_version(collection)
        scratch = self.scratch_dir / "build"
        written = 0
        # Rows this write supersedes, by segment.
        touched: dict[str, list[int]] = {}
        for doc_id in [*upserts, *deletes]:
            if doc_id in ids.where:
                segment_id, row = ids.where[doc_id]
                touched.setdefault(segment_id, []).append(row)
        segments: list[SegmentEntry] = []
        for entry in base.segments:
            rows = touched.get(entry.id)
            if not rows:
                segments.append(entry)
                continue
            deleted = np.union1d(ids.segments[entry.id].deleted, np.asarray(rows, dtype=np.uint32))
            if len(deleted) == entry.rows:
                continue  # every row gone: the segment leaves the version
            ref = store_deletes(self.store, collection, deleted, scratch)
            written += ref.size
            segments.append(entry.with_deletes(ref, len(deleted)))
        new_entry = None
        if upserts:
            docs = list(upserts.values())
            missing = [d for d in docs if d.id not in cache]
            if missing:
                for doc, vector in zip(missing, self.encoder.embed([d.text for d in missing])):
                    cache[doc.id] = vector
            matrix = np.stack([cache[d.id] for d in docs]).astype(np.float16)
            records = [d.to_record(model_id) for d in docs]
            new_entry = store_segment(self.store, collection, base.next_segment_id(version), records, matrix,
                                      manifest_params(base), scratch, hnsw_min_rows=self.hnsw_min_rows,
                                      threads=self.encoder.threads)
            written += new_entry.bytes
            segments.append(new_entry)
        published = base.successor(version, segments, "write", parent=current)
        self.store.publish(published, expected_current=current)
        written += len(published.to_json())
        if new_entry is not None:
            ids.add(new_entry, [r["id"] for r in records], [r["hash"] for r in records], np.empty(0, np.uint32))
        self.id_map(collection, published)  # the deletion vectors just written: read back from the store
        if self._log:
            self._log.info("published version", extra={
                "collection": collection, "version": version, "documents": published.count,
                "upserts": len(upserts), "deletes": len(deletes), "segments": len(published.segments),
                "bytes_written": written, "ms": round((time.perf_counter() - started) * 1000, 1)})
        return WriteResult(collection, version, len(upserts), len(deletes), unchanged, published.count,
                           len(published.segments), written)
