"""User-supplied patterns (rule regexes and globs) compiled for RE2, a linear-time engine.

Python's `re` backtracks: `(a+)+$` against 30 characters did not finish in 10 s, and one such rule
stalls the worker's event loop for every line. RE2 runs any pattern in time linear in the text
(measured: that pattern over 5,000 characters in ~35 us); what it cannot run (backreferences,
lookarounds) is refused when the rule is validated, at the API, the CLI and on the rules topic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import re2

MAX_PATTERN_CHARS = 1_000
MAX_PROGRAM_BYTES = 8 << 20  # RE2's own memory cap per compiled pattern

Search = Callable[[str], Any]


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error is raised (and explained) here, not printed by the library
    options.max_mem = MAX_PROGRAM_BYTES
    return options


def compile_regex(pattern: str) -> Any:
    """The pattern compiled by RE2, or ValueError saying why it cannot be used."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"regular expression longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(
            f"invalid regular expression for RE2, the linear-time engine rules run on: {reason} "
            "(RE2 has no backreferences or lookarounds)"
        ) from None


def glob_to_regex(glob: str) -> str:
    """A shell-style pattern (*, ?, [seq], [!seq]) as an anchored RE2 pattern over the whole value.

    fnmatch.translate is not used: its output relies on lookahead groups, which RE2 refuses."""
    out, i, n = [], 0, len(glob)
    while i < n:
        c = glob[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")  # no closing bracket: a literal one, as fnmatch reads it
                continue
            body = glob[i:j].replace("\\", "\\\\")
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re2.escape(c))
    return "(?s)^" + "".join(out) + "\\z"


def searcher(pattern: str) -> Search:
    """A function telling whether the pattern occurs in a text (None when it does not)."""
    return compile_regex(pattern).search  # type: ignore[no-any-return]


def glob_matcher(glob: str) -> Search:
    """A function telling whether the whole text matches the shell-style pattern."""
    if len(glob) > MAX_PATTERN_CHARS:
        raise ValueError(f"glob longer than {MAX_PATTERN_CHARS} characters")
    return compile_regex(glob_to_regex(glob)).search  # type: ignore[no-any-return]
