"""HubSpot CRM: contacts, companies, deals and custom objects through the CRM v3 objects API,
100 records a request, each record identified by a unique property (HubSpot's `idProperty`),
which is the sync's primary key column.

    upsert  POST /crm/v3/objects/{object}/batch/upsert   (by idProperty; creates or updates)
    update  POST /crm/v3/objects/{object}/batch/update   (by idProperty; never creates)
    insert  POST /crm/v3/objects/{object}/batch/create   (an existing record: 409, rejected)
    delete  POST .../batch/read by idProperty for HubSpot's record ids, then .../batch/archive

Sources: the CRM objects batch endpoints
(https://developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/batch/upsert-contacts,
.../batch/update-custom-objects, .../batch/read, .../batch/archive: "204 No Content ... regardless
of the initial state of the object"); limits, 429 bodies and X-HubSpot-RateLimit-* headers
(https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines); error bodies as
HubSpot sends them (`{"status": "error", "message", "correlationId", "category"}`, e.g. "Property
values were not valid: [...INVALID_EMAIL...]", "Contact already exists. Existing ID: 501");
account details (https://developers.hubspot.com/docs/api-reference/latest/account/
account-information/get-account-details).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import quote

from pydantic import Field, field_validator

from ...delivery.ratelimit import RateHeaders, Window, requests_left
from ...errors import CredentialsError, DestinationError
from ..base import (
    DELIVERED,
    OPERATIONS,
    Batch,
    BatchFailed,
    Destination,
    DestinationSettings,
    HeaderSecret,
    KeyMatch,
    Rejected,
    Result,
    Retry,
    SplitBatch,
    SyncTarget,
    Throttled,
    excerpt,
    http_url,
    json_object,
    raise_for_batch_status,
    response_text,
    retry_after_seconds,
    untrusted,
)

if TYPE_CHECKING:
    import httpx

API = "https://api.hubapi.com"
MAX_INPUTS = 100  # every CRM objects batch endpoint takes at most 100 inputs
# An object type goes into the URL path: a name (contacts, p123_cars) or an objectTypeId (2-123).
OBJECT_TYPE = re.compile(r"[A-Za-z0-9_-]+")
# Property errors that every record of a sync shares (its columns are the properties): splitting
# the batch could only reject each record alone, so the run stops instead, naming the property.
SCHEMA_ERRORS = {"PROPERTY_DOESNT_EXIST", "READ_ONLY_VALUE"}


class HubSpotSettings(DestinationSettings):
    access_token: HeaderSecret = Field(
        description="a private app's access token, sent as `Authorization: Bearer`; it needs "
        "the read and write scopes of the objects synced (e.g. crm.objects.contacts.write)"
    )
    base_url: str = Field(
        default=API, description="the API's address (a proxy's, or a test server's)"
    )
    batch_size: int = Field(
        default=MAX_INPUTS, ge=1, description="records per request (HubSpot takes at most 100)"
    )
    requests_per_10_seconds: int | None = Field(
        default=100,
        ge=1,
        description="HubSpot's burst limit per app: 100 on Free and Starter; Professional and "
        "Enterprise allow 190, the API limit increase 250",
    )
    requests_per_day: int | None = Field(
        default=250_000,
        ge=1,
        description="the account's daily limit: 250,000 on Free and Starter; Professional "
        "625,000, Enterprise 1,000,000, and 1,000,000 more per API limit increase",
    )

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        return http_url(url).rstrip("/")


class HubSpotDestination(Destination):
    contract_version = 1
    type = "hubspot"
    description = "HubSpot CRM objects (contacts, companies, deals, custom) by a unique property"
    settings_model = HubSpotSettings
    operations = frozenset(OPERATIONS)
    # batch/create is not safe to repeat: after an unknown outcome, batch/read finds out.
    idempotent_operations = frozenset({"upsert", "update", "delete"})
    reconcilable_operations = frozenset({"insert"})
    max_batch_size = MAX_INPUTS
    # HubSpot matches an idProperty's value ignoring case: it stores emails in lower case and
    # unique-value properties are unique regardless of case
    # (https://knowledge.hubspot.com/properties/create-and-edit-properties: "Require unique
    # values for this property"; https://developers.hubspot.com/docs/api-reference/latest/crm/objects/contacts/batch/upsert-contacts).
    key_identity = "case_insensitive"

    @classmethod
    def requests_left(cls, headers: Mapping[str, str]) -> RateHeaders | None:
        return _requests_left(headers)

    @classmethod
    def sync_problems(
        cls, settings: DestinationSettings, sync: SyncTarget
    ) -> list[tuple[str, str]]:
        problems = super().sync_problems(settings, sync)
        object_name, primary_key = sync.object, sync.primary_key
        if not object_name:
            problems.append(
                (
                    "object",
                    'HubSpot needs the object type to write: set object = "contacts" '
                    "(or companies, deals, a custom object's name or objectTypeId like "
                    '"2-123456")',
                )
            )
        elif not OBJECT_TYPE.fullmatch(object_name):
            problems.append(
                (
                    "object",
                    f"{object_name!r} is not a HubSpot object type: a name such as contacts, "
                    'companies, deals, or an objectTypeId such as "2-123456"',
                )
            )
        if len(primary_key) != 1:
            problems.append(
                (
                    "primary_key",
                    "HubSpot finds a record by one unique property (its idProperty), so the "
                    "primary key must be one column named as that property, not "
                    f'{list(primary_key)} (e.g. "email" for contacts, or a custom property '
                    "with unique values)",
                )
            )
        return problems

    async def check(self) -> str:
        """GET /account-info/v3/details: reads the account's settings, changes nothing, and
        needs no scope beyond the token itself."""
        response = await self.client.get(
            f"{self._settings.base_url}/account-info/v3/details", headers=self._headers()
        )
        account = self._answer(response, None)
        left = response.headers.get("X-HubSpot-RateLimit-Daily-Remaining")
        daily = response.headers.get("X-HubSpot-RateLimit-Daily")
        quota = f"; {left} of {daily} requests left today" if left and daily else ""
        return (
            f"HubSpot account {account.get('portalId')} (time zone {account.get('timeZone')}) "
            f"accepted the access token{quota}"
        )

    async def send(self, batch: Batch) -> list[Result]:
        object_type = batch.object
        if not object_type:
            raise DestinationError("the sync sets no object: HubSpot needs the object type")
        id_property = _id_property(batch)
        keys = [key for key, _ in batch.records]
        if batch.operation == "delete":
            return await self._delete(object_type, id_property, keys)
        if batch.operation == "insert":
            return await self._create(batch, object_type, id_property)
        inputs = [  # upsert and update both find the record by its unique property
            {"idProperty": id_property, "id": key, "properties": properties(fields)}
            for key, fields in batch.records
        ]
        response = await self._post(object_type, batch.operation, {"inputs": inputs})
        answer = self._answer(response, "results")
        return _outcomes(answer, keys, id_property, object_type, batch.operation, self.name)

    async def _create(self, batch: Batch, object_type: str, id_property: str) -> list[Result]:
        """batch/create, which is not safe to repeat (docs: HubSpot). A 409 for a batch of
        one record says whether a record with its key exists (the run's own lost create, maybe)
        by looking it up."""
        inputs = [
            {"properties": properties(fields, clear_nulls=False)} for _, fields in batch.records
        ]
        response = await self._post(object_type, "create", {"inputs": inputs})
        keys = [key for key, _ in batch.records]
        if response.status_code == 409 and len(keys) == 1:
            body = _json(response)
            message = _error_text(body, 409) if body.get("message") else response_text(response)
            [found] = await self.reconcile(batch)
            return [Rejected(message, exists=found is not None)]
        answer = self._answer(response, "results")
        return _outcomes(answer, keys, id_property, object_type, "insert", self.name)

    async def reconcile(self, batch: Batch) -> list[Result | None]:
        """After an unknown outcome of a create: batch/read by the idProperty. A record HubSpot
        holds counts as delivered, one it does not (OBJECT_NOT_FOUND) is created again."""
        assert batch.object is not None
        id_property = _id_property(batch)
        keys = [key for key, _ in batch.records]
        read = {
            "inputs": [{"id": key} for key in keys],
            "idProperty": id_property,
            "properties": [id_property],
        }
        try:
            answer = self._answer(await self._post(batch.object, "read", read), "results")
        except DestinationError as exc:  # e.g. the key is not a unique property: no lookup
            raise BatchFailed(
                f"the outcome of the create is unknown and the records cannot be looked up by "
                f"{id_property} ({exc}); they are not created again blindly"
            ) from None
        found, gone, _ = self._read_answer(answer, keys, id_property)
        unknown = [keys[p] for p in range(len(keys)) if p not in found and p not in gone]
        if unknown:
            raise untrusted(self.name, f"batch/read said nothing of {unknown[:5]!r}")
        return [DELIVERED if p in found else None for p in range(len(keys))]

    async def _delete(self, object_type: str, id_property: str, keys: list[str]) -> list[Result]:
        """Archive takes HubSpot's record ids: read them by the unique property first. A key
        HubSpot does not know is already gone, which is what a delete wants."""
        read = {
            "inputs": [{"id": key} for key in keys],
            "idProperty": id_property,
            "properties": [id_property],
        }
        answer = self._answer(await self._post(object_type, "read", read), "results")
        found, gone, other = self._read_answer(answer, keys, id_property)
        if found:
            ids = sorted(set(found.values()))
            archive = {"inputs": [{"id": record_id} for record_id in ids]}
            self._answer(await self._post(object_type, "archive", archive), None)
        results: list[Result] = []
        for position in range(len(keys)):
            if position in found or position in gone:
                results.append(DELIVERED)
            elif position in other:
                results.append(Rejected(other[position]))
            else:  # neither returned nor named: HubSpot did not say; ask again
                results.append(Retry(f"HubSpot's batch read said nothing of {keys[position]!r}"))
        return results

    def _read_answer(
        self, answer: dict[str, Any], keys: list[str], id_property: str
    ) -> tuple[dict[int, str], set[int], dict[int, str]]:
        """A batch/read answer: HubSpot's record id of each position found, the positions
        HubSpot does not have (OBJECT_NOT_FOUND), and other errors by position. A result or an
        error naming no key of the batch makes the answer untrusted."""
        index = KeyIndex(keys)
        found: dict[int, str] = {}
        for record in answer["results"]:
            value = (record.get("properties") or {}).get(id_property)
            position = index.find(value)
            if position is None or record.get("id") is None:
                raise untrusted(self.name, f"batch/read returned a record not asked for: {value!r}")
            found[position] = str(record["id"])
        gone: set[int] = set()
        other: dict[int, str] = {}
        for error in answer.get("errors") or []:
            positions = _positions(error, index, self.name)
            if error.get("category") == "OBJECT_NOT_FOUND":
                gone.update(positions)
            else:
                other.update((p, _error_text(error)) for p in positions)
        return found, gone, other

    def _answer(self, response: httpx.Response, listing: str | None) -> dict[str, Any]:
        """The JSON object of a 2xx answer, holding the list `listing` (None: any JSON object
        or no body, as batch/archive's 204); raises what the engine should do otherwise."""
        if not 200 <= response.status_code < 300:
            _refusal(response)
        content = response.content
        if listing is None and not content.strip():
            return {}
        body = json_object(content)
        if body is None:
            raise untrusted(self.name, f"HTTP {response.status_code}, not JSON: {excerpt(content)}")
        if listing is not None and not isinstance(body.get(listing), list):
            raise untrusted(self.name, f"no `{listing}` list in {excerpt(content)}")
        errors = body.get("errors")
        if errors is not None and not (
            isinstance(errors, list) and all(isinstance(e, dict) for e in errors)
        ):
            raise untrusted(self.name, f"`errors` is not a list of objects: {excerpt(content)}")
        if listing is not None and not all(isinstance(r, dict) for r in body[listing]):
            raise untrusted(self.name, f"`{listing}` is not a list of objects")
        return body

    async def _post(self, object_type: str, action: str, payload: dict[str, Any]) -> httpx.Response:
        url = (
            f"{self._settings.base_url}/crm/v3/objects/{quote(object_type, safe='')}/batch/{action}"
        )
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        return await self.client.post(url, content=body, headers=self._headers())

    def _headers(self) -> dict[str, str]:
        token = self._settings.access_token.get_secret_value()
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    @property
    def _settings(self) -> HubSpotSettings:
        return self.settings  # type: ignore[return-value]


def _id_property(batch: Batch) -> str:
    """The idProperty: the sync's one primary key column, as the engine passes it."""
    if len(batch.primary_key) != 1:
        raise DestinationError(
            f"sync {batch.sync!r} gives HubSpot {len(batch.primary_key)} primary key columns "
            f"{list(batch.primary_key)}: HubSpot needs exactly one, the unique property it "
            "finds records by (its idProperty)"
        )
    return batch.primary_key[0]


def properties(fields: str, *, clear_nulls: bool = True) -> dict[str, str]:
    """A record's fields as HubSpot property values, all strings: numbers exactly as written,
    booleans as true/false, lists joined by ';' (multiple checkboxes), NULL as "" (HubSpot
    clears a property set to the empty string; a new record simply goes without it)."""
    values = json.loads(fields, parse_float=str, parse_int=str)
    out = {}
    for name, value in values.items():
        if value is None:
            if clear_nulls:
                out[name] = ""
            continue
        out[name] = _text(value)
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ";".join(_text(item) for item in value if item is not None)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # a struct: its JSON


class KeyIndex:
    """Finds a record by the value HubSpot gives back: exactly, else ignoring case (HubSpot
    keeps email addresses in lower case)."""

    def __init__(self, keys: list[str]) -> None:
        self.exact = KeyMatch(keys)
        self.folded = {key.casefold(): i for i, key in reversed(list(enumerate(keys)))}

    def find(self, value: object) -> int | None:
        if value is None:
            return None
        found = self.exact.find(value)
        return found if found is not None else self.folded.get(str(value).casefold())


def _outcomes(
    answer: dict[str, Any],
    keys: list[str],
    id_property: str,
    object_type: str,
    operation: str,
    destination: str,
) -> list[Result]:
    """One result per record from a 200/201/207 answer: the records its `errors` name are
    rejected with HubSpot's message, the others were written. An error naming no record of the
    batch, or fewer results than records written, makes the answer untrusted."""
    index = KeyIndex(keys)
    rejected: dict[int, str] = {}
    for error in answer.get("errors") or []:
        text = _error_text(error)
        not_found = error.get("category") == "OBJECT_NOT_FOUND" and operation == "update"
        for position in _positions(error, index, destination):
            if not_found:  # update never creates: say so rather than HubSpot's generic text
                told = f"not found: no {object_type} record has {id_property} = "
                rejected.setdefault(position, f"{told}{keys[position]!r} ({text})")
            else:
                rejected.setdefault(position, text)
    written = len(keys) - len(rejected)
    if len(answer["results"]) < written:
        raise untrusted(
            destination,
            f"{len(answer['results'])} results and {len(rejected)} errors for {len(keys)} records",
        )
    return [Rejected(rejected[i]) if i in rejected else DELIVERED for i in range(len(keys))]


def _positions(error: dict[str, Any], index: KeyIndex, destination: str) -> list[int]:
    """The records an error names (by value); an error that names none cannot be placed."""
    ids = _context_ids(error)
    positions = [p for i in ids if (p := index.find(i)) is not None]
    if not positions or len(positions) < len(ids):
        raise untrusted(
            destination, f"an error names no record of the batch: {_error_text(error)} {ids}"
        )
    return positions


def _context_ids(error: dict[str, Any]) -> list[str]:
    context = error.get("context")
    if not isinstance(context, dict):
        return []
    ids = context.get("ids") or context.get("id") or []
    return [str(i) for i in ids] if isinstance(ids, list) else [str(ids)]


def _refusal(response: httpx.Response) -> NoReturn:
    """Raise what a non-2xx answer means to the engine."""
    status = response.status_code
    body = _json(response)
    message = _error_text(body, status) if body.get("message") else response_text(response)
    if status == 429:
        raise _rate_limited(response, body, message)
    if status in (401, 403):  # 403: the token lacks a scope (MISSING_SCOPES)
        raise CredentialsError(message)
    if status == 400:
        raise _refused(body, message)
    if status == 409:  # "Contact already exists. Existing ID: ...": one record; isolate it
        raise SplitBatch(message)
    raise_for_batch_status(response)
    raise BatchFailed(message)  # a 1xx or 3xx answer


def _refused(body: dict[str, Any], message: str) -> Exception:
    """A 400: a record's value (an invalid email...) isolates that record by splitting; what
    is wrong for every record (the object, the idProperty, a property) stops the run."""
    text = str(body.get("message") or "")
    if text.startswith("Unable to infer object type"):
        return DestinationError(
            f"{message}; the sync's object must be a HubSpot object type (contacts, companies, "
            "deals...) or a custom object's name or objectTypeId"
        )
    if "non-unique" in text:
        return DestinationError(
            f"{message}; the sync's primary key must be a property with unique values "
            "(e.g. email for contacts, or a custom property created with unique values)"
        )
    codes = {item.get("error") for item in _property_errors(text)}
    if codes & SCHEMA_ERRORS:
        return DestinationError(
            f"{message}; the model's columns are sent as HubSpot properties: rename the column "
            "to the property's internal name, or create the property in HubSpot"
        )
    return SplitBatch(message)


def _rate_limited(response: httpx.Response, body: dict[str, Any], message: str) -> Exception:
    """HubSpot's 429: its body's policyName says which limit. The daily one lasts until
    midnight in the account's time zone, so waiting within a run is pointless."""
    headers = response.headers
    policy = str(body.get("policyName") or "")
    daily_left = headers.get("X-HubSpot-RateLimit-Daily-Remaining")
    if policy == "DAILY" or (not policy and daily_left is not None and daily_left.strip() == "0"):
        daily = headers.get("X-HubSpot-RateLimit-Daily")
        limit = f" of {daily} requests" if daily else ""
        return DestinationError(
            f"HubSpot's daily API limit{limit} is spent ({message}): nothing more can be sent "
            "until the daily limit resets at midnight in the HubSpot account's time zone; the "
            "records not sent go with the next run after that"
        )
    after = retry_after_seconds(headers.get("Retry-After"))
    if after is None:
        after = _slot_wait(headers, policy)
    return Throttled(message, after)


def _slot_pace(headers: Mapping[str, str]) -> float | None:
    """How often HubSpot's rolling window (X-HubSpot-RateLimit-Max requests in any
    -Interval-Milliseconds) frees a slot: its oldest request leaves it about every interval/max
    (0.1 s for 100 per 10 s)."""
    interval = _number(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
    limit = _number(headers.get("X-HubSpot-RateLimit-Max"))
    return interval / 1000 / limit if interval and limit else None


def _requests_left(headers: Mapping[str, str]) -> RateHeaders | None:
    """HubSpot's rolling window as it states it (X-HubSpot-RateLimit-Max requests in any
    -Interval-Milliseconds), obeyed from the first answer whatever the limit configured; the
    requests left, spread at the window's pace (none left waits for one slot)."""
    interval = _number(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds"))
    limit = _number(headers.get("X-HubSpot-RateLimit-Max"))
    if not (interval and limit and interval > 0 and limit >= 1):
        return requests_left(headers)  # none of HubSpot's: the standard ones, if any
    windows = (Window(int(limit), interval / 1000),)
    remaining = _number(headers.get("X-HubSpot-RateLimit-Remaining"))
    pace = interval / 1000 / limit
    if remaining is None:
        return RateHeaders(windows)
    return RateHeaders(windows, remaining, pace * max(remaining, 1))


def _slot_wait(headers: httpx.Headers, policy: str) -> float | None:
    """After a 429, when a slot frees (the engine also halves its rate on each 429)."""
    return 1.0 if policy == "SECONDLY" else _slot_pace(headers)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.content.strip():
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_text(error: dict[str, Any], status: int | None = None) -> str:
    """HubSpot's message, its category first; the list inside "Property values were not
    valid: [...]" told as its messages (e.g. "Email address x is invalid (INVALID_EMAIL)")."""
    message = str(error.get("message") or "rejected by HubSpot")
    found = _property_errors(message)
    if found:
        head = message.split(":", 1)[0]
        told = "; ".join(f"{item.get('message')} ({item.get('error')})" for item in found)
        message = f"{head}: {told}"
    category = error.get("category")
    prefix = " ".join(str(p) for p in (status, category) if p)
    return f"HubSpot {prefix}: {message}" if prefix else f"HubSpot: {message}"


def _property_errors(message: str) -> list[dict[str, Any]]:
    """The validation results listed in "Property values were not valid: [{...}]"."""
    start = message.find("[")
    if not message.startswith("Property values were not valid") or start < 0:
        return []
    try:
        items = json.loads(message[start:])
    except ValueError:
        return []
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
