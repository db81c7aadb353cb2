"""The engine end to end against a real webhook receiver: what is sent, and only that."""

from __future__ import annotations

import json

import pytest


def expected_users(project, where: str = "true") -> dict[str, dict]:
    """The model's rows as the receiver should hold them, read back from the warehouse."""
    import duckdb

    with duckdb.connect(str(project.root / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(f"select id, email, tier, score from users where {where}").fetchall()
    return {str(i): {"id": i, "email": e, "tier": t, "score": float(s)} for i, e, t, s in rows}


def received(receiver) -> dict[str, dict]:
    return {k: {**v, "score": float(v["score"])} for k, v in receiver.data.items()}


CHANGES = """
    update users set email = 'changed' || id || '@example.com' where id <= 10;
    insert into users select i, 'new' || i || '@example.com', 0, 1.00 from range(1001, 1006) t(i);
    delete from users where id in (500, 501, 502);
"""


@pytest.mark.parametrize("mode", ["upsert", "mirror"])
def test_only_changes_are_sent(users_project, receiver, mode):
    project = users_project(rows=1000, mode=mode)
    assert project.cli("run", "users").exit_code == 0
    assert received(receiver) == expected_users(project)
    assert receiver.records_received() == 1000

    requests = len(receiver.requests)
    nothing = project.cli("run", "users", "--json").json_lines()[0]
    assert (nothing["unchanged"], nothing["delivered"]) == (1000, 0)
    assert len(receiver.requests) == requests, "a run with nothing changed sent a request"

    project.warehouse(CHANGES)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.json_lines()[0]
    assert (result["added"], result["changed"], result["removed"]) == (5, 10, 3)
    new_requests = receiver.requests[requests:]
    upserts = [k for r in new_requests if r["operation"] == "upsert" for k in r["keys"]]
    deletes = [k for r in new_requests if r["operation"] == "delete" for k in r["keys"]]
    assert len(upserts) == 15
    assert sorted(upserts) == sorted(
        [str(i) for i in range(1, 11)] + [str(i) for i in range(1001, 1006)]
    )
    if mode == "mirror":
        assert sorted(deletes) == ["500", "501", "502"]
        assert result["delivered"] == 18
        assert received(receiver) == expected_users(project)
    else:
        assert deletes == []
        assert result["delivered"] == 15
        assert "500" in receiver.data  # upsert never deletes

    again = project.cli("run", "users", "--json").json_lines()[0]
    assert again["delivered"] == 0 and again["removed"] == 0


def test_removed_key_is_forgotten_and_comes_back_as_new(users_project, receiver):
    project = users_project(rows=10, mode="upsert")
    project.cli("run", "users")
    project.warehouse("delete from users where id = 3")
    gone = project.cli("run", "users", "--json").json_lines()[0]
    assert gone["removed"] == 1
    assert project.cli("run", "users", "--json").json_lines()[0]["removed"] == 0
    project.warehouse("insert into users values (3, 'back@example.com', 0, 2.00)")
    back = project.cli("run", "users", "--json").json_lines()[0]
    assert (back["added"], back["delivered"]) == (1, 1)


def test_update_and_insert_modes(users_project, receiver):
    project = users_project(rows=20, mode="update")
    project.cli("run", "users")
    assert {r["operation"] for r in receiver.requests} == {"update"}

    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "mode": "insert"},
        "select id, email, tier, score from users",
    )
    project.cli("reset", "users")
    receiver.requests.clear()
    project.cli("run", "users")
    project.warehouse(
        "update users set tier = 9 where id = 1; insert into users values (21, 'x@y.z', 0, 0)"
    )
    result = project.cli("run", "users", "--json").json_lines()[0]
    assert result["changed"] == 1 and result["added"] == 1
    assert result["delivered"] == 1, "insert mode sends only keys never delivered"
    assert receiver.requests[-1]["operation"] == "insert"
    assert receiver.requests[-1]["keys"] == ["21"]


def test_full_resync_sends_every_row_and_reset_forgets(users_project, receiver):
    project = users_project(rows=50)
    project.cli("run", "users")
    full = project.cli("run", "users", "--full-resync", "--json").json_lines()[0]
    assert full["delivered"] == 50 and full["unchanged"] == 50
    assert sum(r["records"] for r in receiver.requests) == 100

    assert project.cli("reset", "users").exit_code == 0
    after = project.cli("run", "users", "--json").json_lines()[0]
    assert after["added"] == 50 and after["delivered"] == 50


