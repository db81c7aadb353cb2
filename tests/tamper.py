"""A tampering HTTP proxy on 127.0.0.1, in front of a destination's fake: each request is
forwarded to the fake (so a write lands there, as on the real API), and a rule may then spoil
the answer on its way back, as a network, a proxy or a load balancer does:

    Lose(delay)        the answer never arrives: the connection is closed after `delay` seconds
                       (past the client's timeout: a timeout; 0: a dropped connection)
    Replace(status, body)  another answer (HTML from a proxy, truncated JSON, another shape)
    Huge(size)         a 200 whose body is `size` bytes, streamed; `written` counts what left

With `forward=False` the fake never sees the request (a write that did not land, or a lookup
answered from a lagging index). The proxy knows nothing of the vendors' APIs."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    action: str = "forwarded"


@dataclass
class Lose:
    delay: float = 0.0
    forward: bool = True


@dataclass
class Replace:
    status: int
    body: bytes
    content_type: str = "application/json"
    forward: bool = True


@dataclass
class Huge:
    size: int
    forward: bool = True
    announce: bool = False  # send Content-Length (else chunked: no size told in advance)


Action = Lose | Replace | Huge
Rule = Callable[[Seen], Action | None]


def once(matches: Callable[[Seen], bool], action: Action) -> Rule:
    """A rule for the first request that `matches` only."""
    fired = threading.Event()

    def rule(seen: Seen) -> Action | None:
        if fired.is_set() or not matches(seen):
            return None
        fired.set()
        return action

    return rule


def always(matches: Callable[[Seen], bool], action: Action) -> Rule:
    return lambda seen: action if matches(seen) else None


@dataclass
class TamperingProxy:
    upstream: str  # the fake's base URL, http://127.0.0.1:PORT
    rules: list[Rule] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self.written = 0  # bytes of Huge bodies that left the proxy
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TamperingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        with self.lock:
            return [s.path for s in self.seen if method is None or s.method == method]

    def _forward(self, seen: Seen) -> tuple[int, list[tuple[str, str]], bytes]:
        target = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            headers = {k: v for k, v in seen.headers.items() if k not in ("host", "connection")}
            conn.request(seen.method, seen.path, body=seen.body or None, headers=headers)
            reply = conn.getresponse()
            body = reply.read()
            kept = [
                (k, v)
                for k, v in reply.getheaders()
                if k.lower() not in ("content-length", "connection", "transfer-encoding")
            ]
            return reply.status, kept, body
        finally:
            conn.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.command, self.path, headers, raw)
                with proxy.lock:
                    proxy.seen.append(seen)
                    action = next((a for r in proxy.rules if (a := r(seen)) is not None), None)
                if action is None or action.forward:
                    status, reply_headers, body = proxy._forward(seen)
                if action is None:
                    self._reply(status, reply_headers, body)
                    return
                seen.action = type(action).__name__.lower()
                if isinstance(action, Lose):
                    time.sleep(action.delay)
                    self.close_connection = True
                elif isinstance(action, Replace):
                    self._reply(action.status, [("Content-Type", action.content_type)], action.body)
                else:
                    self._huge(action.size, action.announce)

            def _reply(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                try:
                    self.send_response(status)
                    for name, value in headers:
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    self.close_connection = True

            def _huge(self, size: int, announce: bool) -> None:
                chunk = b'{"errors": [' + b" " * (64 * 1024)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    if announce:
                        self.send_header("Content-Length", str(size))
                    else:
                        self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    left = size
                    while left > 0:
                        part = chunk[: min(left, len(chunk))]
                        framed = part if announce else b"%x\r\n%s\r\n" % (len(part), part)
                        self.wfile.write(framed)
                        with proxy.lock:
                            proxy.written += len(part)
                        left -= len(part)
                    if not announce:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the client stopped reading and closed: what we want
                    pass
                self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        for method in ("GET", "POST", "PATCH", "DELETE", "PUT"):
            setattr(Handler, f"do_{method}", Handler._serve)
        return Handler
