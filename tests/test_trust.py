"""Trust: the destination decides when two keys are one record; what was not acknowledged is
owed; what was delivered belongs to one target; changes are changes, and only changes.

The receiver here is written for these tests from the webhook wire format (docs/wire-format.md),
not the product's own receiver: it can compare keys ignoring case, as HubSpot
and Salesforce do, and it remembers every live record that was ever deleted."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

Answer = tuple[int, bytes] | None


class Receiver:
    """Applies batches by key identity (exact, or ignoring case); `answer(body)` may answer a
    request instead (before applying it), and `lose_answer(body)` applies the batch, then
    answers 500 as if the answer was lost on the way back."""

    def __init__(self, ignore_case: bool = False) -> None:
        self.ignore_case = ignore_case
        self.records: dict[str, dict[str, Any]] = {}  # identity -> fields
        self.keys: dict[str, str] = {}  # identity -> the key text last written
        self.writes: Counter[str] = Counter()  # identity -> writes
        self.batches: list[dict[str, Any]] = []
        self.answer: Callable[[dict[str, Any]], Answer] = lambda body: None
        self.lose_answer: Callable[[dict[str, Any]], bool] = lambda body: False
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    def ident(self, key: str) -> str:
        return key.lower() if self.ignore_case else key

    def down_after(self, requests: int) -> Callable[[dict[str, Any]], Answer]:
        """An `answer` that lets `requests` requests through, then answers 503 to the rest."""
        seen = 0

        def answer(body: dict[str, Any]) -> Answer:
            nonlocal seen
            seen += 1
            return None if seen <= requests else (503, b"down")

        return answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/in"

    def sent(self, operation: str, since: int = 0) -> list[str]:
        return [
            r["key"]
            for b in self.batches[since:]
            if b["operation"] == operation
            for r in b["records"]
        ]

    def _apply(self, body: dict[str, Any]) -> None:
        with self.lock:
            self.batches.append(body)
            for record in body["records"]:
                ident = self.ident(record["key"])
                if body["operation"] == "delete":
                    self.records.pop(ident, None)
                    self.keys.pop(ident, None)
                else:
                    self.records[ident] = record["fields"]
                    self.keys[ident] = record["key"]
                    self.writes[ident] += 1

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw, parse_float=str)  # 1.50 stays 1.50
                status, answer = 200, b""
                if (custom := receiver.answer(body)) is not None:
                    status, answer = custom
                else:
                    receiver._apply(body)
                    if receiver.lose_answer(body):
                        status, answer = 500, b"the answer was lost"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ci_receiver() -> Iterator[Receiver]:
    with Receiver(ignore_case=True) as server:
        yield server


@pytest.fixture
def exact_receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


def contacts(project, emails: list[str]) -> None:
    if not emails:
        project.warehouse("create or replace table contacts (email varchar, name varchar)")
        return
    values = ", ".join(f"('{e}', '{e.split('@')[0]}')" for e in emails)
    project.warehouse(f"create or replace table contacts as select * from (values {values}) "
                      "t(email, name)")  # fmt: skip


def email_sync(project, receiver, mode: str = "mirror", **destination: Any) -> None:
    project.webhook("crm", receiver.url, key_identity="case_insensitive", **destination)
    project.sync(
        "people",
        {"destination": "crm", "primary_key": "email", "mode": mode},
        "select email, name from contacts",
    )


def run(project, *args: str) -> dict[str, Any]:
    outcome = project.cli("run", "people", "--json", *args)
    [result] = outcome.json_lines()
    return result


# -- 1. key identity -----------------------------------------------------------------------


def test_case_variants_of_one_email_are_invalid_and_never_deleted(project, ci_receiver):
    """Removing `First.Last@` while `first.last@` stays: the contact the second row owns is
    never archived (0.2.0 deleted it and said success)."""
    contacts(project, ["First.Last@example.com", "other@example.com"])
    email_sync(project, ci_receiver)
    assert run(project)["status"] == "success"
    contacts(project, ["First.Last@example.com", "first.last@example.com", "other@example.com"])
    result = run(project)
    assert (result["status"], result["invalid"], result["removed"]) == ("partial", 2, 0)
    rejected = project.cli("rejected", "people", "--json").json_lines()
    assert sorted(r["key"] for r in rejected) == [
        "First.Last@example.com",
        "first.last@example.com",
    ]
    assert all("ignoring case" in r["error"] for r in rejected)

    contacts(project, ["first.last@example.com", "other@example.com"])
    result = run(project)
    assert (result["status"], result["changed"], result["removed"]) == ("success", 1, 0)
    assert ci_receiver.sent("delete") == []
    assert ci_receiver.keys["first.last@example.com"] == "first.last@example.com"
    assert sorted(ci_receiver.records) == ["first.last@example.com", "other@example.com"]
    assert project.cli("rejected", "people", "--json").json_lines() == []


def test_keys_changing_only_in_case_are_updates_not_deletes(project, ci_receiver):
    """3 of 10 keys change only in letter case, 4 requests in flight: 10 records remain."""
    emails = [f"user{i}@example.com" for i in range(10)]
    contacts(project, emails)
    email_sync(project, ci_receiver, batch_size=1, max_concurrency=4)
    assert run(project)["delivered"] == 10
    contacts(project, [e.upper() if i < 3 else e for i, e in enumerate(emails)])
    result = run(project)
    assert (result["changed"], result["removed"], result["delivered"]) == (3, 0, 3)
    assert ci_receiver.sent("delete") == []
    assert len(ci_receiver.records) == 10
    assert sorted(k for k in ci_receiver.keys.values() if k.isupper()) == [
        "USER0@EXAMPLE.COM",
        "USER1@EXAMPLE.COM",
        "USER2@EXAMPLE.COM",
    ]
    assert run(project)["unchanged"] == 10


def test_case_variants_in_upsert_mode_are_not_both_delivered(project, ci_receiver):
    contacts(project, ["a@example.com", "A@example.com", "b@example.com"])
    email_sync(project, ci_receiver, mode="upsert")
    result = run(project)
    assert (result["invalid"], result["delivered"]) == (2, 1)
    assert sorted(ci_receiver.records) == ["b@example.com"]


def test_an_exact_destination_keeps_case_variants_apart(project, exact_receiver):
    contacts(project, ["a@example.com", "A@example.com"])
    project.webhook("crm", exact_receiver.url)
    project.sync(
        "people",
        {"destination": "crm", "primary_key": "email", "mode": "mirror"},
        "select email, name from contacts",
    )
    assert (run(project)["invalid"], len(exact_receiver.records)) == (0, 2)


# -- 5. one target -------------------------------------------------------------------------


def test_a_sync_pointed_at_another_destination_sends_it_everything(project, exact_receiver):
    with Receiver() as second:
        contacts(project, [f"u{i}@example.com" for i in range(100)])
        project.webhook("first", exact_receiver.url)
        project.webhook("second", second.url)
        header = {"destination": "first", "primary_key": "email"}
        project.sync("people", header, "select email, name from contacts")
        assert run(project)["delivered"] == 100
        project.sync("people", {**header, "destination": "second"}, "select * from contacts")
        [plan] = project.cli("plan", "people", "--json").json_lines()
        assert plan["added"] == 100 and "another target" in plan["note"]
        assert "reason" not in plan  # an upsert sync moves without a hold
        text = project.cli("plan", "people").stdout
        assert "destination 'first' → 'second'" in text
        result = run(project)
        assert (result["added"], result["delivered"], result["removed"]) == (100, 100, 0)
        assert len(second.records) == 100 and len(exact_receiver.records) == 100
        header["object"] = "contacts"  # a new object is a new target too
        project.sync("people", {**header, "destination": "second"}, "select * from contacts")
        assert run(project)["delivered"] == 100


def test_a_mirror_sync_pointed_elsewhere_is_held_until_approved(project, exact_receiver):
    """A → B: as a mirror, the sync would never delete at A what leaves the model, so the move
    waits for approval; pointed back before that, nothing was lost."""
    with Receiver() as second:
        contacts(project, ["a@example.com", "b@example.com"])
        project.webhook("first", exact_receiver.url)
        project.webhook("second", second.url)
        header = {"destination": "first", "primary_key": "email", "mode": "mirror"}
        project.sync("people", header, "select email, name from contacts")
        assert run(project)["delivered"] == 2
        project.sync("people", {**header, "destination": "second"}, "select * from contacts")
        [plan] = project.cli("plan", "people", "--json").json_lines()
        assert "would never delete at the old target" in plan["reason"]
        held = run(project)
        assert held["status"] == "held" and second.batches == []
        project.sync("people", header, "select * from contacts")  # pointed back
        contacts(project, ["a@example.com"])
        back = run(project)
        assert (back["status"], back["removed"]) == ("success", 1)
        assert exact_receiver.sent("delete") == ["b@example.com"]
        project.sync("people", {**header, "destination": "second"}, "select * from contacts")
        assert run(project)["status"] == "held"
        approved = project.cli("approve", "people", "--json").json_lines()[0]
        assert (approved["status"], approved["delivered"]) == ("success", 1)
        assert sorted(second.records) == ["a@example.com"]


def test_a_renamed_mirror_sync_is_held_until_approved(project, exact_receiver):
    contacts(project, ["a@example.com", "b@example.com"])
    project.webhook("crm", exact_receiver.url)
    header = {"destination": "crm", "primary_key": "email", "mode": "mirror"}
    project.sync("people", header, "select email, name from contacts")
    assert run(project)["delivered"] == 2
    (project.root / "syncs" / "people.sql").rename(project.root / "syncs" / "contacts.sql")
    [plan] = project.cli("plan", "contacts", "--json").json_lines()
    assert plan["reason"].startswith("the run would be held: ")
    for attempt in range(2):  # held, and still held on the next run
        [held] = project.cli("run", "contacts", "--json").json_lines()
        assert held["status"] == "held", attempt
        assert "sync 'people'" in held["reason"]
        assert "move people.duckdb to contacts.duckdb" in held["reason"]
    assert project.cli("approve", "contacts").exit_code == 0
    assert project.cli("run", "contacts").exit_code == 0


def test_a_renamed_mirror_sync_whose_state_is_lost_too_is_held(project, exact_receiver):
    """Renamed, and the old state file removed: the target was sent records by a sync that no
    longer exists, so starting over would leave its deletes unsent."""
    contacts(project, ["a@example.com"])
    project.webhook("crm", exact_receiver.url)
    header = {"destination": "crm", "primary_key": "email", "mode": "mirror"}
    project.sync("people", header, "select email, name from contacts")
    assert run(project)["delivered"] == 1
    (project.root / "syncs" / "people.sql").rename(project.root / "syncs" / "folks.sql")
    (project.root / ".reverse_etl" / "syncs" / "people.duckdb").unlink()
    [held] = project.cli("run", "folks", "--json").json_lines()
    assert held["status"] == "held" and "sync 'people' (no longer in syncs/)" in held["reason"]


def test_a_missing_snapshot_of_a_mirror_sync_is_held(project, exact_receiver):
    contacts(project, ["a@example.com", "b@example.com"])
    email_sync(project, exact_receiver)
    assert run(project)["delivered"] == 2
    (project.root / ".reverse_etl" / "syncs" / "people.duckdb").unlink()
    contacts(project, ["a@example.com"])
    held = run(project)
    assert held["status"] == "held" and "does not exist" in held["reason"]
    assert "this sync delivered records to the same destination" in held["reason"]
    assert exact_receiver.sent("delete") == []
    # A reset says the user means it: no hold.
    assert project.cli("reset", "people").exit_code == 0
    assert run(project)["status"] == "success"


def test_approve_releases_only_a_held_run(project, exact_receiver):
    """Approve is no `run --force` in disguise: with nothing held it sends nothing."""
    contacts(project, ["a@example.com", "b@example.com", "c@example.com"])
    email_sync(project, exact_receiver)
    assert run(project)["delivered"] == 3
    contacts(project, ["a@example.com"])  # two of three would be deleted: held
    [plan] = project.cli("plan", "people", "--json").json_lines()
    assert "max_delete_fraction" in plan["reason"]
    assert run(project)["status"] == "held"
    contacts(project, ["a@example.com", "b@example.com", "c@example.com"])
    assert run(project)["status"] == "success"
    contacts(project, [])
    refused = project.cli("approve", "people")
    assert refused.exit_code == 2 and "nothing to approve" in refused.stderr
    assert exact_receiver.sent("delete") == []


def test_a_destination_pointed_at_another_address_is_a_new_target(project, exact_receiver):
    with Receiver() as second:
        contacts(project, ["a@example.com", "b@example.com"])
        email_sync(project, exact_receiver, mode="upsert")
        assert run(project)["delivered"] == 2
        project.webhook("crm", second.url, key_identity="case_insensitive")
        [plan] = project.cli("plan", "people", "--json").json_lines()
        assert plan["added"] == 2 and "destination's address" in plan["note"]
        assert run(project)["delivered"] == 2 and len(second.records) == 2
        # a token rotated in the URL's query is the same place
        project.webhook("crm", second.url + "?token=new", key_identity="case_insensitive")
        assert run(project)["unchanged"] == 2


def test_switching_upsert_to_mirror_deletes_with_the_key_fields(project, exact_receiver):
    project.warehouse("create table items as select i as id, 'n' || i as name from range(3) t(i)")
    project.webhook("hook", exact_receiver.url)
    header = {"destination": "hook", "primary_key": "id", "mode": "upsert"}
    project.sync("items", header, "select id, name from items")
    assert project.cli("run", "items").exit_code == 0
    project.warehouse("delete from items where id = 2")
    project.sync("items", {**header, "mode": "mirror"}, "select id, name from items")
    assert project.cli("run", "items").exit_code == 0
    [delete] = [b for b in exact_receiver.batches if b["operation"] == "delete"]
    assert delete["records"] == [{"key": "2", "fields": {"id": 2}}]


# -- 6. what is owed is sent ---------------------------------------------------------------


def test_an_interrupted_full_resync_sends_what_it_did_not_deliver(project, exact_receiver):
    project.warehouse(
        "create table items as select i as id, 'n' || i as name from range(1000) t(i)"
    )
    project.webhook("hook", exact_receiver.url, max_retries=0, retry_backoff_seconds=0)
    project.sync("items", {"destination": "hook", "primary_key": "id"}, "select * from items")
    assert project.cli("run", "items").exit_code == 0
    exact_receiver.answer = exact_receiver.down_after(1)
    [resync] = project.cli("run", "items", "--full-resync", "--json").json_lines()
    assert (resync["delivered"], resync["failed"]) == (100, 900)
    owed = project.cli("rejected", "items", "--json").json_lines()
    assert len(owed) == 900
    exact_receiver.answer = lambda body: None
    before = len(exact_receiver.batches)
    [after] = project.cli("run", "items", "--json").json_lines()
    assert (after["status"], after["delivered"]) == ("success", 900)
    assert sorted(exact_receiver.sent("upsert", before)) == sorted(r["key"] for r in owed)
    assert project.cli("rejected", "items", "--json").json_lines() == []
    assert project.cli("run", "items", "--json").json_lines()[0]["delivered"] == 0


def test_a_record_whose_answer_was_lost_is_deleted_once_it_leaves_a_mirror(project, exact_receiver):
    """The write landed but its answer did not: the record exists at the destination. When it
    leaves the model, the mirror deletes it (0.2.0 left it there forever)."""
    contacts(project, ["a@example.com"])
    email_sync(project, exact_receiver, max_retries=0)
    assert run(project)["delivered"] == 1
    contacts(project, ["a@example.com", "b@example.com"])
    exact_receiver.lose_answer = lambda body: True
    assert run(project)["failed"] == 1
    assert "b@example.com" in exact_receiver.records
    exact_receiver.lose_answer = lambda body: False
    contacts(project, ["a@example.com"])
    result = run(project)
    assert (result["removed"], result["status"]) == (1, "success")
    assert exact_receiver.sent("delete") == ["b@example.com"]
    assert sorted(exact_receiver.records) == ["a@example.com"]


def test_a_released_quarantine_record_that_is_accepted_leaves_the_ledger(project, exact_receiver):
    project.warehouse("create table items as select i as id, 'ok' as state from range(3) t(i)")
    project.webhook("hook", exact_receiver.url, max_attempts=2)
    project.sync("items", {"destination": "hook", "primary_key": "id"}, "select * from items")

    def reject_bad(body: dict[str, Any]) -> Answer:
        bad = [r["key"] for r in body["records"] if r["fields"]["state"] == "bad"]
        if not bad:
            return None
        ok = dict(body, records=[r for r in body["records"] if r["key"] not in bad])
        exact_receiver._apply(ok)
        errors = [{"key": k, "error": "bad state"} for k in bad]
        return 200, json.dumps({"errors": errors}).encode()

    exact_receiver.answer = reject_bad
    project.warehouse("update items set state = 'bad' where id = 1")
    for _ in range(3):
        project.cli("run", "items")
    [ledger] = project.cli("rejected", "items", "--json").json_lines()
    assert "quarantined" in ledger["error"]
    project.warehouse("update items set state = 'fixed' where id = 1")
    [fixed] = project.cli("run", "items", "--json").json_lines()
    assert (fixed["status"], fixed["delivered"]) == ("success", 1)
    assert project.cli("rejected", "items", "--json").json_lines() == []
    again = project.cli("run", "items", "--json")
    assert (again.exit_code, again.json_lines()[0]["status"]) == (0, "success")


# -- 7. changes are changes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("[]::INT[]", "NULL::INT[]"),
        ("{'a': NULL}::STRUCT(a INT)", "NULL::STRUCT(a INT)"),
        ("[[], [1]]::INT[][]", "[NULL, [1]]::INT[][]"),
        ("[1.5]::DECIMAL(10,2)[]", "[1.50]::DECIMAL(10,1)[]"),
    ],
)
def test_values_that_are_sent_differently_are_changes(project, exact_receiver, before, after):
    project.warehouse(f"create table t as select 1 as id, {before} as v")
    project.webhook("hook", exact_receiver.url)
    project.sync("t", {"destination": "hook", "primary_key": "id"}, "select * from t")
    assert project.cli("run", "t").exit_code == 0
    project.warehouse(f"create or replace table t as select 1 as id, {after} as v")
    [result] = project.cli("run", "t", "--json").json_lines()
    assert (result["changed"], result["delivered"]) == (1, 1)
    first, second = (b["records"][0]["fields"]["v"] for b in exact_receiver.batches)
    assert first != second


def test_reordered_columns_and_widened_decimals_send_nothing(project, exact_receiver):
    project.warehouse(
        "create table t as select i as id, (i * 1.25)::decimal(14,2) as amount, "
        "'x' || i as name, i::integer as n from range(50) t(i)"
    )
    project.webhook("hook", exact_receiver.url)
    header = {"destination": "hook", "primary_key": "id"}
    project.sync("t", header, "select id, amount, name, n from t")
    assert project.cli("run", "t").exit_code == 0
    project.sync(
        "t", header, "select name, amount::decimal(18,2) as amount, n::bigint as n, id from t"
    )
    [result] = project.cli("run", "t", "--json").json_lines()
    assert (result["unchanged"], result["delivered"]) == (50, 0)
    project.sync("t", header, "select id, amount::decimal(18,3) as amount, name, n from t")
    [rescaled] = project.cli("run", "t", "--json").json_lines()
    assert rescaled["changed"] == 50, "12.500 is sent where 12.50 was: a change"


@pytest.mark.parametrize(
    ("select", "named", "line"),
    [
        ("select id,\n  email as Email,\n  email from t", "'Email' and 'email'", 4),
        ("select id, 1 as v, 2 as v from t", "'v' 2 times", 3),
        ("select * from t join t as u using (id)", "'email' 2 times", 3),
        ("select 1 as id, 1 as a, 2 as A, 3 as b, 4 as b", "'a' and 'A'; 'b' 2 times", 3),
    ],
)
def test_column_names_that_collide_are_a_validation_error(
    project, exact_receiver, select, named, line
):
    project.warehouse("create table t as select 1 as id, 'a@b.c' as email")
    project.webhook("hook", exact_receiver.url)
    project.sync("t", {"destination": "hook", "primary_key": "id"}, select)
    validate = project.cli("validate", "--json")
    assert validate.exit_code == 2
    [error] = json.loads(validate.stdout)["errors"]
    assert error["file"] == "syncs/t.sql" and error["line"] == line, error
    assert named in error["message"]
    run_outcome = project.cli("run", "t")
    assert run_outcome.exit_code == 2 and named in run_outcome.stderr
    assert exact_receiver.batches == []


# -- 10. bounded memory --------------------------------------------------------------------


def test_a_run_whose_changes_outgrow_memory_limit_spills_and_delivers(project, exact_receiver):
    """150,000 rows of 600 bytes (about 90 MB of fields) under a 64 MB memory_limit: the second
    pass streams the wide rows into the outbox (0.2.0 held them all for a window, failed, and
    blamed the model)."""
    (project.root / "config.toml").write_text('[state]\nmemory_limit = "64MB"\nthreads = 1\n')
    project.warehouse(
        "create table wide as select i as id, repeat('x', 400) || i as payload, "
        "repeat('y', 200) as other from range(150000) t(i)"
    )
    project.webhook("hook", exact_receiver.url, batch_size=5000)
    project.sync("wide", {"destination": "hook", "primary_key": "id"}, "select * from wide")
    outcome = project.cli("run", "wide", "--json")
    [result] = outcome.json_lines()
    assert (result["status"], result["delivered"]) == ("success", 150_000), outcome.stderr
    assert len(exact_receiver.records) == 150_000


def test_plan_and_run_agree_after_the_key_identity_changes(project, exact_receiver):
    contacts(project, ["a@example.com", "x@example.com", "X@example.com"])
    project.webhook("crm", exact_receiver.url)  # exact: three records
    header = {"destination": "crm", "primary_key": "email", "mode": "mirror"}
    project.sync("people", header, "select email, name from contacts")
    assert run(project)["delivered"] == 3
    project.webhook("crm", exact_receiver.url, key_identity="case_insensitive")
    [plan] = project.cli("plan", "people", "--json").json_lines()
    result = run(project)
    counts = ("rows", "added", "changed", "removed", "unchanged", "invalid")
    assert {k: plan[k] for k in counts} == {k: result[k] for k in counts}
    assert (result["rows"], result["invalid"], result["removed"]) == (3, 2, 0)
    assert exact_receiver.sent("delete") == []


def test_sync_names_alike_but_for_letter_case_are_refused(project, exact_receiver):
    """On a file system that ignores case (macOS, Windows) they would share state files."""
    project.warehouse("create table t as select 1 as id")
    project.webhook("hook", exact_receiver.url)
    for name in ("Folks", "folks"):
        project.sync(name, {"destination": "hook", "primary_key": "id"}, "select id from t")
    validate = project.cli("validate", "--json")
    files = sorted(e["file"] for e in json.loads(validate.stdout)["errors"])
    assert validate.exit_code == 2 and files == ["syncs/Folks.sql", "syncs/folks.sql"]
    outcome = project.cli("run", "folks")
    assert outcome.exit_code == 2 and "differ only in letter case" in outcome.stderr
    assert exact_receiver.batches == []


@pytest.mark.parametrize(
    ("first", "second"),
    [("İx@example.com", "i̇x@example.com"), ("STRASSE@example.com", "straße@example.com")],
)
def test_keys_a_vendor_may_fold_alike_are_one_identity(project, ci_receiver, first, second):
    """Unicode case folding puts together what plain lower case keeps apart (a dotted capital
    I, an eszett): both rows are invalid, and removing one deletes nothing."""
    contacts(project, [first, second, "other@example.com"])
    email_sync(project, ci_receiver)
    result = run(project)
    assert (result["invalid"], result["delivered"]) == (2, 1)
    contacts(project, [second, "other@example.com"])
    assert run(project)["removed"] == 0
    assert ci_receiver.sent("delete") == []


def test_a_rejection_is_pinned_on_the_key_it_names_exactly(project, exact_receiver):
    """The text keys `[1]` and `[1.0]` are alike as JSON values: the receiver's rejection of
    `[1]` is `[1]`'s, and `[1.0]` is delivered (0.2 pinned it on the other, and lost `[1]`)."""
    project.warehouse(
        "create table t as select * from (values ('[1]', 'a'), ('[1.0]', 'b'), ('x', 'c')) v(k, n)"
    )
    project.webhook("hook", exact_receiver.url)
    project.sync("t", {"destination": "hook", "primary_key": "k"}, "select k, n from t")

    def reject_one(body: dict[str, Any]) -> Answer:
        exact_receiver._apply(dict(body, records=[r for r in body["records"] if r["key"] != "[1]"]))
        return 200, json.dumps({"errors": [{"key": "[1]", "error": "bad"}]}).encode()

    exact_receiver.answer = reject_one
    [result] = project.cli("run", "t", "--json").json_lines()
    assert (result["delivered"], result["rejected"]) == (2, 1)
    assert [r["key"] for r in project.cli("rejected", "t", "--json").json_lines()] == ["[1]"]


