"""The writer's id map (``IdMap``): synced from nothing it reads every segment once;
synced by the manifest's diff it reads only the ids of new segments and the deletion
vectors of segments whose vector changed; deletions remove ids, dropped segments take
their ids with them, an id superseded by a newer segment points at the newer row, and a
rollback to an older version (``ragserve collections repair --to-version``) brings back
what that version holds. Segments are manifest entries with fake blob references; the
read callbacks serve ids and deletion vectors from dicts and count their calls."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest

from ragserve.segments.idmap import IdMap
from ragserve.snapshots.manifest import BlobRef, SegmentEntry, VersionManifest


def ref(tag: str) -> BlobRef:
    return BlobRef(hashlib.sha256(tag.encode()).hexdigest(), 1)


class FakeSegments:
    """Segments' ids and deletion vectors, and the reads the map made of them."""

    def __init__(self) -> None:
        self.ids: dict[str, list[str]] = {}
        self.deletes: dict[str, np.ndarray] = {}
        self.id_reads: Counter[str] = Counter()
        self.delete_reads: Counter[str] = Counter()

    def segment(self, segment_id: str, ids: Sequence[str]) -> SegmentEntry:
        self.ids[segment_id] = list(ids)
        return SegmentEntry(id=segment_id, rows=len(ids), vectors=ref(f"{segment_id}/v"),
                            docs=ref(f"{segment_id}/d"), ids=ref(f"{segment_id}/i"))

    def delete(self, entry: SegmentEntry, *doc_ids: str) -> SegmentEntry:
        """``entry`` with ``doc_ids`` (and whatever it had deleted) in its deletion vector."""
        rows = {self.ids[entry.id].index(d) for d in doc_ids}
        if entry.deletes is not None:
            rows |= set(self.deletes[entry.deletes.sha256].tolist())
        vector = np.array(sorted(rows), dtype=np.uint32)
        deletes = ref(f"{entry.id}/x/{vector.tolist()}")
        self.deletes[deletes.sha256] = vector
        return entry.with_deletes(deletes, len(vector))

    def read_ids(self, entry: SegmentEntry) -> tuple[list[str], list[str | None]]:
        self.id_reads[entry.id] += 1
        ids = self.ids[entry.id]
        return list(ids), [f"hash-of-{entry.id}-{d}" for d in ids]

    def read_deletes(self, entry: SegmentEntry) -> np.ndarray:
        self.delete_reads[entry.id] += 1
        return self.deletes[entry.deletes.sha256]

    def sync(self, idmap: IdMap, manifest: VersionManifest | None) -> None:
        self.id_reads.clear()
        self.delete_reads.clear()
        idmap.sync(manifest, self.read_ids, self.read_deletes)


def version(number: int, *segments: SegmentEntry) -> VersionManifest:
    return VersionManifest(collection="docs", version=number, model_id="m", dimensions=4, dtype="f16", params={},
                           segments=tuple(segments), parent=number - 1 if number > 1 else None)


@pytest.fixture
def fake() -> FakeSegments:
    return FakeSegments()


def test_a_cold_sync_reads_every_segment_once(fake):
    a = fake.segment("s1-0", ["a", "b", "c"])
    b = fake.delete(fake.segment("s2-0", ["d", "e"]), "e")
    idmap = IdMap()

    fake.sync(idmap, version(2, a, b))

    assert idmap.version == 2
    assert idmap.where == {"a": ("s1-0", 0), "b": ("s1-0", 1), "c": ("s1-0", 2), "d": ("s2-0", 0)}
    assert fake.id_reads == {"s1-0": 1, "s2-0": 1}
    assert fake.delete_reads == {"s2-0": 1}  # only the segment that has a deletion vector
    assert idmap.hash_of("d") == "hash-of-s2-0-d"


def test_an_empty_collection_maps_nothing(fake):
    idmap = IdMap()
    fake.sync(idmap, version(1, fake.segment("s1-0", ["a"])))

    fake.sync(idmap, None)

    assert (idmap.version, idmap.where, idmap.segments) == (None, {}, {})


