"""A support capture's rule is named cleanly: the user, and the reason only when one was given."""

from __future__ import annotations

from pipeline.control.captures import capture_description


def test_the_description_has_no_dangling_colon() -> None:
    assert capture_description("u42", "") == "support capture of user u42"
    assert capture_description("u42", "  ") == "support capture of user u42"
    assert capture_description("u42", "ticket 7") == "support capture of user u42: ticket 7"
    assert len(capture_description("u", "x" * 5000)) == 2000
