"""Documents of a collection: id, text, flat metadata, and a content hash that makes
re-ingesting the same document a no-op."""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

Scalar = str | int | float | bool | None
MAX_ID_CHARS = 256
# An id: no control character (C0, DEL, C1) and not whitespace alone (JSON Schema form,
# for the OpenAPI document; `ragserve.ingest.service.check_document_id` enforces it).
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
MAX_METADATA_BYTES = 8192
# Numbers in metadata and filters: at most 2^53 - 1 in magnitude. Beyond it not every
# integer is a float (2^53 + 1 is not), so filters, which compare 1 and 1.0 as equal,
# could not tell neighbours apart, and JSON clients such as JavaScript lose them too.
MAX_SAFE_INTEGER = 2**53 - 1
# What an error message shows of a name or id the caller sent (the rest is cut).
SHOWN_CHARS = 64
# Characters that show nothing: controls (Cc), format characters such as zero-width
# spaces, joiners and the BOM (Cf), combining marks with no base (Mn, Me) and separators
# (Zs, Zl, Zp). A text of only these (and whitespace) tokenises to [CLS][SEP] alone, so
# every such text would get the same vector.
INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp"})


def has_visible_text(text: str) -> bool:
    """True if ``text`` holds a character that is neither whitespace nor in
    ``INVISIBLE_CATEGORIES`` (else 400 ``empty_text`` / ``empty_query``)."""
    return any(not c.isspace() and unicodedata.category(c) not in INVISIBLE_CATEGORIES for c in text)


def shorten(value: str, limit: int = SHOWN_CHARS) -> str:
    """``value`` as an error message may echo it: its first ``limit`` characters and "..."."""
    return value if len(value) <= limit else value[:limit] + "..."


def is_safe_number(value: object) -> bool:
    """False for an int or float beyond ``MAX_SAFE_INTEGER`` in magnitude (bools are fine)."""
    return isinstance(value, bool) or not isinstance(value, int | float) or abs(value) <= MAX_SAFE_INTEGER


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    metadata: Mapping[str, Scalar] = field(default_factory=dict)

    def content_hash(self, model_id: str) -> str:
        """Changes when the text, the metadata or the model changes."""
        payload = orjson.dumps([model_id, self.text, dict(self.metadata)], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(payload).hexdigest()

    def to_record(self, model_id: str) -> dict:
        return {"id": self.id, "text": self.text, "metadata": dict(self.metadata),
                "hash": self.content_hash(model_id)}

    @classmethod
    def from_record(cls, record: Mapping) -> Document:
        return cls(record["id"], record["text"], record.get("metadata") or {})


def metadata_key(value: Scalar) -> str:
    """Canonical form of a metadata value for equality filters (1 == 1.0, "1" != 1).

    Exact: an int that no float equals (beyond 2^53, stored before such numbers were
    refused) keeps its own digits, so 2^53 + 1 never matches 2^53."""
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    if isinstance(value, int):
        try:
            as_float = float(value)
        except OverflowError:
            return str(value)
        return orjson.dumps(as_float).decode() if as_float == value else str(value)
    if isinstance(value, float):
        return orjson.dumps(value).decode()
    return orjson.dumps(value).decode()
