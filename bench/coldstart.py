"""Cold-start benchmark: the init of every ragserve function in fresh processes, its
phases, its peers, and a worked estimate of the Lambda cold start of the image.

For each function (embed, search at two collection sizes, ingest, ops /health and
/metrics, the authorizer) and each peer (sentence-transformers on PyTorch for embed;
sentence-transformers + FAISS ``read_index`` of an HNSW index of the same collection for
search), in fresh processes (``bench/coldstart_child.py``), on one CPU (the figures a
1,769 MB Lambda function gets) and on all cores:

- phases: interpreter start (spawn to the child's first statement, seen from the
  parent), imports and the rest of the init, model load (the product's ``ModelInitMs``,
  from its own log line), index load (``IndexLoadMs``), first invocation (a sample event
  from ``events/``), total to the first answer; peak RSS;
- in one extra run per function under ``-X importtime``: import time by package, and
  every file the process read or mapped, sorted into the image layer it would come from.

Then the image's size per Dockerfile layer, and the estimate: image bytes read at init
÷ an assumed lazy-load throughput + the 1-CPU init + the first invocation (+ the S3 →
/tmp download of the snapshot for search, at an assumed throughput).

The results replace the ``coldstart`` section of docs/BENCHMARKS.md.

    python bench/coldstart.py            # full run (~7 minutes on 2 cores), writes the docs
    python bench/coldstart.py --quick    # smoke run (a 2k collection), prints the section, writes nothing
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import py_compile
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import corpus  # bench/ is sys.path[0] when run as a script
import numpy as np
import vectors
from embed import FIRST_TEXT, TARGET_COLD_RSS_MB, TARGET_COLD_WALL_S
from report import (
    DEFAULT_OUTPUT,
    REPO,
    Figure,
    ForeignCpu,
    check,
    count_label,
    fmt_ms,
    fmt_ratio,
    fmt_share,
    load_average,
    machine,
    machine_table,
    median,
    paired_ratio,
    write_section,
)

SECTION = "coldstart"
CHILD = Path(__file__).resolve().parent / "coldstart_child.py"
EVENTS = REPO / "events"
COLLECTION = "default"
MODEL_DIR = REPO / "model_artifacts" / "all-MiniLM-L6-v2"
MODEL_FILES = (REPO / "model_artifacts" / "manifest.json", MODEL_DIR / "model.onnx", MODEL_DIR / "tokenizer.json")
MB = 1_000_000

# --- assumptions of the estimate (not measured here; each one says where it comes from) ---
# public.ecr.aws/lambda/python:3.12 (Amazon Linux 2023 minimal + Python 3.12 + the runtime
# interface client). No registry or Docker engine is reachable from this machine, so its
# size is an assumption of the order AWS's base images have, to be replaced by
# `docker image inspect` where one is; it does not enter the estimate, which only counts
# the bytes read at init (lazy loading fetches chunks on first read, not the image).
BASE_IMAGE = "public.ecr.aws/lambda/python:3.12"
BASE_IMAGE_BYTES = 560 * MB  # ASSUMPTION (unverified here)
# Lambda loads container images lazily, in chunks, from a tiered cache (Brooker et al.,
# "On-demand Container Loading in AWS Lambda", USENIX ATC 2023). Throughput of the
# first read of a chunk: ASSUMED, as a range: a chunk shared with other images or warm
# in the AZ cache comes fast, a never-seen image comes from S3.
LAZY_LOAD_MBPS = {"warm cache": 400.0, "cold (first deploy)": 60.0}
# S3 GET into /tmp from a 1,769 MB function, one stream: ASSUMED.
S3_DOWNLOAD_MBPS = 80.0
# Lambda's CPU is proportional to memory, ~one vCPU at 1,769 MB (AWS Lambda docs); below
# that, the 1-CPU figures are scaled by 1,769 / memory (ASSUMPTION: init is CPU-bound once
# the bytes are fetched, and one Lambda vCPU ~ one core of this machine).
VCPU_MB = 1769

log = logging.getLogger("bench.coldstart")


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    runs: dict[str, int]  # CPU mode -> timed fresh processes per ragserve function
    peer_runs: dict[str, int]  # ... per peer (PyTorch's import alone takes seconds)
    sizes: tuple[int, ...]  # collection sizes of the search function (its peer: at the largest)
    quick: bool

    @classmethod
    def full(cls) -> Config:
        return cls(runs={"1cpu": 5, "all": 3}, peer_runs={"1cpu": 3, "all": 2}, sizes=(10_000, 100_000),
                   quick=False)

    @classmethod
    def smoke(cls) -> Config:
        return cls(runs={"1cpu": 1, "all": 1}, peer_runs={"1cpu": 1, "all": 1}, sizes=(2_000,), quick=True)


MODES = {"1cpu": "1 CPU", "all": "all cores"}


@dataclass(frozen=True)
class Target:
    key: str
    label: str
    spec: dict  # the child's spec (bench/coldstart_child.py)
    env: dict[str, str] = field(default_factory=dict)
    peer_of: str | None = None  # the ragserve target this peer is compared with
    loads_model: bool = False
    data_dir: Path | None = None  # the collection it opens (not in the image: /tmp after S3)

    @property
    def is_peer(self) -> bool:
        return self.peer_of is not None


# --------------------------------------------------------------------------- data


def build_collections(root: Path, sizes: Sequence[int]) -> dict[int, dict]:
    """A ``default`` collection of each size in a local store under ``root/n<size>``
    (clustered vectors, ~120-word passages as texts), and an equivalent FAISS HNSW index
    (fp16 storage, M 16) for the peer. Reused if ``root`` already holds them."""
    from ragserve.documents import Document
    from ragserve.model.manifest import resolve_model
    from ragserve.segments.files import publish_segments
    from ragserve.settings import EncoderSettings
    from ragserve.snapshots.local import LocalSnapshotStore

    settings = EncoderSettings()
    model_id = resolve_model(settings.artifacts_dir, settings.model_id, settings.variant).id
    texts = corpus.passages(count=400, min_words=120)
    out = {}
    for n in sizes:
        data_dir = root / f"n{n}"
        store = LocalSnapshotStore(data_dir)
        faiss_path = root / f"faiss-hnsw-{n}.index"
        data = None
        if store.current(COLLECTION) is None:
            started = time.perf_counter()
            data = vectors.clustered(n)
            records = [Document(f"doc-{i}", texts[i % len(texts)], {"topic": f"t{i % 30}"}).to_record(model_id)
                       for i in range(n)]
            from ragserve.index.ann import IndexParams

            scratch = Path(tempfile.mkdtemp(prefix="build-", dir=root))
            publish_segments(store, COLLECTION, records, data.astype(np.float16), model_id=model_id,
                             params=IndexParams(), scratch_dir=scratch, segment_rows=n, hnsw_min_rows=1,
                             threads=os.cpu_count() or 1)
            shutil.rmtree(scratch, ignore_errors=True)
            log.info("built the %s collection in %.1fs", count_label(n), time.perf_counter() - started)
        if not faiss_path.exists():
            import faiss

            started = time.perf_counter()
            data = vectors.clustered(n) if data is None else data
            index = faiss.IndexHNSWSQ(vectors.DIMS, faiss.ScalarQuantizer.QT_fp16, 16, faiss.METRIC_INNER_PRODUCT)
            index.add(data)
            faiss.write_index(index, str(faiss_path))
            log.info("built the %s FAISS index in %.1fs", count_label(n), time.perf_counter() - started)
        version_dir = data_dir / "collections" / COLLECTION / "v1"
        out[n] = {"data_dir": data_dir, "faiss": faiss_path,
                  "files": {p.name: p.stat().st_size for p in version_dir.iterdir() if p.is_file()},
                  "faiss_bytes": faiss_path.stat().st_size}
    return out


def targets(collections: dict[int, dict], scratch: Path, dynamo_url: str) -> list[Target]:
    model = [str(p) for p in MODEL_FILES]

    def function(module: str, event: str, **spec) -> dict:
        return {"kind": "function", "module": module, "event": str(EVENTS / event) if event else None, **spec}

    out = [Target("embed", "embed", function("functions.embed.handler", "apigw_embed_post.json",
                                             read_files=model), loads_model=True)]
    for n, c in collections.items():
        out.append(Target(f"search-{count_label(n)}", f"search ({count_label(n)} docs)",
                          function("functions.search.handler", "apigw_search_post.json", read_files=model),
                          env={"RAGSERVE_DATA_DIR": str(c["data_dir"])}, loads_model=True, data_dir=c["data_dir"]))
    out += [
        Target("ingest", "ingest", function("functions.ingest.handler", "apigw_documents_post.json",
                                            read_files=model, model_ms_attr="WRITER.value.encoder.init_ms"),
               env={"RAGSERVE_DATA_DIR": str(scratch / "ingest")}, loads_model=True),
        Target("ops-health", "ops /health", function("functions.ops.handler", "apigw_health_get.json")),
        Target("ops-metrics", "ops /metrics", function("functions.ops.handler", "apigw_metrics_get.json")),
        Target("authorizer", "authorizer", function("functions.ops.authorizer", str(scratch / "authorizer.json")),
               env={"RAGSERVE_KEYS_TABLE": "ragserve-bench-keys", "AWS_ENDPOINT_URL_DYNAMODB": dynamo_url}),
        Target("peer-embed", "sentence-transformers", {"kind": "peer", "text": FIRST_TEXT}, peer_of="embed"),
    ]
    for n, c in list(collections.items())[-1:]:
        out.append(Target(f"peer-search-{count_label(n)}", f"sentence-transformers + FAISS ({count_label(n)})",
                          {"kind": "peer", "text": "How do I reset my password?", "faiss_index": str(c["faiss"])},
                          peer_of=f"search-{count_label(n)}"))
    return out


class FakeDynamo:
    """A loopback HTTP endpoint answering every DynamoDB call with ``{}`` (GetItem: no
    such key), so the authorizer's first invocation builds its real boto3 client, signs
    and sends a real request, and gets the Deny policy of an unknown key."""

    def __enter__(self) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = b"{}"
                self.send_response(200)
                self.send_header("content-type", "application/x-amz-json-1.0")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    interpreter_ms: float  # spawn -> the child's first statement
    init_ms: float  # first statement -> handler module imported (imports + init)
    model_ms: float  # product's ModelInitMs (nan: no model)
    index_ms: float  # product's IndexLoadMs (nan: no index)
    first_ms: float  # the first invocation
    total_ms: float  # spawn -> first answer
    process_ms: float  # spawn -> exit, from the parent
    rss_mb: float
    status: int | None
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def imports_ms(self) -> float:
        """Imports and the rest of the init: what is not model or index load."""
        return self.init_ms - _z(self.model_ms) - _z(self.index_ms)


def _z(x: float) -> float:
    return 0.0 if math.isnan(x) else x


def product_timings(stderr: str) -> tuple[float, float]:
    """ModelInitMs and IndexLoadMs as the product logged them (its JSON log lines)."""
    model_ms = index_ms = float("nan")
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "model loaded":
            model_ms = float(record["init_ms"])
        elif record.get("message") == "collection loaded":
            index_ms = float(record["load_ms"])
    return model_ms, index_ms


def cold_once(target: Target, env: dict[str, str], cpus: set[int] | None, profile: bool = False) -> Run:
    spec = {**target.spec, "profile": profile}
    argv = [sys.executable, *(["-X", "importtime"] if profile else []), str(CHILD), json.dumps(spec)]
    child_env = {**env, **target.env}

    def pin() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    started = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=child_env, capture_output=True, text=True, timeout=600, check=False,
                          preexec_fn=pin)  # noqa: PLW1509 - only sets the affinity, before exec
    ended = time.monotonic()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{target.key}: cold-start child failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    r = json.loads(lines[-1].removeprefix("BENCH_RESULT "))
    model_ms, index_ms = product_timings(proc.stderr)
    if "model_ms_attr" in r:
        model_ms = r["model_ms_attr"]
    if target.is_peer:  # the peer's phases are its own timestamps
        model_ms = (r["t_model"] - r["t_imported"]) * 1000.0
        index_ms = (r["t_index"] - r["t_model"]) * 1000.0 if "t_index" in r else float("nan")
    r["importtime"] = proc.stderr if profile else ""
    return Run(interpreter_ms=(r["t_start"] - started) * 1000.0, init_ms=(r["t_ready"] - r["t_start"]) * 1000.0,
               model_ms=model_ms, index_ms=index_ms, first_ms=r.get("first_ms", float("nan")),
               total_ms=(r.get("t_first", r["t_ready"]) - started) * 1000.0, process_ms=(ended - started) * 1000.0,
               rss_mb=r["maxrss_kb"] / 1024.0, status=r.get("status"), raw=r)


def child_env(pycache: str) -> dict[str, str]:
    """Bytecode cached (the image runs compileall) under a private prefix, never in the
    tree; no network for the peers; fake AWS credentials (no AWS call leaves the box)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "RAGSERVE_DATA_DIR")}
    env.update(PYTHONPYCACHEPREFIX=pycache, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error", AWS_DEFAULT_REGION="us-east-1",
               AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", POWERTOOLS_TRACE_DISABLED="1",
               POWERTOOLS_METRICS_NAMESPACE="ragserve")
    return env


