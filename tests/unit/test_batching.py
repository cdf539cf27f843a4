"""Length-sorted micro-batching (plan_micro_batches)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ragserve.model.batching import plan_micro_batches

lengths_st = st.lists(st.integers(min_value=0, max_value=600), max_size=300)
budget_st = st.integers(min_value=1, max_value=20_000)
max_batch_st = st.integers(min_value=1, max_value=128)


def padded_size(lengths, batch) -> int:
    return len(batch) * max(lengths[i] for i in batch)


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, budget=budget_st, max_batch=max_batch_st)
def test_every_index_appears_exactly_once(lengths, budget, max_batch):
    batches = plan_micro_batches(lengths, budget, max_batch)

    flat = np.concatenate(batches) if batches else np.array([], dtype=np.int64)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert all(len(b) >= 1 for b in batches)


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, budget=budget_st, max_batch=max_batch_st)
def test_budget_is_respected_except_by_a_single_overlong_text(lengths, budget, max_batch):
    for batch in plan_micro_batches(lengths, budget, max_batch):
        if padded_size(lengths, batch) > budget:
            assert len(batch) == 1
            assert lengths[batch[0]] > budget


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, budget=budget_st, max_batch=max_batch_st)
def test_max_batch_is_respected(lengths, budget, max_batch):
    assert all(len(b) <= max_batch for b in plan_micro_batches(lengths, budget, max_batch))


@settings(max_examples=300, deadline=None)
@given(lengths=lengths_st, budget=budget_st, max_batch=max_batch_st)
def test_longest_texts_come_first(lengths, budget, max_batch):
    batches = plan_micro_batches(lengths, budget, max_batch)

    in_order = [lengths[i] for batch in batches for i in batch]
    assert in_order == sorted(lengths, reverse=True)


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=200),
       budget=st.integers(min_value=16, max_value=8192), max_batch=max_batch_st)
def test_batches_are_as_full_as_the_budget_allows(lengths, budget, max_batch):
    # Not a correctness rule but the point of the planner: no batch stops early when
    # the next text would still have fitted (greedy, longest first).
    batches = plan_micro_batches(lengths, budget, max_batch)
    for batch in batches[:-1]:
        longest = lengths[batch[0]]
        assert len(batch) == max(1, min(max_batch, budget // longest))


def test_example_plan():
    lengths = [5, 100, 7, 100, 3, 300]

    batches = plan_micro_batches(lengths, token_budget=256, max_batch=4)

    assert [b.tolist() for b in batches] == [[5], [1, 3], [2, 0, 4]]


def test_ties_keep_input_order():
    # stable sort: equal lengths stay in the caller's order
    batches = plan_micro_batches([4, 4, 4, 4], token_budget=8, max_batch=64)

    assert [b.tolist() for b in batches] == [[0, 1], [2, 3]]


def test_empty_input_gives_no_batches():
    assert plan_micro_batches([], token_budget=512, max_batch=64) == []


def test_zero_length_texts_do_not_divide_by_zero():
    batches = plan_micro_batches([0, 0, 0], token_budget=512, max_batch=2)

    assert [b.tolist() for b in batches] == [[0, 1], [2]]


def test_accepts_numpy_lengths():
    batches = plan_micro_batches(np.array([3, 9, 1]), token_budget=9, max_batch=8)

    assert [b.tolist() for b in batches] == [[1], [0, 2]]
