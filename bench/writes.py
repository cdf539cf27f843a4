"""Write benchmark: segmented writes (``CollectionWriter``: one new segment per write)
against the full rebuild they replaced, on the same collections in the same run.

1. **Write to searchable.** For each collection size (default 10k, 100k, 1M documents:
   clustered 384-d vectors from ``bench/vectors.py`` and synthetic records, seeded with
   ``segments.files.publish_segments`` in segments of ``max_segment_rows`` = 500,000 rows,
   the default ``hnsw_min_rows``), a 100-document upsert (real sentences from
   ``bench/corpus.py``, so the encoder runs; half of them replace stored documents, half
   are new) is timed from ``CollectionWriter.apply`` until a warm ``CollectionRegistry``
   (loaded before the write, ``recheck_seconds=0``) serves the new version, its sync
   timed on its own. The peer, *full rebuild*, is the old writer: read every live row of
   every segment, drop the ids the batch supersedes, append the batch and store one
   segment with one HNSW graph over everything, then publish a manifest of that segment.
2. **Bytes per write**: what the write stored (``WriteResult.bytes_written``) and what a
   warm reader downloads (blobs the new manifest names that the previous one did not),
   each against the batch's own new segment.
3. **Search over segments** at the largest size: the collection split into 1, 4 and 16
   segments (each with a graph) and the default layout (segments of 500k): recall@10
   against an exact float64 top-10, latency of the vector search alone and of query
   embedding + search (``LoadedCollection.search``, the search function's path).
4. **A stream** of 1,000 writes of 100 documents into a 100k collection with compaction
   after every write (``Maintenance.from_settings``, default settings): write
   amplification and the segment count over time.

The results replace the ``writes`` section of docs/BENCHMARKS.md (between
``<!-- writes:start -->`` and ``<!-- writes:end -->``); plots go to docs/img/writes-*.png.

    python bench/writes.py                      # 10k, 100k, 1M: over an hour on 2 cores, writes the docs
    python bench/writes.py --quick              # smoke run (2k and 5k), prints the section, writes nothing
    python bench/writes.py --peer-max-size 100000   # no full-rebuild peer at 1M (~12 min a write)
    python bench/writes.py --resume             # reuse the phases an interrupted run finished

Seeded collections are kept under ``--work-dir`` (default /tmp/ragserve-bench-writes)
and reused by later runs; every measurement runs on a hard-linked copy of them, so the
seeds stay as they were. Each finished phase is saved there too (``results/``), and
``--resume`` reuses those of an earlier run with the same settings.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
    count_label,
    fmt_ratio,
    fmt_share,
    load_average,
    machine,
    machine_table,
    median,
    output_path,
    paired_ratio,
    parse_sizes,
    percentile,
    start_logging,
    write_section,
)

SECTION = "writes"
COLLECTION = "bench"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (2_000, 5_000)
DEFAULT_WORK_DIR = Path("/tmp/ragserve-bench-writes")
BATCH = 100  # documents per write
REPLACED = 50  # of them, ids already stored (their old rows become deleted); the rest are new
K = 10
SPLITS = (1, 4, 16)
TARGET_P95_S = 2.0  # write to searchable, at 1M
TARGET_FLAT = 1.5  # p50 at the largest size / p50 at the smallest
TARGET_BYTES_RATIO = 3.0  # stored and downloaded per write / the batch's own segment
TARGET_SPLIT_P95_RATIO = 1.5  # 16 segments / 1 segment, at equal or better recall
TARGET_RECALL = 0.98
TARGET_EMBED_SEARCH_P95_MS = 10.0
TARGET_WRITE_AMPLIFICATION = 10.0
RESULTS_FORMAT = 2  # bump when a saved phase's fields change: --resume then recomputes it

log = logging.getLogger("bench.writes")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    writes: int  # timed segmented writes per size (after one warm-up write)
    peer_writes_small: int  # full-rebuild writes at sizes up to 100k
    peer_writes_large: int  # ... above 100k
    stream_size: int
    stream_writes: int
    queries: int
    seconds: float  # time bound of one layout in one repeat of a latency cell
    min_calls: int
    repeats: int
    quick: bool

    @classmethod
    def full(cls) -> Config:
        return cls(writes=40, peer_writes_small=3, peer_writes_large=1, stream_size=100_000, stream_writes=1000,
                   queries=200, seconds=0.5, min_calls=20, repeats=5, quick=False)

    @classmethod
    def smoke(cls) -> Config:
        return cls(writes=6, peer_writes_small=2, peer_writes_large=1, stream_size=5_000, stream_writes=100,
                   queries=50, seconds=0.1, min_calls=5, repeats=1, quick=True)

    def peer_writes(self, n: int) -> int:
        return self.peer_writes_small if n <= 100_000 else self.peer_writes_large

    @property
    def tag(self) -> str:
        """Names saved phase results: a phase is reused only under the same settings."""
        return hashlib.sha256(repr((RESULTS_FORMAT, BATCH, REPLACED, self)).encode()).hexdigest()[:10]


# --------------------------------------------------------------------------- collections


def default_settings():
    """(IndexSettings, CompactionSettings) with their defaults, whatever the environment."""
    from ragserve.settings import CompactionSettings, IndexSettings

    return IndexSettings(), CompactionSettings()


def sentences() -> list[tuple[str, str]]:
    """(topic, sentence) pairs from bench/corpus.py, in a fixed order."""
    return [(topic, s) for topic, group in corpus.TOPICS.items() for s in group]


def base_records(n: int, model_id: str) -> list[dict]:
    from ragserve.documents import Document

    pairs = sentences()
    return [Document(f"doc-{i}", pairs[i % len(pairs)][1], {"topic": pairs[i % len(pairs)][0]}).to_record(model_id)
            for i in range(n)]


def seed(root: Path, n: int, *, segment_rows: int, hnsw_min_rows: int, model_id: str) -> Path:
    """A local store under ``root`` holding ``COLLECTION``: the ``n`` clustered vectors
    of ``bench/vectors.py`` (float16) with synthetic records, published in segments of
    ``segment_rows``. Reused when ``root`` already holds one seeded with the same settings."""
    from ragserve.index.ann import IndexParams
    from ragserve.segments.files import publish_segments
    from ragserve.snapshots.local import LocalSnapshotStore

    meta = {"n": n, "segment_rows": segment_rows, "hnsw_min_rows": hnsw_min_rows, "model_id": model_id,
            "data": f"bench/vectors.py clustered({n}), seed 0, float16", "records": "doc-{i}, corpus sentences"}
    meta_path = root / "seed.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta \
            and LocalSnapshotStore(root).current(COLLECTION) == 1:
        log.info("reusing the seeded %s collection in %s", count_label(n), root)
        return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    log.info("seeding %s documents in segments of %s rows (hnsw_min_rows %d) into %s", f"{n:,}",
             f"{segment_rows:,}", hnsw_min_rows, root)
    data = vectors.clustered(n).astype(np.float16)
    records = base_records(n, model_id)
    publish_segments(LocalSnapshotStore(root), COLLECTION, records, data, model_id=model_id, params=IndexParams(),
                     scratch_dir=root / "scratch", segment_rows=segment_rows, hnsw_min_rows=hnsw_min_rows,
                     threads=os.cpu_count() or 1)
    del data, records
    gc.collect()
    shutil.rmtree(root / "scratch", ignore_errors=True)
    meta_path.write_text(json.dumps(meta, indent=1))  # last: a seed cut short is rebuilt
    log.info("seeded %s in %.1f s", count_label(n), time.perf_counter() - started)
    return root


def clone(source: Path, target: Path) -> Path:
    """A copy of a store made of hard links: its blobs and manifests are never modified in
    place (new files are renamed into place, deletions unlink), so the seed stays intact."""
    shutil.rmtree(target, ignore_errors=True)
    for directory, _, files in os.walk(source):
        rel = Path(directory).relative_to(source)
        if rel.parts[:1] == ("scratch",):
            continue
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name != ".lock" and name != "seed.json":
                os.link(Path(directory) / name, target / rel / name)
    return target


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- the writers


class SegmentedWriter:
    """The product's writer (``ragserve.ingest.writer.CollectionWriter``), default settings."""

    label = "segmented"

    def __init__(self, store, encoder, scratch: Path) -> None:
        from ragserve.ingest.writer import CollectionWriter

        index_settings, _ = default_settings()
        self.writer = CollectionWriter(store, encoder, index_settings, scratch)

    def apply(self, docs: list) -> object:
        from ragserve.ingest.jobs import IngestJob

        return self.writer.apply(COLLECTION, [IngestJob("bench", 0, COLLECTION, tuple(docs), ())])


