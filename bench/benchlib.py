"""Shared by the benchmarks: the machine, measured subprocesses, the fast receiver, a generated
project, and the table of figures."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PYTHON = sys.executable
_ENTRY = Path(PYTHON).parent / "reverse-etl"
CLI: list[str] = [str(_ENTRY)] if _ENTRY.exists() else [PYTHON, "-m", "reverse_etl"]


def _compiled() -> None:
    """The package's bytecode written, as pip writes it at install: in a checkout run with
    PYTHONDONTWRITEBYTECODE (this project's machines set it), every measured process would
    otherwise compile every module again (about 50 ms), which no installed copy pays."""
    import compileall

    compileall.compile_dir(str(REPO / "reverse_etl"), quiet=1)


_compiled()

# ---------------------------------------------------------------------------------------------
# The machine


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "?"
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        ram = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        pass
    import duckdb

    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "ram": ram,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "load_avg_at_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "git_commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def print_machine(info: dict[str, Any]) -> None:
    print(
        "machine:",
        f"{info['cpu']}, {info['cores']} cores, {info['ram']} RAM,",
        f"{info['os']}, Python {info['python']}, DuckDB {info['duckdb']},",
        f"load average at start {info['load_avg_at_start']}, commit {info['git_commit']}",
    )


# ---------------------------------------------------------------------------------------------
# Measured subprocesses


@dataclass
class Measured:
    wall: float  # seconds, from spawn to exit
    max_rss: int  # bytes: peak resident set size of the process (wait4's ru_maxrss)
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def check(self, what: str, ok: Sequence[int] = (0,)) -> Measured:
        if self.returncode not in ok:
            raise SystemExit(
                f"{what} exited {self.returncode}\nstdout: {self.stdout[-2000:]}\n"
                f"stderr: {self.stderr[-4000:]}"
            )
        return self


def measure(
    cmd: Sequence[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 3600,
) -> Measured:
    """Run cmd to completion: wall time and the peak RSS of that one process (not its children).

    os.wait4 gives the rusage of exactly the child waited for; stdout and stderr go to files so
    that no pipe can block the child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.002)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            wall,
            usage.ru_maxrss * 1024,
            proc.returncode,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def cli(*args: str, project: Path) -> list[str]:
    return [*CLI, *args, "--project", str(project)]


def inproc(*args: str) -> list[str]:
    """A child that times one engine call (or one baseline) inside its own process."""
    return [PYTHON, str(BENCH / "inproc.py"), *args]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# ---------------------------------------------------------------------------------------------
# The fast receiver, in its own process


class FastReceiver:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, str(BENCH / "fast_receiver.py")], stdout=subprocess.PIPE, text=True
        )
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            self.proc.kill()
            raise SystemExit("the fast receiver did not start")
        self.port = int(line.split()[1])
        self.url = f"http://127.0.0.1:{self.port}/ingest"

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> FastReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# The benchmark project: a 10-column model over a generated warehouse table

COLUMNS = [f"c{i}" for i in range(1, 11)]  # c1 is the primary key
SYNC = "model"

# Ten columns of the kinds a reverse-ETL model carries: an integer key, strings, numbers, an
# exact decimal, a boolean, a date and a timestamp.
_TABLE = """
CREATE OR REPLACE TABLE model AS
SELECT
    i AS c1,
    'user' || i || '@example.com' AS c2,
    'Name ' || (i * 7919 % 100003) AS c3,
    (i % 1000)::INTEGER AS c4,
    (i * 0.37)::DOUBLE AS c5,
    ((i % 100000) * 1.25)::DECIMAL(12, 2) AS c6,
    i % 2 = 0 AS c7,
    DATE '2020-01-01' + (i % 1500)::INTEGER AS c8,
    TIMESTAMP '2020-01-01 00:00:00' + to_seconds(i) AS c9,
    ['free', 'pro', 'team', 'enterprise'][(i % 4) + 1] AS c10
FROM range(1, {rows} + 1) t(i)
"""