def test_a_sync_by_diff_reads_only_new_and_changed_segments(fake):
    a = fake.segment("s1-0", ["a", "b"])
    b = fake.segment("s2-0", ["c", "d"])
    c = fake.segment("s3-0", ["e"])
    idmap = IdMap()
    fake.sync(idmap, version(3, a, b, c))

    d = fake.segment("s4-0", ["b", "f"])  # an update of b and a new document f
    fake.sync(idmap, version(4, fake.delete(a, "b"), b, c, d))

    assert fake.id_reads == {"s4-0": 1}  # the new segment's ids, none of the others'
    assert fake.delete_reads == {"s1-0": 1}  # the one deletion vector that changed
    assert idmap.version == 4
    assert idmap.where == {"a": ("s1-0", 0), "b": ("s4-0", 0), "c": ("s2-0", 0), "d": ("s2-0", 1),
                           "e": ("s3-0", 0), "f": ("s4-0", 1)}


def test_syncing_the_same_version_again_reads_nothing(fake):
    a = fake.delete(fake.segment("s1-0", ["a", "b"]), "a")
    idmap = IdMap()
    fake.sync(idmap, version(1, a))
    before = dict(idmap.where)

    fake.sync(idmap, version(1, a))

    assert fake.id_reads == {} and fake.delete_reads == {}
    assert idmap.where == before == {"b": ("s1-0", 1)}


def test_deletes_remove_ids(fake):
    a = fake.segment("s1-0", ["a", "b", "c"])
    idmap = IdMap()
    fake.sync(idmap, version(1, a))

    a2 = fake.delete(a, "a", "c")
    fake.sync(idmap, version(2, a2))
    assert idmap.where == {"b": ("s1-0", 1)}

    fake.sync(idmap, version(3, fake.delete(a2, "b")))  # every row deleted
    assert idmap.where == {}
    assert idmap.segments["s1-0"].deleted.tolist() == [0, 1, 2]


def test_a_dropped_segment_takes_its_ids_with_it(fake):
    a = fake.segment("s1-0", ["a", "b"])
    b = fake.segment("s2-0", ["c", "d"])
    idmap = IdMap()
    fake.sync(idmap, version(1, a, b))

    fake.sync(idmap, version(2, b))

    assert idmap.where == {"c": ("s2-0", 0), "d": ("s2-0", 1)}
    assert set(idmap.segments) == {"s2-0"}
    assert fake.id_reads == {} and fake.delete_reads == {}


def test_a_merge_moves_ids_to_the_merged_segment(fake):
    a = fake.segment("s1-0", ["a", "b", "c"])
    b = fake.segment("s2-0", ["d"])
    c = fake.segment("s3-0", ["e"])
    idmap = IdMap()
    fake.sync(idmap, version(3, fake.delete(a, "b"), b, c))

    merged = fake.segment("s4-0", ["a", "c", "d"])  # the live rows of s1-0 and s2-0
    fake.sync(idmap, version(4, merged, c))

    assert idmap.where == {"a": ("s4-0", 0), "c": ("s4-0", 1), "d": ("s4-0", 2), "e": ("s3-0", 0)}
    assert fake.id_reads == {"s4-0": 1}


def test_an_id_moved_to_a_newer_segment_keeps_the_newer_location(fake):
    a = fake.segment("s1-0", ["x", "y"])
    idmap = IdMap()
    fake.sync(idmap, version(1, a))

    b = fake.segment("s2-0", ["x"])
    fake.sync(idmap, version(2, fake.delete(a, "x"), b))
    assert idmap.where["x"] == ("s2-0", 0)

    # the merged segment is listed first (where the compactor puts it), the newer write after it
    c = fake.segment("s3-0", ["z", "x"])
    merged = fake.segment("s4-0", ["y"])
    fake.sync(idmap, version(4, merged, fake.delete(b, "x"), c))
    assert idmap.where == {"y": ("s4-0", 0), "z": ("s3-0", 0), "x": ("s3-0", 1)}


def test_the_writers_own_segment_added_before_the_sync_keeps_its_rows(fake):
    """The writer adds its new segment to the map, then syncs to what it published: the
    deletion vector that write set on the older segment must not remove the new row."""
    a = fake.segment("s1-0", ["x", "y"])
    idmap = IdMap()
    fake.sync(idmap, version(1, a))

    b = fake.segment("s2-0", ["x"])
    idmap.add(b, ["x"], ["new-hash"], np.empty(0, np.uint32))
    fake.sync(idmap, version(2, fake.delete(a, "x"), b))

    assert idmap.where == {"x": ("s2-0", 0), "y": ("s1-0", 1)}
    assert idmap.hash_of("x") == "new-hash"
    assert fake.id_reads == {}  # the new segment was known already


