"""The rate held against a receiver that enforces its own limit, as a fraction of that limit.

The receiver (reverse_etl.destinations.webhook.receiver.WebhookReceiver on 127.0.0.1) accepts
at most N requests in any rolling window and answers 429 past it. Scenarios, each a real
`run_sync` of a fresh sync:

- the destination configured with the receiver's own limit (per second, per 10 s): the rate
  held over the run, and the 429s (target: none, and at least 90% of the limit);
- no limit configured: the engine must learn it from the 429s; the rate accepted over the
  second half of the run, and how many 429s it took.

Usage: .venv/bin/python bench/bench_ratelimit.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchlib import Row, info_row, machine, print_machine, print_table, save_results

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402

from reverse_etl.destinations.webhook.receiver import RollingLimit, WebhookReceiver  # noqa: E402
from reverse_etl.project.loader import Project  # noqa: E402
from reverse_etl.run.pipeline import run_sync  # noqa: E402


def scenario(
    name: str, limit: int, seconds: float, configured: str | None, duration: float
) -> tuple[float, int, int]:
    """(requests accepted per second over the second half, 429s, requests) of one run."""
    requests = int(limit / seconds * duration)
    server = RollingLimit(limit, seconds, retry_after="1" if configured else None)
    with WebhookReceiver(intercept=server) as receiver, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "syncs").mkdir()
        (root / "destinations").mkdir()
        with duckdb.connect(str(root / "warehouse.duckdb")) as con:
            con.execute(f"create table t as select range as id from range({requests})")
        (root / "destinations" / "hook.toml").write_text(
            f'type = "webhook"\nurl = "{receiver.url}"\nbatch_size = 1\nmax_concurrency = 8\n'
            "retry_backoff_seconds = 0.2\nmax_retries = 50\n" + (configured or "")
        )
        (root / "syncs" / "t.sql").write_text(
            '-- destination = "hook"\n-- primary_key = "id"\nselect id from t\n'
        )
        result = run_sync(Project.open(root), "t")
        assert result.delivered == requests, result.as_dict()
        times = sorted(r["at"] for r in receiver.requests if r["status"] == 200)
        late = [t for t in times if t >= times[len(times) // 2]]
        rate = (len(late) - 1) / (late[-1] - late[0])
        print(f"   {name}: {rate:.1f} requests/s accepted, {server.throttled} 429s")
        return rate, server.throttled, len(receiver.requests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    args = parser.parse_args()
    info = machine()
    print_machine(info)
    rows: list[Row] = []
    extra: dict[str, Any] = {}
    cases = [
        ("20/s, configured 20/s", 20, 1.0, "requests_per_second = 20\n"),
        ("100/s, configured 100/s", 100, 1.0, "requests_per_second = 100\n"),
        ("300 per 10 s, configured so", 300, 10.0, "requests_per_10_seconds = 300\n"),
        ("50/s, nothing configured", 50, 1.0, None),
    ]
    for name, limit, seconds, configured in cases:
        duration = max(args.seconds, 2 * seconds)
        rate, throttled, sent = scenario(name, limit, seconds, configured, duration)
        allowed = limit / seconds
        fraction = rate / allowed
        row = Row(
            f"{name}: share of the limit held",
            fraction,
            None,
            "",
            ">= 0.9" if configured else "",
            None,
        )
        if configured:
            row.passed = fraction >= 0.9 and throttled == 0
        rows.append(row)
        rows.append(info_row(f"{name}: 429s / requests", throttled, sent, "req"))
        extra[name] = {"rate": rate, "allowed": allowed, "throttled": throttled, "sent": sent}
    print_table("rate held against a rate-limited receiver", rows)
    print(f"\nraw figures: {save_results('bench_ratelimit', info, rows, extra)}")


if __name__ == "__main__":
    main()
