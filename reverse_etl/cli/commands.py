"""The `reverse-etl` command: parse, call, print, exit code. Nothing else lives here.

Heavy modules (duckdb, httpx, pydantic, rich) are imported inside the commands that use them,
so `reverse-etl --help` answers at once."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click

EXIT_OK, EXIT_UNDELIVERED, EXIT_FAILED = 0, 1, 2


class Context:
    def __init__(self, project_dir: str | None, as_json: bool, verbose: int) -> None:
        self.project_dir = project_dir
        self.as_json = as_json
        self.verbose = verbose
        self._project: Any = None
        self._all_loaded = False
        self._hiding: tuple[dict[str, str], Callable[[str], str]] | None = None

    def project(self) -> Any:
        from ..project.loader import Project

        self._project, self._all_loaded = Project.open(self.project_dir), False
        return self._project

    def secrets(self) -> dict[str, str]:
        """Every secret of the project: its destinations are loaded for theirs once, so that
        even `runs` or a broken sync's error blanks a token it never needed."""
        if self._project is None:
            return {}
        if not self._all_loaded:
            self._all_loaded = True
            from contextlib import suppress

            from ..errors import ReverseEtlError

            for name in self._project.destination_names():
                with suppress(ReverseEtlError):  # a broken file blanks its own problems
                    self._project.destination(name)
        return self._project.secrets()  # type: ignore[no-any-return]

    def hidden(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`rows` with every text value blanked (a table prints what was stored, perhaps
        before a secret was known as one)."""
        return [{k: self.hide(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]

    def hide(self, text: str) -> str:
        """`text` with every secret blanked: nothing the CLI prints shows one (see secrets.py)."""
        from ..secrets import blanker

        secrets = self.secrets()
        if self._hiding is None or self._hiding[0] != secrets:  # compiled again only then
            self._hiding = (secrets, blanker(secrets))
        return self._hiding[1](text)

    def emit(self, obj: dict[str, Any]) -> None:
        click.echo(self.hide(json.dumps(obj, default=str)))

    def error(self, text: str) -> None:
        click.echo(self.hide(f"error: {text}"), err=True)


def command(
    group: click.Group, name: str, **kwargs: Any
) -> Callable[[Callable[..., int | None]], Any]:
    """A subcommand with the options every command takes, and errors turned into exit 2."""

    def decorate(func: Callable[..., int | None]) -> Any:
        @group.command(name, **kwargs)
        @click.option(
            "--project",
            "project_dir",
            metavar="DIR",
            envvar="REVERSE_ETL_PROJECT",
            help="The project folder (default: $REVERSE_ETL_PROJECT, else .).",
        )
        @click.option("--json", "as_json", is_flag=True, help="Machine-readable output on stdout.")
        @click.option("-v", "--verbose", count=True, help="More detail on stderr.")
        @wraps(func)
        def wrapper(project_dir: str | None, as_json: bool, verbose: int, **options: Any) -> None:
            from ..errors import ProjectError, ReverseEtlError
            from ..logs import log_to_stderr

            ctx = Context(project_dir, as_json, verbose)
            log_to_stderr(verbose, ctx.secrets)
            try:
                code = func(ctx, **options)
            except ProjectError as exc:
                for problem in exc.problems:
                    ctx.error(str(problem))
                if as_json:
                    ctx.emit({"error": str(exc), "errors": [p.as_dict() for p in exc.problems]})
                code = EXIT_FAILED
            except ReverseEtlError as exc:
                ctx.error(str(exc))
                if as_json:
                    ctx.emit({"error": str(exc)})
                code = EXIT_FAILED
            sys.exit(code or EXIT_OK)

        return wrapper

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="reverse-etl")
def main() -> None:
    """reverse-etl: sync warehouse models to the tools your teams use.

    Each syncs/NAME.sql is a model; each run sends only what changed since the last delivery."""


@command(main, "init")
@click.argument("directory", type=click.Path(file_okay=False))
def init_command(ctx: Context, directory: str) -> int:
    """Scaffold a new project in DIRECTORY."""
    from ..project.scaffold import scaffold

    try:
        created = scaffold(directory)
    except OSError as exc:
        ctx.error(f"cannot create the project in {directory}: {exc.strerror or exc}")
        return EXIT_FAILED
    if ctx.as_json:
        ctx.emit({"project": directory, "created": created})
    else:
        for path in created:
            click.echo(f"created {path}")
        click.echo(f"next: cd {directory} && reverse-etl validate")
    return EXIT_OK


@command(main, "validate")
def validate_command(ctx: Context) -> int:
    """Check config, every sync and destination; each problem names its file and line."""
    from ..errors import ProjectError
    from ..project.validate import validate_project

    try:
        problems = validate_project(ctx.project())
    except ProjectError as exc:  # e.g. no such project folder: still the validate shape
        problems = exc.problems
    if ctx.as_json:
        ctx.emit({"ok": not problems, "errors": [p.as_dict() for p in problems]})
    else:
        for problem in problems:
            ctx.error(str(problem))
        if not problems:
            click.echo("ok: the project is valid")
    return EXIT_FAILED if problems else EXIT_OK


def _sync_names(ctx: Context, project: Any, names: tuple[str, ...], all_syncs: bool) -> list[str]:
    if all_syncs:
        return list(project.sync_names())
    if not names:
        raise click.UsageError("name one or more syncs, or pass --all")
    return [_valid_sync(name) for name in dict.fromkeys(names)]


def _valid_sync(name: str) -> str:
    """The name, if it may name a sync at all (a name is never a path or a pattern)."""
    from ..project.loader import RENAME
    from ..project.names import check_name

    return check_name("sync", name, RENAME)


def _known_sync(project: Any, name: str) -> None:
    """A sync with a file or with state (a sync file may be broken, or gone, yet have history)."""
    from ..diff.local import snapshot_path
    from ..errors import Problem, ProjectError

    _valid_sync(name)
    if name in project.sync_names() or snapshot_path(project.state_dir, name).exists():
        return
    known = ", ".join(project.sync_names()) or "none"
    raise ProjectError(
        [Problem(f"syncs/{name}.sql", None, f"no sync named {name!r} (syncs: {known})")]
    )


@command(main, "plan")
@click.argument("syncs", nargs=-1)
@click.option("--all", "all_syncs", is_flag=True, help="Every sync of the project.")
@click.option(
    "--show-sql", is_flag=True, help="Print the SQL that runs in the warehouse (transpiled)."
)
def plan_command(ctx: Context, syncs: tuple[str, ...], all_syncs: bool, show_sql: bool) -> int:
    """Dry run: what would be added, changed, removed. Sends nothing, changes no state."""
    from ..errors import ReverseEtlError
    from ..run.pipeline import plan_sync

    project = ctx.project()
    code, plans = EXIT_OK, []
    for name in _sync_names(ctx, project, syncs, all_syncs):
        try:
            plan = plan_sync(project, name)
            if show_sql:
                plan["sql"] = project.sync(name).model.sql.strip()
        except ReverseEtlError as exc:
            for line in str(exc).splitlines():
                ctx.error(f"{name}: {line}")
            plan, code = {"sync": name, "error": str(exc)}, EXIT_FAILED
        plans.append(plan)
        if ctx.as_json:
            ctx.emit(plan)
    if not ctx.as_json:
        from .output import plan_table  # rich, only for people

        for plan in plans:
            if "sql" in plan:
                click.echo(f"-- the SQL that runs for {plan['sync']}:\n{plan['sql']}\n")
        plan_table([p for p in plans if "error" not in p])
        for plan in plans:
            for said in ("note", "reason"):
                if said in plan:
                    click.echo(f"{plan['sync']}: {plan[said]}")
    return code


@command(main, "run")
@click.argument("syncs", nargs=-1)
@click.option("--all", "all_syncs", is_flag=True, help="Every sync of the project.")
@click.option("--full-resync", is_flag=True, help="Send every valid row again (and deletes owed).")
@click.option("--force", is_flag=True, help="Past the safety rails (see `approve`).")
def run_command(
    ctx: Context, syncs: tuple[str, ...], all_syncs: bool, full_resync: bool, force: bool
) -> int:
    """Run syncs now: send what changed since the last delivery."""
    project = ctx.project()
    names = _sync_names(ctx, project, syncs, all_syncs)
    return _run_syncs(ctx, project, names, full_resync=full_resync, force=force)


@command(main, "approve")
@click.argument("syncs", nargs=-1, required=True)
def approve_command(ctx: Context, syncs: tuple[str, ...]) -> int:
    """Release held syncs: run them now, past the safety rails that held them. A sync whose
    last run was not held has nothing to approve (`run --force` goes past the rails)."""
    from ..state.history import History

    project = ctx.project()
    names = [_valid_sync(name) for name in dict.fromkeys(syncs)]
    history = History(project.state_dir)
    try:
        last = {name: history.runs(name, limit=1) for name in names}
    finally:
        history.close()
    held = [name for name in names if last[name] and last[name][0]["status"] == "held"]
    for name in names:
        if name not in held:
            status = last[name][0]["status"] if last[name] else "none: it never ran"
            ctx.error(
                f"{name}: nothing to approve: its last run was not held (it was {status}); "
                "`reverse-etl run --force` runs past the safety rails"
            )
    code = _run_syncs(ctx, project, held, full_resync=False, force=True) if held else EXIT_OK
    return code if len(held) == len(names) else EXIT_FAILED


@command(main, "retry")
@click.argument("syncs", nargs=-1, required=True)
def retry_command(ctx: Context, syncs: tuple[str, ...]) -> int:
    """Send quarantined records again now (the safety rails still apply)."""
    project = ctx.project()
    names = [_valid_sync(name) for name in dict.fromkeys(syncs)]
    return _run_syncs(ctx, project, names, full_resync=False, force=False, retry=True)


def _run_syncs(
    ctx: Context,
    project: Any,
    names: list[str],
    full_resync: bool,
    force: bool,
    retry: bool = False,
) -> int:
    from concurrent.futures import ThreadPoolExecutor

    from ..errors import ReverseEtlError
    from ..run.pipeline import run_sync
    from .output import Progress

    progress = Progress(enabled=not ctx.as_json and sys.stderr.isatty())

    stopped: list[str] = []  # why this command stops: the syncs not started yet never start

    def one(name: str) -> dict[str, Any]:
        if stopped:
            return {
                "sync": name,
                "status": "error",
                "error": f"not started: {stopped[0]}",
                "_exit": EXIT_FAILED,
            }
        try:
            result = run_sync(
                project,
                name,
                full_resync=full_resync,
                force=force,
                retry_quarantined=retry,
                on_progress=progress.update,
            )
        except ReverseEtlError as exc:
            return {"sync": name, "status": "error", "error": str(exc), "_exit": EXIT_FAILED}
        return {**result.as_dict(), "_exit": result.exit_code}

    with (
        _stopped_by_signals(stopped),
        progress,
        ThreadPoolExecutor(project.settings.scheduler.max_concurrent_syncs) as pool,
    ):
        results = []
        for result in pool.map(one, names):
            results.append(result)
            if ctx.as_json:
                ctx.emit({k: v for k, v in result.items() if k != "_exit"})
    _report_runs(ctx, results)
    return max(r["_exit"] for r in results) if results else EXIT_OK


@contextmanager
def _stopped_by_signals(stopped: list[str]) -> Iterator[None]:
    """Meanwhile SIGTERM and SIGINT stop the runs gracefully: no new batch, what was delivered
    is acknowledged, then the command exits (code 2). Why is appended to `stopped`. A second
    signal, while a request that hangs is awaited, exits at once (code 2): what was
    acknowledged is kept and the rest is sent by the next run, as after a kill."""
    from ..run.pipeline import shutdown

    def interrupted(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if stopped:  # the user insists
            sys.stderr.write(
                f"error: {name} again: exiting now; what was acknowledged is kept, the rest "
                "is sent by the next run\n"
            )
            sys.stderr.flush()
            os._exit(EXIT_FAILED)  # the runs' threads cannot be stopped; the state survives
        stopped.append(f"interrupted by {name}")
        sys.stderr.write(
            f"{name}: stopping once the requests in flight are answered (again: exit now)\n"
        )
        sys.stderr.flush()
        shutdown(stopped[0])

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report_runs(ctx: Context, results: list[dict[str, Any]]) -> None:
    """Each run's error or hold on stderr, blanked; the table of runs unless --json."""
    from .output import run_table

    for result in results:
        for key in ("error", "reason"):
            for line in (result.get(key) or "").splitlines():
                text = f"{'error' if key == 'error' else 'held'}: {result['sync']}: {line}"
                click.echo(ctx.hide(text), err=True)
    if not ctx.as_json:
        run_table(results)


@command(main, "runs")
@click.argument("sync", required=False)
@click.option(
    "--limit", default=20, show_default=True, type=click.IntRange(min=1, max=1_000_000)
)
def runs_command(ctx: Context, sync: str | None, limit: int) -> int:
    """Run history, newest first."""
    from ..state.history import History
    from .output import runs_table

    project = ctx.project()
    if sync is not None:
        _valid_sync(sync)
    history = History(project.state_dir)
    try:
        runs = history.runs(sync, limit)
    finally:
        history.close()
    if ctx.as_json:
        for run in runs:
            ctx.emit(run)
    else:
        runs_table(ctx.hidden(runs))
    return EXIT_OK


@command(main, "rejected")
@click.argument("sync")
def rejected_command(ctx: Context, sync: str) -> int:
    """Records not delivered (rejected, invalid, still failing), with reasons."""
    from ..state.history import History
    from ..state.ledger import Ledger
    from .output import rejected_table

    project = ctx.project()
    _known_sync(project, sync)
    history = History(project.state_dir)
    try:
        records = Ledger(history, sync).entries()
    finally:
        history.close()
    if ctx.as_json:
        for record in records:
            ctx.emit({k: record[k] for k in ("sync", "key", "reason", "error", "attempts")})
    else:
        rejected_table(sync, ctx.hidden(records))
    return EXIT_OK


@command(main, "reset")
@click.argument("sync")
def reset_command(ctx: Context, sync: str) -> int:
    """Forget what was delivered: the next run sends every row again."""
    from ..state.reset import reset_sync

    project = ctx.project()
    _known_sync(project, sync)
    dropped = reset_sync(project, sync)
    if ctx.as_json:
        ctx.emit({"sync": sync, "reset": True, "dropped_table": dropped})
    else:
        if dropped:
            click.echo(f"{sync}: dropped its snapshot table {dropped} in the warehouse")
        click.echo(f"{sync}: snapshot forgotten; the next run sends every row")
    return EXIT_OK


@command(main, "destinations")
def destinations_command(ctx: Context) -> int:
    """Every destination type: what it can do, its settings and their defaults."""
    from ..destinations.catalog import catalog

    described, broken = catalog()
    for line in broken:
        ctx.error(line)
    if ctx.as_json:
        for item in described:
            ctx.emit(item)
    else:
        from .output import destinations_table

        destinations_table(described)
    return EXIT_FAILED if broken else EXIT_OK


@command(main, "check")
@click.argument("destinations", nargs=-1, required=True)
def check_command(ctx: Context, destinations: tuple[str, ...]) -> int:
    """Test destinations' connections and credentials, without sending any data."""
    from ..delivery.check import try_connection
    from ..delivery.ratelimit import limiter_for
    from ..errors import ReverseEtlError

    project = ctx.project()
    code = EXIT_OK
    for name in dict.fromkeys(destinations):
        spec = project.destination(name)
        result: dict[str, Any] = {"destination": name, "type": spec.adapter.type}
        settings = spec.settings  # its requests count against the limits its runs share
        limiter = limiter_for(
            str(project.root),
            name,
            settings.rate_windows(),
            project.state_dir,
            settings.max_retry_after_seconds,
        )
        try:
            result.update(ok=True, detail=ctx.hide(try_connection(spec, limiter)))
        except ReverseEtlError as exc:
            message = ctx.hide(str(exc))
            result.update(ok=False, error=message)
            ctx.error(f"{name}: {message}")
            code = EXIT_FAILED
        if ctx.as_json:
            ctx.emit(result)
        elif result["ok"]:
            click.echo(f"ok: {name}: {result['detail']}")
    return code


@command(main, "daemon")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One line per event, as text or JSON (--json: JSON on stdout).",
)
def daemon_command(ctx: Context, log_format: str) -> int:
    """Run every sync on its schedule (and after the syncs it follows) until SIGTERM/SIGINT.

    SIGHUP, or any change to syncs/ and destinations/, reloads them without a restart. Status
    at http://127.0.0.1:8731/ (/healthz, /syncs, /metrics) unless [daemon] says otherwise."""
    from ..daemon.service import run_daemon
    from ..logs import configure

    stream = sys.stdout if ctx.as_json else sys.stderr
    formatter = configure("json" if ctx.as_json else log_format, stream, ctx.verbose)
    return run_daemon(ctx.project_dir, formatter.hide)


@command(main, "demo")
def demo_command(ctx: Context) -> int:
    """A complete run on the bundled example, against a local receiver, with no setup."""
    from .demo import run_demo

    return run_demo(ctx.project_dir, ctx.as_json, ctx.emit)
