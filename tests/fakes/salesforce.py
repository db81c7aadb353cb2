"""A fake Salesforce org on 127.0.0.1, written from the REST API Developer Guide and the
SOQL reference (not from this project's adapter). Each rule, its source:

- sObject Collections, up to 200 records a call, one result per record in request order,
  `allOrNone` (default false) rolling back the whole call when true; results
  {"id", "success", "errors": [{"statusCode", "message", "fields"}]}:
  POST /composite/sobjects creates (no Id allowed)
  (https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-create.html),
  PATCH /composite/sobjects updates by Id, DELETE /composite/sobjects?ids=...&allOrNone=...
  deletes, PATCH /composite/sobjects/{SObject}/{ExternalIdField} upserts by external ID and adds
  `created` to each result; its records must all be of the URI's type, and "Only external ids are
  supported. Don't use record ids."
  (https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html).
  A malformed request is 400 for the whole call; more than 200 records: EXCEEDED_ID_LIMIT.
- Key identity of external ID fields (each field here declares `unique` and `case_sensitive`):
  upsert matching "is case-insensitive only if the custom field has the Unique and Treat "ABC"
  and "abc" as duplicate values (case insensitive) attributes"
  (https://developer.salesforce.com/docs/atlas.en-us.apexcode.meta/apexcode/langCon_apex_dml_examples_upsert.htm);
  a unique field refuses a second record with an equal value (case-insensitively unless marked
  case-sensitive) with DUPLICATE_VALUE "duplicate value found: F duplicates value on record with
  id: ..."; an upsert whose key matches several records fails (the REST guide's 300 Multiple
  Choices for one record, DUPLICATE_EXTERNAL_ID in a collection); two records of one upsert call
  with one key both fail with DUPLICATE_EXTERNAL_ID
  (https://developer.salesforce.com/docs/platform/api-rest/guide/resources-sobject-upsert-patch.md,
  https://docs.tibco.com/pub/bwpluginsalesforce/6.7.0/doc/html/GUID-34C0ECEF-319C-4D36-B6AC-77CFF65B9A2D.html).
  Field API names are case-insensitive.
- GET /query?q=SELECT Id, F FROM O WHERE F IN ('a', ...), paged by nextRecordsUrl: "Comparisons
  on strings are case-sensitive for unique case-sensitive fields. For all other fields,
  comparisons are case-insensitive"
  (https://developer.salesforce.com/docs/platform/salesforce-soql-sosl/guide/sforce-api-calls-soql-select-comparisonoperators.html).
- Errors of a whole request: a JSON array [{"message", "errorCode"}]; 401 INVALID_SESSION_ID
  "Session expired or invalid" for a bad bearer token
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/errorcodes.htm).
- The org's rolling 24-hour API allocation: every answer (but a 401, and the Versions URI) carries
  `Sforce-Limit-Info: api-usage=USED/MAX`
  (https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_api_usage.htm);
  once spent, 403 REQUEST_LIMIT_EXCEEDED "TotalRequests Limit exceeded." (the real org allows
  a little overage first; this one stops at MAX). `throttle()` answers the per-org concurrency
  limit: 403 REQUEST_LIMIT_EXCEEDED "ConcurrentPerOrgLongTxn Limit exceeded.".
- GET /limits: DailyApiRequests {Max, Remaining} ("List Organization Limits").

Record-level messages are Salesforce's (INVALID_EMAIL_ADDRESS "Email: invalid email address: x",
REQUIRED_FIELD_MISSING, DUPLICATE_VALUE, MISSING_ARGUMENT, ENTITY_IS_DELETED, MALFORMED_ID,
INVALID_CROSS_REFERENCE_KEY). Every answer takes 0.1-0.3 s (seeded); faults are injected with
`inject` (fakes.base.Fault).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fakes.base import REALISTIC_LATENCY, JsonHTTPServer
from fakes.base import Fake as BaseFake

TOKEN = "00D5g000004fake!AQ8AQNa1lXBGiOq.fake-session-token"
MAX_RECORDS = 200
ROLLED_BACK = (
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header"
)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
RECORD_ID = re.compile(r"^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$")
QUERY = re.compile(
    r"^\s*SELECT\s+Id\s*,\s*(\w+)\s+FROM\s+(\w+)\s+WHERE\s+(\w+)\s+IN\s*\((.*)\)\s*$",
    re.IGNORECASE | re.DOTALL,
)
LITERAL = re.compile(r"\s*(?:'((?:[^'\\]|\\.)*)'|(-?\d+(?:\.\d+)?))\s*(,|$)", re.DOTALL)
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f"}
Reply = tuple[int, dict[str, str], Any]
Store = dict[str, dict[str, Any]]  # record Id → fields


@dataclass(frozen=True)
class ExternalId:
    """A text field marked External ID, with its Unique and case attributes."""

    unique: bool = True
    case_sensitive: bool = False  # Setup's "Treat "ABC" and "abc" as different values"

    def upsert_key(self, value: Any) -> str:
        """What upsert matches on: case folded only for a unique case-insensitive field."""
        text = str(value)
        return text.casefold() if self.unique and not self.case_sensitive else text

    def query_key(self, value: Any) -> str:
        """What SOQL's = and IN compare: case-sensitive only for unique case-sensitive fields."""
        text = str(value)
        return text if self.unique and self.case_sensitive else text.casefold()


