"""The benchmark report machinery, so `make bench` cannot rot between its (long) runs:
the search benchmark's smoke run writes its section and plot into a scratch copy of
the report, and the summary gathers every check of that report, FAILs included,
leaving everything outside the markers as it was."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def report(tmp_path_factory, repo_root):
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nWritten by hand, kept.\n\n<!-- summary:start -->\n<!-- summary:end -->\n"
                   "\nAlso kept.\n")
    run = subprocess.run([sys.executable, "bench/search.py", "--quick", "--sizes", "2000", "--output", str(out)],
                         cwd=repo_root, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_the_search_smoke_run_writes_its_section_and_plot(report):
    text = report.read_text()
    section = text[text.index("<!-- search:start -->"):text.index("<!-- search:end -->")]
    assert "### 2,000 vectors × 384" in section
    for engine in ("ragserve f16", "ragserve i8", "ragserve b1", "numpy exact", "FAISS IndexHNSWFlat"):
        assert f"| {engine} |" in section
    assert "](img/search-by-size.png)" in section
    assert (report.parent / "img" / "search-by-size.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_summary_gathers_every_check_and_keeps_the_rest(report, repo_root):
    text = report.read_text()
    checks = [line for line in text.splitlines() if line.startswith(("- PASS: ", "- FAIL: "))]
    assert checks  # the search section printed its checks
    run = subprocess.run([sys.executable, "bench/summary.py", "--output", str(report)], cwd=repo_root,
                         capture_output=True, text=True, timeout=60, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    after = report.read_text()
    summary = after[after.index("<!-- summary:start -->"):after.index("<!-- summary:end -->")]
    passed = sum(line.startswith("- PASS: ") for line in checks)
    assert f"**{passed} of {len(checks)} checks pass.**" in summary
    for line in checks:
        assert line.split(": ", 1)[1].replace("|", "/") in summary
    assert "| [Search](#search) | `bench/search.py` |" in summary
    assert after.startswith("# Benchmarks\n\nWritten by hand, kept.\n") and "\nAlso kept.\n" in after


@pytest.fixture(scope="module")
def writes_run(tmp_path_factory, repo_root):
    """The write benchmark's smoke run (2k and 5k documents, a 100-write stream into 5k)
    into a scratch report, its seeded collections in a scratch work directory."""
    base = tmp_path_factory.mktemp("bench-writes")
    out = base / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nWritten by hand, kept.\n\n<!-- writes:start -->\nstale\n<!-- writes:end -->\n"
                   "\nAlso kept.\n")
    command = [sys.executable, "bench/writes.py", "--quick", "--work-dir", str(base / "work"), "--output", str(out)]
    run = subprocess.run(command, cwd=repo_root, capture_output=True, text=True, timeout=900, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return out, command


def test_the_writes_smoke_run_writes_its_section_plots_and_checks(writes_run):
    report, _ = writes_run
    text = report.read_text()
    section = text[text.index("<!-- writes:start -->"):text.index("<!-- writes:end -->")]
    assert "stale" not in section and section.count("## Writes") == 1
    for size in ("2,000", "5,000"):
        for writer in ("segmented", "full rebuild"):
            assert f"| {size} | {writer} |" in section
    for layout in ("1 segment", "4 segments", "16 segments", "default (1 × ≤500k)"):
        assert f"| {layout} |" in section
    assert "### A stream of 100 writes into 5,000 documents, compaction on" in section
    for plot in ("writes-latency.png", "writes-segments.png"):
        assert f"](img/{plot})" in section
        assert (report.parent / "img" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checks = [line for line in section.splitlines() if line.startswith(("- PASS: ", "- FAIL: "))]
    assert len(checks) == 9
    # correctness, not speed: every write was served by the warm reader at its own version
    assert any(line.startswith("- PASS: every timed write was served by the warm reader") for line in checks)
    assert text.startswith("# Benchmarks\n\nWritten by hand, kept.\n") and text.endswith("\nAlso kept.\n")


def test_the_writes_benchmark_reuses_its_seeds_and_resumes(writes_run, repo_root):
    report, command = writes_run
    before = report.read_text()
    run = subprocess.run([*command, "--resume"], cwd=repo_root, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "seeding" not in run.stderr  # nothing measured again: no collection seeded
    after = report.read_text()
    assert "Phases reused from an earlier run with the same settings (`--resume`): segmented-2000" in after
    checks = [line for line in before.splitlines() if line.startswith(("- PASS: ", "- FAIL: "))]
    assert checks == [line for line in after.splitlines() if line.startswith(("- PASS: ", "- FAIL: "))]
