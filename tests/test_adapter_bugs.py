"""An adapter that does something outside its contract (docs/writing-a-destination.md): a
result of the wrong type, an exception that is not a signal, SystemExit or KeyboardInterrupt
from its own code, a check that answers no line of text. The engine takes it for the bug it
is: the batch's records are not counted delivered (they stay owed and the next run sends
them), the run ends `error` with exit 2 and a message naming the adapter, the call and what
was wrong, recorded in the run history; no traceback.

The adapter is a third-party plugin installed for real (its own package and entry point)
and run by the CLI as a subprocess, against the real webhook receiver on 127.0.0.1. At the end,
a real interruption of the run (its task cancelled, a signal handler's KeyboardInterrupt) is
shown to still pass through an adapter's call untouched."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap

import pytest

from reverse_etl.delivery.engine import Delivery
from reverse_etl.delivery.ratelimit import RateLimiter
from reverse_etl.destinations.base import (
    DELIVERED,
    Batch,
    Destination,
    DestinationSettings,
    Result,
)
from reverse_etl.diff.local import SyncState
from reverse_etl.state.history import History
from reverse_etl.state.ledger import Ledger

ROWS = 10
KEYS = [str(i) for i in range(1, ROWS + 1)]

# The plugin: the webhook adapter, whose answers and exceptions a `behavior` setting spoils.
PYPROJECT = """
[build-system]
requires = ["hatchling>=1.21"]
build-backend = "hatchling.build"

[project]
name = "buggy-reverse-etl"
version = "0.1.0"
requires-python = ">=3.11"

[project.entry-points."reverse_etl.destinations"]
buggy = "buggy_reverse_etl:Buggy"

[tool.hatch.build.targets.wheel]
packages = ["buggy_reverse_etl"]
"""

ADAPTER = '''
import asyncio

from reverse_etl.destinations import (
    DELIVERED, Delivered, Rejected, Retry, Retryable, Throttled
)
from reverse_etl.destinations.webhook.adapter import WebhookDestination, WebhookSettings

WRONG = {  # answers outside the contract, for n records
    "class": lambda n: [Delivered] * n,
    "none": lambda n: [None] * n,
    "text": lambda n: ["delivered"] * n,
    "true": lambda n: [True] * n,
    "one_none": lambda n: [DELIVERED, None] + [DELIVERED] * (n - 2),
    "no_list": lambda n: None,
    "generator": lambda n: (DELIVERED for _ in range(n)),
    "short": lambda n: [DELIVERED] * (n - 1),
    "rejected_none": lambda n: [Rejected(None)] * n,
    "rejected_dict": lambda n: [Rejected({"code": 1})] * n,
    "retry_none": lambda n: [Retry(None)] * n,
    "retry_text_after": lambda n: [Retry("busy", after="5")] * n,
    "retry_negative_after": lambda n: [Retry("busy", after=-1.0)] * n,
    "retry_nan_after": lambda n: [Retry("busy", after=float("nan"))] * n,
}
RAISED = {  # exceptions outside the contract
    "keyerror": lambda: KeyError("results"),
    "cancelled": lambda: asyncio.CancelledError(),
    "exit0": lambda: SystemExit(0),
    "exit3": lambda: SystemExit(3),
    "ctrl_c": lambda: KeyboardInterrupt(),
    "base": lambda: BaseException("boom"),
    "throttled_text_after": lambda: Throttled("slow down", retry_after="soon"),
}


def spoiled(behavior, n):
    """The wrong answer, or exception, named by behavior (after its prefix)."""
    name = behavior.partition(":")[2]
    if name in RAISED:
        raise RAISED[name]()
    return WRONG[name](n)


class BuggySettings(WebhookSettings):
    behavior: str = "ok"


class Buggy(WebhookDestination):
    contract_version = 1
    type = "buggy"
    description = "the webhook, spoiled on purpose"
    settings_model = BuggySettings
    idempotent_operations = frozenset()  # an upsert of unknown outcome is looked up first
    reconcilable_operations = frozenset({"upsert"})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.settings.behavior == "init:keyerror":
            {}["token"]

    async def aclose(self):
        if self.settings.behavior == "aclose:keyerror":
            {}["pool"]

    async def send(self, batch):
        behavior = self.settings.behavior
        if behavior.startswith("reconcile:"):  # never sent: the lookup that follows is spoiled
            raise Retryable("the connection dropped")
        results = await super().send(batch)  # delivered for real
        if behavior.startswith("send:"):
            return spoiled(behavior, len(batch.records))
        return results

    async def reconcile(self, batch):
        behavior = self.settings.behavior
        if behavior.startswith("reconcile:"):
            return spoiled(behavior, len(batch.records))
        return [None] * len(batch.records)  # (nothing was sent by a "reconcile:" run)

    async def check(self):
        behavior = self.settings.behavior
        if behavior == "check:dict":
            return {"ok": True}
        if behavior.startswith("check:"):
            spoiled(behavior, 0)
        return await super().check()
'''


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a process that has the plugin installed (the project's environment
    untouched: it goes into a folder of its own)."""
    root = tmp_path_factory.mktemp("buggy")
    source = root / "source"
    (source / "buggy_reverse_etl").mkdir(parents=True)
    (source / "pyproject.toml").write_text(textwrap.dedent(PYPROJECT))
    (source / "buggy_reverse_etl" / "__init__.py").write_text(textwrap.dedent(ADAPTER))
    from test_plugin_example import install

    return install(source, root / "site-packages").env


