"""README's headline figures are generated from docs/BENCHMARKS.md by bench/summary.py,
so they cannot drift from the last benchmark run: this fails when the committed README
block differs from what the committed report renders (fix: `python bench/summary.py`)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH = REPO_ROOT / "bench"
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


@pytest.fixture(scope="module")
def summary():
    sys.path.insert(0, str(BENCH))  # summary.py imports its sibling report.py
    try:
        spec = importlib.util.spec_from_file_location("bench_summary", BENCH / "summary.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def block(text: str) -> str:
    assert text.count(START) == 1 and text.count(END) == 1, "README.md needs exactly one headline block"
    return text[text.index(START) + len(START):text.index(END)].strip()


def test_the_readme_headline_is_what_the_report_renders(summary):
    expected = summary.render_headline((REPO_ROOT / "docs" / "BENCHMARKS.md").read_text())
    assert block((REPO_ROOT / "README.md").read_text()) == expected.strip(), (
        "README.md's headline figures differ from docs/BENCHMARKS.md: run `python bench/summary.py`")


def test_the_headline_has_every_figure_the_readme_promises(summary):
    rendered = summary.render_headline((REPO_ROOT / "docs" / "BENCHMARKS.md").read_text())
    for row in ("Embedding throughput", "Cold start", "Search at 100,000 vectors", "Search at 1,000,000 vectors",
                "Query embedding + search", "Load test", "Rate limit"):
        assert f"| {row}" in rendered, f"no '{row}' row: has the report's format changed?"


def test_the_bullets_above_the_headline_quote_no_figures():
    """The prose before the block carries no measured figures (they would go stale)."""
    readme = (REPO_ROOT / "README.md").read_text()
    bullets = readme[:readme.index(START)].split("\n- ", 1)[1]
    bullets = re.sub(r"\b(?:202|429|5xx)s?\b", "", bullets)  # HTTP status codes are not figures
    figures = re.findall(r"\b\d+(?:[.,]\d+)?\s*(?:x|×|ms|s|MB|GB|%|req/s|k|M)(?!\w)", bullets)
    assert not figures, f"figures in README's bullets (put them in the generated block): {figures}"


def test_the_block_is_rewritten_from_a_report_and_the_rest_kept(summary, tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    report.write_text((REPO_ROOT / "docs" / "BENCHMARKS.md").read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nKept.\n\n{START}\nstale: p95 5.3 ms\n{END}\n\nAlso kept.\n")
    assert summary.main(["--output", str(report), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "stale" not in text
    assert block(text) == summary.render_headline(report.read_text()).strip()
    assert text.startswith("# Title\n\nKept.\n\n") and text.endswith("\n\nAlso kept.\n")

    bare = tmp_path / "BARE.md"
    bare.write_text("# No markers\n")
    assert summary.main(["--output", str(report), "--readme", str(bare)]) == 0
    assert bare.read_text() == "# No markers\n"  # never appended to a README without markers
