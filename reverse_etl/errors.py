"""The errors reverse-etl raises, typed by what the caller should do next.

ReverseEtlError                 anything the engine reports to a user (exit 2 from the CLI)
├── ProjectError                the project's files are wrong: one Problem per file and line
├── StateError                  the state folder cannot be read or written
├── WarehouseError              the warehouse cannot be reached or the model failed to run
│   └── ModelFailed             the warehouse refused the model (its message keeps `LINE n:`)
├── SyncRunningError            another process is running this sync
├── Interrupted                 the process was asked to stop (a signal) before the run ended
└── DestinationError            the destination cannot take data
    └── CredentialsError        it refused our credentials (401/403): stop sending to it

DestinationSignal               what an adapter raises to tell the engine what to do next with a
                                batch: the two above and the signals of reverse_etl.destinations
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the project, where it is, and what to do."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "message": self.message}


class ReverseEtlError(Exception):
    """An error a user can act on; its message says what and where."""


class DestinationSignal(Exception):
    """Raised by a destination adapter for a whole batch, typed by what the engine does next
    (the tree is in reverse_etl.destinations.signals)."""


class ProjectError(ReverseEtlError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __reduce__(self) -> tuple[Any, ...]:
        # made again from its problems, not from its message (pickled: a process pool's)
        return type(self), (self.problems,), self.__dict__


class StateError(ReverseEtlError):
    pass


class WarehouseError(ReverseEtlError):
    pass


class ModelFailed(WarehouseError):
    pass


class SyncRunningError(ReverseEtlError):
    pass


class Interrupted(ReverseEtlError):
    pass


class DestinationError(ReverseEtlError, DestinationSignal):
    """The destination cannot take data (a spent daily quota, a table that is not there).
    Raised by an adapter: the engine sends nothing more to it in this run, the records not
    delivered stay owed, and the run ends in error with this message."""


class CredentialsError(DestinationError):
    """The destination refused our credentials (401/403). Raised by an adapter: the engine
    stops sending to it, as for a DestinationError, saying the credentials were refused."""


def state_advice(error: str) -> str:
    """What to do about a state file the system would not write or read (docs/state.md,
    "When the state is in trouble"), from the error's text; "" when the text does not say."""
    lowered = error.lower()
    if any(w in lowered for w in ("read-only", "readonly", "permission denied", "access denied")):
        return "the state folder must be writable by this user ([state] path)"
    if any(w in lowered for w in ("no space", "disk is full", "database or disk is full")) or (
        "file too large" in lowered or "quota" in lowered
    ):
        return (
            "free some disk space, then run again: what was delivered is kept and recorded by "
            "the next run"
        )
    return ""
