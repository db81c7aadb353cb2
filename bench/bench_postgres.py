"""Moving a model of N rows x 10 columns out of PostgreSQL into the engine: rows/s and peak
memory of `reverse-etl plan` on it (a CLI process: the model streamed through ADBC as Arrow
batches, hashed and diffed against the snapshot in DuckDB) and of the bare stream (ADBC → DuckDB,
counted), against the limit (binary `COPY ... TO STDOUT` into nowhere) and a server-side cursor,
at 1M and 5M rows: memory must stay flat as rows grow.

    .venv/bin/python bench/bench_postgres.py              # 1M and 5M rows
    .venv/bin/python bench/bench_postgres.py 200000 --repeat 1

Needs the PostgreSQL server of the tests (REVERSE_ETL_TEST_POSTGRES, default
postgresql://postgres@127.0.0.1:5432/test); the tables go in the schema retl_bench, kept between
runs (they take a while to build)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

import psycopg
from benchlib import (
    BENCH,
    CLI,
    PYTHON,
    Row,
    info_row,
    machine,
    measure,
    median,
    print_machine,
    print_table,
    save_results,
)

DSN = os.environ.get("REVERSE_ETL_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def build(rows: int) -> str:
    """retl_bench.model_<rows>: 10 columns of the usual kinds (as bench_plan's model)."""
    table = f"retl_bench.model_{rows}"
    with psycopg.connect(DSN, autocommit=True) as con:
        con.execute("CREATE SCHEMA IF NOT EXISTS retl_bench")
        found = con.execute("SELECT to_regclass(%s)", [table]).fetchone()[0]  # type: ignore[index]
        if found is None:
            print(f"building {table} ...", flush=True)
            con.execute(f"""
                CREATE TABLE {table} AS SELECT
                    i::bigint AS c1, 'user' || i || '@example.com' AS c2, md5(i::text) AS c3,
                    (i % 1000)::integer AS c4, i * 0.5::float8 AS c5,
                    (i % 100000 / 100.0)::numeric(12, 2) AS c6, i % 2 = 0 AS c7,
                    DATE '2020-01-01' + (i % 1000)::integer AS c8,
                    TIMESTAMP '2020-01-01' + i * INTERVAL '1 second' AS c9,
                    CASE i % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'team' END AS c10
                FROM generate_series(1, {rows}) AS t(i)""")
            con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (c1)")
            con.execute(f"VACUUM ANALYZE {table}")
    return table


def run(how: str, table: str, project: Path) -> tuple[float, int, int]:
    if how == "plan":
        measured = measure([*CLI, "plan", "model", "--project", str(project)]).check(how)
        return measured.wall, measured.max_rss, 0
    measured = measure([PYTHON, str(BENCH / "pg_child.py"), how, DSN, table]).check(how)
    figures = json.loads(measured.stdout.strip().splitlines()[-1])
    return figures["seconds"], measured.max_rss, figures["bytes"]


def plan_project(root: Path, table: str) -> Path:
    """A project whose sync `model` reads the table: `plan` diffs it against an empty
    snapshot (every row is added), which is the whole move."""
    (root / "syncs").mkdir(parents=True, exist_ok=True)
    (root / "destinations").mkdir(exist_ok=True)
    (root / "config.toml").write_text(f'[warehouse]\ntype = "postgres"\ndsn = "{DSN}"\n')
    (root / "destinations" / "hook.toml").write_text(
        'type = "webhook"\nurl = "http://127.0.0.1:9/"\n'
    )
    (root / "syncs" / "model.sql").write_text(
        f'-- destination = "hook"\n-- primary_key = "c1"\nselect * from {table}\n'
    )
    return root


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cursor-up-to", type=int, default=1_000_000)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    rows: list[Row] = []
    extra: dict[str, list[dict[str, float]]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="retl-bench-pg-"))
    for size in args.sizes:
        table = build(size)
        project = plan_project(workdir / str(size), table)
        ways = ["copy", "plan", "adbc"] + (["cursor"] if size <= args.cursor_up_to else [])
        times: dict[str, list[float]] = {way: [] for way in ways}
        peaks: dict[str, list[int]] = {way: [] for way in ways}
        moved: dict[str, int] = {}
        for _ in range(args.repeat):
            for way in ways:  # interleaved, so that noise falls on all alike
                seconds, peak, bytes_moved = run(way, table, project)
                times[way].append(seconds)
                peaks[way].append(peak)
                moved[way] = bytes_moved
        limit_rate = size / median(times["copy"])
        for way, what in (("plan", "reverse-etl plan (CLI)"), ("adbc", "stream ADBC → DuckDB")):
            rate = size / median(times[way])
            row = info_row(f"{size:,} rows: {what}, rows/s", rate, limit_rate, "rows/s")
            if way == "adbc":  # the move itself; plan also hashes and diffs (and starts Python)
                row.target, row.passed = ">= 0.5x the limit", rate >= 0.5 * limit_rate
            rows.append(row)
            rows.append(info_row(f"{size:,} rows: {what}, peak RSS", max(peaks[way]), unit="MB"))
        rows[
            -1
        ].note = f"{moved['adbc'] / 1e6:,.0f} MB as Arrow; COPY moved {moved['copy'] / 1e6:,.0f} MB"
        if "cursor" in times:
            rows.append(
                info_row(
                    f"{size:,} rows: server-side cursor, rows/s",
                    size / median(times["cursor"]),
                    limit_rate,
                    "rows/s",
                    f"peak RSS {max(peaks['cursor']) / 1e6:,.0f} MB",
                )
            )
        extra[str(size)] = [
            {"way": way, "seconds": s, "peak_rss": p}
            for way in ways
            for s, p in zip(times[way], peaks[way], strict=True)
        ]
    shutil.rmtree(workdir, ignore_errors=True)
    print_table("PostgreSQL → the engine (limit: binary COPY to nowhere)", rows)
    print(f"\nraw figures: {save_results('bench_postgres', info, rows, extra)}")


if __name__ == "__main__":
    main()
