"""The daemon's status server: /healthz, /syncs (JSON) and /metrics (Prometheus text format).

Plain http.server on a thread of its own: three read-only pages need no framework. It binds to
127.0.0.1 unless told otherwise: the run history it shows is the project's business."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import ReverseEtlError

log = logging.getLogger("reverse_etl.status")

Page = Callable[[], tuple[int, str, bytes]]  # status, content type, body


def json_page(obj: Any, status: int = 200) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj, default=str, indent=1).encode()


class StatusServer:
    def __init__(self, host: str, port: int, pages: dict[str, Page]) -> None:
        self.pages = pages
        handler = type("Handler", (_Handler,), {"pages": pages})
        try:
            self.server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ReverseEtlError(
                f"the status server cannot listen on {host}:{port}: {exc.strerror or exc}; "
                f"set another [daemon] port in config.toml (0 picks a free one)"
            ) from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="reverse-etl-status", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    pages: dict[str, Page]
    server_version = "reverse-etl"

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?")[0].rstrip("/") or "/"
        page = self.pages.get(path)
        if page is None:
            status, kind, body = json_page(
                {"error": f"no page {path}", "pages": sorted(self.pages)}, 404
            )
        else:
            try:
                status, kind, body = page()
            except Exception as exc:  # a page must answer, whatever went wrong
                log.exception("status page %s failed", path)
                status, kind, body = json_page({"error": repr(exc)}, 500)
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's name)
        log.debug("status: " + format, *args)
