"""`diff = "warehouse"`: the snapshot lives in the warehouse and the diff runs there, so only the
rows to send (and the keys removed) leave it. For models too big to move.

The warehouse holds `<state_schema>.snapshot_<sync>` (wh_key, key, hash, fields: sql.py); the
queries are generated for its dialect. Everything after the diff is the local engine's, unchanged:
the rows to send are staged in DuckDB, encoded for the wire by the same SQL as a local diff's,
written to the outbox before the first request and acknowledged per batch with an fsync'd line.
The accepted records are folded back into the warehouse's snapshot in one transaction at the end
of the run, or at the start of the next if the process died: the same guarantees as the local
snapshot. The quarantine (state/ledger.py) and the outbox stay local, in
`.reverse_etl/syncs/<sync>.wh.duckdb`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelFailed, WarehouseError
from ..project.model import Model
from ..project.names import check_name
from .encoding import fields_json, key_text, quote_identifier, quote_literal
from .local import DIFF, DiffCounts, SyncState, invalid_messages, require_key_columns
from .sql import diff_sql, invalid_sql, rehash_sql, removed_sql, snapshot_ddl

if TYPE_CHECKING:
    from ..warehouses.base import SnapshotWarehouse, Warehouse

log = logging.getLogger("reverse_etl.warehouse_state")

CHANGES = "__retl_changes"  # the rows the warehouse sent: status, wh_key, hash, model columns
REMOVED = "__retl_removed"  # delivered records whose key left the model: wh_key, key, hash, fields
_OPERATION = {"upsert": "upsert", "mirror": "upsert", "update": "update", "insert": "insert"}
_META = ("__retl_status", "__retl_wh_key", "__retl_hash", "__retl_rows")
OWED = "owed"  # a snapshot hash that no row has (an MD5 is hex): the record is sent again

_SCHEMA = """
CREATE TABLE IF NOT EXISTS state.quarantine (key VARCHAR NOT NULL, hash VARCHAR NOT NULL);
CREATE TABLE IF NOT EXISTS state.meta (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
"""


IDENTIFIER_BYTES = 63  # PostgreSQL's longest name; longer ones are cut, silently
_SHORT = IDENTIFIER_BYTES - len("snapshot_")


def snapshot_table(sync: str) -> str:
    """The snapshot's table in the state schema (named apart from the data a schema holds):
    `snapshot_<sync>` when that fits 63 bytes, else `snapshot-<first 40 characters>-<12 hex
    digits of the SHA-256 of the whole name>`. Two syncs never share a table: the hash tells
    long names apart, and the `-` after `snapshot` (never `_`) keeps the two forms apart."""
    check_name("sync", sync)  # ASCII: a character is a byte
    if len(sync) <= _SHORT:
        return f"snapshot_{sync}"
    digest = hashlib.sha256(sync.encode()).hexdigest()[:12]
    return f"snapshot-{sync[:40]}-{digest}"


def truncated_table(sync: str) -> str | None:
    """The table 0.2 used for a long name: cut to 63 bytes, so possibly shared with another
    sync whose name starts the same (docs/project.md, "Names")."""
    return f"snapshot_{sync}"[:IDENTIFIER_BYTES] if len(sync) > _SHORT else None


def warehouse_state_path(state_dir: Path, sync: str) -> Path:
    return state_dir / "syncs" / f"{check_name('sync', sync)}.wh.duckdb"


class WarehouseState(SyncState):
    """The diff inside the warehouse's state (see the module's doc); a DiffState (base.py).
    attach() it to its warehouse before anything else."""

    SCHEMA = _SCHEMA

    def attach(self, warehouse: SnapshotWarehouse, schema: str, sync: str) -> None:
        """The warehouse, and where in it this sync's snapshot lives."""
        self.warehouse, self.table = warehouse, (schema, snapshot_table(sync))
        self.sync, self._warned = sync, False

    def read_model(
        self,
        warehouse: Warehouse,
        model: Model,
        primary_key: Sequence[str],
        file: str,
        key_line: int | None,
        target: str,
    ) -> None:
        """The model and its key; its columns, asked of `warehouse` (whose errors about the
        model's own SQL keep its line numbers). The model itself runs inside the diff's
        queries, in the warehouse attached."""
        self.model, self.primary_key = model.tree, tuple(primary_key)
        self.columns = warehouse.columns(self.con, model.sql)
        require_key_columns(primary_key, self.columns, file, key_line)

    # -- the snapshot in the warehouse ---------------------------------------------------

    def _snapshot_exists(self) -> bool:
        exists = self._table_exists(*self.table)
        old = truncated_table(self.sync)
        if (
            not exists
            and old is not None
            and not self._warned
            and self._table_exists(self.table[0], old)
        ):
            self._warned = True
            log.warning(
                "%s: the snapshot of this sync was kept in %s.%s by an older version, a name "
                "PostgreSQL cut to 63 bytes and so possibly shared with another sync whose name "
                "starts the same; it is not used: this sync starts over in %s.%s (every row is "
                "sent again; a mirror sync sends no delete for rows it never recorded). Drop "
                "the old table once no sync uses it.",
                self.sync,
                self.table[0],
                old,
                *self.table,
            )
        return exists

    def _table_exists(self, schema: str, table: str) -> bool:
        found = self.warehouse.stage(
            self.con,
            "SELECT count(*) AS n FROM information_schema.tables "
            f"WHERE table_schema = {quote_literal(schema)} AND table_name = {quote_literal(table)}",
        )
        # fetchall, not fetchone: a result left unfinished blocks DuckDB's next register()
        return bool(self.con.execute(f"SELECT n FROM {found}").fetchall()[0][0])

    def _relation(self, sql: str) -> Any:
        """A relation of `sql`. DuckDB 2 refuses one while a result of execute() is unread (a
        fetchone leaves one): that result is done with, so drop it."""
        self.con.abort()
        return self.con.sql(sql)

    def _write(self, statements: Sequence[str], upload: Any = None) -> None:
        """Run statements in one transaction of the warehouse, after uploading `upload` (an
        Arrow table) as the temporary table __retl_upload."""
        connection = self.warehouse.writer()
        try:
            cursor = connection.cursor()
            for statement in snapshot_ddl(*self.table, self.warehouse.dialect):
                cursor.execute(statement)
            if upload is not None:
                cursor.adbc_ingest("__retl_upload", upload, mode="create", temporary=True)
            for statement in statements:
                cursor.execute(statement)
            connection.commit()
        except WarehouseError:
            raise
        except Exception as exc:
            raise WarehouseError(
                f"cannot write the snapshot {'.'.join(self.table)} in the warehouse: {exc}"
            ) from None
        finally:
            connection.close()

    @property
    def _fold_case(self) -> bool:
        return self.key_identity == "case_insensitive"

    @property
    def _quoted_table(self) -> str:
        return ".".join(quote_identifier(part) for part in self.table)

    def has_delivered(self) -> bool:
        """Whether the warehouse's snapshot holds a record."""
        if not self._table_exists(*self.table):
            return False
        found = self.warehouse.stage(self.con, f"SELECT 1 AS one FROM {self._quoted_table} LIMIT 1")
        return bool(self.con.execute(f"SELECT count(*) FROM {found}").fetchall()[0][0])

    def claim_target(self, target: str) -> str | None:
        """As the local state's: the warehouse's snapshot of another target is emptied (its
        quarantine: the ledger's, emptied before); one written while keys were compared as
        exact text is brought to the key identity."""
        stored = self.stored_target()
        table = self._quoted_table
        statements = []
        if (stored is not None and stored != target) or self.fresh:
            # another target's, or a table left from before a switch to the local diff and
            # back: what it says was delivered may be stale, so the sync starts over
            statements.append(f"DELETE FROM {table}")
        rows = self.con.execute(
            "SELECT value FROM state.meta WHERE name = 'key_identity'"
        ).fetchall()
        if self._fold_case and (rows[0][0] if rows else "exact") != self.key_identity:
            statements += [
                f"""DELETE FROM {table} WHERE wh_key IN (SELECT wh_key FROM (
                    SELECT wh_key, ROW_NUMBER() OVER (PARTITION BY LOWER(wh_key) ORDER BY wh_key)
                    AS n FROM {table}) AS d WHERE n > 1)""",
                f"UPDATE {table} SET wh_key = LOWER(wh_key)",
            ]
        if statements and self._table_exists(*self.table):  # else nothing to bring over
            self._write(statements)
        self.con.execute(
            "INSERT OR REPLACE INTO state.meta VALUES ('target', ?), ('key_identity', ?)",
            [target, self.key_identity],
        )
        return stored if stored != target else None

    def fold_acknowledged(self, keep_fields: bool) -> None:
        """Fold what the destination accepted into the warehouse's snapshot (one transaction),
        then drop the outbox. A record sent without an acknowledgement is owed: its snapshot
        hash becomes OWED, so the next diff finds it changed and sends it again (or, gone from
        a mirror's model, deletes it: a lost answer may have created it)."""
        if not self.outbox.exists():
            self.outbox.remove()
            return
        fields = "o.fields" if keep_fields else "NULL::VARCHAR AS fields"
        accepted = self.outbox.accepted(self.con)
        upload = self._relation(
            f"""SELECT o.op, o.wh_key, o.key, o.hash, {fields},
                o.seq IN (SELECT seq FROM ({accepted})) AS accepted
            FROM {self.outbox.relation} o"""
        ).to_arrow_table()
        if upload.num_rows:
            table = self._quoted_table
            self._write(
                [
                    f"""DELETE FROM {table}
                    WHERE wh_key IN (SELECT wh_key FROM __retl_upload WHERE accepted)""",
                    f"""INSERT INTO {table} (wh_key, key, hash, fields)
                    SELECT wh_key, key, hash, fields FROM __retl_upload
                    WHERE accepted AND op <> 'delete'""",
                    f"""UPDATE {table} SET hash = '{OWED}'
                    WHERE wh_key IN (SELECT wh_key FROM __retl_upload WHERE NOT accepted)""",
                    # an insert that may not have landed stays `added` (insert mode sends no
                    # changes); the others are owed whether they landed or not
                    f"""INSERT INTO {table} (wh_key, key, hash, fields)
                    SELECT wh_key, key, '{OWED}', fields FROM __retl_upload u
                    WHERE NOT accepted AND op NOT IN ('insert', 'delete')
                        AND NOT EXISTS (SELECT 1 FROM {table} t WHERE t.wh_key = u.wh_key)""",
                ],
                upload,
            )
        self.outbox.remove()

    def forget_removed(self) -> None:
        keys = self._relation(f"SELECT wh_key FROM {REMOVED}").to_arrow_table()
        if keys.num_rows:
            table = ".".join(quote_identifier(part) for part in self.table)
            self._write(
                [f"DELETE FROM {table} WHERE wh_key IN (SELECT wh_key FROM __retl_upload)"], keys
            )

    # -- the diff ------------------------------------------------------------------------

    def _stage(self, sql: str) -> str:
        """Run one of the diff's queries; its errors are not on the model's lines (the model
        itself was checked by use())."""
        try:
            return str(self.warehouse.stage(self.con, sql))
        except ModelFailed as exc:
            raise WarehouseError(f"the diff failed in the warehouse: {exc}") from None

    def diff(self, mode: str, full_resync: bool, build_pending: bool) -> DiffCounts:
        """Counts computed in the warehouse; with `build_pending`, the rows to send (and the
        removed keys) brought out, and the outbox written."""
        dialect, model, key = self.warehouse.dialect, self.model, self.primary_key
        snapshot = self.table if self._snapshot_exists() else None
        send: list[str] = []
        unfolded = not build_pending and self.outbox.exists()  # a plan after a killed run
        if unfolded:
            send = ["added", "changed"]  # to tell apart what that run had delivered
        if build_pending:
            send = ["added"] if mode == "insert" else ["added", "changed"]
            if full_resync:
                send = ["added", "changed", "unchanged"]
        legacy = snapshot is not None and self._legacy_hashes()
        # One query, one pass over the model: the rows to send and the counts.
        staged = self._stage(
            diff_sql(model, self.columns, key, snapshot, dialect, send, self._fold_case, legacy)
        )
        if build_pending:
            self._settle_hashes(legacy)
        found = dict(
            self.con.execute(
                f"SELECT __retl_status, __retl_count FROM {staged} WHERE __retl_kind = 'count'"
            ).fetchall()
        )
        invalid, added, changed, unchanged, removed = (
            int(found.get(status, 0))
            for status in ("invalid", "added", "changed", "unchanged", "removed")
        )
        counts = DiffCounts(
            invalid + added + changed + unchanged, added, changed, removed, unchanged, invalid
        )
        if unfolded:
            return self._around_unfolded(counts, staged)
        if not build_pending:
            return counts
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {CHANGES} AS
            SELECT * EXCLUDE (__retl_kind, __retl_count) FROM {staged}
            WHERE __retl_kind = 'row'"""
        )
        if removed:  # their keys (and, for mirror deletes, their last fields) come out too
            gone = self._stage(removed_sql(model, key, snapshot, dialect, self._fold_case))
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {REMOVED} AS SELECT * FROM {gone}")
        else:
            self.con.execute(
                f"""CREATE OR REPLACE TEMP TABLE {REMOVED}
                (wh_key VARCHAR, key VARCHAR, hash VARCHAR, fields VARCHAR)"""
            )
        self._describe_diff()
        self._fill(mode)
        return counts

    def _around_unfolded(self, counts: DiffCounts, staged: str) -> DiffCounts:
        """Counts as a plan should see them after a run that died before its fold: what it had
        delivered (the same row, by its hash) is unchanged; what it had deleted, gone."""
        accepted = self.outbox.accepted(self.con)
        [(added, changed, deleted)] = self.con.execute(
            f"""SELECT
                count(*) FILTER (r.__retl_status = 'added' AND a.op <> 'delete'),
                count(*) FILTER (r.__retl_status = 'changed' AND a.op <> 'delete'),
                (SELECT count(*) FROM ({accepted}) WHERE op = 'delete')
            FROM {staged} r JOIN ({accepted}) a
                ON a.wh_key = r.__retl_wh_key AND a.hash = r.__retl_hash
            WHERE r.__retl_kind = 'row'"""
        ).fetchall()
        return DiffCounts(
            counts.rows,
            counts.added - added,
            counts.changed - changed,
            max(0, counts.removed - deleted),
            counts.unchanged + added + changed,
            counts.invalid,
        )

    def _describe_diff(self) -> None:
        """The local DIFF table the quarantine reads: each row that left the warehouse, with
        its wire key (encoded here as a local diff encodes it) and hash."""
        rel = self._relation(f"SELECT * FROM {CHANGES}")
        types = dict(zip(rel.columns, rel.types, strict=True))
        self.model_types = [types[c] for c in self.columns]
        self.key_types = [types[c] for c in self.primary_key]
        self.key_sql = key_text(self.primary_key, self.key_types)
        self.con.execute(
            f"""CREATE OR REPLACE TEMP TABLE {DIFF} AS
            SELECT {self.key_sql} AS key, __retl_hash AS hash, true AS present,
                NULL AS prev_key, NULL AS prev_hash
            FROM {CHANGES}
            UNION ALL SELECT NULL, NULL, NULL, key, hash FROM {REMOVED}"""
        )

    def _fill(self, mode: str) -> None:
        fields = fields_json(self.columns, self.model_types, table="c")
        if mode == "mirror":
            self._forget_rewritten()
        deletes = (
            f"""UNION ALL SELECT 'delete', key, hash, wh_key,
                coalesce(fields, {self._key_fields("key")})
            FROM {REMOVED}"""
            if mode == "mirror"
            else ""
        )
        source = f"""SELECT {quote_literal(_OPERATION[mode])} AS op, {self.key_sql} AS key,
                __retl_hash AS hash, __retl_wh_key AS wh_key, {fields} AS fields
            FROM {CHANGES} c
            WHERE NOT EXISTS (SELECT 1 FROM state.quarantine q
                              WHERE q.key = {self.key_sql} AND q.hash = c.__retl_hash)
            {deletes}"""
        self.outbox.write(
            self.con,
            f"""SELECT op, key, hash, wh_key, unhex(md5(fields)) AS digest, fields,
                false AS owed FROM ({source})""",
        )

    def _legacy_hashes(self) -> bool:
        """Whether the snapshot's hashes are 0.2's (the columns in the model's order) where
        today's differ (they sort the columns by name)."""
        rows = self.con.execute(
            "SELECT value FROM state.meta WHERE name = 'hash_scheme'"
        ).fetchall()
        return not rows and list(self.columns) != sorted(self.columns)

    def _settle_hashes(self, legacy: bool) -> None:
        """After a run's diff: a snapshot of 0.2's hashes rewritten to today's for the rows
        whose values are as they were (once), and the hash scheme recorded."""
        if legacy:
            key, fold = self.primary_key, self._fold_case
            self._write([rehash_sql(self.model, self.columns, key, self.table, fold)])
        self.con.execute("INSERT OR REPLACE INTO state.meta VALUES ('hash_scheme', '2')")

    def _forget_rewritten(self) -> None:
        """A removed record whose identity the model still has under a key written another way
        (a key whose text changed with the session's time zone, say) is not deleted: the row
        that has it is sent as a write. Its old snapshot row goes now (should that write not
        be acknowledged, the record is owed, and deleted once it leaves the model)."""
        rewritten = f"""SELECT wh_key FROM {REMOVED} WHERE {self.ident("key")} IN
            (SELECT {self.ident(self.key_sql)} FROM {CHANGES})"""
        keys = self.con.sql(rewritten).to_arrow_table()
        if keys.num_rows:
            self._write(
                [f"DELETE FROM {self._quoted_table} WHERE wh_key IN "
                 "(SELECT wh_key FROM __retl_upload)"],
                keys,
            )  # fmt: skip
            self.con.execute(f"DELETE FROM {REMOVED} WHERE wh_key IN ({rewritten})")

    def settle(self) -> None:
        """Nothing to bring up to date: the MD5 of the warehouse does not change."""

    def invalid_rows(self, chunk: int = 10_000) -> Iterator[list[tuple[str | None, str]]]:
        dialect = self.warehouse.dialect
        staged = self._stage(
            invalid_sql(self.model, self.columns, self.primary_key, dialect, self._fold_case)
        )
        rel = self._relation(f"SELECT * FROM {staged}")
        types = dict(zip(rel.columns, rel.types, strict=True))
        key_sql = key_text(self.primary_key, [types[c] for c in self.primary_key])
        fields = fields_json(self.columns, [types[c] for c in self.columns], table="m")
        # each key with the keys its identity shares (case variants, to say why)
        cursor = self.con.execute(
            f"""WITH k AS (SELECT DISTINCT {key_sql} AS key, __retl_wh_key AS wh,
                    __retl_rows AS n FROM {staged} m WHERE {key_sql} IS NOT NULL)
            SELECT k.key, k.n, NULL, g.keys FROM k JOIN (
                SELECT wh, list(key ORDER BY key) AS keys FROM k GROUP BY wh) g USING (wh)
            UNION ALL SELECT NULL, NULL, {fields}, NULL FROM {staged} m WHERE {key_sql} IS NULL"""
        )
        yield from invalid_messages(cursor, chunk)
