"""The generic webhook: one JSON POST per batch, in the webhook wire format
(docs/wire-format.md).

Every operation counts as idempotent, `insert` included: that relies on the receiver honouring
the `Idempotency-Key` header: a request whose key it has already applied must not be applied
again. The key is the same on every retry of a batch within a run; an `insert`'s is the SHA-256
of its body alone (the same create, whichever run sends it), the others' also hash the run's
id (a value that comes back in a later run is a new write, not a repeat)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from decimal import Decimal
from json.encoder import encode_basestring as encode_string  # C; json.dumps costs more per call
from typing import TYPE_CHECKING, Any

from pydantic import Field, SecretStr, field_validator

from ..base import (
    DELIVERED,
    ERROR_TEXT_LIMIT,
    OPERATIONS,
    Batch,
    Destination,
    DestinationSettings,
    KeyIdentity,
    KeyMatch,
    Rejected,
    Result,
    SyncTarget,
    excerpt,
    http_url,
    json_object,
    raise_for_batch_status,
    untrusted,
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
        return http_url(url)

    @field_validator("headers")
    @classmethod
    def _header_lines(cls, headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name (letters, digits, -, no spaces)")
            text = value.get_secret_value()
            if any(c in text for c in "\r\n\0"):
                raise ValueError(f"the value of {name!r} has a line break: one line only")
            if not all(c == "\t" or " " <= c <= "~" for c in text):  # what HTTP clients send
                raise ValueError(
                    f"the value of {name!r} holds a character other than printable ASCII: "
                    "percent-encode or base64-encode it"
                )
            if text != text.strip(" \t"):  # HTTP forbids it (RFC 9110, 5.5): no request is sent
                raise ValueError(
                    f"the value of {name!r} starts or ends with a space (is a ${{VAR}} in it "
                    "empty?)"
                )
        return headers


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a header name (RFC 9110, 5.6.2)


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
    contract_version = 1
    type = "webhook"
    description = "one JSON POST per batch to any URL (docs/wire-format.md)"
    settings_model = WebhookSettings
    # insert too: a retry carries the same Idempotency-Key, which the receiver must honour.
    idempotent_operations = frozenset(OPERATIONS)

    @classmethod
    def key_identity_for(cls, settings: DestinationSettings, sync: SyncTarget) -> KeyIdentity:
        """The receiver's rule, as the destination file's `key_identity` states it."""
        return getattr(settings, "key_identity", cls.key_identity)  # type: ignore[no-any-return]

    async def check(self) -> str:
        """An empty batch (`"records": []`): the receiver's answer tests the URL, the headers
        and the signature without any record."""
        response = await self._post(encode_batch(Batch("reverse-etl check", None, "upsert", [])))
        raise_for_batch_status(response)
        return f"{self.settings.url}: an empty batch was accepted (HTTP {response.status_code})"  # type: ignore[attr-defined]

    async def send(self, batch: Batch) -> list[Result]:
        response = await self._post(encode_batch(batch), batch.operation, batch.run_id)
        raise_for_batch_status(response)
        errors = _answer_errors(response)
        if isinstance(errors, str):
            raise untrusted(self.name, errors)
        if not errors:
            return [DELIVERED] * len(batch.records)
        match = KeyMatch([key for key, _ in batch.records])
        rejected: dict[int, str] = {}
        for key, error in errors:
            position = match.find(key)
            if position is None:
                raise untrusted(
                    self.name, f"its errors name the key {key!r}, which is not in the batch"
                )
            rejected[position] = error
        return [
            Rejected(rejected[i]) if i in rejected else DELIVERED for i in range(len(batch.records))
        ]

    async def _post(
        self, body: bytes, operation: str = "upsert", run_id: str = ""
    ) -> httpx.Response:
        settings: WebhookSettings = self.settings  # type: ignore[assignment]
        headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = idempotency_key(body, operation, run_id)
        if settings.signing_secret is not None:
            secret = settings.signing_secret.get_secret_value().encode()
            digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
            headers["X-Reverse-ETL-Signature"] = f"sha256={digest}"
        return await self.client.post(settings.url, content=body, headers=headers)


def _answer_errors(response: httpx.Response) -> list[tuple[Any, str]] | str:
    """The (key, error) pairs of a 2xx answer's optional `{"errors": [{"key", "error"}]}`, or
    why the answer is not the wire format's (an empty body, or a JSON object, is)."""
    content = response.content
    if not content.strip():
        return []
    answer = json_object(content, parse_float=Decimal)
    if answer is None:
        return f"HTTP {response.status_code}, not a JSON object: {excerpt(content)}"
    errors = answer.get("errors")
    if errors is None:
        return []
    if not isinstance(errors, list):
        return f"`errors` is not a list: {excerpt(content)}"
    pairs = []
    for item in errors:
        if not isinstance(item, dict) or item.get("key") is None:
            return f"an `errors` entry without a key: {item!r}"[:ERROR_TEXT_LIMIT]
        pairs.append((item["key"], str(item.get("error") or "rejected by the destination")))
    return pairs


def idempotency_key(body: bytes, operation: str, run_id: str) -> str:
    """The `Idempotency-Key` of a request: the same for every retry of one batch in one run.
    An insert's is its body's SHA-256 alone, so that a create sent again by a later run (its
    answer lost) is known for the same create; a write or a delete also hashes the run, since
    the same values sent again later (a value that changed and came back) are a new write."""
    scope = b"" if operation == "insert" else run_id.encode() + b"\n"
    return hashlib.sha256(scope + body).hexdigest()
