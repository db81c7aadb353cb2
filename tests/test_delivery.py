"""How batches travel: the wire format, retries, splitting, and stopping (docs/wire-format.md)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time

import pytest
from test_ratelimit import assert_paced


def test_wire_format_values_headers_and_signature(project, receiver):
    project.warehouse("""
        create table things as select
            1 as id, 12345678901234567890.123456789::decimal(38, 9) as amount,
            date '2024-02-29' as day, timestamp '2024-01-02 03:04:05.25' as at,
            timestamptz '2024-01-02 03:04:05+02' as at_tz, [1, 2, null] as list,
            {'a': 1, 'b': 'x'} as struct, 'nan'::double as nan, 'inf'::double as inf,
            '\\xAA\\xBB'::blob as bin, '00000000-0000-0000-0000-000000000001'::uuid as uid,
            interval 2 hour as span, true as flag, null::varchar as nothing, 'é"\\' as text""")
    project.webhook(
        "hook", receiver.url, signing_secret="s3cret", headers={"Authorization": "Bearer t0ken"}
    )
    project.sync("things", {"destination": "hook", "primary_key": "id"}, "select * from things")
    assert project.cli("run", "things").exit_code == 0
    [request] = receiver.requests
    raw = request["raw"]
    body = json.loads(raw)
    assert (body["sync"], body["object"], body["operation"]) == ("things", None, "upsert")
    [record] = body["records"]
    assert record["key"] == "1"
    assert b'"amount":12345678901234567890.123456789' in raw, "decimals are exact, not floats"
    fields = record["fields"]
    assert fields["day"] == "2024-02-29"
    assert fields["at"] == "2024-01-02T03:04:05.25"
    assert fields["at_tz"] == "2024-01-02T01:04:05+00:00"
    assert fields["list"] == [1, 2, None]
    assert fields["struct"] == {"a": 1, "b": "x"}
    assert fields["nan"] is None and fields["inf"] is None
    assert fields["bin"] == "qrs="
    assert fields["uid"] == "00000000-0000-0000-0000-000000000001"
    assert isinstance(fields["span"], str) and fields["span"].startswith("02:00")
    assert fields["flag"] is True and fields["nothing"] is None
    assert fields["text"] == 'é"\\'

    headers = request["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Bearer t0ken"
    expected = hmac.new(b"s3cret", raw, hashlib.sha256).hexdigest()
    assert headers["x-reverse-etl-signature"] == f"sha256={expected}"
    # an upsert's key hashes its run and its body (docs/wire-format.md)
    [run] = project.cli("runs", "--json").json_lines()
    scoped = run["run_id"].encode() + b"\n" + raw
    assert headers["idempotency-key"] == hashlib.sha256(scoped).hexdigest()


def test_server_errors_are_retried_with_the_same_idempotency_key(users_project, receiver):
    calls = []

    def flaky(body, headers):
        calls.append(headers["idempotency-key"])
        return (503, {}, b"busy") if len(calls) <= 2 else None

    receiver.intercept = flaky
    project = users_project(rows=10, retry_backoff_seconds=0.05)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(calls) == 3 and len(set(calls)) == 1
    assert len(receiver.data) == 10


def test_429_waits_for_retry_after(users_project, receiver):
    answered = []

    def throttle(body, headers):
        answered.append(time.monotonic())
        return (429, {"Retry-After": "1"}, b"slow down") if len(answered) == 1 else None

    receiver.intercept = throttle
    project = users_project(rows=10, max_retries=0)  # 429 waits do not count as retries
    assert project.cli("run", "users").exit_code == 0
    assert len(answered) == 2 and answered[1] - answered[0] >= 0.95
    assert len(receiver.data) == 10


def test_a_batch_refused_for_one_record_is_split_until_it_is_isolated(users_project, receiver):
    def refuse_batches_with_13(body, headers):
        if any(r["key"] == "13" for r in body["records"]):
            return 422, {}, b"record 13: email is not valid"
        return None

    receiver.intercept = refuse_batches_with_13
    project = users_project(rows=64, batch_size=64)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 1
    result = outcome.json_lines()[0]
    assert (result["delivered"], result["rejected"]) == (63, 1)
    assert len(receiver.requests) <= 1 + 2 * 6, "splitting costs at most 2·log2(batch) requests"
    [entry] = project.cli("rejected", "users", "--json").json_lines()
    assert entry["key"] == "13" and "email is not valid" in entry["error"]
    assert entry["error"].startswith("HTTP 422")


def test_refused_credentials_stop_the_run(users_project, receiver):
    receiver.intercept = lambda body, headers: (401, {}, b"bad token")
    project = users_project(rows=1000, batch_size=10, max_concurrency=2)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 2
    result = outcome.json_lines()[0]
    assert result["status"] == "error" and "credentials" in result["error"]
    assert "bad token" in result["error"]
    assert len(receiver.requests) <= 2, "no batch is sent after the destination said 401"
    assert result["failed"] == 1000 and result["delivered"] == 0
    assert "credentials" in outcome.stderr

    receiver.intercept = None
    assert project.cli("run", "users").exit_code == 0
    assert len(receiver.data) == 1000


def test_other_client_errors_fail_the_batch_for_this_run_only(users_project, receiver):
    receiver.intercept = lambda body, headers: (404, {}, b"no such list")
    project = users_project(rows=5)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 1 and outcome.json_lines()[0]["failed"] == 5
    listed = project.cli("rejected", "users", "--json").json_lines()
    assert {(r["reason"], r["error"]) for r in listed} == {("failed", "HTTP 404: no such list")}
    receiver.intercept = None
    assert project.cli("run", "users", "--json").json_lines()[0]["delivered"] == 5


def test_timeouts_are_retried(users_project, receiver):
    hung, release = threading.Event(), threading.Event()

    def hang_first(body, headers):
        if not hung.is_set():
            hung.set()
            release.wait(60)  # answered only after the run is over
        return None

    receiver.intercept = hang_first
    project = users_project(rows=5, timeout_seconds=0.3, retry_backoff_seconds=0.05)
    try:
        outcome = project.cli("run", "users", "--json")
        still_hanging = receiver.in_flight
    finally:
        release.set()
    assert outcome.exit_code == 0, outcome.stderr
    assert still_hanging == 1, "the hung request was abandoned, not awaited"
    assert outcome.json_lines()[0]["delivered"] == 5 and len(receiver.data) == 5


def test_unreachable_destination_is_an_error(users_project):
    project = users_project(rows=5, max_retries=1, retry_backoff_seconds=0.01)
    project.webhook(
        "hook", "http://127.0.0.1:9/nothing-listens", max_retries=1, retry_backoff_seconds=0.01
    )
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 2
    assert "unreachable" in outcome.json_lines()[0]["error"]


@pytest.mark.parametrize("value", ["2", "Wed, 21 Oct 2015 07:28:00 GMT"])
def test_retry_after_parsing(value):
    from reverse_etl.destinations.base import retry_after_seconds

    seconds = retry_after_seconds(value, now=1445412478.0)  # 07:27:58 GMT that day
    assert seconds == pytest.approx(2.0)


def test_requests_per_second_and_concurrency_are_honoured(users_project, receiver):
    receiver.delay = 0.02
    project = users_project(rows=600, batch_size=10, requests_per_second=20, max_concurrency=3)
    assert project.cli("run", "users").exit_code == 0
    assert len(receiver.arrivals) == 60
    # As the receiver stamps them: no second holds more than 20 and the 3 in flight, and the
    # 60 span at least (60 - 3 - 1) / 20 = 2.8 s (tests/test_ratelimit.py: assert_paced).
    assert_paced(receiver.arrivals, per_second=20, in_flight=3)
    assert receiver.max_in_flight <= 3


def test_concurrency_is_used(users_project, receiver):
    four_at_once = threading.Barrier(4, timeout=60)  # the first 4 answered once all 4 came
    first = iter(range(4))

    def wait_for_four(body, headers):
        if next(first, None) is not None:
            four_at_once.wait()
        return None

    receiver.intercept = wait_for_four
    project = users_project(rows=400, batch_size=10, max_concurrency=4)
    assert project.cli("run", "users").exit_code == 0
    assert receiver.max_in_flight == 4 and len(receiver.requests) == 40


def test_the_bundled_receiver_honours_idempotency_keys(receiver):
    """reverse-etl's own receiver (the demo's) applies a batch repeated under one
    Idempotency-Key once, and answers the repeat as it answered the first."""
    import httpx

    body = {"sync": "s", "object": None, "operation": "insert",
            "records": [{"key": "1", "fields": {"id": 1}}]}  # fmt: skip
    headers = {"Idempotency-Key": "k1"}
    first = httpx.post(receiver.url, json=body, headers=headers)
    again = httpx.post(receiver.url, json=body, headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert (receiver.records_received(), receiver.replayed) == (1, 1)
    httpx.post(receiver.url, json=body, headers={"Idempotency-Key": "k2"})
    assert receiver.records_received() == 2
