"""Braze: each record is a user, keyed by its `external_id`, its other columns user attributes.

Upserts and updates go to POST /users/track as attributes objects (updates with
`"_update_existing_only": true`), deletes to POST /users/delete. What this relies on, from
Braze's documentation (https://www.braze.com/docs, source: github.com/braze-inc/braze-docs):

- api/endpoints/user_data/post_user_track: 75 attributes objects per request; answers
  `{"message": "success", "attributes_processed": n}`, with `"errors": [{"type", "input_array",
  "index"}]` for the objects it refused; the others are processed. When no object is valid the
  answer is a 400 with the same `errors` (as real answers captured in RudderStack's and
  Segment's Braze tests show). Its error table names codes such as EMAIL_BAD_FORMAT; live
  answers mostly give sentences instead. Both are passed on.
- api/objects_filters/user_attributes_object: `_update_existing_only`, and `null` removes an
  attribute.
- api/endpoints/user_data/post_user_delete: at most 50 `external_ids` per request.
- api/api_limits: /users/track allows 3,000 requests per 3 seconds; every answer carries
  X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (Unix seconds).
- api/errors: 401 unknown key (or the wrong instance), 403 a key without the permission.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from json.encoder import encode_basestring as encode_string
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from ...errors import CredentialsError, DestinationError
from ..base import (
    DELIVERED,
    Batch,
    BatchFailed,
    Destination,
    DestinationSettings,
    HeaderSecret,
    Rejected,
    Result,
    Retry,
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

TRACK = "/users/track"
DELETE = "/users/delete"
TRACK_LIMIT = 75  # attributes objects per /users/track request
DELETE_LIMIT = 50  # external_ids per /users/delete request
PERMISSIONS = {TRACK: "users.track", DELETE: "users.delete"}
KEY_COLUMN = "external_id"

# The per-object error codes of post_user_track's table, for answers that give a code only.
ERROR_CODES = {
    "BAD_DEVICE_ID": "the device_id of a token import must be 8 to 255 bytes",
    "BAD_EMAIL_SUBSCRIPTION_STATE": "email_subscribe must be subscribed, unsubscribed or opted_in",
    "BAD_LOCATION_UPDATE": "current_location must be an object with longitude and latitude",
    "BAD_PUSH_SUBSCRIPTION_STATE": "push_subscribe must be subscribed, unsubscribed or opted_in",
    "BAD_PUSH_TOKEN_APP_ID": "the app_id of a token import must be an app of this workspace",
    "BAD_PUSH_TOKEN_IMPORT": "token imports must include tokens and no external_id or braze_id",
    "BAD_PUSH_TOKEN_STRING": "the token of a token import must be a string",
    "BAD_PUSH_TOKEN_VALUE": "push_tokens must be an array of objects",
    "BAD_SUBSCRIPTION_GROUP_ARRAY": "subscription_groups must be an array",
    "BAD_SUBSCRIPTION_GROUP_HASH": "each subscription_groups item must be an object with "
    "subscription_group_id and subscription_state",
    "BAD_SUBSCRIPTION_GROUP_ID": "subscription_group_id must be a subscription group's UUID",
    "BAD_SUBSCRIPTION_GROUP_STATE": "subscription_state must be subscribed or unsubscribed",
    "BLACKLISTED_EXTERNAL_USER_ID": "the external_id is blocklisted",
    "EMAIL_BAD_FORMAT": "the value provided for email is not a valid email address",
    "EXTERNAL_USER_ID_TOO_LARGE": "the external_id is longer than 987 bytes",
    "INVALID_ATTRIBUTE_EMAIL_SUBSCRIPTION_INFO": "email_subscription_info is not a valid attribute",
}


class BrazeSettings(DestinationSettings):
    rest_endpoint: str = Field(
        description="your instance's REST endpoint, e.g. https://rest.iad-01.braze.com "
        "(Settings > APIs and Identifiers in the dashboard)"
    )
    api_key: HeaderSecret = Field(
        description="a REST API key with the users.track permission (and users.delete for "
        "mirror syncs), sent as a bearer token"
    )
    batch_size: int = Field(
        default=TRACK_LIMIT, ge=1, description="users per /users/track request (Braze takes 75)"
    )
    requests_per_second: float | None = Field(
        default=1000, gt=0, description="/users/track allows 3,000 requests per 3 seconds"
    )

    @field_validator("rest_endpoint")
    @classmethod
    def _endpoint(cls, url: str) -> str:
        try:
            parts = urlsplit(http_url(url))
        except ValueError as exc:
            example = "https://rest.iad-01.braze.com"
            raise ValueError(f"must be a URL such as {example}: it {exc}") from None
        if parts.path.strip("/") or parts.query:
            raise ValueError("must be the REST endpoint alone, e.g. https://rest.iad-01.braze.com")
        if parts.hostname and parts.hostname.startswith("dashboard"):
            raise ValueError(
                "is a dashboard URL; the REST endpoint is https://rest.<instance>.braze.com "
                "(e.g. dashboard-01.braze.com → rest.iad-01.braze.com)"
            )
        return f"{parts.scheme}://{parts.netloc}"


class BrazeDestination(Destination):
    contract_version = 1
    type = "braze"
    description = "Braze users: attributes by external_id (/users/track), deletes (/users/delete)"
    settings_model = BrazeSettings
    operations = frozenset({"upsert", "update", "delete"})  # Braze has no create-only mode
    max_batch_size = TRACK_LIMIT

    @classmethod
    def sync_problems(
        cls, settings: DestinationSettings, sync: SyncTarget
    ) -> list[tuple[str, str]]:
        problems = super().sync_problems(settings, sync)
        object_name, primary_key = sync.object, sync.primary_key
        if object_name is not None:
            problems.append(
                (
                    "object",
                    "Braze syncs write users' attributes and have no object to choose: "
                    "remove `object`",
                )
            )
        if len(primary_key) != 1:
            problems.append(
                (
                    "primary_key",
                    f"Braze identifies a user by one external_id, not by {list(primary_key)}: "
                    f"the primary key must be one column named {KEY_COLUMN}",
                )
            )
        elif primary_key[0] != KEY_COLUMN:
            problems.append(
                (
                    "primary_key",
                    f"the primary key must be the column {KEY_COLUMN} (Braze's user ID; the "
                    f"other columns are attributes): select {primary_key[0]} as {KEY_COLUMN}",
                )
            )
        return problems

    async def check(self) -> str:
        """An empty /users/track request: Braze checks the key first and writes nothing (it
        answers 400 "Valid data must be provided...")."""
        response = await self._post(TRACK, b'{"attributes":[]}')
        if response.is_success or response.status_code == 400:
            return (
                f"{self._endpoint}: the API key was accepted for {TRACK} "
                f"(an empty request, HTTP {response.status_code}: nothing was written)"
            )
        self._raise_refusal(response, TRACK)
        raise DestinationError(f"{TRACK} could not be checked: {response_text(response)}")

    async def send(self, batch: Batch) -> list[Result]:
        if batch.operation == "delete":
            return await self._delete(batch)
        update_only = batch.operation == "update"
        objects = ",".join(user_object(key, fields, update_only) for key, fields in batch.records)
        response = await self._post(TRACK, f'{{"attributes":[{objects}]}}'.encode())
        count = len(batch.records)
        if response.is_success:  # 201 "success", or 202 "queued" during maintenance
            refused = refused_objects(response, count)
            if isinstance(refused, str):
                raise untrusted(self.name, refused)
            return [Rejected(refused[i]) if i in refused else DELIVERED for i in range(count)]
        refused = refused_objects(response, count)
        if response.status_code == 400 and isinstance(refused, dict) and refused:
            # A fatal answer naming objects (none was valid): nothing was written.
            again = Retry(f"not written: Braze refused the request ({response_text(response)})")
            return [Rejected(refused[i]) if i in refused else again for i in range(count)]
        self._raise_for(response, TRACK)

    async def _delete(self, batch: Batch) -> list[Result]:
        """Requests of at most 50 external_ids. Braze says only how many it queued, not which
        existed: a user already gone is no error. Deleting is idempotent, so when a later
        request fails and the engine sends the batch again, repeating the earlier ones is
        harmless."""
        keys = [key for key, _ in batch.records]
        for start in range(0, len(keys), DELETE_LIMIT):
            body = json.dumps({"external_ids": keys[start : start + DELETE_LIMIT]})
            response = await self._post(DELETE, body.encode())
            if not response.is_success:
                self._raise_for(response, DELETE)
            if json_object(response.content) is None:  # {"deleted": n, "message": "success"}
                raise untrusted(self.name, f"not Braze's answer: {excerpt(response.content)}")
        return [DELIVERED] * len(keys)

    @property
    def _endpoint(self) -> str:
        return self.settings.rest_endpoint  # type: ignore[attr-defined,no-any-return]

    async def _post(self, path: str, body: bytes) -> httpx.Response:
        key = self.settings.api_key.get_secret_value()  # type: ignore[attr-defined]
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        return await self.client.post(self._endpoint + path, content=body, headers=headers)

    def _raise_refusal(self, response: httpx.Response, path: str) -> None:
        """Answers that no retry can change: a refused key, a wrong endpoint."""
        status, text = response.status_code, response_text(response)
        if status == 401:
            raise CredentialsError(
                f"Braze refused the API key for {path} (check the key, and that rest_endpoint "
                f"is your instance's): {text}"
            )
        if status == 403:
            raise CredentialsError(
                f"the API key may not call {path} (it needs the {PERMISSIONS[path]} "
                f"permission): {text}"
            )
        if status == 404:
            raise DestinationError(
                f"{self._endpoint}{path} does not exist ({text}): rest_endpoint must be your "
                "instance's REST endpoint, e.g. https://rest.iad-01.braze.com"
            )

    def _raise_for(self, response: httpx.Response, path: str) -> NoReturn:
        self._raise_refusal(response, path)
        if response.status_code == 429:
            raise Throttled(_limit_text(response), retry_after(response))
        raise_for_batch_status(response)  # 5xx: retry; 400, 413: split; other 4xx: fail
        raise BatchFailed(response_text(response))  # a 1xx or 3xx answer


def user_object(key: str, fields: str, update_only: bool) -> str:
    """A user attributes object: the key as external_id, then the other columns as written
    (their values are already wire JSON: kept as text, so decimals stay exact)."""
    head = f'{{"external_id":{encode_string(key)}'
    if update_only:
        head += ',"_update_existing_only":true'
    rest = "".join(
        f",{name}:{value}" for parsed, name, value in members(fields) if parsed != KEY_COLUMN
    )
    return head + rest + "}"


_DECODER = json.JSONDecoder()
_SPACE = " \t\n\r"


def members(text: str) -> Iterator[tuple[str, str, str]]:
    """Each member of a JSON object: (name, name as written, value as written)."""
    i = _skip(text, text.index("{") + 1)
    while text[i] != "}":
        name, end = _DECODER.raw_decode(text, i)
        raw_name = text[i:end]
        i = _skip(text, _skip(text, end) + 1)  # past the colon
        _, end = _DECODER.raw_decode(text, i)
        yield name, raw_name, text[i:end]
        i = _skip(text, end)
        if text[i] == ",":
            i = _skip(text, i + 1)


def _skip(text: str, i: int) -> int:
    while text[i] in _SPACE:
        i += 1
    return i


def refused_objects(response: httpx.Response, count: int) -> dict[int, str] | str:
    """The `errors` of an answer, by the index of the attributes object each names → Braze's
    words; or, when the answer is not Braze's (not a JSON object with its `message`) or an
    error names no object of the request, why it cannot be trusted."""
    answer = json_object(response.content)
    if answer is None or "message" not in answer:
        return f"HTTP {response.status_code}, not Braze's answer: {excerpt(response.content)}"
    errors = answer.get("errors")
    if errors is None:
        return {}
    if not isinstance(errors, list):
        return f"`errors` is not a list: {excerpt(response.content)}"
    refused: dict[int, str] = {}
    for error in errors:
        index = error.get("index") if isinstance(error, dict) else None
        placed = isinstance(error, dict) and error.get("input_array") == "attributes"
        if not placed or not isinstance(index, int) or not 0 <= index < count:
            return f"an error names no attributes object of the request: {error!r}"[:500]
        text = describe(error.get("type"))
        refused[index] = f"{refused[index]}; {text}" if index in refused else text
    return refused


def describe(error_type: Any) -> str:
    """Braze's `type` of a refused object; a bare code gets the documentation's words."""
    text = str(error_type or "refused by Braze")
    return f"{text}: {ERROR_CODES[text]}" if text in ERROR_CODES else text


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds to wait after a 429: Retry-After when given, else until X-RateLimit-Reset (a
    Unix time)."""
    given = retry_after_seconds(response.headers.get("Retry-After"), now)
    if given is not None:
        return given
    value = response.headers.get("X-RateLimit-Reset")
    try:
        reset = float(value) if value else None
    except ValueError:
        reset = None
    if reset is None:
        return None
    if reset > 1e9:
        reset -= time.time() if now is None else now
    return max(0.0, reset)


def _limit_text(response: httpx.Response) -> str:
    limit = response.headers.get("X-RateLimit-Limit")
    text = response_text(response)
    return f"{text} (rate limit: {limit} requests per window)" if limit else text
