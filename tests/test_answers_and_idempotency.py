"""Operations that are not safe to repeat, and answers that are read, never assumed
(docs/guarantees.md). Each destination's fake is a real HTTP server on
127.0.0.1 behind a tampering proxy (tests/tamper.py) that loses or spoils answers after the
fake has applied the request, as a timeout, a dropped connection or a proxy does."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ProjectFixture
from fakes.base import running
from fakes.braze import Fake as BrazeFake
from fakes.hubspot import Fake as HubSpotFake
from fakes.project import people, write_destination
from fakes.salesforce import Fake as SalesforceFake
from tamper import Huge, Lose, Replace, TamperingProxy, always, once

from reverse_etl.delivery.engine import Delivery
from reverse_etl.delivery.ratelimit import RateLimiter
from reverse_etl.destinations.base import (
    DELIVERED,
    Batch,
    Destination,
    DestinationSettings,
    Result,
)
from reverse_etl.destinations.webhook.receiver import WebhookReceiver
from reverse_etl.diff.local import SyncState

HTML = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
SPOILED = {  # 2xx bodies that are not the vendor's answer
    "html": (HTML, "text/html"),
    "truncated json": (b'{"status": "COMPLETE", "results": [{"id": "1', "application/json"),
    "a json array": (b"[1, 2, 3]", "application/json"),
}


def run(project: ProjectFixture, sync: str = "people") -> tuple[int, dict[str, Any]]:
    outcome = project.cli("run", sync, "--json")
    [result] = outcome.json_lines()
    return outcome.exit_code, result


def ledger(project: ProjectFixture, sync: str = "people") -> dict[str, str]:
    lines = project.cli("rejected", sync, "--json").json_lines()
    return {r["key"]: f"{r['reason']}: {r['error']}" for r in lines}


def path_is(suffix: str, method: str = "POST") -> Any:
    return lambda seen: seen.method == method and seen.path.split("?")[0].endswith(suffix)


# -- HubSpot: batch/create is not safe to repeat ----------------------------------------------

HUBSPOT_MODEL = "select id as warehouse_id, email, name as firstname from people"


@pytest.fixture
def hubspot() -> Iterator[HubSpotFake]:
    yield from running(HubSpotFake())


def hubspot_insert(
    project: ProjectFixture, fake: HubSpotFake, proxy: TamperingProxy, rows: int = 5
) -> None:
    people(project, rows)
    write_destination(
        project,
        "crm",
        {**fake.destination(), "base_url": proxy.url},
        timeout_seconds=1,
        max_retries=2,
    )
    header = {"primary_key": "warehouse_id", "object": "contacts", "mode": "insert"}
    project.sync("people", {"destination": "crm", **header}, HUBSPOT_MODEL)


def hubspot_ids(fake: HubSpotFake) -> Counter[str]:
    return Counter(r.get("warehouse_id") for r in fake.records("contacts").values())


@pytest.mark.parametrize(
    "lost", [Lose(delay=1.6), Lose(delay=0)], ids=["answered after the timeout", "dropped"]
)
def test_a_hubspot_create_whose_answer_is_lost_is_looked_up_not_sent_again(project, hubspot, lost):
    with TamperingProxy(hubspot.url, [once(path_is("/batch/create"), lost)]) as proxy:
        hubspot_insert(project, hubspot, proxy)
        code, result = run(project)
        assert (code, result["status"], result["delivered"], result["rejected"]) == (
            0,
            "success",
            5,
            0,
        )
        assert hubspot_ids(hubspot) == Counter({str(i): 1 for i in range(1, 6)})
        # the create, then the lookup by idProperty; nothing created twice, nothing resent
        assert [p.rsplit("/", 1)[1] for p in proxy.paths("POST")] == ["create", "read"]
        assert ledger(project) == {}


def test_only_the_records_hubspot_does_not_hold_are_created_again(project, hubspot):
    hubspot.seed("contacts", {"warehouse_id": "1", "email": "person1@example.com"})
    hubspot.seed("contacts", {"warehouse_id": "2", "email": "person2@example.com"})
    not_applied = Lose(delay=0, forward=False)  # the connection dropped before HubSpot saw it
    with TamperingProxy(hubspot.url, [once(path_is("/batch/create"), not_applied)]) as proxy:
        hubspot_insert(project, hubspot, proxy)
        code, result = run(project)
        assert (code, result["delivered"], result["rejected"]) == (0, 5, 0)
        creates = [s for s in proxy.seen if s.path.endswith("/batch/create")]
        resent = json.loads(creates[-1].body)["inputs"]
        assert sorted(i["properties"]["warehouse_id"] for i in resent) == ["3", "4", "5"]
        assert hubspot_ids(hubspot) == Counter({str(i): 1 for i in range(1, 6)})


def test_a_409_for_a_record_this_run_created_counts_as_delivered(project, hubspot):
    """The lost create landed, but the lookup lags (it says not found): the records are
    created again and HubSpot answers 409. Those are this run's own records: delivered."""
    lagging = json.dumps(
        {
            "status": "COMPLETE",
            "results": [],
            "errors": [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects",
                    "context": {"ids": [str(i) for i in range(1, 6)]},
                }
            ],
        }
    ).encode()
    rules = [
        once(path_is("/batch/create"), Lose(delay=0)),
        once(path_is("/batch/read"), Replace(207, lagging, forward=False)),
    ]
    with TamperingProxy(hubspot.url, rules) as proxy:
        hubspot_insert(project, hubspot, proxy)
        code, result = run(project)
        assert (code, result["status"], result["delivered"], result["rejected"]) == (
            0,
            "success",
            5,
            0,
        )
        assert ledger(project) == {}
        assert hubspot_ids(hubspot) == Counter({str(i): 1 for i in range(1, 6)})


