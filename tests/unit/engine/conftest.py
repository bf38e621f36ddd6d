"""Every engine test runs twice: buffers holding the decoded records, and buffers holding each line's
encoded form (what the worker does), decoded again only when a line is emitted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.engine.support import MODE


@pytest.fixture(autouse=True, params=["records", "encoded"])
def buffers_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    MODE["buffers"] = request.param
    yield request.param
    MODE["buffers"] = "records"
