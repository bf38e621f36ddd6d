"""Rule evaluation rate per core with 1, 100 and 1000 rules (RuleSet.verdict per line).

Rules are a realistic mix: most keyed by an exact user, session, endpoint or service (found through
the index), a tenth need scanning (latency thresholds, message regexes, attributes). Prints the
figures and writes bench/results/rules_eval.json. Target: >= 200k evaluations/s with 100 rules.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

from common import machine

from pipeline.ops.workload import generate
from pipeline.rules.compiled import RuleSet, compile_condition
from pipeline.rules.model import Condition, Rule, validate_rule
from pipeline.wire.records import normalize

RESULTS = Path(__file__).resolve().parent / "results"


def make_rules(n: int, lines: list[Any], seed: int = 5) -> list[Rule]:
    rng = random.Random(seed)
    users = sorted({r["user_id"] for r in lines if r["user_id"]})
    endpoints = sorted({r["endpoint"] for r in lines if r["endpoint"]})
    services = sorted({r["service"] for r in lines})
    rules = []
    for i in range(n):
        kind = i % 10
        if kind in (0, 1, 2, 3):
            cond: dict[str, Any] = {"user_id": rng.choice(users) if kind else f"nobody-{i}"}
        elif kind in (4, 5):
            cond = {"session_id": f"sess-{i}"}
        elif kind == 6:
            cond = {"endpoint": rng.choice(endpoints), "level_gte": "WARN"}
        elif kind == 7:
            cond = {"service": rng.choice(services), "status_code_in": [500, 503]}
        elif kind == 8:
            cond = {"endpoint": {"glob": f"/internal/{i}/*"}}  # scanned
        else:
            cond = {"latency_ms_gt": 5000 + i, "message_regex": "timeout|refused"}  # scanned
        rules.append(
            validate_rule(
                {
                    "id": f"rule-{i}",
                    "priority": rng.randint(0, 100),
                    "match": {"all": [cond]},
                    "actions": {"tag": {"tags": [f"t{i}"]}, "stats": True},
                }
            )
        )
    return rules


def rate(rules: RuleSet, lines: list[Any]) -> tuple[float, int]:
    verdict = rules.verdict
    matched = 0
    start = time.perf_counter()
    for rec in lines:
        if verdict(rec) is not None:
            matched += 1
    return len(lines) / (time.perf_counter() - start), matched


def redos(runs: int = 1000) -> dict[str, float]:
    """The catastrophic `(a+)+$` against a 5,000-character line that does not match: on RE2 it is
    linear (Python's `re` did not finish 30 characters in 10 s). Target: under 1 ms per evaluation."""
    test = compile_condition(Condition(message_regex="(a+)+$"))
    line = normalize({"service": "s", "level": "INFO", "message": "a" * 5_000 + "!"})
    start = time.perf_counter()
    for _ in range(runs):
        test(line)
    per_ms = (time.perf_counter() - start) / runs * 1000
    return {"redos_eval_ms_5000_chars": per_ms, "redos_target_ms": 1.0}


def main() -> None:
    n = int(os.environ.get("BENCH_RULE_LINES", "200000"))
    lines = generate(sessions=max(n // 40, 1), requests_per_session=6, seed=9).lines[:n]
    out: dict[str, Any] = {
        "machine": machine(),
        "lines": len(lines),
    }
    for count in (1, 100, 1000):
        ruleset = RuleSet(make_rules(count, lines))
        rate(ruleset, lines[:20_000])  # warm the verdict cache
        per_s, matched = rate(ruleset, lines)
        out[f"evals_per_s_{count}_rules"] = per_s
        out[f"matched_lines_{count}_rules"] = matched
        out[f"scanned_rules_{count}"] = len(ruleset.scan)
    out["target_evals_per_s_100_rules"] = 200_000
    out["meets_target"] = out["evals_per_s_100_rules"] >= 200_000
    out.update(redos())
    for key, value in out.items():
        print(
            f"{key:<34} {value:,.3f}"
            if isinstance(value, float) and value < 10
            else f"{key:<34} {value:,.0f}"
            if isinstance(value, float)
            else f"{key:<34} {value}"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rules_eval.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
