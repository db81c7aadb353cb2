"""The reverse_etl.testing plugin (the contract suite's fixtures), and the fake Acme API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from acme_fake import AcmeFake

from reverse_etl.testing import running

pytest_plugins = ["reverse_etl.testing"]


@pytest.fixture
def acme() -> Iterator[AcmeFake]:
    yield from running(AcmeFake())
