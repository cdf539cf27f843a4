"""The approximate-nearest-neighbour index of one collection snapshot: a usearch HNSW
graph over the rows of an embedding matrix, plus a float16 copy of that matrix used to
re-score every answer exactly.

Keys are row numbers ``0..n-1``; mapping rows to document ids is the caller's job.
Pure core: no AWS, no environment variables, no logging.

Storage per dtype (the dtype is pinned, never left to usearch's hardware choice):

- ``f16``: vectors as float16, inner product (the vectors are unit length).
- ``i8``:  vectors as int8, cosine. ragserve quantises each vector itself, scaled so its
  largest component is +-127: usearch's own cast multiplies by 127, which leaves the
  ~0.05-sized components of a 384-d unit vector with 3 bits (raw recall@10 0.89 against
  0.99 with the per-vector scale, measured on the clustered test data at 20k).
- ``b1``:  one sign bit per dimension (``np.packbits(v > 0)``), Hamming distance,
  ``ndim`` = the number of dimensions (bits), 48 bytes per 384-d vector.

``search`` always re-scores its candidates with the exact cosine against the stored
float16 vectors, so scores are comparable across dtypes; the lossy modes (i8, b1)
over-fetch candidates for that re-scoring (see ``candidate_count``).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from usearch.index import Index, MetricKind, ScalarKind

Dtype = Literal["f16", "i8", "b1"]
DTYPES: tuple[str, ...] = get_args(Dtype)

_SCALAR = {"f16": ScalarKind.F16, "i8": ScalarKind.I8, "b1": ScalarKind.B1}
_METRIC = {"f16": MetricKind.IP, "i8": MetricKind.Cos, "b1": MetricKind.Hamming}

# Below this many rows (allowed by a filter, or in the whole index) an exact scan of the
# float16 vectors is about as fast as the graph and always exact.
EXACT_SCAN_MAX_ROWS = 2048
# Search-time expansion grows with log2 of the collection size past this many rows.
EXPANSION_GROWTH_FROM = 50_000
# Lossy modes fetch at least this many candidates per requested result.
RESCORE_PER_RESULT = 10
# b1 over-fetch also grows with sqrt(n / B1_RESCORE_REFERENCE_ROWS) (see candidate_count).
B1_RESCORE_REFERENCE_ROWS = 5_000
# Filtered search: first fetch = wanted / selectivity * this margin, then doubling while
# the fetch stays below allowed rows / FILTER_SCAN_RATIO (an HNSW beam of F costs about as
# much as an exact scan of ~16 F rows); past that, the allowed rows are scanned exactly.
FILTER_MARGIN = 1.5
FILTER_SCAN_RATIO = 16
# A beam whose allowed share is under this fraction of the collection's allowed share
# means the filter and the query disagree (the nearest allowed rows lie outside the beam,
# and the allowed rows it did return are the graph's misses): widen it, or scan exactly.
FILTER_MIN_SHARE = 0.25
# Exact scans work through this many rows at a time (bounds the float64 temporaries).
EXACT_SCAN_CHUNK = 8192
_NORM_TOLERANCE = 1e-2


@dataclass(frozen=True, slots=True)
class IndexParams:
    """How an index is built and searched. ``connectivity`` and ``expansion_add`` are
    fixed at build time (they live in the file); the others apply at search time."""

    dtype: Dtype = "f16"
    connectivity: int = 16  # HNSW M
    expansion_add: int = 128  # ef_construction
    expansion_search: int = 64  # base ef_search; raised with collection size and with `count`
    rescore_candidates: int = 100  # over-fetch for modes that lose recall (i8, b1), re-scored exactly

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        for name in ("connectivity", "expansion_add", "expansion_search", "rescore_candidates"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


def expansion_for(n: int, fetch: int, params: IndexParams) -> int:
    """HNSW ``ef`` for a search of ``fetch`` candidates in an index of ``n`` rows:

        ef = max(expansion_search * max(1, 1 + log2(n / EXPANSION_GROWTH_FROM)), fetch)

    i.e. 64 up to 50k rows, 128 at 100k, 256 at 400k, ~340 at 1M with the defaults.
    Measured with the default build (M 16, ef_construction 128) on the clustered 384-d
    data of the tests (``bench/vectors.py``), f16 recall@10 (ef 32 / 64 / 128 / 256 / 512):
    20k 1.000 at 64; 100k 0.934 / 0.991 / 0.999 / 0.999; 1M 0.49 / 0.66 / 0.81 / 0.91 /
    0.96 (0.97 at 1024). That data is a worst case at 1M (5,000 nearly equidistant points
    a cluster); the Search section of docs/BENCHMARKS.md has the latest measurements.
    The beam never holds fewer than the ``fetch``
    candidates asked for: for the lossy modes the over-fetch is itself the recall lever
    (a Hamming top-100 from ef 100 and from ef 256 hold the same true neighbours)."""
    growth = max(1.0, 1.0 + math.log2(max(n, 1) / EXPANSION_GROWTH_FROM))
    return max(int(math.ceil(params.expansion_search * growth)), fetch)


def candidate_count(dtype: Dtype, count: int, n: int, params: IndexParams) -> int:
    """How many ANN candidates to re-score for ``count`` results in ``n`` rows.

    - f16: ``count`` (its ranking is already near-exact; re-scoring only fixes scores).
    - i8:  ``max(count, rescore_candidates, RESCORE_PER_RESULT * count)``.
    - b1:  the i8 figure times ``sqrt(n / B1_RESCORE_REFERENCE_ROWS)`` (never below 1):
      100 at 5k, 200 at 20k, 448 at 100k, 1,415 at 1M. Sign bits cannot separate
      neighbours that are nearly equidistant, and big clusters hold more of them: on the
      clustered test data an exact Hamming top-100 holds 0.995 of the true top-10 at 20k
      but 0.69 at 100k (200: 0.89, 400: 0.99, 800: 1.00). Data with more local structure
      needs far fewer (a Hamming top-100 was exact at 100k with rank-24 clusters); the
      square root is a compromise between the two, and ``rescore_candidates`` the knob.
    """
    if dtype == "f16":
        return min(n, count)
    fetch = max(count, params.rescore_candidates, RESCORE_PER_RESULT * count)
    if dtype == "b1":
        fetch = int(math.ceil(fetch * max(1.0, math.sqrt(n / B1_RESCORE_REFERENCE_ROWS))))
    return min(n, fetch)


def quantize_i8(vectors: np.ndarray) -> np.ndarray:
    """int8 rows scaled so each row's largest magnitude is 127 (cosine is scale-free)."""
    peak = np.max(np.abs(vectors), axis=-1, keepdims=True)
    scale = np.float32(127.0) / np.maximum(peak, np.float32(1e-12))
    return np.rint(vectors * scale).astype(np.int8)


