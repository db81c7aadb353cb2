"""A fake HubSpot: the CRM v3 objects batch endpoints and the account details, on 127.0.0.1,
answering as HubSpot's documentation and its observed answers say.

- POST /crm/v3/objects/{objectType}/batch/{upsert,update,create,read,archive}: at most 100
  inputs; idProperty must be a property with unique values ("Unable to perform update/upsert by
  non-unique 0-1 property"); property values are strings (the schema's {[key]: string}); an
  unknown property or an invalid email refuses the whole batch with 400 VALIDATION_ERROR
  "Property values were not valid: [...]"; an existing unique value on create is 409 CONFLICT
  "Contact already exists. Existing ID: N" (the first one only, as HubSpot does); records an
  update or a read cannot find are 207 errors OBJECT_NOT_FOUND with their ids in `context`;
  archive answers 204 whatever the records' state.
- GET /account-info/v3/details: the account's portalId and time zone.
- Authorization: Bearer <token>, else 401 INVALID_AUTHENTICATION.
- Limits: a rolling window (100 requests per 10 s) answered past it with 429 and the body
  {"status": "error", "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING", ...}, a
  daily quota (policyName DAILY), and X-HubSpot-RateLimit-* headers on every answer.

Sources: https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines (limits,
the 429 body, the headers); the batch endpoints' reference pages
(https://developers.hubspot.com/docs/api-reference/latest/crm/objects/...); HubSpot's answers as
quoted in its community forum and SDK issues (invalid email, 409 on batch create, batch read's
OBJECT_NOT_FOUND). The wording of the 100-input refusal follows HubSpot's message for the
property-history batch limit ("The maximum number of inputs supported in a batch request ...").
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fakes.base import Fake as BaseFake
from fakes.base import JsonHTTPServer

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
PORTAL_ID = 12345678
MAX_INPUTS = 100
BATCH_PATH = re.compile(r"/crm/v3/objects/([^/]+)/batch/(upsert|update|create|read|archive)")
EMAIL = re.compile(r"[^@\s\"]+@[^@\s\"]+\.[A-Za-z]{2,}")
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
Reply = tuple[int, dict[str, str], dict[str, Any] | None]


@dataclass
class ObjectType:
    name: str  # as in the path: contacts
    type_id: str  # objectTypeId: 0-1
    label: str  # Contact
    unique: set[str]  # properties with unique values (hasUniqueValue), usable as idProperty
    properties: set[str] | None = None  # those defined; None: any name is a property
    records: dict[str, dict[str, str]] = field(default_factory=dict)  # HubSpot id -> properties

    def find(self, prop: str, value: str) -> str | None:
        wanted = _normal(prop, value)
        for record_id, props in self.records.items():
            if prop == "hs_object_id" and record_id == value:
                return record_id
            if props.get(prop) is not None and _normal(prop, props[prop]) == wanted:
                return record_id
        return None


def _normal(prop: str, value: str) -> str:
    return value.lower() if prop == "email" else value  # HubSpot keeps emails in lower case


class Refused(Exception):
    """An error answer: HubSpot's error body."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.body = status, {"status": "error", "message": message, **extra}
        self.body["correlationId"] = str(uuid.uuid4())
        if category:
            self.body["category"] = category


