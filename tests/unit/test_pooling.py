"""Mean pooling over the attention mask and L2 normalisation."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ragserve.model.pooling import l2_normalize, mean_pool

finite = st.floats(min_value=-100, max_value=100, allow_nan=False, width=32)


def test_mean_pool_averages_only_the_masked_tokens():
    hidden = np.array([[[1.0, 2.0], [3.0, 4.0], [100.0, -100.0]],
                       [[5.0, 5.0], [7.0, 9.0], [9.0, 13.0]]], dtype=np.float32)
    mask = np.array([[1, 1, 0], [1, 1, 1]], dtype=np.int64)

    pooled = mean_pool(hidden, mask)

    np.testing.assert_allclose(pooled, [[2.0, 3.0], [7.0, 9.0]], rtol=1e-6)
    assert pooled.dtype == np.float32


def test_mean_pool_of_an_all_padding_row_is_zero_not_nan():
    hidden = np.ones((1, 4, 3), dtype=np.float32)
    mask = np.zeros((1, 4), dtype=np.int64)

    pooled = mean_pool(hidden, mask)

    assert np.all(np.isfinite(pooled))
    np.testing.assert_array_equal(pooled, np.zeros((1, 3)))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_padding_never_changes_the_pooled_vector(data):
    batch, seq, dim = data.draw(st.tuples(st.integers(1, 4), st.integers(1, 12), st.integers(1, 8)))
    real = data.draw(hnp.arrays(np.float32, (batch, seq, dim), elements=finite))
    pad = data.draw(st.integers(1, 6))
    garbage = data.draw(hnp.arrays(np.float32, (batch, pad, dim), elements=finite))

    padded = np.concatenate([real, garbage], axis=1)
    mask = np.concatenate([np.ones((batch, seq)), np.zeros((batch, pad))], axis=1).astype(np.int64)

    np.testing.assert_allclose(mean_pool(padded, mask), real.mean(axis=1), rtol=1e-4, atol=1e-4)


@settings(max_examples=100, deadline=None)
@given(vectors=hnp.arrays(np.float32, st.tuples(st.integers(1, 8), st.integers(1, 16)), elements=finite))
def test_l2_normalize_gives_unit_rows_or_zero_rows(vectors):
    unit = l2_normalize(vectors)

    norms = np.linalg.norm(unit, axis=1)
    nonzero = np.linalg.norm(vectors.astype(np.float64), axis=1) > 1e-6
    np.testing.assert_allclose(norms[nonzero], 1.0, rtol=1e-5)
    assert np.all(np.isfinite(unit))


def test_l2_normalize_keeps_direction_and_zero_vectors():
    vectors = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)

    unit = l2_normalize(vectors)

    np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
