"""What the engine should do about a PostgreSQL failure: a connection that could not be made,
or a statement the server refused (by its SQLSTATE), as SplitBatch, Retryable, Unreachable,
CredentialsError, DestinationError or BatchFailed; and the messages, with the dsn's secrets
scrubbed out."""

from __future__ import annotations

import re

from ...errors import CredentialsError, DestinationError
from ...secrets import blank_dsn
from ..base import ERROR_TEXT_LIMIT, BatchFailed, Retryable, SplitBatch, Unreachable

# Connection failures carry no SQLSTATE in libpq/psycopg (psycopg issues #242 and #1188), so
# refused credentials are told by libpq's and the server's (English) messages.
_REFUSED_LOGIN = (
    "password authentication failed",
    "authentication failed for user",
    "no pg_hba.conf entry",
    "pg_hba.conf rejects connection",
    "is not permitted to log in",
    "no password supplied",
)
# libpq's words for a connection string or TLS setting it cannot use: no retry will help.
_BAD_DSN = ("connection is bad", "invalid connection option", "does not support ssl")

# SQLSTATEs (https://www.postgresql.org/docs/current/errcodes-appendix.html) by what to do.
_RECORD_CLASSES = ("22", "23")  # data exception, integrity constraint violation
_RECORD_STATES = {"21000", "27000", "P0001"}  # one row twice, trigger-made change, RAISE
_RETRY_CLASSES = ("08", "40", "53", "57", "58")  # connection, rollback, resources, operator
_RETRY_STATES = {"55P03", "55006"}  # lock not available, object in use
_CREDENTIAL_STATES = {"28000", "28P01"}


def connect_error(exc: BaseException, dsn: str) -> Exception:
    """What a connection that could not be made (or broke) means: no SQLSTATE to go by."""
    import psycopg

    message = scrub(str(exc).strip(), dsn)
    lowered = message.lower()
    if re.search(r'database ".*" does not exist', lowered):
        return DestinationError(f"{message}: fix dbname in the dsn")
    if any(fragment in lowered for fragment in _REFUSED_LOGIN) or re.search(
        r'role ".*" does not exist', lowered
    ):
        return CredentialsError(message)
    if isinstance(exc, psycopg.ProgrammingError) or any(
        fragment in lowered for fragment in _BAD_DSN
    ):
        return DestinationError(f"the dsn cannot be used: {message}")
    # Refused, timed out, server restarting: retried with backoff; when the retries run
    # out, the engine stops the run ("unreachable").
    return Unreachable(message)


def batch_error(
    exc: BaseException, *, where: str, operation: str, user: str, dsn: str
) -> Exception:
    """What the engine should do about a statement that failed (`where`: the table, for
    messages; `user`: who we connect as, for GRANT hints)."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
    state = exc.sqlstate
    message = scrub(_pg_message(exc), dsn)
    if state is None:  # the connection broke (no answer from the server)
        return Retryable(message)
    if state in _CREDENTIAL_STATES:
        return CredentialsError(message)
    if state.startswith(_RECORD_CLASSES) or state in _RECORD_STATES:
        return SplitBatch(message)
    if state == "42501" and "row-level security" in message:
        return SplitBatch(message)  # a row the table's policies refuse
    if state.startswith(_RETRY_CLASSES) or state in _RETRY_STATES:
        return Retryable(message)
    if state == "42501":
        grant = {"upsert": "INSERT, UPDATE", "insert": "INSERT", "update": "UPDATE"}.get(
            operation, operation.upper()
        )
        return DestinationError(
            f"{where}: {message}: GRANT SELECT, {grant} ON {where} TO {user}"
            if operation in ("upsert", "insert", "update", "delete")
            else f"{where}: {message}"
        )
    if state == "25006":
        return DestinationError(
            f"{message}: the server is read-only (a standby?): point the dsn at the primary"
        )
    if state in ("42P01", "42703", "3F000"):
        return DestinationError(
            f"{where}: {message}: the table changed while the run was sending; run the sync again"
        )
    if state.startswith(("42", "0A", "3D", "3F")):
        return DestinationError(f"{where}: {message}")
    return BatchFailed(message)


def scrub(message: str, dsn: str) -> str:
    """The message without the dsn or its password (see secrets.blank_dsn)."""
    return blank_dsn(message, dsn)


def _pg_message(exc: BaseException) -> str:
    """PostgreSQL's message, its SQLSTATE and detail (e.g. the failing row)."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip()
    state = getattr(exc, "sqlstate", None)
    text = f"{primary} (SQLSTATE {state})" if state else primary
    detail = getattr(diag, "message_detail", None)
    if detail:
        text += f": {detail}"
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."