# The objects of this org: fields, external ID fields, email fields, number fields, fields
# required on create, and the key prefix of their Ids.
SCHEMA: dict[str, dict[str, Any]] = {
    "Contact": {
        "fields": {
            "Id",
            "Warehouse_Id__c",
            "Case_Key__c",
            "Legacy_Id__c",
            "Email",
            "FirstName",
            "LastName",
            "Phone",
            "Title",
        },  # fmt: skip
        "external_ids": {
            "Warehouse_Id__c": ExternalId(unique=True, case_sensitive=False),
            "Case_Key__c": ExternalId(unique=True, case_sensitive=True),
            "Legacy_Id__c": ExternalId(unique=False),
        },
        "emails": {"Email"},
        "numbers": set(),
        "required": ["LastName"],
        "prefix": "003",
    },
    "Account": {
        "fields": {"Id", "Warehouse_Id__c", "Name", "Website", "NumberOfEmployees"},
        "external_ids": {"Warehouse_Id__c": ExternalId()},
        "emails": set(),
        "numbers": {"NumberOfEmployees"},
        "required": ["Name"],
        "prefix": "001",
    },
}


def _error(code: str, message: str) -> list[dict[str, Any]]:
    """A whole-request error body."""
    return [{"message": message, "errorCode": code}]


def _failed(code: str, message: str, fields: list[str] | None = None) -> dict[str, Any]:
    """A record's failed result."""
    return {
        "success": False,
        "errors": [{"statusCode": code, "message": message, "fields": fields or []}],
    }


