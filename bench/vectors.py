"""Clustered unit vectors: the data of the search benchmark (bench/search.py) and of the
index recall tests (tests/unit/test_index.py), so both measure the same thing.

``CLUSTERS`` random unit centres in ``DIMS`` dimensions; a point is a centre plus
isotropic Gaussian noise of norm ~``SPREAD``, L2-normalised (cosine ~0.7 to its centre,
~0.5 to the other points of its cluster, ~0 to other clusters). Queries are fresh draws
from the same mixture: near the data, never equal to a stored row. Neighbours inside a
cluster are nearly equidistant, which makes this a hard case for quantised indexes (the
gap between the 10th and 11th neighbour is ~0.002 in cosine). Deterministic: the same
arguments give the same bytes.
"""

from __future__ import annotations

import numpy as np

DIMS = 384
CLUSTERS = 200
SPREAD = 1.0
_CHUNK = 65_536  # rows generated at a time (bounds the float32 temporaries at 1M rows)


def centres(*, dims: int = DIMS, clusters: int = CLUSTERS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    c = rng.standard_normal((clusters, dims), dtype=np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def _draw(count: int, stream: int, *, dims: int, clusters: int, spread: float, seed: int) -> np.ndarray:
    c = centres(dims=dims, clusters=clusters, seed=seed)
    rng = np.random.default_rng([seed, stream])
    out = np.empty((count, dims), dtype=np.float32)
    for start in range(0, count, _CHUNK):
        m = min(_CHUNK, count - start)
        x = c[rng.integers(0, clusters, m)]
        x += rng.standard_normal((m, dims), dtype=np.float32) * np.float32(spread / np.sqrt(dims))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[start:start + m] = x
    return out


def clustered(count: int, *, dims: int = DIMS, clusters: int = CLUSTERS, spread: float = SPREAD,
              seed: int = 0) -> np.ndarray:
    """``count`` stored vectors, float32 ``(count, dims)``, unit norm."""
    return _draw(count, 1, dims=dims, clusters=clusters, spread=spread, seed=seed)


def queries(count: int, *, dims: int = DIMS, clusters: int = CLUSTERS, spread: float = SPREAD,
            seed: int = 0) -> np.ndarray:
    """``count`` query vectors from the same mixture as ``clustered`` (same ``seed``)."""
    return _draw(count, 2, dims=dims, clusters=clusters, spread=spread, seed=seed)


def exact_top(data: np.ndarray, query_vectors: np.ndarray, k: int, *, chunk: int = 256) -> np.ndarray:
    """Ground truth: rows of the ``k`` largest inner products per query, int64
    ``(len(query_vectors), k)``, best first, ties by lower row."""
    out = np.empty((len(query_vectors), k), dtype=np.int64)
    for start in range(0, len(query_vectors), chunk):
        scores = query_vectors[start:start + chunk] @ data.T
        for i, row in enumerate(scores):
            top = np.argpartition(-row, k - 1)[:k] if k < len(row) else np.arange(len(row))
            out[start + i] = top[np.lexsort((top, -row[top]))]
    return out


def recall_at(found: list[np.ndarray] | np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each query's true top-k found in its first k results."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f[:k], t)) / k for f, t in zip(found, truth)]))