class FullRebuildWriter:
    """The peer: the writer before segments. Every write reads every live document and
    vector of the collection, drops the ids the batch supersedes, appends the batch and
    stores one segment with one HNSW graph over everything, then publishes a manifest
    listing only that segment (the whole collection rewritten, as the old writer did)."""

    label = "full rebuild"

    def __init__(self, store, encoder, scratch: Path) -> None:
        self.store, self.encoder, self.scratch = store, encoder, scratch

    def apply(self, docs: list) -> object:
        from ragserve.index.ann import IndexParams
        from ragserve.ingest.writer import WriteResult
        from ragserve.segments.files import read_deletes, read_records, store_segment

        store, c = self.store, COLLECTION
        current = store.require_current(c)
        manifest = store.manifest(c, current)
        superseded = {d.id for d in docs}
        records: list[dict] = []
        blocks: list[np.ndarray] = []
        for entry in manifest.segments:
            live = np.ones(entry.rows, dtype=bool)
            if entry.deletes is not None:
                live[read_deletes(store.blob(c, entry.deletes, self.scratch), entry.rows)] = False
            docs_of = read_records(store.blob(c, entry.docs, self.scratch))
            rows = [r for r in np.flatnonzero(live).tolist() if docs_of[r]["id"] not in superseded]
            records += [docs_of[r] for r in rows]
            stored = np.load(store.blob(c, entry.vectors, self.scratch), mmap_mode="r")
            blocks.append(np.asarray(stored[rows], dtype=np.float16))
            del docs_of, stored
        records += [d.to_record(self.encoder.model_id) for d in docs]
        blocks.append(self.encoder.embed([d.text for d in docs]).astype(np.float16))
        version = store.next_version(c)
        matrix = np.concatenate(blocks)
        del blocks
        entry = store_segment(store, c, f"s{version}-0", records, matrix,
                              IndexParams(dtype=manifest.dtype, **manifest.params), self.scratch,
                              hnsw_min_rows=1, threads=self.encoder.threads)
        published = manifest.successor(version, [entry], "write", parent=current)
        store.publish(published, expected_current=current)
        count = len(records)
        del records, matrix
        gc.collect()
        return WriteResult(c, version, len(docs), 0, 0, count, 1, entry.bytes + len(published.to_json()))


# --------------------------------------------------------------------------- 1 and 2: write to searchable


@dataclass
class WriteSample:
    version: int
    apply_s: float  # CollectionWriter.apply (or the peer's)
    sync_s: float  # the warm reader's get() that brought it to the new version
    bytes_written: int  # WriteResult.bytes_written
    downloaded: int  # blobs the new manifest names and the previous one did not
    own_bytes: int  # the batch's new segment (SegmentEntry.bytes)
    segments: int
    ok: bool  # served at its version, the right count, a new document found by its text

    @property
    def total_s(self) -> float:
        return self.apply_s + self.sync_s


@dataclass
class WriteRun:
    writer: str
    n: int
    reader_load_s: float  # the reader's first get(): every segment opened
    first_write_s: float | None  # segmented: an untimed warm-up write by the cold writer (then not in samples)
    samples: list[WriteSample]
    foreign: float

    def p(self, attr: str, q: float) -> float:
        return percentile([getattr(s, attr) for s in self.samples], q)

    def worst_ratio(self, attr: str) -> float:
        return max(getattr(s, attr) / s.own_bytes for s in self.samples)

    @classmethod
    def from_dict(cls, data: dict) -> WriteRun:
        return cls(**{**data, "samples": [WriteSample(**s) for s in data["samples"]]})


def upsert_batch(write: int, replaced: Sequence[str], new_prefix: str) -> list:
    """``BATCH`` documents of real sentences: the ``replaced`` ids, stored already (new
    text and metadata, so their content hash changes), then new ids. Each write draws its
    own sentences in its own order, so no two writes store the same vectors file (blobs
    are content-addressed: a repeated batch would be stored and downloaded once)."""
    from ragserve.documents import Document

    pairs = sentences()
    ids = [*replaced, *(f"{new_prefix}{write}-{j}" for j in range(BATCH - len(replaced)))]
    picks = np.random.default_rng([write, 3]).choice(len(pairs), len(ids), replace=False)
    return [Document(doc_id, pairs[p][1], {"topic": pairs[p][0], "write": write}) for doc_id, p in zip(ids, picks)]


