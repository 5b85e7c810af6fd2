"""A mergeable quantile sketch for durations (log-spaced buckets, 1% relative error).

Bucket ``i`` counts values in ``(g^(i-1), g^i]`` with ``g = (1 + a) / (1 - a)``; answering
a quantile with the bucket's midpoint ``2 g^i / (g + 1)`` is within ``a`` of the true value
(the DDSketch construction, relative accuracy ``a``). Two sketches merge by adding counts, so
days, tenants and sidecars combine exactly: the merged sketch is the one the union of their
values would have built.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final

import msgspec

__all__ = ["DurationSketch", "SketchState"]

RELATIVE_ACCURACY: Final = 0.01
_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA: Final = 1 / math.log(_GAMMA)


class SketchState(msgspec.Struct, frozen=True, array_like=True):
    """The encodable form: buckets sorted by index, so equal sketches encode to equal bytes."""

    count: int
    total: int
    zeros: int
    buckets: list[tuple[int, int]]


class DurationSketch:
    __slots__ = ("buckets", "count", "total", "zeros")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0
        # Values ≤ 0 (a duration too short to measure) have no logarithm; they are the smallest.
        self.zeros = 0

    def add(self, value: int) -> None:
        self.count += 1
        if value <= 0:
            self.zeros += 1
            return
        self.total += value
        index = math.ceil(math.log(value) * _INV_LOG_GAMMA)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1

    def merge(self, other: DurationSketch) -> None:
        self.count += other.count
        self.total += other.total
        self.zeros += other.zeros
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n

    def quantile(self, q: float) -> int | None:
        """The value at quantile ``q`` (0 ≤ q ≤ 1), within 1%; None when empty."""
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be between 0 and 1: {q}")
        if self.count == 0:
            return None
        # The rank of the wanted value among the sorted values (0-based, nearest-rank).
        rank = min(self.count - 1, max(0, math.ceil(q * self.count) - 1))
        if rank < self.zeros:
            return 0
        seen = self.zeros
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                return round(2 * _GAMMA**index / (_GAMMA + 1))
        raise AssertionError("bucket counts do not add up to count")  # pragma: no cover

    def count_at_most(self, bound: float) -> int:
        """How many values fall in buckets wholly at or below ``bound`` (for fixed-bucket
        histograms built from the sketch; a bucket straddling the bound counts above it)."""
        if bound < 0:
            return 0
        counted = self.zeros
        for index, n in self.buckets.items():
            if _GAMMA**index <= bound:
                counted += n
        return counted

    def state(self) -> SketchState:
        return SketchState(self.count, self.total, self.zeros, sorted(self.buckets.items()))

    @classmethod
    def from_state(cls, state: SketchState) -> DurationSketch:
        sketch = cls()
        sketch.count, sketch.total, sketch.zeros = state.count, state.total, state.zeros
        sketch.buckets = dict(state.buckets)
        return sketch

    @classmethod
    def of(cls, values: Iterable[int]) -> DurationSketch:
        sketch = cls()
        for value in values:
            sketch.add(value)
        return sketch
