"""Search benchmark: ragserve's VectorIndex (usearch HNSW + exact re-scoring) against
numpy exact search, FAISS ``IndexFlatIP`` and FAISS ``IndexHNSWFlat`` on the same vectors.

For each collection size (clustered 384-d unit vectors from ``bench/vectors.py``, the data
of the recall tests) and each ragserve dtype (f16, i8, b1), in one run beside the peers:
build time, open time (memory-mapped, warm page cache) and first query, memory and file
size, single-query top-10 latency p50/p95/p99, recall@10 against exact float32 search.
Then, at the largest size: filtered search latency, and "query embedding + search"
(``ragserve.load_encoder()`` on real sentences from ``bench/corpus.py``, then
``VectorIndex.search``), which the search function must answer with p95 under 10 ms.

The results replace the ``search`` section of docs/BENCHMARKS.md (between the markers
``<!-- search:start -->`` and ``<!-- search:end -->``); the rest of the file is kept.

    python bench/search.py                     # 10k and 100k (~3.5 min on 2 cores), writes the docs
    python bench/search.py --quick             # smoke run (10k), prints the section, writes nothing
    python bench/search.py --sizes 10000,100000,1000000   # 1M: +15-30 min of index builds, ~8 GB RAM

Engines are interleaved round-robin inside every latency cell, on the same queries in
the same order; each cell is repeated, latency percentiles are over all timed calls, and
each ratio is the median of per-repeat ratios (>1 means ragserve is better).
"""

from __future__ import annotations

import gc
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import corpus  # bench/ is sys.path[0] when run as a script
import numpy as np
import vectors
from report import (
    Figure,
    ForeignCpu,
    bench_parser,
    check,
    count_axis,
    fmt_ratio,
    fmt_share,
    load_average,
    machine,
    machine_table,
    median,
    output_path,
    paired_ratio,
    parse_sizes,
    start_logging,
    write_section,
)

SECTION = "search"
DEFAULT_SIZES = (10_000, 100_000)
K = 10
DTYPES = ("f16", "i8", "b1")
PEERS = ("numpy", "faiss-flat", "faiss-hnsw")
TARGET_EMBED_SEARCH_P95_MS = 10.0
MIN_RECALL = {"f16": 0.98, "i8": 0.97, "b1": 0.97}
FILTERS = (("1%", 0.01), ("10%", 0.10), ("50%", 0.50))

log = logging.getLogger("bench.search")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    seconds: float  # time bound of one engine in one repeat of one latency cell
    min_calls: int
    repeats: int
    queries: int  # recall queries (also the latency query stream)
    open_runs: int
    quick: bool

    @classmethod
    def full(cls) -> Config:
        return cls(seconds=0.5, min_calls=20, repeats=5, queries=200, open_runs=5, quick=False)

    @classmethod
    def smoke(cls) -> Config:
        return cls(seconds=0.1, min_calls=5, repeats=1, queries=50, open_runs=2, quick=True)


# --------------------------------------------------------------------------- engines


@dataclass
class Engine:
    key: str  # "f16", "i8", "b1" or a peer
    label: str
    detail: str
    search: Callable[[np.ndarray], np.ndarray]  # unit query -> top-K rows, best first
    build_s: float | None  # None: nothing to build
    open_ms: float  # median, memory-mapped open of the saved files (warm page cache)
    first_ms: float  # median, open + first query
    memory_bytes: int
    file_bytes: int
    recall: float = float("nan")
    latencies: list[list[float]] = field(default_factory=list)  # per repeat, ms

    @property
    def is_peer(self) -> bool:
        return self.key in PEERS

    def p(self, q: float) -> float:
        return float(np.percentile([x for rep in self.latencies for x in rep], q))

    def rep_p50(self) -> list[float]:
        return [float(np.median(rep)) for rep in self.latencies]


def timed_open(open_fn: Callable[[], object], first: Callable[[object], object], runs: int) -> tuple[float, float]:
    """Median ms of ``open_fn()`` and of ``open_fn()`` + one query, over fresh objects."""
    opens, firsts = [], []
    for _ in range(runs):
        gc.collect()
        t0 = time.perf_counter()
        obj = open_fn()
        t1 = time.perf_counter()
        first(obj)
        t2 = time.perf_counter()
        opens.append((t1 - t0) * 1000)
        firsts.append((t2 - t0) * 1000)
        del obj
    return median(opens), median(firsts)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")]