def test_a_409_for_a_record_that_was_there_before_is_still_rejected(project, hubspot):
    hubspot.seed("contacts", {"warehouse_id": "3", "email": "person3@example.com"})
    with TamperingProxy(hubspot.url) as proxy:
        hubspot_insert(project, hubspot, proxy)
        code, result = run(project)
        assert (code, result["delivered"], result["rejected"]) == (1, 4, 1)
        assert "already exists" in ledger(project)["3"]


# -- Salesforce: a create is not safe to repeat -----------------------------------------------


@pytest.fixture
def org() -> Iterator[SalesforceFake]:
    yield from running(SalesforceFake())


def salesforce_insert(
    project: ProjectFixture, org: SalesforceFake, proxy: TamperingProxy, key: str, sql: str
) -> None:
    people(project, 5)
    write_destination(
        project,
        "sf",
        {**org.destination(), "instance_url": proxy.url},
        timeout_seconds=1,
        max_retries=2,
    )
    header = {"primary_key": key, "object": "Contact", "mode": "insert"}
    project.sync("people", {"destination": "sf", **header}, sql)


def contacts(org: SalesforceFake, field: str) -> Counter[str]:
    with org.lock:
        return Counter(str(r.get(field)) for r in org.records["Contact"].values())


@pytest.mark.parametrize(
    ("key", "sql"),
    [
        (
            "Warehouse_Id__c",
            'select id::varchar as "Warehouse_Id__c", email as "Email", name as "LastName" '
            "from people",
        ),
        # Email is no unique external id: a blind resend would create every record twice.
        ("Email", 'select email as "Email", name as "LastName" from people'),
    ],
    ids=["unique external id", "no unique field"],
)
def test_a_salesforce_create_whose_answer_is_lost_is_looked_up_not_sent_again(
    project, org, key, sql
):
    with TamperingProxy(org.url, [once(path_is("/composite/sobjects"), Lose(1.6))]) as proxy:
        salesforce_insert(project, org, proxy, key, sql)
        code, result = run(project)
        assert (code, result["status"], result["delivered"], result["rejected"]) == (
            0,
            "success",
            5,
            0,
        )
        assert sorted(contacts(org, key).values()) == [1] * 5
        assert [s.method for s in proxy.seen] == ["POST", "GET"]  # the create, the SOQL lookup
        assert "FROM Contact WHERE" in str(httpx.URL(proxy.seen[1].path).params.get("q"))


