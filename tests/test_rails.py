"""Safety rails: a run that looks like a broken model is held, sends nothing, changes nothing,
and goes through only when approved (or forced)."""

from __future__ import annotations


def test_mirror_deleting_most_records_is_held_until_approved(users_project, receiver):
    project = users_project(rows=10, mode="mirror")
    project.cli("run", "users")
    project.warehouse("delete from users where id > 4")  # 6 of 10 would be deleted
    receiver.requests.clear()
    held = project.cli("run", "users", "--json")
    assert held.exit_code == 1
    result = held.json_lines()[0]
    assert result["status"] == "held" and result["delivered"] == 0
    assert "6 of 10" in result["reason"] and "max_delete_fraction 0.5" in result["reason"]
    assert receiver.requests == [] and len(receiver.data) == 10
    assert "held: users:" in held.stderr
    assert project.cli("runs", "--json").json_lines()[0]["status"] == "held"
    again = project.cli("run", "users", "--json").json_lines()[0]
    assert again["status"] == "held" and again["removed"] == 6, "nothing was forgotten"

    approved = project.cli("approve", "users", "--json")
    assert approved.exit_code == 0
    assert approved.json_lines()[0]["delivered"] == 6
    assert sorted(receiver.data) == ["1", "2", "3", "4"]


def test_a_setting_raises_the_delete_limit(users_project, receiver):
    project = users_project(rows=10, mode="mirror")
    project.cli("run", "users")
    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "mode": "mirror", "max_delete_fraction": 0.7},
        "select id, email, tier, score from users",
    )
    project.warehouse("delete from users where id > 4")
    result = project.cli("run", "users", "--json").json_lines()[0]
    assert (result["status"], result["delivered"]) == ("success", 6)


def test_a_model_that_suddenly_returns_nothing_is_held(users_project, receiver):
    project = users_project(rows=10, mode="upsert")
    project.cli("run", "users")
    project.warehouse("delete from users")
    held = project.cli("run", "users", "--json")
    assert held.exit_code == 1
    assert "returned no rows" in held.json_lines()[0]["reason"]
    assert project.cli("plan", "users", "--json").json_lines()[0]["removed"] == 10
    forced = project.cli("run", "users", "--force", "--json").json_lines()[0]
    assert (forced["status"], forced["removed"]) == ("success", 10)
    project.warehouse("insert into users values (1, 'back@example.com', 0, 1.00)")
    assert project.cli("run", "users", "--json").json_lines()[0]["status"] == "success"


def test_an_empty_first_run_is_not_held(project, receiver):
    project.warehouse("create table t as select 1 as id where false")
    project.webhook("hook", receiver.url)
    project.sync("t", {"destination": "hook", "primary_key": "id"}, "select id from t")
    assert project.cli("run", "t", "--json").json_lines()[0]["status"] == "success"
