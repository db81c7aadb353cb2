"""The adapter contract, one suite for every destination type, each run against its fake (a
real HTTP server on 127.0.0.1 answering as the vendor's documentation says, or the real
PostgreSQL): one result per record, the batch limit kept, "too many requests" waited out,
refused credentials stopping the run, a bad record rejected alone with the vendor's message,
re-sending harmless, deletes where supported, and `check` without sending data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import ProjectFixture
from fakes import all_fakes
from fakes.base import Fake, running
from fakes.project import people, write_destination

from reverse_etl.destinations.registry import adapter_class

FAKES = all_fakes()


@pytest.fixture(params=sorted(FAKES))
def fake(request: pytest.FixtureRequest) -> Iterator[Fake]:
    found = FAKES[request.param]
    if isinstance(found, Exception):
        raise found
    yield from running(found())


def setup(
    project: ProjectFixture,
    fake: Fake,
    rows: int = 10,
    mode: str = "upsert",
    good_credentials: bool = True,
    **settings: object,
) -> ProjectFixture:
    people(project, rows)
    write_destination(project, "dest", fake.destination(good_credentials), **settings)
    header = {"destination": "dest", "mode": mode, **fake.sync_header()}
    project.sync("people", header, fake.model_sql())
    return project


def run(project: ProjectFixture, *args: str) -> dict:
    outcome = project.cli("run", "people", "--json", *args)
    [result] = outcome.json_lines()
    return result


def test_each_record_is_delivered_once_within_the_batch_limit(project, fake):
    cap = adapter_class(fake.type).max_batch_size
    assert cap in (None, fake.max_batch_size), "the adapter declares the vendor's batch limit"
    rows = 2 * fake.max_batch_size + fake.max_batch_size // 2
    # Asking for more than the vendor allows: the adapter's cap must win. (Without a cap, as
    # for the webhook, the batch size asked for is the limit.)
    asked = 10 * fake.max_batch_size if cap else fake.max_batch_size
    setup(project, fake, rows=rows, batch_size=asked)
    result = run(project)
    assert result["status"] == "success" and result["delivered"] == rows, result
    assert sorted(fake.stored()) == sorted(fake.key_of(i) for i in range(1, rows + 1))
    sizes = fake.batch_sizes()
    assert max(sizes) <= fake.max_batch_size and sum(sizes) == rows, sizes
    stored = fake.stored()[fake.key_of(7)]
    assert stored["email"] == "person7@example.com" and stored["name"] == "Person 7"


def test_only_changes_are_sent_again(project, fake):
    setup(project, fake)
    run(project)
    before = len(fake.batch_sizes())
    project.warehouse("update people set name = 'Renamed' where id = 3")
    result = run(project)
    assert result["delivered"] == 1 and fake.batch_sizes()[before:] == [1], result
    assert fake.stored()[fake.key_of(3)]["name"] == "Renamed"


def test_too_many_requests_is_waited_out(project, fake):
    if not fake.rate_limited:
        pytest.skip(f"{fake.type} has no rate-limit answer")
    setup(project, fake, rows=30, batch_size=10, max_concurrency=1)
    fake.throttle(2)
    result = run(project)
    assert result["status"] == "success" and result["delivered"] == 30, result
    assert fake.throttled() == 2
    assert len(fake.stored()) == 30


def test_refused_credentials_stop_the_run(project, fake):
    setup(project, fake, rows=30, batch_size=10, max_concurrency=1, good_credentials=False)
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 2 and result["status"] == "error", result
    assert "refused the credentials" in result["error"], result
    assert result["delivered"] == 0 and result["failed"] == 30
    assert len(fake.batch_sizes()) <= 1  # nothing more after the first refusal
    assert fake.stored() == {}


def test_a_bad_record_is_rejected_alone_with_the_vendors_message(project, fake):
    setup(project, fake, rows=25)
    project.warehouse("update people set email = 'not-an-email' where id = 13")
    outcome = project.cli("run", "people", "--json")
    [result] = outcome.json_lines()
    assert outcome.exit_code == 1 and result["status"] == "partial", result
    assert result["delivered"] == 24 and result["rejected"] == 1, result
    assert fake.key_of(13) not in fake.stored() and len(fake.stored()) == 24
    [listed] = project.cli("rejected", "people", "--json").json_lines()
    assert listed["key"] == fake.key_of(13) and listed["reason"] == "rejected"
    assert fake.invalid_email_error.lower() in listed["error"].lower(), listed


def test_sending_an_upsert_again_is_harmless(project, fake):
    setup(project, fake, rows=15)
    run(project)
    before = fake.stored()
    result = run(project, "--full-resync")
    assert result["status"] == "success" and result["delivered"] == 15, result
    assert fake.stored() == before


def test_deletes_where_supported(project, fake):
    if not fake.supports_delete:
        pytest.skip(f"{fake.type} does not delete")
    setup(project, fake, rows=12, mode="mirror")
    run(project)
    project.warehouse("delete from people where id in (4, 5)")
    result = run(project)
    assert result["status"] == "success" and result["removed"] == 2, result
    assert sorted(fake.stored()) == sorted(fake.key_of(i) for i in range(1, 13) if i not in (4, 5))


def test_check_tests_the_credentials_without_sending_data(project, fake):
    setup(project, fake)
    good = project.cli("check", "dest", "--json")
    assert good.exit_code == 0, good
    [answer] = good.json_lines()
    assert answer["destination"] == "dest" and answer["ok"] is True, answer
    setup(project, fake, good_credentials=False)
    bad = project.cli("check", "dest")
    assert bad.exit_code == 2 and "refused the credentials" in bad.stderr, bad
    assert fake.stored() == {} and fake.batch_sizes() == []
