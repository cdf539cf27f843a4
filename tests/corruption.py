"""Damage for fault tests: a file or a payload with one byte inverted (same size, another
sha256). A module of its own, not conftest.py: importing a conftest again would re-run
its session set-up."""

from __future__ import annotations

from pathlib import Path


def flipped(data: bytes) -> bytes:
    """``data`` with its middle byte inverted: same size, another sha256."""
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF
    return bytes(changed)


def flip_byte(path: Path) -> bytes:
    """Alter ``path`` in place (``flipped``); returns the original bytes, to put back."""
    original = path.read_bytes()
    path.write_bytes(flipped(original))
    return original