def pack_b1(vectors: np.ndarray) -> np.ndarray:
    """Sign bits, packed 8 to a byte (big-endian bit order, as ``np.packbits``)."""
    return np.packbits(vectors > 0, axis=-1)


def _encode(dtype: Dtype, vectors: np.ndarray) -> np.ndarray:
    if dtype == "i8":
        return quantize_i8(vectors)
    if dtype == "b1":
        return pack_b1(vectors)
    return vectors


def _new_usearch(dtype: Dtype, dims: int, params: IndexParams) -> Index:
    return Index(ndim=dims, metric=_METRIC[dtype], dtype=_SCALAR[dtype], connectivity=params.connectivity,
                 expansion_add=params.expansion_add, expansion_search=params.expansion_search)


class VectorIndex:
    """An HNSW index over unit vectors whose keys are row numbers, answering exact-scored
    top-k queries with an optional row filter. ``build`` in memory, ``save`` two files,
    ``view`` them memory-mapped. Searches are serialised by a lock (the search expansion
    is set per call on the shared usearch object)."""

    def __init__(self, index: Index | None, vectors: np.ndarray, params: IndexParams) -> None:
        if index is None:  # no graph: every search is an exact scan (a small segment)
            pass
        elif len(index) != len(vectors):
            raise ValueError(f"the index holds {len(index)} vectors but the vectors file {len(vectors)}")
        elif index.ndim != vectors.shape[1]:
            raise ValueError(f"the index has {index.ndim} dimensions but the vectors {vectors.shape[1]}")
        self._index = index
        self.vectors = vectors  # float16 (n, d): the source of every returned score
        self.params = params
        self._mapped_bytes = 0  # size of the memory-mapped graph file, when viewed
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ build / files

    @classmethod
    def build(cls, vectors: np.ndarray, params: IndexParams, *, threads: int = 0) -> VectorIndex:
        """Index ``vectors`` (float32 ``(n, d)``, unit rows; key = row number) with
        ``threads`` workers (0: all cores)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] < 1:
            raise ValueError(f"vectors must be a 2-d (n, dimensions) array, got shape {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise ValueError(f"vectors must be floating point, got {vectors.dtype}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if len(vectors):
            if not np.isfinite(vectors).all():
                raise ValueError("vectors contain NaN or infinity")
            norms = np.linalg.norm(vectors, axis=1)
            worst = float(np.max(np.abs(norms - 1.0)))
            if worst > _NORM_TOLERANCE:
                bad = float(norms[np.argmax(np.abs(norms - 1.0))])
                raise ValueError(f"vectors must be L2-normalised (a row has norm {bad:.4f}); normalise them first")
        index = _new_usearch(params.dtype, vectors.shape[1], params)
        if len(vectors):
            index.add(np.arange(len(vectors), dtype=np.uint64), _encode(params.dtype, vectors), threads=threads)
        return cls(index, vectors.astype(np.float16), params)

    def save(self, index_path: Path, vectors_path: Path) -> None:
        """Write the graph (``index.usearch``) and the float16 vectors (``.npy``)."""
        index_path, vectors_path = Path(index_path), Path(vectors_path)
        self._index.save(str(index_path))
        with vectors_path.open("wb") as f:  # np.save(path) would append ".npy" to other names
            np.save(f, np.ascontiguousarray(self.vectors, dtype=np.float16), allow_pickle=False)

    @classmethod
    def exact(cls, vectors_path: Path, params: IndexParams) -> VectorIndex:
        """Searched by exact scans only, over memory-mapped float16 vectors (no graph)."""
        return cls(None, _load_vectors(Path(vectors_path)), params)

    @property
    def has_graph(self) -> bool:
        return self._index is not None

    @classmethod
    def view(cls, index_path: Path, vectors_path: Path, params: IndexParams) -> VectorIndex:
        """Open saved files memory-mapped (nothing is copied into the heap). ``params``
        must name the dtype the files were built with; its search settings apply."""
        index_path, vectors_path = Path(index_path), Path(vectors_path)
        if not index_path.is_file():
            raise FileNotFoundError(f"no index file at {index_path}")
        meta = Index.metadata(str(index_path))
        if not meta:
            raise ValueError(f"{index_path} is not a usearch index")
        stored = next((k for k, v in _SCALAR.items() if v == meta["kind_scalar"]), str(meta["kind_scalar"]))
        if stored != params.dtype:
            raise ValueError(f"{index_path} holds a {stored} index but params.dtype is {params.dtype}")
        index = Index.restore(str(index_path), view=True)
        index.expansion_search = params.expansion_search
        viewed = cls(index, _load_vectors(vectors_path), params)
        viewed._mapped_bytes = index_path.stat().st_size
        return viewed

    # ------------------------------------------------------------------ properties

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def dimensions(self) -> int:
        return int(self.vectors.shape[1])

    def memory_bytes(self) -> int:
        """Approximate bytes held once every page is touched: the graph (usearch's own
        accounting when built, the mapped file size when viewed) plus the float16 vectors
        (file-backed pages when viewed: page cache, which counts toward a Lambda's memory)."""
        graph = max(int(self._index.memory_usage), self._mapped_bytes) if self._index is not None else 0
        return graph + int(self.vectors.nbytes)

    # ------------------------------------------------------------------ search

    def search(self, query: np.ndarray, count: int, *,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``count`` rows most similar to ``query``: ``(rows int64, scores float32)``,
        by score descending then row ascending. Scores are exact cosines against the
        stored float16 vectors whatever the dtype. ``allowed`` (bool, one per row) keeps
        only those rows, and then exactly ``min(count, allowed.sum())`` are returned.
        Deterministic: the same query and count on the same index give the same answer."""
        q = self._check_query(query)
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
            raise ValueError(f"count must be a non-negative integer, not {count!r}")
        n = len(self)
        if allowed is not None:
            allowed = np.asarray(allowed)
            if allowed.dtype != np.bool_ or allowed.shape != (n,):
                raise ValueError(f"allowed must be a bool array of shape ({n},), got {allowed.dtype} {allowed.shape}")
        count = int(count)
        if count == 0 or n == 0:
            return _empty()
        if self._index is None:
            return self._exact(q, None if allowed is None else np.flatnonzero(allowed), count)
        if allowed is None:
            if n <= EXACT_SCAN_MAX_ROWS:
                return self._exact(q, None, count)
            fetch = candidate_count(self.params.dtype, count, n, self.params)
            return self._rescore(q, self._candidates(q, fetch), count)
        return self._filtered(q, count, allowed)

    def _filtered(self, q: np.ndarray, count: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        allowed_count = int(np.count_nonzero(allowed))
        if allowed_count == 0:
            return _empty()
        if allowed_count <= max(EXACT_SCAN_MAX_ROWS, count * RESCORE_PER_RESULT):
            return self._exact(q, np.flatnonzero(allowed), count)
        # Allowed candidates worth re-scoring: as many as an unfiltered search would take.
        wanted = min(allowed_count, candidate_count(self.params.dtype, count, n, self.params))
        selectivity = allowed_count / n
        fetch = int(math.ceil(wanted / selectivity * FILTER_MARGIN))
        while fetch * FILTER_SCAN_RATIO <= allowed_count:
            rows = self._candidates(q, fetch)
            kept = rows[allowed[rows]]
            if len(kept) >= wanted and len(kept) >= FILTER_MIN_SHARE * selectivity * len(rows):
                return self._rescore(q, kept, count)
            fetch *= 2
        return self._exact(q, np.flatnonzero(allowed), count)  # now cheaper than a wider beam

    def _check_query(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query)
        if q.ndim == 2 and q.shape[0] == 1:
            q = q[0]
        if q.ndim != 1 or q.shape[0] != self.dimensions:
            raise ValueError(f"query must be a vector of {self.dimensions} dimensions, got shape {np.shape(query)}")
        if not np.issubdtype(q.dtype, np.number) or np.issubdtype(q.dtype, np.complexfloating):
            raise ValueError(f"query must be real numbers, got {q.dtype}")
        q = q.astype(np.float32)
        norm = float(np.linalg.norm(q))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError("query must be a finite, non-zero vector")
        return q / np.float32(norm)

    def _candidates(self, q: np.ndarray, fetch: int) -> np.ndarray:
        """Rows of the ANN's ``fetch`` best matches, in the index's own order (its dtype's
        distance, not yet re-scored)."""
        encoded = _encode(self.params.dtype, q)
        ef = expansion_for(len(self), fetch, self.params)
        with self._lock:
            self._index.expansion_search = ef
            matches = self._index.search(encoded, fetch, threads=1)
        return np.asarray(matches.keys, dtype=np.int64)

    def _scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self._scores_block(q, self.vectors[rows])

    @staticmethod
    def _scores_block(q: np.ndarray, block: np.ndarray) -> np.ndarray:
        """Cosines of the float16 rows of ``block``, computed in float64 and rounded once
        to float32: a row's score does not depend on which other rows share the call (a
        float32 BLAS product changes summation order with the block's shape). einsum, not
        ``@``: numpy's own single-threaded loop. OpenBLAS spreads a product this small over
        every core, which took 5.5 ms for 2,048 rows on a busy 2-core machine against
        0.4 ms on one thread; a search runs many such scans (one per small segment)."""
        return np.einsum("ij,j->i", np.asarray(block, dtype=np.float64), q.astype(np.float64)).astype(np.float32)

    def _rescore(self, q: np.ndarray, rows: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.unique(rows)  # sorted: page-friendly reads from a memory-mapped file
        return _top(rows, self._scores(q, rows), count)

    def _exact(self, q: np.ndarray, rows: np.ndarray | None, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``count`` of ``rows`` (all when None), a chunk at a time."""
        total = len(self) if rows is None else len(rows)
        if total == 0:
            return _empty()
        best_rows, best_scores = [], []
        for start in range(0, total, EXACT_SCAN_CHUNK):
            stop = min(total, start + EXACT_SCAN_CHUNK)
            if rows is None:
                chunk = np.arange(start, stop, dtype=np.int64)
                scores = self._scores_block(q, self.vectors[start:stop])
            else:
                chunk = rows[start:stop]
                scores = self._scores(q, chunk)
            top_rows, top_scores = _top(chunk, scores, count)
            best_rows.append(top_rows)
            best_scores.append(top_scores)
        if len(best_rows) == 1:
            return best_rows[0], best_scores[0]
        return _top(np.concatenate(best_rows), np.concatenate(best_scores), count)


def _load_vectors(path: Path) -> np.ndarray:
    vectors = np.load(path, mmap_mode="r", allow_pickle=False)
    if vectors.dtype != np.float16 or vectors.ndim != 2:
        raise ValueError(f"the vectors file must hold a float16 (n, d) matrix, not {vectors.dtype} {vectors.shape}")
    return vectors


def _top(rows: np.ndarray, scores: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` best (score desc, row asc) of ``rows``/``scores``."""
    if count < len(scores):
        # Partition, then keep every row tied with the cut so the row tie-break is exact.
        cut = np.partition(scores, len(scores) - count)[len(scores) - count]
        keep = scores >= cut
        rows, scores = rows[keep], scores[keep]
    order = np.lexsort((rows, -scores))[:count]
    return rows[order].astype(np.int64, copy=False), scores[order].astype(np.float32, copy=False)


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
