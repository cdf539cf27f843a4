"""Embedding use case: validate texts against the limits, embed, encode the output."""
