"""`reverse-etl --help` wall time (target <= 0.3 s), the median of several runs, against the
interpreter's own start-up (`python -c pass`) and that of a bare click program, in the same run.

Also lists the modules `--help` imports that cost the most (python -X importtime), so that a
regression names its cause.

Usage: .venv/bin/python bench/bench_cli.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import re

from benchlib import (
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

TARGET = 0.3


def slowest_imports(limit: int = 8) -> list[tuple[float, str]]:
    """Modules imported by `--help` (two levels deep), by cumulative import time (seconds)."""
    m = measure([PYTHON, "-X", "importtime", "-m", "reverse_etl", "--help"]).check("importtime")
    seen: dict[str, float] = {}
    for line in m.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(2)) <= 3:  # two levels deep
            seen[match.group(3)] = seen.get(match.group(3), 0) + int(match.group(1)) / 1e6
    return sorted(((t, name) for name, t in seen.items()), reverse=True)[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    commands = {
        "reverse-etl --help": [*CLI, "--help"],
        "python -c pass": [PYTHON, "-c", "pass"],
        "python, import click": [PYTHON, "-c", "import click"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for name, cmd in commands.items():  # warm the page cache and .pyc files
        measure(cmd).check(name)
    for _ in range(args.runs):  # interleaved, so that noise hits all three alike
        for name, cmd in commands.items():
            times[name].append(measure(cmd).check(name).wall)
    help_time = median(times["reverse-etl --help"])
    rows: list[Row] = [
        Row(
            "reverse-etl --help, wall",
            help_time,
            median(times["python -c pass"]),
            "s",
            f"<= {TARGET} s",
            help_time <= TARGET,
            "baseline: python -c pass (interpreter start)",
        ),
        info_row(
            "reverse-etl --help, vs a bare click program",
            help_time,
            median(times["python, import click"]),
            note="baseline: python -c 'import click'",
        ),
        info_row("reverse-etl --help, slowest of the runs", max(times["reverse-etl --help"])),
    ]
    info["load_avg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_machine(info)
    print(f"load average at end {info['load_avg_at_end']}; medians of {args.runs} runs")
    print_table("CLI start-up", rows)
    print("\nslowest imports of `reverse-etl --help` (cumulative, one run):")
    imports = slowest_imports()
    for seconds, name in imports:
        print(f"  {seconds * 1000:7.1f} ms  {name}")
    path = save_results("bench_cli", info, rows, {"runs": times, "imports": imports})
    print(f"\nraw figures: {path}")


if __name__ == "__main__":
    main()