def bench_runs(tgts: Sequence[Target], env: dict[str, str], cfg: Config) -> tuple[dict, dict[str, float]]:
    """Every target in every mode, ``cfg.runs[mode]`` times, targets alternating."""
    for t in tgts:  # untimed: byte-compile and warm the page cache
        cold_once(t, env, None)
    runs: dict[str, dict[str, list[Run]]] = {m: {t.key: [] for t in tgts} for m in cfg.runs}
    foreign = {}
    for mode, count in cfg.runs.items():
        cpus = {sorted(os.sched_getaffinity(0))[0]} if mode == "1cpu" else None
        started = time.perf_counter()
        with ForeignCpu() as meter:
            for i in range(count):
                for t in tgts:
                    if i < (cfg.peer_runs[mode] if t.is_peer else count):
                        runs[mode][t.key].append(cold_once(t, env, cpus))
        foreign[mode] = meter.share
        log.info("%s: %d x %d fresh processes in %.0fs (other processes %s CPU)", MODES[mode], count, len(tgts),
                 time.perf_counter() - started, fmt_share(meter.share))
        for t in tgts:
            rs = runs[mode][t.key]
            log.info("  %-34s total %6.0f ms, RSS %4.0f MB", t.label, median([r.total_ms for r in rs]),
                     median([r.rss_mb for r in rs]))
    return runs, foreign


