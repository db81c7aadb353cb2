"""A webhook receiver on 127.0.0.1 implementing the webhook wire format (docs/wire-format.md)
on its own (it does not use reverse_etl.destinations.webhook.receiver, the product's receiver).

- POST, a JSON body {"sync", "object", "operation", "records": [{"key", "fields"}]}; operation
  upsert (store), update (only keys it holds; another key is an error "not found"), insert (a
  key it holds is an error "already exists": a unique key, as a database or CRM would have it),
  delete (forget the key).
- Authorization: Bearer <token>, else 401; with `signing_secret`, X-Reverse-ETL-Signature must be
  sha256=<hex HMAC-SHA256 of the raw body>, else 401.
- The answer: 200 with an empty body when every record is applied, or 200 {"errors": [{"key",
  "error"}]} naming the records it refused (an email without "@", or a key listed in
  `fail_keys`); the others are applied.
- Key identity: keys are compared as exact text, or ignoring case with
  `key_identity="case_insensitive"` (as a CRM matching emails would; the destination file's
  `key_identity` says which the receiver does). Records are held under their identity.
- Idempotency-Key (https://datatracker.ietf.org/doc/draft-ietf-httpapi-idempotency-key-header/):
  a key seen before with the same body answers the stored answer and applies nothing again; with
  another body, 422. Requests are applied one at a time, so a retry racing its first attempt
  gets the first attempt's answer. What each key applied is kept in `applied`.
- 429 with Retry-After for `throttle()`; every other fault through `inject` (fakes.base.Fault).
  Every answer takes 0.1-0.3 s (seeded).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections import Counter
from typing import Any

from fakes.base import REALISTIC_LATENCY, JsonHTTPServer
from fakes.base import Fake as BaseFake

TOKEN = "hook-token-1"
OPERATIONS = ("upsert", "update", "insert", "delete")
Reply = tuple[int, dict[str, str], Any]


class Fake(JsonHTTPServer, BaseFake):
    type = "webhook"
    max_batch_size = 1000  # the webhook has no limit of its own: the suite's batches
    batch_limit = False
    supports_delete = True
    invalid_email_error = "invalid email"

    def __init__(
        self,
        *,
        signing_secret: str | None = None,
        retry_after: str | None = "0.2",
        latency: tuple[float, float] = REALISTIC_LATENCY,
        seed: int = 0,
        key_identity: str = "exact",
    ) -> None:
        self.signing_secret = signing_secret
        self.key_identity = key_identity
        self.retry_after = retry_after  # the throttled answers' Retry-After (None: absent)
        self.data: dict[str, dict[str, Any]] = {}  # identity → fields
        self.requests: list[dict[str, Any]] = []
        self.applied: dict[str, list[dict[str, Any]]] = {}  # Idempotency-Key → what it applied
        self.creates: Counter[str] = Counter()  # identity → records created (insert, upsert)
        self.fail_keys: dict[str, str] = {}  # identity → the error to answer for it
        self._answers: dict[str, tuple[str, Reply]] = {}  # Idempotency-Key → (body hash, answer)
        self._throttle = 0
        self._throttled = 0
        self._lock = threading.RLock()
        super().__init__(self.handle, methods=["POST"], latency=latency, seed=seed)

    # -- the contract suite's view --------------------------------------------------------------

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        token = TOKEN if good_credentials else "wrong"
        values: dict[str, Any] = {
            "type": "webhook",
            "url": self.url,
            "headers": {"Authorization": f"Bearer {token}"},
        }
        if self.signing_secret:
            values["signing_secret"] = self.signing_secret
        return values

    def stored(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {key: dict(fields) for key, fields in self.data.items()}

    def batch_sizes(self) -> list[int]:
        with self._lock:
            return [r["records"] for r in self.requests if r["records"]]

    def throttle(self, times: int) -> None:
        with self._lock:
            self._throttle += times

    def throttled(self) -> int:
        return self._throttled

    def created(self, key: str) -> int:
        """How many times a record with this key (by identity) was created."""
        with self._lock:
            return self.creates[self.identity(key)]

    def identity(self, key: str) -> str:
        """When two keys name one record here."""
        return key.lower() if self.key_identity == "case_insensitive" else key

    # -- the receiver ---------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        entry: dict[str, Any] = {"method": method, "path": target, "headers": headers}
        entry.update(body=raw, records=0, idempotency_key=headers.get("idempotency-key"))
        with self._lock:
            self.requests.append(entry)
            status, extra, answer = self._answer(headers, raw, entry)
            entry["status"] = status
        return status, extra, answer

    def _answer(self, headers: dict[str, str], raw: bytes, entry: dict[str, Any]) -> Reply:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {}, {"error": "unknown token"}
        if self.signing_secret and not self._signed(headers, raw):
            return 401, {}, {"error": "bad signature"}
        if self._throttle:
            self._throttle -= 1
            self._throttled += 1
            extra = {"Retry-After": self.retry_after} if self.retry_after is not None else {}
            return 429, extra, {"error": "slow down"}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {}, {"error": "the body is not JSON"}
        if not _well_formed(body):
            return 400, {}, {"error": "the body is not a batch of the wire format"}
        entry["records"] = len(body["records"])
        key = headers.get("idempotency-key")
        if key is None:
            return self._apply(body, None)
        digest = hashlib.sha256(raw).hexdigest()
        if key in self._answers:
            seen, answer = self._answers[key]
            if seen != digest:
                return 422, {}, {"error": "Idempotency-Key reused with another body"}
            entry["replayed"] = True
            return answer
        answer = self._apply(body, key)  # under the lock: a concurrent retry waits for it
        self._answers[key] = (digest, answer)
        return answer

    def _apply(self, body: dict[str, Any], key: str | None) -> Reply:
        errors = []
        for record in body["records"]:
            error = self._refusal(body["operation"], record)
            if error is not None:
                errors.append({"key": record["key"], "error": error})
                continue
            self._write(body["operation"], record)
            if key is not None:
                self.applied.setdefault(key, []).append({"operation": body["operation"], **record})
        return 200, {}, ({"errors": errors} if errors else None)

    def _refusal(self, operation: str, record: dict[str, Any]) -> str | None:
        identity = self.identity(record["key"])
        if identity in self.fail_keys:
            return self.fail_keys[identity]
        if operation == "delete":
            return None
        email = record["fields"].get("email")
        if isinstance(email, str) and "@" not in email:
            return f"invalid email: {email!r}"
        if operation == "update" and identity not in self.data:
            return "not found"
        if operation == "insert" and identity in self.data:
            return "already exists"
        return None

    def _write(self, operation: str, record: dict[str, Any]) -> None:
        identity = self.identity(record["key"])
        if operation == "delete":
            self.data.pop(identity, None)
            return
        if identity not in self.data:
            self.creates[identity] += 1
        self.data[identity] = dict(record["fields"])

    def _signed(self, headers: dict[str, str], raw: bytes) -> bool:
        assert self.signing_secret is not None
        digest = hmac.new(self.signing_secret.encode(), raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(headers.get("x-reverse-etl-signature", ""), f"sha256={digest}")


def _well_formed(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("operation") not in OPERATIONS:
        return False
    records = body.get("records")
    return isinstance(records, list) and all(
        isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("fields"), dict)
        for r in records
    )