def measure_writes(kind: str, n: int, count: int, base: Path, run_dir: Path, encoder) -> WriteRun:
    from ragserve.search.registry import CollectionRegistry
    from ragserve.snapshots.local import LocalSnapshotStore

    root = clone(base, run_dir)
    writer_store = LocalSnapshotStore(root)  # writer and reader hold store objects of their own,
    reader_store = LocalSnapshotStore(root)  # as separate functions do (each verifies what it reads)
    registry = CollectionRegistry(reader_store, root / "reader-cache", recheck_seconds=0,
                                  model_id=encoder.model_id, dimensions=encoder.dimensions)
    started = time.perf_counter()
    loaded = registry.get(COLLECTION)
    reader_load_s = time.perf_counter() - started
    writer = (SegmentedWriter if kind == "segmented" else FullRebuildWriter)(writer_store, encoder, root / "scratch")
    warmup = 1 if kind == "segmented" else 0
    rng = np.random.default_rng([n, 7])
    replaced = rng.permutation(n)[:REPLACED * (count + warmup)]
    expected = n
    first_write_s = None
    samples: list[WriteSample] = []
    with ForeignCpu() as meter:
        for w in range(count + warmup):
            docs = upsert_batch(w, [f"doc-{i}" for i in replaced[REPLACED * w:REPLACED * (w + 1)]], "new-")
            previous = loaded.manifest
            t0 = time.perf_counter()
            result = writer.apply(docs)
            t1 = time.perf_counter()
            loaded = registry.get(COLLECTION)
            t2 = time.perf_counter()
            expected += BATCH - REPLACED
            current = loaded.manifest
            before = previous.blobs()
            downloaded = sum({ref.sha256: ref.size for s in current.segments for ref in s.blobs()
                              if ref.sha256 not in before}.values())
            own = next(s for s in current.segments if s.id.startswith(f"s{result.version}-"))
            probe = docs[-1]  # a new id: it must be found by its own text
            page = loaded.search(encoder.embed([probe.text])[0], k=50, offset=0, where=None, include_text=True)
            ok = (loaded.version == result.version and len(loaded) == expected and bool(page.results)
                  and page.results[0]["text"] == probe.text
                  and any(h["id"] == probe.id and h["score"] >= 0.99 for h in page.results))
            if not ok:
                log.warning("%s write %d at %s: not served as expected (version %s of %s, %d documents of %d)",
                            kind, w, count_label(n), loaded.version, result.version, len(loaded), expected)
            if w < warmup:
                first_write_s = t1 - t0
                log.info("%s %s: first write (cold writer) %.2f s, reader sync %.3f s", kind, count_label(n),
                         t1 - t0, t2 - t1)
                continue
            samples.append(WriteSample(result.version, t1 - t0, t2 - t1, result.bytes_written, downloaded,
                                       own.bytes, len(current.segments), ok))
            log.info("%s %s write %d/%d: apply %.3f s, reader sync %.3f s, stored %s, downloaded %s, own %s",
                     kind, count_label(n), len(samples), count, t1 - t0, t2 - t1, human(result.bytes_written),
                     human(downloaded), human(own.bytes))
    del loaded, registry, writer
    gc.collect()
    shutil.rmtree(root, ignore_errors=True)
    return WriteRun(kind, n, reader_load_s, first_write_s, samples, meter.share)


# --------------------------------------------------------------------------- 3: search over segments


@dataclass
class Layout:
    label: str
    segments: int
    graphs: int
    load_s: float
    memory_bytes: int
    recall: float = float("nan")
    search_ms: list[list[float]] = field(default_factory=list)  # per repeat
    embed_ms: list[list[float]] = field(default_factory=list)

    def p(self, attr: str, q: float) -> float:
        return percentile([x for rep in getattr(self, attr) for x in rep], q)

    def rep_p50(self, attr: str) -> list[float]:
        return [median(rep) for rep in getattr(self, attr)]

    def calls(self, attr: str) -> int:
        return sum(len(rep) for rep in getattr(self, attr))


@dataclass
class SplitResult:
    n: int
    layouts: list[Layout]
    queries: int
    embed_detail: str
    foreign: float

    def by_segments(self, count: int) -> Layout:
        return next(x for x in self.layouts if x.label == f"{count} segment{'s' if count > 1 else ''}")

    @property
    def default(self) -> Layout:
        return next(x for x in self.layouts if x.label.startswith("default"))

    @classmethod
    def from_dict(cls, data: dict) -> SplitResult:
        return cls(**{**data, "layouts": [Layout(**x) for x in data["layouts"]]})


def exact_top_f64(stored: np.ndarray, queries: np.ndarray, k: int, *, chunk: int = 65_536) -> np.ndarray:
    """Rows of the ``k`` largest float64 inner products with the stored (float16) vectors,
    per query, best first, ties by lower row; the rows are scanned in chunks."""
    q = queries.astype(np.float64)
    best_rows = np.empty((len(q), 0), dtype=np.int64)
    best_scores = np.empty((len(q), 0), dtype=np.float64)
    for start in range(0, len(stored), chunk):
        block = stored[start:start + chunk].astype(np.float64)
        scores = np.concatenate([best_scores, q @ block.T], axis=1)
        rows = np.concatenate([best_rows, np.broadcast_to(np.arange(start, start + len(block)),
                                                          (len(q), len(block)))], axis=1)
        keep = min(k, scores.shape[1])
        top = np.argpartition(-scores, keep - 1, axis=1)[:, :keep]
        best_scores = np.take_along_axis(scores, top, axis=1)
        best_rows = np.take_along_axis(rows, top, axis=1)
    order = np.lexsort((best_rows, -best_scores), axis=1)
    return np.take_along_axis(best_rows, order, axis=1)


def truth_for(n: int, queries: np.ndarray, work: Path) -> np.ndarray:
    path = work / f"truth-{n}-{len(queries)}.npy"
    if path.is_file():
        return np.load(path)
    started = time.perf_counter()
    truth = exact_top_f64(vectors.clustered(n).astype(np.float16), queries, K)
    np.save(path, truth)
    log.info("exact float64 top-%d of %d queries over %s vectors in %.1f s", K, len(queries), count_label(n),
             time.perf_counter() - started)
    return truth


