"""`reverse-etl demo`: the bundled example, end to end, against a receiver started on 127.0.0.1.

It copies the example project to a new folder, builds its warehouse from warehouse.sql, runs
every sync, changes a few rows in the warehouse and runs again: the second run sends only what
changed."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from ..destinations.webhook.receiver import WebhookReceiver
from ..errors import ReverseEtlError
from ..project.loader import Project
from ..run.pipeline import run_sync
from .output import run_table, stdout

EXAMPLE_FILES = ("config.toml", "warehouse.sql", "syncs", "destinations")
CHANGES = """
update users set plan = 'enterprise' where user_id in (3, 6, 9);   -- 3 changed
insert into users select 1000 + i, 'new' || i || '@example.com', 'New user ' || i, 'free', 1,
    0, timestamp '2026-01-01 09:00:00', true from range(1, 3) t(i);  -- 2 added
delete from users where user_id = 11;                                -- 1 removed
"""


def example_dir() -> Path:
    """The example project: inside the installed package, else the source checkout's root."""
    package = Path(__file__).resolve().parents[1]  # reverse_etl/
    packaged = package / "example"  # in a wheel; in a checkout, the repository's own files
    return packaged if packaged.is_dir() else package.parent


def run_demo(project_dir: str | None, as_json: bool, emit: Callable[[dict[str, Any]], None]) -> int:
    target = (
        Path(project_dir) if project_dir else Path(tempfile.mkdtemp(prefix="reverse-etl-demo-"))
    )
    _copy_example(target)
    say = (lambda *_: None) if as_json else stdout.print
    say(f"[bold]reverse-etl demo[/bold] in {target}")
    with WebhookReceiver() as receiver:
        os.environ["CRM_WEBHOOK_URL"] = receiver.url
        project = Project.open(target)
        worst = 0
        for round_, title in enumerate(
            (
                "first run: every row is new",
                "second run, after changing 3 users, adding 2, deleting 1",
            )
        ):
            if round_ == 1:
                with duckdb.connect(str(target / "warehouse.duckdb")) as con:
                    con.execute(CHANGES)
            before = len(receiver.requests), receiver.records_received()
            results = [run_sync(project, name) for name in project.sync_names()]
            worst = max([worst] + [r.exit_code for r in results])
            requests = len(receiver.requests) - before[0]
            records = receiver.records_received() - before[1]
            if as_json:
                for result in results:
                    emit({**result.as_dict(), "round": round_ + 1})
                continue
            say(f"\n[bold]{title}[/bold]")
            run_table([r.as_dict() for r in results])
            say(f"the receiver got {records:,} records in {requests:,} requests")
    say(f"\nexplore it: reverse-etl runs --project {target}")
    return worst


def _copy_example(target: Path) -> None:
    """Lay the example out in `target` (an empty folder, or the example project itself) with a
    fresh warehouse and no state."""
    source = example_dir()
    if target.is_dir() and any(target.iterdir()) and not (target / "warehouse.sql").is_file():
        raise ReverseEtlError(
            f"the demo needs an empty folder or the example project; {target} has other files"
        )
    target.mkdir(parents=True, exist_ok=True)
    for name in EXAMPLE_FILES:
        src, dst = source / name, target / name
        if dst.exists() and dst.resolve() == src.resolve():
            continue
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            shutil.copy2(src, dst)
    warehouse = target / "warehouse.duckdb"
    warehouse.unlink(missing_ok=True)
    state = target / ".reverse_etl"
    if state.exists():
        shutil.rmtree(state)
    with duckdb.connect(str(warehouse)) as con:
        con.execute((target / "warehouse.sql").read_text())
