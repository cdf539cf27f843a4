"""A progress line for long CLI jobs: a live bar with rate and ETA on a terminal,
a structured log line every few seconds otherwise."""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    def __init__(self, total: int, label: str, *, stream=None, log=None, every: float = 5.0) -> None:
        self.total = total
        self.label = label
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.log = log
        self.every = every
        self.started = time.perf_counter()
        self._last = 0.0

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        return (f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done:,}/{self.total:,} "
                f"{rate:,.0f}/s ETA {_duration(eta)}")

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif self.log and (now - self._last >= self.every or self.done >= self.total):
            self._last = now
            self.log.info("progress", extra={"task": self.label, "done": self.done, "total": self.total})

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
