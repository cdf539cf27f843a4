"""The embedding model: manifest (models as data), micro-batching, pooling, encoder."""
