"""One collection version, loaded for search: its segments (each memory-mapped once and
shared by every version that lists it), their deletion masks, and metadata filters.

A search runs every segment with its deleted rows (and the filter's misses) masked
out, and merges the per-segment top lists on their exact re-scored similarity: scores
come from the same float16 vectors whatever segment or index produced the candidate,
so the merge is a plain sort. Ties break on (segment order, row): deterministic."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ragserve.documents import Scalar, metadata_key
from ragserve.index.ann import IndexParams, VectorIndex
from ragserve.segments.files import manifest_params, read_deletes, read_records
from ragserve.snapshots.manifest import BlobRef, SegmentEntry, VersionManifest

# Results are ranked in windows of this many: pages of the same query on the same
# version are slices of one exactly re-scored ranking, so pagination is stable.
PAGE_WINDOW = 100
_MASK_CACHE_SIZE = 256

BlobOpener = Callable[[BlobRef], Path]


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[dict]
    index_version: int
    next_offset: int | None
    top_score: float | None


class LoadedSegment:
    """A segment's immutable files, opened: the vectors (and graph) memory-mapped, the
    documents in row order. Shared by every loaded version that lists the segment."""

    def __init__(self, entry: SegmentEntry, index: VectorIndex, records: list[dict]) -> None:
        self.entry = entry
        self.index = index
        self.records = records
        self._masks: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._masks_lock = threading.Lock()

    @property
    def key(self) -> tuple[str, str]:
        return segment_key(self.entry)

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def open(cls, entry: SegmentEntry, params: IndexParams, blob: BlobOpener) -> LoadedSegment:
        vectors = blob(entry.vectors)
        index = (VectorIndex.view(blob(entry.index), vectors, params) if entry.index is not None
                 else VectorIndex.exact(vectors, params))
        records = read_records(blob(entry.docs))
        if len(records) != entry.rows or len(index) != entry.rows:
            raise ValueError(f"segment {entry.id}: {len(records)} documents and {len(index)} vectors, "
                             f"the manifest says {entry.rows} rows")
        return cls(entry, index, records)

    def mask(self, key: str, value: Scalar) -> np.ndarray:
        """Rows whose metadata ``key`` equals ``value`` (cached, least recently used out)."""
        cache_key = (key, metadata_key(value))
        with self._masks_lock:
            mask = self._masks.get(cache_key)
            if mask is not None:
                self._masks.move_to_end(cache_key)
                return mask
        wanted = cache_key[1]
        mask = np.fromiter(
            (key in (m := r.get("metadata") or {}) and metadata_key(m[key]) == wanted for r in self.records),
            dtype=bool, count=len(self.records))
        with self._masks_lock:
            self._masks[cache_key] = mask
            while len(self._masks) > _MASK_CACHE_SIZE:
                self._masks.popitem(last=False)
        return mask

    def memory_bytes(self) -> int:
        return self.index.memory_bytes()


def segment_key(entry: SegmentEntry) -> tuple[str, str]:
    """What makes two manifest entries the same loaded segment: its id and its files."""
    return entry.id, entry.vectors.sha256


@dataclass(frozen=True, slots=True)
class _Part:
    segment: LoadedSegment
    live: np.ndarray | None  # bool per row, False = deleted; None: nothing deleted


class LoadedCollection:
    def __init__(self, manifest: VersionManifest, parts: list[_Part]) -> None:
        self.manifest = manifest
        self._parts = parts

    @property
    def name(self) -> str:
        return self.manifest.collection

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def segments(self) -> list[LoadedSegment]:
        return [p.segment for p in self._parts]

    def __len__(self) -> int:
        return self.manifest.count

    @classmethod
    def open(cls, manifest: VersionManifest, blob: BlobOpener,
             shared: Mapping[tuple[str, str], LoadedSegment] | None = None) -> LoadedCollection:
        """Open ``manifest``'s segments, reusing those in ``shared`` (a version already
        loaded): only new segments are read; deletion vectors are small and always read."""
        shared = shared or {}
        params = manifest_params(manifest)
        parts = []
        for entry in manifest.segments:
            segment = shared.get(segment_key(entry)) or LoadedSegment.open(entry, params, blob)
            live = None
            if entry.deletes is not None:
                live = np.ones(entry.rows, dtype=bool)
                live[read_deletes(blob(entry.deletes), entry.rows)] = False
            parts.append(_Part(segment, live))
        return cls(manifest, parts)

    def describe(self) -> dict:
        m = self.manifest
        return {"collection": self.name, "documents": len(self), "index_version": self.version,
                "dtype": m.dtype, "built_at": m.created_at, "model": m.model_id,
                "segments": describe_segments(m)}

    def memory_bytes(self) -> int:
        return sum(p.segment.memory_bytes() for p in self._parts)

    def _allowed(self, part: _Part, where: Mapping[str, Scalar] | None) -> np.ndarray | None:
        masks = [part.segment.mask(k, v) for k, v in sorted((where or {}).items())]
        if part.live is not None:
            masks.append(part.live)
        if not masks:
            return None
        return np.logical_and.reduce(masks) if len(masks) > 1 else masks[0]

    def search(self, query: np.ndarray, *, k: int, offset: int, where: Mapping[str, Scalar] | None,
               include_text: bool) -> SearchPage:
        end = offset + k
        window = (end // PAGE_WINDOW + 1) * PAGE_WINDOW  # one more than the page: tells if more exist
        found_parts, found_rows, found_scores = [], [], []
        for number, part in enumerate(self._parts):
            rows, scores = part.segment.index.search(query, window, allowed=self._allowed(part, where))
            found_parts.append(np.full(len(rows), number, dtype=np.int64))
            found_rows.append(rows)
            found_scores.append(scores)
        if found_rows:
            parts, rows, scores = (np.concatenate(found_parts), np.concatenate(found_rows),
                                   np.concatenate(found_scores))
            order = np.lexsort((rows, parts, -scores))[:window]
            parts, rows, scores = parts[order], rows[order], scores[order]
        else:
            parts = rows = np.empty(0, np.int64)
            scores = np.empty(0, np.float32)
        results = []
        for number, row, score in zip(parts[offset:end], rows[offset:end], scores[offset:end]):
            record = self._parts[int(number)].segment.records[int(row)]
            hit = {"id": record["id"], "score": round(float(score), 6), "metadata": record.get("metadata") or {}}
            if include_text:
                hit["text"] = record["text"]
            results.append(hit)
        return SearchPage(results=results, index_version=self.version,
                          next_offset=end if len(rows) > end else None,
                          top_score=float(scores[0]) if len(scores) and offset == 0 else None)


def describe_segments(manifest: VersionManifest) -> dict:
    """What ``GET /v1/collections/{c}`` reports of the segments, for watching compaction."""
    segments = manifest.segments
    return {
        "count": len(segments),
        "rows": sum(s.rows for s in segments),
        "deleted_rows": manifest.deleted,
        "bytes": sum(s.bytes for s in segments),
        "indexed": sum(1 for s in segments if s.index is not None),
        "items": [{"id": s.id, "rows": s.rows, "deleted": s.deleted, "bytes": s.bytes,
                   "index": "hnsw" if s.index is not None else "exact"} for s in segments],
    }
