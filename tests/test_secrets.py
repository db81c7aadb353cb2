"""Tokens are never shown (docs/project.md, Secrets): not in stdout or stderr of any command, not in
the run history (`runs --json`), the ledger (`rejected --json`) or the logs, whatever spelling
a destination echoes them back in: raw, JSON-escaped (`\\/`, `\\u002b`), URL-encoded, or as the
base64 of `user:password` that HTTP Basic authentication sends."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest

from reverse_etl.secrets import blanker

TOKEN = "sk/live+9f3a1c77e2"  # a '/' and a '+': JSON and URL encoders spell them apart
PASSWORD = "pa55/word+x"


def escaped(text: str) -> str:
    """JSON as some servers write it: every '/' as '\\/' and '+' as '\\u002b'."""
    return json.dumps(text).replace("/", "\\/").replace("+", "\\u002b")[1:-1]


def everything_shown(project, *outcomes, env=None) -> str:
    runs = project.command("runs", "--json", env=env)
    rejected = [project.command("rejected", name, "--json", env=env) for name in ("users",)]
    texts = [o.stdout + o.stderr for o in (*outcomes, runs, *rejected)]
    logs = project.root / ".reverse_etl"
    texts += [p.read_text(errors="replace") for p in logs.rglob("*.log")]
    return "\n".join(texts)


@pytest.fixture
def crm(project, receiver):
    project.warehouse(
        "create table users as select i as id, 'u' || i || '@example.com' as email "
        "from range(1, 4) t(i)"
    )
    project.sync("users", {"destination": "crm", "primary_key": "id"}, "select * from users")
    return project


def test_a_401_echoing_the_authorization_header_is_blanked(crm, receiver):
    crm.webhook("crm", receiver.url, headers={"Authorization": "Bearer ${CRM_TOKEN}"})
    receiver.intercept = lambda body, headers: (
        401,
        {},
        f"invalid: {headers['authorization']} / {escaped(headers['authorization'])}".encode(),
    )
    env = {"CRM_TOKEN": TOKEN}
    run = crm.command("run", "users", env=env)  # plain run: the error on stderr
    assert run.exit_code == 2 and "refused the credentials" in run.stderr, run
    assert "HTTP 401: invalid: *** / ***" in run.stderr  # the header's value, both spellings
    shown = everything_shown(crm, run, crm.command("run", "users", "-v", env=env), env=env)
    assert "invalid:" in shown
    assert TOKEN not in shown and escaped(TOKEN) not in shown


@pytest.mark.parametrize("pad", [478, 483, 488])  # 17, 12 and 7 of its 18 characters kept
def test_an_answer_cut_inside_an_echoed_token_shows_none_of_it(crm, receiver, pad):
    """An answer is shown up to 500 characters, then "...": where the cut falls inside the
    token it echoes, what is left of the token is blanked too (a cut text no longer holds
    the whole secret that blanking looks for)."""
    crm.webhook("crm", receiver.url, headers={"Authorization": "${CRM_TOKEN}"})
    receiver.intercept = lambda body, headers: (
        401,
        {},
        ("x" * pad + " got " + headers["authorization"]).encode(),
    )
    env = {"CRM_TOKEN": TOKEN}
    outcomes = [crm.command(*args, env=env) for args in (["run", "users"], ["check", "crm"])]
    assert all(o.exit_code == 2 for o in outcomes), outcomes
    shown = everything_shown(crm, *outcomes, env=env)
    assert " got ***..." in shown, shown[-2000:]
    assert TOKEN[:6] not in shown


def test_a_token_in_the_url_is_not_printed_by_check_or_run_verbose(crm, receiver):
    crm.webhook("crm", receiver.url + "/hooks/${HOOK_TOKEN}", retry_backoff_seconds=0.05)
    env = {"HOOK_TOKEN": TOKEN}
    check = crm.command("check", "crm", env=env)
    check_json = crm.command("check", "crm", "--json", env=env)
    run = crm.command("run", "users", "-vv", env=env)
    assert check.exit_code == 0 and "ok: crm:" in check.stdout, check
    assert run.exit_code == 0 and "HTTP Request" in run.stderr, run  # httpx logs the URL
    receiver.intercept = lambda body, headers: (500, {}, b"down")
    crm.warehouse("update users set email = 'new@example.com' where id = 1")
    failed = crm.command("run", "users", "-v", env=env)  # retries and fails: URL in warnings
    assert failed.exit_code == 1 and "500" in failed.stderr, failed
    shown = everything_shown(crm, check, check_json, run, failed, env=env)
    assert TOKEN not in shown and quote(TOKEN, safe="") not in shown
    assert len(receiver.requests) >= 4  # the token was in use all along


@pytest.mark.parametrize("written", ["variable", "literal"])
def test_url_userinfo_is_never_printed(crm, receiver, written):
    # in a URL, a password's '/' and '+' are percent-encoded (or the URL is not one)
    password = "${CRM_PASSWORD}" if written == "variable" else quote(PASSWORD, safe="")
    url = receiver.url.replace("http://", f"http://robot:{password}@")
    crm.webhook("crm", url)
    basic = base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    receiver.intercept = lambda body, headers: (
        401,
        {},
        f"no user for {headers.get('authorization', '').split()[-1]} at {url}".encode(),
    )
    env = {"CRM_PASSWORD": quote(PASSWORD, safe="")}
    check = crm.command("check", "crm", env=env)
    run = crm.command("run", "users", "-vv", env=env)
    assert check.exit_code == 2 and run.exit_code == 2, (check, run)
    assert receiver.requests[0]["headers"]["authorization"] == f"Basic {basic}"
    shown = everything_shown(crm, check, run, env=env)
    assert "no user for" in shown
    for secret in (PASSWORD, quote(PASSWORD, safe=""), basic, "robot:"):
        assert secret not in shown, secret


def test_a_token_echoed_json_escaped_in_a_rejection_is_blanked_in_history(crm, receiver):
    crm.webhook("crm", receiver.url, headers={"X-Api-Key": "${CRM_TOKEN}"})

    def reject_echoing(body, headers):
        key = headers["x-api-key"]
        text = json.dumps({"errors": [{"key": "2", "error": f"bad key {key}"}]})
        return 200, {}, text.replace("/", "\\/").replace("+", "\\u002b").encode()

    receiver.intercept = reject_echoing
    env = {"CRM_TOKEN": TOKEN}
    run = crm.command("run", "users", "--json", env=env)
    assert run.exit_code == 1 and run.json_lines()[0]["rejected"] == 1, run
    rejected = crm.command("rejected", "users", "--json", env=env)
    [record] = rejected.json_lines()
    assert record["error"] == "bad key ${CRM_TOKEN}", record
    history = crm.root / ".reverse_etl"
    stored = b"".join(p.read_bytes() for p in history.rglob("*") if p.is_file())
    assert TOKEN.encode() not in stored and escaped(TOKEN).encode() not in stored
    assert TOKEN not in everything_shown(crm, run, rejected, env=env)


def test_every_spelling_of_a_secret_is_blanked():
    hide = blanker({TOKEN: "${T}", f"http://robot:{quote(PASSWORD, safe='')}@h/x": "***"})
    spellings = [
        TOKEN,
        json.dumps(TOKEN)[1:-1],
        escaped(TOKEN),
        json.dumps(escaped(TOKEN))[1:-1],  # escaped again inside JSON text
        "".join(f"\\u{ord(c):04X}" for c in TOKEN),
        quote(TOKEN, safe=""),
        quote(TOKEN, safe="").lower(),
        base64.b64encode(TOKEN.encode()).decode(),
        base64.b64encode(f"robot:{PASSWORD}".encode()).decode(),
        PASSWORD,
    ]
    for spelling in spellings:
        assert hide(f"<{spelling}>") in ("<${T}>", "<***>"), spelling
    assert hide("see https://anyone:anything@example.com/x") == "see https://***@example.com/x"
    assert hide("Authorization: Bearer abc.def.ghi") == "Authorization: Bearer ***"
    assert hide("token refreshed; Basic authentication needed") == (
        "token refreshed; Basic authentication needed"
    )


def test_a_long_secret_is_blanked_in_its_whole_spellings():
    """A key file or a long JWT (64 KB here) is matched in its usual spellings, each as a
    whole (a pattern of every escape of every character took 24 s to build at this length,
    and a run builds several)."""
    key = "-----BEGIN KEY-----/" + "Ab3+/x=" * 9362  # 64 KB, with the characters that escape
    hide = blanker({key: "***"})
    spellings = [
        key,
        json.dumps(key)[1:-1],
        json.dumps(key)[1:-1].replace("/", "\\/"),
        quote(key, safe=""),
        base64.b64encode(key.encode()).decode(),
    ]
    for spelling in spellings:
        assert hide(f"<{spelling}>") == "<***>", spelling[:40]


def test_a_user_name_alone_is_not_a_secret():
    """`postgresql://postgres@host/db` (no password) must not blank the word postgres
    everywhere; the URL's userinfo is blanked wherever the URL is written."""
    hide = blanker({"postgresql://postgres@127.0.0.1:5432/test": "***"})
    assert hide("cannot be transpiled to postgres") == "cannot be transpiled to postgres"
    assert hide("at postgresql://postgres@127.0.0.1/x") == "at postgresql://***@127.0.0.1/x"