def bench_split(n: int, cfg: Config, work: Path, base: Path, encoder) -> SplitResult:
    from ragserve.search.registry import CollectionRegistry
    from ragserve.snapshots.local import LocalSnapshotStore

    _, compaction = default_settings()
    roots = []
    for parts in SPLITS:
        rows = math.ceil(n / parts)
        roots.append((f"{parts} segment{'s' if parts > 1 else ''}",
                      seed(work / "seeds" / f"split-{n}-{parts}", n, segment_rows=rows, hnsw_min_rows=1,
                           model_id=encoder.model_id)))
    default_segments = math.ceil(n / compaction.max_segment_rows)
    roots.append((f"default ({default_segments} × ≤{count_label(compaction.max_segment_rows)})", base))
    qs = vectors.queries(cfg.queries)
    truth = truth_for(n, qs, work)
    loaded = {}
    layouts = []
    for label, root in roots:
        registry = CollectionRegistry(LocalSnapshotStore(root), work / "reader-cache", recheck_seconds=0,
                                      model_id=encoder.model_id, dimensions=encoder.dimensions)
        gc.collect()
        started = time.perf_counter()
        collection = registry.get(COLLECTION)
        load_s = time.perf_counter() - started
        segments = collection.manifest.segments
        layout = Layout(label, len(segments), sum(s.index is not None for s in segments), load_s,
                        collection.memory_bytes())
        found = []
        for q in qs:  # also the warm-up
            page = collection.search(q, k=K, offset=0, where=None, include_text=False)
            found.append(np.array([int(h["id"].removeprefix("doc-")) for h in page.results]))
        layout.recall = vectors.recall_at(found, truth)
        log.info("%s at %s: %d segments (%d with a graph), loaded in %.1f s, recall@10 %.3f", label, count_label(n),
                 layout.segments, layout.graphs, load_s, layout.recall)
        loaded[label] = collection
        layouts.append(layout)
    texts = corpus.sentences()

    def search_only(collection, i: int):
        return collection.search(qs[i % len(qs)], k=K, offset=0, where=None, include_text=False)

    def embed_search(collection, i: int):
        vector = encoder.embed([texts[i % len(texts)]])[0]
        return collection.search(vector, k=K, offset=0, where=None, include_text=False)

    for layout in layouts:  # the embedding path warmed too
        for i in range(10):
            embed_search(loaded[layout.label], i)
    with ForeignCpu() as meter:
        for _ in range(cfg.repeats):  # layouts interleaved round-robin, on the same queries in the same order
            for attr, fn in (("search_ms", search_only), ("embed_ms", embed_search)):
                for layout in layouts:
                    collection = loaded[layout.label]
                    time.sleep(0.02)
                    lat: list[float] = []
                    started = time.perf_counter()
                    i = 0
                    while time.perf_counter() - started < cfg.seconds or len(lat) < cfg.min_calls:
                        t0 = time.perf_counter()
                        fn(collection, i)
                        lat.append((time.perf_counter() - t0) * 1000)
                        i += 1
                    getattr(layout, attr).append(lat)
    for layout in layouts:
        log.info("%s: search p50 %.2f ms p95 %.2f ms; embed + search p50 %.2f ms p95 %.2f ms", layout.label,
                 layout.p("search_ms", 50), layout.p("search_ms", 95), layout.p("embed_ms", 50),
                 layout.p("embed_ms", 95))
    detail = (f"`ragserve.load_encoder()` ({encoder.threads} threads) embedding one sentence per call "
              f"({len(texts)} sentences from `bench/corpus.py`, cycled), then `LoadedCollection.search(vector, k=10)`")
    loaded.clear()
    gc.collect()
    return SplitResult(n, layouts, len(qs), detail, meter.share)


# --------------------------------------------------------------------------- 4: a stream with compaction


@dataclass
class StreamSample:
    write_s: float
    maintenance_s: float
    bytes_written: int
    own_bytes: int
    compaction_bytes: int
    merges: int
    merged_rows: int  # rows of the segments the merges built
    segments_after_write: int
    segments: int  # after maintenance


@dataclass
class StreamResult:
    n: int
    samples: list[StreamSample]
    foreign: float
    settings: str

    @classmethod
    def from_dict(cls, data: dict) -> StreamResult:
        return cls(**{**data, "samples": [StreamSample(**s) for s in data["samples"]]})

    @property
    def ingested(self) -> int:
        return sum(s.own_bytes for s in self.samples)

    @property
    def write_bytes(self) -> int:
        return sum(s.bytes_written for s in self.samples)

    @property
    def compaction_bytes(self) -> int:
        return sum(s.compaction_bytes for s in self.samples)

    @property
    def amplification(self) -> float:
        return (self.write_bytes + self.compaction_bytes) / self.ingested

    def cumulative_amplification(self) -> list[float]:
        out, written, ingested = [], 0, 0
        for s in self.samples:
            written += s.bytes_written + s.compaction_bytes
            ingested += s.own_bytes
            out.append(written / ingested)
        return out


def stream_id(i: int, n: int) -> str:
    """The id of live document number ``i``: the seeded ``doc-{i}``, then the stream's new
    ones in order (``s-{write}-{j}``)."""
    if i < n:
        return f"doc-{i}"
    new_per_write = BATCH - REPLACED
    return f"s-{(i - n) // new_per_write}-{(i - n) % new_per_write}"


