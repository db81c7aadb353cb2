"""The ledger of records not delivered, and the one place that decides quarantine
(docs/state.md, "Run history and records not delivered").

An entry per record of a sync that was not delivered, with its reason:

    invalid      its row has a NULL or repeated key: never sent; the diff of each run that is
                 not held rewrites these entries
    rejected     the destination refused it; `rejections` counts the runs in a row that did
    failed       not delivered in this run (retries ran out, the run stopped); a failure breaks
                 a streak of rejections
    quarantined  rejected `max_attempts` runs in a row: a rejected entry, flagged, that runs
                 do not resend while the record's row stays as it was; still not delivered
    released     a quarantined record whose row changed or left the model, or all of them on
                 `retry`: sent again, its rejections counted anew

Entries a finished run did not renew were delivered or left the model: they go (invalid and
quarantined ones stay). A sync pointed at another target, or reset, starts with an empty ledger.

Storage: the entries are the `ledger` table of history.sqlite (history.py creates it), which
`reverse-etl rejected` lists from any process; the quarantine is also the `quarantine` table
(key, hash) of the sync's diff state, which the diff reads to leave out what is quarantined
and this module compares with the diff's rows (key, hash) to release what changed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..diff.local import DIFF
from .history import guarded, iso_time

if TYPE_CHECKING:
    from ..diff.base import DiffState
    from .history import History

Undelivered = tuple[str, str, int]  # key, error, attempts in this run


class Ledger:
    """One sync's ledger, in the run history `history` (which stays its caller's to close).

    A run calls, in this order: forget_target (pointed at another target), retry (`retry`),
    record_invalid, held_back, record_undelivered (per batch, during the delivery), quarantine
    (after the fold), drop_resolved (once the run finished)."""

    def __init__(self, history: History, sync: str) -> None:
        self.sync = sync
        self.path = history.path  # for errors (see guarded)
        self._db = history.db

    # -- reading -----------------------------------------------------------------------

    @guarded
    def entries(self) -> list[dict[str, Any]]:
        """Every entry (`reverse-etl rejected`): sync, key, reason, error, attempts, first_seen
        and last_seen (ISO 8601, UTC), by reason and key."""
        rows = self._db.execute(
            "SELECT sync, key, reason, error, attempts, first_seen, last_seen FROM ledger "
            "WHERE sync = ? ORDER BY reason, key",
            (self.sync,),
        ).fetchall()
        return [
            {
                **dict(row),
                "first_seen": iso_time(row["first_seen"]),
                "last_seen": iso_time(row["last_seen"]),
            }
            for row in rows
        ]

    # -- starting over -----------------------------------------------------------------

    @guarded
    def forget(self) -> None:
        """Every entry removed (`reset`: the sync starts over)."""
        self._db.execute("DELETE FROM ledger WHERE sync = ?", (self.sync,))

    def forget_target(self, state: DiffState) -> None:
        """The sync points at another target: what is owed to the old one is not this one's,
        and what the old one refused says nothing of the new one. The entries and the
        quarantine are emptied, before the state is claimed for the new target (should the
        run die in between, the next run sees the old target and empties them again)."""
        state.con.execute("DELETE FROM state.quarantine")
        self.forget()

    def retry(self, state: DiffState) -> None:
        """`reverse-etl retry`: quarantined records are sent again, their rejections counted
        anew (their entries say so no more)."""
        state.con.execute("DELETE FROM state.quarantine")
        self._reset_rejections()

    @guarded
    def _reset_rejections(self) -> None:
        self._db.execute(
            "UPDATE ledger SET rejections = 0, quarantined = 0, "
            "error = substr(error, instr(error, ': ') + 2) "
            "WHERE sync = ? AND quarantined",
            (self.sync,),
        )

    # -- a run -------------------------------------------------------------------------

    @guarded
    def record_invalid(self, run_id: str, chunks: Iterable[list[tuple[str | None, str]]]) -> None:
        """The diff's invalid rows, (key, error) in lists, replacing the last run's."""
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "DELETE FROM ledger WHERE sync = ? AND reason = 'invalid'", (self.sync,)
            )
            for chunk in chunks:
                self._db.executemany(
                    "INSERT OR REPLACE INTO ledger "
                    "(sync, key, reason, error, attempts, first_seen, last_seen, run_id) "
                    "VALUES (?, ?, 'invalid', ?, 0, ?, ?, ?)",
                    [(self.sync, key, error, now, now, run_id) for key, error in chunk],
                )

    def held_back(self, state: DiffState) -> int:
        """Quarantined records whose rows are as they were: the diff left them out of this
        run (they count as rejected: still not delivered)."""
        [(count,)] = state.con.execute(
            f"""SELECT count(*) FROM state.quarantine q JOIN {DIFF} x
            ON x.key = q.key AND x.hash = q.hash AND x.present"""
        ).fetchall()
        return int(count)

    @guarded
    def record_undelivered(self, run_id: str, reason: str, records: list[Undelivered]) -> None:
        """Records of this run rejected (`reason` "rejected") or failed ("failed"): (key,
        error, attempts in this run). A rejection adds one to the record's streak of runs that
        rejected it; a failure ends it."""
        now, streak = time.time(), int(reason == "rejected")
        self._db.executemany(
            """INSERT INTO ledger
                (sync, key, reason, error, attempts, rejections, first_seen, last_seen, run_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (sync, key) DO UPDATE SET reason = excluded.reason,
                error = excluded.error, last_seen = excluded.last_seen,
                attempts = ledger.attempts + excluded.attempts,
                rejections = CASE WHEN excluded.reason = 'rejected'
                                  THEN ledger.rejections + 1 ELSE 0 END,
                run_id = excluded.run_id""",
            [
                (self.sync, key, reason, error, attempts, streak, now, now, run_id)
                for key, error, attempts in records
            ],
        )

    def quarantine(self, state: DiffState, run_id: str, max_attempts: int) -> None:
        """After the run's fold: release the quarantined records whose rows changed or left
        the model, and quarantine, at their rows' current hash, the records this run rejected
        for the `max_attempts`th run in a row (or more); their entries are flagged so."""
        newly = self._rejected_repeatedly(run_id, max_attempts)
        con = state.con
        con.execute("BEGIN")
        con.execute(
            f"""DELETE FROM state.quarantine WHERE NOT EXISTS (SELECT 1 FROM {DIFF} x
                WHERE x.key = quarantine.key AND x.hash = quarantine.hash AND x.present)"""
        )
        con.execute(
            f"""INSERT INTO state.quarantine SELECT x.key, x.hash FROM {DIFF} x
            WHERE x.present AND x.key IN (SELECT unnest(?::VARCHAR[]))
                AND x.key NOT IN (SELECT key FROM state.quarantine)""",
            [newly],
        )
        con.execute("COMMIT")
        keys = [key for (key,) in con.execute("SELECT key FROM state.quarantine").fetchall()]
        self._flag_quarantined(keys)

    @guarded
    def _rejected_repeatedly(self, run_id: str, times: int) -> list[str]:
        """Keys rejected by run `run_id` and by the runs before it: `times` runs in a row, or
        more. (A record accepted by this run keeps its old entry until drop_resolved: it is
        delivered, not to be quarantined.)"""
        rows = self._db.execute(
            "SELECT key FROM ledger WHERE sync = ? AND run_id = ? AND reason = 'rejected' "
            "AND rejections >= ?",
            (self.sync, run_id, times),
        ).fetchall()
        return [row[0] for row in rows]

    @guarded
    def _flag_quarantined(self, keys: list[str]) -> None:
        """Flag exactly `keys` as quarantined: kept in the ledger while not resent."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE ledger SET quarantined = 0 WHERE sync = ?", (self.sync,))
            self._db.executemany(
                "UPDATE ledger SET quarantined = 1, error = CASE WHEN error LIKE 'quarantined%' "
                "THEN error ELSE 'quarantined after ' || rejections || ' rejections: ' || error "
                "END WHERE sync = ? AND key = ?",
                [(self.sync, key) for key in keys],
            )

    @guarded
    def drop_resolved(self, run_id: str) -> None:
        """After a finished run: entries it did not renew (and not quarantined) were delivered
        or left the model."""
        self._db.execute(
            "DELETE FROM ledger WHERE sync = ? AND reason <> 'invalid' AND run_id <> ? "
            "AND NOT quarantined",
            (self.sync, run_id),
        )
