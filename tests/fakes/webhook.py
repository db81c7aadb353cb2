"""The generic webhook's receiver (reverse_etl.receiver, CONTRACT §2) behind the Fake API:
a bearer token, 429 with Retry-After, and per-record errors in a 2xx answer."""

from __future__ import annotations

import threading
from typing import Any

from fakes.base import Fake as BaseFake
from reverse_etl.receiver import Reply, WebhookReceiver

TOKEN = "hook-token-1"


class Fake(BaseFake):
    type = "webhook"
    max_batch_size = 1000  # the webhook has no limit of its own: the suite's batches
    supports_delete = True
    invalid_email_error = "invalid email"

    def __init__(self) -> None:
        self._throttle = 0
        self._throttled = 0
        self._lock = threading.Lock()
        self.receiver = WebhookReceiver(reject=self._reject, intercept=self._intercept)

    def start(self) -> None:
        self.receiver.start()

    def stop(self) -> None:
        self.receiver.stop()

    def _reject(self, record: dict[str, Any]) -> str | None:
        email = record["fields"].get("email")
        return None if email is None or "@" in email else f"invalid email: {email!r}"

    def _intercept(self, body: dict[str, Any], headers: dict[str, str]) -> Reply | None:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {}, b"unknown token"
        with self._lock:
            if self._throttle:
                self._throttle -= 1
                self._throttled += 1
                return 429, {"Retry-After": "0.2"}, b"slow down"
        return None

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        token = TOKEN if good_credentials else "wrong"
        return {
            "type": "webhook",
            "url": self.receiver.url,
            "headers": {"Authorization": f"Bearer {token}"},
        }

    def stored(self) -> dict[str, dict[str, Any]]:
        return dict(self.receiver.data)

    def batch_sizes(self) -> list[int]:
        return [r["records"] for r in self.receiver.requests if r["records"]]

    def throttle(self, times: int) -> None:
        with self._lock:
            self._throttle += times

    def throttled(self) -> int:
        return self._throttled
