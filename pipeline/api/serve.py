"""The stdlib HTTP servers' shared start-up: bind (a clear error naming the setting when the port is
taken) and a daemon thread to serve from."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pipeline.errors import ConfigError


def bind(
    what: str, host: str, port: int, handler: type[BaseHTTPRequestHandler], port_setting: str
) -> tuple[ThreadingHTTPServer, threading.Thread]:
    try:
        httpd = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise ConfigError(
            f"{what} cannot listen on {host}:{port} ({exc.strerror}); set {port_setting}"
        ) from None
    httpd.daemon_threads = True
    return httpd, threading.Thread(target=httpd.serve_forever, name=what, daemon=True)