# --------------------------------------------------------------------------- profile


@dataclass
class Profile:
    imports: dict[str, float]  # group -> self ms under -X importtime
    top: list[tuple[str, float]]  # third-party top-level packages, self ms
    layers: dict[str, list[int]]  # image layer -> [files, bytes, bytes touched]
    io: dict[str, int]


def classify_module(name: str) -> str:
    top = name.split(".")[0]
    if top == "ragserve":
        return "ragserve"
    if top == "functions":
        return "ragserve"
    if top in sys.stdlib_module_names or top.startswith("_") and top[1:] in sys.stdlib_module_names:
        return "stdlib"
    return "third-party"


def parse_importtime(stderr: str) -> tuple[dict[str, float], dict[str, float]]:
    groups: dict[str, float] = {}
    third: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _cumulative, name = line[len("import time:"):].split("|")
        ms, name = int(self_us) / 1000.0, name.strip()
        group = classify_module(name)
        groups[group] = groups.get(group, 0.0) + ms
        if group == "third-party":
            top = name.split(".")[0]
            third[top] = third.get(top, 0.0) + ms
    return groups, third


def site_packages() -> str:
    import sysconfig

    return os.path.realpath(sysconfig.get_paths()["purelib"])


LAYERS = ("base image (Python, stdlib, system libs)", "dependencies (pip --target)", "model", "ragserve + functions",
          "snapshot in /tmp (not in the image)")


def classify_file(path: str, target: Target, pycache: str) -> str | None:
    repo = str(REPO)
    if target.data_dir is not None and path.startswith(os.path.realpath(target.data_dir)):
        return LAYERS[4]
    if path.startswith(str(REPO / "model_artifacts")):
        return LAYERS[2]
    if path.startswith(os.path.realpath(pycache)):  # bytecode: where its source lives
        path = path[len(os.path.realpath(pycache)):]
    if path.startswith(site_packages()):
        return LAYERS[1]
    if path.startswith((repo + "/layers", repo + "/functions")):
        return LAYERS[3]
    if path.startswith((repo + "/bench", "/tmp", tempfile.gettempdir())):
        return None  # the benchmark's own child script, scratch data
    return LAYERS[0]


