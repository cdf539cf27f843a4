"""Documents of a collection: id, text, flat metadata, and a content hash that makes
re-ingesting the same document a no-op."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

Scalar = str | int | float | bool | None
MAX_ID_CHARS = 256
# An id: no control character (C0, DEL, C1) and not whitespace alone (JSON Schema form,
# for the OpenAPI document; `ragserve.ingest.service.check_document_id` enforces it).
ID_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
MAX_METADATA_BYTES = 8192


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
    """Canonical form of a metadata value for equality filters (1 == 1.0, "1" != 1)."""
    if isinstance(value, bool) or value is None:
        return orjson.dumps(value).decode()
    if isinstance(value, int | float):
        return orjson.dumps(float(value)).decode()
    return orjson.dumps(value).decode()
