"""The Python API, for orchestrators (Airflow, Dagster, Prefect) that trigger syncs themselves.

    import reverse_etl
    result = reverse_etl.run_sync("/srv/analytics-syncs", "active_users")
    result["status"], result["delivered"]

Each function returns the fields `reverse-etl run --json` (or `plan --json`) prints, typed as
RunSummary (or PlanSummary) for type checkers, and raises the typed errors of
reverse_etl.errors where the CLI exits with code 2."""

# (No `from __future__ import annotations`: TypedDict reads NotRequired from evaluated
# annotations only, so that RunSummary.__required_keys__ is right at run time.)
from pathlib import Path
from typing import Literal, NotRequired, TypedDict, cast

from .errors import ReverseEtlError
from .logs import blanked_records
from .project.loader import Project
from .run.pipeline import plan_sync as _plan
from .run.pipeline import run_sync as _run

RunStatus = Literal["success", "partial", "held", "error"]
"""How a run ended (docs/cli.md): "success"; "partial", some records rejected, failed or
invalid; "held", a safety rail stopped it before it sent anything; "error", it stopped
(run_sync raises then; the error's `.result` has this status)."""


class RunSummary(TypedDict):
    """What `reverse-etl run NAME --json` prints for one run, and run_sync() returns.

    The counts are of rows of the model (rows, added, changed, removed, unchanged, invalid)
    and of records sent (delivered, rejected, failed); `duration_seconds` is the run's
    wall-clock time in seconds, to the millisecond. `error` (status "error") and `reason`
    (status "held") are present only then."""

    sync: str
    run_id: str  # 16 hex digits, as `reverse-etl runs` lists it
    status: RunStatus
    rows: int
    added: int
    changed: int
    removed: int
    unchanged: int
    invalid: int
    delivered: int
    rejected: int
    failed: int
    duration_seconds: float
    error: NotRequired[str]
    reason: NotRequired[str]


class PlanSummary(TypedDict):
    """What `reverse-etl plan NAME --json` prints, and plan_sync() returns: the counts of rows
    a run now would find. `note` is present when the sync now points at another target (it
    would start over), `reason` when a run now would be held."""

    sync: str
    rows: int
    added: int
    changed: int
    removed: int
    unchanged: int
    invalid: int
    note: NotRequired[str]
    reason: NotRequired[str]


def _project(project: str | Path | Project | None) -> Project:
    return project if isinstance(project, Project) else Project.open(project)


def run_sync(
    project: str | Path | Project | None,
    name: str,
    *,
    full_resync: bool = False,
    force: bool = False,
    retry_quarantined: bool = False,
) -> RunSummary:
    """Run one sync now, as `reverse-etl run NAME --json` does; its fields, as a dict.

    Status "success" and "partial" (some records rejected, failed or invalid: `reverse-etl
    rejected NAME` lists them) and "held" (stopped by a safety rail: see `approve`) return.
    Raises, where the CLI exits with 2:
      ProjectError       the project's files are wrong (`.problems`: each file and line)
      SyncRunningError   another process (the daemon, a CLI) is running this sync
      WarehouseError     the warehouse cannot be read, or the model fails there
      CredentialsError   the destination refused the credentials
      DestinationError   the destination cannot be reached or cannot take data
      Interrupted        this process is stopping (a signal)
      StateError         the state folder cannot be read or written
    An error raised after the run started carries the run's fields as `.result` (it is in
    the run history too)."""
    opened = _project(project)
    opened.sync(name)  # loads its destination: its secrets are known from here on
    with blanked_records(opened.secrets()):  # the host's log handlers know no secret
        result = _run(
            opened,
            name,
            full_resync=full_resync,
            force=force,
            retry_quarantined=retry_quarantined,
            holder="reverse_etl.run_sync()",
        )
    # The same dict the CLI prints; tests/test_api.py checks it against RunSummary.
    fields = cast(RunSummary, result.as_dict())
    if result.status == "error":
        error = result.exception or ReverseEtlError(result.error or "the run failed")
        error.result = fields  # type: ignore[attr-defined]
        raise error
    return fields


def plan_sync(project: str | Path | Project | None, name: str) -> PlanSummary:
    """What a run would do now (`reverse-etl plan NAME --json`): sends nothing, changes nothing."""
    opened = _project(project)
    opened.sync(name)
    with blanked_records(opened.secrets()):
        return cast(PlanSummary, _plan(opened, name))
