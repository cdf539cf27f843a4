"""The ONNX encoder against the PyTorch reference (golden vectors), plus batch
invariance, order, usage accounting and output shape.

The int8 model quantises activations dynamically with one scale per tensor, so rows
of a batch would change each other's vectors (measured before the fix: "thanks!" alone
vs inside the 103-text call, cosine 0.935; shuffled golden texts, worst 0.986). Its
manifest entry caps micro-batches at one text, so a text's vector is a function of the
text alone: the checks below are exact. Measured on the 103 golden texts: mean cosine
0.9916 to the reference, worst single text 0.964 ("ok"-like very short texts).
fp32 batches freely (padding is masked) and is checked exactly too.
"""

from __future__ import annotations

import numpy as np
import pytest

import ragserve
from ragserve.model.encoder import Embeddings

INT8_MEAN_COSINE = 0.99
INT8_WORST_TEXT_COSINE = 0.95  # measured 0.964: a floor against one text going badly wrong
FP32_MEAN_COSINE = 0.9999


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def fp32_encoder(artifacts_dir):
    path = artifacts_dir / "all-MiniLM-L6-v2" / "model_fp32.onnx"
    if not path.exists():
        pytest.skip(f"optional fp32 model not built ({path} absent; `make model` builds it)")
    return ragserve.load_encoder(variant="fp32")


@pytest.fixture(scope="module")
def fp32_golden(fp32_encoder, golden_texts) -> np.ndarray:
    return fp32_encoder.embed(golden_texts)


@pytest.fixture(scope="module")
def golden_in_one_call(encoder, golden_texts) -> np.ndarray:
    """All 103 golden texts in one call: the production path (length-sorted micro-batches)."""
    return encoder.embed(golden_texts)


def test_default_model_has_384_dimensions():
    assert ragserve.load_encoder().dimensions == 384


def test_int8_matches_reference_one_text_per_call(encoder, golden_texts, golden_vectors):
    vectors = np.vstack([encoder.embed([text]) for text in golden_texts])

    cosines = rowwise_cosine(vectors, golden_vectors)
    assert cosines.mean() >= INT8_MEAN_COSINE, f"mean cosine {cosines.mean():.5f}"
    assert cosines.min() >= INT8_WORST_TEXT_COSINE, golden_texts[int(cosines.argmin())]


def test_int8_matches_reference_all_texts_in_one_call(golden_in_one_call, golden_texts, golden_vectors):
    cosines = rowwise_cosine(golden_in_one_call, golden_vectors)

    assert cosines.mean() >= INT8_MEAN_COSINE, f"mean cosine {cosines.mean():.5f}"
    assert cosines.min() >= INT8_WORST_TEXT_COSINE, golden_texts[int(cosines.argmin())]


def test_fp32_matches_reference(fp32_golden, golden_vectors):
    cosines = rowwise_cosine(fp32_golden, golden_vectors)

    assert cosines.mean() >= FP32_MEAN_COSINE, f"mean cosine {cosines.mean():.6f}"
    assert cosines.min() >= 0.9995


def test_output_is_float32_unit_vectors(golden_in_one_call):
    assert golden_in_one_call.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(golden_in_one_call, axis=1), 1.0, atol=1e-5)


def test_int8_runs_one_text_at_a_time(encoder):
    assert encoder.spec.max_batch == 1
    assert encoder.max_batch == 1


def test_a_texts_vector_does_not_depend_on_its_neighbours(encoder, golden_texts, golden_in_one_call):
    # GIVEN the shortest, most sensitive texts, embedded alone and among 103 others
    for i, text in enumerate(golden_texts[:15]):
        alone = encoder.embed([text])[0]
        # THEN the vectors are the same, bit for bit
        np.testing.assert_array_equal(alone, golden_in_one_call[i], err_msg=text)


@pytest.mark.parametrize("seed", [0, 1])
def test_order_is_restored_for_shuffled_golden_texts(encoder, golden_texts, golden_in_one_call, seed):
    permutation = np.random.default_rng(seed).permutation(len(golden_texts))

    shuffled = encoder.embed([golden_texts[i] for i in permutation])

    np.testing.assert_array_equal(shuffled, golden_in_one_call[permutation])


def test_fp32_order_is_restored_exactly(fp32_encoder, fp32_golden, golden_texts):
    permutation = np.random.default_rng(3).permutation(len(golden_texts))

    shuffled = fp32_encoder.embed([golden_texts[i] for i in permutation])

    np.testing.assert_allclose(shuffled, fp32_golden[permutation], atol=1e-6)


def test_usage_counts_tokens_and_truncated_texts(encoder):
    long_text = " ".join(["word"] * 600)  # 600 single-token words: far over 256

    short = encoder.encode(["ok"])
    both = encoder.encode(["ok", long_text])

    assert isinstance(both, Embeddings)
    assert (short.tokens, short.truncated) == (3, 0)  # [CLS] ok [SEP]
    assert both.tokens == 3 + encoder.max_length  # truncated to the model's window
    assert both.truncated == 1


def test_truncation_starts_one_token_past_the_window(encoder):
    # 254 words + [CLS] + [SEP] = 256 tokens: fits; 255 words: cut
    fits = encoder.encode([" ".join(["word"] * 254)])
    cut = encoder.encode([" ".join(["word"] * 255)])

    assert (fits.tokens, fits.truncated) == (256, 0)
    assert (cut.tokens, cut.truncated) == (256, 1)


def test_normalize_false_gives_unnormalised_vectors(encoder):
    texts = ["hello world", "The quick brown fox jumps over the lazy dog."]

    raw = encoder.embed(texts, normalize=False)
    unit = encoder.embed(texts)

    norms = np.linalg.norm(raw, axis=1)
    assert np.all(np.abs(norms - 1.0) > 0.05), norms
    np.testing.assert_allclose(raw / norms[:, None], unit, atol=1e-5)


def test_empty_input_gives_an_empty_matrix(encoder):
    result = encoder.encode([])

    assert result.vectors.shape == (0, 384)
    assert result.vectors.dtype == np.float32
    assert (result.tokens, result.truncated) == (0, 0)
    assert encoder.embed([]).shape == (0, 384)


def test_duplicate_texts_in_one_call_get_the_same_vector(encoder):
    vectors = encoder.embed(["same text", "other", "same text"])

    np.testing.assert_array_equal(vectors[0], vectors[2])


def test_duplicates_are_run_once_but_counted_in_usage(encoder, monkeypatch):
    runs = []
    original = encoder._run
    monkeypatch.setattr(encoder, "_run", lambda batch: runs.append(len(batch)) or original(batch))
    long_text = " ".join(["word"] * 600)

    result = encoder.encode(["same text", long_text, "same text", long_text, "same text"])

    assert sum(runs) == 2  # two distinct texts
    assert result.vectors.shape == (5, 384)
    assert result.tokens == 3 * 4 + 2 * encoder.max_length  # usage counts what the caller sent
    assert result.truncated == 2


def test_encoder_reports_what_it_loaded(encoder):
    assert encoder.model_id == "all-MiniLM-L6-v2"
    assert encoder.spec.variant == "int8"
    assert encoder.max_length == 256
    assert encoder.threads >= 1
    assert encoder.init_ms > 0


def test_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("RAGSERVE_TOKEN_BUDGET", "64")

    from_env = ragserve.load_encoder()
    explicit = ragserve.load_encoder(token_budget=1024)

    assert from_env.token_budget == 64
    assert explicit.token_budget == 1024
