"""A fake Braze REST API: POST /users/track (attributes) and POST /users/delete, answering as
Braze's documentation says (https://www.braze.com/docs, source github.com/braze-inc/braze-docs):

- api/endpoints/user_data/post_user_track: at most 75 attributes objects; 201
  {"message": "success", "attributes_processed": n} plus, for the objects refused,
  "errors": [{"type", "input_array": "attributes", "index"}]; the other objects are processed.
  With no valid object: 400 {"message": "Valid data must be provided in the 'attributes',
  'events', or 'purchases' fields.", "errors": [...]}. The `type` sentences are those of real
  answers captured in RudderStack's and braze-dotnet's tests (the docs list codes such as
  EMAIL_BAD_FORMAT, which live answers mostly do not use).
- api/objects_filters/user_attributes_object: `_update_existing_only: true` updates existing
  users only (Braze queues the object and says nothing of a user it did not find); `null`
  removes an attribute.
- api/endpoints/user_data/post_user_delete: at most 50 external_ids; {"deleted": n}.
- api/errors: 400 "Max Input Length Exceeded" (more than 75 objects), 400 "The max number of
  external_ids and aliases per request was exceeded" (more than 50), 401 for an unknown key,
  403 for a key without the endpoint's permission, 415 without a JSON Content-Type.
- api/api_limits: X-RateLimit-Limit / -Remaining / -Reset (Unix seconds) on every answer, 429
  past the limit: 3,000 per 3 s for /users/track, 20,000 per minute for /users/delete.

Wording marked "ours" is not Braze's: refusals of what the adapter must never send.
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

from fakes.base import Fake as BaseFake
from fakes.base import JsonHTTPServer

KEY = "5f2b1a9e-7c3d-4e8f-9a0b-1c2d3e4f5a6b"  # Braze's REST API keys are UUIDs
TRACK, DELETE = "/users/track", "/users/delete"
PERMISSIONS = {TRACK: "users.track", DELETE: "users.delete"}
NO_VALID_DATA = "Valid data must be provided in the 'attributes', 'events', or 'purchases' fields."
INVALID_EMAIL = "The value provided for the 'email' field is not a valid email."
NO_IDENTIFIER = "'external_id', 'braze_id', 'user_alias', 'email' or 'phone' is required"
ID_TOO_LONG = "'external_id' must be fewer than 988 bytes"
Reply = tuple[int, dict[str, str], dict[str, Any]]


class Fake(JsonHTTPServer, BaseFake):
    type = "braze"
    max_batch_size = 75
    supports_delete = True
    invalid_email_error = "is not a valid email"

    def __init__(
        self,
        permissions: tuple[str, ...] = ("users.track", "users.delete"),
        limits: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        self.users: dict[str, dict[str, Any]] = {}  # external_id → attributes
        self.requests: list[dict[str, Any]] = []  # path, records, status, body, headers
        self.permissions = set(permissions)
        # Fixed windows, as X-RateLimit-Reset implies: path → (requests, seconds).
        self.limits = limits or {TRACK: (3000, 3.0), DELETE: (20_000, 60.0)}
        self._windows: dict[str, tuple[float, int]] = {}  # path → (window start, requests)
        self._throttle = 0
        self._throttled = 0
        self._lock = threading.Lock()
        super().__init__(self.answer, methods=["POST"])  # both endpoints are POSTs

    # The contract suite's view.

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        key = KEY if good_credentials else "00000000-0000-0000-0000-000000000000"
        return {"type": "braze", "rest_endpoint": self.url, "api_key": key}

    def sync_header(self) -> dict[str, Any]:
        return {"primary_key": "external_id"}

    def model_sql(self) -> str:
        return "select id::varchar as external_id, email, name as first_name from people"

    def key_of(self, person_id: int) -> str:
        return str(person_id)

    def stored(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: {**v, "name": v.get("first_name")} for k, v in self.users.items()}

    def batch_sizes(self) -> list[int]:
        with self._lock:
            return [r["records"] for r in self.requests if r["records"]]

    def throttle(self, times: int) -> None:
        with self._lock:
            self._throttle += times

    def throttled(self) -> int:
        return self._throttled

    # The API.

    def answer(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> Reply:
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        status, reply_headers, reply = self._answer(path, headers, body)
        with self._lock:
            self.requests.append(
                {
                    "path": path,
                    "records": _records(path, body),
                    "status": status,
                    "body": body,
                    "raw": raw,
                    "headers": headers,
                }
            )
        return status, reply_headers, reply

    def _answer(self, path: str, headers: dict[str, str], body: Any) -> Reply:
        if path not in PERMISSIONS:
            return 404, {}, {"message": "Not Found"}
        given = headers.get("authorization", "")
        if given != f"Bearer {KEY}":
            # api/errors: "Invalid API key"; answers are reported to repeat the key sent.
            return 401, {}, {"message": f"Invalid API key: {given.removeprefix('Bearer ')}"}
        if PERMISSIONS[path] not in self.permissions:
            return 403, {}, {"message": "Access Denied"}
        allowed, limit_headers = self._rate(path)
        if not allowed:
            return 429, limit_headers, {"message": "Rate limit exceeded"}
        if not headers.get("content-type", "").startswith("application/json"):
            return 415, limit_headers, {"message": "Unsupported Media Type"}
        if not isinstance(body, dict):
            message = "Error while parsing request body. Please check your syntax."
            return 400, limit_headers, {"message": message}
        status, reply = self._track(body) if path == TRACK else self._delete(body)
        return status, limit_headers, reply

    def _rate(self, path: str) -> tuple[bool, dict[str, str]]:
        limit, seconds = self.limits[path]
        now = time.time()
        start = math.floor(now / seconds) * seconds
        with self._lock:
            if self._throttle:  # the suite's "past the limit" for the next requests
                self._throttle -= 1
                self._throttled += 1
                reset = math.floor(now) + 1
                headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": "0"}
                return False, {**headers, "X-RateLimit-Reset": str(reset)}
            began, used = self._windows.get(path, (start, 0))
            used = used if began == start else 0
            allowed = used < limit
            self._windows[path] = (start, used + allowed)
            if not allowed:
                self._throttled += 1
        return allowed, {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - used - allowed)),
            "X-RateLimit-Reset": str(math.ceil(start + seconds)),
        }

    def _track(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if set(body) - {"attributes", "events", "purchases", "partner"}:
            return 400, {"message": f"unexpected fields: {sorted(body)}"}  # ours
        objects = body.get("attributes", [])
        if not isinstance(objects, list):
            return 400, {"message": "'attributes' must be an array"}  # ours
        if len(objects) > self.max_batch_size:
            return 400, {"message": "Max Input Length Exceeded"}
        errors, processed = [], 0
        with self._lock:
            for index, user in enumerate(objects):
                if error := _invalid(user):
                    errors.append({"type": error, "input_array": "attributes", "index": index})
                    continue
                processed += 1
                self._apply(user)
        if not processed:
            return 400, {"message": NO_VALID_DATA, **({"errors": errors} if errors else {})}
        answer: dict[str, Any] = {"message": "success", "attributes_processed": processed}
        return 201, {**answer, **({"errors": errors} if errors else {})}

    def _apply(self, user: dict[str, Any]) -> None:
        external_id = user["external_id"]
        if user.get("_update_existing_only") and external_id not in self.users:
            return  # update only: no profile is created, and the answer does not say so
        profile = self.users.setdefault(external_id, {})
        for name, value in user.items():
            if name in ("external_id", "_update_existing_only"):
                continue
            if value is None:
                profile.pop(name, None)
            else:
                profile[name] = value

    def _delete(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        ids = body.get("external_ids")
        if set(body) != {"external_ids"} or not isinstance(ids, list):
            return 400, {"message": "only external_ids are expected"}  # ours
        if not all(isinstance(i, str) for i in ids):
            return 400, {"message": "'external_ids' must be strings"}  # ours
        if len(ids) > 50:
            message = "The max number of external_ids and aliases per request was exceeded"
            return 400, {"message": message}
        with self._lock:
            for external_id in ids:
                self.users.pop(external_id, None)
        return 201, {"deleted": len(ids), "message": "success"}


def _invalid(user: Any) -> str | None:
    """Why Braze refuses one attributes object, if it does."""
    if not isinstance(user, dict):
        return "attributes objects must be objects"  # ours
    if not any(user.get(k) is not None for k in ("external_id", "braze_id", "user_alias")):
        return NO_IDENTIFIER  # (email- or phone-only users exist in Braze; not in this fake)
    external_id = user.get("external_id")
    if not isinstance(external_id, str):
        return "'external_id' must be a string"  # ours
    if len(external_id.encode()) > 987:
        return ID_TOO_LONG
    if not isinstance(user.get("_update_existing_only", False), bool):
        return "'_update_existing_only' must be a boolean"  # ours
    email = user.get("email")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        return INVALID_EMAIL
    return None


def _records(path: str, body: Any) -> int:
    """Users a request carried."""
    if not isinstance(body, dict):
        return 0
    items = body.get("attributes" if path == TRACK else "external_ids")
    return len(items) if isinstance(items, list) else 0