def test_plan_sends_nothing_and_changes_no_state(users_project, receiver):
    project = users_project(rows=30)
    before = project.cli("plan", "users", "--json").json_lines()[0]
    assert before == {
        "sync": "users",
        "rows": 30,
        "added": 30,
        "changed": 0,
        "removed": 0,
        "unchanged": 0,
        "invalid": 0,
    }
    assert receiver.requests == []
    assert not (project.root / ".reverse_etl" / "syncs" / "users.duckdb").exists()
    assert project.cli("plan", "users", "--json").json_lines()[0] == before
    project.cli("run", "users")
    project.warehouse("update users set tier = 7 where id <= 4")
    plan = project.cli("plan", "users", "--json").json_lines()[0]
    assert (plan["changed"], plan["unchanged"]) == (4, 26)
    assert project.cli("run", "users", "--json").json_lines()[0]["delivered"] == 4


def test_rejected_records_are_listed_and_only_they_are_sent_again(users_project, receiver):
    bad = {"7", "42"}
    receiver.reject = lambda record: "invalid email" if record["key"] in bad else None
    project = users_project(rows=100)
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 1
    result = outcome.json_lines()[0]
    assert (result["status"], result["delivered"], result["rejected"]) == ("partial", 98, 2)

    listed = project.cli("rejected", "users", "--json").json_lines()
    assert sorted((r["key"], r["reason"], r["error"], r["attempts"]) for r in listed) == [
        ("42", "rejected", "invalid email", 1),
        ("7", "rejected", "invalid email", 1),
    ]

    receiver.requests.clear()
    again = project.cli("run", "users", "--json")
    assert again.exit_code == 1
    assert sorted(k for r in receiver.requests for k in r["keys"]) == ["42", "7"]
    assert [r["attempts"] for r in project.cli("rejected", "users", "--json").json_lines()] == [
        2,
        2,
    ]

    receiver.reject = None
    fixed = project.cli("run", "users", "--json")
    assert fixed.exit_code == 0 and fixed.json_lines()[0]["delivered"] == 2
    assert project.cli("rejected", "users", "--json").stdout == ""
    assert received(receiver) == expected_users(project)


def test_null_and_duplicate_keys_are_invalid_and_never_sent(project, receiver):
    project.warehouse("""
        create table people as select * from (values
            (1, 'a'), (2, 'b'), (2, 'b again'), (null, 'nobody'), (3, 'c'), (null, 'nobody 2'))
            t(id, name)""")
    project.webhook("hook", receiver.url)
    project.sync(
        "people", {"destination": "hook", "primary_key": "id"}, "select id, name from people"
    )
    outcome = project.cli("run", "people", "--json")
    assert outcome.exit_code == 1
    result = outcome.json_lines()[0]
    assert (result["rows"], result["invalid"], result["delivered"], result["status"]) == (
        6,
        4,
        2,
        "partial",
    )
    assert sorted(receiver.data) == ["1", "3"]

    listed = project.cli("rejected", "people", "--json").json_lines()
    assert all(r["reason"] == "invalid" for r in listed)
    by_key = {r["key"]: r["error"] for r in listed if r["key"] is not None}
    assert by_key == {"2": "primary key value appears in 2 rows"}
    nulls = [r["error"] for r in listed if r["key"] is None]
    assert len(nulls) == 2 and all("primary key is NULL" in e for e in nulls)
    assert any('"nobody 2"' in e for e in nulls), "the NULL-key row is identified by its fields"

    project.warehouse(
        "delete from people where id = 2 and name = 'b again'; delete from people where id is null"
    )
    clean = project.cli("run", "people", "--json")
    assert clean.exit_code == 0 and clean.json_lines()[0]["delivered"] == 1
    assert project.cli("rejected", "people", "--json").stdout == ""


