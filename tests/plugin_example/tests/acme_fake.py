"""A fake Acme Contacts API on 127.0.0.1, written from the API's documentation (not from the
adapter), on reverse_etl.testing's server:

- Authorization: Bearer <API key>, else 401 {"error": "unauthorized", "message"}.
- GET /v1/account: 200 {"account": "Acme Test"}.
- POST /v1/contacts/upsert {"contacts": [{"id": string, "properties": object}]}: at most 20
  contacts, else 413; a body of another shape, 400. Each contact is created or replaced by id,
  unless its `email` property has no "@": that one is refused alone. 200 {"results": [...]}:
  {"id", "status": "ok"} or {"id", "status": "error", "message": "invalid email address: ..."},
  one per contact, in order.
- POST /v1/contacts/delete {"ids": [string]}: at most 20; ids it does not hold are ignored.
  200 {"deleted": n}.
- Past the rate limit (throttle()): 429 {"error": "rate_limited"} with Retry-After in seconds.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from reverse_etl.testing import Fake, JsonHTTPServer

API_KEY = "acme-key-1"
MAX_CONTACTS = 20
Reply = tuple[int, dict[str, str], Any]


class AcmeFake(JsonHTTPServer, Fake):
    type = "acme"
    max_batch_size = MAX_CONTACTS
    supports_delete = True
    invalid_email_error = "invalid email address"

    def __init__(self, *, latency: tuple[float, float] = (0.0, 0.0), seed: int = 0) -> None:
        self.contacts: dict[str, dict[str, Any]] = {}  # id → properties
        self.sizes: list[int] = []  # contacts or ids in each request that carried any
        self._throttle = 0
        self._throttled = 0
        self._lock = threading.Lock()
        super().__init__(self.answer, methods=["GET", "POST"], latency=latency, seed=seed)

    # -- what the contract suite reads and drives --------------------------------------------

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        key = API_KEY if good_credentials else "wrong-key"
        return {"type": "acme", "base_url": self.url, "api_key": key}

    def stored(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {id_: dict(properties) for id_, properties in self.contacts.items()}

    def batch_sizes(self) -> list[int]:
        with self._lock:
            return list(self.sizes)

    def throttle(self, times: int) -> None:
        with self._lock:
            self._throttle += times

    def throttled(self) -> int:
        with self._lock:
            return self._throttled

    # -- the API -----------------------------------------------------------------------------

    def answer(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        if headers.get("authorization") != f"Bearer {API_KEY}":
            return 401, {}, {"error": "unauthorized", "message": "invalid API key"}
        with self._lock:
            if self._throttle:
                self._throttle -= 1
                self._throttled += 1
                return 429, {"Retry-After": "0.1"}, {"error": "rate_limited"}
            if (method, target) == ("GET", "/v1/account"):
                return 200, {}, {"account": "Acme Test"}
            if (method, target) == ("POST", "/v1/contacts/upsert"):
                return self._upsert(raw)
            if (method, target) == ("POST", "/v1/contacts/delete"):
                return self._delete(raw)
            return 404, {}, {"error": "not_found"}

    def _upsert(self, raw: bytes) -> Reply:
        contacts = _list(raw, "contacts")
        if contacts is None or not all(map(_contact, contacts)):
            return 400, {}, {"error": "bad_request", "message": "expected {contacts: [...]}"}
        if len(contacts) > MAX_CONTACTS:
            return 413, {}, {"error": "too_large", "message": f"at most {MAX_CONTACTS} contacts"}
        self.sizes.append(len(contacts))
        results = []
        for contact in contacts:
            email = contact["properties"].get("email")
            if isinstance(email, str) and "@" not in email:
                message = f"invalid email address: {email!r}"
                results.append({"id": contact["id"], "status": "error", "message": message})
                continue
            self.contacts[contact["id"]] = dict(contact["properties"])
            results.append({"id": contact["id"], "status": "ok"})
        return 200, {}, {"results": results}

    def _delete(self, raw: bytes) -> Reply:
        ids = _list(raw, "ids")
        if ids is None or not all(isinstance(i, str) for i in ids):
            return 400, {}, {"error": "bad_request", "message": "expected {ids: [...]}"}
        if len(ids) > MAX_CONTACTS:
            return 413, {}, {"error": "too_large", "message": f"at most {MAX_CONTACTS} ids"}
        self.sizes.append(len(ids))
        deleted = sum(self.contacts.pop(i, None) is not None for i in ids)
        return 200, {}, {"deleted": deleted}


def _contact(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("id"), str)
        and isinstance(value.get("properties"), dict)
    )


def _list(raw: bytes, name: str) -> list[Any] | None:
    """The body's `name` list; None when the body is not a JSON object holding one."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    value = body.get(name) if isinstance(body, dict) else None
    return value if isinstance(value, list) else None
