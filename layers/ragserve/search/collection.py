"""One collection version, loaded for search: the memory-mapped index and vectors, the
documents in row order, and equality filters on metadata."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from ragserve.documents import Scalar, metadata_key
from ragserve.index.ann import IndexParams, VectorIndex
from ragserve.snapshots.format import SnapshotMeta, read_manifest

# Results are ranked in windows of this many: pages of the same query on the same
# version are slices of one exactly re-scored ranking, so pagination is stable.
PAGE_WINDOW = 100
_MASK_CACHE_SIZE = 256


@dataclass(frozen=True, slots=True)
class SearchPage:
    results: list[dict]
    index_version: int
    next_offset: int | None
    top_score: float | None


class LoadedCollection:
    def __init__(self, meta: SnapshotMeta, index: VectorIndex, records: list[dict], directory: Path) -> None:
        self.meta = meta
        self.index = index
        self.records = records
        self.directory = directory
        self._masks: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._masks_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.meta.collection

    @property
    def version(self) -> int:
        return self.meta.version

    def __len__(self) -> int:
        return len(self.records)

    @classmethod
    def open(cls, directory: Path) -> LoadedCollection:
        """Map a snapshot that ``SnapshotStore.fetch`` has verified (sha256 of every file)."""
        meta = read_manifest(directory)
        params = IndexParams(**{"dtype": meta.dtype, **meta.params})
        index = VectorIndex.view(directory / "index.usearch", directory / "vectors.f16.npy", params)
        with (directory / "docs.jsonl").open("rb") as f:
            records = [orjson.loads(line) for line in f if line.strip()]
        if len(records) != len(index) or len(records) != meta.count:
            raise ValueError(f"{directory}: {len(records)} documents, {len(index)} vectors, manifest {meta.count}")
        return cls(meta, index, records, directory)

    def describe(self) -> dict:
        return {"collection": self.name, "documents": len(self), "index_version": self.version,
                "dtype": self.meta.dtype, "built_at": self.meta.built_at, "model": self.meta.model_id}

    def _mask(self, key: str, value: Scalar) -> np.ndarray:
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

    def allowed(self, where: Mapping[str, Scalar] | None) -> np.ndarray | None:
        """Rows whose metadata equals every ``key: value`` of ``where`` (None: all rows)."""
        if not where:
            return None
        masks = [self._mask(k, v) for k, v in sorted(where.items())]
        return np.logical_and.reduce(masks) if len(masks) > 1 else masks[0]

    def search(self, query: np.ndarray, *, k: int, offset: int, where: Mapping[str, Scalar] | None,
               include_text: bool) -> SearchPage:
        end = offset + k
        window = (end // PAGE_WINDOW + 1) * PAGE_WINDOW  # one more than the page: tells if more exist
        rows, scores = self.index.search(query, window, allowed=self.allowed(where))
        results = []
        for row, score in zip(rows[offset:end], scores[offset:end]):
            record = self.records[int(row)]
            hit = {"id": record["id"], "score": round(float(score), 6), "metadata": record.get("metadata") or {}}
            if include_text:
                hit["text"] = record["text"]
            results.append(hit)
        return SearchPage(results=results, index_version=self.version,
                          next_offset=end if len(rows) > end else None,
                          top_score=float(scores[0]) if len(scores) and offset == 0 else None)
