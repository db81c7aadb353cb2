"""The per-sync state in DuckDB: the snapshot of what was delivered, and the diff against it.

One DuckDB file per sync (`.reverse_etl/syncs/<sync>.duckdb`), attached as `state` to an
in-memory connection whose temporary tables (the diff) spill to disk under the memory limit.
The state file holds

    snapshot(key, hash, digest, fields)   what the destination acknowledged: the row's hash, the
                                          MD5 of the fields sent, and (mirror mode, whose
                                          deletes carry them) the fields themselves
    meta(name, value)                     the hash scheme the snapshot was written with
    quarantine(key, hash)                 records rejected too often: not sent again while
                                          their row stays as it was (or until `retry`); the
                                          diff reads it, the ledger (state/ledger.py) writes it
    owed(key, fields)                     records a run sent, or meant to, that the destination
                                          did not acknowledge: what it holds of them is
                                          unknown, so the next run sends them whatever their
                                          hash says (and a mirror deletes them if they left
                                          the model: a lost answer may have created them)

and beside it each run's outbox (outbox.py): what the run sends, and what the destination
accepted of it. Accepted records are folded into the snapshot in one set operation at the end
of the run, or at the start of the next one if the process died. All set work (hashing, the
diff, the fold) runs inside DuckDB.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from ..errors import Problem, ProjectError, StateError, state_advice
from ..outbox import Outbox
from ..project.names import check_name
from . import casefold
from .encoding import BARE_JSON as _BARE_JSON
from .encoding import fields_json, key_text, quote_identifier, quote_literal, row_hash

if TYPE_CHECKING:
    from ..project.model import Model
    from ..warehouses.base import Warehouse

DIFF = "__retl_diff"  # key, hash, present, [ident], prev_key, prev_hash, prev_owed
DUPLICATES = "__retl_duplicates"  # identities of more than one row: ident, rows, keys
PICKED = "__retl_picked"  # what to send: op, key, hash, fields (then numbered into the outbox)
REHASH = "__retl_rehash"  # keys delivered under another hash function, and their new hash
BACKFILL = "__retl_backfill"  # mirror mode: delivered fields the snapshot lacks (key, fields)
DELIVERED = "__retl_delivered"  # the snapshot and what is owed, with any acknowledgements
#                                 not yet folded in: key, hash, digest, fields, owed
ACCEPTED = "__retl_accepted"  # the outbox's acknowledged records
UNACCEPTED = "__retl_unaccepted"  # the outbox's records without an acknowledgement

# The row hash's scheme: changed when what it reads of a row changes (see encoding.row_hash),
# so that a snapshot hashed the old way is compared once by the MD5 of its fields instead.
_HASH_VERSION = "2"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state.snapshot (
    key VARCHAR NOT NULL, hash UBIGINT NOT NULL, digest BLOB NOT NULL, fields VARCHAR);
CREATE TABLE IF NOT EXISTS state.meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS state.quarantine (key VARCHAR NOT NULL, hash UBIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS state.owed (key VARCHAR NOT NULL, fields VARCHAR);
"""

# DuckDB does not promise that hash() stays the same across versions. The hash of these values
# identifies the hash function in use; a snapshot hashed by another one is compared by the MD5
# of its delivered fields instead (once: its hashes are then rewritten), so an upgrade resends
# nothing.
_HASH_CANARY = """SELECT hash(42::INTEGER, 'reverse-etl', 12.50::DECIMAL(10, 2), 1.5::DOUBLE,
    DATE '2024-02-29', TIMESTAMP '2024-01-02 03:04:05', TIMESTAMPTZ '2024-01-02 03:04:05+00', true,
    NULL::VARCHAR, [1, 2], {'a': 'b'}, '00000000-0000-0000-0000-000000000001'::UUID, 'x'::BLOB,
    42::HUGEINT, 42::BIGINT)::VARCHAR"""

_WRITABLE = "the state folder must be writable by this user ([state] path)"

# Case folding (Python's str.casefold, Unicode's CaseFolding.txt) puts together letters that
# lower case leaves apart (casefold.py), and some vendors' lower case takes a dotted capital I
# for a plain i: folded alike here, so that keys a destination might take for one record are
# one identity (never two records, one deleted while the other lives). Coarser than any one
# vendor on purpose.
_FOLDS = (("i\u0307", "i"), *casefold.MULTI)


