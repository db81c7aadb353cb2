"""The Salesforce destination against its fake org (tests/fakes/salesforce.py): the requests
it sends for each operation, Salesforce's per-record and whole-request errors, the external ID
lookups behind update and delete, the org's 24-hour API allocation, `check`, and validation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import ProjectFixture
from fakes.base import running
from fakes.project import write_destination
from fakes.salesforce import TOKEN, Fake

from reverse_etl.destinations.base import DELIVERED, Batch, Rejected
from reverse_etl.destinations.salesforce.adapter import (
    SalesforceDestination,
    SalesforceSettings,
    _result,
)
from reverse_etl.errors import DestinationError

MODEL = 'select id as "Warehouse_Id__c", email as "Email", name as "LastName" from people'
WRITES = ("POST", "PATCH", "DELETE")


@pytest.fixture
def org() -> Iterator[Fake]:
    yield from running(Fake())


def people(project: ProjectFixture, rows: list[tuple[str, str | None, str | None]]) -> None:
    values = ", ".join(
        "("
        + ", ".join("null" if v is None else "'" + v.replace("'", "''") + "'" for v in row)
        + ")"
        for row in rows
    )
    project.warehouse(
        f"create or replace table people as select * from (values {values}) t(id, email, name)"
    )


def numbered(count: int) -> list[tuple[str, str | None, str | None]]:
    return [(str(i), f"person{i}@example.com", f"Person {i}") for i in range(1, count + 1)]


def setup(
    project: ProjectFixture,
    org: Fake,
    rows: list[tuple[str, str | None, str | None]] | None = None,
    mode: str = "upsert",
    sql: str = MODEL,
    header: dict[str, Any] | None = None,
    **settings: Any,
) -> None:
    if rows is not None:
        people(project, rows)
    write_destination(project, "crm", org.destination(), retry_backoff_seconds=0.01, **settings)
    base = {
        "destination": "crm",
        "mode": mode,
        "primary_key": "Warehouse_Id__c",
        "object": "Contact",
    }
    wanted = {key: value for key, value in {**base, **(header or {})}.items() if value is not None}
    project.sync("contacts", wanted, sql)


def run(project: ProjectFixture, *args: str) -> tuple[int, dict[str, Any]]:
    outcome = project.cli("run", "contacts", "--json", *args)
    [result] = outcome.json_lines()
    return outcome.exit_code, result


def rejected(project: ProjectFixture) -> dict[str, str]:
    return {
        r["key"]: r["error"] for r in project.cli("rejected", "contacts", "--json").json_lines()
    }


def writes(org: Fake) -> list[dict[str, Any]]:
    return [r for r in org.requests if r["method"] in WRITES]


def body(request: dict[str, Any]) -> Any:
    return json.loads(request["body"])


def test_upsert_patches_a_collection_by_external_id(project, org):
    setup(project, org, numbered(3))
    assert run(project)[1]["delivered"] == 3
    [request] = writes(org)
    assert request["method"] == "PATCH"
    assert request["path"] == "/services/data/v61.0/composite/sobjects/Contact/Warehouse_Id__c"
    assert request["headers"]["authorization"] == f"Bearer {TOKEN}"
    assert request["headers"]["content-type"] == "application/json"
    sent = body(request)
    sent["records"].sort(key=lambda r: r["Warehouse_Id__c"])
    assert sent == {
        "allOrNone": False,
        "records": [
            {
                "attributes": {"type": "Contact"},
                "Warehouse_Id__c": str(i),
                "Email": f"person{i}@example.com",
                "LastName": f"Person {i}",
            }
            for i in (1, 2, 3)
        ],
    }
    first_id = org.stored()["2"]["Id"]
    project.warehouse("update people set name = 'Renamed' where id = '2'")
    assert run(project)[1]["delivered"] == 1
    assert org.stored()["2"]["Id"] == first_id and org.stored()["2"]["LastName"] == "Renamed"
    assert len(org.stored()) == 3  # updated in place, not created again


def test_per_record_errors_keep_salesforce_codes_messages_and_fields(project, org):
    rows = numbered(4)
    rows[1] = ("2", "not-an-email", "Person 2")
    rows[3] = ("4", "person4@example.com", None)
    setup(project, org, rows)
    code, result = run(project)
    assert code == 1 and result["delivered"] == 2 and result["rejected"] == 2, result
    assert rejected(project) == {
        "2": "INVALID_EMAIL_ADDRESS: Email: invalid email address: not-an-email (Email)",
        "4": "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName] (LastName)",
    }
    assert len(writes(org)) == 1  # per-record results: nothing was split or sent again


def test_a_locked_row_is_sent_again_within_the_run(project, org):
    org.record_errors["2"] = ("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access")
    setup(project, org, numbered(3))
    code, result = run(project)
    assert code == 0 and result["delivered"] == 3, result
    assert [len(body(r)["records"]) for r in writes(org)] == [3, 1]
    assert body(writes(org)[1])["records"][0]["Warehouse_Id__c"] == "2"


def test_insert_posts_and_an_existing_external_id_is_rejected_alone(project, org):
    existing = org.add("Contact", Warehouse_Id__c="2", LastName="Existing")
    setup(project, org, numbered(3), mode="insert")
    code, result = run(project)
    assert code == 1 and result["delivered"] == 2 and result["rejected"] == 1, result
    [request] = writes(org)
    assert (request["method"], request["path"]) == (
        "POST",
        "/services/data/v61.0/composite/sobjects",
    )
    assert body(request)["allOrNone"] is False
    assert rejected(project) == {
        "2": "DUPLICATE_VALUE: duplicate value found: Warehouse_Id__c duplicates value on record "
        f"with id: {existing}"
    }
    assert org.stored()["2"]["LastName"] == "Existing"


def test_update_looks_the_ids_up_and_never_creates(project, org):
    quoted = "O'Brien\\7"
    ids = {
        "1": org.add("Contact", Warehouse_Id__c="1", LastName="Old"),
        quoted: org.add("Contact", Warehouse_Id__c=quoted, LastName="Old"),
        "abc": org.add("Contact", Warehouse_Id__c="ABC", LastName="Old"),  # case-insensitive
    }
    rows = [(key, f"{i}@example.com", "New") for i, key in enumerate([*ids, "missing"])]
    setup(project, org, rows, mode="update")
    code, result = run(project)
    assert code == 1 and result["delivered"] == 3 and result["rejected"] == 1, result
    assert rejected(project) == {"missing": "NOT_FOUND: no Contact has Warehouse_Id__c = 'missing'"}
    [lookup] = [r for r in org.requests if r["path"].endswith("/query")]
    soql = lookup["query"]["q"][0]
    assert soql.startswith("SELECT Id, Warehouse_Id__c FROM Contact WHERE Warehouse_Id__c IN (")
    assert "'O\\'Brien\\\\7'" in soql
    [update] = writes(org)
    assert (update["method"], update["path"]) == (
        "PATCH",
        "/services/data/v61.0/composite/sobjects",
    )
    assert {r["Warehouse_Id__c"]: r["id"] for r in body(update)["records"]} == ids
    assert "missing" not in org.stored() and len(org.stored()) == 3
    assert {r["LastName"] for r in org.stored().values()} == {"New"}


def test_update_splits_long_lookups_and_follows_query_pages(project, org):
    keys = [f"{i:03d}" + "x" * 247 for i in range(50)]  # external IDs hold up to 255 characters
    for key in keys:
        org.add("Contact", Warehouse_Id__c=key, LastName="Old")
    org.query_page_size = 7
    setup(project, org, [(k, None, "New") for k in keys], mode="update")
    code, result = run(project)
    assert code == 0 and result["delivered"] == 50, result
    queries = [r for r in org.requests if r["path"].endswith("/query")]
    pages = [r for r in org.requests if "/query/" in r["path"]]
    assert len(queries) == 2 and len(pages) >= 6  # 50 rows, 7 a page
    for request in queries:
        assert len(request["target"]) < 16_384
    assert {r["LastName"] for r in org.stored().values()} == {"New"}


def test_a_next_page_that_is_no_path_on_the_instance_is_not_followed(project, org):
    """A query's nextRecordsUrl is appended to the instance's URL: one that is not a path
    (`@evil.example/steal`) would send the token to another host. It is refused as untrusted,
    and nothing is written."""
    first = org.add("Contact", Warehouse_Id__c="1", LastName="Old")
    page = {
        "totalSize": 2,
        "done": False,
        "nextRecordsUrl": "@evil.example/steal",
        "records": [{"Id": first, "Warehouse_Id__c": "1"}],
    }
    org.inject("status", status=200, body=page, where=lambda m, path: path.endswith("/query"))
    setup(project, org, [("1", None, "New"), ("2", None, "New")], mode="update", max_retries=0)
    code, result = run(project)
    assert result["delivered"] == 0 and result["failed"] == 2, result
    assert not any("evil" in r["target"] for r in org.requests)
    assert {r["LastName"] for r in org.stored().values()} == {"Old"}
    errors = {e["error"] for e in project.cli("rejected", "contacts", "--json").json_lines()}
    assert any("nextRecordsUrl '@evil.example/steal' is no path" in e for e in errors), errors


def test_update_and_delete_refuse_an_ambiguous_external_id(project, org):
    org.add("Contact", Warehouse_Id__c="7", LastName="A")
    org.add("Contact", Warehouse_Id__c="7", LastName="B")
    setup(project, org, [("7", None, "New")], mode="update")
    code, result = run(project)
    assert code == 1 and result["rejected"] == 1, result
    assert rejected(project)["7"].startswith("DUPLICATE_EXTERNAL_ID: 2 Contact records have")
    assert writes(org) == []
    assert sorted(r["LastName"] for r in org.records["Contact"].values()) == ["A", "B"]


def test_mirror_deletes_by_id_and_a_record_already_gone_counts_as_deleted(project, org):
    setup(project, org, numbered(5), mode="mirror")
    run(project)
    stored = org.stored()
    del org.records["Contact"][stored["2"]["Id"]]  # deleted in Salesforce meanwhile
    project.warehouse("delete from people where id in ('2', '3')")
    code, result = run(project)
    assert code == 0 and result["removed"] == 2 and result["delivered"] == 2, result
    delete = writes(org)[-1]
    assert delete["method"] == "DELETE"
    assert delete["query"] == {"ids": [stored["3"]["Id"]], "allOrNone": ["false"]}
    assert sorted(org.stored()) == ["1", "4", "5"]


def test_a_value_that_refuses_the_whole_request_is_isolated(project, org):
    project.warehouse("""
        create or replace table accounts as
        select i::varchar as id, 'Account ' || i as name,
               case when i = 4 then 'many' else (i * 10)::varchar end as employees
        from range(1, 9) t(i)""")
    sql = (
        'select id as "Warehouse_Id__c", name as "Name", employees as "NumberOfEmployees" '
        "from accounts"
    )
    setup(project, org, sql=sql, header={"object": "Account"})
    code, result = run(project)
    assert code == 1 and result["delivered"] == 7 and result["rejected"] == 1, result
    assert "JSON_PARSER_ERROR" in rejected(project)["4"]
    assert sorted(org.stored("Account")) == [str(i) for i in range(1, 9) if i != 4]


def test_a_column_salesforce_does_not_have_stops_the_run_at_once(project, org):
    sql = MODEL.replace(" from people", ', 42 as "Shoe_Size__c" from people')
    setup(project, org, numbered(30), sql=sql, batch_size=10, max_concurrency=1)
    code, result = run(project)
    assert code == 2 and result["status"] == "error", result
    assert (
        "INVALID_FIELD: No such column 'Shoe_Size__c' on sobject of type Contact" in result["error"]
    )
    assert len(writes(org)) == 1  # not split record by record, no further batch


def test_the_daily_api_allocation_is_never_overspent(project, org):
    org.allocation = 3
    setup(project, org, numbered(10), batch_size=2, max_concurrency=1)
    code, result = run(project)
    assert code == 2 and result["status"] == "error", result
    assert "24-hour API request allocation is spent (api-usage=3/3)" in result["error"]
    assert "credentials" not in result["error"]
    assert result["delivered"] == 6 and len(org.stored()) == 6
    assert [r["status"] for r in org.requests] == [200, 200, 200]  # stopped before a 403


def test_total_requests_limit_exceeded_is_the_spent_allocation(project, org):
    org.allocation = org.used = 50  # spent by other integrations of the org
    setup(project, org, numbered(3))
    code, result = run(project)
    assert code == 2 and "24-hour API request allocation is spent" in result["error"], result
    assert "refused the credentials" not in result["error"]
    assert [r["status"] for r in org.requests] == [403]
    check = project.cli("check", "crm")
    assert check.exit_code == 2 and "allocation is spent" in check.stderr


def test_an_expired_token_names_salesforces_error(project, org):
    setup(project, org, numbered(3), access_token="00D5g000004fake!expired")
    code, result = run(project)
    assert code == 2 and "refused the credentials" in result["error"], result
    assert "INVALID_SESSION_ID: Session expired or invalid" in result["error"]


def test_check_reports_the_days_api_usage_and_changes_nothing(project, org):
    org.used = 1000
    setup(project, org, numbered(1))
    outcome = project.cli("check", "crm", "--json")
    [answer] = outcome.json_lines()
    assert answer["ok"] is True, answer
    assert answer["detail"].endswith("api usage: 998999 of 1000000 requests left today")
    assert [r["path"] for r in org.requests] == ["/services/data/v61.0/limits"]
    org.limits_forbidden = True  # a user without View Setup and Configuration
    [answer] = project.cli("check", "crm", "--json").json_lines()
    assert answer["ok"] is True and "998997 of 1000000 requests left today" in answer["detail"]
    assert org.records["Contact"] == {} and writes(org) == []


def test_validation_names_what_a_salesforce_sync_cannot_do(project, org):
    people(project, numbered(1))
    setup(project, org, header={"object": None})
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "syncs/contacts.sql" in outcome.stderr, outcome
    assert 'e.g. object = "Contact"' in outcome.stderr

    setup(project, org, header={"primary_key": ["Warehouse_Id__c", "Email"]})
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "syncs/contacts.sql:3" in outcome.stderr, outcome
    assert "one external ID field" in outcome.stderr

    setup(project, org, api_version="61")
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "destinations/crm.toml:" in outcome.stderr, outcome
    assert "'61' is not a REST API version" in outcome.stderr

    setup(project, org, instance_url=org.url + "/services/data/v61.0")
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "without /services" in outcome.stderr, outcome


def test_the_usage_header_is_read_and_per_app_usage_ignored():
    settings = SalesforceSettings(
        type="salesforce", instance_url="https://x.my.salesforce.com", access_token="t"
    )
    adapter = SalesforceDestination("crm", settings, None)  # type: ignore[arg-type]
    header = "per-app-api-usage=17/250(appName=sync), api-usage=18/5000"
    adapter._note_usage(httpx.Response(200, headers={"Sforce-Limit-Info": header}))
    assert adapter.usage == (18, 5000)


def test_the_external_id_field_is_the_batch_primary_key_column():
    settings = SalesforceSettings(
        type="salesforce", instance_url="https://x.my.salesforce.com", access_token="t"
    )
    adapter = SalesforceDestination("crm", settings, None)  # type: ignore[arg-type]
    records = [("5", '{"id": 5, "Ext__c": "5", "Name": "x"}')]
    batch = Batch("s", "Contact", "upsert", records, primary_key=("Ext__c",))
    assert adapter._target(batch) == ("Contact", "Ext__c")
    for key in [(), ("Ext__c", "Name")]:
        with pytest.raises(DestinationError, match="needs exactly one"):
            adapter._target(Batch("s", "Contact", "upsert", records, primary_key=key))


def test_a_record_deleted_since_the_lookup_counts_as_deleted():
    gone = {"success": False, "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "x"}]}
    assert _result(gone, gone_is_done=True) == DELIVERED
    assert _result(gone, gone_is_done=False) == Rejected("ENTITY_IS_DELETED: x")
