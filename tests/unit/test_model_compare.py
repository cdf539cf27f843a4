"""CI's model check (model_artifacts/compare.py) on real files: it passes a rebuild that
differs from the committed files as another CPU family's PyTorch would, and fails on a
real drift: int8 vectors offered as the fp32 reference, an altered ONNX file, a row
gone, a value off by more than the tolerance."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_compare():
    spec = importlib.util.spec_from_file_location("model_compare", REPO / "model_artifacts" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


@pytest.fixture
def rebuilt(tmp_path) -> Path:
    """A scratch tree shaped like a build's output, holding copies of the committed files."""
    for rel in (*compare.EXACT_FILES, *compare.VECTOR_FILES):
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, target)
    return tmp_path


def _nudge(path: Path, scale: float, seed: int = 0) -> None:
    """Move every element by up to ``scale``, as another CPU's kernels would."""
    values = np.load(path)
    noise = np.random.default_rng(seed).uniform(-scale, scale, values.shape)
    np.save(path, (values.astype(np.float64) + noise).astype(values.dtype))


def test_identical_rebuild_passes(rebuilt):
    result = compare.compare_builds(rebuilt, REPO)

    assert result.ok, result.lines()
    assert len(result.notes) == len(compare.EXACT_FILES) + len(compare.VECTOR_FILES)


def test_cpu_family_differences_pass(rebuilt):
    # As measured between AMD EPYC and Intel Xeon: 4.2e-7 in float32, about one float16 step.
    _nudge(rebuilt / "tests/data/golden_vectors.npy", 5e-7)
    _nudge(rebuilt / "tests/data/retrieval_documents.npy", 2.5e-4, seed=1)
    _nudge(rebuilt / "tests/data/retrieval_queries.npy", 2.5e-4, seed=2)

    result = compare.compare_builds(rebuilt, REPO)

    assert result.ok, result.lines()


def test_int8_vectors_offered_as_the_fp32_reference_fail(rebuilt, encoder, golden_texts):
    np.save(rebuilt / "tests/data/golden_vectors.npy", encoder.embed(golden_texts).astype(np.float32))

    result = compare.compare_builds(rebuilt, REPO)

    assert not result.ok
    assert len(result.problems) == 1
    assert result.problems[0].startswith("tests/data/golden_vectors.npy: worst row")


def test_one_element_beyond_the_tolerance_fails(rebuilt):
    path = rebuilt / "tests/data/retrieval_documents.npy"
    values = np.load(path)
    values[3, 7] += np.float16(0.01)  # 5x the float16 tolerance, a tiny change of the row's cosine
    np.save(path, values)

    result = compare.compare_builds(rebuilt, REPO)

    assert [p.split(":")[0] for p in result.problems] == ["tests/data/retrieval_documents.npy"]
    assert "max abs difference" in result.problems[0]


def test_shape_or_dtype_changes_fail(rebuilt):
    vectors = np.load(REPO / "tests/data/golden_vectors.npy")
    np.save(rebuilt / "tests/data/golden_vectors.npy", vectors[:-1])
    np.save(rebuilt / "tests/data/retrieval_queries.npy", np.load(REPO / "tests/data/retrieval_queries.npy")
            .astype(np.float32))

    result = compare.compare_builds(rebuilt, REPO)

    assert len(result.problems) == 2
    assert all("built" in p and "committed" in p for p in result.problems)


def test_onnx_file_must_be_byte_identical(rebuilt):
    path = rebuilt / f"model_artifacts/{compare.MODEL_ID}/model.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))

    result = compare.compare_builds(rebuilt, REPO)

    assert result.problems == [f"model_artifacts/{compare.MODEL_ID}/model.onnx: not byte-identical to the "
                               "committed file"]


def test_a_file_the_build_did_not_write_fails(rebuilt):
    (rebuilt / "tests/data/retrieval_queries.npy").unlink()

    result = compare.compare_builds(rebuilt, REPO)

    assert result.problems == ["tests/data/retrieval_queries.npy: the build did not write it"]


def test_nan_fails(rebuilt):
    path = rebuilt / "tests/data/golden_vectors.npy"
    values = np.load(path)
    values[0, 0] = np.nan
    np.save(path, values)

    assert "NaN" in compare.compare_builds(rebuilt, REPO).problems[0]