def identity_sql(expr: str, key_identity: str) -> str:
    """The record's identity at the destination, from its wire key: the text itself, or,
    where the destination compares keys ignoring case (HubSpot's emails), the text case-folded
    (ASCII keys: lower case; others also normalised (NFC) and folded as _FOLDS says)."""
    if key_identity != "case_insensitive":
        return expr
    folded = f"lower(nfc_normalize({expr}))"
    for letters, fold in _FOLDS:
        folded = f"replace({folded}, {quote_literal(letters)}, {quote_literal(fold)})"
    single = f"{quote_literal(casefold.SINGLE_FROM)}, {quote_literal(casefold.SINGLE_TO)}"
    folded = f"translate({folded}, {single})"
    # strlen counts bytes, length characters: equal only for ASCII, which lower() folds fully
    return f"CASE WHEN strlen({expr}) = length({expr}) THEN lower({expr}) ELSE {folded} END"


# Integer key types whose every value BIGINT holds; and the most numbers of the bitmap in which
# a first diff checks that such keys are distinct (2^26 bits: 8 MiB).
_NUMBERED_KEYS = {"tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger"}
_KEY_BITMAP = 1 << 26

# What each mode sends for rows of each status (docs/syncs.md, "Modes").
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
    first: int  # seq range in the outbox, inclusive
    last: int
    owed: bool = False  # records an earlier run sent without learning the outcome

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class SyncState:
    """The local diff's state (see the module's doc); a DiffState (base.py)."""

    SCHEMA = _SCHEMA  # the state file's tables

    def __init__(
        self,
        path: Path,
        *,
        read_only: bool,
        memory_limit: str,
        threads: int | None,
        temp_dir: Path,
        key_identity: str = "exact",
    ) -> None:
        self.path = path
        self.read_only = read_only
        self.key_identity = key_identity
        self.fresh = not path.exists()  # no state yet: never run, or its file was removed
        config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": str(temp_dir)}
        if threads:
            config["threads"] = threads
        try:
            temp_dir.mkdir(parents=True, exist_ok=True)
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create {exc.filename}: {exc.strerror}; {_WRITABLE}") from None
        self.con = duckdb.connect(":memory:", config=config)
        self.con.execute("SET TimeZone = 'UTC'")
        try:
            if read_only and not path.exists():
                self.con.execute("ATTACH ':memory:' AS state")  # never run: an empty snapshot
            else:
                mode = " (READ_ONLY)" if read_only else ""
                self.con.execute(f"ATTACH {quote_literal(str(path))} AS state{mode}")
            if not read_only or not path.exists():
                self.con.execute(self.SCHEMA)
            self.con.execute("SELECT count(*) FROM state.quarantine").fetchall()
            self._has_owed = bool(
                self.con.execute(
                    "SELECT count(*) FROM duckdb_tables() "
                    "WHERE database_name = 'state' AND table_name = 'owed'"
                ).fetchall()[0][0]
            )  # a state file of 0.2 opened read-only has none (until a run adds it)
        except duckdb.Error as exc:
            self.con.close()
            advice = state_advice(str(exc))
            raise StateError(
                f"cannot open the sync state file {path}: {advice}"
                if advice
                else f"cannot read the sync state file {path}: {exc}. It is kept as it is; move "
                f"it away (or run `reverse-etl reset`) to start this sync over."
            ) from None
        self.outbox = Outbox(path)
        self.source: Warehouse | None = None  # the warehouse streaming the model (see bind)
        self.columns: list[str] = []
        self.types: list[Any] = []
        self.previous_target: str | None = None  # set when the snapshot is another target's

    def close(self) -> None:
        self.outbox.close()
        if self.source is not None:
            self.source.close()
        self.con.close()

    def _read(self) -> None:
        """Before each read of the model: a warehouse that streams it runs it again (a stream
        is read once; staging it whole would cost memory in proportion to the model)."""
        if self.source is not None:
            self.source.rewind(self.con)

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ident(self, expr: str) -> str:
        return identity_sql(expr, self.key_identity)

    @property
    def _ident(self) -> str:
        """The DIFF table's column holding each row's identity: its key, where keys are
        compared exactly."""
        return "key" if self.key_identity == "exact" else "ident"

    # -- the target: what the snapshot says was delivered belongs to one --------------------

    def has_delivered(self) -> bool:
        """Whether the state records anything delivered (or owed) to its target."""
        [(found,)] = self.con.execute(
            "SELECT (SELECT count(*) FROM (SELECT 1 FROM state.snapshot LIMIT 1))"
            + (
                " + (SELECT count(*) FROM (SELECT 1 FROM state.owed LIMIT 1))"
                if self._has_owed
                else ""
            )
        ).fetchall()
        return bool(found)

    def stored_target(self) -> str | None:
        rows = self.con.execute("SELECT value FROM state.meta WHERE name = 'target'").fetchall()
        return str(rows[0][0]) if rows else None

    def claim_target(self, target: str) -> str | None:
        """Make `target` (destination, object, primary key) the one this state describes. The
        snapshot of another target says nothing of what this one holds: it is emptied, so the
        new target is sent everything (its quarantine: the ledger's, emptied before). Returns
        the previous target when it was another."""
        stored = self.stored_target()
        con = self.con
        con.execute("BEGIN")
        if stored is not None and stored != target:
            for table in ("snapshot", "owed"):
                con.execute(f"DELETE FROM state.{table}")
        con.execute("INSERT OR REPLACE INTO state.meta VALUES ('target', ?)", [target])
        self._one_record_per_identity()
        con.execute("COMMIT")
        return stored if stored != target else None

    def _stored_identity(self) -> str:
        """The key identity the snapshot was written under ("exact" before 0.3)."""
        rows = self.con.execute(
            "SELECT value FROM state.meta WHERE name = 'key_identity'"
        ).fetchall()
        return str(rows[0][0]) if rows else "exact"

    def _one_record_per_identity(self) -> None:
        """A snapshot written while keys were compared as exact text may hold two keys that the
        destination takes for one record (it held one record all along): keep one of them."""
        if self._stored_identity() == self.key_identity:
            return
        for table in ("snapshot", "owed"):
            self.con.execute(
                f"""DELETE FROM state.{table} WHERE rowid IN (
                    SELECT rowid FROM state.{table} QUALIFY
                    row_number() OVER (PARTITION BY {self.ident("key")} ORDER BY key) > 1)"""
            )
        self.con.execute(
            "INSERT OR REPLACE INTO state.meta VALUES ('key_identity', ?)", [self.key_identity]
        )

    # -- recovery ----------------------------------------------------------------------

    def _split_outbox(self, keep_fields: bool) -> None:
        """The outbox's records, as ACCEPTED (acknowledged) and UNACCEPTED (not: the
        destination may hold them or not) temporary tables."""
        con = self.con
        accepted = self.outbox.accepted(con)
        fields = "fields" if keep_fields else "NULL::VARCHAR AS fields"
        con.execute(
            f"CREATE OR REPLACE TEMP TABLE {ACCEPTED} AS "
            f"SELECT seq, op, key, hash, digest, {fields} FROM ({accepted})"
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {UNACCEPTED} AS
            SELECT o.key, {"o.fields" if keep_fields else "NULL::VARCHAR AS fields"}
            FROM {self.outbox.relation} o ANTI JOIN {ACCEPTED} a ON a.seq = o.seq"""
        )

    def fold_acknowledged(self, keep_fields: bool) -> None:
        """Fold what the destination accepted into the snapshot, and what it did not into
        what is owed, then drop the outbox. Fields are kept only where deletes will need them
        (mirror mode): writing them costs more than anything else in the fold."""
        if not self.outbox.exists():
            self.outbox.remove()  # a log whose outbox is gone was folded already
            return
        con = self.con
        self._split_outbox(keep_fields)
        ident = self.ident
        con.execute("BEGIN")
        con.execute(
            f"DELETE FROM state.snapshot WHERE {ident('key')} IN "
            f"(SELECT {ident('key')} FROM {ACCEPTED})"
        )
        con.execute(
            "INSERT INTO state.snapshot "
            f"SELECT key, hash, digest, fields FROM {ACCEPTED} WHERE op <> 'delete'"
        )
        con.execute(
            f"""DELETE FROM state.owed WHERE {ident("key")} IN (
                SELECT {ident("key")} FROM {ACCEPTED}
                UNION ALL SELECT {ident("key")} FROM {UNACCEPTED})"""
        )
        con.execute(f"INSERT INTO state.owed SELECT key, fields FROM {UNACCEPTED}")
        con.execute("COMMIT")
        self.outbox.remove()

    # -- staging and diff --------------------------------------------------------------

    def read_model(
        self,
        warehouse: Warehouse,
        model: Model,
        primary_key: Sequence[str],
        file: str,
        key_line: int | None,
        target: str,
    ) -> None:
        """The model as `warehouse` reads it into `con`, bound (see bind)."""
        relation = warehouse.relation(self.con, model.sql)
        self.bind(relation, primary_key, file, key_line, source=warehouse, target=target)

    def bind(
        self,
        relation: str,
        primary_key: Sequence[str],
        file: str,
        key_line: int | None,
        source: Any = None,
        target: str | None = None,
    ) -> None:
        """Learn the model's columns (the warehouse binds it without running it) and build the
        SQL for each row's wire key, hash and fields. `source`: the warehouse, when it streams
        the model (each read of the relation then runs the model anew: see _read). `target`:
        the sync's destination, object and key (a snapshot of another target is empty)."""
        rel = self.con.sql(f"SELECT * FROM {relation}")
        self.relation = relation
        self.source = source
        self.columns, self.types = list(rel.columns), list(rel.types)
        require_key_columns(primary_key, self.columns, file, key_line)
        self.primary_key = tuple(primary_key)
        self.key_types = [self.types[self.columns.index(c)] for c in primary_key]
        self.key_sql = key_text(primary_key, self.key_types)
        self.hash_sql = row_hash(self.columns, self.types)
        stored = self.stored_target()
        if target is not None and stored is not None and stored != target:
            self.previous_target = stored  # a plan: the run would start this target over
        self.con.execute(f"CREATE OR REPLACE TEMP VIEW {DELIVERED} AS {self._delivered_sql()}")

    def _delivered_sql(self) -> str:
        """What the destination holds as far as the state knows: the snapshot, each record
        flagged `owed` when its last sending was not acknowledged, and owed records the
        snapshot lacks (hash NULL). A run folds first; `plan` after a killed run reads around
        what it left in the outbox."""
        ident = self.ident
        if self.previous_target is not None:
            return (
                "SELECT NULL::VARCHAR AS key, NULL::UBIGINT AS hash, NULL::BLOB AS digest, "
                "NULL::VARCHAR AS fields, NULL::BOOLEAN AS owed WHERE false"
            )
        snapshot = "SELECT key, hash, digest, fields FROM state.snapshot"
        if self._stored_identity() != self.key_identity:  # a plan: as the run will see it
            snapshot += f" QUALIFY row_number() OVER (PARTITION BY {ident('key')} ORDER BY key) = 1"
        owed = (
            "SELECT key, fields FROM state.owed"
            if self._has_owed
            else "SELECT NULL::VARCHAR AS key, NULL::VARCHAR AS fields WHERE false"
        )
        owes = self._has_owed and bool(
            self.con.execute("SELECT count(*) FROM state.owed").fetchall()[0][0]
        )
        if not owes and not self.outbox.exists():  # the usual case: the snapshot as it is
            return f"SELECT *, false AS owed FROM ({snapshot})"
        if self.outbox.exists():
            self._split_outbox(keep_fields=True)
            done = f"SELECT {ident('key')} FROM {ACCEPTED}"
            snapshot = f"""{snapshot} WHERE {ident("key")} NOT IN ({done})
                UNION ALL SELECT key, hash, digest, fields FROM {ACCEPTED} WHERE op <> 'delete'"""
            owed = f"""{owed} WHERE {ident("key")} NOT IN ({done}
                    UNION ALL SELECT {ident("key")} FROM {UNACCEPTED})
                UNION ALL SELECT key, fields FROM {UNACCEPTED}"""
        return f"""WITH s AS ({snapshot}), o AS ({owed})
            SELECT s.key, s.hash, s.digest, s.fields, o.key IS NOT NULL AS owed
            FROM s LEFT JOIN o ON {ident("o.key")} = {ident("s.key")}
            UNION ALL
            SELECT o.key, NULL, NULL, o.fields, true FROM o
            WHERE {ident("o.key")} NOT IN (SELECT {ident("key")} FROM s)"""

    def _hash_scheme(self) -> tuple[str, bool]:
        """The current hash scheme, and whether the snapshot's hashes were made with it."""
        canary: str = self.con.execute(_HASH_CANARY).fetchone()[0]  # type: ignore[index]
        current = f"{_HASH_VERSION}:{canary}"
        stored = self.con.execute(
            "SELECT value FROM state.meta WHERE name = 'hash_scheme'"
        ).fetchone()
        if stored is not None:
            return current, stored[0] == current
        empty = not self.con.execute("SELECT count(*) FROM state.snapshot").fetchone()[0]  # type: ignore[index]
        return current, empty

    def diff(self, mode: str, full_resync: bool, build_pending: bool) -> DiffCounts:
        """Compare the model with what was delivered; with `build_pending`, also gather what to
        send (with its fields) into the outbox.

        One pass hashes each row and full-outer-joins the (key, hash) pairs with the snapshot,
        on the key's identity at the destination, counting the rows of each status as they
        stream by: a `plan` keeps nothing else. A run keeps the joined pairs in a narrow table
        (DIFF), which its later steps read. The rows to send are then read from the model a
        second time, only for the keys that need it, and hashed again there: what is recorded
        as delivered is always the hash of what was sent."""
        con = self.con
        self._scheme, trusted = self._hash_scheme()
        if self.previous_target is not None:
            trusted = True  # nothing delivered to this target: nothing to compare
        delivered: int = con.execute(f"SELECT count(*) FROM {DELIVERED}").fetchone()[0]  # type: ignore[index]
        self._bitmap = 0 if delivered else self._key_bitmap()  # see _tally
        kept = build_pending or not trusted  # a run's later steps read the DIFF table
        self._read()
        if kept:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {DIFF} AS {self._joined_sql()}")
        tally = self._tally(DIFF if kept else f"({self._joined_sql()})")
        scope = self._repeats_scope(tally, delivered)
        if scope is None:  # no identity repeats: the tally's counts are the statuses
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE {DUPLICATES} "
                "(ident VARCHAR, rows BIGINT, keys VARCHAR[])"
            )
        else:  # some may: find them (a plan reads the model again), then count with them
            if not kept:
                self._read()
                con.execute(f"CREATE OR REPLACE TEMP TABLE {DIFF} AS {self._joined_sql()}")
            self._find_duplicates(scope)
            tally = self._tally(DIFF, duplicates=True)
        added, changed, removed, unchanged, invalid = tally[:5]
        self._rehashed = 0
        to_send = (
            added + (changed if mode != "insert" else 0) + (removed if mode == "mirror" else 0)
        )
        if full_resync:
            to_send = added + changed + unchanged + (removed if mode == "mirror" else 0)
        # Mirror mode needs the delivered fields of every key (its deletes carry them); rows
        # delivered before the sync was a mirror have none: an unchanged row's are its current.
        backfill = mode == "mirror" and bool(
            con.execute(f"SELECT count(*) FROM {DELIVERED} WHERE fields IS NULL").fetchone()[0]  # type: ignore[index]
        )
        self._materialised = False
        if (build_pending and bool(to_send or backfill)) or not trusted:
            # The usual case streams the second pass straight into the outbox; hashes of
            # another function or fields to backfill need the picked rows in a table first.
            direct = build_pending and trusted and not backfill
            source = self._pick(mode, full_resync, trusted, backfill, materialise=not direct)
            if build_pending:
                self._fill_outbox(source)
            changed -= self._rehashed  # same fields under a new hash function: not a change
            unchanged += self._rehashed
        return DiffCounts(
            added + changed + unchanged + invalid, added, changed, removed, unchanged, invalid
        )

    def _joined_sql(self) -> str:
        """Each row's key, hash (and identity, where it is not the key; and the key's number,
        see _tally) full-outer-joined with what was delivered: DIFF's rows."""
        # The identity is a column of its own only where it is not the key itself (exact
        # keys, the usual case, keep the narrow table one string narrower).
        folded = self.key_identity != "exact"
        ident = f", {self.ident('key')} AS ident" if folded else ""
        number = f", {quote_identifier(self.primary_key[0])} AS number" if self._bitmap else ""
        return f"""SELECT m.*, d.key AS prev_key, d.hash AS prev_hash, d.owed AS prev_owed
            FROM (SELECT *{ident} FROM (
                    SELECT {self.key_sql} AS key, {self.hash_sql} AS hash, true AS present{number}
                    FROM {self.relation})) m
            FULL OUTER JOIN {DELIVERED} d ON {self.ident("d.key")} = m.{self._ident}"""

    def _key_bitmap(self) -> int:
        """How many numbers a first diff's bitmap spans (see _tally): 2^26 (ids below
        67,108,864; 8 MiB), fewer where [state] memory_limit is small, as DuckDB counts the
        bitmap against it; 0 when the key is not one integer column that BIGINT holds (its
        text, so its identity, is then one to one with its number)."""
        if len(self.key_types) != 1 or self.key_types[0].id not in _NUMBERED_KEYS:
            return 0
        limit, threads = self.con.execute(
            "SELECT parse_formatted_bytes(current_setting('memory_limit')), "
            "current_setting('threads')"
        ).fetchone()  # type: ignore[misc]
        # DuckDB takes about two bitmaps' worth for each thread, and two more to merge them:
        # keep that within a quarter of the limit
        budget = limit // (8 * (threads + 2))  # bytes
        bits = _KEY_BITMAP
        while bits // 8 > budget:
            bits //= 2
        return bits if bits >= 1 << 16 else 0

    def _tally(self, source: str, duplicates: bool = False) -> tuple[int, ...]:
        """One pass over the joined rows of `source`: the rows of each status (added, changed,
        removed, unchanged, invalid); the rows matched with a delivered record; the new rows
        (no record); and how many distinct identities those have, or fewer when two 64-bit
        hashes collide (then _find_duplicates looks closer). With `duplicates`, the rows of an
        identity DUPLICATES lists are invalid (and the last count is not made).

        The rows are grouped by status and, for the new rows, their identity's hash: new
        rows are few once a sync has run, so the groups are few. In a first diff every row is
        new, and DuckDB's hash aggregate holds every key (spilling under memory_limit); but
        an integer key (the usual id) within _key_bitmap's numbers sets its bit in a bitmap
        instead, far cheaper (allocated whole: about 15 ms)."""
        new = "x.present AND x.key IS NOT NULL AND x.prev_key IS NULL"
        mapped = f"x.number BETWEEN 0 AND {self._bitmap - 1}"
        hashed = f"{new} AND NOT {mapped}" if self._bitmap else new
        identity = "NULL" if duplicates else f"CASE WHEN {hashed} THEN hash(x.{self._ident}) END"
        repeats = f"LEFT JOIN {DUPLICATES} dup ON dup.ident = x.{self._ident}" if duplicates else ""
        number, bits, bitmap = "", "", "0"
        if self._bitmap and not duplicates:
            number = f", {mapped} AS mapped, x.number::BIGINT AS number"
            bits = f", bitstring_agg(number, 0, {self._bitmap - 1}) FILTER (new AND mapped) AS bits"
            bitmap = "coalesce(sum(bit_count(bits)), 0)"
        counts = self.con.execute(
            f"""SELECT
                sum(n) FILTER (s = 'added'), sum(n) FILTER (s = 'changed'),
                sum(n) FILTER (s = 'removed'), sum(n) FILTER (s = 'unchanged'),
                sum(n) FILTER (s = 'invalid'), sum(n) FILTER (matched), sum(n) FILTER (new),
                count(identity) + {bitmap}
            FROM (
                SELECT s, matched, new, identity, count(*) AS n{bits} FROM (
                    SELECT {self._status_sql(duplicates)} AS s,
                        x.present AND x.prev_key IS NOT NULL AS matched, {new} AS new,
                        {identity} AS identity{number}
                    FROM {source} x {repeats})
                GROUP BY s, matched, new, identity)"""
        ).fetchone()
        assert counts is not None
        return tuple(int(count or 0) for count in counts)

    def _repeats_scope(self, tally: tuple[int, ...], delivered: int) -> str | None:
        """Where identities that more than one row has (the same key, or keys the destination
        takes for one record) can be, from the tally: None when nowhere. A matched delivered
        record counts once, so when the matched rows are as many as the matched records, only
        new keys can repeat; and they do not when they have as many identities as rows."""
        removed, matched, new, identities = tally[2], tally[5], tally[6], tally[7]
        if matched > delivered - removed:
            return ""
        return "AND prev_key IS NULL" if identities < new else None

    def _find_duplicates(self, scope: str) -> None:
        """The DUPLICATES table: identities that more than one row of the model has (among
        the rows `scope` selects), with how many rows and their distinct keys. Grouped on the
        identity alone first: listing the keys of every group would sort them all."""
        rows = f"FROM {DIFF} WHERE present AND key IS NOT NULL {scope}"
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {DUPLICATES} AS
            WITH repeated AS (SELECT {self._ident} AS ident {rows} GROUP BY 1 HAVING count(*) > 1)
            SELECT {self._ident} AS ident, count(*) AS rows, list(DISTINCT key ORDER BY key) AS keys
            {rows} AND {self._ident} IN (SELECT ident FROM repeated)
            GROUP BY 1"""
        )

    @staticmethod
    def _status_sql(duplicates: bool = True) -> str:
        """A row's status; `duplicates`: joined with DUPLICATES as `dup`, whose rows are
        invalid (without, only rows with a NULL key are)."""
        repeated = " OR dup.ident IS NOT NULL" if duplicates else ""
        return f"""CASE WHEN x.present AND (x.key IS NULL{repeated}) THEN 'invalid'
            WHEN x.present IS NULL THEN 'removed'
            WHEN x.prev_hash IS NULL THEN 'added'
            WHEN x.hash <> x.prev_hash OR x.prev_owed THEN 'changed'
            ELSE 'unchanged' END"""

    def _pick(
        self, mode: str, full_resync: bool, trusted: bool, backfill: bool, materialise: bool
    ) -> str:
        """The second pass: the rows to send, with their fields. Returns SQL to read them from:
        the query itself, or the table it was materialised into."""
        send = ["added"] if mode == "insert" else ["added", "changed"]
        if full_resync:
            send = ["added", "changed", "unchanged"]
        read = send + (["unchanged"] if backfill and not full_resync else [])
        fields = fields_json(self.columns, self.types, table="m")
        operation = quote_literal(_OPERATION[mode])
        key_fields = self._key_fields("d.key")
        deletes = (
            f"""UNION ALL SELECT 'delete', d.key, d.hash, coalesce(d.fields, {key_fields}),
                'removed', d.owed
            FROM {DELIVERED} d
            WHERE d.key IN (SELECT prev_key FROM {DIFF} WHERE present IS NULL)"""
            if mode == "mirror"
            else ""
        )
        con = self.con
        select = f"""
            WITH wanted AS (
                SELECT x.key, {self._status_sql()} AS status, coalesce(x.prev_owed, false) AS owed
                FROM {DIFF} x LEFT JOIN {DUPLICATES} dup ON dup.ident = x.{self._ident}
                WHERE status IN ({", ".join(quote_literal(w) for w in read)})
                    AND NOT EXISTS (SELECT 1 FROM state.quarantine q
                                    WHERE q.key = x.key AND q.hash = x.hash)),
            m AS (
                SELECT {self.key_sql} AS __retl_key, * FROM {self.relation}
                WHERE {self.key_sql} IN (SELECT key FROM wanted))
            SELECT {operation} AS op, m.__retl_key AS key, {self.hash_sql} AS hash,
                {fields} AS fields, w.status, w.owed
            FROM m JOIN wanted w ON w.key = m.__retl_key
            {deletes}"""
        self._read()
        if not materialise:
            return select
        con.execute(f"CREATE OR REPLACE TEMP TABLE {PICKED} AS {select}")
        self._materialised = True
        for table in (BACKFILL, REHASH):
            con.execute(f"CREATE OR REPLACE TEMP TABLE {table} (key VARCHAR, value VARCHAR)")
        if backfill:
            con.execute(
                f"""INSERT INTO {BACKFILL}
                SELECT p.key, p.fields FROM {PICKED} p JOIN {DELIVERED} d ON d.key = p.key
                WHERE p.status = 'unchanged' AND d.fields IS NULL"""
            )
            if not full_resync:
                con.execute(f"DELETE FROM {PICKED} WHERE status = 'unchanged'")
        if not trusted:  # under another hash function every row looks changed: the MD5 tells
            con.execute(
                f"""INSERT INTO {REHASH}
                SELECT p.key, p.hash FROM {PICKED} p JOIN {DELIVERED} d ON d.key = p.key
                WHERE p.status = 'changed' AND NOT d.owed
                    AND d.digest = unhex(md5(p.fields))"""
            )
            self._rehashed = con.execute(f"SELECT count(*) FROM {REHASH}").fetchone()[0]  # type: ignore[index]
            con.execute(f"DELETE FROM {PICKED} WHERE key IN (SELECT key FROM {REHASH})")
        return f"SELECT * FROM {PICKED}"

    def _key_fields(self, key: str) -> str:
        """A delete's fields where the last delivered ones were not kept (the record was
        delivered before its sync became a mirror): the primary key's columns, from the key."""
        parts = []
        for i, (column, dtype) in enumerate(zip(self.primary_key, self.key_types, strict=True)):
            if len(self.primary_key) > 1:
                value = f"json_extract({key}, '$[{i}]')::VARCHAR"
            elif dtype.id in _BARE_JSON:
                value = key  # a number or a boolean: its text is its JSON
            else:
                value = f"to_json({key})::VARCHAR"
            parts.append(f"{quote_literal(json.dumps(column) + ':')} || {value}")
        return "'{' || " + " || ',' || ".join(parts) + " || '}'"

    def _fill_outbox(self, source: str) -> None:
        """Write what to send, numbered in sending order, durably, before the first request.
        A record repeated there (the warehouse changed between the diff's two reads of the
        model, so a key now has two rows) is left out: it is sent by a later run, once it is
        single. Checked on the outbox's narrow key column, so the wide rows are streamed
        straight through, never held."""
        con, outbox, ident = self.con, self.outbox, self.ident("key")
        outbox.write(
            con,
            f"SELECT op, key, hash, unhex(md5(fields)) AS digest, fields, owed FROM ({source})",
        )
        repeated = f"SELECT {ident} FROM {outbox.relation} GROUP BY 1 HAVING count(*) > 1"
        if con.execute(f"SELECT count(*) FROM ({repeated})").fetchall()[0][0]:
            outbox.write(
                con,
                f"""SELECT op, key, hash, digest, fields, owed FROM {outbox.relation}
                WHERE {ident} NOT IN ({repeated})""",
            )

    def settle(self) -> None:
        """Bring the snapshot up to date without sending anything: hashes made by another hash
        function, fields a mirror lacks, and the hash scheme in use."""
        con = self.con
        con.execute("BEGIN")
        if self._materialised:
            con.execute(
                f"UPDATE state.snapshot SET hash = r.value::UBIGINT FROM {REHASH} r "
                "WHERE r.key = snapshot.key"
            )
            con.execute(
                f"""UPDATE state.snapshot SET fields = b.value FROM {BACKFILL} b
                WHERE b.key = snapshot.key"""
            )
        con.execute("INSERT OR REPLACE INTO state.meta VALUES ('hash_scheme', ?)", [self._scheme])
        con.execute("COMMIT")

    def forget_removed(self) -> None:
        """Outside mirror mode a key that left the model is counted once and forgotten (and
        so is a record owed to the destination that left it)."""
        removed = f"SELECT {self.ident('prev_key')} FROM {DIFF} WHERE present IS NULL"
        self.con.execute("BEGIN")
        self.con.execute(f"DELETE FROM state.snapshot WHERE {self.ident('key')} IN ({removed})")
        self.con.execute(f"DELETE FROM state.owed WHERE {self.ident('key')} IN ({removed})")
        self.con.execute("COMMIT")

    def invalid_rows(self, chunk: int = 10_000) -> Iterator[list[tuple[str | None, str]]]:
        """(key, error) for each duplicated key and each row with a NULL key, in chunks."""
        fields = fields_json(self.columns, self.types, table="m")
        self._read()
        cursor = self.con.execute(
            f"""SELECT unnest(keys), rows, NULL, keys FROM {DUPLICATES}
            UNION ALL
            SELECT NULL, NULL, {fields}, NULL FROM {self.relation} m WHERE {self.key_sql} IS NULL"""
        )
        yield from invalid_messages(cursor, chunk)

    # -- delivery ----------------------------------------------------------------------

    def pending_batches(self, batch_size: int) -> list[PendingBatch]:
        if not self.outbox.exists():
            return []
        ranges = self.con.execute(
            f"SELECT op, owed, min(seq), max(seq) FROM {self.outbox.relation} "
            "GROUP BY op, owed ORDER BY 3"
        ).fetchall()
        batches = []
        for op, owed, first, last in ranges:
            for start in range(first, last + 1, batch_size):
                end = min(start + batch_size - 1, last)
                batches.append(PendingBatch(op, start, end, bool(owed)))
        return batches

    def read(self, first: int, last: int) -> list[tuple[str, str]]:
        """(key, fields) of the outbox records first..last, in order."""
        return self.con.execute(
            f"SELECT key, fields FROM {self.outbox.relation} "
            "WHERE seq BETWEEN ? AND ? ORDER BY seq",
            [first, last],
        ).fetchall()

    def acknowledge(self, batch: PendingBatch, keys: list[str] | None) -> None:
        """Durably record that the destination accepted `keys` of the batch (None: all of it)."""
        self.outbox.acknowledge(batch.first, batch.last, keys)


