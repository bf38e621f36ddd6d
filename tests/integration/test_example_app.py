"""The example web app (examples/webapp) end to end on the real broker: its requests produce queryable,
correctly attributed lines (session, user, endpoint template, latency, status), and a session without
an incident stores nothing below WARN."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from examples.webapp.app import create_app
from pipeline.settings import Settings
from pipeline.store.client import query_api, remote_query
from pipeline.store.query import QueryFilters

from .helpers import eventually, pipeline_running

pytestmark = pytest.mark.integration


def test_example_app_lines_are_queryable_and_attributed(ns: Settings, tmp_path: Path) -> None:
    with pipeline_running(ns, tmp_path / "logs"):
        app, handler = create_app(ns, service="shop-example")
        try:
            with TestClient(app) as client:
                alice = {"X-Session-Id": f"alice-{ns.app_id}", "X-User-Id": "alice"}
                bob = {"X-Session-Id": f"bob-{ns.app_id}", "X-User-Id": "bob"}
                assert client.get("/cart", headers=alice).status_code == 200
                assert client.get("/orders/17", headers=alice).status_code == 200
                assert client.get("/cart", headers=bob).status_code == 200
                assert client.get("/pay?fail=1", headers=alice).status_code == 502
            handler.flush()
        finally:
            logging.getLogger("shop").removeHandler(handler)
            handler.close()
        assert handler.dropped == 0 and handler.invalid == 0

        rows = eventually(
            lambda: (
                (r := remote_query(query_api(ns), QueryFilters(session=alice["X-Session-Id"])))
                and len(r) >= 7
                and r
            ),
            60,
            "alice's lines",
        )
        bob_rows = remote_query(query_api(ns), QueryFilters(session=bob["X-Session-Id"]))

    assert bob_rows == []  # no incident, nothing at WARN+: nothing stored
    by_message = {r["message"]: r for r in rows}
    assert len(rows) == 7 == len(by_message)
    plain = {
        "cart loaded items=3",
        "order looked up id=17",
        "charging card",
        "gateway answered code=card_declined",
    }
    assert plain <= set(by_message)
    access_lines = sorted(m.split(" in ")[0] for m in by_message if " -> " in m)
    assert access_lines == ["GET /cart -> 200", "GET /orders/{order_id} -> 200", "GET /pay -> 502"]
    for r in rows:
        assert r["user_id"] == "alice" and r["service"] == "shop-example"
        assert r["transaction_id"]  # one per request
    assert by_message["cart loaded items=3"]["endpoint"] == "/cart"
    assert by_message["order looked up id=17"]["endpoint"] == "/orders/{order_id}"  # the template
    access = {r["endpoint"]: r for r in rows if r["status_code"] is not None}
    assert {e: (a["status_code"], a["level"]) for e, a in access.items()} == {
        "/cart": (200, "INFO"),
        "/orders/{order_id}": (200, "INFO"),
        "/pay": (502, "ERROR"),
    }
    assert all(a["latency_ms"] > 0 for a in access.values())
    pay_lines = [r for r in rows if r["endpoint"] == "/pay"]
    assert len({r["transaction_id"] for r in pay_lines}) == 1 and len(pay_lines) == 3
    assert {r["trigger_id"] for r in rows} == {access["/pay"]["trigger_id"]}  # one incident, all its lines
