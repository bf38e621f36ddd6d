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
        buckets = self.buckets
        ceil, log, log_gamma = math.ceil, math.log, _LOG_GAMMA
        top = self.max
        zero = 0
        for value in values:
            if value > top:
                top = value
            if value <= 0.001:
                zero += 1
            else:
                index = ceil(log(value) / log_gamma)
                buckets[index] = buckets.get(index, 0) + 1
        self.max = top
        self.zero += zero
        self.count += len(values)

    def merge(self, other: LatencySketch) -> LatencySketch:
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n
        self.count += other.count
        self.zero += other.zero
        self.max = max(self.max, other.max)
        return self

    def quantile(self, q: float) -> float | None:
        """Nearest-rank quantile; None when empty."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        if rank <= self.zero:
            return 0.0
        seen = self.zero
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                # bucket midpoint (in log space), never above the largest value seen
                return min(2 * GAMMA**index / (GAMMA + 1), self.max)
        return self.max

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
