"""Salesforce: the REST API's sObject Collections, up to 200 records a request, matched by an
external ID field (the sync's primary key).

    upsert  PATCH  /services/data/vXX.X/composite/sobjects/{sObject}/{externalIdField}
    insert  POST   /services/data/vXX.X/composite/sobjects
    update  GET    /services/data/vXX.X/query?q=SELECT Id, ... WHERE {field} IN (...)
            PATCH  /services/data/vXX.X/composite/sobjects            (records with their Id)
    delete  the same query, then DELETE /services/data/vXX.X/composite/sobjects?ids=...

Every write sends allOrNone=false: Salesforce answers 200 with one result per record, in request
order, and a bad record is rejected alone ("Upsert/Update/Delete Records Using sObject
Collections", REST API Developer Guide). An update never goes through upsert, which would create
the records it does not find. Every answer carries `Sforce-Limit-Info: api-usage=USED/MAX`, the
org's rolling 24-hour allocation ("Limit Info Header"); once it is used up, nothing more is sent.
The lookup's SOQL (and the matching of its answer to the records) is in soql.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal
from json.encoder import encode_basestring as encode_string
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import Field, field_validator

from ...errors import CredentialsError, DestinationError
from ..base import (
    DELIVERED,
    Batch,
    BatchFailed,
    Destination,
    DestinationSettings,
    HeaderSecret,
    KeyIdentity,
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
    untrusted,
)
from .soql import Matches, field_value, key_value, lookup_queries

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

MAX_RECORDS = 200  # sObject Collections: "The list can contain up to 200 objects."
FIRST_VERSION = 46  # the collections upsert exists from API version 46.0
API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # also keeps SOQL and URL paths well formed
USAGE = re.compile(r"(?:^|[\s;,])api-usage=(\d+)/(\d+)")  # not per-app-api-usage=...
# Per-record errors worth sending again in this run (a record locked by another transaction).
TRANSIENT = frozenset({"UNABLE_TO_LOCK_ROW"})
# A whole request refused for what every record of the sync shares (the object, the external ID
# field, a column that is no field): splitting the batch cannot help; the sync must change.
SYNC_ERRORS = frozenset({"INVALID_FIELD", "INVALID_TYPE", "NOT_FOUND"})


class SalesforceSettings(DestinationSettings):
    instance_url: str = Field(
        description="the org's URL, e.g. https://mycompany.my.salesforce.com (no /services path)"
    )
    access_token: HeaderSecret = Field(
        description="an OAuth access token (session ID), sent as Authorization: Bearer"
    )
    api_version: str = Field(default="v61.0", description="REST API version, v46.0 or later")
    batch_size: int = Field(
        default=MAX_RECORDS, ge=1, description="records per request (Salesforce takes up to 200)"
    )
    case_sensitive_external_id: bool = Field(
        default=False,
        description="the external ID field is marked case-sensitive in Salesforce's setup (a "
        "text External ID is matched ignoring case unless so marked)",
    )

    @field_validator("instance_url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        url = url.strip().rstrip("/")
        if not url.lower().startswith(("https://", "http://")):
            raise ValueError("must start with https:// (e.g. https://mycompany.my.salesforce.com)")
        http_url(url)
        if "/services/" in url + "/":
            raise ValueError("give the org's base URL, without /services/...")
        return url

    @field_validator("api_version")
    @classmethod
    def _version(cls, version: str) -> str:
        found = re.fullmatch(r"v(\d{2,3})\.\d", version)
        if not found:
            raise ValueError(f"{version!r} is not a REST API version such as 'v61.0'")
        if int(found.group(1)) < FIRST_VERSION:
            raise ValueError(
                f"upserts through sObject Collections need v{FIRST_VERSION}.0 or later"
            )
        return version


_NEXT = re.compile(r"/services/[^@\s]*")  # a query's next page: a path on the instance


class SalesforceDestination(Destination):
    contract_version = 1
    type = "salesforce"
    description = "Salesforce sObjects (REST sObject Collections), matched by an external ID field"
    settings_model = SalesforceSettings
    max_batch_size = MAX_RECORDS
    # A create is not safe to repeat: after an unknown outcome, a SOQL lookup finds out.
    idempotent_operations = frozenset({"upsert", "update", "delete"})
    reconcilable_operations = frozenset({"insert"})
    # A text External ID field is unique ignoring case unless it is marked case-sensitive
    # ("Unique: Treat 'ABC' and 'abc' as duplicate values (case insensitive)" is the default of
    # Setup's field wizard; https://help.salesforce.com/s/articleView?id=sf.custom_field_attributes.htm).
    key_identity = "case_insensitive"

    def __init__(self, name: str, settings: DestinationSettings, client: httpx.AsyncClient) -> None:
        super().__init__(name, settings, client)
        assert isinstance(settings, SalesforceSettings)
        self.sf = settings
        self.base = f"{settings.instance_url}/services/data/{settings.api_version}"
        self.usage: tuple[int, int] | None = None  # (used, allocation) from the last answer
        self._warned = False

    @classmethod
    def key_identity_for(cls, settings: DestinationSettings, sync: SyncTarget) -> KeyIdentity:
        """Exact where the destination file says the field is marked case-sensitive."""
        sensitive = getattr(settings, "case_sensitive_external_id", False)
        return "exact" if sensitive else cls.key_identity

    @classmethod
    def sync_problems(
        cls, settings: DestinationSettings, sync: SyncTarget
    ) -> list[tuple[str, str]]:
        problems = super().sync_problems(settings, sync)
        object_name, primary_key = sync.object, sync.primary_key
        if not object_name:
            problems.append(
                ("object", 'Salesforce needs the sObject to write: e.g. object = "Contact"')
            )
        elif not API_NAME.match(object_name):
            problems.append(("object", f"{object_name!r} is not a Salesforce object API name"))
        if len(primary_key) != 1:
            problems.append(
                (
                    "primary_key",
                    "Salesforce matches records by one external ID field: the primary key must "
                    'be that one column (e.g. primary_key = "Warehouse_Id__c"), not '
                    f"{len(primary_key)} columns",
                )
            )
        elif not API_NAME.match(primary_key[0]):
            problems.append(
                ("primary_key", f"{primary_key[0]!r} is not a Salesforce field API name")
            )
        return problems

    # --- sending ---------------------------------------------------------------------------

    async def send(self, batch: Batch) -> list[Result]:
        sobject, external_id = self._target(batch)
        records = batch.records
        if batch.operation == "upsert":
            url = f"{self.base}/composite/sobjects/{sobject}/{external_id}"
            response = await self._write("PATCH", url, sobject, [f for _, f in records])
            return self._results(response, len(records))
        if batch.operation == "insert":
            url = f"{self.base}/composite/sobjects"
            response = await self._write("POST", url, sobject, [f for _, f in records])
            return self._results(response, len(records), key_field=external_id)
        if batch.operation == "update":
            return await self._update(sobject, external_id, records)
        if batch.operation == "delete":
            return await self._delete(sobject, external_id, records)
        raise BatchFailed(f"Salesforce cannot {batch.operation}")

    async def reconcile(self, batch: Batch) -> list[Result | None]:
        """After an unknown outcome of a create: the records Salesforce holds with the keys
        (SOQL on the external ID field, as update looks them up) count as delivered; the
        others are created again."""
        sobject, external_id = self._target(batch)
        values = [key_value(key, fields, external_id) for key, fields in batch.records]
        found = await self._lookup(sobject, external_id, values)
        return [DELIVERED if found.get(value) else None for value in values]

    def _target(self, batch: Batch) -> tuple[str, str]:
        """The sObject and the external ID field (the sync's one primary key column)."""
        if not batch.object:
            raise DestinationError("a Salesforce sync needs an object (the sObject to write)")
        if len(batch.primary_key) != 1:
            raise DestinationError(
                f"sync {batch.sync!r} gives Salesforce {len(batch.primary_key)} primary key "
                f"columns {list(batch.primary_key)}: Salesforce needs exactly one, the external "
                "ID field it matches records by"
            )
        return batch.object, batch.primary_key[0]

    async def _update(
        self, sobject: str, field: str, records: list[tuple[str, str]]
    ) -> list[Result]:
        """Salesforce updates by record Id: look the Ids up by external ID first."""
        values = [key_value(key, fields, field) for key, fields in records]
        found = await self._lookup(sobject, field, values)
        results: list[Result] = []
        bodies, positions = [], []
        for (key, fields), value in zip(records, values, strict=True):
            ids = found.get(value)
            if not ids:
                results.append(Rejected(f"NOT_FOUND: no {sobject} has {field} = {key!r}"))
            elif len(ids) > 1:
                results.append(Rejected(_duplicates(sobject, field, key, ids)))
            else:
                results.append(DELIVERED)  # replaced by the answer below
                positions.append(len(results) - 1)
                bodies.append(_with_id(fields, ids[0]))
        if bodies:
            url = f"{self.base}/composite/sobjects"
            response = await self._write("PATCH", url, sobject, bodies)
            for position, result in zip(
                positions, self._results(response, len(bodies)), strict=True
            ):
                results[position] = result
        return results

    async def _delete(
        self, sobject: str, field: str, records: list[tuple[str, str]]
    ) -> list[Result]:
        """Keys Salesforce does not hold any more are delivered: they are gone already."""
        values = [key_value(key, fields, field) for key, fields in records]
        found = await self._lookup(sobject, field, values)
        results: list[Result] = []
        ids, positions = [], []
        for (key, _), value in zip(records, values, strict=True):
            matches = found.get(value)
            if matches and len(matches) > 1:  # deleting them all could delete what is not ours
                results.append(Rejected(_duplicates(sobject, field, key, matches)))
                continue
            results.append(DELIVERED)
            if matches:
                positions.append(len(results) - 1)
                ids.append(matches[0])
        if ids:
            params = {"ids": ",".join(ids), "allOrNone": "false"}
            response = await self._request(
                "DELETE", f"{self.base}/composite/sobjects", params=params
            )
            answers = self._results(response, len(ids), gone_is_done=True)
            for position, result in zip(positions, answers, strict=True):
                results[position] = result
        return results

    async def _write(
        self, method: str, url: str, sobject: str, records: list[str]
    ) -> httpx.Response:
        """One collection request: each record's fields (JSON text) with its attributes."""
        head = '{"attributes":{"type":' + encode_string(sobject) + "}"
        body = ",".join(
            head + ("}" if f.strip() == "{}" else "," + f.lstrip()[1:]) for f in records
        )
        content = ('{"allOrNone":false,"records":[' + body + "]}").encode()
        return await self._request(method, url, content=content)

    def _results(
        self,
        response: httpx.Response,
        count: int,
        gone_is_done: bool = False,
        key_field: str | None = None,
    ) -> list[Result]:
        """One result per record, in request order, from a collection's answer (a list of
        SaveResults, each `{"id", "success", "errors"}`); any other answer is untrusted.
        `key_field`: a DUPLICATE_VALUE on it says a record with the key exists."""
        if response.status_code != 200:
            self._refuse(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if (
            not isinstance(answer, list)
            or len(answer) != count
            or not all(isinstance(item, dict) and "success" in item for item in answer)
        ):
            told = excerpt(response.content)
            raise untrusted(self.name, f"not {count} SaveResults in order: {told}")
        return [_result(item, gone_is_done, key_field) for item in answer]

    # --- looking records up by external ID ---------------------------------------------------

    async def _lookup(self, sobject: str, field: str, values: list[Any]) -> Matches:
        matches = Matches()
        for soql in lookup_queries(sobject, field, values):
            response = await self._request("GET", f"{self.base}/query", params={"q": soql})
            while True:
                if response.status_code != 200:
                    self._refuse(response, query=soql)
                answer = json_object(response.content, parse_float=Decimal)
                records = answer.get("records") if answer is not None else None
                if not isinstance(records, list) or not all(
                    isinstance(r, dict) and r.get("Id") for r in records
                ):
                    told = excerpt(response.content)
                    raise untrusted(self.name, f"not a query's records: {told}")
                assert answer is not None
                for record in records:
                    matches.add(field_value(record, field), record["Id"])
                following = answer.get("nextRecordsUrl")
                if answer.get("done", True) or not following:
                    break
                # A path on the instance (/services/data/...): anything else would send the
                # token to another host (`@evil.example/x` after the instance's URL).
                if not isinstance(following, str) or not _NEXT.fullmatch(following):
                    raise untrusted(self.name, f"nextRecordsUrl {following!r} is no path")
                response = await self._request("GET", f"{self.sf.instance_url}{following}")
        return matches

    # --- requests, usage, errors ---------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        *,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        if self.usage and self.usage[0] >= self.usage[1]:
            raise DestinationError(self._spent_message())  # the next request would be refused
        headers = {
            "Authorization": f"Bearer {self.sf.access_token.get_secret_value()}",
            "Accept": "application/json",
        }
        if content is not None:
            headers["Content-Type"] = "application/json"
        response = await self.client.request(
            method, url, params=params, content=content, headers=headers
        )
        self._note_usage(response)
        return response

    def _note_usage(self, response: httpx.Response) -> None:
        found = USAGE.search(response.headers.get("Sforce-Limit-Info", ""))
        if not found:
            return
        used, allocation = int(found.group(1)), int(found.group(2))
        self.usage = (used, allocation)
        log.debug("%s: Salesforce API usage %d of %d (24 hours)", self.name, used, allocation)
        if not self._warned and used >= 0.9 * allocation:
            self._warned = True
            log.warning(
                "%s: the Salesforce org has used %d of its %d API requests of the last 24 hours",
                self.name,
                used,
                allocation,
            )

    async def aclose(self) -> None:
        if self.usage:
            log.info(
                "%s: Salesforce API usage now %d of the org's %d requests (24 hours)",
                self.name,
                *self.usage,
            )

    def _spent_message(self) -> str:
        usage = f" (api-usage={self.usage[0]}/{self.usage[1]})" if self.usage else ""
        return (
            f"the Salesforce org's 24-hour API request allocation is spent{usage}: nothing more "
            "is sent; what is left goes with a later run, once the org's usage over the last 24 "
            "hours falls (Setup > Company Information > API Requests, Last 24 Hours), or after "
            "Salesforce raises the allocation"
        )

    def _refuse(self, response: httpx.Response, query: str | None = None) -> NoReturn:
        """Raise what a whole-request error means (Salesforce's error bodies are
        `[{"message": ..., "errorCode": ...}]`, "Status Codes and Error Responses")."""
        status = response.status_code
        codes, text = _errors(response)
        if status == 401:
            raise CredentialsError(
                f"{text} (the access token expired or was revoked: get a new one)"
            )
        if status == 403 and "REQUEST_LIMIT_EXCEEDED" in codes:
            spent = self.usage is not None and self.usage[0] >= self.usage[1]
            if spent or "TotalRequests" in text:
                raise DestinationError(self._spent_message())
            # ConcurrentPerOrgLongTxn / ConcurrentRequests: too many long requests in the org
            # at once; it clears as they finish. Wait, slow down, send again.
            raise Throttled(text)
        if query is not None and status in (400, 404):
            raise DestinationError(
                f"Salesforce refused the lookup query {query[:200]!r}: {text} (check the sync's "
                "object and primary key, and that the key column's type is the external ID "
                "field's: a Text field needs a text column, e.g. id::varchar)"
            )
        if status == 404 or (status == 400 and codes & SYNC_ERRORS):
            raise DestinationError(
                f"Salesforce refused the request for every record: {text} (check the sync's "
                "object, its primary key, the external ID field, and the model's column names)"
            )
        if status == 400:  # e.g. a value that does not parse as its field's type: find it
            raise SplitBatch(text)
        raise_for_batch_status(response)
        raise BatchFailed(text)

    # --- check -------------------------------------------------------------------------------

    async def check(self) -> str:
        """The org's limits (GET .../limits changes nothing): the token, the instance, the API
        version, and how much of the day's API allocation is left."""
        where = f"{self.sf.instance_url} (API {self.sf.api_version})"
        response = await self._request("GET", f"{self.base}/limits")
        codes, _ = _errors(response)
        if response.status_code == 403 and "REQUEST_LIMIT_EXCEEDED" not in codes:
            # /limits needs the View Setup and Configuration permission, which an integration
            # user may lack: the resource list proves the token, its header gives the usage.
            response = await self._request("GET", f"{self.base}/")
            if response.status_code != 200:
                self._refuse(response)
            if self.usage is None:
                return f"{where}: the access token was accepted"
            used, allocation = self.usage
            left = allocation - used
        else:
            if response.status_code != 200:
                self._refuse(response)
            daily = response.json().get("DailyApiRequests") or {}
            left, allocation = int(daily.get("Remaining", 0)), int(daily.get("Max", 0))
        if left <= 0:
            raise DestinationError(self._spent_message())
        return f"{where}: api usage: {left} of {allocation} requests left today"


def _with_id(fields: str, record_id: str) -> str:
    rest = fields.lstrip()[1:]
    return '{"id":' + encode_string(record_id) + ("" if rest.strip() == "}" else ",") + rest


def _duplicates(sobject: str, field: str, key: str, ids: list[str]) -> str:
    return (
        f"DUPLICATE_EXTERNAL_ID: {len(ids)} {sobject} records have {field} = {key!r}: "
        + ", ".join(ids)
    )


def _result(item: dict[str, Any], gone_is_done: bool, key_field: str | None = None) -> Result:
    """One SaveResult/UpsertResult/DeleteResult: {"id", "success", "errors": [...]}."""
    if item.get("success") is True:
        return DELIVERED
    errors = [e for e in item.get("errors") or [] if isinstance(e, dict)]
    codes = {str(e.get("statusCode")) for e in errors}
    if gone_is_done and codes == {"ENTITY_IS_DELETED"}:
        return DELIVERED  # deleted since the lookup: what a delete wants
    text = "; ".join(_error_line(e) for e in errors) or "rejected by Salesforce"
    if codes and codes <= TRANSIENT:
        return Retry(text)
    # "duplicate value found: <field> duplicates value on record with id: <id>"
    exists = key_field is not None and any(
        e.get("statusCode") == "DUPLICATE_VALUE"
        and f"{key_field.lower()} duplicates" in str(e.get("message", "")).lower()
        for e in errors
    )
    return Rejected(text, exists=exists)


def _error_line(error: dict[str, Any]) -> str:
    """STATUS_CODE: message (fields)."""
    line = f"{error.get('statusCode') or error.get('errorCode')}: {error.get('message', '')}"
    fields = error.get("fields") or []
    return f"{line} ({', '.join(map(str, fields))})" if fields else line


def _errors(response: httpx.Response) -> tuple[set[str], str]:
    """The error codes of a whole-request error, and its text for the user."""
    try:
        body = response.json()
    except ValueError:
        return set(), response_text(response)
    items = body if isinstance(body, list) else [body]
    items = [i for i in items if isinstance(i, dict) and ("errorCode" in i or "message" in i)]
    if not items:
        return set(), response_text(response)
    codes = {str(i.get("errorCode")) for i in items}
    text = "; ".join(f"{i.get('errorCode')}: {i.get('message', '')}" for i in items)
    return codes, f"HTTP {response.status_code}: {text}"