def numpy_engine(data: np.ndarray, tmp: Path, probe: np.ndarray, cfg: Config) -> Engine:
    path = tmp / "numpy.npy"
    np.save(path, data)

    def open_fn():
        return np.load(path, mmap_mode="r")

    open_ms, first_ms = timed_open(open_fn, lambda m: top_k(np.asarray(m) @ probe, K), cfg.open_runs)
    matrix = open_fn()

    def search(q: np.ndarray) -> np.ndarray:
        return top_k(matrix @ q, K)

    return Engine("numpy", "numpy exact", "float32 matrix (memory-mapped `.npy`) `@ query`, `argpartition`, sort",
                  search, None, open_ms, first_ms, data.nbytes, path.stat().st_size)


def faiss_engines(data: np.ndarray, tmp: Path, probe: np.ndarray, ef_search: int, cfg: Config) -> list[Engine]:
    import faiss

    d = data.shape[1]
    out = []
    flat = faiss.IndexFlatIP(d)
    t0 = time.perf_counter()
    flat.add(data)
    flat_build = time.perf_counter() - t0
    hnsw = faiss.IndexHNSWFlat(d, 16, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 128
    t0 = time.perf_counter()
    hnsw.add(data)
    hnsw_build = time.perf_counter() - t0
    log.info("  faiss HNSW built in %.1f s", hnsw_build)
    for key, index, build_s, label, detail in (
        ("faiss-flat", flat, flat_build, "FAISS IndexFlatIP", "exact inner product"),
        ("faiss-hnsw", hnsw, hnsw_build, "FAISS IndexHNSWFlat",
         f"M 16, efConstruction 128, efSearch {ef_search} (ragserve's f16 expansion at this size), float32 "
         "vectors"),
    ):
        path = tmp / f"{key}.faiss"
        faiss.write_index(index, str(path))
        del index

        def open_fn(path=path):
            return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)

        def first(ix, q=probe[None, :]):
            if hasattr(ix, "hnsw"):
                ix.hnsw.efSearch = ef_search
            return ix.search(q, K)

        open_ms, first_ms = timed_open(open_fn, first, cfg.open_runs)
        opened = open_fn()
        if hasattr(opened, "hnsw"):
            opened.hnsw.efSearch = ef_search

        def search(q: np.ndarray, ix=opened) -> np.ndarray:
            return ix.search(q[None, :], K)[1][0]

        size = path.stat().st_size
        out.append(Engine(key, label, f"{detail}; `read_index(IO_FLAG_MMAP_IFC)`", search, build_s, open_ms,
                          first_ms, size, size))
    del flat, hnsw
    return out


def ragserve_engine(dtype: str, data: np.ndarray, tmp: Path, probe: np.ndarray, cfg: Config):
    from ragserve.index import IndexParams, VectorIndex, ann

    params = IndexParams(dtype=dtype)
    t0 = time.perf_counter()
    built = VectorIndex.build(data, params)
    build_s = time.perf_counter() - t0
    log.info("  ragserve %s built in %.1f s", dtype, build_s)
    index_path, vectors_path = tmp / f"{dtype}.usearch", tmp / f"{dtype}.vectors.f16.npy"
    built.save(index_path, vectors_path)
    del built
    gc.collect()

    def open_fn():
        return VectorIndex.view(index_path, vectors_path, params)

    open_ms, first_ms = timed_open(open_fn, lambda ix: ix.search(probe, K), cfg.open_runs)
    viewed = open_fn()
    memory = viewed.memory_bytes()
    n = len(data)
    fetch = ann.candidate_count(dtype, K, n, params)
    detail = (f"`VectorIndex.view(...)` of `IndexParams(dtype=\"{dtype}\")` (M {params.connectivity}, ef_construction "
              f"{params.expansion_add}); k=10 searches {fetch} candidates at ef {ann.expansion_for(n, fetch, params)}, "
              "re-scored from the float16 vectors")

    def search(q: np.ndarray) -> np.ndarray:
        return viewed.search(q, K)[0]

    files = index_path.stat().st_size + vectors_path.stat().st_size
    return Engine(dtype, f"ragserve {dtype}", detail, search, build_s, open_ms, first_ms, memory, files), viewed


