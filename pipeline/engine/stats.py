"""Window statistics of one partition: per session, endpoint and rule, closed by the watermark into
stats records (and endpoint latency baselines)."""

from __future__ import annotations

import heapq
from typing import Any

from pipeline.engine.model import Emission, WindowConfig, WindowMetrics
from pipeline.engine.shared import Shared
from pipeline.engine.sketch import LatencySketch


class Stats:
    """count, errors, bytes, latency sketch, first/last raw offsets of one window."""

    __slots__ = ("bytes", "count", "errors", "first_offset", "last_offset", "sketch")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.bytes = 0
        self.sketch = LatencySketch()
        self.first_offset = -1
        self.last_offset = -1

    def add(self, offset: int, count: int, errors: int, size: int, sketch: LatencySketch | None) -> None:
        """Add `count` lines of one raw message (a run of lines or a single one)."""
        self.count += count
        self.errors += errors
        self.bytes += size
        if sketch is not None:
            self.sketch.merge(sketch)
        if self.first_offset < 0:
            self.first_offset = offset
        self.last_offset = offset

    def row(self) -> dict[str, Any]:
        s = self.sketch
        p50, p95, p99 = s.quantiles((0.5, 0.95, 0.99))
        return {
            "count": self.count,
            "errors": self.errors,
            "bytes": self.bytes,
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "latency_count": s.count,
            "sketch": s.to_dict(),
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
        }


def slowest(sessions: dict[str, Stats], n: int) -> list[tuple[str, Stats]]:
    """The n sessions with the highest p95 latency (ties: first seen).

    A sketch's p95 never exceeds its max, so sessions are visited by max, highest first, and the
    search stops once the next max cannot beat the n-th p95 found: few quantiles get computed. They
    come off a heap (O(sessions), then a few pops) rather than a full sort by a key function:
    slowest() with that sort measured 1.5-5% of the worker's main thread (py-spy).
    """
    if n <= 0:
        return []
    heap = [(-s.sketch.max, i, k, s) for i, (k, s) in enumerate(sessions.items()) if s.sketch.count]
    heapq.heapify(heap)  # pops in the order of max descending, then first seen
    best: list[tuple[float, int, str, Stats]] = []  # (p95, order, key, stats)
    order = -1
    while heap:
        neg_top, _, key, stats = heapq.heappop(heap)
        order += 1
        if len(best) >= n and -neg_top < best[-1][0]:
            break
        p95 = stats.sketch.quantile(0.95) or 0.0
        best.append((p95, order, key, stats))
        best.sort(key=lambda t: (-t[0], t[1]))
        del best[n:]
    return [(key, stats) for _, _, key, stats in best]


class WindowStats:
    """The open windows of one partition; a window closes once the watermark passes its end plus grace."""

    def __init__(self, config: WindowConfig, shared: Shared, metrics: WindowMetrics, partition: int) -> None:
        self.config = config
        self.shared = shared
        self.metrics = metrics
        self.partition = partition
        self.endpoints: dict[tuple[int, str], Stats] = {}
        self.rules: dict[tuple[int, str], list[int]] = {}
        self.sessions: dict[int, dict[str, Stats]] = {}
        self.closed_until = -1  # windows starting at or before this were emitted; later lines are late
        self.next_close_at = 0  # watermark at which some open window becomes closable
        self.span = config.stats_grace_us + config.stats_window_us

    def any_open(self) -> bool:
        return bool(self.endpoints or self.sessions or self.rules)

    def session(self, key: str, win: int) -> Stats:
        """The stats of one session in window `win` (opened on first use)."""
        windows = self.sessions.get(win)
        if windows is None:
            windows = self.sessions[win] = {}
            self.next_close_at = min(self.next_close_at, win + self.span)
        stats = windows.get(key)
        if stats is None:
            stats = windows[key] = Stats()
        return stats

    def endpoint(self, win: int, endpoint: str) -> Stats | None:
        """The stats of one endpoint in window `win`; None when that window was already emitted."""
        if win <= self.closed_until:
            self.metrics.late_stats += 1  # its window was already emitted; counting it would split the row
            return None
        ew = self.endpoints.get((win, endpoint))
        if ew is None:
            ew = self.endpoints[(win, endpoint)] = Stats()
            self.next_close_at = min(self.next_close_at, win + self.span)
        return ew

    def rule(self, ts: int, rule_ids: tuple[str, ...], matched: int = -1, emitted: int = -1) -> None:
        """Per rule and window: [matches, matched bytes, lines emitted, bytes emitted]."""
        win = ts - ts % self.config.stats_window_us
        if win <= self.closed_until:
            self.metrics.late_stats += 1
            return
        for rule_id in rule_ids:
            counts = self.rules.get((win, rule_id))
            if counts is None:
                counts = self.rules[(win, rule_id)] = [0, 0, 0, 0]
                self.next_close_at = min(self.next_close_at, win + self.span)
            if matched >= 0:
                counts[0] += 1
                counts[1] += matched
            if emitted >= 0:
                counts[2] += 1
                counts[3] += emitted

    def close(self, em: Emission, replay: bool, now_us: int, watermark: int) -> None:
        """Emit every window that ended a grace period before `now_us` (event time)."""
        cfg = self.config
        limit = now_us - self.span
        if not self.any_open():
            return
        before = len(em.stats)
        self.closed_until = max(self.closed_until, limit)
        for win_key in [k for k in self.endpoints if k[0] <= limit]:
            stats = self.endpoints.pop(win_key)
            win, endpoint = win_key
            self.shared.close_baseline(endpoint, win, stats.sketch, not replay)
            if not replay:
                em.stats.append(
                    {
                        "kind": "endpoint",
                        "window_start_us": win,
                        "window_end_us": win + cfg.stats_window_us,
                        "endpoint": endpoint,
                        "partition": self.partition,
                        **stats.row(),
                    }
                )
        for win in [w for w in self.sessions if w <= limit]:
            sessions = self.sessions.pop(win)
            if replay:
                continue
            for rank, (k, s) in enumerate(slowest(sessions, cfg.slowest_sessions), start=1):
                em.stats.append(
                    {
                        "kind": "slow_session",
                        "window_start_us": win,
                        "window_end_us": win + cfg.stats_window_us,
                        "session": k,
                        "rank": rank,
                        "partition": self.partition,
                        **s.row(),
                    }
                )
        for win_key in [k for k in self.rules if k[0] <= limit]:
            matches, matched_bytes, emitted, emitted_bytes = self.rules.pop(win_key)
            if not replay:
                em.stats.append(
                    {
                        "kind": "rule",
                        "window_start_us": win_key[0],
                        "window_end_us": win_key[0] + cfg.stats_window_us,
                        "rule_id": win_key[1],
                        "partition": self.partition,
                        "matches": matches,
                        "matched_bytes": matched_bytes,
                        "lines_emitted": emitted,
                        "bytes_emitted": emitted_bytes,
                    }
                )
        self.metrics.stats_records += len(em.stats) - before
        starts = [k[0] for k in self.endpoints] + list(self.sessions) + [k[0] for k in self.rules]
        self.next_close_at = (min(starts) if starts else watermark) + self.span