@pytest.fixture
def buggy(project, receiver, plugin_env):
    """A project whose sync `s` sends ROWS users to destination `d` (the plugin, pointed at
    the receiver), one batch; `buggy(behavior)` sets the adapter's behavior."""
    project.warehouse(f"create table users as select range as id from range(1, {ROWS + 1})")
    project.sync(
        "s", {"destination": "d", "primary_key": "id", "mode": "upsert"}, "select id from users"
    )

    def behave(behavior: str):
        project.destination(
            "d",
            f"""
            type = "buggy"
            url = "{receiver.url}"
            behavior = "{behavior}"
            retry_backoff_seconds = 0
            """,
        )
        return project

    return behave


def bug(call: str, what: str) -> str:
    return f"bug in adapter 'buggy' (buggy_reverse_etl.Buggy): {call}() {what}"


OF_SEND = "DELIVERED, Rejected(error) or Retry(error, after)"
OF_LOOKUP = "DELIVERED (found), None (not found), Rejected(error) or Retry(error, after)"
AFTER = "its after must be None or a finite number of seconds >= 0"

SEND_CASES = {
    "class": f"returned the class Delivered itself as result 1 of 10; a result is {OF_SEND}",
    "none": f"returned None as result 1 of 10; a result is {OF_SEND}",
    "text": f"returned 'delivered' as result 1 of 10; a result is {OF_SEND}",
    "true": f"returned True as result 1 of 10; a result is {OF_SEND}",
    "one_none": f"returned None as result 2 of 10; a result is {OF_SEND}",
    "no_list": f"returned None, not a list of results ({OF_SEND})",
    "generator": "returned <generator object",
    "short": "returned 9 results for 10 records",
    "rejected_none": "returned Rejected(error=None, exists=False) as result 1 of 10; its error "
    "must be text, not NoneType",
    "rejected_dict": "returned Rejected(error={'code': 1}, exists=False) as result 1 of 10; its "
    "error must be text, not dict",
    "retry_none": "returned Retry(error=None, after=None) as result 1 of 10; its error must be "
    "text, not NoneType",
    "retry_text_after": f"returned Retry(error='busy', after='5') as result 1 of 10; {AFTER}",
    "retry_negative_after": f"returned Retry(error='busy', after=-1.0) as result 1 of 10; {AFTER}",
    "retry_nan_after": f"returned Retry(error='busy', after=nan) as result 1 of 10; {AFTER}",
    "keyerror": "raised KeyError('results')",
    "cancelled": "raised CancelledError()",
    "exit0": "raised SystemExit(0)",
    "exit3": "raised SystemExit(3)",
    "ctrl_c": "raised KeyboardInterrupt()",
    "base": "raised BaseException('boom')",
    "throttled_text_after": "raised Throttled('slow down') with retry_after = 'soon', not seconds",
}
RECONCILE_CASES = {
    "class": f"returned the class Delivered itself as result 1 of 10; a result is {OF_LOOKUP}",
    "text": f"returned 'delivered' as result 1 of 10; a result is {OF_LOOKUP}",
    "no_list": f"returned None, not a list of results ({OF_LOOKUP})",
    "short": "returned 9 results for 10 records",
    "rejected_none": "returned Rejected(error=None, exists=False) as result 1 of 10; its error "
    "must be text, not NoneType",
    "keyerror": "raised KeyError('results')",
    "cancelled": "raised CancelledError()",
    "exit0": "raised SystemExit(0)",
    "ctrl_c": "raised KeyboardInterrupt()",
}
CASES = [("send", name, what) for name, what in SEND_CASES.items()] + [
    ("reconcile", name, what) for name, what in RECONCILE_CASES.items()
]


