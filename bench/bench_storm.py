"""A storm of random faults with no rate limit configured: how long until everything arrives.

The fault-injecting receiver of tests/faults.py answers, per request and at random whatever the
rate: 12% 429 with Retry-After 1, 10% 5xx, 2% no answer before the client's timeout (the batch
applied, as a real API may have done), 3% dropped connections. 5,000 records in batches of 50,
timeout_seconds = 2, 4 requests in flight, no limit configured; `run_sync` is called until a run
succeeds. Random 429s are not a rate limit: the rate learned must not collapse (0.1 request/s
and over 400 s in 0.2.0), and nothing may be lost.

Usage: .venv/bin/python bench/bench_storm.py [--records 5000] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Row, info_row, machine, print_machine, print_table, save_results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import duckdb  # noqa: E402
from faults import FaultyReceiver, Request  # noqa: E402

from reverse_etl.delivery.ratelimit import limiters  # noqa: E402
from reverse_etl.project.loader import Project  # noqa: E402
from reverse_etl.run.pipeline import run_sync  # noqa: E402

STORM = (("throttle:1", 0.12), ("error", 0.10), ("hang", 0.02), ("drop", 0.03))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    info = machine()
    print_machine(info)

    def storm(request: Request, body: dict[str, Any]) -> str:
        draw = random.Random(f"{args.seed}:{request.idempotency_key}:{request.attempt}").random()
        for outcome, share in STORM:
            if draw < share:
                return outcome
            draw -= share
        return "ok"

    with (
        FaultyReceiver(seed=args.seed, rules=[storm]) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        server.faults.hang_seconds = 3.0  # past the client's timeout of 2 s
        root = Path(tmp)
        (root / "syncs").mkdir()
        (root / "destinations").mkdir()
        with duckdb.connect(str(root / "warehouse.duckdb")) as con:
            con.execute(f"create table t as select range as id from range({args.records})")
        (root / "destinations" / "hook.toml").write_text(
            f'type = "webhook"\nurl = "{server.url}"\nbatch_size = 50\nmax_concurrency = 4\n'
            "timeout_seconds = 2\n"
        )
        (root / "syncs" / "t.sql").write_text(
            '-- destination = "hook"\n-- primary_key = "id"\nselect id from t\n'
        )
        project = Project.open(root)
        began = time.monotonic()
        runs = []
        for _ in range(10):
            result = run_sync(project, "t")
            runs.append(result.as_dict())
            print(
                f"   run {len(runs)}: {result.status}, {result.delivered} delivered, "
                f"{result.failed} failed, {result.duration_seconds:.1f} s"
            )
            if result.status == "success":
                break
        seconds = time.monotonic() - began
        missing = args.records - len(server.data)
        limiter = limiters(str(root))["hook"]
        outcomes = server.outcomes()
        requests = sum(outcomes.values())
        batches = args.records // 50
    rows: list[Row] = [
        info_row("runs until success", len(runs), None, "runs"),
        info_row("time until everything arrived", seconds, None, "s", "0.2.0: over 400 s"),
        info_row("records missing at the end", missing, None, "rec", "must be 0"),
        info_row("requests per batch", requests / batches, None, "x", str(dict(outcomes))),
        info_row(
            "rate learned at the end",
            limiter.learned or 0.0,
            None,
            "req/s",
            "0 = none learned; 0.2.0 fell to 0.1",
        ),
    ]
    rows[2].passed = missing == 0
    print_table("a storm of random faults, no limit configured", rows)
    extra = {"runs": runs, "outcomes": dict(outcomes), "learned": limiter.learned}
    print(f"\nraw figures: {save_results('bench_storm', info, rows, extra)}")


if __name__ == "__main__":
    main()
