"""A destination plugin written, tested and shipped as a third party would: the example package
tests/plugin_example/ (its own pyproject.toml and entry point, an adapter for a small JSON API,
a fake of that API on reverse_etl.testing's server, and tests running the shared contract
suite) is installed for real into a folder of its own (the project's environment untouched)
and used from processes that have that folder on PYTHONPATH."""

from __future__ import annotations

import importlib.util
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import reverse_etl
from reverse_etl.testing import DestinationContract, new_project, running

EXAMPLE = Path(__file__).parent / "plugin_example"


@dataclass
class Installed:
    source: Path  # a copy of tests/plugin_example: its tests run from here
    env: dict[str, str]  # the environment of a process that has the plugin installed


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", ".*cache"))
    return install(source, root / "site-packages")


def install(source: Path, target: Path) -> Installed:
    """The plugin at `source` installed into `target`, for processes that have it on their
    PYTHONPATH."""
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-input"]
        + ["--no-build-isolation", "--disable-pip-version-check"]  # hatchling: the dev extras'
        + ["--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    path = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    return Installed(source, env)


def run(installed: Installed, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd or installed.source,
        env=installed.env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def load_fake_module(installed: Installed) -> ModuleType:
    """The plugin's fake (its tests/acme_fake.py), imported into this process."""
    spec = importlib.util.spec_from_file_location(
        "acme_fake", installed.source / "tests" / "acme_fake.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_its_own_test_run_passes_the_shipped_contract_suite(installed):
    checks = sorted(name for name in dir(DestinationContract) if name.startswith("test_"))
    assert len(checks) >= 9
    outcome = run(installed, "-m", "pytest", "-p", "no:cacheprovider", "-v")
    report = outcome.stdout + outcome.stderr
    assert outcome.returncode == 0, report
    passed = re.findall(r"test_acme\.py::TestAcmeContract::(\w+) PASSED", outcome.stdout)
    assert sorted(passed) == checks, report
    # Every check and the plugin's own test passed; none skipped, failed or erred.
    summary = outcome.stdout.strip().splitlines()[-1]
    assert re.fullmatch(rf"=+ {len(checks) + 1} passed in [\d.]+s( \(.*\))? =+", summary), report


def test_reverse_etl_destinations_lists_it(installed, tmp_path):
    outcome = run(installed, "-m", "reverse_etl", "destinations", "--json", cwd=tmp_path)
    assert outcome.returncode == 0, outcome.stderr  # 1 when a plugin cannot be loaded
    described = {item["type"]: item for item in map(json.loads, outcome.stdout.splitlines())}
    acme = described["acme"]
    assert acme["description"] == "contacts in the Acme Contacts API (an example plugin)"
    assert acme["operations"] == ["delete", "upsert"] and acme["max_batch_size"] == 20
    settings = {setting["name"]: setting for setting in acme["settings"]}
    assert settings["api_key"]["secret"] is True and settings["base_url"]["required"] is True
    assert "webhook" in described  # the built-in types are still there


@pytest.fixture
def acme(installed: Installed) -> Iterator[Any]:
    """The plugin's fake Acme API, running in this process."""
    yield from running(load_fake_module(installed).AcmeFake())


def test_a_real_sync_through_it_delivers_to_its_fake(installed, acme, tmp_path):
    project = new_project(tmp_path / "project")
    project.people(30)
    project.destination("crm", acme.destination())
    header = {"destination": "crm", "primary_key": "id", "mode": "upsert"}
    project.sync("people", header, "select id, email, name from people")
    command = ["run", "people", "--json", "--project", str(project.root)]
    outcome = run(installed, "-m", "reverse_etl", *command)
    [result] = [json.loads(line) for line in outcome.stdout.splitlines()]
    assert outcome.returncode == 0 and result["status"] == "success", outcome.stderr
    assert result["delivered"] == 30, result
    stored = acme.stored()
    assert sorted(stored, key=int) == [str(i) for i in range(1, 31)]
    assert stored["17"] == {"id": 17, "email": "person17@example.com", "name": "Person 17"}
    assert acme.batch_sizes() == [20, 10]  # batch_size 100 (the default) asked, 20 kept


def test_the_engine_never_imports_the_test_kit():
    """reverse_etl.testing imports pytest; no other module of the package imports it, so pytest
    stays a test dependency (the extra reverse-etl[testing])."""
    skipped = ("reverse_etl.testing", "reverse_etl.__main__")  # the kit; the CLI's entry
    modules = [
        module.name
        for module in pkgutil.walk_packages(reverse_etl.__path__, "reverse_etl.")
        if not module.name.startswith(skipped)
    ]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pytest' or m.startswith("
        "'reverse_etl.testing')))"
    )
    outcome = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert outcome.returncode == 0, outcome.stderr
    assert len(modules) > 50 and outcome.stdout.strip() == "[]", outcome.stdout



BROKEN = {  # a fault its author could miss: (the adapter's line, the broken one, the check, why)
    "forgets the batch limit": (
        "max_batch_size = MAX_CONTACTS",
        "max_batch_size = None",
        "test_each_record_is_delivered_once_within_the_batch_limit",
        "must declare max_batch_size = 20",
    ),
    "returns its results in reverse order": (
        "for key, result in zip(keys, results, strict=True)]",
        "for key, result in zip(keys, results, strict=True)][::-1]",
        "test_a_bad_record_is_rejected_alone_with_the_vendors_message",
        "the refusal is pinned on another record",
    ),
    "raises a 429 as a failure to retry": (
        "raise_for_batch_status(response)  # 429",
        "if response.status_code == 429:\n"
        "            raise __import__('reverse_etl.destinations').destinations.Retryable('429')\n"
        "        raise_for_batch_status(response)  # 429",
        "test_too_many_requests_is_waited_out",
        "'status': 'partial'",  # its records failed: no retry was allowed
    ),
    "takes a refused record as delivered": (
        'return Rejected(str(result.get("message") or "refused"))',
        "return DELIVERED",
        "test_a_bad_record_is_rejected_alone_with_the_vendors_message",
        "'status': 'success'",  # the refused record counted delivered
    ),
}


@pytest.mark.parametrize("fault", sorted(BROKEN))
def test_the_shipped_suite_fails_an_adapter_that_breaks_the_contract(tmp_path, fault):
    """The suite is an oracle a plugin can trust: the example plugin, broken in a way its
    author could miss and installed as such, fails its own test run, which says why."""
    line, broken, check, why = BROKEN[fault]
    source = tmp_path / "source"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", ".*cache"))
    adapter = source / "src" / "acme_reverse_etl" / "adapter.py"
    text = adapter.read_text()
    assert text.count(line) == 1, f"the example adapter no longer has {line!r}"
    adapter.write_text(text.replace(line, broken))
    plugin = install(source, tmp_path / "site-packages")
    outcome = run(plugin, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-k", check)
    report = outcome.stdout + outcome.stderr
    assert outcome.returncode == 1 and f"{check} FAILED" in report, report
    assert why in report, report
