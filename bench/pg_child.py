"""One way of moving a PostgreSQL table into DuckDB, timed inside its own process (so that the
parent reads its peak RSS): `copy` (the limit: binary COPY to nowhere), `adbc` (the engine's
PostgresWarehouse: Arrow batches streamed through DuckDB, counted), `cursor` (a server-side
cursor, rows as Python tuples, for comparison). Prints one JSON line: rows, seconds, bytes."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import duckdb


def main() -> None:
    how, dsn, table = sys.argv[1:4]
    started = time.perf_counter()
    rows, moved = globals()[f"by_{how}"](dsn, table)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - started, "bytes": moved}))


def by_copy(dsn: str, table: str) -> tuple[int, int]:
    import psycopg

    moved = 0
    with psycopg.connect(dsn) as con, con.cursor() as cur:
        with cur.copy(f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)") as copy:
            for block in copy:
                moved += len(block)
        rows = cur.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
    return rows, moved


def _duckdb() -> duckdb.DuckDBPyConnection:
    temp = Path(tempfile.mkdtemp(prefix="retl-bench-"))
    return duckdb.connect(":memory:", config={"memory_limit": "1GB", "temp_directory": str(temp)})


def by_adbc(dsn: str, table: str) -> tuple[int, int]:
    from reverse_etl.warehouses.postgres import PostgresWarehouse

    warehouse = PostgresWarehouse(dsn, None)
    con = _duckdb()
    relation = warehouse.relation(con, f"select * from {table}")
    warehouse.rewind(con)
    rows = con.execute(f"SELECT count(*) FROM {relation}").fetchall()[0][0]
    warehouse.close()
    return rows, warehouse.bytes_read


def by_cursor(dsn: str, table: str) -> tuple[int, int]:
    import psycopg
    import pyarrow as pa

    con = _duckdb()
    rows = 0
    with psycopg.connect(dsn) as pg, pg.cursor(name="bench") as cur:
        cur.itersize = 10_000
        cur.execute(f"SELECT * FROM {table}")
        names: list[str] = []
        while chunk := cur.fetchmany(10_000):
            names = names or [d.name for d in cur.description or []]
            batch = pa.Table.from_pylist([dict(zip(names, row, strict=True)) for row in chunk])
            con.register("batch", batch)
            if rows == 0:
                con.execute("CREATE TABLE staged AS SELECT * FROM batch")
            else:
                con.execute("INSERT INTO staged SELECT * FROM batch")
            con.unregister("batch")
            rows += len(chunk)
    return rows, 0


if __name__ == "__main__":
    main()
