"""Checking a collection's store and repairing its pointer (``ragserve collections
verify`` / ``repair``; docs/ARCHITECTURE.md section 5 has the procedure).

``verify`` reads ``CURRENT``, the live manifest and every blob it references (sha256),
and names the newest stored version that verifies whole. ``repair`` points ``CURRENT``
at a version that verifies: by default only when ``CURRENT`` itself is unreadable (the
newest verifying version is then the live one, nothing is lost); pointing it at an
older version (``to_version``) is explicit, as documents only the newer versions hold
are dropped (on S3, restoring the damaged object's previous version loses nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ragserve.snapshots.errors import SnapshotError
from ragserve.snapshots.store import SnapshotStore


@dataclass
class VerifyReport:
    collection: str
    current: int | None = None
    current_problem: str | None = None
    problems: list[str] = field(default_factory=list)  # of the live version
    newest_good: int | None = None

    @property
    def ok(self) -> bool:
        return self.current_problem is None and not self.problems

    def to_dict(self) -> dict:
        return {"collection": self.collection, "ok": self.ok, "current": self.current,
                "current_problem": self.current_problem, "problems": self.problems,
                "newest_good": self.newest_good}


def version_problems(store: SnapshotStore, collection: str, version: int, cache_dir: Path) -> list[str]:
    """Why ``version`` cannot be served whole; empty if it can."""
    try:
        manifest = store.manifest(collection, version)
    except SnapshotError as exc:
        return [exc.message]
    problems = []
    for segment in manifest.segments:
        for ref in segment.blobs():
            try:
                store.blob(collection, ref, cache_dir)
            except SnapshotError as exc:
                problems.append(f"segment {segment.id}: {exc.message}")
    return problems


def verify_collection(store: SnapshotStore, collection: str, cache_dir: Path) -> VerifyReport:
    report = VerifyReport(collection)
    try:
        report.current = store.current(collection)
    except SnapshotError as exc:
        report.current_problem = exc.message
    if report.current is not None:
        report.problems = version_problems(store, collection, report.current, cache_dir)
    for version in sorted(store.versions(collection), reverse=True):
        if version == report.current and not report.problems:
            report.newest_good = version
            break
        if not version_problems(store, collection, version, cache_dir):
            report.newest_good = version
            break
    return report


def repair_collection(store: SnapshotStore, collection: str, cache_dir: Path, *,
                      to_version: int | None = None) -> VerifyReport:
    """Point ``CURRENT`` at a version that verifies (see the module docstring); the
    report of the collection afterwards. ``ValueError`` if there is nothing safe to do."""
    report = verify_collection(store, collection, cache_dir)
    if to_version is not None:
        problems = version_problems(store, collection, to_version, cache_dir)
        if problems:
            raise ValueError(f"v{to_version} does not verify: {'; '.join(problems)}")
        store.set_current(collection, to_version)
    elif report.ok:
        return report
    elif report.current_problem is None:
        raise ValueError(f"v{report.current} is damaged ({'; '.join(report.problems)}); restore the damaged "
                         f"file, or choose an older version explicitly (newest that verifies: "
                         f"v{report.newest_good}) with --to-version, dropping what only newer versions hold")
    elif report.newest_good is None:
        raise ValueError("CURRENT is unreadable and no stored version verifies")
    else:
        store.set_current(collection, report.newest_good)
    return verify_collection(store, collection, cache_dir)
