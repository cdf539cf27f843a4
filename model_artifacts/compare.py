"""Compare a fresh build of the model artifacts with the committed ones.

Two kinds of file, two rules, stated once here:

- What the build writes deterministically (the ONNX graphs, the tokenizer, the
  manifest with every sha256, the golden texts) must be **byte-identical**: that is the
  reproducibility check, and it holds on every x86-64 CPU family we have seen.
- What PyTorch computes (the golden vectors, the retrieval reference) differs in its
  last bits between CPU families (AMD EPYC vs Intel Xeon with AVX-512/AMX: max abs
  difference 4.2e-7 in float32, 1.2e-4, one float16 step, in float16). Those files are
  compared **within a tolerance**: same shape and dtype, every row's cosine to the
  committed row at least ``MIN_ROW_COSINE``, and no element further off than the
  dtype's ``MAX_ABS_DIFF``. A real drift (another model, int8 vectors offered in place of
  the fp32 reference: worst row cosine 0.96) fails both.

Needs numpy only, so the tests can exercise it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MODEL_ID = "all-MiniLM-L6-v2"
EXACT_FILES = (
    "model_artifacts/manifest.json",
    f"model_artifacts/{MODEL_ID}/model.onnx",
    f"model_artifacts/{MODEL_ID}/tokenizer.json",
    "tests/data/golden_texts.json",
    "tests/data/retrieval_documents.json",
    "tests/data/retrieval_queries.json",
)
VECTOR_FILES = (
    "tests/data/golden_vectors.npy",
    "tests/data/retrieval_documents.npy",
    "tests/data/retrieval_queries.npy",
)
MIN_ROW_COSINE = 0.99999
# Worst seen between CPU families, with room: float32 4.2e-7, float16 1.2e-4 (one step
# of float16 near 0.2; a step is 2.4e-4 between 0.25 and 0.5, where some elements lie).
MAX_ABS_DIFF = {np.dtype(np.float32): 1e-5, np.dtype(np.float16): 2e-3}


@dataclass
class Comparison:
    """What differs; ``ok`` when nothing does beyond the rules above."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        return [*(f"ok: {n}" for n in self.notes), *(f"DIFFERS: {p}" for p in self.problems)]


def compare_vectors(name: str, built: np.ndarray, committed: np.ndarray) -> str | None:
    """None if ``built`` matches ``committed`` within the tolerance, else why not."""
    if built.shape != committed.shape or built.dtype != committed.dtype:
        return (f"{name}: built {built.dtype}{list(built.shape)}, "
                f"committed {committed.dtype}{list(committed.shape)}")
    if committed.dtype not in MAX_ABS_DIFF:
        return f"{name}: no tolerance stated for dtype {committed.dtype}"
    a, b = built.astype(np.float64), committed.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return f"{name}: holds NaN or infinite values"
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosines = (a * b).sum(axis=1) / np.where(norms == 0, 1.0, norms)
    worst_row = int(cosines.argmin())
    max_abs = float(np.abs(a - b).max()) if a.size else 0.0
    limit = MAX_ABS_DIFF[committed.dtype]
    if cosines[worst_row] < MIN_ROW_COSINE or max_abs > limit:
        return (f"{name}: worst row {worst_row} cosine {cosines[worst_row]:.7f} (needs >= {MIN_ROW_COSINE}), "
                f"max abs difference {max_abs:.3g} (needs <= {limit:g})")
    return None


def compare_builds(built_root: Path, repo_root: Path) -> Comparison:
    """Compare the tree a build wrote under ``built_root`` with ``repo_root``'s files."""
    result = Comparison()
    for rel in EXACT_FILES:
        built, committed = Path(built_root) / rel, Path(repo_root) / rel
        if not built.is_file():
            result.problems.append(f"{rel}: the build did not write it")
        elif built.read_bytes() != committed.read_bytes():
            result.problems.append(f"{rel}: not byte-identical to the committed file")
        else:
            result.notes.append(f"{rel}: byte-identical")
    for rel in VECTOR_FILES:
        built = Path(built_root) / rel
        if not built.is_file():
            result.problems.append(f"{rel}: the build did not write it")
            continue
        a, b = np.load(built), np.load(Path(repo_root) / rel)
        problem = compare_vectors(rel, a, b)
        if problem:
            result.problems.append(problem)
        else:
            diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0
            result.notes.append(f"{rel}: within tolerance (max abs difference {diff:.3g})")
    return result
