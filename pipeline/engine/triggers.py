"""Every trigger decision: which lines may trigger at all (the fast-path gate) and why a line
triggers. A new trigger is a setting (and WindowConfig field) plus a gate and a reason here.

Triggers: error (level), latency (over the floor and the endpoint's baseline), slow_session (the
session's p95 in its window), timeout (status or attribute), security (flags), auth_failures (a
user's repeated 401/403 within the lookback).
"""

from __future__ import annotations

from pipeline.engine.buffers import Session
from pipeline.engine.model import WindowConfig
from pipeline.engine.shared import Shared
from pipeline.types import LogRecord

# Reasons that also capture the line's endpoint in every partition for the follow period.
ENDPOINT_CAPTURE_REASONS = ("security", "auth_failures")


class Triggers:
    """The triggers of one partition (auth failures are counted for the process, or for all of them
    through the shared log)."""

    def __init__(self, config: WindowConfig, shared: Shared) -> None:
        self.config = config
        self.shared = shared
        # set by reasons() when this line is an auth failure to report to the shared log: whether it
        # fires is decided there, once for all processes (Hindsight.apply_shared)
        self.auth_to_report = False
        # A line below all of these gates cannot trigger.
        self.level_gate = config.trigger_level.value
        self.latency_gate = min(config.latency_floor_ms, config.slow_session_p95_ms)
        self.status_gate = config.timeout_status | config.auth_fail_status

    def may_fire(
        self, severity: int, latency: float | None, status: int | None, flags: int, st: Session
    ) -> bool:
        """False when no trigger can fire on this line: cheap tests of each trigger's own field
        (`flags`: Columns.flags, whether it has security flags or the timeout attribute)."""
        return (
            severity >= self.level_gate
            or (latency is not None and latency > self.latency_gate)
            or (status is not None and status in self.status_gate)
            or flags != 0
            or st.slow_pending
        )

    def anchor(self, st: Session, ts: int, reasons: list[str]) -> int:
        """The event time a trigger's window is centred on: the line's own, except for a slow session
        decided on a later line (its window had too few lines when the slow line came, which happens
        when lines arrive out of order): then the slow line's, whichever line completed the check."""
        if st.slow_at and len(reasons) == 1 and reasons[0] == "slow_session":
            return st.slow_at
        return ts

    def reasons(
        self, st: Session, rec: LogRecord, ts: int, severity: int, endpoint: str | None, latency: float | None
    ) -> list[str]:
        """Why this line triggers (empty: it does not); updates the triggers' own state."""
        cfg = self.config
        reasons = []
        if severity >= self.level_gate:
            reasons.append("error")
        if latency is not None and latency > cfg.latency_floor_ms:
            base = self.shared.baseline_p95(endpoint) if endpoint else None
            if base is None or latency > cfg.latency_factor * base:
                reasons.append("latency")
        if (
            not st.slow_fired
            and latency is not None
            and (latency > cfg.slow_session_p95_ms or st.slow_pending)
        ):
            if not st.slow_pending:
                st.slow_at = ts  # the session's window is judged from this slow line
            if st.stats.count < cfg.slow_session_min_lines:
                st.slow_pending = True
            else:
                st.slow_pending = False
                p95 = st.stats.sketch.quantile(0.95)
                if p95 is not None and p95 > cfg.slow_session_p95_ms:
                    st.slow_fired = True
                    reasons.append("slow_session")
        status = rec["status_code"]
        attrs = rec["attributes"]
        if status in cfg.timeout_status or (attrs and cfg.timeout_attribute in attrs):
            reasons.append("timeout")
        if rec["security_flags"]:
            reasons.append("security")
        user = rec["user_id"]
        if status in cfg.auth_fail_status and user:
            if self.shared.origin is not None:
                self.auth_to_report = True
            elif self.shared.auth_failure(user, ts):
                reasons.append("auth_failures")
        return reasons