def test_the_python_api_hands_its_host_log_records_without_tokens(crm, receiver, caplog):
    """An orchestrator's own log handlers (Airflow's task log) know no secret."""
    import logging

    import reverse_etl

    crm.webhook(
        "crm",
        receiver.url + "/hooks/${HOOK_TOKEN}",
        headers={"Authorization": "Bearer ${CRM_TOKEN}"},
    )
    receiver.intercept = lambda body, headers: (
        401,
        {},
        f"invalid: {escaped(headers['authorization'])}".encode(),
    )
    caplog.set_level(logging.DEBUG)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CRM_TOKEN", TOKEN)
        env.setenv("HOOK_TOKEN", TOKEN[::-1])
        with pytest.raises(reverse_etl.CredentialsError) as refused:
            reverse_etl.run_sync(crm.root, "users")
    assert "refused the credentials" in caplog.text and "HTTP Request" in caplog.text
    for text in (caplog.text, str(refused.value), json.dumps(refused.value.result)):
        assert TOKEN not in text and TOKEN[::-1] not in text and escaped(TOKEN) not in text


def test_check_of_a_url_with_an_unencoded_password_exits_2_without_it(crm):
    crm.webhook("crm", "http://robot:${CRM_PASSWORD}@127.0.0.1:9/")
    check = crm.command("check", "crm", env={"CRM_PASSWORD": PASSWORD})  # its '/' not encoded
    assert check.exit_code == 2 and "Traceback" not in check.stderr, check
    assert "percent-encode" in check.stderr, check.stderr
    for fragment in (PASSWORD, PASSWORD.split("/")[0], PASSWORD.split("/")[1]):
        assert fragment not in check.stdout + check.stderr, fragment


def test_the_tables_blank_what_was_stored_before_it_was_known_as_a_secret(crm, receiver):
    """Run history and the ledger may hold text stored by an earlier version, or before a
    variable held a secret: the `runs` and `rejected` tables blank it as they print it."""
    import sqlite3

    crm.webhook("crm", receiver.url, headers={"X-Api-Key": "${CRM_TOKEN}"})
    env = {"CRM_TOKEN": TOKEN}
    assert crm.command("run", "users", env=env).exit_code == 0
    db = sqlite3.connect(crm.root / ".reverse_etl" / "history.sqlite")
    with db:
        db.execute("UPDATE runs SET error = ?", (f"old text with {TOKEN}",))
        db.execute(
            "INSERT INTO ledger (sync, key, reason, error, first_seen, last_seen, run_id) "
            "VALUES ('users', '9', 'failed', ?, 0, 0, 'r')",
            (f"refused {TOKEN}",),
        )
    db.close()
    for args in (("runs",), ("rejected", "users")):
        shown = crm.command(*args, env={**env, "COLUMNS": "400"})
        assert shown.exit_code == 0 and TOKEN not in shown.stdout, shown
        assert "***" in shown.stdout or "${CRM_TOKEN}" in shown.stdout, shown.stdout
