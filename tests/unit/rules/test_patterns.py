"""Rule patterns on RE2: a catastrophic regex evaluates in linear time, what RE2 cannot run is refused
with a clear error, globs keep fnmatch's meaning."""

from __future__ import annotations

import fnmatch

import pytest

from pipeline.rules.compiled import compile_condition
from pipeline.rules.model import Condition, RuleError, validate_rule
from pipeline.rules.patterns import MAX_PATTERN_CHARS, compile_regex, glob_matcher
from pipeline.wire.records import normalize


@pytest.mark.timeout(20)  # a hang guard only: Python's re would not finish this in hours
def test_a_catastrophic_regex_is_accepted_and_runs_in_linear_time() -> None:
    cond = Condition(message_regex="(a+)+$")
    test = compile_condition(cond)
    line = normalize({"service": "s", "level": "INFO", "message": "a" * 5_000 + "!"})
    assert test(line) is False
    assert test({**line, "message": "a" * 5_000}) is True
    for _ in range(1_000):  # 5 MB of text through the pattern: linear, so it takes milliseconds
        test(line)


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"(a)\1", "no backreferences"),
        (r"foo(?=bar)", "no backreferences or lookarounds"),
        (r"(unclosed", "missing )"),
        ("a" * (MAX_PATTERN_CHARS + 1), f"longer than {MAX_PATTERN_CHARS}"),
    ],
)
def test_patterns_re2_cannot_run_are_refused_with_the_reason(pattern: str, words: str) -> None:
    with pytest.raises(ValueError, match="regular expression") as err:
        compile_regex(pattern)
    assert words in str(err.value)
    for where, spec in (
        ("match.all.0.message_regex", {"message_regex": pattern}),
        ("match.all.0.endpoint.regex", {"endpoint": {"regex": pattern}}),
        ("match.all.0.attributes.k.regex", {"attributes": {"k": {"regex": pattern}}}),
    ):
        with pytest.raises(RuleError) as rule_err:
            validate_rule({"id": "r", "match": {"all": [spec]}, "actions": {"drop": True}})
        problems = dict(rule_err.value.problems)
        assert words in problems[where], problems


@pytest.mark.parametrize(
    "glob", ["/api/*/health", "*.py", "file?.txt", "[abc]*", "[!abc]x", "a[]]b", "[*", "x.y+z", "/a/(b)", ""]
)
def test_globs_mean_what_fnmatch_means(glob: str) -> None:
    match = glob_matcher(glob)
    for value in ["/api/v1/health", "/api/health", "a.py", "a.pyc", "file1.txt", "file12.txt", "b-x", "dx",
                  "a]b", "[*", "[x", "x.y+z", "xxyz", "/a/(b)", "", "\n", "a\nb.py"]:  # fmt: skip
        assert (match(value) is not None) is fnmatch.fnmatchcase(value, glob), (glob, value)
