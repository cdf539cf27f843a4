"""The ONNX encoder: tokenise -> run -> pool/normalise, in length-sorted micro-batches.

Loaded once (Lambda init): the manifest's sha256 of each file is checked, the ONNX
session is created with full graph optimisation, and warmed up.

Parallelism: the session runs single-threaded, and micro-batches run side by side on a
pool of ``threads`` workers (one per CPU). On small inputs this beats one run with
intra-op threads (no barrier between the threads of every operator), and it holds up
when another process takes a core.

Batch invariance: the int8 model quantises activations dynamically with one scale per
tensor, so texts sharing a batch change each other's vectors (cosine as low as 0.94 for
a short text next to long ones). Its manifest entry therefore caps micro-batches at one
text: a text's vector never depends on what else is in the request, which is what an
embedding cache keyed by text, and a search for a document's own text, need. Texts of
one request still run in parallel, longest first, with no padding at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ragserve.model.batching import plan_micro_batches
from ragserve.model.manifest import ModelSpec, resolve_model
from ragserve.model.pooling import l2_normalize, mean_pool
from ragserve.settings import EncoderSettings


@dataclass(frozen=True, slots=True)
class Embeddings:
    """Vectors in the caller's order, with what producing them cost."""

    vectors: np.ndarray  # float32, (n, dimensions)
    tokens: int  # tokens fed to the model (after truncation)
    truncated: int  # texts cut at the model's max length
    token_counts: np.ndarray | None = None  # per text: tokens (int64, n)
    truncated_flags: np.ndarray | None = None  # per text: cut at max length (bool, n)


def available_cpus() -> int:
    """CPUs this process may use: affinity mask, capped by a cgroup v2 quota if any."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


class Encoder:
    """Turns texts into embeddings. Safe to call from several threads at once."""

    def __init__(self, spec: ModelSpec, *, threads: int, token_budget: int, max_batch: int) -> None:
        self.spec = spec
        self.threads = threads
        self.token_budget = token_budget
        self.max_batch = min(max_batch, spec.max_batch or max_batch)
        started = time.perf_counter()
        spec.verify()
        self._tokenizer = Tokenizer.from_file(str(spec.tokenizer_file.path))
        self._tokenizer.enable_truncation(max_length=spec.max_length)
        self._tokenizer.no_padding()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(spec.model_file.path), sess_options=options, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._output_name = self._session.get_outputs()[0].name
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ragserve-encoder") \
            if threads > 1 else None
        self.embed(["warm up", "a slightly longer sentence to warm up the session"] * threads)
        self.init_ms = (time.perf_counter() - started) * 1000.0

    @property
    def model_id(self) -> str:
        return self.spec.id

    @property
    def dimensions(self) -> int:
        return self.spec.dimensions

    @property
    def max_length(self) -> int:
        return self.spec.max_length

    def embed(self, texts: Sequence[str], *, normalize: bool = True) -> np.ndarray:
        """Embeddings of ``texts`` as float32 (n x dimensions), in the same order."""
        return self.encode(texts, normalize=normalize).vectors

    def encode(self, texts: Sequence[str], *, normalize: bool = True) -> Embeddings:
        """Like ``embed``, with token usage (of every text given, repeats included).

        A text repeated within the call is tokenised and run once.
        """
        if not texts:
            return Embeddings(np.empty((0, self.dimensions), dtype=np.float32), 0, 0,
                              np.zeros(0, np.int64), np.zeros(0, bool))
        slots: dict[str, int] = {}
        inverse = np.fromiter((slots.setdefault(t, len(slots)) for t in texts), dtype=np.intp, count=len(texts))
        encodings = self._tokenizer.encode_batch_fast(list(slots))
        lengths = np.array([len(e.ids) for e in encodings], dtype=np.int64)
        truncated = np.array([bool(e.overflowing) for e in encodings])
        out = np.empty((len(encodings), self.dimensions), dtype=np.float32)
        # at least one micro-batch per worker, so a small request still uses every core
        per_worker = -(-len(encodings) // self.threads)
        batches = plan_micro_batches(lengths, self.token_budget, min(self.max_batch, per_worker))
        if self._pool is None or len(batches) == 1:
            for indices in batches:
                out[indices] = self._run([encodings[i] for i in indices])
        else:  # longest first, so the pool's workers finish together
            runs = [self._pool.submit(self._run, [encodings[i] for i in indices]) for indices in batches]
            for indices, run in zip(batches, runs):
                out[indices] = run.result()
        if normalize and self.spec.normalize:
            out = l2_normalize(out)
        counts, flags = lengths[inverse], truncated[inverse]
        return Embeddings(out[inverse], int(counts.sum()), int(flags.sum()), counts, flags)

    def _run(self, batch: list) -> np.ndarray:
        width = max(len(e.ids) for e in batch)
        ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, enc in enumerate(batch):
            ids[row, : len(enc.ids)] = enc.ids
            mask[row, : len(enc.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run([self._output_name], feeds)[0]
        return mean_pool(hidden, mask)


def load_encoder(model_id: str | None = None, settings: EncoderSettings | None = None, **overrides) -> Encoder:
    """Load, verify and warm up a model. ``model_id`` None: the manifest's default.

    ``overrides`` are ``EncoderSettings`` fields (``variant``, ``threads``, ...);
    an argument beats the environment, which beats the default.
    """
    if settings is None:
        settings = EncoderSettings.from_env(model_id=model_id, **overrides)
    elif model_id is not None or overrides:
        settings = settings.model_copy(update={"model_id": model_id or settings.model_id, **overrides})
    spec = resolve_model(settings.artifacts_dir, settings.model_id, settings.variant)
    return Encoder(spec, threads=settings.threads or available_cpus(),
                   token_budget=settings.token_budget, max_batch=settings.max_batch)
