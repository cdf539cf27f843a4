"""Compaction: merge the segments the policy picks into one, dropping deleted rows, and
commit with the same conditional swap of ``CURRENT`` as a write.

A write that lands while a merge is being built is never lost or doubled: if the swap
fails, the compactor re-reads the live manifest; rows of the merged segments that the
write deleted or replaced meanwhile are marked in the merged segment's deletion vector,
and the write's own segment is kept as it is. If another compaction took one of the
chosen segments, this merge is abandoned (its blobs are left to retention).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ragserve.segments.files import manifest_params, read_deletes, read_records, store_deletes, store_segment
from ragserve.segments.policy import MergePolicy
from ragserve.snapshots.errors import PointerConflict
from ragserve.snapshots.manifest import SegmentEntry, VersionManifest
from ragserve.snapshots.store import SnapshotStore, read_live

COMMIT_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class CompactResult:
    collection: str
    version: int
    merged: tuple[str, ...]  # the segments replaced
    segment: str | None  # the new one (None: every merged row was deleted)
    rows: int  # rows of the new segment
    purged: int  # deleted rows dropped
    bytes_written: int
    seconds: float


class Compactor:
    def __init__(self, store: SnapshotStore, policy: MergePolicy, scratch_dir: Path, *, hnsw_min_rows: int,
                 threads: int = 0, log=None) -> None:
        self.store = store
        self.policy = policy
        self.scratch_dir = scratch_dir
        self.hnsw_min_rows = hnsw_min_rows
        self.threads = threads
        self._log = log

    def _live(self, collection: str) -> tuple[int | None, VersionManifest | None]:
        return read_live(self.store, collection, waiting="compaction waits")

    def _deleted(self, collection: str, entry: SegmentEntry) -> np.ndarray:
        if entry.deletes is None:
            return np.empty(0, np.uint32)
        return read_deletes(self.store.blob(collection, entry.deletes, self.scratch_dir / "blobs"), entry.rows)

    def compact(self, collection: str, *, max_merges: int = 100) -> list[CompactResult]:
        """Merge until the policy is satisfied (at most ``max_merges`` merges)."""
        done = []
        for _ in range(max_merges):
            result = self.compact_once(collection)
            if result is None:
                break
            done.append(result)
        return done

    def compact_once(self, collection: str) -> CompactResult | None:
        """One merge, if the policy wants one; None if it does not (or lost a race)."""
        current, manifest = self._live(collection)
        if manifest is None:
            return None
        chosen_ids = self.policy.find_merge(manifest.segments)
        if not chosen_ids:
            return None
        started = time.perf_counter()
        chosen = [manifest.segment(i) for i in chosen_ids]
        cache = self.scratch_dir / "blobs"
        params = manifest_params(manifest)
        records: list[dict] = []
        blocks: list[np.ndarray] = []
        origin: list[tuple[str, np.ndarray]] = []  # (segment id, its rows kept), in merged order
        for entry in chosen:
            live = np.ones(entry.rows, dtype=bool)
            live[self._deleted(collection, entry)] = False
            rows = np.flatnonzero(live)
            docs = read_records(self.store.blob(collection, entry.docs, cache))
            vectors = np.load(self.store.blob(collection, entry.vectors, cache), mmap_mode="r")
            records += [docs[r] for r in rows.tolist()]
            blocks.append(np.asarray(vectors[rows], dtype=np.float16))
            origin.append((entry.id, rows))
        purged = sum(e.deleted for e in chosen)
        version = self.store.next_version(collection)
        segment_id = manifest.next_segment_id(version)
        written = 0
        merged: SegmentEntry | None = None
        if records:
            merged = store_segment(self.store, collection, segment_id, records, np.concatenate(blocks), params,
                                   self.scratch_dir / "build", hnsw_min_rows=self.hnsw_min_rows,
                                   threads=self.threads)
            written += merged.bytes
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            entry = merged
            if merged is not None:
                late = self._late_deletes(collection, manifest, origin)
                if len(late) == merged.rows:
                    entry = None
                elif len(late):
                    ref = store_deletes(self.store, collection, late, self.scratch_dir / "build")
                    written += ref.size
                    entry = merged.with_deletes(ref, len(late))
            segments = []
            for s in manifest.segments:
                if s.id == chosen_ids[0] and entry is not None:
                    segments.append(entry)
                elif s.id not in chosen_ids:
                    segments.append(s)
            published = manifest.successor(version, segments, "compact", parent=current)
            try:
                self.store.publish(published, expected_current=current)
            except PointerConflict:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                current, manifest = self._live(collection)
                if manifest is None or any(manifest.segment(i) is None for i in chosen_ids):
                    if self._log:
                        self._log.info("merge abandoned: its segments changed meanwhile",
                                       extra={"collection": collection, "segments": chosen_ids})
                    return None
                version = self.store.next_version(collection)
                if merged is not None:  # named for the version that commits it: the winner may hold its old name
                    merged = replace(merged, id=manifest.next_segment_id(version))
                continue
            written += len(published.to_json())
            result = CompactResult(collection, version, tuple(chosen_ids), entry.id if entry else None,
                                   entry.rows if entry else 0, purged, written,
                                   round(time.perf_counter() - started, 3))
            if self._log:
                self._log.info("segments merged", extra={
                    "collection": collection, "version": version, "merged": len(chosen_ids),
                    "rows": result.rows, "purged": purged, "bytes_written": written,
                    "segments": len(published.segments), "seconds": result.seconds})
            return result
        return None

    def _late_deletes(self, collection: str, manifest: VersionManifest,
                      origin: list[tuple[str, np.ndarray]]) -> np.ndarray:
        """Rows of the merged segment deleted in ``manifest`` after the merge read them."""
        late, offset = [], 0
        for segment_id, rows in origin:
            entry = manifest.segment(segment_id)
            if entry is not None and entry.deletes is not None:
                now_deleted = self._deleted(collection, entry)
                hit = np.flatnonzero(np.isin(rows, now_deleted, assume_unique=True))
                late.append(hit + offset)
            offset += len(rows)
        return np.concatenate(late).astype(np.uint32) if late else np.empty(0, np.uint32)
