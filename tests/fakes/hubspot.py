"""A fake HubSpot on 127.0.0.1: the CRM v3 objects batch endpoints and the account details,
written from HubSpot's documentation (not from this project's adapter). Each rule, its source:

- POST /crm/v3/objects/{objectType}/batch/{create,update,upsert,read,archive}, inputs of
  {"id", "idProperty", "properties"} with property values as strings; upsert answers each
  result with `new` (true when it created the record); update by record id or by a unique
  `idProperty`; read by `idProperty`; archive answers 204 No Content
  (https://developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/batch/upsert-contacts,
  .../batch/update-contacts, https://developers.hubspot.com/docs/api/crm/understanding-the-crm).
- idProperty must be a property with unique values (hasUniqueValue): "Unable to perform
  update/upsert by non-unique 0-1 property"
  (https://developers.hubspot.com/changelog/updating-objects-by-custom-field-and-adding-owner-properties-via-the-api).
- At most 100 inputs per batch request, else 400 VALIDATION_ERROR
  (https://developers.hubspot.com/docs/api/usage-details: "batch requests ... limited to 100").
- Key identity: contacts are deduplicated by email, compared after lower-casing (HubSpot stores
  emails in lower case); values of unique properties are compared ignoring case too (the
  behaviour issue 10 reports; `unique_ignore_case=False` makes custom unique properties exact).
  Two inputs of one batch naming one identity: 400 "Duplicate IDs found in batch input".
- Multi-status: a batch where some inputs fail answers 207 with `results` for the others and
  `errors` [{"status": "error", "category", "message", "context": {"ids": [...]}}], numErrors
  (the batch endpoints' 207 schema on the reference pages above). Records an update or read
  cannot find: category OBJECT_NOT_FOUND.
- Create of an existing unique value (an email another contact has): the batch is refused with
  409 CONFLICT "Contact already exists. Existing ID: N" and nothing is created
  (https://community.hubspot.com/t5/APIs-Integrations/Updated-409-Conflict-responses/m-p/951534).
- An invalid email refuses the batch: 400 VALIDATION_ERROR "Property values were not valid: [...]
  Email address x is invalid" (INVALID_EMAIL), as HubSpot's validation answers quote it
  (https://developers.hubspot.com/changelog/breaking-change-enhanced-validations-for-non-string-properties-in-hubspots-crmobject-apis
  shows the shape).
- Authorization: Bearer <token>, else 401 {"status": "error", "message": "Authentication
  credentials not found. ...", "category": "INVALID_AUTHENTICATION", "correlationId"}.
- Rate limits (https://developers.hubspot.com/docs/api/usage-details): a rolling window (100
  requests per 10 s by default) and a daily quota; every answer but a 401 carries
  X-HubSpot-RateLimit-Max, -Remaining, -Interval-Milliseconds, -Daily, -Daily-Remaining (and
  -Secondly, -Secondly-Remaining); past a limit, 429 {"status": "error", "message": "You have
  reached your ten_secondly_rolling limit.", "errorType": "RATE_LIMIT", "policyName":
  "TEN_SECONDLY_ROLLING" | "DAILY", "correlationId", "requestId"}
  (the DAILY example: https://community.hubspot.com/rss/message?board.id=integrations&message.id=47812).
- GET /account-info/v3/details: the account's portalId and time zone.

Every answer takes 0.1-0.3 s (seeded); faults are injected with `inject` (fakes.base.Fault).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fakes.base import REALISTIC_LATENCY, JsonHTTPServer
from fakes.base import Fake as BaseFake

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
PORTAL_ID = 12345678
MAX_INPUTS = 100
BATCH_PATH = re.compile(r"/crm/v3/objects/([^/]+)/batch/(upsert|update|create|read|archive)")
EMAIL = re.compile(r"[^@\s\"]+@[^@\s\"]+\.[A-Za-z]{2,}")
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
RECORD_ID = "hs_object_id"
Reply = tuple[int, dict[str, str], dict[str, Any] | None]


class Refused(Exception):
    """A whole request refused, with HubSpot's error body."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"status": "error", "message": message, **extra}
        self.body["correlationId"] = str(uuid.uuid4())
        if category:
            self.body["category"] = category