# --------------------------------------------------------------------------- measuring


def measure_recall(engine: Engine, qs: np.ndarray, truth: np.ndarray) -> None:
    engine.recall = vectors.recall_at([engine.search(q) for q in qs], truth)


def interleaved_latency(engines: Sequence[Engine], qs: np.ndarray, cfg: Config) -> float:
    """Fill each engine's ``latencies``; returns the CPU share other processes used."""
    with ForeignCpu() as meter:
        for _ in range(cfg.repeats):
            for engine in engines:
                time.sleep(0.02)  # let the previous library's worker threads go idle
                lat: list[float] = []
                started = time.perf_counter()
                i = 0
                while time.perf_counter() - started < cfg.seconds or len(lat) < cfg.min_calls:
                    q = qs[i % len(qs)]
                    t0 = time.perf_counter()
                    engine.search(q)
                    lat.append((time.perf_counter() - t0) * 1000)
                    i += 1
                engine.latencies.append(lat)
    return meter.share


@dataclass
class SizeResult:
    n: int
    engines: list[Engine]
    foreign: float
    ef: dict[str, tuple[int, int]]  # dtype -> (candidates, ef) at k=10

    def by(self, key: str) -> Engine:
        return next(e for e in self.engines if e.key == key)


def bench_size(n: int, cfg: Config, tmp: Path) -> tuple[SizeResult, dict]:
    from ragserve.index import IndexParams, ann

    log.info("size %d: generating vectors and exact ground truth", n)
    data = vectors.clustered(n)
    qs = vectors.queries(cfg.queries)
    truth = vectors.exact_top(data, qs, K)
    probe = qs[0]
    ef_f16 = ann.expansion_for(n, K, IndexParams())
    engines: list[Engine] = []
    viewed = {}
    for dtype in DTYPES:
        engine, viewed[dtype] = ragserve_engine(dtype, data, tmp, probe, cfg)
        engines.append(engine)
    engines.append(numpy_engine(data, tmp, probe, cfg))
    engines.extend(faiss_engines(data, tmp, probe, ef_f16, cfg))
    del data
    gc.collect()
    for engine in engines:  # also the warm-up: every engine has seen every query before timing
        measure_recall(engine, qs, truth)
    foreign = interleaved_latency(engines, qs, cfg)
    ef = {}
    for dtype in DTYPES:
        params = IndexParams(dtype=dtype)
        fetch = ann.candidate_count(dtype, K, n, params)
        ef[dtype] = (fetch, ann.expansion_for(n, fetch, params))
    result = SizeResult(n, engines, foreign, ef)
    log.info("size %d: %s  (other processes %s CPU)", n, ", ".join(
        f"{e.key} p50 {e.p(50):.3f} ms r {e.recall:.3f}" for e in engines), fmt_share(foreign))
    return result, viewed


# --------------------------------------------------------------------------- largest size extras


@dataclass
class Timing:
    label: str
    latencies: list[float]

    def p(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))


def time_calls(fns: Sequence[tuple[str, Callable[[int], object]]], cfg: Config, seconds: float) -> list[Timing]:
    out = {label: Timing(label, []) for label, _ in fns}
    for _ in range(cfg.repeats):
        for label, fn in fns:
            time.sleep(0.02)
            started = time.perf_counter()
            i = 0
            while time.perf_counter() - started < seconds or i < cfg.min_calls:
                t0 = time.perf_counter()
                fn(i)
                out[label].latencies.append((time.perf_counter() - t0) * 1000)
                i += 1
    return list(out.values())


def bench_filtered(viewed: dict, n: int, cfg: Config) -> list[Timing]:
    qs = vectors.queries(cfg.queries)
    rng = np.random.default_rng(7)
    fns = []
    index = viewed["f16"]
    fns.append(("no filter", lambda i: index.search(qs[i % len(qs)], K)))
    for label, share in FILTERS:
        masks = [rng.random(n) < share for _ in range(8)]
        fns.append((label, lambda i, masks=masks: index.search(qs[i % len(qs)], K, allowed=masks[i % len(masks)])))
    for _, fn in fns:  # warm-up
        for i in range(10):
            fn(i)
    return time_calls(fns, cfg, cfg.seconds)


