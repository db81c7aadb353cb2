"""`plan` (and a `run` with nothing to send) over a 10-column model with 1% of rows changed,
measured against a bare DuckDB script doing the same diff, in the same run.

For each size N:
  1. build a project whose warehouse.duckdb holds `model` (N rows, 10 columns, key c1);
  2. seed the engine's snapshot with a real first run (`reverse-etl run`) to bench/fast_receiver.py,
     a local HTTP server in its own process that answers 200 at once; and build the baseline's
     snapshot (key, hash) from the same rows;
  3. change 1% of the rows in the warehouse;
  4. measure, interleaved, --repeat times each:
       - the baseline: a Python process that attaches the warehouse and the (key, hash) snapshot
         with DuckDB, hashes each row of the model (hash(c1..c10)) and full-outer-joins it against
         the snapshot to count added / changed / removed / unchanged;
       - `reverse-etl plan model --json` as a subprocess (what users run);
       - reverse_etl.run.pipeline.plan_sync() timed inside a process (the engine without the CLI);
     wall time of each process, the in-process time of the work, and each process's peak RSS;
  5. `run` delivers the 1%; then `reverse-etl run model --json` with nothing changed, interleaved
     with `plan`: it must send no HTTP request (the receiver counts them) and take <= 1.2x plan.

Usage: .venv/bin/python bench/bench_plan.py [SIZE ...] [--repeat 3] [--workdir DIR]
       (default sizes: 1000000 5000000)
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    SYNC,
    FastReceiver,
    Row,
    cli,
    info_row,
    inproc,
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

PLAN_LIMIT = 2.0
MEMORY_LIMIT = 1_000_000_000  # 1 GB, at 5M rows
RUN_LIMIT = 1.2


def bench_size(
    rows: int, repeat: int, workdir: Path, receiver: FastReceiver, log: dict[str, Any]
) -> list[Row]:
    label = f"{rows / 1e6:g}M" if rows >= 1_000_000 else f"{rows / 1e3:g}k"
    root = workdir / f"plan-{rows}"
    print(f"\n== {label} rows: building the warehouse in {root}", flush=True)
    project = make_project(root, rows, receiver.url, batch_size=10_000)
    snapshot = root / "baseline_snapshot.duckdb"
    out: list[Row] = []
    sizes: dict[str, Any] = log.setdefault(label, {})

    # Seed: a real first run sends every row to the fast receiver.
    before = receiver.stats()
    first = measure(cli("run", SYNC, "--json", project=root)).check("first run")
    after = receiver.stats()
    result = first.json_lines()[0]
    sent = after["records"] - before["records"]
    print(
        f"   first run: {first.wall:.1f} s, peak RSS {mb(first.max_rss)}, delivered "
        f"{result['delivered']:,} (receiver got {sent:,} records in "
        f"{after['requests'] - before['requests']:,} requests)",
        flush=True,
    )
    assert result["status"] == "success" and result["delivered"] == rows == sent, result
    sizes["first_run"] = {"wall": first.wall, "max_rss": first.max_rss, "result": result}
    out.append(
        info_row(
            f"{label}: first run, all rows sent (batch 10k)",
            first.wall,
            note=f"peak RSS {mb(first.max_rss)}; seeds the snapshot",
        )
    )
    measure(inproc("snapshot", str(project.warehouse_path), str(snapshot))).check("snapshot")

    changed = project.change_fraction(100)
    print(f"   changed {changed:,} rows (1%)", flush=True)

    base, base_in, plan, plan_in = [], [], [], []
    for i in range(repeat):
        b = measure(inproc("diff", str(project.warehouse_path), str(snapshot))).check("baseline")
        p = measure(cli("plan", SYNC, "--json", project=root)).check("plan")
        q = measure(inproc("plan", str(root))).check("plan_sync")
        base.append(b)
        plan.append(p)
        plan_in.append(q)
        base_in.append(b.json_lines()[0]["seconds"])
        counts = p.json_lines()[0]
        bcounts = b.json_lines()[0]["result"]
        assert counts["changed"] == changed and counts["added"] == counts["removed"] == 0, counts
        assert bcounts["changed"] == changed, bcounts
        assert bcounts["added"] == bcounts["removed"] == 0, bcounts
        print(
            f"   [{i + 1}/{repeat}] baseline {b.wall:.2f} s ({mb(b.max_rss)}), "
            f"plan CLI {p.wall:.2f} s ({mb(p.max_rss)}), plan_sync "
            f"{q.json_lines()[0]['seconds']:.2f} s in a {q.wall:.2f} s process "
            f"({mb(q.max_rss)})",
            flush=True,
        )

    base_wall = median([m.wall for m in base])
    plan_wall = median([m.wall for m in plan])
    plan_sync = median([m.json_lines()[0]["seconds"] for m in plan_in])
    plan_rss = max(m.max_rss for m in plan + plan_in)
    base_rss = max(m.max_rss for m in base)
    sizes["plan"] = {
        "baseline_wall": [m.wall for m in base],
        "baseline_inproc": base_in,
        "baseline_rss": [m.max_rss for m in base],
        "plan_cli_wall": [m.wall for m in plan],
        "plan_cli_rss": [m.max_rss for m in plan],
        "plan_sync": [m.json_lines()[0]["seconds"] for m in plan_in],
        "plan_sync_rss": [m.max_rss for m in plan_in],
        "counts": plan[0].json_lines()[0],
    }
    out.append(
        ratio_row(
            f"{label}: plan, CLI subprocess wall",
            plan_wall,
            base_wall,
            PLAN_LIMIT,
            "baseline: the bare DuckDB script's process wall time",
        )
    )
    out.append(
        ratio_row(
            f"{label}: plan_sync() in process",
            plan_sync,
            median(base_in),
            PLAN_LIMIT,
            "baseline: the bare script's query time in its process",
        )
    )
    mem = Row(
        f"{label}: plan peak RSS",
        plan_rss,
        base_rss,
        "MB",
        "<= 1 GB",
        None,
        "max over the CLI and in-process plan runs; baseline: the bare script's",
    )
    if rows >= 5_000_000:
        mem.passed = plan_rss <= MEMORY_LIMIT
    out.append(mem)

    # `run` delivers the 1%, then runs with nothing changed must send nothing.
    before = receiver.stats()
    delta = measure(cli("run", SYNC, "--json", project=root)).check("run of the 1%")
    after = receiver.stats()
    result = delta.json_lines()[0]
    assert result["delivered"] == changed == after["records"] - before["records"], result
    out.append(
        info_row(
            f"{label}: run sending the 1% changed (batch 10k)",
            delta.wall,
            note=f"peak RSS {mb(delta.max_rss)}",
        )
    )
    sizes["run_changed"] = {"wall": delta.wall, "max_rss": delta.max_rss, "result": result}

    noop, noop_in, plan2, plan2_in = [], [], [], []
    before = receiver.stats()
    for i in range(repeat):
        r = measure(cli("run", SYNC, "--json", project=root)).check("run, nothing changed")
        p = measure(cli("plan", SYNC, "--json", project=root)).check("plan")
        s = measure(inproc("run", str(root))).check("run_sync, nothing changed")
        q = measure(inproc("plan", str(root))).check("plan_sync")
        for res in (r.json_lines()[0], s.json_lines()[0]["result"]):
            assert res["status"] == "success" and res["delivered"] == 0 and res["changed"] == 0, res
        noop.append(r)
        plan2.append(p)
        noop_in.append(s)
        plan2_in.append(q)
        print(
            f"   [{i + 1}/{repeat}] run (nothing changed) {r.wall:.2f} s ({mb(r.max_rss)}), "
            f"plan {p.wall:.2f} s; run_sync {s.json_lines()[0]['seconds']:.2f} s, "
            f"plan_sync {q.json_lines()[0]['seconds']:.2f} s",
            flush=True,
        )
    after = receiver.stats()
    requests = after["requests"] - before["requests"]
    run_wall = median([m.wall for m in noop])
    run_sync = median([m.json_lines()[0]["seconds"] for m in noop_in])
    plan_wall2 = median([m.wall for m in plan2])
    plan_sync2 = median([m.json_lines()[0]["seconds"] for m in plan2_in])
    sizes["run_nothing_changed"] = {
        "run_cli_wall": [m.wall for m in noop],
        "run_cli_rss": [m.max_rss for m in noop],
        "run_sync": [m.json_lines()[0]["seconds"] for m in noop_in],
        "plan_cli_wall": [m.wall for m in plan2],
        "plan_sync": [m.json_lines()[0]["seconds"] for m in plan2_in],
        "http_requests": requests,
    }
    out.append(
        Row(
            f"{label}: run, nothing changed: HTTP requests",
            requests,
            None,
            "req",
            "= 0",
            requests == 0,
            f"counted by the receiver over {2 * repeat} runs",
        )
    )
    out.append(
        ratio_row(
            f"{label}: run, nothing changed, CLI wall",
            run_wall,
            plan_wall2,
            RUN_LIMIT,
            "baseline: `plan` CLI wall time, measured alongside",
        )
    )
    out.append(
        ratio_row(
            f"{label}: run_sync(), nothing changed",
            run_sync,
            plan_sync2,
            RUN_LIMIT,
            "baseline: plan_sync() in process, measured alongside",
        )
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[1_000_000, 5_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="measurements of each kind (median)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the projects are built (default: a temporary folder)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="retl-bench-plan-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    log: dict[str, Any] = {}
    try:
        with FastReceiver() as receiver:
            for size in args.sizes:
                rows += bench_size(size, args.repeat, workdir, receiver, log)
    finally:
        if not args.keep and args.workdir is None:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    info["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_machine(info)
    print(f"load average at end {info['load_avg_at_end']}; medians of {args.repeat} runs")
    print_table("plan and run (10 columns, 1% of rows changed)", rows)
    path = save_results("bench_plan", info, rows, {"sizes": args.sizes, "details": log})
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
