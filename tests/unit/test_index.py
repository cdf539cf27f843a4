"""The ANN index core (ragserve.index): recall against exact search on the same vectors,
the filter guarantee, exact scores, save/view round trip, determinism and edge cases.

The 20k-vector indexes are built once per module (usearch adds ~2k vectors/s here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from ragserve.index import DTYPES, IndexParams, VectorIndex, ann

REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_vectors_module():
    """bench/vectors.py: the benchmark's generator, so tests and benchmark share data."""
    spec = importlib.util.spec_from_file_location("bench_vectors", REPO_ROOT / "bench" / "vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vectors_mod = _load_vectors_module()

ROWS = 20_000
QUERIES = 200
K = 10
MIN_RECALL = {"f16": 0.98, "i8": 0.97, "b1": 0.97}


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return vectors_mod.clustered(ROWS)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return vectors_mod.queries(QUERIES)


@pytest.fixture(scope="module")
def truth(data, queries) -> np.ndarray:
    return vectors_mod.exact_top(data, queries, K)


@pytest.fixture(scope="module")
def indexes(data) -> dict[str, VectorIndex]:
    return {dtype: VectorIndex.build(data, IndexParams(dtype=dtype)) for dtype in DTYPES}


@pytest.fixture(scope="module")
def saved(indexes, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("index")
    paths = {}
    for dtype, index in indexes.items():
        paths[dtype] = (root / f"{dtype}.usearch", root / f"{dtype}.vectors.f16.npy")
        index.save(*paths[dtype])
    return paths


def exact_scores(index: VectorIndex, query: np.ndarray, rows: np.ndarray) -> np.ndarray:
    q = query / np.linalg.norm(query)
    return np.asarray(index.vectors[rows], dtype=np.float32) @ q.astype(np.float32)


def assert_well_formed(index: VectorIndex, query: np.ndarray, rows: np.ndarray, scores: np.ndarray) -> None:
    assert rows.dtype == np.int64 and scores.dtype == np.float32
    assert len(np.unique(rows)) == len(rows)
    np.testing.assert_allclose(scores, exact_scores(index, query, rows), rtol=0, atol=1e-5)
    order = np.lexsort((rows, -scores))
    np.testing.assert_array_equal(order, np.arange(len(rows)))  # score desc, then row asc


# --------------------------------------------------------------------------- recall


@pytest.mark.parametrize("dtype", DTYPES)
def test_recall_at_10_against_exact_search(dtype, indexes, queries, truth):
    # GIVEN 20k clustered vectors and 200 fresh queries from the same mixture
    # WHEN each dtype's index answers top-10
    found = [indexes[dtype].search(q, K)[0] for q in queries]
    # THEN recall against exact float32 search is high (i8 and b1 thanks to re-scoring)
    recall = vectors_mod.recall_at(found, truth)
    assert recall >= MIN_RECALL[dtype], f"{dtype} recall@10 {recall:.3f}"


def test_b1_recall_comes_from_rescoring(indexes, queries, truth):
    # GIVEN the b1 index; raw = its own Hamming-ordered top-10, no re-scoring
    index = indexes["b1"]
    raw = [index._candidates(index._check_query(q), K) for q in queries]
    rescored = [index.search(q, K)[0] for q in queries]
    raw_recall, rescored_recall = vectors_mod.recall_at(raw, truth), vectors_mod.recall_at(rescored, truth)
    # THEN sign bits alone miss most true neighbours; re-scoring recovers them
    assert raw_recall < 0.6, raw_recall
    assert rescored_recall - raw_recall > 0.3, (raw_recall, rescored_recall)


def test_i8_per_vector_quantisation_keeps_raw_ranking_close(indexes, queries, truth):
    # The i8 index orders candidates well even before re-scoring (the per-vector scale).
    index = indexes["i8"]
    raw = [index._candidates(index._check_query(q), K) for q in queries]
    assert vectors_mod.recall_at(raw, truth) >= 0.95


@pytest.mark.parametrize("dtype", DTYPES)
def test_scores_are_exact_cosines_sorted(dtype, indexes, queries):
    index = indexes[dtype]
    for q in queries[:20]:
        rows, scores = index.search(q * 3.0, K)  # any scale: the query is normalised
        assert len(rows) == K
        assert_well_formed(index, q, rows, scores)


def test_scores_agree_across_dtypes(indexes, queries):
    # Re-scoring from the same float16 vectors: a row found by two dtypes has one score.
    for q in queries[:20]:
        by_dtype = {d: dict(zip(*indexes[d].search(q, K), strict=True)) for d in DTYPES}
        common = set.intersection(*(set(m) for m in by_dtype.values()))
        assert common
        for row in common:
            assert len({by_dtype[d][row] for d in DTYPES}) == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_count(dtype, indexes, data, queries):
    q = queries[0]
    rows, scores = indexes[dtype].search(q, 100)
    assert len(rows) == 100
    assert_well_formed(indexes[dtype], q, rows, scores)
    truth = vectors_mod.exact_top(data, q[None, :], 100)[0]
    assert len(np.intersect1d(rows, truth)) >= 95


# --------------------------------------------------------------------------- filter


def _mask(kind: str, rng: np.random.Generator) -> np.ndarray:
    allowed = np.zeros(ROWS, dtype=bool)
    size = {"1 row": 1, "5 rows": 5, "1%": ROWS // 100, "50%": ROWS // 2}[kind]
    allowed[rng.choice(ROWS, size, replace=False)] = True
    return allowed


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["1 row", "5 rows", "1%", "50%"])
def test_filter_returns_min_count_allowed_rows(dtype, kind, indexes, data, queries):
    index = indexes[dtype]
    rng = np.random.default_rng(len(kind))
    hits = 0
    for i, q in enumerate(queries[:20]):
        allowed = _mask(kind, rng)
        rows, scores = index.search(q, K, allowed=allowed)
        # THEN exactly min(count, allowed) rows, all allowed, sorted, exact scores
        assert len(rows) == min(K, int(allowed.sum())), (kind, i)
        assert allowed[rows].all()
        assert_well_formed(index, q, rows, scores)
        candidates = np.flatnonzero(allowed)
        want = candidates[np.argsort(-(data[candidates] @ q), kind="stable")[:K]]
        hits += len(np.intersect1d(rows, want))
    # ... and they are the best allowed rows (exact below the scan threshold, ANN above)
    assert hits / (20 * min(K, int(allowed.sum()))) >= 0.97


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [3000, 10_000])
def test_filter_on_rows_far_from_the_query_falls_back(dtype, size, indexes, data, queries):
    # GIVEN only the rows LEAST similar to the query are allowed: more than the
    # exact-scan threshold (10k: more than one scan chunk), none near the query in the graph
    q = queries[1]
    far = np.argsort(data @ q)[:size]
    assert len(far) > ann.EXACT_SCAN_MAX_ROWS
    allowed = np.zeros(ROWS, dtype=bool)
    allowed[far] = True
    rows, scores = indexes[dtype].search(q, K, allowed=allowed)
    # THEN the doubling over-fetch / exact fallback still finds the best 10 of them
    assert len(rows) == K and allowed[rows].all()
    assert_well_formed(indexes[dtype], q, rows, scores)
    # (against the stored float16 vectors: near the median, cosines differ by ~1e-5)
    want = far[np.argsort(-exact_scores(indexes[dtype], q, far), kind="stable")[:K]]
    assert len(np.intersect1d(rows, want)) >= K - 1


def test_filter_count_above_allowed(indexes, queries):
    allowed = np.zeros(ROWS, dtype=bool)
    allowed[[7, 70, 700]] = True
    rows, _ = indexes["f16"].search(queries[0], 50, allowed=allowed)
    assert sorted(rows.tolist()) == [7, 70, 700]
    assert len(indexes["f16"].search(queries[0], 5, allowed=np.zeros(ROWS, dtype=bool))[0]) == 0


def test_filter_mask_must_match_rows(indexes, queries):
    with pytest.raises(ValueError, match="allowed"):
        indexes["f16"].search(queries[0], K, allowed=np.ones(ROWS - 1, dtype=bool))
    with pytest.raises(ValueError, match="allowed"):
        indexes["f16"].search(queries[0], K, allowed=np.ones(ROWS, dtype=np.int8))


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_view_round_trip(dtype, indexes, saved, queries):
    index = indexes[dtype]
    viewed = VectorIndex.view(*saved[dtype], IndexParams(dtype=dtype))
    assert len(viewed) == ROWS and viewed.dimensions == 384
    assert isinstance(viewed.vectors, np.memmap)
    assert viewed.memory_bytes() > 0
    allowed = _mask("50%", np.random.default_rng(3))
    for q in queries[:30]:
        for kwargs in ({}, {"allowed": allowed}):
            a_rows, a_scores = index.search(q, K, **kwargs)
            b_rows, b_scores = viewed.search(q, K, **kwargs)
            np.testing.assert_array_equal(a_rows, b_rows)
            np.testing.assert_array_equal(a_scores, b_scores)


def test_view_rejects_a_dtype_mismatch(saved):
    with pytest.raises(ValueError, match="b1"):
        VectorIndex.view(*saved["b1"], IndexParams(dtype="f16"))


def test_view_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        VectorIndex.view(tmp_path / "nope.usearch", tmp_path / "nope.npy", IndexParams())


def test_size_by_dtype(indexes, saved):
    # The graph file shrinks with the stored scalar (2, 1, 1/8 bytes a dimension); the
    # float16 vectors kept for re-scoring are the same for every dtype.
    sizes = {d: saved[d][0].stat().st_size for d in DTYPES}
    assert sizes["b1"] < sizes["i8"] < sizes["f16"], sizes
    assert sizes["f16"] - sizes["i8"] >= ROWS * 384 * 0.9
    assert all(saved[d][1].stat().st_size >= ROWS * 384 * 2 for d in DTYPES)
    assert all(indexes[d].memory_bytes() >= indexes[d].vectors.nbytes + sizes["b1"] // 2 for d in DTYPES)


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic(dtype, indexes, queries):
    index = indexes[dtype]
    for q in queries[:10]:
        first = index.search(q, K)
        index.search(q, 100)  # a different expansion in between must not leak
        index.search(q, K, allowed=np.arange(ROWS) % 2 == 0)
        again = index.search(q, K)
        np.testing.assert_array_equal(first[0], again[0])
        np.testing.assert_array_equal(first[1], again[1])


def test_ties_are_broken_by_row():
    base = vectors_mod.clustered(50, seed=5)
    vectors = np.repeat(base, 3, axis=0)  # every vector three times: rows 3i, 3i+1, 3i+2 tie
    index = VectorIndex.build(vectors, IndexParams())
    rows, scores = index.search(base[4], 6)
    assert rows[:3].tolist() == [12, 13, 14]
    assert scores[0] == scores[1] == scores[2]


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_index_is_exact(dtype):
    vectors = vectors_mod.clustered(1000, seed=9)
    queries = vectors_mod.queries(20, seed=9)
    index = VectorIndex.build(vectors, IndexParams(dtype=dtype))
    truth = vectors_mod.exact_top(vectors, queries, K)
    found = [index.search(q, K)[0] for q in queries]
    assert vectors_mod.recall_at(found, truth) >= 0.99
    assert len(index.search(queries[0], 5000)[0]) == 1000  # count above n: every row


def test_exact_scan_in_chunks_matches_one_pass(monkeypatch):
    vectors = np.repeat(vectors_mod.clustered(300, seed=11), 2, axis=0)  # pairs of tied rows
    index = VectorIndex.build(vectors, IndexParams())
    q = vectors_mod.queries(1, seed=11)[0]
    one_pass = index.search(q, 25)
    monkeypatch.setattr(ann, "EXACT_SCAN_CHUNK", 7)
    chunked = index.search(q, 25)
    np.testing.assert_array_equal(one_pass[0], chunked[0])
    np.testing.assert_array_equal(one_pass[1], chunked[1])
    assert (one_pass[0][::2] % 2 == 0).all()  # each tied pair: lower row first


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_index(dtype, tmp_path):
    index = VectorIndex.build(np.empty((0, 384), dtype=np.float32), IndexParams(dtype=dtype))
    assert len(index) == 0 and index.dimensions == 384
    rows, scores = index.search(np.ones(384, dtype=np.float32), K)
    assert rows.shape == (0,) and rows.dtype == np.int64 and scores.dtype == np.float32
    assert len(index.search(np.ones(384), K, allowed=np.zeros(0, dtype=bool))[0]) == 0
    index.save(tmp_path / "e.usearch", tmp_path / "e.npy")
    viewed = VectorIndex.view(tmp_path / "e.usearch", tmp_path / "e.npy", IndexParams(dtype=dtype))
    assert len(viewed) == 0 and viewed.dimensions == 384
    assert len(viewed.search(np.ones(384), K)[0]) == 0


def test_wrong_query_dimension(indexes):
    with pytest.raises(ValueError, match="384"):
        indexes["f16"].search(np.ones(383, dtype=np.float32), K)
    with pytest.raises(ValueError, match="384"):
        indexes["b1"].search(np.ones((2, 384), dtype=np.float32), K)
    empty = VectorIndex.build(np.empty((0, 384), dtype=np.float32), IndexParams())
    with pytest.raises(ValueError, match="384"):
        empty.search(np.ones(128), K)


def test_bad_query_and_count(indexes):
    with pytest.raises(ValueError, match="non-zero"):
        indexes["f16"].search(np.zeros(384), K)
    with pytest.raises(ValueError, match="finite"):
        indexes["f16"].search(np.full(384, np.nan), K)
    with pytest.raises(ValueError, match="count"):
        indexes["f16"].search(np.ones(384), -1)
    assert len(indexes["f16"].search(np.ones(384), 0)[0]) == 0


def test_build_rejects_bad_vectors():
    with pytest.raises(ValueError, match="normalised"):
        VectorIndex.build(np.full((10, 8), 2.0, dtype=np.float32), IndexParams())
    with pytest.raises(ValueError, match="2-d"):
        VectorIndex.build(np.ones(8, dtype=np.float32), IndexParams())


def test_params_are_validated():
    with pytest.raises(ValueError, match="dtype"):
        IndexParams(dtype="f32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="connectivity"):
        IndexParams(connectivity=0)


def test_expansion_grows_with_size_and_fetch():
    params = IndexParams()
    assert ann.expansion_for(20_000, 10, params) == 64
    assert ann.expansion_for(100_000, 10, params) == 128
    assert ann.expansion_for(1_000_000, 10, params) > ann.expansion_for(100_000, 10, params)
    assert ann.expansion_for(20_000, 500, params) == 500
    assert ann.candidate_count("f16", 10, 100_000, params) == 10
    assert ann.candidate_count("i8", 10, 100_000, params) == 100
    assert ann.candidate_count("b1", 10, 100_000, params) > 100