@pytest.mark.parametrize(
    ("call", "behavior", "what"), CASES, ids=[f"{c}-{b}" for c, b, _ in CASES]
)
def test_a_run_stops_on_the_adapters_bug_and_its_records_stay_owed(
    buggy, receiver, plugin_env, call, behavior, what
):
    project = buggy(f"{call}:{behavior}")
    first = project.command("run", "s", "--json", env=plugin_env)

    message = f"destination 'd': {bug(call, what)}"
    assert first.exit_code == 2, first
    assert "Traceback" not in first.stderr and "never retrieved" not in first.stderr, first
    assert f"error: s: {message}" in first.stderr
    [result] = first.json_lines()
    assert result["status"] == "error" and result["error"].startswith(message), result
    assert (result["delivered"], result["failed"]) == (0, ROWS), result

    history = History(project.root / ".reverse_etl")
    try:
        [recorded] = history.runs("s", limit=1)
        owed = Ledger(history, "s").entries()
    finally:
        history.close()
    assert recorded["run_id"] == result["run_id"], recorded
    assert recorded["status"] == "error" and recorded["error"] == result["error"], recorded
    # None of them counted delivered: every record is listed as failed, with the bug.
    assert sorted(e["key"] for e in owed) == sorted(KEYS), owed
    assert all(e["reason"] == "failed" and message in e["error"] for e in owed), owed

    received = dict(receiver.received)  # what run 1 wrote (its answer was thrown away)
    second = buggy("ok").command("run", "s", "--json", env=plugin_env)
    assert second.exit_code == 0, second
    [again] = second.json_lines()
    assert (again["status"], again["delivered"], again["added"]) == ("success", ROWS, ROWS)
    assert {key: receiver.received[key] - received.get(key, 0) for key in KEYS} == dict.fromkeys(
        KEYS, 1
    )


@pytest.mark.parametrize("call", ["__init__", "aclose"])
def test_an_adapter_failing_to_open_or_close_is_named_without_a_traceback(
    buggy, plugin_env, call
):
    """Opening the adapter, or closing it after the run sent: a bug said as one, exit 2."""
    project = buggy(f"{call.strip('_')}:keyerror")
    outcome = project.command("run", "s", "--json", env=plugin_env)
    assert outcome.exit_code == 2 and "Traceback" not in outcome.stderr, outcome
    [result] = outcome.json_lines()
    assert result["status"] == "error", result
    assert f"{bug(call, 'raised KeyError')}" in result["error"], result


CHECK_CASES = {
    "keyerror": "raised KeyError('results')",
    "cancelled": "raised CancelledError()",
    "exit0": "raised SystemExit(0)",
    "ctrl_c": "raised KeyboardInterrupt()",
    "base": "raised BaseException('boom')",
    "dict": "returned {'ok': True}, not a line of text",
}


