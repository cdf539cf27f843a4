"""The tiered merge policy (``MergePolicy.find_merge``): no merge while the segment count
is within the tier budget; past it, a merge of up to ``max_merge_at_once`` segments of
similar size; never a merge above ``max_segment_rows``, segments at half of it or more
left alone; a segment over the deletion allowance picked for purging. Then simulated
ingest streams, merging whatever the policy asks for until it is satisfied, settle with
a bounded segment count and write amplification. Segments are manifest entries whose
blob references are sha256 of distinct strings: the policy only reads their sizes."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragserve.segments.policy import MergePolicy
from ragserve.snapshots.manifest import BlobRef, SegmentEntry


def ref(tag: str) -> BlobRef:
    return BlobRef(hashlib.sha256(tag.encode()).hexdigest(), 1)


def seg(segment_id: str, rows: int, deleted: int = 0) -> SegmentEntry:
    return SegmentEntry(id=segment_id, rows=rows, vectors=ref(f"{segment_id}/v"), docs=ref(f"{segment_id}/d"),
                        ids=ref(f"{segment_id}/i"), deletes=ref(f"{segment_id}/x/{deleted}") if deleted else None,
                        deleted=deleted)


def segs(*sizes: int, start: int = 1) -> list[SegmentEntry]:
    return [seg(f"s{start + n}-0", rows) for n, rows in enumerate(sizes)]


def by_id(segments: Sequence[SegmentEntry]) -> dict[str, SegmentEntry]:
    return {s.id: s for s in segments}


# -- when to merge -----------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 10, 11])
def test_no_merge_while_the_segment_count_is_within_budget(count):
    assert MergePolicy().find_merge(segs(*[100] * count)) is None


def test_no_merge_of_an_empty_collection():
    assert MergePolicy().find_merge([]) is None


@pytest.mark.parametrize("count", [12, 15, 30])
def test_a_dozen_small_segments_are_merged_up_to_max_merge_at_once(count):
    policy = MergePolicy()
    segments = segs(*[100 + n for n in range(count)])

    chosen = policy.find_merge(segments)

    assert chosen is not None and len(chosen) == policy.max_merge_at_once
    assert len(set(chosen)) == len(chosen) and set(chosen) <= set(by_id(segments))


def test_max_merge_at_once_caps_the_merge():
    policy = MergePolicy(segments_per_tier=4, max_merge_at_once=3)

    chosen = policy.find_merge(segs(*[100] * 20))

    assert chosen is not None and len(chosen) == 3


def test_a_merge_takes_segments_of_similar_size():
    policy = MergePolicy()  # floor 4096: small segments all count as 4096 rows
    large = segs(*[40_000 + n for n in range(10)], start=1)
    small = segs(*[500 + n for n in range(15)], start=100)

    chosen = policy.find_merge([*large, *small])

    assert chosen is not None and len(chosen) == 10
    assert set(chosen) <= set(by_id(small))  # ten of a kind, not large and small mixed


def test_a_merge_never_exceeds_max_segment_rows():
    policy = MergePolicy(max_segment_rows=10_000, floor_rows=100)
    segments = segs(*[3_000 + n for n in range(30)])  # over budget; four of them would pass the cap

    chosen = policy.find_merge(segments)

    assert chosen is not None and len(chosen) == 3
    assert sum(by_id(segments)[i].live for i in chosen) <= 10_000
    uncapped = MergePolicy(max_segment_rows=1_000_000, floor_rows=100).find_merge(segments)
    assert uncapped is not None and len(uncapped) == 10  # the cap, not the budget, made it three


def test_segments_at_half_the_cap_or_more_are_left_alone():
    policy = MergePolicy(max_segment_rows=10_000, floor_rows=100)
    big = segs(*[5_000] * 25 + [9_000] * 5, start=1)  # 30 segments, all at least half the cap

    assert policy.find_merge(big) is None
    small = segs(*[100] * 12, start=100)
    chosen = policy.find_merge([*big, *small])
    assert chosen is not None and set(chosen) <= set(by_id(small))


@pytest.mark.parametrize("pct,expected", [(20, False), (21, True), (60, True)])
def test_a_segment_over_the_deletion_allowance_is_purged(pct, expected):
    policy = MergePolicy()  # deletes_pct_allowed 20
    heavy = seg("s1-0", 1000, deleted=pct * 10)
    others = segs(5_000, 300, start=2)

    chosen = policy.find_merge([*others, heavy])

    if expected:
        assert chosen is not None and chosen[0] == "s1-0"
    else:
        assert chosen is None  # three segments: in budget, and exactly at the allowance


def test_a_purge_takes_the_worst_segment_and_small_neighbours_that_fit():
    policy = MergePolicy(max_segment_rows=10_000, floor_rows=100)
    worst = seg("s1-0", 4_000, deleted=3_000)  # 75 % deleted, 1000 live
    mild = seg("s2-0", 1_000, deleted=300)  # 30 % deleted
    segments = [worst, mild, *segs(50, 80, 2_000, 6_000, start=3)]

    chosen = policy.find_merge(segments)

    assert chosen is not None and chosen[0] == "s1-0"
    sizes = by_id(segments)
    assert all(sizes[i].live <= 1_000 for i in chosen[1:])  # no neighbour larger than the purged one
    assert "s6-0" not in chosen  # 6000 live: at or above half the cap
    assert sum(sizes[i].live for i in chosen) <= 10_000


def test_a_heavy_segment_at_half_the_cap_is_still_purged():
    policy = MergePolicy(max_segment_rows=10_000, floor_rows=100)
    heavy = seg("s1-0", 9_000, deleted=3_000)  # 6000 live: left alone by size, not by its deletions

    chosen = policy.find_merge([heavy, *segs(200, 300, start=2)])

    assert chosen is not None and chosen[0] == "s1-0"


def test_a_purge_never_builds_a_segment_above_the_cap():
    policy = MergePolicy(max_segment_rows=10_000, floor_rows=100)
    oversized = seg("s1-0", 30_000, deleted=9_000)  # 21000 live: larger than any merge may build

    assert policy.find_merge([oversized, *segs(200, 300, start=2)]) is None


sizes = st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 100)), min_size=0, max_size=40)


@given(sizes)
def test_any_merge_is_distinct_segments_within_the_cap(spec):
    policy = MergePolicy(max_segment_rows=10_000, floor_rows=200, segments_per_tier=4, max_merge_at_once=5)
    segments = [seg(f"s{n + 1}-0", rows, rows * pct // 100) for n, (rows, pct) in enumerate(spec)]

    chosen = policy.find_merge(segments)

    if chosen is None:
        return
    found = by_id(segments)
    picked = [found[i] for i in chosen]
    assert len(set(chosen)) == len(chosen) and 1 <= len(chosen) <= policy.max_merge_at_once
    assert sum(s.live for s in picked) <= policy.max_segment_rows
    purge = picked[0].deleted * 100 > policy.deletes_pct_allowed * picked[0].rows
    if not purge:
        assert len(chosen) >= 2
        assert all(s.live * 2 < policy.max_segment_rows for s in picked)


# -- simulated streams -------------------------------------------------------------------


@dataclass
class Stream:
    """Segments as a writer and a compactor leave them: every step appends one segment,
    then each merge the policy asks for replaces its segments with one of their live
    rows, until the policy is satisfied."""

    policy: MergePolicy
    segments: list[SegmentEntry] = field(default_factory=list)
    next_id: int = 0
    ingested: int = 0
    merged_rows: int = 0
    merges: int = 0
    largest_merge: int = 0
    max_segments: int = 0

    def new_id(self) -> str:
        self.next_id += 1
        return f"s{self.next_id}-0"

    def append(self, rows: int) -> None:
        self.segments.append(seg(self.new_id(), rows))
        self.ingested += rows
        self.settle()

    def delete(self, rng: random.Random, rows: int) -> None:
        """Mark ``rows`` live rows deleted, at random over the segments (updates supersede)."""
        for _ in range(rows):
            target = rng.choice([n for n, s in enumerate(self.segments) if s.live > 1])
            s = self.segments[target]
            self.segments[target] = seg(s.id, s.rows, s.deleted + 1)

    def settle(self) -> None:
        for _ in range(10_000):
            chosen = self.policy.find_merge(self.segments)
            if chosen is None:
                self.max_segments = max(self.max_segments, len(self.segments))
                return
            picked = [s for s in self.segments if s.id in chosen]
            assert len(picked) == len(set(chosen)) == len(chosen)
            live = sum(s.live for s in picked)
            assert live <= self.policy.max_segment_rows
            self.merges += 1
            self.merged_rows += live
            self.largest_merge = max(self.largest_merge, live)
            self.segments = [s for s in self.segments if s.id not in chosen] + [seg(self.new_id(), live)]
        raise AssertionError("the policy never settled")

    @property
    def amplification(self) -> float:
        return self.merged_rows / self.ingested

    def report(self, name: str) -> str:
        return (f"{name}: {self.ingested} rows in, {self.merges} merges, max {self.max_segments} segments, "
                f"final {len(self.segments)}, write amplification {self.amplification:.2f}, "
                f"largest merge {self.largest_merge} rows")


def test_a_stream_of_small_writes_settles_with_bounded_segments_and_amplification():
    policy = MergePolicy()
    stream = Stream(policy)

    for _ in range(1000):
        stream.append(100)

    print(stream.report("1000 writes of 100 rows, defaults"))
    assert sum(s.live for s in stream.segments) == stream.ingested == 100_000  # nothing lost or doubled
    assert stream.merges > 0
    assert stream.amplification <= 10
    assert stream.max_segments <= 3 * policy.segments_per_tier
    assert policy.find_merge(stream.segments) is None


def test_a_stream_against_a_small_cap_never_builds_a_segment_above_it():
    policy = MergePolicy(max_segment_rows=20_000, floor_rows=100)
    stream = Stream(policy)

    for _ in range(1000):
        stream.append(100)

    print(stream.report("1000 writes of 100 rows, cap 20000, floor 100"))
    assert sum(s.live for s in stream.segments) == 100_000
    assert stream.largest_merge <= 20_000 and max(s.rows for s in stream.segments) <= 20_000
    assert stream.amplification <= 10
    assert stream.max_segments <= 3 * policy.segments_per_tier


def test_a_stream_with_updates_purges_deletions_and_settles():
    policy = MergePolicy(max_segment_rows=20_000, floor_rows=100)
    stream = Stream(policy)
    rng = random.Random(7)

    for step in range(1000):
        stream.append(100)
        if step >= 10:
            stream.delete(rng, 30)  # 30 % of each write replaces an older document
            stream.settle()
        assert all(s.deleted * 100 <= policy.deletes_pct_allowed * s.rows for s in stream.segments)

    print(stream.report("1000 writes of 100 rows, 30 % updates, cap 20000, floor 100"))
    deleted = sum(s.deleted for s in stream.segments)
    assert sum(s.live for s in stream.segments) == 100_000 - 30 * 990
    assert deleted <= policy.deletes_pct_allowed / 100 * sum(s.rows for s in stream.segments)
    assert stream.amplification <= 10
    assert stream.max_segments <= 3 * policy.segments_per_tier
