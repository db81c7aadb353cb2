"""Braze-specific behaviour, against tests/fakes/braze.py (Braze's documented API): the
attributes objects sent, update-only mode, objects Braze refuses alone or all together, its
75-object and 50-id limits, its X-RateLimit-* headers, permissions, and what validation refuses.
The contract suite (tests/test_destination_contract.py) covers the rest."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import Outcome, ProjectFixture
from fakes.base import running
from fakes.braze import DELETE, INVALID_EMAIL, KEY, NO_VALID_DATA, TRACK, Fake
from fakes.project import people, write_destination

from reverse_etl.destinations.base import Batch, Record, Result, SplitBatch, Throttled
from reverse_etl.destinations.braze.adapter import (
    BrazeDestination,
    BrazeSettings,
    describe,
    retry_after,
    user_object,
)

MODEL = "select id::varchar as external_id, email, name as first_name from people"


@pytest.fixture
def braze() -> Iterator[Fake]:
    yield from running(Fake())


def setup(
    project: ProjectFixture,
    fake: Fake,
    sql: str = MODEL,
    header: dict[str, Any] | None = None,
    **settings: Any,
) -> None:
    write_destination(project, "braze", fake.destination(), **settings)
    project.sync(
        "people", {"destination": "braze", "primary_key": "external_id", **(header or {})}, sql
    )


def run(project: ProjectFixture) -> tuple[Outcome, dict[str, Any]]:
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    return outcome, result


def send(fake: Fake, operation: str, records: list[Record]) -> list[Result]:
    """One batch through the adapter, without the engine (which never builds one too big)."""

    async def go() -> list[Result]:
        settings = BrazeSettings(type="braze", rest_endpoint=fake.url, api_key=KEY)
        async with httpx.AsyncClient() as client:
            adapter = BrazeDestination("braze", settings, client)
            return await adapter.send(Batch("people", None, operation, records))

    return asyncio.run(go())


def test_each_user_is_an_attributes_object_keyed_by_its_external_id(project, braze):
    project.warehouse("""
        create table people as select * from (values
            (1, 'ann@example.com', 'Ann', 12.50::decimal(10, 2), 'gold'),
            (2, 'bob@example.com', 'Bob', 0.10::decimal(10, 2), 'silver')
        ) t(id, email, name, ltv, tier)""")
    sql = "select id as external_id, email, name as first_name, ltv, tier from people"
    setup(project, braze, sql)
    outcome, result = run(project)
    assert outcome.exit_code == 0 and result["delivered"] == 2, result
    [request] = braze.requests
    assert request["path"] == TRACK and request["status"] == 201
    assert request["headers"]["authorization"] == f"Bearer {KEY}"
    assert request["headers"]["content-type"] == "application/json"
    first, second = sorted(request["body"]["attributes"], key=lambda o: o["external_id"])
    # The integer key column is Braze's external_id, as a string, and only once.
    assert first == {
        "external_id": "1",
        "email": "ann@example.com",
        "first_name": "Ann",
        "ltv": 12.5,
        "tier": "gold",
    }
    assert second["external_id"] == "2" and "_update_existing_only" not in second
    assert request["raw"].count(b'"external_id"') == 2
    assert b'"ltv":12.50' in request["raw"] and b'"ltv":0.10' in request["raw"]  # exact
    # A NULL removes the attribute from the profile, as Braze's `null` does.
    project.warehouse("update people set tier = null where id = 2")
    outcome, result = run(project)
    assert result["delivered"] == 1 and braze.requests[-1]["body"]["attributes"][0]["tier"] is None
    assert braze.users["2"] == {"email": "bob@example.com", "first_name": "Bob", "ltv": 0.1}


def test_update_mode_changes_only_users_braze_already_has(project, braze):
    braze.users["2"] = {"email": "old@example.com", "plan": "pro"}
    people(project, 3)
    setup(project, braze, header={"mode": "update"})
    outcome, result = run(project)
    # Braze queues the objects and does not say which users it did not find.
    assert outcome.exit_code == 0 and result["delivered"] == 3, result
    objects = braze.requests[0]["body"]["attributes"]
    assert [o["_update_existing_only"] for o in objects] == [True, True, True]
    assert braze.users == {
        "2": {"email": "person2@example.com", "first_name": "Person 2", "plan": "pro"}
    }


def test_refused_objects_are_rejected_with_brazes_words_and_the_others_written(project, braze):
    people(project, 5)
    project.warehouse("update people set email = 'nope' where id in (2, 4)")
    setup(project, braze)
    outcome, result = run(project)
    assert outcome.exit_code == 1 and result["status"] == "partial", result
    assert result["delivered"] == 3 and result["rejected"] == 2, result
    assert len(braze.requests) == 1 and braze.requests[0]["status"] == 201  # no split, no retry
    assert sorted(braze.users) == ["1", "3", "5"]
    listed = project.cli("rejected", "people", "--json").json_lines()
    assert {(item["key"], item["error"]) for item in listed} == {
        ("2", INVALID_EMAIL),
        ("4", INVALID_EMAIL),
    }


def test_a_request_with_no_valid_object_is_rejected_per_object_not_split(project, braze):
    people(project, 3)
    project.warehouse("update people set email = 'nope'")
    setup(project, braze)
    outcome, result = run(project)
    assert result["rejected"] == 3 and result["delivered"] == 0, result
    [request] = braze.requests  # Braze's 400 named each object: no bisecting
    assert request["status"] == 400
    listed = project.cli("rejected", "people", "--json").json_lines()
    assert [item["error"] for item in listed] == [INVALID_EMAIL] * 3
    assert braze.users == {}


def test_more_than_75_objects_are_refused_whole_so_the_batch_is_split(braze):
    records = [(str(i), json.dumps({"email": f"p{i}@example.com"})) for i in range(76)]
    with pytest.raises(SplitBatch, match="Max Input Length Exceeded"):
        send(braze, "upsert", records)
    assert braze.users == {}
    assert len(send(braze, "upsert", records[:75])) == 75 and len(braze.users) == 75


def test_mirror_deletes_go_at_most_50_external_ids_per_request(project, braze):
    people(project, 70)
    setup(project, braze, header={"mode": "mirror", "max_delete_fraction": 0.9})
    run(project)
    project.warehouse("delete from people where id > 10")
    outcome, result = run(project)
    assert outcome.exit_code == 0 and result["removed"] == 60, result
    deletes = [r for r in braze.requests if r["path"] == DELETE]
    assert [r["records"] for r in deletes] == [50, 10] and all(r["status"] == 201 for r in deletes)
    assert sorted(braze.users, key=int) == [str(i) for i in range(1, 11)]


def test_a_key_without_users_delete_stops_a_mirror_run_saying_so(project):
    fake = Fake(permissions=("users.track",))
    fake.start()
    try:
        people(project, 4)
        setup(project, fake, header={"mode": "mirror"})
        assert run(project)[1]["delivered"] == 4
        project.warehouse("delete from people where id = 4")
        outcome, result = run(project)
    finally:
        fake.stop()
    assert outcome.exit_code == 2 and result["status"] == "error", result
    assert "refused the credentials" in result["error"] and "users.delete" in result["error"]
    assert "4" in fake.users  # still there: the next run deletes it with a better key


def test_429_waits_until_the_window_braze_names_resets(braze):
    braze.throttle(1)
    with pytest.raises(Throttled, match="rate limit: 3000 requests per window") as caught:
        send(braze, "upsert", [("1", '{"email":"a@example.com"}')])
    assert 0 < caught.value.retry_after <= 1.0  # the fake's reset: the next whole second
    reset = httpx.Response(429, headers={"X-RateLimit-Reset": "1700000010"})
    assert retry_after(reset, now=1_700_000_002.5) == 7.5
    both = httpx.Response(429, headers={"Retry-After": "3", "X-RateLimit-Reset": "1700000010"})
    assert retry_after(both, now=1_700_000_002.5) == 3.0


def test_brazes_rate_limit_headers_keep_the_run_under_its_limit(project):
    fake = Fake(limits={TRACK: (4, 1.0), DELETE: (4, 1.0)})
    fake.start()
    try:
        people(project, 10)
        setup(project, fake, batch_size=1, max_concurrency=1)
        began = time.monotonic()
        outcome, result = run(project)
        took = time.monotonic() - began
    finally:
        fake.stop()
    assert result["status"] == "success" and result["delivered"] == 10, result
    assert fake.throttled() == 0  # X-RateLimit-Remaining 0 paused it until X-RateLimit-Reset
    assert took >= 1.0  # 10 requests at 4 per second span at least two window changes


@pytest.mark.parametrize(
    ("header", "key", "expected"),
    [
        ({"primary_key": ["external_id", "email"]}, "primary_key", "one external_id"),
        ({"primary_key": "id"}, "primary_key", "select id as external_id"),
        ({"object": "users"}, "object", "remove `object`"),
        ({"mode": "insert"}, "mode", "does not support"),
    ],
)
def test_what_braze_cannot_do_is_refused_at_validation(project, braze, header, key, expected):
    people(project, 1)
    setup(project, braze, "select id::varchar as external_id, id, email from people", header)
    outcome = project.cli("validate")
    assert outcome.exit_code == 2, outcome
    lines = (project.root / "syncs" / "people.sql").read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if text.startswith(f"-- {key} ="))
    [problem] = [p for p in outcome.stderr.splitlines() if f"people.sql:{line}:" in p]
    assert expected in problem, outcome.stderr


@pytest.mark.parametrize(
    ("endpoint", "expected"),
    [
        ("https://dashboard-01.braze.com", "is a dashboard URL"),
        ("rest.iad-01.braze.com", "must be a URL"),
        ("https://rest.iad-01.braze.com/users/track", "must be the REST endpoint alone"),
    ],
)
def test_a_wrong_rest_endpoint_is_named_with_its_file_and_line(project, endpoint, expected):
    people(project, 1)
    project.destination("braze", f'type = "braze"\napi_key = "k"\nrest_endpoint = "{endpoint}"\n')
    project.sync("people", {"destination": "braze", "primary_key": "external_id"}, MODEL)
    outcome = project.cli("validate")
    assert outcome.exit_code == 2
    assert f"destinations/braze.toml:3: rest_endpoint: {expected}" in outcome.stderr, outcome


def test_check_sends_an_empty_request_and_names_a_missing_permission(project, braze):
    people(project, 1)
    setup(project, braze)
    good = project.cli("check", "braze")
    assert good.exit_code == 0 and "accepted for /users/track" in good.stdout, good
    assert [r["body"] for r in braze.requests] == [{"attributes": []}] and braze.users == {}
    delete_only = Fake(permissions=("users.delete",))
    delete_only.start()
    try:
        setup(project, delete_only)
        refused = project.cli("check", "braze")
    finally:
        delete_only.stop()
    assert refused.exit_code == 2 and "users.track permission" in refused.stderr, refused


def test_a_refused_key_is_not_repeated_in_what_the_run_reports(project, braze):
    people(project, 3)
    setup(project, braze, api_key="11111111-2222-3333-4444-555555555555")
    outcome, result = run(project)
    assert outcome.exit_code == 2 and "Invalid API key" in result["error"], result
    assert "11111111-2222" not in outcome.stdout + outcome.stderr  # Braze's 401 echoes it


def test_user_objects_keep_every_value_as_written():
    fields = '{"a": {"x": [1, "}"]}, "external_id": 7, "b": "c,d", "n": 1.10}'
    assert user_object("7", fields, update_only=True) == (
        '{"external_id":"7","_update_existing_only":true,"a":{"x": [1, "}"]},"b":"c,d","n":1.10}'
    )
    assert user_object("x", "{}", update_only=False) == '{"external_id":"x"}'


def test_a_documented_error_code_gets_its_meaning():
    assert describe("EMAIL_BAD_FORMAT").startswith("EMAIL_BAD_FORMAT: the value provided")
    assert describe(INVALID_EMAIL) == INVALID_EMAIL
    assert NO_VALID_DATA.startswith("Valid data must be provided")


def test_the_catalog_shows_brazes_limits(project):
    listed = {item["type"]: item for item in project.cli("destinations", "--json").json_lines()}
    braze = listed["braze"]
    assert braze["operations"] == ["delete", "update", "upsert"] and braze["max_batch_size"] == 75
    assert braze["default_rate_limits"] == ["1000 per 1s"]
    settings = {s["name"]: s for s in braze["settings"]}
    assert settings["api_key"]["secret"] and settings["rest_endpoint"]["required"]
