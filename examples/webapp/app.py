"""A small Starlette shop wired to log-hindsight: every line goes to logs.raw, only incidents are kept.

Run it (with `hindsight stack up`, `hindsight worker` and `hindsight sink clickhouse` running):

    pip install starlette uvicorn
    python -m examples.webapp.app          # http://127.0.0.1:8000
    curl -H 'X-Session-Id: s1' -H 'X-User-Id: alice' 127.0.0.1:8000/cart
    curl -H 'X-Session-Id: s1' -H 'X-User-Id: alice' '127.0.0.1:8000/pay?fail=1'
    hindsight query --session s1           # the cart lines before the failure are there too

The middleware binds session, user, endpoint (the route template) and a transaction id once per
request, so every line logged while serving it carries them, and it logs one access line per request
with latency_ms and status_code (ERROR for 5xx, WARN for 4xx, else INFO).
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.settings import Settings
from pipeline.sources.logcontext import log_context
from pipeline.sources.publisher import HindsightHandler

log = logging.getLogger("shop")


class HindsightMiddleware:
    """Pure ASGI middleware: per-request log context, latency and status of every request."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], logger: logging.Logger = log) -> None:
        self.app = app
        self.routes = routes
        self.logger = logger

    def _template(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return str(getattr(route, "path", scope["path"]))
        return str(scope["path"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        endpoint = self._template(scope)
        status = 500  # what the client sees if the app raises before answering
        started = time.perf_counter()

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with log_context(
            session_id=headers.get("x-session-id"),
            user_id=headers.get("x-user-id"),
            endpoint=endpoint,
            transaction_id=headers.get("x-request-id") or uuid.uuid4().hex,
        ):
            try:
                await self.app(scope, receive, send_and_watch)
            except Exception:
                self.logger.exception("unhandled error in %s %s", scope["method"], endpoint)
                raise
            finally:
                latency_ms = (time.perf_counter() - started) * 1000
                level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
                self.logger.log(
                    level,
                    "%s %s -> %s in %.1f ms",
                    scope["method"],
                    endpoint,
                    status,
                    latency_ms,
                    extra={"latency_ms": round(latency_ms, 3), "status_code": status},
                )


async def cart(request: Request) -> JSONResponse:
    log.debug("cart loaded items=%s", 3)
    return JSONResponse({"items": 3})


async def order(request: Request) -> JSONResponse:
    log.debug("order looked up id=%s", request.path_params["order_id"])
    return JSONResponse({"id": request.path_params["order_id"]})


async def pay(request: Request) -> JSONResponse:
    log.info("charging card")
    if request.query_params.get("fail"):
        log.debug("gateway answered code=%s", "card_declined")
        return JSONResponse({"error": "payment gateway failed"}, status_code=502)
    return JSONResponse({"paid": True})


def create_app(settings: Settings | None = None, service: str = "shop") -> tuple[Starlette, HindsightHandler]:
    """The app and the handler that ships its lines (close it on shutdown)."""
    handler = HindsightHandler(service=service, settings=settings or Settings())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    routes: list[BaseRoute] = [
        Route("/cart", cart),
        Route("/orders/{order_id}", order),
        Route("/pay", pay, methods=["GET", "POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        handler.close()  # ships what is still queued

    app = Starlette(routes=routes, lifespan=lifespan)
    app.add_middleware(HindsightMiddleware, routes=routes)
    return app, handler


def main() -> Any:
    import uvicorn

    app, _ = create_app()
    uvicorn.run(app, host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
