"""Logs (the daemon's, one line per event, as text or JSON; the CLI's -v lines), secrets blanked.

Events are logged with `extra` fields (event, sync, run_id, counts...); the JSON format writes
them as keys, the text format as key=value after the message."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

from .secrets import blanker

# The attributes every LogRecord has: anything else on a record came in through `extra`.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[str, str] = {}  # value: what to write instead
        self.redact: Callable[[str], str] = blanker(self.secrets)

    def hide(self, secrets: dict[str, str]) -> None:
        """Blank these values (keys) out of every line from now on (see Project.secrets)."""
        self.secrets = self.secrets | secrets
        self.redact = blanker(self.secrets)  # compiled once, not for every line

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        return {k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}

    def timestamp(self, record: logging.LogRecord) -> str:
        moment = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", moment) + f".{int(record.msecs):03d}Z"


class JsonFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        line.update(self.fields(record))
        if record.exc_info:
            line["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str)


class TextFormatter(_Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = self.fields(record)
        fields.pop("event", None)
        extra = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if v is not None)
        line = f"{self.timestamp(record)} {record.levelname:<7} {self.redact(record.getMessage())}"
        if extra:
            line += f"  {extra}"
        if record.exc_info:
            line += "\n" + self.redact(self.formatException(record.exc_info))
        return line


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if not text or " " in text or '"' in text else text


def configure(log_format: str, stream: TextIO = sys.stderr, verbose: int = 0) -> _Formatter:
    """Send every log line to `stream` in `log_format` (text | json); the formatter returned
    is told the secrets to blank out (see hide())."""
    formatter: _Formatter = JsonFormatter() if log_format == "json" else TextFormatter()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    # Per-batch and per-job chatter only with -v: the daemon logs each run's start and end.
    quiet = logging.INFO if verbose else logging.WARNING
    for name in ("apscheduler", "httpx", "httpcore", "reverse_etl.runner"):
        logging.getLogger(name).setLevel(quiet)
    return formatter


class _Blanking(logging.Formatter):
    """The CLI's -v lines, with the secrets `secrets()` names blanked (asked at each line: a
    project learns secrets as it loads its files; the blanker is rebuilt only when they change)."""

    def __init__(self, fmt: str, secrets: Callable[[], Mapping[str, str]]) -> None:
        super().__init__(fmt)
        self.secrets = secrets
        self.known: dict[str, str] = {}
        self.redact = blanker({})

    def format(self, record: logging.LogRecord) -> str:
        current = self.secrets()
        if current != self.known:
            self.known, self.redact = dict(current), blanker(current)
        return self.redact(super().format(record))


_cli_handler: logging.Handler | None = None


def log_to_stderr(verbose: int, secrets: Callable[[], Mapping[str, str]]) -> None:
    """The CLI's logging: warnings on stderr, INFO with -v, DEBUG with -vv, secrets blanked."""
    global _cli_handler
    root = logging.getLogger()
    if _cli_handler is not None:  # one CLI call after another in one process (tests)
        root.removeHandler(_cli_handler)
    _cli_handler = logging.StreamHandler(sys.stderr)
    _cli_handler.setFormatter(_Blanking("%(asctime)s %(levelname)s %(name)s: %(message)s", secrets))
    root.addHandler(_cli_handler)
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


class _BlankRecords(logging.Filter):
    """Blanks secrets out of each record it sees, before any handler formats it."""

    def __init__(self, hide: Callable[[str], str]) -> None:
        super().__init__()
        self.hide = hide

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.hide(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.hide(record.exc_text)
        return True


# Every logger whose records may carry a destination's text or URL.
ENGINE_LOGGERS = (
    "reverse_etl.runner",
    "reverse_etl.delivery",
    "reverse_etl.warehouse",
    "reverse_etl.warehouse_state",
    "reverse_etl.destinations",
    "httpx",  # logs each request's URL
)


@contextmanager
def blanked_records(secrets: Mapping[str, str]) -> Iterator[None]:
    """While the block runs, the engine's log records have these secrets blanked whoever
    handles them: the Python API's hosts (Airflow, Dagster, Prefect) log with handlers of
    their own, which know no secret."""
    blanking = _BlankRecords(blanker(secrets))
    names = {
        *ENGINE_LOGGERS,
        *(n for n in logging.root.manager.loggerDict if n.startswith("reverse_etl.")),
    }
    loggers = [logging.getLogger(name) for name in sorted(names)]
    for logger in loggers:
        logger.addFilter(blanking)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(blanking)
