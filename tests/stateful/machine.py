"""A rule-based state machine (hypothesis) driving one sync against one destination's fake.

Random steps change the model (insert, update, delete rows; change a key's letter case; add and
remove vendor-equal duplicates and NULL keys), switch the mode between upsert and mirror, run
with faults injected (429s, 5xx, hangs and late answers past the timeout, dropped connections,
unreadable 2xx, a record refused), SIGKILL a run (the CLI as a subprocess) at a random point,
`reset`, and run clean, with or without `--full-resync`.

After every run: no delete ever named an identity the model had at that run, and no identity was
created twice (more than once plus the times a mirror deleted it). After every clean run that
delivered all it could (status `success`, or `partial` for invalid rows only): the destination
equals the model under the vendor's key identity, the ledger lists exactly the invalid rows, and
the next run sends nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
from conftest import ProjectFixture
from fakes.project import write_destination
from hypothesis import event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from stateful.targets import Target

MAX_ROWS = 30
WORDS = ("ada", "bea", "cyd", "dot", "eve", "fay", "gus", "hal")
KEYS = st.builds(lambda w, n: f"{w}{n}", st.sampled_from(WORDS), st.integers(0, 3))
NAMES = st.sampled_from(["Ann", "Bo", "Cai", "Dee"])


def note(text: str) -> None:
    """Count this in --hypothesis-show-statistics (outside a test, as in a reproduction
    script, nothing)."""
    with contextlib.suppress(InvalidArgument):
        event(text)


def variant(key: str, seed: int) -> str:
    """Another letter case of `key` (the same identity for a case-insensitive vendor)."""
    changed = "".join(c.upper() if (seed >> i) & 1 else c.lower() for i, c in enumerate(key))
    return changed if changed != key else key.swapcase()


class SyncMachine(RuleBasedStateMachine):
    target_class: type[Target]
    latency: tuple[float, float] = (0.0, 0.01)

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="reverse-etl-sm-"))
        self.project = ProjectFixture(self.root / "project")
        (self.project.root / "syncs").mkdir(parents=True)
        self.target = self.target_class(self.latency, seed=0)
        self.target.start()
        self.rows: list[tuple[str | None, str]] = [("ada0", "Ann")]
        self.mode = "upsert"
        self.orphans: set[str] = set()  # identities the engine was told to forget
        self.reset_pending = False
        self.deleted: Counter[str] = Counter()  # identity → times it went from held to gone
        self.step_failed = False
        self.write_model()
        write_destination(
            self.project,
            "d",
            self.target.destination(),
            timeout_seconds=self.target.timeout,
            max_retries=2,
            retry_backoff_seconds=0.05,
            max_concurrency=4,
            batch_size=3,
            max_attempts=1000,  # faults come and go: never quarantine
        )
        self.write_sync()

    def teardown(self) -> None:
        try:
            if not self.step_failed:
                self.clean_run()  # the machine's last word: a clean run meets every invariant
        finally:
            self.close()

    def close(self) -> None:
        self.target.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- the model ----------------------------------------------------------------------------

    def identity(self, key: str) -> str:
        return self.target.identity(key)

    def write_model(self) -> None:
        with duckdb.connect(str(self.project.root / "warehouse.duckdb")) as con:
            con.execute("create or replace table m (k varchar, name varchar)")
            if self.rows:
                con.executemany("insert into m values (?, ?)", self.rows)

    def write_sync(self) -> None:
        header = {"destination": "d", "mode": self.mode, "max_delete_fraction": 1.0}
        self.project.sync("s", {**header, **self.target.header()}, self.target.model_sql())

    def groups(self) -> Counter[str]:
        return Counter(self.identity(k) for k, _ in self.rows if k is not None)

    def valid(self) -> dict[str, str]:
        """Identity → name of each row the engine must deliver."""
        counts = self.groups()
        return {
            self.identity(k): n
            for k, n in self.rows
            if k is not None and counts[self.identity(k)] == 1
        }

    def invalid_keys(self) -> list[str | None]:
        counts = self.groups()
        return [k for k, _ in self.rows if k is None or counts[self.identity(k)] > 1]

    # -- steps: the model -----------------------------------------------------------------------

    @precondition(lambda self: len(self.rows) < MAX_ROWS)
    @rule(key=KEYS, name=NAMES)
    def insert_row(self, key: str, name: str) -> None:
        self.rows.append((key, name))
        self.write_model()

    @precondition(lambda self: len(self.rows) < MAX_ROWS)
    @rule(name=NAMES)
    def insert_null_key(self, name: str) -> None:
        self.rows.append((None, name))
        self.write_model()

    @precondition(lambda self: len(self.rows) > 0)
    @rule(data=st.data(), name=NAMES)
    def update_row(self, data: st.DataObject, name: str) -> None:
        i = data.draw(st.integers(0, len(self.rows) - 1))
        self.rows[i] = (self.rows[i][0], name)
        self.write_model()

    @precondition(lambda self: len(self.rows) > 1)  # an empty model is a safety rail's case
    @rule(data=st.data())
    def delete_row(self, data: st.DataObject) -> None:
        del self.rows[data.draw(st.integers(0, len(self.rows) - 1))]
        self.write_model()

    @precondition(lambda self: any(k for k, _ in self.rows))
    @rule(data=st.data(), seed=st.integers(0, 255))
    def change_key_case(self, data: st.DataObject, seed: int) -> None:
        keyed = [i for i, (k, _) in enumerate(self.rows) if k]
        i = data.draw(st.sampled_from(keyed))
        key, name = self.rows[i]
        self.rows[i] = (variant(key, seed), name)  # type: ignore[arg-type]
        self.write_model()

    @precondition(lambda self: len(self.rows) < MAX_ROWS and any(k for k, _ in self.rows))
    @rule(data=st.data(), seed=st.integers(0, 255), name=NAMES)
    def add_vendor_equal_duplicate(self, data: st.DataObject, seed: int, name: str) -> None:
        key = data.draw(st.sampled_from([k for k, _ in self.rows if k]))
        twin = variant(key, seed) if self.target.identity_rule == "case_insensitive" else key
        self.rows.append((twin, name))
        self.write_model()

    @precondition(lambda self: len(self.rows) > 1 and self.invalid_keys())
    @rule(data=st.data())
    def remove_invalid_row(self, data: st.DataObject) -> None:
        counts = self.groups()
        bad = [i for i, (k, _) in enumerate(self.rows) if k is None or counts[self.identity(k)] > 1]
        del self.rows[data.draw(st.sampled_from(bad))]
        self.write_model()

    @rule()
    def switch_mode(self) -> None:
        self.mode = "mirror" if self.mode == "upsert" else "upsert"
        self.write_sync()

    @rule()
    def reset(self) -> None:
        self.step_failed = True
        outcome = self.project.cli("reset", "s")
        assert outcome.exit_code == 0, outcome
        self.reset_pending = True

    # -- steps: runs ----------------------------------------------------------------------------

    def touch(self, data: st.DataObject) -> None:
        """Rename a few rows, so that the next run has something to send."""
        for _ in range(data.draw(st.integers(0, 4), label="touched")):
            i = data.draw(st.integers(0, len(self.rows) - 1))
            self.rows[i] = (self.rows[i][0], data.draw(NAMES))
        self.write_model()

    @rule(data=st.data(), times=st.integers(1, 3))
    def run_with_fault(self, data: st.DataObject, times: int) -> None:
        self.touch(data)
        if not self.target.faults:
            return self.clean_run()
        fault = data.draw(st.sampled_from(self.target.faults), label="fault")
        if fault == "partial":
            keys = [k for k, _ in self.rows if k and self.identity(k) in self.valid()]
            if keys:
                self.target.fail_record(data.draw(st.sampled_from(keys), label="refused"))
        else:  # faults that wait past the timeout once: they cost seconds
            slow = fault.startswith(("hang", "late", "429_retry_after", "lock"))
            for _ in range(1 if slow else times):
                self.target.inject(fault)
        try:
            result = self.run()
        finally:
            self.target.clear_faults()
        note(f"fault {fault}: {result['status']}")
        assert result["status"] in ("success", "partial", "error"), result
        return None

    @rule(full_resync=st.booleans())
    def run_clean(self, full_resync: bool) -> None:
        self.clean_run(full_resync)

    @rule(data=st.data(), after_requests=st.none() | st.integers(0, 6), delay=st.floats(0, 1.5))
    def run_killed(self, data: st.DataObject, after_requests: int | None, delay: float) -> None:
        """SIGKILL the CLI after the fake saw `after_requests` more requests, or after `delay`
        seconds (the process takes about half a second to start); sometimes while a request
        the vendor applied is still unanswered."""
        self.touch(data)
        if self.target.faults and data.draw(st.booleans(), label="kill during a hang"):
            self.target.inject("hang_applied")
        with self.bookkeeping():
            proc = self.project.popen("run", "s", "--json")
            seen = self.target.request_count()
            deadline = time.monotonic() + (3.0 if after_requests is not None else delay)
            while proc.poll() is None and time.monotonic() < deadline:
                if (
                    after_requests is not None
                    and self.target.request_count() - seen >= after_requests
                ):
                    break
                time.sleep(0.005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                note(f"killed after {self.target.request_count() - seen} requests")
            proc.communicate()
            time.sleep(self.latency[1] + self.target.settling_seconds)
        self.target.clear_faults()

    # -- runs and their invariants --------------------------------------------------------------

    def run(self, *flags: str) -> dict[str, Any]:
        with self.bookkeeping():
            outcome = self.project.cli("run", "s", "--json", *flags)
        [result] = outcome.json_lines()
        if result["status"] in ("success", "partial"):
            self.orphans -= set(self.valid())  # delivered or owed: the engine knows them now
            self.reset_pending = False
        return result

    def bookkeeping(self) -> _Run:
        return _Run(self)

    def clean_run(self, full_resync: bool = False) -> None:
        result = self.run(*(["--full-resync"] if full_resync else []))
        note(f"clean run, {self.mode}, {'some' if result['removed'] else 'none'} removed")
        invalid = self.invalid_keys()
        expected = "partial" if invalid else "success"
        assert (result["status"], result["rejected"], result["failed"]) == (expected, 0, 0), result
        assert result["invalid"] == len(invalid), (result, invalid)
        self.check_destination()
        ledger = self.project.cli("rejected", "s", "--json").json_lines()
        assert all(r["reason"] == "invalid" for r in ledger), ledger
        # One entry per NULL-key row, and per distinct key text of a vendor-equal group.
        listed = [k for k in invalid if k is None] + sorted({k for k in invalid if k is not None})
        assert sorted(map(str, (r["key"] for r in ledger))) == sorted(map(str, listed)), ledger
        before = self.target.requests_with_records()
        again = self.run()
        assert again["delivered"] == 0 and again["status"] == expected, again
        assert self.target.requests_with_records() == before, "the run after a clean one sent"

    def check_destination(self) -> None:
        held = self.target.held()
        twice = {i: names for i, names in held.items() if len(names) > 1}
        assert not twice, f"identities held by several records: {twice}"
        wrong = {
            i: (held.get(i), name) for i, name in self.valid().items() if held.get(i) != [name]
        }
        assert not wrong, f"held (got, model's) differs: {wrong}; mode {self.mode}"
        if self.mode == "mirror":
            allowed = set(self.groups()) | self.orphans
            extra = sorted(set(held) - allowed)
            assert not extra, f"mirror holds identities the model does not have: {extra}"

    @invariant()
    def nothing_created_twice(self) -> None:
        self.step_failed = False
        creates = self.target.creates()
        twice = {i: n for i, n in creates.items() if n > 1 + self.deleted[i]}
        assert not twice, f"created more than once (deleted {dict(self.deleted)}): {twice}"


class _Run:
    """Around one run: the identities the model has (no delete may name one), what the
    engine was told to forget (upsert mode, a reset), and which identities went away."""

    def __init__(self, machine: SyncMachine) -> None:
        self.machine = machine

    def __enter__(self) -> None:
        m = self.machine
        m.step_failed = True
        self.model = set(m.groups())
        self.held = set(m.target.held())
        if m.mode == "upsert" or m.reset_pending:
            m.orphans |= self.held - self.model
        self.deletes = len(m.target.deletes())

    def __exit__(self, *exc: object) -> None:
        m = self.machine
        if exc[0] is not None:
            return
        for gone in self.held - set(m.target.held()):
            m.deleted[gone] += 1
        named = set(m.target.deletes()[self.deletes :])
        live = sorted(named & self.model)
        assert not live, f"a delete named identities the model had: {live}"
