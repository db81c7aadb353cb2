"""A JSON API's fake vendor server: a real HTTP server on 127.0.0.1, answering from a thread,
with a realistic answer time and faults injected on demand (a 503, a hang, a dropped
connection, a proxy's HTML page, a truncated or late answer).

A fake built on it subclasses both JsonHTTPServer and reverse_etl.testing.Fake, in that order,
and hands JsonHTTPServer the function that answers each request as the vendor's documentation
says."""

from __future__ import annotations

import json
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# What answers a request as the vendor would: (method, target as sent with its query, headers
# with lower-cased names, raw body) → (HTTP status, extra headers, the JSON value to answer or
# None for an empty body). Called from the server's threads: guard shared state with a lock.
Answer = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], Any]]
"""A fake's answer to one request: called as answer(method, target, headers, body) with the
method ("POST"), the request target as sent (the path with its query string, "/v1/x?a=1"), the
headers with lower-cased names, and the raw body; returns (status, extra headers, reply), the
reply sent as JSON (None: no body), with the server's content type."""

# A realistic answer time, seconds (low, high): each answer takes a random time in this range.
REALISTIC_LATENCY = (0.1, 0.3)


@dataclass
class Fault:
    """One request answered otherwise than the vendor's API would, for fault-injection tests.

    kind:
    - "status": answer `status` with `headers` and `body` (bytes or JSON), e.g. a 503 or a 429
      with or without Retry-After;
    - "hang": say nothing for `seconds` (past the client's timeout), then drop the connection;
    - "drop": drop the connection (TCP reset) without an answer;
    - "garbage": answer 200 with `body` (default: an HTML page from a proxy);
    - "truncated": answer 200 with the real answer's JSON cut in half;
    - "late": answer the real answer after `seconds` (past the client's timeout).
    applied: whether the vendor applies the request first (a write that succeeds although the
    client never reads its answer). "truncated" and "late" are always applied; with
    applied=True, "drop" and "hang" are the create that succeeds after the client's timeout.
    where: only requests whose method and path (without query) it accepts take this fault.
    """

    kind: str
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    seconds: float = 5.0
    applied: bool = False
    where: Callable[[str, str], bool] | None = None


PROXY_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway"
    b"</h1></center><hr><center>nginx</center></body></html>"
)


class JsonHTTPServer:
    """An HTTP server on 127.0.0.1 answering JSON, for the fakes of vendors' REST APIs. Only
    `methods` reach `answer`; the others get the stdlib's 501, as an API without them would
    refuse them. A fake inherits url, start and stop from it: list it before
    reverse_etl.testing.Fake among the bases, so that these fill in Fake's abstract start
    and stop.

    Each answer takes a random time within `latency` (seconds; seeded by `seed`, so a test's
    run repeats): half before the request is applied, half after. Faults queued with
    `inject` take the next requests they accept, in order; `injected` lists (fault kind,
    method, path) of each one taken."""

    def __init__(
        self,
        answer: Answer,
        methods: Iterable[str],
        content_type: str = "application/json",
        *,
        latency: tuple[float, float] = (0.0, 0.0),
        seed: int = 0,
    ) -> None:
        self.latency = latency
        self._random = random.Random(seed)
        self._faults: list[Fault] = []
        self._fault_lock = threading.Lock()
        self._stopping = threading.Event()
        self.injected: list[tuple[str, str, str]] = []
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", 0), _handler(self, answer, methods, content_type)
        )
        self._server.daemon_threads = True  # a request still being answered must not block stop
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        """The server's base URL, `http://127.0.0.1:PORT` (a free port, taken at construction)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        """Answer requests from a daemon thread, until stop()."""
        self._thread.start()

    def stop(self) -> None:
        """Stop answering and free the port; a hang or late answer under way ends at once."""
        self._stopping.set()  # ends hangs and late answers now
        self._server.shutdown()
        self._server.server_close()

    def inject(self, fault: Fault | str, times: int = 1, **options: Any) -> None:
        """Answer the next `times` requests that the fault accepts with it; a kind name and
        Fault's fields as keywords make one, e.g. inject("status", status=503)."""
        made = fault if isinstance(fault, Fault) else Fault(fault, **options)
        with self._fault_lock:
            self._faults.extend([made] * times)

    def pending_faults(self) -> int:
        """Faults queued that no request has taken yet."""
        with self._fault_lock:
            return len(self._faults)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._fault_lock:
            for number, fault in enumerate(self._faults):
                if fault.where is None or fault.where(method, path):
                    del self._faults[number]
                    self.injected.append((fault.kind, method, path))
                    return fault
        return None

    def _pause(self) -> float:
        with self._fault_lock:
            low, high = self.latency
            return self._random.uniform(low, high) if high > 0 else 0.0

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


def _handler(
    server: JsonHTTPServer, answer: Answer, methods: Iterable[str], content_type: str
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            fault = server._take_fault(self.command, urlsplit(self.path).path)
            pause = server._pause()
            server._wait(pause / 2)
            applies = fault is None or fault.applied or fault.kind in ("truncated", "late")
            if not applies:
                self._fault_unapplied(fault)  # type: ignore[arg-type]
                return
            status, extra, reply = answer(self.command, self.path, headers, raw)
            content = b"" if reply is None else json.dumps(reply).encode()
            server._wait(pause / 2)
            if fault is None:
                self._send(status, {"Content-Type": content_type, **extra}, content)
            elif fault.kind == "truncated":
                cut = content[: max(1, len(content) // 2)] if content else b"{"
                self._send(200, {"Content-Type": content_type, **extra}, cut)
            elif fault.kind == "late":
                server._wait(fault.seconds)
                self._send(status, {"Content-Type": content_type, **extra}, content)
            elif fault.kind == "hang":
                server._wait(fault.seconds)
                self._drop()
            elif fault.kind == "drop":
                self._drop()
            else:
                self._fault_unapplied(fault)

        def _fault_unapplied(self, fault: Fault) -> None:
            if fault.kind == "drop":
                self._drop()
            elif fault.kind == "hang":
                server._wait(fault.seconds)
                self._drop()
            elif fault.kind == "garbage":
                body = PROXY_HTML if fault.body is None else _bytes(fault.body)
                self._send(200, {"Content-Type": "text/html", **fault.headers}, body)
            else:  # "status"
                body = b"" if fault.body is None else _bytes(fault.body)
                kind = "application/json" if not isinstance(fault.body, bytes) else "text/plain"
                self._send(fault.status, {"Content-Type": kind, **fault.headers}, body)

        def _send(self, status: int, headers: dict[str, str], content: bytes) -> None:
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
            except OSError:  # the client gave up first (its timeout): as a server sees it
                self.close_connection = True

        def _drop(self) -> None:
            """Reset the connection: the client reads no answer at all."""
            self.close_connection = True
            try:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
            except OSError:
                pass

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests' output is no place for an access log

    for method in methods:
        setattr(Handler, f"do_{method}", Handler._serve)
    return Handler


def _bytes(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()
