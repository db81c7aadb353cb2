from __future__ import annotations


def test_first_run_sends_every_row_and_second_sends_nothing(users_project, receiver):
    project = users_project(rows=250)
    first = project.cli("run", "users", "--json")
    assert first.exit_code == 0, first.stderr
    [result] = first.json_lines()
    assert result["added"] == 250 and result["delivered"] == 250
    assert len(receiver.data) == 250
    requests = len(receiver.requests)
    second = project.cli("run", "users", "--json")
    assert second.exit_code == 0
    assert second.json_lines()[0]["unchanged"] == 250
    assert len(receiver.requests) == requests
