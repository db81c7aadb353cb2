"""What the destination contract suite needs of a destination's fake.

A fake keeps what the destination would hold and answers as the vendor's documentation says.
Where the vendor validates email addresses, it refuses, per record, an `email` without an "@",
with the vendor's own error message: the suite's check of a bad record rejected alone relies
on it (a vendor that refuses no record on its own sets `invalid_email_error = None`).
Write the fake from the vendor's documentation, not from your adapter: the suite then proves
that the adapter speaks the vendor's API, not that it agrees with itself."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, TypeVar


class Fake(ABC):
    """A destination's fake, as the contract suite drives it.

    For a JSON API, subclass `JsonHTTPServer` and this class, in that order: the server gives
    `url`, `start` and `stop`. The class attributes describe the vendor:
        type                 the adapter's `type` name, as in destination files
        max_batch_size       records per request the vendor's API accepts
        batch_limit          whether the vendor refuses more than that in a request (the
                             adapter must then declare the same max_batch_size); False for
                             a destination without a limit, whose fake picks a size to test
        supports_delete      whether the destination deletes records (mode "mirror")
        invalid_email_error  a fragment of the vendor's message refusing an invalid email;
                             None for a vendor that refuses no record on its own
        rate_limited         whether the vendor has a "too many requests" answer (throttle)
    """

    type: str
    max_batch_size: int
    batch_limit: bool = True
    supports_delete: bool
    invalid_email_error: str | None
    rate_limited: bool = True

    @abstractmethod
    def start(self) -> None:
        """Start answering (a server thread, a database schema); the suite calls it once."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release everything start() took; called once, whatever the test did."""

    @abstractmethod
    def destination(self, good_credentials: bool = True) -> dict[str, Any]:
        """The destination file's keys pointing at this fake, `type` included, e.g.
        {"type": "acme", "base_url": self.url, "api_key": "k-1"}. With `good_credentials`
        False, credentials the fake refuses (its 401, a role the database does not know)."""

    def sync_header(self) -> dict[str, Any]:
        """The sync file's header keys this destination needs besides `destination` and
        `mode` (primary_key, object, ...)."""
        return {"primary_key": "id"}

    def model_sql(self) -> str:
        """The sync's model over the warehouse table `people (id integer, email varchar, name
        varchar)`, its columns named as this destination wants them; its primary key is built
        from id (see key_of)."""
        return "select id, email, name from people"

    def key_of(self, person_id: int) -> str:
        """The engine's key, as the wire format writes it, of the person with this id."""
        return str(person_id)

    @abstractmethod
    def stored(self) -> dict[str, dict[str, Any]]:
        """What the destination holds now: key (as key_of gives it) → the record's fields as
        stored, at least `email` and `name`."""

    @abstractmethod
    def batch_sizes(self) -> list[int]:
        """Records carried by each request that carried any, in the order received, accepted
        or not (a request refused for its credentials carries none)."""

    @abstractmethod
    def throttle(self, times: int) -> None:
        """Answer the next `times` requests as the vendor does past its rate limit (its 429,
        with the Retry-After it sends, in seconds). Only called when `rate_limited`."""

    def throttled(self) -> int:
        """Requests answered so far as past the rate limit."""
        return 0


F = TypeVar("F", bound=Fake)


def running(fake: F) -> Iterator[F]:
    """A fixture's body: `yield from running(MyFake())` starts the fake, yields it, and stops
    it after the test whatever happens."""
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