@pytest.mark.parametrize(("behavior", "what"), CHECK_CASES.items(), ids=list(CHECK_CASES))
def test_a_check_names_the_adapters_bug(buggy, plugin_env, behavior, what):
    checked = buggy(f"check:{behavior}").command("check", "d", "--json", env=plugin_env)
    message = f"destination 'd' failed the check: {bug('check', what)}"
    assert checked.exit_code == 2, checked
    assert "Traceback" not in checked.stderr, checked
    assert f"error: d: {message}" in checked.stderr, checked
    [line] = checked.json_lines()
    assert line["ok"] is False and line["error"].startswith(message), line


def test_a_check_through_the_same_adapter_passes_when_it_keeps_the_contract(buggy, plugin_env):
    checked = buggy("ok").command("check", "d", "--json", env=plugin_env)
    assert checked.exit_code == 0, checked
    [line] = checked.json_lines()
    assert line["ok"] is True and "an empty batch was accepted" in line["detail"], line


# -- a real interruption of the run is not the adapter's -------------------------------------


@pytest.fixture
def state(tmp_path):
    with SyncState(
        tmp_path / "s.duckdb",
        read_only=False,
        memory_limit="256MB",
        threads=1,
        temp_dir=tmp_path / "tmp",
    ) as state:
        state.con.execute("CREATE TEMP TABLE src AS SELECT range AS id FROM range(10)")
        state.bind("src", ["id"], "syncs/t.sql", 1)
        state.diff("upsert", full_resync=False, build_pending=True)
        yield state


class Slow(Destination):
    """Its send waits (an hour) once `entered` is set: long enough to be cancelled meanwhile."""

    type = "slow"

    def __init__(self) -> None:
        super().__init__("dest", DestinationSettings(type="slow"), client=None)
        self.entered = asyncio.Event()

    async def send(self, batch: Batch) -> list[Result]:
        self.entered.set()
        await asyncio.sleep(3600)
        return [DELIVERED] * len(batch.records)


class Signalled(Destination):
    """Its first send gets a SIGUSR1 while it runs, then answers every record delivered."""

    type = "signalled"

    def __init__(self) -> None:
        super().__init__("dest", DestinationSettings(type="signalled"), client=None)
        self.sends = 0

    async def send(self, batch: Batch) -> list[Result]:
        self.sends += 1
        if self.sends == 1:
            os.kill(os.getpid(), signal.SIGUSR1)  # its handler runs within this call
        return [DELIVERED] * len(batch.records)


def deliver(state, adapter, ledger: list[tuple[str, str, int]]) -> Delivery:
    delivery = Delivery(
        sync="t",
        object_name=None,
        adapter=adapter,
        limiter=RateLimiter(None),
        state=state,
        on_batch=lambda rejected, failed: ledger.extend(rejected + failed),
    )
    return delivery.run(state.pending_batches(5))


def accepted(state) -> int:
    state.fold_acknowledged(keep_fields=False)
    return state.con.execute("SELECT count(*) FROM state.snapshot").fetchone()[0]


def test_cancelling_the_run_still_cancels_the_adapters_call(state):
    """A CancelledError while the run's task is being cancelled is not the adapter's bug:
    the run is cancelled as it always was, its batches not recorded as failed by a bug."""
    adapter, ledger = Slow(), []

    async def run_then_cancel():
        task = asyncio.create_task(deliver(state, adapter, ledger))
        await adapter.entered.wait()
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run_then_cancel())
    assert ledger == [] and accepted(state) == 0


def test_a_signal_handlers_interrupt_during_the_adapters_call_still_interrupts(state):
    """A KeyboardInterrupt raised by a signal handler (asyncio.run's second Ctrl-C) while the
    adapter's code runs is the user's, not the adapter's: it propagates as it always did."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            asyncio.run(deliver(state, Signalled(), []))
    finally:
        signal.signal(signal.SIGUSR1, previous)