def test_a_duplicate_value_for_a_record_this_run_created_counts_as_delivered(project, org):
    empty = json.dumps({"totalSize": 0, "done": True, "records": []}).encode()
    rules = [
        once(path_is("/composite/sobjects"), Lose(delay=0)),
        once(path_is("/query", "GET"), Replace(200, empty, forward=False)),  # a lagging index
    ]
    sql = 'select id::varchar as "Warehouse_Id__c", name as "LastName" from people'
    with TamperingProxy(org.url, rules) as proxy:
        salesforce_insert(project, org, proxy, "Warehouse_Id__c", sql)
        code, result = run(project)
        assert (code, result["status"], result["delivered"], result["rejected"]) == (
            0,
            "success",
            5,
            0,
        )
        assert sorted(contacts(org, "Warehouse_Id__c").values()) == [1] * 5
        posts = [s for s in proxy.seen if s.method == "POST"]
        assert len(posts) == 2  # the resend met DUPLICATE_VALUE for each record


# -- the webhook's insert relies on Idempotency-Key -------------------------------------------


def test_a_webhook_insert_is_resent_with_the_same_idempotency_key(project):
    with WebhookReceiver() as receiver:
        rules = [once(lambda s: s.method == "POST", Lose(delay=1.6))]
        with TamperingProxy(receiver.url.removesuffix("/ingest"), rules) as proxy:
            people(project, 5)
            project.webhook("hook", proxy.url + "/ingest", timeout_seconds=1, max_retries=2)
            project.sync(
                "people",
                {"destination": "hook", "primary_key": "id", "mode": "insert"},
                "select id, email from people",
            )
            code, result = run(project)
            assert (code, result["delivered"]) == (0, 5)
            keys = [s.headers["idempotency-key"] for s in proxy.seen]
            assert len(keys) == 2 and keys[0] == keys[1]  # the receiver can tell the resend


# -- an adapter that cannot look records up ---------------------------------------------------


class CreateOnly(Destination):
    """Creates, and cannot look records up: its first answer is lost as `failure` says."""

    type = "create-only"

    def __init__(self, failure: Exception) -> None:
        settings = DestinationSettings(type="create-only", retry_backoff_seconds=0, max_retries=3)
        super().__init__("dest", settings, client=None)  # type: ignore[arg-type]
        self.failure = failure
        self.calls = 0

    async def send(self, batch: Batch) -> list[Result]:
        self.calls += 1
        if self.calls == 1:
            raise self.failure
        return [DELIVERED] * len(batch.records)


@pytest.fixture
def insert_state(tmp_path):
    with SyncState(
        tmp_path / "s.duckdb",
        read_only=False,
        memory_limit="256MB",
        threads=1,
        temp_dir=tmp_path / "tmp",
    ) as state:
        state.con.execute("CREATE TEMP TABLE src AS SELECT range AS id FROM range(4)")
        state.bind("src", ["id"], "syncs/t.sql", 1)
        state.diff("insert", full_resync=False, build_pending=True)
        yield state


def deliver(state: SyncState, adapter: Destination) -> Any:
    delivery = Delivery(
        sync="t",
        object_name=None,
        adapter=adapter,
        limiter=RateLimiter(None),
        state=state,
        on_batch=lambda rejected, failed: None,
    )
    return asyncio.run(delivery.run(state.pending_batches(10)))


def test_an_unknown_outcome_that_cannot_be_looked_up_fails_and_is_never_resent(insert_state):
    adapter = CreateOnly(httpx.ReadTimeout("timed out"))
    outcome = deliver(insert_state, adapter)
    assert adapter.calls == 1  # never sent again blindly
    assert outcome.delivered == 0 and len(outcome.failed) == 4
    assert all("outcome unknown" in error for _, error, _ in outcome.failed)


def test_a_request_that_never_left_is_simply_sent_again(insert_state):
    adapter = CreateOnly(httpx.ConnectError("refused"))
    outcome = deliver(insert_state, adapter)
    assert (adapter.calls, outcome.delivered, outcome.failed) == (2, 4, [])


# -- answers are read, never assumed ----------------------------------------------------------


