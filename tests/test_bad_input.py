"""Bad input of every kind is answered with exit code 2 and a message on stderr that names the
file (and the line where there is one), never with a Python traceback; nothing is sent and no
state is lost. `.command` runs the real CLI in a subprocess (what users see); `.cli` runs it in
this process (fast) and lets a traceback escape as a test error."""

from __future__ import annotations

import contextlib
import json
import re
import textwrap
from collections.abc import Iterator

import duckdb
import pytest
from conftest import Outcome, ProjectFixture

from reverse_etl.destinations.webhook.receiver import WebhookReceiver

GOOD_SQL = "select id, email from users"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No REVERSE_ETL_* setting or token from the outer environment leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("REVERSE_ETL_") or name in ("CRM_TOKEN", "HOOK_URL"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def _one_receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def receiver(_one_receiver: WebhookReceiver) -> WebhookReceiver:
    """One receiver for the module, emptied before each test (stopping a receiver takes half a
    second: that, per test, was most of this file's time)."""
    with _one_receiver.lock:
        _one_receiver.requests.clear()
        _one_receiver.data.clear()
        _one_receiver.received.clear()
        _one_receiver.answered.clear()  # each test's project is new: no replayed answers
    return _one_receiver


@pytest.fixture
def base(project: ProjectFixture, receiver) -> ProjectFixture:
    """A valid project: a `users` table, a webhook `hook` to the receiver, a sync `good`."""
    project.warehouse("""
        create table users as
        select i as id, 'user' || i || '@example.com' as email from range(1, 6) t(i)""")
    project.webhook("hook", receiver.url)
    project.sync("good", {"destination": "hook", "primary_key": "id"}, GOOD_SQL)
    return project


def write(project: ProjectFixture, relative: str, text: str) -> None:
    path = project.root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))


def assert_refused(outcome: Outcome, where: str, *fragments: str) -> str:
    """Exit 2; stderr names `where` ("file" or "file:line") and every fragment; no traceback.
    Returns stderr."""
    assert outcome.exit_code == 2, (outcome.exit_code, outcome.stdout, outcome.stderr)
    err = outcome.stderr
    assert "Traceback" not in err and "Traceback" not in outcome.stdout, err
    has_line = re.search(r":\d+$", where) is not None
    pattern = r"(^|\s)" + re.escape(where) + ("" if has_line else r"(:\d+)?") + ":"
    assert re.search(pattern, err, re.M), f"{where!r} not in:\n{err}"
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in:\n{err}"
    return err


def validate_json(project: ProjectFixture, **kwargs) -> tuple[Outcome, dict]:
    outcome = project.cli("validate", "--json", **kwargs)
    assert "Traceback" not in outcome.stderr
    [document] = outcome.json_lines()
    return outcome, document


def error_at(document: dict, file: str) -> list[dict]:
    return [e for e in document["errors"] if e["file"] == file]


# -- SQL -------------------------------------------------------------------------------------


def test_sql_syntax_error_names_the_file_line_of_the_error(base, receiver):
    write(
        base,
        "syncs/broken.sql",
        """
        -- destination = "hook"
        -- primary_key = "id"
        select id,
               email
        from users
        where id = = 3
        """,
    )
    # the real command, as users run it: no traceback, exit 2, the file and its line 6
    assert_refused(base.command("run", "broken"), "syncs/broken.sql:6", "SQL syntax error")
    assert_refused(base.cli("validate"), "syncs/broken.sql:6", "SQL syntax error")
    assert receiver.requests == []


def test_sql_syntax_error_after_a_blank_line_and_comments_keeps_file_lines(base):
    write(
        base,
        "syncs/broken.sql",
        """
        -- # prose in the header
        -- destination = "hook"
        -- primary_key = "id"

        -- an ordinary SQL comment
        select id, email
        frm users
        """,
    )
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/broken.sql")
    assert error["line"] == 7, error


@pytest.mark.parametrize(
    "sql, line, what",
    [
        ("select id,\n  'unclosed\nfrom users", 4, "'"),
        ('select id,\n  "unclosed\nfrom users', 4, '"'),
        ("select id, email\nfrom users\n/* a comment left open", 5, "/*"),
    ],
    ids=["string", "identifier", "comment"],
)
def test_an_unclosed_quote_or_comment_is_a_syntax_error_on_its_line(base, sql, line, what):
    base.sync("open", {"destination": "hook", "primary_key": "id"}, sql)
    assert_refused(
        base.cli("run", "open"),
        f"syncs/open.sql:{line}",
        "SQL syntax error",
        f"{what} is opened here and never closed",
    )


WRITES = {  # the SQL (from line 3 of the file), what the message names, the line it names
    "delete": ("delete from users", "DELETE", 3),
    "update": ("update users set email = null", "UPDATE", 3),
    "insert": ("insert into users values (9, 'x')", "INSERT", 3),
    "ddl": ("drop table users", "DROP", 3),
    "two statements": (
        "select id, email from users;\nselect id, email from users",
        "found 2 statements",
        4,
    ),
    "select into": ("select id, email\ninto copy_of_users from users", "SELECT ... INTO", 4),
    "delete in a cte": (
        "with gone as (delete from users returning *)\nselect id, email from gone",
        "DELETE",
        3,
    ),
    "insert in a cte": (
        "with kept as (select 1)\n, added as (insert into users values (9, 'x') "
        "returning *)\nselect id, email from added",
        "INSERT",
        4,
    ),
}


@pytest.mark.parametrize("sql, kind, line", WRITES.values(), ids=WRITES.keys())
def test_a_model_that_is_not_one_read_only_query_is_refused(base, receiver, sql, kind, line):
    base.sync("writer", {"destination": "hook", "primary_key": "id"}, sql)
    validate = base.cli("validate")
    assert_refused(validate, f"syncs/writer.sql:{line}", kind)
    run = base.cli("run", "writer")
    assert_refused(run, f"syncs/writer.sql:{line}", kind)
    assert receiver.requests == []
    with duckdb.connect(str(base.root / "warehouse.duckdb"), read_only=True) as con:
        assert con.execute("select count(*) from users").fetchone() == (5,)
        assert "copy_of_users" not in {r[0] for r in con.execute("show tables").fetchall()}


def test_the_second_statement_is_reported_on_its_own_line(base):
    write(
        base,
        "syncs/two.sql",
        """
        -- destination = "hook"
        -- primary_key = "id"
        select id, email from users;

        select id from users
        """,
    )
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/two.sql")
    assert error["line"] == 5 and "exactly one query" in error["message"], error


def test_a_write_in_a_cte_is_reported_on_its_line(base):
    write(
        base,
        "syncs/cte.sql",
        """
        -- destination = "hook"
        -- primary_key = "id"
        with kept as (select id, email from users),
             gone as (delete from users returning *)
        select id, email from kept
        """,
    )
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/cte.sql")
    assert error["line"] == 4 and "DELETE" in error["message"], error


