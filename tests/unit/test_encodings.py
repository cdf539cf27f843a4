"""Output encodings: float, base64 (float32 little-endian), int8, binary (packed sign bits)."""

from __future__ import annotations

import base64
import struct

import numpy as np
import pytest

from ragserve.embedding.encodings import (
    ENCODINGS,
    encode_vectors,
    from_base64,
    to_base64,
    to_binary,
    to_int8,
)


@pytest.fixture()
def vectors(golden_vectors) -> np.ndarray:
    """Real embeddings: normalised, 384 dims."""
    return golden_vectors[:20].astype(np.float32)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_base64_round_trip_is_exact(vectors):
    encoded = to_base64(vectors)

    assert len(encoded) == len(vectors)
    decoded = np.vstack([from_base64(item) for item in encoded])
    np.testing.assert_array_equal(decoded, vectors)


def test_base64_is_float32_little_endian(vectors):
    raw = base64.b64decode(to_base64(vectors)[0])

    assert len(raw) == 384 * 4
    assert raw == struct.pack("<384f", *vectors[0].tolist())


def test_base64_of_big_endian_or_float64_input_is_still_float32_little_endian(vectors):
    expected = to_base64(vectors[:2])

    assert to_base64(vectors[:2].astype(">f4")) == expected
    assert to_base64(vectors[:2].astype(np.float64)) == expected


def test_int8_is_in_range_and_uses_the_full_scale(vectors):
    quantized = to_int8(vectors)

    assert quantized.dtype == np.int8
    assert quantized.shape == vectors.shape
    assert quantized.min() >= -127 and quantized.max() <= 127
    np.testing.assert_array_equal(np.abs(quantized.astype(np.int16)).max(axis=1), 127)


def test_int8_keeps_the_direction(vectors):
    quantized = to_int8(vectors).astype(np.float32)

    assert cosine(quantized, vectors).min() >= 0.99


def test_int8_of_a_zero_vector_is_zero():
    np.testing.assert_array_equal(to_int8(np.zeros((1, 8), dtype=np.float32)), np.zeros((1, 8)))


def test_binary_packs_384_dims_into_48_bytes(vectors):
    packed = to_binary(vectors)

    assert packed.shape == (len(vectors), 48)
    assert packed.dtype == np.uint8


def test_binary_bit_is_one_for_positive_components_msb_first():
    vector = np.zeros((1, 16), dtype=np.float32)
    vector[0, 0] = 0.5  # first component -> most significant bit of the first byte
    vector[0, 15] = 2.0  # last component -> least significant bit of the second byte
    vector[0, 3] = -1.0  # negative -> 0
    # zero -> 0 (the bit means "strictly positive")

    assert to_binary(vector).tolist() == [[0b1000_0000, 0b0000_0001]]


def test_binary_unpacks_to_the_signs(vectors):
    unpacked = np.unpackbits(to_binary(vectors), axis=1)

    np.testing.assert_array_equal(unpacked.astype(bool), vectors > 0)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encode_vectors_dispatches_each_encoding(vectors, encoding):
    encoded = encode_vectors(vectors, encoding)

    expected = {"float": vectors, "base64": to_base64(vectors), "int8": to_int8(vectors),
                "binary": to_binary(vectors)}[encoding]
    if encoding == "base64":
        assert encoded == expected
    else:
        np.testing.assert_array_equal(encoded, expected)


def test_unknown_encoding_is_rejected(vectors):
    with pytest.raises(ValueError, match="float16"):
        encode_vectors(vectors, "float16")
