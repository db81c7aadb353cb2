"""`reverse-etl plan` against a bare DuckDB diff, side by side in the same run: the first plan
(empty snapshot) and the steady state (snapshot populated, 1% of rows changed).

For each size N (default 5M and 20M rows; `--rows 1000000` for a quick run):
  1. build a project whose warehouse.duckdb holds `model` (N rows, 10 columns, key c1) and a
     sync selecting it (upsert, primary key c1), delivering to bench/fast_receiver.py;
  2. first plan: measure, interleaved, --repeat times each, as whole processes:
       - the baseline: this script's `baseline` child, a Python process that only imports
         duckdb, attaches the warehouse and a snapshot table (key VARCHAR, hash UBIGINT),
         empty here, hashes each row (`hash(c1, ..., c10)`, DuckDB's hash as the engine's
         row hash uses) and full-outer-joins it against the snapshot, counting added / changed
         / removed / unchanged;
       - `reverse-etl plan model --json` with no state yet;
  3. seed: a real first `reverse-etl run` sends every row to the fast receiver (the engine's
     snapshot is what a user's would be); the baseline's snapshot is made from the same rows;
     then 1% of the rows change;
  4. steady state: the same two measurements, against the populated snapshots.
Wall time of each process (spawn to exit) and its peak RSS (os.wait4's ru_maxrss of exactly that
process), the median of --repeat runs; the ratio engine / baseline against the targets: first
plan <= 1.5x, steady state <= 1.3x, and the plan's peak RSS within [state] memory_limit (1 GB by
default) plus a fixed allowance for the interpreter and the libraries.

Usage: .venv/bin/python bench/bench_diff_speed.py [--rows N ...] [--repeat 3] [--workdir DIR]
       .venv/bin/python bench/bench_diff_speed.py --rows 1000000      # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    COLUMNS,
    PYTHON,
    SYNC,
    FastReceiver,
    Measured,
    Row,
    cli,
    info_row,
    machine,
    make_project,
    mb,
    measure,
    median,
    print_machine,
    print_table,
    ratio_row,
    save_results,
)

FIRST_LIMIT = 1.5
STEADY_LIMIT = 1.3
MEMORY_LIMIT = 1024**3  # [state] memory_limit's default, "1GB" (DuckDB reads GB as GiB)
ALLOWANCE = 256 * 1024**2  # the interpreter, the imported libraries, DuckDB's untracked memory

_HASHED = ", ".join(COLUMNS)
_SNAPSHOT = "CREATE OR REPLACE TABLE snap.snapshot (key VARCHAR, hash UBIGINT)"
_FILL = f"INSERT INTO snap.snapshot SELECT c1::VARCHAR, hash({_HASHED}) FROM wh.model"
_DIFF = f"""
WITH m AS (SELECT c1::VARCHAR AS key, hash({_HASHED}) AS hash FROM wh.model)
SELECT
    count(*) FILTER (WHERE s.key IS NULL) AS added,
    count(*) FILTER (WHERE m.key IS NOT NULL AND s.key IS NOT NULL AND m.hash <> s.hash),
    count(*) FILTER (WHERE m.key IS NULL) AS removed,
    count(*) FILTER (WHERE m.hash = s.hash) AS unchanged