def test_an_empty_model_is_refused(base):
    write(base, "syncs/empty.sql", '-- destination = "hook"\n-- primary_key = "id"\n')
    assert_refused(base.cli("run", "empty"), "syncs/empty.sql", "no SQL")


# -- primary key -----------------------------------------------------------------------------


def test_primary_key_not_among_explicit_columns(base, receiver):
    base.sync("nokey", {"destination": "hook", "primary_key": "user_id"}, GOOD_SQL)
    for outcome in (base.cli("validate"), base.cli("run", "nokey"), base.cli("plan", "nokey")):
        assert_refused(outcome, "syncs/nokey.sql:2", "'user_id'", "id, email")
    assert receiver.requests == []


def test_composite_primary_key_with_one_missing_column(base):
    base.sync("nokey", {"destination": "hook", "primary_key": ["id", "region"]}, GOOD_SQL)
    assert_refused(base.cli("validate"), "syncs/nokey.sql:2", "'region'")


def test_primary_key_not_among_star_columns_only_the_warehouse_can_tell(base, receiver):
    base.sync("star", {"destination": "hook", "primary_key": "user_id"}, "select * from users")
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/star.sql")
    assert error["line"] == 2 and "'user_id'" in error["message"], error
    assert "id, email" in error["message"]  # the columns the warehouse gave
    run = base.cli("run", "star", "--json")
    assert_refused(run, "syncs/star.sql:2", "'user_id'")
    [result] = run.json_lines()
    assert result["status"] == "error" and "user_id" in result["error"]
    assert receiver.requests == []


# -- destinations ----------------------------------------------------------------------------


def test_unknown_destination_lists_the_known_ones(base, receiver):
    base.webhook("crm", receiver.url)
    base.sync("lost", {"primary_key": "id", "destination": "x"}, GOOD_SQL)
    for outcome in (base.cli("validate"), base.cli("run", "lost")):
        assert_refused(
            outcome,
            "syncs/lost.sql:2",
            "unknown destination 'x'",
            "destinations/x.toml",
            "crm, hook",
        )
    assert receiver.requests == []


def test_unknown_destination_type_lists_the_known_types(base):
    base.destination("crm", 'url = "https://example.com"\ntype = "salesforse"')
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    assert_refused(
        base.cli("validate"),
        "destinations/crm.toml:2",
        "unknown destination type 'salesforse'",
        "webhook",
    )
    assert_refused(base.command("run", "to_crm"), "destinations/crm.toml:2", "known types")


def test_missing_destination_type(base):
    base.destination("crm", 'url = "https://example.com"')
    assert_refused(base.cli("validate"), "destinations/crm.toml", "missing key 'type'", "webhook")


