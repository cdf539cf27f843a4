"""The segmented snapshot format: a version's manifest (``VersionManifest``, its
``SegmentEntry`` list and their ``BlobRef`` files) round trips through its JSON, refuses
any altered, truncated or inconsistent manifest with ``SnapshotCorrupt`` naming the
collection and version (never a file-system path), and ``successor`` builds the next
version. Also the helpers the stores share: collection names, error codes, staging
directories. Blob references are sha256 of distinct strings: the manifest names files
by hash and never reads them, so their content is beside the point here."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import orjson
import pytest

from ragserve.errors import InvalidInput, NotFound
from ragserve.snapshots import (
    BlobRef,
    CollectionNotFound,
    LocalSnapshotStore,
    PointerConflict,
    SegmentEntry,
    SnapshotCorrupt,
    SnapshotMissing,
    VersionExists,
    VersionManifest,
)
from ragserve.snapshots import manifest as manifest_module
from ragserve.snapshots.format import validate_collection
from ragserve.snapshots.manifest import FORMAT, empty_manifest
from tests.corruption import flip_byte, flipped

PARAMS = {"connectivity": 16, "expansion_add": 128, "expansion_search": 64}


def ref(tag: str, size: int = 100) -> BlobRef:
    return BlobRef(hashlib.sha256(tag.encode()).hexdigest(), size)


def segment(segment_id: str, rows: int, *, deleted: int = 0, index: bool = False) -> SegmentEntry:
    return SegmentEntry(id=segment_id, rows=rows, vectors=ref(f"{segment_id}/vectors", rows * 768),
                        docs=ref(f"{segment_id}/docs", rows * 50), ids=ref(f"{segment_id}/ids", rows * 20),
                        index=ref(f"{segment_id}/index", rows * 90) if index else None,
                        deletes=ref(f"{segment_id}/deletes/{deleted}", 128 + 4 * deleted) if deleted else None,
                        deleted=deleted)


def sample(version: int = 3, **overrides: Any) -> VersionManifest:
    """Three segments: a merged one with a graph and deletions, two small fresh writes."""
    fields: dict[str, Any] = {
        "collection": "docs", "version": version, "model_id": "all-MiniLM-L6-v2", "dimensions": 384,
        "dtype": "i8", "params": dict(PARAMS), "parent": version - 1, "operation": "write",
        "segments": (segment("s1-0", 5000, deleted=120, index=True), segment("s2-0", 40),
                     segment(f"s{version}-0", 7, deleted=2)),
    }
    return VersionManifest(**{**fields, **overrides})


def body(manifest: VersionManifest) -> dict:
    return orjson.loads(manifest.to_json())


def sealed(data: dict) -> bytes:
    """``data`` as a manifest whose checksum matches: the sha256 of the canonical form
    (compact JSON, sorted keys) of everything but the checksum. Used to make manifests
    that are intact but inconsistent, which the checksum alone cannot catch."""
    content = {k: v for k, v in data.items() if k != "checksum"}
    checksum = hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return orjson.dumps({**content, "checksum": checksum})


# -- round trip ------------------------------------------------------------------------


def test_a_manifest_round_trips_with_its_figures():
    manifest = sample()

    text = manifest.to_json()
    again = VersionManifest.from_json(text)

    assert again == manifest
    assert again.to_json() == text  # canonical: same object, same bytes
    assert (again.count, again.deleted) == (5000 - 120 + 40 + 7 - 2, 122)
    data = orjson.loads(text)
    assert data["count"] == again.count and data["format"] == FORMAT == 2
    assert list(data) == sorted(data) and text.endswith(b"\n")
    assert VersionManifest.from_json(text.decode()) == manifest  # str as well as bytes


def test_the_figures_and_blob_sets_of_a_manifest():
    manifest = sample()
    merged, fresh, small = manifest.segments

    assert [s.live for s in manifest.segments] == [4880, 40, 5]
    assert merged.bytes == 5000 * (768 + 50 + 20 + 90)  # its own files, not its deletion vector
    assert set(merged.files()) == {"vectors", "docs", "ids", "index"}
    assert set(fresh.files()) == {"vectors", "docs", "ids"}
    assert len(merged.blobs()) == 5 and len(fresh.blobs()) == 3 and len(small.blobs()) == 4
    assert manifest.blobs() == {r.sha256 for s in manifest.segments for r in s.blobs()}
    assert len(manifest.blobs()) == 12
    assert manifest.segment("s2-0") is fresh and manifest.segment("s9-9") is None


def test_a_manifest_without_segments_round_trips_as_empty():
    manifest = sample(segments=())

    again = VersionManifest.from_json(manifest.to_json())

    assert again == manifest and again.count == 0 and again.deleted == 0 and again.blobs() == set()


def test_a_deletion_vector_is_replaced_without_touching_the_segment_files():
    entry = segment("s1-0", 10)

    changed = entry.with_deletes(ref("deletes-3"), 3)

    assert (changed.deleted, changed.live, changed.deletes) == (3, 7, ref("deletes-3"))
    assert changed.files() == entry.files() and entry.deleted == 0  # frozen: the old one is unchanged


def test_next_segment_id_skips_those_taken():
    manifest = sample(version=3)  # holds s3-0

    assert manifest.next_segment_id(3) == "s3-1"
    assert manifest.next_segment_id(4) == "s4-0"
    assert manifest.next_segment_id(4, used={"s4-0", "s4-1"}) == "s4-2"


# -- successor ---------------------------------------------------------------------------


def test_successor_keeps_the_model_and_parameters_and_records_its_origin(monkeypatch):
    manifest = sample(version=3)
    monkeypatch.setattr(manifest_module, "utc_now_iso", lambda: "2031-02-03T04:05:06Z")
    segments = [*manifest.segments[:2], segment("s4-0", 12)]

    nxt = manifest.successor(4, segments, "compact", parent=3)

    assert (nxt.collection, nxt.model_id, nxt.dimensions, nxt.dtype, nxt.params, nxt.format) == (
        manifest.collection, manifest.model_id, manifest.dimensions, manifest.dtype, PARAMS, FORMAT)
    assert (nxt.version, nxt.parent, nxt.operation) == (4, 3, "compact")
    assert nxt.segments == tuple(segments) and nxt.created_at == "2031-02-03T04:05:06Z"
    assert (manifest.version, manifest.parent, len(manifest.segments)) == (3, 2, 3)  # unchanged
    assert VersionManifest.from_json(nxt.to_json()) == nxt


def test_the_first_version_is_built_on_nothing():
    seed = empty_manifest("docs", model_id="m", dimensions=8, dtype="f16", params={"connectivity": 8})

    first = seed.successor(1, [segment("s1-0", 3)], "write", parent=None)

    assert seed.segments == () and first.parent is None and first.count == 3
    assert first.params == {"connectivity": 8} and first.model_id == "m"


def test_successor_refuses_an_unknown_operation_or_a_segment_listed_twice():
    manifest = sample()

    with pytest.raises(InvalidInput, match="operation"):
        manifest.successor(4, manifest.segments, "rewrite", parent=3)
    with pytest.raises(InvalidInput, match="twice"):
        manifest.successor(4, [*manifest.segments, manifest.segments[0]], "write", parent=3)


# -- damage ------------------------------------------------------------------------------


def test_every_single_bit_flip_anywhere_in_a_manifest_is_refused():
    text = sample().to_json()

    accepted = []
    for position in range(len(text)):
        for bit in range(8):
            damaged = bytearray(text)
            damaged[position] ^= 1 << bit
            try:
                VersionManifest.from_json(bytes(damaged))
            except SnapshotCorrupt:
                continue
            accepted.append((position, bit))

    assert accepted == []


def test_an_inverted_byte_is_refused_and_the_message_names_the_version():
    text = sample().to_json()

    with pytest.raises(SnapshotCorrupt) as caught:
        VersionManifest.from_json(flipped(text), where="the manifest of 'docs' v3")

    assert caught.value.code == "snapshot_corrupt"
    assert caught.value.message.startswith("the manifest of 'docs' v3 is not a valid manifest")


def test_every_truncation_of_a_manifest_is_refused():
    text = sample().to_json()
    content = len(text.rstrip())  # only the final newline is not content

    accepted = []
    for length in range(content):
        try:
            VersionManifest.from_json(text[:length])
        except SnapshotCorrupt:
            continue
        accepted.append(length)

    assert accepted == []
    assert VersionManifest.from_json(text[:content]) == VersionManifest.from_json(text)


def test_an_edited_field_breaks_the_checksum():
    data = body(sample())
    data["segments"][1]["rows"] = 41  # a plausible edit, count left as it was

    with pytest.raises(SnapshotCorrupt, match="checksum"):
        VersionManifest.from_json(orjson.dumps(data))
    data.pop("checksum")
    with pytest.raises(SnapshotCorrupt, match="checksum"):
        VersionManifest.from_json(orjson.dumps(data))


@pytest.mark.parametrize("fmt", [1, 3, None, "2"])
def test_another_format_number_is_refused(fmt):
    data = body(sample())
    data["format"] = fmt
    if fmt is None:
        data.pop("format")

    with pytest.raises(SnapshotCorrupt, match="format"):
        VersionManifest.from_json(sealed(data))


def test_the_checksum_is_the_sha256_of_the_canonical_content():
    manifest = sample()
    data = body(manifest)

    assert orjson.loads(sealed(data)) == data  # the same checksum as the writer's
    assert VersionManifest.from_json(sealed(data)) == manifest


@pytest.mark.parametrize("count", [0, 4924, 4926, -1, None, "4925"])
def test_a_count_that_does_not_match_the_segments_is_refused(count):
    data = body(sample())
    assert data["count"] == 4925
    data["count"] = count

    with pytest.raises(SnapshotCorrupt, match="count"):
        VersionManifest.from_json(sealed(data))


@pytest.mark.parametrize("segment_id", ["", "x1-0", "s0-1", "s1", "s-1", "s1-", "S1-0", "s1-0 ", "s1-a", 10])
def test_an_invalid_segment_id_is_refused(segment_id):
    data = body(sample())
    data["segments"][1]["id"] = segment_id

    with pytest.raises(SnapshotCorrupt, match="segment id"):
        VersionManifest.from_json(sealed(data))
    with pytest.raises(ValueError, match="segment id"):
        segment(segment_id, 3) if isinstance(segment_id, str) else SegmentEntry(
            segment_id, 3, ref("v"), ref("d"), ref("i"))


def test_a_segment_listed_twice_is_refused():
    data = body(sample())
    data["segments"].append(data["segments"][0])
    data["count"] += data["segments"][0]["rows"] - data["segments"][0]["deleted"]

    with pytest.raises(SnapshotCorrupt, match="listed twice"):
        VersionManifest.from_json(sealed(data))


@pytest.mark.parametrize("edit,match", [
    ({"deleted": 41}, "41 deleted rows of 40"),  # more than it has
    ({"deleted": -1}, "deleted"),
    ({"deleted": 2}, "without a deletion vector"),  # deletions, nowhere to read them
    ({"rows": 0}, "rows must be >= 1"),
    ({"rows": True}, "rows"),
    ({"rows": 2.5}, "rows"),
])
def test_inconsistent_segment_figures_are_refused(edit, match):
    data = body(sample())
    data["segments"][1].update(edit)  # s2-0: 40 rows, none deleted
    seg = data["segments"][1]
    if isinstance(seg["rows"], int) and isinstance(seg["deleted"], int):
        data["count"] = sum(s["rows"] - s["deleted"] for s in data["segments"])  # only the entry is wrong

    with pytest.raises(SnapshotCorrupt, match=match):
        VersionManifest.from_json(sealed(data))


@pytest.mark.parametrize("deleted", [True, 1.5, "2"])
def test_a_deleted_figure_that_is_not_an_integer_is_refused(deleted):
    data = body(sample())
    data["segments"][2]["deleted"] = deleted  # s3-0: 7 rows, a deletion vector
    if not isinstance(deleted, str):
        data["count"] = 4880 + 40 + 7 - deleted  # consistent with it: only the type is wrong

    with pytest.raises(SnapshotCorrupt):
        VersionManifest.from_json(sealed(data))
    with pytest.raises(ValueError):
        SegmentEntry("s1-0", 10, ref("v"), ref("d"), ref("i"), deletes=ref("x"), deleted=deleted)


def test_a_deletion_vector_that_deletes_nothing_is_refused():
    with pytest.raises(ValueError, match="with a deletion vector"):
        SegmentEntry("s1-0", 10, ref("v"), ref("d"), ref("i"), deletes=ref("x"), deleted=0)
    data = body(sample())
    data["segments"][1]["deletes"] = ref("x").to_dict()

    with pytest.raises(SnapshotCorrupt, match="with a deletion vector"):
        VersionManifest.from_json(sealed(data))


def test_every_row_deleted_is_still_a_valid_segment():
    entry = segment("s1-0", 4, deleted=4)

    assert entry.live == 0


@pytest.mark.parametrize("sha", ["", "ab" * 31, "ab" * 33, "AB" * 32, "g" + "a" * 63, " " + "a" * 63, None, 7])
def test_a_blob_ref_needs_a_lower_case_sha256(sha):
    with pytest.raises(ValueError, match="sha256"):
        BlobRef(sha, 10)


@pytest.mark.parametrize("size", [-1, True, 1.0, "10", None])
def test_a_blob_ref_needs_a_non_negative_integer_size(size):
    with pytest.raises(ValueError, match="size"):
        BlobRef("a" * 64, size)


def test_a_blob_ref_round_trips_and_an_empty_blob_is_valid():
    blob = BlobRef("0" * 64, 0)

    assert BlobRef.from_dict(blob.to_dict()) == blob
    with pytest.raises(KeyError):
        BlobRef.from_dict({"sha256": "0" * 64})


@pytest.mark.parametrize("role,value", [
    ("vectors", {"sha256": "short", "size": 1}),
    ("docs", {"sha256": "a" * 64, "size": -5}),
    ("ids", None),  # a required file
    ("index", {"size": 3}),
    ("deletes", "a" * 64),
])
def test_a_bad_blob_ref_in_a_manifest_is_refused(role, value):
    data = body(sample())
    data["segments"][0][role] = value

    with pytest.raises(SnapshotCorrupt):
        VersionManifest.from_json(sealed(data))


@pytest.mark.parametrize("edit", [
    {"dtype": "f64"},
    {"dimensions": 0},
    {"dimensions": True},
    {"version": 0},
    {"collection": "../etc"},
    {"collection": "Docs"},
    {"operation": "rewrite"},
])
def test_invalid_version_fields_are_refused(edit):
    data = {**body(sample()), **edit}

    with pytest.raises(SnapshotCorrupt):
        VersionManifest.from_json(sealed(data))
    with pytest.raises(InvalidInput):
        replace(sample(), **edit)


@pytest.mark.parametrize("text", [b"", b"not json{", b"[1, 2]", b"null", b"{}", b'"manifest"'])
def test_what_is_not_a_manifest_object_is_refused(text):
    with pytest.raises(SnapshotCorrupt):
        VersionManifest.from_json(text)


@pytest.mark.parametrize("missing", ["collection", "version", "model_id", "dimensions", "dtype", "segments",
                                     "created_at"])
def test_a_required_field_missing_is_refused(missing):
    data = body(sample())
    data.pop(missing)

    with pytest.raises(SnapshotCorrupt):
        VersionManifest.from_json(sealed(data))


# -- errors name the collection and version, never a path ------------------------------


def store_manifest(tmp_path, manifest: VersionManifest, text: bytes | None = None) -> LocalSnapshotStore:
    """A manifest laid out as the local store keeps it (its blobs are not needed to read it)."""
    versions = tmp_path / "collections" / manifest.collection / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    (versions / f"v{manifest.version}.json").write_bytes(manifest.to_json() if text is None else text)
    (versions.parent / "CURRENT").write_text(f"{manifest.version}\n")
    return LocalSnapshotStore(tmp_path)


def damages(manifest: VersionManifest) -> dict[str, bytes]:
    text = manifest.to_json()
    data = body(manifest)
    return {
        "flipped": flipped(text),
        "truncated": text[: len(text) // 3],
        "empty": b"",
        "format": sealed({**data, "format": 1}),
        "count": sealed({**data, "count": data["count"] + 1}),
        "segment": sealed({**data, "segments": [{**data["segments"][0], "id": "bad"}, *data["segments"][1:]]}),
        "another version": sealed({**data, "version": manifest.version + 1}),
    }


@pytest.mark.parametrize("damage", ["flipped", "truncated", "empty", "format", "count", "segment",
                                    "another version"])
def test_a_damaged_stored_manifest_is_refused_naming_collection_and_version_not_a_path(tmp_path, damage):
    manifest = sample(version=3)
    store = store_manifest(tmp_path, manifest, damages(manifest)[damage])

    with pytest.raises(SnapshotCorrupt) as caught:
        store.manifest("docs", 3)

    message = caught.value.message
    assert "'docs' v3" in message
    assert str(tmp_path) not in message and "/" not in message and "v3.json" not in message
    with pytest.raises(SnapshotCorrupt):
        store.live_manifest("docs")


def test_a_stored_manifest_with_a_flipped_byte_is_refused_and_reads_again_once_restored(tmp_path):
    manifest = sample(version=3)
    store = store_manifest(tmp_path, manifest)
    path = tmp_path / "collections" / "docs" / "versions" / "v3.json"
    assert store.manifest("docs", 3) == manifest

    original = flip_byte(path)
    with pytest.raises(SnapshotCorrupt):
        store.manifest("docs", 3)
    path.write_bytes(original)

    assert store.manifest("docs", 3) == manifest


def test_missing_versions_and_collections_are_named_without_a_path(tmp_path):
    store = store_manifest(tmp_path, sample(version=3))

    with pytest.raises(SnapshotMissing) as missing:
        store.manifest("docs", 2)
    with pytest.raises(CollectionNotFound) as unknown:
        store.manifest("other", 1)

    assert "'docs'" in missing.value.message and "2" in missing.value.message
    assert "'other'" in unknown.value.message
    for message in (missing.value.message, unknown.value.message):
        assert str(tmp_path) not in message and "/" not in message


@pytest.mark.parametrize("pointer", [b"", b"seven\n", b"0\n", b"-3\n", b"\xff\xfe"])
def test_an_unreadable_current_pointer_is_corrupt_and_named(tmp_path, pointer):
    store = store_manifest(tmp_path, sample(version=3))
    (tmp_path / "collections" / "docs" / "CURRENT").write_bytes(pointer)

    with pytest.raises(SnapshotCorrupt) as caught:
        store.current("docs")

    assert "'docs'" in caught.value.message and str(tmp_path) not in caught.value.message


# -- shared helpers ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["default", "docs-2024", "a", "my_docs"])
def test_collection_names_that_are_accepted(name):
    assert validate_collection(name) == name


@pytest.mark.parametrize("name", ["", "..", ".hidden", "a/b", "Docs", "x" * 64, "-lead", "sp ace"])
def test_collection_names_that_are_refused(name):
    with pytest.raises(InvalidInput):
        validate_collection(name)


def test_errors_have_stable_codes_and_the_right_parents():
    assert issubclass(CollectionNotFound, NotFound) and CollectionNotFound.code == "collection_not_found"
    assert issubclass(SnapshotMissing, NotFound) and SnapshotMissing.code == "snapshot_missing"
    assert issubclass(VersionExists, PointerConflict) and PointerConflict.code == "pointer_conflict"
    assert not issubclass(SnapshotCorrupt, NotFound)
