"""Length-sorted micro-batching: padding waste is the main CPU cost of a transformer.

Texts are sorted by token count (longest first) and cut into micro-batches whose
padded size (count x longest) stays within a token budget, so short texts never pay
for a long neighbour's padding and each batch stays small enough to sit in cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def plan_micro_batches(lengths: Sequence[int], token_budget: int, max_batch: int) -> list[np.ndarray]:
    """Indices of each micro-batch, longest texts first. Every index appears once.

    A text longer than the budget gets a batch of its own.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = len(order)
    while start < n:
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch, token_budget // longest))
        batches.append(order[start:start + size])
        start += size
    return batches
