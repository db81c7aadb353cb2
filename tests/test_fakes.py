"""The vendor fakes themselves, checked against the vendors' documented rules with plain httpx
(no adapter involved): key identity (case), multi-status answers, 409 on create, a create that
succeeds after the client's timeout being applied once, Idempotency-Key, and the injected
faults. Latency is set low here: these tests check behaviour, not timing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from fakes import hubspot, salesforce, webhook
from fakes.base import running

FAST = (0.0, 0.01)
SF = "/services/data/v61.0"


@pytest.fixture
def hs() -> Iterator[hubspot.Fake]:
    yield from running(hubspot.Fake(latency=FAST))  # type: ignore[misc]


@pytest.fixture
def sf() -> Iterator[salesforce.Fake]:
    yield from running(salesforce.Fake(latency=FAST))  # type: ignore[misc]


@pytest.fixture
def hook() -> Iterator[webhook.Fake]:
    yield from running(webhook.Fake(latency=FAST))  # type: ignore[misc]


def hs_post(fake: hubspot.Fake, action: str, body: dict, timeout: float = 5) -> httpx.Response:
    return httpx.post(
        f"{fake.url}/crm/v3/objects/contacts/batch/{action}",
        json=body,
        headers={"Authorization": f"Bearer {hubspot.TOKEN}"},
        timeout=timeout,
    )


def upsert_input(key: str, prop: str = "email", **props: str) -> dict:
    return {"idProperty": prop, "id": key, "properties": props}


# -- HubSpot ----------------------------------------------------------------------------------


def test_hubspot_matches_emails_ignoring_case_and_stores_them_lower_case(hs):
    first = hs_post(hs, "upsert", {"inputs": [upsert_input("First.Last@Example.com")]})
    again = hs_post(hs, "upsert", {"inputs": [upsert_input("FIRST.last@example.COM")]})
    assert first.status_code == 200 and first.json()["results"][0]["new"] is True
    assert again.status_code == 200 and again.json()["results"][0]["new"] is False
    assert again.json()["results"][0]["id"] == first.json()["results"][0]["id"]
    assert list(hs.held("contacts", "email")) == ["first.last@example.com"]
    assert hs.created("contacts", "email", "FIRST.LAST@example.com") == 1


def test_hubspot_unique_property_ignores_case_and_one_batch_may_not_name_a_record_twice(hs):
    hs_post(hs, "upsert", {"inputs": [upsert_input("AbC", "warehouse_id", firstname="A")]})
    hs_post(hs, "upsert", {"inputs": [upsert_input("abc", "warehouse_id", firstname="B")]})
    [(identity, props)] = hs.held("contacts", "warehouse_id").items()
    assert identity == "abc" and props["firstname"] == "B" and props["warehouse_id"] == "AbC"
    assert len(hs.records("contacts")) == 1
    twice = hs_post(
        hs,
        "upsert",
        {"inputs": [upsert_input("x@a.io"), upsert_input("X@A.io")]},
    )
    assert twice.status_code == 400 and "Duplicate IDs" in twice.json()["message"]


def test_hubspot_custom_unique_values_can_be_made_exact():
    fake = hubspot.Fake(latency=FAST, unique_ignore_case=False)
    for _ in running(fake):
        hs_post(fake, "upsert", {"inputs": [upsert_input("AbC", "warehouse_id")]})
        hs_post(fake, "upsert", {"inputs": [upsert_input("abc", "warehouse_id")]})
        assert sorted(fake.held("contacts", "warehouse_id")) == ["AbC", "abc"]


def test_hubspot_read_finds_by_identity_and_answers_207_for_the_missing(hs):
    record_id = hs.seed("contacts", {"email": "jane@example.com"})
    answer = hs_post(
        hs,
        "read",
        {"idProperty": "email", "inputs": [{"id": "JANE@example.com"}, {"id": "nobody@x.io"}]},
    )
    assert answer.status_code == 207, answer.text
    body = answer.json()
    assert [r["id"] for r in body["results"]] == [record_id]
    [error] = body["errors"]
    assert error["category"] == "OBJECT_NOT_FOUND" and error["context"]["ids"] == ["nobody@x.io"]


def test_hubspot_207_names_the_failed_inputs_and_applies_the_others(hs):
    hs.fail_ids["2"] = ("VALIDATION_ERROR", "Record 2 is locked")
    inputs = [upsert_input(str(i), "warehouse_id", firstname=f"P{i}") for i in (1, 2, 3)]
    answer = hs_post(hs, "upsert", {"inputs": inputs})
    assert answer.status_code == 207 and answer.json()["numErrors"] == 1
    assert answer.json()["errors"][0]["context"] == {"ids": ["2"]}
    assert sorted(hs.held("contacts", "warehouse_id")) == ["1", "3"]


def test_hubspot_create_of_an_existing_email_is_409_and_creates_nothing(hs):
    existing = hs.seed("contacts", {"email": "jane@example.com"})
    answer = hs_post(
        hs,
        "create",
        {"inputs": [{"properties": {"email": "new@example.com"}},
                    {"properties": {"email": "Jane@Example.com"}}]},
    )  # fmt: skip
    assert answer.status_code == 409, answer.text
    assert answer.json()["message"] == f"Contact already exists. Existing ID: {existing}"
    assert answer.json()["category"] == "CONFLICT"
    assert (
        len(hs.records("contacts")) == 1 and hs.created("contacts", "email", "new@example.com") == 0
    )


def test_hubspot_refuses_more_than_100_inputs_and_bad_tokens(hs):
    inputs = [upsert_input(f"{i}@a.io") for i in range(101)]
    assert hs_post(hs, "upsert", {"inputs": inputs}).status_code == 400
    refused = httpx.post(
        f"{hs.url}/crm/v3/objects/contacts/batch/upsert",
        json={"inputs": []},
        headers={"Authorization": "Bearer nope"},
    )
    assert refused.status_code == 401 and refused.json()["category"] == "INVALID_AUTHENTICATION"
    assert "X-HubSpot-RateLimit-Max" not in refused.headers


def test_hubspot_rate_limit_headers_and_429_policies():
    fake = hubspot.Fake(window_limit=2, window_ms=60_000, daily_limit=3, latency=FAST)
    for _ in running(fake):
        answers = [hs_post(fake, "upsert", {"inputs": []}) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        first = answers[0].headers
        assert first["X-HubSpot-RateLimit-Max"] == "2"
        assert first["X-HubSpot-RateLimit-Interval-Milliseconds"] == "60000"
        assert first["X-HubSpot-RateLimit-Remaining"] == "1"
        assert first["X-HubSpot-RateLimit-Daily"] == "3"
        assert first["X-HubSpot-RateLimit-Daily-Remaining"] == "2"
        assert answers[2].json()["policyName"] == "TEN_SECONDLY_ROLLING"
        fake.window_limit = 100
        assert hs_post(fake, "upsert", {"inputs": []}).status_code == 200
        daily = hs_post(fake, "upsert", {"inputs": []})
        assert daily.status_code == 429 and daily.json()["policyName"] == "DAILY"


def test_hubspot_create_that_succeeds_after_the_clients_timeout_is_applied_once(hs):
    hs.inject("late", seconds=2)
    body = {"inputs": [{"properties": {"email": "late@example.com"}}]}
    with pytest.raises(httpx.ReadTimeout):
        hs_post(hs, "create", body, timeout=0.5)
    assert hs.created("contacts", "email", "late@example.com") == 1  # applied, answer lost
    again = hs_post(hs, "create", body)  # a blind resend meets HubSpot's 409
    assert again.status_code == 409
    assert hs.created("contacts", "email", "late@example.com") == 1


def test_hubspot_dropped_connection_after_the_write_still_applied_it(hs):
    hs.inject("drop", applied=True)
    with pytest.raises(httpx.TransportError):
        hs_post(hs, "create", {"inputs": [{"properties": {"email": "d@example.com"}}]})
    assert hs.created("contacts", "email", "d@example.com") == 1


# -- Salesforce -------------------------------------------------------------------------------


def sf_call(fake: salesforce.Fake, method: str, path: str, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {salesforce.TOKEN}"}
    return httpx.request(method, f"{fake.url}{SF}{path}", headers=headers, **kwargs)


def contacts(*keys: str, field: str = "Warehouse_Id__c") -> dict:
    records = [{"attributes": {"type": "Contact"}, field: k, "LastName": k} for k in keys]
    return {"allOrNone": False, "records": records}


def test_salesforce_upsert_matches_a_unique_case_insensitive_external_id_ignoring_case(sf):
    first = sf_call(
        sf, "PATCH", "/composite/sobjects/Contact/Warehouse_Id__c", json=contacts("AB1")
    )
    again = sf_call(
        sf, "PATCH", "/composite/sobjects/Contact/Warehouse_Id__c", json=contacts("ab1")
    )
    assert first.json()[0]["created"] is True and again.json()[0]["created"] is False
    assert again.json()[0]["id"] == first.json()[0]["id"]
    assert list(sf.held()) == ["ab1"] and sf.created("Contact", "Warehouse_Id__c", "Ab1") == 1
    assert len(sf.records["Contact"]) == 1
    assert "Sforce-Limit-Info" in again.headers


def test_salesforce_case_sensitive_and_non_unique_external_ids_match_exactly(sf):
    for field in ("Case_Key__c", "Legacy_Id__c"):
        path = f"/composite/sobjects/Contact/{field}"
        sf_call(sf, "PATCH", path, json=contacts("K1", field=field))
        answer = sf_call(sf, "PATCH", path, json=contacts("k1", field=field))
        assert answer.json()[0]["created"] is True, field
        assert sorted(sf.held("Contact", field)) == ["K1", "k1"]


def test_salesforce_soql_in_ignores_case_except_for_unique_case_sensitive_fields(sf):
    sf.add("Contact", Warehouse_Id__c="Ab", Case_Key__c="Cd", Legacy_Id__c="Ef", LastName="x")

    def found(field: str, value: str) -> int:
        q = f"SELECT Id, {field} FROM Contact WHERE {field} IN ('{value}')"
        return sf_call(sf, "GET", "/query", params={"q": q}).json()["totalSize"]

    assert found("Warehouse_Id__c", "aB") == 1 and found("Legacy_Id__c", "eF") == 1
    assert found("Case_Key__c", "cd") == 0 and found("Case_Key__c", "Cd") == 1


def test_salesforce_per_record_results_duplicate_value_and_duplicate_external_id(sf):
    sf.add("Contact", Warehouse_Id__c="7", LastName="Old")
    created = sf_call(sf, "POST", "/composite/sobjects", json=contacts("7", "8", "bad"))
    assert created.status_code == 200
    first, second, _ = created.json()
    assert first["success"] is False and first["errors"][0]["statusCode"] == "DUPLICATE_VALUE"
    assert second["success"] is True
    twice = sf_call(
        sf, "PATCH", "/composite/sobjects/Contact/Warehouse_Id__c", json=contacts("X", "x", "y")
    )
    codes = [r["errors"][0]["statusCode"] if r["errors"] else "ok" for r in twice.json()]
    assert codes == ["DUPLICATE_EXTERNAL_ID", "DUPLICATE_EXTERNAL_ID", "ok"]


def test_salesforce_limits_401_and_request_limit(sf):
    too_many = sf_call(sf, "POST", "/composite/sobjects", json=contacts(*map(str, range(201))))
    assert too_many.status_code == 400 and too_many.json()[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    bad = httpx.get(f"{sf.url}{SF}/limits", headers={"Authorization": "Bearer x"})
    assert bad.status_code == 401 and bad.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    sf.allocation = sf.used
    spent = sf_call(sf, "GET", "/limits")
    assert spent.status_code == 403 and spent.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert spent.headers["Sforce-Limit-Info"] == f"api-usage={sf.used}/{sf.allocation}"


def test_salesforce_create_after_the_clients_timeout_is_applied_once(sf):
    sf.inject("hang", applied=True, seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        sf_call(sf, "POST", "/composite/sobjects", json=contacts("42"), timeout=0.5)
    assert sf.created("Contact", "Warehouse_Id__c", "42") == 1
    again = sf_call(sf, "POST", "/composite/sobjects", json=contacts("42"))
    assert again.json()[0]["errors"][0]["statusCode"] == "DUPLICATE_VALUE"
    assert sf.created("Contact", "Warehouse_Id__c", "42") == 1


# -- webhook ---------------------------------------------------------------------------------


def hook_post(fake: webhook.Fake, body: dict, key: str | None = None, **kw) -> httpx.Response:
    headers = {"Authorization": f"Bearer {webhook.TOKEN}"}
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(fake.url, content=json.dumps(body), headers=headers, **kw)


def batch(operation: str, *keys: str, email: str = "a@b.c") -> dict:
    records = [{"key": k, "fields": {"id": k, "email": email}} for k in keys]
    return {"sync": "s", "object": None, "operation": operation, "records": records}


def test_webhook_repeated_idempotency_key_answers_the_stored_answer_without_applying(hook):
    hook.fail_keys["2"] = "no thanks"
    first = hook_post(hook, batch("insert", "1", "2"), key="k1")
    again = hook_post(hook, batch("insert", "1", "2"), key="k1")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() == {"errors": [{"key": "2", "error": "no thanks"}]}
    assert hook.created("1") == 1 and [r["key"] for r in hook.applied["k1"]] == ["1"]
    other = hook_post(hook, batch("insert", "3"), key="k1")
    assert other.status_code == 422 and "3" not in hook.stored()
    blind = hook_post(hook, batch("insert", "1"))  # no key: a second insert is refused
    assert blind.json() == {"errors": [{"key": "1", "error": "already exists"}]}


def test_webhook_insert_answered_late_is_applied_once_when_retried_with_its_key(hook):
    hook.inject("late", seconds=2)
    with pytest.raises(httpx.ReadTimeout):
        hook_post(hook, batch("insert", "9"), key="late", timeout=0.5)
    retry = hook_post(hook, batch("insert", "9"), key="late")
    assert retry.status_code == 200 and retry.content == b""
    assert hook.created("9") == 1 and len(hook.applied["late"]) == 1


def test_webhook_answers_and_refusals(hook):
    bad = hook_post(hook, batch("upsert", "1", email="nope"))
    assert bad.json() == {"errors": [{"key": "1", "error": "invalid email: 'nope'"}]}
    assert httpx.post(hook.url, json=batch("upsert", "1")).status_code == 401
    hook.throttle(1)
    throttled = hook_post(hook, batch("upsert", "1"))
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "0.2"
    assert hook_post(hook, batch("update", "5")).json()["errors"][0]["error"] == "not found"


# -- injected faults (the shared server) ------------------------------------------------------


def test_injected_faults_answer_as_told_and_apply_nothing_unless_told(hook):
    hook.inject("status", status=503)
    hook.inject("status", status=429, headers={"Retry-After": "1"})
    hook.inject("garbage")
    hook.inject("truncated")
    hook.inject("drop")
    hook.inject("hang", seconds=2)
    assert hook_post(hook, batch("upsert", "1")).status_code == 503
    throttled = hook_post(hook, batch("upsert", "1"))
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    html = hook_post(hook, batch("upsert", "1"))
    assert html.status_code == 200 and html.text.startswith("<html>")
    assert hook.stored() == {}
    cut = hook_post(hook, batch("upsert", "2"))  # applied, its answer cut
    assert cut.status_code == 200
    with pytest.raises(ValueError):
        cut.json()
    with pytest.raises(httpx.TransportError):
        hook_post(hook, batch("upsert", "3"))
    with pytest.raises(httpx.ReadTimeout):
        hook_post(hook, batch("upsert", "4"), timeout=0.5)
    assert sorted(hook.stored()) == ["2"] and hook.pending_faults() == 0
    assert [kind for kind, _, _ in hook.injected] == [
        "status", "status", "garbage", "truncated", "drop", "hang"
    ]  # fmt: skip


def test_faults_can_target_one_endpoint(hs):
    hs.inject("status", status=500, where=lambda method, path: path.endswith("/batch/create"))
    assert hs_post(hs, "upsert", {"inputs": [upsert_input("a@b.io")]}).status_code == 200
    assert hs_post(hs, "create", {"inputs": []}).status_code == 500


def test_the_default_latency_is_realistic():
    fake = webhook.Fake()
    assert fake.latency == (0.1, 0.3)
    pauses = [fake._pause() for _ in range(50)]
    assert all(0.1 <= p <= 0.3 for p in pauses) and len(set(pauses)) > 1
    other = webhook.Fake()
    assert [other._pause() for _ in range(50)] == pauses  # seeded: a run repeats
