"""The duration sketch: quantiles within 1%, merging equals sketching the union."""

from __future__ import annotations

import math

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from projections import DurationSketch, SketchState

durations = st.lists(st.integers(0, 10**12), min_size=1, max_size=300)


@given(durations, st.floats(0, 1))
def test_a_quantile_is_within_one_percent_of_the_true_value(values: list[int], q: float) -> None:
    sketch = DurationSketch.of(values)
    ordered = sorted(values)
    true = ordered[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
    estimate = sketch.quantile(q)
    assert estimate is not None
    assert abs(estimate - true) <= 0.01 * true + 1


@given(durations, durations)
def test_merging_equals_sketching_the_union(a: list[int], b: list[int]) -> None:
    merged = DurationSketch.of(a)
    merged.merge(DurationSketch.of(b))
    assert merged.state() == DurationSketch.of(a + b).state()


@given(durations)
def test_the_state_round_trips_through_msgpack(values: list[int]) -> None:
    sketch = DurationSketch.of(values)
    data = msgspec.msgpack.encode(sketch.state())
    again = DurationSketch.from_state(msgspec.msgpack.decode(data, type=SketchState))
    assert again.state() == sketch.state()
    assert again.quantile(0.99) == sketch.quantile(0.99)


@given(durations, st.integers(0, 10**12))
def test_counts_at_a_bound_bracket_the_true_count(values: list[int], bound: int) -> None:
    counted = DurationSketch.of(values).count_at_most(bound)
    # A bucket straddling the bound counts above it, and buckets are 2% wide.
    assert sum(v <= bound / 1.0203 for v in values) <= counted <= sum(v <= bound for v in values)


def test_an_empty_sketch_has_no_quantile() -> None:
    assert DurationSketch().quantile(0.5) is None
