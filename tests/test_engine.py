"""The delivery engine with adapters that answer in ways the webhook cannot: per-record retries,
a wrong number of results. Real DuckDB state; the adapter is a small class, no HTTP. Then the
boundary the engine calls adapters through."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from reverse_etl.delivery.adapters import open_adapter, signalled
from reverse_etl.delivery.engine import Delivery
from reverse_etl.delivery.ratelimit import RateLimiter
from reverse_etl.destinations.base import (
    DELIVERED,
    Batch,
    Destination,
    DestinationError,
    DestinationSettings,
    NotSent,
    Rejected,
    Result,
    Retry,
    Retryable,
    Unreachable,
)
from reverse_etl.diff.local import SyncState
from reverse_etl.project.loader import DestinationSpec


@pytest.fixture
def state(tmp_path):
    with SyncState(
        tmp_path / "s.duckdb",
        read_only=False,
        memory_limit="256MB",
        threads=1,
        temp_dir=tmp_path / "tmp",
    ) as state:
        state.con.execute(
            "CREATE TEMP TABLE src AS SELECT range AS id, range * 2 AS v FROM range(10)"
        )
        state.bind("src", ["id"], "syncs/t.sql", 1)
        state.diff("upsert", full_resync=False, build_pending=True)
        yield state


class Scripted(Destination):
    type = "scripted"

    def __init__(self, answers):
        super().__init__(
            "dest",
            DestinationSettings(type="scripted", retry_backoff_seconds=0, max_retries=2),
            client=None,
        )
        self.answers = answers
        self.batches: list[list[str]] = []

    async def send(self, batch: Batch) -> list[Result]:
        self.batches.append([key for key, _ in batch.records])
        return self.answers(batch, len(self.batches))


def deliver(state, adapter, batch_size=5):
    ledger = []
    delivery = Delivery(
        sync="t",
        object_name=None,
        adapter=adapter,
        limiter=RateLimiter(None),
        state=state,
        on_batch=lambda rej, fail: ledger.extend(rej + fail),
    )
    outcome = asyncio.run(delivery.run(state.pending_batches(batch_size)))
    return outcome, ledger


def accepted_keys(state) -> list[str]:
    """Keys the state records as accepted (folded into the snapshot)."""
    state.fold_acknowledged(keep_fields=False)
    return sorted(k for (k,) in state.con.execute("SELECT key FROM state.snapshot").fetchall())


def test_per_record_retries_resend_only_those_records(state):
    def answers(batch, call):
        if call <= 2:  # first answer of each of the two batches: retry the odd keys
            return [Retry("busy") if int(key) % 2 else DELIVERED for key, _ in batch.records]
        return [DELIVERED] * len(batch.records)

    adapter = Scripted(answers)
    outcome, ledger = deliver(state, adapter)
    assert outcome.delivered == 10 and not ledger
    assert sorted(adapter.batches[2] + adapter.batches[3]) == ["1", "3", "5", "7", "9"]
    assert accepted_keys(state) == sorted(str(i) for i in range(10))


def test_per_record_retries_give_up_after_max_retries(state):
    adapter = Scripted(
        lambda batch, call: [
            Retry("still busy") if key == "3" else DELIVERED for key, _ in batch.records
        ]
    )
    outcome, ledger = deliver(state, adapter)
    assert outcome.delivered == 9
    assert outcome.failed == [("3", "still busy", 3)]
    assert "3" not in accepted_keys(state)


def test_rejections_are_not_acknowledged(state):
    adapter = Scripted(
        lambda batch, call: [
            Rejected("no") if key in ("2", "8") else DELIVERED for key, _ in batch.records
        ]
    )
    outcome, ledger = deliver(state, adapter)
    assert sorted(k for k, _, _ in outcome.rejected) == ["2", "8"]
    assert accepted_keys(state) == ["0", "1", "3", "4", "5", "6", "7", "9"]


def test_an_adapter_that_loses_a_result_fails_its_batch_and_stops(state):
    adapter = Scripted(lambda batch, call: [DELIVERED] * (len(batch.records) - 1))
    outcome, ledger = deliver(state, adapter, batch_size=5)
    assert outcome.delivered == 0 and len(outcome.failed) == 10
    assert "returned 4 results for 5 records" in outcome.error
    assert accepted_keys(state) == []


def test_webhook_adapter_over_mock_transport(state):
    from reverse_etl.destinations.webhook.adapter import WebhookDestination, WebhookSettings

    bodies = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(200, json={"errors": [{"key": "4", "error": "bad"}]})

    async def go():
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            settings = WebhookSettings(type="webhook", url="http://x.invalid/in")
            adapter = WebhookDestination("hook", settings, client)
            delivery = Delivery(
                sync="t",
                object_name="o",
                adapter=adapter,
                limiter=RateLimiter(None),
                state=state,
                on_batch=lambda *a: None,
            )
            return await delivery.run(state.pending_batches(100))

    outcome = asyncio.run(go())
    assert outcome.delivered == 9 and [k for k, _, _ in outcome.rejected] == ["4"]
    assert len(bodies) == 1 and bodies[0].startswith(
        b'{"sync":"t","object":"o","operation":"upsert"'
    )


def test_folding_twice_changes_nothing(state, tmp_path):
    """A crash after the fold committed but before the outbox was removed makes the next run
    fold the same records again: the snapshot must come out the same."""
    import shutil

    adapter = Scripted(lambda batch, call: [DELIVERED] * len(batch.records))
    deliver(state, adapter)
    saved = {p: tmp_path / (p.name + ".saved") for p in (state.outbox.path, state.outbox.log_path)}
    for original, copy in saved.items():
        shutil.copy(original, copy)
    state.fold_acknowledged(keep_fields=True)
    once = state.con.execute("SELECT * FROM state.snapshot ORDER BY key").fetchall()
    for original, copy in saved.items():
        shutil.copy(copy, original)
    state.fold_acknowledged(keep_fields=True)
    assert state.con.execute("SELECT * FROM state.snapshot ORDER BY key").fetchall() == once
    assert len(once) == 10
    assert not state.outbox.exists() and not state.outbox.log_path.exists()


# -- the boundary: transport failures as signals, TLS from the address ------------------------


@pytest.mark.parametrize(
    "failure, signal, text",
    [
        (httpx.ConnectError("refused"), Unreachable, "connection failed: refused"),
        (httpx.ConnectTimeout("slow"), NotSent, "timed out (ConnectTimeout: slow)"),
        (httpx.PoolTimeout(""), NotSent, "timed out (PoolTimeout)"),
        (httpx.ReadTimeout("late"), Retryable, "timed out (ReadTimeout: late)"),
        (httpx.RemoteProtocolError("dropped"), Retryable, "connection failed: dropped"),
    ],
)
def test_transport_failures_reach_the_engine_as_signals(failure, signal, text):
    """A connection never made is NotSent (a create is sent again as is); one that may have
    carried the request is a plain Retryable (a create is looked up first)."""

    async def fails() -> list[Result]:
        raise failure

    with pytest.raises(Retryable) as caught:
        asyncio.run(signalled(fails()))
    assert type(caught.value) is signal and str(caught.value) == text
    assert caught.value.__cause__ is failure


def test_a_request_that_cannot_be_written_stops_instead_of_retrying():
    """h11 refusing to write a request (an illegal header value) is the destination file's
    fault: a DestinationError, which the engine does not retry for 20 s as 'unreachable'."""

    async def fails() -> list[Result]:
        raise httpx.LocalProtocolError("Illegal header value b'Bearer '")

    with pytest.raises(DestinationError, match="cannot be sent .*Illegal header value"):
        asyncio.run(signalled(fails()))


def hook_spec(url: str) -> DestinationSpec:
    from reverse_etl.destinations.webhook.adapter import WebhookDestination, WebhookSettings

    settings = WebhookSettings(type="webhook", url=url, max_retries=0)
    return DestinationSpec("hook", "destinations/hook.toml", settings, WebhookDestination)


def test_a_client_without_tls_refuses_an_https_request():
    """An address of plain http:// URLs gets a client without TLS, which must never send an
    https:// request with its certificate unchecked."""

    async def go(url: str, target: str) -> None:
        async with open_adapter(hook_spec(url)) as adapter:
            await adapter.client.get(target)

    with pytest.raises(DestinationError, match="its client has no TLS"):
        asyncio.run(go("http://127.0.0.1:9/in", "https://127.0.0.1:9/in"))
    with pytest.raises(httpx.ConnectError):  # with TLS: sent (to a port nobody listens on)
        asyncio.run(go("https://127.0.0.1:9/in", "https://127.0.0.1:9/in"))


def test_a_client_of_https_urls_refuses_a_request_in_clear_text():
    """An address of https:// URLs only: a plain http:// request (to that host or another)
    would carry the credentials unencrypted; it is refused before it goes."""

    async def go(target: str) -> None:
        async with open_adapter(hook_spec("https://127.0.0.1:9/in")) as adapter:
            await adapter.client.post(target, headers={"Authorization": "Bearer s3cret"})

    with pytest.raises(DestinationError, match="in clear text"):
        asyncio.run(go("http://127.0.0.1:9/cleartext"))
