"""Semantic search: a loaded collection snapshot, the registry that keeps the live
version of each collection hot-swapped, and the search use case."""