FROM m FULL OUTER JOIN snap.snapshot s ON m.key = s.key
"""


# ---------------------------------------------------------------------------------------------
# The baseline's children (this script run as `bench_diff_speed.py baseline|snapshot ...`)


def _child(mode: str, warehouse: str, snapshot: str, fill: str = "") -> None:
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    con.execute(f"ATTACH '{snapshot}' AS snap{' (READ_ONLY)' if mode == 'baseline' else ''}")
    if mode == "snapshot":  # (key, hash) of every row, or none
        con.execute(_SNAPSHOT)
        if fill == "fill":
            con.execute(_FILL)
        con.close()
        return
    added, changed, removed, unchanged = con.execute(_DIFF).fetchone()  # type: ignore[misc]
    con.close()
    counts = {"added": added, "changed": changed, "removed": removed, "unchanged": unchanged}
    print(json.dumps(counts))


def _baseline(warehouse: Path, snapshot: Path) -> list[str]:
    return [PYTHON, __file__, "baseline", str(warehouse), str(snapshot)]


# ---------------------------------------------------------------------------------------------
# The measurements


def _side_by_side(
    what: str, root: Path, warehouse: Path, snapshot: Path, repeat: int, expect: dict[str, int]
) -> tuple[list[Measured], list[Measured]]:
    """`plan` and the baseline, interleaved, `repeat` times; both must count `expect`."""
    base, plan = [], []
    for i in range(repeat):
        b = measure(_baseline(warehouse, snapshot)).check("baseline")
        p = measure(cli("plan", SYNC, "--json", project=root)).check("plan")
        counts, bcounts = p.json_lines()[0], b.json_lines()[0]
        for key, value in expect.items():
            assert counts[key] == value, (what, counts)
            assert bcounts[key] == value, (what, bcounts)
        assert counts["invalid"] == 0, counts
        base.append(b)
        plan.append(p)
        print(
            f"   {what} [{i + 1}/{repeat}]: baseline {b.wall:.2f} s ({mb(b.max_rss)}), "
            f"plan {p.wall:.2f} s ({mb(p.max_rss)})",
            flush=True,
        )
    return base, plan


def _figures(
    label: str, what: str, base: list[Measured], plan: list[Measured], limit: float
) -> tuple[list[Row], dict[str, Any]]:
    base_wall, plan_wall = median([m.wall for m in base]), median([m.wall for m in plan])
    base_rss, plan_rss = median([m.max_rss for m in base]), median([m.max_rss for m in plan])
    rows = [
        ratio_row(
            f"{label}: {what}, plan wall",
            plan_wall,
            base_wall,
            limit,
            "baseline: the bare DuckDB script's process wall time",
        ),
        Row(
            f"{label}: {what}, plan peak RSS",
            plan_rss,
            base_rss,
            "MB",
            f"<= {mb(MEMORY_LIMIT + ALLOWANCE)}",
            plan_rss <= MEMORY_LIMIT + ALLOWANCE,
            "memory_limit (1 GiB) + 256 MiB; baseline: the bare script's (DuckDB's default "
            "memory_limit, 80% of RAM)",
        ),
    ]
    raw = {
        "baseline_wall": [m.wall for m in base],
        "baseline_rss": [m.max_rss for m in base],
        "plan_wall": [m.wall for m in plan],
        "plan_rss": [m.max_rss for m in plan],
        "counts": plan[0].json_lines()[0],
    }
    return rows, raw


def bench_size(
    rows: int, repeat: int, workdir: Path, receiver: FastReceiver, log: dict[str, Any]
) -> list[Row]:
    label = f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"
    root = workdir / f"diff-{rows}"
    print(f"\n== {label} rows: building the warehouse in {root}", flush=True)
    started = time.perf_counter()
    project = make_project(root, rows, receiver.url, batch_size=10_000)
    warehouse, snapshot = project.warehouse_path, root / "baseline_snapshot.duckdb"
    measure([PYTHON, __file__, "snapshot", str(warehouse), str(snapshot), "empty"]).check("empty")
    print(f"   built in {time.perf_counter() - started:.1f} s", flush=True)
    sizes: dict[str, Any] = log.setdefault(label, {})
    out: list[Row] = []

    # (a) the first plan: no state yet, an empty baseline snapshot
    base, plan = _side_by_side("first plan", root, warehouse, snapshot, repeat, {"added": rows})
    figures, sizes["first_plan"] = _figures(label, "first plan", base, plan, FIRST_LIMIT)
    out += figures

    # seed: a real first run sends every row; the baseline's snapshot from the same rows
    before = receiver.stats()
    first = measure(cli("run", SYNC, "--json", project=root)).check("first run")
    sent = receiver.stats()["records"] - before["records"]
    result = first.json_lines()[0]
    assert result["status"] == "success" and result["delivered"] == rows == sent, result
    print(f"   first run: {first.wall:.1f} s, peak RSS {mb(first.max_rss)}", flush=True)
    sizes["first_run"] = {"wall": first.wall, "max_rss": first.max_rss}
    out.append(
        info_row(
            f"{label}: first run, every row sent (seeds the snapshot)",
            first.wall,
            note=f"peak RSS {mb(first.max_rss)}",
        )
    )
    measure([PYTHON, __file__, "snapshot", str(warehouse), str(snapshot), "fill"]).check("fill")
    changed = project.change_fraction(100)
    print(f"   changed {changed:,} rows (1%)", flush=True)

    # (c) the steady state: snapshots populated, 1% changed
    expect = {"changed": changed, "added": 0, "removed": 0}
    base, plan = _side_by_side("steady plan", root, warehouse, snapshot, repeat, expect)
    figures, sizes["steady_plan"] = _figures(label, "steady plan", base, plan, STEADY_LIMIT)
    out += figures
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--rows", nargs="+", type=int, default=[5_000_000, 20_000_000], help="model sizes"
    )
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each kind (median)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where the projects are built (default: a temp)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="retl-bench-diff-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    log: dict[str, Any] = {}
    try:
        with FastReceiver() as receiver:
            for size in args.rows:
                rows += bench_size(size, args.repeat, workdir, receiver, log)
                if not args.keep:
                    shutil.rmtree(workdir / f"diff-{size}", ignore_errors=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    info["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_machine(info)
    print(f"load average at end {info['load_avg_at_end']}; medians of {args.repeat} runs")
    print_table("plan against a bare DuckDB diff (10 columns; whole processes)", rows)
    path = save_results("bench_diff_speed", info, rows, {"sizes": args.rows, "details": log})
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("baseline", "snapshot"):
        _child(*sys.argv[1:])
    else:
        main()
