"""What one run sends, and what the destination accepted of it, kept so that no kill loses it.

    <sync>.outbox.parquet   every record the run sends (seq, op, key, hash, digest, fields): in
                            sending order; written whole, before the first request, and never
                            changed after
    <sync>.acks             one JSON line per answered batch: [first, last] when the whole
                            batch was accepted, [first, last, [keys...]] for those accepted of it

An acknowledgement is one line appended and fsync'd (tens of microseconds), not a database
commit. A line torn by a crash is ignored: its batch counts as in flight and is sent again.
The snapshot folds in the accepted records, then the two files are removed (outbox first): a
crash in between only makes the next run fold the same records again, which changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import IO, Any

import duckdb

from .diff.encoding import quote_literal
from .errors import StateError, state_advice

log = logging.getLogger("reverse_etl.outbox")

RANGES = "__retl_acked_ranges"
KEYS = "__retl_acked_keys"
SPILL = "__retl_outbox"  # the outbox staged on its way to disk, when memory is short


class Outbox:
    def __init__(self, state_path: Path) -> None:
        self.path = state_path.with_suffix(".outbox.parquet")
        self.log_path = state_path.with_suffix(".acks")
        self._log: IO[bytes] | None = None

    @property
    def files(self) -> tuple[Path, Path]:
        """The files the run's DuckDB connection writes (COPY) and reads (read_parquet): a
        sandboxed connection allows exactly these (warehouses/duckdb.py)."""
        return self.path.with_suffix(".tmp"), self.path

    def exists(self) -> bool:
        return self.path.exists()

    @property
    def relation(self) -> str:
        return f"read_parquet({quote_literal(str(self.path))})"

    def write(self, con: Any, records: str) -> None:
        """Write `records` (a query of op, key, ... fields, owed) durably, numbered in sending
        order as `seq` (one operation after another, records owed from an earlier run apart);
        only then may they be sent."""
        partial = self.files[0]
        try:
            try:
                con.execute(
                    f"""COPY (SELECT row_number() OVER (ORDER BY op, owed) - 1 AS seq, *
                        FROM ({records}) ORDER BY seq) TO {quote_literal(str(partial))}
                    (FORMAT parquet, ROW_GROUP_SIZE 10000)"""
                )
            except duckdb.OutOfMemoryException:
                log.info("%s: the outbox does not fit [state] memory_limit: spilling", self.path)
                self._write_spilling(con, records, partial)
            _fsync(partial)
            self.log_path.write_bytes(b"")
            _fsync(self.log_path)
            os.replace(partial, self.path)
            _fsync(self.path.parent)
        except (OSError, duckdb.IOException) as exc:
            if isinstance(exc, duckdb.IOException) and str(partial) not in str(exc):
                raise  # the model's own reading failed: reported as the model's
            partial.unlink(missing_ok=True)
            raise self._unwritable(partial, exc, "nothing was sent") from None

    @staticmethod
    def _write_spilling(con: Any, records: str, partial: Path) -> None:
        """The outbox in little memory (docs/state.md): DuckDB's window and sort
        over wide rows, and its parallel ordered parquet writer, hold them in memory; a
        temporary table spills to disk instead. The rows are staged one operation after
        another, so their row ids are the sending order, and written by one thread, which
        keeps that order without buffering."""
        rows, ordered = f"{SPILL}_rows", SPILL
        con.execute(f"CREATE OR REPLACE TEMP TABLE {rows} AS {records}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {ordered} AS SELECT * FROM {rows} LIMIT 0")
        groups = con.execute(
            f"SELECT DISTINCT op, owed FROM {rows} ORDER BY op, owed"
        ).fetchall()
        for operation, owed in groups:
            con.execute(
                f"INSERT INTO {ordered} SELECT * FROM {rows} WHERE op = ? AND owed = ?",
                [operation, owed],
            )
        con.execute(f"DROP TABLE {rows}")
        [(threads,)] = con.execute("SELECT current_setting('threads')").fetchall()
        # One thread writes without buffering. (A sandboxed connection cannot change it: the
        # seq numbers are right in any order the rows land in, at some cost in memory.)
        single = _try(con, "SET threads = 1")
        try:
            con.execute(
                f"""COPY (SELECT rowid AS seq, * FROM {ordered}) TO {quote_literal(str(partial))}
                (FORMAT parquet, ROW_GROUP_SIZE 10000)"""
            )
        finally:
            if single:
                con.execute(f"SET threads = {int(threads)}")
            con.execute(f"DROP TABLE IF EXISTS {ordered}")

    def acknowledge(self, first: int, last: int, keys: list[str] | None) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (held for the run)
        line = [first, last] if keys is None else [first, last, keys]
        try:
            self._log.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
            self._log.flush()
            os.fsync(self._log.fileno())
        except OSError as exc:
            what = "that batch is sent again by the next run"
            raise self._unwritable(self.log_path, exc, what) from None

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def accepted(self, con: Any) -> str:
        """SQL of the outbox records the destination accepted (loads the log into `con`).
        StateError when the outbox cannot be read."""
        self._check_readable(con)
        firsts, lasts, keys = [], [], []
        for line in self._log_lines():
            if len(line) == 2:
                firsts.append(line[0])
                lasts.append(line[1])
            else:
                keys += line[2]
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {RANGES} AS "
            "SELECT unnest(?::BIGINT[]) AS first, unnest(?::BIGINT[]) AS last",
            [firsts, lasts],
        )
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {KEYS} AS SELECT unnest(?::VARCHAR[]) AS key", [keys]
        )
        return f"""SELECT o.* FROM {self.relation} o
            WHERE o.seq IN (SELECT unnest(range(first, last + 1)) FROM {RANGES})
               OR o.key IN (SELECT key FROM {KEYS})"""

    def _log_lines(self) -> list[list[Any]]:
        """The acknowledgements as written. A line torn by a crash, or of any other shape,
        is skipped: its batch counts as in flight and is sent again (nothing is lost)."""
        try:
            raw_lines = self.log_path.read_bytes().splitlines() if self.log_path.exists() else []
        except OSError as exc:
            raise StateError(f"cannot read {self.log_path}: {exc.strerror}") from None
        lines = []
        for raw in raw_lines:
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if _well_formed(line):
                lines.append(line)
            elif raw.strip():
                log.warning("%s: skipped a line that is not an acknowledgement", self.log_path)
        return lines

    def _check_readable(self, con: Any) -> None:
        try:
            con.execute(f"SELECT count(*) FROM {self.relation}").fetchall()
        except duckdb.Error as exc:
            raise StateError(
                f"cannot read the outbox {self.path} ({str(exc).splitlines()[0]}): it lists "
                f"what the last run sent. Move it away (with {self.log_path.name}) to go on: "
                "the records it lists are then sent again"
            ) from None

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._unwritable(self.path, exc, "it is folded again, harmlessly") from None

    @staticmethod
    def _unwritable(path: Path, exc: Exception, consequence: str) -> StateError:
        text = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        advice = state_advice(str(exc)) or "check the state folder ([state] path)"
        return StateError(f"cannot write {path} ({text}; {consequence}): {advice}")


def _well_formed(line: Any) -> bool:
    """[first, last] or [first, last, [keys...]]: seqs as integers, keys as strings."""
    if not isinstance(line, list) or len(line) not in (2, 3):
        return False
    first, last = line[0], line[1]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (first, last)):
        return False
    return len(line) == 2 or (
        isinstance(line[2], list) and all(isinstance(k, str) for k in line[2])
    )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try(con: Any, statement: str) -> bool:
    """Run a statement that a locked configuration refuses; whether it ran."""
    try:
        con.execute(statement)
    except duckdb.Error:
        return False
    return True
