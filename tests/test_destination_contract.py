"""The adapter contract (reverse_etl.testing.DestinationContract, the suite a plugin's tests
run too), for every built-in destination type, each against its fake (tests/fakes/: a real
HTTP server on 127.0.0.1 answering as the vendor's documentation says, or the real
PostgreSQL): found by the registry, one result per record, the batch limit kept, "too many
requests" waited out, refused credentials stopping the run, a bad record rejected alone with
the vendor's message, re-sending harmless, deletes where supported, and `check` without
sending data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import all_fakes

from reverse_etl.destinations.base import Destination
from reverse_etl.destinations.registry import BUILTIN, adapter_class
from reverse_etl.testing import DestinationContract, Fake, running

FAKES = all_fakes()


def test_every_built_in_type_has_a_fake():
    assert sorted(FAKES) == sorted(BUILTIN)


class TestBuiltInAdapters(DestinationContract):
    @pytest.fixture(params=sorted(FAKES))
    def fake(self, request: pytest.FixtureRequest) -> Iterator[Fake]:
        found = FAKES[request.param]
        if isinstance(found, Exception):
            raise found
        yield from running(found())

    @pytest.fixture
    def adapter(self, fake: Fake) -> type[Destination]:
        return adapter_class(fake.type)