def test_runs_history_newest_first(users_project, receiver):
    project = users_project(rows=5)
    project.cli("run", "users")
    project.warehouse("update users set tier = 8 where id = 1")
    project.cli("run", "users")
    runs = project.cli("runs", "--json").json_lines()
    assert [r["delivered"] for r in runs] == [1, 5]
    assert all(r["status"] == "success" and r["finished_at"] >= r["started_at"] for r in runs)
    assert set(runs[0]) >= {
        "sync",
        "run_id",
        "status",
        "rows",
        "added",
        "changed",
        "removed",
        "unchanged",
        "invalid",
        "delivered",
        "rejected",
        "failed",
        "duration_seconds",
        "started_at",
        "finished_at",
    }
    assert project.cli("runs", "users", "--limit", "1", "--json").json_lines() == runs[:1]
    human = project.cli("runs")
    assert human.exit_code == 0 and "users" in human.stdout


def test_composite_keys_and_object(project, receiver):
    project.warehouse(
        "create table t as select * from (values (7, 'eu', 1), (7, 'us', 2)) v(id, region, n)"
    )
    project.webhook("hook", receiver.url)
    project.sync(
        "t",
        {"destination": "hook", "primary_key": ["id", "region"], "object": "accounts"},
        "select id, region, n from t",
    )
    assert project.cli("run", "t").exit_code == 0
    assert sorted(receiver.data) == ['[7,"eu"]', '[7,"us"]']
    assert json.loads(sorted(receiver.data)[0]) == [7, "eu"]


def test_a_new_hash_function_resends_nothing(users_project, receiver):
    """DuckDB may change hash() across versions: the snapshot is then compared by its fields."""
    import duckdb

    project = users_project(rows=40)
    project.cli("run", "users")
    state = project.root / ".reverse_etl" / "syncs" / "users.duckdb"
    with duckdb.connect(str(state)) as con:  # as if written by a DuckDB whose hash() differs
        con.execute("UPDATE snapshot SET hash = hash + 1")
        con.execute("UPDATE meta SET value = 'another hash function' WHERE name = 'hash_scheme'")
    project.warehouse("update users set tier = 5 where id = 1")
    result = project.cli("run", "users", "--json").json_lines()[0]
    assert (result["changed"], result["unchanged"], result["delivered"]) == (1, 39, 1)
    with duckdb.connect(str(state)) as con:
        assert con.execute("SELECT value FROM meta").fetchone()[0] != "another hash function"
    after = project.cli("run", "users", "--json").json_lines()[0]
    assert (after["changed"], after["unchanged"]) == (0, 40), "hashes were rewritten"


def test_a_delivered_key_that_becomes_duplicated_is_invalid(users_project, receiver):
    project = users_project(rows=10)
    project.cli("run", "users")
    # one exact copy of a delivered row, one changed copy of another
    project.warehouse("""
        insert into users select * from users where id = 5;
        insert into users select id, 'other@example.com', tier, score from users where id = 6""")
    receiver.requests.clear()
    outcome = project.cli("run", "users", "--json")
    assert outcome.exit_code == 1
    result = outcome.json_lines()[0]
    assert (result["rows"], result["invalid"], result["unchanged"]) == (12, 4, 8)
    assert result["delivered"] == 0 and receiver.requests == []
    listed = project.cli("rejected", "users", "--json").json_lines()
    assert sorted((r["key"], r["reason"]) for r in listed) == [("5", "invalid"), ("6", "invalid")]
    plan = project.cli("plan", "users", "--json").json_lines()[0]
    assert (plan["invalid"], plan["unchanged"]) == (4, 8)


def test_switching_to_mirror_keeps_delete_fields(users_project, receiver):
    """Only mirror syncs keep delivered fields (their deletes carry them); a sync that becomes
    a mirror learns them from its unchanged rows, without sending anything."""
    project = users_project(rows=6, mode="upsert")
    project.cli("run", "users")
    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "mode": "mirror"},
        "select id, email, tier, score from users",
    )
    receiver.requests.clear()
    switched = project.cli("run", "users", "--json").json_lines()[0]
    assert (switched["unchanged"], switched["delivered"]) == (6, 0)
    assert receiver.requests == []
    project.warehouse("delete from users where id = 4")
    assert project.cli("run", "users").exit_code == 0
    [request] = receiver.requests
    body = json.loads(request["raw"])
    assert body["operation"] == "delete"
    assert body["records"] == [
        {"key": "4", "fields": {"id": 4, "email": "user4@example.com", "tier": 1, "score": 6.0}}
    ]
    assert "4" not in receiver.data
