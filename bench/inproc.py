"""Children of the benchmarks: one engine call, or one baseline, timed inside its own process.

Each prints one JSON line {"seconds": <time of the work itself, after imports>, ...}; the parent
measures the process's wall time and peak RSS from outside (benchlib.measure).

    inproc.py plan ROOT                 reverse_etl.run.pipeline.plan_sync(project, "model")
    inproc.py run ROOT                  reverse_etl.run.pipeline.run_sync(project, "model")
    inproc.py diff WAREHOUSE SNAPSHOT   baseline: bare DuckDB hash-and-join of the model against
                                        a (key, hash) snapshot, counting added/changed/removed
    inproc.py post URL WAREHOUSE BATCH CONCURRENCY
                                        baseline: read the model, encode the wire format's JSON
                                        bodies, POST them with httpx.AsyncClient, N in flight
"""

from __future__ import annotations

import json
import sys
import time

COLUMNS = ", ".join(f"c{i}" for i in range(1, 11))

# The baseline's snapshot has the shape the engine keeps for its diff: (key text, 64-bit hash).
SNAPSHOT_SQL = f"""
CREATE OR REPLACE TABLE snap.snapshot AS
SELECT c1::VARCHAR AS key, hash({COLUMNS}) AS hash FROM wh.model
"""

DIFF_SQL = f"""
WITH m AS (SELECT c1::VARCHAR AS key, hash({COLUMNS}) AS hash FROM wh.model)
SELECT
    count(*) FILTER (WHERE s.key IS NULL) AS added,
    count(*) FILTER (WHERE m.key IS NOT NULL AND s.key IS NOT NULL AND m.hash <> s.hash) AS changed,
    count(*) FILTER (WHERE m.key IS NULL) AS removed,
    count(*) FILTER (WHERE m.hash = s.hash) AS unchanged
FROM m FULL OUTER JOIN snap.snapshot s ON m.key = s.key
"""


def _attach(con, warehouse: str, snapshot: str, read_only: bool) -> None:  # type: ignore[no-untyped-def]
    con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    con.execute(f"ATTACH '{snapshot}' AS snap{' (READ_ONLY)' if read_only else ''}")


def baseline_snapshot(warehouse: str, snapshot: str) -> dict:
    import duckdb

    con = duckdb.connect(":memory:")
    _attach(con, warehouse, snapshot, read_only=False)
    con.execute(SNAPSHOT_SQL)
    rows = con.execute("SELECT count(*) FROM snap.snapshot").fetchone()[0]  # type: ignore[index]
    con.close()
    return {"rows": rows}


def baseline_diff(warehouse: str, snapshot: str) -> dict:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(":memory:")
    _attach(con, warehouse, snapshot, read_only=True)
    added, changed, removed, unchanged = con.execute(DIFF_SQL).fetchone()  # type: ignore[misc]
    con.close()
    return {
        "seconds": time.perf_counter() - started,
        "result": {"added": added, "changed": changed, "removed": removed, "unchanged": unchanged},
    }


def baseline_post(url: str, warehouse: str, batch_size: int, concurrency: int) -> dict:
    """The bare minimum of a delivery: rows → JSON bodies of the wire format → POST, N in flight.

    Each record's JSON is made by DuckDB (to_json of the key and of a struct of the columns:
    the fast way a bare script would do it), joined into bodies of batch_size records in Python."""
    import asyncio

    import duckdb
    import httpx

    struct = ", ".join(f"c{i}: c{i}" for i in range(1, 11))
    started = time.perf_counter()
    con = duckdb.connect(":memory:")
    con.execute(f"ATTACH '{warehouse}' AS wh (READ_ONLY)")
    records = [
        r
        for (r,) in con.execute(
            f"""SELECT '{{"key":' || to_json(c1::VARCHAR) || ',"fields":'
                   || to_json({{{struct}}}) || '}}'
        FROM wh.model ORDER BY c1"""
        ).fetchall()
    ]
    con.close()
    head = '{"sync":"model","object":null,"operation":"upsert","records":['
    bodies = [
        (head + ",".join(records[i : i + batch_size]) + "]}").encode()
        for i in range(0, len(records), batch_size)
    ]
    encoded = time.perf_counter()

    async def post_all() -> int:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        slots = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:

            async def post(body: bytes) -> int:
                async with slots:
                    response = await client.post(
                        url, content=body, headers={"Content-Type": "application/json"}
                    )
                    response.raise_for_status()
                    return 1

            return sum(await asyncio.gather(*(post(b) for b in bodies)))

    requests = asyncio.run(post_all())
    finished = time.perf_counter()
    return {
        "seconds": finished - started,
        "read_encode_seconds": encoded - started,
        "post_seconds": finished - encoded,
        "requests": requests,
        "records": len(records),
    }


def engine_plan(root: str) -> dict:
    from reverse_etl.project.loader import Project
    from reverse_etl.run.pipeline import plan_sync

    started = time.perf_counter()
    result = plan_sync(Project.open(root), "model")
    return {"seconds": time.perf_counter() - started, "result": result}


def engine_run(root: str) -> dict:
    # Like the baseline, import what the run uses before the clock starts (run_sync imports
    # its delivery modules lazily, so that `plan` never pays for them; the CLI figure counts
    # every import).
    import httpx  # noqa: F401

    import reverse_etl.delivery.engine  # noqa: F401
    from reverse_etl.project.loader import Project
    from reverse_etl.run.pipeline import run_sync

    started = time.perf_counter()
    result = run_sync(Project.open(root), "model")
    return {"seconds": time.perf_counter() - started, "result": result.as_dict()}


def main(argv: list[str]) -> None:
    mode, *args = argv
    if mode == "plan":
        out = engine_plan(*args)
    elif mode == "run":
        out = engine_run(*args)
    elif mode == "snapshot":
        out = baseline_snapshot(*args)
    elif mode == "diff":
        out = baseline_diff(*args)
    elif mode == "post":
        url, warehouse, batch, conc = args
        out = baseline_post(url, warehouse, int(batch), int(conc))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
