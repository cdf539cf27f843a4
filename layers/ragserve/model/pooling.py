"""Pooling and normalisation: small numpy functions on the model's output."""

from __future__ import annotations

import numpy as np


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average token vectors ``hidden`` (batch, seq, dim) over the real tokens in ``mask``."""
    weights = mask.astype(np.float32)
    summed = np.einsum("bs,bsd->bd", weights, hidden, optimize=False)
    counts = np.maximum(weights.sum(axis=1, keepdims=True), 1e-9)
    return summed / counts


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