@dataclass
class EmbedSearch:
    detail: str
    timings: list[Timing]
    foreign: float


def bench_embed_search(viewed: dict, cfg: Config) -> EmbedSearch:
    import ragserve

    encoder = ragserve.load_encoder()
    texts = corpus.sentences()
    fns: list[tuple[str, Callable[[int], object]]] = [("embed only", lambda i: encoder.embed([texts[i % len(texts)]]))]
    for dtype in DTYPES:
        index = viewed[dtype]
        fns.append((f"embed + search {dtype}",
                    lambda i, index=index: index.search(encoder.embed([texts[i % len(texts)]])[0], K)))
    for _, fn in fns:
        for i in range(10):
            fn(i)
    with ForeignCpu() as meter:
        timings = time_calls(fns, cfg, max(cfg.seconds, 1.0 if not cfg.quick else 0.2))
    words = statistics.fmean(len(t.split()) for t in texts)
    detail = (f"`ragserve.load_encoder()` (int8, {encoder.threads} threads) embedding one sentence per call "
              f"({len(texts)} sentences from `bench/corpus.py`, {words:.0f} words on average, cycled), then "
              "`VectorIndex.search(vector, 10)` on the memory-mapped index")
    return EmbedSearch(detail, timings, meter.share)


# --------------------------------------------------------------------------- report


