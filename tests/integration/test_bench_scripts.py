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
