"""A mergeable latency sketch (log-spaced buckets, ~2% relative error), pure Python."""

from __future__ import annotations

import math

GAMMA = 1.04  # bucket i covers (GAMMA**(i-1), GAMMA**i]: relative error <= 2%
_LOG_GAMMA = math.log(GAMMA)


class LatencySketch:
    """Counts per log bucket; merging two sketches is adding their counts (DDSketch-style)."""

    __slots__ = ("buckets", "count", "max", "zero")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.zero = 0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        if value > self.max:
            self.max = value
        if value <= 0.001:
            self.zero += 1
            return
        index = math.ceil(math.log(value) / _LOG_GAMMA)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def add_many(self, values: list[float]) -> None:
        """add() for each value, with the loop kept tight (the worker's hot path)."""
        self.add_indexed(*index_values(values))

    def add_indexed(self, indices: list[int], zero: int, top: float, count: int) -> None:
        """Add values already turned into bucket indices (index_values): one log per value even when
        the same values go into several sketches (a session's and its endpoint's)."""
        buckets = self.buckets
        get = buckets.get
        for index in indices:
            buckets[index] = get(index, 0) + 1
        if top > self.max:
            self.max = top
        self.zero += zero
        self.count += count

    def merge(self, other: LatencySketch) -> LatencySketch:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.zero += other.zero
        self.max = max(self.max, other.max)
        return self

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile; None when empty."""
        return self.quantiles((q,))[0]

    def quantiles(self, qs: tuple[float, ...]) -> list[float | None]:
        """Several nearest-rank quantiles (ascending qs) in one pass over the sorted buckets."""
        if self.count == 0:
            return [None] * len(qs)
        out: list[float | None] = []
        ranks = [max(1, math.ceil(q * self.count)) for q in qs]
        i = 0
        while i < len(ranks) and ranks[i] <= self.zero:
            out.append(0.0)
            i += 1
        seen = self.zero
        buckets = self.buckets
        for index in sorted(buckets):
            if i == len(ranks):
                break
            seen += buckets[index]
            while i < len(ranks) and seen >= ranks[i]:
                # bucket midpoint (in log space), never above the largest value seen
                out.append(min(2 * GAMMA**index / (GAMMA + 1), self.max))
                i += 1
        out.extend([self.max] * (len(ranks) - i))
        return out

    def to_dict(self) -> dict[str, int]:
        """Bucket counts (the zero bucket as key 'z'), for storage and later merging."""
        out = {str(k): v for k, v in self.buckets.items()}
        if self.zero:
            out["z"] = self.zero
        return out

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> LatencySketch:
        sketch = cls()
        for key, n in data.items():
            if key == "z":
                sketch.zero += n
            else:
                index = int(key)
                sketch.buckets[index] = sketch.buckets.get(index, 0) + n
                sketch.max = max(sketch.max, GAMMA**index)
            sketch.count += n
        return sketch


def index_values(values: list[float]) -> tuple[list[int], int, float, int]:
    """(bucket indices of the positive values, how many were ~0, the largest, how many in all)."""
    log, ceil, log_gamma = math.log, math.ceil, _LOG_GAMMA
    top = max(values) if values else 0.0
    indices = [ceil(log(v) / log_gamma) for v in values if v > 0.001]
    return indices, len(values) - len(indices), top, len(values)