def mb(x: float) -> str:
    x = x / 1e6
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else (f"{x:.1f}" if x >= 10 else (f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"))


def ratio_or_dash(x: float | None) -> str:
    return "—" if x is None or not np.isfinite(x) else fmt_ratio(x)


@dataclass
class Results:
    cfg: Config
    machine: dict[str, str]
    load_before: str
    load_after: str
    sizes: list[SizeResult]
    filtered: list[Timing]
    embed: EmbedSearch
    elapsed_s: float
    output: Path | None = None  # where the section goes (plots beside it); None: printed only


def render(r: Results) -> str:
    largest = r.sizes[-1]
    out = ["## Search", ""]
    out.append(f"_Generated by `bench/search.py`{' **--quick (smoke run: not for citing)**' if r.cfg.quick else ''} "
               f"in {r.elapsed_s / 60:.1f} min. Do not edit between the markers: the next run rewrites it._")
    out += ["", *machine_table(r.machine, r.load_before, r.load_after)]
    out += ["", ("Data: `bench/vectors.py`, the data of `tests/unit/test_index.py`: "
                 f"{vectors.CLUSTERS} Gaussian clusters of 384-d unit vectors (cosine ~0.5 between points of a "
                 "cluster, ~0.002 between the 10th and 11th neighbour: a hard case for quantised indexes), "
                 f"{r.cfg.queries} fresh queries from the same mixture. Recall@10 is against exact float32 search. "
                 "Every engine serves from files it saved and then opened memory-mapped (warm page cache); "
                 "*open* is that call alone, *first* adds one query (page faults included). Latency: one query "
                 f"at a time, k=10, engines interleaved round-robin ({r.cfg.repeats} repeats × ≥{r.cfg.seconds:g} s "
                 f"and ≥{r.cfg.min_calls} calls each), after the recall pass warmed every engine; percentiles over "
                 "all timed calls. Threads: ragserve builds on all cores and searches on one; FAISS uses its "
                 "OpenMP default (all cores); numpy its BLAS default. *Memory*: what serving holds once every page "
                 "has been touched: ragserve = `VectorIndex.memory_bytes()` of the viewed index (mapped graph file "
                 "+ the float16 vectors kept for re-scoring); numpy = the float32 matrix; FAISS = its serialised "
                 "index (its in-memory layout). *Files*: everything saved. Engines:"), ""]
    for e in largest.engines:
        out.append(f"- **{e.label}**: {e.detail}")
    for s in r.sizes:
        out += render_size(s)
    out += render_ratios(r)
    if r.output is not None:
        out += ["", plot_sizes(r)]
    out += render_filtered(r, largest)
    out += render_embed(r, largest)
    out += render_checks(r)
    out += ["", "### How to reproduce", "",
            ("`python bench/search.py` (needs usearch and faiss-cpu; `--sizes 10000,100000,1000000` adds the 1M "
             "point: 15-30 more minutes of index builds on 2 cores; `--quick` for a smoke run that writes "
             "nothing).")]
    return "\n".join(out)


def render_size(s: SizeResult) -> list[str]:
    out = ["", f"### {s.n:,} vectors × 384", "",
           "| Engine | build s | open ms | first query ms | memory MB | files MB | p50 ms | p95 ms | p99 ms "
           "| recall@10 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in s.engines:
        build = "—" if e.build_s is None else (f"{e.build_s:.1f}" if e.build_s >= 0.1 else f"{e.build_s:.3f}")
        out.append(f"| {e.label} | {build} | {ms(e.open_ms)} | {ms(e.first_ms)} | {mb(e.memory_bytes)} | "
                   f"{mb(e.file_bytes)} | {ms(e.p(50))} | {ms(e.p(95))} | {ms(e.p(99))} | {e.recall:.3f} |")
    cand = ", ".join(f"{d} {c} candidates at ef {ef}" for d, (c, ef) in s.ef.items())
    calls = min(sum(len(x) for x in e.latencies) for e in s.engines)
    out += ["", f"k=10 search plan: {cand}. At least {calls:,} timed calls per engine; other processes used "
                f"{fmt_share(s.foreign)} of the CPUs during the latency cell."]
    return out


def plot_sizes(r: Results) -> str:
    """p50 latency, recall@10 and memory against collection size, one line per engine."""
    figure = Figure(SECTION, "by-size", "Search at each collection size (384-d, k=10)", r.output, size=(11.0, 3.6))
    sizes = [s.n for s in r.sizes]
    panels = (("p50 latency, ms (lower is better)", lambda e: e.p(50), True),
              ("recall@10 (higher is better)", lambda e: e.recall, False),
              ("memory, MB (lower is better)", lambda e: e.memory_bytes / 1e6, True))
    with figure as (fig, ax):
        ax.remove()
        axes = fig.subplots(1, len(panels))
        for panel, (title, value, log_y) in zip(axes, panels, strict=True):
            for key in (*DTYPES, *PEERS):
                engines = [s.by(key) for s in r.sizes]
                panel.plot(sizes, [value(e) for e in engines], marker="o", label=engines[0].label,
                           linestyle="--" if engines[0].is_peer else "-")
            count_axis(panel, sizes)
            if log_y:
                panel.set_yscale("log")
            panel.set_xlabel("vectors")
            panel.set_title(title, fontsize=9)
            panel.grid(True, which="both", alpha=0.3)
        axes[0].legend(fontsize=7)
    return figure.markdown


def render_ratios(r: Results) -> list[str]:
    out = ["", "### ragserve against the peers", "",
           ("Each cell is peer ÷ ragserve, so >1 means ragserve is better (faster, smaller, quicker to build or "
            "open); latency ratios are medians of per-repeat p50 ratios; recall is shown as the difference "
            "ragserve − peer."), "",
           "| Size | ragserve | p50 vs numpy | p50 vs Flat | p50 vs HNSW | p95 vs HNSW | memory vs numpy "
           "| memory vs HNSW | files vs HNSW | build vs HNSW | first query vs HNSW | recall − HNSW |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in r.sizes:
        numpy_e, flat, hnsw = s.by("numpy"), s.by("faiss-flat"), s.by("faiss-hnsw")
        for dtype in DTYPES:
            e = s.by(dtype)
            out.append(
                f"| {s.n:,} | {dtype} | {fmt_ratio(paired_ratio(numpy_e.rep_p50(), e.rep_p50()))} | "
                f"{fmt_ratio(paired_ratio(flat.rep_p50(), e.rep_p50()))} | "
                f"{fmt_ratio(paired_ratio(hnsw.rep_p50(), e.rep_p50()))} | {fmt_ratio(hnsw.p(95) / e.p(95))} | "
                f"{fmt_ratio(numpy_e.memory_bytes / e.memory_bytes)} | "
                f"{fmt_ratio(hnsw.memory_bytes / e.memory_bytes)} | "
                f"{fmt_ratio(hnsw.file_bytes / e.file_bytes)} | {fmt_ratio(hnsw.build_s / e.build_s)} | "
                f"{fmt_ratio(hnsw.first_ms / e.first_ms)} | {e.recall - hnsw.recall:+.3f} |")
    return out


def render_filtered(r: Results, s: SizeResult) -> list[str]:
    out = ["", f"### Filtered search, {s.n:,} vectors, ragserve f16", "",
           ("`search(query, 10, allowed=mask)` with random masks keeping the given share of rows (8 masks cycled); "
            "every call must return 10 allowed rows. Small allowed sets are scanned exactly; large ones go "
            "through the graph with a doubling over-fetch."), "",
           "| Allowed rows | p50 ms | p95 ms | p99 ms | calls |", "|---|---:|---:|---:|---:|"]
    for t in r.filtered:
        out.append(f"| {t.label} | {ms(t.p(50))} | {ms(t.p(95))} | {ms(t.p(99))} | {len(t.latencies):,} |")
    return out


def render_embed(r: Results, s: SizeResult) -> list[str]:
    out = ["", f"### Query embedding + search, {s.n:,} vectors", "", r.embed.detail + (
        f". The synthetic index does not hold text vectors, so only the latency means anything here. Other "
        f"processes used {fmt_share(r.embed.foreign)} of the CPUs meanwhile."), "",
        "| Path | p50 ms | p95 ms | p99 ms | calls |", "|---|---:|---:|---:|---:|"]
    for t in r.embed.timings:
        out.append(f"| {t.label} | {ms(t.p(50))} | {ms(t.p(95))} | {ms(t.p(99))} | {len(t.latencies):,} |")
    return out


def render_checks(r: Results) -> list[str]:
    out = ["", "### Checks", ""]
    largest = r.sizes[-1]
    f16 = next(t for t in r.embed.timings if t.label == "embed + search f16")
    out.append(f"- {check(f16.p(95) < TARGET_EMBED_SEARCH_P95_MS)}: query embedding + f16 search at "
               f"{largest.n:,} vectors, p95 {ms(f16.p(95))} ms (target < {TARGET_EMBED_SEARCH_P95_MS:g} ms)")
    for s in r.sizes:
        for dtype in DTYPES:
            e = s.by(dtype)
            out.append(f"- {check(e.recall >= MIN_RECALL[dtype])}: {dtype} recall@10 at {s.n:,} vectors "
                       f"{e.recall:.3f} (target ≥ {MIN_RECALL[dtype]:g})")
    return out


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, sizes_help="default 10000,100000; --quick: 10000")
    args = parser.parse_args(argv)
    start_logging(log)
    cfg = Config.smoke() if args.quick else Config.full()
    sizes = parse_sizes(args.sizes, [10_000] if args.quick else DEFAULT_SIZES)
    if not sizes or min(sizes) <= K:
        parser.error(f"--sizes must name collection sizes above {K}")
    output = output_path(args)

    started = time.perf_counter()
    load_before = load_average()
    info = machine(("usearch", "faiss-cpu", "numpy", "onnxruntime"))
    results: list[SizeResult] = []
    with tempfile.TemporaryDirectory(prefix="ragserve-bench-search-") as tmp_dir:
        viewed: dict = {}
        for n in sizes:
            size_dir = Path(tmp_dir) / str(n)
            size_dir.mkdir()
            viewed.clear()
            gc.collect()
            result, viewed = bench_size(n, cfg, size_dir)
            results.append(result)
        log.info("filtered search and query embedding + search at %d", sizes[-1])
        filtered = bench_filtered(viewed, sizes[-1], cfg)
        embed = bench_embed_search(viewed, cfg)
        viewed.clear()
    res = Results(cfg, info, load_before, load_average(), results, filtered, embed, time.perf_counter() - started,
                  output)
    section = render(res)
    if output is None:
        print(section)
    else:
        write_section(output, SECTION, section)
        log.info("wrote %s", output)
    f16 = next(t for t in embed.timings if t.label == "embed + search f16")
    log.info("done in %.1f min; embed + f16 search at %d: p50 %.2f ms, p95 %.2f ms", res.elapsed_s / 60, sizes[-1],
             f16.p(50), f16.p(95))
    return 0


if __name__ == "__main__":
    sys.exit(main())
