"""Vector index of a collection snapshot: usearch HNSW + exact re-scoring (see ``ann``)."""

from __future__ import annotations

from ragserve.index.ann import DTYPES, Dtype, IndexParams, VectorIndex

__all__ = ["DTYPES", "Dtype", "IndexParams", "VectorIndex"]