def webhook_project(project: ProjectFixture, url: str, rows: int = 5) -> None:
    people(project, rows)
    project.webhook("hook", url, max_retries=1, retry_backoff_seconds=0.01)
    project.sync("people", {"destination": "hook", "primary_key": "id"}, "select * from people")


@pytest.mark.parametrize("body", [*SPOILED, "errors not a list", "an error without key"])
def test_a_webhook_2xx_that_is_not_the_wire_format_fails_the_batch(project, body):
    content, kind = SPOILED.get(body) or (
        (b'{"errors": "bad"}', "application/json")
        if body == "errors not a list"
        else (b'{"errors": [{"error": "bad"}]}', "application/json")
    )
    with WebhookReceiver() as receiver:
        rule = always(lambda s: True, Replace(200, content, kind))
        with TamperingProxy(receiver.url.removesuffix("/ingest"), [rule]) as proxy:
            webhook_project(project, proxy.url + "/ingest")
            code, result = run(project)
            assert (code, result["delivered"], result["failed"]) == (1, 0, 5)
            assert all("cannot be trusted" in e for e in ledger(project).values())
            proxy.rules.clear()
            code, result = run(project)  # the answer is fine again: all five are sent
            assert (code, result["delivered"]) == (0, 5)


def test_webhook_errors_match_keys_by_value(project):
    """A composite key echoed as ["pro", "eu"] (with spaces) and a key 3 given as a number
    each reject their record; the others are delivered."""
    project.warehouse("""
        create or replace table plans as
        select * from (values (1, 'pro', 'eu'), (2, 'pro', 'us'), (3, 'free', 'eu'))
            t(n, plan, region)""")
    answer = json.dumps(
        {"errors": [{"key": ["pro", "eu"], "error": "no"}, {"key": '["free", "eu"]', "error": "x"}]}
    ).encode()
    with WebhookReceiver() as receiver:
        rule = always(lambda s: True, Replace(200, answer))
        with TamperingProxy(receiver.url.removesuffix("/ingest"), [rule]) as proxy:
            project.webhook("hook", proxy.url + "/ingest", max_retries=0)
            project.sync(
                "plans",
                {"destination": "hook", "primary_key": ["plan", "region"]},
                "select plan, region, n from plans",
            )
            code, result = run(project, "plans")
            assert (code, result["delivered"], result["rejected"]) == (1, 1, 2)
            assert set(ledger(project, "plans")) == {'["pro","eu"]', '["free","eu"]'}


def test_a_numeric_key_echoed_as_a_number_matches(project):
    answer = json.dumps({"errors": [{"key": 3, "error": "invalid email"}]}).encode()
    with WebhookReceiver() as receiver:
        rule = always(lambda s: True, Replace(200, answer))
        with TamperingProxy(receiver.url.removesuffix("/ingest"), [rule]) as proxy:
            webhook_project(project, proxy.url + "/ingest")
            code, result = run(project)
            assert (code, result["delivered"], result["rejected"]) == (1, 4, 1)
            assert ledger(project) == {"3": "rejected: invalid email"}


def test_a_webhook_error_naming_no_record_fails_the_batch(project, caplog):
    answer = json.dumps({"errors": [{"key": "99", "error": "invalid email"}]}).encode()
    with WebhookReceiver() as receiver:
        rule = always(lambda s: True, Replace(200, answer))
        with TamperingProxy(receiver.url.removesuffix("/ingest"), [rule]) as proxy:
            webhook_project(project, proxy.url + "/ingest")
            with caplog.at_level("WARNING", logger="reverse_etl"):
                code, result = run(project)
            assert (code, result["delivered"], result["failed"]) == (1, 0, 5)
            assert all("'99', which is not in the batch" in e for e in ledger(project).values())
            assert any("cannot be trusted" in r.getMessage() for r in caplog.records)


def test_keys_are_one_value_however_they_are_written():
    from reverse_etl.destinations.base import key_value

    assert key_value(42) == key_value("42")
    assert (
        key_value('["pro", "eu"]') == key_value('["pro","eu"]') == key_value(["pro", "eu"])
    )
    assert key_value('[7,"eu"]') == key_value([7, "eu"])
    assert key_value(1.5) == key_value(1.50) and key_value("42") != key_value("43")


