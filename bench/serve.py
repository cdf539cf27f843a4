"""``ragserve serve`` as a subprocess for benchmarks: a fresh data directory, given keys
and settings, a free port on 127.0.0.1, stderr drained all the time (a full pipe would
block the server's logging), ready once ``/health`` answers 200."""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("bench.serve")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServe:
    """``with LocalServe({"RAGSERVE_API_KEYS": ...}) as server: server.url``"""

    def __init__(self, env: dict[str, str], *, startup_timeout: float = 300.0, keep_lines: int = 2000) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="ragserve-bench-serve-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, "RAGSERVE_DATA_DIR": str(self.data_dir),
                     "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), str(REPO / "layers"),
                                                                os.environ.get("PYTHONPATH", "")])),
                     **env}
        self._timeout = startup_timeout
        self.tail: deque[str] = deque(maxlen=keep_lines)  # the last lines of the server's stderr
        self.lines = 0
        self.errors = 0  # lines logged at ERROR or above
        self.error_lines: list[str] = []  # the first 20 of them
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, ""):
            self.tail.append(line)
            self.lines += 1
            if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line:
                self.errors += 1
                if len(self.error_lines) < 20:
                    self.error_lines.append(line)

    def __enter__(self) -> LocalServe:
        self.proc = subprocess.Popen([sys.executable, "-m", "ragserve.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=self._env, cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._drain, name="serve-stderr", daemon=True)
        self._reader.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.__exit__()
            raise
        log.info("server ready", extra={"url": self.url, "pid": self.pid})
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("ragserve serve exited during start:\n" + "".join(self.tail)[-3000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"ragserve serve not healthy after {self._timeout:.0f} s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        shutil.rmtree(self.data_dir, ignore_errors=True)
