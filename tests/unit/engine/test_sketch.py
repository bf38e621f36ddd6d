"""The latency sketch: quantiles within its 2% bound, one-pass quantiles equal to single ones,
indexed adds equal to plain adds, merging equal to adding everything to one sketch."""

from __future__ import annotations

import random

from pipeline.engine.sketch import LatencySketch, index_values


def values(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.lognormvariate(3, 1) for _ in range(n)] + [0.0] * (n // 20)


def test_quantiles_are_within_two_percent_of_the_exact_ones() -> None:
    data = values(20_000, 1)
    sketch = LatencySketch()
    sketch.add_many(data)
    exact = sorted(data)
    for q in (0.5, 0.9, 0.95, 0.99):
        want = exact[max(0, int(q * len(exact) + 0.999999) - 1)]
        got = sketch.quantile(q)
        assert got is not None and abs(got - want) <= 0.02 * want + 1e-9, (q, got, want)


def test_one_pass_quantiles_equal_single_quantiles_and_indexed_adds_equal_plain_adds() -> None:
    data = values(5_000, 2)
    plain, indexed, merged = LatencySketch(), LatencySketch(), LatencySketch()
    for v in data:
        plain.add(v)
    indexed.add_indexed(*index_values(data[:2000]))
    indexed.add_indexed(*index_values(data[2000:]))
    half = LatencySketch()
    half.add_many(data[:2500])
    merged.add_many(data[2500:])
    merged.merge(half)
    for s in (indexed, merged):
        assert (s.buckets, s.count, s.zero, s.max) == (plain.buckets, plain.count, plain.zero, plain.max)
    qs = (0.0001, 0.01, 0.5, 0.95, 0.99, 1.0)
    assert plain.quantiles(qs) == [plain.quantile(q) for q in qs]
    assert LatencySketch().quantiles((0.5, 0.99)) == [None, None]
    only_zero = LatencySketch()
    only_zero.add_many([0.0, 0.0])
    assert only_zero.quantiles((0.5, 1.0)) == [0.0, 0.0]
    round_trip = LatencySketch.from_dict(plain.to_dict())
    assert round_trip.buckets == plain.buckets and round_trip.count == plain.count