def profile_target(target: Target, env: dict[str, str], pycache: str) -> Profile:
    run = cold_once(target, env, None, profile=True)
    groups, third = parse_importtime(run.raw["importtime"])
    layers: dict[str, list[int]] = {name: [0, 0, 0] for name in LAYERS}
    for path, (size, resident) in run.raw["files"].items():
        layer = classify_file(path, target, pycache)
        if layer is None:
            continue
        layers[layer][0] += 1
        layers[layer][1] += size
        layers[layer][2] += resident or size  # a mapped file: its resident pages; a read one: all of it
    return Profile(groups, sorted(third.items(), key=lambda kv: -kv[1])[:4], layers, run.raw["io"])


# --------------------------------------------------------------------------- image size


def requirement_closure() -> list[str]:
    """functions/requirements.txt and everything it pulls in, as installed in this venv."""
    import importlib.metadata

    from packaging.requirements import Requirement

    todo = [Requirement(line.split("#")[0].strip()) for line in
            (REPO / "functions" / "requirements.txt").read_text().splitlines() if line.split("#")[0].strip()]
    seen: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req = todo.pop()
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(req.name)
        except importlib.metadata.PackageNotFoundError:
            log.warning("%s is not installed here: left out of the image size", req.name)
            continue
        seen[name] = dist
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in ("", *req.extras)):
                todo.append(sub)
    return sorted(seen)


def dist_bytes(name: str) -> int:
    import importlib.metadata

    dist = importlib.metadata.distribution(name)
    total = 0
    for f in dist.files or []:
        path = Path(dist.locate_file(f))
        if path.is_file():
            total += path.stat().st_size
    return total


def tree_bytes(root: Path) -> tuple[int, int]:
    """Files and bytes under ``root`` as the build context sends them (no __pycache__)."""
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return len(files), sum(p.stat().st_size for p in files)


def compiled_bytes(roots: Sequence[Path]) -> int:
    with tempfile.TemporaryDirectory(prefix="bench-compileall-") as tmp:
        total = 0
        for root in roots:
            for i, source in enumerate(sorted(root.rglob("*.py"))):
                target = Path(tmp) / f"{i}-{source.name}c"
                py_compile.compile(str(source), cfile=str(target), doraise=True)
                total += target.stat().st_size
    return total


@dataclass
class ImageLayer:
    name: str
    bytes: int
    detail: str


def image_layers() -> list[ImageLayer]:
    deps = requirement_closure()
    dep_sizes = {d: dist_bytes(d) for d in deps}
    biggest = ", ".join(f"{d} {b / MB:.0f}" for d, b in sorted(dep_sizes.items(), key=lambda kv: -kv[1])[:5])
    model = sum(p.stat().st_size for p in MODEL_FILES)
    code_files, code = tree_bytes(REPO / "layers" / "ragserve")
    fn_files, fn = tree_bytes(REPO / "functions")
    return [
        ImageLayer(f"`FROM {BASE_IMAGE}`", BASE_IMAGE_BYTES, "**assumption** (no registry or Docker engine here)"),
        ImageLayer("`RUN pip install --target` functions/requirements.txt", sum(dep_sizes.values()),
                   f"measured: {len(deps)} distributions as installed in this venv (RECORD files, incl. bytecode); "
                   f"largest (MB): {biggest}"),
        ImageLayer("`COPY` model (manifest, model.onnx, tokenizer.json)", model, "measured: the three files"),
        ImageLayer("`COPY layers/ragserve/`", code, f"measured: {code_files} files (no __pycache__: .dockerignore)"),
        ImageLayer("`COPY functions/`", fn, f"measured: {fn_files} files"),
        ImageLayer("`RUN python -m compileall` ragserve + functions",
                   compiled_bytes([REPO / "layers" / "ragserve", REPO / "functions"]),
                   f"measured: bytecode compiled here (Python {sys.version_info.major}.{sys.version_info.minor})"),
    ]


# --------------------------------------------------------------------------- report


@dataclass
class Results:
    cfg: Config
    machine: dict[str, str]
    load_before: str
    load_after: str
    targets: list[Target]
    runs: dict[str, dict[str, list[Run]]]
    foreign: dict[str, float]
    profiles: dict[str, Profile]
    collections: dict[int, dict]
    image: list[ImageLayer]
    elapsed_s: float
    output: Path | None


PHASES = (("interpreter", "interpreter start"), ("imports", "imports + other init"), ("model", "model load"),
          ("index", "index load"), ("first", "first invocation"))


def phase_medians(rs: Sequence[Run]) -> dict[str, float]:
    def med(values: list[float]) -> float:
        values = [v for v in values if not math.isnan(v)]
        return median(values) if values else float("nan")

    return {"interpreter": med([r.interpreter_ms for r in rs]), "imports": med([r.imports_ms for r in rs]),
            "model": med([r.model_ms for r in rs]), "index": med([r.index_ms for r in rs]),
            "first": med([r.first_ms for r in rs]), "total": med([r.total_ms for r in rs]),
            "process": med([r.process_ms for r in rs]), "rss": med([r.rss_mb for r in rs]),
            "init": med([r.init_ms for r in rs])}