def test_a_rollback_to_an_older_version_brings_back_what_it_holds(fake):
    a = fake.segment("s1-0", ["x", "y", "z"])
    v1 = version(1, a)
    idmap = IdMap()
    fake.sync(idmap, v1)
    b = fake.segment("s2-0", ["x"])  # v2 updates x, v3 deletes y
    v3 = version(3, fake.delete(a, "x", "y"), b)
    fake.sync(idmap, v3)
    assert idmap.where == {"x": ("s2-0", 0), "z": ("s1-0", 2)}

    fake.sync(idmap, v1)  # CURRENT pointed back at v1 by a repair

    assert idmap.where == {"x": ("s1-0", 0), "y": ("s1-0", 1), "z": ("s1-0", 2)}
    assert idmap.segments["s1-0"].deleted.tolist() == []
    cold = IdMap()
    fake.sync(cold, v1)
    assert idmap.where == cold.where  # the warm map agrees with one built from scratch


def test_a_segment_whose_ids_do_not_match_its_rows_is_refused(fake):
    a = fake.segment("s1-0", ["a", "b"])
    fake.ids["s1-0"] = ["a"]  # the ids file lists fewer rows than the manifest says

    with pytest.raises(ValueError, match="1 ids for 2 rows"):
        fake.sync(IdMap(), version(1, a))


def test_a_warm_map_agrees_with_a_cold_one_over_a_history(fake):
    """Random writes, deletes and merges, and now and then a move back to an older
    version and forward again: after every sync, the map synced by diff is the map built
    from scratch."""
    rng = np.random.default_rng(3)
    segments: list[SegmentEntry] = []
    where: dict[str, tuple[str, int]] = {}  # the truth: live id -> (segment, row)
    warm = IdMap()
    history: list[VersionManifest] = []
    for number in range(1, 41):
        action = rng.choice(["write", "delete", "merge"]) if segments else "write"
        if action == "write":
            new_ids = [f"d{int(i)}" for i in rng.choice(60, size=int(rng.integers(1, 6)), replace=False)]
            entry = fake.segment(f"s{number}-0", new_ids)
            for doc_id in new_ids:
                if doc_id in where:
                    segment_id, _ = where[doc_id]
                    n = next(k for k, s in enumerate(segments) if s.id == segment_id)
                    segments[n] = fake.delete(segments[n], doc_id)
            segments.append(entry)
            where.update({d: (entry.id, row) for row, d in enumerate(new_ids)})
        elif action == "delete" and where:
            doc_id = sorted(where)[int(rng.integers(len(where)))]
            segment_id, _ = where.pop(doc_id)
            n = next(k for k, s in enumerate(segments) if s.id == segment_id)
            segments[n] = fake.delete(segments[n], doc_id)
        elif action == "merge" and len(segments) >= 2:
            chosen = segments[:2]
            live = [d for d, (s, _) in sorted(where.items(), key=lambda kv: (kv[1][0], kv[1][1]))
                    if s in {c.id for c in chosen}]
            if live:
                merged = fake.segment(f"s{number}-0", live)
                where.update({d: (merged.id, row) for row, d in enumerate(live)})
                segments = [merged, *segments[2:]]
            else:
                segments = segments[2:]
        segments = [s for s in segments if s.live > 0]
        manifest = version(number, *segments)

        history.append(manifest)

        fake.sync(warm, manifest)
        cold = IdMap()
        fake.sync(cold, manifest)

        assert warm.where == cold.where == where, f"v{number} ({action})"
        if number % 5 == 0:  # a repair moves CURRENT back, then writes go on from the newest
            older = history[int(rng.integers(len(history)))]
            fake.sync(warm, older)
            rebuilt = IdMap()
            fake.sync(rebuilt, older)
            assert warm.where == rebuilt.where, f"back to v{older.version} from v{number}"
            fake.sync(warm, manifest)
            assert warm.where == where, f"forward again to v{number}"