def test_missing_environment_variable_names_variable_and_line(base, receiver):
    base.destination(
        "crm",
        f"""
        type = "webhook"
        url = "{receiver.url}"
        headers = {{ Authorization = "Bearer ${{CRM_TOKEN}}" }}
        """,
    )
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    run = base.command("run", "to_crm")
    assert_refused(run, "destinations/crm.toml:3", "CRM_TOKEN", "not set")
    assert_refused(base.cli("validate"), "destinations/crm.toml:3", "CRM_TOKEN")
    assert receiver.requests == []
    # once set, the same project runs and the token is sent, never shown
    ok = base.cli("run", "to_crm", "--json", env={"CRM_TOKEN": "s3cret-token"})
    assert ok.exit_code == 0, ok.stderr
    assert receiver.requests[0]["headers"]["authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in ok.stdout + ok.stderr


@pytest.mark.parametrize(
    "destination, where, message",
    [
        (  # an unset ${VAR:-} leaves "Bearer ": HTTP forbids the trailing space
            'type = "webhook"\nurl = "{url}"\n'
            'headers = {{ Authorization = "Bearer ${{NO_TOKEN:-}}" }}',
            "destinations/crm.toml:3",
            "starts or ends with a space",
        ),
        (
            'type = "webhook"\nurl = "{url}"\nheaders = {{ X-Name = "Zoë" }}',
            "destinations/crm.toml:3",
            "printable ASCII",
        ),
        (
            'type = "hubspot"\naccess_token = "${{NO_TOKEN:-}}"',
            "destinations/crm.toml:2",
            "access_token: is empty",
        ),
        (
            'type = "salesforce"\ninstance_url = "{url}"\naccess_token = " ${{NO_TOKEN:-}}"',
            "destinations/crm.toml:3",
            "access_token: is empty",
        ),
        (  # a zero-width space pasted in the middle of a token
            'type = "hubspot"\naccess_token = "pat-na1-\u200babc"',
            "destinations/crm.toml:2",
            "a character an HTTP header cannot carry",
        ),
        (
            'type = "braze"\nrest_endpoint = "{url}"\napi_key = "k-1\\nk-2"',
            "destinations/crm.toml:3",
            "a character an HTTP header cannot carry",
        ),
    ],
)
def test_a_header_or_token_no_request_can_carry_is_named(
    base, receiver, monkeypatch, destination, where, message
):
    """A value the HTTP client would refuse at the first request (after 20 s of retries, as
    an 'unreachable' destination) is named on its line at validation, and nothing is sent."""
    monkeypatch.delenv("NO_TOKEN", raising=False)
    base.destination("crm", destination.format(url=receiver.url))
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    assert_refused(base.cli("validate"), where, message)
    assert_refused(base.command("run", "to_crm"), where, message)
    assert_refused(base.cli("check", "crm"), where, message)
    assert receiver.requests == []


@pytest.mark.parametrize(
    "destination, key",
    [
        ('type = "webhook"\nurl = "{url}{bad}"', "url"),
        ('type = "hubspot"\naccess_token = "t-1"\nbase_url = "{url}{bad}"', "base_url"),
        ('type = "salesforce"\naccess_token = "t-1"\ninstance_url = "{url}{bad}"', "instance_url"),
        ('type = "braze"\napi_key = "k-1"\nrest_endpoint = "{url}{bad}"', "rest_endpoint"),
    ],
)
@pytest.mark.parametrize("bad", ["\\u007f", "\\u00e9", " x"])
def test_a_url_no_request_can_carry_is_named_on_its_line(base, receiver, destination, key, bad):
    """A URL with a control character, a non-ASCII letter or a space: every type's URL setting
    says so at validation (it was found out at the first request, as a bug in the adapter)."""
    text = destination.format(url=receiver.url.rsplit("/", 1)[0], bad=bad)
    base.destination("crm", text)
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    line = text.splitlines().index(next(x for x in text.splitlines() if x.startswith(key))) + 1
    assert_refused(base.cli("validate"), f"destinations/crm.toml:{line}", key, "percent-encode")
    assert receiver.requests == []


def test_a_url_scheme_in_capitals_is_a_url(base, receiver):
    base.destination("crm", f'type = "webhook"\nurl = "{receiver.url.replace("http", "HTTP")}"')
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    outcome = base.cli("run", "to_crm", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert len(receiver.requests) == 1


def test_variable_default_and_escape(base, receiver, monkeypatch):
    base.destination(
        "crm",
        f"""
        type = "webhook"
        url = "${{HOOK_URL:-{receiver.url}}}"
        headers = {{ X-Template = "$${{NOT_A_VARIABLE}}", X-Empty = "${{UNSET_VAR:-}}" }}
        """,
    )
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    monkeypatch.delenv("NOT_A_VARIABLE", raising=False)
    monkeypatch.delenv("UNSET_VAR", raising=False)
    assert base.cli("validate").exit_code == 0
    ok = base.cli("run", "to_crm")
    assert ok.exit_code == 0, ok.stderr
    headers = receiver.requests[0]["headers"]
    assert headers["x-template"] == "${NOT_A_VARIABLE}"
    assert headers["x-empty"] == ""
    assert len(receiver.data) == 5


def test_a_secret_from_the_environment_never_appears_in_an_error(base):
    base.destination("crm", 'type = "webhook"\nurl = "${HOOK_URL}"')
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    secret = "hooks.example.com/T0KEN-abc123"  # no scheme: invalid, and a secret
    for outcome in (
        base.cli("validate", env={"HOOK_URL": secret}),
        base.cli("run", "to_crm", "--json", env={"HOOK_URL": secret}),
    ):
        assert_refused(outcome, "destinations/crm.toml:2", "url")
        assert "T0KEN-abc123" not in outcome.stdout + outcome.stderr


def test_a_bad_destination_value_names_key_and_line(base):
    base.destination("crm", 'type = "webhook"\nurl = "https://example.com"\nbatch_size = 0')
    assert_refused(base.cli("validate"), "destinations/crm.toml:3", "batch_size")


# -- malformed TOML --------------------------------------------------------------------------


def test_malformed_toml_in_config(base):
    write(
        base,
        "config.toml",
        """
        [warehouse]
        type = "duckdb"
        path = "warehouse.duckdb
        """,
    )
    assert_refused(base.command("validate"), "config.toml:3", "invalid TOML")
    assert_refused(base.cli("run", "good"), "config.toml:3", "invalid TOML")


def test_malformed_toml_in_config_is_reported_by_validate_json_with_the_rest(base):
    write(base, "config.toml", "[warehouse\n")
    base.sync("nokey", {"destination": "hook", "primary_key": "user_id"}, GOOD_SQL)
    outcome, document = validate_json(base)
    assert outcome.exit_code == 2
    assert document["ok"] is False
    assert {(e["file"], e["line"]) for e in document["errors"]} == {
        ("config.toml", 1),
        ("syncs/nokey.sql", 2),
    }


def test_malformed_toml_in_a_destination(base, receiver):
    base.destination("crm", 'type = "webhook"\nurl = https://example.com\n')
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    assert_refused(base.cli("validate"), "destinations/crm.toml:2", "invalid TOML")
    assert_refused(base.cli("run", "to_crm"), "destinations/crm.toml:2", "invalid TOML")
    assert receiver.requests == []


def test_malformed_toml_in_a_sync_header_has_the_file_line(base):
    write(
        base,
        "syncs/bad_header.sql",
        """
        -- # what this sync is for
        -- destination = "hook"
        -- primary_key = [id]
        select id, email from users
        """,
    )
    assert_refused(base.cli("validate"), "syncs/bad_header.sql:3", "invalid TOML")
    assert_refused(base.cli("run", "bad_header"), "syncs/bad_header.sql:3", "invalid TOML")


def test_missing_header_keys_are_named(base):
    write(base, "syncs/bare.sql", "select id, email from users\n")
    err = assert_refused(base.cli("validate"), "syncs/bare.sql", "'destination'")
    assert "'primary_key'" in err


def test_bad_header_values_are_named_with_their_line(base):
    base.sync(
        "bad",
        {"destination": "hook", "primary_key": "id", "mode": "sideways", "batch_size": 0},
        GOOD_SQL,
    )
    _, document = validate_json(base)
    errors = error_at(document, "syncs/bad.sql")
    assert sorted(e["line"] for e in errors) == [3, 4], errors
    assert any("mode" in e["message"] and "upsert" in e["message"] for e in errors)


def test_a_bad_schedule_is_reported_at_validation(base):
    base.sync(
        "sched",
        {"destination": "hook", "primary_key": "id", "schedule": "every five minutes"},
        GOOD_SQL,
    )
    base.sync(
        "cron", {"destination": "hook", "primary_key": "id", "schedule": "61 * * * *"}, GOOD_SQL
    )
    base.sync(
        "fine", {"destination": "hook", "primary_key": "id", "schedule": "*/15 * * * *"}, GOOD_SQL
    )
    base.sync(
        "every", {"destination": "hook", "primary_key": "id", "schedule": "every 30s"}, GOOD_SQL
    )
    _, document = validate_json(base)
    assert {(e["file"], e["line"]) for e in document["errors"]} == {
        ("syncs/sched.sql", 3),
        ("syncs/cron.sql", 3),
    }, document


def test_after_naming_no_sync_or_making_a_cycle_is_reported_in_each_file(base):
    hook = {"destination": "hook", "primary_key": "id"}
    base.sync("a", {**hook, "after": ["c"]}, GOOD_SQL)
    base.sync("b", {**hook, "after": ["a"]}, GOOD_SQL)
    base.sync("c", {**hook, "after": ["b"]}, GOOD_SQL)
    base.sync("self", {**hook, "after": "self"}, GOOD_SQL)
    base.sync("typo", {**hook, "after": ["goood"]}, GOOD_SQL)
    base.sync("fine", {**hook, "after": ["good"]}, GOOD_SQL)
    outcome, document = validate_json(base)
    assert outcome.exit_code == 2
    assert {(e["file"], e["line"]) for e in document["errors"]} == {
        ("syncs/a.sql", 3),
        ("syncs/b.sql", 3),
        ("syncs/c.sql", 3),
        ("syncs/self.sql", 3),
        ("syncs/typo.sql", 3),
    }, document
    [cycle] = error_at(document, "syncs/b.sql")
    assert "a after c after b after a is a cycle" in cycle["message"], cycle
    [itself] = error_at(document, "syncs/self.sql")
    assert "self after self is a cycle" in itself["message"], itself
    [typo] = error_at(document, "syncs/typo.sql")
    assert "no sync named 'goood'" in typo["message"] and "did you mean 'good'" in typo["message"]


def test_a_bad_trigger_query_is_reported_on_its_line(base, receiver):
    hook = {"destination": "hook", "primary_key": "id", "schedule": "every 1m"}
    base.sync("writes", {**hook, "trigger_query": "delete from users"}, GOOD_SQL)
    base.sync("broken", {**hook, "trigger_query": "select max(id from users"}, GOOD_SQL)
    base.sync("missing", {**hook, "trigger_query": "select max(changed) from users"}, GOOD_SQL)
    no_schedule = {"destination": "hook", "primary_key": "id"}
    base.sync("unscheduled", {**no_schedule, "trigger_query": "select 1"}, GOOD_SQL)
    base.sync("fine", {**hook, "trigger_query": "select max(id) from users"}, GOOD_SQL)
    outcome, document = validate_json(base)
    errors = {e["file"]: e for e in document["errors"]}
    assert set(errors) == {
        "syncs/writes.sql",
        "syncs/broken.sql",
        "syncs/missing.sql",
        "syncs/unscheduled.sql",
    }, document
    assert all(e["line"] == 4 for f, e in errors.items() if f != "syncs/unscheduled.sql")
    assert "read-only" in errors["syncs/writes.sql"]["message"]
    assert "syntax error" in errors["syncs/broken.sql"]["message"]
    assert "fails in the warehouse" in errors["syncs/missing.sql"]["message"]
    assert "changed" in errors["syncs/missing.sql"]["message"]
    assert errors["syncs/unscheduled.sql"]["line"] == 3
    assert "add a schedule" in errors["syncs/unscheduled.sql"]["message"]
    assert_refused(base.cli("run", "writes"), "syncs/writes.sql:4", "trigger_query")
    assert receiver.requests == []


def test_an_unknown_time_zone_is_reported(base):
    write(base, "config.toml", '[scheduler]\ntimezone = "Mars/Olympus"\n')
    assert_refused(base.cli("validate"), "config.toml:2", "unknown time zone 'Mars/Olympus'")


def test_a_file_that_is_not_utf8_is_reported(base):
    (base.root / "syncs" / "latin.sql").write_bytes(
        b'-- destination = "hook"\n-- primary_key = "id"\nselect \'caf\xe9\' as id\n'
    )
    assert_refused(base.cli("validate"), "syncs/latin.sql", "UTF-8")
    assert_refused(base.cli("run", "latin"), "syncs/latin.sql", "UTF-8")


# -- warehouse and config.toml ---------------------------------------------------------------


def test_missing_warehouse_file_names_path_and_config_key(base, receiver):
    write(
        base,
        "config.toml",
        """
        [warehouse]
        path = "missing.duckdb"
        """,
    )
    assert_refused(base.cli("validate"), "config.toml:2", "missing.duckdb", "[warehouse] path")
    assert_refused(base.command("run", "good"), "good", "missing.duckdb", "[warehouse] path")
    assert receiver.requests == []


def test_missing_warehouse_file_is_reported_even_when_every_sync_is_broken(base):
    write(base, "config.toml", '[warehouse]\npath = "missing.duckdb"\n')
    base.sync("good", {"destination": "nowhere", "primary_key": "id"}, GOOD_SQL)
    _, document = validate_json(base)
    assert {e["file"] for e in document["errors"]} == {"config.toml", "syncs/good.sql"}


def test_unknown_key_in_config(base):
    write(
        base,
        "config.toml",
        """
        [warehouse]
        type = "duckdb"
        pth = "warehouse.duckdb"
        """,
    )
    assert_refused(base.cli("validate"), "config.toml:3", "unknown key 'pth'", "path")
    assert_refused(base.cli("run", "good"), "config.toml:3", "unknown key 'pth'")


def test_unknown_section_in_config(base):
    write(
        base,
        "config.toml",
        """
        [warehouse]
        path = "warehouse.duckdb"

        [warehose]
        path = "elsewhere.duckdb"
        """,
    )
    assert_refused(base.cli("validate"), "config.toml:4", "unknown section [warehose]")


def test_a_setting_under_a_section_that_is_gone_says_where_it_belongs(base):
    write(base, "config.toml", "[run]\nmax_concurrent_syncs = 2\n")  # before 0.2: [run]
    assert_refused(
        base.cli("validate"),
        "config.toml:1",
        "unknown section [run]",
        "max_concurrent_syncs belongs under [scheduler]",
    )


def test_bad_config_value_names_key_and_line(base):
    write(base, "config.toml", "[scheduler]\nmax_concurrent_syncs = 0\n")
    assert_refused(base.cli("validate"), "config.toml:2", "max_concurrent_syncs")


def test_unknown_key_in_a_sync_header(base, receiver):
    base.sync("typo", {"destination": "hook", "primary_key": "id", "primary_keys": "id"}, GOOD_SQL)
    assert_refused(base.cli("validate"), "syncs/typo.sql:3", "unknown key 'primary_keys'")
    assert_refused(base.cli("run", "typo"), "syncs/typo.sql:3", "unknown key 'primary_keys'")
    assert receiver.requests == []


def test_unknown_key_in_a_destination(base, receiver):
    base.destination("crm", f'type = "webhook"\nurl = "{receiver.url}"\nbatchsize = 10\n')
    base.sync("to_crm", {"destination": "crm", "primary_key": "id"}, GOOD_SQL)
    assert_refused(
        base.cli("validate"), "destinations/crm.toml:3", "unknown key 'batchsize'", "batch_size"
    )
    assert_refused(base.cli("run", "to_crm"), "destinations/crm.toml:3", "unknown key 'batchsize'")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "name, message",
    [
        ("REVERSE_ETL_WAREHOUSE__PTH", "unknown key 'pth' in [warehouse]"),
        ("REVERSE_ETL_WAREHOSE__PATH", "unknown settings section [warehose]"),
        ("REVERSE_ETL_WAREHOUSE_PATH", "REVERSE_ETL_WAREHOUSE__PATH"),
    ],
)
def test_unknown_settings_environment_variable(base, receiver, name, message):
    assert_refused(base.cli("validate", env={name: "x"}), f"${name}", message)
    assert_refused(base.cli("run", "good", env={name: "x"}), f"${name}", message)
    assert receiver.requests == []


def test_bad_settings_environment_value_names_the_variable(base):
    outcome = base.cli("validate", env={"REVERSE_ETL_STATE__THREADS": "many"})
    assert_refused(outcome, "$REVERSE_ETL_STATE__THREADS", "threads")
    # a whole section in one variable must be JSON; anything else is named, not a traceback
    outcome = base.cli("run", "good", env={"REVERSE_ETL_WAREHOUSE": "warehouse.duckdb"})
    assert_refused(outcome, "$REVERSE_ETL_WAREHOUSE", "REVERSE_ETL_WAREHOUSE__<KEY>")


def test_a_key_outside_any_section_in_config(base):
    write(base, "config.toml", 'path = "warehouse.duckdb"\n')
    assert_refused(base.cli("validate"), "config.toml:1", "unknown key 'path'", "[warehouse]")


def test_variables_in_config_toml(base):
    write(
        base,
        "config.toml",
        """
        [warehouse]
        path = "${WAREHOUSE_FILE:-warehouse.duckdb}"
        [state]
        path = "${STATE_DIR}"
        """,
    )
    assert_refused(base.cli("validate"), "config.toml:4", "STATE_DIR", "not set")
    ok = base.cli("run", "good", env={"STATE_DIR": "elsewhere"})
    assert ok.exit_code == 0, ok.stderr
    assert (base.root / "elsewhere").is_dir() and not (base.root / ".reverse_etl").exists()


def test_environment_overrides_config_toml(base, receiver):
    write(base, "config.toml", '[warehouse]\npath = "missing.duckdb"\n')
    (base.root / "warehouse.duckdb").rename(base.root / "real.duckdb")
    assert base.cli("validate").exit_code == 2
    env = {"REVERSE_ETL_WAREHOUSE__PATH": "real.duckdb"}
    assert base.cli("validate", env=env).exit_code == 0
    ok = base.cli("run", "good", "--json", env=env)
    assert ok.exit_code == 0, ok.stderr
    assert len(receiver.data) == 5
    # and an environment path that does not exist is named as the environment variable
    bad = base.cli("validate", env={"REVERSE_ETL_WAREHOUSE__PATH": "nope.duckdb"})
    assert_refused(bad, "$REVERSE_ETL_WAREHOUSE__PATH", "nope.duckdb")


def test_a_table_missing_from_the_warehouse(base, receiver):
    base.sync(
        "ghost",
        {"destination": "hook", "primary_key": "id"},
        "select id, email\nfrom no_such_table",
    )
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/ghost.sql")
    assert error["line"] == 4 and "no_such_table" in error["message"], error
    assert_refused(base.cli("run", "ghost"), "syncs/ghost.sql", "no_such_table")
    assert receiver.requests == []


def test_a_missing_table_after_a_blank_line_is_on_its_file_line(base):
    write(
        base,
        "syncs/ghost.sql",
        """
        -- destination = "hook"
        -- primary_key = "id"

        select id, email
        from no_such_table
        """,
    )
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/ghost.sql")
    assert error["line"] == 5, error


def test_unknown_sync_is_refused_with_the_known_ones(base):
    assert_refused(base.cli("run", "nope"), "syncs/nope.sql", "good")


def test_missing_project_folder(tmp_path):
    project = ProjectFixture(tmp_path / "does-not-exist")
    assert_refused(project.cli("validate"), str(tmp_path / "does-not-exist"), "does not exist")


# -- validate --json: every problem at once ---------------------------------------------------


def test_validate_json_lists_every_problem_across_files(base):
    base.sync(
        "bad_sql",
        {"destination": "hook", "primary_key": "id"},
        "select id, email\nfrom users where",
    )
    base.sync("bad_dest", {"destination": "x", "primary_key": "id"}, GOOD_SQL)
    base.destination("broken", 'type = "webhook"\nurl = "https://example.com"\nretries = 3\n')
    base.sync("uses_broken", {"destination": "broken", "primary_key": "id"}, GOOD_SQL)
    outcome = base.command("validate", "--json")
    assert outcome.exit_code == 2
    assert "Traceback" not in outcome.stderr
    document = json.loads(outcome.stdout)  # exactly one JSON document, nothing else on stdout
    assert list(document) == ["ok", "errors"] and document["ok"] is False
    for error in document["errors"]:
        assert list(error) == ["file", "line", "message"]
        assert isinstance(error["line"], int) and error["message"]
    assert {(e["file"], e["line"]) for e in document["errors"]} == {
        ("syncs/bad_sql.sql", 4),
        ("syncs/bad_dest.sql", 1),
        ("destinations/broken.toml", 3),
    }


def test_validate_json_on_a_valid_project(base):
    outcome, document = validate_json(base)
    assert document == {"ok": True, "errors": []}
    assert outcome.exit_code == 0
    human = base.cli("validate")
    assert human.exit_code == 0 and "valid" in human.stdout and human.stderr == ""


# -- one broken file does not stop the rest ---------------------------------------------------


def test_run_a_good_sync_while_another_is_broken(base, receiver):
    base.sync("broken", {"destination": "hook", "primary_key": "id"}, "delete from users")
    base.destination("broken_dest", "type = ")
    ok = base.cli("run", "good", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert ok.json_lines()[0]["status"] == "success"
    assert len(receiver.data) == 5


def test_run_all_runs_the_good_ones_and_reports_the_broken_one(base, receiver):
    base.sync(
        "other",
        {"destination": "hook", "primary_key": "id"},
        "select id + 100 as id, email from users",
    )
    base.sync("broken", {"destination": "hook", "primary_key": "id"}, "select id, email frm users")
    outcome = base.cli("run", "--all", "--json")
    err = assert_refused(outcome, "syncs/broken.sql:3", "SQL syntax error")
    results = {r["sync"]: r for r in outcome.json_lines()}
    assert results["good"]["status"] == "success" and results["other"]["status"] == "success"
    assert results["broken"]["status"] == "error"
    assert "syncs/broken.sql:3" in results["broken"]["error"]
    assert "good" not in err.replace("broken", "")  # only the broken one is reported
    assert len(receiver.data) == 10


def test_breaking_a_sync_loses_no_state(base, receiver):
    first = base.cli("run", "good", "--json")
    assert first.exit_code == 0 and first.json_lines()[0]["delivered"] == 5
    sent = len(receiver.requests)
    good = base.root / "syncs" / "good.sql"
    text = good.read_text()
    good.write_text(text.replace("select", "selec"))
    assert_refused(base.cli("run", "good"), "syncs/good.sql:3", "SQL syntax error")
    good.write_text(text.replace('"id"', '"missing"'))
    assert_refused(base.cli("run", "good"), "syncs/good.sql:2", "'missing'")
    assert len(receiver.requests) == sent
    good.write_text(text)
    again = base.cli("run", "good", "--json")
    assert again.exit_code == 0
    [result] = again.json_lines()
    assert result["unchanged"] == 5 and result["delivered"] == 0
    assert len(receiver.requests) == sent


# -- names: a name is a file's stem, never a path or a pattern (docs/project.md, "Names") -


@pytest.mark.parametrize("name", ["s*", "s?", "s[1]", "s{a,b}", "**", "../../warehouse", "a b"])
def test_a_name_that_could_act_as_a_path_or_pattern_is_refused_everywhere(base, receiver, name):
    """Every command taking a SYNC refuses it before touching any file; the warehouse and
    the state folder are as they were."""
    warehouse = (base.root / "warehouse.duckdb").read_bytes()
    for args in (
        ("run", name),
        ("plan", name),
        ("reset", name),
        ("rejected", name),
        ("retry", name),
        ("approve", name),
        ("runs", name),
    ):
        err = assert_refused(base.cli(*args), f"syncs/{name}.sql", "not a valid sync name")
        assert "letters, digits" in err
    assert_refused(base.cli("check", name), f"destinations/{name}.toml", "destination name")
    assert (base.root / "warehouse.duckdb").read_bytes() == warehouse
    assert not (base.root / ".reverse_etl" / "syncs").exists()
    assert receiver.requests == []


def test_reset_of_a_path_deletes_nothing(base):
    """`reset ../../warehouse` once deleted the project's warehouse file (state lives two
    folders down, in .reverse_etl/syncs/)."""
    assert base.cli("run", "good").exit_code == 0
    assert_refused(base.command("reset", "../../warehouse"), "syncs/../../warehouse.sql")
    assert (base.root / "warehouse.duckdb").exists()
    assert base.cli("run", "good", "--json").json_lines()[0]["unchanged"] == 5


def test_a_sync_file_whose_name_is_a_pattern_is_reported_and_never_run(base, receiver):
    """syncs/s*.sql next to syncs/sx.sql: its own run is refused, validate names its file,
    and `run --all` runs the others."""
    base.sync("sx", {"destination": "hook", "primary_key": "id"}, GOOD_SQL)
    base.sync("s*", {"destination": "hook", "primary_key": "id"}, GOOD_SQL)
    _, document = validate_json(base)
    [error] = error_at(document, "syncs/s*.sql")
    assert "not a valid sync name" in error["message"] and "rename the file" in error["message"]
    outcome = base.cli("run", "--all", "--json")
    results = {r["sync"]: r["status"] for r in outcome.json_lines()}
    assert results == {"good": "success", "sx": "success", "s*": "error"}
    assert outcome.exit_code == 2
    assert not list((base.root / ".reverse_etl" / "syncs").glob("s[*]*"))


@pytest.mark.parametrize("value", ["../x", "/etc/passwd", "x*", ""])
def test_a_destination_name_that_is_a_path_is_refused_on_its_line(base, receiver, value):
    base.sync("escape", {"destination": value, "primary_key": "id"}, GOOD_SQL)
    for outcome in (base.cli("validate"), base.cli("run", "escape")):
        assert_refused(outcome, "syncs/escape.sql:1", "destination")
    assert receiver.requests == []


def test_after_naming_a_pattern_is_refused(base):
    base.sync("follows", {"destination": "hook", "primary_key": "id", "after": ["g*"]}, GOOD_SQL)
    assert_refused(base.cli("validate"), "syncs/follows.sql:3", "not a valid sync name")


def test_a_destination_file_whose_name_is_not_valid_is_reported(base):
    base.destination("my hook", 'type = "webhook"\nurl = "https://example.com"')
    assert_refused(base.cli("validate"), "destinations/my hook.toml", "not a valid destination")


def test_a_251_character_sync_name_is_refused_saying_the_limit(base, receiver):
    """Its outbox file name would pass the file system's 255 bytes: it once ran, then failed
    with a traceback on every run."""
    name = "s" * 251
    base.sync(name, {"destination": "hook", "primary_key": "id"}, GOOD_SQL)
    shown = f"syncs/{'s' * 57}....sql"
    assert_refused(base.command("run", name), shown, "251 characters, more than 100")
    _, document = validate_json(base)
    assert [e["message"] for e in error_at(document, shown)], document
    assert receiver.requests == []
    # the longest name allowed runs, and its state files fit
    longest = "s" * 100
    base.sync(longest, {"destination": "hook", "primary_key": "id"}, GOOD_SQL)
    ok = base.cli("run", longest, "--json")
    assert ok.exit_code == 0, ok.stderr
    assert ok.json_lines()[0]["delivered"] == 5


# -- settings that once hung or ended in a traceback ------------------------------------------


@pytest.mark.parametrize(
    "config, line, fragment",
    [
        ('[state]\nmemory_limit = "lots"\n', 2, "not an amount of memory"),
        ('[state]\nmemory_limit = "1KB"\n', 2, "at least 16MB"),
        ("[state]\nthreads = 100000\n", 2, "threads"),
        ('[state]\npath = "[state]"\n', 2, "pattern character"),
    ],
    ids=["memory_limit", "tiny memory_limit", "threads", "glob in state path"],
)
def test_a_state_setting_duckdb_cannot_take_is_refused_on_its_line(
    base, receiver, config, line, fragment
):
    write(base, "config.toml", config)
    assert_refused(base.cli("validate"), f"config.toml:{line}", fragment)
    assert_refused(base.command("run", "good", timeout=60), f"config.toml:{line}", fragment)
    assert receiver.requests == []
    (base.root / "config.toml").unlink()
    assert base.cli("run", "good").exit_code == 0


def test_a_state_path_naming_a_file_is_refused_and_the_file_kept(base, receiver):
    (base.root / "notes.txt").write_text("mine")
    write(base, "config.toml", '[state]\npath = "notes.txt"\n')
    assert_refused(base.command("run", "good"), "config.toml:2", "is a file, not a folder")
    env = {"REVERSE_ETL_STATE__PATH": "notes.txt"}
    assert_refused(base.cli("validate", env=env), "$REVERSE_ETL_STATE__PATH", "not a folder")
    assert (base.root / "notes.txt").read_text() == "mine"
    assert receiver.requests == []


def test_a_schedule_longer_than_a_year_is_a_validation_error(base):
    sync = {"destination": "hook", "primary_key": "id", "schedule": "every 99999999999999h"}
    base.sync("forever", sync, GOOD_SQL)
    assert_refused(base.cli("validate"), "syncs/forever.sql:3", "longer than a year")
    assert_refused(base.cli("run", "forever"), "syncs/forever.sql:3", "every 8784h")


def test_a_model_nested_3000_parentheses_deep_is_refused_on_its_file(base, receiver):
    sql = "select id, email from users where " + "(" * 3000 + "id > 0" + ")" * 3000
    base.sync("deep", {"destination": "hook", "primary_key": "id"}, sql)
    assert_refused(base.command("run", "deep"), "syncs/deep.sql", "nested too deeply")
    assert_refused(base.command("validate"), "syncs/deep.sql", "nested too deeply")
    assert receiver.requests == []


# -- check: any answer but 2xx, 401, 403 is a failed check, said in one line ------------------


class _Canned:
    """An HTTP server on 127.0.0.1 giving every request the same answer."""

    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        import http.server
        import threading

        answer = (status, body, headers)

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                code, content, extra = answer
                self.send_response(code)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


HTML = b"<!doctype html><html><body>Sign in to continue</body></html>"
ANSWERS = {
    "404": (404, b"Not Found", {}),
    "500": (500, b"boom", {}),
    "302": (302, b"", {"Location": "https://login.example.com/"}),
    "html 200": (200, HTML, {"Content-Type": "text/html"}),
    "429": (429, b"slow down", {"Retry-After": "1"}),
}


@pytest.mark.parametrize("kind", ["webhook", "hubspot", "braze", "salesforce"])
@pytest.mark.parametrize("answer", ANSWERS.values(), ids=ANSWERS.keys())
def test_check_against_an_answer_that_is_not_the_apis_fails_in_one_line(project, kind, answer):
    server = _Canned(*answer)
    try:
        settings = {
            "webhook": f'url = "{server.url}/in"',
            "hubspot": f'access_token = "pat-1"\nbase_url = "{server.url}"',
            "braze": f'api_key = "k-1"\nrest_endpoint = "{server.url}"',
            "salesforce": f'access_token = "t-1"\ninstance_url = "{server.url}"',
        }[kind]
        project.destination("dest", f'type = "{kind}"\n{settings}\nmax_retries = 0')
        outcome = project.command("check", "dest", timeout=60)
    finally:
        server.close()
    assert outcome.exit_code == 2, (outcome.stdout, outcome.stderr)
    assert "Traceback" not in outcome.stderr, outcome.stderr
    [line] = outcome.stderr.strip().splitlines()
    assert line.startswith("error: dest: "), line
    assert str(answer[0]) in line, line


# -- state the engine can reach: no traceback, no wedge, nothing lost -------------------------


@pytest.fixture
def killed(base: ProjectFixture) -> Iterator[tuple[ProjectFixture, object]]:
    """A sync `kept` whose run was SIGKILLed after 2 of its 5 records were acknowledged: its
    outbox and acknowledgement log are left for the next run to fold."""
    import os
    import signal
    import threading
    import time

    from faults import FaultyReceiver

    killed = threading.Event()

    def hold_the_third(request, body):  # so that the kill lands after exactly 2, however late
        if request.number >= 2:
            killed.wait(60)
        return None

    with FaultyReceiver(delay=0.3, rules=[hold_the_third]) as slow:
        base.webhook("slow", slow.url, batch_size=1, max_concurrency=1)
        base.sync("kept", {"destination": "slow", "primary_key": "id"}, GOOD_SQL)
        acks = base.root / ".reverse_etl" / "syncs" / "kept.acks"
        proc = base.popen("run", "kept")
        deadline = time.monotonic() + 60
        while not (acks.exists() and acks.read_bytes().count(b"\n") >= 2):
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        killed.set()
        assert (base.root / ".reverse_etl" / "syncs" / "kept.outbox.parquet").exists()
        yield base, slow


def test_an_acknowledgement_line_of_another_shape_is_skipped_not_fatal(killed):
    """[1,2,3] is valid JSON of the wrong shape: its batch counts as in flight."""
    project, slow = killed
    acks = project.root / ".reverse_etl" / "syncs" / "kept.acks"
    acked = [json.loads(line) for line in acks.read_text().splitlines()]
    with acks.open("a") as log:
        log.write('[1,2,3]\n{"first": 1}\n[true, 2]\n[0, 1, [4]]\n"x"\n')
    outcome = project.command("run", "kept", "--json")
    assert outcome.exit_code == 0, outcome.stderr
    assert "Traceback" not in outcome.stderr
    assert set(slow.data) == {"1", "2", "3", "4", "5"}
    # what the well-formed lines acknowledged was folded, not sent again
    acked_seqs = {seq for first, last, *_ in acked for seq in range(first, last + 1)}
    assert len(acked_seqs) == 2
    assert sum(slow.received.values()) <= 5 + 1  # at most the batch in flight at the kill, twice
    again = project.cli("run", "kept", "--json").json_lines()[0]
    assert again["unchanged"] == 5 and again["delivered"] == 0


def test_a_damaged_outbox_is_reported_kept_and_the_run_goes_on_once_moved(killed):
    project, slow = killed
    outbox = project.root / ".reverse_etl" / "syncs" / "kept.outbox.parquet"
    outbox.write_bytes(b"PAR1 this is not a parquet file")
    sent = len(slow.requests)
    for args in (("run", "kept"), ("plan", "kept")):
        err = assert_refused(project.command(*args), "kept", str(outbox), "Move it away")
        assert len(err.strip().splitlines()) == 1, err
    assert outbox.read_bytes() == b"PAR1 this is not a parquet file"  # kept as it was
    assert len(slow.requests) == sent
    outbox.rename(outbox.with_name("kept.outbox.damaged"))
    ok = project.command("run", "kept", "--json")
    assert ok.exit_code == 0, ok.stderr
    assert set(slow.data) == {"1", "2", "3", "4", "5"}


def _damage_pages(path, first_page: int = 1) -> None:
    """Overwrite every page of an SQLite file from `first_page` (0 is the header's) with noise,
    as a failing disk would."""
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = con.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    for offset in range(first_page * page, len(data), page):
        data[offset : offset + page] = bytes([0x5A]) * page
    path.write_bytes(bytes(data))


def test_a_damaged_page_of_run_history_is_reported_and_the_run_works_once_moved(base, receiver):
    assert base.cli("run", "good").exit_code == 0
    history = base.root / ".reverse_etl" / "history.sqlite"
    _damage_pages(history)
    damaged = history.read_bytes()
    base.warehouse("update users set email = 'new' || email where id = 1")
    for args in (("run", "good"), ("runs",), ("rejected", "good")):
        err = assert_refused(base.command(*args), "error", str(history), "damaged", "move it away")
        assert len(err.strip().splitlines()) == 1, err
    assert history.read_bytes() == damaged  # kept, never replaced
    assert len(receiver.requests) == 1  # the change waits; nothing was sent half-recorded
    history.rename(history.with_name("history.damaged"))
    ok = base.cli("run", "good", "--json").json_lines()[0]
    assert ok["status"] == "success" and ok["changed"] == 1 and ok["delivered"] == 1


@contextlib.contextmanager
def _read_only(folder) -> Iterator[None]:
    """`folder` read-only for this process: a read-only bind mount as root (whom permissions
    do not stop), else every folder and file in it without write permission."""
    import os
    import shutil
    import subprocess

    if os.geteuid() == 0:
        if shutil.which("mount") is None:
            pytest.skip("root without mount(8): cannot make a folder read-only")
        bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
        if bind.returncode != 0:
            pytest.skip(f"cannot bind-mount as root here: {bind.stderr.decode().strip()}")
        try:
            subprocess.run(
                ["mount", "-o", "remount,ro,bind", str(folder)], check=True, capture_output=True
            )
            yield
        finally:
            subprocess.run(["umount", str(folder)], check=True)
        return
    paths = [folder, *folder.rglob("*")]
    modes = {path: path.stat().st_mode for path in paths}
    for path in paths:
        path.chmod(modes[path] & ~0o222)
    try:
        yield
    finally:
        for path in reversed(paths):
            path.chmod(modes[path])


def test_a_read_only_state_folder_is_said_and_the_next_run_works(base, receiver):
    assert base.cli("run", "good").exit_code == 0
    base.warehouse("update users set email = 'new' || email where id = 1")
    state = base.root / ".reverse_etl"
    with _read_only(state):
        for args in (("run", "good"), ("plan", "good"), ("runs",), ("reset", "good")):
            err = assert_refused(base.command(*args), "error", "must be writable", str(state))
            assert len(err.strip().splitlines()) == 1, err
    assert len(receiver.requests) == 1
    ok = base.cli("run", "good", "--json").json_lines()[0]
    assert ok["status"] == "success" and ok["changed"] == 1 and ok["delivered"] == 1


def _run_with_file_size_limit(project: ProjectFixture, limit: int, *args: str) -> Outcome:
    """The CLI in a subprocess that may write no file past `limit` bytes (RLIMIT_FSIZE): a
    disk that fills up. Python ignores SIGXFSZ, so writes fail with EFBIG."""
    import os
    import resource
    import subprocess
    import sys

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "reverse_etl", *args, "--project", str(project.root)],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=limited,
        env=dict(os.environ),
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def wide(base: ProjectFixture) -> ProjectFixture:
    """A mirror sync `wide` of 20,000 rows, delivered once, then every row changed."""
    base.warehouse("""
        create table wide as
        select i as id, 'user' || i || '@example.com' as email from range(20000) t(i)""")
    base.webhook("bulk", base_url(base), batch_size=1000)
    base.sync(
        "wide", {"destination": "bulk", "primary_key": "id", "mode": "mirror"}, "select * from wide"
    )
    first = base.cli("run", "wide", "--json")
    assert first.exit_code == 0, first.stderr
    base.warehouse("update wide set email = email || repeat('x', 200)")
    return base


def base_url(project: ProjectFixture) -> str:
    hook = (project.root / "destinations" / "hook.toml").read_text()
    return re.search(r'url = "([^"]+)"', hook).group(1)  # type: ignore[union-attr]


def test_a_full_disk_during_the_fold_keeps_what_was_delivered_for_the_next_run(wide, receiver):
    """Delivered, then the disk is full when the fold writes the snapshot: exit 2, one line;
    the next run (with room) folds the acknowledgements and sends nothing again."""
    state = wide.root / ".reverse_etl" / "syncs" / "wide.duckdb"
    sent = len(receiver.requests)
    outcome = _run_with_file_size_limit(wide, state.stat().st_size, "run", "wide", "--json")
    err = assert_refused(outcome, "error", "cannot record what was delivered", "disk space")
    assert len(err.strip().splitlines()) == 1, err
    delivered = len(receiver.requests) - sent
    assert delivered == 20, "the 20 batches went out before the fold"
    [failed] = outcome.json_lines()
    assert failed["status"] == "error" and failed["delivered"] == 20000, failed
    assert (state.parent / "wide.acks").exists()
    after = wide.cli("run", "wide", "--json").json_lines()[0]
    assert after["status"] == "success" and after["unchanged"] == 20000, after
    assert len(receiver.requests) == sent + delivered  # nothing sent twice
    assert all(fields["email"].endswith("x" * 200) for fields in receiver.data.values())


def test_a_full_disk_while_writing_the_outbox_sends_nothing(wide, receiver):
    sent = len(receiver.requests)
    outcome = _run_with_file_size_limit(wide, 200_000, "run", "wide", "--json")
    err = assert_refused(outcome, "error", "wide.outbox", "nothing was sent", "disk space")
    assert len(err.strip().splitlines()) == 1, err
    assert len(receiver.requests) == sent
    again = wide.cli("run", "wide", "--json").json_lines()[0]
    assert again["status"] == "success" and again["delivered"] == 20000


def test_running_out_of_memory_limit_is_not_blamed_on_the_model(wide, receiver):
    write(wide, "config.toml", '[state]\nmemory_limit = "30MB"\n')
    wide.warehouse("""create or replace table wide as select i as id,
        repeat('y', 500) || i as email, repeat('z', 300) as note from range(300000) t(i)""")
    sent = len(receiver.requests)
    outcome = wide.command("run", "wide", "--json")
    if outcome.exit_code == 0:
        return  # spilled to disk: the goal (docs/state.md)
    err = assert_refused(outcome, "error", "memory_limit = '30MB' (config.toml:2)", "raise it")
    assert "syncs/wide.sql" not in err and "the model fails" not in err, err
    assert len(receiver.requests) == sent
    (wide.root / "config.toml").unlink()
    again = wide.cli("run", "wide", "--json").json_lines()[0]
    assert again["status"] == "success" and again["delivered"] == 300000


def test_the_python_api_refuses_a_name_that_is_a_path_or_pattern(base, receiver):
    import reverse_etl
    from reverse_etl.errors import ProjectError

    for name in ("s*", "../../warehouse", "x" * 251):
        for call in (reverse_etl.run_sync, reverse_etl.plan_sync):
            with pytest.raises(ProjectError, match="not a valid sync name"):
                call(base.root, name)
    assert (base.root / "warehouse.duckdb").exists()
    assert receiver.requests == []


def test_an_outbox_larger_than_memory_limit_is_written_by_spilling(tmp_path, caplog):
    """DuckDB's window and sort over wide rows, and its parallel ordered parquet writer, hold
    the rows in memory: past [state] memory_limit the outbox is staged in a temporary table
    (which spills) and written in sending order by one thread."""
    from reverse_etl.outbox import Outbox

    caplog.set_level("INFO", "reverse_etl.outbox")
    con = duckdb.connect(
        config={"memory_limit": "30MB", "temp_directory": str(tmp_path / "tmp"), "threads": 2}
    )
    con.execute("""create table wide as select
        case when i % 10 = 0 then 'delete' else 'upsert' end as op, i::varchar as key,
        i::ubigint as hash, repeat('y', 500) || i as fields from range(300000) t(i)""")
    outbox = Outbox(tmp_path / "syncs" / "big.duckdb")
    outbox.path.parent.mkdir()
    outbox.write(
        con, "SELECT op, key, hash, unhex(md5(fields)) AS digest, fields, false AS owed FROM wide"
    )
    assert "spilling" in caplog.text  # the usual way ran out of memory
    ranges = con.execute(
        f"select op, min(seq), max(seq), count(*) from {outbox.relation} group by op order by 2"
    ).fetchall()
    assert ranges == [("delete", 0, 29999, 30000), ("upsert", 30000, 299999, 270000)]
    [(disorder,)] = con.execute(
        f"select count(*) from (select seq, lag(seq) over () as before from {outbox.relation})"
        " where seq <> before + 1"
    ).fetchall()
    assert disorder == 0  # written in sending order: reads of a seq range stay cheap
    assert con.execute("select current_setting('threads')").fetchall() == [(2,)]


def test_the_daemon_with_a_damaged_run_history_says_so_and_exits(base):
    base.sync(
        "ticking", {"destination": "hook", "primary_key": "id", "schedule": "every 1h"}, GOOD_SQL
    )
    write(base, "config.toml", "[daemon]\nport = 0\n")
    assert base.cli("run", "good").exit_code == 0
    history = base.root / ".reverse_etl" / "history.sqlite"
    _damage_pages(history, first_page=0)  # the header too: it cannot even be opened
    err = assert_refused(base.command("daemon", timeout=60), "error", str(history), "move it away")
    assert len(err.strip().splitlines()) == 1, err
