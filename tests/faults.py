"""A fault-injecting webhook receiver on 127.0.0.1, speaking the webhook wire format
(docs/wire-format.md).

Each request is answered by the first scripted rule that claims it, else by a fault drawn at
random, else normally:

    ok        2xx; records listed in `reject` are answered in the body's `errors`, the rest applied
    throttle  429, with `Retry-After: 0` or `1` (half the time at random) or without the header
    error     500, 502 or 503
    hang      the batch IS applied (a real API may have done the work), then no answer: the
              handler sleeps past the client's timeout and closes the connection. The client
              sees a timeout and sends the batch again: its keys are counted twice.
    drop      the body is read, nothing is applied, the connection is closed without an answer
    slow      answered normally after `slow_seconds`

Whatever the fault, a batch holding a key of `poison` is refused as a whole with 422 (the
engine must split it until the bad record is alone). Deliveries are counted per key in
`received` (hung batches included, since they were applied); `data` keeps each key's latest
fields, and a `delete` removes the key. `requests` records every request and its outcome.

The random draws are reproducible: each request's draw comes from a generator seeded with
(seed, the batch's operation and keys, how many times its Idempotency-Key was seen before), so
the same batch meets the same faults on its n-th attempt whatever the order in which threads
run, and in every test run (the key itself holds the run's random id)."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Faults:
    """Probabilities, per request, of each fault (the rest are answered normally)."""

    throttle: float = 0.0  # 429: half with Retry-After (0 or 1 s), half without
    error: float = 0.0  # 500 / 502 / 503
    hang: float = 0.0  # applied, then no answer before the client's timeout
    drop: float = 0.0  # connection closed without an answer, nothing applied
    slow: float = 0.0  # answered after slow_seconds
    hang_seconds: float = 1.0  # must exceed the destination's timeout_seconds
    slow_seconds: float = 0.1


@dataclass
class Request:
    number: int
    operation: str
    keys: list[str]
    idempotency_key: str
    attempt: int  # how many earlier requests carried the same Idempotency-Key

    @property
    def batch(self) -> str:
        """The batch, as the same in every run (its Idempotency-Key holds the run's id)."""
        return f"{self.operation}:{','.join(self.keys)}"
    arrived: float  # time.monotonic()
    outcome: str = ""  # ok | throttle | error | hang | drop | slow | 422
    status: int | None = None  # None: no answer (hang, drop)
    retry_after: str | None = None  # the Retry-After header of a 429
    answered: float | None = None  # when the handler finished with it


# A scripted rule: (request, body) -> an outcome name ("ok", "throttle", "error", "hang", "drop",
# "slow"; "throttle:1", "throttle:0" or "throttle:-" choose the Retry-After, "-" for none) or
# None to leave the request to the random faults.
Rule = Callable[[Request, dict[str, Any]], str | None]


@dataclass
class FaultyReceiver:
    faults: Faults = field(default_factory=Faults)
    seed: int = 0
    rules: list[Rule] = field(default_factory=list)
    reject: dict[str, str] = field(default_factory=dict)  # key -> error, in a 2xx `errors` body
    poison: dict[str, str] = field(default_factory=dict)  # key -> 422 text for its whole batch
    delay: float = 0.0  # added to every request before it is answered

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.data: dict[str, dict[str, Any]] = {}
        self.received: Counter[str] = Counter()  # applications of each key (deletes included)
        self.requests: list[Request] = []
        self._seen: Counter[str] = Counter()  # requests per Idempotency-Key
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True  # hung handlers must not hold up shutdown
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ingest"

    def __enter__(self) -> FaultyReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def records_received(self) -> int:
        with self.lock:
            return sum(self.received.values())

    def outcomes(self) -> Counter[str]:
        with self.lock:
            return Counter(r.outcome for r in self.requests)

    # -- deciding and answering ------------------------------------------------------------

    def _register(self, body: dict[str, Any], headers: dict[str, str]) -> Request:
        key = headers.get("idempotency-key", "")
        with self.lock:
            request = Request(
                number=len(self.requests),
                operation=body.get("operation", ""),
                keys=[r["key"] for r in body.get("records", [])],
                idempotency_key=key,
                attempt=self._seen[key],
                arrived=time.monotonic(),
            )
            self._seen[key] += 1
            self.requests.append(request)
        return request

    def _decide(self, request: Request, body: dict[str, Any]) -> tuple[str, random.Random]:
        rng = random.Random(f"{self.seed}:{request.batch}:{request.attempt}")
        for rule in self.rules:
            if (outcome := rule(request, body)) is not None:
                return outcome, rng
        draw, f = rng.random(), self.faults
        for outcome, p in (
            ("throttle", f.throttle),
            ("error", f.error),
            ("hang", f.hang),
            ("drop", f.drop),
            ("slow", f.slow),
        ):
            if draw < p:
                return outcome, rng
            draw -= p
        return "ok", rng

    def _apply(self, body: dict[str, Any]) -> tuple[int, bytes, str]:
        """A normal answer: 422 for a poisoned batch, else apply and list per-record errors."""
        records = body["records"]
        bad = [self.poison[r["key"]] for r in records if r["key"] in self.poison]
        if bad:
            return 422, bad[0].encode(), "422"
        errors = []
        with self.lock:
            for record in records:
                key = record["key"]
                if key in self.reject:
                    errors.append({"key": key, "error": self.reject[key]})
                    continue
                self.received[key] += 1
                if body["operation"] == "delete":
                    self.data.pop(key, None)
                else:
                    self.data[key] = record["fields"]
        return 200, json.dumps({"errors": errors}).encode() if errors else b"", "ok"

    def answer(self, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict, bytes]:
        """(status, headers, body); status 0 means: close the connection without answering."""
        request = self._register(body, headers)
        outcome, rng = self._decide(request, body)
        if self.delay:
            time.sleep(self.delay)
        status, reply_headers, text = 0, {}, b""
        if outcome.startswith("throttle"):
            outcome, _, after = outcome.partition(":")
            status, text = 429, b"slow down"
            if not after:
                after = str(rng.choice((0, 1))) if rng.random() < 0.5 else "-"
            if after != "-":
                reply_headers["Retry-After"] = request.retry_after = after
        elif outcome == "error":
            status, text = rng.choice((500, 502, 503)), b"the server is having a bad day"
        elif outcome == "hang":
            with self.lock:
                request.outcome = "hang"  # known at once, though answered (never) much later
            self._apply(body)
            time.sleep(self.faults.hang_seconds)
        elif outcome == "drop":
            pass
        else:
            if outcome == "slow":
                time.sleep(self.faults.slow_seconds)
            status, text, result = self._apply(body)
            outcome = result if outcome == "ok" or result == "422" else outcome
        with self.lock:
            request.outcome, request.status = outcome, status or None
            request.answered = time.monotonic()
        if status:
            reply_headers.setdefault("Content-Type", "application/json")
        return status, reply_headers, text

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, reply_headers, text = receiver.answer(json.loads(raw), headers)
                if not status:  # hang or drop: no answer at all
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    for name, value in reply_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                except OSError:  # the client is gone (killed, or it timed out)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
