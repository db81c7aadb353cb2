"""The trust examples, run through the CLI against the independent vendor fakes (tests/fakes/:
written from the vendors' documentation, not from the adapters). Each asserts what the
vendor's rules make right: key identity, creates whose answer is lost, unreadable answers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ProjectFixture
from fakes import hubspot, salesforce, webhook
from fakes.base import JsonHTTPServer, running
from fakes.project import write_destination


@pytest.fixture
def hs() -> Iterator[hubspot.Fake]:
    yield from running(hubspot.Fake())  # type: ignore[misc]


@pytest.fixture
def sf() -> Iterator[salesforce.Fake]:
    yield from running(salesforce.Fake())  # type: ignore[misc]


@pytest.fixture
def hook() -> Iterator[webhook.Fake]:
    yield from running(webhook.Fake())  # type: ignore[misc]


def sync(
    project: ProjectFixture,
    fake: JsonHTTPServer,
    header: dict[str, Any],
    sql: str,
    **settings: Any,
) -> None:
    project.warehouse("select 1")  # the warehouse file exists
    write_destination(project, "d", fake.destination(), **settings)  # type: ignore[attr-defined]
    project.sync("s", {"destination": "d", **header}, sql)


def run(project: ProjectFixture) -> dict[str, Any]:
    [result] = project.cli("run", "s", "--json").json_lines()
    return result


def values(column: str, *rows: str) -> str:
    listed = ", ".join(f"('{row}')" for row in rows)
    return f"create or replace table t as select * from (values {listed}) v({column})"


# -- §1 key identity ---------------------------------------------------------------------------


def test_hubspot_mirror_never_archives_a_contact_the_model_still_has(project, hs):
    project.warehouse(values("email", "First.Last@example.com", "first.last@example.com"))
    header = {"primary_key": "email", "object": "contacts", "mode": "mirror"}
    sync(project, hs, header, "select email from t")
    first = run(project)
    assert first["invalid"] == 2, first  # one contact for HubSpot: the model is ambiguous
    project.warehouse("delete from t where email = 'First.Last@example.com'")
    run(project)
    assert "first.last@example.com" in hs.held("contacts", "email")


def test_hubspot_key_changing_case_only_is_one_update_under_concurrency(project, hs):
    keys = [f"K{i}" for i in range(10)]
    project.warehouse(values("warehouse_id", *keys))
    header = {"primary_key": "warehouse_id", "object": "contacts", "mode": "mirror"}
    sync(project, hs, header, "select warehouse_id from t", batch_size=1, max_concurrency=4)
    run(project)
    project.warehouse("update t set warehouse_id = lower(warehouse_id) where warehouse_id < 'K3'")
    result = run(project)
    assert result["status"] == "success", result
    assert sorted(hs.held("contacts", "warehouse_id")) == sorted(k.lower() for k in keys)
    # one update each: never archived and created again
    assert [hs.created("contacts", "warehouse_id", k) for k in keys] == [1] * 10


def test_salesforce_mirror_keeps_a_record_whose_key_changed_case(project, sf):
    project.warehouse(values("k", "AB", "cd"))
    header = {"primary_key": "Warehouse_Id__c", "object": "Contact", "mode": "mirror"}
    sync(project, sf, header, 'select k as "Warehouse_Id__c", k as "LastName" from t')
    run(project)
    project.warehouse("update t set k = 'ab' where k = 'AB'")
    run(project)
    assert sorted(sf.held()) == ["ab", "cd"]
    assert sf.created("Contact", "Warehouse_Id__c", "ab") == 1  # updated, not deleted and remade


def test_salesforce_vendor_equal_keys_are_invalid_not_sent(project, sf):
    project.warehouse(values("k", "AB", "ab", "cd"))
    header = {"primary_key": "Warehouse_Id__c", "object": "Contact"}
    sync(project, sf, header, 'select k as "Warehouse_Id__c", k as "LastName" from t')
    result = run(project)
    assert result["invalid"] == 2 and result["rejected"] == 0, result


def test_salesforce_keys_alike_under_case_folding_are_invalid_and_never_deleted(project, sf):
    project.warehouse(values("k", "STRASSE", "straße", "other"))
    header = {"primary_key": "Warehouse_Id__c", "object": "Contact", "mode": "mirror"}
    sync(project, sf, header, 'select k as "Warehouse_Id__c", k as "LastName" from t')
    first = run(project)
    assert (first["invalid"], first["rejected"]) == (2, 0), first
    project.warehouse("delete from t where k = 'STRASSE'")
    second = run(project)
    assert second["status"] == "success", second
    assert sorted(sf.held()) == ["other", "strasse"]  # by its identity: straße, kept


# -- §2 operations not safe to repeat ----------------------------------------------------------


def creates_only(method: str, path: str) -> bool:
    return method == "POST" and path.endswith(("/batch/create", "/composite/sobjects"))


def test_hubspot_create_answered_after_the_timeout_counts_as_delivered_once(project, hs):
    header = {"primary_key": "warehouse_id", "object": "contacts", "mode": "insert"}
    sql = "select id::varchar as warehouse_id from range(1, 6) t(id)"
    sync(project, hs, header, sql, timeout_seconds=1, max_retries=3)
    hs.inject("late", seconds=2, where=creates_only)
    result = run(project)
    assert result["status"] == "success" and result["delivered"] == 5, result
    assert [hs.created("contacts", "warehouse_id", str(i)) for i in range(1, 6)] == [1] * 5


def test_hubspot_create_whose_outcome_a_run_never_learned_is_looked_up_next_run(project, hs):
    """The create landed, its answer was lost, and the lookup failed too: the next run owes
    the records, and looks them up before creating anything (never a blind second create)."""
    header = {"primary_key": "warehouse_id", "object": "contacts", "mode": "insert"}
    sql = "select id::varchar as warehouse_id from range(1, 4) t(id)"
    sync(project, hs, header, sql, max_retries=0, retry_backoff_seconds=0)
    hs.inject("drop", applied=True, where=creates_only)
    first = run(project)
    assert (first["delivered"], first["failed"]) == (0, 3), first
    assert [hs.created("contacts", "warehouse_id", str(i)) for i in range(1, 4)] == [1] * 3
    second = run(project)
    assert (second["status"], second["delivered"]) == ("success", 3), second
    assert [hs.created("contacts", "warehouse_id", str(i)) for i in range(1, 4)] == [1] * 3
    assert project.cli("rejected", "s", "--json").json_lines() == []


def test_salesforce_create_applied_then_dropped_counts_as_delivered_once(project, sf):
    header = {"primary_key": "Warehouse_Id__c", "object": "Contact", "mode": "insert"}
    sql = """select id::varchar as "Warehouse_Id__c", 'n' as "LastName" from range(1, 4) t(id)"""
    sync(project, sf, header, sql, timeout_seconds=1, max_retries=3)
    sf.inject("drop", applied=True, where=creates_only)
    result = run(project)
    assert result["status"] == "success" and result["delivered"] == 3, result
    assert [sf.created("Contact", "Warehouse_Id__c", str(i)) for i in (1, 2, 3)] == [1, 1, 1]


def test_webhook_insert_answered_after_the_timeout_is_applied_once(project, hook):
    sync(project, hook, {"primary_key": "id", "mode": "insert"},
         "select id from range(1, 4) t(id)", timeout_seconds=1, max_retries=3)  # fmt: skip
    hook.inject("late", seconds=2)
    result = run(project)
    assert result["status"] == "success" and result["delivered"] == 3, result.get("error")
    assert [hook.created(k) for k in ("1", "2", "3")] == [1, 1, 1]


# -- §3 answers are read ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["garbage", "truncated"])
def test_hubspot_unreadable_2xx_fails_the_batch(project, hs, kind):
    header = {"primary_key": "warehouse_id", "object": "contacts"}
    sync(project, hs, header, "select id::varchar as warehouse_id from range(1, 4) t(id)",
         max_retries=0)  # fmt: skip
    hs.inject(kind)
    result = run(project)
    assert result["status"] == "partial" and result["failed"] == 3, result


def test_webhook_unreadable_2xx_fails_the_batch(project, hook):
    sync(project, hook, {"primary_key": "id"}, "select id from range(1, 4) t(id)", max_retries=0)
    hook.inject("garbage")
    result = run(project)
    assert result["status"] == "partial" and result["failed"] == 3, result
    assert hook.stored() == {}
