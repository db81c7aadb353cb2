"""A local webhook receiver speaking the webhook wire format
(docs/wire-format.md): the demo's destination, and the
tests' and benchmarks' real HTTP server on 127.0.0.1.

It keeps the latest fields of every key (deletes remove them), counts what each key received,
honours `Idempotency-Key` as the wire format asks (a request repeating the key of one it
applied whole gets the same answer and is not applied again), and can be told to reject records
(`reject(record) -> error or None`) or to answer a request itself
(`intercept(body, headers) -> (status, headers, body) or None`), e.g. with a 429."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, str], bytes]
REMEMBERED_ANSWERS = 10_000  # Idempotency-Keys whose answers are kept for a repeat


class WebhookReceiver:
    def __init__(
        self,
        reject: Callable[[dict[str, Any]], str | None] | None = None,
        intercept: Callable[[dict[str, Any], dict[str, str]], Reply | None] | None = None,
        delay: float = 0.0,
        port: int = 0,
    ) -> None:
        self.reject = reject
        self.intercept = intercept
        self.delay = delay
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, Any]] = {}
        self.received: Counter[str] = Counter()  # records accepted, per key
        self.requests: list[dict[str, Any]] = []  # operation, record count, headers, status
        self.arrivals: list[float] = []  # monotonic time each request arrived
        self.in_flight = 0
        self.max_in_flight = 0
        self.answered: OrderedDict[str, Reply] = OrderedDict()  # by Idempotency-Key, recent
        self.replayed = 0  # requests answered from `answered`, not applied again
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        port = self.server.server_address[1]
        return f"http://127.0.0.1:{port}/ingest"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def records_received(self) -> int:
        with self.lock:
            return sum(self.received.values())

    def handle(self, body: dict[str, Any], headers: dict[str, str], raw: bytes = b"") -> Reply:
        with self.lock:
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return self._answer(body, headers, raw)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _answer(self, body: dict[str, Any], headers: dict[str, str], raw: bytes) -> Reply:
        if self.delay:
            time.sleep(self.delay)
        if self.intercept and (reply := self.intercept(body, headers)) is not None:
            self._log(body, headers, reply[0], raw)
            return reply
        idempotency_key = headers.get("idempotency-key")
        errors = []
        with self.lock:
            if idempotency_key is not None and idempotency_key in self.answered:
                self.replayed += 1
                reply = self.answered[idempotency_key]
                self.requests.append(_entry(body, headers, reply[0], raw))
                return reply
            for record in body["records"]:
                error = self.reject(record) if self.reject else None
                if error:
                    errors.append({"key": record["key"], "error": error})
                    continue
                self.received[record["key"]] += 1
                if body["operation"] == "delete":
                    self.data.pop(record["key"], None)
                else:
                    self.data[record["key"]] = record["fields"]
            answer = json.dumps({"errors": errors}).encode() if errors else b""
            reply = 200, {"Content-Type": "application/json"}, answer
            if idempotency_key is not None and not errors:  # a refusal is decided anew
                self.answered[idempotency_key] = reply
                while len(self.answered) > REMEMBERED_ANSWERS:
                    self.answered.popitem(last=False)
            self.requests.append(_entry(body, headers, 200, raw))
        return reply

    def _log(self, body: dict[str, Any], headers: dict[str, str], status: int, raw: bytes) -> None:
        with self.lock:
            self.requests.append(_entry(body, headers, status, raw))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply_headers: dict[str, str]
                try:
                    body = json.loads(raw)
                except ValueError:
                    status, reply_headers, answer = 400, {}, b"body is not JSON"
                else:
                    status, reply_headers, answer = receiver.handle(body, headers, raw)
                self.send_response(status)
                for name, value in reply_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _entry(
    body: dict[str, Any], headers: dict[str, str], status: int, raw: bytes
) -> dict[str, Any]:
    return {
        "operation": body.get("operation"),
        "records": len(body.get("records", [])),
        "keys": [r["key"] for r in body.get("records", [])],
        "headers": headers,
        "status": status,
        "raw": raw,
        "at": time.monotonic(),  # when it was answered
    }


class RollingLimit:
    """An `intercept` that limits the receiver's rate as an API does: at most `limit` requests
    in any rolling `seconds`, answering 429 past it (with Retry-After when one is given)."""

    def __init__(self, limit: int, seconds: float = 1.0, retry_after: str | None = None) -> None:
        self.limit, self.seconds, self.retry_after = limit, seconds, retry_after
        self.accepted: deque[float] = deque()
        self.throttled = 0
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        with self.lock:
            now = time.monotonic()
            while self.accepted and self.accepted[0] <= now - self.seconds:
                self.accepted.popleft()
            if len(self.accepted) >= self.limit:
                self.throttled += 1
                extra = {"Retry-After": self.retry_after} if self.retry_after else {}
                return 429, extra, b"rate limit exceeded"
            self.accepted.append(now)
            return None
