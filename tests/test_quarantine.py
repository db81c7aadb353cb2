"""A record the destination keeps rejecting is quarantined: not resent until its data changes
or `reverse-etl retry` is run, and always listed by `reverse-etl rejected`."""

from __future__ import annotations


def sent_keys(receiver) -> list[str]:
    return [key for request in receiver.requests for key in request["keys"]]


def test_rejected_three_times_in_a_row_is_quarantined(users_project, receiver):
    receiver.reject = lambda record: "invalid email" if record["key"] == "7" else None
    project = users_project(rows=10, max_attempts=3)
    for _ in range(3):
        assert project.cli("run", "users").exit_code == 1
    assert sent_keys(receiver).count("7") == 3
    [entry] = project.cli("rejected", "users", "--json").json_lines()
    assert entry["key"] == "7" and entry["reason"] == "rejected"
    assert entry["error"] == "quarantined after 3 rejections: invalid email"

    receiver.requests.clear()
    quiet = project.cli("run", "users", "--json")
    assert quiet.exit_code == 1, "a quarantined record is still not delivered"
    assert quiet.json_lines()[0]["rejected"] == 1
    assert receiver.requests == [], "not resent while its data is unchanged"
    assert len(project.cli("rejected", "users", "--json").json_lines()) == 1

    project.warehouse("update users set email = 'fixed@example.com' where id = 7")
    project.cli("run", "users")
    assert sent_keys(receiver) == ["7"], "changed data is sent again"

    receiver.reject = None
    receiver.requests.clear()
    assert project.cli("run", "users").exit_code == 1  # quarantined again at its new data
    assert receiver.requests == []
    retried = project.cli("retry", "users", "--json")
    assert retried.exit_code == 0
    assert sent_keys(receiver) == ["7"]
    assert project.cli("rejected", "users", "--json").stdout == ""
    assert receiver.data["7"]["email"] == "fixed@example.com"


def test_a_failure_breaks_the_streak(users_project, receiver):
    state = {"run": 0}
    receiver.reject = lambda record: "no" if record["key"] == "3" and state["run"] != 1 else None

    def fail_second_run(body, headers):
        return (404, {}, b"gone for a while") if state["run"] == 1 else None

    receiver.intercept = fail_second_run
    project = users_project(rows=5, max_attempts=2)
    for run in range(3):  # rejected, failed, rejected: never twice in a row
        state["run"] = run
        project.cli("run", "users")
    [entry] = project.cli("rejected", "users", "--json").json_lines()
    assert entry["error"] == "no", "not quarantined"


def test_a_sync_pointed_at_another_target_starts_its_quarantine_over(users_project, receiver):
    """What the old target refused says nothing of the new one: sent there, and not listed."""
    receiver.reject = lambda record: "no" if record["key"] == "7" else None
    project = users_project(rows=10, max_attempts=2)
    for _ in range(3):
        project.cli("run", "users")
    [entry] = project.cli("rejected", "users", "--json").json_lines()
    assert entry["error"] == "quarantined after 2 rejections: no"

    receiver.reject = None
    receiver.requests.clear()
    project.sync(
        "users",
        {"destination": "hook", "primary_key": "id", "object": "people"},
        "select id, email, tier, score from users",
    )
    moved = project.cli("run", "users", "--json")
    assert moved.exit_code == 0, moved.stdout
    assert sorted(sent_keys(receiver), key=int) == [str(i) for i in range(1, 11)]
    assert project.cli("rejected", "users", "--json").stdout == ""
