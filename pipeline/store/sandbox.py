"""A power user's SQL (`hindsight query --sql`, the query API's /sql), sandboxed.

readonly=2 alone let a query read `file('/etc/passwd')`, fetch `url('http://127.0.0.1:...')` and lift
its own limits with `SETTINGS max_result_rows=0`. Here the store's own parser (EXPLAIN AST) reads the
query first, and only this shape runs: one SELECT (UNION / INTERSECT / CTEs / subqueries allowed) that
reads tables of the project's database (and system.parts, for storage figures); no table functions
anywhere (file, url, remote, s3, numbers, ...), no file or dictionary functions, no SETTINGS clause,
no INTO OUTFILE. It then runs with bounds it cannot lift: time, memory, rows read and rows returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.errors import QueryError
from pipeline.store.query import QueryClient

# Beyond the project's tables: storage figures per part (sizes, rows, partitions; no log content),
# which storage monitoring needs (examples/storage_monitoring.py).
SYSTEM_TABLES = ("system.parts",)

# scalar functions that reach outside the tables (a file's content, dictionaries' sources)
DENIED_FUNCTIONS = ("file", "dictGet", "dictHas", "dictGetHierarchy", "dictIsIn", "joinGet")


@dataclass(frozen=True)
class SqlBounds:
    """What one query may use; the query cannot change them (its SETTINGS clause is refused)."""

    max_seconds: float = 30.0
    max_rows_read: int = 1_000_000_000
    max_memory_mb: int = 2048

    def settings(self, limit: int) -> dict[str, Any]:
        return {
            "readonly": 2,  # reads only; `readonly` itself cannot be changed from the query
            "max_result_rows": limit,
            "result_overflow_mode": "break",
            "max_execution_time": self.max_seconds,
            "timeout_overflow_mode": "throw",
            "max_rows_to_read": self.max_rows_read,
            "read_overflow_mode": "throw",
            "max_memory_usage": self.max_memory_mb << 20,
        }


def _one_statement(sql: str) -> None:
    """Refuse `a; b` before the parser sees it: a ClickHouse server does, but the embedded engine runs
    every statement, and a second result left unread would desynchronise the reader's next answer.
    Quotes and every comment form the store knows (--, #, /* */) are skipped."""
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"`":
            i += 1
            while i < n and sql[i] != c:
                i += 2 if sql[i] == "\\" else 1
        elif sql.startswith("--", i) or c == "#":
            i = sql.find("\n", i)
            i = n if i < 0 else i
        elif sql.startswith("/*", i):
            i = sql.find("*/", i + 2)
            i = n if i < 0 else i + 1
        elif c == ";" and sql[i + 1 :].strip(" \t\r\n;"):
            raise QueryError("one statement per query: remove the ';' and what follows it")
        i += 1


def _tree(client: QueryClient, sql: str) -> list[tuple[int, str, str]]:
    """The query's syntax tree from the store's parser: (depth, node, argument) per node."""
    try:
        lines = [row[0] for row in client.query(f"EXPLAIN AST {sql}").result_rows]
    except Exception as exc:  # the parser's own message (syntax error, several statements, ...)
        raise QueryError(f"store refused the query: {_first_line(exc)}") from None
    nodes = []
    for line in lines:
        depth = len(line) - len(line.lstrip(" "))
        name, _, arg = line.strip().partition(" ")
        nodes.append((depth, name, arg.split(" (")[0].strip()))
    return nodes


def check_sql(client: QueryClient, sql: str, database: str) -> None:
    """QueryError unless the query has the one shape allowed (see the module's docstring)."""
    _one_statement(sql)
    nodes = _tree(client, sql)
    if not nodes or nodes[0][1] != "SelectWithUnionQuery":
        raise QueryError("only a SELECT can run here (reads only)")
    for i, (depth, name, arg) in enumerate(nodes):
        if name == "Set":
            raise QueryError("a query cannot change settings: remove its SETTINGS clause")
        if depth == 1 and name not in ("ExpressionList", "Identifier"):
            raise QueryError("INTO OUTFILE and other output clauses are not allowed; the answer is rows")
        if name == "Function" and (arg == "file" or arg.startswith(DENIED_FUNCTIONS[1:])):
            raise QueryError(f"function {arg}() reaches outside the project's tables: not allowed")
        if name == "TableExpression" and i + 1 < len(nodes):
            child, target = nodes[i + 1][1], nodes[i + 1][2]
            if child == "Function":
                raise QueryError(f"table function {target}() is not allowed: read the tables of {database}")
            if (
                child == "TableIdentifier"
                and "." in target
                and target.split(".", 1)[0] != database
                and target not in SYSTEM_TABLES
            ):
                raise QueryError(f"only the tables of {database} can be read, not {target}")


def run_sql(
    client: QueryClient,
    sql: str,
    limit: int = 10_000,
    database: str = "hindsight",
    bounds: SqlBounds | None = None,
) -> list[dict[str, Any]]:
    """A power user's SQL, checked, then run read-only within bounds; at most `limit` rows.

    Unqualified table names resolve to CTEs or the client's current database, which is the project's
    (the store's clients are opened on it)."""
    if not 1 <= limit <= 1_000_000:
        raise QueryError("limit must be within 1..1000000")
    check_sql(client, sql, database)
    try:
        result = client.query(sql, settings=(bounds or SqlBounds()).settings(limit))
        # "break" stops at a block boundary, so the store may return a little more than asked
        return [dict(row) for _, row in zip(range(limit), result.named_results(), strict=False)]
    except Exception as exc:  # the store's own message says what was wrong (syntax, limits, ...)
        raise QueryError(f"store refused the query: {_first_line(exc)[:500]}") from None


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
