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
       - for information, the baseline again under the engine's memory_limit (1GB): the
         engine holds to it, spilling where the bare script (DuckDB's default, 80% of RAM)
         does not;
  3. seed: a real first `reverse-etl run` sends every row to the fast receiver (the engine's
     snapshot is what a user's would be); the baseline's snapshot is made from the same rows;
     then 1% of the rows change;
  4. steady state: the same measurements, against the populated snapshots.
Wall time of each process (spawn to exit) and its peak RSS (/usr/bin/time's, of exactly that
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import (
    COLUMNS,
    PYTHON,
    SYNC,
    BenchProject,
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
STATE_MEMORY = "1GB"  # [state] memory_limit's default
MEMORY_LIMIT = 10**9  # the same in bytes (DuckDB's GB)
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


def _child(mode: str, warehouse: str, snapshot: str, option: str = "") -> None:
    import duckdb

    con = duckdb.connect(":memory:")
    if option.startswith("memory_limit="):  # the baseline held to the engine's memory_limit
        con.execute(f"SET memory_limit = '{option.split('=', 1)[1]}'")
    con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    con.execute(f"ATTACH '{snapshot}' AS snap{' (READ_ONLY)' if mode == 'baseline' else ''}")
    if mode == "snapshot":  # (key, hash) of every row with "fill", else none
        con.execute(_SNAPSHOT)
        if option == "fill":
            con.execute(_FILL)
        con.close()
        return
    added, changed, removed, unchanged = con.execute(_DIFF).fetchone()  # type: ignore[misc]
    con.close()
    counts = {"added": added, "changed": changed, "removed": removed, "unchanged": unchanged}
    print(json.dumps(counts))


def _baseline(warehouse: Path, snapshot: Path, memory_limit: str = "") -> list[str]:
    limit = [f"memory_limit={memory_limit}"] if memory_limit else []
    return [PYTHON, __file__, "baseline", str(warehouse), str(snapshot), *limit]


# ---------------------------------------------------------------------------------------------
# The measurements

_PEAK = "__peak_rss_kib "


def peak(cmd: list[str]) -> Measured:
    """benchlib.measure through /usr/bin/time, whose figure is the peak RSS of the process
    alone: Linux carries a forked child's peak over its exec, so wait4 would report at least
    this script's own RSS (the warehouse it built in process) for every child."""
    measured = measure(["/usr/bin/time", "-f", _PEAK + "%M", *cmd])
    stderr, _, figure = measured.stderr.rpartition(_PEAK)
    measured.stderr, measured.max_rss = stderr, int(figure.split()[0]) * 1024
    return measured


@dataclass
class SideBySide:
    """The processes of one measurement, `repeat` of each kind."""

    base: list[Measured] = field(default_factory=list)  # the baseline, DuckDB's defaults
    held: list[Measured] = field(default_factory=list)  # the baseline under memory_limit
    plan: list[Measured] = field(default_factory=list)  # `reverse-etl plan`


def _side_by_side(
    what: str, root: Path, warehouse: Path, snapshot: Path, repeat: int, expect: dict[str, int]
) -> SideBySide:
    """`plan` and the baselines, interleaved, `repeat` times; all must count `expect`."""
    runs = SideBySide()
    for i in range(repeat):
        b = peak(_baseline(warehouse, snapshot)).check("baseline")
        p = peak(cli("plan", SYNC, "--json", project=root)).check("plan")
        h = peak(_baseline(warehouse, snapshot, STATE_MEMORY)).check("baseline, held")
        counts = p.json_lines()[0]
        for measured in (b.json_lines()[0], h.json_lines()[0], counts):
            assert all(measured[key] == value for key, value in expect.items()), (what, measured)
        assert counts["invalid"] == 0, counts
        runs.base.append(b)
        runs.plan.append(p)
        runs.held.append(h)
        print(
            f"   {what} [{i + 1}/{repeat}]: baseline {b.wall:.2f} s ({mb(b.max_rss)}), "
            f"plan {p.wall:.2f} s ({mb(p.max_rss)}), baseline under memory_limit "
            f"{h.wall:.2f} s ({mb(h.max_rss)})",
            flush=True,
        )
    return runs


def _figures(label: str, what: str, runs: SideBySide, limit: float) -> tuple[list[Row], Any]:
    def wall(ms: list[Measured]) -> float:
        return median([m.wall for m in ms])

    def rss(ms: list[Measured]) -> float:
        return median([m.max_rss for m in ms])

    plan_rss = rss(runs.plan)
    rows = [
        ratio_row(
            f"{label}: {what}, plan wall",
            wall(runs.plan),
            wall(runs.base),
            limit,
            "baseline: the bare DuckDB script's process wall time (DuckDB's defaults)",
        ),
        info_row(
            f"{label}: {what}, plan wall, baseline under memory_limit",
            wall(runs.plan),
            wall(runs.held),
            note=f"the same script with SET memory_limit = '{STATE_MEMORY}', the engine's",
        ),
        Row(
            f"{label}: {what}, plan peak RSS",
            plan_rss,
            rss(runs.base),
            "MB",
            f"<= {mb(MEMORY_LIMIT + ALLOWANCE)}",
            plan_rss <= MEMORY_LIMIT + ALLOWANCE,
            f"memory_limit ({STATE_MEMORY}) + 256 MiB; baseline: the bare script's (DuckDB's "
            f"default memory_limit, 80% of RAM; {mb(int(rss(runs.held)))} under "
            f"memory_limit)",
        ),
    ]
    raw = {
        kind: {"wall": [m.wall for m in ms], "max_rss": [m.max_rss for m in ms]}
        for kind, ms in (("baseline", runs.base), ("held", runs.held), ("plan", runs.plan))
    }
    raw["counts"] = runs.plan[0].json_lines()[0]
    return rows, raw


def _label(rows: int) -> str:
    return f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"


def _project(rows: int, workdir: Path, receiver: FastReceiver) -> tuple[BenchProject, Path]:
    """The project of `rows` rows, and the baseline's snapshot (empty)."""
    root = workdir / f"diff-{rows}"
    print(f"\n== {_label(rows)} rows: building the warehouse in {root}", flush=True)
    started = time.perf_counter()
    project = make_project(root, rows, receiver.url, batch_size=10_000)
    snapshot = root / "baseline_snapshot.duckdb"
    measure([PYTHON, __file__, "snapshot", str(project.warehouse_path), str(snapshot)]).check(
        "the baseline's snapshot"
    )
    print(f"   built in {time.perf_counter() - started:.1f} s", flush=True)
    return project, snapshot


def start_up(workdir: Path, receiver: FastReceiver, log: dict[str, Any]) -> list[Row]:
    """The fixed cost of each process: a first plan of 1,000 rows (5 runs of each)."""
    rows = 1000
    project, snapshot = _project(rows, workdir, receiver)
    runs = _side_by_side(
        "first plan", project.root, project.warehouse_path, snapshot, 5, {"added": rows}
    )
    log["start_up"] = {"baseline": [m.wall for m in runs.base], "plan": [m.wall for m in runs.plan]}
    return [
        info_row(
            "1k: first plan, plan wall (the start-up)",
            median([m.wall for m in runs.plan]),
            median([m.wall for m in runs.base]),
            note="each process's fixed cost: imports, the project's files, opening the state",
        )
    ]


def bench_size(
    rows: int, repeat: int, workdir: Path, receiver: FastReceiver, log: dict[str, Any]
) -> list[Row]:
    label = _label(rows)
    project, snapshot = _project(rows, workdir, receiver)
    root, warehouse = project.root, project.warehouse_path
    sizes: dict[str, Any] = log.setdefault(label, {})
    out: list[Row] = []

    # (a) the first plan: no state yet, an empty baseline snapshot
    runs = _side_by_side("first plan", root, warehouse, snapshot, repeat, {"added": rows})
    figures, sizes["first_plan"] = _figures(label, "first plan", runs, FIRST_LIMIT)
    out += figures

    # seed: a real first run sends every row; the baseline's snapshot from the same rows
    before = receiver.stats()
    first = peak(cli("run", SYNC, "--json", project=root)).check("first run")
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
    runs = _side_by_side("steady plan", root, warehouse, snapshot, repeat, expect)
    figures, sizes["steady_plan"] = _figures(label, "steady plan", runs, STEADY_LIMIT)
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
            rows += start_up(workdir, receiver, log)
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
