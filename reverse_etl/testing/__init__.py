"""Test a destination adapter as the built-in ones are tested: a base class for a fake of the
vendor's API (a real HTTP server on 127.0.0.1) and the shared contract suite, a pytest plugin.

Enable the plugin in the conftest.py at the root of your tests (pytest reads `pytest_plugins`
only there):

    pytest_plugins = ["reverse_etl.testing"]

then write the fake from the vendor's documentation and subclass the suite:

    from reverse_etl.testing import DestinationContract, Fake, JsonHTTPServer

    class AcmeFake(JsonHTTPServer, Fake):
        type = "acme"
        ...

    class TestAcmeContract(DestinationContract):
        destination_class = AcmeDestination
        fake_class = AcmeFake

Your test run then executes every check the built-in adapters pass (see DestinationContract),
against your adapter, as installed: the suite finds it through the entry-point group
`reverse_etl.destinations`, so install your package (`pip install -e .`) before running it.

The plugin is opt-in, not a `pytest11` entry point: an entry point would load it into every
pytest run of every environment where reverse-etl is installed (an Airflow or Dagster project
that uses reverse-etl as a library), importing the engine and adding fixtures to test runs
that have nothing to do with destinations. Named in `pytest_plugins`, it loads where it is
used, and pytest rewrites its assertions there, so a failed check shows the values compared.

This package imports pytest (the extra `reverse-etl[testing]`); nothing else in reverse_etl
imports it. Its checks' module is registered for assertion rewriting on import, so failures
read well even when a conftest imports a fake (and so this package) before `pytest_plugins`
takes effect; this module has no assertion of its own (PYTEST_DONT_REWRITE).

Fixtures:
    reverse_etl_project  an empty project in a temporary folder (ProjectFolder): a DuckDB
                         warehouse, sync and destination files, the CLI in-process
"""

from __future__ import annotations

from pathlib import Path

try:
    import pytest
except ImportError as missing:  # the engine alone was installed
    raise ImportError(
        "reverse_etl.testing needs pytest: install reverse-etl[testing] (or pytest)"
    ) from missing

from .fake import Fake, running
from .project import Outcome, ProjectFolder, new_project
from .server import PROXY_HTML, REALISTIC_LATENCY, Answer, Fault, JsonHTTPServer

pytest.register_assert_rewrite("reverse_etl.testing.contract")
from .contract import DestinationContract  # noqa: E402 (registered for rewriting first)

__all__ = [
    "PROXY_HTML",
    "REALISTIC_LATENCY",
    "Answer",
    "DestinationContract",
    "Fake",
    "Fault",
    "JsonHTTPServer",
    "Outcome",
    "ProjectFolder",
    "reverse_etl_project",
    "running",
]


@pytest.fixture
def reverse_etl_project(tmp_path: Path) -> ProjectFolder:
    """An empty reverse-etl project in the test's temporary folder: `syncs/` and
    `destinations/`, the warehouse `warehouse.duckdb` once written to."""
    return new_project(tmp_path / "project")