@pytest.mark.parametrize("body", [*SPOILED, "no results", "fewer results"])
def test_a_hubspot_2xx_that_is_not_hubspots_answer_fails_the_batch(project, hubspot, body):
    content, kind = SPOILED.get(body) or (
        (b'{"status": "COMPLETE"}', "application/json")
        if body == "no results"
        else (b'{"status": "COMPLETE", "results": [{"id": "1"}]}', "application/json")
    )
    with TamperingProxy(
        hubspot.url, [always(path_is("/batch/upsert"), Replace(200, content, kind))]
    ) as proxy:
        people(project, 5)
        write_destination(
            project, "crm", {**hubspot.destination(), "base_url": proxy.url}, max_retries=1
        )
        header = {"primary_key": "warehouse_id", "object": "contacts"}
        project.sync("people", {"destination": "crm", **header}, HUBSPOT_MODEL)
        code, result = run(project)
        assert (code, result["delivered"], result["failed"]) == (1, 0, 5)
        assert all("cannot be trusted" in e for e in ledger(project).values())


def test_a_hubspot_error_naming_no_record_fails_the_batch(project, hubspot):
    answer = json.dumps(
        {
            "status": "COMPLETE",
            "results": [],
            "errors": [
                {"category": "VALIDATION_ERROR", "message": "x", "context": {"ids": ["77"]}}
            ],
        }
    ).encode()
    with TamperingProxy(
        hubspot.url, [always(path_is("/batch/upsert"), Replace(207, answer))]
    ) as proxy:
        people(project, 3)
        write_destination(
            project, "crm", {**hubspot.destination(), "base_url": proxy.url}, max_retries=0
        )
        header = {"primary_key": "warehouse_id", "object": "contacts"}
        project.sync("people", {"destination": "crm", **header}, HUBSPOT_MODEL)
        code, result = run(project)
        assert (code, result["delivered"], result["failed"]) == (1, 0, 3)
        assert all("names no record" in e for e in ledger(project).values())


@pytest.fixture
def braze() -> Iterator[BrazeFake]:
    yield from running(BrazeFake())


@pytest.mark.parametrize("body", [*SPOILED, "an error for no object"])
def test_a_braze_2xx_that_is_not_brazes_answer_fails_the_batch(project, braze, body):
    content, kind = SPOILED.get(body) or (
        json.dumps(
            {
                "message": "success",
                "errors": [{"type": "x", "input_array": "attributes", "index": 9}],
            }
        ).encode(),
        "application/json",
    )
    with TamperingProxy(
        braze.url, [always(path_is("/users/track"), Replace(201, content, kind))]
    ) as proxy:
        people(project, 3)
        write_destination(
            project, "braze", {**braze.destination(), "rest_endpoint": proxy.url}, max_retries=0
        )
        project.sync("people", {"destination": "braze", **braze.sync_header()}, braze.model_sql())
        code, result = run(project)
        assert (code, result["delivered"], result["failed"]) == (1, 0, 3)
        assert all("cannot be trusted" in e for e in ledger(project).values())


@pytest.mark.parametrize("body", [*SPOILED, "a result without success"])
def test_a_salesforce_200_that_is_not_its_answer_fails_the_batch(project, org, body):
    content, kind = SPOILED.get(body) or (b'[{"id": "1"}, {}, {}]', "application/json")
    rule = always(
        path_is("/composite/sobjects/Contact/Warehouse_Id__c", "PATCH"), Replace(200, content, kind)
    )
    with TamperingProxy(org.url, [rule]) as proxy:
        people(project, 3)
        write_destination(
            project, "sf", {**org.destination(), "instance_url": proxy.url}, max_retries=0
        )
        project.sync("people", {"destination": "sf", **org.sync_header()}, org.model_sql())
        code, result = run(project)
        assert (code, result["delivered"], result["failed"]) == (1, 0, 3)
        assert all("cannot be trusted" in e for e in ledger(project).values())


