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