def bench_stream(n: int, writes: int, base: Path, run_dir: Path, encoder) -> StreamResult:
    from ragserve.segments.maintenance import Maintenance
    from ragserve.settings import Env, IngestSettings
    from ragserve.snapshots.local import LocalSnapshotStore

    root = clone(base, run_dir)
    settings = IngestSettings.from_env({Env.DATA_DIR: str(root)})  # every default; scratch under root
    store = LocalSnapshotStore(root)
    writer = SegmentedWriter(store, encoder, root / "scratch")
    maintenance = Maintenance.from_settings(LocalSnapshotStore(root), settings)  # a store object of its own
    policy = maintenance.compactor.policy
    described = (f"segments_per_tier {policy.segments_per_tier}, max_merge_at_once {policy.max_merge_at_once}, "
                 f"max_segment_rows {policy.max_segment_rows:,}, floor_rows {policy.floor_rows:,}, "
                 f"deletes_pct_allowed {policy.deletes_pct_allowed:g}, hnsw_min_rows "
                 f"{settings.index.hnsw_min_rows:,}, retention {settings.compaction.retention_seconds:g} s")
    writer.writer.id_map(COLLECTION, store.live_manifest(COLLECTION))  # a warm writer
    rng = np.random.default_rng([n, 11])
    live_new = 0
    samples: list[StreamSample] = []
    with ForeignCpu() as meter:
        for w in range(writes):
            # replace random live documents (seeded, or new earlier in the stream), add new ones
            picks = rng.choice(n + live_new, REPLACED, replace=False).tolist()
            docs = upsert_batch(w, [stream_id(i, n) for i in picks], "s-")
            t0 = time.perf_counter()
            result = writer.apply(docs)
            t1 = time.perf_counter()
            after_write = store.manifest(COLLECTION, result.version)
            own = next(s for s in after_write.segments if s.id.startswith(f"s{result.version}-"))
            done = maintenance.run(COLLECTION)
            t2 = time.perf_counter()
            if done.error:
                raise RuntimeError(f"maintenance failed after write {w}: {done.error}")
            live_new += BATCH - REPLACED
            segments = len(store.live_manifest(COLLECTION).segments)
            merged = sum(m.bytes_written for m in done.merges)
            samples.append(StreamSample(t1 - t0, t2 - t1, result.bytes_written, own.bytes, merged, len(done.merges),
                                        sum(m.rows for m in done.merges), len(after_write.segments), segments))
            if done.merges or (w + 1) % 50 == 0:
                log.info("stream %d/%d: write %.2f s; %d merges (%s rows, %s) in %.1f s; %d segments", w + 1, writes,
                         t1 - t0, len(done.merges), f"{sum(m.rows for m in done.merges):,}", human(merged), t2 - t1,
                         segments)
    del writer, maintenance
    gc.collect()
    shutil.rmtree(root, ignore_errors=True)
    return StreamResult(n, samples, meter.share, described)


# --------------------------------------------------------------------------- report


def human(x: float) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(x) >= div:
            v = x / div
            return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.1f} {unit}" if v >= 10 else f"{v:.2f} {unit}"
    return f"{x:.0f} B"


