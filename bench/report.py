"""Write docs/benchmarks.md from the figures the benchmarks of this run wrote to bench/results/."""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def fmt(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "not measured"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        size = abs(value)
        text = f"{value:,.0f}" if size >= 100 else f"{value:,.2f}" if size >= 0.1 else f"{value:.2g}"
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text} {unit}".strip()


def main() -> None:
    w, r, s, lat, soak, ing = (
        load(n)
        for n in ("worker_throughput", "rules_eval", "store_bench", "latency", "soak", "ingest_throughput")
    )
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    rows = [
        (
            "Ingest, single-line JSON messages (lines/s, one process)",
            fmt(ing.get("ingest_lines_per_s")),
            f"limit: plain consume + parse {fmt(ing.get('limit_consume_parse_lines_per_s'))} (median of "
            f"runs between the ingest runs); ratio, median of each ingest run over the higher limit "
            f"beside it: {fmt(ing.get('ingest_to_limit_ratio'))} (target 0.5); mixed shapes "
            f"{fmt(ing.get('ingest_mixed_shapes_lines_per_s'))}",
        ),
        (
            "Worker on logs.sessions, single-line input (lines/s)",
            fmt(ing.get("worker_lines_per_s")),
            f"target 150k; {fmt(ing.get('canonical_lines_per_message'))} lines per canonical message",
        ),
        (
            "Whole pipeline, ingest + worker + ClickHouse sink together (lines/s)",
            fmt(ing.get("pipeline_lines_per_s")),
            f"target 50k; the peer (quix-streams: group_by session, 60 s state buffer) "
            f"{fmt(ing.get('peer_quixstreams_lines_per_s'))} in the same run",
        ),
        (
            "Worker throughput (JSON lines/s, JSON curated, one process)",
            fmt(w.get("worker_lines_per_s")),
            f"limit: plain consume+decode {fmt(w.get('limit_consume_decode_lines_per_s'))}; "
            f"ratio {fmt(w.get('worker_to_limit_ratio'))} (target >= 100k and 0.5); "
            f"consume + validating decode: {fmt(w.get('consume_validate_lines_per_s'))}; "
            f"medians of {w.get('rounds', 1)} rounds, each round's ratio from back-to-back runs",
        ),
        (
            "Worker's path in-process, framed logs.sessions messages (lines/s)",
            fmt(w.get("processor_sessions_lines_per_s")),
            f"the same messages unframed (each line validated and cut): "
            f"{fmt(w.get('processor_sessions_unframed_lines_per_s'))}; framed / unframed "
            f"{fmt(w.get('processor_sessions_framed_to_unframed_ratio'))} (alternated, medians of 4)",
        ),
        (
            "Worker throughput (JSON lines/s, Avro curated)",
            fmt(w.get("worker_curated_avro_lines_per_s")),
            f"ratio {fmt(w.get('worker_curated_avro_to_limit_ratio'))}; "
            f"{fmt(w.get('curated_share'))} of the lines are curated (fastavro ~20-30 us a row)",
        ),
        (
            "Message templates: the known-template path (us a line)",
            fmt(w.get("template_known_path_us_per_line")),
            f"target <= 2 us: ingest's cached lookup {fmt(w.get('template_cached_us_per_line'))} + the "
            f"worker's catalog {fmt(w.get('template_catalog_us_per_line'))}; masking a message not seen "
            f"before {fmt(w.get('template_mask_us_per_message'))} us; drain3 on the same messages "
            f"{fmt(w.get('drain3_us_per_line'))} us",
        ),
        (
            "Worker with the template catalog / without it",
            fmt(w.get("worker_templates_to_no_templates_ratio")),
            f"target >= 0.9: {fmt(w.get('worker_templates_lines_per_s'))} / "
            f"{fmt(w.get('worker_no_templates_lines_per_s'))} lines/s (the median of per-round back-to-back "
            f"pairs, order alternated; each side its own median); in-process on the worker's path "
            f"{fmt(w.get('processor_sessions_templates_ratio'))} "
            f"({fmt(w.get('processor_sessions_templates_us_per_line'))} us a line)",
        ),
        (
            "Trigger-to-queryable latency p50 / p99",
            f"{fmt(lat.get('latency_p50_ms'), 'ms')} / {fmt(lat.get('latency_p99_ms'), 'ms')}",
            f"includes the publisher linger ({lat.get('publish_linger_ms', '?')} ms) "
            f"and sink batch ({lat.get('sink_batch_ms', '?')} ms)",
        ),
        (
            "Storage reduction (stored / raw bytes)",
            fmt(lat.get("stored_to_raw_bytes")),
            f"reference workload of {fmt(lat.get('reference_raw_lines'))} lines; "
            f"line recall {fmt(lat.get('line_recall'))}, "
            f"incident recall {fmt(lat.get('incident_recall'))}, extra lines {fmt(lat.get('extra_lines'))}",
        ),
        (
            "Memory per buffered line / idle session",
            f"{fmt(w.get('memory_per_line_bytes'), 'B')} / "
            f"{fmt(w.get('memory_per_idle_session_bytes'), 'B')}",
            "tracemalloc, records decoded inside the measurement",
        ),
        (
            "Sink rows/s into chDB",
            fmt(s.get("sink_rows_per_s")),
            f"bare Arrow insert of the same rows: {fmt(s.get('bare_arrow_insert_rows_per_s'))} (target 300k)",
        ),
        (
            "Session lookup on 10M rows p50 / p95",
            f"{fmt(s.get('lookup_p50_ms'), 'ms')} / {fmt(s.get('lookup_p95_ms'), 'ms')}",
            "target p95 < 50 ms; the table before history (004), same query: "
            f"{fmt(s.get('lookup_before_history_p50_ms'), 'ms')} / "
            f"{fmt(s.get('lookup_before_history_p95_ms'), 'ms')}",
        ),
        (
            "One-minute range read on 10M rows p50 / p95",
            f"{fmt(s.get('range_p50_ms'), 'ms')} / {fmt(s.get('range_p95_ms'), 'ms')}",
            "the table before history, same query: "
            f"{fmt(s.get('range_before_history_p50_ms'), 'ms')} / "
            f"{fmt(s.get('range_before_history_p95_ms'), 'ms')}",
        ),
        (
            "Replay read + filter (lines/s), median of runs",
            fmt(s.get("replay_lines_per_s")),
            f"target 200k; slowest run {fmt(s.get('replay_lines_per_s_min'))}, end to end with setup "
            f"{fmt(s.get('replay_end_to_end_lines_per_s'))}",
        ),
        (
            "Rule evaluations/s with 1 / 100 / 1000 rules",
            " / ".join(fmt(r.get(f"evals_per_s_{n}_rules")) for n in (1, 100, 1000)),
            "target 200k with 100 rules",
        ),
        (
            "A catastrophic rule regex, (a+)+$ on 5,000 characters",
            fmt(r.get("redos_eval_ms_5000_chars"), "ms"),
            "target < 1 ms per evaluation (RE2; Python's re did not finish 30 characters in 10 s)",
        ),
        (
            "Soak: recall / lag bounded / evicted lines",
            f"{fmt(soak.get('recall'))} / {fmt(soak.get('lag_bounded'))} / {fmt(soak.get('evicted_lines'))}",
            f"{fmt(soak.get('rate_achieved_lines_per_s'))} lines/s for {fmt(soak.get('seconds'), 's')}; "
            f"RSS {fmt(soak.get('rss_mb_at_quarter'), 'MB')} at a quarter, "
            f"{fmt(soak.get('rss_mb_last'), 'MB')} at the end; worker lag max "
            f"{fmt(soak.get('worker_lag_messages_max'))}, ingest lag max "
            f"{fmt(soak.get('ingest_lag_messages_max'))} messages",
        ),
    ]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `bench/report.py` on {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from the latest",
        "`bench/results/*.json`; `make bench` runs them all. Each benchmark puts its figures beside limits",
        "measured in the same run; figures of different files may come from different runs (this VM's",
        "speed drifts by a third between minutes). The broker runs on the same machine.",
        "",
        f"Machine: {cpu}, {os.cpu_count()} CPUs, {mem_gb:.0f} GB RAM, Python {platform.python_version()}.",
        "",
        "| measure | figure | beside |",
        "|---|---|---|",
        *[f"| {a} | {b} | {c} |" for a, b, c in rows],
        "",
    ]
    out = ROOT / "docs" / "benchmarks.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
