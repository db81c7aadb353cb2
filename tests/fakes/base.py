"""What the adapter contract suite needs of a destination's fake.

Every fake keeps what the destination would hold, answers as the vendor's documentation says,
and refuses, per record, an `email` without an "@" (each vendor validates email addresses),
with the vendor's own error message."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Fake(ABC):
    type: str  # the adapter's type name
    max_batch_size: int  # records per request the real API accepts
    supports_delete: bool
    invalid_email_error: str  # a fragment of the vendor's message for an invalid email
    rate_limited: bool = True  # whether the vendor has a "too many requests" signal

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        """The destination file's keys (type included) pointing at this fake; with
        `good_credentials` False, credentials the fake refuses."""

    def sync_header(self) -> dict[str, Any]:
        """The sync header keys this destination needs (primary_key, object, ...)."""
        return {"primary_key": "id"}

    def model_sql(self) -> str:
        """A model over the warehouse table `people (id integer, email varchar, name varchar)`,
        its columns named as this destination wants them; the primary key is built from id."""
        return "select id, email, name from people"

    def key_of(self, person_id: int) -> str:
        """The engine's key (as in the wire format) of the person with this id."""
        return str(person_id)

    @abstractmethod
    def stored(self) -> dict[str, dict[str, Any]]:
        """What the destination holds now: key (as key_of gives it) → at least `email` and
        `name` as stored."""

    @abstractmethod
    def batch_sizes(self) -> list[int]:
        """Records in each request that carried records, in order (accepted or not)."""

    @abstractmethod
    def throttle(self, times: int) -> None:
        """Answer the next `times` requests as the vendor does past its rate limit."""

    def throttled(self) -> int:
        """Requests answered so (for the suite's check that throttling happened)."""
        return 0


def running(fake: Fake) -> Iterator[Fake]:
    """A fixture's body: the fake started, and stopped after the test whatever happens."""
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


# (method, target as sent, query included; header names lower-cased; raw body) → (status,
# extra headers, the JSON to answer, None for no body)
Answer = Callable[[str, str, dict[str, str], bytes], tuple[int, dict[str, str], Any]]


class JsonHTTPServer:
    """An HTTP server on 127.0.0.1 answering JSON, for the fakes of vendors' REST APIs. Only
    `methods` reach `answer`; the others get the stdlib's 501, as an API without them would
    refuse them. A fake inherits url, start and stop from it: list it before
    fakes.base.Fake, so that these fill in Fake's abstract start and stop."""

    def __init__(
        self, answer: Answer, methods: Iterable[str], content_type: str = "application/json"
    ) -> None:
        self._server = ThreadingHTTPServer(
            ("127.0.0.1", 0), _handler(answer, methods, content_type)
        )
        self._server.daemon_threads = True  # a request still being answered must not block stop
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(
    answer: Answer, methods: Iterable[str], content_type: str
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, reply = answer(self.command, self.path, headers, raw)
            content = b"" if reply is None else json.dumps(reply).encode()
            self.send_response(status)
            for name, value in {"Content-Type": content_type, **extra}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests' output is no place for an access log

    for method in methods:
        setattr(Handler, f"do_{method}", Handler._serve)
    return Handler