def require_key_columns(
    primary_key: Sequence[str], columns: Sequence[str], file: str, key_line: int | None
) -> None:
    """ProjectError when a primary key column is not among the model's columns (which only the
    warehouse can tell for `select *`)."""
    missing = [c for c in primary_key if c not in columns]
    if missing:
        raise ProjectError(
            [
                Problem(
                    file,
                    key_line,
                    f"primary key column {missing[0]!r} is not among the model's columns "
                    f"({', '.join(columns)})",
                )
            ]
        )


def invalid_messages(cursor: Any, chunk: int) -> Iterator[list[tuple[str | None, str]]]:
    """(key, error) from a cursor of (key, rows sharing its identity, fields of a NULL-key
    row, the distinct keys of those rows)."""
    while rows := cursor.fetchmany(chunk):
        yield [_invalid_message(*row) for row in rows]


def _invalid_message(
    key: str | None, rows: int | None, fields_text: str | None, keys: list[str] | None = None
) -> tuple[str | None, str]:
    if key is None:
        return None, f"primary key is NULL in row {_preview(fields_text)}"
    if keys is None or len(keys) < 2:
        return key, f"primary key value appears in {rows} rows"
    others = ", ".join(repr(k) for k in keys[:5] if k != key) + (", ..." if len(keys) > 5 else "")
    return key, (
        f"primary key value is the same record as {others} to the destination, which "
        f"compares keys ignoring case ({rows} rows): none of them is sent until one is left"
    )


def _preview(fields_text: str | None, limit: int = 200) -> str:
    text = fields_text or "{}"
    return text if len(text) <= limit else text[:limit] + "...}"


def snapshot_path(state_dir: Path, sync: str) -> Path:
    return state_dir / "syncs" / f"{check_name('sync', sync)}.duckdb"