def sec(x: float) -> str:
    if math.isnan(x):
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def ms(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else (f"{x:.1f}" if x >= 10 else (f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"))


@dataclass
class Results:
    cfg: Config
    machine: dict[str, str]
    load_before: str
    load_after: str
    sizes: list[int]
    segmented: dict[int, WriteRun]
    peer: dict[int, WriteRun]  # sizes the full rebuild ran at
    peer_max_size: int | None
    split: SplitResult
    stream: StreamResult
    elapsed_s: float
    reused: list[str]  # phases taken from an earlier run (--resume)
    output: Path | None = None


def render(r: Results) -> str:
    index_settings, compaction = default_settings()
    out = ["## Writes", ""]
    out.append(f"_Generated by `bench/writes.py`{' **--quick (smoke run: not for citing)**' if r.cfg.quick else ''} "
               f"in {r.elapsed_s / 60:.1f} min. Do not edit between the markers: the next run rewrites it._")
    if r.reused:
        out += ["", f"Phases reused from an earlier run with the same settings (`--resume`): {', '.join(r.reused)}."]
    out += ["", *machine_table(r.machine, r.load_before, r.load_after)]
    out += ["", ("Collections: the clustered 384-d unit vectors of `bench/vectors.py` (stored as float16) with "
                 "synthetic records (`doc-{i}`, a `bench/corpus.py` sentence, a topic), seeded with "
                 "`segments.files.publish_segments` in segments of "
                 f"{compaction.max_segment_rows:,} rows (`max_segment_rows`) with the default `hnsw_min_rows` "
                 f"({index_settings.hnsw_min_rows:,}: every seeded segment has an HNSW graph), in a local store "
                 "(`LocalSnapshotStore`) on the machine's disk. Every measurement runs on a hard-linked copy of "
                 "the same seeded collection, so the two writers start from the same bytes. A write is one "
                 f"`IngestJob` of {BATCH} documents, real sentences drawn from `bench/corpus.py` afresh for each "
                 "write, so no two writes store the same vectors file (the encoder runs: "
                 f"`ragserve.load_encoder()`, int8): {REPLACED} replace stored documents (new text and metadata), "
                 f"{BATCH - REPLACED} are new.")]
    out += ["", ("- **segmented**: `CollectionWriter.apply` with the default settings: it embeds the batch, stores "
                 f"one segment of it (exact: under {index_settings.hnsw_min_rows:,} rows, no graph), rewrites the "
                 "deletion vectors of the segments whose rows it replaced, publishes a manifest. Its first write "
                 "(the cold writer reading every segment's ids and verifying every blob once) is a warm-up, "
                 "reported apart; no compaction runs between these writes."),
            ("- **full rebuild** (the peer: the writer before segments, in `bench/writes.py`): every write reads "
             "every live document and vector of every segment, drops the ids the batch supersedes, appends the "
             "embedded batch and stores one segment with one HNSW graph over everything "
             "(`segments.files.store_segment`), then publishes a manifest of that one segment."),
            "",
            ("*Write → searchable*: from calling the writer until a warm `CollectionRegistry` (loaded before the "
             "writes, `recheck_seconds=0`, a store object of its own) returns the new version from `get()`; "
             "*apply* and the reader's *sync* are its two parts. After each write (untimed) the reader's version, "
             "document count and a search for a new document's own text are checked.")]
    out += render_latency(r)
    out += render_bytes(r)
    out += render_split(r)
    out += render_stream(r)
    out += render_checks(r)
    out += ["", "### How to reproduce", "",
            ("`python bench/writes.py` (`make bench-writes`): over an hour on 2 cores, most of it HNSW builds of "
             "the 1M collections and the peer's 1M write; `--peer-max-size 100000` skips the peer at 1M; "
             "`--quick` is a smoke run that writes nothing. Seeded collections are kept under `--work-dir` "
             f"(default `{DEFAULT_WORK_DIR}`) and reused; `--resume` reuses the phases an interrupted run "
             "finished.")]
    return "\n".join(out)


def render_latency(r: Results) -> list[str]:
    out = ["", "### Write to searchable", "",
           "| Documents | Writer | writes | apply p50 s | apply p95 s | reader sync p50 ms | reader sync p95 ms "
           "| write → searchable p50 s | p95 s | max s | peer ÷ segmented (p50) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in r.sizes:
        seg, peer = r.segmented[n], r.peer.get(n)
        runs = [seg] + ([peer] if peer else [])
        for run in runs:
            ratio = "—"
            if run is peer:
                ratio = fmt_ratio(peer.p("total_s", 50) / seg.p("total_s", 50))
            out.append(f"| {n:,} | {run.writer} | {len(run.samples)} | {sec(run.p('apply_s', 50))} | "
                       f"{sec(run.p('apply_s', 95))} | {ms(run.p('sync_s', 50) * 1000)} | "
                       f"{ms(run.p('sync_s', 95) * 1000)} | {sec(run.p('total_s', 50))} | "
                       f"{sec(run.p('total_s', 95))} | {sec(max(s.total_s for s in run.samples))} | {ratio} |")
        if peer is None:
            out.append(f"| {n:,} | full rebuild | — | skipped: above `--peer-max-size` "
                       f"{r.peer_max_size:,} | | | | | | | |")
    out += ["", ("Percentiles interpolate linearly between the timed writes. Before the timed writes: the "
                 "reader's first load (every segment opened, each blob's sha256 "
                 "verified once) and the segmented writer's first write (cold: every segment's ids read and every "
                 "blob verified once) took:"), ""]
    parts = []
    for n in r.sizes:
        seg, peer = r.segmented[n], r.peer.get(n)
        parts.append(f"{n:,}: reader load {sec(seg.reader_load_s)} s, first segmented write "
                     f"{sec(seg.first_write_s or float('nan'))} s"
                     + (f"; the peer's reader load {sec(peer.reader_load_s)} s" if peer else ""))
    out.append("- " + "\n- ".join(parts))
    shares = ", ".join(f"{n:,}: {fmt_share(r.segmented[n].foreign)}"
                       + (f" / {fmt_share(r.peer[n].foreign)}" if n in r.peer else "") for n in r.sizes)
    out += ["", f"Other processes used this share of the CPUs during the writes (segmented / full rebuild): {shares}."]
    if r.output is not None:
        out += ["", plot_latency(r)]
    return out


def plot_latency(r: Results) -> str:
    figure = Figure(SECTION, "latency", "A 100-document upsert: segmented writes vs full rebuild", r.output,
                    size=(11.0, 4.0))
    with figure as (fig, ax):
        ax.remove()
        left, right = fig.subplots(1, 2)
        for runs, label, color in ((r.segmented, "segmented", "C0"), (r.peer, "full rebuild", "C3")):
            sizes = [n for n in r.sizes if n in runs]
            if not sizes:
                continue
            left.plot(sizes, [runs[n].p("total_s", 50) for n in sizes], marker="o", color=color,
                      label=f"{label} p50")
            left.plot(sizes, [runs[n].p("total_s", 95) for n in sizes], marker="^", linestyle="--", color=color,
                      label=f"{label} p95")
            right.plot(sizes, [median([s.bytes_written for s in runs[n].samples]) / 1e6 for n in sizes], marker="o",
                       color=color, label=f"{label}: stored")
            right.plot(sizes, [median([s.downloaded for s in runs[n].samples]) / 1e6 for n in sizes], marker="s",
                       linestyle="--", color=color, label=f"{label}: downloaded by a reader")
        left.axhline(TARGET_P95_S, color="grey", linestyle=":", label=f"target p95 {TARGET_P95_S:g} s at 1M")
        own = [median([s.own_bytes for s in r.segmented[n].samples]) / 1e6 for n in r.sizes]
        right.plot(r.sizes, own, color="grey", linestyle=":", label="the batch's own segment")
        for panel, title, ylabel in ((left, "write → searchable (lower is better)", "seconds"),
                                     (right, "bytes per write, median (lower is better)", "MB")):
            count_axis(panel, r.sizes)
            panel.set_yscale("log")
            panel.set_xlabel("documents in the collection")
            panel.set_ylabel(ylabel)
            panel.set_title(title, fontsize=9)
            panel.grid(True, which="both", alpha=0.3)
            panel.legend(fontsize=7)
    return figure.markdown


def render_bytes(r: Results) -> list[str]:
    out = ["", "### Bytes per write", "",
           ("*Stored*: `WriteResult.bytes_written` (new blobs and the manifest). *Downloaded*: the blobs the new "
            "manifest names and the previous one did not, which a warm reader fetches (from S3; the local store "
            "opens them in place). *Own segment*: the batch's new segment (`SegmentEntry.bytes`: vectors, "
            "documents, ids, graph if any). Medians over the writes; the ratios are the worst write's."), "",
           "| Documents | Writer | stored | downloaded | own segment | manifest segments | stored ÷ own (worst) "
           "| downloaded ÷ own (worst) |",
           "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for n in r.sizes:
        for run in [r.segmented[n]] + ([r.peer[n]] if n in r.peer else []):
            out.append(f"| {n:,} | {run.writer} | {human(median([s.bytes_written for s in run.samples]))} | "
                       f"{human(median([s.downloaded for s in run.samples]))} | "
                       f"{human(median([s.own_bytes for s in run.samples]))} | "
                       f"{min(s.segments for s in run.samples)}–{max(s.segments for s in run.samples)} | "
                       f"{fmt_ratio(run.worst_ratio('bytes_written'))} | {fmt_ratio(run.worst_ratio('downloaded'))} |")
    out += ["", ("The peer's own segment is the whole collection: its ratios are 1× by construction, and the "
                 "figure to compare is the bytes.")]
    return out


def render_split(r: Results) -> list[str]:
    s = r.split
    one = s.by_segments(1)
    out = ["", f"### Search over segments, {s.n:,} documents", "",
           (f"The seeded collection split into 1, 4 and 16 segments (`publish_segments` with `segment_rows` = n, "
            "n/4, n/16 and `hnsw_min_rows=1`, so each has a graph), and the default layout of the collections above. "
            f"{s.queries} queries from `vectors.queries` (fresh draws from the data's mixture); recall@10 against "
            "the exact top-10 by float64 inner product with the stored float16 vectors (what an exact search of "
            "this collection returns). *Search*: `LoadedCollection.search(query, k=10)` (every segment searched, "
            "the per-segment lists merged on their exact scores); *embed + search*: "
            f"{s.embed_detail}. The texts' vectors are not in this synthetic collection, so only that path's "
            f"latency means anything. Layouts interleaved round-robin ({r.cfg.repeats} repeats × ≥{r.cfg.seconds:g} s "
            f"and ≥{r.cfg.min_calls} calls each), all loaded at once; percentiles over all timed calls. Other "
            f"processes used {fmt_share(s.foreign)} of the CPUs meanwhile."), "",
           "| Layout | segments | with a graph | load s | memory MB | recall@10 | search p50 ms | p95 ms | p99 ms "
           "| embed + search p50 ms | p95 ms | p99 ms | p95 ÷ 1 segment | p50 ÷ 1 segment |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for x in s.layouts:
        out.append(f"| {x.label} | {x.segments} | {x.graphs} | {sec(x.load_s)} | {x.memory_bytes / 1e6:,.0f} | "
                   f"{x.recall:.3f} | {ms(x.p('search_ms', 50))} | {ms(x.p('search_ms', 95))} | "
                   f"{ms(x.p('search_ms', 99))} | {ms(x.p('embed_ms', 50))} | {ms(x.p('embed_ms', 95))} | "
                   f"{ms(x.p('embed_ms', 99))} | {fmt_ratio(x.p('search_ms', 95) / one.p('search_ms', 95))} | "
                   f"{fmt_ratio(paired_ratio(x.rep_p50('search_ms'), one.rep_p50('search_ms')))} |")
    out += ["", ("Ratios are layout ÷ 1 segment (<1 is faster): p95 over all calls, p50 the median of per-repeat "
                 f"ratios. At least {min(x.calls('search_ms') for x in s.layouts):,} timed searches per layout. "
                 "*Memory*: `LoadedCollection.memory_bytes()` (mapped graphs + float16 vectors; the documents "
                 "held in Python are not counted). *Load*: the registry's first `get()` (sha256 of every blob, "
                 "documents parsed).")]
    return out


def render_stream(r: Results) -> list[str]:
    st = r.stream
    samples = st.samples
    tail = samples[-max(1, len(samples) // 10):]
    merges = sum(x.merges for x in samples)
    peak = max(range(len(samples)), key=lambda i: samples[i].segments_after_write)
    slowest = max(samples, key=lambda x: x.maintenance_s)
    out = ["", f"### A stream of {len(samples):,} writes into {st.n:,} documents, compaction on", "",
           (f"{len(samples):,} writes of {BATCH} documents ({REPLACED} replacing random live documents, seeded or "
            "written earlier in the stream), each followed by `Maintenance.from_settings(store, "
            "IngestSettings.from_env(...)).run(collection)` (merges the policy asks for, then retention), as the "
            f"local writer runs it; every setting its default ({st.settings}). *Write amplification* = (bytes "
            "the writes stored + bytes the merges stored) ÷ bytes ingested (the batches' own new segments). "
            f"Other processes used {fmt_share(st.foreign)} of the CPUs meanwhile."), "",
           "| | |", "|---|---:|",
           f"| bytes ingested (the batches' own segments) | {human(st.ingested)} |",
           f"| stored by the writes (segments, deletion vectors, manifests) | {human(st.write_bytes)} |",
           f"| stored by compaction ({merges:,} merges, {sum(x.merged_rows for x in samples):,} rows written) "
           f"| {human(st.compaction_bytes)} |",
           f"| **write amplification** | **{st.amplification:.2f}×** |",
           f"| segments: at most (after write {peak + 1:,}) | {samples[peak].segments_after_write} |",
           f"| segments at the end; range over the last {len(tail)} writes | {samples[-1].segments}; "
           f"{min(x.segments for x in tail)}–{max(x.segments for x in tail)} |",
           f"| write p50 / p95 / max s | {sec(percentile([x.write_s for x in samples], 50))} / "
           f"{sec(percentile([x.write_s for x in samples], 95))} / {sec(max(x.write_s for x in samples))} |",
           f"| maintenance total; slowest run | {sec(sum(x.maintenance_s for x in samples))} s; "
           f"{sec(slowest.maintenance_s)} s ({slowest.merges} merges, {slowest.merged_rows:,} rows) |"]
    if r.output is not None:
        out += ["", plot_stream(r)]
    return out


def plot_stream(r: Results) -> str:
    st = r.stream
    figure = Figure(SECTION, "segments", f"A stream of {len(st.samples):,} writes into {count_label(st.n)} "
                    "documents, compaction on", r.output, size=(11.0, 3.8))
    x = np.arange(1, len(st.samples) + 1)
    with figure as (fig, ax):
        ax.remove()
        left, right = fig.subplots(1, 2)
        left.step(x, [s.segments_after_write for s in st.samples], where="post", color="C1", alpha=0.7,
                  label="after the write")
        left.step(x, [s.segments for s in st.samples], where="post", color="C0", label="after maintenance")
        left.set_ylabel("segments")
        left.set_title("segment count", fontsize=9)
        right.plot(x, st.cumulative_amplification(), color="C2", label="cumulative write amplification")
        right.axhline(TARGET_WRITE_AMPLIFICATION, color="grey", linestyle=":",
                      label=f"target ≤ {TARGET_WRITE_AMPLIFICATION:g}×")
        right.set_ylabel("× bytes ingested")
        right.set_yscale("log")
        right.set_title("write amplification so far", fontsize=9)
        for panel in (left, right):
            panel.set_xlabel("write number")
            panel.grid(True, which="both", alpha=0.3)
            panel.legend(fontsize=7)
    return figure.markdown


def render_checks(r: Results) -> list[str]:
    out = ["", "### Checks", ""]
    largest, smallest = r.sizes[-1], r.sizes[0]
    seg = r.segmented[largest]
    at = "" if largest == 1_000_000 else ", set for 1,000,000"
    out.append(f"- {check(seg.p('total_s', 95) <= TARGET_P95_S)}: segmented write → searchable at {largest:,} "
               f"documents, p95 {sec(seg.p('total_s', 95))} s over {len(seg.samples)} writes "
               f"(target ≤ {TARGET_P95_S:g} s{at})")
    if len(r.sizes) > 1:
        flat = seg.p("total_s", 50) / r.segmented[smallest].p("total_s", 50)
        out.append(f"- {check(flat <= TARGET_FLAT)}: segmented write → searchable is flat across sizes: p50 "
                   f"{sec(seg.p('total_s', 50))} s at {largest:,} is {fmt_ratio(flat)} the "
                   f"{sec(r.segmented[smallest].p('total_s', 50))} s at {smallest:,} (target ≤ {TARGET_FLAT:g}×; "
                   f"p95 {sec(seg.p('total_s', 95))} s vs {sec(r.segmented[smallest].p('total_s', 95))} s)")
    for n in r.sizes:
        run = r.segmented[n]
        stored, down = run.worst_ratio("bytes_written"), run.worst_ratio("downloaded")
        out.append(f"- {check(max(stored, down) <= TARGET_BYTES_RATIO)}: bytes per write at {n:,} documents, worst "
                   f"of {len(run.samples)} writes: stored {fmt_ratio(stored)}, downloaded by a warm reader "
                   f"{fmt_ratio(down)} the batch's own segment (target ≤ {TARGET_BYTES_RATIO:g}×)")
    s = r.split
    one, sixteen = s.by_segments(1), s.by_segments(16)
    ratio = sixteen.p("search_ms", 95) / one.p("search_ms", 95)
    out.append(f"- {check(ratio <= TARGET_SPLIT_P95_RATIO and sixteen.recall >= one.recall)}: search at {s.n:,} "
               f"documents in 16 segments, p95 {ms(sixteen.p('search_ms', 95))} ms = {fmt_ratio(ratio)} one "
               f"segment's {ms(one.p('search_ms', 95))} ms, recall@10 {sixteen.recall:.3f} vs {one.recall:.3f} "
               f"(target ≤ {TARGET_SPLIT_P95_RATIO:g}× at equal or better recall)")
    d = s.default
    at = "" if s.n == 1_000_000 else ", set for 1,000,000"
    out.append(f"- {check(d.recall >= TARGET_RECALL)}: recall@10 at {s.n:,} documents, default layout "
               f"({d.segments} segment{'s' if d.segments > 1 else ''}), {d.recall:.3f} "
               f"(target ≥ {TARGET_RECALL:g}{at})")
    out.append(f"- {check(d.p('embed_ms', 95) <= TARGET_EMBED_SEARCH_P95_MS)}: query embedding + search at "
               f"{s.n:,} documents, default layout, p95 {ms(d.p('embed_ms', 95))} ms "
               f"(target ≤ {TARGET_EMBED_SEARCH_P95_MS:g} ms)")
    st = r.stream
    out.append(f"- {check(st.amplification <= TARGET_WRITE_AMPLIFICATION)}: write amplification over "
               f"{len(st.samples):,} writes into {st.n:,} documents with compaction, {st.amplification:.2f}× "
               f"(target ≤ {TARGET_WRITE_AMPLIFICATION:g}×)")
    runs = [*r.segmented.values(), *r.peer.values()]
    good = sum(x.ok for run in runs for x in run.samples)
    total = sum(len(run.samples) for run in runs)
    out.append(f"- {check(good == total)}: every timed write was served by the warm reader at its own version, "
               f"with the right document count and a new document found by its own text ({good} of {total})")
    return out


# --------------------------------------------------------------------------- main


def phase(work: Path, name: str, cfg: Config, resume: bool, reused: list[str], compute: Callable[[], object],
          load: Callable[[dict], object]):
    """Run a phase, saving its result; with ``resume``, reuse one saved under the same settings."""
    path = work / "results" / f"{name}-{cfg.tag}.json"
    if resume and path.is_file():
        log.info("reusing %s from %s", name, path)
        reused.append(name)
        return load(json.loads(path.read_text()))
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(value)))
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, sizes_help="default 10000,100000,1000000; --quick: 2000,5000")
    parser.add_argument("--peer-max-size", type=int, default=None,
                        help="run the full-rebuild peer only at sizes up to this (default: every size)")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR,
                        help=f"seeded collections and saved phases, reused by later runs (default {DEFAULT_WORK_DIR})")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the phases an earlier run with the same settings saved under --work-dir")
    args = parser.parse_args(argv)
    start_logging(log)
    cfg = Config.smoke() if args.quick else Config.full()
    sizes = parse_sizes(args.sizes, QUICK_SIZES if args.quick else DEFAULT_SIZES)
    if not sizes or min(sizes) < REPLACED * (cfg.writes + 1) or min(sizes) < 16 * K:
        parser.error(f"--sizes must be at least {max(REPLACED * (cfg.writes + 1), 16 * K)} documents")
    output = output_path(args)
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    import ragserve

    started = time.perf_counter()
    load_before = load_average()
    info = machine(("usearch", "numpy", "onnxruntime"))
    encoder = ragserve.load_encoder()
    index_settings, compaction = default_settings()
    reused: list[str] = []
    bases: dict[int, Path] = {}

    def base(n: int) -> Path:
        if n not in bases:
            bases[n] = seed(work / "seeds" / f"base-{n}", n, segment_rows=compaction.max_segment_rows,
                            hnsw_min_rows=index_settings.hnsw_min_rows, model_id=encoder.model_id)
        return bases[n]

    runs = work / "runs"
    segmented: dict[int, WriteRun] = {}
    peer: dict[int, WriteRun] = {}
    for n in sizes:
        segmented[n] = phase(work, f"segmented-{n}", cfg, args.resume, reused,
                             lambda n=n: measure_writes("segmented", n, cfg.writes, base(n), runs / "segmented",
                                                        encoder), WriteRun.from_dict)
        if args.peer_max_size is None or n <= args.peer_max_size:
            log.info("full-rebuild peer at %s: %d writes", count_label(n), cfg.peer_writes(n))
            peer[n] = phase(work, f"peer-{n}", cfg, args.resume, reused,
                            lambda n=n: measure_writes("full rebuild", n, cfg.peer_writes(n), base(n), runs / "peer",
                                                       encoder), WriteRun.from_dict)
    largest = sizes[-1]
    split = phase(work, f"split-{largest}", cfg, args.resume, reused,
                  lambda: bench_split(largest, cfg, work, base(largest), encoder), SplitResult.from_dict)
    stream = phase(work, f"stream-{cfg.stream_size}", cfg, args.resume, reused,
                   lambda: bench_stream(cfg.stream_size, cfg.stream_writes, base(cfg.stream_size), runs / "stream",
                                        encoder), StreamResult.from_dict)
    shutil.rmtree(runs, ignore_errors=True)
    res = Results(cfg, info, load_before, load_average(), sizes, segmented, peer, args.peer_max_size, split, stream,
                  time.perf_counter() - started, reused, output)
    section = render(res)
    if output is None:
        sys.stdout.write(section + "\n")
    else:
        write_section(output, SECTION, section)
        log.info("wrote %s", output)
    seg = segmented[largest]
    log.info("done in %.1f min; write → searchable at %s: p50 %.2f s, p95 %.2f s; write amplification %.2f×",
             res.elapsed_s / 60, count_label(largest), seg.p("total_s", 50), seg.p("total_s", 95),
             stream.amplification)
    return 0


if __name__ == "__main__":
    sys.exit(main())