@pytest.mark.parametrize(
    ("setting", "said"),
    [
        ("requests_per_second = inf", "requests_per_second: Input should be a finite number"),
        ("timeout_seconds = nan", "timeout_seconds: Input should be a finite number"),
        ('headers = { "X A" = "a" }', "'X A' is not a header name"),
        ('headers = { X-A = "a\\nb" }', "the value of 'X-A' has a line break"),
        ('url = "http://127.0.0.1:99999/x"', "url: is not a valid URL (a port from 1 to 65535"),
    ],
)
def test_destination_settings_that_could_only_fail_at_run_time_are_refused(
    project, setting, said
):
    project.warehouse("create table t as select 1 as id")
    lines = ['type = "webhook"', 'url = "http://127.0.0.1:9/x"', setting]
    if setting.startswith("url"):
        lines.pop(1)
    project.destination("hook", "\n".join(lines))
    project.sync("t", {"destination": "hook", "primary_key": "id"}, "select id from t")
    for outcome in (project.cli("validate"), project.cli("run", "t")):
        assert outcome.exit_code == 2 and said in outcome.stderr, outcome.stderr
        assert "Traceback" not in outcome.stderr and "destinations/hook.toml:" in outcome.stderr


def test_a_primary_key_changed_after_deliveries_is_held_in_any_mode(project, exact_receiver):
    """["a", "b"] → ["b", "a"] writes every key anew: the destination would hold each record
    twice. Held until approved, even in upsert mode."""
    project.warehouse("create table t as select i as a, i % 3 as b from range(5) t(i)")
    project.webhook("hook", exact_receiver.url)
    header = {"destination": "hook", "primary_key": ["a", "b"]}
    project.sync("t", header, "select a, b from t")
    assert project.cli("run", "t").exit_code == 0
    project.sync("t", {**header, "primary_key": ["b", "a"]}, "select a, b from t")
    [held] = project.cli("run", "t", "--json").json_lines()
    assert held["status"] == "held" and "each record twice" in held["reason"]
    assert len(exact_receiver.records) == 5


