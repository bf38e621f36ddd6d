"""One flag name for one thing across commands: a user is --user or --user-id everywhere."""

from __future__ import annotations

import pytest

from pipeline.ops.cli import build_parser


@pytest.mark.parametrize("flag", ["--user", "--user-id"])
def test_every_command_that_takes_a_user_takes_both_names(flag: str) -> None:
    parser = build_parser()
    assert parser.parse_args(["query", flag, "u42"]).user == "u42"
    assert parser.parse_args(["replay", "--since", "1h", flag, "u42"]).user == "u42"
    assert parser.parse_args(["capture", flag, "u42"]).user_id == "u42"


def test_version_and_global_flags_before_or_after_the_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("hindsight ")
    assert parser.parse_args(["worker", "--log-level", "INFO"]).log_level == "INFO"
    assert parser.parse_args(["--log-level", "DEBUG", "worker"]).log_level == "DEBUG"
    assert parser.parse_args(["worker"]).log_level == "WARNING"


def test_usage_errors_exit_2_and_runtime_failures_1(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.ops.cli import main

    with pytest.raises(SystemExit) as done:
        main(["query", "--no-such-flag"])
    assert done.value.code == 2
    # a runtime failure: the rule file does not exist
    assert main(["rules", "validate", "/nonexistent/rule.json"]) == 1
    assert "hindsight:" in capsys.readouterr().err


def test_every_flag_has_help() -> None:
    import argparse

    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, command in sub.choices.items()
        for action in command._actions
        if not action.help and not isinstance(action, argparse._HelpAction)
    ]
    assert missing == []


def test_progress_bars_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import sys

    from pipeline.ops.cli import _no_bar

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert _no_bar(argparse.Namespace(json=False)) is True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert _no_bar(argparse.Namespace(json=False)) is False
    assert _no_bar(argparse.Namespace(json=True)) is True
