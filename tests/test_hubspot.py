"""The HubSpot adapter against its fake (tests/fakes/hubspot.py): what the contract suite does
not cover. The request shapes of each operation, values as HubSpot property strings, 207
partial failures, inserts of existing records and updates of missing ones, deletes through
batch read and archive, the 429s of the rolling window and of the daily quota, errors that
concern every record, `check`, and what validation refuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ProjectFixture
from fakes.base import running
from fakes.hubspot import TOKEN, Fake
from fakes.project import people, write_destination

from reverse_etl.delivery.ratelimit import Window
from reverse_etl.destinations.base import Batch, Throttled
from reverse_etl.destinations.hubspot.adapter import HubSpotDestination, HubSpotSettings
from reverse_etl.errors import DestinationError

MODEL = "select id as warehouse_id, email, name as firstname from people"
HEADER = {"primary_key": "warehouse_id", "object": "contacts"}


@pytest.fixture
def hubspot() -> Iterator[Fake]:
    yield from running(Fake())


def setup(
    project: ProjectFixture,
    fake: Fake,
    *,
    rows: int = 5,
    sql: str = MODEL,
    header: dict[str, Any] | None = None,
    **settings: Any,
) -> ProjectFixture:
    people(project, rows)
    write_destination(project, "crm", fake.destination(), **settings)
    project.sync("people", {"destination": "crm", **(header or HEADER)}, sql)
    return project


def run(project: ProjectFixture, *args: str) -> tuple[int, dict[str, Any]]:
    outcome = project.cli("run", "people", "--json", *args)
    [result] = outcome.json_lines()
    return outcome.exit_code, result


def rejected(project: ProjectFixture) -> dict[str, str]:
    return {r["key"]: r["error"] for r in project.cli("rejected", "people", "--json").json_lines()}


def posts(fake: Fake, action: str) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["path"].endswith(f"/batch/{action}")]


# -- what goes on the wire --------------------------------------------------------------------


def test_upsert_sends_every_column_as_a_property_string_by_the_id_property(project, hubspot):
    setup(project, hubspot, rows=2)
    project.warehouse("""
        create or replace table extra as
        select 1 as id, 1.50::decimal(10, 2) as score, true as active, ['gold', 'eu'] as tags,
               null::varchar as notes
        union all select 2, 20.00, false, [], 'vip'""")
    project.sync(
        "people",
        {"destination": "crm", **HEADER},
        "select p.id as warehouse_id, p.email, p.name as firstname, score, active, tags, notes "
        "from people p join extra using (id)",
    )
    code, result = run(project)
    assert code == 0 and result["delivered"] == 2, result
    [request] = posts(hubspot, "upsert")
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["content-type"] == "application/json"
    by_id = {i["id"]: i for i in request["body"]["inputs"]}
    assert by_id["1"] == {
        "idProperty": "warehouse_id",
        "id": "1",
        "properties": {
            "warehouse_id": "1",
            "email": "person1@example.com",
            "firstname": "Person 1",
            "score": "1.50",  # exactly as the warehouse has it, as HubSpot returns numbers
            "active": "true",
            "tags": "gold;eu",  # a multiple checkboxes property's value
            "notes": "",  # NULL clears the property
        },
    }
    assert by_id["2"]["properties"]["tags"] == "" and by_id["2"]["properties"]["notes"] == "vip"
    assert hubspot.stored()["1"]["score"] == "1.50"


def test_insert_creates_records_and_rejects_one_that_exists_alone(project, hubspot):
    existing = hubspot.seed("contacts", {"warehouse_id": "3", "email": "old3@example.com"})
    setup(project, hubspot, header={**HEADER, "mode": "insert"})
    project.warehouse("alter table people add column notes varchar")  # NULL: not sent on create
    project.sync(
        "people",
        {"destination": "crm", **HEADER, "mode": "insert"},
        MODEL.replace(" from", ", notes from"),
    )
    code, result = run(project)
    assert code == 1 and result["delivered"] == 4 and result["rejected"] == 1, result
    assert rejected(project) == {
        "3": f"HubSpot 409 CONFLICT: Contact already exists. Existing ID: {existing}"
    }
    first = posts(hubspot, "create")[0]["body"]["inputs"]
    assert {"properties": {"warehouse_id": "1", "email": "person1@example.com",
                           "firstname": "Person 1"}} in first  # fmt: skip
    stored = hubspot.stored()
    assert sorted(stored) == ["1", "2", "3", "4", "5"] and len(hubspot.records("contacts")) == 5
    assert stored["3"]["email"] == "old3@example.com"  # the existing record was left alone


def test_update_changes_existing_records_and_rejects_missing_ones_without_creating(
    project, hubspot
):
    for i in (2, 4):
        hubspot.seed("contacts", {"warehouse_id": str(i), "firstname": "Old"})
    setup(project, hubspot, header={**HEADER, "mode": "update"})
    code, result = run(project)
    assert code == 1 and result["delivered"] == 2 and result["rejected"] == 3, result
    errors = rejected(project)
    assert sorted(errors) == ["1", "3", "5"]
    assert errors["3"].startswith("not found: no contacts record has warehouse_id = '3'")
    assert "OBJECT_NOT_FOUND" in errors["3"]
    [request] = posts(hubspot, "update")
    assert {i["idProperty"] for i in request["body"]["inputs"]} == {"warehouse_id"}
    assert sorted(hubspot.stored()) == ["2", "4"]  # nothing created
    assert hubspot.stored()["4"]["firstname"] == "Person 4"


def test_a_207_answer_rejects_the_records_it_names_and_delivers_the_rest(project, hubspot):
    hubspot.fail_ids["4"] = ("VALIDATION_ERROR", "Record 4 is locked by a workflow")
    setup(project, hubspot)
    code, result = run(project)
    assert code == 1 and result["delivered"] == 4 and result["rejected"] == 1, result
    assert rejected(project) == {"4": "HubSpot VALIDATION_ERROR: Record 4 is locked by a workflow"}
    assert len(posts(hubspot, "upsert")) == 1  # one request: no splitting for a 207
    assert sorted(hubspot.stored()) == ["1", "2", "3", "5"]


def test_a_unique_value_held_by_another_record_rejects_that_record_alone(project, hubspot):
    setup(project, hubspot, rows=6)
    project.warehouse("update people set email = 'person2@example.com' where id = 4")
    code, result = run(project)
    assert code == 1 and result["delivered"] == 5 and result["rejected"] == 1, result
    [(key, error)] = rejected(project).items()
    assert key in ("2", "4"), key
    assert error.startswith("HubSpot 409 CONFLICT: Contact already exists. Existing ID: ")
    emails = [props["email"] for props in hubspot.records("contacts").values()]
    assert len(emails) == 5 and len(set(emails)) == 5


# -- deletes ----------------------------------------------------------------------------------


def test_mirror_deletes_read_hubspot_ids_by_the_id_property_then_archive_them(project, hubspot):
    setup(project, hubspot, rows=6, header={**HEADER, "mode": "mirror"})
    run(project)
    ids = {props["warehouse_id"]: record_id for record_id, props in
           hubspot.records("contacts").items()}  # fmt: skip
    hubspot.objects["contacts"].records.pop(ids["3"])  # someone deleted 3 in HubSpot meanwhile
    project.warehouse("delete from people where id in (2, 3)")
    code, result = run(project)
    assert code == 0 and result["status"] == "success" and result["removed"] == 2, result
    [read] = posts(hubspot, "read")
    assert sorted(read["body"].pop("inputs"), key=str) == [{"id": "2"}, {"id": "3"}]
    assert read["body"] == {"idProperty": "warehouse_id", "properties": ["warehouse_id"]}
    [archive] = posts(hubspot, "archive")
    assert archive["body"] == {"inputs": [{"id": ids["2"]}]}  # 3 was already gone: delivered
    assert sorted(hubspot.stored()) == ["1", "4", "5", "6"]


@pytest.fixture
def ten_per_second() -> Iterator[Fake]:
    yield from running(Fake(window_limit=10, window_ms=1000))


def test_deletes_count_both_their_requests_against_the_rate_limit(project, ten_per_second):
    """A delete is two requests (batch read, then archive): the limiter takes two slots, so a
    limit set to HubSpot's own holds, deletes included (counting one, they went twice as fast
    and met 429s). One request in flight: a second then holds the 9 the engine starts in it
    (5% under 10) and at most the one already in flight, however late a loaded machine stamps
    a request."""
    fake = ten_per_second
    header = {**HEADER, "mode": "mirror", "max_delete_fraction": 1}
    setup(
        project,
        fake,
        rows=24,
        header=header,
        batch_size=2,
        requests_per_second=10,
        max_concurrency=1,
    )
    run(project)
    project.warehouse("delete from people where id > 4")
    code, result = run(project)
    assert code == 0 and result["removed"] == 20 and result["delivered"] == 20, result
    assert sorted(fake.stored()) == ["1", "2", "3", "4"]
    assert len(posts(fake, "read")) == 10 and len(posts(fake, "archive")) == 10
    assert fake.throttled() == 0, "the rolling limit was exceeded"


@pytest.fixture
def five_per_second() -> Iterator[Fake]:
    yield from running(Fake(window_limit=5, window_ms=1000))


def test_hubspots_remaining_header_slows_the_engine_before_a_429(project, five_per_second):
    """Configured for HubSpot's usual 100 per 10 s, against an app limited to 5 per second:
    X-HubSpot-RateLimit-Remaining and -Interval-Milliseconds pace the requests to what is
    left, so none is refused."""
    fake = five_per_second
    setup(project, fake, rows=16, batch_size=1, max_concurrency=1)
    code, result = run(project)
    assert code == 0 and result["delivered"] == 16, result
    assert fake.throttled() == 0, "HubSpot's headers were not heeded"


def test_email_as_the_key_finds_records_hubspot_keeps_in_lower_case(project, hubspot):
    setup(
        project,
        hubspot,
        sql="select upper(email) as email, name as firstname from people",
        header={"primary_key": "email", "object": "contacts", "mode": "mirror"},
    )
    code, result = run(project)
    assert code == 0 and result["delivered"] == 5, result
    assert posts(hubspot, "upsert")[0]["body"]["inputs"][0]["idProperty"] == "email"
    project.warehouse("delete from people where id = 2")
    code, result = run(project)
    assert code == 0 and result["removed"] == 1, result
    emails = {props["email"] for props in hubspot.records("contacts").values()}
    assert emails == {f"person{i}@example.com" for i in (1, 3, 4, 5)}


# -- errors that concern every record ---------------------------------------------------------


def test_an_unknown_property_stops_the_run_at_once_naming_it(project, hubspot):
    setup(project, hubspot, rows=20, sql=MODEL.replace(" from", ", 'blue' as colour from"))
    code, result = run(project)
    assert code == 2 and result["status"] == "error", result
    assert 'Property "colour" does not exist (PROPERTY_DOESNT_EXIST)' in result["error"]
    assert "create the property" in result["error"]
    assert len(hubspot.requests) == 1 and hubspot.stored() == {}  # no splitting record by record


def test_a_primary_key_that_is_not_a_unique_property_stops_the_run(project, hubspot):
    setup(project, hubspot, header={"primary_key": "firstname", "object": "contacts"})
    code, result = run(project)
    assert code == 2 and result["status"] == "error", result
    assert "Unable to perform update/upsert by non-unique 0-1 property" in result["error"]
    assert "property with unique values" in result["error"]
    assert len(hubspot.requests) == 1


def test_an_unknown_object_type_stops_the_run(project, hubspot):
    setup(project, hubspot, header={**HEADER, "object": "widgets"})
    code, result = run(project)
    assert code == 2 and "Unable to infer object type from: widgets" in result["error"], result


# -- rate limits ------------------------------------------------------------------------------


async def _send_one(fake: Fake) -> None:
    settings = HubSpotSettings(type="hubspot", access_token=TOKEN, base_url=fake.url)
    async with httpx.AsyncClient() as client:
        adapter = HubSpotDestination("crm", settings, client)
        fields = json.dumps({"warehouse_id": 1, "email": "a@example.com"})
        batch = Batch(
            "people", "contacts", "upsert", [("1", fields)], primary_key=("warehouse_id",)
        )
        await adapter.send(batch)


def test_a_ten_secondly_429_waits_for_a_slot_of_the_rolling_window(hubspot):
    hubspot.throttle(1)
    with pytest.raises(Throttled) as caught:
        asyncio.run(_send_one(hubspot))
    assert "You have reached your ten_secondly_rolling limit." in str(caught.value)
    # X-HubSpot-RateLimit-Interval-Milliseconds 10000 / X-HubSpot-RateLimit-Max 100
    assert caught.value.retry_after == pytest.approx(0.1)
    asyncio.run(_send_one(hubspot))  # the next request goes through
    assert hubspot.stored()["1"]["email"] == "a@example.com"


def test_ten_secondly_429s_are_waited_out_and_everything_is_delivered(project, hubspot):
    """HubSpot answering 429 TEN_SECONDLY_ROLLING (its body and headers) twice: the batches
    wait and go again. (A limit HubSpot's headers announce is usually kept without any 429:
    see test_hubspots_remaining_header_slows_the_engine_before_a_429.)"""
    setup(project, hubspot, rows=24, batch_size=4, max_concurrency=1)
    hubspot.throttle(2)
    code, result = run(project)
    assert code == 0 and result["delivered"] == 24, result
    assert hubspot.throttled() == 2 and len(hubspot.stored()) == 24
    statuses = [r["status"] for r in hubspot.requests]
    assert statuses.count(429) == 2 and statuses.count(200) == 6


def test_a_spent_daily_limit_stops_the_run_until_it_resets(project):
    fake = Fake(daily_limit=2)
    fake.start()
    try:
        setup(project, fake, rows=50, batch_size=10, max_concurrency=1)
        code, result = run(project)
        assert code == 2 and result["status"] == "error", result
        assert "HubSpot's daily API limit of 2 requests is spent" in result["error"]
        assert "until the daily limit resets" in result["error"]
        assert result["delivered"] == 20 and result["failed"] == 30, result
        assert [r["status"] for r in fake.requests] == [200, 200, 429]  # no retry after it
    finally:
        fake.stop()


def test_default_limits_are_hubspots_for_free_and_starter_accounts():
    assert HubSpotDestination.max_batch_size == 100
    assert HubSpotDestination.default_rate_limits() == [Window(100, 10.0), Window(250_000, 86_400)]


def test_the_fake_refuses_more_than_100_inputs_as_hubspot_does(hubspot):
    inputs = [{"properties": {"email": f"p{i}@example.com"}} for i in range(101)]
    response = httpx.post(
        f"{hubspot.url}/crm/v3/objects/contacts/batch/create",
        json={"inputs": inputs},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 400 and response.json()["category"] == "VALIDATION_ERROR"
    assert "maximum number of inputs" in response.json()["message"]
    assert hubspot.records("contacts") == {}


# -- check and validation ---------------------------------------------------------------------


def test_check_reads_the_account_details_and_reports_hubspots_refusal(project, hubspot):
    setup(project, hubspot)
    outcome = project.cli("check", "crm", "--json")
    assert outcome.exit_code == 0, outcome
    [answer] = outcome.json_lines()
    assert "HubSpot account 12345678 (time zone US/Eastern)" in json.dumps(answer), answer
    assert [(r["method"], r["path"]) for r in hubspot.requests] == [
        ("GET", "/account-info/v3/details")
    ]
    project.destination(
        "crm", f'type = "hubspot"\naccess_token = "bad"\nbase_url = "{hubspot.url}"'
    )
    bad = project.cli("check", "crm")
    assert bad.exit_code == 2 and "Authentication credentials not found" in bad.stderr, bad


def test_validation_names_what_a_hubspot_sync_cannot_do(project, hubspot):
    setup(project, hubspot)
    project.sync(
        "composite",
        {"destination": "crm", "primary_key": ["warehouse_id", "email"], "object": "contacts"},
        MODEL,
    )
    project.sync("objectless", {"destination": "crm", "primary_key": "warehouse_id"}, MODEL)
    outcome = project.cli("validate")
    assert outcome.exit_code == 2, outcome
    assert "syncs/composite.sql:2: HubSpot finds a record by one unique property" in outcome.stderr
    assert "syncs/objectless.sql" in outcome.stderr and 'set object = "contacts"' in outcome.stderr
    assert "syncs/people.sql" not in outcome.stderr


def test_a_batch_without_one_primary_key_column_is_refused_before_any_request(hubspot):
    settings = HubSpotSettings(type="hubspot", access_token=TOKEN, base_url=hubspot.url)

    async def send(primary_key: tuple[str, ...]) -> None:
        async with httpx.AsyncClient() as client:
            adapter = HubSpotDestination("crm", settings, client)
            fields = json.dumps({"warehouse_id": 1, "email": "a@example.com"})
            records = [("1", fields)]
            await adapter.send(Batch("people", "contacts", "upsert", records, primary_key))

    for primary_key in [(), ("warehouse_id", "email")]:
        with pytest.raises(DestinationError, match="HubSpot needs exactly one"):
            asyncio.run(send(primary_key))
    assert hubspot.requests == []


def test_a_destination_file_without_a_token_is_refused_naming_the_file(project, hubspot):
    setup(project, hubspot)
    project.destination("crm", f'type = "hubspot"\nbase_url = "{hubspot.url}"\nbatch_size = 50')
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    assert "destinations/crm.toml: missing required key 'access_token'" in outcome.stderr
    project.destination("crm", f'type = "hubspot"\naccess_token = "{TOKEN}"\nbase_url = "ftp://x"')
    outcome = project.cli("validate")
    assert "destinations/crm.toml:3: base_url: must start with http:// or https://" in (
        outcome.stderr
    )