def test_case_folding_tables_agree_with_python_for_every_letter():
    """Every two keys that Python's str.casefold takes for one (Unicode's CaseFolding.txt)
    are one identity in the engine's SQL (reverse_etl/casefold.py is generated from it)."""
    import unicodedata

    import duckdb

    from reverse_etl.diff.local import identity_sql

    chars = [chr(i) + "a" for i in range(0x80, 0x30000) if not 0xD800 <= i <= 0xDFFF]
    expr = identity_sql("x", "case_insensitive")
    with duckdb.connect() as con:
        ident = dict(con.execute(f"select x, {expr} from unnest(?) t(x)", [chars]).fetchall())
    folded: dict[str, set[str]] = {}
    for key in chars:
        folded.setdefault(unicodedata.normalize("NFC", key).casefold(), set()).add(ident[key])
    apart = {fold: idents for fold, idents in folded.items() if len(idents) > 1}
    assert apart == {}
    assert ident["µa"] == ident["μa"] and ident["ßa"] == "ssa"



@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("https://h/in?token=a", "https://h/in?token=b", True),
        ("https://u:p1@h/in", "https://u:p2@h/in", True),
        ("postgresql://h/db?options=-csearch_path%3Da", "postgresql://h/db?options=-c%3Db", False),
        ("postgresql:///crm?host=a&password=x", "postgresql:///crm?host=a&password=y", True),
        ("postgresql:///crm?host=a", "postgresql:///crm?host=b", False),
        ("host=db dbname=crm password=x", "host=db dbname=crm password=y", True),
        ("host=db dbname=crm", "host=db dbname=other", False),
    ],
)
def test_a_destinations_address_is_where_it_points_not_how_it_signs_in(first, second, same):
    """Part of a sync's target: what locates the records moves it (a PostgreSQL URI's query
    included), what authenticates does not (a rotated token or password)."""
    from reverse_etl.destinations.base import Destination, DestinationSettings

    class Dsn(DestinationSettings):
        dsn: str

    def address(value: str) -> str:
        return Destination.address(Dsn(type="t", dsn=value))

    assert (address(first) == address(second)) is same


def test_a_renamed_mirror_sync_with_another_object_is_held_and_approval_sticks(
    project, exact_receiver
):
    """Renamed and pointed at another object: its old records could never be deleted, so it is
    held; once approved (or its state moved over), a later reset no longer holds it."""
    contacts(project, ["a@example.com"])
    project.webhook("crm", exact_receiver.url)
    header = {"destination": "crm", "primary_key": "email", "mode": "mirror"}
    project.sync("people", {**header, "object": "contacts"}, "select email, name from contacts")
    assert run(project)["delivered"] == 1
    (project.root / "syncs" / "people.sql").unlink()
    project.sync("people2", {**header, "object": "contacts_v2"}, "select * from contacts")
    [held] = project.cli("run", "people2", "--json").json_lines()
    assert held["status"] == "held" and "sync 'people' (no longer in syncs/)" in held["reason"]
    assert project.cli("approve", "people2").exit_code == 0
    assert project.cli("reset", "people2").exit_code == 0
    [after] = project.cli("run", "people2", "--json").json_lines()
    assert after["status"] == "success", after
