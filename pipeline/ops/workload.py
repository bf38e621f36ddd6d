"""A realistic multi-service workload with ground truth: which lines a correct pipeline keeps."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field

from pipeline.types import Level, LogRecord

SERVICES = {
    "api-gateway": ["/api/cart", "/api/search", "/api/checkout", "/api/login"],
    "checkout": ["/api/checkout", "/api/cart"],
    "payments": ["/api/checkout"],
    "search": ["/api/search"],
    "auth": ["/api/login"],
}
ROUTE_SERVICES = {
    "/api/cart": ["api-gateway", "checkout"],
    "/api/search": ["api-gateway", "search"],
    "/api/checkout": ["api-gateway", "checkout", "payments"],
    "/api/login": ["api-gateway", "auth"],
}
CHATTER = [
    (Level.DEBUG, "cache lookup key={key} hit={hit}"),
    (Level.DEBUG, "sql SELECT * FROM items WHERE id = {n} took {ms}ms"),
    (Level.INFO, "request handled route={route} status=200"),
    (Level.DEBUG, "feature flag new_checkout={hit} for user"),
    (Level.INFO, "upstream call ok service={svc} ms={ms}"),
    (Level.TRACE, "entering handler {route}"),
]


@dataclass
class Workload:
    """Lines to publish (in order) and what a correct pipeline stores."""

    lines: list[LogRecord] = field(default_factory=list)
    expected: set[tuple[str, str, int]] = field(default_factory=set)  # (session, message, timestamp)
    incidents: list[dict[str, str]] = field(default_factory=list)

    @staticmethod
    def key(record: LogRecord) -> tuple[str, str, int]:
        return (record.get("session_id") or "", record["message"], record["timestamp"])


def generate(
    sessions: int = 200,
    requests_per_session: int = 6,
    error_rate: float = 0.05,
    spike_rate: float = 0.05,
    lookback_s: float = 60.0,
    follow_s: float = 30.0,
    latency_floor_ms: float = 1000.0,
    start_us: int | None = None,
    seed: int = 7,
    run_id: str | None = None,
) -> Workload:
    """Sessions of requests across services; a few end in an error, a few see a latency spike.

    Ground truth follows the worker's contract: every WARN+ line is kept; an ERROR or a latency
    spike (above the floor; normal lines stay under 60 ms) keeps the session's lines from lookback
    before it to follow after it. Request gaps are long enough that a window does not reach a
    session's first requests.
    """
    rng = random.Random(seed)
    if start_us is None:
        # recent enough that the store's retention TTL keeps it, ending about now
        span_us = sessions * 250_000 + requests_per_session * 45_000_000
        start_us = time.time_ns() // 1000 - span_us
    run = run_id or uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    work = Workload()
    lookback_us = int(lookback_s * 1_000_000)
    follow_us = int(follow_s * 1_000_000)
    n_errors = max(1, round(sessions * error_rate)) if error_rate else 0
    n_spikes = max(1, round(sessions * spike_rate)) if spike_rate else 0
    erroring = set(rng.sample(range(sessions), n_errors))
    spiking = set(rng.sample(sorted(set(range(sessions)) - erroring), min(n_spikes, sessions - n_errors)))
    for s in range(sessions):
        sid = f"{run}-s{s:05d}"
        user = f"user-{rng.randrange(sessions // 2 + 1):04d}"
        t = start_us + s * 250_000 + rng.randrange(1_000_000)
        session_lines: list[LogRecord] = []
        for r in range(requests_per_session):
            route = rng.choice(list(ROUTE_SERVICES))
            tx = uuid.UUID(int=rng.getrandbits(128)).hex[:16]
            trace = uuid.UUID(int=rng.getrandbits(128)).hex
            last = r == requests_per_session - 1
            for svc in ROUTE_SERVICES[route]:
                for _ in range(rng.randint(2, 4)):
                    level, template = rng.choice(CHATTER)
                    msg = template.format(
                        key=rng.randrange(10_000),
                        hit=rng.random() < 0.8,
                        n=rng.randrange(99_999),
                        ms=rng.randint(1, 40),
                        route=route,
                        svc=svc,
                    )
                    t += rng.randint(2_000, 40_000)
                    session_lines.append(
                        _line(t, svc, level, msg, sid, user, route, tx, trace, rng.uniform(2, 60), 200)
                    )
            if s in spiking and r == requests_per_session // 2:
                t += 2_000
                session_lines.append(
                    _line(
                        t,
                        "api-gateway",
                        Level.WARN,
                        f"slow response route={route} latency_ms=2950",
                        sid,
                        user,
                        route,
                        tx,
                        trace,
                        2950.0,
                        200,
                    )
                )
            if s in erroring and last:
                t += 5_000
                svc = ROUTE_SERVICES[route][-1]
                session_lines.append(
                    _line(
                        t,
                        svc,
                        Level.ERROR,
                        f"unhandled exception in {route}: upstream returned 500",
                        sid,
                        user,
                        route,
                        tx,
                        trace,
                        812.0,
                        500,
                    )
                )
                work.incidents.append({"session_id": sid, "service": svc, "endpoint": route})
            t += rng.randint(15_000_000, 40_000_000)  # think time between requests
        work.lines.extend(session_lines)
        trigger_ts = [
            ln["timestamp"]
            for ln in session_lines
            if ln["level"] == "ERROR" or (ln["latency_ms"] or 0) > latency_floor_ms
        ]
        for ln in session_lines:
            ts = ln["timestamp"]
            kept = Level[ln["level"]] >= Level.WARN or any(
                t - lookback_us <= ts <= t + follow_us for t in trigger_ts
            )
            if kept:
                work.expected.add(Workload.key(ln))
    return work


def _line(
    ts: int,
    service: str,
    level: Level,
    message: str,
    session: str,
    user: str,
    route: str,
    tx: str,
    trace: str,
    latency: float,
    status: int,
) -> LogRecord:
    return {
        "timestamp": ts,
        "observed_timestamp": ts + 1500,
        "service": service,
        "level": level.name,
        "severity_number": level.value,
        "message": message,
        "session_id": session,
        "user_id": user,
        "endpoint": route,
        "transaction_id": tx,
        "trace_id": trace,
        "span_id": trace[:16],
        "latency_ms": round(latency, 2),
        "status_code": status,
        "security_flags": [],
        "attributes": {"host": f"{service}-{len(session) % 3}", "region": "eu-west-1"},
    }


@dataclass
class Injected:
    """A trigger the workload planted: which session, when, and why."""

    session_id: str
    endpoint: str
    timestamp: int
    kind: str  # error | latency | timeout | security | auth_failures


@dataclass
class IncidentWorkload:
    """Lines with planted triggers, and the exact set of lines a correct worker emits."""

    lines: list[LogRecord]
    injected: list[Injected]
    expected: set[tuple[str, str, int]]


def incident_workload(
    sessions: int = 120,
    lines_per_session: int = 24,
    lookback_s: float = 60.0,
    follow_s: float = 30.0,
    span_s: float = 20.0,
    seed: int = 13,
    start_us: int | None = None,
) -> IncidentWorkload:
    """Sessions over `span_s` of event time with errors, latency spikes, timeouts, security flags and
    repeated auth failures planted at known lines.

    Ground truth, stated without the worker's code: for each planted trigger at t in a session, every
    line of that session in [t - lookback, t + follow]; for security and auth-failure triggers also
    every line of the trigger's endpoint in [t, t + follow], whatever the session; and every WARN+ line.
    The span stays below the lookback so no buffered line has expired when a capture looks for it.
    Normal lines never trigger: DEBUG/INFO, latency <= 60 ms, status 200, no flags.
    """
    rng = random.Random(seed)
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:8]
    if start_us is None:
        start_us = time.time_ns() // 1000 - int(span_s * 1_000_000) - 5_000_000
    endpoints = ["/api/cart", "/api/search", "/api/checkout", "/api/login", "/api/profile", "/api/orders"]
    kinds = ["error", "latency", "timeout", "security", "auth_failures"]
    planted = {
        s: kinds[i % len(kinds)] for i, s in enumerate(rng.sample(range(sessions), max(5, sessions // 8)))
    }
    lines: list[LogRecord] = []
    injected: list[Injected] = []
    step = int(span_s * 1_000_000 / lines_per_session)
    for s in range(sessions):
        sid = f"{run}-g{s:04d}"
        user = f"{run}-u{s:04d}"
        endpoint = rng.choice(endpoints)
        t = start_us + rng.randrange(step)
        kind = planted.get(s)
        at = rng.randrange(lines_per_session // 3, lines_per_session - 2) if kind else -1
        for i in range(lines_per_session):
            t += rng.randint(step // 2, step)
            level = rng.choice([Level.DEBUG, Level.DEBUG, Level.INFO, Level.TRACE])
            line = _line(
                t,
                "api",
                level,
                f"step {i} of {sid}",
                sid,
                user,
                endpoint,
                f"tx{i}",
                sid.ljust(32, "0"),
                rng.uniform(2, 60),
                200,
            )
            if kind == "auth_failures" and at - 4 <= i <= at:
                line["status_code"] = 401
                line["message"] = f"login failed ({i}) for {user}"
            elif i == at:
                if kind == "error":
                    line["level"], line["severity_number"] = "ERROR", Level.ERROR.value
                elif kind == "latency":
                    line["latency_ms"] = 5000.0
                elif kind == "timeout":
                    line["status_code"] = 504
                elif kind == "security":
                    line["security_flags"] = ["sqli-suspect"]
            if i == at:
                injected.append(Injected(sid, endpoint, t, kind or ""))
            lines.append(line)
    lines.sort(key=lambda ln: ln["timestamp"])
    lb, fw = int(lookback_s * 1_000_000), int(follow_s * 1_000_000)
    expected: set[tuple[str, str, int]] = set()
    for ln in lines:
        ts, sid = ln["timestamp"], ln.get("session_id") or ""
        keep = Level[ln["level"]] >= Level.WARN
        for inj in injected:
            if keep:
                break
            if sid == inj.session_id and inj.timestamp - lb <= ts <= inj.timestamp + fw:
                keep = True
            elif inj.kind in ("security", "auth_failures") and ln.get("endpoint") == inj.endpoint:
                keep = inj.timestamp <= ts <= inj.timestamp + fw
        if keep:
            expected.add(Workload.key(ln))
    return IncidentWorkload(lines, injected, expected)
