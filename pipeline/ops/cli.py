"""The `hindsight` command: one entry point, each subcommand a thin call into a service function."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime

from pydantic import ValidationError

from pipeline.errors import HindsightError
from pipeline.settings import CONFIG_ENV, Settings

log = logging.getLogger("pipeline.ops.cli")


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.stack import stack_down, stack_status, stack_up

    if args.action == "fetch":
        from pipeline.ops.stack import LocalBroker

        print(f"kafka jars in {LocalBroker(settings).fetch()}")
    elif args.action == "up":
        started, created = stack_up(settings)
        print(
            f"kafka {'started' if started else 'already up'} at {settings.bootstrap}; topics created: "
            f"{', '.join(created) or 'none (all present)'}"
        )
    elif args.action == "down":
        stopped = stack_down(settings)
        print("kafka stopped" if stopped else "nothing to stop")
    else:
        status = stack_status(settings)
        if args.json:
            print(json.dumps(asdict(status)))
        else:
            state = "running" if status.running else "stopped"
            where = "local broker" if status.managed else "external cluster"
            print(f"{where} at {status.bootstrap}: {state}" + (f" (pid {status.pid})" if status.pid else ""))
        return 0 if status.running else 3
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka import ensure_topics

    created = ensure_topics(settings)
    print(f"topics created: {', '.join(created) or 'none (all present)'}")
    return 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from pipeline.kafka import wait_for_broker
    from pipeline.sources.publisher import Publisher, publish_json_lines

    wait_for_broker(settings)
    source = sys.stdin.buffer if args.file in (None, "-") else open(args.file, "rb")  # noqa: SIM115
    if args.wire_format:
        settings = settings.model_copy(update={"wire_format": args.wire_format})
    publisher = Publisher(settings)

    def rejected(number: int, exc: HindsightError) -> None:
        print(f"line {number}: rejected: {exc}", file=sys.stderr)

    with source, tqdm(unit="line", desc="publishing", disable=not args.progress, file=sys.stderr) as bar:
        published, bad = publish_json_lines(publisher, source, rejected, lambda: bar.update(1))
    undelivered = publisher.flush(settings.request_timeout_s * 4)
    failed = publisher.metrics.failed + undelivered
    print(
        json.dumps(
            {
                "published": published,
                "rejected": bad,
                "messages": publisher.metrics.messages,
                "failed": failed,
            }
        )
    )
    return 1 if failed or bad else 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.worker.app import run_worker

    if args.metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    run_worker(settings, loglevel=args.log_level.lower())
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.services import run_ingest

    if args.metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    run_ingest(settings)
    return 0


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.services import migrate_store

    applied = migrate_store(settings)
    print(f"applied: {', '.join(applied)}" if applied else "store schema up to date")
    return 0


def _doctor(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.doctor import render, run_checks, summary

    checks = run_checks(settings, args.timeout)
    if args.json:
        print(json.dumps(summary(checks), indent=2))
    else:
        print(render(checks))
    return 0 if summary(checks)["ok"] else 1


MASK = "**********"  # as pydantic shows a SecretStr


def _config(args: argparse.Namespace, settings: Settings) -> int:
    shown = settings.model_dump(mode="json")  # SecretStr values come out masked
    for name, field in Settings.model_fields.items():
        if field.repr is False and shown.get(name):  # e.g. kafka_extra_config holds sasl.password
            shown[name] = (
                {k: "**********" for k in shown[name]} if isinstance(shown[name], dict) else "**********"
            )
    if args.json:
        print(json.dumps(shown, indent=2, sort_keys=True))
    else:
        width = max(map(len, shown))
        for name in sorted(shown):
            print(f"{name:<{width}} = {json.dumps(shown[name])}")
    return 0


def _otlp(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.services import run_otlp

    run_otlp(settings)
    return 0


def _sink(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.services import run_sink

    if args.metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": args.metrics_port})
    run_sink(settings, args.name)
    return 0


def _templates(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from pipeline.store.client import sql_query
    from pipeline.store.query import parse_time, templates_sql
    from pipeline.store.render import format_csv, format_jsonl, format_table

    since = None
    if args.new:
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        since = int(midnight.timestamp() * 1_000_000)
    if args.since:
        since = parse_time(args.since)
    rows = sql_query(settings, templates_sql(settings.clickhouse_database, args.service, since), args.limit)
    for row in rows:
        row["first_seen"] = (
            row["first_seen"].isoformat() if hasattr(row["first_seen"], "isoformat") else row["first_seen"]
        )
        row["last_seen"] = (
            row["last_seen"].isoformat() if hasattr(row["last_seen"], "isoformat") else row["last_seen"]
        )
    if args.format == "jsonl":
        text = format_jsonl(rows)
    elif args.format == "csv":
        text = format_csv(rows)
    else:
        text = format_table(
            rows, columns=["service", "template_id", "count", "first_seen", "triggered", "template"]
        )
    if text:
        print(text)
    if not rows:
        print(
            "no templates stored yet: the worker sends its counts every HINDSIGHT_TEMPLATES_FLUSH_S",
            file=sys.stderr,
        )
    return 0


def _query(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.store.client import query_logs, sql_query
    from pipeline.store.query import QueryFilters, parse_time
    from pipeline.store.render import TABLE_COLUMNS, format_csv, format_jsonl, format_table

    if args.sql:
        rows = sql_query(settings, args.sql, args.limit)
    else:
        filters = QueryFilters(
            session=args.session,
            user=args.user,
            service=args.service,
            endpoint=args.endpoint,
            transaction_id=args.transaction_id,
            level=args.level,
            since_us=parse_time(args.since) if args.since else None,
            until_us=parse_time(args.until) if args.until else None,
            grep=args.grep,
            attr=tuple(args.attr or ()),
            trigger=args.trigger,
            rule=args.rule,
            template=args.template,
            limit=args.limit,
        )
        rows = query_logs(settings, filters)
    if args.format == "jsonl":
        text = format_jsonl(rows)
    elif args.format == "csv":
        text = format_csv(rows)
    else:
        text = format_table(rows, columns=list(rows[0]) if args.sql and rows else TABLE_COLUMNS)
    if text:
        print(text)
    if not rows and not args.sql:
        print(_empty_hint(settings), file=sys.stderr)
    return 0


def _empty_hint(settings: Settings) -> str:
    """Why a query may find nothing: no worker or sink running, or nothing was triggered."""
    from pipeline.kafka import admin

    missing = []
    client = admin(settings, quiet=True)
    try:
        client.list_topics(timeout=3)
    except Exception:  # the broker is not reachable
        return (
            f"hint: the broker at {settings.bootstrap} does not answer; `hindsight stack up` starts one, "
            "`hindsight doctor` checks every part"
        )
    groups = [settings.app_id, settings.sink_group]
    found = client.describe_consumer_groups(groups, request_timeout=3)
    for name, group in zip(("worker", "sink"), groups, strict=True):
        try:
            members = found[group].result(timeout=5).members
        except Exception:  # a group that never existed is an error on newer brokers
            members = []
        if not members:
            missing.append(name)
    if missing:
        return (
            f"hint: no {' and no '.join(missing)} is running, so no line reaches the store: start "
            "`hindsight ingest`, `hindsight worker` and `hindsight sink clickhouse` (`hindsight doctor`)"
        )
    return (
        "hint: nothing matched; only lines around a trigger (and WARN+) are stored: widen --since, drop a "
        "filter, or replay the period from logs.raw (`hindsight replay --since ...`)"
    )


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.demo import run_demo

    run_demo(settings, sessions=args.sessions)
    return 0


def _read_json(path: str) -> object:
    from pipeline.rules.model import RuleError

    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
        return json.loads(text)
    except OSError as exc:
        raise RuleError([("(file)", f"cannot read {path}: {exc.strerror}")]) from None
    except json.JSONDecodeError as exc:
        raise RuleError([("(file)", f"invalid JSON: {exc}")]) from None


def _rules(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control import rules as control
    from pipeline.kafka import ensure_topics, wait_for_broker
    from pipeline.rules.model import RuleError
    from pipeline.store.query import parse_duration

    try:
        if args.action in ("add", "validate", "dry-run", "rm") and args.target is None:
            what = "a rule id" if args.action == "rm" else "a rule file, or - to read it from stdin"
            raise RuleError([("(args)", f"rules {args.action} needs {what}")])
        if args.action == "validate":
            rule = control.check_rule(settings, _read_json(args.target))
            print(json.dumps({"valid": True, "id": rule.id}) if args.json else f"{rule.id}: valid")
            return 0
        wait_for_broker(settings)
        ensure_topics(settings)
        if args.action == "add":
            rule = control.add_rule(settings, _read_json(args.target))
            print(
                json.dumps({"added": rule.id})
                if args.json
                else f"rule {rule.id} written to {settings.rules_topic}"
            )
        elif args.action == "rm":
            control.remove_rule(settings, args.target)
            print(json.dumps({"removed": args.target}) if args.json else f"rule {args.target} deleted")
        elif args.action == "list":
            rules = control.list_rules(settings)
            if args.json:
                print(json.dumps([r.model_dump(mode="json") for r in rules]))
            now = datetime.now(UTC)
            for r in [] if args.json else rules:
                if not r.enabled:
                    state = "off"
                elif r.active_until is not None and r.active_until <= now:
                    state = "expired"
                elif r.active_from is not None and r.active_from > now:
                    state = "later"
                else:
                    state = "on"
                print(f"{r.priority:>6}  {state:<7}  {r.id:<32} {r.description}")
        elif args.action == "dry-run":
            from tqdm import tqdm

            with tqdm(unit="msg", desc="scanning logs.raw", file=sys.stderr, disable=_no_bar(args)) as bar:
                report = control.dry_run(
                    settings, _read_json(args.target), parse_duration(args.since), bar.update
                )
            print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
        return 0
    except RuleError as exc:
        if args.json:
            print(
                json.dumps({"valid": False, "errors": [{"path": p, "message": m} for p, m in exc.problems]})
            )
        for path, msg in [] if args.json else exc.problems:
            print(f"invalid rule: {path}: {msg}", file=sys.stderr)
        return 1


def _capture(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from pipeline.control import captures
    from pipeline.kafka import ensure_topics, wait_for_broker
    from pipeline.store.query import parse_duration

    wait_for_broker(settings)
    ensure_topics(settings)
    with tqdm(unit="msg", desc="reading history", file=sys.stderr, disable=_no_bar(args)) as bar:
        result = captures.start_capture(
            settings,
            args.user_id,
            parse_duration(args.lookback),
            parse_duration(args.follow),
            args.reason,
            bar.update,
        )
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from pipeline.api.control import ControlServer
    from pipeline.kafka import ensure_topics, wait_for_broker

    wait_for_broker(settings)
    ensure_topics(settings)
    server = ControlServer(settings).start()
    print(f"rules API on http://{settings.api_host}:{server.port} (OpenAPI at /openapi.json)", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        done.wait()
    finally:
        server.stop()
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    import time

    from tqdm import tqdm

    from pipeline.kafka import ensure_topics, wait_for_broker
    from pipeline.replay.run import ReplaySpec, parse_offsets, replay
    from pipeline.store.query import parse_time
    from pipeline.worker.processor import tune_gc

    wait_for_broker(settings)
    ensure_topics(settings)
    spec = ReplaySpec(
        since_us=parse_time(args.since),
        until_us=parse_time(args.until) if args.until else time.time_ns() // 1000,
        endpoint=args.endpoint,
        user=args.user,
        service=args.service,
        session=args.session,
        from_offsets=parse_offsets(args.from_offsets or ""),
        reason=args.reason,
    )
    tune_gc(settings.worker_gc_threshold)  # a batch job: no need to re-walk what it started with
    # rate and ETA: the bar's total is the number of raw messages the scan will read
    with tqdm(unit="msg", desc=f"replay {spec.replay_id}", file=sys.stderr, disable=_no_bar(args)) as bar:
        result = replay(settings, spec, args.to, progress=bar.update, on_plan=lambda n: bar.reset(total=n))
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _archive(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.ops.services import run_archive

    run_archive(settings)
    return 0


def _no_bar(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and never with --json (a log file gets none)."""
    return bool(args.json) or not sys.stderr.isatty()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("log-hindsight")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hindsight", description=__doc__)
    parser.add_argument("--version", action="version", version=f"hindsight {_version()}")
    parser.add_argument("--log-level", default="WARNING", help="Logging level (default WARNING).")
    parser.add_argument(
        "--config", help="TOML file of settings, under the environment's (also HINDSIGHT_CONFIG)."
    )
    # the same global flags after the subcommand (`hindsight worker --log-level INFO`); SUPPRESS keeps
    # the value given before it when none is given after
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, help="Logging level (default WARNING).")
    common.add_argument(
        "--config", default=argparse.SUPPRESS, help="TOML file of settings (also HINDSIGHT_CONFIG)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: add_parser(*a, parents=[common], **kw)  # type: ignore[method-assign]

    p = sub.add_parser("stack", help="Local Kafka broker: fetch (jars), up, down, status.")
    p.add_argument(
        "action",
        choices=["fetch", "up", "down", "status"],
        help="fetch the jars, start, stop, or say how it is (status exits 3 when stopped, as in LSB).",
    )
    p.add_argument("--json", action="store_true", help="Machine-readable status.")
    p.set_defaults(func=_stack)

    p = sub.add_parser("topics", help="Create the pipeline's topics (idempotent).")
    p.set_defaults(func=_topics)

    p = sub.add_parser("publish", help="Publish JSON lines (one object per line) to logs.raw.")
    p.add_argument("file", nargs="?", help="File of JSON lines; default stdin.")
    p.add_argument("--wire-format", choices=["avro", "json", "confluent"], help="Override the wire format.")
    p.add_argument("--progress", action="store_true", help="Show a progress bar.")
    p.set_defaults(func=_publish)

    p = sub.add_parser(
        "ingest", help="Run the ingest stage: logs.raw in any shape -> logs.sessions, keyed by session."
    )
    p.add_argument(
        "--metrics-port", type=int, help="Serve Prometheus /metrics here (HINDSIGHT_METRICS_PORT)."
    )
    p.set_defaults(func=_ingest)

    p = sub.add_parser("worker", help="Run the windowing worker (Faust) on logs.sessions.")
    p.add_argument(
        "--metrics-port", type=int, help="Serve Prometheus /metrics here (HINDSIGHT_METRICS_PORT)."
    )
    p.set_defaults(func=_worker)

    p = sub.add_parser("sink", help="Run a sink connector on logs.curated.")
    p.add_argument("name", help="Sink name, e.g. clickhouse.")
    p.add_argument(
        "--metrics-port", type=int, help="Serve Prometheus /metrics here (HINDSIGHT_METRICS_PORT)."
    )
    p.set_defaults(func=_sink)

    p = sub.add_parser("templates", help="The message templates seen: top by count, or the new ones.")
    p.add_argument("--service", help="Only this service's templates.")
    p.add_argument("--new", action="store_true", help="Only templates first seen today (UTC), newest first.")
    p.add_argument(
        "--since", help="Only templates first seen since (ISO time or 15m/2h/1d ago), newest first."
    )
    p.add_argument("--limit", type=int, default=50, help="Most templates (default 50).")
    p.add_argument("--format", choices=["table", "jsonl", "csv"], default="table", help="Output format.")
    p.set_defaults(func=_templates)

    p = sub.add_parser("query", help="Read stored lines.")
    p.add_argument("--session", help="Session id, exactly.")
    p.add_argument("--service", help="Service name, exactly.")
    p.add_argument("--endpoint", help="Endpoint (route), exactly.")
    p.add_argument("--transaction-id", help="Transaction id, exactly.")
    p.add_argument("--user", "--user-id", dest="user", help="User id (either flag, as in capture).")
    p.add_argument("--level", help="Minimum level, e.g. WARN.")
    p.add_argument("--since", help="15m, 2h, 7d, ISO-8601 or epoch seconds.")
    p.add_argument("--until", help="Same forms as --since.")
    p.add_argument("--grep", help="Text in the message (full text, case-sensitive).")
    p.add_argument(
        "--template", metavar="ID", help="Lines of this message template (see hindsight templates)."
    )
    p.add_argument("--attr", action="append", metavar="KEY=VALUE", help="Attribute equals (repeatable).")
    p.add_argument("--trigger", help="Trigger reason (error, latency, ...) or trigger id.")
    p.add_argument("--rule", help="Id of a rule that matched the line.")
    p.add_argument("--sql", help="Read-only SQL over the store (power users); other filters ignored.")
    p.add_argument("--limit", type=int, default=100, help="Most rows (default 100; a table shows them all).")
    p.add_argument(
        "--format", choices=["table", "jsonl", "csv"], default="table", help="Output format (default table)."
    )
    p.set_defaults(func=_query)

    p = sub.add_parser("rules", help="Capture rules: add FILE, list, rm ID, validate FILE, dry-run FILE.")
    p.add_argument(
        "action", choices=["add", "list", "rm", "validate", "dry-run"], help="What to do with rules."
    )
    p.add_argument("target", nargs="?", default=None, help="Rule JSON file (- for stdin), or the id for rm.")
    p.add_argument("--since", default="24h", help="dry-run: how far back to evaluate (e.g. 24h).")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
    p.set_defaults(func=_rules)

    p = sub.add_parser("capture", help="Support capture: a user's history into curated, then follow.")
    p.add_argument("--user-id", "--user", dest="user_id", required=True, help="User id (either flag).")
    p.add_argument("--lookback", default="30m", help="History to dump, e.g. 30m.")
    p.add_argument("--follow", default="15m", help="How long new lines of the user are kept, e.g. 15m.")
    p.add_argument("--reason", default="", help="Why (kept in the rule's description).")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
    p.set_defaults(func=_capture)

    p = sub.add_parser("replay", help="Re-read logs.raw for a period (and filters) into curated or a file.")
    p.add_argument("--since", required=True, help="15m, 2h, 7d, ISO-8601 or epoch seconds.")
    p.add_argument("--until", help="Same forms; default now.")
    p.add_argument("--endpoint", help="Only lines of this endpoint.")
    p.add_argument("--service", help="Only lines of this service.")
    p.add_argument("--session", help="Only lines of this session.")
    p.add_argument("--user", "--user-id", dest="user", help="User id (either flag, as in capture).")
    p.add_argument("--from-offsets", help="PARTITION:OFFSET,... to start from instead of by time.")
    p.add_argument("--to", default="curated", help="curated (default) or a file path (.jsonl, .jsonl.gz).")
    p.add_argument("--reason", default="", help="Why (kept on every replayed line).")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
    p.set_defaults(func=_replay)

    p = sub.add_parser("archive", help="Archive logs.raw into hourly Avro files (replay reads them later).")
    p.set_defaults(func=_archive)

    p = sub.add_parser("migrate", help="Apply the ClickHouse migrations (idempotent).")
    p.set_defaults(func=_migrate)

    p = sub.add_parser("doctor", help="Check configuration, broker, topics, store and APIs; one line each.")
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
    p.add_argument("--timeout", type=float, default=3.0, help="Seconds per check.")
    p.set_defaults(func=_doctor)

    p = sub.add_parser(
        "otlp", help="Receive OpenTelemetry logs over OTLP/HTTP (4318) and OTLP/gRPC (4317); needs a token."
    )
    p.set_defaults(func=_otlp)

    p = sub.add_parser("api", help="Serve the rules and captures HTTP API (needs HINDSIGHT_API_TOKEN).")
    p.set_defaults(func=_api)

    p = sub.add_parser("config", help="Settings: show the effective ones (secrets masked).")
    p.add_argument(
        "action", choices=["show"], help="show: every setting with its value and where it came from."
    )
    p.add_argument("--json", action="store_true", help="Machine-readable output.")
    p.set_defaults(func=_config)

    p = sub.add_parser("demo", help="Run the whole pipeline on a generated workload and report.")
    p.add_argument("--sessions", type=int, default=300, help="Sessions in the generated workload.")
    p.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )
    if args.config:
        os.environ[CONFIG_ENV] = args.config  # the one place settings are built reads it
    try:
        settings = Settings()
        return int(args.func(args, settings))
    except ValidationError as exc:
        first = exc.errors()[0]
        print(
            f"hindsight: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr
        )
        return 1
    except HindsightError as exc:  # a runtime failure; 2 is argparse's, for usage errors only
        print(f"hindsight: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
