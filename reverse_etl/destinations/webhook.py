"""The generic webhook: one JSON POST per batch, in the wire format of CONTRACT §2."""

from __future__ import annotations

import hashlib
import hmac
import json
from json.encoder import encode_basestring as encode_string  # C; json.dumps costs more per call
from typing import TYPE_CHECKING

from pydantic import Field, SecretStr, field_validator

from .base import (
    DELIVERED,
    Batch,
    Destination,
    DestinationSettings,
    KeyIdentity,
    Rejected,
    Result,
    SyncTarget,
    raise_for_batch_status,
)

if TYPE_CHECKING:
    import httpx


class WebhookSettings(DestinationSettings):
    url: str = Field(description="where each batch is POSTed (http:// or https://)")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="sent with every request, e.g. Authorization"
    )
    key_identity: KeyIdentity = Field(
        default="exact",
        description='how the receiver tells records apart by key: "exact" text, or '
        '"case_insensitive" (then keys differing only in letter case are one record)',
    )
    signing_secret: SecretStr | None = Field(
        default=None, description="adds X-Reverse-ETL-Signature: sha256=<HMAC of the body>"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")  # the URL may hold a token
        return url


def encode_batch(batch: Batch) -> bytes:
    """The request body, built around the already-encoded fields of each record."""
    head = json.dumps(
        {"sync": batch.sync, "object": batch.object, "operation": batch.operation},
        separators=(",", ":"),
    )
    records = ",".join(
        f'{{"key":{encode_string(key)},"fields":{fields}}}' for key, fields in batch.records
    )
    return f'{head[:-1]},"records":[{records}]}}'.encode()


class WebhookDestination(Destination):
    type = "webhook"
    description = "one JSON POST per batch to any URL (the wire format of CONTRACT §2)"
    settings_model = WebhookSettings

    @classmethod
    def uses_tls(cls, settings: DestinationSettings) -> bool:
        return not getattr(settings, "url", "").startswith("http://")

    @classmethod
    def key_identity(cls, settings: DestinationSettings, sync: SyncTarget) -> KeyIdentity:
        return getattr(settings, "key_identity", "exact")  # type: ignore[no-any-return]

    async def check(self) -> str:
        """An empty batch (`"records": []`): the receiver's answer tests the URL, the headers
        and the signature without any record."""
        response = await self._post(encode_batch(Batch("reverse-etl check", None, "upsert", [])))
        raise_for_batch_status(response)
        return f"{self.settings.url}: an empty batch was accepted (HTTP {response.status_code})"  # type: ignore[attr-defined]

    async def send(self, batch: Batch) -> list[Result]:
        response = await self._post(encode_batch(batch))
        raise_for_batch_status(response)
        rejected = _rejected_keys(response.content)
        if not rejected:
            return [DELIVERED] * len(batch.records)
        return [
            Rejected(rejected[key]) if key in rejected else DELIVERED for key, _ in batch.records
        ]

    async def _post(self, body: bytes) -> httpx.Response:
        settings: WebhookSettings = self.settings  # type: ignore[assignment]
        headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = hashlib.sha256(body).hexdigest()
        if settings.signing_secret is not None:
            secret = settings.signing_secret.get_secret_value().encode()
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers["X-Reverse-ETL-Signature"] = f"sha256={digest}"
        return await self.client.post(settings.url, content=body, headers=headers)


def _rejected_keys(content: bytes) -> dict[str, str]:
    """The optional `{"errors": [{"key": ..., "error": ...}]}` of a 2xx answer."""
    if not content.strip():
        return {}
    try:
        answer = json.loads(content)
    except ValueError:
        return {}
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list):
        return {}
    rejected = {}
    for item in errors:
        if isinstance(item, dict) and "key" in item:
            rejected[str(item["key"])] = str(item.get("error") or "rejected by the destination")
    return rejected