@dataclass
class ObjectType:
    name: str  # as in the path: contacts
    type_id: str  # objectTypeId: 0-1
    label: str  # Contact
    unique: set[str]  # properties with unique values (hasUniqueValue): the idProperty choices
    properties: set[str] | None = None  # those defined; None: any name is a property
    records: dict[str, dict[str, str]] = field(default_factory=dict)  # record id → properties


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
        unique_ignore_case: bool = True,
        latency: tuple[float, float] = REALISTIC_LATENCY,
        seed: int = 0,
    ) -> None:
        contact_properties = {"email", "firstname", "lastname", "phone", "company", "website"}
        contact_properties |= {"lifecyclestage", "jobtitle", "warehouse_id", RECORD_ID}
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
        self.unique_ignore_case = unique_ignore_case
        self.window_limit, self.window_ms, self.daily_limit = window_limit, window_ms, daily_limit
        self.fail_ids: dict[str, tuple[str, str]] = {}  # input id → (category, message): 207
        self.requests: list[dict[str, Any]] = []
        self.creates: Counter[tuple[str, str, str]] = Counter()  # (object, prop, identity)
        self._accepted: deque[float] = deque()
        self._used_today = 0
        self._throttle = 0
        self._throttled = 0
        self._next_id = 1001
        self._lock = threading.RLock()
        super().__init__(
            self.handle,
            methods=["GET", "POST"],
            content_type="application/json;charset=utf-8",
            latency=latency,
            seed=seed,
        )

    # -- the contract suite's view --------------------------------------------------------------

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        token = TOKEN if good_credentials else "pat-na1-00000000-revoked"
        return {"type": "hubspot", "access_token": token, "base_url": self.url}

    def sync_header(self) -> dict[str, Any]:
        # The contract's bad record changes a person's email: the key must not be the email,
        # so it is a custom unique property, as in most warehouse-to-HubSpot syncs.
        return {"primary_key": "warehouse_id", "object": "contacts"}

    def model_sql(self) -> str:
        return "select id as warehouse_id, email, name as firstname from people"

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

    # -- what the account holds, by HubSpot's identity --------------------------------------

    def seed(self, object_name: str, props: dict[str, str]) -> str:
        """A record already in HubSpot (made by someone else: not counted in `creates`)."""
        with self._lock:
            return self._new_record(self.objects[object_name], props, count=False)

    def records(self, object_name: str) -> dict[str, dict[str, str]]:
        """Record id → properties."""
        with self._lock:
            return {k: dict(v) for k, v in self.objects[object_name].records.items()}

    def held(self, object_name: str, prop: str) -> dict[str, dict[str, str]]:
        """The records by HubSpot's identity of `prop` (lower-cased where HubSpot ignores
        case) → properties (with hs_object_id)."""
        with self._lock:
            obj = self.objects[object_name]
            return {
                self.identity(prop, props[prop]): {**props, RECORD_ID: record_id}
                for record_id, props in obj.records.items()
                if props.get(prop)
            }

    def created(self, object_name: str, prop: str, value: str) -> int:
        """How many records were created holding this value of `prop` (by identity)."""
        with self._lock:
            return self.creates[(object_name, prop, self.identity(prop, value))]

    def identity(self, prop: str, value: str) -> str:
        """When two values of `prop` name one record for HubSpot."""
        if prop == "email" or (self.unique_ignore_case and prop != RECORD_ID):
            return value.lower()
        return value

    # -- the API ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        path = urlsplit(target).path
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = None
        inputs = payload.get("inputs") if isinstance(payload, dict) else None
        entry: dict[str, Any] = {
            "method": method,
            "path": path,
            "inputs": len(inputs) if isinstance(inputs, list) else 0,
            "body": payload,
            "headers": headers,
        }
        with self._lock:
            try:
                status, answer = self._answer(method, path, headers, raw, payload)
            except Refused as refused:
                status, answer = refused.status, refused.body
            entry["status"] = status
            self.requests.append(entry)
            limits = {} if status == 401 else self._limit_headers()
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
        obj = self._object_type(match.group(1))
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
        action = {
            "upsert": self._upsert,
            "update": self._update,
            "create": self._create,
            "read": self._read,
            "archive": self._archive,
        }[match.group(2)]
        return action(obj, inputs, payload)

    def _object_type(self, name: str) -> ObjectType:
        for candidate in self.objects.values():
            if name in (candidate.name, candidate.type_id):
                return candidate
        raise Refused(400, "VALIDATION_ERROR", f"Unable to infer object type from: {name}")

    # -- the batch actions --------------------------------------------------------------------

    def _upsert(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        for item in inputs:
            if not isinstance(item.get("id"), str) or not isinstance(item.get("idProperty"), str):
                raise Refused(400, "VALIDATION_ERROR", "Each input needs an id and an idProperty")
            self._must_be_unique(obj, item["idProperty"])
        self._no_repeated_ids(inputs)
        self._check_properties(obj, inputs)
        targets = [self._find(obj, item["idProperty"], item["id"]) for item in inputs]
        self._check_unique_values(obj, inputs, targets)
        results, errors = [], []
        for item, record_id in zip(inputs, targets, strict=True):
            if (failed := self._failed(item["id"])) is not None:
                errors.append(failed)
                continue
            props = dict(item.get("properties") or {})
            if record_id is None:  # created: the idProperty holds the id sent
                record_id = self._new_record(obj, {**props, item["idProperty"]: item["id"]})
                results.append({**self._result(obj, record_id), "new": True})
            else:
                obj.records[record_id].update(_stored(props))
                results.append({**self._result(obj, record_id), "new": False})
        return self._batch_answer(results, errors, 200)

    def _update(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        for item in inputs:
            if not isinstance(item.get("id"), str):
                raise Refused(400, "VALIDATION_ERROR", "Each input needs an id")
            self._must_be_unique(obj, item.get("idProperty") or RECORD_ID)
        self._no_repeated_ids(inputs)
        self._check_properties(obj, inputs)
        targets = [self._find(obj, i.get("idProperty") or RECORD_ID, i["id"]) for i in inputs]
        self._check_unique_values(obj, inputs, targets)
        results, errors, missing = [], [], []
        for item, record_id in zip(inputs, targets, strict=True):
            if (failed := self._failed(item["id"])) is not None:
                errors.append(failed)
            elif record_id is None:
                missing.append(item["id"])
            else:
                obj.records[record_id].update(_stored(item.get("properties") or {}))
                results.append(self._result(obj, record_id))
        if missing:
            errors.append(_not_found(obj, missing))
        return self._batch_answer(results, errors, 200)

    def _create(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        self._check_properties(obj, inputs)
        self._check_unique_values(obj, inputs, [None] * len(inputs))
        results, errors = [], []
        for item in inputs:
            marker = next((v for p, v in item["properties"].items() if p in obj.unique), None)
            if marker is not None and (failed := self._failed(marker)) is not None:
                errors.append(failed)
                continue
            results.append(self._result(obj, self._new_record(obj, item["properties"])))
        return self._batch_answer(results, errors, 201)

    def _read(self, obj: ObjectType, inputs: list[dict], payload: dict) -> tuple[int, dict]:
        prop = payload.get("idProperty") or RECORD_ID
        self._must_be_unique(obj, prop)
        wanted = payload.get("properties") or []
        results, missing = [], []
        for item in inputs:
            record_id = self._find(obj, prop, str(item.get("id")))
            if record_id is None:
                missing.append(str(item.get("id")))
                continue
            result = self._result(obj, record_id)
            props = result["properties"]
            result["properties"] = {n: props[n] for n in [*wanted, RECORD_ID] if n in props}
            results.append(result)
        errors = [_not_found(obj, missing)] if missing else []
        return self._batch_answer(results, errors, 200)

    def _archive(self, obj: ObjectType, inputs: list[dict], _: dict) -> tuple[int, dict]:
        for item in inputs:
            obj.records.pop(str(item.get("id")), None)  # 204 whatever the record's state
        return 204, {}

    # -- identity and validation ----------------------------------------------------------------

    def _find(self, obj: ObjectType, prop: str, value: str) -> str | None:
        if prop == RECORD_ID:
            return value if value in obj.records else None
        wanted = self.identity(prop, value)
        for record_id, props in obj.records.items():
            if props.get(prop) and self.identity(prop, props[prop]) == wanted:
                return record_id
        return None

    def _must_be_unique(self, obj: ObjectType, prop: str) -> None:
        if prop != RECORD_ID and prop not in obj.unique:
            raise Refused(
                400,
                "VALIDATION_ERROR",
                f"Unable to perform update/upsert by non-unique {obj.type_id} property",
            )

    def _no_repeated_ids(self, inputs: list[dict]) -> None:
        """Two inputs naming one record (by HubSpot's identity) refuse the batch."""

        def named(item: dict) -> tuple[str, str]:
            prop = item.get("idProperty") or RECORD_ID
            return prop, self.identity(prop, item["id"])

        seen = Counter(named(item) for item in inputs)
        repeated = sorted(item["id"] for item in inputs if seen[named(item)] > 1)
        if repeated:
            raise Refused(
                400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {repeated}"
            )

    def _check_properties(self, obj: ObjectType, inputs: list[dict]) -> None:
        """What refuses the whole batch: properties that are not strings or do not exist,
        invalid emails."""
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

    def _check_unique_values(
        self, obj: ObjectType, inputs: list[dict], targets: list[str | None]
    ) -> None:
        """A unique value another record holds, or that an earlier input of the batch sets:
        409 CONFLICT naming the first such record; nothing of the batch is applied."""
        claimed: dict[tuple[str, str], int] = {}
        for number, (item, target) in enumerate(zip(inputs, targets, strict=True)):
            values = dict(item["properties"])
            if target is None and item.get("idProperty") and "id" in item:
                values[item["idProperty"]] = item["id"]  # an upsert that creates sets it
            for prop in sorted(obj.unique & set(values)):
                if not values[prop]:
                    continue
                existing = self._find(obj, prop, values[prop])
                if existing is not None and existing != target:
                    raise Refused(
                        409, "CONFLICT", f"{obj.label} already exists. Existing ID: {existing}"
                    )
                earlier = claimed.setdefault((prop, self.identity(prop, values[prop])), number)
                if earlier != number:
                    raise Refused(
                        409, "CONFLICT", f"{obj.label} already exists: {prop} {values[prop]}"
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

    def _new_record(self, obj: ObjectType, props: dict[str, str], count: bool = True) -> str:
        record_id = str(self._next_id)
        self._next_id += 1
        obj.records[record_id] = _stored(props)
        if count:
            for prop in obj.unique & set(props):
                if props[prop]:
                    self.creates[(obj.name, prop, self.identity(prop, props[prop]))] += 1
        return record_id

    # -- answers ---------------------------------------------------------------------------------

    def _result(self, obj: ObjectType, record_id: str) -> dict[str, Any]:
        now = _now()
        return {
            "id": record_id,
            "properties": {**obj.records[record_id], RECORD_ID: record_id},
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


def _not_found(obj: ObjectType, ids: list[str]) -> dict[str, Any]:
    return {
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": f"Could not get some {obj.label.upper()} objects, they may be deleted or "
        "not exist. Check that ids are valid.",
        "context": {"ids": ids},
    }


def _email_ok(value: str) -> bool:
    return not value or EMAIL.fullmatch(value) is not None  # "" clears the property


def _stored(props: dict[str, str]) -> dict[str, str]:
    """HubSpot keeps emails in lower case; other values as sent."""
    return {name: value.lower() if name == "email" else value for name, value in props.items()}


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