def _ok(record_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": record_id, "success": True, "errors": [], **extra}


class Refused(Exception):
    """A whole request refused: (status, errorCode, message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.reply: Reply = (status, {}, _error(code, message))


def _unsupported(sobject: str) -> Refused:
    return Refused(
        400,
        "INVALID_TYPE",
        f"sObject type '{sobject}' is not supported. If you are attempting to use a "
        "custom object, be sure to append the '__c' after the entity name.",
    )


def _too_many() -> Refused:
    return Refused(
        400,
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )


class Fake(JsonHTTPServer, BaseFake):
    type = "salesforce"
    max_batch_size = MAX_RECORDS
    supports_delete = True
    invalid_email_error = "INVALID_EMAIL_ADDRESS: Email: invalid email address"
    rate_limited = True  # the concurrency limit: wait, then send again

    def __init__(
        self,
        allocation: int = 1_000_000,
        *,
        latency: tuple[float, float] = REALISTIC_LATENCY,
        seed: int = 0,
    ) -> None:
        self.allocation = allocation  # the org's API requests per 24 hours
        self.used = 0
        self.records: dict[str, Store] = {name: {} for name in SCHEMA}
        self.deleted: set[str] = set()
        self.requests: list[dict[str, Any]] = []
        self.record_errors: dict[str, tuple[str, str]] = {}  # external ID → one-shot error
        self.creates: Counter[tuple[str, str, str]] = Counter()  # (sObject, field, identity)
        self.limits_forbidden = False  # a user without View Setup and Configuration
        self.query_page_size = 2000
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._throttle = 0
        self._throttled = 0
        self.lock = threading.RLock()
        super().__init__(
            self.handle,
            methods=["GET", "POST", "PATCH", "DELETE"],
            content_type="application/json;charset=UTF-8",
            latency=latency,
            seed=seed,
        )

    # --- the contract suite's view -----------------------------------------------------------

    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        return {
            "type": "salesforce",
            "instance_url": self.url,
            "access_token": TOKEN if good_credentials else "00D5g000004fake!expired",
        }

    def sync_header(self) -> dict[str, Any]:
        return {"primary_key": "Warehouse_Id__c", "object": "Contact"}

    def model_sql(self) -> str:
        return (
            'select id::varchar as "Warehouse_Id__c", email as "Email", name as "LastName" '
            "from people"
        )

    def stored(self, sobject: str = "Contact") -> dict[str, dict[str, Any]]:
        with self.lock:
            return {
                str(record.get("Warehouse_Id__c")): {
                    **record,
                    "email": record.get("Email"),
                    "name": record.get("LastName"),
                }
                for record in self.records[sobject].values()
            }

    def batch_sizes(self) -> list[int]:
        with self.lock:
            return [r["records"] for r in self.requests if r["records"]]

    def throttle(self, times: int) -> None:
        with self.lock:
            self._throttle += times

    def throttled(self) -> int:
        return self._throttled

    # --- what the org holds, by Salesforce's identity ----------------------------------------

    def add(self, sobject: str, **fields: Any) -> str:
        """A record created in the org by someone else (not counted in `creates`); its Id."""
        with self.lock:
            record_id = self._new_id(sobject)
            self.records[sobject][record_id] = {"Id": record_id, **fields}
            return record_id

    def identity(self, sobject: str, field: str, value: Any) -> str:
        """When two values of an external ID field are one record for upsert."""
        return SCHEMA[sobject]["external_ids"][field].upsert_key(value)

    def held(self, sobject: str = "Contact", field: str = "Warehouse_Id__c") -> dict[str, Any]:
        """Identity of `field` → the records holding it (a list: a non-unique field may have
        several)."""
        with self.lock:
            found: dict[str, list[dict[str, Any]]] = {}
            for record in self.records[sobject].values():
                if record.get(field) is not None:
                    key = self.identity(sobject, field, record[field])
                    found.setdefault(key, []).append(dict(record))
            return found

    def created(self, sobject: str, field: str, value: Any) -> int:
        """How many records were created (through the API) with this value of `field`."""
        with self.lock:
            return self.creates[(sobject, field, self.identity(sobject, field, value))]

    def _new_id(self, sobject: str) -> str:
        """An 18-character record Id with the object's key prefix."""
        return f"{SCHEMA[sobject]['prefix']}5g{next(self._ids):010d}AAA"

    # --- requests ------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> Reply:
        parts = urlsplit(target)
        entry: dict[str, Any] = {
            "method": method,
            "target": target,
            "path": parts.path,
            "query": parse_qs(parts.query),
            "records": None,
            "headers": headers,
            "body": raw,
        }
        with self.lock:
            self.requests.append(entry)
            status, extra, body = self._answer(
                method, parts.path, entry["query"], headers, raw, entry
            )
            entry["status"] = status
            if status != 401:
                extra["Sforce-Limit-Info"] = f"api-usage={self.used}/{self.allocation}"
        return status, extra, body

    def _answer(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
        entry: dict[str, Any],
    ) -> Reply:
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return 401, {}, _error("INVALID_SESSION_ID", "Session expired or invalid")
        found = re.match(r"^/services/data/v(\d+)\.0(/.*)?$", path)
        if not found or not 46 <= int(found.group(1)) <= 66:
            return 404, {}, _error("NOT_FOUND", "The requested resource does not exist")
        version, route = f"v{found.group(1)}.0", (found.group(2) or "/").rstrip("/") or "/"
        if self.used >= self.allocation:
            return 403, {}, _error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        self.used += 1
        if self._throttle:
            self._throttle -= 1
            self._throttled += 1
            return 403, {}, _error(
                "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."
            )  # fmt: skip
        try:
            return self._route(method, route, version, query, raw, entry)
        except Refused as refused:
            return refused.reply

    def _route(
        self,
        method: str,
        route: str,
        version: str,
        query: dict[str, list[str]],
        raw: bytes,
        entry: dict[str, Any],
    ) -> Reply:
        if route == "/" and method == "GET":
            base = f"/services/data/{version}"
            return 200, {}, {"limits": f"{base}/limits", "query": f"{base}/query"}
        if route == "/limits" and method == "GET":
            if self.limits_forbidden:  # the exact body is not documented; the status is
                raise Refused(403, "INSUFFICIENT_ACCESS", "insufficient access rights on object id")
            left = self.allocation - self.used
            return 200, {}, {"DailyApiRequests": {"Max": self.allocation, "Remaining": left}}
        if route == "/query" and method == "GET":
            return 200, {}, self._query((query.get("q") or [""])[0], version)
        if route.startswith("/query/") and method == "GET":
            return 200, {}, self._more(route.removeprefix("/query/"), version)
        if route == "/composite/sobjects":
            if method == "DELETE":
                ids = [i for i in (query.get("ids") or [""])[0].split(",") if i]
                entry["records"] = len(ids)
                all_or_none = (query.get("allOrNone") or ["false"])[0] == "true"
                return 200, {}, self._delete(ids, all_or_none)
            if method in ("POST", "PATCH"):
                records, all_or_none = self._collection(raw, entry)
                write = self._create if method == "POST" else self._update
                return 200, {}, self._write(records, all_or_none, write)
        upsert = re.fullmatch(r"/composite/sobjects/(\w+)/(\w+)", route)
        if upsert and method == "PATCH":
            sobject, field = self._upsert_target(upsert.group(1), upsert.group(2))
            records, all_or_none = self._collection(raw, entry)
            for record in records:
                if record["attributes"].get("type") != sobject:
                    raise Refused(400, "INVALID_TYPE", f"the records must all be of type {sobject}")
            return 200, {}, self._upsert_all(sobject, field, records, all_or_none)
        if upsert:
            message = f"HTTP Method '{method}' not allowed. Allowed are PATCH"
            return 405, {}, _error("METHOD_NOT_ALLOWED", message)
        raise Refused(404, "NOT_FOUND", "The requested resource does not exist")

    # --- collections -----------------------------------------------------------------------

    def _collection(self, raw: bytes, entry: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
        """The records of a collection body, each field under the org's own spelling (API
        names are case-insensitive), and allOrNone."""
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise Refused(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise Refused(400, "JSON_PARSER_ERROR", "the body needs a list of records")
        records = body["records"]
        entry["records"] = len(records)
        if len(records) > MAX_RECORDS:
            raise _too_many()
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise Refused(400, "JSON_PARSER_ERROR", "allOrNone must be a boolean")
        return [self._canonical(record) for record in records], all_or_none

    def _canonical(self, record: Any) -> dict[str, Any]:
        attributes = record.get("attributes") if isinstance(record, dict) else None
        if not isinstance(attributes, dict) or "type" not in attributes:
            raise Refused(400, "JSON_PARSER_ERROR", "each record needs attributes with a type")
        sobject = attributes["type"]
        if sobject not in SCHEMA:
            raise _unsupported(sobject)
        names = {f.lower(): f for f in SCHEMA[sobject]["fields"] if f != "Id"}
        fields: dict[str, Any] = {"attributes": attributes}
        for name, value in record.items():
            if name == "attributes":
                continue
            if name.lower() == "id":
                fields["id"] = value
                continue
            if name.lower() not in names:
                raise Refused(
                    400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}"
                )
            name = names[name.lower()]
            if name in SCHEMA[sobject]["numbers"] and not _number(value):
                # The body is deserialized before any record is saved: one value that is not
                # a number refuses the whole request.
                raise Refused(
                    400,
                    "JSON_PARSER_ERROR",
                    f"Cannot deserialize instance of int from VALUE_STRING value {value} or "
                    "request may be missing a required field",
                )
            fields[name] = value
        return fields

    def _write(
        self,
        records: list[dict[str, Any]],
        all_or_none: bool,
        write: Callable[[dict[str, Store], dict[str, Any]], dict[str, Any]],
    ) -> list[Any]:
        """Apply each record, in order, to a copy of the org; keep the copy unless allOrNone
        and one record failed."""
        org = copy.deepcopy(self.records)
        creates_before = self.creates.copy()
        results = [write(org, dict(record)) for record in records]
        if all_or_none and not all(r["success"] for r in results):
            self.creates = creates_before
            return _rolled_back(results)
        self.records = org
        return results

    def _create(self, org: dict[str, Store], record: dict[str, Any]) -> dict[str, Any]:
        sobject = record.pop("attributes")["type"]
        if "id" in record:
            return _failed(
                "INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", ["Id"]
            )
        if problem := self._invalid(org[sobject], sobject, record, None, creating=True):
            return problem
        return _ok(self._insert(org[sobject], sobject, record))

    def _update(self, org: dict[str, Store], record: dict[str, Any]) -> dict[str, Any]:
        sobject = record.pop("attributes")["type"]
        record_id = record.pop("id", None)
        if not record_id:
            return _failed("MISSING_ARGUMENT", "Id not specified in an update call")
        if record_id in self.deleted:
            return _failed("ENTITY_IS_DELETED", "entity is deleted")
        if not RECORD_ID.match(record_id):
            return _failed("MALFORMED_ID", f"malformed id {record_id}")
        if record_id not in org[sobject]:
            return _failed("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id")
        if problem := self._invalid(org[sobject], sobject, record, record_id, creating=False):
            return problem
        org[sobject][record_id].update(record)
        return _ok(record_id)

    def _upsert_target(self, sobject: str, field: str) -> tuple[str, str]:
        if sobject not in SCHEMA:
            raise Refused(404, "NOT_FOUND", "The requested resource does not exist")
        external = {f.lower(): f for f in SCHEMA[sobject]["external_ids"]}
        if field.lower() not in external:
            raise Refused(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field}",
            )
        return sobject, external[field.lower()]

    def _upsert_all(
        self, sobject: str, field: str, records: list[dict[str, Any]], all_or_none: bool
    ) -> list[Any]:
        """Records of one call naming one key (by the field's identity) all fail; the others
        are upserted in order."""
        keys = [r.get(field) for r in records]
        seen = Counter(self.identity(sobject, field, k) for k in keys if k is not None)

        def write(org: dict[str, Store], record: dict[str, Any]) -> dict[str, Any]:
            value = record.get(field)
            if value is not None and seen[self.identity(sobject, field, value)] > 1:
                return _failed(
                    "DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [field]
                )
            return self._upsert(org[sobject], sobject, field, record)

        return self._write(records, all_or_none, write)

    def _upsert(
        self, store: Store, sobject: str, field: str, record: dict[str, Any]
    ) -> dict[str, Any]:
        record.pop("attributes")
        if "id" in record:  # "Only external ids are supported. Don't use record ids."
            return _failed("INVALID_FIELD", "Id is not allowed in an upsert by external ID", ["Id"])
        value = record.get(field)
        if value is None:
            return _failed("MISSING_ARGUMENT", f"{field} not specified")
        wanted = self.identity(sobject, field, value)
        matches = [
            i for i, r in store.items()
            if r.get(field) is not None and self.identity(sobject, field, r[field]) == wanted
        ]  # fmt: skip
        if len(matches) > 1:
            return _failed(
                "DUPLICATE_EXTERNAL_ID",
                f"{field}: more than one record found for external id field: "
                f"[{', '.join(matches)}]",
            )
        record_id = matches[0] if matches else None
        if problem := self._invalid(store, sobject, record, record_id, creating=not matches):
            return problem
        if record_id is None:
            return _ok(self._insert(store, sobject, record), created=True)
        store[record_id].update(record)
        return _ok(record_id, created=False)

    def _insert(self, store: Store, sobject: str, record: dict[str, Any]) -> str:
        record_id = self._new_id(sobject)
        store[record_id] = {"Id": record_id, **record}
        for field in SCHEMA[sobject]["external_ids"]:
            if record.get(field) is not None:
                self.creates[(sobject, field, self.identity(sobject, field, record[field]))] += 1
        return record_id

    def _invalid(
        self,
        store: Store,
        sobject: str,
        record: dict[str, Any],
        record_id: str | None,
        creating: bool,
    ) -> dict[str, Any] | None:
        schema = SCHEMA[sobject]
        for field in schema["external_ids"]:
            value = record.get(field)
            if value is not None and (error := self.record_errors.pop(str(value), None)):
                return _failed(*error)
        for field in schema["emails"]:
            value = record.get(field)
            if value is not None and not EMAIL.match(str(value)):
                return _failed(
                    "INVALID_EMAIL_ADDRESS", f"{field}: invalid email address: {value}", [field]
                )
        if creating:
            missing = [f for f in schema["required"] if record.get(f) in (None, "")]
            if missing:
                return _failed(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    missing,
                )
        for field, attributes in schema["external_ids"].items():
            value = record.get(field)
            if value is None or not attributes.unique:
                continue
            for other_id, other in store.items():
                held = other.get(field)
                if (
                    other_id != record_id
                    and held is not None
                    and (attributes.upsert_key(held) == attributes.upsert_key(value))
                ):
                    return _failed(
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {field} duplicates value on record with id: "
                        + other_id,
                    )
        return None

    def _delete(self, ids: list[str], all_or_none: bool) -> list[Any]:
        if len(ids) > MAX_RECORDS:
            raise _too_many()
        org = copy.deepcopy(self.records)
        gone: set[str] = set()
        results = []
        for record_id in ids:
            holder = next((s for s in org.values() if record_id in s), None)
            if record_id in self.deleted or record_id in gone:
                results.append(_failed("ENTITY_IS_DELETED", "entity is deleted"))
            elif not RECORD_ID.match(record_id):
                results.append(_failed("MALFORMED_ID", f"malformed id {record_id}"))
            elif holder is None:
                results.append(_failed("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"))
            else:
                del holder[record_id]
                gone.add(record_id)
                results.append(_ok(record_id))
        if all_or_none and not all(r["success"] for r in results):
            return _rolled_back(results)
        self.records = org
        self.deleted |= gone
        return results

    # --- SOQL ----------------------------------------------------------------------------------

    def _query(self, soql: str, version: str) -> dict[str, Any]:
        found = QUERY.match(soql)
        if not found:
            raise Refused(400, "MALFORMED_QUERY", f"unexpected token in: {soql[:100]}")
        selected, sobject, filtered, listed = found.groups()
        if sobject not in SCHEMA:
            raise _unsupported(sobject)
        fields = {f.lower(): f for f in SCHEMA[sobject]["fields"]}
        for name in (selected, filtered):
            if name.lower() not in fields:
                raise Refused(
                    400, "INVALID_FIELD", f"No such column '{name}' on entity '{sobject}'"
                )
        if selected.lower() != filtered.lower():
            raise Refused(400, "MALFORMED_QUERY", "this fake selects the filtered field only")
        field = fields[filtered.lower()]
        compare = SCHEMA[sobject]["external_ids"].get(field, ExternalId(unique=False)).query_key
        wanted = {compare(v) for v in _literals(listed, field)}
        matched = [
            {
                "attributes": {
                    "type": sobject,
                    "url": f"/services/data/{version}/sobjects/{sobject}/{i}",
                },
                "Id": i,
                field: r.get(field),
            }
            for i, r in self.records[sobject].items()
            if r.get(field) is not None and compare(r[field]) in wanted
        ]
        locator = f"01gD0000002HU{len(self._cursors):02d}IAW"
        self._cursors[locator] = matched
        return self._more(f"{locator}-0", version, total=len(matched))

    def _more(self, cursor: str, version: str, total: int | None = None) -> dict[str, Any]:
        locator, _, offset = cursor.rpartition("-")
        if locator not in self._cursors or not offset.isdigit():
            raise Refused(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        rows = self._cursors[locator]
        start, end = int(offset), int(offset) + self.query_page_size
        answer: dict[str, Any] = {
            "totalSize": len(rows) if total is None else total,
            "done": end >= len(rows),
            "records": rows[start:end],
        }
        if end < len(rows):
            answer["nextRecordsUrl"] = f"/services/data/{version}/query/{locator}-{end}"
        return answer


def _rolled_back(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        r if not r["success"] else _failed("ALL_OR_NONE_OPERATION_ROLLED_BACK", ROLLED_BACK)
        for r in results
    ]


def _literals(listed: str, field: str) -> list[str]:
    """The quoted strings of an IN list (external IDs here are text, quoted in SOQL)."""
    values, position = [], 0
    while position < len(listed):
        found = LITERAL.match(listed, position)
        if not found or found.end() == position:
            raise Refused(
                400, "MALFORMED_QUERY", f"unexpected token near: {listed[position : position + 30]}"
            )
        if found.group(2) is not None:
            raise Refused(
                400,
                "INVALID_QUERY_FILTER_OPERATOR",
                f"value of filter criterion for field '{field}' must be of type string and "
                "should be enclosed in quotes",
            )
        values.append(
            re.sub(r"\\(.)", lambda m: ESCAPES.get(m.group(1), m.group(1)), found.group(1))
        )
        position = found.end()
    if not values:
        raise Refused(400, "MALFORMED_QUERY", "unexpected token: ')'")
    return values


def _number(value: Any) -> bool:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    return isinstance(value, str) and re.fullmatch(r"-?\d+(\.\d+)?", value) is not None