@pytest.mark.parametrize("announce", [False, True], ids=["chunked", "content-length"])
def test_an_answer_too_large_is_not_read_and_fails_its_batch(project, announce):
    size = 64 * 1024 * 1024
    with WebhookReceiver() as receiver:
        rule = always(lambda s: True, Huge(size, announce=announce))
        with TamperingProxy(receiver.url.removesuffix("/ingest"), [rule]) as proxy:
            webhook_project(project, proxy.url + "/ingest")
            code, result = run(project)
            assert (code, result["delivered"], result["failed"]) == (1, 0, 5)
            told = "bytes announced" if announce else "more than 8,388,608 bytes"
            assert all("too large" in e and told in e for e in ledger(project).values())
            assert proxy.written < size // 2  # the client stopped reading early


# -- PostgreSQL: an insert whose answer is lost -----------------------------------------------


class AnswerDroppingProxy:
    """A TCP proxy to PostgreSQL that, once, lets a statement containing `marker` run and
    commit (the server's ReadyForQuery), then closes the connection without passing the
    server's answer on: the client cannot know the insert happened."""

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        self.upstream, self.marker = (host, port), marker
        self.fired = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            armed = threading.Event()
            threading.Thread(target=self._up, args=(client, server, armed), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client, armed), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket, armed: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(1 << 16):
                if self.marker in data and not self.fired.is_set():
                    armed.set()
                server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket, armed: threading.Event) -> None:
        held = b""
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                if not armed.is_set():
                    client.sendall(data)
                    continue
                held += data
                if b"Z\x00\x00\x00\x05" in held:  # ReadyForQuery: the insert is committed
                    self.fired.set()
                    break
        for sock in (client, server):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def pg() -> Iterator[Any]:
    from fakes.postgres import Fake as PostgresFake

    yield from running(PostgresFake())


def test_a_postgres_insert_whose_answer_is_lost_is_looked_up_not_rejected(project, pg):
    import psycopg

    params = psycopg.conninfo.conninfo_to_dict(pg.dsn)
    proxy = AnswerDroppingProxy(
        str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432), b"DO NOTHING"
    )
    try:
        dsn = psycopg.conninfo.make_conninfo(pg.dsn, host="127.0.0.1", port=str(proxy.port))
        people(project, 5)
        write_destination(project, "db", {**pg.destination(), "dsn": dsn}, max_retries=2)
        header = {"destination": "db", "primary_key": "id", "mode": "insert"}
        project.sync("people", header, "select id, email, name from people")
        code, result = run(project)
        assert proxy.fired.is_set()  # the first insert committed and its answer was lost
        assert (code, result["status"], result["delivered"], result["rejected"]) == (
            0,
            "success",
            5,
            0,
        )
        assert pg.batch_sizes() == [5]  # written once: the lookup found them all
    finally:
        proxy.close()


def test_postgres_reconcile_finds_the_keys_the_table_holds(pg):
    from reverse_etl.destinations.postgres.adapter import PostgresDestination, PostgresSettings

    pg.query("INSERT INTO {schema}.people VALUES (2, 'two@x.io', 'Two'), (4, 'four@x.io', 'Four')")
    settings = PostgresSettings(**pg.destination())
    records = [(str(i), json.dumps({"id": i, "email": f"p{i}@x.io"})) for i in range(1, 6)]

    async def go() -> list[Result | None]:
        adapter = PostgresDestination("db", settings, None)
        try:
            return await adapter.reconcile(Batch("people", None, "insert", records, ("id",)))
        finally:
            await adapter.aclose()

    assert asyncio.run(go()) == [None, DELIVERED, None, DELIVERED, None]


@pytest.mark.parametrize("type_name", ["webhook", "hubspot", "salesforce", "braze", "postgres"])
def test_every_builtin_operation_is_safe_to_repeat_or_can_be_looked_up(type_name):
    from reverse_etl.destinations.registry import adapter_class

    adapter = adapter_class(type_name)
    unsafe = adapter.operations - adapter.idempotent_operations
    assert unsafe <= adapter.reconcilable_operations
    assert all(adapter.reconcile is not Destination.reconcile for _ in unsafe)
    assert "insert" not in adapter.idempotent_operations or type_name == "webhook"