def render(r: Results) -> str:
    out = ["## Cold start", ""]
    out.append(f"_Generated by `bench/coldstart.py`{' **--quick (smoke run: not for citing)**' if r.cfg.quick else ''}"
               f" in {r.elapsed_s / 60:.1f} min. Do not edit between the markers: the next run rewrites it._")
    out += ["", *machine_table(r.machine, r.load_before, r.load_after)]
    runs = ", ".join(f"{n} on {MODES[m]}" for m, n in r.cfg.runs.items())
    sizes = "; ".join(f"{count_label(n)}: " + ", ".join(f"{k} {v / MB:.1f} MB" for k, v in sorted(c["files"].items()))
                      for n, c in r.collections.items())
    out += ["", "### Method", "",
            (f"Every target starts in a fresh process (`bench/coldstart_child.py`): {runs} per target, targets "
             "alternating, after one untimed run each to byte-compile and warm the page cache (bytecode is cached, "
             "as the image's `compileall` layer does; so is the page cache, which Lambda's is not: see the "
             "estimate). *1 CPU*: the child is pinned to one CPU (`sched_setaffinity` before exec), which is also "
             "what ragserve sizes its encoder's pool from (`available_cpus()`), as a 1,769 MB function gets ~1 vCPU. "
             "Phases: *interpreter start* = spawn → the child's first statement (parent and child share "
             "`CLOCK_MONOTONIC`); *imports + other init* = importing the handler module (which runs the "
             "function's init at module scope) minus the product's own *model load* (`ModelInitMs`: load, sha256 "
             "verify, session, warm-up; from its `model loaded` log line; ingest does not log it, so there it is "
             "the encoder's `init_ms`) and *index load* (`IndexLoadMs`: sha256 verify of the snapshot, "
             "memory-mapped `view`, documents parsed; from its `collection loaded` line); *first invocation* = "
             "`lambda_handler(event)` on a sample event; *total* = spawn → first answer. "
             "Peak RSS: the child's `VmHWM` (reset at exec, unlike `ru_maxrss`). "
             "Medians over runs. Peers run the same way, their phases timed by the child: import, model load, "
             "`faiss.read_index`, first encode (+ first query)."),
            "",
            ("Events: embed `apigw_embed_post.json`; search `apigw_search_post.json` against a `default` collection "
             "built once with the local store (`--data-dir` keeps it for the next run; clustered 384-d vectors from "
             "`bench/vectors.py`, "
             f"~120-word passages from `bench/corpus.py` as texts, f16, M 16; files: {sizes}); the FAISS peer reads "
             "an `IndexHNSWSQ` (fp16 storage, M 16, inner product) of the same vectors; ingest "
             "`apigw_documents_post.json` (local queue); ops `apigw_health_get.json` and `apigw_metrics_get.json` "
             "(local metrics source: the AWS one calls CloudWatch); authorizer: a REQUEST event with an unknown "
             "key, the keys table served by a loopback stub that answers `{}`, so the first invocation builds "
             "its real boto3 client and sends a real signed request."),
            "",
            (f"CPU used by other processes meanwhile: {fmt_share(r.foreign.get('1cpu', float('nan')))} of the "
             f"machine on the 1-CPU runs, {fmt_share(r.foreign.get('all', float('nan')))} on the all-core runs.")]
    out += render_phases(r)
    if r.output is not None:
        out += ["", plot_phases(r)]
    out += render_imports(r)
    out += render_image(r)
    out += render_estimate(r)
    out += render_checks(r)
    out += ["", "### How to reproduce", "",
            "`make bench-coldstart` (runs `python bench/coldstart.py`; needs the `bench` extra; `--quick` for a "
            "smoke run that writes nothing)."]
    return "\n".join(out)


