"""The writer's map of live document ids to (segment, row), kept in step with the live
manifest by its diff: a warm writer reads only the ids and deletion vectors of segments
that changed since the version it last saw; a cold one reads every segment's ids once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ragserve.snapshots.manifest import SegmentEntry, VersionManifest


@dataclass(slots=True)
class SegmentIds:
    entry: SegmentEntry
    ids: list[str]
    hashes: list[str | None]
    deleted: np.ndarray  # sorted uint32 rows


@dataclass(slots=True)
class IdMap:
    version: int | None = None
    segments: dict[str, SegmentIds] = field(default_factory=dict)
    where: dict[str, tuple[str, int]] = field(default_factory=dict)  # live id -> (segment id, row)

    def hash_of(self, doc_id: str) -> str | None:
        segment_id, row = self.where[doc_id]
        return self.segments[segment_id].hashes[row]

    def sync(self, manifest: VersionManifest | None,
             read_ids: Callable[[SegmentEntry], tuple[list[str], list[str | None]]],
             read_deletes: Callable[[SegmentEntry], np.ndarray]) -> None:
        """Bring the map to ``manifest`` (None: an empty collection), reading only what changed."""
        wanted = {s.id: s for s in (manifest.segments if manifest else ())}
        for segment_id in [s for s in self.segments if s not in wanted]:
            self._drop(self.segments.pop(segment_id))
        for entry in wanted.values():
            known = self.segments.get(entry.id)
            if known is None:
                ids, hashes = read_ids(entry)
                if len(ids) != entry.rows:
                    raise ValueError(f"segment {entry.id}: {len(ids)} ids for {entry.rows} rows")
                deleted = read_deletes(entry) if entry.deletes else np.empty(0, np.uint32)
                self.add(entry, ids, hashes, deleted)
            elif known.entry.deletes != entry.deletes:
                deleted = read_deletes(entry) if entry.deletes else np.empty(0, np.uint32)
                newly = np.setdiff1d(deleted, known.deleted, assume_unique=True)
                for row in newly.tolist():
                    doc_id = known.ids[row]
                    if self.where.get(doc_id) == (entry.id, row):
                        del self.where[doc_id]
                # rows deleted before but not in ``manifest``: CURRENT was moved back to an
                # older version (a repair); they are live again
                for row in np.setdiff1d(known.deleted, deleted, assume_unique=True).tolist():
                    self.where[known.ids[row]] = (entry.id, row)
                known.deleted, known.entry = deleted, entry
            else:
                known.entry = entry
        self.version = manifest.version if manifest else None

    def add(self, entry: SegmentEntry, ids: list[str], hashes: list[str | None], deleted: np.ndarray) -> None:
        self.segments[entry.id] = SegmentIds(entry, ids, hashes, deleted)
        live = np.ones(entry.rows, dtype=bool)
        live[deleted] = False
        for row in np.flatnonzero(live).tolist():
            self.where[ids[row]] = (entry.id, row)

    def _drop(self, segment: SegmentIds) -> None:
        segment_id = segment.entry.id
        for row, doc_id in enumerate(segment.ids):
            if self.where.get(doc_id) == (segment_id, row):
                del self.where[doc_id]