@dataclass
class BenchProject:
    root: Path
    rows: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    def warehouse(self, sql: str) -> None:
        import duckdb

        with duckdb.connect(str(self.warehouse_path)) as con:
            con.execute(sql)
            con.execute("CHECKPOINT")

    def change_fraction(self, every: int, bump: int = 1) -> int:
        """Change one row in `every` (every=100: 1%); returns how many rows changed."""
        import duckdb

        with duckdb.connect(str(self.warehouse_path)) as con:
            changed = con.execute(
                f"UPDATE model SET c4 = c4 + {bump} WHERE c1 % {every} = 0"
            ).fetchone()[0]  # type: ignore[index]
            con.execute("CHECKPOINT")
        return int(changed)


def make_project(
    root: Path,
    rows: int,
    url: str,
    *,
    batch_size: int,
    max_concurrency: int = 4,
    timeout_seconds: float = 120,
) -> BenchProject:
    if root.exists():
        shutil.rmtree(root)
    (root / "syncs").mkdir(parents=True)
    (root / "destinations").mkdir()
    (root / "config.toml").write_text('[warehouse]\ntype = "duckdb"\npath = "warehouse.duckdb"\n')
    (root / "destinations" / "hook.toml").write_text(
        f'type = "webhook"\nurl = "{url}"\nbatch_size = {batch_size}\n'
        f"max_concurrency = {max_concurrency}\ntimeout_seconds = {timeout_seconds}\n"
        "max_retries = 2\n"
    )
    (root / "syncs" / f"{SYNC}.sql").write_text(
        '-- destination = "hook"\n-- primary_key = "c1"\n-- mode = "upsert"\n'
        f"select {', '.join(COLUMNS)}\nfrom model\n"
    )
    project = BenchProject(root, rows)
    project.warehouse(_TABLE.format(rows=rows))
    return project


# ---------------------------------------------------------------------------------------------
# The table of figures


@dataclass
class Row:
    what: str
    value: float
    baseline: float | None
    unit: str = "s"
    target: str = ""  # e.g. "<= 2x", "<= 1 GB"
    passed: bool | None = None  # None: informational
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline:
            return None
        return self.value / self.baseline


def ratio_row(what: str, value: float, baseline: float, limit: float, note: str = "") -> Row:
    row = Row(what, value, baseline, "s", f"<= {limit:g}x", None, note)
    row.passed = row.ratio is not None and row.ratio <= limit
    return row


def info_row(
    what: str, value: float, baseline: float | None = None, unit: str = "s", note: str = ""
) -> Row:
    return Row(what, value, baseline, unit, "", None, note)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MB":
        return f"{value / 1e6:,.0f} MB"
    if unit == "req":
        return f"{value:,.0f}"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    return f"{value:,.3f} {unit}".strip()


def print_table(title: str, rows: list[Row]) -> None:
    header = ("measure", "value", "baseline", "ratio", "target", "verdict")
    lines = [header]
    for r in rows:
        verdict = "" if r.passed is None else "PASS" if r.passed else "FAIL"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x"
        lines.append(
            (r.what, _fmt(r.value, r.unit), _fmt(r.baseline, r.unit), ratio, r.target, verdict)
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    print()
    print(title)
    print("-" * (sum(widths) + 3 * (len(widths) - 1)))
    for n, line in enumerate(lines):
        print(
            "   ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            print("-" * (sum(widths) + 3 * (len(widths) - 1)))
    notes = [r for r in rows if r.note]
    for r in notes:
        print(f"  {r.what}: {r.note}")


def save_results(name: str, info: dict[str, Any], rows: list[Row], extra: dict[str, Any]) -> Path:
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{name}-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "machine": info,
                "rows": [{**r.__dict__, "ratio": r.ratio} for r in rows],
                **extra,
            },
            indent=2,
            default=str,
        )
    )
    return path


def mb(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"
