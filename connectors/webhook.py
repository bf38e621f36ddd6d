"""Webhook sink: batches of curated lines POSTed as JSON to a customer-service endpoint, signed.

Each request carries `X-Hindsight-Signature: sha256=<hex HMAC of timestamp + "." + body>` and
`X-Hindsight-Timestamp`, so the receiver can check origin and freshness. Classification, once:
unreachable, timeouts, 408/429/5xx -> retry with back-off (the runner does it, no commit meanwhile);
other 4xx -> the receiver refuses the rows: dead-letter them with its answer. Redirects are not
followed (the batch and its signature would go to another host, or turn into a GET): a 3xx
dead-letters the rows with the target named, and is never counted delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

import orjson

from pipeline.errors import BadDataError, ConfigError, RetryableSinkError
from pipeline.settings import Settings
from pipeline.types import CuratedRecord

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 425, 429}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


_OPENER = urllib.request.build_opener(_NoRedirects)


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: bytes, timeout_s: float = 10.0, batch_rows: int = 500) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.batch_rows = batch_rows
        self._pending: list[CuratedRecord] = []
        self.requests = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSink:
        if not settings.webhook_url or settings.webhook_secret is None:
            raise ConfigError("the webhook sink needs HINDSIGHT_WEBHOOK_URL and HINDSIGHT_WEBHOOK_SECRET")
        return cls(
            settings.webhook_url,
            settings.webhook_secret.get_secret_value().encode(),
            settings.webhook_timeout_s,
            settings.webhook_batch_rows,
        )

    def write_batch(self, rows: Sequence[CuratedRecord]) -> None:
        self._pending.extend(rows)

    def flush(self) -> None:
        # the runner hands the whole batch again after a failure, so nothing stays pending here;
        # chunks already delivered are delivered again then (receivers dedupe on the raw line id)
        rows, self._pending = self._pending, []
        try:
            bodies = [
                orjson.dumps(rows[i : i + self.batch_rows]) for i in range(0, len(rows), self.batch_rows)
            ]
        except TypeError as exc:
            raise BadDataError(f"not serialisable as JSON: {exc}") from exc
        for body in bodies:
            self._post(body)

    def _post(self, body: bytes) -> None:
        stamp = str(int(time.time()))
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("X-Hindsight-Timestamp", stamp)
        request.add_header("X-Hindsight-Signature", signature(self.secret, stamp, body))
        try:
            with _OPENER.open(request, timeout=self.timeout_s) as response:
                response.read()
                if not 200 <= response.status < 300:
                    raise BadDataError(f"webhook answered {response.status}: not a success")
            self.requests += 1
        except urllib.error.HTTPError as exc:
            answer = exc.read(500).decode("utf-8", "replace")
            if 300 <= exc.code < 400:
                raise BadDataError(
                    f"webhook answered {exc.code}, a redirect to {exc.headers.get('Location')!r}: redirects "
                    "are not followed (set HINDSIGHT_WEBHOOK_URL to the final URL)"
                ) from exc
            if exc.code in RETRY_STATUS or exc.code >= 500:
                raise RetryableSinkError(f"webhook answered {exc.code}: {answer}") from exc
            raise BadDataError(f"webhook refused the rows ({exc.code}): {answer}") from exc
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            raise RetryableSinkError(f"webhook unreachable: {getattr(exc, 'reason', exc)}") from exc

    def close(self) -> None:
        pass
