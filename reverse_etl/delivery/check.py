"""`reverse-etl check DEST`: a destination's connection and credentials, tried without sending
any data, through the same client and pacing as a run (adapters.py)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import httpx

from ..destinations.base import BatchFailed, Destination, Retryable, SplitBatch, Throttled
from ..errors import CredentialsError, DestinationError
from .adapter_bugs import adapter_bug, interrupts_run, shown
from .adapters import limiter_pace, open_adapter, pacing, run_coroutine, transport_signal

if TYPE_CHECKING:
    from ..project.loader import DestinationSpec
    from .ratelimit import RateLimiter


def try_connection(spec: DestinationSpec, limiter: RateLimiter | None = None) -> str:
    """The adapter's own check, as one line saying what was checked; each request takes a
    slot of `limiter` (the destination's, shared with its runs), waiting at most
    max_retry_after_seconds for it.

    Only an answer of the API passes: any status the adapter does not take as its API's
    answer (a 404, a 5xx, a redirect, a 429) and any 2xx whose body is not JSON (a proxy's or
    a login page's HTML) is a DestinationError saying which answer came from where; refused
    credentials are a CredentialsError. What the adapter does outside its contract (raises
    anything else, answers anything but a line of text) is a DestinationError naming the bug."""
    # An answer the adapter cannot trust is logged for runs; here the error says it once.
    adapters_log = logging.getLogger("reverse_etl.destinations")
    level = adapters_log.level
    adapters_log.setLevel(max(level, logging.ERROR))
    try:
        return run_coroutine(_check(spec, limiter))
    finally:
        adapters_log.setLevel(level)


async def _check(spec: DestinationSpec, limiter: RateLimiter | None) -> str:
    answers: list[httpx.Response] = []

    async def keep(response: httpx.Response) -> None:
        await response.aread()
        answers.append(response)

    take_slot = limiter_pace(spec, limiter) if limiter is not None else None
    pacing.set(take_slot)  # (this task's context: the check's requests)
    async with open_adapter(spec, keep) as adapter:
        try:
            if take_slot is not None and not adapter.speaks_http:
                await take_slot()  # one slot for the check of another protocol
            detail = await adapter.check()
        except CredentialsError as exc:
            raise CredentialsError(
                f"destination {spec.name!r} refused the credentials: {exc}"
            ) from None
        except httpx.InvalidURL as exc:  # (its text is blanked by the caller)
            raise DestinationError(
                f"destination {spec.name!r}: its url is not a valid URL ({exc}); "
                "percent-encode what a password holds of / : @ ? # (/ is %2F)"
            ) from None
        except httpx.TransportError as exc:
            signal = transport_signal(exc)
            if isinstance(signal, DestinationError):  # no request could be written
                raise DestinationError(f"destination {spec.name!r}: {signal}") from None
            raise DestinationError(f"destination {spec.name!r} is unreachable: {exc!r}") from None
        except (Throttled, Retryable, SplitBatch, BatchFailed, ValueError) as exc:
            # an answer that is not the API's (too large, untrusted, an error status):
            # the URL is wrong, or the service is down
            raise _failed(spec, answers, str(exc) or type(exc).__name__) from None
        except DestinationError:  # the adapter's own words
            raise
        except Exception as exc:
            raise _broken(spec, adapter, f"raised {shown(exc)}") from None
        except BaseException as exc:
            if interrupts_run(exc):  # the check itself cancelled (Ctrl-C): not the adapter's
                raise
            raise _broken(spec, adapter, f"raised {shown(exc)}") from None
        if not isinstance(detail, str):
            raise _broken(spec, adapter, f"returned {shown(detail)}, not a line of text")
        if any(a.is_success and not _json_or_empty(a.content) for a in answers):
            raise _failed(spec, answers, "")
        return detail


def _broken(spec: DestinationSpec, adapter: Destination, what: str) -> DestinationError:
    """The check failed on a bug in the adapter (adapter_bugs.py)."""
    bug = adapter_bug(adapter, "check", what)
    return DestinationError(f"destination {spec.name!r} failed the check: {bug}")


def _failed(spec: DestinationSpec, answers: list[httpx.Response], detail: str) -> DestinationError:
    """The check failed: which answer came from where (the last one), and what it means."""
    last = answers[-1] if answers else None
    if last is None:
        return DestinationError(f"destination {spec.name!r} failed the check: {detail}")
    url = last.request.url.copy_with(userinfo=b"", query=None)  # no secret in the line
    if last.is_redirect:
        detail = f"a redirect to {last.headers.get('Location')}: set the URL it points to"
    elif last.is_success and not _json_or_empty(last.content):
        kind = last.headers.get("Content-Type", "no content type")
        detail = f"the answer is not JSON ({kind}): is this the API's URL?"
    detail = detail.removeprefix(f"HTTP {last.status_code}: ").replace("\n", " ")
    return DestinationError(
        f"destination {spec.name!r} failed the check: HTTP {last.status_code} from {url}: "
        f"{detail}"
    )


def _json_or_empty(content: bytes) -> bool:
    if not content.strip():
        return True
    try:
        json.loads(content)
    except ValueError:
        return False
    return True
