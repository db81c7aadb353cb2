"""Delivery: N changed rows (default 100,000) to a local receiver that answers at once, batch 500,
4 requests in flight: the engine's `run` against a bare httpx.AsyncClient loop, in the same run.

Setup: a project whose model has 10 columns (key c1), a destination with batch_size = 500 and
max_concurrency = 4 pointing at bench/fast_receiver.py (its own process, answers 200 with an empty
body at once, counts requests and records). A first run seeds the snapshot; then, before each
engine measurement, every row of the warehouse is changed, so the run has N changed rows to send.

Measured, interleaved, --repeat times each:
  - `reverse-etl run model --json` as a subprocess (what users run): process wall time;
  - reverse_etl.run.pipeline.run_sync() timed inside a process (the engine without CLI start-up);
  - the baseline, inproc.py post: a Python process that reads the same N rows from the warehouse
    with DuckDB, encodes them as the wire format's bodies (each record's JSON by DuckDB's to_json,
    joined into bodies of 500 in Python; same shape: sync, object, operation, records of key +
    fields), and POSTs them with one httpx.AsyncClient, 4 in flight (a semaphore and a connection
    pool of 4). Its time is reported whole (read + encode + post), which the targets use, and for
    the posting loop alone (for information: the floor of the HTTP part).

Every engine run must deliver N records in ceil(N / 500) requests, checked at the receiver.

Usage: .venv/bin/python bench/bench_delivery.py [ROWS] [--batch 500] [--concurrency 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from benchlib import (
    SYNC,
    FastReceiver,
    Measured,
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

LIMIT = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rows", nargs="?", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="retl-bench-delivery-"))
    rows = args.rows
    requests_expected = math.ceil(rows / args.batch)
    log: dict[str, Any] = {}
    try:
        with FastReceiver() as receiver:
            root = workdir / f"delivery-{rows}"
            project = make_project(
                root, rows, receiver.url, batch_size=args.batch, max_concurrency=args.concurrency
            )

            def engine(cmd: list[str], what: str) -> tuple[Measured, float]:
                """Change every row, then run the engine: N changed rows to send."""
                changed = project.change_fraction(1)
                assert changed == rows
                before = receiver.stats()
                m = measure(cmd).check(what)
                after = receiver.stats()
                result = m.json_lines()[0]
                result = result.get("result", result)
                got = after["records"] - before["records"]
                reqs = after["requests"] - before["requests"]
                assert result["changed"] == rows and result["delivered"] == rows == got, result
                assert reqs == requests_expected, (reqs, requests_expected)
                seconds = m.json_lines()[0].get("seconds", m.wall)
                return m, seconds

            first = measure(cli("run", SYNC, "--json", project=root)).check("first run")
            print(f"first run (seeds the snapshot, {rows:,} added): {first.wall:.2f} s", flush=True)
            cli_runs, inproc_runs, base_runs = [], [], []
            for i in range(args.repeat):
                before = receiver.stats()
                b = measure(
                    inproc(
                        "post",
                        receiver.url,
                        str(project.warehouse_path),
                        str(args.batch),
                        str(args.concurrency),
                    )
                ).check("baseline")
                after = receiver.stats()
                bj = b.json_lines()[0]
                assert after["records"] - before["records"] == rows, (before, after)
                assert after["requests"] - before["requests"] == requests_expected
                c, _ = engine(cli("run", SYNC, "--json", project=root), "run")
                p, p_seconds = engine(inproc("run", str(root)), "run_sync")
                base_runs.append((b, bj))
                cli_runs.append(c)
                inproc_runs.append((p, p_seconds))
                print(
                    f"[{i + 1}/{args.repeat}] baseline {b.wall:.2f} s process "
                    f"({bj['seconds']:.2f} s work: read+encode {bj['read_encode_seconds']:.2f}, "
                    f"post {bj['post_seconds']:.2f}; {mb(b.max_rss)}); "
                    f"run CLI {c.wall:.2f} s ({mb(c.max_rss)}); run_sync {p_seconds:.2f} s "
                    f"in a {p.wall:.2f} s process",
                    flush=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    base_wall = median([b.wall for b, _ in base_runs])
    base_work = median([j["seconds"] for _, j in base_runs])
    base_post = median([j["post_seconds"] for _, j in base_runs])
    run_wall = median([c.wall for c in cli_runs])
    run_sync = median([s for _, s in inproc_runs])
    label = f"{rows:,} changed rows, batch {args.batch}, {args.concurrency} in flight"
    table: list[Row] = [
        ratio_row(
            "run, CLI subprocess wall",
            run_wall,
            base_wall,
            LIMIT,
            "baseline: the bare script's process wall (start, read, encode, post)",
        ),
        ratio_row(
            "run_sync() in process",
            run_sync,
            base_work,
            LIMIT,
            "baseline: the bare script's read + encode + post, in its process",
        ),
        info_row(
            "run_sync() in process vs posting alone",
            run_sync,
            base_post,
            note="baseline: the bare httpx loop alone, bodies already encoded",
        ),
        info_row("run, records per second (CLI)", rows / run_wall, rows / base_wall, "rec/s"),
        info_row(
            "run, CLI peak RSS",
            max(c.max_rss for c in cli_runs),
            max(b.max_rss for b, _ in base_runs),
            "MB",
        ),
    ]
    log.update(
        rows=rows,
        batch=args.batch,
        concurrency=args.concurrency,
        first_run_wall=first.wall,
        baseline=[{"wall": b.wall, "max_rss": b.max_rss, **j} for b, j in base_runs],
        run_cli=[
            {"wall": c.wall, "max_rss": c.max_rss, "result": c.json_lines()[0]} for c in cli_runs
        ],
        run_sync=[{"wall": p.wall, "seconds": s, "max_rss": p.max_rss} for p, s in inproc_runs],
    )
    info["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_machine(info)
    print(f"load average at end {info['load_avg_at_end']}; medians of {args.repeat} runs")
    print_table(f"delivery: {label}", table)
    path = save_results("bench_delivery", info, table, log)
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
