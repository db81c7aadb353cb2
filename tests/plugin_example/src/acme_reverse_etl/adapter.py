"""The Acme Contacts API as a reverse-etl destination: contacts upserted and deleted by id.

    POST /v1/contacts/upsert  {"contacts": [{"id", "properties": {...}}]}, at most 20
        → 200 {"results": [{"id", "status": "ok"} | {"id", "status": "error", "message"}]},
          one per contact, in order
    POST /v1/contacts/delete  {"ids": [...]}, at most 20  → 200 {"deleted": n}
    GET  /v1/account          → 200 {"account": name}: checks the API key
    Authorization: Bearer <api key>; 401 for a wrong key, 429 with Retry-After past the limit.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator

from reverse_etl.destinations import (
    DELIVERED,
    Batch,
    Destination,
    DestinationSettings,
    Rejected,
    Result,
    json_object,
    raise_for_batch_status,
    untrusted,
)

if TYPE_CHECKING:
    import httpx

MAX_CONTACTS = 20  # per request, as the API documents


class AcmeSettings(DestinationSettings):
    base_url: str = Field(description="the API's base URL, e.g. https://api.acme.example")
    api_key: SecretStr = Field(description="sent as Authorization: Bearer <api_key>")
    requests_per_second: float | None = Field(
        default=10, gt=0, description="rate limit (Acme allows 10 requests a second)"
    )

    @field_validator("base_url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return url.rstrip("/")


class AcmeDestination(Destination):
    contract_version = 1  # the adapter contract it is written for
    type = "acme"
    description = "contacts in the Acme Contacts API (an example plugin)"
    settings_model = AcmeSettings
    operations = frozenset({"upsert", "delete"})
    max_batch_size = MAX_CONTACTS

    async def check(self) -> str:
        response = await self.client.get(self._url("/v1/account"), headers=self._headers())
        raise_for_batch_status(response)  # a 401 is CredentialsError
        answer = json_object(response.content)
        if answer is None or not isinstance(answer.get("account"), str):
            raise untrusted(self.name, "GET /v1/account did not answer an account")
        return f"the API key opens the account {answer['account']!r}"

    async def send(self, batch: Batch) -> list[Result]:
        if batch.operation == "delete":
            return await self._delete(batch)
        # Each record's fields are JSON text already: the body is built around them.
        contacts = ",".join(
            f'{{"id":{json.dumps(key)},"properties":{fields}}}' for key, fields in batch.records
        )
        response = await self._post("/v1/contacts/upsert", f'{{"contacts":[{contacts}]}}')
        answer = json_object(response.content)
        results = answer.get("results") if answer is not None else None
        if not isinstance(results, list) or len(results) != len(batch.records):
            raise untrusted(self.name, "the answer does not have one result per contact")
        keys = [key for key, _ in batch.records]
        return [self._result(key, result) for key, result in zip(keys, results, strict=True)]

    def _result(self, key: str, result: Any) -> Result:
        if not isinstance(result, dict) or result.get("id") != key:
            raise untrusted(self.name, f"the result for {key!r} names another contact")
        if result.get("status") == "ok":
            return DELIVERED
        return Rejected(str(result.get("message") or "refused"))

    async def _delete(self, batch: Batch) -> list[Result]:
        ids = json.dumps([key for key, _ in batch.records])
        response = await self._post("/v1/contacts/delete", f'{{"ids":{ids}}}')
        answer = json_object(response.content)
        if answer is None or not isinstance(answer.get("deleted"), int):
            raise untrusted(self.name, "the delete's answer is not {'deleted': n}")
        return [DELIVERED] * len(batch.records)

    async def _post(self, path: str, body: str) -> httpx.Response:
        headers = {**self._headers(), "Content-Type": "application/json"}
        response = await self.client.post(self._url(path), content=body.encode(), headers=headers)
        raise_for_batch_status(response)  # 429 Throttled, 5xx Retryable, 401 CredentialsError
        return response

    def _url(self, path: str) -> str:
        return f"{self.settings.base_url}{path}"  # type: ignore[attr-defined]

    def _headers(self) -> dict[str, str]:
        key = self.settings.api_key.get_secret_value()  # type: ignore[attr-defined]
        return {"Authorization": f"Bearer {key}"}
