"""Which segments to merge: a tiered merge policy after Lucene's TieredMergePolicy.

Segments are sized by their live rows; those under ``floor_rows`` count as that size
(tiny segments are merged eagerly). The policy allows about ``segments_per_tier``
segments per tier, each tier ``max_merge_at_once`` times larger than the one below;
past that budget it picks the cheapest merge of up to ``max_merge_at_once`` segments
adjacent in size order, scored as Lucene does (lower is better):

    skew = largest / total      (merging equal sizes is best)
    score = skew * total ** 0.05 * (live / rows) ** 2   (favour reclaiming deletions)

A segment whose deleted share exceeds ``deletes_pct_allowed`` is merged on its own (or
with its neighbours) to purge them. A merge never produces more than
``max_segment_rows`` rows: segments at half of it or more are left alone unless their
deletions must be purged, so a collection far beyond the cap is many large segments,
each within one Lambda's 15 minutes to build. Pure: sizes in, segment ids out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ragserve.snapshots.manifest import SegmentEntry


@dataclass(frozen=True, slots=True)
class MergePolicy:
    segments_per_tier: int = 10
    max_merge_at_once: int = 10
    max_segment_rows: int = 500_000
    floor_rows: int = 4096
    deletes_pct_allowed: float = 20.0

    def find_merge(self, segments: Sequence[SegmentEntry]) -> list[str] | None:
        """The ids of the segments to merge next, or None if the collection is in shape."""
        purge = self._purge(segments)
        if purge:
            return purge
        eligible = sorted((s for s in segments if s.live * 2 < self.max_segment_rows),
                          key=lambda s: (-s.live, s.id))
        if len(eligible) <= self._allowed_count(segments):
            return None
        best: tuple[float, list[SegmentEntry]] | None = None
        for start in range(len(eligible)):
            candidate: list[SegmentEntry] = []
            total = 0
            for s in eligible[start:start + self.max_merge_at_once]:
                if total + s.live > self.max_segment_rows:
                    continue
                candidate.append(s)
                total += s.live
            if len(candidate) < 2:
                continue
            score = self._score(candidate)
            if best is None or score < best[0]:
                best = (score, candidate)
        return [s.id for s in best[1]] if best else None

    def _size(self, s: SegmentEntry) -> int:
        return max(s.live, self.floor_rows)

    def _allowed_count(self, segments: Sequence[SegmentEntry]) -> int:
        """How many segments a collection of this size may hold (Lucene's tier budget)."""
        total = sum(self._size(s) for s in segments if s.live * 2 < self.max_segment_rows)
        level = self.floor_rows
        allowed = 0.0
        while total > 0:
            tier_segments = math.ceil(total / level)
            if tier_segments < self.segments_per_tier:
                allowed += tier_segments
                break
            allowed += self.segments_per_tier
            total -= self.segments_per_tier * level
            level *= self.max_merge_at_once
        return max(int(allowed), self.segments_per_tier)

    def _score(self, candidate: Sequence[SegmentEntry]) -> float:
        sizes = [self._size(s) for s in candidate]
        total = sum(sizes)
        skew = max(sizes) / total
        live = sum(s.live for s in candidate)
        rows = sum(s.rows for s in candidate)
        return skew * total ** 0.05 * (live / rows) ** 2

    def _purge(self, segments: Sequence[SegmentEntry]) -> list[str] | None:
        """A segment over the deletion allowance, with the smallest neighbours that fit."""
        # one whose live rows alone exceed the cap stays as it is: purging it would build a
        # segment larger than a merge may (as Lucene leaves its too-large segments alone)
        heavy = [s for s in segments if s.deleted * 100 > self.deletes_pct_allowed * s.rows
                 and s.live <= self.max_segment_rows]
        if not heavy:
            return None
        worst = max(heavy, key=lambda s: (s.deleted / s.rows, s.id))
        chosen, total = [worst], worst.live
        for s in sorted((s for s in segments if s.id != worst.id), key=lambda s: (s.live, s.id)):
            if len(chosen) >= self.max_merge_at_once or total + s.live > self.max_segment_rows:
                break
            if s.live * 2 < self.max_segment_rows and s.live <= max(worst.live, self.floor_rows):
                chosen.append(s)
                total += s.live
        return [s.id for s in chosen]
