"""The latency sketch: quantiles within its 2% bound, one-pass quantiles equal to single ones,
indexed adds equal to plain adds, merging equal to adding everything to one sketch."""

from __future__ import annotations

import random

from pipeline.engine.sketch import LatencySketch, index_values
from pipeline.engine.stats import Stats, slowest


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


def _slowest_by_sorting(sessions: dict[str, Stats], n: int) -> list[str]:
    """The definition: sessions by p95 descending, ties first seen (every p95 computed)."""
    ranked = [
        (-(s.sketch.quantile(0.95) or 0.0), i, k)
        for i, (k, s) in enumerate(sessions.items())
        if s.sketch.count
    ]
    return [k for _, _, k in sorted(ranked)[:n]]


def test_slowest_sessions_are_the_highest_p95s_in_first_seen_order_on_ties() -> None:
    rng = random.Random(5)
    for trial in range(40):
        sessions: dict[str, Stats] = {}
        for i in range(rng.randint(0, 300)):
            stats = Stats()
            # few distinct values, so equal maxima and equal p95s are common
            for _ in range(rng.randint(0, 6)):
                stats.sketch.add(rng.choice([5.0, 50.0, 120.0, 800.0, 800.0, 2500.0]))
            sessions[f"s{i}"] = stats
        for n in (0, 1, 3, 10):
            got = [k for k, _ in slowest(sessions, n)]
            assert got == _slowest_by_sorting(sessions, n), (trial, n)
