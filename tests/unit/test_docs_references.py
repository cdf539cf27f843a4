"""The repository's docs stand alone: nothing points outside the repository, every
relative markdown link reaches a file (and heading) that exists, every repository path
named in code or docs exists, and every citation of a section of the architecture
document names a section it has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs"
ARCHITECTURE = DOCS / ("ARCHITECTURE" + ".md")
CODE_DIRS = ("layers", "functions", "infra", "events", "bench", "model_artifacts", "tests")
SKIP_DIRS = {"__pycache__", ".venv", ".venv-model", ".git", "build", "cdk.out", "node_modules"}
TOP_LEVEL_FILES = ("Makefile", "pyproject.toml", "cdk.json", ".ci/run")

# Built from parts so that this file does not name what it forbids.
FORBIDDEN = ("DESIGN" + ".md", ".." + "/shared")

# [text](target) or [text](target "title"); images too.
MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCED_BLOCK = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
SECTION_HEADING = re.compile(r"^## (\d+)\. ", re.MULTILINE)
# "docs/ARCHITECTURE.md section N" (also across a line break, or with "§")
CITATION = re.compile("ARCHITECTURE" + r"\.md[\s#*]*(?:sections?\s+|§\s*)(\d+)")
REPO_PATH = re.compile(
    r"(?<![\w/.-])((?:docs|bench|tests|layers|functions|infra|events|model_artifacts)/[\w./-]*"
    r"\.(?:md|py|json|jsonl|txt|png|npy|toml))(?![\w*<>{}])")


def _walk(directory: Path) -> Iterator[Path]:
    for path in sorted(directory.rglob("*")):
        if path.is_file() and not SKIP_DIRS.intersection(path.relative_to(REPO_ROOT).parts):
            yield path


def markdown_files() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def python_files() -> list[Path]:
    return [p for d in CODE_DIRS for p in _walk(REPO_ROOT / d) if p.suffix == ".py"]


def text_files() -> list[Path]:
    """Every file whose text could point a reader somewhere: docs, code, build files."""
    found = [*markdown_files(), *python_files()]
    found += [REPO_ROOT / name for name in TOP_LEVEL_FILES if (REPO_ROOT / name).is_file()]
    for directory in CODE_DIRS:
        found += [p for p in _walk(REPO_ROOT / directory)
                  if p.suffix in (".md", ".txt") or p.name == "Dockerfile"]
    return sorted(set(found))


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _prose(markdown: str) -> str:
    """Markdown without its code blocks and code spans (blanked out, so that line
    numbers stay right): links and headings are only looked for in prose."""
    text = FENCED_BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), markdown)
    return INLINE_CODE.sub(lambda m: " " * len(m.group(0)), text)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for match in HEADING.finditer(_prose(_read(path))):
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def architecture_sections() -> list[int]:
    return [int(n) for n in SECTION_HEADING.findall(_read(ARCHITECTURE))]


def test_the_architecture_document_exists_with_numbered_sections():
    assert ARCHITECTURE.is_file(), f"{_rel(ARCHITECTURE)} is missing"
    sections = architecture_sections()
    assert sections, f"{_rel(ARCHITECTURE)} has no '## N. Title' sections"
    assert sections == list(range(1, len(sections) + 1)), \
        f"{_rel(ARCHITECTURE)}: sections must be numbered 1, 2, 3, ... in order, found {sections}"


def test_nothing_points_outside_the_repository():
    offenders = []
    for path in text_files():
        for number, line in enumerate(_read(path).splitlines(), 1):
            offenders += [f"{_rel(path)}:{number}: {line.strip()}" for word in FORBIDDEN if word in line]
    assert not offenders, "references to files outside the repository (cite docs/ARCHITECTURE.md " \
                          "sections instead):\n" + "\n".join(offenders)


@pytest.mark.parametrize("path", markdown_files(), ids=_rel)
def test_relative_markdown_links_reach_existing_files_and_headings(path: Path):
    text = _prose(_read(path))
    broken = []
    for match in MARKDOWN_LINK.finditer(text):
        target = match.group(1)
        if SCHEME.match(target) or target.startswith("//"):
            continue  # http(s), mailto...: not a file of the repository
        file_part, _, anchor = target.partition("#")
        file_part = file_part.split("?", 1)[0]
        if file_part:
            base = REPO_ROOT if file_part.startswith("/") else path.parent
            resolved = (base / file_part.lstrip("/")).resolve()
        else:
            resolved = path
        where = f"{_rel(path)}:{_line_of(text, match.start())}: ({target})"
        if not resolved.exists():
            broken.append(f"{where}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where}: no heading with anchor #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_repository_paths_named_in_code_and_docs_exist():
    missing = []
    for path in [*markdown_files(), *python_files()]:
        text = _read(path)
        for match in REPO_PATH.finditer(text):
            name = match.group(1).rstrip(".")
            if not (REPO_ROOT / name).exists():
                missing.append(f"{_rel(path)}:{_line_of(text, match.start())}: {name}")
    assert not missing, "paths that are not in the repository:\n" + "\n".join(sorted(set(missing)))


def test_architecture_citations_name_existing_sections():
    sections = set(architecture_sections())
    wrong = []
    for path in [*markdown_files(), *python_files()]:
        text = _read(path)
        for match in CITATION.finditer(text):
            if int(match.group(1)) not in sections:
                wrong.append(f"{_rel(path)}:{_line_of(text, match.start())}: section {match.group(1)}")
    assert not wrong, f"citations of sections that {_rel(ARCHITECTURE)} does not have " \
                      f"(it has {sorted(sections)}):\n" + "\n".join(wrong)
