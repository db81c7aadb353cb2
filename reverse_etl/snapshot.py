"""The per-sync state in DuckDB: the snapshot of what was delivered, and the diff against it.

One DuckDB file per sync (`.reverse_etl/syncs/<sync>.duckdb`), attached as `state` to an
in-memory connection whose temporary tables (the staged model, the pending changes) spill to
disk under the memory limit. Tables of the state file:

    snapshot(key, hash, fields)        what the destination acknowledged, merged after each run
    journal(key, op, hash, fields)     acknowledgements of the current run, appended per batch

A batch's acknowledgement is one small append to the journal, committed before the next batch
is read: a kill at any moment loses at most the batches in flight. The journal is folded into
the snapshot in one set operation at the end of a run, or at the start of the next one if the
process died. All set work (hashing, the diff, the merge) runs inside DuckDB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from .encoding import fields_json, key_text, quote_literal, row_hash
from .errors import Problem, ProjectError, StateError

STAGED = "__retl_staged"
DIFF = "__retl_diff"
PENDING = "__retl_pending"
DELIVERED = "__retl_delivered"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state.snapshot (
    key VARCHAR NOT NULL, hash UBIGINT NOT NULL, fields VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS state.journal (
    key VARCHAR NOT NULL, op VARCHAR NOT NULL, hash UBIGINT, fields VARCHAR);
CREATE TABLE IF NOT EXISTS state.meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""

# DuckDB does not promise that hash() stays the same across versions. The hash of these values
# identifies the hash function in use; a snapshot hashed by another one is compared by its
# delivered fields instead (once: its hashes are then rewritten), so an upgrade resends nothing.
_HASH_CANARY = """SELECT hash(42::INTEGER, 'reverse-etl', 12.50::DECIMAL(10, 2), 1.5::DOUBLE,
    DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05', TIMESTAMPTZ '2024-01-02 03:04:05+00', true,
    NULL::VARCHAR, [1, 2], {'a': 'b'}, '00000000-0000-0000-0000-000000000001'::UUID, 'x'::BLOB,
    42::HUGEINT, 42::BIGINT)::VARCHAR"""

# What each mode sends for rows of each status (CONTRACT §1).
_OPERATION = {"upsert": "upsert", "mirror": "upsert", "update": "update", "insert": "insert"}


@dataclass(frozen=True)
class DiffCounts:
    rows: int
    added: int
    changed: int
    removed: int
    unchanged: int
    invalid: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PendingBatch:
    operation: str
    first: int  # seq range in the pending table, inclusive
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class SyncState:
    def __init__(
        self,
        path: Path,
        *,
        read_only: bool,
        memory_limit: str,
        threads: int | None,
        temp_dir: Path,
    ) -> None:
        self.path = path
        self.read_only = read_only
        config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": str(temp_dir)}
        if threads:
            config["threads"] = threads
        temp_dir.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(":memory:", config=config)
        self.con.execute("SET TimeZone = 'UTC'")
        try:
            if read_only and not path.exists():
                self.con.execute("ATTACH ':memory:' AS state")  # never run: an empty snapshot
            else:
                mode = " (READ_ONLY)" if read_only else ""
                path.parent.mkdir(parents=True, exist_ok=True)
                self.con.execute(f"ATTACH {quote_literal(str(path))} AS state{mode}")
            if not read_only or not path.exists():
                self.con.execute(_SCHEMA)
            self.con.execute("SELECT count(*) FROM state.snapshot").fetchall()
        except duckdb.Error as exc:
            self.con.close()
            raise StateError(
                f"cannot read the sync state file {path}: {exc}. It is kept as it is; move it "
                f"away (or run `reverse-etl reset`) to start this sync over."
            ) from None
        self.columns: list[str] = []
        self.types: list[Any] = []

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- recovery ----------------------------------------------------------------------

    def fold_journal(self) -> None:
        """Merge acknowledged records into the snapshot, in one transaction."""
        con = self.con
        if not con.execute("SELECT count(*) FROM state.journal").fetchone()[0]:  # type: ignore[index]
            return
        con.execute("BEGIN")
        con.execute("DELETE FROM state.snapshot WHERE key IN (SELECT key FROM state.journal)")
        con.execute(
            "INSERT INTO state.snapshot "
            "SELECT key, hash, fields FROM state.journal WHERE op = 'put'"
        )
        con.execute("DELETE FROM state.journal")
        con.execute("COMMIT")

    # -- staging and diff --------------------------------------------------------------

    def stage(
        self, relation: str, primary_key: Sequence[str], file: str, key_line: int | None
    ) -> None:
        """Run the model into a temporary table with each row's wire key and hash."""
        con = self.con
        rel = con.sql(f"SELECT * FROM {relation}")
        self.columns, self.types = list(rel.columns), list(rel.types)
        missing = [c for c in primary_key if c not in self.columns]
        if missing:
            raise ProjectError(
                [
                    Problem(
                        file,
                        key_line,
                        f"primary key column {missing[0]!r} is not among the model's columns "
                        f"({', '.join(self.columns)})",
                    )
                ]
            )
        key_types = [self.types[self.columns.index(c)] for c in primary_key]
        fingerprint = ";".join(f"{c}:{t}" for c, t in zip(self.columns, self.types, strict=True))
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {STAGED} AS SELECT "
            f"{key_text(primary_key, key_types)} AS __retl_key, "
            f"{row_hash(self.columns, fingerprint)} AS __retl_hash, * FROM {relation}"
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP VIEW {DELIVERED} AS
            SELECT key, hash, fields FROM state.snapshot
            WHERE key NOT IN (SELECT key FROM state.journal)
            UNION ALL SELECT key, hash, fields FROM state.journal WHERE op = 'put'"""
        )

    def _hash_scheme(self) -> tuple[str, bool]:
        """The current hash scheme, and whether the snapshot's hashes were made with it."""
        current: str = self.con.execute(_HASH_CANARY).fetchone()[0]  # type: ignore[index]
        stored = self.con.execute(
            "SELECT value FROM state.meta WHERE name = 'hash_scheme'"
        ).fetchone()
        if stored is not None:
            return current, stored[0] == current
        empty = not self.con.execute("SELECT count(*) FROM state.snapshot").fetchone()[0]  # type: ignore[index]
        return current, empty

    def diff(self, mode: str, full_resync: bool) -> DiffCounts:
        """Classify each staged row and build the pending table of what to send."""
        con = self.con
        self._scheme, trusted = self._hash_scheme()
        self._rehash = not trusted
        differs = "d.hash <> s.__retl_hash"
        if not trusted:
            fields = fields_json(self.columns, self.types, table="s")
            differs = f"(d.hash <> s.__retl_hash AND d.fields <> {fields})"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {DIFF} AS
            WITH dups AS (
                SELECT __retl_key AS key, count(*) AS n FROM {STAGED}
                WHERE __retl_key IS NOT NULL GROUP BY 1 HAVING count(*) > 1)
            SELECT s.rowid AS rid, s.__retl_key AS key, s.__retl_hash AS hash, dups.n AS dup_rows,
                CASE WHEN s.__retl_key IS NULL OR dups.n IS NOT NULL THEN 'invalid'
                     WHEN d.key IS NULL THEN 'added'
                     WHEN {differs} THEN 'changed'
                     ELSE 'unchanged' END AS status
            FROM {STAGED} s
            LEFT JOIN {DELIVERED} d ON d.key = s.__retl_key
            LEFT JOIN dups ON dups.key = s.__retl_key"""
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE __retl_removed AS
            SELECT d.key, d.hash, d.fields FROM {DELIVERED} d
            WHERE NOT EXISTS (SELECT 1 FROM {STAGED} s WHERE s.__retl_key = d.key)"""
        )
        counts = con.execute(
            f"""SELECT count(*),
                count(*) FILTER (status = 'added'), count(*) FILTER (status = 'changed'),
                (SELECT count(*) FROM __retl_removed),
                count(*) FILTER (status = 'unchanged'), count(*) FILTER (status = 'invalid')
            FROM {DIFF}"""
        ).fetchone()
        assert counts is not None
        result = DiffCounts(*counts)
        self._build_pending(mode, full_resync)
        return result

    def _build_pending(self, mode: str, full_resync: bool) -> None:
        if full_resync:
            wanted = "('added', 'changed', 'unchanged')"
        elif mode == "insert":
            wanted = "('added')"
        else:
            wanted = "('added', 'changed')"
        fields = fields_json(self.columns, self.types, table="s")
        operation = quote_literal(_OPERATION[mode])
        deletes = (
            "UNION ALL SELECT 'delete', key, hash, fields FROM __retl_removed"
            if mode == "mirror"
            else ""
        )
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {PENDING} AS
            SELECT row_number() OVER (ORDER BY op, key) - 1 AS seq, * FROM (
                SELECT {operation} AS op, d.key, d.hash, {fields} AS fields
                FROM {DIFF} d JOIN {STAGED} s ON s.rowid = d.rid
                WHERE d.status IN {wanted}
                {deletes})
            ORDER BY seq"""
        )

    def settle_hashes(self) -> None:
        """Record the hash scheme; after a change of scheme, rewrite the unchanged rows' hashes."""
        con = self.con
        con.execute("BEGIN")
        if self._rehash:
            con.execute(
                f"""UPDATE state.snapshot SET hash = d.hash FROM {DIFF} d
                WHERE d.status = 'unchanged' AND d.key = snapshot.key AND d.hash <> snapshot.hash"""
            )
        con.execute("INSERT OR REPLACE INTO state.meta VALUES ('hash_scheme', ?)", [self._scheme])
        con.execute("COMMIT")

    def forget_removed(self) -> None:
        """Outside mirror mode a key that left the model is counted once and forgotten."""
        self.con.execute("BEGIN")
        self.con.execute("DELETE FROM state.snapshot WHERE key IN (SELECT key FROM __retl_removed)")
        self.con.execute("DELETE FROM state.journal WHERE key IN (SELECT key FROM __retl_removed)")
        self.con.execute("COMMIT")

    def invalid_rows(self, chunk: int = 10_000) -> Iterator[list[tuple[str | None, str]]]:
        """(key, error) for each duplicated key and each row with a NULL key, in chunks."""
        fields = fields_json(self.columns, self.types, table="s")
        cursor = self.con.execute(
            f"""SELECT key, max(dup_rows), NULL FROM {DIFF}
                WHERE status = 'invalid' AND key IS NOT NULL GROUP BY key
            UNION ALL
            SELECT NULL, NULL, {fields} FROM {DIFF} d JOIN {STAGED} s ON s.rowid = d.rid
                WHERE d.status = 'invalid' AND d.key IS NULL"""
        )
        while rows := cursor.fetchmany(chunk):
            yield [
                (key, f"primary key value appears in {dup_rows} rows")
                if key is not None
                else (None, f"primary key is NULL in row {_preview(fields_text)}")
                for key, dup_rows, fields_text in rows
            ]

    # -- delivery ----------------------------------------------------------------------

    def pending_batches(self, batch_size: int) -> list[PendingBatch]:
        ranges = self.con.execute(
            f"SELECT op, min(seq), max(seq) FROM {PENDING} GROUP BY op ORDER BY min(seq)"
        ).fetchall()
        batches = []
        for op, first, last in ranges:
            for start in range(first, last + 1, batch_size):
                batches.append(PendingBatch(op, start, min(start + batch_size - 1, last)))
        return batches

    def pending_count(self) -> int:
        return self.con.execute(f"SELECT count(*) FROM {PENDING}").fetchone()[0]  # type: ignore[index]

    def read(self, batch: PendingBatch) -> list[tuple[str, str]]:
        """(key, fields) of the batch's records, in order."""
        return self.con.execute(
            f"SELECT key, fields FROM {PENDING} WHERE seq BETWEEN ? AND ? ORDER BY seq",
            [batch.first, batch.last],
        ).fetchall()

    def acknowledge(self, batch: PendingBatch, keys: list[str] | None) -> None:
        """Durably record that the destination accepted `keys` of the batch (None: all of it)."""
        only = "" if keys is None else "AND key IN (SELECT unnest(?::VARCHAR[]))"
        params: list[Any] = [batch.first, batch.last] + ([keys] if keys is not None else [])
        self.con.execute(
            f"""INSERT INTO state.journal
            SELECT key, CASE op WHEN 'delete' THEN 'forget' ELSE 'put' END, hash, fields
            FROM {PENDING} WHERE seq BETWEEN ? AND ? {only}""",
            params,
        )


def _preview(fields_text: str | None, limit: int = 200) -> str:
    text = fields_text or "{}"
    return text if len(text) <= limit else text[:limit] + "...}"


def snapshot_path(state_dir: Path, sync: str) -> Path:
    return state_dir / "syncs" / f"{sync}.duckdb"
