"""The demo collection: question/answer pairs from the BSD-licensed chatterbot-corpus
package (English), so a fresh ``ragserve serve`` answers its first search sensibly.
Documents are the answers; the question and category are metadata. (Also read by
model_artifacts/build.py, without ragserve's runtime dependencies.)"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ragserve.documents import Document


def corpus_dir() -> Path:
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).resolve().parent / "data" / "english"


def qa_pairs() -> list[tuple[str, str, str]]:
    """(category, question, first answer) of the English conversations, in a fixed order;
    an answer that repeats (the corpus has 2,025 conversations but 869 distinct answers)
    is kept once, so results are not ties between identical documents."""
    import yaml

    pairs = []
    seen: set[str] = set()
    for path in sorted(corpus_dir().glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations") or []:
            if isinstance(conversation, list) and len(conversation) >= 2:
                question, answer = str(conversation[0]).strip(), str(conversation[1]).strip()
                key = " ".join(answer.lower().split())
                if question and answer and key not in seen:
                    seen.add(key)
                    pairs.append((path.stem, question, answer))
    return pairs


def demo_documents() -> list[Document]:
    from ragserve.documents import Document

    return [Document(f"{category}-{i:04d}", answer, {"category": category, "question": question})
            for i, (category, question, answer) in enumerate(qa_pairs())]
