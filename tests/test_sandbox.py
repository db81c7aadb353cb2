"""A model reads the warehouse and nothing else (docs/warehouses.md, "DuckDB"): in the embedded
DuckDB warehouse no model reads a file, writes one, attaches a database, loads an extension or
turns any of that back on; so no model can read the destination tokens in the process's
environment and send them anywhere. Folders are readable only when listed in
`[warehouse] allowed_directories`."""

from __future__ import annotations

import json

import pytest

TOKEN = "tok-SANDBOX-7f3a9c21"

ESCAPES = {
    "environ": "select 1 as id, content from read_text('/proc/self/environ')",
    "environ_blob": "select 1 as id, content::varchar as c from read_blob('/proc/self/environ')",
    "passwd": "select row_number() over () as id, * from read_csv('/etc/passwd')",
    "attach": "attach '{other}' as other; select id, secret from other.loot",
    "attach_in_query": "select 1 as id from (attach '{other}' as other)",
    "copy": "copy (select 1 as id) to '{copied}'",
    "enable": "set enable_external_access = true; select 1 as id",
    "install": "install httpfs; select 1 as id",
    "load": "load httpfs; select 1 as id",
    "getenv": "select 1 as id, getenv('CRM_TOKEN') as token",
    "glob": "select row_number() over () as id, file from glob('/proc/self/*')",
}


@pytest.fixture
def leaky(project, receiver, tmp_path):
    """A project whose destination holds a token from the environment, as a real one does."""
    project.warehouse("create table users as select 1 as id, 'a@example.com' as email")
    project.webhook("crm", receiver.url, headers={"Authorization": "Bearer ${CRM_TOKEN}"})
    other = tmp_path / "other.duckdb"
    import duckdb

    with duckdb.connect(str(other)) as con:
        con.execute(f"create table loot as select 1 as id, '{TOKEN}' as secret")
    return project, other, tmp_path / "copied.csv"


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_a_model_cannot_reach_outside_the_warehouse(leaky, receiver, name):
    project, other, copied = leaky
    sql = ESCAPES[name].format(other=other, copied=copied)
    project.sync(name, {"destination": "crm", "primary_key": "id"}, sql)
    env = {"CRM_TOKEN": TOKEN}
    run = project.command("run", name, env=env)
    validate = project.command("validate", env=env)
    runs = project.command("runs", "--json", env=env)
    assert run.exit_code == 2, run
    assert f"syncs/{name}.sql" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert validate.exit_code == 2 and f"syncs/{name}.sql" in validate.stderr, validate
    assert receiver.requests == []  # nothing was sent, the token least of all
    assert not copied.exists()
    for text in (run.stdout, run.stderr, validate.stdout, validate.stderr, runs.stdout):
        assert TOKEN not in text


def test_reading_a_file_says_what_to_do(leaky):
    project, _, _ = leaky
    project.sync("environ", {"destination": "crm", "primary_key": "id"}, ESCAPES["environ"])
    run = project.command("run", "environ", env={"CRM_TOKEN": TOKEN})
    assert "allowed_directories" in run.stderr and "syncs/environ.sql:3" in run.stderr, run


def test_allowed_directories_let_models_read_those_folders_only(project, receiver, tmp_path):
    project.warehouse("create table users as select 1 as id")
    (project.root / "data").mkdir()
    (project.root / "data" / "people.csv").write_text("id,email\n1,a@example.com\n2,b@x.org\n")
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("id,email\n9,leak@example.com\n")
    (project.root / "config.toml").write_text('[warehouse]\nallowed_directories = ["data"]\n')
    project.webhook("hook", receiver.url)
    project.sync(
        "people",
        {"destination": "hook", "primary_key": "id"},
        f"select id, email from read_csv('{project.root / 'data' / 'people.csv'}')",
    )
    project.sync(
        "elsewhere",
        {"destination": "hook", "primary_key": "id"},
        f"select id, email from read_csv('{secret}')",
    )
    first = project.cli("run", "people", "--json")
    assert first.exit_code == 0 and first.json_lines()[0]["delivered"] == 2, first
    (project.root / "data" / "people.csv").write_text("id,email\n1,a@example.com\n")
    second = project.cli("run", "people", "--json")  # the outbox and the fold still work
    assert second.exit_code == 0, second
    assert second.json_lines()[0]["delivered"] == 0 and second.json_lines()[0]["removed"] == 1
    refused = project.cli("run", "elsewhere", "--json")
    assert refused.exit_code == 2 and "syncs/elsewhere.sql" in refused.stderr, refused
    assert "leak@example.com" not in str(receiver.requests)


def test_allowed_directories_is_for_the_duckdb_warehouse(project):
    (project.root / "config.toml").write_text(
        '[warehouse]\ntype = "postgres"\ndsn = "postgresql://u@127.0.0.1/db"\n'
        'allowed_directories = ["data"]\n'
    )
    outcome = project.cli("validate")
    assert outcome.exit_code == 2 and "config.toml" in outcome.stderr, outcome
    assert "allowed_directories" in outcome.stderr


def test_a_model_cannot_name_the_engines_python_variables(project, receiver):
    """DuckDB's replacement scans would let a model read a DataFrame or Arrow table by the
    name of a variable in the engine's code: off, and locked off."""
    project.warehouse("create table t as select 1 as id")
    project.webhook("hook", receiver.url)
    project.sync(
        "s",
        {"destination": "hook", "primary_key": "id"},
        "select id, current_setting('python_enable_replacements') as replacements from t",
    )
    assert project.cli("run", "s").exit_code == 0
    assert receiver.data == {"1": {"id": 1, "replacements": False}}


@pytest.mark.parametrize(
    ("listed", "why"),
    [
        ("nope", "is not a folder"),
        ("/", "the machine's files"),
        ("/proc", "the machine's files"),
        ("/proc/self", "the machine's files"),
        ("/etc/ssl", "the machine's files"),
        (".", "holds the state folder"),
    ],
)
def test_allowed_directories_that_would_open_too_much_are_refused(project, listed, why):
    project.warehouse("create table users as select 1 as id")
    (project.root / "config.toml").write_text(
        f'[warehouse]\nallowed_directories = ["{listed}"]\n'
    )
    outcome = project.cli("validate", "--json")
    assert outcome.exit_code == 2
    [error] = [e for e in json.loads(outcome.stdout)["errors"] if e["file"] == "config.toml"]
    assert error["line"] == 2 and why in error["message"], error