def render_phases(r: Results) -> list[str]:
    out = ["", "### Phases per function (ms, medians)", "",
           ("| Function | CPUs | interpreter | imports + init | model load | index load | first invocation | "
            "**total** | process (parent) | peak RSS MB | total vs peer | RSS vs peer | runs |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {t.key: t for t in r.targets}
    peers = {t.peer_of: t.key for t in r.targets if t.is_peer}
    for t in r.targets:
        for mode in r.cfg.runs:
            rs = r.runs[mode][t.key]
            m = phase_medians(rs)
            runs = len(rs)
            vs_total = vs_rss = "—"
            if t.key in peers:
                theirs = r.runs[mode][peers[t.key]]
                rs = rs[:len(theirs)]  # the peer ran in the first rounds only: pair those
                vs_total = fmt_ratio(paired_ratio([x.total_ms for x in theirs], [x.total_ms for x in rs]))
                vs_rss = fmt_ratio(paired_ratio([x.rss_mb for x in theirs], [x.rss_mb for x in rs]))
            label = t.label if not t.is_peer else f"↳ peer of {by[t.peer_of].label}: {t.label}"
            out.append(f"| {label} | {MODES[mode]} | {fmt_ms(m['interpreter'])} | {fmt_ms(m['imports'])} | "
                       f"{fmt_ms(m['model'])} | {fmt_ms(m['index'])} | {fmt_ms(m['first'])} | "
                       f"**{fmt_ms(m['total'])}** | {fmt_ms(m['process'])} | {m['rss']:.0f} | {vs_total} | "
                       f"{vs_rss} | {runs} |")
    out += ["", "*vs peer*: the peer's figure over ragserve's, median of the per-run ratios (>1: ragserve is "
            "faster / smaller). *process*: spawn → exit, timed by the parent (includes interpreter shutdown)."]
    return out


def render_imports(r: Results) -> list[str]:
    groups = ("stdlib", "third-party", "ragserve")
    out = ["", "### Where the import time goes (one run per function under `-X importtime`, all cores)", "",
           ("Self time of every module, summed by group (importtime's own overhead inflates these by ~10-20%; read "
            "them as shares; the machine's load moves them too). The first invocation is included (the "
            "authorizer imports boto3 there)."), "",
           "| Function | " + " | ".join(groups) + " | largest third-party (ms) |",
           "|---|" + "---:|" * len(groups) + "---|"]
    for t in r.targets:
        p = r.profiles.get(t.key)
        if p is None:
            continue
        top = ", ".join(f"{name} {ms:.0f}" for name, ms in p.top)
        out.append(f"| {t.label} | " + " | ".join(fmt_ms(p.imports.get(g, 0.0)) for g in groups) + f" | {top} |")
    return out


def image_read(p: Profile, touched: bool = False) -> int:
    """Bytes of image files the process read or mapped at init: whole files, or only
    the resident pages of the mapped ones (``touched``)."""
    return sum(p.layers[name][2 if touched else 1] for name in LAYERS[:4])


def render_image(r: Results) -> list[str]:
    total = sum(layer.bytes for layer in r.image)
    out = ["", "### The image, per Dockerfile layer (estimated: no Docker engine here)", "",
           "| Layer | MB (uncompressed) | how it is known |", "|---|---:|---|"]
    out += [f"| {layer.name} | {layer.bytes / MB:,.1f} | {layer.detail} |" for layer in r.image]
    app = total - r.image[0].bytes
    out.append(f"| **total** | **{total / MB:,.0f}** | ragserve's own layers: {app / MB:,.0f} MB |")
    out += ["", ("Sizes are of the files as installed for this machine (x86_64, Python "
                 f"{sys.version_info.major}.{sys.version_info.minor}; the image has Python 3.12, whose wheels differ "
                 "little in size)."), "",
            "**What is read at init** (one profiled run per function: every file it imported, opened from Python "
            "or memory-mapped, from `sys.modules`, an audit hook and `/proc/self/smaps`, plus the model files read "
            "natively. MB of whole files (files); *touched*: the mapped files counted by their resident pages "
            "only, which is closer to what a lazy loader fetches; *rchar*: bytes the process read through "
            "`read()` (`/proc/self/io`), snapshot included, mapped pages not):", "",
            "| Function | " + " | ".join(LAYERS) + " | image MB, whole files | image MB, touched | share of the "
            "image | rchar MB |",
            "|---|" + "---:|" * len(LAYERS) + "---:|---:|---:|---:|"]
    for t in r.targets:
        p = r.profiles.get(t.key)
        if p is None or t.is_peer:
            continue
        cells = [f"{p.layers[n][1] / MB:.1f} ({p.layers[n][0]} files)" for n in LAYERS]
        read = image_read(p)
        out.append(f"| {t.label} | " + " | ".join(cells) + f" | {read / MB:.1f} | "
                   f"**{image_read(p, touched=True) / MB:.1f}** | {read / total:.0%} | "
                   f"{p.io.get('rchar', 0) / MB:.1f} |")
    return out


def snapshot_bytes(r: Results) -> dict[str, tuple[int, str]]:
    """Snapshot bytes to download per size: measured at the built sizes; 1M scaled
    linearly from the largest one (DESIGN §4 measured the 1M f16 index file at 874 MB)."""
    out = {count_label(n): (sum(c["files"].values()), "measured") for n, c in r.collections.items()}
    if 1_000_000 not in r.collections:
        n, c = max(r.collections.items())
        out["1M"] = (sum(c["files"].values()) * 1_000_000 // n, f"scaled from {count_label(n)}")
    return out


def stack_memory() -> dict[str, int]:
    """Memory (MB) per function in the stack's defaults (infra/config.py)."""
    sys.path.insert(0, str(REPO))
    from infra.config import FUNCTIONS, StageConfig

    default = StageConfig(name="default").memory_mb
    return {f.name: f.memory_mb or default for f in FUNCTIONS}


def function_of(key: str) -> str:
    return key.split("-")[0]  # search-10k -> search, ops-health -> ops


def render_estimate(r: Results) -> list[str]:
    out = ["", "### Estimated Lambda cold start (1 CPU figures)", "",
           ("estimate = image bytes touched at init ÷ lazy-load throughput (**assumed**: "
            + ", ".join(f"{k} {v:g} MB/s" for k, v in LAZY_LOAD_MBPS.items())
            + "; Lambda fetches image chunks on first read, Brooker et al., USENIX ATC 2023) + the 1-CPU interpreter "
            "start, init and first invocation **measured** above (assumed: one Lambda vCPU ≈ one core here). Not "
            "included: creating the sandbox and starting the runtime interface client (platform overhead), and the "
            "page cache, warm here and cold there (the fetch term stands for it)."), "",
           ("Memory is the stack's default per function (`infra/config.py`); Lambda's CPU is proportional to it "
            f"(~1 vCPU at {VCPU_MB:,} MB), so below that the measured 1-CPU time is scaled by {VCPU_MB:,} ÷ memory "
            "(**assumed** CPU-bound)."), "",
           "| Function | memory MB | image MB touched | fetch s (" + " / ".join(LAZY_LOAD_MBPS) + ") | "
           "start + init + first s (measured, 1 CPU) | CPU scale | **estimate s** |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    memory = stack_memory()
    estimates = {}
    for t in r.targets:
        p = r.profiles.get(t.key)
        if p is None or t.is_peer:
            continue
        e = estimate(r, t, p, memory)
        estimates[t.key] = e
        out.append(f"| {t.label} | {e.memory_mb:,} | {e.read_mb:.1f} | " + " / ".join(f"{f:.2f}" for f in e.fetch_s)
                   + f" | {e.measured_s:.2f} | {e.scale:.2f}× | **{e.low_s:.2f} – {e.high_s:.2f}** |")
    search_keys = [t.key for t in r.targets if t.key.startswith("search-")]
    if search_keys:
        sizes = {f"search-{count_label(n)}": n for n in r.collections}
        largest = max(search_keys, key=sizes.__getitem__)
        base = phase_medians(r.runs["1cpu"][largest])
        out += ["", (f"Search adds the snapshot's S3 → /tmp download before its index load (**assumed** "
                     f"{S3_DOWNLOAD_MBPS:g} MB/s, one stream), and its index load grows with the snapshot (sha256 of "
                     "every file, documents parsed). With the download, a search cold start without provisioned "
                     "concurrency (the 1M row is extrapolated: the largest measured size's estimate, plus its index "
                     "load scaled linearly, plus the download):"), "",
                "| Snapshot | MB (index + vectors + docs) | download s (assumed throughput) | **search cold start s** "
                "| |", "|---|---:|---:|---:|---|"]
        for label, (size, how) in snapshot_bytes(r).items():
            download = size / MB / S3_DOWNLOAD_MBPS
            key = f"search-{label}"
            if key in estimates:
                e = estimates[key]
                low, high = e.low_s + download, e.high_s + download
            else:
                e = estimates[largest]
                extra = _z(base["index"]) / 1000.0 * (size / sum(r.collections[sizes[largest]]["files"].values()) - 1)
                low, high = e.low_s + extra + download, e.high_s + extra + download
            out.append(f"| {label} | {size / MB:,.0f} | {download:.1f} | **{low:.1f} – {high:.1f}** | {how} |")
        out += ["", (f"At 1M documents the download (~{snapshot_bytes(r)['1M'][0] / MB / S3_DOWNLOAD_MBPS:.0f} s "
                     "assumed) outweighs everything else, and the index load measured at "
                     f"{count_label(max(r.collections))} ({fmt_ms(base['index'])} ms) grows about linearly with it. "
                     "The stack configures provisioned concurrency for the search (and embed) function in prod: its "
                     "instances run this init before they take traffic, so callers never wait for it; only a burst "
                     "past the provisioned instances, or a deploy without them, pays it.")]
    out += render_findings(r, estimates)
    return out


@dataclass(frozen=True)
class Estimate:
    memory_mb: int
    read_mb: float  # image bytes touched at init
    fetch_s: tuple[float, ...]  # per assumed lazy-load throughput
    measured_s: float  # 1 CPU: spawn -> first answer
    scale: float  # CPU share below one vCPU

    @property
    def low_s(self) -> float:
        return self.measured_s * self.scale + min(self.fetch_s)

    @property
    def high_s(self) -> float:
        return self.measured_s * self.scale + max(self.fetch_s)


def estimate(r: Results, t: Target, p: Profile, memory: dict[str, int]) -> Estimate:
    read = image_read(p, touched=True) / MB
    mem = memory.get(function_of(t.key), VCPU_MB)
    return Estimate(mem, read, tuple(read / mbps for mbps in LAZY_LOAD_MBPS.values()),
                    phase_medians(r.runs["1cpu"][t.key])["total"] / 1000.0, max(1.0, VCPU_MB / mem))


def render_findings(r: Results, estimates: dict[str, Estimate]) -> list[str]:
    """What the figures say about the product (numbers from this run)."""
    one = {k: phase_medians(v) for k, v in r.runs["1cpu"].items()}
    out = ["", "### What the figures say", ""]
    if "embed" in one and "ops-health" in one:
        out.append(f"- Imports dominate every function that has no big index: embed spends "
                   f"{fmt_ms(one['embed']['imports'])} ms importing and initialising besides "
                   f"{fmt_ms(one['embed']['model'])} ms of model load (verify, session, warm-up); ops, with no "
                   f"model, still spends {fmt_ms(one['ops-health']['imports'])} ms (Powertools' event_handler "
                   "package imports every resolver, asyncio included, and pydantic).")
    if "authorizer" in one and "authorizer" in estimates:
        a = one["authorizer"]
        out.append(f"- The authorizer's first invocation ({fmt_ms(a['first'])} ms of its {fmt_ms(a['total'])} ms) "
                   "imports boto3, builds the DynamoDB client (lazily, on first use) and sends one request (to a "
                   "loopback stub here); at its "
                   f"{estimates['authorizer'].memory_mb} MB (~{1 / estimates['authorizer'].scale:.2f} vCPU) the "
                   f"estimate is {estimates['authorizer'].low_s:.1f}–{estimates['authorizer'].high_s:.1f} s, the "
                   "slowest of the small functions, on every request that meets a cold authorizer (API Gateway "
                   "caches its answers per key). More memory for it (1,769 MB costs ~3.5× per ms but runs ~3.5× "
                   "shorter) is a configuration lever to weigh.")
    if "ingest" in one and "ops-health" in one:
        i = one["ingest"]
        out.append(f"- ingest loads the model at init ({fmt_ms(i['model'])} ms, and ~"
                   f"{i['rss'] - one['ops-health']['rss']:.0f} MB of its "
                   f"{i['rss']:.0f} MB peak RSS over ops) because the same function consumes the queue; its HTTP "
                   "routes (accept into the queue) never use it. Loading the writer on the first queue batch "
                   "instead would cut the API cold start by that much and move the cost to the asynchronous "
                   "consumer; not done here (ingest has no provisioned concurrency, so nothing would be hidden "
                   "either way).")
    return out


def render_checks(r: Results) -> list[str]:
    out = ["", "### Checks", ""]
    for mode in r.cfg.runs:
        m = phase_medians(r.runs[mode]["embed"])
        first = (m["init"] + m["first"]) / 1000.0
        out.append(f"- {check(first < TARGET_COLD_WALL_S)}: embed import + first embed on {MODES[mode]} "
                   f"{first:.3f} s (target < {TARGET_COLD_WALL_S:g} s, as in `bench/embed.py`)")
        out.append(f"- {check(m['rss'] < TARGET_COLD_RSS_MB)}: embed peak RSS on {MODES[mode]} {m['rss']:.0f} MB "
                   f"(target < {TARGET_COLD_RSS_MB:g} MB)")
    bad = [f"{t.key} ({mode}): {run.status}" for mode in r.cfg.runs for t in r.targets
           for run in r.runs[mode][t.key] if run.status is None or not 200 <= run.status < 300]
    out.append(f"- {check(not bad)}: every first invocation answered 2xx"
               + (f" (not: {', '.join(bad)})" if bad else ""))
    over = [f"{t.key} ({mode})" for mode in r.cfg.runs for t in r.targets if not t.is_peer
            for run in r.runs[mode][t.key] if _z(run.model_ms) + _z(run.index_ms) > run.init_ms]
    out.append(f"- {check(not over)}: the product's own ModelInitMs + IndexLoadMs never exceed the init wall time "
               "the child measured around the import" + (f" (not: {', '.join(over)})" if over else ""))
    return out


COLORS = {"interpreter": "tab:gray", "imports": "tab:blue", "model": "tab:orange", "index": "tab:green",
          "first": "tab:red"}


def plot_phases(r: Results) -> str:
    figure = Figure(SECTION, "phases", "Cold start by phase, 1 CPU (ms, lower is better)", r.output,
                    size=(8.0, 0.45 * len(r.targets) + 1.4))
    with figure as (_fig, ax):
        labels = [t.label for t in r.targets][::-1]
        meds = [phase_medians(r.runs["1cpu"][t.key]) for t in r.targets][::-1]
        left = np.zeros(len(labels))
        for key, name in PHASES:
            widths = np.array([_z(m[key]) for m in meds])
            ax.barh(labels, widths, left=left, color=COLORS[key], label=name)
            left += widths
        for y, (end, m) in enumerate(zip(left, meds, strict=True)):  # the label: the median total
            ax.text(end, y, f" {m['total']:,.0f}", va="center", fontsize=7)
        ax.set_xlabel("ms")
        ax.set_xlim(0, left.max() * 1.15)
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(fontsize=7, loc="upper right")
    return figure.markdown


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short smoke run; prints the section, writes nothing")
    parser.add_argument("--output", type=Path, default=None,
                        help=f"markdown file to update (default: {DEFAULT_OUTPUT.relative_to(REPO)}; "
                             "none with --quick)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep the built collections here and reuse them (default: a temporary directory)")
    parser.add_argument("--rerender", type=Path, default=None,
                        help="render the raw results a previous run saved (no measurement)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    cfg = Config.smoke() if args.quick else Config.full()
    output = args.output if args.output is not None else (None if args.quick else DEFAULT_OUTPUT)

    if args.rerender is not None:
        results = pickle.loads(args.rerender.read_bytes())  # noqa: S301 - a file this script wrote
        results.output = output if not results.cfg.quick else args.output
        return publish(results)
    started = time.perf_counter()
    load_before = load_average()
    info = machine(("onnxruntime", "tokenizers", "numpy", "usearch", "aws-lambda-powertools", "boto3", "torch",
                    "sentence-transformers", "faiss-cpu"))
    with tempfile.TemporaryDirectory(prefix="bench-coldstart-") as tmp:
        scratch = Path(tmp)
        data_root = args.data_dir or scratch / "collections"
        data_root.mkdir(parents=True, exist_ok=True)
        collections = build_collections(data_root, cfg.sizes)
        (scratch / "authorizer.json").write_text(json.dumps({
            "type": "REQUEST", "methodArn": "arn:aws:execute-api:us-east-1:000000000000:api/v1/POST/v1/search",
            "headers": {"x-api-key": "rs_bench_unknown_key"}}))
        pycache = str(scratch / "pycache")
        env = child_env(pycache)
        with FakeDynamo() as dynamo_url:
            tgts = targets(collections, scratch, dynamo_url)
            log.info("cold start: %d targets, %s fresh processes each after one untimed run", len(tgts),
                     " + ".join(f"{n} ({MODES[m]})" for m, n in cfg.runs.items()))
            runs, foreign = bench_runs(tgts, env, cfg)
            profiles = {t.key: profile_target(t, env, pycache) for t in tgts if not t.is_peer}
    log.info("image size per layer")
    image = image_layers()
    results = Results(cfg, info, load_before, load_average(), tgts, runs, foreign, profiles, collections, image,
                      time.perf_counter() - started, output)
    if output is not None:  # kept to re-render (--rerender) without re-running; --quick writes nothing
        saved = Path(tempfile.gettempdir()) / "bench-coldstart-results.pickle"
        saved.write_bytes(pickle.dumps(results))
        log.info("raw results in %s", saved)
    return publish(results)


def publish(results: Results) -> int:
    section = render(results)
    if results.output is None:
        print(section)
    else:
        write_section(results.output, SECTION, section)
        log.info("wrote %s", results.output)
    m = phase_medians(results.runs["1cpu"]["embed"])
    log.info("done in %.1f min: embed on 1 CPU total %.0f ms, RSS %.0f MB", results.elapsed_s / 60, m["total"],
             m["rss"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
