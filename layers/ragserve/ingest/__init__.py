"""Writes: ingest jobs through a durable FIFO queue to a single writer per collection,
which publishes the next immutable snapshot version; and bulk builds."""