class Fake(JsonHTTPServer, BaseFake):
    type = "hubspot"
    max_batch_size = MAX_INPUTS
    supports_delete = True
    invalid_email_error = "Email address not-an-email is invalid"

    def __init__(
        self,
        *,
        window_limit: int = 100,
        window_ms: int = 10_000,
        daily_limit: int = 250_000,
        unique: dict[str, set[str]] | None = None,
    ) -> None:
        contact_properties = {"email", "firstname", "lastname", "phone", "company", "website"}
        contact_properties |= {"lifecyclestage", "jobtitle", "warehouse_id", "hs_object_id"}
        contact_properties |= {"plan", "score", "active", "tags", "signup_date", "notes"}
        self.objects = {
            "contacts": ObjectType(
                "contacts", "0-1", "Contact", {"email", "warehouse_id"}, contact_properties
            ),
            "companies": ObjectType("companies", "0-2", "Company", {"domain_id"}),
            "deals": ObjectType("deals", "0-3", "Deal", {"deal_key"}),
        }
        for name, props in (unique or {}).items():
            if name not in self.objects:  # a custom object: 2-<n>
                number = 100 + len(self.objects)
                self.objects[name] = ObjectType(name, f"2-{number}", name.title(), set())
            self.objects[name].unique |= props
        self.window_limit, self.window_ms, self.daily_limit = window_limit, window_ms, daily_limit
        self.fail_ids: dict[str, tuple[str, str]] = {}  # id -> (category, message): 207 errors
        self.requests: list[dict[str, Any]] = []
        self._accepted: deque[float] = deque()
        self._used_today = 0
        self._throttle = 0
        self._throttled = 0
        self._next_id = 1001
        self._lock = threading.Lock()
        super().__init__(
            self.handle, methods=["GET", "POST"], content_type="application/json;charset=utf-8"
        )

    # -- the Fake API --------------------------------------------------------------------------

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        token = TOKEN if good_credentials else "pat-na1-00000000-revoked"
        return {"type": "hubspot", "access_token": token, "base_url": self.url}

    def sync_header(self) -> dict[str, Any]:
        # The contract's bad record changes a person's email: the key must not be the email,
        # so it is a custom unique property, as in most warehouse-to-HubSpot syncs.
        return {"primary_key": "warehouse_id", "object": "contacts"}

    def model_sql(self) -> str:
        return "select id as warehouse_id, email, name as firstname from people"

    def key_of(self, person_id: int) -> str:
        return str(person_id)

    def stored(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            records = list(self.objects["contacts"].records.values())
        return {
            props["warehouse_id"]: {**props, "name": props.get("firstname")}
            for props in records
            if "warehouse_id" in props
        }

    def batch_sizes(self) -> list[int]:
        return [r["inputs"] for r in self.requests if r["inputs"]]

    def throttle(self, times: int) -> None:
        with self._lock:
            self._throttle += times

    def throttled(self) -> int:
        return self._throttled

    # -- for the HubSpot tests -------------------------------------------------------------

    def seed(self, object_name: str, props: dict[str, str]) -> str:
        """A record already in HubSpot; its HubSpot id."""
        with self._lock:
            return self._new_record(self.objects[object_name], props)

    def records(self, object_name: str) -> dict[str, dict[str, str]]:
        with self._lock:
            return {k: dict(v) for k, v in self.objects[object_name].records.items()}

    # -- the API -------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        path = urlsplit(target).path
        entry: dict[str, Any] = {"method": method, "path": path, "inputs": 0, "body": None}
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        if isinstance(payload, dict) and isinstance(payload.get("inputs"), list):
            entry["inputs"] = len(payload["inputs"])
        entry["body"] = payload
        entry["headers"] = headers
        with self._lock:
            try:
                status, answer = self._answer(method, path, headers, raw, payload)
            except Refused as refused:
                status, answer = refused.status, refused.body
            limits = self._limit_headers()
            entry["status"] = status
            self.requests.append(entry)
        if status == 401:
            limits = {}
        return status, limits, None if status == 204 else answer

    def _answer(
        self, method: str, path: str, headers: dict[str, str], raw: bytes, payload: Any
    ) -> tuple[int, dict[str, Any]]:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            raise Refused(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE)
        self._rate_limit()
        if method == "GET" and path == "/account-info/v3/details":
            return 200, {
                "portalId": PORTAL_ID,
                "accountType": "STANDARD",
                "timeZone": "US/Eastern",
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18_000_000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }
        match = BATCH_PATH.fullmatch(path)
        if method != "POST" or match is None:
            raise Refused(404, "OBJECT_NOT_FOUND", f"No route for {method} {path}")
        object_type = self._object_type(match.group(1))
        if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
            text = raw[:40].decode(errors="replace")
            raise Refused(400, "VALIDATION_ERROR", f"Invalid input JSON on line 1: {text!r}")
        inputs = payload["inputs"]
        if len(inputs) > MAX_INPUTS:
            raise Refused(
                400,
                "VALIDATION_ERROR",
                f"The maximum number of inputs supported in a batch request is {MAX_INPUTS}. "
                "Please reduce the number of items and try again",
            )
        if not all(isinstance(i, dict) for i in inputs):
            raise Refused(400, "VALIDATION_ERROR", "Invalid input JSON: inputs must be objects")
        actions = {
            "upsert": self._upsert,
            "update": self._update,
            "create": self._create,
            "read": self._read,
            "archive": self._archive,
        }
        return actions[match.group(2)](object_type, inputs, payload)

    def _object_type(self, name: str) -> ObjectType:
        for candidate in self.objects.values():
            if name in (candidate.name, candidate.type_id):
                return candidate
        raise Refused(400, "VALIDATION_ERROR", f"Unable to infer object type from: {name}")

    def _upsert(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        for item in inputs:
            if not isinstance(item.get("id"), str) or not isinstance(item.get("idProperty"), str):
                raise Refused(400, "VALIDATION_ERROR", "Each input needs an id and an idProperty")
        self._check_inputs(obj, inputs, by_id=True)
        self._check_unique(obj, inputs)
        results, errors = [], []
        for item in inputs:
            if (failed := self._failed(item["id"])) is not None:
                errors.append(failed)
                continue
            prop, value = item["idProperty"], item["id"]
            record_id = obj.find(prop, value)
            props = {**item.get("properties", {}), prop: value}
            new = record_id is None
            if record_id is None:
                record_id = self._new_record(obj, props)
            else:
                obj.records[record_id].update(_stored(props))
            results.append({**self._result(obj, record_id), "new": new})
        return self._batch_answer(results, errors, 200)

    def _update(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        for item in inputs:
            if not isinstance(item.get("id"), str):
                raise Refused(400, "VALIDATION_ERROR", "Each input needs an id")
        self._check_inputs(obj, inputs, by_id=True)
        self._check_unique(obj, inputs)
        results, errors, missing = [], [], []
        for item in inputs:
            if (failed := self._failed(item["id"])) is not None:
                errors.append(failed)
                continue
            record_id = obj.find(item.get("idProperty") or "hs_object_id", item["id"])
            if record_id is None:
                missing.append(item["id"])
                continue
            obj.records[record_id].update(_stored(item.get("properties", {})))
            results.append(self._result(obj, record_id))
        if missing:
            errors.append(self._not_found(obj, missing))
        return self._batch_answer(results, errors, 200)

    def _new_record(self, obj: ObjectType, props: dict[str, str]) -> str:
        record_id = str(self._next_id)
        self._next_id += 1
        obj.records[record_id] = _stored(props)
        return record_id

    def _create(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        self._check_inputs(obj, inputs, by_id=False)
        self._check_unique(obj, inputs)
        results = [self._result(obj, self._new_record(obj, item["properties"])) for item in inputs]
        return self._batch_answer(results, [], 201)

    def _read(self, obj: ObjectType, inputs: list[dict], payload: dict) -> tuple[int, dict]:
        prop = payload.get("idProperty") or "hs_object_id"
        self._unique(obj, prop)
        wanted = payload.get("properties") or []
        results, missing = [], []
        for item in inputs:
            record_id = obj.find(prop, str(item.get("id")))
            if record_id is None:
                missing.append(str(item.get("id")))
            else:
                result = self._result(obj, record_id)
                props = obj.records[record_id]
                result["properties"] = {
                    name: props.get(name) for name in [*wanted, "hs_object_id"] if name in props
                }
                results.append(result)
        errors = [self._not_found(obj, missing)] if missing else []
        return self._batch_answer(results, errors, 200)

    def _archive(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        for item in inputs:
            obj.records.pop(str(item.get("id")), None)  # 204 whatever the record's state
        return 204, {}

    # -- validation ----------------------------------------------------------------------------

    def _check_inputs(self, obj: ObjectType, inputs: list[dict], *, by_id: bool) -> None:
        """What refuses the whole batch: a non-unique idProperty, a repeated id, properties
        that are not strings or do not exist, invalid emails."""
        if by_id:
            for item in inputs:
                if item.get("idProperty"):
                    self._unique(obj, item["idProperty"])
            ids = [item["id"] for item in inputs]
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            if repeated:
                raise Refused(
                    400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {repeated}"
                )
        problems = []
        for item in inputs:
            props = item.get("properties")
            if not isinstance(props, dict):
                raise Refused(400, "VALIDATION_ERROR", "Each input needs properties")
            for name, value in props.items():
                if not isinstance(value, str):  # the schema: {[key: string]: string}
                    raise Refused(
                        400,
                        "VALIDATION_ERROR",
                        f"Invalid input JSON: property {name!r} must be a string, "
                        f"not {json.dumps(value)}",
                    )
                if obj.properties is not None and name not in obj.properties:
                    message = f'Property "{name}" does not exist'
                    problems.append(_invalid(name, message, "PROPERTY_DOESNT_EXIST"))
                elif obj.name == "contacts" and name == "email" and not _email_ok(value):
                    message = f"Email address {value} is invalid"
                    problems.append(_invalid(name, message, "INVALID_EMAIL"))
        if problems:
            listed = json.dumps(problems, separators=(",", ":"))
            raise Refused(400, "VALIDATION_ERROR", f"Property values were not valid: {listed}")

    def _check_unique(self, obj: ObjectType, inputs: list[dict]) -> None:
        """A value of a unique property (email for contacts) that another record holds, or
        that an earlier input of the batch sets: 409, naming the first such record only (as
        HubSpot does for batch create)."""
        claimed: dict[tuple[str, str], int] = {}
        for number, item in enumerate(inputs):
            by = item.get("idProperty") or "hs_object_id"
            target = obj.find(by, item["id"]) if "id" in item else None
            for prop in sorted(obj.unique):
                value = item["properties"].get(prop) or (item.get("id") if prop == by else None)
                if not value:
                    continue
                existing = obj.find(prop, value)
                if existing is not None and existing != target:
                    raise Refused(
                        409, "CONFLICT", f"{obj.label} already exists. Existing ID: {existing}"
                    )
                earlier = claimed.setdefault((prop, _normal(prop, value)), number)
                if earlier != number and existing is None:
                    raise Refused(409, "CONFLICT", f"{obj.label} already exists: {prop} {value}")

    def _unique(self, obj: ObjectType, prop: str) -> None:
        if prop != "hs_object_id" and prop not in obj.unique:
            raise Refused(
                400,
                "VALIDATION_ERROR",
                f"Unable to perform update/upsert by non-unique {obj.type_id} property",
            )

    def _failed(self, record_id: str) -> dict[str, Any] | None:
        if record_id not in self.fail_ids:
            return None
        category, message = self.fail_ids[record_id]
        return {
            "status": "error",
            "category": category,
            "message": message,
            "context": {"ids": [record_id]},
        }

    @staticmethod
    def _not_found(obj: ObjectType, ids: list[str]) -> dict[str, Any]:
        return {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not get some {obj.label.upper()} objects, they may be deleted or "
            "not exist. Check that ids are valid.",
            "context": {"ids": ids},
        }

    # -- answers -------------------------------------------------------------------------------

    def _result(self, obj: ObjectType, record_id: str) -> dict[str, Any]:
        now = _now()
        props = {**obj.records[record_id], "hs_object_id": record_id}
        return {
            "id": record_id,
            "properties": props,
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
        }

    @staticmethod
    def _batch_answer(results: list, errors: list, status: int) -> tuple[int, dict]:
        now = _now()
        answer: dict[str, Any] = {"status": "COMPLETE", "results": results}
        answer.update(startedAt=now, completedAt=now)
        if errors:
            answer.update(errors=errors, numErrors=len(errors))
            return 207, answer
        return status, answer

    def _rate_limit(self) -> None:
        now = time.monotonic()
        window = self.window_ms / 1000
        while self._accepted and self._accepted[0] <= now - window:
            self._accepted.popleft()
        policy = None
        if self._throttle:
            self._throttle -= 1
            policy = "TEN_SECONDLY_ROLLING"
        elif len(self._accepted) >= self.window_limit:
            policy = "TEN_SECONDLY_ROLLING"
        elif self._used_today >= self.daily_limit:
            policy = "DAILY"
        if policy is not None:
            self._throttled += 1
            limit = "daily" if policy == "DAILY" else policy.lower()
            raise Refused(
                429,
                "",
                f"You have reached your {limit} limit.",
                errorType="RATE_LIMIT",
                policyName=policy,
                requestId=str(uuid.uuid4()),
            )
        self._accepted.append(now)
        self._used_today += 1

    def _limit_headers(self) -> dict[str, str]:
        now = time.monotonic()
        in_window = sum(1 for t in self._accepted if t > now - self.window_ms / 1000)
        in_second = sum(1 for t in self._accepted if t > now - 1)
        per_second = max(1, self.window_limit * 1000 // self.window_ms)
        remaining = 0 if self._throttle else max(0, self.window_limit - in_window)
        return {
            "X-HubSpot-RateLimit-Daily": str(self.daily_limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._used_today)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.window_ms),
            "X-HubSpot-RateLimit-Max": str(self.window_limit),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Secondly": str(per_second),
            "X-HubSpot-RateLimit-Secondly-Remaining": str(max(0, per_second - in_second)),
        }


def _email_ok(value: str) -> bool:
    return not value or EMAIL.fullmatch(value) is not None  # "" clears the property


def _stored(props: dict[str, str]) -> dict[str, str]:
    return {name: _normal(name, value) for name, value in props.items()}


def _invalid(name: str, message: str, error: str) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
