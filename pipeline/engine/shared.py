"""What the engines of one process share: captures, rules, endpoint latency baselines, auth-failure
counts, the memory budget's count and the process-wide emission bucket. With an `origin` (the worker
runs with others), the shared part of it is also shared with every other worker process through a log
they all read in one order: what changes here goes to `outbox`, what others changed comes back
through Hindsight.apply_shared."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from pipeline.engine.budget import Bucket
from pipeline.engine.model import CAPTURE_FIELDS, Capture, Trigger, WindowConfig
from pipeline.engine.novelty import Catalog, Entry
from pipeline.engine.sketch import LatencySketch
from pipeline.engine.templates import Templates
from pipeline.rules.compiled import RuleSet
from pipeline.types import LogRecord


class Shared:
    """State every partition of one process reads and writes."""

    def __init__(
        self,
        config: WindowConfig,
        decode_line: Callable[[bytes], LogRecord] | None = None,
        origin: str | None = None,
    ) -> None:
        self.config = config
        self.decode_line = decode_line  # a buffered line's encoded form back to its record
        self.origin = origin  # this process on the shared log; None: it shares its state with nobody
        self.outbox: list[dict[str, Any]] = []  # changes for the shared log (with an origin)
        # a user's recent auth failures (event time), counted for the whole process (with an
        # origin: for every process, in the shared log's order)
        self.auth_failures: dict[str, deque[int]] = {}
        # With an origin: failures already counted (a rebuild reports its replayed ones again), and
        # those that completed a count, whichever process's they were (id -> event time)
        self.auth_counted: dict[str, int] = {}
        self.auth_fired: dict[str, int] = {}
        # captures by record field, then value: endpoint (security, rules), user_id and service (rules)
        self.captures: dict[str, dict[str, Capture]] = {f: {} for f in CAPTURE_FIELDS}
        self.rules = RuleSet()
        self.baselines: dict[str, tuple[int, LatencySketch]] = {}
        self._p95: dict[str, float | None] = {}  # baselines' p95, computed when a baseline changes
        self.buffered_bytes = 0
        self.global_bucket = Bucket(config.global_budget_lps * config.budget_burst_s)
        self.catalog = Catalog(config)  # templates seen, and the novel_template trigger's decision
        # template ids of lines that came without one (not through ingest): a small cache, since with
        # ingest in front no line needs it
        self.templates = Templates(cache_size=10_000)

    def learned_template(self, entry: Entry, ts: int) -> None:
        """A template learned here: every other process learns it from the shared log."""
        if self.origin is not None:
            self.outbox.append(
                {
                    "kind": "template",
                    "service": entry.service,
                    "scope": entry.endpoint,
                    "template_id": entry.template_id,
                    "ts": ts,
                }
            )

    def baseline_p95(self, endpoint: str) -> float | None:
        if endpoint not in self._p95:
            entry = self.baselines.get(endpoint)
            self._p95[endpoint] = entry[1].quantile(0.95) if entry else None
        return self._p95[endpoint]

    def close_baseline(
        self, endpoint: str, window_start: int, sketch: LatencySketch, publish: bool = True
    ) -> None:
        """A partition's (or another process's) part of an endpoint's closed window."""
        if publish and self.origin is not None:
            self.outbox.append(
                {"kind": "baseline", "endpoint": endpoint, "window": window_start, "sketch": sketch.to_dict()}
            )
        current = self.baselines.get(endpoint)
        if current is None or current[0] < window_start:
            merged = LatencySketch().merge(sketch)
            self.baselines[endpoint] = (window_start, merged)
            self._p95.pop(endpoint, None)
        elif current[0] == window_start:
            current[1].merge(sketch)  # another partition's part of the same window
            self._p95.pop(endpoint, None)

    def capture_for(self, rec: LogRecord, ts: int) -> Capture | None:
        for fieldname, caps in self.captures.items():
            if caps:
                value = rec[fieldname]  # type: ignore[literal-required]
                cap = caps.get(value) if value else None
                if cap is not None and cap.since_us <= ts <= cap.until_us:
                    return cap
        return None

    def capture(
        self, fieldname: str, value: str, since: int, until: int, trig: Trigger, publish: bool = True
    ) -> Capture:
        """Start or extend the capture of every line with this endpoint/user/service, in all partitions
        (and, with an origin and `publish`, in every other worker process)."""
        if publish and self.origin is not None:
            self.outbox.append(
                {
                    "kind": "capture",
                    "field": fieldname,
                    "value": value,
                    "since": since,
                    "until": until,
                    "trigger_id": trig.id,
                    "trigger_offset": trig.offset,
                    "reasons": list(trig.reasons),
                }
            )
        caps = self.captures[fieldname]
        current = caps.get(value)
        if current is not None and current.until_us >= since:
            since, until = min(since, current.since_us), max(until, current.until_us)
        cap = caps[value] = Capture(fieldname, value, since, until, trig)
        return cap

    def auth_failure(self, user: str, ts: int) -> bool:
        """Count one auth failure of `user`: True when it makes auth_fail_count within the lookback
        (the count then starts again)."""
        fails = self.auth_failures.get(user)
        if fails is None:
            fails = self.auth_failures[user] = deque()
        fails.append(ts)
        horizon = ts - self.config.lookback_us
        while fails and fails[0] < horizon:
            fails.popleft()
        if len(fails) >= self.config.auth_fail_count:
            fails.clear()
            return True
        return False

    def shared_auth_failure(self, user: str, ts: int, ref: str) -> bool:
        """auth_failure for a failure read from the shared log: one that was counted already (a rebuild
        reported it again) does not count twice; one that completes a count is remembered as fired."""
        if ref in self.auth_counted:
            return False
        self.auth_counted[ref] = ts
        fired = self.auth_failure(user, ts)
        if fired:
            self.auth_fired[ref] = ts
        return fired

    def take_outbox(self) -> list[dict[str, Any]]:
        """The changes for the shared log since the last call."""
        out, self.outbox = self.outbox, []
        return out

    def expire_captures(self, now_us: int) -> None:
        """Forget captures that ended (event time) a follow period ago, so their lines take the fast path."""
        horizon = now_us - self.config.follow_us
        for caps in self.captures.values():
            for value in [v for v, c in caps.items() if c.until_us < horizon]:
                del caps[value]
        oldest = now_us - self.config.lookback_us
        for user in [u for u, fails in self.auth_failures.items() if not fails or fails[-1] < oldest]:
            del self.auth_failures[user]
        for seen in (self.auth_counted, self.auth_fired):
            for ref in [r for r, ts in seen.items() if ts < oldest]:
                del seen[ref]
