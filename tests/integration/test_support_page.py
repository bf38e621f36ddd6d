"""The support page end to end in headless Chromium (Debian's chromium, driven by Playwright with its
executable path; no browser download): token, a user's detailed logs (history plus follow) arriving
from the real pipeline, incidents with their reasons, a rule disabled from the page."""

from __future__ import annotations

import os
import re
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr

from pipeline.api.control import ControlServer
from pipeline.settings import Settings
from pipeline.sources.publisher import Publisher
from pipeline.store.client import query_api, remote_summary
from pipeline.wire.records import normalize
from tests.conftest import free_port

from .helpers import eventually, pipeline_running

pytestmark = pytest.mark.integration
TOKEN = "support-token"
CHROMIUM = os.environ.get("HINDSIGHT_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@pytest.fixture
def stack(ns: Settings, tmp_path: Path) -> Iterator[tuple[Settings, str]]:
    settings = ns.model_copy(update={"api_token": SecretStr(TOKEN), "api_port": free_port()})
    with pipeline_running(settings, tmp_path / "logs"):
        server = ControlServer(settings).start()
        try:
            yield settings, f"http://127.0.0.1:{server.port}"
        finally:
            server.stop()


def _put_rule(base: str, rule: dict[str, object]) -> None:
    request = urllib.request.Request(
        f"{base}/rules/{rule['id']}",
        data=orjson.dumps(rule),
        method="PUT",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200


def _get(base: str, path: str) -> object:
    request = urllib.request.Request(f"{base}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return orjson.loads(resp.read())


def test_support_page_flow_in_headless_chromium(stack: tuple[Settings, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    settings, base = stack
    user, session = f"u-{settings.app_id}", f"s-{settings.app_id}"
    now_us = time.time_ns() // 1000
    publisher = Publisher(settings)
    # the user's quiet history (never stored without a capture), one hostile message among it
    history = ["opened cart", "applied coupon", "<img src=x onerror=alert(1)>"]
    for i, message in enumerate(history):
        publisher.publish(
            normalize({"timestamp": now_us - 60_000_000 + i, "service": "shop", "level": "DEBUG",
                       "message": message, "session_id": session, "user_id": user, "endpoint": "/cart"})
        )  # fmt: skip
    # someone else's incident
    publisher.publish(
        normalize({"timestamp": now_us, "service": "shop", "level": "ERROR", "message": "card declined",
                   "session_id": f"other-{session}", "user_id": "someone", "endpoint": "/pay"})
    )  # fmt: skip
    assert publisher.flush(30) == 0
    _put_rule(
        base, {"id": "mute-health", "match": {"all": [{"endpoint": "/health"}]}, "actions": {"drop": True}}
    )
    eventually(lambda: remote_summary(query_api(settings))["incidents"], 60, "the incident to be stored")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{base}/support")
        # opened without a token: it asks for one instead of showing empty tables
        expect(page.get_by_test_id("status")).to_contain_text("enter the API token")

        # a wrong token is refused, visibly
        page.get_by_test_id("token").fill("wrong")
        page.get_by_test_id("token").dispatch_event("change")
        expect(page.get_by_test_id("status")).to_contain_text("401")

        page.get_by_test_id("token").fill(TOKEN)
        page.get_by_test_id("token").dispatch_event("change")
        incidents = page.get_by_test_id("incidents")
        expect(incidents).to_contain_text("card declined", timeout=15_000)
        expect(incidents).to_contain_text("error")
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", incidents.inner_text())  # zone said
        rules = page.get_by_test_id("rules")
        expect(rules.locator("tr[data-rule='mute-health']")).to_contain_text("enabled", timeout=15_000)

        # "Detailed logs": the history dump arrives through the pipeline, then the follow-up
        page.get_by_test_id("user").fill(user)
        page.get_by_test_id("lookback").fill("10m")
        page.get_by_test_id("follow").fill("5m")
        page.get_by_test_id("reason").fill("ticket 4711")
        page.get_by_test_id("capture").click()
        expect(page.get_by_test_id("status")).to_contain_text("capture started", timeout=30_000)
        lines = page.get_by_test_id("lines")
        for message in history:
            expect(lines).to_contain_text(message, timeout=60_000)
        publisher.publish(
            normalize({"service": "shop", "level": "INFO", "message": "after the capture began",
                       "session_id": session, "user_id": user, "endpoint": "/checkout"})
        )  # fmt: skip
        assert publisher.flush(30) == 0
        expect(lines).to_contain_text("after the capture began", timeout=60_000)
        assert lines.locator("img").count() == 0 and dialogs == []  # log text is text, never markup
        expect(page.get_by_test_id("capture-info")).to_contain_text(user)
        expect(lines).to_contain_text("capture")  # why each line was kept

        # disable a rule from the page
        page.locator("button[data-testid='toggle-mute-health']").click()
        expect(rules.locator("tr[data-rule='mute-health']")).to_contain_text("disabled", timeout=15_000)
        browser.close()

    rule = _get(base, "/rules/mute-health")
    assert isinstance(rule, dict) and rule["enabled"] is False
    stored = _get(base, f"/lines?user={user}")
    assert isinstance(stored, list)
    assert {r["message"] for r in stored} == {*history, "after the capture began"}
    for bad in ("user=a%00b", "user=a&user=b", "user=%ff", "colour=red", "since_us=1"):
        request = urllib.request.Request(f"{base}/lines?{bad}", headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=10)
        assert err.value.code == 400, bad  # the client's mistake, not the store's
