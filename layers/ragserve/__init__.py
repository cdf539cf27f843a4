"""ragserve: embeddings and semantic search as serverless functions.

    >>> import ragserve
    >>> encoder = ragserve.load_encoder()
    >>> encoder.embed(["hello world"]).shape
    (1, 384)
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load_encoder"]


def load_encoder(model_id: str | None = None, **overrides):
    """Load the ONNX encoder (see ``ragserve.model.encoder.load_encoder``)."""
    from ragserve.model.encoder import load_encoder as _load

    return _load(model_id, **overrides)
