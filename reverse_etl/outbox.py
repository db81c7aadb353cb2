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
import os
from pathlib import Path
from typing import IO, Any

from .encoding import quote_literal

RANGES = "__retl_acked_ranges"
KEYS = "__retl_acked_keys"


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

    def write(self, con: Any, select: str) -> None:
        """Write the records of `select` durably; only then may they be sent."""
        partial = self.files[0]
        target = quote_literal(str(partial))
        con.execute(f"COPY ({select}) TO {target} (FORMAT parquet, ROW_GROUP_SIZE 10000)")
        _fsync(partial)
        self.log_path.write_bytes(b"")
        _fsync(self.log_path)
        os.replace(partial, self.path)
        _fsync(self.path.parent)

    def acknowledge(self, first: int, last: int, keys: list[str] | None) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (held for the run)
        line = [first, last] if keys is None else [first, last, keys]
        self._log.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        self._log.flush()
        os.fsync(self._log.fileno())

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def accepted(self, con: Any) -> str:
        """SQL of the outbox records the destination accepted (loads the log into `con`)."""
        firsts, lasts, keys = [], [], []
        if self.log_path.exists():
            for raw in self.log_path.read_bytes().splitlines():
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue  # torn by a crash: that batch was still in flight
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

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
        self.log_path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
