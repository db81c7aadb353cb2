"""A model of N rows in PostgreSQL with 1% of its rows changed: the local diff (the whole model
moves into DuckDB and is diffed there) against `diff = "warehouse"` (the diff runs in PostgreSQL
and only the changed rows leave it): wall time of `plan` and of `run`, and the bytes that left
the warehouse (as Arrow), each run as a CLI process.

    .venv/bin/python bench/bench_warehouse_diff.py            # 5M rows
    .venv/bin/python bench/bench_warehouse_diff.py 500000 --repeat 1

Uses the tables of bench_postgres.py (retl_bench.model_<N>, built when missing) and the fast
receiver; the first runs (which deliver every row) are not measured."""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import psycopg
from bench_postgres import DSN, build
from benchlib import (
    CLI,
    FastReceiver,
    Row,
    info_row,
    machine,
    measure,
    median,
    print_machine,
    print_table,
    save_results,
)

BYTES = re.compile(r"([\d,]+) bytes \(as Arrow\) left the warehouse")


def project(root: Path, table: str, url: str) -> None:
    (root / "syncs").mkdir(parents=True)
    (root / "destinations").mkdir()
    (root / "config.toml").write_text(
        f'[warehouse]\ntype = "postgres"\ndsn = "{DSN}"\nstate_schema = "retl_bench_state"\n'
    )
    (root / "destinations" / "hook.toml").write_text(
        f'type = "webhook"\nurl = "{url}"\nbatch_size = 500\nmax_concurrency = 4\n'
    )
    for name, diff in (("local", "local"), ("warehouse", "warehouse")):
        (root / "syncs" / f"{name}.sql").write_text(
            f'-- destination = "hook"\n-- primary_key = "c1"\n-- diff = "{diff}"\n'
            f"select * from {table}\n"
        )


def cli(root: Path, *args: str) -> tuple[float, int]:
    """Seconds, and bytes that left the warehouse (the last figure the run logged)."""
    measured = measure([*CLI, *args, "--project", str(root), "-v"]).check(" ".join(args))
    moved = [int(m.replace(",", "")) for m in BYTES.findall(measured.stderr)]
    return measured.wall, max(moved, default=0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="?", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    source = build(args.rows)
    table = f"retl_bench.wdiff_{args.rows}"
    root = Path(tempfile.mkdtemp(prefix="retl-wdiff-"))
    with psycopg.connect(DSN, autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM {source}")
        con.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (c1)")
        con.execute("DROP SCHEMA IF EXISTS retl_bench_state CASCADE")
    rows: list[Row] = []
    figures: dict[str, list[float]] = {}
    try:
        with FastReceiver() as receiver:
            project(root / "p", table, receiver.url)
            p = root / "p"
            print("first runs (every row delivered; not measured) ...", flush=True)
            for sync in ("local", "warehouse"):
                cli(p, "run", sync)
            for _ in range(args.repeat):
                with psycopg.connect(DSN, autocommit=True) as con:
                    con.execute(f"UPDATE {table} SET c4 = c4 + 1 WHERE c1 % 100 = 0")
                    con.execute(f"VACUUM ANALYZE {table}")
                for sync in ("local", "warehouse"):
                    for what in ("plan", "run"):
                        seconds, moved = cli(p, what, sync)
                        figures.setdefault(f"{sync} {what}", []).append(seconds)
                        figures.setdefault(f"{sync} {what} bytes", []).append(moved)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for what in ("plan", "run"):
        local, warehouse = median(figures[f"local {what}"]), median(figures[f"warehouse {what}"])
        rows.append(info_row(f"{what}: diff in the warehouse (baseline: local)", warehouse, local))
        rows.append(
            info_row(
                f"{what}: bytes out of the warehouse (baseline: local)",
                median(figures[f"warehouse {what} bytes"]),
                median(figures[f"local {what} bytes"]),
                "MB",
            )
        )
    print_table(f"{args.rows:,} rows, 1% changed: local diff vs diff = warehouse", rows)
    print(f"\nraw figures: {save_results('bench_warehouse_diff', info, rows, figures)}")


if __name__ == "__main__":
    main()
